//! An in-memory [`SagaStore`] with the semantics of the SQL stores (fenced
//! writes, leases, releases that notice unseen cancels, operator actions
//! compared on `updated_at`), plus the two things a simulation needs: a
//! crash can strike at any write (before or after it applies), and time is
//! virtual (every saga that is not halted is due at once).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use commerce::{
    saga::plan::{SagaStatus, Step},
    store::{
        Purge,
        saga::{
            AttemptRecord, AttemptWrite, CancelFlag, Cursor, FencedWrite, Lease, OperatorActionRecord,
            OperatorActionWrite, SagaColumns, SagaCount, SagaFilter, SagaPurge, SagaRecord, SagaStore,
            SagaStoreError, SagaWrite, StepRecord,
        },
        unit_of_work::{Committed, UnitOfWork, UnitOfWorkCommitter, UnitOfWorkError},
    },
};
use uuid::Uuid;

use super::chaos::{Chaos, Fate};

#[derive(Debug, Default)]
struct Inner {
    sagas: HashMap<Uuid, SagaRecord>,
    owners: HashMap<Uuid, String>,
    /// A halted saga (waiting for an operator) is not due.
    halted: HashMap<Uuid, bool>,
    attempts: HashMap<Uuid, Vec<AttemptRecord>>,
    actions: HashMap<Uuid, Vec<OperatorActionRecord>>,
    /// Virtual clock for `updated_at`: one tick per write, so that an
    /// operator action always compares against a distinct version.
    tick: i64,
}

/// The simulation's saga store.
#[derive(Debug, Clone)]
pub struct SimStore {
    inner: Arc<Mutex<Inner>>,
    chaos: Chaos,
    epoch: DateTime<Utc>,
}

