//! The jail (`vmm --jail`): what a VMM process can reach if a guest takes over its device code.
//! Modelled on Firecracker's jailer, but done by the `vmm` process itself, first thing in
//! `main` while it has one thread and before it reads any guest-controlled input:
//!
//! 1. join a cgroup with memory and CPU limits ([`cgroup`]), set `RLIMIT_NOFILE` and
//!    `RLIMIT_CORE` = 0;
//! 2. new PID, IPC and UTS namespaces, and a new network namespace unless a tap device needs
//!    the host's;
//! 3. fork: the parent stays outside as the keeper ([`keeper`]), the child is PID 1 of the new
//!    PID namespace;
//! 4. the child, in a mount namespace of its own, builds a tmpfs root holding only the VM's files, bind-mounted at the same paths
//!    as on the host (so paths in a snapshot's saved config and in API requests mean the same
//!    inside and outside), `/dev/kvm` (and `/dev/net/tun`), `/proc`; `pivot_root` into it
//!    ([`mounts`]);
//! 5. it becomes the VM's unprivileged uid/gid with no capabilities and `no_new_privs`
//!    ([`privileges`]).
//!
//! Then the VMM goes on as usual (seccomp filters per thread on top). See docs/security.md.

mod cgroup;
mod keeper;
mod mounts;
mod privileges;
pub mod spec;
mod sys;

use std::path::PathBuf;

pub use cgroup::{CgroupError, Limits};
pub use keeper::SocketFile;
pub use mounts::MountError;
pub use privileges::PrivilegeError;
pub use spec::{Bind, JailConfig, NetNamespace, SpecError, VmNeeds};

/// Why the VMM could not jail itself.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("--jail needs root (it creates namespaces, device nodes and cgroups, then drops to uid {0})")]
    NotRoot(u32),
    #[error("--jail must be set up while the process has one thread ({0} found)")]
    Threads(usize),
    #[error("the jail folder {0} is not an empty folder")]
    BadRoot(PathBuf),
    #[error("cannot set up the cgroup")]
    Cgroup(#[from] CgroupError),
    #[error("cannot set the {0} limit")]
    Rlimit(&'static str, #[source] std::io::Error),
    #[error("cannot create the jail's namespaces")]
    Unshare(#[source] std::io::Error),
    #[error("cannot start the jailed process")]
    Fork(#[source] std::io::Error),
    #[error("cannot build the jail's file system")]
    Mount(#[from] MountError),
    #[error("cannot drop privileges")]
    Privileges(#[from] PrivilegeError),
}

/// The pid of the process that was started, when it is the keeper of this jailed one.
static KEEPER_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// The VMM's process ID as whoever started it sees it: its own, or, jailed (where it is PID 1
/// of its namespace), its keeper's — the process that was started, ends with it, and is the
/// one to signal.
pub fn process_id() -> u32 {
    KEEPER_PID.get().copied().unwrap_or_else(std::process::id)
}

/// Memory the VMM process may use beyond guest RAM when the agent sizes its cgroup.
pub const VMM_OVERHEAD_MIB: u64 = 128;

fn unshare(flags: libc::c_int) -> Result<(), JailError> {
    // SAFETY: unshare(2) takes flags only; the process has one thread (checked by `enter`).
    let rc = unsafe { libc::unshare(flags) };
    sys::check(rc.into()).map(drop).map_err(JailError::Unshare)
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Jails this process as `config` says, for a VM that needs `needs`. Returns in the jailed
/// process; the process that called it stays outside as the keeper and never returns (it exits
/// as the jailed VMM does). `api_socket`: a socket already bound, removed by the keeper at the
/// end.
pub fn enter(
    config: &JailConfig,
    needs: &VmNeeds,
    api_socket: Option<SocketFile>,
) -> Result<(), JailError> {
    let binds = spec::plan_binds(&config.binds, needs)?;
    let net = spec::net_namespace(config, needs)?;
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(JailError::NotRoot(config.uid));
    }
    let threads = thread_count();
    if threads != 1 {
        return Err(JailError::Threads(threads));
    }
    let empty_dir = std::fs::read_dir(&config.root).is_ok_and(|mut d| d.next().is_none());
    if !empty_dir {
        return Err(JailError::BadRoot(config.root.clone()));
    }
    if let Some(name) = &config.cgroup {
        let limits = Limits {
            memory_bytes: config.memory_mib.map(|m| m << 20),
            cpu_percent: config.cpu_percent,
        };
        cgroup::join(&config.cgroup_mount, name, limits)?;
    }
    privileges::set_rlimit(libc::RLIMIT_NOFILE, config.nofile)
        .map_err(|e| JailError::Rlimit("RLIMIT_NOFILE", e))?;
    privileges::set_rlimit(libc::RLIMIT_CORE, 0)
        .map_err(|e| JailError::Rlimit("RLIMIT_CORE", e))?;
    mounts::precreate(&needs.create, config.uid, config.gid)?;

    let mut flags = libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if net == NetNamespace::New {
        flags |= libc::CLONE_NEWNET;
    }
    unshare(flags)?;
    let keeper_pid = std::process::id();
    keeper::fork_keeper(api_socket).map_err(JailError::Fork)?;
    let _ = KEEPER_PID.set(keeper_pid);

    // The jailed process, PID 1 of its namespace. Its mount namespace is its own: a pivot_root
    // moves every process of the namespace, and the keeper must stay on the host's root.
    unshare(libc::CLONE_NEWNS)?;
    mounts::make_private_to_namespace()?;
    let mut nodes = vec![mounts::KVM];
    // A restore's taps are known only after the jail (`net=host` asks for them).
    if needs.tap || net == NetNamespace::Host {
        nodes.push(mounts::TUN);
    }
    mounts::build_root(&config.root, &binds, &nodes, config.uid, config.gid)?;
    mounts::pivot_into(&config.root)?;
    privileges::drop_to(config.uid, config.gid)?;
    tracing::info!(
        uid = config.uid,
        gid = config.gid,
        binds = binds.len(),
        ?net,
        "jailed"
    );
    Ok(())
}
