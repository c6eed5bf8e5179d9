//! The `crier` binary as a user runs it: real processes, real sockets on
//! port 0. Every wait is on an output line or an exit, with a deadline that
//! fails loudly and shows what the process printed; no sleeps.
//!
//! Every child is owned by a [`Running`] guard that kills it on drop, so a
//! failing assertion never leaves a server behind.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crier_server::auth::TokenVerifier;
use crier_server::config::{Config, Secret};
use serde_json::{json, Value};

/// How long any single wait may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// A line of output, or the end of one stream.
enum Event {
    Line(Stream, String),
    Closed(Stream),
}

/// A `crier` child process and everything it has printed so far.
struct Running {
    /// What the test called it, for failure messages.
    name: String,
    /// The process; killed and reaped on drop.
    child: Child,
    /// Lines from both pipes, as they come.
    events: Receiver<Event>,
    /// Every line received so far, shown when a wait fails.
    seen: Vec<(Stream, String)>,
    /// Per stream (stdout, stderr), how much of `seen` earlier waits on
    /// that stream have looked at: each line matches at most one wait.
    looked: [usize; 2],
    /// Streams that reached end of file.
    closed: Vec<Stream>,
}

/// A `crier` command with a predictable environment: no `CRIER_*`
/// variables or `RUST_LOG` from the shell running the tests.
fn crier(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crier"));
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("CRIER_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    command.envs(env.iter().copied());
    command
}

impl Running {
    fn spawn(name: &str, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut child = crier(args, env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (tx, events) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        forward(stdout, Stream::Stdout, tx.clone());
        forward(stderr, Stream::Stderr, tx);
        Running {
            name: name.to_string(),
            child,
            events,
            seen: Vec::new(),
            looked: [0, 0],
            closed: Vec::new(),
        }
    }

    fn next_event(&mut self, deadline: Instant, waiting_for: &str) -> Option<Event> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.events.recv_timeout(left) {
            Ok(event) => Some(event),
            Err(RecvTimeoutError::Timeout) => self.fail(&format!("timed out waiting for {waiting_for}")),
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Waits for a line on `stream`, after the one an earlier wait on it
    /// returned, that satisfies `wanted`, and returns it.
    fn wait_for(&mut self, stream: Stream, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let cursor = stream as usize;
        while self.looked[cursor] < self.seen.len() {
            let (s, line) = &self.seen[self.looked[cursor]];
            self.looked[cursor] += 1;
            if *s == stream && wanted(line) {
                return line.clone();
            }
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.next_event(deadline, what) {
                Some(Event::Line(s, line)) => {
                    self.seen.push((s, line.clone()));
                    if s == stream {
                        self.looked[cursor] = self.seen.len();
                        if wanted(&line) {
                            return line;
                        }
                    }
                }
                Some(Event::Closed(s)) => {
                    self.closed.push(s);
                    if s == stream {
                        self.fail(&format!("{stream:?} closed while waiting for {what}"));
                    }
                }
                None => self.fail(&format!("output ended while waiting for {what}")),
            }
        }
    }

    /// Waits until the process has closed both pipes and exited.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        while self.closed.len() < 2 {
            match self.next_event(deadline, "the process to exit") {
                Some(Event::Line(s, line)) => self.seen.push((s, line)),
                Some(Event::Closed(s)) => self.closed.push(s),
                None => break,
            }
        }
        // Both pipes are closed, so the process is exiting; reaping is quick.
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => thread::yield_now(),
                Ok(None) => self.fail("timed out waiting for the process to exit"),
                Err(e) => self.fail(&format!("cannot wait for the process: {e}")),
            }
        }
    }

    /// Everything printed on `stream` so far.
    fn output(&self, stream: Stream) -> String {
        let lines: Vec<&str> = self
            .seen
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, l)| l.as_str())
            .collect();
        lines.join("\n")
    }

    fn fail(&self, why: &str) -> ! {
        let mut transcript = String::new();
        for (stream, line) in &self.seen {
            transcript.push_str(&format!("  [{stream:?}] {line}\n"));
        }
        panic!("{}: {why}; it printed:\n{transcript}", self.name);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Only this child, by its handle; it may have exited already.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forward(pipe: impl Read + Send + 'static, stream: Stream, tx: mpsc::Sender<Event>) {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(Event::Line(stream, line)).is_err() {
                return;
            }
        }
        let _ = tx.send(Event::Closed(stream));
    });
}

/// Runs a short-lived command to completion: (status, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let mut running = Running::spawn(&format!("crier {}", args.join(" ")), args, env);
    let status = running.wait_exit();
    (
        status,
        running.output(Stream::Stdout),
        running.output(Stream::Stderr),
    )
}

/// A running `crier serve` and the URLs it printed.
struct Served {
    process: Running,
    /// `http://127.0.0.1:PORT`, for `crier publish --url`.
    http: String,
    /// `ws://127.0.0.1:PORT/connection/websocket`, for `crier subscribe --url`.
    websocket: String,
}

