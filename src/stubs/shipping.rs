//! `shipping.v1.ShippingService` stub: shipments with tracking numbers, and a
//! ledger read through ListShipments. Country `ZZ` or postal code `00000` is
//! an address that cannot be served (FAILED_PRECONDITION).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{faults::Faults, ledger::Replays};
use crate::proto::shipping::v1::{
    CancelShipmentRequest, CancelShipmentResponse, CreateShipmentRequest, CreateShipmentResponse,
    ListShipmentsRequest, ListShipmentsResponse, Shipment, ShipmentStatus,
    shipping_service_server::ShippingService,
};

/// A country no carrier serves.
pub const UNSHIPPABLE_COUNTRY: &str = "ZZ";
/// A postal code no carrier serves.
pub const UNSHIPPABLE_POSTAL_CODE: &str = "00000";

/// Everything the shipping stub remembers, behind one mutex.
#[derive(Default)]
struct ShipmentBook {
    shipments: HashMap<String, Shipment>,
    created: Vec<String>,
    create: Replays<CreateShipmentResponse>,
    cancel: Replays<CancelShipmentResponse>,
}

/// The shipping service's stand-in; clones share one ledger of shipments.
#[derive(Clone)]
pub struct ShippingStub {
    state: Arc<Mutex<ShipmentBook>>,
    faults: Arc<Faults>,
}

impl ShippingStub {
    /// A stub with no shipments.
    pub fn new(faults: Arc<Faults>) -> Self {
        Self {
            state: Arc::default(),
            faults,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ShipmentBook> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn check_destination(r: &CreateShipmentRequest) -> Result<(), Status> {
    let d = r
        .destination
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("destination is required"))?;
    if r.order_id.is_empty() || r.item_count <= 0 {
        return Err(Status::invalid_argument(
            "order_id and a positive item_count are required",
        ));
    }
    if d.line1.is_empty() || d.city.is_empty() || d.country.is_empty() {
        return Err(Status::invalid_argument(
            "destination: line1, city and country are required",
        ));
    }
    if d.country.eq_ignore_ascii_case(UNSHIPPABLE_COUNTRY) || d.postal_code == UNSHIPPABLE_POSTAL_CODE {
        return Err(Status::failed_precondition("address cannot be shipped to"));
    }
    Ok(())
}

#[tonic::async_trait]
impl ShippingService for ShippingStub {
    async fn create_shipment(
        &self,
        request: Request<CreateShipmentRequest>,
    ) -> Result<Response<CreateShipmentResponse>, Status> {
        let r = request.into_inner();
        self.faults.before_call("create_shipment").await?;
        let mut guard = self.state();
        let state = &mut *guard;
        let (shipments, created) = (&mut state.shipments, &mut state.created);
        state
            .create
            .once(&r.idempotency_key, || {
                check_destination(&r)?;
                let id = format!("shp_{}", Uuid::new_v4().simple());
                let tracking = format!("TRK{}", &Uuid::new_v4().simple().to_string()[..12]).to_uppercase();
                shipments.insert(
                    id.clone(),
                    Shipment {
                        shipment_id: id.clone(),
                        order_id: r.order_id.clone(),
                        tracking_number: tracking.clone(),
                        status: ShipmentStatus::Created.into(),
                    },
                );
                created.push(id.clone());
                Ok(CreateShipmentResponse {
                    shipment_id: id,
                    tracking_number: tracking,
                })
            })
            .map(Response::new)
    }

    async fn cancel_shipment(
        &self,
        request: Request<CancelShipmentRequest>,
    ) -> Result<Response<CancelShipmentResponse>, Status> {
        let r = request.into_inner();
        self.faults.before_call("cancel_shipment").await?;
        let mut guard = self.state();
        let state = &mut *guard;
        let shipments = &mut state.shipments;
        state
            .cancel
            .once(&r.idempotency_key, || {
                let shipment = shipments
                    .get_mut(&r.shipment_id)
                    .ok_or_else(|| Status::not_found("shipment not found"))?;
                shipment.set_status(ShipmentStatus::Cancelled);
                Ok(CancelShipmentResponse {})
            })
            .map(Response::new)
    }

    async fn list_shipments(
        &self,
        request: Request<ListShipmentsRequest>,
    ) -> Result<Response<ListShipmentsResponse>, Status> {
        let filter = request.into_inner().order_id;
        let state = self.state();
        let shipments = state
            .created
            .iter()
            .filter_map(|id| state.shipments.get(id))
            .filter(|s| filter.is_empty() || s.order_id == filter)
            .cloned()
            .collect();
        Ok(Response::new(ListShipmentsResponse { shipments }))
    }
}
