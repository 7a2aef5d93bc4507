//! The bytes a VMM sends back to a client: the client's response head parser
//! (`vmm::api::fuzz::response_bytes`).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::api::fuzz::response_bytes(data));

#[cfg(not(fuzzing))]
fn main() {
    vmm_fuzz::replay("http_response", vmm::api::fuzz::response_bytes);
}
