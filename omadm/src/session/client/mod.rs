//! The device side of a DM session (sans-IO): package 1 (session alert, DevInfo, Generic
//! Alerts), then for each server package the statuses and results of its commands, until the
//! server sends a final message with nothing to answer.

mod commands;

use std::collections::VecDeque;
use std::time::Instant;

use super::auth::{AcceptAll, CredentialCheck, CredentialSource, NoCredentials, Verdict};
use super::exchange::{header_status, is_header_status, Exchange, Limits, OwnHeader};
use super::executor::{CommandExecutor, GroupKind};
use super::wire::{decode, transmit, Encoding, Transmit};
use super::{DevInfo, EndReason, GenericAlert, SessionError};
use crate::model::{Alert, AlertCode, Command, ProtoVersion, Status, SyncHdr, SyncMl};
use crate::status::StatusCode;

/// What the agent configures once for its DM account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub proto: ProtoVersion,
    /// Where package 1 goes (the server's address; later messages follow its RespURI).
    pub server_uri: String,
    /// The server's identity as the executor knows it (ACLs name it).
    pub server_id: String,
    /// `./DevInfo`, whose DevId is the `SyncHdr/Source` of every message.
    pub dev_info: DevInfo,
    pub encoding: Encoding,
    pub limits: Limits,
}

/// Who opened the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Initiation {
    /// The device (Alert 1201), with a session ID of its choosing.
    Client { session_id: String },
    /// The server, by a Pkg#0 notification carrying the session ID (Alert 1200).
    Server { session_id: String },
}

impl Initiation {
    /// The session a Pkg#0 notification asks for: its 16-bit session ID, written in hexadecimal
    /// as DM Notification 1.2 prescribes for `SyncHdr/SessionID`.
    pub fn from_notification(notification: &crate::notification::Notification) -> Self {
        Self::Server {
            session_id: format!("{:X}", notification.session_id),
        }
    }
}

/// What the client session reports to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The server accepted our credentials.
    Authenticated,
    /// The server answered a Generic Alert (2xx: delivered).
    AlertStatus {
        alert: GenericAlert,
        status: StatusCode,
    },
    /// The session is over; `undelivered` are the Generic Alerts to queue for the next one.
    Ended {
        reason: EndReason,
        undelivered: Vec<GenericAlert>,
    },
}

/// What a command we sent was.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    SessionAlert,
    DevInfo,
    GenericAlert(usize),
    Results,
    NoEndOfData,
    Abort,
}

/// A client DM session.
pub struct ClientSession {
    config: ClientConfig,
    exchange: Exchange<Sent>,
    credentials: Box<dyn CredentialSource>,
    verifier: Box<dyn CredentialCheck>,
    /// Where our next message goes (the server's RespURI once it gave one).
    target_uri: String,
    /// We are authenticated by the server (no more Cred in our headers).
    authenticated: bool,
    /// The server is authenticated by us.
    server_authenticated: bool,
    alerts: Vec<(GenericAlert, bool)>,
    events: VecDeque<ClientEvent>,
    ended_reported: bool,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("session_id", &self.exchange.session_id)
            .field("msg_id", &self.exchange.own_msg_id)
            .field("ended", &self.exchange.ended)
            .finish_non_exhaustive()
    }
}

impl ClientSession {
    /// A session about to send package 1, carrying the Generic Alerts `alerts`.
    pub fn new(
        config: ClientConfig,
        initiation: Initiation,
        alerts: Vec<GenericAlert>,
        now: Instant,
    ) -> Self {
        let (session_id, code) = match initiation {
            Initiation::Client { session_id } => (session_id, AlertCode::CLIENT_INITIATED_MGMT),
            Initiation::Server { session_id } => (session_id, AlertCode::SERVER_INITIATED_MGMT),
        };
        let mut exchange = Exchange::new(session_id, config.encoding, config.limits, now);
        exchange
            .outbox
            .push_command(Command::Alert(Alert::new(0, code)), Sent::SessionAlert);
        exchange.outbox.push_command(
            Command::Replace(config.dev_info.to_replace()),
            Sent::DevInfo,
        );
        exchange.reply_due = true;
        let mut session = Self {
            target_uri: config.server_uri.clone(),
            config,
            exchange,
            credentials: Box::new(NoCredentials),
            verifier: Box::new(AcceptAll),
            authenticated: false,
            server_authenticated: false,
            alerts: Vec::new(),
            events: VecDeque::new(),
            ended_reported: false,
        };
        for alert in alerts {
            session.queue_generic_alert(alert);
        }
        session
    }

