//! Register file, status state machine and queue setup of one virtio-mmio device.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::regs;
use super::MmioDevice;
use crate::devices::virtio::config::DeviceClass;
use crate::devices::virtio::device::{queue_bit, QueueContext, VirtioDevice, DESCRIPTORS_PER_RUN};
use crate::devices::virtio::interrupt::Interrupt;
use crate::devices::virtio::spec::{features, status};
use crate::devices::virtio::stats::{bump, DeviceStats, DeviceStatsSnapshot};

/// Why a transport could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot create an eventfd for device {id}")]
    EventFd {
        id: String,
        #[source]
        source: io::Error,
    },
    #[error("device {id} asks for queue {index} of size {size}, which is not a power of two up to 32768")]
    QueueSize { id: String, index: usize, size: u16 },
}

/// The effective state of a device's gate, as reported back to whoever switched it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateState {
    pub id: String,
    pub class: DeviceClass,
    pub allowed: bool,
}

/// What the API reads of a device without taking its lock: the event loop holds that lock
/// while it works on the device's queues, for as long as a run's budget allows, and a guest
/// keeps it busy at will; listing the devices must not wait for it (docs/security.md,
/// "Hostile guests").
#[derive(Clone, Debug)]
pub struct DeviceObserver {
    stats: Arc<DeviceStats>,
    allowed: Arc<AtomicBool>,
}

impl DeviceObserver {
    pub fn stats(&self) -> DeviceStatsSnapshot {
        self.stats.snapshot()
    }

    /// The gate, as last set (by the API or a restore).
    pub fn allowed(&self) -> bool {
        self.allowed.load(Ordering::Acquire)
    }
}

/// One virtio device behind the virtio-mmio register interface.
///
/// Shared as `Arc<Mutex<VirtioMmioTransport>>` between the vCPU threads (MMIO accesses), the
/// event loop (queue and backend events, see the `MutEventSubscriber` impl) and the API thread
/// (gate, stats, snapshot).
pub struct VirtioMmioTransport {
    pub(super) id: String,
    pub(super) device: Box<dyn VirtioDevice>,
    pub(super) mem: GuestMemoryMmap,
    pub(super) queues: Vec<Queue>,
    pub(super) queue_evts: Vec<EventFd>,
    pub(super) interrupt: Arc<Interrupt>,
    pub(super) stats: Arc<DeviceStats>,
    pub(super) status: u32,
    pub(super) device_features_sel: u32,
    pub(super) driver_features_sel: u32,
    pub(super) driver_features: u64,
    pub(super) queue_sel: u32,
    pub(super) shm_sel: u32,
    pub(super) config_generation: u32,
    /// Mirror of the device's gate for [`DeviceObserver`].
    pub(super) allowed_mirror: Arc<AtomicBool>,
}

