//! Builds a VM from a [`VmConfig`], runs it, and serves the control surface
//! ([`VmControl`](crate::control::VmControl), in `control`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vm_memory::GuestMemoryMmap;

use crate::api::types::RunState;
use crate::arch::x86_64::acpi::{self, AcpiConfig, AcpiError};
use crate::arch::x86_64::boot::{self, BootError, BootInputs, KernelFormat};
use crate::arch::x86_64::regs::EntryMode;
use crate::config::{ConfigError, ConsoleConfig, VmConfig};
use crate::devices::acpi_pm::{self, Ged};
use crate::devices::bus::{Bus, BusError};
use crate::devices::console;
use crate::devices::persist::{DeviceStatesError, PersistRegistry};
use crate::devices::resources::{ResourceError, Resources};
use crate::devices::serial::SerialDevice;
use crate::memory::{self, MemoryError, ACPI_TABLES_END, ACPI_TABLES_START};
use crate::stop::{StopReason, StopSignal};
use crate::vstate::vcpu::{Vcpu, VcpuError};
use crate::vstate::vcpus::{VcpuSet, VcpuThreadError};
use crate::vstate::vm::{IrqChip, PendingVm, Vm, VmError};

mod control;
mod platform;
pub mod restore;
pub mod suspend;

use platform::Devices;
pub use platform::{ACPI_PM_ID, GED_ID, I8042_ID, PVPANIC_ID, RTC_ID, SERIAL_ID};
mod virtio_devices;
mod virtio_persist;

pub use virtio_devices::{PlacedDevice, VirtioDevices, VirtioSetupError};

/// How long the process waits after a stop asked for through the API, so the API answer is
/// written before the process exits.
pub const API_ANSWER_GRACE: Duration = Duration::from_millis(200);

