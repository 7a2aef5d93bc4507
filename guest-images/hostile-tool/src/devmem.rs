//! Physical memory through `/dev/mem`: the devices' MMIO windows and the RAM the guest kernel
//! does not use (above `mem=`).

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use anyhow::{bail, Context, Result};

/// A shared mapping of `len` bytes of physical memory at `phys`.
pub struct PhysMap {
    ptr: *mut u8,
    len: usize,
    pub phys: u64,
}

impl PhysMap {
    /// Maps `len` bytes at physical address `phys` (both page aligned).
    pub fn new(phys: u64, len: usize) -> Result<Self> {
        if phys % 4096 != 0 || len % 4096 != 0 || len == 0 {
            bail!("{phys:#x}+{len:#x} is not page aligned");
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/mem")
            .context("opening /dev/mem")?;
        // SAFETY: a new shared mapping of /dev/mem at no fixed address; the kernel checks the
        // range (STRICT_DEVMEM) and returns MAP_FAILED if it refuses.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                phys as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("mmap of /dev/mem at {phys:#x}+{len:#x}"));
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
            phys,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    fn at(&self, offset: usize, size: usize) -> *mut u8 {
        assert!(
            offset.checked_add(size).is_some_and(|end| end <= self.len),
            "access at {offset:#x}+{size} outside a mapping of {:#x}",
            self.len
        );
        // SAFETY: `offset + size <= len` was checked: the result is inside the mapping.
        unsafe { self.ptr.add(offset) }
    }

    pub fn write8(&self, offset: usize, v: u8) {
        // SAFETY: `at` checked the range; the mapping is live while `self` is.
        unsafe { std::ptr::write_volatile(self.at(offset, 1), v) }
    }

    pub fn write16(&self, offset: usize, v: u16) {
        assert!(offset % 2 == 0);
        // SAFETY: as in `write8`; the address is 2-byte aligned (checked).
        unsafe { std::ptr::write_volatile(self.at(offset, 2).cast::<u16>(), v) }
    }

    pub fn write32(&self, offset: usize, v: u32) {
        assert!(offset % 4 == 0);
        // SAFETY: as in `write8`; the address is 4-byte aligned (checked).
        unsafe { std::ptr::write_volatile(self.at(offset, 4).cast::<u32>(), v) }
    }

    pub fn write64(&self, offset: usize, v: u64) {
        assert!(offset % 8 == 0);
        // SAFETY: as in `write8`; the address is 8-byte aligned (checked).
        unsafe { std::ptr::write_volatile(self.at(offset, 8).cast::<u64>(), v) }
    }

    pub fn read8(&self, offset: usize) -> u8 {
        // SAFETY: as in `write8`.
        unsafe { std::ptr::read_volatile(self.at(offset, 1)) }
    }

    pub fn read16(&self, offset: usize) -> u16 {
        assert!(offset % 2 == 0);
        // SAFETY: as in `write16`.
        unsafe { std::ptr::read_volatile(self.at(offset, 2).cast::<u16>()) }
    }

    pub fn read32(&self, offset: usize) -> u32 {
        assert!(offset % 4 == 0);
        // SAFETY: as in `write32`.
        unsafe { std::ptr::read_volatile(self.at(offset, 4).cast::<u32>()) }
    }

    pub fn read64(&self, offset: usize) -> u64 {
        assert!(offset % 8 == 0);
        // SAFETY: as in `write64`.
        unsafe { std::ptr::read_volatile(self.at(offset, 8).cast::<u64>()) }
    }

    /// Fills `offset..offset + len` with `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) {
        let p = self.at(offset, len);
        // SAFETY: `at` checked the whole range.
        unsafe { std::ptr::write_bytes(p, byte, len) }
    }
}

impl Drop for PhysMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The virtio-mmio windows (ACPI `LNRO0005` devices) in `/proc/iomem`.
pub fn virtio_windows() -> Result<Vec<(u64, u64)>> {
    let text = std::fs::read_to_string("/proc/iomem").context("reading /proc/iomem")?;
    parse_iomem(&text)
}

/// The `LNRO0005` ranges of an `/proc/iomem` text, as (base, length), sorted.
fn parse_iomem(text: &str) -> Result<Vec<(u64, u64)>> {
    let mut found = Vec::new();
    for line in text.lines() {
        let Some((range, name)) = line.trim().split_once(" : ") else {
            continue;
        };
        if !name.starts_with("LNRO0005") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let start = u64::from_str_radix(start, 16).context("iomem start")?;
        let end = u64::from_str_radix(end, 16).context("iomem end")?;
        found.push((start, end - start + 1));
    }
    found.sort_unstable();
    found.dedup();
    Ok(found)
}

#[cfg(test)]
mod tests {
    #[test]
    fn iomem_lines_of_virtio_mmio_devices_are_found_at_any_depth() {
        let text = "00000000-00000fff : Reserved\n\
                    00100000-0bffffff : System RAM\n\
                    d0001000-d00011ff : LNRO0005:01\n\
                    d0000000-d00001ff : LNRO0005:00\n  \
                    d0000000-d00001ff : virtio-mmio\n\
                    fec00000-fec003ff : IOAPIC 0\n";
        assert_eq!(
            super::parse_iomem(text).unwrap(),
            vec![(0xd000_0000, 0x200), (0xd000_1000, 0x200)]
        );
        assert!(super::parse_iomem("zz-1 : LNRO0005:00").is_err());
    }
}
