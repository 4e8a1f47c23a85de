//! Routing: which handler answers a request, by path and method.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::body::BodyBudget;
use super::{error_response, json_response, method_not_allowed, webhook, Body};
use crate::metrics::Metrics;
use crate::signature::Secrets;
use crate::store::Store;

/// What every request handler shares.
pub struct App {
    pub path: String,
    pub secrets: Secrets,
    pub tolerance: u64,
    pub max_body: u64,
    pub store: Store,
    pub metrics: Metrics,
    pub bodies: BodyBudget,
}

/// Routes one request. Never fails: every problem is an HTTP answer.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let response = if path == app.path {
        if req.method() == Method::POST {
            webhook::webhook(&app, req).await
        } else {
            method_not_allowed("POST")
        }
    } else if path == "/healthz" {
        match *req.method() {
            Method::GET | Method::HEAD => health(&app).await,
            _ => method_not_allowed("GET, HEAD"),
        }
    } else if path == "/metrics" {
        match *req.method() {
            Method::GET | Method::HEAD => metrics(&app).await,
            _ => method_not_allowed("GET, HEAD"),
        }
    } else {
        error_response(StatusCode::NOT_FOUND, "not found")
    };
    Ok(response)
}

async fn health(app: &App) -> Response<Body> {
    match app.store.health().await {
        Ok(()) => json_response(StatusCode::OK, &json!({ "ok": true })),
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "health check failed");
            error_response(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
    }
}

/// The counters, with the database's figures read now.
async fn metrics(app: &App) -> Response<Body> {
    let text = match app.store.figures().await {
        Ok(figures) => app.metrics.encode(&figures),
        Err(e) => {
            tracing::warn!(error = %e, "metrics unavailable");
            return error_response(StatusCode::SERVICE_UNAVAILABLE, "database unavailable");
        }
    };
    match text {
        Ok(text) => {
            let mut response = Response::new(Body::from(text));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics unavailable");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}
