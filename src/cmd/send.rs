//! `clerk-sync send`: sign a built-in event or a file and post it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Request, Uri};
use serde_json::json;
use tokio::net::TcpStream;

use super::{message_id, print_out, random_base62};
use crate::cli::SendArgs;
use crate::{clock, secrets};

/// `send`: signs a built-in event or a file's bytes and POSTs it.
///
/// # Errors
/// Missing secret, unreadable file, `--user-id` or `--email` with a file,
/// unreachable URL.
pub async fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let shape = Shape {
        user_id: args.user_id.as_deref(),
        email: args.email.as_deref(),
        org_id: args.org_id.as_deref(),
        role: &args.role,
    };
    let builtin = builtin_event(&args.event, &shape)?;
    if builtin.is_none()
        && (args.user_id.is_some() || args.email.is_some() || args.org_id.is_some())
    {
        bail!(
            "--user-id, --email and --org-id apply to the built-in events only ({}); the file {} \
             is sent byte for byte",
            BUILTIN.join(", "),
            args.event
        );
    }
    let secrets = secrets::load_secrets(args.secrets.secret_file.as_deref())?;
    let body = match builtin {
        Some(body) => body,
        None => std::fs::read(&args.event).with_context(|| {
            format!(
                "{} is neither a built-in event ({}) nor a readable file",
                args.event,
                BUILTIN.join(", ")
            )
        })?,
    };
    let id = message_id()?;
    let timestamp = clock::now_ms() / 1000;
    let signature = secrets.sign(&id, timestamp, &body);
    let (status, answer) = tokio::time::timeout(
        Duration::from_secs(20),
        post(&args.url, &id, timestamp, &signature, body),
    )
    .await
    .context("no answer within 20 s")??;
    print_out(&format!(
        "{} {}\n{answer}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    ))?;
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The events `send` can make up.
pub const BUILTIN: &[&str] = &[
    "user.created",
    "user.updated",
    "user.deleted",
    "organization.created",
    "organization.updated",
    "organization.deleted",
    "organizationMembership.created",
    "organizationMembership.updated",
    "organizationMembership.deleted",
];

/// What the command line says of a built-in payload.
#[derive(Debug, Default)]
pub struct Shape<'a> {
    pub user_id: Option<&'a str>,
    pub email: Option<&'a str>,
    pub org_id: Option<&'a str>,
    pub role: &'a str,
}

/// Builds a realistic Clerk envelope for a built-in event, or `None` when
/// `event` is not one of them.
///
/// # Errors
/// When an id given is empty.
pub fn builtin_event(event: &str, shape: &Shape<'_>) -> anyhow::Result<Option<Vec<u8>>> {
    if !BUILTIN.contains(&event) {
        return Ok(None);
    }
    let now = clock::now_ms();
    let user_id = id_or_new(shape.user_id, "--user-id", "user_")?;
    let org_id = id_or_new(shape.org_id, "--org-id", "org_")?;
    let data = match event {
        "user.created" | "user.updated" | "user.deleted" => {
            user(event, &user_id, shape.email, now)?
        }
        "organization.deleted" => {
            json!({ "deleted": true, "id": org_id, "object": "organization" })
        }
        "organization.created" | "organization.updated" => organization(&org_id, now),
        _ => json!({
            "created_at": now,
            // The same user in the same organization is the same membership,
            // so a .deleted after a .created finds it.
            "id": membership_id(&org_id, &user_id),
            "object": "organization_membership",
            "organization": organization(&org_id, now),
            "permissions": [],
            "private_metadata": {},
            "public_metadata": {},
            "public_user_data": {
                "first_name": "Test", "has_image": false, "identifier": format!("{}@example.com", user_id.to_lowercase()),
                "image_url": "https://img.clerk.com/placeholder", "last_name": "User", "user_id": user_id
            },
            "role": shape.role,
            "role_name": shape.role.trim_start_matches("org:"),
            "updated_at": now
        }),
    };
    let envelope = json!({
        "data": data,
        "event_attributes": { "http_request": { "client_ip": "127.0.0.1", "user_agent": "clerk-sync send" } },
        "instance_id": "ins_clerksynclocaltest",
        "object": "event",
        "timestamp": now,
        "type": event,
    });
    Ok(Some(serde_json::to_vec(&envelope)?))
}

fn id_or_new(given: Option<&str>, flag: &str, prefix: &str) -> anyhow::Result<String> {
    match given {
        Some("") => bail!("{flag} must not be empty"),
        Some(id) => Ok(id.to_owned()),
        None => Ok(format!("{prefix}{}", random_base62(27)?)),
    }
}

fn membership_id(org_id: &str, user_id: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{org_id}\n{user_id}").as_bytes(),
    );
    let hex: String = digest.as_ref()[..14]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("orgmem_{hex}")
}

