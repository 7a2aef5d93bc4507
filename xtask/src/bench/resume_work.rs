//! `cargo xtask bench resume-work`: from a new VMM process to useful work done by the resumed
//! guest. "Resumed" is not "useful": a lazily restored guest pays a page fault for every page it
//! touches again. The guest (`work` scenario) holds a file of `--work-mib` MiB in tmpfs and, for
//! every line it reads on its console, reads the whole file again and answers
//! `VIRMO-WORK-DONE=<n>`.
//!
//! Measured per configuration (vCPUs, memory), medians of `--runs`:
//! - *never suspended*: the same work on the VM that was never suspended (console line written to
//!   answer), after a first pass that warms it;
//! - for each restore mode (eager, lazy): `vmm --restore` spawned, the line written to its stdin
//!   at once, to the answer — start-up, restore, the guest's work and its page faults, all in;
//! - hot: the lazily resumed VM, once it answered, is suspended again (its snapshot records the
//!   hot set: what it touched since the resume), and that snapshot is restored with
//!   `--memory-restore hot`, timed the same way.

use std::io::Write;
use std::path::PathBuf;
use std::process::{ChildStdin, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vmm::api::client::VmmClient;

use super::measure::{self, Console};

pub struct ResumeWorkBench {
    pub vmm: PathBuf,
    pub bzimage: PathBuf,
    pub initramfs: PathBuf,
    /// Where snapshots are written (in the runner: its RAM-backed /tmp).
    pub work: PathBuf,
    pub runs: u32,
    pub work_mib: u64,
}

/// (vCPUs, MiB of guest memory)
const CONFIGURATIONS: [(u32, u64); 2] = [(1, 256), (2, 1024)];
/// The restore modes of `vmm --memory-restore`, in the order they run: `hot` restores the
/// snapshot taken after the `lazy` run.
const MODES: [&str; 3] = ["eager", "lazy", "hot"];
const TIMEOUT: Duration = Duration::from_secs(240);
const DONE: &str = "VIRMO-WORK-DONE=";
/// Passes of the work on the never-suspended VM; the first only warms it and is not counted.
const WARM_PASSES: u32 = 4;

#[derive(Default)]
struct Samples {
    never_suspended: Vec<f64>,
    /// Per mode of [`MODES`]: spawn to the answer.
    resumed: [Vec<f64>; MODES.len()],
}

pub fn run_here(b: &ResumeWorkBench) -> Result<()> {
    std::fs::create_dir_all(&b.work)?;
    let mut table = Vec::new();
    for (vcpus, memory_mib) in CONFIGURATIONS {
        let mut s = Samples::default();
        for run in 0..b.runs {
            one_run(b, vcpus, memory_mib, &mut s)
                .with_context(|| format!("{vcpus} vCPUs, {memory_mib} MiB, run {run}"))?;
            println!(
                "bench: {vcpus} vCPU {memory_mib} MiB run {run}: never suspended {:.3} s, {}",
                s.never_suspended.last().unwrap_or(&f64::NAN),
                MODES
                    .iter()
                    .zip(&s.resumed)
                    .map(|(mode, v)| format!("{mode} {:.3} s", v.last().unwrap_or(&f64::NAN)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        table.push((vcpus, memory_mib, s));
    }
    println!();
    println!(
        "resume to useful work: read a {} MiB tmpfs file again and answer; medians of {} runs, seconds",
        b.work_mib, b.runs
    );
    println!("| guest | never suspended (work only) | eager: spawn to answer | lazy: spawn to answer | hot: spawn to answer | lazy / never suspended | lazy / hot | hot / never suspended |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (vcpus, memory_mib, mut s) in table {
        let never = measure::stats(&mut s.never_suspended).0;
        let [eager, lazy, hot] = s.resumed.each_mut().map(|v| measure::stats(v).0);
        println!(
            "| {vcpus} vCPU, {memory_mib} MiB | {never:.3} | {eager:.3} | {lazy:.3} | {hot:.3} | {:.2} | {:.2} | {:.2} |",
            lazy / never,
            lazy / hot,
            hot / never
        );
    }
    Ok(())
}

fn one_run(b: &ResumeWorkBench, vcpus: u32, memory_mib: u64, s: &mut Samples) -> Result<()> {
    let socket = b.work.join("resume-work.sock");
    let dir = b.work.join(format!("snap-{vcpus}-{memory_mib}"));
    let _ = std::fs::remove_dir_all(&dir);

    let mut cmd = Command::new(&b.vmm);
    cmd.arg("--kernel")
        .arg(&b.bzimage)
        .arg("--initramfs")
        .arg(&b.initramfs)
        .args([
            "--cmdline",
            &format!(
                "console=ttyS0 quiet panic=-1 virmo.scenario=work virmo.work_mib={}",
                b.work_mib
            ),
        ])
        .args(["--vcpus", &vcpus.to_string()])
        .args(["--memory-mib", &memory_mib.to_string()])
        .arg("--api-socket")
        .arg(&socket);
    let (mut guest, mut input) = Console::spawn_with_input(cmd)?;
    guest.wait_for("VIRMO-WORK-READY=", TIMEOUT)?;
    let mut passes = Vec::new();
    for _ in 0..WARM_PASSES {
        let asked = ask(&mut input)?;
        let done = guest.wait_for(DONE, TIMEOUT)?;
        passes.push((done - asked).as_secs_f64());
    }
    // The first pass warms the VM; the others are the work alone.
    s.never_suspended.push(measure::stats(&mut passes[1..]).0);

    let client = VmmClient::new(&socket);
    client.snapshot(&dir, false).context("suspend")?;
    wait_exit(&mut guest, Duration::from_secs(60)).context("the VMM did not exit after suspend")?;

    let hot_dir = b.work.join(format!("snap-{vcpus}-{memory_mib}-hot"));
    let _ = std::fs::remove_dir_all(&hot_dir);
    for (mode, samples) in MODES.iter().zip(s.resumed.iter_mut()) {
        let from = if *mode == "hot" { &hot_dir } else { &dir };
        let mut cmd = Command::new(&b.vmm);
        cmd.arg("--restore")
            .arg(from)
            .args(["--memory-restore", mode])
            .arg("--api-socket")
            .arg(&socket);
        let (mut resumed, mut input) = Console::spawn_with_input(cmd)?;
        // Written at once: the pipe holds it until the VMM feeds its console.
        ask(&mut input)?;
        let done = match resumed.wait_for(DONE, TIMEOUT) {
            Ok(at) => at,
            Err(e) => bail!("{e} after resume ({mode}):\n{}", resumed.diagnose()),
        };
        samples.push((done - resumed.started).as_secs_f64());
        if *mode == "lazy" {
            // Its snapshot records what it touched since the resume: the hot set.
            let info = VmmClient::new(&socket)
                .snapshot(&hot_dir, false)
                .context("suspend after the lazy resume")?;
            eprintln!("bench: suspended after the lazy resume: {info:?}");
            wait_exit(&mut resumed, Duration::from_secs(60))
                .context("the VMM did not exit after suspend")?;
        } else {
            resumed.kill();
        }
    }
    std::fs::remove_dir_all(&dir)?;
    std::fs::remove_dir_all(&hot_dir)?;
    Ok(())
}

/// Asks the guest for one pass of the work; returns when the request was written.
fn ask(input: &mut ChildStdin) -> Result<Instant> {
    input.write_all(b"go\n").context("writing to the console")?;
    input.flush()?;
    Ok(Instant::now())
}

/// Waits for the VMM to exit by itself (after a suspend), at most `timeout`.
fn wait_exit(console: &mut Console, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = console.child.try_wait()? {
            if !status.success() {
                bail!("the VMM ended with {status}");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
