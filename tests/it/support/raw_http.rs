//! Raw HTTP/1.1 exchanges, for requests hyper would not build, and the
//! parsing of what comes back.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Resp, REQUEST_TIMEOUT};

/// A raw HTTP/1.1 exchange for requests hyper would not build (oversized or
/// chunked bodies the server may refuse early, odd header bytes). The whole
/// `head` must include the final CRLFCRLF. Write errors are ignored (the
/// server may answer and close before reading everything); then the answer
/// is read until EOF, error or the time limit.
pub async fn raw_exchange(addr: SocketAddr, head: &[u8], body_parts: &[&[u8]]) -> Resp {
    let head = head.to_vec();
    let parts: Vec<Vec<u8>> = body_parts.iter().map(|p| p.to_vec()).collect();
    let fut = async move {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut rd, mut wr) = stream.into_split();
        // Write in the background so a server that answers early (413, 400)
        // and stops reading cannot stall the exchange.
        let writer = tokio::spawn(async move {
            if wr.write_all(&head).await.is_err() {
                return wr;
            }
            for part in &parts {
                if wr.write_all(part).await.is_err() {
                    break;
                }
            }
            let _ = wr.flush().await;
            wr
        });
        let mut got = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&chunk[..n]);
                    if response_complete(&got) {
                        break;
                    }
                }
            }
        }
        writer.abort();
        parse_raw_response(&got)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("raw request got no complete answer within {REQUEST_TIMEOUT:?}"))
}

/// Build a raw request head.
pub fn raw_head(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, Vec<u8>)],
    extra: &[&str],
) -> Vec<u8> {
    let mut h =
        format!("POST {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n").into_bytes();
    for (k, v) in headers {
        h.extend_from_slice(k.as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(v);
        h.extend_from_slice(b"\r\n");
    }
    for line in extra {
        h.extend_from_slice(line.as_bytes());
        h.extend_from_slice(b"\r\n");
    }
    h.extend_from_slice(b"\r\n");
    h
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split_head(raw: &[u8]) -> Option<(String, &[u8])> {
    let end = find(raw, b"\r\n\r\n")?;
    Some((
        String::from_utf8_lossy(&raw[..end]).into_owned(),
        &raw[end + 4..],
    ))
}

fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn response_complete(raw: &[u8]) -> bool {
    let Some((head, rest)) = split_head(raw) else {
        return false;
    };
    if let Some(len) = header_value(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        return rest.len() >= len;
    }
    if header_value(&head, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return find(rest, b"0\r\n\r\n").is_some();
    }
    false
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(rest, b"\r\n") {
        let size_txt = String::from_utf8_lossy(&rest[..eol]);
        let size =
            usize::from_str_radix(size_txt.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        rest = &rest[eol + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[(size + 2).min(rest.len())..];
    }
    out
}

fn parse_raw_response(raw: &[u8]) -> Resp {
    let (head, rest) = split_head(raw).unwrap_or_else(|| {
        panic!(
            "no HTTP response head received; got {:?}",
            String::from_utf8_lossy(raw)
        )
    });
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let body = if let Some(len) =
        header_value(&head, "content-length").and_then(|v| v.parse::<usize>().ok())
    {
        rest[..len.min(rest.len())].to_vec()
    } else if header_value(&head, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Resp { status, body }
}
