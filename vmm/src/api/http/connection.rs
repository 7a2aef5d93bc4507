//! Reading requests off one Unix stream connection, with deadlines, and writing responses.
//!
//! Each request has two deadlines: the connection may sit idle for [`Timeouts::idle`] before the
//! first byte of a request, and the whole request (head and body) must then arrive within
//! [`Timeouts::request`]. A client trickling bytes cannot hold a connection longer than that.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::request::{parse_request_head, Request};
use super::response::{Response, StatusCode};
use super::{ParseError, MAX_HEAD_BYTES};

/// How long the server waits for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Between requests on a kept-alive connection (and before the first one).
    pub idle: Duration,
    /// From the first byte of a request to its last.
    pub request: Duration,
    /// For writing a response to a client that does not read.
    pub write: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(10),
            request: Duration::from_secs(5),
            write: Duration::from_secs(5),
        }
    }
}

/// Longest time [`Connection::linger_close`] waits for a client to stop sending.
const LINGER: Duration = Duration::from_millis(500);
/// Most bytes [`Connection::linger_close`] reads and drops.
const LINGER_BYTES: usize = 256 * 1024;

/// Why no request could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("malformed request")]
    Malformed(#[source] ParseError),
    #[error("the request did not arrive within {0:?}")]
    Timeout(Duration),
    #[error("the client closed the connection in the middle of a request")]
    Truncated,
    #[error("cannot read from the connection")]
    Io(#[source] io::Error),
}

impl ReadError {
    /// The response to send before closing, if the client can still make use of one.
    pub fn response(&self) -> Option<Response> {
        let (status, message) = match self {
            Self::Malformed(e) => (e.status(), e.to_string()),
            Self::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, self.to_string()),
            Self::Truncated => (StatusCode::BAD_REQUEST, "incomplete request".to_owned()),
            Self::Io(_) => return None,
        };
        Some(Response::error(status, message))
    }
}

/// One server-side connection.
pub struct Connection {
    stream: UnixStream,
    timeouts: Timeouts,
    /// Bytes read but not yet consumed (the start of the next, pipelined request).
    buf: Vec<u8>,
}

impl Connection {
    pub fn new(stream: UnixStream, timeouts: Timeouts) -> Self {
        Self {
            stream,
            timeouts,
            buf: Vec::new(),
        }
    }

    /// Reads the next request. `Ok(None)` when the client closed the connection or stayed idle
    /// past [`Timeouts::idle`] between requests; either way the connection is done.
    pub fn read_request(&mut self) -> Result<Option<Request>, ReadError> {
        let idle_deadline = Instant::now() + self.timeouts.idle;
        // The request deadline starts with its first byte (empty lines before it do not count).
        let mut request_deadline = (!only_empty_lines(&self.buf)).then(|| self.request_deadline());
        let (head, head_len) = loop {
            if let Some(found) = parse_request_head(&self.buf).map_err(ReadError::Malformed)? {
                break found;
            }
            let deadline = request_deadline.unwrap_or(idle_deadline);
            let read = match self.fill(deadline, MAX_HEAD_BYTES + 1) {
                Err(ReadError::Timeout(_)) if request_deadline.is_none() => return Ok(None),
                other => other?,
            };
            match read {
                0 if request_deadline.is_none() => return Ok(None),
                0 => return Err(ReadError::Truncated),
                _ if only_empty_lines(&self.buf) => {}
                _ => {
                    request_deadline.get_or_insert_with(|| self.request_deadline());
                }
            }
        };
        let request_deadline = request_deadline.unwrap_or_else(|| self.request_deadline());
        let total = head_len + head.body_length;
        if head.expects_continue && head.body_length > 0 && self.buf.len() < total {
            self.write_all(&Response::empty(StatusCode::CONTINUE).encode(None))
                .map_err(ReadError::Io)?;
        }
        while self.buf.len() < total {
            if self.fill(request_deadline, total)? == 0 {
                return Err(ReadError::Truncated);
            }
        }
        let rest = self.buf.split_off(total);
        let mut body = std::mem::replace(&mut self.buf, rest);
        body.drain(..head_len);
        Ok(Some(Request { head, body }))
    }

    /// Writes `response` and flushes it; `connection` is the `Connection` header to send.
    pub fn write_response(
        &mut self,
        response: &Response,
        connection: Option<&str>,
    ) -> io::Result<()> {
        self.write_all(&response.encode(connection))
    }

    /// Ends both directions; the client sees EOF after the last response.
    pub fn close(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Closes after an error response, when the client may still be sending: ends our side,
    /// then reads and drops what the client sends for a short while (at most [`LINGER`] and
    /// [`LINGER_BYTES`]). Closing a Unix socket with unread input makes the client's next read
    /// fail with ECONNRESET, which would make it lose the response.
    pub fn linger_close(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let deadline = Instant::now() + LINGER.min(self.timeouts.request);
        let mut drained = 0;
        let mut chunk = [0u8; 4096];
        while drained < LINGER_BYTES {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() || self.stream.set_read_timeout(Some(remaining)).is_err() {
                break;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => drained += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.close();
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.set_write_timeout(Some(self.timeouts.write))?;
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    fn request_deadline(&self) -> Instant {
        Instant::now() + self.timeouts.request
    }

    /// Reads once (waiting at most until `deadline`), keeping the buffer under `limit` bytes
    /// (plus one read). Returns how many bytes arrived; 0 means EOF.
    fn fill(&mut self, deadline: Instant, limit: usize) -> Result<usize, ReadError> {
        let mut chunk = [0u8; 4096];
        let wanted = limit.saturating_sub(self.buf.len()).clamp(1, chunk.len());
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ReadError::Timeout(self.timeouts.request));
            }
            self.stream
                .set_read_timeout(Some(remaining))
                .map_err(ReadError::Io)?;
            match self.stream.read(&mut chunk[..wanted]) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ReadError::Timeout(self.timeouts.request));
                }
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }
}

