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
    let apt = |args: &[&str]| -> Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!(
                "`apt-get {}` failed ({status}); install these packages by hand (as root): {}",
                args.join(" "),
                missing.join(" ")
            );
        }
        Ok(())
    };
    apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    apt(&args)
}
