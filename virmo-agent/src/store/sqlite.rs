//! [`Store`] on an embedded SQLite database (WAL journal, `synchronous=FULL`: a committed batch
//! survives a crash or power loss; `secure_delete`: deleted secrets and records are overwritten
//! in the file, not left in free pages).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::schema::{current_version, MIGRATIONS};
use super::{
    AccountRecord, AlertRecord, Applied, Change, JobRecord, Peripheral, Store, StoreError,
    StoredAlert, VmRecord,
};
use crate::model::{unix_now, Operation};

/// The SQLite store. One connection, used by one thread at a time.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it to this build's schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        Self::setup(conn)
    }

    /// A database in memory (tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > current_version() {
        return Err(StoreError::TooNew {
            found,
            supported: current_version(),
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
        tracing::info!(version = index + 1, "database schema migrated");
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(corrupt)
}

fn save_vm(tx: &Transaction<'_>, vm: &VmRecord, insert: bool) -> Result<(), StoreError> {
    let record = to_json(vm)?;
    if insert {
        let taken: Option<String> = tx
            .query_row("SELECT id FROM vms WHERE node = ?1", [&vm.node], |r| {
                r.get(0)
            })
            .optional()?;
        if taken.is_some() {
            return Err(StoreError::NodeTaken(vm.node.clone()));
        }
        tx.execute(
            "INSERT INTO vms (id, node, state, record, cid) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![vm.id, vm.node, vm.state.code(), record, vm.cid],
        )?;
    } else {
        tx.execute(
            "UPDATE vms SET node = ?2, state = ?3, record = ?4, cid = ?5 WHERE id = ?1",
            params![vm.id, vm.node, vm.state.code(), record, vm.cid],
        )?;
    }
    Ok(())
}

fn apply_change(
    tx: &Transaction<'_>,
    change: Change,
    applied: &mut Applied,
) -> Result<(), StoreError> {
    match change {
        Change::InsertVm(vm) => save_vm(tx, &vm, true)?,
        Change::SaveVm(vm) => save_vm(tx, &vm, false)?,
        Change::SetPeripherals { vm_id, peripherals } => {
            tx.execute("DELETE FROM peripherals WHERE vm_id = ?1", [&vm_id])?;
            for (position, p) in peripherals.iter().enumerate() {
                tx.execute(
                    "INSERT INTO peripherals (vm_id, position, dev_id, class, allowed) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![vm_id, position as i64, p.id, p.class, p.allowed],
                )?;
            }
        }
        Change::ForgetVm(vm_id) => {
            tx.execute("DELETE FROM secrets WHERE vm_id = ?1", [&vm_id])?;
            tx.execute("DELETE FROM peripherals WHERE vm_id = ?1", [&vm_id])?;
            tx.execute("DELETE FROM vms WHERE id = ?1", [&vm_id])?;
        }
        Change::SetSecret { vm_id, kind, value } => match value {
            Some(value) => {
                tx.execute(
                    "INSERT INTO secrets (vm_id, kind, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (vm_id, kind) DO UPDATE SET value = excluded.value",
                    params![vm_id, kind, value],
                )?;
            }
            None => {
                tx.execute(
                    "DELETE FROM secrets WHERE vm_id = ?1 AND kind = ?2",
                    params![vm_id, kind],
                )?;
            }
        },
        Change::InsertJob {
            vm_id,
            op,
            step,
            correlator,
            source,
            params,
        } => {
            tx.execute(
                "INSERT INTO jobs (vm_id, op, step, correlator, source, params, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    vm_id,
                    op.key(),
                    step,
                    correlator,
                    source,
                    to_json(&params)?,
                    unix_now()
                ],
            )?;
            applied.jobs.push(tx.last_insert_rowid());
        }
        Change::SetJobStep { id, step, params } => {
            tx.execute(
                "UPDATE jobs SET step = ?2, params = ?3 WHERE id = ?1",
                params![id, step, to_json(&params)?],
            )?;
        }
        Change::FinishJob { id, result } => {
            tx.execute(
                "UPDATE jobs SET finished_at = ?2, result = ?3 WHERE id = ?1",
                params![id, unix_now(), result.0],
            )?;
        }
        Change::EnqueueAlert(alert) => {
            let now = unix_now();
            tx.execute(
                "INSERT INTO alerts (alert_type, source, correlator, format, mark, data, created_at, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                params![
                    alert.alert_type,
                    alert.source,
                    alert.correlator,
                    alert.format,
                    alert.mark,
                    alert.data,
                    now
                ],
            )?;
            applied.alerts.push(tx.last_insert_rowid());
        }
    }
    Ok(())
}

