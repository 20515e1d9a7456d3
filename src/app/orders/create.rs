//! CreateOrder: from the caller's cart to an order, exactly once per
//! idempotency key.
//!
//! # Steps, and why in this order
//! 1. Validate (INVALID_ARGUMENT, nothing stored).
//! 2. Snapshot the cart (a read), then claim the key, recording the snapshot
//!    with the claim (one write for both): a new key gets its order id now,
//!    so every attempt of this request works on the same order. Same key,
//!    other request: INVALID_ARGUMENT. Held by a live attempt: ABORTED. Done
//!    or refused: the first answer again (the snapshot is dropped). A key an
//!    earlier attempt recorded a snapshot under resumes from that one.
//! 3. Decide (PlaceOrder). Business refusals (no such cart, converted,
//!    empty) are remembered under the key.
//! 4. With the snapshot recorded under the key, convert the cart by
//!    compare-and-set on the snapshot's version. The cart is converted
//!    *before* the order is appended: if the order came first and the
//!    conversion then failed because the customer changed the cart, an order
//!    would exist for a cart that stays active (and could be ordered twice).
//!    Converting first freezes exactly the snapshot that is ordered; if the
//!    cart changed meanwhile, the conversion is refused and the request is
//!    ABORTED (not remembered): nothing is ordered that the client did not
//!    see, and a retry orders the cart as it is then.
//! 5. Commit one unit of work ([`crate::store::unit_of_work`]): OrderCreated
//!    at expected version 0, the saga start (the one
//!    place a saga starts) and the key's completion. When a saga worker of
//!    this replica is free, the saga starts leased to it with its first step
//!    recorded as started, and is handed to it in memory after the commit
//!    ([`crate::saga::worker::LocalWorkers`]): no wake-up, no claim, no
//!    separate start write before the first sibling call. Otherwise a worker
//!    claims it when woken.
//!
//! If step 5 fails transiently, the cart is already converted into this
//! order: the key's lease is released (the failure is not remembered) and a
//! retry with the same key resumes from the recorded snapshot (the cart's
//! conversion is idempotent for the same order id). If two attempts race
//! (a lease ran out), both convert into the same order and only one append
//! wins version 1; the other reads the completed key's answer.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{OrderApp, OrderView, validate};
use crate::{
    auth::Principal,
    domain::{
        cart::{Cart, CartError, CartItem},
        money::{Currency, Money},
        order::{Order, OrderCommand, OrderEvent, PlaceOrder},
    },
    error::{AppError, ErrorReason, FieldViolation, Resource},
    saga::{
        engine::HandedOver,
        worker::{LocalWorkers, Reserved},
    },
    store::{
        event_store::{ORDER_STREAM, StreamAppend},
        idempotency::{Claim, ClaimOutcome, IdempotencyCompletion},
        saga::{SagaStart, SagaWrite},
        unit_of_work::{UnitOfWork, UnitOfWorkError},
    },
};

/// The checkout snapshot: the cart an order is placed from, recorded under
/// the key so that every attempt of the request orders the same cart.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckoutSnapshot {
    cart_version: u64,
    currency: Currency,
    items: Vec<SnapshotItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotItem {
    product_id: String,
    product_name: String,
    quantity: u32,
    unit_price: Money,
}

impl From<&Cart> for CheckoutSnapshot {
    fn from(cart: &Cart) -> Self {
        Self {
            cart_version: cart.version,
            currency: cart.currency,
            items: cart
                .items
                .iter()
                .map(|i| SnapshotItem {
                    product_id: i.product_id.clone(),
                    product_name: i.product_name.clone(),
                    quantity: i.quantity,
                    unit_price: i.unit_price,
                })
                .collect(),
        }
    }
}