fn serve(args: &[&str], env: &[(&str, &str)]) -> Served {
    let mut all = vec!["serve", "--port", "0"];
    all.extend_from_slice(args);
    let mut process = Running::spawn("crier serve", &all, env);
    let listening = process.wait_for(Stream::Stdout, "the listening line", |l| {
        l.starts_with("crier listening on ")
    });
    let http = listening["crier listening on ".len()..].to_string();
    assert!(
        http.starts_with("http://127.0.0.1:") && !http.ends_with(":0"),
        "serve must print the address it actually bound, got {listening:?}"
    );
    let websocket = process.wait_for(Stream::Stdout, "the WebSocket line", |l| {
        l.trim_start().starts_with("WebSocket:")
    });
    let websocket = websocket.trim_start()["WebSocket:".len()..].trim().to_string();
    assert_eq!(
        websocket,
        format!("ws://{}/connection/websocket", &http["http://".len()..])
    );
    Served {
        process,
        http,
        websocket,
    }
}

fn subscribe(served: &Served, channel: &str, extra: &[&str]) -> Running {
    let mut args = vec!["subscribe", channel, "--url", served.websocket.as_str()];
    args.extend_from_slice(extra);
    Running::spawn(&format!("crier subscribe {channel}"), &args, &[])
}

fn json_line(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON value per line ({e}): {line:?}"))
}

#[test]
fn dev_server_publish_reaches_subscriber_in_order() {
    let mut served = serve(&["--dev"], &[]);
    let dev_warning = served
        .process
        .wait_for(Stream::Stderr, "the --dev warning", |l| l.contains("INSECURE"));
    assert!(dev_warning.contains("DEVELOPMENT mode"), "{dev_warning}");

    let mut subscriber = subscribe(&served, "news", &[]);
    subscriber.wait_for(Stream::Stderr, "the subscribe confirmation", |l| {
        l == "subscribed to news"
    });

    let (status, stdout, stderr) = run(
        &["publish", "news", r#"{"text":"hi"}"#, "--url", &served.http],
        &[],
    );
    assert!(status.success(), "publish failed: {stderr}");
    assert!(
        json_line(&stdout).is_object(),
        "publish prints the result object: {stdout:?}"
    );
    let line = subscriber.wait_for(Stream::Stdout, "the first publication", |_| true);
    assert_eq!(
        json_line(&line),
        json!({"channel":"news","offset":1,"data":{"text":"hi"}})
    );

    // Not JSON: published as a JSON string.
    let (status, _, stderr) = run(&["publish", "news", "hello", "--url", &served.http], &[]);
    assert!(status.success(), "publish failed: {stderr}");
    let line = subscriber.wait_for(Stream::Stdout, "the second publication", |_| true);
    assert_eq!(
        json_line(&line),
        json!({"channel":"news","offset":2,"data":"hello"})
    );

    // SIGHUP does not stop the server (it used to exit 129): it says so,
    // and the subscriber keeps receiving.
    #[cfg(unix)]
    {
        let pid = served.process.child.id().to_string();
        let hup = Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("run kill");
        assert!(hup.success());
        served
            .process
            .wait_for(Stream::Stderr, "the SIGHUP line", |l| l.contains("SIGHUP"));
        let (status, _, stderr) = run(&["publish", "news", "after-hup", "--url", &served.http], &[]);
        assert!(status.success(), "still serving after SIGHUP: {stderr}");
        let line = subscriber.wait_for(Stream::Stdout, "the publication after SIGHUP", |_| true);
        assert_eq!(json_line(&line)["data"], json!("after-hup"));
    }

    // Graceful shutdown on SIGTERM: the server exits 0, the subscriber is
    // told 3001 and sets out to reconnect.
    #[cfg(unix)]
    {
        let pid = served.process.child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(killed.success());
        let status = served.process.wait_exit();
        assert!(
            status.success(),
            "serve should exit 0 after SIGTERM, got {status}"
        );
        // 3001 is a code SDKs reconnect after: so does `crier subscribe`,
        // saying why.
        let told = subscriber.wait_for(Stream::Stderr, "the shutdown notice", |l| l.contains("3001"));
        assert!(told.contains("reconnecting in"), "{told}");
    }
}

#[test]
fn subscribe_over_protobuf_prints_the_lines_the_json_client_prints() {
    let served = serve(&["--dev"], &[]);
    let mut json_client = subscribe(&served, "news", &[]);
    let mut protobuf_client = subscribe(&served, "news", &["--format", "protobuf"]);
    for client in [&mut json_client, &mut protobuf_client] {
        client.wait_for(Stream::Stderr, "the subscribe confirmation", |l| {
            l == "subscribed to news"
        });
    }
    let mut printed = Vec::new();
    for data in [r#"{"text":"hi","n":[1,2.5,null]}"#, "hello"] {
        let (status, _, stderr) = run(&["publish", "news", data, "--url", &served.http], &[]);
        assert!(status.success(), "publish failed: {stderr}");
        let expected = json_client.wait_for(Stream::Stdout, "the publication over JSON", |_| true);
        let line = protobuf_client.wait_for(Stream::Stdout, "the publication over protobuf", |_| true);
        assert_eq!(line, expected, "the same line in both formats");
        printed.push(json_line(&line));
    }
    assert_eq!(
        printed,
        [
            json!({"channel":"news","offset":1,"data":{"text":"hi","n":[1,2.5,null]}}),
            json!({"channel":"news","offset":2,"data":"hello"})
        ]
    );
}

#[test]
fn server_with_keys_needs_tokens_and_api_key() {
    let secret = "integration-secret";
    let env = [
        ("CRIER_CLIENT_TOKEN_HMAC_SECRET_KEY", secret),
        ("CRIER_HTTP_API_KEY", "api-key"),
    ];
    let served = serve(&[], &env);

    // No token: refused for good.
    let mut anonymous = subscribe(&served, "news", &[]);
    let status = anonymous.wait_exit();
    assert!(!status.success());
    let stderr = anonymous.output(Stream::Stderr);
    assert!(stderr.contains("3500"), "expected invalid token: {stderr}");

    // A connection token plus a subscription token from `crier token`.
    let (status, connect_token, stderr) = run(&["token", "--user", "alice"], &env);
    assert!(status.success(), "{stderr}");
    let (status, sub_token, stderr) = run(&["token", "--user", "alice", "--channel", "news"], &env);
    assert!(status.success(), "{stderr}");
    let mut subscriber = subscribe(
        &served,
        "news",
        &["--token", &connect_token, "--sub-token", &sub_token],
    );
    subscriber.wait_for(Stream::Stderr, "the subscribe confirmation", |l| {
        l == "subscribed to news"
    });

    // Without the API key: 401, exit 1, and a hint.
    let (status, _, stderr) = run(&["publish", "news", "1", "--url", &served.http], &[]);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("401") && stderr.contains("--api-key"), "{stderr}");

    // With it (from the environment, as the server reads it).
    let (status, _, stderr) = run(&["publish", "news", "1", "--url", &served.http], &env[1..]);
    assert!(status.success(), "{stderr}");
    let line = subscriber.wait_for(Stream::Stdout, "the publication", |_| true);
    assert_eq!(json_line(&line), json!({"channel":"news","offset":1,"data":1}));
}