impl Store for SqliteStore {
    fn apply(&self, changes: Vec<Change>) -> Result<Applied, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut applied = Applied::default();
        for change in changes {
            apply_change(&tx, change, &mut applied)?;
        }
        tx.commit()?;
        Ok(applied)
    }

    fn vms(&self) -> Result<Vec<(VmRecord, Vec<Peripheral>)>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare("SELECT record FROM vms ORDER BY rowid")?;
        let records = statement
            .query_map([], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut peripherals = conn.prepare(
            "SELECT dev_id, class, allowed FROM peripherals WHERE vm_id = ?1 ORDER BY position",
        )?;
        records
            .into_iter()
            .map(|text| {
                let vm: VmRecord = serde_json::from_str(&text).map_err(corrupt)?;
                let list = peripherals
                    .query_map([&vm.id], |row| {
                        Ok(Peripheral {
                            id: row.get(0)?,
                            class: row.get(1)?,
                            allowed: row.get(2)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((vm, list))
            })
            .collect()
    }

    fn secret(&self, vm_id: &str, kind: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT value FROM secrets WHERE vm_id = ?1 AND kind = ?2",
                params![vm_id, kind],
                |row| row.get(0),
            )
            .optional()?)
    }

    fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(
            "SELECT id, vm_id, op, step, correlator, source, params, started_at FROM jobs
             WHERE finished_at IS NULL ORDER BY id",
        )?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, Option<String>>(5)?,
                    row.get::<_, String>(6)?,
                    row.get::<_, i64>(7)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(
                |(id, vm_id, op, step, correlator, source, params, started_at)| {
                    Ok(JobRecord {
                        id,
                        vm_id,
                        op: Operation::from_key(&op)
                            .ok_or_else(|| corrupt(format!("unknown operation `{op}`")))?,
                        step,
                        correlator,
                        source,
                        params: serde_json::from_str(&params).map_err(corrupt)?,
                        started_at,
                    })
                },
            )
            .collect()
    }

    fn alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(
            "SELECT id, alert_type, source, correlator, format, mark, data, created_at, attempts,
                    next_attempt_at FROM alerts ORDER BY id",
        )?;
        let rows = statement
            .query_map([], |row| {
                Ok(AlertRecord {
                    id: row.get(0)?,
                    alert: StoredAlert {
                        alert_type: row.get(1)?,
                        source: row.get(2)?,
                        correlator: row.get(3)?,
                        format: row.get(4)?,
                        mark: row.get(5)?,
                        data: row.get(6)?,
                    },
                    created_at: row.get(7)?,
                    attempts: row.get(8)?,
                    next_attempt_at: row.get(9)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn alert_delivered(&self, id: i64) -> Result<(), StoreError> {
        self.lock()
            .execute("DELETE FROM alerts WHERE id = ?1", [id])?;
        Ok(())
    }

    fn alert_failed(&self, id: i64, next_attempt_at: i64) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE alerts SET attempts = attempts + 1, next_attempt_at = ?2 WHERE id = ?1",
            params![id, next_attempt_at],
        )?;
        Ok(())
    }

    fn account(&self) -> Result<Option<AccountRecord>, StoreError> {
        let text: Option<String> = self
            .lock()
            .query_row("SELECT record FROM account WHERE id = 1", [], |row| {
                row.get(0)
            })
            .optional()?;
        text.map(|t| serde_json::from_str(&t).map_err(corrupt))
            .transpose()
    }

    fn save_account(&self, account: &AccountRecord) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO account (id, record) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET record = excluded.record",
            [to_json(account)?],
        )?;
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()?)
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ResultCode, VmState};
    use crate::test_support::TempDir;

    fn vm(node: &str) -> VmRecord {
        VmRecord::new(crate::model::new_uuid(), node.to_owned())
    }

    fn alert(data: &str) -> StoredAlert {
        StoredAlert {
            alert_type: "urn:oma:at:virmo:1.0:OperationComplete".into(),
            source: Some("./VirMO/VM/a/Operations/Start".into()),
            correlator: Some("c1".into()),
            format: "int".into(),
            mark: None,
            data: data.into(),
        }
    }

    #[test]
    fn vms_peripherals_and_secrets_round_trip_and_are_forgotten_together() {
        let store = SqliteStore::in_memory().unwrap();
        let mut a = vm("a");
        store.apply(vec![Change::InsertVm(a.clone())]).unwrap();
        assert!(matches!(
            store.apply(vec![Change::InsertVm(vm("a"))]),
            Err(StoreError::NodeTaken(_))
        ));
        a.state = VmState::Stopped;
        a.resources.cpu_quota = 50;
        let peripherals = vec![
            Peripheral {
                id: "disk0".into(),
                class: "storage".into(),
                allowed: true,
            },
            Peripheral {
                id: "rng0".into(),
                class: "entropy".into(),
                allowed: false,
            },
        ];
        store
            .apply(vec![
                Change::SaveVm(a.clone()),
                Change::SetPeripherals {
                    vm_id: a.id.clone(),
                    peripherals: peripherals.clone(),
                },
                Change::SetSecret {
                    vm_id: a.id.clone(),
                    kind: "unlock-code".into(),
                    value: Some("hash".into()),
                },
            ])
            .unwrap();
        assert_eq!(store.vms().unwrap(), vec![(a.clone(), peripherals)]);
        assert_eq!(
            store.secret(&a.id, "unlock-code").unwrap().as_deref(),
            Some("hash")
        );
        store.apply(vec![Change::ForgetVm(a.id.clone())]).unwrap();
        assert!(store.vms().unwrap().is_empty());
        assert_eq!(store.secret(&a.id, "unlock-code").unwrap(), None);
    }

    #[test]
    fn a_cid_belongs_to_one_vm_only() {
        let store = SqliteStore::in_memory().unwrap();
        let mut a = vm("a");
        a.cid = Some(3);
        let mut b = vm("b");
        store
            .apply(vec![
                Change::InsertVm(a.clone()),
                Change::InsertVm(b.clone()),
            ])
            .unwrap();
        b.cid = Some(3);
        assert!(store.apply(vec![Change::SaveVm(b.clone())]).is_err());
        b.cid = Some(4);
        store.apply(vec![Change::SaveVm(b.clone())]).unwrap();
        let cids: Vec<_> = store.vms().unwrap().iter().map(|(r, _)| r.cid).collect();
        assert_eq!(cids, [Some(3), Some(4)]);
        // The CID of a forgotten VM is free again.
        store.apply(vec![Change::ForgetVm(a.id.clone())]).unwrap();
        b.cid = Some(3);
        store.apply(vec![Change::SaveVm(b)]).unwrap();
    }

    #[test]
    fn a_failing_batch_changes_nothing() {
        let store = SqliteStore::in_memory().unwrap();
        store.apply(vec![Change::InsertVm(vm("a"))]).unwrap();
        let result = store.apply(vec![
            Change::EnqueueAlert(alert("1200")),
            Change::InsertVm(vm("a")),
        ]);
        assert!(result.is_err());
        assert!(store.alerts().unwrap().is_empty());
    }

    #[test]
    fn jobs_and_alerts_survive_reopening_the_file() {
        let dir = TempDir::new();
        let path = dir.path().join("agent.db");
        let job_id;
        {
            let store = SqliteStore::open(&path).unwrap();
            let applied = store
                .apply(vec![
                    Change::InsertJob {
                        vm_id: "v".into(),
                        op: Operation::Provision,
                        step: "download".into(),
                        correlator: Some("c".into()),
                        source: Some("./VirMO/VM/a/Operations/Provision".into()),
                        params: serde_json::json!({"offset": 10}),
                    },
                    Change::EnqueueAlert(alert("1200")),
                    Change::EnqueueAlert(alert("1403")),
                ])
                .unwrap();
            job_id = applied.jobs[0];
            assert_eq!(applied.alerts.len(), 2);
            store
                .apply(vec![Change::SetJobStep {
                    id: job_id,
                    step: "verify".into(),
                    params: serde_json::json!({}),
                }])
                .unwrap();
            store.alert_delivered(applied.alerts[0]).unwrap();
            store.alert_failed(applied.alerts[1], 99).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let jobs = store.unfinished_jobs().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].id, jobs[0].step.as_str()), (job_id, "verify"));
        let alerts = store.alerts().unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            (
                alerts[0].alert.data.as_str(),
                alerts[0].attempts,
                alerts[0].next_attempt_at
            ),
            ("1403", 1, 99)
        );
        store
            .apply(vec![Change::FinishJob {
                id: job_id,
                result: ResultCode::SUCCESS,
            }])
            .unwrap();
        assert!(store.unfinished_jobs().unwrap().is_empty());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = TempDir::new();
        let path = dir.path().join("agent.db");
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn account_and_meta() {
        let store = SqliteStore::in_memory().unwrap();
        assert!(store.account().unwrap().is_none());
        let account = AccountRecord {
            seed: "s".into(),
            server_url: "http://x/dm".into(),
            server_id: "srv".into(),
            auth_type: "DIGEST".into(),
            client_name: "c".into(),
            client_secret: "cs".into(),
            server_name: "srv".into(),
            server_secret: "ss".into(),
            client_nonce: vec![1, 2],
            server_nonce: vec![3],
            previous_server_nonces: Vec::new(),
        };
        store.save_account(&account).unwrap();
        assert_eq!(store.account().unwrap(), Some(account));
        store.set_meta("dev_id", "virmo:1").unwrap();
        assert_eq!(store.meta("dev_id").unwrap().as_deref(), Some("virmo:1"));
    }
}
