//! Long operations as persisted state machines, in the manner of Mender's client: a job is a
//! database row whose `step` is written before the step runs; an agent that starts again runs
//! every unfinished job from its stored step. Every step is written so that running it a
//! second time (after a crash in its middle) is correct: it first looks at what is already
//! done (a VMM whose socket answers, a snapshot whose manifest exists, a partial download).
//!
//! When a job ends, its result, the VM's new record and the alert that reports it are stored
//! in one transaction.

pub mod delete;
pub mod firmware;
pub mod lock;
pub mod power;
mod provision;
mod snapshot;

use std::sync::Arc;

use crate::alerts;
use crate::layout::VmPaths;
use crate::model::{Operation, ResultCode};
use crate::store::{Change, JobRecord, StoreError, StoredAlert, VmRecord};
use crate::supervisor::{SlotState, Supervisor, VmSlot};

/// The step a new job of `op` starts at.
pub fn first_step(op: Operation) -> &'static str {
    match op {
        Operation::Provision => provision::FIRST_STEP,
        Operation::Start | Operation::Resume => power::FIRST_STEP,
        Operation::Stop => power::STOP_STEP,
        Operation::Suspend => snapshot::FIRST_STEP,
        Operation::PartiallyLock | Operation::FullyLock | Operation::Unlock => lock::FIRST_STEP,
        Operation::Delete => delete::FIRST_STEP,
        Operation::FirmwareDownload
        | Operation::FirmwareUpdate
        | Operation::FirmwareDownloadAndUpdate => firmware::first_step(op),
    }
}

/// The alert reporting `op`'s outcome to the server (FUMO's own types for firmware).
pub fn complete_alert(
    op: Operation,
    source: Option<String>,
    correlator: Option<String>,
    code: ResultCode,
) -> StoredAlert {
    match op {
        Operation::FirmwareDownload
        | Operation::FirmwareUpdate
        | Operation::FirmwareDownloadAndUpdate => alerts::fumo(
            firmware::alert_type(op),
            source,
            correlator,
            firmware::fumo_result(code),
        ),
        _ => alerts::operation_complete(source, correlator, code),
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub code: ResultCode,
    /// Why it failed (logged, and kept as the VM's `last_error`).
    pub error: Option<String>,
}

impl Outcome {
    pub fn ok() -> Self {
        Self {
            code: ResultCode::SUCCESS,
            error: None,
        }
    }

    pub fn failed(code: ResultCode, error: impl Into<String>) -> Self {
        Self {
            code,
            error: Some(error.into()),
        }
    }
}

/// A download's failure as a result code: 1406 bad URL, 1501 unreachable, 1402 hash mismatch,
/// 1405 too large.
impl From<crate::bundle::download::DownloadError> for Outcome {
    fn from(e: crate::bundle::download::DownloadError) -> Self {
        use crate::bundle::download::DownloadError as E;
        let code = match &e {
            E::BadUrl(_) => ResultCode::BAD_CONFIG,
            E::Failed { .. } => ResultCode::DOWNLOAD_FAILED,
            E::HashMismatch { .. } => ResultCode::CORRUPT,
            E::TooLarge(_) => ResultCode::NO_RESOURCES,
            E::Io(_) => ResultCode::FAILED,
        };
        Self::failed(code, crate::error_chain(&e))
    }
}

/// An install's failure as a result code: 1402 corrupt, 1405 too large.
impl From<crate::bundle::extract::ExtractError> for Outcome {
    fn from(e: crate::bundle::extract::ExtractError) -> Self {
        use crate::bundle::extract::ExtractError as E;
        let code = match &e {
            E::Corrupt(_) => ResultCode::CORRUPT,
            E::TooLarge(_) => ResultCode::NO_RESOURCES,
            E::Io(_) => ResultCode::FAILED,
        };
        Self::failed(code, crate::error_chain(&e))
    }
}

impl From<StoreError> for Outcome {
    fn from(e: StoreError) -> Self {
        Self::failed(ResultCode::FAILED, crate::error_chain(&e))
    }
}

/// What a job works with.
pub struct JobCtx {
    pub sup: Arc<Supervisor>,
    pub slot: Arc<VmSlot>,
    pub job: JobRecord,
}

impl JobCtx {
    /// Records that the job is about to run `step` (with `params`), before it runs.
    pub fn step(&mut self, step: &str, params: serde_json::Value) -> Result<(), StoreError> {
        self.sup.store.apply(vec![Change::SetJobStep {
            id: self.job.id,
            step: step.to_owned(),
            params: params.clone(),
        }])?;
        tracing::debug!(job = self.job.id, step, "job step");
        self.job.step = step.to_owned();
        self.job.params = params;
        Ok(())
    }

    /// A copy of the VM's record.
    pub fn record(&self) -> VmRecord {
        self.slot.lock().record.clone()
    }

    /// Changes and stores the VM's record; returns the new one.
    pub fn update(&self, f: impl FnOnce(&mut VmRecord)) -> Result<VmRecord, StoreError> {
        let mut state = self.slot.lock();
        let mut record = state.record.clone();
        f(&mut record);
        self.sup
            .save_record(&mut state, record.clone(), Vec::new())?;
        Ok(record)
    }

    /// Changes and stores the VM's record together with the job's next step.
    pub fn update_and_step(
        &mut self,
        f: impl FnOnce(&mut VmRecord),
        step: &str,
        params: serde_json::Value,
    ) -> Result<VmRecord, StoreError> {
        let mut state = self.slot.lock();
        let mut record = state.record.clone();
        f(&mut record);
        self.sup.store.apply(vec![
            Change::SaveVm(record.clone()),
            Change::SetJobStep {
                id: self.job.id,
                step: step.to_owned(),
                params: params.clone(),
            },
        ])?;
        state.record = record.clone();
        drop(state);
        self.job.step = step.to_owned();
        self.job.params = params;
        Ok(record)
    }

    pub fn with_state<T>(&self, f: impl FnOnce(&mut SlotState) -> T) -> T {
        f(&mut self.slot.lock())
    }

    pub fn paths(&self) -> VmPaths {
        self.sup.layout.vm(&self.slot.id)
    }

    pub fn param_str(&self, key: &str) -> Option<String> {
        self.job.params.get(key)?.as_str().map(str::to_owned)
    }

    pub fn param_bool(&self, key: &str) -> bool {
        self.job
            .params
            .get(key)
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    }
}

/// Runs `job` on its own thread.
pub fn spawn(sup: Arc<Supervisor>, slot: Arc<VmSlot>, job: JobRecord) {
    let name = format!("job-{}-{}", job.id, job.op.key());
    let result = std::thread::Builder::new().name(name).spawn(move || {
        let span = tracing::info_span!("job", vm = %slot.id, op = job.op.key(), id = job.id);
        let _entered = span.enter();
        run(JobCtx { sup, slot, job });
    });
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot start a job thread");
    }
}

