//! The public order-event feed (`commerce.events.v1.OrderEventService`):
//! Subscribe streams, named durable consumers, their checkpoints and lag.
//!
//! # Layout
//! - here: [`EventFeed`], what the transports call: start a stream, manage
//!   consumers, acknowledge, and report lag to `/metrics`.
//! - [`public`]: what a published event is (kinds, cancellation codes, trace id).
//! - [`stream`]: one stream's task (order, reading ahead, flow control).
//! - `page`: one page of the log made public (filter, open, decode).
//! - [`tail`]: the settled head, watched once per process for every stream.
//!
//! # Delivery guarantees
//! A stream is the event store's settled log after a cursor ([`stream`]
//! explains why nothing is skipped). A named consumer's stream starts after
//! its acknowledged position; what was delivered but not acknowledged when a
//! stream broke is delivered again (at least once), and each event carries its
//! position so that the consumer can drop a repeat.

mod page;
pub mod public;
pub mod stream;
pub mod tail;

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::Utc;
use tokio::sync::{Semaphore, mpsc};

pub use self::{
    public::{CancellationCode, PublicEventType, PublishedEvent},
    stream::FeedItem,
};
use self::{
    stream::{Sources, StreamSpec},
    tail::LogTail,
};
use crate::{
    auth::Principal,
    error::{AppError, FieldViolation},
    privacy::Vault,
    shutdown::Shutdown,
    store::{
        consumers::{ConsumerRecord, ConsumerStore, NewConsumer},
        event_store::EventStore,
    },
};

/// Open Subscribe streams per process; beyond, RESOURCE_EXHAUSTED. With two
/// pages of [`stream::BATCH`] events (one delivered, one read ahead) and
/// [`stream::CHANNEL`] messages buffered per stream, this bounds the feed's
/// memory.
pub const MAX_STREAMS: usize = 256;
/// Named consumers at most (each is a pair of `/metrics` series).
pub const MAX_CONSUMERS: usize = 100;
/// Longest consumer name.
const MAX_NAME_CHARS: usize = 64;

/// Where a stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// After the event at this position (0: the first event).
    After(i64),
    /// At the settled head now.
    Now,
    /// After the named consumer's acknowledged position, with its filter.
    Consumer(String),
}

/// A consumer with how far behind it is.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerStatus {
    /// The consumer's stored row: name, event types, acknowledged position.
    pub record: ConsumerRecord,
    /// Settled head minus the acknowledged position (0 when caught up).
    pub lag_events: i64,
    /// Age of the oldest unacknowledged event, in seconds (0 when caught up).
    pub lag_seconds: f64,
}

/// The feed; cheap to clone.
#[derive(Clone)]
pub struct EventFeed {
    events: Arc<dyn EventStore>,
    consumers: Arc<dyn ConsumerStore>,
    privacy: Vault,
    tail: LogTail,
    streams: Arc<Semaphore>,
    shutdown: Shutdown,
}

