//! Tests of the snapshot folder: round trip, refusal of damaged folders, and atomicity under
//! injected failures and killed writer processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::snapshot::format::{FormatError, MemoryLayout, FORMAT_VERSION, HEADER_LEN};
use crate::snapshot::memory_file::{MemoryFileError, MemoryRestore};
use crate::snapshot::test_support::sample_machine_state;

const CHILD_ENV: &str = "VIRMO_SNAPSHOT_TEST_CHILD";
const CHILD_TEST: &str = "snapshot::store::tests::child_writer";

/// Guest memory where every page holds `generation`, plus the state naming it.
fn generation(gen: u32, bytes: usize) -> (MachineState, GuestMemoryMmap<()>) {
    let memory =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), bytes)]).expect("guest memory");
    let page = gen.to_le_bytes().repeat(1024);
    for addr in (0..bytes as u64).step_by(4096) {
        memory.write_slice(&page, GuestAddress(addr)).expect("fill");
    }
    let mut state = sample_machine_state(1, &[(0, bytes as u64)]);
    state.vm_id = format!("gen-{gen}");
    state.memory = MemoryLayout::of(&memory);
    (state, memory)
}

fn write_generation(dir: &Path, gen: u32, bytes: usize) {
    let (state, memory) = generation(gen, bytes);
    SnapshotWriter::new(dir)
        .expect("writer")
        .write(&state, &memory)
        .expect("write");
}

/// Opens the snapshot, loads memory eagerly (checksum verified) and returns its generation
/// after checking that state and memory belong to the same one.
fn valid_generation(dir: &Path) -> u32 {
    let snapshot = Snapshot::open(dir).expect("a valid snapshot");
    let gen: u32 = snapshot
        .state
        .vm_id
        .strip_prefix("gen-")
        .and_then(|g| g.parse().ok())
        .expect("vm_id names a generation");
    let memory = snapshot.load_memory(MemoryRestore::Eager).expect("memory");
    let last = snapshot.state.memory.total_bytes() - 4;
    for addr in [0, 4096, last] {
        let value: u32 = memory.read_obj(GuestAddress(addr)).expect("read");
        assert_eq!(value, gen, "memory of another generation at {addr:#x}");
    }
    gen
}

fn siblings(parent: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(parent)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn write_then_open_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("vm");
    let (state, memory) = generation(7, 1 << 20);
    let summary = SnapshotWriter::new(&snap)
        .expect("writer")
        .write(&state, &memory)
        .expect("write");
    assert_eq!(summary.manifest.memory.len, 1 << 20);
    assert_eq!(summary.memory_data_bytes, 1 << 20);
    let opened = Snapshot::open(&snap).expect("open");
    assert_eq!(opened.manifest, summary.manifest);
    assert_eq!(opened.state.config, state.config);
    assert_eq!(opened.state.vm.devices, state.vm.devices);
    opened.verify_memory().expect("memory checksum");
    assert_eq!(valid_generation(&snap), 7);
    let lazy = opened.load_memory(MemoryRestore::Lazy).expect("lazy");
    assert_eq!(
        lazy.read_obj::<u32>(GuestAddress(0x8_0000)).expect("read"),
        7
    );
    assert_eq!(siblings(dir.path()), vec!["vm"]);
}

#[test]
fn new_snapshot_replaces_previous_without_leftovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("vm");
    write_generation(&snap, 1, 256 << 10);
    write_generation(&snap, 2, 256 << 10);
    assert_eq!(valid_generation(&snap), 2);
    assert_eq!(siblings(dir.path()), vec!["vm"]);
}

#[test]
fn state_that_does_not_describe_the_memory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut state, memory) = generation(1, 256 << 10);
    state.memory.regions[0].size *= 2;
    let err = SnapshotWriter::new(&dir.path().join("vm"))
        .expect("writer")
        .write(&state, &memory)
        .expect_err("mismatched layout accepted");
    assert!(matches!(
        err,
        StoreError::Format(FormatError::Inconsistent(_))
    ));
    assert!(siblings(dir.path()).is_empty());
}

