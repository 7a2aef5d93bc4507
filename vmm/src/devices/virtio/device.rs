//! What a virtio device type (blk, net, rng) provides to the transport.
//!
//! The transport owns the queues, the eventfds, the interrupt and the registers; a device owns
//! its backend (file, tap, entropy source), its config space and its `allowed` gate. The
//! transport calls the device with a [`QueueContext`] when a queue was notified or a backend fd
//! became ready.

use crate::devices::virtio::guest_log::guest_warn;
use std::os::unix::io::RawFd;

use event_manager::EventSet;
use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::block::BlockState;
use super::chain::{pop_chain_counted, Popped};
use super::config::DeviceClass;
use super::net::NetState;
use super::rng::RngState;
use super::stats::{bump, DeviceStats};
use super::vsock::VsockState;

/// Everything a device may touch while it handles an event.
pub struct QueueContext<'a> {
    pub mem: &'a GuestMemoryMmap,
    /// Every queue of the device; a queue the driver did not make ready is never handed out.
    queues: &'a mut [Queue],
    pub stats: &'a DeviceStats,
    /// `DRIVER_OK` is set and the device is not failed: queues may be used.
    pub active: bool,
    /// `VIRTIO_RING_F_INDIRECT_DESC` was negotiated.
    indirect: bool,
    /// Queues (bit per index) whose used ring was written: the transport decides on the
    /// interrupt after the device returns.
    used_written: u64,
    /// Queues (bit per index) the device emptied: [`QueueContext::pop`] found no chain. The
    /// transport then asks the driver to notify again (`avail_event`) and looks once more.
    drained: u64,
    /// Descriptors this run may still read (see [`DESCRIPTORS_PER_RUN`]).
    budget: u32,
    /// Queues (bit per index) left with chains because the budget ran out: the transport
    /// makes the event loop come back to them after it served everything else.
    deferred: u64,
}

/// Most descriptors one run of a device (one event: a notification or a backend fd) reads
/// before it leaves the rest of its queues for the next turn of the event loop. Without it a
/// guest that keeps making looping chains available as fast as the device refuses them (256
/// descriptors each) held the device's lock, and the event loop, for as long as it liked:
/// the other devices of the VM starved and `GET /v1/devices` (which takes each device's lock)
/// waited (docs/security.md, "Hostile guests"). 4096 is sixteen full-table chains, or well
/// over a thousand ordinary three-descriptor requests.
pub const DESCRIPTORS_PER_RUN: u32 = 4096;

impl<'a> QueueContext<'a> {
    pub(crate) fn new(
        mem: &'a GuestMemoryMmap,
        queues: &'a mut [Queue],
        stats: &'a DeviceStats,
        active: bool,
        indirect: bool,
        budget: u32,
    ) -> Self {
        QueueContext {
            mem,
            queues,
            stats,
            active,
            indirect,
            used_written: 0,
            drained: 0,
            budget,
            deferred: 0,
        }
    }

    fn usable(&self, queue: usize) -> bool {
        self.active && self.queues.get(queue).is_some_and(|q| q.ready())
    }

    /// Takes the next checked chain off `queue`. Refused chains are counted, given back to
    /// the guest and skipped, so this returns only a good chain or `None`.
    pub fn pop(&mut self, queue: usize) -> Option<super::chain::Chain> {
        if !self.usable(queue) {
            return None;
        }
        loop {
            if self.budget == 0 {
                self.deferred |= queue_bit(queue);
                return None;
            }
            let mut read = 0;
            let popped = pop_chain_counted(
                &mut self.queues[queue],
                self.mem,
                self.stats,
                self.indirect,
                &mut read,
            );
            self.budget = self.budget.saturating_sub(read.max(1));
            match popped {
                Popped::Empty => {
                    self.drained |= queue_bit(queue);
                    return None;
                }
                Popped::Chain(chain) => return Some(chain),
                Popped::Refused(_) => self.used_written |= queue_bit(queue),
            }
        }
    }

    /// Puts the chain the last [`QueueContext::pop`] of `queue` returned back at the front of
    /// the queue, untouched (the device found nothing to put in it).
    pub fn undo_pop(&mut self, queue: usize) {
        if self.usable(queue) {
            let q = &mut self.queues[queue];
            let next = q.next_avail().wrapping_sub(1);
            q.set_next_avail(next);
        }
    }

