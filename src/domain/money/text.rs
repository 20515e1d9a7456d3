//! Money as text: the plain decimal at the currency's scale, written from the
//! mantissa into a stack buffer. `Decimal`'s own Display pads through the
//! formatting machinery at several times the instructions, and every cart
//! change prints each price two or three times (the stored record, the
//! response's prices and line totals).

use rust_decimal::Decimal;

use super::Money;

impl Money {
    /// What Display prints, on the stack: `money.text().as_str()` where a
    /// `String` is not needed, or to make one of the exact length without
    /// going through the formatting machinery.
    pub fn text(&self) -> MoneyText {
        let mut buffer = [0u8; MAX_PRINTED_LEN];
        let start = MAX_PRINTED_LEN - plain_decimal(&self.amount, &mut buffer).len();
        MoneyText { buffer, start }
    }
}

/// An amount as text (see [`Money::text`]).
pub struct MoneyText {
    buffer: [u8; MAX_PRINTED_LEN],
    start: usize,
}

impl MoneyText {
    /// `[-]digits[.digits]`.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits, '.' and '-' are written from `start` on.
        std::str::from_utf8(&self.buffer[self.start..]).unwrap_or_default()
    }
}

/// Longest [`plain_decimal`]: 29 digits of a 96-bit mantissa, a leading
/// `0` and zeros up to the scale (at most 28), the point and the sign.
const MAX_PRINTED_LEN: usize = 64;

/// `amount` as `[-]digits[.digits]` with exactly its scale's decimals, as
/// `Decimal`'s Display writes it, in the tail of `buffer`.
fn plain_decimal<'a>(amount: &Decimal, buffer: &'a mut [u8; MAX_PRINTED_LEN]) -> &'a str {
    let mantissa = amount.mantissa();
    let scale = amount.scale() as usize;
    // The mantissa's digits, least significant first.
    let mut digits = [0u8; 40];
    let mut count = 0;
    // Every price and total fits 64 bits; 128-bit division is the slow path.
    match u64::try_from(mantissa.unsigned_abs()) {
        Ok(mut rest) => {
            while rest > 0 {
                digits[count] = (rest % 10) as u8;
                rest /= 10;
                count += 1;
            }
        }
        Err(_) => {
            let mut rest = mantissa.unsigned_abs();
            while rest > 0 {
                digits[count] = (rest % 10) as u8;
                rest /= 10;
                count += 1;
            }
        }
    }
    let mut at = buffer.len();
    // At least one digit before the point: 0.05, 0. Past `count` the digits are the
    // array's zeros.
    for (position, digit) in digits.iter().enumerate().take(count.max(scale + 1)) {
        if position == scale && scale > 0 {
            at -= 1;
            buffer[at] = b'.';
        }
        at -= 1;
        buffer[at] = b'0' + digit;
    }
    if mantissa < 0 {
        at -= 1;
        buffer[at] = b'-';
    }
    // Only ASCII digits, '.' and '-' were written.
    std::str::from_utf8(&buffer[at..]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::Currency;

    #[test]
    fn money_prints_as_its_decimal_does() {
        let decimals = [
            Decimal::ZERO,
            Decimal::new(5, 2),
            Decimal::new(-5, 2),
            Decimal::new(2990, 2),
            Decimal::new(-310, 2),
            Decimal::new(1500, 0),
            Decimal::new(i64::MAX, 2),
            Decimal::new(i64::MIN + 1, 2),
            Decimal::MAX,
            Decimal::MIN,
            Decimal::from_i128_with_scale(1, 28),
            Decimal::from_i128_with_scale(-123_456_789_012_345_678_901_234_567, 28),
        ];
        for amount in decimals {
            let mut buffer = [0u8; MAX_PRINTED_LEN];
            assert_eq!(
                plain_decimal(&amount, &mut buffer),
                amount.to_string(),
                "{amount:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_amount_prints_as_its_decimal_does(mantissa in proptest::num::i128::ANY, scale in 0u32..=28) {
            // Decimal holds 96 bits of mantissa.
            let amount = Decimal::from_i128_with_scale(mantissa >> 32, scale);
            let mut buffer = [0u8; MAX_PRINTED_LEN];
            proptest::prop_assert_eq!(plain_decimal(&amount, &mut buffer), amount.to_string());
        }

        #[test]
        fn any_price_prints_as_its_decimal_does(minor in proptest::num::i64::ANY, yen in proptest::bool::ANY) {
            let currency = if yen { Currency::Jpy } else { Currency::Eur };
            let money = Money::from_minor_units(minor, currency);
            proptest::prop_assert_eq!(money.to_string(), money.amount().to_string());
            let text = money.text();
            proptest::prop_assert_eq!(text.as_str(), money.amount().to_string());
        }
    }
}
