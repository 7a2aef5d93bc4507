//! A kernel image: bzImage payload, PVH ELF and Linux boot protocol loaders (`vmm::fuzz::loaders::boot_image`).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzz::loaders::boot_image(data));

#[cfg(not(fuzzing))]
fn main() {
    vmm_fuzz::replay("boot_image", vmm::fuzz::loaders::boot_image);
}
