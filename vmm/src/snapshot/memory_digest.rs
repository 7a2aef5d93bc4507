//! The checksum of `memory.bin`: a chunked xxh64 digest, named `xxh64-2m` in the manifest.
//!
//! Definition, on the logical file (holes read as zeros), independent of guest memory regions:
//! 1. cut the file into chunks of [`DIGEST_CHUNK_BYTES`] at offsets `0, 2 MiB, 4 MiB, …`; only
//!    the last chunk may be shorter (an empty file has no chunk);
//! 2. each chunk's digest is `xxh64(chunk, seed 0)`;
//! 3. the file digest is `xxh64(d0 ‖ d1 ‖ … , seed 0)`, the chunk digests as little-endian
//!    `u64`s in file order.
//!
//! A chunk that is all zeros (a hole, untouched anonymous memory) has a digest known in advance
//! ([`ZERO_CHUNK_DIGEST`] for a full chunk), so it costs nothing: saving and checking cost what
//! the data costs, not the memory size. xxh64 is used over CRC-32 because it is cheap in the
//! nested runner, where the VMM runs under QEMU TCG (see `docs/snapshot.md`).
//!
//! [`MemoryDigester`] takes the file's content in order as pieces of data and runs of zeros of
//! any length and does the cutting, so the writer (guest memory chunks and untouched pages) and
//! the readers (`SEEK_DATA`/`SEEK_HOLE` extents, read in buffers) agree by construction.

use xxhash_rust::xxh64::{xxh64, Xxh64};

/// Length of a digest chunk (the last chunk of the file may be shorter).
pub const DIGEST_CHUNK_BYTES: u64 = 2 << 20;

/// `xxh64` of [`DIGEST_CHUNK_BYTES`] zero bytes, seed 0 (checked by a test).
pub const ZERO_CHUNK_DIGEST: u64 = 0xeb8a_7322_f88e_23db;

/// Zeros to hash from, for the rare chunk mixing data and zeros or the short last chunk.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Feeds `len` zero bytes to `hasher`.
fn hash_zeros(hasher: &mut Xxh64, mut len: u64) {
    while len > 0 {
        let n = len.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..n]);
        len -= n as u64;
    }
}

/// The digest of a chunk of `len` zero bytes: a constant for a full chunk, hashed otherwise.
pub fn zero_chunk_digest(len: u64) -> u64 {
    if len == DIGEST_CHUNK_BYTES {
        return ZERO_CHUNK_DIGEST;
    }
    let mut hasher = Xxh64::new(0);
    hash_zeros(&mut hasher, len);
    hasher.digest()
}

/// The chunk being fed.
struct OpenChunk {
    hasher: Xxh64,
    /// Bytes of the chunk seen so far.
    filled: u64,
    /// Leading zeros not hashed yet: hashed only if data follows in the same chunk.
    pending_zeros: u64,
    /// Whether any data (not known zeros) was fed.
    has_data: bool,
}

impl OpenChunk {
    const fn new() -> Self {
        Self {
            hasher: Xxh64::new(0),
            filled: 0,
            pending_zeros: 0,
            has_data: false,
        }
    }

    fn digest(&self) -> u64 {
        if self.has_data {
            self.hasher.digest()
        } else {
            zero_chunk_digest(self.filled)
        }
    }
}

/// Computes the `xxh64-2m` digest of a file fed front to back (see the module documentation).
pub struct MemoryDigester {
    chunk: OpenChunk,
    /// Over the little-endian chunk digests.
    outer: Xxh64,
    /// Bytes fed so far.
    len: u64,
}

impl Default for MemoryDigester {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryDigester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryDigester")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl MemoryDigester {
    /// A digester at offset 0.
    pub const fn new() -> Self {
        Self {
            chunk: OpenChunk::new(),
            outer: Xxh64::new(0),
            len: 0,
        }
    }

    /// Bytes fed so far (the offset of the next byte).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room left in the open chunk.
    fn room(&self) -> u64 {
        DIGEST_CHUNK_BYTES - self.chunk.filled
    }

    fn advance(&mut self, n: u64) {
        self.chunk.filled += n;
        self.len += n;
        if self.chunk.filled == DIGEST_CHUNK_BYTES {
            self.close_chunk();
        }
    }

    fn close_chunk(&mut self) {
        self.outer.update(&self.chunk.digest().to_le_bytes());
        self.chunk = OpenChunk::new();
    }

    /// Feeds the next bytes of the file.
    pub fn data(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = (bytes.len() as u64).min(self.room()) as usize;
            let (head, rest) = bytes.split_at(n);
            let chunk = &mut self.chunk;
            if !chunk.has_data {
                hash_zeros(&mut chunk.hasher, chunk.pending_zeros);
                chunk.pending_zeros = 0;
                chunk.has_data = true;
            }
            chunk.hasher.update(head);
            self.advance(n as u64);
            bytes = rest;
        }
    }

    /// Feeds `len` zero bytes (a hole, untouched memory). Zeros filling a chunk that has no
    /// data are never hashed.
    pub fn zeros(&mut self, mut len: u64) {
        while len > 0 {
            let n = len.min(self.room());
            let chunk = &mut self.chunk;
            if chunk.has_data {
                hash_zeros(&mut chunk.hasher, n);
            } else {
                chunk.pending_zeros += n;
            }
            self.advance(n);
            len -= n;
        }
    }

    /// The digest of everything fed.
    pub fn finish(mut self) -> u64 {
        if self.chunk.filled > 0 {
            self.close_chunk();
        }
        self.outer.digest()
    }
}

