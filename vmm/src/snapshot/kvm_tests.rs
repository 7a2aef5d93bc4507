//! Save and restore through the host's real `/dev/kvm`: a tiny real-mode guest counts in a
//! register and in memory, reporting each count with an `out`; after a snapshot and a restore
//! into a brand-new VM (lazy and eager memory), the count continues where it stopped.

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::format::{MachineConfig, MachineState, MemoryLayout, TargetLayout};
use super::memory_file::MemoryRestore;
use super::msrs::MSR_IA32_TSC;
use super::store::{Snapshot, SnapshotWriter};
use super::vcpu_state::{
    complete_pending_io, restore_vcpu, save_vcpu, VcpuSaveContext, VcpuStateError,
};
use super::vm_state::{restore_vm, save_vm, DeviceState};

const CODE_ADDR: u64 = 0x1000;
const COUNTER_ADDR: u64 = 0x2000;
const PORT: u16 = 0x3f8;
const MARKER_ADDR: u64 = 0x10_0800;
const MARKER: &[u8] = b"second region survives";
const REGIONS: &[(u64, usize)] = &[(0, 0x1_0000), (0x10_0000, 0x4000)];

/// Real mode, loaded at 0x1000:
/// ```text
/// 1000: 66 43           inc ebx
/// 1002: 66 89 1e 00 20  mov [0x2000], ebx
/// 1007: ba f8 03        mov dx, 0x3f8
/// 100a: 88 d8           mov al, bl
/// 100c: ee              out dx, al
/// 100d: eb f1           jmp 0x1000
/// ```
const GUEST_CODE: &[u8] = &[
    0x66, 0x43, 0x66, 0x89, 0x1e, 0x00, 0x20, 0xba, 0xf8, 0x03, 0x88, 0xd8, 0xee, 0xeb, 0xf1,
];

struct TestVm {
    kvm: Kvm,
    vm: VmFd,
    /// vCPU 0, the boot processor.
    vcpu: VcpuFd,
    /// vCPUs 1.., application processors that never run in these tests.
    aps: Vec<VcpuFd>,
    memory: GuestMemoryMmap<()>,
}

/// A VM built the way the VMM core builds one: memory slots, irqchip and PIT, one vCPU with
/// the host's supported CPUID.
fn build_vm(memory: GuestMemoryMmap<()>) -> TestVm {
    build_smp_vm(memory, 1)
}

fn build_smp_vm(memory: GuestMemoryMmap<()>, vcpu_count: u64) -> TestVm {
    let kvm = Kvm::new().expect("open /dev/kvm");
    let vm = kvm.create_vm().expect("create VM");
    for (slot, region) in memory.iter().enumerate() {
        let slot_region = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the mapping behind `region` stays alive in `TestVm::memory` as long as the
        // VM that uses it, and no two slots overlap.
        unsafe { vm.set_user_memory_region(slot_region) }.expect("set memory region");
    }
    vm.create_irq_chip().expect("create irqchip");
    vm.create_pit2(kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    })
    .expect("create PIT");
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .expect("supported CPUID");
    let mut vcpus: Vec<VcpuFd> = (0..vcpu_count)
        .map(|id| {
            let vcpu = vm.create_vcpu(id).expect("create vCPU");
            vcpu.set_cpuid2(&cpuid).expect("set CPUID");
            vcpu
        })
        .collect();
    let vcpu = vcpus.remove(0);
    TestVm {
        kvm,
        vm,
        vcpu,
        aps: vcpus,
        memory,
    }
}

fn fresh_guest() -> TestVm {
    guest_running(GUEST_CODE)
}

/// A new VM about to run `code` in real mode at `CODE_ADDR`.
fn guest_running(code: &[u8]) -> TestVm {
    let ranges: Vec<_> = REGIONS.iter().map(|&(a, s)| (GuestAddress(a), s)).collect();
    let memory = GuestMemoryMmap::<()>::from_ranges(&ranges).expect("guest memory");
    memory
        .write_slice(code, GuestAddress(CODE_ADDR))
        .expect("load code");
    memory
        .write_slice(MARKER, GuestAddress(MARKER_ADDR))
        .expect("write marker");
    let vm = build_vm(memory);
    let mut sregs = vm.vcpu.get_sregs().expect("get sregs");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vm.vcpu.set_sregs(&sregs).expect("set sregs");
    let regs = kvm_bindings::kvm_regs {
        rip: CODE_ADDR,
        rflags: 2,
        ..Default::default()
    };
    vm.vcpu.set_regs(&regs).expect("set regs");
    vm
}

