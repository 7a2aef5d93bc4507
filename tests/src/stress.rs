//! Suspend/resume stress: many suspend/resume cycles of one guest whose every CPU keeps copying
//! and checksumming memory (`guest-images/scenarios/stress.sh`), each suspend at a random moment,
//! lazy and eager restore alternating. A cycle fails when the VMM does not suspend, the restored
//! guest does not run, a worker reports a bad checksum, or a worker does not go on from where it
//! was (its counter restarted or stalled). After a failure a fresh guest is booted and the cycles
//! go on, so one run counts every failure, not only the first.
//!
//! Used by the short CI test (`tests/tests/snapshot_stress.rs`) and by `cargo xtask bench stress`.

use std::path::Path;
use std::time::{Duration, Instant};

use vmm::api::client::VmmClient;
use vmm::api::types::RunState;

use crate::{Guest, TempDir, TestEnv};

/// How long the guest may take to boot and start its workers.
const BOOT: Duration = Duration::from_secs(120);
/// How long every worker of a restored guest may take to report again.
const PROGRESS: Duration = Duration::from_secs(60);
/// How far a worker's counter may have moved between the last line the test read before the
/// suspend and its first line after the resume (lines printed while the save ran are lost).
const MAX_COUNTER_STEP: u64 = 3;
/// Lines of console kept in a failure report.
const TAIL_LINES: usize = 30;

/// One stress run.
#[derive(Clone, Debug)]
pub struct StressConfig {
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Suspend/resume cycles to run.
    pub cycles: u32,
    /// Seed of the random suspend moments (printed, so a run can be repeated).
    pub seed: u64,
    /// A suspend comes after a random wait of up to this long once every worker has reported.
    pub max_delay: Duration,
    /// Size of each worker's buffer.
    pub buffer_kib: u32,
    /// Each worker idles a random 0 to this many milliseconds between rounds (0: never), so
    /// suspends also catch halted vCPUs.
    pub idle_max_ms: u32,
}

impl StressConfig {
    pub fn new(vcpus: u32, cycles: u32) -> Self {
        Self {
            vcpus,
            memory_mib: 256,
            cycles,
            seed: seed_from_clock(),
            max_delay: Duration::from_millis(1500),
            buffer_kib: 4096,
            idle_max_ms: 400,
        }
    }
}

/// Which restore a cycle used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreMode {
    Lazy,
    Eager,
}

impl RestoreMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lazy => "lazy",
            Self::Eager => "eager",
        }
    }
}

