//! The fulfillment saga as a pure state machine: which step runs next, what
//! an outcome does to the saga, when to retry, when to compensate, and what an
//! operator's retry or skip changes. No I/O: the engine persists and executes
//! what this module decides, so every rule here is tested without a database.
//!
//! Forward: authorize_payment -> reserve_inventory -> create_shipment ->
//! capture_payment (the pivot) -> confirm_order. Compensation, in reverse:
//! cancel_shipment, release_inventory, void_payment, then cancel_order.
//!
//! A forward step whose call *may* have taken effect (attempted, not refused)
//! is compensated, even when its answer never arrived: the engine re-sends it
//! with its idempotency key to learn the outcome before undoing it. Once
//! capture may have happened the saga can no longer compensate, so timeouts and
//! customer cancels are ignored from then on.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::reason::ErrorReason;

mod step;

pub use self::step::{Step, idempotency_key};

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }
        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &[Self] = &[$(Self::$variant),+];
            /// The text stored in the database and shown to operators.
            pub fn as_str(self) -> &'static str { match self { $(Self::$variant => $text),+ } }
            /// From the stored text.
            pub fn parse(text: &str) -> Option<Self> { match text { $($text => Some(Self::$variant),)+ _ => None } }
        }
    };
}

string_enum!(
    /// Status of a saga.
    SagaStatus {
        /// Driving the forward steps.
        Running = "RUNNING",
        /// Undoing the steps that took effect, last first.
        Compensating = "COMPENSATING",
        /// Done; order confirmed. Terminal.
        Completed = "COMPLETED",
        /// Undone; order cancelled. Terminal.
        Compensated = "COMPENSATED",
        /// A forward step ran out of retries; waits for an operator.
        Failed = "FAILED",
        /// A compensation ran out of retries or was refused; waits for an operator.
        CompensationFailed = "COMPENSATION_FAILED",
    }
);

string_enum!(
    /// Status of one step.
    StepStatus {
        /// Not started, or waiting for its next attempt.
        Pending = "PENDING",
        /// A call is out (recorded before the call).
        InProgress = "IN_PROGRESS",
        /// Took effect; a later compensation may still undo it.
        Succeeded = "SUCCEEDED",
        /// Refused by the sibling: no effect.
        Refused = "REFUSED",
        /// Ran out of retries.
        Failed = "FAILED",
        /// Skipped by an operator.
        Skipped = "SKIPPED",
        /// Its effect was undone by its compensation.
        Compensated = "COMPENSATED",
    }
);

impl SagaStatus {
    /// Completed or Compensated: nothing will ever run again. FAILED and
    /// COMPENSATION_FAILED are not terminal: an operator may retry them.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated)
    }
}

/// Progress of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepState {
    pub status: StepStatus,
    /// Attempts ever made, across operator retries (shown to operators).
    pub attempts: u32,
    /// Attempts since the last operator retry: what the retry budget counts.
    pub round_attempts: u32,
}

impl Default for StepState {
    fn default() -> Self {
        Self {
            status: StepStatus::Pending,
            attempts: 0,
            round_attempts: 0,
        }
    }
}

impl StepState {
    /// True when a call may have taken effect at the sibling.
    pub fn may_have_effect(&self) -> bool {
        self.attempts > 0 && !matches!(self.status, StepStatus::Refused | StepStatus::Compensated)
    }

    fn done(&self) -> bool {
        matches!(self.status, StepStatus::Succeeded | StepStatus::Skipped)
    }
}

/// Retry budgets and backoff.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries of a forward step after its first attempt (SAGA_RETRY_ATTEMPTS).
    pub forward_retries: u32,
    /// Retries of a compensation step (SAGA_COMPENSATION_RETRY_ATTEMPTS).
    pub compensation_retries: u32,
    /// First backoff delay (SAGA_RETRY_DELAY_SECONDS).
    pub base_delay: Duration,
    /// Cap of one backoff delay.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// Delay before the retry that follows attempt `attempt` (1-based):
    /// `base * 2^(attempt-1)`, capped, plus up to half of it as jitter
    /// (`jitter_permille` in 0..1000, drawn by the caller).
    pub fn backoff(&self, attempt: u32, jitter_permille: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let delay = self.base_delay.saturating_mul(1 << exponent).min(self.max_delay);
        delay + delay / 2 * jitter_permille.min(1000) / 1000
    }
}

/// What an attempt's call came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The sibling did what the step asked (for a compensation: undid it).
    Succeeded,
    /// A business refusal (FAILED_PRECONDITION, INVALID_ARGUMENT, NOT_FOUND).
    Refused(String),
    /// Anything worth retrying (UNAVAILABLE, DEADLINE_EXCEEDED, connect error...).
    Transient(String),
}

/// What the saga should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Call this step's sibling (or the order, for a local step).
    Run(Step),
    /// Switch to compensation for this reason, then decide again.
    Compensate(String),
    /// All steps done: this terminal status.
    Finish(SagaStatus),
    /// Nothing to do until something changes (waiting for an operator, or terminal).
    Idle,
}