impl std::fmt::Debug for VirtioMmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioMmioTransport")
            .field("id", &self.id)
            .field("device_type", &self.device.device_type())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl VirtioMmioTransport {
    /// Puts `device` behind a fresh transport working on guest memory `mem`.
    pub fn new(
        id: impl Into<String>,
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
    ) -> Result<Self, TransportError> {
        let id = id.into();
        let event_fd = |id: &str| {
            EventFd::new(EFD_NONBLOCK).map_err(|source| TransportError::EventFd {
                id: id.to_owned(),
                source,
            })
        };
        let mut queues = Vec::new();
        let mut queue_evts = Vec::new();
        for (index, &size) in device.queue_max_sizes().iter().enumerate() {
            let queue = Queue::new(size).map_err(|_| TransportError::QueueSize {
                id: id.clone(),
                index,
                size,
            })?;
            queues.push(queue);
            queue_evts.push(event_fd(&id)?);
        }
        let interrupt = Interrupt::new().map_err(|source| TransportError::EventFd {
            id: id.clone(),
            source,
        })?;
        let allowed_mirror = Arc::new(AtomicBool::new(device.allowed()));
        Ok(VirtioMmioTransport {
            allowed_mirror,
            id,
            device,
            mem,
            queues,
            queue_evts,
            interrupt: Arc::new(interrupt),
            stats: Arc::new(DeviceStats::default()),
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            shm_sel: 0,
            config_generation: 0,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn class(&self) -> DeviceClass {
        self.device.class()
    }

    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// One eventfd per queue, in queue order. The core registers queue `i`'s eventfd with
    /// `VmFd::register_ioevent(evt, &IoEventAddress::Mmio(base + 0x50), i as u32)`.
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The eventfd the core registers as a KVM irqfd on the device's GSI.
    pub fn irq_evt(&self) -> &EventFd {
        self.interrupt.irq_evt()
    }

    pub fn stats(&self) -> DeviceStatsSnapshot {
        self.stats.snapshot()
    }

    /// The device status register (virtio 1.2, 2.1).
    pub fn device_status(&self) -> u32 {
        self.status
    }

    pub fn allowed(&self) -> bool {
        self.device.allowed()
    }

    /// A handle on the device's counters and gate that needs no lock on the transport.
    pub fn observer(&self) -> DeviceObserver {
        DeviceObserver {
            stats: Arc::clone(&self.stats),
            allowed: Arc::clone(&self.allowed_mirror),
        }
    }

    /// Publishes the device's gate to [`DeviceObserver`]s.
    pub(super) fn mirror_gate(&self) {
        self.allowed_mirror
            .store(self.device.allowed(), Ordering::Release);
    }

    /// Allows or prohibits the device while it runs. Idempotent; returns the effective state.
    /// See docs/devices.md for what each class does.
    pub fn set_allowed(&mut self, allowed: bool) -> GateState {
        let change = self.device.set_allowed(allowed);
        self.mirror_gate();
        if change.config_changed {
            self.config_generation = self.config_generation.wrapping_add(1);
            if self.driver_ok() && self.interrupt.signal_config_change().is_err() {
                bump(&self.stats.backend_errors);
            }
        }
        tracing::info!(id = %self.id, class = %self.device.class(), allowed = self.device.allowed(), "device gate set");
        if self.driver_ok() {
            // Held work (entropy requests, deferred frames) may move now.
            for index in 0..self.queues.len() {
                if self.queues[index].ready() {
                    self.run_queue(index);
                }
            }
        }
        GateState {
            id: self.id.clone(),
            class: self.device.class(),
            allowed: self.device.allowed(),
        }
    }

    /// The driver finished initialisation and nothing failed since.
    pub(super) fn driver_ok(&self) -> bool {
        self.status & status::DRIVER_OK != 0
            && self.status & (status::FAILED | status::DEVICE_NEEDS_RESET) == 0
    }

    /// What the device offers plus the ring features the transport implements for every
    /// device.
    pub(super) fn offered_features(&self) -> u64 {
        self.device.features() | features::RING_EVENT_IDX
    }

    pub(super) fn acked_features(&self) -> u64 {
        self.driver_features & self.offered_features()
    }

    /// Lets the device work on queue `index`, then raises the interrupt if the driver wants one.
    pub(crate) fn run_queue(&mut self, index: usize) {
        let active = self.driver_ok();
        let ready = self.queues.get(index).is_some_and(|q| q.ready());
        if active && ready {
            self.run_device(|device, ctx| device.process_queue(index, ctx));
        } else {
            bump(&self.stats.early_notifications);
        }
    }

    /// Lets the device handle an event on its backend fd number `token`.
    pub(crate) fn run_backend(&mut self, token: usize) {
        self.run_device(|device, ctx| device.process_backend_event(token, ctx));
    }

    /// Runs `work`, then, for each queue the device emptied, asks the driver to notify at the
    /// next buffer (`avail_event` with EVENT_IDX) and, if a buffer slipped in meanwhile, lets
    /// the device work on that queue again; finally raises one interrupt if any queue whose
    /// used ring was written needs it (`used_event` with EVENT_IDX, always without).
    fn run_device(&mut self, work: impl FnOnce(&mut dyn VirtioDevice, &mut QueueContext<'_>)) {
        /// Rounds of "buffers slipped in while re-arming": a driver racing us forever is
        /// served at its next notification instead.
        const MAX_REARM_ROUNDS: usize = 16;
        let indirect = self.acked_features() & features::RING_INDIRECT_DESC != 0;
        let active = self.driver_ok();
        let mut ctx = QueueContext::new(
            &self.mem,
            &mut self.queues,
            &self.stats,
            active,
            indirect,
            DESCRIPTORS_PER_RUN,
        );
        work(self.device.as_mut(), &mut ctx);
        let mut used = ctx.used_written();
        let mut drained = ctx.drained();
        let mut deferred = ctx.deferred();
        let mut budget = ctx.budget();
        for _ in 0..MAX_REARM_ROUNDS {
            let mut again = 0u64;
            for (index, queue) in self.queues.iter_mut().enumerate() {
                if drained & queue_bit(index) == 0 {
                    continue;
                }
                match queue.enable_notification(&self.mem) {
                    Ok(true) => again |= queue_bit(index),
                    Ok(false) => {}
                    Err(_) => bump(&self.stats.invalid_chains),
                }
            }
            if again == 0 {
                break;
            }
            drained = 0;
            for index in (0..self.queues.len()).filter(|&i| again & queue_bit(i) != 0) {
                let mut ctx = QueueContext::new(
                    &self.mem,
                    &mut self.queues,
                    &self.stats,
                    active,
                    indirect,
                    budget,
                );
                self.device.process_queue(index, &mut ctx);
                used |= ctx.used_written();
                drained |= ctx.drained();
                deferred |= ctx.deferred();
                budget = ctx.budget();
            }
        }
        // Out of budget: come back to these queues on the event loop's next turn, after
        // whatever else is ready (the guest need not notify again).
        for (index, evt) in self.queue_evts.iter().enumerate() {
            if deferred & queue_bit(index) != 0 && evt.write(1).is_err() {
                bump(&self.stats.backend_errors);
            }
        }
        let mut interrupt = false;
        for (index, queue) in self.queues.iter_mut().enumerate() {
            if used & queue_bit(index) != 0 {
                // Called for every such queue: it also resets the queue's count of entries
                // added since the last decision.
                interrupt |= queue.needs_notification(&self.mem).unwrap_or(true);
            }
        }
        if interrupt && self.interrupt.signal_used_ring().is_err() {
            bump(&self.stats.backend_errors);
        }
    }

    fn reset(&mut self) {
        self.device.reset();
        for queue in &mut self.queues {
            queue.reset();
        }
        self.interrupt.clear();
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.shm_sel = 0;
    }

    fn bad_access(&self, offset: u64, len: usize, what: &'static str) {
        tracing::debug!(id = %self.id, offset, len, what, "bad virtio-mmio access");
        bump(&self.stats.bad_mmio_accesses);
    }

    fn selected_queue(&self) -> Option<usize> {
        let sel = self.queue_sel as usize;
        (sel < self.queues.len()).then_some(sel)
    }

    /// The selected queue, if the driver may change its setup now (virtio 1.2, 4.2.3.2:
    /// after FEATURES_OK, before DRIVER_OK, while the queue is not ready).
    fn configurable_queue(&mut self) -> Option<&mut Queue> {
        let window = self.status & status::FEATURES_OK != 0 && self.status & status::DRIVER_OK == 0;
        match self.selected_queue() {
            Some(sel) if window && !self.queues[sel].ready() => Some(&mut self.queues[sel]),
            _ => {
                bump(&self.stats.bad_queue_configs);
                None
            }
        }
    }

    fn read_register(&self, offset: u64) -> Option<u32> {
        let queue = self.selected_queue().map(|sel| &self.queues[sel]);
        let value = match offset {
            regs::MAGIC_VALUE => regs::MAGIC,
            regs::VERSION => 2,
            regs::DEVICE_ID => self.device.device_type(),
            regs::VENDOR_ID => regs::VENDOR,
            regs::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            regs::QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            regs::QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            regs::INTERRUPT_STATUS => self.interrupt.status(),
            regs::STATUS => self.status,
            regs::SHM_LEN_LOW | regs::SHM_LEN_HIGH => u32::MAX,
            regs::SHM_BASE_LOW | regs::SHM_BASE_HIGH => u32::MAX,
            regs::CONFIG_GENERATION => self.config_generation,
            _ => return None,
        };
        Some(value)
    }

    fn write_register(&mut self, offset: u64, value: u32) -> bool {
        match offset {
            regs::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            regs::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            regs::DRIVER_FEATURES => self.write_driver_features(value),
            regs::QUEUE_SEL => self.queue_sel = value,
            regs::QUEUE_NUM => {
                if let Some(q) = self.configurable_queue() {
                    let ok = u16::try_from(value).is_ok_and(|size| q.try_set_size(size).is_ok());
                    if !ok {
                        bump(&self.stats.bad_queue_configs);
                    }
                }
            }
            regs::QUEUE_READY => self.write_queue_ready(value),
            regs::QUEUE_DESC_LOW
            | regs::QUEUE_DESC_HIGH
            | regs::QUEUE_AVAIL_LOW
            | regs::QUEUE_AVAIL_HIGH
            | regs::QUEUE_USED_LOW
            | regs::QUEUE_USED_HIGH => self.write_queue_address(offset, value),
            regs::QUEUE_NOTIFY => self.write_queue_notify(value),
            regs::INTERRUPT_ACK => self.interrupt.ack(value),
            regs::STATUS => self.write_status(value),
            regs::SHM_SEL => self.shm_sel = value,
            _ => return false,
        }
        true
    }

    fn write_driver_features(&mut self, value: u32) {
        let window = self.status & status::DRIVER != 0 && self.status & status::FEATURES_OK == 0;
        if !window || self.driver_features_sel > 1 {
            bump(&self.stats.bad_feature_negotiations);
            return;
        }
        let shift = 32 * self.driver_features_sel;
        self.driver_features =
            (self.driver_features & !(0xffff_ffffu64 << shift)) | (u64::from(value) << shift);
    }

    fn write_queue_ready(&mut self, value: u32) {
        if value == 0 {
            // Disabling a queue is always allowed: the device just stops using it.
            if let Some(sel) = self.selected_queue() {
                self.queues[sel].set_ready(false);
            }
            return;
        }
        let mem = self.mem.clone();
        let stats = Arc::clone(&self.stats);
        if let Some(q) = self.configurable_queue() {
            q.set_ready(true);
            if !q.is_valid(&mem) {
                q.set_ready(false);
                bump(&stats.bad_queue_configs);
            }
        }
    }

    fn write_queue_address(&mut self, offset: u64, value: u32) {
        let stats = Arc::clone(&self.stats);
        let Some(q) = self.configurable_queue() else {
            return;
        };
        let high = offset & 4 != 0;
        let merge = |old: u64| {
            if high {
                (old & 0xffff_ffff) | (u64::from(value) << 32)
            } else {
                (old & !0xffff_ffff) | u64::from(value)
            }
        };
        let result = match offset & !4 {
            regs::QUEUE_DESC_LOW => {
                q.try_set_desc_table_address(GuestAddress(merge(q.desc_table())))
            }
            regs::QUEUE_AVAIL_LOW => {
                q.try_set_avail_ring_address(GuestAddress(merge(q.avail_ring())))
            }
            _ => q.try_set_used_ring_address(GuestAddress(merge(q.used_ring()))),
        };
        if result.is_err() {
            bump(&stats.bad_queue_configs);
        }
    }

    fn write_queue_notify(&mut self, value: u32) {
        // Without an ioeventfd the write lands here: hand it to the event loop.
        match self.queue_evts.get(value as usize) {
            Some(evt) => {
                if evt.write(1).is_err() {
                    bump(&self.stats.backend_errors);
                }
            }
            None => bump(&self.stats.early_notifications),
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        let added = value & !old;
        let order_ok = value & old == old // nothing cleared
            && added & status::DEVICE_NEEDS_RESET == 0
            && (added & status::ACKNOWLEDGE == 0 || old == 0)
            && (added & status::DRIVER == 0 || value & status::ACKNOWLEDGE != 0)
            && (added & status::FEATURES_OK == 0 || value & status::DRIVER != 0)
            && (added & status::DRIVER_OK == 0 || value & status::FEATURES_OK != 0);
        if !order_ok {
            bump(&self.stats.bad_status_transitions);
            return;
        }
        let mut new = value;
        if added & status::FEATURES_OK != 0 && !self.features_acceptable() {
            bump(&self.stats.bad_feature_negotiations);
            // FEATURES_OK stays clear: the driver reads it back and gives up.
            new &= !status::FEATURES_OK;
            if added & status::DRIVER_OK != 0 {
                bump(&self.stats.bad_status_transitions);
                new &= !status::DRIVER_OK;
            }
        }
        if new & status::DRIVER_OK != 0 && old & status::DRIVER_OK == 0 {
            let event_idx = self.acked_features() & features::RING_EVENT_IDX != 0;
            for queue in &mut self.queues {
                queue.set_event_idx(event_idx);
            }
            self.device.activate(self.acked_features());
        }
        self.status = new;
    }

    fn features_acceptable(&self) -> bool {
        let offered = self.offered_features();
        self.driver_features & !offered == 0 && self.driver_features & features::VERSION_1 != 0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.device.config_space();
        let start = offset - regs::CONFIG;
        let in_range = usize::try_from(start)
            .ok()
            .and_then(|s| Some((s, s.checked_add(data.len())?)))
            .filter(|(_, end)| *end <= config.len());
        match in_range {
            Some((s, end)) => data.copy_from_slice(&config[s..end]),
            None => {
                data.fill(0);
                self.bad_access(offset, data.len(), "config read out of range");
            }
        }
    }
}

impl MmioDevice for VirtioMmioTransport {
    fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= regs::CONFIG {
            self.read_config(offset, data);
            return;
        }
        if data.len() != 4 || offset % 4 != 0 {
            data.fill(0);
            self.bad_access(
                offset,
                data.len(),
                "register read not 4 bytes wide and aligned",
            );
            return;
        }
        match self.read_register(offset) {
            Some(value) => data.copy_from_slice(&value.to_le_bytes()),
            None => {
                data.fill(0);
                self.bad_access(
                    offset,
                    data.len(),
                    "read of a write-only or unknown register",
                );
            }
        }
    }

    fn mmio_write(&mut self, offset: u64, data: &[u8]) {
        if offset >= regs::CONFIG {
            // No device here has a writable config field.
            self.bad_access(offset, data.len(), "config write");
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            self.bad_access(offset, data.len(), "register write not 4 bytes wide");
            return;
        };
        if offset % 4 != 0 || !self.write_register(offset, u32::from_le_bytes(bytes)) {
            self.bad_access(
                offset,
                data.len(),
                "write to a read-only or unknown register",
            );
        }
    }
}
