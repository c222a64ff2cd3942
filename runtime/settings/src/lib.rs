//! The runtime's settings in one catalogue: the name of every `FACEKEY_*` environment variable
//! `facekey-runtime` reads and every default it applies. The runtime's command line, its vision
//! and verification defaults, the evaluation lab and the operator (which writes these variables
//! into pods) all take them from here, so a default or a name is changed in one place.
//!
//! No dependencies: the operator links this without the inference stack.

#![forbid(unsafe_code)]

/// Environment variable names, one per runtime flag (`--listen` ↔ `FACEKEY_LISTEN`).
pub mod env {
    /// Address and port to listen on.
    pub const LISTEN: &str = "FACEKEY_LISTEN";
    /// Fusion weights: a built-in name or a weights file path.
    pub const WEIGHTS: &str = "FACEKEY_WEIGHTS";
    /// Authentication threshold on the fused probability.
    pub const THRESHOLD: &str = "FACEKEY_THRESHOLD";
    /// Directory of the embedded template store.
    pub const DATA_DIR: &str = "FACEKEY_DATA_DIR";
    /// PostgreSQL URL of the shared template store (unset: the embedded store).
    pub const DATABASE_URL: &str = "FACEKEY_DATABASE_URL";
    /// A file holding that URL (a mounted Secret).
    pub const DATABASE_URL_FILE: &str = "FACEKEY_DATABASE_URL_FILE";
    /// PEM CA the database server's certificate must chain to (TLS verified, host name too).
    pub const DATABASE_CA_FILE: &str = "FACEKEY_DATABASE_CA_FILE";
    /// The template encryption key file (a mounted Secret).
    pub const TEMPLATE_KEY_FILE: &str = "FACEKEY_TEMPLATE_KEY_FILE";
    /// Most templates per subject.
    pub const MAX_FACES_PER_SUBJECT: &str = "FACEKEY_MAX_FACES_PER_SUBJECT";
    /// Most subjects in the store.
    pub const MAX_SUBJECTS: &str = "FACEKEY_MAX_SUBJECTS";
    /// Most subjects one API key may have created and still hold (admin keys: only the store's).
    pub const MAX_SUBJECTS_PER_KEY: &str = "FACEKEY_MAX_SUBJECTS_PER_KEY";
    /// Most templates (enrolled faces) in the store, all subjects together.
    pub const MAX_TEMPLATES: &str = "FACEKEY_MAX_TEMPLATES";
    /// Most templates one API key may have enrolled and still hold (admin keys: only the
    /// store's).
    pub const MAX_TEMPLATES_PER_KEY: &str = "FACEKEY_MAX_TEMPLATES_PER_KEY";
    /// Largest request body, bytes.
    pub const MAX_BODY_BYTES: &str = "FACEKEY_MAX_BODY_BYTES";
    /// Request body bytes held in memory at once, all requests together.
    pub const MAX_BODY_MEMORY_BYTES: &str = "FACEKEY_MAX_BODY_MEMORY_BYTES";
    /// Share of that memory the request bodies of one API key may hold at once.
    pub const MAX_BODY_MEMORY_PER_KEY_SHARE: &str = "FACEKEY_MAX_BODY_MEMORY_PER_KEY_SHARE";
    /// Least rate a request body must arrive at after the grace period, bytes per second.
    pub const MIN_BODY_BYTES_PER_SEC: &str = "FACEKEY_MIN_BODY_BYTES_PER_SEC";
    /// Seconds a request body may lag before that rate applies.
    pub const BODY_RATE_GRACE_SECS: &str = "FACEKEY_BODY_RATE_GRACE_SECS";
    /// Largest encoded image, bytes.
    pub const MAX_IMAGE_BYTES: &str = "FACEKEY_MAX_IMAGE_BYTES";
    /// Largest decoded image, pixels.
    pub const MAX_IMAGE_PIXELS: &str = "FACEKEY_MAX_IMAGE_PIXELS";
    /// The ONNX Runtime shared library.
    pub const ORT_LIBRARY: &str = "FACEKEY_ORT_LIBRARY";
    /// Directory of the ONNX models.
    pub const MODELS_DIR: &str = "FACEKEY_MODELS_DIR";
    /// Directory of replacement liveness models.
    pub const SPOOF_MODEL_DIR: &str = "FACEKEY_SPOOF_MODEL_DIR";
    /// Refused: model URIs (the runtime never downloads).
    pub const SPOOF_MODEL_URI: &str = "FACEKEY_SPOOF_MODEL_URI";
    /// ONNX Runtime intra-op threads per session.
    pub const INTRA_THREADS: &str = "FACEKEY_INTRA_THREADS";
    /// Sessions per model.
    pub const SESSIONS_PER_MODEL: &str = "FACEKEY_SESSIONS_PER_MODEL";
    /// Smallest face searched for, pixels.
    pub const MIN_FACE_SIZE: &str = "FACEKEY_MIN_FACE_SIZE";
    /// What to do with several faces in one image.
    pub const MULTI_FACE: &str = "FACEKEY_MULTI_FACE";
    /// Most faces of one image whose liveness is analysed.
    pub const MAX_FACES_PER_IMAGE: &str = "FACEKEY_MAX_FACES_PER_IMAGE";
    /// Minimum match similarity.
    pub const MATCH_THRESHOLD: &str = "FACEKEY_MATCH_THRESHOLD";
    /// Passive liveness models.
    pub const LIVENESS: &str = "FACEKEY_LIVENESS";
    /// How two liveness scores combine.
    pub const LIVENESS_COMBINE: &str = "FACEKEY_LIVENESS_COMBINE";
    /// Embedding models fused into the match score.
    pub const MATCH_MODELS: &str = "FACEKEY_MATCH_MODELS";
    /// MiniFASNet-like models fused into the passive liveness score.
    pub const PASSIVE_LIVENESS_MODELS: &str = "FACEKEY_PASSIVE_LIVENESS_MODELS";
    /// Minimum liveness score.
    pub const LIVENESS_THRESHOLD: &str = "FACEKEY_LIVENESS_THRESHOLD";
    /// `strict` or `fusion`.
    pub const DECISION_POLICY: &str = "FACEKEY_DECISION_POLICY";
    /// Largest `/v1/score` batch.
    pub const MAX_BATCH: &str = "FACEKEY_MAX_BATCH";
    /// Inferences running at once.
    pub const MAX_INFLIGHT: &str = "FACEKEY_MAX_INFLIGHT";
    /// Requests waiting for an inference place.
    pub const MAX_QUEUE: &str = "FACEKEY_MAX_QUEUE";
    /// Longest wait for an inference place, milliseconds.
    pub const MAX_QUEUE_WAIT_MS: &str = "FACEKEY_MAX_QUEUE_WAIT_MS";
    /// Offered load above which requests are not queued.
    pub const QUEUE_MAX_LOAD: &str = "FACEKEY_QUEUE_MAX_LOAD";
    /// Request timeout, seconds.
    pub const REQUEST_TIMEOUT_SECS: &str = "FACEKEY_REQUEST_TIMEOUT_SECS";
    /// Most open HTTP connections.
    pub const MAX_CONNECTIONS: &str = "FACEKEY_MAX_CONNECTIONS";
    /// Longest wait for a request's headers, seconds.
    pub const HEADER_READ_TIMEOUT_SECS: &str = "FACEKEY_HEADER_READ_TIMEOUT_SECS";
    /// Age after which a connection is closed gracefully, seconds (0: never).
    pub const MAX_CONNECTION_AGE_SECS: &str = "FACEKEY_MAX_CONNECTION_AGE_SECS";
    /// Shutdown grace period, seconds.
    pub const SHUTDOWN_TIMEOUT_SECS: &str = "FACEKEY_SHUTDOWN_TIMEOUT_SECS";
    /// Seconds to keep serving after SIGTERM while readiness fails (load balancers catching up).
    pub const SHUTDOWN_DELAY_SECS: &str = "FACEKEY_SHUTDOWN_DELAY_SECS";
    /// SMTP server of spoof alert emails.
    pub const SMTP_SMARTHOST: &str = "FACEKEY_SMTP_SMARTHOST";
    /// SMTP connection security.
    pub const SMTP_TLS: &str = "FACEKEY_SMTP_TLS";
    /// SMTP AUTH user.
    pub const SMTP_USERNAME: &str = "FACEKEY_SMTP_USERNAME";
    /// SMTP AUTH password.
    pub const SMTP_PASSWORD: &str = "FACEKEY_SMTP_PASSWORD";
    /// Extra PEM root certificate for the SMTP server.
    pub const SMTP_CA_FILE: &str = "FACEKEY_SMTP_CA_FILE";
    /// Sender of alert emails.
    pub const ALERT_FROM: &str = "FACEKEY_ALERT_FROM";
    /// Recipients of alert emails.
    pub const ALERT_TO: &str = "FACEKEY_ALERT_TO";
    /// Least seconds between two alert emails.
    pub const ALERT_MIN_INTERVAL_SECS: &str = "FACEKEY_ALERT_MIN_INTERVAL_SECS";
    /// Instance name in alert emails.
    pub const INSTANCE: &str = "FACEKEY_INSTANCE";
    /// Serve the bundled UI.
    pub const UI_ENABLED: &str = "FACEKEY_UI_ENABLED";
    /// `text` or `json` logs.
    pub const LOG_FORMAT: &str = "FACEKEY_LOG_FORMAT";
    /// Log filter.
    pub const LOG: &str = "FACEKEY_LOG";
    /// API keys file (a mounted Secret): `<key-id>:<scopes>:<sha256 hex>[:<rps>]` per line.
    pub const API_KEYS_FILE: &str = "FACEKEY_API_KEYS_FILE";
    /// Whether `/metrics` on the API port needs a key with the `metrics` scope.
    pub const METRICS_AUTH: &str = "FACEKEY_METRICS_AUTH";
    /// A second listener serving only health and metrics, without keys (unset: none).
    pub const METRICS_LISTEN: &str = "FACEKEY_METRICS_LISTEN";
    /// Whether that listener's `/metrics` has the private families (per-attempt scores, per-key
    /// series): `on` or `off`.
    pub const METRICS_LISTEN_PRIVATE: &str = "FACEKEY_METRICS_LISTEN_PRIVATE";
    /// Origins allowed by CORS (unset: CORS off).
    pub const CORS_ORIGINS: &str = "FACEKEY_CORS_ORIGINS";
    /// Start even with settings known to be unsafe.
    pub const ALLOW_INSECURE: &str = "FACEKEY_ALLOW_INSECURE";
    /// Where audit events go: `stdout`, `off` or a file path.
    pub const AUDIT_LOG: &str = "FACEKEY_AUDIT_LOG";
    /// Whether an enrolled face must pass passive liveness.
    pub const ENROL_LIVENESS: &str = "FACEKEY_ENROL_LIVENESS";
    /// Least quality score of an enrolled face.
    pub const ENROL_MIN_QUALITY: &str = "FACEKEY_ENROL_MIN_QUALITY";
    /// Failed verifications of one subject that lock it.
    pub const LOCKOUT_ATTEMPTS: &str = "FACEKEY_LOCKOUT_ATTEMPTS";
    /// Window in which those failures are counted, seconds.
    pub const LOCKOUT_WINDOW_SECS: &str = "FACEKEY_LOCKOUT_WINDOW_SECS";
    /// How long a locked subject stays locked the first time, seconds.
    pub const LOCKOUT_SECS: &str = "FACEKEY_LOCKOUT_SECS";
    /// The longest a lock grows to by doubling, seconds (0: locks never grow).
    pub const LOCKOUT_MAX_SECS: &str = "FACEKEY_LOCKOUT_MAX_SECS";
    /// How long a challenge-liveness session lives, seconds.
    pub const SESSION_TTL_SECS: &str = "FACEKEY_SESSION_TTL_SECS";
    /// Challenge-liveness sessions open at once on one replica.
    pub const MAX_SESSIONS: &str = "FACEKEY_MAX_SESSIONS";
    /// Challenge-liveness sessions open at once per API key.
    pub const MAX_SESSIONS_PER_KEY: &str = "FACEKEY_MAX_SESSIONS_PER_KEY";
    /// Frames one challenge-liveness session accepts in all.
    pub const SESSION_MAX_FRAMES: &str = "FACEKEY_SESSION_MAX_FRAMES";
    /// Whether `/v1/verify` requires a passed challenge-liveness session.
    pub const REQUIRE_SESSION: &str = "FACEKEY_REQUIRE_SESSION";
    /// Least median passive liveness score over a session's frames for it to pass (0: off).
    pub const SESSION_PASSIVE_MIN: &str = "FACEKEY_SESSION_PASSIVE_MIN";
    /// How long the frames of a subject's accepted sessions are remembered against replays,
    /// seconds (0: off).
    pub const SESSION_REPLAY_WINDOW_SECS: &str = "FACEKEY_SESSION_REPLAY_WINDOW_SECS";

