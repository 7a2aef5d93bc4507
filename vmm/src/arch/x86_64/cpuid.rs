//! CPUID for a guest vCPU: KVM's supported set, with the topology leaves rewritten so the guest
//! sees `vcpu_count` single-threaded cores in one package, its own APIC ID, and the hypervisor bit.

use kvm_bindings::kvm_cpuid_entry2;

/// Leaf 0x1 ECX: TSC deadline timer.
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Leaf 0x1 ECX: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 0x1 EDX: more than one logical processor per package.
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 0x8000_0001 ECX: core multi-processing legacy mode (AMD).
const EXT1_ECX_CMP_LEGACY: u32 = 1 << 1;

/// Extended topology level types (leaves 0xB and 0x1F, ECX[15:8]).
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// The CPU vendor, from leaf 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Intel,
    Amd,
    Other,
}

/// Reads the vendor from leaf 0 of `entries`.
pub fn vendor(entries: &[kvm_cpuid_entry2]) -> Vendor {
    let Some(leaf0) = entries.iter().find(|e| e.function == 0) else {
        return Vendor::Other;
    };
    let mut id = [0u8; 12];
    id[0..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    id[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    id[8..12].copy_from_slice(&leaf0.ecx.to_le_bytes());
    match &id {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
        _ => Vendor::Other,
    }
}

/// Number of bits needed to hold IDs `0..count` (ceil(log2(count))).
fn id_bits(count: u8) -> u32 {
    match count {
        0 | 1 => 0,
        n => u32::BITS - u32::from(n - 1).leading_zeros(),
    }
}

/// Rewrites `entries` (from `KVM_GET_SUPPORTED_CPUID`) for vCPU `vcpu_id` of `vcpu_count`.
/// The APIC ID of a vCPU is its index.
pub fn normalize(
    entries: &mut [kvm_cpuid_entry2],
    vcpu_id: u8,
    vcpu_count: u8,
    tsc_deadline: bool,
) {
    let vendor = vendor(entries);
    let apic_id = u32::from(vcpu_id);
    let count = u32::from(vcpu_count);
    let core_bits = id_bits(vcpu_count);
    for entry in entries.iter_mut() {
        match entry.function {
            0x1 => {
                // EBX: [31:24] initial APIC ID, [23:16] logical processors per package,
                // [15:8] CLFLUSH line size in 8-byte units.
                entry.ebx = (apic_id << 24) | (count << 16) | (8 << 8) | (entry.ebx & 0xff);
                entry.ecx |= LEAF1_ECX_HYPERVISOR;
                if tsc_deadline {
                    entry.ecx |= LEAF1_ECX_TSC_DEADLINE;
                }
                if vcpu_count > 1 {
                    entry.edx |= LEAF1_EDX_HTT;
                } else {
                    entry.edx &= !LEAF1_EDX_HTT;
                }
            }
            0x4 if vendor == Vendor::Intel => {
                // Deterministic cache parameters: EAX[31:26] cores per package - 1,
                // EAX[25:14] logical processors sharing this cache - 1.
                let level = (entry.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                entry.eax = (entry.eax & 0x3fff) | (sharing << 14) | ((count - 1) << 26);
            }
            0xb | 0x1f => {
                entry.edx = apic_id;
                match entry.index {
                    0 => {
                        entry.eax = 0;
                        entry.ebx = 1;
                        entry.ecx = (LEVEL_TYPE_SMT << 8) | entry.index;
                    }
                    1 => {
                        entry.eax = core_bits;
                        entry.ebx = count;
                        entry.ecx = (LEVEL_TYPE_CORE << 8) | entry.index;
                    }
                    _ => {
                        entry.eax = 0;
                        entry.ebx = 0;
                        entry.ecx = entry.index;
                    }
                }
            }
            0x8000_0001 if vendor == Vendor::Amd => {
                if vcpu_count > 1 {
                    entry.ecx |= EXT1_ECX_CMP_LEGACY;
                } else {
                    entry.ecx &= !EXT1_ECX_CMP_LEGACY;
                }
            }
            0x8000_0008 if vendor == Vendor::Amd => {
                // ECX: [15:12] APIC ID bits for cores, [7:0] cores per package - 1.
                entry.ecx = (entry.ecx & !0xf0ff) | (core_bits << 12) | (count - 1);
            }
            0x8000_001e if vendor == Vendor::Amd => {
                // Extended APIC ID; compute unit = core with one thread; one node.
                entry.eax = apic_id;
                entry.ebx = apic_id & 0xff;
                entry.ecx = 0;
                entry.edx = 0;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    fn leaf0(vendor: &[u8; 12]) -> kvm_cpuid_entry2 {
        let word =
            |i: usize| u32::from_le_bytes([vendor[i], vendor[i + 1], vendor[i + 2], vendor[i + 3]]);
        kvm_cpuid_entry2 {
            function: 0,
            eax: 0x1f,
            ebx: word(0),
            edx: word(4),
            ecx: word(8),
            ..Default::default()
        }
    }

    fn find(entries: &[kvm_cpuid_entry2], function: u32, index: u32) -> kvm_cpuid_entry2 {
        *entries
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn vendor_is_read_from_leaf_zero() {
        assert_eq!(vendor(&[leaf0(b"GenuineIntel")]), Vendor::Intel);
        assert_eq!(vendor(&[leaf0(b"AuthenticAMD")]), Vendor::Amd);
        assert_eq!(vendor(&[]), Vendor::Other);
    }

    #[test]
    fn leaf1_carries_apic_id_count_and_hypervisor_bit() {
        let mut entries = vec![leaf0(b"GenuineIntel"), entry(1, 0)];
        entries[1].edx = LEAF1_EDX_HTT;
        normalize(&mut entries, 3, 4, true);
        let leaf1 = find(&entries, 1, 0);
        assert_eq!(leaf1.ebx >> 24, 3);
        assert_eq!((leaf1.ebx >> 16) & 0xff, 4);
        assert_ne!(leaf1.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(leaf1.ecx & LEAF1_ECX_TSC_DEADLINE, 0);
        assert_ne!(leaf1.edx & LEAF1_EDX_HTT, 0);

        normalize(&mut entries, 0, 1, false);
        let leaf1 = find(&entries, 1, 0);
        assert_eq!(leaf1.edx & LEAF1_EDX_HTT, 0);
        assert_eq!(leaf1.ebx >> 24, 0);
    }

    #[test]
    fn extended_topology_reports_cores_and_x2apic_id() {
        let mut entries = vec![
            leaf0(b"GenuineIntel"),
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0xb, 2),
        ];
        normalize(&mut entries, 2, 3, false);
        let smt = find(&entries, 0xb, 0);
        let core = find(&entries, 0xb, 1);
        let end = find(&entries, 0xb, 2);
        assert_eq!(
            (smt.eax, smt.ebx, smt.ecx >> 8, smt.edx),
            (0, 1, LEVEL_TYPE_SMT, 2)
        );
        assert_eq!(
            (core.eax, core.ebx, core.ecx >> 8, core.edx),
            (2, 3, LEVEL_TYPE_CORE, 2)
        );
        assert_eq!((end.ebx, end.ecx >> 8), (0, 0));
    }

    #[test]
    fn intel_cache_leaf_reports_cores_per_package() {
        let mut entries = vec![leaf0(b"GenuineIntel"), entry(4, 0), entry(4, 3)];
        entries[1].eax = (1 << 5) | 1; // L1 data cache
        entries[2].eax = (3 << 5) | 3; // L3 unified cache
        normalize(&mut entries, 0, 4, false);
        let l1 = find(&entries, 4, 0);
        let l3 = find(&entries, 4, 3);
        assert_eq!(l1.eax >> 26, 3);
        assert_eq!((l1.eax >> 14) & 0xfff, 0);
        assert_eq!((l3.eax >> 14) & 0xfff, 3);
        assert_eq!(l1.eax & 0x1f, 1, "cache type kept");
    }

    #[test]
    fn amd_core_count_and_extended_apic_id() {
        let mut entries = vec![
            leaf0(b"AuthenticAMD"),
            entry(0x8000_0001, 0),
            entry(0x8000_0008, 0),
            entry(0x8000_001e, 0),
        ];
        entries[2].ecx = 0x0000_f0ff;
        normalize(&mut entries, 1, 2, false);
        let ext8 = find(&entries, 0x8000_0008, 0);
        assert_eq!(ext8.ecx & 0xff, 1);
        assert_eq!((ext8.ecx >> 12) & 0xf, 1);
        assert_eq!(find(&entries, 0x8000_001e, 0).eax, 1);
        assert_ne!(find(&entries, 0x8000_0001, 0).ecx & EXT1_ECX_CMP_LEGACY, 0);
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(2), 1);
        assert_eq!(id_bits(3), 2);
        assert_eq!(id_bits(4), 2);
        assert_eq!(id_bits(5), 3);
        assert_eq!(id_bits(255), 8);
    }
}
