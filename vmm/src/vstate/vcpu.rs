//! One vCPU: its initial state (CPUID, MSRs, FPU, LAPIC; registers for the boot vCPU) and one
//! step of its run loop, which dispatches port and MMIO exits to the buses.

use std::sync::Arc;

use kvm_bindings::{
    CpuId, KVM_EXIT_INTERNAL_ERROR, KVM_INTERNAL_ERROR_EMULATION, KVM_SYSTEM_EVENT_CRASH,
    KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::GuestMemoryMmap;

use super::vm::{IrqChip, Vm};
use crate::arch::x86_64::regs::{self, EntryMode};
use crate::arch::x86_64::{cpuid, msr};
use crate::devices::bus::Bus;

/// `kvm_run.emulation_failure.flags`: the instruction bytes are valid.
const EMULATION_FLAG_INSTRUCTION_BYTES: u64 = 1;

/// Why a vCPU could not be created, set up or run.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("cannot create vCPU {index}")]
    Create {
        index: u8,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot set {what} of vCPU {index}")]
    Setup {
        index: u8,
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM accepted only {set} of {total} boot MSRs on vCPU {index}")]
    PartialMsrs { index: u8, set: usize, total: usize },
    #[error("cannot build the boot MSR list")]
    Msrs(#[source] msr::MsrError),
    #[error("cannot write the boot vCPU's structures to guest memory")]
    Regs(#[source] regs::RegsError),
    #[error("KVM_RUN failed on vCPU {index}")]
    Run {
        index: u8,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// What one `KVM_RUN` ended with, once port/MMIO accesses are handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuEvent {
    /// An exit was handled; run again.
    Handled,
    /// `KVM_RUN` was interrupted by a kick (signal or `immediate_exit`).
    Interrupted,
    /// The vCPU executed `HLT` (only without an in-kernel irqchip).
    Halted,
    /// Triple fault (`KVM_EXIT_SHUTDOWN`).
    TripleFault,
    /// The guest asked for a reset through a KVM system event.
    ResetRequested,
    /// The guest asked to power off (or crashed) through a KVM system event.
    ShutdownRequested,
    /// KVM could not run the guest; the text says what KVM reported.
    KvmFailure(String),
}

/// A vCPU and the buses its exits go to.
pub struct Vcpu {
    index: u8,
    fd: VcpuFd,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
}

impl Vcpu {
    /// Creates vCPU `index` (its APIC ID is the index too).
    pub fn new(vm: &Vm, index: u8, pio: Arc<Bus>, mmio: Arc<Bus>) -> Result<Self, VcpuError> {
        let fd = vm
            .fd()
            .create_vcpu(u64::from(index))
            .map_err(|source| VcpuError::Create { index, source })?;
        Ok(Self {
            index,
            fd,
            pio,
            mmio,
        })
    }

    pub fn index(&self) -> u8 {
        self.index
    }

    /// The KVM vCPU (for snapshot save/restore while paused).
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    pub fn fd_mut(&mut self) -> &mut VcpuFd {
        &mut self.fd
    }

    fn setup_err(&self, what: &'static str) -> impl Fn(kvm_ioctls::Error) -> VcpuError {
        let index = self.index;
        move |source| VcpuError::Setup {
            index,
            what,
            source,
        }
    }

    /// Sets CPUID (from `supported`, normalised for this vCPU), MSRs, FPU and, with an
    /// in-kernel irqchip, the LAPIC's LINT pins.
    pub fn configure(
        &self,
        supported: &CpuId,
        vcpu_count: u8,
        tsc_deadline: bool,
        irqchip: IrqChip,
    ) -> Result<(), VcpuError> {
        let mut cpuid = supported.clone();
        cpuid::normalize(cpuid.as_mut_slice(), self.index, vcpu_count, tsc_deadline);
        self.fd
            .set_cpuid2(&cpuid)
            .map_err(self.setup_err("CPUID"))?;

        let msrs = msr::boot_msrs().map_err(VcpuError::Msrs)?;
        let set = self.fd.set_msrs(&msrs).map_err(self.setup_err("MSRs"))?;
        let total = msrs.as_slice().len();
        if set != total {
            return Err(VcpuError::PartialMsrs {
                index: self.index,
                set,
                total,
            });
        }
        self.fd
            .set_fpu(&regs::boot_fpu())
            .map_err(self.setup_err("FPU state"))?;
        if irqchip == IrqChip::InKernel {
            let mut lapic = self.fd.get_lapic().map_err(self.setup_err("LAPIC"))?;
            regs::configure_lint(&mut lapic);
            self.fd.set_lapic(&lapic).map_err(self.setup_err("LAPIC"))?;
        }
        Ok(())
    }

    /// Puts the boot vCPU at the kernel's entry point.
    pub fn configure_boot(&self, mem: &GuestMemoryMmap, mode: &EntryMode) -> Result<(), VcpuError> {
        let sregs = self
            .fd
            .get_sregs()
            .map_err(self.setup_err("special registers"))?;
        let sregs = regs::boot_sregs(mem, mode, sregs).map_err(VcpuError::Regs)?;
        self.fd
            .set_sregs(&sregs)
            .map_err(self.setup_err("special registers"))?;
        self.fd
            .set_regs(&regs::boot_regs(mode))
            .map_err(self.setup_err("registers"))?;
        Ok(())
    }

    /// Runs the vCPU until its next exit and handles it.
    pub fn run_once(&mut self) -> Result<VcpuEvent, VcpuError> {
        let event = match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                self.pio.read(u64::from(port), data);
                VcpuEvent::Handled
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                self.pio.write(u64::from(port), data);
                VcpuEvent::Handled
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                self.mmio.read(addr, data);
                VcpuEvent::Handled
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                self.mmio.write(addr, data);
                VcpuEvent::Handled
            }
            Ok(VcpuExit::Hlt) => VcpuEvent::Halted,
            Ok(VcpuExit::Shutdown) => {
                tracing::error!(
                    vcpu = self.index,
                    "triple fault: {}",
                    self.shutdown_detail()
                );
                VcpuEvent::TripleFault
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                KVM_SYSTEM_EVENT_RESET => VcpuEvent::ResetRequested,
                KVM_SYSTEM_EVENT_SHUTDOWN | KVM_SYSTEM_EVENT_CRASH => VcpuEvent::ShutdownRequested,
                other => {
                    tracing::warn!(vcpu = self.index, kind = other, "ignoring KVM system event");
                    VcpuEvent::Handled
                }
            },
            Ok(VcpuExit::InternalError) => VcpuEvent::KvmFailure(self.internal_error_detail()),
            Ok(VcpuExit::FailEntry(reason, cpu)) => VcpuEvent::KvmFailure(format!(
                "VM entry failed, hardware reason {reason:#x} on host CPU {cpu}"
            )),
            Ok(VcpuExit::IrqWindowOpen | VcpuExit::Intr) => VcpuEvent::Handled,
            Ok(other) => {
                tracing::debug!(vcpu = self.index, "ignoring vCPU exit {other:?}");
                VcpuEvent::Handled
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.fd.set_kvm_immediate_exit(0);
                VcpuEvent::Interrupted
            }
            Err(source) => {
                return Err(VcpuError::Run {
                    index: self.index,
                    source,
                })
            }
        };
        Ok(event)
    }

    /// Completes any port/MMIO access KVM is waiting on, without running guest code, so the
    /// vCPU state is consistent for saving.
    pub fn complete_pending_io(&mut self) {
        self.fd.set_kvm_immediate_exit(1);
        // EINTR is the expected outcome; any other result means there was nothing pending.
        let _ = self.fd.run();
        self.fd.set_kvm_immediate_exit(0);
    }

    /// Tells the guest's kvmclock that the vCPU was stopped by the host, so the guest's
    /// watchdogs do not report a soft lockup after a long pause. Fails harmlessly when the guest
    /// does not use kvmclock.
    pub fn notify_paused(&self) {
        let _ = self.fd.kvmclock_ctrl();
    }

    /// The vCPU's state after a triple fault, for the log. On AMD, KVM has already reset the
    /// vCPU (the VMCB is undefined after a shutdown intercept), so the registers show the reset
    /// state; the exception left in the events (vector, error code) is the informative part.
    fn shutdown_detail(&self) -> String {
        let regs = match self.fd.get_regs() {
            Ok(r) => format!(
                "rip {:#x} rsp {:#x} rflags {:#x} rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x} rsi {:#x} rdi {:#x} rbp {:#x}",
                r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp
            ),
            Err(e) => format!("registers unreadable: {e}"),
        };
        let sregs = match self.fd.get_sregs() {
            Ok(s) => format!(
                "cr0 {:#x} cr2 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x} cs {:#x} ss {:#x} gs.base {:#x} idt {:#x}/{:#x} gdt {:#x}/{:#x} tr {:#x}@{:#x}",
                s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.cs.selector, s.ss.selector, s.gs.base,
                s.idt.base, s.idt.limit, s.gdt.base, s.gdt.limit, s.tr.selector, s.tr.base
            ),
            Err(e) => format!("special registers unreadable: {e}"),
        };
        let events = match self.fd.get_vcpu_events() {
            Ok(e) => format!(
                "exception injected {} pending {} nr {} error {:#x}; interrupt injected {} nr {}; nmi injected {} pending {} masked {}",
                e.exception.injected, e.exception.pending, e.exception.nr, e.exception.error_code,
                e.interrupt.injected, e.interrupt.nr, e.nmi.injected, e.nmi.pending, e.nmi.masked
            ),
            Err(e) => format!("events unreadable: {e}"),
        };
        format!("{regs}; {sregs}; {events}")
    }

    /// What KVM reported with `KVM_EXIT_INTERNAL_ERROR`, with the guest's RIP.
    fn internal_error_detail(&mut self) -> String {
        let rip = self.fd.get_regs().map(|r| r.rip).ok();
        let run = self.fd.get_kvm_run();
        if run.exit_reason != KVM_EXIT_INTERNAL_ERROR {
            return "internal error".to_string();
        }
        // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the member KVM wrote.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        describe_internal_error(internal.suberror, internal.ndata, &internal.data, rip)
    }
}

/// Describes a KVM internal error: the suberror, the instruction bytes of an emulation failure
/// (`kvm_run.emulation_failure`: flags, insn_size, insn_bytes[15] laid over `data`), or the raw
/// data words otherwise.
fn describe_internal_error(
    suberror: u32,
    ndata: u32,
    data: &[u64; 16],
    rip: Option<u64>,
) -> String {
    let mut detail = format!("KVM internal error, suberror {suberror}");
    if let Some(rip) = rip {
        detail.push_str(&format!(", guest RIP {rip:#x}"));
    }
    let ndata = (ndata as usize).min(data.len());
    if suberror == KVM_INTERNAL_ERROR_EMULATION {
        detail.push_str(" (instruction emulation failed)");
        if ndata >= 3 && data[0] & EMULATION_FLAG_INSTRUCTION_BYTES != 0 {
            let bytes: Vec<u8> = data[1..3].iter().flat_map(|w| w.to_le_bytes()).collect();
            let size = usize::from(bytes[0]).min(15);
            let insn: Vec<String> = bytes[1..=size].iter().map(|b| format!("{b:02x}")).collect();
            detail.push_str(&format!(", instruction bytes: {}", insn.join(" ")));
        }
    } else if ndata > 0 {
        let words: Vec<String> = data[..ndata].iter().map(|d| format!("{d:#x}")).collect();
        detail.push_str(&format!(", data: {}", words.join(" ")));
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulation_failure_names_the_instruction_bytes_and_rip() {
        let mut data = [0u64; 16];
        data[0] = EMULATION_FLAG_INSTRUCTION_BYTES;
        // insn_size 3, bytes 0f 01 d9 (vmmcall).
        data[1] = u64::from_le_bytes([3, 0x0f, 0x01, 0xd9, 0, 0, 0, 0]);
        let text =
            describe_internal_error(KVM_INTERNAL_ERROR_EMULATION, 3, &data, Some(0xffff_8000));
        assert_eq!(
            text,
            "KVM internal error, suberror 1, guest RIP 0xffff8000 (instruction emulation failed), \
             instruction bytes: 0f 01 d9"
        );
    }

    #[test]
    fn other_internal_errors_list_their_data() {
        let mut data = [0u64; 16];
        data[0] = 0x80;
        data[1] = 0x11;
        let text = describe_internal_error(3, 2, &data, None);
        assert_eq!(text, "KVM internal error, suberror 3, data: 0x80 0x11");
        // ndata beyond the array is clamped.
        assert!(describe_internal_error(3, 99, &data, None).ends_with("0x0"));
    }
}
