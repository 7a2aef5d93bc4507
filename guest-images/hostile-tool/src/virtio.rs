//! The driver side of virtio-mmio, written by hand so that it can also be written wrong: the
//! registers of one device window and split virtqueues in memory the program owns.

use anyhow::{bail, Result};

use crate::devmem::PhysMap;

pub const MAGIC_VALUE: usize = 0x000;
pub const DEVICE_ID: usize = 0x008;
pub const DEVICE_FEATURES: usize = 0x010;
pub const DEVICE_FEATURES_SEL: usize = 0x014;
pub const DRIVER_FEATURES: usize = 0x020;
pub const DRIVER_FEATURES_SEL: usize = 0x024;
pub const QUEUE_SEL: usize = 0x030;
pub const QUEUE_NUM_MAX: usize = 0x034;
pub const QUEUE_NUM: usize = 0x038;
pub const QUEUE_READY: usize = 0x044;
pub const QUEUE_NOTIFY: usize = 0x050;
pub const INTERRUPT_STATUS: usize = 0x060;
pub const INTERRUPT_ACK: usize = 0x064;
pub const STATUS: usize = 0x070;
pub const QUEUE_DESC_LOW: usize = 0x080;
pub const QUEUE_AVAIL_LOW: usize = 0x090;
pub const QUEUE_USED_LOW: usize = 0x0a0;
/// Size of a device's register window.
pub const WINDOW: usize = 0x200;
pub const MAGIC: u32 = 0x7472_6976;

pub const F_INDIRECT_DESC: u64 = 1 << 28;
pub const F_EVENT_IDX: u64 = 1 << 29;
pub const F_VERSION_1: u64 = 1 << 32;

pub const DESC_NEXT: u16 = 1;
pub const DESC_WRITE: u16 = 2;
pub const DESC_INDIRECT: u16 = 4;

pub const DEVICE_NET: u32 = 1;
pub const DEVICE_BLOCK: u32 = 2;
pub const DEVICE_RNG: u32 = 4;
pub const DEVICE_VSOCK: u32 = 19;

/// Largest queue this program sets up.
pub const QUEUE_SIZE: u16 = 256;

/// One device's register window (the page holding it).
pub struct Device {
    pub regs: PhysMap,
    pub device_id: u32,
}

impl Device {
    pub fn new(regs: PhysMap) -> Self {
        let device_id = regs.read32(DEVICE_ID);
        Self { regs, device_id }
    }

    pub fn read(&self, reg: usize) -> u32 {
        self.regs.read32(reg)
    }

    pub fn write(&self, reg: usize, value: u32) {
        self.regs.write32(reg, value)
    }

