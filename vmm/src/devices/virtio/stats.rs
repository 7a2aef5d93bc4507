//! Per-device counters: what the guest did wrong, and what the device moved.
//!
//! Counters are atomics so the API thread can read them while the event loop and the vCPU
//! threads update them.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Live counters of one virtio device.
#[derive(Debug, Default)]
pub struct DeviceStats {
    /// MMIO accesses outside the register set, of the wrong width, or to a read-only register.
    pub bad_mmio_accesses: AtomicU64,
    /// Driver features outside what the device offers, or without `VIRTIO_F_VERSION_1`.
    pub bad_feature_negotiations: AtomicU64,
    /// Status writes that skip or undo a step of the initialisation sequence.
    pub bad_status_transitions: AtomicU64,
    /// Queue setup refused: bad size, misaligned or unmapped rings, bad queue index, or setup
    /// outside the window the specification allows.
    pub bad_queue_configs: AtomicU64,
    /// Queue notifications before `DRIVER_OK`, or for a queue that is not ready.
    pub early_notifications: AtomicU64,
    /// Descriptor chains refused: outside guest memory, looping, too long, bad index, bad
    /// available-ring index, or malformed for the device.
    pub invalid_chains: AtomicU64,
    /// Requests completed with an error status.
    pub failed_requests: AtomicU64,
    /// Requests completed successfully.
    pub completed_requests: AtomicU64,
    /// Bytes moved from the guest to the backend (disk writes, transmitted frames).
    pub bytes_from_guest: AtomicU64,
    /// Bytes moved from the backend into the guest (disk reads, received frames, entropy).
    pub bytes_to_guest: AtomicU64,
    /// Frames or requests dropped because the device is prohibited or not running.
    pub dropped_while_prohibited: AtomicU64,
    /// Host-side failures (disk I/O errors, tap errors, eventfd errors).
    pub backend_errors: AtomicU64,
}

/// A point-in-time copy of [`DeviceStats`], for the API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatsSnapshot {
    pub bad_mmio_accesses: u64,
    pub bad_feature_negotiations: u64,
    pub bad_status_transitions: u64,
    pub bad_queue_configs: u64,
    pub early_notifications: u64,
    pub invalid_chains: u64,
    pub failed_requests: u64,
    pub completed_requests: u64,
    pub bytes_from_guest: u64,
    pub bytes_to_guest: u64,
    pub dropped_while_prohibited: u64,
    pub backend_errors: u64,
}

impl DeviceStatsSnapshot {
    /// Everything the guest did wrong, summed.
    pub fn guest_errors(&self) -> u64 {
        self.bad_mmio_accesses
            + self.bad_feature_negotiations
            + self.bad_status_transitions
            + self.bad_queue_configs
            + self.early_notifications
            + self.invalid_chains
    }
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl DeviceStats {
    pub fn snapshot(&self) -> DeviceStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DeviceStatsSnapshot {
            bad_mmio_accesses: get(&self.bad_mmio_accesses),
            bad_feature_negotiations: get(&self.bad_feature_negotiations),
            bad_status_transitions: get(&self.bad_status_transitions),
            bad_queue_configs: get(&self.bad_queue_configs),
            early_notifications: get(&self.early_notifications),
            invalid_chains: get(&self.invalid_chains),
            failed_requests: get(&self.failed_requests),
            completed_requests: get(&self.completed_requests),
            bytes_from_guest: get(&self.bytes_from_guest),
            bytes_to_guest: get(&self.bytes_to_guest),
            dropped_while_prohibited: get(&self.dropped_while_prohibited),
            backend_errors: get(&self.backend_errors),
        }
    }
}
