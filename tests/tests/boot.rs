//! The VMM boots the stock Debian cloud kernel on real KVM; the guest reports what it sees.

use std::time::Duration;

use virmo_tests::{code, exit_status, TestEnv};

const BOOT: Duration = Duration::from_secs(60);

fn reported(vcpus: u32, memory_mib: u64) -> (u32, u64) {
    let env = TestEnv::get();
    let mut guest = env
        .guest("report")
        .vcpus(vcpus)
        .memory_mib(memory_mib)
        .spawn();
    guest.wait_for("VIRMO-GUEST-READY", BOOT);
    let nproc = guest
        .wait_for("VIRMO-NPROC=", BOOT)
        .trim()
        .parse()
        .expect("nproc");
    let mem_kb = guest
        .wait_for("VIRMO-MEMTOTAL-KB=", BOOT)
        .trim()
        .parse()
        .expect("MemTotal");
    let status = guest.wait_exit(BOOT);
    assert_eq!(code(status), exit_status::OK, "{}", guest.transcript());
    (nproc, mem_kb)
}

/// MemTotal is RAM minus what the kernel keeps for itself (its image, page tables, memmap): the
/// Debian cloud kernel keeps ~33 MiB at 128 MiB and ~43 MiB at 1 GiB (QEMU's guests alike).
fn assert_memtotal(mem_kb: u64, memory_mib: u64) {
    let configured_kb = memory_mib * 1024;
    let kept_kb = configured_kb.saturating_sub(mem_kb);
    assert!(
        mem_kb <= configured_kb && kept_kb <= 64 * 1024,
        "MemTotal {mem_kb} kB for {memory_mib} MiB of guest RAM: the kernel would keep {kept_kb} kB"
    );
}

#[test]
fn one_vcpu_128_mib() {
    let (nproc, mem_kb) = reported(1, 128);
    assert_eq!(nproc, 1);
    assert_memtotal(mem_kb, 128);
}

#[test]
fn two_vcpus_1_gib() {
    let (nproc, mem_kb) = reported(2, 1024);
    assert_eq!(nproc, 2);
    assert_memtotal(mem_kb, 1024);
}

#[test]
fn pvh_boot_of_the_uncompressed_vmlinux() {
    let env = TestEnv::get();
    let mut guest = env.guest("report").kernel(env.vmlinux()).vcpus(2).spawn();
    guest.wait_for("VIRMO-GUEST-READY", BOOT);
    assert_eq!(guest.wait_for("VIRMO-NPROC=", BOOT).trim(), "2");
    assert_eq!(code(guest.wait_exit(BOOT)), exit_status::OK);
}

#[test]
fn bzimage_through_the_linux_boot_protocol() {
    // The default enters a bzImage at its PVH entry (the VMM decompresses it); this is the
    // kernel decompressing itself, entered through the Linux 64-bit boot protocol.
    let env = TestEnv::get();
    let mut guest = env
        .guest("report")
        .arg("--bzimage-boot")
        .arg("linux")
        .vcpus(2)
        .spawn();
    guest.wait_for("VIRMO-GUEST-READY", BOOT);
    assert_eq!(guest.wait_for("VIRMO-NPROC=", BOOT).trim(), "2");
    assert_eq!(code(guest.wait_exit(BOOT)), exit_status::OK);
}

#[test]
fn guest_reboot_ends_the_vmm_with_success() {
    let env = TestEnv::get();
    let mut guest = env.guest("reboot").spawn();
    guest.wait_for("VIRMO-GUEST-READY", BOOT);
    assert_eq!(
        code(guest.wait_exit(BOOT)),
        exit_status::OK,
        "{}",
        guest.transcript()
    );
}

#[test]
fn guest_panic_ends_the_vmm_with_the_panic_status() {
    let env = TestEnv::get();
    let mut guest = env.guest("panic").spawn();
    guest.wait_for("VIRMO-GUEST-READY", BOOT);
    let status = guest.wait_exit(BOOT);
    assert_eq!(
        code(status),
        exit_status::GUEST_PANIC,
        "{}",
        guest.transcript()
    );
}
