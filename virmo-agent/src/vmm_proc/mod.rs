//! VMM processes: starting one (`vmm` command line, or `vmm --restore`), finding one again after
//! an agent restart, and noticing when one ends. The agent talks to a running VMM only through
//! its API socket ([`vmm::api::client::VmmClient`]).
//!
//! A VMM must outlive the agent: it runs in its own process group, its console goes to a file
//! (`console.log`), its stderr to `vmm.log`, and its console input is a FIFO (`console.in`)
//! that it holds open itself, so nothing it uses ends with the agent.
//!
//! Run as root, the agent jails every VMM (`vmm --jail`, [`Jailer`], docs/security.md): the
//! process it starts and records is then the VMM's keeper, outside the jail; the jailed VMM is
//! its child, PID 1 of a namespace of its own, with the same command line.

mod jail;
mod proc_stat;
mod spawn;
pub mod tap;

pub use jail::{JailError, Jailer, VmmJail};
pub use proc_stat::{find_by_api_socket, in_our_pid_namespace, process_start_time, ProcState};
pub use spawn::{last_reason, Launch, VmmDevice, VmmProcess, MAX_VSOCK_PATH};

use std::time::Duration;

/// Why a VMM could not be started or reached.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot prepare the VM's files")]
    Files(#[source] std::io::Error),
    #[error("cannot prepare the VMM's jail")]
    Jail(#[from] JailError),
    #[error("cannot start {bin}")]
    Spawn {
        bin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the socket path {0} is too long for a Unix socket (use a shorter data directory)")]
    SocketPathTooLong(String),
    #[error("the VMM exited before its API came up: {0}")]
    ExitedEarly(String),
    #[error("the VMM's API did not come up")]
    NotReady(#[source] vmm::api::client::ClientError),
}

/// How a VMM process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// The exit status, when the agent is the VMM's parent (else unknown).
    pub code: Option<i32>,
    /// The VMM's last `vmm: …` line on stderr (why the VM stopped).
    pub reason: String,
}

impl ExitInfo {
    /// How a VMM that is not the agent's child ended, as far as its log tells.
    pub fn from_log(vmm_log: &std::path::Path) -> Self {
        Self {
            code: None,
            reason: last_reason(vmm_log),
        }
    }

    /// The guest stopped on its own or on request (powered off, rebooted, stopped, suspended),
    /// not a crash.
    pub fn is_clean(&self) -> bool {
        match self.code {
            Some(code) => code == 0,
            None => [
                "powered off",
                "rebooted",
                "stopped on request",
                "stopped by force",
                "suspended",
            ]
            .iter()
            .any(|clean| self.reason.contains(clean)),
        }
    }
}

/// How often a VMM's liveness is polled while waiting for it to end.
pub const POLL: Duration = Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_exits() {
        let exit = |code, reason: &str| ExitInfo {
            code,
            reason: reason.into(),
        };
        assert!(exit(Some(0), "").is_clean());
        assert!(!exit(Some(2), "the guest powered off").is_clean());
        assert!(exit(None, "vmm: the guest powered off").is_clean());
        assert!(!exit(None, "vmm: the guest kernel panicked").is_clean());
        assert!(!exit(None, "").is_clean());
    }
}
