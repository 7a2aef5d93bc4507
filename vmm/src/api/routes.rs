//! The route table: method + path + body → [`VmRequest`], and the VM's answer → status + JSON.
//!
//! Sans-IO: [`dispatch`] decides what a request means, [`Responder::reply`] turns the VM's
//! answer into a [`Response`]; the server does the calling in between. A new route is one
//! entry in [`ROUTES`] with a decoder (path parameters and body → [`VmRequest`]) and a responder
//! (the [`VmResponse`] it expects → status and body), e.g. peripheral gating:
//!
//! ```text
//! Route { method: "PUT", path: "/v1/devices/{id}/policy", action: Action::Vm {
//!     decode: |params, body| { let p: DevicePolicyRequest = json_body(body)?;
//!                              Ok(VmRequest::SetDevicePolicy { id: params.get("id")?, allowed: p.allowed }) },
//!     responder: Responder::DevicePolicy } }
//! ```

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::http::{Response, StatusCode};
use super::types::{
    DevicePolicyRequest, ShutdownRequest, ShutdownResponse, SnapshotRequest, VersionInfo,
};
use crate::control::{ControlError, VmRequest, VmResponse};
use std::path::Path;
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
    /// `VmResponse::Snapshot` → 200 with [`SnapshotInfo`](super::types::SnapshotInfo).
    Snapshot,
    /// `VmResponse::Devices` → 200 with an array of [`DeviceInfo`](super::types::DeviceInfo).
    Devices,
    /// `VmResponse::DevicePolicy` → 200 with [`DevicePolicy`](super::types::DevicePolicy).
    DevicePolicy,
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
            (Self::Snapshot, Ok(VmResponse::Snapshot(info))) => {
                Response::json(StatusCode::OK, info)
            }
            (Self::Devices, Ok(VmResponse::Devices(devices))) => {
                Response::json(StatusCode::OK, devices)
            }
            (Self::DevicePolicy, Ok(VmResponse::DevicePolicy(policy))) => {
                Response::json(StatusCode::OK, policy)
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
        ControlError::NotFound(_) => StatusCode::NOT_FOUND,
        ControlError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
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
    Route {
        method: "PUT",
        path: "/v1/vm/snapshot",
        action: Action::Vm {
            decode: |_, body| {
                let request: SnapshotRequest = json_body(body)?;
                check_snapshot_dir(&request.dir)?;
                Ok(VmRequest::Snapshot {
                    dir: request.dir,
                    keep_running: request.keep_running,
                })
            },
            responder: Responder::Snapshot,
        },
    },
    Route {
        method: "GET",
        path: "/v1/devices",
        action: Action::Vm {
            decode: |_, body| no_body(body).map(|()| VmRequest::ListDevices),
            responder: Responder::Devices,
        },
    },
    Route {
        method: "PUT",
        path: "/v1/devices/{id}/policy",
        action: Action::Vm {
            decode: |params, body| {
                let id = params.get("id")?;
                let request: DevicePolicyRequest = json_body(body)?;
                Ok(VmRequest::SetDevicePolicy {
                    id,
                    allowed: request.allowed,
                })
            },
            responder: Responder::DevicePolicy,
        },
    },
];

