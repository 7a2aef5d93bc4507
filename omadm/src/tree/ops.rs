//! The typed operations the tree executes (what a DM session turns SyncML commands into).

use super::node::Format;
use crate::status::StatusCode;

/// Who asks: a DM server (ACLs apply) or the device itself (ACLs do not; access types still do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester<'a> {
    Server(&'a str),
    Device,
}

impl<'a> Requester<'a> {
    pub fn server_id(self) -> Option<&'a str> {
        match self {
            Self::Server(id) => Some(id),
            Self::Device => None,
        }
    }
}

/// The Item of an Add or Replace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Item {
    /// Meta Format. Add: missing means `chr`. Replace: missing means the node's format.
    pub format: Option<Format>,
    /// Meta Type (MIME type).
    pub mime_type: Option<String>,
    /// Item Data; `None` when the command had no Data element.
    pub data: Option<Vec<u8>>,
    /// Meta Size announced for a large object; checked against the data (424).
    pub declared_size: Option<u64>,
}

impl Item {
    /// A leaf item of `format` with `data`.
    pub fn leaf(format: Format, data: impl Into<Vec<u8>>) -> Self {
        Self {
            format: Some(format),
            data: Some(data.into()),
            ..Self::default()
        }
    }

    /// An interior-node item (`Format: node`, no data).
    pub fn interior() -> Self {
        Self {
            format: Some(Format::Node),
            ..Self::default()
        }
    }
}

/// One DM command against the tree. Targets are URIs as received (with optional `?query`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmOp {
    Get {
        target: String,
    },
    Add {
        target: String,
        item: Item,
    },
    Replace {
        target: String,
        item: Item,
    },
    Delete {
        target: String,
    },
    Copy {
        source: String,
        target: String,
    },
    Exec {
        target: String,
        data: Option<Vec<u8>>,
        correlator: Option<String>,
    },
}

/// One Item of a Get's Results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResult {
    /// Canonical URI (`./A/B`), with the query when the Get had one.
    pub uri: String,
    pub format: Format,
    pub mime_type: Option<String>,
    /// `None` for `?list=Struct` entries and interior nodes in `?list=StructData`.
    pub data: Option<Vec<u8>>,
}

/// What a command produced: its Status, and Results for a Get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpOutcome {
    pub status: StatusCode,
    pub results: Vec<GetResult>,
}

impl OpOutcome {
    pub fn status(status: StatusCode) -> Self {
        Self {
            status,
            results: Vec::new(),
        }
    }
}

impl From<Result<StatusCode, StatusCode>> for OpOutcome {
    fn from(result: Result<StatusCode, StatusCode>) -> Self {
        Self::status(result.unwrap_or_else(|status| status))
    }
}

/// The outcome of an Atomic: its own status and one outcome per command, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtomicOutcome {
    /// 200, or 507 (Atomic failed).
    pub status: StatusCode,
    /// 2xx, the failing command's error, 216 (rolled back), 516 (roll back failed), or 215
    /// (not executed, after the failure).
    pub commands: Vec<OpOutcome>,
}
