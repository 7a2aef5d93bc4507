//! Phase (b): virtqueues set up by hand and fed looping, overlapping, out-of-bounds,
//! zero-length, oversized and nested-indirect descriptor chains and bogus available indexes.

use std::time::{Duration, Instant};

use crate::devmem::PhysMap;
use crate::prng::{choose, Prng};
use crate::targets::{Targets, BUFFERS, INDIRECT, QUEUES, SLOT};
use crate::virtio::*;

/// One device's queues in its slot of owned memory.
pub struct Attack<'a> {
    pub dev: &'a Device,
    pub own: &'a PhysMap,
    pub targets: Targets,
    /// Offset of this device's slot in the owned mapping.
    pub slot: usize,
    pub queues: Vec<Vq>,
    /// Chains made available so far.
    pub chains: u64,
}

impl<'a> Attack<'a> {
    pub fn new(dev: &'a Device, own: &'a PhysMap, targets: Targets, index: usize) -> Self {
        let slot = index * SLOT;
        let count = dev.queue_count().min(4);
        let queues = (0..count)
            .map(|q| Vq::at(own, slot + QUEUES + q * 0x4000, QUEUE_SIZE))
            .collect();
        Self {
            dev,
            own,
            targets,
            slot,
            queues,
            chains: 0,
        }
    }

    /// Fresh queues and DRIVER_OK; returns how many queues the device took.
    pub fn bring_up(&mut self) -> usize {
        for q in &mut self.queues {
            q.avail_idx = 0;
        }
        let want = F_VERSION_1 | F_INDIRECT_DESC | F_EVENT_IDX;
        self.dev.bring_up(&self.queues, self.own, want).unwrap_or(0)
    }

    fn buf(&self, offset: usize) -> u64 {
        self.own.phys + (self.slot + BUFFERS + offset) as u64
    }

    fn buf_off(&self, offset: usize) -> usize {
        self.slot + BUFFERS + offset
    }

    fn indirect_off(&self, table: usize) -> usize {
        self.slot + INDIRECT + table * 0x1000
    }

    fn indirect(&self, table: usize) -> u64 {
        self.own.phys + self.indirect_off(table) as u64
    }

    /// A request header the device parses (block, vsock, net) or random bytes, at buffer
    /// offset `at`; returns its length.
    fn header(&self, rng: &mut Prng, at: usize) -> u32 {
        let o = self.buf_off(at);
        let m = self.own;
        match self.dev.device_id {
            DEVICE_BLOCK => {
                m.write32(o, choose(&[0, 1, 4, 8, 11, 13, rng.next_u32()], rng));
                m.write32(o + 4, 0);
                m.write64(
                    o + 8,
                    choose(
                        &[0, 1, 16383, 16384, 1 << 40, u64::MAX, rng.next_u64()],
                        rng,
                    ),
                );
                16
            }
            DEVICE_VSOCK => {
                m.write64(o, choose(&[3, 2, u64::MAX, rng.next_u64()], rng));
                m.write64(o + 8, choose(&[2, 2, 1, 3, rng.next_u64()], rng));
                m.write32(o + 16, choose(&[1024, 5000, rng.next_u32()], rng));
                m.write32(o + 20, choose(&[1024, 5000, 5001, rng.next_u32()], rng));
                m.write32(o + 24, choose(&[0, 4, 4096, 0x10_0000, u32::MAX], rng));
                m.write16(o + 28, choose(&[1, 1, 2, rng.next_u32() as u16], rng));
                m.write16(o + 30, choose(&[1, 2, 3, 4, 5, 6, 7, 0, 99], rng));
                m.write32(o + 32, choose(&[0, 1, 2, 3, u32::MAX], rng));
                m.write32(o + 36, choose(&[0, 262_144, u32::MAX], rng));
                m.write32(o + 40, rng.next_u32());
                44
            }
            DEVICE_NET => {
                m.write8(o, choose(&[0, 1, 2, 0xff], rng));
                m.write8(o + 1, choose(&[0, 1, 3, 4, 5, 0x80, 0xff], rng));
                m.write16(o + 2, rng.next_u32() as u16);
                m.write16(o + 4, rng.next_u32() as u16);
                m.write16(o + 6, rng.next_u32() as u16);
                m.write16(o + 8, rng.next_u32() as u16);
                m.write16(o + 10, rng.next_u32() as u16);
                12
            }
            _ => {
                m.write64(o, rng.next_u64());
                8
            }
        }
    }

    /// Makes `heads` available on queue `qi`, notifies, and waits (briefly) for the device.
    fn submit(&mut self, qi: usize, heads: &[u16]) {
        let q = &mut self.queues[qi];
        for &h in heads {
            q.publish(self.own, h);
        }
        self.chains += heads.len() as u64;
        self.dev.notify(qi as u32);
        settle(q, self.own);
    }

