//! The shared template store: PostgreSQL, for several replicas behind one Service. Templates are
//! sealed before they leave the process ([`super::cipher`]); every write commits its change and
//! a `NOTIFY facekey_changes, '<subject id>'` in one transaction, so other replicas hear of it
//! exactly when it is durable and reload that subject into their index. Migrations in
//! `runtime/migrations/` are applied at start-up under an advisory lock (sqlx's migrator), so
//! replicas starting together apply each one exactly once.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::{Connection, Postgres, Row, Transaction};

use super::cipher::{Binding, NONCE_LEN, Sealed, TemplateKeys};
use super::{
    NewTemplate, QuotaOf, StoreError, SubjectRecord, Template, TemplateStore, UnreadableTemplate,
    validate_name, validate_template,
};

/// The channel every write notifies, with the changed subject's id as payload.
pub const CHANNEL: &str = "facekey_changes";

/// How long a request waits for a database connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Connections of the store's pool (writes, listings, liveness sessions).
const STORE_CONNECTIONS: u32 = 6;

/// Connections of the change listener's reloads and probes, apart from the store's pool, so a
/// burst of writes (a key creating subjects as fast as it can, each waiting on its quota lock
/// with a connection held) cannot starve them, which would drop the listener and stop other
/// replicas' changes, deletions included, from reaching this one. The `LISTEN` connection itself
/// has a pool of its own per listener ([`PgStore::listener`]).
const SYNC_CONNECTIONS: u32 = 1;

/// The `application_name` of the change listener's connection (the others are
/// `facekey-runtime`), so that it can be told apart in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "facekey-runtime-listener";

/// The `application_name` of the connections of the change listener's reloads and probes
/// ([`SYNC_CONNECTIONS`]), told apart in `pg_stat_activity` as well.
pub const SYNC_APPLICATION_NAME: &str = "facekey-runtime-sync";

/// Payload prefix of the listener's own round-trip probes on [`CHANNEL`] (never a subject id:
/// ids are UUIDs). Every replica receives them; [`is_probe`] tells them apart.
const PROBE_PREFIX: &str = "probe:";

/// Whether a notification on [`CHANNEL`] is a listener's probe rather than a changed subject.
pub fn is_probe(payload: &str) -> bool {
    payload.starts_with(PROBE_PREFIX)
}

/// Connections of the lockout ledger's own pool. Its queries are short and come from
/// verifications, which admission control bounds; a pool of its own means no burst of writes
/// (a key creating subjects as fast as it can, each waiting on its quota lock with a connection
/// held) can starve it, which would send the ledger to its per-replica fallback.
const LEDGER_CONNECTIONS: u32 = 4;

/// Server-side bounds set on every pooled connection (by `SET` after connecting, which a
/// session-mode PgBouncer passes on, unlike start-up options). Without them one stuck lock takes
/// a replica down: a peer that died inside a transaction (its node lost) keeps its row locks
/// until PostgreSQL's TCP keepalive notices (about 2 hours), every request waiting on that row
/// holds a pooled connection past its own timeout, and the pools run dry.
/// - `lock_timeout`: a wait for a row or advisory lock gives up (55P03: 503 `store_unavailable`,
///   the lockout counts in memory meanwhile);
/// - `idle_in_transaction_session_timeout`: the server ends a session that sits in an open
///   transaction, so a dead client's locks go (no transaction here waits on anything but the
///   database);
/// - `statement_timeout`: no statement runs unbounded (a full reload of a large store included);
/// - `default_transaction_isolation`: READ COMMITTED, whatever the database's or role's default.
///   The writes lock a row or a key and then read what it guards; under a REPEATABLE READ or
///   SERIALIZABLE default, two failures of one subject counted at once would end in 40001 and be
///   taken for an unreachable ledger (counted per replica), and sessions contended for would
///   answer 503. The lock-then-read transactions also begin at READ COMMITTED explicitly
///   ([`begin_read_committed`]), which holds behind a transaction-mode pooler too;
/// - `synchronous_commit`: `on` when the database's or role's default is `off`, under which a
///   commit is answered before its WAL is flushed and a crash of the server loses enrolments
///   and deletions already answered 201/204. Any other setting is kept: each flushes the WAL
///   locally (`remote_apply` and `remote_write` also wait for synchronous standbys, `local`
///   does not).
const SESSION_BOUNDS: &str = "SET lock_timeout = '5s'; \
    SET idle_in_transaction_session_timeout = '15s'; \
    SET statement_timeout = '60s'; \
    SET default_transaction_isolation = 'read committed'; \
    DO $$ BEGIN \
      IF current_setting('synchronous_commit') = 'off' THEN \
        PERFORM set_config('synchronous_commit', 'on', false); \
      END IF; \
    END $$";

/// Templates read and sealed again per query by [`PgStore::reseal`].
const RESEAL_BATCH: i64 = 500;

/// How long a replica waits for the migrations of another (which hold [`MIGRATION_LOCK`])
/// before start-up fails with the error (a restart retries).
const MIGRATION_WAIT: &str = "SET lock_timeout = '60s'";

/// The lock a replica holds while it migrates, so replicas starting at once migrate one at a
/// time (taken here rather than by sqlx, so its wait and the migrations' own are apart).
const MIGRATION_LOCK: &str = "SELECT pg_advisory_lock(hashtextextended('facekey.migrations', 0))";

/// How long a migration's statement waits for a table lock before it gives up and is tried
/// again: an `ALTER TABLE` or `CREATE INDEX` waiting for a lock (a backup, a long read) makes
/// every later query on that table wait behind it, so every replica's requests would stall for
/// as long as it waits.
const MIGRATION_TABLE_WAIT: &str = "SET lock_timeout = '2s'";

