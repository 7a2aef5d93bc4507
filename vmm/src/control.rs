//! The VMM's control surface: one typed request enum, one response enum, one trait.
//!
//! Every front end (the HTTP API server, tests, a future in-process user) turns what it receives
//! into a [`VmRequest`] and hands it to a [`VmControl`]. The running VM implements [`VmControl`].
//! New capabilities (snapshots, device policy) are new variants here and new routes in
//! [`crate::api`], nothing else.

use std::time::Duration;

use crate::api::types::{ShutdownOutcome, VmInfo};

/// A request to the running VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmRequest {
    /// Report identity, state and resources.
    GetInfo,
    /// Stop all vCPUs at a safe point; guest time stands still for the guest's processes.
    Pause,
    /// Continue after [`VmRequest::Pause`].
    Resume,
    /// Ask the guest to power off (ACPI power button); force the stop after `timeout`.
    Shutdown { timeout: Duration },
    /// Stop the VM at once, without asking the guest.
    Stop,
}

/// The answer to a [`VmRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmResponse {
    Info(VmInfo),
    /// The request was carried out; nothing to report.
    Done,
    /// How a [`VmRequest::Shutdown`] ended.
    Shutdown(ShutdownOutcome),
}

/// Why a request was not carried out.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// The request is valid but not in the VM's current state (e.g. resume a running VM).
    #[error("not allowed in state {state}: {reason}")]
    InvalidState { state: String, reason: String },
    /// The request itself is wrong.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The VMM failed while carrying it out.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Implemented by the running VM; called from the API server's thread.
pub trait VmControl: Send + Sync {
    fn handle(&self, request: VmRequest) -> Result<VmResponse, ControlError>;
}
