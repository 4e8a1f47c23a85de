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
    let builtin = builtin_event(&args.event, args.user_id.as_deref(), args.email.as_deref())?;
    if builtin.is_none() && (args.user_id.is_some() || args.email.is_some()) {
        bail!(
            "--user-id and --email apply to the built-in events only (user.created, user.updated, \
             user.deleted); the file {} is sent byte for byte",
            args.event
        );
    }
    let secrets = secrets::load_secrets(args.secrets.secret_file.as_deref())?;
    let body = match builtin {
        Some(body) => body,
        None => std::fs::read(&args.event).with_context(|| {
            format!(
                "{} is neither user.created, user.updated, user.deleted nor a readable file",
                args.event
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

/// Builds a realistic Clerk envelope for the three user events, or `None`
/// when `event` is not one of them.
///
/// # Errors
/// When `user_id` is not a plausible id.
pub fn builtin_event(
    event: &str,
    user_id: Option<&str>,
    email: Option<&str>,
) -> anyhow::Result<Option<Vec<u8>>> {
    if !matches!(event, "user.created" | "user.updated" | "user.deleted") {
        return Ok(None);
    }
    let now = clock::now_ms();
    let user_id = match user_id {
        Some(id) if !id.is_empty() => id.to_owned(),
        Some(_) => bail!("--user-id must not be empty"),
        None => format!("user_{}", random_base62(27)?),
    };
    let data = if event == "user.deleted" {
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
    use crate::event::{self, Change};
    #[test]
    fn builtin_events_parse_as_what_they_claim() {
        for kind in ["user.created", "user.updated", "user.deleted"] {
            let body = builtin_event(kind, Some("user_abc"), Some("a@b.test"))
                .unwrap()
                .unwrap();
            let d = event::parse("msg_x".into(), &body, 0).unwrap();
            assert_eq!(d.event_type, kind);
            assert_eq!(d.object_id.as_deref(), Some("user_abc"));
            match d.change {
                Change::Upsert(u) => assert_eq!(u.text("email"), Some("a@b.test")),
                Change::Delete(_) => assert_eq!(kind, "user.deleted"),
                Change::Record => panic!("{kind} must be mirrored"),
            }
        }
        assert!(builtin_event("session.created", None, None)
            .unwrap()
            .is_none());
    }
}
