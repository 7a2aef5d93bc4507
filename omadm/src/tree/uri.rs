//! DM URIs (OMA-TS-DM_TND 1.2/1.3, "URI"): `./A/B`, `A/B` (relative to the root) and `.` (the root),
//! with `?prop=<Name>` and `?list=<Struct|StructData|TNDS>` queries and `%`-escaping in segments.
//! Limits follow `./DevDetail/URI/{MaxDepth,MaxTotLen,MaxSegLen}`; exceeding one is status 414.

use std::fmt;

use crate::status::StatusCode;

/// Limits a device advertises in `./DevDetail/URI`. `0` means "no limit", as in DevDetail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UriLimits {
    /// Maximum number of segments below the root.
    pub max_depth: usize,
    /// Maximum length of the whole URI as received (bytes).
    pub max_total_len: usize,
    /// Maximum length of one segment (bytes, after unescaping).
    pub max_segment_len: usize,
}

impl Default for UriLimits {
    fn default() -> Self {
        Self {
            max_depth: 16,
            max_total_len: 1024,
            max_segment_len: 128,
        }
    }
}

/// Why a URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("URI is empty")]
    Empty,
    #[error("URI `{0}` has an empty segment (`//` or a trailing `/`)")]
    EmptySegment(String),
    #[error("URI `{0}` has a `.` or `..` segment below the root")]
    DotSegment(String),
    #[error("URI `{0}` is not relative to the root (it starts with `/`)")]
    Absolute(String),
    #[error("URI `{uri}` has a bad `%` escape")]
    BadEscape { uri: String },
    #[error("URI `{uri}` has {depth} segments, more than the maximum {max}")]
    TooDeep {
        uri: String,
        depth: usize,
        max: usize,
    },
    #[error("URI is {len} bytes long, more than the maximum {max}")]
    TooLong { len: usize, max: usize },
    #[error("URI segment `{segment}` is {len} bytes long, more than the maximum {max}")]
    SegmentTooLong {
        segment: String,
        len: usize,
        max: usize,
    },
    #[error("URI query `{0}` is not `prop=<name>` or `list=<Struct|StructData|TNDS>`")]
    BadQuery(String),
    #[error("property `{0}` is not supported")]
    UnsupportedProperty(String),
}

impl UriError {
    /// The DM status a command with this URI gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooDeep { .. } | Self::TooLong { .. } | Self::SegmentTooLong { .. } => {
                StatusCode::URI_TOO_LONG
            }
            Self::UnsupportedProperty(_) => StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A node address: the segments below the root (empty for the root itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct DmUri {
    segments: Vec<String>,
}

/// A property named in `?prop=` (OMA-TS-DM_TND, "Properties of nodes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropName {
    Acl,
    Format,
    Name,
    Size,
    Title,
    TStamp,
    Type,
    VerNo,
}

impl PropName {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ACL" => Self::Acl,
            "Format" => Self::Format,
            "Name" => Self::Name,
            "Size" => Self::Size,
            "Title" => Self::Title,
            "TStamp" => Self::TStamp,
            "Type" => Self::Type,
            "VerNo" => Self::VerNo,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acl => "ACL",
            Self::Format => "Format",
            Self::Name => "Name",
            Self::Size => "Size",
            Self::Title => "Title",
            Self::TStamp => "TStamp",
            Self::Type => "Type",
            Self::VerNo => "VerNo",
        }
    }
}

/// The structure listing asked by `?list=` (DM 1.2 "Get with list").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// URIs of the node and all its descendants.
    Struct,
    /// The same, with the values of leaves.
    StructData,
    /// A TNDS object (DM 1.3); not supported by this engine (406).
    Tnds,
}

/// What follows `?` in a URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriQuery {
    Prop(PropName),
    List(ListKind),
}

/// A URI as a command targets it: the node and an optional query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub uri: DmUri,
    pub query: Option<UriQuery>,
}

impl Target {
    /// Parses a URI with an optional query, enforcing `limits`.
    pub fn parse(text: &str, limits: &UriLimits) -> Result<Self, UriError> {
        let (path, query) = match text.split_once('?') {
            Some((path, query)) => (path, Some(parse_query(query)?)),
            None => (text, None),
        };
        Ok(Self {
            uri: DmUri::parse(path, limits)?,
            query,
        })
    }
}

