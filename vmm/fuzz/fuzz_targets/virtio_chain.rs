//! A guest-written descriptor table walked as a chain (`vmm::fuzz::virtio::descriptor_chain`).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzz::virtio::descriptor_chain(data));

#[cfg(not(fuzzing))]
fn main() {
    vmm_fuzz::replay("virtio_chain", vmm::fuzz::virtio::descriptor_chain);
}
