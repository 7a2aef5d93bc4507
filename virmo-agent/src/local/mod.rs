//! The local user's side: a Unix socket (file-permission access control: mode 0600, or 0660
//! with a group) serving [`protocol::Request`]s, and its client.

pub mod client;
pub mod protocol;
mod server;

pub use server::serve;
