//! A snapshot's manifest (`vmm::fuzz::loaders::snapshot_manifest`).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzz::loaders::snapshot_manifest(data));

#[cfg(not(fuzzing))]
fn main() {
    vmm_fuzz::replay("snapshot_manifest", vmm::fuzz::loaders::snapshot_manifest);
}
