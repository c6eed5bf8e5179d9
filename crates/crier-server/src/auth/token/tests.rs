//! Token verification as a client meets it: every supported algorithm, bad
//! signatures, expiry, audience and issuer, and subscription tokens used for
//! the wrong channel or user. Keys are the fixtures in `tests/fixtures`.

use super::*;
use crate::auth::{DISCONNECT_INVALID_TOKEN, ERROR_PERMISSION_DENIED, ERROR_TOKEN_EXPIRED};
use crate::config::Secret;
use serde_json::json;

const RSA_PRIVATE: &str = include_str!("../../../tests/fixtures/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../../../tests/fixtures/rsa_public.pem");
const EC256_PRIVATE: &str = include_str!("../../../tests/fixtures/ec256_private.pem");
const EC256_PUBLIC: &str = include_str!("../../../tests/fixtures/ec256_public.pem");
const EC384_PRIVATE: &str = include_str!("../../../tests/fixtures/ec384_private.pem");
const EC384_PUBLIC: &str = include_str!("../../../tests/fixtures/ec384_public.pem");

const SECRET: &str = "test-secret";
/// A fixed "now" so expiry tests do not depend on the clock.
const NOW: i64 = 1_700_000_000;

fn hmac_config(secret: &str) -> Config {
    let mut c = Config::default();
    c.client.token.hmac_secret_key = Secret::new(secret);
    c
}

fn verifier(config: &Config) -> TokenVerifier {
    TokenVerifier::from_config(config).expect("keys load")
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).expect("sign")
}

fn hs(alg: Algorithm, secret: &str, claims: Value) -> String {
    sign(alg, &EncodingKey::from_secret(secret.as_bytes()), &claims)
}

#[test]
fn hs256_hs384_hs512_connection_tokens_verify() {
    let v = verifier(&hmac_config(SECRET));
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let token = hs(alg, SECRET, json!({"sub": "42", "exp": NOW + 60}));
        let claims = v
            .verify_connect_at(&token, NOW)
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(claims.user, "42");
        assert_eq!(claims.expires_at(), Some(NOW + 60));
    }
}

#[test]
fn rs256_connection_token_verifies_with_the_public_key() {
    let mut c = Config::default();
    c.client.token.rsa_public_key = RSA_PUBLIC.to_string();
    let v = verifier(&c);
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    let token = sign(Algorithm::RS256, &key, &json!({"sub": "r1"}));
    assert_eq!(v.verify_connect_at(&token, NOW).unwrap().user, "r1");
    // HS tokens are refused when only an RSA key is configured.
    let hs_token = hs(Algorithm::HS256, SECRET, json!({"sub": "r1"}));
    match v.verify_connect_at(&hs_token, NOW) {
        Err(TokenError::Invalid(reason)) => {
            assert!(reason.contains("client.token.hmac_secret_key"), "{reason}")
        }
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn es256_and_es384_connection_tokens_verify() {
    for (public, private, alg) in [
        (EC256_PUBLIC, EC256_PRIVATE, Algorithm::ES256),
        (EC384_PUBLIC, EC384_PRIVATE, Algorithm::ES384),
    ] {
        let mut c = Config::default();
        c.client.token.ecdsa_public_key = public.to_string();
        let v = verifier(&c);
        let key = EncodingKey::from_ec_pem(private.as_bytes()).unwrap();
        let token = sign(alg, &key, &json!({"sub": "e1", "exp": NOW + 5}));
        assert_eq!(v.verify_connect_at(&token, NOW).unwrap().user, "e1", "{alg:?}");
    }
}

#[test]
fn pem_keys_may_be_base64_or_a_file_path() {
    use base64::Engine as _;
    let key = EncodingKey::from_ec_pem(EC256_PRIVATE.as_bytes()).unwrap();
    let token = sign(Algorithm::ES256, &key, &json!({"sub": "p"}));

    let mut c = Config::default();
    c.client.token.ecdsa_public_key = base64::engine::general_purpose::STANDARD.encode(EC256_PUBLIC);
    assert_eq!(verifier(&c).verify_connect_at(&token, NOW).unwrap().user, "p");

    c.client.token.ecdsa_public_key =
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ec256_public.pem").to_string();
    assert_eq!(verifier(&c).verify_connect_at(&token, NOW).unwrap().user, "p");

    c.client.token.ecdsa_public_key = "not a key".to_string();
    match TokenVerifier::from_config(&c) {
        Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "client.token.ecdsa_public_key"),
        other => panic!("expected a config error, got {other:?}"),
    }
    let mut c = Config::default();
    c.client.token.rsa_public_key = EC256_PUBLIC.to_string();
    assert!(
        TokenVerifier::from_config(&c).is_err(),
        "an EC key is not an RSA key"
    );
}

#[test]
fn a_wrong_signature_is_invalid() {
    let v = verifier(&hmac_config(SECRET));
    let token = hs(Algorithm::HS256, "another-secret", json!({"sub": "42"}));
    let err = v.verify_connect_at(&token, NOW).unwrap_err();
    assert!(
        matches!(&err, TokenError::Invalid(r) if r.contains("signature")),
        "{err}"
    );
    assert_eq!(err.on_connect(), Rejection::Disconnect(DISCONNECT_INVALID_TOKEN));

    // A tampered payload with the original signature.
    let good = hs(Algorithm::HS256, SECRET, json!({"sub": "42"}));
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged_payload = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        br#"{"sub":"admin"}"#,
    );
    parts[1] = &forged_payload;
    assert!(matches!(
        v.verify_connect_at(&parts.join("."), NOW),
        Err(TokenError::Invalid(_))
    ));

    for garbage in ["", "abc", "a.b.c", "a.b"] {
        assert!(
            matches!(v.verify_connect_at(garbage, NOW), Err(TokenError::Invalid(_))),
            "{garbage:?}"
        );
    }
}

