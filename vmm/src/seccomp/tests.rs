//! Tests of the filters. Anything that installs a filter runs in a child process (this test
//! binary run again for one test, with [`CHILD_ENV`] naming the case): a filter cannot be
//! removed, and a violation kills the whole process.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::api::types::ShutdownOutcome;
use crate::control::{VmControl, VmRequest, VmResponse};
use crate::stop::StopReason;
use crate::vmm::tests::{test_config, wait_for_console};
use crate::vmm::Vmm;

const CHILD_ENV: &str = "VIRMO_SECCOMP_TEST_CHILD";
const SURVIVED: &str = "seccomp-child-survived";

/// Runs test `name` (path below the crate root) alone in a child process.
fn run_child(name: &str) -> Output {
    let exe = std::env::current_exe().unwrap();
    Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .output()
        .unwrap()
}

fn in_child(name: &str) -> bool {
    std::env::var(CHILD_ENV).as_deref() == Ok(name)
}

/// In a child: a thread confined as `class` in `mode` opens a socket (a syscall no class
/// allows).
fn open_a_socket_confined(class: ThreadClass, mode: SeccompMode) {
    let filters = SeccompFilters::build(mode).unwrap();
    let opened = std::thread::spawn(move || {
        filters.apply(class).unwrap();
        std::net::UdpSocket::bind("127.0.0.1:0").is_ok()
    })
    .join()
    .unwrap();
    assert!(opened);
    println!("{SURVIVED}");
}

#[test]
fn vcpu_thread_is_killed_by_a_forbidden_syscall() {
    const NAME: &str = "seccomp::tests::vcpu_thread_is_killed_by_a_forbidden_syscall";
    if in_child(NAME) {
        open_a_socket_confined(ThreadClass::Vcpu, SeccompMode::On);
        return;
    }
    let output = run_child(NAME);
    assert_eq!(output.status.signal(), Some(libc::SIGSYS), "{output:?}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains(SURVIVED));
}

#[test]
fn every_class_kills_a_forbidden_syscall() {
    const NAME: &str = "seccomp::tests::every_class_kills_a_forbidden_syscall";
    if let Ok(class) = std::env::var("VIRMO_SECCOMP_TEST_CLASS") {
        if in_child(NAME) {
            let class = ThreadClass::ALL
                .into_iter()
                .find(|c| c.name() == class)
                .unwrap();
            open_a_socket_confined(class, SeccompMode::On);
            return;
        }
    }
    for class in ThreadClass::ALL {
        let output = Command::new(std::env::current_exe().unwrap())
            .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, NAME)
            .env("VIRMO_SECCOMP_TEST_CLASS", class.name())
            .output()
            .unwrap();
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGSYS),
            "{}: {output:?}",
            class.name()
        );
    }
}

#[test]
fn log_mode_lets_a_forbidden_syscall_through() {
    const NAME: &str = "seccomp::tests::log_mode_lets_a_forbidden_syscall_through";
    if in_child(NAME) {
        open_a_socket_confined(ThreadClass::Vcpu, SeccompMode::Log);
        return;
    }
    let output = run_child(NAME);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains(SURVIVED));
}

#[test]
fn off_mode_has_no_filters() {
    let filters = SeccompFilters::build(SeccompMode::Off).unwrap();
    assert!(filters.programs.is_empty());
    // Applying nothing is fine, and leaves this (test) thread unconfined.
    filters.apply(ThreadClass::Vcpu).unwrap();
    assert!(std::fs::File::open("/dev/null").is_ok());
}

#[test]
fn every_class_compiles_and_none_allows_dangerous_syscalls() {
    let filters = SeccompFilters::build(SeccompMode::On).unwrap();
    assert_eq!(filters.programs.len(), ThreadClass::ALL.len());
    for class in ThreadClass::ALL {
        let list = classes::allow_list(class);
        for &nr in classes::NEVER_ALLOWED {
            assert!(!list.contains(nr), "{} allows syscall {nr}", class.name());
        }
    }
}

#[test]
fn only_event_loop_threads_make_sockets_and_only_unix_ones() {
    const NAME: &str = "seccomp::tests::only_event_loop_threads_make_sockets_and_only_unix_ones";
    if in_child(NAME) {
        // The vsock device's syscalls on a confined event loop thread: socket(AF_UNIX) and
        // connect (to nothing here) are allowed; an AF_INET socket is killed
        // (`every_class_kills_a_forbidden_syscall`).
        // The stream calls the device makes: connect, accept4, read, write, shutdown.
        use std::io::{Read, Write};
        use std::os::unix::net::{UnixListener, UnixStream};
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let filters = SeccompFilters::build(SeccompMode::On).unwrap();
        let made = std::thread::spawn(move || {
            filters.apply(ThreadClass::VirtioEvents).unwrap();
            let err = UnixStream::connect("/nonexistent/virmo.sock").expect_err("nobody there");
            let mut ours = UnixStream::connect(&path).unwrap();
            let (mut theirs, _) = listener.accept().unwrap();
            ours.write_all(b"ping").unwrap();
            ours.shutdown(std::net::Shutdown::Write).unwrap();
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).unwrap();
            err.kind() == std::io::ErrorKind::NotFound && got == b"ping"
        })
        .join()
        .unwrap();
        assert!(made);
        println!("{SURVIVED}");
        return;
    }
    let output = run_child(NAME);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains(SURVIVED));
    for class in ThreadClass::ALL {
        let list = classes::allow_list(class);
        // The API thread starts a new event loop after a checkpoint: it inherits its filter.
        let expected = matches!(class, ThreadClass::VirtioEvents | ThreadClass::Api);
        assert_eq!(
            list.contains(libc::SYS_socket),
            expected,
            "{}",
            class.name()
        );
        assert_eq!(
            list.contains(libc::SYS_connect),
            expected,
            "{}",
            class.name()
        );
    }
}

