//! Checks a downloaded bundle and unpacks it into the image store, all or nothing: the files go
//! to a staging folder, are checked against the manifest, made durable, and the folder is
//! renamed to `images/<sha256>`; on any failure the staging folder is removed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use sha2::Digest;

use super::manifest::valid_file_name;
use super::{hex, Manifest, MANIFEST_NAME};
use crate::layout::{remove_all, sync_dir};

/// At most this many files in a bundle.
const MAX_ENTRIES: usize = 16;

/// Why a bundle was not installed.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// Not a bundle, damaged, or not matching its manifest (VirMO result 1402).
    #[error("the bundle is corrupt: {0}")]
    Corrupt(String),
    /// Larger than the device accepts (1405).
    #[error("the bundle's content is larger than the {0} bytes allowed")]
    TooLarge(u64),
    #[error("cannot write the image")]
    Io(#[source] std::io::Error),
}

fn corrupt(why: impl Into<String>) -> ExtractError {
    ExtractError::Corrupt(why.into())
}

/// Installs the bundle file `bundle`, whose sha256 is `digest` (hex), into
/// `images/<digest>/`; returns its manifest. An image already installed is reused.
pub fn install(
    bundle: &Path,
    images: &Path,
    digest: &str,
    max_bytes: u64,
) -> Result<Manifest, ExtractError> {
    let target = images.join(digest);
    if let Ok(text) = std::fs::read_to_string(target.join(MANIFEST_NAME)) {
        if let Ok(manifest) = Manifest::parse(&text) {
            return Ok(manifest);
        }
        // A damaged install (cannot happen with the rename below, but be safe): redo it.
        remove_all(&target).map_err(ExtractError::Io)?;
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let staging = images.join(format!(".{digest}.staging.{}.{n}", std::process::id()));
    remove_all(&staging).map_err(ExtractError::Io)?;
    std::fs::create_dir_all(&staging).map_err(ExtractError::Io)?;
    let result = unpack(bundle, &staging, max_bytes).and_then(|manifest| {
        sync_dir(&staging).map_err(ExtractError::Io)?;
        std::fs::rename(&staging, &target).map_err(ExtractError::Io)?;
        sync_dir(images).map_err(ExtractError::Io)?;
        Ok(manifest)
    });
    if result.is_err() {
        let _ = remove_all(&staging);
    }
    result
}

/// Removes staging folders left by an interrupted install.
pub fn clean_staging(images: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(images)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().contains(".staging.") {
            remove_all(&entry.path())?;
        }
    }
    Ok(())
}

fn entry_name(path: &Path) -> Option<String> {
    let mut components = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir));
    let Some(Component::Normal(name)) = components.next() else {
        return None;
    };
    if components.next().is_some() {
        return None;
    }
    name.to_str().map(str::to_owned)
}

