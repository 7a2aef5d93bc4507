//! Where hostile descriptors and rings point: the memory this program owns (the top of guest
//! RAM, above the guest kernel's `mem=`), and addresses the device must refuse. Nothing here
//! ever points a device-writable buffer at the guest kernel's own RAM.

use crate::devmem::PhysMap;
use crate::prng::{choose, Prng};

/// Bytes of owned memory per device.
pub const SLOT: usize = 4 << 20;
/// Offsets inside a device's slot.
pub const QUEUES: usize = 0;
pub const INDIRECT: usize = 0x1_0000;
pub const BUFFERS: usize = 0x2_0000;

#[derive(Clone, Copy, Debug)]
pub struct Targets {
    /// First byte past guest RAM.
    pub ram_end: u64,
    /// A device's MMIO window (not RAM).
    pub mmio: u64,
}

impl Targets {
    /// Addresses no buffer may have: past RAM, straddling its end, in MMIO, wrapping.
    pub fn bad_addr(&self, rng: &mut Prng) -> u64 {
        choose(
            &[
                self.ram_end,
                self.ram_end - 8,
                self.ram_end - 1,
                self.mmio,
                0xfec0_0000,
                0xfee0_0000,
                0x1_0000_0000,
                1 << 40,
                1 << 52,
                u64::MAX - 7,
                u64::MAX,
            ],
            rng,
        )
    }

    /// A length from the edges.
    pub fn odd_len(&self, rng: &mut Prng) -> u32 {
        choose(
            &[
                0,
                1,
                15,
                16,
                17,
                4096,
                0x1_0000,
                0x10_0000,
                0x7fff_ffff,
                0x8000_0000,
                0xffff_fff0,
                u32::MAX,
                rng.next_u32(),
            ],
            rng,
        )
    }

    /// A queue part's address: inside owned memory (anywhere, aligned or not) or bad.
    pub fn ring_addr(&self, own: &PhysMap, rng: &mut Prng) -> u64 {
        if rng.below(2) == 0 {
            own.phys + rng.below(own.len() as u64 - 0x4000)
        } else {
            self.bad_addr(rng)
        }
    }
}
