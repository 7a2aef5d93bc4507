//! KVM state: the VM ([`vm::Vm`]), one vCPU ([`vcpu::Vcpu`]) and the vCPU threads with
//! pause/resume ([`vcpus::VcpuSet`]).
//!
//! For snapshots: [`vcpus::VcpuSet::pause`] returns once every vCPU thread is parked outside
//! `KVM_RUN` with its pending I/O completed; each vCPU's `VcpuFd` is then reachable through
//! [`vcpus::VcpuSet::vcpus`] (lock the mutex, call [`vcpu::Vcpu::fd`]) until
//! [`vcpus::VcpuSet::resume`].

pub mod vcpu;
pub mod vcpus;
pub mod vm;

/// Tests on the host's own `/dev/kvm` with hand-written real-mode guest code.
#[cfg(test)]
mod kvm_tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::EventFd;

    use super::vcpu::{Vcpu, VcpuEvent};
    use super::vcpus::VcpuSet;
    use super::vm::{Hypervisor, IrqChip, Vm};
    use crate::devices::bus::Bus;
    use crate::devices::console::ConsoleOutput;
    use crate::devices::serial::{SerialDevice, COM1_PORT, COM1_PORT_LEN};
    use crate::stop::StopSignal;

    const CODE_ADDR: u64 = 0x1000;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A VM without irqchip, 1 MiB of RAM holding `code` at 0x1000, one vCPU in real mode at it.
    fn real_mode_vm(code: &[u8], pio: Arc<Bus>) -> Option<(Vm, Vcpu)> {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("no /dev/kvm: skipping");
            return None;
        }
        let hypervisor = Hypervisor::open().unwrap();
        let mut vm = hypervisor.create_vm(IrqChip::None).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        mem.write_slice(code, GuestAddress(CODE_ADDR)).unwrap();
        vm.register_memory(&mem).unwrap();
        let vcpu = Vcpu::new(&vm, 0, pio, Arc::new(Bus::new("mmio"))).unwrap();
        let mut sregs = vcpu.fd().get_sregs().unwrap();
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        vcpu.fd().set_sregs(&sregs).unwrap();
        let regs = kvm_bindings::kvm_regs {
            rip: CODE_ADDR,
            rflags: 2,
            ..Default::default()
        };
        vcpu.fd().set_regs(&regs).unwrap();
        Some((vm, vcpu))
    }

    #[test]
    fn guest_code_writes_to_the_serial_port_and_halts() {
        // mov dx, 0x3f8; mov al, 'O'; out dx, al; mov al, 'K'; out dx, al;
        // in al, 0x80 (no device: ignored); hlt
        let code = [
            0xba, 0xf8, 0x03, 0xb0, b'O', 0xee, 0xb0, b'K', 0xee, 0xe4, 0x80, 0xf4,
        ];
        let out = Captured::default();
        let pio = Arc::new(Bus::new("pio"));
        let console = ConsoleOutput::new(Some(Box::new(out.clone())), Instant::now());
        let serial = SerialDevice::new(EventFd::new(libc::EFD_NONBLOCK).unwrap(), console);
        pio.insert(COM1_PORT, COM1_PORT_LEN, Arc::new(Mutex::new(serial)))
            .unwrap();
        let Some((_vm, mut vcpu)) = real_mode_vm(&code, Arc::clone(&pio)) else {
            return;
        };
        let mut events = Vec::new();
        loop {
            let event = vcpu.run_once().unwrap();
            if event == VcpuEvent::Halted || events.len() > 100 {
                break;
            }
            events.push(event);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"OK");
        assert_eq!(pio.unhandled_accesses(), 1, "the read of port 0x80");
        assert_eq!(
            vcpu.fd().get_regs().unwrap().rip,
            CODE_ADDR + code.len() as u64
        );
    }

    #[test]
    fn spinning_vcpu_pauses_resumes_and_exits() {
        // 1: out 0x80, al; jmp 1b  -- an endless loop that exits to the VMM on each turn.
        let code = [0xe6, 0x80, 0xeb, 0xfc];
        let pio = Arc::new(Bus::new("pio"));
        let Some((_vm, vcpu)) = real_mode_vm(&code, Arc::clone(&pio)) else {
            return;
        };
        let stop = Arc::new(StopSignal::new());
        let mut set = VcpuSet::start(vec![vcpu], Arc::clone(&stop)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        set.pause();
        let during_pause = pio.unhandled_accesses();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            pio.unhandled_accesses(),
            during_pause,
            "no progress while paused"
        );
        // While paused the vCPU is reachable for saving state.
        let rip = set.vcpus()[0].lock().unwrap().fd().get_regs().unwrap().rip;
        assert!((CODE_ADDR..CODE_ADDR + 4).contains(&rip));
        set.resume();
        let deadline = Instant::now() + Duration::from_secs(5);
        while pio.unhandled_accesses() == during_pause && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            pio.unhandled_accesses() > during_pause,
            "runs again after resume"
        );
        set.exit();
        assert_eq!(stop.reason(), None);
    }
}
