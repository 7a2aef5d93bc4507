//! The route table: method + path + body → [`VmRequest`], and the VM's answer → status + JSON.
//!
//! Sans-IO: [`dispatch`] decides what a request means, [`Responder::reply`] turns the VM's
//! answer into a [`Response`]; the server does the calling in between. A new route is one
//! entry in [`ROUTES`] with a decoder (path parameters and body → [`VmRequest`]) and a responder
//! (the [`VmResponse`] it expects → status and body). For instance the planned peripheral
//! gating route would be
//!
//! ```text
//! Route { method: "PUT", path: "/v1/devices/{id}/policy", action: Action::Vm {
//!     decode: |params, body| { let p: DevicePolicy = json_body(body)?;
//!                              Ok(VmRequest::SetDevicePolicy { id: params.get("id")?, allowed: p.allowed }) },
//!     responder: Responder::NoContent } }
//! ```

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::http::{Response, StatusCode};
use super::types::{ShutdownRequest, ShutdownResponse, VersionInfo};
use crate::control::{ControlError, VmRequest, VmResponse};
use std::time::Duration;

/// One entry of the route table.
pub struct Route {
    pub method: &'static str,
    /// Literal segments and `{name}` parameters, e.g. `/v1/devices/{id}/policy`.
    pub path: &'static str,
    pub action: Action,
}

/// What a route does.
#[derive(Clone, Copy)]
pub enum Action {
    /// Answered by the API layer itself, without the VM.
    Local(fn() -> Response),
    /// Carried out by the VM.
    Vm {
        decode: fn(&PathParams, &[u8]) -> Result<VmRequest, Response>,
        responder: Responder,
    },
}

/// How the VM's successful answer to a route is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Responder {
    /// `VmResponse::Done` → 204.
    NoContent,
    /// `VmResponse::Info` → 200 with [`VmInfo`](super::types::VmInfo).
    Info,
    /// `VmResponse::Shutdown` → 200 with [`ShutdownResponse`].
    Shutdown,
}

impl Responder {
    /// The response for the VM's answer. An answer of the wrong kind is the VM's bug: 500.
    pub fn reply(self, outcome: &Result<VmResponse, ControlError>) -> Response {
        match (self, outcome) {
            (Self::NoContent, Ok(VmResponse::Done)) => Response::empty(StatusCode::NO_CONTENT),
            (Self::Info, Ok(VmResponse::Info(info))) => Response::json(StatusCode::OK, info),
            (Self::Shutdown, Ok(VmResponse::Shutdown(outcome))) => {
                Response::json(StatusCode::OK, &ShutdownResponse { outcome: *outcome })
            }
            (_, Ok(other)) => Response::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the VM gave an answer of the wrong kind: {other:?}"),
            ),
            (_, Err(e)) => error_response(e),
        }
    }
}

/// The status for each [`ControlError`].
pub fn error_response(error: &ControlError) -> Response {
    let status = match error {
        ControlError::InvalidState { .. } => StatusCode::CONFLICT,
        ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Response::error(status, error.to_string())
}

/// The routes of API v1.
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/v1/version",
        action: Action::Local(|| Response::json(StatusCode::OK, &VersionInfo::current())),
    },
    Route {
        method: "GET",
        path: "/v1/vm",
        action: Action::Vm {
            decode: |_, body| no_body(body).map(|()| VmRequest::GetInfo),
            responder: Responder::Info,
        },
    },
    Route {
        method: "PUT",
        path: "/v1/vm/pause",
        action: Action::Vm {
            decode: |_, body| no_body(body).map(|()| VmRequest::Pause),
            responder: Responder::NoContent,
        },
    },
    Route {
        method: "PUT",
        path: "/v1/vm/resume",
        action: Action::Vm {
            decode: |_, body| no_body(body).map(|()| VmRequest::Resume),
            responder: Responder::NoContent,
        },
    },
    Route {
        method: "PUT",
        path: "/v1/vm/shutdown",
        action: Action::Vm {
            decode: |_, body| {
                let request: ShutdownRequest = json_body(body)?;
                Ok(VmRequest::Shutdown {
                    timeout: Duration::from_millis(request.timeout_ms),
                })
            },
            responder: Responder::Shutdown,
        },
    },
    Route {
        method: "PUT",
        path: "/v1/vm/stop",
        action: Action::Vm {
            decode: |_, body| no_body(body).map(|()| VmRequest::Stop),
            responder: Responder::NoContent,
        },
    },
];