    /// Every variable above: the runtime reads exactly these (a runtime test checks both ways).
    pub const ALL: &[&str] = &[
        LISTEN,
        WEIGHTS,
        THRESHOLD,
        DATA_DIR,
        DATABASE_URL,
        DATABASE_URL_FILE,
        DATABASE_CA_FILE,
        TEMPLATE_KEY_FILE,
        MAX_FACES_PER_SUBJECT,
        MAX_SUBJECTS,
        MAX_SUBJECTS_PER_KEY,
        MAX_TEMPLATES,
        MAX_TEMPLATES_PER_KEY,
        MAX_BODY_BYTES,
        MAX_BODY_MEMORY_BYTES,
        MAX_BODY_MEMORY_PER_KEY_SHARE,
        MIN_BODY_BYTES_PER_SEC,
        BODY_RATE_GRACE_SECS,
        MAX_IMAGE_BYTES,
        MAX_IMAGE_PIXELS,
        ORT_LIBRARY,
        MODELS_DIR,
        SPOOF_MODEL_DIR,
        SPOOF_MODEL_URI,
        INTRA_THREADS,
        SESSIONS_PER_MODEL,
        MIN_FACE_SIZE,
        MULTI_FACE,
        MAX_FACES_PER_IMAGE,
        MATCH_THRESHOLD,
        LIVENESS,
        LIVENESS_COMBINE,
        MATCH_MODELS,
        PASSIVE_LIVENESS_MODELS,
        LIVENESS_THRESHOLD,
        DECISION_POLICY,
        MAX_BATCH,
        MAX_INFLIGHT,
        MAX_QUEUE,
        MAX_QUEUE_WAIT_MS,
        QUEUE_MAX_LOAD,
        REQUEST_TIMEOUT_SECS,
        MAX_CONNECTIONS,
        HEADER_READ_TIMEOUT_SECS,
        MAX_CONNECTION_AGE_SECS,
        SHUTDOWN_TIMEOUT_SECS,
        SHUTDOWN_DELAY_SECS,
        SMTP_SMARTHOST,
        SMTP_TLS,
        SMTP_USERNAME,
        SMTP_PASSWORD,
        SMTP_CA_FILE,
        ALERT_FROM,
        ALERT_TO,
        ALERT_MIN_INTERVAL_SECS,
        INSTANCE,
        UI_ENABLED,
        LOG_FORMAT,
        LOG,
        API_KEYS_FILE,
        METRICS_AUTH,
        METRICS_LISTEN,
        METRICS_LISTEN_PRIVATE,
        CORS_ORIGINS,
        ALLOW_INSECURE,
        AUDIT_LOG,
        ENROL_LIVENESS,
        ENROL_MIN_QUALITY,
        LOCKOUT_ATTEMPTS,
        LOCKOUT_WINDOW_SECS,
        LOCKOUT_SECS,
        LOCKOUT_MAX_SECS,
        SESSION_TTL_SECS,
        MAX_SESSIONS,
        MAX_SESSIONS_PER_KEY,
        SESSION_MAX_FRAMES,
        REQUIRE_SESSION,
        SESSION_PASSIVE_MIN,
        SESSION_REPLAY_WINDOW_SECS,
    ];
}

