//! `vmm --jail` with real guests: the jailed VMM runs as its own uid with no capabilities, in
//! namespaces of its own, under cgroup limits, sees only its VM's files, cannot signal other
//! processes; and a jailed guest boots, suspends and resumes (jailed again) where it stopped.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use virmo_tests::{code, exit_status, Guest, TempDir, TestEnv};
use vmm::api::client::VmmClient;

const BOOT: Duration = Duration::from_secs(90);
const STEP: Duration = Duration::from_secs(60);

/// One jailed VM's host-side folders and identity.
struct Jail {
    uid: u32,
    root: TempDir,
    vm_dir: TempDir,
    cgroup: String,
}

impl Jail {
    fn new(uid: u32) -> Self {
        let jail = Self {
            uid,
            root: TempDir::new("jail-root"),
            vm_dir: TempDir::new("jail-vm"),
            cgroup: format!("virmo-jail-test/vm-{uid}-{}", std::process::id()),
        };
        std::os::unix::fs::chown(jail.vm_dir.path(), Some(uid), Some(uid)).expect("chown");
        jail
    }

    /// The `--jail` argument: the VM folder writable, the guest memory + the overhead, one CPU.
    fn arg(&self, memory_mib: u64) -> String {
        format!(
            "{},uid={u},gid={u},bind={},cgroup={},memory-mib={},cpu-percent=100",
            self.root.path().display(),
            self.vm_dir.path().display(),
            self.cgroup,
            memory_mib + vmm::jail::VMM_OVERHEAD_MIB,
            u = self.uid,
        )
    }
}

/// The guest images, readable by the jailed users (as the agent makes its images).
fn env() -> TestEnv {
    let env = TestEnv::get();
    for image in [env.bzimage(), env.initramfs()] {
        std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    env
}

fn boot(env: &TestEnv, jail: &Jail, scenario: &str, marker: &str) -> Guest {
    let mut guest = env
        .guest(scenario)
        .memory_mib(128)
        .arg("--jail")
        .arg(jail.arg(128))
        .spawn();
    guest.wait_for(marker, BOOT);
    guest
}

/// The jailed VMM: the keeper's only child.
fn jailed_pid(guest: &Guest) -> u32 {
    let keeper = guest.pid();
    let children: Vec<u32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            rest.split_whitespace().nth(1) == Some(&keeper.to_string())
        })
        .collect();
    assert_eq!(children.len(), 1, "the keeper {keeper} has one child");
    children[0]
}

/// The value of `key:` in /proc/`pid`/status.
fn status_field(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in the status of {pid}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn namespace(pid: &str, kind: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).expect("namespace link")
}

#[test]
fn jail_the_vmm_runs_as_its_uid_with_no_capabilities_in_its_namespaces_and_cgroup() {
    let env = env();
    let jail = Jail::new(61_001);
    let mut guest = boot(&env, &jail, "idle", "VIRMO-IDLE");
    let pid = jailed_pid(&guest);
    let uid = jail.uid.to_string();
    for key in ["Uid", "Gid"] {
        assert_eq!(status_field(pid, key), [uid.as_str(); 4].join(" "), "{key}");
    }
    assert_eq!(status_field(pid, "Groups"), "");
    for key in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(pid, key), "0000000000000000", "{key}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(
        status_field(pid, "Seccomp"),
        "2",
        "the main thread is confined"
    );
    // PID 1 of its own PID namespace.
    assert_eq!(status_field(pid, "NSpid"), format!("{pid} 1"));
    for kind in ["pid", "mnt", "net", "ipc", "uts"] {
        assert_ne!(
            namespace(&pid.to_string(), kind),
            namespace("self", kind),
            "{kind} namespace"
        );
    }
    // Its root holds the VM's files only.
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap());
    assert!(inside(&env.bzimage()).is_file());
    assert!(inside(&env.initramfs()).is_file());
    assert!(inside(jail.vm_dir.path()).is_dir());
    assert!(inside(Path::new("/dev/kvm")).exists());
    for absent in [
        "/etc",
        "/usr",
        "/bin",
        "/sys",
        "/dev/net/tun",
        "/dev/mem",
        "/virmo/bin",
    ] {
        assert!(!inside(Path::new(absent)).exists(), "{absent} in the jail");
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let limit = |name: &str| {
        let line = limits.lines().find(|l| l.starts_with(name)).expect(name);
        line[name.len()..]
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
    };
    assert_eq!(limit("Max open files"), ["2048", "2048"]);
    assert_eq!(limit("Max core file size"), ["0", "0"]);
    // Its cgroup: memory and CPU limited.
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    assert!(cgroup.contains(&jail.cgroup), "{cgroup}");
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (memory, cpu) = if v2 {
        let dir = Path::new("/sys/fs/cgroup").join(&jail.cgroup);
        (dir.join("memory.max"), dir.join("cpu.max"))
    } else {
        let dir = |c: &str| Path::new("/sys/fs/cgroup").join(c).join(&jail.cgroup);
        (
            dir("memory").join("memory.limit_in_bytes"),
            dir("cpu").join("cpu.cfs_quota_us"),
        )
    };
    let read = |p: &Path| std::fs::read_to_string(p).expect("cgroup file");
    assert_eq!(read(&memory).trim(), ((128 + 128) << 20).to_string());
    assert!(read(&cpu).starts_with("100000"), "{}", read(&cpu));
    // The API answers; a stop ends keeper and VMM with status 0, and the socket is removed.
    let client = VmmClient::new(&guest.api_socket);
    client.wait_ready(Duration::from_secs(30)).expect("API");
    assert_eq!(
        client.info().expect("info").pid,
        guest.pid(),
        "the keeper's pid"
    );
    client.stop().expect("stop");
    assert_eq!(code(guest.wait_exit(STEP)), exit_status::OK);
    assert!(
        !guest.api_socket.exists(),
        "the keeper removed the API socket"
    );
    remove_cgroup(&jail.cgroup);
}

