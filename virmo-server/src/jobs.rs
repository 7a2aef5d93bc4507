//! VirMO operations as DM commands (the contract of `VIRMO-TREE.md`), and what a device's
//! answers mean for a job: the rules the DM endpoint applies to statuses and alerts.

use serde::{Deserialize, Serialize};

use crate::model::DmCommand;

/// The Generic Alert type of an operation's outcome.
pub const OPERATION_COMPLETE: &str = "urn:oma:at:virmo:1.0:OperationComplete";
/// A VM changed state on its own (Data: the new state).
pub const STATE_CHANGED: &str = "urn:oma:at:virmo:1.0:StateChanged";
/// The local user unlocked a VM with an authorised code.
pub const USER_UNLOCKED: &str = "urn:oma:at:virmo:1.0:UserUnlocked";
/// FUMO's alert types start with this (per-VM firmware).
pub const FUMO_PREFIX: &str = "org.openmobilealliance.dm.firmwareupdate.";
/// The root the server reads back to know a device's VMs.
pub const VIRMO_ROOT: &str = "./VirMO";

/// A VirMO operation an administrator asks of one VM (or of the device, for `Refresh`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    /// Adds the VM node, sets its image and resources, and Execs `Provision`.
    Provision {
        vm: String,
        pkg_url: String,
        pkg_hash: String,
        #[serde(default)]
        resources: Resources,
    },
    Start {
        vm: String,
    },
    Stop {
        vm: String,
    },
    Suspend {
        vm: String,
    },
    Resume {
        vm: String,
    },
    /// Partial (the VM runs, no local user reaches it) or full (also paused) lock; with a user
    /// unlock code, the local user may unlock with it.
    Lock {
        vm: String,
        full: bool,
        #[serde(default)]
        user_unlock_code: Option<String>,
    },
    Unlock {
        vm: String,
    },
    Delete {
        vm: String,
    },
    /// Allows or forbids one peripheral of the VM (live).
    Peripheral {
        vm: String,
        peripheral: String,
        allowed: bool,
    },
    /// Data sharing with other VMs (live).
    Sharing {
        vm: String,
        allowed: bool,
        #[serde(default)]
        peers: Option<String>,
    },
    /// Resources (vCPUs, memory, storage at next start; CPU quota live).
    Resources {
        vm: String,
        #[serde(flatten)]
        resources: Resources,
    },
    /// Per-VM firmware (FUMO DownloadAndUpdate).
    Firmware {
        vm: String,
        pkg_url: String,
    },
    /// Reads the whole VirMO tree back (the server's view of the device's VMs).
    Refresh,
}

/// Resource settings; the ones given are replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<u32>,
}

/// Why an operation cannot become commands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperationError {
    #[error("the VM name is empty")]
    EmptyVmName,
    #[error("no resource to change was given")]
    NothingToChange,
    #[error("the package hash must be `sha256:<64 hex digits>`")]
    BadHash,
    #[error("the user unlock code must not be empty")]
    EmptyUnlockCode,
}

fn vm_uri(vm: &str) -> String {
    format!("{VIRMO_ROOT}/VM/{}", omadm::tree::uri::escape(vm))
}

fn exec(vm: &str, op: &str) -> DmCommand {
    DmCommand::Exec {
        uri: format!("{}/Operations/{op}", vm_uri(vm)),
        data: None,
    }
}

fn replace(uri: String, format: &str, value: impl ToString) -> DmCommand {
    DmCommand::Replace {
        uri,
        format: format.to_owned(),
        value: value.to_string(),
    }
}

fn resource_commands(vm: &str, r: &Resources) -> Vec<DmCommand> {
    let base = format!("{}/Resources", vm_uri(vm));
    let mut commands = Vec::new();
    if let Some(v) = r.vcpus {
        commands.push(replace(format!("{base}/VCPUs"), "int", v));
    }
    if let Some(v) = r.memory_mib {
        commands.push(replace(format!("{base}/MemoryMiB"), "int", v));
    }
    if let Some(v) = r.storage_mib {
        commands.push(replace(format!("{base}/StorageMiB"), "int", v));
    }
    if let Some(v) = r.cpu_quota {
        commands.push(replace(format!("{base}/CPUQuota"), "int", v));
    }
    commands
}

impl Operation {
    /// The VM it is about (none for `Refresh`).
    pub fn vm(&self) -> Option<&str> {
        match self {
            Self::Provision { vm, .. }
            | Self::Start { vm }
            | Self::Stop { vm }
            | Self::Suspend { vm }
            | Self::Resume { vm }
            | Self::Lock { vm, .. }
            | Self::Unlock { vm }
            | Self::Delete { vm }
            | Self::Peripheral { vm, .. }
            | Self::Sharing { vm, .. }
            | Self::Resources { vm, .. }
            | Self::Firmware { vm, .. } => Some(vm),
            Self::Refresh => None,
        }
    }