#[test]
fn only_the_api_thread_opens_files() {
    // The API's connection threads write snapshots; no other thread opens anything.
    for class in ThreadClass::ALL {
        let list = classes::allow_list(class);
        let expected = class == ThreadClass::Api;
        assert_eq!(
            list.contains(libc::SYS_openat),
            expected,
            "{}",
            class.name()
        );
    }
}

#[test]
fn mode_parses_and_prints() {
    for mode in [SeccompMode::On, SeccompMode::Off, SeccompMode::Log] {
        assert_eq!(mode.to_string().parse::<SeccompMode>().unwrap(), mode);
    }
    assert_eq!(SeccompMode::default(), SeccompMode::On);
    let err = "strict".parse::<SeccompMode>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown seccomp mode `strict` (expected on, off or log)"
    );
}

/// The seccomp mode of a thread of this process ("2" = filter), from /proc.
fn thread_seccomp_state(name: &str) -> Option<String> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let status = std::fs::read_to_string(dir.join("status")).ok()?;
            return status
                .lines()
                .find_map(|l| l.strip_prefix("Seccomp:"))
                .map(|v| v.trim().to_owned());
        }
    }
    None
}

/// A real VM on the host's KVM with every thread confined: the vCPU runs the smoke guest (it
/// prints on COM1 and powers off through ACPI), the main thread waits and shuts the VM down.
#[test]
fn confined_vm_boots_prints_and_powers_off() {
    const NAME: &str = "seccomp::tests::confined_vm_boots_prints_and_powers_off";
    if in_child(NAME) {
        let Some((config, console)) = test_config("seccomp-poweroff", true) else {
            return;
        };
        init(SeccompMode::On).unwrap();
        let main = std::thread::spawn(move || {
            let vmm = Vmm::build(config).unwrap();
            vmm.start().unwrap();
            confine_current_thread(ThreadClass::Main);
            let reason = vmm.stop_signal().wait_timeout(Duration::from_secs(60));
            vmm.shut_down();
            reason
        });
        assert_eq!(main.join().unwrap(), Some(StopReason::PowerOff));
        assert_eq!(
            std::fs::read_to_string(&console).unwrap(),
            "VIRMO-GUEST-READY\n"
        );
        println!("{SURVIVED}");
        return;
    }
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("no /dev/kvm: skipping");
        return;
    }
    let output = run_child(NAME);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains(SURVIVED));
}

/// The control paths under their filters: a confined API thread pauses, resumes and forces a
/// shutdown of a running guest whose vCPU thread is confined.
#[test]
fn confined_api_thread_pauses_resumes_and_stops_a_confined_vcpu() {
    const NAME: &str =
        "seccomp::tests::confined_api_thread_pauses_resumes_and_stops_a_confined_vcpu";
    if in_child(NAME) {
        let Some((config, console)) = test_config("seccomp-control", false) else {
            return;
        };
        init(SeccompMode::On).unwrap();
        let vmm = Arc::new(Vmm::build(config).unwrap());
        vmm.start().unwrap();
        assert!(wait_for_console(&console, "VIRMO-GUEST-READY"));
        assert_eq!(thread_seccomp_state("vcpu0").as_deref(), Some("2"));
        let control = Arc::clone(&vmm);
        let answers = std::thread::spawn(move || {
            confine_current_thread(ThreadClass::Api);
            [
                control.handle(VmRequest::Pause),
                control.handle(VmRequest::Resume),
                control.handle(VmRequest::Shutdown {
                    timeout: Duration::from_millis(200),
                }),
            ]
        })
        .join()
        .unwrap();
        assert_eq!(answers[0], Ok(VmResponse::Done));
        assert_eq!(answers[1], Ok(VmResponse::Done));
        assert_eq!(
            answers[2],
            Ok(VmResponse::Shutdown(ShutdownOutcome::Forced))
        );
        assert_eq!(vmm.wait(), StopReason::ShutdownForced);
        vmm.shut_down();
        println!("{SURVIVED}");
        return;
    }
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("no /dev/kvm: skipping");
        return;
    }
    let output = run_child(NAME);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains(SURVIVED));
}
