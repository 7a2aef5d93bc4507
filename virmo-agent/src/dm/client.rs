//! The DM client loop: opens a session with the server on start, on a verified Pkg#0, every
//! poll interval, and whenever alerts wait; serves the server's commands on the tree; delivers
//! the queued Generic Alerts. An alert leaves the database only once the server acknowledged
//! it (2xx); the others are retried with a doubling delay.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use omadm::auth::{Credentials, PeerAuth};
use omadm::session::auth::DmAuth;
use omadm::session::{
    ClientConfig, ClientEvent, ClientSession, Encoding, EndReason, GenericAlert, Initiation, Limits,
};
use omadm::transport::DmHttpClient;
use omadm::tree::std_objects::{set_account_nonce, AuthLevel};
use omadm::tree::DmTree;

use crate::alerts::{to_generic, Wake, Wakeup};
use crate::config::{EncodingKind, ServerConfig};
use crate::model::unix_now;
use crate::store::{AccountRecord, AlertRecord, Store};

/// The DM client.
pub struct DmClient {
    pub tree: DmTree,
    pub store: Arc<dyn Store>,
    pub wakeup: Arc<Wakeup>,
    pub server: ServerConfig,
    /// Shared with the Pkg#0 listener (which needs the server's secret and nonce).
    pub account: Arc<Mutex<AccountRecord>>,
    pub dev_info: omadm::session::DevInfo,
    live: super::LiveAuth,
    next_session: u32,
}

/// What one session achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    pub reason: Option<EndReason>,
    pub delivered: usize,
    pub undelivered: usize,
}

impl DmClient {
    pub fn new(
        tree: DmTree,
        store: Arc<dyn Store>,
        wakeup: Arc<Wakeup>,
        server: ServerConfig,
        account: Arc<Mutex<AccountRecord>>,
        dev_info: omadm::session::DevInfo,
        live: super::LiveAuth,
    ) -> Self {
        let next_session = u32::from(u16::from_be_bytes({
            let b = crate::model::random_bytes(2);
            [b[0], b[1]]
        }));
        Self {
            tree,
            store,
            wakeup,
            server,
            account,
            dev_info,
            live,
            next_session,
        }
    }