    /// Its name: `start`, `provision`...
    pub fn name(&self) -> &'static str {
        match self {
            Self::Provision { .. } => "provision",
            Self::Start { .. } => "start",
            Self::Stop { .. } => "stop",
            Self::Suspend { .. } => "suspend",
            Self::Resume { .. } => "resume",
            Self::Lock { full: true, .. } => "lock-full",
            Self::Lock { .. } => "lock-partial",
            Self::Unlock { .. } => "unlock",
            Self::Delete { .. } => "delete",
            Self::Peripheral { .. } => "peripheral",
            Self::Sharing { .. } => "sharing",
            Self::Resources { .. } => "resources",
            Self::Firmware { .. } => "firmware",
            Self::Refresh => "refresh",
        }
    }

    /// `start work`, `refresh`: the job's label.
    pub fn label(&self) -> String {
        match self.vm() {
            Some(vm) => format!("{} {vm}", self.name()),
            None => self.name().to_owned(),
        }
    }

    /// The DM commands that carry it out, in order.
    pub fn commands(&self) -> Result<Vec<DmCommand>, OperationError> {
        if self.vm().is_some_and(str::is_empty) {
            return Err(OperationError::EmptyVmName);
        }
        Ok(match self {
            Self::Provision {
                vm,
                pkg_url,
                pkg_hash,
                resources,
            } => {
                let hex = pkg_hash.strip_prefix("sha256:").unwrap_or_default();
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(OperationError::BadHash);
                }
                let mut commands = vec![
                    DmCommand::Add {
                        uri: vm_uri(vm),
                        format: "node".into(),
                        value: None,
                    },
                    replace(format!("{}/Image/PkgURL", vm_uri(vm)), "chr", pkg_url),
                    replace(format!("{}/Image/PkgHash", vm_uri(vm)), "chr", pkg_hash),
                ];
                commands.extend(resource_commands(vm, resources));
                commands.push(exec(vm, "Provision"));
                commands
            }
            Self::Start { vm } => vec![exec(vm, "Start")],
            Self::Stop { vm } => vec![exec(vm, "Stop")],
            Self::Suspend { vm } => vec![exec(vm, "Suspend")],
            Self::Resume { vm } => vec![exec(vm, "Resume")],
            Self::Lock {
                vm,
                full,
                user_unlock_code,
            } => {
                let lock = format!("{}/Lock", vm_uri(vm));
                let mut commands = Vec::new();
                match user_unlock_code {
                    Some(code) if code.is_empty() => return Err(OperationError::EmptyUnlockCode),
                    Some(code) => {
                        commands.push(replace(format!("{lock}/UserUnlockCode"), "chr", code));
                        commands.push(replace(format!("{lock}/UserUnlockAllowed"), "bool", true));
                    }
                    None => {
                        commands.push(replace(format!("{lock}/UserUnlockAllowed"), "bool", false))
                    }
                }
                commands.push(exec(vm, if *full { "FullyLock" } else { "PartiallyLock" }));
                commands
            }
            Self::Unlock { vm } => vec![exec(vm, "Unlock")],
            Self::Delete { vm } => vec![exec(vm, "Delete")],
            Self::Peripheral {
                vm,
                peripheral,
                allowed,
            } => vec![replace(
                format!(
                    "{}/Peripherals/{}/Allowed",
                    vm_uri(vm),
                    omadm::tree::uri::escape(peripheral)
                ),
                "bool",
                allowed,
            )],
            Self::Sharing { vm, allowed, peers } => {
                let base = format!("{}/DataSharing", vm_uri(vm));
                let mut commands = vec![replace(format!("{base}/Allowed"), "bool", allowed)];
                if let Some(peers) = peers {
                    commands.push(replace(format!("{base}/Peers"), "chr", peers));
                }
                commands
            }
            Self::Resources { vm, resources } => {
                let commands = resource_commands(vm, resources);
                if commands.is_empty() {
                    return Err(OperationError::NothingToChange);
                }
                commands
            }
            Self::Firmware { vm, pkg_url } => {
                let base = format!("{}/Firmware/DownloadAndUpdate", vm_uri(vm));
                vec![
                    replace(format!("{base}/PkgURL"), "chr", pkg_url),
                    DmCommand::Exec {
                        uri: base,
                        data: None,
                    },
                ]
            }
            Self::Refresh => vec![DmCommand::Get {
                uri: format!("{VIRMO_ROOT}?list=StructData"),
            }],
        })
    }
}

/// Whether the result code of an OperationComplete (1200) or FUMO (200) alert is a success.
pub fn result_is_success(alert_type: &str, code: i64) -> bool {
    if alert_type.starts_with(FUMO_PREFIX) {
        code == 200
    } else {
        code == 1200
    }
}

