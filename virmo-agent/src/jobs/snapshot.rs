//! Suspend: the VMM saves the VM into `snapshot/` and exits, so no process, RAM or CPU is left.
//!
//! Steps: `prepare` (a previous snapshot, still mapped by a lazily restored VMM, is moved to
//! `snapshot.old`) → `save` (the snapshot request; `requested` is stored before it is sent).
//! Replaying `save`: a VMM that is gone with a complete snapshot was suspended; one still
//! running the guest never got the request (it is sent again); one paused is saving (waited
//! for).

use std::time::Duration;

use vmm::api::types::RunState;

use super::{JobCtx, Outcome};
use crate::layout::{remove_all, sync_dir};
use crate::model::{LockState, ResultCode, VmState};
use crate::vmm_proc::VmmProcess;

pub const FIRST_STEP: &str = "prepare";

/// How long a VMM that is saving (found after a restart) may take to finish and exit.
const SAVING_WAIT: Duration = Duration::from_secs(300);
const EXIT_GRACE: Duration = Duration::from_secs(10);

pub fn suspend(ctx: &mut JobCtx) -> Outcome {
    let paths = ctx.paths();
    let mut process = ctx.with_state(|s| s.process.take()).or_else(|| {
        ctx.record()
            .process
            .and_then(|r| VmmProcess::adopt(r, &paths))
    });
    loop {
        match ctx.job.step.as_str() {
            "prepare" => {
                if paths.snapshot.exists() {
                    if let Err(e) = remove_all(&paths.snapshot_old)
                        .and_then(|()| std::fs::rename(&paths.snapshot, &paths.snapshot_old))
                        .and_then(|()| sync_dir(&paths.dir))
                    {
                        give_back(ctx, process);
                        return Outcome::failed(
                            ResultCode::FAILED,
                            format!("snapshot folder: {e}"),
                        );
                    }
                }
                if let Err(e) = ctx.step("save", serde_json::json!({ "requested": false })) {
                    give_back(ctx, process);
                    return e.into();
                }
            }
            "save" => {
                let complete = || paths.snapshot.join("manifest").exists();
                let Some(mut p) = process.take() else {
                    // The VMM is gone: saved (and exited), or the VM ended on its own.
                    return if complete() {
                        suspended(ctx)
                    } else {
                        ended(ctx)
                    };
                };
                if ctx.param_bool("requested") {
                    let saving = p
                        .client()
                        .info()
                        .map(|i| i.state != RunState::Running)
                        .unwrap_or(true);
                    let locked_paused = ctx.record().lock.state == LockState::Full;
                    let wait = if saving && !locked_paused {
                        SAVING_WAIT
                    } else {
                        Duration::from_secs(2)
                    };
                    if p.wait_exit(wait).is_some() {
                        return if complete() {
                            suspended(ctx)
                        } else {
                            ended(ctx)
                        };
                    }
                }
                if let Err(e) = ctx.step("save", serde_json::json!({ "requested": true })) {
                    give_back(ctx, Some(p));
                    return e.into();
                }
                match p.client().snapshot(&paths.snapshot, false) {
                    Ok(info) => {
                        tracing::info!(
                            duration_ms = info.duration_ms,
                            memory_bytes = info.memory_bytes_written,
                            "VM saved"
                        );
                        if p.wait_exit(EXIT_GRACE).is_none() {
                            tracing::warn!("the VMM did not exit after saving: killed");
                            let _ = p.kill(EXIT_GRACE);
                        }
                        return suspended(ctx);
                    }
                    Err(e) => {
                        let why = crate::error_chain(&e);
                        if p.poll_exit().is_some() {
                            return if complete() {
                                suspended(ctx)
                            } else {
                                ended(ctx)
                            };
                        }
                        // The snapshot had no effect: the VM runs on.
                        give_back(ctx, Some(p));
                        let _ = remove_all(&paths.snapshot_old);
                        return Outcome::failed(
                            ResultCode::FAILED,
                            format!("the snapshot failed: {why}"),
                        );
                    }
                }
            }
            other => {
                give_back(ctx, process);
                return Outcome::failed(ResultCode::FAILED, format!("unknown step `{other}`"));
            }
        }
    }
}

/// Puts a still-running VMM back into the slot.
fn give_back(ctx: &JobCtx, process: Option<VmmProcess>) {
    if let Some(p) = process {
        ctx.with_state(|s| s.process = Some(p));
    }
}

fn suspended(ctx: &JobCtx) -> Outcome {
    let paths = ctx.paths();
    let _ = remove_all(&paths.snapshot_old);
    ctx.sup.release_host_resources(&ctx.slot.id);
    ctx.with_state(|s| s.access_epoch += 1);
    match ctx.update(|r| {
        r.state = VmState::Suspended;
        r.process = None;
    }) {
        Ok(_) => Outcome::ok(),
        Err(e) => e.into(),
    }
}

/// The VMM ended without a snapshot: the VM stopped or crashed meanwhile.
fn ended(ctx: &JobCtx) -> Outcome {
    let paths = ctx.paths();
    let exit = crate::vmm_proc::ExitInfo::from_log(&paths.vmm_log);
    ctx.sup.release_host_resources(&ctx.slot.id);
    let (clean, reason) = (exit.is_clean(), exit.reason);
    let _ = ctx.update(|r| {
        r.state = if clean {
            VmState::Stopped
        } else {
            VmState::Failed
        };
        r.process = None;
    });
    Outcome::failed(
        ResultCode::FAILED,
        format!("the VM ended before it was saved: {reason}"),
    )
}
