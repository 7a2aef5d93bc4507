//! Per-VM firmware (FUMO-shaped): a new kernel and initramfs for one VM.

use super::{JobCtx, Outcome};
use crate::alerts;
use crate::model::{Operation, ResultCode};

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

pub fn run(_ctx: &mut JobCtx) -> Outcome {
    Outcome::failed(ResultCode::FAILED, "per-VM firmware is not implemented yet")
}
