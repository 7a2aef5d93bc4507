//! Running cargo from xtask: builds, and the paths of the binaries a build produced.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::paths;

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(paths::workspace_root());
    // What `cargo run` set for xtask itself is not the builds' business: build scripts that
    // watch these (ring's watches CARGO_MANIFEST_DIR) would run again, and their crates be
    // rebuilt, whenever a build alternates between xtask and a plain `cargo build`.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&name.as_ref())
        {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd
}

/// Runs `cargo <args>` with output shown; fails when cargo fails.
pub fn run(args: &[&str]) -> Result<()> {
    let status = cargo().args(args).status().context("running cargo")?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs a cargo build command with `--message-format=json-render-diagnostics` and returns the
/// executables it produced (test binaries when `args` is a `test --no-run`).
pub fn executables(args: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    executables_of(cargo(), args)
}

fn executables_of(mut cargo: Command, args: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let mut child = cargo
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo")?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut found = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        if let Some(exe) = msg["executable"].as_str() {
            let name = msg["target"]["name"].as_str().unwrap_or("?").to_string();
            found.push((name, PathBuf::from(exe)));
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(found)
}

/// The target the `vmm` binary is built for, named explicitly so that its static-linking flags
/// ([`VMM_RUSTFLAGS`]) reach only the binary and its dependencies, never build scripts or proc
/// macros (which cannot be linked statically).
pub const VMM_TARGET: &str = "x86_64-unknown-linux-gnu";

/// How the `vmm` binary is linked: static glibc, not position-independent. A new VMM process
/// then starts without a dynamic loader and without relocating ~10k pointers, which in the
/// nested runner (every page fault emulated) is the difference between ~65 ms and ~5 ms from
/// `exec` to `main` (docs/vmm.md, "Start-up").
pub const VMM_RUSTFLAGS: &str = "-C target-feature=+crt-static -C relocation-model=static";

/// Builds the `vmm` binary with `profile` ("dev" or "release"), linked as [`VMM_RUSTFLAGS`]
/// says, and returns its path.
pub fn build_vmm(profile: &str) -> Result<PathBuf> {
    build_static("vmm", "vmm", profile)
}

/// Builds the guest's `vsock-tool` (release, static: the guest has no C library) and returns
/// its path.
pub fn build_vsock_tool() -> Result<PathBuf> {
    build_static("vsock-tool", "vsock-tool", "release")
}

/// Builds the guest's `hostile-tool` (release, static; docs/security.md, "Hostile guests") and
/// returns its path.
pub fn build_hostile_tool() -> Result<PathBuf> {
    build_static("hostile-tool", "hostile-tool", "release")
}

/// Builds binary `bin` of `package`, linked as [`VMM_RUSTFLAGS`] says, and returns its path.
fn build_static(package: &str, bin: &str, profile: &str) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.env(
        format!(
            "CARGO_TARGET_{}_RUSTFLAGS",
            VMM_TARGET.to_uppercase().replace('-', "_")
        ),
        VMM_RUSTFLAGS,
    )
    // RUSTFLAGS would override the target's flags.
    .env_remove("RUSTFLAGS");
    let exes = executables_of(
        cmd,
        &[
            "build",
            "-p",
            package,
            "--bin",
            bin,
            "--profile",
            profile,
            "--target",
            VMM_TARGET,
        ],
    )?;
    exes.into_iter()
        .find(|(name, _)| name == bin)
        .map(|(_, path)| path)
        .with_context(|| format!("cargo built no {bin} binary"))
}
