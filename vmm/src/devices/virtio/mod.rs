//! virtio-mmio devices: block, net, entropy and vsock (host channel), each with a peripheral class and a live
//! `allowed` gate.
//!
//! - [`mmio::VirtioMmioTransport`]: the virtio 1.x MMIO register interface of one device; the
//!   core routes its 0x200-byte window to it ([`mmio::MmioDevice`]), registers its queue
//!   eventfds as ioeventfds and its interrupt eventfd as an irqfd, and adds it to the event
//!   loop (it is an `event_manager::MutEventSubscriber`).
//! - [`device::VirtioDevice`]: what a device type implements ([`block::Block`], [`net::Net`],
//!   [`rng::Rng`], [`vsock::Vsock`]).
//! - [`config::DeviceConfig`]: the pure-data description a VM config carries.
//! - [`acpi::MmioDeviceInfo`]: the DSDT entry of a placed device.
//!
//! Everything the guest controls (registers, rings, descriptors, request headers) is checked;
//! bad input is refused and counted in [`stats::DeviceStats`], never a panic or a hang.

pub mod acpi;
pub mod block;
mod build;
pub mod chain;
pub mod config;
pub mod device;
pub mod guest_log;
pub mod interrupt;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod spec;
pub mod stats;
#[cfg(test)]
mod test_utils;
pub mod vsock;

pub use acpi::MmioDeviceInfo;
pub use build::BuildError;
pub use config::{DeviceClass, DeviceConfig, DeviceKind, MacAddr};
pub use device::{DeviceState, RestoreError};
pub use mmio::{GateState, MmioDevice, TransportState, VirtioMmioTransport, MMIO_WINDOW_SIZE};
pub use stats::DeviceStatsSnapshot;
