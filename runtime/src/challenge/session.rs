//! Challenge sessions: the per-session state machine and the bounded in-memory registry the HTTP
//! API drives. Pure and synchronous (time is passed in), so every rule is unit-tested without a
//! server.
//!
//! A session is opened by one API key (and optionally bound to a subject), gets a random
//! challenge of 2–3 distinct actions from the OS CSPRNG, receives frame observations in batches,
//! is re-judged by [`evaluate`] after each batch, and ends `passed`, `failed` or `expired`. A
//! passed session can be consumed by one face decision, a verification or an identification
//! (single use; see [`SessionUse`]). Bounds: sessions holding a place at once (in progress, or
//! passed and unused; globally and per key), frames per session, one batch in flight per session;
//! ended sessions are kept as small tombstones, at most 4x the global bound, the oldest evicted
//! first. Only observations are kept (never images), and once a session ends only what a decision
//! needs from its best frame (embedding, quality) is kept. Expired sessions stay as small
//! tombstones for one more TTL (so late calls get 410 rather than 404) and are then swept.
//!
//! This registry keeps sessions in this replica's memory (the single-replica mode; a restart
//! loses open sessions). With a shared database, [`super::pg::PgSessions`] keeps them in
//! PostgreSQL instead; both implement [`super::store::SessionStore`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::checker::{
    ChallengeVerdict, FailReason, FrameFeedback, KeptForVerify, Outcome, PairsJudged, evaluate,
    evaluate_more, kept_for_verify,
};
use super::fingerprint::Fingerprint;
use super::replay::{AcceptedSession, Compared, ReplayRecord, Replayed};
use super::replay_file::ReplayJournal;
use super::{Action, ChallengePolicy, FrameObservation};
use crate::vision::embed::Embedding;

/// Bounds of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// How long a session lives after it is opened.
    pub ttl: Duration,
    /// Sessions alive at once on this replica.
    pub max_sessions: usize,
    /// Sessions alive at once per API key.
    pub max_per_key: usize,
    /// Frames one session accepts in all.
    pub max_frames: usize,
    /// Frames one call may carry.
    pub max_frames_per_call: usize,
    /// How long the frames of a subject's accepted sessions are remembered against replays
    /// ([`super::replay`]); zero turns the check off.
    pub replay_window: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(facekey_settings::defaults::SESSION_TTL_SECS),
            max_sessions: facekey_settings::defaults::MAX_SESSIONS,
            max_per_key: facekey_settings::defaults::MAX_SESSIONS_PER_KEY,
            max_frames: facekey_settings::defaults::SESSION_MAX_FRAMES,
            max_frames_per_call: MAX_FRAMES_PER_CALL,
            replay_window: Duration::from_secs(
                facekey_settings::defaults::SESSION_REPLAY_WINDOW_SECS,
            ),
        }
    }
}

impl SessionLimits {
    /// Whether a key holding `mine` of the `total` sessions that hold a place (counted `held`,
    /// e.g. "on this replica") may open one more. Beyond `max_sessions` it is 503; beyond
    /// `max_per_key`, or when the key already holds as many sessions as there are free places,
    /// 429. The last rule keeps the last free places for keys holding fewer, so that a handful of
    /// keys (leaked, or a client looping) cannot take every place from the rest: a key holding
    /// none gets a place while any is free, and keys together fill the last ones only by halves.
    pub fn admit_open(&self, total: usize, mine: usize, held: &str) -> Result<(), SessionError> {
        if total >= self.max_sessions {
            return Err(SessionError::TooManySessions {
                global: true,
                message: format!(
                    "{total} liveness sessions are open {held}, the most allowed \
                     (FACEKEY_MAX_SESSIONS); retry when some have ended"
                ),
            });
        }
        if mine >= self.max_per_key {
            return Err(SessionError::TooManySessions {
                global: false,
                message: format!(
                    "this API key has {mine} open liveness sessions, the most one key may hold \
                     (FACEKEY_MAX_SESSIONS_PER_KEY); finish or let them expire"
                ),
            });
        }
        let free = self.max_sessions - total;
        if mine >= free {
            return Err(SessionError::TooManySessions {
                global: false,
                message: format!(
                    "this API key has {mine} open liveness sessions and {free} more may open \
                     {held} (FACEKEY_MAX_SESSIONS): a key opens another only while more places \
                     are free than it holds, which keeps the last ones for other keys; finish or \
                     let some expire"
                ),
            });
        }
        Ok(())
    }
}

/// Frames one `POST .../frames` call may carry (the API contract: 1..=8).
pub const MAX_FRAMES_PER_CALL: usize = 8;

/// Where a session stands, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Waiting for frames.
    InProgress,
    /// Every action seen and every check held.
    Passed,
    /// A check failed, or the frames ran out.
    Failed,
    /// The session's time ran out before it passed (or before a passed session was used).
    Expired,
}

impl SessionState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }
}

/// Why a session operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No such session for this key (it may exist for another key: never revealed).
    #[error("no liveness session with this id for this API key")]
    NotFound,
    /// The session expired.
    #[error("the liveness session expired; open a new one")]
    Expired,
    /// Verify with a session that has not passed.
    #[error("the liveness session has not passed (state {0})")]
    NotPassed(&'static str),
    /// A session already used by a verification or an identification.
    #[error("the liveness session was already used by a verification or identification")]
    Used,
    /// Verify for another subject than the session was opened for.
    #[error("the liveness session was opened for another subject")]
    SubjectMismatch,
    /// Identify with a session opened for one subject, which decides about that subject alone.
    #[error(
        "the liveness session was opened for one subject and can only verify that subject; \
         open a session without a subject to identify"
    )]
    BoundToSubject,
    /// Another batch of frames for this session is being processed.
    #[error("another batch of frames for this session is still being processed")]
    Busy,
    /// The registry (`global`) or this key's share of it is full.
    #[error("{message}")]
    TooManySessions {
        /// The whole replica is full (503), rather than this key's share (429).
        global: bool,
        /// What is full.
        message: String,
    },
    /// The batch has too many frames, or the session's frame budget is spent.
    #[error("{0}")]
    TooManyFrames(String),
    /// The shared session store (PostgreSQL) cannot be reached: nothing was decided.
    #[error("the liveness session store is unavailable: {0}")]
    Unavailable(String),
    /// The shared session store failed otherwise (a query or a stored record is broken).
    #[error("liveness session store: {0}")]
    Backend(String),
}

/// What a new session tells the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Session id (128 random bits, hex).
    pub id: String,
    /// The actions to perform, in order.
    pub challenge: Vec<Action>,
    /// When it expires.
    pub expires_at: SystemTime,
    /// Frames it accepts in all.
    pub max_frames: usize,
}

