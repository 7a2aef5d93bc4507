//! Add, Replace (values and `?prop=ACL|Name|Title`), Delete, Copy and Exec.

use super::uri::{PropName, UriQuery};
use super::{
    AccessTypes, Acl, AclCommand, DmTree, DmUri, ExecRequest, Format, Item, Location, Node,
    NodeBody, Requester, Scope,
};
use crate::status::StatusCode;

/// Formats whose empty value is valid, so an Add without Data can create them.
fn empty_is_valid(format: Format) -> bool {
    format.validate(&[]).is_ok()
}

impl DmTree {
    /// Checks a value's size against Meta Size (424) and the leaf cap (413).
    fn check_size(&self, data: &[u8], declared: Option<u64>) -> Result<(), StatusCode> {
        if declared.is_some_and(|size| size != data.len() as u64) {
            return Err(StatusCode::SIZE_MISMATCH);
        }
        if data.len() > self.limits.max_leaf_size {
            return Err(StatusCode::REQUEST_ENTITY_TOO_LARGE);
        }
        Ok(())
    }

    /// Early check of a large object's announced Meta Size (first chunk): 413 when a leaf may not
    /// be that big, 420 when the stored values have no room for it.
    pub fn accepts_size(&self, declared_size: u64) -> Result<(), StatusCode> {
        let size =
            usize::try_from(declared_size).map_err(|_| StatusCode::REQUEST_ENTITY_TOO_LARGE)?;
        if size > self.limits.max_leaf_size {
            return Err(StatusCode::REQUEST_ENTITY_TOO_LARGE);
        }
        self.check_room(size, 0)
    }

    /// 420 when storing `added` more bytes (and dropping `removed`) exceeds the cap.
    fn check_room(&self, added: usize, removed: usize) -> Result<(), StatusCode> {
        let total = self
            .stored_bytes
            .saturating_sub(removed)
            .saturating_add(added);
        if total > self.limits.max_stored_bytes {
            Err(StatusCode::DEVICE_FULL)
        } else {
            Ok(())
        }
    }

    /// Add `target` with `item`. Missing interior parents of a stored node are created.
    pub fn add(
        &mut self,
        requester: Requester<'_>,
        target: &str,
        item: &Item,
    ) -> Result<StatusCode, StatusCode> {
        let uri = self.parse_plain_target(target)?;
        if self.view(&uri).is_some() {
            return Err(StatusCode::ALREADY_EXISTS);
        }
        let format = item.format.unwrap_or(Format::Chr);
        let data: &[u8] = match (&item.data, format) {
            (Some(data), Format::Node) if !data.is_empty() => return Err(StatusCode::BAD_REQUEST),
            (Some(data), _) => data,
            (None, Format::Node) => &[],
            (None, f) if empty_is_valid(f) => &[],
            (None, _) => return Err(StatusCode::INCOMPLETE_COMMAND),
        };
        if format != Format::Node {
            self.check_size(data, item.declared_size)?;
            format.validate(data).map_err(|_| StatusCode::BAD_REQUEST)?;
        }
        // The nearest existing ancestor must be interior and grant Add.
        let mut missing = vec![uri.clone()];
        let mut ancestor = uri.parent().ok_or(StatusCode::ALREADY_EXISTS)?;
        let ancestor_view = loop {
            if let Some(view) = self.view(&ancestor) {
                break view;
            }
            missing.push(ancestor.clone());
            ancestor = ancestor.parent().ok_or(StatusCode::NOT_FOUND)?;
        };
        if !ancestor_view.interior {
            return Err(StatusCode::COMMAND_NOT_ALLOWED);
        }
        self.check_rights(requester, AclCommand::Add, &ancestor_view, &ancestor)?;
        match self.locate(&uri) {
            Location::Handler { mount, rel } => {
                if missing.len() > 1 {
                    return Err(StatusCode::NOT_FOUND);
                }
                self.with_handler(&mount, |h| h.add(&rel, format, data))?;
            }
            Location::Stored => {
                if format != Format::Node {
                    self.check_room(data.len(), 0)?;
                }
                self.add_stored(requester, &ancestor, missing, format, item, data)?;
            }
        }
        Ok(StatusCode::OK)
    }

