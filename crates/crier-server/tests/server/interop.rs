//! The real client SDKs against crier: `tests-interop/` holds a centrifuge-js
//! script (Node) and a centrifuge-python + cent script (Python); each test
//! starts a server and runs one of them as a child process. The scripts
//! check the protocol from the SDK's side (connect, recoverable subscribe,
//! API publish, history, presence, forced reconnect with exact recovery), so
//! a failure here means a real application would break.
//!
//! `tests-interop/setup.sh` installs the SDKs on first use; a missing node,
//! npm or python3 fails the tests with what to install, never skips them.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use super::support::*;

/// Longer than the scripts' own 20 s limit, so they report their own hangs.
const SCRIPT_LIMIT: Duration = Duration::from_secs(40);
/// A first install downloads the SDKs; later runs take milliseconds.
const SETUP_LIMIT: Duration = Duration::from_secs(600);

#[tokio::test]
async fn centrifuge_js_connects_subscribes_and_recovers() {
    run_script("node", "tests-interop/js/interop.mjs", "js-user", "").await;
}

/// centrifuge-js's protobuf build (binary frames) and its JSON build on
/// one channel: both get every publication in order; binary data reaches
/// the protobuf client as bytes and the JSON one as `null`; history,
/// presence, error codes and recovery work over protobuf.
#[tokio::test]
async fn centrifuge_js_protobuf_build_works_beside_a_json_client() {
    run_script("node", "tests-interop/js/protobuf.mjs", "js-protobuf-user", "").await;
}

/// The same, with `websocket.compression` on: both SDK builds (over the
/// `ws` package, which offers permessage-deflate) agree on it and work
/// unchanged, long publications arriving compressed.
#[tokio::test]
async fn centrifuge_js_protobuf_and_json_work_over_compressed_websockets() {
    setup().await;
    let s = TestServer::start(config(
        "[websocket]\ncompression = true\ncompression_min_size = 16\n",
    ))
    .await;
    let mut args = script_args("tests-interop/js/protobuf.mjs", &s, "js-deflate-user");
    args.push("deflate".to_owned());
    run_program("node", args).await;
    s.shutdown().await;
}

#[tokio::test]
async fn a_spec_eventsource_receives_publications_over_uni_sse() {
    run_script(
        "node",
        "tests-interop/js/sse.mjs",
        "sse-user",
        "[uni_sse]\nenabled = true\n",
    )
    .await;
}

#[tokio::test]
async fn centrifuge_python_and_cent_connect_subscribe_and_recover() {
    run_script(
        "tests-interop/.venv/bin/python",
        "tests-interop/py/interop.py",
        "py-user",
        "",
    )
    .await;
}

/// The same centrifuge-python flow over the protobuf protocol
/// (`use_protobuf=True`: binary frames, payloads as bytes).
#[tokio::test]
async fn centrifuge_python_works_over_protobuf() {
    setup().await;
    let s = TestServer::start(config("")).await;
    let user = "py-protobuf-user";
    let mut args = script_args("tests-interop/py/interop.py", &s, user);
    args.push("protobuf".to_owned());
    run_program("tests-interop/.venv/bin/python", args).await;
    s.shutdown().await;
}

/// The Redis engine on `redis`, as extra configuration.
#[cfg(feature = "redis")]
fn redis_engine(redis: &super::redis::RedisServer) -> String {
    format!(
        "[engine]\ntype = \"redis\"\n[engine.redis]\naddress = \"{}\"\nconnect_timeout = \"300ms\"\nio_timeout = \"1s\"\n",
        redis.url()
    )
}

/// The centrifuge-js flow of `interop.mjs` (recoverable subscribe, history,
/// presence, forced reconnect with exact recovery) on a node whose engine
/// is Redis.
#[cfg(feature = "redis")]
#[tokio::test]
async fn centrifuge_js_works_the_same_on_the_redis_engine() {
    let redis = super::redis::RedisServer::start();
    run_script(
        "node",
        "tests-interop/js/interop.mjs",
        "js-redis-user",
        &redis_engine(&redis),
    )
    .await;
}

