//! pvpanic at port 0x505 (ACPI `QEMU0001`): the guest writes here when its kernel panics.
//! The guest needs the `pvpanic-mmio` driver (a module in the Debian cloud kernel) loaded.

use std::sync::Arc;

use acpi_tables::{aml, Aml};
use serde::{Deserialize, Serialize};

use crate::devices::bus::BusDevice;
use crate::devices::persist::{self, Persist, PersistError};
use crate::stop::{StopReason, StopSignal};

pub const PVPANIC_PORT: u64 = 0x505;
pub const PVPANIC_PORT_LEN: u64 = 1;

/// Event bits (also the capabilities the device reports on read).
const PVPANIC_PANICKED: u8 = 1 << 0;
const PVPANIC_CRASH_LOADED: u8 = 1 << 1;

/// Turns a guest panic report into a VM stop.
pub struct PvPanic {
    stop: Arc<StopSignal>,
}

impl PvPanic {
    pub fn new(stop: Arc<StopSignal>) -> Self {
        Self { stop }
    }
}

impl BusDevice for PvPanic {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED;
        }
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let event = data.first().copied().unwrap_or(0);
        if event & PVPANIC_PANICKED != 0 {
            self.stop.raise(StopReason::GuestPanic);
        } else if event & PVPANIC_CRASH_LOADED != 0 {
            tracing::warn!("guest crashed and is loading its crash kernel");
        }
    }
}

/// pvpanic as saved in snapshots: it has no state (it reports fixed capabilities and acts on
/// each write at once), so the state is empty; saved all the same so that the snapshot lists
/// every device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PvPanicState {}

/// Device kind of pvpanic in snapshots.
pub const PVPANIC_KIND: &str = "pvpanic";

impl Persist for PvPanic {
    fn kind(&self) -> &'static str {
        PVPANIC_KIND
    }

    fn save(&self) -> Result<Vec<u8>, PersistError> {
        persist::encode(PVPANIC_KIND, &PvPanicState {})
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), PersistError> {
        let PvPanicState {} = persist::decode(PVPANIC_KIND, data)?;
        Ok(())
    }
}

/// The DSDT entry describing the device.
pub fn dsdt_aml() -> Vec<u8> {
    let port = PVPANIC_PORT as u16;
    let mut bytes = Vec::new();
    aml::Device::new(
        "_SB_.PEVT".into(),
        vec![
            &aml::Name::new("_HID".into(), &"QEMU0001"),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![&aml::IO::new(port, port, 1, 1)]),
            ),
        ],
    )
    .to_aml_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_event_stops_the_vm_with_guest_panic() {
        let stop = Arc::new(StopSignal::new());
        let mut dev = PvPanic::new(Arc::clone(&stop));
        let mut caps = [0u8];
        dev.read(0, &mut caps);
        assert_eq!(caps[0], 0x3);
        dev.write(0, &[PVPANIC_CRASH_LOADED]);
        assert_eq!(stop.reason(), None);
        dev.write(0, &[PVPANIC_PANICKED]);
        assert_eq!(stop.reason(), Some(StopReason::GuestPanic));
    }

    #[test]
    fn empty_state_round_trips_and_garbage_is_refused() {
        let mut dev = PvPanic::new(Arc::new(StopSignal::new()));
        let data = dev.save().unwrap();
        dev.restore(&data).unwrap();
        assert!(dev.restore(&[0, 0]).is_err());
    }

    #[test]
    fn aml_names_the_device_and_its_port() {
        let aml = dsdt_aml();
        assert!(aml.windows(8).any(|w| w == b"QEMU0001"));
        // IO descriptor: 0x47, decode16, min 0x505, max 0x505.
        assert!(aml
            .windows(6)
            .any(|w| w == [0x47, 0x01, 0x05, 0x05, 0x05, 0x05]));
    }
}
