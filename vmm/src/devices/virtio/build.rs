//! Turning a [`DeviceConfig`] into a live device behind its transport.

use vm_memory::GuestMemoryMmap;

use super::block::{Block, BlockError};
use super::config::{ConfigError, DeviceConfig, DeviceKind};
use super::device::VirtioDevice;
use super::mmio::{TransportError, VirtioMmioTransport};
use super::net::{Net, Tap, TapError};
use super::rng::Rng;

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
        };
        VirtioMmioTransport::new(id.clone(), device, mem)
            .map_err(|source| BuildError::Transport { id, source })
    }
}
