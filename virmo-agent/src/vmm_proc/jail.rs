//! Jailing the VMMs the agent starts (`vmm --jail`, docs/security.md): each running VM gets
//! a uid and gid of its own from the configured range, its folder is given to that uid, its
//! kernel and initramfs made readable, and the VMM is told to show only those in its jail, to
//! join the VM's cgroup with a memory limit (guest memory plus the VMM's overhead), and to drop
//! to that uid.
//!
//! The uid is not stored: it is picked at each start (a hash of the VM's ID, then the next
//! free one), skipping every uid of the range that a live process has (VMMs of other VMs,
//! adopted ones included) and the ones this agent just gave to another VM's starting VMM; the
//! VM's files are handed to it at each start.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::cgroup::{Cgroups, Version};
use crate::config::{CgroupConfig, JailConfig};
use crate::layout::{Layout, VmPaths};

/// Memory of a jailed VMM's cgroup beyond guest RAM (as `vmm::jail::VMM_OVERHEAD_MIB`).
pub const OVERHEAD_MIB: u64 = vmm::jail::VMM_OVERHEAD_MIB;

/// Why a VM's jail could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("no free uid in {base}..{end} for a VMM")]
    NoFreeUid { base: u32, end: u32 },
    #[error("cannot prepare {path} for the jailed VMM")]
    Files {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How the agent jails its VMMs (none when disabled or not root).
#[derive(Debug, Clone)]
pub struct Jailer {
    config: JailConfig,
    cgroup: CgroupConfig,
    /// The cgroup to put each VMM in, when the host has memory and CPU controllers.
    cgroups: bool,
    jails: PathBuf,
}

/// The uids given to VMs by this agent, by VM ID (kept while the agent runs).
static GIVEN: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());

/// The `--jail` argument of one VMM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmJail {
    pub uid: u32,
    pub arg: String,
}

fn files_error(path: &Path) -> impl FnOnce(std::io::Error) -> JailError {
    let path = path.to_path_buf();
    move |source| JailError::Files { path, source }
}

impl Jailer {
    /// The agent's jailer: `None` when `[jail] enabled = false`, or when the agent is not root
    /// (logged once: its VMMs then run unjailed).
    pub fn new(config: &JailConfig, cgroup: &CgroupConfig, layout: &Layout) -> Option<Self> {
        if !config.enabled {
            return None;
        }
        if std::fs::metadata("/proc/self").map_or(true, |m| m.uid() != 0) {
            tracing::warn!("not running as root: VMMs run unjailed ([jail] needs root)");
            return None;
        }
        let detected = Cgroups::detect(cgroup);
        let cgroups = match detected.version() {
            Some(Version::V2) => std::fs::read_to_string(cgroup.mount.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory")),
            Some(Version::V1) => cgroup.mount.join("memory/memory.limit_in_bytes").exists(),
            None => false,
        };
        Some(Self {
            config: config.clone(),
            cgroup: cgroup.clone(),
            cgroups,
            jails: layout.root().join("jail"),
        })
    }

    /// Prepares VM `id`'s jail: its uid, its folder handed to it, `readable` files (kernel,
    /// initramfs) readable, an empty jail folder; returns the `--jail` argument.
    pub fn prepare(
        &self,
        id: &str,
        paths: &VmPaths,
        readable: &[&Path],
        memory_mib: u64,
    ) -> Result<VmmJail, JailError> {
        let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
        let uid = self.pick_uid(id, &given)?;
        let root = self.jails.join(id);
        std::fs::create_dir_all(&root).map_err(files_error(&root))?;
        std::fs::set_permissions(&self.jails, std::fs::Permissions::from_mode(0o700))
            .map_err(files_error(&self.jails))?;
        chown_tree(&paths.dir, uid).map_err(files_error(&paths.dir))?;
        for file in readable {
            let mode = std::fs::metadata(file).map_err(files_error(file))?.mode();
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode | 0o444))
                .map_err(files_error(file))?;
        }
        let mut arg = format!(
            "{},uid={uid},gid={uid},bind={}",
            root.display(),
            paths.dir.display()
        );
        if self.cgroups {
            arg.push_str(&format!(
                ",cgroup={}/vm-{id},cgroup-mount={},memory-mib={}",
                self.cgroup.name,
                self.cgroup.mount.display(),
                memory_mib + OVERHEAD_MIB
            ));
        }
        given.insert(id.to_owned(), uid);
        Ok(VmmJail { uid, arg })
    }

    /// A uid of the range no live process has and no other VM was just given.
    fn pick_uid(&self, id: &str, given: &BTreeMap<String, u32>) -> Result<u32, JailError> {
        let (base, count) = (self.config.uid_base, self.config.uid_count);
        let mut taken = live_uids(base, count);
        taken.extend(
            given
                .iter()
                .filter(|(vm, _)| *vm != id)
                .map(|(_, uid)| *uid),
        );
        let start = fnv1a(id.as_bytes()) % count;
        (0..count)
            .map(|i| base + (start + i) % count)
            .find(|uid| !taken.contains(uid))
            .ok_or(JailError::NoFreeUid {
                base,
                end: base + count,
            })
    }
}

