//! Builds a VM from a [`VmConfig`], runs it, and serves the control surface ([`VmControl`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vm_memory::GuestMemoryMmap;

use crate::api::types::{RunState, ShutdownOutcome, VmInfo};
use crate::arch::x86_64::acpi::{self, AcpiConfig, AcpiError};
use crate::arch::x86_64::boot::{self, BootError, BootInputs, KernelFormat};
use crate::arch::x86_64::regs::EntryMode;
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
use crate::vstate::vm::{IrqChip, PendingVm, Vm, VmError};

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
            virtio: devices.virtio,
            state: Mutex::new(RunState::Created),
            created_vcpus: Mutex::new(vcpus),
            vcpus: Mutex::new(None),
            built_at: vmm_started,
            started_at: Mutex::new(None),
            api_answer_pending: AtomicBool::new(false),
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
            pid: crate::jail::process_id(),
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

/// Whole-VM tests on the host's own `/dev/kvm` with a hand-made PVH "kernel": an ELF whose entry
/// prints a line on COM1 and then powers off through ACPI S5, or spins.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    const LOAD_ADDR: u64 = 0x10_0000;
    const CODE_OFFSET: usize = 0x1000;
    const NOTE_OFFSET: usize = 0x200;
    const MESSAGE: &[u8] = b"VIRMO-GUEST-READY\n\0";

    /// 32-bit code: print MESSAGE on COM1, then power off (S5) or spin.
    fn guest_code(power_off: bool) -> Vec<u8> {
        let mut code = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
        let msg_at = code.len();
        code.extend_from_slice(&[0xbe, 0, 0, 0, 0]); // mov esi, MESSAGE
                                                     // 1: lodsb; test al, al; jz 2f; out dx, al; jmp 1b; 2:
        code.extend_from_slice(&[0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8]);
        if power_off {
            // mov dx, 0x600; mov al, SLP_TYP 5 | SLP_EN; out dx, al
            code.extend_from_slice(&[0x66, 0xba, 0x00, 0x06, 0xb0, (5 << 2) | (1 << 5), 0xee]);
        }
        code.extend_from_slice(&[0xeb, 0xfe]); // jmp .
        let message_addr = LOAD_ADDR as u32 + code.len() as u32;
        code[msg_at + 1..msg_at + 5].copy_from_slice(&message_addr.to_le_bytes());
        code.extend_from_slice(MESSAGE);
        code
    }

    /// An ELF64 executable with one PT_LOAD at 1 MiB and a PVH entry note.
    fn pvh_elf(code: &[u8]) -> Vec<u8> {
        let mut elf = vec![0u8; CODE_OFFSET + code.len()];
        let put = |elf: &mut Vec<u8>, at: usize, bytes: &[u8]| {
            elf[at..at + bytes.len()].copy_from_slice(bytes)
        };
        put(&mut elf, 0, &[0x7f, b'E', b'L', b'F', 2, 1, 1]);
        put(&mut elf, 16, &2u16.to_le_bytes()); // ET_EXEC
        put(&mut elf, 18, &0x3eu16.to_le_bytes()); // x86-64
        put(&mut elf, 20, &1u32.to_le_bytes());
        put(&mut elf, 24, &LOAD_ADDR.to_le_bytes()); // e_entry
        put(&mut elf, 32, &64u64.to_le_bytes()); // e_phoff
        put(&mut elf, 52, &64u16.to_le_bytes()); // e_ehsize
        put(&mut elf, 54, &56u16.to_le_bytes()); // e_phentsize
        put(&mut elf, 56, &2u16.to_le_bytes()); // e_phnum
        let note_len = 12 + 4 + 4;
        for (i, (kind, offset, addr, size)) in [
            (1u32, CODE_OFFSET as u64, LOAD_ADDR, code.len() as u64),
            (4u32, NOTE_OFFSET as u64, 0, note_len as u64),
        ]
        .into_iter()
        .enumerate()
        {
            let ph = 64 + 56 * i;
            put(&mut elf, ph, &kind.to_le_bytes());
            put(&mut elf, ph + 4, &7u32.to_le_bytes()); // RWX
            put(&mut elf, ph + 8, &offset.to_le_bytes());
            put(&mut elf, ph + 16, &addr.to_le_bytes()); // vaddr
            put(&mut elf, ph + 24, &addr.to_le_bytes()); // paddr
            put(&mut elf, ph + 32, &size.to_le_bytes()); // filesz
            put(&mut elf, ph + 40, &size.to_le_bytes()); // memsz
            put(&mut elf, ph + 48, &0x1000u64.to_le_bytes());
        }
        // Note: namesz 4 "Xen\0", descsz 4, type 18 (XEN_ELFNOTE_PHYS32_ENTRY), entry.
        put(&mut elf, NOTE_OFFSET, &4u32.to_le_bytes());
        put(&mut elf, NOTE_OFFSET + 4, &4u32.to_le_bytes());
        put(&mut elf, NOTE_OFFSET + 8, &18u32.to_le_bytes());
        put(&mut elf, NOTE_OFFSET + 12, b"Xen\0");
        put(
            &mut elf,
            NOTE_OFFSET + 16,
            &(LOAD_ADDR as u32).to_le_bytes(),
        );
        put(&mut elf, CODE_OFFSET, code);
        elf
    }

    pub(crate) fn test_config(name: &str, power_off: bool) -> Option<(VmConfig, PathBuf)> {
        if !Path::new("/dev/kvm").exists() {
            eprintln!("no /dev/kvm: skipping");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("vmm-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kernel = dir.join("kernel.elf");
        std::fs::write(&kernel, pvh_elf(&guest_code(power_off))).unwrap();
        let console = dir.join("console");
        let _ = std::fs::remove_file(&console);
        let mut config = VmConfig::new(kernel);
        config.memory_mib = 64;
        config.console = ConsoleConfig::File(console.clone());
        Some((config, console))
    }

    pub(crate) fn wait_for_console(path: &Path, text: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::fs::read_to_string(path)
                .unwrap_or_default()
                .contains(text)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn pvh_guest_prints_and_powers_off() {
        let Some((config, console)) = test_config("poweroff", true) else {
            return;
        };
        let vmm = Vmm::build(config).unwrap();
        vmm.start().unwrap();
        let reason = vmm.stop_signal().wait_timeout(Duration::from_secs(60));
        vmm.shut_down();
        assert_eq!(reason, Some(StopReason::PowerOff));
        assert_eq!(
            std::fs::read_to_string(&console).unwrap(),
            "VIRMO-GUEST-READY\n"
        );
    }

    #[test]
    fn snapshot_saves_the_vm_and_a_new_vmm_restores_it() {
        let Some((config, console)) = test_config("snapshot", false) else {
            return;
        };
        let vmm = Vmm::build(config).unwrap();
        vmm.start().unwrap();
        assert!(wait_for_console(&console, "VIRMO-GUEST-READY"));
        let dir = console.with_file_name("snap");
        let started = Instant::now();
        let answer = vmm.handle(VmRequest::Snapshot {
            dir: dir.clone(),
            keep_running: true,
        });
        eprintln!("snapshot took {:?}", started.elapsed());
        let Ok(VmResponse::Snapshot(info)) = answer else {
            panic!("unexpected {answer:?}");
        };
        assert_eq!(info.memory_size, 64 << 20);
        assert!(info.memory_bytes_written > 0 && info.memory_bytes_written < 8 << 20);
        assert_eq!(
            vmm.handle(VmRequest::GetInfo)
                .map(|r| matches!(r, VmResponse::Info(i) if i.state == RunState::Paused)),
            Ok(true)
        );
        // A second suspend without keep_running marks the VM suspended: it refuses to resume.
        assert!(matches!(
            vmm.handle(VmRequest::Snapshot {
                dir: dir.clone(),
                keep_running: false,
            }),
            Ok(VmResponse::Snapshot(_))
        ));
        assert!(vmm.is_suspended());
        assert!(matches!(
            vmm.handle(VmRequest::Resume),
            Err(ControlError::InvalidState { .. })
        ));
        vmm.after_answer(
            &VmRequest::Snapshot {
                dir: dir.clone(),
                keep_running: false,
            },
            &Ok(VmResponse::Snapshot(info)),
        );
        assert_eq!(vmm.wait(), StopReason::Suspended);
        vmm.shut_down();

        let t0 = Instant::now();
        let restored = Vmm::restore(
            &restore::RestoreOptions::new(&dir),
            Launch::begin(Instant::now()).unwrap(),
            Box::new(|_| Ok(())),
        )
        .unwrap();
        restored.start().unwrap();
        eprintln!("restore and start took {:?}", t0.elapsed());
        assert_eq!(restored.info().state, RunState::Running);
        restored.handle(VmRequest::Stop).unwrap();
        restored.shut_down();
    }

    #[test]
    fn control_pauses_resumes_and_forces_a_shutdown_the_guest_ignores() {
        let Some((config, console)) = test_config("control", false) else {
            return;
        };
        let vmm = Vmm::build(config).unwrap();
        vmm.start().unwrap();
        assert!(wait_for_console(&console, "VIRMO-GUEST-READY"));
        let info = |vmm: &Vmm| match vmm.handle(VmRequest::GetInfo) {
            Ok(VmResponse::Info(info)) => info,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(info(&vmm).state, RunState::Running);
        assert!(matches!(
            vmm.handle(VmRequest::Resume),
            Err(ControlError::InvalidState { .. })
        ));
        assert_eq!(vmm.handle(VmRequest::Pause), Ok(VmResponse::Done));
        assert_eq!(info(&vmm).state, RunState::Paused);
        assert!(matches!(
            vmm.handle(VmRequest::Pause),
            Err(ControlError::InvalidState { .. })
        ));
        assert_eq!(vmm.handle(VmRequest::Resume), Ok(VmResponse::Done));
        let answer = vmm.handle(VmRequest::Shutdown {
            timeout: Duration::from_millis(200),
        });
        assert_eq!(answer, Ok(VmResponse::Shutdown(ShutdownOutcome::Forced)));
        assert_eq!(vmm.wait(), StopReason::ShutdownForced);
        vmm.shut_down();
    }

    #[test]
    fn restore_build_needs_no_kernel_and_writes_nothing_to_guest_memory() {
        let Some((mut config, _)) = test_config("restore", true) else {
            return;
        };
        config.kernel = "/nonexistent/kernel".into();
        config.vcpus = 2;
        let memory = memory::create_guest_memory(config.memory_bytes()).unwrap();
        let vmm = Vmm::build_for_restore(
            config,
            memory,
            Launch::begin(Instant::now()).unwrap(),
            Box::new(|_| Ok(())),
        )
        .unwrap();
        assert_eq!(vmm.with_created_vcpus(|vcpus| vcpus.len()), 2);
        let rsdp: [u8; 8] =
            vm_memory::Bytes::read_obj(vmm.memory(), vm_memory::GuestAddress(ACPI_TABLES_START))
                .unwrap();
        assert_eq!(rsdp, [0; 8]);
        assert_eq!(vmm.info().state, RunState::Created);
    }

    #[test]
    fn elf_kernel_bigger_than_memory_is_refused() {
        let Some((mut config, _)) = test_config("toobig", true) else {
            return;
        };
        let path = config.kernel.clone();
        let mut code = guest_code(true);
        code.resize(40 << 20, 0x90);
        std::fs::write(&path, pvh_elf(&code)).unwrap();
        config.memory_mib = 32;
        let err = Vmm::build(config).err().unwrap();
        assert!(matches!(err, VmmError::Boot(_)), "{err:?}");
    }
}
