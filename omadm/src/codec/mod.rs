//! SyncML DM codecs: `application/vnd.syncml.dm+xml` ([`XmlCodec`]) and
//! `application/vnd.syncml.dm+wbxml` ([`WbxmlCodec`]).
//!
//! Both parse into one element tree and share one reader that checks the DM rules, and both write
//! from one walk over the model, so the two encodings accept and produce the same messages.
//! Decoders are strict (see [`DecodeError`] for what is rejected and with which status), bounded
//! by [`Limits`], and never panic on any input.
//!
//! [`Document`] is the message as its elements in document order, for converting between the
//! encodings without normalizing (the model writes DTD order).

mod document;
mod element;
mod error;
mod read;
mod tag;
pub mod wbxml;
mod write;
pub mod xml;

pub use document::{DocContent, DocElement, Document};
pub use error::{
    DecodeError, EncodeError, STATUS_DTD_VERSION_NOT_SUPPORTED,
    STATUS_PROTOCOL_VERSION_NOT_SUPPORTED,
};
pub use tag::{METINF_NS, SYNCML_NS};
pub use wbxml::WbxmlCodec;
pub use xml::XmlCodec;

use crate::model::SyncMl;

/// One SyncML DM encoding: turns messages into bytes and back.
pub trait Codec {
    /// Which encoding this is.
    fn encoding(&self) -> Encoding;

    /// Encodes `msg`.
    fn encode(&self, msg: &SyncMl) -> Result<Vec<u8>, EncodeError>;

    /// Decodes exactly one message from all of `input` (trailing bytes are an error).
    fn decode(&self, input: &[u8]) -> Result<SyncMl, DecodeError>;
}

/// Bounds a decoder keeps to, whatever the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted input, in bytes.
    pub max_message_bytes: usize,
    /// Deepest element nesting (a typical message nests 7 deep; Atomic/Sequence add 1 each).
    pub max_depth: usize,
    /// Most elements in one message.
    pub max_elements: usize,
}

impl Limits {
    /// 16 MiB, 32 levels, 500 000 elements: far above any DM message (large objects are chunked
    /// by `MaxMsgSize`), low enough that hostile input cannot exhaust memory or the stack.
    pub const DEFAULT: Self = Self {
        max_message_bytes: 16 << 20,
        max_depth: 32,
        max_elements: 500_000,
    };

    pub(crate) fn check_input(&self, input: &[u8]) -> Result<(), DecodeError> {
        within(input.len(), self.max_message_bytes, "message size in bytes")
    }

    pub(crate) fn check_depth(&self, depth: usize) -> Result<(), DecodeError> {
        within(depth, self.max_depth, "element nesting depth")
    }

    pub(crate) fn check_elements(&self, count: usize) -> Result<(), DecodeError> {
        within(count, self.max_elements, "number of elements")
    }
}

/// `LimitExceeded` when `value` is above `limit` (`what` says what was counted).
fn within(value: usize, limit: usize, what: &'static str) -> Result<(), DecodeError> {
    if value > limit {
        return Err(DecodeError::LimitExceeded { what, limit });
    }
    Ok(())
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A SyncML DM encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `application/vnd.syncml.dm+xml`.
    Xml,
    /// `application/vnd.syncml.dm+wbxml`.
    Wbxml,
}

impl Encoding {
    /// The HTTP `Content-Type` of the encoding.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Xml => xml::MEDIA_TYPE,
            Self::Wbxml => wbxml::MEDIA_TYPE,
        }
    }

    /// The encoding a `Content-Type` names (parameters such as `charset` are ignored; case does
    /// not matter); `None` for any other media type (a strict server answers 415).
    pub fn from_media_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        [Self::Xml, Self::Wbxml]
            .into_iter()
            .find(|encoding| encoding.media_type().eq_ignore_ascii_case(essence))
    }

    /// Guesses the encoding from the first bytes: XML starts with `<` (after an optional BOM and
    /// whitespace), WBXML with a version byte 0x01..=0x03.
    pub fn sniff(input: &[u8]) -> Option<Self> {
        let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
        let first = input
            .iter()
            .copied()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))?;
        match (first, input.first()) {
            (b'<', _) => Some(Self::Xml),
            (_, Some(0x01..=0x03)) => Some(Self::Wbxml),
            _ => None,
        }
    }

    /// Encodes `msg` (compact XML, or WBXML).
    pub fn encode(self, msg: &SyncMl) -> Result<Vec<u8>, EncodeError> {
        match self {
            Self::Xml => XmlCodec::default().encode(msg),
            Self::Wbxml => WbxmlCodec::default().encode(msg),
        }
    }

    /// Decodes `input` with the default [`Limits`].
    pub fn decode(self, input: &[u8]) -> Result<SyncMl, DecodeError> {
        match self {
            Self::Xml => XmlCodec::default().decode(input),
            Self::Wbxml => WbxmlCodec::default().decode(input),
        }
    }
}

/// Decodes `input` in whichever encoding it is in ([`Encoding::sniff`]); input that is neither is
/// [`DecodeError::NotSyncMl`] (415).
pub fn decode_any(input: &[u8]) -> Result<(Encoding, SyncMl), DecodeError> {
    let encoding = Encoding::sniff(input).ok_or_else(|| DecodeError::NotSyncMl {
        reason: "the input is neither XML nor WBXML".to_owned(),
    })?;
    Ok((encoding, encoding.decode(input)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_parse_with_parameters_and_any_case() {
        assert_eq!(
            Encoding::from_media_type("application/vnd.syncml.dm+xml; charset=UTF-8"),
            Some(Encoding::Xml)
        );
        assert_eq!(
            Encoding::from_media_type("Application/VND.SyncML.DM+WBXML"),
            Some(Encoding::Wbxml)
        );
        assert_eq!(
            Encoding::from_media_type("application/vnd.syncml+xml"),
            None
        );
    }

    #[test]
    fn sniffing_tells_xml_from_wbxml() {
        assert_eq!(
            Encoding::sniff(b"\xEF\xBB\xBF \n<?xml"),
            Some(Encoding::Xml)
        );
        assert_eq!(
            Encoding::sniff(&[0x03, 0xa4, 0x01, 0x6a]),
            Some(Encoding::Wbxml)
        );
        assert_eq!(Encoding::sniff(b"GET / HTTP/1.1"), None);
        assert_eq!(Encoding::sniff(b""), None);
    }
}