/// Runs until the guest has written `count` bytes to `PORT`; returns them.
fn run_outs(vcpu: &mut VcpuFd, count: usize) -> Vec<u8> {
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        match vcpu.run().expect("KVM_RUN") {
            VcpuExit::IoOut(port, data) => {
                assert_eq!(port, PORT, "unexpected port");
                seen.push(data[0]);
            }
            other => panic!("unexpected exit {other:?} after {} outs", seen.len()),
        }
    }
    seen
}

fn counter_in_memory(memory: &GuestMemoryMmap<()>) -> u32 {
    memory
        .read_obj::<u32>(GuestAddress(COUNTER_ADDR))
        .expect("read counter")
}

fn memory_bytes() -> u64 {
    REGIONS.iter().map(|&(_, s)| s as u64).sum()
}

/// Runs a fresh guest for `outs` iterations and snapshots it into `dir`.
fn run_and_snapshot(dir: &std::path::Path, outs: usize) {
    let mut guest = fresh_guest();
    let seen = run_outs(&mut guest.vcpu, outs);
    let expected: Vec<u8> = (1..=outs as u8).collect();
    assert_eq!(seen, expected);
    complete_pending_io(&mut guest.vcpu).expect("complete pending out");
    snapshot_guest(&guest, dir, outs as u8);
    assert_eq!(counter_in_memory(&guest.memory), outs as u32);
}

/// Saves a stopped guest (pending I/O completed) into the snapshot folder `dir`, with one
/// device state holding `device_byte`.
fn snapshot_guest(guest: &TestVm, dir: &std::path::Path, device_byte: u8) {
    let ctx = VcpuSaveContext::new(&guest.kvm, &guest.vm).expect("save context");
    let vcpu_state = save_vcpu(&guest.vcpu, &ctx).expect("save vCPU");
    let mut vm_state = save_vm(&guest.vm).expect("save VM");
    vm_state.devices.push(DeviceState {
        id: "counter-port".to_string(),
        kind: "test".to_string(),
        data: vec![device_byte],
    });
    let state = MachineState {
        vm_id: "counter".to_string(),
        config: MachineConfig {
            vcpu_count: 1,
            memory_mib: 0,
            kernel_cmdline: String::new(),
            vm_config: Vec::new(),
        },
        memory: MemoryLayout::of(&guest.memory),
        vcpus: vec![vcpu_state],
        vm: vm_state,
    };
    SnapshotWriter::new(dir)
        .expect("writer")
        .write(&state, &guest.memory)
        .expect("write snapshot");
}

fn resume_from(dir: &std::path::Path, mode: MemoryRestore) -> TestVm {
    let snapshot = Snapshot::open(dir).expect("open snapshot");
    snapshot
        .check_fits(&TargetLayout {
            vcpu_count: 1,
            memory_bytes: memory_bytes(),
        })
        .expect("layout fits");
    let memory = snapshot.load_memory(mode).expect("load memory");
    let guest = build_vm(memory);
    restore_vcpu(&guest.vcpu, &snapshot.state.vcpus[0]).expect("restore vCPU");
    restore_vm(&guest.vm, &snapshot.state.vm).expect("restore VM");
    guest
}

fn check_resumes_counting(mode: MemoryRestore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("counter");
    run_and_snapshot(&snap, 10);

    let mut guest = resume_from(&snap, mode);
    let snapshot = Snapshot::open(&snap).expect("open");
    assert_eq!(snapshot.state.vm.devices[0].data, vec![10]);
    assert_eq!(counter_in_memory(&guest.memory), 10);
    let seen = run_outs(&mut guest.vcpu, 5);
    assert_eq!(
        seen,
        vec![11, 12, 13, 14, 15],
        "counter did not continue from 10"
    );
    assert_eq!(counter_in_memory(&guest.memory), 15);
    assert_eq!(guest.vcpu.get_regs().expect("regs").rbx, 15);
    let mut marker = vec![0u8; MARKER.len()];
    guest
        .memory
        .read_slice(&mut marker, GuestAddress(MARKER_ADDR))
        .expect("read marker");
    assert_eq!(marker, MARKER);
}

#[test]
fn counter_continues_after_restore_with_lazy_memory() {
    check_resumes_counting(MemoryRestore::Lazy);
}

#[test]
fn counter_continues_after_restore_with_eager_memory() {
    check_resumes_counting(MemoryRestore::Eager);
}

