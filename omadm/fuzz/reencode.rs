//! The property both fuzz targets and `tests/decoder_robustness.rs` check on any input: the decoder
//! returns a message or an error and never panics, and a decoded message that the codec can
//! encode again re-encodes to bytes that decode to the same message. The same holds for the
//! message as a [`Document`] (what `omadm convert` converts), in both encodings.

use omadm::codec::{Codec, Document, Encoding};

/// Checks the property for one input; panics when it does not hold.
pub fn check(codec: &dyn Codec, input: &[u8]) {
    check_document(codec.encoding(), input);
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

/// The property for `input` read as a [`Document`]: converted to either encoding, it decodes to
/// the same elements in the same order.
fn check_document(encoding: Encoding, input: &[u8]) {
    let Ok(document) = Document::decode_as(encoding, input) else {
        return;
    };
    for to in [Encoding::Xml, Encoding::Wbxml] {
        let Ok(bytes) = document.encode(to) else {
            continue;
        };
        let again = Document::decode_as(to, &bytes)
            .unwrap_or_else(|err| panic!("{input:?} converted to {to:?} does not decode: {err}"));
        assert_eq!(
            again, document,
            "converting {input:?} to {to:?} changed its elements"
        );
    }
}
