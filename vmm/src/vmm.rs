//! Builds a VM from a [`VmConfig`], runs it, and serves the control surface ([`VmControl`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vm_memory::GuestMemoryMmap;

use crate::api::types::{RunState, ShutdownOutcome, VmInfo};
use crate::arch::x86_64::acpi::{self, AcpiConfig, AcpiError};
use crate::arch::x86_64::boot::{self, BootError, BootInputs};
use crate::config::{ConfigError, ConsoleConfig, VmConfig};
use crate::control::{ControlError, VmControl, VmRequest, VmResponse};
use crate::devices::acpi_pm::{self, Ged};
use crate::devices::bus::{Bus, BusError};
use crate::devices::console;
use crate::devices::persist::{DeviceStatesError, PersistRegistry};
use crate::devices::resources::{ResourceError, Resources};
use crate::memory::{self, MemoryError, ACPI_TABLES_END, ACPI_TABLES_START};
use crate::stop::{StopReason, StopSignal};
use crate::vstate::vcpu::{Vcpu, VcpuError};
use crate::vstate::vcpus::{VcpuSet, VcpuThreadError};
use crate::vstate::vm::{Hypervisor, IrqChip, Vm, VmError};

mod platform;
pub mod restore;
pub mod suspend;

use platform::Devices;
pub use platform::{ACPI_PM_ID, GED_ID, I8042_ID, PVPANIC_ID, RTC_ID, SERIAL_ID};

/// How long the process waits after a stop asked for through the API, so the API answer is
/// written before the process exits.
pub const API_ANSWER_GRACE: Duration = Duration::from_millis(100);

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
    state: Mutex<RunState>,
    created_vcpus: Mutex<Vec<Vcpu>>,
    vcpus: Mutex<Option<VcpuSet>>,
    /// When the VMM began building the VM.
    built_at: Instant,
    started_at: Mutex<Option<Instant>>,
    /// Set when a control request led to the stop: its answer is still to be written.
    api_answer_pending: AtomicBool,
}

impl Vmm {
    /// Builds the VM described by `config` with the platform devices only.
    pub fn build(config: VmConfig) -> Result<Self, VmmError> {
        Self::build_with_devices(config, Instant::now(), Box::new(|_| Ok(())))
    }

    /// Builds the VM, calling `extra_devices` after the platform devices are in place and
    /// before the DSDT is written. `vmm_started` is when the process started (for the console's
    /// boot-time report).
    pub fn build_with_devices(
        config: VmConfig,
        vmm_started: Instant,
        extra_devices: ExtraDevices<'_>,
    ) -> Result<Self, VmmError> {
        let format = config.validate()?;
        let hypervisor = Hypervisor::open()?;
        config.validate_for_host(hypervisor.host_limits())?;
        let mut vm = hypervisor.create_vm(IrqChip::InKernel)?;
        let memory = memory::create_guest_memory(config.memory_bytes())?;
        vm.register_memory(&memory)?;
        let devices = Devices::build(&vm, &memory, &config, vmm_started, extra_devices)?;

        let tables = acpi::build(
            &AcpiConfig {
                vcpus: config.vcpus,
                dsdt_aml: devices.resources.dsdt_aml(),
                pm: acpi_pm::pm_registers(),
            },
            ACPI_TABLES_START,
            ACPI_TABLES_END,
        )?;
        acpi::write(&memory, &tables)?;
        let entry = boot::load(
            &memory,
            &BootInputs {
                kernel: &config.kernel,
                format,
                initramfs: config.initramfs.as_deref(),
                cmdline: &config.cmdline,
                mem_bytes: config.memory_bytes(),
                rsdp_addr: tables.rsdp_addr,
            },
        )?;

        let cpuid = hypervisor.supported_cpuid()?;
        let tsc_deadline = hypervisor.has_tsc_deadline();
        let mut vcpus = Vec::with_capacity(usize::from(config.vcpus));
        for index in 0..config.vcpus {
            let vcpu = Vcpu::new(
                &vm,
                index,
                Arc::clone(&devices.pio),
                Arc::clone(&devices.mmio),
            )?;
            vcpu.configure(&cpuid, config.vcpus, tsc_deadline, IrqChip::InKernel)?;
            if index == 0 {
                vcpu.configure_boot(&memory, &entry)?;
            }
            vcpus.push(vcpu);
        }
        Self::assemble(config, vm, memory, devices, vcpus, vmm_started)
    }