/// A failed cycle.
#[derive(Clone, Debug)]
pub struct StressFailure {
    pub cycle: u32,
    pub mode: RestoreMode,
    pub what: String,
    /// The last console and VMM lines of the guest that failed.
    pub tail: String,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct StressReport {
    pub vcpus: u32,
    pub seed: u64,
    pub cycles_done: u32,
    pub lazy_cycles: u32,
    pub eager_cycles: u32,
    pub failures: Vec<StressFailure>,
    /// Seconds from the snapshot request to its answer.
    pub suspend_s: Vec<f64>,
    /// Seconds from starting the restoring VMM to every worker reporting again.
    pub back_s: Vec<f64>,
}

/// Runs `config.cycles` suspend/resume cycles; every failure is in the report, and progress and
/// failures are also told to `log` as they happen.
pub fn run(env: &TestEnv, config: &StressConfig, log: &mut dyn FnMut(&str)) -> StressReport {
    let snapshots = TempDir::new(&format!("stress-{}", config.vcpus));
    let dir = snapshots.path().join("vm");
    let mut random = XorShift(config.seed | 1);
    let mut report = StressReport {
        vcpus: config.vcpus,
        seed: config.seed,
        ..StressReport::default()
    };
    let mut current: Option<(Guest, Vec<u64>)> = None;
    for cycle in 0..config.cycles {
        let mode = if cycle % 2 == 0 {
            RestoreMode::Lazy
        } else {
            RestoreMode::Eager
        };
        let (guest, counters) = match current.take() {
            Some(running) => running,
            None => match boot(env, config) {
                Ok(running) => running,
                Err(what) => {
                    // A guest that does not even boot is not a suspend/resume failure, but the
                    // run cannot go on meaningfully.
                    report.failures.push(StressFailure {
                        cycle,
                        mode,
                        what: format!("fresh guest: {what}"),
                        tail: String::new(),
                    });
                    break;
                }
            },
        };
        let delay = random.below(config.max_delay.as_millis() as u64 + 1);
        std::thread::sleep(Duration::from_millis(delay));
        match one_cycle(env, guest, counters, &dir, mode, &mut report) {
            Ok(next) => {
                current = Some(next);
                report.cycles_done += 1;
                match mode {
                    RestoreMode::Lazy => report.lazy_cycles += 1,
                    RestoreMode::Eager => report.eager_cycles += 1,
                }
            }
            Err((what, tail)) => {
                report.cycles_done += 1;
                log(&format!(
                    "stress: {} vCPU(s), cycle {cycle} ({}) FAILED after a {delay} ms wait: {what}\n{tail}",
                    config.vcpus,
                    mode.as_str()
                ));
                report.failures.push(StressFailure {
                    cycle,
                    mode,
                    what,
                    tail,
                });
            }
        }
        if (cycle + 1) % 10 == 0 {
            log(&format!(
                "stress: {} vCPU(s): {} cycles, {} failures",
                config.vcpus,
                cycle + 1,
                report.failures.len()
            ));
        }
    }
    report
}

type CycleError = (String, String);

/// Suspends `guest`, restores it with `mode`, and waits until every worker went on.
fn one_cycle(
    env: &TestEnv,
    mut guest: Guest,
    counters: Vec<u64>,
    dir: &Path,
    mode: RestoreMode,
    report: &mut StressReport,
) -> Result<(Guest, Vec<u64>), CycleError> {
    let fail = |what: String, guest: &Guest| (what, tail(guest));
    let client = VmmClient::new(&guest.api_socket).with_snapshot_timeout(Duration::from_secs(120));
    let t0 = Instant::now();
    if let Err(e) = client.snapshot(dir, false) {
        // The whole error chain, and how the VMM ended if it did (a signal says a crash).
        let mut what = format!("suspend failed: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            what.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        match guest.try_wait_exit(Duration::from_secs(5)) {
            Some(status) => what.push_str(&format!("; the VMM ended with {status:?}")),
            None => what.push_str("; the VMM is still running"),
        }
        return Err(fail(what, &guest));
    }
    report.suspend_s.push(t0.elapsed().as_secs_f64());
    if let Err(what) = wait_exit_ok(&mut guest) {
        return Err(fail(what, &guest));
    }
    // Where each worker was: the last line it printed before the VMM saved the guest.
    let mut before = counters;
    for line in guest.transcript_lines() {
        if let Some((worker, Ok(n))) = parse(&line) {
            if let Some(slot) = before.get_mut(worker) {
                *slot = (*slot).max(n);
            }
        }
    }
    drop(guest);

    let started = Instant::now();
    let mut restored = env.restore(dir).memory_restore(mode.as_str()).spawn();
    if let Err(what) = wait_running(&restored) {
        return Err(fail(what, &restored));
    }
    let after = match await_workers(&mut restored, before.len(), Some(&before), PROGRESS) {
        Ok(after) => after,
        Err(what) => return Err(fail(what, &restored)),
    };
    report.back_s.push(started.elapsed().as_secs_f64());
    Ok((restored, after))
}

/// Boots a fresh stress guest and waits for every worker's first report.
fn boot(env: &TestEnv, config: &StressConfig) -> Result<(Guest, Vec<u64>), String> {
    let mut guest = env
        .guest("stress")
        .cmdline(format!(
            "console=ttyS0 quiet panic=-1 virmo.scenario=stress virmo.stress_kib={} virmo.stress_idle_ms={}",
            config.buffer_kib, config.idle_max_ms
        ))
        .vcpus(config.vcpus)
        .memory_mib(config.memory_mib)
        .spawn();
    let workers: usize = guest
        .try_wait_for("VIRMO-STRESS-WORKERS=", BOOT)
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("no worker count within {BOOT:?}:\n{}", tail(&guest)))?;
    if workers != config.vcpus as usize {
        return Err(format!(
            "the guest sees {workers} CPUs, not {}",
            config.vcpus
        ));
    }
    let counters = await_workers(&mut guest, workers, None, BOOT)
        .map_err(|e| format!("{e}\n{}", tail(&guest)))?;
    Ok((guest, counters))
}