/// Checks only the limits of a URI as received, as [`Target::parse`] applies them (to the part
/// before any `?`): total length, each segment's length (unescaped, where the escape is valid),
/// depth. Whether the URI is well formed is not checked here.
pub fn check_limits(text: &str, limits: &UriLimits) -> Result<(), UriError> {
    let path = text.split_once('?').map_or(text, |(path, _)| path);
    if limits.max_total_len != 0 && path.len() > limits.max_total_len {
        return Err(UriError::TooLong {
            len: path.len(),
            max: limits.max_total_len,
        });
    }
    let rest = if path == "." {
        ""
    } else {
        path.strip_prefix("./").unwrap_or(path)
    };
    if rest.is_empty() {
        return Ok(());
    }
    let mut depth = 0;
    for raw in rest.split('/') {
        depth += 1;
        let segment = unescape(raw).unwrap_or_else(|| raw.to_owned());
        if limits.max_segment_len != 0 && segment.len() > limits.max_segment_len {
            return Err(UriError::SegmentTooLong {
                len: segment.len(),
                segment,
                max: limits.max_segment_len,
            });
        }
    }
    if limits.max_depth != 0 && depth > limits.max_depth {
        return Err(UriError::TooDeep {
            uri: path.to_owned(),
            depth,
            max: limits.max_depth,
        });
    }
    Ok(())
}