fn unpack(bundle: &Path, staging: &Path, max_bytes: u64) -> Result<Manifest, ExtractError> {
    let file = std::fs::File::open(bundle).map_err(ExtractError::Io)?;
    let mut archive = tar::Archive::new(file);
    let mut digests: BTreeMap<String, String> = BTreeMap::new();
    let mut manifest_text = None;
    let mut total: u64 = 0;
    let entries = archive
        .entries()
        .map_err(|e| corrupt(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(format!("damaged archive: {e}")))?;
        let path: PathBuf = entry
            .path()
            .map_err(|e| corrupt(format!("bad entry name: {e}")))?
            .into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() && entry_name(&path).is_none() {
            continue; // "./"
        }
        if !kind.is_file() {
            return Err(corrupt(format!(
                "`{}` is not a regular file",
                path.display()
            )));
        }
        let name = entry_name(&path)
            .ok_or_else(|| corrupt(format!("`{}` is not a plain file name", path.display())))?;
        if name != MANIFEST_NAME && !valid_file_name(&name) {
            return Err(corrupt(format!("`{name}` is not a plain file name")));
        }
        if digests.contains_key(&name) || (name == MANIFEST_NAME && manifest_text.is_some()) {
            return Err(corrupt(format!("`{name}` appears twice")));
        }
        if digests.len() >= MAX_ENTRIES {
            return Err(corrupt("too many files"));
        }
        let size = entry.header().size().map_err(|e| corrupt(e.to_string()))?;
        total = total.saturating_add(size);
        if total > max_bytes {
            return Err(ExtractError::TooLarge(max_bytes));
        }
        if name == MANIFEST_NAME {
            let mut text = String::new();
            entry
                .by_ref()
                .take(64 * 1024)
                .read_to_string(&mut text)
                .map_err(|e| corrupt(format!("manifest: {e}")))?;
            manifest_text = Some(text);
            continue;
        }
        let digest = copy_hashed(&mut entry, &staging.join(&name))?;
        digests.insert(name, digest);
    }
    let text = manifest_text.ok_or_else(|| corrupt(format!("no {MANIFEST_NAME}")))?;
    let manifest = Manifest::parse(&text).map_err(|e| corrupt(format!("manifest: {e}")))?;
    for (name, expected) in &manifest.files {
        match digests.get(name) {
            None => return Err(corrupt(format!("`{name}` is missing"))),
            Some(found) if !found.eq_ignore_ascii_case(expected) => {
                return Err(corrupt(format!("`{name}` does not match its sha256")));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = digests.keys().find(|n| !manifest.files.contains_key(*n)) {
        return Err(corrupt(format!("`{extra}` is not in the manifest")));
    }
    crate::layout::write_atomic(&staging.join(MANIFEST_NAME), text.as_bytes())
        .map_err(ExtractError::Io)?;
    Ok(manifest)
}

fn copy_hashed(from: &mut impl Read, to: &Path) -> Result<String, ExtractError> {
    let mut out = std::fs::File::create(to).map_err(ExtractError::Io)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(format!("damaged archive: {e}"))),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(ExtractError::Io)?;
    }
    out.sync_all().map_err(ExtractError::Io)?;
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::create::{write_bundle, BundleSpec};
    use crate::test_support::TempDir;

    fn spec(dir: &Path) -> BundleSpec {
        std::fs::write(dir.join("k"), b"kernel bytes").unwrap();
        std::fs::write(dir.join("i"), b"initramfs bytes").unwrap();
        BundleSpec {
            name: "t".into(),
            version: "1".into(),
            kernel: dir.join("k"),
            initramfs: Some(dir.join("i")),
            disk: None,
            cmdline: "console=ttyS0".into(),
            ready_marker: None,
            vcpus: 1,
            memory_mib: 64,
            storage_mib: 8,
            entropy: true,
            removable_mib: 0,
            network: false,
        }
    }

    #[test]
    fn a_good_bundle_installs_once() {
        let dir = TempDir::new();
        let images = dir.path().join("images");
        std::fs::create_dir_all(&images).unwrap();
        let bundle = dir.path().join("b.tar");
        let digest = hex(&write_bundle(&spec(dir.path()), &bundle).unwrap());
        let manifest = install(&bundle, &images, &digest, 1 << 20).unwrap();
        assert_eq!(manifest.boot.kernel, "kernel");
        assert_eq!(
            std::fs::read(images.join(&digest).join("kernel")).unwrap(),
            b"kernel bytes"
        );
        assert_eq!(
            install(&bundle, &images, &digest, 1 << 20).unwrap(),
            manifest
        );
        assert_eq!(std::fs::read_dir(&images).unwrap().count(), 1);
    }

    #[test]
    fn corrupt_or_oversized_bundles_leave_nothing_behind() {
        let dir = TempDir::new();
        let images = dir.path().join("images");
        std::fs::create_dir_all(&images).unwrap();
        let bundle = dir.path().join("b.tar");
        write_bundle(&spec(dir.path()), &bundle).unwrap();
        // Flip a byte of the kernel's content (after the manifest's and the kernel's headers).
        let mut bytes = std::fs::read(&bundle).unwrap();
        let at = bytes
            .windows(12)
            .position(|w| w == b"kernel bytes")
            .unwrap();
        bytes[at] ^= 0xff;
        let damaged = dir.path().join("damaged.tar");
        std::fs::write(&damaged, &bytes).unwrap();
        assert!(matches!(
            install(&damaged, &images, "d1", 1 << 20),
            Err(ExtractError::Corrupt(why)) if why.contains("sha256")
        ));
        std::fs::write(&damaged, b"this is not a tar archive at all").unwrap();
        assert!(matches!(
            install(&damaged, &images, "d2", 1 << 20),
            Err(ExtractError::Corrupt(_))
        ));
        assert!(matches!(
            install(&bundle, &images, "d3", 10),
            Err(ExtractError::TooLarge(10))
        ));
        assert_eq!(std::fs::read_dir(&images).unwrap().count(), 0);
    }

    #[test]
    fn entry_names_must_be_plain() {
        assert_eq!(entry_name(Path::new("./kernel")).as_deref(), Some("kernel"));
        assert_eq!(entry_name(Path::new("kernel")).as_deref(), Some("kernel"));
        assert_eq!(entry_name(Path::new("a/kernel")), None);
        assert_eq!(entry_name(Path::new("../kernel")), None);
        assert_eq!(entry_name(Path::new("/kernel")), None);
    }
}
