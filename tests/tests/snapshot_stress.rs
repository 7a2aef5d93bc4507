//! The short CI version of the suspend/resume stress (`cargo xtask bench stress` runs the long
//! one): guests whose every CPU copies and checksums memory, suspended at random moments and
//! restored lazily and eagerly in turn, with zero failures allowed.

use virmo_tests::stress::{self, StressConfig};
use virmo_tests::TestEnv;

const CYCLES: u32 = 8;

fn stress_without_failures(vcpus: u32) {
    let env = TestEnv::get();
    let config = StressConfig::new(vcpus, CYCLES);
    let report = stress::run(&env, &config, &mut |line| eprintln!("{line}"));
    assert_eq!(report.cycles_done, CYCLES, "{report:?}");
    assert!(
        report.failures.is_empty(),
        "{} of {CYCLES} cycles failed (seed {}): {:#?}",
        report.failures.len(),
        report.seed,
        report.failures
    );
    assert_eq!(report.lazy_cycles, CYCLES / 2);
    assert_eq!(report.eager_cycles, CYCLES / 2);
}

#[test]
fn snapshot_stress_2_vcpus_random_suspends_lose_nothing() {
    stress_without_failures(2);
}