#[test]
fn restored_vcpu_reads_back_the_saved_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("counter");
    run_and_snapshot(&snap, 10);
    let saved = Snapshot::open(&snap).expect("open").state.vcpus[0].clone();

    let guest = resume_from(&snap, MemoryRestore::Eager);
    let ctx = VcpuSaveContext::new(&guest.kvm, &guest.vm).expect("save context");
    let again = save_vcpu(&guest.vcpu, &ctx).expect("save restored vCPU");
    assert_eq!(again.regs.rip, saved.regs.rip);
    assert_eq!(again.regs.rbx, 10);
    assert_eq!(again.regs.rflags, saved.regs.rflags);
    assert_eq!(again.sregs.cs.base, saved.sregs.cs.base);
    assert_eq!(again.sregs.cr0, saved.sregs.cr0);
    assert_eq!(again.xsave, saved.xsave);
    assert_eq!(again.mp_state.mp_state, saved.mp_state.mp_state);
    assert_eq!(again.cpuid.len(), saved.cpuid.len());
    let without_tsc = |msrs: &[super::vcpu_state::MsrValue]| {
        msrs.iter()
            .filter(|m| m.index != MSR_IA32_TSC)
            .copied()
            .collect::<Vec<_>>()
    };
    assert_eq!(without_tsc(&again.msrs), without_tsc(&saved.msrs));
    let tsc = |msrs: &[super::vcpu_state::MsrValue]| {
        msrs.iter()
            .find(|m| m.index == MSR_IA32_TSC)
            .map(|m| m.data)
    };
    let (saved_tsc, restored_tsc) = (tsc(&saved.msrs), tsc(&again.msrs));
    assert!(saved_tsc.is_some(), "TSC MSR was not saved");
    assert!(restored_tsc >= saved_tsc, "guest TSC went backwards");
}

#[test]
fn snapshot_of_other_vcpu_count_or_memory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("counter");
    run_and_snapshot(&snap, 3);
    let snapshot = Snapshot::open(&snap).expect("open");
    let two_vcpus = TargetLayout {
        vcpu_count: 2,
        memory_bytes: memory_bytes(),
    };
    assert!(snapshot.check_fits(&two_vcpus).is_err());
    let more_memory = TargetLayout {
        vcpu_count: 1,
        memory_bytes: memory_bytes() * 2,
    };
    assert!(snapshot.check_fits(&more_memory).is_err());
}

#[test]
fn short_xsave_is_refused_on_restore() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("counter");
    run_and_snapshot(&snap, 2);
    let mut state = Snapshot::open(&snap).expect("open").state.vcpus[0].clone();
    state.xsave.truncate(16);
    let guest = fresh_guest();
    let err = restore_vcpu(&guest.vcpu, &state).expect_err("16-word XSAVE accepted");
    assert!(matches!(err, VcpuStateError::XsaveTooShort { words: 16 }));
}

/// Real mode, loaded at 0x1000: reads a byte from port 0x3f9, stores it, echoes it, halts.
/// ```text
/// 1000: ba f9 03   mov dx, 0x3f9
/// 1003: ec         in al, dx
/// 1004: a2 00 30   mov [0x3000], al
/// 1007: ba f8 03   mov dx, 0x3f8
/// 100a: ee         out dx, al
/// 100b: f4         hlt
/// ```
const ECHO_CODE: &[u8] = &[
    0xba, 0xf9, 0x03, 0xec, 0xa2, 0x00, 0x30, 0xba, 0xf8, 0x03, 0xee, 0xf4,
];

#[test]
fn input_answered_before_the_snapshot_reaches_the_restored_guest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("echo");
    let mut guest = guest_running(ECHO_CODE);
    match guest.vcpu.run().expect("KVM_RUN") {
        VcpuExit::IoIn(0x3f9, data) => data[0] = 0x42,
        other => panic!("expected the guest to read port 0x3f9, got {other:?}"),
    }
    // The `in` completes (AL = 0x42, RIP past it) only on the next KVM_RUN.
    complete_pending_io(&mut guest.vcpu).expect("complete pending in");
    assert_eq!(guest.vcpu.get_regs().expect("regs").rax & 0xff, 0x42);
    snapshot_guest(&guest, &snap, 0);
    drop(guest);

    let mut restored = resume_from(&snap, MemoryRestore::Lazy);
    match restored.vcpu.run().expect("KVM_RUN") {
        VcpuExit::IoOut(0x3f8, data) => assert_eq!(data, [0x42]),
        other => panic!("restored guest should echo 0x42, got {other:?}"),
    }
    let stored: u8 = restored
        .memory
        .read_obj(GuestAddress(0x3000))
        .expect("read");
    assert_eq!(stored, 0x42);
}

