//! Redis replies of the stream commands, turned into entries and dead letters.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_redis::redis::{self, Value};

use crate::bus::{BusError, DeadLetter};

/// One stream entry: its id and fields (None once trimmed away).
pub(super) type Entry = (String, Option<HashMap<String, String>>);

pub(super) fn dead_letter_from(id: String, mut fields: HashMap<String, String>) -> DeadLetter {
    let mut take = |key: &str| fields.remove(key).unwrap_or_default();
    DeadLetter {
        group: take("group"),
        raw: take("event"),
        deliveries: take("deliveries").parse().unwrap_or(0),
        error: take("error"),
        dead_lettered_at: DateTime::parse_from_rfc3339(&take("at"))
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default(),
        id,
    }
}

/// `XREADGROUP` reply: nil on timeout, else `[[stream, entries]]`.
pub(super) fn parse_read_reply(reply: Value) -> Result<Vec<Entry>, BusError> {
    match reply {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => {
            let mut out = Vec::new();
            for stream in streams {
                let Value::Array(mut pair) = stream else {
                    return Err(BusError::Protocol("stream reply is not [key, entries]".into()));
                };
                if pair.len() != 2 {
                    return Err(BusError::Protocol("stream reply is not [key, entries]".into()));
                }
                out.extend(parse_entries(pair.swap_remove(1))?);
            }
            Ok(out)
        }
        // RESP3 answers a map of stream -> entries.
        Value::Map(streams) => {
            let mut out = Vec::new();
            for (_, entries) in streams {
                out.extend(parse_entries(entries)?);
            }
            Ok(out)
        }
        other => Err(BusError::Protocol(format!(
            "unexpected XREADGROUP reply {other:?}"
        ))),
    }
}

/// `[[id, [field, value, ...] | nil], ...]`.
pub(super) fn parse_entries(value: Value) -> Result<Vec<Entry>, BusError> {
    let Value::Array(items) = value else {
        return Ok(Vec::new());
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(mut pair) = item else {
                return Err(BusError::Protocol("entry is not [id, fields]".into()));
            };
            if pair.is_empty() {
                return Err(BusError::Protocol("entry without id".into()));
            }
            let fields = if pair.len() > 1 {
                pair.swap_remove(1)
            } else {
                Value::Nil
            };
            let id: String = redis::from_redis_value(pair.swap_remove(0))
                .map_err(|e| BusError::Protocol(format!("entry id: {e}")))?;
            let fields = match fields {
                Value::Nil => None,
                other => Some(
                    redis::from_redis_value::<HashMap<String, String>>(other)
                        .map_err(|e| BusError::Protocol(format!("entry fields: {e}")))?,
                ),
            };
            Ok((id, fields))
        })
        .collect()
}
