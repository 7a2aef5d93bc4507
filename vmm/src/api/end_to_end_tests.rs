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
use super::types::{RunState, ShutdownOutcome, VmInfo};
use crate::control::{ControlError, VmControl, VmRequest, VmResponse};

/// Pauses, resumes and shuts down like a VM would, and records every request.
struct RecordingVm {
    state: Mutex<RunState>,
    requests: Mutex<Vec<VmRequest>>,
}

impl RecordingVm {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(RunState::Running),
            requests: Mutex::new(Vec::new()),
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
