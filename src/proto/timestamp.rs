//! `google.protobuf.Timestamp` with the proto3 JSON form the spec gives: RFC 3339 in UTC with
//! `Z` and 0, 3, 6 or 9 fractional digits. pbjson-types writes `+00:00`, so REST answers
//! disagreed with gRPC clients' renderings (`Z`); build.rs maps the type here instead.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

/// A point in time as seconds and nanoseconds since the Unix epoch (the wire format of
/// `google.protobuf.Timestamp`, tags 1 and 2).
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Non-negative fractions of a second, 0 to 999,999,999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(at: DateTime<Utc>) -> Self {
        Self {
            seconds: at.timestamp(),
            nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
        }
    }
}

impl Timestamp {
    /// The UTC time, if it is one chrono represents.
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.seconds, u32::try_from(self.nanos).ok()?)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let at = self
            .to_datetime()
            .ok_or_else(|| serde::ser::Error::custom("timestamp out of range"))?;
        serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let at = DateTime::parse_from_rfc3339(&text).map_err(D::Error::custom)?;
        Ok(at.with_timezone(&Utc).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_utc_with_z_and_whole_groups_of_fraction_digits() {
        let at = |s: &str| Timestamp::from(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc));
        let json = |t: Timestamp| serde_json::to_string(&t).unwrap();
        assert_eq!(json(at("2026-12-05T10:00:00+00:00")), r#""2026-12-05T10:00:00Z""#);
        assert_eq!(
            json(at("2026-12-05T10:00:00.120+00:00")),
            r#""2026-12-05T10:00:00.120Z""#
        );
        assert_eq!(
            json(at("2026-12-05T11:00:00.000123+01:00")),
            r#""2026-12-05T10:00:00.000123Z""#
        );
        let back: Timestamp = serde_json::from_str(r#""2026-12-05T11:00:00.5+01:00""#).unwrap();
        assert_eq!(back, at("2026-12-05T10:00:00.500Z"));
        assert!(serde_json::from_str::<Timestamp>(r#""yesterday""#).is_err());
    }
}
