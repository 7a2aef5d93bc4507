//! The HTTP/1.1 + JSON control API on a Unix socket, versioned under `/v1`, and its typed client.
//! The wire schema is in [`types`]; `docs/api.md` documents it.

pub mod types;
pub mod server;
