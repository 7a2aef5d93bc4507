//! Handler-backed subtrees: an MO (e.g. VirMO) computes values and runs Exec for every node below
//! the URI it is mounted on. The engine still enforces URI limits, ACLs, access types, formats and
//! sizes; the handler only sees well-formed, authorised requests, with URIs relative to its mount.

use super::acl::Acl;
use super::node::{AccessTypes, Format, Scope};
use crate::status::StatusCode;

/// Interior or leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerNodeKind {
    Interior,
    Leaf,
}

/// What a handler says about one of its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerNode {
    pub kind: HandlerNodeKind,
    /// `Format::Node` for interior nodes.
    pub format: Format,
    pub mime_type: Option<String>,
    /// Commands the node supports (others get 405).
    pub access: AccessTypes,
    /// Empty: inherit from the parent (ultimately from the stored mount node).
    pub acl: Acl,
    /// Permanent nodes cannot be deleted (405).
    pub scope: Scope,
}

impl HandlerNode {
    /// An interior node allowing `access`, inheriting its ACL.
    pub fn interior(access: AccessTypes, scope: Scope) -> Self {
        Self {
            kind: HandlerNodeKind::Interior,
            format: Format::Node,
            mime_type: None,
            access,
            acl: Acl::inherit(),
            scope,
        }
    }

    /// A permanent leaf of `format` allowing `access`, inheriting its ACL.
    pub fn leaf(format: Format, access: AccessTypes) -> Self {
        Self {
            kind: HandlerNodeKind::Leaf,
            format,
            mime_type: Some("text/plain".to_owned()),
            access,
            acl: Acl::inherit(),
            scope: Scope::Permanent,
        }
    }
}

/// An Exec as the handler receives it.
#[derive(Debug, Clone, Copy)]
pub struct ExecRequest<'a> {
    /// The Exec's Item Data, if any.
    pub data: Option<&'a [u8]>,
    /// The Exec's Correlator, to put in the Generic Alert that reports an async outcome.
    pub correlator: Option<&'a str>,
    /// The requesting server (`None` when the device itself runs it).
    pub server_id: Option<&'a str>,
}

/// An MO implementation mounted on a subtree. `rel` is the path below the mount point (never
/// empty except for [`NodeHandler::children`], which is also asked for the mount point itself).
pub trait NodeHandler: Send {
    /// Describes the node at `rel`, or `None` when it does not exist.
    fn describe(&self, rel: &[String]) -> Option<HandlerNode>;

    /// Names of the children of the interior node at `rel` (`rel` empty: the mount point).
    fn children(&self, rel: &[String]) -> Result<Vec<String>, StatusCode>;

    /// The current value of the leaf at `rel`.
    fn get(&self, rel: &[String]) -> Result<Vec<u8>, StatusCode>;

    /// Creates the node at `rel` (an interior node when `format` is `Format::Node`).
    fn add(&mut self, rel: &[String], format: Format, value: &[u8]) -> Result<(), StatusCode> {
        let _ = (rel, format, value);
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    }

    /// Sets the value of the leaf at `rel` (already validated against its format).
    fn replace(&mut self, rel: &[String], value: &[u8]) -> Result<(), StatusCode> {
        let _ = (rel, value);
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    }

    /// Deletes the node at `rel` and its subtree.
    fn delete(&mut self, rel: &[String]) -> Result<(), StatusCode> {
        let _ = rel;
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    }

    /// Runs the Exec node at `rel`: 200 when done, 202 when accepted and running asynchronously
    /// (the outcome follows as a Generic Alert with the correlator), or an error status.
    fn exec(&mut self, rel: &[String], request: ExecRequest<'_>) -> StatusCode {
        let _ = (rel, request);
        StatusCode::COMMAND_NOT_ALLOWED
    }

    /// Called before the first change this handler sees inside an Atomic. Returning an error
    /// (the default) refuses to take part: the command fails with 500 and the Atomic rolls back.
    fn atomic_begin(&mut self) -> Result<(), StatusCode> {
        Err(StatusCode::COMMAND_FAILED)
    }

    /// The Atomic succeeded: forget the saved state.
    fn atomic_commit(&mut self) {}

    /// The Atomic failed: restore the state saved at `atomic_begin`.
    fn atomic_rollback(&mut self) -> Result<(), StatusCode> {
        Err(StatusCode::COMMAND_FAILED)
    }
}
