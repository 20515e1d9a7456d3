//! `payment.v1.PaymentService` stub: authorizations held in memory, each
//! captured at most once, with a ledger tests read through ListAuthorizations.
//!
//! Magic payment methods: `pm_card_declined` is declined; `pm_transient_<n>`
//! fails the first n Authorize attempts of a key with UNAVAILABLE;
//! `pm_capture_transient_<n>` / `pm_void_transient_<n>` do the same for the
//! Capture / Void of its authorization; `pm_capture_declined` authorizes but
//! its capture is refused (the authorization expired).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::Utc;
use rust_decimal::Decimal;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{
    faults::{Faults, magic_count},
    ledger::Replays,
};
use crate::proto::payment::v1::{
    Authorization, AuthorizationStatus, AuthorizeRequest, AuthorizeResponse, CaptureRequest, CaptureResponse,
    ListAuthorizationsRequest, ListAuthorizationsResponse, VoidRequest, VoidResponse,
    payment_service_server::PaymentService,
};

/// Declined at Authorize.
pub const DECLINED: &str = "pm_card_declined";
/// Authorized, but Capture is refused.
pub const CAPTURE_DECLINED: &str = "pm_capture_declined";

/// Everything the payment stub remembers, behind one mutex.
#[derive(Default)]
struct PaymentBook {
    /// Authorization id -> (ledger entry, payment method).
    authorizations: HashMap<String, (Authorization, String)>,
    /// Authorization ids in creation order, for a stable ledger.
    created: Vec<String>,
    authorize: Replays<AuthorizeResponse>,
    capture: Replays<CaptureResponse>,
    void: Replays<VoidResponse>,
}

/// The payment service's stand-in; clones share one ledger of authorizations.
#[derive(Clone)]
pub struct PaymentStub {
    state: Arc<Mutex<PaymentBook>>,
    faults: Arc<Faults>,
}

impl PaymentStub {
    /// A stub with an empty ledger.
    pub fn new(faults: Arc<Faults>) -> Self {
        Self {
            state: Arc::default(),
            faults,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PaymentBook> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The payment method of an authorization, to pick its magic behaviour.
    fn method_of(&self, authorization_id: &str) -> Option<String> {
        self.state()
            .authorizations
            .get(authorization_id)
            .map(|(_, method)| method.clone())
    }
}

fn validate_authorize(r: &AuthorizeRequest) -> Result<(), Status> {
    let amount: Decimal = r
        .amount
        .parse()
        .map_err(|_| Status::invalid_argument("amount: expected a decimal string"))?;
    if amount <= Decimal::ZERO {
        return Err(Status::invalid_argument("amount: must be positive"));
    }
    if r.currency.len() != 3 || !r.currency.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(Status::invalid_argument("currency: expected ISO 4217, e.g. USD"));
    }
    if r.order_id.is_empty() || r.payment_method.is_empty() {
        return Err(Status::invalid_argument(
            "order_id and payment_method are required",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl PaymentService for PaymentStub {
    async fn authorize(
        &self,
        request: Request<AuthorizeRequest>,
    ) -> Result<Response<AuthorizeResponse>, Status> {
        let r = request.into_inner();
        self.faults.before_call("authorize").await?;
        if let Some(n) = magic_count(&r.payment_method, "pm_transient_") {
            self.faults.fail_first("authorize", &r.idempotency_key, n)?;
        }
        let mut guard = self.state();
        let state = &mut *guard;
        let (authorizations, created) = (&mut state.authorizations, &mut state.created);
        state
            .authorize
            .once(&r.idempotency_key, || {
                validate_authorize(&r)?;
                if r.payment_method == DECLINED {
                    return Err(Status::failed_precondition("payment declined: card declined"));
                }
                let id = format!("auth_{}", Uuid::new_v4().simple());
                let entry = Authorization {
                    authorization_id: id.clone(),
                    order_id: r.order_id.clone(),
                    amount: r.amount.clone(),
                    currency: r.currency.clone(),
                    status: AuthorizationStatus::Authorized.into(),
                    capture_count: 0,
                    void_count: 0,
                    created_at: Some(crate::proto::timestamp(Utc::now())),
                };
                authorizations.insert(id.clone(), (entry, r.payment_method.clone()));
                created.push(id.clone());
                Ok(AuthorizeResponse { authorization_id: id })
            })
            .map(Response::new)
    }

    async fn capture(&self, request: Request<CaptureRequest>) -> Result<Response<CaptureResponse>, Status> {
        let r = request.into_inner();
        self.faults.before_call("capture").await?;
        let method = self.method_of(&r.authorization_id).unwrap_or_default();
        if let Some(n) = magic_count(&method, "pm_capture_transient_") {
            self.faults.fail_first("capture", &r.idempotency_key, n)?;
        }
        let mut guard = self.state();
        let state = &mut *guard;
        let authorizations = &mut state.authorizations;
        state
            .capture
            .once(&r.idempotency_key, || {
                let (entry, method) = authorizations
                    .get_mut(&r.authorization_id)
                    .ok_or_else(|| Status::not_found("authorization not found"))?;
                if method == CAPTURE_DECLINED {
                    return Err(Status::failed_precondition(
                        "capture refused: authorization expired",
                    ));
                }
                match entry.status() {
                    AuthorizationStatus::Captured => {
                        // A new key for a captured authorization: money moves once only.
                        return Err(Status::failed_precondition("authorization already captured"));
                    }
                    AuthorizationStatus::Voided => {
                        return Err(Status::failed_precondition("authorization was voided"));
                    }
                    _ => {}
                }
                entry.set_status(AuthorizationStatus::Captured);
                entry.capture_count += 1;
                Ok(CaptureResponse {
                    capture_id: format!("cap_{}", Uuid::new_v4().simple()),
                })
            })
            .map(Response::new)
    }

    async fn void(&self, request: Request<VoidRequest>) -> Result<Response<VoidResponse>, Status> {
        let r = request.into_inner();
        self.faults.before_call("void").await?;
        let method = self.method_of(&r.authorization_id).unwrap_or_default();
        if let Some(n) = magic_count(&method, "pm_void_transient_") {
            self.faults.fail_first("void", &r.idempotency_key, n)?;
        }
        let mut guard = self.state();
        let state = &mut *guard;
        let authorizations = &mut state.authorizations;
        state
            .void
            .once(&r.idempotency_key, || {
                let (entry, _) = authorizations
                    .get_mut(&r.authorization_id)
                    .ok_or_else(|| Status::not_found("authorization not found"))?;
                if entry.status() == AuthorizationStatus::Captured {
                    return Err(Status::failed_precondition(
                        "authorization already captured: refund it",
                    ));
                }
                // Voiding a voided authorization changes nothing, but is counted:
                // a void_count above 1 shows a caller that voided with two keys.
                entry.set_status(AuthorizationStatus::Voided);
                entry.void_count += 1;
                Ok(VoidResponse {})
            })
            .map(Response::new)
    }

    async fn list_authorizations(
        &self,
        request: Request<ListAuthorizationsRequest>,
    ) -> Result<Response<ListAuthorizationsResponse>, Status> {
        let filter = request.into_inner().order_id;
        let state = self.state();
        let authorizations = state
            .created
            .iter()
            .filter_map(|id| state.authorizations.get(id))
            .filter(|(entry, _)| filter.is_empty() || entry.order_id == filter)
            .map(|(entry, _)| entry.clone())
            .collect();
        Ok(Response::new(ListAuthorizationsResponse { authorizations }))
    }
}
