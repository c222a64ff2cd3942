//! ONNX Runtime glue: finding the shared library without user-exported paths, initialising it
//! once per process, and model sessions shared across threads.
//!
//! `ort` 2.0.0-rc.15 needs `&mut Session` to run, so each model is held by a [`SessionPool`]: one
//! or more sessions behind mutexes, picked round-robin (the first free one wins). The default is
//! one session per model running on one intra-op thread: concurrent requests still overlap on
//! different models, and on the 2-vCPU target more sessions or threads measured no faster (see
//! [`super::config::RuntimeConfig`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use ort::environment::Environment;
use ort::session::{Session, SessionOutputs, builder::GraphOptimizationLevel};
use ort::value::TensorRef;

/// Environment variable naming the ONNX Runtime library explicitly (like `--ort-library`).
pub const ORT_LIBRARY_ENV: &str = "FACEKEY_ORT_LIBRARY";
/// The `ort` crate's own environment variable for the library path, honoured second.
pub const ORT_DYLIB_PATH_ENV: &str = "ORT_DYLIB_PATH";
/// Directory, relative to the repository root, where `scripts/setup-onnxruntime.sh` installs it.
pub const REPO_ORT_DIR: &str = ".tools/onnxruntime";

/// File names the library is searched under (versioned name from the wheel first).
#[cfg(target_os = "linux")]
pub const LIBRARY_NAMES: &[&str] = &["libonnxruntime.so.1.32.0", "libonnxruntime.so"];
/// File names the library is searched under.
#[cfg(target_os = "macos")]
pub const LIBRARY_NAMES: &[&str] = &["libonnxruntime.1.32.0.dylib", "libonnxruntime.dylib"];
/// File names the library is searched under.
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub const LIBRARY_NAMES: &[&str] = &["onnxruntime.dll"];

/// Failure to find, load or initialise ONNX Runtime.
#[derive(Debug, thiserror::Error)]
pub enum OrtSetupError {
    /// No candidate library file exists and the system loader could not find one either.
    #[error(
        "ONNX Runtime library not found; run scripts/setup-onnxruntime.sh (installs it into \
         <repo>/{REPO_ORT_DIR}) or point --ort-library / {ORT_LIBRARY_ENV} at \
         libonnxruntime.so.1.32.0. Tried: {}",
        display_paths(tried)
    )]
    NotFound {
        /// Every location that was tried, in order.
        tried: Vec<String>,
    },
    /// An explicitly configured library path (flag or environment) does not exist.
    #[error("ONNX Runtime library {path} (from {origin}) does not exist")]
    ExplicitMissing {
        /// The configured path.
        path: PathBuf,
        /// Where the path came from (flag or variable name).
        origin: String,
    },
    /// The library exists but could not be loaded (wrong file, architecture or version).
    #[error("failed to load the ONNX Runtime library {path}")]
    Load {
        /// The library file.
        path: PathBuf,
        /// The loader's error.
        #[source]
        source: ort::LoadDynamicError,
    },
    /// The ONNX Runtime environment could not be created.
    #[error("failed to create the ONNX Runtime environment")]
    Environment(#[source] ort::Error),
}

fn display_paths(paths: &[String]) -> String {
    paths.join(", ")
}

/// Where the ONNX Runtime library may come from, in resolution order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibrarySource {
    /// An explicit path (flag or `FACEKEY_ORT_LIBRARY`, or `ORT_DYLIB_PATH`): used alone.
    Explicit {
        /// The configured path.
        path: PathBuf,
        /// Where it came from, for error messages.
        origin: String,
    },
    /// Candidate files found by searching near the executable and the repository.
    Search(Vec<PathBuf>),
}

/// Works out where to load ONNX Runtime from: `explicit` (e.g. `--ort-library`), then
/// `FACEKEY_ORT_LIBRARY`, then `ORT_DYLIB_PATH`; otherwise the search list of
/// [`library_search_paths`].
pub fn library_source(explicit: Option<&Path>) -> LibrarySource {
    if let Some(p) = explicit {
        return LibrarySource::Explicit {
            path: p.to_path_buf(),
            origin: "configuration (--ort-library)".into(),
        };
    }
    for var in [ORT_LIBRARY_ENV, ORT_DYLIB_PATH_ENV] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return LibrarySource::Explicit {
                path: PathBuf::from(v),
                origin: var.into(),
            };
        }
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let cwd = std::env::current_dir().ok();
    LibrarySource::Search(library_search_paths(exe_dir.as_deref(), cwd.as_deref()))
}