fn only_empty_lines(buf: &[u8]) -> bool {
    buf.iter().all(|&b| b == b'\r' || b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(timeouts: Timeouts) -> (Connection, UnixStream) {
        let (server, client) = UnixStream::pair().unwrap();
        (Connection::new(server, timeouts), client)
    }

    fn quick() -> Timeouts {
        Timeouts {
            idle: Duration::from_millis(300),
            request: Duration::from_millis(150),
            write: Duration::from_millis(150),
        }
    }

    #[test]
    fn pipelined_requests_are_read_one_after_the_other() {
        let (mut conn, mut client) = pair(quick());
        client
            .write_all(b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let first = conn.read_request().unwrap().unwrap();
        assert_eq!(
            (first.head.target.as_str(), first.body.as_slice()),
            ("/a", &b"abc"[..])
        );
        let second = conn.read_request().unwrap().unwrap();
        assert_eq!((second.head.target.as_str(), second.body.len()), ("/b", 0));
        drop(client);
        assert!(conn.read_request().unwrap().is_none());
    }

    #[test]
    fn a_request_split_into_single_bytes_is_assembled() {
        let (mut conn, client) = pair(Timeouts::default());
        let writer = std::thread::spawn(move || {
            let mut client = client;
            for b in b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}" {
                client.write_all(&[*b]).unwrap();
            }
            client
        });
        let request = conn.read_request().unwrap().unwrap();
        assert_eq!(request.body, b"{}");
        drop(writer.join().unwrap());
    }

    #[test]
    fn expect_100_continue_gets_an_interim_response() {
        let (mut conn, mut client) = pair(quick());
        client
            .write_all(
                b"PUT /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            )
            .unwrap();
        let reader = std::thread::spawn(move || {
            let mut interim = [0u8; 25];
            client.read_exact(&mut interim).unwrap();
            client.write_all(b"{}").unwrap();
            (interim, client)
        });
        let request = conn.read_request().unwrap().unwrap();
        let (interim, _client) = reader.join().unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(request.body, b"{}");
    }

    #[test]
    fn an_idle_connection_ends_quietly() {
        let (mut conn, _client) = pair(quick());
        let started = Instant::now();
        assert!(matches!(conn.read_request(), Ok(None)));
        assert!(started.elapsed() >= quick().idle);
    }

    #[test]
    fn empty_lines_after_a_request_are_not_a_request() {
        let (mut conn, mut client) = pair(quick());
        client
            .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\r\n")
            .unwrap();
        assert_eq!(conn.read_request().unwrap().unwrap().head.target, "/a");
        client.write_all(b"\r\n").unwrap();
        assert!(matches!(conn.read_request(), Ok(None)), "idle, not stalled");
    }

    #[test]
    fn a_stalled_request_times_out_with_408() {
        let (mut conn, mut client) = pair(quick());
        client.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let err = conn.read_request().unwrap_err();
        assert!(matches!(err, ReadError::Timeout(d) if d == quick().request));
        assert_eq!(err.response().unwrap().status, StatusCode::REQUEST_TIMEOUT);
    }

    #[test]
    fn a_trickling_client_cannot_extend_the_request_deadline() {
        let (mut conn, client) = pair(quick());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_writer = stop.clone();
        let writer = std::thread::spawn(move || {
            let mut client = client;
            while !stop_writer.load(std::sync::atomic::Ordering::Relaxed) {
                if client.write_all(b"X").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let started = Instant::now();
        let err = conn.read_request().unwrap_err();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        assert!(matches!(err, ReadError::Timeout(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn a_body_cut_short_is_truncated() {
        let (mut conn, mut client) = pair(quick());
        client
            .write_all(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let err = conn.read_request().unwrap_err();
        assert!(matches!(err, ReadError::Truncated), "{err:?}");
        assert_eq!(err.response().unwrap().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn an_oversized_head_is_refused_without_reading_it_all() {
        let (mut conn, mut client) = pair(quick());
        let mut bytes = b"GET / HTTP/1.1\r\nX: ".to_vec();
        bytes.resize(MAX_HEAD_BYTES * 3, b'a');
        let writer = std::thread::spawn(move || {
            let _ = client.write_all(&bytes);
            client
        });
        let err = conn.read_request().unwrap_err();
        assert_eq!(
            err.response().unwrap().status,
            StatusCode::HEADER_FIELDS_TOO_LARGE
        );
        assert!(conn.buf.len() <= MAX_HEAD_BYTES + 1);
        conn.close();
        drop(writer.join().unwrap());
    }
}
