//! Process lifecycle: bind the listener, load the engine in the background, serve until a
//! shutdown signal, then let in-flight requests finish within the grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How long exit waits for queued alert emails.
const ALERT_FLUSH_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(facekey_settings::defaults::ALERT_FLUSH_TIMEOUT_SECS);

use crate::alerts::{self, Mailer};
use crate::api;
use crate::audit::Audit;
use crate::auth::ApiKeys;
use crate::challenge::replay_file::ReplayJournal;
use crate::challenge::session::Registry;
use crate::config::Config;
use crate::early_health::EarlyHealth;
use crate::engine::{Engine, EngineError};
use crate::enrolments::Enrolments;
use crate::http_server::{self, ConnectionLimits};
use crate::lockout::{
    FallbackLedger, Ledger, Lockouts, MemoryLedger, PgLedger, Policy as LockoutPolicy,
};
use crate::lockout_file::FileLedger;
use crate::metrics::{Metrics, MetricsError};
use crate::state::{AccessControl, AppState, SharedState};
use crate::store::postgres::{self, PgStore, Transport};
use crate::store::{KeyError, RedbStore, TemplateKeys, TemplateStore};
use crate::vision::{EMBEDDING_DIM, EMBEDDING_MODEL};
use facekey_settings::env;

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The template store could not be opened or read.
    #[error("start-up failed: template store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The template keys could not be loaded.
    #[error("start-up failed: {0}")]
    Keys(#[from] KeyError),
    /// The configuration is inconsistent.
    #[error("start-up failed: {0}")]
    Config(String),
    /// Alerting is misconfigured.
    #[error("start-up failed: {0}")]
    Alerts(String),
    /// Metrics could not be set up.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The engine failed to load; the process must not keep running unready forever.
    #[error("start-up failed: {0}")]
    Engine(#[from] EngineError),
    /// The engine loader task died.
    #[error("start-up failed: model loader task: {0}")]
    Loader(String),
    /// Serving failed.
    #[error("server error: {0}")]
    Serve(#[source] std::io::Error),
}

/// A bound, not yet serving, runtime server.
pub struct Server {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: SharedState,
    alert_task: Option<alerts::AlertTask>,
    follower: Option<JoinHandle<()>>,
}

/// Where the liveness sessions and their replay record live, beside the templates.
enum SessionHome {
    /// In the shared database, sealed with the template keys: any replica serves any session.
    Shared(sqlx::PgPool, TemplateKeys),
    /// In this replica's memory, the replay record journaled in the data directory and sealed
    /// with the template keys.
    Embedded(TemplateKeys),
}

/// Open the template store the configuration names and load this replica's index; with
/// PostgreSQL also start following other replicas' writes. The lockout ledger lives beside the
/// templates: in the shared database, or in this replica's memory. With PostgreSQL the pool and
/// the template keys are also returned for the shared liveness sessions.
async fn open_enrolments(
    config: &Config,
    metrics: &Metrics,
) -> Result<
    (
        Arc<Enrolments>,
        Option<JoinHandle<()>>,
        Arc<dyn Ledger>,
        SessionHome,
    ),
    ServerError,
> {
    let max = config.max_faces_per_subject;
    match config.database_url().map_err(ServerError::Config)? {
        Some(url) => {
            match postgres::transport(&url, config.database_ca_file.as_deref()) {
                Transport::Protected => {}
                Transport::Stated(mode) => tracing::warn!(
                    target: "facekey::security",
                    "the template database connection is sslmode={mode}, as its URL states"
                ),
                // An inline URL is one of Config::check's unsafe settings (refused, or warned
                // about with the others); a URL in a file is judged here, once it is read.
                Transport::Unstated if config.database_url_file.is_some() => {
                    let problem = postgres::unstated_transport(env::DATABASE_URL_FILE, &url);
                    if !config.allow_insecure {
                        return Err(ServerError::Config(crate::config::unsafe_settings(&[
                            problem,
                        ])));
                    }
                    tracing::warn!(target: "facekey::security", "INSECURE (allowed by --allow-insecure): {problem}");
                }
                Transport::Unstated => {}
            }
            // Config::check refused this already; kept for callers that skip it.
            let key_file = config.template_key_file.as_ref().ok_or_else(|| {
                ServerError::Config(crate::config::shared_store_needs(
                    env::TEMPLATE_KEY_FILE,
                    "the template key",
                ))
            })?;
            let keys = TemplateKeys::from_file(key_file)?;
            let store = PgStore::connect(
                &url,
                config.database_ca_file.as_deref(),
                keys.clone(),
                max,
                env::DATABASE_URL,
            )
            .await?;
            let enrolments = Arc::new(
                Enrolments::open(Arc::new(store.clone()), EMBEDDING_MODEL, EMBEDDING_DIM).await?,
            );
            let fallback = Arc::new(FallbackLedger::new(
                Arc::new(
                    PgLedger::new(store.ledger_pool().clone())
                        .remembering(std::time::Duration::from_secs(config.lockout_max_secs)),
                ),
                metrics.clone(),
            ));
            // Ends when the ledger goes (with the server).
            drop(fallback.watch(crate::lockout::RECHECK_EVERY));
            let ledger: Arc<dyn Ledger> = fallback;
            let shared = SessionHome::Shared(store.pool().clone(), keys);
            let follower = tokio::spawn(enrolments.clone().follow(store));
            Ok((enrolments, Some(follower), ledger, shared))
        }
        None => {
            let keys = match &config.template_key_file {
                Some(path) => TemplateKeys::from_file(path)?,
                None => TemplateKeys::load_or_create_local(&config.data_dir)?,
            };
            let store: Arc<dyn TemplateStore> =
                Arc::new(RedbStore::open(&config.data_dir, max, keys.clone())?);
            let enrolments =
                Arc::new(Enrolments::open(store, EMBEDDING_MODEL, EMBEDDING_DIM).await?);
            let ledger = FileLedger::open(
                &config.data_dir,
                MemoryLedger::new(),
                &LockoutPolicy::from_config(config).map_err(ServerError::Config)?,
                metrics.lockout_saves_failed.clone(),
            )
            .await
            .map_err(|e| ServerError::Config(e.to_string()))?;
            Ok((
                enrolments,
                None,
                Arc::new(ledger),
                SessionHome::Embedded(keys),
            ))
        }
    }
}

/// Load the API keys (creating the local admin key on first start and printing its login URL)
/// and open the audit sink.
fn open_access_control(
    config: &Config,
    listener: &TcpListener,
    metrics: &Metrics,
) -> Result<AccessControl, ServerError> {
    let (api_keys, bootstrap) = ApiKeys::open(config.api_keys_file.as_deref(), &config.data_dir)
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let ring = api_keys.ring();
    metrics.api_keys.set(ring.entries().len() as i64);
    tracing::info!(
        file = %api_keys.source().path().display(),
        keys = ring.entries().len(),
        "API keys loaded"
    );
    if let Some(boot) = bootstrap {
        let addr = listener.local_addr().map_err(ServerError::Serve)?;
        let host = if addr.ip().is_unspecified() {
            format!("localhost:{}", addr.port())
        } else {
            addr.to_string()
        };
        // Shown once, on the terminal of whoever started the runtime; only its hash is stored.
        eprintln!(
            "\n  FaceKey created an admin API key (stored as a hash in {}).\n               It is shown this once; open the UI with it:\n\n    http://{host}/#key={}\n\n               API clients send `Authorization: Bearer {}`.\n",
            api_keys.source().path().display(),
            boot.key,
            boot.key
        );
    }
    let audit = Audit::open(&config.audit_log, &config.instance_name())
        .map_err(|e| ServerError::Config(e.to_string()))?
        .count_failures_in(metrics.audit_write_failures.clone());
    tracing::info!(sink = %audit.describe(), "audit trail");
    Ok(AccessControl {
        api_keys: Arc::new(api_keys),
        audit,
    })
}

impl Server {
    /// Bind the configured address and create the shared state (engine not loaded yet).
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        for problem in config.check().map_err(ServerError::Config)? {
            tracing::warn!(target: "facekey::security", "INSECURE (allowed by --allow-insecure): {problem}");
        }
        let addr = config.listen;
        let listener =
            facekey_net::listen_tokio(addr).map_err(|source| ServerError::Bind { addr, source })?;
        // The kubelet probes the operations listener: it answers them while the store opens.
        let early_health = match config.metrics_listen {
            Some(addr) => Some(EarlyHealth::start(
                facekey_net::listen_tokio(addr)
                    .map_err(|source| ServerError::Bind { addr, source })?,
            )),
            None => None,
        };
        let metrics = Metrics::new()?;
        let (alerts, alert_task) = match config.email_settings().map_err(ServerError::Alerts)? {
            Some(settings) => {
                let mailer =
                    Mailer::new(&settings).map_err(|e| ServerError::Alerts(e.to_string()))?;
                tracing::info!(smarthost = %settings.smarthost, to = ?settings.to, "spoof alert emails on");
                let (sender, task) = alerts::spawn(mailer, settings.min_interval, metrics.clone());
                (Some(sender), Some(task))
            }
            None => (None, None),
        };
        let lockout_policy = LockoutPolicy::from_config(&config).map_err(ServerError::Config)?;
        let (enrolments, follower, ledger, shared) = open_enrolments(&config, &metrics).await?;
        let stats = enrolments.index().stats();
        tracing::info!(
            store = %enrolments.describe(),
            subjects = stats.subjects,
            templates = stats.templates,
            outdated_subjects = stats.outdated_subjects,
            "template store open"
        );
        if stats.outdated_subjects > 0 {
            tracing::warn!(
                subjects = stats.outdated_subjects,
                model = EMBEDDING_MODEL,
                "subjects hold templates of another embedding model; they are not matched until re-enrolled"
            );
        }
        let access = open_access_control(&config, &listener, &metrics)?;
        let lockouts = Lockouts::new(lockout_policy, ledger, metrics.clone(), alerts.clone());
        if lockout_policy.is_enabled() {
            tracing::info!(lockout = %lockouts.describe(), "per-subject lockout on");
        } else {
            tracing::warn!(
                "per-subject lockout is off ({}=0): failed verifications of a subject are not limited",
                env::LOCKOUT_ATTEMPTS
            );
        }
        let data_dir = config.data_dir.clone();
        let mut app = AppState::new(config, metrics, enrolments, alerts, access, lockouts);
        let limits = app.sessions.limits();
        let policy = app.sessions.policy();
        match shared {
            // Liveness sessions live beside the templates, so any replica serves any session.
            SessionHome::Shared(pool, keys) => {
                app.sessions
                    .use_store(Arc::new(crate::challenge::pg::PgSessions::new(
                        pool, keys, limits, policy,
                    )));
            }
            // The sessions in memory; their replay record kept across restarts.
            SessionHome::Embedded(keys) => {
                let (journal, record) = ReplayJournal::open(
                    &data_dir,
                    keys,
                    limits.replay_window,
                    app.metrics.replay_record_writes_failed.clone(),
                )
                .map_err(|e| ServerError::Config(e.to_string()))?;
                app.sessions.use_store(Arc::new(Registry::with_journal(
                    limits, policy, journal, record,
                )));
            }
        }
        let state = Arc::new(app);
        let metrics_listener = match early_health {
            Some(early) => Some(early.finish().await.ok_or_else(|| {
                ServerError::Loader("the start-up probe answerer failed".to_owned())
            })?),
            None => None,
        };
        Ok(Self {
            listener,
            metrics_listener,
            state,
            alert_task,
            follower,
        })
    }

    /// The address of the health-and-metrics listener, when one is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener.local_addr().map_err(ServerError::Serve)
    }

    /// The shared state, e.g. for tests that inspect metrics.
    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    /// Load the engine in the background and serve until `shutdown` resolves; then drain
    /// in-flight requests for at most the configured grace period. A failed engine load stops
    /// the server with that error.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Self {
            listener,
            metrics_listener,
            state,
            alert_task,
            follower,
        } = self;
        let loader_state = state.clone();
        let mut loader = tokio::task::spawn_blocking(move || {
            let engine = Engine::load(&loader_state.config)?;
            tracing::info!(
                weights = engine.verifier.fusion().name(),
                threshold = engine.verifier.threshold(),
                "models loaded; ready"
            );
            loader_state.set_engine(engine);
            let config = &loader_state.config;
            if let (Some(resident), Some(limit)) = (
                crate::memory_check::resident_bytes(),
                crate::memory_check::cgroup_limit_bytes(),
            ) && let Some(warning) = crate::memory_check::warning(
                resident,
                config.max_body_memory_bytes as u64,
                limit,
                config.sessions_per_model,
            ) {
                tracing::warn!("{warning}");
            }
            Ok::<(), EngineError>(())
        });

        let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
        let drain_state = state.clone();
        let delay = state.config.shutdown_delay();
        let graceful = async move {
            shutdown.await;
            drain_state.begin_shutdown();
            if !delay.is_zero() {
                // Readiness fails from now; keep serving while load balancers stop sending.
                tracing::info!(
                    delay_secs = delay.as_secs(),
                    "shutdown requested; not ready, still serving until the delay is over"
                );
                tokio::time::sleep(delay).await;
            }
            tracing::info!("shutdown: refusing new connections, finishing in-flight requests");
            let _ = drain_tx.send(true);
        };
        let grace = state.config.shutdown_timeout();
        let limits = ConnectionLimits {
            max_connections: state.config.max_connections,
            header_read_timeout: state.config.header_read_timeout(),
            // Longer than any request may take, so only connections without traffic close.
            idle_timeout: state.config.request_timeout().saturating_mul(2),
            max_age: state.config.max_connection_age(),
        };
        let key_watcher = tokio::spawn(state.api_keys.clone().watch(state.metrics.clone()));
        // Expired lockout entries purged, and a failed write of the lock file tried again,
        // every minute whatever the traffic.
        let lockout_purge = state.lockouts.purge_every(crate::lockout::PURGE_INTERVAL);
        let metrics_server = metrics_listener.map(|l| {
            let mut drain = drain_rx.clone();
            let app = api::operations_router(state.clone());
            let metrics = state.metrics.clone();
            tokio::spawn(async move {
                let stop = async move {
                    let _ = drain.wait_for(|draining| *draining).await;
                };
                http_server::serve(l, app, limits, metrics, stop).await;
            })
        });
        let metrics = state.metrics.clone();
        let app = api::app(state).map_err(|e| ServerError::Config(e.to_string()))?;
        let serve = http_server::serve(listener, app, limits, metrics, graceful);
        let serve = async move {
            let mut drain_rx = drain_rx;
            let deadline = async move {
                let _ = drain_rx.wait_for(|draining| *draining).await;
                tokio::time::sleep(grace).await;
            };
            tokio::select! {
                () = serve => Ok(()),
                () = deadline => {
                    tracing::warn!(grace_secs = grace.as_secs(), "grace period over; exiting with requests in flight");
                    Ok(())
                }
            }
        };
        let mut serve = Box::pin(serve);

        let result = tokio::select! {
            loaded = &mut loader => {
                match loaded {
                    Ok(Ok(())) => (&mut serve).await,
                    Ok(Err(e)) => Err(e.into()),
                    Err(e) => Err(ServerError::Loader(e.to_string())),
                }
            }
            r = &mut serve => r,
        };
        // Stop serving, then send the alerts still waiting out the interval. Requests that
        // outlived the grace period may still hold a sender: the flush does not wait for them.
        drop(serve);
        key_watcher.abort();
        lockout_purge.abort();
        if let Some(m) = metrics_server {
            m.abort();
        }
        if let Some(f) = follower {
            f.abort();
        }
        if let Some(task) = alert_task
            && let Err(unmailed) = task.flush(ALERT_FLUSH_TIMEOUT).await
        {
            tracing::warn!(
                target: "facekey::security",
                spoofs = unmailed.spoofs,
                lockouts = unmailed.lockouts,
                budget_secs = ALERT_FLUSH_TIMEOUT.as_secs(),
                "alert events held at exit were not mailed (they are in the log and the counters)"
            );
        }
        result
    }
}

/// `GET /healthz` on the server listening at `addr` (a wildcard address means loopback);
/// `Ok(())` when it answers 200 within five seconds.
pub async fn check_health(addr: SocketAddr) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| format!("cannot connect to {target}: {e}"))?;
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut head = [0u8; 12];
        stream
            .read_exact(&mut head)
            .await
            .map_err(|e| format!("no answer from {target}: {e}"))?;
        match &head[9..12] {
            b"200" => Ok(()),
            other => Err(format!(
                "{target} answered {}",
                String::from_utf8_lossy(other)
            )),
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), probe)
        .await
        .map_err(|_| format!("{target} did not answer within 5 s"))?
}

/// Resolve on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = term => tracing::info!("received SIGTERM"),
    }
}
