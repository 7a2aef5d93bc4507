//! Phase (a): garbage in every register of a device window, of every width, and in the rest of
//! the window's page (addresses no device claims).

use crate::devmem::PhysMap;
use crate::prng::{choose, Prng};
use crate::targets::Targets;
use crate::virtio::*;

/// One round of register garbage on `dev`; returns the number of accesses made.
pub fn garbage(dev: &Device, own: &PhysMap, targets: &Targets, rng: &mut Prng) -> u64 {
    let regs = &dev.regs;
    let mut n = 0u64;
    // Every 32-bit register slot of the page, the 0x200-byte window and beyond.
    for offset in (0..regs.len()).step_by(4) {
        regs.write32(offset, rng.next_u32());
        n += 1;
    }
    // Every width, at random offsets of the window, aligned and not (8-byte accesses are one
    // MMIO exit; 1- and 2-byte ones too).
    for _ in 0..64 {
        let off = rng.below(WINDOW as u64) as usize;
        regs.write8(off, rng.next_u32() as u8);
        let _ = regs.read8(off);
        regs.write16(off & !1, rng.next_u32() as u16);
        let _ = regs.read16(off & !1);
        regs.write64(off & !7, rng.next_u64());
        let _ = regs.read64(off & !7);
        n += 6;
    }
    // Every register read, whatever it is.
    for offset in (0..WINDOW).step_by(4) {
        let _ = regs.read32(offset);
        n += 1;
    }
    // Plausible-looking set-ups with hostile queue addresses and sizes, then DRIVER_OK and
    // notifications: the device must refuse the queue or survive using it.
    for _ in 0..8 {
        for status in [0u32, 1, 3] {
            dev.write(STATUS, status);
        }
        dev.write(DRIVER_FEATURES_SEL, choose(&[0, 1, 2, u32::MAX], rng));
        dev.write(DRIVER_FEATURES, rng.next_u32());
        dev.write(DRIVER_FEATURES_SEL, 1);
        dev.write(
            DRIVER_FEATURES,
            choose(&[1, 0, u32::MAX, rng.next_u32()], rng),
        );
        dev.write(
            STATUS,
            choose(&[0xb, 0xf, 0x4b, 0x8b, 0xff, rng.next_u32()], rng),
        );
        dev.write(QUEUE_SEL, choose(&[0, 1, 2, 3, 0xffff, u32::MAX], rng));
        dev.write(
            QUEUE_NUM,
            choose(&[0, 1, 3, 256, 1024, 32768, 65535, u32::MAX], rng),
        );
        for reg in [QUEUE_DESC_LOW, QUEUE_AVAIL_LOW, QUEUE_USED_LOW] {
            let addr = targets.ring_addr(own, rng);
            dev.write(reg, addr as u32);
            dev.write(reg + 4, (addr >> 32) as u32);
        }
        dev.write(QUEUE_READY, choose(&[1, 1, 0, u32::MAX], rng));
        dev.write(STATUS, 0xf);
        for q in [0u32, 1, 2, 3, 0xffff] {
            dev.notify(q);
        }
        let _ = dev.read(INTERRUPT_STATUS);
        dev.write(INTERRUPT_ACK, u32::MAX);
        n += 24;
    }
    dev.write(STATUS, 0);
    n + 1
}
