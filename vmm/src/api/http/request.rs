//! Request heads: parsed from bytes, validated, with their framing decided (sans-IO).

use super::head::{escape, find_head_end, is_tchar, split_head, Headers, ParseError};
use super::{MAX_BODY_BYTES, MAX_HEAD_BYTES};

/// The HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// A parsed and validated request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method, case-sensitive as sent (`GET`, `PUT`, ...).
    pub method: String,
    /// The request target in origin form (`/v1/vm?x=y`); absolute-form targets are reduced to it.
    pub target: String,
    pub version: Version,
    pub headers: Headers,
    /// Length of the body that follows the head (0 without `Content-Length`).
    pub body_length: usize,
    /// Whether the client wants the connection kept open after the response.
    pub keep_alive: bool,
    /// Whether the client waits for `100 Continue` before sending the body.
    pub expects_continue: bool,
}

impl RequestHead {
    /// The target's path, without the query.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(path, _)| path)
    }
}

/// A complete request: head and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub head: RequestHead,
    pub body: Vec<u8>,
}

/// Parses the request head at the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete, or the head and the number of bytes it took
/// (the body, if any, starts there). Empty lines before the request line are skipped (RFC 9112
/// §2.2), and count towards the head size limit.
pub fn parse_request_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, ParseError> {
    let mut start = 0;
    while buf[start..].starts_with(b"\r\n") {
        start += 2;
    }
    let too_large = ParseError::HeadTooLarge {
        limit: MAX_HEAD_BYTES,
    };
    let Some(len) = find_head_end(&buf[start..])? else {
        return if buf.len() >= MAX_HEAD_BYTES {
            Err(too_large)
        } else {
            Ok(None)
        };
    };
    let end = start + len;
    if end > MAX_HEAD_BYTES {
        return Err(too_large);
    }
    let (line, headers) = split_head(&buf[start..end])?;
    let (method, target, version) = parse_request_line(line)?;
    let framing = Framing::of(version, &headers)?;
    let head = RequestHead {
        method,
        target,
        version,
        headers,
        body_length: framing.body_length,
        keep_alive: framing.keep_alive,
        expects_continue: framing.expects_continue,
    };
    Ok(Some((head, end)))
}

/// `method SP request-target SP HTTP-version`.
fn parse_request_line(line: &[u8]) -> Result<(String, String, Version), ParseError> {
    let bad = |why: &str| ParseError::BadStartLine(format!("{why}: {}", escape(line)));
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(
            "expected METHOD TARGET VERSION separated by single spaces",
        ));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(bad("invalid method"));
    }
    let version = match version {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        v if v.starts_with(b"HTTP/") => {
            return Err(ParseError::UnsupportedVersion(escape(&v[5..])));
        }
        _ => return Err(bad("invalid HTTP version")),
    };
    if !target.iter().all(|b| (0x21..=0x7e).contains(b)) || target.contains(&b'#') {
        return Err(bad("invalid character in target"));
    }
    let target = origin_form(target).ok_or_else(|| bad("target is not a path"))?;
    // Both parts are checked to be ASCII above.
    let method = String::from_utf8_lossy(method).into_owned();
    let target = String::from_utf8_lossy(target).into_owned();
    Ok((method, target, version))
}