/// When the saga runs next after an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Go on at once.
    Now,
    /// Retry at this time.
    At(DateTime<Utc>),
    /// Stop until an operator acts.
    Halt,
}

/// Why an operator action is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
    /// The saga is not FAILED or COMPENSATION_FAILED.
    #[error("only FAILED or COMPENSATION_FAILED sagas can be retried; this one is {0}")]
    NotRetryable(&'static str),
    /// Skip asked for a forward step.
    #[error("only a compensation step can be skipped; retry the forward step or cancel the order")]
    ForwardSkip,
}

/// One step an operator retry would run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    pub step: Step,
    /// The step's one key ([`idempotency_key`]), as on every earlier
    /// attempt: a sibling that already acted answers with its earlier result.
    pub idempotency_key: String,
}

/// The whole state the rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaState {
    pub status: SagaStatus,
    /// True once capture succeeded.
    pub past_pivot: bool,
    /// The customer asked to cancel.
    pub cancel_requested: bool,
    /// The customer's reason, which becomes the compensation reason.
    pub cancel_reason: Option<String>,
    /// Compensate if not completed by then (unless capture may have happened).
    pub deadline: DateTime<Utc>,
    /// Why the saga compensates.
    pub compensation_reason: Option<String>,
    /// Steps started so far; absent means pending, never attempted.
    pub steps: BTreeMap<Step, StepState>,
}

impl SagaState {
    /// A new saga, as CreateOrder inserts it.
    pub fn new(deadline: DateTime<Utc>) -> Self {
        Self {
            status: SagaStatus::Running,
            past_pivot: false,
            cancel_requested: false,
            cancel_reason: None,
            deadline,
            compensation_reason: None,
            steps: BTreeMap::new(),
        }
    }

    /// The state of `step`.
    pub fn step(&self, step: Step) -> StepState {
        self.steps.get(&step).copied().unwrap_or_default()
    }

    /// True while compensation is still possible: capture has not (maybe) happened.
    pub fn may_compensate(&self) -> bool {
        !self.past_pivot && !self.step(Step::CapturePayment).may_have_effect()
    }

    /// The step running or due next in the current direction.
    pub fn next_step(&self) -> Option<Step> {
        match self.status {
            SagaStatus::Running | SagaStatus::Failed => {
                Step::FORWARD.into_iter().find(|s| !self.step(*s).done())
            }
            SagaStatus::Compensating | SagaStatus::CompensationFailed => Step::COMPENSATION
                .into_iter()
                .find(|s| self.compensation_needed(*s)),
            SagaStatus::Completed | SagaStatus::Compensated => None,
        }
    }

    /// A compensation step is needed when not done yet and (for a sibling
    /// step) its forward step may have taken effect.
    fn compensation_needed(&self, step: Step) -> bool {
        let pending = !self.step(step).done();
        match step.undoes() {
            Some(forward) => pending && self.step(forward).may_have_effect(),
            None => pending,
        }
    }

    /// What to do at `now`.
    pub fn decide(&self, now: DateTime<Utc>) -> Decision {
        match self.status {
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::CompensationFailed => {
                Decision::Idle
            }
            // A FAILED saga waits for an operator, unless the customer cancels.
            SagaStatus::Failed => match self.cancel_compensation(now) {
                Some(reason) if self.cancel_requested => Decision::Compensate(reason),
                _ => Decision::Idle,
            },
            SagaStatus::Running => {
                if let Some(reason) = self.cancel_compensation(now) {
                    return Decision::Compensate(reason);
                }
                self.next_step()
                    .map_or(Decision::Finish(SagaStatus::Completed), Decision::Run)
            }
            SagaStatus::Compensating => self
                .next_step()
                .map_or(Decision::Finish(SagaStatus::Compensated), Decision::Run),
        }
    }

    /// Why the saga should compensate now without a refusal, if it should.
    fn cancel_compensation(&self, now: DateTime<Utc>) -> Option<String> {
        if !self.may_compensate() {
            return None;
        }
        if self.cancel_requested {
            let why = self.cancel_reason.as_deref().unwrap_or("").trim();
            return Some(if why.is_empty() {
                "cancelled by the customer".to_string()
            } else {
                format!("cancelled by the customer: {why}")
            });
        }
        (now >= self.deadline).then(|| "order timed out before fulfillment completed".to_string())
    }

    /// Why the order is cancelled, for programs, derived from the saga's
    /// stored state (no column of its own): the refused forward step if one
    /// was refused, else the customer's request, else the deadline (the only
    /// other way into compensation).
    pub fn cancellation_code(&self) -> ErrorReason {
        let refused = Step::FORWARD
            .into_iter()
            .find(|s| self.step(*s).status == StepStatus::Refused);
        match refused {
            Some(step) => step.refusal_code(),
            None if self.cancel_requested => ErrorReason::CancellationRequested,
            None => ErrorReason::OrderTimedOut,
        }
    }

    /// Switches to compensation; `reason` becomes the order's cancellation
    /// reason.
    pub fn start_compensation(&mut self, reason: String) {
        self.status = SagaStatus::Compensating;
        self.compensation_reason = Some(reason);
    }

