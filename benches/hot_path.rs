//! Benches for the two costs every delivery pays: verifying its signature
//! and applying it to the database.
//!
//! Run with `cargo bench --bench hot_path`. The end-to-end throughput
//! benchmark is `examples/loadgen.rs`.

use std::hint::black_box;

use clerk_sync::event::{self, Delivery};
use clerk_sync::signature::Secrets;
use clerk_sync::store as db;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A Clerk-shaped `user.updated` body of about 2 KB.
fn body(user: usize, updated_at: i64) -> Vec<u8> {
    let padding = "x".repeat(1100);
    format!(
        r#"{{"data":{{"id":"user_{user:027}","object":"user","first_name":"Ada","last_name":"Lovelace",
"username":null,"image_url":"https://img.clerk.com/abc","external_id":null,"created_at":1700000000000,
"updated_at":{updated_at},"primary_email_address_id":"idn_{user:027}","email_addresses":[{{"id":"idn_{user:027}",
"object":"email_address","email_address":"ada{user}@example.com","linked_to":[],"verification":{{"status":"verified",
"strategy":"email_code"}}}}],"phone_numbers":[],"external_accounts":[],"public_metadata":{{"note":"{padding}"}},
"private_metadata":{{}},"unsafe_metadata":{{}}}},"object":"event","type":"user.updated","timestamp":{updated_at}}}"#
    )
    .into_bytes()
}

fn verify(c: &mut Criterion) {
    let secrets = Secrets::parse(SECRET).unwrap();
    let body = body(1, 1_700_000_000_000);
    let ts = 1_700_000_000;
    let sig = secrets.sign("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", ts, &body);
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("2KB_delivery", |b| {
        b.iter(|| {
            secrets
                .verify(
                    black_box("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
                    ts,
                    black_box(&sig),
                    black_box(&body),
                    ts,
                    300,
                )
                .unwrap()
        })
    });
    group.bench_function("2KB_parse_event", |b| {
        b.iter(|| event::parse("msg_1".into(), black_box(&body), 0).unwrap())
    });
    group.finish();
}

fn apply(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let conn = db::open_writer(
        &dir.path().join("bench.db"),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let mut n = 0usize;
    let mut next = || -> Delivery {
        n += 1;
        let b = body(n % 1000, 1_700_000_000_000 + n as i64);
        event::parse(format!("msg_{n:027}"), &b, 0).unwrap()
    };
    let mut group = c.benchmark_group("apply");
    // One delivery in its own savepoint, as the writer does, without the
    // commit's fsync: that cost is shared by a whole batch.
    group.bench_function("upsert_in_savepoint", |b| {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        b.iter_batched(
            &mut next,
            |d| {
                conn.execute_batch("SAVEPOINT one").unwrap();
                let outcome = db::Applier::new(&conn).unwrap().apply(&d, 0).unwrap();
                conn.execute_batch("RELEASE one").unwrap();
                outcome
            },
            BatchSize::SmallInput,
        );
        conn.execute_batch("COMMIT").unwrap();
    });
    // The writer's fast path: a batch of deliveries straight into one
    // transaction and its commit, WAL frames included. The fsync is left out
    // (synchronous=OFF here only): it is the disk's time, not the CPU's.
    const BATCH: usize = 64;
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch_of_64_committed", |b| {
        b.iter_batched(
            || (0..BATCH).map(|_| next()).collect::<Vec<_>>(),
            |batch| {
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                let mut applier = db::Applier::new(&conn).unwrap();
                for d in &batch {
                    applier.apply(d, 0).unwrap();
                }
                drop(applier);
                conn.execute_batch("COMMIT").unwrap();
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, verify, apply);
criterion_main!(benches);
