//! The baseline of `bench/http/middleware.sh`: a bare axum handler for `POST /v1/score` that does
//! the runtime's work for one feature vector (the same request type, the same validation, the
//! same fusion forward pass with the same weights, the same answer type) and nothing else: no
//! API key, metrics, request id, tracing, timeout, CORS or connection limits, served by plain
//! `axum::serve`. The runtime's rate over this one's is the cost of its serving layer.
//!
//! usage: cargo run --release --example bare_score -p facekey-runtime -- 127.0.0.1:PORT

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use facekey_runtime::api::score::{
    ScoreAnswer, ScoreRequest, ScoreResponse, ScoreResult, validate_features,
};
use facekey_runtime::fusion::FusionMlp;
use facekey_runtime::verifier::{Verifier, VerifierConfig};
use std::sync::Arc;

async fn score(
    State(verifier): State<Arc<Verifier>>,
    Json(req): Json<ScoreRequest>,
) -> Result<Json<ScoreAnswer>, (StatusCode, String)> {
    let features = req
        .features
        .ok_or((StatusCode::UNPROCESSABLE_ENTITY, "features".to_owned()))?;
    let x = validate_features(&features, "features")
        .map_err(|_| (StatusCode::UNPROCESSABLE_ENTITY, "features".to_owned()))?;
    let forward = verifier.fusion().forward(&x);
    Ok(Json(ScoreAnswer::Single(ScoreResponse {
        result: ScoreResult {
            probability: forward.probability,
            decision: verifier.fused_decision(forward.probability),
            layers: req.include_layers.then_some(forward.layers),
        },
        threshold: verifier.threshold(),
        weights: verifier.fusion().name().to_owned(),
    })))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".to_owned());
    let verifier = Arc::new(Verifier::new(
        FusionMlp::reference()?,
        VerifierConfig::default(),
    ));
    let app = Router::new()
        .route("/v1/score", post(score))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(verifier);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
