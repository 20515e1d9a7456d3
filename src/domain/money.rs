//! Money: a `rust_decimal::Decimal` amount with its ISO 4217 [`Currency`], never a float.
//!
//! Amounts are always held at exactly the currency's minor-unit scale (`29.90`
//! for USD, `1500` for JPY), so equal amounts compare, hash and print the same.
//! Arithmetic is checked: an overflow or a currency mismatch is an error, never
//! a panic or a silent wrap. Rounding happens only where a caller asks for it.

mod text;

use std::{fmt, str::FromStr};

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use self::text::MoneyText;

/// Longest amount text we parse; longer inputs are refused before any arithmetic.
const MAX_TEXT_LEN: usize = 40;

/// The currencies this service accepts (a small allowlist; extend with care:
/// the minor-unit decimals must be right).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Currency {
    /// US dollar, 2 decimals (the default).
    #[default]
    Usd,
    /// Euro, 2 decimals.
    Eur,
    /// Pound sterling, 2 decimals.
    Gbp,
    /// Swiss franc, 2 decimals.
    Chf,
    /// Canadian dollar, 2 decimals.
    Cad,
    /// Australian dollar, 2 decimals.
    Aud,
    /// Japanese yen, no decimals.
    Jpy,
}

impl Currency {
    /// Every accepted currency, in the order error messages list them.
    pub const ALL: [Currency; 7] = [
        Self::Usd,
        Self::Eur,
        Self::Gbp,
        Self::Chf,
        Self::Cad,
        Self::Aud,
        Self::Jpy,
    ];

    /// The ISO 4217 code, e.g. `"USD"`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Usd => "USD",
            Self::Eur => "EUR",
            Self::Gbp => "GBP",
            Self::Chf => "CHF",
            Self::Cad => "CAD",
            Self::Aud => "AUD",
            Self::Jpy => "JPY",
        }
    }

    /// Digits after the decimal point of the minor unit (2 for cents, 0 for yen).
    pub fn decimals(self) -> u32 {
        match self {
            Self::Jpy => 0,
            _ => 2,
        }
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    /// Parses an ISO code; case-insensitive (`"usd"` is USD), nothing else trimmed.
    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.code().eq_ignore_ascii_case(code))
            .ok_or_else(|| MoneyError::UnknownCurrency(code.chars().take(16).collect()))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not a plain decimal such as `29.99` (no exponent, NaN, sign `+`, spaces...).
    #[error("must be a plain decimal number such as \"29.99\"")]
    NotADecimal,
    /// More digits after the point than the currency has.
    #[error("at most {max} decimal places for {currency}")]
    TooManyDecimals {
        /// The currency whose minor unit was exceeded.
        currency: Currency,
        /// Decimal places that currency allows (2, or 0 for JPY).
        max: u32,
    },
    /// Below zero where only non-negative amounts are allowed.
    #[error("must not be negative")]
    Negative,
    /// Too large to represent or compute.
    #[error("amount out of range")]
    Overflow,
    /// Two amounts of different currencies were combined.
    #[error("currency mismatch: {0} and {1}")]
    CurrencyMismatch(Currency, Currency),
    /// Not an accepted ISO 4217 code.
    #[error("unknown or unsupported currency {0:?}")]
    UnknownCurrency(String),
}