/// Waits until each of `workers` has printed a line within `timeout`: with `before`, its first
/// counter must be in `(before, before + MAX_COUNTER_STEP]`. Returns the counters.
fn await_workers(
    guest: &mut Guest,
    workers: usize,
    before: Option<&[u64]>,
    timeout: Duration,
) -> Result<Vec<u64>, String> {
    let mut seen: Vec<Option<u64>> = vec![None; workers];
    let deadline = Instant::now() + timeout;
    loop {
        if seen.iter().all(Option::is_some) {
            return Ok(seen.into_iter().flatten().collect());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(rest) = guest.try_wait_for("VIRMO-STRESS=", left) else {
            let missing: Vec<usize> = (0..seen.len()).filter(|&w| seen[w].is_none()).collect();
            return Err(if guest.is_running() {
                format!("workers {missing:?} did not report within {timeout:?}")
            } else {
                format!("the VMM exited while waiting for workers {missing:?}")
            });
        };
        let (worker, result) = parse(&format!("VIRMO-STRESS={rest}"))
            .ok_or_else(|| format!("unreadable worker line {rest:?}"))?;
        let n = result.map_err(|n| format!("worker {worker} found its buffer damaged at {n}"))?;
        let Some(slot) = seen.get_mut(worker) else {
            return Err(format!("a worker {worker} that did not exist before"));
        };
        if slot.is_some() {
            continue;
        }
        if let Some(before) = before {
            let last = before[worker];
            if n <= last || n > last + MAX_COUNTER_STEP {
                return Err(format!(
                    "worker {worker} went from {last} to {n}: the guest did not continue where it was"
                ));
            }
        }
        *slot = Some(n);
    }
}

/// `VIRMO-STRESS=<worker> ok|bad <n>` → (worker, Ok(n) or Err(n) for bad).
fn parse(line: &str) -> Option<(usize, Result<u64, u64>)> {
    let rest = line.split("VIRMO-STRESS=").nth(1)?;
    let mut words = rest.split_whitespace();
    let worker = words.next()?.parse().ok()?;
    let verdict = words.next()?;
    let n = words.next()?.parse().ok()?;
    match verdict {
        "ok" => Some((worker, Ok(n))),
        "bad" => Some((worker, Err(n))),
        _ => None,
    }
}

fn wait_exit_ok(guest: &mut Guest) -> Result<(), String> {
    match guest
        .try_wait_exit(Duration::from_secs(30))
        .map(|s| s.code())
    {
        Some(Some(0)) => Ok(()),
        Some(other) => Err(format!("the VMM ended with {other:?} after the suspend")),
        None => Err("the VMM did not exit after the suspend".into()),
    }
}

fn wait_running(guest: &Guest) -> Result<(), String> {
    let client = VmmClient::new(&guest.api_socket);
    client
        .wait_ready(Duration::from_secs(30))
        .map_err(|e| format!("the restored VMM's API does not answer: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.info() {
            Ok(info) if info.state == RunState::Running => return Ok(()),
            Ok(info) if info.state == RunState::Created && Instant::now() < deadline => {}
            Ok(info) => return Err(format!("the restored VM is {:?}", info.state)),
            Err(e) => return Err(format!("info after restore: {e}")),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn tail(guest: &Guest) -> String {
    let lines = guest.transcript_lines();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// xorshift64: enough randomness for suspend moments, and repeatable from the seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_lines_parse() {
        assert_eq!(parse("VIRMO-STRESS=0 ok 12"), Some((0, Ok(12))));
        assert_eq!(parse("junk VIRMO-STRESS=3 bad 7"), Some((3, Err(7))));
        assert_eq!(parse("VIRMO-STRESS=1 maybe 7"), None);
        assert_eq!(parse("VIRMO-STRESS-WORKERS=2"), None);
    }

    #[test]
    fn random_moments_stay_below_the_bound_and_repeat_from_the_seed() {
        let mut a = XorShift(42);
        let mut b = XorShift(42);
        for _ in 0..1000 {
            let x = a.below(1501);
            assert!(x <= 1500);
            assert_eq!(x, b.below(1501));
        }
    }
}
