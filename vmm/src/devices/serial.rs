//! COM1: a 16550A UART (vm-superio) at port 0x3f8, interrupting on GSI 4 through an irqfd.

use std::io;

use acpi_tables::{aml, Aml};
use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::BusDevice;
use crate::devices::console::ConsoleOutput;

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
    fn aml_lists_the_port_and_irq_4() {
        let aml = dsdt_aml();
        let has = |needle: &[u8]| aml.windows(needle.len()).any(|w| w == needle);
        assert!(has(&[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]));
        assert!(has(&[0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0x00, 0x00, 0x00]));
    }
}