    pub fn name(&self) -> &'static str {
        match self.device_id {
            DEVICE_NET => "net",
            DEVICE_BLOCK => "block",
            DEVICE_RNG => "rng",
            DEVICE_VSOCK => "vsock",
            _ => "unknown",
        }
    }

    pub fn notify(&self, queue: u32) {
        self.write(QUEUE_NOTIFY, queue);
    }

    /// Resets the device and drives it to DRIVER_OK with `queues` (the devices' own checks
    /// decide whether each queue is accepted: a refused queue reads back not ready).
    /// Returns how many of the queues read back ready.
    pub fn bring_up(&self, queues: &[Vq], mem: &PhysMap, want: u64) -> Result<usize> {
        self.write(STATUS, 0);
        self.write(STATUS, 1);
        self.write(STATUS, 1 | 2);
        self.write(DEVICE_FEATURES_SEL, 0);
        let low = u64::from(self.read(DEVICE_FEATURES));
        self.write(DEVICE_FEATURES_SEL, 1);
        let offered = low | (u64::from(self.read(DEVICE_FEATURES)) << 32);
        let acked = offered & want;
        self.write(DRIVER_FEATURES_SEL, 0);
        self.write(DRIVER_FEATURES, acked as u32);
        self.write(DRIVER_FEATURES_SEL, 1);
        self.write(DRIVER_FEATURES, (acked >> 32) as u32);
        self.write(STATUS, 1 | 2 | 8);
        if self.read(STATUS) & 8 == 0 {
            bail!("{} refused features {acked:#x}", self.name());
        }
        let mut ready = 0;
        for (index, q) in queues.iter().enumerate() {
            self.write(QUEUE_SEL, index as u32);
            let max = self.read(QUEUE_NUM_MAX);
            if max == 0 {
                break;
            }
            q.clear(mem);
            self.write(QUEUE_NUM, u32::from(q.size));
            let split = |reg_low: usize, addr: u64| {
                self.write(reg_low, addr as u32);
                self.write(reg_low + 4, (addr >> 32) as u32);
            };
            split(QUEUE_DESC_LOW, q.desc_phys);
            split(QUEUE_AVAIL_LOW, q.avail_phys);
            split(QUEUE_USED_LOW, q.used_phys);
            self.write(QUEUE_READY, 1);
            if self.read(QUEUE_READY) == 1 {
                ready += 1;
            }
        }
        self.write(STATUS, 1 | 2 | 8 | 4);
        Ok(ready)
    }

    /// How many queues the device has (QueueNumMax non-zero).
    pub fn queue_count(&self) -> usize {
        (0..8)
            .take_while(|&i| {
                self.write(QUEUE_SEL, i);
                self.read(QUEUE_NUM_MAX) != 0
            })
            .count()
    }
}

/// A split virtqueue in owned memory: offsets into the owned mapping and their guest-physical
/// addresses (which a hostile setup may point anywhere).
#[derive(Clone, Debug)]
pub struct Vq {
    pub size: u16,
    pub desc: usize,
    pub avail: usize,
    pub used: usize,
    pub desc_phys: u64,
    pub avail_phys: u64,
    pub used_phys: u64,
    /// Our shadow of the available index.
    pub avail_idx: u16,
}

impl Vq {
    /// A queue of `size` entries whose three parts start at owned offset `base` (16 KiB).
    pub fn at(mem: &PhysMap, base: usize, size: u16) -> Self {
        Self {
            size,
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            desc_phys: mem.phys + base as u64,
            avail_phys: mem.phys + base as u64 + 0x1000,
            used_phys: mem.phys + base as u64 + 0x2000,
            avail_idx: 0,
        }
    }

    pub fn clear(&self, mem: &PhysMap) {
        mem.fill(self.desc, 0x3000, 0);
    }

    pub fn write_desc(
        &self,
        mem: &PhysMap,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        write_desc_at(mem, self.desc, index, addr, len, flags, next);
    }

    /// Makes `head` available and bumps the index.
    pub fn publish(&mut self, mem: &PhysMap, head: u16) {
        let slot = usize::from(self.avail_idx % self.size);
        mem.write16(self.avail + 4 + 2 * slot, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write16(self.avail + 2, self.avail_idx);
    }

    /// Writes any available index (a bogus one included).
    pub fn set_avail_idx(&mut self, mem: &PhysMap, idx: u16) {
        self.avail_idx = idx;
        mem.write16(self.avail + 2, idx);
    }

    pub fn used_idx(&self, mem: &PhysMap) -> u16 {
        mem.read16(self.used + 2)
    }

    /// Entry `slot` of the used ring: (id, len).
    pub fn used_entry(&self, mem: &PhysMap, slot: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * usize::from(slot % self.size);
        (mem.read32(at), mem.read32(at + 4))
    }
}

/// Writes descriptor `index` of the table at owned offset `table`.
pub fn write_desc_at(
    mem: &PhysMap,
    table: usize,
    index: u16,
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
) {
    let at = table + 16 * usize::from(index);
    mem.write64(at, addr);
    mem.write32(at + 8, len);
    mem.write16(at + 12, flags);
    mem.write16(at + 14, next);
}
