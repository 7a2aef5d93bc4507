//! Synthetic states for format and store tests (no KVM involved).

use kvm_bindings::{kvm_cpuid_entry2, kvm_irqchip, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_SLAVE};

use super::format::{MachineConfig, MachineState, MemoryLayout, MemoryRegionLayout};
use super::vcpu_state::{MsrValue, VcpuState};
use super::vm_state::{DeviceState, VmState};

/// A vCPU state with recognisable values derived from `index`.
pub(crate) fn sample_vcpu_state(index: u64) -> VcpuState {
    let mut state = VcpuState {
        cpuid: vec![kvm_cpuid_entry2 {
            function: 0,
            eax: 0xd,
            ebx: 0x756e_6547,
            ..Default::default()
        }],
        mp_state: Default::default(),
        regs: Default::default(),
        sregs: Default::default(),
        xsave: (0..1024 + 64).map(|i| i * 3 + index as u32).collect(),
        xcrs: Default::default(),
        debug_regs: Default::default(),
        lapic: Default::default(),
        tsc_khz: Some(2_000_000),
        msrs: vec![
            MsrValue {
                index: 0x10,
                data: 0x1234_5678 + index,
            },
            MsrValue {
                index: 0xc000_0080,
                data: 0x500,
            },
        ],
        tsc_deadline: Some(0),
        vcpu_events: Default::default(),
    };
    state.regs.rip = 0x1000 + index;
    state.regs.rbx = index;
    state.sregs.cr0 = 0x10;
    state.lapic.regs[0x20] = index as _;
    state
}

/// A machine state with `vcpus` vCPUs and guest memory regions `(guest address, size)`.
pub(crate) fn sample_machine_state(vcpus: u32, regions: &[(u64, u64)]) -> MachineState {
    let mut file_offset = 0;
    let regions = regions
        .iter()
        .map(|&(guest_addr, size)| {
            let r = MemoryRegionLayout {
                guest_addr,
                size,
                file_offset,
            };
            file_offset += size;
            r
        })
        .collect();
    let mut vm = VmState {
        pic_master: kvm_irqchip::default(),
        pic_slave: kvm_irqchip {
            chip_id: KVM_IRQCHIP_PIC_SLAVE,
            ..Default::default()
        },
        ioapic: kvm_irqchip {
            chip_id: KVM_IRQCHIP_IOAPIC,
            ..Default::default()
        },
        pit: Default::default(),
        clock: Default::default(),
        devices: vec![DeviceState {
            id: "serial0".to_string(),
            kind: "uart-16550".to_string(),
            data: vec![1, 2, 3, 0xff],
        }],
    };
    vm.clock.clock = 123_456_789;
    MachineState {
        vm_id: "work".to_string(),
        config: MachineConfig {
            vcpu_count: vcpus,
            memory_mib: file_offset >> 20,
            kernel_cmdline: "console=ttyS0 reboot=k panic=1".to_string(),
            vm_config: br#"{"name":"work"}"#.to_vec(),
        },
        memory: MemoryLayout { regions },
        vcpus: (0..u64::from(vcpus)).map(sample_vcpu_state).collect(),
        vm,
    }
}
