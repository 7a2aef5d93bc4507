//! Authentication hooks: what a session asks of the credentials layer in each direction.
//!
//! Each side has a [`Credentials`] (what it puts in its own `SyncHdr/Cred`, and how it answers a
//! challenge) and a [`Verifier`] (how it checks the peer's `Cred`, and which challenge it sends
//! back). The DM schemes themselves (basic, MD5 digest, HMAC) live in [`crate::auth`]; this module
//! holds only the session-facing traits and the basic scheme, which needs no nonce.

use base64::Engine as _;

use crate::model::{Chal, Cred, Meta, SyncHdr};
use crate::status::StatusCode;

/// `syncml:auth-basic`.
pub const AUTH_BASIC: &str = "syncml:auth-basic";

/// The credentials one side sends.
pub trait Credentials: Send {
    /// The `Cred` for our next message header (`None`: send none).
    fn credentials(&mut self) -> Option<Cred>;

    /// The peer challenged us (a `Chal` in the Status of our header, with 401/407 or to give the
    /// next nonce): remember the scheme and nonce for the next [`Credentials::credentials`].
    fn challenged(&mut self, chal: &Chal);

    /// The `x-syncml-hmac` transport header for an encoded message (HMAC scheme only).
    fn transport_mac(&mut self, body: &[u8]) -> Option<String> {
        let _ = body;
        None
    }
}

/// What the peer's header credentials are worth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid credentials (status 212); `next` is an optional challenge carrying the next nonce.
    Accepted { next: Option<Chal> },
    /// No credentials needed and none checked (status 200).
    NotRequired,
    /// No credentials where some are required (status 407, with the challenge).
    Missing { chal: Chal },
    /// Wrong credentials (status 401, with the challenge).
    Invalid { chal: Chal },
}

impl Verdict {
    /// The status of the peer's `SyncHdr`.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Accepted { .. } => StatusCode::AUTHENTICATION_ACCEPTED,
            Self::NotRequired => StatusCode::OK,
            Self::Missing { .. } => StatusCode::MISSING_CREDENTIALS,
            Self::Invalid { .. } => StatusCode::INVALID_CREDENTIALS,
        }
    }

    /// The challenge to put in that status.
    pub fn chal(&self) -> Option<&Chal> {
        match self {
            Self::Accepted { next } => next.as_ref(),
            Self::NotRequired => None,
            Self::Missing { chal } | Self::Invalid { chal } => Some(chal),
        }
    }
}

/// The message as the verifier sees it: its header and, over HTTP, the raw body and the
/// `x-syncml-hmac` header (HMAC scheme).
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub hdr: &'a SyncHdr,
    pub body: Option<&'a [u8]>,
    pub transport_mac: Option<&'a str>,
}

/// Checks the peer's credentials.
pub trait Verifier: Send {
    /// Checks the credentials of a message (called until one is accepted in the session).
    fn verify(&mut self, presented: Presented<'_>) -> Verdict;
}

/// Sends no credentials.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCredentials;

impl Credentials for NoCredentials {
    fn credentials(&mut self) -> Option<Cred> {
        None
    }

    fn challenged(&mut self, _chal: &Chal) {}
}

/// Requires no credentials.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

impl Verifier for AcceptAll {
    fn verify(&mut self, _presented: Presented<'_>) -> Verdict {
        Verdict::NotRequired
    }
}

/// `syncml:auth-basic`: `b64(user:password)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Basic {
    pub user: String,
    pub password: String,
}

impl Basic {
    /// Basic credentials of `user` / `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }

    fn token(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.user, self.password))
    }

    /// The challenge asking for basic credentials.
    pub fn challenge() -> Chal {
        Chal {
            meta: Meta::format_and_type("b64", AUTH_BASIC),
        }
    }
}

impl Credentials for Basic {
    fn credentials(&mut self) -> Option<Cred> {
        Some(Cred::new(AUTH_BASIC, "b64", self.token()))
    }

    fn challenged(&mut self, _chal: &Chal) {}
}

impl Verifier for Basic {
    fn verify(&mut self, presented: Presented<'_>) -> Verdict {
        let Some(cred) = &presented.hdr.cred else {
            return Verdict::Missing {
                chal: Self::challenge(),
            };
        };
        let scheme = cred.meta.as_ref().and_then(|meta| meta.type_.as_deref());
        let matches = scheme.is_none_or(|scheme| scheme == AUTH_BASIC)
            && cred.data.as_bytes() == self.token().as_bytes();
        if matches {
            Verdict::Accepted { next: None }
        } else {
            Verdict::Invalid {
                chal: Self::challenge(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ProtoVersion;

    fn hdr(cred: Option<Cred>) -> SyncHdr {
        let mut hdr = SyncHdr::new(ProtoVersion::Dm12, "1", 1, "https://dm", "dev");
        hdr.cred = cred;
        hdr
    }

    fn verify(verifier: &mut impl Verifier, hdr: &SyncHdr) -> Verdict {
        verifier.verify(Presented {
            hdr,
            body: None,
            transport_mac: None,
        })
    }

    #[test]
    fn basic_accepts_its_own_credentials_and_challenges_otherwise() {
        let mut basic = Basic::new("dev", "secret");
        let good = hdr(basic.credentials());
        assert_eq!(verify(&mut basic, &good).status(), StatusCode(212));
        let missing = verify(&mut basic, &hdr(None));
        assert_eq!(missing.status(), StatusCode(407));
        assert!(missing.chal().is_some());
        let wrong = hdr(Basic::new("dev", "guess").credentials());
        assert_eq!(verify(&mut basic, &wrong).status(), StatusCode(401));
    }
}
