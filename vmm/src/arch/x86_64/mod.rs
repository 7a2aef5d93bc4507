//! x86_64: CPUID, MSRs, registers and page tables, boot protocols, ACPI tables.
//! There is no MP table: SMP comes from the ACPI MADT.

pub mod acpi;
pub mod boot;
pub mod bzimage_payload;
pub mod cpuid;
pub mod msr;
pub mod regs;