/// A snapshot folder must be an absolute path naming a folder (not `/`, not ending in `..`):
/// the VMM's working directory is none of the caller's business, and the folder is written
/// next to itself and renamed into place.
fn check_snapshot_dir(dir: &Path) -> Result<(), Response> {
    let why = if !dir.is_absolute() {
        "must be an absolute path"
    } else if dir.file_name().is_none() {
        "must name a folder (not `/` and not ending in `..`)"
    } else if dir.as_os_str().as_encoded_bytes().contains(&0) {
        "must not contain NUL"
    } else {
        return Ok(());
    };
    Err(Response::error(
        StatusCode::BAD_REQUEST,
        format!("invalid field `dir`: {why}: {}", dir.display()),
    ))
}

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
    /// The value of parameter `name`, percent-decoded; a 400 response if it does not decode to
    /// UTF-8, a 500 response if the route has no parameter of that name (a bug in the route
    /// table).
    pub fn get(&self, name: &str) -> Result<String, Response> {
        let raw = self
            .0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| {
                Response::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("route has no parameter {name}"),
                )
            })?;
        percent_decode(raw).ok_or_else(|| {
            Response::error(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid path parameter `{name}`: bad percent-encoding or not UTF-8: {raw}"
                ),
            )
        })
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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
    use crate::api::types::{
        DeviceInfo, DevicePolicy, RunState, ShutdownOutcome, SnapshotInfo, VmInfo,
    };
    use std::path::PathBuf;

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
        assert_eq!(
            vm(
                "PUT",
                "/v1/vm/snapshot",
                br#"{"dir": "/var/lib/virmo/vm-1/snap"}"#
            ),
            (
                VmRequest::Snapshot {
                    dir: PathBuf::from("/var/lib/virmo/vm-1/snap"),
                    keep_running: false
                },
                Responder::Snapshot
            )
        );
        assert_eq!(
            vm(
                "PUT",
                "/v1/vm/snapshot",
                br#"{"keep_running": true, "dir": "/s"}"#
            ),
            (
                VmRequest::Snapshot {
                    dir: PathBuf::from("/s"),
                    keep_running: true
                },
                Responder::Snapshot
            )
        );
        assert_eq!(
            vm("GET", "/v1/devices", b""),
            (VmRequest::ListDevices, Responder::Devices)
        );
        assert_eq!(
            vm("PUT", "/v1/devices/net0/policy", br#"{"allowed": false}"#),
            (
                VmRequest::SetDevicePolicy {
                    id: "net0".into(),
                    allowed: false
                },
                Responder::DevicePolicy
            )
        );
    }

    #[test]
    fn device_ids_are_percent_decoded() {
        for (segment, id) in [
            ("usb%2D3", "usb-3"),
            ("disk%20two", "disk two"),
            ("%C3%A9t%c3%a9", "\u{e9}t\u{e9}"),
            ("a%2Fb", "a/b"),
        ] {
            let path = format!("/v1/devices/{segment}/policy");
            let (request, _) = vm("PUT", &path, br#"{"allowed": true}"#);
            assert_eq!(
                request,
                VmRequest::SetDevicePolicy {
                    id: id.into(),
                    allowed: true
                }
            );
        }
        for segment in ["%", "%4", "%zz", "%+f", "%FF", "a%C3"] {
            let path = format!("/v1/devices/{segment}/policy");
            let response = reply("PUT", &path, br#"{"allowed": true}"#);
            assert_eq!(response.status, StatusCode::BAD_REQUEST, "{segment}");
            assert!(error_text(&response).contains("`id`"), "{segment}");
        }
    }

    #[test]
    fn snapshot_dirs_must_be_absolute_folder_paths() {
        for (body, expected) in [
            (&br#"{"dir": "snap"}"#[..], "absolute"),
            (br#"{"dir": ""}"#, "absolute"),
            (br#"{"dir": "./snap"}"#, "absolute"),
            (br#"{"dir": "/"}"#, "name a folder"),
            (br#"{"dir": "/var/.."}"#, "name a folder"),
            (br#"{"dir": "/var/snap\u0000x"}"#, "NUL"),
            (br#"{}"#, "missing field `dir`"),
            (br#"{"dir": 7}"#, "invalid field `dir`"),
            (
                br#"{"dir": "/s", "keep_running": "yes"}"#,
                "invalid field `keep_running`",
            ),
            (
                br#"{"dir": "/s", "compress": true}"#,
                "unknown field `compress`",
            ),
            (b"", "needs a JSON body"),
        ] {
            let response = reply("PUT", "/v1/vm/snapshot", body);
            assert_eq!(response.status, StatusCode::BAD_REQUEST);
            let text = error_text(&response);
            assert!(text.contains(expected), "{text:?} lacks {expected:?}");
        }
    }

    #[test]
    fn bad_policy_bodies_are_400() {
        for (body, expected) in [
            (&b""[..], "needs a JSON body"),
            (b"{}", "missing field `allowed`"),
            (br#"{"allowed": "no"}"#, "invalid field `allowed`"),
            (br#"{"allowed": 0}"#, "invalid field `allowed`"),
            (br#"{"allowed": true, "id": "x"}"#, "unknown field `id`"),
            (b"true", "expected a JSON object"),
        ] {
            let response = reply("PUT", "/v1/devices/net0/policy", body);
            assert_eq!(response.status, StatusCode::BAD_REQUEST);
            let text = error_text(&response);
            assert!(text.contains(expected), "{text:?} lacks {expected:?}");
        }
        let response = reply("GET", "/v1/devices", br#"{"class":"network"}"#);
        assert_eq!(response.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn device_routes_have_their_methods() {
        assert_method_not_allowed(&[
            ("PUT", "/v1/devices", "GET"),
            ("GET", "/v1/devices/net0/policy", "PUT"),
            ("DELETE", "/v1/devices/net0/policy", "PUT"),
            ("GET", "/v1/vm/snapshot", "PUT"),
            ("POST", "/v1/vm/snapshot", "PUT"),
        ]);
        for path in [
            "/v1/devices/",
            "/v1/devices/net0",
            "/v1/devices//policy",
            "/v1/devices/net0/policy/x",
        ] {
            let response = reply("PUT", path, br#"{"allowed": true}"#);
            assert_eq!(response.status, StatusCode::NOT_FOUND, "{path}");
        }
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

    /// Each `(method, path, allow)` gets 405 with `Allow: allow`.
    fn assert_method_not_allowed(cases: &[(&str, &str, &str)]) {
        for &(method, path, allow) in cases {
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
    fn wrong_methods_are_405_with_allow() {
        assert_method_not_allowed(&[
            ("PUT", "/v1/vm", "GET"),
            ("GET", "/v1/vm/pause", "PUT"),
            ("POST", "/v1/vm/shutdown", "PUT"),
            ("DELETE", "/v1/version", "GET"),
            ("get", "/v1/vm", "GET"),
        ]);
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

        let saved = SnapshotInfo {
            dir: "/var/lib/virmo/vm-1/snap".into(),
            state_bytes: 81_920,
            memory_bytes_written: 37_748_736,
            memory_size: 268_435_456,
            duration_ms: 412,
        };
        let snapshot = Responder::Snapshot.reply(&Ok(VmResponse::Snapshot(saved.clone())));
        assert_eq!(snapshot.status, StatusCode::OK);
        assert_eq!(
            String::from_utf8(snapshot.body).unwrap(),
            r#"{"dir":"/var/lib/virmo/vm-1/snap","state_bytes":81920,"memory_bytes_written":37748736,"memory_size":268435456,"duration_ms":412}"#
        );

        let devices = vec![
            DeviceInfo {
                id: "disk0".into(),
                class: "storage".into(),
                kind: "block".into(),
                allowed: true,
                rejected_requests: 0,
            },
            DeviceInfo {
                id: "net0".into(),
                class: "network".into(),
                kind: "net".into(),
                allowed: false,
                rejected_requests: 12,
            },
        ];
        let listed = Responder::Devices.reply(&Ok(VmResponse::Devices(devices.clone())));
        assert_eq!(listed.status, StatusCode::OK);
        assert_eq!(
            serde_json::from_slice::<Vec<DeviceInfo>>(&listed.body).unwrap(),
            devices
        );
        assert!(listed.body.starts_with(br#"[{"id":"disk0","class":"storage","kind":"block","allowed":true,"rejected_requests":0}"#));
        let none = Responder::Devices.reply(&Ok(VmResponse::Devices(Vec::new())));
        assert_eq!(
            (none.status, none.body.as_slice()),
            (StatusCode::OK, &b"[]"[..])
        );

        let policy = DevicePolicy {
            id: "net0".into(),
            allowed: true,
            changed: false,
        };
        let set = Responder::DevicePolicy.reply(&Ok(VmResponse::DevicePolicy(policy)));
        assert_eq!(set.status, StatusCode::OK);
        assert_eq!(set.body, br#"{"id":"net0","allowed":true,"changed":false}"#);
    }

    #[test]
    fn control_errors_become_409_400_404_501_500() {
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
                ControlError::NotFound("no device usb9".into()),
                StatusCode::NOT_FOUND,
            ),
            (
                ControlError::Unsupported("device vsock0 cannot be saved".into()),
                StatusCode::NOT_IMPLEMENTED,
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
        for (responder, answer) in [
            (Responder::Info, VmResponse::Done),
            (Responder::Snapshot, VmResponse::Done),
            (Responder::Devices, VmResponse::Info(info())),
            (Responder::DevicePolicy, VmResponse::Devices(Vec::new())),
            (Responder::NoContent, VmResponse::Devices(Vec::new())),
        ] {
            let response = responder.reply(&Ok(answer));
            assert_eq!(
                response.status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "{responder:?}"
            );
        }
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
