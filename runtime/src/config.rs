//! Runtime configuration from command-line flags and `FACEKEY_*` environment variables. Names
//! and defaults come from the settings catalogue ([`facekey_settings`]), shared with the
//! evaluation lab and the operator; this module only maps them onto clap and onto the vision
//! and verifier configurations.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use facekey_settings::values::{self, parse_seconds_within, seconds_within};
use facekey_settings::{defaults, env};

use crate::alerts::{EmailSettings, SmtpTls};
use crate::auth::Caller;
use crate::fusion::WeightsSource;
use crate::store::QuotaOf;
use crate::verifier::{DecisionPolicy, VerifierConfig};
use crate::vision::second_opinion::{MatchModels, PassiveLivenessModels};
use crate::vision::{Combine, LivenessMode, MultiFacePolicy, VisionConfig};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Multi-face policy of verification and enrolment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MultiFace {
    /// Use the largest face.
    Largest,
    /// Answer 422 `multiple_faces`.
    Reject,
}

/// Passive liveness model selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LivenessModel {
    /// Deep Tree Network (~110 ms).
    Dtn,
    /// MiniFASNet-like model (~4 ms).
    Minifas,
    /// Both, combined.
    Both,
    /// No passive liveness check: an explicitly insecure mode in which verification treats
    /// every face as live (for trusted capture only).
    Off,
}

impl LivenessModel {
    /// The vision pipeline's liveness mode for this selection.
    pub fn mode(self, combine: Combine) -> LivenessMode {
        match self {
            Self::Dtn => LivenessMode::Dtn,
            Self::Minifas => LivenessMode::MiniFas,
            Self::Both => LivenessMode::Both { combine },
            Self::Off => LivenessMode::Off,
        }
    }
}

fn parse_weights(s: &str) -> Result<WeightsSource, String> {
    WeightsSource::parse(s)
}

fn parse_threshold(s: &str) -> Result<f64, String> {
    values::unit("threshold", s)
}

fn parse_share(s: &str) -> Result<f64, String> {
    values::unit("the share", s)
}

fn parse_connections(s: &str) -> Result<usize, String> {
    let v = values::integer_within(s, 1, values::MAX_CONNECTIONS)?;
    usize::try_from(v).map_err(|_| format!("too large: {v}"))
}

/// Most frames a liveness session may accept (`--session-max-frames`): each frame is judged
/// against every other (the pair checks), and with PostgreSQL every frames call reads the
/// session's earlier batches (about 8-10 KB a frame with both embedding models' values packed;
/// a row of the release before, which kept every frame in the session row at up to 18 KB a
/// frame, stays under its 8 MiB check, migration 0010).
pub const MAX_SESSION_FRAMES: usize = 256;

fn parse_session_frames(s: &str) -> Result<usize, String> {
    match values::positive::<usize>(s)? {
        n if n > MAX_SESSION_FRAMES => Err(format!("must be at most {MAX_SESSION_FRAMES}")),
        n => Ok(n),
    }
}

/// The error for a shared (PostgreSQL) store without `setting`: replicas sharing a database
/// must share `what`.
pub(crate) fn shared_store_needs(setting: &str, what: &str) -> String {
    format!(
        "{} is set but {setting} is not: replicas sharing a database must share {what}",
        env::DATABASE_URL
    )
}

/// The start-up refusal for unsafe settings without `--allow-insecure`.
pub(crate) fn unsafe_settings(problems: &[String]) -> String {
    format!(
        "unsafe settings: {}. Fix them, or start with --allow-insecure ({}=true) to accept the \
         risk",
        problems.join("; "),
        env::ALLOW_INSECURE
    )
}

fn parse_shutdown_delay(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(v) if v <= defaults::MAX_SHUTDOWN_DELAY_SECS => Ok(v),
        Ok(v) => Err(format!(
            "{v} s is longer than {} s",
            defaults::MAX_SHUTDOWN_DELAY_SECS
        )),
        Err(e) => Err(format!("not a number of seconds: {s:?} ({e})")),
    }
}

fn parse_request_timeout(s: &str) -> Result<u64, String> {
    parse_seconds_within(
        env::REQUEST_TIMEOUT_SECS,
        s,
        1,
        defaults::MAX_REQUEST_TIMEOUT_SECS,
    )
}

fn parse_connection_age(s: &str) -> Result<u64, String> {
    parse_seconds_within(
        env::MAX_CONNECTION_AGE_SECS,
        s,
        0,
        defaults::MAX_MAX_CONNECTION_AGE_SECS,
    )
}

fn parse_replay_window(s: &str) -> Result<u64, String> {
    parse_seconds_within(
        env::SESSION_REPLAY_WINDOW_SECS,
        s,
        0,
        defaults::MAX_SESSION_REPLAY_WINDOW_SECS,
    )
}

fn parse_alert_min_interval(s: &str) -> Result<u64, String> {
    parse_seconds_within(
        env::ALERT_MIN_INTERVAL_SECS,
        s,
        0,
        defaults::MAX_ALERT_MIN_INTERVAL_SECS,
    )
}

fn parse_enum<T: ValueEnum>(s: &str) -> T {
    // Only called on the catalogue's defaults, which a unit test parses.
    T::from_str(s, false).unwrap_or_else(|_| T::value_variants()[0].clone())
}

/// All runtime settings. Every flag has an environment variable of the same meaning.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "facekey-runtime",
    version,
    about = "FaceKey face verification server"
)]
pub struct Config {
    /// Address and port to listen on.
    #[arg(long, env = env::LISTEN, default_value = defaults::LISTEN)]
    pub listen: SocketAddr,

    /// Fusion MLP weights: a built-in name (`reference`) or a path to a weights JSON file.
    #[arg(long, env = env::WEIGHTS, default_value = defaults::WEIGHTS, value_parser = parse_weights)]
    pub weights: WeightsSource,

    /// Authentication decision threshold on the fusion probability, in [0, 1]. Defaults to the
    /// weights file's recommended threshold, else 0.5.
    #[arg(long, env = env::THRESHOLD, value_parser = parse_threshold)]
    pub threshold: Option<f64>,

    /// Directory of the embedded template store (created if missing).
    #[arg(long, env = env::DATA_DIR, default_value = defaults::DATA_DIR)]
    pub data_dir: PathBuf,

    /// PostgreSQL URL of the shared template store, for several replicas (e.g.
    /// `postgres://facekey:…@db:5432/facekey?sslmode=verify-full&sslrootcert=/ca.pem`). Unset:
    /// the embedded store in `--data-dir`. Requires `--template-key-file`.
    #[arg(long, env = env::DATABASE_URL, hide_env_values = true, conflicts_with = "database_url_file")]
    pub database_url: Option<String>,

    /// A file holding the PostgreSQL URL (e.g. a mounted Secret), instead of `--database-url`.
    #[arg(long, env = env::DATABASE_URL_FILE)]
    pub database_url_file: Option<PathBuf>,

    /// PEM certificate(s) of the CA that signed the database server's certificate: the
    /// connection then requires TLS and verifies the certificate and the host name
    /// (`sslmode=verify-full`), whatever the URL says. For URLs one cannot edit, such as the
    /// one CloudNativePG generates.
    #[arg(long, env = env::DATABASE_CA_FILE)]
    pub database_ca_file: Option<PathBuf>,

    /// Template encryption keys (AES-256-GCM), one `<key-id>:<64 hex digits>` line each, the
    /// first sealing new templates. Required with a database; without one the embedded store
    /// creates `<data-dir>/template.key` on first start.
    #[arg(long, env = env::TEMPLATE_KEY_FILE)]
    pub template_key_file: Option<PathBuf>,

    /// Print a new template key line `<KEY_ID>:<64 hex digits>` for a key file and exit.
    #[arg(long, value_name = "KEY_ID")]
    pub new_template_key: Option<String>,

    /// Most face templates one subject may hold.
    #[arg(long, env = env::MAX_FACES_PER_SUBJECT, default_value_t = defaults::MAX_FACES_PER_SUBJECT, value_parser = values::positive::<usize>)]
    pub max_faces_per_subject: usize,

    /// Most subjects the store holds; creating one more answers 507 `store_full`.
    #[arg(long, env = env::MAX_SUBJECTS, default_value_t = defaults::MAX_SUBJECTS, value_parser = values::positive::<usize>)]
    pub max_subjects: usize,

