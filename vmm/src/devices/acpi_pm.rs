//! Hardware-reduced ACPI power management.
//!
//! * Sleep control (port 0x600), sleep status (0x601) and reset (0x602) registers named in the
//!   FADT: the guest powers off by writing `SLP_TYP = 5 | SLP_EN` (S5, as `\_S5_` says) and
//!   reboots by writing 1 to the reset register.
//! * A Generic Event Device (`ACPI0013`) at port 0x608 with one interrupt, and a power button
//!   (`PNP0C0C`): the VMM presses the button by setting an event bit and raising the interrupt;
//!   the GED's `_EVT` method reads the bits and notifies the button. The guest must have the
//!   ACPI button driver (module `button` in the Debian cloud kernel) and something that acts on
//!   the power key (e.g. busybox `acpid`, systemd-logind).

use std::io;
use std::sync::Arc;

use acpi_tables::{aml, Aml};
use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::acpi::PmRegisters;
use crate::devices::bus::BusDevice;
use crate::devices::persist::{self, Persist, PersistError};
use crate::stop::{StopReason, StopSignal};

pub const PM_PORT: u64 = 0x600;
pub const PM_PORT_LEN: u64 = 3;
const SLEEP_CONTROL_OFFSET: u64 = 0;
const SLEEP_STATUS_OFFSET: u64 = 1;
const RESET_OFFSET: u64 = 2;
const RESET_VALUE: u8 = 1;
/// Sleep control register: SLP_TYP in bits 2..5, SLP_EN in bit 5.
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7;
const SLP_EN: u8 = 1 << 5;
/// The sleep type value the DSDT's `\_S5_` gives for soft-off.
const S5_SLEEP_TYPE: u8 = 5;
/// Sleep status register: wake status.
const WAK_STS: u8 = 1 << 7;

pub const GED_PORT: u64 = 0x608;
pub const GED_PORT_LEN: u64 = 1;
/// GED event bit: the power button was pressed.
const GED_EVENT_POWER_BUTTON: u8 = 1 << 0;

/// The register ports, for the FADT.
pub fn pm_registers() -> PmRegisters {
    PmRegisters {
        sleep_control_port: (PM_PORT + SLEEP_CONTROL_OFFSET) as u16,
        sleep_status_port: (PM_PORT + SLEEP_STATUS_OFFSET) as u16,
        reset_port: (PM_PORT + RESET_OFFSET) as u16,
        reset_value: RESET_VALUE,
    }
}

/// The sleep control, sleep status and reset registers.
pub struct AcpiPm {
    stop: Arc<StopSignal>,
}

impl AcpiPm {
    pub fn new(stop: Arc<StopSignal>) -> Self {
        Self { stop }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (SLEEP_STATUS_OFFSET, Some(first)) = (offset, data.first_mut()) {
            // Report "woken" so a guest polling for wake after a sleep attempt does not hang.
            *first = WAK_STS;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        tracing::debug!(offset, value, "ACPI PM register write");
        match offset {
            SLEEP_CONTROL_OFFSET
                if value & SLP_EN != 0
                    && (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK == S5_SLEEP_TYPE =>
            {
                self.stop.raise(StopReason::PowerOff);
            }
            RESET_OFFSET if value == RESET_VALUE => {
                self.stop.raise(StopReason::Reboot);
            }
            _ => {}
        }
    }
}

/// The Generic Event Device: pending event bits, read-to-clear, and its interrupt line.
pub struct Ged {
    pending: u8,
    irq: EventFd,
}

impl Ged {
    pub fn new(irq: EventFd) -> Self {
        Self { pending: 0, irq }
    }

    /// Presses the ACPI power button.
    pub fn press_power_button(&mut self) -> io::Result<()> {
        self.pending |= GED_EVENT_POWER_BUTTON;
        self.irq.write(1)
    }
}

impl BusDevice for Ged {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = std::mem::take(&mut self.pending);
        }
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

/// The PM registers as saved in snapshots: they have no state (sleep and reset act at once, the
/// status register reads constant), so the state is empty; saved all the same so that the
/// snapshot lists every device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcpiPmState {}

/// Device kind of the PM registers in snapshots.
pub const ACPI_PM_KIND: &str = "acpi-pm";

impl Persist for AcpiPm {
    fn kind(&self) -> &'static str {
        ACPI_PM_KIND
    }

    fn save(&self) -> Result<Vec<u8>, PersistError> {
        persist::encode(ACPI_PM_KIND, &AcpiPmState {})
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), PersistError> {
        let AcpiPmState {} = persist::decode(ACPI_PM_KIND, data)?;
        Ok(())
    }
}

/// The GED as saved in snapshots: the event bits the guest has not read yet (a power button
/// press in flight survives suspend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GedState {
    pub pending: u8,
}

/// Device kind of the GED in snapshots.
pub const GED_KIND: &str = "acpi-ged";

