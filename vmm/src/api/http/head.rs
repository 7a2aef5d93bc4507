//! What requests and responses share: finding the end of the head, splitting it into CRLF lines,
//! header fields and the parse error type.

use super::response::StatusCode;
use super::MAX_HEAD_BYTES;

/// Why a message head (or its framing) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("head is larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("body of {length} bytes is larger than the limit of {limit} bytes")]
    BodyTooLarge { length: u64, limit: usize },
    #[error("a line does not end with CRLF")]
    BareLineEnding,
    #[error("malformed start line: {0}")]
    BadStartLine(String),
    #[error("HTTP version {0} is not supported")]
    UnsupportedVersion(String),
    #[error("malformed header field: {0}")]
    BadHeader(String),
    #[error("invalid Content-Length: {0}")]
    BadContentLength(String),
    #[error("an HTTP/1.1 request needs exactly one Host header")]
    BadHost,
    #[error("chunked bodies are not accepted; send a Content-Length")]
    ChunkedBody,
    #[error("transfer coding {0:?} is not supported; send a Content-Length")]
    UnsupportedTransferCoding(String),
    #[error("expectation {0:?} cannot be met")]
    UnsupportedExpectation(String),
}

impl ParseError {
    /// The status a server answers this error with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::HeadTooLarge { .. } => StatusCode::HEADER_FIELDS_TOO_LARGE,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedVersion(_) => StatusCode::VERSION_NOT_SUPPORTED,
            Self::ChunkedBody => StatusCode::LENGTH_REQUIRED,
            Self::UnsupportedTransferCoding(_) => StatusCode::NOT_IMPLEMENTED,
            Self::UnsupportedExpectation(_) => StatusCode::EXPECTATION_FAILED,
            Self::BareLineEnding
            | Self::BadStartLine(_)
            | Self::BadHeader(_)
            | Self::BadContentLength(_)
            | Self::BadHost => StatusCode::BAD_REQUEST,
        }
    }
}

/// Header fields in arrival order; names are matched case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// (name in lower case, value without surrounding whitespace)
    fields: Vec<(String, String)>,
}

impl Headers {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every comma-separated element of every `name` field (e.g. `Connection: keep-alive, close`).
    pub fn list<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.get_all(name)
            .flat_map(|v| v.split(','))
            .map(|e| e.trim_matches([' ', '\t']))
            .filter(|e| !e.is_empty())
    }

    /// Whether a list-valued header `name` contains `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.list(name).any(|e| e.eq_ignore_ascii_case(token))
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    fn push(&mut self, name: &str, value: String) {
        self.fields.push((name.to_ascii_lowercase(), value));
    }
}

/// Where the head in `buf` ends (the index just after the empty line), if it is complete.
///
/// Rejects a bare LF or CR as soon as it is seen, and a head over [`MAX_HEAD_BYTES`] whether
/// it is complete or not, so a caller never buffers more than that while waiting.
pub(crate) fn find_head_end(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    let mut i = 0;
    while i < buf.len() {
        match buf[i] {
            b'\r' => match buf.get(i + 1) {
                Some(b'\n') => {
                    if buf.get(i + 2..i + 4) == Some(b"\r\n") {
                        let end = i + 4;
                        return if end > MAX_HEAD_BYTES {
                            Err(too_large())
                        } else {
                            Ok(Some(end))
                        };
                    }
                    i += 2;
                }
                Some(_) => return Err(ParseError::BareLineEnding),
                None => break,
            },
            b'\n' => return Err(ParseError::BareLineEnding),
            _ => i += 1,
        }
    }
    if buf.len() >= MAX_HEAD_BYTES {
        Err(too_large())
    } else {
        Ok(None)
    }
}

fn too_large() -> ParseError {
    ParseError::HeadTooLarge {
        limit: MAX_HEAD_BYTES,
    }
}

