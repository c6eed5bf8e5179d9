//! `POST /api/<method>`: checks the API key, decodes the request, runs it
//! (`crate::api`), encodes the answer (errors as HTTP 200 `{"error":...}`,
//! or mapped to HTTP statuses in the "transport" error mode).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use crier_proto::api::{self, ApiError, ApiResult, BatchReply, BatchResponse, Method, Request};
use crier_proto::codes::ErrorCode;
use serde::Serialize;

use crate::api::{call, Outcome};
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
    let Some(method) = Method::from_name(&method) else {
        return respond(&node, Err(ErrorCode::MethodNotFound.into()));
    };
    let request = match Request::parse(method, &body) {
        Ok(r) => r,
        Err(e) => {
            return match e.error_code() {
                // A body that is not JSON at all: Centrifugo answers 400.
                _ if matches!(e, crier_proto::Error::MalformedApiRequest(_)) => {
                    (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
                }
                Some(code) => respond(
                    &node,
                    Err(ApiError {
                        code: code.code(),
                        message: e.to_string().into(),
                    }),
                ),
                None => respond(&node, Err(ErrorCode::BadRequest.into())),
            };
        }
    };
    if let Request::Batch(batch) = request {
        let mut replies = Vec::with_capacity(batch.commands.len());
        for c in batch.commands {
            replies.push(BatchReply(match c.into_request() {
                Ok(r) => call(&node, r).await,
                Err(e) => Err(api_error_of(&e)),
            }));
        }
        return json_response(StatusCode::OK, &BatchResponse { replies });
    }
    let outcome = call(&node, request).await;
    respond(&node, outcome)
}

fn api_error_of(e: &crier_proto::Error) -> ApiError {
    let code = e.error_code().unwrap_or(ErrorCode::BadRequest);
    ApiError {
        code: code.code(),
        message: e.to_string().into(),
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
