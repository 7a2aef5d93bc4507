//! Stored nodes and their properties (OMA-TS-DM_TND, "Nodes" and "Properties of nodes").

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::acl::{Acl, AclCommand};

/// The `Format` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Chr,
    Int,
    Bool,
    Bin,
    Node,
    B64,
    Xml,
    Date,
    Time,
    Float,
    Null,
}

/// Why a value does not fit its format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("value is not valid `{format}` data: {reason}")]
pub struct ValueError {
    pub format: &'static str,
    pub reason: &'static str,
}

impl Format {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "chr" => Self::Chr,
            "int" => Self::Int,
            "bool" => Self::Bool,
            "bin" => Self::Bin,
            "node" => Self::Node,
            "b64" => Self::B64,
            "xml" => Self::Xml,
            "date" => Self::Date,
            "time" => Self::Time,
            "float" => Self::Float,
            "null" => Self::Null,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chr => "chr",
            Self::Int => "int",
            Self::Bool => "bool",
            Self::Bin => "bin",
            Self::Node => "node",
            Self::B64 => "b64",
            Self::Xml => "xml",
            Self::Date => "date",
            Self::Time => "time",
            Self::Float => "float",
            Self::Null => "null",
        }
    }

    /// Checks that `data` is a valid value of this format (leaf formats only).
    pub fn validate(self, data: &[u8]) -> Result<(), ValueError> {
        let err = |reason| {
            Err(ValueError {
                format: self.as_str(),
                reason,
            })
        };
        let text = || std::str::from_utf8(data).ok();
        match self {
            Self::Bin => Ok(()),
            Self::Node => err("an interior node has no value"),
            Self::Null => {
                if data.is_empty() {
                    Ok(())
                } else {
                    err("null carries no data")
                }
            }
            Self::Chr | Self::Xml => text().map(|_| ()).ok_or(ValueError {
                format: self.as_str(),
                reason: "not UTF-8",
            }),
            Self::Int => match text().map(str::parse::<i64>) {
                Some(Ok(_)) => Ok(()),
                _ => err("not a decimal integer"),
            },
            Self::Bool => match text() {
                Some("true" | "false") => Ok(()),
                _ => err("not `true` or `false`"),
            },
            Self::Float => match text().map(str::parse::<f64>) {
                Some(Ok(v)) if v.is_finite() => Ok(()),
                _ => err("not a finite decimal number"),
            },
            Self::B64 => {
                let trimmed: Vec<u8> = data
                    .iter()
                    .copied()
                    .filter(|b| !b.is_ascii_whitespace())
                    .collect();
                match base64::engine::general_purpose::STANDARD.decode(trimmed) {
                    Ok(_) => Ok(()),
                    Err(_) => err("not base64"),
                }
            }
            Self::Date => match text() {
                Some(t) if is_iso_date(t) => Ok(()),
                _ => err("not an ISO 8601 date (YYYY-MM-DD)"),
            },
            Self::Time => match text() {
                Some(t) if is_iso_time(t) => Ok(()),
                _ => err("not an ISO 8601 time (hh:mm:ss[Z])"),
            },
        }
    }
}

fn digits(s: &str, n: usize) -> Option<u32> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn is_iso_date(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    matches!(
        (
            parts.first().and_then(|y| digits(y, 4)),
            parts.get(1).and_then(|m| digits(m, 2)),
            parts.get(2).and_then(|d| digits(d, 2)),
            parts.len()
        ),
        (Some(_), Some(1..=12), Some(1..=31), 3)
    )
}

fn is_iso_time(t: &str) -> bool {
    let t = t.strip_suffix('Z').unwrap_or(t);
    let parts: Vec<&str> = t.split(':').collect();
    matches!(
        (
            parts.first().and_then(|h| digits(h, 2)),
            parts.get(1).and_then(|m| digits(m, 2)),
            parts.get(2).and_then(|s| digits(s, 2)),
            parts.len()
        ),
        (Some(0..=23), Some(0..=59), Some(0..=60), 3)
    )
}

