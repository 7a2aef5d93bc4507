//! The DM side of the agent: the device's tree with the VirMO object ([`virmo_mo`], [`tree`]),
//! the client loop that opens sessions and delivers alerts ([`client`]), the Pkg#0 listener
//! ([`notify`]).

pub mod client;
pub mod notify;
pub mod tree;
pub mod virmo_mo;
