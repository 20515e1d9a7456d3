//! Event gaps: 32 writers commit order events after random delays while one
//! transaction holds an event open for seconds. On PostgreSQL a later
//! transaction can commit a larger position before that event exists for
//! readers; a projection checkpoint that moved past it would skip it forever.
//! While it is open, no checkpoint may pass it (on PostgreSQL: every
//! checkpoint names an event of an older transaction; on SQLite, whose one
//! writer commits in position order: a smaller position); at the end every
//! event is projected, every checkpoint is at the head, and so is the relay's
//! cursor (which obeys the same rule while the transaction is open).

use commerce::store::read_models::ReadModels as _;
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use commerce::{
    db::Db,
    domain::{
        money::{Currency, Money},
        order::{OrderCreated, OrderEvent, OrderLine, PersonalData, ShippingAddress},
    },
    store::event_store::{EventMetadata, OrderCodec},
};
use futures::future::join_all;
use rand::{Rng, SeedableRng, rngs::StdRng};
use uuid::Uuid;

use crate::support::{
    self,
    app::{Backend, TestApp, spawn_app_with},
    store::count,
    wait_for_within,
};

/// An `OrderCreated` as the codec stores it.
fn created(order_id: Uuid) -> (String, i32, serde_json::Value) {
    let price = Money::from_minor_units(1250, Currency::Usd);
    let event = OrderEvent::Created(Box::new(OrderCreated {
        order_id,
        customer_id: "gap-customer".into(),
        cart_id: Uuid::now_v7(),
        items: vec![OrderLine {
            product_id: "gap".into(),
            product_name: "Gap".into(),
            quantity: 1,
            unit_price: price,
            line_total: price,
        }],
        currency: Currency::Usd,
        total: price,
        personal: PersonalData {
            shipping_address: ShippingAddress {
                recipient_name: "G".into(),
                line1: "1 Gap Row".into(),
                line2: String::new(),
                city: "C".into(),
                region: String::new(),
                postal_code: "1".into(),
                country: "US".into(),
            },
            payment_method: "pm_card_visa".into(),
        },
        saga_id: None,
    }));
    let new = OrderCodec
        .encode(&event, &EventMetadata::default())
        .expect("encodes");
    (new.event_type, new.schema_version, new.payload)
}

/// A raw writer's database: its own pool, so that its open transactions do
/// not starve the service's.
#[derive(Clone)]
enum Raw {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

const PG_INSERT: &str = "
WITH inserted AS (
    INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, payload)
    VALUES ($1, $1, 'order', 1, $2, $3, $4)
    RETURNING global_position, transaction_id
)
SELECT global_position, transaction_id::text FROM inserted";

impl Raw {
    async fn open(app: &TestApp) -> Self {
        match &app.app.backends.db {
            Db::Postgres(_) => {
                let url = &app.isolation.vars["DATABASE_URL"];
                Self::Postgres(
                    sqlx::postgres::PgPoolOptions::new()
                        .max_connections(40)
                        .connect(url)
                        .await
                        .expect("connect"),
                )
            }
            Db::Sqlite(_) => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&app.isolation.vars["SQLITE_PATH"])
                    .busy_timeout(Duration::from_secs(20));
                Self::Sqlite(
                    sqlx::sqlite::SqlitePoolOptions::new()
                        .max_connections(40)
                        .connect_with(options)
                        .await
                        .expect("open"),
                )
            }
        }
    }

    /// Inserts one OrderCreated, waits `delay`, commits.
    /// `on_insert` sees (position, transaction id) before the wait,
    /// `before_commit` runs right before the commit.
    async fn write(
        &self,
        delay: Duration,
        on_insert: impl FnOnce(i64, String),
        before_commit: impl FnOnce(),
    ) {
        let id = Uuid::now_v7();
        let (event_type, version, payload) = created(id);
        match self {
            Self::Postgres(pool) => {
                let mut tx = pool.begin().await.expect("begin");
                let (position, xid): (i64, String) = sqlx::query_as(PG_INSERT)
                    .bind(id)
                    .bind(&event_type)
                    .bind(version)
                    .bind(&payload)
                    .fetch_one(&mut *tx)
                    .await
                    .expect("insert");
                on_insert(position, xid);
                tokio::time::sleep(delay).await;
                before_commit();
                tx.commit().await.expect("commit");
            }
            Self::Sqlite(pool) => {
                let mut tx = pool.begin().await.expect("begin");
                let text = payload.to_string();
                let position: i64 = sqlx::query_scalar(
                    "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, \
                     payload) VALUES (?1, ?1, 'order', 1, ?2, ?3, ?4) RETURNING global_position",
                )
                .bind(id.to_string())
                .bind(&event_type)
                .bind(version)
                .bind(&text)
                .fetch_one(&mut *tx)
                .await
                .expect("insert");
                on_insert(position, String::new());
                tokio::time::sleep(delay).await;
                before_commit();
                tx.commit().await.expect("commit");
            }
        }
    }

    /// The relay's cursor.
    async fn relay_cursor(&self) -> i64 {
        const SQL: &str = "SELECT position FROM relay_cursor";
        match self {
            Self::Postgres(pool) => sqlx::query_scalar(SQL).fetch_one(pool).await,
            Self::Sqlite(pool) => sqlx::query_scalar(SQL).fetch_one(pool).await,
        }
        .expect("the relay cursor")
    }

    /// True if the checkpoint at `position` lies before the held event.
    async fn before_held(&self, position: i64, held_position: i64, held_xid: &str) -> bool {
        match self {
            Self::Postgres(pool) => sqlx::query_scalar(
                "SELECT transaction_id < $2::text::xid8 FROM events WHERE global_position = $1",
            )
            .bind(position)
            .bind(held_xid)
            .fetch_one(pool)
            .await
            .expect("the checkpoint names an event"),
            Self::Sqlite(_) => position < held_position,
        }
    }
}

