//! Bad VMM input is refused with a message that names the problem; nothing crashes.

use std::time::Duration;

use virmo_tests::{code, exit_status, TempDir, TestEnv};

const BOOT: Duration = Duration::from_secs(60);

/// Starts a VMM that must refuse to start; returns what it printed.
fn refused(guest: virmo_tests::GuestBuilder) -> String {
    let mut guest = guest.spawn();
    let status = guest.wait_exit(Duration::from_secs(30));
    let out = guest.transcript();
    assert_eq!(code(status), exit_status::BAD_CONFIG, "{out}");
    out.to_lowercase()
}

#[test]
fn kernel_that_is_neither_bzimage_nor_elf() {
    let env = TestEnv::get();
    let dir = TempDir::new("bad-kernel");
    let bogus = dir.path().join("not-a-kernel");
    std::fs::write(&bogus, vec![0x42u8; 64 * 1024]).unwrap();
    let out = refused(env.guest("report").kernel(&bogus));
    assert!(out.contains("kernel"), "{out}");
}

#[test]
fn missing_initramfs() {
    let env = TestEnv::get();
    let out = refused(
        env.guest("report")
            .initramfs(Some("/nonexistent/initramfs".into())),
    );
    assert!(out.contains("initramfs"), "{out}");
}

#[test]
fn zero_vcpus() {
    let env = TestEnv::get();
    let out = refused(env.guest("report").vcpus(0));
    assert!(out.contains("vcpu"), "{out}");
}

#[test]
fn more_vcpus_than_kvm_allows() {
    let env = TestEnv::get();
    let out = refused(env.guest("report").vcpus(4096));
    assert!(out.contains("vcpu"), "{out}");
}

#[test]
fn memory_too_small() {
    let env = TestEnv::get();
    let out = refused(env.guest("report").memory_mib(1));
    assert!(out.contains("memory"), "{out}");
}

#[test]
fn memory_larger_than_the_host_has() {
    let env = TestEnv::get();
    let out = refused(env.guest("report").memory_mib(64 * 1024 * 1024));
    assert!(out.contains("memory"), "{out}");
}

#[test]
fn api_socket_already_in_use() {
    let env = TestEnv::get();
    let mut first = env.guest("idle").spawn();
    first.wait_for("VIRMO-IDLE", BOOT);
    let socket = first.api_socket.clone();
    let mut second = env.guest("idle");
    second.api_socket = false;
    let second = second
        .arg("--api-socket")
        .arg(socket.to_string_lossy().to_string());
    let out = refused(second);
    assert!(out.contains("socket") && out.contains("in use"), "{out}");
    assert!(first.is_running(), "the first VM must be unharmed");
}
