//! `cargo xtask test`: every test of the project.
//!
//! 1. Unit tests of all crates on the host (they include a smoke test on the host's own /dev/kvm),
//!    then every fuzz target built on stable and run briefly (`fuzz.rs`).
//! 2. The integration tests of `tests/` (they boot real guests): directly where the host's KVM is
//!    hardware-backed, otherwise inside the nested-KVM runner. Their output comes back here, and a
//!    failing test fails the command.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::cargo;
use crate::images;
use crate::runner::{self, RunnerFile, RunnerJob};

pub struct TestOptions {
    /// Only the integration tests whose name contains this.
    pub filter: Option<String>,
    pub skip_unit: bool,
    pub test_threads: u32,
}

pub fn run(opts: &TestOptions) -> Result<()> {
    if !opts.skip_unit {
        eprintln!("xtask: unit tests on the host");
        cargo::run(&["test", "--workspace", "--exclude", "virmo-tests"])?;
        crate::fuzz::smoke()?;
    }
    let images = images::build()?;
    let vmm = cargo::build_vmm("dev")?;
    let programs = build_programs()?;
    let tests: Vec<_> = cargo::executables(&["test", "-p", "virmo-tests", "--no-run"])?
        .into_iter()
        .filter(|(name, _)| name != "virmo_tests")
        .collect();
    if tests.is_empty() {
        bail!("no integration test binaries were built");
    }
    let mut args = vec![format!("--test-threads={}", opts.test_threads)];
    if let Some(filter) = &opts.filter {
        args.push(filter.clone());
    }

    if runner::host_has_hardware_kvm() {
        eprintln!("xtask: integration tests on this host's hardware KVM");
        let mut failed = Vec::new();
        for (name, exe) in &tests {
            let mut command = std::process::Command::new(exe);
            for program in &programs {
                command.env(program.env, &program.path);
            }
            let status = command
                .args(&args)
                .env("VIRMO_VMM_BIN", &vmm)
                .env("VIRMO_IMAGES_DIR", &images.dir)
                .status()?;
            if !status.success() {
                failed.push(name.clone());
            }
        }
        if !failed.is_empty() {
            bail!("integration tests failed: {}", failed.join(", "));
        }
        return Ok(());
    }

    eprintln!("xtask: this host's KVM is not hardware-backed; integration tests run in the nested-KVM runner");
    let mut files = vec![RunnerFile {
        host: vmm,
        guest: "/virmo/bin/vmm".into(),
        program: true,
    }];
    let mut script = String::from(
        "export VIRMO_VMM_BIN=/virmo/bin/vmm VIRMO_IMAGES_DIR=/virmo/images RUST_BACKTRACE=1\n",
    );
    for program in programs {
        let guest = format!("/virmo/bin/{}", program.name);
        script.push_str(&format!("export {}={guest}\n", program.env));
        files.push(RunnerFile {
            host: program.path,
            guest,
            program: true,
        });
    }
    files.extend(image_files(&images));
    script.push_str("rc=0\n");
    for (name, exe) in &tests {
        let guest = format!("/virmo/tests/{name}");
        files.push(RunnerFile {
            host: exe.clone(),
            guest: guest.clone(),
            program: true,
        });
        script.push_str(&format!(
            "echo \"runner: running {name}\"\n{guest} {} || rc=1\n",
            args.join(" ")
        ));
    }
    script.push_str("exit $rc\n");
    let job = RunnerJob {
        files,
        script,
        memory_mib: 6144,
        cpus: 2,
        timeout: Duration::from_secs(40 * 60),
    };
    // No re-run after a hang of the runner: with QEMU 10 none has been seen (docs/runner.md), and
    // a re-run would hide one. Its diagnostics are printed and the command fails.
    let status = runner::run(&images, &job)?;
    if status != 0 {
        bail!("integration tests failed in the runner (exit status {status})");
    }
    Ok(())
}

/// A program the integration tests start as a process of its own, and the variable that tells
/// them where it is.
pub struct Program {
    pub name: &'static str,
    pub env: &'static str,
    pub path: PathBuf,
}

/// The product's programs besides the VMM: the agent and the device user's `virmo` CLI, the
/// server and the administrator's `virmoctl` (debug builds, like the tests).
pub fn build_programs() -> Result<Vec<Program>> {
    let wanted = [
        ("virmo-agent", "VIRMO_AGENT_BIN"),
        ("virmo", "VIRMO_CLI_BIN"),
        ("virmo-server", "VIRMO_SERVER_BIN"),
        ("virmoctl", "VIRMOCTL_BIN"),
    ];
    let built = cargo::executables(&[
        "build",
        "-p",
        "virmo-agent",
        "-p",
        "virmo-server",
        "--bin",
        "virmo-agent",
        "--bin",
        "virmo",
        "--bin",
        "virmo-server",
        "--bin",
        "virmoctl",
    ])?;
    wanted
        .into_iter()
        .map(|(name, env)| {
            let path = built
                .iter()
                .find(|(built, _)| built == name)
                .map(|(_, path)| path.clone())
                .ok_or_else(|| anyhow::anyhow!("cargo built no {name} binary"))?;
            Ok(Program { name, env, path })
        })
        .collect()
}

/// The guest images, at `/virmo/images/` in the runner.
pub fn image_files(images: &images::Images) -> Vec<RunnerFile> {
    [&images.bzimage, &images.vmlinux, &images.initramfs]
        .into_iter()
        .map(|path| RunnerFile {
            host: path.clone(),
            guest: format!(
                "/virmo/images/{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ),
            program: false,
        })
        .collect()
}
