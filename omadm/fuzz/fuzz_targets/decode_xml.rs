//! Any input: the XML decoder returns a message or an error and never panics; a decoded message
//! re-encodes (when XML can carry it) to something that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omadm::codec::{Codec, XmlCodec};

fuzz_target!(|input: &[u8]| {
    let codec = XmlCodec::default();
    let Ok(msg) = codec.decode(input) else {
        return;
    };
    let Ok(bytes) = codec.encode(&msg) else {
        return;
    };
    let again = codec
        .decode(&bytes)
        .expect("our own XML of a decoded message must decode");
    assert_eq!(again, msg, "XML re-encoding changed the message");
});
