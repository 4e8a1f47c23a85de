//! Applying one delivery, or one object from an import: dedupe on the
//! `svix-id`, change the mirror by the rules of [`super::tables`], record
//! the event and the change, all inside the caller's transaction.

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{
    params, params_from_iter, CachedStatement, Connection, OptionalExtension as _, ToSql,
};

use super::tables::statements;
use crate::event::{Change, Delivery, Field, Kind, Object, Outcome, Tombstone};

const RECORD: &str = "INSERT INTO webhook_events
        (id, type, received_at, object_id, event_timestamp, outcome)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(id) DO NOTHING";

const OUTCOME: &str = "UPDATE webhook_events SET outcome = ?2 WHERE id = ?1";

const CHANGE: &str = "INSERT INTO changes (object_type, object_id, change, source, event_id, at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// The changes rows of an import that one statement writes.
const NOTES_PER_INSERT: usize = 64;

/// `NOTES_PER_INSERT` changes rows of an import: `object_type`,
/// `object_id`, `change` and `at` of each.
static IMPORT_CHANGES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let rows = vec!["(?, ?, ?, 'import', NULL, ?)"; NOTES_PER_INSERT];
    format!(
        "INSERT INTO changes (object_type, object_id, change, source, event_id, at) VALUES {}",
        rows.join(", ")
    )
});

/// A changes row of an import, waiting to be written with others.
struct Note {
    object_type: &'static str,
    id: String,
    change: &'static str,
    at: i64,
}

/// What merging one object did to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// A new row.
    Created,
    /// A tombstone brought back: in the feed and the counts, a creation.
    Revived,
    Updated,
    /// The row already held this very object.
    Unchanged,
    /// The row holds a newer version (or a deletion not older than this).
    Stale,
}

/// Who asks for a change, for the changes feed.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// A delivery, by its `svix-id`.
    Webhook(&'a str),
    Import,
}

impl Origin<'_> {
    fn source(self) -> &'static str {
        match self {
            Origin::Webhook(_) => "webhook",
            Origin::Import => "import",
        }
    }

    fn event_id(self) -> Option<String> {
        match self {
            Origin::Webhook(id) => Some(id.to_owned()),
            Origin::Import => None,
        }
    }
}

/// The values of the columns a tombstone of `kind` keeps, in order.
fn kept_cells(kind: Kind, columns: &[Option<Field>]) -> Vec<Cell<'_>> {
    columns
        .iter()
        .zip(kind.spec().columns)
        .filter(|(_, c)| c.kept)
        .map(|(v, _)| Cell(v))
        .collect()
}

/// A column value as SQLite takes it.
struct Cell<'a>(&'a Option<Field>);

impl ToSql for Cell<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            None => ToSqlOutput::Borrowed(ValueRef::Null),
            Some(Field::Text(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Some(Field::Int(n)) => ToSqlOutput::Borrowed(ValueRef::Integer(*n)),
        })
    }
}

/// Applies deliveries: dedupe on the id, change the mirror, record it.
///
/// Holds the statements every delivery runs for as long as it lives (one
/// batch): rusqlite's statement cache would otherwise find each by its SQL
/// text and put it back on every use, a sixth of the cost of a delivery. The
/// caller wraps each delivery in a transaction or savepoint, so the event row
/// and the user row are written together or not at all.
pub struct Applier<'c> {
    conn: &'c Connection,
    record: CachedStatement<'c>,
    change: CachedStatement<'c>,
    /// The users' prior look-up and upsert, which most deliveries run.
    user_prior: CachedStatement<'c>,
    user_upsert: CachedStatement<'c>,
    /// An import's changes rows, while [`Applier::deferring`]: written
    /// many to a statement by [`Applier::finish`]. Each `INSERT` into
    /// `changes` also rewrites its `AUTOINCREMENT` counter: one statement
    /// per object took a tenth of an import's merging thread.
    deferred: Option<Vec<Note>>,
    /// Whether [`Applier::merge`] first tries a plain insert, which a new
    /// row needs alone, before reading the row it would guard against.
    insert_first: bool,
}

impl<'c> Applier<'c> {
    /// # Errors
    /// When the statements cannot be prepared (the schema is not there).
    pub fn new(conn: &'c Connection) -> rusqlite::Result<Self> {
        let users = statements(Kind::User);
        Ok(Self {
            conn,
            record: conn.prepare_cached(RECORD)?,
            change: conn.prepare_cached(CHANGE)?,
            user_prior: conn.prepare_cached(&users.prior)?,
            user_upsert: conn.prepare_cached(&users.upsert)?,
            deferred: None,
            insert_first: false,
        })
    }