#[test]
fn an_unsigned_token_is_refused() {
    // alg "none": header {"alg":"none","typ":"JWT"}, no signature.
    let v = verifier(&hmac_config(SECRET));
    let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiI0MiJ9.";
    assert!(matches!(
        v.verify_connect_at(token, NOW),
        Err(TokenError::Invalid(_))
    ));
}

#[test]
fn expiry() {
    let v = verifier(&hmac_config(SECRET));
    let expired = hs(Algorithm::HS256, SECRET, json!({"sub": "42", "exp": NOW - 1}));
    let err = v.verify_connect_at(&expired, NOW).unwrap_err();
    assert_eq!(err, TokenError::Expired);
    assert_eq!(err.on_connect(), Rejection::Error(ERROR_TOKEN_EXPIRED));
    // exp == now has expired too.
    let now = hs(Algorithm::HS256, SECRET, json!({"sub": "42", "exp": NOW}));
    assert_eq!(v.verify_connect_at(&now, NOW), Err(TokenError::Expired));
    // Not valid yet.
    let early = hs(Algorithm::HS256, SECRET, json!({"sub": "42", "nbf": NOW + 10}));
    assert_eq!(v.verify_connect_at(&early, NOW), Err(TokenError::Expired));
    // A forged expired token is invalid, not expired: the signature comes first.
    let forged = hs(Algorithm::HS256, "wrong", json!({"sub": "42", "exp": NOW - 1}));
    assert!(matches!(
        v.verify_connect_at(&forged, NOW),
        Err(TokenError::Invalid(_))
    ));
    // The real clock: a token from 2001 has expired.
    let old = hs(Algorithm::HS256, SECRET, json!({"exp": 1_000_000_000}));
    assert_eq!(v.verify_connect(&old), Err(TokenError::Expired));
}

#[test]
fn a_token_without_exp_never_expires() {
    let v = verifier(&hmac_config(SECRET));
    let token = TokenBuilder::new().user("42").sign_hs256(SECRET);
    let claims = v.verify_connect_at(&token, i64::MAX - 1).unwrap();
    assert_eq!(claims.expires_at(), None);
    // An empty sub is an anonymous connection.
    let anon = TokenBuilder::new().sign_hs256(SECRET);
    assert_eq!(v.verify_connect_at(&anon, NOW).unwrap().user, "");
}

#[test]
fn expire_at_decouples_connection_expiry_from_exp() {
    let v = verifier(&hmac_config(SECRET));
    let never = TokenBuilder::new().exp(NOW + 60).expire_at(0).sign_hs256(SECRET);
    assert_eq!(v.verify_connect_at(&never, NOW).unwrap().expires_at(), None);
    let later = TokenBuilder::new()
        .exp(NOW + 60)
        .expire_at(NOW + 3600)
        .sign_hs256(SECRET);
    assert_eq!(
        v.verify_connect_at(&later, NOW).unwrap().expires_at(),
        Some(NOW + 3600)
    );
    // exp is still checked.
    let stale = TokenBuilder::new()
        .exp(NOW - 1)
        .expire_at(NOW + 3600)
        .sign_hs256(SECRET);
    assert_eq!(v.verify_connect_at(&stale, NOW), Err(TokenError::Expired));
}

