//! Responses: built and encoded by the server, their heads parsed by the client.

use serde::Serialize;

use super::head::{escape, find_head_end, split_head, Headers, ParseError};
use super::request::content_length;
use super::MAX_RESPONSE_BODY_BYTES;
use crate::api::types::ErrorBody;

/// An HTTP status code and its reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusCode(u16);

impl StatusCode {
    pub const CONTINUE: Self = Self(100);
    pub const OK: Self = Self(200);
    pub const NO_CONTENT: Self = Self(204);
    pub const BAD_REQUEST: Self = Self(400);
    pub const NOT_FOUND: Self = Self(404);
    pub const METHOD_NOT_ALLOWED: Self = Self(405);
    pub const REQUEST_TIMEOUT: Self = Self(408);
    pub const CONFLICT: Self = Self(409);
    pub const LENGTH_REQUIRED: Self = Self(411);
    pub const PAYLOAD_TOO_LARGE: Self = Self(413);
    pub const EXPECTATION_FAILED: Self = Self(417);
    pub const HEADER_FIELDS_TOO_LARGE: Self = Self(431);
    pub const INTERNAL_SERVER_ERROR: Self = Self(500);
    pub const NOT_IMPLEMENTED: Self = Self(501);
    pub const SERVICE_UNAVAILABLE: Self = Self(503);
    pub const VERSION_NOT_SUPPORTED: Self = Self(505);

    pub fn code(self) -> u16 {
        self.0
    }

    pub fn reason(self) -> &'static str {
        match self.0 {
            100 => "Continue",
            200 => "OK",
            204 => "No Content",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            409 => "Conflict",
            411 => "Length Required",
            413 => "Content Too Large",
            417 => "Expectation Failed",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "",
        }
    }

    /// Whether a response with this status never has a body (1xx, 204, 304).
    pub fn has_no_body(self) -> bool {
        (100..200).contains(&self.0) || self.0 == 204 || self.0 == 304
    }

    pub fn is_success(self) -> bool {
        (200..300).contains(&self.0)
    }
}

impl std::fmt::Display for StatusCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.reason())
    }
}

/// A response to be written: status, extra headers, and a JSON body (or none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, String)>,
    /// A JSON document, or empty.
    pub body: Vec<u8>,
}

