//! The SyncML DM commands of a `<SyncBody>`.

use std::fmt;
use std::str::FromStr;

use super::{Chal, Cred, Item, Meta};
use crate::status::StatusCode;

/// The name of a command, as carried in `Status/Cmd` (plus `SyncHdr`, whose status is the first of
/// every reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    SyncHdr,
    Add,
    Alert,
    Atomic,
    Copy,
    Delete,
    Exec,
    Get,
    Replace,
    Results,
    Sequence,
    Status,
}

impl CommandKind {
    /// Every kind, in the order above.
    pub const ALL: [Self; 12] = [
        Self::SyncHdr,
        Self::Add,
        Self::Alert,
        Self::Atomic,
        Self::Copy,
        Self::Delete,
        Self::Exec,
        Self::Get,
        Self::Replace,
        Self::Results,
        Self::Sequence,
        Self::Status,
    ];

    /// The element name (`"Replace"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SyncHdr => "SyncHdr",
            Self::Add => "Add",
            Self::Alert => "Alert",
            Self::Atomic => "Atomic",
            Self::Copy => "Copy",
            Self::Delete => "Delete",
            Self::Exec => "Exec",
            Self::Get => "Get",
            Self::Replace => "Replace",
            Self::Results => "Results",
            Self::Sequence => "Sequence",
            Self::Status => "Status",
        }
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `Status/Cmd` that names no DM command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown command name {0:?}")]
pub struct UnknownCommandKind(pub String);

impl FromStr for CommandKind {
    type Err = UnknownCommandKind;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| UnknownCommandKind(text.to_owned()))
    }
}

/// An alert code (`Alert/Data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlertCode(pub u16);

impl AlertCode {
    /// User interaction: display.
    pub const DISPLAY: Self = Self(1100);
    /// User interaction: continue or abort.
    pub const CONTINUE_OR_ABORT: Self = Self(1101);
    /// User interaction: text input.
    pub const TEXT_INPUT: Self = Self(1102);
    /// User interaction: single choice.
    pub const SINGLE_CHOICE: Self = Self(1103);
    /// User interaction: multiple choice.
    pub const MULTIPLE_CHOICE: Self = Self(1104);
    /// The session was initiated by the server (Pkg#0).
    pub const SERVER_INITIATED_MGMT: Self = Self(1200);
    /// The session was initiated by the client.
    pub const CLIENT_INITIATED_MGMT: Self = Self(1201);
    /// Asks the peer for the next message (large object / multiple messages).
    pub const NEXT_MESSAGE: Self = Self(1222);
    /// Aborts the session.
    pub const SESSION_ABORT: Self = Self(1223);
    /// Client event.
    pub const CLIENT_EVENT: Self = Self(1224);
    /// No end of data (a chunked object was cut short).
    pub const NO_END_OF_DATA: Self = Self(1225);
    /// Generic Alert (DM 1.2+), e.g. the result of an asynchronous Exec.
    pub const GENERIC_ALERT: Self = Self(1226);
}

impl fmt::Display for AlertCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The fields shared by Add, Copy, Delete, Get and Replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemCommand {
    pub cmd_id: u32,
    pub no_resp: bool,
    pub cred: Option<Cred>,
    pub meta: Option<Meta>,
    /// One or more items.
    pub items: Vec<Item>,
}

impl ItemCommand {
    /// A command with `items` and no optional fields.
    pub fn new(cmd_id: u32, items: Vec<Item>) -> Self {
        Self {
            cmd_id,
            no_resp: false,
            cred: None,
            meta: None,
            items,
        }
    }

    /// Sets the command-level `<Meta>` (applies to every item without its own).
    pub fn with_meta(mut self, meta: Meta) -> Self {
        self.meta = Some(meta);
        self
    }
}

/// `<Exec>`: runs the executable node its single item targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub cmd_id: u32,
    pub no_resp: bool,
    pub cred: Option<Cred>,
    pub meta: Option<Meta>,
    /// `<Correlator>`: echoed in the Generic Alert that reports an asynchronous result.
    pub correlator: Option<String>,
    pub item: Item,
}

impl Exec {
    /// An Exec of `item` with no optional fields.
    pub fn new(cmd_id: u32, item: Item) -> Self {
        Self {
            cmd_id,
            no_resp: false,
            cred: None,
            meta: None,
            correlator: None,
            item,
        }
    }

    /// Sets `<Correlator>`.
    pub fn with_correlator(mut self, correlator: impl Into<String>) -> Self {
        self.correlator = Some(correlator.into());
        self
    }
}

