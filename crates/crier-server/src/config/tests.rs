//! Tests of configuration loading as a user meets it: defaults, the three
//! file formats, environment overrides, error positions, warnings and
//! validation. Nothing here touches the process environment.

use super::*;
use std::path::PathBuf;

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A file in a fresh temporary directory, removed with the directory when
/// the guard drops.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(name: &str, content: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "crier-config-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write temp file");
        Self { dir, path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn parse(text: &str, format: Format) -> Result<(Config, Vec<Warning>), ConfigError> {
    Config::parse_str(text, format, "test")
}

const V6_TOML: &str = r#"
[http_server]
address = "0.0.0.0"
port = 9000

[client]
insecure = false
allowed_origins = ["https://example.com", "https://*.example.org"]
ping_interval = "20s"
pong_timeout = "5s"
channel_limit = 64

[client.token]
hmac_secret_key = "secret"
audience = "crier-tests"

[http_api]
key = "api-key"
error_mode = "transport"

[channel.without_namespace]
presence = true
allow_subscribe_for_client = true

[[channel.namespaces]]
name = "chat"
presence = true
join_leave = true
history_size = 100
history_ttl = "300s"
force_recovery = true
allow_publish_for_subscriber = true
allow_history_for_subscriber = true

[[channel.namespaces]]
name = "public_feed"
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true

[engine]
type = "memory"

[crier]
dev = true
"#;

const V6_JSON: &str = r#"{
  "http_server": {"address": "0.0.0.0", "port": 9000},
  "client": {
    "insecure": false,
    "allowed_origins": ["https://example.com", "https://*.example.org"],
    "ping_interval": "20s",
    "pong_timeout": "5s",
    "channel_limit": 64,
    "token": {"hmac_secret_key": "secret", "audience": "crier-tests"}
  },
  "http_api": {"key": "api-key", "error_mode": "transport"},
  "channel": {
    "without_namespace": {"presence": true, "allow_subscribe_for_client": true},
    "namespaces": [
      {
        "name": "chat",
        "presence": true,
        "join_leave": true,
        "history_size": 100,
        "history_ttl": "300s",
        "force_recovery": true,
        "allow_publish_for_subscriber": true,
        "allow_history_for_subscriber": true
      },
      {
        "name": "public_feed",
        "allow_subscribe_for_client": true,
        "allow_subscribe_for_anonymous": true
      }
    ]
  },
  "engine": {"type": "memory"},
  "crier": {"dev": true}
}"#;

const V6_YAML: &str = r#"
http_server:
  address: "0.0.0.0"
  port: 9000
client:
  insecure: false
  allowed_origins:
    - https://example.com
    - https://*.example.org
  ping_interval: 20s
  pong_timeout: 5s
  channel_limit: 64
  token:
    hmac_secret_key: secret
    audience: crier-tests
http_api:
  key: api-key
  error_mode: transport
channel:
  without_namespace:
    presence: true
    allow_subscribe_for_client: true
  namespaces:
    - name: chat
      presence: true
      join_leave: true
      history_size: 100
      history_ttl: 300s
      force_recovery: true
      allow_publish_for_subscriber: true
      allow_history_for_subscriber: true
    - name: public_feed
      allow_subscribe_for_client: true
      allow_subscribe_for_anonymous: true
engine:
  type: memory
crier:
  dev: true
"#;

#[test]
fn defaults_match_centrifugo_where_shared() {
    let c = Config::default();
    assert_eq!(c.http_server.address, "127.0.0.1");
    assert_eq!(c.http_server.port, 8000);
    assert_eq!(c.http_server.listen_addr(), "127.0.0.1:8000");
    assert_eq!(c.client.ping_interval, Duration::from_secs(25));
    assert_eq!(c.client.pong_timeout, Duration::from_secs(8));
    assert_eq!(c.client.channel_limit, 128);
    assert_eq!(c.client.queue_max_size, 1_048_576);
    assert_eq!(c.client.history_max_publication_limit, 300);
    assert_eq!(c.client.recovery_max_publication_limit, 300);
    assert!(!c.client.insecure);
    assert!(c.client.allowed_origins.is_empty());
    assert_eq!(c.http_api.handler_prefix, "/api");
    assert_eq!(c.http_api.error_mode, ApiErrorMode::Default);
    assert_eq!(c.channel.max_length, 255);
    assert_eq!(c.channel.namespace_boundary, ":");
    assert_eq!(c.channel.private_prefix, "$");
    assert_eq!(c.engine.kind, EngineType::Memory);
    assert_eq!(c.websocket.message_size_limit, 65_536);
    assert_eq!(c.websocket.write_timeout, Duration::from_secs(10));
    assert_eq!(c.shutdown.timeout, Duration::from_secs(30));
    assert!(!c.crier.dev);
    assert_eq!(c.crier.client_queue_max_messages, 4096);
}

