//! Whole-VM tests on the host's own `/dev/kvm` with a hand-made PVH "kernel": an ELF whose entry
//! prints a line on COM1 and then powers off through ACPI S5, or spins.

use super::*;
use crate::api::types::ShutdownOutcome;
use crate::control::{ControlError, VmControl, VmRequest, VmResponse};
use std::path::{Path, PathBuf};

const LOAD_ADDR: u64 = 0x10_0000;
const CODE_OFFSET: usize = 0x1000;
const NOTE_OFFSET: usize = 0x200;
const MESSAGE: &[u8] = b"VIRMO-GUEST-READY\n\0";

/// 32-bit code: print MESSAGE on COM1, then power off (S5) or spin.
fn guest_code(power_off: bool) -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    let msg_at = code.len();
    code.extend_from_slice(&[0xbe, 0, 0, 0, 0]); // mov esi, MESSAGE
                                                 // 1: lodsb; test al, al; jz 2f; out dx, al; jmp 1b; 2:
    code.extend_from_slice(&[0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8]);
    if power_off {
        // mov dx, 0x600; mov al, SLP_TYP 5 | SLP_EN; out dx, al
        code.extend_from_slice(&[0x66, 0xba, 0x00, 0x06, 0xb0, (5 << 2) | (1 << 5), 0xee]);
    }
    code.extend_from_slice(&[0xeb, 0xfe]); // jmp .
    let message_addr = LOAD_ADDR as u32 + code.len() as u32;
    code[msg_at + 1..msg_at + 5].copy_from_slice(&message_addr.to_le_bytes());
    code.extend_from_slice(MESSAGE);
    code
}

/// An ELF64 executable with one PT_LOAD at 1 MiB and a PVH entry note.
fn pvh_elf(code: &[u8]) -> Vec<u8> {
    let mut elf = vec![0u8; CODE_OFFSET + code.len()];
    let put = |elf: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        elf[at..at + bytes.len()].copy_from_slice(bytes)
    };
    put(&mut elf, 0, &[0x7f, b'E', b'L', b'F', 2, 1, 1]);
    put(&mut elf, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut elf, 18, &0x3eu16.to_le_bytes()); // x86-64
    put(&mut elf, 20, &1u32.to_le_bytes());
    put(&mut elf, 24, &LOAD_ADDR.to_le_bytes()); // e_entry
    put(&mut elf, 32, &64u64.to_le_bytes()); // e_phoff
    put(&mut elf, 52, &64u16.to_le_bytes()); // e_ehsize
    put(&mut elf, 54, &56u16.to_le_bytes()); // e_phentsize
    put(&mut elf, 56, &2u16.to_le_bytes()); // e_phnum
    let note_len = 12 + 4 + 4;
    for (i, (kind, offset, addr, size)) in [
        (1u32, CODE_OFFSET as u64, LOAD_ADDR, code.len() as u64),
        (4u32, NOTE_OFFSET as u64, 0, note_len as u64),
    ]
    .into_iter()
    .enumerate()
    {
        let ph = 64 + 56 * i;
        put(&mut elf, ph, &kind.to_le_bytes());
        put(&mut elf, ph + 4, &7u32.to_le_bytes()); // RWX
        put(&mut elf, ph + 8, &offset.to_le_bytes());
        put(&mut elf, ph + 16, &addr.to_le_bytes()); // vaddr
        put(&mut elf, ph + 24, &addr.to_le_bytes()); // paddr
        put(&mut elf, ph + 32, &size.to_le_bytes()); // filesz
        put(&mut elf, ph + 40, &size.to_le_bytes()); // memsz
        put(&mut elf, ph + 48, &0x1000u64.to_le_bytes());
    }
    // Note: namesz 4 "Xen\0", descsz 4, type 18 (XEN_ELFNOTE_PHYS32_ENTRY), entry.
    put(&mut elf, NOTE_OFFSET, &4u32.to_le_bytes());
    put(&mut elf, NOTE_OFFSET + 4, &4u32.to_le_bytes());
    put(&mut elf, NOTE_OFFSET + 8, &18u32.to_le_bytes());
    put(&mut elf, NOTE_OFFSET + 12, b"Xen\0");
    put(
        &mut elf,
        NOTE_OFFSET + 16,
        &(LOAD_ADDR as u32).to_le_bytes(),
    );
    put(&mut elf, CODE_OFFSET, code);
    elf
}