    /// Every kind of bad chain, once, on every queue.
    pub fn round(&mut self, rng: &mut Prng) {
        self.bring_up();
        for qi in 0..self.queues.len() {
            self.loops(qi);
            self.overlapping(qi, rng);
            self.out_of_bounds(qi, rng);
            self.oversized(qi, rng);
            self.zero_length(qi, rng);
            self.indirect_tables(qi, rng);
            self.bogus_avail(qi, rng);
            self.random_tables(qi, rng);
        }
        self.live_reconfiguration(rng);
        self.bring_up();
    }

    fn table(&self, qi: usize) -> &Vq {
        &self.queues[qi]
    }

    fn clear_table(&self, qi: usize) {
        let q = self.table(qi);
        self.own.fill(q.desc, 0x1000, 0);
    }

    /// d0 -> d1 -> d0; d2 -> d2; and the whole table as one ring.
    fn loops(&mut self, qi: usize) {
        self.clear_table(qi);
        let (q, m) = (self.table(qi).clone(), self.own);
        let b = self.buf(0);
        q.write_desc(m, 0, b, 16, DESC_NEXT, 1);
        q.write_desc(m, 1, b + 16, 16, DESC_NEXT, 0);
        q.write_desc(m, 2, b, 16, DESC_NEXT | DESC_WRITE, 2);
        for i in 3..q.size {
            let next = if i + 1 == q.size { 3 } else { i + 1 };
            q.write_desc(m, i, b, 1, DESC_NEXT, next);
        }
        self.submit(qi, &[0, 2, 3, 1]);
    }

    /// Readable and writable buffers on the same bytes, and writable buffers over the queue's
    /// own descriptor table and rings (the device writes into what it is reading).
    fn overlapping(&mut self, qi: usize, rng: &mut Prng) {
        self.clear_table(qi);
        let hlen = self.header(rng, 0);
        let (q, m) = (self.table(qi).clone(), self.own);
        let b = self.buf(0);
        q.write_desc(m, 0, b, hlen, DESC_NEXT, 1);
        q.write_desc(m, 1, b, 4096, DESC_NEXT | DESC_WRITE, 2);
        q.write_desc(m, 2, b + 8, 1, DESC_WRITE, 0);
        // Header readable, data writable over the descriptor table, status over the used ring.
        q.write_desc(m, 3, b, hlen, DESC_NEXT, 4);
        q.write_desc(m, 4, q.desc_phys, 0x3000, DESC_NEXT | DESC_WRITE, 5);
        q.write_desc(m, 5, q.used_phys + 2, 1, DESC_WRITE, 0);
        self.submit(qi, &[0, 0, 3]);
        // The device may have rewritten the table: make it ours again.
        self.clear_table(qi);
    }

    /// Buffers past the end of RAM, straddling it, in MMIO, wrapping around, huge.
    fn out_of_bounds(&mut self, qi: usize, rng: &mut Prng) {
        self.clear_table(qi);
        let hlen = self.header(rng, 0);
        let (q, m, t) = (self.table(qi).clone(), self.own, self.targets);
        let b = self.buf(0);
        let mut heads = Vec::new();
        for i in 0..32u16 {
            let d = i * 3;
            let bad = t.bad_addr(rng);
            let len = t.odd_len(rng).max(2);
            q.write_desc(m, d, b, hlen, DESC_NEXT, d + 1);
            q.write_desc(
                m,
                d + 1,
                bad,
                len,
                DESC_NEXT | (rng.below(2) as u16 * DESC_WRITE),
                d + 2,
            );
            q.write_desc(m, d + 2, b + 64, 1, DESC_WRITE, 0);
            heads.push(d);
        }
        // Owned buffer, length running past the end of RAM; and a bad header.
        let last = self.targets.ram_end - self.buf(0);
        q.write_desc(
            m,
            100,
            b,
            (last + 4096).min(u64::from(u32::MAX)) as u32,
            DESC_WRITE,
            0,
        );
        q.write_desc(m, 101, t.bad_addr(rng), 16, DESC_NEXT, 102);
        q.write_desc(m, 102, b + 64, 1, DESC_WRITE, 0);
        heads.extend([100, 101]);
        self.submit(qi, &heads);
    }

