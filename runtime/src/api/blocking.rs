//! Vision calls, and the CPU work that goes with them (identify's scan of every template), run
//! on the engine's sized inference pool ([`crate::engine::InferencePool`]) within an admitted
//! place, never on the async executor; their domain errors become API errors through `?` (see
//! [`super::error`]).

use std::sync::Arc;

use super::error::ApiError;
use crate::engine::Engine;
use crate::state::SharedState;
use crate::vision::{Cancel, VisionError};

/// Cancels the work when the request's future is dropped (client gone, timeout answered).
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Run a vision call on the inference pool with the loaded engine, once admission control gives
/// it a place (503 `overloaded` at once when running and queue are full). When the request goes
/// away (client disconnected, the timeout answered), the work stops at its next stage boundary;
/// its place is held until then.
pub async fn with_engine<T, F>(
    state: &SharedState,
    engine: Arc<Engine>,
    f: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Engine, &Cancel) -> Result<T, VisionError> + Send + 'static,
{
    let permit = match state.admission.admit().await {
        Ok(p) => p,
        Err(overloaded) => {
            state
                .metrics
                .admission_rejected
                .with_label_values(&[overloaded.reason.label()])
                .inc();
            return Err(overloaded.into());
        }
    };
    let cancel = Cancel::default();
    let _on_drop = CancelOnDrop(cancel.clone());
    let metrics = state.metrics.clone();
    let pool_engine = engine.clone();
    let job = pool_engine.pool.run(move || {
        let _permit = permit;
        let result = f(&engine, &cancel);
        if matches!(result, Err(VisionError::Cancelled { .. })) {
            metrics.inferences_cancelled.inc();
        }
        result
    });
    Ok(job
        .await
        .map_err(|e| ApiError::internal(format!("vision task failed: {e}")))??)
}
