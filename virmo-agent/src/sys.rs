//! The few system calls the standard library does not wrap: signals, advisory file locks, FIFOs
//! and free disk space. Each `unsafe` block states why it is sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn path_cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Sends `signal` to the process `pid`. `Ok(false)` when no such process exists.
pub fn kill(pid: u32, signal: i32) -> io::Result<bool> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    if pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a process id",
        ));
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; a positive pid names
    // one process (never a group), as checked above.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(err)
    }
}

pub const SIGKILL: i32 = libc::SIGKILL;

/// Takes an exclusive advisory lock on `file` without waiting; `Ok(false)` when another process
/// holds it. The lock lasts as long as the file stays open.
pub fn try_lock_exclusive(file: &std::fs::File) -> io::Result<bool> {
    // SAFETY: flock(2) on a file descriptor we own (borrowed from `file`, open for the call's
    // duration); no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Creates a FIFO at `path` with `mode`.
pub fn mkfifo(path: &Path, mode: u32) -> io::Result<()> {
    let c_path = path_cstring(path)?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call; mkfifo(3) only
    // reads it.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), mode as libc::mode_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes available to an unprivileged user on the file system holding `path`.
pub fn available_bytes(path: &Path) -> io::Result<u64> {
    let c_path = path_cstring(path)?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a valid NUL-terminated string; `stat` points to writable memory of
    // the size statvfs(3) fills, and is only read after a successful call.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised the whole struct.
    let stat = unsafe { stat.assume_init() };
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_with_signal_zero_tells_whether_a_process_exists() {
        assert!(kill(std::process::id(), 0).unwrap());
        assert!(kill(0, 0).is_err());
    }

    #[test]
    fn a_second_lock_on_the_same_file_is_refused() {
        let dir = crate::test_support::TempDir::new();
        let path = dir.path().join("lock");
        let first = std::fs::File::create(&path).unwrap();
        let second = std::fs::File::open(&path).unwrap();
        assert!(try_lock_exclusive(&first).unwrap());
        assert!(!try_lock_exclusive(&second).unwrap());
        drop(first);
        assert!(try_lock_exclusive(&second).unwrap());
    }

    #[test]
    fn fifos_and_free_space() {
        use std::os::unix::fs::FileTypeExt;
        let dir = crate::test_support::TempDir::new();
        let path = dir.path().join("fifo");
        mkfifo(&path, 0o600).unwrap();
        assert!(std::fs::metadata(&path).unwrap().file_type().is_fifo());
        assert!(available_bytes(dir.path()).unwrap() > 0);
    }
}
