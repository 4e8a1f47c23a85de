//! Organizations, memberships and invitations: the published payloads
//! re-signed, the guard, tombstones, the views, and any order of delivery.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rusqlite::types::Value as SqlValue;
use rusqlite::Connection;
use serde_json::{json, Value};

use crate::support::inproc::{self, Settings};
use crate::support::process::run_to_end;
use crate::support::*;

const ORG: &str = "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S";
const MEMBERSHIP: &str = "orgmem_2g7np7Hrk0SN6kj5EDMLDaKNL0S";
const INVITATION: &str = "orginv_2g7np7Hrk0SN6kj5EDMLDaKNL0S";
const MEMBER: &str = "user_2h8op3Isl1QR7tKu5FGNfaLKEoU";
/// The fixtures' envelope timestamp, in seconds.
const FIXTURE_TS_MS: i64 = 1_716_883_200_000;

async fn ok(s: &Endpoint, body: Vec<u8>, what: &str) -> Value {
    let r = s.deliver(&delivery(body)).await;
    assert_status(&r, 200, what);
    r.json().expect("a JSON answer")
}

async fn outcome(s: &Endpoint, body: Vec<u8>, what: &str) -> String {
    ok(s, body, what).await["outcome"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A fixture with `data` changed by `edit`.
fn edited(name: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = fixture_json(&format!("clerk/{name}.json"));
    edit(&mut v["data"]);
    to_body(&v)
}

/// Every row of `table`, all columns, ordered by clerk_id.
fn rows(c: &Connection, table: &str) -> Vec<Vec<SqlValue>> {
    let mut stmt = c
        .prepare(&format!("SELECT * FROM {table} ORDER BY clerk_id"))
        .unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn one<T: rusqlite::types::FromSql>(c: &Connection, sql: &str) -> T {
    c.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// `(object_type, object_id, change, source, event_id IS NOT NULL)` of
/// every changes row, in seq order.
fn changes(c: &Connection) -> Vec<(String, String, String, String, bool)> {
    let mut stmt = c
        .prepare("SELECT object_type, object_id, change, source, event_id IS NOT NULL FROM changes ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[tokio::test]
async fn published_payloads_fill_every_column() {
    let s = inproc::start_default();
    ok(
        &s,
        fixture("clerk/organization.created.json"),
        "org created",
    )
    .await;
    ok(
        &s,
        fixture("clerk/organizationMembership.created.json"),
        "membership created",
    )
    .await;
    ok(
        &s,
        fixture("clerk/organizationInvitation.created.json"),
        "invitation created",
    )
    .await;
    let c = s.db();
    let org: (String, String, String, i64, i64, i64, Option<i64>, String) = c
        .query_row(
            "SELECT name, slug, image_url, members_count, created_at, updated_at, deleted_at, data
             FROM organizations WHERE clerk_id = ?1",
            [ORG],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            },
        )
        .unwrap();
    assert_eq!((org.0.as_str(), org.1.as_str()), ("Acme Corp", "acme-corp"));
    assert_eq!(org.2, "https://img.clerk.com/xxxxxx");
    assert_eq!(
        (org.3, org.4, org.5, org.6),
        (1, FIXTURE_TS_MS, FIXTURE_TS_MS, None)
    );
    assert_eq!(
        serde_json::from_str::<Value>(&org.7).unwrap(),
        fixture_json("clerk/organization.created.json")["data"]
    );
    let m: (String, String, String, i64, i64) = c
        .query_row(
            "SELECT organization_id, user_id, role, created_at, updated_at
             FROM organization_memberships WHERE clerk_id = ?1",
            [MEMBERSHIP],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(
        m,
        (
            ORG.into(),
            MEMBER.into(),
            "org:member".into(),
            FIXTURE_TS_MS,
            FIXTURE_TS_MS
        )
    );
    let i: (String, String, String, String) = c
        .query_row(
            "SELECT organization_id, email_address, role, status FROM organization_invitations
             WHERE clerk_id = ?1",
            [INVITATION],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        i,
        (
            ORG.into(),
            "jane.doe@acme.com".into(),
            "org:member".into(),
            "pending".into()
        )
    );
    assert_eq!(
        changes(&c),
        vec![
            (
                "organization".into(),
                ORG.into(),
                "created".into(),
                "webhook".into(),
                true
            ),
            (
                "membership".into(),
                MEMBERSHIP.into(),
                "created".into(),
                "webhook".into(),
                true
            ),
            (
                "invitation".into(),
                INVITATION.into(),
                "created".into(),
                "webhook".into(),
                true
            ),
        ]
    );
}

#[tokio::test]
async fn updated_at_guards_every_type_equal_applies_older_is_stale() {
    let s = inproc::start_default();
    for (created, updated, table, column, old, new) in [
        (
            "organization.created",
            "organization.updated",
            "organizations",
            "name",
            "Acme Corp",
            "Acme Corp Updated",
        ),
        (
            "organizationMembership.created",
            "organizationMembership.updated",
            "organization_memberships",
            "role",
            "org:member",
            "org:admin",
        ),
        (
            "organizationInvitation.created",
            "organizationInvitation.accepted",
            "organization_invitations",
            "status",
            "pending",
            "accepted",
        ),
    ] {
        let value = |c: &Connection| -> String { one(c, &format!("SELECT {column} FROM {table}")) };
        ok(&s, fixture(&format!("clerk/{updated}.json")), updated).await;
        // The older version, delivered late, changes nothing and says so.
        assert_eq!(
            outcome(&s, fixture(&format!("clerk/{created}.json")), created).await,
            "stale"
        );
        assert_eq!(value(&s.db()), new, "{table} after a late {created}");
        // An equal updated_at applies (Clerk does not always advance it).
        let same_time = edited(updated, |d| d[column] = json!(old));
        assert_eq!(outcome(&s, same_time, "equal updated_at").await, "applied");
        assert_eq!(value(&s.db()), old, "{table}: an equal version applies");
        let stale: String = one(
            &s.db(),
            &format!("SELECT outcome FROM webhook_events WHERE type = '{created}'"),
        );
        assert_eq!(stale, "stale");
    }
}

#[tokio::test]
async fn members_count_is_kept_when_an_object_lacks_it() {
    let s = inproc::start_default();
    ok(
        &s,
        fixture("clerk/organization.updated.json"),
        "with a count",
    )
    .await;
    let without = edited("organization.updated", |d| {
        d.as_object_mut().unwrap().remove("members_count");
        d["name"] = json!("Renamed");
        d["updated_at"] = json!(1_716_883_600_000i64);
    });
    ok(&s, without, "without a count").await;
    let (name, count): (String, i64) = s
        .db()
        .query_row("SELECT name, members_count FROM organizations", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((name.as_str(), count), ("Renamed", 3));
    let with_null = edited("organization.updated", |d| {
        d["members_count"] = Value::Null;
        d["updated_at"] = json!(1_716_883_700_000i64);
    });
    ok(&s, with_null, "a null count").await;
    assert_eq!(
        one::<i64>(&s.db(), "SELECT members_count FROM organizations"),
        3
    );
}

#[tokio::test]
async fn deleted_organizations_and_memberships_stay_as_tombstones() {
    let s = inproc::start_default();
    ok(&s, fixture("clerk/organization.created.json"), "org").await;
    ok(
        &s,
        fixture("clerk/organizationMembership.created.json"),
        "membership",
    )
    .await;
    ok(
        &s,
        fixture("clerk/organization.deleted.json"),
        "org deleted",
    )
    .await;
    ok(
        &s,
        fixture("clerk/organizationMembership.deleted.json"),
        "membership deleted",
    )
    .await;
    let c = s.db();
    let org: (Option<String>, Option<String>, Option<i64>, Option<String>) = c
        .query_row(
            "SELECT name, slug, deleted_at, data FROM organizations",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        org,
        (
            Some("Acme Corp".into()),
            Some("acme-corp".into()),
            Some(FIXTURE_TS_MS),
            None
        )
    );
    let m: (String, String, Option<i64>, Option<String>) = c
        .query_row(
            "SELECT organization_id, user_id, deleted_at, data FROM organization_memberships",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(m, (ORG.into(), MEMBER.into(), Some(FIXTURE_TS_MS), None));
    assert_eq!(count(&c, "active_organizations"), 0);
    assert_eq!(count(&c, "active_memberships"), 0);
    let kinds: Vec<_> = changes(&c).into_iter().map(|c| (c.0, c.2)).collect();
    assert_eq!(
        kinds,
        [
            ("organization", "created"),
            ("membership", "created"),
            ("organization", "deleted"),
            ("membership", "deleted")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );

    // A late create not newer than the deletion does not bring it back ...
    assert_eq!(
        outcome(
            &s,
            fixture("clerk/organization.created.json"),
            "late create"
        )
        .await,
        "stale"
    );
    assert_eq!(count(&s.db(), "active_organizations"), 0);
    // ... a newer version does.
    let newer = edited("organization.updated", |d| {
        d["updated_at"] = json!(FIXTURE_TS_MS + 3_600_000)
    });
    assert_eq!(outcome(&s, newer, "newer version").await, "applied");
    let c = s.db();
    assert_eq!(count(&c, "active_organizations"), 1);
    assert_eq!(
        changes(&c).last().map(|c| (c.0.clone(), c.2.clone())),
        Some(("organization".into(), "created".into())),
        "a tombstone brought back is a creation in the feed"
    );
}

#[tokio::test]
async fn a_deletion_of_an_object_never_seen_leaves_a_tombstone() {
    let s = inproc::start_default();
    ok(
        &s,
        fixture("clerk/organizationMembership.deleted.json"),
        "deleted first",
    )
    .await;
    ok(
        &s,
        fixture("clerk/organizationMembership.created.json"),
        "created late",
    )
    .await;
    let (deleted_at, user): (Option<i64>, String) = s
        .db()
        .query_row(
            "SELECT deleted_at, user_id FROM organization_memberships",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((deleted_at, user.as_str()), (Some(FIXTURE_TS_MS), MEMBER));
    ok(
        &s,
        fixture("clerk/organization.deleted.json"),
        "org deleted unseen",
    )
    .await;
    let org: (Option<String>, Option<i64>) = s
        .db()
        .query_row("SELECT slug, deleted_at FROM organizations", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(org, (Some("acme-corp".into()), Some(FIXTURE_TS_MS)));
}

#[tokio::test]
async fn mirrored_types_without_an_id_are_refused_and_write_nothing() {
    let s = inproc::start_default();
    for name in [
        "organization.created",
        "organizationMembership.deleted",
        "organizationInvitation.revoked",
    ] {
        let body = edited(name, |d| {
            d.as_object_mut().unwrap().remove("id");
        });
        let r = s.deliver(&delivery(body)).await;
        assert_status(&r, 400, name);
        r.assert_json_reason();
    }
    let c = s.db();
    for table in [
        "organizations",
        "organization_memberships",
        "organization_invitations",
        "webhook_events",
        "changes",
    ] {
        assert_eq!(count(&c, table), 0, "{table}");
    }
}

fn user_with(id: &str, updated_at: i64, emails: &[(&str, &str, &str)], primary: &str) -> Vec<u8> {
    let mut data = user_data(id, 1_700_000_000_000, updated_at);
    data["email_addresses"] = emails
        .iter()
        .map(|(eid, addr, status)| {
            json!({"id": eid, "object": "email_address", "email_address": addr,
                   "verification": {"status": status, "strategy": "email_code"}, "linked_to": []})
        })
        .collect();
    data["primary_email_address_id"] = json!(primary);
    user_event("user.updated", &data)
}

fn membership(id: &str, org: &str, user: &str, role: &str, updated_at: i64) -> Vec<u8> {
    edited("organizationMembership.created", |d| {
        d["id"] = json!(id);
        d["organization"]["id"] = json!(org);
        d["public_user_data"]["user_id"] = json!(user);
        d["role"] = json!(role);
        d["updated_at"] = json!(updated_at);
    })
}

fn organization(id: &str, name: &str, updated_at: i64) -> Vec<u8> {
    edited("organization.created", |d| {
        d["id"] = json!(id);
        d["name"] = json!(name);
        d["slug"] = json!(name.to_lowercase());
        d["updated_at"] = json!(updated_at);
    })
}

fn deletion(kind: &str, id: &str, ts: i64) -> Vec<u8> {
    to_body(&envelope(
        kind,
        json!({"id": id, "object": "x", "deleted": true}),
        ts,
    ))
}

#[tokio::test]
async fn active_memberships_leave_out_deleted_organizations_and_users_in_any_order() {
    let s = inproc::start_default();
    const T: i64 = 1_800_000_000_000;
    // Memberships first: their organizations and users are not known yet.
    ok(
        &s,
        membership("orgmem_a", "org_a", "user_a", "org:admin", T),
        "a",
    )
    .await;
    ok(
        &s,
        membership("orgmem_b", "org_a", "user_b", "org:member", T),
        "b",
    )
    .await;
    ok(
        &s,
        membership("orgmem_c", "org_b", "user_a", "org:member", T),
        "c",
    )
    .await;
    ok(
        &s,
        membership("orgmem_d", "org_c", "user_c", "org:member", T),
        "d",
    )
    .await;
    let c = s.db();
    assert_eq!(
        count(&c, "active_memberships"),
        4,
        "unknown organizations and users do not hide a membership"
    );
    let unknown: (Option<String>, Option<String>) = c
        .query_row(
            "SELECT organization_name, email FROM active_memberships WHERE clerk_id = 'orgmem_a'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(unknown, (None, None));

    ok(&s, organization("org_a", "Alpha", T), "org a").await;
    ok(
        &s,
        user_with("user_a", T, &[("idn_a", "a@x.test", "verified")], "idn_a"),
        "user a",
    )
    .await;
    let row: (String, String, String, String) = s
        .db()
        .query_row(
            "SELECT organization_name, organization_slug, email, role FROM active_memberships WHERE clerk_id = 'orgmem_a'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        row,
        (
            "Alpha".into(),
            "alpha".into(),
            "a@x.test".into(),
            "org:admin".into()
        )
    );
    // A rename shows at once.
    ok(&s, organization("org_a", "Alpha Two", T + 1), "rename").await;
    assert_eq!(
        one::<String>(
            &s.db(),
            "SELECT organization_name FROM active_memberships WHERE clerk_id = 'orgmem_a'"
        ),
        "Alpha Two"
    );

    // Deletions, some before anything else was known of the object.
    ok(
        &s,
        deletion("organization.deleted", "org_b", T),
        "org b deleted",
    )
    .await;
    ok(&s, deletion("user.deleted", "user_b", T), "user b deleted").await;
    ok(
        &s,
        deletion("organizationMembership.deleted", "orgmem_d", T),
        "membership d deleted",
    )
    .await;
    let ids: Vec<String> = {
        let c = s.db();
        let mut stmt = c
            .prepare("SELECT clerk_id FROM active_memberships ORDER BY clerk_id")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(ids, ["orgmem_a"]);
    // A late version of the deleted organization does not bring its
    // memberships back.
    ok(&s, organization("org_b", "Beta", T - 1), "late org b").await;
    assert_eq!(count(&s.db(), "active_memberships"), 1);
}

#[tokio::test]
async fn user_email_addresses_lists_every_address_of_existing_users() {
    let s = inproc::start_default();
    ok(
        &s,
        user_with(
            "user_x",
            1_800_000_000_000,
            &[
                ("idn_1", "old@x.test", "unverified"),
                ("idn_2", "main@x.test", "verified"),
            ],
            "idn_2",
        ),
        "user x",
    )
    .await;
    ok(
        &s,
        user_with(
            "user_y",
            1_800_000_000_000,
            &[("idn_3", "y@x.test", "unverified")],
            "idn_3",
        ),
        "user y",
    )
    .await;
    ok(
        &s,
        user_with(
            "user_z",
            1_800_000_000_000,
            &[("idn_4", "z@x.test", "verified")],
            "idn_4",
        ),
        "user z",
    )
    .await;
    ok(
        &s,
        deletion("user.deleted", "user_z", 1_800_000_000_001),
        "user z deleted",
    )
    .await;
    let c = s.db();
    let mut stmt = c
        .prepare("SELECT user_id, email_address_id, email_address, is_primary, verified FROM user_email_addresses ORDER BY email_address_id")
        .unwrap();
    let got: Vec<(String, String, String, i64, i64)> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        got,
        vec![
            ("user_x".into(), "idn_1".into(), "old@x.test".into(), 0, 0),
            ("user_x".into(), "idn_2".into(), "main@x.test".into(), 1, 1),
            ("user_y".into(), "idn_3".into(), "y@x.test".into(), 1, 0),
        ]
    );
}

#[tokio::test]
async fn the_changes_feed_names_every_change_and_nothing_else() {
    let s = inproc::start_default();
    let created = delivery(fixture("clerk/organization.created.json"));
    assert_status(&s.deliver(&created).await, 200, "created");
    assert_status(&s.deliver(&created).await, 200, "duplicate");
    ok(&s, fixture("clerk/organization.updated.json"), "updated").await;
    ok(&s, fixture("clerk/organization.created.json"), "stale").await;
    ok(&s, fixture("clerk/session.created.json"), "ignored").await;
    ok(
        &s,
        fixture("clerk/organizationInvitation.created.json"),
        "invitation",
    )
    .await;
    ok(
        &s,
        fixture("clerk/organizationInvitation.revoked.json"),
        "invitation revoked",
    )
    .await;
    ok(&s, fixture("clerk/organization.deleted.json"), "deleted").await;
    let c = s.db();
    let got: Vec<_> = changes(&c).into_iter().map(|c| (c.0, c.2)).collect();
    let want = [
        ("organization", "created"),
        ("organization", "updated"),
        ("invitation", "created"),
        ("invitation", "updated"),
        ("organization", "deleted"),
    ]
    .map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(got, want);
    let first_event: String = one(&c, "SELECT event_id FROM changes ORDER BY seq LIMIT 1");
    assert_eq!(first_event, created.id);
    let (min_at, max_at): (i64, i64) = c
        .query_row("SELECT min(at), max(at) FROM changes", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(
        min_at > FIXTURE_TS_MS && max_at <= now_ms(),
        "at is the commit time"
    );
}

#[tokio::test]
async fn seq_follows_commit_order_and_never_goes_back_across_a_restart() {
    let mut s = inproc::start_default();
    let deliveries: Vec<Delivery> = (0..120)
        .map(|i| {
            delivery(organization(
                &format!("org_{i:03}"),
                &format!("Org {i}"),
                1_800_000_000_000,
            ))
        })
        .collect();
    let results: Answers = Arc::new(Mutex::new(Vec::new()));
    for task in send_concurrently(s.addr, &s.path, Arc::new(deliveries), 8, results.clone()) {
        task.await.unwrap();
    }
    assert!(results
        .lock()
        .unwrap()
        .iter()
        .all(|(_, st)| *st == Some(200)));
    // Every change is noted in the order its event was committed.
    let c = s.db();
    let in_seq: Vec<(String, i64)> = {
        let mut stmt = c
            .prepare("SELECT c.object_id, e.received_at FROM changes c JOIN webhook_events e ON e.id = c.event_id ORDER BY c.seq")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(in_seq.len(), 120);
    assert!(
        in_seq.windows(2).all(|w| w[0].1 <= w[1].1),
        "seq order is commit order"
    );
    let last: i64 = one(&c, "SELECT max(seq) FROM changes");
    drop(c);
    let db = s.db_path.clone();
    assert_eq!(s.stop(), Ok(()));
    // Retention may have removed the newest rows; seq still goes on.
    open_db(&db)
        .execute("DELETE FROM changes WHERE seq > ?1 - 5", [last])
        .unwrap();
    let s = inproc::start(Settings {
        db: Some(db),
        ..Settings::default()
    });
    ok(
        &s,
        organization("org_new", "New", 1_800_000_000_000),
        "after restart",
    )
    .await;
    let next: i64 = one(&s.db(), "SELECT max(seq) FROM changes");
    assert_eq!(next, last + 1, "seq is never reused");
}

/// A few organizations' histories: versions, memberships, invitations and
/// deletions, as distinct deliveries. Deletions come after every version,
/// as in Clerk: then every order of delivery must end the same.
fn histories(rng: &mut Rng) -> Vec<Delivery> {
    const T: i64 = 1_800_000_000_000;
    let mut all = Vec::new();
    for o in 0..4 {
        let org = format!("org_{o}");
        for v in 0..1 + rng.below(3) as i64 {
            all.push(delivery(organization(
                &org,
                &format!("Org {o} v{v}"),
                T + v * 1000,
            )));
        }
        for m in 0..1 + rng.below(3) {
            let id = format!("orgmem_{o}_{m}");
            let user = format!("user_{}", rng.below(3));
            for v in 0..1 + rng.below(2) as i64 {
                let role = if v == 0 { "org:member" } else { "org:admin" };
                all.push(delivery(membership(&id, &org, &user, role, T + v * 1000)));
            }
            if rng.chance(40) {
                all.push(delivery(deletion(
                    "organizationMembership.deleted",
                    &id,
                    T + 5000,
                )));
            }
        }
        if rng.chance(30) {
            all.push(delivery(deletion("organization.deleted", &org, T + 5000)));
        }
        let inv = format!("orginv_{o}");
        for (v, status) in ["pending", "accepted"]
            .iter()
            .enumerate()
            .take(1 + rng.below(2) as usize)
        {
            all.push(delivery(edited("organizationInvitation.created", |d| {
                d["id"] = json!(inv);
                d["organization_id"] = json!(org);
                d["status"] = json!(status);
                d["updated_at"] = json!(T + v as i64 * 1000);
            })));
        }
    }
    if rng.chance(50) {
        all.push(delivery(deletion("user.deleted", "user_1", T + 2000)));
    }
    all
}

fn tables(c: &Connection) -> BTreeMap<&'static str, Vec<Vec<SqlValue>>> {
    [
        "organizations",
        "organization_memberships",
        "organization_invitations",
        "users",
    ]
    .into_iter()
    .map(|t| (t, rows(c, t)))
    .chain(["active_memberships"].map(|v| {
        let mut stmt = c
            .prepare(&format!("SELECT * FROM {v} ORDER BY clerk_id"))
            .unwrap();
        let n = stmt.column_count();
        let r = stmt
            .query_map([], |r| (0..n).map(|i| r.get(i)).collect())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        (v, r)
    }))
    .collect()
}

#[tokio::test]
async fn any_order_with_duplicates_over_concurrent_connections_ends_the_same() {
    for seed in [3u64, 17, 0x5EED, 20_261_203] {
        println!("randomized organizations test: seed {seed}");
        let mut rng = Rng::new(seed);
        let history = histories(&mut rng);
        let in_order = inproc::start_default();
        for d in &history {
            assert_status(&in_order.deliver(d).await, 200, "in order");
        }
        let mut shuffled: Vec<Delivery> = Vec::new();
        for d in &history {
            for _ in 0..1 + rng.below(3) {
                shuffled.push(d.resigned(SECRET));
            }
        }
        rng.shuffle(&mut shuffled);
        let any_order = inproc::start_default();
        let results: Answers = Arc::new(Mutex::new(Vec::new()));
        let tasks = send_concurrently(
            any_order.addr,
            &any_order.path,
            Arc::new(shuffled),
            6,
            results.clone(),
        );
        for task in tasks {
            task.await.unwrap();
        }
        assert!(
            results
                .lock()
                .unwrap()
                .iter()
                .all(|(_, st)| *st == Some(200)),
            "seed {seed}: every delivery answered 200"
        );
        let want = tables(&in_order.db());
        assert!(
            want["organizations"].len() == 4 && want["organization_memberships"].len() >= 4,
            "seed {seed}: the history fills the tables"
        );
        assert_eq!(want, tables(&any_order.db()), "seed {seed}");
        assert_eq!(
            count(&any_order.db(), "webhook_events"),
            history.len() as i64,
            "seed {seed}: one event row per svix-id"
        );
    }
}

#[tokio::test]
async fn a_database_of_the_previous_release_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/releases/schema-v1.db"
        ),
        &db,
    )
    .unwrap();
    let before = {
        let c = open_db(&db);
        assert_eq!(one::<i64>(&c, "PRAGMA user_version"), 1);
        (rows(&c, "users"), count(&c, "webhook_events"))
    };
    let org_event: String = one(
        &open_db(&db),
        "SELECT id FROM webhook_events WHERE type = 'organization.created'",
    );
    let s = inproc::start(Settings {
        db: Some(db.clone()),
        ..Settings::default()
    });
    let c = s.db();
    assert_eq!(one::<i64>(&c, "PRAGMA user_version"), 2);
    assert_eq!(rows(&c, "users"), before.0, "every user row kept");
    assert_eq!(
        count(&c, "webhook_events"),
        before.1,
        "every event row kept"
    );
    // Svix retrying the organization event the old release recorded as
    // ignored: still a duplicate, and nothing is applied.
    let retry = Delivery::with_secret(SECRET, fixture("clerk/organization.created.json"));
    let retry = Delivery {
        id: org_event,
        ..retry
    }
    .resigned(SECRET);
    let r = s.deliver(&retry).await;
    assert_status(&r, 200, "retry of an event recorded before the migration");
    assert_eq!(r.json().unwrap()["outcome"], "duplicate");
    assert_eq!(count(&s.db(), "organizations"), 0);
    // New organization events are mirrored.
    ok(
        &s,
        fixture("clerk/organization.updated.json"),
        "after migration",
    )
    .await;
    assert_eq!(count(&s.db(), "organizations"), 1);
}

#[tokio::test]
async fn a_migration_killed_halfway_is_done_again_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/releases/schema-v1.db"
        ),
        &db,
    )
    .unwrap();
    // Another process starts the migration's work in one transaction, writes
    // enough for SQLite to spill it to the log, and is killed before the
    // commit, as a crash in the middle of a migration would leave the file.
    let script = r#"
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA cache_size = 1")
c.execute("BEGIN IMMEDIATE")
c.execute("CREATE TABLE organizations (clerk_id TEXT PRIMARY KEY, name TEXT)")
c.executemany("INSERT INTO organizations VALUES (?, ?)", ((f"org_{i}", "x" * 500) for i in range(2000)))
c.execute("PRAGMA user_version = 2")
os.kill(os.getpid(), 9)
"#;
    let status = std::process::Command::new("python3")
        .args(["-c", script, db.to_str().unwrap()])
        .status()
        .expect("python3 runs");
    assert!(!status.success(), "the migrating process was killed");
    let s = inproc::start(Settings {
        db: Some(db),
        ..Settings::default()
    });
    let c = s.db();
    assert_eq!(one::<i64>(&c, "PRAGMA user_version"), 2);
    assert_eq!(
        count(&c, "organizations"),
        0,
        "nothing of the killed transaction is left"
    );
    assert_eq!(count(&c, "users"), 3);
    drop(c);
    ok(&s, fixture("clerk/organization.created.json"), "migrated").await;
    assert_eq!(count(&s.db(), "active_organizations"), 1);
}

#[tokio::test]
async fn status_counts_every_type() {
    let s = inproc::start_default();
    ok(&s, fixture("clerk/organization.created.json"), "org").await;
    ok(
        &s,
        fixture("clerk/organizationMembership.created.json"),
        "membership",
    )
    .await;
    ok(
        &s,
        fixture("clerk/organizationMembership.deleted.json"),
        "membership deleted",
    )
    .await;
    ok(
        &s,
        fixture("clerk/organizationInvitation.created.json"),
        "invitation",
    )
    .await;
    let out = run_to_end(
        &["status", "--db", s.db_path.to_str().unwrap(), "--json"],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        r["organizations"],
        json!({"total": 1, "active": 1, "tombstones": 0})
    );
    assert_eq!(
        r["memberships"],
        json!({"total": 1, "active": 0, "tombstones": 1})
    );
    assert_eq!(
        r["invitations"],
        json!({"total": 1, "active": 1, "tombstones": 0})
    );
    assert_eq!(r["changes"]["rows"], 4);
    let metrics = s.get("/metrics").await.text();
    for line in [
        r#"clerk_sync_mirror_rows{object="organization",state="live"} 1"#,
        r#"clerk_sync_mirror_rows{object="membership",state="deleted"} 1"#,
        r#"clerk_sync_mirror_rows{object="invitation",state="live"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}
