//! The virtio-mmio transport (virtio 1.2, 4.2; register layout version 2).

mod events;
mod state;
#[cfg(test)]
mod tests;
mod transport;

pub use state::{QueueRegsState, TransportState};
pub use transport::{DeviceObserver, GateState, TransportError, VirtioMmioTransport};

/// Size of the MMIO window of one virtio-mmio device.
pub const MMIO_WINDOW_SIZE: u64 = 0x200;

/// A device on the MMIO bus. The core routes accesses inside the device's window to it, with
/// `offset` relative to the window base. Accesses never fail from the vCPU's point of view:
/// a bad access reads as zeroes or is dropped, and is counted.
pub trait MmioDevice: Send {
    fn mmio_read(&mut self, offset: u64, data: &mut [u8]);
    fn mmio_write(&mut self, offset: u64, data: &[u8]);
}

/// Register offsets (virtio 1.2, 4.2.2, table "MMIO Device Register Layout").
pub mod regs {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_AVAIL_LOW: u64 = 0x090;
    pub const QUEUE_AVAIL_HIGH: u64 = 0x094;
    pub const QUEUE_USED_LOW: u64 = 0x0a0;
    pub const QUEUE_USED_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;

    /// "virt" in little endian.
    pub const MAGIC: u32 = 0x7472_6976;
    /// Our vendor ID: "VRMO" in little endian.
    pub const VENDOR: u32 = u32::from_le_bytes(*b"VRMO");
}
