//! The simulation's fate: one seeded generator decides, at every store write,
//! sibling call and order command, whether it goes through, fails before it
//! applies, loses its answer after it applied, or whether the whole process
//! crashes there (before or after the effect). After a crash every operation
//! of the dead incarnation fails without effect until the next restart.

use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng, rngs::StdRng};

/// What happens to one store write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Applies and answers.
    Proceed,
    /// The process dies before it applies.
    CrashBefore,
    /// It applies, then the process dies.
    CrashAfter,
    /// The process is already dead.
    Dead,
}

/// What happens to one call (sibling or order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFate {
    /// A store-like fate.
    Process(Fate),
    /// A transient failure before the callee applies anything.
    FailBefore,
    /// The callee applies, the answer is lost (transient to the caller).
    LoseAnswer,
}

/// Probabilities, per mille.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// A crash at any one operation.
    pub crash: u32,
    /// A transient fault at any one call.
    pub fault: u32,
    /// A customer cancel arriving at any one call (at most one per run).
    pub cancel: u32,
    /// Crashes at most per run (progress is then guaranteed).
    pub max_crashes: u32,
}

/// Counters for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Operations decided.
    pub operations: u64,
    /// Crashes (process kills) injected.
    pub crashes: u64,
    /// Transient faults before the callee applied.
    pub faults_before: u64,
    /// Answers lost after the callee applied.
    pub lost_answers: u64,
    /// Customer cancels.
    pub cancels: u64,
}

#[derive(Debug)]
struct Inner {
    rng: StdRng,
    rates: Rates,
    alive: String,
    dead: bool,
    crashes_this_run: u32,
    cancel_due: bool,
    cancelled_this_run: bool,
    figures: Figures,
    trace: Vec<String>,
}

/// Shared by the store, the siblings and the order of one simulation.
#[derive(Debug, Clone)]
pub struct Chaos {
    inner: Arc<Mutex<Inner>>,
}

impl Chaos {
    /// A fate generator from `seed`.
    pub fn new(seed: u64, rates: Rates) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                rng: StdRng::seed_from_u64(seed),
                rates,
                alive: String::new(),
                dead: false,
                crashes_this_run: 0,
                cancel_due: false,
                cancelled_this_run: false,
                figures: Figures::default(),
                trace: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The generator, for the run's own random choices (inputs, scenarios).
    pub fn with_rng<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        f(&mut self.lock().rng)
    }

    /// A new run: crash budget and cancel reset.
    pub fn begin_run(&self) {
        let mut inner = self.lock();
        inner.crashes_this_run = 0;
        inner.cancelled_this_run = false;
        inner.cancel_due = false;
    }

    /// A fresh process named `owner` starts; the dead one stays dead.
    pub fn restart(&self, owner: &str) {
        let mut inner = self.lock();
        inner.alive = owner.to_string();
        inner.dead = false;
        let crashes = inner.figures.crashes;
        inner.trace.push(format!("restart {crashes}"));
    }

    /// True while the current process is dead.
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    fn crash_roll(inner: &mut Inner) -> Option<Fate> {
        if inner.crashes_this_run >= inner.rates.max_crashes
            || inner.rng.random_range(0..1000) >= inner.rates.crash
        {
            return None;
        }
        inner.crashes_this_run += 1;
        inner.figures.crashes += 1;
        inner.dead = true;
        Some(if inner.rng.random_bool(0.5) {
            Fate::CrashBefore
        } else {
            Fate::CrashAfter
        })
    }

    /// The fate of a store write by `owner`.
    pub fn fate_of_write(&self, owner: &str) -> Fate {
        let mut inner = self.lock();
        inner.figures.operations += 1;
        let fate = if inner.dead || inner.alive != owner {
            Fate::Dead
        } else {
            Self::crash_roll(&mut inner).unwrap_or(Fate::Proceed)
        };
        inner.trace.push(format!("write {fate:?}"));
        fate
    }

    /// The fate of the call named `what`; may also schedule a customer cancel.
    pub fn fate_of_call(&self, what: &str) -> CallFate {
        let mut inner = self.lock();
        inner.figures.operations += 1;
        if !inner.cancelled_this_run && inner.rng.random_range(0..1000) < inner.rates.cancel {
            inner.cancel_due = true;
            inner.cancelled_this_run = true;
        }
        let fate = if inner.dead {
            CallFate::Process(Fate::Dead)
        } else if let Some(crash) = Self::crash_roll(&mut inner) {
            CallFate::Process(crash)
        } else if inner.rng.random_range(0..1000) < inner.rates.fault {
            if inner.rng.random_bool(0.5) {
                inner.figures.faults_before += 1;
                CallFate::FailBefore
            } else {
                inner.figures.lost_answers += 1;
                CallFate::LoseAnswer
            }
        } else {
            CallFate::Process(Fate::Proceed)
        };
        inner.trace.push(format!("{what} {fate:?}"));
        fate
    }

    /// True once when a customer cancel should arrive now.
    pub fn take_cancel(&self) -> bool {
        let mut inner = self.lock();
        let due = std::mem::take(&mut inner.cancel_due);
        if due {
            inner.figures.cancels += 1;
            inner.trace.push("cancel".into());
        }
        due
    }

    /// Appends a line to the trace (outcomes the run observed).
    pub fn note(&self, line: String) {
        self.lock().trace.push(line);
    }

    /// The counters so far.
    pub fn figures(&self) -> Figures {
        self.lock().figures
    }

    /// The trace so far (for the determinism check).
    pub fn trace(&self) -> Vec<String> {
        self.lock().trace.clone()
    }
}
