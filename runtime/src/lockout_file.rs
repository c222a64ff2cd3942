//! The embedded mode's lockout ledger, kept across restarts. [`MemoryLedger`] counts the
//! failures; the locks it holds, and the streaks of ended locks it still remembers (so the next
//! lock is longer, [`crate::lockout::Policy::lock_for`]), are written to
//! `<data dir>/lockouts.json` whenever one is taken, taken over, released or ended by a success,
//! and taken back at start-up. Without it a restart (a rollout, a node drain, an OOM kill)
//! lifted every lock, and a subject locked after a run of guessed photos could be guessed at
//! again at once.
//!
//! What is not kept: failures counted below the threshold (a restart gives a subject's guesser
//! at most `FACEKEY_LOCKOUT_ATTEMPTS - 1` more tries; writing every failure would put a disk
//! write on every rejected verification). With PostgreSQL the shared ledger keeps everything.
//! The file is replaced atomically (written beside it, synced, renamed, the directory synced),
//! owner-only, by a task of its own (a request dropped meanwhile loses no change). A write that
//! fails is logged on `facekey::security`, counted in `facekey_lockout_saves_failed_total` and
//! tried again at the next purge ([`Ledger::purge_expired`]), which the server runs every minute
//! whatever the traffic ([`crate::lockout::Lockouts::purge_every`]), so a lock taken or released
//! while the disk was full reaches the file at most a minute after the disk has room again; the
//! lock holds in memory regardless. A file that cannot be read
//! stops the start-up with its path named: starting without the locks it held would lift them
//! silently. No restored lock lasts longer than the policy in force allows.

use crate::private_file::epoch_ms;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use prometheus::IntCounter;
use serde::{Deserialize, Serialize};

use crate::lockout::{
    ActiveLock, Counted, Ledger, LockoutError, MEMORY_CAPACITY, MemoryLedger, Policy,
};

/// The file's name in the data directory.
pub const FILE_NAME: &str = "lockouts.json";

/// The format written; another is refused at start-up.
const FORMAT: u32 = 1;

/// A lock file that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error(
    "the lockout file {path} cannot be read ({reason}); it holds the subjects locked before the \
     restart. Repair it, or delete it to start with no subject locked"
)]
pub struct LockFileError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// The file's content.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Saved {
    format: u32,
    locks: Vec<SavedLock>,
}

/// One subject's lock (or remembered streak) on the wall clock.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct SavedLock {
    subject: String,
    /// When the lock ends, milliseconds since the Unix epoch (at or before the time of writing
    /// once it ended and only its streak is remembered).
    locked_until_ms: u64,
    /// Locks in a row.
    streak: u32,
    /// Until when the streak is remembered, milliseconds since the Unix epoch.
    remembered_until_ms: u64,
}

/// The locks `locks` (as the ledger reports them at `now`) on the wall clock.
fn to_saved(locks: &[ActiveLock], now: SystemTime) -> Saved {
    Saved {
        format: FORMAT,
        locks: locks
            .iter()
            .map(|l| SavedLock {
                subject: l.subject.clone(),
                locked_until_ms: epoch_ms(now + l.left),
                streak: l.streak,
                remembered_until_ms: epoch_ms(now + l.remembered),
            })
            .collect(),
    }
}

/// What is left at `now` of the saved locks: those still locked or remembered, with the time
/// left on each (zero once the lock ended), none longer than `policy` allows (its longest lock,
/// remembered its `max_lock` longer): a clock set back, or a file edited by hand, cannot make a
/// lock outlast what the policy in force could give.
fn still_held(saved: &Saved, now: SystemTime, policy: &Policy) -> Vec<ActiveLock> {
    let now_ms = epoch_ms(now);
    let longest = policy.lock.max(policy.max_lock);
    let remembered_at_most = longest.saturating_add(policy.max_lock);
    saved
        .locks
        .iter()
        .filter(|l| l.remembered_until_ms.max(l.locked_until_ms) > now_ms)
        .map(|l| {
            let left = Duration::from_millis(l.locked_until_ms.saturating_sub(now_ms)).min(longest);
            let remembered =
                Duration::from_millis(l.remembered_until_ms.max(l.locked_until_ms) - now_ms)
                    .min(remembered_at_most)
                    .max(left);
            ActiveLock {
                subject: l.subject.clone(),
                left,
                streak: l.streak,
                remembered,
            }
        })
        .collect()
}

