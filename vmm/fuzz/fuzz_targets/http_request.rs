//! The bytes a client sends to the VMM's API socket: head parser, body framing, route table,
//! body decoders and response encoding, with their invariants (`vmm::api::fuzz::request_bytes`).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::api::fuzz::request_bytes(data));

#[cfg(not(fuzzing))]
fn main() {
    vmm_fuzz::replay("http_request", vmm::api::fuzz::request_bytes);
}
