//! Resume: a VM rebuilt in a new process from a snapshot folder written by a suspend
//! ([`super::suspend`]); the guest continues where it stopped. No kernel is loaded and no ACPI
//! table is written: they are in the saved guest memory.
//!
//! # Sequence ([`Vmm::restore`])
//! 1. [`Snapshot::open`]: manifest, lengths, header, checksums, format version (a damaged,
//!    truncated or foreign snapshot stops here with a typed error).
//! 2. The saved VM config (JSON in `MachineConfig::vm_config`), checked against the machine
//!    state (vCPU count, memory size and memory map) and against what the caller asked
//!    (`--vcpus`, `--memory-mib`): a different layout is refused. The caller may replace the
//!    console and the API socket only.
//! 3. Guest memory from `memory.bin` (lazily mapped or eagerly read), then
//!    [`Vmm::build_for_restore`]: the KVM VM with its irqchip and PIT on that memory, the same
//!    devices as the saved VM built by the same code (platform devices, then the
//!    `extra_devices` hook) so ports, interrupt lines and MMIO windows are the same, the vCPUs.
//! 5. Each vCPU restored ([`restore_vcpu`]: CPUID first, events last, `KVM_KVMCLOCK_CTRL` so
//!    the guest's lockup detectors ignore the time it spent suspended).
//! 6. The PICs and the IOAPIC ([`restore_interrupt_controllers`]): every interrupt controller
//!    holds its saved state before any device can raise an interrupt.
//! 7. Every device from its saved state: the snapshot must list exactly this VM's devices. A
//!    device with an interrupt still pending (the UART's IIR, a virtio InterruptStatus) raises
//!    it again, because its edge may not have reached the saved irqchip: KVM injects an irqfd
//!    routed to the IOAPIC from a kernel worker, after the eventfd write, so an interrupt raised
//!    right before the pause can still be in flight when the irqchip is saved.
//! 8. [`restore_timers`] last (PIT, then kvmclock), right before the vCPUs start.

use std::path::PathBuf;

use super::{ExtraDevices, Launch, Vmm, VmmError};
use crate::config::{ConsoleConfig, VmConfig};
use crate::devices::persist::DeviceStatesError;
use crate::memory::{self, MIB};
use crate::snapshot::{
    restore_interrupt_controllers, restore_timers, restore_vcpu, MachineState, MemoryRestore,
    Snapshot, StoreError, TargetLayout, VcpuStateError, VmStateError,
};

/// What `vmm --restore` was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOptions {
    /// The snapshot folder.
    pub dir: PathBuf,
    /// How guest memory is rebuilt from `memory.bin`.
    pub memory: MemoryRestore,
    /// The vCPU count the caller expects; refused when the snapshot has another.
    pub vcpus: Option<u8>,
    /// The memory size the caller expects; refused when the snapshot has another.
    pub memory_mib: Option<u64>,
    /// Replaces the saved console.
    pub console: Option<ConsoleConfig>,
    /// Replaces the saved API socket.
    pub api_socket: Option<PathBuf>,
}

impl RestoreOptions {
    /// Restore `dir` lazily, as saved.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            memory: MemoryRestore::Lazy,
            vcpus: None,
            memory_mib: None,
            console: None,
            api_socket: None,
        }
    }
}

