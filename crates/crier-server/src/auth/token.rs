//! Connection and subscription JWTs, verified the way Centrifugo v6 does
//! (`internal/jwtverify/token_verifier_jwt.go`):
//!
//! - HS256/384/512 with `hmac_secret_key`, RS256/384/512 with
//!   `rsa_public_key`, ES256/384 with `ecdsa_public_key`; an algorithm whose
//!   key is not configured is refused, whatever the token says.
//! - `aud` and `iss` are checked only when configured. No `exp` means the
//!   token never expires. A token not yet valid (`nbf`) counts as expired.
//!   There is no clock leeway, as in Centrifugo.
//! - The signature is checked before any claim is trusted, so a forged
//!   expired token is "invalid", never "expired".
//! - A connection token must not carry a `channel` claim; a subscription
//!   token must.
//!
//! How a [`TokenError`] reaches the client:
//!
//! | where | `Expired` | `Invalid` / `NotConfigured` | `ChannelMismatch` / `UserMismatch` |
//! |---|---|---|---|
//! | connect | error 109 token expired | disconnect 3500 invalid token | — |
//! | refresh | reply `expired: true` | disconnect 3500 | user mismatch: disconnect 3500 |
//! | subscribe | error 109 | error 103 permission denied | disconnect 3500 |
//! | sub refresh | reply `expired: true` | disconnect 3500 | disconnect 3500 |
//!
//! This module must never decide channel permissions or connection policy
//! (anonymous tokens, insecure mode): it only says what a token proves.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::clock::unix_now;
use crate::config::{ChannelOptions, Config, ConfigError, TokenConfig};

/// Why a token was refused. See the module docs for the protocol mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// `exp` has passed (or `nbf` has not come yet). The signature was valid.
    #[error("token expired")]
    Expired,
    /// Malformed, badly signed, wrong algorithm, audience or issuer, or
    /// claims that do not fit the token's purpose.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A subscription token for another channel than the one requested.
    #[error("subscription token is for another channel")]
    ChannelMismatch,
    /// A subscription (or refresh) token for another user than the connection's.
    #[error("token is for another user")]
    UserMismatch,
    /// No key is configured for this kind of token, so none can be valid.
    #[error("no token keys are configured")]
    NotConfigured,
}

/// What the server sends when a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Reply to the command with this protocol error code.
    Error(u32),
    /// Close the connection with this disconnect code.
    Disconnect(u32),
}

impl TokenError {
    /// The answer to a connect command carrying this token.
    pub fn on_connect(&self) -> Rejection {
        match self {
            TokenError::Expired => Rejection::Error(super::ERROR_TOKEN_EXPIRED),
            _ => Rejection::Disconnect(super::DISCONNECT_INVALID_TOKEN),
        }
    }

    /// The answer to a subscribe command carrying this subscription token.
    pub fn on_subscribe(&self) -> Rejection {
        match self {
            TokenError::Expired => Rejection::Error(super::ERROR_TOKEN_EXPIRED),
            TokenError::Invalid(_) | TokenError::NotConfigured => {
                Rejection::Error(super::ERROR_PERMISSION_DENIED)
            }
            TokenError::ChannelMismatch | TokenError::UserMismatch => {
                Rejection::Disconnect(super::DISCONNECT_INVALID_TOKEN)
            }
        }
    }
}

/// Per-subscriber overrides of namespace options (the `override` claim),
/// each `{"value": bool}` in the token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelOverrides {
    /// Overrides `presence`.
    pub presence: Option<bool>,
    /// Overrides `join_leave`.
    pub join_leave: Option<bool>,
    /// Overrides `force_push_join_leave`.
    pub force_push_join_leave: Option<bool>,
    /// Overrides `force_recovery`.
    pub force_recovery: Option<bool>,
    /// Overrides `force_positioning`.
    pub force_positioning: Option<bool>,
}

impl ChannelOverrides {
    /// `options` with these overrides applied.
    pub fn apply(&self, options: &ChannelOptions) -> ChannelOptions {
        let mut o = options.clone();
        let pick = |over: Option<bool>, base: bool| over.unwrap_or(base);
        o.presence = pick(self.presence, o.presence);
        o.join_leave = pick(self.join_leave, o.join_leave);
        o.force_push_join_leave = pick(self.force_push_join_leave, o.force_push_join_leave);
        o.force_recovery = pick(self.force_recovery, o.force_recovery);
        o.force_positioning = pick(self.force_positioning, o.force_positioning);
        o
    }
}

