//! The jail's file system: a small tmpfs as the new root, the VM's files bind-mounted at the
//! same paths as on the host, its own `/dev/kvm` (and `/dev/net/tun` for a tap), a `/proc` of
//! its PID namespace; then `pivot_root` into it and the old root detached. Runs in the new
//! mount namespace, as root, before privileges are dropped.

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::spec::Bind;
use super::sys;

/// A step of building the jail's file system that failed.
#[derive(Debug, thiserror::Error)]
#[error("{step} {path}")]
pub struct MountError {
    step: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

fn at(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> MountError {
    let path = path.to_path_buf();
    move |source| MountError { step, path, source }
}

/// Where `path` (absolute) appears under the new root `root`.
fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn mkdirs(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
}

/// A character device node owned by the jailed user, readable and writable by it only.
#[derive(Debug, Clone, Copy)]
pub struct DevNode {
    pub path: &'static str,
    pub major: u32,
    pub minor: u32,
}

pub const KVM: DevNode = DevNode {
    path: "/dev/kvm",
    major: 10,
    minor: 232,
};

pub const TUN: DevNode = DevNode {
    path: "/dev/net/tun",
    major: 10,
    minor: 200,
};

/// Stops mount events from reaching the host: every mount of this namespace becomes a slave.
pub fn make_private_to_namespace() -> Result<(), MountError> {
    let root = Path::new("/");
    sys::mount(None, root, None, libc::MS_SLAVE | libc::MS_REC, None)
        .map_err(at("cannot make the mounts slaves:", root))
}

/// Creates the files the VMM creates (console file) on the host, owned by the jailed user.
pub fn precreate(files: &[PathBuf], uid: u32, gid: u32) -> Result<(), MountError> {
    for file in files {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(file)
            .map_err(at("cannot create", file))?;
        std::os::unix::fs::chown(file, Some(uid), Some(gid)).map_err(at("cannot chown", file))?;
    }
    Ok(())
}

/// Builds the new root on `root` (an existing folder): tmpfs, binds, device nodes, `/proc`.
pub fn build_root(
    root: &Path,
    binds: &[Bind],
    nodes: &[DevNode],
    uid: u32,
    gid: u32,
) -> Result<(), MountError> {
    sys::mount(
        None,
        root,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("mode=0755,size=1m,nr_inodes=1024"),
    )
    .map_err(at("cannot mount the jail's tmpfs on", root))?;
    for bind in binds {
        bind_mount(root, bind)?;
    }
    for node in nodes {
        make_node(root, node, uid, gid)?;
    }
    let proc = inside(root, Path::new("/proc"));
    mkdirs(&proc).map_err(at("cannot create", &proc))?;
    sys::mount(
        None,
        &proc,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .map_err(at("cannot mount /proc on", &proc))
}

/// Shows the host's `bind.path` at the same path under `root`.
fn bind_mount(root: &Path, bind: &Bind) -> Result<(), MountError> {
    let source = &bind.path;
    let meta = std::fs::metadata(source).map_err(at("cannot bind", source))?;
    let target = inside(root, source);
    if meta.is_dir() {
        mkdirs(&target).map_err(at("cannot create", &target))?;
    } else {
        if let Some(parent) = target.parent() {
            mkdirs(parent).map_err(at("cannot create", parent))?;
        }
        std::fs::File::create(&target).map_err(at("cannot create", &target))?;
    }
    sys::mount(Some(source), &target, None, libc::MS_BIND, None)
        .map_err(at("cannot bind-mount", source))?;
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV;
    if !bind.writable {
        flags |= libc::MS_RDONLY;
    }
    sys::mount(None, &target, None, flags, None).map_err(at("cannot remount", &target))
}

fn make_node(root: &Path, node: &DevNode, uid: u32, gid: u32) -> Result<(), MountError> {
    let path = inside(root, Path::new(node.path));
    if let Some(parent) = path.parent() {
        mkdirs(parent).map_err(at("cannot create", parent))?;
    }
    let c_path = sys::cstring(&path).map_err(at("cannot create", &path))?;
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call; mknod(2) only reads it.
    let rc = unsafe {
        libc::mknod(
            c_path.as_ptr(),
            libc::S_IFCHR | 0o600,
            libc::makedev(node.major, node.minor),
        )
    };
    sys::check(rc.into()).map_err(at("cannot create the device node", &path))?;
    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(at("cannot chown", &path))
}

/// Makes `root` the root of this mount namespace and detaches the old root; the tmpfs is then
/// made read-only (the VMM writes only into its writable binds).
///
/// Where the host's root is the initial ramfs (rootfs: the nested-KVM runner, some embedded
/// systems), `pivot_root` is refused (EINVAL): the jail's root is then moved over `/` and the
/// process chroots into it, as `switch_root` does. The old root stays under it in this mount
/// namespace, out of reach: leaving a chroot needs CAP_SYS_CHROOT, which the jailed process
/// no longer has, and it holds no descriptor of the old root.
pub fn pivot_into(root: &Path) -> Result<(), MountError> {
    std::env::set_current_dir(root).map_err(at("cannot enter", root))?;
    let dot = sys::cstring(Path::new(".")).map_err(at("cannot pivot into", root))?;
    // SAFETY: both arguments are the NUL-terminated string "." that outlives the call; with the
    // current folder a mount point, pivot_root(".", ".") stacks the old root on the new one.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    match sys::check(rc) {
        Ok(_) => {
            // SAFETY: as above; detaches the old root, which sits on top of "." after the pivot.
            let rc = unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) };
            sys::check(rc.into()).map_err(at("cannot detach the old root from", root))?;
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::debug!("pivot_root refused (root on rootfs?): moving the jail over / instead");
            sys::mount(
                Some(Path::new(".")),
                Path::new("/"),
                None,
                libc::MS_MOVE,
                None,
            )
            .map_err(at("cannot move the jail's root over / from", root))?;
            // SAFETY: "." is a NUL-terminated string that outlives the call; chroot(2) only
            // reads it.
            let rc = unsafe { libc::chroot(dot.as_ptr()) };
            sys::check(rc.into()).map_err(at("cannot chroot into", root))?;
        }
        Err(e) => return Err(at("cannot pivot_root into", root)(e)),
    }
    let slash = Path::new("/");
    std::env::set_current_dir(slash).map_err(at("cannot enter", slash))?;
    sys::mount(
        None,
        slash,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC,
        None,
    )
    .map_err(at("cannot make the jail's root read-only:", slash))
}
