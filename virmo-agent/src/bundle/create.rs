//! Builds an image bundle from a kernel, an initramfs and a disk image.

use std::path::{Path, PathBuf};

use super::manifest::{Boot, Devices, Resources, FORMAT};
use super::{hex, sha256_file, Manifest, MANIFEST_NAME};

/// What goes into a bundle.
#[derive(Debug, Clone)]
pub struct BundleSpec {
    pub name: String,
    pub version: String,
    pub kernel: PathBuf,
    pub initramfs: Option<PathBuf>,
    pub disk: Option<PathBuf>,
    pub cmdline: String,
    pub ready_marker: Option<String>,
    pub vcpus: u8,
    pub memory_mib: u64,
    pub storage_mib: u64,
    pub entropy: bool,
    pub removable_mib: u64,
    pub network: bool,
}

/// Writes the bundle of `spec` to `out` (atomically); returns its sha256 (the `PkgHash`).
pub fn write_bundle(spec: &BundleSpec, out: &Path) -> std::io::Result<[u8; 32]> {
    let mut files = vec![("kernel", spec.kernel.clone())];
    if let Some(initramfs) = &spec.initramfs {
        files.push(("initramfs", initramfs.clone()));
    }
    if let Some(disk) = &spec.disk {
        files.push(("disk.img", disk.clone()));
    }
    let mut digests = std::collections::BTreeMap::new();
    for (name, path) in &files {
        digests.insert((*name).to_owned(), hex(&sha256_file(path)?));
    }
    let manifest = Manifest {
        format: FORMAT,
        name: spec.name.clone(),
        version: spec.version.clone(),
        boot: Boot {
            kernel: "kernel".into(),
            initramfs: spec.initramfs.as_ref().map(|_| "initramfs".into()),
            cmdline: spec.cmdline.clone(),
            ready_marker: spec.ready_marker.clone(),
            kernel_version: None,
        },
        resources: Resources {
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            storage_mib: spec.storage_mib,
        },
        disk: spec.disk.as_ref().map(|_| "disk.img".into()),
        devices: Devices {
            entropy: spec.entropy,
            removable_mib: spec.removable_mib,
            network: spec.network,
        },
        files: digests,
    };
    manifest
        .check()
        .map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidInput, why))?;
    let tmp = out.with_extension(format!("tmp.{}", std::process::id()));
    {
        let file = std::fs::File::create(&tmp)?;
        let mut builder = tar::Builder::new(file);
        let text = manifest.to_toml();
        let mut header = tar::Header::new_ustar();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, MANIFEST_NAME, text.as_bytes())?;
        for (name, path) in &files {
            builder.append_path_with_name(path, name)?;
        }
        builder.into_inner()?.sync_all()?;
    }
    std::fs::rename(&tmp, out)?;
    sha256_file(out)
}