#[test]
fn msr_the_host_refuses_is_skipped_and_the_rest_saved() {
    let mut guest = fresh_guest();
    run_outs(&mut guest.vcpu, 1);
    complete_pending_io(&mut guest.vcpu).expect("complete pending out");
    let mut ctx = VcpuSaveContext::new(&guest.kvm, &guest.vm).expect("save context");
    let listed = ctx.msrs.len();
    // An index no CPU implements, in the middle of the list.
    ctx.msrs.insert(listed / 2, 0xdead_beef);
    let state = save_vcpu(&guest.vcpu, &ctx).expect("save despite the bogus MSR");
    let saved = state.msrs.len() + usize::from(state.tsc_deadline.is_some());
    assert_eq!(saved, listed);
    assert!(state.msrs.iter().all(|m| m.index != 0xdead_beef));
    assert!(state.msrs.iter().any(|m| m.index == MSR_IA32_TSC));
}

#[test]
fn memory_file_of_a_real_guest_holds_only_its_touched_pages() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("counter");
    run_and_snapshot(&snap, 4);
    let meta = std::fs::metadata(snap.join("memory.bin")).expect("stat");
    assert_eq!(meta.len(), memory_bytes());
    // Code, counter and marker pages: 12 KiB of 80 KiB, plus file system slack.
    let on_disk = meta.blocks() * 512;
    assert!(on_disk >= 3 * 4096, "{on_disk} bytes on disk");
    assert!(on_disk <= 3 * 4096 + 16 * 1024, "{on_disk} bytes on disk");
}

#[test]
fn two_vcpus_are_saved_and_restored_in_index_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("smp");
    let ranges: Vec<_> = REGIONS.iter().map(|&(a, s)| (GuestAddress(a), s)).collect();
    let memory = GuestMemoryMmap::<()>::from_ranges(&ranges).expect("guest memory");
    memory
        .write_slice(GUEST_CODE, GuestAddress(CODE_ADDR))
        .expect("load code");
    let mut guest = build_smp_vm(memory, 2);
    let mut sregs = guest.vcpu.get_sregs().expect("sregs");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    guest.vcpu.set_sregs(&sregs).expect("set sregs");
    let boot = kvm_bindings::kvm_regs {
        rip: CODE_ADDR,
        rflags: 2,
        ..Default::default()
    };
    guest.vcpu.set_regs(&boot).expect("set regs");
    // The AP never runs; give it a register value to recognise after the restore.
    let mut ap_regs = guest.aps[0].get_regs().expect("AP regs");
    ap_regs.rbx = 0x77;
    guest.aps[0].set_regs(&ap_regs).expect("set AP regs");
    let ap_mp_state = guest.aps[0].get_mp_state().expect("AP MP state");

    assert_eq!(run_outs(&mut guest.vcpu, 6), vec![1, 2, 3, 4, 5, 6]);
    complete_pending_io(&mut guest.vcpu).expect("complete pending out");
    let ctx = VcpuSaveContext::new(&guest.kvm, &guest.vm).expect("save context");
    let vcpus = vec![
        save_vcpu(&guest.vcpu, &ctx).expect("save BSP"),
        save_vcpu(&guest.aps[0], &ctx).expect("save AP"),
    ];
    let state = MachineState {
        vm_id: "smp".to_string(),
        config: MachineConfig {
            vcpu_count: 2,
            memory_mib: 0,
            kernel_cmdline: String::new(),
            vm_config: Vec::new(),
        },
        memory: MemoryLayout::of(&guest.memory),
        vcpus,
        vm: save_vm(&guest.vm).expect("save VM"),
    };
    SnapshotWriter::new(&snap)
        .expect("writer")
        .write(&state, &guest.memory)
        .expect("write snapshot");
    drop(guest);

    let snapshot = Snapshot::open(&snap).expect("open");
    let one_vcpu = TargetLayout {
        vcpu_count: 1,
        memory_bytes: memory_bytes(),
    };
    assert!(snapshot.check_fits(&one_vcpu).is_err());
    snapshot
        .check_fits(&TargetLayout {
            vcpu_count: 2,
            ..one_vcpu
        })
        .expect("two vCPUs fit");
    let memory = snapshot.load_memory(MemoryRestore::Lazy).expect("memory");
    let mut restored = build_smp_vm(memory, 2);
    restore_vcpu(&restored.vcpu, &snapshot.state.vcpus[0]).expect("restore BSP");
    restore_vcpu(&restored.aps[0], &snapshot.state.vcpus[1]).expect("restore AP");
    restore_vm(&restored.vm, &snapshot.state.vm).expect("restore VM");
    assert_eq!(restored.aps[0].get_regs().expect("AP regs").rbx, 0x77);
    assert_eq!(
        restored.aps[0]
            .get_mp_state()
            .expect("AP MP state")
            .mp_state,
        ap_mp_state.mp_state
    );
    assert_eq!(run_outs(&mut restored.vcpu, 2), vec![7, 8]);
}
