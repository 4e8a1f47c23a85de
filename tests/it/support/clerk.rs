//! What Clerk sends: payloads, envelopes, and signed deliveries. The signer
//! is independent of the crate's own signing code and is anchored to the
//! published Standard Webhooks vectors in `signatures.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::hmac;
use serde_json::{json, Value};

use super::{now_ms, now_secs, SECRET};

/// `v1,` + base64(HMAC-SHA256(base64decode(secret minus `whsec_`), "{id}.{ts}.{body}")).
pub fn sign(secret: &str, msg_id: &str, ts: &str, body: &[u8]) -> String {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key_bytes = STANDARD
        .decode(b64)
        .expect("test secrets are valid standard base64");
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key_bytes);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(msg_id.as_bytes());
    ctx.update(b".");
    ctx.update(ts.as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique Svix-style message id.
pub fn unique_msg_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("msg_it{}x{}x{}", std::process::id(), nanos, n)
}

/// A unique Clerk-style user id.
pub fn unique_user_id() -> String {
    unique_msg_id().replacen("msg_", "user_", 1)
}

/// One webhook delivery: id, timestamp, raw body and signature header.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: String,
    pub ts: String,
    pub body: Vec<u8>,
    pub sig: String,
}

impl Delivery {
    /// Signed with [`SECRET`], timestamp now, fresh id.
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        Self::with_secret(SECRET, body)
    }

    pub fn with_secret(secret: &str, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        let id = unique_msg_id();
        let ts = now_secs().to_string();
        let sig = sign(secret, &id, &ts, &body);
        Delivery { id, ts, body, sig }
    }

    /// Same id and body, new timestamp and signature (what a Svix retry looks like).
    pub fn resigned(&self, secret: &str) -> Self {
        let ts = now_secs().to_string();
        let sig = sign(secret, &self.id, &ts, &self.body);
        Delivery {
            id: self.id.clone(),
            ts,
            body: self.body.clone(),
            sig,
        }
    }

    /// Same id, another body, signed correctly with `secret`.
    pub fn same_id_new_body(&self, secret: &str, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        let ts = now_secs().to_string();
        let sig = sign(secret, &self.id, &ts, &body);
        Delivery {
            id: self.id.clone(),
            ts,
            body,
            sig,
        }
    }

    /// The three svix-* headers plus what Svix sends alongside.
    pub fn headers(&self) -> Vec<(String, Vec<u8>)> {
        let mut h = base_headers();
        h.push(("svix-id".into(), self.id.clone().into_bytes()));
        h.push(("svix-timestamp".into(), self.ts.clone().into_bytes()));
        h.push(("svix-signature".into(), self.sig.clone().into_bytes()));
        h
    }
}

/// Shorthand for [`Delivery::new`].
pub fn delivery(body: impl Into<Vec<u8>>) -> Delivery {
    Delivery::new(body)
}

/// Headers every request carries (content type and a Svix-like user agent).
pub fn base_headers() -> Vec<(String, Vec<u8>)> {
    vec![
        ("content-type".into(), b"application/json".to_vec()),
        ("user-agent".into(), b"Svix-Webhooks/1.0".to_vec()),
    ]
}

/// Build a header list from (name, value) string pairs plus the base headers.
pub fn hdrs(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    let mut h = base_headers();
    for (k, v) in pairs {
        h.push((k.to_string(), v.as_bytes().to_vec()));
    }
    h
}

/// A realistic Clerk user object (shape of the OpenAPI example).
pub fn user_data(id: &str, created_at: i64, updated_at: i64) -> Value {
    let email_id = format!("idn_{}", id.trim_start_matches("user_"));
    json!({
        "object": "user",
        "id": id,
        "external_id": format!("ext-{id}"),
        "primary_email_address_id": email_id,
        "primary_phone_number_id": null,
        "primary_web3_wallet_id": null,
        "username": format!("name_{}", updated_at),
        "first_name": "Ada",
        "last_name": "Lovelace",
        "profile_image_url": "https://img.clerk.com/profile",
        "image_url": format!("https://img.clerk.com/{updated_at}"),
        "has_image": true,
        "public_metadata": {"plan": "pro"},
        "private_metadata": null,
        "unsafe_metadata": {},
        "email_addresses": [{
            "id": email_id,
            "object": "email_address",
            "email_address": format!("{}@example.org", id.to_lowercase()),
            "reserved": false,
            "verification": {"status": "verified", "strategy": "email_code"},
            "linked_to": [],
            "created_at": created_at,
            "updated_at": created_at
        }],
        "phone_numbers": [],
        "web3_wallets": [],
        "passkeys": [],
        "password_enabled": true,
        "two_factor_enabled": false,
        "external_accounts": [],
        "saml_accounts": [],
        "enterprise_accounts": [],
        "last_sign_in_at": null,
        "banned": false,
        "locked": false,
        "created_at": created_at,
        "updated_at": updated_at,
        "last_active_at": null
    })
}

/// The envelope Clerk posts.
pub fn envelope(kind: &str, data: Value, timestamp: i64) -> Value {
    json!({
        "data": data,
        "instance_id": "ins_integrationtests",
        "object": "event",
        "timestamp": timestamp,
        "type": kind
    })
}

pub fn to_body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialize")
}

/// `user.created` / `user.updated` body; the envelope timestamp is `updated_at`.
pub fn user_event(kind: &str, data: &Value) -> Vec<u8> {
    let ts = data["updated_at"].as_i64().unwrap_or_else(now_ms);
    to_body(&envelope(kind, data.clone(), ts))
}

/// `user.deleted` body: `data` is only `{object, id, deleted}` (+ external_id).
pub fn deleted_event(id: &str, external_id: Option<&str>, timestamp: i64) -> Vec<u8> {
    let mut data = json!({"object": "user", "id": id, "deleted": true});
    if let Some(e) = external_id {
        data["external_id"] = json!(e);
    }
    to_body(&envelope("user.deleted", data, timestamp))
}
