//! One running DM session with a device: the omadm [`ServerSession`], the device's
//! authentication state, and the jobs this session carries.

use std::collections::HashMap;

use omadm::session::auth::DmAuth;
use omadm::session::{RequestId, ServerSession};

use crate::model::{Device, DeviceInfo};

/// What a request the session sent stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The `index`-th command of job `job`; a Get of a structure (`?list=`) names its root.
    Job {
        job: i64,
        index: usize,
        list_root: Option<String>,
    },
    /// The server's own read of `./VirMO` after a change.
    Refresh,
    /// A read that keeps the session open for one more exchange (see [`Live::enqueued_any`]).
    Probe,
}

/// How far a job sent in this session got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub commands: usize,
    pub answered: usize,
    /// An Exec was answered 202.
    pub accepted: bool,
    /// The first error status and what it answered.
    pub failure: Option<(i64, String)>,
}

/// A live session.
pub struct Live {
    pub session: ServerSession,
    pub auth: DmAuth,
    pub device: Device,
    /// The RespURI token.
    pub token: String,
    /// Names this session in the store (jobs it carries, responses, alerts).
    pub tag: String,
    pub authenticated: bool,
    pub dev_info: Option<DeviceInfo>,
    pub requests: HashMap<RequestId, Request>,
    /// Jobs sent in this session and not yet answered in full.
    pub in_flight: HashMap<i64, Progress>,
    /// Something changed on the device (an alert, a finished job): read `./VirMO` back.
    pub tree_dirty: bool,
    pub refresh_sent: bool,
    /// The device's queue had nothing for us (or is blocked) when last asked.
    pub queue_empty: bool,
    /// Whether this session sent the device any command. The first reply always carries one:
    /// the device answers our credentials (its 212 and the NextNonce we must use next time,
    /// or its challenge) in the Status of our header, which it sends only when it has
    /// something to answer; a reply of statuses only would end the session before it.
    pub enqueued_any: bool,
}

impl Live {
    pub fn key(&self) -> (String, String) {
        (
            self.session.device_id().to_owned(),
            self.session.session_id().to_owned(),
        )
    }

    /// The nonces to persist: (the device's next, ours).
    pub fn nonces(&self) -> (Vec<u8>, Vec<u8>) {
        let peer = self.auth.lock();
        (
            peer.nonce_for_verifying().to_vec(),
            peer.nonce_for_sending().to_vec(),
        )
    }
}
