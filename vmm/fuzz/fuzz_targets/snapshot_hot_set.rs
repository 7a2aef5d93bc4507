//! A snapshot's hot set (`vmm::fuzz::loaders::snapshot_hot_set`).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzz::loaders::snapshot_hot_set(data));

#[cfg(not(fuzzing))]
fn main() {
    vmm_fuzz::replay("snapshot_hot_set", vmm::fuzz::loaders::snapshot_hot_set);
}
