//! `CRIER_*` environment variable overrides.
//!
//! Every scalar key is reachable: the variable name is `CRIER_` plus the key
//! path upper-cased with `_` between sections, e.g. `CRIER_HTTP_SERVER_PORT`
//! for `http_server.port` and `CRIER_CLIENT_TOKEN_HMAC_SECRET_KEY` for
//! `client.token.hmac_secret_key`. Because key names contain `_` too, names
//! are not split; they are looked up in a table generated from the
//! [`Config`] tree itself, so a new field is reachable without touching this
//! file. Values follow Centrifugo's conventions:
//!
//! - booleans as Go's `ParseBool` reads them (`1`, `t`, `true`, `0`, `f`,
//!   `false`, in any of its spellings);
//! - lists as space-separated words (`CRIER_CLIENT_ALLOWED_ORIGINS="https://a https://b"`)
//!   or a JSON array;
//! - `CRIER_CHANNEL_NAMESPACES` as a JSON array of namespace objects;
//! - an empty variable counts as unset.
//!
//! This module must never read the process environment itself: the caller
//! hands the variables in.

use serde_json::{Map, Value};

use super::{Config, ConfigError, Warning, WarningKind, ENV_PREFIX};

/// What kind of value a key takes, judged from its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Number,
    String,
    List,
}

/// One reachable key.
#[derive(Debug, Clone)]
struct EnvKey {
    var: String,
    path: Vec<String>,
    kind: Kind,
}

/// Every key reachable from the environment, generated from the defaults.
fn table() -> Vec<EnvKey> {
    fn walk(value: &Value, path: &mut Vec<String>, out: &mut Vec<EnvKey>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    path.push(key.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            leaf => {
                let kind = match leaf {
                    Value::Bool(_) => Kind::Bool,
                    Value::Number(_) => Kind::Number,
                    Value::Array(_) => Kind::List,
                    _ => Kind::String,
                };
                out.push(EnvKey {
                    var: format!("{ENV_PREFIX}{}", path.join("_").to_ascii_uppercase()),
                    path: path.clone(),
                    kind,
                });
            }
        }
    }
    let mut out = Vec::new();
    // The defaults always serialize: the tree holds no maps with non-string
    // keys. Should that ever change, the table is empty and every variable is
    // reported as unknown rather than the process aborting.
    if let Ok(defaults) = serde_json::to_value(Config::default()) {
        walk(&defaults, &mut Vec::new(), &mut out);
    }
    out
}

/// Applies the `CRIER_*` variables among `env` to `config`.
pub(super) fn apply(
    config: Config,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(Config, Vec<Warning>), ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, value)| name.starts_with(ENV_PREFIX) && !value.is_empty())
        .collect();
    if vars.is_empty() {
        return Ok((config, Vec::new()));
    }
    // Deterministic order, so errors and warnings do not depend on how the
    // platform lists its environment.
    vars.sort();

    let table = table();
    let mut tree = serde_json::to_value(&config).map_err(|e| ConfigError::Invalid {
        key: String::new(),
        message: format!("internal: configuration does not serialize: {e}"),
    })?;
    let mut warnings = Vec::new();
    let mut applied: Vec<&EnvKey> = Vec::new();
    for (var, raw) in &vars {
        let Some(key) = table.iter().find(|k| &k.var == var) else {
            warnings.push(Warning {
                kind: WarningKind::UnknownEnvVar,
                key: var.clone(),
                message: "names no configuration key, ignored".to_string(),
            });
            continue;
        };
        let value = convert(raw, key.kind).map_err(|message| ConfigError::Env {
            var: var.clone(),
            key: key.path.join("."),
            message,
        })?;
        set(&mut tree, &key.path, value);
        applied.push(key);
    }

    let config = serde_path_to_error::deserialize(tree).map_err(|err| {
        let path = err.path().to_string();
        let message = err.inner().to_string();
        // The failing key is, or lies inside, one of the keys just set.
        match applied.iter().find(|k| path.starts_with(&k.path.join("."))) {
            Some(k) => ConfigError::Env {
                var: k.var.clone(),
                key: path,
                message,
            },
            None => ConfigError::Invalid { key: path, message },
        }
    })?;
    Ok((config, warnings))
}

fn convert(raw: &str, kind: Kind) -> Result<Value, String> {
    match kind {
        Kind::Bool => parse_bool(raw.trim())
            .map(Value::Bool)
            .ok_or_else(|| format!("{raw:?} is not a boolean; use true/false or 1/0")),
        Kind::Number => {
            let s = raw.trim();
            if let Ok(n) = s.parse::<u64>() {
                Ok(Value::from(n))
            } else if let Ok(n) = s.parse::<i64>() {
                Ok(Value::from(n))
            } else {
                Err(format!("{raw:?} is not a whole number"))
            }
        }
        Kind::String => Ok(Value::String(raw.to_string())),
        Kind::List => {
            let s = raw.trim();
            if s.starts_with('[') {
                serde_json::from_str(s).map_err(|e| format!("not a valid JSON array: {e}"))
            } else {
                Ok(Value::Array(
                    s.split_whitespace()
                        .map(|w| Value::String(w.to_string()))
                        .collect(),
                ))
            }
        }
    }
}

/// Go's `strconv.ParseBool`, which is what Centrifugo accepts.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn set(tree: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = tree;
    for key in parents {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else { return };
        node = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if let Value::Object(map) = node {
        map.insert(last.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_distinct_variable() {
        let table = table();
        for (i, a) in table.iter().enumerate() {
            for b in &table[i + 1..] {
                assert_ne!(a.var, b.var, "{:?} and {:?} collide", a.path, b.path);
            }
        }
        let vars: Vec<&str> = table.iter().map(|k| k.var.as_str()).collect();
        for expected in [
            "CRIER_HTTP_SERVER_PORT",
            "CRIER_CLIENT_TOKEN_HMAC_SECRET_KEY",
            "CRIER_CLIENT_SUBSCRIPTION_TOKEN_HMAC_SECRET_KEY",
            "CRIER_HTTP_API_KEY",
            "CRIER_CLIENT_INSECURE",
            "CRIER_CLIENT_ALLOWED_ORIGINS",
            "CRIER_CHANNEL_WITHOUT_NAMESPACE_ALLOW_SUBSCRIBE_FOR_CLIENT",
            "CRIER_CHANNEL_NAMESPACES",
            "CRIER_ENGINE_TYPE",
            "CRIER_CRIER_DEV",
            "CRIER_SHUTDOWN_TIMEOUT",
        ] {
            assert!(vars.contains(&expected), "{expected} is not reachable");
        }
    }

    #[test]
    fn go_booleans() {
        assert_eq!(parse_bool("1"), Some(true));
        assert_eq!(parse_bool("True"), Some(true));
        assert_eq!(parse_bool("f"), Some(false));
        assert_eq!(parse_bool("yes"), None);
    }
}
