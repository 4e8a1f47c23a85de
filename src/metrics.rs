//! `GET /metrics`: Prometheus / OpenMetrics text.
//!
//! Counters and the latency histogram are updated on the request path (an
//! atomic add each). The database figures (users, tombstones, last applied
//! event, file size) are read only when scraped, from a read connection, so
//! they cost nothing between scrapes and are always true of the file.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::db::{self, Outcome, ReadPool};
use crate::routes::{json_response, Body};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    r#type: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// The types counted under their own name; anything else is `other`, so a
/// flood of made-up types cannot grow the label set without bound.
const KNOWN_PREFIXES: &[&str] = &[
    "user.",
    "session.",
    "organization",
    "email.",
    "sms.",
    "role.",
    "permission.",
    "waitlistEntry.",
    "subscription",
    "paymentAttempt.",
    "invitation.",
];

struct Inner {
    registry: Registry,
    deliveries: Family<DeliveryLabels, Counter>,
    rejections: Family<ReasonLabels, Counter>,
    latency: Histogram,
    commits: Histogram,
    users: Gauge,
    tombstones: Gauge,
    since_applied: Gauge<f64, AtomicU64>,
    db_bytes: Gauge,
    db_path: PathBuf,
}

/// Cheap-to-clone handle to the process's metrics.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Metrics {
    pub fn new(db_path: PathBuf) -> Self {
        let mut registry = Registry::with_prefix("clerk_sync");
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Deliveries accepted, by event type and outcome",
            deliveries.clone(),
        );
        let rejections = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "rejections",
            "Deliveries refused, by reason (malformed_headers, too_large, bad_signature, too_old, too_new, not_an_event, database, body_read, busy)",
            rejections.clone(),
        );
        let latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "request_duration_seconds",
            "Time from request to answer for webhook deliveries",
            latency.clone(),
        );
        // Powers of two up to the writer's largest batch.
        let commits = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "commit_deliveries",
            "Deliveries made durable by each database commit (group commit)",
            commits.clone(),
        );
        let users = Gauge::default();
        registry.register(
            "users",
            "Users in the mirror that exist (not deleted)",
            users.clone(),
        );
        let tombstones = Gauge::default();
        registry.register(
            "tombstones",
            "Deleted users kept as tombstones",
            tombstones.clone(),
        );
        let since_applied = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "seconds_since_last_applied",
            "Seconds since the last delivery that changed the mirror (-1 if none yet)",
            since_applied.clone(),
        );
        let db_bytes = Gauge::default();
        registry.register(
            "database_bytes",
            "Size of the database file and its WAL",
            db_bytes.clone(),
        );
        Self(Arc::new(Inner {
            registry,
            deliveries,
            rejections,
            latency,
            commits,
            users,
            tombstones,
            since_applied,
            db_bytes,
            db_path,
        }))
    }

    /// Counts an accepted delivery.
    pub fn delivery(&self, event_type: &str, outcome: Outcome, latency: Duration) {
        let known = KNOWN_PREFIXES.iter().any(|p| event_type.starts_with(p));
        let labels = DeliveryLabels {
            r#type: if known {
                event_type.to_owned()
            } else {
                "other".to_owned()
            },
            outcome: outcome.as_str().to_owned(),
        };
        self.0.deliveries.get_or_create(&labels).inc();
        self.0.latency.observe(latency.as_secs_f64());
    }

    /// Counts a refused delivery.
    pub fn rejected(&self, reason: &'static str, latency: Duration) {
        let labels = ReasonLabels {
            reason: reason.to_owned(),
        };
        self.0.rejections.get_or_create(&labels).inc();
        self.0.latency.observe(latency.as_secs_f64());
    }

    /// Counts a database commit that made `deliveries` deliveries durable.
    pub fn commit(&self, deliveries: usize) {
        self.0.commits.observe(deliveries as f64);
    }

    /// The text exposition without reading the database: its figures keep
    /// the values of the last scrape. For callers without a read pool.
    ///
    /// # Errors
    /// Only if formatting fails.
    pub fn render_counters(&self) -> anyhow::Result<String> {
        self.0.text()
    }

    /// Reads the database figures and renders everything.
    pub async fn render(&self, readers: &ReadPool) -> Response<Body> {
        let readers = readers.clone();
        let inner = self.0.clone();
        let text = tokio::task::spawn_blocking(move || inner.encode(&readers)).await;
        match text {
            Ok(Ok(text)) => {
                let mut response = Response::new(Body::from(text));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "metrics unavailable");
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({ "ok": false, "error": "database unavailable" }),
                )
            }
            Err(_) => json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({ "ok": false, "error": "internal error" }),
            ),
        }
    }
}

impl Inner {
    fn encode(&self, readers: &ReadPool) -> anyhow::Result<String> {
        let conn = readers.get()?;
        let (users, tombstones) = db::user_counts(&conn)?;
        let last_applied: Option<i64> = conn.query_row(
            "SELECT max(received_at) FROM webhook_events WHERE outcome = 'applied'",
            [],
            |r| r.get(0),
        )?;
        drop(conn);
        self.users.set(users - tombstones);
        self.tombstones.set(tombstones);
        self.since_applied.set(match last_applied {
            Some(ms) => ((db::now_ms() - ms) as f64 / 1000.0).max(0.0),
            None => -1.0,
        });
        self.db_bytes.set(file_bytes(&self.db_path));
        self.text()
    }

    fn text(&self) -> anyhow::Result<String> {
        let mut text = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The main file plus its WAL: what the database costs on disk.
fn file_bytes(path: &std::path::Path) -> i64 {
    i64::try_from(db::file_len(path) + db::file_len(&db::wal_path(path))).unwrap_or(i64::MAX)
}