/// Why a VM could not be restored. The process exits with status 1.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot use the snapshot")]
    Snapshot(#[source] StoreError),
    #[error("the snapshot's VM configuration does not decode")]
    Config(#[source] serde_json::Error),
    #[error("the snapshot contradicts itself: {0}")]
    Inconsistent(String),
    #[error("cannot rebuild the VM")]
    Build(#[from] VmmError),
    #[error("cannot restore vCPU {index}")]
    Vcpu {
        index: u8,
        #[source]
        source: VcpuStateError,
    },
    #[error("cannot restore the devices")]
    Devices(#[source] DeviceStatesError),
    #[error("cannot restore the interrupt controllers, PIT and clock")]
    Vm(#[source] VmStateError),
}

/// The VM config saved in `state`, checked against the rest of the state.
pub fn saved_config(state: &MachineState) -> Result<VmConfig, RestoreError> {
    let config: VmConfig =
        serde_json::from_slice(&state.config.vm_config).map_err(RestoreError::Config)?;
    let inconsistent = |what: String| Err(RestoreError::Inconsistent(what));
    if u32::from(config.vcpus) != state.config.vcpu_count {
        return inconsistent(format!(
            "its VM config has {} vCPUs, its machine state {}",
            config.vcpus, state.config.vcpu_count
        ));
    }
    if config.memory_mib != state.config.memory_mib {
        return inconsistent(format!(
            "its VM config has {} MiB of memory, its machine state {} MiB",
            config.memory_mib, state.config.memory_mib
        ));
    }
    if config.id != state.vm_id {
        return inconsistent(format!(
            "its VM config is for VM {:?}, its machine state for {:?}",
            config.id, state.vm_id
        ));
    }
    let expected: Vec<(u64, u64)> = memory::ram_ranges(config.memory_mib.saturating_mul(MIB))
        .into_iter()
        .map(|(start, len)| (start.0, len))
        .collect();
    let saved: Vec<(u64, u64)> = state
        .memory
        .regions
        .iter()
        .map(|r| (r.guest_addr, r.size))
        .collect();
    if saved != expected {
        return inconsistent(format!(
            "its memory regions {saved:x?} are not the memory map of {} MiB {expected:x?}",
            config.memory_mib
        ));
    }
    Ok(config)
}

impl Vmm {
    /// Rebuilds the VM saved in `options.dir` (see the module documentation), ready to
    /// [`start`](Self::start). `extra_devices` must add the same devices as when the VM was
    /// built (it gets the saved config).
    pub fn restore(
        options: &RestoreOptions,
        launch: Launch,
        extra_devices: ExtraDevices<'_>,
    ) -> Result<Self, RestoreError> {
        let vmm_started = launch.started();
        let snapshot = Snapshot::open(&options.dir).map_err(RestoreError::Snapshot)?;
        let mut config = saved_config(&snapshot.state)?;
        snapshot
            .check_fits(&TargetLayout {
                vcpu_count: u32::from(options.vcpus.unwrap_or(config.vcpus)),
                memory_bytes: options
                    .memory_mib
                    .unwrap_or(config.memory_mib)
                    .saturating_mul(MIB),
            })
            .map_err(RestoreError::Snapshot)?;
        if let Some(console) = &options.console {
            config.console = console.clone();
        }
        if options.api_socket.is_some() {
            config.api_socket = options.api_socket.clone();
        }

        let memory = snapshot
            .load_memory(options.memory)
            .map_err(RestoreError::Snapshot)?;
        let vmm = Self::build_for_restore(config, memory, launch, extra_devices)?;
        let state = &snapshot.state;
        vmm.with_created_vcpus(|vcpus| {
            vcpus
                .iter()
                .zip(&state.vcpus)
                .try_for_each(|(vcpu, saved)| {
                    restore_vcpu(vcpu.fd(), saved).map_err(|source| RestoreError::Vcpu {
                        index: vcpu.index(),
                        source,
                    })
                })
        })?;
        // Before the devices: see steps 6 and 7 of the module documentation.
        restore_interrupt_controllers(vmm.vm.fd(), &state.vm).map_err(RestoreError::Vm)?;
        vmm.persist
            .restore_all(&state.vm.devices)
            .map_err(RestoreError::Devices)?;
        restore_timers(vmm.vm.fd(), &state.vm).map_err(RestoreError::Vm)?;
        tracing::info!(
            id = %vmm.config.id,
            dir = %options.dir.display(),
            memory = ?options.memory,
            restore_ms = vmm_started.elapsed().as_millis() as u64,
            "VM restored"
        );
        Ok(vmm)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::snapshot::test_support::sample_machine_state;

    /// A machine state for a VM of `vcpus` and `memory_mib` whose saved config says so.
    fn state(vcpus: u8, memory_mib: u64) -> MachineState {
        let regions: Vec<(u64, u64)> = memory::ram_ranges(memory_mib * MIB)
            .into_iter()
            .map(|(start, len)| (start.0, len))
            .collect();
        let mut state = sample_machine_state(u32::from(vcpus), &regions);
        let mut config = VmConfig::new("/images/bzImage");
        config.id = state.vm_id.clone();
        config.vcpus = vcpus;
        config.memory_mib = memory_mib;
        state.config.vm_config = serde_json::to_vec(&config).unwrap();
        state
    }

    #[test]
    fn the_saved_config_comes_back() {
        let config = saved_config(&state(2, 4096)).unwrap();
        assert_eq!((config.vcpus, config.memory_mib), (2, 4096));
        assert_eq!(config.kernel, PathBuf::from("/images/bzImage"));
    }

    #[test]
    fn a_config_that_contradicts_the_machine_state_is_refused() {
        let mut other_vcpus = state(1, 128);
        other_vcpus.config.vcpu_count = 2;
        let mut other_memory = state(1, 128);
        other_memory.config.memory_mib = 256;
        let mut other_id = state(1, 128);
        other_id.vm_id = "else".into();
        let mut other_map = state(1, 128);
        other_map.memory.regions[0].guest_addr = 0x1000;
        for (state, what) in [
            (other_vcpus, "vCPUs"),
            (other_memory, "MiB"),
            (other_id, "VM"),
            (other_map, "memory map"),
        ] {
            let err = saved_config(&state).unwrap_err();
            assert!(
                matches!(&err, RestoreError::Inconsistent(text) if text.contains(what)),
                "{what}: {err:?}"
            );
        }
        let mut garbage = state(1, 128);
        garbage.config.vm_config = b"{not json".to_vec();
        assert!(matches!(
            saved_config(&garbage),
            Err(RestoreError::Config(_))
        ));
    }

    #[test]
    fn a_missing_snapshot_is_an_error_naming_it() {
        let err = Vmm::restore(
            &RestoreOptions::new("/nonexistent/virmo-snapshot"),
            Launch::begin(Instant::now()).unwrap(),
            Box::new(|_| Ok(())),
        )
        .err()
        .expect("no snapshot there");
        let text = crate::error_chain(&err);
        assert!(text.contains("/nonexistent/virmo-snapshot"), "{text}");
    }
}
