//! Initial CPU state of the boot vCPU: general registers, segment registers, GDT/IDT, page
//! tables, FPU and local APIC. Two entry states: 64-bit long mode (bzImage's `startup_64`) and
//! 32-bit protected mode without paging (PVH).

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::memory::{
    BOOT_GDT_ADDR, BOOT_IDT_ADDR, BOOT_STACK_POINTER, PDE_ADDR, PDPTE_ADDR, PML4_ADDR,
};

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// Local APIC register offsets and delivery modes.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Why the CPU state could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("cannot write boot structures (GDT, IDT or page tables) to guest memory")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
}

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit long mode with the first GiB identity-mapped; RSI points at `boot_params`.
    LongMode { entry: u64, boot_params: u64 },
    /// 32-bit protected mode, paging off; RBX points at `hvm_start_info`.
    Pvh { entry: u64, start_info: u64 },
}

/// Builds a GDT descriptor from flags (access byte + flags nibble), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The KVM segment register matching GDT descriptor `entry` at index `index`.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let granularity = ((entry >> 55) & 1) as u8;
    let raw_limit = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: ((entry >> 32) & 0xff00_0000) | ((entry >> 16) & 0x00ff_ffff),
        limit: if granularity == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: granularity,
        avl: ((entry >> 52) & 1) as u8,
        padding: 0,
        unusable: u8::from(present == 0),
    }
}

/// The boot GDT: null, code, data, TSS.
fn boot_gdt(mode: &EntryMode) -> [u64; 4] {
    match mode {
        EntryMode::LongMode { .. } => [
            0,
            gdt_entry(0xa09b, 0, 0xfffff), // 64-bit code
            gdt_entry(0xc093, 0, 0xfffff), // data
            gdt_entry(0x808b, 0, 0xfffff), // TSS
        ],
        EntryMode::Pvh { .. } => [
            0,
            gdt_entry(0xc09b, 0, 0xffff_ffff), // 32-bit flat code
            gdt_entry(0xc093, 0, 0xffff_ffff), // flat data
            gdt_entry(0x008b, 0, 0x67),        // TSS
        ],
    }
}

/// Writes the GDT and an empty IDT, and returns the special registers for `mode` based on
/// `sregs` (as read from the vCPU).
pub fn boot_sregs(
    mem: &GuestMemoryMmap,
    mode: &EntryMode,
    mut sregs: kvm_sregs,
) -> Result<kvm_sregs, RegsError> {
    let gdt = boot_gdt(mode);
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_ADDR + 8 * i as u64))
            .map_err(RegsError::GuestMemory)?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_ADDR))
        .map_err(RegsError::GuestMemory)?;

    let code = segment_from_gdt(gdt[1], 1);
    let data = segment_from_gdt(gdt[2], 2);
    let tss = segment_from_gdt(gdt[3], 3);
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = BOOT_IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    match mode {
        EntryMode::LongMode { .. } => {
            write_identity_page_tables(mem)?;
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_PG | X86_CR0_ET;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        EntryMode::Pvh { .. } => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    Ok(sregs)
}

/// Identity-maps the first GiB with 2 MiB pages.
fn write_identity_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    mem.write_obj(PDPTE_ADDR | 0x3, GuestAddress(PML4_ADDR))
        .map_err(RegsError::GuestMemory)?;
    mem.write_obj(PDE_ADDR | 0x3, GuestAddress(PDPTE_ADDR))
        .map_err(RegsError::GuestMemory)?;
    let mut pde = [0u8; 512 * 8];
    for (i, slot) in pde.chunks_exact_mut(8).enumerate() {
        // Present, writable, 2 MiB page.
        slot.copy_from_slice(&(((i as u64) << 21) | 0x83).to_le_bytes());
    }
    mem.write_slice(&pde, GuestAddress(PDE_ADDR))
        .map_err(RegsError::GuestMemory)?;
    Ok(())
}

/// General registers at the kernel entry.
pub fn boot_regs(mode: &EntryMode) -> kvm_regs {
    match *mode {
        EntryMode::LongMode { entry, boot_params } => kvm_regs {
            rflags: 0x2,
            rip: entry,
            rsp: BOOT_STACK_POINTER,
            rbp: BOOT_STACK_POINTER,
            rsi: boot_params,
            ..Default::default()
        },
        EntryMode::Pvh { entry, start_info } => kvm_regs {
            rflags: 0x2,
            rip: entry,
            rbx: start_info,
            ..Default::default()
        },
    }
}

