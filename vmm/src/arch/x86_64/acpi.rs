//! ACPI tables: RSDP, XSDT, FADT (hardware-reduced), MADT (one local APIC per vCPU, the IOAPIC,
//! LINT1 as NMI) and DSDT (the AML the devices contribute). They are written into the reserved
//! BIOS area; the kernel finds the RSDP through `boot_params.acpi_rsdp_addr` or
//! `hvm_start_info.rsdp_paddr`.

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::memory::{IOAPIC_ADDR, LAPIC_ADDR};

pub const OEM_ID: [u8; 6] = *b"VIRMO ";
pub const OEM_TABLE_ID: [u8; 8] = *b"VIRMOVMM";
const OEM_REVISION: u32 = 1;

/// FADT IA-PC boot architecture flags: no VGA, no legacy devices, no i8042 (so the guest does
/// not probe for them); the CMOS RTC is present.
const IAPC_BOOT_ARCH_NO_VGA: u16 = 1 << 2;

/// MADT structure types and flags.
const MADT_LOCAL_APIC: u8 = 0;
const MADT_IO_APIC: u8 = 1;
const MADT_LOCAL_APIC_NMI: u8 = 4;
const MADT_CPU_ENABLED: u32 = 1;

/// The I/O ports of the hardware-reduced ACPI registers (see `devices::acpi_pm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmRegisters {
    pub sleep_control_port: u16,
    pub sleep_status_port: u16,
    pub reset_port: u16,
    pub reset_value: u8,
}

/// What goes into the tables.
#[derive(Debug, Clone)]
pub struct AcpiConfig<'a> {
    pub vcpus: u8,
    /// The AML of every device, concatenated into the DSDT.
    pub dsdt_aml: &'a [u8],
    pub pm: PmRegisters,
}

/// The tables, each with the guest address it belongs at.
#[derive(Debug, Clone)]
pub struct AcpiTables {
    pub rsdp_addr: u64,
    pub tables: Vec<(u64, Vec<u8>)>,
}

/// Why the tables could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("ACPI tables need {needed} bytes but only {available} are reserved for them")]
    TooLarge { needed: u64, available: u64 },
    #[error("cannot write ACPI tables to guest memory")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
}

fn aml_bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    bytes
}

fn io_register(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

fn dsdt(aml: &[u8]) -> Vec<u8> {
    let mut table = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    table.append_slice(aml);
    table.as_slice().to_vec()
}

fn fadt(dsdt_addr: u64, pm: &PmRegisters) -> Vec<u8> {
    let mut builder = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup);
    builder.iapc_boot_arch = IAPC_BOOT_ARCH_NO_VGA.into();
    builder.sleep_control_reg = io_register(pm.sleep_control_port);
    builder.sleep_status_reg = io_register(pm.sleep_status_port);
    builder.reset_reg = io_register(pm.reset_port);
    builder.reset_value = pm.reset_value;
    builder.hypervisor_vendor_identity = u64::from_le_bytes(*b"VIRMOVMM").into();
    aml_bytes(&builder.finalize())
}

