//! Challenge sessions in the shared PostgreSQL database (`facekey_liveness_sessions`, migration
//! 0003), for replicas behind one Service: any replica serves any call of a session, and a
//! restart keeps open sessions.
//!
//! Concurrency: a frames call holds its session with a lease (`busy_until`, migration 0006)
//! from its checks until its batch is applied, so a second call through any replica answers
//! `session_busy`, as on one replica. The batch is run through the models outside any
//! transaction, then applied under the row's lock (`SELECT … FOR UPDATE`) in the order received,
//! judging the session again (only the new frames' pairs), so a session ends exactly once (only
//! the call that ended it reports it, so the failed-challenge spoof event fires once) and a batch
//! captured before frames already applied fails it (`timestamps_not_increasing`): a client
//! cannot slip frames in before those the checker has already judged and answered about. A
//! passed session is consumed under the row lock by an `UPDATE … WHERE NOT consumed`: one
//! verification or identification across all replicas. Sessions are opened under a
//! transaction-level advisory lock, so the global and per-key bounds hold across replicas. Every
//! time is the database's clock.
//!
//! Data: the key binding is the SHA-256 of the key id; observations (never images) are sealed
//! with the template key ([`crate::store::cipher`]) like templates, one row per frames call in
//! `facekey_liveness_session_frames` (migration 0012, bound to the session id and the batch's
//! number), so that a call writes its own frames only; the session row keeps the verdict and,
//! once passed, what verify needs (sealed, bound to the session id). Rows sealed by the release
//! before, which kept every frame in the session row, are still read: their frames become the
//! session's first batch row on its next call. The replay record of accepted sessions is the
//! table `facekey_session_replay_record` (migration 0011, [`super::replay`]).
//!
//! Failure policy: a database that cannot be reached answers [`SessionError::Unavailable`]
//! (503 `store_unavailable`): no session opens, no frame is judged, nothing verifies — never a
//! pass.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::checker::{
    ChallengeVerdict, FailReason, KeptForVerify, Outcome, PairsJudged, evaluate, evaluate_more,
};
use super::fingerprint::Fingerprint;
use super::replay::{AcceptedSession, Compared, Replayed, nearest_replay};
use super::sealing;
use super::session::{
    BatchResult, Closed, Concluded, MAX_FRAMES_PER_CALL, Opened, PassedProbe, SessionError,
    SessionLimits, SessionState, SessionUse, SessionView, check_id, new_id, random_challenge,
    usable_for,
};
use super::store::SessionStore;
use super::{Action, ChallengePolicy, FaceObservation, FrameObservation};
use crate::store::StoreError;
use crate::store::cipher::{Binding, NONCE_LEN, Sealed, TemplateKeys};
use crate::store::postgres::{begin_read_committed, db_err};

/// Advisory lock serialising session opens across replicas (the bounds check and the insert).
const OPEN_LOCK: i64 = 0x6661_6365_6b65_7931;
/// Expired sessions ended per sweep at most (the rest in the next sweep).
const SWEEP_BATCH: i64 = 500;
/// The "embedding model" of the cipher's binding of a session row sealed by the releases that
/// kept a session's frames in its row: still read, never written.
const SEALED_KIND_IN_ROW: &str = "facekey.liveness-session.v1";
/// The binding's "embedding model" of a session row: what a passed session keeps for verify
/// (its frames are rows of their own, [`FRAMES_KIND`]). Also sealed, empty, into every row
/// opened, so that a replica of the release before, which would judge such a session on the
/// frames of its row alone, cannot open it (500 for that session, never a pass).
const SEALED_KIND: &str = "facekey.liveness-session.v2";
/// The binding's "embedding model" of one batch of a session's frames.
const FRAMES_KIND: &str = "facekey.liveness-frames.v1";
/// Accepted sessions' rows past the replay window deleted per sweep at most.
const REPLAY_SWEEP_BATCH: i64 = 1000;

/// The columns a session row is read with.
macro_rules! session_columns {
    () => {
        "SELECT id, subject, challenge, frames_received, verdict::text AS verdict, consumed, \
         sealed_key_id, sealed_nonce, sealed, expires_at <= now() AS expired, \
         extract(epoch FROM expires_at)::float8 AS expires_epoch, \
         (extract(epoch FROM now() - opened_at) * 1000)::float8 AS elapsed_ms \
         FROM facekey_liveness_sessions"
    };
}

/// Longest a frames call holds its session ([`SessionStore::begin_batch`]) when it neither
/// applies nor gives back its batch (its replica died): the request timeout's order.
const BATCH_LEASE: Duration = Duration::from_secs(30);

/// Sessions holding a place: in progress, or passed and unused, and not expired.
macro_rules! holding {
    () => {
        "expires_at > now() AND (outcome = 'in_progress' OR (outcome = 'passed' AND NOT consumed))"
    };
}

/// The SHA-256 (hex) of an API key id: how a row records the key that opened it.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The biometric part of a session, sealed in its row.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Private {
    /// Observations of the frames so far, in the order received (emptied when the session ends).
    frames: Vec<FrameObservation>,
    /// The best frame's face once passed, until a verification takes it.
    probe: Option<FaceObservation>,
    /// The witnesses' embeddings once passed ([`super::checker::witness_frames`]); absent
    /// from sessions sealed by a release before them.
    #[serde(default)]
    witnesses: Vec<crate::vision::embed::Embedding>,
    /// The embeddings of the frames that completed the actions once passed; absent from
    /// sessions sealed by a release before them (their verification then judges without).
    #[serde(default)]
    action_frames: Vec<crate::vision::embed::Embedding>,
    /// The fingerprints of the session's frames once passed, for the replay record; absent from
    /// sessions sealed by a release before it (their verification checks nothing against it).
    #[serde(default)]
    prints: Vec<Fingerprint>,
}

fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::InProgress => "in_progress",
        Outcome::Passed => "passed",
        Outcome::Failed => "failed",
    }
}

fn store_err(e: StoreError) -> SessionError {
    match e {
        StoreError::Unavailable(m) | StoreError::Busy(m) => SessionError::Unavailable(m),
        other => SessionError::Backend(other.to_string()),
    }
}

fn db(operation: &'static str) -> impl Fn(sqlx::Error) -> SessionError {
    let f = db_err(operation);
    move |e| store_err(f(e))
}

/// One session row.
struct SessionRow {
    id: String,
    subject: Option<String>,
    challenge: Vec<Action>,
    frames_received: usize,
    verdict: ChallengeVerdict,
    consumed: bool,
    sealed: Option<Sealed>,
    expired: bool,
    expires_at: SystemTime,
    elapsed_ms: u64,
}

