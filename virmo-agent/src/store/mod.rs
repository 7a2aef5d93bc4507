//! The agent's storage, behind one trait ([`Store`]); [`SqliteStore`] (embedded SQLite, the
//! database file in the data directory) implements it. Writes go in batches of [`Change`]s,
//! each batch one transaction: a VM's new state and the alert that reports it are stored
//! together or not at all.

mod records;
mod schema;
mod sqlite;

pub use records::*;
pub use sqlite::SqliteStore;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database failed")]
    Sqlite(#[from] rusqlite::Error),
    #[error("a stored record does not decode: {0}")]
    Corrupt(String),
    #[error("the database has schema version {found}, newer than this agent's {supported}")]
    TooNew { found: i64, supported: i64 },
    #[error("a VM with node name `{0}` exists already")]
    NodeTaken(String),
}

/// Everything the agent persists.
pub trait Store: Send + Sync {
    /// Runs `changes` in one transaction.
    fn apply(&self, changes: Vec<Change>) -> Result<Applied, StoreError>;

    /// Every VM (deleting ones included) with its peripherals.
    fn vms(&self) -> Result<Vec<(VmRecord, Vec<Peripheral>)>, StoreError>;

    /// A secret of a VM (e.g. the unlock code's hash).
    fn secret(&self, vm_id: &str, kind: &str) -> Result<Option<String>, StoreError>;

    /// Jobs not finished, oldest first.
    fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError>;

    /// Queued alerts, oldest first.
    fn alerts(&self) -> Result<Vec<AlertRecord>, StoreError>;

    /// The alert was acknowledged by the server: forget it.
    fn alert_delivered(&self, id: i64) -> Result<(), StoreError>;

    /// The alert was not delivered: try again at `next_attempt_at`.
    fn alert_failed(&self, id: i64, next_attempt_at: i64) -> Result<(), StoreError>;

    fn account(&self) -> Result<Option<AccountRecord>, StoreError>;

    fn save_account(&self, account: &AccountRecord) -> Result<(), StoreError>;

    /// A small setting of the agent itself (e.g. its generated device ID).
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError>;

    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError>;
}

/// Shorthand for one change.
pub fn apply_one(store: &dyn Store, change: Change) -> Result<Applied, StoreError> {
    store.apply(vec![change])
}
