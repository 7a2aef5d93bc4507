//! `VirtioDevices` on a real KVM VM (irqfd and ioeventfd need one): placement, DSDT entries,
//! the bus, listing and the policy semantics. What a real guest sees is in tests/tests/devices.rs.

use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::tempfile::TempFile;

use super::*;
use crate::devices::virtio::DeviceClass;
use crate::memory::MMIO_DEVICES_START;
use crate::vstate::vm::{Hypervisor, IrqChip};

fn rng(id: &str, allowed: bool) -> DeviceConfig {
    DeviceConfig {
        id: id.into(),
        class: DeviceClass::Entropy,
        kind: DeviceKind::Rng,
        allowed,
    }
}

fn kvm_vm() -> Option<(Vm, GuestMemoryMmap)> {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("no /dev/kvm: skipping");
        return None;
    }
    let hypervisor = Hypervisor::open().unwrap();
    let mut vm = hypervisor.create_vm(IrqChip::InKernel).unwrap();
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
    vm.register_memory(&mem).unwrap();
    Some((vm, mem))
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[test]
fn allowed_devices_are_placed_described_and_listed_and_prohibited_ones_only_listed() {
    let Some((vm, mem)) = kvm_vm() else { return };
    let image = TempFile::new().unwrap();
    image.as_file().set_len(1 << 20).unwrap();
    let configs = vec![
        DeviceConfig {
            id: "usb0".into(),
            class: DeviceClass::RemovableStorage,
            kind: DeviceKind::Block {
                path: image.as_path().to_owned(),
                read_only: false,
            },
            allowed: true,
        },
        rng("rng-off", false),
        rng("rng0", true),
    ];
    let mmio = Bus::new("mmio");
    let mut resources = Resources::new();
    let devices = VirtioDevices::attach(&configs, &vm, &mem, &mmio, &mut resources).unwrap();

    let placed: Vec<(&str, u8)> = devices
        .placed()
        .iter()
        .map(|p| (p.config.id.as_str(), p.info.uid))
        .collect();
    assert_eq!(placed, [("usb0", 0), ("rng0", 1)]);
    let aml = resources.dsdt_aml();
    assert_eq!(
        count(aml, b"LNRO0005"),
        2,
        "one DSDT entry per created device"
    );
    assert_eq!(count(aml, b"VR00"), 1);
    assert_eq!(count(aml, b"VR01"), 1);
    let (a, b) = (devices.placed()[0].info, devices.placed()[1].info);
    assert_eq!(u64::from(a.base), MMIO_DEVICES_START);
    assert_ne!(a.base, b.base);
    assert_ne!(a.gsi, b.gsi);

    // The bus routes the window to the transport: magic "virt", device ID 4 for the rng.
    let mut word = [0u8; 4];
    assert!(mmio.read(u64::from(b.base), &mut word));
    assert_eq!(u32::from_le_bytes(word), regs::MAGIC);
    assert!(mmio.read(u64::from(b.base) + regs::DEVICE_ID, &mut word));
    assert_eq!(u32::from_le_bytes(word), 4);

    let list = devices.list();
    let summary: Vec<(&str, &str, &str, bool)> = list
        .iter()
        .map(|d| (d.id.as_str(), d.class.as_str(), d.kind.as_str(), d.allowed))
        .collect();
    assert_eq!(
        summary,
        [
            ("usb0", "removable-storage", "block", true),
            ("rng-off", "entropy", "rng", false),
            ("rng0", "entropy", "rng", true),
        ]
    );

    devices.start().unwrap();
    devices.start().unwrap(); // already running: nothing happens
    devices.stop();
    devices.start().unwrap();
    devices.stop();
}

#[test]
fn policy_changes_are_idempotent_and_report_the_effective_state() {
    let Some((vm, mem)) = kvm_vm() else { return };
    let configs = vec![rng("rng0", true), rng("rng-off", false)];
    let mut resources = Resources::new();
    let devices =
        VirtioDevices::attach(&configs, &vm, &mem, &Bus::new("mmio"), &mut resources).unwrap();

    let p = devices.set_policy("rng0", false).unwrap();
    assert_eq!((p.id.as_str(), p.allowed, p.changed), ("rng0", false, true));
    let p = devices.set_policy("rng0", false).unwrap();
    assert_eq!((p.allowed, p.changed), (false, false));
    assert!(!devices.list()[0].allowed);
    let p = devices.set_policy("rng0", true).unwrap();
    assert_eq!((p.allowed, p.changed), (true, true));

    let p = devices.set_policy("rng-off", false).unwrap();
    assert_eq!((p.allowed, p.changed), (false, false));
    assert!(matches!(
        devices.set_policy("rng-off", true),
        Err(ControlError::Unsupported(m)) if m.contains("prohibited at boot")
    ));
    assert!(matches!(
        devices.set_policy("nope", true),
        Err(ControlError::NotFound(m)) if m.contains("nope")
    ));
}

#[test]
fn bad_device_sets_are_refused_before_anything_is_created() {
    let Some((vm, mem)) = kvm_vm() else { return };
    let mmio = Bus::new("mmio");
    let mut resources = Resources::new();
    let dup = vec![rng("r", true), rng("r", false)];
    assert!(matches!(
        VirtioDevices::attach(&dup, &vm, &mem, &mmio, &mut resources),
        Err(VirtioSetupError::DuplicateId(id)) if id == "r"
    ));
    // A prohibited device is still validated.
    let mut bad = rng("bad id", false);
    bad.class = DeviceClass::Entropy;
    assert!(matches!(
        VirtioDevices::attach(&[bad], &vm, &mem, &mmio, &mut resources),
        Err(VirtioSetupError::Build { .. })
    ));
    assert!(resources.dsdt_aml().is_empty());
    let missing = DeviceConfig {
        id: "root".into(),
        class: DeviceClass::Storage,
        kind: DeviceKind::Block {
            path: "/nonexistent/virmo-root.img".into(),
            read_only: false,
        },
        allowed: true,
    };
    let err = VirtioDevices::attach(&[missing], &vm, &mem, &mmio, &mut resources).unwrap_err();
    assert!(err.to_string().contains("root"), "{err}");
}
