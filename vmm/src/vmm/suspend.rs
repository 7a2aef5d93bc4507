//! Suspend: the whole VM saved into a snapshot folder ([`VmRequest::Snapshot`], VirMO
//! "suspend"); then, unless the caller keeps it, the process ends and the VM holds no RAM and no
//! CPU.
//!
//! # Sequence ([`Vmm::snapshot`])
//! 1. Under the run-state lock (no pause, resume or shutdown meanwhile): a running VM is paused.
//!    [`VcpuSet::pause`] returns once every vCPU thread is parked outside `KVM_RUN` after
//!    completing its pending port/MMIO access (`complete_pending_io` on its own thread). The
//!    virtio event loop is stopped, so no device request is half done and no backend writes
//!    guest memory (it starts again if the VM is to run on in this process).
//! 2. Every vCPU ([`save_vcpu`], index order), then the VM-wide state ([`save_vm`]: PIC, IOAPIC,
//!    PIT, kvmclock), then every device of the [`PersistRegistry`](crate::devices::persist)
//!    (platform devices, virtio transports, then the devices added by the `extra_devices` hook)
//!    in registration order.
//! 3. The VM config (JSON) in `MachineConfig::vm_config`, so a new process can rebuild the same
//!    VM without the original command line.
//! 4. [`SnapshotWriter::write`]: memory, state, manifest, fsync, atomic rename.
//! 5. Success: the VM stays paused; with `keep_running: false` it is marked suspended (it may
//!    never run again in this process: the snapshot is its future) and, once the API answer is
//!    flushed, [`Vmm::after_answer`] raises [`StopReason::Suspended`] and `main` exits with 0.
//!    Failure: a VM that was running runs again; nothing else changed.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use kvm_ioctls::Kvm;

use super::control::invalid_state;
use super::{lock, Vmm};
use crate::api::types::{RunState, SnapshotInfo};
use crate::control::{ControlError, VmRequest, VmResponse};
use crate::devices::persist::DeviceStatesError;
use crate::snapshot::{
    save_vcpu, save_vm, MachineConfig, MachineState, MemoryLayout, SnapshotWriter, StoreError,
    VcpuSaveContext, VcpuStateError, VmStateError,
};
use crate::stop::StopReason;
use crate::vstate::vcpus::VcpuSet;

