//! The saga's view of an order, over [`OrderApp`]: facts folded from the
//! order's event stream, and the saga's commands run by the Order aggregate
//! (which answers a repeat of a recorded command with no new event).

use async_trait::async_trait;
use uuid::Uuid;

use crate::{
    app::orders::OrderApp,
    domain::order::{Order, OrderCommand},
    error::AppError,
    saga::ports::{CallError, OrderChange, OrderFacts, OrderPort},
};

/// [`OrderPort`] over the order command service.
#[derive(Clone)]
pub struct OrderAppPort {
    orders: OrderApp,
}

impl OrderAppPort {
    /// The port over `orders`.
    pub fn new(orders: OrderApp) -> Self {
        Self { orders }
    }
}

/// What an order error means to the saga: a domain refusal is final, the rest
/// (conflicts after retries, an unavailable database) may pass.
fn call_error(err: AppError) -> CallError {
    let code = crate::metrics::grpc_code_name(err.code());
    match err {
        AppError::NotFound { .. } | AppError::FailedPrecondition { .. } | AppError::InvalidArgument(_) => {
            CallError::refused(code, err.to_string())
        }
        other => CallError::transient(code, other.to_string()),
    }
}

#[async_trait]
impl OrderPort for OrderAppPort {
    async fn facts(&self, order_id: Uuid) -> Result<OrderFacts, CallError> {
        let loaded = self
            .orders
            .load_until(order_id, None)
            .await
            .map_err(call_error)?
            .ok_or_else(|| CallError::refused("NOT_FOUND", format!("order {order_id} not found")))?;
        OrderFacts::of_order(order_id, &loaded.order, loaded.traceparent)
            .ok_or_else(|| CallError::refused("NOT_FOUND", format!("order {order_id} not placed")))
    }

    async fn decide(
        &self,
        order_id: Uuid,
        basis: Option<Order>,
        commands: Vec<OrderCommand>,
    ) -> Result<Option<OrderChange>, CallError> {
        let decided = self
            .orders
            .decide(order_id, basis, commands.clone())
            .await
            .map_err(call_error)?;
        Ok(decided.map(|decided| OrderChange {
            commands,
            append: decided.append,
            statuses_after: decided.statuses,
            after: decided.after,
        }))
    }

    async fn traceparent(&self, order_id: Uuid) -> Option<String> {
        self.orders.traceparent(order_id).await
    }
}