/// Default values. Enumerated settings are given as the exact strings the runtime's flags
/// accept, so the operator can write them and the runtime parses them.
pub mod defaults {
    /// TCP port of the API, health and metrics endpoints.
    pub const PORT: u16 = 8080;
    /// `--listen`.
    pub const LISTEN: &str = "0.0.0.0:8080";
    /// `--weights`: the seed's reference weights, compiled in.
    pub const WEIGHTS: &str = "reference";
    /// Authentication threshold on the fused probability when neither the configuration nor the
    /// weights file recommends one.
    pub const THRESHOLD: f64 = 0.5;
    /// `--data-dir`, relative to the working directory.
    pub const DATA_DIR: &str = "facekey-data";
    /// `--max-faces-per-subject`.
    pub const MAX_FACES_PER_SUBJECT: usize = 5;
    /// `--max-subjects`: a subject without faces holds a few hundred bytes of every replica's
    /// memory (id, name, index entry).
    pub const MAX_SUBJECTS: usize = 100_000;
    /// `--max-subjects-per-key`: a tenth of [`MAX_SUBJECTS`], so one `enrol` key (leaked, or a
    /// runaway client: empty subjects are created at about 600/s) can take at most a tenth of
    /// the store and every other key keeps the rest to enrol in. A backend enrolling more of
    /// its users with one key needs a larger share (0: no per-key limit). Admin keys are not
    /// held to it: they can delete any subject anyway.
    pub const MAX_SUBJECTS_PER_KEY: usize = 10_000;
    /// `--max-templates`: every replica holds every template in memory, about 5 KB each (dlib's
    /// 128 and faceres-deep's 1024 values as f32, plus the search matrix row), so 50 000 take
    /// about 270 MB beside the models' ~500 MB of the default 1 GiB memory limit. Raise it with
    /// the memory limit.
    pub const MAX_TEMPLATES: usize = 50_000;
    /// `--max-templates-per-key`: a tenth of [`MAX_TEMPLATES`], as [`MAX_SUBJECTS_PER_KEY`] is of
    /// the subjects: without it one `enrol` key could fill the templates of every key with
    /// faces enrolled into its own subjects (10 000 subjects of 5 faces). 0: no per-key limit;
    /// admin keys are not held to it.
    pub const MAX_TEMPLATES_PER_KEY: usize = 5_000;
    /// `--max-body-bytes`: 8 MiB.
    pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
    /// `--max-body-memory-bytes`: 128 MiB (16 bodies of the largest size, hundreds of typical
    /// uploads; the runtime's default memory limit is 1 GiB, its models take about half).
    pub const MAX_BODY_MEMORY_BYTES: usize = 128 * 1024 * 1024;
    /// `--max-body-memory-per-key-share`: a quarter, so one key (a leaked one, or a buggy
    /// client) holding its whole share with bodies it trickles in leaves three quarters to
    /// every other key; 32 MiB of the default budget is 4 bodies of the largest size or about
    /// a hundred typical uploads in flight for one key. Never below one body of the largest size.
    pub const MAX_BODY_MEMORY_PER_KEY_SHARE: f64 = 0.25;
    /// `--min-body-bytes-per-sec`: 16 KiB/s (128 kbit/s), below any mobile uplink that can send
    /// an image within the request timeout at all (a 300 KB photo at this rate takes 19 s), so
    /// only a body trickled in to hold its reservation is cut off.
    pub const MIN_BODY_BYTES_PER_SEC: u64 = 16 * 1024;
    /// `--body-rate-grace-secs`: room for the connection's slow start, a mobile radio waking up
    /// and a client waiting for `100 Continue` (curl waits 1 s) before the rate counts.
    pub const BODY_RATE_GRACE_SECS: u64 = 5;
    /// `--max-image-bytes`: 5 MiB (CompreFace and AWS Rekognition allow 5 MB).
    pub const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;
    /// `--max-image-pixels`: 16 megapixels.
    pub const MAX_IMAGE_PIXELS: u64 = 16_000_000;
    /// `--intra-threads`: one ONNX Runtime thread per session (measured fastest on 2 vCPUs).
    pub const INTRA_THREADS: usize = 1;
    /// Upper bound of the default `--sessions-per-model` (one per core).
    pub const MAX_DEFAULT_SESSIONS: usize = 8;
    /// `--min-face-size`, pixels (MTCNN's reference).
    pub const MIN_FACE_SIZE: f64 = 20.0;
    /// `--multi-face`.
    pub const MULTI_FACE: &str = "largest";
    /// `--max-faces-per-image`: `/v1/liveness` analyses at most this many faces (the most
    /// confident), so a crowd photo cannot multiply one request's model work.
    pub const MAX_FACES_PER_IMAGE: usize = 10;
    /// `--match-threshold`: minimum similarity; 0.5 is dlib's distance 0.6.
    pub const MATCH_THRESHOLD: f64 = 0.5;
    /// dlib's distance threshold, which the similarity mapping puts at similarity 0.5.
    pub const MATCH_DISTANCE: f64 = 0.6;
    /// `--liveness`: the MiniFASNet-like model (the DTN scored real photos and simulated
    /// attacks alike on the evaluation data, docs/evaluation.md).
    pub const LIVENESS: &str = "minifas";
    /// `--liveness-combine`.
    pub const LIVENESS_COMBINE: &str = "mean";
    /// `--match-models`: dlib and faceres-deep fused by z-score (docs/evaluation.md, issue 13
    /// item 7: 0 false matches of 1840 impostor pairs with identities held out, against 39
    /// for dlib alone at distance 0.6).
    pub const MATCH_MODELS: &str = "dlib+faceres";
    /// `--passive-liveness-models`: fr_liveness and human_liveness fused by z-score (a third
    /// fewer real faces rejected than either alone at a similar attack rate).
    pub const PASSIVE_LIVENESS_MODELS: &str = "fr_liveness+human_liveness";
    /// `--liveness-threshold`.
    pub const LIVENESS_THRESHOLD: f64 = 0.5;
    /// `--decision-policy`.
    pub const DECISION_POLICY: &str = "strict";
    /// `--max-batch`.
    pub const MAX_BATCH: usize = 1024;
    /// `--max-queue-wait-ms`: a login should not wait more than a second for a place; past
    /// that a fast 503 and a retry (on another replica) serve the user better.
    pub const MAX_QUEUE_WAIT_MS: u64 = 1000;
    /// `--queue-max-load`: queue while at most a fifth more arrives than the places serve;
    /// beyond that the overload is standing and a queue only adds latency. The margin keeps
    /// the random bunching of arrivals at 80 % load (the arrival-rate estimate's spread) from
    /// reading as overload.
    pub const QUEUE_MAX_LOAD: f64 = 1.2;
    /// `--max-queue` per in-flight place: long enough for the bursts of random arrivals below
    /// capacity (a queue of 2 per 2 places shed 0.33 % at 80 % load), harmless under overload,
    /// where `--queue-max-load` stops queueing.
    pub const QUEUE_PER_INFLIGHT: usize = 4;
    /// `--request-timeout-secs`.
    pub const REQUEST_TIMEOUT_SECS: u64 = 30;
    /// Longest accepted `--request-timeout-secs` (the least is 1): a request held longer holds
    /// its inference place and body memory past any client's patience.
    pub const MAX_REQUEST_TIMEOUT_SECS: u64 = 300;
    /// `--max-connections`: open connections beyond which new ones wait in the backlog.
    pub const MAX_CONNECTIONS: usize = 1024;
    /// `--header-read-timeout-secs`: a client has this long to send a request's headers, and a
    /// new connection its first byte.
    pub const HEADER_READ_TIMEOUT_SECS: u64 = 10;
    /// `--max-connection-age-secs`: behind a Service, a client's connection stays with the
    /// replica it reached (HTTP/2 carries all its requests on one), so replicas added by a
    /// scale-out get no share of it until it closes: ten minutes spreads them again soon.
    pub const MAX_CONNECTION_AGE_SECS: u64 = 600;
    /// Longest accepted `--max-connection-age-secs`: a day.
    pub const MAX_MAX_CONNECTION_AGE_SECS: u64 = 86_400;
    /// `--shutdown-timeout-secs`.
    pub const SHUTDOWN_TIMEOUT_SECS: u64 = 30;
    /// `--shutdown-delay-secs`: alone, stop accepting at once (the operator sets a delay for
    /// pods behind a Service).
    pub const SHUTDOWN_DELAY_SECS: u64 = 0;
    /// Longest accepted `--shutdown-delay-secs`.
    pub const MAX_SHUTDOWN_DELAY_SECS: u64 = 300;
    /// Share of the container's memory limit the models and the request-body budget may take:
    /// past it the runtime warns at start-up, and the operator sizes sessions (with the template
    /// index) to stay within it; the rest is for inference buffers and the process itself.
    pub const MEMORY_SHARE: f64 = 0.8;
    /// Longest time one alert email may take, connection included (not a setting).
    pub const ALERT_SEND_TIMEOUT_SECS: u64 = 30;
    /// Seconds the runtime waits at exit for queued alert emails to go out (not a setting: the
    /// operator adds it to the pods' termination grace period): an email in flight when exit
    /// begins, then the final one with what waited, each given its full send timeout.
    pub const ALERT_FLUSH_TIMEOUT_SECS: u64 = 2 * ALERT_SEND_TIMEOUT_SECS;
    /// `--smtp-tls`.
    pub const SMTP_TLS: &str = "starttls";
    /// `--alert-min-interval-secs`.
    pub const ALERT_MIN_INTERVAL_SECS: u64 = 60;
    /// Longest accepted `--alert-min-interval-secs`: one day (an alert held longer is news no
    /// more).
    pub const MAX_ALERT_MIN_INTERVAL_SECS: u64 = 86_400;
    /// `--ui-enabled`.
    pub const UI_ENABLED: bool = true;
    /// `--log-format`.
    pub const LOG_FORMAT: &str = "text";
    /// `--log`.
    pub const LOG: &str = "info";
    /// `--metrics-auth`: `/metrics` answers without a key (Prometheus scrapes it; restrict the
    /// port with a NetworkPolicy or use `key`).
    pub const METRICS_AUTH: &str = "open";
    /// `--metrics-listen-private`: the operations listener has every family, as Prometheus in
    /// the monitoring namespace needs for the score dashboards; the operator turns it off for
    /// sidecars, whose port any pod in the cluster may reach.
    pub const METRICS_LISTEN_PRIVATE: &str = "on";
    /// `--audit-log`.
    pub const AUDIT_LOG: &str = "stdout";
    /// `--enrol-liveness`: an enrolled face must be live.
    pub const ENROL_LIVENESS: &str = "on";
    /// `--enrol-min-quality`: least quality score of an enrolled face. Measured on the
    /// evaluation's real photos (`runtime/eval/results/features.csv`): the original portraits
    /// with faces of 80 px or more score 0.44–0.82 (astronaut.png 0.82) and all pass; the
    /// 28-px face of messi5.jpg (0.35) and most blurred, downscaled or rotated copies (down to
    /// 0.17; 38 of 152 real images, 21 of 131 with faces of 80 px or more) are refused, as a
    /// template every later verification compares with should be.
    pub const ENROL_MIN_QUALITY: f64 = 0.4;
    /// `--lockout-attempts`: failed verifications that lock a subject (0: lockout off).
    pub const LOCKOUT_ATTEMPTS: u32 = 5;
    /// `--lockout-window-secs`: 15 minutes.
    pub const LOCKOUT_WINDOW_SECS: u64 = 900;
    /// `--lockout-secs`: 15 minutes.
    pub const LOCKOUT_SECS: u64 = 900;
    /// `--lockout-max-secs`: a day. Locks in a row double up to it (900 s, 1800 s, … 86 400 s),
    /// so a key that keeps failing gets about a dozen guesses a day at a subject instead of 480;
    /// an administrator can lift a lock sooner (`DELETE /v1/subjects/{id}/lockout`).
    pub const LOCKOUT_MAX_SECS: u64 = 86_400;
    /// `--session-ttl-secs`: a challenge takes a person 5–15 s; one minute covers a slow
    /// camera start without leaving sessions around for replay.
    pub const SESSION_TTL_SECS: u64 = 60;
    /// `--max-sessions`: sessions open at once on one replica. A session holds at most
    /// `SESSION_MAX_FRAMES` observations of about 1.5 KB (never images), so 256 sessions cost
    /// at most about 60 MB.
    pub const MAX_SESSIONS: usize = 256;
    /// `--max-sessions-per-key`: one key cannot take the whole registry (a backend serving
    /// many users with one key needs a share large enough for its concurrent users, and
    /// `MAX_SESSIONS` twice that, since no key holds more than half of it).
    pub const MAX_SESSIONS_PER_KEY: usize = 64;
    /// `--session-max-frames`: 20 s of camera at 8 frames/s, the UI's pace. Two or three
    /// actions take a person 1–2 s each once read, but the lab's runs through the UI took 3–21 s
    /// (ui/README.md), and a budget spent before the last action fails the session as
    /// `challenge_incomplete`, a spoof event; each frame costs about one verification's
    /// inference, so the budget also bounds a session's CPU.
    pub const SESSION_MAX_FRAMES: usize = 160;
    /// `--session-replay-window-secs`: a day. A recording of a genuine session is most useful
    /// to an attacker soon after it was made; each subject keeps its latest 8 accepted
    /// sessions' frame fingerprints (at most 16 KiB each) for this long.
    pub const SESSION_REPLAY_WINDOW_SECS: u64 = 86_400;
    /// Longest accepted `--session-replay-window-secs`: 30 days.
    pub const MAX_SESSION_REPLAY_WINDOW_SECS: u64 = 2_592_000;
    /// `--require-session`: off, so verify with an image (passive liveness) keeps working.
    pub const REQUIRE_SESSION: &str = "off";
    /// `--session-passive-min`: 0, off. The passive models call a third to a half of real faces
    /// attacks at their threshold (docs/evaluation.md), so a gate on them would refuse many
    /// people who performed the challenge; deployments that want the passive models to veto a
    /// replayed or re-enacted video set it, knowing that cost.
    pub const SESSION_PASSIVE_MIN: f64 = 0.0;

