//! Reading the mirror's SQLite file.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension};
use serde_json::Value;

pub fn open_db(path: &Path) -> Connection {
    let c = Connection::open(path).expect("open database");
    c.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    c
}

/// The columns the contract defines for `users`, in contract order.
pub const USER_COLUMNS: &str = "clerk_id, email, first_name, last_name, username, image_url, external_id, created_at, updated_at, deleted_at, data";

#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub clerk_id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    pub external_id: Option<String>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    pub deleted_at: Option<i64>,
    pub data: Option<String>,
}

impl UserRow {
    pub fn data_json(&self) -> Option<Value> {
        self.data
            .as_deref()
            .map(|d| serde_json::from_str(d).expect("users.data is JSON"))
    }
}

pub fn user_row(c: &Connection, clerk_id: &str) -> Option<UserRow> {
    c.query_row(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE clerk_id = ?1"),
        [clerk_id],
        |r| {
            Ok(UserRow {
                clerk_id: r.get(0)?,
                email: r.get(1)?,
                first_name: r.get(2)?,
                last_name: r.get(3)?,
                username: r.get(4)?,
                image_url: r.get(5)?,
                external_id: r.get(6)?,
                created_at: r.get(7)?,
                updated_at: r.get(8)?,
                deleted_at: r.get(9)?,
                data: r.get(10)?,
            })
        },
    )
    .optional()
    .expect("query users")
}

/// Every contract column of every row, ordered by clerk_id, as raw SQLite values.
pub fn all_users(c: &Connection) -> Vec<Vec<SqlValue>> {
    let mut st = c
        .prepare(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY clerk_id"
        ))
        .expect("prepare");
    let rows = st
        .query_map([], |r| (0..11).map(|i| r.get::<_, SqlValue>(i)).collect())
        .expect("query");
    rows.map(|r| r.expect("row")).collect()
}

pub fn count(c: &Connection, table: &str) -> i64 {
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

/// (type, received_at) of a webhook_events row.
pub fn event_row(c: &Connection, id: &str) -> Option<(String, i64)> {
    c.query_row(
        "SELECT type, received_at FROM webhook_events WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .expect("query webhook_events")
}

pub fn event_count_for(c: &Connection, id: &str) -> i64 {
    c.query_row(
        "SELECT count(*) FROM webhook_events WHERE id = ?1",
        [id],
        |r| r.get(0),
    )
    .expect("count webhook_events")
}
