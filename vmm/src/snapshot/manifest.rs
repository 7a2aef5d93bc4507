//! The `manifest` file: lengths and CRC-32s of `state.bin` and `memory.bin`, written last into
//! the temporary folder, so a folder with a valid manifest had both files complete.
//!
//! ```text
//! virmo-snapshot-manifest 1
//! state.bin 18342 crc32=1a2b3c4d
//! memory.bin 268435456 crc32=5e6f7a8b
//! check crc32=0badf00d
//! ```
//! The last line is the CRC-32 of all the lines before it (newlines included).

use super::format::FormatError;

/// Manifest file name.
pub const MANIFEST_FILE: &str = "manifest";
/// State file name.
pub const STATE_FILE: &str = "state.bin";
/// Memory file name.
pub const MEMORY_FILE: &str = "memory.bin";
const FIRST_LINE: &str = "virmo-snapshot-manifest 1";

/// Length and checksum of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Length in bytes.
    pub len: u64,
    /// CRC-32 (IEEE) of the content.
    pub crc32: u32,
}

/// The manifest of a snapshot folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// `state.bin`.
    pub state: FileEntry,
    /// `memory.bin` (holes count as zeros).
    pub memory: FileEntry,
}

fn bad(line: usize, reason: impl Into<String>) -> FormatError {
    FormatError::Manifest {
        line,
        reason: reason.into(),
    }
}

fn parse_entry(line_no: usize, line: Option<&str>, name: &str) -> Result<FileEntry, FormatError> {
    let line = line.ok_or_else(|| bad(line_no, format!("missing the {name} line")))?;
    let mut words = line.split(' ');
    if words.next() != Some(name) {
        return Err(bad(line_no, format!("expected the {name} line")));
    }
    let len = words
        .next()
        .and_then(|w| w.parse::<u64>().ok())
        .ok_or_else(|| bad(line_no, "length is not a number"))?;
    let crc32 = words
        .next()
        .and_then(|w| w.strip_prefix("crc32="))
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or_else(|| bad(line_no, "checksum is not crc32=<hex>"))?;
    if words.next().is_some() {
        return Err(bad(line_no, "unexpected words after the checksum"));
    }
    Ok(FileEntry { len, crc32 })
}

impl Manifest {
    /// The file content.
    pub fn encode(&self) -> String {
        let body = format!(
            "{FIRST_LINE}\n{STATE_FILE} {} crc32={:08x}\n{MEMORY_FILE} {} crc32={:08x}\n",
            self.state.len, self.state.crc32, self.memory.len, self.memory.crc32
        );
        let check = crc32fast::hash(body.as_bytes());
        format!("{body}check crc32={check:08x}\n")
    }

    /// Parses and checks a manifest.
    pub fn decode(text: &str) -> Result<Self, FormatError> {
        let Some(check_at) = text.trim_end_matches('\n').rfind('\n').map(|i| i + 1) else {
            return Err(bad(0, "too short"));
        };
        let (body, check_line) = text.split_at(check_at);
        let recorded = check_line
            .strip_suffix('\n')
            .and_then(|l| l.strip_prefix("check crc32="))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| bad(4, "missing or malformed check line"))?;
        if crc32fast::hash(body.as_bytes()) != recorded {
            return Err(bad(0, "content does not match its check line"));
        }
        let mut lines = body.lines();
        if lines.next() != Some(FIRST_LINE) {
            return Err(bad(1, format!("expected \"{FIRST_LINE}\"")));
        }
        let state = parse_entry(2, lines.next(), STATE_FILE)?;
        let memory = parse_entry(3, lines.next(), MEMORY_FILE)?;
        if lines.next().is_some() {
            return Err(bad(4, "unexpected line before the check line"));
        }
        Ok(Self { state, memory })
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
            memory: FileEntry {
                len: 256 << 20,
                crc32: 0x0000_00ff,
            },
        }
    }

    #[test]
    fn manifest_round_trips() {
        let text = sample().encode();
        assert!(text.starts_with("virmo-snapshot-manifest 1\nstate.bin 18342 crc32=1a2b3c4d\n"));
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
}
