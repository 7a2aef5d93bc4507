//! `cargo xtask bench snapshot`: suspend (snapshot to a folder, VMM exits) and resume (a new VMM
//! from the folder, lazily or eagerly mapped memory) of 256 MiB and 1 GiB guests with 64 MiB and with
//! nearly all memory touched; the snapshot's size on disk; and, in the same run, the floor — a plain
//! sequential write + fsync of the same bytes to the same folder — and a cold boot of the same guest.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vmm::api::client::VmmClient;
use vmm::api::types::RunState;

use super::measure::{self, Console};

pub struct SnapshotBench {
    pub vmm: PathBuf,
    pub bzimage: PathBuf,
    pub initramfs: PathBuf,
    /// Where snapshots are written.
    pub work: PathBuf,
    pub runs: u32,
}

#[derive(Default)]
struct Samples {
    cold_boot: Vec<f64>,
    suspend: Vec<f64>,
    floor: Vec<f64>,
    size_on_disk_mib: Vec<f64>,
    resume_lazy: Vec<f64>,
    resume_eager: Vec<f64>,
    /// From the resume request to the guest's next console line.
    guest_back_lazy: Vec<f64>,
    guest_back_eager: Vec<f64>,
}

const TIMEOUT: Duration = Duration::from_secs(300);
/// How long a restored VM may take to report `running` (it takes well under a second): shorter
/// than the runner's 5 minutes without output, so a stuck VMM is reported with what its threads
/// were doing rather than taken for a hung runner.
const RESUME_TIMEOUT: Duration = Duration::from_secs(60);

/// Written and deleted in the work folder before anything is measured (see [`warm_up`]).
const WARM_UP_MIB: u64 = 2048;

pub fn run_here(b: &SnapshotBench) -> Result<()> {
    std::fs::create_dir_all(&b.work)?;
    warm_up(&b.work)?;
    let mut table = Vec::new();
    for memory_mib in [256u64, 1024] {
        for touch in ["64", "all"] {
            let mut s = Samples::default();
            for run in 0..b.runs {
                one_run(b, memory_mib, touch, &mut s)
                    .with_context(|| format!("{memory_mib} MiB, touch {touch}, run {run}"))?;
                println!(
                    "bench: {memory_mib} MiB touch {touch} run {run}: suspend {:.3} s (floor {:.3} s), resume lazy {:.3} s, eager {:.3} s, cold boot {:.3} s",
                    s.suspend.last().unwrap_or(&f64::NAN),
                    s.floor.last().unwrap_or(&f64::NAN),
                    s.resume_lazy.last().unwrap_or(&f64::NAN),
                    s.resume_eager.last().unwrap_or(&f64::NAN),
                    s.cold_boot.last().unwrap_or(&f64::NAN),
                );
            }
            table.push((memory_mib, touch, s));
        }
    }
    println!();
    println!(
        "snapshot: 1 vCPU, medians of {} runs; times in seconds",
        b.runs
    );
    println!("| guest | touched | suspend | floor (write+fsync same bytes) | suspend/floor | size on disk MiB | resume lazy | resume eager | guest back, lazy | guest back, eager | cold boot | cold boot / lazy resume |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (memory_mib, touch, mut s) in table {
        let m = |v: &mut Vec<f64>| measure::stats(v).0;
        let (suspend, floor, lazy, boot) = (
            m(&mut s.suspend),
            m(&mut s.floor),
            m(&mut s.resume_lazy),
            m(&mut s.cold_boot),
        );
        println!(
            "| {memory_mib} MiB | {touch} | {suspend:.3} | {floor:.3} | {:.2} | {:.1} | {lazy:.3} | {:.3} | {:.3} | {:.3} | {boot:.3} | {:.1}x |",
            suspend / floor,
            m(&mut s.size_on_disk_mib),
            m(&mut s.resume_eager),
            m(&mut s.guest_back_lazy),
            m(&mut s.guest_back_eager),
            boot / lazy,
        );
    }
    Ok(())
}

fn boot_cmd(b: &SnapshotBench, memory_mib: u64, touch: &str, socket: &Path) -> Command {
    let mut cmd = Command::new(&b.vmm);
    cmd.arg("--kernel")
        .arg(&b.bzimage)
        .arg("--initramfs")
        .arg(&b.initramfs)
        .args([
            "--cmdline",
            &format!("console=ttyS0 quiet panic=-1 virmo.scenario=touch virmo.touch_mib={touch}"),
        ])
        .args(["--vcpus", "1", "--memory-mib", &memory_mib.to_string()])
        .arg("--api-socket")
        .arg(socket);
    cmd
}

