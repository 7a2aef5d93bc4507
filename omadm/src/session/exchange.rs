//! The bookkeeping both sessions share: MsgIDs, the peer's limits, the outbox of the current
//! package, the commands awaiting a Status, large objects being received, idle time, the end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::assembly::Assembly;
use super::auth::{CredentialCheck, CredentialSource, Presented, Verdict};
use super::outbox::{Outbox, SentCommand};
use super::wire::Encoding;
use super::EndReason;
use crate::model::{Alert, AlertCode, Command, Meta, Status, SyncBody, SyncHdr, SyncMl};
use crate::status::StatusCode;
use crate::tree::UriLimits;

/// The limits and timing one side applies to itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Our MaxMsgSize: larger incoming messages are refused with 413.
    pub max_msg_size: u64,
    /// Our MaxObjSize: larger incoming objects are refused with 413.
    pub max_obj_size: Option<u64>,
    /// The session ends when no message arrives for this long.
    pub idle_timeout: Duration,
    /// Failed authentications before the session gives up, counted in each direction apart
    /// (the peer refusing ours, we refusing the peer's).
    pub max_auth_attempts: u32,
    /// The device's URI limits (`./DevDetail/URI`): a received command naming an item URI
    /// beyond them gets 414 and does not run.
    pub uri: UriLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_msg_size: 64 * 1024,
            max_obj_size: Some(4 << 20),
            idle_timeout: Duration::from_secs(60),
            max_auth_attempts: 3,
            uri: UriLimits::default(),
        }
    }
}

/// The status of `command` (from message `msg_ref`) with its item URIs as Target/SourceRef.
pub(crate) fn status_for(msg_ref: u32, command: &Command, code: StatusCode) -> Status {
    let mut status = Status::new(0, msg_ref, command.cmd_id(), command.kind(), code);
    for item in command.items() {
        if let Some(target) = item.target_uri() {
            status.target_ref.push(target.to_owned());
        }
        if let Some(source) = item.source_uri() {
            status.source_ref.push(source.to_owned());
        }
    }
    status
}

/// The Status of our `SyncHdr` among the peer's `commands`, if it sent one.
pub(crate) fn header_status(commands: &[Command]) -> Option<&Status> {
    commands.iter().find_map(|command| match command {
        Command::Status(status) if is_header_status(status) => Some(status),
        _ => None,
    })
}

/// Whether `status` answers a `SyncHdr` (CmdRef 0).
pub(crate) fn is_header_status(status: &Status) -> bool {
    status.cmd_ref == 0 && status.cmd == crate::model::CommandKind::SyncHdr
}

/// What the peer's status for our `SyncHdr` means for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnHeader {
    /// Nothing to do: our credentials were accepted, or none were needed.
    Fine,
    /// The peer refused our credentials: our last message's commands are queued again, to go
    /// with credentials over the nonce of its challenge.
    Resend,
    /// The session must end.
    End(EndReason),
}

/// One side of a session, minus what is specific to client or server.
#[derive(Debug)]
pub(crate) struct Exchange<T> {
    pub session_id: String,
    pub encoding: Encoding,
    pub limits: Limits,
    /// MsgID of our last message (0: none sent).
    pub own_msg_id: u32,
    /// MsgID of the peer's last message (0: none received).
    pub peer_msg_id: u32,
    /// The peer's MaxMsgSize, once it said it.
    pub peer_max_msg_size: Option<u64>,
    /// The peer's MaxObjSize, once it said it.
    pub peer_max_obj_size: Option<u64>,
    pub outbox: Outbox<T>,
    /// Our commands awaiting a Status, by (MsgID, CmdID).
    pub awaiting: HashMap<(u32, u32), SentCommand<T>>,
    /// The commands of our last message with their tags (resent after an authentication failure).
    pub last_sent: Vec<(Command, Option<T>)>,
    pub assembly: Assembly,
    pub last_activity: Instant,
    /// A message is due from us.
    pub reply_due: bool,
    /// The peer's package is not complete: our reply carries statuses and Alert 1222 only.
    pub ask_next: bool,
    /// Our reply carries statuses only, once (e.g. answering a message whose credentials failed).
    pub hold_commands: bool,
    /// Once the due message is out, the session ends for this reason.
    pub end_after_send: Option<EndReason>,
    pub ended: Option<EndReason>,
    /// How often we refused the peer's credentials.
    pub peer_auth_failures: u32,
    /// How often the peer refused ours.
    pub own_auth_failures: u32,
}

impl<T: Clone> Exchange<T> {
    pub fn new(session_id: String, encoding: Encoding, limits: Limits, now: Instant) -> Self {
        Self {
            session_id,
            encoding,
            limits,
            own_msg_id: 0,
            peer_msg_id: 0,
            peer_max_msg_size: None,
            peer_max_obj_size: None,
            outbox: Outbox::default(),
            awaiting: HashMap::new(),
            last_sent: Vec::new(),
            assembly: Assembly::default(),
            last_activity: now,
            reply_due: false,
            ask_next: false,
            hold_commands: false,
            end_after_send: None,
            ended: None,
            peer_auth_failures: 0,
            own_auth_failures: 0,
        }
    }

