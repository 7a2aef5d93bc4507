//! Any input: the WBXML decoder returns a message or an error and never panics; a decoded
//! message re-encodes to WBXML that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omadm::codec::{Codec, WbxmlCodec};

fuzz_target!(|input: &[u8]| {
    let codec = WbxmlCodec::default();
    let Ok(msg) = codec.decode(input) else {
        return;
    };
    let Ok(bytes) = codec.encode(&msg) else {
        return;
    };
    let again = codec
        .decode(&bytes)
        .expect("our own WBXML of a decoded message must decode");
    assert_eq!(again, msg, "WBXML re-encoding changed the message");
});
