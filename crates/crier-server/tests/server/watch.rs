//! The file source (`[[watch]]`) against a real directory: file events and
//! tailed lines reach WebSocket subscribers. Every test subscribes first,
//! then changes files, then waits for the publications (5 s timeout).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crier_server::config::Config;
use crier_server::Server;
use serde_json::{json, Value};

use super::support::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("crier-watch-{}-{n}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The test config plus a `conversation` namespace and one `[[watch]]`
/// entry on `path` with the given keys.
fn watch_config(path: &Path, keys: &str) -> Config {
    config(&format!(
        r#"
[[channel.namespaces]]
name = "conversation"
allow_subscribe_for_client = true

[[watch]]
path = '{}'
{keys}
"#,
        path.display()
    ))
}

async fn subscriber(s: &TestServer, channels: &[&str]) -> Client {
    let mut c = Client::connect(&s.ws_url(), &token("watcher")).await;
    for ch in channels {
        let r = c.request(json!({"subscribe": {"channel": ch}})).await;
        assert!(r["subscribe"].is_object(), "subscribe {ch}: {r}");
    }
    c
}

/// The next publication as (channel, data).
async fn next(c: &mut Client) -> (String, Value) {
    let p = c.next_pub().await;
    (
        p["channel"].as_str().unwrap_or_default().to_owned(),
        p["pub"]["data"].clone(),
    )
}

/// The data of the next publication.
async fn next_data(c: &mut Client) -> Value {
    next(c).await.1
}

/// Appends with one `write(2)`.
fn append(path: &Path, bytes: &str) {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(bytes.as_bytes()).expect("append");
}

const EVENTS_AND_TAIL: &str = r#"
glob = "**/*.jsonl"
channel = "file_events"
tail = true
tail_channel = "conversation:{stem}"
"#;

const TAIL_ONLY: &str = r#"
glob = "**/*.jsonl"
tail = true
tail_channel = "conversation:{stem}"
"#;

#[tokio::test]
async fn file_events_reach_a_subscriber_with_relative_paths() {
    let dir = TempDir::new("events");
    fs::create_dir(dir.path("a")).unwrap();
    let s = TestServer::start(watch_config(
        &dir.0,
        "glob = \"**/*.jsonl\"\nchannel = \"file_events\"",
    ))
    .await;
    let mut c = subscriber(&s, &["file_events"]).await;

    fs::write(dir.path("a/b.jsonl"), "x\n").unwrap();
    let created = next_data(&mut c).await;
    assert_eq!(created["event"], "created", "{created}");
    assert_eq!(
        created["path"], "a/b.jsonl",
        "relative to the watched root: {created}"
    );
    let modified = next_data(&mut c).await;
    assert_eq!(modified["event"], "modified", "{modified}");
    assert_eq!(modified["path"], "a/b.jsonl");
    assert_eq!(modified["size"], 2);
    let now_ms = (unix_now() as u64) * 1000;
    let mtime = modified["mtime"].as_u64().expect("mtime in unix ms");
    assert!(
        mtime.abs_diff(now_ms) < 60_000,
        "mtime {mtime} is about now ({now_ms})"
    );

    fs::rename(dir.path("a/b.jsonl"), dir.path("a/c.jsonl")).unwrap();
    let renamed = next_data(&mut c).await;
    assert_eq!(renamed["event"], "renamed", "{renamed}");
    assert_eq!(renamed["from"], "a/b.jsonl");
    assert_eq!(renamed["to"], "a/c.jsonl");
    assert_eq!(renamed["path"], "a/c.jsonl");

    fs::remove_file(dir.path("a/c.jsonl")).unwrap();
    assert_eq!(
        next_data(&mut c).await,
        json!({"event": "removed", "path": "a/c.jsonl"})
    );
    s.shutdown().await;
}

#[tokio::test]
async fn the_glob_filters_out_other_files() {
    let dir = TempDir::new("glob");
    let s = TestServer::start(watch_config(
        &dir.0,
        "glob = \"**/*.jsonl\"\nchannel = \"file_events\"",
    ))
    .await;
    let mut c = subscriber(&s, &["file_events"]).await;

    fs::write(dir.path("notes.txt"), "not watched\n").unwrap();
    fs::write(dir.path("notes.jsonl.bak"), "not watched\n").unwrap();
    fs::write(dir.path("keep.jsonl"), "").unwrap();
    let first = next_data(&mut c).await;
    assert_eq!(
        (first["event"].as_str(), first["path"].as_str()),
        (Some("created"), Some("keep.jsonl")),
        "files outside the glob publish nothing: {first}"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn the_tailers_own_reads_cause_no_events() {
    let dir = TempDir::new("own-reads");
    let s = TestServer::start(watch_config(&dir.0, EVENTS_AND_TAIL)).await;
    let mut events = subscriber(&s, &["file_events"]).await;
    let mut lines = subscriber(&s, &["conversation:t"]).await;

    fs::write(dir.path("t.jsonl"), "{\"n\":1}\n").unwrap();
    assert_eq!(next_data(&mut events).await["event"], "created");
    assert_eq!(next_data(&mut events).await["event"], "modified");
    assert_eq!(next_data(&mut lines).await, json!({"n": 1}));
    // The tailer has opened and read t.jsonl; inotify reported that open.
    fs::write(dir.path("u.jsonl"), "").unwrap();
    let next = next_data(&mut events).await;
    assert_eq!(
        (next["event"].as_str(), next["path"].as_str()),
        (Some("created"), Some("u.jsonl")),
        "no event for the tailer's own open or read of t.jsonl: {next}"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn appended_lines_publish_in_order_as_json_or_as_strings() {
    let dir = TempDir::new("tail");
    fs::write(dir.path("conv.jsonl"), "").unwrap();
    let s = TestServer::start(watch_config(&dir.0, TAIL_ONLY)).await;
    let mut c = subscriber(&s, &["conversation:conv"]).await;

    append(
        &dir.path("conv.jsonl"),
        "{\"text\":\"hi\",\"n\":1}\nplain words, not JSON\n",
    );
    assert_eq!(
        next(&mut c).await,
        ("conversation:conv".into(), json!({"text": "hi", "n": 1}))
    );
    assert_eq!(next_data(&mut c).await, json!("plain words, not JSON"));
    append(&dir.path("conv.jsonl"), "[1,2]\r\n\n\"quoted\"\n");
    assert_eq!(next_data(&mut c).await, json!([1, 2]), "CRLF endings work");
    assert_eq!(
        next_data(&mut c).await,
        json!("quoted"),
        "blank lines publish nothing"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn content_present_at_start_is_not_republished() {
    let dir = TempDir::new("existing");
    fs::write(dir.path("log.jsonl"), "{\"old\":1}\n{\"old\":2}\n{\"unfini").unwrap();
    let s = TestServer::start(watch_config(&dir.0, TAIL_ONLY)).await;
    let mut c = subscriber(&s, &["conversation:log"]).await;

    append(&dir.path("log.jsonl"), "shed\":3}\n{\"new\":true}\n");
    assert_eq!(
        next_data(&mut c).await,
        json!({"new": true}),
        "tailing starts at the end; the line unfinished at start is skipped"
    );
    append(&dir.path("log.jsonl"), "after\n");
    assert_eq!(next_data(&mut c).await, json!("after"));
    s.shutdown().await;
}

#[tokio::test]
async fn a_partial_line_is_published_when_its_newline_arrives() {
    let dir = TempDir::new("partial");
    fs::write(dir.path("a.jsonl"), "").unwrap();
    fs::write(dir.path("b.jsonl"), "").unwrap();
    let s = TestServer::start(watch_config(&dir.0, TAIL_ONLY)).await;
    let mut c = subscriber(&s, &["conversation:a", "conversation:b"]).await;

    append(&dir.path("a.jsonl"), "{\"part\":");
    // Events are handled in order: once b's line is out, a's partial line
    // has been read and held back.
    append(&dir.path("b.jsonl"), "marker\n");
    assert_eq!(next(&mut c).await, ("conversation:b".into(), json!("marker")));
    append(&dir.path("a.jsonl"), "1}\n");
    assert_eq!(next(&mut c).await, ("conversation:a".into(), json!({"part": 1})));
    s.shutdown().await;
}

#[tokio::test]
async fn truncation_restarts_from_the_start() {
    let dir = TempDir::new("truncate");
    let file = dir.path("t.jsonl");
    fs::write(&file, "").unwrap();
    let s = TestServer::start(watch_config(&dir.0, TAIL_ONLY)).await;
    let mut c = subscriber(&s, &["conversation:t"]).await;

    append(&file, "one\ntwo\n");
    assert_eq!(next_data(&mut c).await, json!("one"));
    assert_eq!(next_data(&mut c).await, json!("two"));
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&file)
        .unwrap();
    append(&file, "3\n");
    assert_eq!(next_data(&mut c).await, json!(3));
    s.shutdown().await;
}

#[tokio::test]
async fn rotation_reads_the_new_file_from_its_start() {
    let dir = TempDir::new("rotate");
    let file = dir.path("app.jsonl");
    fs::write(&file, "").unwrap();
    let s = TestServer::start(watch_config(&dir.0, TAIL_ONLY)).await;
    let mut c = subscriber(&s, &["conversation:app"]).await;

    append(&file, "a1\n");
    assert_eq!(next_data(&mut c).await, json!("a1"));
    // Rename away (logrotate's default), then a new file at the same path.
    append(&file, "a2\n");
    fs::rename(&file, dir.path("app.jsonl.1")).unwrap();
    fs::write(&file, "b1\nb2\n").unwrap();
    assert_eq!(
        next_data(&mut c).await,
        json!("a2"),
        "the old file's last line still counts"
    );
    assert_eq!(next_data(&mut c).await, json!("b1"));
    assert_eq!(next_data(&mut c).await, json!("b2"));
    // Remove, then a new file.
    fs::remove_file(&file).unwrap();
    fs::write(&file, "c1\n").unwrap();
    assert_eq!(next_data(&mut c).await, json!("c1"));
    append(&file, "c2\n");
    assert_eq!(next_data(&mut c).await, json!("c2"), "no line is published twice");
    s.shutdown().await;
}

#[tokio::test]
async fn a_single_file_is_followed_across_rotation() {
    let dir = TempDir::new("single");
    let file = dir.path("one.log");
    fs::write(&file, "before start\n").unwrap();
    let keys = "tail = true\ntail_channel = \"conversation:{name}\"";
    let s = TestServer::start(watch_config(&file, keys)).await;
    let mut c = subscriber(&s, &["conversation:one.log", "conversation:other.log"]).await;

    append(&dir.path("other.log"), "a sibling is not watched\n");
    append(&file, "{\"i\":1}\n");
    assert_eq!(
        next(&mut c).await,
        ("conversation:one.log".into(), json!({"i": 1}))
    );
    fs::rename(&file, dir.path("one.log.1")).unwrap();
    fs::write(&file, "{\"i\":2}\n").unwrap();
    assert_eq!(
        next(&mut c).await,
        ("conversation:one.log".into(), json!({"i": 2}))
    );
    s.shutdown().await;
}

#[tokio::test]
async fn files_in_a_new_directory_are_followed_from_their_start() {
    let dir = TempDir::new("new-dir");
    let s = TestServer::start(watch_config(&dir.0, EVENTS_AND_TAIL)).await;
    let mut events = subscriber(&s, &["file_events"]).await;
    let mut lines = subscriber(&s, &["conversation:x"]).await;

    // Written before notify has had a chance to watch the new directory.
    fs::create_dir_all(dir.path("new/deeper")).unwrap();
    fs::write(dir.path("new/deeper/x.jsonl"), "hello\n").unwrap();
    let created = next_data(&mut events).await;
    assert_eq!(created["event"], "created", "{created}");
    assert_eq!(created["path"], "new/deeper/x.jsonl");
    assert_eq!(next_data(&mut lines).await, json!("hello"));
    append(&dir.path("new/deeper/x.jsonl"), "again\n");
    assert_eq!(
        next_data(&mut lines).await,
        json!("again"),
        "hello was published once"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn bad_watch_entries_are_refused_naming_the_key() {
    let dir = TempDir::new("config");
    let good = format!(
        "[[watch]]\npath = '{}'\nchannel = \"file_events\"\n",
        dir.0.display()
    );
    let cases: [(&str, &str); 9] = [
        (
            "path = '/no/such/dir/for/crier'\nchannel = \"e\"",
            "watch[1].path",
        ),
        ("glob = \"a[\"\nchannel = \"e\"", "watch[1].glob"),
        ("channel = \"nope:events\"", "watch[1].channel"),
        ("tail = true", "watch[1].tail_channel"),
        (
            "tail = true\ntail_channel = \"nope:{stem}\"",
            "watch[1].tail_channel",
        ),
        (
            "tail = true\ntail_channel = \"conversation:{size}\"",
            "watch[1].tail_channel: \"conversation:{size}\": unknown placeholder",
        ),
        (
            "tail = true\ntail_channel = \"{stem}:x\"",
            "watch[1].tail_channel",
        ),
        (
            "tail = true\ntail_channel = \"conversation:{stem\"",
            "watch[1].tail_channel",
        ),
        ("glob = \"*.jsonl\"", "watch[1]: publishes nothing"),
    ];
    for (keys, expected) in cases {
        let keys = if keys.starts_with("path") {
            keys.to_owned()
        } else {
            format!("path = '{}'\n{keys}", dir.0.display())
        };
        let text = format!("[[channel.namespaces]]\nname = \"conversation\"\n\n{good}\n[[watch]]\n{keys}\n");
        let error = match Server::bind(config(&text)).await {
            Ok(_) => panic!("accepted a bad [[watch]]: {keys}"),
            Err(e) => e.to_string(),
        };
        assert!(
            error.contains(expected),
            "{keys}\n→ {error}\nexpected {expected:?}"
        );
    }
}

/// What docs/sources.md ("Limits") promises when a watched directory is
/// removed: its removal is reported file by file, that `[[watch]]` entry
/// stops, and everything else goes on: other file sources, the HTTP API,
/// WebSocket and TCP clients, new connections, shutdown. A restart watches
/// the directory again.
#[tokio::test]
async fn a_watched_directory_that_disappears_stops_only_its_own_source() {
    let base = TempDir::new("disappears");
    let gone = base.path("gone");
    let kept = base.path("kept");
    fs::create_dir_all(gone.join("sub")).unwrap();
    fs::create_dir(&kept).unwrap();
    fs::write(gone.join("sub/a.jsonl"), "").unwrap();
    fs::write(kept.join("k.jsonl"), "").unwrap();
    let text = format!(
        r#"
[[channel.namespaces]]
name = "conversation"
allow_subscribe_for_client = true

[[watch]]
path = '{}'
{EVENTS_AND_TAIL}

[[watch]]
path = '{}'
{TAIL_ONLY}

[[tcp]]
listen = "127.0.0.1:0"
channels = ["lines"]
"#,
        gone.display(),
        kept.display()
    );
    let (s, tcp) = TestServer::start_with_tcp(config(&text)).await;
    let mut events = subscriber(&s, &["file_events"]).await;
    let mut lines = subscriber(&s, &["conversation:a", "conversation:k"]).await;

    append(&gone.join("sub/a.jsonl"), "before\n");
    assert_eq!(next_data(&mut events).await["event"], "modified");
    assert_eq!(next(&mut lines).await, ("conversation:a".into(), json!("before")));

    fs::remove_dir_all(&gone).unwrap();
    assert_eq!(
        next_data(&mut events).await,
        json!({"event": "removed", "path": "sub/a.jsonl"}),
        "the files of a removed directory are reported removed"
    );
    // Directories publish nothing of their own, the watched one included:
    // the next publication on the channel is the backend's.
    let (status, body) = s
        .api(
            "publish",
            json!({"channel": "file_events", "data": {"from": "api"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(next_data(&mut events).await, json!({"from": "api"}));

    // The other source still tails.
    append(&kept.join("k.jsonl"), "still here\n");
    assert_eq!(
        next(&mut lines).await,
        ("conversation:k".into(), json!("still here"))
    );
    // New WebSocket and TCP connections are served, and reached by the API.
    let mut late = subscriber(&s, &["lines"]).await;
    let mut peer = Peer::connect(tcp[0]).await;
    subscribers(&s, "lines", 2).await;
    let (status, body) = s.api("publish", json!({"channel": "lines", "data": "Y"})).await;
    assert_eq!(status, 200, "{body}");
    peer.expect(b"Y\n").await;
    assert_eq!(next_data(&mut late).await, json!("Y"));
    s.shutdown().await;

    // Restarted on the directory made anew, the source follows it again.
    fs::create_dir(&gone).unwrap();
    let s = TestServer::start(config(&text)).await;
    let mut lines = subscriber(&s, &["conversation:b"]).await;
    fs::write(gone.join("b.jsonl"), "{\"again\":true}\n").unwrap();
    assert_eq!(next_data(&mut lines).await, json!({"again": true}));
    s.shutdown().await;
}

/// `crier_publish_duration_seconds_count` in the node's metrics.
fn publishes_timed(s: &TestServer) -> f64 {
    let text = s.node.metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix("crier_publish_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no publish count in:\n{text}"))
}

#[tokio::test]
async fn file_source_publishes_are_timed_like_every_other_publish() {
    let dir = TempDir::new("timed");
    fs::write(dir.path("conv.jsonl"), "").unwrap();
    let mut config = watch_config(&dir.0, TAIL_ONLY);
    config.prometheus.enabled = true;
    let s = TestServer::start(config).await;
    let mut c = subscriber(&s, &["conversation:conv"]).await;
    assert_eq!(publishes_timed(&s), 0.0);
    append(&dir.path("conv.jsonl"), "1\n2\n");
    assert_eq!(next_data(&mut c).await, json!(1));
    assert_eq!(next_data(&mut c).await, json!(2));
    // The source's thread counts a publish once it returns, which may be
    // after its delivery reached the client (written at once).
    eventually_within("both publishes timed", std::time::Duration::from_secs(5), || {
        let timed = publishes_timed(&s);
        async move { timed == 2.0 }
    })
    .await;
    assert_eq!(publishes_timed(&s), 2.0, "and no more");
    s.shutdown().await;
}

/// On the Redis engine a file source publishes through Redis (from its own
/// thread, blocking on the runtime), and subscribers get the lines in order
/// with Redis's offsets.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_source_publishes_through_redis_on_the_redis_engine() {
    let redis = super::redis::RedisServer::start();
    let dir = TempDir::new("redis");
    fs::write(dir.path("conv.jsonl"), "").unwrap();
    let mut config = watch_config(&dir.0, TAIL_ONLY);
    config.engine.kind = crier_server::config::EngineType::Redis;
    config.engine.redis.address = vec![redis.url()];
    let s = TestServer::start(config).await;
    let mut c = subscriber(&s, &["conversation:conv"]).await;
    append(&dir.path("conv.jsonl"), "\"a\"\n\"b\"\n");
    let p1 = c.next_pub().await;
    let p2 = c.next_pub().await;
    assert_eq!(
        (p1["pub"]["data"].clone(), p2["pub"]["data"].clone()),
        (json!("a"), json!("b"))
    );
    assert_eq!(
        (p1["pub"]["offset"].clone(), p2["pub"]["offset"].clone()),
        (json!(1), json!(2))
    );
    s.shutdown().await;
}
