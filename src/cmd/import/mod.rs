//! `clerk-sync import`: fill and reconcile the mirror from Clerk's Backend
//! API, or from an export file.
//!
//! Every object goes through the same parser and the same merge rules as a
//! webhook carrying it. Pages are merged on a thread of their own while the
//! next ones are fetched, in transactions of at most 200 ms, so the import
//! keeps up with what Clerk serves and a `serve` writing the same file
//! never waits long. A listing
//! alone never deletes anything: a live row it did not name, created
//! before it began, is looked up on its own, and only Clerk's answer that
//! it is gone makes a tombstone.
//!
//! Here: the command, its exit codes and report, and the listing and file
//! walks. The reconcile of what a listing did not name is in `reconcile`,
//! what someone watching sees in `progress`.

mod merger;
mod progress;
mod reconcile;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use serde_json::json;

use super::print_out;
use crate::cli::ImportArgs;
use crate::event::{self, EventError, Kind, Object};
use crate::import::{self, ApiClient, ApiError, SecretKey, UserFile, MAX_LIMIT};
use crate::store::import::{Counts, Importer, Mode};
use crate::{clock, redact, shutdown};
use merger::Merger;
use progress::Progress;

/// Objects read before they are handed to the merging thread: two API
/// pages. Three batches at most are held (one merged, one waiting, one
/// filling), which bounds the import's memory however many objects there
/// are; how many share a transaction is the store's choice.
const BATCH_OBJECTS: usize = 1000;

/// How an import ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    /// A signal, or a failure after something was committed.
    Stopped,
}

/// Why an import ended early.
enum Failure {
    /// Nothing could be done: exit 2.
    CouldNotStart(String),
    /// What was committed stays: exit 1.
    Partway(String),
}

/// `import`. Exit 0 complete, 1 stopped partway, 2 could not start.
///
/// # Errors
/// Only when the report cannot be written.
pub async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let stopping = Arc::new(AtomicBool::new(false));
    if let Ok(signal) = shutdown::on_signal() {
        let flag = stopping.clone();
        tokio::spawn(async move {
            signal.await;
            tracing::info!("stopping after the page in hand is committed");
            flag.store(true, Ordering::SeqCst);
        });
    }
    let started = clock::now_ms();
    let mut run = Run::new(&args, stopping);
    let source = if args.from_file.is_some() {
        "file"
    } else {
        "api"
    };
    let outcome = match open(&args.db, args.dry_run).await {
        Err(e) => Err(Failure::CouldNotStart(format!("{e:#}"))),
        Ok(importer) => {
            match Merger::spawn(importer.clone()) {
                Ok(merger) => run.merger = Some(merger),
                Err(e) => return could_not_start(&format!("{e:#}")),
            }
            run.importer = Some(importer);
            let id = run
                .store(move |i| i.begin_run(started))
                .await
                .ok()
                .flatten();
            let outcome = match &args.from_file {
                Some(path) => run.file(path).await,
                None => match client(&args) {
                    Ok(client) => run.api(&client).await,
                    Err(e) => Err(e),
                },
            };
            let result = match &outcome {
                Ok(End::Complete) => "complete",
                Ok(End::Stopped) | Err(Failure::Partway(_)) => "stopped",
                Err(Failure::CouldNotStart(_)) => "failed",
            };
            // Every path commits what it merged before it ends; this only
            // makes sure, before the run's own record is written.
            let _ = run.flush().await;
            let report = run.report_json(result, source);
            let _ = run.store(move |i| i.finish_run(id, result, &report)).await;
            outcome
        }
    };
    run.progress.finish();
    let (result, code, problem) = match outcome {
        Ok(End::Complete) => ("complete", 0, None),
        Ok(End::Stopped) => (
            "stopped",
            1,
            Some("stopped by a signal; run it again to complete".to_owned()),
        ),
        Err(Failure::Partway(why)) => ("stopped", 1, Some(why)),
        Err(Failure::CouldNotStart(why)) => ("failed", 2, Some(why)),
    };
    if let Some(why) = &problem {
        tell(why);
    }
    if code != 2 {
        if args.json {
            print_out(&format!("{:#}\n", run.report_json(result, source)))?;
        } else {
            print_out(&run.report_text(result))?;
        }
    }
    Ok(ExitCode::from(code))
}

