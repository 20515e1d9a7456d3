//! GetCartAnalytics figures derived from the store's counters.

use rust_decimal::{Decimal, RoundingStrategy};

use crate::{
    domain::money::{Currency, Money},
    error::AppError,
    store::cart::CartStats,
};

/// The cart funnel: how many carts reach each stage, for GetCartAnalytics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartAnalytics {
    /// Carts ever created.
    pub created: u64,
    /// Carts live and active now.
    pub active: u64,
    /// Carts converted into orders.
    pub converted: u64,
    /// Carts that expired without conversion.
    pub abandoned: u64,
    /// Active carts deleted by their owner.
    pub deleted: u64,
    /// `abandoned / (converted + abandoned)`, 4 decimals; 0 before any outcome.
    pub abandonment_rate: Decimal,
    /// Mean subtotal of the converted carts of the currency with the most
    /// conversions (carts in other currencies are not mixed in); zero USD
    /// before any conversion. Rounded half-to-even to the currency's decimals.
    pub average_cart_value: Money,
}

impl CartAnalytics {
    /// Derives the rates from the counters.
    pub fn from_stats(stats: &CartStats) -> Result<Self, AppError> {
        let finished = stats.converted + stats.abandoned;
        let mut abandonment_rate = if finished == 0 {
            Decimal::ZERO
        } else {
            (Decimal::from(stats.abandoned) / Decimal::from(finished))
                .round_dp_with_strategy(4, RoundingStrategy::MidpointNearestEven)
        };
        abandonment_rate.rescale(4);

        // Most conversions wins; on a tie the first currency in Currency order.
        let dominant = stats
            .converted_value
            .iter()
            .filter(|(_, v)| v.carts > 0)
            .max_by(|(ca, a), (cb, b)| a.carts.cmp(&b.carts).then(cb.cmp(ca)));
        let average_cart_value = match dominant {
            None => Money::zero(Currency::default()),
            Some((&currency, value)) => {
                let sum = Money::from_minor_units(value.minor_units, currency).amount();
                Money::from_decimal_rounded(
                    sum / Decimal::from(value.carts),
                    currency,
                    RoundingStrategy::MidpointNearestEven,
                )
                .map_err(|e| AppError::Internal(anyhow::Error::new(e).context("average cart value")))?
            }
        };
        Ok(Self {
            created: stats.created,
            active: stats.active,
            converted: stats.converted,
            abandoned: stats.abandoned,
            deleted: stats.deleted,
            abandonment_rate,
            average_cart_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::cart::ConvertedValue;

    #[test]
    fn no_outcomes_yet_means_zero_rate_and_zero_average() {
        let a = CartAnalytics::from_stats(&CartStats::default()).unwrap();
        assert_eq!(a.abandonment_rate.to_string(), "0.0000");
        assert_eq!(a.average_cart_value.to_string(), "0.00");
    }

    #[test]
    fn rate_and_average_follow_their_definitions() {
        let mut stats = CartStats {
            created: 10,
            converted: 2,
            abandoned: 1,
            ..Default::default()
        };
        stats.converted_value.insert(
            Currency::Eur,
            ConvertedValue {
                carts: 2,
                minor_units: 1001,
            },
        );
        stats.converted_value.insert(
            Currency::Usd,
            ConvertedValue {
                carts: 1,
                minor_units: 99_999,
            },
        );
        let a = CartAnalytics::from_stats(&stats).unwrap();
        assert_eq!(a.abandonment_rate.to_string(), "0.3333");
        // EUR has the most conversions: (10.01) / 2 = 5.005 -> 5.00 half-to-even.
        assert_eq!(a.average_cart_value.to_string(), "5.00");
        assert_eq!(a.average_cart_value.currency(), Currency::Eur);
    }
}
