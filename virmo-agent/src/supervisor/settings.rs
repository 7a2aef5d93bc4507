//! Changes of a VM's settings (the Replace-able leaves): validated, stored, and applied to a
//! running VM at once where the contract says so (CPU quota, peripheral policy).

use std::sync::Arc;

use super::{Supervisor, SupervisorError};
use crate::model::{LockState, VmState};
use crate::store::Change;

/// One setting and its new value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    Name(String),
    PkgUrl(String),
    PkgHash(String),
    Vcpus(u8),
    MemoryMib(u64),
    StorageMib(u64),
    CpuQuota(u32),
    PeripheralAllowed {
        id: String,
        allowed: bool,
    },
    SharingAllowed(bool),
    SharingPeers(String),
    UserUnlockAllowed(bool),
    /// The code's hash (`None`: no code).
    UserUnlockCode(Option<String>),
    FirmwareDownloadUrl(String),
    FirmwareDownloadAndUpdateUrl(String),
}

/// Peripheral classes closed to the local user while a VM is locked.
pub const LOCAL_CLASSES: [&str; 2] = ["host-channel", "shared-folder"];

impl Supervisor {
    /// Changes a setting of VM `node`; returns the previous value (to undo it).
    pub fn change(
        self: &Arc<Self>,
        node: &str,
        setting: Setting,
    ) -> Result<Setting, SupervisorError> {
        let slot = self
            .find(node)
            .ok_or_else(|| SupervisorError::NotFound(node.to_owned()))?;
        let caps = &self.capabilities;
        let mut state = slot.lock();
        let mut record = state.record.clone();
        let mut peripherals = state.peripherals.clone();
        let mut extra = Vec::new();
        let running = state.record.state == VmState::Running;
        let previous = match setting.clone() {
            Setting::Name(name) => {
                if name.is_empty() || name.len() > 255 {
                    return Err(SupervisorError::Invalid("a name of 1..255 bytes".into()));
                }
                Setting::Name(std::mem::replace(&mut record.name, name))
            }
            Setting::PkgUrl(url) => {
                Setting::PkgUrl(std::mem::replace(&mut record.image.pkg_url, url))
            }
            Setting::PkgHash(hash) => {
                if !hash.is_empty() && crate::bundle::parse_pkg_hash(&hash).is_none() {
                    return Err(SupervisorError::Invalid(
                        "PkgHash is `sha256:<64 hex>`".into(),
                    ));
                }
                Setting::PkgHash(std::mem::replace(&mut record.image.pkg_hash, hash))
            }
            Setting::Vcpus(n) => {
                if n == 0 || u32::from(n) > caps.max_vcpus {
                    return Err(SupervisorError::Invalid(format!(
                        "VCPUs must be 1..={}",
                        caps.max_vcpus
                    )));
                }
                Setting::Vcpus(record.resources.vcpus.replace(n).unwrap_or(record.vcpus()))
            }
            Setting::MemoryMib(mib) => {
                if !(32..=caps.max_memory_mib).contains(&mib) {
                    return Err(SupervisorError::Invalid(format!(
                        "MemoryMiB must be 32..={}",
                        caps.max_memory_mib
                    )));
                }
                let old = record.memory_mib();
                record.resources.memory_mib = Some(mib);
                Setting::MemoryMib(old)
            }
            Setting::StorageMib(mib) => {
                let old = record.storage_mib();
                if mib < old {
                    return Err(SupervisorError::NotAllowed(format!(
                        "StorageMiB only grows (now {old})"
                    )));
                }
                if mib > caps.max_storage_mib {
                    return Err(SupervisorError::Invalid(format!(
                        "StorageMiB must be at most {}",
                        caps.max_storage_mib
                    )));
                }
                record.resources.storage_mib = Some(mib);
                Setting::StorageMib(old)
            }
            Setting::CpuQuota(percent) => {
                if percent > caps.max_vcpus.saturating_mul(100) {
                    return Err(SupervisorError::Invalid(format!(
                        "CPUQuota must be 0..={}",
                        caps.max_vcpus * 100
                    )));
                }
                if running && state.process.is_some() {
                    self.cgroups
                        .set_quota(&record.id, percent)
                        .map_err(|e| SupervisorError::Live(crate::error_chain(&e)))?;
                }
                Setting::CpuQuota(std::mem::replace(&mut record.resources.cpu_quota, percent))
            }
            Setting::PeripheralAllowed { id, allowed } => {
                let peripheral = peripherals
                    .iter_mut()
                    .find(|p| p.id == id)
                    .ok_or_else(|| SupervisorError::NotFound(id.clone()))?;
                let old = std::mem::replace(&mut peripheral.allowed, allowed);
                let gated_by_lock = record.lock.state != LockState::Unlocked
                    && LOCAL_CLASSES.contains(&peripheral.class.as_str());
                if let Some(process) = state.process.as_ref().filter(|_| running) {
                    let effective = allowed && !gated_by_lock;
                    process
                        .client()
                        .set_device_policy(&id, effective)
                        .map_err(|e| SupervisorError::Live(crate::error_chain(&e)))?;
                }
                Setting::PeripheralAllowed { id, allowed: old }
            }
            Setting::SharingAllowed(allowed) => {
                Setting::SharingAllowed(std::mem::replace(&mut record.sharing.allowed, allowed))
            }
            Setting::SharingPeers(peers) => {
                if peers != "*"
                    && !peers.is_empty()
                    && !peers.split(',').all(|p| p.trim().len() == 36)
                {
                    return Err(SupervisorError::Invalid(
                        "Peers is `*` or comma-separated VM IDs".into(),
                    ));
                }
                Setting::SharingPeers(std::mem::replace(&mut record.sharing.peers, peers))
            }
            Setting::UserUnlockAllowed(allowed) => Setting::UserUnlockAllowed(std::mem::replace(
                &mut record.lock.user_unlock_allowed,
                allowed,
            )),
            Setting::UserUnlockCode(hash) => {
                let old = self
                    .store
                    .secret(&record.id, crate::jobs::lock::CODE_SECRET)?;
                extra.push(Change::SetSecret {
                    vm_id: record.id.clone(),
                    kind: crate::jobs::lock::CODE_SECRET.into(),
                    value: hash,
                });
                record.lock.failed_attempts = 0;
                record.lock.lockouts = 0;
                record.lock.blocked_until = 0;
                Setting::UserUnlockCode(old)
            }
            Setting::FirmwareDownloadUrl(url) => Setting::FirmwareDownloadUrl(std::mem::replace(
                &mut record.firmware.download_url,
                url,
            )),
            Setting::FirmwareDownloadAndUpdateUrl(url) => Setting::FirmwareDownloadAndUpdateUrl(
                std::mem::replace(&mut record.firmware.download_and_update_url, url),
            ),
        };
        let mut changes: Vec<Change> = vec![Change::SaveVm(record.clone())];
        if peripherals != state.peripherals {
            changes.push(Change::SetPeripherals {
                vm_id: record.id.clone(),
                peripherals: peripherals.clone(),
            });
        }
        changes.extend(extra);
        self.store.apply(changes)?;
        if record.sharing != state.record.sharing {
            // Live: a prohibition refuses new streams and cuts open ones at once.
            self.broker
                .set_policy(&record.id, super::sharing_policy(&record));
        }
        state.record = record;
        state.peripherals = peripherals;
        Ok(previous)
    }
}
