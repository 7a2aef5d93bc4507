//! Loading the kernel, initramfs and command line, and the boot structures the kernel reads:
//! `boot_params` (the zero page) for a bzImage booted through the Linux 64-bit boot protocol,
//! `hvm_start_info` for an ELF vmlinux booted through PVH.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::regs::EntryMode;
use crate::memory::{
    e820_map, low_ram_end, CMDLINE_ADDR, HIMEM_START, MIB, PVH_MEMMAP_ADDR, PVH_MODLIST_ADDR,
    PVH_START_INFO_ADDR, ZERO_PAGE_ADDR,
};

/// `HdrS`, the boot protocol magic at offset 0x202 of a bzImage.
const BZIMAGE_MAGIC: u32 = 0x5372_6448;
const BZIMAGE_MAGIC_OFFSET: u64 = 0x202;
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
/// Boot protocol 2.12: `xloadflags` and the 64-bit entry point.
const MIN_BOOT_PROTOCOL: u16 = 0x020c;
/// `xloadflags`: the kernel has the 64-bit entry point at load address + 0x200.
const XLF_KERNEL_64: u16 = 1 << 0;
const STARTUP_64_OFFSET: u64 = 0x200;
/// `type_of_loader` for a boot loader without an assigned ID.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
const PVH_START_INFO_MAGIC: u32 = 0x336e_c578;
const PAGE_SIZE: u64 = 4096;

/// The kernel image formats the VMM boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// A bzImage, booted at its 64-bit entry point through the Linux boot protocol.
    BzImage,
    /// An uncompressed ELF vmlinux, booted at its PVH entry point.
    Elf,
}

/// Why a file is not a kernel the VMM can boot.
#[derive(Debug, thiserror::Error)]
pub enum KernelFormatError {
    #[error("cannot be read")]
    Read(#[source] std::io::Error),
    #[error("is neither a bzImage nor an ELF vmlinux")]
    Unknown,
}

impl KernelFormat {
    /// Detects the format from the file's magic numbers.
    pub fn detect(path: &Path) -> Result<Self, KernelFormatError> {
        let mut file = File::open(path).map_err(KernelFormatError::Read)?;
        let mut head = [0u8; 4];
        match file.read_exact(&mut head) {
            Ok(()) if head == ELF_MAGIC => return Ok(Self::Elf),
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(KernelFormatError::Unknown)
            }
            Err(e) => return Err(KernelFormatError::Read(e)),
        }
        let mut magic = [0u8; 4];
        let read = file
            .seek(SeekFrom::Start(BZIMAGE_MAGIC_OFFSET))
            .and_then(|_| file.read_exact(&mut magic));
        match read {
            Ok(()) if u32::from_le_bytes(magic) == BZIMAGE_MAGIC => Ok(Self::BzImage),
            Ok(()) => Err(KernelFormatError::Unknown),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(KernelFormatError::Unknown)
            }
            Err(e) => Err(KernelFormatError::Read(e)),
        }
    }
}

/// Why the guest could not be prepared for boot.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load kernel {path} into guest memory")]
    LoadKernel {
        path: PathBuf,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error(
        "bzImage {path} uses boot protocol {version:#x}; 2.12 with a 64-bit entry point is needed"
    )]
    OldBootProtocol { path: PathBuf, version: u16 },
    #[error(
        "vmlinux {0} has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY); boot its bzImage instead"
    )]
    NoPvhEntry(PathBuf),
    #[error("the kernel needs {needed_mib} MiB below the initramfs to decompress but the VM has {have_mib} MiB")]
    KernelTooLarge { needed_mib: u64, have_mib: u64 },
    #[error("initramfs {path} ({size_mib} MiB) does not fit in guest memory above the kernel")]
    InitramfsTooLarge { path: PathBuf, size_mib: u64 },
    #[error("cannot read initramfs {path} into guest memory")]
    LoadInitramfs {
        path: PathBuf,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("cannot write boot structures to guest memory")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
}

/// What the kernel is given besides its image.
#[derive(Debug, Clone)]
pub struct BootInputs<'a> {
    pub kernel: &'a Path,
    pub format: KernelFormat,
    pub initramfs: Option<&'a Path>,
    pub cmdline: &'a str,
    pub mem_bytes: u64,
    /// Guest address of the ACPI RSDP.
    pub rsdp_addr: u64,
}

/// Where the initramfs was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Initramfs {
    addr: u64,
    size: u64,
}

/// Loads everything into `mem` and returns how the boot vCPU enters the kernel.
pub fn load(mem: &GuestMemoryMmap, inputs: &BootInputs<'_>) -> Result<EntryMode, BootError> {
    let mut kernel = File::open(inputs.kernel).map_err(|source| BootError::Open {
        path: inputs.kernel.to_path_buf(),
        source,
    })?;
    write_cmdline(mem, inputs.cmdline)?;
    match inputs.format {
        KernelFormat::BzImage => load_bzimage(mem, inputs, &mut kernel),
        KernelFormat::Elf => load_pvh(mem, inputs, &mut kernel),
    }
}

fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<(), BootError> {
    let mut bytes = Vec::with_capacity(cmdline.len() + 1);
    bytes.extend_from_slice(cmdline.as_bytes());
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_ADDR))
        .map_err(BootError::GuestMemory)
}

fn load_bzimage(
    mem: &GuestMemoryMmap,
    inputs: &BootInputs<'_>,
    kernel: &mut File,
) -> Result<EntryMode, BootError> {
    let loaded =
        BzImage::load(mem, None, kernel, Some(GuestAddress(HIMEM_START))).map_err(|source| {
            BootError::LoadKernel {
                path: inputs.kernel.to_path_buf(),
                source,
            }
        })?;
    let Some(mut hdr) = loaded.setup_header else {
        return Err(BootError::OldBootProtocol {
            path: inputs.kernel.to_path_buf(),
            version: 0,
        });
    };
    let version = hdr.version;
    let xloadflags = hdr.xloadflags;
    if version < MIN_BOOT_PROTOCOL || xloadflags & XLF_KERNEL_64 == 0 {
        return Err(BootError::OldBootProtocol {
            path: inputs.kernel.to_path_buf(),
            version,
        });
    }
    // The kernel decompresses itself to at least its preferred address and needs init_size
    // bytes there.
    let low_end = low_ram_end(inputs.mem_bytes);
    let kernel_end = (hdr.pref_address.max(loaded.kernel_load.raw_value()))
        .saturating_add(u64::from(hdr.init_size));
    if kernel_end > low_end {
        return Err(BootError::KernelTooLarge {
            needed_mib: kernel_end.div_ceil(MIB),
            have_mib: inputs.mem_bytes / MIB,
        });
    }
    let initrd_limit = low_end.min(u64::from(hdr.initrd_addr_max) + 1);
    let initramfs = match inputs.initramfs {
        Some(path) => Some(load_initramfs(mem, path, kernel_end, initrd_limit)?),
        None => None,
    };

    hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    hdr.cmdline_size = inputs.cmdline.len() as u32;
    if let Some(initramfs) = initramfs {
        // Below initrd_addr_max, which is a 32-bit address.
        hdr.ramdisk_image = initramfs.addr as u32;
        hdr.ramdisk_size = initramfs.size as u32;
    }
    let mut params = boot_params {
        hdr,
        acpi_rsdp_addr: inputs.rsdp_addr,
        ..Default::default()
    };
    let e820 = e820_map(inputs.mem_bytes);
    for (slot, entry) in params.e820_table.iter_mut().zip(e820.iter()) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind as u32,
        };
    }
    params.e820_entries = e820.len().min(params.e820_table.len()) as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(BootError::GuestMemory)?;
    Ok(EntryMode::LongMode {
        entry: loaded.kernel_load.raw_value() + STARTUP_64_OFFSET,
        boot_params: ZERO_PAGE_ADDR,
    })
}

fn load_pvh(
    mem: &GuestMemoryMmap,
    inputs: &BootInputs<'_>,
    kernel: &mut File,
) -> Result<EntryMode, BootError> {
    let loaded =
        Elf::load(mem, None, kernel, Some(GuestAddress(HIMEM_START))).map_err(|source| {
            BootError::LoadKernel {
                path: inputs.kernel.to_path_buf(),
                source,
            }
        })?;
    let PvhBootCapability::PvhEntryPresent(entry) = loaded.pvh_boot_cap else {
        return Err(BootError::NoPvhEntry(inputs.kernel.to_path_buf()));
    };
    let low_end = low_ram_end(inputs.mem_bytes);
    let kernel_end = loaded.kernel_end;
    if kernel_end > low_end {
        return Err(BootError::KernelTooLarge {
            needed_mib: kernel_end.div_ceil(MIB),
            have_mib: inputs.mem_bytes / MIB,
        });
    }
    let initramfs = match inputs.initramfs {
        Some(path) => Some(load_initramfs(mem, path, kernel_end, low_end)?),
        None => None,
    };

    let e820 = e820_map(inputs.mem_bytes);
    for (i, entry) in e820.iter().enumerate() {
        let table_entry = hvm_memmap_table_entry {
            addr: entry.addr,
            size: entry.size,
            type_: entry.kind as u32,
            reserved: 0,
        };
        let addr = PVH_MEMMAP_ADDR + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        mem.write_obj(table_entry, GuestAddress(addr))
            .map_err(BootError::GuestMemory)?;
    }
    let mut start_info = hvm_start_info {
        magic: PVH_START_INFO_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_ADDR,
        rsdp_paddr: inputs.rsdp_addr,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: e820.len() as u32,
        ..Default::default()
    };
    if let Some(initramfs) = initramfs {
        let module = hvm_modlist_entry {
            paddr: initramfs.addr,
            size: initramfs.size,
            ..Default::default()
        };
        mem.write_obj(module, GuestAddress(PVH_MODLIST_ADDR))
            .map_err(BootError::GuestMemory)?;
        start_info.nr_modules = 1;
        start_info.modlist_paddr = PVH_MODLIST_ADDR;
    }
    mem.write_obj(start_info, GuestAddress(PVH_START_INFO_ADDR))
        .map_err(BootError::GuestMemory)?;
    Ok(EntryMode::Pvh {
        entry: entry.raw_value(),
        start_info: PVH_START_INFO_ADDR,
    })
}