/// What a token grants for one subscription: the `subs` entries of a
/// connection token, or the body of a subscription token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// Channel info of this subscriber (`info`, or `b64info` decoded).
    pub info: Option<Bytes>,
    /// Data for the subscribe reply or push (`data`, or `b64data` decoded).
    pub data: Option<Bytes>,
    /// The `override` claim.
    pub overrides: ChannelOverrides,
}

/// A verified connection token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectClaims {
    /// `sub`; empty means anonymous.
    pub user: String,
    /// Connection info (`info` raw JSON, or `b64info` decoded).
    pub info: Option<Bytes>,
    /// Server-side subscriptions to make: the `subs` claim, or, when it is
    /// absent or empty, the `channels` claim with default options (the same
    /// precedence as Centrifugo). The server resolves each channel's options;
    /// Centrifugo fails the connect with 102 when one names an unknown
    /// namespace.
    pub subs: BTreeMap<String, SubscriptionOptions>,
    /// `meta` as raw JSON: kept server-side, never sent to clients.
    pub meta: Option<Bytes>,
    /// `exp` (Unix seconds).
    pub exp: Option<i64>,
    /// `expire_at` (Unix seconds) as written; see [`ConnectClaims::expires_at`].
    pub expire_at: Option<i64>,
    /// `iat` (Unix seconds).
    pub iat: Option<i64>,
    /// `jti`.
    pub jti: Option<String>,
}

impl ConnectClaims {
    /// When the connection must be refreshed or closed: `expire_at` when the
    /// claim is present (`0` = never), otherwise `exp`; `None` = never.
    pub fn expires_at(&self) -> Option<i64> {
        resolve_expiry(self.expire_at, self.exp)
    }
}

/// A verified subscription token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeClaims {
    /// `sub`: equals the connection's user (checked).
    pub user: String,
    /// `channel`: equals the requested channel (checked).
    pub channel: String,
    /// `client`: when set, only that client id may use the token; see
    /// [`SubscribeClaims::allows_client`].
    pub client: Option<String>,
    /// Info, data and overrides for this subscription.
    pub options: SubscriptionOptions,
    /// `exp` (Unix seconds).
    pub exp: Option<i64>,
    /// `expire_at` (Unix seconds) as written; see [`SubscribeClaims::expires_at`].
    pub expire_at: Option<i64>,
    /// `iat` (Unix seconds).
    pub iat: Option<i64>,
    /// `jti`.
    pub jti: Option<String>,
}

impl SubscribeClaims {
    /// When the subscription expires: `expire_at` when present (`0` =
    /// never), otherwise `exp`; `None` = never.
    pub fn expires_at(&self) -> Option<i64> {
        resolve_expiry(self.expire_at, self.exp)
    }

    /// Whether the client with id `client_id` may use this token. A
    /// mismatch is answered with disconnect 3500, as in Centrifugo.
    pub fn allows_client(&self, client_id: &str) -> bool {
        self.client
            .as_deref()
            .is_none_or(|c| c.is_empty() || c == client_id)
    }
}

fn resolve_expiry(expire_at: Option<i64>, exp: Option<i64>) -> Option<i64> {
    match expire_at {
        Some(at) if at > 0 => Some(at),
        Some(_) => None,
        None => exp,
    }
}

/// The keys one kind of token (connection or subscription) is checked with.
#[derive(Clone)]
struct KeySet {
    /// The config section the keys came from, for error messages.
    section: &'static str,
    hmac: Option<DecodingKey>,
    rsa: Option<DecodingKey>,
    ecdsa: Option<DecodingKey>,
    /// Required `aud` member, when configured.
    audience: Option<String>,
    /// Required `iss`, when configured.
    issuer: Option<String>,
}

