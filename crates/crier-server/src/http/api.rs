//! `POST /api/<method>`: checks the API key, decodes the request, runs it
//! (`crate::api`), encodes the answer (errors as HTTP 200 `{"error":...}`,
//! or mapped to HTTP statuses in the "transport" error mode).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use crier_proto::api::{self, ApiResult};
use serde::Serialize;

use crate::api::{call_named, Answer, Outcome};
use crate::auth::{api_key_from_headers, api_key_matches};
use crate::config::ApiErrorMode;
use crate::node::Node;

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Handles `POST /api/<method>`.
pub(crate) async fn handle(
    State(node): State<Arc<Node>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !(node.config.http_api.insecure || node.config.crier.dev) {
        let x_api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let configured = node.config.http_api.key.expose();
        let given = api_key_from_headers(x_api_key, authorization);
        if !given.is_some_and(|g| api_key_matches(configured, g)) {
            return (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
        }
    }
    match call_named(&node, &method, &body).await {
        Answer::Malformed(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
        Answer::One(outcome) => respond(&node, outcome),
        Answer::Batch(batch) => json_response(StatusCode::OK, &batch),
    }
}

fn respond(node: &Node, outcome: Outcome) -> Response {
    match outcome {
        Ok(result) => json_response(StatusCode::OK, &api::Response::ok(result)),
        Err(error) => {
            let status = match node.config.http_api.error_mode {
                ApiErrorMode::Transport => StatusCode::from_u16(error.transport_status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                _ => StatusCode::OK,
            };
            json_response(status, &api::Response::<ApiResult>::error(error))
        }
    }
}