/// An amount of one currency, exact to its minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// Zero of `currency`.
    pub fn zero(currency: Currency) -> Self {
        Self::from_minor_units(0, currency)
    }

    /// Parses a plain decimal string (`"29.9"`, `"-3"`, `"0.50"`); refuses
    /// exponents, NaN/infinity, a leading `+` or `.`, whitespace, and more
    /// significant decimals than the currency has (`"1.230"` is fine for USD,
    /// `"1.234"` is not). Negative amounts are accepted: see
    /// [`Money::parse_non_negative`].
    pub fn parse(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        if text.len() > MAX_TEXT_LEN || !is_plain_decimal(text) {
            return Err(MoneyError::NotADecimal);
        }
        // from_str_exact refuses to round away digits it cannot hold.
        let amount = Decimal::from_str_exact(text).map_err(|_| MoneyError::Overflow)?;
        Self::from_decimal(amount, currency)
    }

    /// [`Money::parse`], refusing amounts below zero.
    pub fn parse_non_negative(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        let money = Self::parse(text, currency)?;
        if money.is_negative() {
            return Err(MoneyError::Negative);
        }
        Ok(money)
    }

    /// An exact amount; more significant decimals than the currency has is an error.
    pub fn from_decimal(amount: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        let scale = currency.decimals();
        if amount.normalize().scale() > scale {
            return Err(MoneyError::TooManyDecimals { currency, max: scale });
        }
        Self::at_scale(amount, currency)
    }

    /// An amount rounded to the currency's decimals with an explicit strategy
    /// (e.g. `RoundingStrategy::MidpointNearestEven` for averages).
    pub fn from_decimal_rounded(
        amount: Decimal,
        currency: Currency,
        strategy: RoundingStrategy,
    ) -> Result<Self, MoneyError> {
        Self::at_scale(
            amount.round_dp_with_strategy(currency.decimals(), strategy),
            currency,
        )
    }

    /// An amount given in minor units (cents, yen).
    pub fn from_minor_units(minor: i64, currency: Currency) -> Self {
        // Decimal::new(m, s) is m x 10^-s: already at the currency's scale.
        Self {
            amount: Decimal::new(minor, currency.decimals()),
            currency,
        }
    }

    /// The amount in minor units (cents, yen); an error if it does not fit an i64.
    pub fn to_minor_units(&self) -> Result<i64, MoneyError> {
        let mut minor = self.amount;
        minor.set_scale(0).map_err(|_| MoneyError::Overflow)?;
        // set_scale(0) reinterprets the mantissa: 29.90 (2990e-2) becomes 2990.
        i64::try_from(minor).map_err(|_| MoneyError::Overflow)
    }

    /// The decimal amount, at the currency's scale.
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    /// The currency every operation with another amount must share.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// True above zero (a price must be; a total may be zero).
    pub fn is_positive(&self) -> bool {
        self.amount > Decimal::ZERO
    }

    /// True below zero.
    pub fn is_negative(&self) -> bool {
        self.amount < Decimal::ZERO
    }

    /// True at zero.
    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    /// `self + other`; a different currency or an overflow is an error.
    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let sum = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Self::at_scale(sum, self.currency)
    }

    /// `self - other`; a different currency or an overflow is an error.
    pub fn checked_sub(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let diff = self
            .amount
            .checked_sub(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Self::at_scale(diff, self.currency)
    }

    /// `self x quantity` (a line total); an overflow is an error.
    pub fn checked_mul(&self, quantity: u32) -> Result<Money, MoneyError> {
        let product = self
            .amount
            .checked_mul(Decimal::from(quantity))
            .ok_or(MoneyError::Overflow)?;
        Self::at_scale(product, self.currency)
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch(self.currency, other.currency))
        }
    }

    /// Holds `amount` at exactly the currency's scale. Callers guarantee no
    /// significant decimal is lost (exact constructors check; arithmetic on
    /// same-scale values cannot add decimals). Near Decimal's limit the
    /// mantissa cannot take the extra zeros: that is an overflow, not a
    /// silently shorter scale.
    fn at_scale(mut amount: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        amount.rescale(currency.decimals());
        // "-0" is zero: one representation, so equality and Display agree.
        if amount.is_zero() {
            amount.set_sign_positive(true);
        }
        if amount.scale() != currency.decimals() {
            return Err(MoneyError::Overflow);
        }
        Ok(Self { amount, currency })
    }
}

/// `[-]digits[.digits]`, ASCII only.
fn is_plain_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && fraction.is_none_or(digits)
}

