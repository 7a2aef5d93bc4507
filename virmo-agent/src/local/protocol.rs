//! The local user's API: one JSON request per line, one JSON response per line. After a
//! successful `console` response the connection carries the console: the VM's output one way,
//! the user's keystrokes the other, until the VM is locked or stops.

use serde::{Deserialize, Serialize};

/// A request of the `virmo` CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// VMs and their states.
    List,
    /// Alerts not yet delivered to the DM server.
    Alerts,
    /// Unlock a VM with the code the server authorised.
    Unlock { vm: String, code: String },
    /// Attach to a VM's console.
    Console { vm: String },
    /// Start a stopped VM (refused while locked).
    Start { vm: String },
    /// Stop a running VM (refused while locked).
    Stop { vm: String },
}

/// One VM in a `list` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSummary {
    pub vm: String,
    pub id: String,
    pub name: String,
    pub state: String,
    pub state_code: u16,
    pub lock: String,
    pub busy: Option<String>,
    pub vcpus: u8,
    pub memory_mib: u64,
    pub pid: Option<u32>,
    pub image: Option<String>,
}

/// One alert in an `alerts` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertSummary {
    pub alert_type: String,
    pub source: Option<String>,
    pub data: String,
    pub attempts: u32,
    pub created_at: i64,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    /// The VirMO result code of a refusal (e.g. 1407: the VM is locked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vms: Option<Vec<VmSummary>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Vec<AlertSummary>>,
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Self {
        Self {
            ok: true,
            message: Some(message.into()),
            ..Self::default()
        }
    }

    pub fn refused(code: u16, error: impl Into<String>) -> Self {
        Self {
            ok: false,
            code: Some(code),
            error: Some(error.into()),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json() {
        let r = Request::Unlock {
            vm: "work".into(),
            code: "1234".into(),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"op":"unlock","vm":"work","code":"1234"}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"start"}"#).is_err());
        let refused = serde_json::to_string(&Response::refused(1407, "locked")).unwrap();
        assert_eq!(refused, r#"{"ok":false,"code":1407,"error":"locked"}"#);
    }
}
