//! Suspend and resume: a VM's complete state saved to a folder, and a VM rebuilt from it.
//!
//! This module knows KVM and guest memory, not the VMM core: the core calls it with its KVM
//! handles and guest memory.
//!
//! Saving (all vCPUs stopped, each after [`complete_pending_io`] on its own thread):
//! 1. [`VcpuSaveContext::new`] once, then [`save_vcpu`] for each vCPU;
//! 2. [`save_vm`], then the core appends its [`DeviceState`]s to `VmState::devices`;
//! 3. [`MachineState`] with [`MemoryLayout::of`] the guest memory;
//! 4. [`SnapshotWriter::write`] (atomic; see [`store`]).
//!
//! Resuming:
//! 1. [`Snapshot::open`] (validates), [`Snapshot::check_fits`] against the VM to build;
//! 2. [`Snapshot::load_memory`] (lazy or eager), register the regions with KVM;
//! 3. create the irqchip, PIT and vCPUs; [`restore_vcpu`] each vCPU (LAPICs included), then
//!    [`restore_interrupt_controllers`], then the devices (which raise again the interrupts
//!    they still have pending), then [`restore_timers`] last; resume.
//!
//! The on-disk format is described in `docs/snapshot.md`.

pub mod format;
pub mod hot_set;
pub mod layout;
pub mod manifest;
pub mod memory_digest;
pub mod memory_file;
pub mod msrs;
mod pagemap;
mod reader;
pub mod store;
pub mod vcpu_state;
pub mod vm_state;

#[cfg(test)]
mod irq_order_tests;
#[cfg(test)]
mod kvm_tests;
#[cfg(test)]
pub(crate) mod test_support;

pub use format::{
    FormatError, MachineConfig, MachineState, MemoryLayout, MemoryRegionLayout, TargetLayout,
    FORMAT_VERSION,
};
pub use memory_file::{MemoryFileError, MemoryRestore};
pub use store::{Snapshot, SnapshotWriter, StepHook, StoreError, WriteStep, WriteSummary};
pub use vcpu_state::{
    complete_pending_io, restore_vcpu, save_vcpu, VcpuSaveContext, VcpuState, VcpuStateError,
};
pub use vm_state::{
    restore_interrupt_controllers, restore_timers, restore_vm, save_vm, DeviceState, VmState,
    VmStateError,
};
