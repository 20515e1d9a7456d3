//! The saga rules, given/when/then, and a property test that drives random
//! outcomes, cancels, timeouts and operator actions through them.

use proptest::prelude::*;

use super::*;

fn policy() -> RetryPolicy {
    RetryPolicy {
        forward_retries: 2,
        compensation_retries: 3,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(10),
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn saga() -> SagaState {
    SagaState::new(t0() + TimeDelta::minutes(30))
}

/// Runs `step` once with `outcome` at t0.
fn run(state: &mut SagaState, outcome: Outcome) -> (Step, Schedule) {
    let Decision::Run(step) = state.decide(t0()) else {
        panic!("expected a step to run, got {:?}", state.decide(t0()));
    };
    state.begin(step);
    (step, state.record(step, &outcome, &policy(), t0(), 0))
}

/// Drives to the end with every call succeeding; returns the steps run.
fn finish(state: &mut SagaState) -> Vec<Step> {
    let mut ran = Vec::new();
    loop {
        match state.decide(t0()) {
            Decision::Run(step) => {
                state.begin(step);
                state.record(step, &Outcome::Succeeded, &policy(), t0(), 0);
                ran.push(step);
            }
            Decision::Compensate(reason) => state.start_compensation(reason),
            Decision::Finish(status) => {
                state.status = status;
                return ran;
            }
            Decision::Idle => return ran,
        }
    }
}

#[test]
fn happy_path_runs_the_five_forward_steps_and_completes() {
    let mut state = saga();
    assert_eq!(finish(&mut state), Step::FORWARD.to_vec());
    assert_eq!(state.status, SagaStatus::Completed);
    assert!(state.past_pivot);
}

#[test]
fn a_refusal_compensates_exactly_the_steps_that_took_effect() {
    let mut state = saga();
    run(&mut state, Outcome::Succeeded); // authorize
    run(&mut state, Outcome::Succeeded); // reserve
    let (step, schedule) = run(
        &mut state,
        Outcome::Refused("address cannot be shipped to".into()),
    );
    assert_eq!((step, schedule), (Step::CreateShipment, Schedule::Now));
    assert_eq!(state.status, SagaStatus::Compensating);
    assert_eq!(
        state.compensation_reason.as_deref(),
        Some("create_shipment refused: address cannot be shipped to")
    );
    assert_eq!(
        finish(&mut state),
        vec![Step::ReleaseInventory, Step::VoidPayment, Step::CancelOrder],
        "no cancel_shipment: the refused shipment never existed"
    );
    assert_eq!(state.status, SagaStatus::Compensated);
    assert_eq!(state.step(Step::AuthorizePayment).status, StepStatus::Compensated);
}

#[test]
fn the_cancellation_code_names_the_refused_step_else_the_request_else_the_deadline() {
    for (succeeded_before, code) in [
        (0, ErrorReason::PaymentDeclined),
        (1, ErrorReason::OutOfStock),
        (2, ErrorReason::AddressUnshippable),
    ] {
        let mut state = saga();
        for _ in 0..succeeded_before {
            run(&mut state, Outcome::Succeeded);
        }
        run(&mut state, Outcome::Refused("no".into()));
        finish(&mut state);
        assert_eq!(state.cancellation_code(), code);
    }
    let mut state = saga();
    state.cancel_requested = true;
    assert_eq!(state.cancellation_code(), ErrorReason::CancellationRequested);
    let mut state = saga();
    run(&mut state, Outcome::Succeeded);
    assert_eq!(state.cancellation_code(), ErrorReason::OrderTimedOut);
}

#[test]
fn transient_failures_back_off_exponentially_then_fail_the_saga() {
    let mut state = saga();
    let mut waits = Vec::new();
    for _ in 0..3 {
        match run(&mut state, Outcome::Transient("unavailable".into())) {
            (_, Schedule::At(at)) => waits.push((at - t0()).num_milliseconds()),
            (_, Schedule::Halt) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(waits, vec![100, 200], "base, then doubled (no jitter drawn)");
    assert_eq!(state.status, SagaStatus::Failed);
    assert_eq!(state.step(Step::AuthorizePayment).status, StepStatus::Failed);
    assert_eq!(state.decide(t0()), Decision::Idle, "waits for an operator");

    assert_eq!(state.operator_retry(), Ok(Step::AuthorizePayment));
    assert_eq!(
        state.step(Step::AuthorizePayment).round_attempts,
        0,
        "a fresh budget"
    );
    assert_eq!(finish(&mut state), Step::FORWARD.to_vec());
    assert_eq!(state.step(Step::AuthorizePayment).attempts, 4);
}

#[test]
fn jitter_adds_at_most_half_the_delay() {
    let p = policy();
    assert_eq!(p.backoff(1, 0), Duration::from_millis(100));
    assert_eq!(p.backoff(1, 1000), Duration::from_millis(150));
    assert_eq!(p.backoff(3, 500), Duration::from_millis(500));
    assert_eq!(p.backoff(40, 0), Duration::from_secs(10), "capped");
}

#[test]
fn a_retry_wait_ends_at_the_deadline_when_that_comes_first() {
    let mut state = SagaState::new(t0() + TimeDelta::milliseconds(50));
    let (_, schedule) = run(&mut state, Outcome::Transient("unavailable".into()));
    assert_eq!(schedule, Schedule::At(t0() + TimeDelta::milliseconds(50)));
}

#[test]
fn the_deadline_compensates_before_the_pivot_but_not_after() {
    let mut state = saga();
    run(&mut state, Outcome::Succeeded);
    let late = state.deadline + TimeDelta::seconds(1);
    assert_eq!(
        state.decide(late),
        Decision::Compensate("order timed out before fulfillment completed".into())
    );

    let mut state = saga();
    for _ in 0..3 {
        run(&mut state, Outcome::Succeeded);
    }
    // Capture went out and its answer was lost: it may have happened.
    state.begin(Step::CapturePayment);
    assert_eq!(state.decide(late), Decision::Run(Step::CapturePayment));
}

#[test]
fn a_customer_cancel_compensates_an_uncertain_step_too() {
    let mut state = saga();
    run(&mut state, Outcome::Succeeded);
    state.begin(Step::ReserveInventory); // crashed mid-call: outcome unknown
    state.cancel_requested = true;
    state.cancel_reason = Some("changed my mind".into());
    let Decision::Compensate(reason) = state.decide(t0()) else {
        panic!()
    };
    assert_eq!(reason, "cancelled by the customer: changed my mind");
    state.start_compensation(reason);
    assert_eq!(
        finish(&mut state),
        vec![Step::ReleaseInventory, Step::VoidPayment, Step::CancelOrder]
    );
}

#[test]
fn past_the_pivot_refusals_and_cancels_only_halt_forward() {
    let mut state = saga();
    for _ in 0..4 {
        run(&mut state, Outcome::Succeeded);
    }
    assert!(state.past_pivot);
    state.cancel_requested = true;
    let (step, schedule) = run(&mut state, Outcome::Refused("order is cancelled".into()));
    assert_eq!((step, schedule), (Step::ConfirmOrder, Schedule::Halt));
    assert_eq!(state.status, SagaStatus::Failed);
    assert_eq!(
        state.decide(t0()),
        Decision::Idle,
        "cancel cannot compensate past the pivot"
    );
    assert_eq!(state.operator_skip(), Err(OperatorError::ForwardSkip));
    assert_eq!(state.operator_retry(), Ok(Step::ConfirmOrder));
    assert_eq!(finish(&mut state), vec![Step::ConfirmOrder]);
    assert_eq!(state.status, SagaStatus::Completed);
}

#[test]
fn a_failing_compensation_halts_and_an_operator_skip_goes_on() {
    let mut state = saga();
    run(&mut state, Outcome::Succeeded);
    run(&mut state, Outcome::Refused("out of stock".into()));
    for _ in 0..3 {
        assert!(matches!(
            run(&mut state, Outcome::Transient("unavailable".into())),
            (Step::VoidPayment, Schedule::At(_))
        ));
    }
    assert_eq!(
        run(&mut state, Outcome::Transient("unavailable".into())),
        (Step::VoidPayment, Schedule::Halt)
    );
    assert_eq!(state.status, SagaStatus::CompensationFailed);
    assert_eq!(state.plan("seed", t0()), vec![], "halted: nothing runs by itself");
    let plan = state.dry_run(false, "seed", t0()).unwrap();
    assert_eq!(
        plan.iter()
            .map(|p| (p.step, p.idempotency_key.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (Step::VoidPayment, "seed:void_payment"),
            (Step::CancelOrder, "seed:cancel_order")
        ]
    );
    let skip_plan = state.dry_run(true, "seed", t0()).unwrap();
    assert_eq!(
        skip_plan.iter().map(|p| p.step).collect::<Vec<_>>(),
        vec![Step::CancelOrder]
    );
    assert_eq!(state.operator_skip(), Ok(Step::VoidPayment));
    assert_eq!(finish(&mut state), vec![Step::CancelOrder]);
    assert_eq!(state.status, SagaStatus::Compensated);
}

#[test]
fn only_failed_sagas_take_operator_actions() {
    let mut state = saga();
    assert_eq!(
        state.operator_retry(),
        Err(OperatorError::NotRetryable("RUNNING"))
    );
    finish(&mut state);
    assert_eq!(
        state.operator_skip(),
        Err(OperatorError::NotRetryable("COMPLETED"))
    );
}

#[test]
fn names_round_trip() {
    for step in Step::FORWARD.into_iter().chain(Step::COMPENSATION) {
        assert_eq!(Step::parse(step.name()), Some(step));
    }
    assert_eq!(
        SagaStatus::parse("COMPENSATION_FAILED"),
        Some(SagaStatus::CompensationFailed)
    );
    assert_eq!(StepStatus::parse("IN_PROGRESS"), Some(StepStatus::InProgress));
}

/// Something that can happen to a saga between decisions.
#[derive(Debug, Clone)]
enum Event {
    Succeed,
    Refuse,
    Transient,
    Cancel,
    Timeout,
    OperatorRetry,
    OperatorSkip,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => Just(Event::Succeed),
        1 => Just(Event::Refuse),
        3 => Just(Event::Transient),
        1 => Just(Event::Cancel),
        1 => Just(Event::Timeout),
        1 => Just(Event::OperatorRetry),
        1 => Just(Event::OperatorSkip),
    ]
}

proptest! {
    /// Whatever happens: a completed saga never compensated, a compensated one
    /// undid every forward step that may have taken effect and never captured,
    /// and nothing is undone that was never attempted.
    #[test]
    fn sagas_end_consistent_under_any_sequence_of_events(events in prop::collection::vec(event(), 0..60)) {
        let mut state = saga();
        let mut now = t0();
        let mut ran: Vec<Step> = Vec::new();
        for event in events {
            match event {
                Event::Cancel => state.cancel_requested = true,
                Event::Timeout => now = state.deadline,
                Event::OperatorRetry => drop(state.operator_retry()),
                Event::OperatorSkip => drop(state.operator_skip()),
                outcome => match state.decide(now) {
                    Decision::Run(step) => {
                        let outcome = match outcome {
                            Event::Succeed => Outcome::Succeeded,
                            Event::Refuse => Outcome::Refused("no".into()),
                            _ => Outcome::Transient("later".into()),
                        };
                        state.begin(step);
                        state.record(step, &outcome, &policy(), now, 0);
                        ran.push(step);
                    }
                    Decision::Compensate(reason) => state.start_compensation(reason),
                    Decision::Finish(status) => state.status = status,
                    Decision::Idle => {}
                },
            }
            // Never compensate once capture may have happened.
            if ran.contains(&Step::CapturePayment)
                && state.step(Step::CapturePayment).may_have_effect()
            {
                prop_assert!(!ran.iter().any(|s| s.is_compensation()), "{ran:?}");
            }
        }
        match state.status {
            SagaStatus::Completed => {
                prop_assert!(Step::FORWARD.iter().all(|s| state.step(*s).status == StepStatus::Succeeded));
                prop_assert!(!ran.iter().any(|s| s.is_compensation()));
            }
            SagaStatus::Compensated => {
                prop_assert!(!state.past_pivot);
                prop_assert!(!ran.contains(&Step::ConfirmOrder));
                for comp in [Step::CancelShipment, Step::ReleaseInventory, Step::VoidPayment] {
                    let forward = comp.undoes().unwrap();
                    if state.step(forward).attempts > 0 && state.step(forward).status != StepStatus::Refused {
                        prop_assert!(
                            matches!(state.step(comp).status, StepStatus::Succeeded | StepStatus::Skipped),
                            "{comp} not done: {state:?}"
                        );
                    }
                }
            }
            _ => {}
        }
        for comp in [Step::CancelShipment, Step::ReleaseInventory, Step::VoidPayment] {
            if ran.contains(&comp) {
                prop_assert!(state.step(comp.undoes().unwrap()).attempts > 0, "{comp} undid nothing");
            }
        }
    }
}
