//! `omadm`: the OMA DM 1.2/1.3 protocol, shared by the VirMO agent (client) and server.
#![forbid(unsafe_code)]
pub mod auth;
pub mod codec;
pub mod model;
pub mod notification;
pub mod session;
pub mod status;
pub mod transport;
pub mod tree;