    /// When the session times out, unless it is over.
    pub fn timeout(&self) -> Option<Instant> {
        self.ended
            .is_none()
            .then(|| self.last_activity + self.limits.idle_timeout)
    }

    /// Ends the session if `now` is past the idle deadline; true when it did.
    pub fn check_timeout(&mut self, now: Instant) -> bool {
        if self.timeout().is_some_and(|deadline| now >= deadline) {
            self.ended = Some(EndReason::TimedOut);
            return true;
        }
        false
    }

    /// Checks the header of a received message against the session, and the rules a whole
    /// message can break (a CmdID repeated, or 0: [`crate::rules::message_violation`]); the
    /// status to answer its SyncHdr with when it cannot be used.
    pub fn check_received(&self, msg: &SyncMl) -> Result<(), StatusCode> {
        let hdr = &msg.hdr;
        if hdr.session_id != self.session_id || hdr.msg_id <= self.peer_msg_id {
            return Err(StatusCode::BAD_REQUEST);
        }
        match crate::rules::message_violation(msg) {
            Some(violation) => {
                tracing::debug!(%violation, "message refused");
                Err(violation.status())
            }
            None => Ok(()),
        }
    }

    /// Records a received message's header: MsgID, the peer's MaxMsgSize, activity.
    pub fn note_received(&mut self, hdr: &SyncHdr, now: Instant) {
        self.peer_msg_id = hdr.msg_id;
        if let Some(size) = hdr.meta.as_ref().and_then(|meta| meta.max_msg_size) {
            self.peer_max_msg_size = Some(size);
        }
        if let Some(size) = hdr.meta.as_ref().and_then(|meta| meta.max_obj_size) {
            self.peer_max_obj_size = Some(size);
        }
        self.last_activity = now;
    }

    /// Answers a message we cannot use: only the header status `code`, then the session ends.
    /// `hdr` is the message's header when it could be decoded.
    pub fn refuse(
        &mut self,
        hdr: Option<&SyncHdr>,
        own_uri: &str,
        peer_uri: &str,
        code: StatusCode,
    ) {
        self.outbox.clear();
        let (msg_ref, target, source) = match hdr {
            Some(hdr) => (
                hdr.msg_id,
                hdr.target.loc_uri.as_str(),
                hdr.source.loc_uri.as_str(),
            ),
            None => (self.peer_msg_id.saturating_add(1), own_uri, peer_uri),
        };
        self.outbox
            .push_status_front(Status::for_header(0, msg_ref, target, source, code));
        self.ask_next = false;
        self.reply_due = true;
        self.end_after_send = Some(EndReason::BadMessage(code));
    }

    /// [`Self::refuse`] a message that arrived at `now`.
    pub fn refuse_received(
        &mut self,
        hdr: Option<&SyncHdr>,
        (own_uri, peer_uri): (&str, &str),
        code: StatusCode,
        now: Instant,
    ) {
        self.last_activity = now;
        self.refuse(hdr, own_uri, peer_uri, code);
    }

    /// Admits a received message: refuses it when it is larger than our MaxMsgSize (`None`),
    /// otherwise checks the peer's credentials (unless already authenticated and the check is
    /// once per session) and queues the status of its header first in our reply.
    pub fn admit(
        &mut self,
        hdr: &SyncHdr,
        raw: Option<(&[u8], Option<&str>)>,
        (own_uri, peer_uri): (&str, &str),
        peer_authenticated: bool,
        verifier: &mut dyn CredentialCheck,
    ) -> Option<Verdict> {
        if raw.is_some_and(|(body, _)| body.len() as u64 > self.limits.max_msg_size) {
            self.refuse(
                Some(hdr),
                own_uri,
                peer_uri,
                StatusCode::REQUEST_ENTITY_TOO_LARGE,
            );
            return None;
        }
        let verdict = if peer_authenticated && !verifier.checks_every_message() {
            Verdict::NotRequired
        } else {
            verifier.verify(Presented {
                hdr,
                body: raw.map(|(body, _)| body),
                transport_mac: raw.and_then(|(_, mac)| mac),
            })
        };
        if !hdr.no_resp {
            let mut status = self.header_status(hdr, verdict.status());
            status.chal = verdict.chal().cloned();
            // The header's status opens the reply, before statuses left over from earlier.
            self.outbox.push_status_front(status);
        }
        Some(verdict)
    }

    /// The peer's credentials were missing or wrong: our reply carries statuses only, and is
    /// the last one once the attempts are used up.
    pub fn peer_credentials_refused(&mut self) {
        self.peer_auth_failures += 1;
        self.reply_due = true;
        self.hold_commands = true;
        if self.peer_auth_failures >= self.limits.max_auth_attempts {
            self.end_after_send = Some(EndReason::AuthenticationFailed);
        }
    }