/// Tries of the migrations whose table lock wait gave up, [`MIGRATION_RETRY`] apart (about a
/// minute in all) before start-up fails.
const MIGRATION_TRIES: u32 = 20;

/// The pause between two tries of the migrations, in which the table's queries go on.
const MIGRATION_RETRY: Duration = Duration::from_secs(1);

/// `created_at` as the API shows it: RFC 3339 UTC with seconds (a macro, so queries stay
/// literal strings).
macro_rules! created_at {
    () => {
        r#"to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS created_at"#
    };
}

/// The columns a template row is read with.
macro_rules! template_columns {
    () => {
        concat!(
            "SELECT id::text AS id, subject_id::text AS subject_id, model, key_id, nonce, ",
            "ciphertext, quality, enrolled_by, ",
            created_at!(),
            " FROM facekey_templates"
        )
    };
}

/// A [`TemplateStore`] in PostgreSQL.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    ledger_pool: PgPool,
    /// How to connect (each listener opens its own connection).
    options: PgConnectOptions,
    /// The channel the listener listens on: [`CHANNEL`], but in tests of a deaf listener.
    listen_channel: &'static str,
    keys: TemplateKeys,
    max_faces: usize,
    described: String,
    /// Templates the last loads left out because they do not open here, by subject
    /// ([`TemplateStore::unreadable`]).
    /// Shared by clones (the change listener's).
    unreadable: std::sync::Arc<std::sync::Mutex<BTreeMap<String, Vec<UnreadableTemplate>>>>,
}

/// The URL with its password (and any query parameters) removed, for logs and errors.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

/// How a connection to the database is protected in transit, as start-up judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// TLS with the server's certificate verified (`sslmode=verify-full`/`verify-ca`, or a CA
    /// file given), or a loopback address or Unix socket that never leaves the host.
    Protected,
    /// The URL states a weaker mode on purpose (`sslmode=require`: encrypted, server not
    /// verified; `disable`: clear text): accepted, with a warning at start-up.
    Stated(&'static str),
    /// The URL states no mode, or `prefer`/`allow` (libpq's and sqlx's default is `prefer`):
    /// plain text whenever the server offers no TLS, and never verified, so anyone on the path
    /// can read and alter what crosses it. An unsafe setting.
    Unstated,
}

/// The [`Transport`] of `url` (with `ca_file`, TLS is verified whatever the URL says).
pub fn transport(url: &str, ca_file: Option<&Path>) -> Transport {
    if ca_file.is_some() {
        return Transport::Protected;
    }
    let Ok(options) = PgConnectOptions::from_str(url) else {
        // Not a URL sqlx takes: connecting reports it, naming the setting.
        return Transport::Protected;
    };
    let host = options
        .get_host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let local = options.get_socket().is_some()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match options.get_ssl_mode() {
        _ if local => Transport::Protected,
        PgSslMode::VerifyFull | PgSslMode::VerifyCa => Transport::Protected,
        PgSslMode::Require => {
            Transport::Stated("require: encrypted, but the server is not verified")
        }
        PgSslMode::Disable => Transport::Stated("disable: clear text"),
        PgSslMode::Prefer | PgSslMode::Allow => Transport::Unstated,
    }
}

/// The unsafe-setting sentence for an [`Transport::Unstated`] URL named by `setting`.
pub fn unstated_transport(setting: &str, url: &str) -> String {
    format!(
        "{setting} ({}) states no sslmode (or prefer/allow): the connection falls back to clear \
         text when the server offers no TLS and never verifies the server, so subject names, \
         lockouts, sessions and sealed templates can be read and altered on the way; set \
         sslmode=verify-full with {} (or sslrootcert), or state sslmode=require or \
         sslmode=disable in the URL to accept that on a network you trust",
        redact(url),
        facekey_settings::env::DATABASE_CA_FILE
    )
}

/// A pool of `connections` whose connections carry [`SESSION_BOUNDS`] and are never to a
/// standby: a connection that lands on a read-only server (a demoted primary during failover,
/// a DNS name still pointing at it) is refused at once instead of failing every write it serves
/// for the rest of its life. A connection given back must answer within [`RELEASE_CHECK`] or is
/// dropped ([`answers_in_time`]).
fn bounded_pool(connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_release(|conn, _| Box::pin(answers_in_time(conn)))
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::raw_sql(SESSION_BOUNDS).execute(&mut *conn).await?;
                let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                    .fetch_one(&mut *conn)
                    .await?;
                if standby {
                    return Err(sqlx::Error::Protocol(
                        "connected to a read-only standby (pg_is_in_recovery); \
                         the URL must name the primary"
                            .into(),
                    ));
                }
                Ok(())
            })
        })
}

/// How long a connection given back to its pool has to answer a ping.
const RELEASE_CHECK: Duration = Duration::from_secs(5);

/// Whether a connection given back to its pool answers a ping within [`RELEASE_CHECK`]
/// (flushing what a dropped query left, such as a transaction's rollback); an error drops it
/// unclosed. sqlx pings it again, unbounded: a connection whose query was abandoned (a request
/// timeout) on a network that drops everything without a reset (a database node lost) would
/// otherwise hold its pool place until TCP gives up, some 15 minutes, and a few such
/// connections take the whole pool past the failover.
async fn answers_in_time(conn: &mut sqlx::PgConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    match tokio::time::timeout(RELEASE_CHECK, conn.ping()).await {
        Ok(answered) => answered.map(|()| true),
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer to a ping on release",
        ))),
    }
}