    fn add_stored(
        &mut self,
        requester: Requester<'_>,
        ancestor: &DmUri,
        missing: Vec<DmUri>,
        format: Format,
        item: &Item,
        data: &[u8],
    ) -> Result<(), StatusCode> {
        let now = self.now();
        let mut new_node = if format == Format::Node {
            Node::interior(Scope::Dynamic, now)
        } else {
            Node::leaf(Scope::Dynamic, format, data.to_vec(), now)
        };
        if item.mime_type.is_some() {
            new_node.props.mime_type.clone_from(&item.mime_type);
        }
        // Build the chain of missing parents, innermost first.
        let mut subtree = new_node;
        let mut names = missing
            .iter()
            .map(|u| u.name().unwrap_or_default().to_owned());
        let mut name = names.next().unwrap_or_default();
        for parent_name in names {
            let mut parent = Node::interior(Scope::Dynamic, now);
            if let Some(children) = parent.children_mut() {
                children.insert(name, subtree);
            }
            subtree = parent;
            name = parent_name;
        }
        // The creating server keeps control of what it created.
        let top_uri = ancestor.child(&name);
        if let Requester::Server(id) = requester {
            let inherited = self.effective_acl(ancestor);
            let full = [
                AclCommand::Add,
                AclCommand::Delete,
                AclCommand::Get,
                AclCommand::Replace,
            ];
            if !full.iter().all(|cmd| inherited.allows(*cmd, id)) {
                subtree.props.acl = full
                    .iter()
                    .fold(Acl::inherit(), |acl, cmd| acl.grant(*cmd, id));
            }
        }
        let added = subtree.stored_bytes();
        let parent = self.stored_mut(ancestor).ok_or(StatusCode::NOT_FOUND)?;
        parent
            .children_mut()
            .ok_or(StatusCode::COMMAND_NOT_ALLOWED)?
            .insert(name, subtree);
        parent.touch(now);
        self.account_bytes(added, 0);
        debug_assert!(self.stored(&top_uri).is_some());
        Ok(())
    }

