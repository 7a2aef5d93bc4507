//! Save and restore the KVM state of one x86_64 vCPU.
//!
//! # Before saving
//! The vCPU thread must be out of `KVM_RUN` and must have completed any I/O exit: KVM finishes
//! an emulated `in`/`out`/MMIO instruction only on the next `KVM_RUN`. [`complete_pending_io`]
//! re-enters KVM with `immediate_exit` set, which completes the instruction and returns at once
//! without running guest code. Save all vCPUs only when every vCPU is stopped.
//!
//! # Save order ([`save_vcpu`])
//! 1. `KVM_GET_MP_STATE` first: it runs `kvm_apic_accept_events()`, which may change the vCPU
//!    and LAPIC state that the later calls read.
//! 2. `KVM_GET_REGS`, `KVM_GET_SREGS` (SREGS also carries a pending external interrupt).
//! 3. `KVM_GET_XSAVE2` (or `KVM_GET_XSAVE` on kernels without `KVM_CAP_XSAVE2`), `KVM_GET_XCRS`.
//!    The x87/SSE state (what `KVM_GET_FPU` returns) is the legacy part of the XSAVE area, so it
//!    is not saved a second time.
//! 4. `KVM_GET_DEBUGREGS`.
//! 5. `KVM_GET_LAPIC` (may itself update the LAPIC, so after MP state).
//! 6. `KVM_GET_TSC_KHZ` (optional: some hosts cannot report it), `KVM_GET_CPUID2`.
//! 7. `KVM_GET_MSRS` for the list from [`msrs_to_save`], in chunks;
//!    an MSR the host refuses to read is skipped with a warning (it could not be restored).
//! 8. `KVM_GET_VCPU_EVENTS` last: pending exceptions/interrupts/NMIs may be changed by the
//!    reads above.
//!
//! # Restore order ([`restore_vcpu`])
//! 1. `KVM_SET_CPUID2` first: MSR writes are checked against CPUID and the XSAVE layout
//!    depends on it.
//! 2. `KVM_SET_TSC_KHZ` when the host's TSC frequency differs from the saved one by more than
//!    250 ppm, before any TSC MSR is written (the offset is computed with the ratio).
//! 3. `KVM_SET_MP_STATE`, `KVM_SET_REGS`, `KVM_SET_SREGS` (SREGS restores the APIC base MSR).
//! 4. `KVM_SET_XSAVE`, `KVM_SET_XCRS`, `KVM_SET_DEBUGREGS`.
//! 5. `KVM_SET_LAPIC`: after SREGS (APIC base) and before the MSRs (the TSC deadline MSR is
//!    accepted only with the LAPIC configured).
//! 6. `KVM_SET_MSRS` for all MSRs but `IA32_TSC_DEADLINE`, then `IA32_TSC_DEADLINE` alone:
//!    KVM arms the deadline timer by comparing it to the guest TSC, so the TSC must be in place.
//! 7. `KVM_SET_VCPU_EVENTS` last: `KVM_SET_REGS` drops pending exceptions, events bring them
//!    back.
//! 8. `KVM_KVMCLOCK_CTRL` (best effort): tells a kvmclock guest it was paused, so its soft
//!    lockup watchdog does not fire; fails harmlessly when the guest does not use kvmclock.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs, Xsave, KVM_MAX_CPUID_ENTRIES,
    KVM_MAX_MSR_ENTRIES,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

use super::msrs::{msrs_to_save, MSR_IA32_TSC_DEADLINE};

/// Tolerated difference between saved and host TSC frequency, in parts per million, before the
/// guest TSC is scaled (the value QEMU and Firecracker use: calibration differs between boots).
const TSC_KHZ_TOLERANCE_PPM: u64 = 250;

/// Size of the legacy `struct kvm_xsave` in 32-bit words.
const XSAVE_LEGACY_WORDS: usize = 1024;

