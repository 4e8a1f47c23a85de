//! The three signature headers, each read under its `svix-` name or,
//! failing that, its Standard Webhooks `webhook-` name.

use hyper::header::HeaderMap;

use super::rejection::Rejection;
use crate::signature;

/// The three signature headers, each read under its `svix-` name or, failing
/// that, its Standard Webhooks `webhook-` name.
pub struct SvixHeaders {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
}

impl SvixHeaders {
    /// The headers, or why not, with the id when that much was well-formed
    /// (so the log line of the refusal can name the delivery).
    pub fn from(headers: &HeaderMap) -> Result<Self, (Option<String>, Rejection)> {
        let id = header(headers, "svix-id", "webhook-id").map_err(|r| (None, r))?;
        if !signature::is_valid_id(id) {
            return Err((None, Rejection::MalformedHeader("svix-id")));
        }
        let rest = || -> Result<(i64, String), Rejection> {
            let timestamp =
                signature::parse_timestamp(header(headers, "svix-timestamp", "webhook-timestamp")?)
                    .ok_or(Rejection::MalformedHeader("svix-timestamp"))?;
            let signature = signatures(headers)?;
            if signature.trim().is_empty() {
                return Err(Rejection::MalformedHeader("svix-signature"));
            }
            Ok((timestamp, signature))
        };
        match rest() {
            Ok((timestamp, signature)) => Ok(Self {
                id: id.to_owned(),
                timestamp,
                signature,
            }),
            Err(rejection) => Err((Some(id.to_owned()), rejection)),
        }
    }
}

fn header<'h>(
    headers: &'h HeaderMap,
    name: &'static str,
    fallback: &'static str,
) -> Result<&'h str, Rejection> {
    let value = headers
        .get(name)
        .or_else(|| headers.get(fallback))
        .ok_or(Rejection::MissingHeader(name))?;
    value.to_str().map_err(|_| Rejection::MalformedHeader(name))
}

/// Every signature entry, also when a proxy or client split them over
/// several header lines: a valid entry in the second line still counts.
fn signatures(headers: &HeaderMap) -> Result<String, Rejection> {
    let name = "svix-signature";
    let key = if headers.contains_key(name) {
        name
    } else {
        "webhook-signature"
    };
    let mut lines = headers.get_all(key).iter().peekable();
    if lines.peek().is_none() {
        return Err(Rejection::MissingHeader(name));
    }
    // Bytes that are not text can only spoil their own entry, which then
    // fails to decode and is skipped like any other malformed one.
    let parts: Vec<_> = lines
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .collect();
    Ok(parts.join(" "))
}
