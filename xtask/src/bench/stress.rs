//! `cargo xtask bench stress`: the suspend/resume stress of `virmo_tests::stress` with many
//! cycles per vCPU count; prints each configuration's cycles, failures and timing medians, and
//! fails when any cycle failed.

use std::path::PathBuf;

use anyhow::{bail, Result};
use virmo_tests::stress::{self, StressConfig};
use virmo_tests::TestEnv;

use super::measure;

pub struct StressBench {
    pub vmm: PathBuf,
    pub images: PathBuf,
    pub cycles: u32,
    pub vcpus: Vec<u32>,
    pub seed: Option<u64>,
}

pub fn run_here(b: &StressBench) -> Result<()> {
    let env = TestEnv {
        vmm: b.vmm.clone(),
        images: b.images.clone(),
    };
    let mut reports = Vec::new();
    for &vcpus in &b.vcpus {
        let mut config = StressConfig::new(vcpus, b.cycles);
        if let Some(seed) = b.seed {
            config.seed = seed;
        }
        println!(
            "stress: {vcpus} vCPU(s), {} MiB, {} cycles, seed {}",
            config.memory_mib, config.cycles, config.seed
        );
        let report = stress::run(&env, &config, &mut |line| println!("{line}"));
        reports.push(report);
    }
    println!();
    println!("suspend/resume stress: each suspend at a random moment (0-1.5 s after every worker reported; workers idle 0-0.4 s between rounds), lazy and eager restore alternating");
    println!("| vCPUs | seed | cycles done | lazy | eager | failures | suspend s (median) | restore to every CPU working again s (median) |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut failed = 0;
    for mut r in reports {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.3} | {:.3} |",
            r.vcpus,
            r.seed,
            r.cycles_done,
            r.lazy_cycles,
            r.eager_cycles,
            r.failures.len(),
            measure::stats(&mut r.suspend_s).0,
            measure::stats(&mut r.back_s).0,
        );
        for f in &r.failures {
            println!(
                "  failure: {} vCPU(s), cycle {} ({}): {}",
                r.vcpus,
                f.cycle,
                f.mode.as_str(),
                f.what
            );
        }
        failed += r.failures.len();
    }
    if failed > 0 {
        bail!("{failed} stress cycle(s) failed");
    }
    Ok(())
}
