//! File-controlled input: the snapshot loader (state file, manifest, hot set) and the boot-image loaders
//! (bzImage with its LZ4 payload, ELF vmlinux through PVH, the Linux boot protocol).

use std::path::PathBuf;
use std::sync::OnceLock;

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::boot::{self, BootInputs, KernelFormat};
use crate::arch::x86_64::bzimage_payload;
use crate::config::BzImageBoot;
use crate::snapshot::format::{decode_state, encode_state, header_bytes, FORMAT_VERSION};
use crate::snapshot::hot_set::HotSet;
use crate::snapshot::manifest::Manifest;

/// `body` behind a valid `state.bin` header (magic, version, length, checksums), so that the
/// fuzzer reaches the decoder rather than the checksum test.
pub fn sealed_state(body: &[u8]) -> Vec<u8> {
    let mut bytes = header_bytes(FORMAT_VERSION, 0, body).to_vec();
    bytes.extend_from_slice(body);
    bytes
}

/// A `state.bin`: the first byte picks raw bytes (the header checks) or a sealed body (the
/// decoder and the state's validation). A state that decodes re-encodes to a file that decodes
/// to the same encoding.
pub fn snapshot_state(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let file = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        sealed_state(rest)
    };
    let Ok(state) = decode_state(&file) else {
        return;
    };
    let encoded = encode_state(&state).expect("a decoded state encodes");
    let again = decode_state(&encoded).expect("a re-encoded state decodes");
    assert_eq!(
        encode_state(&again).expect("encodes"),
        encoded,
        "the encoding is stable"
    );
}

/// A `manifest`: one that decodes encodes to text that decodes to it again.
pub fn snapshot_manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifest) = Manifest::decode(text) else {
        return;
    };
    assert_eq!(Manifest::decode(&manifest.encode()).ok(), Some(manifest));
}

/// A `hotset.bin` for a 1 GiB `memory.bin`: one that decodes encodes to the same bytes, and
/// its runs lie inside the memory file.
pub fn snapshot_hot_set(data: &[u8]) {
    const MEMORY_LEN: u64 = 1 << 30;
    let Ok(set) = HotSet::decode(data, MEMORY_LEN) else {
        return;
    };
    assert_eq!(set.encode(), data);
    assert!(set
        .runs()
        .iter()
        .all(|r| r.offset < MEMORY_LEN && r.len > 0));
}

/// Guest memory of the boot-image runs: 64 MiB.
const MEM_BYTES: u64 = 64 << 20;

fn kernel_file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        std::env::temp_dir().join(format!("vmm-fuzz-kernel-{}", std::process::id()))
    })
}

/// A kernel image: the bzImage payload loader on the bytes, then the file-level loader the VMM
/// runs (format detection, then PVH or the Linux boot protocol) into 64 MiB of guest memory.
/// Checks that a loaded vmlinux ends inside guest memory and starts at its entry's segment.
pub fn boot_image(data: &[u8]) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_BYTES as usize)])
        .expect("guest memory");
    if let Ok(loaded) = bzimage_payload::load_vmlinux(&mem, data, MEM_BYTES) {
        assert!(loaded.kernel_end <= MEM_BYTES, "{loaded:?}");
    }
    let path = kernel_file();
    if std::fs::write(path, data).is_err() {
        return;
    }
    let Ok(format) = KernelFormat::detect(path) else {
        return;
    };
    for bzimage_boot in [BzImageBoot::Linux, BzImageBoot::Pvh] {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_BYTES as usize)])
            .expect("guest memory");
        let inputs = BootInputs {
            kernel: path,
            format,
            bzimage_boot,
            initramfs: None,
            cmdline: "console=ttyS0",
            mem_bytes: MEM_BYTES,
            rsdp_addr: 0xe0000,
        };
        let _ = boot::load(&mem, &inputs);
        if format == KernelFormat::Elf {
            break;
        }
    }
}