#[test]
fn abort_at_each_step_leaves_previous_or_new_snapshot() {
    for (k, &fail_at) in WriteStep::ALL.iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snap = dir.path().join("vm");
        write_generation(&snap, 1, 256 << 10);
        let (state, memory) = generation(2, 256 << 10);
        let hook: StepHook = Box::new(move |step| {
            if step == fail_at {
                Err(std::io::Error::other("injected failure"))
            } else {
                Ok(())
            }
        });
        let err = SnapshotWriter::new(&snap)
            .expect("writer")
            .with_step_hook(hook)
            .write(&state, &memory)
            .expect_err("write must fail");
        assert!(matches!(err, StoreError::Aborted { step, .. } if step == fail_at));
        let expected = if fail_at <= WriteStep::Commit { 1 } else { 2 };
        assert_eq!(
            valid_generation(&snap),
            expected,
            "aborted at step {k} {fail_at:?}"
        );
        assert_eq!(
            siblings(dir.path()),
            vec!["vm"],
            "leftover after {fail_at:?}"
        );
    }
}

/// Entry point of the writer child process (run by the kill tests, skipped otherwise).
/// `VIRMO_SNAPSHOT_TEST_CHILD=<dir>|<first generation>|loop|<marker folder>` writes generations
/// forever, creating `<marker folder>/<generation>` after each commit;
/// `...|<step index>|<marker file>` writes one generation, and before that step creates the
/// marker and waits to be killed.
#[test]
#[ignore = "child process of the kill tests"]
fn child_writer() {
    let spec = std::env::var(CHILD_ENV).expect("run by the kill tests only");
    let mut parts = spec.split('|');
    let dir = PathBuf::from(parts.next().expect("dir"));
    let first: u32 = parts
        .next()
        .and_then(|g| g.parse().ok())
        .expect("generation");
    match parts.next().expect("mode") {
        "loop" => {
            let markers = PathBuf::from(parts.next().expect("marker folder"));
            for gen in first.. {
                write_generation(&dir, gen, 32 << 20);
                fs::write(markers.join(gen.to_string()), b"").expect("commit marker");
            }
        }
        step => {
            let stop_at = WriteStep::ALL[step.parse::<usize>().expect("step index")];
            let marker = PathBuf::from(parts.next().expect("marker file"));
            let (state, memory) = generation(first, 1 << 20);
            let hook: StepHook = Box::new(move |step| {
                if step == stop_at {
                    fs::write(&marker, b"")?;
                    loop {
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
                Ok(())
            });
            let outcome = SnapshotWriter::new(&dir)
                .expect("writer")
                .with_step_hook(hook)
                .write(&state, &memory);
            panic!("the writer went past its stop step: {outcome:?}");
        }
    }
}

fn spawn_child(dir: &Path, first: u32, mode: &str) -> std::process::Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--ignored", "--exact", CHILD_TEST, "--test-threads=1"])
        .env(CHILD_ENV, format!("{}|{first}|{mode}", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn writer child")
}

#[test]
fn writer_killed_at_each_step_leaves_previous_or_new_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let markers = tempfile::tempdir().expect("marker folder");
    let snap = dir.path().join("vm");
    write_generation(&snap, 1, 1 << 20);
    let mut current = 1;
    for (k, &step) in WriteStep::ALL.iter().enumerate() {
        let gen = 100 + k as u32;
        let marker = markers.path().join(format!("step-{k}"));
        let mut child = spawn_child(&snap, gen, &format!("{k}|{}", marker.display()));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !marker.exists() {
            assert!(
                child.try_wait().expect("poll child").is_none(),
                "child died before step {step:?}"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "child never reached {step:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap the writer");
        if step > WriteStep::Commit {
            current = gen;
        }
        assert_eq!(valid_generation(&snap), current, "killed at step {step:?}");
        assert_eq!(siblings(dir.path()), vec!["vm"], "leftover after {step:?}");
    }
}

#[test]
fn writer_killed_at_random_times_leaves_a_valid_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("vm");
    write_generation(&snap, 1, 32 << 20);
    let markers = tempfile::tempdir().expect("marker folder");
    let mut last_gen = 1;
    let mut killed_mid_write = 0;
    for round in 0..12u32 {
        let first = (round + 1) * 1000;
        let mut child = spawn_child(&snap, first, &format!("loop|{}", markers.path().display()));
        // The first generation committed, however loaded the machine: from then on the child
        // writes the next one at once, so the kill below lands in a write or between two.
        let committed = markers.path().join(first.to_string());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !committed.exists() {
            assert!(
                child.try_wait().expect("poll child").is_none(),
                "writer child died"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "the writer child committed nothing in 60 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        // Spread the kill over several writes.
        std::thread::sleep(Duration::from_millis(u64::from(round) * 37));
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap the writer");
        if siblings(dir.path()).len() > 1 {
            killed_mid_write += 1;
        }
        let gen = valid_generation(&snap);
        assert!(
            gen >= last_gen,
            "snapshot went back from {last_gen} to {gen}"
        );
        assert!(
            gen == last_gen || gen >= first,
            "generation {gen} from nowhere"
        );
        last_gen = gen;
        assert_eq!(siblings(dir.path()), vec!["vm"]);
    }
    assert!(killed_mid_write > 0, "no kill landed during a write");
    assert!(last_gen > 1, "no child ever committed a snapshot");
}

fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait");
    pid
}

#[test]
fn snapshot_set_aside_by_a_crashed_fallback_commit_is_put_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("vm");
    write_generation(&snap, 1, 256 << 10);
    let pid = dead_pid();
    // The crash window of the rename-aside fallback: old snapshot aside, new one not in place.
    fs::rename(&snap, dir.path().join(format!("vm.old.{pid}"))).expect("set aside");
    let new_tmp = dir.path().join(format!("vm.tmp.{pid}"));
    write_generation(&new_tmp, 2, 256 << 10);
    assert_eq!(valid_generation(&snap), 1);
    assert_eq!(siblings(dir.path()), vec!["vm"]);
}

#[test]
fn leftovers_of_a_live_process_are_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("vm");
    write_generation(&snap, 1, 256 << 10);
    fs::create_dir(dir.path().join("vm.tmp.1")).expect("pid 1 leftover");
    assert_eq!(valid_generation(&snap), 1);
    assert_eq!(siblings(dir.path()), vec!["vm", "vm.tmp.1"]);
}

/// A written snapshot in `dir/vm`, for the damage tests.
fn written() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("vm");
    write_generation(&snap, 3, 256 << 10);
    (dir, snap)
}

