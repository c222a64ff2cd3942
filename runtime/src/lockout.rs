//! Per-subject lockout after failed verifications: `FACEKEY_LOCKOUT_ATTEMPTS` failures of one
//! subject within `FACEKEY_LOCKOUT_WINDOW_SECS` lock that subject for `FACEKEY_LOCKOUT_SECS`,
//! during which its verifications answer 429 `subject_locked` with `Retry-After`. It stops an
//! attacker from trying photo after photo against one account; `0` attempts turns it off.
//!
//! Every route that tells whether a face matches a subject counts here, so the guesses against
//! one subject are bounded whichever route they take: a rejected verification (`/v1/verify`,
//! with an image or a session); a rejected identification, once against each subject the face
//! matched (`/v1/identify`, which also answers a locked subject as no match); and a face refused
//! as `face_mismatch` when added to the subject (`/v1/subjects/{id}/faces`, which adds no face
//! to a locked subject).
//!
//! [`Lockouts`] is the service those handlers call ([`Lockouts::check`] before the work,
//! [`Lockouts::record_failure`] / [`Lockouts::record_success`] after it). The check before the
//! work only spares a locked subject the models; what bounds the attempts is the record after it:
//! it tells, atomically with the counting, whether the subject is locked by then, and a
//! verification that finds it locked is answered 429 instead of its decision, accept or reject.
//! So requests sent at once, which all pass the first check, reveal at most the threshold's number
//! of decisions per lock; the rest learn nothing from the work done for them. The counting lives in a
//! [`Ledger`]: [`MemoryLedger`] for one replica with the embedded store (bounded in memory), and
//! [`PgLedger`] in the template database when replicas share it, so failures through any
//! replica count together, on the database's clock, under a row lock.
//!
//! The window slides: a failure counts until `window` after it happened. The failure that
//! reaches the threshold locks the subject and clears its count, so after the lock expires the
//! subject has the full number of attempts again. Locks in a row grow ([`Policy::lock_for`]);
//! the streak ends `max_lock` after the last lock ended, whatever failures below the threshold
//! came since (they count through their window, but do not keep the streak going). While
//! locked, failures are not counted (the lock is not extended) and a success does not lift the
//! lock; a success clears the failures counted so far.
//!
//! Failure policy: a failure is never left uncounted. [`PgLedger`] alone returns
//! [`LockoutError::Store`] when the database cannot be reached; the server wraps it in a
//! [`FallbackLedger`] that then counts in this replica's memory, so verification keeps answering
//! through a database outage (like template reads) while the lock still holds, per replica.
//! Only a full in-memory ledger refuses (503).
//!
//! The lock is a security event: [`SubjectLockout`] emits a warning on the `facekey::security` log
//! target, `facekey_subject_lockouts_total` and (with SMTP configured) an alert email through the
//! same task as spoof alerts.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use sqlx::Row;
use sqlx::postgres::PgPool;

use crate::alerts::{AlertSender, SubjectLockout};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::StoreError;
use crate::store::postgres::db_err;
use facekey_settings::env;

/// Subjects the in-memory ledger tracks at most (those with recent failures or an active lock).
pub const MEMORY_CAPACITY: usize = 100_000;
/// Largest accepted `FACEKEY_LOCKOUT_ATTEMPTS` (the ledgers keep one timestamp per failure).
pub const MAX_ATTEMPTS: u32 = 1_000;
/// Longest accepted window or lock: one year.
pub const MAX_PERIOD: Duration = Duration::from_secs(366 * 24 * 3600);
/// How often a degraded [`FallbackLedger`] asks the shared ledger whether it is back.
pub const RECHECK_EVERY: Duration = Duration::from_secs(5);
/// The subject the recheck reads: not a UUID, so never a subject's.
const RECHECK_SUBJECT: &str = "facekey-ledger-recheck";
/// Least time between two purges of expired ledger entries by one replica after a failure
/// ([`Lockouts::record_failure`]), and the period of the server's purge task
/// ([`Lockouts::purge_every`]), which also tries again a failed write of the embedded mode's
/// lock file ([`crate::lockout_file`]): at most this long after it failed.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// When a subject is locked: after `attempts` failures within `window`, for `lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures within the window that lock the subject; 0 turns the lockout off.
    pub attempts: u32,
    /// The sliding window failures are counted in.
    pub window: Duration,
    /// How long a locked subject stays locked the first time.
    pub lock: Duration,
    /// The longest a lock grows to by doubling ([`Policy::lock_for`]), and how long after its
    /// end a lock still counts toward the next one's length; zero: locks never grow.
    pub max_lock: Duration,
}

impl Policy {
    /// No lockout at all.
    pub const OFF: Policy = Policy {
        attempts: 0,
        window: Duration::ZERO,
        lock: Duration::ZERO,
        max_lock: Duration::ZERO,
    };

    /// The policy the configuration sets, validated; the error names the setting.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        Self {
            attempts: config.lockout_attempts,
            window: Duration::from_secs(config.lockout_window_secs),
            lock: Duration::from_secs(config.lockout_secs),
            max_lock: Duration::from_secs(config.lockout_max_secs),
        }
        .validated()
    }

    /// Check the bounds: with the lockout on, the window and the lock must be between one second
    /// and [`MAX_PERIOD`], the longest lock at most [`MAX_PERIOD`] (0: locks never grow) and the
    /// attempts at most [`MAX_ATTEMPTS`].
    pub fn validated(self) -> Result<Self, String> {
        if !self.is_enabled() {
            return Ok(self);
        }
        if self.attempts > MAX_ATTEMPTS {
            return Err(format!(
                "{} is {}, more than {MAX_ATTEMPTS}; 0 turns the lockout off",
                env::LOCKOUT_ATTEMPTS,
                self.attempts
            ));
        }
        for (name, value) in [
            (env::LOCKOUT_WINDOW_SECS, self.window),
            (env::LOCKOUT_SECS, self.lock),
        ] {
            if value < Duration::from_secs(1) || value > MAX_PERIOD {
                return Err(format!(
                    "{name} must be between 1 and {} seconds while {} is not 0, got {}",
                    MAX_PERIOD.as_secs(),
                    env::LOCKOUT_ATTEMPTS,
                    value.as_secs_f64()
                ));
            }
        }
        if self.max_lock > MAX_PERIOD {
            return Err(format!(
                "{} must be at most {} seconds (0: locks never grow), got {}",
                env::LOCKOUT_MAX_SECS,
                MAX_PERIOD.as_secs(),
                self.max_lock.as_secs_f64()
            ));
        }
        Ok(self)
    }

    /// Whether failures are counted at all.
    pub fn is_enabled(&self) -> bool {
        self.attempts > 0
    }

    /// How long the `streak`-th lock in a row lasts (locks with no successful verification in
    /// between, each within `max_lock` of the previous one's end): the base lock, doubled for
    /// each lock before it, at most `max_lock` (or the base lock if that is longer) — the
    /// exponential delay NIST SP 800-63B (5.2.3) asks of biometric authenticators once the
    /// attempts are spent.
    pub fn lock_for(&self, streak: u32) -> Duration {
        let doublings = streak.saturating_sub(1).min(30);
        self.lock
            .saturating_mul(1u32 << doublings)
            .min(self.lock.max(self.max_lock))
    }
}

/// A subject that is locked, and for how long still.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "subject {subject} is locked after repeated failed verifications; retry in {} s",
    self.retry_after_secs()
)]
pub struct Locked {
    /// The subject's id.
    pub subject: String,
    /// Time left until the lock expires.
    pub retry_after: Duration,
}

impl Locked {
    /// The time left in whole seconds, rounded up and at least 1: the `Retry-After` value.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs();
        let secs = if self.retry_after.subsec_nanos() > 0 {
            secs.saturating_add(1)
        } else {
            secs
        };
        secs.max(1)
    }
}

/// Why a lockout call did not answer "go ahead".
#[derive(Debug, thiserror::Error)]
pub enum LockoutError {
    /// The subject is locked (429 `subject_locked`).
    #[error(transparent)]
    Locked(Locked),
    /// The ledger could not be read or written; the caller must refuse the verification (503
    /// `store_unavailable` when unreachable), never skip counting.
    #[error("lockout ledger: {0}")]
    Store(#[from] StoreError),
    /// The in-memory ledger tracks [`MEMORY_CAPACITY`] subjects that are all locked, so a new
    /// failure cannot be counted (fails closed: 503).
    #[error(
        "lockout ledger full: {capacity} subjects are locked at once; the failure of {subject} \
         could not be counted"
    )]
    Full {
        /// The ledger's capacity.
        capacity: usize,
        /// The subject whose failure was refused.
        subject: String,
    },
}

/// What counting one failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Counted; this many failures are now inside the window (below the threshold).
    Failures(u32),
    /// This failure reached the threshold: the subject is now locked for `lock`.
    LockedNow {
        /// Failures within the window, the threshold.
        failures: u32,
        /// How long the subject is locked.
        lock: Duration,
    },
    /// The subject was already locked (by a concurrent request): the failure is not counted and
    /// its decision must not be revealed; the time left on the lock.
    AlreadyLocked(Duration),
}

/// A lock held in a replica's memory, as [`MemoryLedger::held_locks`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLock {
    /// The locked subject.
    pub subject: String,
    /// Time left on the lock.
    pub left: Duration,
    /// Its number in the subject's streak of locks.
    pub streak: u32,
    /// How long from now the streak is remembered (the lock's end plus `max_lock`).
    pub remembered: Duration,
}

/// A lock in force, or one that ended but whose streak is still remembered, as
/// [`Ledger::active_locks`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveLock {
    /// The locked subject.
    pub subject: String,
    /// Time left on the lock (zero once it ended).
    pub left: Duration,
    /// Its number in the subject's streak of locks ([`Policy::lock_for`]).
    pub streak: u32,
    /// How long from now the streak is remembered (at least `left`).
    pub remembered: Duration,
}

