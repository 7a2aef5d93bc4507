//! Thin HTTP(S) bindings around the sans-IO sessions: [`DmHttpClient`] POSTs a device's messages
//! and feeds the replies back; [`DmHttpServer`] routes each POST to its [`ServerSession`] and
//! answers with the session's next message. TLS is rustls on both sides. [`notify`] carries
//! Pkg#0 notifications over UDP.
//!
//! HTTP status use: 200 with a DM message for every message a session handled (DM-level errors
//! travel as DM statuses inside it); 415 for a `Content-Type` that is not SyncML DM; 400 for a
//! body that is not a DM message at all, or a message that belongs to no session; 404 for
//! another path; 405 for a method other than POST.
//!
//! [`ServerSession`]: crate::session::ServerSession

mod client;
pub mod notify;
mod server;

pub use client::{DmHttpClient, HttpReply};
pub use server::{DmHttpServer, HttpServerConfig, SessionHandler, TlsIdentity};

/// The header carrying HMAC credentials (OMA DM Security, HMAC scheme).
pub const HMAC_HEADER: &str = "x-syncml-hmac";

/// Why an HTTP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("POST to {url} failed")]
    Http {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("POST to {url} was answered with HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("the session could not produce its next message")]
    Session(#[source] crate::session::SessionError),
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: String, reason: String },
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}