impl Response {
    /// A response without a body.
    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A response with `value` as its JSON body.
    pub fn json(status: StatusCode, value: &impl Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self {
                status,
                headers: Vec::new(),
                body,
            },
            Err(e) => Self::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the response: {e}"),
            ),
        }
    }

    /// An error response with an [`ErrorBody`].
    pub fn error(status: StatusCode, message: impl Into<String>) -> Self {
        let body = ErrorBody {
            error: message.into(),
        };
        // An `ErrorBody` is a single string field: encoding it cannot fail.
        let body = serde_json::to_vec(&body).unwrap_or_default();
        Self {
            status,
            headers: Vec::new(),
            body,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The bytes on the wire. `connection` is the `Connection` header to send, if any.
    pub fn encode(&self, connection: Option<&str>) -> Vec<u8> {
        use std::fmt::Write as _;
        let mut head = format!(
            "HTTP/1.1 {} {}\r\n",
            self.status.code(),
            self.status.reason()
        );
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        if !self.status.has_no_body() {
            if !self.body.is_empty() {
                head.push_str("Content-Type: application/json\r\n");
            }
            let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        }
        if let Some(connection) = connection {
            let _ = write!(head, "Connection: {connection}\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !self.status.has_no_body() {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

/// A parsed response head (client side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Headers,
    pub body: ResponseBody,
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// No body (1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(usize),
    /// Everything until the server closes the connection.
    UntilClose,
}

/// Parses the response head at the start of `buf`: `Ok(None)` while incomplete, else the head
/// and its length. Only `Content-Length` bodies (or bodies up to EOF) are understood.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, ParseError> {
    let Some(end) = find_head_end(buf)? else {
        return Ok(None);
    };
    let (line, headers) = split_head(&buf[..end])?;
    let status = parse_status_line(line)?;
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        ResponseBody::None
    } else if let Some(coding) = headers.list("transfer-encoding").last() {
        return Err(ParseError::UnsupportedTransferCoding(coding.to_owned()));
    } else if headers.get("content-length").is_some() {
        ResponseBody::Length(content_length(&headers, MAX_RESPONSE_BODY_BYTES)?)
    } else {
        ResponseBody::UntilClose
    };
    Ok(Some((
        ResponseHead {
            status,
            headers,
            body,
        },
        end,
    )))
}

/// `HTTP/1.x SP 3DIGIT SP reason-phrase` (the reason may be empty or, leniently, missing).
fn parse_status_line(line: &[u8]) -> Result<u16, ParseError> {
    let bad = || ParseError::BadStartLine(escape(line));
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "))
        .ok_or_else(bad)?;
    let (code, reason) = rest.split_at(rest.len().min(3));
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' {
        return Err(bad());
    }
    if !(reason.is_empty() || reason.starts_with(b" ")) {
        return Err(bad());
    }
    std::str::from_utf8(code)
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn json_responses_carry_type_and_length() {
        let bytes = Response::json(StatusCode::OK, &serde_json::json!({"a": 1})).encode(None);
        assert_eq!(
            bytes,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
        );
    }

    #[test]
    fn no_content_has_neither_length_nor_body() {
        let mut response = Response::empty(StatusCode::NO_CONTENT);
        response.body = b"ignored".to_vec();
        assert_eq!(
            response.encode(Some("close")),
            b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn error_responses_have_an_error_body_and_extra_headers() {
        let bytes = Response::error(StatusCode::METHOD_NOT_ALLOWED, "no \"PUT\"")
            .with_header("Allow", "GET")
            .encode(None);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"error\":\"no \\\"PUT\\\"\"}"));
    }

    #[test]
    fn encoded_responses_parse_back() {
        for response in [
            Response::json(StatusCode::OK, &serde_json::json!({"outcome": "forced"})),
            Response::empty(StatusCode::NO_CONTENT),
            Response::error(StatusCode::CONFLICT, "paused"),
        ] {
            let bytes = response.encode(Some("keep-alive"));
            let (head, used) = parse_response_head(&bytes).unwrap().unwrap();
            assert_eq!(head.status, response.status.code());
            assert_eq!(head.headers.get("connection"), Some("keep-alive"));
            let body = &bytes[used..];
            match head.body {
                ResponseBody::None => assert!(body.is_empty()),
                ResponseBody::Length(n) => assert_eq!(body, &response.body[..n]),
                ResponseBody::UntilClose => panic!("length expected"),
            }
        }
    }

    #[test]
    fn status_lines_are_checked() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK"), Ok(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 404 "), Ok(404));
        assert_eq!(parse_status_line(b"HTTP/1.1 503"), Ok(503));
        for bad in [
            &b"HTTP/1.1 20 OK"[..],
            b"HTTP/1.1 2000 OK",
            b"HTTP/2 200 OK",
            b"HTTP/1.1 abc OK",
            b"HTTP/1.1 099 x",
            b"",
        ] {
            assert!(parse_status_line(bad).is_err(), "{}", escape(bad));
        }
    }

    #[test]
    fn response_bodies_without_length_run_until_close_and_chunked_is_refused() {
        let (head, _) = parse_response_head(b"HTTP/1.1 200 OK\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.body, ResponseBody::UntilClose);
        assert!(matches!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(ParseError::UnsupportedTransferCoding(_))
        ));
    }

    #[test]
    fn response_bodies_may_be_larger_than_request_bodies_up_to_their_own_limit() {
        let head = |length: usize| {
            parse_response_head(
                format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n").as_bytes(),
            )
        };
        let (parsed, _) = head(MAX_RESPONSE_BODY_BYTES).unwrap().unwrap();
        assert_eq!(parsed.body, ResponseBody::Length(MAX_RESPONSE_BODY_BYTES));
        assert!(matches!(
            head(MAX_RESPONSE_BODY_BYTES + 1),
            Err(ParseError::BodyTooLarge { limit, .. }) if limit == MAX_RESPONSE_BODY_BYTES
        ));
    }

    proptest! {
        #[test]
        fn random_response_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            if let Ok(Some((_, used))) = parse_response_head(&bytes) {
                prop_assert!(used <= bytes.len());
            }
        }
    }
}
