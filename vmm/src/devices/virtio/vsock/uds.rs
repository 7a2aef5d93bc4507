//! The host's Unix sockets of a vsock device: the listener at `uds_path` (host-initiated
//! connections), non-blocking accept, and non-blocking connects to `<uds_path>_<port>`
//! (guest-initiated connections). Raw syscalls so that the event loop thread needs only
//! `accept4`, `socket(AF_UNIX)` and `connect` (docs/seccomp.md).

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Why the listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UdsError {
    #[error("{0} is in use by a listening process")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    #[error("cannot remove the stale socket {path}")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Listens on `path`, non-blocking. A socket file nobody listens on any more (left by a VMM
/// that ended, e.g. after a suspend) is replaced; a live one is refused.
pub fn listen(path: &Path) -> Result<UnixListener, UdsError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(UdsError::NotASocket(path.to_owned()));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(UdsError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(|source| UdsError::RemoveStale {
            path: path.to_owned(),
            source,
        })?;
    }
    let bind = |source| UdsError::Bind {
        path: path.to_owned(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind)?;
    listener.set_nonblocking(true).map_err(bind)?;
    Ok(listener)
}

/// Accepts one connection as a non-blocking stream; `WouldBlock` when none is waiting.
pub fn accept(listener: &UnixListener) -> io::Result<UnixStream> {
    // SAFETY: accept4 on a listening socket we own, with no address buffer (both pointers
    // null is allowed); it returns a new descriptor or -1.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Connects to the Unix stream socket at `path` without blocking. A listener whose backlog is
/// full answers `WouldBlock` (treated as a refusal, like no listener at all).
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    // SAFETY: a plain socket call; it returns a new descriptor or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a valid sockaddr_un that outlives the call and `len` does not exceed
    // its size (checked above).
    let rc = unsafe {
        libc::connect(
            owned.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            len as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(owned))
}

/// The socket path of host port `port`: `<uds_path>_<port>`.
pub fn port_path(uds_path: &Path, port: u32) -> PathBuf {
    let mut name = uds_path.as_os_str().to_owned();
    name.push(format!("_{port}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};

    use super::*;

    #[test]
    fn listen_replaces_a_stale_socket_and_refuses_a_live_one() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("v.sock");
        let first = listen(&path).unwrap();
        assert!(matches!(listen(&path), Err(UdsError::InUse(_))));
        drop(first);
        // The file stays behind, as after a VMM that ended.
        assert!(path.exists());
        let listener = listen(&path).unwrap();
        assert!(matches!(accept(&listener), Err(e) if e.kind() == ErrorKind::WouldBlock));

        let mut client = UnixStream::connect(&path).unwrap();
        let mut accepted = accept(&listener).unwrap();
        client.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        std::thread::sleep(std::time::Duration::from_millis(10));
        assert_eq!(accepted.read(&mut b).unwrap(), 1);

        let file = dir.as_path().join("plain");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(listen(&file), Err(UdsError::NotASocket(_))));
    }

    #[test]
    fn connect_reaches_a_port_socket_and_fails_without_one() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let base = dir.as_path().join("v.sock");
        let path = port_path(&base, 52);
        assert!(path.to_string_lossy().ends_with("v.sock_52"));
        assert!(connect(&path).is_err(), "nobody listens yet");
        let listener = UnixListener::bind(&path).unwrap();
        let mut stream = connect(&path).unwrap();
        stream.write_all(b"hi").unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        let mut got = [0u8; 2];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
    }
}
