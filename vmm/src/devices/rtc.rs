//! The CMOS real-time clock at ports 0x70 (index) and 0x71 (data), reading the host's current
//! UTC time, so the guest finds a clock at once and never waits for an update cycle.
//! Time writes from the guest are accepted and ignored; other CMOS bytes are plain storage.

use std::time::{SystemTime, UNIX_EPOCH};

use acpi_tables::{aml, Aml};
use serde::{Deserialize, Serialize};

use crate::devices::bus::BusDevice;
use crate::devices::persist::{self, Persist, PersistError};

pub const RTC_PORT: u64 = 0x70;
pub const RTC_PORT_LEN: u64 = 2;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_STATUS_A: u8 = 0x0a;
const REG_STATUS_B: u8 = 0x0b;
const REG_STATUS_C: u8 = 0x0c;
const REG_STATUS_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

/// Status A: 32.768 kHz time base, 1024 Hz rate, no update in progress.
const STATUS_A: u8 = 0x26;
/// Status B: 24-hour mode, BCD.
const STATUS_B: u8 = 0x02;
/// Status D: the battery is good (valid RAM and time).
const STATUS_D_VALID: u8 = 0x80;

/// A source of the current time in seconds since the Unix epoch (injected for tests).
pub type Clock = Box<dyn Fn() -> u64 + Send>;

/// The broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DateTime {
    year: u64,
    month: u8,
    day: u8,
    weekday: u8, // 1 = Sunday
    hour: u8,
    minute: u8,
    second: u8,
}

/// Converts seconds since the epoch to a UTC date (proleptic Gregorian calendar).
fn date_time(unix: u64) -> DateTime {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Days since 0000-03-01, then era/year-of-era arithmetic.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + u64::from(month <= 2);
    DateTime {
        year,
        month,
        day,
        // 1970-01-01 was a Thursday (weekday 5 with Sunday = 1).
        weekday: ((days + 4) % 7 + 1) as u8,
        hour: (secs / 3600) as u8,
        minute: (secs % 3600 / 60) as u8,
        second: (secs % 60) as u8,
    }
}

fn bcd(value: u8) -> u8 {
    ((value / 10) << 4) | (value % 10)
}

/// The CMOS RTC and its 128 bytes of RAM.
pub struct CmosRtc {
    index: u8,
    ram: [u8; 128],
    clock: Clock,
}

impl Default for CmosRtc {
    fn default() -> Self {
        Self::new()
    }
}

impl CmosRtc {
    /// An RTC reading the host's clock.
    pub fn new() -> Self {
        Self::with_clock(Box::new(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        }))
    }

    pub fn with_clock(clock: Clock) -> Self {
        Self {
            index: 0,
            ram: [0; 128],
            clock,
        }
    }

    fn register(&self, index: u8) -> u8 {
        let now = date_time((self.clock)());
        match index {
            REG_SECONDS => bcd(now.second),
            REG_MINUTES => bcd(now.minute),
            REG_HOURS => bcd(now.hour),
            REG_WEEKDAY => bcd(now.weekday),
            REG_DAY => bcd(now.day),
            REG_MONTH => bcd(now.month),
            REG_YEAR => bcd((now.year % 100) as u8),
            REG_CENTURY => bcd((now.year / 100 % 100) as u8),
            REG_STATUS_A => STATUS_A,
            REG_STATUS_B => STATUS_B,
            REG_STATUS_C => 0,
            REG_STATUS_D => STATUS_D_VALID,
            other => self.ram[usize::from(other & 0x7f)],
        }
    }
}

impl BusDevice for CmosRtc {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, data) {
            (1, [byte]) => *byte = self.register(self.index),
            (0, [byte]) => *byte = self.index,
            (_, data) => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            // Bit 7 of the index port is the NMI mask; the index is 7 bits.
            (0, [byte]) => self.index = byte & 0x7f,
            (1, [byte]) => match self.index {
                REG_SECONDS..=REG_YEAR | REG_STATUS_A..=REG_STATUS_D | REG_CENTURY => {}
                index => self.ram[usize::from(index)] = *byte,
            },
            _ => {}
        }
    }
}

/// The RTC as saved in snapshots: the selected index and the CMOS RAM. The time itself is not
/// saved: it is always read from the host's clock, so a resumed guest reads the current time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmosRtcState {
    pub index: u8,
    /// The 128 bytes of CMOS RAM.
    pub ram: Vec<u8>,
}

/// Device kind of the RTC in snapshots.
pub const RTC_KIND: &str = "cmos-rtc";

