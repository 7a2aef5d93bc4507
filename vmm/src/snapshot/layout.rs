//! Where guest memory lives: its regions in guest physical space and in `memory.bin`.

use serde::{Deserialize, Serialize};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::format::FormatError;

/// Guest memory granularity: region addresses and sizes are multiples of it.
pub const PAGE_SIZE: u64 = 4096;

/// One guest memory region and where it lives in `memory.bin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRegionLayout {
    /// Guest physical address of the first byte.
    pub guest_addr: u64,
    /// Length in bytes (a multiple of [`PAGE_SIZE`]).
    pub size: u64,
    /// Offset of the region's first byte in `memory.bin`.
    pub file_offset: u64,
}

/// Guest memory regions, sorted by guest address, packed back to back in `memory.bin`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryLayout {
    /// The regions.
    pub regions: Vec<MemoryRegionLayout>,
}

impl MemoryLayout {
    /// The layout of `memory`: its regions in guest address order, each placed right after the
    /// previous one in the file.
    pub fn of(memory: &GuestMemoryMmap<()>) -> Self {
        let mut file_offset = 0;
        let regions = memory
            .iter()
            .map(|region| {
                let layout = MemoryRegionLayout {
                    guest_addr: region.start_addr().0,
                    size: region.len(),
                    file_offset,
                };
                file_offset += region.len();
                layout
            })
            .collect();
        Self { regions }
    }

    /// Total guest memory in bytes, which is also the length of `memory.bin`.
    pub fn total_bytes(&self) -> u64 {
        self.regions.iter().map(|r| r.size).sum()
    }

    /// Checks that regions are page aligned, sorted, disjoint and packed from file offset 0.
    pub fn validate(&self) -> Result<(), FormatError> {
        let bad = |reason: String| Err(FormatError::Inconsistent(reason));
        let mut next_offset = 0u64;
        let mut previous_end = 0u64;
        for (i, r) in self.regions.iter().enumerate() {
            if r.size == 0 || r.size % PAGE_SIZE != 0 || r.guest_addr % PAGE_SIZE != 0 {
                return bad(format!("memory region {i} is empty or not page aligned"));
            }
            let Some(end) = r.guest_addr.checked_add(r.size) else {
                return bad(format!("memory region {i} wraps the address space"));
            };
            if i > 0 && r.guest_addr < previous_end {
                return bad(format!(
                    "memory region {i} overlaps or precedes region {}",
                    i - 1
                ));
            }
            if r.file_offset != next_offset {
                return bad(format!(
                    "memory region {i} is at file offset {:#x}, expected {next_offset:#x}",
                    r.file_offset
                ));
            }
            previous_end = end;
            next_offset += r.size;
        }
        if self.regions.is_empty() {
            return bad("no memory regions".to_string());
        }
        Ok(())
    }
}

/// The target a snapshot is restored into, for [`MachineState::check_fits`](super::format::MachineState::check_fits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetLayout {
    /// vCPUs of the target VM.
    pub vcpu_count: u32,
    /// Guest memory bytes of the target VM.
    pub memory_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_layouts_are_refused() {
        let region = |guest_addr, size, file_offset| MemoryRegionLayout {
            guest_addr,
            size,
            file_offset,
        };
        let cases = [
            vec![],
            vec![region(0, 0x1001, 0)],
            vec![region(0x800, 0x1000, 0)],
            vec![region(0, 0x2000, 0), region(0x1000, 0x1000, 0x2000)],
            vec![region(0, 0x1000, 0), region(0x2000, 0x1000, 0x2000)],
            vec![region(u64::MAX - 0xfff, 0x2000, 0)],
        ];
        for regions in cases {
            let layout = MemoryLayout { regions };
            assert!(layout.validate().is_err(), "{layout:?} accepted");
        }
        let good = MemoryLayout {
            regions: vec![region(0, 0x1000, 0), region(0x2000, 0x3000, 0x1000)],
        };
        good.validate().expect("valid layout");
        assert_eq!(good.total_bytes(), 0x4000);
    }
}