impl fmt::Display for Money {
    /// The plain decimal at the currency's scale, without the code: `29.90`,
    /// as `Decimal` prints it (but faster: see [`Money::text`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

/// Serialized as `{"amount": "29.90", "currency": "USD"}` (a string amount: no float).
impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        MoneyRepr {
            amount: self.to_string(),
            currency: self.currency.code().to_string(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = MoneyRepr::deserialize(deserializer)?;
        let currency: Currency = repr.currency.parse().map_err(serde::de::Error::custom)?;
        Money::parse(&repr.amount, currency).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        code.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
struct MoneyRepr {
    amount: String,
    currency: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(text: &str) -> Money {
        Money::parse(text, Currency::Usd).unwrap()
    }

    #[test]
    fn plain_decimals_parse_and_print_at_the_currency_scale() {
        assert_eq!(usd("29.9").to_string(), "29.90");
        assert_eq!(usd("0.5").to_string(), "0.50");
        assert_eq!(usd("7").to_string(), "7.00");
        assert_eq!(usd("1.230").to_string(), "1.23");
        assert_eq!(usd("-3.10").to_string(), "-3.10");
        assert_eq!(Money::parse("1500", Currency::Jpy).unwrap().to_string(), "1500");
        assert_eq!(usd("29.90"), usd("29.9"));
    }

    #[test]
    fn anything_but_a_plain_decimal_is_refused() {
        for bad in [
            "", " 1", "1 ", "+1", ".5", "5.", "1e3", "1e999", "NaN", "nan", "inf", "Infinity", "1,5", "0x10",
            "1.2.3", "--1", "-", "١", "12_000",
        ] {
            assert_eq!(
                Money::parse(bad, Currency::Usd),
                Err(MoneyError::NotADecimal),
                "{bad:?}"
            );
        }
        let huge = "9".repeat(41);
        assert_eq!(Money::parse(&huge, Currency::Usd), Err(MoneyError::NotADecimal));
        let too_big = "9".repeat(35);
        assert_eq!(Money::parse(&too_big, Currency::Usd), Err(MoneyError::Overflow));
    }

    #[test]
    fn more_decimals_than_the_currency_has_are_refused() {
        assert!(matches!(
            Money::parse("1.234", Currency::Usd),
            Err(MoneyError::TooManyDecimals { max: 2, .. })
        ));
        assert!(matches!(
            Money::parse("100.5", Currency::Jpy),
            Err(MoneyError::TooManyDecimals { max: 0, .. })
        ));
        assert_eq!(Money::parse("100.0", Currency::Jpy).unwrap().to_string(), "100");
    }

    #[test]
    fn negatives_are_refused_only_when_asked() {
        assert_eq!(
            Money::parse_non_negative("-0.01", Currency::Eur),
            Err(MoneyError::Negative)
        );
        assert!(Money::parse_non_negative("0", Currency::Eur).unwrap().is_zero());
        assert!(usd("-1").is_negative());
        assert_eq!(usd("-0.00").to_string(), "0.00");
        assert_eq!(usd("-0"), usd("0"));
    }

    #[test]
    fn arithmetic_is_checked_and_same_currency_only() {
        assert_eq!(usd("29.99").checked_mul(3).unwrap().to_string(), "89.97");
        assert_eq!(usd("0.10").checked_add(&usd("0.20")).unwrap(), usd("0.30"));
        assert_eq!(usd("1").checked_sub(&usd("1.01")).unwrap().to_string(), "-0.01");
        let yen = Money::parse("5", Currency::Jpy).unwrap();
        assert_eq!(
            usd("1").checked_add(&yen),
            Err(MoneyError::CurrencyMismatch(Currency::Usd, Currency::Jpy))
        );
        let max = Money::from_decimal(Decimal::MAX, Currency::Jpy).unwrap();
        assert_eq!(max.checked_mul(2), Err(MoneyError::Overflow));
        assert_eq!(max.checked_add(&max), Err(MoneyError::Overflow));
    }

    #[test]
    fn rounding_is_explicit() {
        let third = Decimal::ONE / Decimal::from(3);
        assert!(Money::from_decimal(third, Currency::Usd).is_err());
        let rounded = Money::from_decimal_rounded(
            Decimal::new(1005, 3),
            Currency::Usd,
            RoundingStrategy::MidpointAwayFromZero,
        )
        .unwrap();
        assert_eq!(rounded.to_string(), "1.01");
        let even = Money::from_decimal_rounded(
            Decimal::new(1005, 3),
            Currency::Usd,
            RoundingStrategy::MidpointNearestEven,
        )
        .unwrap();
        assert_eq!(even.to_string(), "1.00");
    }

    #[test]
    fn minor_units_round_trip() {
        assert_eq!(usd("29.90").to_minor_units().unwrap(), 2990);
        assert_eq!(Money::from_minor_units(2990, Currency::Usd), usd("29.9"));
        let yen = Money::parse("1500", Currency::Jpy).unwrap();
        assert_eq!(yen.to_minor_units().unwrap(), 1500);
        assert_eq!(
            Money::from_decimal(Decimal::MAX, Currency::Usd),
            Err(MoneyError::Overflow)
        );
        let big_yen = Money::from_decimal(Decimal::MAX, Currency::Jpy).unwrap();
        assert_eq!(big_yen.to_minor_units(), Err(MoneyError::Overflow));
    }

    #[test]
    fn currencies_parse_case_insensitively_from_an_allowlist() {
        assert_eq!("usd".parse::<Currency>().unwrap(), Currency::Usd);
        assert_eq!("JPY".parse::<Currency>().unwrap().decimals(), 0);
        assert!("XXX".parse::<Currency>().is_err());
        assert!(" USD".parse::<Currency>().is_err());
        assert_eq!(Currency::default(), Currency::Usd);
    }
}
