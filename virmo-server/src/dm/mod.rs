//! The DM endpoint: serves the devices' DM sessions over HTTP (axum on tokio, an omadm
//! [`ServerSession`] inside each), authenticates each device with its own credentials and
//! nonces, sends its queued jobs, records every Status, Results and Generic Alert, and moves
//! the jobs through their states.
//!
//! Nothing a device sends is acknowledged before it is stored: alerts, statuses and the nonce
//! the reply announces are written before the reply goes out. When the store fails, the device
//! gets HTTP 503 and keeps its alerts for its next session; the jobs the dropped session carried
//! go back to the queue when their lease runs out.

mod http;
mod live;
pub mod notify;
mod registry;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use omadm::auth::{Credentials, PeerAuth};
use omadm::model::SyncMl;
use omadm::session::auth::DmAuth;
use omadm::session::{
    Encoding, EndReason, GenericAlert, Limits, RequestId, ServerConfig, ServerEvent, ServerSession,
};
use omadm::status::StatusCode;
use tracing::Instrument as _;

pub use http::router;
use live::{Live, Progress, Request};
pub use registry::Registry;

use crate::clock::Clock;
use crate::jobs;
use crate::model::{Device, DmCommand, JobState, JobTransition, NewAlert, TreeNode};
use crate::store::{DeviceContact, NewResponse, Store, StoreError};

/// The DM endpoint's settings.
#[derive(Debug, Clone)]
pub struct DmConfig {
    /// Our ServerID (the devices' ACLs name it).
    pub server_id: String,
    /// The URL devices post to (RespURIs are `<base_url>/s/<token>`).
    pub base_url: String,
    pub limits: Limits,
    /// This process's name in the session tags the store keeps.
    pub instance: String,
    /// Read `./VirMO` back in the session that brought a change (an alert, a finished job).
    pub refresh_after_change: bool,
}

/// What the HTTP layer answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmReply {
    /// HTTP 200 with the session's next message.
    Message {
        body: Vec<u8>,
        content_type: &'static str,
        hmac: Option<String>,
    },
    /// Another HTTP status with a plain-text reason.
    Refused { status: u16, reason: String },
}

impl DmReply {
    fn refused(status: u16, reason: impl Into<String>) -> Self {
        Self::Refused {
            status,
            reason: reason.into(),
        }
    }
}

/// Why a session's message could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum DmError {
    #[error("storage failed")]
    Store(#[from] StoreError),
    #[error("cannot encode the reply")]
    Encode(#[source] omadm::session::SessionError),
}

/// The DM endpoint's state.
pub struct DmService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: DmConfig,
    registry: Registry,
    changes: tokio::sync::watch::Sender<u64>,
    sessions: AtomicU64,
}

impl std::fmt::Debug for DmService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmService")
            .field("config", &self.config)
            .field("live_sessions", &self.registry.len())
            .finish_non_exhaustive()
    }
}

fn status_ok(code: i64) -> bool {
    (200..300).contains(&code)
}