    /// Chains whose buffers add up to more than 4 GiB (readable buffers over the whole of RAM,
    /// which the device only ever reads), and one just under it.
    fn oversized(&mut self, qi: usize, rng: &mut Prng) {
        self.clear_table(qi);
        let hlen = self.header(rng, 0);
        let (q, m) = (self.table(qi).clone(), self.own);
        let ram = self.targets.ram_end.min(u64::from(u32::MAX)) as u32;
        q.write_desc(m, 0, self.buf(0), hlen, DESC_NEXT, 1);
        for i in 1..40u16 {
            q.write_desc(m, i, 0, ram, DESC_NEXT, i + 1);
        }
        q.write_desc(m, 40, self.buf(64), 1, DESC_WRITE, 0);
        q.write_desc(m, 50, self.buf(0), hlen, DESC_NEXT, 51);
        let under = (u64::from(u32::MAX) / u64::from(ram)) as u16 - 1;
        for i in 51..51 + under {
            q.write_desc(m, i, 0, ram, DESC_NEXT, i + 1);
        }
        q.write_desc(m, 51 + under, self.buf(64), 1, DESC_WRITE, 0);
        self.submit(qi, &[0, 50]);
    }

    /// Zero-length descriptors: alone, as every part of a request, a full table of them.
    fn zero_length(&mut self, qi: usize, rng: &mut Prng) {
        self.clear_table(qi);
        let hlen = self.header(rng, 0);
        let (q, m) = (self.table(qi).clone(), self.own);
        let b = self.buf(0);
        q.write_desc(m, 0, b, 0, 0, 0);
        q.write_desc(m, 1, b, 0, DESC_WRITE, 0);
        q.write_desc(m, 2, b, 0, DESC_NEXT, 3);
        q.write_desc(m, 3, b, 0, DESC_NEXT | DESC_WRITE, 4);
        q.write_desc(m, 4, b, 0, DESC_WRITE, 0);
        q.write_desc(m, 5, b, hlen, DESC_NEXT, 6);
        q.write_desc(m, 6, b, 0, DESC_NEXT | DESC_WRITE, 7);
        q.write_desc(m, 7, b + 64, 0, DESC_WRITE, 0);
        for i in 8..q.size {
            let last = i + 1 == q.size;
            q.write_desc(m, i, 0, 0, if last { 0 } else { DESC_NEXT }, i + 1);
        }
        self.submit(qi, &[0, 1, 2, 5, 8]);
    }

    /// Indirect tables: empty, ragged, oversized, outside memory, nested, with NEXT, looping
    /// inside, pointing at themselves.
    fn indirect_tables(&mut self, qi: usize, rng: &mut Prng) {
        self.clear_table(qi);
        let hlen = self.header(rng, 0);
        let (q, m, t) = (self.table(qi).clone(), self.own, self.targets);
        self.own.fill(self.indirect_off(0), 0x1_0000, 0);
        let b = self.buf(0);
        // Table 0: a good request; table 1: loops inside; table 2: holds an indirect
        // descriptor (to table 0, and to itself).
        let (t0, t1, t2) = (
            self.indirect_off(0),
            self.indirect_off(1),
            self.indirect_off(2),
        );
        write_desc_at(m, t0, 0, b, hlen, DESC_NEXT, 1);
        write_desc_at(m, t0, 1, b + 64, 1, DESC_WRITE, 0);
        write_desc_at(m, t1, 0, b, hlen, DESC_NEXT, 1);
        write_desc_at(m, t1, 1, b + 64, 1, DESC_NEXT | DESC_WRITE, 0);
        write_desc_at(m, t2, 0, self.indirect(0), 32, DESC_INDIRECT, 0);
        write_desc_at(m, t2, 1, self.indirect(2), 32, DESC_INDIRECT | DESC_NEXT, 0);
        let cases: [(u64, u32, u16); 12] = [
            (self.indirect(0), 32, DESC_INDIRECT),
            (self.indirect(0), 0, DESC_INDIRECT),
            (self.indirect(0), 17, DESC_INDIRECT),
            (self.indirect(0), 16 * 2000, DESC_INDIRECT),
            (self.indirect(0), !15, DESC_INDIRECT),
            (t.bad_addr(rng), 32, DESC_INDIRECT),
            (self.indirect(1), 32, DESC_INDIRECT),
            (self.indirect(2), 16, DESC_INDIRECT),
            (self.indirect(2), 32, DESC_INDIRECT),
            (self.indirect(0), 32, DESC_INDIRECT | DESC_NEXT),
            (self.indirect(0), 32, DESC_INDIRECT | DESC_WRITE),
            (q.desc_phys, 0x1000, DESC_INDIRECT),
        ];
        let mut heads = Vec::new();
        for (i, (addr, len, flags)) in cases.into_iter().enumerate() {
            q.write_desc(m, i as u16, addr, len, flags, i as u16 + 1);
            heads.push(i as u16);
        }
        // An indirect descriptor after a normal one in the same chain.
        q.write_desc(m, 20, b, hlen, DESC_NEXT, 21);
        q.write_desc(m, 21, self.indirect(0), 32, DESC_INDIRECT, 0);
        heads.push(20);
        self.submit(qi, &heads);
    }