/// Splits a complete head (as delimited by [`find_head_end`]) into its start line and headers.
pub(crate) fn split_head(head: &[u8]) -> Result<(&[u8], Headers), ParseError> {
    let body = head.strip_suffix(b"\r\n\r\n").unwrap_or(head);
    let mut lines = body
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let start = lines.next().unwrap_or_default();
    let mut headers = Headers::default();
    for line in lines {
        let (name, value) = parse_header_line(line)?;
        headers.push(name, value);
    }
    Ok((start, headers))
}

/// `field-name ":" OWS field-value OWS` (RFC 9110 §5, RFC 9112 §5). No obs-fold.
fn parse_header_line(line: &[u8]) -> Result<(&str, String), ParseError> {
    let bad = |why: &str| ParseError::BadHeader(format!("{why}: {}", escape(line)));
    if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
        return Err(bad("folded lines are not accepted"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| bad("no colon"))?;
    let (name, rest) = line.split_at(colon);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(bad("invalid field name"));
    }
    let value = trim_ows(&rest[1..]);
    if !value
        .iter()
        .all(|&b| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80)
    {
        return Err(bad("control character in value"));
    }
    let value = String::from_utf8(value.to_vec()).map_err(|_| bad("value is not UTF-8"))?;
    // `name` is all tchar, hence ASCII.
    let name = std::str::from_utf8(name).map_err(|_| bad("invalid field name"))?;
    Ok((name, value))
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `tchar` of RFC 9110 §5.6.2: the characters of a token (method, field name).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A short, printable rendering of untrusted bytes for error messages.
pub(crate) fn escape(bytes: &[u8]) -> String {
    const SHOWN: usize = 80;
    let mut out: String = bytes
        .iter()
        .take(SHOWN)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.len() > SHOWN {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_is_found_after_the_empty_line() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Ok(Some(18)));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), Ok(None));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r"), Ok(None));
        assert_eq!(find_head_end(b""), Ok(None));
    }

    #[test]
    fn bare_line_endings_are_rejected_early() {
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\n"),
            Err(ParseError::BareLineEnding)
        );
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\rX"),
            Err(ParseError::BareLineEnding)
        );
    }

    #[test]
    fn oversized_heads_are_rejected_complete_or_not() {
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD_BYTES, b'a');
        assert_eq!(find_head_end(&long), Err(too_large()));
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(find_head_end(&long), Err(too_large()));
    }

    #[test]
    fn header_lines_are_split_and_trimmed() {
        let (name, value) = parse_header_line(b"Content-Length: \t 12 \t").unwrap();
        assert_eq!((name, value.as_str()), ("Content-Length", "12"));
        let (name, value) = parse_header_line(b"X-Empty:").unwrap();
        assert_eq!((name, value.as_str()), ("X-Empty", ""));
    }

    #[test]
    fn malformed_header_lines_are_rejected() {
        for line in [
            &b"NoColon"[..],
            b": no name",
            b"Bad Name: x",
            b" folded: x",
            b"\tfolded: x",
            b"X: a\x01b",
            b"X: \xff\xfe",
        ] {
            assert!(
                matches!(parse_header_line(line), Err(ParseError::BadHeader(_))),
                "{}",
                escape(line)
            );
        }
    }

    #[test]
    fn headers_are_case_insensitive_and_list_valued() {
        let (_, headers) =
            split_head(b"X\r\nConnection: Keep-Alive, CLOSE\r\nconnection: upgrade\r\n\r\n")
                .unwrap();
        assert_eq!(headers.get("CONNECTION"), Some("Keep-Alive, CLOSE"));
        assert!(headers.has_token("Connection", "close"));
        assert!(headers.has_token("connection", "upgrade"));
        assert!(!headers.has_token("connection", "te"));
        assert_eq!(headers.list("Connection").count(), 3);
    }

    #[test]
    fn escape_shows_control_bytes_and_truncates() {
        assert_eq!(escape(b"a\r\n\x00"), "a\\r\\n\\x00");
        assert!(escape(&[b'x'; 200]).ends_with("..."));
    }
}
