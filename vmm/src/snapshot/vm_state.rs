//! Save and restore the VM-wide KVM state: the in-kernel interrupt controllers, the PIT and
//! kvmclock, plus opaque device states.
//!
//! # Order
//! Save ([`save_vm`]) after every vCPU is stopped: PIC master, PIC slave, IOAPIC, PIT, clock.
//! Restore ([`restore_vm`]) into a VM whose irqchip and PIT were created
//! (`KVM_CREATE_IRQCHIP`, `KVM_CREATE_PIT2`) before its vCPUs, after restoring every vCPU and
//! right before resuming them: PIC master, PIC slave, IOAPIC, PIT, then the clock last, so the
//! guest clock is set as close as possible to the moment the guest runs again.
//!
//! # kvmclock
//! `KVM_GET_CLOCK` may report `KVM_CLOCK_TSC_STABLE`, which older kernels refuse in
//! `KVM_SET_CLOCK`: it is cleared at save (as Firecracker does). `KVM_CLOCK_REALTIME` (with the
//! host wall-clock time of the save) is kept when the kernel reported it: on restore KVM then
//! advances the guest clock by the wall time spent suspended, so guest time continues like a
//! laptop waking up rather than resuming in the past. Without that flag the guest clock
//! continues from the saved value.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_CLOCK_TSC_STABLE, KVM_IRQCHIP_IOAPIC,
    KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

/// Errors saving or restoring VM-wide state.
#[derive(Debug, thiserror::Error)]
pub enum VmStateError {
    /// A KVM ioctl on the VM failed.
    #[error("{ioctl} failed on the VM")]
    Ioctl {
        /// The ioctl that failed (with the chip for irqchip calls).
        ioctl: &'static str,
        /// The kernel's error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

type Result<T> = std::result::Result<T, VmStateError>;

fn ioctl(ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmStateError {
    move |source| VmStateError::Ioctl { ioctl, source }
}

/// The saved state of one device. Each device serialises itself into `data`; this module never
/// looks inside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// Stable identifier of the device instance in the VM (e.g. `"serial0"`, `"virtio-blk0"`).
    pub id: String,
    /// Device type, so the restorer knows which type to decode `data` as.
    pub kind: String,
    /// The device's own encoding of its state.
    pub data: Vec<u8>,
}

/// VM-wide KVM state plus device states.
#[derive(Clone, Serialize, Deserialize)]
pub struct VmState {
    /// 8259 PIC, master.
    pub pic_master: kvm_irqchip,
    /// 8259 PIC, slave.
    pub pic_slave: kvm_irqchip,
    /// IOAPIC.
    pub ioapic: kvm_irqchip,
    /// 8254 PIT.
    pub pit: kvm_pit_state2,
    /// kvmclock, flags adjusted as described in the module documentation.
    pub clock: kvm_clock_data,
    /// Device states, filled by the VMM core; empty after [`save_vm`].
    pub devices: Vec<DeviceState>,
}

impl std::fmt::Debug for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmState")
            .field("clock_ns", &self.clock.clock)
            .field("clock_flags", &self.clock.flags)
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}

fn get_chip(vm: &VmFd, chip_id: u32, name: &'static str) -> Result<kvm_irqchip> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip).map_err(ioctl(name))?;
    Ok(chip)
}

/// Clears the clock flags `KVM_SET_CLOCK` does not accept on every kernel.
fn clock_for_restore(mut clock: kvm_clock_data) -> kvm_clock_data {
    clock.flags &= !KVM_CLOCK_TSC_STABLE;
    clock
}

/// Reads the VM-wide state of a VM whose vCPUs are all stopped. `devices` is left empty.
pub fn save_vm(vm: &VmFd) -> Result<VmState> {
    let pic_master = get_chip(vm, KVM_IRQCHIP_PIC_MASTER, "KVM_GET_IRQCHIP (PIC master)")?;
    let pic_slave = get_chip(vm, KVM_IRQCHIP_PIC_SLAVE, "KVM_GET_IRQCHIP (PIC slave)")?;
    let ioapic = get_chip(vm, KVM_IRQCHIP_IOAPIC, "KVM_GET_IRQCHIP (IOAPIC)")?;
    let pit = vm.get_pit2().map_err(ioctl("KVM_GET_PIT2"))?;
    let clock = clock_for_restore(vm.get_clock().map_err(ioctl("KVM_GET_CLOCK"))?);
    Ok(VmState {
        pic_master,
        pic_slave,
        ioapic,
        pit,
        clock,
        devices: Vec::new(),
    })
}

/// Writes VM-wide state into a VM with an irqchip and a PIT. Devices are not touched: the core
/// restores `state.devices` itself, between the two halves ([`restore_interrupt_controllers`],
/// then the devices, then [`restore_timers`]).
pub fn restore_vm(vm: &VmFd, state: &VmState) -> Result<()> {
    restore_interrupt_controllers(vm, state)?;
    restore_timers(vm, state)
}

/// The PICs and the IOAPIC. Must come before any device may raise an interrupt again: an edge
/// that reaches the IOAPIC before its saved state (with every pin still masked, as KVM creates
/// it) is dropped, and `KVM_SET_IRQCHIP` would overwrite it anyway.
pub fn restore_interrupt_controllers(vm: &VmFd, state: &VmState) -> Result<()> {
    vm.set_irqchip(&state.pic_master)
        .map_err(ioctl("KVM_SET_IRQCHIP (PIC master)"))?;
    vm.set_irqchip(&state.pic_slave)
        .map_err(ioctl("KVM_SET_IRQCHIP (PIC slave)"))?;
    vm.set_irqchip(&state.ioapic)
        .map_err(ioctl("KVM_SET_IRQCHIP (IOAPIC)"))?;
    Ok(())
}

/// The PIT, then kvmclock, as late as possible before the vCPUs start.
pub fn restore_timers(vm: &VmFd, state: &VmState) -> Result<()> {
    vm.set_pit2(&state.pit).map_err(ioctl("KVM_SET_PIT2"))?;
    vm.set_clock(&clock_for_restore(state.clock))
        .map_err(ioctl("KVM_SET_CLOCK"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::KVM_CLOCK_REALTIME;

    #[test]
    fn tsc_stable_is_cleared_and_realtime_kept() {
        let clock = kvm_clock_data {
            clock: 42,
            flags: KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME,
            realtime: 7,
            ..Default::default()
        };
        let adjusted = clock_for_restore(clock);
        assert_eq!(adjusted.flags, KVM_CLOCK_REALTIME);
        assert_eq!(adjusted.clock, 42);
        assert_eq!(adjusted.realtime, 7);
    }
}
