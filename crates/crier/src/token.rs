//! `crier token`: sign an HS256 connection or subscription token with the
//! configured `hmac_secret_key`, for trying crier out and for scripts.
//!
//! Claims come from `crier_server::auth::TokenBuilder`; this module only
//! picks the key set the server will verify with and turns `--ttl` into `exp`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use crier_server::auth::TokenBuilder;
use crier_server::config::Config;

use crate::print_line;

/// Print an HS256 token signed with client.token.hmac_secret_key.
///
/// The key comes from the config file and/or the
/// CRIER_CLIENT_TOKEN_HMAC_SECRET_KEY environment variable. With --channel
/// the token is a subscription token for that channel (signed with
/// client.subscription_token.hmac_secret_key when
/// client.subscription_token.enabled is on). The configured audience and
/// issuer, if any, are put in the token.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The user id (`sub` claim).
    #[arg(long, value_name = "U")]
    user: String,
    /// Make a subscription token for this channel (`channel` claim).
    #[arg(long, value_name = "C")]
    channel: Option<String>,
    /// Lifetime: 30s, 15m, 1h, 2d; 0 = never expires.
    #[arg(long, value_name = "TTL", default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    /// Configuration file to read the key from.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Sign with this HMAC key instead of the configured one (for a quick
    /// trial without a config file: the server must be given the same key,
    /// e.g. CRIER_CLIENT_TOKEN_HMAC_SECRET_KEY).
    #[arg(long, value_name = "KEY", env = "CRIER_TOKEN_SECRET", hide_env_values = true)]
    secret: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())
        .context("cannot load the configuration")?
        .config;
    let (keys, section) = match args.channel {
        Some(_) if config.client.subscription_token.enabled => (
            config.client.subscription_token.as_token_config(),
            "client.subscription_token",
        ),
        _ => (config.client.token.clone(), "client.token"),
    };
    let mut keys = keys;
    if let Some(secret) = args.secret.as_deref().filter(|s| !s.is_empty()) {
        keys.hmac_secret_key = crier_server::config::Secret::new(secret);
    }
    if keys.hmac_secret_key.is_empty() {
        let var = format!(
            "CRIER_{}_HMAC_SECRET_KEY",
            section.replace('.', "_").to_uppercase()
        );
        bail!(
            "no {section}.hmac_secret_key is configured, so there is nothing to sign with; \
             give it with --secret KEY, set it in a config file (--config FILE), \
             or in the {var} environment variable"
        );
    }

    let mut token = TokenBuilder::new().user(&args.user);
    if !args.ttl.is_zero() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the system clock is before 1970")?;
        let exp = now
            .checked_add(args.ttl)
            .and_then(|t| i64::try_from(t.as_secs()).ok())
            .context("--ttl is too large")?;
        token = token.exp(exp);
    }
    if let Some(channel) = &args.channel {
        token = token.channel(channel);
    }
    if !keys.audience.is_empty() {
        token = token.aud(&keys.audience);
    }
    if !keys.issuer.is_empty() {
        token = token.iss(&keys.issuer);
    }
    print_line(&token.sign_hs256(keys.hmac_secret_key.expose()))?;
    Ok(())
}

/// Parses `30s`, `15m`, `1h`, `2d` (one number, one unit) or `0`.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "invalid TTL {s:?}: write e.g. 30s, 15m, 1h or 2d (0 = no expiry)"
            ))
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid TTL {s:?}: write e.g. 30s, 15m, 1h or 2d (0 = no expiry)"))?;
    n.checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("TTL {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_ttl("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_ttl("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn ttl_refuses_what_it_cannot_read() {
        for bad in [
            "",
            "h",
            "10",
            "1.5h",
            "-1h",
            "1h30m",
            "3w",
            "99999999999999999999d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
