//! One VM as the supervisor holds it: its record (as stored), its peripherals, its VMM process
//! while one runs, and the operation in progress.

use std::sync::{Mutex, MutexGuard};

use crate::model::Operation;
use crate::store::{Peripheral, VmRecord};
use crate::vmm_proc::VmmProcess;

/// What is known of one VM. The record is always what the database holds.
#[derive(Debug)]
pub struct SlotState {
    pub record: VmRecord,
    pub peripherals: Vec<Peripheral>,
    /// The VMM, while one runs and no operation has taken it.
    pub process: Option<VmmProcess>,
    /// The operation in progress (one at a time per VM).
    pub busy: Option<Operation>,
    /// Bumped when local access is cut (lock, stop): attached consoles end.
    pub access_epoch: u64,
}

/// A VM's slot.
#[derive(Debug)]
pub struct VmSlot {
    pub id: String,
    state: Mutex<SlotState>,
}

impl VmSlot {
    pub fn new(record: VmRecord, peripherals: Vec<Peripheral>) -> Self {
        Self {
            id: record.id.clone(),
            state: Mutex::new(SlotState {
                record,
                peripherals,
                process: None,
                busy: None,
                access_epoch: 0,
            }),
        }
    }

    /// Locks the slot (briefly: never across a VMM call that may take long).
    pub fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A copy of what a reader needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmView {
    pub record: VmRecord,
    pub peripherals: Vec<Peripheral>,
    pub busy: Option<Operation>,
    /// The VMM's pid while it runs.
    pub pid: Option<u32>,
}

impl SlotState {
    pub fn view(&self) -> VmView {
        VmView {
            record: self.record.clone(),
            peripherals: self.peripherals.clone(),
            busy: self.busy,
            pid: self.process.as_ref().map(|p| p.pid),
        }
    }
}
