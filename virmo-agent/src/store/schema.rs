//! The database schema, as versioned migrations (`PRAGMA user_version` is the number applied).
//! A migration is never edited once released: add the next one.

/// Migration `i` takes the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE vms (
        id TEXT PRIMARY KEY,
        node TEXT NOT NULL UNIQUE,
        state INTEGER NOT NULL,
        record TEXT NOT NULL
    );
    CREATE TABLE peripherals (
        vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        dev_id TEXT NOT NULL,
        class TEXT NOT NULL,
        allowed INTEGER NOT NULL,
        PRIMARY KEY (vm_id, dev_id)
    );
    CREATE TABLE secrets (
        vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (vm_id, kind)
    );
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        vm_id TEXT NOT NULL,
        op TEXT NOT NULL,
        step TEXT NOT NULL,
        correlator TEXT,
        source TEXT,
        params TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        result INTEGER
    );
    CREATE INDEX jobs_unfinished ON jobs(finished_at) WHERE finished_at IS NULL;
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_type TEXT NOT NULL,
        source TEXT,
        correlator TEXT,
        format TEXT NOT NULL,
        mark TEXT,
        data TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL
    );
    CREATE TABLE account (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        record TEXT NOT NULL
    );
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    // 2: each VM's vsock CID (its host channel), unique among the VMs; filled in by the agent
    // for VMs that had none.
    "ALTER TABLE vms ADD COLUMN cid INTEGER;
    CREATE UNIQUE INDEX vms_cid ON vms(cid);",
];

/// The schema version this build writes.
pub fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}