/// Why the VM could not be saved. The VM is as it was before the request.
#[derive(Debug, thiserror::Error)]
pub enum SuspendError {
    #[error("a VM in state {0:?} cannot be saved: only a running or paused VM can")]
    NotSaveable(RunState),
    #[error("the VM is stopping ({0})")]
    Stopping(StopReason),
    #[error("cannot open /dev/kvm to read the list of saveable MSRs")]
    Kvm(#[source] kvm_ioctls::Error),
    #[error("cannot prepare saving the vCPUs")]
    VcpuContext(#[source] VcpuStateError),
    #[error("cannot save vCPU {index}")]
    Vcpu {
        index: u8,
        #[source]
        source: VcpuStateError,
    },
    #[error("cannot save the interrupt controllers, PIT and clock")]
    Vm(#[source] VmStateError),
    #[error("cannot save the devices")]
    Devices(#[source] DeviceStatesError),
    #[error("cannot record the VM configuration")]
    Config(#[source] serde_json::Error),
    #[error("cannot write the snapshot")]
    Write(#[source] StoreError),
}

/// Whether a write error is about the folder the caller named rather than about the VMM.
fn is_bad_folder(error: &StoreError) -> bool {
    match error {
        StoreError::BadTarget(_) => true,
        StoreError::Io { source, .. } => {
            matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) || matches!(source.raw_os_error(), Some(libc::EROFS | libc::ENOTDIR))
        }
        _ => false,
    }
}

impl From<SuspendError> for ControlError {
    fn from(error: SuspendError) -> Self {
        let text = crate::error_chain(&error);
        match error {
            SuspendError::NotSaveable(state) => {
                invalid_state(state, "only a running or paused VM can be saved")
            }
            SuspendError::Stopping(_) => ControlError::InvalidState {
                state: "stopping".into(),
                reason: text,
            },
            SuspendError::Write(ref e) if is_bad_folder(e) => ControlError::BadRequest(text),
            _ => ControlError::Internal(text),
        }
    }
}

impl Vmm {
    /// Saves the whole VM into the folder `dir` (see [`VmRequest::Snapshot`] and the module
    /// documentation). With `keep_running` the VM stays paused afterwards; without it the VM is
    /// marked suspended: it refuses every request but `GetInfo`/`ListDevices`, and the caller
    /// ends the process (the API path does it through [`Vmm::after_answer`]).
    pub fn snapshot(&self, dir: &Path, keep_running: bool) -> Result<SnapshotInfo, SuspendError> {
        let started = Instant::now();
        let mut state = lock(&self.state);
        let was_running = match *state {
            RunState::Running => true,
            RunState::Paused => false,
            other => return Err(SuspendError::NotSaveable(other)),
        };
        if let Some(reason) = self.stop.reason() {
            return Err(SuspendError::Stopping(reason));
        }
        if was_running {
            self.with_vcpus(|set| set.map(VcpuSet::pause));
            *state = RunState::Paused;
        }
        // No device request may be half done, nor any device write guest memory, while saving.
        self.virtio.stop();
        let saved = self.save_into(dir, started);
        if saved.is_err() || keep_running {
            if let Err(e) = self.virtio.start() {
                tracing::error!(error = %crate::error_chain(&e), "cannot restart the virtio event loop");
            }
        }
        match saved {
            Ok(info) => {
                if !keep_running {
                    self.suspended.store(true, Ordering::SeqCst);
                }
                tracing::info!(
                    id = %self.config.id,
                    dir = %dir.display(),
                    memory_bytes_written = info.memory_bytes_written,
                    duration_ms = info.duration_ms,
                    "VM saved"
                );
                Ok(info)
            }
            Err(e) => {
                if was_running {
                    self.with_vcpus(|set| set.map(VcpuSet::resume));
                    *state = RunState::Running;
                }
                tracing::warn!(id = %self.config.id, error = %crate::error_chain(&e), "snapshot failed");
                Err(e)
            }
        }
    }

    /// Whether a suspend saved the VM (it must not run again in this process).
    pub fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::SeqCst)
    }

    /// To be called once the answer to `request` has been sent (the API server's
    /// [`after_response`](crate::api::server::ApiServer::after_response) hook): after a
    /// successful request that [ends the process](VmRequest::ends_process) it makes sure the
    /// VM stops, so `main` exits with status 0: a suspend raises [`StopReason::Suspended`];
    /// `Stop` and `Shutdown` raised their reason already (the first reason raised wins).
    pub fn after_answer(&self, request: &VmRequest, result: &Result<VmResponse, ControlError>) {
        if !request.ends_process() || result.is_err() {
            return;
        }
        let reason = match request {
            VmRequest::Snapshot { .. } => StopReason::Suspended,
            _ => StopReason::StopRequested,
        };
        self.stop.raise(reason);
    }

    /// Steps 2-4 of the sequence, with every vCPU parked.
    fn save_into(&self, dir: &Path, started: Instant) -> Result<SnapshotInfo, SuspendError> {
        let kvm = Kvm::new().map_err(SuspendError::Kvm)?;
        let context =
            VcpuSaveContext::new(&kvm, self.vm.fd()).map_err(SuspendError::VcpuContext)?;
        let vcpus = self.with_vcpus(|set| {
            let Some(set) = set else {
                return Err(SuspendError::NotSaveable(RunState::Created));
            };
            set.vcpus()
                .iter()
                .map(|vcpu| {
                    let vcpu = lock(vcpu);
                    save_vcpu(vcpu.fd(), &context).map_err(|source| SuspendError::Vcpu {
                        index: vcpu.index(),
                        source,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })?;
        let mut vm = save_vm(self.vm.fd()).map_err(SuspendError::Vm)?;
        vm.devices = self.persist.save_all().map_err(SuspendError::Devices)?;
        let machine = MachineState {
            vm_id: self.config.id.clone(),
            config: MachineConfig {
                vcpu_count: u32::from(self.config.vcpus),
                memory_mib: self.config.memory_mib,
                kernel_cmdline: self.config.cmdline.clone(),
                vm_config: serde_json::to_vec(&self.config).map_err(SuspendError::Config)?,
            },
            memory: MemoryLayout::of(&self.memory),
            vcpus,
            vm,
        };
        let summary = SnapshotWriter::new(dir)
            .and_then(|mut writer| writer.write(&machine, &self.memory))
            .map_err(SuspendError::Write)?;
        Ok(SnapshotInfo {
            dir: dir.to_path_buf(),
            state_bytes: summary.manifest.state.len,
            memory_bytes_written: summary.memory_data_bytes,
            memory_size: summary.manifest.memory.len,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn io(kind: std::io::ErrorKind) -> StoreError {
        StoreError::Io {
            op: "create folder",
            path: PathBuf::from("/x/y"),
            source: std::io::Error::from(kind),
        }
    }

    #[test]
    fn folder_problems_are_bad_requests_and_the_rest_internal() {
        let bad = ControlError::from(SuspendError::Write(io(std::io::ErrorKind::NotFound)));
        assert!(
            matches!(bad, ControlError::BadRequest(ref t) if t.contains("/x/y")),
            "{bad:?}"
        );
        let denied = ControlError::from(SuspendError::Write(io(
            std::io::ErrorKind::PermissionDenied,
        )));
        assert!(matches!(denied, ControlError::BadRequest(_)));
        let full = ControlError::from(SuspendError::Write(StoreError::Io {
            op: "write",
            path: PathBuf::from("/x/y"),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        }));
        assert!(matches!(full, ControlError::Internal(_)));
        let state = ControlError::from(SuspendError::NotSaveable(RunState::ShuttingDown));
        assert!(
            matches!(state, ControlError::InvalidState { ref state, .. } if state == "shuttingdown")
        );
    }
}