impl KeySet {
    fn load(config: &TokenConfig, section: &'static str) -> Result<Self, ConfigError> {
        let non_empty = |s: &str| {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_string())
        };
        let hmac = (!config.hmac_secret_key.is_empty())
            .then(|| DecodingKey::from_secret(config.hmac_secret_key.expose().as_bytes()));
        let rsa = match non_empty(&config.rsa_public_key) {
            None => None,
            Some(value) => {
                let key = format!("{section}.rsa_public_key");
                let pem = load_pem(&value, &key)?;
                Some(DecodingKey::from_rsa_pem(&pem).map_err(|e| ConfigError::Invalid {
                    key,
                    message: format!("not an RSA public key: {e}"),
                })?)
            }
        };
        let ecdsa = match non_empty(&config.ecdsa_public_key) {
            None => None,
            Some(value) => {
                let key = format!("{section}.ecdsa_public_key");
                let pem = load_pem(&value, &key)?;
                Some(DecodingKey::from_ec_pem(&pem).map_err(|e| ConfigError::Invalid {
                    key,
                    message: format!("not an ECDSA public key: {e}"),
                })?)
            }
        };
        Ok(Self {
            section,
            hmac,
            rsa,
            ecdsa,
            audience: non_empty(&config.audience),
            issuer: non_empty(&config.issuer),
        })
    }

    fn algorithms(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.hmac.is_some() {
            out.extend(["HS256", "HS384", "HS512"]);
        }
        if self.rsa.is_some() {
            out.extend(["RS256", "RS384", "RS512"]);
        }
        if self.ecdsa.is_some() {
            out.extend(["ES256", "ES384"]);
        }
        out
    }

    /// The key for `alg`, or why there is none.
    fn key_for(&self, alg: Algorithm) -> Result<&DecodingKey, TokenError> {
        let (key, setting) = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => (&self.hmac, "hmac_secret_key"),
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => (&self.rsa, "rsa_public_key"),
            Algorithm::ES256 | Algorithm::ES384 => (&self.ecdsa, "ecdsa_public_key"),
            other => {
                return Err(TokenError::Invalid(format!(
                    "unsupported JWT algorithm {other:?}"
                )))
            }
        };
        key.as_ref().ok_or_else(|| {
            TokenError::Invalid(format!(
                "{alg:?} tokens are not enabled: {}.{setting} is not set",
                self.section
            ))
        })
    }

    /// Signature, then `aud` and `iss`, then decoding into `C`.
    fn verify<C: DeserializeOwned + Registered>(&self, token: &str) -> Result<C, TokenError> {
        if self.hmac.is_none() && self.rsa.is_none() && self.ecdsa.is_none() {
            return Err(TokenError::NotConfigured);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| TokenError::Invalid(format!("malformed token: {e}")))?;
        let key = self.key_for(header.alg)?;
        let mut validation = Validation::new(header.alg);
        // Claims are checked below, Centrifugo's way; jsonwebtoken only
        // checks the signature.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<C>(token, key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    TokenError::Invalid("signature does not match".to_string())
                }
                jsonwebtoken::errors::ErrorKind::Json(e) => {
                    TokenError::Invalid(format!("malformed claims: {e}"))
                }
                _ => TokenError::Invalid(e.to_string()),
            })?
            .claims;
        if let Some(audience) = &self.audience {
            if !claims.aud().iter().any(|a| a == audience) {
                return Err(TokenError::Invalid("invalid audience".to_string()));
            }
        }
        if let Some(issuer) = &self.issuer {
            if claims.iss() != Some(issuer.as_str()) {
                return Err(TokenError::Invalid("invalid issuer".to_string()));
            }
        }
        Ok(claims)
    }
}

/// Reads a PEM key given as PEM text, base64-encoded PEM, or a path to a
/// PEM file: the three forms Centrifugo accepts, tried in its order.
fn load_pem(value: &str, key: &str) -> Result<Vec<u8>, ConfigError> {
    const MARKER: &str = "-----BEGIN ";
    if value.contains(MARKER) {
        return Ok(value.as_bytes().to_vec());
    }
    let compact: String = value.split_whitespace().collect();
    if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()) {
        if decoded.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()) {
            return Ok(decoded);
        }
    }
    let path = Path::new(value);
    match std::fs::read(path) {
        Ok(content) if content.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()) => Ok(content),
        Ok(_) => Err(ConfigError::Invalid {
            key: key.to_string(),
            message: format!("file {} holds no PEM data", path.display()),
        }),
        Err(e) => Err(ConfigError::Invalid {
            key: key.to_string(),
            message: format!(
                "not PEM, base64-encoded PEM, or a readable PEM file ({}: {e})",
                path.display()
            ),
        }),
    }
}

