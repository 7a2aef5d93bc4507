//! `cargo xtask demo`: the product, end to end, on real guests. A `virmo-server` (embedded
//! SQLite) and a `virmo-agent` start, the agent is enrolled, a work VM is provisioned from the
//! test images, started, shown (`virmoctl vms`, the device user's `virmo console`), suspended,
//! resumed and deleted: `product.sh`, numbered steps with timings. Directly on a host with
//! hardware KVM, otherwise inside the nested-KVM runner.
//!
//! `cargo xtask demo --vm-only [--scenario NAME]` boots just the demo guest with our VMM, its
//! console shown.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cargo;
use crate::images;
use crate::paths;
use crate::runner::{self, RunnerFile, RunnerJob};
use crate::test::{build_programs, image_files};

/// The demo's script (busybox sh, or bash).
const SCRIPT: &str = include_str!("product.sh");

/// What `cargo xtask demo` runs.
pub enum Demo {
    /// The product flow.
    Product,
    /// One guest under our VMM, console shown.
    VmOnly {
        scenario: String,
        vcpus: u8,
        memory_mib: u32,
    },
}

pub fn run(demo: &Demo) -> Result<()> {
    match demo {
        Demo::Product => product(),
        Demo::VmOnly {
            scenario,
            vcpus,
            memory_mib,
        } => vm_only(scenario, *vcpus, *memory_mib),
    }
}

fn product() -> Result<()> {
    let started = Instant::now();
    eprintln!("demo: building the guest images and the programs (vmm, virmo-agent, virmo, virmo-server, virmoctl)");
    let images = images::build()?;
    // The VMM optimised: a debug build takes seconds to checksum a snapshot under the runner's
    // emulation.
    let vmm = cargo::build_vmm("release")?;
    let programs = build_programs()?;
    let built = started.elapsed();
    let ran = Instant::now();
    let status = if runner::host_has_hardware_kvm() {
        eprintln!("demo: this host's KVM is hardware-backed: the demo runs here, as root");
        let bin = paths::build_dir().join("demo").join("bin");
        std::fs::create_dir_all(&bin)?;
        link(&vmm, &bin.join("vmm"))?;
        for program in &programs {
            link(&program.path, &bin.join(program.name))?;
        }
        let status = std::process::Command::new("bash")
            .args(["-c", SCRIPT])
            .env("VIRMO_DEMO_BIN", &bin)
            .env("VIRMO_DEMO_IMAGES", &images.dir)
            .env(
                "VIRMO_DEMO_DIR",
                paths::build_dir().join("demo").join("work"),
            )
            .status()
            .context("running bash")?;
        status.code().unwrap_or(1)
    } else {
        eprintln!(
            "demo: this host's /dev/kvm is not hardware-backed (README: the nested-KVM runner);\n\
             demo: booting the runner (QEMU TCG with emulated AMD-V, ~10 s) and running the demo in it"
        );
        let mut files = vec![RunnerFile {
            host: vmm,
            guest: "/virmo/bin/vmm".into(),
            program: true,
        }];
        for program in programs {
            files.push(RunnerFile {
                host: program.path,
                guest: format!("/virmo/bin/{}", program.name),
                program: true,
            });
        }
        files.extend(image_files(&images));
        runner::run(
            &images,
            &RunnerJob {
                files,
                // The runner kernel's console: emergencies only (a soft lockup still shows),
                // not the nested KVM's notes on what the guest tried.
                script: format!("echo 1 > /proc/sys/kernel/printk\n{SCRIPT}"),
                memory_mib: 2048,
                cpus: 2,
                timeout: Duration::from_secs(15 * 60),
            },
        )?
    };
    if status != 0 {
        bail!("the demo failed (status {status}); its logs are above");
    }
    eprintln!(
        "\ndemo: done in {:.0} s (building {:.0} s, the demo itself {:.0} s).\n{NEXT}",
        started.elapsed().as_secs_f64(),
        built.as_secs_f64(),
        ran.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What to type next (the README's "On a fresh machine" says the same).
const NEXT: &str = "\
What to type next:
  cargo xtask test                      all tests: unit tests here, real-guest tests on KVM
  cargo xtask test --skip-unit product  just the end-to-end test of what you saw (virmoctl → server → agent → guest)
  cargo xtask demo --vm-only            one guest under our VMM, its console on your terminal
  README.md, \"Running a server\" and \"Running an agent against a DM server\": the same
  commands on your own machines (docs/virmo-server.md, docs/virmo-mo.md)";

/// `to` → `from` as a symbolic link, replacing what was there.
fn link(from: &Path, to: &PathBuf) -> Result<()> {
    let _ = std::fs::remove_file(to);
    std::os::unix::fs::symlink(from, to)
        .with_context(|| format!("linking {} to {}", to.display(), from.display()))
}

fn vm_only(scenario: &str, vcpus: u8, memory_mib: u32) -> Result<()> {
    let images = images::build()?;
    let vmm = cargo::build_vmm("release")?;
    let cmdline = format!("console=ttyS0 quiet panic=-1 virmo.scenario={scenario}");
    if runner::host_has_hardware_kvm() {
        let status = std::process::Command::new(&vmm)
            .arg("--kernel")
            .arg(&images.bzimage)
            .arg("--initramfs")
            .arg(&images.initramfs)
            .args(["--cmdline", &cmdline])
            .args(["--vcpus", &vcpus.to_string()])
            .args(["--memory-mib", &memory_mib.to_string()])
            .status()?;
        if !status.success() {
            bail!("the VMM exited with {status}");
        }
        return Ok(());
    }
    eprintln!(
        "xtask: this host's /dev/kvm is not hardware-backed (see README: the nested-KVM runner);\n\
         xtask: booting the demo guest inside the runner (QEMU TCG with emulated AMD-V)"
    );
    let mut files = vec![RunnerFile {
        host: vmm,
        guest: "/virmo/bin/vmm".into(),
        program: true,
    }];
    files.extend(image_files(&images));
    let script = format!(
        "/virmo/bin/vmm --kernel /virmo/images/bzImage --initramfs /virmo/images/initramfs.cpio.gz \
         --cmdline '{cmdline}' --vcpus {vcpus} --memory-mib {memory_mib}\n"
    );
    let status = runner::run(
        &images,
        &RunnerJob {
            files,
            script,
            memory_mib: memory_mib + 1024,
            cpus: 2,
            timeout: Duration::from_secs(600),
        },
    )?;
    if status != 0 {
        bail!("the VMM exited with status {status} in the runner");
    }
    Ok(())
}