impl SimStore {
    /// An empty store whose writes go through `chaos`.
    pub fn new(chaos: Chaos) -> Self {
        Self {
            inner: Arc::default(),
            chaos,
            epoch: Utc::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self, inner: &mut Inner) -> DateTime<Utc> {
        inner.tick += 1;
        self.epoch + TimeDelta::milliseconds(inner.tick)
    }

    /// Inserts a saga as CreateOrder does (in the order's transaction).
    pub fn insert(&self, saga_id: Uuid, order_id: Uuid, seed: String, deadline: DateTime<Utc>) {
        let mut inner = self.lock();
        let now = self.now(&mut inner);
        inner.sagas.insert(
            saga_id,
            SagaRecord {
                saga_id,
                order_id,
                customer_id: None,
                seed,
                status: SagaStatus::Running,
                current_step: Some(Step::AuthorizePayment),
                past_pivot: false,
                cancel_requested: false,
                cancel_reason: None,
                deadline,
                next_run_at: now,
                compensation_reason: None,
                last_error: None,
                failure_code: None,
                refs: Default::default(),
                created_at: now,
                updated_at: now,
                steps: Vec::new(),
            },
        );
    }

    /// CancelOrder's flag (the event store sets it in the cancel's transaction).
    pub fn request_cancel(&self, order_id: Uuid, reason: &str) {
        let mut inner = self.lock();
        if let Some(saga) = inner.sagas.values_mut().find(|s| s.order_id == order_id) {
            saga.cancel_requested = true;
            saga.cancel_reason.get_or_insert_with(|| reason.to_string());
            let id = saga.saga_id;
            inner.halted.insert(id, false);
        }
    }

    /// A crashed worker's leases expire (the next claim may take its sagas).
    pub fn expire_leases_of(&self, owner: &str) {
        self.lock().owners.retain(|_, o| o != owner);
    }

    /// Steps as the engine wrote them (for the invariants).
    pub fn record(&self, saga_id: Uuid) -> Option<SagaRecord> {
        self.lock().sagas.get(&saga_id).cloned()
    }

    /// The fence: the write applies only while `lease` owns the saga, and
    /// only if the crash schedule lets it.
    fn fenced<T>(
        &self,
        lease: &Lease,
        saga_id: Uuid,
        apply: impl FnOnce(&mut Inner, DateTime<Utc>) -> T,
    ) -> Result<T, SagaStoreError> {
        let fate = self.chaos.fate_of_write(&lease.owner);
        if matches!(fate, Fate::Dead | Fate::CrashBefore) {
            return Err(SagaStoreError::LeaseLost);
        }
        let mut inner = self.lock();
        if inner.owners.get(&saga_id) != Some(&lease.owner) {
            return Err(SagaStoreError::LeaseLost);
        }
        let now = self.now(&mut inner);
        let value = apply(&mut inner, now);
        if fate == Fate::CrashAfter {
            return Err(SagaStoreError::LeaseLost);
        }
        Ok(value)
    }
}

fn put_step(saga: &mut SagaRecord, row: &StepRecord) {
    match saga.steps.iter_mut().find(|s| s.step == row.step) {
        Some(existing) => *existing = row.clone(),
        None => saga.steps.push(row.clone()),
    }
}

fn set_columns(saga: &mut SagaRecord, columns: &SagaColumns, now: DateTime<Utc>) {
    saga.status = columns.status;
    saga.current_step = columns.current_step;
    saga.past_pivot = columns.past_pivot;
    saga.compensation_reason.clone_from(&columns.compensation_reason);
    saga.last_error.clone_from(&columns.last_error);
    saga.refs = columns.refs.clone();
    saga.updated_at = now;
}

#[async_trait]
impl SagaStore for SimStore {
    async fn claim_due(&self, lease: &Lease, limit: usize) -> Result<Vec<SagaRecord>, SagaStoreError> {
        let mut inner = self.lock();
        let mut due: Vec<_> = inner
            .sagas
            .values()
            .filter(|s| {
                let active = matches!(s.status, SagaStatus::Running | SagaStatus::Compensating)
                    || (s.status == SagaStatus::Failed && s.cancel_requested);
                active
                    && !inner.owners.contains_key(&s.saga_id)
                    && !inner.halted.get(&s.saga_id).copied().unwrap_or(false)
            })
            .map(|s| (s.created_at, s.saga_id))
            .collect();
        due.sort();
        due.truncate(limit);
        let mut claimed = Vec::new();
        for (_, id) in due {
            inner.owners.insert(id, lease.owner.clone());
            claimed.extend(inner.sagas.get(&id).cloned());
        }
        Ok(claimed)
    }

    async fn write(&self, write: &FencedWrite) -> Result<CancelFlag, SagaStoreError> {
        let saga_id = write.saga_id;
        let applied = self.fenced(&write.lease, saga_id, |inner, now| {
            let Inner {
                sagas,
                owners,
                halted,
                attempts,
                ..
            } = inner;
            let saga = sagas.get_mut(&saga_id).expect("claimed saga exists");
            // A flag that changed since the worker decided: nothing applies.
            if write
                .expect_cancel
                .is_some_and(|flag| flag != saga.cancel_requested)
            {
                return None;
            }
            set_columns(saga, &write.columns, now);
            for row in &write.steps {
                put_step(saga, row);
            }
            let fresh = CancelFlag {
                cancel_requested: saga.cancel_requested,
                cancel_reason: saga.cancel_reason.clone(),
            };
            if let Some(release) = write.release {
                owners.remove(&saga_id);
                // As in `release`: virtual time, "never" is halted unless an
                // unseen cancel makes it due at once.
                let unseen_cancel = saga.cancel_requested && !release.cancel_seen;
                let far = release.next_run_at > Utc::now() + TimeDelta::days(365);
                saga.next_run_at = if unseen_cancel { now } else { release.next_run_at };
                halted.insert(saga_id, far && !unseen_cancel);
            }
            let attempts = attempts.entry(saga_id).or_default();
            for attempt in &write.attempts {
                match attempt {
                    AttemptWrite::Started {
                        step,
                        attempt,
                        worker,
                        idempotency_key,
                        started_at,
                    } => attempts.push(AttemptRecord {
                        step: *step,
                        attempt: *attempt,
                        worker: worker.clone(),
                        idempotency_key: idempotency_key.clone(),
                        started_at: *started_at,
                        finished_at: None,
                        end: None,
                    }),
                    AttemptWrite::Finished {
                        step,
                        attempt,
                        finished_at,
                        end,
                    } => {
                        if let Some(a) = attempts
                            .iter_mut()
                            .find(|a| a.step == *step && a.attempt == *attempt)
                        {
                            a.finished_at = Some(*finished_at);
                            a.end = Some(end.clone());
                        }
                    }
                }
            }
            Some(fresh)
        })?;
        applied.ok_or(SagaStoreError::LeaseLost)
    }