/// Where failures are counted. Implementations make counting atomic per subject: concurrent
/// failures never both miss the threshold nor both lock.
#[async_trait::async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// The time left on the subject's lock, or `None` when it is not locked.
    async fn locked_for(&self, subject: &str) -> Result<Option<Duration>, LockoutError>;
    /// The time left on each of `subjects`' locks, in their order (`None`: not locked): one
    /// question for an identification's candidates rather than one each. By default
    /// [`Ledger::locked_for`] of each in turn.
    async fn locked_among(
        &self,
        subjects: &[String],
    ) -> Result<Vec<Option<Duration>>, LockoutError> {
        let mut left = Vec::with_capacity(subjects.len());
        for subject in subjects {
            left.push(self.locked_for(subject).await?);
        }
        Ok(left)
    }
    /// Count one failure of `subject` under `policy` (which must be enabled).
    async fn record_failure(&self, subject: &str, policy: &Policy)
    -> Result<Counted, LockoutError>;
    /// A success: forget the subject's counted failures, unless it is locked, when nothing changes
    /// and the time left on the lock is returned (the success must not be revealed). Atomic with
    /// [`Ledger::record_failure`]: a lock taken by a failure counted first is seen.
    async fn clear(&self, subject: &str) -> Result<Option<Duration>, LockoutError>;
    /// An administrator's release: forget the subject's lock and counted failures whatever
    /// their state; returns the time that was left on the lock (`None`: it was not locked).
    async fn release(&self, subject: &str) -> Result<Option<Duration>, LockoutError>;
    /// Delete entries that no longer matter (lock over and no failure inside the window);
    /// returns how many.
    async fn purge_expired(&self) -> Result<u64, LockoutError>;
    /// Take over a lock another ledger took: `left` of it, taken at lock number `streak` in a
    /// row, the streak remembered for `remembered` from now (at least `left`). The fallback
    /// hands the locks it took in memory during an outage to the shared ledger once that is back
    /// ([`FallbackLedger::recheck`]), so every replica enforces them and an administrator's
    /// release on any replica lifts them. A longer lock already there stays.
    /// `Ok(false)`: this ledger takes no locks over (the default).
    async fn adopt(
        &self,
        subject: &str,
        left: Duration,
        streak: u32,
        remembered: Duration,
    ) -> Result<bool, LockoutError> {
        let _ = (subject, left, streak, remembered);
        Ok(false)
    }
    /// Every lock in force with the time left on it and its streak, then the ended locks whose
    /// streak is still remembered, at most `limit` (the longest first), so a replica can keep a
    /// copy that holds, and escalates, while this ledger is unreachable
    /// ([`FallbackLedger::recheck`]). Default: none.
    async fn active_locks(&self, limit: usize) -> Result<Vec<ActiveLock>, LockoutError> {
        let _ = limit;
        Ok(Vec::new())
    }
    /// Whether the ledger can count failures now (reachable and writable); by default a read.
    async fn probe(&self) -> Result<(), LockoutError> {
        self.locked_for(RECHECK_SUBJECT).await.map(|_| ())
    }
    /// Where the ledger lives, for the start-up log.
    fn describe(&self) -> String;
}

/// Monotonic time for the in-memory ledger, injectable so tests need not sleep.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Clone)]
pub struct ManualClock {
    start: Instant,
    offset: Arc<Mutex<Duration>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            offset: Arc::default(),
        }
    }
}

impl ManualClock {
    /// Move the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *offset = offset.saturating_add(by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One subject's state in the in-memory ledger.
#[derive(Debug)]
struct Entry {
    /// Failures inside the window, oldest first (fewer than the threshold).
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
    /// Locks in a row (no success in between): the next one lasts [`Policy::lock_for`] of it.
    streak: u32,
    /// When the streak is forgotten: `max_lock` after the last lock ended (or as long as a lock
    /// taken over asked). Kept apart from `expires`, which failures below the threshold extend
    /// to count them through the window: they must not keep the streak alive (one failure every
    /// window would otherwise double every next lock, forever).
    streak_until: Instant,
    /// After this instant the entry says nothing any more (neither failures nor the streak).
    expires: Instant,
}

impl Entry {
    fn is_locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|until| until > now)
    }

    /// Whether a streak of locks is remembered at `now`.
    fn remembers_streak(&self, now: Instant) -> bool {
        self.streak > 0 && self.streak_until > now
    }

    /// Forget a streak whose time is over: the next lock is the first of a new one.
    fn end_streak_if_over(&mut self, now: Instant) {
        if self.streak_until <= now {
            self.streak = 0;
        }
    }
}

/// The ledger of one replica (the embedded store): a map in memory, lost on restart. It holds at
/// most its capacity of subjects: expired entries are purged when it is full, then the unlocked
/// subject whose failures are oldest is forgotten; locked subjects are never evicted, and when
/// every tracked subject is locked a new failure is refused ([`LockoutError::Full`]).
pub struct MemoryLedger {
    clock: Arc<dyn Clock>,
    capacity: usize,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Default for MemoryLedger {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLedger {
    /// A ledger on the system clock holding at most [`MEMORY_CAPACITY`] subjects.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock), MEMORY_CAPACITY)
    }

    /// A ledger on `clock` holding at most `capacity` subjects (at least 1).
    pub fn with_clock(clock: Arc<dyn Clock>, capacity: usize) -> Self {
        Self {
            clock,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Subjects tracked now.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether no subject is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // No code panics while holding the lock; a poisoned map is still consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The subjects locked now, with the time left, the lock's streak and how long it is
    /// remembered.
    pub fn held_locks(&self) -> Vec<HeldLock> {
        let now = self.clock.now();
        self.entries()
            .iter()
            .filter_map(|(subject, e)| {
                let until = e.locked_until.filter(|u| *u > now)?;
                Some(HeldLock {
                    subject: subject.clone(),
                    left: until - now,
                    streak: e.streak,
                    remembered: e.streak_until.max(until) - now,
                })
            })
            .collect()
    }

    /// The ledger's clock now.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Whether `subject` is locked now or a streak of its locks is remembered: what
    /// [`Ledger::active_locks`] lists of it.
    pub fn remembers_streak(&self, subject: &str) -> bool {
        let now = self.clock.now();
        self.entries()
            .get(subject)
            .is_some_and(|e| e.is_locked(now) || e.remembers_streak(now))
    }

    /// Continue `subject`'s streak of locks from lock number `streak` (taken elsewhere), remembered
    /// until `until`: its next lock here is the one after it ([`Policy::lock_for`]).
    pub fn continue_streak(
        &self,
        subject: &str,
        streak: u32,
        until: Instant,
    ) -> Result<(), LockoutError> {
        let now = self.clock.now();
        let mut entries = self.entries();
        let entry = self.entry_for(&mut entries, now, subject)?;
        entry.end_streak_if_over(now);
        entry.streak = entry.streak.max(streak);
        entry.streak_until = entry.streak_until.max(until);
        entry.expires = entry.expires.max(until);
        Ok(())
    }

    /// The subject's entry, created empty (room made first, [`MemoryLedger::make_room`]) when it
    /// has none.
    fn entry_for<'a>(
        &self,
        entries: &'a mut HashMap<String, Entry>,
        now: Instant,
        subject: &str,
    ) -> Result<&'a mut Entry, LockoutError> {
        if !entries.contains_key(subject) && entries.len() >= self.capacity {
            self.make_room(entries, now, subject)?;
        }
        Ok(entries.entry(subject.to_owned()).or_insert_with(|| Entry {
            failures: VecDeque::new(),
            locked_until: None,
            streak: 0,
            streak_until: now,
            expires: now,
        }))
    }

    /// Make room for one more subject, or refuse when every tracked subject is locked.
    fn make_room(
        &self,
        entries: &mut HashMap<String, Entry>,
        now: Instant,
        subject: &str,
    ) -> Result<(), LockoutError> {
        entries.retain(|_, e| e.expires > now);
        if entries.len() < self.capacity {
            return Ok(());
        }
        let victim = entries
            .iter()
            .filter(|(_, e)| !e.is_locked(now))
            .min_by_key(|(_, e)| e.expires)
            .map(|(k, _)| k.clone());
        match victim {
            Some(k) => {
                entries.remove(&k);
                tracing::warn!(
                    target: "facekey::security",
                    capacity = self.capacity,
                    "lockout ledger full: forgot the oldest failures of one subject"
                );
                Ok(())
            }
            None => Err(LockoutError::Full {
                capacity: self.capacity,
                subject: subject.to_owned(),
            }),
        }
    }
}

#[async_trait::async_trait]
impl Ledger for MemoryLedger {
    async fn active_locks(&self, limit: usize) -> Result<Vec<ActiveLock>, LockoutError> {
        let now = self.clock.now();
        let mut locks: Vec<ActiveLock> = self
            .entries()
            .iter()
            .filter(|(_, e)| e.is_locked(now) || e.remembers_streak(now))
            .map(|(subject, e)| {
                let until = e.locked_until.map_or(now, |u| u.max(now));
                ActiveLock {
                    subject: subject.clone(),
                    left: until - now,
                    streak: e.streak,
                    remembered: e.streak_until.max(until) - now,
                }
            })
            .collect();
        locks.sort_by_key(|l| std::cmp::Reverse(l.left));
        locks.truncate(limit);
        Ok(locks)
    }

    async fn adopt(
        &self,
        subject: &str,
        left: Duration,
        streak: u32,
        remembered: Duration,
    ) -> Result<bool, LockoutError> {
        let now = self.clock.now();
        let mut entries = self.entries();
        let entry = self.entry_for(&mut entries, now, subject)?;
        let until = now + left;
        entry.end_streak_if_over(now);
        entry.failures.clear();
        entry.locked_until = Some(entry.locked_until.map_or(until, |u| u.max(until)));
        entry.streak = entry.streak.max(streak);
        entry.streak_until = entry.streak_until.max(until).max(now + remembered);
        entry.expires = entry.expires.max(entry.streak_until);
        Ok(true)
    }

    async fn locked_for(&self, subject: &str) -> Result<Option<Duration>, LockoutError> {
        let now = self.clock.now();
        let mut entries = self.entries();
        let Some(entry) = entries.get(subject) else {
            return Ok(None);
        };
        if let Some(until) = entry.locked_until.filter(|u| *u > now) {
            return Ok(Some(until - now));
        }
        if entry.expires <= now {
            entries.remove(subject);
        }
        Ok(None)
    }

    async fn release(&self, subject: &str) -> Result<Option<Duration>, LockoutError> {
        let now = self.clock.now();
        let removed = self.entries().remove(subject);
        Ok(removed
            .and_then(|e| e.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now))
    }

    async fn record_failure(
        &self,
        subject: &str,
        policy: &Policy,
    ) -> Result<Counted, LockoutError> {
        let now = self.clock.now();
        let mut entries = self.entries();
        let entry = self.entry_for(&mut entries, now, subject)?;
        // `max_lock` after the last lock ended the streak is over, whatever failures below the
        // threshold came since (they extend the entry only to count them through the window),
        // even while the entry awaits the next purge; as the shared ledger reads it.
        entry.end_streak_if_over(now);
        if let Some(until) = entry.locked_until {
            if until > now {
                return Ok(Counted::AlreadyLocked(until - now));
            }
            entry.locked_until = None;
        }
        while entry
            .failures
            .front()
            .is_some_and(|t| *t + policy.window <= now)
        {
            entry.failures.pop_front();
        }
        entry.failures.push_back(now);
        let failures = u32::try_from(entry.failures.len()).unwrap_or(u32::MAX);
        if failures >= policy.attempts {
            entry.streak = entry.streak.saturating_add(1);
            let lock = policy.lock_for(entry.streak);
            let until = now + lock;
            entry.failures.clear();
            entry.locked_until = Some(until);
            // Remembered for the next lock's length a while after it ends.
            entry.streak_until = until + policy.max_lock;
            entry.expires = entry.streak_until;
            Ok(Counted::LockedNow { failures, lock })
        } else {
            // Kept while this failure counts; the streak's end stays where the last lock put it.
            entry.expires = entry.expires.max(now + policy.window);
            Ok(Counted::Failures(failures))
        }
    }

    async fn clear(&self, subject: &str) -> Result<Option<Duration>, LockoutError> {
        let now = self.clock.now();
        let mut entries = self.entries();
        if let Some(entry) = entries.get(subject) {
            // A locked entry holds no failures (locking clears them).
            if let Some(until) = entry.locked_until.filter(|u| *u > now) {
                return Ok(Some(until - now));
            }
            entries.remove(subject);
        }
        Ok(None)
    }

