//! A VM's CPU share (`Resources/CPUQuota`, percent of one host CPU) through the host's cgroup
//! CPU controller: cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us`). Each VMM process goes into
//! `<mount>/<name>/vm-<uuid>` (v1: under the `cpu` hierarchy); the quota can be changed while
//! it runs.

use std::path::{Path, PathBuf};

use crate::config::CgroupConfig;

/// The CFS period used for quotas (100 ms, the kernel's default).
const PERIOD_US: u64 = 100_000;

/// Why a quota could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup CPU controller is available under {0}")]
    Unavailable(String),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Which cgroup version the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The agent's cgroup folder.
#[derive(Debug, Clone)]
pub struct Cgroups {
    version: Option<Version>,
    /// `<mount>/<name>` (v2) or `<mount>/cpu/<name>` (v1).
    base: PathBuf,
    /// Where the controller would be.
    mount: PathBuf,
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        source,
    })
}

impl Cgroups {
    /// Finds the CPU controller under `config.mount`.
    pub fn detect(config: &CgroupConfig) -> Self {
        let mount = config.mount.clone();
        let v2 = mount.join("cgroup.controllers");
        let (version, base) = if std::fs::read_to_string(&v2).is_ok_and(|c| c.contains("cpu")) {
            (Some(Version::V2), mount.join(&config.name))
        } else if let Some(cpu) = ["cpu", "cpu,cpuacct"]
            .iter()
            .map(|d| mount.join(d))
            .find(|d| d.join("cpu.cfs_quota_us").exists())
        {
            (Some(Version::V1), cpu.join(&config.name))
        } else {
            (None, mount.join(&config.name))
        };
        Self {
            version,
            base,
            mount,
        }
    }

    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// The folder of VM `vm_id`.
    pub fn vm_dir(&self, vm_id: &str) -> PathBuf {
        self.base.join(format!("vm-{vm_id}"))
    }

    fn version_or_err(&self) -> Result<Version, CgroupError> {
        self.version
            .ok_or_else(|| CgroupError::Unavailable(self.mount.display().to_string()))
    }