#[test]
fn no_file_and_empty_files_give_the_defaults() {
    let loaded = Config::load_with_env(None, no_env()).expect("defaults are valid");
    assert_eq!(loaded.config, Config::default());
    for (name, text) in [
        ("a.toml", ""),
        ("a.json", "  \n"),
        ("a.yaml", "\n"),
        ("a.yml", ""),
    ] {
        let file = TempFile::new(name, text);
        let loaded =
            Config::load_with_env(Some(&file.path), no_env()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(loaded.config, Config::default(), "{name}");
    }
    // An empty table / object is the defaults too.
    assert_eq!(parse("{}", Format::Json).unwrap().0, Config::default());
    assert_eq!(parse("{}", Format::Yaml).unwrap().0, Config::default());
}

#[test]
fn toml_json_and_yaml_in_centrifugo_v6_shape_agree() {
    let (toml, tw) = parse(V6_TOML, Format::Toml).expect("toml");
    let (json, jw) = parse(V6_JSON, Format::Json).expect("json");
    let (yaml, yw) = parse(V6_YAML, Format::Yaml).expect("yaml");
    assert_eq!(toml, json);
    assert_eq!(json, yaml);
    assert!(
        tw.is_empty() && jw.is_empty() && yw.is_empty(),
        "{tw:?} {jw:?} {yw:?}"
    );

    let c = toml;
    assert_eq!(c.http_server.listen_addr(), "0.0.0.0:9000");
    assert_eq!(c.client.ping_interval, Duration::from_secs(20));
    assert_eq!(c.client.token.hmac_secret_key.expose(), "secret");
    assert_eq!(c.client.token.audience, "crier-tests");
    assert_eq!(c.http_api.key.expose(), "api-key");
    assert_eq!(c.http_api.error_mode, ApiErrorMode::Transport);
    assert_eq!(c.channel.namespaces.len(), 2);
    let chat = &c.channel.namespaces[0];
    assert_eq!(chat.name, "chat");
    assert_eq!(chat.options.history_ttl, Duration::from_secs(300));
    assert!(chat.options.force_recovery && chat.options.history_enabled());
    assert!(c.crier.dev);
    c.validate().expect("valid");
}

#[test]
fn channel_options_are_found_by_namespace() {
    let (c, _) = parse(V6_TOML, Format::Toml).unwrap();
    let ch = &c.channel;
    assert_eq!(ch.namespace_of("chat:room"), Some("chat"));
    assert_eq!(ch.namespace_of("$chat:room"), Some("chat"));
    assert_eq!(ch.namespace_of("news"), None);
    assert_eq!(ch.namespace_of(":odd"), None);
    assert!(ch.options_for("chat:room").unwrap().join_leave);
    assert!(ch.options_for("$chat:secret").unwrap().join_leave);
    assert!(ch.options_for("news").unwrap().allow_subscribe_for_client);
    assert!(ch.options_for("nope:room").is_none(), "unknown namespace → 102");
    assert!(ch.is_private("$chat:secret"));
    assert!(!ch.is_private("chat:secret"));
}

#[test]
fn environment_overrides_the_file() {
    let file = TempFile::new("crier.toml", V6_TOML);
    let loaded = Config::load_with_env(
        Some(&file.path),
        env(&[
            ("CRIER_HTTP_SERVER_PORT", "9100"),
            ("CRIER_CLIENT_TOKEN_HMAC_SECRET_KEY", "from-env"),
            ("CRIER_HTTP_API_KEY", "env-api-key"),
            ("CRIER_CLIENT_INSECURE", "true"),
            ("CRIER_CLIENT_ALLOWED_ORIGINS", "https://a.test https://b.test"),
            ("CRIER_CLIENT_PING_INTERVAL", "30s"),
            ("CRIER_CHANNEL_WITHOUT_NAMESPACE_HISTORY_SIZE", "10"),
            ("CRIER_CHANNEL_WITHOUT_NAMESPACE_HISTORY_TTL", "60"),
            (
                "CRIER_CHANNEL_NAMESPACES",
                r#"[{"name": "ops", "presence": true}]"#,
            ),
            ("CRIER_ENGINE_TYPE", "memory"),
            ("CRIER_CRIER_CLIENT_QUEUE_MAX_MESSAGES", "10"),
            // Empty means unset, as in Centrifugo.
            ("CRIER_HTTP_SERVER_ADDRESS", ""),
            ("UNRELATED", "x"),
        ]),
    )
    .expect("loads");
    let c = &loaded.config;
    assert_eq!(c.http_server.port, 9100);
    assert_eq!(c.http_server.address, "0.0.0.0", "empty variable ignored");
    assert_eq!(c.client.token.hmac_secret_key.expose(), "from-env");
    assert_eq!(
        c.client.token.audience, "crier-tests",
        "untouched keys keep file values"
    );
    assert_eq!(c.http_api.key.expose(), "env-api-key");
    assert!(c.client.insecure);
    assert_eq!(c.client.allowed_origins, ["https://a.test", "https://b.test"]);
    assert_eq!(c.client.ping_interval, Duration::from_secs(30));
    assert_eq!(c.channel.without_namespace.history_size, 10);
    assert_eq!(c.channel.without_namespace.history_ttl, Duration::from_secs(60));
    assert_eq!(c.channel.namespaces.len(), 1);
    assert_eq!(c.channel.namespaces[0].name, "ops");
    assert!(c.channel.namespaces[0].options.presence);
    assert_eq!(c.crier.client_queue_max_messages, 10);
}

#[test]
fn unknown_and_bad_environment_variables() {
    let loaded = Config::load_with_env(None, env(&[("CRIER_NO_SUCH_KEY", "1")])).unwrap();
    let unknown: Vec<_> = loaded
        .warnings
        .iter()
        .filter(|w| w.kind == WarningKind::UnknownEnvVar)
        .collect();
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0].key, "CRIER_NO_SUCH_KEY");

    let err = Config::load_with_env(None, env(&[("CRIER_CLIENT_INSECURE", "yes")])).unwrap_err();
    match &err {
        ConfigError::Env { var, key, .. } => {
            assert_eq!(var, "CRIER_CLIENT_INSECURE");
            assert_eq!(key, "client.insecure");
        }
        other => panic!("unexpected {other:?}"),
    }

    let err = Config::load_with_env(None, env(&[("CRIER_CLIENT_PING_INTERVAL", "soon")])).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Env { var, key, .. }
            if var == "CRIER_CLIENT_PING_INTERVAL" && key == "client.ping_interval"),
        "{err}"
    );

    let err = Config::load_with_env(
        None,
        env(&[(
            "CRIER_CHANNEL_NAMESPACES",
            r#"[{"name": "x1", "history_ttl": "bad"}]"#,
        )]),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::Env { var, key, .. }
            if var == "CRIER_CHANNEL_NAMESPACES" && key == "channel.namespaces[0].history_ttl"),
        "{err}"
    );
}

