//! The Debian packages the tasks need: installed with apt when a tool is missing, so a fresh machine
//! needs nothing but `cargo xtask demo` / `cargo xtask test`.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// (a command that proves the package is there, the package).
const NEEDED: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("cpio", "cpio"),
    ("lz4", "lz4"),
    ("xz", "xz-utils"),
    ("zstd", "zstd"),
    ("objcopy", "binutils"),
    ("xml2wbxml", "libwbxml2-utils"),
    ("ip", "iproute2"),
    // virmo-server's PostgreSQL tests (initdb and pg_ctl come in /usr/lib/postgresql/*/bin).
    ("pg_ctlcluster", "postgresql"),
];

fn have(command: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Installs the packages whose commands are missing (apt-get, as root).
pub fn ensure_packages() -> Result<()> {
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(command, _)| !have(command))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let by_hand = format!(
        "install these packages by hand (as root): {}",
        missing.join(" ")
    );
    apt_get(&["update", "-q"], &by_hand)?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    apt_get(&args, &by_hand)
}

/// Runs `apt-get ARGS` non-interactively; on failure the error ends with `hint`.
fn apt_get(args: &[&str], hint: &str) -> Result<()> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("`apt-get {}` failed ({status}); {hint}", args.join(" "));
    }
    Ok(())
}

/// The oldest QEMU the nested-KVM runner is run with (docs/runner.md, "Which QEMU").
const RUNNER_QEMU_MAJOR: u32 = 10;

/// The major version `qemu-system-x86_64 --version` reports.
fn qemu_major() -> Option<u32> {
    let out = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .ok()?;
    parse_qemu_major(&String::from_utf8_lossy(&out.stdout))
}

/// "QEMU emulator version 10.0.2 (Debian …)" → 10.
fn parse_qemu_major(text: &str) -> Option<u32> {
    let rest = text.split("version ").nth(1)?;
    rest.split('.').next()?.trim().parse().ok()
}

/// Installs QEMU from the release's backports suite when the installed one is older than
/// [`RUNNER_QEMU_MAJOR`].
pub fn ensure_runner_qemu() -> Result<()> {
    if qemu_major().is_some_and(|major| major >= RUNNER_QEMU_MAJOR) {
        return Ok(());
    }
    let suite = crate::backports::ensure()?;
    eprintln!("xtask: installing QEMU {RUNNER_QEMU_MAJOR} from {suite} for the nested-KVM runner");
    let hint = format!("the runner needs QEMU {RUNNER_QEMU_MAJOR} from {suite}");
    apt_get(&["update", "-q"], &hint)?;
    apt_get(
        &[
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "-t",
            &suite,
            "qemu-system-x86",
        ],
        &hint,
    )?;
    match qemu_major() {
        Some(major) if major >= RUNNER_QEMU_MAJOR => Ok(()),
        other => bail!("QEMU {other:?} after installing from {suite}; the runner needs {RUNNER_QEMU_MAJOR} or later"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_versions_are_read() {
        assert_eq!(
            parse_qemu_major(
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright"
            ),
            Some(10)
        );
        assert_eq!(
            parse_qemu_major("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"),
            Some(7)
        );
        assert_eq!(parse_qemu_major("something else"), None);
    }
}
