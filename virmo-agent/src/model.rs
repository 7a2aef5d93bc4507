//! The VirMO vocabulary shared by every layer: VM states, lock states, operations, result codes
//! (`docs/virmo-mo.md`).

use serde::{Deserialize, Serialize};

/// `./VirMO/VM/<x>/State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VmState {
    /// Added and not provisioned yet, or being provisioned.
    Provisioning,
    Stopped,
    Running,
    Suspended,
    /// Provisioning failed or the guest crashed.
    Failed,
}

impl VmState {
    pub fn code(self) -> u16 {
        match self {
            Self::Provisioning => 10,
            Self::Stopped => 20,
            Self::Running => 30,
            Self::Suspended => 40,
            Self::Failed => 50,
        }
    }

    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            10 => Self::Provisioning,
            20 => Self::Stopped,
            30 => Self::Running,
            40 => Self::Suspended,
            50 => Self::Failed,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Stopped => "stopped",
            Self::Running => "running",
            Self::Suspended => "suspended",
            Self::Failed => "failed",
        }
    }
}

/// `./VirMO/VM/<x>/Lock/State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LockState {
    #[default]
    Unlocked,
    /// The VM runs; no local user reaches it.
    Partial,
    /// As partial, and the VM is paused.
    Full,
}

impl LockState {
    pub fn code(self) -> u16 {
        match self {
            Self::Unlocked => 10,
            Self::Partial => 20,
            Self::Full => 30,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Unlocked => "unlocked",
            Self::Partial => "partially locked",
            Self::Full => "fully locked",
        }
    }

    pub fn is_locked(self) -> bool {
        self != Self::Unlocked
    }
}

/// Everything that can be asked of a VM (the `Operations/*` Exec nodes and the per-VM firmware
/// Execs), as carried out by the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operation {
    Provision,
    Start,
    Stop,
    Suspend,
    Resume,
    PartiallyLock,
    FullyLock,
    Unlock,
    Delete,
    FirmwareDownload,
    FirmwareUpdate,
    FirmwareDownloadAndUpdate,
}

impl Operation {
    /// The operations under `Operations/`, by node name.
    pub const EXEC_NODES: [Self; 9] = [
        Self::Provision,
        Self::Start,
        Self::Stop,
        Self::Suspend,
        Self::Resume,
        Self::PartiallyLock,
        Self::FullyLock,
        Self::Unlock,
        Self::Delete,
    ];

    /// The node name (under `Operations/`, or the firmware node).
    pub fn node_name(self) -> &'static str {
        match self {
            Self::Provision => "Provision",
            Self::Start => "Start",
            Self::Stop => "Stop",
            Self::Suspend => "Suspend",
            Self::Resume => "Resume",
            Self::PartiallyLock => "PartiallyLock",
            Self::FullyLock => "FullyLock",
            Self::Unlock => "Unlock",
            Self::Delete => "Delete",
            Self::FirmwareDownload => "Download",
            Self::FirmwareUpdate => "Update",
            Self::FirmwareDownloadAndUpdate => "DownloadAndUpdate",
        }
    }

    pub fn from_node_name(name: &str) -> Option<Self> {
        Self::EXEC_NODES
            .into_iter()
            .find(|op| op.node_name() == name)
    }

    /// The stable name stored in the database.
    pub fn key(self) -> &'static str {
        match self {
            Self::Provision => "provision",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Suspend => "suspend",
            Self::Resume => "resume",
            Self::PartiallyLock => "partially-lock",
            Self::FullyLock => "fully-lock",
            Self::Unlock => "unlock",
            Self::Delete => "delete",
            Self::FirmwareDownload => "firmware-download",
            Self::FirmwareUpdate => "firmware-update",
            Self::FirmwareDownloadAndUpdate => "firmware-download-and-update",
        }
    }

    pub fn from_key(key: &str) -> Option<Self> {
        [
            Self::FirmwareDownload,
            Self::FirmwareUpdate,
            Self::FirmwareDownloadAndUpdate,
        ]
        .into_iter()
        .chain(Self::EXEC_NODES)
        .find(|op| op.key() == key)
    }

    pub fn is_firmware(self) -> bool {
        matches!(
            self,
            Self::FirmwareDownload | Self::FirmwareUpdate | Self::FirmwareDownloadAndUpdate
        )
    }
}

/// A VirMO result code (SCOMO style), the `Data` of an OperationComplete alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResultCode(pub u16);

impl ResultCode {
    pub const SUCCESS: Self = Self(1200);
    pub const CLIENT_ERROR: Self = Self(1400);
    pub const CANCELLED: Self = Self(1401);
    pub const CORRUPT: Self = Self(1402);
    pub const NOT_ALLOWED_IN_STATE: Self = Self(1403);
    pub const NOT_FOUND: Self = Self(1404);
    pub const NO_RESOURCES: Self = Self(1405);
    pub const BAD_CONFIG: Self = Self(1406);
    pub const LOCKED: Self = Self(1407);
    pub const FAILED: Self = Self(1500);
    pub const DOWNLOAD_FAILED: Self = Self(1501);
    pub const TIMED_OUT: Self = Self(1502);

    pub fn is_success(self) -> bool {
        self.0 == 1200
    }
}

impl std::fmt::Display for ResultCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `n` random bytes from the system source.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    // A failing system random source leaves nothing sensible to do.
    getrandom::fill(&mut bytes).expect("the system random source works");
    bytes
}

/// A random (version 4) UUID, the stable ID of a VM.
pub fn new_uuid() -> String {
    let mut b = random_bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Whether `name` can be a VM's node name in the tree (and a file name): 1-64 of
/// `A-Z a-z 0-9 - _ .`, not starting with a dot.
pub fn valid_node_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for state in [
            VmState::Provisioning,
            VmState::Stopped,
            VmState::Running,
            VmState::Suspended,
            VmState::Failed,
        ] {
            assert_eq!(VmState::from_code(state.code()), Some(state));
        }
        assert_eq!(VmState::from_code(11), None);
        for op in Operation::EXEC_NODES {
            assert_eq!(Operation::from_node_name(op.node_name()), Some(op));
            assert_eq!(Operation::from_key(op.key()), Some(op));
        }
        assert_eq!(
            Operation::from_key("firmware-update"),
            Some(Operation::FirmwareUpdate)
        );
    }

    #[test]
    fn uuids_are_version_4() {
        let a = new_uuid();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(a, new_uuid());
    }

    #[test]
    fn node_names() {
        assert!(valid_node_name("work"));
        assert!(valid_node_name("vm-1.2_a"));
        for bad in ["", ".hidden", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_node_name(bad), "{bad}");
        }
    }
}
