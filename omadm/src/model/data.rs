//! `<Data>` content: text (XML PCDATA, WBXML `STR_I`/`STR_T`) or opaque bytes (WBXML `OPAQUE`).

use std::borrow::Cow;
use std::fmt;

/// The content of a `<Data>` element (also used for `<NextNonce>`).
///
/// The variant records how the content was carried; equality compares the content bytes only, so
/// `Data::Text("abc")` equals `Data::Opaque(b"abc")` (an XML message and its WBXML twin, where an
/// encoder chose `OPAQUE` for the same bytes, are the same message).
#[derive(Clone)]
pub enum Data {
    /// Character data (UTF-8).
    Text(String),
    /// Raw bytes: WBXML `OPAQUE`, e.g. a value of format `bin`. Only representable in XML when the
    /// bytes are valid UTF-8 (XML carries binary values as format `b64` text instead).
    Opaque(Vec<u8>),
}

impl Data {
    /// Character data.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text(text.into())
    }

    /// Raw bytes (WBXML `OPAQUE`).
    pub fn opaque(bytes: impl Into<Vec<u8>>) -> Self {
        Self::Opaque(bytes.into())
    }

    /// The content bytes, whatever the variant.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Text(text) => text.as_bytes(),
            Self::Opaque(bytes) => bytes,
        }
    }

    /// The content as text: `None` when it is opaque bytes that are not UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text),
            Self::Opaque(bytes) => std::str::from_utf8(bytes).ok(),
        }
    }

    /// The content as text, with invalid UTF-8 replaced (for display and logs).
    pub fn to_string_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }

    /// Whether the content is empty.
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }
}

impl PartialEq for Data {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Data {}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(text) => f.debug_tuple("Text").field(text).finish(),
            Self::Opaque(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => f.debug_tuple("Opaque").field(&text).finish(),
                Err(_) => f.debug_tuple("Opaque").field(bytes).finish(),
            },
        }
    }
}

impl From<&str> for Data {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<String> for Data {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<Vec<u8>> for Data {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Opaque(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_compares_content_bytes_across_variants() {
        assert_eq!(Data::text("abc"), Data::opaque(b"abc".to_vec()));
        assert_ne!(Data::text("abc"), Data::text("abd"));
    }

    #[test]
    fn as_str_rejects_non_utf8_opaque() {
        assert_eq!(Data::opaque(vec![0xff, 0x00]).as_str(), None);
        assert_eq!(Data::opaque(b"ok".to_vec()).as_str(), Some("ok"));
        assert_eq!(Data::opaque(vec![0xff]).to_string_lossy(), "\u{fffd}");
    }
}
