//! The fuzz targets of `vmm/fuzz/` in `cargo xtask test`: built on stable without libFuzzer
//! (they then replay a corpus and pseudo-random inputs, `vmm/fuzz/src/lib.rs`) and each run
//! briefly, so CI needs neither nightly nor cargo-fuzz. Long runs: vmm/fuzz/README.md.

use anyhow::{bail, Context, Result};

use crate::cargo;

/// Each target, and how many pseudo-random inputs CI gives it (a few seconds each).
const TARGETS: &[(&str, u32)] = &[
    ("http_request", 20_000),
    ("http_response", 20_000),
    ("virtio_chain", 20_000),
    ("virtio_block", 2_000),
    ("virtio_net", 200),
    ("virtio_rng", 2_000),
    ("virtio_mmio", 10_000),
    ("snapshot_state", 20_000),
    ("snapshot_manifest", 20_000),
    ("snapshot_hot_set", 20_000),
    ("boot_image", 500),
];

pub fn smoke() -> Result<()> {
    eprintln!("xtask: fuzz targets (stable build, seeds and random inputs)");
    let manifest = crate::paths::workspace_root().join("vmm/fuzz/Cargo.toml");
    let manifest = manifest.to_str().context("fuzz manifest path")?;
    let built = cargo::executables(&["build", "--release", "--manifest-path", manifest, "--bins"])?;
    for (name, runs) in TARGETS {
        let Some((_, exe)) = built.iter().find(|(n, _)| n == name) else {
            bail!("fuzz target {name} was not built");
        };
        let seeds = crate::paths::workspace_root()
            .join("vmm/fuzz/seeds")
            .join(name);
        let mut cmd = std::process::Command::new(exe);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        let status = cmd
            .args(["--random", &runs.to_string()])
            .status()
            .with_context(|| format!("running fuzz target {name}"))?;
        if !status.success() {
            bail!("fuzz target {name} failed ({status})");
        }
    }
    Ok(())
}