/// Candidate library files, in order: next to the executable, then `<dir>/.tools/onnxruntime/`
/// for every ancestor of the executable's directory and of the current directory, then the
/// crate's own repository (compile-time path, for `cargo test`/`cargo bench`).
pub fn library_search_paths(exe_dir: Option<&Path>, cwd: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(e) = exe_dir {
        dirs.push(e.to_path_buf());
    }
    for start in [exe_dir, cwd].into_iter().flatten() {
        for anc in start.ancestors() {
            dirs.push(anc.join(REPO_ORT_DIR));
        }
    }
    if let Some(repo) = Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
        dirs.push(repo.join(REPO_ORT_DIR));
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        for name in LIBRARY_NAMES {
            let p = d.join(name);
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// The process-wide ONNX Runtime: the loaded library and its environment.
#[derive(Debug)]
pub struct OrtRuntime {
    library: PathBuf,
    environment: Environment,
}

impl OrtRuntime {
    /// The library file that was loaded (or the bare name handed to the system loader).
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// The environment sessions are built in.
    pub fn environment(&self) -> &Environment {
        &self.environment
    }
}

static RUNTIME: OnceLock<OrtRuntime> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Loads ONNX Runtime (once per process) and returns it. Later calls return the first runtime
/// whatever `explicit` says: the library cannot be swapped inside a running process.
pub fn ort_runtime(explicit: Option<&Path>) -> Result<&'static OrtRuntime, OrtSetupError> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let _guard = INIT_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let library = load_library(&library_source(explicit))?;
    let environment = ort::init()
        .with_name("facekey")
        .with_telemetry(false)
        .build()
        .map_err(OrtSetupError::Environment)?;
    tracing::info!(library = %library.display(), "ONNX Runtime loaded");
    Ok(RUNTIME.get_or_init(|| OrtRuntime {
        library,
        environment,
    }))
}

fn load_library(source: &LibrarySource) -> Result<PathBuf, OrtSetupError> {
    match source {
        LibrarySource::Explicit { path, origin } => {
            if !path.exists() {
                return Err(OrtSetupError::ExplicitMissing {
                    path: path.clone(),
                    origin: origin.clone(),
                });
            }
            init_from(path)
        }
        LibrarySource::Search(candidates) => {
            let mut tried: Vec<String> = Vec::new();
            for c in candidates {
                if c.is_file() {
                    return init_from(c);
                }
                tried.push(c.display().to_string());
            }
            // Last resort: the system loader (LD_LIBRARY_PATH, ld.so cache).
            for name in LIBRARY_NAMES {
                let p = PathBuf::from(name);
                match ort::init_from(&p) {
                    Ok(_) => return Ok(p),
                    Err(_) => tried.push(format!("{name} (system loader)")),
                }
            }
            Err(OrtSetupError::NotFound { tried })
        }
    }
}

fn init_from(path: &Path) -> Result<PathBuf, OrtSetupError> {
    ort::init_from(path).map_err(|source| OrtSetupError::Load {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(path.to_path_buf())
}

/// Failure to build or run a model session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// ONNX Runtime rejected the model (corrupt file, unsupported operator, bad options).
    #[error("ONNX Runtime could not load model {path}")]
    Build {
        /// The model file.
        path: PathBuf,
        /// ONNX Runtime's error.
        #[source]
        source: ort::Error,
    },
    /// Inference failed (bad input shape, runtime error).
    #[error("inference with model {model} failed")]
    Run {
        /// The model's short name.
        model: &'static str,
        /// ONNX Runtime's error.
        #[source]
        source: ort::Error,
    },
    /// A thread running inference panicked.
    #[error("inference thread for {model} panicked")]
    Panicked {
        /// The model or stage.
        model: &'static str,
    },
    /// The model produced outputs of an unexpected count, type or shape.
    #[error("model {model} returned unexpected output: {detail}")]
    Output {
        /// The model's short name.
        model: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// Session options that matter for latency and throughput.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    /// ONNX Runtime intra-op threads per session (0 lets ONNX Runtime choose).
    pub intra_threads: usize,
    /// Number of sessions per model (concurrent inferences of the same model).
    pub sessions: usize,
}

/// A model's sessions, usable from many threads.
#[derive(Debug)]
pub struct SessionPool {
    name: &'static str,
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
}

impl SessionPool {
    /// Builds `options.sessions` sessions of the model in `bytes` (read from `path`).
    pub fn from_memory(
        rt: &OrtRuntime,
        name: &'static str,
        path: &Path,
        bytes: &[u8],
        options: SessionOptions,
    ) -> Result<Self, SessionError> {
        let build_err = |source: ort::Error| SessionError::Build {
            path: path.to_path_buf(),
            source,
        };
        let mut sessions = Vec::with_capacity(options.sessions.max(1));
        for _ in 0..options.sessions.max(1) {
            let mut builder = Session::builder(rt.environment())
                .map_err(build_err)?
                .with_optimization_level(GraphOptimizationLevel::All)
                .map_err(|e| build_err(e.into()))?;
            if options.intra_threads > 0 {
                builder = builder
                    .with_intra_threads(options.intra_threads)
                    .map_err(|e| build_err(e.into()))?;
            }
            let session = builder.commit_from_memory(bytes).map_err(build_err)?;
            sessions.push(Mutex::new(session));
        }
        Ok(Self {
            name,
            sessions,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs zeros of `shape` through every session once, so the first real request does not pay
    /// ONNX Runtime's first-run allocations (hundreds of milliseconds for the DTN).
    pub fn warm_up(&self, shape: &[usize]) -> Result<(), SessionError> {
        let zeros = vec![0.0f32; shape.iter().product()];
        for session in &self.sessions {
            let mut session = session.lock().unwrap_or_else(PoisonError::into_inner);
            let input = TensorRef::from_array_view((shape.to_vec(), zeros.as_slice())).map_err(
                |source| SessionError::Run {
                    model: self.name,
                    source,
                },
            )?;
            session
                .run(ort::inputs![input])
                .map_err(|source| SessionError::Run {
                    model: self.name,
                    source,
                })?;
        }
        Ok(())
    }

    /// The model's short name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn acquire(&self) -> MutexGuard<'_, Session> {
        let n = self.sessions.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for k in 0..n {
            match self.sessions[(start + k) % n].try_lock() {
                Ok(g) => return g,
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        self.sessions[start]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs the model on one `f32` input tensor of `shape` over `data` (borrowed, no copy) and
    /// hands the outputs to `read`; returns its result and the time spent inside ONNX Runtime.
    pub fn run<R>(
        &self,
        shape: &[usize],
        data: &[f32],
        read: impl FnOnce(&SessionOutputs<'_>) -> Result<R, SessionError>,
    ) -> Result<(R, Duration), SessionError> {
        let run_err = |source: ort::Error| SessionError::Run {
            model: self.name,
            source,
        };
        let input = TensorRef::from_array_view((shape.to_vec(), data)).map_err(run_err)?;
        let mut session = self.acquire();
        let started = Instant::now();
        let outputs = session.run(ort::inputs![input]).map_err(run_err)?;
        let elapsed = started.elapsed();
        let r = read(&outputs)?;
        Ok((r, elapsed))
    }

    /// Reads output `index` as an `f32` tensor: its shape and data.
    pub fn output<'a>(
        &self,
        outputs: &'a SessionOutputs<'_>,
        index: usize,
    ) -> Result<(Vec<usize>, &'a [f32]), SessionError> {
        if index >= outputs.len() {
            return Err(SessionError::Output {
                model: self.name,
                detail: format!("missing output #{index} (got {})", outputs.len()),
            });
        }
        let (shape, data) =
            outputs[index]
                .try_extract_tensor::<f32>()
                .map_err(|e| SessionError::Output {
                    model: self.name,
                    detail: format!("output #{index} is not an f32 tensor: {e}"),
                })?;
        let dims = shape.iter().map(|&d| d.max(0) as usize).collect();
        Ok((dims, data))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn search_paths_cover_exe_dir_and_repo_tools() {
        let exe = Path::new("/opt/facekey/bin");
        let cwd = Path::new("/home/u/src/facekey/runtime");
        let paths = library_search_paths(Some(exe), Some(cwd));
        let first = &paths[0];
        assert_eq!(first, &exe.join(LIBRARY_NAMES[0]));
        assert!(
            paths.contains(&Path::new("/opt/facekey/.tools/onnxruntime").join(LIBRARY_NAMES[0]))
        );
        assert!(
            paths.contains(
                &Path::new("/home/u/src/facekey/.tools/onnxruntime").join(LIBRARY_NAMES[0])
            )
        );
        // The exe directory's ancestors come before the current directory's.
        let opt = paths
            .iter()
            .position(|p| p.starts_with("/opt/facekey/.tools"))
            .unwrap();
        let home = paths
            .iter()
            .position(|p| p.starts_with("/home/u/src/facekey/.tools"))
            .unwrap();
        assert!(opt < home);
        // No duplicates.
        let mut dedup = paths.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), paths.len());
    }

    #[test]
    fn explicit_path_wins() {
        let src = library_source(Some(Path::new("/x/libonnxruntime.so")));
        assert!(
            matches!(src, LibrarySource::Explicit { ref path, .. } if path == Path::new("/x/libonnxruntime.so"))
        );
    }

    #[test]
    fn missing_explicit_path_is_named() {
        let err = load_library(&LibrarySource::Explicit {
            path: "/nonexistent/libonnxruntime.so".into(),
            origin: "test".into(),
        })
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/libonnxruntime.so"));
    }

    #[test]
    fn not_found_error_lists_every_path_and_the_setup_script() {
        let err = OrtSetupError::NotFound {
            tried: vec!["/a/lib.so".into(), "/b/lib.so".into()],
        };
        let msg = err.to_string();
        assert!(msg.contains("/a/lib.so") && msg.contains("/b/lib.so"));
        assert!(msg.contains("scripts/setup-onnxruntime.sh"));
    }
}