    async fn purge_expired(&self) -> Result<u64, LockoutError> {
        let now = self.clock.now();
        let mut entries = self.entries();
        let before = entries.len();
        entries.retain(|_, e| e.expires > now);
        Ok((before - entries.len()) as u64)
    }

    fn describe(&self) -> String {
        format!(
            "in memory (this replica, at most {} subjects)",
            self.capacity
        )
    }
}

/// The ledger shared by replicas: table `facekey_lockouts` (migration `0002_lockout.sql`) in the
/// template database, on the database's clock. A failure is counted in one transaction holding
/// the subject's row lock, so concurrent failures through any replicas serialise.
#[derive(Clone)]
pub struct PgLedger {
    pool: PgPool,
    /// The policy's `max_lock`, when known: how long after a lock ends its streak is remembered,
    /// for the calls that read streaks without a policy (copies taken for an outage, locks
    /// handed back after one). Unknown: the row's expiry alone.
    max_lock: Option<Duration>,
}

impl PgLedger {
    /// A ledger on `pool`, whose migrations have run ([`crate::store::postgres::PgStore::pool`]).
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            max_lock: None,
        }
    }

    /// This ledger, with a streak remembered `max_lock` after its last lock ended (the
    /// policy's), as counting a failure remembers it, in the copies an outage reads too.
    pub fn remembering(mut self, max_lock: Duration) -> Self {
        self.max_lock = Some(max_lock);
        self
    }
}

/// Seconds as a [`Duration`], for values the database computed (never negative there).
fn secs(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(MAX_PERIOD)
}

#[async_trait::async_trait]
impl Ledger for PgLedger {
    async fn adopt(
        &self,
        subject: &str,
        left: Duration,
        streak: u32,
        remembered: Duration,
    ) -> Result<bool, LockoutError> {
        // The longer lock and streak win; the row is kept as long as the replica that took the
        // lock would have remembered its streak.
        sqlx::query(
            "INSERT INTO facekey_lockouts AS l (subject, locked_until, expires_at, lock_streak) \
             VALUES ($1, now() + make_interval(secs => $2), \
               now() + make_interval(secs => GREATEST($2, $4)), $3) \
             ON CONFLICT (subject) DO UPDATE SET failures = '{}', \
               locked_until = GREATEST(l.locked_until, EXCLUDED.locked_until), \
               expires_at = GREATEST(l.expires_at, EXCLUDED.expires_at), \
               lock_streak = GREATEST( \
                 CASE WHEN l.expires_at > now() AND ($5::float8 IS NULL \
                     OR l.locked_until IS NULL \
                     OR l.locked_until + make_interval(secs => $5) > now()) \
                   THEN l.lock_streak ELSE 0 END, \
                 EXCLUDED.lock_streak)",
        )
        .bind(subject)
        .bind(left.as_secs_f64())
        .bind(i32::try_from(streak).unwrap_or(i32::MAX))
        .bind(remembered.as_secs_f64())
        .bind(self.max_lock.map(|d| d.as_secs_f64()))
        .execute(&self.pool)
        .await
        .map_err(db_err("take over a lock taken during an outage"))?;
        Ok(true)
    }

    async fn active_locks(&self, limit: usize) -> Result<Vec<ActiveLock>, LockoutError> {
        // Ended locks whose streak is remembered come after those in force (the partial indexes
        // of migrations 0008 and 0009 keep the read to these rows). A streak is remembered
        // until the row expires and, with `max_lock` known, no longer than `max_lock` after its
        // last lock ended (failures below the threshold extend the row, not the streak).
        let rows: Vec<(String, f64, i32, f64)> = sqlx::query_as(
            "SELECT subject, \
               GREATEST(extract(epoch FROM locked_until - now()), 0)::float8, lock_streak, \
               GREATEST(extract(epoch FROM LEAST(expires_at, \
                 CASE WHEN $2::float8 IS NULL OR locked_until IS NULL THEN expires_at \
                   ELSE locked_until + make_interval(secs => $2) END) - now()), 0)::float8 \
             FROM facekey_lockouts \
             WHERE (locked_until IS NOT NULL AND locked_until > now()) \
               OR (lock_streak > 0 AND expires_at > now() AND ($2::float8 IS NULL \
                 OR locked_until IS NULL OR locked_until + make_interval(secs => $2) > now())) \
             ORDER BY locked_until DESC NULLS LAST LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(self.max_lock.map(|d| d.as_secs_f64()))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("list subject lockouts"))?;
        Ok(rows
            .into_iter()
            .map(|(subject, left, streak, remembered)| ActiveLock {
                subject,
                left: secs(left),
                streak: u32::try_from(streak).unwrap_or(0),
                remembered: secs(remembered.max(left)),
            })
            .collect())
    }

    async fn probe(&self) -> Result<(), LockoutError> {
        // A read answers on a read-only database too, where counting fails: ask for writes.
        let writable: bool = sqlx::query_scalar(
            "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_err("check the lockout ledger"))?;
        if writable {
            Ok(())
        } else {
            Err(StoreError::Unavailable("the lockout ledger's database is read-only".into()).into())
        }
    }

    async fn locked_for(&self, subject: &str) -> Result<Option<Duration>, LockoutError> {
        let left: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM locked_until - now())::float8 FROM facekey_lockouts \
             WHERE subject = $1 AND locked_until > now()",
        )
        .bind(subject)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("read subject lockout"))?;
        Ok(left.map(secs))
    }

    async fn locked_among(
        &self,
        subjects: &[String],
    ) -> Result<Vec<Option<Duration>>, LockoutError> {
        // One query and one pooled connection for all of them: an identification's hundred
        // candidates would otherwise hold every connection of the ledger's small pool.
        let rows: Vec<(String, f64)> = sqlx::query_as(
            "SELECT subject, extract(epoch FROM locked_until - now())::float8 \
             FROM facekey_lockouts WHERE subject = ANY($1) AND locked_until > now()",
        )
        .bind(subjects)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("read subject lockouts"))?;
        let left: HashMap<String, f64> = rows.into_iter().collect();
        Ok(subjects
            .iter()
            .map(|s| left.get(s).copied().map(secs))
            .collect())
    }

    async fn record_failure(
        &self,
        subject: &str,
        policy: &Policy,
    ) -> Result<Counted, LockoutError> {
        let err = db_err("count failed verification");
        let window = policy.window.as_secs_f64();
        let mut tx = self.pool.begin().await.map_err(&err)?;
        // Create the row if needed and lock it until commit: every other failure of this subject
        // waits here, then sees this one's result. The streak ends `max_lock` after the last
        // lock ended (`locked_until`, kept once the lock is over), whatever failures below the
        // threshold came since: they extend `expires_at` only to count them through the window.
        // A row past its expiry (awaiting a purge) remembers nothing any more. A row whose lock
        // end an older release dropped (NULL after a failure below the threshold) goes by its
        // expiry alone, as that release did.
        let row = sqlx::query(
            "INSERT INTO facekey_lockouts AS l (subject, expires_at) VALUES ($1, now()) \
             ON CONFLICT (subject) DO UPDATE SET lock_streak = \
               CASE WHEN l.expires_at > now() AND (l.locked_until IS NULL \
                   OR l.locked_until + make_interval(secs => $3) > now()) \
                 THEN l.lock_streak ELSE 0 END \
             RETURNING \
               CASE WHEN l.locked_until > now() \
                 THEN extract(epoch FROM l.locked_until - now())::float8 END AS locked_for, \
               (SELECT count(*) FROM unnest(l.failures) AS f \
                 WHERE f > now() - make_interval(secs => $2))::int8 AS recent, \
               l.lock_streak",
        )
        .bind(subject)
        .bind(window)
        .bind(policy.max_lock.as_secs_f64())
        .fetch_one(&mut *tx)
        .await
        .map_err(&err)?;
        let locked_for: Option<f64> = row.try_get("locked_for").map_err(&err)?;
        let recent: i64 = row.try_get("recent").map_err(&err)?;
        let streak: i32 = row.try_get("lock_streak").map_err(&err)?;
        if let Some(left) = locked_for {
            tx.commit().await.map_err(&err)?;
            return Ok(Counted::AlreadyLocked(secs(left)));
        }
        let failures = u32::try_from(recent.saturating_add(1)).unwrap_or(u32::MAX);
        let counted = if failures >= policy.attempts {
            // This lock's length from the streak read under the row lock, as the memory ledger
            // decides it; the row is kept `max_lock` after the lock ends to remember the streak.
            let streak = u32::try_from(streak).unwrap_or(0).saturating_add(1);
            let lock = policy.lock_for(streak);
            sqlx::query(
                "UPDATE facekey_lockouts SET failures = '{}', \
                   locked_until = now() + make_interval(secs => $2), \
                   expires_at = now() + make_interval(secs => $2 + $3), \
                   lock_streak = $4 \
                 WHERE subject = $1",
            )
            .bind(subject)
            .bind(lock.as_secs_f64())
            .bind(policy.max_lock.as_secs_f64())
            .bind(i32::try_from(streak).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
            Counted::LockedNow { failures, lock }
        } else {
            // `locked_until` stays: the end of the last lock (never in the future here), from
            // which the streak's end is counted.
            sqlx::query(
                "UPDATE facekey_lockouts SET \
                   failures = ARRAY(SELECT f FROM unnest(failures) AS f \
                     WHERE f > now() - make_interval(secs => $2) ORDER BY f) || now(), \
                   expires_at = GREATEST(expires_at, now() + make_interval(secs => $2)) \
                 WHERE subject = $1",
            )
            .bind(subject)
            .bind(window)
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
            Counted::Failures(failures)
        };
        tx.commit().await.map_err(&err)?;
        Ok(counted)
    }

    async fn clear(&self, subject: &str) -> Result<Option<Duration>, LockoutError> {
        // A locked row holds no failures (locking clears them); it stays until it expires. The
        // delete waits for a failure being counted under the row lock and re-reads the row after
        // it, so a lock that failure took keeps the row, and the read below sees the lock.
        let deleted = sqlx::query(
            "DELETE FROM facekey_lockouts WHERE subject = $1 \
             AND (locked_until IS NULL OR locked_until <= now())",
        )
        .bind(subject)
        .execute(&self.pool)
        .await
        .map_err(db_err("clear failed verifications"))?;
        if deleted.rows_affected() > 0 {
            return Ok(None);
        }
        // Nothing deleted: no row (never failed, or locked by a failure committed since, which
        // then also refuses this success), or a locked one.
        self.locked_for(subject).await
    }

    async fn release(&self, subject: &str) -> Result<Option<Duration>, LockoutError> {
        let left: Option<Option<f64>> = sqlx::query_scalar(
            "DELETE FROM facekey_lockouts WHERE subject = $1 RETURNING \
               CASE WHEN locked_until > now() \
                 THEN extract(epoch FROM locked_until - now())::float8 END",
        )
        .bind(subject)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("release subject lockout"))?;
        Ok(left.flatten().map(secs))
    }

    async fn purge_expired(&self) -> Result<u64, LockoutError> {
        let done = sqlx::query("DELETE FROM facekey_lockouts WHERE expires_at <= now()")
            .execute(&self.pool)
            .await
            .map_err(db_err("purge expired lockouts"))?;
        Ok(done.rows_affected())
    }

    fn describe(&self) -> String {
        "PostgreSQL (shared by the replicas)".to_owned()
    }
}