    /// Most subjects one API key may have created and still hold, so one `enrol` key cannot
    /// fill the store for every other; creating one more answers 507 `key_subject_quota`.
    /// Deleting a subject frees its place. Admin keys are held to `--max-subjects` only.
    /// 0: no per-key limit.
    #[arg(long, env = env::MAX_SUBJECTS_PER_KEY, default_value_t = defaults::MAX_SUBJECTS_PER_KEY)]
    pub max_subjects_per_key: usize,

    /// Most templates (enrolled faces) the store holds, all subjects and embedding models
    /// together; every replica keeps them all in memory (about 5 KB each). Enrolling one more
    /// answers 507 `store_full`.
    #[arg(long, env = env::MAX_TEMPLATES, default_value_t = defaults::MAX_TEMPLATES, value_parser = values::positive::<usize>)]
    pub max_templates: usize,

    /// Most templates (enrolled faces) one API key may have enrolled and still hold, so one
    /// `enrol` key cannot fill the templates of every other; enrolling one more answers 507
    /// `key_template_quota`. Deleting a face (or its subject) frees its place. Admin keys are
    /// held to `--max-templates` only. 0: no per-key limit.
    #[arg(long, env = env::MAX_TEMPLATES_PER_KEY, default_value_t = defaults::MAX_TEMPLATES_PER_KEY)]
    pub max_templates_per_key: usize,

    /// Largest request body accepted, in bytes (larger bodies get 413).
    #[arg(long, env = env::MAX_BODY_BYTES, default_value_t = defaults::MAX_BODY_BYTES, value_parser = values::positive::<usize>)]
    pub max_body_bytes: usize,

    /// Request body bytes held in memory at once, all requests together: a request with a body
    /// reserves its declared length (the body limit when it declares none) before its handler
    /// runs; beyond the budget it gets 503 `overloaded` at once. At least the body limit.
    #[arg(long, env = env::MAX_BODY_MEMORY_BYTES, default_value_t = defaults::MAX_BODY_MEMORY_BYTES, value_parser = values::positive::<usize>)]
    pub max_body_memory_bytes: usize,

    /// Share (0 to 1) of `--max-body-memory-bytes` the request bodies of one API key may hold
    /// at once, but at least one body of `--max-body-bytes`: beyond it that key's requests with
    /// a body get 429 `too_many_uploads` at once, so one key trickling large bodies on many
    /// connections cannot take the memory every other key's uploads need. 1: no per-key bound.
    #[arg(long, env = env::MAX_BODY_MEMORY_PER_KEY_SHARE, default_value_t = defaults::MAX_BODY_MEMORY_PER_KEY_SHARE, value_parser = parse_share)]
    pub max_body_memory_per_key_share: f64,

    /// Least rate, in bytes per second, at which a request body must arrive once
    /// `--body-rate-grace-secs` have passed since its headers (by `t` seconds, this rate times
    /// `t` minus the grace); a body that falls behind is cut off with 408 `body_too_slow` and its
    /// reserved memory given back at once, instead of being held until the request timeout.
    /// 0: off.
    #[arg(long, env = env::MIN_BODY_BYTES_PER_SEC, default_value_t = defaults::MIN_BODY_BYTES_PER_SEC)]
    pub min_body_bytes_per_sec: u64,

    /// Seconds a request body may lag behind `--min-body-bytes-per-sec` before the rate applies.
    #[arg(long, env = env::BODY_RATE_GRACE_SECS, default_value_t = defaults::BODY_RATE_GRACE_SECS)]
    pub body_rate_grace_secs: u64,

    /// Largest encoded image accepted, in bytes (CompreFace and AWS Rekognition allow 5 MB).
    #[arg(long, env = env::MAX_IMAGE_BYTES, default_value_t = defaults::MAX_IMAGE_BYTES, value_parser = values::positive::<usize>)]
    pub max_image_bytes: usize,

    /// Largest decoded image accepted, in pixels (width x height), checked from the header
    /// before any pixel memory is allocated.
    #[arg(long, env = env::MAX_IMAGE_PIXELS, default_value_t = defaults::MAX_IMAGE_PIXELS, value_parser = values::positive::<u64>)]
    pub max_image_pixels: u64,

    /// ONNX Runtime library (`libonnxruntime.so`). Default: `ORT_DYLIB_PATH` when set, else
    /// found automatically (next to the executable, `.tools/onnxruntime/` of the repository,
    /// system paths).
    #[arg(long, env = env::ORT_LIBRARY)]
    pub ort_library: Option<PathBuf>,

    /// Directory of the ONNX models. Default: `models/` next to the executable or the
    /// repository's `runtime/models/`.
    #[arg(long, env = env::MODELS_DIR)]
    pub models_dir: Option<PathBuf>,

    /// Directory of replacement liveness models (`expo_FaceAntiSpoofing.onnx`,
    /// `fr_liveness.onnx`), e.g. a mounted volume; checked against its `SHA256SUMS` if present.
    #[arg(long, env = env::SPOOF_MODEL_DIR)]
    pub spoof_model_dir: Option<PathBuf>,

    /// Not supported: the runtime never downloads models. Set only to get a clear start-up error
    /// (the operator passes `models.spoof.uri` here).
    #[arg(long, env = env::SPOOF_MODEL_URI, hide = true)]
    pub spoof_model_uri: Option<String>,

    /// ONNX Runtime intra-op threads per session (0: ONNX Runtime's choice). One is fastest
    /// here: requests run in parallel across sessions and stages instead.
    #[arg(long, env = env::INTRA_THREADS, default_value_t = defaults::INTRA_THREADS)]
    pub intra_threads: usize,

    /// Sessions per model, i.e. how many requests may run one model at the same time
    /// (default: one per core, at most 8).
    #[arg(long, env = env::SESSIONS_PER_MODEL, default_value_t = defaults::sessions_per_model(), value_parser = values::positive::<usize>)]
    pub sessions_per_model: usize,

    /// Smallest face searched for, in pixels (12 to 4096); larger values make detection faster.
    #[arg(long, env = env::MIN_FACE_SIZE, default_value_t = defaults::MIN_FACE_SIZE, value_parser = values::face_size)]
    pub min_face_size: f64,

    /// What verification does with several faces in one image.
    #[arg(long, env = env::MULTI_FACE, value_enum, default_value_t = parse_enum::<MultiFace>(defaults::MULTI_FACE))]
    pub multi_face: MultiFace,

    /// Most faces of one image `/v1/liveness` analyses (the most confident); the others are
    /// counted in `faces_detected` but not analysed.
    #[arg(long, env = env::MAX_FACES_PER_IMAGE, default_value_t = defaults::MAX_FACES_PER_IMAGE, value_parser = values::positive::<usize>)]
    pub max_faces_per_image: usize,

    /// Minimum match similarity in [0, 1] (0.5 is dlib's 0.6 distance threshold).
    #[arg(long, env = env::MATCH_THRESHOLD, default_value_t = defaults::MATCH_THRESHOLD, value_parser = parse_threshold)]
    pub match_threshold: f64,

    /// Passive liveness models. `minifas` by default: on the evaluation data the DTN scored
    /// real photos and simulated attacks alike (docs/evaluation.md).
    #[arg(long, env = env::LIVENESS, value_enum, default_value_t = parse_enum::<LivenessModel>(defaults::LIVENESS))]
    pub liveness: LivenessModel,

    /// How two liveness scores combine when both models run.
    #[arg(long, env = env::LIVENESS_COMBINE, value_enum, default_value_t = parse_enum::<Combine>(defaults::LIVENESS_COMBINE))]
    pub liveness_combine: Combine,

    /// Embedding models of the match score: `dlib+faceres` fuses dlib's distance with
    /// faceres-deep's cosine by z-score (0 false matches of 1840 held-out impostor pairs,
    /// against 39 for dlib alone; docs/evaluation.md); faces enrolled before it hold dlib alone
    /// and are matched on dlib alone, visibly (`match.models`). `dlib`: dlib alone.
    #[arg(long, env = env::MATCH_MODELS, value_enum, default_value_t = parse_enum::<MatchModels>(defaults::MATCH_MODELS))]
    pub match_models: MatchModels,

