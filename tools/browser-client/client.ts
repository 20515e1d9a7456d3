// The grpc-web client the browser test runs (tests/api/grpc_web.rs): Connect's grpc-web
// transport and the code protoc-gen-es generated from proto/, calling the service as a web
// app would: CreateCart, AddItem, CreateOrder, GetOrder, the WatchOrder server stream, and a
// refusal read from the grpc-status trailer, and one from the auth layer in front. It reports what it saw as JSON.
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { CartService } from "./gen/commerce/v1/cart_pb";
import { OrderService, OrderStatus } from "./gen/commerce/v1/order_pb";

/// What the page passes in.
export interface Config {
  baseUrl: string;
  token: string;
  idempotencyKey: string;
}

export async function run(config: Config): Promise<Record<string, unknown>> {
  const bearer: Interceptor = (next) => async (request) => {
    request.header.set("authorization", `Bearer ${config.token}`);
    return next(request);
  };
  const transport = createGrpcWebTransport({ baseUrl: config.baseUrl, interceptors: [bearer] });
  const carts = createClient(CartService, transport);
  const orders = createClient(OrderService, transport);

  const created = await carts.createCart({});
  const cartId = created.cart!.cartId;
  const added = await carts.addItem({
    cartId,
    productId: "book",
    productName: "A book",
    quantity: 2,
    unitPrice: "19.99",
  });
  const order = (
    await orders.createOrder({
      cartId,
      paymentMethod: "pm_card_visa",
      idempotencyKey: config.idempotencyKey,
      shippingAddress: {
        recipientName: "Ada Lovelace",
        line1: "1 Analytical Way",
        city: "London",
        postalCode: "N1 9GU",
        country: "GB",
      },
    })
  ).order!;
  const fetched = (await orders.getOrder({ orderId: order.orderId })).order!;

  const watched: { status: string; version: string }[] = [];
  for await (const message of orders.watchOrder({ orderId: order.orderId })) {
    watched.push({ status: OrderStatus[message.order!.status], version: String(message.order!.version) });
  }

  let refusal: Record<string, unknown> = {};
  try {
    await orders.getOrder({ orderId: "00000000-0000-4000-8000-000000000000" });
  } catch (error) {
    const e = ConnectError.from(error);
    refusal = { code: Code[e.code], message: e.rawMessage };
  }

  let anonymous: Record<string, unknown> = {};
  try {
    await createClient(CartService, createGrpcWebTransport({ baseUrl: config.baseUrl })).getActiveCart({});
  } catch (error) {
    const e = ConnectError.from(error);
    anonymous = { code: Code[e.code], message: e.rawMessage };
  }

  return {
    cartId,
    cartSubtotal: added.cart!.subtotal,
    orderId: order.orderId,
    orderTotal: order.total,
    fetchedStatus: OrderStatus[fetched.status],
    watched,
    refusal,
    anonymous,
  };
}
