//! Peer benchmark: the create-order workload (one command, two events on a new
//! aggregate) through cqrs-es + postgres-es, against the same PostgreSQL.
//!
//! Usage: peer-bench DATABASE_URL [seconds] [concurrency]
//! Prints one JSON line: {"scenario":"peer_create_order","ops_per_sec":..,"p50_ms":..,...}

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use cqrs_es::{Aggregate, DomainEvent, event_sink::EventSink};
use postgres_es::postgres_cqrs;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Order {
    created: bool,
    total_cents: i64,
    status: String,
}

#[derive(Debug, Deserialize)]
enum OrderCommand {
    PlaceOrder {
        customer_id: String,
        items: Vec<(String, u32, i64)>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum OrderEvent {
    OrderCreated {
        customer_id: String,
        items: Vec<(String, u32, i64)>,
        total_cents: i64,
    },
    SagaStarted {
        step: String,
    },
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        match self {
            Self::OrderCreated { .. } => "OrderCreated".into(),
            Self::SagaStarted { .. } => "SagaStarted".into(),
        }
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug)]
struct OrderError(String);
impl std::fmt::Display for OrderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for OrderError {}
impl From<&str> for OrderError {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = "Order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    type Services = ();

    async fn handle(&mut self, command: Self::Command, _: &(), sink: &EventSink<Self>) -> Result<(), OrderError> {
        match command {
            OrderCommand::PlaceOrder { customer_id, items } => {
                if self.created {
                    return Err("order exists".into());
                }
                let total_cents = items.iter().map(|(_, q, p)| i64::from(*q) * p).sum();
                sink.write(OrderEvent::OrderCreated { customer_id, items, total_cents }, self).await;
                sink.write(OrderEvent::SagaStarted { step: "authorize_payment".into() }, self).await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            OrderEvent::OrderCreated { total_cents, .. } => {
                self.created = true;
                self.total_cents = total_cents;
                self.status = "PENDING".into();
            }
            OrderEvent::SagaStarted { .. } => {}
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).cloned().expect("usage: peer-bench DATABASE_URL [seconds] [concurrency]");
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let concurrency: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(32);
    let pool = PgPoolOptions::new().max_connections(concurrency as u32).connect(&url).await.expect("connect");
    for sql in [
        "DROP TABLE IF EXISTS events",
        "DROP TABLE IF EXISTS snapshots",
        "CREATE TABLE events (aggregate_type text NOT NULL, aggregate_id text NOT NULL, sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL, event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL, PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
        "CREATE TABLE snapshots (aggregate_type text NOT NULL, aggregate_id text NOT NULL, last_sequence bigint NOT NULL, current_snapshot bigint NOT NULL, payload json NOT NULL, PRIMARY KEY (aggregate_type, aggregate_id, last_sequence))",
    ] {
        sqlx::query(sql).execute(&pool).await.expect("schema");
    }
    let cqrs = Arc::new(postgres_cqrs::<Order>(pool.clone(), vec![], ()));
    let run = |duration: Duration| {
        let cqrs = cqrs.clone();
        async move {
            let deadline = Instant::now() + duration;
            let tasks: Vec<_> = (0..concurrency)
                .map(|worker| {
                    let cqrs = cqrs.clone();
                    tokio::spawn(async move {
                        let mut latencies = Vec::new();
                        while Instant::now() < deadline {
                            let id = uuid::Uuid::new_v4().to_string();
                            let command = OrderCommand::PlaceOrder {
                                customer_id: format!("customer-{worker}"),
                                items: vec![("sku-1".into(), 2, 2999), ("sku-2".into(), 1, 1500)],
                            };
                            let started = Instant::now();
                            cqrs.execute(&id, command).await.expect("execute");
                            latencies.push(started.elapsed());
                        }
                        latencies
                    })
                })
                .collect();
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.expect("task"));
            }
            all
        }
    };
    run(Duration::from_secs(2)).await; // warm-up
    let started = Instant::now();
    let mut latencies = run(Duration::from_secs(seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "{{\"scenario\":\"peer_create_order\",\"ops\":{},\"seconds\":{:.2},\"ops_per_sec\":{:.1},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"concurrency\":{}}}",
        latencies.len(),
        elapsed,
        latencies.len() as f64 / elapsed,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        latencies.last().unwrap().as_secs_f64() * 1000.0,
        concurrency
    );
    for sql in ["DROP TABLE IF EXISTS events", "DROP TABLE IF EXISTS snapshots"] {
        sqlx::query(sql).execute(&pool).await.expect("cleanup");
    }
}
