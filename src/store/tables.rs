//! The statements that change a mirrored table, built once from its
//! [`Spec`]: every object type follows the same rules, so they are written
//! once, here.
//!
//! The guard of every upsert: never go back in time; a tombstone yields
//! only to a version strictly newer than the deletion and not older than
//! the last version seen (a deletion dated in whole seconds can be older
//! than that version, and what is older than the row changes nothing); an
//! equal version applies, as on a live row, unless it is the very object
//! the row already holds, which writes nothing.

use std::fmt::Write as _;
use std::sync::LazyLock;

use crate::event::{Kind, Spec};

/// The statements of one table. Parameters: see each builder.
pub(super) struct Statements {
    /// `?1` id → `updated_at`, `deleted_at`.
    pub prior: String,
    /// Leaves indexed columns be: a row whose indexed values changed is
    /// not touched, and [`Statements::upsert_indexed`] is tried next.
    pub upsert: String,
    /// Also sets the indexed columns; `None` for a table without any.
    pub upsert_indexed: Option<String>,
    /// A version not newer than a tombstone: the row stays deleted, but
    /// what a tombstone keeps takes the newest version seen, so the table
    /// ends the same whatever order versions and deletion came in.
    pub tombstone_keeps: String,
    /// Makes a tombstone, also of an object never seen.
    pub delete: String,
    /// Inserts an object the table lacks; never changes a row.
    pub insert_absent: String,
}

static STATEMENTS: LazyLock<Vec<Statements>> =
    LazyLock::new(|| Kind::ALL.iter().map(|k| build(k.spec())).collect());

/// The statements of `kind`'s table.
pub(super) fn statements(kind: Kind) -> &'static Statements {
    &STATEMENTS[kind.index()]
}

fn build(spec: &Spec) -> Statements {
    let has_indexed = spec.columns.iter().any(|c| c.indexed);
    Statements {
        prior: format!(
            "SELECT updated_at, deleted_at FROM {} WHERE clerk_id = ?1",
            spec.table
        ),
        upsert: upsert(spec, !has_indexed),
        upsert_indexed: has_indexed.then(|| upsert(spec, true)),
        tombstone_keeps: tombstone_keeps(spec),
        delete: delete(spec),
        insert_absent: format!("{} ON CONFLICT(clerk_id) DO NOTHING", insert(spec)),
    }
}

/// `INSERT INTO t (clerk_id, columns.., created_at, updated_at,
/// deleted_at, data) VALUES (?1, ?2.., ?n+2, ?n+3, NULL, ?n+4)`.
fn insert(spec: &Spec) -> String {
    let n = spec.columns.len();
    let mut sql = format!("INSERT INTO {} (clerk_id", spec.table);
    for c in spec.columns {
        let _ = write!(sql, ", {}", c.name);
    }
    sql.push_str(", created_at, updated_at, deleted_at, data) VALUES (?1");
    for i in 0..n {
        let _ = write!(sql, ", ?{}", i + 2);
    }
    let _ = write!(sql, ", ?{}, ?{}, NULL, ?{})", n + 2, n + 3, n + 4);
    sql
}

