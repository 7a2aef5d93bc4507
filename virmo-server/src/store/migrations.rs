//! Versioned schema migrations, one SQL file per version and backend
//! (`virmo-server/migrations/{sqlite,postgres}/NNNN_name.sql`), applied in order at start-up and
//! recorded in `schema_migrations`. On PostgreSQL an advisory lock keeps two server processes
//! starting at once from migrating together.

use sqlx::{AnyPool, Row};

use super::{Backend, StoreError};

/// One schema version.
struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sqlite: include_str!("../../migrations/sqlite/0001_init.sql"),
        postgres: include_str!("../../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "cancel_retention",
        sqlite: include_str!("../../migrations/sqlite/0002_cancel_retention.sql"),
        postgres: include_str!("../../migrations/postgres/0002_cancel_retention.sql"),
    },
];

/// The advisory lock key of migrations ("virmo" in ASCII).
const PG_LOCK: i64 = 0x0076_6972_6d6f;

/// The newest version this server knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the schema to [`latest`].
pub async fn run(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await.map_err(StoreError::Open)?;
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(PG_LOCK)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::Open)?;
    }
    let result = apply(&mut conn, backend).await;
    if backend == Backend::Postgres {
        // The lock also ends with the connection should this fail.
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(PG_LOCK)
            .execute(&mut *conn)
            .await;
    }
    result
}

async fn apply(conn: &mut sqlx::AnyConnection, backend: Backend) -> Result<(), StoreError> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await
    .map_err(StoreError::Open)?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::Open)?
        .try_get("v")
        .map_err(StoreError::Open)?;
    if current > latest() {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known: latest(),
        });
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        let failed = |source| StoreError::Migration {
            version: migration.version,
            name: migration.name,
            source,
        };
        let sql = match backend {
            Backend::Sqlite => migration.sqlite,
            Backend::Postgres => migration.postgres,
        };
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(failed)?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(migration.version)
        .bind(migration.name)
        .bind(crate::clock::Clock::now(&crate::clock::SystemClock))
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "schema migrated"
        );
    }
    Ok(())
}
