//! The read-model store written once for both databases.
//!
//! `sql_read_models!(Name)` implements [`super::ReadModels`] for a backend's
//! store `Name` (a struct with a `pool` field). The expansion sits in the
//! backend's module and uses what that module defines, the only parts that
//! differ between the backends:
//! - `Db` (the sqlx database) and `begin` (a write transaction);
//! - the statements: `IN_IDS` (the `order_id` condition of a load, given the
//!   ids as one [`DbList`](crate::store::columns::DbList) parameter),
//!   `BEGIN_REBUILD`, `REBUILD_PROGRESS`, `END_REBUILD`;
//! - `upsert_rows`, `upsert_guarded` (a guarded write: the sweep's
//!   checkpoint compare-and-set, or the live table's generation, and the
//!   upsert), `create_shadow`, `swap_shadows` and
//!   `conversion_figures`.
//!
//! SQL-SAFE: every spliced name is a model's `TABLE` constant, its shadow
//! (`shadow_table`), or a constant column list; all values are bound.

macro_rules! sql_read_models {
    ($name:ident) => {
        impl $name {
            /// The rows of `ids` in `table`, on `conn`.
            async fn load_rows<R: super::StoredModel>(
                conn: &mut <Db as sqlx::Database>::Connection,
                table: &str,
                ids: &[uuid::Uuid],
            ) -> sqlx::Result<Vec<R>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let sql = format!(
                    "SELECT {} FROM {table} WHERE order_id {IN_IDS}",
                    R::COLUMNS.join(", ")
                );
                let rows: Vec<R::Columns> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(crate::store::columns::DbList(ids))
                    .fetch_all(conn)
                    .await?;
                rows.into_iter().map(R::decode).collect()
            }

            /// Runs one rebuild statement over the checkpoints of `names`
            /// (`$1`), with `values` bound after them.
            async fn rebuild_mark(
                &self,
                sql: &'static str,
                names: &[&str],
                values: &[i64],
            ) -> sqlx::Result<u64> {
                let mut query = sqlx::query(sql).bind(crate::store::columns::DbList(names));
                for value in values {
                    query = query.bind(*value);
                }
                Ok(query.execute(&self.pool).await?.rows_affected())
            }
        }

        #[async_trait::async_trait]
        impl super::ReadModels for $name {
            async fn update<R, F, E, Fold>(
                &self,
                table: &str,
                ids: &[uuid::Uuid],
                guard: Option<(&str, super::Guard)>,
                fold: Fold,
            ) -> Result<F, E>
            where
                R: super::StoredModel,
                F: super::ChangedRows<R> + Send,
                E: From<super::ReadModelError> + Send,
                Fold: FnOnce(std::collections::HashMap<uuid::Uuid, R>) -> Result<F, E> + Send,
            {
                let store = |e: sqlx::Error| E::from(super::ReadModelError::from(e));
                if let Some((name, guard)) = guard {
                    // The rows are read before the write, which checks the
                    // guard and upserts in one go (one statement on
                    // PostgreSQL). Safe outside the write: an upsert never
                    // lowers a version, so a row another writer moved on in
                    // between keeps the longer prefix; a guard that fails
                    // (the checkpoint moved, a rebuild swapped the table)
                    // still writes nothing.
                    let mut conn = self.pool.acquire().await.map_err(store)?;
                    let current = super::by_stream(
                        Self::load_rows(&mut conn, table, ids)
                            .await
                            .map_err(store)?,
                    );
                    let folded = fold(current)?;
                    upsert_guarded(&mut conn, table, name, guard, folded.changed()).await?;
                    return Ok(folded);
                }
                let mut tx = begin(&self.pool).await.map_err(store)?;
                let current = super::by_stream(Self::load_rows(&mut tx, table, ids).await.map_err(store)?);
                let folded = fold(current)?;
                upsert_rows(&mut tx, table, folded.changed())
                    .await
                    .map_err(store)?;
                tx.commit().await.map_err(store)?;
                Ok(folded)
            }

            async fn load<R: super::StoredModel>(
                &self,
                table: &str,
                ids: &[uuid::Uuid],
            ) -> Result<Vec<R>, super::ReadModelError> {
                Ok(Self::load_rows(&mut *self.pool.acquire().await?, table, ids).await?)
            }

            async fn upsert<R: super::StoredModel>(
                &self,
                table: &str,
                rows: &[R],
            ) -> Result<(), super::ReadModelError> {
                Ok(upsert_rows(&mut *self.pool.acquire().await?, table, rows).await?)
            }

            async fn checkpoints(&self) -> Result<Vec<super::CheckpointStatus>, super::ReadModelError> {
                let sql = format!(
                    "SELECT {} FROM projection_checkpoints ORDER BY name",
                    super::mapping::CHECKPOINT_COLUMNS
                );
                let rows: Vec<super::mapping::CheckpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn list_orders(
                &self,
                query: &super::ListQuery,
            ) -> Result<Vec<super::OrderSummary>, super::ReadModelError> {
                use super::StoredModel as _;
                use crate::store::columns::{DbTime, DbUuid};
                let mut sql = sqlx::QueryBuilder::<Db>::new(format!(
                    "SELECT {} FROM customer_orders WHERE 1 = 1",
                    super::rows::CustomerOrder::COLUMNS.join(", ")
                ));
                if let Some(customer) = &query.customer_id {
                    sql.push(" AND customer_id = ").push_bind(customer.clone());
                }
                if let Some(status) = query.status {
                    sql.push(" AND status = ").push_bind(status.as_str());
                }
                if let Some(after) = query.after {
                    sql.push(" AND (created_at, order_id) < (")
                        .push_bind(DbTime(after.created_at))
                        .push(", ")
                        .push_bind(DbUuid(after.order_id))
                        .push(")");
                }
                sql.push(" ORDER BY created_at DESC, order_id DESC LIMIT ")
                    .push_bind(query.limit);
                let rows: Vec<super::mapping::SummaryColumns> =
                    sql.build_query_as().fetch_all(&self.pool).await?;
                rows.into_iter()
                    .map(|row| super::rows::CustomerOrder::decode(row).map(|order| order.0))
                    .collect::<sqlx::Result<_>>()
                    .map_err(Into::into)
            }

            async fn conversion_figures(
                &self,
                since: chrono::DateTime<chrono::Utc>,
                until: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<super::ConversionFigures>, super::ReadModelError> {
                conversion_figures(&self.pool, since, until).await
            }

            async fn begin_rebuild(&self, names: &[&str], total: i64) -> Result<(), crate::error::AppError> {
                // All or nothing: the claim commits only if it took every name.
                let mut tx = begin(&self.pool)
                    .await
                    .map_err(super::ReadModelError::from)?;
                let claimed = sqlx::query(BEGIN_REBUILD)
                    .bind(crate::store::columns::DbList(names))
                    .bind(total)
                    .execute(&mut *tx)
                    .await
                    .map_err(super::ReadModelError::from)?
                    .rows_affected();
                if claimed == names.len() as u64 {
                    tx.commit().await.map_err(super::ReadModelError::from)?;
                    return Ok(());
                }
                Err(crate::error::AppError::aborted(
                    crate::error::ErrorReason::ConcurrentModification,
                    "a rebuild of the projections is already running",
                ))
            }

            async fn rebuild_progress(
                &self,
                names: &[&str],
                replayed: i64,
                total: i64,
            ) -> Result<(), super::ReadModelError> {
                self.rebuild_mark(REBUILD_PROGRESS, names, &[replayed, total])
                    .await?;
                Ok(())
            }

            async fn end_rebuild(&self, names: &[&str]) -> Result<(), super::ReadModelError> {
                self.rebuild_mark(END_REBUILD, names, &[]).await?;
                Ok(())
            }

            async fn create_shadows(&self, tables: &[&str]) -> Result<(), super::ReadModelError> {
                for table in tables {
                    let shadow = super::shadow_table(table);
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP TABLE IF EXISTS {shadow}"
                    )))
                    .execute(&self.pool)
                    .await?;
                    create_shadow(&self.pool, table, &shadow).await?;
                }
                Ok(())
            }

            async fn drop_shadows(&self, tables: &[&str]) -> Result<(), super::ReadModelError> {
                for table in tables {
                    let sql = format!("DROP TABLE IF EXISTS {}", super::shadow_table(table));
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&self.pool)
                        .await?;
                }
                Ok(())
            }

            async fn swap_shadows(
                &self,
                swaps: &[(&str, &str)],
                position: i64,
            ) -> Result<(), super::ReadModelError> {
                swap_shadows(&self.pool, swaps, position).await
            }
        }
    };
}