/// Errors saving or restoring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuStateError {
    /// A KVM ioctl on the vCPU failed.
    #[error("{ioctl} failed on the vCPU")]
    Ioctl {
        /// The ioctl that failed.
        ioctl: &'static str,
        /// The kernel's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The host refused to read or write one MSR of the list.
    #[error("{ioctl} stopped at MSR {index:#x}: the host does not accept it")]
    MsrRefused {
        /// `KVM_GET_MSRS` or `KVM_SET_MSRS`.
        ioctl: &'static str,
        /// The first MSR not processed.
        index: u32,
    },
    /// A KVM variable-size structure could not be built.
    #[error("cannot size the {what} buffer for KVM")]
    Buffer {
        /// Which buffer.
        what: &'static str,
        /// The allocation error.
        #[source]
        source: vmm_sys_util::fam::Error,
    },
    /// The saved XSAVE area is smaller than the architectural 4 KiB.
    #[error("saved XSAVE area has {words} 32-bit words, fewer than {XSAVE_LEGACY_WORDS}")]
    XsaveTooShort {
        /// Words found in the state.
        words: usize,
    },
    /// The guest was running with a TSC frequency this host cannot provide.
    #[error(
        "cannot scale the guest TSC to the saved {saved_khz} kHz (host runs at {host_khz} kHz)"
    )]
    TscScaling {
        /// Frequency in the snapshot.
        saved_khz: u32,
        /// Frequency KVM reports on this host.
        host_khz: u32,
        /// The error from `KVM_SET_TSC_KHZ`.
        #[source]
        source: kvm_ioctls::Error,
    },
}

type Result<T> = std::result::Result<T, VcpuStateError>;

fn ioctl(ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuStateError {
    move |source| VcpuStateError::Ioctl { ioctl, source }
}

/// One saved MSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsrValue {
    /// MSR index.
    pub index: u32,
    /// MSR value.
    pub data: u64,
}

/// The complete KVM state of one vCPU.
#[derive(Clone, Serialize, Deserialize)]
pub struct VcpuState {
    /// CPUID entries as set on the vCPU (`KVM_GET_CPUID2`).
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// Run state (runnable, halted, waiting for SIPI...).
    pub mp_state: kvm_mp_state,
    /// General purpose registers, RIP, RFLAGS.
    pub regs: kvm_regs,
    /// Segment, control and descriptor table registers, EFER, APIC base.
    pub sregs: kvm_sregs,
    /// The XSAVE area (FPU, SSE, AVX...) as 32-bit words: the 4 KiB legacy area followed by any
    /// extended area reported by `KVM_CAP_XSAVE2`.
    pub xsave: Vec<u32>,
    /// Extended control registers (XCR0).
    pub xcrs: kvm_xcrs,
    /// Debug registers.
    pub debug_regs: kvm_debugregs,
    /// Local APIC registers.
    pub lapic: kvm_lapic_state,
    /// Guest TSC frequency, when the host could report it.
    pub tsc_khz: Option<u32>,
    /// Saved MSRs, `IA32_TSC_DEADLINE` excluded (see `tsc_deadline`).
    pub msrs: Vec<MsrValue>,
    /// `IA32_TSC_DEADLINE`, restored after every other MSR.
    pub tsc_deadline: Option<u64>,
    /// Pending exceptions, interrupts, NMIs and SMM state.
    pub vcpu_events: kvm_vcpu_events,
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuState")
            .field("rip", &self.regs.rip)
            .field("mp_state", &self.mp_state.mp_state)
            .field("cpuid_entries", &self.cpuid.len())
            .field("msrs", &self.msrs.len())
            .field("xsave_words", &self.xsave.len())
            .field("tsc_khz", &self.tsc_khz)
            .finish_non_exhaustive()
    }
}

/// Per-VM facts that every vCPU save needs; build it once per VM with [`VcpuSaveContext::new`].
#[derive(Clone, Debug)]
pub struct VcpuSaveContext {
    /// MSR indices to save, from [`msrs_to_save`].
    pub msrs: Vec<u32>,
    /// Size in bytes of the XSAVE buffer (`KVM_CAP_XSAVE2`); `None` on kernels without it.
    pub xsave2_size: Option<usize>,
}