    /// Makes [`Applier::merge`] try a plain insert first: for an import
    /// that mostly brings rows the mirror lacks (a first fill), one
    /// statement instead of a look-up and an upsert. Where the row exists
    /// it costs one look-up more.
    pub fn insert_first(&mut self, yes: bool) {
        self.insert_first = yes;
    }

    /// An applier for an import, whose changes rows wait for
    /// [`Applier::finish`], which must be called before the transaction
    /// ends.
    ///
    /// # Errors
    /// As [`Applier::new`].
    pub fn deferring(conn: &'c Connection) -> rusqlite::Result<Self> {
        let mut applier = Self::new(conn)?;
        applier.deferred = Some(Vec::new());
        Ok(applier)
    }

    /// Writes the changes rows that wait, in the order of their changes.
    ///
    /// # Errors
    /// Any SQLite failure; the caller rolls back.
    pub fn finish(&mut self) -> rusqlite::Result<()> {
        let Some(notes) = self.deferred.as_mut() else {
            return Ok(());
        };
        let notes = std::mem::take(notes);
        let mut chunks = notes.chunks_exact(NOTES_PER_INSERT);
        if chunks.len() > 0 {
            let mut many = self.conn.prepare_cached(&IMPORT_CHANGES)?;
            for chunk in &mut chunks {
                let mut values: Vec<&dyn ToSql> = Vec::with_capacity(4 * chunk.len());
                for n in chunk {
                    values.extend([&n.object_type as &dyn ToSql, &n.id, &n.change, &n.at]);
                }
                many.execute(params_from_iter(values))?;
            }
        }
        for n in chunks.remainder() {
            self.change.execute(params![
                n.object_type,
                n.id,
                n.change,
                Origin::Import.source(),
                None::<String>,
                n.at
            ])?;
        }
        Ok(())
    }

    /// Applies one delivery.
    ///
    /// # Errors
    /// Any SQLite failure; the caller rolls back.
    pub fn apply(&mut self, d: &Delivery, received_at: i64) -> rusqlite::Result<Outcome> {
        // The event row goes in first: its primary key is the dedupe, so the
        // check and the record are one statement. Its outcome is what most
        // deliveries end with, corrected below for the few that end otherwise.
        let expected = match d.change {
            Change::Record => Outcome::Ignored,
            _ => Outcome::Applied,
        };
        let recorded = self.record.execute(params![
            d.id,
            d.event_type,
            received_at,
            d.object_id,
            d.timestamp_ms,
            expected.as_str()
        ])?;
        if recorded == 0 {
            return Ok(Outcome::Duplicate);
        }
        let origin = Origin::Webhook(&d.id);
        let outcome = match &d.change {
            Change::Upsert(object) => match self.merge(object, received_at, origin)? {
                Merge::Stale => Outcome::Stale,
                _ => Outcome::Applied,
            },
            Change::Delete(tombstone) => {
                if self.delete(tombstone, received_at, origin)? {
                    Outcome::Applied
                } else {
                    Outcome::Stale
                }
            }
            Change::Record => Outcome::Ignored,
        };
        if outcome != expected {
            self.conn
                .prepare_cached(OUTCOME)?
                .execute(params![d.id, outcome.as_str()])?;
        }
        Ok(outcome)
    }

    /// Merges `object` into its table by the `updated_at` guard, noting the
    /// change in the feed as made at `at` by `origin`.
    ///
    /// # Errors
    /// Any SQLite failure; the caller rolls back.
    pub fn merge(
        &mut self,
        object: &Object,
        at: i64,
        origin: Origin<'_>,
    ) -> rusqlite::Result<Merge> {
        let sql = statements(object.kind);
        let mut values: Vec<&dyn ToSql> = Vec::with_capacity(object.columns.len() + 4);
        values.push(&object.id);
        let cells: Vec<Cell<'_>> = object.columns.iter().map(Cell).collect();
        values.extend(cells.iter().map(|c| c as &dyn ToSql));
        values.extend([
            &object.created_at as &dyn ToSql,
            &object.updated_at,
            &object.data,
        ]);
        let is_user = object.kind == Kind::User;
        // A row that is not there has nothing to guard: inserting it is the
        // whole merge, as the upsert below would have done.
        if self.insert_first
            && self
                .conn
                .prepare_cached(&sql.insert_absent)?
                .execute(params_from_iter(&values))?
                == 1
        {
            self.note(object.kind, &object.id, "created", at, origin)?;
            return Ok(Merge::Created);
        }
        let prior = self.prior(object.kind, &object.id)?;
        let mut changed = if is_user {
            self.user_upsert.execute(params_from_iter(&values))?
        } else {
            self.conn
                .prepare_cached(&sql.upsert)?
                .execute(params_from_iter(&values))?
        } == 1;
        if !changed && prior.is_some() {
            if let Some(indexed) = &sql.upsert_indexed {
                changed = self
                    .conn
                    .prepare_cached(indexed)?
                    .execute(params_from_iter(&values))?
                    == 1;
            }
        }
        let merge = match prior {
            _ if !changed => match prior {
                Some((updated_at, None)) if updated_at == Some(object.updated_at) => {
                    Merge::Unchanged
                }
                Some((_, Some(_))) => {
                    self.keep_in_tombstone(object)?;
                    Merge::Stale
                }
                _ => Merge::Stale,
            },
            Some((_, None)) => Merge::Updated,
            Some((_, Some(_))) => Merge::Revived,
            None => Merge::Created,
        };
        match merge {
            Merge::Created | Merge::Revived => {
                self.note(object.kind, &object.id, "created", at, origin)?;
            }
            Merge::Updated => self.note(object.kind, &object.id, "updated", at, origin)?,
            Merge::Unchanged | Merge::Stale => {}
        }
        Ok(merge)
    }

