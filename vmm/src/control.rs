//! The VMM's control surface: one typed request enum, one response enum, one trait.
//!
//! Every front end (the HTTP API server, tests, a future in-process user) turns what it receives
//! into a [`VmRequest`] and hands it to a [`VmControl`]. The running VM implements [`VmControl`].
//! New capabilities are new variants here and new routes in [`crate::api`], nothing else.
//!
//! # Which requests end the process
//! [`VmRequest::ends_process`] says which requests, once answered successfully, end the VMM
//! process: `Stop`, `Shutdown`, and a `Snapshot` without `keep_running` (VirMO "suspend"). The
//! VM must not exit inside [`VmControl::handle`] (the answer would be lost): the API server
//! answers them with `Connection: close` and then calls its
//! [`after_response`](crate::api::server::ApiServer::after_response) hook, where the VM exits.

use std::path::PathBuf;
use std::time::Duration;

use crate::api::types::{DeviceInfo, DevicePolicy, ShutdownOutcome, SnapshotInfo, VmInfo};

/// A request to the running VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmRequest {
    /// Report identity, state and resources.
    GetInfo,
    /// Stop all vCPUs at a safe point; guest time stands still for the guest's processes.
    Pause,
    /// Continue after [`VmRequest::Pause`] (or after a `Snapshot` with `keep_running`).
    Resume,
    /// Ask the guest to power off (ACPI power button); force the stop after `timeout`.
    Shutdown { timeout: Duration },
    /// Stop the VM at once, without asking the guest.
    Stop,
    /// Save the whole VM into the folder `dir` (VirMO "suspend").
    ///
    /// 1. Pause all vCPUs at a safe point (if the VM is not paused already).
    /// 2. Save the complete machine state (vCPUs, interrupt controllers, clocks, every device)
    ///    and guest memory into `dir`, atomically: after success `dir` holds the complete new
    ///    snapshot (replacing a previous one in the same place); after a failure, or if the
    ///    process dies midway, `dir` holds the previous snapshot or none, never a partial one.
    /// 3. Answer [`VmResponse::Snapshot`]. Then, unless `keep_running`, the VMM process exits
    ///    with status 0 once the answer is flushed ([`VmRequest::ends_process`]): the VM holds
    ///    no RAM and no CPU any more. With `keep_running` the VM stays paused; the caller
    ///    continues it with [`VmRequest::Resume`] (or stops it).
    ///
    /// If saving fails the request has no effect: the VM goes back to the run state it had
    /// (a running VM resumes) and the process keeps running, whatever `keep_running` says.
    ///
    /// `dir` is absolute (the API refuses a relative path). Restoring is not a request: a new
    /// VMM process is started with `vmm --restore DIR [--memory-restore lazy|eager]
    /// [--api-socket S]`.
    ///
    /// Errors: [`ControlError::InvalidState`] if the VM cannot be saved now (e.g. it is shutting
    /// down); [`ControlError::Unsupported`] if a part of the VM cannot be saved (e.g. a device
    /// without saveable state); [`ControlError::BadRequest`] if `dir` cannot be used (its parent
    /// is missing or not writable); [`ControlError::Internal`] if writing failed.
    Snapshot { dir: PathBuf, keep_running: bool },
    /// List the VM's peripherals with their policy ([`VmResponse::Devices`]).
    ListDevices,
    /// Allow or prohibit the peripheral `id` while the VM runs (peripheral gating).
    ///
    /// Idempotent: setting the current value again succeeds with `changed: false`. The answer
    /// ([`VmResponse::DevicePolicy`]) reports the effective state after the call. An unknown
    /// `id` is [`ControlError::NotFound`]; a device whose class cannot be gated while running is
    /// [`ControlError::Unsupported`].
    SetDevicePolicy { id: String, allowed: bool },
}

impl VmRequest {
    /// Whether a successful answer to this request is followed by the end of the VMM process:
    /// `Stop`, `Shutdown`, and `Snapshot` without `keep_running`.
    pub fn ends_process(&self) -> bool {
        match self {
            Self::Stop | Self::Shutdown { .. } => true,
            Self::Snapshot { keep_running, .. } => !keep_running,
            Self::GetInfo
            | Self::Pause
            | Self::Resume
            | Self::ListDevices
            | Self::SetDevicePolicy { .. } => false,
        }
    }
}

/// The answer to a [`VmRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmResponse {
    /// The answer to [`VmRequest::GetInfo`].
    Info(VmInfo),
    /// The request was carried out; nothing to report.
    Done,
    /// How a [`VmRequest::Shutdown`] ended.
    Shutdown(ShutdownOutcome),
    /// What a [`VmRequest::Snapshot`] wrote.
    Snapshot(SnapshotInfo),
    /// The answer to [`VmRequest::ListDevices`], in the VM's device order.
    Devices(Vec<DeviceInfo>),
    /// The effective policy after [`VmRequest::SetDevicePolicy`].
    DevicePolicy(DevicePolicy),
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
    /// The request names something the VM does not have (e.g. an unknown device ID).
    #[error("not found: {0}")]
    NotFound(String),
    /// The VM cannot do this at all (e.g. snapshot a VM with a device that cannot be saved).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The VMM failed while carrying it out.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Implemented by the running VM; called from the API server's threads, possibly from several
/// at once.
pub trait VmControl: Send + Sync {
    fn handle(&self, request: VmRequest) -> Result<VmResponse, ControlError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stop_shutdown_and_suspend_end_the_process() {
        let snapshot = |keep_running| VmRequest::Snapshot {
            dir: "/var/lib/virmo/vm-1/snapshot".into(),
            keep_running,
        };
        for request in [
            VmRequest::Stop,
            VmRequest::Shutdown {
                timeout: Duration::from_secs(1),
            },
            snapshot(false),
        ] {
            assert!(request.ends_process(), "{request:?}");
        }
        for request in [
            VmRequest::GetInfo,
            VmRequest::Pause,
            VmRequest::Resume,
            snapshot(true),
            VmRequest::ListDevices,
            VmRequest::SetDevicePolicy {
                id: "net0".into(),
                allowed: false,
            },
        ] {
            assert!(!request.ends_process(), "{request:?}");
        }
    }
}
