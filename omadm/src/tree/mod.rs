//! The DM tree engine: stored nodes plus handler-backed subtrees, executing typed operations
//! (Get/Add/Replace/Delete/Copy/Exec, Atomic, Sequence) with the statuses of OMA DM 1.2/1.3.
//! It knows no SyncML: a session turns commands into [`DmOp`]s and outcomes into Status/Results.

pub mod acl;
mod atomic;
pub mod handler;
pub mod node;
pub mod ops;
pub mod persist;
mod read;
pub mod std_objects;
pub mod uri;
mod write;

use std::collections::BTreeMap;

pub use acl::{Acl, AclCommand, AclError};
pub use atomic::{ATOMIC_FAILED, ATOMIC_ROLLBACK_FAILED};
pub use handler::{ExecRequest, HandlerNode, HandlerNodeKind, NodeHandler};
pub use node::{AccessTypes, Format, Node, NodeBody, Scope};
pub use ops::{AtomicOutcome, DmOp, GetResult, Item, OpOutcome, Requester};
pub use uri::{check_limits as check_uri_limits, DmUri, Target, UriError, UriLimits};

use crate::status::StatusCode;

/// Size and URI limits of a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeLimits {
    pub uri: UriLimits,
    /// Largest value accepted for one leaf (bigger: 413).
    pub max_leaf_size: usize,
    /// Total bytes of stored leaf values (beyond: 420 Device full).
    pub max_stored_bytes: usize,
}

impl Default for TreeLimits {
    fn default() -> Self {
        Self {
            uri: UriLimits::default(),
            max_leaf_size: 64 * 1024,
            max_stored_bytes: 4 << 20,
        }
    }
}

/// Why a device-side tree set-up call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("cannot mount a handler on `{0}`: the node is not a stored interior node")]
    NotAnInteriorNode(String),
    #[error("a handler is already mounted on or around `{0}`")]
    MountOverlap(String),
    #[error("cannot store a node at `{0}`: an ancestor is a leaf or handler-backed")]
    BadParent(String),
    #[error("the root ACL must not be empty")]
    EmptyRootAcl,
}

type Clock = Box<dyn Fn() -> u64 + Send>;

fn system_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where a node lives.
enum Location {
    Stored,
    Handler { mount: DmUri, rel: Vec<String> },
}

/// A node's description, whoever backs it.
#[derive(Debug, Clone)]
struct NodeView {
    interior: bool,
    format: Format,
    mime_type: Option<String>,
    access: AccessTypes,
    scope: Scope,
    acl: Acl,
    /// Stored nodes only.
    stored: Option<StoredMeta>,
}

#[derive(Debug, Clone)]
struct StoredMeta {
    title: Option<String>,
    tstamp: u64,
    verno: u16,
    size: usize,
}

impl NodeView {
    fn of_stored(node: &Node) -> Self {
        Self {
            interior: node.is_interior(),
            format: node.props.format,
            mime_type: node.props.mime_type.clone(),
            access: node.access,
            scope: node.scope,
            acl: node.props.acl.clone(),
            stored: Some(StoredMeta {
                title: node.props.title.clone(),
                tstamp: node.props.tstamp,
                verno: node.props.verno,
                size: node.size(),
            }),
        }
    }

    fn of_handler(node: HandlerNode) -> Self {
        Self {
            interior: node.kind == HandlerNodeKind::Interior,
            format: node.format,
            mime_type: node.mime_type,
            access: node.access,
            scope: node.scope,
            acl: node.acl,
            stored: None,
        }
    }
}

/// The DM tree of one device.
pub struct DmTree {
    root: Node,
    limits: TreeLimits,
    mounts: BTreeMap<DmUri, Box<dyn NodeHandler>>,
    clock: Clock,
    atomic: Option<atomic::AtomicTx>,
    /// Total bytes of stored leaf values, kept up to date by every stored write.
    stored_bytes: usize,
}

impl std::fmt::Debug for DmTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmTree")
            .field("root", &self.root)
            .field("limits", &self.limits)
            .field("mounts", &self.mounts.keys().collect::<Vec<_>>())
            .field("in_atomic", &self.atomic.is_some())
            .finish()
    }
}

impl DmTree {
    /// An empty tree whose root has `root_acl` (which must not be empty).
    pub fn new(root_acl: Acl, limits: TreeLimits) -> Result<Self, TreeError> {
        if root_acl.is_empty() {
            return Err(TreeError::EmptyRootAcl);
        }
        let now = system_clock();
        let root = Node::interior(Scope::Permanent, now)
            .with_acl(root_acl)
            .with_access(
                AccessTypes::ADD
                    .union(AccessTypes::GET)
                    .union(AccessTypes::REPLACE),
            );
        Ok(Self::from_root(root, limits))
    }

    fn from_root(root: Node, limits: TreeLimits) -> Self {
        let stored_bytes = root.stored_bytes();
        Self {
            root,
            limits,
            mounts: BTreeMap::new(),
            clock: Box::new(system_clock),
            atomic: None,
            stored_bytes,
        }
    }