fn run(mut ctx: JobCtx) {
    let op = ctx.job.op;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match op {
        Operation::Provision => provision::run(&mut ctx),
        Operation::Start => power::start(&mut ctx),
        Operation::Resume => power::resume(&mut ctx),
        Operation::Stop => power::stop(&mut ctx),
        Operation::Suspend => snapshot::suspend(&mut ctx),
        Operation::PartiallyLock | Operation::FullyLock | Operation::Unlock => lock::run(&mut ctx),
        Operation::Delete => delete::run(&mut ctx),
        Operation::FirmwareDownload
        | Operation::FirmwareUpdate
        | Operation::FirmwareDownloadAndUpdate => firmware::run(&mut ctx),
    }))
    .unwrap_or_else(|_| Outcome::failed(ResultCode::FAILED, "the operation panicked"));
    if op == Operation::Delete && outcome.code.is_success() {
        delete::finish(&ctx, &outcome);
    } else {
        finish(&ctx, &outcome);
    }
}

/// Stores the job's end and its alert, and frees the VM for the next operation.
fn finish(ctx: &JobCtx, outcome: &Outcome) {
    let job = &ctx.job;
    match &outcome.error {
        Some(error) => {
            tracing::warn!(code = %outcome.code, error = %error, "operation failed");
        }
        None => tracing::info!(code = %outcome.code, "operation done"),
    }
    let mut alerts = Vec::new();
    if job.source.is_some() {
        alerts.push(complete_alert(
            job.op,
            job.source.clone(),
            job.correlator.clone(),
            outcome.code,
        ));
    }
    let mut state = ctx.slot.lock();
    if job.op == Operation::Unlock && ctx.param_bool("by_user") && outcome.code.is_success() {
        alerts.push(alerts::user_unlocked(&state.record.node));
    }
    let mut record = state.record.clone();
    if outcome.error.is_some() {
        record.last_error.clone_from(&outcome.error);
    }
    if job.op == Operation::Delete {
        // A failed delete leaves the VM in the tree again.
        record.deleting = false;
    }
    let changes = vec![
        Change::SaveVm(record.clone()),
        Change::FinishJob {
            id: job.id,
            result: outcome.code,
        },
    ];
    if let Err(e) = ctx.sup.commit(changes, alerts) {
        tracing::error!(error = %e, "cannot store the end of the operation");
    }
    state.record = record;
    state.busy = None;
}
