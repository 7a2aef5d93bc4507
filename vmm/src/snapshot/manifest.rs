//! The `manifest` file: lengths and checksums of `state.bin` and `memory.bin`, written last into
//! the temporary folder, so a folder with a valid manifest had both files complete.
//!
//! ```text
//! virmo-snapshot-manifest 3
//! state.bin 18342 crc32=1a2b3c4d
//! memory.bin 268435456 xxh64-2m=0123456789abcdef
//! hotset.bin 56 crc32=5e6f7a8b
//! check crc32=0badf00d
//! ```
//! The number on the first line is the snapshot format version ([`FORMAT_VERSION`]); a manifest
//! of another version is refused as [`FormatError::UnsupportedVersion`] before anything else in
//! it is read. `state.bin` keeps a CRC-32 (a few hundred KiB at most); `memory.bin` has the
//! chunked xxh64 digest of [`memory_digest`](super::memory_digest). Since version 3 a
//! `hotset.bin` line may follow ([`hot_set`](super::hot_set); version 2 has none). The last line
//! is the CRC-32 of all the lines before it (newlines included).

use super::format::{FormatError, FORMAT_VERSION, SUPPORTED_VERSIONS};
use super::hot_set::HOT_SET_FILE;

/// Manifest file name.
pub const MANIFEST_FILE: &str = "manifest";
/// State file name.
pub const STATE_FILE: &str = "state.bin";
/// Memory file name.
pub const MEMORY_FILE: &str = "memory.bin";
/// The first line, up to the version number.
const FIRST_LINE_PREFIX: &str = "virmo-snapshot-manifest ";
/// The memory checksum's name and separator.
const MEMORY_DIGEST_PREFIX: &str = "xxh64-2m=";

/// Length and CRC-32 of `state.bin` (or `hotset.bin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Length in bytes.
    pub len: u64,
    /// CRC-32 (IEEE) of the content.
    pub crc32: u32,
}

/// Length and digest of `memory.bin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEntry {
    /// Length in bytes (holes included).
    pub len: u64,
    /// The `xxh64-2m` digest of the logical content, holes read as zeros.
    pub digest: u64,
}

/// The manifest of a snapshot folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// `state.bin`.
    pub state: FileEntry,
    /// `memory.bin`.
    pub memory: MemoryEntry,
    /// `hotset.bin`, when the snapshot has one.
    pub hot_set: Option<FileEntry>,
}

fn bad(line: usize, reason: impl Into<String>) -> FormatError {
    FormatError::Manifest {
        line,
        reason: reason.into(),
    }
}

/// Splits `<name> <len> <checksum word>` and returns the length and the checksum word.
fn parse_entry<'a>(
    line_no: usize,
    line: Option<&'a str>,
    name: &str,
) -> Result<(u64, &'a str), FormatError> {
    let line = line.ok_or_else(|| bad(line_no, format!("missing the {name} line")))?;
    let mut words = line.split(' ');
    if words.next() != Some(name) {
        return Err(bad(line_no, format!("expected the {name} line")));
    }
    let len = words
        .next()
        .and_then(|w| w.parse::<u64>().ok())
        .ok_or_else(|| bad(line_no, "length is not a number"))?;
    let checksum = words
        .next()
        .ok_or_else(|| bad(line_no, "missing the checksum"))?;
    if words.next().is_some() {
        return Err(bad(line_no, "unexpected words after the checksum"));
    }
    Ok((len, checksum))
}

/// Parses a hexadecimal number written with exactly `digits` digits.
fn parse_hex(word: &str, digits: usize) -> Option<u64> {
    let valid = word.len() == digits && word.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| u64::from_str_radix(word, 16).ok()).flatten()
}

/// A `<name> <len> crc32=<8 hex digits>` line.
fn parse_crc_entry(
    line_no: usize,
    line: Option<&str>,
    name: &str,
) -> Result<FileEntry, FormatError> {
    let (len, checksum) = parse_entry(line_no, line, name)?;
    let crc32 = checksum
        .strip_prefix("crc32=")
        .and_then(|h| parse_hex(h, 8))
        .ok_or_else(|| bad(line_no, "checksum is not crc32=<8 hex digits>"))?;
    Ok(FileEntry {
        len,
        crc32: crc32 as u32,
    })
}

fn parse_memory(line: Option<&str>) -> Result<MemoryEntry, FormatError> {
    let (len, checksum) = parse_entry(3, line, MEMORY_FILE)?;
    let digest = checksum
        .strip_prefix(MEMORY_DIGEST_PREFIX)
        .and_then(|h| parse_hex(h, 16))
        .ok_or_else(|| bad(3, "checksum is not xxh64-2m=<16 hex digits>"))?;
    Ok(MemoryEntry { len, digest })
}

/// Checks the first line's version and returns it; another version is refused as unsupported,
/// whatever the rest of its manifest looks like.
fn check_version(first_line: Option<&str>) -> Result<u16, FormatError> {
    let version = first_line
        .and_then(|l| l.strip_prefix(FIRST_LINE_PREFIX))
        .ok_or_else(|| bad(1, format!("expected \"{FIRST_LINE_PREFIX}<version>\"")))?;
    let version: u16 = version
        .parse()
        .map_err(|_| bad(1, "the version is not a number"))?;
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(FormatError::UnsupportedVersion {
            found: version,
            supported: SUPPORTED_VERSIONS,
        });
    }
    Ok(version)
}

