//! Watches running VMs: a VMM that ends while no operation expects it (the guest powered
//! itself off, crashed, or the VMM died) makes the VM Stopped or Failed, with a StateChanged
//! alert.

use std::sync::Arc;
use std::time::Duration;

use super::{state_alert, Supervisor, VmSlot};
use crate::model::VmState;

/// How often VMMs are looked at.
const PERIOD: Duration = Duration::from_millis(250);

pub(super) fn spawn(supervisor: Arc<Supervisor>) {
    let spawned = std::thread::Builder::new()
        .name("vm-monitor".into())
        .spawn(move || {
            while !supervisor.is_stopping() {
                let slots: Vec<Arc<VmSlot>> = supervisor.slots().values().cloned().collect();
                for slot in slots {
                    check(&supervisor, &slot);
                }
                std::thread::sleep(PERIOD);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the VM monitor");
    }
}

fn check(supervisor: &Supervisor, slot: &VmSlot) {
    let mut state = slot.lock();
    if state.busy.is_some() {
        return;
    }
    let Some(exit) = state.process.as_mut().and_then(|p| p.poll_exit()) else {
        return;
    };
    state.process = None;
    let mut record = state.record.clone();
    record.process = None;
    record.state = if exit.is_clean() {
        VmState::Stopped
    } else {
        VmState::Failed
    };
    record.last_error = (!exit.is_clean()).then(|| exit.reason.clone());
    tracing::warn!(vm = %record.id, code = ?exit.code, reason = %exit.reason, state = ?record.state, "VMM ended on its own");
    let alert = state_alert(&record);
    state.access_epoch += 1;
    if let Err(e) = supervisor.save_record(&mut state, record, vec![alert]) {
        tracing::error!(vm = %slot.id, error = %e, "cannot record the VM's end");
    }
    supervisor.release_host_resources(&slot.id);
}
