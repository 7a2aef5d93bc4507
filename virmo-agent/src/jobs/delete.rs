//! Delete: the VMM is stopped (`stop`), the VM's files removed (`remove`: the broker stops
//! serving it, its tap goes; disk, snapshot, console, logs; files are truncated before being
//! unlinked), images no other VM uses removed,
//! and its rows (record, peripherals, unlock code hash) deleted in the transaction that ends
//! the job; the database overwrites deleted content (`secure_delete`).

use std::collections::BTreeSet;
use std::time::Duration;

use super::{JobCtx, Outcome};
use crate::layout::remove_all;
use crate::model::ResultCode;
use crate::store::Change;
use crate::vmm_proc::VmmProcess;

pub const FIRST_STEP: &str = "stop";

pub fn run(ctx: &mut JobCtx) -> Outcome {
    loop {
        match ctx.job.step.as_str() {
            "stop" => {
                let record = ctx.record();
                let process = ctx
                    .with_state(|s| s.process.take())
                    .or_else(|| {
                        record
                            .process
                            .and_then(|r| VmmProcess::adopt(r, &ctx.paths()))
                    })
                    .or_else(|| super::power::find_running(ctx));
                if let Some(mut p) = process {
                    let _ = p.client().stop();
                    if p.wait_exit(Duration::from_secs(5)).is_none() {
                        let _ = p.kill(Duration::from_secs(10));
                    }
                }
                ctx.with_state(|s| s.access_epoch += 1);
                if let Err(e) =
                    ctx.update_and_step(|r| r.process = None, "remove", serde_json::json!({}))
                {
                    return e.into();
                }
            }
            "remove" => {
                let paths = ctx.paths();
                ctx.sup.broker.remove_vm(&ctx.slot.id);
                if let Err(e) = remove_all(&paths.dir) {
                    return Outcome::failed(
                        ResultCode::FAILED,
                        format!("cannot remove the VM's files: {e}"),
                    );
                }
                let _ = std::fs::remove_file(&paths.socket);
                ctx.sup.release_host_resources(&ctx.slot.id);
                collect_images(ctx);
                return Outcome::ok();
            }
            other => return Outcome::failed(ResultCode::FAILED, format!("unknown step `{other}`")),
        }
    }
}

/// Removes images no remaining VM uses.
fn collect_images(ctx: &JobCtx) {
    let mut used = BTreeSet::new();
    for slot in ctx.sup.slots().values().filter(|s| s.id != ctx.slot.id) {
        let state = slot.lock();
        let record = &state.record;
        used.extend(record.image.installed.as_ref().map(|i| i.digest.clone()));
        used.extend(record.firmware.current.as_ref().map(|i| i.digest.clone()));
        used.extend(
            record
                .firmware
                .downloaded
                .as_ref()
                .map(|i| i.digest.clone()),
        );
    }
    let Ok(entries) = std::fs::read_dir(ctx.sup.layout.images()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && !used.contains(&name) {
            tracing::info!(image = %name, "image no longer used: removed");
            let _ = remove_all(&entry.path());
        }
    }
}

/// The VM is gone: its rows go with the job's end, in one transaction.
pub fn finish(ctx: &JobCtx, outcome: &Outcome) {
    let job = &ctx.job;
    let mut changes = vec![
        Change::ForgetVm(ctx.slot.id.clone()),
        Change::FinishJob {
            id: job.id,
            result: outcome.code,
        },
    ];
    if job.source.is_some() {
        changes.push(Change::EnqueueAlert(super::complete_alert(
            job.op,
            job.source.clone(),
            job.correlator.clone(),
            outcome.code,
        )));
    }
    match ctx.sup.commit(changes, Vec::new()) {
        Ok(()) => {
            if job.source.is_some() {
                ctx.sup.wakeup.notify(crate::alerts::Wake::Alerts);
            }
            ctx.sup.remove_slot(&ctx.slot.id);
            tracing::info!("VM deleted");
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot forget the deleted VM");
            ctx.with_state(|s| s.busy = None);
        }
    }
}
