//! The `state.bin` file: a fixed header followed by the postcard encoding of [`MachineState`].
//!
//! Header (32 bytes, little-endian):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `b"VIRMOSNP"` |
//! | 8 | 2 | format version ([`FORMAT_VERSION`]) |
//! | 10 | 2 | flags (none defined; a reader refuses unknown bits) |
//! | 12 | 4 | reserved, zero |
//! | 16 | 8 | body length in bytes |
//! | 24 | 4 | CRC-32 (IEEE) of the body |
//! | 28 | 4 | CRC-32 of header bytes 0..28 |
//!
//! Versioning: the format version is independent of the crate version and covers the whole
//! snapshot folder (the manifest's first line carries it too). Any change to the header, to the
//! files' checksums, or to the encoding of [`MachineState`] (postcard is not self-describing:
//! adding, removing or reordering a field changes it, and so does a `kvm-bindings` struct
//! layout change) bumps [`FORMAT_VERSION`]. A reader accepts only the versions it lists in [`SUPPORTED_VERSIONS`];
//! magic and version keep their offsets in every version so that any reader can say "version N
//! unsupported" rather than "corrupted".

use serde::{Deserialize, Serialize};

pub use super::layout::{MemoryLayout, MemoryRegionLayout, TargetLayout, PAGE_SIZE};
use super::vcpu_state::VcpuState;
use super::vm_state::VmState;

/// First 8 bytes of every `state.bin`.
pub const MAGIC: [u8; 8] = *b"VIRMOSNP";
/// Format version this code writes, in `state.bin`'s header and on the manifest's first line.
///
/// History: 1, `memory.bin` checked by a CRC-32; 2, by the chunked xxh64 digest
/// (`memory_digest`); 3, an optional `hotset.bin` (`hot_set`). The state encoding is the same in
/// all three.
pub const FORMAT_VERSION: u16 = 3;
/// Format versions this code reads.
pub const SUPPORTED_VERSIONS: &[u16] = &[2, FORMAT_VERSION];
/// Header length in bytes.
pub const HEADER_LEN: usize = 32;
/// Largest body accepted: a VM state is a few hundred KiB even with many vCPUs and devices, so
/// anything bigger is damage, not a VM.
pub const MAX_BODY_LEN: u64 = 64 << 20;

