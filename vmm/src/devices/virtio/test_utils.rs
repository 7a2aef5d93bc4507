//! Test side of a virtqueue: writes descriptor tables and rings into a real `GuestMemoryMmap`
//! the way a guest driver would, and drives a transport through its MMIO registers.

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::mmio::{regs, MmioDevice, VirtioMmioTransport};
use super::spec::status;

pub const DESC_NEXT: u16 = super::spec::desc_flags::NEXT;
pub const DESC_WRITE: u16 = super::spec::desc_flags::WRITE;

/// 16 MiB of guest memory at address 0.
pub fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap()
}

/// A split virtqueue laid out in guest memory.
pub struct GuestQueue {
    mem: GuestMemoryMmap,
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    next_free: u16,
}

impl GuestQueue {
    /// A queue at 0x1000.
    pub fn new(mem: &GuestMemoryMmap, size: u16) -> Self {
        Self::at(mem, 0x1000, size)
    }

    /// A queue whose descriptor table starts at `base`.
    pub fn at(mem: &GuestMemoryMmap, base: u64, size: u16) -> Self {
        let desc = base;
        let avail = desc + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size) + 3) & !3;
        let q = GuestQueue {
            mem: mem.clone(),
            size,
            desc,
            avail,
            used,
            next_free: 0,
        };
        let zeroes = vec![0u8; (used + 6 + 8 * u64::from(size) - desc) as usize];
        mem.write_slice(&zeroes, GuestAddress(desc)).unwrap();
        q
    }

    pub fn write_raw_descriptor(
        &self,
        table: u64,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem
            .write_slice(&raw, GuestAddress(table + 16 * u64::from(index)))
            .unwrap();
    }

    pub fn write_descriptor(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        self.write_raw_descriptor(self.desc, index, addr, len, flags, next);
    }

    /// Writes a chain of `(addr, len, flags)` into free descriptors, links it and makes it
    /// available. Returns the head index.
    pub fn add_chain(&mut self, buffers: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_free;
        for (i, (addr, len, flags)) in buffers.iter().enumerate() {
            let index = (self.next_free + i as u16) % self.size;
            let last = i + 1 == buffers.len();
            let flags = if last { *flags } else { *flags | DESC_NEXT };
            self.write_descriptor(index, *addr, *len, flags, (index + 1) % self.size);
        }
        self.next_free = (self.next_free + buffers.len() as u16) % self.size;
        self.publish(head);
        head
    }

    fn avail_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.avail + 2)).unwrap()
    }

    pub fn set_avail_idx(&self, idx: u16) {
        self.mem
            .write_obj(idx, GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// Puts `head` in the available ring and bumps its index.
    pub fn publish(&self, head: u16) {
        let idx = self.avail_idx();
        let slot = self.avail + 4 + 2 * u64::from(idx % self.size);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.set_avail_idx(idx.wrapping_add(1));
    }

    pub fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.used + 2)).unwrap()
    }

    /// `(id, len)` of every used-ring entry so far.
    pub fn used_entries(&self) -> Vec<(u32, u32)> {
        (0..self.used_idx())
            .map(|i| {
                let slot = self.used + 4 + 8 * u64::from(i % self.size);
                let id: u32 = self.mem.read_obj(GuestAddress(slot)).unwrap();
                let len: u32 = self.mem.read_obj(GuestAddress(slot + 4)).unwrap();
                (id, len)
            })
            .collect()
    }

    /// A `Queue` set up directly (for tests below the transport).
    pub fn ready_queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.set_size(self.size);
        q.try_set_desc_table_address(GuestAddress(self.desc))
            .unwrap();
        q.try_set_avail_ring_address(GuestAddress(self.avail))
            .unwrap();
        q.try_set_used_ring_address(GuestAddress(self.used))
            .unwrap();
        q.set_ready(true);
        q
    }
}

pub fn write_reg(t: &mut VirtioMmioTransport, offset: u64, value: u32) {
    t.mmio_write(offset, &value.to_le_bytes());
}

pub fn read_reg(t: &mut VirtioMmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.mmio_read(offset, &mut b);
    u32::from_le_bytes(b)
}

/// Runs the driver side of initialisation (virtio 1.2, 3.1.1) through the MMIO registers:
/// accepts every offered feature, sets up `queues` in order, and sets DRIVER_OK.
pub fn bring_up(t: &mut VirtioMmioTransport, queues: &[&GuestQueue]) {
    bring_up_without(t, queues, 0);
}

/// [`bring_up`], declining the feature bits in `declined`.
pub fn bring_up_without(t: &mut VirtioMmioTransport, queues: &[&GuestQueue], declined: u64) {
    write_reg(t, regs::STATUS, 0);
    write_reg(t, regs::STATUS, status::ACKNOWLEDGE);
    write_reg(t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    for sel in 0..2 {
        write_reg(t, regs::DEVICE_FEATURES_SEL, sel);
        let offered = read_reg(t, regs::DEVICE_FEATURES);
        write_reg(t, regs::DRIVER_FEATURES_SEL, sel);
        write_reg(
            t,
            regs::DRIVER_FEATURES,
            offered & !((declined >> (32 * sel)) as u32),
        );
    }
    let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    write_reg(t, regs::STATUS, s);
    assert_eq!(read_reg(t, regs::STATUS), s, "FEATURES_OK refused");
    for (i, q) in queues.iter().enumerate() {
        write_reg(t, regs::QUEUE_SEL, i as u32);
        write_reg(t, regs::QUEUE_NUM, u32::from(q.size));
        write_reg(t, regs::QUEUE_DESC_LOW, q.desc as u32);
        write_reg(t, regs::QUEUE_DESC_HIGH, (q.desc >> 32) as u32);
        write_reg(t, regs::QUEUE_AVAIL_LOW, q.avail as u32);
        write_reg(t, regs::QUEUE_AVAIL_HIGH, (q.avail >> 32) as u32);
        write_reg(t, regs::QUEUE_USED_LOW, q.used as u32);
        write_reg(t, regs::QUEUE_USED_HIGH, (q.used >> 32) as u32);
        write_reg(t, regs::QUEUE_READY, 1);
        assert_eq!(read_reg(t, regs::QUEUE_READY), 1, "queue {i} refused");
    }
    write_reg(t, regs::STATUS, s | status::DRIVER_OK);
    assert_eq!(read_reg(t, regs::STATUS), s | status::DRIVER_OK);
}