fn remove_cgroup(name: &str) {
    for controller in ["", "memory", "cpu"] {
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(controller).join(name));
    }
}

/// What the probe found that it should not have: one bit per check.
mod probe {
    pub const HOST_FILE_VISIBLE: i32 = 1;
    pub const OTHER_VM_FILES_VISIBLE: i32 = 2;
    pub const OWN_FILES_MISSING: i32 = 4;
    pub const SIGNALLED_SOMEONE: i32 = 8;
    pub const SIGNALLED_THE_TEST: i32 = 16;
    pub const SIGNALLED_OTHER_VMM: i32 = 32;
    pub const SETUP_FAILED: i32 = 64;
}

/// Runs, in a child process that enters the jailed VMM's namespaces and takes its uid and gid
/// (no capabilities), the checks a guest that took over the VMM could make. Returns the bits
/// of [`probe`] that failed.
fn probe_as_jailed(
    pid: u32,
    uid: u32,
    own_file: &Path,
    other_vm_file: &Path,
    other_pid: u32,
) -> i32 {
    let c = |s: &str| CString::new(s).unwrap();
    let ns: Vec<CString> = ["mnt", "pid", "net", "ipc", "uts"]
        .iter()
        .map(|k| c(&format!("/proc/{pid}/ns/{k}")))
        .collect();
    let root = c(&format!("/proc/{pid}/root"));
    // A host file for sure (the runner's root has no /etc/passwd): the test binary itself.
    let host_file = c(std::env::current_exe().unwrap().to_str().unwrap());
    let own = c(own_file.to_str().unwrap());
    let other = c(other_vm_file.to_str().unwrap());
    let test_pid = std::process::id() as libc::pid_t;
    // SAFETY: the child makes only async-signal-safe calls (open, setns, fchdir, chroot, fork,
    // setres[ug]id, access, kill, waitpid, _exit) on memory prepared before the fork, then exits.
    unsafe {
        let child = libc::fork();
        assert!(child >= 0, "fork");
        if child == 0 {
            // Every descriptor first: once in the jail's mount namespace, /proc is its own.
            let mut fds = [0; 5];
            for (fd, path) in fds.iter_mut().zip(&ns) {
                *fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            }
            let root_fd = libc::open(root.as_ptr(), libc::O_PATH | libc::O_DIRECTORY);
            if root_fd < 0 || fds.iter().any(|fd| *fd < 0) {
                libc::_exit(probe::SETUP_FAILED);
            }
            for fd in fds {
                if libc::setns(fd, 0) != 0 {
                    libc::_exit(probe::SETUP_FAILED);
                }
                libc::close(fd);
            }
            // The VMM's own root (pivoted, or chrooted where the host root is the rootfs).
            if libc::fchdir(root_fd) != 0 || libc::chroot(c".".as_ptr()) != 0 {
                libc::_exit(probe::SETUP_FAILED);
            }
            // Only a child enters the PID namespace.
            let grandchild = libc::fork();
            if grandchild == 0 {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(uid, uid, uid) != 0
                    || libc::setresuid(uid, uid, uid) != 0
                {
                    libc::_exit(probe::SETUP_FAILED);
                }
                let mut found = 0;
                if libc::access(host_file.as_ptr(), libc::F_OK) == 0 {
                    found |= probe::HOST_FILE_VISIBLE;
                }
                if libc::access(other.as_ptr(), libc::F_OK) == 0 {
                    found |= probe::OTHER_VM_FILES_VISIBLE;
                }
                if libc::access(own.as_ptr(), libc::R_OK | libc::W_OK) != 0 {
                    found |= probe::OWN_FILES_MISSING;
                }
                // Every process it may signal but PID 1 (the VMM) and itself: none.
                if libc::kill(-1, 0) == 0 {
                    found |= probe::SIGNALLED_SOMEONE;
                }
                if libc::kill(test_pid, 0) == 0 {
                    found |= probe::SIGNALLED_THE_TEST;
                }
                if libc::kill(other_pid as libc::pid_t, 0) == 0 {
                    found |= probe::SIGNALLED_OTHER_VMM;
                }
                libc::_exit(found);
            }
            let mut status = 0;
            if grandchild < 0 || libc::waitpid(grandchild, &mut status, 0) != grandchild {
                libc::_exit(probe::SETUP_FAILED);
            }
            libc::_exit(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                probe::SETUP_FAILED
            });
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(child, &mut status, 0), child);
        assert!(libc::WIFEXITED(status), "probe status {status:#x}");
        libc::WEXITSTATUS(status)
    }
}