    /// Default `--sessions-per-model`: one per core (at most [`MAX_DEFAULT_SESSIONS`]), so
    /// concurrent requests with one intra-op thread each use every core.
    pub fn sessions_per_model() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_DEFAULT_SESSIONS))
    }
}

/// Check that a threshold is a finite number in `[0, 1]`; the error names the setting.
pub fn validate_unit_threshold(name: &str, value: f64) -> Result<f64, String> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{name} must be a number in [0, 1], got {value}"))
    }
}

/// The values the runtime accepts: the parsers of its numeric flags, and [`values::check`] of
/// the settings the operator passes through from `spec.settings`, so the operator refuses a
/// value the runtime would refuse at start-up before any pod is rolled out with it. A test of
/// the runtime (`operator_contract.rs`) holds the two together on a battery of values.
pub mod values {
    use super::{defaults, env, validate_unit_threshold};

    /// Least and most `--min-face-size`, pixels. Below MTCNN's 12-pixel cell the detection
    /// pyramid enlarges the image (at 1 pixel, 12 times each side: a 16-megapixel photo becomes
    /// a 2.3-gigapixel first level); at 0 or below no level is searched and no face is ever
    /// found; beyond the largest image side nothing can be.
    pub const FACE_SIZE: (f64, f64) = (12.0, 4096.0);

