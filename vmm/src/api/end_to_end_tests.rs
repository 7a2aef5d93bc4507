//! The API layer end to end over a real Unix socket: server, routes, HTTP and client together.
//!
//! The VM behind the socket is [`RecordingVm`], a small state machine that records what it is
//! asked: the thing under test is the API layer, not the VM.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::{ClientError, VmmClient};
use super::http::connection::Timeouts;
use super::server::{ApiServer, MAX_CONNECTIONS};
use super::test_support::TempDir;
use super::types::{
    device_class, device_kind, DeviceInfo, DevicePolicy, RunState, ShutdownOutcome, SnapshotInfo,
    VmInfo,
};
use crate::control::{ControlError, VmControl, VmRequest, VmResponse};

/// Pauses, resumes, shuts down, "saves" and gates devices like a VM would, and records every
/// request. A snapshot pauses it and reports sizes without writing anything.
struct RecordingVm {
    state: Mutex<RunState>,
    requests: Mutex<Vec<VmRequest>>,
    devices: Mutex<Vec<DeviceInfo>>,
    /// A device whose state cannot be saved: snapshots are refused while it is there.
    unsaveable: Mutex<Option<String>>,
}

impl RecordingVm {
    fn new() -> Arc<Self> {
        let device = |id: &str, class: &str, kind: &str| DeviceInfo {
            id: id.into(),
            class: class.into(),
            kind: kind.into(),
            allowed: true,
            rejected_requests: 0,
        };
        Arc::new(Self {
            state: Mutex::new(RunState::Running),
            requests: Mutex::new(Vec::new()),
            devices: Mutex::new(vec![
                device("disk0", device_class::STORAGE, device_kind::BLOCK),
                device(
                    "usb disk",
                    device_class::REMOVABLE_STORAGE,
                    device_kind::BLOCK,
                ),
                device("net0", device_class::NETWORK, device_kind::NET),
                device("rng0", device_class::ENTROPY, device_kind::RNG),
            ]),
            unsaveable: Mutex::new(None),
        })
    }

    fn requests(&self) -> Vec<VmRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl VmControl for RecordingVm {
    fn handle(&self, request: VmRequest) -> Result<VmResponse, ControlError> {
        self.requests.lock().unwrap().push(request.clone());
        let mut state = self.state.lock().unwrap();
        let invalid = |state: RunState, reason: &str| ControlError::InvalidState {
            state: format!("{state:?}"),
            reason: reason.to_owned(),
        };
        match request {
            VmRequest::GetInfo => Ok(VmResponse::Info(VmInfo {
                id: "vm-e2e".into(),
                state: *state,
                vcpus: 1,
                memory_mib: 128,
                uptime_ms: 7,
                pid: std::process::id(),
                vmm_version: env!("CARGO_PKG_VERSION").into(),
            })),
            VmRequest::Pause if *state == RunState::Running => {
                *state = RunState::Paused;
                Ok(VmResponse::Done)
            }
            VmRequest::Pause => Err(invalid(*state, "the VM is not running")),
            VmRequest::Resume if *state == RunState::Paused => {
                *state = RunState::Running;
                Ok(VmResponse::Done)
            }
            VmRequest::Resume => Err(invalid(*state, "the VM is not paused")),
            VmRequest::Shutdown { timeout } if timeout.is_zero() => Err(ControlError::BadRequest(
                "timeout_ms must be positive".into(),
            )),
            VmRequest::Shutdown { timeout } => Ok(VmResponse::Shutdown(
                if timeout >= Duration::from_millis(100) {
                    ShutdownOutcome::Graceful
                } else {
                    ShutdownOutcome::Forced
                },
            )),
            VmRequest::Stop => Ok(VmResponse::Done),
            VmRequest::Snapshot { .. } if *state == RunState::ShuttingDown => {
                Err(invalid(*state, "the VM is shutting down"))
            }
            VmRequest::Snapshot { dir, .. } => {
                if let Some(id) = self.unsaveable.lock().unwrap().as_ref() {
                    return Err(ControlError::Unsupported(format!(
                        "device {id} cannot be saved"
                    )));
                }
                *state = RunState::Paused;
                Ok(VmResponse::Snapshot(SnapshotInfo {
                    dir,
                    state_bytes: 4096,
                    memory_bytes_written: 3 << 20,
                    memory_size: 128 << 20,
                    duration_ms: 2,
                }))
            }
            VmRequest::ListDevices => Ok(VmResponse::Devices(self.devices.lock().unwrap().clone())),
            VmRequest::SetDevicePolicy { id, allowed } => {
                let mut devices = self.devices.lock().unwrap();
                let device = devices
                    .iter_mut()
                    .find(|d| d.id == id)
                    .ok_or_else(|| ControlError::NotFound(format!("the VM has no device {id}")))?;
                let changed = device.allowed != allowed;
                device.allowed = allowed;
                Ok(VmResponse::DevicePolicy(DevicePolicy {
                    id,
                    allowed,
                    changed,
                }))
            }
        }
    }
}

/// A served socket in a temporary directory.
struct Served {
    _dir: TempDir,
    path: PathBuf,
    vm: Arc<RecordingVm>,
}

impl Served {
    fn client(&self) -> VmmClient {
        VmmClient::new(&self.path)
    }

