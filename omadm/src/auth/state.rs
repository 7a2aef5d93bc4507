//! Per-peer authentication state: what we present, what we expect, and the nonces each way.
//!
//! One [`PeerAuth`] serves both directions: on the device it presents CLCRED and verifies SRVCRED,
//! on the server the opposite. The nonce the peer gave us (its last NextNonce) goes into what we
//! send; the nonce we gave the peer is what its credentials must use. Callers persist both (DMAcc
//! `AAuthData`) between sessions.

use super::{
    b64, basic_credential, generate_nonce, hmac_header, md5_credential, parse_hmac_header, unb64,
    verify_basic, verify_hmac, verify_md5, AuthScheme, NonceError,
};
use crate::status::StatusCode;

/// A user name and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }
}

/// What an incoming message carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// No Cred and no HMAC header.
    Nothing,
    /// A SyncHdr `Cred`: its Meta Type and Data.
    Cred { meta_type: &'a str, data: &'a str },
    /// The `x-syncml-hmac` HTTP header value.
    HmacHeader(&'a str),
}

/// What to attach to an outgoing message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutgoingAuth {
    /// A SyncHdr `Cred` with Meta Type, Meta Format `b64` and Data.
    Cred {
        meta_type: &'static str,
        data: String,
    },
    /// The `x-syncml-hmac` HTTP header value.
    HmacHeader(String),
}

/// A `Chal` to send with a 401 or 407 Status on the SyncHdr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// 401 (credentials wrong) or 407 (credentials missing).
    pub status: StatusCode,
    /// Chal Meta Type (`syncml:auth-md5`, ...).
    pub meta_type: &'static str,
    /// Chal Meta Format: always `b64`.
    pub format: &'static str,
    /// Chal Meta NextNonce (b64); `None` for basic.
    pub next_nonce: Option<String>,
}

/// Why incoming credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("the message carries no credentials")]
    Missing,
    #[error("the credentials use `{presented}` but `{expected}` is required")]
    WrongScheme {
        presented: String,
        expected: &'static str,
    },
    #[error("the credentials do not verify")]
    Invalid,
    #[error("the x-syncml-hmac header is malformed")]
    MalformedHeader,
    #[error("the NextNonce is not base64")]
    BadNonce,
}

impl AuthFailure {
    /// The SyncHdr status: 407 when credentials are missing, 401 otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Missing => StatusCode::MISSING_CREDENTIALS,
            _ => StatusCode::INVALID_CREDENTIALS,
        }
    }
}

/// Authentication with one peer.
#[derive(Debug, Clone)]
pub struct PeerAuth {
    scheme: AuthScheme,
    local: Credentials,
    remote: Credentials,
    nonce_for_sending: Vec<u8>,
    nonce_for_verifying: Vec<u8>,
}

impl PeerAuth {
    /// `local`: what we present; `remote`: what the peer must present.
    pub fn new(scheme: AuthScheme, local: Credentials, remote: Credentials) -> Self {
        Self {
            scheme,
            local,
            remote,
            nonce_for_sending: Vec::new(),
            nonce_for_verifying: Vec::new(),
        }
    }

    /// Sets the stored nonces: the one the peer gave us, and the one we gave the peer.
    pub fn with_nonces(mut self, for_sending: Vec<u8>, for_verifying: Vec<u8>) -> Self {
        self.nonce_for_sending = for_sending;
        self.nonce_for_verifying = for_verifying;
        self
    }

    pub fn scheme(&self) -> AuthScheme {
        self.scheme
    }

    /// The user name we present.
    pub fn local_username(&self) -> &str {
        &self.local.username
    }

    /// The nonce our credentials use (the peer's last NextNonce), to persist.
    pub fn nonce_for_sending(&self) -> &[u8] {
        &self.nonce_for_sending
    }

    /// The nonce the peer's credentials must use (our last NextNonce), to persist.
    pub fn nonce_for_verifying(&self) -> &[u8] {
        &self.nonce_for_verifying
    }

    /// Our credentials for a message whose body (for HMAC) is `body`.
    pub fn outgoing(&self, body: &[u8]) -> OutgoingAuth {
        let (user, pass, nonce) = (
            &self.local.username,
            &self.local.password,
            &self.nonce_for_sending,
        );
        match self.scheme {
            AuthScheme::Basic => OutgoingAuth::Cred {
                meta_type: self.scheme.meta_type(),
                data: basic_credential(user, pass),
            },
            AuthScheme::Md5 => OutgoingAuth::Cred {
                meta_type: self.scheme.meta_type(),
                data: md5_credential(user, pass, nonce),
            },
            AuthScheme::Hmac => OutgoingAuth::HmacHeader(hmac_header(user, pass, nonce, body)),
        }
    }

