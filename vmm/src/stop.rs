//! Why the VM stopped, and the one-shot signal that carries it from whoever noticed (a vCPU
//! thread, a device, the control API) to the thread that ends the VM.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::exit_status;

/// Why the VM stopped. The first reason raised wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The guest powered off through ACPI (sleep state S5).
    PowerOff,
    /// The guest asked for a reset (ACPI reset register or i8042 pulse).
    Reboot,
    /// The guest reported a kernel panic through pvpanic.
    GuestPanic,
    /// A vCPU triple-faulted.
    TripleFault { vcpu: u8 },
    /// KVM could not run the guest; `detail` says what KVM reported.
    KvmError { vcpu: u8, detail: String },
    /// The VMM failed.
    VmmError(String),
    /// The control API asked for an immediate stop.
    StopRequested,
    /// A graceful shutdown timed out and the VMM stopped the guest.
    ShutdownForced,
    /// The VM was saved to a snapshot (suspend) and its answer was sent: the process ends.
    Suspended,
}

impl StopReason {
    /// The process exit status for this reason (see [`crate::exit_status`]).
    pub fn exit_status(&self) -> i32 {
        match self {
            Self::PowerOff
            | Self::Reboot
            | Self::StopRequested
            | Self::ShutdownForced
            | Self::Suspended => exit_status::GUEST_STOPPED,
            Self::GuestPanic => exit_status::GUEST_PANIC,
            Self::TripleFault { .. } => exit_status::TRIPLE_FAULT,
            Self::KvmError { .. } => exit_status::KVM_ERROR,
            Self::VmmError(_) => exit_status::VMM_ERROR,
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PowerOff => write!(f, "the guest powered off"),
            Self::Reboot => write!(f, "the guest rebooted"),
            Self::GuestPanic => write!(f, "the guest kernel panicked"),
            Self::TripleFault { vcpu } => write!(f, "vCPU {vcpu} triple-faulted"),
            Self::KvmError { vcpu, detail } => write!(
                f,
                "KVM could not run vCPU {vcpu} ({detail}); the host's KVM could not run this guest"
            ),
            Self::VmmError(msg) => write!(f, "VMM internal error: {msg}"),
            Self::StopRequested => write!(f, "stopped on request"),
            Self::ShutdownForced => write!(f, "stopped by force after the shutdown timeout"),
            Self::Suspended => write!(f, "suspended: the VM was saved to a snapshot"),
        }
    }
}

/// A one-shot, first-writer-wins stop signal shared by every part of the VM.
#[derive(Debug, Default)]
pub struct StopSignal {
    reason: Mutex<Option<StopReason>>,
    raised: Condvar,
}

impl StopSignal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `reason` unless a reason was already recorded. Returns true if this call set it.
    pub fn raise(&self, reason: StopReason) -> bool {
        let mut slot = self.lock();
        if slot.is_some() {
            return false;
        }
        *slot = Some(reason);
        self.raised.notify_all();
        true
    }

    /// The recorded reason, if any.
    pub fn reason(&self) -> Option<StopReason> {
        self.lock().clone()
    }

    /// Blocks until a reason is raised.
    pub fn wait(&self) -> StopReason {
        let mut slot = self.lock();
        loop {
            if let Some(reason) = slot.as_ref() {
                return reason.clone();
            }
            slot = self
                .raised
                .wait(slot)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Blocks until a reason is raised or `timeout` passes.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<StopReason> {
        let deadline = Instant::now() + timeout;
        let mut slot = self.lock();
        loop {
            if let Some(reason) = slot.as_ref() {
                return Some(reason.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            slot = self
                .raised
                .wait_timeout(slot, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<StopReason>> {
        // A panicking holder cannot leave an Option half-written: recover the value.
        self.reason
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn first_reason_wins() {
        let signal = StopSignal::new();
        assert!(signal.raise(StopReason::GuestPanic));
        assert!(!signal.raise(StopReason::PowerOff));
        assert_eq!(signal.wait(), StopReason::GuestPanic);
    }

    #[test]
    fn wait_timeout_returns_none_without_reason() {
        let signal = StopSignal::new();
        assert_eq!(signal.wait_timeout(Duration::from_millis(10)), None);
    }

    #[test]
    fn wait_wakes_on_raise_from_other_thread() {
        let signal = Arc::new(StopSignal::new());
        let raiser = Arc::clone(&signal);
        let t = std::thread::spawn(move || raiser.raise(StopReason::Reboot));
        assert_eq!(signal.wait(), StopReason::Reboot);
        assert!(t.join().unwrap());
    }

    #[test]
    fn exit_statuses_match_the_documented_table() {
        assert_eq!(StopReason::PowerOff.exit_status(), 0);
        assert_eq!(StopReason::Reboot.exit_status(), 0);
        assert_eq!(StopReason::StopRequested.exit_status(), 0);
        assert_eq!(StopReason::ShutdownForced.exit_status(), 0);
        assert_eq!(StopReason::Suspended.exit_status(), 0);
        assert_eq!(StopReason::GuestPanic.exit_status(), 2);
        assert_eq!(StopReason::TripleFault { vcpu: 0 }.exit_status(), 3);
        let kvm = StopReason::KvmError {
            vcpu: 0,
            detail: String::new(),
        };
        assert_eq!(kvm.exit_status(), 4);
        assert_eq!(StopReason::VmmError(String::new()).exit_status(), 5);
    }
}
