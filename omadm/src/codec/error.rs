//! Codec errors. A [`DecodeError`] knows the DM status a strict server answers a message with.

use crate::status::StatusCode;

/// "DTD version not supported" (`<VerDTD>` other than 1.2).
pub const STATUS_DTD_VERSION_NOT_SUPPORTED: StatusCode = StatusCode(505);
/// "Protocol version not supported" (`<VerProto>` other than DM/1.2 or DM/1.3).
pub const STATUS_PROTOCOL_VERSION_NOT_SUPPORTED: StatusCode = StatusCode(513);

/// Why a message could not be decoded.
///
/// Every variant maps to the status a strict DM server answers ([`DecodeError::status_code`]):
/// malformed or structurally invalid SyncML is 400; valid SyncML elements that OMA DM does not use
/// (DS elements such as `Sync`, `Map`, `Anchor`, or embedded XML in `Data`) are 406; content that
/// is not a SyncML 1.2 message at all (wrong root, namespace, WBXML public id or charset) is 415;
/// limits are 413; unsupported DTD / protocol versions are 505 / 513.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed XML at byte {offset}: {reason}")]
    Xml { offset: usize, reason: String },
    #[error("malformed WBXML at byte {offset}: {reason}")]
    Wbxml { offset: usize, reason: String },
    #[error("not a SyncML 1.2 message: {reason}")]
    NotSyncMl { reason: String },
    #[error("unsupported character set {charset} (only UTF-8 is accepted)")]
    UnsupportedCharset { charset: String },
    #[error("unknown element <{name}> in <{parent}> at byte {offset}")]
    UnknownElement {
        parent: String,
        name: String,
        offset: usize,
    },
    #[error("element <{name}> in <{parent}> at byte {offset} is in namespace {namespace:?}, expected {expected:?}")]
    WrongNamespace {
        parent: &'static str,
        name: &'static str,
        namespace: String,
        expected: &'static str,
        offset: usize,
    },
    #[error("<{name}> is not allowed in <{parent}> (byte {offset})")]
    NotAllowed {
        parent: &'static str,
        name: &'static str,
        offset: usize,
    },
    #[error("<{name}> in <{parent}> at byte {offset} is SyncML that OMA DM does not support")]
    Unsupported {
        parent: &'static str,
        name: String,
        offset: usize,
    },
    #[error("<{parent}> at byte {offset} lacks the required <{name}>")]
    Missing {
        parent: &'static str,
        name: &'static str,
        offset: usize,
    },
    #[error("<{name}> appears more than once in <{parent}> (byte {offset})")]
    Duplicate {
        parent: &'static str,
        name: &'static str,
        offset: usize,
    },
    #[error("<{name}> at byte {offset} is out of order in <{parent}>: {rule}")]
    OutOfOrder {
        parent: &'static str,
        name: &'static str,
        rule: &'static str,
        offset: usize,
    },
    #[error("<{parent}> at byte {offset} holds text where only elements are allowed")]
    UnexpectedText { parent: &'static str, offset: usize },
    #[error("<{element}> at byte {offset} holds elements where text is expected")]
    UnexpectedElement {
        element: &'static str,
        offset: usize,
    },
    #[error("<{element}> at byte {offset} holds {value:?}, expected {expected}")]
    BadValue {
        element: &'static str,
        value: String,
        expected: &'static str,
        offset: usize,
    },
    #[error("unexpected data after </SyncML> at byte {offset}")]
    TrailingData { offset: usize },
    #[error("unsupported DTD version {0:?} (expected 1.2)")]
    UnsupportedDtdVersion(String),
    #[error("unsupported protocol version {0:?} (expected DM/1.2 or DM/1.3)")]
    UnsupportedProtocolVersion(String),
    #[error("{what} exceeds the limit of {limit}")]
    LimitExceeded { what: &'static str, limit: usize },
}

impl DecodeError {
    /// The status a strict DM server answers a message that fails to decode this way (in the
    /// Status of the `SyncHdr`, or as the reason for dropping the message).
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::Unsupported { .. } => StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED,
            Self::NotSyncMl { .. } | Self::UnsupportedCharset { .. } => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::LimitExceeded { .. } => StatusCode::REQUEST_ENTITY_TOO_LARGE,
            Self::UnsupportedDtdVersion(_) => STATUS_DTD_VERSION_NOT_SUPPORTED,
            Self::UnsupportedProtocolVersion(_) => STATUS_PROTOCOL_VERSION_NOT_SUPPORTED,
            Self::Xml { .. }
            | Self::Wbxml { .. }
            | Self::UnknownElement { .. }
            | Self::WrongNamespace { .. }
            | Self::NotAllowed { .. }
            | Self::Missing { .. }
            | Self::Duplicate { .. }
            | Self::OutOfOrder { .. }
            | Self::UnexpectedText { .. }
            | Self::UnexpectedElement { .. }
            | Self::BadValue { .. }
            | Self::TrailingData { .. } => StatusCode::BAD_REQUEST,
        }
    }
}

/// Why a message could not be encoded: the model holds something the encoding cannot carry, or
/// something the decoders would reject (so that every encoded message decodes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("<{element}> holds {reason}, which XML cannot carry (send binary values as b64 text)")]
    NotXmlText {
        element: &'static str,
        reason: &'static str,
    },
    #[error("<{element}> holds a NUL character, which a WBXML inline string cannot carry")]
    NulInWbxmlString { element: &'static str },
    #[error("<{element}> holds more than 4 GiB, which a WBXML length cannot express")]
    TooLarge { element: &'static str },
    #[error("<{command}> with CmdID {cmd_id} is invalid: {reason}")]
    InvalidCommand {
        command: &'static str,
        cmd_id: u32,
        reason: &'static str,
    },
}
