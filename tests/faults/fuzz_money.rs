//! Fuzzing `crate::domain::money` with proptest: no input panics, parsing is
//! exact or refused, arithmetic matches an integer model of minor units over
//! the whole `Decimal` range, and rounding happens only with a named strategy.
//!
//! Short in CI (proptest's default 256 cases per property); a long run:
//! `PROPTEST_CASES=200000 cargo test --test integration fuzz_money`.

use commerce::domain::money::{Currency, Money, MoneyError};
use proptest::prelude::*;
use rust_decimal::{Decimal, RoundingStrategy};

/// Largest mantissa a `Decimal` holds: 2^96 - 1.
const MAX_MANTISSA: i128 = (1i128 << 96) - 1;

fn any_currency() -> impl Strategy<Value = Currency> {
    prop::sample::select(Currency::ALL.to_vec())
}

/// Minor units across the whole range, weighted towards the edges.
fn any_minor() -> impl Strategy<Value = i128> {
    prop_oneof![
        -1_000_000i128..1_000_000,
        any::<i64>().prop_map(i128::from),
        (0i128..1000).prop_map(|d| MAX_MANTISSA - d),
        (0i128..1000).prop_map(|d| d - MAX_MANTISSA),
        (-MAX_MANTISSA..=MAX_MANTISSA),
    ]
}

fn money(minor: i128, currency: Currency) -> Money {
    let amount = Decimal::try_from_i128_with_scale(minor, currency.decimals()).expect("in range");
    Money::from_decimal(amount, currency).expect("exact at the currency scale")
}

/// The amount in minor units, checking the scale invariant on the way.
fn minor_of(m: &Money) -> i128 {
    assert_eq!(m.amount().scale(), m.currency().decimals(), "{m:?} off its scale");
    m.amount().mantissa()
}

/// Text that looks like a number often, and like anything else sometimes.
fn number_like_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[0-9]{1,32}(\\.[0-9]{0,24})?",
        "[-+]?[0-9]{0,6}[.,]?[0-9]{0,6}([eE][-+]?[0-9]{1,4})?",
        "(NaN|nan|inf|-inf|Infinity|1e999|-0\\.00|0x1F|1_000|١٢|０)",
        "[ \\t]?-?[0-9]{1,4}\\.[0-9]{1,3}[ \\t]?",
        "\\PC{0,50}",
        ".{0,80}",
    ]
}

/// A plain decimal's expected print at `decimals`, when the text is exact at that scale.
fn expected_print(text: &str, decimals: u32) -> Option<String> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > decimals as usize {
        return None;
    }
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let mut print = whole.to_string();
    if decimals > 0 {
        print.push('.');
        print.push_str(&format!("{fraction:0<width$}", width = decimals as usize));
    }
    let zero = print.bytes().all(|b| b == b'0' || b == b'.');
    Some(if negative && !zero {
        format!("-{print}")
    } else {
        print
    })
}

fn is_plain(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = unsigned
        .split_once('.')
        .map_or((unsigned, None), |(w, f)| (w, Some(f)));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && fraction.is_none_or(digits)
}

