//! Storage behind one trait, [`Store`]: devices and their credentials and nonces, the last known
//! tree of each device, jobs, the statuses and results that answered them, alerts and events.
//!
//! One implementation, [`SqlStore`], serves both backends through sqlx's `Any` driver: embedded
//! SQLite (the default, a file in the data directory) and PostgreSQL (for fleets, several server
//! processes sharing one database). The backend is picked by the URL's scheme ([`open`]); the
//! few statements that differ (the row lock of a job claim, schema types) are chosen by
//! [`Backend`]. Schema changes are versioned migrations per backend ([`migrations`]).

mod migrations;
mod sql;

pub mod conformance;

use async_trait::async_trait;

pub use sql::SqlStore;

use crate::clock::Millis;
use crate::model::{
    AlertRecord, CancelOutcome, Device, DeviceInfo, DeviceSummary, Enrollment, Event, Filter, Job,
    JobTransition, NewAlert, NewJob, Response, SweepReport, TreeNode,
};

/// How many alerts, events and statuses (job responses) are kept, and for how long. Each table
/// keeps at most `max_rows` rows (the newest) and none older than `max_age_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Retention {
    /// Rows older than this are pruned; `None`: no age limit.
    pub max_age_ms: Option<Millis>,
    /// At most this many rows per table; `None`: no count limit.
    pub max_rows: Option<i64>,
    /// Rows deleted per statement: each statement is short, so the sessions' writes (SQLite's
    /// one connection, PostgreSQL's row locks) wait for one batch at most.
    pub batch: i64,
}

impl Default for Retention {
    /// 30 days and 1,000,000 rows per table, deleted 1,000 at a time.
    fn default() -> Self {
        Self {
            max_age_ms: Some(30 * 24 * 3600 * 1000),
            max_rows: Some(1_000_000),
            batch: 1000,
        }
    }
}

/// Rows a pruning pass deleted, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PruneReport {
    pub alerts: u64,
    pub events: u64,
    pub responses: u64,
}

impl PruneReport {
    pub fn total(&self) -> u64 {
        self.alerts + self.events + self.responses
    }
}