/// Errors reading, writing or checking a snapshot's state and layout.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file does not start with [`MAGIC`].
    #[error("not a virmo snapshot: magic is {found:02x?}, expected \"VIRMOSNP\"")]
    BadMagic {
        /// The first bytes found.
        found: [u8; 8],
    },
    /// The file was written in a format version this build cannot read.
    #[error("snapshot format version {found} is not supported (this build reads {supported:?})")]
    UnsupportedVersion {
        /// Version in the file.
        found: u16,
        /// Versions this build reads.
        supported: &'static [u16],
    },
    /// The header has flag bits this build does not know.
    #[error("snapshot header has unknown flags {flags:#06x}")]
    UnknownFlags {
        /// The flags found.
        flags: u16,
    },
    /// The header's own checksum does not match.
    #[error("snapshot header is corrupted (header checksum mismatch)")]
    HeaderCorrupted,
    /// A file is shorter than its header or manifest says.
    #[error("{file} is truncated: {actual} bytes, expected {expected}")]
    Truncated {
        /// Which file.
        file: &'static str,
        /// Bytes expected.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// A file is longer than its header or manifest says.
    #[error("{file} has {actual} bytes, expected {expected}: trailing data")]
    TrailingData {
        /// Which file.
        file: &'static str,
        /// Bytes expected.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The body is bigger than [`MAX_BODY_LEN`].
    #[error("state body of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Body length claimed or found.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A file's content does not match its checksum.
    #[error("{file} is corrupted: CRC-32 {actual:#010x}, expected {expected:#010x}")]
    ChecksumMismatch {
        /// Which file.
        file: &'static str,
        /// Checksum recorded.
        expected: u32,
        /// Checksum computed.
        actual: u32,
    },
    /// The body passed its checksum but does not decode as this version's `MachineState`.
    #[error("state body does not decode")]
    Decode(#[source] postcard::Error),
    /// The state could not be encoded.
    #[error("state does not encode")]
    Encode(#[source] postcard::Error),
    /// The state decodes but contradicts itself.
    #[error("state is inconsistent: {0}")]
    Inconsistent(String),
    /// The manifest is malformed.
    #[error("manifest line {line}: {reason}")]
    Manifest {
        /// 1-based line number (0 for the file as a whole).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The snapshot does not fit the VM it is being restored into.
    #[error("snapshot has {what} {snapshot}, the target VM has {target}")]
    LayoutMismatch {
        /// `"vCPU count"` or `"memory bytes"`.
        what: &'static str,
        /// Value in the snapshot.
        snapshot: u64,
        /// Value of the target VM.
        target: u64,
    },
}

/// What the VMM needs to rebuild the VM before restoring state into it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfig {
    /// Number of vCPUs.
    pub vcpu_count: u32,
    /// Guest RAM as configured, in MiB.
    pub memory_mib: u64,
    /// Kernel command line the guest booted with.
    pub kernel_cmdline: String,
    /// The VMM core's full VM configuration in its own encoding (opaque here).
    pub vm_config: Vec<u8>,
}

/// Everything in `state.bin`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MachineState {
    /// The VM's identifier.
    pub vm_id: String,
    /// Configuration to rebuild the VM.
    pub config: MachineConfig,
    /// Guest memory regions and their place in `memory.bin`.
    pub memory: MemoryLayout,
    /// One state per vCPU, in vCPU index order.
    pub vcpus: Vec<VcpuState>,
    /// VM-wide state and device states.
    pub vm: VmState,
}

impl MachineState {
    /// Checks the state against itself: one vCPU state per configured vCPU, a valid layout.
    pub fn validate(&self) -> Result<(), FormatError> {
        if self.vcpus.len() as u64 != u64::from(self.config.vcpu_count) {
            return Err(FormatError::Inconsistent(format!(
                "{} vCPU states for {} configured vCPUs",
                self.vcpus.len(),
                self.config.vcpu_count
            )));
        }
        self.memory.validate()
    }

    /// Refuses a target VM with a different vCPU count or memory size.
    pub fn check_fits(&self, target: &TargetLayout) -> Result<(), FormatError> {
        if self.config.vcpu_count != target.vcpu_count {
            return Err(FormatError::LayoutMismatch {
                what: "vCPU count",
                snapshot: self.config.vcpu_count.into(),
                target: target.vcpu_count.into(),
            });
        }
        if self.memory.total_bytes() != target.memory_bytes {
            return Err(FormatError::LayoutMismatch {
                what: "memory bytes",
                snapshot: self.memory.total_bytes(),
                target: target.memory_bytes,
            });
        }
        Ok(())
    }
}

pub(crate) fn header_bytes(version: u16, flags: u16, body: &[u8]) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..10].copy_from_slice(&version.to_le_bytes());
    header[10..12].copy_from_slice(&flags.to_le_bytes());
    header[16..24].copy_from_slice(&(body.len() as u64).to_le_bytes());
    header[24..28].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    let header_crc = crc32fast::hash(&header[0..28]);
    header[28..32].copy_from_slice(&header_crc.to_le_bytes());
    header
}

