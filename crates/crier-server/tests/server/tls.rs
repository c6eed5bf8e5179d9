//! TLS on the HTTP listener (`http_server.tls`): a real TLS client with a
//! test CA (rustls, curl, and centrifuge-python over `wss://`), a client
//! that does not trust the CA refused, and a certificate swap picked up by
//! new connections while open ones stay up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::support::*;

/// A test CA and the files of a certificate it signed for localhost and
/// 127.0.0.1.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("crier-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "crier test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let pki = Pki { dir, ca, ca_key };
        pki.issue("first");
        pki
    }

    /// Writes a new leaf certificate and key (`cert.pem`, `key.pem`);
    /// returns the certificate's DER.
    fn issue(&self, name: &str) -> Vec<u8> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        std::fs::write(self.dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(self.dir.join("key.pem"), key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }

    fn config(&self) -> String {
        format!(
            "[http_server.tls]\nenabled = true\ncert_pem = {:?}\nkey_pem = {:?}\n",
            self.path("cert.pem"),
            self.path("key.pem")
        )
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(self.ca.der().to_vec())).unwrap();
        let config = ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to `addr` trusting `pki`'s CA, and the certificate the
/// server showed.
async fn connect(pki: &Pki, addr: SocketAddr) -> (Tls, Vec<u8>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = pki
        .connector()
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let shown = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (tls, shown)
}

/// One keep-alive `POST /api/info` on `tls`; the answer's JSON.
async fn info(tls: &mut BufReader<Tls>) -> Value {
    api_over(tls, "info", json!({})).await
}

/// One keep-alive server API call on `tls`; the answer's JSON.
async fn api_over(tls: &mut BufReader<Tls>, method: &str, body: Value) -> Value {
    let body = body.to_string();
    let request = format!(
        "POST /api/{method} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.get_mut().write_all(request.as_bytes()).await.unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        tls.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    tls.read_exact(&mut body).await.unwrap();
    serde_json::from_slice(&body).unwrap()
}

async fn curl(args: Vec<String>) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(&args)
            .output()
            .expect("curl runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn curl_with_the_ca_gets_answers_and_without_it_is_refused() {
    let pki = Pki::new("curl");
    let s = TestServer::start(config(&pki.config())).await;
    let url = format!("https://localhost:{}/api/info", s.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", s.addr.port());
    let (code, out) = curl(vec![
        "--cacert".into(),
        pki.path("ca.pem"),
        "--resolve".into(),
        resolve.clone(),
        "-H".into(),
        format!("X-API-Key: {API_KEY}"),
        "-d".into(),
        "{}".into(),
        url.clone(),
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    let answer: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(answer["result"]["nodes"][0]["name"], json!(s.node.id));
    // A client that does not trust the CA: curl's "certificate problem" (60).
    let (code, out) = curl(vec!["--resolve".into(), resolve, "-d".into(), "{}".into(), url]).await;
    assert_eq!(code, 60, "{out}");
    // Plain HTTP on the TLS port gets no answer, and the server goes on.
    let (code, _) = curl(vec![format!("http://127.0.0.1:{}/health", s.addr.port())]).await;
    assert_ne!(code, 0);
    let (code, out) = curl(vec![
        "--cacert".into(),
        pki.path("ca.pem"),
        "--resolve".into(),
        format!("localhost:{}:127.0.0.1", s.addr.port()),
        format!("https://localhost:{}/health", s.addr.port()),
    ])
    .await;
    assert_eq!((code, out.as_str()), (0, "{}"));
    s.shutdown().await;
}

#[tokio::test]
async fn a_certificate_swap_reaches_new_connections_and_open_ones_stay_up() {
    let pki = Pki::new("reload");
    let s = TestServer::start(config(&format!("{}[uni_sse]\nenabled = true\n", pki.config()))).await;
    let (old, first) = connect(&pki, s.addr).await;
    let mut old = BufReader::new(old);
    assert_eq!(
        info(&mut old).await["result"]["nodes"][0]["name"],
        json!(s.node.id)
    );
    // An SSE stream open across the swap.
    let (mut sse, _) = connect(&pki, s.addr).await;
    let connect_request = json!({"token": token("sse-user"), "subs": {"news": {}}}).to_string();
    let request = format!(
        "POST /connection/uni_sse HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{connect_request}",
        connect_request.len()
    );
    sse.write_all(request.as_bytes()).await.unwrap();
    let mut sse = BufReader::new(sse);
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        sse.read_line(&mut line).await.unwrap();
    }
    assert!(line.contains("\"connect\""), "{line}");
    subscribers(&s, "news", 1).await;

    let second = pki.issue("second");
    assert_ne!(first, second);
    let running = s.node.config.clone();
    assert_eq!(
        s.node.reload_tls(&running).expect("reloads"),
        1,
        "the HTTP listener"
    );
    let (_, shown) = connect(&pki, s.addr).await;
    assert_eq!(shown, second, "a new connection gets the new certificate");
    // The open connections keep theirs and keep working.
    assert_eq!(
        info(&mut old).await["result"]["nodes"][0]["name"],
        json!(s.node.id)
    );
    api_over(
        &mut old,
        "publish",
        json!({"channel": "news", "data": {"after": "swap"}}),
    )
    .await;
    loop {
        line.clear();
        sse.read_line(&mut line).await.unwrap();
        if line.starts_with("data: ") {
            break;
        }
    }
    assert!(line.contains("\"after\":\"swap\""), "{line}");

    // A broken file keeps the current certificate and says why.
    std::fs::write(Path::new(&pki.path("key.pem")), "not a key").unwrap();
    let err = s.node.reload_tls(&running).expect_err("refused");
    assert!(err.to_string().contains("http_server.tls.key_pem"), "{err}");
    let (_, shown) = connect(&pki, s.addr).await;
    assert_eq!(shown, second, "the last good certificate stays");
    s.shutdown().await;
}

#[test]
fn tls_mistakes_are_refused_at_startup_with_the_key() {
    let pki = Pki::new("mistakes");
    for (extra, key) in [
        ("[http_server.tls]\nenabled = true\n", "http_server.tls"),
        (
            "[http_server.tls]\nenabled = true\ncert_pem = \"/no/such/cert.pem\"\nkey_pem = \"/no/such/key.pem\"\n",
            "http_server.tls.cert_pem",
        ),
    ] {
        let (config, _) = crier_server::config::Config::parse_str(extra, crier_server::config::Format::Toml, "t.toml")
            .expect("parses");
        let err = config.validate().expect_err("refused");
        assert!(err.to_string().contains(key), "{err}");
    }
    // A key that is not the certificate's: refused when the node starts.
    let other = KeyPair::generate().unwrap();
    std::fs::write(pki.dir.join("other.pem"), other.serialize_pem()).unwrap();
    let text = format!(
        "[http_server.tls]\nenabled = true\ncert_pem = {:?}\nkey_pem = {:?}\n",
        pki.path("cert.pem"),
        pki.path("other.pem")
    );
    let (config, _) =
        crier_server::config::Config::parse_str(&text, crier_server::config::Format::Toml, "t.toml").unwrap();
    let err = crier_server::Node::new(config).err().expect("refused");
    assert!(
        err.to_string().contains("does not match the certificate"),
        "{err}"
    );
}

/// Inline PEM works as well as a path (Centrifugo's PEMData).
#[tokio::test]
async fn the_pem_itself_works_in_place_of_a_path() {
    let pki = Pki::new("inline");
    let cert = std::fs::read_to_string(pki.path("cert.pem")).unwrap();
    let key = std::fs::read_to_string(pki.path("key.pem")).unwrap();
    let mut c = config("");
    c.http_server.tls.enabled = true;
    c.http_server.tls.cert_pem = cert;
    c.http_server.tls.key_pem = crier_server::config::Secret::new(key);
    let s = TestServer::start(c).await;
    let (tls, _) = tokio::time::timeout(Duration::from_secs(5), connect(&pki, s.addr))
        .await
        .unwrap();
    let mut tls = BufReader::new(tls);
    assert_eq!(
        info(&mut tls).await["result"]["nodes"][0]["name"],
        json!(s.node.id)
    );
    s.shutdown().await;
}

/// centrifuge-python over `wss://` and cent over `https://`, trusting
/// only the test CA (`tests-interop/py/tls.py`).
#[tokio::test]
async fn centrifuge_python_and_cent_work_over_tls() {
    super::interop::setup().await;
    let pki = Pki::new("python");
    let s = TestServer::start(config(&pki.config())).await;
    let port = s.addr.port();
    let args = vec![
        "tests-interop/py/tls.py".to_owned(),
        format!("wss://127.0.0.1:{port}/connection/websocket"),
        token("py-tls"),
        format!("https://127.0.0.1:{port}/api"),
        API_KEY.to_owned(),
        pki.path("ca.pem"),
    ];
    super::interop::run_program_within("tests-interop/.venv/bin/python", args, Duration::from_secs(40)).await;
    s.shutdown().await;
}

/// A `[[tcp]]` listener with `tls`: a TLS client trusting the test CA
/// gets the channel's publications as lines and publishes its own; a
/// plain TCP client gets nothing and the listener goes on.
#[tokio::test]
async fn a_tcp_listener_speaks_tls() {
    let pki = Pki::new("tcp");
    let cfg = format!(
        "[[tcp]]\nlisten = \"127.0.0.1:0\"\nchannels = [\"lines\"]\npublish_to = \"lines\"\necho = false\n[tcp.tls]\nenabled = true\ncert_pem = {:?}\nkey_pem = {:?}\n",
        pki.path("cert.pem"),
        pki.path("key.pem")
    );
    let (s, tcp) = TestServer::start_with_tcp(config(&cfg)).await;
    // A plain client: the handshake fails, nothing is served to it.
    let mut plain = TcpStream::connect(tcp[0]).await.unwrap();
    plain.write_all(b"not tls\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut sink)).await;
    assert!(!String::from_utf8_lossy(&sink).contains("lines"), "{sink:?}");

    let (tls, _) = connect(&pki, tcp[0]).await;
    let mut tls = BufReader::new(tls);
    subscribers(&s, "lines", 1).await;
    s.api("publish", json!({"channel": "lines", "data": "over tls"}))
        .await;
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_line(&mut line))
        .await
        .expect("a line in time")
        .unwrap();
    assert_eq!(line, "over tls\n");
    // Its own line is published (and, echo off, not sent back to it).
    let mut watcher = Client::connect(&s.ws_url(), &token("watcher")).await;
    let r = watcher.request(json!({"subscribe": {"channel": "lines"}})).await;
    assert!(r["subscribe"].is_object(), "{r}");
    tls.get_mut().write_all(b"from the tls client\n").await.unwrap();
    tls.get_mut().flush().await.unwrap();
    let p = watcher.next_pub().await;
    assert_eq!(p["pub"]["data"], json!("from the tls client"), "{p}");
    // A renewed certificate, re-read (as on SIGHUP): new connections to
    // the listener get it, the open one keeps working.
    let renewed = pki.issue("renewed");
    let running = s.node.config.clone();
    assert_eq!(
        s.node.reload_tls(&running).expect("reloads"),
        1,
        "the tcp listener"
    );
    let (_, shown) = connect(&pki, tcp[0]).await;
    assert_eq!(shown, renewed);
    s.api("publish", json!({"channel": "lines", "data": "after the swap"}))
        .await;
    line.clear();
    tokio::time::timeout(Duration::from_secs(5), tls.read_line(&mut line))
        .await
        .expect("a line in time")
        .unwrap();
    assert_eq!(line, "after the swap\n");
    s.shutdown().await;
}
