//! The interrupt line of one virtio-mmio device: an interrupt status register and an eventfd
//! that the core registers as a KVM irqfd on the device's GSI.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::spec::interrupt::{CONFIG_CHANGE, USED_RING};

/// Interrupt status plus the eventfd that raises the GSI.
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    irq_evt: EventFd,
}

impl Interrupt {
    pub fn new() -> io::Result<Self> {
        Ok(Interrupt {
            status: AtomicU32::new(0),
            irq_evt: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// The eventfd to register with `VmFd::register_irqfd` on the device's GSI.
    pub fn irq_evt(&self) -> &EventFd {
        &self.irq_evt
    }

    /// The value of the InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    /// InterruptACK: clears the acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::AcqRel);
    }

    /// Clears every bit (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::Release);
    }

    /// Sets the status bits back from a snapshot.
    pub fn restore(&self, bits: u32) {
        self.status
            .store(bits & (USED_RING | CONFIG_CHANGE), Ordering::Release);
    }

    /// Tells the guest that a used ring has new entries.
    pub fn signal_used_ring(&self) -> io::Result<()> {
        self.raise(USED_RING)
    }

    /// Tells the guest that the device configuration space changed.
    pub fn signal_config_change(&self) -> io::Result<()> {
        self.raise(CONFIG_CHANGE)
    }

    fn raise(&self, bit: u32) -> io::Result<()> {
        self.status.fetch_or(bit, Ordering::AcqRel);
        self.irq_evt.write(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_sets_status_and_writes_eventfd_and_ack_clears() {
        let irq = Interrupt::new().unwrap();
        irq.signal_used_ring().unwrap();
        irq.signal_config_change().unwrap();
        assert_eq!(irq.status(), USED_RING | CONFIG_CHANGE);
        assert_eq!(irq.irq_evt().read().unwrap(), 2);
        irq.ack(USED_RING);
        assert_eq!(irq.status(), CONFIG_CHANGE);
        irq.clear();
        assert_eq!(irq.status(), 0);
    }
}
