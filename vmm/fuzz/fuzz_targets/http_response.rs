//! The bytes a VMM sends back to the agent's client: the response head parser
//! (`vmm::api::fuzz::response_bytes`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::api::fuzz::response_bytes(data));
