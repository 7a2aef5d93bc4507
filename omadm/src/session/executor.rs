//! What the client session asks of the device: run one DM command (or one Atomic/Sequence group)
//! on the device's tree. The session knows no concrete tree; the agent passes an implementation
//! (the device's [`crate::tree::DmTree`] implements it).

use crate::model::{Command, Item};
use crate::status::StatusCode;

/// Atomic (all or nothing) or Sequence (in order, each whatever the others' outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    Atomic,
    Sequence,
}

/// The outcome of one command: its status and, for a Get, the result items (Source = node URI,
/// Meta = format/type, Data = value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    pub status: StatusCode,
    pub results: Vec<Item>,
}

impl Execution {
    /// A status with no results.
    pub fn status(status: StatusCode) -> Self {
        Self {
            status,
            results: Vec::new(),
        }
    }

    /// 200 with result items.
    pub fn results(results: Vec<Item>) -> Self {
        Self {
            status: StatusCode::OK,
            results,
        }
    }
}

/// The outcome of an Atomic or Sequence: the group's own status and one outcome per command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupExecution {
    pub status: StatusCode,
    pub commands: Vec<Execution>,
}

/// Runs the server's commands on the device. `server_id` is the authenticated server (for ACLs).
///
/// The session calls `execute` with Add, Copy, Delete, Exec, Get, Replace, and Alerts other than
/// the session alerts (1200-1226); large objects arrive whole (the session reassembles chunks).
pub trait CommandExecutor {
    /// Runs one command.
    fn execute(&mut self, server_id: &str, command: &Command) -> Execution;

    /// Runs an Atomic or a Sequence; `commands` are the group's commands in order.
    fn execute_group(
        &mut self,
        server_id: &str,
        kind: GroupKind,
        commands: &[Command],
    ) -> GroupExecution;
}
