//! Snapshot folders on disk: atomic writing ([`SnapshotWriter`]) and validated reading
//! ([`Snapshot::open`]).
//!
//! # Atomicity protocol
//! A snapshot `<parent>/<name>` is written as `<parent>/<name>.tmp.<pid>`:
//! `memory.bin`, `state.bin`, `hotset.bin`, then `manifest`, each fsynced, then the folder
//! itself is fsynced.
//! It becomes `<name>` in one step:
//! - no previous snapshot: `rename(tmp, name)`;
//! - a previous snapshot: `renameat2(tmp, name, RENAME_EXCHANGE)` swaps the two folders
//!   atomically; the previous snapshot is now at the temporary name and is deleted.
//!
//! Then the parent folder is fsynced. At every instant `<name>` is a complete snapshot (the old
//! or the new one) or absent if there never was one. On a file system without
//! `RENAME_EXCHANGE`, the previous folder is first renamed to `<name>.old.<pid>` and the new one
//! renamed into place; a crash between these two renames leaves no `<name>`, and the next
//! [`Snapshot::open`] or writer renames `<name>.old.<pid>` back.
//!
//! Leftovers (`<name>.tmp.<pid>`, `<name>.old.<pid>`) of a process that no longer exists are
//! deleted by the next writer or reader; those of a live process are left alone. There is one
//! writer per snapshot folder at a time (the VMM that owns the VM).

use std::ffi::CString;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use vm_memory::GuestMemoryMmap;

use super::format::{encode_state, FormatError, MachineState, MemoryLayout};
use super::hot_set::{HotSet, HotSetError, HOT_SET_FILE};
use super::manifest::{FileEntry, Manifest, MemoryEntry, MANIFEST_FILE, MEMORY_FILE, STATE_FILE};
use super::memory_file::{write_memory_file, MemoryFileError, MemoryFileSummary};

pub use super::reader::Snapshot;

/// The steps of [`SnapshotWriter::write`], in order. A step hook sees each before it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WriteStep {
    /// Delete leftovers of dead writers.
    CleanLeftovers,
    /// Create the temporary folder.
    CreateTempDir,
    /// Write `memory.bin`.
    WriteMemory,
    /// fsync `memory.bin`.
    SyncMemory,
    /// Write `state.bin`.
    WriteState,
    /// fsync `state.bin`.
    SyncState,
    /// Write `hotset.bin`.
    WriteHotSet,
    /// fsync `hotset.bin`.
    SyncHotSet,
    /// Write `manifest`.
    WriteManifest,
    /// fsync `manifest`.
    SyncManifest,
    /// fsync the temporary folder.
    SyncTempDir,
    /// Rename or exchange the temporary folder into place: the new snapshot becomes current.
    Commit,
    /// fsync the parent folder.
    SyncParent,
    /// Delete the previous snapshot.
    RemovePrevious,
}

impl WriteStep {
    /// Every step, in execution order.
    pub const ALL: [WriteStep; 14] = [
        WriteStep::CleanLeftovers,
        WriteStep::CreateTempDir,
        WriteStep::WriteMemory,
        WriteStep::SyncMemory,
        WriteStep::WriteState,
        WriteStep::SyncState,
        WriteStep::WriteHotSet,
        WriteStep::SyncHotSet,
        WriteStep::WriteManifest,
        WriteStep::SyncManifest,
        WriteStep::SyncTempDir,
        WriteStep::Commit,
        WriteStep::SyncParent,
        WriteStep::RemovePrevious,
    ];
}

/// Called before each step; an error aborts the write at that step (failure injection).
pub type StepHook = Box<dyn FnMut(WriteStep) -> std::io::Result<()> + Send>;

