//! Vision calls, and the CPU work that goes with them (identify's scan of every template), run
//! on the engine's sized inference pool ([`crate::engine::InferencePool`]) within an admitted
//! place, never on the async executor; their domain errors become API errors through `?` (see
//! [`super::error`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Extension;

use super::error::ApiError;
use crate::admission::{Permit, Refused};
use crate::auth::Caller;
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

/// The API key id of a request's caller, the owner its inference places are counted against.
pub fn key_id(caller: Option<&Extension<Caller>>) -> Option<&str> {
    caller.map(|c| &*c.key_id)
}

/// Run a vision call on the inference pool with the loaded engine, once admission control gives
/// it a place ([`admit`], then [`Admitted::run`]).
pub async fn with_engine<T, F>(
    state: &SharedState,
    engine: Arc<Engine>,
    key: Option<&str>,
    f: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Engine, &Cancel) -> Result<T, VisionError> + Send + 'static,
{
    admit(state, key).await?.run(state, engine, f).await
}

/// A place among the running inferences, given by [`admit`]: work run with it holds it until
/// that work ends, and it is given back once the work and this handle are gone. A request takes
/// one before anything it cannot undo (consuming a liveness session), so that a refusal leaves
/// nothing spent; the hold's service time counts from the first work run with it, so the wait
/// in between (the session store) does not lengthen admission's average.
pub struct Admitted {
    permit: Arc<Mutex<Permit>>,
    working: AtomicBool,
}

impl Drop for Admitted {
    /// A place no work ran with (a lockout read before a session opens) gives no service time.
    fn drop(&mut self) {
        if !self.working.load(Ordering::Relaxed) {
            self.permit
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .untimed();
        }
    }
}

/// Ask admission control for a place: 503 `overloaded` at once when running and queue are
/// full; 429 `too_many_inferences` instead when `key`, the caller's API key id, already holds
/// its share of the places while other keys ask for places too (see [`crate::admission`]).
/// Refusals are counted by reason.
pub async fn admit(state: &SharedState, key: Option<&str>) -> Result<Admitted, ApiError> {
    let admitted = match key {
        Some(key) => state.admission.admit_for(key).await,
        None => state.admission.admit().await.map_err(Refused::from),
    };
    match admitted {
        Ok(permit) => Ok(Admitted {
            permit: Arc::new(Mutex::new(permit)),
            working: AtomicBool::new(false),
        }),
        Err(refused) => {
            state
                .metrics
                .admission_rejected
                .with_label_values(&[refused.label()])
                .inc();
            Err(refused.into())
        }
    }
}

impl Admitted {
    /// Run `f` on the inference pool within this place. When the request goes away (client
    /// disconnected, the timeout answered), the work stops at its next stage boundary; the
    /// place is held until then.
    pub async fn run<T, F>(
        &self,
        state: &SharedState,
        engine: Arc<Engine>,
        f: F,
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine, &Cancel) -> Result<T, VisionError> + Send + 'static,
    {
        if !self.working.swap(true, Ordering::Relaxed) {
            self.permit
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .restart_clock();
        }
        let permit = Arc::clone(&self.permit);
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
}