/// The origin-form of a target: itself if it starts with `/`; the path of an absolute-form
/// `http://authority/path` target (`/` if it has none).
fn origin_form(target: &[u8]) -> Option<&[u8]> {
    if target.first() == Some(&b'/') {
        return Some(target);
    }
    let rest = strip_prefix_ignore_case(target, b"http://")?;
    match rest.iter().position(|&b| b == b'/' || b == b'?') {
        Some(i) if rest[i] == b'/' => Some(&rest[i..]),
        Some(_) => None,
        None => Some(b"/"),
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// How the body is delimited and what happens to the connection afterwards.
struct Framing {
    body_length: usize,
    keep_alive: bool,
    expects_continue: bool,
}

impl Framing {
    fn of(version: Version, headers: &Headers) -> Result<Self, ParseError> {
        if version == Version::Http11 && headers.get_all("host").count() != 1 {
            return Err(ParseError::BadHost);
        }
        if let Some(last) = headers.list("transfer-encoding").last() {
            return Err(if last.eq_ignore_ascii_case("chunked") {
                ParseError::ChunkedBody
            } else {
                ParseError::UnsupportedTransferCoding(last.to_owned())
            });
        }
        if headers.get("transfer-encoding").is_some() {
            // Present but empty: as malformed as it gets.
            return Err(ParseError::UnsupportedTransferCoding(String::new()));
        }
        let body_length = content_length(headers, MAX_BODY_BYTES)?;
        let keep_alive = match version {
            Version::Http11 => !headers.has_token("connection", "close"),
            Version::Http10 => headers.has_token("connection", "keep-alive"),
        };
        let expects_continue = match (version, headers.get("expect")) {
            (_, None) | (Version::Http10, Some(_)) => false,
            (Version::Http11, Some(e)) if e.eq_ignore_ascii_case("100-continue") => true,
            (Version::Http11, Some(e)) => {
                return Err(ParseError::UnsupportedExpectation(e.to_owned()));
            }
        };
        Ok(Self {
            body_length,
            keep_alive,
            expects_continue,
        })
    }
}

/// The body length from `Content-Length`: every value (repeated fields, comma lists) must be
/// the same decimal number, at most `limit`.
pub(crate) fn content_length(headers: &Headers, limit: usize) -> Result<usize, ParseError> {
    let mut length: Option<u64> = None;
    for value in headers.list("content-length") {
        let bad = || ParseError::BadContentLength(value.to_owned());
        if !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = value.parse().map_err(|_| bad())?;
        if length.is_some_and(|l| l != n) {
            return Err(ParseError::BadContentLength(
                "different values in one message".to_owned(),
            ));
        }
        length = Some(n);
    }
    if headers.get("content-length").is_some() && length.is_none() {
        return Err(ParseError::BadContentLength("empty".to_owned()));
    }
    let length = length.unwrap_or(0);
    usize::try_from(length)
        .ok()
        .filter(|&l| l <= limit)
        .ok_or(ParseError::BodyTooLarge { length, limit })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::http::StatusCode;
    use proptest::prelude::*;

    fn parse(bytes: &[u8]) -> Result<Option<(RequestHead, usize)>, ParseError> {
        parse_request_head(bytes)
    }

    fn parse_ok(bytes: &[u8]) -> RequestHead {
        match parse(bytes) {
            Ok(Some((head, used))) => {
                assert!(used <= bytes.len());
                head
            }
            other => panic!("{other:?} for {}", escape(bytes)),
        }
    }

    fn status_of(bytes: &[u8]) -> StatusCode {
        match parse(bytes) {
            Err(e) => e.status(),
            other => panic!("expected an error, got {other:?} for {}", escape(bytes)),
        }
    }

    #[test]
    fn a_simple_get_is_parsed() {
        let head = parse_ok(b"GET /v1/vm HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n");
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/v1/vm");
        assert_eq!(head.version, Version::Http11);
        assert_eq!(head.headers.get("accept"), Some("*/*"));
        assert_eq!(head.body_length, 0);
        assert!(head.keep_alive);
        assert!(!head.expects_continue);
    }

    #[test]
    fn a_put_with_a_body_reports_its_length_and_where_the_body_starts() {
        let bytes = b"PUT /v1/vm/shutdown HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n{\"timeout_ms\":1}";
        let (head, used) = parse(bytes).unwrap().unwrap();
        assert_eq!(head.body_length, 17);
        assert_eq!(&bytes[used..], b"{\"timeout_ms\":1}");
    }

    #[test]
    fn incomplete_heads_ask_for_more() {
        assert_eq!(parse(b""), Ok(None));
        assert_eq!(parse(b"GET /v1/vm HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(parse(b"\r\n\r\n"), Ok(None));
        assert_eq!(parse(b"\r\n\r\nGET"), Ok(None));
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let head = parse_ok(b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(head.target, "/");
    }

    #[test]
    fn connection_management_follows_the_version() {
        let close = parse_ok(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(!close.keep_alive);
        let old = parse_ok(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!old.keep_alive);
        let old_keep = parse_ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(old_keep.keep_alive);
    }

    #[test]
    fn expect_100_continue_is_recognised() {
        let head = parse_ok(
            b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n",
        );
        assert!(head.expects_continue);
        assert_eq!(
            status_of(b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: coffee\r\n\r\n"),
            StatusCode::EXPECTATION_FAILED
        );
    }

    #[test]
    fn absolute_form_targets_are_reduced_to_their_path() {
        let head = parse_ok(b"GET http://localhost/v1/vm?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert_eq!(head.target, "/v1/vm?x=1");
        assert_eq!(head.path(), "/v1/vm");
        let head = parse_ok(b"GET HTTP://localhost HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert_eq!(head.target, "/");
    }

    #[test]
    fn repeated_equal_content_lengths_are_accepted() {
        let head = parse_ok(
            b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\ncontent-length: 3\r\n\r\n",
        );
        assert_eq!(head.body_length, 3);
    }

    #[test]
    fn each_malformed_class_gets_its_status() {
        let cases: &[(&[u8], StatusCode)] = &[
            (b"GET /\r\nHost: x\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"GET v1/vm HTTP/1.1\r\nHost: x\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"GET / HTTX/1.1\r\nHost: x\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", StatusCode::VERSION_NOT_SUPPORTED),
            (b"GET / HTTP/1.1\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"GET / HTTP/1.1\nHost: x\n\n", StatusCode::BAD_REQUEST),
            (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n", StatusCode::PAYLOAD_TOO_LARGE),
            (b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\n", StatusCode::PAYLOAD_TOO_LARGE),
            (b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", StatusCode::LENGTH_REQUIRED),
            (b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n", StatusCode::LENGTH_REQUIRED),
            (b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", StatusCode::NOT_IMPLEMENTED),
            (b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n", StatusCode::NOT_IMPLEMENTED),
        ];
        for (bytes, status) in cases {
            assert_eq!(status_of(bytes), *status, "{}", escape(bytes));
        }
    }

    #[test]
    fn the_largest_body_is_accepted() {
        let head = parse_ok(
            format!("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY_BYTES}\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(head.body_length, MAX_BODY_BYTES);
    }

    #[test]
    fn an_oversized_head_gets_431() {
        let mut bytes = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        while bytes.len() <= MAX_HEAD_BYTES {
            bytes.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(status_of(&bytes), StatusCode::HEADER_FIELDS_TOO_LARGE);
        bytes.extend_from_slice(b"\r\n");
        assert_eq!(status_of(&bytes), StatusCode::HEADER_FIELDS_TOO_LARGE);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(Some((head, used))) = parse_request_head(&bytes) {
                prop_assert!(used <= bytes.len());
                prop_assert!(head.body_length <= MAX_BODY_BYTES);
            }
        }

        #[test]
        fn mutated_requests_never_panic(
            flips in proptest::collection::vec((0usize..120, any::<u8>()), 0..6),
            cut in 0usize..130,
        ) {
            let mut bytes = b"PUT /v1/vm/shutdown HTTP/1.1\r\nHost: localhost\r\nContent-Length: 17\r\nConnection: close\r\n\r\n".to_vec();
            for (at, byte) in flips {
                if let Some(b) = bytes.get_mut(at) {
                    *b = byte;
                }
            }
            bytes.truncate(cut);
            if let Ok(Some((_, used))) = parse_request_head(&bytes) {
                prop_assert!(used <= bytes.len());
            }
        }

        #[test]
        fn any_valid_header_value_round_trips(value in "[ -~]{0,200}") {
            let bytes = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Value: {value}\r\n\r\n");
            let head = parse_ok(bytes.as_bytes());
            prop_assert_eq!(head.headers.get("x-value"), Some(value.trim_matches(' ')));
        }
    }
}