#[test]
fn audience_and_issuer_are_checked_only_when_configured() {
    let token = TokenBuilder::new()
        .user("1")
        .aud("other")
        .iss("elsewhere")
        .sign_hs256(SECRET);
    verifier(&hmac_config(SECRET))
        .verify_connect_at(&token, NOW)
        .expect("not configured → not checked");

    let mut c = hmac_config(SECRET);
    c.client.token.audience = "crier".to_string();
    let v = verifier(&c);
    let err = v.verify_connect_at(&token, NOW).unwrap_err();
    assert!(
        matches!(&err, TokenError::Invalid(r) if r.contains("audience")),
        "{err}"
    );
    let ok = TokenBuilder::new().aud("crier").sign_hs256(SECRET);
    v.verify_connect_at(&ok, NOW).expect("matching aud");
    let list = TokenBuilder::new()
        .claim("aud", json!(["x", "crier"]))
        .sign_hs256(SECRET);
    v.verify_connect_at(&list, NOW).expect("aud list containing it");
    let missing = TokenBuilder::new().sign_hs256(SECRET);
    assert!(
        v.verify_connect_at(&missing, NOW).is_err(),
        "aud required once configured"
    );

    let mut c = hmac_config(SECRET);
    c.client.token.issuer = "app".to_string();
    let v = verifier(&c);
    let err = v.verify_connect_at(&token, NOW).unwrap_err();
    assert!(
        matches!(&err, TokenError::Invalid(r) if r.contains("issuer")),
        "{err}"
    );
    let ok = TokenBuilder::new().iss("app").sign_hs256(SECRET);
    v.verify_connect_at(&ok, NOW).expect("matching iss");
}