#[tokio::test]
async fn no_checkpoint_passes_a_transaction_held_open_and_every_event_is_projected() {
    let seed = support::seed("event gaps");
    let app = spawn_app_with(Backend::from_env(), &[]).await;
    let raw = Raw::open(&app).await;
    let per_writer = support::scale(8, 100);
    let hold = match raw {
        Raw::Postgres(_) => Duration::from_secs(support::scale(3, 15) as u64),
        // SQLite's one writer waits for the held transaction: stay under the busy timeout.
        Raw::Sqlite(_) => Duration::from_millis(1500),
    };
    // Before: events committed and projected, so checkpoints stand past 0.
    for _ in 0..32 {
        raw.write(Duration::ZERO, |_, _| {}, || {}).await;
    }
    let store = app.app.queries.store().clone();
    wait_for_within("the first events projected", Duration::from_secs(30), || async {
        let head = app.app.events.head_position().await.unwrap_or(0);
        store
            .checkpoints()
            .await
            .is_ok_and(|all| !all.is_empty() && all.iter().all(|c| c.checkpoint.position == head))
    })
    .await;
    // Older transactions that commit while the held one is open: their events
    // may (and should) be swept during the hold.
    let (inserted_tx, mut inserted_rx) = tokio::sync::mpsc::unbounded_channel();
    let early: Vec<_> = (0..8u64)
        .map(|i| {
            let (raw, inserted) = (raw.clone(), inserted_tx.clone());
            tokio::spawn(async move {
                let delay = Duration::from_millis(300 + 150 * i);
                raw.write(
                    delay,
                    |_, _| {
                        let _ = inserted.send(());
                    },
                    || {},
                )
                .await
            })
        })
        .collect();
    for _ in 0..8 {
        inserted_rx.recv().await.expect("an early insert");
    }
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    let open = Arc::new(AtomicBool::new(true));
    let held = tokio::spawn({
        let (raw, open) = (raw.clone(), open.clone());
        async move {
            raw.write(
                hold,
                |position, xid| {
                    let _ = held_tx.send((position, xid));
                },
                || open.store(false, Ordering::SeqCst),
            )
            .await
        }
    });
    let (held_position, held_xid) = held_rx.await.expect("the held insert");
    // Watches the checkpoints while the transaction is open. A reading counts
    // only if the transaction was still open after it was taken.
    let monitor = tokio::spawn({
        let (raw, store, open) = (raw.clone(), app.app.queries.store().clone(), open.clone());
        let held_xid = held_xid.clone();
        async move {
            let (mut checks, mut past_zero) = (0u64, 0u64);
            loop {
                let statuses = store.checkpoints().await.unwrap_or_default();
                let relay = raw.relay_cursor().await;
                if !open.load(Ordering::SeqCst) {
                    return (checks, past_zero);
                }
                let positions = statuses
                    .iter()
                    .map(|s| (s.name.to_string(), s.checkpoint.position))
                    .chain([("relay".to_string(), relay)]);
                for (name, p) in positions {
                    if p > 0 {
                        assert!(
                            raw.before_held(p, held_position, &held_xid).await,
                            "{name} checkpoint {p} passed the open transaction at {held_position}"
                        );
                        past_zero += 1;
                    }
                    checks += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let mut rng = StdRng::seed_from_u64(seed);
    let writers = (0..32).map(|_| {
        let delays: Vec<u64> = (0..per_writer).map(|_| rng.random_range(0..40)).collect();
        let raw = raw.clone();
        async move {
            for delay in delays {
                raw.write(Duration::from_millis(delay), |_, _| {}, || {}).await;
            }
        }
    });
    join_all(writers).await;
    for writer in early {
        writer.await.expect("an early writer");
    }
    held.await.expect("the held transaction commits");
    let (checks, past_zero) = monitor.await.expect("no checkpoint passed the open transaction");
    assert!(
        past_zero > 0,
        "the checkpoints were watched while they stood past 0 ({checks} checks)"
    );

    let db = &app.app.backends.db;
    let events = count(db, "SELECT COUNT(*) FROM events").await;
    assert_eq!(events, 32 * per_writer as i64 + 32 + 8 + 1);
    let head = app.app.events.head_position().await.unwrap();
    wait_for_within("every event projected", Duration::from_secs(60), || async {
        let projected = count(db, "SELECT COUNT(*) FROM order_details").await;
        let listed = count(db, "SELECT COUNT(*) FROM customer_orders").await;
        let relayed = count(db, "SELECT position FROM relay_cursor").await;
        let at_head = store
            .checkpoints()
            .await
            .map(|all| !all.is_empty() && all.iter().all(|c| c.checkpoint.position == head))
            .unwrap_or(false);
        projected == events && listed == events && relayed == head && at_head
    })
    .await;
    println!(
        "event gaps: seed {seed}, {events} events from 41 writers, one held {hold:?}; {checks} checkpoint \
         checks during the hold ({past_zero} past 0), none passed it; all projected"
    );
}