    /// Checks what the peer presented with a message of body `body`.
    pub fn verify(&self, presented: Presented<'_>, body: &[u8]) -> Result<(), AuthFailure> {
        let (user, pass, nonce) = (
            &self.remote.username,
            &self.remote.password,
            &self.nonce_for_verifying,
        );
        let expected = self.scheme.meta_type();
        let ok = match (self.scheme, presented) {
            (_, Presented::Nothing) => return Err(AuthFailure::Missing),
            (AuthScheme::Hmac, Presented::HmacHeader(value)) => {
                let header = parse_hmac_header(value).ok_or(AuthFailure::MalformedHeader)?;
                verify_hmac(&header, user, pass, nonce, body)
            }
            (AuthScheme::Hmac, Presented::Cred { meta_type, .. }) => {
                return Err(AuthFailure::WrongScheme {
                    presented: meta_type.to_owned(),
                    expected,
                })
            }
            (_, Presented::HmacHeader(_)) => {
                return Err(AuthFailure::WrongScheme {
                    presented: AuthScheme::Hmac.meta_type().to_owned(),
                    expected,
                })
            }
            (scheme, Presented::Cred { meta_type, data }) => {
                if AuthScheme::from_meta_type(meta_type) != Some(scheme) {
                    return Err(AuthFailure::WrongScheme {
                        presented: meta_type.to_owned(),
                        expected,
                    });
                }
                match scheme {
                    AuthScheme::Basic => verify_basic(data, user, pass),
                    _ => verify_md5(data, user, pass, nonce),
                }
            }
        };
        if ok {
            Ok(())
        } else {
            Err(AuthFailure::Invalid)
        }
    }

    /// Makes a fresh nonce the peer must use next, and returns it b64 (a NextNonce to send, e.g.
    /// with the 212 of a successful authentication).
    pub fn issue_next_nonce(&mut self) -> Result<String, NonceError> {
        self.nonce_for_verifying = generate_nonce()?;
        Ok(b64(&self.nonce_for_verifying))
    }

    /// The challenge answering `failure`, with a fresh nonce (none for basic).
    pub fn challenge(&mut self, failure: &AuthFailure) -> Result<Challenge, NonceError> {
        let next_nonce = match self.scheme {
            AuthScheme::Basic => None,
            AuthScheme::Md5 | AuthScheme::Hmac => Some(self.issue_next_nonce()?),
        };
        Ok(Challenge {
            status: failure.status(),
            meta_type: self.scheme.meta_type(),
            format: "b64",
            next_nonce,
        })
    }

    /// Takes a NextNonce the peer sent (b64): our next credentials use it.
    pub fn accept_next_nonce(&mut self, next_nonce: &str) -> Result<(), AuthFailure> {
        self.nonce_for_sending = unb64(next_nonce).ok_or(AuthFailure::BadNonce)?;
        Ok(())
    }

    /// Takes a received challenge: switches to its scheme (if known) and takes its nonce.
    /// Returns false for an unknown scheme.
    pub fn accept_challenge(
        &mut self,
        meta_type: &str,
        next_nonce: Option<&str>,
    ) -> Result<bool, AuthFailure> {
        let Some(scheme) = AuthScheme::from_meta_type(meta_type) else {
            return Ok(false);
        };
        if let Some(nonce) = next_nonce {
            self.accept_next_nonce(nonce)?;
        }
        self.scheme = scheme;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"<SyncML/>";

    /// A device and a server, each with its view of the other.
    fn pair(scheme: AuthScheme) -> (PeerAuth, PeerAuth) {
        let client = Credentials::new("dev1", "clientpw");
        let server = Credentials::new("srv1", "serverpw");
        let device = PeerAuth::new(scheme, client.clone(), server.clone());
        let srv = PeerAuth::new(scheme, server, client);
        (device, srv)
    }

    fn present(out: &OutgoingAuth) -> Presented<'_> {
        match out {
            OutgoingAuth::Cred { meta_type, data } => Presented::Cred { meta_type, data },
            OutgoingAuth::HmacHeader(value) => Presented::HmacHeader(value),
        }
    }

