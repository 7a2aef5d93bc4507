//! Fetching and unpacking Debian packages with the system's own apt and dpkg.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The package whose dependency names the current cloud kernel image package.
pub const KERNEL_META_PACKAGE: &str = "linux-image-cloud-amd64";

/// Resolves a meta package to the versioned package it depends on
/// (e.g. `linux-image-cloud-amd64` -> `linux-image-6.1.0-56-cloud-amd64`).
pub fn resolve_dependency(meta: &str, prefix: &str) -> Result<String> {
    let out = Command::new("apt-cache")
        .args(["depends", meta])
        .output()
        .context("running apt-cache (is this a Debian system?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|dep| dep.starts_with(prefix))
        .map(str::to_string)
        .with_context(|| {
            format!(
                "apt-cache knows no package {meta} with a dependency {prefix}*; \
                 run `apt-get update` first"
            )
        })
}

/// The candidate version apt would fetch for `package`.
pub fn candidate_version(package: &str) -> Result<String> {
    let out = Command::new("apt-cache")
        .args(["policy", package])
        .output()
        .context("running apt-cache")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Candidate: "))
        .find(|v| *v != "(none)")
        .map(str::to_string)
        .with_context(|| {
            format!(
                "package {package} cannot be had from apt (run `apt-get update`, check the name)"
            )
        })
}

/// Downloads `package` (once) into `cache`, unpacks it into `cache/<package>/`, returns that folder.
pub fn fetch_and_unpack(package: &str, cache: &Path) -> Result<PathBuf> {
    let unpacked = cache.join(package);
    let stamp = unpacked.join(".unpacked");
    if stamp.exists() {
        return Ok(unpacked);
    }
    std::fs::create_dir_all(cache)?;
    let deb = find_deb(package, cache)?;
    let deb = match deb {
        Some(deb) => deb,
        None => {
            let status = Command::new("apt-get")
                .args(["download", "-q", package])
                .current_dir(cache)
                .status()
                .context("running apt-get download")?;
            if !status.success() {
                bail!("`apt-get download {package}` failed ({status}); run `apt-get update` or check the package name");
            }
            find_deb(package, cache)?
                .with_context(|| format!("apt-get download {package} left no .deb file"))?
        }
    };
    if unpacked.exists() {
        std::fs::remove_dir_all(&unpacked)?;
    }
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&unpacked)
        .status()
        .context("running dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb -x {} failed ({status})", deb.display());
    }
    std::fs::write(&stamp, b"")?;
    Ok(unpacked)
}

fn find_deb(package: &str, cache: &Path) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    for entry in std::fs::read_dir(cache)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}
