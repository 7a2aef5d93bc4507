//! Per-VM firmware (FUMO-shaped): a new kernel and initramfs for one VM, from a bundle (only
//! its kernel, initramfs and ready marker are used).
//!
//! Steps: `download` (resumable; installed into the image store) → `apply` (the new firmware is
//! recorded as current, with the previous one kept in the job; a running VM is shut down and
//! the VM booted with it) → `verify` (the guest must print the ready marker, or keep running
//! `boot_check_secs` when there is none; otherwise the previous firmware is put back and the
//! VM booted with it). A VM that was not running is booted for the check and stopped again.

use std::time::{Duration, Instant};

use super::power::{boot_now, shut_down};
use super::{JobCtx, Outcome};
use crate::alerts;
use crate::bundle::download::Download;
use crate::bundle::extract::install;
use crate::bundle::{hex, Manifest, MANIFEST_NAME};
use crate::model::{Operation, ResultCode, VmState};
use crate::store::FirmwareImage;
use crate::vmm_proc::VmmProcess;

/// FUMO states (OMA-TS-DM-FUMO 1.0, `State`).
pub mod fumo_state {
    pub const IDLE: u16 = 10;
    pub const DOWNLOAD_FAILED: u16 = 20;
    pub const DOWNLOAD_PROGRESSING: u16 = 30;
    pub const DOWNLOAD_COMPLETE: u16 = 40;
    pub const READY_TO_UPDATE: u16 = 50;
    pub const UPDATE_PROGRESSING: u16 = 60;
    pub const UPDATE_FAILED_HAVE_DATA: u16 = 70;
    pub const UPDATE_FAILED_NO_DATA: u16 = 80;
    pub const UPDATE_SUCCESSFUL_HAVE_DATA: u16 = 90;
    pub const UPDATE_SUCCESSFUL_NO_DATA: u16 = 100;
}

pub fn first_step(op: Operation) -> &'static str {
    match op {
        Operation::FirmwareUpdate => "apply",
        _ => "download",
    }
}

pub fn alert_type(op: Operation) -> &'static str {
    match op {
        Operation::FirmwareDownload => alerts::FUMO_DOWNLOAD,
        Operation::FirmwareUpdate => alerts::FUMO_UPDATE,
        _ => alerts::FUMO_DOWNLOAD_AND_UPDATE,
    }
}

/// The FUMO result code reporting a VirMO result.
pub fn fumo_result(code: ResultCode) -> u16 {
    match code.0 {
        1200 => 200,
        1401 => 401,
        1402 => 402,
        1403 | 1407 => 405,
        1405 => 501,
        1501 => 503,
        1400 | 1406 => 411,
        _ => 410,
    }
}

/// How often the console is looked at during the boot check.
const CHECK_EVERY: Duration = Duration::from_millis(200);

pub fn run(ctx: &mut JobCtx) -> Outcome {
    let mut process: Option<VmmProcess> = None;
    loop {
        match ctx.job.step.as_str() {
            "download" => {
                if let Err(outcome) = download(ctx) {
                    let _ = ctx.update(|r| r.firmware.state = fumo_state::DOWNLOAD_FAILED);
                    return outcome;
                }
                if ctx.job.op == Operation::FirmwareDownload {
                    return Outcome::ok();
                }
                if let Err(e) = ctx.step("apply", serde_json::json!({})) {
                    return e.into();
                }
            }
            "apply" => match apply(ctx) {
                Ok(p) => process = p,
                Err(outcome) => return outcome,
            },
            "verify" => return verify(ctx, process.take()),
            other => return Outcome::failed(ResultCode::FAILED, format!("unknown step `{other}`")),
        }
    }
}

fn download(ctx: &mut JobCtx) -> Result<(), Outcome> {
    let record = ctx.record();
    let url = if ctx.job.op == Operation::FirmwareDownload {
        record.firmware.download_url.clone()
    } else {
        record.firmware.download_and_update_url.clone()
    };
    if url.trim().is_empty() {
        return Err(Outcome::failed(ResultCode::BAD_CONFIG, "no PkgURL"));
    }
    ctx.update(|r| r.firmware.state = fumo_state::DOWNLOAD_PROGRESSING)?;
    let limits = ctx.sup.config.limits.clone();
    let max = limits.max_bundle_mib << 20;
    let part = ctx.sup.layout.download(ctx.job.id);
    let result = Download {
        url: url.trim(),
        part: &part,
        expected: None,
        max_bytes: max,
        timeout: Duration::from_secs(limits.download_timeout_secs),
        attempts: limits.download_attempts,
    }
    .run();
    let digest = match result {
        Ok(d) => hex(&d),
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e.into());
        }
    };
    let installed = install(&part, &ctx.sup.layout.images(), &digest, max);
    let _ = std::fs::remove_file(&part);
    let manifest = installed?;
    let ready = if ctx.job.op == Operation::FirmwareDownload {
        fumo_state::DOWNLOAD_COMPLETE
    } else {
        fumo_state::READY_TO_UPDATE
    };
    ctx.update(|r| {
        r.firmware.downloaded = Some(FirmwareImage {
            digest,
            name: manifest.name.clone(),
            version: manifest.version.clone(),
        });
        r.firmware.state = ready;
    })?;
    Ok(())
}

