//! Where things are in the data directory.
//!
//! ```text
//! <data>/agent.db            the database (SQLite)
//! <data>/agent.lock          held while an agent runs on this directory
//! <data>/virmo.sock          the local user's socket (default)
//! <data>/images/<sha256>/    an installed bundle (kernel, initramfs, disk, manifest), shared
//! <data>/downloads/          partial downloads (resumed after a restart)
//! <data>/vms/<uuid>/         one VM: disk.img, removable.img, snapshot/, console.log,
//!                            vmm.log, console.in (the console input FIFO), vsock (its
//!                            host channel's socket) and vsock_1024 (the sharing broker's)
//! <data>/run/<uuid>.sock     the API socket of a VM's VMM
//! ```

use std::path::{Path, PathBuf};

/// Paths under one data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

/// Paths of one VM.
#[derive(Debug, Clone)]
pub struct VmPaths {
    pub dir: PathBuf,
    pub disk: PathBuf,
    pub removable: PathBuf,
    pub snapshot: PathBuf,
    /// A previous snapshot moved aside while a new one is written.
    pub snapshot_old: PathBuf,
    pub console_log: PathBuf,
    pub console_in: PathBuf,
    pub vmm_log: PathBuf,
    pub socket: PathBuf,
    /// The Unix socket of the VM's vsock device (guest port P reaches `<vsock>_P`).
    pub vsock: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn database(&self) -> PathBuf {
        self.root.join("agent.db")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join("agent.lock")
    }

    pub fn local_socket(&self) -> PathBuf {
        self.root.join("virmo.sock")
    }

    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    pub fn image(&self, digest: &str) -> PathBuf {
        self.images().join(digest)
    }

    pub fn downloads(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// The partial download of job `job_id`.
    pub fn download(&self, job_id: i64) -> PathBuf {
        self.downloads().join(format!("job-{job_id}.part"))
    }

    pub fn vms(&self) -> PathBuf {
        self.root.join("vms")
    }

    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn vm(&self, id: &str) -> VmPaths {
        let dir = self.vms().join(id);
        VmPaths {
            disk: dir.join("disk.img"),
            removable: dir.join("removable.img"),
            snapshot: dir.join("snapshot"),
            snapshot_old: dir.join("snapshot.old"),
            console_log: dir.join("console.log"),
            console_in: dir.join("console.in"),
            vmm_log: dir.join("vmm.log"),
            vsock: dir.join("vsock"),
            socket: self.run().join(format!("{id}.sock")),
            dir,
        }
    }

    /// Creates the top-level folders (mode 0700: VM disks and the database are private).
    pub fn create(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        for dir in [
            self.root.clone(),
            self.images(),
            self.downloads(),
            self.vms(),
            self.run(),
        ] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsynced, renamed over it,
/// and the folder fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// fsyncs a folder (makes renames and creations in it durable).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Removes a file or folder tree if it exists; files are truncated first so their blocks are
/// freed even if something still holds them open.
pub fn remove_all(path: &Path) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            remove_all(&entry?.path())?;
        }
        std::fs::remove_dir(path)
    } else {
        if meta.is_file() {
            if let Ok(file) = std::fs::OpenOptions::new().write(true).open(path) {
                let _ = file.set_len(0);
            }
        }
        std::fs::remove_file(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    #[test]
    fn atomic_writes_and_removal() {
        let dir = TempDir::new();
        let layout = Layout::new(dir.path().join("data"));
        layout.create().unwrap();
        let file = layout.root().join("x");
        write_atomic(&file, b"one").unwrap();
        write_atomic(&file, b"two").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        let vm = layout.vm("abc");
        std::fs::create_dir_all(vm.snapshot.join("inner")).unwrap();
        std::fs::write(&vm.disk, b"data").unwrap();
        std::fs::write(vm.snapshot.join("inner/memory.bin"), b"ram").unwrap();
        remove_all(&vm.dir).unwrap();
        assert!(!vm.dir.exists());
        remove_all(&vm.dir).unwrap();
        assert_eq!(
            std::fs::read_dir(layout.root()).unwrap().count(),
            5,
            "images, downloads, vms, run and x"
        );
    }
}