/// `<Alert>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub cmd_id: u32,
    pub no_resp: bool,
    pub cred: Option<Cred>,
    /// `<Data>`: the alert code.
    pub data: AlertCode,
    /// `<Correlator>` (Generic Alert answering an Exec).
    pub correlator: Option<String>,
    pub items: Vec<Item>,
}

impl Alert {
    /// An alert with `code` and no items (e.g. 1201 without DevInfo, 1222, 1223).
    pub fn new(cmd_id: u32, code: AlertCode) -> Self {
        Self {
            cmd_id,
            no_resp: false,
            cred: None,
            data: code,
            correlator: None,
            items: Vec::new(),
        }
    }

    /// A Generic Alert (1226) carrying `items` (each with Source, Meta Type/Format/Mark and Data),
    /// answering the Exec with `correlator` when given.
    pub fn generic(cmd_id: u32, correlator: Option<String>, items: Vec<Item>) -> Self {
        Self {
            correlator,
            items,
            ..Self::new(cmd_id, AlertCode::GENERIC_ALERT)
        }
    }

    /// Sets the items.
    pub fn with_items(mut self, items: Vec<Item>) -> Self {
        self.items = items;
        self
    }
}

/// `<Atomic>` or `<Sequence>`: a group of commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub cmd_id: u32,
    pub no_resp: bool,
    pub meta: Option<Meta>,
    /// One or more commands (neither holds Status or Results, a Sequence no Sequence; an Atomic
    /// nested in an Atomic is a protocol error, see `crate::rules`).
    pub commands: Vec<Command>,
}

impl Container {
    /// A group of `commands`.
    pub fn new(cmd_id: u32, commands: Vec<Command>) -> Self {
        Self {
            cmd_id,
            no_resp: false,
            meta: None,
            commands,
        }
    }
}

/// `<Results>`: the answer to a Get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Results {
    pub cmd_id: u32,
    /// `<MsgRef>`: the MsgID of the message holding the Get (absent: the previous message).
    pub msg_ref: Option<u32>,
    /// `<CmdRef>`: the CmdID of the Get.
    pub cmd_ref: u32,
    pub meta: Option<Meta>,
    pub target_ref: Option<String>,
    pub source_ref: Option<String>,
    /// One or more items (Source = node URI, Meta = format/type, Data = value).
    pub items: Vec<Item>,
}

impl Results {
    /// Results of the Get `cmd_ref` of message `msg_ref`.
    pub fn new(cmd_id: u32, msg_ref: u32, cmd_ref: u32, items: Vec<Item>) -> Self {
        Self {
            cmd_id,
            msg_ref: Some(msg_ref),
            cmd_ref,
            meta: None,
            target_ref: None,
            source_ref: None,
            items,
        }
    }
}

/// `<Status>`: the outcome of one command (or of the `SyncHdr`, with `cmd_ref` 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub cmd_id: u32,
    /// `<MsgRef>`: the MsgID of the message holding the command.
    pub msg_ref: u32,
    /// `<CmdRef>`: the CmdID of the command (0 for the SyncHdr).
    pub cmd_ref: u32,
    /// `<Cmd>`: the name of the command.
    pub cmd: CommandKind,
    /// `<TargetRef>`s: the target URIs of the command (zero or more).
    pub target_ref: Vec<String>,
    /// `<SourceRef>`s: the source URIs of the command (zero or more).
    pub source_ref: Vec<String>,
    pub cred: Option<Cred>,
    /// `<Chal>`: a challenge, with 401/407 or to set the next nonce.
    pub chal: Option<Chal>,
    /// `<Data>`: the status code.
    pub data: StatusCode,
    pub items: Vec<Item>,
}

impl Status {
    /// The status `code` of command `cmd_ref` (a `cmd`) in message `msg_ref`.
    pub fn new(
        cmd_id: u32,
        msg_ref: u32,
        cmd_ref: u32,
        cmd: CommandKind,
        code: StatusCode,
    ) -> Self {
        Self {
            cmd_id,
            msg_ref,
            cmd_ref,
            cmd,
            target_ref: Vec::new(),
            source_ref: Vec::new(),
            cred: None,
            chal: None,
            data: code,
            items: Vec::new(),
        }
    }

    /// The status of the `SyncHdr` of message `msg_ref` (CmdRef 0), with the header's target and
    /// source as TargetRef/SourceRef.
    pub fn for_header(
        cmd_id: u32,
        msg_ref: u32,
        target_ref: impl Into<String>,
        source_ref: impl Into<String>,
        code: StatusCode,
    ) -> Self {
        Self {
            target_ref: vec![target_ref.into()],
            source_ref: vec![source_ref.into()],
            ..Self::new(cmd_id, msg_ref, 0, CommandKind::SyncHdr, code)
        }
    }

