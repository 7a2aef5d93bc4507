//! Measuring one VMM process: time from spawn to a console marker, and its memory.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// One boot, measured.
#[derive(Debug, Clone, Copy)]
pub struct BootSample {
    pub to_marker: Duration,
    /// Resident memory of the whole process at the marker, KiB.
    pub rss_kib: u64,
    /// Resident memory of the guest RAM mapping at the marker, KiB.
    pub guest_rss_kib: u64,
    /// Peak resident memory of the process (VmHWM), KiB.
    pub peak_kib: u64,
}

impl BootSample {
    /// The VMM's own memory: resident memory minus the guest RAM it touched.
    pub fn overhead_kib(&self) -> u64 {
        self.rss_kib.saturating_sub(self.guest_rss_kib)
    }
}

/// A spawned VMM whose console lines arrive on a channel, stamped with their arrival time.
pub struct Console {
    pub child: Child,
    pub started: Instant,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl Console {
    pub fn spawn(cmd: Command) -> Result<Self> {
        Self::spawn_with_stdin(cmd, Stdio::null())
    }

    /// Like [`spawn`](Self::spawn), with the VMM's stdin (the guest's console input) a pipe
    /// whose writing end is returned.
    pub fn spawn_with_input(cmd: Command) -> Result<(Self, ChildStdin)> {
        let mut console = Self::spawn_with_stdin(cmd, Stdio::piped())?;
        let input = console.child.stdin.take().context("stdin")?;
        Ok((console, input))
    }

    fn spawn_with_stdin(mut cmd: Command, stdin: Stdio) -> Result<Self> {
        let started = Instant::now();
        let mut child = cmd
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the VMM under test")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                let text = String::from_utf8_lossy(&line).to_string();
                if tx.send((Instant::now(), text)).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            started,
            lines,
        })
    }

    /// Waits for a line containing `marker`; returns when it arrived.
    pub fn wait_for(&mut self, marker: &str, timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) if line.contains(marker) => return Ok(at),
                Ok(_) => {}
                Err(_) => bail!("no {marker:?} on the console within {timeout:?}"),
            }
        }
    }

    /// Waits for a line containing `marker`; returns when it arrived and the whole line.
    pub fn wait_line(&mut self, marker: &str, timeout: Duration) -> Result<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) if line.contains(marker) => return Ok((at, line)),
                Ok(_) => {}
                Err(_) => bail!("no {marker:?} on the console within {timeout:?}"),
            }
        }
    }

    /// What the VMM's threads are doing, for a report when it takes far too long
    /// ([`crate::threads::report`]), then the last kernel messages.
    pub fn diagnose(&self) -> String {
        let mut out = crate::threads::report(self.child.id());
        if let Ok(log) = Command::new("dmesg").output() {
            let text = String::from_utf8_lossy(&log.stdout);
            let lines: Vec<&str> = text.lines().collect();
            out.push_str("last kernel messages:\n");
            for line in &lines[lines.len().saturating_sub(30)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Stops the VMM: SIGTERM, then SIGKILL if it has not exited within 2 s, then gives up
    /// after 10 s more. In the nested runner the QEMU under test has now and then stayed stuck
    /// in the runner's KVM (a soft lockup of its vCPU thread, whatever the signal); waiting for
    /// it hung the whole benchmark, so it is left behind with a warning.
    pub fn kill(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill() only sends a signal; `pid` is our own child, not yet reaped (so
            // the ID cannot have been reused).
            unsafe { libc::kill(pid, libc::SIGTERM) };
            if self.exited_within(Duration::from_secs(2)) {
                return;
            }
        }
        let _ = self.child.kill();
        if !self.exited_within(Duration::from_secs(10)) {
            println!(
                "bench: warning: process {} did not exit after SIGKILL; left behind",
                self.child.id()
            );
        }
    }

    fn exited_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `cmd`, waits for a stdout line containing `marker`, measures, kills the process.
pub fn boot_to_marker(
    cmd: Command,
    marker: &str,
    guest_mib: u64,
    timeout: Duration,
) -> Result<BootSample> {
    let mut console = Console::spawn(cmd)?;
    let at = console.wait_for(marker, timeout)?;
    let pid = console.child.id();
    let (rss_kib, guest_rss_kib) = rss_split(pid, guest_mib)?;
    Ok(BootSample {
        to_marker: at - console.started,
        rss_kib,
        guest_rss_kib,
        peak_kib: status_field(pid, "VmHWM:")?,
    })
}

/// (total RSS, RSS of the guest RAM mapping) in KiB, from /proc/PID/smaps. The guest RAM mapping
/// is the largest mapping of at least the guest's size.
fn rss_split(pid: u32, guest_mib: u64) -> Result<(u64, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).context("reading smaps")?;
    let mut total = 0;
    let mut guest = 0;
    let mut guest_size = 0;
    let mut size = 0;
    for line in smaps.lines() {
        if let Some(v) = line.strip_prefix("Size:") {
            size = kib(v);
        } else if let Some(v) = line.strip_prefix("Rss:") {
            let rss = kib(v);
            total += rss;
            if size >= guest_mib * 1024 && size > guest_size {
                guest_size = size;
                guest = rss;
            }
        }
    }
    if guest_size == 0 {
        bail!("found no guest RAM mapping of {guest_mib} MiB in process {pid}");
    }
    Ok((total, guest))
}

fn status_field(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).map(kib))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn kib(value: &str) -> u64 {
    value
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Spawns `cmd` with stdout and stderr merged and collects every line, stamped with its arrival
/// time since the spawn, until a line contains `until`, the process closes its output, or
/// `timeout` passes. For boot timelines.
pub fn stamped_output(
    mut cmd: Command,
    until: &str,
    timeout: Duration,
) -> Result<Vec<(Duration, String)>> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the VMM under test")?;
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().context("stdout")?;
    let stderr = child.stderr.take().context("stderr")?;
    forward_lines(stdout, tx.clone());
    forward_lines(stderr, tx);
    let deadline = started + timeout;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok((at, line)) => {
                let done = line.contains(until);
                out.push((at - started, line));
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(out)
}

fn forward_lines(from: impl std::io::Read + Send + 'static, to: mpsc::Sender<(Instant, String)>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            if to.send((Instant::now(), text)).is_err() {
                break;
            }
        }
    });
}

/// Median, min, max.
pub fn stats(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(stats(&mut [3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(stats(&mut [4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
    }

    #[test]
    fn kib_values_parse() {
        assert_eq!(kib("   1234 kB"), 1234);
    }
}
