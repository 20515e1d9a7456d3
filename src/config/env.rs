//! Typed reads of environment variables: a default when unset or blank, and
//! an error naming the variable when the value does not parse.

use std::{collections::HashMap, fmt::Display, str::FromStr, time::Duration};

use rust_decimal::Decimal;

/// A variable that is missing where required or holds a bad value.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}={value:?}: {reason}")]
pub struct ConfigError {
    /// The variable's name, e.g. `PORT`.
    pub var: String,
    /// The value it held (a URL with its password hidden).
    pub value: String,
    /// What was expected instead.
    pub reason: String,
}

/// The variables being read; every read names its variable, so that an error
/// can say which one is wrong.
pub(super) struct Env<'a>(pub(super) &'a HashMap<String, String>);

impl Env<'_> {
    pub(super) fn invalid(&self, name: &str, value: String, reason: &str) -> ConfigError {
        ConfigError {
            var: name.into(),
            value,
            reason: reason.into(),
        }
    }

    pub(super) fn optional(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    pub(super) fn string(&self, name: &str, default: &str) -> String {
        self.optional(name).unwrap_or_else(|| default.to_string())
    }

    pub(super) fn parse<T: FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(value) => value
                .parse()
                .map_err(|e: T::Err| self.invalid(name, value, &e.to_string())),
        }
    }

    pub(super) fn parse_in<T>(
        &self,
        name: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
        T::Err: Display,
    {
        let value = self.parse(name, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(self.invalid(
                name,
                value.to_string(),
                &format!("expected {} to {}", range.start(), range.end()),
            ))
        }
    }

    pub(super) fn flag(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.optional(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => Ok(false),
            Some(value) => Err(self.invalid(name, value, "expected true or false")),
        }
    }

    /// A positive decimal number of `unit_seconds`, as a Duration (no floats).
    pub(super) fn duration(
        &self,
        name: &str,
        default: &str,
        unit_seconds: u64,
    ) -> Result<Duration, ConfigError> {
        let raw = self.string(name, default);
        let err = |reason: &str| self.invalid(name, raw.clone(), reason);
        let amount: Decimal = raw.parse().map_err(|_| err("expected a number"))?;
        let millis = amount
            .checked_mul(Decimal::from(unit_seconds * 1000))
            .ok_or_else(|| err("too large"))?
            .trunc();
        let millis: u64 = millis
            .try_into()
            .map_err(|_| err("expected a non-negative number"))?;
        if millis == 0 && amount > Decimal::ZERO {
            return Err(err("below one millisecond"));
        }
        Ok(Duration::from_millis(millis))
    }
}
