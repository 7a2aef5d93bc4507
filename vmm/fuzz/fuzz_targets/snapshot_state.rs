//! A snapshot's state.bin, raw or behind a valid header (`vmm::fuzz::loaders::snapshot_state`).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzz::loaders::snapshot_state(data));

#[cfg(not(fuzzing))]
fn main() {
    vmm_fuzz::replay("snapshot_state", vmm::fuzz::loaders::snapshot_state);
}