/// The value sealed in `row`'s `sealed_key_id`, `sealed_nonce` and `sealed` columns, as every
/// table here keeps one; `None` while they are null (a session row sealing nothing yet).
fn sealed_of(row: &PgRow) -> Result<Option<Sealed>, String> {
    let get = |e: sqlx::Error| e.to_string();
    let key_id: Option<String> = row.try_get("sealed_key_id").map_err(get)?;
    let nonce: Option<Vec<u8>> = row.try_get("sealed_nonce").map_err(get)?;
    let ciphertext: Option<Vec<u8>> = row.try_get("sealed").map_err(get)?;
    let (Some(key_id), Some(nonce), Some(ciphertext)) = (key_id, nonce, ciphertext) else {
        return Ok(None);
    };
    let nonce = <[u8; NONCE_LEN]>::try_from(nonce).map_err(|_| "malformed nonce".to_owned())?;
    Ok(Some(Sealed {
        key_id,
        nonce,
        ciphertext,
    }))
}

/// [`sealed_of`] a row whose columns are never null.
fn sealed_in(row: &PgRow) -> Result<Sealed, String> {
    sealed_of(row)?.ok_or_else(|| "nothing sealed".to_owned())
}

impl SessionRow {
    fn decode(row: &PgRow) -> Result<Self, SessionError> {
        let get = |e: sqlx::Error| SessionError::Backend(format!("decode session row: {e}"));
        let id: String = row.try_get("id").map_err(get)?;
        let bad = |what: &str| SessionError::Backend(format!("session {id}: {what}"));
        let challenge: Vec<String> = row.try_get("challenge").map_err(get)?;
        let challenge = challenge
            .iter()
            .map(|a| Action::parse(a).ok_or_else(|| bad("unknown action in the challenge")))
            .collect::<Result<Vec<_>, _>>()?;
        let verdict: String = row.try_get("verdict").map_err(get)?;
        let verdict: ChallengeVerdict =
            serde_json::from_str(&verdict).map_err(|e| bad(&format!("verdict: {e}")))?;
        let sealed = sealed_of(row).map_err(|e| bad(&e))?;
        let frames_received: i32 = row.try_get("frames_received").map_err(get)?;
        let expires: f64 = row.try_get("expires_epoch").map_err(get)?;
        let elapsed: f64 = row.try_get("elapsed_ms").map_err(get)?;
        Ok(Self {
            subject: row.try_get("subject").map_err(get)?,
            challenge,
            frames_received: usize::try_from(frames_received).unwrap_or(0),
            verdict,
            consumed: row.try_get("consumed").map_err(get)?,
            sealed,
            expired: row.try_get("expired").map_err(get)?,
            expires_at: UNIX_EPOCH
                + Duration::try_from_secs_f64(expires.max(0.0)).unwrap_or_default(),
            // Float milliseconds to whole ones (never negative on the database's clock).
            elapsed_ms: elapsed.max(0.0) as u64,
            id,
        })
    }

    fn state(&self) -> SessionState {
        if self.expired {
            return SessionState::Expired;
        }
        match self.verdict.outcome {
            Outcome::InProgress => SessionState::InProgress,
            Outcome::Passed => SessionState::Passed,
            Outcome::Failed => SessionState::Failed,
        }
    }

    fn view(&self) -> SessionView {
        let mut verdict = self.verdict.clone();
        if self.expired {
            verdict.conclude(FailReason::Expired);
        }
        SessionView {
            id: self.id.clone(),
            state: self.state(),
            subject: self.subject.clone(),
            challenge: self.challenge.clone(),
            frames_received: self.frames_received,
            expires_at: self.expires_at,
            used: self.consumed,
            verdict,
        }
    }

    fn concluded(&self) -> Concluded {
        Concluded {
            id: self.id.clone(),
            outcome: self.verdict.outcome,
            reasons: self.verdict.reasons.clone(),
            subject: self.subject.clone(),
            confidence: self.verdict.confidence().unwrap_or(0.0),
            usable_frames: self.verdict.usable_frames,
        }
    }
}

/// Sessions in PostgreSQL (see the module docs).
pub struct PgSessions {
    pool: PgPool,
    keys: TemplateKeys,
    limits: SessionLimits,
    policy: ChallengePolicy,
    frames: std::sync::Mutex<FramesCache>,
    batch_rows_read: std::sync::atomic::AtomicU64,
}

/// Decrypted frames this replica last judged, by session: most clients keep their connection,
/// so their calls reach the same replica, and a frames call then reads only the batch rows
/// written since (by other replicas) instead of every earlier one. Bounded by
/// [`FRAMES_CACHE_BYTES`] (least recently used go first); an entry is taken out for a call and
/// put back only after its transaction committed, and the call checks the frames it assembles
/// against the count the row holds, reading every row again on a mismatch. A subject's
/// deletion and a session's close or end take its entry; an entry older than the session TTL
/// goes (its session has expired), so the frames of a session another replica deleted with
/// its subject are not held past that.
#[derive(Default)]
struct FramesCache {
    entries: std::collections::HashMap<String, CachedFrames>,
    bytes: usize,
    tick: u64,
}

struct CachedFrames {
    /// Batch rows the frames hold (rows `0..batches`).
    batches: usize,
    frames: Vec<FrameObservation>,
    /// Their sealed size, the measure of the bound.
    bytes: usize,
    subject: Option<String>,
    used: u64,
    stored: std::time::Instant,
}

/// At most this many bytes of sealed frames are kept decrypted per replica (about 40 sessions
/// at the default frame bound of 160).
pub const FRAMES_CACHE_BYTES: usize = 32 << 20;

impl FramesCache {
    fn take(&mut self, id: &str) -> Option<CachedFrames> {
        let entry = self.entries.remove(id)?;
        self.bytes -= entry.bytes;
        Some(entry)
    }

    fn put(&mut self, id: &str, mut entry: CachedFrames) {
        if entry.bytes > FRAMES_CACHE_BYTES {
            return;
        }
        self.tick += 1;
        entry.used = self.tick;
        self.bytes += entry.bytes;
        if let Some(old) = self.entries.insert(id.to_owned(), entry) {
            self.bytes -= old.bytes;
        }
        while self.bytes > FRAMES_CACHE_BYTES {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.take(&oldest);
        }
    }

    /// Drops the entries stored more than `ttl` ago.
    fn expire(&mut self, ttl: Duration) {
        self.drop_where(|e| e.stored.elapsed() > ttl);
    }

    fn forget_subject(&mut self, subject: &str) {
        self.drop_where(|e| e.subject.as_deref() == Some(subject));
    }

