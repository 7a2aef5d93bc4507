//! Dropping privileges: the VM's own unprivileged uid and gid with no supplementary groups, no
//! capability in any set (bounding and ambient included), `no_new_privs`, and resource limits.

use std::io;

use super::sys;

/// A step of dropping privileges that failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("cannot {0}")]
    Call(&'static str, #[source] io::Error),
    #[error("capabilities remain after dropping them (effective {effective:#x}, permitted {permitted:#x}, inheritable {inheritable:#x})")]
    CapabilitiesLeft {
        effective: u64,
        permitted: u64,
        inheritable: u64,
    },
}

fn call(what: &'static str) -> impl FnOnce(io::Error) -> PrivilegeError {
    move |e| PrivilegeError::Call(what, e)
}

/// Sets `resource`'s soft and hard limits to `value`.
pub fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `limit` is a valid rlimit that outlives the call; setrlimit(2) only reads it.
    let rc = unsafe { libc::setrlimit(resource, &limit) };
    sys::check(rc.into()).map(drop)
}

/// Becomes `uid`:`gid` for good, with no capabilities left and `no_new_privs` set.
pub fn drop_to(uid: u32, gid: u32) -> Result<(), PrivilegeError> {
    // The bounding set first: dropping from it needs CAP_SETPCAP, gone after setresuid.
    for cap in 0..64 {
        match sys::prctl(libc::PR_CAPBSET_DROP, cap) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => return Err(PrivilegeError::Call("drop from the bounding set", e)),
        }
    }
    // SAFETY: a zero-length group list; setgroups(2) reads nothing through the null pointer.
    let rc = unsafe { libc::setgroups(0, std::ptr::null()) };
    sys::check(rc.into()).map_err(call("clear the supplementary groups"))?;
    // SAFETY: setresgid(2) and setresuid(2) take integers only. glibc applies them to every
    // thread; the jail runs before any thread exists.
    let rc = unsafe { libc::setresgid(gid, gid, gid) };
    sys::check(rc.into()).map_err(call("set the group id"))?;
    // SAFETY: as above.
    let rc = unsafe { libc::setresuid(uid, uid, uid) };
    sys::check(rc.into()).map_err(call("set the user id"))?;
    sys::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    )
    .map_err(call("clear the ambient capabilities"))?;
    sys::clear_capabilities().map_err(call("clear the inheritable capabilities"))?;
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(call("set no_new_privs"))?;
    // A change of uid made the process non-dumpable, which gives its /proc files to root: the
    // VMM reads its own /proc/self/pagemap when it writes a snapshot. Core dumps stay off
    // (RLIMIT_CORE is 0), and no other process runs as this uid in this PID namespace.
    sys::prctl(libc::PR_SET_DUMPABLE, 1).map_err(call("set the process dumpable"))?;
    let (effective, permitted, inheritable) =
        sys::capabilities().map_err(call("read the capabilities"))?;
    if effective | permitted | inheritable != 0 {
        return Err(PrivilegeError::CapabilitiesLeft {
            effective,
            permitted,
            inheritable,
        });
    }
    Ok(())
}