/// A copy of one shared lock: when it ends, when this replica learnt it, its streak (0 until a
/// recheck has read it: an answer about a subject tells the time left only) and until when the
/// streak is remembered.
#[derive(Debug, Clone, Copy)]
struct Copied {
    until: Instant,
    seen: Instant,
    streak: u32,
    forget_at: Instant,
}

impl Copied {
    /// A lock with `left` to run, learnt at `now`, number `streak` in its subject's streak,
    /// remembered for `remembered` (at least `left`).
    fn lasting(left: Duration, now: Instant, streak: u32, remembered: Duration) -> Self {
        Self {
            until: now + left,
            seen: now,
            streak,
            forget_at: now + remembered.max(left),
        }
    }

    /// The time left on the lock at `now`; `None` once it ran out.
    fn left(&self, now: Instant) -> Option<Duration> {
        self.until
            .checked_duration_since(now)
            .filter(|left| !left.is_zero())
    }
}

/// The shared ledger with a local fallback: while the shared one is unreachable, failures are
/// counted in this replica's memory, so verification keeps answering during a database outage
/// (as template reads do) and an attacker still meets a lock, only per replica: at most the
/// threshold times the replicas within a window. The locks in force on the shared ledger keep
/// holding through the outage: each replica keeps a copy of them (refreshed at every recheck,
/// and from every answer about a subject), so an outage does not lift a lock (a lock released
/// elsewhere up to a recheck before the outage may still hold here; a lock that ends during the
/// outage, or ended before it while its streak is remembered, passes its streak on, copied at
/// the recheck, so the next lock taken here is as long as the shared ledger's next would have
/// been). Locks taken
/// locally keep holding after the shared ledger is back, handed over to it at the next recheck
/// (so every replica enforces them and an administrator's release on any replica lifts them).
/// The switch is logged and exposed as `facekey_lockout_ledger_local`.
pub struct FallbackLedger {
    shared: Arc<dyn Ledger>,
    local: MemoryLedger,
    /// The shared ledger's locks as last seen: subject → when the lock ends, and when this
    /// replica learnt it.
    copies: Mutex<HashMap<String, Copied>>,
    metrics: Metrics,
    degraded: std::sync::atomic::AtomicBool,
}

impl FallbackLedger {
    /// `shared` first, this replica's memory while it is unreachable.
    pub fn new(shared: Arc<dyn Ledger>, metrics: Metrics) -> Self {
        Self {
            shared,
            local: MemoryLedger::new(),
            copies: Mutex::new(HashMap::new()),
            metrics,
            degraded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn copies(&self) -> std::sync::MutexGuard<'_, HashMap<String, Copied>> {
        self.copies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the shared ledger just said of `subject`'s lock (`None`: not locked).
    fn remember(&self, subject: &str, left: Option<Duration>) {
        let mut copies = self.copies();
        match left {
            Some(left) => {
                if copies.len() < MEMORY_CAPACITY || copies.contains_key(subject) {
                    // The streak of the lock in force (an answer tells the time left only): a
                    // new lock's streak is unknown until the next recheck reads it.
                    let now = Instant::now();
                    let running = copies.get(subject).filter(|c| c.left(now).is_some());
                    let streak = running.map_or(0, |c| c.streak);
                    let remembered = running.map_or(left, |c| c.forget_at - now);
                    let copy = Copied::lasting(left, now, streak, remembered);
                    copies.insert(subject.to_owned(), copy);
                }
            }
            None => {
                copies.remove(subject);
            }
        }
    }

    /// The time left on `subject`'s lock as the shared ledger last said, while it is unreachable.
    /// A copy that has run out stays, to pass its streak on to the next lock taken here
    /// ([`Ledger::record_failure`]) unless a success ends it first; the next recheck with the
    /// shared ledger back replaces every copy.
    fn copied(&self, subject: &str) -> Option<Duration> {
        self.copies().get(subject)?.left(Instant::now())
    }

    /// Forget a copied lock of `subject` that has run out (a success ends its streak, as the
    /// shared ledger's does).
    fn forget_ended_copy(&self, subject: &str) {
        let mut copies = self.copies();
        if copies
            .get(subject)
            .is_some_and(|c| c.left(Instant::now()).is_none())
        {
            copies.remove(subject);
        }
    }

    /// Every `every` ([`RECHECK_EVERY`] in the server), [`FallbackLedger::recheck`]: while
    /// degraded, whether the shared ledger answers again, so `facekey_lockout_ledger_local` (and
    /// its alert) clears when the database is back, not at this replica's next verification,
    /// which may be hours later at night; then the hand-over of the locks taken meanwhile. Ends
    /// when the ledger is dropped.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let ledger = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(ledger) = ledger.upgrade() else {
                    return;
                };
                ledger.recheck().await;
            }
        })
    }

    /// One check of the shared ledger while degraded ([`Ledger::probe`]); once it answers, the
    /// locks taken in memory meanwhile are handed over to it ([`Ledger::adopt`]) and forgotten
    /// here.
    pub async fn recheck(&self) {
        if self.degraded.load(std::sync::atomic::Ordering::Relaxed) {
            let probe = self.shared.probe().await;
            if self.note(&probe) {
                return;
            }
        }
        // The copy of the shared locks, whole: a lock released or run out elsewhere goes. One
        // learnt from an answer while the list was being read is newer than the list: kept.
        let asked = Instant::now();
        let active = self.shared.active_locks(MEMORY_CAPACITY).await;
        if self.note(&active) {
            return;
        }
        match active {
            Ok(locks) => {
                let now = Instant::now();
                let mut copies = self.copies();
                let newer: Vec<(String, Copied)> = copies
                    .iter()
                    .filter(|(_, c)| c.seen >= asked)
                    .map(|(s, c)| (s.clone(), *c))
                    .collect();
                *copies = locks
                    .into_iter()
                    .map(|l| {
                        let copy = Copied::lasting(l.left, now, l.streak, l.remembered);
                        (l.subject, copy)
                    })
                    .chain(newer)
                    .collect();
            }
            Err(e) => tracing::warn!(error = %e, "reading the shared locks failed"),
        }
        for HeldLock {
            subject,
            left,
            streak,
            remembered,
        } in self.local.held_locks()
        {
            let adopted = self.shared.adopt(&subject, left, streak, remembered).await;
            if self.note(&adopted) {
                return;
            }
            match adopted {
                Ok(true) => {
                    if let Err(e) = self.local.release(&subject).await {
                        tracing::warn!(error = %e, "forgetting a handed-over lock failed");
                    }
                    tracing::info!(
                        target: "facekey::security",
                        subject = %subject,
                        seconds_left = left.as_secs(),
                        "a lock taken in this replica's memory during the outage now holds on the \
                         shared ledger"
                    );
                }
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "handing a lock over to the shared ledger failed");
                    return;
                }
            }
        }
    }

    /// Whether the last shared call failed as unreachable; logs and sets the gauge on change.
    fn note<T>(&self, result: &Result<T, LockoutError>) -> bool {
        let down = matches!(
            result,
            Err(LockoutError::Store(
                StoreError::Unavailable(_) | StoreError::Busy(_)
            ))
        );
        let was = self
            .degraded
            .swap(down, std::sync::atomic::Ordering::Relaxed);
        if was != down {
            self.metrics.lockout_ledger_local.set(i64::from(down));
            if down {
                tracing::warn!(
                    target: "facekey::security",
                    "shared lockout ledger unreachable; counting failed verifications in this \
                     replica's memory until it is back"
                );
            } else {
                tracing::info!("shared lockout ledger reachable again");
            }
        }
        down
    }
}