    fn raw(&self) -> UnixStream {
        let stream = UnixStream::connect(&self.path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }
}

fn serve_with(configure: impl FnOnce(ApiServer) -> ApiServer) -> Served {
    let dir = TempDir::new();
    let path = dir.path().join("api.sock");
    let vm = RecordingVm::new();
    let server = configure(ApiServer::bind(&path).unwrap());
    server.spawn(vm.clone()).unwrap();
    Served {
        _dir: dir,
        path,
        vm,
    }
}

fn serve() -> Served {
    serve_with(|server| server)
}

/// Writes `bytes`, half-closes, and reads everything the server sends until it closes.
fn exchange(stream: &mut UnixStream, bytes: &[u8]) -> String {
    stream.write_all(bytes).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    read_to_close(stream)
}

fn read_to_close(stream: &mut UnixStream) -> String {
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn the_typed_client_drives_every_route() {
    let served = serve();
    let client = served.client();
    let version = client.wait_ready(Duration::from_secs(2)).unwrap();
    assert_eq!(version.api, "v1");
    assert_eq!(client.version().unwrap().vmm, env!("CARGO_PKG_VERSION"));
    assert_eq!(client.info().unwrap().state, RunState::Running);
    client.pause().unwrap();
    assert_eq!(client.info().unwrap().state, RunState::Paused);
    client.resume().unwrap();
    assert_eq!(
        client.shutdown(Duration::from_secs(1)).unwrap(),
        ShutdownOutcome::Graceful
    );
    assert_eq!(
        client.shutdown(Duration::from_millis(10)).unwrap(),
        ShutdownOutcome::Forced
    );
    let devices = client.devices().unwrap();
    let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["disk0", "usb disk", "net0", "rng0"]);
    assert!(devices.iter().all(|d| d.allowed));
    assert_eq!(devices[1].class, "removable-storage");
    let set = |id: &str, allowed| client.set_device_policy(id, allowed).unwrap();
    let changed = |id: &str, allowed, changed| DevicePolicy {
        id: id.into(),
        allowed,
        changed,
    };
    assert_eq!(set("net0", false), changed("net0", false, true));
    assert_eq!(set("net0", false), changed("net0", false, false));
    assert_eq!(set("usb disk", false), changed("usb disk", false, true));
    assert_eq!(set("usb disk", true), changed("usb disk", true, true));
    let allowed: Vec<bool> = client
        .devices()
        .unwrap()
        .iter()
        .map(|d| d.allowed)
        .collect();
    assert_eq!(allowed, [true, true, false, true]);
    let dir = PathBuf::from("/var/lib/virmo/vm-e2e/snapshot");
    let saved = client.snapshot(&dir, true).unwrap();
    assert_eq!((saved.dir, saved.memory_size), (dir.clone(), 128 << 20));
    assert_eq!(client.info().unwrap().state, RunState::Paused);
    client.resume().unwrap();
    client.stop().unwrap();
    assert_eq!(
        served.vm.requests(),
        vec![
            VmRequest::GetInfo,
            VmRequest::Pause,
            VmRequest::GetInfo,
            VmRequest::Resume,
            VmRequest::Shutdown {
                timeout: Duration::from_secs(1)
            },
            VmRequest::Shutdown {
                timeout: Duration::from_millis(10)
            },
            VmRequest::ListDevices,
            VmRequest::SetDevicePolicy {
                id: "net0".into(),
                allowed: false
            },
            VmRequest::SetDevicePolicy {
                id: "net0".into(),
                allowed: false
            },
            VmRequest::SetDevicePolicy {
                id: "usb disk".into(),
                allowed: false
            },
            VmRequest::SetDevicePolicy {
                id: "usb disk".into(),
                allowed: true
            },
            VmRequest::ListDevices,
            VmRequest::Snapshot {
                dir,
                keep_running: true
            },
            VmRequest::GetInfo,
            VmRequest::Resume,
            VmRequest::Stop,
        ]
    );
}

#[test]
fn the_vms_refusals_reach_the_client_with_their_status() {
    let served = serve();
    let client = served.client();
    match client.resume() {
        Err(ClientError::Status {
            status: 409,
            message,
        }) => {
            assert!(message.contains("not paused"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match client.shutdown(Duration::ZERO) {
        Err(ClientError::Status {
            status: 400,
            message,
        }) => {
            assert!(message.contains("timeout_ms"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_devices_are_404_and_unsaveable_vms_501() {
    let served = serve();
    let client = served.client();
    match client.set_device_policy("usb9", false) {
        Err(ClientError::Status {
            status: 404,
            message,
        }) => assert_eq!(message, "not found: the VM has no device usb9"),
        other => panic!("{other:?}"),
    }
    *served.vm.unsaveable.lock().unwrap() = Some("vsock0".into());
    match client.snapshot("/tmp/snap".as_ref(), false) {
        Err(ClientError::Status {
            status: 501,
            message,
        }) => assert_eq!(message, "not supported: device vsock0 cannot be saved"),
        other => panic!("{other:?}"),
    }
    match client.snapshot("relative/snap".as_ref(), true) {
        Err(ClientError::Status {
            status: 400,
            message,
        }) => assert!(message.contains("absolute"), "{message}"),
        other => panic!("{other:?}"),
    }
    // The connection stays usable after a refusal; the refused snapshot did not end anything.
    let mut stream = served.raw();
    let text = exchange(
        &mut stream,
        b"PUT /v1/vm/snapshot HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n{\"dir\":\"/snap\"}\
          GET /v1/vm HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let statuses: Vec<&str> = text.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
    assert_eq!(statuses, ["501", "200"], "{text}");
    // The relative path never reached the VM.
    assert_eq!(
        served.vm.requests(),
        vec![
            VmRequest::SetDevicePolicy {
                id: "usb9".into(),
                allowed: false
            },
            VmRequest::Snapshot {
                dir: "/tmp/snap".into(),
                keep_running: false
            },
            VmRequest::Snapshot {
                dir: "/snap".into(),
                keep_running: false
            },
            VmRequest::GetInfo,
        ]
    );
}

#[test]
fn the_socket_is_private_and_a_live_one_is_not_taken_over() {
    use std::os::unix::fs::PermissionsExt;
    let served = serve();
    let mode = std::fs::metadata(&served.path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(matches!(
        ApiServer::bind(&served.path),
        Err(super::server::ApiServerError::SocketInUse(_))
    ));
}

#[test]
fn a_file_that_is_not_a_socket_is_left_alone() {
    let dir = TempDir::new();
    let path = dir.path().join("api.sock");
    std::fs::write(&path, b"precious").unwrap();
    assert!(matches!(
        ApiServer::bind(&path),
        Err(super::server::ApiServerError::Bind { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = TempDir::new();
    let path = dir.path().join("api.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    ApiServer::bind(&path)
        .unwrap()
        .spawn(RecordingVm::new())
        .unwrap();
    VmmClient::new(&path).version().unwrap();
}

#[test]
fn raw_requests_get_json_and_keep_alive_works() {
    let served = serve();
    let mut stream = served.raw();
    let text = exchange(
        &mut stream,
        b"GET /v1/vm HTTP/1.1\r\nHost: localhost\r\n\r\n\
          PUT /v1/vm/pause HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}\
          GET /v1/nothing HTTP/1.1\r\nHost: localhost\r\n\r\n\
          PUT /v1/version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let statuses: Vec<&str> = text.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
    assert_eq!(statuses, ["200", "204", "404", "405"], "{text}");
    assert!(text.contains(r#""id":"vm-e2e""#), "{text}");
    assert!(text.contains("Allow: GET\r\n"), "{text}");
    assert!(text.ends_with("\"}"), "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
    assert_eq!(
        served.vm.requests(),
        vec![VmRequest::GetInfo, VmRequest::Pause]
    );
}

#[test]
fn malformed_requests_get_an_error_and_the_server_keeps_serving() {
    let served = serve();
    let cases: &[(&[u8], &str)] = &[
        (b"\x00\x01\x02garbage\r\n\r\n", "400"),
        (b"GET /v1/vm HTTP/1.1\n\n", "400"),
        (b"GET /v1/vm HTTP/1.1\r\n\r\n", "400"),
        (b"GET /v1/vm HTTP/3\r\nHost: x\r\n\r\n", "505"),
        (b"PUT /v1/vm/shutdown HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n{", "400"),
        (b"PUT /v1/vm/shutdown HTTP/1.1\r\nHost: x\r\nContent-Length: 14\r\n\r\n{\"timeout\":1}\n", "400"),
        (b"PUT /v1/vm/shutdown HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "411"),
        (b"PUT /v1/vm/shutdown HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n", "413"),
        (b"PUT /v1/vm/shutdown HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{", "400"),
    ];
    for (bytes, status) in cases {
        let text = exchange(&mut served.raw(), bytes);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{} → {text}",
            String::from_utf8_lossy(bytes)
        );
        assert!(text.contains(r#"{"error":""#), "{text}");
        served.client().version().unwrap();
    }
    let text = exchange(
        &mut served.raw(),
        b"PUT /v1/vm/shutdown HTTP/1.1\r\nHost: x\r\nContent-Length: 14\r\n\r\n{\"timeout\":1}\n",
    );
    assert!(text.contains("unknown field `timeout`"), "{text}");
    assert!(served.vm.requests().is_empty());
}

#[test]
fn an_oversized_head_gets_431() {
    let served = serve();
    let mut request = b"GET /v1/vm HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    request.resize(20_000, b'a');
    request.extend_from_slice(b"\r\n\r\n");
    let mut stream = served.raw();
    // The server answers and closes before reading everything; the write may fail.
    let _ = stream.write_all(&request);
    let text = read_to_close(&mut stream);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
    served.client().version().unwrap();
}

#[test]
fn random_bytes_never_stop_the_server() {
    let served = serve();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..100 {
        let mut bytes = Vec::new();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 600) as usize;
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bytes.push((seed >> 24) as u8);
        }
        let mut stream = served.raw();
        let _ = stream.write_all(&bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 "));
    }
    assert_eq!(served.client().version().unwrap().api, "v1");
}

#[test]
fn a_stalled_client_gets_408_and_does_not_block_others() {
    let served = serve_with(|server| {
        server.timeouts(Timeouts {
            idle: Duration::from_millis(500),
            request: Duration::from_millis(200),
            write: Duration::from_millis(200),
        })
    });
    let mut stalled = served.raw();
    stalled.write_all(b"GET /v1/vm HTTP/1.1\r\nHo").unwrap();
    served.client().version().unwrap();
    let started = Instant::now();
    let text = read_to_close(&mut stalled);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let mut idle = served.raw();
    assert_eq!(
        read_to_close(&mut idle),
        "",
        "an idle connection closes quietly"
    );
}

#[test]
fn connections_beyond_the_limit_wait_until_one_ends() {
    let served = serve();
    let mut held: Vec<UnixStream> = (0..MAX_CONNECTIONS).map(|_| served.raw()).collect();
    // Make sure each held connection has been taken by a connection thread.
    for stream in &mut held {
        stream
            .write_all(b"GET /v1/version HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200");
    }
    let mut waiting = served.raw();
    waiting
        .write_all(b"GET /v1/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut first = [0u8; 1];
    let err = waiting.read(&mut first).unwrap_err();
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::WouldBlock,
        "not served while all are busy"
    );
    drop(held.pop());
    waiting
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let text = read_to_close(&mut waiting);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
}

#[test]
fn after_response_runs_once_the_answer_is_flushed() {
    let (seen_tx, seen_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let served = serve_with(move |server| {
        server.after_response(move |request, result| {
            seen_tx.send((request.clone(), result.clone())).unwrap();
            if *request == VmRequest::Stop {
                // Stands in for `process::exit`: the hook never returns while the test runs.
                let _ = release_rx.lock().unwrap().recv();
            }
        })
    });
    let client = served.client();
    client.pause().unwrap();
    assert_eq!(
        seen_rx.recv_timeout(Duration::from_secs(2)).unwrap(),
        (VmRequest::Pause, Ok(VmResponse::Done))
    );
    let mut stream = served.raw();
    let text = exchange(
        &mut stream,
        b"PUT /v1/vm/stop HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/vm HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(
        text, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
        "the Stop answer arrives, the connection closes, and nothing after Stop is served"
    );
    assert_eq!(
        seen_rx.recv_timeout(Duration::from_secs(2)).unwrap(),
        (VmRequest::Stop, Ok(VmResponse::Done))
    );
    release_tx.send(()).unwrap();
    let _ = client.version().unwrap();
    assert!(seen_rx.try_recv().is_err(), "version is not a VM request");
}

#[test]
fn a_suspend_is_answered_then_the_hook_ends_the_process() {
    let (seen_tx, seen_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let served = serve_with(move |server| {
        server.after_response(move |request, result| {
            let ends = request.ends_process() && result.is_ok();
            seen_tx.send((request.clone(), ends)).unwrap();
            if ends {
                // Stands in for `process::exit`: the hook never returns while the test runs.
                let _ = release_rx.lock().unwrap().recv();
            }
        })
    });
    // Saving with keep_running: the VM stays paused, the connection stays open.
    let mut stream = served.raw();
    let text = exchange(
        &mut stream,
        b"PUT /v1/vm/snapshot HTTP/1.1\r\nHost: x\r\nContent-Length: 35\r\n\r\n{\"dir\":\"/snap\",\"keep_running\":true}\
          GET /v1/vm HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let statuses: Vec<&str> = text.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
    assert_eq!(statuses, ["200", "200"], "{text}");
    assert!(text.contains(r#""state":"paused""#), "{text}");
    let keep = VmRequest::Snapshot {
        dir: "/snap".into(),
        keep_running: true,
    };
    assert_eq!(
        seen_rx.recv_timeout(Duration::from_secs(2)).unwrap(),
        (keep, false)
    );
    assert_eq!(
        seen_rx.recv_timeout(Duration::from_secs(2)).unwrap(),
        (VmRequest::GetInfo, false)
    );
    // Suspend: answered with Connection: close, nothing after it served, then the hook.
    let mut stream = served.raw();
    let text = exchange(
        &mut stream,
        b"PUT /v1/vm/snapshot HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n{\"dir\":\"/snap\"}\
          GET /v1/vm HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    let saved: SnapshotInfo = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(saved.dir, PathBuf::from("/snap"));
    let suspend = VmRequest::Snapshot {
        dir: "/snap".into(),
        keep_running: false,
    };
    assert_eq!(
        seen_rx.recv_timeout(Duration::from_secs(2)).unwrap(),
        (suspend, true)
    );
    release_tx.send(()).unwrap();
    // A refused suspend ends nothing: the connection stays open, the hook is told so.
    *served.vm.unsaveable.lock().unwrap() = Some("vsock0".into());
    let mut stream = served.raw();
    let text = exchange(
        &mut stream,
        b"PUT /v1/vm/snapshot HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n{\"dir\":\"/snap\"}\
          GET /v1/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let statuses: Vec<&str> = text.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
    assert_eq!(statuses, ["501", "200"], "{text}");
    let (request, ends) = seen_rx.recv_timeout(Duration::from_secs(2)).unwrap();
    assert!(matches!(request, VmRequest::Snapshot { .. }) && !ends);
}

#[test]
fn curl_style_device_requests_work() {
    let served = serve();
    let text = exchange(
        &mut served.raw(),
        b"PUT /v1/devices/net0/policy HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\
          Content-Length: 17\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n{\"allowed\":false}\
          GET /v1/devices HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(
        text.contains(
            "\r\n\r\n{\"id\":\"net0\",\"allowed\":false,\"changed\":true}HTTP/1.1 200 OK\r\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"{"id":"net0","class":"network","kind":"net","allowed":false,"rejected_requests":0}"#
        ),
        "{text}"
    );
}

#[test]
fn curl_style_requests_work() {
    // What `curl --unix-socket S -X PUT -d '{"timeout_ms":500}' http://localhost/v1/vm/shutdown`
    // sends, byte for byte (curl 8).
    let served = serve();
    let text = exchange(
        &mut served.raw(),
        b"PUT /v1/vm/shutdown HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\
          Content-Length: 18\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n{\"timeout_ms\":500}",
    );
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.ends_with("\r\n\r\n{\"outcome\":\"graceful\"}"),
        "{text}"
    );
}
