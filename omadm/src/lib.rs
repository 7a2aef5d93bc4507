//! `omadm`: the OMA DM 1.2/1.3 protocol, shared by the VirMO agent (client) and server.
//!
//! - [`model`]: the typed SyncML DM message ([`model::SyncMl`]).
//! - [`codec`]: `application/vnd.syncml.dm+xml` and `+wbxml` ([`codec::XmlCodec`],
//!   [`codec::WbxmlCodec`], one [`codec::Codec`] trait, strict decoders whose errors carry the DM
//!   status a server answers).
//! - [`status`]: DM status codes.
//! - [`tree`]: the DM tree engine (nodes, properties, ACL, handlers, Atomic, persistence).
//! - [`session`]: sans-IO client and server DM sessions; [`transport`]: their HTTP(S) bindings.
//! - [`auth`]: syncml:auth-basic, auth-md5 and HMAC; [`notification`]: Pkg#0.
//! - [`rules`]: the DM protocol rules a decoded message can still break (CmdIDs, nested Atomic,
//!   URI limits), applied by the sessions and `omadm check`.
#![forbid(unsafe_code)]
pub mod auth;
pub mod codec;
pub mod model;
pub mod notification;
pub mod rules;
pub mod session;
pub mod status;
pub mod transport;
pub mod tree;