impl OrderApp {
    /// CreateOrder (see the module docs). Returns the order, status PENDING.
    #[tracing::instrument(skip(self, principal, input), fields(customer = %principal.subject))]
    pub async fn create_order(
        &self,
        principal: &Principal,
        input: validate::CreateOrderInput,
    ) -> Result<OrderView, AppError> {
        let request = validate::create_order(input)?;
        // Taken before the claim so that the claim records it; a failed
        // snapshot is only reported if this request gets to work on the key.
        let snapshot = self
            .carts
            .checkout_snapshot(principal, request.cart_id)
            .await
            .map(|cart| CheckoutSnapshot::from(&cart));
        let claim = Claim {
            customer_id: principal.subject.clone(),
            key: request.idempotency_key.clone(),
            request_hash: request.request_hash(&principal.subject),
            order_id: Uuid::now_v7(),
            lease: self.settings.idempotency_lease,
            snapshot: match &snapshot {
                Ok(snapshot) => Some(snapshot_json(snapshot)?),
                Err(_) => None,
            },
        };
        match self.idempotency_keys.claim(&claim).await? {
            ClaimOutcome::InFlight => Err(AppError::aborted(
                ErrorReason::IdempotencyKeyInFlight,
                "a request with this idempotency key is still in progress; retry shortly",
            )),
            ClaimOutcome::DifferentRequest => Err(AppError::IdempotencyKeyReused),
            ClaimOutcome::Done(response) => self.replay(&response).await,
            ClaimOutcome::Refused(response) => Err(refusal_from_json(&response)),
            ClaimOutcome::Claimed {
                order_id,
                snapshot: recorded,
            } => {
                let start = match recorded {
                    // Recorded by this claim: the snapshot just taken.
                    Some(recorded) if Some(&recorded) == claim.snapshot.as_ref() => Start::Recorded(snapshot),
                    Some(recorded) => {
                        Start::Resumed(serde_json::from_value(recorded).map_err(|e| {
                            AppError::Internal(anyhow::anyhow!("recorded checkout snapshot: {e}"))
                        }))
                    }
                    None => Start::Recorded(snapshot),
                };
                let result = self.place(principal, &request, order_id, start).await;
                if let Err(err) = &result {
                    let (customer, key) = (&claim.customer_id, &claim.key);
                    let outcome = match refusal_to_json(err) {
                        Some(refusal) => self.idempotency_keys.refuse(customer, key, &refusal).await,
                        None => self.idempotency_keys.release(customer, key).await,
                    };
                    if let Err(store_err) = outcome {
                        // The lease still expires on its own; the answer stands.
                        tracing::warn!(error = %store_err, "could not settle the idempotency key");
                    }
                }
                result
            }
        }
    }

