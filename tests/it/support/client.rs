//! HTTP through hyper's client: one request per connection, bounded in
//! time, and the [`Endpoint`] both server harnesses hand out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rusqlite::Connection;
use serde_json::Value;
use tokio::net::TcpStream;

use super::{base_headers, open_db, raw_exchange, raw_head, Delivery};

/// How long any one request may take to be answered.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A running server, however it was started: where it listens, its webhook
/// path and its database file.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub db_path: PathBuf,
    pub path: String,
}

impl Endpoint {
    /// POST to an arbitrary path.
    pub async fn post(&self, path: &str, headers: &[(String, Vec<u8>)], body: &[u8]) -> Resp {
        request(self.addr, "POST", path, headers, body.to_vec()).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        request(self.addr, "GET", path, &base_headers(), Vec::new()).await
    }

    /// POST `body` to the webhook path with `headers` sent byte for byte
    /// (values hyper's client would refuse to build included).
    pub async fn post_raw(&self, headers: &[(String, Vec<u8>)], body: &[u8]) -> Resp {
        let length = format!("content-length: {}", body.len());
        let head = raw_head(self.addr, &self.path, headers, &[&length]);
        raw_exchange(self.addr, &head, &[body]).await
    }

    /// POST a delivery to the configured webhook path.
    pub async fn deliver(&self, d: &Delivery) -> Resp {
        self.post(&self.path, &d.headers(), &d.body).await
    }

    pub fn db(&self) -> Connection {
        open_db(&self.db_path)
    }
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Assert the body is a JSON object carrying a non-empty human-readable string.
    pub fn assert_json_reason(&self) {
        let v = self
            .json()
            .unwrap_or_else(|| panic!("{} body is not JSON: {:?}", self.status, self.text()));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("{} body is not a JSON object: {v}", self.status));
        assert!(
            obj.values()
                .any(|x| x.as_str().is_some_and(|s| !s.trim().is_empty())),
            "{} body has no human-readable reason: {v}",
            self.status
        );
    }
}

/// One HTTP/1.1 request on a fresh connection (hyper client), bounded in time.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, Vec<u8>)],
    body: Vec<u8>,
) -> Resp {
    let fut = async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("http1 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        for (k, v) in headers {
            b = b.header(
                k.as_str(),
                HeaderValue::from_bytes(v).expect("valid header value"),
            );
        }
        let req = b.body(Full::new(Bytes::from(body))).expect("request");
        let res = sender.send_request(req).await.expect("send request");
        let status = res.status().as_u16();
        let bytes = res
            .into_body()
            .collect()
            .await
            .expect("read body")
            .to_bytes();
        Resp {
            status,
            body: bytes.to_vec(),
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} got no answer within {REQUEST_TIMEOUT:?}"))
}

/// One delivery on a fresh connection. Unlike [`request`], a connection cut
/// by a dying server is `None` instead of a panic.
pub async fn try_deliver(addr: SocketAddr, path: &str, d: &Delivery) -> Option<u16> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let mut req = Request::post(path).header("host", addr.to_string());
    for (k, v) in d.headers() {
        req = req.header(k, v);
    }
    let req = req.body(Full::new(Bytes::from(d.body.clone()))).ok()?;
    let res = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(req))
        .await
        .ok()?
        .ok()?;
    let status = res.status().as_u16();
    res.into_body().collect().await.ok()?;
    Some(status)
}

/// `(index of the delivery, status or None)`, shared by concurrent senders.
pub type Answers = Arc<Mutex<Vec<(usize, Option<u16>)>>>;

/// Sends every delivery from `conns` concurrent senders, each taking the
/// next one not yet sent, and records `(index, status)` in `results` as
/// answers arrive (`None`: the connection failed, and that sender stops).
/// Await the returned tasks to know all are done.
pub fn send_concurrently(
    addr: SocketAddr,
    path: &str,
    deliveries: Arc<Vec<Delivery>>,
    conns: usize,
    results: Answers,
) -> Vec<tokio::task::JoinHandle<()>> {
    let next = Arc::new(AtomicU64::new(0));
    (0..conns)
        .map(|_| {
            let (deliveries, next, results, path) = (
                deliveries.clone(),
                next.clone(),
                results.clone(),
                path.to_owned(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    let Some(d) = deliveries.get(i) else { break };
                    let status = try_deliver(addr, &path, d).await;
                    results.lock().unwrap().push((i, status));
                    if status.is_none() {
                        break;
                    }
                }
            })
        })
        .collect()
}