#[test]
fn connection_claims_are_decoded() {
    let v = verifier(&hmac_config(SECRET));
    let token = TokenBuilder::new()
        .user("7")
        .iat(NOW - 5)
        .claim("jti", "t-1")
        .info(json!({"name": "Alice"}))
        .claim("meta", json!({"role": "admin"}))
        .channels(["news", "chat:lobby"])
        .sign_hs256(SECRET);
    let c = v.verify_connect_at(&token, NOW).unwrap();
    assert_eq!(c.info.as_deref(), Some(&br#"{"name":"Alice"}"#[..]));
    assert_eq!(c.meta.as_deref(), Some(&br#"{"role":"admin"}"#[..]));
    assert_eq!(c.iat, Some(NOW - 5));
    assert_eq!(c.jti.as_deref(), Some("t-1"));
    assert_eq!(c.subs.keys().collect::<Vec<_>>(), ["chat:lobby", "news"]);

    // `subs` wins over `channels`, with per-channel data and overrides;
    // b64info wins over info.
    let token = TokenBuilder::new()
        .claim("b64info", "AAEC")
        .info(json!({"ignored": true}))
        .channels(["ignored"])
        .claim(
            "subs",
            json!({"chat:1": {"data": {"hello": 1}, "override": {"presence": {"value": false}}}}),
        )
        .sign_hs256(SECRET);
    let c = v.verify_connect_at(&token, NOW).unwrap();
    assert_eq!(c.info.as_deref(), Some(&[0u8, 1, 2][..]));
    assert_eq!(c.subs.len(), 1);
    let sub = &c.subs["chat:1"];
    assert_eq!(sub.data.as_deref(), Some(&br#"{"hello":1}"#[..]));
    assert_eq!(sub.overrides.presence, Some(false));
    let base = ChannelOptions {
        presence: true,
        join_leave: true,
        ..Default::default()
    };
    let applied = sub.overrides.apply(&base);
    assert!(!applied.presence && applied.join_leave);

    let bad_b64 = TokenBuilder::new().claim("b64info", "%%%").sign_hs256(SECRET);
    assert!(matches!(
        v.verify_connect_at(&bad_b64, NOW),
        Err(TokenError::Invalid(_))
    ));
    let bad_sub = TokenBuilder::new().claim("sub", 42).sign_hs256(SECRET);
    assert!(matches!(
        v.verify_connect_at(&bad_sub, NOW),
        Err(TokenError::Invalid(_))
    ));
}

#[test]
fn a_connection_token_must_not_name_a_channel() {
    let v = verifier(&hmac_config(SECRET));
    let token = TokenBuilder::new().user("1").channel("news").sign_hs256(SECRET);
    assert!(matches!(
        v.verify_connect_at(&token, NOW),
        Err(TokenError::Invalid(_))
    ));
}

#[test]
fn subscription_tokens() {
    let v = verifier(&hmac_config(SECRET));
    let token = TokenBuilder::new()
        .user("42")
        .channel("$chat:secret")
        .exp(NOW + 30)
        .info(json!({"seat": 3}))
        .sign_hs256(SECRET);
    let claims = v.verify_subscribe_at(&token, "42", "$chat:secret", NOW).unwrap();
    assert_eq!(claims.channel, "$chat:secret");
    assert_eq!(claims.expires_at(), Some(NOW + 30));
    assert_eq!(claims.options.info.as_deref(), Some(&br#"{"seat":3}"#[..]));
    assert!(claims.allows_client("any"));

    // Another channel: disconnect 3500.
    let err = v
        .verify_subscribe_at(&token, "42", "$chat:other", NOW)
        .unwrap_err();
    assert_eq!(err, TokenError::ChannelMismatch);
    assert_eq!(
        err.on_subscribe(),
        Rejection::Disconnect(DISCONNECT_INVALID_TOKEN)
    );
    // Another user: disconnect 3500.
    let err = v
        .verify_subscribe_at(&token, "43", "$chat:secret", NOW)
        .unwrap_err();
    assert_eq!(err, TokenError::UserMismatch);
    assert_eq!(
        err.on_subscribe(),
        Rejection::Disconnect(DISCONNECT_INVALID_TOKEN)
    );
    // Anonymous connection with a user's token.
    assert_eq!(
        v.verify_subscribe_at(&token, "", "$chat:secret", NOW),
        Err(TokenError::UserMismatch)
    );
    // Expired: error 109.
    let err = v
        .verify_subscribe_at(&token, "42", "$chat:secret", NOW + 30)
        .unwrap_err();
    assert_eq!(err.on_subscribe(), Rejection::Error(ERROR_TOKEN_EXPIRED));
    // Badly signed: error 103, not a disconnect.
    let forged = TokenBuilder::new()
        .user("42")
        .channel("$chat:secret")
        .sign_hs256("x");
    let err = v
        .verify_subscribe_at(&forged, "42", "$chat:secret", NOW)
        .unwrap_err();
    assert_eq!(err.on_subscribe(), Rejection::Error(ERROR_PERMISSION_DENIED));
    // A connection token is not a subscription token.
    let conn = TokenBuilder::new().user("42").sign_hs256(SECRET);
    assert!(matches!(
        v.verify_subscribe_at(&conn, "42", "$chat:secret", NOW),
        Err(TokenError::Invalid(_))
    ));
    // Bound to a client id.
    let bound = TokenBuilder::new()
        .user("42")
        .channel("c")
        .claim("client", "client-1")
        .sign_hs256(SECRET);
    let claims = v.verify_subscribe_at(&bound, "42", "c", NOW).unwrap();
    assert!(claims.allows_client("client-1"));
    assert!(!claims.allows_client("client-2"));
}

#[test]
fn a_separate_subscription_key_set_when_enabled() {
    let mut c = hmac_config(SECRET);
    c.client.subscription_token.enabled = true;
    c.client.subscription_token.hmac_secret_key = Secret::new("sub-secret");
    let v = verifier(&c);
    let with_sub_key = TokenBuilder::new().channel("c").sign_hs256("sub-secret");
    let with_conn_key = TokenBuilder::new().channel("c").sign_hs256(SECRET);
    v.verify_subscribe_at(&with_sub_key, "", "c", NOW)
        .expect("subscription key");
    assert!(v.verify_subscribe_at(&with_conn_key, "", "c", NOW).is_err());
    // Connection tokens still use client.token.
    let conn = TokenBuilder::new().sign_hs256(SECRET);
    v.verify_connect_at(&conn, NOW).expect("connection key");

    // Not enabled: the section is ignored and client.token serves both.
    c.client.subscription_token.enabled = false;
    let v = verifier(&c);
    v.verify_subscribe_at(&with_conn_key, "", "c", NOW)
        .expect("connection key");
}

#[test]
fn no_keys_means_not_configured() {
    let v = verifier(&Config::default());
    let token = TokenBuilder::new().sign_hs256(SECRET);
    let err = v.verify_connect_at(&token, NOW).unwrap_err();
    assert_eq!(err, TokenError::NotConfigured);
    assert_eq!(err.on_connect(), Rejection::Disconnect(DISCONNECT_INVALID_TOKEN));
    assert!(v.connect_algorithms().is_empty());
}

#[test]
fn the_verifier_never_prints_its_keys() {
    let v = verifier(&hmac_config(SECRET));
    let printed = format!("{v:?}");
    assert!(!printed.contains(SECRET), "{printed}");
    assert!(printed.contains("HS256"));
}

#[test]
fn builder_tokens_are_standard_hs256_jwts() {
    let token = TokenBuilder::new().user("42").exp(NOW + 1).sign_hs256(SECRET);
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::HS256);
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    let data =
        jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_secret(SECRET.as_bytes()), &validation)
            .unwrap();
    assert_eq!(data.claims, json!({"sub": "42", "exp": NOW + 1}));
}
