//! The server's data: devices, jobs and their states, alerts, events. Plain data with serde, the
//! same in the store, the admin API and `virmoctl`.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

/// How a device and the server authenticate each other (the same scheme both ways).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    Basic,
    #[default]
    Md5,
    Hmac,
}

impl AuthKind {
    pub fn scheme(self) -> omadm::auth::AuthScheme {
        match self {
            Self::Basic => omadm::auth::AuthScheme::Basic,
            Self::Md5 => omadm::auth::AuthScheme::Md5,
            Self::Hmac => omadm::auth::AuthScheme::Hmac,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::Md5 => "md5",
            Self::Hmac => "hmac",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "basic" => Some(Self::Basic),
            "md5" => Some(Self::Md5),
            "hmac" => Some(Self::Hmac),
            _ => None,
        }
    }
}

/// What `./DevInfo` said in the device's last package 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub dev_id: String,
    pub man: String,
    pub model: String,
    pub dm_version: String,
    pub lang: String,
}

impl From<&omadm::session::DevInfo> for DeviceInfo {
    fn from(info: &omadm::session::DevInfo) -> Self {
        Self {
            dev_id: info.dev_id.clone(),
            man: info.man.clone(),
            model: info.model.clone(),
            dm_version: info.dm_version.clone(),
            lang: info.lang.clone(),
        }
    }
}

/// A device to enroll: its DM identity and the credentials of both directions.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// The device's ID: `./DevInfo/DevId`, the `SyncHdr/Source` of its messages.
    pub id: String,
    pub auth: AuthKind,
    /// The user name the device presents.
    pub client_name: String,
    pub client_secret: String,
    /// The user name the server presents to this device.
    pub server_name: String,
    pub server_secret: String,
    /// `host:port` (UDP) of the device's Pkg#0 listener, if it has one.
    pub notify_addr: Option<String>,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("id", &self.id)
            .field("auth", &self.auth)
            .field("client_name", &self.client_name)
            .field("client_secret", &"<redacted>")
            .field("server_name", &self.server_name)
            .field("server_secret", &"<redacted>")
            .field("notify_addr", &self.notify_addr)
            .finish()
    }
}

/// An enrolled device, as the DM endpoint needs it (secrets and nonces included).
#[derive(Clone, PartialEq, Eq)]
pub struct Device {
    pub enrollment: Enrollment,
    /// The nonce the device's next credentials must use (our last NextNonce to it).
    pub nonce_client: Vec<u8>,
    /// The nonce our credentials use (the device's last NextNonce to us); also the key of our
    /// Pkg#0 digests.
    pub nonce_server: Vec<u8>,
    pub enrolled_at: Millis,
    pub last_seen_at: Option<Millis>,
    pub dev_info: Option<DeviceInfo>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("enrollment", &self.enrollment)
            .field("enrolled_at", &self.enrolled_at)
            .field("last_seen_at", &self.last_seen_at)
            .finish_non_exhaustive()
    }
}

impl Device {
    pub fn id(&self) -> &str {
        &self.enrollment.id
    }

    /// What the admin interfaces show of it (no secrets).
    pub fn summary(&self) -> DeviceSummary {
        DeviceSummary {
            id: self.enrollment.id.clone(),
            auth: self.enrollment.auth,
            notify_addr: self.enrollment.notify_addr.clone(),
            enrolled_at: self.enrolled_at,
            last_seen_at: self.last_seen_at,
            dev_info: self.dev_info.clone(),
        }
    }
}

/// A device without its secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSummary {
    pub id: String,
    pub auth: AuthKind,
    pub notify_addr: Option<String>,
    pub enrolled_at: Millis,
    pub last_seen_at: Option<Millis>,
    pub dev_info: Option<DeviceInfo>,
}

/// One DM command of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum DmCommand {
    Get {
        uri: String,
    },
    Add {
        uri: String,
        format: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
    },
    Replace {
        uri: String,
        format: String,
        value: String,
    },
    Delete {
        uri: String,
    },
    /// Sent with the job's Correlator.
    Exec {
        uri: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
    },
}

impl DmCommand {
    pub fn uri(&self) -> &str {
        match self {
            Self::Get { uri }
            | Self::Add { uri, .. }
            | Self::Replace { uri, .. }
            | Self::Delete { uri }
            | Self::Exec { uri, .. } => uri,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Get { .. } => "Get",
            Self::Add { .. } => "Add",
            Self::Replace { .. } => "Replace",
            Self::Delete { .. } => "Delete",
            Self::Exec { .. } => "Exec",
        }
    }
}

/// Where a job is. See `docs/virmo-server.md`, "Job states".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for the device's next session (and for the device's earlier jobs to finish).
    Queued,
    /// Its commands went out in a session; their statuses are awaited.
    Sent,
    /// The device answered an Exec with 202: the OperationComplete alert is awaited.
    Accepted,
    /// Finished successfully.
    Done,
    /// Finished unsuccessfully: an error status, an error result code, no answer after the
    /// last attempt, or no OperationComplete in time.
    Failed,
    /// Not delivered before its deadline.
    Expired,
    /// Cancelled by an administrator before it was sent (or, cancel requested while it was
    /// sent, the device never answered it): its commands are never sent (again).
    Cancelled,
}

impl JobState {
    pub const ALL: [Self; 7] = [
        Self::Queued,
        Self::Sent,
        Self::Accepted,
        Self::Done,
        Self::Failed,
        Self::Expired,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Accepted => "accepted",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }

