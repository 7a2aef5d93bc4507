//! PartiallyLock, FullyLock, Unlock. The lock state is stored first (step `apply`), then
//! applied to a running VM (pause / resume, peripherals reserved to the local user closed or
//! reopened); both are idempotent, so a replay simply applies it again.

use super::{JobCtx, Outcome};
use crate::model::{LockState, Operation, ResultCode, VmState};
use crate::supervisor::LOCAL_CLASSES;

pub const FIRST_STEP: &str = "apply";

/// The secret kind of the user unlock code's hash.
pub const CODE_SECRET: &str = "unlock-code";

pub fn run(ctx: &mut JobCtx) -> Outcome {
    let target = match ctx.job.op {
        Operation::PartiallyLock => LockState::Partial,
        Operation::FullyLock => LockState::Full,
        _ => LockState::Unlocked,
    };
    let record = match ctx.update(|r| {
        r.lock.state = target;
        if target == LockState::Unlocked {
            r.lock.failed_attempts = 0;
            r.lock.lockouts = 0;
            r.lock.blocked_until = 0;
        }
    }) {
        Ok(r) => r,
        Err(e) => return e.into(),
    };
    // Whoever is attached locally loses the console.
    if target != LockState::Unlocked {
        ctx.with_state(|s| s.access_epoch += 1);
    }
    let (client, peripherals) = ctx.with_state(|s| {
        (
            s.process
                .as_ref()
                .filter(|_| s.record.state == VmState::Running)
                .map(|p| p.client()),
            s.peripherals.clone(),
        )
    });
    let Some(client) = client else {
        return Outcome::ok();
    };
    let result = match target {
        LockState::Full => ignore_conflict(client.pause()),
        LockState::Partial | LockState::Unlocked => ignore_conflict(client.resume()),
    };
    if let Err(e) = result {
        return Outcome::failed(ResultCode::FAILED, crate::error_chain(&e));
    }
    for peripheral in peripherals
        .iter()
        .filter(|p| LOCAL_CLASSES.contains(&p.class.as_str()))
    {
        let allowed = peripheral.allowed && record.lock.state == LockState::Unlocked;
        if let Err(e) = client.set_device_policy(&peripheral.id, allowed) {
            tracing::warn!(device = %peripheral.id, error = %crate::error_chain(&e), "cannot gate a peripheral");
        }
    }
    Outcome::ok()
}

/// A 409 (already paused / not paused) means the VM is as wanted.
fn ignore_conflict(
    result: Result<(), vmm::api::client::ClientError>,
) -> Result<(), vmm::api::client::ClientError> {
    match result {
        Err(vmm::api::client::ClientError::Status { status: 409, .. }) => Ok(()),
        other => other,
    }
}
