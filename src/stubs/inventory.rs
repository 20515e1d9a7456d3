//! `inventory.v1.InventoryService` stub: stock levels with reservations that
//! move quantity from on-hand into reserved and back, so stock is conserved
//! (on_hand + reserved only changes through SetStock).
//!
//! A product never seen starts with STUB_DEFAULT_STOCK on hand; SetStock seeds
//! it. Products whose id starts with `oos-` are always out of stock.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{faults::Faults, ledger::Replays};
use crate::proto::inventory::v1::{
    GetStockRequest, GetStockResponse, ListReservationsRequest, ListReservationsResponse, ReleaseRequest,
    ReleaseResponse, Reservation, ReservationStatus, ReserveRequest, ReserveResponse, SetStockRequest,
    SetStockResponse, StockLevel, StockLine, inventory_service_server::InventoryService,
};

/// Product ids with this prefix are always out of stock.
pub const OUT_OF_STOCK_PREFIX: &str = "oos-";

/// Stock and reservations, behind one mutex.
#[derive(Default)]
struct StockBook {
    /// Product -> (on hand, reserved), for every product seen.
    stock: BTreeMap<String, (i64, i64)>,
    reservations: HashMap<String, Reservation>,
    created: Vec<String>,
    reserve: Replays<ReserveResponse>,
    release: Replays<ReleaseResponse>,
}

impl StockBook {
    fn level(&self, product_id: &str, default_stock: i64) -> (i64, i64) {
        level_of(&self.stock, product_id, default_stock)
    }
}

/// (on hand, reserved) of a product; an unseen one has the default stock.
fn level_of(stock: &BTreeMap<String, (i64, i64)>, product_id: &str, default_stock: i64) -> (i64, i64) {
    stock.get(product_id).copied().unwrap_or_else(|| {
        let on_hand = if product_id.starts_with(OUT_OF_STOCK_PREFIX) {
            0
        } else {
            default_stock
        };
        (on_hand, 0)
    })
}

/// The inventory service's stand-in; clones share one stock book.
#[derive(Clone)]
pub struct InventoryStub {
    state: Arc<Mutex<StockBook>>,
    faults: Arc<Faults>,
    default_stock: i64,
}

