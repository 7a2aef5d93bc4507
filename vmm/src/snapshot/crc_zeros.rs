//! CRC-32 (IEEE) over runs of zero bytes without reading them.
//!
//! `memory.bin`'s checksum covers the whole logical file, holes as zeros. Hashing gigabytes of
//! zeros byte by byte costs as much CPU as hashing data; but feeding a zero byte to the CRC
//! register is a linear map over GF(2) (a 32×32 bit matrix), so `n` zero bytes are that matrix
//! to the power `n`, computed by repeated squaring in O(log n) (the method of zlib's
//! `crc32_combine`).

use std::sync::OnceLock;

/// The reflected CRC-32 (IEEE) polynomial.
const POLY: u32 = 0xedb8_8320;

/// A 32×32 matrix over GF(2): column `i` is the image of bit `i`.
type Matrix = [u32; 32];

fn times(matrix: &Matrix, mut vector: u32) -> u32 {
    let mut sum = 0;
    let mut i = 0;
    while vector != 0 {
        if vector & 1 != 0 {
            sum ^= matrix[i];
        }
        vector >>= 1;
        i += 1;
    }
    sum
}

fn square(matrix: &Matrix) -> Matrix {
    let mut out = [0u32; 32];
    for (i, column) in out.iter_mut().enumerate() {
        *column = times(matrix, matrix[i]);
    }
    out
}

/// The register's map for one zero bit.
fn one_zero_bit() -> Matrix {
    let mut m = [0u32; 32];
    m[0] = POLY;
    for (i, column) in m.iter_mut().enumerate().skip(1) {
        *column = 1 << (i - 1);
    }
    m
}

/// `POWERS[k]` maps the register over 2^k zero bytes.
fn powers() -> &'static [Matrix; 64] {
    static POWERS: OnceLock<[Matrix; 64]> = OnceLock::new();
    POWERS.get_or_init(|| {
        let mut power = one_zero_bit();
        for _ in 0..3 {
            power = square(&power);
        }
        let mut powers = [[0u32; 32]; 64];
        for slot in powers.iter_mut() {
            *slot = power;
            power = square(&power);
        }
        powers
    })
}

/// The CRC-32 of the data whose CRC-32 is `crc`, followed by `len` zero bytes. At most 64
/// matrix-vector products (the matrices are computed once per process).
pub fn extend_with_zeros(crc: u32, len: u64) -> u32 {
    if len == 0 {
        return crc;
    }
    // The register holds the complement of the CRC; zero bytes act on it linearly.
    let mut register = !crc;
    for (k, power) in powers().iter().enumerate() {
        if len >> k & 1 != 0 {
            register = times(power, register);
        }
    }
    !register
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slow(prefix: &[u8], zeros: usize) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(prefix);
        hasher.update(&vec![0u8; zeros]);
        hasher.finalize()
    }

    #[test]
    fn matches_hashing_the_zeros() {
        for prefix in [&b""[..], b"a", b"virmo snapshot memory"] {
            let crc = crc32fast::hash(prefix);
            for zeros in [
                0usize,
                1,
                2,
                3,
                7,
                8,
                255,
                4096,
                65_537,
                2 << 20,
                (2 << 20) + 3,
            ] {
                assert_eq!(
                    extend_with_zeros(crc, zeros as u64),
                    slow(prefix, zeros),
                    "prefix {prefix:?}, {zeros} zeros"
                );
            }
        }
    }

    #[test]
    fn continues_with_data_after_the_zeros() {
        let mut expected = crc32fast::Hasher::new();
        expected.update(b"head");
        expected.update(&[0u8; 12_288]);
        expected.update(b"tail");
        let crc = extend_with_zeros(crc32fast::hash(b"head"), 12_288);
        let mut resumed = crc32fast::Hasher::new_with_initial(crc);
        resumed.update(b"tail");
        assert_eq!(resumed.finalize(), expected.finalize());
    }
}