fn organization(org_id: &str, now: i64) -> serde_json::Value {
    json!({
        "admin_delete_enabled": true,
        "created_at": now,
        "created_by": null,
        "has_image": false,
        "id": org_id,
        "image_url": "https://img.clerk.com/placeholder",
        "max_allowed_memberships": 5,
        "members_count": 1,
        "name": "Test Organization",
        "object": "organization",
        "private_metadata": {},
        "public_metadata": {},
        "slug": format!("test-{}", org_id.trim_start_matches("org_").to_lowercase()),
        "updated_at": now
    })
}

fn user(
    event: &str,
    user_id: &str,
    email: Option<&str>,
    now: i64,
) -> anyhow::Result<serde_json::Value> {
    Ok(if event == "user.deleted" {
        json!({ "deleted": true, "id": user_id, "object": "user" })
    } else {
        let email_id = format!("idn_{}", random_base62(27)?);
        let email = email.map_or_else(
            || format!("{}@example.com", user_id.to_lowercase()),
            str::to_owned,
        );
        json!({
            "backup_code_enabled": false,
            "banned": false,
            "create_organization_enabled": true,
            "created_at": now,
            "delete_self_enabled": true,
            "email_addresses": [{
                "created_at": now,
                "email_address": email,
                "id": email_id,
                "linked_to": [],
                "object": "email_address",
                "reserved": false,
                "updated_at": now,
                "verification": { "attempts": null, "expire_at": null, "status": "verified", "strategy": "email_code" }
            }],
            "external_accounts": [],
            "external_id": null,
            "first_name": "Test",
            "has_image": false,
            "id": user_id,
            "image_url": "https://img.clerk.com/placeholder",
            "last_active_at": now,
            "last_name": "User",
            "last_sign_in_at": null,
            "locked": false,
            "object": "user",
            "password_enabled": true,
            "phone_numbers": [],
            "primary_email_address_id": email_id,
            "primary_phone_number_id": null,
            "primary_web3_wallet_id": null,
            "private_metadata": {},
            "public_metadata": {},
            "two_factor_enabled": false,
            "unsafe_metadata": {},
            "updated_at": now,
            "username": null,
            "web3_wallets": []
        })
    })
}

async fn post(
    url: &str,
    id: &str,
    timestamp: i64,
    signature: &str,
    body: Vec<u8>,
) -> anyhow::Result<(hyper::StatusCode, String)> {
    let uri: Uri = url.parse().with_context(|| format!("{url} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// URLs are supported (send to the receiver directly, not through TLS)");
    }
    let host = uri.host().context("the URL has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let authority = uri.authority().map_or(host.to_owned(), |a| a.to_string());
    let request = Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header("host", authority)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("clerk-sync/", env!("CARGO_PKG_VERSION")),
        )
        .header("svix-id", id)
        .header("svix-timestamp", timestamp.to_string())
        .header("svix-signature", signature)
        .body(Full::new(Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{self, Change, Field, Kind};
    #[test]
    fn builtin_events_parse_as_what_they_claim() {
        let shape = Shape {
            user_id: Some("user_abc"),
            email: Some("a@b.test"),
            org_id: Some("org_xyz"),
            role: "org:admin",
        };
        for kind in BUILTIN {
            let body = builtin_event(kind, &shape).unwrap().unwrap();
            let d = event::parse("msg_x".into(), &body, 0).unwrap();
            assert_eq!(d.event_type, *kind);
            let (mirrored, _) = event::action(kind).expect("every built-in is mirrored");
            match (mirrored, d.change) {
                (Kind::User, Change::Upsert(u)) => assert_eq!(u.text("email"), Some("a@b.test")),
                (Kind::User, Change::Delete(t)) => assert_eq!(t.id, "user_abc"),
                (Kind::Organization, Change::Upsert(o)) => {
                    assert_eq!(
                        (o.id.as_str(), o.text("name")),
                        ("org_xyz", Some("Test Organization"))
                    )
                }
                (Kind::Organization, Change::Delete(t)) => assert_eq!(t.id, "org_xyz"),
                (Kind::Membership, Change::Upsert(m)) => {
                    assert_eq!(m.text("organization_id"), Some("org_xyz"));
                    assert_eq!(m.text("user_id"), Some("user_abc"));
                    assert_eq!(m.text("role"), Some("org:admin"));
                    assert_eq!(m.id, membership_id("org_xyz", "user_abc"));
                }
                (Kind::Membership, Change::Delete(t)) => {
                    assert_eq!(t.id, membership_id("org_xyz", "user_abc"));
                    assert_eq!(t.column("user_id"), Some(&Field::Text("user_abc".into())));
                }
                (kind, change) => panic!("{kind:?}: {change:?}"),
            }
        }
        assert!(builtin_event("session.created", &shape).unwrap().is_none());
    }
}
