//! The VMM's control API on its Unix socket, driven by the typed client, against a real guest.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use virmo_tests::{code, exit_status, Guest, TestEnv};
use vmm::api::client::VmmClient;
use vmm::api::types::{RunState, ShutdownOutcome};

const BOOT: Duration = Duration::from_secs(60);

fn counter_guest() -> (Guest, VmmClient) {
    let env = TestEnv::get();
    let mut guest = env.guest("counter").spawn();
    guest.wait_for("VIRMO-GUEST-READY", BOOT);
    let client = VmmClient::new(&guest.api_socket);
    client
        .wait_ready(Duration::from_secs(10))
        .expect("API ready");
    (guest, client)
}

fn last_counter(lines: &[String]) -> Option<u64> {
    lines
        .iter()
        .rev()
        .find_map(|l| l.split("VIRMO-COUNTER=").nth(1)?.trim().parse().ok())
}

#[test]
fn info_reports_the_vm() {
    let (mut guest, client) = counter_guest();
    let info = client.info().expect("info");
    assert_eq!(info.state, RunState::Running);
    assert_eq!(info.vcpus, 1);
    assert_eq!(info.memory_mib, 128);
    assert_eq!(info.pid, guest.pid());
    client.stop().expect("stop");
    assert_eq!(code(guest.wait_exit(BOOT)), exit_status::OK);
}

#[test]
fn pause_stops_guest_progress_and_resume_restarts_it() {
    let (mut guest, client) = counter_guest();
    guest.wait_for("VIRMO-COUNTER=3", BOOT);
    client.pause().expect("pause");
    assert_eq!(client.info().expect("info").state, RunState::Paused);
    // Lines already in flight when the pause took effect may still arrive; then nothing more.
    std::thread::sleep(Duration::from_millis(500));
    let before = last_counter(&guest.drain());
    std::thread::sleep(Duration::from_secs(2));
    let during = guest.drain();
    assert!(
        during.iter().all(|l| !l.contains("VIRMO-COUNTER=")),
        "the guest made progress while paused (last before: {before:?}): {during:?}"
    );
    client.resume().expect("resume");
    assert_eq!(client.info().expect("info").state, RunState::Running);
    let next: u64 = guest
        .wait_for("VIRMO-COUNTER=", Duration::from_secs(20))
        .trim()
        .parse()
        .expect("counter");
    if let Some(before) = before {
        assert!(next > before, "counter went from {before} to {next}");
    }
    client.stop().expect("stop");
    assert_eq!(code(guest.wait_exit(BOOT)), exit_status::OK);
}

#[test]
fn resume_of_a_running_vm_is_refused() {
    let (mut guest, client) = counter_guest();
    let err = client.resume().expect_err("resume of a running VM");
    assert!(
        err.to_string().contains("409") || err.to_string().to_lowercase().contains("state"),
        "{err}"
    );
    client.stop().expect("stop");
    assert_eq!(code(guest.wait_exit(BOOT)), exit_status::OK);
}

#[test]
fn graceful_shutdown_powers_the_guest_off() {
    let env = TestEnv::get();
    let mut guest = env.guest("idle").spawn();
    guest.wait_for("VIRMO-IDLE", BOOT);
    let client = VmmClient::new(&guest.api_socket);
    let outcome = client.shutdown(Duration::from_secs(30)).expect("shutdown");
    assert_eq!(outcome, ShutdownOutcome::Graceful, "{}", guest.transcript());
    assert_eq!(code(guest.wait_exit(BOOT)), exit_status::OK);
    assert!(guest.transcript().contains("power button pressed"));
}

#[test]
fn shutdown_is_forced_when_the_guest_ignores_the_power_button() {
    let env = TestEnv::get();
    let mut guest = env.guest("ignore-power-button").spawn();
    guest.wait_for("VIRMO-IGNORING-POWER-BUTTON", BOOT);
    let client = VmmClient::new(&guest.api_socket);
    let outcome = client.shutdown(Duration::from_secs(2)).expect("shutdown");
    assert_eq!(outcome, ShutdownOutcome::Forced);
    assert_eq!(code(guest.wait_exit(BOOT)), exit_status::OK);
}

#[test]
fn forced_stop_ends_the_vmm_at_once() {
    let (mut guest, client) = counter_guest();
    client.stop().expect("stop");
    assert_eq!(
        code(guest.wait_exit(Duration::from_secs(10))),
        exit_status::OK
    );
}

#[test]
fn malformed_requests_get_400_and_the_vm_keeps_running() {
    let (mut guest, client) = counter_guest();
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"PUT /v1/vm/shutdown HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n{nope}!",
        b"GET /v1/nothing-here HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut stream = UnixStream::connect(&guest.api_socket).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(raw).expect("write");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let status_line = answer.lines().next().unwrap_or_default().to_string();
        assert!(
            status_line.contains(" 400 ") || status_line.contains(" 404 "),
            "{raw:?} got {status_line:?}"
        );
    }
    assert_eq!(client.info().expect("info").state, RunState::Running);
    assert!(guest.is_running());
    client.stop().expect("stop");
    assert_eq!(code(guest.wait_exit(BOOT)), exit_status::OK);
}
