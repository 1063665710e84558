//! The agent's HTTP endpoint: `GET /health`, `GET /metrics`, `GET /manifest`, on loopback.
//!
//! Built to survive what a scanner or a broken client sends: requests are bounded (headers must
//! arrive within [`HEADER_TIMEOUT`] and fit in [`MAX_HEADER_BYTES`], a connection lives at most
//! [`CONNECTION_TIMEOUT`], bodies are never read), and at most [`MAX_CONNECTIONS`] are served at
//! once; more are closed at once. Nothing here touches the vault: answers come from
//! [`AgentState`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::state::AgentState;

/// Time a client has to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection (keep-alive included).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head accepted (hyper's minimum buffer).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// Serves until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AgentState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, &req)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(permit);
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(Full::new(body.into()))
        .expect("invariant: static response parts are valid")
}

/// The answer to one request.
pub fn respond(state: &AgentState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    route(state, req.method(), req.uri().path())
}

fn route(state: &AgentState, method: &Method, path: &str) -> Response<Full<Bytes>> {
    const JSON: &str = "application/json";
    if method != Method::GET && method != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            JSON,
            r#"{"error":"only GET"}"#,
        );
    }
    let now = SystemTime::now();
    match path {
        "/health" => {
            let h = state.health(now);
            let status = if h.healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = serde_json::to_vec(&h).expect("invariant: health serializes");
            reply(status, JSON, body)
        }
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics_text(now),
        ),
        "/manifest" => match state.manifest() {
            Some(m) => reply(StatusCode::OK, JSON, m),
            None => reply(
                StatusCode::NOT_FOUND,
                JSON,
                r#"{"error":"no last-known-good yet"}"#,
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            JSON,
            r#"{"error":"not found; try /health, /metrics or /manifest"}"#,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::state::LkgInfo;

    #[test]
    fn health_is_503_until_an_lkg_exists_and_once_it_is_older_than_rpo_plus_grace() {
        let tmp = tempfile::tempdir().unwrap();
        let min = Duration::from_secs(60);
        let s = AgentState::new(tmp.path(), 15 * min, 5 * min, 15 * min);
        let get = |path| route(&s, &Method::GET, path).status();
        assert_eq!(get("/health"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get("/manifest"), StatusCode::NOT_FOUND);
        let taken = SystemTime::now() - 19 * min;
        s.set_lkg(
            Some(LkgInfo {
                snapshot: "ab".repeat(32),
                time: taken,
            }),
            Some(b"{}".to_vec()),
        );
        assert_eq!(get("/health"), StatusCode::OK, "19 min < 15 + 5");
        assert_eq!(get("/manifest"), StatusCode::OK);
        let h = s.health(taken + 21 * min);
        assert!(!h.healthy);
        assert!(h.reason.unwrap().contains("past the RPO"));
        assert_eq!(get("/nope"), StatusCode::NOT_FOUND);
        assert_eq!(
            route(&s, &Method::POST, "/health").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let text = s.metrics_text(SystemTime::now());
        assert!(text.contains("atlasvault_lkg_age_seconds"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
