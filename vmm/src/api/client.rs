//! A typed, blocking client of the API, for the agent and tests.
//!
//! Each call opens a connection, sends one request with `Connection: close` and reads the answer:
//! the agent holds no connection (and no server slot) between calls, and a VMM that exits after
//! `stop` leaves nothing behind.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use socket2::{Domain, SockAddr, Socket, Type};

use super::http::response::{parse_response_head, ResponseBody};
use super::http::MAX_RESPONSE_BODY_BYTES;
use super::types::{
    DeviceInfo, DevicePolicy, DevicePolicyRequest, ErrorBody, ShutdownOutcome, ShutdownRequest,
    ShutdownResponse, SnapshotInfo, SnapshotRequest, VersionInfo, VmInfo,
};

/// Default time to wait for the socket to accept a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default time to wait for each read or write of a request (a shutdown adds its own timeout).
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a snapshot may take, on top of the I/O timeout: saving a large guest's memory
/// takes seconds to minutes on a slow disk.
pub const DEFAULT_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Pause between attempts of [`VmmClient::wait_ready`].
const READY_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the VMM API socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot exchange a request with the VMM API socket {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The VMM answered with an error status; `message` is its `ErrorBody` text.
    #[error("the VMM refused the request with status {status}: {message}")]
    Status { status: u16, message: String },
    /// The request could not be encoded (e.g. a path that is not UTF-8).
    #[error("cannot encode the request: {0}")]
    Encode(String),
    #[error("the VMM's answer is malformed: {0}")]
    BadResponse(String),
    #[error("the VMM API socket {path} did not answer within {waited:?}")]
    NotReady {
        path: PathBuf,
        waited: Duration,
        #[source]
        last: Box<ClientError>,
    },
}

/// A client of one VMM's API socket.
#[derive(Debug, Clone)]
pub struct VmmClient {
    socket_path: PathBuf,
    connect_timeout: Duration,
    io_timeout: Duration,
    snapshot_timeout: Duration,
}

