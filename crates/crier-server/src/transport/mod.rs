//! The transports that accept clients. Each only adapts its I/O: it hands
//! what a client sent to the one admission path and the session, and
//! writes what the hub queued. They never import each other; what they
//! share lives below them (`net`, `wire`, `session`).

pub(crate) mod emulation;
pub(crate) mod tcp;
pub(crate) mod uni;
pub(crate) mod websocket;

/// The remote address of the connection a request came on (the HTTP
/// server puts it in every request's extensions), for the logs: the
/// socket's peer, so a reverse proxy's own address when one is in front.
/// `None` for a request served without a socket (a router test).
pub(crate) fn remote(extensions: &axum::http::Extensions) -> Option<std::net::SocketAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0)
}

/// [`remote`] as a handler's argument; never refuses a request.
pub(crate) struct Remote(pub Option<std::net::SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Remote {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Remote(remote(&parts.extensions)))
    }
}
