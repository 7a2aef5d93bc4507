//! Guest accesses to the virtio-mmio transport's registers (`vmm::fuzz::virtio::mmio_registers`).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzz::virtio::mmio_registers(data));

#[cfg(not(fuzzing))]
fn main() {
    vmm_fuzz::replay("virtio_mmio", vmm::fuzz::virtio::mmio_registers);
}
