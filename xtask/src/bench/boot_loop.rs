//! `cargo xtask bench boot-loop`: many cold boots of our VMM and of QEMU microvm, alternating
//! in one runner boot, each checked for the guest's report (its CPU count); prints boots and
//! failures per VMM. It tells a boot failure of ours (say, an intermittent triple fault) from
//! one of the nested runner's: a runner bug hits QEMU's guests too.
//!
//! With `--trace-kvm` (in the runner) the runner's KVM traces its exits, nested page faults and
//! injected exceptions; after a failed boot the trace's last lines are printed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::boot::{self, BootBench};
use super::measure;

/// The guest prints its CPU count, then powers off.
const CMDLINE: &str = "console=ttyS0 quiet panic=-1 virmo.scenario=report";
const REPORT: &str = "VIRMO-NPROC=";
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const TRACING: &str = "/sys/kernel/tracing";
const TRACE_EVENTS: &[&str] = &["kvm_exit", "kvm_page_fault", "kvm_inj_exception"];

pub struct BootLoop {
    pub boot: BootBench,
    pub boots: u32,
    pub trace_kvm: bool,
}

/// One VMM's tally.
struct Tally {
    name: &'static str,
    boots: u32,
    failures: u32,
    seconds: Vec<f64>,
}

pub fn run_here(b: &BootLoop) -> Result<()> {
    if b.trace_kvm {
        start_tracing()?;
    }
    let out = std::env::temp_dir().join("virmo-boot-loop.out");
    let mut tallies = vec![Tally::new("virmo vmm")];
    if b.boot.qemu.is_some() {
        tallies.push(Tally::new("QEMU microvm rtc=on"));
    }
    for i in 1..=b.boots {
        for tally in tallies.iter_mut() {
            let cmd = match &b.boot.qemu {
                Some(q) if tally.name.starts_with("QEMU") => boot::qemu_with(&b.boot, q, CMDLINE),
                _ => boot::ours_with(&b.boot, CMDLINE),
            };
            if b.trace_kvm {
                clear_trace();
            }
            let (ok, took, output) = boot_once(cmd, &out)?;
            tally.boots += 1;
            tally.seconds.push(took.as_secs_f64());
            if !ok {
                tally.failures += 1;
                println!(
                    "boot-loop: {} boot {i} FAILED after {:.1} s; its output:",
                    tally.name,
                    took.as_secs_f64()
                );
                for line in last_lines(&output, 30) {
                    println!("  | {line}");
                }
                if b.trace_kvm {
                    println!("boot-loop: the runner's KVM trace, last lines:");
                    let trace =
                        fs::read_to_string(Path::new(TRACING).join("trace")).unwrap_or_default();
                    for line in last_lines(&trace, 300) {
                        println!("  | {line}");
                    }
                }
            }
        }
        let status: Vec<String> = tallies
            .iter()
            .map(|t| format!("{} {}/{} failed", t.name, t.failures, t.boots))
            .collect();
        println!("boot-loop: {i}/{}: {}", b.boots, status.join(", "));
    }
    println!();
    println!(
        "Cold boots to the guest's CPU report, {} vCPUs, {} MiB, `{CMDLINE}`, alternating in one {}:",
        b.boot.vcpus,
        b.boot.memory_mib,
        if Path::new("/virmo").exists() {
            "runner boot (nested KVM)"
        } else {
            "host"
        }
    );
    println!("| VMM | boots | failures | median s (spawn to exit) |");
    println!("| --- | ---: | ---: | ---: |");
    for t in &mut tallies {
        let (median, _, _) = measure::stats(&mut t.seconds);
        println!(
            "| {} | {} | {} | {median:.2} |",
            t.name, t.boots, t.failures
        );
    }
    let ours = &tallies[0];
    if ours.failures > 0 {
        bail!(
            "{} of {} boots of our VMM failed",
            ours.failures,
            ours.boots
        );
    }
    Ok(())
}

impl Tally {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            boots: 0,
            failures: 0,
            seconds: Vec::new(),
        }
    }
}

/// Boots once with stdout and stderr in `out`; the boot is good when the guest reported and the
/// process exited by itself.
fn boot_once(mut cmd: Command, out: &PathBuf) -> Result<(bool, Duration, String)> {
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .context("starting the VMM under test")?;
    let mut exited = false;
    while started.elapsed() < BOOT_TIMEOUT {
        if child.try_wait()?.is_some() {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    let output = fs::read_to_string(out).unwrap_or_default();
    Ok((exited && output.contains(REPORT), took, output))
}

fn last_lines(text: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

fn start_tracing() -> Result<()> {
    let root = Path::new(TRACING);
    if !root.join("trace").exists() {
        let status = Command::new("mount")
            .args(["-t", "tracefs", "nodev", TRACING])
            .status()
            .context("mounting tracefs")?;
        if !status.success() {
            bail!("cannot mount tracefs at {TRACING}");
        }
    }
    fs::write(root.join("buffer_size_kb"), "16384").context("sizing the trace buffer")?;
    for event in TRACE_EVENTS {
        let enable = root.join("events/kvm").join(event).join("enable");
        fs::write(&enable, "1").with_context(|| format!("enabling {}", enable.display()))?;
    }
    Ok(())
}

fn clear_trace() {
    let _ = fs::write(Path::new(TRACING).join("trace"), "");
}
