//! The control surface of a running VM ([`VmControl`]): info, pause, resume, shutdown, stop,
//! snapshot and device policy, as the API server asks for them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{lock, Vmm};
use crate::api::types::{RunState, ShutdownOutcome, VmInfo};
use crate::control::{ControlError, VmControl, VmRequest, VmResponse};
use crate::stop::StopReason;
use crate::vstate::vcpus::VcpuSet;

impl Vmm {
    pub(super) fn info(&self) -> VmInfo {
        let uptime = lock(&self.started_at)
            .map(|t| t.elapsed())
            .unwrap_or_default();
        VmInfo {
            id: self.config.id.clone(),
            state: *lock(&self.state),
            vcpus: self.config.vcpus,
            memory_mib: self.config.memory_mib,
            uptime_ms: uptime.as_millis() as u64,
            pid: crate::jail::process_id(),
            vmm_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    fn pause(&self) -> Result<VmResponse, ControlError> {
        let mut state = lock(&self.state);
        if *state != RunState::Running {
            return Err(invalid_state(*state, "only a running VM can be paused"));
        }
        self.with_vcpus(|set| set.map(VcpuSet::pause));
        *state = RunState::Paused;
        Ok(VmResponse::Done)
    }

    fn resume(&self) -> Result<VmResponse, ControlError> {
        let mut state = lock(&self.state);
        if *state != RunState::Paused {
            return Err(invalid_state(*state, "only a paused VM can be resumed"));
        }
        self.with_vcpus(|set| set.map(VcpuSet::resume));
        *state = RunState::Running;
        Ok(VmResponse::Done)
    }

    fn shutdown(&self, timeout: Duration) -> Result<VmResponse, ControlError> {
        {
            let mut state = lock(&self.state);
            match *state {
                RunState::Running => {}
                RunState::Paused => self
                    .with_vcpus(|set| set.map(VcpuSet::resume))
                    .unwrap_or(()),
                other => return Err(invalid_state(other, "the VM is not running")),
            }
            *state = RunState::ShuttingDown;
        }
        self.api_answer_pending.store(true, Ordering::SeqCst);
        lock(&self.ged)
            .press_power_button()
            .map_err(|e| ControlError::Internal(format!("cannot press the power button: {e}")))?;
        let outcome = match self.stop.wait_timeout(timeout) {
            Some(_) => ShutdownOutcome::Graceful,
            None if self.stop.raise(StopReason::ShutdownForced) => ShutdownOutcome::Forced,
            // The guest stopped between the timeout and the forced stop.
            None => ShutdownOutcome::Graceful,
        };
        Ok(VmResponse::Shutdown(outcome))
    }
}

impl VmControl for Vmm {
    fn handle(&self, request: VmRequest) -> Result<VmResponse, ControlError> {
        if self.is_suspended() && !matches!(request, VmRequest::GetInfo | VmRequest::ListDevices) {
            return Err(ControlError::InvalidState {
                state: "suspended".into(),
                reason: "the VM was saved to a snapshot and this process is ending".into(),
            });
        }
        match request {
            VmRequest::GetInfo => Ok(VmResponse::Info(self.info())),
            VmRequest::Pause => self.pause(),
            VmRequest::Resume => self.resume(),
            VmRequest::Shutdown { timeout } => self.shutdown(timeout),
            VmRequest::Stop => {
                self.api_answer_pending.store(true, Ordering::SeqCst);
                self.stop.raise(StopReason::StopRequested);
                Ok(VmResponse::Done)
            }
            VmRequest::Snapshot { dir, keep_running } => self
                .snapshot(&dir, keep_running)
                .map(VmResponse::Snapshot)
                .map_err(ControlError::from),
            VmRequest::ListDevices => Ok(VmResponse::Devices(self.virtio.list())),
            VmRequest::SetDevicePolicy { id, allowed } => self
                .virtio
                .set_policy(&id, allowed)
                .map(VmResponse::DevicePolicy),
        }
    }
}

pub(super) fn invalid_state(state: RunState, reason: &str) -> ControlError {
    ControlError::InvalidState {
        state: format!("{state:?}").to_lowercase(),
        reason: reason.to_string(),
    }
}