    fn drop_where(&mut self, mut drop: impl FnMut(&CachedFrames) -> bool) {
        let mut freed = 0;
        self.entries.retain(|_, e| {
            let dropped = drop(e);
            if dropped {
                freed += e.bytes;
            }
            !dropped
        });
        self.bytes -= freed;
    }
}

impl PgSessions {
    /// Sessions on `pool` (whose migrations have run: [`crate::store::postgres::PgStore::pool`]),
    /// sealed with `keys`.
    pub fn new(
        pool: PgPool,
        keys: TemplateKeys,
        limits: SessionLimits,
        policy: ChallengePolicy,
    ) -> Self {
        Self {
            pool,
            keys,
            limits,
            policy,
            frames: std::sync::Mutex::default(),
            batch_rows_read: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Batch rows of frames read from the database so far (what the frames cache saves shows
    /// here).
    pub fn batch_rows_read(&self) -> u64 {
        self.batch_rows_read
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn frames_cache(&self) -> std::sync::MutexGuard<'_, FramesCache> {
        let mut cache = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        cache.expire(self.limits.ttl);
        cache
    }

    fn binding<'a>(id: &'a str, key_hash: &'a str) -> Binding<'a> {
        Binding {
            template_id: id,
            subject_id: key_hash,
            model: SEALED_KIND,
        }
    }

    /// Seals batch `batch` of session `id`'s frames, bound to its place in the session.
    fn seal_batch(
        &self,
        id: &str,
        key_hash: &str,
        batch: usize,
        frames: &[FrameObservation],
    ) -> Result<Sealed, SessionError> {
        let json = serde_json::to_vec(frames)
            .map_err(|e| SessionError::Backend(format!("encode session {id} frames: {e}")))?;
        let place = format!("{id}/{batch}");
        sealing::seal_bytes(&self.keys, Self::batch_binding(&place, key_hash), &json)
            .map_err(|e| SessionError::Backend(format!("seal session {id} frames: {e}")))
    }

    /// The binding of a batch row at `place` (`{id}/{batch}`) of a session of `key_hash`.
    fn batch_binding<'a>(place: &'a str, key_hash: &'a str) -> Binding<'a> {
        Binding {
            template_id: place,
            subject_id: key_hash,
            model: FRAMES_KIND,
        }
    }

    /// The frames of session `id` kept as batch rows from row `from` on, in order (under the
    /// session's row lock): the frames, the rows read and their sealed bytes.
    async fn read_batches(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: &str,
        key_hash: &str,
        from: usize,
    ) -> Result<(Vec<FrameObservation>, usize, usize), SessionError> {
        let rows = sqlx::query(
            "SELECT batch, sealed_key_id, sealed_nonce, sealed \
             FROM facekey_liveness_session_frames WHERE session_id = $1 AND batch >= $2 \
             ORDER BY batch",
        )
        .bind(id)
        .bind(i32::try_from(from).unwrap_or(i32::MAX))
        .fetch_all(&mut **tx)
        .await
        .map_err(db("read liveness session frames"))?;
        self.batch_rows_read.fetch_add(
            u64::try_from(rows.len()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        let bad = |what: String| SessionError::Backend(format!("session {id} frames: {what}"));
        let mut frames = Vec::new();
        let mut bytes = 0;
        for (n, row) in rows.iter().enumerate() {
            let i = from + n;
            let get = |e: sqlx::Error| bad(e.to_string());
            let batch: i32 = row.try_get("batch").map_err(get)?;
            if usize::try_from(batch).ok() != Some(i) {
                return Err(bad(format!("batch {batch} where {i} was due")));
            }
            let sealed = sealed_in(row).map_err(bad)?;
            bytes += sealed.ciphertext.len();
            let place = format!("{id}/{i}");
            let bytes =
                sealing::open_bytes(&self.keys, Self::batch_binding(&place, key_hash), &sealed)
                    .map_err(bad)?;
            let batch: Vec<FrameObservation> =
                serde_json::from_slice(&bytes).map_err(|e| bad(format!("sealed data: {e}")))?;
            frames.extend(batch);
        }
        Ok((frames, rows.len(), bytes))
    }

    /// Session `id`'s frames so far, as batch rows (`expected` frames in all): the cached ones
    /// and the rows written since, or every row when nothing is cached or the cache and the
    /// rows disagree. The frames, the rows they fill and their sealed bytes.
    async fn frames_so_far(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: &str,
        key_hash: &str,
        expected: usize,
    ) -> Result<(Vec<FrameObservation>, usize, usize), SessionError> {
        let cached = self.frames_cache().take(id);
        if let Some(c) = cached {
            let (more, rows, bytes) = self.read_batches(tx, id, key_hash, c.batches).await?;
            if c.frames.len() + more.len() == expected {
                let mut frames = c.frames;
                frames.extend(more);
                return Ok((frames, c.batches + rows, c.bytes + bytes));
            }
            tracing::debug!(
                session = id,
                "cached liveness frames out of date; reading every batch"
            );
        }
        self.read_batches(tx, id, key_hash, 0).await
    }

    /// Appends `frames` to session `id` as its batch row number `batch`; its sealed bytes.
    async fn append_batch(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: &str,
        key_hash: &str,
        batch: usize,
        frames: &[FrameObservation],
    ) -> Result<usize, SessionError> {
        let sealed = self.seal_batch(id, key_hash, batch, frames)?;
        sqlx::query(
            "INSERT INTO facekey_liveness_session_frames \
             (session_id, batch, sealed_key_id, sealed_nonce, sealed) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(i32::try_from(batch).unwrap_or(i32::MAX))
        .bind(&sealed.key_id)
        .bind(sealed.nonce.to_vec())
        .bind(&sealed.ciphertext)
        .execute(&mut **tx)
        .await
        .map_err(db("add liveness session frames"))?;
        Ok(sealed.ciphertext.len())
    }

    fn seal(&self, id: &str, key_hash: &str, private: &Private) -> Result<Sealed, SessionError> {
        let json = serde_json::to_vec(private)
            .map_err(|e| SessionError::Backend(format!("encode session {id}: {e}")))?;
        sealing::seal_bytes(&self.keys, Self::binding(id, key_hash), &json)
            .map_err(|e| SessionError::Backend(format!("seal session {id}: {e}")))
    }

    fn unseal(&self, row: &SessionRow, key_hash: &str) -> Result<Private, SessionError> {
        let Some(sealed) = &row.sealed else {
            return Ok(Private::default());
        };
        let bad = |what: String| SessionError::Backend(format!("session {}: {what}", row.id));
        let in_row = Binding {
            model: SEALED_KIND_IN_ROW,
            ..Self::binding(&row.id, key_hash)
        };
        let bytes = match sealing::open_bytes(&self.keys, Self::binding(&row.id, key_hash), sealed)
        {
            Ok(bytes) => bytes,
            // Sealed by the release before (frames in the row)? Else the first error says why.
            Err(first) => {
                sealing::open_bytes(&self.keys, in_row, sealed).map_err(|_| bad(first))?
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("sealed data: {e}")))
    }

    /// [`SessionStore::add_frames`] in one transaction holding the session's row lock; its
    /// write clears the batch's lease.
    async fn add_frames_locked(
        &self,
        key: &str,
        id: &str,
        mut batch: Vec<FrameObservation>,
    ) -> Result<BatchResult, SessionError> {
        let hash = key_hash(key);
        let err = db("add frames to liveness session");
        let mut tx = self.pool.begin().await.map_err(&err)?;
        let mut s = self.fetch(&mut *tx, &hash, id, true).await?;
        if s.expired {
            return Err(SessionError::Expired);
        }
        if s.verdict.outcome != Outcome::InProgress {
            return Ok(BatchResult {
                view: s.view(),
                frames: Vec::new(),
                concluded: None,
            });
        }
        let private = self.unseal(&s, &hash)?;
        batch.truncate(self.limits.max_frames.saturating_sub(s.frames_received));
        for f in &mut batch {
            f.received_ms = Some(s.elapsed_ms);
        }
        s.frames_received += batch.len();
        // The frames so far, in the order received, as one replica's store keeps them: those a
        // session opened by the release before kept in its row, then the batch rows. A batch
        // captured before frames already applied fails the session (timestamps_not_increasing).
        let mut frames = private.frames;
        let in_row = frames.len();
        let expected = (s.frames_received - batch.len()).saturating_sub(in_row);
        let (kept_rows, batches, mut sealed_bytes) =
            self.frames_so_far(&mut tx, id, &hash, expected).await?;
        if in_row > 0 && batches > 0 {
            return Err(SessionError::Backend(format!(
                "session {id} holds frames both in its row and as batch rows"
            )));
        }
        frames.extend(kept_rows);
        // Every frame applied before this batch must be back: a batch row missing (deleted by
        // hand, or restored from another backup) would let this batch be judged without it.
        if frames.len() != s.frames_received - batch.len() {
            return Err(SessionError::Backend(format!(
                "session {id}: {} frames stored for {} received",
                frames.len(),
                s.frames_received - batch.len()
            )));
        }
        let judged = PairsJudged::by(&s.verdict, frames.len());
        let first = frames.len();
        let new: Vec<usize> = (first..first + batch.len()).collect();
        frames.extend(batch);
        let mut verdict = evaluate_more(&s.challenge, &frames, &self.policy, judged);
        if verdict.outcome == Outcome::InProgress && s.frames_received >= self.limits.max_frames {
            verdict.conclude(FailReason::ChallengeIncomplete);
        }
        let feedback = new
            .iter()
            .filter_map(|&i| verdict.frames.get(i).copied())
            .collect();
        let ended = verdict.outcome != Outcome::InProgress;
        let mut kept = None;
        let sealed = if ended {
            // Keep only what verify needs: a passed session's probe, witnesses, action frames
            // and prints, in the row; the frames go.
            sqlx::query("DELETE FROM facekey_liveness_session_frames WHERE session_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(&err)?;
            match super::checker::kept_for_verify(&verdict, &frames) {
                Some(kept) => Some(self.seal(
                    id,
                    &hash,
                    &Private {
                        frames: Vec::new(),
                        probe: Some(kept.probe),
                        witnesses: kept.witnesses,
                        action_frames: kept.action_frames,
                        prints: kept.prints,
                    },
                )?),
                None => None,
            }
        } else {
            // Only this batch is written: a row of its own (and, for a session the release
            // before began, its row's frames become the first batch rows, 8 frames a row).
            let mut next = batches;
            for chunk in frames[..in_row].chunks(MAX_FRAMES_PER_CALL) {
                sealed_bytes += self.append_batch(&mut tx, id, &hash, next, chunk).await?;
                next += 1;
            }
            if first < frames.len() {
                sealed_bytes += self
                    .append_batch(&mut tx, id, &hash, next, &frames[first..])
                    .await?;
                next += 1;
            }
            kept = Some(CachedFrames {
                batches: next,
                frames: Vec::new(),
                bytes: sealed_bytes,
                subject: s.subject.clone(),
                used: 0,
                stored: std::time::Instant::now(),
            });
            Some(self.seal(id, &hash, &Private::default())?)
        };
        s.verdict = verdict;
        self.write(&mut tx, &s, sealed.as_ref()).await?;
        tx.commit().await.map_err(&err)?;
        // Committed: this replica's next call for the session reads only newer rows.
        if let Some(mut entry) = kept {
            entry.frames = frames;
            self.frames_cache().put(id, entry);
        }
        Ok(BatchResult {
            view: s.view(),
            frames: feedback,
            concluded: ended.then(|| s.concluded()),
        })
    }

    async fn fetch(
        &self,
        executor: impl sqlx::PgExecutor<'_>,
        key_hash: &str,
        id: &str,
        for_update: bool,
    ) -> Result<SessionRow, SessionError> {
        // Every call naming a session reads it here first (`release` checks on its own).
        check_id(id)?;
        let sql = if for_update {
            concat!(
                session_columns!(),
                " WHERE id = $1 AND key_hash = $2 FOR UPDATE"
            )
        } else {
            concat!(session_columns!(), " WHERE id = $1 AND key_hash = $2")
        };
        let row = sqlx::query(sql)
            .bind(id)
            .bind(key_hash)
            .fetch_optional(executor)
            .await
            .map_err(db("read liveness session"))?
            .ok_or(SessionError::NotFound)?;
        SessionRow::decode(&row)
    }

    async fn write(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        row: &SessionRow,
        sealed: Option<&Sealed>,
    ) -> Result<(), SessionError> {
        let verdict = serde_json::to_string(&row.verdict)
            .map_err(|e| SessionError::Backend(format!("encode verdict: {e}")))?;
        sqlx::query(
            "UPDATE facekey_liveness_sessions SET frames_received = $2, outcome = $3, \
             verdict = $4::jsonb, sealed_key_id = $5, sealed_nonce = $6, sealed = $7, \
             busy_until = NULL WHERE id = $1",
        )
        .bind(&row.id)
        .bind(i32::try_from(row.frames_received).unwrap_or(i32::MAX))
        .bind(outcome_str(row.verdict.outcome))
        .bind(verdict)
        .bind(sealed.map(|s| s.key_id.clone()))
        .bind(sealed.map(|s| s.nonce.to_vec()))
        .bind(sealed.map(|s| s.ciphertext.clone()))
        .execute(&mut **tx)
        .await
        .map_err(db("update liveness session"))?;
        Ok(())
    }

    /// Seals an accepted session's fingerprints for the replay record
    /// ([`sealing::seal_prints`]).
    fn seal_prints(
        &self,
        subject: &str,
        session: &str,
        prints: &[Fingerprint],
    ) -> Result<Sealed, SessionError> {
        sealing::seal_prints(&self.keys, subject, session, prints).map_err(|e| {
            SessionError::Backend(format!("seal the frames of session {session}: {e}"))
        })
    }

    /// An accepted session as its replay-record `row` holds it.
    fn open_row_prints(&self, subject: &str, row: &PgRow) -> Result<AcceptedSession, SessionError> {
        let get = |e: sqlx::Error| SessionError::Backend(format!("replay record row: {e}"));
        let session: String = row.try_get("session_id").map_err(get)?;
        let sealed = sealed_in(row).map_err(|e| {
            SessionError::Backend(format!("replay record of session {session}: {e}"))
        })?;
        let prints = self.open_prints(subject, &session, &sealed)?;
        Ok(AcceptedSession { session, prints })
    }

    /// The accepted sessions of `subject`'s replay-record `rows`. A row sealed with a key
    /// retired since (or damaged) cannot be compared: it is skipped, loudly, rather than every
    /// session verification of the subject failing until the row ages out (the README's key
    /// retirement re-seals first).
    fn open_record_rows(&self, subject: &str, rows: &[PgRow]) -> Vec<AcceptedSession> {
        let mut accepted = Vec::with_capacity(rows.len());
        for row in rows {
            match self.open_row_prints(subject, row) {
                Ok(a) => accepted.push(a),
                Err(e) => tracing::warn!(
                    target: "facekey::security",
                    subject = %subject,
                    error = %e,
                    "a row of the replay record cannot be opened and is not compared"
                ),
            }
        }
        accepted
    }

    /// The fingerprints a replay-record row sealed ([`sealing::open_prints`]).
    fn open_prints(
        &self,
        subject: &str,
        session: &str,
        sealed: &Sealed,
    ) -> Result<Vec<Fingerprint>, SessionError> {
        sealing::open_prints(&self.keys, subject, session, sealed).map_err(|what| {
            SessionError::Backend(format!("replay record of session {session}: {what}"))
        })
    }
}

#[async_trait::async_trait]
impl SessionStore for PgSessions {
    fn limits(&self) -> SessionLimits {
        self.limits
    }

    fn policy(&self) -> &ChallengePolicy {
        &self.policy
    }

    fn describe(&self) -> &'static str {
        "PostgreSQL"
    }

    async fn open(
        &self,
        key: &str,
        subject: Option<String>,
    ) -> Result<(Opened, Vec<Concluded>), SessionError> {
        let no_randomness = |e: getrandom::Error| SessionError::TooManySessions {
            global: true,
            message: format!("the OS random source failed: {e}"),
        };
        let challenge = random_challenge().map_err(no_randomness)?;
        let id = new_id().map_err(no_randomness)?;
        let ended = self.sweep().await?;
        let hash = key_hash(key);
        let err = db("open liveness session");
        let mut tx = begin_read_committed(&self.pool).await.map_err(&err)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(OPEN_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        let row = sqlx::query(concat!(
            "SELECT count(*) AS total, count(*) FILTER (WHERE key_hash = $1) AS mine \
             FROM facekey_liveness_sessions WHERE ",
            holding!()
        ))
        .bind(&hash)
        .fetch_one(&mut *tx)
        .await
        .map_err(&err)?;
        let total: i64 = row.try_get("total").map_err(&err)?;
        let mine: i64 = row.try_get("mine").map_err(&err)?;
        let count = |n: i64| usize::try_from(n).unwrap_or(usize::MAX);
        self.limits
            .admit_open(count(total), count(mine), "across the replicas")?;
        let max = i64::try_from(self.limits.max_sessions).unwrap_or(i64::MAX);
        // Ended sessions stay as small rows until swept; beyond 4x the bound the oldest go.
        sqlx::query(concat!(
            "DELETE FROM facekey_liveness_sessions WHERE id IN (\
               SELECT id FROM facekey_liveness_sessions WHERE NOT (",
            holding!(),
            ") ORDER BY expires_at DESC \
               OFFSET greatest($1 - 1, 0))"
        ))
        .bind(max.max(1).saturating_mul(4))
        .execute(&mut *tx)
        .await
        .map_err(&err)?;
        let empty = evaluate(&challenge, &[], &self.policy);
        let verdict = serde_json::to_string(&empty)
            .map_err(|e| SessionError::Backend(format!("encode verdict: {e}")))?;
        let names: Vec<&str> = challenge.iter().map(|a| a.as_str()).collect();
        // Sealed empty in this release's binding, so that a replica of the release before
        // (which kept frames in the row) cannot take the session for one it can judge.
        let sealed = self.seal(&id, &hash, &Private::default())?;
        let expires: f64 = sqlx::query_scalar(
            "INSERT INTO facekey_liveness_sessions \
               (id, key_hash, subject, challenge, expires_at, verdict, \
                sealed_key_id, sealed_nonce, sealed) \
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6::jsonb, $7, $8, $9) \
             RETURNING extract(epoch FROM expires_at)::float8",
        )
        .bind(&id)
        .bind(&hash)
        .bind(subject)
        .bind(names)
        .bind(self.limits.ttl.as_secs_f64())
        .bind(verdict)
        .bind(&sealed.key_id)
        .bind(sealed.nonce.to_vec())
        .bind(&sealed.ciphertext)
        .fetch_one(&mut *tx)
        .await
        .map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        Ok((
            Opened {
                id,
                challenge,
                expires_at: UNIX_EPOCH
                    + Duration::try_from_secs_f64(expires.max(0.0)).unwrap_or_default(),
                max_frames: self.limits.max_frames,
            },
            ended,
        ))
    }

    async fn begin_batch(
        &self,
        key: &str,
        id: &str,
        n: usize,
    ) -> Result<Option<SessionView>, SessionError> {
        let s = self.fetch(&self.pool, &key_hash(key), id, false).await?;
        if s.expired {
            return Err(SessionError::Expired);
        }
        if s.verdict.outcome != Outcome::InProgress {
            return Ok(Some(s.view()));
        }
        let limits = self.limits;
        if n == 0 || n > limits.max_frames_per_call {
            return Err(SessionError::TooManyFrames(format!(
                "send 1 to {} frames per call, got {n}",
                limits.max_frames_per_call
            )));
        }
        let remaining = limits.max_frames.saturating_sub(s.frames_received);
        if n > remaining {
            return Err(SessionError::TooManyFrames(format!(
                "the session accepts {remaining} more frame(s) of {} (FACEKEY_SESSION_MAX_FRAMES), \
                 got {n}",
                limits.max_frames
            )));
        }
        // Hold the session for this batch, as one replica's store does: another call for it,
        // through any replica, answers session_busy until the batch is applied or given back
        // (or the lease of a replica that died holding it runs out). `add_frames` checks the
        // frame budget again under the row lock.
        let claimed = sqlx::query(
            "UPDATE facekey_liveness_sessions SET busy_until = now() + make_interval(secs => $3) \
             WHERE id = $1 AND key_hash = $2 AND (busy_until IS NULL OR busy_until <= now())",
        )
        .bind(id)
        .bind(key_hash(key))
        .bind(BATCH_LEASE.as_secs_f64())
        .execute(&self.pool)
        .await
        .map_err(db("reserve liveness session"))?;
        if claimed.rows_affected() != 1 {
            return Err(SessionError::Busy);
        }
        Ok(None)
    }

    async fn release(&self, key: &str, id: &str) {
        if check_id(id).is_err() {
            return;
        }
        let released = sqlx::query(
            "UPDATE facekey_liveness_sessions SET busy_until = NULL \
             WHERE id = $1 AND key_hash = $2",
        )
        .bind(id)
        .bind(key_hash(key))
        .execute(&self.pool)
        .await;
        if let Err(e) = released {
            tracing::warn!(session = id, error = %e, "liveness session reservation not given back; it runs out by itself");
        }
    }

    async fn add_frames(
        &self,
        key: &str,
        id: &str,
        batch: Vec<FrameObservation>,
    ) -> Result<BatchResult, SessionError> {
        let added = self.add_frames_locked(key, id, batch).await;
        if added.is_err() {
            // The transaction that clears the batch's lease rolled back (a lock timeout, a
            // failover, a failed commit, sealed data that does not open): give the lease back
            // on its own, or every retry the 503 invites answers session_busy for the lease's
            // 30 s. Harmless if the commit did land: the lease is cleared either way.
            self.release(key, id).await;
        }
        added
    }

    async fn view(&self, key: &str, id: &str) -> Result<SessionView, SessionError> {
        Ok(self
            .fetch(&self.pool, &key_hash(key), id, false)
            .await?
            .view())
    }

    async fn take_probe(
        &self,
        key: &str,
        id: &str,
        purpose: SessionUse<'_>,
    ) -> Result<PassedProbe, SessionError> {
        let hash = key_hash(key);
        let err = db("use liveness session");
        let mut tx = self.pool.begin().await.map_err(&err)?;
        let s = self.fetch(&mut *tx, &hash, id, true).await?;
        usable_for(
            s.expired,
            s.consumed,
            s.verdict.outcome,
            s.state().as_str(),
            s.subject.as_deref(),
            purpose,
        )?;
        let private = self.unseal(&s, &hash)?;
        let probe = private
            .probe
            .and_then(|probe| {
                let kept = KeptForVerify {
                    probe,
                    witnesses: private.witnesses,
                    action_frames: private.action_frames,
                    prints: private.prints,
                };
                PassedProbe::from_kept(
                    kept,
                    s.verdict.confidence().unwrap_or(0.0),
                    s.challenge.clone(),
                )
            })
            .ok_or(SessionError::NotPassed("passed"))?;
        // Under the row lock already; the condition makes the single use explicit.
        let done = sqlx::query(
            "UPDATE facekey_liveness_sessions SET consumed = true, sealed_key_id = NULL, \
             sealed_nonce = NULL, sealed = NULL \
             WHERE id = $1 AND key_hash = $2 AND outcome = 'passed' AND NOT consumed \
               AND expires_at > now()",
        )
        .bind(id)
        .bind(&hash)
        .execute(&mut *tx)
        .await
        .map_err(&err)?;
        if done.rows_affected() != 1 {
            return Err(SessionError::Used);
        }
        tx.commit().await.map_err(&err)?;
        Ok(probe)
    }

    async fn sweep(&self) -> Result<Vec<Concluded>, SessionError> {
        let err = db("sweep liveness sessions");
        let mut tx = self.pool.begin().await.map_err(&err)?;
        // SKIP LOCKED: a session a batch is being applied to is left for the next sweep, and
        // two replicas sweeping at once end each session once.
        let rows = sqlx::query(concat!(
            session_columns!(),
            " WHERE outcome = 'in_progress' AND expires_at <= now() \
              ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED"
        ))
        .bind(SWEEP_BATCH)
        .fetch_all(&mut *tx)
        .await
        .map_err(&err)?;
        let mut ended = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut s = SessionRow::decode(row)?;
            s.verdict.conclude(FailReason::Expired);
            self.write(&mut tx, &s, None).await?;
            ended.push(s.concluded());
        }
        // Expired sessions keep no observations; rows go one TTL after expiry. Rows another
        // sweep (or a call) holds are skipped too, for the next sweep: waiting for them while
        // holding this sweep's rows deadlocks two sweeps that each took a share of the expired.
        sqlx::query(
            "UPDATE facekey_liveness_sessions SET sealed_key_id = NULL, sealed_nonce = NULL, \
             sealed = NULL WHERE id IN (SELECT id FROM facekey_liveness_sessions \
               WHERE expires_at <= now() AND sealed IS NOT NULL FOR UPDATE SKIP LOCKED)",
        )
        .execute(&mut *tx)
        .await
        .map_err(&err)?;
        sqlx::query(
            "DELETE FROM facekey_liveness_session_frames WHERE session_id IN (SELECT id \
               FROM facekey_liveness_sessions WHERE expires_at <= now() \
               AND EXISTS (SELECT 1 FROM facekey_liveness_session_frames f \
                           WHERE f.session_id = facekey_liveness_sessions.id) \
               FOR UPDATE SKIP LOCKED)",
        )
        .execute(&mut *tx)
        .await
        .map_err(&err)?;
        sqlx::query(
            "DELETE FROM facekey_liveness_sessions WHERE id IN (SELECT id \
               FROM facekey_liveness_sessions \
               WHERE expires_at + make_interval(secs => $1) <= now() FOR UPDATE SKIP LOCKED)",
        )
        .bind(self.limits.ttl.as_secs_f64())
        .execute(&mut *tx)
        .await
        .map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        // Accepted sessions' frames past their window (the one in force when each was
        // remembered), on their own: rows another sweep or a write holds are left for the next.
        sqlx::query(
            "DELETE FROM facekey_session_replay_record WHERE ctid IN (SELECT ctid \
               FROM facekey_session_replay_record WHERE expires_at <= now() \
               LIMIT $1 FOR UPDATE SKIP LOCKED)",
        )
        .bind(REPLAY_SWEEP_BATCH)
        .execute(&self.pool)
        .await
        .map_err(db("sweep the replay record"))?;
        Ok(ended)
    }

    async fn close(&self, key: &str, id: &str) -> Result<Closed, SessionError> {
        self.frames_cache().take(id);
        let hash = key_hash(key);
        let err = db("close liveness session");
        let mut tx = self.pool.begin().await.map_err(&err)?;
        // Under the row's lock: a batch or a verification using it finishes first.
        let s = self.fetch(&mut *tx, &hash, id, true).await?;
        sqlx::query("DELETE FROM facekey_liveness_sessions WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        Ok(Closed {
            in_progress: s.verdict.outcome == Outcome::InProgress,
            usable_frames: s.verdict.usable_frames,
            subject: s.subject,
        })
    }

    async fn forget_subject(&self, subject: &str) -> Result<usize, SessionError> {
        self.frames_cache().forget_subject(subject);
        let err = db("delete the liveness sessions of a deleted subject");
        let mut tx = self.pool.begin().await.map_err(&err)?;
        let done = sqlx::query("DELETE FROM facekey_liveness_sessions WHERE subject = $1")
            .bind(subject)
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        sqlx::query("DELETE FROM facekey_session_replay_record WHERE subject = $1")
            .bind(subject)
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }

    async fn accepted_sessions(&self, subject: &str) -> Result<Vec<AcceptedSession>, SessionError> {
        if self.limits.replay_window.is_zero() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT session_id, sealed_key_id, sealed_nonce, sealed \
             FROM facekey_session_replay_record \
             WHERE subject = $1 AND expires_at > now() \
             ORDER BY verified_at DESC LIMIT $2",
        )
        .bind(subject)
        .bind(i64::try_from(super::replay::SESSIONS_PER_SUBJECT).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db("read the replay record"))?;
        Ok(self.open_record_rows(subject, &rows))
    }

    async fn remember_verified(
        &self,
        mut checked: Vec<Compared>,
        session: &str,
        prints: Vec<Fingerprint>,
    ) -> Result<Option<(String, Replayed)>, SessionError> {
        // Subjects are UUIDs here: another id names no subject and is remembered for none.
        checked.retain(|c| uuid::Uuid::try_parse(&c.subject).is_ok());
        // Locked in one order by every writer, so two writers of overlapping subjects cannot
        // wait on each other.
        checked.sort_by(|a, b| a.subject.cmp(&b.subject));
        checked.dedup_by(|a, b| a.subject == b.subject);
        if self.limits.replay_window.is_zero() || prints.is_empty() || checked.is_empty() {
            return Ok(None);
        }
        let err = db("write the replay record");
        // Each statement sees what was committed before it, whatever the database's default:
        // the session a writer that held the lock just remembered included.
        let mut tx = begin_read_committed(&self.pool).await.map_err(&err)?;
        // One writer of a subject's record at a time, on every replica: the sessions remembered
        // since the caller's check are compared under the lock, then this one is written.
        for c in &checked {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("facekey.replay-record/{}", c.subject))
                .execute(&mut *tx)
                .await
                .map_err(&err)?;
        }
        let mut alive = Vec::with_capacity(checked.len());
        let mut unseen = Vec::new();
        for c in &checked {
            // A subject deleted while its verification ran leaves nothing behind: its
            // deletion's clean-up may have run already. Held until the commit, the subject's row
            // cannot be deleted before the write is done, so the clean-up that follows deletes it.
            let exists: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM facekey_subjects WHERE id = $1::uuid FOR KEY SHARE",
            )
            .bind(&c.subject)
            .fetch_optional(&mut *tx)
            .await
            .map_err(&err)?;
            if exists.is_none() {
                continue;
            }
            alive.push(c.subject.clone());
            let rows = sqlx::query(
                "SELECT session_id, sealed_key_id, sealed_nonce, sealed \
                 FROM facekey_session_replay_record \
                 WHERE subject = $1 AND expires_at > clock_timestamp() AND session_id <> $2 \
                   AND session_id <> ALL($3) \
                 ORDER BY verified_at DESC LIMIT $4",
            )
            .bind(&c.subject)
            .bind(session)
            .bind(&c.sessions)
            .bind(i64::try_from(super::replay::SESSIONS_PER_SUBJECT).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(&err)?;
            let opened = self.open_record_rows(&c.subject, &rows);
            if !opened.is_empty() {
                unseen.push((c.subject.clone(), opened));
            }
        }
        if !unseen.is_empty() {
            let mine = prints.clone();
            let found = tokio::task::spawn_blocking(move || {
                unseen.into_iter().find_map(|(subject, earlier)| {
                    nearest_replay(&mine, &earlier).map(|r| (subject, r))
                })
            })
            .await
            .map_err(|e| SessionError::Backend(format!("the replay comparison failed: {e}")))?;
            if found.is_some() {
                // Nothing written: the transaction rolls back as it drops, freeing the locks.
                return Ok(found);
            }
        }
        for subject in &alive {
            let sealed = self.seal_prints(subject, session, &prints)?;
            // The time of the write, not of the transaction's start (before the lock wait): the
            // subject's latest sessions are those written last.
            sqlx::query(
                "INSERT INTO facekey_session_replay_record \
                 (subject, session_id, verified_at, expires_at, sealed_key_id, sealed_nonce, \
                  sealed) \
                 VALUES ($1, $2, clock_timestamp(), \
                   clock_timestamp() + make_interval(secs => $3), $4, $5, $6) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(subject)
            .bind(session)
            .bind(self.limits.replay_window.as_secs_f64())
            .bind(&sealed.key_id)
            .bind(sealed.nonce.to_vec())
            .bind(&sealed.ciphertext)
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
            // The subject's latest sessions only, so a subject's record stays bounded.
            sqlx::query(
                "DELETE FROM facekey_session_replay_record WHERE subject = $1 \
                 AND session_id NOT IN \
                   (SELECT session_id FROM facekey_session_replay_record WHERE subject = $1 \
                    ORDER BY verified_at DESC, session_id LIMIT $2)",
            )
            .bind(subject)
            .bind(i64::try_from(super::replay::SESSIONS_PER_SUBJECT).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        }
        tx.commit().await.map_err(&err)?;
        Ok(None)
    }

    async fn active(&self) -> Result<usize, SessionError> {
        let n: i64 = sqlx::query_scalar(concat!(
            "SELECT count(*) FROM facekey_liveness_sessions WHERE ",
            holding!()
        ))
        .fetch_one(&self.pool)
        .await
        .map_err(db("count liveness sessions"))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::challenge::sealing::bytes_to_words;

    fn cached(bytes: usize, subject: Option<&str>) -> CachedFrames {
        CachedFrames {
            batches: 1,
            frames: vec![FrameObservation::unusable(1, "no face")],
            bytes,
            subject: subject.map(str::to_owned),
            used: 0,
            stored: std::time::Instant::now(),
        }
    }

    /// The frames cache holds at most its bytes (the least recently stored go first, a
    /// session larger than the whole bound is not kept), forgets a deleted subject's sessions
    /// and whatever is older than the TTL.
    #[test]
    fn the_frames_cache_is_bounded_and_forgets() {
        let mut c = FramesCache::default();
        let third = FRAMES_CACHE_BYTES / 3;
        c.put("a", cached(third, Some("s")));
        c.put("b", cached(third, None));
        c.put("c", cached(third, None));
        assert_eq!(c.bytes, 3 * third);
        // Re-stored, `a` is the most recent: `b` goes for `d`.
        let a = c.take("a").unwrap();
        c.put("a", a);
        c.put("d", cached(third, None));
        assert!(c.bytes <= FRAMES_CACHE_BYTES);
        assert!(c.entries.contains_key("a") && !c.entries.contains_key("b"));
        c.put("huge", cached(FRAMES_CACHE_BYTES + 1, None));
        assert!(!c.entries.contains_key("huge"));
        c.forget_subject("s");
        assert!(!c.entries.contains_key("a"));
        assert_eq!(c.bytes, c.entries.values().map(|e| e.bytes).sum::<usize>());
        c.expire(Duration::ZERO);
        assert!(c.entries.is_empty());
        assert_eq!(c.bytes, 0);
    }

    /// A session at the frame bound, every frame with both embedding models' values written
    /// at full length, fits the schema's 8 MiB check on the sealed column (migration 0010).
    #[test]
    fn a_session_at_the_frame_bound_fits_its_row() {
        use crate::vision::detect::{BoundingBox, Point};
        use crate::vision::embed::{EMBEDDING_DIM, Embedding, FACERES_DIM};
        let value = |k: usize| -0.012_345_67 - (k as f32 * 1e-9);
        let frame = |i: usize| FrameObservation {
            timestamp_ms: 1_000_000_000 + i as u64,
            received_ms: Some(1_000_000_000),
            face: Some(FaceObservation {
                bbox: BoundingBox {
                    x: 123.456_78,
                    y: 234.567_89,
                    width: 345.678_9,
                    height: 456.789_1,
                },
                landmarks: super::super::Landmarks68::new(
                    (0..68)
                        .map(|k| Point {
                            x: 123.456_78 + k as f32,
                            y: 234.567_89 + k as f32,
                        })
                        .collect(),
                )
                .unwrap(),
                eyes: Some(super::super::EyeState {
                    left_open: 0.123_456_78,
                    right_open: 0.987_654_3,
                }),
                embedding: Some(
                    Embedding::new((0..EMBEDDING_DIM).map(value).collect())
                        .unwrap()
                        .with_faceres((0..FACERES_DIM).map(value).collect())
                        .unwrap(),
                ),
                liveness: Some(0.123_456_78),
                quality: Some(0.123_456_78),
            }),
            unusable: None,
            fingerprint: Some(super::super::Fingerprint::try_from(vec![255u8; 256]).unwrap()),
        };
        let private = Private {
            frames: (0..crate::config::MAX_SESSION_FRAMES).map(frame).collect(),
            ..Private::default()
        };
        let json = serde_json::to_vec(&private).unwrap();
        // Sealed: 4 bytes per word of the length-prefixed bytes, plus the cipher's tag.
        let sealed = 4 * bytes_to_words(&json).len() + 64;
        assert!(sealed <= 8 * 1024 * 1024, "{sealed} bytes");
        // Each frame carries both models' values, packed (6144 bytes of base64 alone).
        let per_frame = json.len() / crate::config::MAX_SESSION_FRAMES;
        assert!((6_144..12_000).contains(&per_frame), "{per_frame}");
        // A batch row, at most 8 frames, fits its 1 MiB check (migration 0012) many times over.
        let batch: Vec<FrameObservation> = (0..MAX_FRAMES_PER_CALL).map(frame).collect();
        let json = serde_json::to_vec(&batch).unwrap();
        assert!(4 * bytes_to_words(&json).len() + 64 <= 1024 * 1024 / 8);
    }

    #[test]
    fn witnesses_are_sealed_with_the_probe_and_absent_from_older_sessions() {
        let e = crate::vision::embed::Embedding::new(vec![0.01; 128]).unwrap();
        let private = Private {
            frames: Vec::new(),
            probe: None,
            witnesses: vec![e.clone(), e.clone()],
            action_frames: vec![e],
            prints: vec![Fingerprint::try_from(vec![7u8; 256]).unwrap()],
        };
        let text = serde_json::to_string(&private).unwrap();
        let back: Private = serde_json::from_str(&text).unwrap();
        assert_eq!((back.witnesses.len(), back.action_frames.len()), (2, 1));
        assert_eq!(back.prints, private.prints);
        // A session sealed by the release before witnesses: none, the probe alone decides.
        let old: Private = serde_json::from_str(r#"{"frames":[],"probe":null}"#).unwrap();
        assert!(old.witnesses.is_empty() && old.action_frames.is_empty() && old.prints.is_empty());
    }

    #[tokio::test]
    async fn an_accepted_sessions_prints_are_sealed_to_its_subject_and_session() {
        let keys = TemplateKeys::parse(
            &crate::store::cipher::new_key_line("k1").unwrap(),
            std::path::Path::new("keys"),
        )
        .unwrap();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://127.0.0.1:1/none")
            .unwrap();
        let store = PgSessions::new(
            pool,
            keys,
            SessionLimits::default(),
            ChallengePolicy::default(),
        );
        let prints: Vec<Fingerprint> = (0..256u32)
            .map(|i| Fingerprint::try_from(vec![(i % 251) as u8; 256]).unwrap())
            .collect();
        let sealed = store.seal_prints("alice", "s1", &prints).unwrap();
        // 256 frames, the most a session holds, fit the table's 128 KiB check.
        assert!(
            sealed.ciphertext.len() <= 131_072,
            "{}",
            sealed.ciphertext.len()
        );
        assert_eq!(store.open_prints("alice", "s1", &sealed).unwrap(), prints);
        // Moved to another subject or session, the row does not open.
        assert!(store.open_prints("bob", "s1", &sealed).is_err());
        assert!(store.open_prints("alice", "s2", &sealed).is_err());
    }

    #[test]
    fn key_hashes_hide_the_key_id() {
        let h = key_hash("verify");
        assert_eq!(h.len(), 64);
        assert!(!h.contains("verify"));
        assert_ne!(h, key_hash("admin"));
    }
}