impl Persist for CmosRtc {
    fn kind(&self) -> &'static str {
        RTC_KIND
    }

    fn save(&self) -> Result<Vec<u8>, PersistError> {
        persist::encode(
            RTC_KIND,
            &CmosRtcState {
                index: self.index,
                ram: self.ram.to_vec(),
            },
        )
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), PersistError> {
        let state: CmosRtcState = persist::decode(RTC_KIND, data)?;
        let invalid = |reason: String| PersistError::Invalid {
            kind: RTC_KIND,
            reason,
        };
        self.ram = state
            .ram
            .as_slice()
            .try_into()
            .map_err(|_| invalid(format!("{} bytes of CMOS RAM, not 128", state.ram.len())))?;
        if state.index > 0x7f {
            return Err(invalid(format!("index {:#x} is over 0x7f", state.index)));
        }
        self.index = state.index;
        Ok(())
    }
}

/// The DSDT entry for the RTC (`PNP0B00`), without an interrupt: it has no alarms.
pub fn dsdt_aml() -> Vec<u8> {
    let port = RTC_PORT as u16;
    let mut bytes = Vec::new();
    aml::Device::new(
        "_SB_.RTC_".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0B00")),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![&aml::IO::new(port, port, 1, RTC_PORT_LEN as u8)]),
            ),
        ],
    )
    .to_aml_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_reg(rtc: &mut CmosRtc, index: u8) -> u8 {
        rtc.write(0, &[index | 0x80]);
        let mut b = [0u8];
        rtc.read(1, &mut b);
        b[0]
    }

    #[test]
    fn date_conversion_matches_known_dates() {
        assert_eq!(
            date_time(0),
            DateTime {
                year: 1970,
                month: 1,
                day: 1,
                weekday: 5,
                hour: 0,
                minute: 0,
                second: 0
            }
        );
        // 2000-02-29 12:34:56 UTC was a Tuesday.
        assert_eq!(
            date_time(951_827_696),
            DateTime {
                year: 2000,
                month: 2,
                day: 29,
                weekday: 3,
                hour: 12,
                minute: 34,
                second: 56
            }
        );
        // 2026-11-25 21:00:00 UTC, a Wednesday.
        let d = date_time(1_795_640_400);
        assert_eq!(
            (d.year, d.month, d.day, d.weekday, d.hour),
            (2026, 11, 25, 4, 21)
        );
    }

    #[test]
    fn registers_read_time_in_bcd_with_valid_status() {
        let mut rtc = CmosRtc::with_clock(Box::new(|| 951_827_696));
        assert_eq!(read_reg(&mut rtc, REG_SECONDS), 0x56);
        assert_eq!(read_reg(&mut rtc, REG_MINUTES), 0x34);
        assert_eq!(read_reg(&mut rtc, REG_HOURS), 0x12);
        assert_eq!(read_reg(&mut rtc, REG_DAY), 0x29);
        assert_eq!(read_reg(&mut rtc, REG_MONTH), 0x02);
        assert_eq!(read_reg(&mut rtc, REG_YEAR), 0x00);
        assert_eq!(read_reg(&mut rtc, REG_CENTURY), 0x20);
        assert_eq!(
            read_reg(&mut rtc, REG_STATUS_A) & 0x80,
            0,
            "no update in progress"
        );
        assert_eq!(read_reg(&mut rtc, REG_STATUS_B), STATUS_B);
        assert_eq!(read_reg(&mut rtc, REG_STATUS_D), STATUS_D_VALID);
    }

    #[test]
    fn cmos_ram_and_index_survive_save_and_restore() {
        let mut rtc = CmosRtc::with_clock(Box::new(|| 0));
        rtc.write(0, &[0x40]);
        rtc.write(1, &[0xab]);
        rtc.write(0, &[0x41]);
        let data = rtc.save().unwrap();
        let mut restored = CmosRtc::with_clock(Box::new(|| 951_827_696));
        restored.restore(&data).unwrap();
        let mut b = [0u8];
        restored.read(0, &mut b);
        assert_eq!(b, [0x41]);
        assert_eq!(read_reg(&mut restored, 0x40), 0xab);
        // The time comes from the new clock, not from the snapshot.
        assert_eq!(read_reg(&mut restored, REG_SECONDS), 0x56);

        let short = persist::encode(
            RTC_KIND,
            &CmosRtcState {
                index: 0,
                ram: vec![0; 12],
            },
        )
        .unwrap();
        assert!(matches!(
            restored.restore(&short),
            Err(PersistError::Invalid { .. })
        ));
    }

    #[test]
    fn cmos_ram_is_storage_and_time_writes_are_ignored() {
        let mut rtc = CmosRtc::with_clock(Box::new(|| 0));
        rtc.write(0, &[0x40]);
        rtc.write(1, &[0xab]);
        assert_eq!(read_reg(&mut rtc, 0x40), 0xab);
        rtc.write(0, &[REG_SECONDS]);
        rtc.write(1, &[0x59]);
        assert_eq!(read_reg(&mut rtc, REG_SECONDS), 0x00);
    }
}