fn madt(vcpus: u8) -> Vec<u8> {
    let mut table = Sdt::new(*b"APIC", 44, 5, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    table.write_u32(36, LAPIC_ADDR as u32);
    table.write_u32(40, 0); // no PC-AT dual 8259 setup: the IOAPIC handles legacy IRQs
    let mut entries = Vec::new();
    for id in 0..vcpus {
        entries.extend_from_slice(&[MADT_LOCAL_APIC, 8, id, id]);
        entries.extend_from_slice(&MADT_CPU_ENABLED.to_le_bytes());
    }
    entries.extend_from_slice(&[MADT_IO_APIC, 12, 0, 0]);
    entries.extend_from_slice(&(IOAPIC_ADDR as u32).to_le_bytes());
    entries.extend_from_slice(&0u32.to_le_bytes()); // GSI base
                                                    // LINT1 of every processor (UID 0xff) is the NMI input, active high, edge triggered.
    entries.extend_from_slice(&[MADT_LOCAL_APIC_NMI, 6, 0xff, 0, 0, 1]);
    table.append_slice(&entries);
    table.as_slice().to_vec()
}

fn xsdt(entries: &[u64]) -> Vec<u8> {
    let mut table = Sdt::new(*b"XSDT", 36, 1, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
    table.append_slice(&bytes);
    table.as_slice().to_vec()
}

fn align8(addr: u64) -> u64 {
    (addr + 7) & !7
}

/// Lays the tables out from `base` (16-byte aligned) up to `end`.
pub fn build(config: &AcpiConfig<'_>, base: u64, end: u64) -> Result<AcpiTables, AcpiError> {
    let rsdp_addr = base;
    let dsdt_addr = align8(rsdp_addr + Rsdp::len() as u64);
    let dsdt = dsdt(config.dsdt_aml);
    let fadt_addr = align8(dsdt_addr + dsdt.len() as u64);
    let fadt = fadt(dsdt_addr, &config.pm);
    let madt_addr = align8(fadt_addr + fadt.len() as u64);
    let madt = madt(config.vcpus);
    let xsdt_addr = align8(madt_addr + madt.len() as u64);
    let xsdt = xsdt(&[fadt_addr, madt_addr]);
    let needed = xsdt_addr + xsdt.len() as u64 - base;
    if base + needed > end {
        return Err(AcpiError::TooLarge {
            needed,
            available: end - base,
        });
    }
    let rsdp = aml_bytes(&Rsdp::new(OEM_ID, xsdt_addr));
    Ok(AcpiTables {
        rsdp_addr,
        tables: vec![
            (rsdp_addr, rsdp),
            (dsdt_addr, dsdt),
            (fadt_addr, fadt),
            (madt_addr, madt),
            (xsdt_addr, xsdt),
        ],
    })
}

/// Writes the tables into guest memory.
pub fn write(mem: &GuestMemoryMmap, tables: &AcpiTables) -> Result<(), AcpiError> {
    for (addr, bytes) in &tables.tables {
        mem.write_slice(bytes, GuestAddress(*addr))
            .map_err(AcpiError::GuestMemory)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{ACPI_TABLES_END, ACPI_TABLES_START};

    const PM: PmRegisters = PmRegisters {
        sleep_control_port: 0x600,
        sleep_status_port: 0x601,
        reset_port: 0x602,
        reset_value: 1,
    };

    fn checksum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
    }

    fn build_for(vcpus: u8) -> AcpiTables {
        let aml = [0x08, b'T', b'E', b'S', b'T', 0x00]; // Name(TEST, Zero)
        let config = AcpiConfig {
            vcpus,
            dsdt_aml: &aml,
            pm: PM,
        };
        build(&config, ACPI_TABLES_START, ACPI_TABLES_END).unwrap()
    }

    fn table<'a>(tables: &'a AcpiTables, signature: &[u8]) -> (u64, &'a [u8]) {
        let (addr, bytes) = tables
            .tables
            .iter()
            .find(|(_, b)| b.starts_with(signature))
            .unwrap();
        (*addr, bytes.as_slice())
    }

    fn u32_at(bytes: &[u8], offset: usize) -> u32 {
        u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
    }

    fn u64_at(bytes: &[u8], offset: usize) -> u64 {
        u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
    }

    #[test]
    fn every_table_checksums_to_zero_and_has_its_length() {
        let tables = build_for(2);
        for (_, bytes) in &tables.tables {
            if bytes.starts_with(b"RSD PTR ") {
                assert_eq!(checksum(&bytes[..20]), 0, "RSDP v1 checksum");
                assert_eq!(checksum(bytes), 0, "RSDP extended checksum");
            } else {
                assert_eq!(checksum(bytes), 0, "{:?}", &bytes[..4]);
                assert_eq!(u32_at(bytes, 4) as usize, bytes.len());
            }
        }
    }

    #[test]
    fn rsdp_points_to_xsdt_which_lists_fadt_and_madt() {
        let tables = build_for(1);
        let (rsdp_addr, rsdp) = table(&tables, b"RSD PTR ");
        assert_eq!(rsdp_addr, tables.rsdp_addr);
        assert_eq!(rsdp_addr % 16, 0);
        let (xsdt_addr, xsdt) = table(&tables, b"XSDT");
        assert_eq!(u64_at(rsdp, 24), xsdt_addr);
        let (fadt_addr, fadt) = table(&tables, b"FACP");
        let (madt_addr, _) = table(&tables, b"APIC");
        assert_eq!(u64_at(xsdt, 36), fadt_addr);
        assert_eq!(u64_at(xsdt, 44), madt_addr);
        let (dsdt_addr, dsdt) = table(&tables, b"DSDT");
        assert_eq!(u64_at(fadt, 140), dsdt_addr, "X_DSDT");
        assert!(dsdt.ends_with(b"TEST\0"));
    }

    #[test]
    fn fadt_is_hardware_reduced_with_sleep_and_reset_registers() {
        let tables = build_for(1);
        let (_, fadt) = table(&tables, b"FACP");
        assert_eq!(fadt[8], 6, "FADT revision");
        let flags = u32_at(fadt, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        // RESET_REG: system I/O, port 0x602, value 1.
        assert_eq!(fadt[116], 1);
        assert_eq!(u64_at(fadt, 120), 0x602);
        assert_eq!(fadt[128], 1);
        // SLEEP_CONTROL_REG and SLEEP_STATUS_REG.
        assert_eq!(u64_at(fadt, 244 + 4), 0x600);
        assert_eq!(u64_at(fadt, 256 + 4), 0x601);
        // IAPC_BOOT_ARCH: no 8042, no legacy devices, the CMOS RTC is present.
        let boot_arch = u16::from_le_bytes([fadt[109], fadt[110]]);
        assert_eq!(boot_arch & 0b11, 0);
        assert_eq!(boot_arch & (1 << 5), 0);
    }

    #[test]
    fn madt_has_one_enabled_local_apic_per_vcpu_and_the_ioapic() {
        for vcpus in [1u8, 2, 7] {
            let tables = build_for(vcpus);
            let (_, madt) = table(&tables, b"APIC");
            assert_eq!(u32_at(madt, 36), LAPIC_ADDR as u32);
            let mut offset = 44;
            let mut apic_ids = Vec::new();
            let mut ioapics = 0;
            let mut nmis = 0;
            while offset < madt.len() {
                let (kind, len) = (madt[offset], madt[offset + 1] as usize);
                match kind {
                    MADT_LOCAL_APIC => {
                        assert_eq!(madt[offset + 2], madt[offset + 3], "UID = APIC ID");
                        assert_eq!(u32_at(madt, offset + 4), 1, "enabled");
                        apic_ids.push(madt[offset + 3]);
                    }
                    MADT_IO_APIC => {
                        assert_eq!(u32_at(madt, offset + 4), IOAPIC_ADDR as u32);
                        ioapics += 1;
                    }
                    MADT_LOCAL_APIC_NMI => {
                        assert_eq!(madt[offset + 5], 1, "LINT1");
                        nmis += 1;
                    }
                    other => panic!("unexpected MADT entry {other}"),
                }
                offset += len;
            }
            assert_eq!(offset, madt.len());
            assert_eq!(apic_ids, (0..vcpus).collect::<Vec<_>>());
            assert_eq!((ioapics, nmis), (1, 1));
        }
    }

    #[test]
    fn tables_fit_the_reserved_area_or_are_refused() {
        let big = vec![0u8; 0x2_0000];
        let config = AcpiConfig {
            vcpus: 1,
            dsdt_aml: &big,
            pm: PM,
        };
        assert!(matches!(
            build(&config, ACPI_TABLES_START, ACPI_TABLES_END),
            Err(AcpiError::TooLarge { .. })
        ));
    }
}
