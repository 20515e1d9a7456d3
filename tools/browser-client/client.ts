// The grpc-web client the browser test runs (tests/api/grpc_web.rs): Connect's grpc-web
// transport and the code protoc-gen-es generated from proto/, calling the service as a web
// app would: CreateCart, AddItem, CreateOrder, GetOrder, the WatchOrder server stream, and a
// refusal read from the grpc-status trailer, and one from the auth layer in front. It reports what it saw as JSON.
// `refusals` is the second page: answers made outside the services (deadline, unknown service,
// oversized message, rate limit), each of which the client must read as a code.
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { CartService } from "./gen/commerce/v1/cart_pb";
import { OrderService, OrderStatus } from "./gen/commerce/v1/order_pb";
import { PaymentService } from "./gen/payment/v1/payment_pb";

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

/// What the refusals page passes in.
export interface RefusalConfig {
  baseUrl: string;
  /// A customer with an order (orderId), well within the rate limit.
  token: string;
  orderId: string;
  /// A customer who calls until the rate limit refuses.
  floodToken: string;
  floodCalls: number;
}

/// The code (and message) a call ended with, as the client read it.
async function outcome(call: () => Promise<unknown>): Promise<{ code: string; message?: string }> {
  try {
    await call();
    return { code: "OK" };
  } catch (error) {
    const e = ConnectError.from(error);
    return { code: Code[e.code], message: e.rawMessage };
  }
}

export async function refusals(config: RefusalConfig): Promise<Record<string, unknown>> {
  const header =
    (name: string, value: string): Interceptor =>
    (next) =>
    async (request) => {
      request.header.set(name, value);
      return next(request);
    };
  const bearer = (token: string) => header("authorization", `Bearer ${token}`);
  const transport = (...interceptors: Interceptor[]) =>
    createGrpcWebTransport({ baseUrl: config.baseUrl, interceptors });
  const customer = transport(bearer(config.token));

  // The server's deadline: grpc-timeout set by hand (no timeoutMs), so the browser has no
  // timer of its own and the code can only come from the server. GetOrder waits (2 s) for a
  // version the order never reaches; the deadline (300 ms) ends it first.
  const deadline = await outcome(() =>
    createClient(OrderService, transport(bearer(config.token), header("grpc-timeout", "300m"))).getOrder({
      orderId: config.orderId,
      minVersion: 1000000n,
    }),
  );
  // A service this port does not serve (the stubs port does).
  const unknownService = await outcome(() =>
    createClient(PaymentService, customer).authorize({ orderId: config.orderId }),
  );
  // A message above MAX_MESSAGE_BYTES, refused before the service decodes it.
  const oversize = await outcome(() =>
    createClient(CartService, customer).addItem({
      cartId: config.orderId,
      productId: "big",
      productName: "x".repeat(4096),
      quantity: 1,
      unitPrice: "1.00",
    }),
  );
  // The auth layer's rate limit: the same cheap call until it refuses.
  const flood = createClient(CartService, transport(bearer(config.floodToken)));
  const flooded: string[] = [];
  let rateLimited: { code: string; message?: string } = { code: "none" };
  for (let i = 0; i < config.floodCalls; i++) {
    const seen = await outcome(() => flood.getActiveCart({}));
    flooded.push(seen.code);
    if (seen.code === "ResourceExhausted") {
      rateLimited = seen;
      break;
    }
  }
  return { deadline, unknownService, oversize, flooded, rateLimited };
}