/// A session's state as the API reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionView {
    /// Session id.
    pub id: String,
    /// State.
    pub state: SessionState,
    /// The subject it was opened for.
    pub subject: Option<String>,
    /// The challenge.
    pub challenge: Vec<Action>,
    /// Frames received so far.
    pub frames_received: usize,
    /// When it expires.
    pub expires_at: SystemTime,
    /// Whether a verification or identification consumed it.
    pub used: bool,
    /// The latest verdict (actions, reasons, diagnostics).
    pub verdict: ChallengeVerdict,
}

impl SessionView {
    /// `Some(true)` passed, `Some(false)` failed or expired before passing, `None` in progress.
    pub fn live(&self) -> Option<bool> {
        match self.state {
            SessionState::InProgress => None,
            SessionState::Passed => Some(true),
            SessionState::Failed => Some(false),
            SessionState::Expired => Some(self.verdict.outcome == Outcome::Passed),
        }
    }
}

/// A session that just ended: what metrics and the spoof alert need.
#[derive(Debug, Clone, PartialEq)]
pub struct Concluded {
    /// Session id.
    pub id: String,
    /// Passed or failed.
    pub outcome: Outcome,
    /// Why it failed.
    pub reasons: Vec<FailReason>,
    /// The subject it was opened for.
    pub subject: Option<String>,
    /// The liveness confidence.
    pub confidence: f32,
    /// Frames with a usable face (a failure without any is abandonment, not an attack).
    pub usable_frames: usize,
}

/// A session its client closed ([`Registry::close`]): what the abandonment count needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Whether it was still in progress (neither passed, failed nor counted as expired).
    pub in_progress: bool,
    /// Frames with a usable face.
    pub usable_frames: usize,
    /// The subject it was opened for.
    pub subject: Option<String>,
}

/// The one face decision a passed session is consumed for, which decides whether a session bound
/// to a subject may serve it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionUse<'a> {
    /// A verification of this subject (1:1): a session bound to another subject is refused.
    Verify(&'a str),
    /// An identification among every subject (1:N): only an unbound session serves it, since a
    /// bound one was opened to decide about its subject alone.
    Identify,
}

/// What a verification or identification takes from a passed session.
#[derive(Debug, Clone, PartialEq)]
pub struct PassedProbe {
    /// The best frame's embedding.
    pub embedding: Embedding,
    /// Embeddings of frames spread over the session ([`super::checker::witness_frames`]).
    pub witnesses: Vec<Embedding>,
    /// Embeddings of the frames that completed the actions. The verification's match is the
    /// worst of the probe's, the witnesses' typical one and the action frames' typical one.
    pub action_frames: Vec<Embedding>,
    /// The best frame's quality.
    pub quality: Option<f32>,
    /// The challenge confidence (the fusion's liveness feature).
    pub confidence: f32,
    /// The challenge that passed.
    pub challenge: Vec<Action>,
    /// The fingerprints of the session's frames, checked against and then added to the record
    /// of the subject's accepted sessions ([`super::replay`]).
    pub prints: Vec<Fingerprint>,
}

impl PassedProbe {
    /// The probe what a passed session kept gives (`None` without an embedding). Both
    /// session stores build it here, so a field added to the probe is filled in one place.
    pub fn from_kept(kept: KeptForVerify, confidence: f32, challenge: Vec<Action>) -> Option<Self> {
        Some(Self {
            embedding: kept.probe.embedding?,
            witnesses: kept.witnesses,
            action_frames: kept.action_frames,
            quality: kept.probe.quality,
            confidence,
            challenge,
            prints: kept.prints,
        })
    }
}

/// The result of adding a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchResult {
    /// The session after the batch.
    pub view: SessionView,
    /// Feedback for this batch's frames (indices in the whole session).
    pub frames: Vec<FrameFeedback>,
    /// Set when the batch ended the session.
    pub concluded: Option<Concluded>,
}

#[derive(Debug)]
struct Session {
    key: String,
    subject: Option<String>,
    challenge: Vec<Action>,
    opened: Instant,
    expires: Instant,
    expires_at: SystemTime,
    frames: Vec<FrameObservation>,
    frames_received: usize,
    verdict: ChallengeVerdict,
    busy: bool,
    /// A batch is being judged outside the registry lock, the session's frames taken out
    /// ([`Registry::add_frames`]): no other batch is applied meanwhile, whatever `busy` says.
    judging: bool,
    used: bool,
    expired: bool,
    /// Concluded `expired` by a client's call before the sweeper saw it: the next sweep reports
    /// it (metrics, the abandonment line) as if it had expired it, and a close counts it.
    unreported_expiry: bool,
    /// What verify needs once passed, until a verification takes it.
    kept: Option<KeptForVerify>,
}

impl Session {
    /// Whether the session counts against the bounds: in progress, or passed and not yet used.
    fn holds_place(&self) -> bool {
        !self.expired
            && match self.verdict.outcome {
                Outcome::InProgress => true,
                Outcome::Passed => !self.used,
                Outcome::Failed => false,
            }
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

    fn view(&self, id: &str) -> SessionView {
        SessionView {
            id: id.to_owned(),
            state: self.state(),
            subject: self.subject.clone(),
            challenge: self.challenge.clone(),
            frames_received: self.frames_received,
            expires_at: self.expires_at,
            used: self.used,
            verdict: self.verdict.clone(),
        }
    }

    /// Keeps only what verify needs once the session has ended.
    fn trim(&mut self) {
        if self.kept.is_none() {
            self.kept = kept_for_verify(&self.verdict, &self.frames);
        }
        self.frames = Vec::new();
    }

    /// Forgets what verify needed (used, or expired).
    fn drop_probe(&mut self) {
        self.kept = None;
    }

    fn concluded(&self, id: &str) -> Concluded {
        Concluded {
            id: id.to_owned(),
            outcome: self.verdict.outcome,
            reasons: self.verdict.reasons.clone(),
            subject: self.subject.clone(),
            confidence: self.verdict.confidence().unwrap_or(0.0),
            usable_frames: self.verdict.usable_frames,
        }
    }
}

/// A random challenge of 2 or 3 distinct actions from the OS CSPRNG.
pub fn random_challenge() -> Result<Vec<Action>, getrandom::Error> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)?;
    let len = 2 + usize::from(bytes[0] & 1);
    let mut pool: Vec<Action> = Action::ALL.to_vec();
    let mut out = Vec::with_capacity(len);
    for b in &bytes[1..=len] {
        // Modulo bias over 5 or fewer items from a byte is < 2 %, irrelevant for a challenge.
        let i = usize::from(*b) % pool.len();
        out.push(pool.swap_remove(i));
    }
    Ok(out)
}

/// Every challenge [`random_challenge`] can draw, two-action ones first after their own first
/// two actions: each ordered choice of 2 or 3 distinct actions, 20 + 60.
pub fn every_challenge() -> Vec<Vec<Action>> {
    let mut out = Vec::with_capacity(80);
    for a in Action::ALL {
        for b in Action::ALL.into_iter().filter(|&b| b != a) {
            out.push(vec![a, b]);
            for c in Action::ALL.into_iter().filter(|&c| c != a && c != b) {
                out.push(vec![a, b, c]);
            }
        }
    }
    out
}