fn parse_error(text: &str, format: Format) -> (String, Option<usize>, String) {
    match parse(text, format) {
        Err(ConfigError::Parse {
            key, line, message, ..
        }) => (key, line, message),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn a_bad_value_is_reported_with_its_key_and_line() {
    let toml = "[client]\nping_interval = \"25s\"\npong_timeout = \"8 sec\"\n";
    let (key, line, message) = parse_error(toml, Format::Toml);
    assert_eq!(key, "client.pong_timeout");
    assert_eq!(line, Some(3));
    assert!(message.contains("8 sec"), "{message}");

    let json = "{\n  \"client\": {\n    \"ping_interval\": \"25s\",\n    \"pong_timeout\": \"8 sec\"\n  }\n}";
    let (key, line, _) = parse_error(json, Format::Json);
    assert_eq!(key, "client.pong_timeout");
    assert_eq!(line, Some(4));

    let yaml = "client:\n  ping_interval: 25s\n  pong_timeout: 8 sec\n";
    let (key, line, _) = parse_error(yaml, Format::Yaml);
    assert_eq!(key, "client.pong_timeout");
    assert_eq!(line, Some(3));
}

#[test]
fn errors_inside_namespaces_name_the_entry() {
    let toml = "[[channel.namespaces]]\nname = \"a1\"\n\n[[channel.namespaces]]\nname = \"b2\"\nhistory_size = \"many\"\n";
    let (key, line, _) = parse_error(toml, Format::Toml);
    assert_eq!(key, "channel.namespaces[1].history_size");
    assert_eq!(line, Some(6));

    let yaml = "channel:\n  namespaces:\n    - name: a1\n    - name: b2\n      presence: maybe\n";
    let (key, line, _) = parse_error(yaml, Format::Yaml);
    assert_eq!(key, "channel.namespaces[1].presence");
    assert_eq!(line, Some(5));

    let (key, _, message) = parse_error("[http_server]\nport = 70000\n", Format::Toml);
    assert_eq!(key, "http_server.port");
    assert!(!message.is_empty());

    let (key, _, message) = parse_error("[engine]\ntype = \"tarantool\"\n", Format::Toml);
    assert_eq!(key, "engine.type");
    assert!(message.contains("tarantool"), "{message}");
}

#[test]
fn syntax_errors_carry_a_position() {
    let err = parse(
        "{\n  \"client\": {\n    \"insecure\": true,\n  }\n}",
        Format::Json,
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::Parse { line: Some(4), .. }), "{err}");
    let err = parse("[client\ninsecure = true\n", Format::Toml).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { line: Some(1), .. }), "{err}");
    let err = parse("client:\n  insecure: [\n", Format::Yaml).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { line: Some(_), .. }), "{err}");
}