    async fn release(
        &self,
        lease: &Lease,
        saga_id: Uuid,
        next_run_at: DateTime<Utc>,
        cancel_seen: bool,
    ) -> Result<(), SagaStoreError> {
        self.fenced(lease, saga_id, |inner, now| {
            inner.owners.remove(&saga_id);
            let saga = inner.sagas.get_mut(&saga_id).expect("claimed saga exists");
            // Virtual time: a retry "later" is due at once; "never" (a year
            // away: waiting for an operator) is halted, unless a cancel
            // arrived that the worker did not see.
            let unseen_cancel = saga.cancel_requested && !cancel_seen;
            let halted = next_run_at > Utc::now() + TimeDelta::days(365) && !unseen_cancel;
            saga.next_run_at = if unseen_cancel { now } else { next_run_at };
            inner.halted.insert(saga_id, halted);
        })
    }

    async fn get(&self, saga_id: Uuid) -> Result<Option<SagaRecord>, SagaStoreError> {
        Ok(self.record(saga_id))
    }

    async fn find_by_order(&self, order_id: Uuid) -> Result<Option<SagaRecord>, SagaStoreError> {
        Ok(self
            .lock()
            .sagas
            .values()
            .find(|s| s.order_id == order_id)
            .cloned())
    }

    /// The simulation only filters by status (all it asks).
    async fn list(
        &self,
        filter: &SagaFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, SagaStoreError> {
        let inner = self.lock();
        let mut all: Vec<_> = inner
            .sagas
            .values()
            .filter(|s| filter.statuses.is_empty() || filter.statuses.contains(&s.status))
            .filter(|s| after.is_none_or(|c| (s.created_at, s.saga_id) < c))
            .cloned()
            .collect();
        all.sort_by_key(|s| std::cmp::Reverse((s.created_at, s.saga_id)));
        all.truncate(limit);
        Ok(all)
    }

    async fn attempts(&self, saga_id: Uuid) -> Result<Vec<AttemptRecord>, SagaStoreError> {
        Ok(self.lock().attempts.get(&saga_id).cloned().unwrap_or_default())
    }

    /// As the real stores: finished sagas changed before `before`, with theirs.
    async fn purge_finished(&self, before: DateTime<Utc>, purge: Purge) -> Result<SagaPurge, SagaStoreError> {
        let mut inner = self.lock();
        let mut chosen: Vec<(DateTime<Utc>, Uuid)> = inner
            .sagas
            .values()
            .filter(|s| s.status.is_terminal() && s.updated_at < before)
            .map(|s| (s.updated_at, s.saga_id))
            .collect();
        chosen.sort();
        chosen.truncate(usize::try_from(purge.limit()).unwrap_or(usize::MAX));
        let mut gone = SagaPurge::default();
        for (_, id) in chosen {
            gone.sagas += 1;
            gone.steps += inner.sagas[&id].steps.len() as u64;
            gone.attempts += inner.attempts.get(&id).map_or(0, Vec::len) as u64;
            gone.operator_actions += inner.actions.get(&id).map_or(0, Vec::len) as u64;
            if purge != Purge::Count {
                inner.sagas.remove(&id);
                inner.attempts.remove(&id);
                inner.actions.remove(&id);
            }
        }
        Ok(gone)
    }

    /// By status only, as `list`.
    async fn count(&self, filter: &SagaFilter) -> Result<Vec<SagaCount>, SagaStoreError> {
        let mut counts: Vec<SagaCount> = Vec::new();
        for saga in self.lock().sagas.values() {
            if !filter.statuses.is_empty() && !filter.statuses.contains(&saga.status) {
                continue;
            }
            let group = (saga.status, saga.current_step);
            match counts.iter_mut().find(|c| (c.status, c.current_step) == group) {
                Some(count) => {
                    count.count += 1;
                    count.last_updated = count.last_updated.max(Some(saga.updated_at));
                }
                None => counts.push(SagaCount {
                    status: saga.status,
                    current_step: saga.current_step,
                    count: 1,
                    last_updated: Some(saga.updated_at),
                }),
            }
        }
        Ok(counts)
    }

    async fn count_by_status(&self) -> Result<Vec<(SagaStatus, u64)>, SagaStoreError> {
        let mut counts: HashMap<&'static str, (SagaStatus, u64)> = HashMap::new();
        for saga in self.lock().sagas.values() {
            counts.entry(saga.status.as_str()).or_insert((saga.status, 0)).1 += 1;
        }
        Ok(counts.into_values().collect())
    }

    async fn operator_actions_of(
        &self,
        saga_ids: &[Uuid],
    ) -> Result<Vec<(Uuid, OperatorActionRecord)>, SagaStoreError> {
        let inner = self.lock();
        Ok(saga_ids
            .iter()
            .flat_map(|id| {
                inner
                    .actions
                    .get(id)
                    .into_iter()
                    .flatten()
                    .map(|a| (*id, a.clone()))
            })
            .collect())
    }
}

impl SimStore {
    fn apply_operator_action(&self, write: &OperatorActionWrite) -> Result<(), SagaStoreError> {
        let OperatorActionWrite {
            saga_id,
            expected_updated_at,
            columns,
            step,
            action,
        } = write;
        let (saga_id, expected_updated_at) = (*saga_id, *expected_updated_at);
        let mut inner = self.lock();
        let now = self.now(&mut inner);
        let leased = inner.owners.contains_key(&saga_id);
        let saga = inner.sagas.get_mut(&saga_id).ok_or(SagaStoreError::Conflict)?;
        let retryable = matches!(saga.status, SagaStatus::Failed | SagaStatus::CompensationFailed);
        if saga.updated_at != expected_updated_at || !retryable || leased {
            return Err(SagaStoreError::Conflict);
        }
        set_columns(saga, columns, now);
        saga.next_run_at = now;
        put_step(saga, step);
        inner.halted.insert(saga_id, false);
        inner.actions.entry(saga_id).or_default().push(action.clone());
        Ok(())
    }
}

/// The simulation's units of work: the saga part applied to this store. It
/// checks saga outcomes and keeps no event store, so appends are dropped
/// (the world applies order commands itself).
#[async_trait]
impl UnitOfWorkCommitter for SimStore {
    async fn commit(&self, unit: UnitOfWork) -> Result<Committed, UnitOfWorkError> {
        let cancel_flag = match &unit.saga {
            Some(SagaWrite::Fenced(write)) => Some(self.write(write).await?),
            Some(SagaWrite::OperatorAction(write)) => {
                self.apply_operator_action(write)?;
                None
            }
            Some(other) => return Err(anyhow::anyhow!("the simulation does not write {other:?}").into()),
            None => None,
        };
        Ok(Committed {
            appended: Vec::new(),
            cancel_flag,
        })
    }
}