fn open_err(snap: &Path) -> StoreError {
    Snapshot::open(snap).expect_err("damaged snapshot accepted")
}

/// Rewrites `state.bin` with `edit` applied and the manifest updated to match, so that the
/// state's own checks (not the manifest's) must catch it.
fn rewrite_state(snap: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs::read(snap.join(STATE_FILE)).expect("read state");
    edit(&mut bytes);
    fs::write(snap.join(STATE_FILE), &bytes).expect("write state");
    let text = fs::read_to_string(snap.join(MANIFEST_FILE)).expect("manifest");
    let mut manifest = Manifest::decode(&text).expect("decode manifest");
    manifest.state = FileEntry {
        len: bytes.len() as u64,
        crc32: crc32fast::hash(&bytes),
    };
    fs::write(snap.join(MANIFEST_FILE), manifest.encode()).expect("write manifest");
}

#[test]
fn truncated_files_are_refused() {
    let (_dir, snap) = written();
    let memory = File::options()
        .write(true)
        .open(snap.join(MEMORY_FILE))
        .expect("open");
    memory.set_len(128 << 10).expect("truncate");
    assert!(matches!(
        open_err(&snap),
        StoreError::Format(FormatError::Truncated {
            file: "memory.bin",
            ..
        })
    ));

    let (_dir, snap) = written();
    let state = fs::read(snap.join(STATE_FILE)).expect("read");
    fs::write(snap.join(STATE_FILE), &state[..state.len() / 2]).expect("truncate");
    assert!(matches!(
        open_err(&snap),
        StoreError::Format(FormatError::Truncated {
            file: "state.bin",
            ..
        })
    ));
}

#[test]
fn corrupted_state_is_refused() {
    let (_dir, snap) = written();
    let mut state = fs::read(snap.join(STATE_FILE)).expect("read");
    let at = state.len() - 10;
    state[at] ^= 0xff;
    fs::write(snap.join(STATE_FILE), &state).expect("write");
    assert!(matches!(
        open_err(&snap),
        StoreError::Format(FormatError::ChecksumMismatch {
            file: "state.bin",
            ..
        })
    ));
}

#[test]
fn corrupted_memory_is_refused() {
    use std::os::unix::fs::FileExt;
    let (_dir, snap) = written();
    let memory = File::options()
        .write(true)
        .open(snap.join(MEMORY_FILE))
        .expect("open");
    memory.write_all_at(&[0xee], 0x1_2345).expect("damage");
    let snapshot = Snapshot::open(&snap).expect("lengths still match");
    assert!(matches!(
        snapshot.verify_memory(),
        Err(StoreError::Memory(MemoryFileError::ChecksumMismatch { .. }))
    ));
    assert!(matches!(
        snapshot.load_memory(MemoryRestore::Eager),
        Err(StoreError::Memory(MemoryFileError::ChecksumMismatch { .. }))
    ));
}

