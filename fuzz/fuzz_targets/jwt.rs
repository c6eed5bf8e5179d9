//! JWT parsing and verification (`auth::TokenVerifier`, HS256). Arbitrary
//! tokens never panic and are never accepted without the key. Claims that
//! are signed with the configured key verify as Centrifugo would read them
//! (`sub` is the user); signed with another key or with a byte of the
//! signature changed, the same claims are "invalid", never "expired" or
//! accepted: the signature is checked before any claim is trusted.
#![no_main]

use std::sync::OnceLock;

use crier_server::auth::{sign_hs256, TokenError, TokenVerifier};
use crier_server::config::{Config, Secret};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_700_000_000;

fn verifier() -> &'static TokenVerifier {
    static V: OnceLock<TokenVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let mut config = Config::default();
        config.client.token.hmac_secret_key = Secret::new("fuzz-secret");
        TokenVerifier::from_config(&config).expect("an HMAC key loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let v = verifier();
    if let Ok(token) = std::str::from_utf8(data) {
        // Without the key, nothing verifies.
        assert!(matches!(
            v.verify_connect_at(token, NOW),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            v.verify_subscribe_at(token, "", "news", NOW),
            Err(TokenError::Invalid(_))
        ));
    }
    let Ok(claims) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data) else {
        return;
    };
    let token = sign_hs256("fuzz-secret", &claims);
    match v.verify_connect_at(&token, NOW) {
        Ok(c) => {
            let sub = claims.get("sub").and_then(|s| s.as_str()).unwrap_or_default();
            assert_eq!(c.user, sub);
        }
        Err(TokenError::Invalid(_) | TokenError::Expired) => {}
        Err(e) => panic!("a connection token refused with {e:?}"),
    }
    let channel = claims.get("channel").and_then(|c| c.as_str()).unwrap_or("news");
    let user = claims.get("sub").and_then(|s| s.as_str()).unwrap_or_default();
    if let Ok(s) = v.verify_subscribe_at(&token, user, channel, NOW) {
        assert_eq!((s.user.as_str(), s.channel.as_str()), (user, channel));
    }
    let forged = sign_hs256("another-secret", &claims);
    assert!(matches!(
        v.verify_connect_at(&forged, NOW),
        Err(TokenError::Invalid(_))
    ));
    assert!(matches!(
        v.verify_subscribe_at(&forged, user, channel, NOW),
        Err(TokenError::Invalid(_))
    ));
    let mut tampered = token.into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("base64url is ASCII");
    assert!(matches!(
        v.verify_connect_at(&tampered, NOW),
        Err(TokenError::Invalid(_))
    ));
});