/// The commands a node's description allows (the DDF `AccessType`), whatever the ACL says.
/// A command outside it is refused with 405.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTypes(u8);

impl AccessTypes {
    pub const NONE: Self = Self(0);
    pub const ADD: Self = Self(1);
    pub const DELETE: Self = Self(2);
    pub const EXEC: Self = Self(4);
    pub const GET: Self = Self(8);
    pub const REPLACE: Self = Self(16);
    pub const COPY: Self = Self(32);
    /// Add, Copy, Delete, Get, Replace (not Exec): the default for stored nodes.
    pub const STORED: Self = Self(1 | 2 | 8 | 16 | 32);
    pub const ALL: Self = Self(63);

    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The access type a DM command needs.
    pub fn for_command(command: AclCommand) -> Self {
        match command {
            AclCommand::Add => Self::ADD,
            AclCommand::Delete => Self::DELETE,
            AclCommand::Exec => Self::EXEC,
            AclCommand::Get => Self::GET,
            AclCommand::Replace => Self::REPLACE,
        }
    }
}

/// Whether a node can be deleted by a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Created by the device; Delete is refused (405), and so is renaming.
    Permanent,
    /// Created by a server (or the device) and deletable.
    Dynamic,
}

/// The stored properties of a node (Name and Size are derived, not stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeProps {
    /// Empty: inherits the parent's ACL.
    pub acl: Acl,
    pub format: Format,
    /// The `Type` property (a MIME type for leaves, a DDF URN for interior nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Last change, seconds since the Unix epoch.
    pub tstamp: u64,
    /// Incremented (wrapping) on each change of the node.
    pub verno: u16,
}

/// A stored node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub props: NodeProps,
    pub scope: Scope,
    pub access: AccessTypes,
    pub body: NodeBody,
}

/// Leaf data or interior children.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeBody {
    Interior(BTreeMap<String, Node>),
    Leaf(#[serde(with = "b64_bytes")] Vec<u8>),
}

impl Node {
    pub fn interior(scope: Scope, now: u64) -> Self {
        Self {
            props: NodeProps {
                acl: Acl::inherit(),
                format: Format::Node,
                mime_type: None,
                title: None,
                tstamp: now,
                verno: 0,
            },
            scope,
            access: AccessTypes::STORED,
            body: NodeBody::Interior(BTreeMap::new()),
        }
    }

    pub fn leaf(scope: Scope, format: Format, value: Vec<u8>, now: u64) -> Self {
        Self {
            props: NodeProps {
                acl: Acl::inherit(),
                format,
                mime_type: Some("text/plain".to_owned()),
                title: None,
                tstamp: now,
                verno: 0,
            },
            scope,
            access: AccessTypes::STORED,
            body: NodeBody::Leaf(value),
        }
    }

    pub fn is_interior(&self) -> bool {
        matches!(self.body, NodeBody::Interior(_))
    }

    pub fn children(&self) -> Option<&BTreeMap<String, Node>> {
        match &self.body {
            NodeBody::Interior(children) => Some(children),
            NodeBody::Leaf(_) => None,
        }
    }

    pub fn children_mut(&mut self) -> Option<&mut BTreeMap<String, Node>> {
        match &mut self.body {
            NodeBody::Interior(children) => Some(children),
            NodeBody::Leaf(_) => None,
        }
    }

    /// The `Size` property: bytes of a leaf's value, 0 for an interior node.
    pub fn size(&self) -> usize {
        match &self.body {
            NodeBody::Leaf(value) => value.len(),
            NodeBody::Interior(_) => 0,
        }
    }

    /// Total bytes of leaf values in this subtree.
    pub fn stored_bytes(&self) -> usize {
        match &self.body {
            NodeBody::Leaf(value) => value.len(),
            NodeBody::Interior(children) => children.values().map(Node::stored_bytes).sum(),
        }
    }

