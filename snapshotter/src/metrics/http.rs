//! The HTTP endpoint (`GET /metrics`) on the daemon's tokio runtime. Bounded
//! so that scrapers can never hold up the gRPC service: a few connections at
//! a time (more are closed at once), one request each, a deadline per
//! connection, and rendering on the blocking pool with a deadline of its own.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::CONTENT_TYPE;
use hyper::server::conn::Http;
use hyper::service::service_fn;
use hyper::{Body, Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::Metrics;

/// Connections served at once.
const MAX_CONNECTIONS: usize = 4;
/// Longest a connection may take, from accept to the last byte sent.
const CONNECTION_LIMIT: Duration = Duration::from_secs(10);
/// Longest a rendering may take.
const RENDER_LIMIT: Duration = Duration::from_secs(5);

/// Serves `metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: back off instead of spinning.
                tracing::warn!(error = %e, "cannot accept a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("too many metrics connections; closing one");
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, metrics.clone()));
            let connection = Http::new()
                .http1_only(true)
                .http1_keep_alive(false)
                .serve_connection(stream, service);
            match tokio::time::timeout(CONNECTION_LIMIT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics connection failed"),
                Err(_) => {
                    tracing::debug!(limit = ?CONNECTION_LIMIT, "metrics connection timed out")
                }
            }
            drop(slot);
        });
    }
}

async fn answer(req: Request<Body>, metrics: Arc<Metrics>) -> Result<Response<Body>, Infallible> {
    if req.uri().path() != "/metrics" {
        return Ok(status(
            StatusCode::NOT_FOUND,
            "only /metrics is served here\n",
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(status(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n"));
    }
    let rendering = tokio::task::spawn_blocking(move || metrics.render());
    Ok(match tokio::time::timeout(RENDER_LIMIT, rendering).await {
        Ok(Ok(text)) => Response::builder()
            .header(CONTENT_TYPE, super::CONTENT_TYPE)
            .body(Body::from(text))
            .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR, "")),
        Ok(Err(_)) => status(StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n"),
        Err(_) => status(StatusCode::SERVICE_UNAVAILABLE, "rendering timed out\n"),
    })
}

fn status(code: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = code;
    response
}
