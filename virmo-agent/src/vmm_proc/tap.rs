//! The host end of a jailed VM's network device: a persistent tap the agent makes before the
//! VMM starts, owned by the VM's jail uid and gid, so that the jailed VMM (no capability)
//! attaches to it by name with `TUNSETIFF`; the kernel lets the tap's owner attach without
//! CAP_NET_ADMIN. The agent removes it (`TUNSETPERSIST` 0) once the VMM has ended.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Why a tap could not be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("tap name {0:?} is empty, too long or has a NUL")]
    BadName(String),
    #[error("cannot open /dev/net/tun")]
    Open(#[source] io::Error),
    #[error("{op} on tap {name} failed")]
    Ioctl {
        op: &'static str,
        name: String,
        #[source]
        source: io::Error,
    },
}

/// `TUNSETOWNER`, `TUNSETGROUP` and `TUNSETPERSIST` (`_IOW('T', 204|206|203, int)`), which the
/// libc crate does not name.
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
const TUNSETGROUP: libc::c_ulong = 0x4004_54ce;

/// Whether an interface `name` exists in the agent's network namespace.
pub fn exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Makes (or takes over) the persistent tap `name` with the flags the VMM's virtio-net uses
/// (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`), owned by `uid` and `gid`.
pub fn create_persistent(name: &str, uid: u32, gid: u32) -> Result<(), TapError> {
    let tun = attach(name)?;
    ioctl_int(&tun, TUNSETOWNER, "TUNSETOWNER", name, uid as libc::c_ulong)?;
    ioctl_int(&tun, TUNSETGROUP, "TUNSETGROUP", name, gid as libc::c_ulong)?;
    ioctl_int(&tun, TUNSETPERSIST, "TUNSETPERSIST", name, 1)?;
    tracing::info!(
        tap = name,
        uid,
        gid,
        "persistent tap made for the jailed VMM"
    );
    Ok(())
}

/// Removes the persistent tap `name` (nothing to do when there is none). Fails with `EBUSY`
/// while a VMM is still attached to it.
pub fn remove_persistent(name: &str) -> Result<(), TapError> {
    if !exists(name) {
        return Ok(());
    }
    let tun = attach(name)?;
    ioctl_int(&tun, TUNSETPERSIST, "TUNSETPERSIST", name, 0)?;
    // Closing the last descriptor of a tap that is not persistent deletes it.
    drop(tun);
    tracing::info!(tap = name, "tap removed");
    Ok(())
}

/// A /dev/net/tun descriptor attached to the tap `name` (created if it does not exist).
fn attach(name: &str) -> Result<File, TapError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(TapError::BadName(name.to_owned()));
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(TapError::Open)?;
    // SAFETY: `ifreq` is plain old data (integers, byte arrays, a union of those and a
    // pointer); all-zero bytes are a valid value of every field.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`; `ifr` is a valid, initialised
    // `ifreq` that outlives the call, and `tun` is an open /dev/net/tun descriptor.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    if rc < 0 {
        return Err(TapError::Ioctl {
            op: "TUNSETIFF",
            name: name.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(tun)
}

/// A tun ioctl that takes its integer argument by value.
fn ioctl_int(
    tun: &File,
    request: libc::c_ulong,
    op: &'static str,
    name: &str,
    value: libc::c_ulong,
) -> Result<(), TapError> {
    // SAFETY: TUNSETOWNER, TUNSETGROUP and TUNSETPERSIST take their argument as an integer
    // passed in place of the pointer; the kernel reads no memory of ours. `tun` is an open
    // /dev/net/tun descriptor attached to a tap.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), request, value) };
    if rc < 0 {
        return Err(TapError::Ioctl {
            op,
            name: name.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ioctl_numbers_are_the_kernels() {
        // _IOW('T', nr, int): direction write (1) << 30 | size 4 << 16 | 'T' << 8 | nr.
        let iow = |nr: libc::c_ulong| (1 << 30) | (4 << 16) | ((b'T' as libc::c_ulong) << 8) | nr;
        assert_eq!(TUNSETPERSIST, iow(203));
        assert_eq!(TUNSETOWNER, iow(204));
        assert_eq!(TUNSETGROUP, iow(206));
        assert_eq!(libc::TUNSETIFF as libc::c_ulong, iow(202));
    }

    #[test]
    fn bad_names_are_refused_before_any_system_call() {
        for name in ["", "a-name-longer-than-15", "nul\0"] {
            assert!(matches!(
                create_persistent(name, 1, 1),
                Err(TapError::BadName(_))
            ));
        }
        assert!(
            remove_persistent("virmo-none-x").is_ok(),
            "no such tap: nothing to do"
        );
    }

    /// Root only (CAP_NET_ADMIN): a tap made for a uid persists, is owned by it, and goes.
    #[test]
    fn a_persistent_tap_is_made_for_a_uid_and_removed() {
        if std::fs::metadata("/proc/self")
            .map_or(true, |m| std::os::unix::fs::MetadataExt::uid(&m) != 0)
            || !Path::new("/dev/net/tun").exists()
        {
            return;
        }
        let name = format!("vtest{}", std::process::id() % 100_000);
        if create_persistent(&name, 3_900_000_001, 3_900_000_002).is_err() {
            // A root without CAP_NET_ADMIN (a container): nothing to test here.
            return;
        }
        let owner = std::fs::read_to_string(format!("/sys/class/net/{name}/owner")).unwrap();
        let group = std::fs::read_to_string(format!("/sys/class/net/{name}/group")).unwrap();
        assert_eq!((owner.trim(), group.trim()), ("3900000001", "3900000002"));
        assert!(exists(&name), "persists with no descriptor open");
        remove_persistent(&name).unwrap();
        assert!(!exists(&name));
    }
}
