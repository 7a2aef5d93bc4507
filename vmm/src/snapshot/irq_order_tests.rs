//! Why the interrupt controllers are restored before the devices (docs/snapshot.md, "Interrupts
//! in flight"), shown on the host's real `/dev/kvm`: an edge a device raises through its irqfd
//! before `KVM_SET_IRQCHIP` puts the saved IOAPIC back is lost; raised after it, it reaches the
//! LAPIC.

use std::time::{Duration, Instant};

use kvm_bindings::{kvm_irqchip, kvm_pit_config, KVM_IRQCHIP_IOAPIC, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::vm_state::{restore_interrupt_controllers, save_vm, VmState};
use crate::arch::x86_64::regs::{lapic_reg, set_lapic_reg};

/// The UART's GSI and the vector the guest gave it.
const GSI: u32 = 4;
const VECTOR: usize = 0x34;
/// LAPIC registers (offsets into `kvm_lapic_state::regs`).
const APIC_SVR: usize = 0xf0;
const APIC_SVR_ENABLE: u32 = 1 << 8;
const APIC_IRR: usize = 0x200;
/// IOAPIC redirection entry bits.
const REDIR_MASKED: u64 = 1 << 16;

struct IrqVm {
    vm: VmFd,
    vcpu: VcpuFd,
    irq: EventFd,
}

/// A VM with an irqchip, a PIT and one vCPU whose LAPIC is software-enabled (as a running guest's
/// is), with an irqfd on the UART's GSI. Its IOAPIC is as KVM creates it: every pin masked.
fn vm_with_irqfd(kvm: &Kvm) -> IrqVm {
    let vm = kvm.create_vm().expect("create VM");
    vm.create_irq_chip().expect("create irqchip");
    vm.create_pit2(kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    })
    .expect("create PIT");
    let vcpu = vm.create_vcpu(0).expect("create vCPU");
    let mut lapic = vcpu.get_lapic().expect("get LAPIC");
    let svr = lapic_reg(&lapic, APIC_SVR) | APIC_SVR_ENABLE | 0xff;
    set_lapic_reg(&mut lapic, APIC_SVR, svr);
    vcpu.set_lapic(&lapic).expect("set LAPIC");
    let irq = EventFd::new(EFD_NONBLOCK).expect("eventfd");
    vm.register_irqfd(&irq, GSI).expect("register irqfd");
    IrqVm { vm, vcpu, irq }
}

fn vector_requested(vcpu: &VcpuFd) -> bool {
    let lapic = vcpu.get_lapic().expect("get LAPIC");
    lapic_reg(&lapic, APIC_IRR + 0x10 * (VECTOR / 32)) & (1 << (VECTOR % 32)) != 0
}

/// Waits up to `limit` for the vector in the LAPIC's IRR: KVM injects an irqfd routed to the
/// IOAPIC from a kernel worker, some time after the eventfd write.
fn vector_arrives_within(vcpu: &VcpuFd, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if vector_requested(vcpu) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The saved state of a running guest's interrupt controllers: pin 4 unmasked, edge, fixed
/// delivery of `VECTOR` to APIC 0.
fn saved_controllers(kvm: &Kvm) -> VmState {
    let source = vm_with_irqfd(kvm);
    let mut ioapic = kvm_irqchip {
        chip_id: KVM_IRQCHIP_IOAPIC,
        ..Default::default()
    };
    source.vm.get_irqchip(&mut ioapic).expect("get IOAPIC");
    // SAFETY: chip_id is KVM_IRQCHIP_IOAPIC, so `ioapic` is the member KVM filled in; the
    // redirection entries are plain 64-bit words.
    unsafe {
        let entry = &mut ioapic.chip.ioapic.redirtbl[GSI as usize];
        entry.bits = VECTOR as u64;
        assert_eq!(entry.bits & REDIR_MASKED, 0);
    }
    source.vm.set_irqchip(&ioapic).expect("set IOAPIC");
    // The pin works in the source VM.
    source.irq.write(1).expect("raise");
    assert!(
        vector_arrives_within(&source.vcpu, Duration::from_secs(5)),
        "the unmasked pin never delivered its vector"
    );
    let mut state = save_vm(&source.vm).expect("save VM state");
    // The snapshot is taken before the edge above: the saved IOAPIC has no request pending.
    // (Writing a union member is safe; the IOAPIC is the one KVM filled in.)
    state.ioapic.chip.ioapic.irr = 0;
    state
}

#[test]
fn an_edge_raised_before_the_ioapic_is_restored_is_lost() {
    let kvm = Kvm::new().expect("open /dev/kvm");
    let saved = saved_controllers(&kvm);
    let target = vm_with_irqfd(&kvm);
    // The old order: a device restored first raises its pending interrupt...
    target.irq.write(1).expect("raise");
    // (Deassigning the irqfd waits for its injection work, so the edge has been handled.)
    target
        .vm
        .unregister_irqfd(&target.irq, GSI)
        .expect("deassign irqfd");
    // ...then the interrupt controllers are restored.
    restore_interrupt_controllers(&target.vm, &saved).expect("restore controllers");
    assert!(
        !vector_arrives_within(&target.vcpu, Duration::from_millis(500)),
        "KVM kept an edge raised on a masked pin; the restore order would not matter"
    );
}

#[test]
fn an_edge_raised_after_the_ioapic_is_restored_reaches_the_lapic() {
    let kvm = Kvm::new().expect("open /dev/kvm");
    let saved = saved_controllers(&kvm);
    let target = vm_with_irqfd(&kvm);
    // The order of Vmm::restore: controllers, then the devices raise what they have pending.
    restore_interrupt_controllers(&target.vm, &saved).expect("restore controllers");
    target.irq.write(1).expect("raise");
    assert!(
        vector_arrives_within(&target.vcpu, Duration::from_secs(5)),
        "the edge raised after the restore never reached the LAPIC"
    );
}