/// [`MemoryLedger`] whose locks survive a restart (see the module documentation).
pub struct FileLedger {
    inner: Arc<Inner>,
}

struct Inner {
    memory: MemoryLedger,
    path: PathBuf,
    /// Changes that call for a write, counted; `written` is the count the file holds.
    changes: AtomicU64,
    written: AtomicU64,
    /// One writer at a time: a writer writes every change counted before it took this.
    writing: tokio::sync::Mutex<()>,
    failed_saves: IntCounter,
}

impl FileLedger {
    /// The ledger of `dir` (the data directory): `memory`, holding again the locks its file
    /// kept (none when there is no file), none longer than `policy` allows. With the lockout
    /// off the file is not read (nothing would be locked). Failed writes count in
    /// `failed_saves`.
    pub async fn open(
        dir: &Path,
        memory: MemoryLedger,
        policy: &Policy,
        failed_saves: IntCounter,
    ) -> Result<Self, LockFileError> {
        let path = dir.join(FILE_NAME);
        let fail = |reason: String| LockFileError {
            path: path.clone(),
            reason,
        };
        let read = if policy.is_enabled() {
            std::fs::read(&path)
        } else {
            Err(std::io::ErrorKind::NotFound.into())
        };
        let held = match read {
            Ok(bytes) => {
                let saved: Saved =
                    serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?;
                if saved.format != FORMAT {
                    return Err(fail(format!(
                        "format {} where {FORMAT} was expected",
                        saved.format
                    )));
                }
                still_held(&saved, SystemTime::now(), policy)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(fail(e.to_string())),
        };
        for lock in &held {
            let taken = if lock.left.is_zero() {
                let until = memory
                    .now()
                    .checked_add(lock.remembered)
                    .ok_or_else(|| fail(format!("{}: a time out of range", lock.subject)))?;
                memory.continue_streak(&lock.subject, lock.streak, until)
            } else {
                memory
                    .adopt(&lock.subject, lock.left, lock.streak, lock.remembered)
                    .await
                    .map(|_| ())
            };
            taken.map_err(|e| fail(e.to_string()))?;
        }
        let locked = held.iter().filter(|l| !l.left.is_zero()).count();
        if !held.is_empty() {
            tracing::info!(
                target: "facekey::security",
                file = %path.display(),
                locked,
                streaks = held.len() - locked,
                "subject locks kept across the restart"
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                memory,
                path,
                changes: AtomicU64::new(0),
                written: AtomicU64::new(0),
                writing: tokio::sync::Mutex::new(()),
                failed_saves,
            }),
        })
    }

    /// Writes the locks held now, on a task of its own: a caller dropped meanwhile (its client
    /// gone, the request's deadline) neither loses the change nor leaves a write half done
    /// while the next one starts.
    async fn save(&self) {
        let inner = Arc::clone(&self.inner);
        let change = inner.changes.fetch_add(1, Ordering::SeqCst) + 1;
        let task = tokio::spawn(async move { inner.save(change).await });
        if let Err(e) = task.await {
            self.inner.failed(&e.to_string());
        }
    }
}

impl Inner {
    /// Writes the locks held now, unless a write that began after change number `change` did.
    async fn save(&self, change: u64) {
        let _writer = self.writing.lock().await;
        if self.written.load(Ordering::SeqCst) >= change {
            return;
        }
        let upto = self.changes.load(Ordering::SeqCst);
        let locks = match self.memory.active_locks(MEMORY_CAPACITY).await {
            Ok(locks) => locks,
            Err(e) => return self.failed(&e.to_string()),
        };
        let text = match serde_json::to_string(&to_saved(&locks, SystemTime::now())) {
            Ok(text) => text,
            Err(e) => return self.failed(&e.to_string()),
        };
        let path = self.path.clone();
        let written =
            tokio::task::spawn_blocking(move || crate::private_file::replace(&path, &text)).await;
        match written {
            Ok(Ok(())) => self.written.store(upto, Ordering::SeqCst),
            Ok(Err(e)) => self.failed(&e.to_string()),
            Err(e) => self.failed(&e.to_string()),
        }
    }