impl VcpuSaveContext {
    /// Queries the MSR list and XSAVE size from KVM.
    pub fn new(kvm: &Kvm, vm: &VmFd) -> Result<Self> {
        let msrs = msrs_to_save(kvm).map_err(ioctl("KVM_GET_MSR_INDEX_LIST"))?;
        let xsave2_size = usize::try_from(vm.check_extension_int(Cap::Xsave2))
            .ok()
            .filter(|size| *size > std::mem::size_of::<kvm_xsave>());
        Ok(Self { msrs, xsave2_size })
    }
}

/// Completes an in-flight I/O or MMIO exit without running guest code: sets `immediate_exit`,
/// enters `KVM_RUN` (which returns `EINTR`), and clears it again. Call on the vCPU's own thread
/// after its last exit and before [`save_vcpu`].
pub fn complete_pending_io(vcpu: &mut VcpuFd) -> Result<()> {
    vcpu.set_kvm_immediate_exit(1);
    let outcome = match vcpu.run() {
        Err(err) if err.errno() == libc::EINTR => Ok(()),
        Err(err) => Err(VcpuStateError::Ioctl {
            ioctl: "KVM_RUN (immediate exit)",
            source: err,
        }),
        // KVM may report an exit it had already queued; the instruction is complete either way.
        Ok(_) => Ok(()),
    };
    vcpu.set_kvm_immediate_exit(0);
    outcome
}

/// Reads the complete state of a stopped vCPU, in the order documented in this module.
pub fn save_vcpu(vcpu: &VcpuFd, ctx: &VcpuSaveContext) -> Result<VcpuState> {
    let mp_state = vcpu.get_mp_state().map_err(ioctl("KVM_GET_MP_STATE"))?;
    let regs = vcpu.get_regs().map_err(ioctl("KVM_GET_REGS"))?;
    let sregs = vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
    let xsave = get_xsave(vcpu, ctx.xsave2_size)?;
    let xcrs = vcpu.get_xcrs().map_err(ioctl("KVM_GET_XCRS"))?;
    let debug_regs = vcpu.get_debug_regs().map_err(ioctl("KVM_GET_DEBUGREGS"))?;
    let lapic = vcpu.get_lapic().map_err(ioctl("KVM_GET_LAPIC"))?;
    let tsc_khz = match vcpu.get_tsc_khz() {
        Ok(khz) => Some(khz),
        Err(err) => {
            tracing::warn!(%err, "TSC frequency unknown: the snapshot cannot be scaled on restore");
            None
        }
    };
    let cpuid = get_cpuid(vcpu)?;
    let (msrs, tsc_deadline) = get_msrs(vcpu, &ctx.msrs)?;
    let vcpu_events = vcpu
        .get_vcpu_events()
        .map_err(ioctl("KVM_GET_VCPU_EVENTS"))?;
    Ok(VcpuState {
        cpuid,
        mp_state,
        regs,
        sregs,
        xsave,
        xcrs,
        debug_regs,
        lapic,
        tsc_khz,
        msrs,
        tsc_deadline,
        vcpu_events,
    })
}

