//! How the agent checks the server's credentials: as `omadm`'s [`DmAuth`] does, except that a
//! nonce the device issued recently (not only the latest) is accepted.
//!
//! Why: the device issues the server's next nonce in its answer to the server's header. A
//! session whose package 2 is final (the server had nothing to send) ends before that answer
//! goes out, so the server never learns the nonce and signs the next session with the
//! previous one. A device that then refuses the server ignores the server's statuses, the new
//! nonce the server gave it among them; if the server also has nothing to send, its challenge
//! never reaches the server either, and from then on each side refuses the other. Accepting
//! the last few issued nonces (as the Pkg#0 listener does) keeps the two in step.

use std::sync::{Arc, Mutex};

use omadm::session::auth::{CredentialCheck, DmAuth, Presented, Verdict};

/// How many earlier nonces are still accepted.
pub const KEPT_NONCES: usize = 3;

/// The server-credential check of a session.
pub struct TolerantCheck {
    inner: DmAuth,
    /// Nonces issued to the server before the current one, newest first.
    previous: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl TolerantCheck {
    pub fn new(inner: DmAuth, previous: Vec<Vec<u8>>) -> Self {
        Self {
            inner,
            previous: Arc::new(Mutex::new(previous)),
        }
    }
}

impl TolerantCheck {
    /// The earlier nonces still accepted, newest first (to store with the account).
    pub fn previous(&self) -> Arc<Mutex<Vec<Vec<u8>>>> {
        self.previous.clone()
    }
}

impl CredentialCheck for TolerantCheck {
    fn verify(&mut self, presented: Presented<'_>) -> Verdict {
        let base = self.inner.lock().clone();
        let current = base.nonce_for_verifying().to_vec();
        let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
        let candidates = std::iter::once(current.clone()).chain(previous.iter().cloned());
        for nonce in candidates {
            let mut trial = DmAuth::new(
                base.clone()
                    .with_nonces(base.nonce_for_sending().to_vec(), nonce.clone()),
            );
            let verdict = trial.verify(presented);
            if matches!(verdict, Verdict::Accepted { .. } | Verdict::NotRequired) {
                if nonce != current {
                    tracing::info!("the server used an earlier nonce: accepted");
                }
                // The nonce the server used stays accepted (first in the list) until it shows
                // it knows a newer one; the one just replaced follows.
                let issued = trial.lock().nonce_for_verifying().to_vec();
                let mut kept = vec![nonce.clone()];
                if issued != current {
                    kept.push(current.clone());
                }
                kept.extend(previous.iter().cloned());
                kept.retain(|n| *n != issued);
                let mut unique = Vec::new();
                for n in kept {
                    if !unique.contains(&n) {
                        unique.push(n);
                    }
                }
                unique.truncate(KEPT_NONCES);
                *previous = unique;
                *self.inner.lock() = trial.lock().clone();
                return verdict;
            }
        }
        drop(previous);
        // None fits: the real check, with its challenge and fresh nonce.
        let verdict = self.inner.verify(presented);
        let issued = self.inner.lock().nonce_for_verifying().to_vec();
        if issued != current {
            let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
            previous.insert(0, current);
            previous.truncate(KEPT_NONCES);
        }
        verdict
    }

    fn checks_every_message(&self) -> bool {
        self.inner.checks_every_message()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omadm::auth::{AuthScheme, Credentials, PeerAuth};
    use omadm::model::{ProtoVersion, SyncHdr};
    use omadm::session::auth::CredentialSource;

    fn pair(device_expects: &[u8], server_uses: &[u8]) -> (TolerantCheck, DmAuth) {
        let device = DmAuth::new(
            PeerAuth::new(
                AuthScheme::Md5,
                Credentials::new("dev", "devpw"),
                Credentials::new("srv", "srvpw"),
            )
            .with_nonces(Vec::new(), device_expects.to_vec()),
        );
        let server = DmAuth::new(
            PeerAuth::new(
                AuthScheme::Md5,
                Credentials::new("srv", "srvpw"),
                Credentials::new("dev", "devpw"),
            )
            .with_nonces(server_uses.to_vec(), Vec::new()),
        );
        (TolerantCheck::new(device, vec![b"older".to_vec()]), server)
    }

    fn check(device: &mut TolerantCheck, server: &mut DmAuth) -> Verdict {
        let mut hdr = SyncHdr::new(ProtoVersion::Dm12, "1", 1, "dev", "https://dm");
        hdr.cred = server.credentials();
        device.verify(Presented {
            hdr: &hdr,
            body: None,
            transport_mac: None,
        })
    }

    #[test]
    fn the_current_and_recent_nonces_are_accepted_others_challenged() {
        let (mut device, mut server) = pair(b"current", b"current");
        assert!(matches!(
            check(&mut device, &mut server),
            Verdict::Accepted { .. }
        ));
        let (mut device, mut server) = pair(b"current", b"older");
        assert!(matches!(
            check(&mut device, &mut server),
            Verdict::Accepted { .. }
        ));
        // The accepted check issued a new nonce; the one it replaced is still good once.
        let (mut device, mut server) = pair(b"current", b"forged");
        assert!(matches!(
            check(&mut device, &mut server),
            Verdict::Invalid { .. }
        ));
    }

    #[test]
    fn a_server_stuck_on_an_old_nonce_stays_accepted() {
        // Each session ends before the server learns the nonce issued in it.
        let (mut device, mut server) = pair(b"current", b"older");
        for _ in 0..10 {
            assert!(matches!(
                check(&mut device, &mut server),
                Verdict::Accepted { .. }
            ));
        }
        let previous = device.previous();
        let previous = previous.lock().unwrap();
        assert!(previous.contains(&b"older".to_vec()));
        assert!(previous.len() <= KEPT_NONCES);
    }
}