/// What a request means.
#[derive(Debug)]
pub enum Dispatch {
    /// The answer is known without the VM (local routes and every routing or body error).
    Reply(Response),
    /// Hand `request` to the VM; write its answer with `responder`.
    Vm {
        request: VmRequest,
        responder: Responder,
    },
}

/// Looks `method` and `path` up in [`ROUTES`] and decodes `body`.
pub fn dispatch(method: &str, path: &str, body: &[u8]) -> Dispatch {
    dispatch_in(ROUTES, method, path, body)
}

fn dispatch_in(routes: &[Route], method: &str, path: &str, body: &[u8]) -> Dispatch {
    let mut allowed: Vec<&str> = Vec::new();
    for route in routes {
        let Some(params) = match_path(route.path, path) else {
            continue;
        };
        if route.method != method {
            allowed.push(route.method);
            continue;
        }
        return match route.action {
            Action::Local(answer) => Dispatch::Reply(answer()),
            Action::Vm { decode, responder } => match decode(&params, body) {
                Ok(request) => Dispatch::Vm { request, responder },
                Err(response) => Dispatch::Reply(response),
            },
        };
    }
    if allowed.is_empty() {
        return Dispatch::Reply(Response::error(
            StatusCode::NOT_FOUND,
            format!("no such resource: {path}"),
        ));
    }
    allowed.sort_unstable();
    allowed.dedup();
    let allow = allowed.join(", ");
    Dispatch::Reply(
        Response::error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}; allowed: {allow}"),
        )
        .with_header("Allow", allow),
    )
}

/// The `{name}` segments of a matched path.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PathParams(Vec<(&'static str, String)>);

impl PathParams {
    /// The value of parameter `name`; a 500 response if the route has none of that name (a bug
    /// in the route table).
    pub fn get(&self, name: &str) -> Result<&str, Response> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| {
                Response::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("route has no parameter {name}"),
                )
            })
    }
}