impl InventoryStub {
    /// A stub where unseen products have `default_stock` on hand.
    pub fn new(faults: Arc<Faults>, default_stock: i64) -> Self {
        Self {
            state: Arc::default(),
            faults,
            default_stock,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, StockBook> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The request's lines merged per product, validated.
fn merged_lines(r: &ReserveRequest) -> Result<BTreeMap<String, i64>, Status> {
    if r.order_id.is_empty() {
        return Err(Status::invalid_argument("order_id is required"));
    }
    if r.lines.is_empty() {
        return Err(Status::invalid_argument("lines: at least one line is required"));
    }
    let mut merged = BTreeMap::new();
    for line in &r.lines {
        if line.product_id.is_empty() || line.quantity <= 0 {
            return Err(Status::invalid_argument(
                "lines: each needs a product_id and a positive quantity",
            ));
        }
        *merged.entry(line.product_id.clone()).or_insert(0) += i64::from(line.quantity);
    }
    Ok(merged)
}

fn stock_level(product_id: &str, (on_hand, reserved): (i64, i64)) -> StockLevel {
    StockLevel {
        product_id: product_id.to_string(),
        on_hand,
        reserved,
    }
}

#[tonic::async_trait]
impl InventoryService for InventoryStub {
    async fn reserve(&self, request: Request<ReserveRequest>) -> Result<Response<ReserveResponse>, Status> {
        let r = request.into_inner();
        self.faults.before_call("reserve").await?;
        let default_stock = self.default_stock;
        let mut guard = self.state();
        let state = &mut *guard;
        let (stock, reservations, created) = (&mut state.stock, &mut state.reservations, &mut state.created);
        state
            .reserve
            .once(&r.idempotency_key, || {
                let lines = merged_lines(&r)?;
                // All or nothing: check every line before taking any stock.
                for (product, &quantity) in &lines {
                    let (on_hand, _) = level_of(stock, product, default_stock);
                    if product.starts_with(OUT_OF_STOCK_PREFIX) || on_hand < quantity {
                        return Err(Status::failed_precondition(format!(
                            "out of stock: {product} has {} available, {quantity} requested",
                            on_hand.max(0)
                        )));
                    }
                }
                for (product, &quantity) in &lines {
                    let initial = level_of(stock, product, default_stock);
                    let level = stock.entry(product.clone()).or_insert(initial);
                    level.0 -= quantity;
                    level.1 += quantity;
                }
                let id = format!("res_{}", Uuid::new_v4().simple());
                let reservation = Reservation {
                    reservation_id: id.clone(),
                    order_id: r.order_id.clone(),
                    lines: lines
                        .iter()
                        .map(|(product_id, &quantity)| StockLine {
                            product_id: product_id.clone(),
                            quantity: i32::try_from(quantity).unwrap_or(i32::MAX),
                        })
                        .collect(),
                    status: ReservationStatus::Reserved.into(),
                };
                reservations.insert(id.clone(), reservation);
                created.push(id.clone());
                Ok(ReserveResponse { reservation_id: id })
            })
            .map(Response::new)
    }

    async fn release(&self, request: Request<ReleaseRequest>) -> Result<Response<ReleaseResponse>, Status> {
        let r = request.into_inner();
        self.faults.before_call("release").await?;
        let mut guard = self.state();
        let state = &mut *guard;
        let (stock, reservations) = (&mut state.stock, &mut state.reservations);
        state
            .release
            .once(&r.idempotency_key, || {
                let reservation = reservations
                    .get_mut(&r.reservation_id)
                    .ok_or_else(|| Status::not_found("reservation not found"))?;
                // Releasing twice returns the stock once.
                if reservation.status() == ReservationStatus::Reserved {
                    for line in &reservation.lines {
                        if let Some(level) = stock.get_mut(&line.product_id) {
                            level.0 += i64::from(line.quantity);
                            level.1 -= i64::from(line.quantity);
                        }
                    }
                    reservation.set_status(ReservationStatus::Released);
                }
                Ok(ReleaseResponse {})
            })
            .map(Response::new)
    }

    async fn list_reservations(
        &self,
        request: Request<ListReservationsRequest>,
    ) -> Result<Response<ListReservationsResponse>, Status> {
        let filter = request.into_inner().order_id;
        let state = self.state();
        let reservations = state
            .created
            .iter()
            .filter_map(|id| state.reservations.get(id))
            .filter(|r| filter.is_empty() || r.order_id == filter)
            .cloned()
            .collect();
        Ok(Response::new(ListReservationsResponse { reservations }))
    }

    async fn get_stock(
        &self,
        request: Request<GetStockRequest>,
    ) -> Result<Response<GetStockResponse>, Status> {
        let products = request.into_inner().product_ids;
        let state = self.state();
        let levels = if products.is_empty() {
            state
                .stock
                .iter()
                .map(|(product, &level)| stock_level(product, level))
                .collect()
        } else {
            products
                .iter()
                .map(|product| stock_level(product, state.level(product, self.default_stock)))
                .collect()
        };
        Ok(Response::new(GetStockResponse { levels }))
    }

    async fn set_stock(
        &self,
        request: Request<SetStockRequest>,
    ) -> Result<Response<SetStockResponse>, Status> {
        let r = request.into_inner();
        if r.product_id.is_empty() || r.on_hand < 0 {
            return Err(Status::invalid_argument(
                "product_id is required and on_hand must not be negative",
            ));
        }
        let mut state = self.state();
        let reserved = state.level(&r.product_id, self.default_stock).1;
        state.stock.insert(r.product_id.clone(), (r.on_hand, reserved));
        Ok(Response::new(SetStockResponse {
            level: Some(stock_level(&r.product_id, (r.on_hand, reserved))),
        }))
    }
}
