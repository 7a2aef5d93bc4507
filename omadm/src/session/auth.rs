//! Authentication hooks: what a session asks of the credentials layer in each direction.
//!
//! Each side has a [`CredentialSource`] (what it puts in its own `SyncHdr/Cred` or `x-syncml-hmac`
//! header, and how it takes a challenge) and a [`CredentialCheck`] (how it checks the peer's
//! credentials and which challenge it answers with). [`DmAuth`] implements both over
//! [`crate::auth::PeerAuth`] (basic, MD5 digest, HMAC), sharing one nonce state per peer.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::auth::{AuthFailure, Challenge, OutgoingAuth, PeerAuth};
use crate::model::{Chal, Cred, Data, Meta, SyncHdr};
use crate::status::StatusCode;

/// The credentials one side sends.
pub trait CredentialSource: Send {
    /// The `Cred` for our next message header (`None`: send none).
    fn credentials(&mut self) -> Option<Cred>;

    /// The peer challenged us (a `Chal` in the Status of our header, with 401/407 or to give the
    /// next nonce): remember the scheme and nonce for our next credentials.
    fn challenged(&mut self, chal: &Chal);

    /// The `x-syncml-hmac` transport header for an encoded message (HMAC scheme only).
    fn transport_mac(&mut self, body: &[u8]) -> Option<String> {
        let _ = body;
        None
    }

    /// The `LocName` of our `SyncHdr/Source` in a message carrying our `Cred`: the user name,
    /// which MD5 digest credentials do not carry themselves (DM RepPro: LocName is "used for
    /// sending userid for MD5 authentication").
    fn loc_name(&mut self) -> Option<String> {
        None
    }
}

/// What the peer's credentials are worth.
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

/// A message as the check sees it: its header and, over HTTP, the raw body and the
/// `x-syncml-hmac` header.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub hdr: &'a SyncHdr,
    pub body: Option<&'a [u8]>,
    pub transport_mac: Option<&'a str>,
}

/// Checks the peer's credentials.
pub trait CredentialCheck: Send {
    /// Checks the credentials of a message (called until one is accepted in the session, or
    /// for every message when [`CredentialCheck::checks_every_message`]).
    fn verify(&mut self, presented: Presented<'_>) -> Verdict;

    /// Whether every message must be checked, not only until one is accepted (HMAC: each
    /// message carries its own MAC).
    fn checks_every_message(&self) -> bool {
        false
    }
}

/// Sends no credentials.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCredentials;

impl CredentialSource for NoCredentials {
    fn credentials(&mut self) -> Option<Cred> {
        None
    }

    fn challenged(&mut self, _chal: &Chal) {}
}

/// Requires no credentials.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

impl CredentialCheck for AcceptAll {
    fn verify(&mut self, _presented: Presented<'_>) -> Verdict {
        Verdict::NotRequired
    }
}

/// Both directions of DM authentication with one peer over a shared [`PeerAuth`]: clone it into
/// the session as source and check; read the nonces back with [`DmAuth::lock`] afterwards, to
/// persist them.
#[derive(Debug, Clone)]
pub struct DmAuth(Arc<Mutex<PeerAuth>>);

impl DmAuth {
    pub fn new(peer: PeerAuth) -> Self {
        Self(Arc::new(Mutex::new(peer)))
    }

    /// The shared state (a poisoned lock still yields it: the state is plain data).
    pub fn lock(&self) -> MutexGuard<'_, PeerAuth> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn chal_of(challenge: Challenge) -> Chal {
    let mut meta = Meta::format_and_type(challenge.format, challenge.meta_type);
    meta.next_nonce = challenge.next_nonce.map(Data::Text);
    Chal { meta }
}

impl CredentialSource for DmAuth {
    fn credentials(&mut self) -> Option<Cred> {
        match self.lock().outgoing(&[]) {
            OutgoingAuth::Cred { meta_type, data } => Some(Cred::new(meta_type, "b64", data)),
            OutgoingAuth::HmacHeader(_) => None,
        }
    }

    fn challenged(&mut self, chal: &Chal) {
        let Some(meta_type) = chal.meta.type_.as_deref() else {
            return;
        };
        let nonce = chal.meta.next_nonce.as_ref().map(Data::to_string_lossy);
        // A bad nonce leaves the old one: the next attempt fails and is challenged again.
        let _ = self.lock().accept_challenge(meta_type, nonce.as_deref());
    }

