//! The nested-KVM runner: a QEMU TCG virtual machine with emulated AMD-V, in which real KVM works
//! (`kvm_amd`), for hosts whose own `/dev/kvm` cannot run a stock Linux guest.
//!
//! xtask packs the programs to run (with every shared library `ldd` lists), the guest images and a
//! shell script into an initramfs; the runner's `/init` loads the KVM modules, runs the script with
//! its output on the serial console, prints `VIRMO-RUNNER-EXIT=<status>` and powers off. This module
//! streams the console to our stdout and returns the script's exit status.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cpio::CpioWriter;
use crate::images::{self, Images};

/// Modules the runner loads, in this order (dependencies are added): KVM, then what tests use.
const RUNNER_MODULES: &[&str] = &[
    "irqbypass",
    "kvm",
    "kvm_amd",
    "tun",
    "vhost_iotlb",
    "vhost",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vhost_vsock",
    "tap",
    "vhost_net",
    "veth",
];

const EXIT_MARKER: &str = "VIRMO-RUNNER-EXIT=";

/// A runner CPU stuck this long inside KVM means the runner itself hung (see [`RunnerHung`]).
const HUNG_AFTER_SECS: u64 = 90;

/// No console output for this long means the runner hung too: every test prints its result within
/// a minute or two, and each test's own waits are bounded far below this.
const SILENT_FOR: Duration = Duration::from_secs(300);

/// The runner's own kernel reported a CPU stuck inside KVM_RUN for minutes: the emulated VMRUN
/// never returned to the runner's KVM, so no timer interrupt reached it (seen intermittently with
/// QEMU 7.2's TCG emulation of nested SVM under heavy host load). Nothing inside the runner can
/// end that process; the run is abandoned and fails, with what the monitor and QEMU's threads
/// showed (never retried: a retry would hide a hang).
#[derive(Debug)]
pub struct RunnerHung(pub String);

impl std::fmt::Display for RunnerHung {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the nested-KVM runner hung: {}", self.0)
    }
}

impl std::error::Error for RunnerHung {}

/// Seconds in a runner kernel line `watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [...]`.
fn soft_lockup_secs(line: &str) -> Option<u64> {
    let rest = line.split("soft lockup - CPU#").nth(1)?;
    let secs = rest.split("stuck for ").nth(1)?.split('s').next()?;
    secs.trim().parse().ok()
}

/// One file to put into the runner.
pub struct RunnerFile {
    pub host: PathBuf,
    /// Absolute path inside the runner.
    pub guest: String,
    /// An ELF program: strip its debug info and bring its shared libraries.
    pub program: bool,
}

/// What to run in the runner.
pub struct RunnerJob {
    pub files: Vec<RunnerFile>,
    /// Shell script run by the runner's /init (busybox sh), in `/virmo`.
    pub script: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub timeout: Duration,
}

/// Whether this host's KVM is hardware-backed (so real guests run directly, without the runner).
pub fn host_has_hardware_kvm() -> bool {
    Path::new("/dev/kvm").exists()
        && (Path::new("/sys/module/kvm_intel").exists()
            || Path::new("/sys/module/kvm_amd").exists())
}