impl VmmClient {
    /// A client of the VMM listening on `socket_path`, with the default timeouts.
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        Self {
            socket_path: socket_path.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            io_timeout: DEFAULT_IO_TIMEOUT,
            snapshot_timeout: DEFAULT_SNAPSHOT_TIMEOUT,
        }
    }

    /// Replaces the connect and I/O timeouts.
    pub fn with_timeouts(mut self, connect: Duration, io: Duration) -> Self {
        self.connect_timeout = connect;
        self.io_timeout = io;
        self
    }

    /// Replaces how long [`VmmClient::snapshot`] waits for the VMM to finish saving (on top of
    /// the I/O timeout).
    pub fn with_snapshot_timeout(mut self, timeout: Duration) -> Self {
        self.snapshot_timeout = timeout;
        self
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// `GET /v1/vm`.
    pub fn info(&self) -> Result<VmInfo, ClientError> {
        self.call_json("GET", "/v1/vm", None, Duration::ZERO)
    }

    /// `PUT /v1/vm/pause`.
    pub fn pause(&self) -> Result<(), ClientError> {
        self.call_empty("PUT", "/v1/vm/pause")
    }

    /// `PUT /v1/vm/resume`.
    pub fn resume(&self) -> Result<(), ClientError> {
        self.call_empty("PUT", "/v1/vm/resume")
    }

    /// `PUT /v1/vm/shutdown`: asks the guest to power off, forced after `timeout`. Waits for
    /// the outcome (up to `timeout` plus the I/O timeout).
    pub fn shutdown(&self, timeout: Duration) -> Result<ShutdownOutcome, ClientError> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let body = encode(&ShutdownRequest { timeout_ms })?;
        let response: ShutdownResponse =
            self.call_json("PUT", "/v1/vm/shutdown", Some(&body), timeout)?;
        Ok(response.outcome)
    }

    /// `PUT /v1/vm/stop`.
    pub fn stop(&self) -> Result<(), ClientError> {
        self.call_empty("PUT", "/v1/vm/stop")
    }

    /// `PUT /v1/vm/snapshot`: pauses the VM and saves it into the folder `dir` (absolute).
    ///
    /// Without `keep_running` the VMM process exits after answering (VirMO "suspend"); with it
    /// the VM stays paused (continue it with [`VmmClient::resume`]). Waits up to the snapshot
    /// timeout ([`DEFAULT_SNAPSHOT_TIMEOUT`] unless [`VmmClient::with_snapshot_timeout`]) plus
    /// the I/O timeout.
    pub fn snapshot(&self, dir: &Path, keep_running: bool) -> Result<SnapshotInfo, ClientError> {
        let body = encode(&SnapshotRequest {
            dir: dir.to_path_buf(),
            keep_running,
        })?;
        self.call_json("PUT", "/v1/vm/snapshot", Some(&body), self.snapshot_timeout)
    }

    /// `GET /v1/devices`: the VM's peripherals and their policy.
    pub fn devices(&self) -> Result<Vec<DeviceInfo>, ClientError> {
        self.call_json("GET", "/v1/devices", None, Duration::ZERO)
    }

    /// `PUT /v1/devices/{id}/policy`: allows or prohibits the device `id` (idempotent); the
    /// effective policy after the call. An unknown `id` is a `Status` error with status 404.
    pub fn set_device_policy(&self, id: &str, allowed: bool) -> Result<DevicePolicy, ClientError> {
        let body = encode(&DevicePolicyRequest { allowed })?;
        let path = format!("/v1/devices/{}/policy", percent_encode(id));
        self.call_json("PUT", &path, Some(&body), Duration::ZERO)
    }

    /// `GET /v1/version`.
    pub fn version(&self) -> Result<VersionInfo, ClientError> {
        self.call_json("GET", "/v1/version", None, Duration::ZERO)
    }

    /// Polls `GET /v1/version` until the VMM answers or `timeout` passes.
    ///
    /// Connection and I/O failures are retried (the VMM may not have bound its socket yet); an
    /// answer that is an error or malformed is returned at once.
    pub fn wait_ready(&self, timeout: Duration) -> Result<VersionInfo, ClientError> {
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = self
                .clone()
                .with_timeouts(
                    self.connect_timeout
                        .min(remaining)
                        .max(Duration::from_millis(1)),
                    self.io_timeout.min(remaining).max(Duration::from_millis(1)),
                )
                .version();
            match attempt {
                Ok(version) => return Ok(version),
                Err(e @ (ClientError::Connect { .. } | ClientError::Io { .. })) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return Err(ClientError::NotReady {
                            path: self.socket_path.clone(),
                            waited: started.elapsed(),
                            last: Box::new(e),
                        });
                    }
                    std::thread::sleep(READY_POLL_INTERVAL.min(remaining));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn call_empty(&self, method: &str, path: &str) -> Result<(), ClientError> {
        let (status, body) = self.call(method, path, None, Duration::ZERO)?;
        if status != 204 && !body.is_empty() {
            return Err(ClientError::BadResponse(format!(
                "expected no body with status {status}, got {} bytes",
                body.len()
            )));
        }
        Ok(())
    }

    fn call_json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        extra_wait: Duration,
    ) -> Result<T, ClientError> {
        let (_, body) = self.call(method, path, body, extra_wait)?;
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::BadResponse(format!("{method} {path}: {e}")))
    }

    /// Sends one request; the status and body of a 2xx answer, or an error.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        extra_wait: Duration,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let mut stream = self.connect()?;
        let io_error = |source| ClientError::Io {
            path: self.socket_path.clone(),
            source,
        };
        let read_timeout = self.io_timeout.saturating_add(extra_wait);
        stream
            .set_read_timeout(Some(read_timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.io_timeout)))
            .map_err(io_error)?;
        stream
            .write_all(&encode_request(method, path, body))
            .and_then(|()| stream.flush())
            .map_err(io_error)?;
        let (status, body) = read_response(&mut stream).map_err(|e| match e {
            ReadFailure::Io(source) => io_error(source),
            ReadFailure::Malformed(why) => ClientError::BadResponse(why),
        })?;
        if (200..300).contains(&status) {
            return Ok((status, body));
        }
        let message = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(error) => error.error,
            Err(_) => String::from_utf8_lossy(&body).into_owned(),
        };
        Err(ClientError::Status { status, message })
    }

    fn connect(&self) -> Result<UnixStream, ClientError> {
        let connect_error = |source| ClientError::Connect {
            path: self.socket_path.clone(),
            source,
        };
        let address = SockAddr::unix(&self.socket_path).map_err(connect_error)?;
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(connect_error)?;
        socket
            .connect_timeout(&address, self.connect_timeout)
            .map_err(connect_error)?;
        Ok(UnixStream::from(OwnedFd::from(socket)))
    }
}

