//! Saving and loading the stored part of the tree (handler-backed values are the handlers' own).
//!
//! File: JSON `{"magic": "virmo-dmtree", "version": 1, "root": <node>}`. A save writes a temp file,
//! fsyncs it, keeps the current file as `<name>.prev` (hard link), renames the temp file over the
//! current one and fsyncs the directory, so a crash leaves either the old or the new file, and the
//! last good state stays readable with [`DmTree::load_or_previous`].

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{DmTree, Node, TreeLimits};

const MAGIC: &str = "virmo-dmtree";
const VERSION: u32 = 1;
/// Refuse to read tree files larger than this.
const MAX_FILE_SIZE: u64 = 64 << 20;

#[derive(Serialize, Deserialize)]
struct TreeFile {
    magic: String,
    version: u32,
    root: Node,
}

/// Why saving or loading the tree failed.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot {action} `{path}`")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("tree file `{path}` is corrupt")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("`{path}` is not a tree file (magic `{magic}`)")]
    BadMagic { path: PathBuf, magic: String },
    #[error("tree file `{path}` has format version {version}; this build reads {VERSION}")]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("tree file `{path}` is {size} bytes, more than the {MAX_FILE_SIZE} allowed")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("tree file `{path}` has a root that is not an interior node with an ACL")]
    BadRoot { path: PathBuf },
    #[error("cannot save the tree during an Atomic")]
    InAtomic,
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PersistError + 'a {
    move |source| PersistError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// The last good file kept by [`DmTree::save`].
pub fn previous_path(path: &Path) -> PathBuf {
    sibling(path, ".prev")
}

impl DmTree {
    /// Atomically saves the stored nodes to `path`.
    pub fn save(&self, path: &Path) -> Result<(), PersistError> {
        if self.in_atomic() {
            return Err(PersistError::InAtomic);
        }
        let file = TreeFile {
            magic: MAGIC.to_owned(),
            version: VERSION,
            root: self.root.clone(),
        };
        let bytes = serde_json::to_vec(&file).map_err(|source| PersistError::Corrupt {
            path: path.to_owned(),
            source,
        })?;
        let tmp = sibling(path, ".tmp");
        {
            let mut out = File::create(&tmp).map_err(io_err("create", &tmp))?;
            out.write_all(&bytes).map_err(io_err("write", &tmp))?;
            out.sync_all().map_err(io_err("fsync", &tmp))?;
        }
        if path.exists() {
            let prev = previous_path(path);
            match fs::remove_file(&prev) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &prev)(e)),
            }
            fs::hard_link(path, &prev).map_err(io_err("link", &prev))?;
        }
        fs::rename(&tmp, path).map_err(io_err("rename", &tmp))?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", dir))?;
        Ok(())
    }

    /// Loads a tree saved by [`DmTree::save`]. Handlers must be mounted again after loading.
    pub fn load(path: &Path, limits: TreeLimits) -> Result<Self, PersistError> {
        let size = fs::metadata(path).map_err(io_err("stat", path))?.len();
        if size > MAX_FILE_SIZE {
            return Err(PersistError::TooLarge {
                path: path.to_owned(),
                size,
            });
        }
        let bytes = fs::read(path).map_err(io_err("read", path))?;
        let file: TreeFile =
            serde_json::from_slice(&bytes).map_err(|source| PersistError::Corrupt {
                path: path.to_owned(),
                source,
            })?;
        if file.magic != MAGIC {
            return Err(PersistError::BadMagic {
                path: path.to_owned(),
                magic: file.magic,
            });
        }
        if file.version != VERSION {
            return Err(PersistError::UnsupportedVersion {
                path: path.to_owned(),
                version: file.version,
            });
        }
        if !file.root.is_interior() || file.root.props.acl.is_empty() {
            return Err(PersistError::BadRoot {
                path: path.to_owned(),
            });
        }
        Ok(Self::from_root(file.root, limits))
    }

    /// Loads `path`, or when it is missing or unreadable, its `.prev` (the last good file).
    /// Returns the tree and, when the fallback was used, the error that caused it.
    pub fn load_or_previous(
        path: &Path,
        limits: TreeLimits,
    ) -> Result<(Self, Option<PersistError>), PersistError> {
        match Self::load(path, limits) {
            Ok(tree) => Ok((tree, None)),
            Err(err) => {
                let prev = previous_path(path);
                if !prev.exists() {
                    return Err(err);
                }
                Self::load(&prev, limits).map(|tree| (tree, Some(err)))
            }
        }
    }

    /// Replaces this tree's stored nodes with those of `path`; on any error nothing changes.
    /// Mounted handlers stay mounted.
    pub fn reload(&mut self, path: &Path) -> Result<(), PersistError> {
        if self.in_atomic() {
            return Err(PersistError::InAtomic);
        }
        let loaded = Self::load(path, self.limits)?;
        self.set_root(loaded.root);
        Ok(())
    }
}