    /// Models of the passive liveness score wherever fr_liveness runs:
    /// `fr_liveness+human_liveness` fuses both by z-score of their logits (0.5 the live
    /// boundary); `fr_liveness` alone.
    #[arg(long, env = env::PASSIVE_LIVENESS_MODELS, value_enum, default_value_t = parse_enum::<PassiveLivenessModels>(defaults::PASSIVE_LIVENESS_MODELS))]
    pub passive_liveness_models: PassiveLivenessModels,

    /// Minimum liveness score in [0, 1] to call a face live; below it is a spoof attempt.
    #[arg(long, env = env::LIVENESS_THRESHOLD, default_value_t = defaults::LIVENESS_THRESHOLD, value_parser = parse_threshold)]
    pub liveness_threshold: f64,

    /// `strict`: accept only when the fused probability, the match and the liveness check all
    /// accept; `fusion`: the fused probability alone decides (liveness that could not run
    /// still rejects).
    #[arg(long, env = env::DECISION_POLICY, value_enum, default_value_t = parse_enum::<DecisionPolicy>(defaults::DECISION_POLICY))]
    pub decision_policy: DecisionPolicy,

    /// Largest number of feature rows in one `/v1/score` batch.
    #[arg(long, env = env::MAX_BATCH, default_value_t = defaults::MAX_BATCH, value_parser = values::positive::<usize>)]
    pub max_batch: usize,

    /// Inferences (verify, identify, enrol, liveness) running at once; more wait in the queue
    /// (default: one per core, as the model sessions).
    #[arg(long, env = env::MAX_INFLIGHT, default_value_t = defaults::sessions_per_model(), value_parser = values::positive::<usize>)]
    pub max_inflight: usize,

    /// Requests that may wait for an inference place; beyond running + waiting, requests are
    /// answered at once with 503 `overloaded` and `Retry-After` (default: four per in-flight
    /// place; see [`Config::max_queue`]).
    #[arg(long, env = env::MAX_QUEUE)]
    pub max_queue: Option<usize>,

    /// Milliseconds a request may wait for an inference place (at most half the request
    /// timeout). A request whose wait is predicted beyond it (its place in the queue times the
    /// recent service time) is refused at once with 503 `overloaded`.
    #[arg(long, env = env::MAX_QUEUE_WAIT_MS, default_value_t = defaults::MAX_QUEUE_WAIT_MS, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_queue_wait_ms: u64,

    /// Offered load (arrival rate x service time / in-flight places) above which a request
    /// that finds every place busy gets 503 `overloaded` at once instead of queueing: under
    /// standing overload a queue serves no more, it only delays every accepted request.
    #[arg(long, env = env::QUEUE_MAX_LOAD, default_value_t = defaults::QUEUE_MAX_LOAD, value_parser = values::positive_number)]
    pub queue_max_load: f64,

    /// Seconds a request may take before it is answered with 503 `timeout` (1 to 300).
    #[arg(long, env = env::REQUEST_TIMEOUT_SECS, default_value_t = defaults::REQUEST_TIMEOUT_SECS, value_parser = parse_request_timeout)]
    pub request_timeout_secs: u64,

    /// Most open HTTP connections (at most 1 000 000); beyond it new connections wait in the
    /// kernel's backlog.
    #[arg(long, env = env::MAX_CONNECTIONS, default_value_t = defaults::MAX_CONNECTIONS, value_parser = parse_connections)]
    pub max_connections: usize,

    /// Seconds a client has to send a request's headers, and a new connection its first byte. A
    /// connection without any traffic for twice the request timeout is closed.
    #[arg(long, env = env::HEADER_READ_TIMEOUT_SECS, default_value_t = defaults::HEADER_READ_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_secs: u64,

    /// Seconds after which a connection is closed gracefully (its requests in flight answered;
    /// HTTP/2 with GOAWAY, HTTP/1.1 after its current response), each connection at 90 to 110 %
    /// of it, so a client reconnects and a Service spreads its requests over the replicas there
    /// are now, those a scale-out added included (at most a day; 0: never).
    #[arg(long, env = env::MAX_CONNECTION_AGE_SECS, default_value_t = defaults::MAX_CONNECTION_AGE_SECS, value_parser = parse_connection_age)]
    pub max_connection_age_secs: u64,

    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT before exiting anyway.
    #[arg(long, env = env::SHUTDOWN_TIMEOUT_SECS, default_value_t = defaults::SHUTDOWN_TIMEOUT_SECS)]
    pub shutdown_timeout_secs: u64,

    /// Seconds to keep serving after SIGTERM/SIGINT, with readiness already failing, before
    /// refusing new connections and draining: behind a Kubernetes Service, endpoints are removed
    /// a few seconds after the pod is told to stop, and connections sent meanwhile would be
    /// refused. 0 (alone) stops accepting at once; the operator sets it for its pods.
    #[arg(long, env = env::SHUTDOWN_DELAY_SECS, default_value_t = defaults::SHUTDOWN_DELAY_SECS, value_parser = parse_shutdown_delay)]
    pub shutdown_delay_secs: u64,

    /// SMTP server (`host:port`) for spoof alert emails; alerts are off when unset.
    #[arg(long, env = env::SMTP_SMARTHOST)]
    pub smtp_smarthost: Option<String>,

    /// SMTP connection security.
    #[arg(long, env = env::SMTP_TLS, value_enum, default_value_t = parse_enum::<SmtpTls>(defaults::SMTP_TLS))]
    pub smtp_tls: SmtpTls,

    /// SMTP AUTH user name.
    #[arg(long, env = env::SMTP_USERNAME)]
    pub smtp_username: Option<String>,

    /// SMTP AUTH password (prefer the environment variable, e.g. from a Kubernetes Secret).
    #[arg(long, env = env::SMTP_PASSWORD, hide_env_values = true)]
    pub smtp_password: Option<String>,

    /// Extra PEM root certificate to trust for the SMTP server (private CA).
    #[arg(long, env = env::SMTP_CA_FILE)]
    pub smtp_ca_file: Option<PathBuf>,

    /// Sender address of alert emails.
    #[arg(long, env = env::ALERT_FROM)]
    pub alert_from: Option<String>,

    /// Recipients of alert emails, comma-separated.
    #[arg(long, env = env::ALERT_TO, value_delimiter = ',')]
    pub alert_to: Vec<String>,

    /// Least seconds between two alert emails (at most a day); attempts in between are
    /// summarised.
    #[arg(long, env = env::ALERT_MIN_INTERVAL_SECS, default_value_t = defaults::ALERT_MIN_INTERVAL_SECS, value_parser = parse_alert_min_interval)]
    pub alert_min_interval_secs: u64,

    /// Name of this instance in alert emails and audit events (defaults to the host name).
    #[arg(long, env = env::INSTANCE)]
    pub instance: Option<String>,

    /// Serve the bundled web UI at `/` (`false` leaves only the API).
    #[arg(long, env = env::UI_ENABLED, default_value_t = defaults::UI_ENABLED, action = clap::ArgAction::Set)]
    pub ui_enabled: bool,

    /// Instead of serving, ask the server at `--listen` for `GET /healthz` and exit 0 when it
    /// answers 200, 1 otherwise (for container HEALTHCHECKs in images without curl).
    #[arg(long)]
    pub check_health: bool,

    /// Instead of serving, check the configuration (flags and `FACEKEY_*` variables) as start-up
    /// does before it reads a file or loads a model, print what is wrong and exit 1, or exit 0
    /// (with the unsafe settings `--allow-insecure` lets through, if any).
    #[arg(long)]
    pub check_config: bool,

    /// Log format.
    #[arg(long, env = env::LOG_FORMAT, value_enum, default_value_t = parse_enum::<LogFormat>(defaults::LOG_FORMAT))]
    pub log_format: LogFormat,

    /// Log filter in `tracing` syntax, e.g. `info` or `facekey_runtime=debug,tower_http=info`.
    #[arg(long, env = env::LOG, default_value = defaults::LOG)]
    pub log: String,

    /// API keys, one `<key-id>:<scope,scope…>:<hex SHA-256 of the key>[:<requests per second>]`
    /// line each (scopes: `verify`, `enrol`, `admin`, `metrics`); re-read when it changes. Unset:
    /// the runtime creates an admin key in `--data-dir` on first start and prints a login URL.
    #[arg(long, env = env::API_KEYS_FILE)]
    pub api_keys_file: Option<PathBuf>,

