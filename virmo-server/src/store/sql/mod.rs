//! [`SqlStore`]: the [`Store`] on SQLite or PostgreSQL through sqlx's `Any` driver. The SQL is
//! the same for both (`$n` parameters, `RETURNING`, `ON CONFLICT`) except where a backend has
//! something the other lacks: the claim of a job locks its device's row with
//! `FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite runs one writer at a time (one connection).

use async_trait::async_trait;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, AssertSqlSafe, Row};

use super::{
    migrations, Backend, CancelResult, DeviceContact, NewResponse, PruneReport, Retention, Store,
    StoreError,
};
use crate::clock::Millis;
use crate::model::{
    AlertRecord, CancelOutcome, Device, DeviceSummary, Enrollment, Event, Filter, Job,
    JobTransition, NewAlert, NewJob, Response, SweepReport, TreeNode,
};

/// The store on an sqlx pool.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
}

mod list;
mod retention;
mod rows;

use list::{bind_all, ListQuery, Param};
use rows::*;

/// A fresh Correlator: random, so that a device cannot guess another job's (the UNIQUE index
/// guards anyway).
fn new_correlator() -> String {
    format!("virmo-{}", crate::random_hex(12))
}

impl SqlStore {
    /// Connects to `url` and migrates the schema. SQLite gets one connection (one writer; WAL
    /// lets the file be read meanwhile), PostgreSQL up to `max_connections`.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)
            .ok_or_else(|| StoreError::UnsupportedUrl(super::redact_url(url)))?;
        let options = AnyPoolOptions::new().acquire_timeout(std::time::Duration::from_secs(30));
        let options = match backend {
            Backend::Sqlite => options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        sqlx::raw_sql(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                        )
                        .execute(conn)
                        .await?;
                        Ok(())
                    })
                }),
            Backend::Postgres => options.max_connections(max_connections.max(2)),
        };
        let pool = options.connect(url).await.map_err(StoreError::Open)?;
        migrations::run(&pool, backend).await?;
        Ok(Self { pool, backend })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    async fn job_returning(
        &self,
        sql: String,
        binds: Vec<Param>,
    ) -> Result<Option<Job>, StoreError> {
        bind_all(sqlx::query(AssertSqlSafe(sql)), &binds)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(job_of)
            .transpose()
    }
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.backend
    }

    async fn enroll(&self, e: &Enrollment, now: Millis) -> Result<Device, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO devices (id, auth, client_name, client_secret, server_name, \
             server_secret, notify_addr, nonce_client, nonce_server, enrolled_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(e.id.clone())
        .bind(e.auth.as_str())
        .bind(e.client_name.clone())
        .bind(e.client_secret.clone())
        .bind(e.server_name.clone())
        .bind(e.server_secret.clone())
        .bind(e.notify_addr.clone())
        .bind(Vec::<u8>::new())
        .bind(Vec::<u8>::new())
        .bind(now)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                return Err(StoreError::AlreadyEnrolled(e.id.clone()))
            }
            Err(err) => return Err(err.into()),
        }
        self.device(&e.id)
            .await?
            .ok_or_else(|| StoreError::NoSuchDevice(e.id.clone()))
    }

    async fn device(&self, id: &str) -> Result<Option<Device>, StoreError> {
        let sql = format!("SELECT {DEVICE_COLS} FROM devices WHERE id = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(device_of)
            .transpose()
    }

    async fn devices(&self) -> Result<Vec<DeviceSummary>, StoreError> {
        let sql = format!("SELECT {DEVICE_COLS} FROM devices ORDER BY id");
        let mut devices = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| device_of(row).map(|d| d.summary()))
            .collect::<Result<Vec<_>, _>>()?;
        devices.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(devices)
    }

    async fn delete_device(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        for sql in [
            "DELETE FROM responses WHERE device_id = $1",
            "DELETE FROM jobs WHERE device_id = $1",
            "DELETE FROM tree_nodes WHERE device_id = $1",
        ] {
            sqlx::query(sql)
                .bind(id.to_owned())
                .execute(&mut *tx)
                .await?;
        }
        let deleted = sqlx::query("DELETE FROM devices WHERE id = $1")
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }

    async fn update_contact(&self, id: &str, c: DeviceContact<'_>) -> Result<(), StoreError> {
        let dev_info = c
            .dev_info
            .map(|info| serde_json::to_string(info).map_err(corrupt))
            .transpose()?;
        sqlx::query(
            "UPDATE devices SET nonce_client = $2, nonce_server = $3, \
             last_seen_at = COALESCE($4, last_seen_at), dev_info = COALESCE($5, dev_info) \
             WHERE id = $1",
        )
        .bind(id.to_owned())
        .bind(c.nonce_client.to_vec())
        .bind(c.nonce_server.to_vec())
        .bind(c.seen_at)
        .bind(dev_info)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn replace_subtree(
        &self,
        device_id: &str,
        root: &str,
        nodes: &[TreeNode],
        now: Millis,
    ) -> Result<(), StoreError> {
        let prefix = format!("{root}/");
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM tree_nodes WHERE device_id = $1 \
             AND (uri = $2 OR substr(uri, 1, CAST($3 AS INTEGER)) = $4)",
        )
        .bind(device_id.to_owned())
        .bind(root.to_owned())
        .bind(i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX))
        .bind(prefix)
        .execute(&mut *tx)
        .await?;
        upsert_nodes(&mut tx, device_id, nodes, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_nodes(
        &self,
        device_id: &str,
        nodes: &[TreeNode],
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        upsert_nodes(&mut tx, device_id, nodes, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn tree(&self, device_id: &str) -> Result<Vec<TreeNode>, StoreError> {
        let mut nodes =
            sqlx::query("SELECT uri, format, value FROM tree_nodes WHERE device_id = $1")
                .bind(device_id.to_owned())
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(node_of)
                .collect::<Result<Vec<_>, _>>()?;
        // By bytes, whatever the database's collation.
        nodes.sort_by(|a, b| a.uri.cmp(&b.uri));
        Ok(nodes)
    }

    async fn create_job(&self, job: &NewJob, now: Millis) -> Result<(Job, bool), StoreError> {
        if let Some(key) = &job.idempotency_key {
            let sql = format!(
                "SELECT {JOB_COLS} FROM jobs WHERE device_id = $1 AND idempotency_key = $2"
            );
            let existing = sqlx::query(AssertSqlSafe(sql))
                .bind(job.device_id.clone())
                .bind(key.clone())
                .fetch_optional(&self.pool)
                .await?;
            if let Some(row) = existing {
                return Ok((job_of(&row)?, false));
            }
        }
        let commands = serde_json::to_string(&job.commands).map_err(corrupt)?;
        let sql = format!(
            "INSERT INTO jobs (device_id, idempotency_key, operation, commands, correlator, \
             state, attempts, max_attempts, deliver_within_ms, complete_within_ms, lease_ms, \
             created_at, updated_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6, $7, $8, $9, $10, $10, $11) \
             RETURNING {JOB_COLS}"
        );
        let inserted = sqlx::query(AssertSqlSafe(sql))
            .bind(job.device_id.clone())
            .bind(job.idempotency_key.clone())
            .bind(job.operation.clone())
            .bind(commands)
            .bind(new_correlator())
            .bind(job.policy.max_attempts.max(1))
            .bind(job.policy.deliver_within_ms)
            .bind(job.policy.complete_within_ms)
            .bind(job.policy.lease_ms)
            .bind(now)
            .bind(now.saturating_add(job.policy.deliver_within_ms))
            .fetch_one(&self.pool)
            .await;
        match inserted {
            Ok(row) => Ok((job_of(&row)?, true)),
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                Err(StoreError::NoSuchDevice(job.device_id.clone()))
            }
            // Two requests with one key raced: the other one's job is the job.
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                let key = job.idempotency_key.clone().unwrap_or_default();
                let sql = format!(
                    "SELECT {JOB_COLS} FROM jobs WHERE device_id = $1 AND idempotency_key = $2"
                );
                let row = sqlx::query(AssertSqlSafe(sql))
                    .bind(job.device_id.clone())
                    .bind(key)
                    .fetch_one(&self.pool)
                    .await?;
                Ok((job_of(&row)?, false))
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn job(&self, id: i64) -> Result<Option<Job>, StoreError> {
        let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(job_of)
            .transpose()
    }

    async fn jobs(&self, filter: &Filter) -> Result<Vec<Job>, StoreError> {
        let query = ListQuery::new(filter, true, true);
        let sql = query.sql(JOB_COLS, "jobs", filter);
        query
            .fetch(&self.pool, sql)
            .await?
            .iter()
            .map(job_of)
            .collect()
    }

    async fn job_by_correlator(
        &self,
        device_id: &str,
        correlator: &str,
    ) -> Result<Option<Job>, StoreError> {
        let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE device_id = $1 AND correlator = $2");
        sqlx::query(AssertSqlSafe(sql))
            .bind(device_id.to_owned())
            .bind(correlator.to_owned())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(job_of)
            .transpose()
    }

    async fn claim_job(
        &self,
        device_id: &str,
        session: &str,
        now: Millis,
    ) -> Result<Option<Job>, StoreError> {
        const EXPIRE: &str = "UPDATE jobs SET state = 'expired', \
             error = 'not delivered before its deadline', finished_at = $2, updated_at = $2 \
             WHERE device_id = $1 AND state = 'queued' AND expires_at <= $2";
        if self.backend == Backend::Sqlite {
            // One writer at a time: one statement takes the head job if it is queued.
            sqlx::query(EXPIRE)
                .bind(device_id.to_owned())
                .bind(now)
                .execute(&self.pool)
                .await?;
            let claim = format!(
                "UPDATE jobs SET state = 'sent', attempts = attempts + 1, sent_at = $2, \
                 lease_until = $2 + lease_ms, session = $3, updated_at = $2 \
                 WHERE id = (SELECT id FROM jobs WHERE device_id = $1 AND state IN {OPEN_STATES} \
                 ORDER BY id LIMIT 1) AND state = 'queued' AND expires_at > $2 \
                 RETURNING {JOB_COLS}"
            );
            return sqlx::query(AssertSqlSafe(claim))
                .bind(device_id.to_owned())
                .bind(now)
                .bind(session.to_owned())
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(job_of)
                .transpose();
        }
        let mut tx = self.pool.begin().await?;
        // The device's row is the lock of its queue: a claim in another process skips it
        // rather than waiting (that session gets the job; this one gets nothing now).
        let locked = sqlx::query("SELECT id FROM devices WHERE id = $1 FOR UPDATE SKIP LOCKED")
            .bind(device_id.to_owned())
            .fetch_optional(&mut *tx)
            .await?;
        if locked.is_none() {
            tx.commit().await?;
            return Ok(None);
        }
        sqlx::query(EXPIRE)
            .bind(device_id.to_owned())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let head = format!(
            "SELECT id, state FROM jobs WHERE device_id = $1 AND state IN {OPEN_STATES} \
             ORDER BY id LIMIT 1"
        );
        let head = sqlx::query(AssertSqlSafe(head))
            .bind(device_id.to_owned())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(head) = head else {
            tx.commit().await?;
            return Ok(None);
        };
        let (id, state): (i64, String) = (head.try_get("id")?, head.try_get("state")?);
        if state != "queued" {
            tx.commit().await?;
            return Ok(None);
        }
        let claim = format!(
            "UPDATE jobs SET state = 'sent', attempts = attempts + 1, sent_at = $2, \
             lease_until = $2 + lease_ms, session = $3, updated_at = $2 \
             WHERE id = $1 AND state = 'queued' RETURNING {JOB_COLS}"
        );
        let job = sqlx::query(AssertSqlSafe(claim))
            .bind(id)
            .bind(now)
            .bind(session.to_owned())
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(job_of)
            .transpose()?;
        tx.commit().await?;
        Ok(job)
    }

    async fn transition_job(
        &self,
        id: i64,
        session: Option<&str>,
        transition: &JobTransition,
        now: Millis,
    ) -> Result<Option<Job>, StoreError> {
        let mut binds = vec![Param::Int(id), Param::Int(now)];
        let (set, from) = match transition {
            JobTransition::Accepted => (
                "state = 'accepted', accepted_at = $2, complete_by = $2 + complete_within_ms, \
                 lease_until = NULL"
                    .to_owned(),
                "('sent')",
            ),
            JobTransition::Done { result_code } => {
                binds.push(result_code.map_or(Param::Null, Param::Int));
                (
                    "state = 'done', result_code = $3, error = NULL, finished_at = $2, \
                     lease_until = NULL, complete_by = NULL"
                        .to_owned(),
                    "('sent', 'accepted')",
                )
            }
            JobTransition::Failed { result_code, error } => {
                binds.push(result_code.map_or(Param::Null, Param::Int));
                binds.push(Param::Text(error.clone()));
                (
                    "state = 'failed', result_code = $3, error = $4, finished_at = $2, \
                     lease_until = NULL, complete_by = NULL"
                        .to_owned(),
                    "('sent', 'accepted')",
                )
            }
            JobTransition::Unanswered { reason } => {
                binds.push(Param::Text(reason.clone()));
                (
                    "state = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled' \
                     WHEN attempts < max_attempts THEN 'queued' ELSE 'failed' END, \
                     finished_at = CASE WHEN cancel_requested_at IS NULL \
                     AND attempts < max_attempts THEN NULL ELSE $2 END, \
                     error = $3, lease_until = NULL"
                        .to_owned(),
                    "('sent')",
                )
            }
        };
        let mut sql =
            format!("UPDATE jobs SET {set}, updated_at = $2 WHERE id = $1 AND state IN {from}");
        if let Some(session) = session {
            binds.push(Param::Text(session.to_owned()));
            sql.push_str(&format!(
                " AND (state <> 'sent' OR session = ${})",
                binds.len()
            ));
        }
        sql.push_str(&format!(" RETURNING {JOB_COLS}"));
        self.job_returning(sql, binds).await
    }

    async fn sweep(&self, now: Millis) -> Result<SweepReport, StoreError> {
        let run = |sql: &'static str| {
            let pool = self.pool.clone();
            async move {
                sqlx::query(sql)
                    .bind(now)
                    .execute(&pool)
                    .await
                    .map(|done| done.rows_affected())
            }
        };
        Ok(SweepReport {
            // First: a sent job whose cancel was asked is never queued again.
            cancelled: run("UPDATE jobs SET state = 'cancelled', \
                 error = 'cancelled; the device did not answer before the lease expired', \
                 finished_at = $1, lease_until = NULL, updated_at = $1 \
                 WHERE state = 'sent' AND lease_until < $1 AND cancel_requested_at IS NOT NULL")
            .await?,
            failed_unanswered: run("UPDATE jobs SET state = 'failed', \
                 error = 'no answer from the device at the last attempt (lease expired)', \
                 finished_at = $1, lease_until = NULL, updated_at = $1 \
                 WHERE state = 'sent' AND lease_until < $1 AND attempts >= max_attempts")
            .await?,
            requeued: run("UPDATE jobs SET state = 'queued', \
                 error = 'no answer from the device (lease expired); queued again', \
                 lease_until = NULL, updated_at = $1 \
                 WHERE state = 'sent' AND lease_until < $1")
            .await?,
            timed_out: run("UPDATE jobs SET state = 'failed', \
                 error = 'no OperationComplete alert in time', \
                 finished_at = $1, complete_by = NULL, updated_at = $1 \
                 WHERE state = 'accepted' AND complete_by < $1")
            .await?,
            expired: run(
                "UPDATE jobs SET state = 'expired', error = 'not delivered before its deadline', \
                 finished_at = $1, updated_at = $1 \
                 WHERE state = 'queued' AND expires_at <= $1",
            )
            .await?,
        })
    }

    async fn cancel_job(&self, id: i64, now: Millis) -> Result<CancelResult, StoreError> {
        // Each step is one conditional UPDATE; a job moving between them (claimed, or queued
        // again) is caught by the next round.
        for _ in 0..4 {
            let cancel = format!(
                "UPDATE jobs SET state = 'cancelled', cancel_requested_at = $2, \
                 finished_at = $2, updated_at = $2, error = 'cancelled before it was sent' \
                 WHERE id = $1 AND state = 'queued' RETURNING {JOB_COLS}"
            );
            if let Some(job) = self
                .job_returning(cancel, vec![Param::Int(id), Param::Int(now)])
                .await?
            {
                return Ok(CancelResult::Done(CancelOutcome::Cancelled(job)));
            }
            let request = format!(
                "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, $2), \
                 updated_at = $2 WHERE id = $1 AND state IN ('sent', 'accepted') \
                 RETURNING {JOB_COLS}"
            );
            if let Some(job) = self
                .job_returning(request, vec![Param::Int(id), Param::Int(now)])
                .await?
            {
                return Ok(CancelResult::Done(CancelOutcome::Requested(job)));
            }
            match self.job(id).await? {
                None => return Ok(CancelResult::NoSuchJob),
                Some(job) if job.state.is_terminal() => return Ok(CancelResult::Finished(job)),
                Some(_) => continue,
            }
        }
        Err(StoreError::Corrupt(format!(
            "job {id} kept changing state while being cancelled"
        )))
    }

    async fn prune(&self, retention: &Retention, now: Millis) -> Result<PruneReport, StoreError> {
        retention::prune(&self.pool, retention, now).await
    }

    async fn record_response(&self, r: &NewResponse, now: Millis) -> Result<(), StoreError> {
        let items = serde_json::to_string(&r.items).map_err(corrupt)?;
        sqlx::query(
            "INSERT INTO responses (device_id, job_id, command_index, kind, uri, status, items, \
             session, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(r.device_id.clone())
        .bind(r.job_id)
        .bind(r.command_index)
        .bind(r.kind)
        .bind(r.uri.clone())
        .bind(r.status)
        .bind(items)
        .bind(r.session.clone())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn responses(&self, job_id: i64) -> Result<Vec<Response>, StoreError> {
        sqlx::query(
            "SELECT id, device_id, job_id, command_index, kind, uri, status, items, session, at \
             FROM responses WHERE job_id = $1 ORDER BY id",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(response_of)
        .collect()
    }

    async fn record_alert(
        &self,
        a: &NewAlert,
        job_id: Option<i64>,
        now: Millis,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO alerts (device_id, session, alert_type, source, correlator, format, \
             mark, data, job_id, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             RETURNING id",
        )
        .bind(a.device_id.clone())
        .bind(a.session.clone())
        .bind(a.alert_type.clone())
        .bind(a.source.clone())
        .bind(a.correlator.clone())
        .bind(a.format.clone())
        .bind(a.mark.clone())
        .bind(a.data.clone())
        .bind(job_id)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    async fn alerts(&self, filter: &Filter) -> Result<Vec<AlertRecord>, StoreError> {
        let query = ListQuery::new(filter, true, false);
        let sql = query.sql(
            "id, device_id, session, alert_type, source, correlator, format, mark, data, \
             job_id, received_at",
            "alerts",
            filter,
        );
        query
            .fetch(&self.pool, sql)
            .await?
            .iter()
            .map(alert_of)
            .collect()
    }

    async fn record_event(
        &self,
        device_id: Option<&str>,
        job_id: Option<i64>,
        kind: &str,
        detail: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO events (device_id, job_id, kind, detail, at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(device_id.map(str::to_owned))
        .bind(job_id)
        .bind(kind.to_owned())
        .bind(detail.to_owned())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn events(&self, filter: &Filter) -> Result<Vec<Event>, StoreError> {
        let query = ListQuery::new(filter, true, false);
        let sql = query.sql("id, device_id, job_id, kind, detail, at", "events", filter);
        query
            .fetch(&self.pool, sql)
            .await?
            .iter()
            .map(event_of)
            .collect()
    }
}

/// Inserts or replaces nodes, a few hundred rows per statement (the last of a repeated URI
/// wins).
async fn upsert_nodes(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    device_id: &str,
    nodes: &[TreeNode],
    now: Millis,
) -> Result<(), StoreError> {
    let mut unique: std::collections::BTreeMap<&str, &TreeNode> = Default::default();
    for node in nodes {
        unique.insert(node.uri.as_str(), node);
    }
    let unique: Vec<&TreeNode> = unique.into_values().collect();
    for chunk in unique.chunks(500) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| {
                let p = i * 4 + 2;
                format!("($1, ${p}, ${}, ${}, ${})", p + 1, p + 2, p + 3)
            })
            .collect();
        let sql = format!(
            "INSERT INTO tree_nodes (device_id, uri, format, value, updated_at) VALUES {} \
             ON CONFLICT (device_id, uri) DO UPDATE SET format = excluded.format, \
             value = excluded.value, updated_at = excluded.updated_at",
            rows.join(", ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(device_id.to_owned());
        for node in chunk {
            query = query
                .bind(node.uri.clone())
                .bind(node.format.clone())
                .bind(node.value.clone())
                .bind(now);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}