/// The upsert; parameters as [`insert`]'s. With `set_indexed` false the
/// indexed columns are left out of the `SET` (naming a column in an
/// UPDATE rewrites its index entries even when the value is the same, and
/// most updates leave them be) and required unchanged in the guard.
fn upsert(spec: &Spec, set_indexed: bool) -> String {
    let t = spec.table;
    let mut sql = insert(spec);
    sql.push_str(" ON CONFLICT(clerk_id) DO UPDATE SET ");
    for c in spec.columns.iter().filter(|c| set_indexed || !c.indexed) {
        if c.sticky {
            let _ = write!(sql, "{0} = COALESCE(excluded.{0}, {t}.{0}), ", c.name);
        } else {
            let _ = write!(sql, "{0} = excluded.{0}, ", c.name);
        }
    }
    let _ = write!(
        sql,
        "created_at = COALESCE(excluded.created_at, {t}.created_at), \
         updated_at = excluded.updated_at, deleted_at = NULL, data = excluded.data \
         WHERE (CASE WHEN {t}.deleted_at IS NULL \
                THEN {t}.updated_at IS NULL OR excluded.updated_at >= {t}.updated_at \
                ELSE excluded.updated_at > {t}.deleted_at \
                     AND ({t}.updated_at IS NULL OR excluded.updated_at >= {t}.updated_at) \
                END) \
           AND NOT ({t}.deleted_at IS NULL AND {t}.updated_at IS excluded.updated_at \
                    AND {t}.data IS excluded.data)"
    );
    if !set_indexed {
        for c in spec.columns.iter().filter(|c| c.indexed) {
            let _ = write!(sql, " AND {t}.{0} IS excluded.{0}", c.name);
        }
    }
    sql
}

/// `?1` id, `?2` updated_at, `?3` created_at, then the kept columns.
fn tombstone_keeps(spec: &Spec) -> String {
    let mut sql = format!(
        "UPDATE {} SET updated_at = ?2, created_at = COALESCE(?3, created_at)",
        spec.table
    );
    for (i, c) in spec.columns.iter().filter(|c| c.kept).enumerate() {
        if c.sticky {
            let _ = write!(sql, ", {0} = COALESCE(?{1}, {0})", c.name, i + 4);
        } else {
            let _ = write!(sql, ", {} = ?{}", c.name, i + 4);
        }
    }
    sql.push_str(
        " WHERE clerk_id = ?1 AND deleted_at IS NOT NULL AND ?2 <= deleted_at \
           AND (updated_at IS NULL OR ?2 > updated_at)",
    );
    sql
}

/// `?1` id, then the kept columns, then deleted_at. Deletion is final in
/// Clerk, so it always lands; only a second, earlier one changes nothing.
/// What the deletion says of a kept column stands in only while no version
/// has been seen: once one has, the column is that version's, in whichever
/// order the two arrive.
fn delete(spec: &Spec) -> String {
    let t = spec.table;
    let kept: Vec<_> = spec.columns.iter().filter(|c| c.kept).collect();
    let mut sql = format!("INSERT INTO {t} (clerk_id");
    for c in &kept {
        let _ = write!(sql, ", {}", c.name);
    }
    sql.push_str(", deleted_at) VALUES (?1");
    for i in 0..kept.len() {
        let _ = write!(sql, ", ?{}", i + 2);
    }
    let _ = write!(
        sql,
        ", ?{}) ON CONFLICT(clerk_id) DO UPDATE SET ",
        kept.len() + 2
    );
    for c in spec.columns.iter().filter(|c| !c.kept) {
        let _ = write!(sql, "{} = NULL, ", c.name);
    }
    for c in &kept {
        let _ = write!(
            sql,
            "{0} = CASE WHEN {t}.updated_at IS NULL THEN COALESCE(excluded.{0}, {t}.{0}) \
             ELSE {t}.{0} END, ",
            c.name
        );
    }
    let _ = write!(
        sql,
        "data = NULL, deleted_at = excluded.deleted_at \
         WHERE {t}.deleted_at IS NULL OR excluded.deleted_at > {t}.deleted_at"
    );
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_prepares_against_the_schema() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        super::super::migrate(&conn).unwrap();
        for kind in Kind::ALL {
            let s = statements(kind);
            for sql in [
                &s.prior,
                &s.upsert,
                &s.tombstone_keeps,
                &s.delete,
                &s.insert_absent,
            ]
            .into_iter()
            .chain(s.upsert_indexed.as_ref())
            {
                conn.prepare(sql)
                    .unwrap_or_else(|e| panic!("{kind:?}: {e}\n{sql}"));
            }
        }
    }
}
