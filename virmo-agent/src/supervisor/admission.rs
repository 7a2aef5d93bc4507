//! Which operation a VM accepts in which state (`docs/virmo-mo.md`, "Operations"), as a pure
//! function.

use crate::model::{LockState, Operation, ResultCode, VmState};

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The DM server, by an Exec of `source` with an optional Correlator.
    Server {
        source: String,
        correlator: Option<String>,
    },
    /// The DM server by a DM Delete of the VM's node (no alert: the status says it all).
    ServerDelete,
    /// The device's local user (CLI).
    Local,
    /// The local user's unlock with an authorised code (checked before): no lock refusal; the
    /// server hears of it by a UserUnlocked alert.
    UserUnlock,
}

impl Origin {
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Local)
    }
}

/// What the VM must be like for `op`. `provisioned`: an image is installed; `firmware_ready`:
/// firmware was downloaded and not applied yet.
pub fn check(
    op: Operation,
    state: VmState,
    lock: LockState,
    provisioned: bool,
    firmware_ready: bool,
    origin: &Origin,
) -> Result<(), ResultCode> {
    use Operation as Op;
    use VmState as S;
    if origin.is_local() && lock.is_locked() {
        return Err(ResultCode::LOCKED);
    }
    let allowed = match op {
        Op::Provision => matches!(state, S::Provisioning | S::Failed),
        Op::Start => {
            if lock == LockState::Full && matches!(state, S::Stopped | S::Failed) {
                return Err(ResultCode::LOCKED);
            }
            provisioned && matches!(state, S::Stopped | S::Failed)
        }
        Op::Stop | Op::Suspend => state == S::Running,
        Op::Resume => {
            if lock == LockState::Full && state == S::Suspended {
                return Err(ResultCode::LOCKED);
            }
            state == S::Suspended
        }
        Op::PartiallyLock | Op::FullyLock | Op::Unlock => provisioned,
        Op::Delete => true,
        Op::FirmwareDownload | Op::FirmwareDownloadAndUpdate => {
            provisioned && state != S::Provisioning
        }
        Op::FirmwareUpdate => provisioned && firmware_ready && state != S::Provisioning,
    };
    if allowed {
        Ok(())
    } else {
        Err(ResultCode::NOT_ALLOWED_IN_STATE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Origin {
        Origin::Server {
            source: "./VirMO/VM/a/Operations/Start".into(),
            correlator: None,
        }
    }

    #[test]
    fn the_state_table() {
        use Operation as Op;
        use VmState as S;
        let ok = |op, state| check(op, state, LockState::Unlocked, true, false, &server());
        assert_eq!(ok(Op::Start, S::Stopped), Ok(()));
        assert_eq!(
            ok(Op::Start, S::Running),
            Err(ResultCode::NOT_ALLOWED_IN_STATE)
        );
        assert_eq!(ok(Op::Suspend, S::Running), Ok(()));
        assert_eq!(
            ok(Op::Suspend, S::Stopped),
            Err(ResultCode::NOT_ALLOWED_IN_STATE)
        );
        assert_eq!(ok(Op::Resume, S::Suspended), Ok(()));
        assert_eq!(
            ok(Op::Resume, S::Running),
            Err(ResultCode::NOT_ALLOWED_IN_STATE)
        );
        assert_eq!(
            ok(Op::Stop, S::Suspended),
            Err(ResultCode::NOT_ALLOWED_IN_STATE)
        );
        assert_eq!(
            ok(Op::Provision, S::Stopped),
            Err(ResultCode::NOT_ALLOWED_IN_STATE)
        );
        assert_eq!(ok(Op::Delete, S::Running), Ok(()));
        assert_eq!(
            ok(Op::FirmwareUpdate, S::Stopped),
            Err(ResultCode::NOT_ALLOWED_IN_STATE)
        );
        assert_eq!(
            check(
                Op::Start,
                S::Stopped,
                LockState::Unlocked,
                false,
                false,
                &server()
            ),
            Err(ResultCode::NOT_ALLOWED_IN_STATE),
            "nothing installed"
        );
        assert_eq!(
            check(
                Op::Provision,
                S::Provisioning,
                LockState::Unlocked,
                false,
                false,
                &server()
            ),
            Ok(())
        );
    }

    #[test]
    fn locks() {
        use Operation as Op;
        use VmState as S;
        assert_eq!(
            check(
                Op::Start,
                S::Stopped,
                LockState::Partial,
                true,
                false,
                &Origin::Local
            ),
            Err(ResultCode::LOCKED)
        );
        assert_eq!(
            check(
                Op::Start,
                S::Stopped,
                LockState::Partial,
                true,
                false,
                &server()
            ),
            Ok(())
        );
        assert_eq!(
            check(
                Op::Start,
                S::Stopped,
                LockState::Full,
                true,
                false,
                &server()
            ),
            Err(ResultCode::LOCKED)
        );
        assert_eq!(
            check(
                Op::Stop,
                S::Running,
                LockState::Full,
                true,
                false,
                &server()
            ),
            Ok(())
        );
    }
}