#[test]
fn publish_api_error_exits_1_with_the_error() {
    let served = serve(&["--dev"], &[]);
    let long = "x".repeat(1024);
    let (status, stdout, stderr) = run(&["publish", &long, "1", "--url", &served.http], &[]);
    assert_eq!(status.code(), Some(1), "stdout: {stdout}");
    assert!(stderr.contains("API error"), "{stderr}");
}

#[test]
fn publish_to_nothing_says_the_server_is_unreachable() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a probe port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let (status, _, stderr) = run(&["publish", "news", "hi", "--url", &url], &[]);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("cannot reach crier") && stderr.contains("crier serve"),
        "{stderr}"
    );
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).expect("write a temporary config");
    path
}

#[test]
fn check_config_names_the_bad_line_and_exits_1() {
    let path = temp_file(
        "crier-cli-bad.toml",
        "[client]\nping_interval = \"25s\"\nchannel_limit = \"many\"\n",
    );
    let path = path.to_str().expect("utf-8 temp path");
    let (status, _, stderr) = run(&["check-config", path], &[]);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains(&format!("{path}:3:")),
        "the error must name file:line: {stderr}"
    );
    assert!(
        stderr.contains("client.channel_limit"),
        "the error must name the key: {stderr}"
    );
}

#[test]
fn check_config_checks_tcp_listeners_as_serve_would() {
    let base = "[client.token]\nhmac_secret_key = \"k\"\n";
    let cases = [
        ("listen = \"nowhere\"\n", "tcp[0].listen"),
        (
            "listen = \"127.0.0.1:0\"\nchannels = [\"nope:x\"]\n",
            "tcp[0].channels[0]",
        ),
        (
            "listen = \"127.0.0.1:0\"\nframing = \"delimited\"\n",
            "tcp[0].start",
        ),
    ];
    for (i, (entry, key)) in cases.iter().enumerate() {
        let path = temp_file(
            &format!("crier-cli-tcp-{i}.toml"),
            &format!("{base}[[tcp]]\n{entry}"),
        );
        let (status, stdout, stderr) = run(&["check-config", path.to_str().expect("utf-8 temp path")], &[]);
        assert_eq!(status.code(), Some(1), "{entry}: {stdout}");
        assert!(stderr.contains(key), "the error must name {key}: {stderr}");
    }
    let path = temp_file(
        "crier-cli-tcp-ok.toml",
        &format!("{base}[[tcp]]\nlisten = \"127.0.0.1:0\"\nchannels = [\"news\"]\n"),
    );
    let (status, stdout, stderr) = run(&["check-config", path.to_str().expect("utf-8 temp path")], &[]);
    assert!(status.success(), "a good [[tcp]] entry passes: {stderr}");
    assert!(stdout.contains(": OK"), "{stdout}");
}

