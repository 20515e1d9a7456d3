//! Upcasting: stored payloads keep the schema version they were written
//! with; readers always get the current schema. Each [`Upcast`] lifts one
//! event type from one version to the next, and [`Upcasters`] chains them.

use std::{collections::HashMap, sync::Arc};

use serde_json::Value;

/// Lifts the payload of `event_type` from schema `from_version` to `from_version + 1`.
#[derive(Clone)]
pub struct Upcast {
    /// The event type it applies to.
    pub event_type: &'static str,
    /// The schema version it reads.
    pub from_version: i32,
    /// The transformation; an error means the stored payload is corrupt.
    pub apply: fn(Value) -> Result<Value, String>,
}

impl std::fmt::Debug for Upcast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upcast({} v{})", self.event_type, self.from_version)
    }
}

/// A set of upcasts, looked up by (event type, version).
#[derive(Clone, Debug, Default)]
pub struct Upcasters {
    steps: Arc<HashMap<(String, i32), Upcast>>,
}

impl Upcasters {
    /// No upcasting at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// The given upcasts; two for the same (type, version) is a programming error.
    pub fn new(upcasts: impl IntoIterator<Item = Upcast>) -> Self {
        let mut steps = HashMap::new();
        for upcast in upcasts {
            let key = (upcast.event_type.to_string(), upcast.from_version);
            let previous = steps.insert(key, upcast);
            debug_assert!(previous.is_none(), "two upcasts for one event type and version");
        }
        Self {
            steps: Arc::new(steps),
        }
    }

    /// Applies every step from `schema_version` on, until no step applies.
    pub fn upcast(&self, event_type: &str, schema_version: i32, mut payload: Value) -> Result<Value, String> {
        let mut version = schema_version;
        while let Some(step) = self.steps.get(&(event_type.to_string(), version)) {
            payload = (step.apply)(payload)
                .map_err(|e| format!("upcasting {event_type} from schema v{version}: {e}"))?;
            version += 1;
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rename_total(mut v: Value) -> Result<Value, String> {
        let obj = v.as_object_mut().ok_or("not an object")?;
        let total = obj.remove("amount").ok_or("no amount")?;
        obj.insert("total".into(), total);
        Ok(v)
    }

    fn add_currency(mut v: Value) -> Result<Value, String> {
        v.as_object_mut()
            .ok_or("not an object")?
            .insert("currency".into(), json!("USD"));
        Ok(v)
    }

    #[test]
    fn chains_steps_from_the_stored_version_to_the_current_one() {
        let upcasters = Upcasters::new([
            Upcast {
                event_type: "Paid",
                from_version: 1,
                apply: rename_total,
            },
            Upcast {
                event_type: "Paid",
                from_version: 2,
                apply: add_currency,
            },
        ]);
        let v1 = upcasters.upcast("Paid", 1, json!({"amount": "1.00"})).unwrap();
        assert_eq!(v1, json!({"total": "1.00", "currency": "USD"}));
        let v2 = upcasters.upcast("Paid", 2, json!({"total": "2.00"})).unwrap();
        assert_eq!(v2, json!({"total": "2.00", "currency": "USD"}));
        let other = upcasters.upcast("Other", 1, json!({"amount": 1})).unwrap();
        assert_eq!(other, json!({"amount": 1}));
        assert!(upcasters.upcast("Paid", 1, json!([])).is_err());
    }
}
