//! The Pkg#0 listener: a notification whose digest verifies with the server's credentials
//! (its secret and the nonce the device gave it) makes the DM client open the session it
//! names; anything else is logged and ignored.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use omadm::session::Initiation;
use omadm::transport::notify::NotificationListener;

use crate::alerts::{Wake, Wakeup};
use crate::store::AccountRecord;

/// Binds the listener and serves it on a thread.
pub fn spawn(
    addr: SocketAddr,
    account: Arc<Mutex<AccountRecord>>,
    live: super::LiveAuth,
    wakeup: Arc<Wakeup>,
) -> Result<SocketAddr, omadm::transport::notify::NotifyError> {
    let listener = NotificationListener::bind(addr)?;
    let bound = listener.local_addr().unwrap_or(addr);
    std::thread::Builder::new()
        .name("pkg0".into())
        .spawn(move || loop {
            let credentials = |server_id: &str| {
                let account = account.lock().unwrap_or_else(|p| p.into_inner());
                (account.server_id == server_id).then(|| {
                    let mut nonces = vec![account.server_nonce.clone()];
                    nonces.extend(account.previous_server_nonces.iter().cloned());
                    if let Some(auth) = live.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                        nonces.push(auth.lock().nonce_for_verifying().to_vec());
                    }

                    (account.server_secret.clone(), nonces)
                })
            };
            match listener.receive(Duration::from_secs(3600), credentials) {
                Ok(notification) => {
                    let Initiation::Server { session_id } =
                        Initiation::from_notification(&notification)
                    else {
                        continue;
                    };
                    tracing::info!(session = %session_id, "verified Pkg#0: opening a session");
                    wakeup.notify(Wake::Notification { session_id });
                }
                Err(omadm::transport::notify::NotifyError::Receive(_)) => {}
                Err(e) => tracing::warn!(error = %crate::error_chain(&e), "Pkg#0 refused"),
            }
        })
        .map_err(|source| omadm::transport::notify::NotifyError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    Ok(bound)
}
