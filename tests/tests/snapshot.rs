//! Suspend (`PUT /v1/vm/snapshot`: save the VM, the VMM exits) and resume (`vmm --restore`: a
//! new VMM process continues the guest) with real stock-kernel guests.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use virmo_tests::{code, crc32, exit_status, Guest, TempDir, TestEnv};
use vmm::api::client::VmmClient;
use vmm::api::types::RunState;
use vmm::snapshot::manifest::Manifest;

const BOOT: Duration = Duration::from_secs(90);
const STEP: Duration = Duration::from_secs(60);

fn client_of(guest: &Guest) -> VmmClient {
    let client = VmmClient::new(&guest.api_socket).with_snapshot_timeout(Duration::from_secs(120));
    if let Err(e) = client.wait_ready(Duration::from_secs(30)) {
        panic!(
            "the VMM's API does not answer: {e}; output:\n{}",
            guest.transcript()
        );
    }
    client
}

/// Parses the number after `prefix` at the start of `rest` (e.g. "ok 12" with prefix "ok ").
fn number_after(rest: &str, prefix: &str) -> u64 {
    rest.trim()
        .strip_prefix(prefix)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("expected {prefix:?} and a number, got {rest:?}"))
}

/// The last value of `marker` in `lines`.
fn last_value(lines: &[String], marker: &str) -> Option<String> {
    lines
        .iter()
        .rev()
        .find_map(|l| Some(l.split(marker).nth(1)?.trim().to_string()))
}

/// Suspends the guest into `dir`: the answer comes, then the VMM process ends by itself with
/// status 0 and the snapshot is there.
fn suspend(guest: &mut Guest, dir: &Path) -> vmm::api::types::SnapshotInfo {
    let client = client_of(guest);
    let info = client
        .snapshot(dir, false)
        .unwrap_or_else(|e| panic!("suspend failed: {e}; output:\n{}", guest.transcript()));
    assert_eq!(info.dir, dir);
    let status = guest.wait_exit(Duration::from_secs(20));
    assert_eq!(code(status), exit_status::OK, "{}", guest.transcript());
    assert!(!guest.is_running(), "the VMM process is gone");
    assert!(
        !Path::new(&format!("/proc/{}", guest.pid())).exists(),
        "no process {} remains after suspend",
        guest.pid()
    );
    for file in ["state.bin", "memory.bin", "manifest"] {
        assert!(dir.join(file).is_file(), "{file} in {}", dir.display());
    }
    info
}