    /// Whether `/metrics` on the API port is `open` or needs a key with the `metrics` scope.
    #[arg(long, env = env::METRICS_AUTH, value_enum, default_value_t = parse_enum::<MetricsAuth>(defaults::METRICS_AUTH))]
    pub metrics_auth: MetricsAuth,

    /// A second address serving only `/healthz`, `/readyz` and `/metrics`, without keys (for the
    /// kubelet and Prometheus; restrict it with a NetworkPolicy). Unset: no second listener.
    #[arg(long, env = env::METRICS_LISTEN)]
    pub metrics_listen: Option<SocketAddr>,

    /// `off`: the second listener's `/metrics` leaves out the per-attempt score histograms and
    /// per-key series, as the open API route does (`crate::metrics::PRIVATE_FAMILIES`), for a
    /// port that more than Prometheus can reach: reading a score histogram's sum around one's
    /// own attempt gives its exact score. The operator sets it for sidecars.
    #[arg(long, env = env::METRICS_LISTEN_PRIVATE, value_enum, default_value_t = parse_enum::<Switch>(defaults::METRICS_LISTEN_PRIVATE))]
    pub metrics_listen_private: Switch,

    /// Origins allowed to call the API from a browser (CORS), comma-separated. Unset: CORS off,
    /// so only the bundled UI (same origin) can.
    #[arg(long, env = env::CORS_ORIGINS, value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Start even with settings known to be unsafe (liveness off, the untrained reference weights
    /// under the `fusion` policy, a match threshold looser than dlib's distance 0.6). Logged.
    #[arg(long, env = env::ALLOW_INSECURE, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_insecure: bool,

    /// Where audit events (one JSON object per line) go: `stdout`, `off`, or a file path.
    #[arg(long, env = env::AUDIT_LOG, default_value = defaults::AUDIT_LOG)]
    pub audit_log: String,

    /// Whether a face being enrolled must pass passive liveness (`off` for enrolment from ID
    /// photos).
    #[arg(long, env = env::ENROL_LIVENESS, value_enum, default_value_t = parse_enum::<Switch>(defaults::ENROL_LIVENESS))]
    pub enrol_liveness: Switch,

    /// Least quality score in [0, 1] of a face being enrolled.
    #[arg(long, env = env::ENROL_MIN_QUALITY, default_value_t = defaults::ENROL_MIN_QUALITY, value_parser = parse_threshold)]
    pub enrol_min_quality: f64,

    /// Failed verifications of one subject within `--lockout-window-secs` that lock it for
    /// `--lockout-secs` (429 `subject_locked`); 0 turns the per-subject lockout off.
    #[arg(long, env = env::LOCKOUT_ATTEMPTS, default_value_t = defaults::LOCKOUT_ATTEMPTS)]
    pub lockout_attempts: u32,

    /// Window in which failed verifications are counted, seconds.
    #[arg(long, env = env::LOCKOUT_WINDOW_SECS, default_value_t = defaults::LOCKOUT_WINDOW_SECS)]
    pub lockout_window_secs: u64,

    /// How long a locked subject stays locked the first time, seconds; each lock in a row (no
    /// successful verification between) doubles, up to `--lockout-max-secs`.
    #[arg(long, env = env::LOCKOUT_SECS, default_value_t = defaults::LOCKOUT_SECS)]
    pub lockout_secs: u64,

    /// The longest a lock grows to by doubling, and how long after a lock ends it still counts
    /// toward the next one's length, seconds; 0 (or at most `--lockout-secs`): locks never grow.
    #[arg(long, env = env::LOCKOUT_MAX_SECS, default_value_t = defaults::LOCKOUT_MAX_SECS)]
    pub lockout_max_secs: u64,

    /// How long a challenge-liveness session lives after it is opened, seconds.
    #[arg(long, env = env::SESSION_TTL_SECS, default_value_t = defaults::SESSION_TTL_SECS, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub session_ttl_secs: u64,

    /// Challenge-liveness sessions open at once on this replica, or across the replicas sharing
    /// PostgreSQL (503 `too_many_sessions` beyond).
    #[arg(long, env = env::MAX_SESSIONS, default_value_t = defaults::MAX_SESSIONS)]
    pub max_sessions: usize,

    /// Challenge-liveness sessions open at once per API key (429 `too_many_sessions` beyond; a
    /// key also opens one only while more places are free than it holds, so none holds more
    /// than half of `FACEKEY_MAX_SESSIONS`).
    #[arg(long, env = env::MAX_SESSIONS_PER_KEY, default_value_t = defaults::MAX_SESSIONS_PER_KEY)]
    pub max_sessions_per_key: usize,

    /// Frames one challenge-liveness session accepts in all (413 `too_many_frames` beyond); at
    /// most 512, since each batch re-judges every frame so far (the near-duplicate check
    /// compares every pair) and an open session holds what the models saw on each.
    #[arg(long, env = env::SESSION_MAX_FRAMES, default_value_t = defaults::SESSION_MAX_FRAMES, value_parser = parse_session_frames)]
    pub session_max_frames: usize,

    /// `on`: `/v1/verify` and `/v1/identify` refuse requests without a passed
    /// challenge-liveness session (422 `session_required`).
    #[arg(long, env = env::REQUIRE_SESSION, value_enum, default_value_t = parse_enum::<Switch>(defaults::REQUIRE_SESSION))]
    pub require_session: Switch,

    /// Least median passive liveness score over a challenge session's frames for it to pass
    /// (`passive_liveness_low` below it); 0 turns the gate off. Without it a passed challenge
    /// is live whatever the passive models said (its confidence is 0.7 + 0.3 x their median).
    #[arg(long, env = env::SESSION_PASSIVE_MIN, default_value_t = defaults::SESSION_PASSIVE_MIN, value_parser = parse_threshold)]
    pub session_passive_min: f64,

    /// How long the frames of a subject's sessions that a verification or identification
    /// accepted are remembered (their fingerprints, never images), seconds: a later session for
    /// the subject repeating them is a replayed recording and is rejected
    /// (`replayed_session`). 0 turns the check off; at most 30 days.
    #[arg(long, env = env::SESSION_REPLAY_WINDOW_SECS, default_value_t = defaults::SESSION_REPLAY_WINDOW_SECS, value_parser = parse_replay_window)]
    pub session_replay_window_secs: u64,

    /// A maintenance command instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Maintenance commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Create an API key: prints the key once, and its line for the API keys file.
    NewApiKey {
        /// The key's id (letters, digits, `-`, `_`, `.`), as logs, metrics and audit name it.
        id: String,
        /// Its scopes, comma-separated: `verify`, `enrol`, `admin`, `metrics`.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Request rate limit, requests per second (unset: unlimited).
        #[arg(long)]
        rps: Option<f64>,
    },
}

/// Whether `/metrics` needs a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetricsAuth {
    /// No key needed.
    Open,
    /// A key with the `metrics` (or `admin`) scope.
    Key,
}

/// An on/off setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

impl Config {
    /// The vision pipeline configuration these settings describe. With every flag at its
    /// default this is [`VisionConfig::default`] (a unit test holds them together).
    pub fn vision_config(&self) -> VisionConfig {
        let mut v = VisionConfig::default();
        v.runtime.ort_library = self.ort_library.clone();
        v.runtime.models_dir = self.models_dir.clone();
        v.runtime.spoof_model_dir = self.spoof_model_dir.clone();
        v.runtime.intra_threads = self.intra_threads;
        v.runtime.sessions_per_model = self.sessions_per_model;
        v.decode.max_bytes = self.max_image_bytes;
        v.decode.max_pixels = self.max_image_pixels;
        v.detector.min_face_size = self.min_face_size;
        v.multi_face = match self.multi_face {
            MultiFace::Largest => MultiFacePolicy::Largest,
            MultiFace::Reject => MultiFacePolicy::Reject,
        };
        v.liveness.mode = self.liveness.mode(self.liveness_combine);
        v.max_faces = self.max_faces_per_image;
        v.second_opinion.match_models = self.match_models;
        v.second_opinion.passive_liveness_models = self.passive_liveness_models;
        v
    }

