//! The DM endpoint over HTTP: `POST <path>` (package 1, or a device that ignores RespURIs) and
//! `POST <path>/s/<token>` (the RespURI of a running session).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use super::{DmReply, DmService};

/// Bodies above this are refused (a session refuses above its own MaxMsgSize with 413 inside).
const MAX_BODY_BYTES: usize = 16 << 20;

/// The DM routes under `path` (e.g. `/dm`).
pub fn router(service: Arc<DmService>, path: &str) -> Router {
    Router::new()
        .route(path, post(base))
        .route(&format!("{path}/s/{{token}}"), post(with_token))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(service)
}

fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

async fn base(State(service): State<Arc<DmService>>, headers: HeaderMap, body: Bytes) -> Response {
    serve(&service, None, &headers, &body).await
}

async fn with_token(
    State(service): State<Arc<DmService>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(&service, Some(&token), &headers, &body).await
}

async fn serve(
    service: &DmService,
    token: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let reply = service
        .handle(
            token,
            header_text(headers, header::CONTENT_TYPE.as_str()),
            header_text(headers, omadm::transport::HMAC_HEADER),
            body,
        )
        .await;
    match reply {
        DmReply::Message {
            body,
            content_type,
            hmac,
        } => {
            let mut response = (StatusCode::OK, body).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            if let Some(mac) = hmac.and_then(|mac| HeaderValue::from_str(&mac).ok()) {
                headers.insert(omadm::transport::HMAC_HEADER, mac);
            }
            response
        }
        DmReply::Refused { status, reason } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            reason,
        )
            .into_response(),
    }
}