/// Verifies connection and subscription tokens with the keys from
/// `client.token` and (when enabled) `client.subscription_token`. Cheap to
/// share behind an `Arc`; it holds no mutable state.
#[derive(Clone)]
pub struct TokenVerifier {
    connect: KeySet,
    subscribe: KeySet,
}

impl fmt::Debug for TokenVerifier {
    // Keys (an HMAC secret among them) are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("connect", &self.connect.algorithms())
            .field("subscribe", &self.subscribe.algorithms())
            .finish()
    }
}

impl TokenVerifier {
    /// Loads the keys `config` names. Fails, naming the key, when a PEM key
    /// cannot be read or parsed.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let connect = KeySet::load(&config.client.token, "client.token")?;
        let subscribe = if config.client.subscription_token.enabled {
            KeySet::load(
                &config.client.subscription_token.as_token_config(),
                "client.subscription_token",
            )?
        } else {
            connect.clone()
        };
        Ok(Self { connect, subscribe })
    }

    /// Algorithms accepted for connection tokens.
    pub fn connect_algorithms(&self) -> Vec<&'static str> {
        self.connect.algorithms()
    }

    /// Algorithms accepted for subscription tokens.
    pub fn subscribe_algorithms(&self) -> Vec<&'static str> {
        self.subscribe.algorithms()
    }

    /// Verifies a connection token now.
    pub fn verify_connect(&self, token: &str) -> Result<ConnectClaims, TokenError> {
        self.verify_connect_at(token, unix_now())
    }

    /// Verifies a connection token as of `now` (Unix seconds).
    pub fn verify_connect_at(&self, token: &str, now: i64) -> Result<ConnectClaims, TokenError> {
        let wire: ConnectWire = self.connect.verify(token)?;
        if wire.channel.as_deref().is_some_and(|c| !c.is_empty()) {
            return Err(TokenError::Invalid(
                "a connection token must not contain a channel claim".to_string(),
            ));
        }
        check_time(wire.exp, wire.nbf, now)?;
        let subs = if wire.subs.is_empty() {
            wire.channels
                .into_iter()
                .map(|c| (c, SubscriptionOptions::default()))
                .collect()
        } else {
            wire.subs
                .into_iter()
                .map(|(channel, o)| Ok((channel, o.resolve()?)))
                .collect::<Result<_, TokenError>>()?
        };
        Ok(ConnectClaims {
            user: wire.sub.unwrap_or_default(),
            info: pick_payload(wire.info, wire.b64info.as_deref(), "b64info")?,
            subs,
            meta: wire.meta.map(raw_bytes),
            exp: wire.exp,
            expire_at: wire.expire_at,
            iat: wire.iat,
            jti: wire.jti,
        })
    }

    /// Verifies a subscription token for `channel`, presented by a
    /// connection of `user` (empty for anonymous), now.
    pub fn verify_subscribe(
        &self,
        token: &str,
        user: &str,
        channel: &str,
    ) -> Result<SubscribeClaims, TokenError> {
        self.verify_subscribe_at(token, user, channel, unix_now())
    }

    /// As [`TokenVerifier::verify_subscribe`], as of `now` (Unix seconds).
    pub fn verify_subscribe_at(
        &self,
        token: &str,
        user: &str,
        channel: &str,
        now: i64,
    ) -> Result<SubscribeClaims, TokenError> {
        let wire: SubscribeWire = self.subscribe.verify(token)?;
        check_time(wire.exp, wire.nbf, now)?;
        let token_channel = wire.channel.unwrap_or_default();
        if token_channel.is_empty() {
            return Err(TokenError::Invalid(
                "a subscription token needs a channel claim".to_string(),
            ));
        }
        if token_channel != channel {
            return Err(TokenError::ChannelMismatch);
        }
        let token_user = wire.sub.unwrap_or_default();
        if token_user != user {
            return Err(TokenError::UserMismatch);
        }
        Ok(SubscribeClaims {
            user: token_user,
            channel: token_channel,
            client: wire.client.filter(|c| !c.is_empty()),
            options: resolve_options(
                (wire.info, wire.b64info),
                (wire.data, wire.b64data),
                wire.overrides,
            )?,
            exp: wire.exp,
            expire_at: wire.expire_at,
            iat: wire.iat,
            jti: wire.jti,
        })
    }
}