/// Matches `path` against `pattern`; a `{name}` segment matches any non-empty segment.
fn match_path(pattern: &'static str, path: &str) -> Option<PathParams> {
    let mut params = PathParams::default();
    let mut want = pattern.split('/');
    let mut have = path.split('/');
    loop {
        match (want.next(), have.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(h)) => {
                if let Some(name) = w.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                    if h.is_empty() {
                        return None;
                    }
                    params.0.push((name, h.to_owned()));
                } else if w != h {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

/// A body that must be absent: empty, or an empty JSON object (`curl -d '{}'`).
fn no_body(body: &[u8]) -> Result<(), Response> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Empty {}
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    json_body::<Empty>(body)
        .map(|_| ())
        .map_err(|_| Response::error(StatusCode::BAD_REQUEST, "this request takes no body"))
}

/// Decodes a JSON object body; a 400 naming the offending field otherwise.
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(Response::error(
                StatusCode::BAD_REQUEST,
                "this request needs a JSON body",
            ))
        }
        // serde would also read a struct from an array; the API only speaks objects.
        Some(b'{') => {}
        Some(_) => {
            return Err(Response::error(
                StatusCode::BAD_REQUEST,
                "invalid JSON body: expected a JSON object",
            ))
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        // `.` is the document itself, `?` a place the parser could not name (broken JSON);
        // serde's "unknown field `x`" names the field already.
        let message = if path == "." || path.contains('?') || inner.starts_with("unknown field") {
            format!("invalid JSON body: {inner}")
        } else {
            format!("invalid field `{path}`: {inner}")
        };
        Response::error(StatusCode::BAD_REQUEST, message)
    })?;
    deserializer.end().map_err(|e| {
        Response::error(
            StatusCode::BAD_REQUEST,
            format!("invalid JSON body: trailing data: {e}"),
        )
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{RunState, ShutdownOutcome, VmInfo};

    fn reply(method: &str, path: &str, body: &[u8]) -> Response {
        match dispatch(method, path, body) {
            Dispatch::Reply(response) => response,
            Dispatch::Vm { request, .. } => panic!("expected a reply, got {request:?}"),
        }
    }

    fn vm(method: &str, path: &str, body: &[u8]) -> (VmRequest, Responder) {
        match dispatch(method, path, body) {
            Dispatch::Vm { request, responder } => (request, responder),
            Dispatch::Reply(response) => panic!(
                "expected a VM request, got {} {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            ),
        }
    }

    fn error_text(response: &Response) -> String {
        let body: crate::api::types::ErrorBody = serde_json::from_slice(&response.body).unwrap();
        body.error
    }

    fn info() -> VmInfo {
        VmInfo {
            id: "vm-1".into(),
            state: RunState::Running,
            vcpus: 2,
            memory_mib: 256,
            uptime_ms: 5,
            pid: 42,
            vmm_version: "0.1.0".into(),
        }
    }

    #[test]
    fn every_vm_route_decodes_to_its_request() {
        assert_eq!(
            vm("GET", "/v1/vm", b""),
            (VmRequest::GetInfo, Responder::Info)
        );
        assert_eq!(
            vm("PUT", "/v1/vm/pause", b""),
            (VmRequest::Pause, Responder::NoContent)
        );
        assert_eq!(
            vm("PUT", "/v1/vm/resume", b" {} "),
            (VmRequest::Resume, Responder::NoContent)
        );
        assert_eq!(
            vm("PUT", "/v1/vm/stop", b"\n"),
            (VmRequest::Stop, Responder::NoContent)
        );
        assert_eq!(
            vm("PUT", "/v1/vm/shutdown", br#"{"timeout_ms": 1500}"#),
            (
                VmRequest::Shutdown {
                    timeout: Duration::from_millis(1500)
                },
                Responder::Shutdown
            )
        );
    }

    #[test]
    fn version_is_answered_locally() {
        let response = reply("GET", "/v1/version", b"");
        assert_eq!(response.status, StatusCode::OK);
        let version: VersionInfo = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(version.api, "v1");
        assert_eq!(version.vmm, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn unknown_paths_are_404() {
        for path in [
            "/",
            "/v1",
            "/v1/vm/",
            "/v1/vm/pause/now",
            "/v2/vm",
            "/v1/VM",
        ] {
            let response = reply("GET", path, b"");
            assert_eq!(response.status, StatusCode::NOT_FOUND, "{path}");
            assert!(error_text(&response).contains(path));
        }
    }

    #[test]
    fn wrong_methods_are_405_with_allow() {
        for (method, path, allow) in [
            ("PUT", "/v1/vm", "GET"),
            ("GET", "/v1/vm/pause", "PUT"),
            ("POST", "/v1/vm/shutdown", "PUT"),
            ("DELETE", "/v1/version", "GET"),
            ("get", "/v1/vm", "GET"),
        ] {
            let response = reply(method, path, b"");
            assert_eq!(
                response.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_eq!(response.headers, vec![("Allow", allow.to_owned())]);
        }
    }

    #[test]
    fn bad_bodies_are_400_naming_the_field() {
        for (body, expected) in [
            (&b""[..], "needs a JSON body"),
            (b"{", "invalid JSON body"),
            (b"{}", "timeout_ms"),
            (br#"{"timeout_ms":"soon"}"#, "invalid field `timeout_ms`"),
            (br#"{"timeout_ms":-1}"#, "invalid field `timeout_ms`"),
            (br#"{"timeout_ms":1,"force":true}"#, "force"),
            (br#"{"timeout_ms":1} x"#, "trailing"),
            (b"[1]", "invalid JSON body"),
        ] {
            let response = reply("PUT", "/v1/vm/shutdown", body);
            assert_eq!(response.status, StatusCode::BAD_REQUEST);
            let text = error_text(&response);
            assert!(text.contains(expected), "{text:?} lacks {expected:?}");
        }
    }

    #[test]
    fn bodies_on_bodiless_routes_are_400() {
        for body in [&br#"{"x":1}"#[..], b"null", b"garbage"] {
            let response = reply("PUT", "/v1/vm/pause", body);
            assert_eq!(response.status, StatusCode::BAD_REQUEST);
            assert_eq!(error_text(&response), "this request takes no body");
        }
    }

    #[test]
    fn vm_answers_become_statuses_and_bodies() {
        let ok = Responder::Info.reply(&Ok(VmResponse::Info(info())));
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(serde_json::from_slice::<VmInfo>(&ok.body).unwrap(), info());

        let done = Responder::NoContent.reply(&Ok(VmResponse::Done));
        assert_eq!((done.status, done.body.len()), (StatusCode::NO_CONTENT, 0));

        let shutdown =
            Responder::Shutdown.reply(&Ok(VmResponse::Shutdown(ShutdownOutcome::Forced)));
        assert_eq!(shutdown.status, StatusCode::OK);
        assert_eq!(shutdown.body, br#"{"outcome":"forced"}"#);
    }

    #[test]
    fn control_errors_become_409_400_500() {
        let cases = [
            (
                ControlError::InvalidState {
                    state: "paused".into(),
                    reason: "already paused".into(),
                },
                StatusCode::CONFLICT,
            ),
            (
                ControlError::BadRequest("timeout too long".into()),
                StatusCode::BAD_REQUEST,
            ),
            (
                ControlError::Internal("vCPU gone".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (error, status) in cases {
            let response = Responder::NoContent.reply(&Err(error.clone()));
            assert_eq!(response.status, status);
            assert_eq!(error_text(&response), error.to_string());
        }
    }

    #[test]
    fn an_answer_of_the_wrong_kind_is_500() {
        let response = Responder::Info.reply(&Ok(VmResponse::Done));
        assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn path_parameters_are_captured() {
        let params = match_path("/v1/devices/{id}/policy", "/v1/devices/usb-3/policy").unwrap();
        assert_eq!(params.get("id").unwrap(), "usb-3");
        assert!(params.get("other").is_err());
        assert!(match_path("/v1/devices/{id}/policy", "/v1/devices//policy").is_none());
        assert!(match_path("/v1/devices/{id}/policy", "/v1/devices/x").is_none());
    }

    #[test]
    fn parameterised_routes_slot_into_a_table() {
        let routes = [Route {
            method: "PUT",
            path: "/v1/devices/{id}/policy",
            action: Action::Vm {
                decode: |params, _| Err(Response::error(StatusCode::CONFLICT, params.get("id")?)),
                responder: Responder::NoContent,
            },
        }];
        match dispatch_in(&routes, "PUT", "/v1/devices/net0/policy", b"") {
            Dispatch::Reply(r) => assert_eq!(error_text(&r), "net0"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn route_paths_are_unique_per_method() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "{} {} twice",
                    a.method,
                    a.path
                );
            }
        }
    }

    /// `docs/openapi.yaml` and `docs/api.md` list exactly the routes of the table.
    #[test]
    fn the_docs_list_every_route() {
        let openapi = include_str!("../../../docs/openapi.yaml");
        let guide = include_str!("../../../docs/api.md");
        for route in ROUTES {
            let start = openapi
                .find(&format!("\n  {}:\n", route.path))
                .unwrap_or_else(|| panic!("{} missing from openapi.yaml", route.path));
            let block = &openapi[start + 1..];
            let end = block[1..].find("\n  /").map_or(block.len(), |e| e + 1);
            let end = end.min(block.find("\ncomponents:").unwrap_or(block.len()));
            let method = format!("\n    {}:\n", route.method.to_ascii_lowercase());
            assert!(
                block[..end].contains(&method),
                "{} {} missing from openapi.yaml",
                route.method,
                route.path
            );
            let row = format!("| `{}` | `{}` |", route.method, route.path);
            assert!(guide.contains(&row), "{row} missing from api.md");
        }
        let documented = openapi
            .lines()
            .filter_map(|l| l.strip_prefix("  /"))
            .filter_map(|l| l.strip_suffix(':'));
        for path in documented {
            let path = format!("/{path}");
            assert!(
                ROUTES.iter().any(|r| r.path == path),
                "openapi.yaml documents {path}, which is not a route"
            );
        }
    }
}
