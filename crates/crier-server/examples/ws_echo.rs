//! A WebSocket echo server built from crier's own upgrade, framing and
//! permessage-deflate code (`net::rfc6455`, `net::deflate`), for the
//! Autobahn|Testsuite conformance run (`scripts/autobahn.sh`). Test-only:
//! it needs the `fuzzing` feature and is never part of the server.
//!
//! `cargo run -p crier-server --features fuzzing --example ws_echo -- 127.0.0.1:0`
//! prints `listening on ADDR` once bound and serves until it is killed.

use crier_server::fuzzing::{ws_echo, Deflate, EchoLimits};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let limits = EchoLimits {
        // Autobahn's largest messages (cases 9.x) are 16 MiB.
        message_size: 64 << 20,
        deflate: Some(Deflate {
            level: 1,
            min_size: 0,
        }),
    };
    ws_echo(listener, limits, std::future::pending()).await;
    Ok(())
}
