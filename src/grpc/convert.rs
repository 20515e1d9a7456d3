//! Conversions between proto messages and application types shared by the
//! gRPC services (and the REST shim, which speaks the same messages).

use crate::{
    app::orders::{AddressInput, CreateOrderInput, OrderView},
    domain::order::{OrderLine, OrderStatus, ShippingAddress},
    proto::commerce::v1 as pb,
};

/// A protobuf timestamp (one implementation, in [`crate::proto`]).
pub use crate::proto::timestamp;

/// The proto enum of a domain status.
pub fn order_status(status: OrderStatus) -> pb::OrderStatus {
    match status {
        OrderStatus::Pending => pb::OrderStatus::Pending,
        OrderStatus::PaymentAuthorized => pb::OrderStatus::PaymentAuthorized,
        OrderStatus::InventoryReserved => pb::OrderStatus::InventoryReserved,
        OrderStatus::ShippingArranged => pb::OrderStatus::ShippingArranged,
        OrderStatus::Confirmed => pb::OrderStatus::Confirmed,
        OrderStatus::Cancelled => pb::OrderStatus::Cancelled,
    }
}

/// The domain status of a proto status; None for UNSPECIFIED.
pub fn domain_status(status: pb::OrderStatus) -> Option<OrderStatus> {
    match status {
        pb::OrderStatus::Unspecified => None,
        pb::OrderStatus::Pending => Some(OrderStatus::Pending),
        pb::OrderStatus::PaymentAuthorized => Some(OrderStatus::PaymentAuthorized),
        pb::OrderStatus::InventoryReserved => Some(OrderStatus::InventoryReserved),
        pb::OrderStatus::ShippingArranged => Some(OrderStatus::ShippingArranged),
        pb::OrderStatus::Confirmed => Some(OrderStatus::Confirmed),
        pb::OrderStatus::Cancelled => Some(OrderStatus::Cancelled),
    }
}

/// A domain order line as the proto's `OrderItem` (money as decimal text).
pub fn order_item(line: &OrderLine) -> pb::OrderItem {
    pb::OrderItem {
        product_id: line.product_id.clone(),
        product_name: line.product_name.clone(),
        quantity: i32::try_from(line.quantity).unwrap_or(i32::MAX),
        unit_price: line.unit_price.to_string(),
        line_total: line.line_total.to_string(),
    }
}

/// A domain address as the proto's `Address`.
pub fn address(address: &ShippingAddress) -> pb::Address {
    pb::Address {
        recipient_name: address.recipient_name.clone(),
        line1: address.line1.clone(),
        line2: address.line2.clone(),
        city: address.city.clone(),
        region: address.region.clone(),
        postal_code: address.postal_code.clone(),
        country: address.country.clone(),
    }
}

/// The proto `Order` of a view (write side or read model alike).
pub fn order(view: &OrderView) -> pb::Order {
    pb::Order {
        order_id: view.order_id.to_string(),
        customer_id: view.customer_id.clone(),
        cart_id: view.cart_id.to_string(),
        status: order_status(view.status) as i32,
        items: view.items.iter().map(order_item).collect(),
        currency: view.currency.code().to_string(),
        total: view.total.to_string(),
        payment_method: view.payment_method.clone(),
        shipping_address: Some(address(&view.shipping_address)),
        cancellation_reason: view.cancellation_reason.clone().unwrap_or_default(),
        cancellation_reason_code: view
            .cancellation_reason_code
            .and_then(|code| pb::ErrorReason::from_str_name(code.as_str()))
            .unwrap_or(pb::ErrorReason::Unspecified) as i32,
        version: i64::try_from(view.version).unwrap_or(i64::MAX),
        created_at: Some(timestamp(view.created_at)),
        updated_at: Some(timestamp(view.updated_at)),
        saga_id: view.saga_id.map(|id| id.to_string()).unwrap_or_default(),
        item_count: i32::try_from(view.item_count).unwrap_or(i32::MAX),
        cancellation_requested: view.cancellation_requested.is_some(),
        cancellation_request_reason: view.cancellation_requested.clone().unwrap_or_default(),
    }
}

impl From<pb::CreateOrderRequest> for CreateOrderInput {
    fn from(request: pb::CreateOrderRequest) -> Self {
        Self {
            cart_id: request.cart_id,
            payment_method: request.payment_method,
            shipping_address: request.shipping_address.map(|a| AddressInput {
                recipient_name: a.recipient_name,
                line1: a.line1,
                line2: a.line2,
                city: a.city,
                region: a.region,
                postal_code: a.postal_code,
                country: a.country,
            }),
            idempotency_key: request.idempotency_key,
        }
    }
}