    /// Heads outside the table, an index that runs away by more than the queue size, one that
    /// goes backwards; then the index put back where the device is.
    fn bogus_avail(&mut self, qi: usize, rng: &mut Prng) {
        self.clear_table(qi);
        self.submit(qi, &[QUEUE_SIZE, 0xffff, 300, rng.next_u32() as u16]);
        let m = self.own;
        let q = &mut self.queues[qi];
        let sane = q.avail_idx;
        for bogus in [
            sane.wrapping_add(q.size + 1),
            sane.wrapping_add(0x8000),
            sane.wrapping_sub(5),
            sane.wrapping_add(q.size),
        ] {
            q.set_avail_idx(m, bogus);
            self.dev.notify(qi as u32);
            settle(q, m);
        }
        q.set_avail_idx(m, sane);
        self.chains += 4;
    }

    /// A table and ring of random descriptors (their addresses owned or bad, never the
    /// guest kernel's RAM) and random heads.
    fn random_tables(&mut self, qi: usize, rng: &mut Prng) {
        let (q, m, t) = (self.table(qi).clone(), self.own, self.targets);
        for i in 0..q.size {
            let addr = if rng.below(2) == 0 {
                self.buf(rng.below(0x10_0000) as usize)
            } else {
                t.bad_addr(rng)
            };
            let flags = rng.next_u32() as u16 & (DESC_NEXT | DESC_WRITE | DESC_INDIRECT | 0x80);
            let next = choose(&[i.wrapping_add(1), rng.next_u32() as u16, i, 0], rng);
            q.write_desc(m, i, addr, t.odd_len(rng) & 0xffff, flags, next);
        }
        let heads: Vec<u16> = (0..64)
            .map(|_| rng.next_u32() as u16 % (q.size + 8))
            .collect();
        self.submit(qi, &heads);
        self.clear_table(qi);
    }

    /// With DRIVER_OK set: queue registers rewritten, a queue disabled under the device, a
    /// reset with chains in flight, rings on top of each other and outside memory.
    fn live_reconfiguration(&mut self, rng: &mut Prng) {
        let dev = self.dev;
        for qi in 0..self.queues.len() {
            dev.write(QUEUE_SEL, qi as u32);
            dev.write(QUEUE_NUM, 1);
            dev.write(QUEUE_DESC_LOW, rng.next_u32());
            dev.write(QUEUE_READY, 0);
            self.submit(qi, &[0, 1, 2]);
        }
        self.bring_up();
        for qi in 0..self.queues.len() {
            let heads: Vec<u16> = (0..64).collect();
            let q = &mut self.queues[qi];
            for h in heads {
                q.publish(self.own, h);
            }
            dev.notify(qi as u32);
        }
        dev.write(STATUS, 0);
        // All three parts of each queue at one address, then at bad ones.
        let (m, t) = (self.own, self.targets);
        for alias in [true, false] {
            let queues: Vec<Vq> = self
                .queues
                .iter()
                .map(|q| {
                    let mut q = q.clone();
                    if alias {
                        q.avail_phys = q.desc_phys;
                        q.used_phys = q.desc_phys;
                    } else {
                        q.desc_phys = t.bad_addr(rng);
                        q.used_phys = t.ram_end - 4;
                    }
                    q
                })
                .collect();
            let _ = dev.bring_up(&queues, m, F_VERSION_1 | F_INDIRECT_DESC);
            for qi in 0..queues.len() {
                // Aliased: the available index is the table's first bytes; one head, 0,
                // whose descriptor is all zeroes (a zero-length buffer).
                self.own.fill(self.queues[qi].desc, 0x3000, 0);
                m.write16(self.queues[qi].desc + 2, 1);
                dev.notify(qi as u32);
            }
            self.chains += queues.len() as u64;
        }
        dev.write(STATUS, 0);
    }
}

/// Waits until the device stops moving the used index (at most 100 ms).
pub fn settle(q: &Vq, m: &PhysMap) {
    let deadline = Instant::now() + Duration::from_millis(100);
    let mut last = q.used_idx(m);
    let mut still = 0;
    while Instant::now() < deadline && still < 3 {
        std::thread::sleep(Duration::from_millis(1));
        let now = q.used_idx(m);
        if now == last {
            still += 1;
        } else {
            still = 0;
            last = now;
        }
    }
}