    /// Sets the credentials we present to the server.
    pub fn with_credentials(mut self, credentials: Box<dyn CredentialSource>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Sets how we check the server's credentials (default: not required).
    pub fn with_server_verifier(mut self, verifier: Box<dyn CredentialCheck>) -> Self {
        self.verifier = verifier;
        self
    }

    /// Queues a Generic Alert; it goes out with our next message.
    pub fn queue_generic_alert(&mut self, alert: GenericAlert) {
        let index = self.alerts.len();
        self.exchange
            .outbox
            .push_command(Command::Alert(alert.to_alert()), Sent::GenericAlert(index));
        self.alerts.push((alert, false));
    }

    pub fn session_id(&self) -> &str {
        &self.exchange.session_id
    }

    /// Where the next message goes (the server URI, or its RespURI).
    pub fn target_uri(&self) -> &str {
        &self.target_uri
    }

    pub fn encoding(&self) -> Encoding {
        self.config.encoding
    }

    /// Whether the session is over.
    pub fn is_ended(&self) -> bool {
        self.exchange.ended.is_some()
    }

    /// Why the session ended.
    pub fn end_reason(&self) -> Option<&EndReason> {
        self.exchange.ended.as_ref()
    }

    /// Whether a message is due from us (then [`Self::poll_message`] returns it).
    pub fn wants_to_send(&self) -> bool {
        self.exchange.ended.is_none() && self.exchange.reply_due
    }

    /// Our next message, if one is due.
    pub fn poll_message(&mut self, now: Instant) -> Option<SyncMl> {
        if !self.wants_to_send() {
            return None;
        }
        self.exchange.last_activity = now;
        let mut hdr = SyncHdr::new(
            self.config.proto,
            self.exchange.session_id.clone(),
            0,
            self.target_uri.clone(),
            self.config.dev_info.dev_id.clone(),
        );
        if !self.authenticated {
            hdr.cred = self.credentials.credentials();
            if hdr.cred.is_some() {
                hdr.source.loc_name = self.credentials.loc_name();
            }
        }
        let msg = self.exchange.build(hdr);
        self.report_end();
        Some(msg)
    }

    /// Our next message, encoded, with where it goes.
    pub fn poll_transmit(&mut self, now: Instant) -> Result<Option<Transmit>, SessionError> {
        let Some(msg) = self.poll_message(now) else {
            return Ok(None);
        };
        let target_uri = msg.hdr.target.loc_uri.clone();
        transmit(
            &msg,
            target_uri,
            self.config.encoding,
            self.credentials.as_mut(),
        )
        .map(Some)
    }

    /// Handles the bytes of the server's reply: `content_type` is its HTTP `Content-Type`
    /// (`None`: take the session's encoding) and `hmac` its `x-syncml-hmac` header. Bytes that
    /// are not a message of our encoding are answered with the status the decoder gives, and end
    /// the session.
    pub fn handle_bytes(
        &mut self,
        body: &[u8],
        content_type: Option<&str>,
        hmac: Option<&str>,
        executor: &mut dyn CommandExecutor,
        now: Instant,
    ) {
        match decode(body, content_type, self.config.encoding) {
            Ok(msg) => self.handle_presented(msg, Some((body, hmac)), executor, now),
            Err(code) => self.handle_undecodable(code, now),
        }
    }

    /// The next event for the agent.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] must be called, unless the session is over.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.exchange.timeout()
    }