    /// Records a change: new TStamp, VerNo + 1 (wrapping at 65535 → 0).
    pub fn touch(&mut self, now: u64) {
        self.props.tstamp = now;
        self.props.verno = self.props.verno.wrapping_add(1);
    }

    pub fn with_acl(mut self, acl: Acl) -> Self {
        self.props.acl = acl;
        self
    }

    pub fn with_access(mut self, access: AccessTypes) -> Self {
        self.access = access;
        self
    }
}

/// Formats Unix seconds as the DM `TStamp` (ISO 8601 basic, UTC): `YYYYMMDDThhmmssZ`.
pub fn format_tstamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

mod b64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in [
            Format::Chr,
            Format::Int,
            Format::Bool,
            Format::Bin,
            Format::Node,
            Format::B64,
            Format::Xml,
            Format::Date,
            Format::Time,
            Format::Float,
            Format::Null,
        ] {
            assert_eq!(Format::parse(f.as_str()), Some(f));
        }
        assert_eq!(Format::parse("string"), None);
    }

    #[test]
    fn values_are_validated_per_format() {
        assert!(Format::Int.validate(b"-42").is_ok());
        assert!(Format::Int.validate(b"4x").is_err());
        assert!(Format::Int.validate(b"").is_err());
        assert!(Format::Bool.validate(b"true").is_ok());
        assert!(Format::Bool.validate(b"yes").is_err());
        assert!(Format::Chr.validate("été".as_bytes()).is_ok());
        assert!(Format::Chr.validate(&[0xff]).is_err());
        assert!(Format::B64.validate(b"aGVsbG8=").is_ok());
        assert!(Format::B64.validate(b"a$").is_err());
        assert!(Format::Float.validate(b"1.5e3").is_ok());
        assert!(Format::Float.validate(b"NaN").is_err());
        assert!(Format::Date.validate(b"2026-11-25").is_ok());
        assert!(Format::Date.validate(b"2026-13-25").is_err());
        assert!(Format::Time.validate(b"23:59:59Z").is_ok());
        assert!(Format::Time.validate(b"24:00:00").is_err());
        assert!(Format::Null.validate(b"").is_ok());
        assert!(Format::Null.validate(b"x").is_err());
        assert!(Format::Bin.validate(&[0, 255]).is_ok());
        assert!(Format::Node.validate(b"").is_err());
    }

    #[test]
    fn tstamp_is_iso8601_basic_utc() {
        assert_eq!(format_tstamp(0), "19700101T000000Z");
        assert_eq!(format_tstamp(951_782_400), "20000229T000000Z");
        assert_eq!(format_tstamp(1_764_115_200 + 3_723), "20251126T010203Z");
    }

    #[test]
    fn verno_wraps() {
        let mut node = Node::leaf(Scope::Dynamic, Format::Chr, vec![], 0);
        node.props.verno = u16::MAX;
        node.touch(7);
        assert_eq!(node.props.verno, 0);
        assert_eq!(node.props.tstamp, 7);
    }

    #[test]
    fn access_types() {
        assert!(AccessTypes::STORED.contains(AccessTypes::GET));
        assert!(!AccessTypes::STORED.contains(AccessTypes::EXEC));
        assert!(AccessTypes::ALL.contains(AccessTypes::EXEC.union(AccessTypes::COPY)));
        assert_eq!(
            AccessTypes::for_command(AclCommand::Exec),
            AccessTypes::EXEC
        );
    }

    #[test]
    fn stored_bytes_and_serde() {
        let mut root = Node::interior(Scope::Permanent, 1);
        root.children_mut().unwrap().insert(
            "a".into(),
            Node::leaf(Scope::Dynamic, Format::Bin, vec![1, 2, 3], 1),
        );
        assert_eq!(root.stored_bytes(), 3);
        let json = serde_json::to_string(&root).unwrap();
        assert!(
            json.contains("AQID"),
            "leaf values are base64 in JSON: {json}"
        );
        assert_eq!(serde_json::from_str::<Node>(&json).unwrap(), root);
    }
}