/// One line on standard error, cut of secrets.
fn tell(why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "clerk-sync: import: {}",
        redact::redact(why)
    );
}

/// Exit 2, having said why.
fn could_not_start(why: &str) -> anyhow::Result<ExitCode> {
    tell(why);
    Ok(ExitCode::from(2))
}

async fn open(db: &Path, dry_run: bool) -> anyhow::Result<Arc<Mutex<Importer>>> {
    let db = db.to_owned();
    let importer = tokio::task::spawn_blocking(move || Importer::open(&db, dry_run)).await??;
    Ok(Arc::new(Mutex::new(importer)))
}

fn client(args: &ImportArgs) -> Result<ApiClient, Failure> {
    let key = SecretKey::load(args.secret_key_file.as_deref())
        .map_err(|e| Failure::CouldNotStart(e.to_string()))?;
    // Every later line of the log and the report is cut of it too.
    redact::remember(key.expose());
    let rate = (args.rate > 0).then_some(args.rate);
    ApiClient::new(&args.api_url, key, rate).map_err(|e| Failure::CouldNotStart(e.to_string()))
}

/// The mirror's object type of an API listing.
fn kind_of(listing: import::Kind) -> Kind {
    match listing {
        import::Kind::Users => Kind::User,
        import::Kind::Organizations => Kind::Organization,
        import::Kind::Memberships => Kind::Membership,
        import::Kind::Invitations => Kind::Invitation,
    }
}

/// Objects read for one hand-over to the merging thread. They are read
/// here, as they come, so that the thread merging the previous batch does
/// only SQLite's work.
#[derive(Default)]
struct Batch {
    objects: Vec<Object>,
    listed: u64,
    invalid: u64,
}

impl Batch {
    /// Reads `text`, one `kind` object; one that cannot be read is named in
    /// the log and counted, and the import goes on.
    fn push(&mut self, kind: Kind, text: String) {
        self.add(kind, read(kind, text, clock::now_ms()));
    }

    /// Takes an object already read, or names in the log why it could not
    /// be and counts it.
    fn add(&mut self, kind: Kind, read: Result<Object, EventError>) {
        match read {
            Ok(object) => {
                self.listed += 1;
                self.objects.push(object);
            }
            Err(e) => self.pass_over(kind, &e),
        }
    }

    /// Reads `text`, one `kind` object, giving it back with the reason when
    /// it cannot be read.
    fn try_push(&mut self, kind: Kind, text: String) -> Result<(), (EventError, String)> {
        let object = event::object_owned(kind, text, clock::now_ms())?;
        self.add(kind, Ok(object));
        Ok(())
    }

    fn pass_over(&mut self, kind: Kind, why: &EventError) {
        tracing::warn!(kind = kind.name(), error = %why, "object passed over");
        self.listed += 1;
        self.invalid += 1;
    }

