//! COM1: a 16550A UART (vm-superio) at port 0x3f8, interrupting on GSI 4 through an irqfd.

use std::io;

use std::time::Instant;

use acpi_tables::{aml, Aml};
use serde::{Deserialize, Serialize};
use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::BusDevice;
use crate::devices::console::ConsoleOutput;
use crate::devices::persist::{self, Persist, PersistError};

pub const COM1_PORT: u64 = 0x3f8;
pub const COM1_PORT_LEN: u64 = 8;
pub const COM1_GSI: u32 = 4;

/// Raises an interrupt by signalling an eventfd registered as a KVM irqfd.
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    pub fn new(evt: EventFd) -> Self {
        Self(evt)
    }
}

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// The UART on the port bus.
pub struct SerialDevice {
    uart: Serial<EventFdTrigger, NoEvents, ConsoleOutput>,
}

impl SerialDevice {
    pub fn new(irq: EventFd, out: ConsoleOutput) -> Self {
        Self {
            uart: Serial::new(EventFdTrigger::new(irq), out),
        }
    }

    /// Queues console input for the guest; returns how many bytes fit in the receive FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (u8::try_from(offset), data) {
            (Ok(offset), [byte]) => *byte = self.uart.read(offset),
            (_, data) => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(offset), [byte]) = (u8::try_from(offset), data) {
            if let Err(e) = self.uart.write(offset, *byte) {
                tracing::warn!("serial console write failed: {e:?}");
            }
        }
    }
}

/// The UART's registers and receive FIFO, as saved in snapshots (the transmit side has no
/// buffer: every byte goes to the console at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialDeviceState {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    /// Received bytes the guest has not read yet.
    pub receive_fifo: Vec<u8>,
}

impl From<SerialState> for SerialDeviceState {
    fn from(s: SerialState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            receive_fifo: s.in_buffer,
        }
    }
}

impl From<SerialDeviceState> for SerialState {
    fn from(s: SerialDeviceState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.receive_fifo,
        }
    }
}

/// Device kind of the UART in snapshots.
pub const SERIAL_KIND: &str = "uart-16550a";

impl Persist for SerialDevice {
    fn kind(&self) -> &'static str {
        SERIAL_KIND
    }

    fn save(&self) -> Result<Vec<u8>, PersistError> {
        persist::encode(SERIAL_KIND, &SerialDeviceState::from(self.uart.state()))
    }

    /// Rebuilds the UART from the saved registers, keeping this VM's interrupt line and console.
    fn restore(&mut self, data: &[u8]) -> Result<(), PersistError> {
        let state: SerialDeviceState = persist::decode(SERIAL_KIND, data)?;
        let invalid = |reason: String| PersistError::Invalid {
            kind: SERIAL_KIND,
            reason,
        };
        let irq = self
            .uart
            .interrupt_evt()
            .0
            .try_clone()
            .map_err(|e| invalid(format!("cannot duplicate the interrupt eventfd: {e}")))?;
        // A stand-in while the console output moves from the old UART to the new one.
        let placeholder = Serial::new(
            EventFdTrigger::new(irq),
            ConsoleOutput::new(None, Instant::now()),
        );
        let old = std::mem::replace(&mut self.uart, placeholder);
        let trigger = EventFdTrigger::new(
            old.interrupt_evt()
                .0
                .try_clone()
                .map_err(|e| invalid(format!("cannot duplicate the interrupt eventfd: {e}")))?,
        );
        let out = old.into_writer();
        let fifo_len = state.receive_fifo.len();
        match Serial::from_state(&state.into(), trigger, NoEvents, out) {
            Ok(uart) => {
                self.uart = uart;
                Ok(())
            }
            Err(e) => Err(invalid(format!(
                "{fifo_len} bytes in the receive FIFO: {e:?}"
            ))),
        }
    }
}

/// The DSDT entry for COM1 (`PNP0501`). In hardware-reduced ACPI mode the guest sets up ISA
/// interrupt lines only for devices the firmware describes, so the UART must be listed.
pub fn dsdt_aml() -> Vec<u8> {
    let port = COM1_PORT as u16;
    let mut bytes = Vec::new();
    aml::Device::new(
        "_SB_.COM1".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501")),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![
                    &aml::IO::new(port, port, 1, COM1_PORT_LEN as u8),
                    &aml::Interrupt::new(true, true, false, false, COM1_GSI),
                ]),
            ),
        ],
    )
    .to_aml_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transmit_goes_to_console_and_input_raises_interrupt() {
        let out = Shared::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let irq_probe = irq.try_clone().unwrap();
        let console = ConsoleOutput::new(Some(Box::new(out.clone())), Instant::now());
        let mut serial = SerialDevice::new(irq, console);
        serial.write(0, b"O");
        serial.write(0, b"K");
        assert_eq!(&*out.0.lock().unwrap(), b"OK");

        serial.write(1, &[0x01]); // IER: received data available interrupt
        assert_eq!(serial.enqueue_input(b"ab"), 2);
        assert!(irq_probe.read().unwrap() >= 1);
        let mut byte = [0u8];
        serial.read(0, &mut byte);
        assert_eq!(byte, *b"a");
        // Wider accesses are not UART accesses.
        let mut wide = [0u8; 2];
        serial.read(0, &mut wide);
        assert_eq!(wide, [0xff, 0xff]);
    }

    #[test]
    fn registers_and_receive_fifo_survive_save_and_restore() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut serial = SerialDevice::new(irq, ConsoleOutput::new(None, Instant::now()));
        serial.write(3, &[0x80]); // LCR: DLAB
        serial.write(0, &[0x0c]); // divisor 12: 9600 baud
        serial.write(3, &[0x03]); // 8N1
        serial.write(1, &[0x01]); // IER
        serial.write(7, &[0x5a]); // scratch
        assert_eq!(serial.enqueue_input(b"xyz"), 3);
        let data = serial.save().unwrap();

        let out = Shared::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let probe = irq.try_clone().unwrap();
        let console = ConsoleOutput::new(Some(Box::new(out.clone())), Instant::now());
        let mut restored = SerialDevice::new(irq, console);
        restored.restore(&data).unwrap();
        assert_eq!(restored.save().unwrap(), data);
        let mut byte = [0u8];
        restored.read(7, &mut byte);
        assert_eq!(byte, [0x5a]);
        for expected in b"xyz" {
            restored.read(0, &mut byte);
            assert_eq!(byte[0], *expected);
        }
        // The restored UART writes to this VM's console and raises this VM's interrupt.
        restored.write(0, b"!");
        assert_eq!(&*out.0.lock().unwrap(), b"!");
        assert_eq!(restored.enqueue_input(b"q"), 1);
        assert!(probe.read().unwrap() >= 1);
    }

    #[test]
    fn an_overfull_receive_fifo_is_refused() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut serial = SerialDevice::new(irq, ConsoleOutput::new(None, Instant::now()));
        let mut state = SerialDeviceState::from(SerialState::default());
        state.receive_fifo = vec![b'a'; 65];
        let data = persist::encode(SERIAL_KIND, &state).unwrap();
        assert!(matches!(
            serial.restore(&data),
            Err(PersistError::Invalid { .. })
        ));
    }

    #[test]
    fn aml_lists_the_port_and_irq_4() {
        let aml = dsdt_aml();
        let has = |needle: &[u8]| aml.windows(needle.len()).any(|w| w == needle);
        assert!(has(&[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]));
        assert!(has(&[0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0x00, 0x00, 0x00]));
    }
}
