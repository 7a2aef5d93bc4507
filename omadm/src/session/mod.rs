//! Sans-IO OMA DM sessions: [`ClientSession`] (the device) and [`ServerSession`] (the DM server).
//!
//! Neither does I/O nor reads a clock: the caller feeds in what arrived (a decoded message, or
//! bytes through [`ClientSession::handle_bytes`] / [`ServerSession::handle_bytes`]) with the
//! current time, then pulls out the next message to send (`poll_message` / `poll_transmit`), the
//! events for the application (`poll_event`) and the next deadline (`poll_timeout`, then
//! `handle_timeout`). The HTTP bindings in [`crate::transport`] drive them over the network.
//!
//! Packages (OMA-TS-DM_Protocol): 1 client → server (Alert 1201/1200, DevInfo, credentials,
//! Generic Alerts); 2 server → client (commands); 3 client → server (Status, Results); 4 and on
//! like 2 and 3; the server ends the session with a final message holding statuses only. A
//! package too large for the peer's MaxMsgSize spans messages (no `Final`; the peer asks for the
//! rest with Alert 1222), and an item too large for one message travels as a large object
//! (`MoreData` chunks). See `docs/omadm-session.md`.

mod assembly;
pub mod auth;
mod client;
mod devinfo;
mod exchange;
mod executor;
mod generic_alert;
mod outbox;
mod refusal;
mod server;
mod tree_executor;
mod wire;

pub use client::{ClientConfig, ClientEvent, ClientSession, Initiation};
pub use devinfo::DevInfo;
pub use exchange::Limits;
pub use executor::{CommandExecutor, Execution, GroupExecution, GroupKind};
pub use generic_alert::GenericAlert;
pub use server::{RequestId, ServerConfig, ServerEvent, ServerSession};
pub use wire::{Encoding, Transmit};

#[cfg(test)]
mod robustness_tests;
#[cfg(test)]
mod tests;

use crate::codec::EncodeError;
use crate::status::StatusCode;

/// Why a session could not produce its next message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("cannot encode the next message")]
    Encode(#[source] EncodeError),
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The server sent its final message with nothing left to do.
    Completed,
    /// No message arrived within the idle timeout.
    TimedOut,
    /// We aborted it (Alert 1223 sent).
    Aborted,
    /// The peer aborted it (Alert 1223 received).
    AbortedByPeer,
    /// Authentication failed too many times (either direction).
    AuthenticationFailed,
    /// A message from the peer was unusable; we answered its header with this status.
    BadMessage(StatusCode),
    /// The peer answered our header with this error status.
    Rejected(StatusCode),
    /// The transport failed (connection refused, HTTP error...).
    Transport(String),
}