    /// Returns chain `head` to the guest with `len` bytes written.
    pub fn complete(&mut self, queue: usize, head: u16, len: u32) {
        if !self.usable(queue) {
            return;
        }
        match self.queues[queue].add_used(self.mem, head, len) {
            Ok(()) => self.used_written |= queue_bit(queue),
            Err(err) => {
                guest_warn!(%err, head, "cannot write used ring");
                bump(&self.stats.invalid_chains);
            }
        }
    }

    /// Queues (bit per index) whose used ring was written.
    pub(crate) fn used_written(&self) -> u64 {
        self.used_written
    }

    /// Queues (bit per index) the device emptied.
    pub(crate) fn drained(&self) -> u64 {
        self.drained
    }

    /// Queues (bit per index) left with chains when the budget ran out.
    pub(crate) fn deferred(&self) -> u64 {
        self.deferred
    }

    /// Descriptors this run may still read.
    pub(crate) fn budget(&self) -> u32 {
        self.budget
    }
}

/// The bit of queue `index` in a [`QueueContext`] queue set (devices have a handful of queues).
pub(crate) fn queue_bit(index: usize) -> u64 {
    1u64.checked_shl(index as u32).unwrap_or(0)
}

/// What changed when a device's `allowed` gate was switched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateChange {
    /// The config space changed: the transport bumps the generation and raises a
    /// configuration-change interrupt.
    pub config_changed: bool,
}

/// An fd the device wants watched on the event loop, beside its queue eventfds.
#[derive(Clone, Copy, Debug)]
pub struct BackendFd {
    pub fd: RawFd,
    pub events: EventSet,
}

/// Saved state of the device half (the transport saves its own half). Externally tagged: the
/// snapshot encoding (postcard) is not self-describing and cannot read internally tagged enums.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceState {
    Block(BlockState),
    Net(NetState),
    Rng(RngState),
    Vsock(VsockState),
}

/// Why a saved device state could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestoreError {
    #[error("saved state is for a {saved} device, this one is a {actual} device")]
    WrongDeviceType {
        saved: &'static str,
        actual: &'static str,
    },
    #[error("saved state does not match the device config: {0}")]
    ConfigMismatch(String),
    #[error("saved transport has {saved} queues, the device has {actual}")]
    QueueCount { saved: usize, actual: usize },
    #[error("saved queue {index} is invalid: {reason}")]
    BadQueue { index: usize, reason: String },
}

impl DeviceState {
    pub fn type_name(&self) -> &'static str {
        match self {
            DeviceState::Block(_) => "block",
            DeviceState::Net(_) => "net",
            DeviceState::Rng(_) => "rng",
            DeviceState::Vsock(_) => "vsock",
        }
    }
}

/// One virtio device type behind the MMIO transport.
pub trait VirtioDevice: Send {
    /// The virtio device ID (virtio 1.2, 5).
    fn device_type(&self) -> u32;
    fn class(&self) -> DeviceClass;
    /// Feature bits offered to the driver.
    fn features(&self) -> u64;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// The current bytes of the device configuration space.
    fn config_space(&self) -> Vec<u8>;
    /// Called at `DRIVER_OK` with the features the driver accepted.
    fn activate(&mut self, _acked_features: u64) {}
    /// Device reset: forget all guest-visible progress (but not the `allowed` gate).
    fn reset(&mut self);
    /// Queue `index` was notified (or work may be pending on it).
    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext<'_>);
    /// Extra fds to watch; the event for `backend_fds()[i]` is delivered as token `i`.
    fn backend_fds(&self) -> Vec<BackendFd> {
        Vec::new()
    }
    /// A backend fd became ready. `ctx.active` is false before `DRIVER_OK`.
    fn process_backend_event(&mut self, _token: usize, _ctx: &mut QueueContext<'_>) {}
    /// Switches the gate. Idempotent: switching to the current state changes nothing.
    fn set_allowed(&mut self, allowed: bool) -> GateChange;
    fn allowed(&self) -> bool;
    fn state(&self) -> DeviceState;
    fn restore(&mut self, state: &DeviceState) -> Result<(), RestoreError>;
}
