//! The allow-list of each thread class. Each list was found by running the VMM under
//! `strace -f` through boot, console I/O, pause/resume, shutdown, stop and the API (see
//! docs/seccomp.md), and by reading the code each thread runs.

use super::kvm_ioctls;
use super::rules::AllowList;
use super::ThreadClass;

/// The allow-list of `class`.
pub fn allow_list(class: ThreadClass) -> AllowList {
    let mut list = runtime();
    match class {
        ThreadClass::Main => list.extend(&main_thread()),
        ThreadClass::Vcpu => list.extend(&vcpu()),
        ThreadClass::Api => list.extend(&api()),
        ThreadClass::ConsoleInput => list.extend(&console_input()),
        ThreadClass::VirtioEvents => list.extend(&virtio_events()),
    };
    list
}

/// What every thread of a Rust program needs: memory (never executable), locks, time, logging
/// to stderr, signals' return, thread exit, abort.
fn runtime() -> AllowList {
    let mut list = AllowList::new();
    list.always(&[
        libc::SYS_brk,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_madvise,
        libc::SYS_futex,
        libc::SYS_sched_yield,
        // The C library sizes a new malloc arena by the CPUs the thread may run on.
        libc::SYS_sched_getaffinity,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_getrandom,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sigaltstack,
        libc::SYS_restart_syscall,
        libc::SYS_write,
        libc::SYS_writev,
        libc::SYS_close,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ]);
    // No executable memory: PROT_EXEC must be clear.
    let exec = libc::PROT_EXEC as u64;
    list.when_masked(libc::SYS_mmap, 2, exec, 0);
    list.when_masked(libc::SYS_mprotect, 2, exec, 0);
    // Debug builds of std check that a descriptor is open before closing it.
    list.when_arg_is(libc::SYS_fcntl, 1, &[libc::F_GETFD as u64]);
    // abort() after a failed assertion in the C library or `std::process::abort`.
    list.when_arg_is(libc::SYS_tgkill, 2, &[libc::SIGABRT as u64]);
    list
}

/// The signal that kicks vCPUs out of `KVM_RUN`.
fn kick_signal() -> u64 {
    vmm_sys_util::signal::SIGRTMIN() as u64
}

fn ioctls(list: &mut AllowList, requests: &[u64]) {
    list.when_arg_is(libc::SYS_ioctl, 1, requests);
}

/// A vCPU thread: `KVM_RUN` and the device emulation of port and MMIO exits (console output to
/// stdout or a file, interrupts through irqfd eventfds, the stop signal).
fn vcpu() -> AllowList {
    let mut list = AllowList::new();
    ioctls(&mut list, &kvm_ioctls::vcpu_run());
    list
}

/// The API server's accept thread and its connection threads (they inherit its filter). The
/// connection threads carry out VM requests: pause/resume (kick the vCPUs), shutdown (the power
/// button's eventfd), stop, and the process exit after the answer.
fn api() -> AllowList {
    let mut list = AllowList::new();
    list.always(&[
        libc::SYS_accept4,
        libc::SYS_read,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_shutdown,
        // Starting a connection thread, and the new thread's own set-up.
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
    ]);
    list.when_arg_is(
        libc::SYS_setsockopt,
        2,
        &[libc::SO_RCVTIMEO as u64, libc::SO_SNDTIMEO as u64],
    );
    list.when_arg_is(libc::SYS_prctl, 0, &[libc::PR_SET_NAME as u64]);
    list.when_arg_is(libc::SYS_tgkill, 2, &[kick_signal()]);
    // A snapshot reads the paused VM's state on the connection thread.
    ioctls(&mut list, &kvm_ioctls::vm_state_save());
    list.extend(&snapshot_files());
    // After a snapshot that keeps the VM, the connection thread starts a new virtio event loop
    // (epoll instance, exit eventfd): that thread inherits this filter too.
    list.always(&[libc::SYS_epoll_create1, libc::SYS_eventfd2]);
    // Duplicating descriptors (F_DUPFD_CLOEXEC), and glibc's `fdopendir` (F_GETFL) when the
    // previous snapshot folder is removed; found in the runner with `--seccomp log`.
    list.always(&[libc::SYS_fcntl]);
    list.extend(&virtio_events());
    list
}

/// Writing a snapshot folder atomically (`snapshot::store`): /dev/kvm (the MSR list), the
/// files of a temporary folder, `/proc/self/pagemap` (which pages the guest touched), durable
/// writes, the atomic rename, removing the previous snapshot.
fn snapshot_files() -> AllowList {
    let mut list = AllowList::new();
    list.always(&[
        libc::SYS_openat,
        libc::SYS_mkdir,
        libc::SYS_mkdirat,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_pwritev,
        libc::SYS_lseek,
        libc::SYS_ftruncate,
        libc::SYS_fadvise64,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_getdents64,
        libc::SYS_rename,
        libc::SYS_renameat,
        libc::SYS_renameat2,
        libc::SYS_unlink,
        libc::SYS_unlinkat,
        libc::SYS_rmdir,
    ]);
    list
}

/// The stdin reader: reads the console input and queues it in the UART (which may raise its
/// interrupt through an irqfd eventfd).
fn console_input() -> AllowList {
    let mut list = AllowList::new();
    list.always(&[libc::SYS_read]);
    list
}

/// The main thread once the VM runs: waits for the stop signal, stops the vCPU threads (kick,
/// join), removes the API socket file, reports and exits.
fn main_thread() -> AllowList {
    let mut list = AllowList::new();
    list.always(&[libc::SYS_unlink, libc::SYS_unlinkat]);
    list.when_arg_is(libc::SYS_tgkill, 2, &[kick_signal()]);
    list
}

/// The virtio event loop thread (queue eventfds, tap, disk files, entropy).
fn virtio_events() -> AllowList {
    let mut list = AllowList::new();
    list.always(&[
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_ctl,
        libc::SYS_read,
        libc::SYS_readv,
        libc::SYS_pread64,
        libc::SYS_preadv,
        libc::SYS_pwrite64,
        libc::SYS_pwritev,
        libc::SYS_fdatasync,
        libc::SYS_fsync,
    ]);
    list.extend(&vsock());
    list
}

/// The vsock device's host sockets, served on the event loop (`devices::virtio::vsock`):
/// accepting host connections on its listener, connecting to `<uds>_<port>` for the guest
/// (a Unix socket only: `socket` is allowed with `AF_UNIX` alone), reading (`recvfrom`),
/// writing (`sendto`: std writes sockets with `send(MSG_NOSIGNAL)`) and half-closing
/// (`shutdown`) the streams.
fn vsock() -> AllowList {
    let mut list = AllowList::new();
    list.always(&[
        libc::SYS_accept4,
        libc::SYS_connect,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_shutdown,
    ]);
    list.when_arg_is(libc::SYS_socket, 0, &[libc::AF_UNIX as u64]);
    list
}

/// Syscalls no thread of the VMM may make; used by tests to check the lists stay narrow.
/// (`socket` and `connect`: only the threads that may run the virtio event loop, for the vsock
/// device's Unix sockets; see `tests::only_event_loop_threads_make_sockets_and_only_unix_ones`.)
#[cfg(test)]
pub const NEVER_ALLOWED: &[libc::c_long] = &[
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_fork,
    libc::SYS_vfork,
    libc::SYS_ptrace,
    libc::SYS_open,
    libc::SYS_mount,
    libc::SYS_init_module,
    libc::SYS_setuid,
    libc::SYS_kill,
];
