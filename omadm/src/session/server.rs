//! The DM server side of a session (sans-IO): answers package 1, sends the commands the server
//! application queued for the device, reports their Status and Results, and ends the session with
//! a final message holding statuses only once nothing is left to send.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::assembly::Received;
use super::auth::{AcceptAll, CredentialCheck, CredentialSource, NoCredentials, Verdict};
use super::exchange::{header_status, is_header_status, Exchange, Limits, OwnHeader};
use super::refusal::Refusal;
use super::wire::{decode, transmit, Encoding, Transmit};
use super::{DevInfo, EndReason, GenericAlert, SessionError};
use crate::model::{
    AlertCode, Command, CommandKind, ProtoVersion, Results, Status, SyncHdr, SyncMl,
};
use crate::status::StatusCode;

/// The DM server's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Our identity: the `SyncHdr/Source` of our messages.
    pub server_id: String,
    pub encoding: Encoding,
    pub limits: Limits,
}

/// Names a command the server application queued, in the events that answer it.
pub type RequestId = u64;

/// What the server session reports to the server application.
#[expect(
    clippy::large_enum_variant,
    reason = "a handful of events per message, drained at once; boxing would only make matching clumsier"
)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// Package 1 arrived: the device and how the session was opened (Alert 1200 or 1201).
    SessionStarted {
        device_id: String,
        initiation: AlertCode,
    },
    /// The device's credentials were accepted.
    Authenticated,
    /// The device's credentials were missing or wrong (we answered with this status).
    AuthenticationFailed(StatusCode),
    /// `./DevInfo` from package 1.
    DeviceInfo(DevInfo),
    /// A Generic Alert (1226) from the device.
    GenericAlert(GenericAlert),
    /// The status of a queued command (`member`: the i-th command of a queued Atomic/Sequence).
    Status {
        request: RequestId,
        member: Option<usize>,
        status: Status,
    },
    /// A queued command was not sent: its value is above the device's MaxObjSize (413).
    NotSent {
        request: RequestId,
        status: StatusCode,
    },
    /// The results of a queued Get (large objects arrive whole).
    Results {
        request: RequestId,
        member: Option<usize>,
        results: Results,
    },
    /// The session is over; `unanswered` are the queued commands without a final status.
    Ended {
        reason: EndReason,
        unanswered: Vec<RequestId>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Request(RequestId),
    Other,
}

/// A server DM session with one device.
pub struct ServerSession {
    config: ServerConfig,
    proto: ProtoVersion,
    device_id: String,
    exchange: Exchange<Sent>,
    credentials: Box<dyn CredentialSource>,
    verifier: Box<dyn CredentialCheck>,
    resp_uri: Option<String>,
    client_authenticated: bool,
    /// We are authenticated by the client (no more Cred in our headers).
    authenticated: bool,
    started: bool,
    next_request: RequestId,
    /// Requests sent, by (MsgID, CmdID), to match Results to their Get.
    sent_requests: HashMap<(u32, u32), (RequestId, Option<usize>)>,
    /// Requests without a final status yet.
    open_requests: Vec<RequestId>,
    events: VecDeque<ServerEvent>,
    ended_reported: bool,
}

impl std::fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSession")
            .field("device_id", &self.device_id)
            .field("session_id", &self.exchange.session_id)
            .field("msg_id", &self.exchange.own_msg_id)
            .field("ended", &self.exchange.ended)
            .finish_non_exhaustive()
    }
}

impl ServerSession {
    /// A session for the device and session ID in `first` (the header of package 1, which is
    /// then given to [`Self::handle_message`]).
    pub fn new(config: ServerConfig, first: &SyncHdr, now: Instant) -> Self {
        let exchange = Exchange::new(
            first.session_id.clone(),
            config.encoding,
            config.limits,
            now,
        );
        Self {
            proto: first.ver_proto,
            device_id: first.source.loc_uri.clone(),
            config,
            exchange,
            credentials: Box::new(NoCredentials),
            verifier: Box::new(AcceptAll),
            resp_uri: None,
            client_authenticated: false,
            authenticated: false,
            started: false,
            next_request: 1,
            sent_requests: HashMap::new(),
            open_requests: Vec::new(),
            events: VecDeque::new(),
            ended_reported: false,
        }
    }

