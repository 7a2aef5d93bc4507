//! Atomic: all commands or none. Stored nodes are snapshotted at `begin_atomic` and restored on
//! rollback; handlers are enrolled on their first change inside the Atomic (`atomic_begin`) and
//! asked to roll back (`atomic_rollback`). A handler that refuses to enrol makes that command
//! fail with 500, which fails the Atomic.

use std::collections::BTreeSet;

use super::{AtomicOutcome, DmOp, DmTree, DmUri, Node, OpOutcome, Requester};
use crate::status::StatusCode;

/// 507 "Atomic failed" (SyncML RepPro 1.2 status table).
pub const ATOMIC_FAILED: StatusCode = StatusCode(507);
/// 516 "Atomic roll back failed" (SyncML RepPro 1.2 status table).
pub const ATOMIC_ROLLBACK_FAILED: StatusCode = StatusCode(516);

pub(super) struct AtomicTx {
    snapshot: Node,
    enrolled: BTreeSet<DmUri>,
}

impl DmTree {
    /// Starts an Atomic. Nested Atomics are not allowed (500).
    pub fn begin_atomic(&mut self) -> Result<(), StatusCode> {
        if self.atomic.is_some() {
            return Err(StatusCode::COMMAND_FAILED);
        }
        self.atomic = Some(AtomicTx {
            snapshot: self.root.clone(),
            enrolled: BTreeSet::new(),
        });
        Ok(())
    }

    pub fn in_atomic(&self) -> bool {
        self.atomic.is_some()
    }

    /// Keeps the Atomic's changes.
    pub fn commit_atomic(&mut self) {
        if let Some(tx) = self.atomic.take() {
            for mount in &tx.enrolled {
                if let Some(handler) = self.mounts.get_mut(mount) {
                    handler.atomic_commit();
                }
            }
        }
    }

    /// Undoes the Atomic's changes: 216 when everything was rolled back, 516 when a handler could
    /// not roll back (stored nodes are always restored).
    pub fn rollback_atomic(&mut self) -> StatusCode {
        let Some(tx) = self.atomic.take() else {
            return StatusCode::ATOMIC_ROLLBACK_OK;
        };
        self.set_root(tx.snapshot);
        let mut status = StatusCode::ATOMIC_ROLLBACK_OK;
        for mount in &tx.enrolled {
            if let Some(handler) = self.mounts.get_mut(mount) {
                if handler.atomic_rollback().is_err() {
                    status = ATOMIC_ROLLBACK_FAILED;
                }
            }
        }
        status
    }

    /// Enrols the handler at `mount` in the running Atomic, if any.
    pub(super) fn enrol_in_atomic(&mut self, mount: &DmUri) -> Result<(), StatusCode> {
        let Some(tx) = self.atomic.as_mut() else {
            return Ok(());
        };
        if tx.enrolled.contains(mount) {
            return Ok(());
        }
        let handler = self
            .mounts
            .get_mut(mount)
            .ok_or(StatusCode::COMMAND_FAILED)?;
        handler
            .atomic_begin()
            .map_err(|_| StatusCode::COMMAND_FAILED)?;
        tx.enrolled.insert(mount.clone());
        Ok(())
    }

    /// Runs `ops` as one Atomic: on the first failure the rest are not executed (215) and
    /// everything done is rolled back (216, or 516 where rollback failed).
    pub fn run_atomic(&mut self, requester: Requester<'_>, ops: &[DmOp]) -> AtomicOutcome {
        if let Err(status) = self.begin_atomic() {
            return AtomicOutcome {
                status,
                commands: ops
                    .iter()
                    .map(|_| OpOutcome::status(StatusCode::NOT_EXECUTED))
                    .collect(),
            };
        }
        let mut commands: Vec<OpOutcome> = Vec::with_capacity(ops.len());
        let mut failed_at = None;
        for (i, op) in ops.iter().enumerate() {
            if failed_at.is_some() {
                commands.push(OpOutcome::status(StatusCode::NOT_EXECUTED));
                continue;
            }
            let outcome = self.execute(requester, op);
            if !outcome.status.is_success() {
                failed_at = Some(i);
            }
            commands.push(outcome);
        }
        let Some(failed) = failed_at else {
            self.commit_atomic();
            return AtomicOutcome {
                status: StatusCode::OK,
                commands,
            };
        };
        let rollback = self.rollback_atomic();
        for outcome in commands.iter_mut().take(failed) {
            outcome.status = rollback;
        }
        AtomicOutcome {
            status: ATOMIC_FAILED,
            commands,
        }
    }
}