    /// Ends the session if it has been idle too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.exchange.check_timeout(now) {
            self.report_end();
        }
    }

    /// Aborts the session: the next message carries Alert 1223 only, then the session ends.
    pub fn abort(&mut self) {
        if self.is_ended() {
            return;
        }
        self.exchange.outbox.clear();
        self.exchange.queue_abort(Sent::Abort);
    }

    /// Ends the session because the transport failed (nothing more can be sent or received).
    pub fn transport_failed(&mut self, reason: impl Into<String>) {
        if !self.is_ended() {
            self.exchange.ended = Some(EndReason::Transport(reason.into()));
            self.report_end();
        }
    }

    /// A message from the server arrived that could not be decoded: we answer its header with
    /// `code` and the session ends.
    pub fn handle_undecodable(&mut self, code: StatusCode, now: Instant) {
        if self.is_ended() {
            return;
        }
        let own = self.config.dev_info.dev_id.clone();
        let target = self.target_uri.clone();
        self.exchange
            .refuse_received(None, (&own, &target), code, now);
    }

    /// Handles a message from the server, running its commands through `executor`.
    pub fn handle_message(
        &mut self,
        msg: SyncMl,
        executor: &mut dyn CommandExecutor,
        now: Instant,
    ) {
        self.handle_presented(msg, None, executor, now);
    }

    /// [`Self::handle_message`] with the received bytes (for HMAC and the size check).
    pub fn handle_presented(
        &mut self,
        msg: SyncMl,
        raw: Option<(&[u8], Option<&str>)>,
        executor: &mut dyn CommandExecutor,
        now: Instant,
    ) {
        if self.is_ended() {
            return;
        }
        if let Err(code) = self.exchange.check_received(&msg) {
            let own = self.config.dev_info.dev_id.clone();
            let target = self.target_uri.clone();
            self.exchange
                .refuse_received(Some(&msg.hdr), (&own, &target), code, now);
            return;
        }
        self.exchange.note_received(&msg.hdr, now);
        if let Some(resp_uri) = &msg.hdr.resp_uri {
            self.target_uri = resp_uri.clone();
        }
        let Some(verdict) = self.exchange.admit(
            &msg.hdr,
            raw,
            (&self.config.dev_info.dev_id, &self.target_uri),
            self.server_authenticated,
            self.verifier.as_mut(),
        ) else {
            return;
        };
        match verdict {
            Verdict::Missing { .. } | Verdict::Invalid { .. } => {
                self.server_credentials_refused(&msg.body.commands);
                return;
            }
            Verdict::Accepted { .. } => self.server_authenticated = true,
            Verdict::NotRequired => {}
        }
        let msg_id = msg.hdr.msg_id;
        let server_id = self.config.server_id.clone();
        let mut must_answer = false;
        let mut peer_wants_next = false;
        for command in msg.body.commands {
            match command {
                Command::Status(status) => self.handle_status(status),
                Command::Alert(alert) if alert.data == AlertCode::NEXT_MESSAGE => {
                    peer_wants_next = true;
                    self.exchange
                        .answer(msg_id, &Command::Alert(alert), StatusCode::OK);
                }
                Command::Alert(alert) if alert.data == AlertCode::SESSION_ABORT => {
                    self.exchange.outbox.clear();
                    self.exchange.ended = Some(EndReason::AbortedByPeer);
                    self.report_end();
                    return;
                }
                Command::Results(_) => {
                    must_answer = true;
                    self.exchange.answer(
                        msg_id,
                        &command,
                        StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED,
                    );
                }
                Command::Atomic(group) => {
                    must_answer = true;
                    self.run_group(msg_id, GroupKind::Atomic, group, &server_id, executor);
                }
                Command::Sequence(group) => {
                    must_answer = true;
                    self.run_group(msg_id, GroupKind::Sequence, group, &server_id, executor);
                }
                command => {
                    must_answer = true;
                    self.run_command(msg_id, command, &server_id, executor);
                }
            }
            if self.is_ended() {
                self.report_end();
                return;
            }
        }
        if msg.body.final_ && self.exchange.assembly.abandon() {
            self.exchange.outbox.push_command(
                Command::Alert(Alert::new(0, AlertCode::NO_END_OF_DATA)),
                Sent::NoEndOfData,
            );
        }
        if !msg.body.final_ {
            self.exchange.ask_next = true;
            self.exchange.reply_due = true;
        } else if must_answer || peer_wants_next || self.exchange.outbox.has_commands() {
            self.exchange.reply_due = true;
        } else {
            self.exchange.outbox.clear();
            self.exchange.ended = Some(EndReason::Completed);
            self.report_end();
        }
    }

    /// The server's credentials failed: none of its commands runs and nothing of ours goes to
    /// it, except that reading the Status of our own header executes nothing, so we take its
    /// Chal (the nonce for our next credentials) or its 212 even from this message. When it
    /// refused our credentials while we never authenticated the server (package 1, DM Protocol
    /// "Authentication": the client reverts to package 1 and resends its Alert and DevInfo with
    /// the credentials asked for), the package goes again with our challenge; it was sent to
    /// this server once already, so resending it discloses nothing new.
    fn server_credentials_refused(&mut self, commands: &[Command]) {
        self.exchange.peer_credentials_refused();
        let Some(status) = header_status(commands) else {
            return;
        };
        if self.handle_header_status(status) == OwnHeader::Resend && !self.server_authenticated {
            self.exchange.hold_commands = false;
        }
        self.report_end();
    }

    fn handle_status(&mut self, status: Status) {
        if is_header_status(&status) {
            self.handle_header_status(&status);
            return;
        }
        let Some(sent) = self.exchange.take_awaiting(&status) else {
            return;
        };
        if let Sent::GenericAlert(index) = sent.tag {
            if let Some((alert, delivered)) = self.alerts.get_mut(index) {
                *delivered = status.data.is_success();
                self.events.push_back(ClientEvent::AlertStatus {
                    alert: alert.clone(),
                    status: status.data,
                });
            }
        }
    }

    fn handle_header_status(&mut self, status: &Status) -> OwnHeader {
        let was_authenticated = self.authenticated;
        let outcome = self.exchange.read_header_status(
            status,
            self.credentials.as_mut(),
            &mut self.authenticated,
        );
        if self.authenticated && !was_authenticated {
            self.events.push_back(ClientEvent::Authenticated);
        }
        if let OwnHeader::End(reason) = &outcome {
            self.exchange.outbox.clear();
            self.exchange.ended = Some(reason.clone());
        }
        outcome
    }

    fn report_end(&mut self) {
        if self.ended_reported {
            return;
        }
        if let Some(reason) = self.exchange.ended.clone() {
            self.ended_reported = true;
            let undelivered = self
                .alerts
                .iter()
                .filter(|(_, delivered)| !delivered)
                .map(|(alert, _)| alert.clone())
                .collect();
            self.events.push_back(ClientEvent::Ended {
                reason,
                undelivered,
            });
        }
    }
}