/// Length of a session id ([`new_id`]): 128 bits as lowercase hex.
const ID_LEN: usize = 32;

/// A session id: 128 random bits as hex.
pub(crate) fn new_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// `NotFound` unless `id` has the form of a session id ([`new_id`]: 32 lowercase hex digits).
/// Both stores check it before looking a session up, so an id no session can have is
/// unknown without a lookup, and one the database cannot even take (PostgreSQL refuses a NUL
/// byte in a `text` parameter, which would be a 500) never reaches it.
pub(crate) fn check_id(id: &str) -> Result<(), SessionError> {
    let well_formed =
        id.len() == ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if well_formed {
        Ok(())
    } else {
        Err(SessionError::NotFound)
    }
}

/// How long a deleted subject is remembered as deleted, so that a verification that read its
/// templates before the deletion does not bring its replay record back: longer than any request
/// may run (`FACEKEY_REQUEST_TIMEOUT_SECS` is at most 300 s).
const DELETED_FOR: Duration = Duration::from_secs(600);

/// At most this many deleted subjects are remembered; past it the oldest is dropped (the race
/// it guards is a request's length, not ten minutes of mass deletion).
const DELETED_MAX: usize = 4096;

/// The replay record, and in the embedded mode the journal that keeps it across restarts.
#[derive(Debug, Default)]
struct Replays {
    record: ReplayRecord,
    journal: Option<ReplayJournal>,
    /// Subjects deleted in the last [`DELETED_FOR`], with when. The PostgreSQL store holds the
    /// subject's row while it writes instead.
    deleted: HashMap<String, Instant>,
}

impl Replays {
    /// [`ReplayRecord::remember_unless_replayed`], written to the journal when remembered.
    /// Subjects deleted since the caller read their templates are left out: the session is
    /// neither compared with nor remembered for them (a deleted subject's record is gone).
    fn remember_unless_replayed(
        &mut self,
        checked: &[Compared],
        session: &str,
        prints: Vec<Fingerprint>,
        window: Duration,
        now: Instant,
    ) -> Option<(String, Replayed)> {
        let living: Vec<Compared> = checked
            .iter()
            .filter(|c| !self.deleted.contains_key(&c.subject))
            .cloned()
            .collect();
        if living.is_empty() {
            return None;
        }
        let kept = self.journal.is_some().then(|| prints.clone());
        let found = self
            .record
            .remember_unless_replayed(&living, session, prints, window, now);
        if let (None, Some(journal), Some(prints)) = (&found, &mut self.journal, kept)
            && !window.is_zero()
            && !prints.is_empty()
        {
            let subjects: Vec<&str> = living.iter().map(|c| c.subject.as_str()).collect();
            journal.remembered(&subjects, session, &prints, &self.record);
        }
        found
    }

    /// Forgets `subject`'s sessions, in the journal too, and remembers it deleted for
    /// [`DELETED_FOR`].
    fn forget(&mut self, subject: &str, now: Instant) {
        self.deleted
            .retain(|_, at| now.saturating_duration_since(*at) < DELETED_FOR);
        if !self.deleted.contains_key(subject)
            && self.deleted.len() >= DELETED_MAX
            && let Some(oldest) = self
                .deleted
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(s, _)| s.clone())
        {
            self.deleted.remove(&oldest);
        }
        self.deleted.insert(subject.to_owned(), now);
        if self.record.forget(subject) > 0
            && let Some(journal) = &mut self.journal
        {
            journal.forgotten(subject, &self.record);
        }
    }
}

fn lock_record(record: &Mutex<Replays>) -> std::sync::MutexGuard<'_, Replays> {
    record
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The bounded registry of this replica's sessions.
#[derive(Debug)]
pub struct Registry {
    limits: SessionLimits,
    policy: ChallengePolicy,
    sessions: Mutex<HashMap<String, Session>>,
    /// The frames of accepted sessions, per subject, against replays (shared with the blocking
    /// thread that compares and remembers under its lock).
    replays: Arc<Mutex<Replays>>,
}

impl Registry {
    /// An empty registry.
    pub fn new(limits: SessionLimits, policy: ChallengePolicy) -> Self {
        Self {
            limits,
            policy,
            sessions: Mutex::new(HashMap::new()),
            replays: Arc::default(),
        }
    }

    /// An empty registry whose replay record starts as `record` and is kept in `journal`
    /// ([`ReplayJournal::open`]: the embedded mode, across restarts).
    pub fn with_journal(
        limits: SessionLimits,
        policy: ChallengePolicy,
        journal: ReplayJournal,
        record: ReplayRecord,
    ) -> Self {
        Self {
            replays: Arc::new(Mutex::new(Replays {
                record,
                journal: Some(journal),
                deleted: HashMap::new(),
            })),
            ..Self::new(limits, policy)
        }
    }