/// Whether a database error means "the database is not there for writes" (as opposed to a
/// query or data problem): unreachable, shutting down, read-only, out of connections or
/// resources. Each answers 503 `store_unavailable`, marks the store down (`facekey_store_up 0`)
/// and lets the lockout count in memory meanwhile.
fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)
    ) || sqlstate(e).is_some_and(|c| {
        // 57P01..03: admin shutdown, crash shutdown, cannot connect now; 08xxx: connection;
        // 53xxx: insufficient resources (53300 too many connections); 25006: read-only
        // transaction (a standby, a database set read-only during failover).
        c.starts_with("57P") || c.starts_with("08") || c.starts_with("53") || c == "25006"
    })
}

/// Whether a database error is about this statement only: a lock or statement timeout (55P03,
/// 57014), the server ending a transaction left idle (25P03), a serialization failure or
/// deadlock (40xxx). Answered 503 too, without marking the store down: the next statement may
/// well succeed, and one stuck row must not read as a database outage.
fn is_busy(e: &sqlx::Error) -> bool {
    sqlstate(e).is_some_and(|c| c == "55P03" || c == "57014" || c == "25P03" || c.starts_with("40"))
}

/// What a failed migration run says: with a hint when the error is one a pooler in transaction
/// (or statement) mode causes, a prepared statement that already exists (42P05) or does not
/// (26000) on the connection: each statement may land on another server session, so
/// session-level state (prepared statements, `SET`, the advisory lock, `LISTEN`) does not hold.
fn migrations_failed(e: &sqlx::migrate::MigrateError) -> &'static str {
    match migration_sqlstate(e).as_deref() {
        Some("55P03") => {
            "migrations failed: a table stayed locked by another session (a backup, a long \
             transaction) for about a minute of tries"
        }
        code => session_state_lost(code).unwrap_or("migrations failed"),
    }
}

/// The SQLSTATE of a failed migration's database error.
fn migration_sqlstate(e: &sqlx::migrate::MigrateError) -> Option<String> {
    match e {
        sqlx::migrate::MigrateError::Execute(e)
        | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => sqlstate(e),
        _ => None,
    }
}

/// The start-up error for SQLSTATE `code` when it says a connection lost its session state
/// (a prepared statement gone, or there already), as behind a pooler in transaction mode.
fn session_state_lost(code: Option<&str>) -> Option<&'static str> {
    matches!(code, Some("42P05" | "26000")).then_some(
        "migrations failed: a connection lost its session state between statements, as \
         behind a pooler in transaction mode (PgBouncer pool_mode = transaction); the \
         runtime needs session pooling or a direct connection",
    )
}

/// The SQLSTATE of a database error.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Begin a transaction at READ COMMITTED whatever the database's or role's default. The writes
/// that take a transaction lock and then read what the lock guards (a key's quota, the session
/// bounds, a subject's replay record) need each statement to see what was committed before it:
/// under a REPEATABLE READ default the snapshot would be taken before the lock wait, and two
/// writers would both miss what the other wrote.
pub(crate) async fn begin_read_committed(
    pool: &PgPool,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
        .await
}

/// Map a database error: unreachable becomes [`StoreError::Unavailable`], the rest
/// [`StoreError::Backend`] naming `operation`. Shared with the lockout ledger in the same database.
pub(crate) fn db_err(operation: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| {
        if is_unavailable(&e) {
            StoreError::Unavailable(format!("{operation}: {e}"))
        } else if is_busy(&e) {
            // A deadlock is the code's to fix (locks taken in two orders): said loudly.
            if sqlstate(&e).is_some_and(|c| c == "40P01") {
                tracing::error!(operation, error = %e, "deadlock in the template database");
            }
            StoreError::Busy(format!("{operation}: {e}"))
        } else {
            StoreError::Backend {
                operation,
                source: Box::new(e),
            }
        }
    }
}

/// A subject or template id the database can hold: a UUID in the canonical form the stores
/// hand out (lower-case, hyphenated). Other spellings of the same UUID (upper case, braces, no
/// hyphens) name nothing, as in the embedded store, which compares ids byte for byte: one id has
/// one spelling, so a write can never commit under a spelling that the index then cannot find.
fn parse_id(id: &str) -> Option<String> {
    uuid::Uuid::try_parse(id)
        .ok()
        .map(|u| u.hyphenated().to_string())
        .filter(|canonical| canonical == id)
}