    /// Sets how the device's credentials are checked (default: not required).
    pub fn with_verifier(mut self, verifier: Box<dyn CredentialCheck>) -> Self {
        self.verifier = verifier;
        self
    }

    /// Sets the credentials we present to the device.
    pub fn with_credentials(mut self, credentials: Box<dyn CredentialSource>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Sets the RespURI of our messages (where the device sends its next one).
    pub fn with_resp_uri(mut self, resp_uri: impl Into<String>) -> Self {
        self.resp_uri = Some(resp_uri.into());
        self
    }

    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    pub fn session_id(&self) -> &str {
        &self.exchange.session_id
    }

    pub fn encoding(&self) -> Encoding {
        self.config.encoding
    }

    pub fn is_ended(&self) -> bool {
        self.exchange.ended.is_some()
    }

    pub fn end_reason(&self) -> Option<&EndReason> {
        self.exchange.ended.as_ref()
    }

    /// Queues `command` (its CmdIDs are assigned when sent) for the device; it goes out in our
    /// next package.
    pub fn enqueue(&mut self, command: Command) -> RequestId {
        let request = self.next_request;
        self.next_request += 1;
        self.exchange
            .outbox
            .push_command(command, Sent::Request(request));
        self.open_requests.push(request);
        request
    }

    /// Whether a message is due from us.
    pub fn wants_to_send(&self) -> bool {
        self.exchange.ended.is_none() && self.exchange.reply_due
    }

    /// Our next message, if one is due. A message that holds statuses only and is final ends
    /// the session.
    pub fn poll_message(&mut self, now: Instant) -> Option<SyncMl> {
        if !self.wants_to_send() {
            return None;
        }
        self.exchange.last_activity = now;
        let mut hdr = SyncHdr::new(
            self.proto,
            self.exchange.session_id.clone(),
            0,
            self.device_id.clone(),
            self.config.server_id.clone(),
        );
        hdr.resp_uri = self.resp_uri.clone();
        if !self.authenticated {
            hdr.cred = self.credentials.credentials();
            if hdr.cred.is_some() {
                hdr.source.loc_name = self.credentials.loc_name();
            }
        }
        if let Some(max) = self.exchange.peer_max_obj_size {
            for tag in self.exchange.outbox.take_oversized(max) {
                if let Sent::Request(request) = tag {
                    self.open_requests.retain(|open| *open != request);
                    self.events.push_back(ServerEvent::NotSent {
                        request,
                        status: StatusCode::REQUEST_ENTITY_TOO_LARGE,
                    });
                }
            }
        }
        let holding = self.exchange.hold_commands || self.exchange.ask_next;
        let msg = self.exchange.build(hdr);
        let msg_id = self.exchange.own_msg_id;
        for (&(sent_msg, cmd_id), sent) in &self.exchange.awaiting {
            if let (true, Sent::Request(request)) = (sent_msg == msg_id, sent.tag) {
                self.sent_requests
                    .insert((sent_msg, cmd_id), (request, sent.member));
            }
        }
        let only_statuses = msg
            .body
            .commands
            .iter()
            .all(|command| command.kind() == CommandKind::Status);
        if only_statuses && msg.body.final_ && !holding && self.exchange.ended.is_none() {
            self.exchange.ended = Some(EndReason::Completed);
        }
        self.report_end();
        Some(msg)
    }

    /// Our next message, encoded (the body of the HTTP response).
    pub fn poll_transmit(&mut self, now: Instant) -> Result<Option<Transmit>, SessionError> {
        let Some(msg) = self.poll_message(now) else {
            return Ok(None);
        };
        transmit(
            &msg,
            String::new(),
            self.config.encoding,
            self.credentials.as_mut(),
        )
        .map(Some)
    }

    /// Handles the bytes of a device's message (see [`ClientSession::handle_bytes`]).
    ///
    /// [`ClientSession::handle_bytes`]: super::ClientSession::handle_bytes
    pub fn handle_bytes(
        &mut self,
        body: &[u8],
        content_type: Option<&str>,
        hmac: Option<&str>,
        now: Instant,
    ) {
        match decode(body, content_type, self.config.encoding) {
            Ok(msg) => self.handle_presented(msg, Some((body, hmac)), now),
            Err(code) => self.handle_undecodable(code, now),
        }
    }

    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.exchange.timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.exchange.check_timeout(now) {
            self.report_end();
        }
    }