    /// Runs `f` on the replay record (and journal) under its lock, on a blocking thread: a
    /// writer may hold the lock across its journal's sync, and a comparison under it takes
    /// milliseconds. `doing` names the step in the error of a task that panicked.
    async fn with_replays<T: Send + 'static>(
        &self,
        doing: &'static str,
        f: impl FnOnce(&mut Replays, Duration) -> T + Send + 'static,
    ) -> Result<T, SessionError> {
        let replays = Arc::clone(&self.replays);
        let window = self.limits.replay_window;
        tokio::task::spawn_blocking(move || f(&mut lock_record(&replays), window))
            .await
            .map_err(|e| SessionError::Backend(format!("{doing}: {e}")))
    }

    /// `subject`'s accepted sessions within the replay window, most recent first
    /// ([`super::replay`]): a copy, compared outside the lock.
    pub async fn accepted_sessions(
        &self,
        subject: &str,
        now: Instant,
    ) -> Result<Vec<AcceptedSession>, SessionError> {
        let subject = subject.to_owned();
        self.with_replays("reading the replay record", move |r, window| {
            r.record.accepted(&subject, window, now)
        })
        .await
    }

    /// Forgets the accepted sessions past the replay window.
    pub async fn sweep_replays(&self, now: Instant) -> Result<(), SessionError> {
        self.with_replays("sweeping the replay record", move |r, window| {
            r.record.sweep(window, now)
        })
        .await
    }

    /// Remembers the frames of `session`, just accepted for the subjects `checked` names, for
    /// the replay window, unless they repeat a session of one of them remembered since the caller
    /// compared them ([`ReplayRecord::remember_unless_replayed`]), which is given.
    pub async fn remember_verified(
        &self,
        checked: Vec<Compared>,
        session: String,
        prints: Vec<Fingerprint>,
        now: Instant,
    ) -> Result<Option<(String, Replayed)>, SessionError> {
        self.with_replays("the replay comparison failed", move |r, window| {
            r.remember_unless_replayed(&checked, &session, prints, window, now)
        })
        .await
    }

    /// The bounds in force.
    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// The checker's thresholds in force.
    pub fn policy(&self) -> &ChallengePolicy {
        &self.policy
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Deletes the sessions bound to `subject` (see [`super::store::SessionStore::forget_subject`]),
    /// and its replay record (in the journal too: a write, on a blocking thread); returns how
    /// many sessions.
    pub async fn forget_subject(&self, subject: &str) -> Result<usize, SessionError> {
        let forgotten = subject.to_owned();
        let now = Instant::now();
        self.with_replays("forgetting the replay record", move |r, _| {
            r.forget(&forgotten, now)
        })
        .await?;
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, s| s.subject.as_deref() != Some(subject));
        Ok(before - map.len())
    }

    /// Removes `key`'s session `id` at its client's request, with what it holds (observations,
    /// probe), whatever its state: its place is free at once.
    pub fn close(&self, key: &str, id: &str) -> Result<Closed, SessionError> {
        check_id(id)?;
        let mut map = self.lock();
        if map.get(id).is_none_or(|s| s.key != key) {
            return Err(SessionError::NotFound);
        }
        let s = map.remove(id).ok_or(SessionError::NotFound)?;
        Ok(Closed {
            // Expired by a read and not reported yet: counted here, or never.
            in_progress: s.verdict.outcome == Outcome::InProgress || s.unreported_expiry,
            usable_frames: s.verdict.usable_frames,
            subject: s.subject,
        })
    }

    /// Sessions holding a place: in progress, or passed and not yet used.
    pub fn active(&self) -> usize {
        self.lock().values().filter(|s| s.holds_place()).count()
    }

    fn evict_tombstones(map: &mut HashMap<String, Session>, max_entries: usize) {
        if map.len() < max_entries {
            return;
        }
        let mut ended: Vec<(Instant, String)> = map
            .iter()
            .filter(|(_, s)| !s.holds_place() && !s.unreported_expiry)
            .map(|(id, s)| (s.expires, id.clone()))
            .collect();
        ended.sort();
        let excess = map.len() + 1 - max_entries;
        for (_, id) in ended.into_iter().take(excess) {
            map.remove(&id);
        }
    }

    /// Marks sessions past their time expired (returning those that had not ended, for
    /// metrics) and forgets tombstones older than one more TTL.
    pub fn sweep(&self, now: Instant) -> Vec<Concluded> {
        let mut map = self.lock();
        Self::sweep_locked(&mut map, now, self.limits.ttl)
    }

    fn sweep_locked(
        map: &mut HashMap<String, Session>,
        now: Instant,
        ttl: Duration,
    ) -> Vec<Concluded> {
        let mut ended = Vec::new();
        for (id, s) in map.iter_mut() {
            if !s.expired && now >= s.expires {
                s.expired = true;
                if s.verdict.outcome == Outcome::InProgress {
                    s.verdict.conclude(FailReason::Expired);
                    ended.push(s.concluded(id));
                }
                s.trim();
                s.drop_probe();
            } else if s.unreported_expiry {
                s.unreported_expiry = false;
                ended.push(s.concluded(id));
            }
        }
        map.retain(|_, s| now < s.expires + ttl);
        ended
    }

    /// Opens a session for `key`, optionally bound to `subject`. Expired sessions are swept
    /// first (returned for metrics).
    pub fn open(
        &self,
        key: &str,
        subject: Option<String>,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(Opened, Vec<Concluded>), SessionError> {
        let no_randomness = |e: getrandom::Error| SessionError::TooManySessions {
            global: true,
            message: format!("the OS random source failed: {e}"),
        };
        let challenge = random_challenge().map_err(no_randomness)?;
        let id = new_id().map_err(no_randomness)?;
        let mut map = self.lock();
        let ended = Self::sweep_locked(&mut map, now, self.limits.ttl);
        // Ended sessions (failed, used, expired) keep no place but stay as small tombstones;
        // beyond 4x the bound the oldest of them go first, so the map stays bounded.
        Self::evict_tombstones(&mut map, 4 * self.limits.max_sessions.max(1));
        let holding = map.values().filter(|s| s.holds_place());
        let (total, mine) =
            holding.fold((0, 0), |(t, m), s| (t + 1, m + usize::from(s.key == key)));
        self.limits.admit_open(total, mine, "on this replica")?;
        let expires_at = wall + self.limits.ttl;
        let empty = evaluate(&challenge, &[], &self.policy);
        map.insert(
            id.clone(),
            Session {
                key: key.to_owned(),
                subject,
                challenge: challenge.clone(),
                opened: now,
                expires: now + self.limits.ttl,
                expires_at,
                frames: Vec::new(),
                frames_received: 0,
                verdict: empty,
                busy: false,
                judging: false,
                used: false,
                expired: false,
                unreported_expiry: false,
                kept: None,
            },
        );
        Ok((
            Opened {
                id,
                challenge,
                expires_at,
                max_frames: self.limits.max_frames,
            },
            ended,
        ))
    }

    /// The session for `key`, marked expired if its time is up (one in progress is left for
    /// the next sweep to report: [`Session::unreported_expiry`]).
    fn get<'a>(
        map: &'a mut HashMap<String, Session>,
        key: &str,
        id: &str,
        now: Instant,
    ) -> Result<&'a mut Session, SessionError> {
        check_id(id)?;
        let s = map
            .get_mut(id)
            .filter(|s| s.key == key)
            .ok_or(SessionError::NotFound)?;
        if !s.expired && now >= s.expires {
            s.expired = true;
            if s.verdict.outcome == Outcome::InProgress {
                s.unreported_expiry = true;
            }
            s.verdict.conclude(FailReason::Expired);
            s.trim();
            s.drop_probe();
        }
        Ok(s)
    }

    /// The session's state.
    pub fn view(&self, key: &str, id: &str, now: Instant) -> Result<SessionView, SessionError> {
        let mut map = self.lock();
        Ok(Self::get(&mut map, key, id, now)?.view(id))
    }

    /// Reserves the session for a batch of `n` frames: checks the per-call and per-session
    /// bounds and that no other batch is in flight. Returns `Ok(None)` when the session has
    /// already ended (the caller answers its state without processing frames), else the
    /// milliseconds since it opened. Pair with [`Registry::add_frames`] or
    /// [`Registry::release`].
    pub fn begin_batch(
        &self,
        key: &str,
        id: &str,
        n: usize,
        now: Instant,
    ) -> Result<Option<SessionView>, SessionError> {
        let limits = self.limits;
        let mut map = self.lock();
        let s = Self::get(&mut map, key, id, now)?;
        if s.expired {
            return Err(SessionError::Expired);
        }
        if s.verdict.outcome != Outcome::InProgress {
            return Ok(Some(s.view(id)));
        }
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
        if s.busy || s.judging {
            return Err(SessionError::Busy);
        }
        s.busy = true;
        Ok(None)
    }

    /// Releases a reservation whose frames could not be processed (bad input, overload).
    pub fn release(&self, key: &str, id: &str) {
        if check_id(id).is_err() {
            return;
        }
        if let Some(s) = self.lock().get_mut(id).filter(|s| s.key == key) {
            s.busy = false;
        }
    }

    /// Adds a reserved batch's observations (receipt time stamped here), re-judges the
    /// session, ends it when passed, failed or out of frames, and releases the reservation.
    pub fn add_frames(
        &self,
        key: &str,
        id: &str,
        mut batch: Vec<FrameObservation>,
        now: Instant,
    ) -> Result<BatchResult, SessionError> {
        let limits = self.limits;
        // Under the lock: the checks, and what judging needs. The session's frames are taken
        // out while they are judged (`judging` keeps every other batch away meanwhile), so the
        // registry lock is not held while the pairs are compared.
        let (challenge, mut frames, judged) = {
            let mut map = self.lock();
            let s = Self::get(&mut map, key, id, now)?;
            if s.judging {
                return Err(SessionError::Busy);
            }
            s.busy = false;
            if s.expired {
                return Err(SessionError::Expired);
            }
            if s.verdict.outcome != Outcome::InProgress {
                return Ok(BatchResult {
                    view: s.view(id),
                    frames: Vec::new(),
                    concluded: None,
                });
            }
            let received = u64::try_from(now.saturating_duration_since(s.opened).as_millis())
                .unwrap_or(u64::MAX);
            batch.truncate(limits.max_frames.saturating_sub(s.frames_received));
            for f in &mut batch {
                f.received_ms = Some(received);
            }
            s.judging = true;
            let judged = PairsJudged::by(&s.verdict, s.frames.len());
            (s.challenge.clone(), std::mem::take(&mut s.frames), judged)
        };
        let first = frames.len();
        let added = batch.len();
        frames.extend(batch);
        let judging = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            evaluate_more(&challenge, &frames, &self.policy, judged)
        }));
        let mut map = self.lock();
        // Gone meanwhile (closed, or its subject deleted): so is the batch.
        let s = Self::get(&mut map, key, id, now)?;
        s.judging = false;
        let mut verdict = match judging {
            Ok(verdict) => verdict,
            Err(panic) => {
                // The session as it was before the batch, then the panic on its way.
                frames.truncate(first);
                s.frames = frames;
                drop(map);
                std::panic::resume_unwind(panic);
            }
        };
        if s.expired {
            // Swept meanwhile: ended as expired, with nothing to keep.
            return Err(SessionError::Expired);
        }
        s.frames = frames;
        s.frames_received += added;
        if verdict.outcome == Outcome::InProgress && s.frames_received >= limits.max_frames {
            verdict.conclude(FailReason::ChallengeIncomplete);
        }
        let feedback = verdict.frames.get(first..).unwrap_or_default().to_vec();
        s.verdict = verdict;
        let concluded = (s.verdict.outcome != Outcome::InProgress).then(|| {
            s.trim();
            s.concluded(id)
        });
        Ok(BatchResult {
            view: s.view(id),
            frames: feedback,
            concluded,
        })
    }

    /// Consumes a passed session for one face decision (`purpose`): the best frame's
    /// embedding and quality and the challenge confidence. Any later use is refused.
    pub fn take_probe(
        &self,
        key: &str,
        id: &str,
        purpose: SessionUse<'_>,
        now: Instant,
    ) -> Result<PassedProbe, SessionError> {
        let mut map = self.lock();
        let s = Self::get(&mut map, key, id, now)?;
        usable_for(
            s.expired,
            s.used,
            s.verdict.outcome,
            s.state().as_str(),
            s.subject.as_deref(),
            purpose,
        )?;
        let confidence = s.verdict.confidence().unwrap_or(0.0);
        let probe = s
            .kept
            .take()
            .and_then(|kept| PassedProbe::from_kept(kept, confidence, s.challenge.clone()))
            .ok_or(SessionError::NotPassed("passed"))?;
        s.used = true;
        s.drop_probe();
        Ok(probe)
    }

    /// Test helper: the challenge of a session (to script a passing sequence).
    #[doc(hidden)]
    pub fn challenge_of(&self, id: &str) -> Option<Vec<Action>> {
        self.lock().get(id).map(|s| s.challenge.clone())
    }
}