    /// The verifier's thresholds and policy these settings describe. With every flag at its
    /// default this is [`VerifierConfig::default`].
    pub fn verifier_config(&self) -> VerifierConfig {
        VerifierConfig {
            match_threshold: self.match_threshold,
            liveness_threshold: self.liveness_threshold,
            check_liveness: self.liveness != LivenessModel::Off,
            policy: self.decision_policy,
            threshold: self.threshold,
        }
    }

    /// Check the configuration as start-up does before it reads any file, binds a port or loads
    /// a model (`--check-config`, and the first step of [`crate::server::Server::bind`]): the log
    /// filter, limits
    /// that contradict each other, the request timeout's and the alert interval's bounds (also
    /// of a configuration not parsed from flags), unsafe settings without `--allow-insecure`,
    /// the alert mail settings, the lockout bounds, and what replicas sharing a database must
    /// share. `Ok` holds the unsafe settings `--allow-insecure` lets through.
    pub fn check(&self) -> Result<Vec<String>, String> {
        seconds_within(
            env::REQUEST_TIMEOUT_SECS,
            self.request_timeout_secs,
            1,
            defaults::MAX_REQUEST_TIMEOUT_SECS,
        )?;
        seconds_within(
            env::ALERT_MIN_INTERVAL_SECS,
            self.alert_min_interval_secs,
            0,
            defaults::MAX_ALERT_MIN_INTERVAL_SECS,
        )?;
        crate::telemetry::filter(&self.log)?;
        if self.max_body_memory_bytes < self.max_body_bytes {
            return Err(format!(
                "{} ({}) is below {} ({}): a body of the largest allowed size could never be \
                 received",
                env::MAX_BODY_MEMORY_BYTES,
                self.max_body_memory_bytes,
                env::MAX_BODY_BYTES,
                self.max_body_bytes
            ));
        }
        let insecure = self.insecure_settings();
        if !insecure.is_empty() && !self.allow_insecure {
            return Err(unsafe_settings(&insecure));
        }
        if let Some(settings) = self.email_settings()? {
            settings.check().map_err(|e| e.to_string())?;
        }
        crate::lockout::Policy::from_config(self)?;
        if let Some(uri) = &self.spoof_model_uri {
            return Err(crate::engine::EngineError::ModelUri(uri.clone()).to_string());
        }
        let shared = self
            .database_url
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty())
            || self.database_url_file.is_some();
        if !shared && let Some(ca) = &self.database_ca_file {
            return Err(format!(
                "{}={} is set without a database URL ({} or {})",
                env::DATABASE_CA_FILE,
                ca.display(),
                env::DATABASE_URL,
                env::DATABASE_URL_FILE
            ));
        }
        if shared && self.template_key_file.is_none() {
            return Err(shared_store_needs(
                env::TEMPLATE_KEY_FILE,
                "the template key; create one with `facekey-runtime --new-template-key <id>`",
            ));
        }
        if shared && self.api_keys_file.is_none() {
            return Err(shared_store_needs(
                env::API_KEYS_FILE,
                "their API keys; create keys with `facekey-runtime new-api-key <id> --scopes …`",
            ));
        }
        Ok(insecure)
    }

    /// The database URL from `--database-url` or the file `--database-url-file` names (trimmed),
    /// or `None` for the embedded store.
    pub fn database_url(&self) -> Result<Option<String>, String> {
        if let Some(url) = &self.database_url {
            return Ok(Some(url.trim().to_owned()).filter(|u| !u.is_empty()));
        }
        let Some(path) = &self.database_url_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "{}={}: cannot read the database URL: {e}",
                env::DATABASE_URL_FILE,
                path.display()
            )
        })?;
        let url = text.trim().to_owned();
        if url.is_empty() {
            return Err(format!(
                "{}={} is empty",
                env::DATABASE_URL_FILE,
                path.display()
            ));
        }
        Ok(Some(url))
    }

    /// The per-key quota of `of` (subjects created or faces enrolled) a key without `admin` is
    /// held to: `--max-subjects-per-key` or `--max-templates-per-key`, `None` when it is 0 (no
    /// per-key limit).
    pub fn quota(&self, of: QuotaOf) -> Option<usize> {
        let limit = match of {
            QuotaOf::Subjects => self.max_subjects_per_key,
            QuotaOf::Templates => self.max_templates_per_key,
        };
        Some(limit).filter(|&n| n > 0)
    }

    /// The quota of `of` that `caller` is held to: none for `admin` keys, which are held to the
    /// store's bounds only (they can delete any subject or face anyway, and the operator's own
    /// key must be able to enrol whatever other keys did), nor for keys without `enrol`, which
    /// write nothing; [`Config::quota`] for the others.
    pub fn key_quota(&self, of: QuotaOf, caller: &Caller) -> Option<usize> {
        if caller.is_admin() || !caller.has(crate::auth::Scope::Enrol) {
            None
        } else {
            self.quota(of)
        }
    }

    /// Requests that may wait for an inference place: `--max-queue`, else four per in-flight
    /// place. The queue absorbs bursts below capacity; under overload (`--queue-max-load`)
    /// nothing queues, so its length does not lengthen accepted requests' waits there
    /// (bench/overload).
    pub fn max_queue(&self) -> usize {
        self.max_queue.unwrap_or(
            self.max_inflight
                .saturating_mul(defaults::QUEUE_PER_INFLIGHT),
        )
    }

    /// The admission limits: `--max-inflight` running, [`Config::max_queue`] waiting, each
    /// waiting at most `--max-queue-wait-ms` and never more than half the request timeout
    /// (waiting longer than the request may take in all is pointless).
    pub fn admission_limits(&self) -> crate::admission::Limits {
        crate::admission::Limits {
            in_flight: self.max_inflight,
            queue: self.max_queue(),
            max_wait: Duration::from_millis(self.max_queue_wait_ms).min(self.request_timeout() / 2),
            queue_max_load: self.queue_max_load,
        }
    }

    /// `--max-connection-age-secs` as a [`Duration`], `None` when 0 (never).
    pub fn max_connection_age(&self) -> Option<Duration> {
        (self.max_connection_age_secs > 0)
            .then(|| Duration::from_secs(self.max_connection_age_secs))
    }

    /// Request timeout as a [`Duration`].
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// Email alert settings, or `None` when no SMTP server is configured. Missing sender or
    /// recipients with a server set is a configuration error.
    pub fn email_settings(&self) -> Result<Option<EmailSettings>, String> {
        let Some(smarthost) = self.smtp_smarthost.clone() else {
            return Ok(None);
        };
        let from = self.alert_from.clone().ok_or_else(|| {
            format!(
                "{} is set but {} is not",
                env::SMTP_SMARTHOST,
                env::ALERT_FROM
            )
        })?;
        let to: Vec<String> = self
            .alert_to
            .iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if to.is_empty() {
            return Err(format!(
                "{} is set but {} is empty",
                env::SMTP_SMARTHOST,
                env::ALERT_TO
            ));
        }
        let instance = self.instance_name();
        Ok(Some(EmailSettings {
            smarthost,
            tls: self.smtp_tls,
            username: self.smtp_username.clone(),
            password: self.smtp_password.clone(),
            ca_file: self.smtp_ca_file.clone(),
            from,
            to,
            min_interval: Duration::from_secs(self.alert_min_interval_secs),
            instance,
        }))
    }

    /// This instance's name in alert emails and audit events: `--instance`, else the host name
    /// (the pod's name on Kubernetes).
    pub fn instance_name(&self) -> String {
        self.instance
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "facekey-runtime".into())
    }

    /// The header-read timeout as a [`Duration`].
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    /// The shutdown grace period.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// [`Config::shutdown_delay_secs`] as a duration.
    pub fn shutdown_delay(&self) -> Duration {
        Duration::from_secs(self.shutdown_delay_secs)
    }

    /// Settings known to be unsafe, each with why; the runtime refuses to start with any of them
    /// unless `--allow-insecure` is set.
    pub fn insecure_settings(&self) -> Vec<String> {
        let mut found = Vec::new();
        if self.liveness == LivenessModel::Off {
            found.push(format!(
                "{}=off: every face counts as live, so a printed photo of an enrolled person is \
                 accepted",
                env::LIVENESS
            ));
        }
        if self.decision_policy == DecisionPolicy::Fusion
            && self.weights == WeightsSource::BuiltIn("reference".into())
        {
            found.push(format!(
                "{}=fusion with the untrained reference weights ({}=reference): their \
                 probability is not calibrated; use `trained` or a fitted weights file",
                env::DECISION_POLICY,
                env::WEIGHTS
            ));
        }
        if self.match_threshold < defaults::MATCH_THRESHOLD {
            found.push(format!(
                "{}={} is looser than dlib's distance {} (similarity {}): more impostors match",
                env::MATCH_THRESHOLD,
                self.match_threshold,
                defaults::MATCH_DISTANCE,
                defaults::MATCH_THRESHOLD
            ));
        }
        if self.smtp_tls == SmtpTls::None
            && self.smtp_smarthost.is_some()
            && (self.smtp_username.is_some() || self.smtp_password.is_some())
        {
            found.push(format!(
                "{}=none with SMTP credentials: the password crosses the network in clear text \
                 (use starttls or tls; none is for a trusted relay without AUTH)",
                env::SMTP_TLS
            ));
        }
        // A URL in a file is judged when start-up reads it (`server`), the same way.
        if let Some(url) = self
            .database_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            && crate::store::postgres::transport(url, self.database_ca_file.as_deref())
                == crate::store::postgres::Transport::Unstated
        {
            found.push(crate::store::postgres::unstated_transport(
                env::DATABASE_URL,
                url,
            ));
        }
        if self.audit_log.trim() == "off" {
            found.push(format!(
                "{}=off: no record is kept of who enrolled, read, deleted or verified whom, nor \
                 of refused calls (biometric data usually needs one)",
                env::AUDIT_LOG
            ));
        }
        if self.cors_origins.iter().any(|o| o.trim() == "*") {
            found.push(format!(
                "{}=*: any web site may call the API from its visitors' browsers",
                env::CORS_ORIGINS
            ));
        }
        found
    }

    /// `FACEKEY_*` names in `vars` that are no setting of this runtime: a typo, or a setting of a
    /// newer release (an operator newer than the runtime image it runs), which this runtime
    /// ignores. Start-up and `--check-config` warn about each, so an ignored security setting
    /// (a CA file, a lockout bound) is not ignored silently.
    /// Kubernetes' service links are left out: a Service named `facekey` (or `facekey-db-rw`)
    /// gives every pod of its namespace `FACEKEY_SERVICE_HOST`, `FACEKEY_PORT_8080_TCP` and
    /// the like, the injected sidecar's pod included.
    pub fn unknown_settings(names: impl IntoIterator<Item = String>) -> Vec<String> {
        let service_link = |name: &str| {
            name.contains("_SERVICE_HOST")
                || name.contains("_SERVICE_PORT")
                || name.ends_with("_PORT")
                || name.contains("_PORT_")
        };
        let mut unknown: Vec<String> = names
            .into_iter()
            .filter(|name| {
                name.starts_with("FACEKEY_")
                    && !env::ALL.contains(&name.as_str())
                    && !service_link(name)
            })
            .collect();
        unknown.sort();
        unknown
    }

    /// Defaults for tests: everything as if no flag were set, except an ephemeral loopback port
    /// and a fresh data directory under the system temp dir.
    pub fn for_tests() -> Self {
        let mut c = Self::parse_from(["facekey-runtime"]);
        c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c.data_dir = std::env::temp_dir().join(format!("facekey-test-{}", uuid::Uuid::new_v4()));
        // Beside the data directory (which a shared store never creates), out of the test's
        // output; tests that read the trail set their own file.
        c.audit_log = format!("{}.audit.log", c.data_dir.display());
        c
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_follows_the_in_flight_count_unless_set() {
        let c = Config::try_parse_from(["facekey-runtime"]).unwrap();
        assert_eq!(c.max_queue(), 4 * c.max_inflight);
        let c = Config::try_parse_from(["facekey-runtime", "--max-inflight", "3"]).unwrap();
        assert_eq!(c.max_queue(), 12);
        let c =
            Config::try_parse_from(["facekey-runtime", "--max-inflight", "3", "--max-queue", "0"])
                .unwrap();
        assert_eq!((c.max_inflight, c.max_queue()), (3, 0));
    }

    #[test]
    fn the_subject_quota_is_per_key_unless_zero() {
        let c = Config::try_parse_from(["facekey-runtime"]).unwrap();
        assert_eq!(
            c.quota(QuotaOf::Subjects),
            Some(defaults::MAX_SUBJECTS_PER_KEY)
        );
        assert!(c.quota(QuotaOf::Subjects) < Some(c.max_subjects));
        let c = Config::try_parse_from(["facekey-runtime", "--max-subjects-per-key", "3"]).unwrap();
        assert_eq!(c.quota(QuotaOf::Subjects), Some(3));
        let c = Config::try_parse_from(["facekey-runtime", "--max-subjects-per-key", "0"]).unwrap();
        assert_eq!(c.quota(QuotaOf::Subjects), None);
        assert!(
            Config::try_parse_from(["facekey-runtime", "--max-subjects-per-key", "-1"]).is_err()
        );
    }

    #[test]
    fn admin_and_read_only_keys_are_held_to_no_key_quota() {
        let c =
            Config::try_parse_from(["facekey-runtime", "--max-templates-per-key", "7"]).unwrap();
        let caller = |scope| Caller {
            key_id: "k".into(),
            scopes: std::sync::Arc::new([scope].into()),
        };
        let enrol = caller(crate::auth::Scope::Enrol);
        assert_eq!(c.key_quota(QuotaOf::Templates, &enrol), Some(7));
        assert_eq!(
            c.key_quota(QuotaOf::Subjects, &enrol),
            Some(defaults::MAX_SUBJECTS_PER_KEY)
        );
        let admin = caller(crate::auth::Scope::Admin);
        assert_eq!(c.key_quota(QuotaOf::Templates, &admin), None);
        assert_eq!(c.key_quota(QuotaOf::Subjects, &admin), None);
        // A key that cannot write reports no quota either.
        let verify = caller(crate::auth::Scope::Verify);
        assert_eq!(c.key_quota(QuotaOf::Templates, &verify), None);
        assert_eq!(c.key_quota(QuotaOf::Subjects, &verify), None);
    }

    #[test]
    fn the_template_quota_is_per_key_unless_zero() {
        let c = Config::try_parse_from(["facekey-runtime"]).unwrap();
        assert_eq!(
            c.quota(QuotaOf::Templates),
            Some(defaults::MAX_TEMPLATES_PER_KEY)
        );
        assert!(c.quota(QuotaOf::Templates) < Some(c.max_templates));
        let c =
            Config::try_parse_from(["facekey-runtime", "--max-templates-per-key", "3"]).unwrap();
        assert_eq!(c.quota(QuotaOf::Templates), Some(3));
        let c =
            Config::try_parse_from(["facekey-runtime", "--max-templates-per-key", "0"]).unwrap();
        assert_eq!(c.quota(QuotaOf::Templates), None);
    }

    #[test]
    fn the_queue_wait_is_bounded_by_half_the_request_timeout() {
        let c = Config::try_parse_from(["facekey-runtime", "--max-queue-wait-ms", "250"]).unwrap();
        assert_eq!(c.admission_limits().max_wait, Duration::from_millis(250));
        let c = Config::try_parse_from([
            "facekey-runtime",
            "--max-queue-wait-ms",
            "5000",
            "--request-timeout-secs",
            "4",
        ])
        .unwrap();
        assert_eq!(c.admission_limits().max_wait, Duration::from_secs(2));
        assert!(Config::try_parse_from(["facekey-runtime", "--max-queue-wait-ms", "0"]).is_err());
    }

    #[test]
    fn the_queue_max_load_is_a_positive_finite_number() {
        let c = Config::try_parse_from(["facekey-runtime"]).unwrap();
        assert_eq!(c.admission_limits().queue_max_load, 1.2);
        let c = Config::try_parse_from(["facekey-runtime", "--queue-max-load", "3.5"]).unwrap();
        assert_eq!(c.admission_limits().queue_max_load, 3.5);
        for bad in ["0", "-1", "inf", "NaN", "lots"] {
            assert!(
                Config::try_parse_from(["facekey-runtime", "--queue-max-load", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn defaults_are_the_catalogue_and_the_domain_defaults() {
        let c = Config::try_parse_from(["facekey-runtime"]).unwrap();
        assert_eq!(c.vision_config(), VisionConfig::default());
        assert_eq!(c.verifier_config(), VerifierConfig::default());
        assert_eq!(c.liveness.mode(c.liveness_combine), LivenessMode::default());
        assert_eq!(c.multi_face, MultiFace::Largest);
        assert_eq!(c.smtp_tls, SmtpTls::Starttls);
        assert_eq!(c.max_body_bytes, defaults::MAX_BODY_BYTES);
        assert_eq!(c.max_body_memory_bytes, defaults::MAX_BODY_MEMORY_BYTES);
        assert_eq!(
            c.max_body_memory_per_key_share,
            defaults::MAX_BODY_MEMORY_PER_KEY_SHARE
        );
        assert_eq!(c.min_body_bytes_per_sec, defaults::MIN_BODY_BYTES_PER_SEC);
        assert_eq!(c.body_rate_grace_secs, defaults::BODY_RATE_GRACE_SECS);
        for bad in ["-0.1", "1.5", "NaN", "half"] {
            assert!(
                Config::try_parse_from(["facekey-runtime", "--max-body-memory-per-key-share", bad])
                    .is_err(),
                "{bad}"
            );
        }
        // Every enumerated default in the catalogue is a value the flag accepts.
        for (flag, value) in [
            ("--multi-face", defaults::MULTI_FACE),
            ("--liveness", defaults::LIVENESS),
            ("--liveness-combine", defaults::LIVENESS_COMBINE),
            ("--match-models", defaults::MATCH_MODELS),
            (
                "--passive-liveness-models",
                defaults::PASSIVE_LIVENESS_MODELS,
            ),
            ("--decision-policy", defaults::DECISION_POLICY),
            ("--smtp-tls", defaults::SMTP_TLS),
            ("--log-format", defaults::LOG_FORMAT),
            ("--metrics-auth", defaults::METRICS_AUTH),
            ("--enrol-liveness", defaults::ENROL_LIVENESS),
        ] {
            Config::try_parse_from(["facekey-runtime", flag, value])
                .unwrap_or_else(|e| panic!("{flag} {value}: {e}"));
        }
    }

    #[test]
    fn check_refuses_what_start_up_would() {
        let check = |args: &[&str]| {
            Config::try_parse_from(std::iter::once("facekey-runtime").chain(args.iter().copied()))
                .unwrap()
                .check()
        };
        assert_eq!(check(&[]), Ok(Vec::new()));
        let refused = |args: &[&str], needle: &str| {
            let err = check(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        };
        refused(
            &[
                "--max-body-memory-bytes",
                "1000",
                "--max-body-bytes",
                "2000",
            ],
            env::MAX_BODY_MEMORY_BYTES,
        );
        refused(&["--liveness", "off"], "unsafe settings");
        refused(
            &[
                "--smtp-smarthost",
                "relay:25",
                "--alert-from",
                "fk@example.com",
            ],
            env::ALERT_TO,
        );
        refused(
            &[
                "--smtp-smarthost",
                "relay:25",
                "--alert-from",
                "not an address",
                "--alert-to",
                "sec@example.com",
            ],
            "alert sender",
        );
        refused(
            &[
                "--smtp-smarthost",
                "relay:587",
                "--alert-from",
                "fk@example.com",
                "--alert-to",
                "sec@example.com",
                "--smtp-username",
                "fk",
            ],
            "set together",
        );
        refused(&["--lockout-attempts", "1000000"], env::LOCKOUT_ATTEMPTS);
        refused(&["--database-ca-file", "/ca.crt"], env::DATABASE_CA_FILE);
        refused(
            &["--spoof-model-uri", "https://m.example/x.onnx"],
            "never downloads models",
        );
        refused(
            &[
                "--database-url-file",
                "/run/db/url",
                "--api-keys-file",
                "/k",
            ],
            env::TEMPLATE_KEY_FILE,
        );
        refused(
            &[
                "--database-url",
                "postgres://db/fk?sslmode=verify-full",
                "--template-key-file",
                "/t",
            ],
            env::API_KEYS_FILE,
        );
        // A URL that leaves TLS to chance is an unsafe setting (one in a file: at start-up).
        refused(
            &[
                "--database-url",
                "postgres://db/fk",
                "--template-key-file",
                "/t",
                "--api-keys-file",
                "/k",
            ],
            "sslmode",
        );
        // A shared store with both keys files is fine (the files are not read by the check).
        assert_eq!(
            check(&[
                "--database-url-file",
                "/run/db/url",
                "--template-key-file",
                "/t",
                "--api-keys-file",
                "/k"
            ]),
            Ok(Vec::new())
        );
        // Allowed unsafe settings come back to be logged.
        assert_eq!(
            check(&["--liveness", "off", "--allow-insecure"]).map(|w| w.len()),
            Ok(1)
        );
    }

    /// Values that would break the server without a word are refused at start-up: a smallest
    /// face below MTCNN's 12-pixel cell enlarges every image in the detection pyramid (1 pixel:
    /// 144 times the pixels), 0 or NaN finds no face ever; no image fits in 0 pixels; the
    /// connection semaphore panics beyond its size; a log filter that does not parse.
    #[test]
    fn values_that_would_break_the_server_are_refused() {
        let parse = |flag: &str, v: &str| {
            Config::try_parse_from(["facekey-runtime", &format!("--{flag}={v}")])
        };
        for bad in ["1", "0", "-20", "NaN", "inf", "11.9", "4097"] {
            let err = parse("min-face-size", bad).unwrap_err().to_string();
            assert!(
                err.contains("12 to 4096") || err.contains("not a number"),
                "{bad}: {err}"
            );
        }
        for good in ["12", "40.5", "4096"] {
            assert!(parse("min-face-size", good).is_ok(), "{good}");
        }
        assert!(parse("max-image-pixels", "0").is_err());
        assert!(parse("max-connections", "1000001").is_err());
        assert!(parse("max-connections", "18446744073709551615").is_err());
        assert_eq!(
            parse("max-connections", "1000000").unwrap().max_connections,
            1_000_000
        );
        let c = parse("log", "facekey_runtime=[").unwrap();
        let err = c.check().unwrap_err();
        assert!(
            err.contains(env::LOG) && err.contains("invalid log filter"),
            "{err}"
        );
        assert_eq!(
            parse("log", "info,tower_http=debug").unwrap().check(),
            Ok(Vec::new())
        );
    }

    /// `FACEKEY_REQUEST_TIMEOUT_SECS` is 1 to 300 s: 0 would answer every request 503 while
    /// the pod reports ready, and a huge value overflows the deadlines built from it.
    #[test]
    fn the_request_timeout_is_bounded() {
        let parse = |v: &str| {
            Config::try_parse_from(["facekey-runtime", &format!("--request-timeout-secs={v}")])
        };
        for (good, want) in [("1", 1), ("300", 300)] {
            let c = parse(good).unwrap();
            assert_eq!(c.request_timeout(), Duration::from_secs(want));
            assert_eq!(c.check(), Ok(Vec::new()));
        }
        for bad in ["0", "301", "18446744073709551615", "-1", "soon"] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains(env::REQUEST_TIMEOUT_SECS), "{bad}: {err}");
        }
        // A configuration built in code is held to the same bounds at start-up.
        for (bad, range) in [
            (0, "between 1 and 300"),
            (301, "between 1 and 300"),
            (u64::MAX, ""),
        ] {
            let mut c = Config::for_tests();
            c.request_timeout_secs = bad;
            let err = c.check().unwrap_err();
            assert!(
                err.contains(env::REQUEST_TIMEOUT_SECS) && err.contains(range),
                "{err}"
            );
        }
    }

    /// `FACEKEY_ALERT_MIN_INTERVAL_SECS` is 0 to a day: a huge one overflowed the next email's
    /// time.
    #[test]
    fn the_alert_interval_is_bounded() {
        let parse = |v: &str| {
            Config::try_parse_from(["facekey-runtime", &format!("--alert-min-interval-secs={v}")])
        };
        for good in ["0", "86400"] {
            let c = parse(good).unwrap();
            assert_eq!(c.check(), Ok(Vec::new()), "{good}");
        }
        for bad in ["86401", "18446744073709551615", "-1"] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains(env::ALERT_MIN_INTERVAL_SECS), "{bad}: {err}");
        }
        for bad in [86_401, u64::MAX] {
            let mut c = Config::for_tests();
            c.alert_min_interval_secs = bad;
            let err = c.check().unwrap_err();
            assert!(
                err.contains(env::ALERT_MIN_INTERVAL_SECS) && err.contains("between 0 and 86400"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_shutdown_delay_is_bounded() {
        let c = Config::try_parse_from(["facekey-runtime"]).unwrap();
        assert_eq!(c.shutdown_delay(), Duration::ZERO);
        let c =
            Config::try_parse_from(["facekey-runtime", "--shutdown-delay-secs", "300"]).unwrap();
        assert_eq!(c.shutdown_delay(), Duration::from_secs(300));
        for bad in ["301", "-1", "soon"] {
            assert!(
                Config::try_parse_from(["facekey-runtime", "--shutdown-delay-secs", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn second_opinion_settings_parse() {
        let c = Config::try_parse_from(["facekey-runtime"]).unwrap();
        assert_eq!(c.match_models, MatchModels::DlibFaceres);
        assert_eq!(
            c.passive_liveness_models,
            PassiveLivenessModels::FrLivenessHumanLiveness
        );
        let c = Config::try_parse_from([
            "facekey-runtime",
            "--match-models",
            "dlib",
            "--passive-liveness-models",
            "fr_liveness",
        ])
        .unwrap();
        let v = c.vision_config();
        assert_eq!(v.second_opinion.match_models, MatchModels::Dlib);
        assert_eq!(
            v.second_opinion.passive_liveness_models,
            PassiveLivenessModels::FrLiveness
        );
        assert!(Config::try_parse_from(["facekey-runtime", "--match-models", "faceres"]).is_err());
    }

    #[test]
    fn unsafe_settings_are_named() {
        let safe = Config::try_parse_from(["facekey-runtime"]).unwrap();
        assert!(safe.insecure_settings().is_empty());
        assert!(!safe.allow_insecure);
        for args in [
            &["--liveness", "off"][..],
            &["--decision-policy", "fusion"],
            &["--match-threshold", "0.4"],
            &["--cors-origins", "https://a.example,*"],
            &["--audit-log", "off"],
            &[
                "--smtp-smarthost",
                "relay:25",
                "--smtp-tls",
                "none",
                "--smtp-username",
                "alerts",
            ],
        ] {
            let c = Config::try_parse_from(
                std::iter::once("facekey-runtime").chain(args.iter().copied()),
            )
            .unwrap();
            assert_eq!(c.insecure_settings().len(), 1, "{args:?}");
        }
        let trained = Config::try_parse_from([
            "facekey-runtime",
            "--decision-policy",
            "fusion",
            "--weights",
            "trained",
            "--match-threshold",
            "0.6",
        ])
        .unwrap();
        assert!(trained.insecure_settings().is_empty());
        // A relay without TLS is fine without credentials.
        let relay = Config::try_parse_from([
            "facekey-runtime",
            "--smtp-smarthost",
            "relay:25",
            "--smtp-tls",
            "none",
        ])
        .unwrap();
        assert!(relay.insecure_settings().is_empty());
        let allowed =
            Config::try_parse_from(["facekey-runtime", "--allow-insecure", "--liveness", "off"])
                .unwrap();
        assert!(allowed.allow_insecure);
    }

    #[test]
    fn reads_exactly_the_catalogued_variables() {
        use clap::CommandFactory;
        let read: std::collections::BTreeSet<String> = Config::command()
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        let catalogue: std::collections::BTreeSet<String> =
            env::ALL.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(read, catalogue);
    }

    #[test]
    fn unknown_facekey_names_are_reported() {
        let names = [
            "FACEKEY_LISTEN",
            "FACEKEY_LOCKOUT_MAX_SECS",
            "FACEKEY_LISTNE",
            "FACEKEY_SETTING_OF_A_NEWER_RELEASE",
            "PATH",
            "FACEKEY_SERVICE_HOST",
            "FACEKEY_SERVICE_PORT_HTTP",
            "FACEKEY_PORT",
            "FACEKEY_DB_RW_PORT_5432_TCP_ADDR",
        ]
        .map(str::to_owned);
        assert_eq!(
            Config::unknown_settings(names),
            ["FACEKEY_LISTNE", "FACEKEY_SETTING_OF_A_NEWER_RELEASE"]
        );
    }

    #[test]
    fn database_url_from_flag_or_file() {
        let c = Config::try_parse_from(["facekey-runtime"]).unwrap();
        assert_eq!(c.database_url().unwrap(), None);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("url");
        std::fs::write(&f, "postgres://u:p@db/facekey\n").unwrap();
        let c = Config::try_parse_from([
            "facekey-runtime",
            "--database-url-file",
            f.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(
            c.database_url().unwrap().as_deref(),
            Some("postgres://u:p@db/facekey")
        );
        std::fs::write(&f, "  \n").unwrap();
        assert!(
            c.database_url()
                .unwrap_err()
                .contains(env::DATABASE_URL_FILE)
        );
        let missing =
            Config::try_parse_from(["facekey-runtime", "--database-url-file", "/nonexistent/url"])
                .unwrap();
        assert!(
            missing
                .database_url()
                .unwrap_err()
                .contains("/nonexistent/url")
        );
        // Both at once is a usage error.
        assert!(
            Config::try_parse_from([
                "facekey-runtime",
                "--database-url",
                "postgres://x",
                "--database-url-file",
                "/x",
            ])
            .is_err()
        );
    }

    #[test]
    fn liveness_off_is_the_explicit_insecure_mode() {
        let c = Config::try_parse_from(["facekey-runtime", "--liveness", "off"]).unwrap();
        assert!(!c.verifier_config().check_liveness);
        assert_eq!(c.vision_config().liveness.mode, LivenessMode::Off);
        let c = Config::try_parse_from(["facekey-runtime", "--liveness", "both"]).unwrap();
        assert!(c.verifier_config().check_liveness);
    }

    #[test]
    fn defaults() {
        let c = Config::try_parse_from(["facekey-runtime"]).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.weights, WeightsSource::BuiltIn("reference".into()));
        assert_eq!(c.threshold, None);
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn flags_override() {
        let c = Config::try_parse_from([
            "facekey-runtime",
            "--listen",
            "127.0.0.1:9000",
            "--weights",
            "/etc/facekey/w.json",
            "--threshold",
            "0.7",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.weights, WeightsSource::File("/etc/facekey/w.json".into()));
        assert_eq!(c.threshold, Some(0.7));
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn email_settings_need_sender_and_recipients() {
        let c = Config::try_parse_from(["facekey-runtime"]).unwrap();
        assert!(c.email_settings().unwrap().is_none());
        let c = Config::try_parse_from([
            "facekey-runtime",
            "--smtp-smarthost",
            "mail:587",
            "--alert-to",
            "a@example.com, b@example.com",
        ])
        .unwrap();
        assert!(
            c.email_settings()
                .unwrap_err()
                .contains("FACEKEY_ALERT_FROM")
        );
        let c = Config::try_parse_from([
            "facekey-runtime",
            "--smtp-smarthost",
            "mail:587",
            "--alert-from",
            "facekey@example.com",
            "--alert-to",
            "a@example.com,b@example.com",
            "--instance",
            "pod-1",
        ])
        .unwrap();
        let s = c.email_settings().unwrap().unwrap();
        assert_eq!(s.to, vec!["a@example.com", "b@example.com"]);
        assert_eq!(s.instance, "pod-1");
        assert_eq!(s.tls, SmtpTls::Starttls);
    }

    #[test]
    fn bad_values_are_rejected_with_a_reason() {
        let err = Config::try_parse_from(["facekey-runtime", "--threshold", "1.5"]).unwrap_err();
        assert!(err.to_string().contains("[0, 1]"), "{err}");
        let err = Config::try_parse_from(["facekey-runtime", "--max-batch", "0"]).unwrap_err();
        assert!(err.to_string().contains("at least 1"), "{err}");
        assert!(Config::try_parse_from(["facekey-runtime", "--listen", "nope"]).is_err());
    }
}