/// Errors writing or opening a snapshot folder.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{op} {path} failed")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// There is no snapshot at the path.
    #[error("no snapshot at {0}")]
    NotFound(PathBuf),
    /// A file of the snapshot is missing.
    #[error("snapshot {dir} has no {file}")]
    MissingFile {
        /// The snapshot folder.
        dir: PathBuf,
        /// The missing file.
        file: &'static str,
    },
    /// The target path has no file name or parent folder.
    #[error("{0} cannot hold a snapshot folder (no parent or name)")]
    BadTarget(PathBuf),
    /// State or manifest content was refused.
    #[error("invalid snapshot state")]
    Format(#[from] FormatError),
    /// Memory file write or load failed.
    #[error("snapshot memory could not be saved or loaded")]
    Memory(#[from] MemoryFileError),
    /// The hot set could not be recorded or read.
    #[error("snapshot hot set")]
    HotSet(#[from] HotSetError),
    /// The step hook aborted the write.
    #[error("snapshot write aborted before step {step:?}")]
    Aborted {
        /// The step that did not run.
        step: WriteStep,
        /// The hook's error.
        #[source]
        source: std::io::Error,
    },
}

pub(super) type Result<T> = std::result::Result<T, StoreError>;

pub(super) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

/// Where a snapshot folder and its siblings live.
pub(super) struct Paths {
    pub(super) parent: PathBuf,
    name: String,
}

impl Paths {
    pub(super) fn new(target: &Path) -> Result<Self> {
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| StoreError::BadTarget(target.to_path_buf()))?
            .to_string();
        let parent = match target.parent() {
            Some(p) if p.as_os_str().is_empty() => PathBuf::from("."),
            Some(p) => p.to_path_buf(),
            None => return Err(StoreError::BadTarget(target.to_path_buf())),
        };
        Ok(Self { parent, name })
    }

    fn current(&self) -> PathBuf {
        self.parent.join(&self.name)
    }

    fn temp(&self, pid: u32) -> PathBuf {
        self.parent.join(format!("{}.tmp.{pid}", self.name))
    }

    fn aside(&self, pid: u32) -> PathBuf {
        self.parent.join(format!("{}.old.{pid}", self.name))
    }

    /// Leftover sibling folders: (path, is_aside, pid).
    fn leftovers(&self) -> Result<Vec<(PathBuf, bool, u32)>> {
        let tmp_prefix = format!("{}.tmp.", self.name);
        let old_prefix = format!("{}.old.", self.name);
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.parent).map_err(io_err("list", &self.parent))? {
            let entry = entry.map_err(io_err("list", &self.parent))?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            let (is_aside, pid) = if let Some(pid) = file_name.strip_prefix(&tmp_prefix) {
                (false, pid)
            } else if let Some(pid) = file_name.strip_prefix(&old_prefix) {
                (true, pid)
            } else {
                continue;
            };
            if let Ok(pid) = pid.parse::<u32>() {
                found.push((entry.path(), is_aside, pid));
            }
        }
        Ok(found)
    }

    /// Deletes leftovers of dead processes (and of this process: it is the only writer) and
    /// puts back a previous snapshot that a crashed fallback commit left aside.
    pub(super) fn recover(&self) -> Result<()> {
        let me = std::process::id();
        let current = self.current();
        let mut leftovers = self.leftovers()?;
        // Asides first: one may have to become `current` again before temps are judged.
        leftovers.sort_by_key(|(_, is_aside, _)| !*is_aside);
        for (path, is_aside, pid) in leftovers {
            if pid != me && process_alive(pid) {
                continue;
            }
            if is_aside && !current.exists() {
                fs::rename(&path, &current).map_err(io_err("restore aside", &path))?;
                sync_dir(&self.parent)?;
            } else {
                fs::remove_dir_all(&path).map_err(io_err("remove leftover", &path))?;
            }
        }
        Ok(())
    }
}

fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(io_err("fsync folder", path))
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| StoreError::BadTarget(path.to_path_buf()))
}

/// Atomically swaps two existing paths. `Ok(false)` when the file system cannot.
fn exchange(a: &Path, b: &Path) -> Result<bool> {
    let (ca, cb) = (c_path(a)?, c_path(b)?);
    // SAFETY: both pointers are NUL-terminated strings that live across the call; renameat2
    // does not retain them.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => Ok(false),
        _ => Err(io_err("exchange", b)(err)),
    }
}

/// What a successful write produced.
#[derive(Clone, Copy, Debug)]
pub struct WriteSummary {
    /// The manifest written.
    pub manifest: Manifest,
    /// Bytes of guest memory actually written (non-zero pages).
    pub memory_data_bytes: u64,
}

/// Writes snapshot folders atomically (see the module documentation).
pub struct SnapshotWriter {
    paths: Paths,
    hook: Option<StepHook>,
    /// When each step of the current write started, for the debug log.
    started: Vec<(WriteStep, Instant)>,
}

impl std::fmt::Debug for SnapshotWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWriter")
            .field("target", &self.paths.current())
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

impl SnapshotWriter {
    /// A writer for the snapshot folder `target`.
    pub fn new(target: &Path) -> Result<Self> {
        Ok(Self {
            paths: Paths::new(target)?,
            hook: None,
            started: Vec::new(),
        })
    }

    /// Installs a hook called before every [`WriteStep`]; its error aborts the write.
    pub fn with_step_hook(mut self, hook: StepHook) -> Self {
        self.hook = Some(hook);
        self
    }

    fn step(&mut self, step: WriteStep) -> Result<()> {
        self.started.push((step, Instant::now()));
        match &mut self.hook {
            Some(hook) => hook(step).map_err(|source| StoreError::Aborted { step, source }),
            None => Ok(()),
        }
    }

