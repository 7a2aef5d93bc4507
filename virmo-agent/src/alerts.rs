//! The Generic Alerts the agent sends (`docs/virmo-mo.md`, "Alerts"), and the wake-up that
//! tells the DM client there is something to deliver. An alert is a database row from the
//! moment it is raised until the server acknowledges it.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::model::{ResultCode, VmState};
use crate::store::StoredAlert;

pub const OPERATION_COMPLETE: &str = "urn:oma:at:virmo:1.0:OperationComplete";
pub const STATE_CHANGED: &str = "urn:oma:at:virmo:1.0:StateChanged";
pub const USER_UNLOCKED: &str = "urn:oma:at:virmo:1.0:UserUnlocked";
/// FUMO's alert types, per firmware operation.
pub const FUMO_DOWNLOAD: &str = "org.openmobilealliance.dm.firmwareupdate.download";
pub const FUMO_UPDATE: &str = "org.openmobilealliance.dm.firmwareupdate.update";
pub const FUMO_DOWNLOAD_AND_UPDATE: &str =
    "org.openmobilealliance.dm.firmwareupdate.downloadandupdate";

/// `./VirMO/VM/<node>`.
pub fn vm_uri(node: &str) -> String {
    format!("./VirMO/VM/{}", omadm::tree::uri::escape(node))
}

/// The outcome of an Exec'd operation.
pub fn operation_complete(
    source: Option<String>,
    correlator: Option<String>,
    code: ResultCode,
) -> StoredAlert {
    StoredAlert {
        alert_type: OPERATION_COMPLETE.into(),
        source,
        correlator,
        format: "int".into(),
        mark: Some(
            if code.is_success() {
                "informational"
            } else {
                "major"
            }
            .into(),
        ),
        data: code.0.to_string(),
    }
}

/// A VM changed state on its own (the guest powered off or crashed).
pub fn state_changed(node: &str, state: VmState) -> StoredAlert {
    StoredAlert {
        alert_type: STATE_CHANGED.into(),
        source: Some(format!("{}/State", vm_uri(node))),
        correlator: None,
        format: "int".into(),
        mark: Some(
            if state == VmState::Failed {
                "critical"
            } else {
                "major"
            }
            .into(),
        ),
        data: state.code().to_string(),
    }
}

/// The local user unlocked a VM with an authorised code.
pub fn user_unlocked(node: &str) -> StoredAlert {
    StoredAlert {
        alert_type: USER_UNLOCKED.into(),
        source: Some(format!("{}/Lock/State", vm_uri(node))),
        correlator: None,
        format: "int".into(),
        mark: Some("major".into()),
        data: crate::model::LockState::Unlocked.code().to_string(),
    }
}

/// A FUMO result (`Data`: a FUMO result code, e.g. 200 or 410).
pub fn fumo(
    alert_type: &str,
    source: Option<String>,
    correlator: Option<String>,
    result: u16,
) -> StoredAlert {
    StoredAlert {
        alert_type: alert_type.into(),
        source,
        correlator,
        format: "int".into(),
        mark: Some(
            if result == 200 {
                "informational"
            } else {
                "critical"
            }
            .into(),
        ),
        data: result.to_string(),
    }
}

/// As the DM session sends it.
pub fn to_generic(alert: &StoredAlert) -> omadm::session::GenericAlert {
    omadm::session::GenericAlert {
        correlator: alert.correlator.clone(),
        source: alert.source.clone(),
        alert_type: alert.alert_type.clone(),
        format: alert.format.clone(),
        mark: alert.mark.clone(),
        data: Some(omadm::model::Data::text(alert.data.clone())),
    }
}

/// Why the DM client should open a session now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// Alerts were queued.
    Alerts,
    /// A verified Pkg#0 asked for a session with this ID.
    Notification { session_id: String },
    /// The agent is stopping.
    Shutdown,
}

/// A mailbox of wake-ups for the DM client.
#[derive(Debug, Default)]
pub struct Wakeup {
    pending: Mutex<Vec<Wake>>,
    signal: Condvar,
}

impl Wakeup {
    pub fn notify(&self, wake: Wake) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if !pending.contains(&wake) {
            pending.push(wake);
        }
        self.signal.notify_all();
    }

    /// Waits up to `timeout` for wake-ups; all that arrived (empty on timeout).
    pub fn wait(&self, timeout: Duration) -> Vec<Wake> {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (mut pending, _) = self
            .signal
            .wait_timeout_while(pending, timeout, |p| p.is_empty())
            .unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_carry_their_source_and_code() {
        let alert = operation_complete(
            Some("./VirMO/VM/w/Operations/Start".into()),
            Some("c-1".into()),
            ResultCode::NOT_ALLOWED_IN_STATE,
        );
        let generic = to_generic(&alert);
        assert_eq!(generic.alert_type, OPERATION_COMPLETE);
        assert_eq!(generic.correlator.as_deref(), Some("c-1"));
        assert_eq!(generic.data.unwrap().to_string_lossy(), "1403");
        let changed = state_changed("a b", VmState::Failed);
        assert_eq!(changed.source.as_deref(), Some("./VirMO/VM/a%20b/State"));
        assert_eq!(changed.data, "50");
    }

    #[test]
    fn wakeups_are_collected_once() {
        let wakeup = Wakeup::default();
        assert!(wakeup.wait(Duration::from_millis(1)).is_empty());
        wakeup.notify(Wake::Alerts);
        wakeup.notify(Wake::Alerts);
        assert_eq!(wakeup.wait(Duration::from_secs(1)), vec![Wake::Alerts]);
    }
}
