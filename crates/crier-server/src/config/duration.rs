//! Duration values in configuration files, written the way Centrifugo (Go's
//! `time.ParseDuration`) writes them: `"25s"`, `"500ms"`, `"1h30m"`, `"1.5h"`.
//!
//! Owns parsing and canonical formatting of those strings, and the serde glue
//! that lets config structs hold a plain [`std::time::Duration`].
//!
//! Leniency, on purpose: a bare integer (`25` in a file, `"25"` in an
//! environment variable) means seconds. Centrifugo would read a bare number
//! as nanoseconds, which is never what anyone meant. Negative durations are
//! rejected. This module must never read files or the environment.

use std::fmt;
use std::time::Duration;

/// Parses a Go-style duration string, or a bare non-negative integer meaning
/// seconds. Returns a message fit for a config error on failure.
pub(crate) fn parse(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("empty duration; write e.g. \"25s\"".to_string());
    }
    if s.contains(char::is_whitespace) {
        return Err(format!(
            "invalid duration {input:?}: no spaces allowed, write e.g. \"8s\" or \"1h30m\""
        ));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s
            .parse()
            .map_err(|_| format!("duration {input:?} is too large"))?;
        return Ok(Duration::from_secs(secs));
    }
    let rest = match s.strip_prefix('+') {
        Some(rest) => rest,
        None if s.starts_with('-') => {
            return Err(format!("duration {input:?} is negative"));
        }
        None => s,
    };
    let mut total: u128 = 0;
    let mut rest = rest;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(format!("invalid duration {input:?}"));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "" => {
                return Err(format!(
                    "missing unit in duration {input:?}; use ns, us, ms, s, m or h"
                ))
            }
            other => {
                return Err(format!(
                    "unknown unit {other:?} in duration {input:?}; use ns, us, ms, s, m or h"
                ))
            }
        };
        total = total
            .checked_add(scaled(number, unit_nanos).ok_or_else(|| too_large(input))?)
            .ok_or_else(|| too_large(input))?;
        rest = after;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| too_large(input))?;
    // The remainder of a division by 1e9 always fits in u32.
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

fn too_large(input: &str) -> String {
    format!("duration {input:?} is too large")
}

/// `number` (digits with at most one dot) times `unit_nanos`, truncated to
/// whole nanoseconds as Go does.
fn scaled(number: &str, unit_nanos: u128) -> Option<u128> {
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let mut value = whole.checked_mul(unit_nanos)?;
    let mut scale = unit_nanos;
    for digit in frac.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        value = value.checked_add(u128::from(digit - b'0') * scale)?;
    }
    Some(value)
}

/// Formats a duration so that [`parse`] reads back exactly the same value:
/// `"0s"`, `"25s"`, `"1h30m"`, `"1s500ms"`.
pub(crate) fn format(d: Duration) -> String {
    struct Go(Duration);
    impl fmt::Display for Go {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let secs = self.0.as_secs();
            let nanos = self.0.subsec_nanos();
            if secs == 0 && nanos == 0 {
                return f.write_str("0s");
            }
            let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
            if h > 0 {
                write!(f, "{h}h")?;
            }
            if m > 0 {
                write!(f, "{m}m")?;
            }
            if s > 0 {
                write!(f, "{s}s")?;
            }
            if nanos > 0 {
                if nanos.is_multiple_of(1_000_000) {
                    write!(f, "{}ms", nanos / 1_000_000)?;
                } else if nanos.is_multiple_of(1_000) {
                    write!(f, "{}us", nanos / 1_000)?;
                } else {
                    write!(f, "{nanos}ns")?;
                }
            }
            Ok(())
        }
    }
    Go(d).to_string()
}

/// `#[serde(with = "duration::serde_go")]` for `std::time::Duration` fields.
pub(crate) mod serde_go {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(GoDuration)
    }

    struct GoDuration;

    impl Visitor<'_> for GoDuration {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"25s\", \"500ms\" or \"1h30m\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            super::parse(v).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format!("duration {v} is negative")))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "duration {v} has no unit; write it as a string such as \"{v}s\""
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_centrifugo_duration_strings() {
        assert_eq!(parse("25s"), Ok(Duration::from_secs(25)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("720h"), Ok(Duration::from_secs(720 * 3600)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2us"), Ok(Duration::from_micros(2)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bare_integers_mean_seconds() {
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
    }

    #[test]
    fn rejects_malformed_durations_with_a_reason() {
        assert!(parse("10x").unwrap_err().contains("unknown unit"));
        assert!(parse("1.5").unwrap_err().contains("missing unit"));
        assert!(parse("-5s").unwrap_err().contains("negative"));
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
        assert!(parse("1..2s").is_err());
        assert!(parse("8 sec").unwrap_err().contains("no spaces"));
    }

    #[test]
    fn formatting_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_secs(25),
            Duration::from_millis(1500),
            Duration::from_secs(5400),
            Duration::from_micros(7),
            Duration::from_nanos(1_000_000_123),
        ] {
            assert_eq!(parse(&format(d)), Ok(d), "{}", format(d));
        }
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format(Duration::from_millis(500)), "500ms");
    }
}
