//! The invariants read off the sibling stubs' ledgers, shared by the saga
//! simulation (stubs in process) and the crash test (stubs in a child
//! process): each effect happened at most once, a confirmed order holds
//! exactly one capture, one live reservation and one live shipment, a
//! cancelled one holds none of them, and stock is conserved.

use std::collections::HashMap;

use commerce::proto::{
    inventory::v1::{Reservation, ReservationStatus, StockLevel},
    payment::v1::{Authorization, AuthorizationStatus},
    shipping::v1::{Shipment, ShipmentStatus},
};

/// How an order ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// CONFIRMED: the saga COMPLETED.
    Confirmed,
    /// CANCELLED: the saga COMPENSATED.
    Cancelled,
}

/// What the three stubs hold about one order.
#[derive(Debug, Clone, Default)]
pub struct OrderLedgers {
    /// Payment authorizations of the order.
    pub authorizations: Vec<Authorization>,
    /// Stock reservations of the order.
    pub reservations: Vec<Reservation>,
    /// Shipments of the order.
    pub shipments: Vec<Shipment>,
}

/// Violations of the ledger invariants for an order that ended as `end`.
pub fn check_order(order: &str, end: End, l: &OrderLedgers) -> Vec<String> {
    let mut violations = Vec::new();
    let mut fail = |what: String| violations.push(format!("order {order}: {what}"));
    // Each step has one idempotency key per order: at most one entry each.
    if l.authorizations.len() > 1 {
        fail(format!("{} authorizations", l.authorizations.len()));
    }
    if l.reservations.len() > 1 {
        fail(format!("{} reservations", l.reservations.len()));
    }
    if l.shipments.len() > 1 {
        fail(format!("{} shipments", l.shipments.len()));
    }
    for auth in &l.authorizations {
        if auth.capture_count > 1 {
            fail(format!("captured {} times (double capture)", auth.capture_count));
        }
        if auth.void_count > 1 {
            fail(format!("voided {} times", auth.void_count));
        }
    }
    let captured = l.authorizations.iter().filter(|a| a.capture_count > 0).count();
    let live_reservations = l
        .reservations
        .iter()
        .filter(|r| r.status() == ReservationStatus::Reserved)
        .count();
    let live_shipments = l
        .shipments
        .iter()
        .filter(|s| s.status() == ShipmentStatus::Created)
        .count();
    match end {
        End::Confirmed => {
            let ok = l.authorizations.len() == 1
                && l.authorizations[0].status() == AuthorizationStatus::Captured
                && l.authorizations[0].capture_count == 1;
            if !ok {
                fail(format!(
                    "confirmed without exactly one capture: {:?}",
                    l.authorizations
                ));
            }
            if live_reservations != 1 {
                fail(format!("confirmed with {live_reservations} live reservations"));
            }
            if live_shipments != 1 {
                fail(format!("confirmed with {live_shipments} live shipments"));
            }
        }
        End::Cancelled => {
            if captured > 0 {
                fail("cancelled but the payment was captured".into());
            }
            if l.authorizations
                .iter()
                .any(|a| a.status() != AuthorizationStatus::Voided)
            {
                fail(format!(
                    "cancelled with an authorization not voided: {:?}",
                    l.authorizations
                ));
            }
            if live_reservations > 0 {
                fail("cancelled but stock is still reserved".into());
            }
            if live_shipments > 0 {
                fail("cancelled but a shipment is still live".into());
            }
        }
    }
    violations
}

/// Violations of stock conservation: for every product, on hand + reserved
/// equals the initial stock, and reserved equals what the live reservations hold.
pub fn check_stock(
    initial: &HashMap<String, i64>,
    levels: &[StockLevel],
    reservations: &[Reservation],
) -> Vec<String> {
    let mut held: HashMap<&str, i64> = HashMap::new();
    for r in reservations
        .iter()
        .filter(|r| r.status() == ReservationStatus::Reserved)
    {
        for line in &r.lines {
            *held.entry(line.product_id.as_str()).or_default() += i64::from(line.quantity);
        }
    }
    let mut violations = Vec::new();
    for (product, &start) in initial {
        let Some(level) = levels.iter().find(|l| &l.product_id == product) else {
            // Never reserved: untouched.
            continue;
        };
        if level.on_hand + level.reserved != start {
            violations.push(format!(
                "{product}: on hand {} + reserved {} != initial {start}",
                level.on_hand, level.reserved
            ));
        }
        let live = held.get(product.as_str()).copied().unwrap_or(0);
        if level.reserved != live {
            violations.push(format!(
                "{product}: reserved {} but live reservations hold {live}",
                level.reserved
            ));
        }
        if level.on_hand < 0 {
            violations.push(format!("{product}: negative stock {}", level.on_hand));
        }
    }
    violations
}
