//! Rate-limited warnings about what a guest did wrong.
//!
//! Every refused chain, malformed request or bad ring is the guest's doing, and a guest can
//! make them as fast as it can notify: logged one line each, a hostile guest wrote ~170 lines
//! (~40 KB) a second to the VMM's stderr — the agent's `vmm.log` on the host's disk — and the
//! formatting cost more VMM time than refusing the chains (docs/security.md, "Hostile guests").
//! The counters in [`super::stats::DeviceStats`] still count every one; the log keeps at most
//! [`BURST`] such lines per [`PERIOD`] for the whole process, then says how many it dropped.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Guest-error lines logged per period, at most.
pub const BURST: u64 = 10;
/// The rate limit's window.
pub const PERIOD: Duration = Duration::from_secs(1);

/// A fixed-window limit: `burst` events per `period`.
#[derive(Debug)]
pub struct RateLimit {
    burst: u64,
    period: Duration,
    state: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    start: Option<Instant>,
    admitted: u64,
    /// Events refused since the last admitted one.
    suppressed: u64,
}

impl RateLimit {
    pub const fn new(burst: u64, period: Duration) -> Self {
        Self {
            burst,
            period,
            state: Mutex::new(Window {
                start: None,
                admitted: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether an event at `now` may be logged: `Some(n)` with the number of events refused
    /// since the last admitted one, `None` when it must be dropped.
    pub fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let expired = w
            .start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.period);
        if expired {
            w.start = Some(now);
            w.admitted = 0;
        }
        if w.admitted >= self.burst {
            w.suppressed += 1;
            return None;
        }
        w.admitted += 1;
        Some(std::mem::take(&mut w.suppressed))
    }
}

/// The process-wide limit on guest-error lines.
pub static GUEST_ERRORS: RateLimit = RateLimit::new(BURST, PERIOD);

/// Whether a guest-error line may be logged now; logs the count of dropped ones first.
pub fn admit() -> bool {
    match GUEST_ERRORS.admit_at(Instant::now()) {
        Some(0) => true,
        Some(suppressed) => {
            tracing::warn!(
                suppressed,
                "guest-error warnings suppressed (at most {BURST} per {PERIOD:?}; the device counters have them all)"
            );
            true
        }
        None => false,
    }
}

/// `tracing::warn!` for what a guest did wrong, within [`GUEST_ERRORS`].
macro_rules! guest_warn {
    ($($arg:tt)*) => {
        if $crate::devices::virtio::guest_log::admit() {
            tracing::warn!($($arg)*);
        }
    };
}
pub(crate) use guest_warn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_guest_errors_logs_a_burst_per_period_and_counts_the_rest() {
        let limit = RateLimit::new(BURST, PERIOD);
        let t0 = Instant::now();
        // 100,000 refused chains within one period: only the burst is logged.
        let admitted = (0..100_000)
            .filter(|_| limit.admit_at(t0).is_some())
            .count();
        assert_eq!(admitted, BURST as usize);
        // The next period: logged again, with the count of what was dropped.
        assert_eq!(limit.admit_at(t0 + PERIOD), Some(100_000 - BURST));
        assert_eq!(limit.admit_at(t0 + PERIOD), Some(0));
        // A clock that goes backwards does not open a new window.
        for _ in 0..BURST {
            let _ = limit.admit_at(t0);
        }
        assert_eq!(limit.admit_at(t0), None);
    }
}
