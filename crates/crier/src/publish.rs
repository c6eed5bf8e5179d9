//! `crier publish`: one call to the server HTTP API's `publish` method.
//!
//! DATA travels byte for byte when it is JSON (key order, number precision),
//! which is why it is checked as a `RawValue` rather than parsed into a
//! `Value`. Plain HTTP only: ureq is built without TLS.

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::print_line;

/// Publish DATA into CHANNEL through the server HTTP API.
///
/// DATA is sent as is when it is valid JSON: '{"text":"hi"}', 42, true,
/// '"hi"'. Other text is published as a JSON string, so
/// `crier publish news hello` sends "hello"; but text that starts like JSON
/// (`{`, `[` or `"`) and is not valid JSON is refused, since it is most
/// likely a typo: --string sends any DATA as a JSON string. Prints the
/// result ({"offset":N,"epoch":"..."}; `{}` for a channel without history)
/// on success; exits 1 on an API error.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The channel to publish into.
    channel: String,
    /// The publication data: JSON, or any other text to send as a JSON string.
    data: String,
    /// The server's base URL; the request goes to <URL>/api/publish.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Send DATA as a JSON string whatever it looks like.
    #[arg(long)]
    string: bool,
    /// The server API key (http_api.key), sent as X-API-Key.
    #[arg(long, value_name = "K", env = "CRIER_HTTP_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let body = request_body(&args.channel, &args.data, args.string)?;
    let endpoint = format!("{}/api/publish", base_url(&args.url)?);

    let agent: ureq::Agent = ureq::Agent::config_builder()
        // Read error bodies too: with http_api.error_mode = "transport" the
        // API error arrives with a 4xx/5xx status.
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut request = agent.post(&endpoint).header("Content-Type", "application/json");
    if let Some(key) = args.api_key.as_deref().filter(|k| !k.is_empty()) {
        request = request.header("X-API-Key", key);
    }
    let mut response = request.send(&body).map_err(|e| unreachable_error(&endpoint, e))?;
    let status = response.status();
    let text = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("cannot read the response from {endpoint}"))?;

    let reply: Option<Value> = serde_json::from_str(&text).ok();
    if let Some(error) = reply.as_ref().and_then(|r| r.get("error")) {
        let code = error.get("code").and_then(Value::as_u64).unwrap_or(0);
        let message = error.get("message").and_then(Value::as_str).unwrap_or("");
        bail!("publish refused: API error {code}: {message}");
    }
    if !status.is_success() {
        let hint = if status.as_u16() == 401 {
            " (give the server's http_api.key with --api-key or CRIER_HTTP_API_KEY)"
        } else if status.as_u16() == 404 {
            " (is the URL right, and the HTTP API enabled at /api?)"
        } else {
            ""
        };
        bail!(
            "publish failed: HTTP {status} from {endpoint}{hint}: {}",
            text.trim()
        );
    }
    match reply.as_ref().and_then(|r| r.get("result")) {
        Some(result) => print_line(&result.to_string())?,
        None => bail!("unexpected reply from {endpoint}: {}", text.trim()),
    }
    Ok(())
}

/// The server's base URL without a trailing `/`; `HOST:PORT` alone means
/// `http://HOST:PORT`.
fn base_url(url: &str) -> anyhow::Result<String> {
    let url = url.trim().trim_end_matches('/');
    if url.starts_with("https://") {
        bail!(
            "{url}: this crier build speaks plain http only; use http:// (or a local TLS-terminating proxy)"
        );
    }
    Ok(if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    })
}

/// `{"channel":C,"data":D}` with D verbatim when it is JSON, else D as a
/// JSON string (always, with `as_string`); text that starts like JSON but
/// is not is refused.
fn request_body(channel: &str, data: &str, as_string: bool) -> anyhow::Result<String> {
    let channel = serde_json::to_string(channel).context("cannot encode the channel name")?;
    let string = || serde_json::to_string(data).context("cannot encode DATA as a JSON string");
    let data = match serde_json::from_str::<&RawValue>(data) {
        _ if as_string => string()?,
        Ok(raw) => raw.get().to_owned(),
        Err(e) if data.trim_start().starts_with(['{', '[', '"']) => {
            bail!(
                "DATA looks like JSON but is not ({e}); fix it, or pass --string to send it as a JSON string"
            )
        }
        Err(_) => string()?,
    };
    Ok(format!("{{\"channel\":{channel},\"data\":{data}}}"))
}

fn unreachable_error(endpoint: &str, e: ureq::Error) -> anyhow::Error {
    let hint = match &e {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            " (connection refused: is `crier serve` running there?)"
        }
        ureq::Error::HostNotFound => " (host not found)",
        ureq::Error::Timeout(_) => " (timed out)",
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => " (write the URL as http://HOST:PORT)",
        _ => "",
    };
    anyhow::Error::new(e).context(format!("cannot reach crier at {endpoint}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_forms() {
        assert_eq!(
            base_url("http://127.0.0.1:8000/").unwrap(),
            "http://127.0.0.1:8000"
        );
        assert_eq!(base_url("localhost:9000").unwrap(), "http://localhost:9000");
        assert!(base_url("https://example.com").is_err());
    }

    #[test]
    fn json_data_travels_verbatim() {
        assert_eq!(
            request_body("news", r#"{"z":1,"a":12345678901234567890123}"#, false).unwrap(),
            r#"{"channel":"news","data":{"z":1,"a":12345678901234567890123}}"#
        );
        assert_eq!(
            request_body("n", "42", false).unwrap(),
            r#"{"channel":"n","data":42}"#
        );
    }

    #[test]
    fn malformed_json_is_refused_unless_sent_as_a_string() {
        let err = request_body("news", r#"{"text":"hi""#, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--string"), "{err}");
        assert!(request_body("news", "[1,", false).is_err());
        assert_eq!(
            request_body("news", r#"{"text":"hi""#, true).unwrap(),
            r#"{"channel":"news","data":"{\"text\":\"hi\""}"#
        );
        assert_eq!(
            request_body("n", "42", true).unwrap(),
            r#"{"channel":"n","data":"42"}"#
        );
    }

    #[test]
    fn other_text_becomes_a_json_string() {
        assert_eq!(
            request_body("news", "hello", false).unwrap(),
            r#"{"channel":"news","data":"hello"}"#
        );
        assert_eq!(
            request_body("a\"b", "say \"hi\"", false).unwrap(),
            r#"{"channel":"a\"b","data":"say \"hi\""}"#
        );
    }
}