pub(crate) fn test_config(name: &str, power_off: bool) -> Option<(VmConfig, PathBuf)> {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("no /dev/kvm: skipping");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("vmm-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kernel = dir.join("kernel.elf");
    std::fs::write(&kernel, pvh_elf(&guest_code(power_off))).unwrap();
    let console = dir.join("console");
    let _ = std::fs::remove_file(&console);
    let mut config = VmConfig::new(kernel);
    config.memory_mib = 64;
    config.console = ConsoleConfig::File(console.clone());
    Some((config, console))
}

pub(crate) fn wait_for_console(path: &Path, text: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains(text)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn pvh_guest_prints_and_powers_off() {
    let Some((config, console)) = test_config("poweroff", true) else {
        return;
    };
    let vmm = Vmm::build(config).unwrap();
    vmm.start().unwrap();
    let reason = vmm.stop_signal().wait_timeout(Duration::from_secs(60));
    vmm.shut_down();
    assert_eq!(reason, Some(StopReason::PowerOff));
    assert_eq!(
        std::fs::read_to_string(&console).unwrap(),
        "VIRMO-GUEST-READY\n"
    );
}

#[test]
fn snapshot_saves_the_vm_and_a_new_vmm_restores_it() {
    let Some((config, console)) = test_config("snapshot", false) else {
        return;
    };
    let vmm = Vmm::build(config).unwrap();
    vmm.start().unwrap();
    assert!(wait_for_console(&console, "VIRMO-GUEST-READY"));
    let dir = console.with_file_name("snap");
    let started = Instant::now();
    let answer = vmm.handle(VmRequest::Snapshot {
        dir: dir.clone(),
        keep_running: true,
    });
    eprintln!("snapshot took {:?}", started.elapsed());
    let Ok(VmResponse::Snapshot(info)) = answer else {
        panic!("unexpected {answer:?}");
    };
    assert_eq!(info.memory_size, 64 << 20);
    assert!(info.memory_bytes_written > 0 && info.memory_bytes_written < 8 << 20);
    assert_eq!(
        vmm.handle(VmRequest::GetInfo)
            .map(|r| matches!(r, VmResponse::Info(i) if i.state == RunState::Paused)),
        Ok(true)
    );
    // A second suspend without keep_running marks the VM suspended: it refuses to resume.
    assert!(matches!(
        vmm.handle(VmRequest::Snapshot {
            dir: dir.clone(),
            keep_running: false,
        }),
        Ok(VmResponse::Snapshot(_))
    ));
    assert!(vmm.is_suspended());
    assert!(matches!(
        vmm.handle(VmRequest::Resume),
        Err(ControlError::InvalidState { .. })
    ));
    vmm.after_answer(
        &VmRequest::Snapshot {
            dir: dir.clone(),
            keep_running: false,
        },
        &Ok(VmResponse::Snapshot(info)),
    );
    assert_eq!(vmm.wait(), StopReason::Suspended);
    vmm.shut_down();

    let t0 = Instant::now();
    let restored = Vmm::restore(
        &restore::RestoreOptions::new(&dir),
        Launch::begin(Instant::now()).unwrap(),
        Box::new(|_| Ok(())),
    )
    .unwrap();
    restored.start().unwrap();
    eprintln!("restore and start took {:?}", t0.elapsed());
    assert_eq!(restored.info().state, RunState::Running);
    restored.handle(VmRequest::Stop).unwrap();
    restored.shut_down();
}

#[test]
fn control_pauses_resumes_and_forces_a_shutdown_the_guest_ignores() {
    let Some((config, console)) = test_config("control", false) else {
        return;
    };
    let vmm = Vmm::build(config).unwrap();
    vmm.start().unwrap();
    assert!(wait_for_console(&console, "VIRMO-GUEST-READY"));
    let info = |vmm: &Vmm| match vmm.handle(VmRequest::GetInfo) {
        Ok(VmResponse::Info(info)) => info,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(info(&vmm).state, RunState::Running);
    assert!(matches!(
        vmm.handle(VmRequest::Resume),
        Err(ControlError::InvalidState { .. })
    ));
    assert_eq!(vmm.handle(VmRequest::Pause), Ok(VmResponse::Done));
    assert_eq!(info(&vmm).state, RunState::Paused);
    assert!(matches!(
        vmm.handle(VmRequest::Pause),
        Err(ControlError::InvalidState { .. })
    ));
    assert_eq!(vmm.handle(VmRequest::Resume), Ok(VmResponse::Done));
    let answer = vmm.handle(VmRequest::Shutdown {
        timeout: Duration::from_millis(200),
    });
    assert_eq!(answer, Ok(VmResponse::Shutdown(ShutdownOutcome::Forced)));
    assert_eq!(vmm.wait(), StopReason::ShutdownForced);
    vmm.shut_down();
}

#[test]
fn restore_build_needs_no_kernel_and_writes_nothing_to_guest_memory() {
    let Some((mut config, _)) = test_config("restore", true) else {
        return;
    };
    config.kernel = "/nonexistent/kernel".into();
    config.vcpus = 2;
    let memory = memory::create_guest_memory(config.memory_bytes()).unwrap();
    let vmm = Vmm::build_for_restore(
        config,
        memory,
        Launch::begin(Instant::now()).unwrap(),
        Box::new(|_| Ok(())),
    )
    .unwrap();
    assert_eq!(vmm.with_created_vcpus(|vcpus| vcpus.len()), 2);
    let rsdp: [u8; 8] =
        vm_memory::Bytes::read_obj(vmm.memory(), vm_memory::GuestAddress(ACPI_TABLES_START))
            .unwrap();
    assert_eq!(rsdp, [0; 8]);
    assert_eq!(vmm.info().state, RunState::Created);
}

#[test]
fn elf_kernel_bigger_than_memory_is_refused() {
    let Some((mut config, _)) = test_config("toobig", true) else {
        return;
    };
    let path = config.kernel.clone();
    let mut code = guest_code(true);
    code.resize(40 << 20, 0x90);
    std::fs::write(&path, pvh_elf(&code)).unwrap();
    config.memory_mib = 32;
    let err = Vmm::build(config).err().unwrap();
    assert!(matches!(err, VmmError::Boot(_)), "{err:?}");
}
