//! `nats-bench` against a real `nats-server` on a free loopback port: the
//! comparison script's NATS figures are only worth something if this
//! client counts every delivery and loses none at a modest rate. Waits are
//! on output lines and exits with a deadline, never sleeps.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// Killed and reaped on drop, so a failing assertion leaves no server.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `nats-server` on 127.0.0.1 with a port of its own choosing.
fn nats_server() -> (Guard, String) {
    let mut child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", "-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "nats-server is needed for this test: install it (apt-get install nats-server; .ci/run does)",
        );
    let stderr = child.stderr.take().expect("stderr is piped");
    let guard = Guard(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some((_, addr)) = line.split_once("Listening for client connections on ") {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("nats-server prints the address it listens on");
    (guard, addr)
}

#[test]
fn every_delivery_is_counted_and_none_is_lost() {
    let (server, addr) = nats_server();
    let pid = server.0.id().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_nats-bench"))
        .args(["--server", &addr, "--server-pid", &pid])
        .args(["--subscribers", "10", "--rate", "200", "--duration", "1"])
        .stdin(Stdio::null())
        .output()
        .expect("run nats-bench");
    assert!(
        output.status.success(),
        "nats-bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 report");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    let sent = report["sent"].as_u64().expect("sent");
    assert!(sent >= 100, "too few publications in 1 s at 200/s: {report}");
    assert_eq!(report["deliveries"].as_u64(), Some(sent * 10), "{report}");
    assert_eq!(report["loss"].as_u64(), Some(0), "{report}");
    assert_eq!(report["subscribers_gone"].as_u64(), Some(0), "{report}");
    assert!(
        report["latency_us"]["p99"].as_u64().is_some_and(|p| p > 0),
        "{report}"
    );
    assert!(report["server_cpu_seconds"].as_f64().is_some(), "{report}");
}

#[test]
fn a_remote_server_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_nats-bench"))
        .args([
            "--server",
            "192.0.2.1:4222",
            "--subscribers",
            "1",
            "--duration",
            "1",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run nats-bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}
