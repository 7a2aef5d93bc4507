//! Which MSRs a vCPU snapshot carries.
//!
//! KVM_GET_MSR_INDEX_LIST reports every MSR KVM knows how to save, including PMU, VMX and
//! Hyper-V ones that `KVM_GET_MSRS` refuses unless the matching CPUID features are exposed. We
//! keep only the architectural and KVM paravirtual MSRs that describe the guest's running state
//! (an allow-list of ranges, in the spirit of Firecracker's `msr_should_serialize`), intersected
//! with what the host reports.

use kvm_ioctls::Kvm;

/// `IA32_TSC`: the guest's time stamp counter.
pub const MSR_IA32_TSC: u32 = 0x10;
/// `IA32_TSC_DEADLINE`: must be restored after `IA32_TSC` (see `vcpu_state`).
pub const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
/// `IA32_MCG_CTL`: listed by KVM but readable only when `MCG_CAP.CTL_P` is set; never saved.
const MSR_IA32_MCG_CTL: u32 = 0x17b;

/// A half-open range `[first, first + count)` of MSR indices.
struct MsrRange {
    first: u32,
    count: u32,
}

impl MsrRange {
    const fn one(index: u32) -> Self {
        Self {
            first: index,
            count: 1,
        }
    }

    const fn many(first: u32, count: u32) -> Self {
        Self { first, count }
    }

    fn contains(&self, index: u32) -> bool {
        index >= self.first && index - self.first < self.count
    }
}

/// MSRs worth saving, sorted by index.
const SAVEABLE_MSRS: &[MsrRange] = &[
    MsrRange::one(0x0), // IA32_P5_MC_ADDR
    MsrRange::one(0x1), // IA32_P5_MC_TYPE
    MsrRange::one(MSR_IA32_TSC),
    MsrRange::one(0x17),          // IA32_PLATFORM_ID
    MsrRange::one(0x1b),          // IA32_APIC_BASE
    MsrRange::one(0x2a),          // EBL_CR_POWERON
    MsrRange::one(0x2c),          // EBC_FREQUENCY_ID
    MsrRange::one(0x34),          // SMI_COUNT
    MsrRange::one(0x3a),          // IA32_FEATURE_CONTROL
    MsrRange::one(0x3b),          // IA32_TSC_ADJUST
    MsrRange::one(0x48),          // IA32_SPEC_CTRL
    MsrRange::one(0x49),          // IA32_PRED_CMD
    MsrRange::one(0x79),          // IA32_UCODE_WRITE
    MsrRange::one(0x8b),          // IA32_UCODE_REV
    MsrRange::one(0x9e),          // IA32_SMBASE
    MsrRange::one(0xcd),          // FSB_FREQ
    MsrRange::one(0xce),          // PLATFORM_INFO
    MsrRange::one(0xe2),          // PKG_CST_CONFIG_CONTROL
    MsrRange::one(0xe7),          // IA32_MPERF
    MsrRange::one(0xe8),          // IA32_APERF
    MsrRange::one(0xfe),          // IA32_MTRRCAP
    MsrRange::one(0x11e),         // BBL_CR_CTL3
    MsrRange::one(0x140),         // MISC_FEATURES_ENABLES
    MsrRange::many(0x174, 3),     // IA32_SYSENTER_CS / _ESP / _EIP
    MsrRange::many(0x179, 2),     // IA32_MCG_CAP, IA32_MCG_STATUS
    MsrRange::one(0x198),         // IA32_PERF_STATUS
    MsrRange::one(0x1a0),         // IA32_MISC_ENABLE
    MsrRange::one(0x1a4),         // MISC_FEATURE_CONTROL
    MsrRange::one(0x1aa),         // MISC_PWR_MGMT
    MsrRange::many(0x1ad, 2),     // TURBO_RATIO_LIMIT, TURBO_RATIO_LIMIT1
    MsrRange::one(0x1d9),         // IA32_DEBUGCTL
    MsrRange::many(0x1db, 4),     // last branch / last interrupt from/to IP
    MsrRange::one(0x1fc),         // POWER_CTL
    MsrRange::many(0x200, 0x100), // MTRRs, IA32_PAT (0x277), MTRR_DEF_TYPE (0x2ff)
    MsrRange::many(0x3fc, 3),     // core C3/C6/C7 residency
    MsrRange::many(0x400, 0x80),  // machine check banks
    MsrRange::one(0x606),         // RAPL_POWER_UNIT
    MsrRange::many(0x60a, 3),     // package C-state IRTL
    MsrRange::many(0x610, 2),     // PKG_POWER_LIMIT, PKG_ENERGY_STATUS
    MsrRange::many(0x613, 2),     // PKG_PERF_STATUS, PKG_POWER_INFO
    MsrRange::many(0x618, 2),     // DRAM_POWER_LIMIT, DRAM_ENERGY_STATUS
    MsrRange::many(0x61b, 2),     // DRAM_PERF_STATUS, DRAM_POWER_INFO
    MsrRange::many(0x648, 5),     // CONFIG_TDP_*, TURBO_ACTIVATION_RATIO
    MsrRange::one(MSR_IA32_TSC_DEADLINE),
    MsrRange::many(0x800, 0x400),   // x2APIC registers
    MsrRange::many(0x4b56_4d00, 7), // KVM paravirtual: wall clock, system time, async PF, steal time, PV EOI, poll control, async PF int
    MsrRange::many(0xc000_0080, 5), // EFER, STAR, LSTAR, CSTAR, SYSCALL_MASK
    MsrRange::many(0xc000_0100, 4), // FS_BASE, GS_BASE, KERNEL_GS_BASE, TSC_AUX
    MsrRange::one(0xc001_0015),     // AMD HWCR
];

/// Whether the MSR `index` belongs in a vCPU snapshot.
pub fn is_saveable(index: u32) -> bool {
    index != MSR_IA32_MCG_CTL && SAVEABLE_MSRS.iter().any(|range| range.contains(index))
}

/// The MSRs to save for every vCPU of a VM on this host: KVM's index list, filtered by
/// [`is_saveable`], in the order KVM reported them.
pub fn msrs_to_save(kvm: &Kvm) -> Result<Vec<u32>, kvm_ioctls::Error> {
    let list = kvm.get_msr_index_list()?;
    Ok(list
        .as_slice()
        .iter()
        .copied()
        .filter(|index| is_saveable(*index))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_is_sorted_and_disjoint() {
        for pair in SAVEABLE_MSRS.windows(2) {
            assert!(pair[0].first + pair[0].count <= pair[1].first);
        }
    }

    #[test]
    fn time_and_mode_msrs_are_saveable_and_pmu_is_not() {
        assert!(is_saveable(MSR_IA32_TSC));
        assert!(is_saveable(MSR_IA32_TSC_DEADLINE));
        assert!(is_saveable(0xc000_0080)); // EFER
        assert!(is_saveable(0x4b56_4d01)); // KVM system time
        assert!(is_saveable(0x277)); // PAT
        assert!(!is_saveable(MSR_IA32_MCG_CTL));
        assert!(!is_saveable(0xc1)); // IA32_PMC0
        assert!(!is_saveable(0x480)); // IA32_VMX_BASIC
        assert!(!is_saveable(0x4000_0000)); // Hyper-V guest OS id
    }
}
