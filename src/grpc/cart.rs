//! `commerce.v1.CartService` over gRPC: converts messages and calls
//! [`crate::app::cart::CartApp`]. The domain-to-proto conversions here are
//! public so the REST shim renders carts the same way.

use crate::proto::timestamp;
use tonic::{Request, Response, Status};

use crate::{
    app::{
        App,
        cart::{AddItem, CartAnalytics, UpdateItemQuantity},
    },
    auth::{customer, principal},
    domain::{
        cart::{Cart, CartStatus},
        money::Money,
    },
    proto::commerce::v1::{
        self as pb, AddItemRequest, AddItemResponse, CreateCartRequest, CreateCartResponse,
        DeleteCartRequest, DeleteCartResponse, GetActiveCartRequest, GetActiveCartResponse,
        GetCartAnalyticsRequest, GetCartAnalyticsResponse, GetCartRequest, GetCartResponse,
        RemoveItemRequest, RemoveItemResponse, UpdateItemQuantityRequest, UpdateItemQuantityResponse,
        cart_service_server::CartService,
    },
};

/// Serves `commerce.v1.CartService`, for gRPC clients and for the REST shim
/// (which calls these same methods): converts messages, then calls [`App`].
#[derive(Clone)]
pub struct CartGrpc {
    app: App,
}

impl CartGrpc {
    /// A service over `app`.
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl CartService for CartGrpc {
    async fn create_cart(
        &self,
        request: Request<CreateCartRequest>,
    ) -> Result<Response<CreateCartResponse>, Status> {
        let caller = customer(&request)?;
        let (cart, created) = self
            .app
            .carts
            .create_cart(&caller, &request.get_ref().currency)
            .await?;
        Ok(Response::new(CreateCartResponse {
            cart: Some(cart_to_proto(&cart)),
            created,
        }))
    }

    async fn get_active_cart(
        &self,
        request: Request<GetActiveCartRequest>,
    ) -> Result<Response<GetActiveCartResponse>, Status> {
        let caller = customer(&request)?;
        let cart = self.app.carts.get_active_cart(&caller).await?;
        Ok(Response::new(GetActiveCartResponse {
            cart: Some(cart_to_proto(&cart)),
        }))
    }

    async fn get_cart(&self, request: Request<GetCartRequest>) -> Result<Response<GetCartResponse>, Status> {
        let caller = customer(&request)?;
        let cart = self
            .app
            .carts
            .get_cart(&caller, &request.get_ref().cart_id)
            .await?;
        Ok(Response::new(GetCartResponse {
            cart: Some(cart_to_proto(&cart)),
        }))
    }

    async fn add_item(&self, request: Request<AddItemRequest>) -> Result<Response<AddItemResponse>, Status> {
        let caller = customer(&request)?;
        let r = request.into_inner();
        let input = AddItem {
            cart_id: r.cart_id,
            product_id: r.product_id,
            product_name: r.product_name,
            quantity: r.quantity.into(),
            unit_price: r.unit_price,
            expected_version: r.expected_version,
        };
        let cart = self.app.carts.add_item(&caller, input).await?;
        Ok(Response::new(AddItemResponse {
            cart: Some(cart_to_proto(&cart)),
        }))
    }

    async fn update_item_quantity(
        &self,
        request: Request<UpdateItemQuantityRequest>,
    ) -> Result<Response<UpdateItemQuantityResponse>, Status> {
        let caller = customer(&request)?;
        let r = request.into_inner();
        let input = UpdateItemQuantity {
            cart_id: r.cart_id,
            product_id: r.product_id,
            quantity: r.quantity.into(),
            expected_version: r.expected_version,
        };
        let cart = self.app.carts.update_item_quantity(&caller, input).await?;
        Ok(Response::new(UpdateItemQuantityResponse {
            cart: Some(cart_to_proto(&cart)),
        }))
    }

    async fn remove_item(
        &self,
        request: Request<RemoveItemRequest>,
    ) -> Result<Response<RemoveItemResponse>, Status> {
        let caller = customer(&request)?;
        let r = request.get_ref();
        let cart = self
            .app
            .carts
            .remove_item(&caller, &r.cart_id, &r.product_id, r.expected_version)
            .await?;
        Ok(Response::new(RemoveItemResponse {
            cart: Some(cart_to_proto(&cart)),
        }))
    }

    async fn delete_cart(
        &self,
        request: Request<DeleteCartRequest>,
    ) -> Result<Response<DeleteCartResponse>, Status> {
        let caller = customer(&request)?;
        let r = request.get_ref();
        self.app
            .carts
            .delete_cart(&caller, &r.cart_id, r.expected_version)
            .await?;
        Ok(Response::new(DeleteCartResponse {}))
    }

    async fn get_cart_analytics(
        &self,
        request: Request<GetCartAnalyticsRequest>,
    ) -> Result<Response<GetCartAnalyticsResponse>, Status> {
        let caller = principal(&request)?;
        let analytics = self.app.carts.analytics(&caller).await?;
        Ok(Response::new(analytics_to_proto(&analytics)))
    }
}

/// A domain cart as the proto message (totals computed here, in one pass:
/// each line total is printed and added to the subtotal, not multiplied again
/// by [`Cart::subtotal`]).
pub fn cart_to_proto(cart: &Cart) -> pb::Cart {
    let mut subtotal = Ok(Money::zero(cart.currency));
    let items = cart
        .items
        .iter()
        .map(|item| {
            let line_total = item.line_total();
            subtotal = match (&subtotal, &line_total) {
                (Ok(sum), Ok(line)) => sum.checked_add(line),
                (Err(e), _) | (_, Err(e)) => Err(e.clone()),
            };
            pb::CartItem {
                product_id: item.product_id.clone(),
                product_name: item.product_name.clone(),
                quantity: clamp_i32(item.quantity.into()),
                unit_price: item.unit_price.text().as_str().to_owned(),
                // Within the cart limits a line total cannot overflow; show "" if it ever did.
                line_total: line_total
                    .map(|t| t.text().as_str().to_owned())
                    .unwrap_or_default(),
            }
        })
        .collect();
    pb::Cart {
        cart_id: cart.id.to_string(),
        customer_id: cart.customer_id.clone(),
        items,
        currency: cart.currency.code().to_string(),
        subtotal: subtotal.map(|s| s.text().as_str().to_owned()).unwrap_or_default(),
        item_count: clamp_i32(cart.item_count().into()),
        status: match cart.status {
            CartStatus::Active => pb::CartStatus::Active,
            CartStatus::Converted => pb::CartStatus::Converted,
        }
        .into(),
        version: i64::try_from(cart.version).unwrap_or(i64::MAX),
        created_at: Some(timestamp(cart.created_at)),
        updated_at: Some(timestamp(cart.updated_at)),
        expires_at: Some(timestamp(cart.expires_at)),
    }
}

/// The analytics as the proto message.
pub fn analytics_to_proto(a: &CartAnalytics) -> GetCartAnalyticsResponse {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    GetCartAnalyticsResponse {
        carts_created: count(a.created),
        carts_active: count(a.active),
        carts_converted: count(a.converted),
        carts_abandoned: count(a.abandoned),
        carts_deleted: count(a.deleted),
        abandonment_rate: a.abandonment_rate.to_string(),
        average_cart_value: a.average_cart_value.to_string(),
        currency: a.average_cart_value.currency().code().to_string(),
    }
}

fn clamp_i32(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
