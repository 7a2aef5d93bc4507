//! `<Meta>`: meta-information from the MetInf DTD (`syncml:metinf`, WBXML code page 1).

use super::Data;

/// Well-known values of `<Format>` (DM tree node formats, OMA-TS-DM_TND "Format").
pub mod format {
    pub const B64: &str = "b64";
    pub const BIN: &str = "bin";
    pub const BOOL: &str = "bool";
    pub const CHR: &str = "chr";
    pub const INT: &str = "int";
    pub const NODE: &str = "node";
    pub const NULL: &str = "null";
    pub const XML: &str = "xml";
    pub const DATE: &str = "date";
    pub const TIME: &str = "time";
    pub const FLOAT: &str = "float";
}

/// The MetInf elements a DM message uses. The DS-only ones (`Anchor`, `Mem`, `FieldLevel`...) are
/// rejected by the decoders as unsupported (status 406).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// `<Format>`: `chr`, `int`, `b64`, `bin`, `node`... (see [`mod@format`]).
    pub format: Option<String>,
    /// `<Type>`: a MIME type or a DDF/alert type URN.
    pub type_: Option<String>,
    /// `<Mark>`: e.g. `critical`, `major`, `minor`, `informational` (Generic Alert).
    pub mark: Option<String>,
    /// `<Size>`: the full size of a chunked (large) object, in bytes.
    pub size: Option<u64>,
    /// `<Version>`.
    pub version: Option<String>,
    /// `<NextNonce>`: the nonce for the next MD5/HMAC digest (b64 text in XML, often opaque in WBXML).
    pub next_nonce: Option<Data>,
    /// `<MaxMsgSize>`: the largest message the sender accepts, in bytes.
    pub max_msg_size: Option<u64>,
    /// `<MaxObjSize>`: the largest object the sender accepts, in bytes.
    pub max_obj_size: Option<u64>,
    /// `<EMI>`: experimental meta-information, zero or more.
    pub emi: Vec<String>,
}

impl Meta {
    /// Meta with only `<Format>`.
    pub fn with_format(format: impl Into<String>) -> Self {
        Self {
            format: Some(format.into()),
            ..Self::default()
        }
    }

    /// Meta with only `<Type>`.
    pub fn with_type(type_: impl Into<String>) -> Self {
        Self {
            type_: Some(type_.into()),
            ..Self::default()
        }
    }

    /// Meta with `<Format>` and `<Type>`.
    pub fn format_and_type(format: impl Into<String>, type_: impl Into<String>) -> Self {
        Self {
            format: Some(format.into()),
            type_: Some(type_.into()),
            ..Self::default()
        }
    }

    /// Meta with the message size limits of a `SyncHdr`.
    pub fn max_sizes(max_msg_size: u64, max_obj_size: Option<u64>) -> Self {
        Self {
            max_msg_size: Some(max_msg_size),
            max_obj_size,
            ..Self::default()
        }
    }

    /// Whether no field is set (the encoders write such a Meta as an empty `<Meta/>`).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}
