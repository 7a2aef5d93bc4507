//! Wire types of the control API (JSON bodies). Stable within an API version.

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
    /// Process ID of the VMM.
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
