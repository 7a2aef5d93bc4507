//! A minimal i8042 keyboard controller at ports 0x60-0x64: it only implements the CPU reset
//! pulse (command 0xFE on port 0x64), the last-resort reboot path of Linux. The FADT tells the
//! guest there is no 8042, so the guest does not probe for a keyboard.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::devices::bus::BusDevice;
use crate::devices::persist::{self, Persist, PersistError};
use crate::stop::{StopReason, StopSignal};

pub const I8042_PORT: u64 = 0x60;
pub const I8042_PORT_LEN: u64 = 5;
/// Offset of the command/status port (0x64) from the data port (0x60).
const COMMAND_OFFSET: u64 = 4;
const CMD_RESET_CPU: u8 = 0xfe;

pub struct I8042 {
    stop: Arc<StopSignal>,
}

impl I8042 {
    pub fn new(stop: Arc<StopSignal>) -> Self {
        Self { stop }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status: output buffer empty, input buffer empty; data: nothing.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        tracing::debug!(offset, ?data, "i8042 write");
        if offset == COMMAND_OFFSET && data == [CMD_RESET_CPU] {
            self.stop.raise(StopReason::Reboot);
        }
    }
}

/// The i8042 as saved in snapshots: it has no state (reads are constant, the one command it
/// knows acts at once), so the state is empty; it is saved all the same so that the snapshot
/// lists every device of the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042State {}

/// Device kind of the i8042 in snapshots.
pub const I8042_KIND: &str = "i8042";

impl Persist for I8042 {
    fn kind(&self) -> &'static str {
        I8042_KIND
    }

    fn save(&self) -> Result<Vec<u8>, PersistError> {
        persist::encode(I8042_KIND, &I8042State {})
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), PersistError> {
        let I8042State {} = persist::decode(I8042_KIND, data)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_reboots_and_other_writes_do_nothing() {
        let stop = Arc::new(StopSignal::new());
        let mut dev = I8042::new(Arc::clone(&stop));
        dev.write(0, &[CMD_RESET_CPU]);
        dev.write(COMMAND_OFFSET, &[0xaa]);
        assert_eq!(stop.reason(), None);
        dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert_eq!(stop.reason(), Some(StopReason::Reboot));
    }

    #[test]
    fn empty_state_round_trips_and_garbage_is_refused() {
        let mut dev = I8042::new(Arc::new(StopSignal::new()));
        let data = dev.save().unwrap();
        assert!(data.is_empty());
        dev.restore(&data).unwrap();
        assert!(dev.restore(&[1]).is_err());
    }
}
