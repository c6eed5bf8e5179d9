//! Server API key checks: extracting the key from request headers and
//! comparing it without leaking, through timing, how much of it matched or
//! how long the configured key is.
//!
//! This module must never decide what an empty configured key means
//! (`http_api.insecure` is the server's call): an empty key matches nothing.

use subtle::ConstantTimeEq;

/// Whether `given` equals the configured API key. Constant time in the
/// configured key: the running time depends only on `given.len()`. An empty
/// configured key never matches.
pub fn api_key_matches(configured: &str, given: &str) -> bool {
    let configured = configured.as_bytes();
    let given = given.as_bytes();
    if configured.is_empty() {
        return false;
    }
    let mut same = (configured.len() as u64).ct_eq(&(given.len() as u64));
    for (i, byte) in given.iter().enumerate() {
        // Indexing modulo the configured length keeps every iteration alike
        // whether or not `given` is longer than the key.
        same &= configured[i % configured.len()].ct_eq(byte);
    }
    bool::from(same)
}

/// The API key a request carries: `X-API-Key: KEY`, or else
/// `Authorization: apikey KEY` (scheme case-insensitive), as Centrifugo
/// accepts. Pass the raw header values.
pub fn api_key_from_headers<'a>(
    x_api_key: Option<&'a str>,
    authorization: Option<&'a str>,
) -> Option<&'a str> {
    if let Some(key) = x_api_key.map(str::trim).filter(|k| !k.is_empty()) {
        return Some(key);
    }
    let mut parts = authorization?.split_whitespace();
    let scheme = parts.next()?;
    let key = parts.next()?;
    (scheme.eq_ignore_ascii_case("apikey") && parts.next().is_none()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_comes_from_either_header() {
        assert_eq!(api_key_from_headers(Some("k1"), None), Some("k1"));
        assert_eq!(api_key_from_headers(None, Some("apikey k2")), Some("k2"));
        assert_eq!(api_key_from_headers(None, Some("ApiKey  k3 ")), Some("k3"));
        // X-API-Key wins when both are present.
        assert_eq!(api_key_from_headers(Some("k1"), Some("apikey k2")), Some("k1"));
    }

    #[test]
    fn other_authorization_schemes_carry_no_key() {
        assert_eq!(api_key_from_headers(None, Some("Bearer abc")), None);
        assert_eq!(api_key_from_headers(None, Some("apikey")), None);
        assert_eq!(api_key_from_headers(None, Some("apikey a b")), None);
        assert_eq!(api_key_from_headers(Some("  "), None), None);
        assert_eq!(api_key_from_headers(None, None), None);
    }

    #[test]
    fn only_the_exact_key_matches() {
        assert!(api_key_matches("secret", "secret"));
        assert!(!api_key_matches("secret", "secreT"));
        assert!(!api_key_matches("secret", "secret1"));
        assert!(!api_key_matches("secret", "secre"));
        assert!(!api_key_matches("secret", "secretsecret"));
        assert!(!api_key_matches("secret", ""));
        assert!(!api_key_matches("", ""));
    }
}