/// What asking to cancel a job found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelResult {
    /// Cancelled, or cancel-requested.
    Done(CancelOutcome),
    /// Already finished (done, failed, expired or cancelled): nothing to cancel.
    Finished(Job),
    NoSuchJob,
}

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a URL names (`sqlite:` or `postgres:`/`postgresql:`).
    pub fn of_url(url: &str) -> Option<Self> {
        let scheme = url.split(':').next()?;
        match scheme {
            "sqlite" => Some(Self::Sqlite),
            "postgres" | "postgresql" => Some(Self::Postgres),
            _ => None,
        }
    }
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL `{0}` (expected sqlite:… or postgres://…)")]
    UnsupportedUrl(String),
    #[error("cannot open the database")]
    Open(#[source] sqlx::Error),
    #[error("migration {version} ({name}) failed")]
    Migration {
        version: i64,
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("the database is at schema version {found}, newer than this server knows ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("device `{0}` is already enrolled")]
    AlreadyEnrolled(String),
    #[error("no device `{0}`")]
    NoSuchDevice(String),
    #[error("a stored value is corrupt: {0}")]
    Corrupt(String),
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
}

/// A Status or Results to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewResponse {
    pub device_id: String,
    pub job_id: i64,
    pub command_index: i64,
    pub kind: &'static str,
    pub uri: Option<String>,
    pub status: i64,
    pub items: Vec<TreeNode>,
    pub session: String,
}

/// What a DM session changes on the device's row after a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceContact<'a> {
    pub nonce_client: &'a [u8],
    pub nonce_server: &'a [u8],
    /// Set when the device authenticated (it was seen).
    pub seen_at: Option<Millis>,
    pub dev_info: Option<&'a DeviceInfo>,
}

/// The server's storage. Every method is one transaction; times are given by the caller.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Enrolls a device (fresh nonces); [`StoreError::AlreadyEnrolled`] when its ID is taken.
    async fn enroll(&self, enrollment: &Enrollment, now: Millis) -> Result<Device, StoreError>;
    async fn device(&self, id: &str) -> Result<Option<Device>, StoreError>;
    async fn devices(&self) -> Result<Vec<DeviceSummary>, StoreError>;
    /// Removes a device with its tree, jobs and their responses (alerts and events stay).
    async fn delete_device(&self, id: &str) -> Result<bool, StoreError>;
    /// Saves the nonces (and contact time, DevInfo) after a session's message.
    async fn update_contact(&self, id: &str, contact: DeviceContact<'_>) -> Result<(), StoreError>;

    /// Replaces what is known under `root` (the node and its descendants) with `nodes`.
    async fn replace_subtree(
        &self,
        device_id: &str,
        root: &str,
        nodes: &[TreeNode],
        now: Millis,
    ) -> Result<(), StoreError>;
    /// Sets single nodes (e.g. a State an alert reported).
    async fn set_nodes(
        &self,
        device_id: &str,
        nodes: &[TreeNode],
        now: Millis,
    ) -> Result<(), StoreError>;
    /// The last known tree, sorted by URI.
    async fn tree(&self, device_id: &str) -> Result<Vec<TreeNode>, StoreError>;

    /// Queues a job; with an idempotency key already used for the device, returns that job and
    /// `false`.
    async fn create_job(&self, job: &NewJob, now: Millis) -> Result<(Job, bool), StoreError>;
    async fn job(&self, id: i64) -> Result<Option<Job>, StoreError>;
    async fn jobs(&self, filter: &Filter) -> Result<Vec<Job>, StoreError>;
    /// The device's job with this Correlator.
    async fn job_by_correlator(
        &self,
        device_id: &str,
        correlator: &str,
    ) -> Result<Option<Job>, StoreError>;
    /// Takes the device's next job for `session`: the oldest unfinished job of the device, if
    /// it is `queued` (a device's jobs go one at a time, in order). It becomes `sent`, with a
    /// lease. At most one caller gets a given job, whatever the number of server processes.
    async fn claim_job(
        &self,
        device_id: &str,
        session: &str,
        now: Millis,
    ) -> Result<Option<Job>, StoreError>;
    /// Applies `transition` if the job is in a state it applies to (and, for a `sent` job,
    /// was sent in `session` when given); returns the job as it is then, or `None` when the
    /// transition did not apply.
    async fn transition_job(
        &self,
        id: i64,
        session: Option<&str>,
        transition: &JobTransition,
        now: Millis,
    ) -> Result<Option<Job>, StoreError>;
    /// Applies the timeouts: expired leases, late OperationComplete alerts, delivery deadlines.
    async fn sweep(&self, now: Millis) -> Result<SweepReport, StoreError>;
    /// Cancels a job: a `queued` one becomes `cancelled` and is never sent; a `sent` or
    /// `accepted` one is marked cancel-requested: its outcome is still recorded as it comes,
    /// and it is never queued again (no answer → `cancelled`). A claim and a cancel racing:
    /// exactly one of them wins.
    async fn cancel_job(&self, id: i64, now: Millis) -> Result<CancelResult, StoreError>;
    /// Deletes the alerts, events and statuses past `retention`, in short batches.
    async fn prune(&self, retention: &Retention, now: Millis) -> Result<PruneReport, StoreError>;

    async fn record_response(&self, response: &NewResponse, now: Millis) -> Result<(), StoreError>;
    async fn responses(&self, job_id: i64) -> Result<Vec<Response>, StoreError>;

    /// Records a Generic Alert (before the device gets its 200).
    async fn record_alert(
        &self,
        alert: &NewAlert,
        job_id: Option<i64>,
        now: Millis,
    ) -> Result<i64, StoreError>;
    async fn alerts(&self, filter: &Filter) -> Result<Vec<AlertRecord>, StoreError>;

    async fn record_event(
        &self,
        device_id: Option<&str>,
        job_id: Option<i64>,
        kind: &str,
        detail: &str,
        now: Millis,
    ) -> Result<(), StoreError>;
    async fn events(&self, filter: &Filter) -> Result<Vec<Event>, StoreError>;
}

/// Opens (and migrates) the store a URL names: `sqlite://PATH?mode=rwc`, `sqlite::memory:`,
/// `postgres://user@host/db`, `postgres:///db?host=/run/postgresql`.
pub async fn open(
    url: &str,
    max_connections: u32,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    Ok(std::sync::Arc::new(
        SqlStore::open(url, max_connections).await?,
    ))
}

/// The SQLite URL of the database in a data directory.
pub fn sqlite_url(data_dir: &std::path::Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("virmo-server.db").display()
    )
}

/// A URL with its password hidden (for logs).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_picked_by_scheme_and_passwords_hidden() {
        assert_eq!(Backend::of_url("sqlite::memory:"), Some(Backend::Sqlite));
        assert_eq!(
            Backend::of_url("postgres://u@h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::of_url("postgresql:///db"), Some(Backend::Postgres));
        assert_eq!(Backend::of_url("mysql://h/db"), None);
        assert_eq!(
            redact_url("postgres://virmo:s3cret@db:5432/virmo"),
            "postgres://virmo:<redacted>@db:5432/virmo"
        );
        assert_eq!(redact_url("sqlite:///d/x.db"), "sqlite:///d/x.db");
    }
}

#[cfg(test)]
mod sqlite_tests {
    /// A fresh SQLite file in a temporary directory, removed with it.
    fn temp_db() -> (crate::sim::TempDir, String) {
        let dir = crate::sim::TempDir::new("virmo-store");
        let url = super::sqlite_url(&dir.0);
        (dir, url)
    }

    #[tokio::test]
    async fn the_storage_suite_passes_on_sqlite() {
        let (_dir, url) = temp_db();
        let store = super::open(&url, 4).await.expect("open");
        super::conformance::run_all(store).await;
    }

    #[tokio::test]
    async fn reopening_keeps_the_data_and_does_not_migrate_twice() {
        let (_dir, url) = temp_db();
        let store = super::open(&url, 4).await.expect("open");
        let enrollment = crate::model::Enrollment {
            id: "dev-1".into(),
            auth: crate::model::AuthKind::Hmac,
            client_name: "dev-1".into(),
            client_secret: "a".into(),
            server_name: "srv".into(),
            server_secret: "b".into(),
            notify_addr: None,
        };
        store.enroll(&enrollment, 1).await.expect("enroll");
        drop(store);
        let store = super::open(&url, 4).await.expect("reopen");
        let device = store.device("dev-1").await.expect("read").expect("kept");
        assert_eq!(device.enrollment, enrollment);
    }
}