    /// Done, failed, expired or cancelled: nothing more happens to the job.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Done | Self::Failed | Self::Expired | Self::Cancelled
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Retries and timeouts of a job, explicit in each job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPolicy {
    /// Sessions the commands may be sent in (a session that ends without their statuses counts).
    pub max_attempts: i64,
    /// The job expires when not delivered this long after it was queued.
    pub deliver_within_ms: Millis,
    /// After a 202, how long the OperationComplete alert may take.
    pub complete_within_ms: Millis,
    /// How long a claimed job stays `sent` without an answer before another session may take it
    /// (a server process that died mid-session).
    pub lease_ms: Millis,
}

impl Default for JobPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            deliver_within_ms: 7 * 24 * 3600 * 1000,
            complete_within_ms: 3600 * 1000,
            lease_ms: 10 * 60 * 1000,
        }
    }
}

/// A job to queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewJob {
    pub device_id: String,
    /// Queuing the same key for the same device twice gives back the first job.
    pub idempotency_key: Option<String>,
    /// What it does, for people: `start work`, `provision work`...
    pub operation: String,
    pub commands: Vec<DmCommand>,
    pub policy: JobPolicy,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: i64,
    pub device_id: String,
    pub idempotency_key: Option<String>,
    pub operation: String,
    pub commands: Vec<DmCommand>,
    /// The Correlator of its Exec commands.
    pub correlator: String,
    pub state: JobState,
    pub attempts: i64,
    pub policy: JobPolicy,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Deadline for delivery (`queued` → `expired` after it).
    pub expires_at: Millis,
    pub sent_at: Option<Millis>,
    /// While `sent`: when another session may take it again.
    pub lease_until: Option<Millis>,
    /// The DM session it was last sent in.
    pub session: Option<String>,
    pub accepted_at: Option<Millis>,
    /// While `accepted`: the deadline of the OperationComplete alert.
    pub complete_by: Option<Millis>,
    pub finished_at: Option<Millis>,
    /// The VirMO result code of the OperationComplete alert, or the failing DM status.
    pub result_code: Option<i64>,
    /// Why it failed, expired or was cancelled.
    pub error: Option<String>,
    /// When an administrator asked to cancel it. A queued job is then `cancelled`; a job
    /// already sent or accepted goes on to its outcome (a DM Exec the device accepted cannot be
    /// withdrawn), and is never sent again.
    #[serde(default)]
    pub cancel_requested_at: Option<Millis>,
}

/// What asking to cancel a job did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "job", rename_all = "snake_case")]
pub enum CancelOutcome {
    /// It was queued: it is now `cancelled` and will never be sent.
    Cancelled(Job),
    /// It was already sent or accepted: marked cancel-requested; its outcome will be recorded
    /// as it comes, and it is never sent again.
    Requested(Job),
}

/// How a job changes state (applied only from the states the transition names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobTransition {
    /// sent → accepted (an Exec got 202).
    Accepted,
    /// sent | accepted → done.
    Done { result_code: Option<i64> },
    /// sent | accepted → failed.
    Failed {
        result_code: Option<i64>,
        error: String,
    },
    /// sent → queued (no answer in that session), or failed when no attempt is left, or
    /// cancelled when an administrator asked meanwhile.
    Unanswered { reason: String },
}

/// A Status or Results a device sent for a job's command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub id: i64,
    pub device_id: String,
    pub job_id: i64,
    /// Which of the job's commands it answers.
    pub command_index: i64,
    /// `Status` or `Results`.
    pub kind: String,
    pub uri: Option<String>,
    /// The DM status code (Results: 200).
    pub status: i64,
    /// The Results items (URI, format, value).
    pub items: Vec<TreeNode>,
    pub session: String,
    pub at: Millis,
}

/// A node of a device's last known tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeNode {
    pub uri: String,
    pub format: String,
    pub value: Option<String>,
}

/// A Generic Alert a device sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAlert {
    pub device_id: String,
    pub session: String,
    pub alert_type: String,
    pub source: Option<String>,
    pub correlator: Option<String>,
    pub format: String,
    pub mark: Option<String>,
    pub data: Option<String>,
}

/// A Generic Alert as stored, with the job it finished (if any).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub id: i64,
    #[serde(flatten)]
    pub alert: NewAlert,
    pub job_id: Option<i64>,
    pub received_at: Millis,
}

/// Something that happened that an administrator may want to see: sessions, refused devices,
/// wrong credentials, malformed messages, retries, timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    pub device_id: Option<String>,
    pub job_id: Option<i64>,
    pub kind: String,
    pub detail: String,
    pub at: Millis,
}

/// What to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub device_id: Option<String>,
    pub state: Option<JobState>,
    /// Only rows with a greater ID (for following a list).
    pub after_id: Option<i64>,
    /// At most this many rows (newest first unless `after_id` is given); default 100.
    pub limit: Option<i64>,
}

/// What a sweep of the timeouts changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    /// `sent` jobs whose lease ran out, queued again.
    pub requeued: u64,
    /// `sent` jobs whose lease ran out at their last attempt.
    pub failed_unanswered: u64,
    /// `accepted` jobs whose OperationComplete did not come in time.
    pub timed_out: u64,
    /// `queued` jobs past their delivery deadline.
    pub expired: u64,
    /// `sent` jobs whose lease ran out after a cancel was asked: cancelled, not queued again.
    #[serde(default)]
    pub cancelled: u64,
}