    /// Replaces all stored nodes (load, rollback) and recounts their bytes.
    fn set_root(&mut self, root: Node) {
        self.stored_bytes = root.stored_bytes();
        self.root = root;
    }

    /// Records a stored write that added `added` and removed `removed` value bytes.
    fn account_bytes(&mut self, added: usize, removed: usize) {
        self.stored_bytes = self
            .stored_bytes
            .saturating_sub(removed)
            .saturating_add(added);
    }

    /// Replaces the clock (seconds since the Unix epoch) used for TStamp.
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    pub fn limits(&self) -> &TreeLimits {
        &self.limits
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    /// Mounts `handler` on the stored interior node `uri`: every node below it is the handler's.
    pub fn mount(&mut self, uri: &DmUri, handler: Box<dyn NodeHandler>) -> Result<(), TreeError> {
        match self.stored(uri) {
            Some(node) if node.children().is_some_and(|c| c.is_empty()) => {}
            _ => return Err(TreeError::NotAnInteriorNode(uri.to_string())),
        }
        if self
            .mounts
            .keys()
            .any(|m| m.starts_with(uri) || uri.starts_with(m))
        {
            return Err(TreeError::MountOverlap(uri.to_string()));
        }
        self.mounts.insert(uri.clone(), handler);
        Ok(())
    }

    /// Removes the handler mounted on `uri` (the stored mount node stays).
    pub fn unmount(&mut self, uri: &DmUri) -> Option<Box<dyn NodeHandler>> {
        self.mounts.remove(uri)
    }

    /// Device-side set-up: stores `node` at `uri` (replacing what was there), creating missing
    /// parents as permanent interior nodes. No ACL or access check.
    pub fn put_node(&mut self, uri: &DmUri, node: Node) -> Result<(), TreeError> {
        let Some((name, parents)) = uri.segments().split_last() else {
            if !node.is_interior() {
                return Err(TreeError::NotAnInteriorNode(uri.to_string()));
            }
            if node.props.acl.is_empty() {
                return Err(TreeError::EmptyRootAcl);
            }
            self.set_root(node);
            return Ok(());
        };
        if self.mounts.keys().any(|m| uri.starts_with(m)) {
            return Err(TreeError::BadParent(uri.to_string()));
        }
        let now = self.now();
        let mut node = node;
        node.props.tstamp = now;
        let mut cursor = &mut self.root;
        for segment in parents {
            let children = cursor
                .children_mut()
                .ok_or_else(|| TreeError::BadParent(uri.to_string()))?;
            cursor = children
                .entry(segment.clone())
                .or_insert_with(|| Node::interior(Scope::Permanent, now));
        }
        let added = node.stored_bytes();
        let replaced = cursor
            .children_mut()
            .ok_or_else(|| TreeError::BadParent(uri.to_string()))?
            .insert(name.clone(), node);
        self.account_bytes(added, replaced.map_or(0, |old| old.stored_bytes()));
        Ok(())
    }

    /// Device-side read of a stored leaf, bypassing ACL and access types (e.g. `AAuthSecret`).
    pub fn device_read(&self, uri: &DmUri) -> Option<&[u8]> {
        match &self.stored(uri)?.body {
            NodeBody::Leaf(value) => Some(value),
            NodeBody::Interior(_) => None,
        }
    }

    /// Device-side write of an existing stored leaf's value (no ACL, access or format check).
    /// Returns false when `uri` is not a stored leaf.
    pub fn device_write(&mut self, uri: &DmUri, value: &[u8]) -> bool {
        let now = self.now();
        let old = match self.stored_mut(uri) {
            Some(node) if !node.is_interior() => {
                let old = node.size();
                node.body = NodeBody::Leaf(value.to_vec());
                node.touch(now);
                old
            }
            _ => return false,
        };
        self.account_bytes(value.len(), old);
        true
    }

    /// Device-side names of a stored interior node's children.
    pub fn device_children(&self, uri: &DmUri) -> Vec<String> {
        self.stored(uri)
            .and_then(Node::children)
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Executes one operation for `requester`.
    pub fn execute(&mut self, requester: Requester<'_>, op: &DmOp) -> OpOutcome {
        match op {
            DmOp::Get { target } => match self.get(requester, target) {
                Ok(results) => OpOutcome {
                    status: StatusCode::OK,
                    results,
                },
                Err(status) => OpOutcome::status(status),
            },
            DmOp::Add { target, item } => self.add(requester, target, item).into(),
            DmOp::Replace { target, item } => self.replace(requester, target, item).into(),
            DmOp::Delete { target } => self.delete(requester, target).into(),
            DmOp::Copy { source, target } => self.copy(requester, source, target).into(),
            DmOp::Exec {
                target,
                data,
                correlator,
            } => OpOutcome::status(self.exec(
                requester,
                target,
                data.as_deref(),
                correlator.as_deref(),
            )),
        }
    }

    /// A Sequence: the commands in order, each whatever the others' outcome.
    pub fn run_sequence(&mut self, requester: Requester<'_>, ops: &[DmOp]) -> Vec<OpOutcome> {
        ops.iter().map(|op| self.execute(requester, op)).collect()
    }

    // ---- lookup -------------------------------------------------------------------------

    fn parse_target(&self, text: &str) -> Result<Target, StatusCode> {
        Target::parse(text, &self.limits.uri).map_err(|e| e.status())
    }

    /// The URI of a target given to a command that takes no `?` query (405 with one).
    fn parse_plain_target(&self, text: &str) -> Result<DmUri, StatusCode> {
        let target = self.parse_target(text)?;
        if target.query.is_some() {
            return Err(StatusCode::COMMAND_NOT_ALLOWED);
        }
        Ok(target.uri)
    }

    fn stored(&self, uri: &DmUri) -> Option<&Node> {
        let mut node = &self.root;
        for segment in uri.segments() {
            node = node.children()?.get(segment)?;
        }
        Some(node)
    }

    fn stored_mut(&mut self, uri: &DmUri) -> Option<&mut Node> {
        let mut node = &mut self.root;
        for segment in uri.segments() {
            node = node.children_mut()?.get_mut(segment)?;
        }
        Some(node)
    }

    fn locate(&self, uri: &DmUri) -> Location {
        for mount in self.mounts.keys() {
            if uri.starts_with(mount) && uri.depth() > mount.depth() {
                return Location::Handler {
                    mount: mount.clone(),
                    rel: uri.segments()[mount.depth()..].to_vec(),
                };
            }
        }
        Location::Stored
    }

    fn view(&self, uri: &DmUri) -> Option<NodeView> {
        match self.locate(uri) {
            Location::Stored => self.stored(uri).map(NodeView::of_stored),
            Location::Handler { mount, rel } => self
                .mounts
                .get(&mount)?
                .describe(&rel)
                .map(NodeView::of_handler),
        }
    }

    fn is_mount(&self, uri: &DmUri) -> bool {
        self.mounts.contains_key(uri)
    }

    /// The ACL in force at `uri`: its own, or the nearest ancestor's non-empty one.
    fn effective_acl(&self, uri: &DmUri) -> Acl {
        let mut cursor = Some(uri.clone());
        while let Some(uri) = cursor {
            if let Some(view) = self.view(&uri) {
                if !view.acl.is_empty() {
                    return view.acl;
                }
            }
            cursor = uri.parent();
        }
        self.root.props.acl.clone()
    }

    /// 425 unless `requester` may run `command` on the existing node `uri`.
    fn check_acl(
        &self,
        requester: Requester<'_>,
        command: AclCommand,
        uri: &DmUri,
    ) -> Result<(), StatusCode> {
        match requester {
            Requester::Device => Ok(()),
            Requester::Server(id) if self.effective_acl(uri).allows(command, id) => Ok(()),
            Requester::Server(_) => Err(StatusCode::PERMISSION_DENIED),
        }
    }

    /// 405 unless the node's access types allow `command`.
    fn check_access(view: &NodeView, command: AclCommand) -> Result<(), StatusCode> {
        if view.access.contains(AccessTypes::for_command(command)) {
            Ok(())
        } else {
            Err(StatusCode::COMMAND_NOT_ALLOWED)
        }
    }

    /// 405 unless the node's access types allow `command`, then 425 unless its ACL lets
    /// `requester` run it.
    fn check_rights(
        &self,
        requester: Requester<'_>,
        command: AclCommand,
        view: &NodeView,
        uri: &DmUri,
    ) -> Result<(), StatusCode> {
        Self::check_access(view, command)?;
        self.check_acl(requester, command, uri)
    }

    /// Calls `f` on the handler mounted at `mount`, first enrolling it in a running Atomic.
    fn with_handler<T>(
        &mut self,
        mount: &DmUri,
        f: impl FnOnce(&mut dyn NodeHandler) -> Result<T, StatusCode>,
    ) -> Result<T, StatusCode> {
        self.enrol_in_atomic(mount)?;
        let handler = self
            .mounts
            .get_mut(mount)
            .ok_or(StatusCode::COMMAND_FAILED)?;
        f(handler.as_mut())
    }

    /// Names of an interior node's children, from storage or from its handler.
    fn child_names(&self, uri: &DmUri) -> Result<Vec<String>, StatusCode> {
        if self.is_mount(uri) {
            let handler = self.mounts.get(uri).ok_or(StatusCode::COMMAND_FAILED)?;
            return handler.children(&[]);
        }
        match self.locate(uri) {
            Location::Stored => Ok(self.device_children(uri)),
            Location::Handler { mount, rel } => self
                .mounts
                .get(&mount)
                .ok_or(StatusCode::COMMAND_FAILED)?
                .children(&rel),
        }
    }
}

#[cfg(test)]
mod tests;
