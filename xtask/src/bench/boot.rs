//! `cargo xtask bench boot`: time from VMM process start to the guest's readiness marker, and the
//! VMM's own memory, for our VMM and for QEMU microvm (`rtc=on`) booting the same kernel and
//! initramfs in the same run, alternating, with the ratio.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use super::measure::{self, BootSample};

pub const MARKER: &str = "VIRMO-GUEST-READY";

/// What one bench run boots.
pub struct BootBench {
    pub vmm: PathBuf,
    pub qemu: Option<PathBuf>,
    pub bzimage: PathBuf,
    pub initramfs: PathBuf,
    pub runs: u32,
    pub vcpus: u8,
    pub memory_mib: u64,
    /// Instead of the timed runs: boot each VMM once with [`TIMELINE_CMDLINE`] and print its
    /// console and the guest's kernel log, each line stamped with its arrival time.
    pub timeline: bool,
}

const CMDLINE: &str = "console=ttyS0 quiet panic=-1 virmo.scenario=idle";

/// The timeline boots: the bench's command line with every initcall's duration in the kernel log
/// (kept off the console by `quiet`), and a scenario that prints that log.
pub const TIMELINE_CMDLINE: &str =
    "console=ttyS0 quiet panic=-1 initcall_debug log_buf_len=4M virmo.scenario=dmesg";

fn ours(b: &BootBench) -> Command {
    ours_with(b, CMDLINE)
}

pub fn ours_with(b: &BootBench, cmdline: &str) -> Command {
    let mut cmd = Command::new(&b.vmm);
    cmd.arg("--kernel")
        .arg(&b.bzimage)
        .arg("--initramfs")
        .arg(&b.initramfs)
        .args(["--cmdline", cmdline])
        .args(["--vcpus", &b.vcpus.to_string()])
        .args(["--memory-mib", &b.memory_mib.to_string()]);
    cmd
}

fn qemu(b: &BootBench, qemu: &Path) -> Command {
    qemu_with(b, qemu, CMDLINE)
}

pub fn qemu_with(b: &BootBench, qemu: &Path, cmdline: &str) -> Command {
    let mut cmd = Command::new(qemu);
    cmd.args(["-M", "microvm,rtc=on", "-enable-kvm", "-cpu", "host"])
        .args([
            "-m",
            &b.memory_mib.to_string(),
            "-smp",
            &b.vcpus.to_string(),
        ])
        .args([
            "-nographic",
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(&b.bzimage)
        .arg("-initrd")
        .arg(&b.initramfs)
        .args(["-append", cmdline]);
    cmd
}

/// Boots each VMM once with [`TIMELINE_CMDLINE`]; prints every output line with its arrival time.
fn timelines(b: &BootBench) -> Result<()> {
    let timeout = Duration::from_secs(120);
    let mut ours = ours_with(b, TIMELINE_CMDLINE);
    // The VMM's own build phases (process start to the first KVM_RUN) at debug level.
    ours.env("RUST_LOG", "debug");
    let mut boots = vec![("virmo vmm", ours)];
    if let Some(q) = &b.qemu {
        boots.push(("QEMU microvm rtc=on", qemu_with(b, q, TIMELINE_CMDLINE)));
    }
    for (name, cmd) in boots {
        println!("bench: timeline of {name} (`{TIMELINE_CMDLINE}`), wall seconds since spawn:");
        for (at, line) in measure::stamped_output(cmd, "VIRMO-DMESG-END", timeout)? {
            println!("{:7.3} | {line}", at.as_secs_f64());
        }
    }
    Ok(())
}

/// Runs the bench where KVM is (the runner, or a hardware-KVM host) and prints the table.
pub fn run_here(b: &BootBench) -> Result<()> {
    if b.timeline {
        return timelines(b);
    }
    let timeout = Duration::from_secs(120);
    let mut rows: Vec<(&str, Vec<BootSample>)> = vec![("virmo vmm", Vec::new())];
    if b.qemu.is_some() {
        rows.push(("QEMU microvm rtc=on", Vec::new()));
    }
    for run in 0..b.runs {
        let sample = measure::boot_to_marker(ours(b), MARKER, b.memory_mib, timeout)?;
        println!(
            "bench: run {run} virmo {:.3} s",
            sample.to_marker.as_secs_f64()
        );
        rows[0].1.push(sample);
        if let Some(q) = &b.qemu {
            let sample = measure::boot_to_marker(qemu(b, q), MARKER, b.memory_mib, timeout)?;
            println!(
                "bench: run {run} qemu  {:.3} s",
                sample.to_marker.as_secs_f64()
            );
            rows[1].1.push(sample);
        }
    }
    println!();
    println!(
        "Boot time: from spawning the VMM process to its console (stdout) line `{MARKER}`, \
         printed by the guest's /init after its modules are loaded. Both VMMs boot the same \
         bzImage, initramfs and command line `{CMDLINE}`; {} vCPU, {} MiB, {} runs each, \
         alternating, in one {}.",
        b.vcpus,
        b.memory_mib,
        b.runs,
        if std::path::Path::new("/virmo").exists() {
            "runner boot (nested KVM)"
        } else {
            "host"
        }
    );
    println!(
        "VMM overhead: resident memory of the VMM process at the marker minus the resident part \
         of its guest-RAM mapping (the guest memory the guest touched)."
    );
    println!("| VMM | boot median s | min s | max s | VMM overhead MiB, median | peak RSS MiB (VmHWM), median |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut medians = Vec::new();
    for (name, samples) in &rows {
        let mut t: Vec<f64> = samples.iter().map(|s| s.to_marker.as_secs_f64()).collect();
        let mut o: Vec<f64> = samples
            .iter()
            .map(|s| s.overhead_kib() as f64 / 1024.0)
            .collect();
        let mut p: Vec<f64> = samples.iter().map(|s| s.peak_kib as f64 / 1024.0).collect();
        let (med, min, max) = measure::stats(&mut t);
        medians.push(med);
        println!(
            "| {name} | {med:.3} | {min:.3} | {max:.3} | {:.1} | {:.1} |",
            measure::stats(&mut o).0,
            measure::stats(&mut p).0
        );
    }
    if medians.len() == 2 {
        println!(
            "\nratio virmo / QEMU (median boot time): {:.2}",
            medians[0] / medians[1]
        );
    }
    Ok(())
}