/// Builds the runner's initramfs and runs `job` in it; returns the script's exit status.
pub fn run(images: &Images, job: &RunnerJob) -> Result<i32> {
    let dir = crate::paths::build_dir().join("runner");
    std::fs::create_dir_all(&dir)?;
    // One initramfs per invocation: several runners may run at once.
    let initrd = dir.join(format!("runner-initrd-{}.cpio", std::process::id()));
    let archive = runner_initramfs(images, job, &dir)?;
    images::write_atomically(&initrd, &archive)?;
    drop(archive);

    let qemu = runner_qemu();
    // QEMU's monitor, asked where the runner's CPUs are when the runner hangs.
    let monitor = dir.join(format!("runner-monitor-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&monitor);
    let mut command = Command::new(&qemu.binary);
    if let Some(data) = &qemu.data_dir {
        command.arg("-L").arg(data);
    }
    let mut child = command
        .args([
            "-M",
            "q35",
            "-accel",
            &format!("tcg,thread={}", tcg_threading()),
            "-cpu",
            RUNNER_CPU,
        ])
        .args([
            "-smp",
            &job.cpus.to_string(),
            "-m",
            &job.memory_mib.to_string(),
        ])
        .args(["-nographic", "-nodefaults", "-no-user-config", "-no-reboot"])
        .args(["-serial", "stdio"])
        .arg("-monitor")
        .arg(format!("unix:{},server=on,wait=off", monitor.display()))
        .arg("-kernel")
        .arg(&images.bzimage)
        .arg("-initrd")
        .arg(&initrd)
        // `no_timer_check`: on a host loaded enough, the kernel's check that the PIT's
        // interrupt reaches it through the IOAPIC times out under TCG and the runner panics at
        // boot ("IO-APIC + timer doesn't work!", seen once on 2026-12-03 at load 9-12).
        .args([
            "-append",
            "console=ttyS0 quiet panic=-1 nokaslr no_timer_check rdinit=/init",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (apt-get install qemu-system-x86)",
                qemu.binary.display()
            )
        })?;

    let stdout = child.stdout.take().context("runner stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(text).is_err() {
                break;
            }
        }
    });

    let started = Instant::now();
    let mut last_output = Instant::now();
    let mut status = None;
    // The firmware's and the runner kernel's lines before our /init speaks (`runner: …`) are
    // held back, and shown only if the runner never gets that far.
    let mut boot_lines = Some(Vec::new());
    loop {
        if last_output.elapsed() > SILENT_FOR {
            show_boot_lines(boot_lines.take());
            eprintln!(
                "runner: silent for {SILENT_FOR:?}; its CPUs:\n{}\nQEMU's threads:\n{}",
                monitor_report(&monitor),
                crate::threads::report(child.id())
            );
            let _ = std::fs::remove_file(&monitor);
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&initrd);
            return Err(RunnerHung(format!("no console output for {SILENT_FOR:?}")).into());
        }
        let left = job.timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            show_boot_lines(boot_lines.take());
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&initrd);
            bail!("the runner did not finish within {:?}; killed", job.timeout);
        }
        match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(line) => {
                last_output = Instant::now();
                let mut line = line;
                if let Some(held) = &mut boot_lines {
                    // The firmware's terminal escapes may precede it on its line.
                    let Some(at) = line.find("runner: ") else {
                        held.push(line);
                        continue;
                    };
                    line.drain(..at);
                    boot_lines = None;
                }
                if let Some(code) = line.trim().strip_prefix(EXIT_MARKER) {
                    status = code.trim().parse::<i32>().ok();
                } else {
                    println!("{line}");
                    if soft_lockup_secs(&line).is_some_and(|secs| secs >= HUNG_AFTER_SECS) {
                        eprintln!(
                            "runner: {}; its CPUs:\n{}\nQEMU's threads:\n{}",
                            line.trim(),
                            monitor_report(&monitor),
                            crate::threads::report(child.id())
                        );
                        let _ = std::fs::remove_file(&monitor);
                        let _ = child.kill();
                        let _ = child.wait();
                        let _ = std::fs::remove_file(&initrd);
                        return Err(RunnerHung(line.trim().to_string()).into());
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    show_boot_lines(boot_lines);
    let qemu_status = child.wait()?;
    let _ = std::fs::remove_file(&initrd);
    let _ = std::fs::remove_file(&monitor);
    match status {
        Some(code) => Ok(code),
        None => {
            bail!("the runner ended ({qemu_status}) without reporting the script's exit status")
        }
    }
}

/// The runner's console before its /init started, when it never did.
fn show_boot_lines(held: Option<Vec<String>>) {
    if let Some(held) = held {
        eprintln!(
            "runner: its console before /init started:\n{}",
            held.join("\n")
        );
    }
}

/// What QEMU's monitor says of the runner's CPUs (`info cpus`, `info registers -a`): for a hung
/// runner, where each CPU is (in the runner's kernel, or in a nested guest: SVM's guest mode
/// shows in the registers' `HFLAGS`/`EFER`, and RIP points into the guest).
fn monitor_report(socket: &Path) -> String {
    use std::io::{Read, Write};
    let mut stream = match std::os::unix::net::UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(e) => return format!("(no monitor at {}: {e})", socket.display()),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    // One command at a time: each answer ends with the next `(qemu)` prompt. The registers are
    // read twice, 3 s apart (spinning CPUs move, stopped ones do not), and each CPU's top of
    // stack is shown (the runner boots with `nokaslr`, so addresses match the kernel's symbols).
    let commands = [
        "",
        "info cpus\n",
        "info registers -a\n",
        "cpu 0\n",
        "x /16gx $rsp\n",
        "cpu 1\n",
        "x /16gx $rsp\n",
        "info registers -a\n",
    ];
    for (index, command) in commands.into_iter().enumerate() {
        if index == commands.len() - 1 {
            std::thread::sleep(Duration::from_secs(3));
            out.extend_from_slice(b"\n--- 3 s later ---\n");
        }
        let prompts = index + 1;
        let _ = stream.write_all(command.as_bytes());
        let deadline = Instant::now() + Duration::from_secs(5);
        while count_prompts(&out) < prompts && Instant::now() < deadline {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
    }
    // The monitor echoes with terminal escapes; keep the text.
    String::from_utf8_lossy(&out)
        .split('\x1b')
        .map(|part| {
            part.trim_start_matches(|c: char| {
                c == '[' || c.is_ascii_digit() || c == 'K' || c == 'D'
            })
        })
        .collect()
}

/// The runner's CPU: an EPYC with AMD-V, less the features TCG cannot emulate (QEMU would drop
/// them anyway, printing one warning per feature and CPU).
const RUNNER_CPU: &str = "EPYC,+svm,-rdseed,-sha-ni,-xsavec,-3dnowprefetch,-misalignsse,-osvw,-topoext,-fxsr-opt,-nrip-save";

/// The QEMU that runs the runner.
struct RunnerQemu {
    binary: PathBuf,
    /// Its firmware folder (`-L`), when it is not the installed QEMU's.
    data_dir: Option<PathBuf>,
}

/// The installed `qemu-system-x86_64`, or another build for comparing QEMU versions:
/// `VIRMO_RUNNER_QEMU=/path/to/qemu-system-x86_64` with `VIRMO_RUNNER_QEMU_DATA=/its/share/qemu`.
fn runner_qemu() -> RunnerQemu {
    match std::env::var_os("VIRMO_RUNNER_QEMU") {
        Some(binary) => RunnerQemu {
            binary: binary.into(),
            data_dir: std::env::var_os("VIRMO_RUNNER_QEMU_DATA").map(PathBuf::from),
        },
        None => RunnerQemu {
            binary: "qemu-system-x86_64".into(),
            data_dir: None,
        },
    }
}

/// QEMU's TCG threading for the runner: `multi` (one host thread per runner CPU, the default)
/// or `single` (`VIRMO_RUNNER_TCG_THREAD=single`: all runner CPUs on one host thread, slower,
/// for telling whether a hang comes from multi-threaded TCG).
fn tcg_threading() -> &'static str {
    match std::env::var("VIRMO_RUNNER_TCG_THREAD").as_deref() {
        Ok("single") => "single",
        _ => "multi",
    }
}

fn count_prompts(text: &[u8]) -> usize {
    text.windows(6).filter(|w| w == b"(qemu)").count()
}

fn runner_initramfs(images: &Images, job: &RunnerJob, scratch: &Path) -> Result<Vec<u8>> {
    let mut cpio = CpioWriter::new();
    for dir in [
        "bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "etc",
        "lib/modules",
        "virmo",
    ] {
        cpio.dir(dir);
    }
    images::add_busybox(&mut cpio, &images.busybox_root)?;

    images::add_modules(&mut cpio, images, RUNNER_MODULES)?;

    let mut libraries = BTreeSet::new();
    for file in &job.files {
        let data = if file.program {
            libraries.extend(shared_libraries(&file.host)?);
            stripped(&file.host, scratch)?
        } else {
            std::fs::read(&file.host).with_context(|| format!("reading {}", file.host.display()))?
        };
        let mode = if file.program { 0o755 } else { 0o644 };
        cpio.file(&file.guest, mode, &data);
    }
    for lib in libraries {
        let data = std::fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
        cpio.file(&lib.to_string_lossy(), 0o755, &data);
    }
    cpio.file("virmo/run.sh", 0o755, job.script.as_bytes());
    cpio.file("init", 0o755, RUNNER_INIT.as_bytes());
    Ok(cpio.finish())
}

/// A copy of `program` without debug info (smaller initramfs).
fn stripped(program: &Path, scratch: &Path) -> Result<Vec<u8>> {
    let out = scratch.join("stripped.tmp");
    let status = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(program)
        .arg(&out)
        .status()
        .context("running objcopy (binutils)")?;
    if !status.success() {
        bail!("objcopy --strip-debug {} failed", program.display());
    }
    let data = std::fs::read(&out)?;
    std::fs::remove_file(&out)?;
    Ok(data)
}

/// The shared libraries (and the dynamic loader) that `ldd` lists for `program`.
fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

const RUNNER_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /dev/pts /dev/shm /dev/net
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null
# Keep the modules' messages out of the tests' output, then show warnings and worse: a soft
# lockup's backtrace (printed at the default level, 4) names where a stuck CPU is.
echo 1 > /proc/sys/kernel/printk
while read -r m; do
    insmod "/lib/modules/$m.ko" || echo "runner: cannot load module $m"
done < /lib/modules/load-order
echo 5 > /proc/sys/kernel/printk
ip link set lo up
echo "runner: $(nproc) CPUs, $(sed -n 's/^MemTotal: *//p' /proc/meminfo), /dev/kvm: $(ls /dev/kvm 2>&1)"
cd /virmo
sh /virmo/run.sh
echo "VIRMO-RUNNER-EXIT=$?"
sync
poweroff -f
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// The monitor of a real (paused) QEMU answers with its CPUs and their registers.
    #[test]
    fn the_monitor_report_lists_the_cpus_and_their_registers() {
        let socket = std::env::temp_dir().join(format!("monitor-test-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let Ok(mut qemu) = Command::new("qemu-system-x86_64")
            .args([
                "-M",
                "q35",
                "-accel",
                "tcg",
                "-smp",
                "2",
                "-S",
                "-nographic",
                "-nodefaults",
            ])
            .arg("-monitor")
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
        else {
            panic!("qemu-system-x86_64 is needed (xtask installs it)");
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let report = monitor_report(&socket);
        let _ = qemu.kill();
        let _ = qemu.wait();
        let _ = std::fs::remove_file(&socket);
        assert!(
            report.contains("CPU #0") && report.contains("CPU #1"),
            "{report}"
        );
        assert!(report.contains("EFER="), "{report}");
        assert_eq!(
            report.matches("EFER=").count(),
            4,
            "two CPUs' registers, twice: {report}"
        );
        assert!(report.contains("3 s later"), "{report}");
    }

    #[test]
    fn soft_lockup_lines_are_recognised() {
        let line = "[   64.358028] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [vcpu0:194]";
        assert_eq!(soft_lockup_secs(line), Some(26));
        assert_eq!(soft_lockup_secs("test foo ... ok"), None);
    }
}