    /// Inserts `object` if its table has no row of that id; never changes
    /// a row. For objects without a version of their own (an export file),
    /// which the `updated_at` guard could not order.
    ///
    /// # Errors
    /// Any SQLite failure; the caller rolls back.
    pub fn insert_absent(
        &mut self,
        object: &Object,
        at: i64,
        origin: Origin<'_>,
    ) -> rusqlite::Result<Merge> {
        let mut values: Vec<&dyn ToSql> = vec![&object.id];
        let cells: Vec<Cell<'_>> = object.columns.iter().map(Cell).collect();
        values.extend(cells.iter().map(|c| c as &dyn ToSql));
        // No version: any real one that comes later wins.
        let none: Option<i64> = None;
        values.extend([&object.created_at as &dyn ToSql, &none, &object.data]);
        let inserted = self
            .conn
            .prepare_cached(&statements(object.kind).insert_absent)?
            .execute(params_from_iter(&values))?;
        if inserted == 1 {
            self.note(object.kind, &object.id, "created", at, origin)?;
            Ok(Merge::Created)
        } else {
            Ok(Merge::Unchanged)
        }
    }

    /// Makes `tombstone`'s row a tombstone; whether it changed anything.
    ///
    /// # Errors
    /// Any SQLite failure; the caller rolls back.
    pub fn delete(
        &mut self,
        tombstone: &Tombstone,
        at: i64,
        origin: Origin<'_>,
    ) -> rusqlite::Result<bool> {
        let kept = kept_cells(tombstone.kind, &tombstone.columns);
        let mut values: Vec<&dyn ToSql> = vec![&tombstone.id];
        values.extend(kept.iter().map(|c| c as &dyn ToSql));
        values.push(&tombstone.deleted_at);
        let changed = self
            .conn
            .prepare_cached(&statements(tombstone.kind).delete)?
            .execute(params_from_iter(&values))?
            == 1;
        if changed {
            self.note(tombstone.kind, &tombstone.id, "deleted", at, origin)?;
        }
        Ok(changed)
    }

    /// The row's `updated_at` and `deleted_at`, if there is a row.
    fn prior(
        &mut self,
        kind: Kind,
        id: &str,
    ) -> rusqlite::Result<Option<(Option<i64>, Option<i64>)>> {
        let read = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?));
        if kind == Kind::User {
            self.user_prior.query_row([id], read).optional()
        } else {
            self.conn
                .prepare_cached(&statements(kind).prior)?
                .query_row([id], read)
                .optional()
        }
    }

    fn keep_in_tombstone(&self, object: &Object) -> rusqlite::Result<()> {
        let kept = kept_cells(object.kind, &object.columns);
        let mut values: Vec<&dyn ToSql> = vec![&object.id, &object.updated_at, &object.created_at];
        values.extend(kept.iter().map(|c| c as &dyn ToSql));
        self.conn
            .prepare_cached(&statements(object.kind).tombstone_keeps)?
            .execute(params_from_iter(&values))?;
        Ok(())
    }

    /// One row of the changes feed.
    fn note(
        &mut self,
        kind: Kind,
        id: &str,
        change: &'static str,
        at: i64,
        origin: Origin<'_>,
    ) -> rusqlite::Result<()> {
        if let (Some(deferred), Origin::Import) = (self.deferred.as_mut(), origin) {
            deferred.push(Note {
                object_type: kind.name(),
                id: id.to_owned(),
                change,
                at,
            });
            return Ok(());
        }
        self.change.execute(params![
            kind.name(),
            id,
            change,
            origin.source(),
            origin.event_id(),
            at
        ])?;
        Ok(())
    }
}
