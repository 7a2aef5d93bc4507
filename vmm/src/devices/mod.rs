//! Port-I/O and MMIO buses, the resources devices are given (GSIs, MMIO windows, DSDT entries),
//! the platform devices of the VM, the virtio devices ([`virtio`]), and how each device's state
//! goes into snapshots ([`persist`]).
//!
//! | device | where | IRQ |
//! | --- | --- | --- |
//! | i8042 (reset only) | ports 0x60-0x64 | - |
//! | CMOS RTC | ports 0x70-0x71 | - |
//! | 16550A UART (COM1) | ports 0x3f8-0x3ff | GSI 4 |
//! | pvpanic (QEMU0001) | port 0x505 | - |
//! | ACPI sleep control / status / reset | ports 0x600, 0x601, 0x602 | - |
//! | ACPI GED (ACPI0013) + power button (PNP0C0C) | port 0x608 | first allocated GSI |

pub mod acpi_pm;
pub mod bus;
pub mod console;
pub mod i8042;
pub mod persist;
pub mod pvpanic;
pub mod resources;
pub mod rtc;
pub mod serial;
pub mod virtio;