/// Makes the downloaded firmware current and boots the VM with it.
fn apply(ctx: &mut JobCtx) -> Result<Option<VmmProcess>, Outcome> {
    let record = ctx.record();
    let Some(new) = record.firmware.downloaded.clone() else {
        return Err(Outcome::failed(
            ResultCode::NOT_ALLOWED_IN_STATE,
            "nothing downloaded",
        ));
    };
    let was_running = record.state == VmState::Running;
    let params = serde_json::json!({
        "was_running": was_running,
        "previous": record.firmware.current,
        "since": crate::model::unix_now(),
    });
    ctx.update_and_step(
        |r| {
            r.firmware.current = Some(new);
            r.firmware.state = fumo_state::UPDATE_PROGRESSING;
        },
        "verify",
        params,
    )?;
    if let Some(mut p) = ctx.with_state(|s| s.process.take()) {
        shut_down(ctx, &mut p);
    }
    ctx.sup.release_host_resources(&ctx.slot.id);
    ctx.with_state(|s| s.access_epoch += 1);
    ctx.update(|r| {
        r.state = VmState::Stopped;
        r.process = None;
    })?;
    match boot_now(ctx) {
        Ok(p) => Ok(Some(p)),
        // Not booting is for the check to judge: no process goes to the rollback.
        Err(outcome) => {
            tracing::warn!(error = ?outcome.error, "the new firmware did not start");
            Ok(None)
        }
    }
}

/// The console marker the guest prints once booted (the firmware's, else the image's).
fn ready_marker(ctx: &JobCtx) -> Option<String> {
    let record = ctx.record();
    let firmware = record.firmware.current.as_ref()?;
    let text =
        std::fs::read_to_string(ctx.sup.layout.image(&firmware.digest).join(MANIFEST_NAME)).ok()?;
    Manifest::parse(&text)
        .ok()?
        .boot
        .ready_marker
        .or_else(|| record.image.installed.as_ref()?.ready_marker.clone())
}

fn verify(ctx: &mut JobCtx, process: Option<VmmProcess>) -> Outcome {
    let record = ctx.record();
    let mut process = process.or_else(|| {
        record
            .process
            .and_then(|r| VmmProcess::adopt(r, &ctx.paths()))
    });
    let marker = ready_marker(ctx);
    let check = Duration::from_secs(ctx.sup.config.limits.boot_check_secs);
    let console = ctx.paths().console_log;
    let started = Instant::now();
    let booted = loop {
        let Some(p) = process.as_mut() else {
            break Err("the VM did not start".to_owned());
        };
        if let Some(exit) = p.poll_exit() {
            break Err(format!("the VM ended while booting: {}", exit.reason));
        }
        if let Some(marker) = &marker {
            let text = std::fs::read_to_string(&console).unwrap_or_default();
            if text.lines().any(|l| l.contains(marker.as_str())) {
                break Ok(());
            }
        }
        if started.elapsed() >= check {
            break if marker.is_some() {
                Err(format!(
                    "no `{}` on the console within {check:?}",
                    marker.unwrap_or_default()
                ))
            } else {
                Ok(())
            };
        }
        std::thread::sleep(CHECK_EVERY);
    };
    let was_running = ctx.param_bool("was_running");
    match booted {
        Ok(()) => {
            tracing::info!("the new firmware booted");
            let result = ctx.update(|r| {
                r.firmware.downloaded = None;
                r.firmware.state = fumo_state::UPDATE_SUCCESSFUL_NO_DATA;
            });
            if let Err(e) = result {
                return e.into();
            }
            finish_with(ctx, process, was_running);
            Outcome::ok()
        }
        Err(why) => {
            tracing::warn!(%why, "the new firmware does not boot: rolled back");
            if let Some(mut p) = process.take() {
                let _ = p.client().stop();
                let _ = p.kill(Duration::from_secs(10));
            }
            let previous: Option<FirmwareImage> = ctx
                .job
                .params
                .get("previous")
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok());
            let _ = ctx.update(|r| {
                r.firmware.current = previous;
                r.firmware.state = fumo_state::UPDATE_FAILED_HAVE_DATA;
                r.state = VmState::Stopped;
                r.process = None;
            });
            ctx.sup.release_host_resources(&ctx.slot.id);
            if was_running {
                match boot_now(ctx) {
                    Ok(p) => ctx.with_state(|s| s.process = Some(p)),
                    Err(outcome) => {
                        tracing::error!(error = ?outcome.error, "the previous firmware does not start either");
                    }
                }
            }
            Outcome::failed(ResultCode::FAILED, why)
        }
    }
}

/// Leaves the VM as it was before the update: running, or stopped again.
fn finish_with(ctx: &JobCtx, process: Option<VmmProcess>, was_running: bool) {
    let Some(mut p) = process else { return };
    if was_running {
        ctx.with_state(|s| s.process = Some(p));
        return;
    }
    shut_down(ctx, &mut p);
    ctx.sup.release_host_resources(&ctx.slot.id);
    let _ = ctx.update(|r| {
        r.state = VmState::Stopped;
        r.process = None;
    });
}
