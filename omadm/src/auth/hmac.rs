//! The `x-syncml-hmac` HTTP header (OMA-TS-DM_Security 1.2, "HMAC"):
//! `algorithm=MD5, username="<name>", mac=<b64 digest>` with
//! `mac = b64(md5(b64(md5(username:password)):nonce:b64(md5(body))))`.

use super::{b64, constant_time_eq, md5, unb64, user_key};

/// A parsed `x-syncml-hmac` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacHeader {
    /// Only `MD5` is defined; a missing `algorithm` means MD5.
    pub algorithm: String,
    pub username: String,
    /// The b64 MAC.
    pub mac: String,
}

/// The MAC of `body` (b64).
pub fn hmac_mac(username: &str, password: &str, nonce: &[u8], body: &[u8]) -> String {
    let body_hash = b64(&md5(&[body]));
    b64(&md5(&[
        user_key(username, password).as_bytes(),
        b":",
        nonce,
        b":",
        body_hash.as_bytes(),
    ]))
}

/// The header value to send with `body`.
pub fn hmac_header(username: &str, password: &str, nonce: &[u8], body: &[u8]) -> String {
    let mac = hmac_mac(username, password, nonce, body);
    format!("algorithm=MD5, username=\"{username}\", mac={mac}")
}

/// Parses a header value; `None` when `username` or `mac` is missing or a field is malformed.
pub fn parse_hmac_header(value: &str) -> Option<HmacHeader> {
    let mut algorithm = None;
    let mut username = None;
    let mut mac = None;
    for field in value.split(',') {
        let (key, val) = field.trim().split_once('=')?;
        let val = val.trim();
        let val = match val.strip_prefix('"') {
            Some(quoted) => quoted.strip_suffix('"')?,
            None => val,
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "algorithm" => algorithm = Some(val.to_owned()),
            "username" => username = Some(val.to_owned()),
            "mac" => mac = Some(val.to_owned()),
            _ => {}
        }
    }
    Some(HmacHeader {
        algorithm: algorithm.unwrap_or_else(|| "MD5".to_owned()),
        username: username?,
        mac: mac?,
    })
}

/// Checks a parsed header against the expected credentials and the message body.
pub fn verify_hmac(
    header: &HmacHeader,
    username: &str,
    password: &str,
    nonce: &[u8],
    body: &[u8],
) -> bool {
    if !header.algorithm.eq_ignore_ascii_case("MD5") {
        return false;
    }
    let expected = hmac_mac(username, password, nonce, body);
    let user_ok = constant_time_eq(header.username.as_bytes(), username.as_bytes());
    let mac_ok = match (unb64(&header.mac), unb64(&expected)) {
        (Some(presented), Some(expected)) => constant_time_eq(&presented, &expected),
        _ => false,
    };
    user_ok & mac_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"<SyncML>hello</SyncML>";

    #[test]
    fn mac_matches_an_independent_computation() {
        // Python: b64(md5(b64(md5(b"dev1:secret")) + b":n0nce:" + b64(md5(BODY))))
        assert_eq!(
            hmac_mac("dev1", "secret", b"n0nce", BODY),
            "ywDtSTyeQVizLustGT5hfA=="
        );
    }

    #[test]
    fn header_round_trip_and_verify() {
        let value = hmac_header("dev1", "secret", b"n0nce", BODY);
        assert_eq!(
            value,
            "algorithm=MD5, username=\"dev1\", mac=ywDtSTyeQVizLustGT5hfA=="
        );
        let header = parse_hmac_header(&value).unwrap();
        assert_eq!(header.username, "dev1");
        assert!(verify_hmac(&header, "dev1", "secret", b"n0nce", BODY));
        assert!(!verify_hmac(
            &header,
            "dev1",
            "secret",
            b"n0nce",
            b"<SyncML>tampered</SyncML>"
        ));
        assert!(!verify_hmac(&header, "dev1", "secret", b"other", BODY));
        assert!(!verify_hmac(&header, "dev2", "secret", b"n0nce", BODY));
        let sha = HmacHeader {
            algorithm: "SHA1".into(),
            ..header
        };
        assert!(!verify_hmac(&sha, "dev1", "secret", b"n0nce", BODY));
    }

    #[test]
    fn header_parsing_is_lenient_on_spacing_and_strict_on_fields() {
        let h = parse_hmac_header("username=\"a b\",mac=xyz").unwrap();
        assert_eq!(
            (h.algorithm.as_str(), h.username.as_str(), h.mac.as_str()),
            ("MD5", "a b", "xyz")
        );
        assert_eq!(parse_hmac_header("algorithm=MD5, mac=xyz"), None);
        assert_eq!(
            parse_hmac_header("algorithm=MD5, username=\"x, mac=xyz"),
            None
        );
        assert_eq!(parse_hmac_header("garbage"), None);
    }
}