/// The longer of two ledgers' answers (time left on a lock, `None` when not locked).
fn longer(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[async_trait::async_trait]
impl Ledger for FallbackLedger {
    async fn locked_for(&self, subject: &str) -> Result<Option<Duration>, LockoutError> {
        let local = self.local.locked_for(subject).await?;
        let shared = self.shared.locked_for(subject).await;
        if self.note(&shared) {
            return Ok(longer(local, self.copied(subject)));
        }
        let shared = shared?;
        self.remember(subject, shared);
        Ok(longer(shared, local))
    }

    async fn locked_among(
        &self,
        subjects: &[String],
    ) -> Result<Vec<Option<Duration>>, LockoutError> {
        let local = self.local.locked_among(subjects).await?;
        let shared = self.shared.locked_among(subjects).await;
        if self.note(&shared) {
            return Ok(subjects
                .iter()
                .zip(local)
                .map(|(subject, local)| longer(local, self.copied(subject)))
                .collect());
        }
        let shared = shared?;
        for (subject, left) in subjects.iter().zip(&shared) {
            self.remember(subject, *left);
        }
        Ok(shared
            .into_iter()
            .zip(local)
            .map(|(s, l)| longer(s, l))
            .collect())
    }

    async fn record_failure(
        &self,
        subject: &str,
        policy: &Policy,
    ) -> Result<Counted, LockoutError> {
        let shared = self.shared.record_failure(subject, policy).await;
        if self.note(&shared) {
            // A lock the shared ledger holds stays in force: the failure is not counted again.
            // One that ran out meanwhile passes its streak on, remembered as long as the shared
            // ledger would remember it; taken and passed on under the copies' lock, so a
            // failure counted beside this one sees the streak (lock order: copies, entries).
            {
                let mut copies = self.copies();
                if let Some(copy) = copies.get(subject).copied() {
                    if let Some(left) = copy.left(Instant::now()) {
                        return Ok(Counted::AlreadyLocked(left));
                    }
                    copies.remove(subject);
                    self.local.continue_streak(
                        subject,
                        copy.streak,
                        copy.forget_at.max(copy.until + policy.max_lock),
                    )?;
                }
            }
            return self.local.record_failure(subject, policy).await;
        }
        match &shared {
            Ok(Counted::LockedNow { lock, .. }) => self.remember(subject, Some(*lock)),
            Ok(Counted::AlreadyLocked(left)) => self.remember(subject, Some(*left)),
            Ok(Counted::Failures(_)) | Err(_) => {}
        }
        shared
    }

    async fn clear(&self, subject: &str) -> Result<Option<Duration>, LockoutError> {
        let local = self.local.clear(subject).await?;
        let shared = self.shared.clear(subject).await;
        if self.note(&shared) {
            let locked = longer(local, self.copied(subject));
            if locked.is_none() {
                self.forget_ended_copy(subject);
            }
            return Ok(locked);
        }
        let shared = shared?;
        self.remember(subject, shared);
        Ok(longer(shared, local))
    }

    async fn release(&self, subject: &str) -> Result<Option<Duration>, LockoutError> {
        // Both: a lock taken locally during an outage keeps holding otherwise. The shared one
        // must answer: a release that cannot reach it would leave the lock in force elsewhere.
        let shared = self.shared.release(subject).await;
        self.note(&shared);
        let shared = shared?;
        self.remember(subject, None);
        Ok(longer(shared, self.local.release(subject).await?))
    }

    async fn purge_expired(&self) -> Result<u64, LockoutError> {
        let local = self.local.purge_expired().await?;
        // A purge is housekeeping: its failure says nothing about whether failures can be
        // counted, so it neither marks the ledger down nor up (a minutely purge timing out on a
        // busy pool would flap `facekey_lockout_ledger_local`); the outage, if there is one,
        // is logged and shown by the calls that count. Its rows wait for the next purge.
        match self.shared.purge_expired().await {
            Ok(shared) => Ok(local + shared),
            Err(e) => {
                tracing::debug!(error = %e, "purging the shared lockout ledger failed");
                Ok(local)
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "{}, this replica's memory while it is unreachable",
            self.shared.describe()
        )
    }
}

/// The lockout service handlers call. Cheap to clone.
#[derive(Clone)]
pub struct Lockouts {
    inner: Arc<Inner>,
}

struct Inner {
    policy: Policy,
    ledger: Arc<dyn Ledger>,
    metrics: Metrics,
    alerts: Option<AlertSender>,
    last_purge: Mutex<Option<Instant>>,
}

/// The ledger key of a subject id: UUIDs in their canonical form, so spellings of one id that
/// the store accepts (upper case, braces, no hyphens) count together.
fn key(subject: &str) -> Cow<'_, str> {
    match uuid::Uuid::try_parse(subject) {
        Ok(u) => {
            let canonical = u.hyphenated().to_string();
            if canonical == subject {
                Cow::Borrowed(subject)
            } else {
                Cow::Owned(canonical)
            }
        }
        Err(_) => Cow::Borrowed(subject),
    }
}

/// The refusal of a verification of `subject` (its ledger key) locked for `retry_after` more.
fn locked(subject: Cow<'_, str>, retry_after: Duration) -> LockoutError {
    LockoutError::Locked(Locked {
        subject: subject.into_owned(),
        retry_after,
    })
}

impl Lockouts {
    /// The service: `policy` (see [`Policy::from_config`]) counted in `ledger`; lock events go to
    /// `metrics` and, when set, the alert email task.
    pub fn new(
        policy: Policy,
        ledger: Arc<dyn Ledger>,
        metrics: Metrics,
        alerts: Option<AlertSender>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                policy,
                ledger,
                metrics,
                alerts,
                last_purge: Mutex::new(None),
            }),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Policy {
        self.inner.policy
    }

    /// The policy and the ledger, for the start-up log.
    pub fn describe(&self) -> String {
        let p = &self.inner.policy;
        if p.is_enabled() {
            format!(
                "{} failures within {} s lock a subject for {} s; ledger {}",
                p.attempts,
                p.window.as_secs(),
                p.lock.as_secs(),
                self.inner.ledger.describe()
            )
        } else {
            "off".to_owned()
        }
    }

    /// `Ok` when `subject` may be verified; [`LockoutError::Locked`] with the time left while it
    /// is locked; [`LockoutError::Store`] when the ledger cannot tell (refuse the request).
    pub async fn check(&self, subject: &str) -> Result<(), LockoutError> {
        if !self.inner.policy.is_enabled() {
            return Ok(());
        }
        let subject = key(subject);
        match self.inner.ledger.locked_for(&subject).await? {
            Some(retry_after) => Err(locked(subject, retry_after)),
            None => Ok(()),
        }
    }

    /// For each of `subjects` in order, the time left on its lock (`None`: it may be verified),
    /// asked of the ledger at once ([`Ledger::locked_among`]); [`LockoutError::Store`] when the
    /// ledger cannot tell. Identification asks this of all its candidates.
    pub async fn locked_among(
        &self,
        subjects: &[&str],
    ) -> Result<Vec<Option<Duration>>, LockoutError> {
        if !self.inner.policy.is_enabled() {
            return Ok(vec![None; subjects.len()]);
        }
        let keys: Vec<String> = subjects.iter().map(|s| key(s).into_owned()).collect();
        let left = self.inner.ledger.locked_among(&keys).await?;
        if left.len() != keys.len() {
            return Err(LockoutError::Store(StoreError::Backend {
                operation: "read subject lockouts",
                source: format!("{} answers for {} subjects", left.len(), keys.len()).into(),
            }));
        }
        Ok(left)
    }

    /// Lift `subject`'s lock and forget its counted failures: an administrator's decision (after
    /// checking with the person, or once an attack stopped), logged on `facekey::security`.
    /// Returns the time that was left on the lock (`None`: it was not locked).
    pub async fn release(&self, subject: &str) -> Result<Option<Duration>, LockoutError> {
        let subject = key(subject);
        let left = self.inner.ledger.release(&subject).await?;
        tracing::warn!(
            target: "facekey::security",
            subject = %subject,
            was_locked = left.is_some(),
            left_secs = left.map_or(0, |d| d.as_secs()),
            "subject lockout released by an administrator"
        );
        Ok(left)
    }

    /// Forget a deleted subject's counted failures and lock, so nothing about it outlives its
    /// erasure in the ledger (a row would otherwise stay until its window or lock ends, up to
    /// days). Best effort: the subject is gone either way, and rows expire on their own.
    pub async fn forget(&self, subject: &str) {
        if let Err(e) = self.inner.ledger.release(&key(subject)).await {
            tracing::warn!(subject, error = %e, "forgetting a deleted subject's lockout failed; its row expires on its own");
        }
    }

    /// Count one failed attempt (a rejected verification, a rejected identification that
    /// matched the subject, a face refused as not matching it) against an existing subject
    /// (pass ids of existing subjects only,
    /// so clients cannot fill the ledger with made-up ids). Returns the lock when this failure
    /// locked the subject (the threshold-th within the window), after emitting the lock event;
    /// `None` when it was counted below the threshold. [`LockoutError::Locked`] when the subject
    /// was locked already (by requests decided meanwhile): the failure is not counted and the
    /// caller answers 429 instead of the decision.
    ///
    /// The counting and the lock event run on a task of their own, which this call awaits: a
    /// caller dropped meanwhile (the client gone, the request timeout) neither leaves a lock
    /// in force whose event was never emitted (later attempts only see it already locked) nor
    /// a failure uncounted. The purge of expired entries runs after the event, in the
    /// background.
    pub async fn record_failure(&self, subject: &str) -> Result<Option<Locked>, LockoutError> {
        let policy = self.inner.policy;
        if !policy.is_enabled() {
            return Ok(None);
        }
        let subject = key(subject).into_owned();
        let this = self.clone();
        tokio::spawn(async move {
            let counted = this.inner.ledger.record_failure(&subject, &policy).await;
            let result = this.counted(subject, counted?);
            this.purge_now_and_then();
            result
        })
        .await
        .map_err(|e| {
            LockoutError::Store(StoreError::Backend {
                operation: "count a failed attempt",
                source: Box::new(e),
            })
        })?
    }

    /// What counting one failure of `subject` did, told: the lock event when it locked it.
    fn counted(&self, subject: String, counted: Counted) -> Result<Option<Locked>, LockoutError> {
        let policy = self.inner.policy;
        match counted {
            Counted::LockedNow { failures, lock } => {
                SubjectLockout {
                    at: SystemTime::now(),
                    subject: subject.clone(),
                    failures,
                    window: policy.window,
                    locked_for: lock,
                }
                .emit(&self.inner.metrics, self.inner.alerts.as_ref());
                Ok(Some(Locked {
                    subject,
                    retry_after: lock,
                }))
            }
            Counted::Failures(failures) => {
                tracing::debug!(
                    target: "facekey::security",
                    subject = %subject,
                    failures,
                    "failed verification counted"
                );
                Ok(None)
            }
            Counted::AlreadyLocked(retry_after) => Err(locked(Cow::Owned(subject), retry_after)),
        }
    }

    /// A successful verification: forget the subject's counted failures.
    /// [`LockoutError::Locked`] when the subject was locked meanwhile (by failures of requests
    /// sent at the same time): nothing is cleared and the caller answers 429 instead of the
    /// decision, so a match found among more attempts than the threshold is never revealed.
    pub async fn record_success(&self, subject: &str) -> Result<(), LockoutError> {
        if !self.inner.policy.is_enabled() {
            return Ok(());
        }
        let subject = key(subject);
        match self.inner.ledger.clear(&subject).await? {
            Some(retry_after) => Err(locked(subject, retry_after)),
            None => Ok(()),
        }
    }

    /// Every `every` ([`PURGE_INTERVAL`] in the server), [`Ledger::purge_expired`], whatever
    /// the traffic: expired entries go without a failure to trigger it, and a write of the
    /// embedded mode's lock file that failed (a full or read-only disk) is tried again
    /// ([`crate::lockout_file`]). Without it the retry waited for the next failed verification
    /// of any subject, so a lock taken (or released) while the disk was full could be lost at
    /// the next restart. Nothing with the lockout off. Ends when the ledger is dropped; the
    /// server also aborts it when it stops. `every` is at least a millisecond.
    pub fn purge_every(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let ledger = Arc::downgrade(&self.inner.ledger);
        let enabled = self.inner.policy.is_enabled();
        tokio::spawn(async move {
            if !enabled {
                return;
            }
            // `interval` refuses a zero period.
            let mut ticks = tokio::time::interval(every.max(Duration::from_millis(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is at once: the ledger was just opened (and its file read).
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(ledger) = ledger.upgrade() else {
                    return;
                };
                purge(ledger.as_ref()).await;
            }
        })
    }

    /// Delete expired ledger entries at most once per [`PURGE_INTERVAL`], on a task of its own
    /// (nobody waits for it); a failure is logged, not returned (the failure itself was
    /// counted).
    fn purge_now_and_then(&self) {
        {
            let mut last = self
                .inner
                .last_purge
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < PURGE_INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        let ledger = Arc::clone(&self.inner.ledger);
        tokio::spawn(async move { purge(ledger.as_ref()).await });
    }
}

/// One purge of `ledger`'s expired entries; a failure is logged, not returned.
async fn purge(ledger: &dyn Ledger) {
    match ledger.purge_expired().await {
        Ok(0) => {}
        Ok(purged) => tracing::debug!(purged, "expired lockout entries purged"),
        Err(e) => tracing::warn!(error = %e, "purging expired lockout entries failed"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SUBJECT: &str = "0b0f6bb6-3c51-4a4f-9a55-6f3f3c2b1a10";

    fn policy() -> Policy {
        Policy {
            attempts: 5,
            window: Duration::from_secs(900),
            lock: Duration::from_secs(600),
            max_lock: Duration::ZERO,
        }
    }

    fn service(
        policy: Policy,
        capacity: usize,
    ) -> (Lockouts, ManualClock, Arc<MemoryLedger>, Metrics) {
        let clock = ManualClock::default();
        let ledger = Arc::new(MemoryLedger::with_clock(Arc::new(clock.clone()), capacity));
        let metrics = Metrics::new().unwrap();
        let lockouts = Lockouts::new(policy, ledger.clone(), metrics.clone(), None);
        (lockouts, clock, ledger, metrics)
    }

    fn lockouts_total(metrics: &Metrics) -> u64 {
        metrics.subject_lockouts.get()
    }

    /// A shared ledger that can be switched unreachable, otherwise a memory ledger.
    struct Flaky {
        inner: MemoryLedger,
        down: std::sync::atomic::AtomicBool,
    }

    impl Flaky {
        /// A shared ledger that answers, until [`Flaky::set_down`].
        fn up() -> Arc<Self> {
            Arc::new(Flaky {
                inner: MemoryLedger::new(),
                down: std::sync::atomic::AtomicBool::new(false),
            })
        }

        /// Take the shared ledger down (`true`) or bring it back.
        fn set_down(&self, down: bool) {
            self.down.store(down, std::sync::atomic::Ordering::Relaxed);
        }

        fn check(&self) -> Result<(), LockoutError> {
            if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                Err(StoreError::Unavailable("connection refused".into()).into())
            } else {
                Ok(())
            }
        }
    }

    #[async_trait::async_trait]
    impl Ledger for Flaky {
        async fn locked_for(&self, subject: &str) -> Result<Option<Duration>, LockoutError> {
            self.check()?;
            self.inner.locked_for(subject).await
        }
        async fn record_failure(
            &self,
            subject: &str,
            policy: &Policy,
        ) -> Result<Counted, LockoutError> {
            self.check()?;
            self.inner.record_failure(subject, policy).await
        }
        async fn clear(&self, subject: &str) -> Result<Option<Duration>, LockoutError> {
            self.check()?;
            self.inner.clear(subject).await
        }
        async fn release(&self, subject: &str) -> Result<Option<Duration>, LockoutError> {
            self.check()?;
            self.inner.release(subject).await
        }
        async fn purge_expired(&self) -> Result<u64, LockoutError> {
            self.check()?;
            self.inner.purge_expired().await
        }
        async fn adopt(
            &self,
            subject: &str,
            left: Duration,
            streak: u32,
            remembered: Duration,
        ) -> Result<bool, LockoutError> {
            self.check()?;
            self.inner.adopt(subject, left, streak, remembered).await
        }
        async fn active_locks(&self, limit: usize) -> Result<Vec<ActiveLock>, LockoutError> {
            self.check()?;
            self.inner.active_locks(limit).await
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
    }

    #[tokio::test]
    async fn an_unreachable_shared_ledger_counts_locally_and_the_lock_outlives_the_outage() {
        let metrics = Metrics::new().unwrap();
        let shared = Flaky::up();
        let ledger = Arc::new(FallbackLedger::new(shared.clone(), metrics.clone()));
        let l = Lockouts::new(policy(), ledger, metrics.clone(), None);
        for _ in 0..2 {
            assert!(l.record_failure(SUBJECT).await.unwrap().is_none());
        }
        shared.set_down(true);
        // During the outage verification is not refused, and failures still count.
        l.check(SUBJECT).await.unwrap();
        assert_eq!(metrics.lockout_ledger_local.get(), 1);
        for _ in 0..4 {
            assert!(l.record_failure(SUBJECT).await.unwrap().is_none());
        }
        assert!(
            l.record_failure(SUBJECT).await.unwrap().is_some(),
            "5th local failure locks"
        );
        assert!(matches!(
            l.check(SUBJECT).await,
            Err(LockoutError::Locked(_))
        ));
        // Back: the shared ledger knows nothing of the lock, the local one still holds it.
        shared.set_down(false);
        assert!(matches!(
            l.check(SUBJECT).await,
            Err(LockoutError::Locked(_))
        ));
        assert_eq!(metrics.lockout_ledger_local.get(), 0);
        // A release while the shared ledger is down is refused and changes nothing; once it
        // answers, the release lifts the lock taken locally too.
        shared.set_down(true);
        assert!(l.release(SUBJECT).await.is_err());
        shared.set_down(false);
        assert!(matches!(
            l.check(SUBJECT).await,
            Err(LockoutError::Locked(_))
        ));
        assert!(l.release(SUBJECT).await.unwrap().is_some());
        l.check(SUBJECT).await.unwrap();
    }

    /// The server's purge every minute ([`Lockouts::purge_every`]) during an outage of the
    /// shared ledger: the replica's memory is purged, no error or warning, and the ledger is
    /// neither marked down nor up by it (a purge timing out on a busy pool flapped the flag);
    /// the shared rows wait for the next purge.
    #[tokio::test]
    async fn a_purge_during_an_outage_purges_memory_and_leaves_the_ledger_state() {
        let metrics = Metrics::new().unwrap();
        let shared = Flaky::up();
        let ledger = FallbackLedger::new(shared.clone(), metrics.clone());
        shared.set_down(true);
        assert_eq!(ledger.purge_expired().await.unwrap(), 0);
        assert_eq!(
            metrics.lockout_ledger_local.get(),
            0,
            "a purge marks nothing down"
        );
        // Marked down by a call that counts, a purge that works does not mark it up either.
        assert!(ledger.locked_for(SUBJECT).await.is_ok());
        assert_eq!(metrics.lockout_ledger_local.get(), 1);
        shared.set_down(false);
        assert_eq!(ledger.purge_expired().await.unwrap(), 0);
        assert_eq!(metrics.lockout_ledger_local.get(), 1);
    }

    /// An identification's one question for all its candidates answers as a check of each
    /// would, in their order, and through an outage of the shared ledger keeps the locks it
    /// learnt (and those taken locally meanwhile).
    #[tokio::test]
    async fn locks_among_candidates_are_answered_in_order_and_held_through_an_outage() {
        const OTHER: &str = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
        const FREE: &str = "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a";
        let metrics = Metrics::new().unwrap();
        let shared = Flaky::up();
        let ledger = Arc::new(FallbackLedger::new(shared.clone(), metrics.clone()));
        let l = Lockouts::new(policy(), ledger, metrics.clone(), None);
        for _ in 0..5 {
            l.record_failure(SUBJECT).await.unwrap();
        }
        let upper = SUBJECT.to_uppercase();
        let left = l.locked_among(&[FREE, &upper, OTHER]).await.unwrap();
        assert!(left[0].is_none() && left[2].is_none(), "{left:?}");
        assert!(
            left[1].is_some_and(|d| d > Duration::from_secs(590)),
            "{left:?}"
        );
        assert!(l.locked_among(&[]).await.unwrap().is_empty());
        // The shared ledger gone: the lock it told of still holds, and one taken here joins it.
        shared.set_down(true);
        for _ in 0..5 {
            l.record_failure(OTHER).await.unwrap();
        }
        let left = l.locked_among(&[FREE, SUBJECT, OTHER]).await.unwrap();
        assert_eq!(metrics.lockout_ledger_local.get(), 1);
        assert!(left[0].is_none(), "{left:?}");
        assert!(left[1].is_some() && left[2].is_some(), "{left:?}");
        // Lockout off: nobody is asked.
        let off_policy = Policy {
            attempts: 0,
            ..policy()
        };
        let off = Lockouts::new(off_policy, shared.clone(), metrics, None);
        assert_eq!(off.locked_among(&[SUBJECT]).await.unwrap(), vec![None]);
    }

    /// A lock on the shared ledger keeps holding while the shared ledger is unreachable: taken
    /// through this replica (its answer is remembered) or through another one (copied at the
    /// recheck), an outage neither lifts it nor lets an accept through nor counts failures
    /// afresh. Before, the outage answered from this replica's memory alone: 5 new attempts and
    /// an accept for a locked subject. A release elsewhere reaches the copy at the next recheck.
    #[tokio::test]
    async fn shared_locks_hold_through_an_outage() {
        const OTHER: &str = "0f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b";
        let metrics = Metrics::new().unwrap();
        let shared = Flaky::up();
        let ledger = Arc::new(FallbackLedger::new(shared.clone(), metrics.clone()));
        let l = Lockouts::new(policy(), ledger.clone(), metrics.clone(), None);
        // SUBJECT locked through this replica; OTHER through another one.
        for _ in 0..5 {
            l.record_failure(SUBJECT).await.unwrap();
        }
        for _ in 0..5 {
            shared.inner.record_failure(OTHER, &policy()).await.unwrap();
        }
        ledger.recheck().await;

        shared.set_down(true);
        for subject in [SUBJECT, OTHER] {
            assert!(
                matches!(l.check(subject).await, Err(LockoutError::Locked(_))),
                "{subject} stays locked during the outage"
            );
            assert!(
                matches!(
                    l.record_success(subject).await,
                    Err(LockoutError::Locked(_))
                ),
                "no accept for {subject} during the outage"
            );
            assert!(
                matches!(
                    l.record_failure(subject).await,
                    Err(LockoutError::Locked(_))
                ),
                "a failure on a locked subject is refused, not counted afresh"
            );
        }
        assert!(
            ledger.local.held_locks().is_empty(),
            "nothing counted afresh in memory"
        );
        assert_eq!(metrics.lockout_ledger_local.get(), 1);

        // Back; another replica releases OTHER: the next recheck drops its copy.
        shared.set_down(false);
        shared.inner.release(OTHER).await.unwrap();
        ledger.recheck().await;
        shared.set_down(true);
        l.check(OTHER).await.unwrap();
        assert!(matches!(
            l.check(SUBJECT).await,
            Err(LockoutError::Locked(_))
        ));
    }

    /// A shared lock that ends during an outage passes its streak on: the next lock taken in
    /// this replica's memory is as long as the shared ledger's next would have been. Before, it
    /// started again at the base lock: an attacker whose locks had escalated to the longest
    /// got the shortest again once the database went away.
    #[tokio::test]
    async fn a_lock_that_ends_during_an_outage_passes_its_streak_on() {
        let metrics = Metrics::new().unwrap();
        let shared = Flaky::up();
        let ledger = Arc::new(FallbackLedger::new(shared.clone(), metrics.clone()));
        let policy = Policy {
            max_lock: Duration::from_secs(86_400),
            ..policy()
        };
        // Another replica's third lock in a row, about to end.
        shared
            .inner
            .adopt(
                SUBJECT,
                Duration::from_millis(50),
                3,
                Duration::from_millis(50),
            )
            .await
            .unwrap();
        ledger.recheck().await;
        shared.set_down(true);
        tokio::time::sleep(Duration::from_millis(80)).await;
        let mut last = None;
        for _ in 0..policy.attempts {
            last = Some(ledger.record_failure(SUBJECT, &policy).await.unwrap());
        }
        match last {
            Some(Counted::LockedNow { lock, .. }) => {
                assert_eq!(lock, policy.lock_for(4));
                assert!(lock > policy.lock_for(1));
            }
            other => panic!("not locked: {other:?}"),
        }
    }

    /// A lock that ended just before the outage, its streak still remembered, passes the
    /// streak on too: the recheck copies it with the locks in force.
    #[tokio::test]
    async fn a_lock_that_ended_before_the_outage_passes_its_streak_on() {
        let shared = Flaky::up();
        let ledger = FallbackLedger::new(shared.clone(), Metrics::new().unwrap());
        let policy = Policy {
            max_lock: Duration::from_secs(86_400),
            ..policy()
        };
        shared
            .inner
            .adopt(SUBJECT, Duration::from_millis(20), 3, policy.max_lock)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let listed = shared.inner.active_locks(10).await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!((listed[0].left, listed[0].streak), (Duration::ZERO, 3));
        ledger.recheck().await;
        shared.set_down(true);
        // Not locked, so the failures count here; the lock they take continues the streak.
        assert_eq!(ledger.locked_for(SUBJECT).await.unwrap(), None);
        let mut last = None;
        for _ in 0..policy.attempts {
            last = Some(ledger.record_failure(SUBJECT, &policy).await.unwrap());
        }
        match last {
            Some(Counted::LockedNow { lock, .. }) => assert_eq!(lock, policy.lock_for(4)),
            other => panic!("not locked: {other:?}"),
        }
    }

    /// A copied streak ends as the shared ledger's would: with a success during the outage, or
    /// `max_lock` after the lock's end. Either way the next lock is the base one again.
    #[tokio::test]
    async fn a_copied_streak_ends_with_a_success_or_after_max_lock() {
        let policy = Policy {
            attempts: 2,
            window: Duration::from_secs(900),
            lock: Duration::from_millis(10),
            max_lock: Duration::from_millis(200),
        };
        assert!(policy.lock_for(4) > policy.lock_for(1));
        for success in [true, false] {
            let shared = Flaky::up();
            let ledger = FallbackLedger::new(shared.clone(), Metrics::new().unwrap());
            let left = Duration::from_millis(50);
            shared.inner.adopt(SUBJECT, left, 3, left).await.unwrap();
            ledger.recheck().await;
            shared.set_down(true);
            if success {
                tokio::time::sleep(Duration::from_millis(80)).await;
                assert_eq!(ledger.clear(SUBJECT).await.unwrap(), None);
            } else {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let mut last = None;
            for _ in 0..policy.attempts {
                last = Some(ledger.record_failure(SUBJECT, &policy).await.unwrap());
            }
            match last {
                Some(Counted::LockedNow { lock, .. }) => {
                    assert_eq!(lock, policy.lock_for(1), "success: {success}")
                }
                other => panic!("not locked: {other:?}"),
            }
        }
    }

    /// A lock taken in memory during an outage moves to the shared ledger once it is back: an
    /// administrator's release through another replica (straight on the shared ledger) then
    /// lifts it here too. Before the hand-over it held on this replica until it expired.
    #[tokio::test]
    async fn a_lock_taken_during_an_outage_is_handed_over_to_the_shared_ledger() {
        let metrics = Metrics::new().unwrap();
        let shared = Arc::new(Flaky {
            inner: MemoryLedger::new(),
            down: std::sync::atomic::AtomicBool::new(true),
        });
        let ledger = Arc::new(FallbackLedger::new(shared.clone(), metrics.clone()));
        let l = Lockouts::new(policy(), ledger.clone(), metrics.clone(), None);
        for _ in 0..5 {
            l.record_failure(SUBJECT).await.unwrap();
        }
        assert!(matches!(
            l.check(SUBJECT).await,
            Err(LockoutError::Locked(_))
        ));
        // Still down: a recheck hands nothing over.
        ledger.recheck().await;
        assert_eq!(shared.inner.locked_for(SUBJECT).await.unwrap(), None);
        shared.set_down(false);
        ledger.recheck().await;
        assert_eq!(metrics.lockout_ledger_local.get(), 0);
        let moved = shared.inner.locked_for(SUBJECT).await.unwrap().unwrap();
        assert!(moved > Duration::from_secs(590), "{moved:?}");
        assert!(ledger.local.held_locks().is_empty());
        // Still locked here, now through the shared ledger.
        assert!(matches!(
            l.check(SUBJECT).await,
            Err(LockoutError::Locked(_))
        ));
        // Another replica's release reaches the lock.
        shared.inner.release(SUBJECT).await.unwrap();
        l.check(SUBJECT).await.unwrap();
    }

    /// The local-ledger gauge clears once the shared ledger answers again, without waiting for a
    /// verification (a quiet replica at night would keep its alert up for hours).
    #[tokio::test]
    async fn a_degraded_ledger_notices_the_shared_one_is_back_without_traffic() {
        const EVERY: Duration = Duration::from_millis(20);
        let metrics = Metrics::new().unwrap();
        let shared = Arc::new(Flaky {
            inner: MemoryLedger::new(),
            down: std::sync::atomic::AtomicBool::new(true),
        });
        let ledger = Arc::new(FallbackLedger::new(shared.clone(), metrics.clone()));
        let watch = ledger.watch(EVERY);
        ledger.record_failure(SUBJECT, &policy()).await.unwrap();
        assert_eq!(metrics.lockout_ledger_local.get(), 1);
        // Still down: the rechecks change nothing.
        tokio::time::sleep(EVERY * 3).await;
        assert_eq!(metrics.lockout_ledger_local.get(), 1);
        // Back, and no request arrives: the next recheck clears it.
        shared.set_down(false);
        tokio::time::sleep(EVERY * 10).await;
        assert_eq!(metrics.lockout_ledger_local.get(), 0);
        // The watch ends with the ledger.
        drop(ledger);
        tokio::time::sleep(EVERY * 5).await;
        assert!(watch.is_finished());
    }

    #[tokio::test]
    async fn the_nth_failure_locks_not_the_one_before() {
        let (l, _, _, metrics) = service(policy(), 100);
        for _ in 0..4 {
            assert_eq!(l.record_failure(SUBJECT).await.unwrap(), None);
            l.check(SUBJECT).await.unwrap();
        }
        assert_eq!(lockouts_total(&metrics), 0);
        let locked = l.record_failure(SUBJECT).await.unwrap().unwrap();
        assert_eq!(locked.subject, SUBJECT);
        assert_eq!(locked.retry_after, Duration::from_secs(600));
        assert_eq!(lockouts_total(&metrics), 1);
        match l.check(SUBJECT).await {
            Err(LockoutError::Locked(Locked {
                subject,
                retry_after,
            })) => {
                assert_eq!(subject, SUBJECT);
                assert_eq!(retry_after, Duration::from_secs(600));
            }
            other => panic!("expected locked, got {other:?}"),
        }
        // Failures while locked are not counted and do not extend the lock or lock again; they
        // are refused (the decision is not revealed).
        match l.record_failure(SUBJECT).await {
            Err(LockoutError::Locked(locked)) => {
                assert_eq!(locked.retry_after, Duration::from_secs(600));
            }
            other => panic!("expected locked, got {other:?}"),
        }
        assert_eq!(lockouts_total(&metrics), 1);
        // Other subjects are unaffected.
        l.check("another-subject").await.unwrap();
    }

    #[tokio::test]
    async fn attempts_decided_at_once_reveal_no_more_decisions_than_the_threshold() {
        let (l, _, _, _) = service(policy(), 100);
        // Twenty verifications pass the check before the first is decided (sent at once).
        for _ in 0..20 {
            l.check(SUBJECT).await.unwrap();
        }
        // They are decided one after another; the thirteenth is a match.
        let mut outcomes = Vec::new();
        for i in 0..20 {
            let r = if i == 12 {
                l.record_success(SUBJECT).await
            } else {
                l.record_failure(SUBJECT).await.map(|_| ())
            };
            outcomes.push(match r {
                Ok(()) => "revealed",
                Err(LockoutError::Locked(_)) => "refused",
                Err(e) => panic!("{e}"),
            });
        }
        assert_eq!(outcomes[..5], ["revealed"; 5]);
        assert_eq!(
            outcomes[5..],
            ["refused"; 15],
            "the match is not revealed either"
        );
        assert!(
            l.check(SUBJECT).await.is_err(),
            "the match did not lift the lock"
        );
    }

    #[tokio::test]
    async fn the_lock_expires_and_the_count_starts_again() {
        let (l, clock, ledger, _) = service(policy(), 100);
        for _ in 0..5 {
            l.record_failure(SUBJECT).await.unwrap();
        }
        clock.advance(Duration::from_secs(599));
        let Err(LockoutError::Locked(locked)) = l.check(SUBJECT).await else {
            panic!("still locked one second before the end");
        };
        assert_eq!(locked.retry_after, Duration::from_secs(1));
        assert_eq!(locked.retry_after_secs(), 1);
        clock.advance(Duration::from_secs(1));
        l.check(SUBJECT).await.unwrap();
        assert!(ledger.is_empty(), "an expired lock is forgotten when read");
        for _ in 0..4 {
            assert_eq!(l.record_failure(SUBJECT).await.unwrap(), None);
        }
        assert!(l.record_failure(SUBJECT).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn locks_in_a_row_double_up_to_the_cap_until_a_success_or_a_quiet_spell() {
        let escalating = Policy {
            attempts: 2,
            window: Duration::from_secs(900),
            lock: Duration::from_secs(60),
            max_lock: Duration::from_secs(300),
        };
        let (l, clock, ledger, _) = service(escalating, 100);
        // Two failures lock; each lock in a row lasts twice the one before, up to 300 s.
        let lock_now = async || {
            assert_eq!(l.record_failure(SUBJECT).await.unwrap(), None);
            let locked = l.record_failure(SUBJECT).await.unwrap().unwrap();
            clock.advance(locked.retry_after);
            locked.retry_after.as_secs()
        };
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(lock_now().await);
        }
        assert_eq!(seen, [60, 120, 240, 300, 300]);
        // A successful verification ends the streak: the next lock is the first again.
        l.record_success(SUBJECT).await.unwrap();
        assert_eq!(lock_now().await, 60);
        assert_eq!(lock_now().await, 120);
        // So does a quiet spell of `max_lock` after the last lock ended.
        clock.advance(Duration::from_secs(300));
        assert_eq!(ledger.purge_expired().await.unwrap(), 1);
        assert_eq!(lock_now().await, 60);
        // An administrator's release forgets the streak too.
        assert_eq!(lock_now().await, 120);
        l.release(SUBJECT).await.unwrap();
        assert_eq!(lock_now().await, 60);
        // The quiet spell counts even before a purge removed the entry.
        assert_eq!(lock_now().await, 120);
        clock.advance(Duration::from_secs(300));
        assert_eq!(lock_now().await, 60);
        // The base policy's numbers: a day at most, from 15 minutes (900, 1800, … 86400).
        let configured = Policy {
            lock: Duration::from_secs(900),
            max_lock: Duration::from_secs(facekey_settings::defaults::LOCKOUT_MAX_SECS),
            ..escalating
        };
        assert_eq!(configured.lock_for(1), Duration::from_secs(900));
        assert_eq!(configured.lock_for(7), Duration::from_secs(57_600));
        assert_eq!(configured.lock_for(8), configured.max_lock);
        assert_eq!(configured.lock_for(u32::MAX), configured.max_lock);
        // A base lock longer than the cap is kept as it is, never shortened.
        let long = Policy {
            lock: Duration::from_secs(200_000),
            ..configured
        };
        assert_eq!(long.lock_for(3), Duration::from_secs(200_000));
    }

    /// Failures below the threshold after a lock are counted through their window, but do not
    /// keep the lock's streak alive: `max_lock` after the lock ended the next lock is the first
    /// of a new streak. Before, each failure kept the entry (and with it the streak) a window
    /// longer, so one failure every window doubled every next lock forever.
    #[tokio::test]
    async fn failures_below_the_threshold_do_not_keep_a_streak_past_max_lock() {
        let p = Policy {
            attempts: 2,
            window: Duration::from_secs(900),
            lock: Duration::from_secs(100),
            max_lock: Duration::from_secs(200),
        };
        let (l, clock, ledger, _) = service(p, 100);
        assert_eq!(l.record_failure(SUBJECT).await.unwrap(), None);
        let first = l.record_failure(SUBJECT).await.unwrap().unwrap();
        assert_eq!(first.retry_after, Duration::from_secs(100));
        // The lock ends at 100 s; its streak is remembered until 300 s.
        clock.advance(Duration::from_secs(100));
        clock.advance(Duration::from_secs(150));
        // 250 s: one failure, below the threshold, counted.
        assert_eq!(l.record_failure(SUBJECT).await.unwrap(), None);
        assert!(
            ledger.remembers_streak(SUBJECT),
            "150 s after the lock ended"
        );
        // 350 s: 250 s after the lock ended, past `max_lock`: the streak is over, while the
        // failure at 250 s still counts (inside its window), so this one locks — for the base
        // lock, not the 200 s of a second lock in a row.
        clock.advance(Duration::from_secs(100));
        let next = l.record_failure(SUBJECT).await.unwrap().unwrap();
        assert_eq!(next.retry_after, Duration::from_secs(100));
        let held = ledger.held_locks();
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(held[0].streak, 1, "{held:?}");
        assert_eq!(held[0].remembered, Duration::from_secs(300), "{held:?}");
    }

    #[tokio::test]
    async fn success_clears_failures_but_not_a_lock() {
        let (l, _, _, _) = service(policy(), 100);
        for _ in 0..4 {
            l.record_failure(SUBJECT).await.unwrap();
        }
        l.record_success(SUBJECT).await.unwrap();
        for _ in 0..4 {
            assert_eq!(l.record_failure(SUBJECT).await.unwrap(), None);
        }
        assert!(l.record_failure(SUBJECT).await.unwrap().is_some());
        // A success decided while locked is refused and does not lift the lock.
        assert!(matches!(
            l.record_success(SUBJECT).await,
            Err(LockoutError::Locked(_))
        ));
        assert!(matches!(
            l.check(SUBJECT).await,
            Err(LockoutError::Locked(_))
        ));
    }

    #[tokio::test]
    async fn the_window_slides() {
        let (l, clock, _, _) = service(policy(), 100);
        // Failures at 0, 100, 200, 300 s; at 900 s the first has left the window.
        for _ in 0..4 {
            l.record_failure(SUBJECT).await.unwrap();
            clock.advance(Duration::from_secs(100));
        }
        clock.advance(Duration::from_secs(500));
        assert_eq!(
            l.record_failure(SUBJECT).await.unwrap(),
            None,
            "only 4 failures within the last 900 s"
        );
        // 100, 200, 300 and 900 s are within the window at 999 s: the fifth locks.
        clock.advance(Duration::from_secs(99));
        assert!(l.record_failure(SUBJECT).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn spellings_of_one_uuid_count_together() {
        let (l, _, _, _) = service(policy(), 100);
        let upper = SUBJECT.to_uppercase();
        let simple = SUBJECT.replace('-', "");
        for s in [SUBJECT, &upper, &simple, SUBJECT] {
            assert_eq!(l.record_failure(s).await.unwrap(), None);
        }
        let locked = l.record_failure(&upper).await.unwrap().unwrap();
        assert_eq!(locked.subject, SUBJECT);
        assert!(l.check(&simple).await.is_err());
    }

    #[tokio::test]
    async fn off_counts_nothing() {
        let (l, _, ledger, _) = service(Policy::OFF, 100);
        for _ in 0..50 {
            assert_eq!(l.record_failure(SUBJECT).await.unwrap(), None);
        }
        l.check(SUBJECT).await.unwrap();
        assert!(ledger.is_empty());
        assert_eq!(l.describe(), "off");
    }

    #[tokio::test]
    async fn one_attempt_locks_at_once() {
        let policy = Policy {
            attempts: 1,
            ..policy()
        };
        let (l, _, _, _) = service(policy, 100);
        assert!(l.record_failure(SUBJECT).await.unwrap().is_some());
    }

    /// A memory ledger whose purge, and whose answer to a counted failure, take their time
    /// (a slow database, a lock wait, a COMMIT whose answer is late).
    struct Slow {
        inner: MemoryLedger,
        answer_after: Duration,
        purge_after: Duration,
    }

    #[async_trait::async_trait]
    impl Ledger for Slow {
        async fn locked_for(&self, subject: &str) -> Result<Option<Duration>, LockoutError> {
            self.inner.locked_for(subject).await
        }
        async fn record_failure(
            &self,
            subject: &str,
            policy: &Policy,
        ) -> Result<Counted, LockoutError> {
            let counted = self.inner.record_failure(subject, policy).await;
            tokio::time::sleep(self.answer_after).await;
            counted
        }
        async fn clear(&self, subject: &str) -> Result<Option<Duration>, LockoutError> {
            self.inner.clear(subject).await
        }
        async fn release(&self, subject: &str) -> Result<Option<Duration>, LockoutError> {
            self.inner.release(subject).await
        }
        async fn purge_expired(&self) -> Result<u64, LockoutError> {
            tokio::time::sleep(self.purge_after).await;
            self.inner.purge_expired().await
        }
        fn describe(&self) -> String {
            "slow".into()
        }
    }

    /// `record_failure` of a one-attempt policy over `ledger`, dropped after `after`; then the
    /// lock events emitted within a few seconds.
    async fn lockouts_emitted_when_dropped(ledger: Slow, after: Duration) -> u64 {
        let metrics = Metrics::new().unwrap();
        let policy = Policy {
            attempts: 1,
            ..policy()
        };
        let l = Lockouts::new(policy, Arc::new(ledger), metrics.clone(), None);
        // The caller goes away (the client, the request timeout) while the call is not done.
        let _ = tokio::time::timeout(after, l.record_failure(SUBJECT)).await;
        let mut emitted = lockouts_total(&metrics);
        for _ in 0..500 {
            if emitted > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            emitted = lockouts_total(&metrics);
        }
        // Locked either way: the event is what a dropped caller used to lose.
        assert!(l.check(SUBJECT).await.is_err());
        emitted
    }

    /// The lock is in force once the ledger answered: a caller dropped during the purge that
    /// follows (slow, and run once a minute by whichever failure comes) still emits its event.
    #[tokio::test]
    async fn a_caller_dropped_during_the_purge_still_emits_the_lock() {
        let ledger = Slow {
            inner: MemoryLedger::new(),
            answer_after: Duration::ZERO,
            purge_after: Duration::from_secs(60),
        };
        let emitted = lockouts_emitted_when_dropped(ledger, Duration::from_millis(100)).await;
        assert_eq!(emitted, 1, "the lock's event was lost with its caller");
    }

    /// A caller dropped after the ledger counted but before it answered (a late COMMIT answer)
    /// still emits the lock event once the answer comes.
    #[tokio::test]
    async fn a_caller_dropped_before_the_ledger_answered_still_emits_the_lock() {
        let ledger = Slow {
            inner: MemoryLedger::new(),
            answer_after: Duration::from_millis(300),
            purge_after: Duration::ZERO,
        };
        let emitted = lockouts_emitted_when_dropped(ledger, Duration::from_millis(20)).await;
        assert_eq!(emitted, 1, "the lock's event was lost with its caller");
    }

    #[tokio::test]
    async fn memory_is_bounded_and_locks_are_never_evicted() {
        let (l, clock, ledger, _) = service(policy(), 3);
        // Two locked subjects and one with a failure fill the ledger.
        for s in ["locked-1", "locked-2"] {
            for _ in 0..5 {
                l.record_failure(s).await.unwrap();
            }
        }
        l.record_failure("failing").await.unwrap();
        assert_eq!(ledger.len(), 3);
        // Many more subjects: the ledger stays at 3, evicting only the unlocked ones.
        for i in 0..100 {
            l.record_failure(&format!("s{i}")).await.unwrap();
        }
        assert_eq!(ledger.len(), 3);
        assert!(l.check("locked-1").await.is_err());
        assert!(l.check("locked-2").await.is_err());
        // With every slot locked, a new failure is refused (fail closed), not silently dropped.
        // s99, the last one counted, holds one failure: four more lock it.
        for _ in 0..3 {
            assert_eq!(l.record_failure("s99").await.unwrap(), None);
        }
        assert!(l.record_failure("s99").await.unwrap().is_some());
        match l.record_failure("newcomer").await {
            Err(LockoutError::Full { capacity: 3, .. }) => {}
            other => panic!("expected Full, got {other:?}"),
        }
        // Once the locks are over they are purged to make room.
        clock.advance(Duration::from_secs(600));
        assert_eq!(l.record_failure("newcomer").await.unwrap(), None);
        assert_eq!(ledger.len(), 1);
    }

    #[tokio::test]
    async fn purge_removes_only_expired_entries() {
        let clock = ManualClock::default();
        let ledger = MemoryLedger::with_clock(Arc::new(clock.clone()), 10);
        let p = policy();
        ledger.record_failure("a", &p).await.unwrap();
        clock.advance(Duration::from_secs(800));
        ledger.record_failure("b", &p).await.unwrap();
        clock.advance(Duration::from_secs(100));
        assert_eq!(
            ledger.purge_expired().await.unwrap(),
            1,
            "a's window is over"
        );
        assert_eq!(ledger.len(), 1);
    }

    #[test]
    fn policy_bounds() {
        assert!(policy().validated().is_ok());
        assert!(Policy::OFF.validated().is_ok());
        let e = Policy {
            window: Duration::ZERO,
            ..policy()
        }
        .validated()
        .unwrap_err();
        assert!(e.contains("FACEKEY_LOCKOUT_WINDOW_SECS"), "{e}");
        let e = Policy {
            lock: MAX_PERIOD + Duration::from_secs(1),
            max_lock: Duration::ZERO,
            ..policy()
        }
        .validated()
        .unwrap_err();
        assert!(e.contains("FACEKEY_LOCKOUT_SECS"), "{e}");
        let e = Policy {
            attempts: MAX_ATTEMPTS + 1,
            ..policy()
        }
        .validated()
        .unwrap_err();
        assert!(e.contains("FACEKEY_LOCKOUT_ATTEMPTS"), "{e}");
        let e = Policy {
            max_lock: MAX_PERIOD + Duration::from_secs(1),
            ..policy()
        }
        .validated()
        .unwrap_err();
        assert!(e.contains("FACEKEY_LOCKOUT_MAX_SECS"), "{e}");
        let mut config = Config::for_tests();
        let p = Policy::from_config(&config).unwrap();
        assert_eq!(
            (p.attempts, p.window, p.lock, p.max_lock),
            (
                5,
                Duration::from_secs(900),
                Duration::from_secs(900),
                Duration::from_secs(86_400)
            )
        );
        // The longest lock is a setting: an hour caps the doubling at the third lock.
        config.lockout_max_secs = 3600;
        let p = Policy::from_config(&config).unwrap();
        assert_eq!(p.lock_for(3), Duration::from_secs(3600));
        assert_eq!(p.lock_for(4), Duration::from_secs(3600));
        // 0: every lock lasts the first one's length.
        config.lockout_max_secs = 0;
        let p = Policy::from_config(&config).unwrap();
        assert_eq!(p.lock_for(5), Duration::from_secs(900));
    }

    #[test]
    fn retry_after_rounds_up() {
        let l = |ms| Locked {
            subject: "s".into(),
            retry_after: Duration::from_millis(ms),
        };
        assert_eq!(l(0).retry_after_secs(), 1);
        assert_eq!(l(1500).retry_after_secs(), 2);
        assert_eq!(l(2000).retry_after_secs(), 2);
        assert!(l(1500).to_string().contains("retry in 2 s"));
    }
}
