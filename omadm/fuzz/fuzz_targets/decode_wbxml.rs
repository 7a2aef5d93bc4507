//! Any input through the WBXML decoder: see `../reencode.rs` for the property.
#![no_main]

#[path = "../reencode.rs"]
mod reencode;

use libfuzzer_sys::fuzz_target;
use omadm::codec::WbxmlCodec;

fuzz_target!(|input: &[u8]| reencode::check(&WbxmlCodec::default(), input));
