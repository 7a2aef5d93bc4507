//! Start-up: load every VM, find the VMMs that kept running while no agent was there, and
//! carry on the operations that were in progress (each job replays from its stored step).
//! A VM recorded as Running whose VMM is gone ended while the agent was away: it gets the
//! state and alert the monitor would have given it.

use std::sync::Arc;

use super::{host_channel_peripheral, state_alert, Supervisor, VmSlot, HOST_CHANNEL};
use crate::model::{LockState, VmState};
use crate::store::StoreError;
use crate::vmm_proc::VmmProcess;

pub(super) fn recover(supervisor: &Arc<Supervisor>) -> Result<(), StoreError> {
    let layout = &supervisor.layout;
    if let Err(e) = crate::bundle::extract::clean_staging(&layout.images()) {
        tracing::warn!(error = %e, "cannot clean the image staging folders");
    }
    let jobs = supervisor.store.unfinished_jobs()?;
    for (record, peripherals) in supervisor.store.vms()? {
        let paths = layout.vm(&record.id);
        let slot = Arc::new(VmSlot::new(record.clone(), peripherals));
        // The recorded VMM, or one started for this VM whose pid was never stored.
        let process = record
            .process
            .and_then(|p| VmmProcess::adopt(p, &paths))
            .or_else(|| {
                crate::vmm_proc::find_by_api_socket(&paths.socket).and_then(|(pid, start_time)| {
                    VmmProcess::adopt(crate::store::ProcessRecord { pid, start_time }, &paths)
                })
            })
            .filter(|p| {
                // The process is ours only if its API says it runs this VM.
                p.client()
                    .with_timeouts(
                        std::time::Duration::from_millis(500),
                        std::time::Duration::from_secs(2),
                    )
                    .info()
                    .map(|info| info.id == record.id)
                    .unwrap_or(false)
            });
        let has_job = jobs.iter().any(|j| j.vm_id == record.id);
        {
            let mut state = slot.lock();
            if let Some(process) = &process {
                tracing::info!(vm = %record.id, pid = process.pid, "VMM re-adopted");
            }
            state.process = process;
            if !has_job {
                reconcile(supervisor, &mut state);
            }
        }
        supervisor.insert_slot(slot);
    }
    for slot in supervisor.slots().values().cloned().collect::<Vec<_>>() {
        wire_host_channel(supervisor, &slot)?;
    }
    // Downloads of jobs that are over.
    if let Ok(entries) = std::fs::read_dir(layout.downloads()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let owned = jobs.iter().any(|j| name == format!("job-{}.part", j.id));
            if !owned {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    for job in jobs {
        let Some(slot) = supervisor.slot_by_id(&job.vm_id) else {
            tracing::warn!(job = job.id, vm = %job.vm_id, "a job of an unknown VM: dropped");
            let _ = supervisor
                .store
                .apply(vec![crate::store::Change::FinishJob {
                    id: job.id,
                    result: crate::model::ResultCode::NOT_FOUND,
                }]);
            continue;
        };
        slot.lock().busy = Some(job.op);
        tracing::info!(vm = %job.vm_id, op = job.op.key(), step = %job.step, job = job.id, "resuming an interrupted operation");
        crate::jobs::spawn(supervisor.clone(), slot, job);
    }
    Ok(())
}

/// The VM's host channel: a CID (VMs of an older agent get one), a `host-channel` peripheral
/// once provisioned, its `DataSharing` in the broker's policy, and the broker listening for it
/// (once it has a folder).
fn wire_host_channel(supervisor: &Supervisor, slot: &VmSlot) -> Result<(), StoreError> {
    supervisor.ensure_cid(slot)?;
    let (record, peripherals) = {
        let state = slot.lock();
        (state.record.clone(), state.peripherals.clone())
    };
    let provisioned = record.image.installed.is_some();
    if provisioned && !peripherals.iter().any(|p| p.class == HOST_CHANNEL) {
        let mut with = peripherals;
        with.push(host_channel_peripheral());
        supervisor
            .store
            .apply(vec![crate::store::Change::SetPeripherals {
                vm_id: record.id.clone(),
                peripherals: with.clone(),
            }])?;
        slot.lock().peripherals = with;
    }
    if record.deleting {
        return Ok(());
    }
    supervisor
        .broker
        .set_policy(&record.id, super::sharing_policy(&record));
    if supervisor.layout.vm(&record.id).dir.is_dir() {
        if let Err(e) = supervisor.serve_sharing(&record.id) {
            tracing::warn!(vm = %record.id, error = %crate::error_chain(&e), "the sharing broker cannot serve the VM");
        }
    }
    Ok(())
}

/// Makes a VM without a job in progress agree with its VMM.
fn reconcile(supervisor: &Supervisor, state: &mut super::SlotState) {
    let mut record = state.record.clone();
    match (record.state, state.process.is_some()) {
        (VmState::Running, true) => {
            // A fully locked VM stays paused (idempotent; a running one is paused again).
            if record.lock.state == LockState::Full {
                if let Some(p) = &state.process {
                    let _ = p.client().pause();
                }
            }
        }
        (VmState::Running, false) => {
            let exit =
                crate::vmm_proc::ExitInfo::from_log(&supervisor.layout.vm(&record.id).vmm_log);
            let (clean, reason) = (exit.is_clean(), exit.reason);
            record.state = if clean {
                VmState::Stopped
            } else {
                VmState::Failed
            };
            record.last_error = (!clean).then_some(reason);
            record.process = None;
            supervisor.release_host_resources(&record.id);
            tracing::warn!(vm = %record.id, state = ?record.state, "the VMM ended while the agent was away");
            let alert = state_alert(&record);
            if let Err(e) = supervisor.save_record(state, record, vec![alert]) {
                tracing::error!(error = %e, "cannot record the VM's end");
            }
        }
        (_, true) => {
            // A VMM for a VM that should have none (cannot happen without a job): end it.
            if let Some(mut p) = state.process.take() {
                tracing::warn!(vm = %record.id, "a stray VMM: stopped");
                let _ = p.client().stop();
                let _ = p.kill(std::time::Duration::from_secs(5));
                supervisor.release_host_resources(&record.id);
            }
            if record.process.take().is_some() {
                let _ = supervisor.save_record(state, record, Vec::new());
            }
        }
        (_, false) => {
            if record.process.take().is_some() {
                let _ = supervisor.save_record(state, record, Vec::new());
            }
        }
    }
}