#[test]
fn error_messages_read_file_line_key() {
    let err = Config::parse_str("[client]\nchannel_limit = \"x\"\n", Format::Toml, "crier.toml").unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("crier.toml:2:"), "{text}");
    assert!(text.contains("client.channel_limit: "), "{text}");
}

#[test]
fn unknown_keys_are_warnings_not_errors() {
    // A Centrifugo v6 file using features crier does not implement.
    let json = r#"{
      "graphite": {"enabled": true},
      "client": {
        "connect_proxy_name": "app",
        "token": {"hmac_secret_key": "s", "jwks_public_endpoint": "https://x/jwks"}
      },
      "channel": {"namespaces": [{"name": "dm", "allow_user_limited_channels": true}]},
      "swagger": {"enabled": true}
    }"#;
    let (config, warnings) = parse(json, Format::Json).expect("unknown keys do not fail");
    assert_eq!(config.client.token.hmac_secret_key.expose(), "s");
    assert_eq!(config.channel.namespaces[0].name, "dm");
    let keys: Vec<&str> = warnings.iter().map(|w| w.key.as_str()).collect();
    for expected in [
        "graphite",
        "client.connect_proxy_name",
        "client.token.jwks_public_endpoint",
        "channel.namespaces[0].allow_user_limited_channels",
        "swagger",
    ] {
        assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
    }
    assert!(warnings.iter().all(|w| w.kind == WarningKind::UnknownKey));

    let (_, warnings) = parse("[client]\ntypo_key = 1\n", Format::Toml).unwrap();
    assert_eq!(warnings[0].key, "client.typo_key");
    let (_, warnings) = parse("http_api:\n  nope: true\n", Format::Yaml).unwrap();
    assert_eq!(warnings[0].key, "http_api.nope");
}