    /// Writes `state` and `memory` as the new snapshot. The VM must be stopped (no vCPU or
    /// device writes guest memory) and `state.memory` must describe `memory`.
    ///
    /// On error the snapshot folder holds a complete snapshot all the same: the previous one,
    /// or the new one if the error came after [`WriteStep::Commit`] (fsync of the parent or
    /// removal of the previous folder failed; the new snapshot may then not be durable yet).
    pub fn write(
        &mut self,
        state: &MachineState,
        memory: &GuestMemoryMmap<()>,
    ) -> Result<WriteSummary> {
        if state.memory != MemoryLayout::of(memory) {
            return Err(FormatError::Inconsistent(
                "state.memory does not describe the guest memory being saved".to_string(),
            )
            .into());
        }
        state.validate()?;
        let state_bytes = encode_state(state)?;
        // Before the memory is written: the writer reads file-backed memory in full. The hot
        // set is a hint: without it (no /proc in a jail, say) the next hot restore is a lazy one.
        let hot_set = HotSet::record(memory).unwrap_or_else(|err| {
            tracing::warn!(error = %err, "no hot set recorded");
            HotSet::default()
        });
        let temp = self.paths.temp(std::process::id());
        self.started.clear();
        let outcome = self.write_steps(&temp, &state_bytes, &hot_set.encode(), memory);
        if outcome.is_err() && temp.exists() {
            // Best effort: a leftover is also removed by the next writer or reader.
            let _ = fs::remove_dir_all(&temp);
        }
        self.log_step_times();
        outcome
    }

    /// Logs how long each step of the last write took (debug level).
    fn log_step_times(&self) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let ends = self.started.iter().skip(1).map(|&(_, at)| at);
        let times: Vec<String> = self
            .started
            .iter()
            .zip(ends.chain(std::iter::once(Instant::now())))
            .map(|(&(step, start), end)| {
                format!("{step:?} {:.1}", (end - start).as_secs_f64() * 1e3)
            })
            .collect();
        tracing::debug!(steps_ms = %times.join(", "), "snapshot write steps");
    }

    fn write_file(path: &Path, op: &'static str, content: &[u8]) -> Result<File> {
        use std::io::Write;
        let mut file = File::create_new(path).map_err(io_err("create", path))?;
        file.write_all(content).map_err(io_err(op, path))?;
        Ok(file)
    }

    fn write_steps(
        &mut self,
        temp: &Path,
        state_bytes: &[u8],
        hot_set_bytes: &[u8],
        memory: &GuestMemoryMmap<()>,
    ) -> Result<WriteSummary> {
        self.step(WriteStep::CleanLeftovers)?;
        self.paths.recover()?;

        self.step(WriteStep::CreateTempDir)?;
        fs::create_dir(temp).map_err(io_err("create folder", temp))?;

        self.step(WriteStep::WriteMemory)?;
        let memory_path = temp.join(MEMORY_FILE);
        let memory_file = File::create_new(&memory_path).map_err(io_err("create", &memory_path))?;
        let MemoryFileSummary {
            len,
            digest,
            data_bytes,
        } = write_memory_file(memory, &memory_file)?;
        self.step(WriteStep::SyncMemory)?;
        memory_file
            .sync_all()
            .map_err(io_err("fsync", &memory_path))?;

        self.step(WriteStep::WriteState)?;
        let state_path = temp.join(STATE_FILE);
        let state_file = Self::write_file(&state_path, "write", state_bytes)?;
        self.step(WriteStep::SyncState)?;
        state_file
            .sync_all()
            .map_err(io_err("fsync", &state_path))?;

        self.step(WriteStep::WriteHotSet)?;
        let hot_set_path = temp.join(HOT_SET_FILE);
        let hot_set_file = Self::write_file(&hot_set_path, "write", hot_set_bytes)?;
        self.step(WriteStep::SyncHotSet)?;
        hot_set_file
            .sync_all()
            .map_err(io_err("fsync", &hot_set_path))?;

        let manifest = Manifest {
            state: FileEntry {
                len: state_bytes.len() as u64,
                crc32: crc32fast::hash(state_bytes),
            },
            memory: MemoryEntry { len, digest },
            hot_set: Some(FileEntry {
                len: hot_set_bytes.len() as u64,
                crc32: crc32fast::hash(hot_set_bytes),
            }),
        };
        self.step(WriteStep::WriteManifest)?;
        let manifest_path = temp.join(MANIFEST_FILE);
        let manifest_file =
            Self::write_file(&manifest_path, "write", manifest.encode().as_bytes())?;
        self.step(WriteStep::SyncManifest)?;
        manifest_file
            .sync_all()
            .map_err(io_err("fsync", &manifest_path))?;

        self.step(WriteStep::SyncTempDir)?;
        sync_dir(temp)?;

        self.step(WriteStep::Commit)?;
        let current = self.paths.current();
        // After the commit, `previous` names the folder holding the replaced snapshot, if any.
        let previous = if !current.exists() {
            fs::rename(temp, &current).map_err(io_err("rename", temp))?;
            None
        } else if exchange(temp, &current)? {
            Some(temp.to_path_buf())
        } else {
            let aside = self.paths.aside(std::process::id());
            fs::rename(&current, &aside).map_err(io_err("rename aside", &current))?;
            fs::rename(temp, &current).map_err(io_err("rename", temp))?;
            Some(aside)
        };

        self.step(WriteStep::SyncParent)?;
        sync_dir(&self.paths.parent)?;

        self.step(WriteStep::RemovePrevious)?;
        if let Some(previous) = previous {
            fs::remove_dir_all(&previous).map_err(io_err("remove previous", &previous))?;
        }
        Ok(WriteSummary {
            manifest,
            memory_data_bytes: data_bytes,
        })
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
