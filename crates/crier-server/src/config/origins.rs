//! The `client.allowed_origins` check for browser connections, with
//! Centrifugo's semantics:
//!
//! - a request without an `Origin` header is always allowed (it is not a
//!   browser, or not a cross-site one);
//! - with no patterns configured, the origin's host must equal the request's
//!   `Host` header (same-origin only);
//! - otherwise the origin must match one of the patterns, where `*` matches
//!   any run of characters (so `"*"` allows everything and
//!   `"https://*.example.com"` allows every subdomain) and `?` matches one
//!   character. Matching ignores ASCII case.
//!
//! This module owns only the matching; it must never read headers itself.

/// Compiled `client.allowed_origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPolicy {
    /// Lower-cased patterns; empty means "same host only".
    patterns: Vec<String>,
}

impl OriginPolicy {
    /// Builds the policy from the configured patterns.
    pub fn new(patterns: &[String]) -> Self {
        Self {
            patterns: patterns.iter().map(|p| p.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether a connection request carrying `origin` (the `Origin` header,
    /// if any) to `host` (the `Host` header, if any) may proceed.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let origin = match origin.map(str::trim) {
            None | Some("") => return true,
            Some(origin) => origin.to_ascii_lowercase(),
        };
        if self.patterns.is_empty() {
            return match (origin_host(&origin), host) {
                (Some(origin_host), Some(host)) => origin_host.eq_ignore_ascii_case(host.trim()),
                _ => false,
            };
        }
        self.patterns
            .iter()
            .any(|pattern| glob_match(pattern.as_bytes(), origin.as_bytes()))
    }
}

/// Whether `origin` is a page served from this machine (`localhost`,
/// `127.0.0.1`, `[::1]`, any port), which `--dev` allows.
pub fn is_local_origin(origin: &str) -> bool {
    let Some(host) = origin_host(origin.trim()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "::1"
}

/// `host[:port]` of an origin such as `https://example.com:8443`.
fn origin_host(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    let host = rest.split('/').next().unwrap_or(rest);
    (!host.is_empty()).then_some(host)
}

/// Matches `text` against `pattern` where `*` is any run of bytes and `?` is
/// one byte. Iterative with single-star backtracking: linear in practice and
/// never exponential, so a hostile `Origin` header cannot stall a handshake.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(patterns: &[&str]) -> OriginPolicy {
        OriginPolicy::new(&patterns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn requests_without_origin_are_allowed() {
        assert!(policy(&["https://example.com"]).allows(None, Some("x")));
        assert!(policy(&[]).allows(Some(""), None));
    }

    #[test]
    fn star_allows_every_origin() {
        assert!(policy(&["*"]).allows(Some("https://anything.test:9000"), None));
    }

    #[test]
    fn subdomain_patterns_match_like_centrifugo() {
        let p = policy(&["https://*.example.com", "http://localhost:3000"]);
        assert!(p.allows(Some("https://two.Example.com"), None));
        assert!(p.allows(Some("http://localhost:3000"), None));
        assert!(!p.allows(Some("https://example.com.evil.test"), None));
        assert!(!p.allows(Some("http://localhost:3001"), None));
        // A Cyrillic "е" must not pass for a Latin "e".
        assert!(!p.allows(Some("https://two.\u{435}xample.com"), None));
        assert!(policy(&["file://*"]).allows(Some("file://"), None));
        assert!(policy(&["null"]).allows(Some("null"), None));
    }

    #[test]
    fn without_patterns_only_the_same_host_is_allowed() {
        let p = policy(&[]);
        assert!(p.allows(Some("https://examplE.com"), Some("example.com")));
        assert!(!p.allows(Some("https://example.com"), Some("example1.com")));
        assert!(!p.allows(Some("invalid"), Some("example.com")));
    }

    #[test]
    fn glob_handles_backtracking() {
        assert!(glob_match(b"a*b*c", b"aXbYbZc"));
        assert!(!glob_match(b"a*b*c", b"aXbYbZ"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"?x", b"ax"));
    }

    #[test]
    fn local_origins_are_recognised() {
        for local in [
            "http://localhost:3000",
            "http://127.0.0.1:8080",
            "http://[::1]:5173",
            "https://LOCALHOST",
        ] {
            assert!(super::is_local_origin(local), "{local}");
        }
        for other in [
            "http://localhost.evil.example",
            "http://10.0.0.1",
            "null",
            "http://127.0.0.2.nip.io",
        ] {
            assert!(!super::is_local_origin(other), "{other}");
        }
    }
}