    /// Replace `target`'s value, or a property with `?prop=ACL|Name|Title`.
    pub fn replace(
        &mut self,
        requester: Requester<'_>,
        target: &str,
        item: &Item,
    ) -> Result<StatusCode, StatusCode> {
        let target = self.parse_target(target)?;
        let uri = target.uri;
        let view = self.view(&uri).ok_or(StatusCode::NOT_FOUND)?;
        let data = item.data.as_deref().ok_or(StatusCode::INCOMPLETE_COMMAND)?;
        match target.query {
            None => {}
            Some(UriQuery::Prop(prop)) => return self.replace_prop(requester, &uri, prop, data),
            Some(UriQuery::List(_)) => return Err(StatusCode::COMMAND_NOT_ALLOWED),
        }
        if view.interior {
            return Err(StatusCode::COMMAND_NOT_ALLOWED);
        }
        self.check_rights(requester, AclCommand::Replace, &view, &uri)?;
        let format = match item.format {
            None => view.format,
            Some(f) if f == view.format => f,
            Some(Format::Node) => return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            Some(f) if view.scope == Scope::Dynamic && view.stored.is_some() => f,
            Some(_) => return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE),
        };
        self.check_size(data, item.declared_size)?;
        format.validate(data).map_err(|_| StatusCode::BAD_REQUEST)?;
        match self.locate(&uri) {
            Location::Handler { mount, rel } => {
                self.with_handler(&mount, |h| h.replace(&rel, data))?;
            }
            Location::Stored => {
                let old = view.stored.as_ref().map_or(0, |m| m.size);
                self.check_room(data.len(), old)?;
                let now = self.now();
                let node = self.stored_mut(&uri).ok_or(StatusCode::NOT_FOUND)?;
                node.body = NodeBody::Leaf(data.to_vec());
                node.props.format = format;
                if item.mime_type.is_some() {
                    node.props.mime_type.clone_from(&item.mime_type);
                }
                node.touch(now);
                self.account_bytes(data.len(), old);
            }
        }
        Ok(StatusCode::OK)
    }

    fn replace_prop(
        &mut self,
        requester: Requester<'_>,
        uri: &DmUri,
        prop: PropName,
        data: &[u8],
    ) -> Result<StatusCode, StatusCode> {
        if self.stored(uri).is_none() || !matches!(self.locate(uri), Location::Stored) {
            // Handler-backed nodes keep their own properties.
            return Err(StatusCode::COMMAND_NOT_ALLOWED);
        }
        let text = std::str::from_utf8(data).map_err(|_| StatusCode::BAD_REQUEST)?;
        let now = self.now();
        match prop {
            PropName::Acl => {
                // TND 1.2 "Changing the ACL": Replace rights on the parent always allow it; Replace
                // rights on the node itself allow it only for an interior node.
                let is_interior = self.stored(uri).is_some_and(Node::is_interior);
                let by_parent = uri
                    .parent()
                    .is_some_and(|p| self.check_acl(requester, AclCommand::Replace, &p).is_ok());
                if !by_parent && !is_interior {
                    return Err(StatusCode::PERMISSION_DENIED);
                }
                if !by_parent {
                    self.check_acl(requester, AclCommand::Replace, uri)?;
                }
                let acl: Acl = text.parse().map_err(|_| StatusCode::BAD_REQUEST)?;
                if uri.is_root() {
                    if acl.is_empty() {
                        return Err(StatusCode::BAD_REQUEST);
                    }
                    // The root keeps `Add=*` so any authenticated server can extend the tree.
                    if acl.grantees(AclCommand::Add) != Some(&super::acl::Grantees::Everyone) {
                        return Err(StatusCode::COMMAND_NOT_ALLOWED);
                    }
                }
                let node = self.stored_mut(uri).ok_or(StatusCode::NOT_FOUND)?;
                node.props.acl = acl;
                node.touch(now);
            }
            PropName::Title => {
                self.check_acl(requester, AclCommand::Replace, uri)?;
                let node = self.stored_mut(uri).ok_or(StatusCode::NOT_FOUND)?;
                node.props.title = Some(text.to_owned());
                node.touch(now);
            }
            PropName::Name => self.rename(requester, uri, text)?,
            _ => return Err(StatusCode::COMMAND_NOT_ALLOWED),
        }
        Ok(StatusCode::OK)
    }

    fn rename(
        &mut self,
        requester: Requester<'_>,
        uri: &DmUri,
        name: &str,
    ) -> Result<(), StatusCode> {
        let parent = uri.parent().ok_or(StatusCode::COMMAND_NOT_ALLOWED)?;
        let node = self.stored(uri).ok_or(StatusCode::NOT_FOUND)?;
        if node.scope == Scope::Permanent || self.mounts.keys().any(|m| m.starts_with(uri)) {
            return Err(StatusCode::COMMAND_NOT_ALLOWED);
        }
        self.check_acl(requester, AclCommand::Replace, uri)?;
        let new_uri =
            DmUri::parse(&format!("{parent}/{name}"), &self.limits.uri).map_err(|e| e.status())?;
        if new_uri.parent().as_ref() != Some(&parent) {
            return Err(StatusCode::BAD_REQUEST);
        }
        if self.view(&new_uri).is_some() {
            return Err(StatusCode::ALREADY_EXISTS);
        }
        let now = self.now();
        let old_name = uri
            .name()
            .ok_or(StatusCode::COMMAND_NOT_ALLOWED)?
            .to_owned();
        let parent_node = self.stored_mut(&parent).ok_or(StatusCode::NOT_FOUND)?;
        let children = parent_node
            .children_mut()
            .ok_or(StatusCode::COMMAND_FAILED)?;
        let mut node = children.remove(&old_name).ok_or(StatusCode::NOT_FOUND)?;
        node.touch(now);
        children.insert(name.to_owned(), node);
        parent_node.touch(now);
        Ok(())
    }

    /// Delete `target` and its subtree.
    pub fn delete(
        &mut self,
        requester: Requester<'_>,
        target: &str,
    ) -> Result<StatusCode, StatusCode> {
        let uri = self.parse_plain_target(target)?;
        let parent = uri.parent().ok_or(StatusCode::COMMAND_NOT_ALLOWED)?;
        let view = self.view(&uri).ok_or(StatusCode::NOT_FOUND)?;
        if view.scope == Scope::Permanent {
            return Err(StatusCode::COMMAND_NOT_ALLOWED);
        }
        self.check_rights(requester, AclCommand::Delete, &view, &uri)?;
        match self.locate(&uri) {
            Location::Handler { mount, rel } => {
                self.with_handler(&mount, |h| h.delete(&rel))?;
            }
            Location::Stored => {
                let node = self.stored(&uri).ok_or(StatusCode::NOT_FOUND)?;
                if has_permanent_descendant(node) || self.mounts.keys().any(|m| m.starts_with(&uri))
                {
                    return Err(StatusCode::COMMAND_NOT_ALLOWED);
                }
                let now = self.now();
                let name = uri.name().ok_or(StatusCode::COMMAND_NOT_ALLOWED)?;
                let parent_node = self.stored_mut(&parent).ok_or(StatusCode::NOT_FOUND)?;
                let removed = parent_node
                    .children_mut()
                    .ok_or(StatusCode::COMMAND_FAILED)?
                    .remove(name);
                parent_node.touch(now);
                self.account_bytes(0, removed.map_or(0, |node| node.stored_bytes()));
            }
        }
        Ok(StatusCode::OK)
    }

    /// Copy `source` to `target`: Get rights on the source; the target is added (Add rights on its
    /// parent) or, when it exists, replaced. Interior nodes are copied between stored subtrees only.
    pub fn copy(
        &mut self,
        requester: Requester<'_>,
        source: &str,
        target: &str,
    ) -> Result<StatusCode, StatusCode> {
        let source = self.parse_target(source)?;
        let destination = self.parse_target(target)?;
        if source.query.is_some() || destination.query.is_some() {
            return Err(StatusCode::COMMAND_NOT_ALLOWED);
        }
        let view = self.view(&source.uri).ok_or(StatusCode::NOT_FOUND)?;
        // Copying reads the value: a node that cannot be read (e.g. a secret) cannot be copied.
        if !view.access.contains(AccessTypes::GET) {
            return Err(StatusCode::COMMAND_NOT_ALLOWED);
        }
        self.check_acl(requester, AclCommand::Get, &source.uri)?;
        if destination.uri.starts_with(&source.uri) {
            return Err(StatusCode::BAD_REQUEST);
        }
        if view.interior {
            return self.copy_stored_subtree(requester, &source.uri, &destination.uri, target);
        }
        let item = Item {
            format: Some(view.format),
            mime_type: view.mime_type.clone(),
            data: Some(self.leaf_value(&source.uri)?),
            declared_size: None,
        };
        if self.view(&destination.uri).is_some() {
            self.replace(requester, target, &item)
        } else {
            self.add(requester, target, &item)
        }
    }

    fn copy_stored_subtree(
        &mut self,
        requester: Requester<'_>,
        source: &DmUri,
        destination: &DmUri,
        target_text: &str,
    ) -> Result<StatusCode, StatusCode> {
        let (Location::Stored, Location::Stored) = (self.locate(source), self.locate(destination))
        else {
            return Err(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED);
        };
        if self.is_mount(source) {
            return Err(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED);
        }
        let mut copy = self.stored(source).cloned().ok_or(StatusCode::NOT_FOUND)?;
        self.check_room(copy.stored_bytes(), 0)?;
        // Create the destination as an interior node through the normal Add path (ACL, 418).
        self.add(requester, target_text, &Item::interior())?;
        let now = self.now();
        make_dynamic(&mut copy, now);
        let node = self
            .stored_mut(destination)
            .ok_or(StatusCode::COMMAND_FAILED)?;
        copy.props.acl = std::mem::take(&mut node.props.acl);
        let added = copy.stored_bytes();
        *node = copy;
        self.account_bytes(added, 0);
        Ok(StatusCode::OK)
    }

    /// Exec `target` with optional data and correlator; 202 when the handler runs it async.
    pub fn exec(
        &mut self,
        requester: Requester<'_>,
        target: &str,
        data: Option<&[u8]>,
        correlator: Option<&str>,
    ) -> StatusCode {
        self.exec_inner(requester, target, data, correlator)
            .unwrap_or_else(|status| status)
    }

    fn exec_inner(
        &mut self,
        requester: Requester<'_>,
        target: &str,
        data: Option<&[u8]>,
        correlator: Option<&str>,
    ) -> Result<StatusCode, StatusCode> {
        let uri = self.parse_plain_target(target)?;
        let view = self.view(&uri).ok_or(StatusCode::NOT_FOUND)?;
        self.check_rights(requester, AclCommand::Exec, &view, &uri)?;
        if let Some(data) = data {
            self.check_size(data, None)?;
        }
        let Location::Handler { mount, rel } = self.locate(&uri) else {
            return Err(StatusCode::COMMAND_NOT_ALLOWED);
        };
        let request = ExecRequest {
            data,
            correlator,
            server_id: requester.server_id(),
        };
        self.with_handler(&mount, |h| Ok(h.exec(&rel, request)))
    }
}

fn has_permanent_descendant(node: &Node) -> bool {
    node.children().is_some_and(|children| {
        children
            .values()
            .any(|c| c.scope == Scope::Permanent || has_permanent_descendant(c))
    })
}

fn make_dynamic(node: &mut Node, now: u64) {
    node.scope = Scope::Dynamic;
    node.props.tstamp = now;
    node.props.verno = 0;
    if let Some(children) = node.children_mut() {
        for child in children.values_mut() {
            make_dynamic(child, now);
        }
    }
}
