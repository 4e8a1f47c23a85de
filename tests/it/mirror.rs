//! How events change the `users` mirror and `webhook_events`.

use serde_json::{json, Value};

use crate::support::inproc;
use crate::support::*;

const T0: i64 = 1_700_000_000_000;

async fn ok(s: &Endpoint, body: Vec<u8>, what: &str) -> Delivery {
    let d = delivery(body);
    let r = s.deliver(&d).await;
    assert_status(&r, 200, what);
    d
}

#[tokio::test]
async fn docs_user_created_fills_every_column() {
    let s = inproc::start_default();
    let before = now_ms();
    let d = ok(&s, fixture("clerk/user.created.json"), "docs user.created").await;
    let after = now_ms();
    let c = s.db();
    let row = user_row(&c, "user_29w83sxmDNGwOuEthce5gg56FcC").expect("row for the docs user");
    assert_eq!(row.email.as_deref(), Some("example@example.org"));
    assert_eq!(row.first_name.as_deref(), Some("Example"));
    assert_eq!(row.last_name.as_deref(), Some("Example"));
    assert_eq!(row.username, None);
    assert_eq!(
        row.image_url.as_deref(),
        Some("https://img.clerk.com/xxxxxx")
    );
    assert_eq!(row.external_id.as_deref(), Some("567772"));
    assert_eq!(row.created_at, Some(1_654_012_591_514));
    assert_eq!(row.updated_at, Some(1_654_012_591_835));
    assert_eq!(row.deleted_at, None);
    let fixture_data = fixture_json("clerk/user.created.json")["data"].clone();
    assert_eq!(
        row.data_json().expect("data set"),
        fixture_data,
        "data is the user object as received"
    );

    // `data` is queryable with ->>.
    let (first, email, meta): (String, String, Option<String>) = c
        .query_row(
            "SELECT data->>'$.first_name', data->>'$.email_addresses[0].email_address', \
             data->>'$.primary_email_address_id' FROM users WHERE clerk_id = ?1",
            ["user_29w83sxmDNGwOuEthce5gg56FcC"],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("->> query");
    assert_eq!(first, "Example");
    assert_eq!(email, "example@example.org");
    assert_eq!(meta.as_deref(), Some("idn_29w83yL7CwVlJXylYLxcslromF1"));

    // webhook_events: id, type, received_at in ms, close to now.
    assert_recorded_at(&c, &d.id, "user.created", (before, after));
    assert_eq!(count(&c, "webhook_events"), 1);
    assert_eq!(count(&c, "users"), 1);
}

#[tokio::test]
async fn database_is_in_wal_mode() {
    let s = inproc::start_default();
    ok(&s, fixture("clerk/user.created.json"), "create").await;
    let mode: String = s
        .db()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
}

#[tokio::test]
async fn openapi_user_created_with_missing_primary_address() {
    let s = inproc::start_default();
    ok(
        &s,
        fixture("clerk/user.created.openapi.json"),
        "openapi user.created",
    )
    .await;
    let row = user_row(&s.db(), "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S").expect("row");
    // primary_email_address_id names an address that is not in email_addresses.
    assert_eq!(row.email, None);
    assert_eq!(row.first_name.as_deref(), Some("John"));
    assert_eq!(row.last_name.as_deref(), Some("Doe"));
    assert_eq!(row.username, None);
    assert_eq!(row.external_id, None);
    assert_eq!(
        row.image_url.as_deref(),
        Some("https://img.clerk.com/xxxxxx")
    );
    assert_eq!(row.created_at, Some(1_716_883_200_000));
    assert_eq!(row.updated_at, Some(1_716_883_200_000));
    assert_eq!(row.deleted_at, None);
}

fn two_addresses(uid: &str, primary: Value) -> Value {
    let mut d = user_data(uid, T0, T0);
    d["email_addresses"] = json!([
        {"id": "idn_first", "object": "email_address", "email_address": "first@example.org",
         "verification": {"status": "verified", "strategy": "email_code"}, "linked_to": []},
        {"id": "idn_second", "object": "email_address", "email_address": "second@example.org",
         "verification": {"status": "verified", "strategy": "email_code"}, "linked_to": []}
    ]);
    d["primary_email_address_id"] = primary;
    d
}

#[tokio::test]
async fn email_is_the_primary_address_not_the_first() {
    let s = inproc::start_default();
    let cases = [
        (json!("idn_second"), Some("second@example.org")),
        (json!("idn_first"), Some("first@example.org")),
        (Value::Null, None),
        (json!("idn_missing"), None),
    ];
    let mut uids = Vec::new();
    for (primary, _) in &cases {
        let uid = unique_user_id();
        ok(
            &s,
            user_event("user.created", &two_addresses(&uid, primary.clone())),
            "create",
        )
        .await;
        uids.push(uid);
    }
    let c = s.db();
    for ((primary, want), uid) in cases.iter().zip(&uids) {
        let row = user_row(&c, uid).expect("row");
        assert_eq!(
            row.email.as_deref(),
            *want,
            "primary_email_address_id = {primary}"
        );
    }

    // Changing the primary in an update moves the email.
    let mut d = two_addresses(&uids[0], json!("idn_first"));
    d["updated_at"] = json!(T0 + 10);
    ok(&s, user_event("user.updated", &d), "update primary").await;
    assert_eq!(
        user_row(&s.db(), &uids[0]).unwrap().email.as_deref(),
        Some("first@example.org")
    );
}

#[tokio::test]
async fn duplicate_svix_id_changes_nothing() {
    let s = inproc::start_default();
    let uid = unique_user_id();
    let mut data = user_data(&uid, T0, T0);
    let first = ok(&s, user_event("user.created", &data), "first").await;
    let c = s.db();
    let row1 = user_row(&c, &uid).unwrap();
    let ev1 = event_row(&c, &first.id).unwrap();

    // Plain retry.
    assert_status(&s.deliver(&first.resigned(SECRET)).await, 200, "retry");
    // Same id, different (newer) content, correctly signed.
    data["first_name"] = json!("Mallory");
    data["updated_at"] = json!(T0 + 60_000);
    let dup = first.same_id_new_body(SECRET, user_event("user.updated", &data));
    let r = s.deliver(&dup).await;
    assert_status(&r, 200, "same svix-id, new body");

    let c = s.db();
    assert_eq!(
        user_row(&c, &uid).unwrap(),
        row1,
        "duplicate id changed the row"
    );
    assert_eq!(event_row(&c, &first.id).unwrap(), ev1, "event row changed");
    assert_eq!(event_count_for(&c, &first.id), 1);
    assert_eq!(count(&c, "webhook_events"), 1);

    // Same id with a body that is no event at all: the id was accepted, so
    // it is still answered as the duplicate it is.
    let junk: [&[u8]; 4] = [
        b"not json",
        b"",
        br#"{"data":{}}"#,
        br#"{"type":"user.created","data":{}}"#,
    ];
    for body in junk {
        let r = s
            .deliver(&first.same_id_new_body(SECRET, body.to_vec()))
            .await;
        let what = String::from_utf8_lossy(body);
        assert_status(&r, 200, &format!("known id with body {what:?}"));
        assert_eq!(r.json().unwrap()["outcome"], "duplicate", "{what:?}");
    }
    let c = s.db();
    assert_eq!(user_row(&c, &uid).unwrap(), row1);
    assert_eq!(event_row(&c, &first.id).unwrap(), ev1, "event row changed");
    assert_eq!(count(&c, "webhook_events"), 1);
    // An unknown id with such a body is still refused.
    let fresh = delivery(b"not json".to_vec());
    assert_status(&s.deliver(&fresh).await, 400, "unknown id, not json");
}

/// The same instants written as floats, as a proxy that re-serialises JSON
/// may send them: still Clerk's times, so still what orders the events.
#[tokio::test]
async fn times_written_as_floats_still_order_events() {
    let s = inproc::start_default();
    let uid = unique_user_id();
    let mut v2 = user_data(&uid, T0, T0 + 2_000);
    v2["first_name"] = json!("Second");
    ok(&s, user_event("user.created", &v2), "v2").await;
    let row2 = user_row(&s.db(), &uid).unwrap();

    // Older, with an envelope time newer than the row: still stale.
    let mut older: Value = serde_json::from_str(&format!(
        r#"{{"id":"{uid}","first_name":"Older","created_at":{T0}.0,"updated_at":{}.0}}"#,
        T0 + 1_000
    ))
    .unwrap();
    older["object"] = json!("user");
    let stale = delivery(to_body(&envelope("user.updated", older, T0 + 9_000)));
    let r = s.deliver(&stale).await;
    assert_status(&r, 200, "older, as floats");
    assert_eq!(r.json().unwrap()["outcome"], "stale", "{}", r.text());
    assert_eq!(
        user_row(&s.db(), &uid).unwrap(),
        row2,
        "a stale event changed the row"
    );

    // Newer, in exponent form, with an envelope time older than the row.
    let newer = format!(
        r#"{{"type":"user.updated","object":"event","timestamp":{T0},"data":{{"id":"{uid}","first_name":"Newer","created_at":1.7e12,"updated_at":1.700000003e12}}}}"#
    );
    ok(&s, newer.into_bytes(), "newer, in exponent form").await;
    let row = user_row(&s.db(), &uid).unwrap();
    assert_eq!(row.first_name.as_deref(), Some("Newer"));
    assert_eq!(row.created_at, Some(1_700_000_000_000));
    assert_eq!(row.updated_at, Some(1_700_000_003_000));
}

#[tokio::test]
async fn stale_update_changes_nothing_newer_update_applies() {
    let s = inproc::start_default();
    let uid = unique_user_id();
    let mut v2 = user_data(&uid, T0, T0 + 2_000);
    v2["first_name"] = json!("Second");
    ok(&s, user_event("user.updated", &v2), "v2").await;
    let row2 = user_row(&s.db(), &uid).unwrap();
    assert_eq!(row2.first_name.as_deref(), Some("Second"));

    // Older updated_at, as an update and as a late create.
    let mut v1 = user_data(&uid, T0, T0 + 1_000);
    v1["first_name"] = json!("First");
    v1["email_addresses"][0]["email_address"] = json!("old@example.org");
    let stale = ok(&s, user_event("user.updated", &v1), "stale update").await;
    ok(
        &s,
        user_event("user.created", &user_data(&uid, T0, T0)),
        "late create",
    )
    .await;
    let c = s.db();
    assert_eq!(
        user_row(&c, &uid).unwrap(),
        row2,
        "stale event changed the row"
    );
    assert!(
        event_row(&c, &stale.id).is_some(),
        "an accepted stale event is still recorded"
    );

    // Newer: everything follows.
    let mut v3 = user_data(&uid, T0, T0 + 3_000);
    v3["first_name"] = json!("Third");
    v3["last_name"] = Value::Null;
    v3["username"] = json!("third_user");
    v3["image_url"] = json!("https://img.clerk.com/third");
    v3["external_id"] = json!("ext-3");
    v3["email_addresses"][0]["email_address"] = json!("third@example.org");
    ok(&s, user_event("user.updated", &v3), "v3").await;
    let row3 = user_row(&s.db(), &uid).unwrap();
    assert_eq!(row3.first_name.as_deref(), Some("Third"));
    assert_eq!(row3.last_name, None);
    assert_eq!(row3.username.as_deref(), Some("third_user"));
    assert_eq!(
        row3.image_url.as_deref(),
        Some("https://img.clerk.com/third")
    );
    assert_eq!(row3.external_id.as_deref(), Some("ext-3"));
    assert_eq!(row3.email.as_deref(), Some("third@example.org"));
    assert_eq!(row3.created_at, Some(T0));
    assert_eq!(row3.updated_at, Some(T0 + 3_000));
    assert_eq!(row3.deleted_at, None);
    assert_eq!(row3.data_json().unwrap(), v3);
}

#[tokio::test]
async fn fixture_create_then_delete_with_seconds_timestamp() {
    let s = inproc::start_default();
    // The OpenAPI user.created, then user.deleted whose envelope timestamp is
    // seconds-sized (1716883200 -> 1716883200000 ms).
    ok(&s, fixture("clerk/user.created.openapi.json"), "create").await;
    let d = ok(&s, fixture("clerk/user.deleted.json"), "delete").await;
    let c = s.db();
    let row = user_row(&c, "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S").expect("tombstone");
    assert_eq!(
        row.deleted_at,
        Some(1_716_883_200_000),
        "seconds timestamp times 1000"
    );
    assert_eq!(row.email, None);
    assert_eq!(row.first_name, None);
    assert_eq!(row.last_name, None);
    assert_eq!(row.username, None);
    assert_eq!(row.image_url, None);
    assert_eq!(row.data, None);
    assert_eq!(row.created_at, Some(1_716_883_200_000), "created_at stays");
    assert_eq!(row.updated_at, Some(1_716_883_200_000), "updated_at stays");
    assert_eq!(event_row(&c, &d.id).unwrap().0, "user.deleted");
}

#[tokio::test]
async fn delete_makes_a_tombstone_keeping_ids_and_times() {
    let s = inproc::start_default();
    let uid = unique_user_id();
    let mut data = user_data(&uid, T0, T0 + 5_000);
    data["username"] = json!("someone");
    ok(&s, user_event("user.created", &data), "create").await;
    let ext = data["external_id"].as_str().unwrap().to_string();
    // Millisecond envelope timestamp.
    let del_ts = T0 + 9_123;
    ok(&s, deleted_event(&uid, Some(&ext), del_ts), "delete").await;
    let row = user_row(&s.db(), &uid).expect("tombstone");
    assert_eq!(
        row,
        UserRow {
            clerk_id: uid.clone(),
            email: None,
            first_name: None,
            last_name: None,
            username: None,
            image_url: None,
            external_id: Some(ext),
            created_at: Some(T0),
            updated_at: Some(T0 + 5_000),
            deleted_at: Some(del_ts),
            data: None,
        }
    );
}

#[tokio::test]
async fn delete_of_a_never_seen_user_creates_a_tombstone() {
    let s = inproc::start_default();
    let uid = unique_user_id();
    ok(
        &s,
        deleted_event(&uid, None, 1_716_883_200),
        "delete unknown user",
    )
    .await;
    let row = user_row(&s.db(), &uid).expect("tombstone for an unseen user");
    assert_eq!(row.deleted_at, Some(1_716_883_200_000));
    assert_eq!(row.email, None);
    assert_eq!(row.first_name, None);
    assert_eq!(row.last_name, None);
    assert_eq!(row.username, None);
    assert_eq!(row.image_url, None);
    assert_eq!(row.data, None);
    assert_eq!(count(&s.db(), "users"), 1);
}

#[tokio::test]
async fn late_events_do_not_resurrect_newer_ones_do() {
    let s = inproc::start_default();
    let uid = unique_user_id();
    let del_ts = T0 + 10_000;
    ok(
        &s,
        user_event("user.created", &user_data(&uid, T0, T0)),
        "create",
    )
    .await;
    ok(&s, deleted_event(&uid, None, del_ts), "delete").await;
    let tomb = user_row(&s.db(), &uid).unwrap();
    assert_eq!(tomb.deleted_at, Some(del_ts));

    // Not newer than deleted_at: older, and exactly equal.
    for (kind, upd) in [
        ("user.updated", T0 + 5_000),
        ("user.created", T0 + 1),
        ("user.updated", del_ts),
    ] {
        ok(
            &s,
            user_event(kind, &user_data(&uid, T0, upd)),
            "late event",
        )
        .await;
        let row = user_row(&s.db(), &uid).unwrap();
        assert_eq!(
            row.deleted_at,
            Some(del_ts),
            "{kind} at {upd} resurrected the user"
        );
        assert_eq!(row.email, None, "{kind} at {upd} restored personal fields");
        assert_eq!(row.first_name, None);
        assert_eq!(row.data, None);
    }

    // Never-seen tombstone, then a late create: still deleted.
    let ghost = unique_user_id();
    ok(&s, deleted_event(&ghost, None, del_ts), "delete unseen").await;
    ok(
        &s,
        user_event("user.created", &user_data(&ghost, T0, T0)),
        "late create",
    )
    .await;
    let row = user_row(&s.db(), &ghost).unwrap();
    assert_eq!(row.deleted_at, Some(del_ts));
    assert_eq!(row.email, None);
    assert_eq!(row.data, None);

    // Newer than deleted_at: applied, deleted_at back to NULL.
    let mut back = user_data(&uid, T0, del_ts + 1);
    back["first_name"] = json!("Back");
    ok(&s, user_event("user.updated", &back), "resurrecting update").await;
    let row = user_row(&s.db(), &uid).unwrap();
    assert_eq!(row.deleted_at, None);
    assert_eq!(row.first_name.as_deref(), Some("Back"));
    assert_eq!(row.updated_at, Some(del_ts + 1));
    assert!(row.email.is_some());
    assert_eq!(row.data_json().unwrap(), back);
}

#[tokio::test]
async fn each_accepted_delivery_is_one_event_row() {
    let s = inproc::start_default();
    let uid = unique_user_id();
    let before = now_ms();
    let a = ok(
        &s,
        user_event("user.created", &user_data(&uid, T0, T0)),
        "create",
    )
    .await;
    let b = ok(
        &s,
        user_event("user.updated", &user_data(&uid, T0, T0 + 1)),
        "update",
    )
    .await;
    let c_ = ok(&s, deleted_event(&uid, None, T0 + 2), "delete").await;
    let after = now_ms();
    let c = s.db();
    for (d, kind) in [
        (&a, "user.created"),
        (&b, "user.updated"),
        (&c_, "user.deleted"),
    ] {
        assert_recorded_at(&c, &d.id, kind, (before, after));
    }
    assert_eq!(count(&c, "webhook_events"), 3);
    assert_eq!(count(&c, "users"), 1);
}

/// A delete always sets deleted_at to its own timestamp, even when the row's
/// updated_at is later.
#[tokio::test]
async fn delete_older_than_last_update_still_makes_a_tombstone() {
    let s = inproc::start_default();
    let uid = unique_user_id();
    ok(
        &s,
        user_event("user.created", &user_data(&uid, T0, T0 + 10_000)),
        "create",
    )
    .await;
    ok(&s, deleted_event(&uid, None, T0 + 5_000), "older delete").await;
    let row = user_row(&s.db(), &uid).unwrap();
    assert_eq!(row.deleted_at, Some(T0 + 5_000));
    assert_eq!(row.email, None);
    assert_eq!(row.data, None);
    assert_eq!(row.updated_at, Some(T0 + 10_000), "updated_at stays");

    // A late version newer than the delete but older than the row's last
    // version is still older than the row: it changes nothing, and in
    // particular does not bring the user back with older data.
    let mut late = user_data(&uid, T0, T0 + 7_000);
    late["first_name"] = json!("Older");
    let d = ok(&s, user_event("user.updated", &late), "late update").await;
    let outcome: String = s
        .db()
        .query_row(
            "SELECT outcome FROM webhook_events WHERE id = ?1",
            [&d.id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(outcome, "stale");
    let row = user_row(&s.db(), &uid).unwrap();
    assert_eq!(row.deleted_at, Some(T0 + 5_000), "the user stays deleted");
    assert_eq!(row.first_name, None);
    assert_eq!(row.data, None);
    assert_eq!(
        row.updated_at,
        Some(T0 + 10_000),
        "updated_at never goes back"
    );

    // One as new as the row's and newer than the delete is not older than
    // anything: it applies, and the user is back, as on a live row.
    let mut same = user_data(&uid, T0, T0 + 10_000);
    same["first_name"] = json!("Same");
    ok(&s, user_event("user.updated", &same), "equal update").await;
    let row = user_row(&s.db(), &uid).unwrap();
    assert_eq!(row.deleted_at, None);
    assert_eq!(row.first_name.as_deref(), Some("Same"));
}

/// Below 10^12 the envelope timestamp is seconds; from 10^12 it is ms.
#[tokio::test]
async fn envelope_timestamp_unit_boundary() {
    let s = inproc::start_default();
    let cases = [
        (999_999_999_999_i64, 999_999_999_999_000_i64),
        (1_000_000_000_000, 1_000_000_000_000),
        (1_716_883_200, 1_716_883_200_000),
        (1_744_276_393_644, 1_744_276_393_644),
    ];
    for (ts, want) in cases {
        let uid = unique_user_id();
        ok(&s, deleted_event(&uid, None, ts), "delete").await;
        assert_eq!(
            user_row(&s.db(), &uid).unwrap().deleted_at,
            Some(want),
            "envelope timestamp {ts}"
        );
    }
}

/// The event `id` is recorded with type `kind`, and a `received_at` in
/// milliseconds within `window` (give or take 2 s).
fn assert_recorded_at(c: &rusqlite::Connection, id: &str, kind: &str, window: (i64, i64)) {
    let (before, after) = window;
    let (t, at) = event_row(c, id).unwrap_or_else(|| panic!("{kind} {id} not recorded"));
    assert_eq!(t, kind);
    assert!(
        at >= before - 2_000 && at <= after + 2_000,
        "received_at {at} not in ms around now ({before}..{after})"
    );
}
