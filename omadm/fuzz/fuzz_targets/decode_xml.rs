//! Any input through the XML decoder: see `../reencode.rs` for the property.
#![no_main]

#[path = "../reencode.rs"]
mod reencode;

use libfuzzer_sys::fuzz_target;
use omadm::codec::XmlCodec;

fuzz_target!(|input: &[u8]| reencode::check(&XmlCodec::default(), input));
