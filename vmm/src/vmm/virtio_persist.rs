//! Snapshots of the virtio devices: each virtio-mmio transport (registers, queues, and its
//! device's own state, see `devices::virtio::mmio::state`) is a [`Persist`] device of the VM.
//!
//! Saved with the vCPUs paused and the virtio event loop stopped ([`super::suspend`]), so no
//! request is half done; restored into a transport freshly built from the same device config,
//! before the event loop starts (the transport then kicks its ready queues and re-raises a
//! pending interrupt itself).

use crate::devices::persist::{self, Persist, PersistError};
use crate::devices::virtio::{TransportState, VirtioMmioTransport};

/// Device kind of a virtio-mmio transport in snapshots (the device type is inside its state).
pub const VIRTIO_MMIO_KIND: &str = "virtio-mmio";

/// The snapshot ID of the virtio device whose config ID is `id` (prefixed, so it cannot clash
/// with a platform device's ID).
pub fn virtio_id(id: &str) -> String {
    format!("virtio:{id}")
}

impl Persist for VirtioMmioTransport {
    fn kind(&self) -> &'static str {
        VIRTIO_MMIO_KIND
    }

    fn save(&self) -> Result<Vec<u8>, PersistError> {
        persist::encode(VIRTIO_MMIO_KIND, &self.state())
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), PersistError> {
        let state: TransportState = persist::decode(VIRTIO_MMIO_KIND, data)?;
        VirtioMmioTransport::restore(self, &state).map_err(|e| PersistError::Invalid {
            kind: VIRTIO_MMIO_KIND,
            reason: crate::error_chain(&e),
        })
    }
}
