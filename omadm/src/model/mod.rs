//! The typed SyncML DM message (OMA-TS-DM_RepPro 1.2/1.3), independent of its encoding.
//!
//! Element order and cardinality follow the SyncML DM DTD; the codecs in [`crate::codec`] turn a
//! [`SyncMl`] into XML or WBXML and back.

mod command;
mod data;
mod header;
mod item;
mod meta;

pub use command::{
    Alert, AlertCode, Command, CommandKind, Container, Exec, ItemCommand, Results, Status,
    UnknownCommandKind,
};
pub use data::Data;
pub use header::{Chal, Cred, ProtoVersion, SyncHdr, UnknownProtoVersion, VER_DTD};
pub use item::{Item, Location};
pub use meta::{format, Meta};

/// A SyncML DM message: `<SyncML>` with its header and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncMl {
    pub hdr: SyncHdr,
    pub body: SyncBody,
}

impl SyncMl {
    /// A message of `hdr` and `body`.
    pub fn new(hdr: SyncHdr, body: SyncBody) -> Self {
        Self { hdr, body }
    }
}

/// `<SyncBody>`: the commands of a message and the `<Final/>` flag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncBody {
    pub commands: Vec<Command>,
    /// `<Final/>`: the last message of the package.
    pub final_: bool,
}

impl SyncBody {
    /// A body of `commands`, marked final.
    pub fn final_with(commands: Vec<Command>) -> Self {
        Self {
            commands,
            final_: true,
        }
    }

    /// A body of `commands`, not final (more messages of this package follow).
    pub fn with(commands: Vec<Command>) -> Self {
        Self {
            commands,
            final_: false,
        }
    }
}
