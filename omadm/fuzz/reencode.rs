//! The property both fuzz targets and `tests/decoder_robustness.rs` check on any input: the decoder
//! returns a message or an error and never panics, and a decoded message that the codec can
//! encode again re-encodes to bytes that decode to the same message.

use omadm::codec::Codec;

/// Checks the property for one input; panics when it does not hold.
pub fn check(codec: &dyn Codec, input: &[u8]) {
    let Ok(msg) = codec.decode(input) else {
        return;
    };
    let Ok(bytes) = codec.encode(&msg) else {
        return;
    };
    let again = codec
        .decode(&bytes)
        .unwrap_or_else(|err| panic!("re-encoding of {input:?} does not decode: {err}"));
    assert_eq!(again, msg, "re-encoding changed the message of {input:?}");
}
