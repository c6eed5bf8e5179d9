//! The admin UI: its endpoints over HTTP (login, tokens, the attempt
//! limit, the prefix, `web_path`), and the UI itself in a real headless
//! chromium (`tests-interop/js/admin.mjs`).

use std::time::Duration;

use serde_json::{json, Value};

use super::interop::{repo_root, run_program_within, setup};
use super::support::*;

const ADMIN: &str = "[admin]\nenabled = true\npassword = \"admin-password\"\nsecret = \"admin-secret\"\n";

/// `method url [header] [body]` → (status, headers, body).
async fn http(
    method: &'static str,
    url: String,
    header: Option<(&'static str, String)>,
    body: Option<(&'static str, String)>,
) -> (u16, Vec<(String, String)>, String) {
    tokio::task::spawn_blocking(move || {
        let agent = http_agent();
        let mut resp = match method {
            "GET" => {
                let mut req = agent.get(&url);
                if let Some((name, value)) = &header {
                    req = req.header(*name, value);
                }
                req.call()
            }
            _ => {
                let mut req = agent.post(&url);
                if let Some((name, value)) = &header {
                    req = req.header(*name, value);
                }
                let (kind, body) = body.unwrap_or(("application/json", String::new()));
                req.header("Content-Type", kind).send(body)
            }
        }
        .expect("HTTP request");
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let status = resp.status().as_u16();
        (
            status,
            headers,
            resp.body_mut().read_to_string().unwrap_or_default(),
        )
    })
    .await
    .expect("blocking task")
}

async fn login(base: &str, password: &str) -> (u16, String) {
    let (status, _, body) = http(
        "POST",
        format!("{base}/admin/auth"),
        None,
        Some((
            "application/x-www-form-urlencoded",
            format!("password={password}"),
        )),
    )
    .await;
    let token = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, token)
}

async fn admin_api(base: &str, token: &str, body: Value) -> (u16, String) {
    let (status, _, body) = http(
        "POST",
        format!("{base}/admin/api"),
        Some(("Authorization", format!("token {token}"))),
        Some(("application/json", body.to_string())),
    )
    .await;
    (status, body)
}

#[tokio::test]
async fn the_admin_ui_is_off_unless_enabled() {
    let s = TestServer::start(config("")).await;
    let base = format!("http://{}", s.addr);
    for path in ["/", "/admin/init", "/app.js"] {
        let (status, _, _) = http("GET", format!("{base}{path}"), None, None).await;
        assert_eq!(status, 404, "{path} without admin.enabled");
    }
    s.shutdown().await;
}

#[test]
fn an_admin_ui_without_a_password_or_secret_is_refused_at_startup() {
    for extra in [
        "[admin]\nenabled = true\n",
        "[admin]\nenabled = true\npassword = \"p\"\n",
        "[admin]\nenabled = true\nsecret = \"s\"\n",
    ] {
        let (config, _) =
            crier_server::config::Config::parse_str(extra, crier_server::config::Format::Toml, "t.toml")
                .expect("parses");
        let err = config.validate().expect_err("refused");
        assert!(
            err.to_string().contains("admin.password and admin.secret"),
            "{err}"
        );
    }
    let (config, _) = crier_server::config::Config::parse_str(
        "[admin]\nenabled = true\ninsecure = true\n",
        crier_server::config::Format::Toml,
        "t.toml",
    )
    .expect("parses");
    let warnings = config.validate().expect("insecure needs neither");
    assert!(warnings.iter().any(|w| w.key == "admin.insecure"), "{warnings:?}");
}

#[tokio::test]
async fn login_gives_a_token_the_admin_api_requires() {
    let s = TestServer::start(config(ADMIN)).await;
    let base = format!("http://{}", s.addr);
    let (_, _, init) = http("GET", format!("{base}/admin/init"), None, None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&init).unwrap(),
        json!({"insecure": false, "edition": "oss", "authenticated": false})
    );
    let info = json!({"method": "info", "params": {}});
    assert_eq!(admin_api(&base, "", info.clone()).await.0, 401, "no token");
    assert_eq!(login(&base, "wrong").await.0, 400, "a wrong password");
    let (status, token) = login(&base, "admin-password").await;
    assert_eq!(status, 200);
    let (status, body) = admin_api(&base, &token, info.clone()).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["result"]["nodes"][0]["name"], json!(s.node.id), "{body}");
    let (_, _, init) = http(
        "GET",
        format!("{base}/admin/init"),
        Some(("Authorization", format!("token {token}"))),
        None,
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&init).unwrap()["authenticated"],
        json!(true)
    );
    // A server API error comes back as the server API answers it.
    let (_, body) = admin_api(&base, &token, json!({"method": "nope", "params": {}})).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        json!(104)
    );
    let (_, body) = admin_api(
        &base,
        &token,
        json!({"method": "publish", "params": {"channel": "chat:x"}}),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        json!(107),
        "{body}"
    );

    // Tokens signed with another secret, or expired, are refused; so is
    // every crier endpoint without one.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "admin", "exp": unix_now() + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret"),
    )
    .unwrap();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "admin", "exp": unix_now() - 10}),
        &jsonwebtoken::EncodingKey::from_secret(b"admin-secret"),
    )
    .unwrap();
    for bad in [forged.as_str(), expired.as_str(), "garbage"] {
        assert_eq!(admin_api(&base, bad, info.clone()).await.0, 401, "{bad}");
    }
    for path in [
        "/admin/stats",
        "/admin/connections",
        "/admin/config",
        "/admin/tail?channel=chat:x",
    ] {
        let (status, _, _) = http("GET", format!("{base}{path}"), None, None).await;
        assert_eq!(status, 401, "{path} without a token");
        let (status, _, _) = http(
            "GET",
            format!("{base}{path}"),
            Some(("Authorization", format!("token {expired}"))),
            None,
        )
        .await;
        assert_eq!(status, 401, "{path} with an expired token");
    }
    let (status, _, config) = http(
        "GET",
        format!("{base}/admin/config"),
        Some(("Authorization", format!("token {token}"))),
        None,
    )
    .await;
    assert_eq!(status, 200);
    for secret in ["admin-password", "admin-secret", SECRET, API_KEY] {
        assert!(!config.contains(secret), "{secret} shown in /admin/config");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn login_attempts_are_limited_per_minute() {
    let s = TestServer::start(config(ADMIN)).await;
    let base = format!("http://{}", s.addr);
    for i in 0..10 {
        assert_eq!(login(&base, "guess").await.0, 400, "attempt {i}");
    }
    assert_eq!(login(&base, "guess").await.0, 429, "the 11th in a minute");
    assert_eq!(
        login(&base, "admin-password").await.0,
        429,
        "even the right password waits"
    );
    // The server goes on serving everything else.
    let (status, _) = s.api("info", json!({})).await;
    assert_eq!(status, 200);
    s.shutdown().await;
}

#[tokio::test]
async fn the_ui_is_served_with_caching_headers_under_its_prefix() {
    let s = TestServer::start(config(&format!("{ADMIN}handler_prefix = \"/ops\"\n"))).await;
    let base = format!("http://{}", s.addr);
    let (status, headers, page) = http("GET", format!("{base}/ops/"), None, None).await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>crier admin</title>"), "{page}");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(header("cache-control"), "no-cache");
    assert!(header("content-security-policy").contains("default-src 'self'"));
    let etag = header("etag");
    let (status, _, _) = http("GET", format!("{base}/ops/"), Some(("If-None-Match", etag)), None).await;
    assert_eq!(status, 304, "unchanged since the ETag");
    for path in ["/ops/app.js", "/ops/app.css", "/ops/chart.js", "/ops/icon.svg"] {
        let (status, _, _) = http("GET", format!("{base}{path}"), None, None).await;
        assert_eq!(status, 200, "{path}");
    }
    let (status, _, _) = http("GET", format!("{base}/ops/admin/init"), None, None).await;
    assert_eq!(status, 200);
    let (status, _, _) = http("GET", format!("{base}/admin/init"), None, None).await;
    assert_eq!(status, 404, "only under the prefix");
    s.shutdown().await;
}

#[tokio::test]
async fn web_path_serves_another_web_app() {
    let dir = std::env::temp_dir().join(format!("crier-admin-web-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<h1>their app</h1>").unwrap();
    let s = TestServer::start(config(&format!(
        "{ADMIN}web_path = {:?}\n",
        dir.to_str().unwrap()
    )))
    .await;
    let base = format!("http://{}", s.addr);
    let (status, _, page) = http("GET", format!("{base}/"), None, None).await;
    assert_eq!((status, page.as_str()), (200, "<h1>their app</h1>"));
    let (status, _, _) = http("GET", format!("{base}/app.js"), None, None).await;
    assert_eq!(status, 404, "the embedded UI is not mixed in");
    s.shutdown().await;
    std::fs::remove_dir_all(dir).ok();
}

/// The UI in Debian's chromium: every page, as an operator uses it.
#[tokio::test]
async fn the_admin_ui_works_in_a_real_browser() {
    setup().await;
    let s = TestServer::start(config(ADMIN)).await;
    let shots = repo_root().join("target/admin-screenshots");
    let args = vec![
        "tests-interop/js/admin.mjs".to_owned(),
        format!("http://{}", s.addr),
        s.ws_url(),
        format!("http://{}/api", s.addr),
        API_KEY.to_owned(),
        shots.to_string_lossy().into_owned(),
        token("u1"),
        token("u2"),
        token("u3"),
    ];
    run_program_within("node", args, Duration::from_secs(120)).await;
    s.shutdown().await;
}

/// On a cluster engine every node's `info` (and so the admin UI's
/// overview) lists every node, each with its own figures; a node that
/// stops is left out once it is no longer heard from.
#[cfg(feature = "redis")]
#[tokio::test]
async fn info_lists_every_node_of_the_cluster() {
    let redis = super::redis::RedisServer::start();
    let engine = format!(
        "[engine]\ntype = \"redis\"\n[engine.redis]\naddress = \"{}\"\nconnect_timeout = \"300ms\"\nio_timeout = \"1s\"\n",
        redis.url()
    );
    let a = TestServer::start(config(&format!("{ADMIN}{engine}"))).await;
    let b = TestServer::start(config(&engine)).await;
    let _on_b = Client::connect(&b.ws_url(), &token("on-b")).await;
    let names = |info: &Value| -> Vec<(String, u64)> {
        info["result"]["nodes"]
            .as_array()
            .map(|n| {
                n.iter()
                    .map(|n| {
                        (
                            n["name"].as_str().unwrap_or("").to_owned(),
                            n["num_clients"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (a_id, b_id) = (a.node.id.clone(), b.node.id.clone());
    eventually_within("A lists B with its client", Duration::from_secs(10), || {
        let a = &a;
        let (a_id, b_id) = (a_id.clone(), b_id.clone());
        async move {
            let (_, info) = a.api("info", json!({})).await;
            let nodes = names(&info);
            nodes.first().map(|n| n.0.as_str()) == Some(a_id.as_str()) && nodes.contains(&(b_id, 1))
        }
    })
    .await;
    let (_, token) = login(&format!("http://{}", a.addr), "admin-password").await;
    let (_, _, stats) = http(
        "GET",
        format!("http://{}/admin/stats", a.addr),
        Some(("Authorization", format!("token {token}"))),
        None,
    )
    .await;
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["nodes"].as_array().map(Vec::len), Some(2), "{stats}");
    assert_eq!(stats["node"]["engine"]["ok"], json!(true), "{stats}");
    assert!(
        stats["heard_ms_ago"][&b_id].as_u64().is_some_and(|ms| ms < 5000),
        "B heard from lately: {stats}"
    );
    b.shutdown().await;
    // Gone quiet: the UI shows it unreachable (silent for more than two
    // rounds) until it leaves the list.
    let quiet = 2 * crier_server::node::NODE_INFO_EVERY.as_millis() as u64;
    let stats_url = format!("http://{}/admin/stats", a.addr);
    eventually_within("B silent for two rounds", Duration::from_secs(8), || {
        let (url, token, b_id) = (stats_url.clone(), token.clone(), b_id.clone());
        async move {
            let (_, _, stats) = http(
                "GET",
                url,
                Some(("Authorization", format!("token {token}"))),
                None,
            )
            .await;
            let stats: Value = serde_json::from_str(&stats).unwrap_or_default();
            stats["heard_ms_ago"][&b_id].as_u64().is_some_and(|ms| ms > quiet)
        }
    })
    .await;
    eventually_within(
        "A forgets B after NODE_INFO_TTL",
        crier_server::node::NODE_INFO_TTL + Duration::from_secs(5),
        || {
            let a = &a;
            async move { names(&a.api("info", json!({})).await.1).len() == 1 }
        },
    )
    .await;
    a.shutdown().await;
}
