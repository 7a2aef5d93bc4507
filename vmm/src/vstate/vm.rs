//! The KVM VM: in-kernel irqchip (PIC, IOAPIC, local APICs) and PIT, the TSS and identity-map
//! pages Intel VMX needs, guest memory slots, and irqfd-backed interrupt lines.

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::config::HostLimits;
use crate::memory::{KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR, MIB};

/// Why the VM could not be created or set up.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm")]
    OpenKvm(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0} is not the supported version 12")]
    KvmApiVersion(i32),
    #[error("the host's KVM lacks a required capability: {0}")]
    MissingCapability(&'static str),
    #[error("cannot create the KVM VM")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("cannot set up {what}")]
    Setup {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot register guest memory slot {slot} with KVM")]
    MemorySlot {
        slot: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot create an interrupt line for GSI {gsi}")]
    IrqLine {
        gsi: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the host's supported CPUID")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    #[error("cannot start the thread that creates the VM")]
    SetupThread(#[source] std::io::Error),
    #[error("the thread that creates the VM panicked")]
    SetupThreadPanicked,
}

/// Whether the VM gets KVM's in-kernel interrupt controllers and PIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqChip {
    /// PIC + IOAPIC + local APICs + PIT in the kernel (every real guest).
    InKernel,
    /// None: `HLT` exits to the VMM. Only for tests of hand-written guest code.
    None,
}

/// An open `/dev/kvm`, before a VM exists: the host's limits.
pub struct Hypervisor {
    kvm: Kvm,
}

impl Hypervisor {
    /// Opens `/dev/kvm` and checks the API version and the capabilities the VMM relies on.
    pub fn open() -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let version = kvm.get_api_version();
        if version != 12 {
            return Err(VmError::KvmApiVersion(version));
        }
        for (cap, name) in [
            (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
            (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(VmError::MissingCapability(name));
            }
        }
        Ok(Self { kvm })
    }

    /// The host limits a VM config must respect.
    pub fn host_limits(&self) -> HostLimits {
        HostLimits {
            max_vcpus: self.kvm.get_max_vcpus(),
            memory_mib: host_memory_mib(),
        }
    }

    /// Whether the local APIC can run its timer in TSC-deadline mode.
    pub fn has_tsc_deadline(&self) -> bool {
        self.kvm.check_extension(Cap::TscDeadlineTimer)
    }

    /// The CPUID KVM can give a guest on this host.
    pub fn supported_cpuid(&self) -> Result<CpuId, VmError> {
        self.kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(VmError::SupportedCpuid)
    }

    /// Creates a VM.
    pub fn create_vm(&self, irqchip: IrqChip) -> Result<Vm, VmError> {
        let fd = self.kvm.create_vm().map_err(VmError::CreateVm)?;
        let setup = |what| move |source| VmError::Setup { what, source };
        fd.set_tss_address(KVM_TSS_ADDR as usize)
            .map_err(setup("the TSS address"))?;
        fd.set_identity_map_address(KVM_IDENTITY_MAP_ADDR)
            .map_err(setup("the identity map address"))?;
        if irqchip == IrqChip::InKernel {
            fd.create_irq_chip()
                .map_err(setup("the in-kernel irqchip"))?;
            let pit = kvm_pit_config {
                flags: KVM_PIT_SPEAKER_DUMMY,
                ..Default::default()
            };
            fd.create_pit2(pit).map_err(setup("the in-kernel PIT"))?;
        }
        Ok(Vm {
            fd,
            irqchip,
            memory: None,
        })
    }
}

/// A VM being created on a short-lived thread (`vmm-vm-setup`) while the caller prepares the rest
/// (reads a snapshot, maps or allocates guest memory): creating a KVM VM with its irqchip and
/// PIT is the longest single step of a resume. The thread only opens `/dev/kvm` and issues the
/// VM-creation ioctls; it runs no guest code, handles no outside input, and ends before the
/// VM's own threads start.
pub struct PendingVm(std::thread::JoinHandle<Result<(Hypervisor, Vm), VmError>>);

impl PendingVm {
    /// Starts creating a VM with `irqchip`.
    pub fn start(irqchip: IrqChip) -> Result<Self, VmError> {
        std::thread::Builder::new()
            .name("vmm-vm-setup".into())
            .spawn(move || {
                let hypervisor = Hypervisor::open()?;
                let vm = hypervisor.create_vm(irqchip)?;
                Ok((hypervisor, vm))
            })
            .map(Self)
            .map_err(VmError::SetupThread)
    }

    /// Waits for the VM.
    pub fn wait(self) -> Result<(Hypervisor, Vm), VmError> {
        self.0.join().map_err(|_| VmError::SetupThreadPanicked)?
    }
}

/// Physical memory of the host in MiB (0 if unknown).
fn host_memory_mib() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions; it only reads system configuration.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    // SAFETY: as above.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if pages <= 0 || page_size <= 0 {
        return 0;
    }
    (pages as u64).saturating_mul(page_size as u64) / MIB
}

/// A KVM VM.
pub struct Vm {
    fd: VmFd,
    irqchip: IrqChip,
    /// Keeps the mappings registered as memory slots alive as long as the VM.
    memory: Option<GuestMemoryMmap>,
}

impl Vm {
    /// The VM file descriptor (for snapshot: irqchip, PIT and clock state).
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    pub fn irqchip(&self) -> IrqChip {
        self.irqchip
    }

    /// Registers every region of `mem` as a KVM memory slot (slot = region index).
    pub fn register_memory(&mut self, mem: &GuestMemoryMmap) -> Result<(), VmError> {
        for (slot, region) in mem.iter().enumerate() {
            let slot = slot as u32;
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|_| VmError::MemorySlot {
                    slot,
                    source: kvm_ioctls::Error::new(libc::EFAULT),
                })?;
            let region_desc = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the host range is `region`'s own mapping of `memory_size` bytes, and the
            // VM keeps a reference to every region (`self.memory`) for as long as it exists.
            unsafe { self.fd.set_user_memory_region(region_desc) }
                .map_err(|source| VmError::MemorySlot { slot, source })?;
        }
        self.memory = Some(mem.clone());
        Ok(())
    }

    /// An eventfd wired to `gsi` through a KVM irqfd: writing 1 raises an edge on the line.
    pub fn irq_line(&self, gsi: u32) -> Result<EventFd, VmError> {
        let evt =
            EventFd::new(libc::EFD_NONBLOCK).map_err(|source| VmError::IrqLine { gsi, source })?;
        self.fd
            .register_irqfd(&evt, gsi)
            .map_err(|e| VmError::IrqLine {
                gsi,
                source: std::io::Error::from_raw_os_error(e.errno()),
            })?;
        Ok(evt)
    }
}