/// centrifuge-python and cent on the Redis engine.
#[cfg(feature = "redis")]
#[tokio::test]
async fn centrifuge_python_and_cent_work_the_same_on_the_redis_engine() {
    let redis = super::redis::RedisServer::start();
    run_script(
        "tests-interop/.venv/bin/python",
        "tests-interop/py/interop.py",
        "py-redis-user",
        &redis_engine(&redis),
    )
    .await;
}

/// The NATS engine on `nats`, as extra configuration.
#[cfg(feature = "nats")]
fn nats_engine(nats: &super::nats::NatsServer) -> String {
    format!(
        "[engine]\ntype = \"nats\"\n[engine.nats]\naddress = \"{}\"\nconnect_timeout = \"300ms\"\nio_timeout = \"1s\"\n",
        nats.url()
    )
}

/// The centrifuge-js flow of `interop.mjs` on a node whose engine is NATS
/// with JetStream.
#[cfg(feature = "nats")]
#[tokio::test]
async fn centrifuge_js_works_the_same_on_the_nats_engine() {
    let nats = super::nats::NatsServer::start();
    run_script(
        "node",
        "tests-interop/js/interop.mjs",
        "js-nats-user",
        &nats_engine(&nats),
    )
    .await;
}

/// centrifuge-python and cent on the NATS engine.
#[cfg(feature = "nats")]
#[tokio::test]
async fn centrifuge_python_and_cent_work_the_same_on_the_nats_engine() {
    let nats = super::nats::NatsServer::start();
    run_script(
        "tests-interop/.venv/bin/python",
        "tests-interop/py/interop.py",
        "py-nats-user",
        &nats_engine(&nats),
    )
    .await;
}

/// centrifuge-js on node A, publications through node B, Redis shut down
/// and started again empty: the SDK is told 2500, retries through the
/// outage and resubscribes (`tests-interop/js/cluster.mjs`).
#[cfg(feature = "redis")]
#[tokio::test]
async fn centrifuge_js_resubscribes_across_nodes_after_redis_restarts() {
    setup().await;
    let redis = super::redis::RedisServer::start();
    let a = TestServer::start(config(&redis_engine(&redis))).await;
    let b = TestServer::start(config(&redis_engine(&redis))).await;
    let user = "js-cluster-user";
    let port = redis.url().rsplit(':').next().expect("port").to_owned();
    let args = vec![
        "tests-interop/js/cluster.mjs".to_owned(),
        a.ws_url(),
        token(user),
        format!("http://{}/api", b.addr),
        API_KEY.to_owned(),
        user.to_owned(),
        port,
    ];
    run_program("node", args).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Starts a server (with `extra` config), runs `program script WS_URL TOKEN
/// API_URL API_KEY USER` from the repository root and fails with the
/// script's output unless it exits 0.
async fn run_script(program: &'static str, script: &'static str, user: &str, extra: &str) {
    setup().await;
    let s = TestServer::start(config(extra)).await;
    run_program(program, script_args(script, &s, user)).await;
    s.shutdown().await;
}

/// `script WS_URL TOKEN API_URL API_KEY USER` for server `s`.
fn script_args(script: &str, s: &TestServer, user: &str) -> Vec<String> {
    vec![
        script.to_owned(),
        s.ws_url(),
        token(user),
        format!("http://{}/api", s.addr),
        API_KEY.to_owned(),
        user.to_owned(),
    ]
}

/// Runs `program args...` from the repository root; fails with its output
/// unless it exits 0.
async fn run_program(program: &'static str, args: Vec<String>) {
    run_program_within(program, args, SCRIPT_LIMIT).await
}

/// [`run_program`] with another time limit.
pub(super) async fn run_program_within(program: &'static str, args: Vec<String>, limit: Duration) {
    let script = args.first().cloned().unwrap_or_default();
    let started = Instant::now();
    let outcome = tokio::task::spawn_blocking(move || {
        // A path is the repository's; a bare name is looked up on PATH.
        let mut cmd = match program.contains('/') {
            true => Command::new(repo_root().join(program)),
            false => Command::new(program),
        };
        cmd.args(args).current_dir(repo_root());
        run(&mut cmd, limit)
    })
    .await
    .expect("blocking task");
    match outcome {
        Ok(out) => eprintln!("{script} passed in {:?}:\n{out}", started.elapsed()),
        Err(report) => panic!("{script} failed:\n{report}"),
    }
}

/// Runs `tests-interop/setup.sh` once per test binary; every test waits for
/// that one run and fails with its output if it failed.
pub(super) async fn setup() {
    static SETUP: OnceLock<Result<(), String>> = OnceLock::new();
    let result = tokio::task::spawn_blocking(|| {
        SETUP
            .get_or_init(|| {
                let script = repo_root().join("tests-interop/setup.sh");
                run(Command::new("bash").arg(script), SETUP_LIMIT).map(drop)
            })
            .clone()
    })
    .await
    .expect("blocking task");
    if let Err(report) = result {
        panic!("tests-interop/setup.sh failed (it needs node, npm and python3):\n{report}");
    }
}

/// The workspace root: `crates/crier-server` is two levels down.
pub(super) fn repo_root() -> &'static Path {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .nth(2)
        .expect("crates/crier-server has a grandparent")
}

