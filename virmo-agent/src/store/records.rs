//! What the agent keeps: one record per VM, its peripherals, long operations (jobs), Generic
//! Alerts waiting for delivery, the DM server account. Plain data, serialisable.

use serde::{Deserialize, Serialize};

use crate::model::{LockState, Operation, ResultCode, VmState};

/// The image installed by the last successful Provision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledImage {
    /// sha256 (hex) of the bundle: the name of its folder in the image store.
    pub digest: String,
    pub name: String,
    pub version: String,
    pub cmdline: String,
    /// A console line prefix the guest prints once booted (firmware boot check).
    #[serde(default)]
    pub ready_marker: Option<String>,
    /// Defaults of the bundle.
    pub vcpus: u8,
    pub memory_mib: u64,
    pub storage_mib: u64,
    /// Peripherals the bundle asks for besides the VM's own disk.
    #[serde(default)]
    pub entropy: bool,
    #[serde(default)]
    pub removable_mib: u64,
    /// Kernel release and other facts for the VM's DevDetail.
    #[serde(default)]
    pub kernel_version: String,
}

/// `Image/`: what the next Provision installs, and what is installed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageRecord {
    pub pkg_url: String,
    pub pkg_hash: String,
    pub installed: Option<InstalledImage>,
}

/// `Resources/` as set by the server; `None`: the image's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResourceSettings {
    pub vcpus: Option<u8>,
    pub memory_mib: Option<u64>,
    pub storage_mib: Option<u64>,
    /// Percent of one host CPU; 0: no limit.
    pub cpu_quota: u32,
}

/// `DataSharing/`, enforced by the sharing broker (`crate::sharing`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DataSharing {
    pub allowed: bool,
    pub peers: String,
}

/// `Lock/` (the unlock code's hash is a secret, kept apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LockRecord {
    pub state: LockState,
    pub user_unlock_allowed: bool,
    /// Wrong codes since the last success or wait.
    pub failed_attempts: u32,
    /// Waits imposed so far (the next one is twice as long).
    pub lockouts: u32,
    /// No code is tried before this time (Unix seconds).
    pub blocked_until: i64,
}

/// A kernel and initramfs installed as per-VM firmware.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareImage {
    pub digest: String,
    pub name: String,
    pub version: String,
}

/// `Firmware/` (FUMO-shaped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareRecord {
    /// FUMO state, 10 (idle) .. 100.
    pub state: u16,
    pub download_url: String,
    pub download_and_update_url: String,
    /// Downloaded, not yet applied.
    pub downloaded: Option<FirmwareImage>,
    /// Applied (`None`: the image's own kernel).
    pub current: Option<FirmwareImage>,
}

impl Default for FirmwareRecord {
    fn default() -> Self {
        Self {
            state: crate::jobs::firmware::fumo_state::IDLE,
            download_url: String::new(),
            download_and_update_url: String::new(),
            downloaded: None,
            current: None,
        }
    }
}

/// The VMM process of a running VM, identified beyond its pid (pids are reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (clock ticks since boot).
    pub start_time: u64,
}

/// One VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// Stable UUID (`ID`).
    pub id: String,
    /// The node name `<x>` under `./VirMO/VM`.
    pub node: String,
    pub name: String,
    pub state: VmState,
    #[serde(default)]
    pub image: ImageRecord,
    #[serde(default)]
    pub resources: ResourceSettings,
    #[serde(default)]
    pub sharing: DataSharing,
    #[serde(default)]
    pub lock: LockRecord,
    #[serde(default)]
    pub firmware: FirmwareRecord,
    /// The VMM while one runs (Running, or a suspended VM being saved).
    #[serde(default)]
    pub process: Option<ProcessRecord>,
    /// Deleted from the tree; files being removed.
    #[serde(default)]
    pub deleting: bool,
    /// Why the VM is Failed, or the last operation failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The guest's vsock CID (its host channel), unique among the VMs, kept for the VM's life
    /// (a snapshot holds it too). `None` only in records of agents before the host channel.
    #[serde(default)]
    pub cid: Option<u32>,
}

impl VmRecord {
    /// A VM just added to the tree, not provisioned.
    pub fn new(id: String, node: String) -> Self {
        Self {
            name: node.clone(),
            id,
            node,
            state: VmState::Provisioning,
            image: ImageRecord::default(),
            resources: ResourceSettings::default(),
            sharing: DataSharing::default(),
            lock: LockRecord::default(),
            firmware: FirmwareRecord::default(),
            process: None,
            deleting: false,
            last_error: None,
            cid: None,
        }
    }