fn parse_query(query: &str) -> Result<UriQuery, UriError> {
    let bad = || UriError::BadQuery(query.to_owned());
    let (key, value) = query.split_once('=').ok_or_else(bad)?;
    match key {
        "prop" => PropName::parse(value)
            .map(UriQuery::Prop)
            .ok_or_else(|| UriError::UnsupportedProperty(value.to_owned())),
        "list" => match value {
            "Struct" => Ok(UriQuery::List(ListKind::Struct)),
            "StructData" => Ok(UriQuery::List(ListKind::StructData)),
            "TNDS" => Ok(UriQuery::List(ListKind::Tnds)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

impl DmUri {
    /// The root `.`.
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses a URI without query, enforcing `limits`.
    pub fn parse(text: &str, limits: &UriLimits) -> Result<Self, UriError> {
        if text.is_empty() {
            return Err(UriError::Empty);
        }
        if limits.max_total_len != 0 && text.len() > limits.max_total_len {
            return Err(UriError::TooLong {
                len: text.len(),
                max: limits.max_total_len,
            });
        }
        if text.starts_with('/') {
            return Err(UriError::Absolute(text.to_owned()));
        }
        // The root is `.`, never `./` (TND: a URI does not end with `/`).
        if text == "./" {
            return Err(UriError::EmptySegment(text.to_owned()));
        }
        let rest = if text == "." {
            ""
        } else if let Some(rest) = text.strip_prefix("./") {
            rest
        } else {
            text
        };
        let mut segments = Vec::new();
        if !rest.is_empty() {
            for raw in rest.split('/') {
                if raw.is_empty() {
                    return Err(UriError::EmptySegment(text.to_owned()));
                }
                if raw == "." || raw == ".." {
                    return Err(UriError::DotSegment(text.to_owned()));
                }
                let segment = unescape(raw).ok_or_else(|| UriError::BadEscape {
                    uri: text.to_owned(),
                })?;
                if limits.max_segment_len != 0 && segment.len() > limits.max_segment_len {
                    return Err(UriError::SegmentTooLong {
                        len: segment.len(),
                        segment,
                        max: limits.max_segment_len,
                    });
                }
                segments.push(segment);
            }
        }
        if limits.max_depth != 0 && segments.len() > limits.max_depth {
            return Err(UriError::TooDeep {
                uri: text.to_owned(),
                depth: segments.len(),
                max: limits.max_depth,
            });
        }
        Ok(Self { segments })
    }

    /// Builds a URI from already unescaped segments (no limit check; for code, not for input).
    pub fn from_segments<I, S>(segments: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            segments: segments.into_iter().map(Into::into).collect(),
        }
    }

    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    pub fn depth(&self) -> usize {
        self.segments.len()
    }

    /// The last segment (the node's Name); `None` for the root.
    pub fn name(&self) -> Option<&str> {
        self.segments.last().map(String::as_str)
    }

    /// The parent; `None` for the root.
    pub fn parent(&self) -> Option<Self> {
        let (_, parent) = self.segments.split_last()?;
        Some(Self {
            segments: parent.to_vec(),
        })
    }

    /// This URI with one more segment.
    pub fn child(&self, name: &str) -> Self {
        let mut segments = self.segments.clone();
        segments.push(name.to_owned());
        Self { segments }
    }

    /// True when `self` is `other` or below it.
    pub fn starts_with(&self, other: &DmUri) -> bool {
        self.segments.starts_with(&other.segments)
    }
}

impl fmt::Display for DmUri {
    /// The canonical form: `.` or `./A/B`, with reserved characters escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(".")?;
        for segment in &self.segments {
            f.write_str("/")?;
            f.write_str(&escape(segment))?;
        }
        Ok(())
    }
}

/// Escapes the characters that cannot appear raw in a segment: `/`, `?`, `%` and controls/space.
pub fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for ch in segment.chars() {
        if matches!(ch, '/' | '?' | '%' | ' ') || ch.is_control() {
            let mut buf = [0u8; 4];
            for byte in ch.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// Reverses [`escape`]; `None` for a malformed escape or a result that is not UTF-8.
pub fn unescape(raw: &str) -> Option<String> {
    if !raw.contains('%') {
        return Some(raw.to_owned());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<DmUri, UriError> {
        DmUri::parse(s, &UriLimits::default())
    }

    #[test]
    fn root_and_relative_forms_are_the_same_node() {
        assert!(parse(".").unwrap().is_root());
        assert_eq!(parse("./A/B").unwrap(), parse("A/B").unwrap());
        assert_eq!(parse("./A/B").unwrap().segments(), ["A", "B"]);
        assert_eq!(parse("A/B").unwrap().to_string(), "./A/B");
        assert_eq!(DmUri::root().to_string(), ".");
    }

    #[test]
    fn malformed_uris_are_refused_with_400() {
        for bad in [
            "", "./", "/A", "./A//B", "./A/", "./A/../B", "./A/./B", "A/./B", "./A%2",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad}: {err}");
        }
    }

    #[test]
    fn limits_give_414() {
        let limits = UriLimits {
            max_depth: 2,
            max_total_len: 20,
            max_segment_len: 4,
        };
        let deep = DmUri::parse("./A/B/C", &limits).unwrap_err();
        assert!(matches!(
            deep,
            UriError::TooDeep {
                depth: 3,
                max: 2,
                ..
            }
        ));
        assert_eq!(deep.status(), StatusCode::URI_TOO_LONG);
        let seg = DmUri::parse("./ABCDE", &limits).unwrap_err();
        assert!(matches!(seg, UriError::SegmentTooLong { len: 5, .. }));
        assert_eq!(seg.status(), StatusCode::URI_TOO_LONG);
        let long = DmUri::parse("./ABCD/ABCD/ABCD/ABCD", &limits).unwrap_err();
        assert!(matches!(long, UriError::TooLong { len: 21, max: 20 }));
        assert!(DmUri::parse("./ABCD/ABCD", &limits).is_ok());
        let unlimited = UriLimits {
            max_depth: 0,
            max_total_len: 0,
            max_segment_len: 0,
        };
        assert_eq!(
            DmUri::parse("./A/B/C/D/E/F/G/H", &unlimited)
                .unwrap()
                .depth(),
            8
        );
    }

    #[test]
    fn check_limits_agrees_with_parse_on_limits() {
        let limits = UriLimits {
            max_depth: 2,
            max_total_len: 20,
            max_segment_len: 4,
        };
        for uri in [
            ".",
            "./A",
            "A/B",
            "./A/B/C",
            "./ABCDE",
            "./ABCD/ABCD/ABCD/ABCD",
            "./AB%20/C",
            "./A?prop=ACL",
            "./A/B?list=Struct",
            "./A/B/C?prop=Name",
        ] {
            let parsed = Target::parse(uri, &limits).map(|_| ());
            let checked = check_limits(uri, &limits);
            assert_eq!(checked, parsed, "{uri}");
        }
        assert_eq!(
            check_limits("./A//B/C", &limits).map_err(|e| e.status()),
            Err(StatusCode::URI_TOO_LONG),
            "a malformed URI is measured too"
        );
        assert_eq!(
            check_limits("./A%2", &limits),
            Ok(()),
            "a bad escape is not a limit"
        );
    }

    #[test]
    fn escaping_round_trips() {
        let uri = DmUri::from_segments(["VM", "my vm/1?%"]);
        let text = uri.to_string();
        assert_eq!(text, "./VM/my%20vm%2F1%3F%25");
        assert_eq!(parse(&text).unwrap(), uri);
        assert_eq!(unescape("%C3%A9t%C3%A9").as_deref(), Some("été"));
        assert_eq!(unescape("%FF"), None);
    }

    #[test]
    fn queries_parse() {
        let limits = UriLimits::default();
        let t = Target::parse("./DevInfo?prop=ACL", &limits).unwrap();
        assert_eq!(t.uri.segments(), ["DevInfo"]);
        assert_eq!(t.query, Some(UriQuery::Prop(PropName::Acl)));
        let t = Target::parse(".?list=Struct", &limits).unwrap();
        assert!(t.uri.is_root());
        assert_eq!(t.query, Some(UriQuery::List(ListKind::Struct)));
        assert_eq!(
            Target::parse("./A?list=StructData", &limits).unwrap().query,
            Some(UriQuery::List(ListKind::StructData))
        );
        let colour = Target::parse("./A?prop=Colour", &limits).unwrap_err();
        assert_eq!(colour, UriError::UnsupportedProperty("Colour".into()));
        assert_eq!(colour.status(), StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED);
        assert!(Target::parse("./A?foo", &limits).is_err());
    }

    #[test]
    fn parent_child_name() {
        let uri = parse("./A/B").unwrap();
        assert_eq!(uri.name(), Some("B"));
        assert_eq!(uri.parent().unwrap(), parse("./A").unwrap());
        assert_eq!(parse("./A").unwrap().child("B"), uri);
        assert!(uri.starts_with(&parse("A").unwrap()));
        assert!(!parse("A").unwrap().starts_with(&uri));
        assert_eq!(DmUri::root().parent(), None);
    }
}