    fn account(&self) -> AccountRecord {
        self.account
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs until a [`Wake::Shutdown`].
    pub fn run(mut self) {
        let poll = Duration::from_secs(self.server.poll_interval_secs);
        let mut next_poll = Instant::now();
        let mut pending_wakes: Vec<Wake> = Vec::new();
        loop {
            let now = Instant::now();
            let next_alert = self.next_alert_due();
            let mut due = next_poll;
            if let Some(at) = next_alert {
                due = due.min(at);
            }
            if pending_wakes.is_empty() && due > now {
                pending_wakes = self.wakeup.wait(due - now);
            }
            if pending_wakes.contains(&Wake::Shutdown) {
                return;
            }
            let notification = pending_wakes.iter().find_map(|w| match w {
                Wake::Notification { session_id } => Some(session_id.clone()),
                _ => None,
            });
            let now = Instant::now();
            let alerts_due = self.alerts_due_now();
            let wanted = notification.is_some() || now >= next_poll || alerts_due;
            pending_wakes.clear();
            if !wanted {
                continue;
            }
            let initiation = match notification {
                Some(session_id) => Initiation::Server { session_id },
                None => {
                    self.next_session = (self.next_session + 1) % 0x1_0000;
                    Initiation::Client {
                        session_id: self.next_session.to_string(),
                    }
                }
            };
            let report = self.session(initiation);
            tracing::info!(?report.reason, report.delivered, report.undelivered, "DM session over");
            next_poll = Instant::now() + poll;
        }
    }

    /// Whether an alert waits whose next attempt is due.
    fn alerts_due_now(&self) -> bool {
        let now = unix_now();
        self.store
            .alerts()
            .is_ok_and(|alerts| alerts.iter().any(|a| a.next_attempt_at <= now))
    }

    /// When the earliest queued alert is due (a past instant when it already is).
    fn next_alert_due(&self) -> Option<Instant> {
        let alerts = self.store.alerts().ok()?;
        let earliest = alerts.iter().map(|a| a.next_attempt_at).min()?;
        let wait = earliest - unix_now();
        Some(Instant::now() + Duration::from_secs(u64::try_from(wait).unwrap_or(0)))
    }

    fn retry_delay(&self, attempts: u32) -> i64 {
        let delay = self
            .server
            .retry_min_secs
            .saturating_mul(1u64 << attempts.min(20))
            .min(self.server.retry_max_secs);
        i64::try_from(delay).unwrap_or(i64::MAX)
    }

    /// Runs one session to its end.
    pub fn session(&mut self, initiation: Initiation) -> SessionReport {
        let account = self.account();
        let scheme = omadm::auth::AuthScheme::from_dmacc_type(&account.auth_type)
            .unwrap_or(self.server.auth.scheme());
        let auth = DmAuth::new(
            PeerAuth::new(
                scheme,
                Credentials::new(&account.client_name, &account.client_secret),
                Credentials::new(&account.server_name, &account.server_secret),
            )
            .with_nonces(account.client_nonce.clone(), account.server_nonce.clone()),
        );
        let config = ClientConfig {
            proto: omadm::model::ProtoVersion::Dm12,
            server_uri: account.server_url.clone(),
            server_id: account.server_id.clone(),
            dev_info: self.dev_info.clone(),
            encoding: match self.server.encoding {
                EncodingKind::Xml => Encoding::Xml,
                EncodingKind::Wbxml => Encoding::Wbxml,
            },
            limits: Limits::default(),
        };
        let mut in_session: Vec<(AlertRecord, GenericAlert, bool)> = Vec::new();
        let queued = self.store.alerts().unwrap_or_default();
        let first: Vec<GenericAlert> = queued.iter().map(|a| to_generic(&a.alert)).collect();
        for (record, generic) in queued.into_iter().zip(first.iter().cloned()) {
            in_session.push((record, generic, false));
        }
        let span = tracing::info_span!("dm_session", server = %account.server_id);
        let _entered = span.enter();
        let check =
            super::auth::TolerantCheck::new(auth.clone(), account.previous_server_nonces.clone());
        let previous = check.previous();
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(auth.clone());
        let mut session = ClientSession::new(config, initiation, first, Instant::now())
            .with_credentials(Box::new(auth.clone()))
            .with_server_verifier(Box::new(check));
        let http = match super::http::dm_http_client(&self.server) {
            Ok(http) => http,
            Err(e) => {
                // Never a fallback to other roots: the session does not start.
                tracing::error!(error = %crate::error_chain(&e), "cannot set up the DM server's HTTPS");
                session.transport_failed(crate::error_chain(&e));
                DmHttpClient::new(Duration::from_secs(self.server.http_timeout_secs))
            }
        };
        loop {
            // Alerts raised while the session runs go with its next message.
            if let Ok(all) = self.store.alerts() {
                for record in all {
                    if !in_session.iter().any(|(r, _, _)| r.id == record.id) {
                        let generic = to_generic(&record.alert);
                        session.queue_generic_alert(generic.clone());
                        in_session.push((record, generic, false));
                    }
                }
            }
            session.handle_timeout(Instant::now());
            let transmit = match session.poll_transmit(Instant::now()) {
                Ok(Some(t)) => t,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %crate::error_chain(&e), "cannot encode a DM message");
                    session.abort();
                    break;
                }
            };
            tracing::trace!(url = %transmit.target_uri, body = %String::from_utf8_lossy(&transmit.body), "DM message out");
            match http.post(&transmit) {
                Ok(reply) if reply.status == 200 => {
                    tracing::trace!(body = %String::from_utf8_lossy(&reply.body), "DM message in");
                    session.handle_bytes(
                        &reply.body,
                        reply.content_type.as_deref(),
                        reply.hmac.as_deref(),
                        &mut self.tree,
                        Instant::now(),
                    );
                    self.persist_account(&auth, &previous);
                }
                Ok(reply) => {
                    tracing::warn!(
                        status = reply.status,
                        url = %transmit.target_uri,
                        body = %String::from_utf8_lossy(&reply.body),
                        "the DM server answered with an HTTP error"
                    );
                    session.transport_failed(format!("HTTP {}", reply.status));
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "the DM server cannot be reached");
                    session.transport_failed(crate::error_chain(&e));
                }
            }
        }
        let mut delivered = 0;
        while let Some(event) = session.poll_event() {
            match event {
                ClientEvent::AlertStatus { alert, status } => {
                    if let Some(entry) = in_session
                        .iter_mut()
                        .find(|(_, g, done)| !*done && *g == alert)
                    {
                        entry.2 = true;
                        if status.is_success() {
                            delivered += 1;
                            if let Err(e) = self.store.alert_delivered(entry.0.id) {
                                tracing::error!(error = %e, "cannot forget a delivered alert");
                            }
                        } else {
                            tracing::warn!(%status, alert_type = %alert.alert_type, "the server refused an alert; kept");
                            let next = unix_now() + self.retry_delay(entry.0.attempts);
                            let _ = self.store.alert_failed(entry.0.id, next);
                        }
                    }
                }
                ClientEvent::Authenticated => tracing::debug!("authenticated by the server"),
                ClientEvent::Ended { .. } => {}
            }
        }
        let mut undelivered = 0;
        for (record, _, done) in &in_session {
            if !done {
                undelivered += 1;
                let next = unix_now() + self.retry_delay(record.attempts);
                let _ = self.store.alert_failed(record.id, next);
            }
        }
        self.persist_account(&auth, &previous);
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = None;

        SessionReport {
            reason: session.end_reason().cloned(),
            delivered,
            undelivered,
        }
    }

    /// Stores the nonces of the session and what the server changed in DMAcc.
    ///
    /// Called after every message from the server, before the answer goes out: the nonce the
    /// device issues to the server travels in that answer, and the server's new nonce for us
    /// arrived in the message. Stored before the answer is sent, a crash can never leave both
    /// sides' nonces stale (which would make each side refuse the other's challenge).
    fn persist_account(&mut self, auth: &DmAuth, previous: &Mutex<Vec<Vec<u8>>>) {
        let before = &self.account();
        let (client_nonce, server_nonce) = {
            let peer = auth.lock();
            (
                peer.nonce_for_sending().to_vec(),
                peer.nonce_for_verifying().to_vec(),
            )
        };
        let mut account = super::tree::account_from_tree(&self.tree, before);
        account.client_nonce = client_nonce.clone();
        account.server_nonce = server_nonce.clone();
        account.previous_server_nonces = previous.lock().unwrap_or_else(|p| p.into_inner()).clone();
        set_account_nonce(
            &mut self.tree,
            &account.server_id,
            AuthLevel::Client,
            &client_nonce,
        );
        set_account_nonce(
            &mut self.tree,
            &account.server_id,
            AuthLevel::Server,
            &server_nonce,
        );
        if &account != before {
            if let Err(e) = self.store.save_account(&account) {
                tracing::error!(error = %e, "cannot store the DM account");
            }
            *self.account.lock().unwrap_or_else(|p| p.into_inner()) = account;
        }
    }
}
