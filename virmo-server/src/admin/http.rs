//! The admin HTTP+JSON API (`docs/server-api.yaml`): each route builds an [`AdminRequest`] and
//! answers with its [`AdminResponse`]'s body. Every route needs `Authorization: Bearer <token>`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::{Admin, AdminError, AdminRequest, AdminResponse, EnrollRequest, JobRequest};
use crate::model::{Filter, JobState};

/// Where the API lives.
pub const PREFIX: &str = "/api/v1";

struct ApiState {
    admin: Arc<Admin>,
    token: String,
}

/// The admin routes, guarded by `token`.
pub fn router(admin: Arc<Admin>, token: String) -> Router {
    let state = Arc::new(ApiState { admin, token });
    Router::new()
        .route(&format!("{PREFIX}/devices"), get(devices).post(enroll))
        .route(
            &format!("{PREFIX}/devices/{{id}}"),
            get(device).delete(unenroll),
        )
        .route(&format!("{PREFIX}/devices/{{id}}/vms"), get(vms))
        .route(&format!("{PREFIX}/devices/{{id}}/tree"), get(tree))
        .route(
            &format!("{PREFIX}/devices/{{id}}/jobs"),
            axum::routing::post(queue),
        )
        .route(&format!("{PREFIX}/jobs"), get(jobs))
        .route(&format!("{PREFIX}/jobs/{{id}}"), get(job))
        .route(
            &format!("{PREFIX}/jobs/{{id}}/cancel"),
            axum::routing::post(cancel),
        )
        .route(&format!("{PREFIX}/alerts"), get(alerts))
        .route(&format!("{PREFIX}/events"), get(events))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// Compares in time that depends only on the lengths.
fn same(a: &str, b: &str) -> bool {
    omadm::auth::constant_time_eq(a.as_bytes(), b.as_bytes())
}

async fn authorize(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if same(token.trim(), &state.token) => next.run(request).await,
        _ => {
            tracing::warn!(path = %request.uri().path(), "admin request refused: no valid token");
            error(StatusCode::UNAUTHORIZED, "a valid admin token is required")
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn run(state: &ApiState, request: AdminRequest) -> Response {
    match state.admin.handle(request).await {
        Ok(response) => {
            let status = match &response {
                AdminResponse::Enrolled(_) => StatusCode::CREATED,
                AdminResponse::Queued { created: true, .. } => StatusCode::ACCEPTED,
                _ => StatusCode::OK,
            };
            (status, Json(response.into_body())).into_response()
        }
        Err(AdminError::NotFound(m)) => error(StatusCode::NOT_FOUND, &m),
        Err(AdminError::BadRequest(m)) => error(StatusCode::BAD_REQUEST, &m),
        Err(AdminError::Conflict(m)) => error(StatusCode::CONFLICT, &m),
        Err(AdminError::Store(err)) => {
            tracing::error!(error = %err, "admin request failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "storage failed")
        }
        Err(err @ AdminError::Random(_)) => {
            tracing::error!(error = %err, "admin request failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string())
        }
    }
}

/// A list filter from the query (`device`, `state`, `after`, `limit`).
fn filter(query: &HashMap<String, String>) -> Result<Filter, Box<Response>> {
    let number = |name: &str| -> Result<Option<i64>, Box<Response>> {
        query
            .get(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    Box::new(error(
                        StatusCode::BAD_REQUEST,
                        &format!("`{name}` must be a number"),
                    ))
                })
            })
            .transpose()
    };
    let state = match query.get("state") {
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                &format!("no job state `{s}`"),
            ))
        })?),
        None => None,
    };
    Ok(Filter {
        device_id: query.get("device").cloned(),
        state,
        after_id: number("after")?,
        limit: number("limit")?,
    })
}

type Q = Query<HashMap<String, String>>;
type St = State<Arc<ApiState>>;

async fn devices(State(s): St) -> Response {
    run(&s, AdminRequest::Devices).await
}

async fn enroll(
    State(s): St,
    body: Result<Json<EnrollRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(Json(body)) => run(&s, AdminRequest::Enroll(body)).await,
        Err(rejection) => error(StatusCode::BAD_REQUEST, &rejection.body_text()),
    }
}

async fn device(State(s): St, Path(id): Path<String>) -> Response {
    run(&s, AdminRequest::Device { id }).await
}

async fn unenroll(State(s): St, Path(id): Path<String>) -> Response {
    run(&s, AdminRequest::Unenroll { id }).await
}

async fn vms(State(s): St, Path(device): Path<String>) -> Response {
    run(&s, AdminRequest::Vms { device }).await
}

async fn tree(State(s): St, Path(device): Path<String>) -> Response {
    run(&s, AdminRequest::Tree { device }).await
}

async fn queue(
    State(s): St,
    Path(device): Path<String>,
    body: Result<Json<JobRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(Json(job)) => run(&s, AdminRequest::Queue { device, job }).await,
        Err(rejection) => error(StatusCode::BAD_REQUEST, &rejection.body_text()),
    }
}

async fn jobs(State(s): St, Query(query): Q) -> Response {
    match filter(&query) {
        Ok(filter) => run(&s, AdminRequest::Jobs { filter }).await,
        Err(response) => *response,
    }
}

async fn job(State(s): St, Path(id): Path<i64>, Query(query): Q) -> Response {
    let changed_since = query.get("changed_since").and_then(|v| v.parse().ok());
    let wait_ms = query.get("wait_ms").and_then(|v| v.parse().ok());
    run(
        &s,
        AdminRequest::Job {
            id,
            changed_since,
            wait_ms,
        },
    )
    .await
}

async fn cancel(State(s): St, Path(id): Path<i64>) -> Response {
    run(&s, AdminRequest::CancelJob { id }).await
}

async fn alerts(State(s): St, Query(query): Q) -> Response {
    match filter(&query) {
        Ok(filter) => run(&s, AdminRequest::Alerts { filter }).await,
        Err(response) => *response,
    }
}

async fn events(State(s): St, Query(query): Q) -> Response {
    match filter(&query) {
        Ok(filter) => run(&s, AdminRequest::Events { filter }).await,
        Err(response) => *response,
    }
}

impl AdminResponse {
    /// The JSON body the API answers with (the payload without the enum's tag).
    pub fn into_body(self) -> serde_json::Value {
        let value = serde_json::to_value(self).unwrap_or_default();
        value.get("body").cloned().unwrap_or(value)
    }
}