    /// Steps 3 to 5 for the holder of the key.
    async fn place(
        &self,
        principal: &Principal,
        request: &validate::ValidCreateOrder,
        order_id: Uuid,
        mut start: Start,
    ) -> Result<OrderView, AppError> {
        let (customer, key) = (&principal.subject, &request.idempotency_key);
        loop {
            let (snapshot, resumed) = match start {
                // Recorded by the claim already (or failed: nothing to record).
                Start::Recorded(snapshot) => (snapshot?, false),
                Start::Resumed(snapshot) => (snapshot?, true),
                Start::TakeSnapshot => {
                    let cart = self.carts.checkout_snapshot(principal, request.cart_id).await?;
                    let snapshot = CheckoutSnapshot::from(&cart);
                    self.idempotency_keys
                        .save_snapshot(customer, key, &snapshot_json(&snapshot)?)
                        .await?;
                    (snapshot, false)
                }
            };
            start = Start::TakeSnapshot;
            let saga_id = self.settings.saga_orchestration.then(Uuid::now_v7);
            let events = decide(customer, request, order_id, &snapshot, saga_id)?;
            match self
                .carts
                .mark_converted(request.cart_id, snapshot.cart_version, order_id)
                .await
            {
                Ok(()) => {
                    return self
                        .append_created(customer, key, order_id, events, saga_id)
                        .await;
                }
                // The snapshot an earlier attempt recorded is stale (the cart
                // changed after that attempt failed): take a fresh one.
                Err(AppError::Aborted { .. }) if resumed => continue,
                // The cart changed during this checkout: nothing is converted,
                // nothing ordered unseen; the client retries.
                Err(AppError::Aborted { reason, message }) => {
                    return Err(AppError::aborted(
                        reason,
                        format!(
                            "the cart changed during checkout ({message}); nothing was ordered, retry to order its current contents"
                        ),
                    ));
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn append_created(
        &self,
        customer: &str,
        key: &str,
        order_id: Uuid,
        events: Vec<OrderEvent>,
        saga_id: Option<Uuid>,
    ) -> Result<OrderView, AppError> {
        let response = json!({"order_id": order_id, "version": 1});
        let start = saga_id.map(|saga_id| SagaStart {
            saga_id,
            order_id,
            customer_id: customer.to_string(),
            idempotency_seed: format!("{order_id}/{key}"),
            deadline: chrono::Utc::now()
                + chrono::Duration::from_std(self.settings.order_timeout).unwrap_or(chrono::Duration::MAX),
        });
        let (saga, handoff) = self.saga_start(start);
        let unit = UnitOfWork {
            appends: vec![StreamAppend {
                stream_id: order_id,
                stream_type: ORDER_STREAM.into(),
                expected_version: Some(0),
                events: self.encode(&events, Some(key)).await?,
            }],
            saga,
            idempotency: Some(IdempotencyCompletion {
                customer_id: customer.to_string(),
                key: key.to_string(),
                response: response.clone(),
            }),
        };
        match self.units.commit(unit).await {
            Ok(committed) => {
                crate::metrics::order_status_transition("PENDING");
                let recorded_at =
                    committed.appended.first().map(|a| a.recorded_at).ok_or_else(|| {
                        AppError::Internal(anyhow::anyhow!("OrderCreated was not appended"))
                    })?;
                let order = Order::from_events(&events);
                match handoff {
                    Some((reserved, handed)) => {
                        let traceparent =
                            crate::telemetry::current_traceparent().filter(|t| t.starts_with("00-"));
                        reserved.hand_over(handed, order.clone(), traceparent);
                    }
                    // Inserted unleased: this replica's claim loop takes it
                    // at once when a slot frees.
                    None if saga_id.is_some() => {
                        if let Some(workers) = &self.local_workers {
                            workers.wake();
                        }
                    }
                    None => {}
                }
                OrderView::from_order(&order, recorded_at, recorded_at).ok_or_else(|| {
                    AppError::Internal(anyhow::anyhow!("OrderCreated did not place the order"))
                })
            }
            // Another attempt of this key appended first, completing the key
            // in the same transaction: answer as it did.
            Err(UnitOfWorkError::Conflict { .. }) => self.replay(&response).await,
            Err(err) => Err(err.into()),
        }
    }

    /// The saga part of CreateOrder's unit: the start leased to a free local
    /// worker (step 5 of the module docs), with what hands it over after the
    /// commit; else the plain start, which a worker claims when woken.
    fn saga_start(&self, start: Option<SagaStart>) -> (Option<SagaWrite>, Option<(Reserved, HandedOver)>) {
        let Some(start) = start else {
            return (None, None);
        };
        let Some(reserved) = self.local_workers.as_ref().and_then(LocalWorkers::reserve) else {
            return (Some(SagaWrite::Start(start)), None);
        };
        match reserved.start(start.clone()) {
            Some((write, handed)) => (Some(write), Some((reserved, handed))),
            None => (Some(SagaWrite::Start(start)), None),
        }
    }

    /// The answer of a completed key: the order as it was at that version.
    async fn replay(&self, response: &Value) -> Result<OrderView, AppError> {
        let order_id = response["order_id"]
            .as_str()
            .and_then(|s| Uuid::try_parse(s).ok())
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("stored response without order_id")))?;
        let version = response["version"].as_u64().unwrap_or(1);
        self.load_until(order_id, Some(version))
            .await?
            .ok_or_else(|| {
                AppError::Internal(anyhow::anyhow!("completed key's order {order_id} has no events"))
            })?
            .view()
    }
}

/// Where the key's holder starts from.
enum Start {
    /// The snapshot this request took (recorded under the key with the claim).
    Recorded(Result<CheckoutSnapshot, AppError>),
    /// A snapshot an earlier attempt recorded: it may be stale.
    Resumed(Result<CheckoutSnapshot, AppError>),
    /// Take (and record) a new snapshot.
    TakeSnapshot,
}

fn snapshot_json(snapshot: &CheckoutSnapshot) -> Result<Value, AppError> {
    serde_json::to_value(snapshot).map_err(|e| AppError::Internal(e.into()))
}

/// PlaceOrder from the snapshot: the aggregate's decision (refusals remembered).
fn decide(
    customer: &str,
    request: &validate::ValidCreateOrder,
    order_id: Uuid,
    snapshot: &CheckoutSnapshot,
    saga_id: Option<Uuid>,
) -> Result<Vec<OrderEvent>, AppError> {
    let place = PlaceOrder {
        order_id,
        customer_id: customer.to_string(),
        cart_id: request.cart_id,
        items: snapshot
            .items
            .iter()
            .map(|i| CartItem {
                product_id: i.product_id.clone(),
                product_name: i.product_name.clone(),
                quantity: i.quantity,
                unit_price: i.unit_price,
            })
            .collect(),
        currency: snapshot.currency,
        personal: request.personal.clone(),
        saga_id,
    };
    Ok(Order::default().handle(OrderCommand::Place(Box::new(place)))?)
}

/// A business refusal as stored under the key; None for transient or
/// internal failures, which must not be remembered. The reason is stored
/// with it, so that a repeat answers with the same `ErrorInfo`.
fn refusal_to_json(err: &AppError) -> Option<Value> {
    Some(match err {
        AppError::NotFound { resource, name } => {
            json!({"code": "not_found", "resource": resource, "name": name})
        }
        AppError::FailedPrecondition { reason, message } => {
            json!({"code": "failed_precondition", "reason": reason.as_str(), "detail": message})
        }
        AppError::PermissionDenied(why) => json!({"code": "permission_denied", "detail": why}),
        AppError::AlreadyExists(what) => json!({"code": "already_exists", "detail": what}),
        AppError::InvalidArgument(violations) => {
            let list: Vec<_> = violations
                .iter()
                .map(|v| json!([v.field, v.description]))
                .collect();
            json!({"code": "invalid_argument", "violations": list})
        }
        _ => return None,
    })
}

/// The inverse of [`refusal_to_json`]. Records stored before reasons were
/// (no `reason`, no `resource`) read as what CreateOrder could refuse then:
/// a missing cart, or the cart's or order's state.
fn refusal_from_json(stored: &Value) -> AppError {
    let detail = stored["detail"].as_str().unwrap_or_default().to_string();
    match stored["code"].as_str() {
        Some("not_found") => AppError::NotFound {
            resource: serde_json::from_value(stored["resource"].clone()).unwrap_or(Resource::Cart),
            name: stored["name"].as_str().unwrap_or_default().to_string(),
        },
        Some("failed_precondition") => {
            let legacy = || match detail.as_str() {
                d if d == CartError::NotActive.to_string() => ErrorReason::CartNotActive,
                d if d == CartError::Empty.to_string() => ErrorReason::CartEmpty,
                _ => ErrorReason::OrderStateInvalid,
            };
            let reason = stored["reason"].as_str().and_then(ErrorReason::parse);
            AppError::failed_precondition(reason.unwrap_or_else(legacy), detail)
        }
        Some("permission_denied") => AppError::PermissionDenied(detail),
        Some("already_exists") => AppError::AlreadyExists(detail),
        Some("invalid_argument") => AppError::InvalidArgument(
            stored["violations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    FieldViolation::new(
                        v[0].as_str().unwrap_or_default(),
                        v[1].as_str().unwrap_or_default(),
                    )
                })
                .collect(),
        ),
        _ => AppError::Internal(anyhow::anyhow!("unreadable stored refusal {stored}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_survive_the_round_trip_and_transient_failures_are_not_remembered() {
        for err in [
            AppError::not_found(Resource::Cart, Uuid::nil()),
            AppError::failed_precondition(ErrorReason::CartEmpty, "the cart is empty"),
            AppError::invalid("cart_id", "bad"),
        ] {
            let stored = refusal_to_json(&err).unwrap();
            let back = refusal_from_json(&stored);
            assert_eq!(back.to_string(), err.to_string());
            assert_eq!(back.reason(), err.reason());
        }
        assert!(refusal_to_json(&AppError::unavailable("db")).is_none());
        assert!(refusal_to_json(&AppError::aborted(ErrorReason::CartVersionMismatch, "cas")).is_none());
    }

    #[test]
    fn refusals_stored_before_reasons_read_with_the_reason_they_stood_for() {
        let old = json!({"code": "failed_precondition", "detail": CartError::NotActive.to_string()});
        assert_eq!(refusal_from_json(&old).reason(), ErrorReason::CartNotActive);
        let old = json!({"code": "not_found", "detail": "cart"});
        assert!(matches!(
            refusal_from_json(&old),
            AppError::NotFound {
                resource: Resource::Cart,
                ..
            }
        ));
    }
}
