//! A started server stream as Server-Sent Events (`text/event-stream`), for any
//! server-streaming rpc with an http rule: each message is one event whose
//! `data:` is the message's proto3 JSON and whose `id:` is the rule's
//! `event_id_field` (so that `Last-Event-ID` resumes the stream), with a
//! comment line as heartbeat whenever nothing was sent for a while.
//!
//! # Errors and ends
//! - An error the stream yields before its first message (within
//!   [`FIRST_EVENT_WAIT`]) is still an ordinary JSON error response with its
//!   HTTP status: no event has been sent, so the status line can say it.
//! - Later, the status line is gone: an error becomes a last event
//!   `event: error` whose data is the grpc-gateway error body, and the
//!   response ends.
//! - A stream that ends with OK (a terminal message, or the rpc's lifetime cap)
//!   ends the response cleanly; the client resumes with the last id it saw.
//!
//! Dropping the response body (the client went away) drops the rpc's stream,
//! which releases what the rpc held for it.

use std::{convert::Infallible, time::Duration};

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::rule::JsonStream;
use crate::transport::{json_error_body, json_error_response};

/// How long the response waits for the stream's first message before it
/// sends its headers: long enough for an rpc's first message that is ready at
/// once (WatchOrder's current state), so that an error in it is still a
/// plain error response; short, so that a stream with nothing to say yet (a
/// resumed one) still answers promptly.
pub const FIRST_EVENT_WAIT: Duration = Duration::from_secs(1);

/// The comment sent as heartbeat: keeps proxies from closing an idle
/// response, and lets a client notice a dead connection.
const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// The SSE response of a started stream whose event ids are at
/// `event_id_field` (a rule's [`super::rule::HttpRule::event_id_field`]), a heartbeat every
/// `heartbeat` of silence; or the JSON error response when the stream fails at once.
pub async fn respond(
    event_id_field: &'static str,
    mut messages: JsonStream,
    heartbeat: Duration,
) -> http::Response<Body> {
    let mut pending = None;
    let mut open = true;
    match tokio::time::timeout(FIRST_EVENT_WAIT.min(heartbeat), messages.next()).await {
        Ok(Some(Err(status))) => return json_error_response(&status),
        Ok(Some(Ok(message))) => pending = Some(message),
        Ok(None) => open = false,
        Err(_elapsed) => {}
    }
    let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let events = Events {
        event_id_field,
        pending,
        messages: open.then_some(messages),
        ticker,
    };
    let body = futures::stream::unfold(events, Events::next_frame);
    let mut response = http::Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    // nginx and its kin buffer responses unless told not to.
    headers.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    response
}

/// The body's state: a message read before the headers went out, the rest of
/// the stream (`None` once it ended or failed), the heartbeat clock.
struct Events {
    event_id_field: &'static str,
    pending: Option<Value>,
    messages: Option<JsonStream>,
    ticker: Interval,
}

impl Events {
    /// The next frame of the body, or `None` when it ends.
    async fn next_frame(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        if let Some(message) = self.pending.take() {
            self.ticker.reset();
            let frame = event(&message, self.event_id_field);
            return Some((Ok(frame), self));
        }
        let messages = self.messages.as_mut()?;
        let frame = tokio::select! {
            next = messages.next() => match next {
                Some(Ok(message)) => {
                    self.ticker.reset();
                    event(&message, self.event_id_field)
                }
                Some(Err(status)) => {
                    self.messages = None;
                    Bytes::from(format!("event: error\ndata: {}\n\n", json_error_body(&status)))
                }
                None => return None,
            },
            _ = self.ticker.tick() => Bytes::from_static(HEARTBEAT),
        };
        Some((Ok(frame), self))
    }
}

/// One event: `id:` (when the message has one) and the JSON on one `data:` line.
fn event(message: &Value, event_id_field: &str) -> Bytes {
    let mut frame = String::new();
    if let Some(id) = event_id(message, event_id_field) {
        frame.push_str("id: ");
        frame.push_str(&id);
        frame.push('\n');
    }
    // serde_json writes no raw newline (inside strings they are escaped), so
    // one data line carries the whole message.
    frame.push_str("data: ");
    frame.push_str(&message.to_string());
    frame.push_str("\n\n");
    Bytes::from(frame)
}