impl DmService {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: DmConfig,
        changes: tokio::sync::watch::Sender<u64>,
    ) -> Self {
        Self {
            store,
            clock,
            config,
            registry: Registry::default(),
            changes,
            sessions: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &DmConfig {
        &self.config
    }

    /// Sessions running now.
    pub fn live_sessions(&self) -> usize {
        self.registry.len()
    }

    /// Wakes those waiting for a job to change (`virmoctl … --watch`).
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    async fn event(&self, device: Option<&str>, job: Option<i64>, kind: &str, detail: &str) {
        tracing::info!(device, job, kind, detail, "event");
        if let Err(err) = self
            .store
            .record_event(device, job, kind, detail, self.clock.now())
            .await
        {
            tracing::error!(error = %err, kind, "cannot record an event");
        }
    }

    /// Handles one POSTed DM message (`token`: the RespURI's, if the device used one).
    pub async fn handle(
        &self,
        token: Option<&str>,
        content_type: Option<&str>,
        hmac: Option<&str>,
        body: &[u8],
    ) -> DmReply {
        let Some(encoding) = content_type.and_then(Encoding::from_media_type) else {
            return DmReply::refused(415, "expected application/vnd.syncml.dm+xml or +wbxml");
        };
        let msg = match encoding.decode(body) {
            Ok(msg) => msg,
            Err(err) => {
                let device = token
                    .and_then(|t| self.registry.take_by_token(t))
                    .map(|live| {
                        let id = live.device.id().to_owned();
                        // A session keeps going after a body that is not a DM message.
                        self.registry.put(live);
                        id
                    });
                let detail = format!("a body that is not a DM message: {err}");
                self.event(device.as_deref(), None, "malformed", &detail)
                    .await;
                return DmReply::refused(400, format!("not a DM message: {err}"));
            }
        };
        let span = tracing::info_span!(
            "dm_session",
            device = %msg.hdr.source.loc_uri,
            session = %msg.hdr.session_id,
            msg_id = msg.hdr.msg_id
        );
        self.handle_message(token, encoding, hmac, body, msg)
            .instrument(span)
            .await
    }

    async fn handle_message(
        &self,
        token: Option<&str>,
        encoding: Encoding,
        hmac: Option<&str>,
        body: &[u8],
        msg: SyncMl,
    ) -> DmReply {
        let device_id = msg.hdr.source.loc_uri.clone();
        let found = match token {
            Some(token) => self.registry.take_by_token(token),
            None => self.registry.take_by_key(&device_id, &msg.hdr.session_id),
        };
        let found = match found {
            // Package 1 again under the SessionID of a running session: the device started
            // over (it restarted, or lost our replies). The old session ends as if timed out.
            Some(mut old) if token.is_none() && msg.hdr.msg_id == 1 => {
                let later = Instant::now() + self.config.limits.idle_timeout * 2;
                old.session.handle_timeout(later);
                if let Err(err) = self.drain(&mut old).await {
                    tracing::error!(error = %err, "cannot record the end of a replaced session");
                    return DmReply::refused(503, "the server cannot reach its storage");
                }
                let detail = format!("session {} replaced by a new package 1", old.tag);
                self.event(Some(&device_id), None, "session-restarted", &detail)
                    .await;
                None
            }
            found => found,
        };
        let mut live = match (found, token) {
            (Some(live), _) => live,
            (None, Some(_)) => {
                let detail = "a message on a RespURI of no running session";
                self.event(Some(&device_id), None, "no-session", detail)
                    .await;
                return DmReply::refused(400, "the message belongs to no session");
            }
            (None, None) => match self.open(&msg, encoding).await {
                Ok(Some(live)) => live,
                Ok(None) => {
                    let detail = format!("device `{device_id}` is not enrolled");
                    self.event(None, None, "unknown-device", &detail).await;
                    return DmReply::refused(403, "the device is not enrolled");
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot open a session");
                    return DmReply::refused(503, "the server cannot reach its storage");
                }
            },
        };
        let before = live.nonces();
        live.session
            .handle_presented(msg, Some((body, hmac)), Instant::now());
        if let Err(err) = self.after_message(&mut live, &before).await {
            tracing::error!(error = %err, "session dropped: its message could not be recorded");
            let detail = format!("session {} dropped: {err}", live.tag);
            self.event(Some(&device_id), None, "storage-error", &detail)
                .await;
            return DmReply::refused(503, "the server cannot record the message; try again");
        }
        let reply = live.session.poll_transmit(Instant::now());
        if let Err(err) = self.drain(&mut live).await {
            tracing::error!(error = %err, "cannot record the end of a session");
        }
        if live.session.is_ended() {
            tracing::debug!(reason = ?live.session.end_reason(), "DM session ended");
        } else {
            self.registry.put(live);
        }
        match reply {
            Ok(Some(transmit)) => DmReply::Message {
                body: transmit.body,
                content_type: transmit.content_type,
                hmac: transmit.hmac,
            },
            Ok(None) => DmReply::refused(500, "the session has nothing to answer"),
            Err(err) => DmReply::refused(500, format!("cannot encode the reply: {err}")),
        }
    }

    /// A session for package 1 of an enrolled device (`None`: not enrolled).
    async fn open(&self, msg: &SyncMl, encoding: Encoding) -> Result<Option<Live>, StoreError> {
        let Some(device) = self.store.device(&msg.hdr.source.loc_uri).await? else {
            return Ok(None);
        };
        let e = &device.enrollment;
        let auth = DmAuth::new(
            PeerAuth::new(
                e.auth.scheme(),
                Credentials::new(e.server_name.clone(), e.server_secret.clone()),
                Credentials::new(e.client_name.clone(), e.client_secret.clone()),
            )
            .with_nonces(device.nonce_server.clone(), device.nonce_client.clone()),
        );
        let token = crate::random_hex(12);
        let serial = self.sessions.fetch_add(1, Ordering::Relaxed);
        let config = ServerConfig {
            server_id: self.config.server_id.clone(),
            encoding,
            limits: self.config.limits,
        };
        let session = ServerSession::new(config, &msg.hdr, Instant::now())
            .with_verifier(Box::new(auth.clone()))
            .with_credentials(Box::new(auth.clone()))
            .with_resp_uri(format!("{}/s/{token}", self.config.base_url));
        let tag = format!("{}/{}/{}", self.config.instance, msg.hdr.session_id, serial);
        Ok(Some(Live {
            session,
            auth,
            device,
            token,
            tag,
            authenticated: false,
            dev_info: None,
            requests: Default::default(),
            in_flight: Default::default(),
            tree_dirty: false,
            refresh_sent: false,
            queue_empty: false,
            enqueued_any: false,
        }))
    }

    /// After a message: its events, the next job, and the device's nonces, all stored.
    async fn after_message(
        &self,
        live: &mut Live,
        nonces_before: &(Vec<u8>, Vec<u8>),
    ) -> Result<(), DmError> {
        let was_authenticated = live.authenticated;
        self.drain(live).await?;
        if live.authenticated && !live.session.is_ended() {
            self.feed(live).await?;
        }
        let nonces = live.nonces();
        let first_contact = live.authenticated && !was_authenticated;
        if nonces != *nonces_before || first_contact || live.dev_info.is_some() {
            let dev_info = live.dev_info.take();
            self.store
                .update_contact(
                    live.device.id(),
                    DeviceContact {
                        nonce_client: &nonces.0,
                        nonce_server: &nonces.1,
                        seen_at: first_contact.then(|| self.clock.now()),
                        dev_info: dev_info.as_ref(),
                    },
                )
                .await?;
        }
        Ok(())
    }

    /// Handles the session's pending events.
    async fn drain(&self, live: &mut Live) -> Result<(), DmError> {
        while let Some(event) = live.session.poll_event() {
            match event {
                ServerEvent::SessionStarted { initiation, .. } => {
                    tracing::debug!(initiation = initiation.0, "DM session started");
                }
                ServerEvent::Authenticated => live.authenticated = true,
                ServerEvent::AuthenticationFailed(code) => {
                    let detail = format!(
                        "credentials refused with {} in session {}",
                        code.0, live.tag
                    );
                    self.event(Some(live.device.id()), None, "auth-failed", &detail)
                        .await;
                }
                ServerEvent::DeviceInfo(info) => live.dev_info = Some((&info).into()),
                ServerEvent::GenericAlert(alert) => self.on_alert(live, alert).await?,
                ServerEvent::Status {
                    request, status, ..
                } => {
                    let uri = status.target_ref.first().cloned();
                    self.on_status(
                        live,
                        request,
                        i64::from(status.data.0),
                        uri,
                        status.cmd.as_str(),
                    )
                    .await?;
                }
                ServerEvent::NotSent { request, status } => {
                    self.on_status(live, request, i64::from(status.0), None, "not sent")
                        .await?;
                }
                ServerEvent::Results {
                    request, results, ..
                } => self.on_results(live, request, &results).await?,
                ServerEvent::Ended { reason, .. } => self.on_ended(live, &reason).await?,
            }
        }
        Ok(())
    }

    /// Queues the device's next job in the session (one job at a time), or the read-back of
    /// its tree after a change.
    async fn feed(&self, live: &mut Live) -> Result<(), DmError> {
        if !live.in_flight.is_empty() {
            return Ok(());
        }
        if !live.queue_empty {
            let now = self.clock.now();
            match self
                .store
                .claim_job(live.device.id(), &live.tag, now)
                .await?
            {
                Some(job) => {
                    tracing::info!(job = job.id, operation = %job.operation, attempt = job.attempts, "job sent");
                    for (index, command) in job.commands.iter().enumerate() {
                        let request = live.session.enqueue(jobs::to_dm(command, &job.correlator));
                        let list_root = match command {
                            DmCommand::Get { uri } => {
                                uri.split_once("?list=").map(|(root, _)| root.to_owned())
                            }
                            _ => None,
                        };
                        live.requests.insert(
                            request,
                            Request::Job {
                                job: job.id,
                                index,
                                list_root,
                            },
                        );
                    }
                    live.in_flight.insert(
                        job.id,
                        Progress {
                            commands: job.commands.len(),
                            ..Progress::default()
                        },
                    );
                    live.enqueued_any = true;
                    self.changed();
                    return Ok(());
                }
                None => live.queue_empty = true,
            }
        }
        if self.config.refresh_after_change && live.tree_dirty && !live.refresh_sent {
            live.refresh_sent = true;
            let get = DmCommand::Get {
                uri: format!("{}?list=StructData", jobs::VIRMO_ROOT),
            };
            let request = live.session.enqueue(jobs::to_dm(&get, ""));
            live.requests.insert(request, Request::Refresh);
            live.enqueued_any = true;
        }
        if !live.enqueued_any {
            // Keeps the session to the device's next message (see `Live::enqueued_any`).
            live.enqueued_any = true;
            let probe = DmCommand::Get {
                uri: "./DevInfo/DmV".to_owned(),
            };
            let request = live.session.enqueue(jobs::to_dm(&probe, ""));
            live.requests.insert(request, Request::Probe);
        }
        Ok(())
    }

    async fn on_status(
        &self,
        live: &mut Live,
        request: RequestId,
        code: i64,
        uri: Option<String>,
        cmd: &str,
    ) -> Result<(), DmError> {
        let Some(Request::Job { job, index, .. }) = live.requests.get(&request).cloned() else {
            if !status_ok(code) && live.requests.get(&request) == Some(&Request::Refresh) {
                let detail = format!("the read-back of the tree was answered {code}");
                self.event(Some(live.device.id()), None, "refresh-failed", &detail)
                    .await;
            }
            return Ok(());
        };
        self.store
            .record_response(
                &NewResponse {
                    device_id: live.device.id().to_owned(),
                    job_id: job,
                    command_index: index as i64,
                    kind: "Status",
                    uri: uri.clone(),
                    status: code,
                    items: Vec::new(),
                    session: live.tag.clone(),
                },
                self.clock.now(),
            )
            .await?;
        let Some(progress) = live.in_flight.get_mut(&job) else {
            return Ok(());
        };
        progress.answered += 1;
        if code == i64::from(StatusCode::ACCEPTED_FOR_PROCESSING.0) {
            progress.accepted = true;
        } else if !status_ok(code) && progress.failure.is_none() {
            let what = uri.unwrap_or_default();
            progress.failure = Some((code, format!("{cmd} {what} was answered {code}")));
        }
        if progress.answered >= progress.commands {
            let progress = live.in_flight.remove(&job).unwrap_or_default();
            let transition = match progress.failure {
                Some((code, error)) => JobTransition::Failed {
                    result_code: Some(code),
                    error,
                },
                None if progress.accepted => JobTransition::Accepted,
                None => JobTransition::Done { result_code: None },
            };
            let after = self
                .store
                .transition_job(job, Some(&live.tag), &transition, self.clock.now())
                .await?;
            if let Some(after) = after {
                tracing::info!(job, state = %after.state, "job answered");
                if after.state.is_terminal() {
                    live.tree_dirty = true;
                    live.queue_empty = false;
                }
                if after.state == JobState::Failed {
                    let detail = after.error.clone().unwrap_or_default();
                    self.event(Some(live.device.id()), Some(job), "job-failed", &detail)
                        .await;
                }
            }
            self.changed();
        }
        Ok(())
    }

    async fn on_results(
        &self,
        live: &mut Live,
        request: RequestId,
        results: &omadm::model::Results,
    ) -> Result<(), DmError> {
        let nodes: Vec<TreeNode> = results
            .items
            .iter()
            .filter_map(|item| {
                let uri = item.source_uri().or(item.target_uri())?;
                Some(TreeNode {
                    uri: uri.to_owned(),
                    format: item
                        .meta
                        .as_ref()
                        .and_then(|m| m.format.clone())
                        .or_else(|| results.meta.as_ref().and_then(|m| m.format.clone()))
                        .unwrap_or_else(|| "chr".to_owned()),
                    value: item.data.as_ref().map(|d| d.to_string_lossy().into_owned()),
                })
            })
            .collect();
        let device = live.device.id().to_owned();
        let root = match live.requests.get(&request) {
            Some(Request::Refresh) => Some(jobs::VIRMO_ROOT.to_owned()),
            Some(Request::Probe) => return Ok(()),
            Some(Request::Job {
                job,
                index,
                list_root,
            }) => {
                self.store
                    .record_response(
                        &NewResponse {
                            device_id: device.clone(),
                            job_id: *job,
                            command_index: *index as i64,
                            kind: "Results",
                            uri: results.source_ref.clone().or(results.target_ref.clone()),
                            status: 200,
                            items: nodes.clone(),
                            session: live.tag.clone(),
                        },
                        self.clock.now(),
                    )
                    .await?;
                list_root.clone()
            }
            None => return Ok(()),
        };
        let now = self.clock.now();
        match root {
            // A structure read replaces what was known under its root.
            Some(root) => {
                self.store
                    .replace_subtree(&device, &root, &nodes, now)
                    .await?
            }
            None => self.store.set_nodes(&device, &nodes, now).await?,
        }
        Ok(())
    }

    async fn on_alert(&self, live: &mut Live, alert: GenericAlert) -> Result<(), DmError> {
        let device = live.device.id().to_owned();
        let data = alert
            .data
            .as_ref()
            .map(|d| d.to_string_lossy().into_owned());
        let job = match &alert.correlator {
            Some(correlator) => self.store.job_by_correlator(&device, correlator).await?,
            None => None,
        };
        let record = NewAlert {
            device_id: device.clone(),
            session: live.tag.clone(),
            alert_type: alert.alert_type.clone(),
            source: alert.source.clone(),
            correlator: alert.correlator.clone(),
            format: alert.format.clone(),
            mark: alert.mark.clone(),
            data: data.clone(),
        };
        let now = self.clock.now();
        let id = self
            .store
            .record_alert(&record, job.as_ref().map(|j| j.id), now)
            .await?;
        tracing::info!(alert = id, alert_type = %alert.alert_type, correlator = ?alert.correlator, "alert recorded");
        live.tree_dirty = true;
        if alert.alert_type == jobs::STATE_CHANGED {
            if let (Some(source), Some(value)) = (&alert.source, &data) {
                let node = TreeNode {
                    uri: source.clone(),
                    format: alert.format.clone(),
                    value: Some(value.clone()),
                };
                self.store.set_nodes(&device, &[node], now).await?;
            }
        }
        let completes = alert.alert_type == jobs::OPERATION_COMPLETE
            || alert.alert_type.starts_with(jobs::FUMO_PREFIX);
        match job {
            Some(job) if completes => {
                let code = data.as_deref().and_then(|d| d.trim().parse::<i64>().ok());
                let transition = match code {
                    Some(code) if jobs::result_is_success(&alert.alert_type, code) => {
                        JobTransition::Done {
                            result_code: Some(code),
                        }
                    }
                    Some(code) => JobTransition::Failed {
                        result_code: Some(code),
                        error: format!("result {code}: {}", jobs::result_text(code)),
                    },
                    None => JobTransition::Failed {
                        result_code: None,
                        error: format!("an OperationComplete without a result code ({data:?})"),
                    },
                };
                match self
                    .store
                    .transition_job(job.id, None, &transition, now)
                    .await?
                {
                    Some(after) => {
                        tracing::info!(job = job.id, state = %after.state, "job completed");
                        live.in_flight.remove(&job.id);
                        live.queue_empty = false;
                        if after.state == JobState::Failed {
                            let detail = after.error.clone().unwrap_or_default();
                            self.event(Some(&device), Some(job.id), "job-failed", &detail)
                                .await;
                        }
                    }
                    None => {
                        let detail = format!(
                            "alert {id} for job {} which was already {}",
                            job.id, job.state
                        );
                        self.event(Some(&device), Some(job.id), "late-alert", &detail)
                            .await;
                    }
                }
                self.changed();
            }
            None if alert.correlator.is_some() && completes => {
                let detail = format!(
                    "alert {id} names correlator {:?}, which is no job of this device",
                    alert.correlator
                );
                self.event(Some(&device), None, "unmatched-alert", &detail)
                    .await;
            }
            _ => {}
        }
        Ok(())
    }

    async fn on_ended(&self, live: &mut Live, reason: &EndReason) -> Result<(), DmError> {
        let device = live.device.id().to_owned();
        let unanswered: Vec<i64> = live.in_flight.drain().map(|(job, _)| job).collect();
        for job in unanswered {
            let transition = JobTransition::Unanswered {
                reason: format!("the session ended ({reason:?}) before the device answered"),
            };
            let after = self
                .store
                .transition_job(job, Some(&live.tag), &transition, self.clock.now())
                .await?;
            if let Some(after) = after {
                let detail = format!(
                    "no answer in session {} ({reason:?}); the job is now {} after {} attempt(s)",
                    live.tag, after.state, after.attempts
                );
                self.event(Some(&device), Some(job), "job-unanswered", &detail)
                    .await;
            }
            self.changed();
        }
        if *reason != EndReason::Completed {
            let detail = format!("session {} ended: {reason:?}", live.tag);
            self.event(Some(&device), None, "session-ended", &detail)
                .await;
        }
        Ok(())
    }

    /// Ends the sessions idle past their deadline at `now` (their unanswered jobs are queued
    /// again or fail). Returns how many ended.
    pub async fn sweep_sessions(&self, now: Instant) -> usize {
        let expired = self.registry.take_expired(now);
        let count = expired.len();
        for mut live in expired {
            let span = tracing::info_span!(
                "dm_session",
                device = %live.device.id(),
                session = %live.session.session_id()
            );
            async {
                live.session.handle_timeout(now);
                if let Err(err) = self.drain(&mut live).await {
                    tracing::error!(error = %err, "cannot record a timed-out session");
                }
            }
            .instrument(span)
            .await;
        }
        count
    }

    /// Applies the jobs' timeouts (see [`Store::sweep`]).
    pub async fn sweep_jobs(&self) -> Result<crate::model::SweepReport, StoreError> {
        let report = self.store.sweep(self.clock.now()).await?;
        if report != crate::model::SweepReport::default() {
            tracing::info!(?report, "job timeouts applied");
            let detail = format!(
                "{} queued again, {} failed unanswered, {} timed out, {} expired, {} cancelled",
                report.requeued,
                report.failed_unanswered,
                report.timed_out,
                report.expired,
                report.cancelled
            );
            self.event(None, None, "sweep", &detail).await;
            self.changed();
        }
        Ok(report)
    }

    /// Sends a device the Pkg#0 that asks it to open a session now.
    pub async fn notify(&self, device: &Device) {
        if device.enrollment.notify_addr.is_none() {
            return;
        }
        match notify::notify(device, &self.config.server_id) {
            Ok(session) => tracing::debug!(device = device.id(), session, "Pkg#0 sent"),
            Err(err) => {
                let detail = format!("Pkg#0 not sent: {err}");
                self.event(Some(device.id()), None, "notify-failed", &detail)
                    .await;
            }
        }
    }
}
