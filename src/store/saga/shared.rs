//! The saga store written once for both databases.
//!
//! `sql_saga_store!(Name: Db)` defines a backend's store `Name` on the sqlx
//! database `Db` and implements [`super::SagaStore`] for it. The reads, the
//! release, a saga's start and a cancel request are the same statements on
//! both databases but for the constants the backend's module defines:
//! `IN_IDS` (a list condition given the ids as one
//! [`DbList`](crate::store::columns::DbList) parameter), and `RELEASE`,
//! `START` and `REQUEST_CANCEL`, whose clocks differ. Every write binds its
//! values here, in one order for both backends (`bind_fenced`,
//! `bind_operator`, `bind_action`, and [`super::rows`]' row values). What
//! really differs, the claim, the worker's and the operator's writes (one
//! statement on PostgreSQL, several in a write transaction on SQLite), a
//! fenced write in a transaction of its own and the purge, are the
//! backend's inherent `claim`, `write_fenced`, `write_start_leased`,
//! `write_operator_action`, `write_alone` and `purge`. The backend also names what a unit of work's
//! writes are stamped with, `Stamp`, and binds it with `stamped`.
//!
//! SQL-SAFE: statements are assembled from constant fragments (column lists,
//! `IN_IDS`); `one(column, ..)` is called only with the literal "saga_id" or
//! "order_id"; every value is bound.

macro_rules! sql_saga_store {
    ($(#[$doc:meta])* $name:ident: $db:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pool: sqlx::Pool<$db>,
        }

        type Db = $db;

        /// A statement of this backend.
        type Statement<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments>;

        /// Binds a fenced write's saga update, `$1..$18`: the saga id, the
        /// lease owner, the saga's columns (`$3..$12`, see
        /// [`super::rows::SET_COLUMNS`]), the lease's length in milliseconds,
        /// the cancel flag expected (or NULL), whether the write releases the
        /// lease, when the saga is due again and the cancel flag the worker saw
        /// (NULL and false unless it releases), and the failure code.
        fn bind_fenced<'q>(query: Statement<'q>, write: &'q super::FencedWrite) -> Statement<'q> {
            let query = query
                .bind(crate::store::columns::DbUuid(write.saga_id))
                .bind(write.lease.owner.as_str());
            bind_columns(query, &write.columns)
                .bind(super::decode::lease_millis(&write.lease))
                .bind(write.expect_cancel)
                .bind(write.release.is_some())
                .bind(write.release.map(|r| crate::store::columns::DbTime(r.next_run_at)))
                .bind(write.release.is_some_and(|r| r.cancel_seen))
                .bind(write.columns.failure_code.map(crate::domain::reason::ErrorReason::as_str))
        }

        /// Binds an operator action's saga update, `$1..$13`: the saga id, the
        /// version the operator decided on, the saga's columns (`$3..$12`) and
        /// the failure code.
        fn bind_operator<'q>(query: Statement<'q>, write: &'q super::OperatorActionWrite) -> Statement<'q> {
            let query = query
                .bind(crate::store::columns::DbUuid(write.saga_id))
                .bind(crate::store::columns::DbTime(write.expected_updated_at));
            bind_columns(query, &write.columns)
                .bind(write.columns.failure_code.map(crate::domain::reason::ErrorReason::as_str))
        }

        /// Binds the ten saga columns of [`super::rows::SET_COLUMNS`].
        fn bind_columns<'q>(query: Statement<'q>, columns: &'q super::SagaColumns) -> Statement<'q> {
            query
                .bind(columns.status.as_str())
                .bind(columns.current_step.map(|s| s.name()))
                .bind(columns.past_pivot)
                .bind(columns.compensation_reason.as_deref())
                .bind(columns.last_error.as_deref())
                .bind(columns.refs.authorization_id.as_deref())
                .bind(columns.refs.reservation_id.as_deref())
                .bind(columns.refs.shipment_id.as_deref())
                .bind(columns.refs.tracking_number.as_deref())
                .bind(columns.refs.capture_id.as_deref())
        }

        /// Binds an operator action's row after its saga id: the action, its
        /// step, the operator, the reason and when.
        fn bind_action<'q>(query: Statement<'q>, action: &'q super::OperatorActionRecord) -> Statement<'q> {
            query
                .bind(action.action.as_str())
                .bind(action.step.name())
                .bind(action.operator.as_str())
                .bind(action.reason.as_str())
                .bind(crate::store::columns::DbTime(action.at))
        }

        /// The cancel flag a fenced saga update returned; no row: the fence
        /// refused the write.
        fn cancel_flag(
            row: Option<<Db as sqlx::Database>::Row>,
        ) -> Result<super::CancelFlag, super::SagaStoreError> {
            use sqlx::Row;
            let row = row.ok_or(super::SagaStoreError::LeaseLost)?;
            Ok(super::CancelFlag {
                cancel_requested: row.try_get("cancel_requested")?,
                cancel_reason: row.try_get("cancel_reason")?,
            })
        }

        impl $name {
            /// A store on a migrated pool.
            pub fn new(pool: sqlx::Pool<Db>) -> Self {
                Self { pool }
            }

            /// Writes a unit of work's saga part in `conn`'s transaction (on
            /// SQLite a write transaction), stamped `now`. A fenced write reads
            /// back the cancel flag.
            pub(crate) async fn write_part(
                conn: &mut <Db as sqlx::Database>::Connection,
                part: &super::SagaWrite,
                now: Stamp,
            ) -> Result<Option<super::CancelFlag>, super::SagaStoreError> {
                use super::SagaWrite;
                match part {
                    SagaWrite::Start(start) => Self::write_start(conn, start, None, now).await.map(|()| None),
                    SagaWrite::StartLeased(start, first) => {
                        Self::write_start_leased(conn, start, first, now).await.map(Some)
                    }
                    SagaWrite::RequestCancel(cancel) => {
                        Self::write_cancel_request(conn, cancel, now).await.map(|()| None)
                    }
                    SagaWrite::Fenced(write) => Self::write_fenced(conn, write, now).await.map(Some),
                    SagaWrite::OperatorAction(action) => {
                        Self::write_operator_action(conn, action, now).await.map(|()| None)
                    }
                }
            }

            /// Inserts the saga row, naming `owner` as its lease owner when a local
            /// worker takes it at once (the fenced write that follows sets the lease's end).
            async fn write_start(
                conn: &mut <Db as sqlx::Database>::Connection,
                saga: &super::SagaStart,
                owner: Option<&str>,
                now: Stamp,
            ) -> Result<(), super::SagaStoreError> {
                let query = sqlx::query(START)
                    .bind(crate::store::columns::DbUuid(saga.saga_id))
                    .bind(crate::store::columns::DbUuid(saga.order_id))
                    .bind(&saga.idempotency_seed)
                    .bind(crate::store::columns::DbTime(saga.deadline))
                    .bind(&saga.customer_id)
                    .bind(owner);
                stamped(query, now).execute(&mut *conn).await?;
                Ok(())
            }

            /// Flags the order's saga for compensation: the first reason wins,
            /// and the saga is due at once, so that it compensates promptly.
            async fn write_cancel_request(
                conn: &mut <Db as sqlx::Database>::Connection,
                cancel: &super::CancelRequest,
                now: Stamp,
            ) -> Result<(), super::SagaStoreError> {
                let query = sqlx::query(REQUEST_CANCEL)
                    .bind(crate::store::columns::DbUuid(cancel.order_id))
                    .bind(&cancel.reason);
                stamped(query, now).execute(&mut *conn).await?;
                Ok(())
            }

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