/// Runs `cmd` to completion, killing it after `limit`. Ok: its output; Err:
/// how it ended, with its output.
fn run(cmd: &mut Command, limit: Duration) -> Result<String, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e} (is it installed?)"))?;
    // Each reader reports on `done` when its pipe closes, i.e. when the child
    // has exited (or closed its output).
    let (done, closed) = mpsc::channel();
    let read = |mut pipe: Box<dyn Read + Send>| {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            let _ = done.send(());
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let timed_out = (0..2).any(|_| {
        closed
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_err()
    });
    if timed_out {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| format!("waiting for {cmd:?}: {e}"))?;
    let output = format!(
        "--- stdout\n{}--- stderr\n{}",
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default()
    );
    match (timed_out, status.success()) {
        (false, true) => Ok(output),
        (true, _) => Err(format!("{cmd:?} killed after {limit:?}\n{output}")),
        (false, false) => Err(format!("{cmd:?} exited with {status}\n{output}")),
    }
}

/// Three nodes on one Redis, the emulation transports on: centrifuge-js
/// streams from node A, POSTs its commands to node B's `/emulation` (which
/// hands them to A through Redis: no sticky sessions), and the API is
/// called on node C (`tests-interop/js/emulation.mjs`): HTTP streaming in
/// JSON and protobuf, and SSE.
#[cfg(feature = "redis")]
#[tokio::test]
async fn centrifuge_js_works_over_http_stream_and_sse_across_three_nodes() {
    setup().await;
    let redis = super::redis::RedisServer::start();
    let extra = format!(
        "{}[http_stream]\nenabled = true\n[sse]\nenabled = true\n",
        redis_engine(&redis)
    );
    let a = TestServer::start(config(&extra)).await;
    let b = TestServer::start(config(&extra)).await;
    let c = TestServer::start(config(&extra)).await;
    for (transport, format) in [
        ("http_stream", "json"),
        ("http_stream", "protobuf"),
        ("sse", "json"),
    ] {
        let user = format!("emulated-{transport}-{format}");
        let args = vec![
            "tests-interop/js/emulation.mjs".to_owned(),
            format!("http://{}", a.addr),
            format!("http://{}/emulation", b.addr),
            token(&user),
            format!("http://{}/api", c.addr),
            API_KEY.to_owned(),
            user,
            transport.to_owned(),
            format.to_owned(),
        ];
        run_program("node", args).await;
    }
    for s in [a, b, c] {
        s.shutdown().await;
    }
}

/// centrifuge-js and centrifuge-python with no token, against a node whose
/// proxies point at a real backend (`tests/server/proxy.rs`): the connect
/// proxy admits them into the backend's server-side channel; subscribe,
/// publish and RPC go through the backend with its codes and data
/// (`tests-interop/js/proxy.mjs`, `tests-interop/py/proxy.py`).
#[tokio::test]
async fn the_sdks_connect_subscribe_publish_and_call_through_the_proxies() {
    setup().await;
    let (backend, _) = super::proxy::backend().await;
    let s = TestServer::start(config(&super::proxy::proxied(backend))).await;
    let api = format!("http://{}/api", s.addr);
    for (program, script) in [
        ("node", "tests-interop/js/proxy.mjs"),
        ("tests-interop/.venv/bin/python", "tests-interop/py/proxy.py"),
    ] {
        let args = vec![script.to_owned(), s.ws_url(), api.clone(), API_KEY.to_owned()];
        run_program(program, args).await;
    }
    s.shutdown().await;
}
