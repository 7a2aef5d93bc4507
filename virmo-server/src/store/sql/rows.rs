//! Rows to data: the column lists and the decoders of each table's rows.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::model::{
    AlertRecord, AuthKind, Device, DeviceInfo, Enrollment, Event, Job, JobPolicy, JobState,
    NewAlert, Response, TreeNode,
};
use crate::store::StoreError;

pub(super) const DEVICE_COLS: &str =
    "id, auth, client_name, client_secret, server_name, server_secret, \
    notify_addr, nonce_client, nonce_server, enrolled_at, last_seen_at, dev_info";

pub(super) const JOB_COLS: &str =
    "id, device_id, idempotency_key, operation, commands, correlator, state, \
    attempts, max_attempts, deliver_within_ms, complete_within_ms, lease_ms, created_at, \
    updated_at, expires_at, sent_at, lease_until, session, accepted_at, complete_by, \
    finished_at, result_code, error, cancel_requested_at";

/// States in which a job still holds its device's queue.
pub(super) const OPEN_STATES: &str = "('queued', 'sent', 'accepted')";

pub(super) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub(super) fn device_of(row: &AnyRow) -> Result<Device, StoreError> {
    let auth: String = row.try_get("auth")?;
    let dev_info: Option<String> = row.try_get("dev_info")?;
    Ok(Device {
        enrollment: Enrollment {
            id: row.try_get("id")?,
            auth: AuthKind::parse(&auth).ok_or_else(|| corrupt(format!("auth `{auth}`")))?,
            client_name: row.try_get("client_name")?,
            client_secret: row.try_get("client_secret")?,
            server_name: row.try_get("server_name")?,
            server_secret: row.try_get("server_secret")?,
            notify_addr: row.try_get("notify_addr")?,
        },
        nonce_client: row.try_get("nonce_client")?,
        nonce_server: row.try_get("nonce_server")?,
        enrolled_at: row.try_get("enrolled_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        dev_info: dev_info
            .map(|text| serde_json::from_str::<DeviceInfo>(&text).map_err(corrupt))
            .transpose()?,
    })
}

pub(super) fn job_of(row: &AnyRow) -> Result<Job, StoreError> {
    let state: String = row.try_get("state")?;
    let commands: String = row.try_get("commands")?;
    Ok(Job {
        id: row.try_get("id")?,
        device_id: row.try_get("device_id")?,
        idempotency_key: row.try_get("idempotency_key")?,
        operation: row.try_get("operation")?,
        commands: serde_json::from_str(&commands).map_err(corrupt)?,
        correlator: row.try_get("correlator")?,
        state: JobState::parse(&state).ok_or_else(|| corrupt(format!("job state `{state}`")))?,
        attempts: row.try_get("attempts")?,
        policy: JobPolicy {
            max_attempts: row.try_get("max_attempts")?,
            deliver_within_ms: row.try_get("deliver_within_ms")?,
            complete_within_ms: row.try_get("complete_within_ms")?,
            lease_ms: row.try_get("lease_ms")?,
        },
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        expires_at: row.try_get("expires_at")?,
        sent_at: row.try_get("sent_at")?,
        lease_until: row.try_get("lease_until")?,
        session: row.try_get("session")?,
        accepted_at: row.try_get("accepted_at")?,
        complete_by: row.try_get("complete_by")?,
        finished_at: row.try_get("finished_at")?,
        result_code: row.try_get("result_code")?,
        error: row.try_get("error")?,
        cancel_requested_at: row.try_get("cancel_requested_at")?,
    })
}

pub(super) fn node_of(row: &AnyRow) -> Result<TreeNode, StoreError> {
    Ok(TreeNode {
        uri: row.try_get("uri")?,
        format: row.try_get("format")?,
        value: row.try_get("value")?,
    })
}

pub(super) fn alert_of(row: &AnyRow) -> Result<AlertRecord, StoreError> {
    Ok(AlertRecord {
        id: row.try_get("id")?,
        alert: NewAlert {
            device_id: row.try_get("device_id")?,
            session: row.try_get("session")?,
            alert_type: row.try_get("alert_type")?,
            source: row.try_get("source")?,
            correlator: row.try_get("correlator")?,
            format: row.try_get("format")?,
            mark: row.try_get("mark")?,
            data: row.try_get("data")?,
        },
        job_id: row.try_get("job_id")?,
        received_at: row.try_get("received_at")?,
    })
}

pub(super) fn event_of(row: &AnyRow) -> Result<Event, StoreError> {
    Ok(Event {
        id: row.try_get("id")?,
        device_id: row.try_get("device_id")?,
        job_id: row.try_get("job_id")?,
        kind: row.try_get("kind")?,
        detail: row.try_get("detail")?,
        at: row.try_get("at")?,
    })
}

pub(super) fn response_of(row: &AnyRow) -> Result<Response, StoreError> {
    let items: String = row.try_get("items")?;
    Ok(Response {
        id: row.try_get("id")?,
        device_id: row.try_get("device_id")?,
        job_id: row.try_get("job_id")?,
        command_index: row.try_get("command_index")?,
        kind: row.try_get("kind")?,
        uri: row.try_get("uri")?,
        status: row.try_get("status")?,
        items: serde_json::from_str(&items).map_err(corrupt)?,
        session: row.try_get("session")?,
        at: row.try_get("at")?,
    })
}