/// Writes a saved state into a freshly created vCPU, in the order documented in this module.
pub fn restore_vcpu(vcpu: &VcpuFd, state: &VcpuState) -> Result<()> {
    let cpuid = CpuId::from_entries(&state.cpuid).map_err(|source| VcpuStateError::Buffer {
        what: "CPUID",
        source,
    })?;
    vcpu.set_cpuid2(&cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
    if let Some(saved_khz) = state.tsc_khz {
        scale_tsc_if_needed(vcpu, saved_khz)?;
    }
    vcpu.set_mp_state(state.mp_state)
        .map_err(ioctl("KVM_SET_MP_STATE"))?;
    vcpu.set_regs(&state.regs).map_err(ioctl("KVM_SET_REGS"))?;
    vcpu.set_sregs(&state.sregs)
        .map_err(ioctl("KVM_SET_SREGS"))?;
    set_xsave(vcpu, &state.xsave)?;
    vcpu.set_xcrs(&state.xcrs).map_err(ioctl("KVM_SET_XCRS"))?;
    vcpu.set_debug_regs(&state.debug_regs)
        .map_err(ioctl("KVM_SET_DEBUGREGS"))?;
    vcpu.set_lapic(&state.lapic)
        .map_err(ioctl("KVM_SET_LAPIC"))?;
    set_msrs(vcpu, &state.msrs)?;
    if let Some(deadline) = state.tsc_deadline {
        set_msrs(
            vcpu,
            &[MsrValue {
                index: MSR_IA32_TSC_DEADLINE,
                data: deadline,
            }],
        )?;
    }
    vcpu.set_vcpu_events(&state.vcpu_events)
        .map_err(ioctl("KVM_SET_VCPU_EVENTS"))?;
    if let Err(err) = vcpu.kvmclock_ctrl() {
        tracing::debug!(%err, "KVM_KVMCLOCK_CTRL refused (guest without kvmclock?)");
    }
    Ok(())
}

fn get_cpuid(vcpu: &VcpuFd) -> Result<Vec<kvm_cpuid_entry2>> {
    let cpuid = vcpu
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(ioctl("KVM_GET_CPUID2"))?;
    // KVM_GET_CPUID2 leaves the unused tail of the buffer zeroed; leaf 0 always has EAX >= 1
    // when set, so an all-zero leaf-0 entry is padding.
    Ok(cpuid
        .as_slice()
        .iter()
        .filter(|e| !(e.function == 0 && e.index == 0 && e.flags == 0 && e.eax == 0))
        .copied()
        .collect())
}

fn get_xsave(vcpu: &VcpuFd, xsave2_size: Option<usize>) -> Result<Vec<u32>> {
    match xsave2_size {
        Some(size) => {
            let extra_words = (size - std::mem::size_of::<kvm_xsave>()).div_ceil(4);
            let mut xsave = Xsave::new(extra_words).map_err(|source| VcpuStateError::Buffer {
                what: "XSAVE",
                source,
            })?;
            // SAFETY: `xsave` was allocated with the size KVM_CAP_XSAVE2 reported, which is
            // what KVM_GET_XSAVE2 writes.
            unsafe { vcpu.get_xsave2(&mut xsave) }.map_err(ioctl("KVM_GET_XSAVE2"))?;
            let mut words = xsave.as_fam_struct_ref().xsave.region.to_vec();
            words.extend_from_slice(xsave.as_slice());
            Ok(words)
        }
        None => {
            let xsave = vcpu.get_xsave().map_err(ioctl("KVM_GET_XSAVE"))?;
            Ok(xsave.region.to_vec())
        }
    }
}

/// The largest XSAVE area this CPU can produce, in bytes: CPUID.(EAX=0DH,ECX=0):ECX, the size
/// for every feature XCR0 can enable. KVM never reads more than that in `KVM_SET_XSAVE`.
fn host_xsave_max_bytes() -> usize {
    // `unsafe` for toolchains before `__cpuid_count` became a safe function (the MSRV is 1.85).
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU and only reads identification registers.
    let leaf = unsafe { std::arch::x86_64::__cpuid_count(0xd, 0) };
    leaf.ecx as usize
}

fn set_xsave(vcpu: &VcpuFd, words: &[u32]) -> Result<()> {
    if words.len() < XSAVE_LEGACY_WORDS {
        return Err(VcpuStateError::XsaveTooShort { words: words.len() });
    }
    let (legacy, extra) = words.split_at(XSAVE_LEGACY_WORDS);
    // The buffer must be as large as what KVM reads on this host, which may exceed what the
    // saving host wrote; the zero tail is ignored (its features are off in the saved header).
    let host_extra_words = host_xsave_max_bytes()
        .saturating_sub(std::mem::size_of::<kvm_xsave>())
        .div_ceil(4);
    let mut xsave =
        Xsave::new(extra.len().max(host_extra_words)).map_err(|source| VcpuStateError::Buffer {
            what: "XSAVE",
            source,
        })?;
    // SAFETY: only the plain-data `region` array is written; the FAM length stays as allocated.
    unsafe { xsave.as_mut_fam_struct() }
        .xsave
        .region
        .copy_from_slice(legacy);
    xsave.as_mut_slice()[..extra.len()].copy_from_slice(extra);
    // SAFETY: the buffer is at least the 4 KiB legacy area and at least the largest XSAVE area
    // this CPU supports (`host_xsave_max_bytes`), which bounds what KVM_SET_XSAVE reads.
    unsafe { vcpu.set_xsave2(&xsave) }.map_err(ioctl("KVM_SET_XSAVE"))
}

/// Reads the MSRs in `indices`. An MSR the host refuses to read (it does not exist for this
/// guest's CPUID) is left out with a warning: it could not be restored either.
fn get_msrs(vcpu: &VcpuFd, indices: &[u32]) -> Result<(Vec<MsrValue>, Option<u64>)> {
    let mut msrs = Vec::with_capacity(indices.len());
    let mut tsc_deadline = None;
    let mut pending = indices;
    while !pending.is_empty() {
        let chunk = &pending[..pending.len().min(KVM_MAX_MSR_ENTRIES)];
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut buffer = Msrs::from_entries(&entries).map_err(|source| VcpuStateError::Buffer {
            what: "MSR",
            source,
        })?;
        let read = vcpu.get_msrs(&mut buffer).map_err(ioctl("KVM_GET_MSRS"))?;
        for entry in buffer.as_slice().iter().take(read) {
            if entry.index == MSR_IA32_TSC_DEADLINE {
                tsc_deadline = Some(entry.data);
            } else {
                msrs.push(MsrValue {
                    index: entry.index,
                    data: entry.data,
                });
            }
        }
        pending = if read < chunk.len() {
            tracing::warn!(msr = chunk[read], "host refuses to read MSR; not saved");
            &pending[read + 1..]
        } else {
            &pending[chunk.len()..]
        };
    }
    Ok((msrs, tsc_deadline))
}

fn set_msrs(vcpu: &VcpuFd, msrs: &[MsrValue]) -> Result<()> {
    for chunk in msrs.chunks(KVM_MAX_MSR_ENTRIES) {
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|msr| kvm_msr_entry {
                index: msr.index,
                data: msr.data,
                ..Default::default()
            })
            .collect();
        let buffer = Msrs::from_entries(&entries).map_err(|source| VcpuStateError::Buffer {
            what: "MSR",
            source,
        })?;
        let written = vcpu.set_msrs(&buffer).map_err(ioctl("KVM_SET_MSRS"))?;
        if written < chunk.len() {
            return Err(VcpuStateError::MsrRefused {
                ioctl: "KVM_SET_MSRS",
                index: chunk[written].index,
            });
        }
    }
    Ok(())
}

