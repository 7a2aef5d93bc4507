//! Pruning by [`Retention`]: each of `alerts`, `events` and `responses` loses its rows older
//! than the age limit and those beyond the newest `max_rows`, `batch` rows per statement. Each
//! statement is its own short transaction and the task yields between them, so a DM session's
//! writes wait for one batch at most (SQLite's single connection included).

use sqlx::{AnyPool, AssertSqlSafe, Row};

use crate::clock::Millis;
use crate::store::{PruneReport, Retention, StoreError};

/// A pruned table and its time column.
struct Table {
    name: &'static str,
    at: &'static str,
}

const ALERTS: Table = Table {
    name: "alerts",
    at: "received_at",
};
const EVENTS: Table = Table {
    name: "events",
    at: "at",
};
const RESPONSES: Table = Table {
    name: "responses",
    at: "at",
};

pub(super) async fn prune(
    pool: &AnyPool,
    retention: &Retention,
    now: Millis,
) -> Result<PruneReport, StoreError> {
    Ok(PruneReport {
        alerts: prune_table(pool, &ALERTS, retention, now).await?,
        events: prune_table(pool, &EVENTS, retention, now).await?,
        responses: prune_table(pool, &RESPONSES, retention, now).await?,
    })
}

async fn prune_table(
    pool: &AnyPool,
    table: &Table,
    retention: &Retention,
    now: Millis,
) -> Result<u64, StoreError> {
    let batch = retention.batch.max(1);
    let mut deleted = 0;
    if let Some(max_age) = retention.max_age_ms {
        let sql = format!(
            "DELETE FROM {name} WHERE id IN (SELECT id FROM {name} WHERE {at} < $1 \
             ORDER BY {at} LIMIT $2)",
            name = table.name,
            at = table.at
        );
        deleted += in_batches(pool, &sql, now.saturating_sub(max_age), batch).await?;
    }
    if let Some(max_rows) = retention.max_rows {
        // The newest row to drop: everything up to its ID goes.
        let sql = format!(
            "SELECT id FROM {} ORDER BY id DESC LIMIT 1 OFFSET $1",
            table.name
        );
        let cutoff = sqlx::query(AssertSqlSafe(sql))
            .bind(max_rows.max(0))
            .fetch_optional(pool)
            .await?;
        if let Some(row) = cutoff {
            let cutoff: i64 = row.try_get("id")?;
            let sql = format!(
                "DELETE FROM {name} WHERE id IN (SELECT id FROM {name} WHERE id <= $1 \
                 ORDER BY id LIMIT $2)",
                name = table.name
            );
            deleted += in_batches(pool, &sql, cutoff, batch).await?;
        }
    }
    Ok(deleted)
}

/// Runs a `DELETE … LIMIT $2` with `bound` as `$1` until it deletes less than a batch.
async fn in_batches(pool: &AnyPool, sql: &str, bound: i64, batch: i64) -> Result<u64, StoreError> {
    let mut deleted = 0;
    loop {
        let done = sqlx::query(AssertSqlSafe(sql.to_owned()))
            .bind(bound)
            .bind(batch)
            .execute(pool)
            .await?
            .rows_affected();
        deleted += done;
        if done < u64::try_from(batch).unwrap_or(u64::MAX) {
            return Ok(deleted);
        }
        // Let the sessions waiting for the connection have it between batches.
        tokio::task::yield_now().await;
    }
}
