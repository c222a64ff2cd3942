//! Store and vision calls run on the blocking thread pool (disk commits, model inference), never
//! on the async executor; their domain errors become API errors through `?` (see [`super::error`]).

use std::sync::Arc;

use super::error::ApiError;
use crate::engine::Engine;
use crate::state::SharedState;
use crate::store::{StoreError, TemplateStore};
use crate::vision::VisionError;

/// Run a store operation on the blocking pool.
pub async fn with_store<T, F>(state: &SharedState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&dyn TemplateStore) -> Result<T, StoreError> + Send + 'static,
{
    let store = state.store.clone();
    Ok(tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| ApiError::internal(format!("store task failed: {e}")))??)
}

/// Run a vision call on the blocking pool with the loaded engine.
pub async fn with_engine<T, F>(engine: Arc<Engine>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Engine) -> Result<T, VisionError> + Send + 'static,
{
    Ok(tokio::task::spawn_blocking(move || f(&engine))
        .await
        .map_err(|e| ApiError::internal(format!("vision task failed: {e}")))??)
}