/// The real-mode reset vector (F000:FFF0). Linux in hardware-reduced ACPI mode reboots through
/// EFI and then by jumping here ("BIOS reboot"); there is no BIOS, so a stub writes the ACPI
/// reset register instead.
pub const RESET_VECTOR_ADDR: u64 = 0xffff0;

/// `mov dx, port; mov al, value; out dx, al; 1: hlt; jmp 1b`.
pub fn reset_stub(port: u16, value: u8) -> [u8; 10] {
    let [lo, hi] = port.to_le_bytes();
    [0xba, lo, hi, 0xb0, value, 0xee, 0xf4, 0xeb, 0xfd, 0x90]
}

/// Writes [`reset_stub`] at the reset vector.
pub fn write_reset_stub(mem: &GuestMemoryMmap, port: u16, value: u8) -> Result<(), BootError> {
    mem.write_slice(&reset_stub(port, value), GuestAddress(RESET_VECTOR_ADDR))
        .map_err(BootError::GuestMemory)
}

/// Where an initramfs of `size` bytes goes: page-aligned, as high as possible below `limit`,
/// not below `lowest`.
fn initramfs_addr(size: u64, lowest: u64, limit: u64) -> Option<u64> {
    let addr = limit.checked_sub(size)? & !(PAGE_SIZE - 1);
    (addr >= lowest).then_some(addr)
}

fn load_initramfs(
    mem: &GuestMemoryMmap,
    path: &Path,
    lowest: u64,
    limit: u64,
) -> Result<Initramfs, BootError> {
    let mut file = File::open(path).map_err(|source| BootError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let size = file
        .metadata()
        .map_err(|source| BootError::Open {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let addr = initramfs_addr(size, lowest, limit).ok_or_else(|| BootError::InitramfsTooLarge {
        path: path.to_path_buf(),
        size_mib: size.div_ceil(MIB),
    })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|source| BootError::LoadInitramfs {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(Initramfs { addr, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("vmm-boot-{name}-{}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn detects_elf_and_bzimage_and_rejects_others() {
        let elf = temp_file("elf", b"\x7fELF\x02\x01\x01");
        assert_eq!(KernelFormat::detect(&elf).unwrap(), KernelFormat::Elf);
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let bz = temp_file("bz", &bz);
        assert_eq!(KernelFormat::detect(&bz).unwrap(), KernelFormat::BzImage);
        let tiny = temp_file("tiny", b"MZ");
        assert!(matches!(
            KernelFormat::detect(&tiny),
            Err(KernelFormatError::Unknown)
        ));
        let junk = temp_file("junk", &[0u8; 0x300]);
        assert!(matches!(
            KernelFormat::detect(&junk),
            Err(KernelFormatError::Unknown)
        ));
    }

    #[test]
    fn reset_stub_fits_below_1mib_and_writes_the_reset_port() {
        let stub = reset_stub(0x602, 1);
        assert!(RESET_VECTOR_ADDR + stub.len() as u64 <= HIMEM_START);
        assert_eq!(&stub[..6], &[0xba, 0x02, 0x06, 0xb0, 0x01, 0xee]);
        // The jmp goes back to the hlt.
        assert_eq!(stub[7..9], [0xeb, (6i8 - 9) as u8]);
    }

    #[test]
    fn initramfs_goes_to_the_top_page_aligned() {
        assert_eq!(
            initramfs_addr(0x1800, 0x10_0000, 0x800_0000),
            Some(0x7ff_e000)
        );
        assert_eq!(initramfs_addr(0x800_0000, 0x10_0000, 0x800_0000), None);
        assert_eq!(initramfs_addr(0x10, 0x7ff_f001, 0x7ff_f800), None);
    }

    #[test]
    fn elf_without_pvh_note_or_garbage_is_refused_with_the_path() {
        let mem = crate::memory::create_guest_memory(64 * MIB).unwrap();
        let path = temp_file("badelf", b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        let inputs = BootInputs {
            kernel: &path,
            format: KernelFormat::Elf,
            initramfs: None,
            cmdline: "console=ttyS0",
            mem_bytes: 64 * MIB,
            rsdp_addr: 0xe0000,
        };
        let err = load(&mem, &inputs).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        let cmdline: [u8; 14] = mem.read_obj(GuestAddress(CMDLINE_ADDR)).unwrap();
        assert_eq!(&cmdline, b"console=ttyS0\0");
    }
}