#[test]
fn check_config_checks_watch_sources_as_serve_would() {
    let base = "[client.token]\nhmac_secret_key = \"k\"\n";
    let dir = std::env::temp_dir();
    let dir = dir.to_str().expect("utf-8 temp dir");
    let cases = [
        (
            "path = \"/no/such/dir/for/crier\"\nchannel = \"news\"\n".to_string(),
            "watch[0].path",
        ),
        (
            format!("path = '{dir}'\nchannel = \"nope:x\"\n"),
            "watch[0].channel",
        ),
        (format!("path = '{dir}'\ntail = true\n"), "watch[0].tail_channel"),
        (
            format!("path = '{dir}'\nglob = \"a[\"\nchannel = \"news\"\n"),
            "watch[0].glob",
        ),
    ];
    for (i, (entry, key)) in cases.iter().enumerate() {
        let path = temp_file(
            &format!("crier-cli-watch-{i}.toml"),
            &format!("{base}[[watch]]\n{entry}"),
        );
        let (status, stdout, stderr) = run(&["check-config", path.to_str().expect("utf-8 temp path")], &[]);
        assert_eq!(status.code(), Some(1), "{entry}: {stdout}");
        assert!(stderr.contains(key), "the error must name {key}: {stderr}");
    }
    let path = temp_file(
        "crier-cli-watch-ok.toml",
        &format!("{base}[[watch]]\npath = '{dir}'\nchannel = \"news\"\n"),
    );
    let (status, stdout, stderr) = run(&["check-config", path.to_str().expect("utf-8 temp path")], &[]);
    assert!(status.success(), "a good [[watch]] entry passes: {stderr}");
    assert!(stdout.contains(": OK"), "{stdout}");
}

#[test]
fn check_config_refuses_unknown_keys_unless_allowed() {
    let path = temp_file(
        "crier-cli-good.toml",
        "[client]\nunknown_thing = 1\n[client.token]\nhmac_secret_keyy = \"k\"\n[http_server.tls_autocert]\nenabled = true\n",
    );
    let file = path.to_str().expect("utf-8 temp path");
    let (status, _, stderr) = run(&["check-config", file], &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            ":4: client.token.hmac_secret_keyy: unknown key; did you mean `client.token.hmac_secret_key`?"
        ),
        "file, line, key and suggestion: {stderr}"
    );
    assert!(
        stderr.contains(":5: http_server.tls_autocert: a Centrifugo v6 setting (`http_server.tls_autocert`)"),
        "{stderr}"
    );
    let (status, stdout, stderr) = run(&["check-config", file, "--allow-unknown-keys"], &[]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("warning: client.unknown_thing"), "{stdout}");
    // serve refuses the file too, and starts with the flag.
    let (status, _, stderr) = run(&["serve", "--port", "0", "-c", file], &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did you mean"), "{stderr}");
}

#[test]
fn token_without_a_secret_says_how_to_set_one() {
    let (status, stdout, stderr) = run(&["token", "--user", "u"], &[]);
    assert_eq!(status.code(), Some(1));
    assert!(stdout.is_empty(), "no token may be printed: {stdout}");
    assert!(
        stderr.contains("hmac_secret_key") && stderr.contains("CRIER_CLIENT_TOKEN_HMAC_SECRET_KEY"),
        "{stderr}"
    );
}

#[test]
fn token_is_a_jwt_the_server_accepts() {
    let secret = "token-test-secret";
    let env = [("CRIER_CLIENT_TOKEN_HMAC_SECRET_KEY", secret)];
    let (status, stdout, stderr) = run(&["token", "--user", "u", "--ttl", "15m"], &env);
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout.split('.').count(), 3, "a JWT has three parts: {stdout}");

    let mut config = Config::default();
    config.client.token.hmac_secret_key = Secret::new(secret);
    let verifier = TokenVerifier::from_config(&config).expect("verifier");
    let claims = verifier
        .verify_connect(&stdout)
        .expect("the server accepts the token");
    assert_eq!(claims.user, "u");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let exp = claims.exp.expect("--ttl sets exp");
    assert!(
        (now + 14 * 60..=now + 16 * 60).contains(&exp),
        "exp {exp} is not 15m from {now}"
    );

    let (status, stdout, _) = run(&["token", "--user", "u", "--ttl", "0"], &env);
    assert!(status.success());
    let claims = verifier.verify_connect(&stdout).expect("accepted");
    assert_eq!(claims.exp, None, "--ttl 0 means no expiry");
}

/// `POST /api/<method>` with a JSON body; the reply's JSON.
fn api(served: &Served, method: &str, body: &Value) -> Value {
    use std::io::{Read as _, Write as _};
    let addr = &served.http["http://".len()..];
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the API");
    let body = body.to_string();
    write!(
        stream,
        "POST /api/{method} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read");
    let json = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {reply}"))
}