    fn ensure_vm_dir(&self, vm_id: &str) -> Result<PathBuf, CgroupError> {
        let version = self.version_or_err()?;
        if !self.base.exists() {
            if version == Version::V2 {
                // Best effort: the root may already delegate cpu, or refuse (we are not root).
                let _ = std::fs::write(self.mount.join("cgroup.subtree_control"), "+cpu");
            }
            std::fs::create_dir_all(&self.base).map_err(|source| CgroupError::Write {
                path: self.base.clone(),
                source,
            })?;
        }
        if version == Version::V2 {
            let control = self.base.join("cgroup.subtree_control");
            let enabled = std::fs::read_to_string(&control).unwrap_or_default();
            if !enabled.split_whitespace().any(|c| c == "cpu") {
                write(&control, "+cpu")?;
            }
        }
        let dir = self.vm_dir(vm_id);
        std::fs::create_dir_all(&dir).map_err(|source| CgroupError::Write {
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    }

    /// Sets VM `vm_id`'s quota (percent of one CPU; 0: unlimited).
    pub fn set_quota(&self, vm_id: &str, percent: u32) -> Result<(), CgroupError> {
        let dir = self.ensure_vm_dir(vm_id)?;
        let quota = u64::from(percent) * PERIOD_US / 100;
        match self.version_or_err()? {
            Version::V2 => {
                let value = if percent == 0 {
                    format!("max {PERIOD_US}")
                } else {
                    format!("{quota} {PERIOD_US}")
                };
                write(&dir.join("cpu.max"), &value)
            }
            Version::V1 => {
                write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                let value = if percent == 0 {
                    "-1".to_owned()
                } else {
                    quota.to_string()
                };
                write(&dir.join("cpu.cfs_quota_us"), &value)
            }
        }
    }

    /// Moves process `pid` (all its threads) into VM `vm_id`'s folder, with `percent`.
    pub fn place(&self, vm_id: &str, pid: u32, percent: u32) -> Result<(), CgroupError> {
        self.set_quota(vm_id, percent)?;
        write(&self.vm_dir(vm_id).join("cgroup.procs"), &pid.to_string())
    }

    /// The quota in force for VM `vm_id`, as the kernel reports it (percent; 0: unlimited).
    pub fn quota(&self, vm_id: &str) -> Option<u32> {
        let dir = self.vm_dir(vm_id);
        match self.version? {
            Version::V2 => {
                let text = std::fs::read_to_string(dir.join("cpu.max")).ok()?;
                let mut parts = text.split_whitespace();
                let quota = parts.next()?;
                let period: u64 = parts.next()?.parse().ok()?;
                if quota == "max" {
                    return Some(0);
                }
                u32::try_from(quota.parse::<u64>().ok()? * 100 / period).ok()
            }
            Version::V1 => {
                let quota: i64 = std::fs::read_to_string(dir.join("cpu.cfs_quota_us"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                let period: i64 = std::fs::read_to_string(dir.join("cpu.cfs_period_us"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                if quota < 0 {
                    return Some(0);
                }
                u32::try_from(quota * 100 / period).ok()
            }
        }
    }

    /// Whether process `pid` is in VM `vm_id`'s folder.
    pub fn contains(&self, vm_id: &str, pid: u32) -> bool {
        std::fs::read_to_string(self.vm_dir(vm_id).join("cgroup.procs"))
            .is_ok_and(|procs| procs.lines().any(|l| l.trim() == pid.to_string()))
    }

    /// Removes VM `vm_id`'s folder (once its VMM has ended; a folder with processes stays),
    /// and on v1 its memory folder (made by a jailed VMM, docs/security.md).
    pub fn remove(&self, vm_id: &str) {
        if self.version.is_some() {
            let _ = std::fs::remove_dir(self.vm_dir(vm_id));
        }
        if self.version == Some(Version::V1) {
            let memory = self.mount.join("memory");
            let relative = self.vm_dir(vm_id);
            if let Ok(name) = relative.strip_prefix(self.base.parent().unwrap_or(&self.mount)) {
                let _ = std::fs::remove_dir(memory.join(name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    fn config(mount: &Path) -> CgroupConfig {
        CgroupConfig {
            mount: mount.to_path_buf(),
            name: "virmo".into(),
        }
    }

    #[test]
    fn v2_quotas_are_written_as_cpu_max() {
        // A fake cgroup2 mount: plain files stand in for the kernel's.
        let dir = TempDir::new();
        std::fs::write(
            dir.path().join("cgroup.controllers"),
            "cpuset cpu io memory",
        )
        .unwrap();
        let cgroups = Cgroups::detect(&config(dir.path()));
        assert_eq!(cgroups.version(), Some(Version::V2));
        cgroups.set_quota("a", 50).unwrap();
        let vm = cgroups.vm_dir("a");
        assert_eq!(
            std::fs::read_to_string(vm.join("cpu.max")).unwrap(),
            "50000 100000"
        );
        assert_eq!(cgroups.quota("a"), Some(50));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("virmo/cgroup.subtree_control")).unwrap(),
            "+cpu"
        );
        cgroups.place("a", 77, 0).unwrap();
        assert_eq!(cgroups.quota("a"), Some(0));
        assert!(cgroups.contains("a", 77));
    }

    #[test]
    fn v1_quotas_are_written_as_cfs_quota() {
        let dir = TempDir::new();
        std::fs::create_dir_all(dir.path().join("cpu,cpuacct")).unwrap();
        std::fs::write(dir.path().join("cpu,cpuacct/cpu.cfs_quota_us"), "-1").unwrap();
        let cgroups = Cgroups::detect(&config(dir.path()));
        assert_eq!(cgroups.version(), Some(Version::V1));
        cgroups.set_quota("b", 150).unwrap();
        let vm = cgroups.vm_dir("b");
        assert_eq!(
            std::fs::read_to_string(vm.join("cpu.cfs_quota_us")).unwrap(),
            "150000"
        );
        assert_eq!(cgroups.quota("b"), Some(150));
        cgroups.set_quota("b", 0).unwrap();
        assert_eq!(cgroups.quota("b"), Some(0));
    }

    #[test]
    fn no_controller_is_an_error_not_a_panic() {
        let dir = TempDir::new();
        let cgroups = Cgroups::detect(&config(dir.path()));
        assert_eq!(cgroups.version(), None);
        assert!(matches!(
            cgroups.set_quota("c", 10),
            Err(CgroupError::Unavailable(_))
        ));
        cgroups.remove("c");
    }
}
