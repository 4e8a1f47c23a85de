//! The process's metrics, encoded as Prometheus / OpenMetrics text.
//!
//! A leaf: it knows nothing of HTTP or SQL. Counters and the latency
//! histogram are updated on the request path (an atomic add each). The
//! database figures are read by the store when `/metrics` is scraped and
//! handed to [`Metrics::encode`], so they cost nothing between scrapes and
//! are always true of the file.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// What the database holds, read when metrics are scraped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorFigures {
    /// Per object type (`user`, `organization`, ...): the rows that exist
    /// and the tombstones.
    pub objects: Vec<(&'static str, i64, i64)>,
    /// When the last delivery that changed the mirror was committed (ms).
    pub last_applied_ms: Option<i64>,
    /// The main file plus its write-ahead log.
    pub bytes: u64,
    /// Milliseconds since the epoch when the figures were read.
    pub now_ms: i64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    r#type: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    object: String,
    state: String,
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
    objects: Family<ObjectLabels, Gauge>,
    since_applied: Gauge<f64, AtomicU64>,
    db_bytes: Gauge,
}

/// Cheap-to-clone handle to the process's metrics.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Metrics {
    pub fn new() -> Self {
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
        let objects = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "mirror_rows",
            "Rows of the mirror by object type (user, organization, membership, invitation) and state (live, deleted)",
            objects.clone(),
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
            objects,
            since_applied,
            db_bytes,
        }))
    }

    /// Counts an accepted delivery.
    pub fn delivery(&self, event_type: &str, outcome: &str, latency: Duration) {
        let known = KNOWN_PREFIXES.iter().any(|p| event_type.starts_with(p));
        let labels = DeliveryLabels {
            r#type: if known {
                event_type.to_owned()
            } else {
                "other".to_owned()
            },
            outcome: outcome.to_owned(),
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

    /// The text exposition, with the database's `figures`.
    ///
    /// # Errors
    /// Only if formatting fails.
    pub fn encode(&self, figures: &MirrorFigures) -> anyhow::Result<String> {
        let inner = &self.0;
        for &(object, live, tombstones) in &figures.objects {
            let labels = |state: &str| ObjectLabels {
                object: object.to_owned(),
                state: state.to_owned(),
            };
            inner.objects.get_or_create(&labels("live")).set(live);
            inner
                .objects
                .get_or_create(&labels("deleted"))
                .set(tombstones);
            if object == "user" {
                inner.users.set(live);
                inner.tombstones.set(tombstones);
            }
        }
        inner.since_applied.set(match figures.last_applied_ms {
            Some(ms) => ((figures.now_ms - ms) as f64 / 1000.0).max(0.0),
            None => -1.0,
        });
        inner
            .db_bytes
            .set(i64::try_from(figures.bytes).unwrap_or(i64::MAX));
        let mut text = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut text, &inner.registry)?;
        Ok(text)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