    /// The VM from its parts, ready to [`start`](Self::start); starts the console input.
    fn assemble(
        config: VmConfig,
        vm: Vm,
        memory: GuestMemoryMmap,
        devices: Devices,
        vcpus: Vec<Vcpu>,
        vmm_started: Instant,
    ) -> Result<Self, VmmError> {
        if config.console == ConsoleConfig::Stdout {
            console::spawn_stdin_reader(devices.serial).map_err(VmmError::ConsoleInput)?;
        }
        Ok(Self {
            config,
            vm,
            memory,
            stop: devices.stop,
            ged: devices.ged,
            persist: devices.persist,
            suspended: AtomicBool::new(false),
            state: Mutex::new(RunState::Created),
            created_vcpus: Mutex::new(vcpus),
            vcpus: Mutex::new(None),
            built_at: vmm_started,
            started_at: Mutex::new(None),
            api_answer_pending: AtomicBool::new(false),
        })
    }

    /// Starts the vCPU threads.
    pub fn start(&self) -> Result<(), VmmError> {
        let vcpus = std::mem::take(&mut *lock(&self.created_vcpus));
        if vcpus.is_empty() {
            return Err(VmmError::AlreadyStarted);
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

    /// Runs `f` on the vCPU set (for snapshot: pause, then lock each vCPU).
    pub fn with_vcpus<R>(&self, f: impl FnOnce(Option<&VcpuSet>) -> R) -> R {
        f(lock(&self.vcpus).as_ref())
    }

    fn info(&self) -> VmInfo {
        let uptime = lock(&self.started_at)
            .map(|t| t.elapsed())
            .unwrap_or_default();
        VmInfo {
            id: self.config.id.clone(),
            state: *lock(&self.state),
            vcpus: self.config.vcpus,
            memory_mib: self.config.memory_mib,
            uptime_ms: uptime.as_millis() as u64,
            pid: std::process::id(),
            vmm_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    fn pause(&self) -> Result<VmResponse, ControlError> {
        let mut state = lock(&self.state);
        if *state != RunState::Running {
            return Err(invalid_state(*state, "only a running VM can be paused"));
        }
        self.with_vcpus(|set| set.map(VcpuSet::pause));
        *state = RunState::Paused;
        Ok(VmResponse::Done)
    }

    fn resume(&self) -> Result<VmResponse, ControlError> {
        let mut state = lock(&self.state);
        if *state != RunState::Paused {
            return Err(invalid_state(*state, "only a paused VM can be resumed"));
        }
        self.with_vcpus(|set| set.map(VcpuSet::resume));
        *state = RunState::Running;
        Ok(VmResponse::Done)
    }

    fn shutdown(&self, timeout: Duration) -> Result<VmResponse, ControlError> {
        {
            let mut state = lock(&self.state);
            match *state {
                RunState::Running => {}
                RunState::Paused => self
                    .with_vcpus(|set| set.map(VcpuSet::resume))
                    .unwrap_or(()),
                other => return Err(invalid_state(other, "the VM is not running")),
            }
            *state = RunState::ShuttingDown;
        }
        self.api_answer_pending.store(true, Ordering::SeqCst);
        lock(&self.ged)
            .press_power_button()
            .map_err(|e| ControlError::Internal(format!("cannot press the power button: {e}")))?;
        let outcome = match self.stop.wait_timeout(timeout) {
            Some(_) => ShutdownOutcome::Graceful,
            None if self.stop.raise(StopReason::ShutdownForced) => ShutdownOutcome::Forced,
            // The guest stopped between the timeout and the forced stop.
            None => ShutdownOutcome::Graceful,
        };
        Ok(VmResponse::Shutdown(outcome))
    }
}

impl VmControl for Vmm {
    fn handle(&self, request: VmRequest) -> Result<VmResponse, ControlError> {
        if self.is_suspended() && !matches!(request, VmRequest::GetInfo | VmRequest::ListDevices) {
            return Err(ControlError::InvalidState {
                state: "suspended".into(),
                reason: "the VM was saved to a snapshot and this process is ending".into(),
            });
        }
        match request {
            VmRequest::GetInfo => Ok(VmResponse::Info(self.info())),
            VmRequest::Pause => self.pause(),
            VmRequest::Resume => self.resume(),
            VmRequest::Shutdown { timeout } => self.shutdown(timeout),
            VmRequest::Stop => {
                self.api_answer_pending.store(true, Ordering::SeqCst);
                self.stop.raise(StopReason::StopRequested);
                Ok(VmResponse::Done)
            }
            VmRequest::Snapshot { dir, keep_running } => self
                .snapshot(&dir, keep_running)
                .map(VmResponse::Snapshot)
                .map_err(ControlError::from),
            VmRequest::ListDevices => Ok(VmResponse::Devices(Vec::new())),
            VmRequest::SetDevicePolicy { id, .. } => {
                Err(ControlError::NotFound(format!("no device {id}")))
            }
        }
    }
}

fn invalid_state(state: RunState, reason: &str) -> ControlError {
    ControlError::InvalidState {
        state: format!("{state:?}").to_lowercase(),
        reason: reason.to_string(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
