//! Guest RAM and the guest-physical address map (x86_64).
//!
//! ```text
//! 0x0000_0000 ..0x0009_fc00  RAM (boot structures: GDT 0x500, PVH start info 0x6000,
//!                            zero page 0x7000, stack below 0x8ff0, page tables 0x9000..0xc000,
//!                            command line 0x20000)
//! 0x0009_fc00 ..0x0010_0000  reserved (EBDA, ACPI tables at 0xe0000, BIOS area)
//! 0x0010_0000 ..0xc000_0000  RAM (kernel at 1 MiB, initramfs at the top of low RAM)
//! 0xc000_0000 ..0x1_0000_0000 MMIO gap: device windows from 0xd000_0000, IOAPIC 0xfec0_0000,
//!                            LAPIC 0xfee0_0000, KVM TSS/identity map at 0xfffb_c000
//! 0x1_0000_0000 ..           RAM above 3 GiB of guest memory
//! ```
//!
//! Guest RAM is anonymous, private, `MAP_NORESERVE` memory: the host commits a page only when the
//! guest touches it. Each region's host address is aligned to 2 MiB like its guest address and
//! marked for transparent huge pages, so KVM can map the guest with 2 MiB pages (far fewer
//! nested-paging faults while the guest boots).

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

pub const MIB: u64 = 1 << 20;

/// End of the low RAM below the EBDA.
pub const EBDA_START: u64 = 0x9_fc00;
/// Where the kernel is loaded and "high memory" starts for the boot protocol.
pub const HIMEM_START: u64 = 0x10_0000;
/// ACPI tables live in the BIOS area, reserved in the e820 map.
pub const ACPI_TABLES_START: u64 = 0xe_0000;
pub const ACPI_TABLES_END: u64 = HIMEM_START;

pub const BOOT_GDT_ADDR: u64 = 0x500;
pub const BOOT_IDT_ADDR: u64 = 0x520;
pub const PVH_START_INFO_ADDR: u64 = 0x6000;
/// PVH module list (one entry: the initramfs), after the start info.
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
/// PVH memory map entries, after the module list.
pub const PVH_MEMMAP_ADDR: u64 = 0x6080;
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPTE_ADDR: u64 = 0xa000;
pub const PDE_ADDR: u64 = 0xb000;
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Longest kernel command line accepted (bytes, without the trailing NUL).
pub const CMDLINE_MAX_LEN: usize = 4095;

/// Start of the hole below 4 GiB where no RAM is mapped.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Device MMIO windows are allocated from here up to [`MMIO_DEVICES_END`].
pub const MMIO_DEVICES_START: u64 = 0xd000_0000;
pub const MMIO_DEVICES_END: u64 = 0xfe00_0000;
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
/// Three pages KVM needs for the real-mode TSS on Intel.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;

/// Alignment of guest RAM in the VMM's address space.
const HUGE_PAGE_SIZE: usize = 2 << 20;

