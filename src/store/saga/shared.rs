//! The saga store written once for both databases.
//!
//! `sql_saga_store!(Name)` implements [`super::SagaStore`] for a backend's
//! store `Name` (a struct with a `pool` field). The reads and the release are
//! the same statements on both databases but for `IN_IDS` (a list condition
//! given the ids as one [`DbList`](crate::store::columns::DbList) parameter)
//! and `RELEASE` (whose clock differs), which the backend's module defines
//! with `Db`, its sqlx database. What really differs, the claim, a fenced
//! write in a transaction of its own and the purge, are the backend's
//! inherent `claim`, `write_alone` and `purge`.
//!
//! SQL-SAFE: statements are assembled from constant fragments (column lists,
//! `IN_IDS`); `one(column, ..)` is called only with the literal "saga_id" or
//! "order_id"; every value is bound.

macro_rules! sql_saga_store {
    ($name:ident) => {
        impl $name {
            /// Sagas with their steps, in the order the steps started.
            async fn with_steps(
                &self,
                rows: Vec<super::rows::SagaRow>,
            ) -> Result<Vec<super::SagaRecord>, super::SagaStoreError> {
                if rows.is_empty() {
                    return Ok(Vec::new());
                }
                let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.saga_id.0).collect();
                let sql = format!(
                    "SELECT {} FROM saga_steps WHERE saga_id {IN_IDS} ORDER BY started_at IS NULL, started_at, step",
                    super::rows::STEP_COLUMNS
                );
                let step_rows: Vec<super::rows::StepRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(crate::store::columns::DbList(&ids))
                    .fetch_all(&self.pool)
                    .await?;
                super::rows::assemble(rows, step_rows)
            }

            async fn one(
                &self,
                column: &str,
                id: uuid::Uuid,
            ) -> Result<Option<super::SagaRecord>, super::SagaStoreError> {
                let sql = format!("SELECT {} FROM sagas WHERE {column} = $1", super::rows::SAGA_COLUMNS);
                let row: Option<super::rows::SagaRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(crate::store::columns::DbUuid(id))
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(self.with_steps(row.into_iter().collect()).await?.pop())
            }
        }

        #[async_trait::async_trait]
        impl super::SagaStore for $name {
            async fn claim_due(
                &self,
                lease: &super::Lease,
                limit: usize,
            ) -> Result<Vec<super::SagaRecord>, super::SagaStoreError> {
                self.claim(lease, limit).await
            }

            async fn write(&self, write: &super::FencedWrite) -> Result<super::CancelFlag, super::SagaStoreError> {
                self.write_alone(write).await
            }

            async fn release(
                &self,
                lease: &super::Lease,
                saga_id: uuid::Uuid,
                next_run_at: chrono::DateTime<chrono::Utc>,
                cancel_seen: bool,
            ) -> Result<(), super::SagaStoreError> {
                let done = sqlx::query(RELEASE)
                    .bind(crate::store::columns::DbUuid(saga_id))
                    .bind(&lease.owner)
                    .bind(cancel_seen)
                    .bind(crate::store::columns::DbTime(next_run_at))
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(super::SagaStoreError::LeaseLost);
                }
                Ok(())
            }

            async fn get(&self, saga_id: uuid::Uuid) -> Result<Option<super::SagaRecord>, super::SagaStoreError> {
                self.one("saga_id", saga_id).await
            }

            async fn find_by_order(
                &self,
                order_id: uuid::Uuid,
            ) -> Result<Option<super::SagaRecord>, super::SagaStoreError> {
                self.one("order_id", order_id).await
            }

            async fn list(
                &self,
                filter: &super::SagaFilter,
                after: Option<super::Cursor>,
                limit: usize,
            ) -> Result<Vec<super::SagaRecord>, super::SagaStoreError> {
                let mut sql = sqlx::QueryBuilder::<Db>::new(format!("SELECT {} FROM sagas", super::rows::SAGA_COLUMNS));
                super::search::push_filter(&mut sql, filter, after);
                sql.push(" ORDER BY created_at DESC, saga_id DESC LIMIT ")
                    .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
                let rows: Vec<super::rows::SagaRow> = sql.build_query_as().fetch_all(&self.pool).await?;
                self.with_steps(rows).await
            }

            async fn count(&self, filter: &super::SagaFilter) -> Result<Vec<super::SagaCount>, super::SagaStoreError> {
                let mut sql =
                    sqlx::QueryBuilder::<Db>::new("SELECT status, current_step, count(*), max(updated_at) FROM sagas");
                super::search::push_filter(&mut sql, filter, None);
                sql.push(" GROUP BY status, current_step");
                let rows = sql.build_query_as().fetch_all(&self.pool).await?;
                super::rows::step_counts(rows)
            }

            async fn attempts(&self, saga_id: uuid::Uuid) -> Result<Vec<super::AttemptRecord>, super::SagaStoreError> {
                let sql = format!(
                    "SELECT {} FROM saga_attempts WHERE saga_id = $1 ORDER BY started_at, step, attempt",
                    super::rows::ATTEMPT_COLUMNS
                );
                let rows: Vec<super::rows::AttemptRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(crate::store::columns::DbUuid(saga_id))
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(super::rows::AttemptRow::decode).collect()
            }

            async fn operator_actions_of(
                &self,
                saga_ids: &[uuid::Uuid],
            ) -> Result<Vec<(uuid::Uuid, super::OperatorActionRecord)>, super::SagaStoreError> {
                let sql = format!(
                    "SELECT saga_id, action, step, operator, reason, at FROM saga_operator_actions \
                     WHERE saga_id {IN_IDS} ORDER BY id"
                );
                let rows: Vec<super::rows::OperatorActionRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(crate::store::columns::DbList(saga_ids))
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(super::rows::OperatorActionRow::decode).collect()
            }

            async fn purge_finished(
                &self,
                before: chrono::DateTime<chrono::Utc>,
                purge: crate::store::Purge,
            ) -> Result<super::SagaPurge, super::SagaStoreError> {
                self.purge(before, purge).await
            }

            async fn count_by_status(
                &self,
            ) -> Result<Vec<(crate::saga::plan::SagaStatus, u64)>, super::SagaStoreError> {
                let rows = sqlx::query_as("SELECT status, count(*) FROM sagas GROUP BY status")
                    .fetch_all(&self.pool)
                    .await?;
                super::rows::status_counts(rows)
            }
        }
    };
}