/// A request body as JSON.
fn encode(body: &impl serde::Serialize) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(body).map_err(|e| ClientError::Encode(e.to_string()))
}

/// `segment` with everything but RFC 3986 unreserved characters percent-encoded, to be one path
/// segment.
fn percent_encode(segment: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn encode_request(method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut bytes = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n"
    );
    if let Some(body) = body {
        bytes.push_str("Content-Type: application/json\r\n");
        bytes.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    bytes.push_str("\r\n");
    let mut bytes = bytes.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    bytes
}

enum ReadFailure {
    Io(io::Error),
    Malformed(String),
}

/// Reads one response (skipping `100 Continue`); its status and body.
fn read_response(stream: &mut UnixStream) -> Result<(u16, Vec<u8>), ReadFailure> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match parse_response_head(&buf) {
            Err(e) => return Err(ReadFailure::Malformed(e.to_string())),
            Ok(Some((head, used))) if (100..200).contains(&head.status) => {
                buf.drain(..used);
            }
            Ok(Some((head, used))) => {
                let mut body = buf.split_off(used);
                match head.body {
                    ResponseBody::None => body.clear(),
                    ResponseBody::Length(n) => {
                        read_until(stream, &mut body, |b| b.len() >= n)?;
                        if body.len() < n {
                            return Err(ReadFailure::Malformed(format!(
                                "body ends after {} of {n} bytes",
                                body.len()
                            )));
                        }
                        body.truncate(n);
                    }
                    ResponseBody::UntilClose => read_until(stream, &mut body, |_| false)?,
                }
                return Ok((head.status, body));
            }
            Ok(None) => {
                let n = read_some(stream, &mut chunk)?;
                if n == 0 {
                    return Err(ReadFailure::Malformed(if buf.is_empty() {
                        "connection closed without an answer".to_owned()
                    } else {
                        "connection closed in the middle of the answer".to_owned()
                    }));
                }
                // `parse_response_head` refuses a head over `MAX_HEAD_BYTES`: `buf` stays small.
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// Reads into `buf` until `done(buf)` or EOF, at most [`MAX_RESPONSE_BODY_BYTES`].
fn read_until(
    stream: &mut UnixStream,
    buf: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> bool,
) -> Result<(), ReadFailure> {
    let mut chunk = [0u8; 4096];
    while !done(buf) {
        let n = read_some(stream, &mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE_BODY_BYTES {
            return Err(ReadFailure::Malformed(format!(
                "response larger than {MAX_RESPONSE_BODY_BYTES} bytes"
            )));
        }
    }
    Ok(())
}

fn read_some(stream: &mut UnixStream, chunk: &mut [u8]) -> Result<usize, ReadFailure> {
    loop {
        match stream.read(chunk) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other.map_err(ReadFailure::Io),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::TempDir;

    fn serve_once(reply: &'static [u8]) -> (TempDir, VmmClient, std::thread::JoinHandle<Vec<u8>>) {
        let dir = TempDir::new();
        let path = dir.path().join("api.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = vec![0u8; 4096];
            let n = stream.read(&mut request).unwrap();
            request.truncate(n);
            stream.write_all(reply).unwrap();
            request
        });
        (dir, VmmClient::new(path), server)
    }

    #[test]
    fn requests_are_well_formed_http() {
        let (_dir, client, server) = serve_once(b"HTTP/1.1 204 No Content\r\n\r\n");
        client.pause().unwrap();
        let request = server.join().unwrap();
        assert_eq!(
            request,
            b"PUT /v1/vm/pause HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn device_ids_are_percent_encoded_into_one_segment() {
        assert_eq!(percent_encode("net0"), "net0");
        assert_eq!(percent_encode("usb disk/2"), "usb%20disk%2F2");
        assert_eq!(percent_encode("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(percent_encode("\u{e9}%"), "%C3%A9%25");
        let (_dir, client, server) = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Length: 47\r\n\r\n{\"id\":\"usb disk\",\"allowed\":true,\"changed\":true}",
        );
        let policy = client.set_device_policy("usb disk", true).unwrap();
        assert_eq!(
            policy,
            DevicePolicy {
                id: "usb disk".into(),
                allowed: true,
                changed: true
            }
        );
        let request = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(
            request.starts_with("PUT /v1/devices/usb%20disk/policy HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.ends_with("\r\n\r\n{\"allowed\":true}"), "{request}");
    }

    #[test]
    fn snapshot_sends_dir_and_keep_running() {
        let (_dir, client, server) = serve_once(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 85\r\n\r\n\
              {\"dir\":\"/s\",\"state_bytes\":1,\"memory_bytes_written\":2,\"memory_size\":3,\"duration_ms\":4}",
        );
        let info = client.snapshot(Path::new("/s"), false).unwrap();
        assert_eq!(
            (
                info.state_bytes,
                info.memory_bytes_written,
                info.memory_size,
                info.duration_ms
            ),
            (1, 2, 3, 4)
        );
        let request = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(
            request.starts_with("PUT /v1/vm/snapshot HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.ends_with("\r\n\r\n{\"dir\":\"/s\",\"keep_running\":false}"),
            "{request}"
        );
    }

    #[test]
    fn a_path_that_is_not_utf8_is_an_encode_error() {
        use std::os::unix::ffi::OsStrExt;
        let client = VmmClient::new("/nonexistent/api.sock");
        let dir = Path::new(std::ffi::OsStr::from_bytes(b"/snap\xff"));
        assert!(matches!(
            client.snapshot(dir, true),
            Err(ClientError::Encode(_))
        ));
    }

    #[test]
    fn error_statuses_carry_the_servers_text() {
        let (_dir, client, server) = serve_once(
            b"HTTP/1.1 409 Conflict\r\nContent-Length: 19\r\n\r\n{\"error\":\"paused!\"}",
        );
        match client.resume() {
            Err(ClientError::Status { status, message }) => {
                assert_eq!((status, message.as_str()), (409, "paused!"));
            }
            other => panic!("{other:?}"),
        }
        server.join().unwrap();
    }

    #[test]
    fn malformed_answers_are_bad_responses() {
        for reply in [
            &b"SPDY/3 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]",
            b"",
        ] {
            let (_dir, client, server) = serve_once(reply);
            assert!(
                matches!(client.info(), Err(ClientError::BadResponse(_))),
                "{}",
                String::from_utf8_lossy(reply)
            );
            server.join().unwrap();
        }
    }

    #[test]
    fn a_missing_socket_is_a_connect_error_and_wait_ready_gives_up() {
        let dir = TempDir::new();
        let client = VmmClient::new(dir.path().join("nobody.sock"));
        assert!(matches!(client.info(), Err(ClientError::Connect { .. })));
        let started = Instant::now();
        let err = client.wait_ready(Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, ClientError::NotReady { .. }), "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_silent_server_times_out() {
        let dir = TempDir::new();
        let path = dir.path().join("api.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let client = VmmClient::new(&path)
            .with_timeouts(Duration::from_millis(100), Duration::from_millis(100));
        let started = Instant::now();
        assert!(matches!(client.version(), Err(ClientError::Io { .. })));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