    /// Most `--max-connections` (far beyond any pod's file descriptors; the connection
    /// semaphore cannot hold more than `usize::MAX >> 3` places).
    pub const MAX_CONNECTIONS: u64 = 1_000_000;

    /// The names an enumerated setting accepts (the runtime's flag values), `None` for
    /// another setting.
    pub fn names(env_name: &str) -> Option<&'static [&'static str]> {
        Some(match env_name {
            env::MULTI_FACE => &["largest", "reject"],
            env::LIVENESS => &["dtn", "minifas", "both", "off"],
            env::LIVENESS_COMBINE => &["mean", "min"],
            env::MATCH_MODELS => &["dlib", "dlib+faceres"],
            env::PASSIVE_LIVENESS_MODELS => &["fr_liveness", "fr_liveness+human_liveness"],
            env::ALLOW_INSECURE => &["true", "false"],
            _ => return None,
        })
    }

    /// An integer from `min` to `max`.
    pub fn integer_within(s: &str, min: u64, max: u64) -> Result<u64, String> {
        match s.parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            Ok(v) if v < min => Err(format!("must be at least {min}, got {v}")),
            Ok(v) => Err(format!("must be at most {max}, got {v}")),
            Err(e) => Err(format!("not an integer: {s:?} ({e})")),
        }
    }

    /// A count of at least 1 (a size, a limit of which 0 would refuse everything).
    pub fn positive<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
        let v = integer_within(s, 1, u64::MAX)?;
        T::try_from(v).map_err(|_| format!("too large: {v}"))
    }

    /// A finite number above 0.
    pub fn positive_number(s: &str) -> Result<f64, String> {
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
            Ok(v) => Err(format!("must be a positive number, got {v}")),
            Err(e) => Err(format!("not a number: {s:?} ({e})")),
        }
    }

    /// A number in `[0, 1]`; the error names it as `what`.
    pub fn unit(what: &str, s: &str) -> Result<f64, String> {
        let v: f64 = s
            .parse()
            .map_err(|e| format!("not a number: {s:?} ({e})"))?;
        validate_unit_threshold(what, v)
    }

    /// `value` seconds of the setting `name` when within `min..=max`; else the start-up
    /// error, naming the setting and the range.
    pub fn seconds_within(name: &str, value: u64, min: u64, max: u64) -> Result<u64, String> {
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(format!(
                "{name} must be between {min} and {max} seconds, got {value}"
            ))
        }
    }

    /// A number of seconds for `name` within `min..=max` ([`seconds_within`]).
    pub fn parse_seconds_within(name: &str, s: &str, min: u64, max: u64) -> Result<u64, String> {
        let value = s
            .trim()
            .parse::<u64>()
            .map_err(|e| format!("{name}: not a number of seconds: {s:?} ({e})"))?;
        seconds_within(name, value, min, max)
    }

    /// A `--min-face-size` within [`FACE_SIZE`].
    pub fn face_size(s: &str) -> Result<f64, String> {
        let (min, max) = FACE_SIZE;
        match s.parse::<f64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            Ok(v) => Err(format!("must be {min} to {max} pixels, got {v}")),
            Err(e) => Err(format!("not a number: {s:?} ({e})")),
        }
    }

    /// Whether the runtime's flag parser accepts `value` for `env_name`, one of the settings
    /// `spec.settings` may set (`facekey_crds::RUNTIME_SETTINGS`); the error says why not.
    /// `FACEKEY_LOG` (a `tracing` filter) and `FACEKEY_CORS_ORIGINS` (any list) are not
    /// checked here, nor any other setting; the runtime's start-up checks between settings
    /// (body memory at least the body limit, unsafe settings) are the operator's own.
    pub fn check(env_name: &str, value: &str) -> Result<(), String> {
        if let Some(names) = names(env_name) {
            return if names.contains(&value) {
                Ok(())
            } else {
                Err(format!(
                    "must be one of {}, got {value:?}",
                    names.join(", ")
                ))
            };
        }
        match env_name {
            env::MAX_BODY_BYTES
            | env::MAX_BODY_MEMORY_BYTES
            | env::MAX_IMAGE_BYTES
            | env::MAX_IMAGE_PIXELS
            | env::MAX_FACES_PER_IMAGE
            | env::MAX_BATCH
            | env::MAX_QUEUE_WAIT_MS
            | env::HEADER_READ_TIMEOUT_SECS => positive::<u64>(value).map(drop),
            env::MIN_BODY_BYTES_PER_SEC | env::BODY_RATE_GRACE_SECS | env::MAX_QUEUE => {
                integer_within(value, 0, u64::MAX).map(drop)
            }
            env::MAX_CONNECTIONS => integer_within(value, 1, MAX_CONNECTIONS).map(drop),
            env::MAX_BODY_MEMORY_PER_KEY_SHARE => unit("the share", value).map(drop),
            env::SESSION_PASSIVE_MIN => unit("threshold", value).map(drop),
            env::QUEUE_MAX_LOAD => positive_number(value).map(drop),
            env::MIN_FACE_SIZE => face_size(value).map(drop),
            env::REQUEST_TIMEOUT_SECS => {
                let max = defaults::MAX_REQUEST_TIMEOUT_SECS;
                parse_seconds_within(env_name, value, 1, max).map(drop)
            }
            env::ALERT_MIN_INTERVAL_SECS => {
                let max = defaults::MAX_ALERT_MIN_INTERVAL_SECS;
                parse_seconds_within(env_name, value, 0, max).map(drop)
            }
            env::MAX_CONNECTION_AGE_SECS => {
                let max = defaults::MAX_MAX_CONNECTION_AGE_SECS;
                parse_seconds_within(env_name, value, 0, max).map(drop)
            }
            env::SESSION_REPLAY_WINDOW_SECS => {
                let max = defaults::MAX_SESSION_REPLAY_WINDOW_SECS;
                parse_seconds_within(env_name, value, 0, max).map(drop)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prefixed() {
        let mut seen = std::collections::BTreeSet::new();
        for name in env::ALL {
            assert!(name.starts_with("FACEKEY_"), "{name}");
            assert!(seen.insert(*name), "{name} listed twice");
        }
    }

    #[test]
    fn listen_default_uses_the_port() {
        assert!(defaults::LISTEN.ends_with(&format!(":{}", defaults::PORT)));
    }

    #[test]
    fn unit_thresholds() {
        assert!(validate_unit_threshold("t", 0.0).is_ok());
        assert!(validate_unit_threshold("t", 1.0).is_ok());
        assert!(validate_unit_threshold("t", 1.01).is_err());
        assert!(validate_unit_threshold("t", f64::NAN).is_err());
        for t in [
            defaults::THRESHOLD,
            defaults::MATCH_THRESHOLD,
            defaults::LIVENESS_THRESHOLD,
        ] {
            assert!(validate_unit_threshold("t", t).is_ok());
        }
        assert!(defaults::sessions_per_model() >= 1);
    }
}