    fn len(&self) -> usize {
        self.objects.len() + usize::try_from(self.invalid).unwrap_or(usize::MAX)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `text` read as one `kind` object.
fn read(kind: Kind, text: String, now: i64) -> Result<Object, EventError> {
    event::object_owned(kind, text, now).map_err(|(e, _)| e)
}

/// One run's state: the store, the counts, the progress shown.
struct Run {
    importer: Option<Arc<Mutex<Importer>>>,
    merger: Option<Merger>,
    counts: BTreeMap<&'static str, Counts>,
    stopping: Arc<AtomicBool>,
    progress: Progress,
    dry_run: bool,
}

impl Run {
    fn new(args: &ImportArgs, stopping: Arc<AtomicBool>) -> Self {
        Self {
            importer: None,
            merger: None,
            counts: BTreeMap::new(),
            stopping,
            progress: Progress::new(),
            dry_run: args.dry_run,
        }
    }

    /// Whether any page was committed yet.
    fn listed_any(&self) -> bool {
        self.counts.values().any(|c| c.listed > 0)
    }

    fn stopped(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Runs `work` on the importer, off the async workers.
    async fn store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Importer) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let importer = self.importer.clone().context("no database")?;
        tokio::task::spawn_blocking(move || {
            let mut importer = importer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            work(&mut importer)
        })
        .await?
    }

    /// Hands `batch` to the merging thread, waiting while it merges the
    /// one before, and shows what was committed meanwhile.
    async fn merge(&mut self, kind: Kind, batch: Batch, mode: Mode) -> Result<(), Step> {
        if !batch.is_empty() {
            let merger = self.merger.as_ref().ok_or_else(no_database)?;
            merger.merge(kind, batch, mode).await.map_err(Step::Store)?;
        }
        self.show_committed();
        Ok(())
    }

    /// Commits everything merged so far and counts it.
    async fn flush(&mut self) -> Result<(), Step> {
        let merger = self.merger.as_ref().ok_or_else(no_database)?;
        let flushed = merger.flush().await;
        self.show_committed();
        flushed.map_err(Step::Store)
    }

    fn show_committed(&mut self) {
        let committed = self
            .merger
            .as_mut()
            .map(Merger::committed)
            .unwrap_or_default();
        for (kind, counts) in committed {
            self.add(kind, &counts);
        }
    }

    fn add(&mut self, kind: Kind, counts: &Counts) {
        self.counts.entry(kind.name()).or_default().add(counts);
        self.progress.show(kind, &self.counts[kind.name()]);
    }

    /// Every listing, then the reconcile of what it did not name.
    async fn api(&mut self, client: &ApiClient) -> Result<End, Failure> {
        for listing in import::Kind::ALL {
            let kind = kind_of(listing);
            self.counts.entry(kind.name()).or_default();
            let began = clock::now_ms();
            match self.total(client, listing).await {
                Ok(Some(total)) => self.progress.expect(kind, total),
                Ok(None) => {}
                Err(e) => return Err(fail(Step::Api(e), self.listed_any())),
            }
            match self.listing(client, listing).await {
                Ok(End::Complete) => {}
                Ok(End::Stopped) => return Ok(End::Stopped),
                Err(e) => return Err(fail(e, self.listed_any())),
            }
            match self.reconcile(client, kind, began).await {
                Ok(End::Complete) => {}
                Ok(End::Stopped) => return Ok(End::Stopped),
                Err(e) => return Err(fail(e, true)),
            }
        }
        Ok(End::Complete)
    }

    /// How many objects the listing will bring, where Clerk says: for the
    /// progress bar only, so only a refusal of the key is an error.
    async fn total(
        &self,
        client: &ApiClient,
        listing: import::Kind,
    ) -> Result<Option<u64>, ApiError> {
        match listing {
            import::Kind::Users => match client.count_users().await {
                Ok(n) => Ok(Some(n)),
                Err(e) if e.could_not_start() => Err(e),
                Err(_) => Ok(None),
            },
            _ => Ok(None),
        }
    }

    /// One listing, every page, each merged while the next is fetched.
    async fn listing(&mut self, client: &ApiClient, listing: import::Kind) -> Result<End, Step> {
        let kind = kind_of(listing);
        let mut pages = client.pages(listing, MAX_LIMIT);
        let mut batch = Batch::default();
        loop {
            let now = clock::now_ms();
            let next = pages
                .next_page_with(
                    |body| event::objects(kind, body, now),
                    |raw| read(kind, Box::<str>::from(raw).into_string(), now),
                )
                .await;
            let done = match next {
                Ok(Some(page)) => {
                    for read in page {
                        batch.add(kind, read);
                    }
                    false
                }
                Ok(None) => true,
                Err(e) => {
                    // What was fetched is committed before the error is told.
                    self.merge(kind, std::mem::take(&mut batch), Mode::Listing)
                        .await?;
                    self.flush().await?;
                    return Err(Step::Api(e));
                }
            };
            let stopping = self.stopped();
            if batch.len() >= BATCH_OBJECTS || done || stopping {
                self.merge(kind, std::mem::take(&mut batch), Mode::Listing)
                    .await?;
            }
            if done || stopping {
                self.flush().await?;
                return Ok(if done { End::Complete } else { End::Stopped });
            }
        }
    }

    /// Users from a file: merged by the guard, or (from a CSV export, with
    /// no version) inserted only where the mirror lacks them. Each batch is
    /// merged while the next is read.
    async fn file(&mut self, path: &Path) -> Result<End, Failure> {
        let mut file = UserFile::open(path)
            .map_err(|e| Failure::CouldNotStart(format!("{}: {e}", path.display())))?;
        self.counts.entry(Kind::User.name()).or_default();
        let mut batch = Batch::default();
        let mut csv = false;
        let partway = |e: Step| match e {
            Step::Api(e) => Failure::Partway(e.to_string()),
            Step::Store(e) => Failure::Partway(format!("{e:#}")),
        };
        loop {
            let record = file.next();
            let end = record.is_none();
            let broken = match record {
                Some(Ok(mut r)) => {
                    csv = r.from_csv;
                    match batch.try_push(Kind::User, std::mem::take(&mut r.object)) {
                        Ok(()) => None,
                        Err((e, text)) => {
                            // Broken JSON stops the file where it breaks;
                            // a valid value that is no user is passed over.
                            r.object = text;
                            match r.check() {
                                Ok(()) => {
                                    batch.pass_over(Kind::User, &e);
                                    None
                                }
                                Err(broken) => Some(format!("{}: {broken}", path.display())),
                            }
                        }
                    }
                }
                Some(Err(e)) => Some(format!("{}: {e}", path.display())),
                None => None,
            };
            let stopping = self.stopped();
            if batch.len() >= BATCH_OBJECTS || end || broken.is_some() || stopping {
                let mode = if csv { Mode::InsertAbsent } else { Mode::Merge };
                self.merge(Kind::User, std::mem::take(&mut batch), mode)
                    .await
                    .map_err(partway)?;
            }
            if end || broken.is_some() || stopping {
                self.flush().await.map_err(partway)?;
            }
            if let Some(why) = broken {
                return Err(if self.listed_any() {
                    Failure::Partway(why)
                } else {
                    Failure::CouldNotStart(why)
                });
            }
            if end || stopping {
                return Ok(if end { End::Complete } else { End::Stopped });
            }
        }
    }

    fn report_json(&self, result: &str, source: &str) -> serde_json::Value {
        json!({
            "result": result,
            "source": source,
            "dry_run": self.dry_run,
            "types": self.counts,
        })
    }

    fn report_text(&self, result: &str) -> String {
        let mut out = format!(
            "import {result}{}\n{:<14} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8}\n",
            if self.dry_run {
                " (dry run: nothing written)"
            } else {
                ""
            },
            "type",
            "listed",
            "inserted",
            "updated",
            "unchanged",
            "stale",
            "deleted"
        );
        for (kind, c) in &self.counts {
            out.push_str(&format!(
                "{kind:<14} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8}{}\n",
                c.listed,
                c.inserted,
                c.updated,
                c.unchanged,
                c.stale,
                c.deleted,
                if c.invalid > 0 {
                    format!("  ({} invalid, see the log)", c.invalid)
                } else {
                    String::new()
                }
            ));
        }
        out
    }
}

fn no_database() -> Step {
    Step::Store(anyhow::anyhow!("no database"))
}

/// A failure in a step, before it is judged.
enum Step {
    Api(ApiError),
    Store(anyhow::Error),
}

/// A failure as the exit code sees it: nothing started, or partway.
fn fail(step: Step, anything: bool) -> Failure {
    match step {
        Step::Api(e) if e.could_not_start() || !anything => Failure::CouldNotStart(e.to_string()),
        Step::Api(e) => Failure::Partway(e.to_string()),
        Step::Store(e) => Failure::Partway(format!("{e:#}")),
    }
}