#[test]
fn wrong_magic_and_other_version_are_refused() {
    let (_dir, snap) = written();
    rewrite_state(&snap, |bytes| bytes[0..8].copy_from_slice(b"QEVMSNAP"));
    assert!(matches!(
        open_err(&snap),
        StoreError::Format(FormatError::BadMagic { .. })
    ));

    let (_dir, snap) = written();
    rewrite_state(&snap, |bytes| {
        bytes[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes())
    });
    assert!(matches!(
        open_err(&snap),
        StoreError::Format(FormatError::UnsupportedVersion { found, .. })
            if found == FORMAT_VERSION + 1
    ));

    let (_dir, snap) = written();
    rewrite_state(&snap, |bytes| bytes.truncate(HEADER_LEN - 1));
    assert!(matches!(
        open_err(&snap),
        StoreError::Format(FormatError::Truncated {
            file: "state.bin",
            ..
        })
    ));
}

/// Turns the snapshot at `snap` into what format version 1 wrote: version 1 in `state.bin`'s
/// header (header checksum redone) and a version-1 manifest, CRC-32 for `memory.bin`.
fn make_version_1(snap: &Path) {
    let mut state = fs::read(snap.join(STATE_FILE)).expect("read state");
    state[8..10].copy_from_slice(&1u16.to_le_bytes());
    let header_crc = crc32fast::hash(&state[0..28]);
    state[28..32].copy_from_slice(&header_crc.to_le_bytes());
    fs::write(snap.join(STATE_FILE), &state).expect("write state");
    let memory = fs::read(snap.join(MEMORY_FILE)).expect("read memory");
    let body = format!(
        "virmo-snapshot-manifest 1\n{STATE_FILE} {} crc32={:08x}\n{MEMORY_FILE} {} crc32={:08x}\n",
        state.len(),
        crc32fast::hash(&state),
        memory.len(),
        crc32fast::hash(&memory)
    );
    let check = crc32fast::hash(body.as_bytes());
    fs::write(
        snap.join(MANIFEST_FILE),
        format!("{body}check crc32={check:08x}\n"),
    )
    .expect("write manifest");
}

#[test]
fn version_1_snapshot_is_refused_as_unsupported() {
    let (_dir, snap) = written();
    make_version_1(&snap);
    let err = open_err(&snap);
    assert!(
        matches!(
            err,
            StoreError::Format(FormatError::UnsupportedVersion { found: 1, .. })
        ),
        "{err:?}"
    );
    let message = format!(
        "{}",
        FormatError::UnsupportedVersion {
            found: 1,
            supported: crate::snapshot::format::SUPPORTED_VERSIONS,
        }
    );
    assert!(message.contains("version 1 is not supported"), "{message}");

    // A version-1 state.bin under a current manifest is refused the same way.
    let (_dir, snap) = written();
    rewrite_state(&snap, |bytes| {
        bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
        let header_crc = crc32fast::hash(&bytes[0..28]);
        bytes[28..32].copy_from_slice(&header_crc.to_le_bytes());
    });
    assert!(matches!(
        open_err(&snap),
        StoreError::Format(FormatError::UnsupportedVersion { found: 1, .. })
    ));
}

#[test]
fn missing_or_damaged_manifest_is_refused() {
    let (_dir, snap) = written();
    fs::remove_file(snap.join(MANIFEST_FILE)).expect("remove");
    assert!(matches!(
        open_err(&snap),
        StoreError::MissingFile {
            file: "manifest",
            ..
        }
    ));

    let (_dir, snap) = written();
    let text = fs::read_to_string(snap.join(MANIFEST_FILE)).expect("read");
    fs::write(
        snap.join(MANIFEST_FILE),
        text.replacen("state.bin ", "state.bin 1", 1),
    )
    .expect("write");
    assert!(matches!(
        open_err(&snap),
        StoreError::Format(FormatError::Manifest { .. })
    ));

    let dir = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        Snapshot::open(&dir.path().join("none")),
        Err(StoreError::NotFound(_))
    ));
}