#[test]
fn dev_mode_gives_every_channel_history_recovery_and_presence_in_any_namespace() {
    let served = serve(&["--dev"], &[]);
    // A namespace no file configured works, and the publish says where it
    // landed (history is on).
    let (status, stdout, stderr) = run(
        &["publish", "chat:1", r#"{"text":"hi"}"#, "--url", &served.http],
        &[],
    );
    assert!(status.success(), "{stderr}");
    let result = json_line(&stdout);
    assert_eq!(result["offset"], 1, "{stdout}");
    assert!(
        result["epoch"].as_str().is_some_and(|e| !e.is_empty()),
        "{stdout}"
    );
    let history = api(&served, "history", &json!({"channel": "chat:1", "limit": 10}));
    assert_eq!(
        history["result"]["publications"][0]["data"],
        json!({"text": "hi"}),
        "{history}"
    );
    let presence = api(&served, "presence_stats", &json!({"channel": "chat:1"}));
    assert_eq!(presence["result"]["num_clients"], 0, "presence is on: {presence}");
}

#[test]
fn publish_refuses_data_that_looks_like_json_but_is_not() {
    let served = serve(&["--dev"], &[]);
    let (status, stdout, stderr) = run(
        &["publish", "news", r#"{"text":"hi""#, "--url", &served.http],
        &[],
    );
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(
        stderr.contains("--string"),
        "says how to send it anyway: {stderr}"
    );
    let (status, _, stderr) = run(
        &[
            "publish",
            "news",
            r#"{"text":"hi""#,
            "--string",
            "--url",
            &served.http,
        ],
        &[],
    );
    assert!(status.success(), "{stderr}");
    let history = api(&served, "history", &json!({"channel": "news", "limit": 10}));
    assert_eq!(
        history["result"]["publications"][0]["data"],
        json!(r#"{"text":"hi""#),
        "{history}"
    );
}

#[test]
fn version_and_token_with_a_secret_need_no_config() {
    let (status, stdout, _) = run(&["version"], &[]);
    assert!(status.success());
    assert_eq!(stdout.trim(), format!("crier {}", env!("CARGO_PKG_VERSION")));

    let (status, stdout, stderr) = run(
        &["token", "--user", "42", "--secret", "a-secret-for-this-test"],
        &[],
    );
    assert!(status.success(), "{stderr}");
    let mut config = Config::default();
    config.client.token.hmac_secret_key = Secret::new("a-secret-for-this-test");
    let claims = TokenVerifier::from_config(&config)
        .expect("verifier")
        .verify_connect(&stdout)
        .expect("signed with --secret");
    assert_eq!(claims.user, "42");
}

/// Opens a WebSocket to `served` with raw bytes and sends a connect with
/// `token`; the stream, for [`ws_close_code`] or more frames.
fn ws_open(served: &Served, token: &str) -> std::net::TcpStream {
    use std::io::Write as _;
    let addr = &served.http["http://".len()..];
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    write!(
        s,
        "GET /connection/websocket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .expect("handshake");
    ws_send(&mut s, &format!(r#"{{"id":1,"connect":{{"token":"{token}"}}}}"#));
    s
}

/// Sends one masked text frame (under 64 KiB).
fn ws_send(s: &mut std::net::TcpStream, text: &str) {
    use std::io::Write as _;
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81];
    match u8::try_from(text.len()) {
        Ok(n) if n < 126 => frame.push(0x80 | n),
        _ => {
            let n = u16::try_from(text.len()).expect("a frame under 64 KiB");
            frame.push(0x80 | 126);
            frame.extend_from_slice(&n.to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).expect("a frame");
}

/// Reads until the server closes; the close frame's code.
fn ws_close_code(s: &mut std::net::TcpStream) -> u16 {
    use std::io::Read as _;
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    // The close frame ends the stream: 0x88, length, code.
    let at = all.windows(2).rposition(|w| w[0] == 0x88).expect("a close frame");
    u16::from_be_bytes([all[at + 2], all[at + 3]])
}

/// Opens a WebSocket, connects with `token`, and reads until the server
/// closes; the close code.
fn ws_connect_code(served: &Served, token: &str) -> u16 {
    ws_close_code(&mut ws_open(served, token))
}

/// [`ws_open`] for a token the server accepts: returns once the connect
/// reply came, with the client's id.
fn ws_connected(served: &Served, token: &str) -> (std::net::TcpStream, String) {
    use std::io::Read as _;
    let mut s = ws_open(served, token);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let at = loop {
        let n = s.read(&mut buf).expect("the connect reply");
        assert!(
            n > 0,
            "closed before the connect reply: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(at) = text.find(r#""client":""#) {
            break text[at + r#""client":""#.len()..].to_string();
        }
    };
    let client = at.split('"').next().expect("a client id").to_string();
    (s, client)
}

/// Waits for the JSON log line (`crier.log_format = "json"`) whose message
/// starts with `message` and whose `code` field is `code`; its fields.
fn logged(served: &mut Served, message: &str, code: u64) -> Value {
    let line = served.process.wait_for(Stream::Stderr, message, |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
                && v["fields"]["code"] == json!(code)
        })
    });
    json_line(&line)["fields"].clone()
}

/// How many JSON log lines so far have this message (prefix) and code.
fn count_logged(served: &Served, message: &str, code: u64) -> usize {
    served
        .process
        .output(Stream::Stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
                && v["fields"]["code"] == json!(code)
        })
        .count()
}

/// Asserts a client-problem line names the client's address (loopback).
fn assert_remote(fields: &Value) {
    assert!(
        fields["remote"]
            .as_str()
            .is_some_and(|r| r.starts_with("127.0.0.1:")),
        "{fields}"
    );
}

#[cfg(unix)]
fn sighup(served: &mut Served) {
    let pid = served.process.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill")
        .success());
    // SIGHUP's line is not rate-limited: everything logged before it is in.
    served
        .process
        .wait_for(Stream::Stderr, "the SIGHUP line", |l| l.contains("SIGHUP"));
}

#[cfg(unix)]
#[test]
fn client_problems_are_logged_once_each_and_a_flood_is_bounded() {
    use std::io::{Read as _, Write as _};
    let config = temp_file(
        "crier-cli-logs.toml",
        "[client.token]\nhmac_secret_key = \"log-test-secret-that-is-long\"\n\
         [client]\nallowed_origins = [\"http://good.example\"]\nuser_connection_limit = 1\n\
         [http_api]\ninsecure = true\n[crier]\nlog_format = \"json\"\n",
    );
    let path = config.to_str().expect("utf-8");
    let mut served = serve(&["-c", path], &[]);
    let (status, token, stderr) = run(&["token", "-c", path, "--user", "42"], &[]);
    assert!(status.success(), "{stderr}");
    let token = token.trim();

    // A bad token: 3500.
    assert_eq!(ws_connect_code(&served, "not-a-token"), 3500);
    let line = logged(&mut served, "connection refused", 3500);
    assert_eq!(line["transport"], "websocket", "{line}");
    assert_eq!(line["user"], "", "{line}");
    assert!(
        line["reason"]
            .as_str()
            .is_some_and(|r| r.contains("invalid token")),
        "{line}"
    );
    assert_remote(&line);

    // An origin refused: HTTP 403 (no code field: the status says it).
    let addr = &served.http["http://".len()..];
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET /connection/websocket HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .expect("request");
    let mut answer = [0u8; 12];
    s.read_exact(&mut answer).expect("a status line");
    assert_eq!(&answer, b"HTTP/1.1 403", "refused");
    let origin = served.process.wait_for(Stream::Stderr, "the origin line", |l| {
        l.contains("origin refused (HTTP 403)")
    });
    let origin = json_line(&origin)["fields"].clone();
    assert_eq!(origin["transport"], "websocket", "{origin}");
    assert_eq!(origin["origin"], "http://evil.example", "{origin}");
    assert_remote(&origin);

    // A limit: user 42 may have one connection (3504 for the second).
    let (mut first, client) = ws_connected(&served, token);
    assert_eq!(ws_connect_code(&served, token), 3504);
    let line = logged(&mut served, "connection refused", 3504);
    assert_eq!(
        (&line["transport"], &line["user"]),
        (&json!("websocket"), &json!("42")),
        "{line}"
    );
    assert_remote(&line);

    // A disconnect with a code, by the server API: the server's decision.
    let r = api(
        &served,
        "disconnect",
        &json!({"user": "42", "disconnect": {"code": 3600, "reason": "go away"}}),
    );
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(ws_close_code(&mut first), 3600);
    let line = logged(&mut served, "client disconnected by the server", 3600);
    assert_eq!(
        (&line["client"], &line["user"]),
        (&json!(client), &json!("42")),
        "{line}"
    );
    assert_eq!(line["transport"], "websocket", "{line}");
    assert_eq!(line["reason"], "go away", "{line}");
    assert_remote(&line);

    // A protocol error once connected: 3501.
    let (mut again, client) = ws_connected(&served, token);
    ws_send(&mut again, "this is not a command");
    assert_eq!(ws_close_code(&mut again), 3501);
    let line = logged(&mut served, "client disconnected", 3501);
    assert_eq!(
        (&line["client"], &line["user"]),
        (&json!(client), &json!("42")),
        "{line}"
    );
    assert_eq!(line["transport"], "websocket", "{line}");
    assert_remote(&line);

    // Exactly one line each (the connects and the 3000s are at debug).
    sighup(&mut served);
    for (message, code) in [
        ("connection refused", 3500),
        ("connection refused", 3504),
        ("client disconnected by the server", 3600),
        ("client disconnected", 3501),
    ] {
        assert_eq!(count_logged(&served, message, code), 1, "{message} {code}");
    }
    assert_eq!(
        served
            .process
            .output(Stream::Stderr)
            .matches("origin refused (HTTP 403)")
            .count(),
        1
    );

    // A flood of bad tokens: at most the burst plus the rate's worth.
    let started = Instant::now();
    for _ in 0..200 {
        assert_eq!(ws_connect_code(&served, "not-a-token"), 3500);
    }
    let elapsed = started.elapsed().as_secs_f64();
    sighup(&mut served);
    let refusals = count_logged(&served, "connection refused", 3500) - 1;
    let bound = 20 + (20.0 * elapsed).ceil() as usize;
    assert!(
        refusals <= bound,
        "{refusals} lines for 200 refusals in {elapsed:.2} s (bound {bound})"
    );
    assert!(refusals >= 15, "the first ones are logged: {refusals}");
}

#[test]
fn genconfig_writes_a_starter_that_checks_and_serves() {
    let (status, stdout, stderr) = run(&["genconfig"], &[]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("hmac_secret_key = \""), "{stdout}");
    let dir = std::env::temp_dir().join(format!("crier-genconfig-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("crier.toml");
    let path = file.to_str().expect("utf-8");
    let (status, _, stderr) = run(&["genconfig", path], &[]);
    assert!(status.success(), "{stderr}");
    let (status, _, stderr) = run(&["genconfig", path], &[]);
    assert_eq!(
        status.code(),
        Some(1),
        "an existing file is never overwritten: {stderr}"
    );
    let (status, stdout, stderr) = run(&["check-config", path], &[]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains(": OK") && stdout.contains("chat"), "{stdout}");
    // And a server starts with it, and takes a token signed by `crier token -c`.
    let served = serve(&["-c", path], &[]);
    let (status, token, stderr) = run(&["token", "-c", path, "--user", "42"], &[]);
    assert!(status.success(), "{stderr}");
    let mut sub = subscribe(&served, "chat:1", &["--token", token.trim()]);
    sub.wait_for(Stream::Stderr, "the subscribe confirmation", |l| {
        l == "subscribed to chat:1"
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn subscribe_reconnects_and_recovers_what_it_missed() {
    let served = serve(&["--dev"], &[]);
    let mut sub = subscribe(&served, "news", &[]);
    sub.wait_for(Stream::Stderr, "subscribed", |l| l == "subscribed to news");
    let publish = |data: &str| {
        let (status, _, stderr) = run(&["publish", "news", data, "--url", &served.http], &[]);
        assert!(status.success(), "{stderr}");
    };
    publish("one");
    assert_eq!(
        json_line(&sub.wait_for(Stream::Stdout, "one", |_| true))["data"],
        json!("one")
    );
    // The server disconnects the client with a reconnect code (3000–3499):
    // it comes back and recovers what was published meanwhile, once.
    let info = api(&served, "info", &json!({}));
    assert_eq!(info["result"]["nodes"][0]["num_clients"], 1, "{info}");
    // The subscriber is anonymous: name it by its client id (from presence).
    let presence = api(&served, "presence", &json!({"channel": "news"}));
    let client = presence["result"]["presence"]
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .unwrap_or_else(|| panic!("one client present: {presence}"));
    let r = api(
        &served,
        "disconnect",
        &json!({"client": client, "disconnect": {"code": 3100, "reason": "move along"}}),
    );
    assert!(r.get("error").is_none(), "{r}");
    sub.wait_for(Stream::Stderr, "the reconnect notice", |l| {
        l.contains("3100") && l.contains("reconnecting")
    });
    publish("two");
    sub.wait_for(Stream::Stderr, "subscribed again", |l| l == "subscribed to news");
    publish("three");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = json_line(&sub.wait_for(Stream::Stdout, "two and three", |_| true));
        seen.push((line["offset"].clone(), line["data"].clone()));
    }
    assert_eq!(
        seen,
        vec![(json!(2), json!("two")), (json!(3), json!("three"))],
        "each once, in order"
    );
}

/// Stops a server the way a supervisor does (SIGTERM) and waits for it to
/// exit, so everything it logged has been written.
#[cfg(unix)]
fn terminate(served: &mut Served) {
    let pid = served.process.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let status = served.process.wait_exit();
    assert!(
        status.success(),
        "serve should exit 0 after SIGTERM, got {status}"
    );
}

#[cfg(unix)]
#[test]
fn log_file_gets_the_lines_as_json_objects() {
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("crier-cli-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let config = temp_file(
        "crier-cli-json-logs.toml",
        &format!(
            "[client]\nunknown_thing = 1\n[client.token]\nhmac_secret_key = \"log-test-secret-that-is-long\"\n\
             [log]\nfile = \"{}\"\n[crier]\nlog_format = \"json\"\nallow_unknown_keys = true\n",
            log.display()
        ),
    );
    let mut served = serve(&["-c", config.to_str().expect("utf-8")], &[]);
    assert_eq!(ws_connect_code(&served, "not-a-token"), 3500);
    terminate(&mut served);
    let stderr = served.process.output(Stream::Stderr);
    assert!(
        !stderr.contains("connection refused")
            && !stderr.contains("stopped")
            && !stderr.contains("unknown_thing"),
        "log lines and config warnings go to log.file, not stderr: {stderr}"
    );
    let text = std::fs::read_to_string(&log).expect("log.file was written");
    let lines: Vec<Value> = text.lines().map(json_line).collect();
    let refused = lines
        .iter()
        .find(|l| l["fields"]["message"] == "connection refused")
        .unwrap_or_else(|| panic!("no refusal in {text}"));
    assert_eq!(refused["level"], "INFO", "{refused}");
    assert_eq!(refused["fields"]["code"], 3500, "{refused}");
    assert_eq!(refused["fields"]["transport"], "websocket", "{refused}");
    assert!(
        refused["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("crier_server")),
        "{refused}"
    );
    assert!(refused["timestamp"].is_string(), "{refused}");
    // The config file's warnings go through the same logger.
    let warning = lines
        .iter()
        .find(|l| l["fields"]["key"] == "client.unknown_thing")
        .unwrap_or_else(|| panic!("no config warning in {text}"));
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert!(warning["fields"]["message"].is_string(), "{warning}");
    let last = lines.last().expect("lines");
    assert_eq!(last["fields"]["message"], "stopped", "{text}");
    let _ = std::fs::remove_file(&log);
}

#[cfg(unix)]
#[test]
fn log_level_warn_hides_info_unless_rust_log_says_otherwise() {
    let config = temp_file(
        "crier-cli-warn-logs.toml",
        "[client.token]\nhmac_secret_key = \"log-test-secret-that-is-long\"\n[log]\nlevel = \"warn\"\n",
    );
    let path = config.to_str().expect("utf-8");
    let mut served = serve(&["-c", path], &[]);
    assert_eq!(ws_connect_code(&served, "not-a-token"), 3500);
    terminate(&mut served);
    let stderr = served.process.output(Stream::Stderr);
    assert!(
        !stderr.contains("connection refused") && !stderr.contains("stopped"),
        "info lines are hidden at log.level = \"warn\": {stderr}"
    );
    // RUST_LOG, when set, replaces log.level.
    let mut served = serve(&["-c", path], &[("RUST_LOG", "info")]);
    assert_eq!(ws_connect_code(&served, "not-a-token"), 3500);
    terminate(&mut served);
    let stderr = served.process.output(Stream::Stderr);
    assert!(
        stderr.contains("connection refused") && stderr.contains("stopped"),
        "RUST_LOG=info shows them: {stderr}"
    );
    // An unknown level stops the server before it binds, naming the key.
    let bad = temp_file("crier-cli-bad-level.toml", "[log]\nlevel = \"verbose\"\n");
    let (status, _, stderr) = run(&["serve", "--port", "0", "-c", bad.to_str().expect("utf-8")], &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(":2:") && stderr.contains("log.level"), "{stderr}");
}

#[test]
fn completions_cover_every_subcommand() {
    let (status, bash, stderr) = run(&["completions", "bash"], &[]);
    assert!(status.success(), "{stderr}");
    for sub in [
        "serve",
        "check-config",
        "token",
        "publish",
        "subscribe",
        "bench",
        "genconfig",
        "version",
        "completions",
    ] {
        assert!(bash.contains(sub), "bash completions lack {sub}");
    }
    assert!(bash.contains("complete -F"), "not a bash completion script");
    for shell in ["zsh", "fish", "powershell", "elvish"] {
        let (status, out, stderr) = run(&["completions", shell], &[]);
        assert!(status.success() && out.contains("publish"), "{shell}: {stderr}");
    }
    let (status, _, _) = run(&["completions", "tcsh"], &[]);
    assert_eq!(status.code(), Some(2), "an unknown shell is a usage error");
}

/// A test CA and a certificate it signed for localhost, written as
/// `ca.pem`, `cert.pem` and `key.pem` in `dir`, the leaf named `name`.
fn issue_certificate(dir: &std::path::Path, ca: &(rcgen::Certificate, rcgen::KeyPair), name: &str) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.0, &ca.1).expect("signed");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("cert");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("key");
}

/// The common name of the certificate `https://localhost:PORT/health`
/// shows to curl (trusting only `ca`), or curl's complaint.
fn served_certificate(port: u16, ca: &std::path::Path) -> String {
    let out = Command::new("curl")
        .args(["-sv", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .arg(format!("https://localhost:{port}/health"))
        .output()
        .expect("curl runs");
    let log = String::from_utf8_lossy(&out.stderr);
    log.lines()
        .find_map(|l| l.split("subject: ").nth(1).map(str::to_owned))
        .unwrap_or_else(|| format!("no certificate: {log}"))
}

/// `crier serve` with `http_server.tls`: a certificate renewed on disk is
/// used after SIGHUP, without a restart.
#[cfg(unix)]
#[test]
fn sighup_rereads_the_tls_certificate() {
    let dir = std::env::temp_dir().join(format!("crier-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let ca = (params.self_signed(&ca_key).expect("ca"), ca_key);
    std::fs::write(dir.join("ca.pem"), ca.0.pem()).expect("ca");
    issue_certificate(&dir, &ca, "first");
    let config = dir.join("crier.toml");
    std::fs::write(
        &config,
        format!(
            "[http_server.tls]\nenabled = true\ncert_pem = {:?}\nkey_pem = {:?}\n",
            dir.join("cert.pem"),
            dir.join("key.pem")
        ),
    )
    .expect("config");
    let config = config.to_str().expect("utf-8 path").to_owned();
    let mut process = Running::spawn("crier serve (tls)", &["serve", "--port", "0", "-c", &config], &[]);
    let listening = process.wait_for(Stream::Stdout, "the listening line", |l| {
        l.starts_with("crier listening on ")
    });
    let port: u16 = listening
        .strip_prefix("crier listening on https://127.0.0.1:")
        .unwrap_or_else(|| panic!("an https:// address: {listening}"))
        .parse()
        .expect("a port");
    let ca_file = dir.join("ca.pem");
    assert!(served_certificate(port, &ca_file).contains("CN=first"));

    issue_certificate(&dir, &ca, "second");
    // Until the signal, the running server keeps the certificate it read.
    assert!(served_certificate(port, &ca_file).contains("CN=first"));
    let pid = process.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill")
        .success());
    process.wait_for(Stream::Stderr, "the reload line", |l| {
        l.contains("SIGHUP: TLS certificate and key re-read")
    });
    assert!(served_certificate(port, &ca_file).contains("CN=second"));
    std::fs::remove_dir_all(&dir).ok();
}