/// `exp` must be in the future and `nbf`, if any, in the past. Both failures
/// are "expired", as in Centrifugo.
fn check_time(exp: Option<i64>, nbf: Option<i64>, now: i64) -> Result<(), TokenError> {
    if exp.is_some_and(|exp| exp <= now) || nbf.is_some_and(|nbf| nbf > now) {
        return Err(TokenError::Expired);
    }
    Ok(())
}

fn raw_bytes(raw: Box<RawValue>) -> Bytes {
    Bytes::from(String::from(Box::<str>::from(raw)))
}

/// `b64` decoded when present, else the raw JSON value.
fn pick_payload(
    raw: Option<Box<RawValue>>,
    b64: Option<&str>,
    claim: &str,
) -> Result<Option<Bytes>, TokenError> {
    match b64.filter(|s| !s.is_empty()) {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map(|b| Some(Bytes::from(b)))
            .map_err(|e| TokenError::Invalid(format!("{claim} is not valid base64: {e}"))),
        None => Ok(raw.map(raw_bytes)),
    }
}

// ---- wire shapes -----------------------------------------------------------

// No `#[serde(flatten)]` below: flatten buffers the input, and a buffered
// `RawValue` (used to keep `info`, `data` and `meta` byte-exact) cannot be
// deserialized. The registered claims are repeated instead.

/// What [`KeySet::verify`] checks on any wire shape.
trait Registered {
    fn aud(&self) -> &[String];
    fn iss(&self) -> Option<&str>;
}

#[derive(Debug, Deserialize)]
struct ConnectWire {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default, deserialize_with = "numeric_date")]
    exp: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    nbf: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    iat: Option<i64>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default, deserialize_with = "audience")]
    aud: Vec<String>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    info: Option<Box<RawValue>>,
    #[serde(default)]
    b64info: Option<String>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    subs: BTreeMap<String, OptionsWire>,
    #[serde(default)]
    meta: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "numeric_date")]
    expire_at: Option<i64>,
    #[serde(default)]
    channel: Option<String>,
}

impl Registered for ConnectWire {
    fn aud(&self) -> &[String] {
        &self.aud
    }
    fn iss(&self) -> Option<&str> {
        self.iss.as_deref()
    }
}

#[derive(Debug, Deserialize)]
struct SubscribeWire {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default, deserialize_with = "numeric_date")]
    exp: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    nbf: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    iat: Option<i64>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default, deserialize_with = "audience")]
    aud: Vec<String>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    client: Option<String>,
    #[serde(default, deserialize_with = "numeric_date")]
    expire_at: Option<i64>,
    #[serde(default)]
    info: Option<Box<RawValue>>,
    #[serde(default)]
    b64info: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    b64data: Option<String>,
    #[serde(default, rename = "override")]
    overrides: Option<OverrideWire>,
}

impl Registered for SubscribeWire {
    fn aud(&self) -> &[String] {
        &self.aud
    }
    fn iss(&self) -> Option<&str> {
        self.iss.as_deref()
    }
}

#[derive(Debug, Default, Deserialize)]
struct OptionsWire {
    #[serde(default)]
    info: Option<Box<RawValue>>,
    #[serde(default)]
    b64info: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    b64data: Option<String>,
    #[serde(default, rename = "override")]
    overrides: Option<OverrideWire>,
}

impl OptionsWire {
    fn resolve(self) -> Result<SubscriptionOptions, TokenError> {
        resolve_options(
            (self.info, self.b64info),
            (self.data, self.b64data),
            self.overrides,
        )
    }
}

type Payload = (Option<Box<RawValue>>, Option<String>);