    /// Aborts the session: the next message carries Alert 1223 (after the statuses due), then
    /// the session ends.
    pub fn abort(&mut self) {
        if self.is_ended() {
            return;
        }
        self.exchange.outbox.clear_commands();
        self.exchange.queue_abort(Sent::Other);
    }

    /// A message for this session could not be decoded: we answer its header with `code` and
    /// the session ends.
    pub fn handle_undecodable(&mut self, code: StatusCode, now: Instant) {
        if self.is_ended() {
            return;
        }
        let own = self.config.server_id.clone();
        let device = self.device_id.clone();
        self.exchange
            .refuse_received(None, (&own, &device), code, now);
    }

    /// Handles a message from the device.
    pub fn handle_message(&mut self, msg: SyncMl, now: Instant) {
        self.handle_presented(msg, None, now);
    }

    /// [`Self::handle_message`] with the received bytes (for HMAC and the size check).
    pub fn handle_presented(
        &mut self,
        msg: SyncMl,
        raw: Option<(&[u8], Option<&str>)>,
        now: Instant,
    ) {
        if self.is_ended() {
            return;
        }
        let own = self.config.server_id.clone();
        let device = self.device_id.clone();
        let checked = self.exchange.check_received(&msg).and_then(|()| {
            if msg.hdr.source.loc_uri == device {
                Ok(())
            } else {
                Err(StatusCode::BAD_REQUEST)
            }
        });
        if let Err(code) = checked {
            self.exchange
                .refuse_received(Some(&msg.hdr), (&own, &device), code, now);
            return;
        }
        self.exchange.note_received(&msg.hdr, now);
        self.exchange.reply_due = true;
        let Some(verdict) = self.exchange.admit(
            &msg.hdr,
            raw,
            (&own, &device),
            self.client_authenticated,
            self.verifier.as_mut(),
        ) else {
            return;
        };
        match verdict {
            Verdict::Missing { .. } | Verdict::Invalid { .. } => {
                self.events
                    .push_back(ServerEvent::AuthenticationFailed(verdict.status()));
                self.exchange.peer_credentials_refused();
                // Reading the Status of our own header executes nothing: take its Chal (the
                // nonce for our next credentials) or its 212 even from this message. Our
                // commands, resent or not, wait until the device is authenticated (the reply
                // to a failed authentication carries statuses only).
                if let Some(status) = header_status(&msg.body.commands) {
                    self.handle_header_status(status);
                }
                return;
            }
            Verdict::Accepted { .. } => {
                if !self.client_authenticated {
                    self.client_authenticated = true;
                    self.events.push_back(ServerEvent::Authenticated);
                }
            }
            Verdict::NotRequired => {}
        }
        let msg_id = msg.hdr.msg_id;
        for command in msg.body.commands {
            if !matches!(command, Command::Status(_)) {
                if let Some(refusal) = Refusal::of(&command, &self.config.limits.uri) {
                    refusal.answer(&mut self.exchange, msg_id, &command, false);
                    continue;
                }
            }
            match command {
                Command::Status(status) => self.handle_status(status),
                Command::Alert(ref alert) => {
                    let code = self.handle_alert(alert);
                    self.exchange.answer(msg_id, &command, code);
                }
                Command::Results(results) => self.handle_results(msg_id, results),
                Command::Replace(ref replace) => {
                    let code = match DevInfo::from_items(&replace.items) {
                        Some(info) => {
                            self.events.push_back(ServerEvent::DeviceInfo(info));
                            StatusCode::OK
                        }
                        None => StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED,
                    };
                    self.exchange.answer(msg_id, &command, code);
                }
                command => self.exchange.answer(
                    msg_id,
                    &command,
                    StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED,
                ),
            }
        }
        if self.exchange.end_after_send.is_some() {
            self.exchange.outbox.clear_commands();
        } else if !msg.body.final_ {
            self.exchange.ask_next = true;
        }
    }