/// The VirMO result codes, for messages.
pub fn result_text(code: i64) -> &'static str {
    match code {
        1200 | 200 => "successful",
        1400 => "client error",
        1401 => "cancelled",
        1402 => "image corrupt or hash mismatch",
        1403 => "not allowed in this state",
        1404 => "not found",
        1405 => "not enough resources on the device",
        1406 => "bad configuration",
        1407 => "VM locked",
        1500 => "failed",
        1501 => "download failed",
        1502 => "timed out",
        _ => "unknown result code",
    }
}

/// The omadm command of a job's command (CmdID assigned when sent); Execs carry `correlator`.
pub fn to_dm(command: &DmCommand, correlator: &str) -> omadm::model::Command {
    use omadm::model::{Command, Exec, Item, ItemCommand, Meta};
    match command {
        DmCommand::Get { uri } => {
            Command::Get(ItemCommand::new(0, vec![Item::target(uri.clone())]))
        }
        DmCommand::Delete { uri } => {
            Command::Delete(ItemCommand::new(0, vec![Item::target(uri.clone())]))
        }
        DmCommand::Add { uri, format, value } => {
            let mut item = Item::target(uri.clone()).with_meta(Meta::with_format(format.clone()));
            if let Some(value) = value {
                item = item.with_data(value.as_str());
            }
            Command::Add(ItemCommand::new(0, vec![item]))
        }
        DmCommand::Replace { uri, format, value } => Command::Replace(ItemCommand::new(
            0,
            vec![Item::target(uri.clone())
                .with_meta(Meta::with_format(format.clone()))
                .with_data(value.as_str())],
        )),
        DmCommand::Exec { uri, data } => {
            let mut item = Item::target(uri.clone());
            if let Some(data) = data {
                item = item.with_data(data.as_str());
            }
            Command::Exec(Exec::new(0, item).with_correlator(correlator))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn provision_adds_the_vm_sets_its_image_and_resources_then_execs() {
        let op = Operation::Provision {
            vm: "work vm".into(),
            pkg_url: "https://images/work.tar".into(),
            pkg_hash: HASH.into(),
            resources: Resources {
                vcpus: Some(2),
                ..Resources::default()
            },
        };
        let commands = op.commands().unwrap();
        let uris: Vec<_> = commands.iter().map(|c| (c.name(), c.uri())).collect();
        assert_eq!(
            uris,
            vec![
                ("Add", "./VirMO/VM/work%20vm"),
                ("Replace", "./VirMO/VM/work%20vm/Image/PkgURL"),
                ("Replace", "./VirMO/VM/work%20vm/Image/PkgHash"),
                ("Replace", "./VirMO/VM/work%20vm/Resources/VCPUs"),
                ("Exec", "./VirMO/VM/work%20vm/Operations/Provision"),
            ]
        );
        assert_eq!(op.label(), "provision work vm");
    }

    #[test]
    fn bad_operations_are_refused_before_they_are_queued() {
        let bad_hash = Operation::Provision {
            vm: "w".into(),
            pkg_url: "u".into(),
            pkg_hash: "md5:00".into(),
            resources: Resources::default(),
        };
        assert_eq!(bad_hash.commands(), Err(OperationError::BadHash));
        assert_eq!(
            Operation::Start { vm: String::new() }.commands(),
            Err(OperationError::EmptyVmName)
        );
        assert_eq!(
            Operation::Resources {
                vm: "w".into(),
                resources: Resources::default()
            }
            .commands(),
            Err(OperationError::NothingToChange)
        );
    }

    #[test]
    fn lock_with_a_code_authorises_the_user_and_execs_the_lock() {
        let op = Operation::Lock {
            vm: "w".into(),
            full: true,
            user_unlock_code: Some("1234".into()),
        };
        let commands = op.commands().unwrap();
        assert_eq!(commands.len(), 3);
        assert_eq!(commands[2].uri(), "./VirMO/VM/w/Operations/FullyLock");
        assert!(matches!(&commands[1], DmCommand::Replace { value, .. } if value == "true"));
    }

    #[test]
    fn operations_round_trip_as_json() {
        let op = Operation::Resources {
            vm: "w".into(),
            resources: Resources {
                cpu_quota: Some(50),
                ..Resources::default()
            },
        };
        let json = serde_json::to_string(&op).unwrap();
        assert_eq!(json, r#"{"op":"resources","vm":"w","cpu_quota":50}"#);
        assert_eq!(serde_json::from_str::<Operation>(&json).unwrap(), op);
    }

    #[test]
    fn execs_carry_the_correlator() {
        let command = to_dm(&exec("w", "Start"), "virmo-1");
        let omadm::model::Command::Exec(exec) = command else {
            panic!("an Exec");
        };
        assert_eq!(exec.correlator.as_deref(), Some("virmo-1"));
        assert!(result_is_success(OPERATION_COMPLETE, 1200));
        assert!(!result_is_success(OPERATION_COMPLETE, 200));
        assert!(result_is_success(
            "org.openmobilealliance.dm.firmwareupdate.downloadandupdate",
            200
        ));
    }
}
