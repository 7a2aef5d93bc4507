//! Numbers from the virtio 1.2 specification that the devices and the transport share.

/// Device IDs (virtio 1.2, 5).
pub const DEVICE_ID_NET: u32 = 1;
pub const DEVICE_ID_BLOCK: u32 = 2;
pub const DEVICE_ID_RNG: u32 = 4;
pub const DEVICE_ID_VSOCK: u32 = 19;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    pub const FAILED: u32 = 0x80;
}

/// Feature bits common to every device type (virtio 1.2, 6).
pub mod features {
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    /// `used_event` / `avail_event` suppress interrupts and notifications (2.7.10).
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    pub const VERSION_1: u64 = 1 << 32;
}

/// Split virtqueue descriptor flags (virtio 1.2, 2.7.5).
pub mod desc_flags {
    pub const NEXT: u16 = 1;
    pub const WRITE: u16 = 2;
    pub const INDIRECT: u16 = 4;
}

/// Interrupt status bits of the MMIO transport (virtio 1.2, 4.2.2).
pub mod interrupt {
    pub const USED_RING: u32 = 1;
    pub const CONFIG_CHANGE: u32 = 2;
}