proptest! {
    #[test]
    fn parsing_any_text_is_exact_or_refused_and_never_panics(text in number_like_text(), currency in any_currency()) {
        let parsed = Money::parse(&text, currency);
        let plain = is_plain(&text) && text.len() <= 40;
        match &parsed {
            Ok(m) => {
                prop_assert!(plain, "{text:?} accepted");
                let print = expected_print(&text, currency.decimals());
                prop_assert_eq!(Some(m.to_string()), print);
                // What we print parses back to the same amount.
                prop_assert_eq!(Money::parse(&m.to_string(), currency), Ok(*m));
                minor_of(m);
            }
            Err(MoneyError::NotADecimal) => prop_assert!(!plain, "{text:?} refused as not a decimal"),
            Err(MoneyError::TooManyDecimals { max, .. }) => {
                prop_assert!(plain);
                prop_assert_eq!(*max, currency.decimals());
                prop_assert!(expected_print(&text, currency.decimals()).is_none(), "{text:?}");
            }
            Err(MoneyError::Overflow) => {
                prop_assert!(plain);
                // Only numbers with more digits than a Decimal holds overflow.
                let unsigned = text.trim_start_matches('-');
                let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
                let significant = whole.trim_start_matches('0').len();
                prop_assert!(
                    significant + (fraction.len().max(currency.decimals() as usize)) > 28,
                    "{text:?} overflowed"
                );
            }
            Err(other) => prop_assert!(false, "unexpected {other:?} for {text:?}"),
        }
        // Refusing negatives changes nothing else.
        match Money::parse_non_negative(&text, currency) {
            Ok(m) => prop_assert_eq!(parsed, Ok(m)),
            Err(MoneyError::Negative) => prop_assert!(parsed.is_ok_and(|m| m.is_negative())),
            Err(e) => prop_assert_eq!(parsed, Err(e)),
        }
    }

    #[test]
    fn addition_and_subtraction_match_integer_minor_units_or_overflow(
        a in any_minor(), b in any_minor(), currency in any_currency()
    ) {
        let (x, y) = (money(a, currency), money(b, currency));
        for (result, exact) in [(x.checked_add(&y), a + b), (x.checked_sub(&y), a - b)] {
            if exact.abs() <= MAX_MANTISSA {
                prop_assert_eq!(minor_of(&result.expect("in range")), exact);
            } else {
                prop_assert_eq!(result, Err(MoneyError::Overflow));
            }
        }
    }

    #[test]
    fn multiplication_matches_integer_minor_units_or_overflows(
        a in any_minor(), quantity in prop_oneof![0u32..1000, any::<u32>()], currency in any_currency()
    ) {
        let result = money(a, currency).checked_mul(quantity);
        match a.checked_mul(i128::from(quantity)).filter(|p| p.abs() <= MAX_MANTISSA) {
            Some(exact) => prop_assert_eq!(minor_of(&result.expect("in range")), exact),
            None => prop_assert_eq!(result, Err(MoneyError::Overflow)),
        }
    }

    #[test]
    fn different_currencies_never_combine(a in any_minor(), b in any_minor(), c1 in any_currency(), c2 in any_currency()) {
        prop_assume!(c1 != c2);
        let (x, y) = (money(a, c1), money(b, c2));
        prop_assert_eq!(x.checked_add(&y), Err(MoneyError::CurrencyMismatch(c1, c2)));
        prop_assert_eq!(x.checked_sub(&y), Err(MoneyError::CurrencyMismatch(c1, c2)));
    }

    #[test]
    fn minor_units_convert_exactly_or_overflow(a in any_minor(), currency in any_currency()) {
        let m = money(a, currency);
        match i64::try_from(a) {
            Ok(minor) => {
                prop_assert_eq!(m.to_minor_units(), Ok(minor));
                prop_assert_eq!(Money::from_minor_units(minor, currency), m);
            }
            Err(_) => prop_assert_eq!(m.to_minor_units(), Err(MoneyError::Overflow)),
        }
    }

    #[test]
    fn an_exact_amount_is_taken_as_is_and_an_inexact_one_refused(
        lo in any::<u32>(), mid in any::<u32>(), hi in any::<u32>(), negative in any::<bool>(),
        scale in 0u32..=28, currency in any_currency()
    ) {
        let d = Decimal::from_parts(lo, mid, hi, negative, scale);
        let result = Money::from_decimal(d, currency);
        if d.normalize().scale() > currency.decimals() {
            prop_assert!(matches!(result, Err(MoneyError::TooManyDecimals { .. })), "{d} gave {result:?}");
        } else {
            match result {
                Ok(m) => {
                    prop_assert_eq!(m.amount(), d);
                    minor_of(&m);
                }
                // Only an amount without room for the currency's decimals.
                Err(e) => {
                    prop_assert_eq!(e, MoneyError::Overflow);
                    let room = Decimal::from_i128_with_scale(MAX_MANTISSA, currency.decimals());
                    prop_assert!(d.abs() > room, "{d} refused");
                }
            }
        }
    }

    #[test]
    fn rounding_follows_the_named_strategy_exactly(mantissa in any::<i64>(), scale in 0u32..=12) {
        let d = Decimal::new(mantissa, scale);
        let strategies = [
            RoundingStrategy::MidpointNearestEven,
            RoundingStrategy::MidpointAwayFromZero,
            RoundingStrategy::MidpointTowardZero,
            RoundingStrategy::ToZero,
            RoundingStrategy::AwayFromZero,
            RoundingStrategy::ToNegativeInfinity,
            RoundingStrategy::ToPositiveInfinity,
        ];
        for strategy in strategies {
            let rounded = Money::from_decimal_rounded(d, Currency::Usd, strategy).expect("an i64 fits");
            prop_assert_eq!(
                minor_of(&rounded),
                round_model(i128::from(mantissa), scale, 2, strategy),
                "{} with {:?}", d, strategy
            );
        }
    }

    #[test]
    fn money_round_trips_through_json_and_json_never_panics(
        a in any_minor(), currency in any_currency(), amount in number_like_text(), code in "[A-Za-z]{0,4}|\\PC{0,8}"
    ) {
        let m = money(a, currency);
        let json = serde_json::to_value(m).expect("serializes");
        prop_assert_eq!(serde_json::from_value::<Money>(json).expect("deserializes"), m);
        let arbitrary = serde_json::json!({ "amount": amount, "currency": code });
        if let Ok(back) = serde_json::from_value::<Money>(arbitrary) {
            let currency: Currency = code.parse().expect("a currency it accepted");
            prop_assert_eq!(Money::parse(&amount, currency), Ok(back));
        }
    }

    #[test]
    fn currency_codes_come_from_the_allowlist_only(code in "\\PC{0,6}") {
        match code.parse::<Currency>() {
            Ok(c) => prop_assert!(c.code().eq_ignore_ascii_case(&code)),
            Err(e) => prop_assert!(matches!(e, MoneyError::UnknownCurrency(_))),
        }
    }
}

