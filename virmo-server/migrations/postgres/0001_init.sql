-- virmo-server schema, version 1 (PostgreSQL). Times are milliseconds since the Unix epoch.
CREATE TABLE devices (
    id              TEXT PRIMARY KEY,
    auth            TEXT NOT NULL,
    client_name     TEXT NOT NULL,
    client_secret   TEXT NOT NULL,
    server_name     TEXT NOT NULL,
    server_secret   TEXT NOT NULL,
    notify_addr     TEXT,
    nonce_client    BYTEA NOT NULL,
    nonce_server    BYTEA NOT NULL,
    enrolled_at     BIGINT NOT NULL,
    last_seen_at    BIGINT,
    dev_info        TEXT
);

CREATE TABLE tree_nodes (
    device_id   TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    uri         TEXT NOT NULL,
    format      TEXT NOT NULL,
    value       TEXT,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (device_id, uri)
);

CREATE TABLE jobs (
    id                  BIGSERIAL PRIMARY KEY,
    device_id           TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    idempotency_key     TEXT,
    operation           TEXT NOT NULL,
    commands            TEXT NOT NULL,
    correlator          TEXT NOT NULL UNIQUE,
    state               TEXT NOT NULL,
    attempts            BIGINT NOT NULL DEFAULT 0,
    max_attempts        BIGINT NOT NULL,
    deliver_within_ms   BIGINT NOT NULL,
    complete_within_ms  BIGINT NOT NULL,
    lease_ms            BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    sent_at             BIGINT,
    lease_until         BIGINT,
    session             TEXT,
    accepted_at         BIGINT,
    complete_by         BIGINT,
    finished_at         BIGINT,
    result_code         BIGINT,
    error               TEXT,
    UNIQUE (device_id, idempotency_key)
);
CREATE INDEX jobs_by_device_state ON jobs (device_id, state, id);
CREATE INDEX jobs_by_state ON jobs (state, id);

CREATE TABLE responses (
    id              BIGSERIAL PRIMARY KEY,
    device_id       TEXT NOT NULL,
    job_id          BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    command_index   BIGINT NOT NULL,
    kind            TEXT NOT NULL,
    uri             TEXT,
    status          BIGINT NOT NULL,
    items           TEXT NOT NULL,
    session         TEXT NOT NULL,
    at              BIGINT NOT NULL
);
CREATE INDEX responses_by_job ON responses (job_id, id);

CREATE TABLE alerts (
    id              BIGSERIAL PRIMARY KEY,
    device_id       TEXT NOT NULL,
    session         TEXT NOT NULL,
    alert_type      TEXT NOT NULL,
    source          TEXT,
    correlator      TEXT,
    format          TEXT NOT NULL,
    mark            TEXT,
    data            TEXT,
    job_id          BIGINT,
    received_at     BIGINT NOT NULL
);
CREATE INDEX alerts_by_device ON alerts (device_id, id);

CREATE TABLE events (
    id          BIGSERIAL PRIMARY KEY,
    device_id   TEXT,
    job_id      BIGINT,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX events_by_device ON events (device_id, id);