    fn handle_alert(&mut self, alert: &crate::model::Alert) -> StatusCode {
        match alert.data {
            AlertCode::CLIENT_INITIATED_MGMT | AlertCode::SERVER_INITIATED_MGMT => {
                if !self.started {
                    self.started = true;
                    self.events.push_back(ServerEvent::SessionStarted {
                        device_id: self.device_id.clone(),
                        initiation: alert.data,
                    });
                }
                StatusCode::OK
            }
            AlertCode::NEXT_MESSAGE | AlertCode::NO_END_OF_DATA => StatusCode::OK,
            AlertCode::SESSION_ABORT => {
                self.exchange.end_after_send = Some(EndReason::AbortedByPeer);
                StatusCode::OK
            }
            AlertCode::GENERIC_ALERT => match GenericAlert::from_alert(alert) {
                Some(generic) => {
                    self.events.push_back(ServerEvent::GenericAlert(generic));
                    StatusCode::OK
                }
                None => StatusCode::INCOMPLETE_COMMAND,
            },
            _ => StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED,
        }
    }

    fn handle_results(&mut self, msg_id: u32, results: Results) {
        let command = Command::Results(results);
        let results = match self
            .exchange
            .assembly
            .receive(command.clone(), self.exchange.limits.max_obj_size)
        {
            Received::Whole(Command::Results(results)) => results,
            Received::Whole(_) => return,
            Received::Chunk(code) => {
                self.exchange.answer(msg_id, &command, code);
                return;
            }
        };
        let msg_ref = results.msg_ref.unwrap_or(self.exchange.own_msg_id);
        let code = match self.sent_requests.get(&(msg_ref, results.cmd_ref)) {
            Some(&(request, member)) => {
                self.events.push_back(ServerEvent::Results {
                    request,
                    member,
                    results,
                });
                StatusCode::OK
            }
            None => StatusCode::BAD_REQUEST,
        };
        self.exchange.answer(msg_id, &command, code);
    }

    fn handle_status(&mut self, status: Status) {
        if is_header_status(&status) {
            self.handle_header_status(&status);
            return;
        }
        let Some(sent) = self.exchange.take_awaiting(&status) else {
            return;
        };
        let Sent::Request(request) = sent.tag else {
            return;
        };
        if sent.chunk {
            if status.data == StatusCode::CHUNKED_ITEM_ACCEPTED {
                return;
            }
            self.exchange.outbox.drop_continuations(&sent.tag);
        }
        if sent.member.is_none() {
            self.open_requests.retain(|open| *open != request);
        }
        self.events.push_back(ServerEvent::Status {
            request,
            member: sent.member,
            status,
        });
    }

    /// The device's status for our `SyncHdr`: its challenge, its 212, or the end.
    fn handle_header_status(&mut self, status: &Status) {
        let outcome = self.exchange.read_header_status(
            status,
            self.credentials.as_mut(),
            &mut self.authenticated,
        );
        if let OwnHeader::End(reason) = outcome {
            self.exchange.outbox.clear_commands();
            self.exchange.end_after_send = Some(reason);
        }
    }

    fn report_end(&mut self) {
        if self.ended_reported {
            return;
        }
        if let Some(reason) = self.exchange.ended.clone() {
            self.ended_reported = true;
            self.events.push_back(ServerEvent::Ended {
                reason,
                unanswered: self.open_requests.clone(),
            });
        }
    }
}
