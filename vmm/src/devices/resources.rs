//! Resources handed to devices: interrupt lines (GSIs on the IOAPIC) and MMIO windows in the
//! device area of the MMIO gap, plus the DSDT AML that describes each device to the guest.

use crate::memory::{MMIO_DEVICES_END, MMIO_DEVICES_START};

/// IOAPIC pins free for devices. Legacy ISA lines are kept for their usual owners: 0 timer,
/// 1 keyboard, 2 cascade, 3 COM2, 4 COM1, 8 RTC, 12 mouse.
const FREE_GSIS: [u32; 15] = [5, 6, 7, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21];
/// MMIO windows are aligned to (and at least) one page.
const MMIO_ALIGN: u64 = 0x1000;

/// Why a resource could not be allocated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResourceError {
    #[error("no free interrupt line left for a device")]
    NoGsi,
    #[error("no room left in the device MMIO area for {0:#x} bytes")]
    NoMmio(u64),
}

/// Hands out GSIs and MMIO windows, and collects the devices' DSDT AML.
#[derive(Debug)]
pub struct Resources {
    next_gsi: usize,
    next_mmio: u64,
    dsdt_aml: Vec<u8>,
}

impl Default for Resources {
    fn default() -> Self {
        Self::new()
    }
}

impl Resources {
    pub fn new() -> Self {
        Self {
            next_gsi: 0,
            next_mmio: MMIO_DEVICES_START,
            dsdt_aml: Vec::new(),
        }
    }

    /// A GSI no other device uses (edge-triggered, active high in the DSDT).
    pub fn allocate_gsi(&mut self) -> Result<u32, ResourceError> {
        let gsi = *FREE_GSIS.get(self.next_gsi).ok_or(ResourceError::NoGsi)?;
        self.next_gsi += 1;
        Ok(gsi)
    }

    /// A page-aligned MMIO window of at least `size` bytes; returns its guest address.
    pub fn allocate_mmio(&mut self, size: u64) -> Result<u64, ResourceError> {
        let rounded = size
            .max(1)
            .checked_next_multiple_of(MMIO_ALIGN)
            .ok_or(ResourceError::NoMmio(size))?;
        let base = self.next_mmio;
        let end = base
            .checked_add(rounded)
            .filter(|end| *end <= MMIO_DEVICES_END)
            .ok_or(ResourceError::NoMmio(size))?;
        self.next_mmio = end;
        Ok(base)
    }

    /// Adds a device's AML (e.g. a `Device(...)` object) to the DSDT.
    pub fn add_dsdt_aml(&mut self, aml: &[u8]) {
        self.dsdt_aml.extend_from_slice(aml);
    }

    /// The AML of all devices so far.
    pub fn dsdt_aml(&self) -> &[u8] {
        &self.dsdt_aml
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsis_are_unique_and_skip_legacy_lines() {
        let mut res = Resources::new();
        let mut seen = Vec::new();
        while let Ok(gsi) = res.allocate_gsi() {
            assert!(![0, 1, 2, 3, 4, 8, 12].contains(&gsi));
            assert!(!seen.contains(&gsi));
            seen.push(gsi);
        }
        assert_eq!(seen.len(), FREE_GSIS.len());
        assert_eq!(res.allocate_gsi(), Err(ResourceError::NoGsi));
    }

    #[test]
    fn mmio_windows_are_page_aligned_and_disjoint() {
        let mut res = Resources::new();
        let a = res.allocate_mmio(0x200).unwrap();
        let b = res.allocate_mmio(0x1001).unwrap();
        let c = res.allocate_mmio(0x1000).unwrap();
        assert_eq!(a, MMIO_DEVICES_START);
        assert_eq!(b, a + 0x1000);
        assert_eq!(c, b + 0x2000);
        assert!(res.allocate_mmio(MMIO_DEVICES_END).is_err());
        assert!(res.allocate_mmio(u64::MAX).is_err());
    }
}
