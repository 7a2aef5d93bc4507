//! The jailed VMM's cgroup: memory and CPU limits, on cgroup v2 or v1 (whichever the host
//! mounts at the cgroup mount point). The process joins before its namespaces are made, so
//! every thread and the keeper (docs/security.md) are counted.

use std::path::{Path, PathBuf};

/// The CFS period of CPU quotas (100 ms, the kernel's default).
const PERIOD_US: u64 = 100_000;

/// Why the cgroup could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup v2 or v1 memory/cpu controller under {0}")]
    Unavailable(PathBuf),
    #[error("the {controller} controller is not enabled in {path} (cgroup v2)")]
    NotEnabled {
        controller: &'static str,
        path: PathBuf,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Limits of one VMM process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    /// Percent of one host CPU.
    pub cpu_percent: Option<u32>,
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn create(path: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(path).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates `<mount>/<name>` (v2) or `<mount>/{memory,cpu}/<name>` (v1), writes `limits` and
/// moves this process there. Returns the folders joined.
pub fn join(mount: &Path, name: &str, limits: Limits) -> Result<Vec<PathBuf>, CgroupError> {
    let pid = std::process::id().to_string();
    if mount.join("cgroup.controllers").exists() {
        let dir = mount.join(name);
        enable_v2(mount, &dir)?;
        if let Some(bytes) = limits.memory_bytes {
            write(&dir.join("memory.max"), &bytes.to_string())?;
        }
        if let Some(percent) = limits.cpu_percent {
            let quota = u64::from(percent) * PERIOD_US / 100;
            write(&dir.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
        }
        write(&dir.join("cgroup.procs"), &pid)?;
        return Ok(vec![dir]);
    }
    let memory = mount.join("memory");
    let cpu = ["cpu", "cpu,cpuacct"]
        .iter()
        .map(|d| mount.join(d))
        .find(|d| d.join("cpu.cfs_quota_us").exists());
    let (Some(cpu), true) = (cpu, memory.join("memory.limit_in_bytes").exists()) else {
        return Err(CgroupError::Unavailable(mount.to_path_buf()));
    };
    let (memory, cpu) = (memory.join(name), cpu.join(name));
    create(&memory)?;
    create(&cpu)?;
    if let Some(bytes) = limits.memory_bytes {
        write(&memory.join("memory.limit_in_bytes"), &bytes.to_string())?;
    }
    if let Some(percent) = limits.cpu_percent {
        write(&cpu.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
        let quota = u64::from(percent) * PERIOD_US / 100;
        write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
    }
    write(&memory.join("cgroup.procs"), &pid)?;
    write(&cpu.join("cgroup.procs"), &pid)?;
    Ok(vec![memory, cpu])
}

/// Creates `dir` under the v2 `mount` with the memory and cpu controllers enabled down to it.
fn enable_v2(mount: &Path, dir: &Path) -> Result<(), CgroupError> {
    let mut parent = mount.to_path_buf();
    let relative = dir.strip_prefix(mount).unwrap_or(dir);
    for part in relative.components() {
        let control = parent.join("cgroup.subtree_control");
        for controller in ["memory", "cpu"] {
            let enabled = std::fs::read_to_string(&control).unwrap_or_default();
            if !enabled.split_whitespace().any(|c| c == controller) {
                // Refused when the parent lacks it or has processes of its own: checked below.
                let _ = std::fs::write(&control, format!("+{controller}"));
                let enabled = std::fs::read_to_string(&control).unwrap_or_default();
                if !enabled.split_whitespace().any(|c| c == controller) {
                    return Err(CgroupError::NotEnabled {
                        controller,
                        path: parent.clone(),
                    });
                }
            }
        }
        parent.push(part);
        create(&parent)?;
    }
    Ok(())
}
