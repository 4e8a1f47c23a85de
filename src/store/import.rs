//! The store's side of `clerk-sync import`: merging pages of objects by the
//! same rules as deliveries, in short transactions of their own, and
//! finding the rows a complete listing did not name.
//!
//! Batches of objects share a write transaction for at most 200 ms, so a
//! `serve` writing the same file waits at most that long for the lock.
//!
//! Only a row the import did not create can be missing from a listing, so
//! the ids noted for the reconcile (in a temporary table, not in memory,
//! however many there are) are those of rows that were there before: a
//! first fill notes none, and its reconcile reads none of the rows it just
//! wrote.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rusqlite::{params, Connection, TransactionBehavior};

use super::apply::{Applier, Merge, Origin};
use super::checkpoint::{self, Checkpointer};
use super::open_writer;
use crate::event::{Kind, Object, Tombstone};

/// How long a page waits for the write lock a `serve` holds between its
/// batches: far longer than any batch takes.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// SQLite's page cache for the import's connection, in KiB. 12 MiB was as
/// fast as 16 on 300,000 users, and leaves room for the batches in
/// flight under the import's memory bound.
const IMPORT_CACHE_KIB: i64 = 12 * 1024;

/// What merging did, for one object type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub listed: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub stale: u64,
    pub deleted: u64,
    /// Objects that could not be read (no id, not an object); named in the log.
    pub invalid: u64,
}

impl Counts {
    fn count(&mut self, merge: Merge) {
        match merge {
            Merge::Created | Merge::Revived => self.inserted += 1,
            Merge::Updated => self.updated += 1,
            Merge::Unchanged => self.unchanged += 1,
            Merge::Stale => self.stale += 1,
        }
    }

    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &Counts) {
        self.listed += other.listed;
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.stale += other.stale;
        self.deleted += other.deleted;
        self.invalid += other.invalid;
    }
}

/// How a page's objects are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// From a listing the reconcile follows: by the `updated_at` guard,
    /// noting which rows it named.
    Listing,
    /// By the `updated_at` guard, as a delivery of the same object.
    Merge,
    /// Only where the mirror has no row: objects without a version (an
    /// export file), which must never overwrite one that has.
    InsertAbsent,
}

/// The import's own connection to the mirror.
pub struct Importer {
    conn: Connection,
    dry_run: bool,
    /// Copies committed pages into the database file from another thread,
    /// as for `serve`, so the import's commits rarely stop to checkpoint.
    /// Dropped before the connection (field order): its close can then
    /// fold the log back.
    checkpointer: Option<Checkpointer>,
    /// The write transaction merges go into, while one is open.
    open: Option<Open>,
    /// Where the mirror stood when the import began.
    before: Before,
    /// Per type, by [`Kind::index`]: whether the last batch was mostly
    /// rows the mirror lacked, so the next one tries inserting first.
    mostly_new: [bool; 4],
}

/// The mirror as the import found it: every row the import creates comes
/// after these, so only rows up to them, and rows a webhook wrote since,
/// can be missing from a listing.
struct Before {
    /// The largest rowid of each table, by [`Kind::index`]. The
    /// mirror never deletes a row, so new rows always come above it.
    rowids: [i64; 4],
    /// The last `changes.seq`.
    seq: i64,
}

impl Before {
    fn read(conn: &Connection) -> rusqlite::Result<Self> {
        let mut rowids = [0; 4];
        for (rowid, kind) in rowids.iter_mut().zip(Kind::ALL) {
            let sql = format!("SELECT coalesce(max(rowid), 0) FROM {}", kind.spec().table);
            *rowid = conn.query_row(&sql, [], |r| r.get(0))?;
        }
        let seq = conn.query_row("SELECT coalesce(max(seq), 0) FROM changes", [], |r| {
            r.get(0)
        })?;
        Ok(Self { rowids, seq })
    }

    fn rowid(&self, kind: Kind) -> i64 {
        self.rowids[kind.index()]
    }
}

/// A write transaction several batches share: each commit then rewrites a
/// hot index page once for thousands of objects, rather than once per
/// batch.
struct Open {
    began: Instant,
    objects: usize,
    counts: Vec<(Kind, Counts)>,
}

/// The most objects one transaction takes.
const TX_OBJECTS: usize = 10_000;

/// The longest a transaction stays open, which is the longest a `serve`
/// beside the import waits for the write lock: a small part of its own
/// deadline.
const TX_TIME: Duration = Duration::from_millis(200);

