//! A saga handed over in memory: CreateOrder commits the saga already leased
//! to a free worker of this replica, with its first step recorded as started,
//! and that worker sends the step at once. The wake-up, the claim (a write)
//! and the first step's own start write are gone from the order's critical
//! path; what a crash at any point leaves is what a crash of a claimed drive
//! leaves (a leased saga with its first step IN_PROGRESS, resent with its key
//! by whoever claims it after the lease).
//!
//! The lease carries a drive number ([`Engine::next_lease`]), so a handed
//! drive that outlived its lease cannot write beside a later claim, even one
//! by this replica. And a drive that starts late (more than half its lease
//! after the reservation: a slow commit, a starved runtime) does not trust the
//! lease to still be its own: it records the same attempt again with a fenced
//! write (renewing the lease, or stopping if it was lost) before sending it. A hand-off that is
//! never driven (CreateOrder's request dropped while its commit went on)
//! gives its lease up, so the saga waits for no lease to run out.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;

use super::{Begun, Drive, Engine};
use crate::{
    domain::order::Order,
    saga::{
        plan::{Decision, SagaStatus},
        ports::OrderFacts,
    },
    store::saga::{
        AttemptWrite, FencedWrite, Lease, SagaColumns, SagaRecord, SagaStart, SagaStore, SagaStoreError,
        SagaWrite, SiblingRefs,
    },
};

/// A saga whose leased start is being committed, for its drive.
pub struct HandedOver {
    /// Taken by the drive.
    saga: Option<Handed>,
    store: Arc<dyn SagaStore>,
}

struct Handed {
    record: SagaRecord,
    lease: Lease,
    first: Begun,
    /// When the lease was reserved (just before the commit that starts it).
    reserved_at: Instant,
}

/// How long a saga never driven waits before its lease is given up: time
/// for a commit still queued when its request was dropped to land.
const UNDRIVEN_GRACE: Duration = Duration::from_secs(2);

impl Drop for HandedOver {
    /// Not driven: CreateOrder's commit failed, or its request was dropped
    /// (a client gone) while the commit was under way, which may still have
    /// stored the saga, leased to this drive for a whole lease. The lease is
    /// given up after a grace, so that any worker claims the saga at once;
    /// fenced by this drive's own lease, a saga never stored (or claimed
    /// since) is left alone.
    fn drop(&mut self) {
        let Some(saga) = self.saga.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        runtime.spawn(async move {
            tokio::time::sleep(UNDRIVEN_GRACE).await;
            let _ = store
                .release(&saga.lease, saga.record.saga_id, Utc::now(), false)
                .await;
        });
    }
}

impl Engine {
    /// The unit-of-work part that starts `start` leased with `lease` (see
    /// [`Engine::next_lease`]) and its first step's start record, and what
    /// the drive needs once it committed. `None` when the first decision is
    /// not a sibling step (never, for a new saga: the plan starts with
    /// authorize_payment).
    pub fn start_leased(&self, start: SagaStart, lease: Lease) -> Option<(SagaWrite, HandedOver)> {
        let reserved_at = Instant::now();
        let now = Utc::now();
        let mut record = SagaRecord {
            saga_id: start.saga_id,
            order_id: start.order_id,
            customer_id: Some(start.customer_id.clone()),
            seed: start.idempotency_seed.clone(),
            status: SagaStatus::Running,
            current_step: None,
            past_pivot: false,
            cancel_requested: false,
            cancel_reason: None,
            deadline: start.deadline,
            next_run_at: now,
            compensation_reason: None,
            last_error: None,
            failure_code: None,
            refs: SiblingRefs::default(),
            created_at: now,
            updated_at: now,
            steps: Vec::new(),
        };
        let mut state = record.state();
        let Decision::Run(step) = state.decide(now) else {
            return None;
        };
        if step.is_local() {
            return None;
        }
        let (first, started) = self.begin_local(&mut record, &mut state, step, &lease);
        let write = FencedWrite {
            steps: vec![first.row.clone()],
            attempts: vec![started],
            ..FencedWrite::columns(record.saga_id, &lease, SagaColumns::of(&record))
        };
        let handed = HandedOver {
            saga: Some(Handed {
                record,
                lease,
                first,
                reserved_at,
            }),
            store: self.store.clone(),
        };
        Some((SagaWrite::StartLeased(start, Box::new(write)), handed))
    }

    /// Drives a handed-over saga once its start committed with `order`
    /// (as CreateOrder placed it, personal data open; `traceparent`: the
    /// placing request's trace): its first step is sent without another
    /// write and decided without a read, unless half the lease is gone
    /// already.
    pub async fn drive_handed(
        &self,
        mut handed: HandedOver,
        order: Order,
        traceparent: Option<String>,
    ) -> Result<(), SagaStoreError> {
        let Some(handed) = handed.saga.take() else {
            return Ok(());
        };
        if handed.reserved_at.elapsed() >= handed.lease.duration / 2 {
            // Late: the same attempt is recorded again under the lease
            // (renewed, or found lost) before it is sent.
            let Begun { step, key, row } = &handed.first;
            let again = AttemptWrite::Started {
                step: *step,
                attempt: row.attempts,
                worker: handed.lease.owner.clone(),
                idempotency_key: key.clone(),
                started_at: Utc::now(),
            };
            let write = FencedWrite {
                steps: vec![row.clone()],
                attempts: vec![again],
                ..FencedWrite::columns(
                    handed.record.saga_id,
                    &handed.lease,
                    SagaColumns::of(&handed.record),
                )
            };
            match self.commit(write, None, &mut None).await {
                Ok(_) => {}
                Err(SagaStoreError::LeaseLost) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let facts = OrderFacts::of_order(handed.record.order_id, &order, traceparent);
        self.run(Drive {
            record: handed.record,
            lease: handed.lease,
            first: Some(handed.first),
            facts,
            order: Some(order),
        })
        .await
    }
}
