//! Bounded random-input runs of the fuzz targets' property (see `omadm/fuzz/`), so that every
//! `cargo test` exercises the decoders with hostile input: mutated golden messages and random
//! bytes never panic, and whatever decodes re-encodes to the same message.

#[path = "../fuzz/reencode.rs"]
mod reencode;

use std::path::PathBuf;

use omadm::codec::{Codec, WbxmlCodec, XmlCodec};

/// xorshift64*: a small deterministic generator (the seed is printed on failure).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

fn seeds(extension: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(extension))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no {extension} seeds in {}",
        dir.display()
    );
    files
        .iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect()
}

/// One random mutation of `input`, with bytes from `dictionary` (tokens worth trying).
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8], dictionary: &[&[u8]]) {
    let at = rng.below(input.len() + 1);
    match rng.below(8) {
        0 if at < input.len() => input[at] ^= 1 << rng.below(8),
        1 if at < input.len() => input[at] = rng.byte(),
        2 => input.insert(at, rng.byte()),
        3 if at < input.len() => {
            let end = (at + 1 + rng.below(16)).min(input.len());
            input.drain(at..end);
        }
        4 => input.truncate(at),
        5 => {
            let word = dictionary[rng.below(dictionary.len())];
            input.splice(at..at, word.iter().copied());
        }
        6 if !other.is_empty() => {
            let from = rng.below(other.len());
            let end = (from + 1 + rng.below(64)).min(other.len());
            input.splice(at..at, other[from..end].iter().copied());
        }
        _ => {
            let len = rng.below(8);
            let end = (at + len).min(input.len());
            let filler: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            input.splice(at..end, filler);
        }
    }
}

fn run(codec: &dyn Codec, seeds: &[Vec<u8>], dictionary: &[&[u8]], iterations: usize) -> usize {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut decoded = 0;
    for round in 0..iterations {
        let mut input = seeds[round % seeds.len()].clone();
        let other = &seeds[rng.below(seeds.len())];
        for _ in 0..=rng.below(4) {
            mutate(&mut rng, &mut input, other, dictionary);
        }
        reencode::check(codec, &input);
        decoded += usize::from(codec.decode(&input).is_ok());
        let random: Vec<u8> = (0..rng.below(64)).map(|_| rng.byte()).collect();
        reencode::check(codec, &random);
    }
    decoded
}

#[test]
fn xml_decoder_survives_mutated_and_random_input() {
    let dictionary: &[&[u8]] = &[
        b"<",
        b">",
        b"</",
        b"/>",
        b"&amp;",
        b"&#0;",
        b"&#x10FFFF;",
        b"<![CDATA[",
        b"]]>",
        b"<!--",
        b"-->",
        b"<?x?>",
        b"xmlns=\"a\"",
        b"<Data>",
        b"</Data>",
        b"<Item>",
        b"</Item>",
        b"<Atomic>",
        b"<Meta>",
        b"<Final/>",
        b"\xFF",
        b"\xC3\xA9",
        b"99999999999",
    ];
    let seeds = seeds(".xml");
    let decoded = run(&XmlCodec::default(), &seeds, dictionary, 4000);
    // The mutations are mild enough that some inputs still decode (the run reaches the reader).
    assert!(decoded > 0, "no mutated XML input decoded");
}

#[test]
fn wbxml_decoder_survives_mutated_and_random_input() {
    let dictionary: &[&[u8]] = &[
        &[0x00, 0x01],
        &[0x00, 0x02],
        &[0x01],
        &[0x02, 0x41],
        &[0x03, 0x61, 0x00],
        &[0x83, 0x00],
        &[0xC3, 0x03, 1, 2, 3],
        &[0xC3, 0x8F, 0xFF, 0xFF, 0xFF, 0x7F],
        &[0x48],
        &[0x64],
        &[0x54],
        &[0x5A],
        &[0x12],
        &[0x04, 0x00],
        &[0xC0],
        &[0x43],
    ];
    let seeds = seeds(".wbxml");
    let decoded = run(&WbxmlCodec::default(), &seeds, dictionary, 4000);
    assert!(decoded > 0, "no mutated WBXML input decoded");
}
