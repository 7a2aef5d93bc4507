//! DM authentication (OMA-TS-DM_Security 1.2): `syncml:auth-basic`, `syncml:auth-md5` and the
//! `x-syncml-hmac` HTTP header, in both directions (client credentials checked by the server,
//! server credentials checked by the client). Sans-IO: pure functions plus a [`PeerAuth`] per peer.

mod digest;
mod hmac;
mod state;

pub use digest::{
    basic_credential, md5_credential, md5_digest, parse_basic, verify_basic, verify_md5,
};
pub use hmac::{hmac_header, hmac_mac, parse_hmac_header, verify_hmac, HmacHeader};
pub use state::{AuthFailure, Challenge, Credentials, OutgoingAuth, PeerAuth, Presented};

use base64::Engine as _;

/// An authentication scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScheme {
    /// `syncml:auth-basic`: `b64(user:password)`.
    Basic,
    /// `syncml:auth-md5`: `b64(md5(b64(md5(user:password)):nonce))`.
    Md5,
    /// `syncml:auth-MAC`: HMAC-style digest of each message in the `x-syncml-hmac` header.
    Hmac,
}

impl AuthScheme {
    /// The `Meta/Type` of a Cred or Chal.
    pub fn meta_type(self) -> &'static str {
        match self {
            Self::Basic => "syncml:auth-basic",
            Self::Md5 => "syncml:auth-md5",
            Self::Hmac => "syncml:auth-MAC",
        }
    }

    pub fn from_meta_type(s: &str) -> Option<Self> {
        match s {
            "syncml:auth-basic" => Some(Self::Basic),
            "syncml:auth-md5" => Some(Self::Md5),
            "syncml:auth-MAC" | "syncml:auth-mac" => Some(Self::Hmac),
            _ => None,
        }
    }

    /// The `AAuthType` value of a DMAcc credential.
    pub fn dmacc_type(self) -> &'static str {
        match self {
            Self::Basic => "BASIC",
            Self::Md5 => "DIGEST",
            Self::Hmac => "HMAC",
        }
    }

    pub fn from_dmacc_type(s: &str) -> Option<Self> {
        match s {
            "BASIC" => Some(Self::Basic),
            "DIGEST" => Some(Self::Md5),
            "HMAC" => Some(Self::Hmac),
            _ => None,
        }
    }
}

/// Why random bytes could not be had.
#[derive(Debug, thiserror::Error)]
#[error("the system random source failed: {0}")]
pub struct NonceError(String);

/// A fresh 16-byte random nonce.
pub fn generate_nonce() -> Result<Vec<u8>, NonceError> {
    let mut nonce = vec![0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| NonceError(e.to_string()))?;
    Ok(nonce)
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn unb64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
}

pub(crate) fn md5(parts: &[&[u8]]) -> [u8; 16] {
    use md5::{Digest, Md5};
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// `b64(md5(user:password))`, the first step of the MD5 and HMAC digests.
pub(crate) fn user_key(username: &str, password: &str) -> String {
    b64(&md5(&[username.as_bytes(), b":", password.as_bytes()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn nonces_are_fresh() {
        let a = generate_nonce().unwrap();
        let b = generate_nonce().unwrap();
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }

    #[test]
    fn scheme_names() {
        for s in [AuthScheme::Basic, AuthScheme::Md5, AuthScheme::Hmac] {
            assert_eq!(AuthScheme::from_meta_type(s.meta_type()), Some(s));
            assert_eq!(AuthScheme::from_dmacc_type(s.dmacc_type()), Some(s));
        }
        assert_eq!(AuthScheme::from_meta_type("syncml:auth-x509"), None);
    }

    #[test]
    fn md5_is_rfc1321() {
        assert_eq!(b64(&md5(&[b"abc"])), "kAFQmDzST7DWlj99KOF/cg==");
    }
}
