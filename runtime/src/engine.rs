//! The inference engine: the vision pipeline that measures faces and the verifier that decides,
//! loaded once at start-up from the configuration and shared by every request, and the one
//! sized thread pool every inference runs on.
//!
//! [`InferencePool`] holds a fixed number of threads, started with the engine and never more:
//! admission control ([`crate::admission`]) lets at most `max_inflight` inferences run, each on
//! one pool thread, and the passive-liveness branch a verification runs beside align/embed/
//! quality is a `rayon::join` on the same pool (taken by an idle pool thread, or run after the
//! other branch on the same thread when none is idle). So no request starts an OS thread of its
//! own and the threads doing inference are bounded by the pool's size.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::Config;
use crate::fusion::{FusionMlp, WeightsError};
use crate::verifier::Verifier;
use crate::vision::{Vision, VisionError};

/// Why the engine could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The fusion weights are missing, unknown or invalid.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// A model download was requested; the runtime only loads files.
    #[error(
        "{uri_env}={0} is not supported: the runtime never downloads models; mount the model \
         (models.spoof.pvc or configMap) and set {dir_env}",
        uri_env = facekey_settings::env::SPOOF_MODEL_URI,
        dir_env = facekey_settings::env::SPOOF_MODEL_DIR
    )]
    ModelUri(String),
    /// ONNX Runtime or a model could not be loaded.
    #[error(transparent)]
    Vision(#[from] VisionError),
    /// The inference threads could not be started.
    #[error("cannot start {threads} inference threads: {message}")]
    Pool {
        /// Threads asked for.
        threads: usize,
        /// The OS's or rayon's reason.
        message: String,
    },
}

/// The fixed-size thread pool every inference runs on (see the module docs).
pub struct InferencePool {
    pool: rayon::ThreadPool,
    threads: usize,
    busy: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl std::fmt::Debug for InferencePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferencePool")
            .field("threads", &self.threads)
            .field("busy", &self.busy())
            .finish()
    }
}

/// Counts a job as running while it lives.
struct Busy {
    busy: Arc<AtomicUsize>,
}

impl Busy {
    fn enter(busy: &Arc<AtomicUsize>, peak: &AtomicUsize) -> Self {
        let now = busy.fetch_add(1, Ordering::AcqRel) + 1;
        peak.fetch_max(now, Ordering::AcqRel);
        Self { busy: busy.clone() }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InferencePool {
    /// Threads for `in_flight` concurrent inferences, doubled when liveness runs beside the
    /// rest of a verification (`parallel_liveness`), so that branch finds an idle thread.
    pub fn size_for(in_flight: usize, parallel_liveness: bool) -> usize {
        in_flight.max(1) * if parallel_liveness { 2 } else { 1 }
    }

    /// Start `threads` (at least 1) threads named `facekey-infer-<n>`.
    pub fn new(threads: usize) -> Result<Self, EngineError> {
        let threads = threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("facekey-infer-{i}"))
            .build()
            .map_err(|e| EngineError::Pool {
                threads,
                message: e.to_string(),
            })?;
        Ok(Self {
            pool,
            threads,
            busy: Arc::new(AtomicUsize::new(0)),
            peak: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The number of threads (fixed).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Jobs running now (admitted inferences; their liveness branches run inside them).
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Acquire)
    }

    /// Most jobs ever running at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }

    /// Run `f` on a pool thread and return its result; `Err` with the panic message when it
    /// panicked (the pool thread survives). Dropping the returned future does not stop `f`
    /// (cancel it through its own flag).
    pub fn run<T, F>(
        &self,
        f: F,
    ) -> impl std::future::Future<Output = Result<T, String>> + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (busy, peak) = (self.busy.clone(), self.peak.clone());
        self.pool.spawn(move || {
            let running = Busy::enter(&busy, &peak);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
                p.downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".to_owned())
            });
            // No longer running once the answer can be seen, so a caller never finds its own
            // finished job counted.
            drop(running);
            // The receiver is gone when the request went away; the result is then unused.
            let _ = tx.send(result);
        });
        async move {
            rx.await
                .map_err(|_| "inference job dropped".to_owned())
                .and_then(|r| r)
        }
    }
}

/// Everything loaded at start-up that requests compute with.
#[derive(Debug)]
pub struct Engine {
    /// The face pipeline: detection, embedding, liveness, quality (measurements).
    pub vision: Vision,
    /// Thresholds, policy and fusion weights (decisions).
    pub verifier: Verifier,
    /// The threads inference runs on.
    pub pool: InferencePool,
}

