//! A small, strict HTTP/1.1 implementation for the API socket: just what a local JSON API needs.
//!
//! - [`request`] parses a request head from bytes (sans-IO) and validates its framing.
//! - [`response`] builds and encodes responses, and parses a response head for the client.
//! - [`connection`] reads requests off a Unix stream with deadlines (the only part doing I/O).
//!
//! What is supported: `HTTP/1.1` and `HTTP/1.0`, origin-form (and absolute-form) targets,
//! `Content-Length` bodies up to [`MAX_BODY_BYTES`], keep-alive and `Connection: close`,
//! pipelined requests, `Expect: 100-continue`. What is refused, with the status a client can act
//! on: a head over [`MAX_HEAD_BYTES`] (431), a larger body (413), chunked bodies (411), other
//! transfer codings (501), other HTTP versions (505), anything malformed (400), a client that
//! stalls mid-request (408). Nothing in here panics on any input.

pub mod connection;
mod head;
pub mod request;
pub mod response;

pub use head::{Headers, ParseError};
pub use request::{Request, RequestHead};
pub use response::{Response, StatusCode};

/// Largest request head (request line and headers, with the blank line) accepted: 8 KiB.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Largest request body accepted: 64 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest response body the client accepts: 1 MiB (a long device list stays far below).
pub const MAX_RESPONSE_BODY_BYTES: usize = 1024 * 1024;
