//! Get: node values, interior child lists, `?prop=` and `?list=`.

use super::node::format_tstamp;
use super::uri::{ListKind, PropName, UriQuery};
use super::{AclCommand, DmTree, DmUri, Format, GetResult, Location, NodeView, Requester};
use crate::status::StatusCode;

impl DmTree {
    /// Get `target` (with optional `?prop=`/`?list=`) for `requester`.
    pub fn get(
        &self,
        requester: Requester<'_>,
        target: &str,
    ) -> Result<Vec<GetResult>, StatusCode> {
        let target = self.parse_target(target)?;
        let uri = &target.uri;
        let view = self.view(uri).ok_or(StatusCode::NOT_FOUND)?;
        self.check_rights(requester, AclCommand::Get, &view, uri)?;
        match target.query {
            None => Ok(vec![self.node_result(uri, &view, true)?]),
            Some(UriQuery::Prop(prop)) => {
                let value = self.prop_value(uri, &view, prop)?;
                Ok(vec![GetResult {
                    uri: format!("{uri}?prop={}", prop.as_str()),
                    format: Format::Chr,
                    mime_type: Some("text/plain".to_owned()),
                    data: Some(value.into_bytes()),
                }])
            }
            Some(UriQuery::List(ListKind::Tnds)) => Err(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED),
            Some(UriQuery::List(kind)) => {
                let mut results = Vec::new();
                self.list(
                    requester,
                    uri,
                    view,
                    kind == ListKind::StructData,
                    &mut results,
                )?;
                Ok(results)
            }
        }
    }

    /// The Results item for a node: a leaf's value, or an interior node's child list.
    fn node_result(
        &self,
        uri: &DmUri,
        view: &NodeView,
        with_data: bool,
    ) -> Result<GetResult, StatusCode> {
        let data = if view.interior {
            with_data
                .then(|| self.child_names(uri).map(|n| n.join("/").into_bytes()))
                .transpose()?
        } else if with_data {
            Some(self.leaf_value(uri)?)
        } else {
            None
        };
        Ok(GetResult {
            uri: uri.to_string(),
            format: view.format,
            mime_type: view.mime_type.clone(),
            data,
        })
    }

    pub(super) fn leaf_value(&self, uri: &DmUri) -> Result<Vec<u8>, StatusCode> {
        match self.locate(uri) {
            Location::Stored => self
                .device_read(uri)
                .map(<[u8]>::to_vec)
                .ok_or(StatusCode::NOT_FOUND),
            Location::Handler { mount, rel } => self
                .mounts
                .get(&mount)
                .ok_or(StatusCode::COMMAND_FAILED)?
                .get(&rel),
        }
    }

    /// `?list=Struct[Data]`: the node and its descendants, pre-order, skipping nodes the
    /// requester may not Get (their descendants are still listed when allowed).
    fn list(
        &self,
        requester: Requester<'_>,
        uri: &DmUri,
        view: NodeView,
        with_data: bool,
        out: &mut Vec<GetResult>,
    ) -> Result<(), StatusCode> {
        let readable = view.access.contains(super::AccessTypes::GET)
            && self.check_acl(requester, AclCommand::Get, uri).is_ok();
        if readable {
            let leaf_data = with_data && !view.interior;
            out.push(self.node_result(uri, &view, leaf_data)?);
        }
        if view.interior {
            for name in self.child_names(uri)? {
                let child = uri.child(&name);
                if let Some(child_view) = self.view(&child) {
                    self.list(requester, &child, child_view, with_data, out)?;
                }
            }
        }
        Ok(())
    }

    fn prop_value(
        &self,
        uri: &DmUri,
        view: &NodeView,
        prop: PropName,
    ) -> Result<String, StatusCode> {
        let stored = view.stored.as_ref();
        Ok(match prop {
            PropName::Acl => view.acl.to_string(),
            PropName::Format => view.format.as_str().to_owned(),
            PropName::Type => view.mime_type.clone().unwrap_or_default(),
            PropName::Name => uri.name().unwrap_or(".").to_owned(),
            PropName::Size if view.interior => {
                return Err(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED)
            }
            PropName::Size => match stored {
                Some(meta) => meta.size.to_string(),
                None => self.leaf_value(uri)?.len().to_string(),
            },
            PropName::Title => stored
                .ok_or(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED)?
                .title
                .clone()
                .unwrap_or_default(),
            PropName::TStamp => format_tstamp(
                stored
                    .ok_or(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED)?
                    .tstamp,
            ),
            PropName::VerNo => stored
                .ok_or(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED)?
                .verno
                .to_string(),
        })
    }
}