    #[test]
    fn md5_challenge_then_success_both_directions() {
        let (mut device, server) = pair(AuthScheme::Md5);
        let mut server = server.with_nonces(Vec::new(), b"server-side nonce".to_vec());
        // First message: the device does not know the server's nonce yet.
        let first = device.outgoing(BODY);
        let failure = server.verify(present(&first), BODY).unwrap_err();
        assert_eq!(failure, AuthFailure::Invalid);
        let chal = server.challenge(&failure).unwrap();
        assert_eq!(chal.status, StatusCode::INVALID_CREDENTIALS);
        assert_eq!((chal.meta_type, chal.format), ("syncml:auth-md5", "b64"));
        assert!(device
            .accept_challenge(chal.meta_type, chal.next_nonce.as_deref())
            .unwrap());
        let retry = device.outgoing(BODY);
        assert_eq!(server.verify(present(&retry), BODY), Ok(()));
        // Server to client: the device issues a nonce, the server uses it.
        let nonce = device.issue_next_nonce().unwrap();
        server.accept_next_nonce(&nonce).unwrap();
        assert_eq!(device.verify(present(&server.outgoing(BODY)), BODY), Ok(()));
        // A replay after the nonce changed fails.
        device.issue_next_nonce().unwrap();
        assert_eq!(
            device.verify(present(&server.outgoing(BODY)), BODY),
            Err(AuthFailure::Invalid)
        );
    }

    #[test]
    fn missing_credentials_get_407_and_wrong_scheme_401() {
        let (_, mut server) = pair(AuthScheme::Md5);
        let failure = server.verify(Presented::Nothing, BODY).unwrap_err();
        assert_eq!(failure.status(), StatusCode::MISSING_CREDENTIALS);
        assert_eq!(
            server.challenge(&failure).unwrap().status,
            StatusCode::MISSING_CREDENTIALS
        );
        let basic = Presented::Cred {
            meta_type: "syncml:auth-basic",
            data: "ZGV2MTpjbGllbnRwdw==",
        };
        let failure = server.verify(basic, BODY).unwrap_err();
        assert!(matches!(failure, AuthFailure::WrongScheme { .. }));
        assert_eq!(failure.status(), StatusCode::INVALID_CREDENTIALS);
    }

    #[test]
    fn basic_has_no_nonce() {
        let (device, mut server) = pair(AuthScheme::Basic);
        assert_eq!(server.verify(present(&device.outgoing(BODY)), BODY), Ok(()));
        let chal = server.challenge(&AuthFailure::Invalid).unwrap();
        assert_eq!(chal.next_nonce, None);
        assert_eq!(chal.meta_type, "syncml:auth-basic");
    }

    #[test]
    fn hmac_covers_the_body() {
        let (mut device, mut server) = pair(AuthScheme::Hmac);
        let nonce = server.issue_next_nonce().unwrap();
        device.accept_next_nonce(&nonce).unwrap();
        let out = device.outgoing(BODY);
        assert!(matches!(out, OutgoingAuth::HmacHeader(_)));
        assert_eq!(server.verify(present(&out), BODY), Ok(()));
        assert_eq!(
            server.verify(present(&out), b"<SyncML>x</SyncML>"),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(
            server.verify(Presented::HmacHeader("junk"), BODY),
            Err(AuthFailure::MalformedHeader)
        );
        let cred = Presented::Cred {
            meta_type: "syncml:auth-md5",
            data: "x",
        };
        assert!(matches!(
            server.verify(cred, BODY),
            Err(AuthFailure::WrongScheme { .. })
        ));
    }

    #[test]
    fn nonces_persist_and_bad_nonces_are_refused() {
        let (device, _) = pair(AuthScheme::Md5);
        let mut device = device.with_nonces(b"a".to_vec(), b"b".to_vec());
        assert_eq!(
            (device.nonce_for_sending(), device.nonce_for_verifying()),
            (&b"a"[..], &b"b"[..])
        );
        assert_eq!(device.accept_next_nonce("***"), Err(AuthFailure::BadNonce));
        assert_eq!(device.accept_challenge("syncml:auth-x509", None), Ok(false));
        assert_eq!(device.scheme(), AuthScheme::Md5);
        assert!(
            !format!("{:?}", device).contains("clientpw"),
            "secrets stay out of Debug"
        );
    }
}
