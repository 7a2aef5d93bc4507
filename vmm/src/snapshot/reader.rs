//! Reading a snapshot folder ([`Snapshot::open`]): manifest, file lengths, state and hot set
//! checked before anything is used; then guest memory built from it.

use std::fs;
use std::path::{Path, PathBuf};

use vm_memory::GuestMemoryMmap;

use super::format::{decode_state, FormatError, MachineState, TargetLayout};
use super::hot_set::{map_memory_hot, HotSet, HOT_SET_FILE};
use super::manifest::{FileEntry, Manifest, MANIFEST_FILE, MEMORY_FILE, STATE_FILE};
use super::memory_file::{
    checksum_memory_file, load_memory_eager, map_memory_lazy, MemoryFileError, MemoryRestore,
};
use super::store::{io_err, Paths, Result, StoreError};

/// A snapshot folder whose manifest and state were read and checked.
#[derive(Debug)]
pub struct Snapshot {
    /// The folder.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// The decoded machine state.
    pub state: MachineState,
    /// The pages touched after the resume before the suspend that wrote it (empty for a
    /// version 2 snapshot, or one of a VM that was booted or eagerly restored).
    pub hot_set: HotSet,
}

fn check_file_len(dir: &Path, file: &'static str, expected: u64) -> Result<()> {
    let path = dir.join(file);
    let actual = match fs::metadata(&path) {
        Ok(meta) => meta.len(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::MissingFile {
                dir: dir.to_path_buf(),
                file,
            })
        }
        Err(err) => return Err(io_err("stat", &path)(err)),
    };
    if actual < expected {
        return Err(FormatError::Truncated {
            file,
            expected,
            actual,
        }
        .into());
    }
    if actual > expected {
        return Err(FormatError::TrailingData {
            file,
            expected,
            actual,
        }
        .into());
    }
    Ok(())
}

impl Snapshot {
    /// Opens the snapshot folder `dir`: recovers from an interrupted writer (see the module
    /// documentation), then checks the manifest, both file lengths, and the state's header,
    /// checksum and consistency. Memory content is checked by [`Snapshot::load_memory`] or
    /// [`Snapshot::verify_memory`].
    pub fn open(dir: &Path) -> Result<Self> {
        let paths = Paths::new(dir)?;
        if paths.parent.is_dir() {
            // Best effort: a read-only parent must not stop reading a good snapshot.
            if let Err(err) = paths.recover() {
                tracing::warn!(error = %err, dir = %dir.display(), "cannot clean snapshot leftovers");
            }
        }
        if !dir.is_dir() {
            return Err(StoreError::NotFound(dir.to_path_buf()));
        }
        let manifest_path = dir.join(MANIFEST_FILE);
        let text = match fs::read(&manifest_path) {
            Ok(bytes) if bytes.len() <= 4096 => {
                String::from_utf8(bytes).map_err(|_| FormatError::Manifest {
                    line: 0,
                    reason: "not UTF-8".to_string(),
                })?
            }
            Ok(_) => {
                return Err(FormatError::Manifest {
                    line: 0,
                    reason: "larger than 4 KiB".to_string(),
                }
                .into())
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::MissingFile {
                    dir: dir.to_path_buf(),
                    file: MANIFEST_FILE,
                })
            }
            Err(err) => return Err(io_err("read", &manifest_path)(err)),
        };
        let manifest = Manifest::decode(&text)?;
        check_file_len(dir, STATE_FILE, manifest.state.len)?;
        check_file_len(dir, MEMORY_FILE, manifest.memory.len)?;
        if manifest.state.len > super::format::MAX_BODY_LEN + super::format::HEADER_LEN as u64 {
            return Err(FormatError::TooLarge {
                len: manifest.state.len,
                max: super::format::MAX_BODY_LEN,
            }
            .into());
        }
        let state_path = dir.join(STATE_FILE);
        let bytes = fs::read(&state_path).map_err(io_err("read", &state_path))?;
        let actual = crc32fast::hash(&bytes);
        if actual != manifest.state.crc32 {
            return Err(FormatError::ChecksumMismatch {
                file: STATE_FILE,
                expected: manifest.state.crc32,
                actual,
            }
            .into());
        }
        let state = decode_state(&bytes)?;
        if state.memory.total_bytes() != manifest.memory.len {
            return Err(FormatError::Inconsistent(format!(
                "memory layout covers {} bytes, memory.bin has {}",
                state.memory.total_bytes(),
                manifest.memory.len
            ))
            .into());
        }
        let hot_set = match manifest.hot_set {
            Some(entry) => read_hot_set(dir, entry, manifest.memory.len)?,
            None => HotSet::default(),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            state,
            hot_set,
        })
    }

    /// Path of `memory.bin`.
    pub fn memory_path(&self) -> PathBuf {
        self.dir.join(MEMORY_FILE)
    }

    /// Refuses a target VM whose vCPU count or memory size differs from the snapshot's.
    pub fn check_fits(&self, target: &TargetLayout) -> Result<()> {
        Ok(self.state.check_fits(target)?)
    }

    /// Reads the data of `memory.bin` (not its holes) and compares its digest with the manifest.
    pub fn verify_memory(&self) -> Result<()> {
        let actual = checksum_memory_file(&self.memory_path())?;
        if actual != self.manifest.memory.digest {
            return Err(MemoryFileError::ChecksumMismatch {
                expected: self.manifest.memory.digest,
                actual,
            }
            .into());
        }
        Ok(())
    }

    /// Builds guest memory from `memory.bin`. `Eager` checks the memory checksum while reading;
    /// `Lazy` does not read the file, `Hot` reads only the hot set (call
    /// [`Snapshot::verify_memory`] first for a check).
    pub fn load_memory(&self, mode: MemoryRestore) -> Result<GuestMemoryMmap<()>> {
        let path = self.memory_path();
        Ok(match mode {
            MemoryRestore::Lazy => map_memory_lazy(&path, &self.state.memory)?,
            MemoryRestore::Eager => {
                load_memory_eager(&path, &self.state.memory, Some(self.manifest.memory.digest))?
            }
            MemoryRestore::Hot => map_memory_hot(&path, &self.state.memory, &self.hot_set)?,
        })
    }
}

/// Reads and checks `hotset.bin` against its manifest entry.
fn read_hot_set(dir: &Path, entry: FileEntry, memory_len: u64) -> Result<HotSet> {
    check_file_len(dir, HOT_SET_FILE, entry.len)?;
    let path = dir.join(HOT_SET_FILE);
    let bytes = fs::read(&path).map_err(io_err("read", &path))?;
    let actual = crc32fast::hash(&bytes);
    if actual != entry.crc32 {
        return Err(FormatError::ChecksumMismatch {
            file: HOT_SET_FILE,
            expected: entry.crc32,
            actual,
        }
        .into());
    }
    Ok(HotSet::decode(&bytes, memory_len)?)
}