    /// Whether a change is not in the file yet (its write failed).
    fn behind(&self) -> bool {
        self.written.load(Ordering::SeqCst) < self.changes.load(Ordering::SeqCst)
    }

    fn failed(&self, error: &str) {
        self.failed_saves.inc();
        tracing::warn!(
            target: "facekey::security",
            file = %self.path.display(),
            error,
            "the subject locks could not be saved: they hold until this replica restarts, and \
             the write is tried again at the next purge, at most a minute later"
        );
    }
}

#[async_trait::async_trait]
impl Ledger for FileLedger {
    async fn locked_for(&self, subject: &str) -> Result<Option<Duration>, LockoutError> {
        self.inner.memory.locked_for(subject).await
    }

    async fn record_failure(
        &self,
        subject: &str,
        policy: &Policy,
    ) -> Result<Counted, LockoutError> {
        let counted = self.inner.memory.record_failure(subject, policy).await?;
        if matches!(counted, Counted::LockedNow { .. }) {
            self.save().await;
        }
        Ok(counted)
    }

    async fn clear(&self, subject: &str) -> Result<Option<Duration>, LockoutError> {
        // A success ends a remembered streak: written when the subject had one.
        let had_streak = self.inner.memory.remembers_streak(subject);
        let left = self.inner.memory.clear(subject).await?;
        if had_streak && left.is_none() {
            self.save().await;
        }
        Ok(left)
    }

    async fn release(&self, subject: &str) -> Result<Option<Duration>, LockoutError> {
        let had_streak = self.inner.memory.remembers_streak(subject);
        let left = self.inner.memory.release(subject).await?;
        if had_streak {
            self.save().await;
        }
        Ok(left)
    }

    async fn purge_expired(&self) -> Result<u64, LockoutError> {
        // What expires here has expired in the file too (its times are absolute). A write that
        // failed is tried again here: the server purges every minute (`Lockouts::purge_every`).
        let purged = self.inner.memory.purge_expired().await?;
        if self.inner.behind() {
            self.save().await;
        }
        Ok(purged)
    }

    async fn adopt(
        &self,
        subject: &str,
        left: Duration,
        streak: u32,
        remembered: Duration,
    ) -> Result<bool, LockoutError> {
        let adopted = self
            .inner
            .memory
            .adopt(subject, left, streak, remembered)
            .await?;
        self.save().await;
        Ok(adopted)
    }

    async fn active_locks(&self, limit: usize) -> Result<Vec<ActiveLock>, LockoutError> {
        self.inner.memory.active_locks(limit).await
    }

