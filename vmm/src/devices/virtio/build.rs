//! Turning a [`DeviceConfig`] into a live device behind its transport.

use vm_memory::GuestMemoryMmap;

use super::block::{Block, BlockError};
use super::config::{ConfigError, DeviceConfig, DeviceKind};
use super::device::VirtioDevice;
use super::mmio::{TransportError, VirtioMmioTransport};
use super::net::{Net, Tap, TapError};
use super::rng::Rng;
use super::vsock::{Vsock, VsockError};

/// Why a device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid device config")]
    Config(#[from] ConfigError),
    #[error("device {0} is prohibited at boot and must not be created")]
    ProhibitedAtBoot(String),
    #[error("device {id}: disk")]
    Block {
        id: String,
        #[source]
        source: BlockError,
    },
    #[error("device {id}: tap")]
    Tap {
        id: String,
        #[source]
        source: TapError,
    },
    #[error("device {id}")]
    Vsock {
        id: String,
        #[source]
        source: VsockError,
    },
    #[error("device {id}: transport")]
    Transport {
        id: String,
        #[source]
        source: TransportError,
    },
}

impl VirtioMmioTransport {
    /// Validates `config`, opens its backend and puts it behind a transport.
    /// A device with `allowed: false` is refused: prohibited at boot means not created.
    pub fn from_config(
        config: &DeviceConfig,
        mem: GuestMemoryMmap,
    ) -> Result<VirtioMmioTransport, BuildError> {
        config.validate()?;
        if !config.allowed {
            return Err(BuildError::ProhibitedAtBoot(config.id.clone()));
        }
        let id = config.id.clone();
        let device: Box<dyn VirtioDevice> = match &config.kind {
            DeviceKind::Block { path, read_only } => Box::new(
                Block::open(path, *read_only, config.class, true, &config.id).map_err(
                    |source| BuildError::Block {
                        id: id.clone(),
                        source,
                    },
                )?,
            ),
            DeviceKind::Net { tap_name, mac } => {
                let tap = Tap::open(tap_name).map_err(|source| BuildError::Tap {
                    id: id.clone(),
                    source,
                })?;
                Box::new(Net::new(tap, *mac, true))
            }
            DeviceKind::Rng => Box::new(Rng::new(true)),
            DeviceKind::Vsock { cid, uds_path } => Box::new(
                Vsock::new(*cid, uds_path, true).map_err(|source| BuildError::Vsock {
                    id: id.clone(),
                    source,
                })?,
            ),
        };
        VirtioMmioTransport::new(id.clone(), device, mem)
            .map_err(|source| BuildError::Transport { id, source })
    }
}

#[cfg(test)]
mod tests {
    use vmm_sys_util::tempfile::TempFile;

    use super::*;
    use crate::devices::virtio::config::DeviceClass;
    use crate::devices::virtio::spec::{DEVICE_ID_BLOCK, DEVICE_ID_RNG};
    use crate::devices::virtio::test_utils::guest_memory;

    fn config(class: DeviceClass, kind: DeviceKind, allowed: bool) -> DeviceConfig {
        DeviceConfig {
            id: "dev0".into(),
            class,
            kind,
            allowed,
        }
    }

    #[test]
    fn configs_build_the_matching_device_and_prohibited_ones_are_not_created() {
        let image = TempFile::new().unwrap();
        image.as_file().set_len(4096).unwrap();
        let disk = DeviceKind::Block {
            path: image.as_path().to_owned(),
            read_only: true,
        };
        let t = VirtioMmioTransport::from_config(
            &config(DeviceClass::RemovableStorage, disk.clone(), true),
            guest_memory(),
        )
        .unwrap();
        assert_eq!(t.device_type(), DEVICE_ID_BLOCK);
        assert_eq!(t.class(), DeviceClass::RemovableStorage);
        assert_eq!(t.queue_evts().len(), 1);

        let t = VirtioMmioTransport::from_config(
            &config(DeviceClass::Entropy, DeviceKind::Rng, true),
            guest_memory(),
        )
        .unwrap();
        assert_eq!(t.device_type(), DEVICE_ID_RNG);

        let prohibited = VirtioMmioTransport::from_config(
            &config(DeviceClass::Storage, disk, false),
            guest_memory(),
        );
        assert!(matches!(prohibited, Err(BuildError::ProhibitedAtBoot(id)) if id == "dev0"));

        let missing = DeviceKind::Block {
            path: "/nonexistent/virmo.img".into(),
            read_only: false,
        };
        let err = VirtioMmioTransport::from_config(
            &config(DeviceClass::Storage, missing, true),
            guest_memory(),
        )
        .unwrap_err();
        assert!(matches!(err, BuildError::Block { .. }), "{err}");

        let mismatch = config(DeviceClass::Network, DeviceKind::Rng, true);
        assert!(matches!(
            VirtioMmioTransport::from_config(&mismatch, guest_memory()),
            Err(BuildError::Config(_))
        ));
    }
}