impl Manifest {
    /// The file content.
    pub fn encode(&self) -> String {
        let mut body = format!(
            "{FIRST_LINE_PREFIX}{FORMAT_VERSION}\n{STATE_FILE} {} crc32={:08x}\n{MEMORY_FILE} {} {MEMORY_DIGEST_PREFIX}{:016x}\n",
            self.state.len, self.state.crc32, self.memory.len, self.memory.digest
        );
        if let Some(hot) = &self.hot_set {
            body.push_str(&format!(
                "{HOT_SET_FILE} {} crc32={:08x}\n",
                hot.len, hot.crc32
            ));
        }
        let check = crc32fast::hash(body.as_bytes());
        format!("{body}check crc32={check:08x}\n")
    }

    /// Parses and checks a manifest.
    pub fn decode(text: &str) -> Result<Self, FormatError> {
        let version = check_version(text.lines().next())?;
        let Some(check_at) = text.trim_end_matches('\n').rfind('\n').map(|i| i + 1) else {
            return Err(bad(0, "too short"));
        };
        let (body, check_line) = text.split_at(check_at);
        let recorded = check_line
            .strip_suffix('\n')
            .and_then(|l| l.strip_prefix("check crc32="))
            .and_then(|h| parse_hex(h, 8))
            .ok_or_else(|| bad(4, "missing or malformed check line"))?;
        if u64::from(crc32fast::hash(body.as_bytes())) != recorded {
            return Err(bad(0, "content does not match its check line"));
        }
        let mut lines = body.lines().skip(1);
        let state = parse_crc_entry(2, lines.next(), STATE_FILE)?;
        let memory = parse_memory(lines.next())?;
        let hot_set = match lines.next() {
            Some(line) if version >= 3 => Some(parse_crc_entry(4, Some(line), HOT_SET_FILE)?),
            Some(_) => return Err(bad(4, "unexpected line before the check line")),
            None => None,
        };
        if lines.next().is_some() {
            return Err(bad(5, "unexpected line before the check line"));
        }
        Ok(Self {
            state,
            memory,
            hot_set,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            state: FileEntry {
                len: 18342,
                crc32: 0x1a2b_3c4d,
            },
            memory: MemoryEntry {
                len: 256 << 20,
                digest: 0x0123_4567_89ab_cdef,
            },
            hot_set: Some(FileEntry {
                len: 56,
                crc32: 0x5e6f_7a8b,
            }),
        }
    }

    #[test]
    fn version_2_manifest_without_hot_set_is_read() {
        let body = "virmo-snapshot-manifest 2\nstate.bin 18342 crc32=1a2b3c4d\n\
                    memory.bin 268435456 xxh64-2m=0123456789abcdef\n";
        let text = format!(
            "{body}check crc32={:08x}\n",
            crc32fast::hash(body.as_bytes())
        );
        let manifest = Manifest::decode(&text).expect("decode");
        assert_eq!(manifest.hot_set, None);
        assert_eq!(manifest.memory, sample().memory);
        // A hot set line is not version 2.
        let body = format!("{body}hotset.bin 56 crc32=5e6f7a8b\n");
        let text = format!(
            "{body}check crc32={:08x}\n",
            crc32fast::hash(body.as_bytes())
        );
        assert!(Manifest::decode(&text).is_err());
    }

    #[test]
    fn manifest_round_trips() {
        let text = sample().encode();
        assert!(text.starts_with(
            "virmo-snapshot-manifest 3\nstate.bin 18342 crc32=1a2b3c4d\n\
             memory.bin 268435456 xxh64-2m=0123456789abcdef\nhotset.bin 56 crc32=5e6f7a8b\ncheck crc32="
        ));
        assert_eq!(Manifest::decode(&text).expect("decode"), sample());
    }

    #[test]
    fn damaged_or_truncated_manifest_is_refused() {
        let text = sample().encode();
        let changed = text.replace("18342", "18343");
        assert!(Manifest::decode(&changed).is_err());
        for cut in [0, 10, text.len() / 2, text.len() - 1] {
            assert!(
                Manifest::decode(&text[..cut]).is_err(),
                "cut at {cut} accepted"
            );
        }
        assert!(Manifest::decode("").is_err());
    }

    /// A manifest as version 1 wrote it (CRC-32 for memory.bin), with a valid check line.
    fn version_1_text() -> String {
        let body = "virmo-snapshot-manifest 1\nstate.bin 18342 crc32=1a2b3c4d\n\
                    memory.bin 268435456 crc32=5e6f7a8b\n";
        format!(
            "{body}check crc32={:08x}\n",
            crc32fast::hash(body.as_bytes())
        )
    }

    #[test]
    fn other_versions_are_refused_as_unsupported() {
        for (text, version) in [
            (version_1_text(), 1),
            (sample().encode().replacen(" 3\n", " 99\n", 1), 99),
            ("virmo-snapshot-manifest 4\n".to_string(), 4),
        ] {
            match Manifest::decode(&text) {
                Err(FormatError::UnsupportedVersion { found, .. }) => assert_eq!(found, version),
                other => panic!("version {version}: expected UnsupportedVersion, got {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_memory_digest_is_refused() {
        let text = sample().encode();
        for damaged in [
            text.replace("xxh64-2m=0123456789abcdef", "xxh64-2m=0123456789abcde"),
            text.replace("xxh64-2m=0123456789abcdef", "crc32=89abcdef"),
            text.replace("xxh64-2m=0123456789abcdef", "xxh64-2m=+123456789abcdef"),
        ] {
            // Resealed, so that the entry itself (not the check line) is what is refused.
            let body = &damaged[..damaged.rfind("check ").expect("check line")];
            let resealed = format!(
                "{body}check crc32={:08x}\n",
                crc32fast::hash(body.as_bytes())
            );
            assert!(
                matches!(
                    Manifest::decode(&resealed),
                    Err(FormatError::Manifest { line: 3, .. })
                ),
                "{resealed:?} accepted"
            );
        }
    }
}