#[test]
fn jail_a_jailed_vmm_cannot_see_host_files_or_other_vms_or_signal_processes() {
    let env = env();
    let (a, b) = (Jail::new(61_011), Jail::new(61_012));
    let mut guest_a = boot(&env, &a, "idle", "VIRMO-IDLE");
    let mut guest_b = boot(&env, &b, "counter", "VIRMO-COUNTER=");
    let (pid_a, pid_b) = (jailed_pid(&guest_a), jailed_pid(&guest_b));
    let own_file = a.vm_dir.path().join("scratch");
    std::fs::write(&own_file, b"mine").unwrap();
    std::os::unix::fs::chown(&own_file, Some(a.uid), Some(a.uid)).unwrap();
    let other_file = b.vm_dir.path().join("scratch");
    std::fs::write(&other_file, b"theirs").unwrap();
    // From VM a's jail, VM b's VMM is looked for by its host pid and by its keeper's.
    for other in [pid_b, guest_b.pid()] {
        let found = probe_as_jailed(pid_a, a.uid, &own_file, &other_file, other);
        assert_eq!(
            found, 0,
            "the probe in VM a's jail found {found:#b} (see mod probe)"
        );
    }
    // The probe itself is real: on the host (no jail) the same checks find everything.
    let found = probe_as_jailed(std::process::id(), 0, &own_file, &other_file, pid_b);
    let expected = probe::HOST_FILE_VISIBLE
        | probe::OTHER_VM_FILES_VISIBLE
        | probe::SIGNALLED_SOMEONE
        | probe::SIGNALLED_THE_TEST
        | probe::SIGNALLED_OTHER_VMM;
    assert_eq!(
        found, expected,
        "the unjailed probe as root sees and signals"
    );
    // VM b kept running meanwhile; both stop cleanly.
    guest_b.wait_for("VIRMO-COUNTER=", STEP);
    for (guest, jail) in [(&mut guest_a, &a), (&mut guest_b, &b)] {
        VmmClient::new(&guest.api_socket).stop().expect("stop");
        assert_eq!(code(guest.wait_exit(STEP)), exit_status::OK);
        remove_cgroup(&jail.cgroup);
    }
}

/// The counter value of a console line `VIRMO-COUNTER=<n>`.
fn counter(line: &str) -> u64 {
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("counter {line:?}"))
}

fn suspend(guest: &mut Guest, dir: &Path) -> u64 {
    let client = VmmClient::new(&guest.api_socket).with_snapshot_timeout(Duration::from_secs(120));
    client.wait_ready(Duration::from_secs(30)).expect("API");
    client
        .snapshot(dir, false)
        .unwrap_or_else(|e| panic!("jailed suspend failed: {e}\n{}", guest.transcript()));
    assert_eq!(
        code(guest.wait_exit(STEP)),
        exit_status::OK,
        "{}",
        guest.transcript()
    );
    let lines = guest.transcript_lines();
    let last = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("VIRMO-COUNTER="))
        .expect("a counter line");
    counter(last)
}

#[test]
fn jail_a_jailed_guest_boots_suspends_and_resumes_jailed_twice() {
    let env = env();
    let jail = Jail::new(61_021);
    let snapshot = jail.vm_dir.path().join("snapshot");
    let mut guest = boot(&env, &jail, "counter", "VIRMO-COUNTER=");
    guest.wait_for("VIRMO-COUNTER=", STEP);
    let mut last = suspend(&mut guest, &snapshot);
    for file in ["state.bin", "memory.bin", "manifest"] {
        assert!(snapshot.join(file).is_file(), "{file}");
    }
    for round in 0..2 {
        // Restored in a jail of its own again; the snapshot is read inside the jail at the
        // path it has outside.
        let mut restored = env
            .restore(&snapshot)
            .memory_restore(if round == 0 { "lazy" } else { "eager" })
            .arg("--jail")
            .arg(jail.arg(128))
            .spawn();
        let next = counter(&restored.wait_for("VIRMO-COUNTER=", STEP));
        assert!(
            next > last && next <= last + 3,
            "round {round}: the counter went from {last} to {next}\n{}",
            restored.transcript()
        );
        assert!(!restored.transcript().contains("VIRMO-GUEST-READY"));
        let pid = jailed_pid(&restored);
        assert_eq!(status_field(pid, "CapEff"), "0000000000000000");
        assert_eq!(status_field(pid, "Uid").split(' ').next(), Some("61021"));
        restored.wait_for("VIRMO-COUNTER=", STEP);
        last = suspend(&mut restored, &snapshot);
    }
    remove_cgroup(&jail.cgroup);
}
