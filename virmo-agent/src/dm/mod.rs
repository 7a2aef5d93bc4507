//! The DM side of the agent: the device's tree with the VirMO object ([`virmo_mo`], [`tree`]),
//! the client loop that opens sessions and delivers alerts ([`client`]) over HTTP(S)
//! ([`http`]), the Pkg#0 listener ([`notify`]).

pub mod auth;
pub mod client;
pub mod http;
pub mod notify;
pub mod tree;
pub mod virmo_mo;

use std::sync::{Arc, Mutex};

/// The authentication state of the session in progress, shared with the Pkg#0 listener: the
/// server learns a new nonce during a session, before the session ends and the account is
/// stored, and may sign a notification with it at once.
pub type LiveAuth = Arc<Mutex<Option<omadm::session::auth::DmAuth>>>;