    fn describe(&self) -> String {
        format!(
            "{}, its locks kept in {}",
            self.inner.memory.describe(),
            self.inner.path.display()
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn policy() -> Policy {
        Policy {
            attempts: 2,
            window: Duration::from_secs(60),
            lock: Duration::from_secs(300),
            max_lock: Duration::from_secs(3600),
        }
        .validated()
        .unwrap()
    }

    fn counter() -> IntCounter {
        IntCounter::new("failed_saves", "test").unwrap()
    }

    async fn ledger(dir: &Path) -> FileLedger {
        FileLedger::open(dir, MemoryLedger::new(), &policy(), counter())
            .await
            .unwrap()
    }

    async fn lock(l: &FileLedger, subject: &str) -> Duration {
        let p = policy();
        assert_eq!(
            l.record_failure(subject, &p).await.unwrap(),
            Counted::Failures(1)
        );
        match l.record_failure(subject, &p).await.unwrap() {
            Counted::LockedNow { lock, .. } => lock,
            other => panic!("not locked: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_lock_outlives_the_ledger_that_took_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = ledger(dir.path()).await;
        assert_eq!(lock(&first, "alice").await, Duration::from_secs(300));
        // Below the threshold: not kept.
        first.record_failure("bob", &policy()).await.unwrap();
        drop(first);

        let again = ledger(dir.path()).await;
        let left = again.locked_for("alice").await.unwrap().expect("locked");
        assert!(left > Duration::from_secs(290) && left <= Duration::from_secs(300));
        assert_eq!(again.locked_for("bob").await.unwrap(), None);
        assert!(again.describe().contains(FILE_NAME), "{}", again.describe());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
    }

    #[tokio::test]
    async fn a_release_is_kept_too() {
        let dir = tempfile::tempdir().unwrap();
        let first = ledger(dir.path()).await;
        lock(&first, "alice").await;
        lock(&first, "carol").await;
        assert!(first.release("alice").await.unwrap().is_some());
        drop(first);
        let again = ledger(dir.path()).await;
        assert_eq!(again.locked_for("alice").await.unwrap(), None);
        assert!(again.locked_for("carol").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn the_streak_of_an_ended_lock_survives_and_a_release_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = ledger(dir.path()).await;
        assert_eq!(lock(&first, "alice").await, Duration::from_secs(300));
        drop(first);
        // The lock ended a second ago, as a restart long after it would find it.
        let path = dir.path().join(FILE_NAME);
        let mut saved: Saved = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        saved.locks[0].locked_until_ms = epoch_ms(SystemTime::now()) - 1000;
        std::fs::write(&path, serde_json::to_vec(&saved).unwrap()).unwrap();

        let again = ledger(dir.path()).await;
        assert_eq!(again.locked_for("alice").await.unwrap(), None, "ended");
        // Its streak is remembered: the next lock is the second in a row, twice as long.
        assert_eq!(lock(&again, "alice").await, Duration::from_secs(600));
        // Released by an administrator, then locked once more: the first again.
        again.release("alice").await.unwrap();
        assert_eq!(lock(&again, "alice").await, Duration::from_secs(300));
        drop(again);
        let third = ledger(dir.path()).await;
        let left = third.locked_for("alice").await.unwrap().expect("locked");
        assert!(left <= Duration::from_secs(300), "{left:?}");
    }

    #[tokio::test]
    async fn an_unreadable_file_stops_the_start_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "{\"format\": 1, \"locks\": [").unwrap();
        let Err(e) = FileLedger::open(dir.path(), MemoryLedger::new(), &policy(), counter()).await
        else {
            panic!("opened");
        };
        assert!(e.to_string().contains(FILE_NAME), "{e}");
        std::fs::write(dir.path().join(FILE_NAME), "{\"format\": 9, \"locks\": []}").unwrap();
        assert!(
            FileLedger::open(dir.path(), MemoryLedger::new(), &policy(), counter())
                .await
                .is_err()
        );
    }

    #[test]
    fn saved_times_are_absolute_and_expired_entries_are_dropped() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let locks = [
            ActiveLock {
                subject: "locked".into(),
                left: Duration::from_secs(60),
                streak: 1,
                remembered: Duration::from_secs(600),
            },
            ActiveLock {
                subject: "remembered".into(),
                left: Duration::ZERO,
                streak: 3,
                remembered: Duration::from_secs(120),
            },
        ];
        let saved = to_saved(&locks, t0);
        let later = |s| t0 + Duration::from_secs(s);
        let p = policy();
        let held = still_held(&saved, later(30), &p);
        assert_eq!(held.len(), 2);
        assert_eq!(held[0].left, Duration::from_secs(30));
        assert_eq!(held[0].remembered, Duration::from_secs(570));
        assert_eq!((held[1].left, held[1].streak), (Duration::ZERO, 3));
        let held = still_held(&saved, later(200), &p);
        assert_eq!(held.len(), 1, "the streak of 120 s is forgotten");
        assert_eq!(held[0].left, Duration::ZERO, "the lock of 60 s ended");
        assert!(still_held(&saved, later(600), &p).is_empty());
    }

    #[test]
    fn no_restored_lock_outlasts_what_the_policy_allows() {
        // Written by a node whose clock ran a year ahead (or edited by hand), read on time.
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let year = Duration::from_secs(366 * 86_400);
        let saved = Saved {
            format: FORMAT,
            locks: vec![SavedLock {
                subject: "alice".into(),
                locked_until_ms: epoch_ms(now + year),
                streak: 1,
                remembered_until_ms: u64::MAX,
            }],
        };
        let p = policy();
        let held = still_held(&saved, now, &p);
        // The longest lock this policy gives (max_lock 3600 s), remembered max_lock after it.
        assert_eq!(held[0].left, Duration::from_secs(3600));
        assert_eq!(held[0].remembered, Duration::from_secs(7200));
    }

    #[tokio::test]
    async fn with_the_lockout_off_the_file_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "not json").unwrap();
        let off = Policy::OFF;
        assert!(
            FileLedger::open(dir.path(), MemoryLedger::new(), &off, counter())
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_save_outlives_its_dropped_caller() {
        let dir = tempfile::tempdir().unwrap();
        let l = ledger(dir.path()).await;
        lock(&l, "alice").await;
        // An administrator's release whose request is dropped while another write holds the
        // file: the release's write still follows.
        let other_write = l.inner.writing.lock().await;
        let release = l.release("alice");
        let dropped = tokio::time::timeout(Duration::from_millis(50), release).await;
        assert!(
            dropped.is_err(),
            "the release did not wait for the other write"
        );
        drop(other_write);
        for _ in 0..200 {
            let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
            if !text.contains("alice") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(l);
        let again = ledger(dir.path()).await;
        assert_eq!(again.locked_for("alice").await.unwrap(), None, "released");
    }

    #[tokio::test]
    async fn a_failed_write_is_counted_and_tried_again_at_the_next_purge() {
        let dir = tempfile::tempdir().unwrap();
        let failed = counter();
        let l = FileLedger::open(dir.path(), MemoryLedger::new(), &policy(), failed.clone())
            .await
            .unwrap();
        // The file's place taken by a directory: the rename fails, the lock holds in memory.
        std::fs::create_dir(dir.path().join(FILE_NAME)).unwrap();
        lock(&l, "alice").await;
        assert_eq!(failed.get(), 1);
        assert!(l.locked_for("alice").await.unwrap().is_some());
        std::fs::remove_dir(dir.path().join(FILE_NAME)).unwrap();
        l.purge_expired().await.unwrap();
        drop(l);
        let again = ledger(dir.path()).await;
        assert!(again.locked_for("alice").await.unwrap().is_some());
        // Nothing behind: a purge writes nothing.
        again.purge_expired().await.unwrap();
    }

    /// A lock whose write failed reaches the file once the disk takes writes again, with no
    /// further failure, success or release to trigger it: the purge task of
    /// `Lockouts::purge_every` (every minute in the server; 20 ms here) tries the write again.
    /// Before, only the purge after a later failed verification did, so a lock taken while the
    /// disk was full was lost at the next restart.
    #[tokio::test]
    async fn a_failed_write_is_tried_again_by_the_purge_task_without_traffic() {
        let dir = tempfile::tempdir().unwrap();
        let failed = counter();
        let file = Arc::new(
            FileLedger::open(dir.path(), MemoryLedger::new(), &policy(), failed.clone())
                .await
                .unwrap(),
        );
        let metrics = crate::metrics::Metrics::new().unwrap();
        let lockouts = crate::lockout::Lockouts::new(policy(), file.clone(), metrics.clone(), None);
        let task = lockouts.purge_every(Duration::from_millis(20));
        // The disk takes no write: the file's place is held by a directory, which the rename
        // cannot replace (a read-only directory would not stop the root these tests may run
        // as). The lock is recorded on the ledger itself, so no purge after a failure runs.
        let blocker = dir.path().join(FILE_NAME);
        std::fs::create_dir(&blocker).unwrap();
        lock(&file, "alice").await;
        assert!(failed.get() >= 1, "the write failed");
        assert!(file.inner.behind());
        // The purges meanwhile fail too, and are counted as such.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while failed.get() < 2 {
            assert!(std::time::Instant::now() < deadline, "no purge tried again");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Writable again; no call on the ledger from here.
        std::fs::remove_dir(&blocker).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while file.inner.behind() {
            assert!(
                std::time::Instant::now() < deadline,
                "the failed write was never tried again"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
        drop((lockouts, file));
        let again = ledger(dir.path()).await;
        let left = again.locked_for("alice").await.unwrap().expect("locked");
        assert!(left > Duration::from_secs(290), "{left:?}");
    }
}