/// Encodes `state` as the complete content of `state.bin`.
pub fn encode_state(state: &MachineState) -> Result<Vec<u8>, FormatError> {
    let body = postcard::to_stdvec(state).map_err(FormatError::Encode)?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
    bytes.extend_from_slice(&header_bytes(FORMAT_VERSION, 0, &body));
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

fn le_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Decodes and validates the complete content of `state.bin`.
pub fn decode_state(bytes: &[u8]) -> Result<MachineState, FormatError> {
    const FILE: &str = "state.bin";
    if bytes.len() < HEADER_LEN {
        if bytes.len() >= 8 && bytes[0..8] != MAGIC {
            let mut found = [0u8; 8];
            found.copy_from_slice(&bytes[0..8]);
            return Err(FormatError::BadMagic { found });
        }
        return Err(FormatError::Truncated {
            file: FILE,
            expected: HEADER_LEN as u64,
            actual: bytes.len() as u64,
        });
    }
    let (header, body) = bytes.split_at(HEADER_LEN);
    if header[0..8] != MAGIC {
        let mut found = [0u8; 8];
        found.copy_from_slice(&header[0..8]);
        return Err(FormatError::BadMagic { found });
    }
    // The version is checked before the header checksum: another version may lay out the rest
    // of its header differently, and must be reported as unsupported, not as damaged.
    let version = le_u16(header, 8);
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(FormatError::UnsupportedVersion {
            found: version,
            supported: SUPPORTED_VERSIONS,
        });
    }
    if crc32fast::hash(&header[0..28]) != le_u32(header, 28) {
        return Err(FormatError::HeaderCorrupted);
    }
    let flags = le_u16(header, 10);
    if flags != 0 || le_u32(header, 12) != 0 {
        return Err(FormatError::UnknownFlags { flags });
    }
    let body_len = le_u64(header, 16);
    if body_len > MAX_BODY_LEN {
        return Err(FormatError::TooLarge {
            len: body_len,
            max: MAX_BODY_LEN,
        });
    }
    let actual = body.len() as u64;
    if actual < body_len {
        return Err(FormatError::Truncated {
            file: FILE,
            expected: body_len + HEADER_LEN as u64,
            actual: actual + HEADER_LEN as u64,
        });
    }
    if actual > body_len {
        return Err(FormatError::TrailingData {
            file: FILE,
            expected: body_len + HEADER_LEN as u64,
            actual: actual + HEADER_LEN as u64,
        });
    }
    let expected_crc = le_u32(header, 24);
    let actual_crc = crc32fast::hash(body);
    if expected_crc != actual_crc {
        return Err(FormatError::ChecksumMismatch {
            file: FILE,
            expected: expected_crc,
            actual: actual_crc,
        });
    }
    let (state, rest): (MachineState, _) =
        postcard::take_from_bytes(body).map_err(FormatError::Decode)?;
    if !rest.is_empty() {
        return Err(FormatError::Inconsistent(format!(
            "{} bytes after the encoded state",
            rest.len()
        )));
    }
    state.validate()?;
    Ok(state)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::snapshot::test_support::sample_machine_state;

    #[test]
    fn state_round_trips() {
        let state = sample_machine_state(2, &[(0, 0x10000), (0x100000, 0x4000)]);
        let bytes = encode_state(&state).expect("encode");
        assert_eq!(&bytes[0..8], b"VIRMOSNP");
        let back = decode_state(&bytes).expect("decode");
        assert_eq!(back.vm_id, state.vm_id);
        assert_eq!(back.config, state.config);
        assert_eq!(back.memory, state.memory);
        assert_eq!(back.vcpus.len(), 2);
        assert_eq!(back.vcpus[1].regs.rip, state.vcpus[1].regs.rip);
        assert_eq!(back.vcpus[1].msrs, state.vcpus[1].msrs);
        assert_eq!(back.vcpus[1].xsave, state.vcpus[1].xsave);
        assert_eq!(back.vm.devices, state.vm.devices);
        assert_eq!(back.vm.clock.clock, state.vm.clock.clock);
        assert_eq!(encode_state(&back).expect("re-encode"), bytes);
    }

    fn encoded() -> Vec<u8> {
        encode_state(&sample_machine_state(1, &[(0, 0x4000)])).expect("encode")
    }

    #[test]
    fn wrong_magic_is_refused() {
        let mut bytes = encoded();
        bytes[0] = b'X';
        assert!(matches!(
            decode_state(&bytes),
            Err(FormatError::BadMagic { .. })
        ));
        assert!(matches!(
            decode_state(b"ELF\x7fnot-a-snapshot"),
            Err(FormatError::BadMagic { .. })
        ));
    }

    #[test]
    fn other_version_is_refused_as_unsupported() {
        let state = sample_machine_state(1, &[(0, 0x4000)]);
        let body = postcard::to_stdvec(&state).expect("encode");
        let mut bytes = header_bytes(FORMAT_VERSION + 1, 0, &body).to_vec();
        bytes.extend_from_slice(&body);
        match decode_state(&bytes) {
            Err(FormatError::UnsupportedVersion { found, .. }) => {
                assert_eq!(found, FORMAT_VERSION + 1)
            }
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
    }

    #[test]
    fn unknown_flags_are_refused() {
        let body = postcard::to_stdvec(&sample_machine_state(1, &[(0, 0x4000)])).expect("enc");
        let mut bytes = header_bytes(FORMAT_VERSION, 0x8000, &body).to_vec();
        bytes.extend_from_slice(&body);
        assert!(matches!(
            decode_state(&bytes),
            Err(FormatError::UnknownFlags { flags: 0x8000 })
        ));
    }

    #[test]
    fn header_damage_is_detected() {
        let mut bytes = encoded();
        bytes[17] ^= 0x01; // body length
        assert!(matches!(
            decode_state(&bytes),
            Err(FormatError::HeaderCorrupted)
        ));
    }

    #[test]
    fn truncation_is_detected() {
        let bytes = encoded();
        assert!(matches!(
            decode_state(&bytes[..bytes.len() - 1]),
            Err(FormatError::Truncated { .. })
        ));
        assert!(matches!(
            decode_state(&bytes[..20]),
            Err(FormatError::Truncated { .. })
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode_state(&longer),
            Err(FormatError::TrailingData { .. })
        ));
    }

    #[test]
    fn every_flipped_body_byte_is_detected() {
        let bytes = encoded();
        for at in (HEADER_LEN..bytes.len()).step_by(97) {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x20;
            assert!(
                matches!(
                    decode_state(&damaged),
                    Err(FormatError::ChecksumMismatch {
                        file: "state.bin",
                        ..
                    })
                ),
                "flip at {at} not detected"
            );
        }
    }

    /// Deterministic xorshift, so failures reproduce.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Re-seals `body` under a valid header, so decoding gets past the checksums.
    fn sealed(body: &[u8]) -> Vec<u8> {
        let mut bytes = header_bytes(FORMAT_VERSION, 0, body).to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn mutated_bodies_with_valid_checksums_never_panic() {
        let body = postcard::to_stdvec(&sample_machine_state(2, &[(0, 0x4000)])).expect("enc");
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut refused = 0;
        for round in 0..3000 {
            let mut mutated = body.clone();
            let flips = 1 + (xorshift(&mut seed) % 4) as usize;
            for _ in 0..flips {
                let at = (xorshift(&mut seed) % mutated.len() as u64) as usize;
                mutated[at] = xorshift(&mut seed) as u8;
            }
            if round % 3 == 0 {
                let keep = (xorshift(&mut seed) % mutated.len() as u64) as usize;
                mutated.truncate(keep);
            }
            if decode_state(&sealed(&mutated)).is_err() {
                refused += 1;
            }
        }
        // Most mutations hit a length, a tag or the layout; value-only changes may decode.
        assert!(refused > 1000, "only {refused} of 3000 mutations refused");
    }

    #[test]
    fn random_bytes_are_refused() {
        let mut seed = 42u64;
        for len in [0usize, 1, 8, 31, 32, 33, 100, 5000] {
            let bytes: Vec<u8> = (0..len).map(|_| xorshift(&mut seed) as u8).collect();
            assert!(decode_state(&bytes).is_err());
            let mut with_magic = bytes.clone();
            if with_magic.len() >= 8 {
                with_magic[..8].copy_from_slice(&MAGIC);
                assert!(decode_state(&with_magic).is_err());
            }
        }
    }

    #[test]
    fn oversized_body_claim_is_refused_before_reading() {
        let body = [0u8; 4];
        let mut header = header_bytes(FORMAT_VERSION, 0, &body);
        header[16..24].copy_from_slice(&(MAX_BODY_LEN + 1).to_le_bytes());
        let crc = crc32fast::hash(&header[0..28]);
        header[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode_state(&header),
            Err(FormatError::TooLarge { .. })
        ));
    }

    #[test]
    fn inconsistent_vcpu_count_is_refused() {
        let mut state = sample_machine_state(2, &[(0, 0x4000)]);
        state.config.vcpu_count = 3;
        let bytes = encode_state(&state).expect("encode");
        assert!(matches!(
            decode_state(&bytes),
            Err(FormatError::Inconsistent(_))
        ));
    }

    #[test]
    fn layout_mismatch_is_refused() {
        let state = sample_machine_state(2, &[(0, 0x4000)]);
        let fits = TargetLayout {
            vcpu_count: 2,
            memory_bytes: 0x4000,
        };
        state.check_fits(&fits).expect("same layout fits");
        let more_vcpus = TargetLayout {
            vcpu_count: 4,
            ..fits
        };
        assert!(matches!(
            state.check_fits(&more_vcpus),
            Err(FormatError::LayoutMismatch {
                what: "vCPU count",
                snapshot: 2,
                target: 4
            })
        ));
        let less_memory = TargetLayout {
            memory_bytes: 0x2000,
            ..fits
        };
        assert!(matches!(
            state.check_fits(&less_memory),
            Err(FormatError::LayoutMismatch {
                what: "memory bytes",
                ..
            })
        ));
    }
}