impl Engine {
    /// Load the engine described by the configuration.
    pub fn load(config: &Config) -> Result<Self, EngineError> {
        let fusion = FusionMlp::load(&config.weights)?;
        if let Some(uri) = &config.spoof_model_uri {
            return Err(EngineError::ModelUri(uri.clone()));
        }
        let verifier = Verifier::new(fusion, config.verifier_config());
        if !verifier.config().check_liveness {
            tracing::warn!(
                "INSECURE: passive liveness is off ({}=off); every face counts as live and a \
                 printed photo of an enrolled person will be accepted",
                facekey_settings::env::LIVENESS
            );
        }
        let vision_config = config.vision_config();
        let pool = InferencePool::new(InferencePool::size_for(
            config.max_inflight,
            vision_config.runtime.parallel_liveness,
        ))?;
        let vision = Vision::load(vision_config)?;
        Ok(Self {
            vision,
            verifier,
            pool,
        })
    }
}

/// The ONNX models the pipeline runs, by metric name and kind.
pub fn loaded_models(vision: &Vision) -> Vec<(&'static str, &'static str)> {
    let mut models = vec![
        ("mtcnn_pnet", "detection"),
        ("mtcnn_rnet", "detection"),
        ("mtcnn_onet", "detection"),
        ("dlib_resnet", "embedding"),
    ];
    let mode = vision.config().liveness.mode;
    if mode.uses_dtn() {
        models.push(("dtn", "liveness"));
    }
    if mode.uses_minifas() {
        models.push(("minifas", "liveness"));
    }
    models
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    #[test]
    fn sized_for_in_flight_and_the_liveness_branch() {
        assert_eq!(InferencePool::size_for(3, true), 6);
        assert_eq!(InferencePool::size_for(3, false), 3);
        assert_eq!(InferencePool::size_for(0, false), 1);
    }

    /// Many jobs, each with a nested join (the liveness branch's shape), run on the pool's
    /// threads only: no thread outside it ever runs a branch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nested_branches_never_leave_the_pool() {
        let pool = Arc::new(InferencePool::new(3).unwrap());
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let record = {
            let seen = seen.clone();
            move || {
                let name = std::thread::current().name().unwrap_or("?").to_owned();
                seen.lock().unwrap().insert(name);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        };
        let jobs: Vec<_> = (0..40)
            .map(|i| {
                let (a, b) = (record.clone(), record.clone());
                pool.run(move || {
                    rayon::join(a, b);
                    i
                })
            })
            .collect();
        let mut sum = 0;
        for j in jobs {
            sum += j.await.unwrap();
        }
        assert_eq!(sum, (0..40).sum::<i32>());
        let seen = seen.lock().unwrap();
        assert!(seen.len() <= 3, "{seen:?}");
        assert!(
            seen.iter().all(|n| n.starts_with("facekey-infer-")),
            "{seen:?}"
        );
        assert_eq!(pool.busy(), 0);
    }

    /// Behind admission control (as every request's inference is), at most `in_flight` jobs run
    /// at once however many are submitted, each with its nested branch, on the pool's threads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admitted_jobs_are_bounded_by_admission() {
        let admission = Arc::new(crate::admission::Admission::new(crate::admission::Limits {
            in_flight: 2,
            queue: 64,
            max_wait: std::time::Duration::from_secs(30),
            queue_max_load: f64::INFINITY,
        }));
        let pool = Arc::new(InferencePool::new(InferencePool::size_for(2, true)).unwrap());
        let tasks: Vec<_> = (0..24)
            .map(|_| {
                let (admission, pool) = (admission.clone(), pool.clone());
                tokio::spawn(async move {
                    // Released once the answer arrived, when the job no longer counts as
                    // running. (The server moves the permit into the job instead, so a
                    // successor may start a moment before the finished job stops counting.)
                    let permit = admission.admit().await.unwrap();
                    let name = pool
                        .run(move || {
                            let work = || std::thread::sleep(std::time::Duration::from_millis(5));
                            rayon::join(work, work);
                            std::thread::current().name().map(str::to_owned)
                        })
                        .await
                        .unwrap();
                    drop(permit);
                    name
                })
            })
            .collect();
        for t in tasks {
            let name = t.await.unwrap().unwrap();
            assert!(name.starts_with("facekey-infer-"), "{name}");
        }
        assert!(
            (1..=2).contains(&pool.peak()),
            "at most 2 admitted jobs at once, saw {}",
            pool.peak()
        );
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_pool_lives_on() {
        let pool = InferencePool::new(1).unwrap();
        let err = pool.run(|| -> u8 { panic!("boom") }).await.unwrap_err();
        assert!(err.contains("boom"), "{err}");
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }
}