fn invalid_key(result: Result<Vec<Warning>, ConfigError>) -> (String, String) {
    match result {
        Err(ConfigError::Invalid { key, message }) => (key, message),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn invalid_namespace_names_are_rejected() {
    for bad in ["a", "with space", "dots.not.allowed", "col:on", ""] {
        let mut c = Config::default();
        c.channel.namespaces.push(Namespace {
            name: bad.to_string(),
            options: ChannelOptions::default(),
        });
        let (key, message) = invalid_key(c.validate());
        assert_eq!(key, "channel.namespaces[0].name", "{bad:?}");
        assert!(message.contains("^[-a-zA-Z0-9_]{2,}$"), "{message}");
    }
    let mut c = Config::default();
    for name in ["ok-1", "ok_2", "ok-1"] {
        c.channel.namespaces.push(Namespace {
            name: name.to_string(),
            options: ChannelOptions::default(),
        });
    }
    let (key, message) = invalid_key(c.validate());
    assert_eq!(key, "channel.namespaces[2].name");
    assert!(message.contains("unique"), "{message}");
}

#[test]
fn history_options_must_be_consistent() {
    let mut c = Config::default();
    c.channel.without_namespace.history_size = 10;
    let (key, message) = invalid_key(c.validate());
    assert_eq!(key, "channel.without_namespace");
    assert!(message.contains("history_ttl"), "{message}");

    let mut c = Config::default();
    c.channel.without_namespace.force_recovery = true;
    assert_eq!(
        invalid_key(c.validate()).0,
        "channel.without_namespace.force_recovery"
    );

    let mut c = Config::default();
    c.channel.without_namespace.history_size = 10;
    c.channel.without_namespace.history_ttl = Duration::from_millis(1500);
    assert_eq!(
        invalid_key(c.validate()).0,
        "channel.without_namespace.history_ttl"
    );
}

#[cfg(feature = "redis")]
#[test]
fn the_redis_engine_is_configured_and_checked() {
    let (c, _) = parse(
        "[engine]\ntype = \"redis\"\n[engine.redis]\naddress = \"127.0.0.1:7000, 127.0.0.1:7001\"\nprefix = \"app\"\npresence_ttl = \"10s\"\n",
        Format::Toml,
    )
    .expect("parses");
    assert_eq!(c.engine.kind, EngineType::Redis);
    assert_eq!(c.engine.redis.address, vec!["127.0.0.1:7000", "127.0.0.1:7001"]);
    assert_eq!(c.engine.redis.presence_ttl, Duration::from_secs(10));
    assert!(c.validate().is_ok());
    let (c, _) = parse(
        r#"{"engine": {"type": "redis", "redis": {"address": ["redis://a:1", "redis://b:2"]}}}"#,
        Format::Json,
    )
    .expect("parses");
    assert_eq!(c.engine.redis.address.len(), 2);
    assert_eq!(c.engine.redis.prefix, "crier");
    for (toml, key) in [
        ("address = []", "engine.redis.address"),
        ("prefix = \"a{b}\"", "engine.redis.prefix"),
        ("presence_ttl = \"100ms\"", "engine.redis.presence_ttl"),
    ] {
        let (c, _) = parse(
            &format!("[engine]\ntype = \"redis\"\n[engine.redis]\n{toml}\n"),
            Format::Toml,
        )
        .expect("parses");
        assert_eq!(invalid_key(c.validate()).0, key, "{toml}");
    }
}

#[cfg(feature = "nats")]
#[test]
fn the_nats_engine_is_configured_and_checked() {
    let (c, _) = parse(
        "engine:\n  type: nats\n  nats:\n    address: nats://a:4222, nats://b:4222\n    presence_ttl: 5s\n    replicas: 3\n",
        Format::Yaml,
    )
    .expect("parses");
    assert_eq!(c.engine.kind, EngineType::Nats);
    assert_eq!(c.engine.nats.address, vec!["nats://a:4222", "nats://b:4222"]);
    assert_eq!(c.engine.nats.presence_ttl, Duration::from_secs(5));
    assert_eq!(c.engine.nats.replicas, 3);
    assert_eq!(c.engine.nats.prefix, "crier");
    assert!(c.validate().is_ok());
    for (toml, key) in [
        ("address = []", "engine.nats.address"),
        ("prefix = \"a.b\"", "engine.nats.prefix"),
        ("prefix = \"\"", "engine.nats.prefix"),
        ("presence_ttl = \"100ms\"", "engine.nats.presence_ttl"),
        ("io_timeout = \"0s\"", "engine.nats.io_timeout"),
        ("replicas = 0", "engine.nats.replicas"),
    ] {
        let (c, _) = parse(
            &format!("[engine]\ntype = \"nats\"\n[engine.nats]\n{toml}\n"),
            Format::Toml,
        )
        .expect("parses");
        assert_eq!(invalid_key(c.validate()).0, key, "{toml}");
    }
    let loaded = Config::load_with_env(
        None,
        env(&[
            ("CRIER_ENGINE_TYPE", "nats"),
            ("CRIER_ENGINE_NATS_ADDRESS", "nats://x:1 nats://y:2"),
            ("CRIER_ENGINE_NATS_PRESENCE_TTL", "9s"),
        ]),
    )
    .expect("env config");
    assert_eq!(loaded.config.engine.kind, EngineType::Nats);
    assert_eq!(
        loaded.config.engine.nats.address,
        vec!["nats://x:1", "nats://y:2"]
    );
    assert_eq!(loaded.config.engine.nats.presence_ttl, Duration::from_secs(9));
}

#[cfg(not(feature = "nats"))]
#[test]
fn the_nats_engine_needs_its_feature() {
    let (c, _) = parse("engine:\n  type: nats\n", Format::Yaml).expect("parses");
    let (key, message) = invalid_key(c.validate());
    assert_eq!(key, "engine.type");
    assert!(
        message.contains("without the \"nats\" cargo feature"),
        "{message}"
    );
}

#[test]
fn pong_timeout_must_be_shorter_than_ping_interval() {
    let mut c = Config::default();
    c.client.pong_timeout = Duration::from_secs(30);
    assert_eq!(invalid_key(c.validate()).0, "client.pong_timeout");
}

#[test]
fn durations_accept_plain_seconds_leniently() {
    let (c, _) = parse("[client]\nping_interval = 40\n", Format::Toml).unwrap();
    assert_eq!(c.client.ping_interval, Duration::from_secs(40));
    let (c, _) = parse("{\"shutdown\": {\"timeout\": \"1m30s\"}}", Format::Json).unwrap();
    assert_eq!(c.shutdown.timeout, Duration::from_secs(90));
}

#[test]
fn advice_for_configs_that_cannot_work() {
    let warnings = Config::default().validate().unwrap();
    let keys: Vec<&str> = warnings.iter().map(|w| w.key.as_str()).collect();
    assert!(keys.contains(&"client.token"), "{keys:?}");
    assert!(keys.contains(&"http_api.key"), "{keys:?}");
    assert!(warnings.iter().all(|w| w.kind == WarningKind::Advice));
}

#[test]
fn secrets_are_not_printed_by_debug() {
    let (c, _) = parse(V6_TOML, Format::Toml).unwrap();
    let printed = format!("{c:?}");
    assert!(!printed.contains("api-key"), "{printed}");
    assert!(!printed.contains("\"secret\""), "{printed}");
    assert!(printed.contains("<redacted>"));
}

#[test]
fn the_file_extension_picks_the_format() {
    assert_eq!(Format::from_path(Path::new("a.TOML")), Some(Format::Toml));
    assert_eq!(Format::from_path(Path::new("a.yml")), Some(Format::Yaml));
    assert_eq!(Format::from_path(Path::new("a.ini")), None);
    let file = TempFile::new("crier.ini", "x=1");
    assert!(matches!(
        Config::load_with_env(Some(&file.path), no_env()),
        Err(ConfigError::UnknownFormat { .. })
    ));
    let missing = PathBuf::from("/definitely/not/here/crier.toml");
    assert!(matches!(
        Config::load_with_env(Some(&missing), no_env()),
        Err(ConfigError::Io { .. })
    ));
}

#[test]
fn listen_addr_handles_all_interfaces_and_ipv6() {
    let mut s = HttpServerConfig {
        address: String::new(),
        ..Default::default()
    };
    assert_eq!(s.listen_addr(), "0.0.0.0:8000");
    s.address = "::1".to_string();
    assert_eq!(s.listen_addr(), "[::1]:8000");
}

#[test]
fn subscription_tokens_use_connection_keys_unless_enabled() {
    let mut c = ClientConfig::default();
    c.token.hmac_secret_key = Secret::new("conn");
    c.subscription_token.hmac_secret_key = Secret::new("sub");
    assert_eq!(c.effective_subscription_token().hmac_secret_key.expose(), "conn");
    c.subscription_token.enabled = true;
    assert_eq!(c.effective_subscription_token().hmac_secret_key.expose(), "sub");
}

#[test]
fn zero_stale_close_delay_is_rejected() {
    let mut c = Config::default();
    c.client.stale_close_delay = Duration::ZERO;
    let (key, message) = invalid_key(c.validate());
    assert_eq!(key, "client.stale_close_delay");
    assert!(message.contains("greater than 0"), "{message}");
}

#[test]
fn zero_websocket_write_timeout_is_rejected() {
    let mut c = Config::default();
    c.websocket.write_timeout = Duration::ZERO;
    let (key, message) = invalid_key(c.validate());
    assert_eq!(key, "websocket.write_timeout");
    assert!(message.contains("greater than 0"), "{message}");
}

#[test]
fn zero_http_write_timeout_is_rejected() {
    let mut c = Config::default();
    c.http_server.write_timeout = Duration::ZERO;
    let (key, message) = invalid_key(c.validate());
    assert_eq!(key, "http_server.write_timeout");
    assert!(message.contains("greater than 0"), "{message}");
}

#[test]
fn compression_levels_outside_1_to_9_are_rejected() {
    for level in [0, 10] {
        let mut c = Config::default();
        c.websocket.compression_level = level;
        let (key, message) = invalid_key(c.validate());
        assert_eq!(key, "websocket.compression_level", "level {level}");
        assert!(message.contains("1 (fastest) to 9"), "{message}");
    }
    let mut c = Config::default();
    c.websocket.compression_level = 9;
    assert!(c.validate().is_ok());
}

#[test]
fn log_level_file_and_format_are_read_and_a_bad_level_names_the_key() {
    let (config, warnings) = parse(
        "[log]\nlevel = \"warn\"\nfile = \"/var/log/crier.log\"\n[crier]\nlog_format = \"json\"\n",
        Format::Toml,
    )
    .expect("parses");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.log.level, LogLevel::Warn);
    assert_eq!(config.log.file, "/var/log/crier.log");
    assert_eq!(config.crier.log_format, LogFormat::Json);
    assert_eq!(Config::default().log.level, LogLevel::Info);
    assert_eq!(Config::default().crier.log_format, LogFormat::Text);
    for level in ["none", "trace", "debug", "info", "warn", "error"] {
        let (config, _) = parse(&format!("log:\n  level: {level}\n"), Format::Yaml).expect(level);
        assert_eq!(config.log.level.as_str(), level);
    }

    let (key, line, message) = parse_error("[log]\nlevel = \"verbose\"\n", Format::Toml);
    assert_eq!(key, "log.level");
    assert_eq!(line, Some(2));
    assert!(
        message.contains("verbose") && message.contains("warn"),
        "{message}"
    );
    let (key, _, _) = parse_error("[crier]\nlog_format = \"xml\"\n", Format::Toml);
    assert_eq!(key, "crier.log_format");

    let loaded = Config::load_with_env(
        None,
        env(&[("CRIER_LOG_LEVEL", "debug"), ("CRIER_CRIER_LOG_FORMAT", "json")]),
    )
    .expect("loads");
    assert_eq!(loaded.config.log.level, LogLevel::Debug);
    assert_eq!(loaded.config.crier.log_format, LogFormat::Json);
    let err = Config::load_with_env(None, env(&[("CRIER_LOG_LEVEL", "loud")])).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Env { key, .. } if key == "log.level"),
        "{err}"
    );

    // Centrifugo v5's flat keys point at their v6 names.
    let (_, warnings) = parse(
        "{\"log_level\": \"debug\", \"log_file\": \"x.log\"}",
        Format::Json,
    )
    .unwrap();
    let hints: Vec<&str> = warnings.iter().map(|w| w.message.as_str()).collect();
    assert!(hints.iter().any(|m| m.contains("`log.level`")), "{hints:?}");
    assert!(hints.iter().any(|m| m.contains("`log.file`")), "{hints:?}");
}
