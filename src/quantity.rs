//! Kubernetes resource quantities ("500m", "2", "20Gi", "1e3"), parsed well enough to compare
//! them against the administrator's maxima.

use std::cmp::Ordering;
use std::fmt;

/// A parsed, non-negative quantity, kept in thousandths of its unit so that CPU millicores and
/// byte counts compare exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    milli: u128,
}

/// Why a quantity string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a Kubernetes quantity ({why}); write it like 500m, 2, 512Mi or 20Gi")]
pub struct QuantityError {
    value: String,
    why: &'static str,
}

impl Quantity {
    /// Parses the Kubernetes quantity syntax: a decimal number and an optional suffix
    /// (`m`, `k`, `M`, `G`, `T`, `P`, `E`, `Ki` … `Ei`, or an exponent `e3`/`E3`).
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let err = |why| QuantityError { value: text.to_owned(), why };
        let s = text.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.len() > 64 {
            return Err(err("it is longer than 64 characters"));
        }
        let s = s.strip_prefix('+').unwrap_or(s);
        if s.starts_with('-') {
            return Err(err("it is negative"));
        }
        let num_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (number, suffix) = s.split_at(num_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err("it does not start with a number"));
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));

        // value = digits * 10^exp10 * 2^exp2, computed in thousandths.
        let (exp10, exp2): (i32, u32) = match suffix {
            "" => (0, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            other => {
                let exp = other.strip_prefix('e').or_else(|| other.strip_prefix('E')).ok_or_else(|| err("its suffix is unknown"))?;
                let exp: i32 = exp.parse().map_err(|_| err("its exponent is not a number"))?;
                if !(-3..=18).contains(&exp) {
                    return Err(err("its exponent is out of range"));
                }
                (exp, 0)
            }
        };
        let digits: String = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        let mantissa: u128 = if digits.is_empty() {
            0
        } else {
            if digits.len() > 30 {
                return Err(err("it has too many digits"));
            }
            digits.parse().map_err(|_| err("it is not a number"))?
        };
        // thousandths: shift by 3, minus the fractional digits, plus the decimal exponent.
        let shift = 3 + exp10 - frac_part.len() as i32;
        let overflow = || err("it is too large");
        let mut milli = if shift >= 0 {
            10u128.checked_pow(shift as u32).and_then(|p| mantissa.checked_mul(p)).ok_or_else(overflow)?
        } else {
            // Below a thousandth: round up, as Kubernetes does.
            let div = 10u128.checked_pow((-shift) as u32).ok_or_else(overflow)?;
            mantissa.div_ceil(div)
        };
        if exp2 > 0 {
            milli = milli.checked_mul(1u128 << exp2).ok_or_else(overflow)?;
        }
        Ok(Quantity { milli })
    }

    /// The value in thousandths of the unit (millicores for CPU, millibytes for memory).
    pub fn milli(self) -> u128 {
        self.milli
    }
}

impl PartialOrd<u128> for Quantity {
    fn partial_cmp(&self, other: &u128) -> Option<Ordering> {
        self.milli.partial_cmp(&other.saturating_mul(1000))
    }
}

impl PartialEq<u128> for Quantity {
    fn eq(&self, other: &u128) -> bool {
        self.milli == other.saturating_mul(1000)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.milli.is_multiple_of(1000) { write!(f, "{}", self.milli / 1000) } else { write!(f, "{}m", self.milli) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> u128 {
        match Quantity::parse(s) {
            Ok(q) => q.milli(),
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn parses_the_forms_kubernetes_accepts() {
        assert_eq!(q("500m"), 500);
        assert_eq!(q("2"), 2000);
        assert_eq!(q("0.5"), 500);
        assert_eq!(q("1Ki"), 1024 * 1000);
        assert_eq!(q("20Gi"), 20 * (1u128 << 30) * 1000);
        assert_eq!(q("1G"), 1_000_000_000 * 1000);
        assert_eq!(q("1e3"), 1_000_000);
        assert_eq!(q("1.5Gi"), 3 * (1u128 << 29) * 1000);
        assert_eq!(q("+1"), 1000);
        assert_eq!(q("0"), 0);
    }

    #[test]
    fn compares_across_suffixes() {
        assert!(Quantity::parse("1Gi").ok() > Quantity::parse("1G").ok());
        assert!(Quantity::parse("1500m").ok() < Quantity::parse("2").ok());
    }

    #[test]
    fn refuses_what_is_not_a_quantity() {
        for bad in ["", "-1", "abc", "1Xi", "1.2.3", "Gi", "1e99", ".", "99999999999999999999999999999999Ei"] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