/// Why the VM could not be built or started. Every variant means exit status 1.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("invalid VM configuration")]
    Config(#[from] ConfigError),
    #[error("KVM")]
    Vm(#[from] VmError),
    #[error("guest memory")]
    Memory(#[from] MemoryError),
    #[error("cannot load the guest")]
    Boot(#[from] BootError),
    #[error("cannot build the ACPI tables")]
    Acpi(#[from] AcpiError),
    #[error("cannot set up a vCPU")]
    Vcpu(#[from] VcpuError),
    #[error("cannot start the vCPUs")]
    VcpuThreads(#[from] VcpuThreadError),
    #[error("cannot place a device")]
    Bus(#[from] BusError),
    #[error("cannot give a device its resources")]
    Resources(#[from] ResourceError),
    #[error("cannot open the serial console output")]
    Console(#[source] std::io::Error),
    #[error("cannot start the console input thread")]
    ConsoleInput(#[source] std::io::Error),
    #[error("cannot add device {name}")]
    ExtraDevice {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot register a device for snapshots")]
    Persist(#[from] DeviceStatesError),
    #[error("cannot set up the virtio devices")]
    Virtio(#[from] VirtioSetupError),
    #[error("the VM was already started")]
    AlreadyStarted,
}

/// What a device needs to join the VM: the buses, interrupt lines, MMIO windows, DSDT entries,
/// guest memory, and the snapshot registry (every device adds itself there: a device that is not
/// registered makes snapshots of the VM incomplete). Given to the `extra_devices` hook of
/// [`Vmm::build_with_devices`] and [`Vmm::restore`]; the hook must add the same devices in the
/// same order for the same config, so that a restored VM has the layout of the saved one.
pub struct DeviceSetup<'a> {
    pub vm: &'a Vm,
    pub memory: &'a GuestMemoryMmap,
    pub pio: &'a Arc<Bus>,
    pub mmio: &'a Arc<Bus>,
    pub resources: &'a mut Resources,
    pub stop: &'a Arc<StopSignal>,
    pub persist: &'a mut PersistRegistry,
}

/// A hook adding devices (e.g. virtio-mmio) while the VM is built.
pub type ExtraDevices<'h> = Box<dyn FnOnce(&mut DeviceSetup<'_>) -> Result<(), VmmError> + 'h>;

/// Where the guest's initial memory and CPU state come from.
enum GuestSource {
    /// Fresh memory; kernel, initramfs and ACPI tables loaded; boot vCPU at the kernel entry.
    Boot,
    /// Memory rebuilt from a snapshot (mapped or read from its memory file); CPU and device
    /// state left to the snapshot restore.
    Snapshot(GuestMemoryMmap),
}

/// One VM: built, then started, then stopped once.
pub struct Vmm {
    config: VmConfig,
    vm: Vm,
    memory: GuestMemoryMmap,
    stop: Arc<StopSignal>,
    ged: Arc<Mutex<Ged>>,
    /// Every device, for snapshots.
    persist: PersistRegistry,
    /// Set once a suspend saved the VM: it must not run again in this process.
    suspended: AtomicBool,
    virtio: VirtioDevices,
    state: Mutex<RunState>,
    created_vcpus: Mutex<Vec<Vcpu>>,
    vcpus: Mutex<Option<VcpuSet>>,
    /// When the VMM began building the VM.
    built_at: Instant,
    started_at: Mutex<Option<Instant>>,
    /// Set when a control request led to the stop: its answer is still to be written.
    api_answer_pending: AtomicBool,
    /// The serial port that the VMM's stdin feeds, until [`Vmm::start`] starts feeding it (a
    /// restore replaces the UART's state, so input taken before would be lost).
    console_input: Mutex<Option<Arc<Mutex<SerialDevice>>>>,
}

/// The start of a VMM process: when it began (for the console's boot-time report) and the KVM
/// VM already being created ([`PendingVm`]) while the process parses its arguments, reads a
/// snapshot or loads a kernel. Begin it as early as possible.
pub struct Launch {
    started: Instant,
    vm: PendingVm,
}

impl Launch {
    /// A process that started at `started`; the KVM VM starts being created now.
    pub fn begin(started: Instant) -> Result<Self, VmmError> {
        Ok(Self {
            started,
            vm: PendingVm::start(IrqChip::InKernel)?,
        })
    }

    /// When the process started.
    pub fn started(&self) -> Instant {
        self.started
    }
}

impl Vmm {
    /// Builds the VM described by `config` with the platform devices only.
    pub fn build(config: VmConfig) -> Result<Self, VmmError> {
        Self::build_with_devices(config, Launch::begin(Instant::now())?, Box::new(|_| Ok(())))
    }

    /// Builds the VM on `launch`'s KVM VM, calling `extra_devices` after the platform devices
    /// are in place and before the DSDT is written.
    pub fn build_with_devices(
        config: VmConfig,
        launch: Launch,
        extra_devices: ExtraDevices<'_>,
    ) -> Result<Self, VmmError> {
        Self::build_inner(config, launch, extra_devices, GuestSource::Boot)
    }

    /// Builds the VM for restoring a snapshot: the same machine and devices, on `memory` (the
    /// guest memory rebuilt from the snapshot, of `config`'s size), but no kernel, ACPI tables
    /// or boot registers are written. Before [`Vmm::start`], the caller sets the state of the
    /// VM ([`Vmm::vm`]), of each vCPU ([`Vmm::with_created_vcpus`]) and of each device
    /// ([`Vmm::restore`] does all of it).
    pub fn build_for_restore(
        config: VmConfig,
        memory: GuestMemoryMmap,
        launch: Launch,
        extra_devices: ExtraDevices<'_>,
    ) -> Result<Self, VmmError> {
        Self::build_inner(config, launch, extra_devices, GuestSource::Snapshot(memory))
    }

    /// Builds the VM on the KVM VM `launch` is creating.
    fn build_inner(
        config: VmConfig,
        launch: Launch,
        extra_devices: ExtraDevices<'_>,
        source: GuestSource,
    ) -> Result<Self, VmmError> {
        let Launch {
            started: vmm_started,
            vm: pending,
        } = launch;
        config.validate_machine()?;
        let format = match source {
            GuestSource::Boot => Some(config.validate_boot_files()?),
            GuestSource::Snapshot(_) => None,
        };
        let (hypervisor, mut vm) = pending.wait()?;
        config.validate_for_host(hypervisor.host_limits())?;
        tracing::debug!(ms = vmm_started.elapsed().as_millis() as u64, "VM created");
        let memory = match source {
            GuestSource::Boot => memory::create_guest_memory(config.memory_bytes())?,
            GuestSource::Snapshot(memory) => memory,
        };
        vm.register_memory(&memory)?;
        tracing::debug!(
            ms = vmm_started.elapsed().as_millis() as u64,
            "VM and memory created"
        );
        let devices = Devices::build(&vm, &memory, &config, vmm_started, extra_devices)?;
        tracing::debug!(
            ms = vmm_started.elapsed().as_millis() as u64,
            "devices created"
        );

        let entry = match format {
            Some(format) => Some(Self::load_guest(
                &config,
                format,
                &memory,
                devices.resources.dsdt_aml(),
            )?),
            None => None,
        };
        tracing::debug!(
            ms = vmm_started.elapsed().as_millis() as u64,
            "guest loaded"
        );

        // A restored vCPU gets all of its state, CPUID included, from the snapshot.
        let boot = match entry {
            Some(entry) => Some((
                hypervisor.supported_cpuid()?,
                hypervisor.has_tsc_deadline(),
                entry,
            )),
            None => None,
        };
        let mut vcpus = Vec::with_capacity(usize::from(config.vcpus));
        for index in 0..config.vcpus {
            let vcpu = Vcpu::new(
                &vm,
                index,
                Arc::clone(&devices.pio),
                Arc::clone(&devices.mmio),
            )?;
            if let Some((cpuid, tsc_deadline, entry)) = &boot {
                vcpu.configure(cpuid, config.vcpus, *tsc_deadline, IrqChip::InKernel)?;
                if index == 0 {
                    vcpu.configure_boot(&memory, entry)?;
                }
            }
            vcpus.push(vcpu);
        }
        Self::assemble(config, vm, memory, devices, vcpus, vmm_started)
    }

    /// The VM from its parts, ready to [`start`](Self::start).
    fn assemble(
        config: VmConfig,
        vm: Vm,
        memory: GuestMemoryMmap,
        devices: Devices,
        vcpus: Vec<Vcpu>,
        vmm_started: Instant,
    ) -> Result<Self, VmmError> {
        let console_input = (config.console == ConsoleConfig::Stdout).then_some(devices.serial);
        Ok(Self {
            config,
            vm,
            memory,
            stop: devices.stop,
            ged: devices.ged,
            persist: devices.persist,
            suspended: AtomicBool::new(false),
            virtio: devices.virtio,
            state: Mutex::new(RunState::Created),
            created_vcpus: Mutex::new(vcpus),
            vcpus: Mutex::new(None),
            built_at: vmm_started,
            started_at: Mutex::new(None),
            api_answer_pending: AtomicBool::new(false),
            console_input: Mutex::new(console_input),
        })
    }

    /// Writes the ACPI tables, the reset stub, the kernel, initramfs and command line; returns
    /// how the boot vCPU enters the kernel.
    fn load_guest(
        config: &VmConfig,
        format: KernelFormat,
        memory: &GuestMemoryMmap,
        dsdt_aml: &[u8],
    ) -> Result<EntryMode, VmmError> {
        let tables = acpi::build(
            &AcpiConfig {
                vcpus: config.vcpus,
                dsdt_aml,
                pm: acpi_pm::pm_registers(),
            },
            ACPI_TABLES_START,
            ACPI_TABLES_END,
        )?;
        acpi::write(memory, &tables)?;
        let pm = acpi_pm::pm_registers();
        boot::write_reset_stub(memory, pm.reset_port, pm.reset_value)?;
        let entry = boot::load(
            memory,
            &BootInputs {
                kernel: &config.kernel,
                format,
                bzimage_boot: config.bzimage_boot,
                initramfs: config.initramfs.as_deref(),
                cmdline: &config.cmdline,
                mem_bytes: config.memory_bytes(),
                rsdp_addr: tables.rsdp_addr,
            },
        )?;
        Ok(entry)
    }

    /// Starts the vCPU threads.
    pub fn start(&self) -> Result<(), VmmError> {
        let vcpus = std::mem::take(&mut *lock(&self.created_vcpus));
        if vcpus.is_empty() {
            return Err(VmmError::AlreadyStarted);
        }
        self.virtio.start()?;
        // Only now: the serial port holds its final state (a restore has replaced it).
        if let Some(serial) = lock(&self.console_input).take() {
            console::spawn_stdin_reader(serial).map_err(VmmError::ConsoleInput)?;
        }
        let set = VcpuSet::start(vcpus, Arc::clone(&self.stop))?;
        *lock(&self.vcpus) = Some(set);
        *lock(&self.started_at) = Some(Instant::now());
        *lock(&self.state) = RunState::Running;
        tracing::info!(
            id = %self.config.id,
            build_ms = self.built_at.elapsed().as_millis() as u64,
            "VM started"
        );
        Ok(())
    }

    /// Blocks until the VM stops, and returns why.
    pub fn wait(&self) -> StopReason {
        self.stop.wait()
    }

    /// Stops the vCPU threads (after [`Vmm::wait`]); waits for an API answer in flight.
    pub fn shut_down(&self) {
        if let Some(mut vcpus) = lock(&self.vcpus).take() {
            vcpus.exit();
        }
        if self.api_answer_pending.load(Ordering::SeqCst) {
            std::thread::sleep(API_ANSWER_GRACE);
        }
    }

    /// The stop signal (devices and tests may raise it).
    pub fn stop_signal(&self) -> &Arc<StopSignal> {
        &self.stop
    }

    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// The KVM VM (for snapshot).
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// Guest memory (for snapshot).
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The virtio devices (for snapshot: stop their event loop, save each transport).
    pub fn virtio(&self) -> &VirtioDevices {
        &self.virtio
    }

    /// Runs `f` on the vCPUs before [`Vmm::start`] (for snapshot restore); empty once started.
    pub fn with_created_vcpus<R>(&self, f: impl FnOnce(&mut [Vcpu]) -> R) -> R {
        f(&mut lock(&self.created_vcpus))
    }

    /// Runs `f` on the vCPU set (for snapshot: pause, then lock each vCPU).
    pub fn with_vcpus<R>(&self, f: impl FnOnce(Option<&VcpuSet>) -> R) -> R {
        f(lock(&self.vcpus).as_ref())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
pub(crate) mod tests;
