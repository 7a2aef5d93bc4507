//! Fuzzing entry points for what a guest or a file controls: virtio descriptor chains, the
//! block, net and rng devices' request handling, the virtio-mmio transport's registers, the
//! snapshot loader (state file and manifest), the boot-image loaders (bzImage, ELF).
//!
//! Shared by the targets in `vmm/fuzz/` (libFuzzer under `cargo fuzz`, or corpus replay plus
//! bounded random inputs on stable) and by `fuzz::tests` (every `cargo test`). Each function
//! takes arbitrary bytes, never panics on bad input, and asserts the invariants the VMM relies
//! on (a panic is a finding). See vmm/fuzz/README.md.

pub mod loaders;
#[cfg(test)]
mod tests;
pub mod virtio;

/// Reads fuzzer bytes as numbers; zeros once they run out.
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    pub fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }

    pub fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
}