/// Why guest memory could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot map {size_mib} MiB of guest memory")]
    Mmap {
        size_mib: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot use the mapping of {size_mib} MiB of guest memory")]
    Region {
        size_mib: u64,
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    #[error("guest memory regions are inconsistent")]
    Regions(#[source] vm_memory::GuestRegionCollectionError),
}

/// The RAM ranges (start, length) for `mem_bytes` of guest memory.
pub fn ram_ranges(mem_bytes: u64) -> Vec<(GuestAddress, u64)> {
    let low = mem_bytes.min(MMIO_GAP_START);
    let mut ranges = vec![(GuestAddress(0), low)];
    if mem_bytes > MMIO_GAP_START {
        ranges.push((GuestAddress(MMIO_GAP_END), mem_bytes - MMIO_GAP_START));
    }
    ranges
}

/// The end of RAM below 4 GiB.
pub fn low_ram_end(mem_bytes: u64) -> u64 {
    mem_bytes.min(MMIO_GAP_START)
}

/// Guest memory is readable and writable (never executable from the VMM's side).
pub(crate) const GUEST_PROT: i32 = libc::PROT_READ | libc::PROT_WRITE;
const GUEST_FLAGS: i32 = libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_NORESERVE;

/// Maps `len` bytes of anonymous private memory (`MAP_NORESERVE`, [`GUEST_PROT`]) at a 2 MiB-aligned
/// address with `MADV_HUGEPAGE`, and returns that address. The mapping is never unmapped by
/// this function's callers: guest memory lives as long as the VMM process.
pub(crate) fn reserve_aligned(len: usize) -> std::io::Result<usize> {
    let padded = len + HUGE_PAGE_SIZE;
    // SAFETY: a new anonymous mapping at an address of the kernel's choice; no existing memory
    // is affected.
    let raw = unsafe { libc::mmap(std::ptr::null_mut(), padded, GUEST_PROT, GUEST_FLAGS, -1, 0) };
    if raw == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let start = raw as usize;
    let aligned = start.next_multiple_of(HUGE_PAGE_SIZE);
    let (head, tail) = (aligned - start, padded - (aligned - start) - len);
    // SAFETY: both ranges lie inside the mapping just made and outside [aligned, aligned + len);
    // nothing refers to them.
    unsafe {
        if head > 0 {
            libc::munmap(raw, head);
        }
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
    }
    // SAFETY: [aligned, aligned + len) is mapped; a failed hint changes nothing.
    unsafe { libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
    Ok(aligned)
}

/// Maps `len` bytes of anonymous memory at a 2 MiB-aligned address ([`reserve_aligned`]). The
/// mapping is never unmapped: guest memory lives as long as the VMM process.
fn map_aligned(len: usize) -> Result<MmapRegion, MemoryError> {
    let size_mib = len as u64 / MIB;
    let aligned = reserve_aligned(len).map_err(|source| MemoryError::Mmap { size_mib, source })?;
    // SAFETY: [aligned, aligned + len) is a live anonymous mapping with these prot and flags,
    // owned by nothing else, and it is never unmapped.
    unsafe {
        MmapRegionBuilder::new(len)
            .with_raw_mmap_pointer(aligned as *mut u8)
            .with_mmap_prot(GUEST_PROT)
            .with_mmap_flags(GUEST_FLAGS)
            .build()
    }
    .map_err(|source| MemoryError::Region { size_mib, source })
}

/// Maps anonymous `MAP_NORESERVE` guest memory for `mem_bytes` bytes.
pub fn create_guest_memory(mem_bytes: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let mut regions = Vec::new();
    for (start, len) in ram_ranges(mem_bytes) {
        let region = map_aligned(len as usize)?;
        // The start addresses come from ram_ranges and cannot overflow with the region length.
        let region = GuestRegionMmap::new(region, start).ok_or(MemoryError::Regions(
            vm_memory::GuestRegionCollectionError::NoMemoryRegion,
        ))?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions).map_err(MemoryError::Regions)
}

/// The kind of an e820 entry (values of the BIOS e820 interface).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Kind {
    Ram = 1,
    Reserved = 2,
}

/// One entry of the guest's e820 memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: E820Kind,
}

/// The e820 map the guest sees for `mem_bytes` of RAM.
pub fn e820_map(mem_bytes: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820Kind::Ram,
        },
        E820Entry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820Kind::Reserved,
        },
    ];
    let low_end = low_ram_end(mem_bytes);
    if low_end > HIMEM_START {
        map.push(E820Entry {
            addr: HIMEM_START,
            size: low_end - HIMEM_START,
            kind: E820Kind::Ram,
        });
    }
    if mem_bytes > MMIO_GAP_START {
        map.push(E820Entry {
            addr: MMIO_GAP_END,
            size: mem_bytes - MMIO_GAP_START,
            kind: E820Kind::Ram,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    fn ram_total(map: &[E820Entry]) -> u64 {
        map.iter()
            .filter(|e| e.kind == E820Kind::Ram)
            .map(|e| e.size)
            .sum()
    }

    #[test]
    fn e820_small_vm_has_low_ram_hole_and_high_ram() {
        let mem = 128 * MIB;
        let map = e820_map(mem);
        assert_eq!(map.len(), 3);
        assert_eq!(
            map[0],
            E820Entry {
                addr: 0,
                size: 0x9_fc00,
                kind: E820Kind::Ram
            }
        );
        assert_eq!(map[1].kind, E820Kind::Reserved);
        assert!(map[1].addr <= ACPI_TABLES_START && map[1].addr + map[1].size >= ACPI_TABLES_END);
        assert_eq!(map[2].addr, HIMEM_START);
        assert_eq!(map[2].addr + map[2].size, mem);
        // RAM reported = all memory minus the reserved ISA hole.
        assert_eq!(ram_total(&map), mem - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn e820_large_vm_splits_around_the_mmio_gap() {
        let mem = 4096 * MIB;
        let map = e820_map(mem);
        let last = map.last().unwrap();
        assert_eq!(last.addr, MMIO_GAP_END);
        assert_eq!(last.size, mem - MMIO_GAP_START);
        assert!(map
            .iter()
            .all(|e| e.addr + e.size <= MMIO_GAP_START || e.addr >= MMIO_GAP_END));
        assert_eq!(ram_total(&map), mem - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn e820_entries_are_sorted_and_disjoint() {
        for mem in [32 * MIB, 1024 * MIB, 3072 * MIB, 8192 * MIB] {
            let map = e820_map(mem);
            for pair in map.windows(2) {
                assert!(pair[0].addr + pair[0].size <= pair[1].addr, "{map:?}");
            }
        }
    }

    #[test]
    fn ram_ranges_cover_all_memory() {
        for mem in [32 * MIB, 3072 * MIB, 5000 * MIB] {
            let total: u64 = ram_ranges(mem).iter().map(|r| r.1).sum();
            assert_eq!(total, mem);
        }
    }

    #[test]
    fn guest_memory_is_readable_and_writable_on_both_sides_of_the_gap() {
        // MAP_NORESERVE: mapping 3.5 GiB costs nothing until touched.
        let mem = create_guest_memory(3584 * MIB).unwrap();
        assert_eq!(mem.num_regions(), 2);
        mem.write_obj(0xdead_beef_u32, GuestAddress(0x1000))
            .unwrap();
        mem.write_obj(0x1234_u32, GuestAddress(MMIO_GAP_END + 8))
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x1000)).unwrap(),
            0xdead_beef
        );
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(MMIO_GAP_END + 8)).unwrap(),
            0x1234
        );
        assert!(mem.read_obj::<u32>(GuestAddress(MMIO_GAP_START)).is_err());
        for region in mem.iter() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .unwrap();
            assert_eq!(
                host as usize % HUGE_PAGE_SIZE,
                0,
                "host address 2 MiB aligned"
            );
        }
    }
}