/// Whether `host_khz` is farther from `saved_khz` than the calibration tolerance.
fn tsc_scaling_needed(saved_khz: u32, host_khz: u32) -> bool {
    let diff = u64::from(saved_khz.abs_diff(host_khz));
    diff * 1_000_000 > u64::from(saved_khz) * TSC_KHZ_TOLERANCE_PPM
}

fn scale_tsc_if_needed(vcpu: &VcpuFd, saved_khz: u32) -> Result<()> {
    let host_khz = vcpu.get_tsc_khz().map_err(ioctl("KVM_GET_TSC_KHZ"))?;
    if tsc_scaling_needed(saved_khz, host_khz) {
        vcpu.set_tsc_khz(saved_khz)
            .map_err(|source| VcpuStateError::TscScaling {
                saved_khz,
                host_khz,
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_within_250_ppm_is_not_scaled() {
        assert!(!tsc_scaling_needed(2_000_000, 2_000_000));
        assert!(!tsc_scaling_needed(2_000_000, 2_000_500));
        assert!(!tsc_scaling_needed(2_000_000, 1_999_500));
        assert!(tsc_scaling_needed(2_000_000, 2_000_501));
        assert!(tsc_scaling_needed(2_000_000, 3_000_000));
        assert!(tsc_scaling_needed(u32::MAX, 0));
    }
}