/// The digest of `content` in one call (tests and small files).
pub fn digest_of(content: &[u8]) -> u64 {
    let mut digests = Vec::with_capacity(content.len().div_ceil(DIGEST_CHUNK_BYTES as usize) * 8);
    for chunk in content.chunks(DIGEST_CHUNK_BYTES as usize) {
        digests.extend_from_slice(&xxh64(chunk, 0).to_le_bytes());
    }
    xxh64(&digests, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: usize = DIGEST_CHUNK_BYTES as usize;

    /// The definition, written out independently of [`MemoryDigester`] and [`digest_of`].
    fn reference(content: &[u8]) -> u64 {
        let mut outer = Xxh64::new(0);
        let mut at = 0;
        while at < content.len() {
            let end = (at + CHUNK).min(content.len());
            outer.update(&xxh64(&content[at..end], 0).to_le_bytes());
            at = end;
        }
        outer.digest()
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8 ^ seed)
            .collect()
    }

    #[test]
    fn zero_chunk_constant_is_the_hash_of_a_zero_chunk() {
        assert_eq!(xxh64(&vec![0u8; CHUNK], 0), ZERO_CHUNK_DIGEST);
        for len in [0u64, 1, 4096, 1 << 20, DIGEST_CHUNK_BYTES] {
            assert_eq!(
                zero_chunk_digest(len),
                xxh64(&vec![0u8; len as usize], 0),
                "{len} zeros"
            );
        }
    }

    #[test]
    fn one_shot_digest_follows_the_definition() {
        for len in [0, 1, 4096, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12_288] {
            let content = pattern(len, 7);
            assert_eq!(digest_of(&content), reference(&content), "{len} bytes");
        }
    }

    /// A file of data and zeros, fed as the given pieces: `(is_data, len)`.
    fn feed(pieces: &[(bool, usize)]) -> (u64, Vec<u8>) {
        let mut digester = MemoryDigester::new();
        let mut content = Vec::new();
        for (i, &(is_data, len)) in pieces.iter().enumerate() {
            if is_data {
                let bytes = pattern(len, i as u8 + 1);
                digester.data(&bytes);
                content.extend_from_slice(&bytes);
            } else {
                digester.zeros(len as u64);
                content.resize(content.len() + len, 0);
            }
        }
        assert_eq!(digester.len(), content.len() as u64);
        (digester.finish(), content)
    }

    #[test]
    fn any_cutting_into_data_and_zeros_gives_the_digest_of_the_content() {
        let cases: &[&[(bool, usize)]] = &[
            &[],
            &[(false, CHUNK)],
            &[(false, 5 * CHUNK + 4096)],
            &[(true, 100)],
            &[(false, 4096), (true, 4096), (false, CHUNK)],
            // Data straddling chunk boundaries, zeros ending mid-chunk, a short last chunk.
            &[
                (true, CHUNK - 10),
                (true, 20),
                (false, CHUNK + 7),
                (true, 3),
                (false, 2 * CHUNK),
                (true, 1 << 20),
            ],
            // Zeros then data in one chunk: the pending zeros must be hashed.
            &[(false, CHUNK + 8192), (true, 4096), (false, 100)],
        ];
        for pieces in cases {
            let (digest, content) = feed(pieces);
            assert_eq!(digest, reference(&content), "pieces {pieces:?}");
        }
    }

    #[test]
    fn zeros_and_data_that_happens_to_be_zero_agree() {
        let mut as_holes = MemoryDigester::new();
        as_holes.zeros(3 * DIGEST_CHUNK_BYTES + 4096);
        let mut as_data = MemoryDigester::new();
        as_data.data(&vec![0u8; 3 * CHUNK + 4096]);
        assert_eq!(as_holes.finish(), as_data.finish());
    }

    #[test]
    fn a_changed_byte_or_length_changes_the_digest() {
        let content = pattern(3 * CHUNK, 3);
        let good = digest_of(&content);
        for at in [0, CHUNK - 1, CHUNK, 2 * CHUNK + 77, 3 * CHUNK - 1] {
            let mut damaged = content.clone();
            damaged[at] ^= 0x01;
            assert_ne!(digest_of(&damaged), good, "flip at {at}");
        }
        let mut zeros = MemoryDigester::new();
        zeros.zeros(DIGEST_CHUNK_BYTES);
        let mut longer = MemoryDigester::new();
        longer.zeros(DIGEST_CHUNK_BYTES + 4096);
        assert_ne!(zeros.finish(), longer.finish());
    }
}
