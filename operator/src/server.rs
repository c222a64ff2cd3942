//! HTTP endpoints of the operator process: `/metrics`, `/healthz` (liveness) and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::{Error, Result};

/// State shared with the handlers.
#[derive(Clone)]
pub struct ServerState {
    /// Metrics to expose.
    pub metrics: Metrics,
    /// Set once the API client works; standby replicas are ready too (they can take over).
    pub ready: Arc<AtomicBool>,
    /// The sidecar webhook, when this process serves it: not ready until its certificate is
    /// loaded (else the webhook Service would send admissions to a replica whose TLS handshakes
    /// fail, and `failurePolicy: Ignore` would admit pods without their sidecar) and its
    /// FaceKeyDeployment cache has synced (else each review reads its resource from the API
    /// server, which may fail or outlast the API server's timeout).
    pub webhook: Option<crate::webhook::Serving>,
}

async fn metrics(State(state): State<ServerState>) -> (StatusCode, String) {
    match state.metrics.encode() {
        Ok(text) => (StatusCode::OK, text),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn readyz(State(state): State<ServerState>) -> (StatusCode, &'static str) {
    if !state.ready.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting, or draining before exit",
        )
    } else if let Some(why) = state.webhook.as_ref().and_then(|w| w.not_ready()) {
        (StatusCode::SERVICE_UNAVAILABLE, why)
    } else {
        (StatusCode::OK, "ok")
    }
}

/// The router (exposed for tests).
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: ServerState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = facekey_net::listen_tokio(addr).map_err(|source| Error::Io {
        path: addr.to_string(),
        source,
    })?;
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Io {
            path: addr.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let resp = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn endpoints() {
        let state = ServerState {
            metrics: Metrics::new().unwrap(),
            ready: Arc::new(AtomicBool::new(false)),
            webhook: None,
        };
        state
            .metrics
            .reconciles
            .with_label_values(&["success"])
            .inc();
        state
            .metrics
            .blocked_rollouts
            .with_label_values(&["ns", "fk"])
            .inc();
        let r = router(state.clone());
        assert_eq!(get(r.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(r.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.ready.store(true, Ordering::Relaxed);
        assert_eq!(get(r.clone(), "/readyz").await.0, StatusCode::OK);
        // Serving the webhook: not ready until its certificate is loaded and its
        // FaceKeyDeployment cache has synced.
        let cert = Arc::new(crate::webhook::server::ReloadingCert::default());
        let synced = Arc::new(AtomicBool::new(false));
        let webhook = router(ServerState {
            webhook: Some(crate::webhook::Serving {
                cert: cert.clone(),
                resources_synced: synced.clone(),
            }),
            ..state.clone()
        });
        let (code, why) = get(webhook.clone(), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(why.contains("certificate"), "{why}");
        let pair = rcgen::generate_simple_self_signed(vec!["facekey-webhook".into()]).unwrap();
        cert.set_pem(&pair.cert.pem(), &pair.signing_key.serialize_pem())
            .unwrap();
        let (code, why) = get(webhook.clone(), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(why.contains("FaceKeyDeployment cache"), "{why}");
        synced.store(true, Ordering::Release);
        assert_eq!(get(webhook, "/readyz").await.0, StatusCode::OK);
        let (code, text) = get(r, "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(
            text.contains("facekey_operator_reconciles_total{result=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "facekey_operator_blocked_rollouts_total{name=\"fk\",namespace=\"ns\"} 1"
            )
        );
        assert!(text.contains("# TYPE facekey_operator_reconcile_duration_seconds histogram"));
    }
}
