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
use crate::devices::acpi_pm::{self, AcpiPm, Ged};
use crate::devices::bus::{Bus, BusError};
use crate::devices::console::{self, ConsoleOutput};
use crate::devices::i8042::{I8042, I8042_PORT, I8042_PORT_LEN};
use crate::devices::pvpanic::{self, PvPanic, PVPANIC_PORT, PVPANIC_PORT_LEN};
use crate::devices::resources::{ResourceError, Resources};
use crate::devices::rtc::{self, CmosRtc, RTC_PORT, RTC_PORT_LEN};
use crate::devices::serial::{self, SerialDevice, COM1_GSI, COM1_PORT, COM1_PORT_LEN};
use crate::memory::{self, MemoryError, ACPI_TABLES_END, ACPI_TABLES_START};
use crate::stop::{StopReason, StopSignal};
use crate::vstate::vcpu::{Vcpu, VcpuError};
use crate::vstate::vcpus::{VcpuSet, VcpuThreadError};
use crate::vstate::vm::{Hypervisor, IrqChip, Vm, VmError};

mod virtio_devices;

pub use virtio_devices::{PlacedDevice, VirtioDevices, VirtioSetupError};

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
    #[error("cannot set up the virtio devices")]
    Virtio(#[from] VirtioSetupError),
    #[error("the VM was already started")]
    AlreadyStarted,
}

/// What a device needs to join the VM: the buses, interrupt lines, MMIO windows, DSDT entries
/// and guest memory. Given to the `extra_devices` hook of [`Vmm::build_with_devices`].
pub struct DeviceSetup<'a> {
    pub vm: &'a Vm,
    pub memory: &'a GuestMemoryMmap,
    pub pio: &'a Arc<Bus>,
    pub mmio: &'a Arc<Bus>,
    pub resources: &'a mut Resources,
    pub stop: &'a Arc<StopSignal>,
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
    virtio: VirtioDevices,
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

        let stop = Arc::new(StopSignal::new());
        let pio = Arc::new(Bus::new("pio"));
        let mmio = Arc::new(Bus::new("mmio"));
        let mut resources = Resources::new();

        let console =
            ConsoleOutput::open(&config.console, vmm_started).map_err(VmmError::Console)?;
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            vm.irq_line(COM1_GSI)?,
            console,
        )));
        pio.insert(COM1_PORT, COM1_PORT_LEN, serial.clone())?;
        resources.add_dsdt_aml(&serial::dsdt_aml());
        pio.insert(RTC_PORT, RTC_PORT_LEN, Arc::new(Mutex::new(CmosRtc::new())))?;
        resources.add_dsdt_aml(&rtc::dsdt_aml());
        pio.insert(
            I8042_PORT,
            I8042_PORT_LEN,
            Arc::new(Mutex::new(I8042::new(Arc::clone(&stop)))),
        )?;
        pio.insert(
            PVPANIC_PORT,
            PVPANIC_PORT_LEN,
            Arc::new(Mutex::new(PvPanic::new(Arc::clone(&stop)))),
        )?;
        resources.add_dsdt_aml(&pvpanic::dsdt_aml());
        pio.insert(
            acpi_pm::PM_PORT,
            acpi_pm::PM_PORT_LEN,
            Arc::new(Mutex::new(AcpiPm::new(Arc::clone(&stop)))),
        )?;
        let ged_gsi = resources.allocate_gsi()?;
        let ged = Arc::new(Mutex::new(Ged::new(vm.irq_line(ged_gsi)?)));
        pio.insert(acpi_pm::GED_PORT, acpi_pm::GED_PORT_LEN, ged.clone())?;
        resources.add_dsdt_aml(&acpi_pm::dsdt_aml(ged_gsi));

        let virtio = VirtioDevices::attach(&config.devices, &vm, &memory, &mmio, &mut resources)?;
        extra_devices(&mut DeviceSetup {
            vm: &vm,
            memory: &memory,
            pio: &pio,
            mmio: &mmio,
            resources: &mut resources,
            stop: &stop,
        })?;

        let tables = acpi::build(
            &AcpiConfig {
                vcpus: config.vcpus,
                dsdt_aml: resources.dsdt_aml(),
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
            let vcpu = Vcpu::new(&vm, index, Arc::clone(&pio), Arc::clone(&mmio))?;
            vcpu.configure(&cpuid, config.vcpus, tsc_deadline, IrqChip::InKernel)?;
            if index == 0 {
                vcpu.configure_boot(&memory, &entry)?;
            }
            vcpus.push(vcpu);
        }
        if config.console == ConsoleConfig::Stdout {
            console::spawn_stdin_reader(serial).map_err(VmmError::ConsoleInput)?;
        }

        Ok(Self {
            config,
            vm,
            memory,
            stop,
            ged,
            virtio,
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
        self.virtio.start()?;
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
            VmRequest::Snapshot { .. } => Err(ControlError::Unsupported(
                "snapshots are not wired into this VMM yet".into(),
            )),
            VmRequest::ListDevices => Ok(VmResponse::Devices(self.virtio.list())),
            VmRequest::SetDevicePolicy { id, allowed } => self
                .virtio
                .set_policy(&id, allowed)
                .map(VmResponse::DevicePolicy),
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
