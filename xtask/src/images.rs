//! `cargo xtask images`: the test guests, built from Debian packages.
//!
//! Output in `build/images/`: `bzImage` (the cloud kernel), `vmlinux` (its uncompressed ELF, for
//! PVH boot), `initramfs.cpio.gz` (busybox, the virtio/vsock/ACPI modules, `/init`, the
//! scenarios of `guest-images/`, the static `vsock-tool` at `/bin/vsock-tool` and `hostile-tool` at
//! `/bin/hostile-tool`). Rebuilt only when an input changes (package versions, recipe files).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flate2::write::GzEncoder;

use crate::cpio::CpioWriter;
use crate::debian;
use crate::kernel;
use crate::modules::ModuleTree;
use crate::paths;

/// Bumped when the way images are assembled changes, so caches are rebuilt.
const RECIPE_VERSION: u32 = 1;

/// The built images.
#[derive(Debug, Clone)]
pub struct Images {
    pub dir: PathBuf,
    pub bzimage: PathBuf,
    pub vmlinux: PathBuf,
    pub initramfs: PathBuf,
    /// The unpacked kernel package (its modules serve the runner too).
    pub kernel_root: PathBuf,
    pub kernel_release: String,
    /// The unpacked busybox-static package.
    pub busybox_root: PathBuf,
}

/// Fetches the packages and builds the images unless they are up to date.
pub fn build() -> Result<Images> {
    let cache = paths::build_dir().join("debs");
    let kernel_pkg = debian::resolve_dependency(debian::KERNEL_META_PACKAGE, "linux-image-")?;
    let kernel_version = debian::candidate_version(&kernel_pkg)?;
    let busybox_version = debian::candidate_version("busybox-static")?;
    let kernel_root = debian::fetch_and_unpack(&kernel_pkg, &cache)?;
    let busybox_root = debian::fetch_and_unpack("busybox-static", &cache)?;
    let kernel_release = kernel_pkg.trim_start_matches("linux-image-").to_string();

    let dir = paths::build_dir().join("images");
    let images = Images {
        bzimage: dir.join("bzImage"),
        vmlinux: dir.join("vmlinux"),
        initramfs: dir.join("initramfs.cpio.gz"),
        dir: dir.clone(),
        kernel_root,
        kernel_release,
        busybox_root,
    };

    let recipe = paths::workspace_root().join("guest-images");
    let vsock_tool =
        std::fs::read(crate::cargo::build_vsock_tool()?).context("reading vsock-tool")?;
    let hostile_tool =
        std::fs::read(crate::cargo::build_hostile_tool()?).context("reading hostile-tool")?;
    let mut hasher = DefaultHasher::new();
    vsock_tool.hash(&mut hasher);
    hostile_tool.hash(&mut hasher);
    (
        RECIPE_VERSION,
        &kernel_pkg,
        &kernel_version,
        &busybox_version,
    )
        .hash(&mut hasher);
    hash_tree(&recipe, &mut hasher)?;
    let stamp = format!("{:016x}\n", hasher.finish());
    let stamp_path = dir.join("stamp");
    if std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str())
        && images.initramfs.exists()
    {
        return Ok(images);
    }

    std::fs::create_dir_all(&dir)?;
    eprintln!(
        "xtask: building guest images ({kernel_pkg} {kernel_version}, busybox {busybox_version})"
    );
    let vmlinuz = images
        .kernel_root
        .join(format!("boot/vmlinuz-{}", images.kernel_release));
    std::fs::copy(&vmlinuz, &images.bzimage)
        .with_context(|| format!("copying {}", vmlinuz.display()))?;
    kernel::extract_vmlinux(&images.bzimage, &images.vmlinux)?;
    let initramfs = guest_initramfs(
        &images,
        &recipe,
        &[("vsock-tool", &vsock_tool), ("hostile-tool", &hostile_tool)],
    )?;
    write_atomically(&images.initramfs, &initramfs)?;
    std::fs::write(dir.join("kernel-release"), &images.kernel_release)?;
    write_atomically(&stamp_path, stamp.as_bytes())?;
    Ok(images)
}

/// The modules of the kernel package, by name.
pub fn module_tree(images: &Images) -> Result<ModuleTree> {
    ModuleTree::scan(
        &images
            .kernel_root
            .join(format!("lib/modules/{}", images.kernel_release)),
    )
}

/// `tools`: static programs put in `/bin` by name.
fn guest_initramfs(images: &Images, recipe: &Path, tools: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    let mut cpio = CpioWriter::new();
    for dir in [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "etc",
        "mnt",
        "lib/modules",
    ] {
        cpio.dir(dir);
    }
    add_busybox(&mut cpio, &images.busybox_root)?;
    for (name, bytes) in tools {
        cpio.file(&format!("bin/{name}"), 0o755, bytes);
    }
    cpio.file(
        "init",
        0o755,
        &std::fs::read(recipe.join("init")).context("reading guest-images/init")?,
    );

    let wanted_text = std::fs::read_to_string(recipe.join("modules.txt"))
        .context("reading guest-images/modules.txt")?;
    let wanted: Vec<&str> = wanted_text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    add_modules(&mut cpio, images, &wanted)?;

    let scenarios = recipe.join("scenarios");
    let mut entries: Vec<_> = std::fs::read_dir(&scenarios)
        .with_context(|| format!("reading {}", scenarios.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().to_string();
        cpio.file(
            &format!("scenarios/{name}"),
            0o755,
            &std::fs::read(entry.path())?,
        );
    }

    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&cpio.finish())?;
    Ok(gz.finish()?)
}

/// Puts `wanted` and their dependencies under /lib/modules/, with `load-order` listing them
/// dependencies first (the /init scripts insmod them in that order).
pub fn add_modules(cpio: &mut CpioWriter, images: &Images, wanted: &[&str]) -> Result<()> {
    let mut order = String::new();
    for (name, path) in module_tree(images)?.load_order(wanted)? {
        cpio.file(
            &format!("lib/modules/{name}.ko"),
            0o644,
            &std::fs::read(&path)?,
        );
        order.push_str(&name);
        order.push('\n');
    }
    cpio.file("lib/modules/load-order", 0o644, order.as_bytes());
    Ok(())
}

/// Puts the static busybox at /bin/busybox; /init installs its applet links at boot.
pub fn add_busybox(cpio: &mut CpioWriter, busybox_root: &Path) -> Result<()> {
    let busybox = std::fs::read(busybox_root.join("bin/busybox")).context("reading busybox")?;
    cpio.file("bin/busybox", 0o755, &busybox);
    cpio.symlink("bin/sh", "busybox");
    Ok(())
}

fn hash_tree(dir: &Path, hasher: &mut DefaultHasher) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        entry.file_name().hash(hasher);
        if path.is_dir() {
            hash_tree(&path, hasher)?;
        } else {
            std::fs::read(&path)?.hash(hasher);
        }
    }
    Ok(())
}

/// Write to a temporary file, fsync, rename over `path`.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
    Ok(())
}
