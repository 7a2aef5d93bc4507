//! Wire types of the control API (JSON bodies). Stable within an API version.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The API version served under `/<API_VERSION>/...`.
pub const API_VERSION: &str = "v1";

/// The run state of a VM as the VMM sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// vCPUs are created but the guest has not started yet.
    Created,
    Running,
    Paused,
    /// A graceful shutdown was requested and the guest has not powered off yet.
    ShuttingDown,
}

/// `GET /v1/vm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// The VM's ID as given in its config (VirMO uses a UUID).
    pub id: String,
    pub state: RunState,
    pub vcpus: u8,
    pub memory_mib: u64,
    /// Milliseconds since the VMM started the guest.
    pub uptime_ms: u64,
    /// Process ID of the VMM as its starter sees it (jailed: its keeper's, docs/security.md).
    pub pid: u32,
    /// The VMM's own version (crate version).
    pub vmm_version: String,
}

/// Body of `PUT /v1/vm/shutdown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownRequest {
    /// How long the guest has to power off before the VMM stops it by force.
    pub timeout_ms: u64,
}

/// How a graceful shutdown ended (response to `PUT /v1/vm/shutdown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownOutcome {
    /// The guest powered itself off within the timeout.
    Graceful,
    /// The timeout passed; the VMM stopped the guest.
    Forced,
}

/// Answer to `PUT /v1/vm/shutdown`: `{"outcome":"graceful"}` or `{"outcome":"forced"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownResponse {
    pub outcome: ShutdownOutcome,
}

/// `GET /v1/version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The API version this VMM serves ([`API_VERSION`]).
    pub api: String,
    /// The VMM's crate version.
    pub vmm: String,
}

impl VersionInfo {
    /// The version of this build.
    pub fn current() -> Self {
        Self {
            api: API_VERSION.to_owned(),
            vmm: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// Body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// Body of `PUT /v1/vm/snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// The folder to save the VM into; absolute. A previous snapshot there is replaced
    /// atomically.
    pub dir: PathBuf,
    /// `false` (the default): the VMM process exits after answering (VirMO "suspend").
    /// `true`: the VM stays paused and the process keeps running.
    #[serde(default)]
    pub keep_running: bool,
}

/// Answer to `PUT /v1/vm/snapshot`: what was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The folder holding the snapshot.
    pub dir: PathBuf,
    /// Size of the machine state (vCPUs, interrupt controllers, clocks, devices) on disk.
    pub state_bytes: u64,
    /// Bytes of guest memory actually written (pages never touched by the guest are skipped).
    pub memory_bytes_written: u64,
    /// Size of guest memory.
    pub memory_size: u64,
    /// Milliseconds from the request to the snapshot being durable on disk (pause included).
    pub duration_ms: u64,
}

/// One peripheral of the VM (`GET /v1/devices`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// The device's ID from the VM config, e.g. `net0`.
    pub id: String,
    /// What the device is for, the unit of VirMO peripheral gating: [`device_class`] names.
    pub class: String,
    /// How it is implemented: [`device_kind`] names.
    pub kind: String,
    /// Whether the guest may use it now.
    pub allowed: bool,
    /// Guest requests refused because the device was prohibited, since the VMM started.
    pub rejected_requests: u64,
}

/// The names of [`DeviceInfo::class`] known in API v1. New classes may be added within v1.
pub mod device_class {
    /// The VM's own disk.
    pub const STORAGE: &str = "storage";
    /// An extra disk that can be cut off (the USB-storage analogue).
    pub const REMOVABLE_STORAGE: &str = "removable-storage";
    pub const NETWORK: &str = "network";
    /// A source of random bytes from the host.
    pub const ENTROPY: &str = "entropy";
    /// A channel between guest and host (e.g. vsock).
    pub const HOST_CHANNEL: &str = "host-channel";
    /// A host folder shared with the guest.
    pub const SHARED_FOLDER: &str = "shared-folder";
}

/// The names of [`DeviceInfo::kind`] known in API v1. New kinds may be added within v1.
pub mod device_kind {
    /// virtio-blk.
    pub const BLOCK: &str = "block";
    /// virtio-net.
    pub const NET: &str = "net";
    /// virtio-rng.
    pub const RNG: &str = "rng";
    /// virtio-vsock.
    pub const VSOCK: &str = "vsock";
}

/// Body of `PUT /v1/devices/{id}/policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePolicyRequest {
    pub allowed: bool,
}

/// Answer to `PUT /v1/devices/{id}/policy`: the effective policy after the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePolicy {
    pub id: String,
    pub allowed: bool,
    /// Whether this call changed it (`false` when it already was so).
    pub changed: bool,
}