/// The rules for deciding with a session, the same in every store: not expired, not used yet
/// (single use), passed, and opened for the verified subject or for none (an identification
/// takes only a session opened for none). `state` names the session's state for the not-passed
/// error.
pub(crate) fn usable_for(
    expired: bool,
    used: bool,
    outcome: Outcome,
    state: &'static str,
    bound_subject: Option<&str>,
    purpose: SessionUse<'_>,
) -> Result<(), SessionError> {
    if expired {
        return Err(SessionError::Expired);
    }
    if used {
        return Err(SessionError::Used);
    }
    if outcome != Outcome::Passed {
        return Err(SessionError::NotPassed(state));
    }
    match (bound_subject, purpose) {
        (Some(bound), SessionUse::Verify(subject)) if bound != subject => {
            Err(SessionError::SubjectMismatch)
        }
        (Some(_), SessionUse::Identify) => Err(SessionError::BoundToSubject),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::signals::tests::face;
    use super::super::{EyeState, FaceObservation, Fingerprint};
    use super::*;
    use crate::vision::detect::BoundingBox;

    fn limits() -> SessionLimits {
        SessionLimits {
            ttl: Duration::from_secs(60),
            max_sessions: 4,
            max_per_key: 2,
            max_frames: 12,
            max_frames_per_call: 8,
            replay_window: Duration::from_secs(600),
        }
    }

    fn reg() -> Registry {
        Registry::new(limits(), ChallengePolicy::default())
    }

    /// A frame performing `action` at `phase` 0 (neutral), 1 (peak) or 2 (back to neutral).
    fn frame(i: usize, action: Option<Action>, phase: usize) -> FrameObservation {
        let peak = phase == 1;
        let (mut yaw, mut up, mut mouth, mut eyes) = (0.0, 0.0, 0.0, 0.95);
        match (action, peak) {
            (Some(Action::TurnLeft), true) => yaw = 0.2,
            (Some(Action::TurnRight), true) => yaw = -0.2,
            (Some(Action::LookUp), true) => up = 0.3,
            (Some(Action::OpenMouth), true) => mouth = 20.0,
            (Some(Action::Blink), true) => eyes = 0.05,
            _ => {}
        }
        FrameObservation {
            timestamp_ms: 10_000 + 100 * i as u64,
            received_ms: None,
            face: Some(FaceObservation {
                bbox: BoundingBox {
                    x: 0.0,
                    y: 0.0,
                    width: 100.0,
                    height: 100.0,
                },
                landmarks: face(yaw, up, mouth, 1.0),
                eyes: Some(EyeState {
                    left_open: eyes,
                    right_open: eyes,
                }),
                embedding: Some(
                    Embedding::new((0..128).map(|k| (k as f32 * 0.1).sin() * 0.08).collect())
                        .unwrap(),
                ),
                liveness: Some(0.7),
                quality: Some(0.8),
            }),
            unusable: None,
            fingerprint: Some(
                Fingerprint::try_from(
                    (0..256)
                        .map(|k| ((k + i * 31) % 256) as u8)
                        .collect::<Vec<_>>(),
                )
                .unwrap(),
            ),
        }
    }

    /// Frames performing `challenge`: neutral, then peak and back for each action.
    fn performance(challenge: &[Action]) -> Vec<FrameObservation> {
        let mut out = vec![frame(0, None, 0)];
        for &a in challenge {
            for phase in [1, 2] {
                let i = out.len();
                out.push(frame(i, Some(a), phase));
            }
        }
        out
    }

    #[test]
    fn challenges_are_random_distinct_and_short() {
        let mut seen = std::collections::HashSet::new();
        let every = every_challenge();
        assert_eq!(every.len(), 80);
        for _ in 0..200 {
            let c = random_challenge().unwrap();
            assert!(every.contains(&c), "{c:?}");
            assert!((2..=3).contains(&c.len()));
            let set: std::collections::HashSet<_> = c.iter().collect();
            assert_eq!(set.len(), c.len());
            seen.insert(c);
        }
        assert!(
            seen.len() > 20,
            "only {} distinct challenges in 200",
            seen.len()
        );
    }

    /// A deleted subject's sessions go with it (frames and probe), at once; others stay.
    #[tokio::test]
    async fn the_sessions_of_a_deleted_subject_are_deleted() {
        let r = reg();
        let t0 = Instant::now();
        let open = |key: &str, subject: Option<&str>| {
            r.open(key, subject.map(str::to_owned), t0, SystemTime::now())
                .unwrap()
                .0
                .id
        };
        let alice = [open("k1", Some("alice")), open("k2", Some("alice"))];
        let bob = open("k1", Some("bob"));
        // The last place goes to a key holding none.
        let unbound = open("k3", None);
        assert_eq!(r.forget_subject("alice").await.unwrap(), 2);
        for id in &alice {
            assert!(matches!(
                r.view("k1", id, t0).or_else(|_| r.view("k2", id, t0)),
                Err(SessionError::NotFound)
            ));
        }
        assert!(r.view("k1", &bob, t0).is_ok());
        assert!(r.view("k3", &unbound, t0).is_ok());
        assert_eq!(r.forget_subject("alice").await.unwrap(), 0);
    }

    /// A verification that read a subject's templates before its deletion and remembers its
    /// session after it does not bring the deleted subject's record back; a subject still
    /// enrolled beside it is remembered, and the deleted mark ends after [`DELETED_FOR`].
    #[tokio::test]
    async fn a_session_remembered_after_its_subject_was_deleted_is_not_kept() {
        let r = reg();
        let t0 = Instant::now();
        let prints: Vec<Fingerprint> = (0..8)
            .map(|i| {
                Fingerprint::try_from(
                    (0..256)
                        .map(|k| ((k + i * 37) % 256) as u8)
                        .collect::<Vec<_>>(),
                )
                .unwrap()
            })
            .collect();
        let compared = |subject: &str| Compared {
            subject: subject.to_owned(),
            sessions: Vec::new(),
        };
        r.forget_subject("gone").await.unwrap();
        let found = r
            .remember_verified(
                vec![compared("gone"), compared("kept")],
                "s1".to_owned(),
                prints.clone(),
                t0,
            )
            .await
            .unwrap();
        assert!(found.is_none());
        assert!(r.accepted_sessions("gone", t0).await.unwrap().is_empty());
        assert_eq!(r.accepted_sessions("kept", t0).await.unwrap().len(), 1);
        // Long after the deletion the mark is gone (a subject id is never reused: this bounds
        // what the marks hold, it does not matter to a living subject).
        let later = t0 + DELETED_FOR + Duration::from_secs(1);
        r.forget_subject("other").await.unwrap();
        let mut replays = lock_record(&r.replays);
        replays.forget("other", later);
        assert!(!replays.deleted.contains_key("gone"));
        assert!(replays.deleted.contains_key("other"));
    }

    #[test]
    fn a_performed_challenge_passes_and_verifies_once() {
        let r = reg();
        let t0 = Instant::now();
        let (o, _) = r
            .open("k1", Some("alice".into()), t0, SystemTime::now())
            .unwrap();
        assert_eq!(o.id.len(), 32);
        let frames = performance(&o.challenge);
        let mut result = None;
        for chunk in frames.chunks(3) {
            // The session may pass before the last chunk: later frames are not processed.
            if r.begin_batch("k1", &o.id, chunk.len(), t0)
                .unwrap()
                .is_some()
            {
                break;
            }
            result = Some(
                r.add_frames("k1", &o.id, chunk.to_vec(), t0 + Duration::from_secs(1))
                    .unwrap(),
            );
        }
        let result = result.unwrap();
        assert_eq!(
            result.view.state,
            SessionState::Passed,
            "{:?}",
            result.view.verdict
        );
        assert_eq!(result.concluded.as_ref().unwrap().outcome, Outcome::Passed);
        assert_eq!(result.view.live(), Some(true));
        // Another key cannot see or use it.
        assert_eq!(r.view("k2", &o.id, t0), Err(SessionError::NotFound));
        assert_eq!(
            r.take_probe("k2", &o.id, SessionUse::Verify("alice"), t0),
            Err(SessionError::NotFound)
        );
        // Bound to alice: neither a verification of bob nor an identification takes it, and
        // neither refusal consumes it.
        assert_eq!(
            r.take_probe("k1", &o.id, SessionUse::Verify("bob"), t0),
            Err(SessionError::SubjectMismatch)
        );
        assert_eq!(
            r.take_probe("k1", &o.id, SessionUse::Identify, t0),
            Err(SessionError::BoundToSubject)
        );
        let probe = r
            .take_probe("k1", &o.id, SessionUse::Verify("alice"), t0)
            .unwrap();
        assert!(probe.confidence > 0.7);
        assert_eq!(probe.quality, Some(0.8));
        assert_eq!(
            r.take_probe("k1", &o.id, SessionUse::Verify("alice"), t0),
            Err(SessionError::Used)
        );
        assert!(r.view("k1", &o.id, t0).unwrap().used);
        // Frames after the end are not processed.
        assert!(r.begin_batch("k1", &o.id, 1, t0).unwrap().is_some());
    }

    #[test]
    fn bounds_on_sessions_and_frames() {
        let r = reg();
        let t0 = Instant::now();
        let now = SystemTime::now();
        let (a, _) = r.open("k1", None, t0, now).unwrap();
        r.open("k1", None, t0, now).unwrap();
        assert!(matches!(
            r.open("k1", None, t0, now),
            Err(SessionError::TooManySessions { global: false, .. })
        ));
        r.open("k2", None, t0, now).unwrap();
        r.open("k3", None, t0, now).unwrap();
        assert!(matches!(
            r.open("k4", None, t0, now),
            Err(SessionError::TooManySessions { global: true, .. })
        ));
        assert_eq!(r.active(), 4);
        // Per call and per session.
        assert!(matches!(
            r.begin_batch("k1", &a.id, 9, t0),
            Err(SessionError::TooManyFrames(_))
        ));
        assert!(matches!(
            r.begin_batch("k1", &a.id, 0, t0),
            Err(SessionError::TooManyFrames(_))
        ));
        assert!(r.begin_batch("k1", &a.id, 8, t0).unwrap().is_none());
        assert_eq!(r.begin_batch("k1", &a.id, 1, t0), Err(SessionError::Busy));
        // A static face for 12 frames: the budget runs out and the session fails.
        let still: Vec<_> = (0..8).map(|i| frame(i, None, 0)).collect();
        let res = r
            .add_frames("k1", &a.id, still, t0 + Duration::from_secs(1))
            .unwrap();
        assert_eq!(res.view.state, SessionState::InProgress);
        assert_eq!(res.frames.len(), 8);
        assert!(matches!(
            r.begin_batch("k1", &a.id, 5, t0),
            Err(SessionError::TooManyFrames(_))
        ));
        assert!(r.begin_batch("k1", &a.id, 4, t0).unwrap().is_none());
        let more: Vec<_> = (8..12).map(|i| frame(i, None, 0)).collect();
        let res = r
            .add_frames("k1", &a.id, more, t0 + Duration::from_secs(2))
            .unwrap();
        assert_eq!(res.view.state, SessionState::Failed);
        assert_eq!(
            res.concluded.unwrap().reasons,
            vec![FailReason::ChallengeIncomplete]
        );
        // A failed session holds no place: one is free again (for a key holding none, since k1
        // still holds one and only one is free).
        assert_eq!(r.active(), 3);
        r.open("k4", None, t0, now).unwrap();
        assert_eq!(res.frames[0].index, 8);
        assert_eq!(
            r.take_probe("k1", &a.id, SessionUse::Verify("x"), t0),
            Err(SessionError::NotPassed("failed"))
        );
    }

    #[test]
    fn expiry_sweeps_and_tombstones() {
        let r = reg();
        let t0 = Instant::now();
        let (a, _) = r.open("k1", None, t0, SystemTime::now()).unwrap();
        r.begin_batch("k1", &a.id, 1, t0).unwrap();
        r.add_frames("k1", &a.id, vec![frame(0, None, 0)], t0)
            .unwrap();
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            r.begin_batch("k1", &a.id, 1, later),
            Err(SessionError::Expired)
        );
        assert_eq!(
            r.view("k1", &a.id, later).unwrap().state,
            SessionState::Expired
        );
        assert_eq!(r.view("k1", &a.id, later).unwrap().live(), Some(false));
        assert_eq!(
            r.take_probe("k1", &a.id, SessionUse::Verify("x"), later),
            Err(SessionError::Expired)
        );
        assert_eq!(r.active(), 0);
        // Expired sessions free their places; tombstones go after one more TTL.
        let (b, _) = r.open("k1", None, later, SystemTime::now()).unwrap();
        let ended = r.sweep(later + Duration::from_secs(61));
        assert_eq!(ended.len(), 1, "b expired in progress");
        assert_eq!(ended[0].id, b.id);
        assert_eq!(ended[0].reasons, vec![FailReason::Expired]);
        assert_eq!(
            r.view("k1", &a.id, later + Duration::from_secs(61)),
            Err(SessionError::NotFound)
        );
    }

    /// A client that reads (or feeds, or verifies with) its session after it expired, before
    /// the sweeper's tick, does not hide the expiry from the metrics: the next sweep reports it
    /// once, and a close before that sweep counts it as closed in progress.
    #[test]
    fn an_expiry_a_client_sees_first_is_still_reported() {
        let r = reg();
        let t0 = Instant::now();
        let (a, _) = r.open("k1", None, t0, SystemTime::now()).unwrap();
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            r.view("k1", &a.id, later).unwrap().state,
            SessionState::Expired
        );
        let ended = r.sweep(later);
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert_eq!(ended[0].id, a.id);
        assert_eq!(ended[0].reasons, vec![FailReason::Expired]);
        assert!(r.sweep(later).is_empty(), "reported once");

        let (b, _) = r.open("k1", None, later, SystemTime::now()).unwrap();
        let end = later + Duration::from_secs(61);
        assert_eq!(
            r.begin_batch("k1", &b.id, 1, end),
            Err(SessionError::Expired)
        );
        assert!(r.close("k1", &b.id).unwrap().in_progress);
        assert!(r.sweep(end).is_empty());

        // A passed session that expires unused was reported when it passed: not again.
        let (c, _) = r.open("k1", None, end, SystemTime::now()).unwrap();
        let frames = performance(&c.challenge);
        r.begin_batch("k1", &c.id, frames.len(), end).unwrap();
        let res = r
            .add_frames("k1", &c.id, frames, end + Duration::from_secs(1))
            .unwrap();
        assert_eq!(res.view.state, SessionState::Passed);
        let gone = end + Duration::from_secs(61);
        assert_eq!(
            r.view("k1", &c.id, gone).unwrap().state,
            SessionState::Expired
        );
        assert!(r.sweep(gone).is_empty());
    }

    #[test]
    fn a_passed_session_keeps_only_the_probe() {
        let r = reg();
        let t0 = Instant::now();
        let (o, _) = r.open("k", None, t0, SystemTime::now()).unwrap();
        let frames = performance(&o.challenge);
        let n = frames.len();
        assert!(n <= 7);
        r.begin_batch("k", &o.id, n, t0).unwrap();
        let res = r
            .add_frames("k", &o.id, frames, t0 + Duration::from_secs(1))
            .unwrap();
        assert_eq!(res.view.state, SessionState::Passed);
        {
            let map = r.lock();
            let s = map.get(&o.id).unwrap();
            let kept = s.kept.as_ref().unwrap();
            assert!(s.frames.is_empty());
            assert_eq!(kept.witnesses.len(), n, "every usable frame witnesses");
            assert_eq!(kept.action_frames.len(), o.challenge.len());
        }
        let probe = r
            .take_probe(
                "k",
                &o.id,
                SessionUse::Identify,
                t0 + Duration::from_secs(1),
            )
            .unwrap();
        assert_eq!(probe.witnesses.len(), n);
        assert_eq!(probe.action_frames.len(), o.challenge.len());
        assert!(r.lock().get(&o.id).unwrap().kept.is_none());
    }

    #[test]
    fn an_unbound_session_identifies_once() {
        let r = reg();
        let t0 = Instant::now();
        let (o, _) = r.open("k", None, t0, SystemTime::now()).unwrap();
        let frames = performance(&o.challenge);
        r.begin_batch("k", &o.id, frames.len(), t0).unwrap();
        let res = r
            .add_frames("k", &o.id, frames, t0 + Duration::from_secs(1))
            .unwrap();
        assert_eq!(res.view.state, SessionState::Passed);
        assert_eq!(
            r.take_probe("k2", &o.id, SessionUse::Identify, t0),
            Err(SessionError::NotFound)
        );
        // One decision, whichever kind: a verification after the identification is refused too.
        let probe = r.take_probe("k", &o.id, SessionUse::Identify, t0).unwrap();
        assert!(probe.confidence > 0.7);
        assert_eq!(
            r.take_probe("k", &o.id, SessionUse::Identify, t0),
            Err(SessionError::Used)
        );
        assert_eq!(
            r.take_probe("k", &o.id, SessionUse::Verify("x"), t0),
            Err(SessionError::Used)
        );
        assert!(r.lock().get(&o.id).unwrap().kept.is_none());
    }

    #[test]
    fn the_last_places_stay_for_keys_holding_fewer() {
        let r = reg();
        let (t0, now) = (Instant::now(), SystemTime::now());
        r.open("k1", None, t0, now).unwrap();
        r.open("k1", None, t0, now).unwrap();
        r.open("k2", None, t0, now).unwrap();
        // k2 is under its own bound (2), but holds as many as are free (1): the last place is
        // kept for a key holding none.
        let refused = r.open("k2", None, t0, now);
        assert!(
            matches!(
                &refused,
                Err(SessionError::TooManySessions { global: false, message })
                    if message.contains("1 more may open")
            ),
            "{refused:?}"
        );
        r.open("k3", None, t0, now).unwrap();
        assert_eq!(r.active(), 4);

        // At the defaults' proportions, keys that each open as many as they may leave places to
        // the next one nine times over (four were enough to take every place before).
        let l = SessionLimits {
            max_sessions: 256,
            max_per_key: 64,
            ..limits()
        };
        let (mut total, mut held) = (0, Vec::new());
        while total < l.max_sessions {
            assert!(l.admit_open(total, 0, "here").is_ok(), "a key holding none");
            let mut mine = 0;
            while l.admit_open(total, mine, "here").is_ok() {
                (mine, total) = (mine + 1, total + 1);
            }
            held.push(mine);
        }
        assert_eq!(held, [64, 64, 64, 32, 16, 8, 4, 2, 1, 1]);
        assert!(matches!(
            l.admit_open(total, 0, "here"),
            Err(SessionError::TooManySessions { global: true, .. })
        ));
    }

    #[test]
    fn failed_sessions_free_places_and_tombstones_stay_bounded() {
        let r = Registry::new(
            SessionLimits {
                max_sessions: 1,
                max_per_key: 1,
                ..limits()
            },
            ChallengePolicy::default(),
        );
        let t0 = Instant::now();
        for _ in 0..10 {
            let (o, _) = r.open("k", None, t0, SystemTime::now()).unwrap();
            // The same frame twice: a replay, failed at once.
            r.begin_batch("k", &o.id, 2, t0).unwrap();
            let f = frame(0, None, 0);
            let res = r.add_frames("k", &o.id, vec![f.clone(), f], t0).unwrap();
            assert_eq!(res.view.state, SessionState::Failed);
        }
        assert!(r.lock().len() <= 4, "{} entries", r.lock().len());
        assert_eq!(r.active(), 0);
    }

    #[test]
    fn a_closed_session_is_gone_and_frees_its_place() {
        let r = reg();
        let (t0, now) = (Instant::now(), SystemTime::now());
        let (a, _) = r.open("k1", None, t0, now).unwrap();
        let (b, _) = r.open("k1", None, t0, now).unwrap();
        assert!(matches!(
            r.open("k1", None, t0, now),
            Err(SessionError::TooManySessions { global: false, .. })
        ));
        r.begin_batch("k1", &a.id, 1, t0).unwrap();
        r.add_frames("k1", &a.id, vec![frame(0, None, 0)], t0)
            .unwrap();
        // Only its own key may close it.
        assert_eq!(r.close("k2", &a.id), Err(SessionError::NotFound));
        let closed = r.close("k1", &a.id).unwrap();
        assert_eq!(
            closed,
            Closed {
                in_progress: true,
                usable_frames: 1,
                subject: None,
            }
        );
        assert_eq!(r.view("k1", &a.id, t0).unwrap_err(), SessionError::NotFound);
        assert_eq!(r.close("k1", &a.id), Err(SessionError::NotFound));
        assert_eq!(r.active(), 1);
        r.open("k1", None, t0, now).unwrap();
        // A passed session closed is no longer in progress, and can no longer verify.
        let frames = performance(&b.challenge);
        r.begin_batch("k1", &b.id, frames.len(), t0).unwrap();
        let done = r.add_frames("k1", &b.id, frames, t0).unwrap();
        assert_eq!(done.view.state, SessionState::Passed);
        assert!(!r.close("k1", &b.id).unwrap().in_progress);
        assert!(r.take_probe("k1", &b.id, SessionUse::Identify, t0).is_err());
    }

    #[test]
    fn release_frees_a_reservation() {
        let r = reg();
        let t0 = Instant::now();
        let (o, _) = r.open("k", None, t0, SystemTime::now()).unwrap();
        r.begin_batch("k", &o.id, 2, t0).unwrap();
        r.release("k", &o.id);
        assert!(r.begin_batch("k", &o.id, 2, t0).unwrap().is_none());
    }

    #[test]
    fn only_ids_of_the_form_new_id_makes_name_sessions() {
        let id = new_id().unwrap();
        assert_eq!(check_id(&id), Ok(()));
        let upper = id.to_ascii_uppercase();
        let nul = format!("{}\0", &id[..31]);
        let long = "a".repeat(60_000);
        for bad in [
            "",
            "a\0b",
            &id[..31],
            &upper,
            &nul,
            &format!("{id}0"),
            &long,
        ] {
            assert_eq!(check_id(bad), Err(SessionError::NotFound), "{bad:?}");
        }
        // The registry answers them like any unknown session.
        let r = reg();
        let t0 = Instant::now();
        r.open("k", None, t0, SystemTime::now()).unwrap();
        assert_eq!(r.view("k", "a\0b", t0), Err(SessionError::NotFound));
        assert_eq!(r.close("k", &nul), Err(SessionError::NotFound));
        r.release("k", "a\0b");
    }
}