    /// Records that an attempt of `step` is about to be sent.
    pub fn begin(&mut self, step: Step) {
        let state = self.steps.entry(step).or_default();
        state.status = StepStatus::InProgress;
        state.attempts += 1;
        state.round_attempts += 1;
    }

    /// Applies an attempt's outcome and says when to go on. `jitter_permille`
    /// (0..1000) is drawn by the caller so that this stays deterministic.
    pub fn record(
        &mut self,
        step: Step,
        outcome: &Outcome,
        policy: &RetryPolicy,
        now: DateTime<Utc>,
        jitter_permille: u32,
    ) -> Schedule {
        let compensation = step.is_compensation();
        let state = self.steps.entry(step).or_default();
        match outcome {
            Outcome::Succeeded => {
                state.status = StepStatus::Succeeded;
                if step == Step::CapturePayment {
                    self.past_pivot = true;
                }
                if let Some(forward) = step.undoes() {
                    self.steps.entry(forward).or_default().status = StepStatus::Compensated;
                }
                Schedule::Now
            }
            // Before the pivot a refusal means "no": undo what was done.
            Outcome::Refused(why) if !compensation && !self.past_pivot => {
                state.status = StepStatus::Refused;
                self.start_compensation(format!("{step} refused: {why}"));
                Schedule::Now
            }
            // A refused compensation, or a refusal past the pivot, cannot be
            // worked around by the saga: an operator decides.
            Outcome::Refused(_) => {
                state.status = StepStatus::Failed;
                self.status = if compensation {
                    SagaStatus::CompensationFailed
                } else {
                    SagaStatus::Failed
                };
                Schedule::Halt
            }
            Outcome::Transient(_) => {
                let retries = if compensation {
                    policy.compensation_retries
                } else {
                    policy.forward_retries
                };
                if state.round_attempts > retries {
                    state.status = StepStatus::Failed;
                    self.status = if compensation {
                        SagaStatus::CompensationFailed
                    } else {
                        SagaStatus::Failed
                    };
                    return Schedule::Halt;
                }
                state.status = StepStatus::Pending;
                let delay = policy.backoff(state.round_attempts, jitter_permille);
                let mut at = now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX);
                // Wake at the deadline if that comes first and can still compensate.
                if !compensation && self.may_compensate() && self.status == SagaStatus::Running {
                    at = at.min(self.deadline.max(now));
                }
                Schedule::At(at)
            }
        }
    }

    /// An operator retries the failed step: a fresh retry budget, same key.
    pub fn operator_retry(&mut self) -> Result<Step, OperatorError> {
        let step = self.failed_step()?;
        let state = self.steps.entry(step).or_default();
        state.status = StepStatus::Pending;
        state.round_attempts = 0;
        self.status = if step.is_compensation() {
            SagaStatus::Compensating
        } else {
            SagaStatus::Running
        };
        Ok(step)
    }

    /// An operator skips the failed compensation step (its effect is then the
    /// operator's business); compensation goes on with the next one.
    pub fn operator_skip(&mut self) -> Result<Step, OperatorError> {
        let step = self.failed_step()?;
        if !step.is_compensation() {
            return Err(OperatorError::ForwardSkip);
        }
        self.steps.entry(step).or_default().status = StepStatus::Skipped;
        self.status = SagaStatus::Compensating;
        Ok(step)
    }

    fn failed_step(&self) -> Result<Step, OperatorError> {
        match self.status {
            SagaStatus::Failed | SagaStatus::CompensationFailed => self
                .next_step()
                .ok_or(OperatorError::NotRetryable(self.status.as_str())),
            other => Err(OperatorError::NotRetryable(other.as_str())),
        }
    }

    /// The steps an operator retry (or skip) would run, with their keys,
    /// without changing anything: RetrySaga's dry run.
    pub fn dry_run(
        &self,
        skip: bool,
        seed: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<PlannedStep>, OperatorError> {
        let mut state = self.clone();
        if skip {
            state.operator_skip()?;
        } else {
            state.operator_retry()?;
        }
        Ok(state.plan(seed, now))
    }

    /// The steps that would run from here if every call succeeded, with their
    /// keys.
    pub fn plan(&self, seed: &str, now: DateTime<Utc>) -> Vec<PlannedStep> {
        let mut state = self.clone();
        let mut plan = Vec::new();
        let policy = RetryPolicy {
            forward_retries: 0,
            compensation_retries: 0,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
        };
        // Bounded: each step can appear once per direction.
        for _ in 0..Step::FORWARD.len() + Step::COMPENSATION.len() + 2 {
            match state.decide(now) {
                Decision::Run(step) => {
                    plan.push(PlannedStep {
                        step,
                        idempotency_key: idempotency_key(seed, step),
                    });
                    state.begin(step);
                    state.record(step, &Outcome::Succeeded, &policy, now, 0);
                }
                Decision::Compensate(reason) => state.start_compensation(reason),
                Decision::Finish(_) | Decision::Idle => break,
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests;
