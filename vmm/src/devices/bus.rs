//! Address buses for port I/O and MMIO. Devices register address ranges; each device sits behind
//! its own lock, so vCPUs touching different devices do not contend. Accesses nobody claimed
//! are counted and ignored (reads return all ones).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// A device on a bus. `offset` is relative to the start of the range it was registered at.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared between the bus and its owner.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Why a range could not be registered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("{bus} range {base:#x}+{len:#x} overlaps a registered device")]
    Overlap {
        bus: &'static str,
        base: u64,
        len: u64,
    },
    #[error("{bus} range at {base:#x} has zero length or wraps around")]
    BadRange { bus: &'static str, base: u64 },
}

struct Range {
    len: u64,
    device: SharedDevice,
}

/// A bus: an ordered map from range start to device.
pub struct Bus {
    name: &'static str,
    ranges: RwLock<BTreeMap<u64, Range>>,
    unhandled: AtomicU64,
}

impl Bus {
    /// An empty bus; `name` appears in errors and logs ("pio", "mmio").
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            ranges: RwLock::new(BTreeMap::new()),
            unhandled: AtomicU64::new(0),
        }
    }

    /// Registers `device` for addresses `base..base + len`.
    pub fn insert(&self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::BadRange {
                bus: self.name,
                base,
            })?;
        let mut ranges = self.ranges.write().unwrap_or_else(|p| p.into_inner());
        let overlaps_before = ranges
            .range(..end)
            .next_back()
            .is_some_and(|(start, r)| start + r.len > base);
        if overlaps_before {
            return Err(BusError::Overlap {
                bus: self.name,
                base,
                len,
            });
        }
        ranges.insert(base, Range { len, device });
        Ok(())
    }

    /// The device and offset for an access of `size` bytes at `addr`, if one device holds it all.
    fn find(&self, addr: u64, size: usize) -> Option<(SharedDevice, u64)> {
        let ranges = self.ranges.read().unwrap_or_else(|p| p.into_inner());
        let (start, range) = ranges.range(..=addr).next_back()?;
        let offset = addr - start;
        (offset + size as u64 <= range.len).then(|| (Arc::clone(&range.device), offset))
    }

    /// Reads from the device at `addr`; returns false (and all ones) if there is none.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((device, offset)) => {
                device
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                self.count_unhandled(addr, "read");
                false
            }
        }
    }

    /// Writes to the device at `addr`; returns false if there is none.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((device, offset)) => {
                device
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .write(offset, data);
                true
            }
            None => {
                self.count_unhandled(addr, "write");
                false
            }
        }
    }

    /// How many accesses hit no device.
    pub fn unhandled_accesses(&self) -> u64 {
        self.unhandled.load(Ordering::Relaxed)
    }

    fn count_unhandled(&self, addr: u64, kind: &str) {
        self.unhandled.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(bus = self.name, addr, kind, "access to no device");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the last write and answers reads with its offset.
    #[derive(Default)]
    struct Echo {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_accesses_by_range_with_relative_offsets() {
        let bus = Bus::new("pio");
        let a = Arc::new(Mutex::new(Echo::default()));
        let b = Arc::new(Mutex::new(Echo::default()));
        bus.insert(0x3f8, 8, a.clone()).unwrap();
        bus.insert(0x70, 2, b.clone()).unwrap();
        let mut data = [0u8; 1];
        assert!(bus.read(0x3fd, &mut data));
        assert_eq!(data, [5]);
        assert!(bus.write(0x71, &[9]));
        assert_eq!(b.lock().unwrap().last_write, Some((1, vec![9])));
        assert!(a.lock().unwrap().last_write.is_none());
    }

    #[test]
    fn unclaimed_accesses_are_counted_and_read_as_ones() {
        let bus = Bus::new("mmio");
        bus.insert(0x1000, 0x100, Arc::new(Mutex::new(Echo::default())))
            .unwrap();
        let mut data = [0u8; 4];
        assert!(!bus.read(0x2000, &mut data));
        assert_eq!(data, [0xff; 4]);
        // Straddling the end of a range is not claimed either.
        assert!(!bus.write(0x10fe, &[1, 2, 3, 4]));
        assert!(!bus.write(0xfff, &[1]));
        assert_eq!(bus.unhandled_accesses(), 3);
    }

    #[test]
    fn overlapping_and_empty_ranges_are_refused() {
        let bus = Bus::new("pio");
        let dev = || Arc::new(Mutex::new(Echo::default()));
        bus.insert(0x60, 5, dev()).unwrap();
        assert!(matches!(
            bus.insert(0x64, 1, dev()),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(0x5f, 2, dev()),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(0x70, 0, dev()),
            Err(BusError::BadRange { .. })
        ));
        assert!(matches!(
            bus.insert(u64::MAX, 2, dev()),
            Err(BusError::BadRange { .. })
        ));
        bus.insert(0x65, 1, dev()).unwrap();
        bus.insert(0x5f, 1, dev()).unwrap();
    }
}