/// FPU state after reset: x87 control word 0x37f, SSE MXCSR 0x1f80.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// The 32-bit LAPIC register at `offset` (little-endian bytes of `kvm_lapic_state::regs`).
pub(crate) fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[offset + i] as u8);
    u32::from_le_bytes(bytes)
}

/// Writes the 32-bit LAPIC register at `offset`.
pub(crate) fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
        lapic.regs[offset + i] = byte as _;
    }
}

/// Sets LINT0 to ExtINT and LINT1 to NMI, as firmware would.
pub fn configure_lint(lapic: &mut kvm_lapic_state) {
    let lvt0 = lapic_reg(lapic, APIC_LVT0);
    set_lapic_reg(lapic, APIC_LVT0, (lvt0 & !0x700) | (APIC_MODE_EXTINT << 8));
    let lvt1 = lapic_reg(lapic, APIC_LVT1);
    set_lapic_reg(lapic, APIC_LVT1, (lvt1 & !0x700) | (APIC_MODE_NMI << 8));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    #[test]
    fn gdt_entry_round_trips_through_segment() {
        let code = segment_from_gdt(gdt_entry(0xa09b, 0, 0xfffff), 1);
        assert_eq!(code.selector, 8);
        assert_eq!(code.l, 1);
        assert_eq!(code.db, 0);
        assert_eq!(code.present, 1);
        assert_eq!(code.type_, 0xb);
        assert_eq!(code.limit, 0xffff_ffff);
        assert_eq!(code.base, 0);
        let tss = segment_from_gdt(gdt_entry(0x008b, 0x1234_5678, 0x67), 3);
        assert_eq!(tss.base, 0x1234_5678);
        assert_eq!(tss.limit, 0x67);
        assert_eq!(tss.g, 0);
    }

    #[test]
    fn long_mode_sregs_enable_paging_and_map_first_gib() {
        let mem = mem();
        let mode = EntryMode::LongMode {
            entry: 0x10_0200,
            boot_params: 0x7000,
        };
        let sregs = boot_sregs(&mem, &mode, kvm_sregs::default()).unwrap();
        assert_eq!(sregs.cr3, PML4_ADDR);
        assert_ne!(sregs.cr0 & X86_CR0_PG, 0);
        assert_ne!(sregs.efer & EFER_LMA, 0);
        assert_eq!(sregs.cs.l, 1);
        let pde_last: u64 = mem.read_obj(GuestAddress(PDE_ADDR + 511 * 8)).unwrap();
        assert_eq!(pde_last, (511 << 21) | 0x83);
        let regs = boot_regs(&mode);
        assert_eq!((regs.rip, regs.rsi), (0x10_0200, 0x7000));
    }

    #[test]
    fn pvh_sregs_are_flat_32_bit_without_paging() {
        let mem = mem();
        let mode = EntryMode::Pvh {
            entry: 0x100_0000,
            start_info: 0x6000,
        };
        let sregs = boot_sregs(&mem, &mode, kvm_sregs::default()).unwrap();
        assert_eq!(sregs.cr0 & X86_CR0_PG, 0);
        assert_eq!(sregs.cr0 & X86_CR0_PE, 1);
        assert_eq!(sregs.cs.db, 1);
        assert_eq!(sregs.cs.limit, 0xffff_ffff);
        assert_eq!(boot_regs(&mode).rbx, 0x6000);
    }

    #[test]
    fn lint_pins_get_extint_and_nmi() {
        let mut lapic = kvm_lapic_state::default();
        set_lapic_reg(&mut lapic, APIC_LVT0, 0x0001_0000);
        configure_lint(&mut lapic);
        assert_eq!((lapic_reg(&lapic, APIC_LVT0) >> 8) & 0x7, APIC_MODE_EXTINT);
        assert_eq!((lapic_reg(&lapic, APIC_LVT1) >> 8) & 0x7, APIC_MODE_NMI);
        assert_eq!(
            lapic_reg(&lapic, APIC_LVT0) & 0x0001_0000,
            0x0001_0000,
            "mask bit kept"
        );
    }
}
