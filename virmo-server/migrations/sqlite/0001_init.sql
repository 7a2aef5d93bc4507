-- virmo-server schema, version 1 (SQLite). Times are milliseconds since the Unix epoch.
CREATE TABLE devices (
    id              TEXT PRIMARY KEY,
    auth            TEXT NOT NULL,
    client_name     TEXT NOT NULL,
    client_secret   TEXT NOT NULL,
    server_name     TEXT NOT NULL,
    server_secret   TEXT NOT NULL,
    notify_addr     TEXT,
    nonce_client    BLOB NOT NULL,
    nonce_server    BLOB NOT NULL,
    enrolled_at     INTEGER NOT NULL,
    last_seen_at    INTEGER,
    dev_info        TEXT
);

CREATE TABLE tree_nodes (
    device_id   TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    uri         TEXT NOT NULL,
    format      TEXT NOT NULL,
    value       TEXT,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (device_id, uri)
);

CREATE TABLE jobs (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id           TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    idempotency_key     TEXT,
    operation           TEXT NOT NULL,
    commands            TEXT NOT NULL,
    correlator          TEXT NOT NULL UNIQUE,
    state               TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    max_attempts        INTEGER NOT NULL,
    deliver_within_ms   INTEGER NOT NULL,
    complete_within_ms  INTEGER NOT NULL,
    lease_ms            INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    sent_at             INTEGER,
    lease_until         INTEGER,
    session             TEXT,
    accepted_at         INTEGER,
    complete_by         INTEGER,
    finished_at         INTEGER,
    result_code         INTEGER,
    error               TEXT,
    UNIQUE (device_id, idempotency_key)
);
CREATE INDEX jobs_by_device_state ON jobs (device_id, state, id);
CREATE INDEX jobs_by_state ON jobs (state, id);

CREATE TABLE responses (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id       TEXT NOT NULL,
    job_id          INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    command_index   INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    uri             TEXT,
    status          INTEGER NOT NULL,
    items           TEXT NOT NULL,
    session         TEXT NOT NULL,
    at              INTEGER NOT NULL
);
CREATE INDEX responses_by_job ON responses (job_id, id);

CREATE TABLE alerts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id       TEXT NOT NULL,
    session         TEXT NOT NULL,
    alert_type      TEXT NOT NULL,
    source          TEXT,
    correlator      TEXT,
    format          TEXT NOT NULL,
    mark            TEXT,
    data            TEXT,
    job_id          INTEGER,
    received_at     INTEGER NOT NULL
);
CREATE INDEX alerts_by_device ON alerts (device_id, id);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   TEXT,
    job_id      INTEGER,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX events_by_device ON events (device_id, id);
