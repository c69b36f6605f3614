//! Money: integer minor units (cents) and an ISO 4217 currency code. Never floating point.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Error;

/// A three-letter upper-case currency code, such as `USD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, Error> {
        let b = code.as_bytes();
        if b.len() == 3 && b.iter().all(|c| c.is_ascii_uppercase()) {
            Ok(Currency([b[0], b[1], b[2]]))
        } else {
            Err(Error::invalid(format!(
                "currency must be a three-letter upper-case ISO 4217 code, got {code:?}"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <&str>::deserialize(d)?;
        Currency::parse(s).map_err(serde::de::Error::custom)
    }
}

/// An amount of money in minor units of its currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount_cents: i64,
    pub currency: Currency,
}

impl Money {
    /// The highest price a book may have: 10,000,000.00 in major units, 1,000,000,000
    /// minor units. It keeps every sum far from `i64::MAX`: revenue would need more than
    /// nine billion purchases at the highest price to overflow, and the sums saturate
    /// rather than wrap even then.
    pub const MAX_PRICE_CENTS: i64 = 1_000_000_000;

    pub fn new(amount_cents: i64, currency: Currency) -> Self {
        Money {
            amount_cents,
            currency,
        }
    }

    /// A price: zero (free) up to [`Money::MAX_PRICE_CENTS`].
    pub fn price(amount_cents: i64, currency: Currency) -> Result<Self, Error> {
        if amount_cents < 0 {
            return Err(Error::invalid("price must not be negative"));
        }
        if amount_cents > Self::MAX_PRICE_CENTS {
            return Err(Error::invalid(format!(
                "price must be at most {} cents",
                Self::MAX_PRICE_CENTS
            )));
        }
        Ok(Money::new(amount_cents, currency))
    }

    pub fn is_zero(&self) -> bool {
        self.amount_cents == 0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.amount_cents < 0 { "-" } else { "" };
        let abs = self.amount_cents.unsigned_abs();
        write!(f, "{sign}{}.{:02} {}", abs / 100, abs % 100, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_is_three_upper_case_letters() {
        assert_eq!(
            Currency::parse("EUR").map(|c| c.to_string()).ok(),
            Some("EUR".into())
        );
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("EURO").is_err());
    }

    #[test]
    fn money_displays_exact_cents() {
        let usd = Currency::parse("USD").expect("valid");
        assert_eq!(Money::new(1999, usd).to_string(), "19.99 USD");
        assert_eq!(Money::new(-5, usd).to_string(), "-0.05 USD");
        assert!(Money::price(-1, usd).is_err());
        assert!(Money::price(Money::MAX_PRICE_CENTS, usd).is_ok());
        assert!(Money::price(Money::MAX_PRICE_CENTS + 1, usd).is_err());
        assert!(Money::price(i64::MAX, usd).is_err());
    }
}