    /// vCPUs at the next start.
    pub fn vcpus(&self) -> u8 {
        self.resources
            .vcpus
            .or(self.image.installed.as_ref().map(|i| i.vcpus))
            .unwrap_or(1)
    }

    /// Memory at the next start.
    pub fn memory_mib(&self) -> u64 {
        self.resources
            .memory_mib
            .or(self.image.installed.as_ref().map(|i| i.memory_mib))
            .unwrap_or(256)
    }

    /// Disk size (it only grows).
    pub fn storage_mib(&self) -> u64 {
        let image = self.image.installed.as_ref().map_or(0, |i| i.storage_mib);
        self.resources.storage_mib.unwrap_or(0).max(image)
    }
}

/// One peripheral of a VM and its policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peripheral {
    /// The device ID in the VMM (`disk0`, `rng0`...), the node name `<y>`.
    pub id: String,
    /// `storage`, `removable-storage`, `network`, `entropy`...
    pub class: String,
    pub allowed: bool,
}

/// A long operation, as persisted before each of its steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub id: i64,
    pub vm_id: String,
    pub op: Operation,
    /// The step to (re)do; its meaning is the operation's.
    pub step: String,
    /// The Exec's Correlator, for the OperationComplete alert.
    pub correlator: Option<String>,
    /// The Exec'd URI (the alert's Source); `None` for a local request.
    pub source: Option<String>,
    /// Operation-specific data (JSON).
    pub params: serde_json::Value,
    pub started_at: i64,
}

/// A Generic Alert to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAlert {
    pub alert_type: String,
    pub source: Option<String>,
    pub correlator: Option<String>,
    pub format: String,
    pub mark: Option<String>,
    pub data: String,
}

/// A queued alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRecord {
    pub id: i64,
    pub alert: StoredAlert,
    pub created_at: i64,
    pub attempts: u32,
    pub next_attempt_at: i64,
}

/// The DM account as last known (seeded from the configuration, updated by the server and by
/// each session's nonces).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// Digest of the configuration it was seeded from: a changed configuration reseeds it.
    pub seed: String,
    pub server_url: String,
    pub server_id: String,
    /// `AAuthType` (`BASIC`, `DIGEST`, `HMAC`).
    pub auth_type: String,
    pub client_name: String,
    pub client_secret: String,
    pub server_name: String,
    pub server_secret: String,
    /// The nonce our credentials use (the server's last NextNonce).
    pub client_nonce: Vec<u8>,
    /// The nonce the server's credentials (and Pkg#0 digests) use.
    pub server_nonce: Vec<u8>,
    /// Nonces given to the server before `server_nonce` (newest first, a few): a NextNonce is
    /// issued in the device's answer to the server's header, which a session that ends with
    /// the server's package 2 never sends, so the server may still sign a Pkg#0 with one of
    /// these.
    #[serde(default)]
    pub previous_server_nonces: Vec<Vec<u8>>,
}

impl std::fmt::Debug for AccountRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRecord")
            .field("server_url", &self.server_url)
            .field("server_id", &self.server_id)
            .field("auth_type", &self.auth_type)
            .field("client_name", &self.client_name)
            .finish_non_exhaustive()
    }
}

/// One change of a transaction ([`super::Store::apply`]): all of a batch happens, or none.
#[derive(Debug, Clone)]
pub enum Change {
    InsertVm(VmRecord),
    SaveVm(VmRecord),
    SetPeripherals {
        vm_id: String,
        peripherals: Vec<Peripheral>,
    },
    /// Removes the VM, its peripherals, secrets and jobs.
    ForgetVm(String),
    SetSecret {
        vm_id: String,
        kind: String,
        value: Option<String>,
    },
    InsertJob {
        vm_id: String,
        op: Operation,
        step: String,
        correlator: Option<String>,
        source: Option<String>,
        params: serde_json::Value,
    },
    SetJobStep {
        id: i64,
        step: String,
        params: serde_json::Value,
    },
    FinishJob {
        id: i64,
        result: ResultCode,
    },
    EnqueueAlert(StoredAlert),
}

/// Row IDs created by a batch, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub jobs: Vec<i64>,
    pub alerts: Vec<i64>,
}