impl Drop for Importer {
    fn drop(&mut self) {
        drop(self.checkpointer.take());
    }
}

impl Importer {
    /// Opens (creating and migrating if need be) the database at `path`.
    /// With `dry_run`, every change is rolled back once counted.
    ///
    /// # Errors
    /// What keeps the file from being written safely.
    pub fn open(path: &Path, dry_run: bool) -> anyhow::Result<Self> {
        let conn = open_writer(path, LOCK_WAIT)?;
        // The indexes of a large mirror then stay in SQLite's cache while
        // hundreds of thousands of rows go in; still well within the
        // import's memory bound.
        conn.pragma_update(None, "cache_size", -IMPORT_CACHE_KIB)?;
        // Each commit is not flushed on its own: the run's last commit
        // ([`Importer::finish_run`]) flushes the log with all of them. A
        // crash loses at most what the next run merges again, and a
        // delivery `serve` commits meanwhile still flushes the log up to
        // itself.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS listed (kind TEXT NOT NULL, id TEXT NOT NULL,
                 PRIMARY KEY (kind, id)) WITHOUT ROWID",
        )
        .context("cannot prepare the import")?;
        let before = Before::read(&conn).context("cannot read the mirror")?;
        let checkpointer = (!dry_run)
            .then(|| Checkpointer::spawn(path, checkpoint::IMPORT_DELAY))
            .flatten();
        Ok(Self {
            conn,
            dry_run,
            checkpointer,
            open: None,
            before,
            mostly_new: [true; 4],
        })
    }

    /// Merges `objects`, all of `kind` and read by
    /// [`crate::event::object`], into the open write transaction (begun
    /// here if none is). `counts` holds what
    /// the caller counted (listed, invalid); what merging did is added,
    /// and [`Importer::commit`] hands them back once they are committed.
    ///
    /// # Errors
    /// When SQLite fails; the open transaction is then rolled back whole.
    pub fn merge(
        &mut self,
        kind: Kind,
        objects: &[Object],
        mode: Mode,
        mut counts: Counts,
    ) -> anyhow::Result<()> {
        if self.open.is_none() {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            self.open = Some(Open {
                began: Instant::now(),
                objects: 0,
                counts: Vec::new(),
            });
        }
        if let Err(e) = self.merge_in_open(kind, objects, mode, &mut counts) {
            self.open = None;
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e);
        }
        if let Some(open) = &mut self.open {
            open.objects += objects.len();
            match open.counts.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, sum)) => sum.add(&counts),
                None => open.counts.push((kind, counts)),
            }
        }
        Ok(())
    }

    fn merge_in_open(
        &mut self,
        kind: Kind,
        objects: &[Object],
        mode: Mode,
        counts: &mut Counts,
    ) -> anyhow::Result<()> {
        let now = crate::clock::now_ms();
        let dry_run = self.dry_run;
        let conn = &self.conn;
        // Only a dry run needs to undo the merge apart from the ids: a
        // savepoint makes SQLite keep a copy of every page it changes.
        if dry_run {
            conn.execute_batch("SAVEPOINT page")?;
        }
        let mut applier = Applier::deferring(conn)?;
        applier.insert_first(self.mostly_new[kind.index()]);
        let mut created = 0;
        // A row this import created is not one the reconcile looks for.
        let mut noted = Vec::new();
        for object in objects {
            let merge = match mode {
                Mode::Listing | Mode::Merge => applier.merge(object, now, Origin::Import)?,
                Mode::InsertAbsent => applier.insert_absent(object, now, Origin::Import)?,
            };
            if merge == Merge::Created {
                created += 1;
            } else if mode == Mode::Listing {
                noted.push(object.id.as_str());
            }
            counts.count(merge);
        }
        applier.finish()?;
        drop(applier);
        self.mostly_new[kind.index()] = 2 * created > objects.len();
        if dry_run {
            conn.execute_batch("ROLLBACK TO page; RELEASE page")?;
        }
        // Noted outside the savepoint, so they stay in a dry run too: it
        // goes on to find what a real one would delete.
        if !noted.is_empty() {
            let mut listed = conn
                .prepare_cached("INSERT OR IGNORE INTO temp.listed (kind, id) VALUES (?1, ?2)")?;
            for id in noted {
                listed.execute(params![kind.name(), id])?;
            }
        }
        Ok(())
    }

    /// Whether the open transaction has grown or lasted enough to commit.
    #[must_use]
    pub fn due(&self) -> bool {
        self.open
            .as_ref()
            .is_some_and(|o| o.objects >= TX_OBJECTS || o.began.elapsed() >= TX_TIME)
    }

    /// Whether a write transaction is open.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Commits the open write transaction, if any: the counts of what it
    /// merged, per type.
    ///
    /// # Errors
    /// When SQLite fails; nothing of the transaction is then written.
    pub fn commit(&mut self) -> anyhow::Result<Vec<(Kind, Counts)>> {
        let Some(open) = self.open.take() else {
            return Ok(Vec::new());
        };
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e.into());
        }
        if let Some(c) = &self.checkpointer {
            c.nudge();
        }
        tracing::debug!(
            objects = open.objects,
            open_ms = open.began.elapsed().as_millis(),
            "import transaction committed"
        );
        Ok(open.counts)
    }

    /// Refuses a write of its own while merged objects wait for their
    /// commit: their counts would be lost with them.
    fn none_open(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.open.is_none(),
            "an import transaction is still open (a bug: it is committed first)"
        );
        Ok(())
    }

    /// The live `kind` rows a complete listing begun at `listing_began`
    /// (ms) did not name and that were created before it: the ones Clerk
    /// may have deleted while no webhook reached the mirror. With their
    /// organization, for memberships. Only rows the mirror held before the
    /// import, or that a webhook wrote since, are read: the listing named
    /// every row the import created.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn unlisted(
        &self,
        kind: Kind,
        listing_began: i64,
    ) -> anyhow::Result<Vec<(String, Option<String>)>> {
        let spec = kind.spec();
        let organization = if kind == Kind::Membership {
            "organization_id"
        } else {
            "NULL"
        };
        // Two arms, so that each reads only its own rows: a range of
        // rowids, and the few rows a webhook wrote while the import ran.
        let sql = format!(
            "SELECT clerk_id, {organization} FROM {table}
             WHERE rowid <= ?3 AND {unlisted}
             UNION
             SELECT clerk_id, {organization} FROM {table}
             WHERE clerk_id IN (SELECT object_id FROM changes
                                WHERE seq > ?4 AND object_type = ?2 AND source = 'webhook')
               AND {unlisted}
             ORDER BY clerk_id",
            table = spec.table,
            unlisted = "deleted_at IS NULL AND (created_at IS NULL OR created_at < ?1)
               AND clerk_id NOT IN (SELECT id FROM temp.listed WHERE kind = ?2)"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let args = params![
            listing_began,
            kind.name(),
            self.before.rowid(kind),
            self.before.seq
        ];
        let rows = stmt.query_map(args, |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Makes tombstones of `ids`, whose deletion Clerk confirmed at `at`
    /// (ms); how many changed.
    ///
    /// # Errors
    /// When SQLite fails; nothing is then written.
    pub fn tombstones(&mut self, kind: Kind, ids: &[String], at: i64) -> anyhow::Result<u64> {
        self.none_open()?;
        let dry_run = self.dry_run;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut deleted = 0;
        {
            let mut applier = Applier::new(&tx)?;
            for id in ids {
                let tombstone = Tombstone {
                    kind,
                    id: id.clone(),
                    columns: vec![None; kind.spec().columns.len()],
                    deleted_at: at,
                };
                if applier.delete(&tombstone, at, Origin::Import)? {
                    deleted += 1;
                }
            }
        }
        if dry_run {
            tx.rollback()?;
        } else {
            tx.commit()?;
        }
        Ok(deleted)
    }

    /// Records that an import began at `started_at` (ms); its row id. A dry
    /// run records nothing.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn begin_run(&self, started_at: i64) -> anyhow::Result<Option<i64>> {
        if self.dry_run {
            return Ok(None);
        }
        self.conn
            .execute("INSERT INTO imports (started_at) VALUES (?1)", [started_at])?;
        Ok(Some(self.conn.last_insert_rowid()))
    }

    /// Records how run `id` ended, with its report, and makes everything
    /// the run committed durable.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn finish_run(
        &self,
        id: Option<i64>,
        result: &str,
        report: &serde_json::Value,
    ) -> anyhow::Result<()> {
        self.none_open()?;
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        if let Some(id) = id {
            self.conn.execute(
                "UPDATE imports SET finished_at = ?2, result = ?3, report = ?4 WHERE id = ?1",
                params![id, crate::clock::now_ms(), result, report.to_string()],
            )?;
        }
        Ok(())
    }
}
