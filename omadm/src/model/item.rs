//! `<Item>`, `<Target>`, `<Source>`.

use super::{Data, Meta};

/// `<Target>` or `<Source>`: `<LocURI>` and an optional `<LocName>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// `<LocURI>`: a DM tree URI (`./DevInfo/DevId`) or a server/device address.
    pub loc_uri: String,
    /// `<LocName>`: a display name (in `SyncHdr/Source` the user name for authentication).
    pub loc_name: Option<String>,
}

impl Location {
    /// A location with only `<LocURI>`.
    pub fn uri(loc_uri: impl Into<String>) -> Self {
        Self {
            loc_uri: loc_uri.into(),
            loc_name: None,
        }
    }

    /// Adds `<LocName>`.
    pub fn with_name(mut self, loc_name: impl Into<String>) -> Self {
        self.loc_name = Some(loc_name.into());
        self
    }
}

/// `<Item>`: the unit a command acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Item {
    pub target: Option<Location>,
    pub source: Option<Location>,
    pub meta: Option<Meta>,
    pub data: Option<Data>,
    /// `<MoreData/>`: this item is a chunk of a large object and more chunks follow.
    pub more_data: bool,
}

impl Item {
    /// An item addressing `target_uri` (e.g. for Get, Delete, Exec without data).
    pub fn target(target_uri: impl Into<String>) -> Self {
        Self {
            target: Some(Location::uri(target_uri)),
            ..Self::default()
        }
    }

    /// An item sourced from `source_uri` (e.g. for Results, Replace from the client).
    pub fn source(source_uri: impl Into<String>) -> Self {
        Self {
            source: Some(Location::uri(source_uri)),
            ..Self::default()
        }
    }

    /// Sets `<Data>`.
    pub fn with_data(mut self, data: impl Into<Data>) -> Self {
        self.data = Some(data.into());
        self
    }

    /// Sets `<Meta>`.
    pub fn with_meta(mut self, meta: Meta) -> Self {
        self.meta = Some(meta);
        self
    }

    /// Sets `<Source>` (keeping the target).
    pub fn with_source(mut self, source_uri: impl Into<String>) -> Self {
        self.source = Some(Location::uri(source_uri));
        self
    }

    /// Sets `<Target>` (keeping the source).
    pub fn with_target(mut self, target_uri: impl Into<String>) -> Self {
        self.target = Some(Location::uri(target_uri));
        self
    }

    /// Sets `<MoreData/>`.
    pub fn with_more_data(mut self, more_data: bool) -> Self {
        self.more_data = more_data;
        self
    }

    /// The target URI, if any.
    pub fn target_uri(&self) -> Option<&str> {
        self.target.as_ref().map(|loc| loc.loc_uri.as_str())
    }

    /// The source URI, if any.
    pub fn source_uri(&self) -> Option<&str> {
        self.source.as_ref().map(|loc| loc.loc_uri.as_str())
    }
}