/// Restores `dir` and waits until the VMM reports the VM running.
fn resume(env: &TestEnv, dir: &Path, mode: &str, console_input: bool) -> Guest {
    let mut builder = env.restore(dir).memory_restore(mode);
    if console_input {
        builder = builder.with_console_input();
    }
    let guest = builder.spawn();
    let client = client_of(&guest);
    // The API answers from the moment the restored VM is built; its vCPUs start right after.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = client.info().expect("info after restore");
        if info.state == RunState::Running {
            break;
        }
        assert!(
            info.state == RunState::Created && Instant::now() < deadline,
            "restored VM in state {:?}: {}",
            info.state,
            guest.transcript()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    guest
}

fn memcheck_survives_three_suspends(vcpus: u32) {
    let env = TestEnv::get();
    let snapshots = TempDir::new("snap-memcheck");
    let dir = snapshots.path().join("vm");
    let mut guest = env.guest("memcheck").vcpus(vcpus).memory_mib(256).spawn();
    let written = guest.wait_for("VIRMO-BUFFER-WRITTEN=", BOOT);
    let mut last = number_after(&guest.wait_for("VIRMO-MEMCHECK=", BOOT), "ok ");
    for (round, mode) in ["lazy", "eager", "lazy"].into_iter().enumerate() {
        // Let the guest verify a few more times, then remember where it was.
        let deadline = Instant::now() + Duration::from_secs(30);
        while last < 2 + 3 * round as u64 && Instant::now() < deadline {
            last = number_after(&guest.wait_for("VIRMO-MEMCHECK=", STEP), "ok ");
        }
        let info = suspend(&mut guest, &dir);
        if let Some(seen) = last_value(&guest.transcript_lines(), "VIRMO-MEMCHECK=") {
            last = number_after(&seen, "ok ");
        }
        assert!(
            info.memory_bytes_written >= 64 << 20,
            "the 64 MiB buffer is in the snapshot: {info:?}"
        );
        assert!(
            info.memory_bytes_written < info.memory_size,
            "untouched memory is not written: {info:?}"
        );
        assert_eq!(info.memory_size, 256 << 20);

        guest = resume(&env, &dir, mode, false);
        let next = number_after(&guest.wait_for("VIRMO-MEMCHECK=", STEP), "ok ");
        assert!(
            next > last && next <= last + 3,
            "round {round} ({mode}): the check counter went from {last} to {next}; output:\n{}",
            guest.transcript()
        );
        last = next;
        assert!(
            !guest.transcript().contains("VIRMO-GUEST-READY"),
            "the restored guest did not boot again"
        );
    }
    // The buffer was written once, before the first suspend.
    assert!(!guest.transcript().contains("VIRMO-BUFFER-WRITTEN="));
    assert!(!written.is_empty());
    let again = number_after(&guest.wait_for("VIRMO-MEMCHECK=", STEP), "ok ");
    assert!(again > last);
    client_of(&guest).stop().expect("stop");
    assert_eq!(code(guest.wait_exit(STEP)), exit_status::OK);
}

#[test]
fn snapshot_memcheck_survives_three_suspends_1_vcpu() {
    memcheck_survives_three_suspends(1);
}

#[test]
fn snapshot_memcheck_survives_three_suspends_2_vcpus() {
    memcheck_survives_three_suspends(2);
}

fn counter_value(guest: &mut Guest) -> u64 {
    guest
        .wait_for("VIRMO-COUNTER=", STEP)
        .trim()
        .parse()
        .expect("counter value")
}

#[test]
fn snapshot_counter_continues_where_it_stopped() {
    let env = TestEnv::get();
    let snapshots = TempDir::new("snap-counter");
    let dir = snapshots.path().join("vm");
    let mut guest = env.guest("counter").vcpus(2).spawn();
    guest.wait_for("VIRMO-COUNTER=5", BOOT);
    suspend(&mut guest, &dir);
    let before: u64 = last_value(&guest.transcript_lines(), "VIRMO-COUNTER=")
        .and_then(|v| v.parse().ok())
        .expect("a counter before suspend");
    let mut guest = resume(&env, &dir, "lazy", false);
    let after = counter_value(&mut guest);
    assert!(
        after > before && after <= before + 5,
        "the counter went from {before} to {after}: {}",
        guest.transcript()
    );
    let later = counter_value(&mut guest);
    assert!(later > after);
    client_of(&guest).stop().expect("stop");
    assert_eq!(code(guest.wait_exit(STEP)), exit_status::OK);
}

/// Typed before the restored VM runs, a line reaches the guest: the VMM feeds its stdin to the
/// serial port only once the port holds its restored state (fed earlier, the restore replaced the
/// receive FIFO and the input was lost, so a console answer never came).
#[test]
fn snapshot_console_input_typed_while_resuming_is_not_lost() {
    let env = TestEnv::get();
    let snapshots = TempDir::new("snap-input");
    let dir = snapshots.path().join("vm");
    let mut guest = env
        .guest("work")
        .cmdline("console=ttyS0 quiet panic=-1 virmo.scenario=work virmo.work_mib=1")
        .with_console_input()
        .spawn();
    guest.wait_for("VIRMO-WORK-READY=", BOOT);
    guest.send("go\n");
    assert_eq!(guest.wait_for("VIRMO-WORK-DONE=", STEP).trim(), "1");
    suspend(&mut guest, &dir);
    for mode in ["eager", "lazy"] {
        let mut resumed = env
            .restore(&dir)
            .memory_restore(mode)
            .with_console_input()
            .spawn();
        // At once: the VM is still being restored.
        resumed.send("go\n");
        assert_eq!(
            resumed.wait_for("VIRMO-WORK-DONE=", STEP).trim(),
            "2",
            "{mode}: {}",
            resumed.transcript()
        );
        client_of(&resumed).stop().expect("stop");
        assert_eq!(code(resumed.wait_exit(STEP)), exit_status::OK);
    }
}

/// The hot set of a snapshot folder.
fn hot_set_of(dir: &Path) -> vmm::snapshot::hot_set::HotSet {
    let bytes = std::fs::read(dir.join("hotset.bin")).expect("hotset.bin");
    let memory_len = std::fs::metadata(dir.join("memory.bin"))
        .expect("memory.bin")
        .len();
    vmm::snapshot::hot_set::HotSet::decode(&bytes, memory_len).expect("a valid hot set")
}

/// A booted VM's snapshot has an empty hot set; resumed lazily, the guest rereads a 16 MiB file,
/// and the next snapshot's hot set covers at least that; resumed from it with
/// `--memory-restore hot`, the guest goes on with its files and its count.
#[test]
fn snapshot_hot_restore_preloads_what_the_guest_touched_and_continues() {
    let env = TestEnv::get();
    let snapshots = TempDir::new("snap-hot");
    let (first, second) = (snapshots.path().join("a"), snapshots.path().join("b"));
    let mut guest = env
        .guest("work")
        .cmdline("console=ttyS0 quiet panic=-1 virmo.scenario=work virmo.work_mib=16")
        .with_console_input()
        .spawn();
    guest.wait_for("VIRMO-WORK-READY=", BOOT);
    suspend(&mut guest, &first);
    assert!(hot_set_of(&first).is_empty(), "a booted VM has no hot set");

    let mut lazy = resume(&env, &first, "lazy", true);
    lazy.send("go\n");
    assert_eq!(lazy.wait_for("VIRMO-WORK-DONE=", STEP).trim(), "1");
    suspend(&mut lazy, &second);
    let hot = hot_set_of(&second);
    assert!(
        hot.bytes() >= 16 << 20,
        "the hot set covers the file reread: {} bytes in {} runs",
        hot.bytes(),
        hot.runs().len()
    );

    let mut resumed = resume(&env, &second, "hot", true);
    resumed.send("go\n");
    assert_eq!(
        resumed.wait_for("VIRMO-WORK-DONE=", STEP).trim(),
        "2",
        "{}",
        resumed.transcript()
    );
    client_of(&resumed).stop().expect("stop");
    assert_eq!(code(resumed.wait_exit(STEP)), exit_status::OK);
}

/// The guest's dmesg lines about lockups, stalls or clock trouble, from the console text.
fn clock_warnings(text: &str) -> Vec<String> {
    text.lines()
        // The test's own question about the clocksource, and its answer.
        .filter(|l| !l.contains("current_clocksource") && !l.contains("VIRMO-CLOCKSOURCE"))
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("soft lockup")
                || l.contains("self-detected stall")
                || l.contains("rcu_sched")
                || l.contains("rcu_preempt")
                || l.contains("hung task")
                || (l.contains("clocksource") && !l.contains("echo"))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn snapshot_shell_guest_keeps_processes_files_console_and_sane_clock_after_10_s() {
    let env = TestEnv::get();
    let snapshots = TempDir::new("snap-shell");
    let dir = snapshots.path().join("vm");
    let mut guest = env
        .guest("")
        .cmdline("console=ttyS0 quiet panic=-1")
        .vcpus(2)
        .with_console_input()
        .spawn();
    guest.wait_for("VIRMO-GUEST-READY", BOOT);
    std::thread::sleep(Duration::from_secs(1));
    // A tmpfs file, a background process, and the kernel log length before suspend. The shell
    // echoes what is typed: markers are split by `""` in the commands so only the output
    // matches them.
    guest.send("echo kept-$((6 * 7)) > /tmp/note\n");
    guest.send("(while true; do sleep 1; done) & echo VIRMO-BG\"\"=$!\n");
    let pid: u32 = guest
        .wait_for("VIRMO-BG=", STEP)
        .trim()
        .parse()
        .expect("background pid");
    guest.send("echo VIRMO-TIME-BEFORE\"\"=$(date +%s)\n");
    let time_before: u64 = guest
        .wait_for("VIRMO-TIME-BEFORE=", STEP)
        .trim()
        .parse()
        .expect("guest time before suspend");
    guest.send("echo VIRMO-DMESG-LINES\"\"=$(dmesg | wc -l)\n");
    let dmesg_lines: u32 = guest
        .wait_for("VIRMO-DMESG-LINES=", STEP)
        .trim()
        .parse()
        .expect("dmesg line count");
    suspend(&mut guest, &dir);
    let console_before = guest.transcript();

    std::thread::sleep(Duration::from_secs(10));
    let resumed_at = std::time::SystemTime::now();
    let mut guest = resume(&env, &dir, "lazy", true);
    guest.send("echo VIRMO-NOTE\"\"=$(cat /tmp/note)\n");
    assert_eq!(guest.wait_for("VIRMO-NOTE=", STEP).trim(), "kept-42");
    guest.send(&format!(
        "kill -0 {pid} && echo VIRMO-BG-ALIVE\"\"=yes || echo VIRMO-BG-ALIVE\"\"=no\n"
    ));
    assert_eq!(guest.wait_for("VIRMO-BG-ALIVE=", STEP).trim(), "yes");
    // Let timers, the watchdogs and RCU run for a while after the jump.
    std::thread::sleep(Duration::from_secs(8));
    guest.send("echo VIRMO-CLOCKSOURCE\"\"=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)\n");
    let clocksource = guest.wait_for("VIRMO-CLOCKSOURCE=", STEP);
    guest.send("echo VIRMO-GUEST-TIME\"\"=$(date +%s)\n");
    let guest_time: u64 = guest
        .wait_for("VIRMO-GUEST-TIME=", STEP)
        .trim()
        .parse()
        .expect("guest time");
    guest.send(&format!(
        "dmesg | tail -n +{} | sed 's/^/VIRMO-NEW-DMESG: /'; echo VIRMO-DMESG\"\"-END\n",
        dmesg_lines + 1
    ));
    guest.wait_for("VIRMO-DMESG-END", STEP);
    let host_time = resumed_at
        .duration_since(std::time::UNIX_EPOCH)
        .expect("host time")
        .as_secs();
    let transcript = guest.transcript();
    eprintln!(
        "guest clocksource {}; guest time {time_before} before suspend, {guest_time} ~9 s after resume; host time at resume {host_time}; after resume:\n{transcript}",
        clocksource.trim()
    );
    let warnings = clock_warnings(&transcript);
    assert!(
        warnings.is_empty(),
        "clock warnings after the 10 s suspension: {warnings:#?}\nbefore suspend:\n{console_before}"
    );
    // The guest's clock goes on from where it was (it moves forward by the suspended time only
    // where the host's KVM reports KVM_CLOCK_REALTIME, i.e. on a TSC-clocked host; see
    // docs/snapshot.md), and it runs while the guest runs.
    assert!(
        guest_time >= time_before + 8,
        "guest time went from {time_before} to {guest_time} across suspend and 8 s of running"
    );
    client_of(&guest).stop().expect("stop");
    assert_eq!(code(guest.wait_exit(STEP)), exit_status::OK);
}

/// Runs `vmm --restore` on `dir` with `args`; it must fail with status 1 and say `expected`.
fn assert_refused(env: &TestEnv, dir: &Path, args: &[&str], expected: &[&str]) {
    let mut builder = env.restore(dir);
    for arg in args {
        builder = builder.arg(*arg);
    }
    let mut vmm = builder.spawn();
    let status = vmm.wait_exit(Duration::from_secs(30));
    let output = vmm.transcript();
    assert_eq!(
        code(status),
        exit_status::BAD_CONFIG,
        "{args:?} on {}: {output}",
        dir.display()
    );
    let lower = output.to_lowercase();
    assert!(
        expected.iter().any(|e| lower.contains(&e.to_lowercase())),
        "{args:?} on {}: expected one of {expected:?} in:\n{output}",
        dir.display()
    );
}

fn copy_snapshot(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for file in ["state.bin", "memory.bin", "manifest"] {
        std::fs::copy(from.join(file), to.join(file)).expect("copy snapshot file");
    }
}

/// Rewrites the manifest so `state.bin` passes its file checksum again (to reach the checks
/// behind it).
fn reseal_state(dir: &Path) {
    let text = std::fs::read_to_string(dir.join("manifest")).expect("manifest");
    let mut manifest = Manifest::decode(&text).expect("manifest decodes");
    let state = std::fs::read(dir.join("state.bin")).expect("state.bin");
    manifest.state.len = state.len() as u64;
    manifest.state.crc32 = crc32(&state);
    std::fs::write(dir.join("manifest"), manifest.encode()).expect("write manifest");
}

#[test]
fn snapshot_damaged_foreign_or_mismatched_snapshots_are_refused() {
    let env = TestEnv::get();
    let snapshots = TempDir::new("snap-refused");
    let good = snapshots.path().join("good");
    let mut guest = env.guest("counter").spawn();
    guest.wait_for("VIRMO-COUNTER=3", BOOT);
    suspend(&mut guest, &good);

    let case = |name: &str| -> PathBuf {
        let dir = snapshots.path().join(name);
        copy_snapshot(&good, &dir);
        dir
    };

    // A flipped byte in the middle of the state body.
    let flipped = case("flipped");
    let mut state = std::fs::read(flipped.join("state.bin")).unwrap();
    let middle = state.len() / 2;
    state[middle] ^= 0x20;
    std::fs::write(flipped.join("state.bin"), &state).unwrap();
    assert_refused(&env, &flipped, &[], &["corrupted", "checksum"]);

    // The same flip with the manifest resealed: the header's body checksum still catches it.
    reseal_state(&flipped);
    assert_refused(&env, &flipped, &[], &["corrupted", "checksum"]);

    // A truncated memory file.
    let truncated = case("truncated");
    let memory = std::fs::OpenOptions::new()
        .write(true)
        .open(truncated.join("memory.bin"))
        .unwrap();
    memory.set_len(64 << 20).unwrap();
    drop(memory);
    assert_refused(&env, &truncated, &[], &["truncated"]);

    // A snapshot of another format version.
    let version = case("version");
    let mut state = std::fs::read(version.join("state.bin")).unwrap();
    state[8..10].copy_from_slice(&99u16.to_le_bytes());
    std::fs::write(version.join("state.bin"), &state).unwrap();
    reseal_state(&version);
    assert_refused(&env, &version, &[], &["version 99 is not supported"]);

    // Not a snapshot at all, and no snapshot.
    let garbage = case("garbage");
    std::fs::write(garbage.join("manifest"), "hello\n").unwrap();
    assert_refused(&env, &garbage, &[], &["manifest"]);
    assert_refused(
        &env,
        &snapshots.path().join("missing"),
        &[],
        &["no snapshot"],
    );

    // A layout other than the caller asks for.
    assert_refused(&env, &good, &["--vcpus", "2"], &["vCPU count 1"]);
    assert_refused(&env, &good, &["--memory-mib", "256"], &["memory bytes"]);

    // The intact snapshot still resumes (the refusals above were about the damage), also when
    // the caller states the right layout.
    let mut guest = env
        .restore(&good)
        .arg("--vcpus")
        .arg("1")
        .arg("--memory-mib")
        .arg("128")
        .spawn();
    let value = counter_value(&mut guest);
    assert!(value >= 3, "the counter continues: {value}");
    client_of(&guest).stop().expect("stop");
    assert_eq!(code(guest.wait_exit(STEP)), exit_status::OK);
}

/// Waits until `path` exists (and, with `min_len`, is a file at least that long).
fn wait_for_path(path: &Path, min_len: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.is_dir() || meta.len() >= min_len {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

#[test]
fn snapshot_vmm_killed_during_suspend_leaves_the_previous_snapshot_resumable() {
    let env = TestEnv::get();
    let snapshots = TempDir::new("snap-kill");
    let dir = snapshots.path().join("vm");
    let mut guest = env.guest("counter").memory_mib(256).spawn();
    guest.wait_for("VIRMO-COUNTER=3", BOOT);

    // A first good snapshot; the VM stays (paused) and runs on.
    let client = client_of(&guest);
    client.snapshot(&dir, true).expect("checkpoint");
    assert_eq!(client.info().expect("info").state, RunState::Paused);
    let saved_at: u64 = last_value(&guest.transcript_lines(), "VIRMO-COUNTER=")
        .and_then(|v| v.parse().ok())
        .expect("counter at the checkpoint");
    client.resume().expect("resume after the checkpoint");

    // Kill points: as soon as the new snapshot's folder appears, and once its memory file is
    // being written. Each time the previous snapshot must resume, from its own counter value.
    let kill_points: [(&str, u64); 2] = [("", 0), ("memory.bin", 1)];
    for (file, min_len) in kill_points {
        let ran_to = counter_value(&mut guest) + 20;
        guest.wait_for(&format!("VIRMO-COUNTER={ran_to}"), STEP);
        let temp = snapshots
            .path()
            .join(format!("vm.tmp.{}", guest.pid()))
            .join(file);
        let socket = guest.api_socket.clone();
        let target = dir.clone();
        let request = std::thread::spawn(move || VmmClient::new(&socket).snapshot(&target, false));
        assert!(
            wait_for_path(&temp, min_len, Duration::from_secs(30)),
            "{} never appeared",
            temp.display()
        );
        guest.kill();
        assert!(request.join().expect("request thread").is_err());

        guest = resume(&env, &dir, "lazy", false);
        let value = counter_value(&mut guest);
        assert!(
            value > saved_at && value <= saved_at + 5,
            "after a kill at {file:?}: the counter resumed at {value}, the good snapshot was taken at {saved_at} and the VM had reached {ran_to}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(snapshots.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name != "vm")
            .collect();
        assert!(leftovers.is_empty(), "leftovers: {leftovers:?}");
    }
    client_of(&guest).stop().expect("stop");
    assert_eq!(code(guest.wait_exit(STEP)), exit_status::OK);
}

/// Waits for a line `prefix` + `outcome` (e.g. "VIRMO-READ=" + "ok"); returns the rest.
fn wait_outcome(guest: &mut Guest, prefix: &str, outcome: &str) -> String {
    let deadline = Instant::now() + STEP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let rest = guest.try_wait_for(prefix, left).unwrap_or_else(|| {
            panic!(
                "no {prefix}{outcome} within {STEP:?}; output:\n{}",
                guest.transcript()
            )
        });
        if let Some(rest) = rest.strip_prefix(outcome) {
            return rest.trim().to_string();
        }
    }
}

#[test]
fn snapshot_virtio_disk_and_rng_and_their_policy_survive_suspend() {
    let env = TestEnv::get();
    let snapshots = TempDir::new("snap-virtio");
    let dir = snapshots.path().join("vm");
    let image = snapshots.path().join("disk.img");
    let mut head = vec![0u8; 8 << 20];
    head[..16].copy_from_slice(b"VIRMO-IMAGE-HEAD");
    std::fs::write(&image, head).expect("disk image");
    let mut builder = env.guest("read-loop").arg("--disk").arg(format!(
        "id=usb0,path={},class=removable-storage",
        image.display()
    ));
    builder.cmdline.push_str(" virmo.disk=usb0");
    let mut guest = builder.arg("--rng").arg("id=rng0").spawn();
    let sectors = (8u64 << 20) / 512;
    let ok = wait_outcome(&mut guest, "VIRMO-READ=", "ok");
    assert!(ok.ends_with(&format!(" {sectors}")), "size seen: {ok}");

    // Suspend with the disk allowed: after resume the guest reads on, through the same queues.
    suspend(&mut guest, &dir);
    let mut guest = resume(&env, &dir, "lazy", false);
    let ok = wait_outcome(&mut guest, "VIRMO-READ=", "ok");
    assert!(
        ok.ends_with(&format!(" {sectors}")),
        "size after resume: {ok}"
    );
    let client = client_of(&guest);
    let devices = client.devices().expect("devices");
    let ids: Vec<_> = devices.iter().map(|d| (d.id.as_str(), d.allowed)).collect();
    assert_eq!(ids, [("usb0", true), ("rng0", true)]);

    // Prohibit the disk, suspend: the restored VM keeps it prohibited until allowed again.
    assert!(
        !client
            .set_device_policy("usb0", false)
            .expect("cut")
            .allowed
    );
    wait_outcome(&mut guest, "VIRMO-READ=", "fail");
    suspend(&mut guest, &dir);
    let mut guest = resume(&env, &dir, "eager", false);
    let client = client_of(&guest);
    let usb0 = client.devices().expect("devices");
    assert!(!usb0[0].allowed, "the policy survived: {usb0:?}");
    wait_outcome(&mut guest, "VIRMO-READ=", "fail");
    assert!(
        client
            .set_device_policy("usb0", true)
            .expect("allow")
            .allowed
    );
    let ok = wait_outcome(&mut guest, "VIRMO-READ=", "ok");
    assert!(
        ok.ends_with(&format!(" {sectors}")),
        "size after allow: {ok}"
    );
    client.stop().expect("stop");
    assert_eq!(code(guest.wait_exit(STEP)), exit_status::OK);
}