impl PgStore {
    /// Connect to `url` (any libpq-style URL; `sslmode`, `sslrootcert` and friends select TLS;
    /// with `ca_file`, TLS is required and the server's certificate and host name verified
    /// against that CA, whatever the URL says), apply pending migrations under the advisory lock
    /// and return the store. Errors name the setting and the redacted URL.
    pub async fn connect(
        url: &str,
        ca_file: Option<&Path>,
        keys: TemplateKeys,
        max_faces: usize,
        setting: &str,
    ) -> Result<Self, StoreError> {
        let described = format!("PostgreSQL {}", redact(url));
        let open_err = |what: &str, e: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: format!("{setting}={} ({what})", redact(url)),
            source: e,
        };
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| open_err("not a valid PostgreSQL URL", Box::new(e)))?
            .application_name("facekey-runtime");
        if let Some(ca) = ca_file {
            options = options.ssl_mode(PgSslMode::VerifyFull).ssl_root_cert(ca);
        }
        let ledger_pool = bounded_pool(LEDGER_CONNECTIONS).connect_lazy_with(options.clone());
        let pool = bounded_pool(STORE_CONNECTIONS)
            .min_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(|e| {
                let what = match ca_file {
                    Some(ca) => format!(
                        "cannot connect; TLS verified against {}={}",
                        facekey_settings::env::DATABASE_CA_FILE,
                        ca.display()
                    ),
                    None => "cannot connect".to_owned(),
                };
                open_err(&what, Box::new(e))
            })?;
        // The migrations compiled into the binary. A database migrated further by a newer
        // release is accepted (migrations only add), so an older replica restarting mid-rollout,
        // or a rollback, still starts instead of failing on a version it does not know.
        // They run on a connection of their own, whose lock waits are longer than a request's.
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.set_ignore_missing(true);
        let conn = sqlx::PgConnection::connect_with(&options)
            .await
            .map_err(|e| open_err("cannot connect", Box::new(e)))?;
        Self::migrate(conn, &mut migrator)
            .await
            .map_err(|(what, e)| open_err(what, e))?;
        let store = Self {
            pool,
            ledger_pool,
            options: options.clone(),
            listen_channel: CHANNEL,
            keys,
            max_faces,
            described,
            unreadable: std::sync::Arc::default(),
        };
        // In the background: a large store takes a while, and start-up (the index load, the
        // listener) need not wait for it; the old key opens what is not sealed again yet.
        let resealing = store.clone();
        tokio::spawn(async move {
            if let Err(e) = resealing.reseal().await {
                tracing::warn!(error = %e, "sealing templates again with the current key failed; the next start tries again");
            }
        });
        Ok(store)
    }

    /// Seal again with the current key every template sealed with another one (a rotation's
    /// second rollout, once every replica can read the new key), in batches of [`RESEAL_BATCH`],
    /// one pass in primary-key order (run in the background at start-up); so a retired key can
    /// leave the key file once every replica has started with the new key first and no
    /// template names it any more. A row changed meanwhile (deleted, or sealed again by a replica
    /// starting beside this one) is left as it is. The embeddings do not change, so the other
    /// replicas' indexes need no notification. Returns the templates sealed again.
    async fn reseal(&self) -> Result<usize, StoreError> {
        let current = self.keys.current_id();
        let mut after = uuid::Uuid::nil().to_string();
        let mut count = 0;
        let mut retired = std::collections::BTreeSet::new();
        loop {
            let rows = sqlx::query(concat!(
                template_columns!(),
                " WHERE key_id <> $1 AND id > $2::uuid ORDER BY id LIMIT $3"
            ))
            .bind(current)
            .bind(&after)
            .bind(RESEAL_BATCH)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("seal templates again"))?;
            let Some(last) = rows.last() else {
                break;
            };
            after = last.try_get("id").map_err(db_err("seal templates again"))?;
            let (mut ids, mut olds, mut nonces, mut ciphertexts) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for row in &rows {
                let old: String = row
                    .try_get("key_id")
                    .map_err(db_err("seal templates again"))?;
                let template = self.template_of(row)?;
                let sealed = self.keys.seal(
                    Binding {
                        template_id: &template.id,
                        subject_id: &template.subject_id,
                        model: &template.model,
                    },
                    &template.embedding,
                )?;
                retired.insert(old.clone());
                ids.push(template.id);
                olds.push(old);
                nonces.push(sealed.nonce.to_vec());
                ciphertexts.push(sealed.ciphertext);
            }
            // One statement per batch; a row whose key changed meanwhile is not matched.
            let updated = sqlx::query(
                "UPDATE facekey_templates AS t SET key_id = $1, nonce = u.nonce, \
                   ciphertext = u.ciphertext \
                 FROM unnest($2::text[], $3::text[], $4::bytea[], $5::bytea[]) \
                   AS u(id, old, nonce, ciphertext) \
                 WHERE t.id = u.id::uuid AND t.key_id = u.old",
            )
            .bind(current)
            .bind(&ids)
            .bind(&olds)
            .bind(&nonces)
            .bind(&ciphertexts)
            .execute(&self.pool)
            .await
            .map_err(db_err("seal templates again"))?;
            count += usize::try_from(updated.rows_affected()).unwrap_or(usize::MAX);
        }
        if count > 0 {
            tracing::info!(
                templates = count,
                key = current,
                retired_keys = ?retired,
                "sealed templates again with the current key; the older keys can leave the key \
                 file once every replica runs with this one first"
            );
        }
        Ok(count)
    }

    /// Run `migrator` on `conn` under [`MIGRATION_LOCK`] (waiting [`MIGRATION_WAIT`] for
    /// another replica's), each statement waiting at most [`MIGRATION_TABLE_WAIT`] for a table
    /// lock and tried again [`MIGRATION_RETRY`] later, [`MIGRATION_TRIES`] times. The error:
    /// what failed, and why.
    async fn migrate(
        mut conn: sqlx::PgConnection,
        migrator: &mut sqlx::migrate::Migrator,
    ) -> Result<(), (&'static str, Box<dyn std::error::Error + Send + Sync>)> {
        let failed = |e: sqlx::Error| {
            let code = sqlstate(&e);
            let what = if code.as_deref() == Some("55P03") {
                "migrations failed: another replica has been migrating the database for over 60 s"
            } else {
                session_state_lost(code.as_deref()).unwrap_or("migrations failed")
            };
            (
                what,
                Box::new(e) as Box<dyn std::error::Error + Send + Sync>,
            )
        };
        sqlx::raw_sql(MIGRATION_WAIT)
            .execute(&mut conn)
            .await
            .map_err(failed)?;
        sqlx::query(MIGRATION_LOCK)
            .execute(&mut conn)
            .await
            .map_err(failed)?;
        sqlx::raw_sql(MIGRATION_TABLE_WAIT)
            .execute(&mut conn)
            .await
            .map_err(failed)?;
        migrator.set_locking(false);
        let mut tries = 1;
        loop {
            let Err(e) = migrator.run(&mut conn).await else {
                break;
            };
            let lock_wait = migration_sqlstate(&e).is_some_and(|code| code == "55P03");
            if !lock_wait || tries >= MIGRATION_TRIES {
                return Err((migrations_failed(&e), Box::new(e)));
            }
            tries += 1;
            tracing::warn!(error = %e, try_in_secs = MIGRATION_RETRY.as_secs(), "a migration waited too long for a table lock; trying again");
            tokio::time::sleep(MIGRATION_RETRY).await;
        }
        // Closing the connection releases the migration lock.
        if let Err(e) = conn.close().await {
            tracing::debug!(error = %e, "closing the migration connection failed");
        }
        Ok(())
    }

    /// The connection pool (the change listener shares its settings).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The lockout ledger's own pool on the same database ([`crate::lockout::PgLedger`]), apart
    /// from [`Self::pool`] so that writes holding every store connection cannot starve it.
    pub fn ledger_pool(&self) -> &PgPool {
        &self.ledger_pool
    }

    /// A listener on [`CHANNEL`].
    ///
    /// On a connection of its own, in a pool of one that only this listener uses: a listener
    /// dropped because its connection stopped answering (a frozen backend, a dropped NAT entry)
    /// sends `UNLISTEN` on it in the background, which may hang until TCP gives up; that must
    /// hold no connection the next listener or the reloads need.
    pub async fn listener(&self) -> Result<PgListener, StoreError> {
        let own = bounded_pool(1)
            .max_lifetime(None)
            .idle_timeout(None)
            // Told apart in pg_stat_activity.
            .connect_with(
                self.options
                    .clone()
                    .application_name(LISTENER_APPLICATION_NAME),
            )
            .await
            .map_err(db_err("listen for changes"))?;
        let mut l = PgListener::connect_with(&own)
            .await
            .map_err(db_err("listen for changes"))?;
        l.listen(self.listen_channel)
            .await
            .map_err(db_err("listen for changes"))?;
        Ok(l)
    }

    /// Commit `tx`, which wrote the row of id `id`. When the commit's answer is lost (the
    /// connection broke after `COMMIT` went out: the write may well have taken), `find` (a query
    /// of that id as `$1`, a row when it is stored) asks on another connection, and a stored
    /// row counts as committed: answered 503, the client would retry and create a second
    /// subject or face, counted against its key's quota. Ids are made before the insert, so the
    /// row found is this write's.
    async fn commit_or_find(
        &self,
        tx: Transaction<'_, Postgres>,
        operation: &'static str,
        find: &'static str,
        id: &str,
    ) -> Result<(), StoreError> {
        let Err(e) = tx.commit().await else {
            return Ok(());
        };
        let error = db_err(operation)(e);
        if !matches!(error, StoreError::Unavailable(_)) {
            return Err(error);
        }
        match sqlx::query(find).bind(id).fetch_optional(&self.pool).await {
            Ok(Some(_)) => {
                tracing::warn!(operation, id, error = %error, "the commit's answer was lost, but the write is stored");
                Ok(())
            }
            _ => Err(error),
        }
    }

    /// This store with a listener on `channel`, where no write notifies: what a pooler that
    /// answers queries but drops notifications does to the listener, for tests.
    #[doc(hidden)]
    pub fn listening_on(self, channel: &'static str) -> Self {
        Self {
            listen_channel: channel,
            ..self
        }
    }

    /// This store reading through a pool of its own ([`SYNC_CONNECTIONS`], connecting when
    /// first used): what the change listener's reloads and probes go through, so that no burst
    /// of writes can starve them. Each call makes a new pool, and the listener takes one per
    /// connection it makes: a connection abandoned mid-query when the network black-holed it
    /// (a read past its bound) is tested before it goes back to its pool, which waits until TCP
    /// gives up (about 15 minutes), and must hold no place the next reload needs meanwhile.
    pub fn syncing(&self) -> Self {
        Self {
            pool: bounded_pool(SYNC_CONNECTIONS)
                .connect_lazy_with(self.options.clone().application_name(SYNC_APPLICATION_NAME)),
            ..self.clone()
        }
    }

    /// Send a probe with `token` on [`CHANNEL`], on another connection than the listener's: a
    /// listener that receives it has proved that notifications reach it (a `SELECT 1` on its own
    /// connection does not: behind a transaction-mode pooler, or on a connection that lost its
    /// `LISTEN`, queries answer while notifications never come).
    pub async fn probe(&self, token: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(format!("{PROBE_PREFIX}{token}"))
            .execute(&self.pool)
            .await
            .map_err(db_err("probe the change listener"))?;
        Ok(())
    }

    /// [`StoreError::KeyQuota`] when `key_id` created `limit` subjects or enrolled `limit`
    /// templates or more (`of`). Run in the writing transaction under a transaction lock of the
    /// key and quota, so the writes of one key through any number of replicas are counted one
    /// after the other (each sees the ones committed before it) and cannot pass the quota
    /// together; other keys are not held up.
    async fn check_key_quota(
        tx: &mut Transaction<'_, Postgres>,
        of: QuotaOf,
        key_id: &str,
        limit: usize,
    ) -> Result<(), StoreError> {
        let (lock, count) = match of {
            QuotaOf::Subjects => (
                "facekey.subject_creator",
                "SELECT count(*) FROM facekey_subjects WHERE created_by = $1",
            ),
            QuotaOf::Templates => (
                "facekey.template_enroller",
                "SELECT count(*) FROM facekey_templates WHERE enrolled_by = $1",
            ),
        };
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("{lock}.{key_id}"))
            .execute(&mut **tx)
            .await
            .map_err(db_err("lock the key's quota"))?;
        let held: i64 = sqlx::query_scalar(count)
            .bind(key_id)
            .fetch_one(&mut **tx)
            .await
            .map_err(db_err("count what the key holds"))?;
        StoreError::check_quota(
            of,
            key_id,
            usize::try_from(held).unwrap_or(usize::MAX),
            limit,
        )
    }

    async fn notify(
        tx: &mut Transaction<'_, Postgres>,
        subject_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(subject_id)
            .execute(&mut **tx)
            .await
            .map_err(db_err("notify"))?;
        Ok(())
    }

    fn template_of(&self, row: &PgRow) -> Result<Template, StoreError> {
        let get = |e: sqlx::Error| StoreError::Backend {
            operation: "decode template row",
            source: Box::new(e),
        };
        let id: String = row.try_get("id").map_err(get)?;
        let subject_id: String = row.try_get("subject_id").map_err(get)?;
        let model: String = row.try_get("model").map_err(get)?;
        let nonce: Vec<u8> = row.try_get("nonce").map_err(get)?;
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| StoreError::Malformed(format!("template {id} has a malformed nonce")))?;
        let sealed = Sealed {
            key_id: row.try_get("key_id").map_err(get)?,
            nonce,
            ciphertext: row.try_get("ciphertext").map_err(get)?,
        };
        let embedding = self.keys.open(
            Binding {
                template_id: &id,
                subject_id: &subject_id,
                model: &model,
            },
            &sealed,
        )?;
        Ok(Template {
            quality: row.try_get("quality").map_err(get)?,
            enrolled_by: row.try_get("enrolled_by").map_err(get)?,
            created_at: row.try_get("created_at").map_err(get)?,
            id,
            subject_id,
            model,
            embedding,
        })
    }

    /// One subject's templates (the full reload reads every subject's in its own transaction),
    /// and those that do not open here ([`Self::opened`]).
    async fn templates(
        &self,
        subject: &str,
    ) -> Result<(Vec<Template>, Vec<UnreadableTemplate>), StoreError> {
        let rows = sqlx::query(concat!(
            template_columns!(),
            // The table's columns, qualified: `created_at` alone names the output column (the
            // time as text, to the second), and faces of one second came back by their random
            // ids: the first face (the anchor new faces are matched against) varied.
            " WHERE subject_id = $1::uuid \
             ORDER BY facekey_templates.created_at, facekey_templates.id"
        ))
        .bind(subject)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("load templates"))?;
        self.opened(&rows)
    }

    /// The templates of `rows`, and apart those no key of this replica opens (sealed with a key
    /// its key file lacks, or damaged): one such row must not stop every other change, deletions
    /// included, from reaching the index, and it is never matched.
    fn opened(
        &self,
        rows: &[PgRow],
    ) -> Result<(Vec<Template>, Vec<UnreadableTemplate>), StoreError> {
        let (mut opened, mut unreadable) = (Vec::new(), Vec::new());
        for row in rows {
            match self.template_of(row) {
                Ok(t) => opened.push(t),
                Err(e @ (StoreError::Key(_) | StoreError::Malformed(_))) => {
                    let get = |c: &str| row.try_get::<String, _>(c).unwrap_or_default();
                    unreadable.push(UnreadableTemplate {
                        id: get("id"),
                        subject_id: get("subject_id"),
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok((opened, unreadable))
    }

    fn unreadable_map(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<UnreadableTemplate>>> {
        self.unreadable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl TemplateStore for PgStore {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn kind(&self) -> &'static str {
        "postgresql"
    }

    async fn create_subject(
        &self,
        name: &str,
        created_by: Option<&str>,
        key_quota: Option<usize>,
    ) -> Result<SubjectRecord, StoreError> {
        let name = validate_name(name)?;
        let id = uuid::Uuid::new_v4().to_string();
        let mut tx = begin_read_committed(&self.pool)
            .await
            .map_err(db_err("create subject"))?;
        if let (Some(key_id), Some(limit)) = (created_by, key_quota) {
            Self::check_key_quota(&mut tx, QuotaOf::Subjects, key_id, limit).await?;
        }
        let row = sqlx::query(concat!(
            "INSERT INTO facekey_subjects (id, name, created_by) VALUES ($1::uuid, $2, $3) \
             RETURNING ",
            created_at!()
        ))
        .bind(&id)
        .bind(&name)
        .bind(created_by)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err("create subject"))?;
        Self::notify(&mut tx, &id).await?;
        self.commit_or_find(
            tx,
            "create subject",
            "SELECT 1 FROM facekey_subjects WHERE id = $1::uuid",
            &id,
        )
        .await?;
        Ok(SubjectRecord {
            created_at: row
                .try_get("created_at")
                .map_err(db_err("create subject"))?,
            id,
            name,
            created_by: created_by.map(str::to_owned),
            templates: Vec::new(),
        })
    }

    async fn delete_subject(&self, id: &str) -> Result<bool, StoreError> {
        let Some(id) = parse_id(id) else {
            return Ok(false);
        };
        let mut tx = self.pool.begin().await.map_err(db_err("delete subject"))?;
        let deleted = sqlx::query("DELETE FROM facekey_subjects WHERE id = $1::uuid")
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(db_err("delete subject"))?
            .rows_affected();
        if deleted > 0 {
            Self::notify(&mut tx, &id).await?;
        }
        tx.commit().await.map_err(db_err("delete subject"))?;
        Ok(deleted > 0)
    }

    async fn add_template(
        &self,
        subject_id: &str,
        template: NewTemplate,
        key_quota: Option<usize>,
    ) -> Result<Template, StoreError> {
        validate_template(&template)?;
        let not_found = || StoreError::SubjectNotFound(subject_id.to_owned());
        let subject = parse_id(subject_id).ok_or_else(not_found)?;
        let mut tx = begin_read_committed(&self.pool)
            .await
            .map_err(db_err("add template"))?;
        // The key's lock first, then the subject's row (as no other write takes them the other
        // way round, no two enrolments wait on each other).
        if let (Some(key_id), Some(limit)) = (template.enrolled_by.as_deref(), key_quota) {
            Self::check_key_quota(&mut tx, QuotaOf::Templates, key_id, limit).await?;
        }
        // Lock the subject row: concurrent enrolments for one subject serialise here, so the
        // limit holds across replicas.
        let exists = sqlx::query("SELECT 1 FROM facekey_subjects WHERE id = $1::uuid FOR UPDATE")
            .bind(&subject)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err("add template"))?;
        if exists.is_none() {
            return Err(not_found());
        }
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM facekey_templates WHERE subject_id = $1::uuid",
        )
        .bind(&subject)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err("add template"))?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= self.max_faces {
            return Err(StoreError::TooManyFaces {
                subject: subject.clone(),
                limit: self.max_faces,
            });
        }
        let id = uuid::Uuid::new_v4().to_string();
        let sealed = self.keys.seal(
            Binding {
                template_id: &id,
                subject_id: &subject,
                model: &template.model,
            },
            &template.embedding,
        )?;
        let row = sqlx::query(concat!(
            "INSERT INTO facekey_templates (id, subject_id, model, key_id, nonce, ciphertext, ",
            "quality, enrolled_by) VALUES ($1::uuid, $2::uuid, $3, $4, $5, $6, $7, $8) ",
            "RETURNING ",
            created_at!()
        ))
        .bind(&id)
        .bind(&subject)
        .bind(&template.model)
        .bind(&sealed.key_id)
        .bind(&sealed.nonce[..])
        .bind(&sealed.ciphertext)
        .bind(template.quality)
        .bind(&template.enrolled_by)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err("add template"))?;
        Self::notify(&mut tx, &subject).await?;
        self.commit_or_find(
            tx,
            "add template",
            "SELECT 1 FROM facekey_templates WHERE id = $1::uuid",
            &id,
        )
        .await?;
        Ok(Template {
            created_at: row.try_get("created_at").map_err(db_err("add template"))?,
            id,
            subject_id: subject,
            model: template.model,
            embedding: template.embedding,
            quality: template.quality,
            enrolled_by: template.enrolled_by,
        })
    }

    async fn delete_template(&self, subject_id: &str, template_id: &str) -> Result<(), StoreError> {
        let subject = parse_id(subject_id)
            .ok_or_else(|| StoreError::SubjectNotFound(subject_id.to_owned()))?;
        let face_not_found = || StoreError::FaceNotFound {
            subject: subject.clone(),
            face: template_id.to_owned(),
        };
        let mut tx = self.pool.begin().await.map_err(db_err("delete template"))?;
        // Lock the subject row, as enrolment does, so a deletion and an enrolment of one
        // subject serialise.
        let exists = sqlx::query("SELECT 1 FROM facekey_subjects WHERE id = $1::uuid FOR UPDATE")
            .bind(&subject)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err("delete template"))?;
        if exists.is_none() {
            return Err(StoreError::SubjectNotFound(subject));
        }
        let Some(template) = parse_id(template_id) else {
            return Err(face_not_found());
        };
        let deleted = sqlx::query(
            "DELETE FROM facekey_templates WHERE id = $1::uuid AND subject_id = $2::uuid",
        )
        .bind(&template)
        .bind(&subject)
        .execute(&mut *tx)
        .await
        .map_err(db_err("delete template"))?
        .rows_affected();
        if deleted == 0 {
            return Err(face_not_found());
        }
        Self::notify(&mut tx, &subject).await?;
        tx.commit().await.map_err(db_err("delete template"))?;
        Ok(())
    }

    async fn rename_subject(&self, id: &str, name: &str) -> Result<String, StoreError> {
        let name = validate_name(name)?;
        let not_found = || StoreError::SubjectNotFound(id.to_owned());
        let subject = parse_id(id).ok_or_else(not_found)?;
        let mut tx = self.pool.begin().await.map_err(db_err("rename subject"))?;
        let updated = sqlx::query("UPDATE facekey_subjects SET name = $2 WHERE id = $1::uuid")
            .bind(&subject)
            .bind(&name)
            .execute(&mut *tx)
            .await
            .map_err(db_err("rename subject"))?
            .rows_affected();
        if updated == 0 {
            return Err(not_found());
        }
        Self::notify(&mut tx, &subject).await?;
        tx.commit().await.map_err(db_err("rename subject"))?;
        Ok(name)
    }

    async fn load_all(&self) -> Result<Vec<SubjectRecord>, StoreError> {
        // One snapshot for subjects and templates, and no statement timeout: the whole store is
        // read (about 4.6 KB a template), which may take longer than any one request may.
        let err = db_err("load subjects");
        let mut tx = self.pool.begin().await.map_err(&err)?;
        sqlx::raw_sql(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
             SET LOCAL statement_timeout = 0",
        )
        .execute(&mut *tx)
        .await
        .map_err(&err)?;
        let rows = sqlx::query(concat!(
            "SELECT id::text AS id, name, created_by, ",
            created_at!(),
            " FROM facekey_subjects ORDER BY facekey_subjects.created_at, facekey_subjects.id"
        ))
        .fetch_all(&mut *tx)
        .await
        .map_err(&err)?;
        let template_rows = sqlx::query(concat!(
            template_columns!(),
            " ORDER BY facekey_templates.created_at, facekey_templates.id"
        ))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err("load templates"))?;
        tx.commit().await.map_err(&err)?;
        let (mut templates, unreadable) = self.opened(&template_rows)?;
        let mut left_out: BTreeMap<String, Vec<UnreadableTemplate>> = BTreeMap::new();
        for u in unreadable {
            left_out.entry(u.subject_id.clone()).or_default().push(u);
        }
        *self.unreadable_map() = left_out;
        let mut by_subject: std::collections::HashMap<String, Vec<Template>> =
            std::collections::HashMap::new();
        for t in templates.drain(..) {
            by_subject.entry(t.subject_id.clone()).or_default().push(t);
        }
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id").map_err(db_err("load subjects"))?;
                Ok(SubjectRecord {
                    templates: by_subject.remove(&id).unwrap_or_default(),
                    name: r.try_get("name").map_err(db_err("load subjects"))?,
                    created_at: r.try_get("created_at").map_err(db_err("load subjects"))?,
                    created_by: r.try_get("created_by").map_err(db_err("load subjects"))?,
                    id,
                })
            })
            .collect()
    }

    fn unreadable(&self) -> Vec<UnreadableTemplate> {
        self.unreadable_map().values().flatten().cloned().collect()
    }

    async fn load_subject(&self, id: &str) -> Result<Option<SubjectRecord>, StoreError> {
        let Some(id) = parse_id(id) else {
            return Ok(None);
        };
        let row = sqlx::query(concat!(
            "SELECT name, created_by, ",
            created_at!(),
            " FROM facekey_subjects WHERE id = $1::uuid"
        ))
        .bind(&id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("load subject"))?;
        let Some(row) = row else {
            self.unreadable_map().remove(&id);
            return Ok(None);
        };
        let (templates, unreadable) = self.templates(&id).await?;
        if unreadable.is_empty() {
            self.unreadable_map().remove(&id);
        } else {
            self.unreadable_map().insert(id.clone(), unreadable);
        }
        Ok(Some(SubjectRecord {
            name: row.try_get("name").map_err(db_err("load subject"))?,
            created_at: row.try_get("created_at").map_err(db_err("load subject"))?,
            created_by: row.try_get("created_by").map_err(db_err("load subject"))?,
            id,
            templates,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        let r = redact("postgres://facekey:s3cret@db.example:5432/facekey?sslmode=require");
        assert!(!r.contains("s3cret"), "{r}");
        assert!(r.contains("facekey:***@db.example:5432/facekey"), "{r}");
        assert!(!r.contains("sslmode"), "{r}");
        assert_eq!(redact("host=db password=x"), "<unparsable URL>");
    }

    #[test]
    fn transport_is_judged_from_the_url_host_and_ca() {
        let t = |url: &str| transport(url, None);
        assert_eq!(t("postgres://u:p@db:5432/f"), Transport::Unstated);
        assert_eq!(t("postgres://u@db/f?sslmode=prefer"), Transport::Unstated);
        assert_eq!(t("postgres://u@db/f?sslmode=allow"), Transport::Unstated);
        assert!(
            matches!(t("postgres://u@db/f?sslmode=require"), Transport::Stated(m) if m.starts_with("require"))
        );
        assert!(
            matches!(t("postgres://u@db/f?sslmode=disable"), Transport::Stated(m) if m.starts_with("disable"))
        );
        assert_eq!(
            t("postgres://u@db/f?sslmode=verify-full"),
            Transport::Protected
        );
        assert_eq!(
            t("postgres://u@db/f?sslmode=verify-ca"),
            Transport::Protected
        );
        // Never leaves the host.
        for local in [
            "postgres://u@127.0.0.1:5432/f",
            "postgres://u@localhost/f",
            "postgres://u@[::1]:5432/f",
            "postgres://u@%2Fvar%2Frun%2Fpostgresql/f",
        ] {
            assert_eq!(t(local), Transport::Protected, "{local}");
        }
        // A CA file verifies the server whatever the URL says.
        assert_eq!(
            transport("postgres://u@db/f", Some(Path::new("/ca.pem"))),
            Transport::Protected
        );
        let sentence = unstated_transport("FACEKEY_DATABASE_URL", "postgres://u:s3cret@db/f");
        assert!(sentence.contains("sslmode=verify-full"), "{sentence}");
        assert!(!sentence.contains("s3cret"), "{sentence}");
    }

    /// A released migration never changes, not even a comment: sqlx records each applied
    /// migration's SHA-384 and every replica then refuses to start against a database migrated
    /// by the released file. Change the schema with a new migration; add its row here.
    #[test]
    fn released_migrations_never_change() {
        const RELEASED: [(i64, &str); 9] = [
            (1, "15a827bd8166b6f593041f97c512ca9c"),
            (2, "828c3a8a1f7c789dbc17e61101b4f5e2"),
            (3, "ac33b72718da941e45ba3047e6e90179"),
            (4, "506d1e55cfbda166587a8d094f06cb07"),
            (5, "65298932cd4029fbcae5fc14425f59a8"),
            (6, "7c8ce34470510196c8efd11b153049c7"),
            (7, "392a08731be381f0fcf168737bdf3f78"),
            (8, "990ce98507f105f9a70d9abd2c2a63cd"),
            (9, "93633ab17c03b7f09d678429742453a0"),
        ];
        let migrator = sqlx::migrate!("./migrations");
        let compiled: Vec<(i64, String)> = migrator
            .iter()
            .map(|m| {
                let hex: String = m.checksum.iter().map(|b| format!("{b:02x}")).collect();
                (m.version, hex)
            })
            .collect();
        for (version, prefix) in RELEASED {
            let checksum = compiled
                .iter()
                .find(|(v, _)| *v == version)
                .map(|(_, c)| c.as_str());
            assert!(
                checksum.is_some_and(|c| c.starts_with(prefix)),
                "released migration {version} changed or is gone ({checksum:?}): add a new \
                 migration instead"
            );
        }
        // Versions only grow: a new migration comes after every released one.
        let versions: Vec<i64> = compiled.iter().map(|(v, _)| *v).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    }

    #[test]
    fn only_uuids_name_subjects() {
        assert!(parse_id("no-such-subject").is_none());
        assert!(parse_id("../etc").is_none());
        let id = uuid::Uuid::new_v4().to_string();
        assert_eq!(parse_id(&id), Some(id.clone()));
        assert!(parse_id(&id.to_uppercase()).is_none());
        assert!(parse_id(&id.replace('-', "")).is_none());
        assert!(parse_id(&format!("{{{id}}}")).is_none());
    }
}