/// Rounds `mantissa x 10^-scale` to `to` decimals by integer arithmetic: the
/// oracle for [`Money::from_decimal_rounded`].
fn round_model(mantissa: i128, scale: u32, to: u32, strategy: RoundingStrategy) -> i128 {
    if scale <= to {
        return mantissa * 10i128.pow(to - scale);
    }
    let divisor = 10i128.pow(scale - to);
    let (q, r) = (mantissa / divisor, mantissa % divisor);
    if r == 0 {
        return q;
    }
    let away = q + mantissa.signum();
    let twice = 2 * r.abs();
    match strategy {
        RoundingStrategy::ToZero => q,
        RoundingStrategy::AwayFromZero => away,
        RoundingStrategy::ToNegativeInfinity => q.min(away),
        RoundingStrategy::ToPositiveInfinity => q.max(away),
        RoundingStrategy::MidpointAwayFromZero => {
            if twice >= divisor {
                away
            } else {
                q
            }
        }
        RoundingStrategy::MidpointTowardZero => {
            if twice > divisor {
                away
            } else {
                q
            }
        }
        RoundingStrategy::MidpointNearestEven => match twice.cmp(&divisor) {
            std::cmp::Ordering::Greater => away,
            std::cmp::Ordering::Less => q,
            std::cmp::Ordering::Equal => {
                if q % 2 == 0 {
                    q
                } else {
                    away
                }
            }
        },
        _ => unreachable!("deprecated strategies are not used"),
    }
}

#[test]
fn the_hostile_amounts_of_the_corpus_are_refused_or_exact_without_panicking() {
    let max = Decimal::MAX.to_string();
    let over = "79228162514264337593543950336";
    let twenty = "1.00000000000000000001";
    for (text, usd) in [
        ("1e999", Err(MoneyError::NotADecimal)),
        ("NaN", Err(MoneyError::NotADecimal)),
        ("-0.00", Ok("0.00")),
        (
            twenty,
            Err(MoneyError::TooManyDecimals {
                currency: Currency::Usd,
                max: 2,
            }),
        ),
        (max.as_str(), Err(MoneyError::Overflow)),
        (over, Err(MoneyError::Overflow)),
        ("0.000000000000000000000000000001", Err(MoneyError::Overflow)),
    ] {
        let got = Money::parse(text, Currency::Usd).map(|m| m.to_string());
        assert_eq!(got, usd.map(str::to_string), "{text}");
    }
    // Decimal::MAX itself is a valid yen amount, and the edge of every operation.
    let yen = Money::parse(&max, Currency::Jpy).expect("Decimal::MAX yen");
    assert_eq!(yen.checked_mul(2), Err(MoneyError::Overflow));
    assert_eq!(
        yen.checked_add(&Money::from_minor_units(1, Currency::Jpy)),
        Err(MoneyError::Overflow)
    );
    assert_eq!(yen.checked_mul(u32::MAX), Err(MoneyError::Overflow));
    assert_eq!(yen.checked_mul(1), Ok(yen));
    assert_eq!(yen.to_minor_units(), Err(MoneyError::Overflow));
    let min = Money::from_decimal(Decimal::MIN, Currency::Jpy).expect("Decimal::MIN yen");
    assert_eq!(
        min.checked_sub(&Money::from_minor_units(1, Currency::Jpy)),
        Err(MoneyError::Overflow)
    );
    assert_eq!(min.checked_add(&yen).map(|m| m.is_zero()), Ok(true));
}
