//! Messages as bytes: what a session hands the transport, and the measure of an encoded message
//! (for MaxMsgSize).

use super::auth::CredentialSource;
use super::SessionError;
pub use crate::codec::Encoding;
use crate::model::SyncMl;

/// An encoded message ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where it goes (the client's target: the server URI or its RespURI; empty for the server,
    /// whose messages are HTTP responses).
    pub target_uri: String,
    /// The HTTP `Content-Type`.
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// The `x-syncml-hmac` header (HMAC authentication only).
    pub hmac: Option<String>,
}

/// Encodes `msg`.
pub(crate) fn encode(msg: &SyncMl, encoding: Encoding) -> Result<Vec<u8>, SessionError> {
    encoding.encode(msg).map_err(SessionError::Encode)
}

/// `msg` encoded for `target_uri`, with the transport MAC of `credentials` when they have one.
pub(crate) fn transmit(
    msg: &SyncMl,
    target_uri: String,
    encoding: Encoding,
    credentials: &mut dyn CredentialSource,
) -> Result<Transmit, SessionError> {
    let body = encode(msg, encoding)?;
    Ok(Transmit {
        target_uri,
        content_type: encoding.media_type(),
        hmac: credentials.transport_mac(&body),
        body,
    })
}

/// The size of `msg` once encoded (for a message the encoder refuses, an estimate: sending it
/// fails later with the encoder's error).
pub(crate) fn encoded_len(msg: &SyncMl, encoding: Encoding) -> usize {
    encoding
        .encode(msg)
        .map_or_else(|_| format!("{msg:?}").len(), |bytes| bytes.len())
}

/// Decodes a received message of `expected` encoding; the status to answer otherwise (415 for
/// another media type, the decoder's status for bad bytes).
pub(crate) fn decode(
    body: &[u8],
    content_type: Option<&str>,
    expected: Encoding,
) -> Result<SyncMl, crate::status::StatusCode> {
    if let Some(content_type) = content_type {
        if Encoding::from_media_type(content_type) != Some(expected) {
            return Err(crate::status::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
    }
    expected.decode(body).map_err(|err| err.status_code())
}