/// The event id at `paths`: the first dotted path (of a comma-separated list,
/// one per member of a oneof) whose parent message is set. build.rs only
/// accepts integer fields, which proto3 JSON leaves out when zero, so a set
/// parent without the field reads `0`; the value is a number, or a string
/// (int64 in proto3 JSON) without line breaks, which would end the field.
fn event_id(message: &Value, paths: &str) -> Option<String> {
    if paths.is_empty() {
        return None;
    }
    paths.split(',').find_map(|path| {
        let (parents, leaf) = path.rsplit_once('.').unwrap_or(("", path));
        let parent = parents
            .split('.')
            .filter(|name| !name.is_empty())
            .try_fold(message, |value, name| value.get(name))
            .filter(|parent| parent.is_object())?;
        match parent.get(leaf) {
            None => Some("0".to_string()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::String(s)) if !s.contains(['\n', '\r']) => Some(s.clone()),
            Some(_) => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tonic::Status;

    use super::*;
    /// WatchOrder's, as the generated table has it.
    const EVENT_ID: &str = "order.version";

    fn messages(items: Vec<Result<Value, Status>>) -> JsonStream {
        Box::pin(futures::stream::iter(items))
    }

    async fn body_text(response: http::Response<Body>) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn an_error_before_the_first_event_is_a_json_response_with_its_http_status() {
        let stream = messages(vec![Err(Status::not_found("no such order"))]);
        let response = respond(EVENT_ID, stream, Duration::from_secs(5)).await;
        assert_eq!(response.status(), http::StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[http::header::CONTENT_TYPE], "application/json");
        let body: Value = serde_json::from_str(&body_text(response).await).unwrap();
        assert_eq!(
            (body["code"].as_i64(), body["message"].as_str()),
            (Some(5), Some("no such order"))
        );
    }

    #[tokio::test]
    async fn an_error_after_an_event_is_the_last_event_and_ends_the_stream() {
        let order = json!({"order": {"version": "4", "status": "ORDER_STATUS_PENDING"}});
        let stream = messages(vec![
            Ok(order.clone()),
            Err(Status::unavailable("server shutting down; watch again")),
            Ok(order),
        ]);
        let response = respond(EVENT_ID, stream, Duration::from_secs(5)).await;
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(
            response.headers()[http::header::CONTENT_TYPE],
            "text/event-stream"
        );
        let text = body_text(response).await;
        let frames: Vec<&str> = text.split_terminator("\n\n").collect();
        assert_eq!(frames.len(), 2, "nothing after the error: {text:?}");
        assert!(frames[0].starts_with("id: 4\ndata: {"), "{text:?}");
        let error = frames[1].strip_prefix("event: error\ndata: ").unwrap();
        let error: Value = serde_json::from_str(error).unwrap();
        assert_eq!(error["code"], 14);
        assert_eq!(error["details"], json!([]));
    }

    #[test]
    fn a_oneof_message_takes_its_id_from_the_member_that_is_set() {
        const PATHS: &str = "event.position,checkpoint.position";
        let event = json!({"event": {"position": "42", "orderId": "o-1"}});
        assert_eq!(event_id(&event, PATHS).as_deref(), Some("42"));
        let checkpoint = json!({"checkpoint": {"position": "7"}});
        assert_eq!(event_id(&checkpoint, PATHS).as_deref(), Some("7"));
        // proto3 JSON leaves a zero out: the member is there, its position 0.
        assert_eq!(event_id(&json!({"checkpoint": {}}), PATHS).as_deref(), Some("0"));
        assert_eq!(event_id(&json!({}), PATHS), None, "no member set, no id");
        assert_eq!(
            event_id(&json!({"order": {"version": "3"}}), EVENT_ID).as_deref(),
            Some("3")
        );
        assert_eq!(
            event_id(&json!({"id": "a\nb"}), "id"),
            None,
            "a line break would end the field"
        );
    }

    #[tokio::test]
    async fn silence_is_filled_with_heartbeats_and_an_ended_stream_ends_the_body() {
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        let stream: JsonStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver));
        let response = respond(EVENT_ID, stream, Duration::from_millis(100)).await;
        let feeder = async move {
            tokio::time::sleep(Duration::from_millis(350)).await;
            sender.send(Ok(json!({"order": {"version": "1"}}))).await.unwrap();
        };
        let (text, ()) = tokio::join!(body_text(response), feeder);
        let heartbeats = text
            .strip_suffix("id: 1\ndata: {\"order\":{\"version\":\"1\"}}\n\n")
            .unwrap_or_else(|| panic!("the event, then the end: {text:?}"));
        assert!(!heartbeats.is_empty());
        assert_eq!(heartbeats.replace(": heartbeat\n\n", ""), "", "{text:?}");
    }
}
