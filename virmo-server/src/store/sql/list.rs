//! List queries (jobs, alerts, events) from a [`Filter`], and typed parameters for queries
//! built at run time.

use sqlx::any::AnyRow;
use sqlx::{AnyPool, AssertSqlSafe};

use crate::model::Filter;
use crate::store::StoreError;

/// A list query's WHERE, ORDER and LIMIT from a filter, with its parameters in order.
pub(super) struct ListQuery {
    conditions: Vec<String>,
    params: Vec<Param>,
}

pub(super) enum Param {
    Text(String),
    Int(i64),
    /// An absent integer.
    Null,
}

pub(super) fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    params: &[Param],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for param in params {
        query = match param {
            Param::Text(text) => query.bind(text.clone()),
            Param::Int(value) => query.bind(*value),
            Param::Null => query.bind(None::<i64>),
        };
    }
    query
}

impl ListQuery {
    pub(super) fn new(filter: &Filter, device_col: bool, state_col: bool) -> Self {
        let mut query = Self {
            conditions: Vec::new(),
            params: Vec::new(),
        };
        if let (true, Some(device)) = (device_col, &filter.device_id) {
            query.push("device_id = $", Param::Text(device.clone()));
        }
        if let (true, Some(state)) = (state_col, filter.state) {
            query.push("state = $", Param::Text(state.as_str().to_owned()));
        }
        if let Some(after) = filter.after_id {
            query.push("id > $", Param::Int(after));
        }
        query
    }

    fn push(&mut self, condition: &str, param: Param) {
        self.params.push(param);
        self.conditions
            .push(format!("{condition}{}", self.params.len()));
    }

    pub(super) fn sql(&self, cols: &str, table: &str, filter: &Filter) -> String {
        let mut sql = format!("SELECT {cols} FROM {table}");
        if !self.conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&self.conditions.join(" AND "));
        }
        let limit = filter.limit.unwrap_or(100).clamp(1, 100_000);
        let order = if filter.after_id.is_some() {
            "ASC"
        } else {
            "DESC"
        };
        sql.push_str(&format!(" ORDER BY id {order} LIMIT {limit}"));
        sql
    }

    pub(super) async fn fetch(
        &self,
        pool: &AnyPool,
        sql: String,
    ) -> Result<Vec<AnyRow>, StoreError> {
        Ok(bind_all(sqlx::query(AssertSqlSafe(sql)), &self.params)
            .fetch_all(pool)
            .await?)
    }
}