/// A stable hash of a VM ID (its first choice of uid).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The real uids in `base..base + count` of the live processes.
fn live_uids(base: u32, count: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .map(|m| m.uid())
        .filter(|uid| (base..base.saturating_add(count)).contains(uid))
        .collect()
}

/// Gives `path` and everything under it to `uid` (and the group of the same number).
fn chown_tree(path: &Path, uid: u32) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_symlink() {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(uid))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    fn jailer(dir: &Path, base: u32, count: u32) -> Jailer {
        Jailer {
            config: JailConfig {
                enabled: true,
                uid_base: base,
                uid_count: count,
            },
            cgroup: CgroupConfig::default(),
            cgroups: false,
            jails: dir.join("jail"),
        }
    }

    #[test]
    fn each_vm_gets_a_uid_of_its_own_and_keeps_it() {
        let dir = TempDir::new();
        // A range no process of this machine has (the probe skips live uids).
        let jailer = jailer(dir.path(), 3_900_000_000, 4);
        let given = BTreeMap::new();
        let a = jailer.pick_uid("vm-a", &given).unwrap();
        assert_eq!(jailer.pick_uid("vm-a", &given).unwrap(), a, "stable");
        let given: BTreeMap<_, _> = [("vm-a".to_owned(), a)].into();
        let b = jailer.pick_uid("vm-b", &given).unwrap();
        assert_ne!(a, b);
        assert_eq!(jailer.pick_uid("vm-a", &given).unwrap(), a);
        let full: BTreeMap<_, _> = (0..4)
            .map(|i| (format!("other-{i}"), 3_900_000_000 + i))
            .collect();
        assert!(matches!(
            jailer.pick_uid("vm-c", &full),
            Err(JailError::NoFreeUid { .. })
        ));
    }

    #[test]
    fn uids_of_live_processes_are_skipped() {
        let me = std::fs::metadata("/proc/self").unwrap().uid();
        let dir = TempDir::new();
        // A one-uid range holding this process's uid: nothing is free.
        let jailer = jailer(dir.path(), me.max(1), 1);
        if me > 0 {
            assert!(jailer.pick_uid("vm", &BTreeMap::new()).is_err());
        }
        assert!(live_uids(me, 1).contains(&me) || me == 0);
    }

    #[test]
    fn prepare_gives_the_vm_folder_and_builds_the_argument() {
        let dir = TempDir::new();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let paths = layout.vm("v1");
        std::fs::create_dir_all(paths.snapshot.join("inner")).unwrap();
        std::fs::write(&paths.disk, b"disk").unwrap();
        let kernel = dir.path().join("bzImage");
        std::fs::write(&kernel, b"k").unwrap();
        std::fs::set_permissions(&kernel, std::fs::Permissions::from_mode(0o600)).unwrap();
        let jailer = jailer(dir.path(), 3_900_000_100, 16);
        let root_owned = std::fs::metadata("/proc/self").unwrap().uid() == 0;
        let result = jailer.prepare("v1", &paths, &[&kernel], 128);
        if !root_owned {
            assert!(
                matches!(result, Err(JailError::Files { .. })),
                "chown needs root"
            );
            return;
        }
        let jail = result.unwrap();
        assert!((3_900_000_100..3_900_000_116).contains(&jail.uid));
        for path in [&paths.dir, &paths.disk, &paths.snapshot.join("inner")] {
            assert_eq!(std::fs::metadata(path).unwrap().uid(), jail.uid, "{path:?}");
        }
        assert_eq!(std::fs::metadata(&kernel).unwrap().mode() & 0o777, 0o644);
        assert_eq!(
            jail.arg,
            format!(
                "{}/jail/v1,uid={u},gid={u},bind={}",
                dir.path().display(),
                paths.dir.display(),
                u = jail.uid
            )
        );
        assert!(dir.path().join("jail/v1").is_dir());
    }
}