impl EventFeed {
    /// The feed over these stores; its head watcher stops on `shutdown`.
    pub fn new(
        events: Arc<dyn EventStore>,
        consumers: Arc<dyn ConsumerStore>,
        privacy: Vault,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            tail: LogTail::start(events.clone(), shutdown.clone()),
            events,
            consumers,
            privacy,
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            shutdown,
        }
    }

    /// Starts a stream (service or admin role): its messages arrive on the
    /// receiver, the first a [`FeedItem::Checkpoint`] with the start.
    ///
    /// `resume` (a position a stream delivered: an event's or a checkpoint's)
    /// replaces the start `start` gives, keeping its filter: a client that
    /// reconnects with its first request and the last position it saw (an
    /// SSE `Last-Event-ID`) goes on right after it. That position is a cursor
    /// in the settled order ([`EventStore::read_all`]), not a number to
    /// compare, so the resumed stream neither skips nor repeats anything.
    #[tracing::instrument(skip(self, principal), fields(caller = %principal.subject))]
    pub async fn subscribe(
        &self,
        principal: &Principal,
        start: Start,
        types: Vec<PublicEventType>,
        resume: Option<i64>,
    ) -> Result<mpsc::Receiver<Result<FeedItem, AppError>>, AppError> {
        principal.require_service()?;
        let permit = self
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| AppError::ResourceExhausted {
                reason: crate::error::ErrorReason::TooManyStreams,
                message: format!("at most {MAX_STREAMS} open Subscribe streams per replica; retry later"),
                retry_after: Some(Duration::from_secs(1)),
            })?;
        let mut spec = match start {
            Start::Consumer(name) => {
                if !types.is_empty() {
                    return Err(AppError::invalid(
                        "event_types",
                        "a named consumer uses its own filter; leave event_types empty",
                    ));
                }
                let record = self.consumer(&name).await?;
                StreamSpec {
                    cursor: record.acked_position,
                    types: parse_types(&record.event_types)?,
                }
            }
            Start::Now if resume.is_some() => StreamSpec {
                cursor: 0,
                types: types.into_iter().collect(),
            },
            Start::Now => StreamSpec {
                cursor: self.events.head_position().await?,
                types: types.into_iter().collect(),
            },
            Start::After(position) => StreamSpec {
                cursor: self.known_position("after_position", position).await?,
                types: types.into_iter().collect(),
            },
        };
        if let Some(position) = resume {
            spec.cursor = self.known_position("resume_after_position", position).await?;
        }
        let (tx, rx) = mpsc::channel(stream::CHANNEL);
        let sources = Sources {
            events: self.events.clone(),
            privacy: self.privacy.clone(),
            head: self.tail.subscribe(),
            shutdown: self.shutdown.clone(),
            permit,
        };
        tokio::spawn(stream::run(sources, spec, tx));
        Ok(rx)
    }

    /// Creates a named consumer (admin only).
    #[tracing::instrument(skip(self, principal, types), fields(admin = %principal.subject))]
    pub async fn create_consumer(
        &self,
        principal: &Principal,
        name: &str,
        types: Vec<PublicEventType>,
        from_now: bool,
    ) -> Result<ConsumerStatus, AppError> {
        principal.require_admin()?;
        check_name("name", name)?;
        if self.consumers.list().await?.len() >= MAX_CONSUMERS {
            return Err(AppError::failed_precondition(
                crate::error::ErrorReason::ConsumerLimitReached,
                format!("at most {MAX_CONSUMERS} consumers; delete one first"),
            ));
        }
        let mut names: Vec<String> = types.iter().map(|t| t.name().to_string()).collect();
        names.sort();
        names.dedup();
        let start_position = if from_now {
            self.events.head_position().await?
        } else {
            0
        };
        let record = self
            .consumers
            .create(&NewConsumer {
                name: name.to_string(),
                event_types: names,
                start_position,
                created_by: principal.subject.clone(),
            })
            .await?;
        self.status(record).await
    }

    /// One consumer with its lag (service or admin).
    pub async fn get_consumer(&self, principal: &Principal, name: &str) -> Result<ConsumerStatus, AppError> {
        principal.require_service()?;
        check_name("name", name)?;
        let record = self.consumer(name).await?;
        self.status(record).await
    }

    /// Every consumer with its lag (admin only).
    pub async fn list_consumers(&self, principal: &Principal) -> Result<Vec<ConsumerStatus>, AppError> {
        principal.require_admin()?;
        self.statuses().await
    }

    /// Deletes a consumer (admin only); NOT_FOUND when there is none.
    #[tracing::instrument(skip(self, principal), fields(admin = %principal.subject))]
    pub async fn delete_consumer(&self, principal: &Principal, name: &str) -> Result<(), AppError> {
        principal.require_admin()?;
        check_name("name", name)?;
        if self.consumers.delete(name).await? {
            Ok(())
        } else {
            Err(AppError::not_found(crate::error::Resource::Consumer, name))
        }
    }

    /// Stores `position` as the consumer's checkpoint (service or admin).
    /// The position must be 0 or an event's: a made-up cursor would make the
    /// consumer skip or repeat an unknown stretch of the log.
    pub async fn ack(
        &self,
        principal: &Principal,
        name: &str,
        position: i64,
    ) -> Result<ConsumerStatus, AppError> {
        principal.require_service()?;
        check_name("consumer", name)?;
        let position = self.known_position("position", position).await?;
        let record = self
            .consumers
            .ack(name, position)
            .await?
            .ok_or_else(|| AppError::not_found(crate::error::Resource::Consumer, name))?;
        self.status(record).await
    }

    /// Every consumer's status, for `/metrics` and ListConsumers.
    pub async fn statuses(&self) -> Result<Vec<ConsumerStatus>, AppError> {
        let mut all = Vec::new();
        for record in self.consumers.list().await? {
            all.push(self.status(record).await?);
        }
        Ok(all)
    }

    /// Publishes every consumer's lag to `/metrics` every `every`, until
    /// shutdown. Every replica reports the same shared figures.
    pub async fn report_lag(self, every: Duration) {
        let mut reported: HashSet<String> = HashSet::new();
        loop {
            match self.statuses().await {
                Ok(statuses) => {
                    let mut now = HashSet::new();
                    for status in &statuses {
                        crate::metrics::event_consumer_lag(
                            &status.record.name,
                            status.lag_events as u64,
                            status.lag_seconds,
                        );
                        now.insert(status.record.name.clone());
                    }
                    // A deleted consumer is behind on nothing.
                    for gone in reported.difference(&now) {
                        crate::metrics::event_consumer_lag(gone, 0, 0.0);
                    }
                    reported = now;
                }
                Err(error) => tracing::warn!(%error, "reading event-feed consumers for /metrics failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.shutdown.wait() => return,
            }
        }
    }

    async fn consumer(&self, name: &str) -> Result<ConsumerRecord, AppError> {
        check_name("consumer", name)?;
        self.consumers
            .get(name)
            .await?
            .ok_or_else(|| AppError::not_found(crate::error::Resource::Consumer, name))
    }

    /// The lag of `record`: positions behind the settled head, and the age of
    /// the first event after its checkpoint.
    async fn status(&self, record: ConsumerRecord) -> Result<ConsumerStatus, AppError> {
        let head = self.events.head_position().await?;
        let next = self.events.read_all(record.acked_position, 1).await?;
        let lag_seconds = next.first().map_or(0.0, |event| {
            (Utc::now() - event.recorded_at).num_milliseconds().max(0) as f64 / 1000.0
        });
        Ok(ConsumerStatus {
            lag_events: if next.is_empty() {
                0
            } else {
                (head - record.acked_position).max(0)
            },
            lag_seconds,
            record,
        })
    }

    /// `position` when it is 0 or an event's position, else INVALID_ARGUMENT
    /// naming `field`.
    async fn known_position(&self, field: &str, position: i64) -> Result<i64, AppError> {
        if position == 0 {
            return Ok(0);
        }
        if position < 0 || self.events.event_at(position).await?.is_none() {
            return Err(AppError::invalid(
                field,
                "must be 0 or the position of an event (one a stream delivered)",
            ));
        }
        Ok(position)
    }
}

/// A consumer name: 1 to 64 of `a-z 0-9 - _ .`.
fn check_name(field: &str, name: &str) -> Result<(), AppError> {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AppError::InvalidArgument(vec![FieldViolation::new(
            field,
            format!("required, 1 to {MAX_NAME_CHARS} of a-z 0-9 - _ ."),
        )]))
    }
}

/// A stored filter back to kinds (a name we no longer know is corrupt data).
fn parse_types(names: &[String]) -> Result<HashSet<PublicEventType>, AppError> {
    names
        .iter()
        .map(|name| {
            PublicEventType::parse(name)
                .ok_or_else(|| AppError::Internal(anyhow::anyhow!("stored consumer filter names {name:?}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_short_lowercase_words() {
        for good in ["notifications", "search-v2", "acct_1.eu"] {
            assert!(check_name("name", good).is_ok(), "{good}");
        }
        for bad in ["", "Notifications", "a b", "ä", &"x".repeat(65)] {
            assert!(check_name("name", bad).is_err(), "{bad:?}");
        }
    }
}