    /// Adds a `<TargetRef>`.
    pub fn with_target_ref(mut self, target_ref: impl Into<String>) -> Self {
        self.target_ref.push(target_ref.into());
        self
    }

    /// Adds a `<SourceRef>`.
    pub fn with_source_ref(mut self, source_ref: impl Into<String>) -> Self {
        self.source_ref.push(source_ref.into());
        self
    }

    /// Sets `<Chal>`.
    pub fn with_chal(mut self, chal: Chal) -> Self {
        self.chal = Some(chal);
        self
    }
}

/// A command of a `<SyncBody>` (or of an Atomic/Sequence).
#[expect(
    clippy::large_enum_variant,
    reason = "a message holds a handful of commands; boxing would only make matching clumsier"
)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Add(ItemCommand),
    Alert(Alert),
    Atomic(Container),
    Copy(ItemCommand),
    Delete(ItemCommand),
    Exec(Exec),
    Get(ItemCommand),
    Replace(ItemCommand),
    Results(Results),
    Sequence(Container),
    Status(Status),
}

impl Command {
    /// The command's name.
    pub fn kind(&self) -> CommandKind {
        match self {
            Self::Add(_) => CommandKind::Add,
            Self::Alert(_) => CommandKind::Alert,
            Self::Atomic(_) => CommandKind::Atomic,
            Self::Copy(_) => CommandKind::Copy,
            Self::Delete(_) => CommandKind::Delete,
            Self::Exec(_) => CommandKind::Exec,
            Self::Get(_) => CommandKind::Get,
            Self::Replace(_) => CommandKind::Replace,
            Self::Results(_) => CommandKind::Results,
            Self::Sequence(_) => CommandKind::Sequence,
            Self::Status(_) => CommandKind::Status,
        }
    }

    /// The command's `<CmdID>`.
    pub fn cmd_id(&self) -> u32 {
        match self {
            Self::Add(cmd)
            | Self::Copy(cmd)
            | Self::Delete(cmd)
            | Self::Get(cmd)
            | Self::Replace(cmd) => cmd.cmd_id,
            Self::Alert(alert) => alert.cmd_id,
            Self::Atomic(group) | Self::Sequence(group) => group.cmd_id,
            Self::Exec(exec) => exec.cmd_id,
            Self::Results(results) => results.cmd_id,
            Self::Status(status) => status.cmd_id,
        }
    }

    /// Whether `<NoResp/>` is set (Results and Status never ask for a response).
    pub fn no_resp(&self) -> bool {
        match self {
            Self::Add(cmd)
            | Self::Copy(cmd)
            | Self::Delete(cmd)
            | Self::Get(cmd)
            | Self::Replace(cmd) => cmd.no_resp,
            Self::Alert(alert) => alert.no_resp,
            Self::Atomic(group) | Self::Sequence(group) => group.no_resp,
            Self::Exec(exec) => exec.no_resp,
            Self::Results(_) | Self::Status(_) => true,
        }
    }

    /// The command's items (for Atomic/Sequence: none; their commands hold them).
    pub fn items(&self) -> &[Item] {
        match self {
            Self::Add(cmd)
            | Self::Copy(cmd)
            | Self::Delete(cmd)
            | Self::Get(cmd)
            | Self::Replace(cmd) => &cmd.items,
            Self::Alert(alert) => &alert.items,
            Self::Atomic(_) | Self::Sequence(_) => &[],
            Self::Exec(exec) => std::slice::from_ref(&exec.item),
            Self::Results(results) => &results.items,
            Self::Status(status) => &status.items,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_kind_round_trips_through_its_name() {
        for kind in CommandKind::ALL {
            assert_eq!(kind.as_str().parse(), Ok(kind));
        }
        assert!("Sync".parse::<CommandKind>().is_err());
    }

    #[test]
    fn header_status_refers_to_command_zero() {
        let status = Status::for_header(
            1,
            1,
            "IMEI:1",
            "https://dm",
            StatusCode::AUTHENTICATION_ACCEPTED,
        );
        assert_eq!(status.cmd_ref, 0);
        assert_eq!(status.cmd, CommandKind::SyncHdr);
        assert_eq!(status.target_ref, ["IMEI:1"]);
    }

    #[test]
    fn command_accessors_see_through_variants() {
        let exec = Command::Exec(Exec::new(7, Item::target("./A/Op")).with_correlator("c1"));
        assert_eq!(exec.cmd_id(), 7);
        assert_eq!(exec.kind(), CommandKind::Exec);
        assert_eq!(exec.items()[0].target_uri(), Some("./A/Op"));
        assert!(!exec.no_resp());
    }
}