    fn loc_name(&mut self) -> Option<String> {
        let peer = self.lock();
        (peer.scheme() == crate::auth::AuthScheme::Md5).then(|| peer.local_username().to_owned())
    }

    fn transport_mac(&mut self, body: &[u8]) -> Option<String> {
        match self.lock().outgoing(body) {
            OutgoingAuth::HmacHeader(value) => Some(value),
            OutgoingAuth::Cred { .. } => None,
        }
    }
}

impl CredentialCheck for DmAuth {
    fn checks_every_message(&self) -> bool {
        self.lock().scheme() == crate::auth::AuthScheme::Hmac
    }

    fn verify(&mut self, presented: Presented<'_>) -> Verdict {
        let cred = presented.hdr.cred.as_ref();
        let meta_type = cred
            .and_then(|cred| cred.meta.as_ref())
            .and_then(|meta| meta.type_.as_deref())
            .unwrap_or("syncml:auth-basic");
        let data = cred.map(|cred| cred.data.to_string_lossy());
        let shown = match (presented.transport_mac, &data) {
            (Some(mac), _) => crate::auth::Presented::HmacHeader(mac),
            (None, Some(data)) => crate::auth::Presented::Cred { meta_type, data },
            (None, None) => crate::auth::Presented::Nothing,
        };
        let mut peer = self.lock();
        let failure = match peer.verify(shown, presented.body.unwrap_or_default()) {
            Ok(()) => {
                let next = match peer.scheme() {
                    crate::auth::AuthScheme::Basic => None,
                    _ => peer.issue_next_nonce().ok().map(|nonce| {
                        let mut meta = Meta::format_and_type("b64", peer.scheme().meta_type());
                        meta.next_nonce = Some(Data::Text(nonce));
                        Chal { meta }
                    }),
                };
                return Verdict::Accepted { next };
            }
            Err(failure) => failure,
        };
        let chal = match peer.challenge(&failure) {
            Ok(challenge) => chal_of(challenge),
            Err(_) => Chal {
                meta: Meta::format_and_type("b64", peer.scheme().meta_type()),
            },
        };
        match failure {
            AuthFailure::Missing => Verdict::Missing { chal },
            _ => Verdict::Invalid { chal },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthScheme, Credentials};
    use crate::model::ProtoVersion;

    fn pair(scheme: AuthScheme) -> (DmAuth, DmAuth) {
        let device = Credentials::new("dev", "devpw");
        let server = Credentials::new("srv", "srvpw");
        (
            DmAuth::new(PeerAuth::new(scheme, device.clone(), server.clone())),
            DmAuth::new(PeerAuth::new(scheme, server, device)),
        )
    }

    fn verify(check: &mut DmAuth, cred: Option<Cred>) -> Verdict {
        let mut hdr = SyncHdr::new(ProtoVersion::Dm12, "1", 1, "https://dm", "dev");
        hdr.cred = cred;
        check.verify(Presented {
            hdr: &hdr,
            body: None,
            transport_mac: None,
        })
    }

    #[test]
    fn md5_is_challenged_then_accepted_with_the_new_nonce() {
        let (mut device, mut server) = pair(AuthScheme::Md5);
        let stored = server
            .lock()
            .clone()
            .with_nonces(Vec::new(), b"old-nonce".to_vec());
        *server.lock() = stored;
        let first = verify(&mut server, device.credentials());
        assert_eq!(first.status(), StatusCode::INVALID_CREDENTIALS);
        let chal = first.chal().cloned().expect("a challenge");
        assert!(chal.meta.next_nonce.is_some());
        device.challenged(&chal);
        let second = verify(&mut server, device.credentials());
        assert_eq!(second.status(), StatusCode::AUTHENTICATION_ACCEPTED);
    }

    #[test]
    fn missing_credentials_are_407_and_basic_needs_no_nonce() {
        let (mut device, mut server) = pair(AuthScheme::Basic);
        assert_eq!(
            verify(&mut server, None).status(),
            StatusCode::MISSING_CREDENTIALS
        );
        assert_eq!(
            verify(&mut server, device.credentials()).status(),
            StatusCode::AUTHENTICATION_ACCEPTED
        );
    }
}
