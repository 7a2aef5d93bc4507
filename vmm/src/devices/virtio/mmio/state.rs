//! Saving and restoring a transport (registers, queues) together with its device.
//!
//! Order on restore: guest memory first (queues are checked against it), then
//! [`VirtioMmioTransport::restore`], then the core registers the eventfds and starts the event
//! loop. A restored running device kicks its own queue eventfds and re-raises a pending
//! interrupt, so no notification that was in flight at save time is lost.

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState, QueueT};

use super::transport::VirtioMmioTransport;
use crate::devices::virtio::device::{DeviceState, RestoreError};
use crate::devices::virtio::stats::bump;

/// Saved registers of one virtqueue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRegsState {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx_enabled: bool,
}

impl From<&Queue> for QueueRegsState {
    fn from(q: &Queue) -> Self {
        let s = q.state();
        QueueRegsState {
            max_size: s.max_size,
            size: s.size,
            ready: s.ready,
            desc_table: s.desc_table,
            avail_ring: s.avail_ring,
            used_ring: s.used_ring,
            next_avail: s.next_avail,
            next_used: s.next_used,
            event_idx_enabled: s.event_idx_enabled,
        }
    }
}

impl From<QueueRegsState> for QueueState {
    fn from(s: QueueRegsState) -> Self {
        QueueState {
            max_size: s.max_size,
            next_avail: s.next_avail,
            next_used: s.next_used,
            event_idx_enabled: s.event_idx_enabled,
            size: s.size,
            ready: s.ready,
            desc_table: s.desc_table,
            avail_ring: s.avail_ring,
            used_ring: s.used_ring,
        }
    }
}

/// Saved state of a transport and its device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    pub id: String,
    pub device_type: u32,
    pub status: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub shm_sel: u32,
    pub config_generation: u32,
    pub interrupt_status: u32,
    pub queues: Vec<QueueRegsState>,
    pub device: DeviceState,
}

impl VirtioMmioTransport {
    /// Captures the transport and device state. Call with the vCPUs paused and the event loop
    /// stopped, so no request is half done.
    pub fn state(&self) -> TransportState {
        TransportState {
            id: self.id.clone(),
            device_type: self.device.device_type(),
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            shm_sel: self.shm_sel,
            config_generation: self.config_generation,
            interrupt_status: self.interrupt.status(),
            queues: self.queues.iter().map(QueueRegsState::from).collect(),
            device: self.device.state(),
        }
    }

    /// Applies a saved state to a transport freshly built from the same device config.
    /// Nothing is changed if the state is refused.
    pub fn restore(&mut self, state: &TransportState) -> Result<(), RestoreError> {
        if state.id != self.id {
            return Err(RestoreError::ConfigMismatch(format!(
                "saved state is for device {:?}, this is device {:?}",
                state.id, self.id
            )));
        }
        if state.device_type != self.device.device_type() {
            return Err(RestoreError::WrongDeviceType {
                saved: state.device.type_name(),
                actual: self.device.state().type_name(),
            });
        }
        if state.queues.len() != self.queues.len() {
            return Err(RestoreError::QueueCount {
                saved: state.queues.len(),
                actual: self.queues.len(),
            });
        }
        let mut queues = Vec::with_capacity(state.queues.len());
        for (index, (saved, current)) in state.queues.iter().zip(&self.queues).enumerate() {
            if saved.max_size != current.max_size() {
                return Err(RestoreError::BadQueue {
                    index,
                    reason: format!("max size {} is not {}", saved.max_size, current.max_size()),
                });
            }
            let queue = Queue::try_from(QueueState::from(*saved)).map_err(|err| {
                RestoreError::BadQueue {
                    index,
                    reason: err.to_string(),
                }
            })?;
            if queue.ready() && !queue.is_valid(&self.mem) {
                return Err(RestoreError::BadQueue {
                    index,
                    reason: "rings are outside guest memory".into(),
                });
            }
            queues.push(queue);
        }
        self.device.restore(&state.device)?;
        self.mirror_gate();
        self.queues = queues;
        self.status = state.status;
        self.device_features_sel = state.device_features_sel;
        self.driver_features_sel = state.driver_features_sel;
        self.driver_features = state.driver_features;
        self.queue_sel = state.queue_sel;
        self.shm_sel = state.shm_sel;
        self.config_generation = state.config_generation;
        self.interrupt.restore(state.interrupt_status);
        if self.driver_ok() {
            let acked = self.acked_features();
            self.device.activate(acked);
            for (queue, evt) in self.queues.iter().zip(&self.queue_evts) {
                if queue.ready() && evt.write(1).is_err() {
                    bump(&self.stats.backend_errors);
                }
            }
            if self.interrupt.status() != 0 && self.interrupt.irq_evt().write(1).is_err() {
                bump(&self.stats.backend_errors);
            }
        }
        Ok(())
    }
}