impl Persist for Ged {
    fn kind(&self) -> &'static str {
        GED_KIND
    }

    fn save(&self) -> Result<Vec<u8>, PersistError> {
        persist::encode(
            GED_KIND,
            &GedState {
                pending: self.pending,
            },
        )
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), PersistError> {
        let state: GedState = persist::decode(GED_KIND, data)?;
        if state.pending & !GED_EVENT_POWER_BUTTON != 0 {
            return Err(PersistError::Invalid {
                kind: GED_KIND,
                reason: format!("unknown event bits {:#04x}", state.pending),
            });
        }
        self.pending = state.pending;
        Ok(())
    }
}

/// DSDT entries: `\_S5_`, the GED on `gsi` and the power button.
pub fn dsdt_aml(gsi: u32) -> Vec<u8> {
    let port = GED_PORT as usize;
    let mut bytes = Vec::new();
    aml::Name::new("_S5_".into(), &aml::Package::new(vec![&S5_SLEEP_TYPE]))
        .to_aml_bytes(&mut bytes);
    aml::Device::new(
        "_SB_.PWRB".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0C0C")),
            &aml::Name::new("_UID".into(), &aml::ZERO),
        ],
    )
    .to_aml_bytes(&mut bytes);
    let power_button = usize::from(GED_EVENT_POWER_BUTTON);
    aml::Device::new(
        "_SB_.GED_".into(),
        vec![
            &aml::Name::new("_HID".into(), &"ACPI0013"),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![&aml::Interrupt::new(
                    true, true, false, false, gsi,
                )]),
            ),
            &aml::OpRegion::new("GDST".into(), aml::OpRegionSpace::SystemIO, &port, &1usize),
            &aml::Field::new(
                "GDST".into(),
                aml::FieldAccessType::Byte,
                aml::FieldLockRule::NoLock,
                aml::FieldUpdateRule::WriteAsZeroes,
                vec![aml::FieldEntry::Named(*b"GDAT", 8)],
            ),
            &aml::Method::new(
                "_EVT".into(),
                1,
                true,
                vec![
                    &aml::Store::new(&aml::Local(0), &aml::Path::new("GDAT")),
                    &aml::If::new(
                        &aml::Equal::new(
                            &aml::And::new(&aml::Local(1), &aml::Local(0), &power_button),
                            &power_button,
                        ),
                        vec![&aml::Notify::new(
                            &aml::Path::new("\\_SB_.PWRB"),
                            &0x80usize,
                        )],
                    ),
                ],
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
    fn s5_write_powers_off_and_reset_write_reboots() {
        let stop = Arc::new(StopSignal::new());
        let mut pm = AcpiPm::new(Arc::clone(&stop));
        pm.write(SLEEP_CONTROL_OFFSET, &[(3 << SLP_TYP_SHIFT) | SLP_EN]); // S3: ignored
        pm.write(SLEEP_CONTROL_OFFSET, &[S5_SLEEP_TYPE << SLP_TYP_SHIFT]); // no SLP_EN
        pm.write(RESET_OFFSET, &[2]);
        assert_eq!(stop.reason(), None);
        pm.write(
            SLEEP_CONTROL_OFFSET,
            &[(S5_SLEEP_TYPE << SLP_TYP_SHIFT) | SLP_EN],
        );
        assert_eq!(stop.reason(), Some(StopReason::PowerOff));

        let stop = Arc::new(StopSignal::new());
        let mut pm = AcpiPm::new(Arc::clone(&stop));
        pm.write(RESET_OFFSET, &[RESET_VALUE]);
        assert_eq!(stop.reason(), Some(StopReason::Reboot));
    }

    #[test]
    fn power_button_sets_event_bit_once_and_raises_interrupt() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let probe = irq.try_clone().unwrap();
        let mut ged = Ged::new(irq);
        ged.press_power_button().unwrap();
        assert_eq!(probe.read().unwrap(), 1);
        let mut bits = [0u8];
        ged.read(0, &mut bits);
        assert_eq!(bits[0], GED_EVENT_POWER_BUTTON);
        ged.read(0, &mut bits);
        assert_eq!(bits[0], 0, "read clears");
    }

    #[test]
    fn pending_ged_events_survive_save_and_restore() {
        let mut ged = Ged::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        ged.press_power_button().unwrap();
        let data = ged.save().unwrap();
        let mut restored = Ged::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        restored.restore(&data).unwrap();
        let mut bits = [0u8];
        restored.read(0, &mut bits);
        assert_eq!(bits[0], GED_EVENT_POWER_BUTTON);
        let bad = persist::encode(GED_KIND, &GedState { pending: 0x80 }).unwrap();
        assert!(restored.restore(&bad).is_err());

        let mut pm = AcpiPm::new(Arc::new(StopSignal::new()));
        let data = pm.save().unwrap();
        pm.restore(&data).unwrap();
        assert!(pm.restore(&[7]).is_err());
    }

    #[test]
    fn aml_declares_s5_ged_and_power_button() {
        let aml = dsdt_aml(5);
        let has = |needle: &[u8]| aml.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"_S5_"));
        assert!(has(b"ACPI0013"));
        assert!(has(b"_EVT"));
        assert!(has(b"PWRB"));
        // Extended IRQ descriptor: consumer, edge, active high, exclusive, GSI 5.
        assert!(has(&[0x89, 0x06, 0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00]));
    }
}