fn resolve_options(
    info: Payload,
    data: Payload,
    overrides: Option<OverrideWire>,
) -> Result<SubscriptionOptions, TokenError> {
    let o = overrides.unwrap_or_default();
    let value = |v: Option<BoolValue>| v.map(|b| b.value);
    Ok(SubscriptionOptions {
        info: pick_payload(info.0, info.1.as_deref(), "b64info")?,
        data: pick_payload(data.0, data.1.as_deref(), "b64data")?,
        overrides: ChannelOverrides {
            presence: value(o.presence),
            join_leave: value(o.join_leave),
            force_push_join_leave: value(o.force_push_join_leave),
            force_recovery: value(o.force_recovery),
            force_positioning: value(o.force_positioning),
        },
    })
}

#[derive(Debug, Default, Deserialize)]
struct OverrideWire {
    #[serde(default)]
    presence: Option<BoolValue>,
    #[serde(default)]
    join_leave: Option<BoolValue>,
    #[serde(default)]
    force_push_join_leave: Option<BoolValue>,
    #[serde(default)]
    force_recovery: Option<BoolValue>,
    #[serde(default)]
    force_positioning: Option<BoolValue>,
}

#[derive(Debug, Deserialize)]
struct BoolValue {
    #[serde(default)]
    value: bool,
}

/// A NumericDate: JSON integer or float seconds (floats are truncated).
fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("numeric date out of range")),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a numeric date, found {other}"
        ))),
    }
}

/// `aud`: a string or an array of strings.
fn audience<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Aud>::deserialize(d)? {
        None => Vec::new(),
        Some(Aud::One(a)) => vec![a],
        Some(Aud::Many(a)) => a,
    })
}

// ---- signing ---------------------------------------------------------------

/// Signs `claims` as an HS256 JWT with `secret` (what
/// `client.token.hmac_secret_key` verifies). For `crier token` and tests;
/// the server itself never issues tokens.
pub fn sign_hs256(secret: &str, claims: &Map<String, Value>) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes());
    match jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key) {
        Ok(token) => token,
        // Serializing a JSON map cannot fail and HMAC accepts any key, so
        // there is no input that reaches this arm.
        Err(e) => unreachable!("HS256 signing of a JSON object failed: {e}"),
    }
}

/// Builds token claims, for `crier token` and tests:
///
/// ```
/// # use crier_server::auth::TokenBuilder;
/// let token = TokenBuilder::new().user("42").exp(2_000_000_000).sign_hs256("secret");
/// assert_eq!(token.split('.').count(), 3);
/// ```
#[derive(Debug, Clone, Default)]
pub struct TokenBuilder {
    claims: Map<String, Value>,
}

impl TokenBuilder {
    /// No claims yet (an anonymous token that never expires).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets any claim.
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claims.insert(name.to_string(), value.into());
        self
    }

    /// `sub`: the user id (empty or absent = anonymous).
    pub fn user(self, user: &str) -> Self {
        self.claim("sub", user)
    }

    /// `exp`: expiry, Unix seconds.
    pub fn exp(self, unix: i64) -> Self {
        self.claim("exp", unix)
    }

    /// `expire_at`: connection/subscription expiry independent of `exp`.
    pub fn expire_at(self, unix: i64) -> Self {
        self.claim("expire_at", unix)
    }

    /// `iat`: issue time, Unix seconds.
    pub fn iat(self, unix: i64) -> Self {
        self.claim("iat", unix)
    }

    /// `aud`.
    pub fn aud(self, audience: &str) -> Self {
        self.claim("aud", audience)
    }

    /// `iss`.
    pub fn iss(self, issuer: &str) -> Self {
        self.claim("iss", issuer)
    }

    /// `channel`: makes this a subscription token.
    pub fn channel(self, channel: &str) -> Self {
        self.claim("channel", channel)
    }

    /// `channels`: server-side subscriptions of a connection token.
    pub fn channels<'a>(self, channels: impl IntoIterator<Item = &'a str>) -> Self {
        let list: Vec<Value> = channels.into_iter().map(Value::from).collect();
        self.claim("channels", list)
    }

    /// `info`: JSON connection or channel info.
    pub fn info(self, info: Value) -> Self {
        self.claim("info", info)
    }

    /// The claims so far.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// Signs the claims with HS256.
    pub fn sign_hs256(&self, secret: &str) -> String {
        sign_hs256(secret, &self.claims)
    }
}

#[cfg(test)]
mod tests;