fn one_run(b: &SnapshotBench, memory_mib: u64, touch: &str, s: &mut Samples) -> Result<()> {
    let socket = b.work.join("bench.sock");
    let dir = b.work.join(format!("snap-{memory_mib}-{touch}"));
    let _ = std::fs::remove_dir_all(&dir);

    let mut guest = Console::spawn(boot_cmd(b, memory_mib, touch, &socket))?;
    let ready = guest.wait_for("VIRMO-GUEST-READY", TIMEOUT)?;
    s.cold_boot.push((ready - guest.started).as_secs_f64());
    guest.wait_for("VIRMO-TOUCHED", TIMEOUT)?;
    guest.wait_for("VIRMO-COUNTER=", TIMEOUT)?;
    let client = VmmClient::new(&socket);
    let t0 = Instant::now();
    let info = client.snapshot(&dir, false).context("suspend")?;
    s.suspend.push(t0.elapsed().as_secs_f64());
    eprintln!("bench: suspended: {info:?}");
    let status = wait_exit(&mut guest.child, Duration::from_secs(60))
        .context("the VMM did not exit after suspend")?;
    if !status.success() {
        bail!("the VMM ended with {status} after suspend");
    }
    s.size_on_disk_mib
        .push(size_on_disk(&dir)? as f64 / (1024.0 * 1024.0));
    s.floor.push(floor(
        &b.work,
        info.memory_bytes_written + info.state_bytes,
    )?);

    for (mode, resume, back) in [
        ("lazy", &mut s.resume_lazy, &mut s.guest_back_lazy),
        ("eager", &mut s.resume_eager, &mut s.guest_back_eager),
    ] {
        let mut cmd = Command::new(&b.vmm);
        cmd.arg("--restore")
            .arg(&dir)
            .args(["--memory-restore", mode])
            .arg("--api-socket")
            .arg(&socket);
        if let Ok(log) = std::env::var("VIRMO_BENCH_LOG") {
            cmd.env("RUST_LOG", "debug")
                .env("VIRMO_STDERR", format!("{log}-{mode}"));
        }
        let mut resumed = Console::spawn(cmd)?;
        let client = VmmClient::new(&socket);
        // The VM reports how long its vCPUs have been running: the moment they started is
        // the answer's arrival minus that uptime (rounded down to the millisecond, so never
        // earlier than the truth), free of the polling interval and of the API's latency.
        let running_since = loop {
            if let Ok(info) = client.info() {
                if info.state == RunState::Running {
                    break Instant::now() - Duration::from_millis(info.uptime_ms);
                }
            }
            if resumed.started.elapsed() > RESUME_TIMEOUT {
                let report = resumed.diagnose();
                bail!(
                    "the restored VM ({mode}) did not report Running within {RESUME_TIMEOUT:?}:\n{report}"
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        resume.push((running_since - resumed.started).as_secs_f64());
        eprintln!("bench: resumed ({mode})");
        let at = match resumed.wait_for("VIRMO-COUNTER=", RESUME_TIMEOUT) {
            Ok(at) => at,
            Err(e) => bail!("{e} after resume ({mode}):\n{}", resumed.diagnose()),
        };
        back.push((at - resumed.started).as_secs_f64());
        resumed.kill();
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Waits for `child` to end, at most `timeout`.
fn wait_exit(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Bytes the folder's files occupy on disk (allocated blocks, so holes do not count).
fn size_on_disk(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            total += meta.blocks() * 512;
        }
    }
    Ok(total)
}

/// Writes and deletes [`WARM_UP_MIB`] in `dir` once. In the nested runner, the first write to
/// any page of the runner's RAM makes the host back it (QEMU's memory is touched lazily), so
/// whichever measurement comes first after the runner boots pays for it: measured, the first
/// case's suspend took 0.33-0.61 s without this and 0.25-0.29 s with it, while the floor, run
/// after the suspended VM freed its memory, never paid. Touching the memory once up front gives
/// suspend and floor the same conditions.
fn warm_up(dir: &Path) -> Result<()> {
    let t0 = Instant::now();
    let seconds = floor(dir, WARM_UP_MIB << 20)?;
    eprintln!(
        "bench: warm-up: {WARM_UP_MIB} MiB written and deleted in {seconds:.2} s ({:.2} s in all)",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Seconds to write `bytes` sequentially (1 MiB writes) to a new file in `dir` and fsync it.
fn floor(dir: &Path, bytes: u64) -> Result<f64> {
    let path = dir.join("floor.bin");
    let chunk = vec![0x5au8; 1 << 20];
    let t0 = Instant::now();
    let mut file = std::fs::File::create(&path)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    let secs = t0.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(secs)
}
