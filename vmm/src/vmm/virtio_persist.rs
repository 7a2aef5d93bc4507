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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::{DeviceClass, DeviceConfig, DeviceKind};
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    fn transport(config: &DeviceConfig) -> VirtioMmioTransport {
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        VirtioMmioTransport::from_config(config, memory).unwrap()
    }

    #[test]
    fn transport_states_round_trip_through_the_snapshot_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
        let configs = [
            DeviceConfig {
                id: "rng0".into(),
                class: DeviceClass::Entropy,
                kind: DeviceKind::Rng,
                allowed: true,
            },
            DeviceConfig {
                id: "usb0".into(),
                class: DeviceClass::RemovableStorage,
                kind: DeviceKind::Block {
                    path: image,
                    read_only: true,
                },
                allowed: true,
            },
        ];
        for config in &configs {
            let mut saved = transport(config);
            saved.set_allowed(false);
            let data = Persist::save(&saved).unwrap();
            let mut restored = transport(config);
            Persist::restore(&mut restored, &data).unwrap();
            assert_eq!(restored.state(), saved.state(), "{}", config.id);
            assert!(!restored.allowed());
        }
        // A state restored into another device is refused with the reason.
        let rng = Persist::save(&transport(&configs[0])).unwrap();
        let err = Persist::restore(&mut transport(&configs[1]), &rng).unwrap_err();
        assert!(matches!(err, PersistError::Invalid { .. }), "{err:?}");
    }
}