    /// Reads the peer's status for our `SyncHdr`: passes its challenge on to `credentials`,
    /// notes in `authenticated` whether the peer accepted them, and queues our last commands
    /// again when it refused them.
    pub fn read_header_status(
        &mut self,
        status: &Status,
        credentials: &mut dyn CredentialSource,
        authenticated: &mut bool,
    ) -> OwnHeader {
        if let Some(chal) = &status.chal {
            credentials.challenged(chal);
        }
        match status.data {
            StatusCode::AUTHENTICATION_ACCEPTED => {
                *authenticated = true;
                OwnHeader::Fine
            }
            StatusCode::INVALID_CREDENTIALS | StatusCode::MISSING_CREDENTIALS => {
                *authenticated = false;
                if self.requeue_after_auth_failure() {
                    OwnHeader::Resend
                } else {
                    OwnHeader::End(EndReason::AuthenticationFailed)
                }
            }
            code if code.is_success() => OwnHeader::Fine,
            code => OwnHeader::End(EndReason::Rejected(code)),
        }
    }

    /// Queues the status of the peer's `command` (from its message `msg_id`), unless the
    /// command asked for none.
    pub fn answer(&mut self, msg_id: u32, command: &Command, code: StatusCode) {
        if !command.no_resp() {
            self.outbox.push_status(status_for(msg_id, command, code));
        }
    }

    /// Queues Alert 1223 (tagged `tag`) as our last command: the session ends once it is out.
    pub fn queue_abort(&mut self, tag: T) {
        self.ask_next = false;
        self.outbox
            .push_command(Command::Alert(Alert::new(0, AlertCode::SESSION_ABORT)), tag);
        self.reply_due = true;
        self.end_after_send = Some(EndReason::Aborted);
    }

    /// The status of the peer's `SyncHdr`.
    pub fn header_status(&self, hdr: &SyncHdr, code: StatusCode) -> Status {
        Status::for_header(
            0,
            hdr.msg_id,
            hdr.target.loc_uri.clone(),
            hdr.source.loc_uri.clone(),
            code,
        )
    }

    /// Builds our next message under `hdr` (whose MsgID is set here) and records what it sent.
    pub fn build(&mut self, mut hdr: SyncHdr) -> SyncMl {
        self.own_msg_id += 1;
        hdr.msg_id = self.own_msg_id;
        let meta = hdr.meta.get_or_insert_with(Meta::default);
        meta.max_msg_size = Some(self.limits.max_msg_size);
        meta.max_obj_size = self.limits.max_obj_size;
        let mut msg = SyncMl::new(hdr, SyncBody::default());
        let limit = self
            .peer_max_msg_size
            .map(|size| usize::try_from(size).unwrap_or(usize::MAX));
        let trailer = self
            .ask_next
            .then(|| Command::Alert(Alert::new(0, AlertCode::NEXT_MESSAGE)));
        let sent = self.outbox.fill(
            &mut msg,
            limit,
            self.encoding,
            trailer,
            self.ask_next || self.hold_commands,
        );
        let tags: HashMap<u32, T> = sent
            .iter()
            .filter(|sent| sent.member.is_none())
            .map(|sent| (sent.cmd_id, sent.tag.clone()))
            .collect();
        self.last_sent = msg
            .body
            .commands
            .iter()
            .map(|command| (command.clone(), tags.get(&command.cmd_id()).cloned()))
            .collect();
        for record in sent {
            self.awaiting
                .insert((self.own_msg_id, record.cmd_id), record);
        }
        self.reply_due = false;
        self.ask_next = false;
        self.hold_commands = false;
        if let Some(reason) = self.end_after_send.take() {
            self.ended = Some(reason);
        }
        msg
    }

    /// Our last message was refused for want of (valid) credentials: queue its commands again,
    /// before anything else. False when the attempts are used up.
    pub fn requeue_after_auth_failure(&mut self) -> bool {
        self.own_auth_failures += 1;
        if self.own_auth_failures >= self.limits.max_auth_attempts {
            return false;
        }
        let last_msg = self.own_msg_id;
        self.awaiting.retain(|(msg_id, _), _| *msg_id != last_msg);
        let mut commands = std::mem::take(&mut self.last_sent);
        let mut statuses = Vec::new();
        for (command, tag) in commands.drain(..).rev() {
            match (command, tag) {
                (Command::Status(status), _) if status.cmd_ref != 0 => statuses.push(status),
                (Command::Alert(alert), _) if alert.data == AlertCode::NEXT_MESSAGE => {
                    self.ask_next = true;
                }
                (command, Some(tag)) => self.outbox.push_command_front(command, tag),
                _ => {}
            }
        }
        for status in statuses {
            self.outbox.push_status_front(status);
        }
        true
    }

    /// Whether a value of `len` bytes is above the peer's MaxObjSize (it must not be sent).
    pub fn too_large_for_peer(&self, len: usize) -> bool {
        self.peer_max_obj_size.is_some_and(|max| len as u64 > max)
    }

    /// Takes the record of our command answered by `status` (none for the SyncHdr).
    pub fn take_awaiting(&mut self, status: &Status) -> Option<SentCommand<T>> {
        self.awaiting.remove(&(status.msg_ref, status.cmd_ref))
    }
}
