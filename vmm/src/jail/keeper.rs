//! The PID namespace: a process does not enter the namespace it creates, its next child does
//! (as PID 1). So the VMM forks once: the child goes on to become the jailed VMM, the parent —
//! the *keeper* — only waits for it, removes the API socket the jailed VMM cannot see any more,
//! and exits with the child's status (or dies by the child's signal). Whoever started the VMM
//! sees one process that behaves like an unjailed VMM: its pid, its exit status, its stderr.
//! SIGKILL of the keeper kills the VMM (the child's parent-death signal).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::sys;

/// The API socket file the keeper removes when the VMM ends, if it is still the same file.
#[derive(Debug, Clone)]
pub struct SocketFile {
    pub path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    pub fn of(path: PathBuf) -> io::Result<Self> {
        let meta = std::fs::symlink_metadata(&path)?;
        Ok(Self {
            path,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    fn remove_if_same(&self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Forks; returns in the child (PID 1 of the new PID namespace). The parent never returns.
/// Must be called while the process has one thread.
pub fn fork_keeper(socket: Option<SocketFile>) -> io::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is valid for two ints, which pipe2(2) writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    sys::check(rc.into())?;
    let [read_end, write_end] = fds;
    // SAFETY: the process has a single thread (the caller's contract), so the child is a full
    // copy with no lock held by a vanished thread; it only makes system calls and returns.
    let pid = unsafe { libc::fork() };
    sys::check(pid.into())?;
    if pid == 0 {
        // SAFETY: the child's own copy of the write end; closing it leaves the parent's open.
        unsafe { libc::close(write_end) };
        sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)?;
        // The parent may have died before the line above: then its write end is closed.
        let mut poll = libc::pollfd {
            fd: read_end,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `poll` is one valid pollfd; zero timeout.
        let rc = unsafe { libc::poll(&mut poll, 1, 0) };
        if rc != 0 {
            std::process::exit(1);
        }
        // SAFETY: our read end, no longer needed.
        unsafe { libc::close(read_end) };
        return Ok(());
    }
    // SAFETY: the parent's copy of the read end, not used by it.
    unsafe { libc::close(read_end) };
    keep(pid, socket)
}

/// The keeper: waits for `child`, cleans up, ends as it ended.
fn keep(child: libc::pid_t, socket: Option<SocketFile>) -> ! {
    let mut status = 0;
    loop {
        // SAFETY: `status` is valid for writes; waitpid(2) writes one int.
        let rc = unsafe { libc::waitpid(child, &mut status, 0) };
        if rc == child {
            break;
        }
        if rc < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            std::process::exit(crate::exit_status::VMM_ERROR);
        }
    }
    if let Some(socket) = socket {
        socket.remove_if_same();
    }
    if libc::WIFEXITED(status) {
        std::process::exit(libc::WEXITSTATUS(status));
    }
    let signal = libc::WTERMSIG(status);
    // SAFETY: restoring a signal's default action and raising it on ourselves: the keeper ends
    // by the same signal as the VMM (a seccomp kill shows as SIGSYS to its parent too).
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    std::process::exit(128 + signal);
}
