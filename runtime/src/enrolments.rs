//! Enrolments as a replica sees them: the durable [`TemplateStore`] and the in-memory
//! [`TemplateIndex`] kept in step with it. Writes go to the store first and reach the index only
//! once acknowledged; reads (list, get, verify, identify) come from the index and keep working
//! while the store is away. With PostgreSQL a background task applies other replicas' writes as
//! they are notified, and reloads everything after any gap in the notifications.
//!
//! A subject records the API key that created it and a template the key that enrolled it, and a
//! key may be held to a quota of each ([`Creator`], [`QuotaOf`]): checked against the index plus
//! this replica's writes in progress, so concurrent requests of one key on one replica cannot
//! pass it together, and by PostgreSQL inside the write, so neither can requests spread over
//! replicas.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::StatusCode;

use crate::audit::{self, AuditDetail};
use crate::store::postgres::PgStore;
use crate::store::{
    NewTemplate, QuotaOf, StoreError, Subject, SubjectRecord, Template, TemplateIndex,
    TemplateStore, UnreadableTemplate,
};

/// How often a write's reload of its subject is read again when the index took another write
/// of the subject during the read ([`Enrolments::refresh_subject`]).
const REFRESH_TRIES: usize = 4;

/// [`REFRESH_TRIES`] for a store without a change listener: a read is lost only to another write
/// of the same subject applied meanwhile, so this many in a row is not a thing that happens.
const REFRESH_TRIES_ALONE: usize = 10_000;

/// How often a subject whose write the embedded store answered `Unavailable` is read back
/// ([`Enrolments::recheck`]), and for how long at most.
#[cfg(not(test))]
const RECHECK_EVERY: Duration = Duration::from_secs(5);
#[cfg(test)]
const RECHECK_EVERY: Duration = Duration::from_millis(50);
/// See [`RECHECK_EVERY`].
const RECHECK_FOR: Duration = Duration::from_secs(3600);
/// Most subjects being read back at once ([`Enrolments::recheck`]).
const MAX_RECHECKED: usize = 1024;

/// How often the change listener retries after losing the database.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// Longest wait between attempts to resynchronise an index whose reload keeps failing with the
/// database reachable (a template that does not decrypt, say): each attempt reads every
/// template, so the wait doubles from [`RECONNECT_EVERY`] up to this.
const RESYNC_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long the change listener waits without a notification before it checks that its
/// connection still answers: a connection that died without a reset (a failover to another
/// node, a NAT or load balancer dropping it idle) never delivers again and never says so. Short,
/// because until then a deletion through another replica is not seen here (a deleted subject
/// still verifies): a `SELECT 1` every 5 s is nothing to the database.
const LISTENER_PROBE_EVERY: Duration = Duration::from_secs(5);
/// How long that check may take before the connection counts as dead (reconnecting reloads the
/// whole index, so changes missed meanwhile arrive then): not shorter, so a database slow under
/// load does not get every replica's full reload on top.
const LISTENER_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The wait before the change listener reconnects after losing its listener. A listener lost
/// before any probe came back (`proved` false) may never receive (a pooler in transaction mode
/// between the runtime and PostgreSQL): each try costs a full reload of the index, so that wait
/// (`unproved`) doubles up to [`RESYNC_BACKOFF_MAX`]. One that received reconnects at once and
/// starts the doubling over.
fn relisten_wait(proved: bool, unproved: &mut Duration) -> Duration {
    if proved {
        *unproved = RECONNECT_EVERY;
        return RECONNECT_EVERY;
    }
    let wait = *unproved;
    *unproved = (wait * 2).min(RESYNC_BACKOFF_MAX);
    wait
}

/// Reads of one notified subject the change listener makes: all but the last applied under the
/// version guard, the last regardless ([`Enrolments::refresh_subject_from`]).
const LISTENER_TRIES: usize = 4;

/// How long the change listener's refresh of one notified subject (its reads, two indexed
/// queries each) may take before the listener counts as lost (reconnect, reload): a connection
/// black-holed mid-query (no reset, no answer) would otherwise hold the listener, and `/readyz`
/// reporting it in step, until TCP gives up (about 15 minutes). Twice
/// [`LISTENER_PROBE_TIMEOUT`], for the same reason.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(10);
/// The least time the change listener's full reload of the index may take before it counts as
/// failed (the index reported out of step, the reload retried): generous, as the whole store is
/// read (no statement timeout on the server either), plus [`RELOAD_TIME_PER_TEMPLATE`] for each
/// template the index holds.
const RELOAD_TIMEOUT_BASE: Duration = Duration::from_secs(120);
/// What each template held adds to [`RELOAD_TIMEOUT_BASE`]: about 4.6 KB read and one template
/// opened, at a pace far below any link a replica should serve from (50 000 templates, 230 MB:
/// 220 s in all).
const RELOAD_TIME_PER_TEMPLATE: Duration = Duration::from_millis(2);

/// The template store's health as `/readyz` and the metrics report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHealth {
    /// Whether the last store call or change-listener check succeeded, and the index is in step
    /// with the store (its last resynchronisation succeeded).
    pub available: bool,
    /// What failed, while unavailable.
    pub error: Option<String>,
    /// Full reloads of the index from the store since start (start-up included).
    pub reloads: u64,
}

/// Who writes a subject or a template: the API key recorded as its creator (or enroller) and
/// the most of them that key may hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Creator<'a> {
    /// The writing key's id (never the key); `None` records no creator.
    pub key_id: Option<&'a str>,
    /// Most subjects (or templates) written by `key_id` the store may hold; `None`: no
    /// per-key limit.
    pub quota: Option<usize>,
}

/// The store and the index of one replica.
pub struct Enrolments {
    store: Arc<dyn TemplateStore>,
    index: TemplateIndex,
    available: AtomicBool,
    error: Mutex<Option<String>>,
    /// Why the index is out of step with the store: its resynchronisation failed (until one
    /// succeeds, other replicas' changes, deletions included, do not reach it).
    unsynced: Mutex<Option<String>>,
    /// Why the change listener is not known to receive notifications: lost, or reconnected but
    /// its probe not back yet. Cleared only by a probe that came back, so a listener that
    /// reconnects and reloads but never receives (a transaction-mode pooler) stays reported.
    unproven: Mutex<Option<String>>,
    reloads: AtomicU64,
    /// Subject creations and enrolments in progress on this replica per quota and writing key
    /// id, held to its quota beside what the index counts (keys with none are absent).
    creating: Mutex<HashMap<(QuotaOf, String), usize>>,
    /// Subjects being read back after a write the embedded store answered `Unavailable`
    /// ([`Enrolments::recheck`]).
    rechecked: Mutex<HashSet<String>>,
    /// Whether the subjects a creation answered `Unavailable` may have left in the embedded
    /// store are being read back ([`Enrolments::recheck_created`]).
    rechecking_created: AtomicBool,
}

/// One write counted against its key's quota until what it wrote is in the index (or it
/// failed, or the request went away).
struct Reservation<'a> {
    enrolments: &'a Enrolments,
    slot: (QuotaOf, String),
    released: bool,
}

impl Reservation<'_> {
    /// Put what was written in the index (`apply`) and give the reservation back in one step
    /// under the reservations' lock, so no quota check misses it in between. (With PostgreSQL
    /// this replica's own notification may apply it first: until this step it is then counted
    /// twice, which can only refuse early, never admit one too many.) When `apply` did not take
    /// (the index moved on during the write), the reservation is kept (returned), so the write
    /// stays counted while it is read back from the store.
    fn complete_if(mut self, apply: impl FnOnce(&TemplateIndex) -> bool) -> Option<Self> {
        let mut creating = self.enrolments.creating();
        if !apply(&self.enrolments.index) {
            return Some(self);
        }
        Self::release(&mut creating, &self.slot);
        self.released = true;
        None
    }

    fn release(creating: &mut HashMap<(QuotaOf, String), usize>, slot: &(QuotaOf, String)) {
        if let Some(n) = creating.get_mut(slot) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                creating.remove(slot);
            }
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.released {
            Self::release(&mut self.enrolments.creating(), &self.slot);
        }
    }
}

impl std::fmt::Debug for Enrolments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolments")
            .field("store", &self.store.describe())
            .field("index", &self.index)
            .finish()
    }
}

/// What the templates left out of the index because they do not open here say, or `None`.
fn unreadable_summary(unreadable: &[UnreadableTemplate]) -> Option<String> {
    let first = unreadable.first()?;
    Some(format!(
        "{} stored template(s) do not open with this replica's template keys and are left out \
         of matching here (first: template {} of subject {}: {}); restart the replica with the \
         current key file",
        unreadable.len(),
        first.id,
        first.subject_id,
        first.reason
    ))
}

impl Enrolments {
    /// Load every subject from `store` into a new index matching `model` embeddings of `dim`
    /// values. Fails when the store cannot be read or a template does not decrypt.
    pub async fn open(
        store: Arc<dyn TemplateStore>,
        model: &str,
        dim: usize,
    ) -> Result<Self, StoreError> {
        let this = Self {
            store,
            index: TemplateIndex::new(model, dim),
            available: AtomicBool::new(true),
            error: Mutex::new(None),
            unsynced: Mutex::new(None),
            unproven: Mutex::new(None),
            reloads: AtomicU64::new(0),
            creating: Mutex::new(HashMap::new()),
            rechecked: Mutex::new(HashSet::new()),
            rechecking_created: AtomicBool::new(false),
        };
        this.reload().await?;
        // A key must never be missing at start-up: the replica would run without some faces.
        if let Some(message) = unreadable_summary(&this.store.unreadable()) {
            return Err(StoreError::Malformed(message));
        }
        Ok(this)
    }

    /// The index (reads).
    pub fn index(&self) -> &TemplateIndex {
        &self.index
    }

    /// The key id that created subject `id` (`Ok(None)` inside: none recorded), or `Ok(None)`
    /// when there is no such subject: the index first, then the store, which has a subject
    /// another replica created a moment ago before its notification arrives.
    pub async fn creator_of(&self, id: &str) -> Result<Option<Option<String>>, StoreError> {
        if let Some((subject, _)) = self.index.get(id) {
            return Ok(Some(subject.created_by));
        }
        let stored = self.mark(self.store.load_subject(id).await)?;
        Ok(stored.map(|s| s.created_by))
    }

    /// Make sure the index has subject `id` if the shared store does: a subject another replica
    /// created (or enrolled) a moment ago, whose notification has not arrived yet, is read from
    /// the store (one indexed query; ids that are not canonical UUIDs are never looked up), so a
    /// client that creates a subject and enrols it through another replica behind the same
    /// Service is not told the subject does not exist. What was read is added only if the index
    /// took no write of it meanwhile ([`TemplateIndex::set_if_unchanged`]): a deletion the listener
    /// applied during the read is never undone. A failed read leaves the index as it was.
    /// Enrolment and subject reads only: verification never waits on the database.
    pub async fn catch_up(&self, id: &str) {
        if self.store.kind() != "postgresql" || self.index.get(id).is_some() {
            return;
        }
        let seen = self.index.version(id);
        match self.mark(self.store.load_subject(id).await) {
            Ok(stored) => {
                self.index.set_if_unchanged(id, stored, seen);
            }
            Err(e) => {
                tracing::debug!(subject = id, error = %e, "reading a subject missing from the index failed");
            }
        }
    }

    /// [`StoreError::Unavailable`] when some of subject `id`'s stored templates do not open
    /// here: its faces in the index are then not all it has, so an enrolment must not be judged
    /// against them (with none left, the creator's key would add any face unmatched).
    pub fn check_all_faces_readable(&self, id: &str) -> Result<(), StoreError> {
        let unreadable = self
            .store
            .unreadable()
            .into_iter()
            .filter(|u| u.subject_id == id)
            .count();
        if unreadable == 0 {
            return Ok(());
        }
        Err(StoreError::Unavailable(format!(
            "{unreadable} of subject {id}'s stored templates do not open with this replica's \
             template keys; its enrolments wait until the replica runs with the current key file"
        )))
    }

    /// Where the data lives, for logs.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// The store's kind ([`TemplateStore::kind`]).
    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    /// The store's health.
    pub fn health(&self) -> StoreHealth {
        let unsynced = self
            .unsynced()
            .clone()
            .or_else(|| self.unproven().clone())
            .or_else(|| unreadable_summary(&self.store.unreadable()));
        let error = self.error.lock().map(|e| e.clone()).unwrap_or_default();
        // Reads work on a file open read-only or closed after a fault, so a read's success
        // (which marks the store available) says nothing about writes: the store says.
        let refusal = self.store.write_refusal();
        StoreHealth {
            available: self.available.load(Ordering::Relaxed)
                && unsynced.is_none()
                && refusal.is_none(),
            // The current failure first: an outage that follows a failed resynchronisation.
            error: error.or(refusal).or(unsynced),
            reloads: self.reloads.load(Ordering::Relaxed),
        }
    }

    /// How many stored templates this replica's keys do not open ([`TemplateStore::unreadable`]).
    pub fn unreadable_templates(&self) -> usize {
        self.store.unreadable().len()
    }

    fn unproven(&self) -> MutexGuard<'_, Option<String>> {
        self.unproven.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record that the change listener was lost (`Some(why)`) or proved to receive (`None`);
    /// logged when that changes.
    fn set_proven(&self, lost: Option<String>) {
        self.transition(
            &mut self.unproven(),
            lost,
            "the change listener is lost: other replicas' changes, deletions included, do not \
             reach this replica's index until it receives again",
            "the change listener receives again",
        );
    }

    /// Set `slot` (a reason the index may be out of step, or `None`) to `now`, logging the
    /// change from none to some (`went`, an error) and back (`back`).
    fn transition(
        &self,
        slot: &mut Option<String>,
        now: Option<String>,
        went: &'static str,
        back: &'static str,
    ) {
        match (&*slot, &now) {
            (None, Some(error)) => {
                tracing::error!(store = %self.store.describe(), error = %error, "{went}");
            }
            (Some(_), None) => tracing::info!(store = %self.store.describe(), "{back}"),
            _ => {}
        }
        *slot = now;
    }

    fn unsynced(&self) -> MutexGuard<'_, Option<String>> {
        self.unsynced.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record whether the last resynchronisation succeeded; logged when that changes.
    fn set_synced(&self, failed: Option<String>) {
        self.transition(
            &mut self.unsynced(),
            failed,
            "the template index is out of step with the store: other replicas' changes \
             (deletions included) do not reach this replica until it resynchronises",
            "the template index is in step with the store again",
        );
    }

    fn mark<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match &result {
            Err(StoreError::Unavailable(e)) => self.set_available(false, Some(e.clone())),
            Ok(_) => self.set_available(true, None),
            Err(_) => {}
        }
        result
    }

    fn set_available(&self, up: bool, error: Option<String>) {
        let was = self.available.swap(up, Ordering::Relaxed);
        if was != up {
            if up {
                tracing::info!(store = %self.store.describe(), "template store available again");
            } else {
                tracing::error!(
                    store = %self.store.describe(),
                    error = error.as_deref().unwrap_or("-"),
                    "template store unavailable; serving reads from the index, refusing writes"
                );
            }
        }
        if let Ok(mut e) = self.error.lock() {
            *e = error;
        }
    }

    /// Replace the index with everything in the store.
    pub async fn reload(&self) -> Result<(), StoreError> {
        self.reload_from(&*self.store).await
    }

    /// [`Self::reload`] reading through `store` (the change listener's own connections).
    async fn reload_from(&self, store: &dyn TemplateStore) -> Result<(), StoreError> {
        let records = self.mark(store.load_all().await)?;
        self.index.replace_all(records);
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// [`Self::mark`] the answer to a write of subject `id`. On the embedded store an
    /// `Unavailable` answer may still have reached the disk (a commit whose final sync failed:
    /// the store closes the file and opens it again later, and what it reads then includes
    /// that commit), with nothing else to bring it to the index: a deletion answered 503 would
    /// leave the subject verifying until a restart. The subject is then read back once the
    /// store answers again ([`Self::recheck`]).
    fn mark_write<T>(
        self: &Arc<Self>,
        id: &str,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = self.mark(result);
        if self.may_have_written(&result) {
            self.recheck(id);
        }
        result
    }

    /// Whether `result`, a write's answer, may hide a write that reached the disk: the embedded
    /// store's `Unavailable` (a commit whose final sync failed), which is then read back.
    fn may_have_written<T>(&self, result: &Result<T, StoreError>) -> bool {
        matches!(result, Err(StoreError::Unavailable(_))) && self.store.kind() == "embedded"
    }

    /// Read `id` back into the index every [`RECHECK_EVERY`] until the store answers (at most
    /// [`RECHECK_FOR`]), under the same guard as a write's own read-back, so no newer write of
    /// the subject is undone. One task per subject, at most [`MAX_RECHECKED`] at once.
    fn recheck(self: &Arc<Self>, id: &str) {
        {
            let mut rechecked = self
                .rechecked
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if rechecked.contains(id) {
                return;
            }
            if rechecked.len() >= MAX_RECHECKED {
                tracing::warn!(
                    subject = id,
                    "too many subjects to read back after failed writes; this one is read at the next write of it or restart"
                );
                return;
            }
            rechecked.insert(id.to_owned());
        }
        let subject = id.to_owned();
        self.read_back(
            move |this| {
                let id = subject.clone();
                async move {
                    this.refresh_subject(&id).await?;
                    tracing::info!(subject = %id, "subject read back after a write the store failed");
                    Ok(true)
                }
            },
            format!("subject {id}: a subject whose write failed was not read back; the index may hold what the store lost or lack what it kept, until a restart"),
            {
                let id = id.to_owned();
                move |this| {
                    this.rechecked
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&id);
                }
            },
        );
    }

    /// A creation the embedded store answered `Unavailable` may still have reached the disk
    /// (its final sync failed), under an id the caller never learnt: nothing would bring that
    /// subject to the index (nor count it against its key's quota) until a restart, while the
    /// client's retry creates a second one. Once the store answers again, the subjects it holds
    /// that the index lacks are put in the index, each only if no removal happened meanwhile
    /// (a subject deleted since the read is not put back), as [`Self::read_back`] tries; one
    /// such task at a time.
    fn recheck_created(self: &Arc<Self>) {
        if self.rechecking_created.swap(true, Ordering::SeqCst) {
            return;
        }
        self.read_back(
            |this| async move {
                let seen = this.index.version_of_new();
                let mut missed = false;
                for record in this.store.load_all().await? {
                    if this.index.get(&record.id).is_some() {
                        continue;
                    }
                    let id = record.id.clone();
                    if this.index.upsert_if_unchanged(record, seen) {
                        tracing::info!(subject = %id, "a subject whose creation the store answered unavailable was found stored and read back");
                    } else {
                        missed = true;
                    }
                }
                Ok(!missed)
            },
            "the subjects a failed creation may have stored were not read back; a restart reads them".to_owned(),
            |this| this.rechecking_created.store(false, Ordering::SeqCst),
        );
    }

    /// On a task of its own, runs `attempt` every [`RECHECK_EVERY`] until it is done
    /// (`Ok(true)`), for at most [`RECHECK_FOR`] while it finds the store unavailable (or not
    /// done); logs `gave_up` when the store answers another error or the time is up; then
    /// `finish`. Held weakly between attempts: a server stopped meanwhile closes its store now,
    /// and the task ends.
    fn read_back<A, F>(
        self: &Arc<Self>,
        attempt: A,
        gave_up: String,
        finish: impl FnOnce(&Self) + Send + 'static,
    ) where
        A: Fn(Arc<Self>) -> F + Send + 'static,
        F: std::future::Future<Output = Result<bool, StoreError>> + Send,
    {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(RECHECK_EVERY).await;
                let Some(this) = weak.upgrade() else {
                    return;
                };
                match attempt(this).await {
                    Ok(true) => break,
                    Ok(false) | Err(StoreError::Unavailable(_))
                        if started.elapsed() < RECHECK_FOR => {}
                    Ok(false) => {
                        tracing::warn!("{gave_up}");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "{gave_up}");
                        break;
                    }
                }
            }
            if let Some(this) = weak.upgrade() {
                finish(&this);
            }
        });
    }

    /// Reload one subject into the index after this replica's own write (removing it when the
    /// store no longer has it), unless the index took another write of it during the read: the
    /// change listener's, which read the store after a change this read may have missed, or
    /// another request's. Read again then: with PostgreSQL a few times (the listener applies
    /// every change, this write's included, after it), without a listener (the embedded store,
    /// one process: nothing else would bring a write missed here) until one read applies, each
    /// lost read meaning another write of the subject applied meanwhile. Returns the last read
    /// (`None`: the store has no such subject), applied or not.
    async fn refresh_subject(&self, id: &str) -> Result<Option<SubjectRecord>, StoreError> {
        let tries = if self.store.kind() == "postgresql" {
            REFRESH_TRIES
        } else {
            REFRESH_TRIES_ALONE
        };
        let mut last = None;
        for _ in 0..tries {
            let seen = self.index.version(id);
            let stored = self.mark(self.store.load_subject(id).await)?;
            if self.index.set_if_unchanged(id, stored.clone(), seen) {
                return Ok(stored);
            }
            last = stored;
        }
        tracing::warn!(
            subject = id,
            tries,
            "subject changed under every reread; left to the change listener or the next reload"
        );
        Ok(last)
    }

    /// Reload one subject into the index as the change listener does: in notification order,
    /// each read after the change it was told of. A write through this replica may land in the
    /// index while the read runs (a deletion answered 204): the read is then older than what
    /// the index holds, so it is applied under the version guard a write's own read-back uses,
    /// and read again when the guard refuses it. The guard also refuses a read of a subject the
    /// index lacks whenever any subject was removed meanwhile (the version of an absent subject
    /// is the index's last removal), so the read is tried a few times, and the last one is
    /// applied whatever happened meanwhile: it is never older than its notification, and a
    /// write it may cover tells the listener again.
    async fn refresh_subject_from(
        &self,
        store: &dyn TemplateStore,
        id: &str,
    ) -> Result<(), StoreError> {
        for _ in 1..LISTENER_TRIES {
            let seen = self.index.version(id);
            let stored = self.mark(store.load_subject(id).await)?;
            if self.index.set_if_unchanged(id, stored, seen) {
                return Ok(());
            }
        }
        match self.mark(store.load_subject(id).await)? {
            Some(record) => self.index.upsert(record),
            None => {
                self.index.remove(id);
            }
        }
        Ok(())
    }

    /// The writes in progress (a poisoned lock is still consistent: every change is one
    /// counter step).
    fn creating(&self) -> MutexGuard<'_, HashMap<(QuotaOf, String), usize>> {
        self.creating.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What `key_id` holds of `of` in the index: subjects it created or templates it enrolled.
    pub fn held(&self, of: QuotaOf, key_id: &str) -> usize {
        match of {
            QuotaOf::Subjects => self.index.subjects_created_by(key_id),
            QuotaOf::Templates => self.index.templates_enrolled_by(key_id),
        }
    }

    /// [`StoreError::KeyQuota`] when `writer`'s key already holds its quota of `of` in the index
    /// (writes in progress not counted): a cheap early refusal before the work of a write
    /// (an enrolment's inference), which [`Self::add_template`] checks again exactly.
    pub fn check_quota(&self, of: QuotaOf, writer: Creator<'_>) -> Result<(), StoreError> {
        match (writer.key_id, writer.quota) {
            (Some(key_id), Some(limit)) => {
                StoreError::check_quota(of, key_id, self.held(of, key_id), limit)
            }
            _ => Ok(()),
        }
    }

    /// Count one write against `writer`'s quota of `of`: [`StoreError::KeyQuota`] when what its
    /// key holds (in the index, and being written on this replica) already reaches the quota.
    /// `None` for a writer without key or quota.
    fn reserve(
        &self,
        of: QuotaOf,
        writer: Creator<'_>,
    ) -> Result<Option<Reservation<'_>>, StoreError> {
        let (Some(key_id), Some(limit)) = (writer.key_id, writer.quota) else {
            return Ok(None);
        };
        let slot = (of, key_id.to_owned());
        let mut creating = self.creating();
        let in_progress = creating.get(&slot).copied().unwrap_or(0);
        StoreError::check_quota(of, key_id, self.held(of, key_id) + in_progress, limit)?;
        *creating.entry(slot.clone()).or_default() += 1;
        Ok(Some(Reservation {
            enrolments: self,
            slot,
            released: false,
        }))
    }

    /// Run `write` (a store write and the index update after it) on a task of its own and wait
    /// for it. The caller's future may be dropped at any await (a request timeout, a client that
    /// went away), but a write the store acknowledged still reaches this replica's index, and its
    /// quota reservation is given back only then: the index and the quota counts never miss a
    /// stored subject or face until the next reload. A write that succeeds after its caller
    /// went away is audited ([`audit::detached`]) with the status and ids `committed` gives
    /// (`None`: nothing was written), so the trail shows what was stored.
    async fn detached<T, F>(
        self: &Arc<Self>,
        operation: &'static str,
        committed: fn(&T) -> Option<(StatusCode, AuditDetail)>,
        write: impl FnOnce(Arc<Self>) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let committed = move |value: &Result<T, StoreError>| committed(value.as_ref().ok()?);
        audit::detached(write(Arc::clone(self)), committed)
            .await
            .map_err(|e| StoreError::Backend {
                operation,
                source: Box::new(e),
            })?
    }

    /// Create a subject recording `creator`'s key, within its quota; in the index once the
    /// store acknowledged it. The quota is checked against this replica's index and again by a
    /// store shared between replicas inside its write (PostgreSQL), which sees the other
    /// replicas' creations before their notifications arrive.
    pub async fn create_subject(
        self: &Arc<Self>,
        name: &str,
        creator: Creator<'_>,
    ) -> Result<Subject, StoreError> {
        let (name, key_id, quota) = (
            name.to_owned(),
            creator.key_id.map(str::to_owned),
            creator.quota,
        );
        let committed = |s: &Subject| Some((StatusCode::CREATED, AuditDetail::subject(&s.id)));
        self.detached("create subject", committed, move |this| async move {
            let creator = Creator {
                key_id: key_id.as_deref(),
                quota,
            };
            let reservation = this.reserve(QuotaOf::Subjects, creator)?;
            let seen = this.index.version_of_new();
            let created = this.mark(
                this.store
                    .create_subject(&name, creator.key_id, creator.quota)
                    .await,
            );
            if this.may_have_written(&created) {
                this.recheck_created();
            }
            let record: SubjectRecord = created?;
            let id = record.id.clone();
            let answer = this.index.summary_of(&record);
            let reread = this
                .apply_own(&id, reservation, |index| {
                    index.upsert_if_unchanged(record, seen)
                })
                .await;
            if let Err(e) = reread {
                tracing::warn!(subject = %id, error = %e, "a created subject was not read back; the change listener or the next reload brings it");
            }
            // Deleted meanwhile through another replica: still created, as the store said.
            Ok(this.index.get(&id).map_or(answer, |(s, _)| s))
        })
        .await
    }

    /// Delete a subject and its templates; `false` when it did not exist.
    pub async fn delete_subject(self: &Arc<Self>, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let committed =
            |existed: &bool| existed.then(|| (StatusCode::NO_CONTENT, AuditDetail::default()));
        self.detached("delete subject", committed, move |this| async move {
            let existed = this.mark_write(&id, this.store.delete_subject(&id).await)?;
            this.index.remove(&id);
            Ok(existed)
        })
        .await
    }

    /// Add a template recording `enroller`'s key as its `enrolled_by` (whatever `template`
    /// says), within its quota of templates (held as [`Self::create_subject`] holds subjects);
    /// returns it and the subject's new summary.
    pub async fn add_template(
        self: &Arc<Self>,
        subject_id: &str,
        mut template: NewTemplate,
        enroller: Creator<'_>,
    ) -> Result<(Template, Subject), StoreError> {
        let subject_id = subject_id.to_owned();
        let quota = enroller.quota;
        template.enrolled_by = enroller.key_id.map(str::to_owned);
        let committed = |(t, s): &(Template, Subject)| {
            Some((
                StatusCode::CREATED,
                AuditDetail {
                    face: Some(t.id.clone()),
                    ..AuditDetail::subject(&s.id)
                },
            ))
        };
        self.detached("add template", committed, move |this| async move {
            let key_id = template.enrolled_by.clone();
            let enroller = Creator {
                key_id: key_id.as_deref(),
                quota,
            };
            let reservation = this.reserve(QuotaOf::Templates, enroller)?;
            let seen = this.index.version(&subject_id);
            let stored = this.mark_write(
                &subject_id,
                this.store
                    .add_template(&subject_id, template, enroller.quota)
                    .await,
            )?;
            let reread = this
                .apply_own(&subject_id, reservation, |index| {
                    index.add_template_if_unchanged(stored.clone(), seen)
                })
                .await;
            let subject = this.after_write(&subject_id, reread)?;
            Ok((stored, subject))
        })
        .await
    }

    /// Apply this replica's own committed write to the index (`apply`, guarded by the version
    /// of the subject seen before the write), so the writer reads it at once; if the index moved
    /// on meanwhile (the listener applied another change of the subject, or never heard of it:
    /// created on another replica a moment ago), read the subject back from the store instead.
    /// The write stays counted against its key's quota (`reservation`) until then. Returns what
    /// was reread (`Ok(None)` when nothing was: applied at once); `Err` is the reread's failure:
    /// the write is committed all the same.
    async fn apply_own(
        &self,
        id: &str,
        reservation: Option<Reservation<'_>>,
        apply: impl FnOnce(&TemplateIndex) -> bool,
    ) -> Result<Option<SubjectRecord>, StoreError> {
        let kept = match reservation {
            Some(r) => match r.complete_if(apply) {
                None => return Ok(None),
                kept => kept,
            },
            None if apply(&self.index) => return Ok(None),
            None => None,
        };
        let reread = self.refresh_subject(id).await;
        drop(kept);
        reread
    }

    /// The subject's summary after this replica's committed write to it ([`Self::apply_own`]):
    /// from the index, else from the store's answer to the reread (the index moved on again);
    /// `SubjectNotFound` when the store no longer has it (deleted meanwhile), and the reread's
    /// error only when neither the index nor a reread has the subject (a store read that failed
    /// right after the write, with the subject created elsewhere and unknown here).
    fn after_write(
        &self,
        subject_id: &str,
        reread: Result<Option<SubjectRecord>, StoreError>,
    ) -> Result<Subject, StoreError> {
        if let Err(e) = &reread {
            tracing::warn!(subject = subject_id, error = %e, "a written subject was not read back; the change listener or the next reload brings it");
        }
        match (self.index.get(subject_id), reread) {
            (Some((subject, _)), _) => Ok(subject),
            (None, Ok(Some(record))) => Ok(self.index.summary_of(&record)),
            (None, Err(e)) => Err(e),
            (None, Ok(None)) => Err(StoreError::SubjectNotFound(subject_id.to_owned())),
        }
    }

    /// Delete one face (template) of a subject; returns the subject's new summary.
    pub async fn delete_template(
        self: &Arc<Self>,
        subject_id: &str,
        template_id: &str,
    ) -> Result<Subject, StoreError> {
        let (subject_id, template_id) = (subject_id.to_owned(), template_id.to_owned());
        let committed = |_: &Subject| Some((StatusCode::NO_CONTENT, AuditDetail::default()));
        self.detached("delete template", committed, move |this| async move {
            let seen = this.index.version(&subject_id);
            let deleted = this.mark_write(
                &subject_id,
                this.store.delete_template(&subject_id, &template_id).await,
            );
            if let Err(StoreError::FaceNotFound { .. }) = &deleted {
                // The store (the truth) has no such face: neither may the index, whatever it
                // missed (a delete whose commit answered an error yet reached the disk, retried).
                this.index.remove_template(&subject_id, &template_id, None);
            }
            deleted?;
            let reread = this
                .apply_own(&subject_id, None, |index| {
                    index.remove_template(&subject_id, &template_id, Some(seen))
                })
                .await;
            this.after_write(&subject_id, reread)
        })
        .await
    }

    /// Rename a subject; returns its new summary.
    pub async fn rename_subject(
        self: &Arc<Self>,
        id: &str,
        name: &str,
    ) -> Result<Subject, StoreError> {
        let (id, name) = (id.to_owned(), name.to_owned());
        let committed = |s: &Subject| Some((StatusCode::OK, AuditDetail::subject(&s.id)));
        self.detached("rename subject", committed, move |this| async move {
            let seen = this.index.version(&id);
            let name = this.mark_write(&id, this.store.rename_subject(&id, &name).await)?;
            let reread = this
                .apply_own(&id, None, |index| {
                    index.rename_if_unchanged(&id, &name, seen)
                })
                .await;
            this.after_write(&id, reread)
        })
        .await
    }

    /// Keep the index in step with other replicas' writes: apply each notified subject, and
    /// reload everything after the listener (re)connects, since notifications sent while it was
    /// away are lost. A listener quiet for [`LISTENER_PROBE_EVERY`] sends itself a probe on its
    /// channel from another connection; a probe not back within [`LISTENER_PROBE_TIMEOUT`]
    /// counts as a lost connection (reconnect, reload): a connection that died without a reset,
    /// or a pooler in transaction mode that answers queries but never delivers a notification.
    /// Reloads and probes go through a pool of the listener's own ([`PgStore::syncing`]), which
    /// no burst of writes can starve. Runs until the task is dropped.
    ///
    /// Nothing waits on the database unbounded, as a connection black-holed mid-query (no reset,
    /// no answer) would make it wait until TCP gives up, about 15 minutes, with the index
    /// reported in step: a notified subject's read that takes over [`REFRESH_TIMEOUT`] counts as
    /// a lost listener, and a reload past its bound ([`RELOAD_TIMEOUT_BASE`] and
    /// [`RELOAD_TIME_PER_TEMPLATE`]) as a failed resynchronisation.
    ///
    /// A resynchronisation that fails with the database reachable marks the store unavailable in
    /// [`Enrolments::health`] until one succeeds, and is retried with a doubling wait up to
    /// [`RESYNC_BACKOFF_MAX`]; an unreachable database is retried every [`RECONNECT_EVERY`], as a
    /// lost listener is.
    pub async fn follow(self: Arc<Self>, store: PgStore) {
        let mut resync_wait = RECONNECT_EVERY;
        let mut unproved_wait = RECONNECT_EVERY;
        loop {
            // A pool of its own for each listener, as the listener has: one whose connection
            // hung (a reload or a read past its bound) may hold its place for a while.
            let store = store.syncing();
            let mut listener = match store.listener().await {
                Ok(l) => l,
                Err(e) => {
                    self.set_proven(Some(format!("change listener: {e}")));
                    self.set_available(false, Some(e.to_string()));
                    tokio::time::sleep(RECONNECT_EVERY).await;
                    continue;
                }
            };
            // Anything may have changed while nobody listened.
            let bound = self.reload_bound();
            let reloaded = match tokio::time::timeout(bound, self.reload_from(&store)).await {
                Ok(reloaded) => reloaded,
                Err(_) => {
                    // The connection black-holed, or a database too slow to serve reads: out
                    // of step until a reload finishes (the wait is the reconnection's).
                    let e = format!("no answer within {} s", bound.as_secs());
                    self.set_synced(Some(format!("resynchronise the template index: {e}")));
                    Err(StoreError::Unavailable(e))
                }
            };
            if let Err(e) = reloaded {
                // Notifications buffered meanwhile would be read by nobody.
                drop(listener);
                let wait = if matches!(e, StoreError::Unavailable(_)) {
                    RECONNECT_EVERY
                } else {
                    self.set_synced(Some(format!("resynchronise the template index: {e}")));
                    let wait = resync_wait;
                    resync_wait = (resync_wait * 2).min(RESYNC_BACKOFF_MAX);
                    wait
                };
                tracing::warn!(
                    error = %e,
                    retry_in_secs = wait.as_secs(),
                    "resynchronising the template index failed; retrying"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            self.set_synced(None);
            resync_wait = RECONNECT_EVERY;
            let mut proved = false;
            if let Err(lost) = self.apply_changes(&store, &mut listener, &mut proved).await {
                self.set_proven(Some(format!("change listener: {lost}")));
            }
            tokio::time::sleep(relisten_wait(proved, &mut unproved_wait)).await;
        }
    }

    /// How long the change listener's full reload may take: [`RELOAD_TIMEOUT_BASE`] plus
    /// [`RELOAD_TIME_PER_TEMPLATE`] per template the index holds now (what the reload is about
    /// to read, give or take the changes it catches up with).
    fn reload_bound(&self) -> Duration {
        let templates = u32::try_from(self.index.stats().templates).unwrap_or(u32::MAX);
        RELOAD_TIMEOUT_BASE.saturating_add(RELOAD_TIME_PER_TEMPLATE.saturating_mul(templates))
    }

    /// Apply every change `listener` delivers until it is lost (the error says how). It is
    /// probed at once (so a reconnected listener is proved before it counts as receiving) and
    /// whenever it has been quiet for [`LISTENER_PROBE_EVERY`]: a notification sent from
    /// another connection must come back within [`LISTENER_PROBE_TIMEOUT`], and its own
    /// connection must answer a query (which also keeps a server's `idle_session_timeout`
    /// from ending it). `proved` is set once a probe came back.
    async fn apply_changes(
        &self,
        store: &PgStore,
        listener: &mut sqlx::postgres::PgListener,
        proved: &mut bool,
    ) -> Result<(), String> {
        let mut probe = Some(self.send_probe(store, listener).await?);
        loop {
            let wait = match &probe {
                Some((_, due)) => due.saturating_duration_since(tokio::time::Instant::now()),
                None => LISTENER_PROBE_EVERY,
            };
            let received = match tokio::time::timeout(wait, listener.try_recv()).await {
                Ok(received) => received,
                Err(_) if probe.is_some() => {
                    return Err(format!(
                        "its probe did not come back within {} s: notifications do not reach \
                         it (a connection that died without a reset, or a pooler in \
                         transaction mode between the runtime and PostgreSQL)",
                        LISTENER_PROBE_TIMEOUT.as_secs()
                    ));
                }
                // Quiet for a while: is anyone still there?
                Err(_) => {
                    probe = Some(self.send_probe(store, listener).await?);
                    continue;
                }
            };
            match received {
                Ok(Some(n)) => {
                    let payload = n.payload();
                    if crate::store::postgres::is_probe(payload) {
                        // Ours back (another replica's are not for us): the listener works.
                        if probe
                            .as_ref()
                            .is_some_and(|(token, _)| payload.ends_with(token.as_str()))
                        {
                            probe = None;
                            *proved = true;
                            self.set_proven(None);
                        }
                        continue;
                    }
                    let refreshed = tokio::time::timeout(
                        REFRESH_TIMEOUT,
                        self.refresh_subject_from(store, payload),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        Err(StoreError::Unavailable(format!(
                            "no answer within {} s",
                            REFRESH_TIMEOUT.as_secs()
                        )))
                    });
                    if let Err(e) = refreshed {
                        tracing::warn!(subject = payload, error = %e, "applying a change failed; reloading");
                        return Err(format!("applying a change failed: {e}"));
                    }
                }
                // The connection closed: notifications may have been missed.
                Ok(None) => return Err("disconnected".into()),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Ask `listener`'s connection a query and send it a probe from another connection: the
    /// probe's token and when it must be back.
    async fn send_probe(
        &self,
        store: &PgStore,
        listener: &mut sqlx::postgres::PgListener,
    ) -> Result<(String, tokio::time::Instant), String> {
        match tokio::time::timeout(
            LISTENER_PROBE_TIMEOUT,
            sqlx::query("SELECT 1").execute(&mut *listener),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("its connection stopped answering".into()),
        }
        let token = uuid::Uuid::new_v4().to_string();
        match tokio::time::timeout(LISTENER_PROBE_TIMEOUT, store.probe(&token)).await {
            Ok(Ok(())) => Ok((token, tokio::time::Instant::now() + LISTENER_PROBE_TIMEOUT)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the database did not take its probe".into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::RedbStore;
    use crate::store::cipher::TemplateKeys;

    /// The enrolments of the store in `dir`, under one fixed template key (so a store opened
    /// again reads what it wrote).
    async fn open(dir: &std::path::Path) -> Arc<Enrolments> {
        let line = format!("k:{}", "ab".repeat(32));
        let keys = TemplateKeys::parse(&line, std::path::Path::new("k")).unwrap();
        let store = RedbStore::open(dir, 5, keys).unwrap();
        Arc::new(Enrolments::open(Arc::new(store), "m", 2).await.unwrap())
    }

    /// A listener that never receives (each try a full reload) is retried less and less
    /// often, up to the cap; one that received is retried at once, and the doubling restarts.
    #[test]
    fn a_listener_that_never_received_is_retried_with_a_growing_wait() {
        let mut unproved = RECONNECT_EVERY;
        let waits: Vec<u64> = (0..7)
            .map(|_| relisten_wait(false, &mut unproved).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(relisten_wait(true, &mut unproved), RECONNECT_EVERY);
        assert_eq!(relisten_wait(false, &mut unproved), RECONNECT_EVERY);
    }

    /// A subject another replica created a moment ago is in the store before its notification
    /// reaches this index: its creator is found there, and an unknown id is none.
    #[tokio::test]
    async fn the_creator_is_found_in_the_store_before_the_index_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path()).await;
        let elsewhere = e
            .store
            .create_subject("Ada", Some("app"), None)
            .await
            .unwrap();
        assert!(e.index().get(&elsewhere.id).is_none());
        assert_eq!(
            e.creator_of(&elsewhere.id).await.unwrap(),
            Some(Some("app".to_owned()))
        );
        let here = e.create_subject("Grace", Creator::default()).await.unwrap();
        assert_eq!(e.creator_of(&here.id).await.unwrap(), Some(None));
        let unknown = uuid::Uuid::new_v4().to_string();
        assert_eq!(e.creator_of(&unknown).await.unwrap(), None);
    }

    #[tokio::test]
    async fn writes_reach_the_index_after_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path()).await;
        let s = e.create_subject("Ada", Creator::default()).await.unwrap();
        assert_eq!(e.index().list(), vec![s.clone()]);
        let t = NewTemplate {
            model: "m".into(),
            embedding: vec![0.5, 0.5],
            quality: None,
            enrolled_by: None,
        };
        let (_, after) = e.add_template(&s.id, t, Creator::default()).await.unwrap();
        assert_eq!(after.faces, 1);
        assert_eq!(e.index().nearest(&[0.5, 0.5], 1)[0].subject.id, s.id);
        let (second, _) = e
            .add_template(
                &s.id,
                NewTemplate {
                    model: "m".into(),
                    embedding: vec![-1.0, -1.0],
                    quality: None,
                    enrolled_by: None,
                },
                Creator::default(),
            )
            .await
            .unwrap();
        let after = e.delete_template(&s.id, &second.id).await.unwrap();
        assert_eq!(after.faces, 1);
        assert_eq!(e.index().template_count(), 1);
        assert!(matches!(
            e.delete_template(&s.id, &second.id).await,
            Err(StoreError::FaceNotFound { .. })
        ));
        assert_eq!(
            e.rename_subject(&s.id, " Ada L. ").await.unwrap().name,
            "Ada L."
        );
        assert_eq!(e.index().list()[0].name, "Ada L.");
        assert!(e.delete_subject(&s.id).await.unwrap());
        assert!(e.index().list().is_empty());
        assert!(e.health().available);
        assert_eq!(e.health().reloads, 1);
        // One statement that timed out on a lock is no outage; an unreachable store is, until
        // the next success.
        assert!(
            e.mark::<()>(Err(StoreError::Busy("lock timeout".into())))
                .is_err()
        );
        assert!(e.health().available);
        assert!(
            e.mark::<()>(Err(StoreError::Unavailable("refused".into())))
                .is_err()
        );
        assert!(!e.health().available);
        e.mark(Ok(())).unwrap();
        assert!(e.health().available);
    }

    #[tokio::test]
    async fn a_key_is_held_to_its_quota_and_deleting_frees_a_place() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path()).await;
        let app = Creator {
            key_id: Some("app"),
            quota: Some(2),
        };
        let first = e.create_subject("a1", app).await.unwrap();
        assert_eq!(first.created_by.as_deref(), Some("app"));
        e.create_subject("a2", app).await.unwrap();
        match e.create_subject("a3", app).await {
            Err(StoreError::KeyQuota {
                of: QuotaOf::Subjects,
                key_id,
                held: 2,
                limit: 2,
            }) => assert_eq!(key_id, "app"),
            other => panic!("expected the quota, got {other:?}"),
        }
        // Another key, and a key without a quota (admin), still create.
        let other = Creator {
            key_id: Some("other"),
            quota: Some(2),
        };
        e.create_subject("b1", other).await.unwrap();
        let admin = Creator {
            key_id: Some("admin"),
            quota: None,
        };
        for i in 0..3 {
            e.create_subject(&format!("root{i}"), admin).await.unwrap();
        }
        assert_eq!(e.index().subjects_created_by("admin"), 3);
        // A refused or failed creation gives its reservation back.
        assert!(matches!(
            e.create_subject(" ", other).await,
            Err(StoreError::Invalid(_))
        ));
        e.create_subject("b2", other).await.unwrap();
        assert!(e.creating().is_empty());
        // Deleting one of the key's subjects frees its place.
        assert!(e.delete_subject(&first.id).await.unwrap());
        e.create_subject("a3", app).await.unwrap();
        assert!(e.create_subject("a4", app).await.is_err());
    }

    #[tokio::test]
    async fn concurrent_creations_of_one_key_cannot_pass_its_quota_together() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path()).await;
        let tasks: Vec<_> = (0..24)
            .map(|i| {
                let e = e.clone();
                tokio::spawn(async move {
                    let creator = Creator {
                        key_id: Some("app"),
                        quota: Some(5),
                    };
                    e.create_subject(&format!("s{i}"), creator).await
                })
            })
            .collect();
        let mut created = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => created += 1,
                Err(StoreError::KeyQuota { limit: 5, .. }) => {}
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(created, 5);
        assert_eq!(e.index().subjects_created_by("app"), 5);
        assert!(e.creating().is_empty());
    }

    fn face(v: f32) -> NewTemplate {
        NewTemplate {
            model: "m".into(),
            embedding: vec![v, 1.0],
            quality: None,
            enrolled_by: None,
        }
    }

    /// With the embedded store nothing but this replica's own writes changes the index, so a
    /// write whose guarded apply lost to another write of the same subject must still end up
    /// there, and stay counted against its key's quota until it does: enrolments and renames of
    /// the same subjects at once leave the index holding exactly what the store holds, and the
    /// key within its quota.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_of_one_subject_all_reach_the_index_within_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let line = format!("k:{}", "ab".repeat(32));
        let keys = TemplateKeys::parse(&line, std::path::Path::new("k")).unwrap();
        let store = RedbStore::open(dir.path(), 64, keys).unwrap();
        let e = Arc::new(Enrolments::open(Arc::new(store), "m", 2).await.unwrap());
        let subjects = [
            e.create_subject("a", Creator::default()).await.unwrap().id,
            e.create_subject("b", Creator::default()).await.unwrap().id,
        ];
        let quota = 12;
        let mut tasks = Vec::new();
        for i in 0..40 {
            let (e, id) = (Arc::clone(&e), subjects[i % 2].clone());
            tasks.push(tokio::spawn(async move {
                let app = Creator {
                    key_id: Some("app"),
                    quota: Some(quota),
                };
                if i % 3 == 0 {
                    e.rename_subject(&id, &format!("n{i}")).await.map(drop)
                } else {
                    e.add_template(&id, face(i as f32), app).await.map(drop)
                }
            }));
        }
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) | Err(StoreError::KeyQuota { .. }) => {}
                Err(other) => panic!("{other:?}"),
            }
        }
        let mut stored_faces = 0;
        for id in &subjects {
            let stored = e.store.load_subject(id).await.unwrap().unwrap();
            let (held, templates) = e.index().get(id).unwrap();
            assert_eq!(held.name, stored.name, "the last rename");
            let ids = |t: &[Template]| {
                let mut v: Vec<String> = t.iter().map(|t| t.id.clone()).collect();
                v.sort();
                v
            };
            assert_eq!(
                ids(&templates),
                ids(&stored.templates),
                "the index has every face"
            );
            stored_faces += stored.templates.len();
        }
        assert_eq!(stored_faces, quota, "all the quota taken, and no more");
        assert_eq!(e.index().templates_enrolled_by("app"), quota);
    }

    #[tokio::test]
    async fn a_key_is_held_to_its_quota_of_templates() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path()).await;
        let anyone = Creator::default();
        let (s1, s2) = (
            e.create_subject("s1", anyone).await.unwrap(),
            e.create_subject("s2", anyone).await.unwrap(),
        );
        let app = Creator {
            key_id: Some("app"),
            quota: Some(3),
        };
        // The quota counts faces across subjects, and records the enroller whatever the
        // template said.
        let mut claimed = face(0.1);
        claimed.enrolled_by = Some("someone-else".into());
        let (first, _) = e.add_template(&s1.id, claimed, app).await.unwrap();
        assert_eq!(first.enrolled_by.as_deref(), Some("app"));
        e.add_template(&s1.id, face(0.2), app).await.unwrap();
        e.add_template(&s2.id, face(0.3), app).await.unwrap();
        assert_eq!(e.index().templates_enrolled_by("app"), 3);
        assert!(e.check_quota(QuotaOf::Templates, app).is_err());
        match e.add_template(&s2.id, face(0.4), app).await {
            Err(StoreError::KeyQuota {
                of: QuotaOf::Templates,
                held: 3,
                limit: 3,
                ..
            }) => {}
            other => panic!("expected the template quota, got {other:?}"),
        }
        // Other keys and keys without a quota enrol; the subject quota is another count.
        let other = Creator {
            key_id: Some("other"),
            quota: Some(3),
        };
        e.add_template(&s2.id, face(0.5), other).await.unwrap();
        assert!(e.check_quota(QuotaOf::Subjects, app).is_ok());
        let admin = Creator {
            key_id: Some("admin"),
            quota: None,
        };
        e.add_template(&s2.id, face(0.6), admin).await.unwrap();
        // Deleting one face frees a place; deleting a subject frees all its faces.
        e.delete_template(&s1.id, &first.id).await.unwrap();
        e.add_template(&s2.id, face(0.7), app).await.unwrap();
        assert!(e.delete_subject(&s2.id).await.unwrap());
        assert_eq!(e.index().templates_enrolled_by("app"), 1);
        assert!(e.creating().is_empty());
        // A restart counts what the store recorded.
        drop(e);
        let e = open(dir.path()).await;
        assert_eq!(e.index().templates_enrolled_by("app"), 1);
    }

    #[tokio::test]
    async fn concurrent_enrolments_of_one_key_cannot_pass_its_quota_together() {
        let dir = tempfile::tempdir().unwrap();
        let e = Arc::new(open(dir.path()).await);
        let mut subjects = Vec::new();
        for i in 0..6 {
            let name = format!("s{i}");
            subjects.push(
                e.create_subject(&name, Creator::default())
                    .await
                    .unwrap()
                    .id,
            );
        }
        let tasks: Vec<_> = (0..24)
            .map(|i| {
                let (e, subject) = (e.clone(), subjects[i % 6].clone());
                tokio::spawn(async move {
                    let app = Creator {
                        key_id: Some("app"),
                        quota: Some(7),
                    };
                    e.add_template(&subject, face(i as f32), app).await
                })
            })
            .collect();
        let mut enrolled = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => enrolled += 1,
                Err(StoreError::KeyQuota { limit: 7, .. }) => {}
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(enrolled, 7);
        assert_eq!(e.index().templates_enrolled_by("app"), 7);
        assert!(e.creating().is_empty());
    }

    /// Regression: a face the index still had but the store no longer did (a delete whose
    /// commit answered an error yet reached the disk) kept matching after the retried delete
    /// answered face_not_found.
    #[tokio::test]
    async fn a_face_the_store_lacks_leaves_the_index_on_delete() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path()).await;
        let s = e.create_subject("Ada", Creator::default()).await.unwrap();
        let ghost = Template {
            id: "ghost".into(),
            subject_id: s.id.clone(),
            model: "m".into(),
            embedding: vec![0.5, 0.5],
            quality: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            enrolled_by: None,
        };
        assert!(e.index().add_template(ghost));
        assert_eq!(e.index().get(&s.id).unwrap().0.faces, 1);
        assert!(matches!(
            e.delete_template(&s.id, "ghost").await,
            Err(StoreError::FaceNotFound { .. })
        ));
        assert_eq!(e.index().get(&s.id).unwrap().0.faces, 0);
    }

    /// The embedded store during an I/O fault: while `down`, a deletion commits and then
    /// answers `Unavailable` (its final sync failed, the commit on disk all the same), and reads
    /// answer `Unavailable` (the file closed until it is opened again).
    struct FaultyDisk {
        inner: RedbStore,
        down: std::sync::atomic::AtomicBool,
    }

    impl FaultyDisk {
        fn fault<T>(&self, answer: Result<T, StoreError>) -> Result<T, StoreError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("fsync failed".into()));
            }
            answer
        }
    }

    #[async_trait::async_trait]
    impl TemplateStore for FaultyDisk {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn kind(&self) -> &'static str {
            self.inner.kind()
        }
        async fn create_subject(
            &self,
            name: &str,
            created_by: Option<&str>,
            key_quota: Option<usize>,
        ) -> Result<SubjectRecord, StoreError> {
            let created = self.inner.create_subject(name, created_by, key_quota).await;
            self.fault(created)
        }
        async fn delete_subject(&self, id: &str) -> Result<bool, StoreError> {
            let deleted = self.inner.delete_subject(id).await;
            self.fault(deleted)
        }
        async fn add_template(
            &self,
            subject_id: &str,
            template: NewTemplate,
            key_quota: Option<usize>,
        ) -> Result<Template, StoreError> {
            let stored = self
                .inner
                .add_template(subject_id, template, key_quota)
                .await;
            self.fault(stored)
        }
        async fn delete_template(
            &self,
            subject_id: &str,
            template_id: &str,
        ) -> Result<(), StoreError> {
            let deleted = self.inner.delete_template(subject_id, template_id).await;
            self.fault(deleted)
        }
        async fn rename_subject(&self, id: &str, name: &str) -> Result<String, StoreError> {
            let renamed = self.inner.rename_subject(id, name).await;
            self.fault(renamed)
        }
        async fn load_all(&self) -> Result<Vec<SubjectRecord>, StoreError> {
            let all = self.inner.load_all().await;
            self.fault(all)
        }
        async fn load_subject(&self, id: &str) -> Result<Option<SubjectRecord>, StoreError> {
            let one = self.inner.load_subject(id).await;
            self.fault(one)
        }
    }

    /// Enrolments on the embedded store in `dir`, behind [`FaultyDisk`] (up).
    async fn on_faulty_disk(dir: &std::path::Path) -> (Arc<FaultyDisk>, Arc<Enrolments>) {
        let line = format!("k:{}", "ab".repeat(32));
        let keys = TemplateKeys::parse(&line, std::path::Path::new("k")).unwrap();
        let store = Arc::new(FaultyDisk {
            inner: RedbStore::open(dir, 5, keys).unwrap(),
            down: std::sync::atomic::AtomicBool::new(false),
        });
        let e = Arc::new(
            Enrolments::open(store.clone() as Arc<dyn TemplateStore>, "m", 2)
                .await
                .unwrap(),
        );
        (store, e)
    }

    /// A creation the embedded store answered `Unavailable` although it reached the disk (its
    /// final sync failed) left a subject the index never learnt of, uncounted against its key's
    /// quota, while the client's retry made a second one. It is now read back once the store
    /// answers again, and counted.
    #[tokio::test]
    async fn a_creation_answered_unavailable_but_on_disk_reaches_the_index_once_the_store_is_back()
    {
        let dir = tempfile::tempdir().unwrap();
        let (store, e) = on_faulty_disk(dir.path()).await;
        let app = Creator {
            key_id: Some("app"),
            quota: Some(5),
        };
        let kept = e.create_subject("Kept", app).await.unwrap();
        store.down.store(true, Ordering::SeqCst);
        assert!(matches!(
            e.create_subject("Ada", app).await,
            Err(StoreError::Unavailable(_))
        ));
        assert_eq!(e.index().subject_count(), 1, "not known to be created yet");
        tokio::time::sleep(RECHECK_EVERY * 3).await;
        assert_eq!(e.index().subject_count(), 1, "the store still cannot say");
        store.down.store(false, Ordering::SeqCst);
        let back = std::time::Instant::now();
        while e.index().subject_count() < 2 && back.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(RECHECK_EVERY).await;
        }
        let names: Vec<String> = e.index().list().into_iter().map(|s| s.name).collect();
        assert!(names.contains(&"Ada".to_owned()), "{names:?}");
        assert_eq!(
            e.index().subjects_created_by("app"),
            2,
            "counted against its key"
        );
        assert!(e.index().get(&kept.id).is_some());
    }

    /// A deletion the embedded store answered `Unavailable` although it reached the disk (its
    /// final sync failed) left the subject in the index, verifying until a restart even after
    /// the store came back. The subject is now read back once the store answers again: gone.
    #[tokio::test]
    async fn a_deletion_answered_unavailable_but_on_disk_leaves_the_index_once_the_store_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let (store, e) = on_faulty_disk(dir.path()).await;
        let s = e.create_subject("Ada", Creator::default()).await.unwrap();
        store.down.store(true, Ordering::SeqCst);
        assert!(matches!(
            e.delete_subject(&s.id).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(
            e.index().get(&s.id).is_some(),
            "not known to be deleted yet"
        );
        tokio::time::sleep(RECHECK_EVERY * 3).await;
        assert!(e.index().get(&s.id).is_some(), "the store still cannot say");
        store.down.store(false, Ordering::SeqCst);
        let back = std::time::Instant::now();
        while e.index().get(&s.id).is_some() && back.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(RECHECK_EVERY).await;
        }
        assert!(
            e.index().get(&s.id).is_none(),
            "the deletion on disk reached the index"
        );
        while !e.rechecked.lock().unwrap().is_empty() && back.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(RECHECK_EVERY).await;
        }
        assert!(e.health().available);
        assert!(
            e.rechecked.lock().unwrap().is_empty(),
            "the read-back ended"
        );
    }

    /// A store that holds each acknowledged `add_template` (with `creates`, `create_subject`)
    /// until released: the write is durable, its caller has not heard back yet.
    struct HeldAfterWrite {
        inner: RedbStore,
        written: Arc<tokio::sync::Notify>,
        release: Arc<tokio::sync::Notify>,
        /// Hold creations instead, recording each created id here.
        creates: Option<Arc<std::sync::Mutex<Vec<String>>>>,
        /// Hold the next read of one subject once armed.
        reads: Arc<HeldRead>,
    }

    /// A hold on the next `load_subject` once `armed`: reached, then released.
    #[derive(Default)]
    struct HeldRead {
        armed: std::sync::atomic::AtomicBool,
        reached: tokio::sync::Notify,
        release: tokio::sync::Notify,
    }

    #[async_trait::async_trait]
    impl TemplateStore for HeldAfterWrite {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn kind(&self) -> &'static str {
            self.inner.kind()
        }
        async fn create_subject(
            &self,
            name: &str,
            created_by: Option<&str>,
            key_quota: Option<usize>,
        ) -> Result<SubjectRecord, StoreError> {
            let created = self.inner.create_subject(name, created_by, key_quota).await;
            if let (Some(ids), Ok(record)) = (&self.creates, &created) {
                ids.lock().unwrap().push(record.id.clone());
                self.written.notify_one();
                self.release.notified().await;
            }
            created
        }
        async fn delete_subject(&self, id: &str) -> Result<bool, StoreError> {
            self.inner.delete_subject(id).await
        }
        async fn add_template(
            &self,
            subject_id: &str,
            template: NewTemplate,
            key_quota: Option<usize>,
        ) -> Result<Template, StoreError> {
            let stored = self
                .inner
                .add_template(subject_id, template, key_quota)
                .await;
            if self.creates.is_none() {
                self.written.notify_one();
                self.release.notified().await;
            }
            stored
        }
        async fn delete_template(
            &self,
            subject_id: &str,
            template_id: &str,
        ) -> Result<(), StoreError> {
            self.inner.delete_template(subject_id, template_id).await
        }
        async fn rename_subject(&self, id: &str, name: &str) -> Result<String, StoreError> {
            self.inner.rename_subject(id, name).await
        }
        async fn load_all(&self) -> Result<Vec<SubjectRecord>, StoreError> {
            self.inner.load_all().await
        }
        async fn load_subject(&self, id: &str) -> Result<Option<SubjectRecord>, StoreError> {
            let loaded = self.inner.load_subject(id).await;
            if self.reads.armed.swap(false, Ordering::SeqCst) {
                self.reads.reached.notify_one();
                self.reads.release.notified().await;
            }
            loaded
        }
    }

    /// Regression: a subject deleted (through another replica, its deletion applied here by the
    /// change listener) between its creation's commit and the creation's own index update was
    /// put back by that update, and kept verifying here until its next change.
    #[tokio::test]
    async fn a_subject_deleted_while_its_creation_was_answered_stays_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let line = format!("k:{}", "ab".repeat(32));
        let keys = TemplateKeys::parse(&line, std::path::Path::new("k")).unwrap();
        let (written, release) = (Arc::default(), Arc::<tokio::sync::Notify>::default());
        let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
        let store = HeldAfterWrite {
            inner: RedbStore::open(dir.path(), 5, keys).unwrap(),
            written: Arc::clone(&written),
            release: Arc::clone(&release),
            creates: Some(Arc::clone(&ids)),
            reads: Arc::default(),
        };
        let e = Arc::new(Enrolments::open(Arc::new(store), "m", 2).await.unwrap());
        let creating = tokio::spawn({
            let e = Arc::clone(&e);
            async move { e.create_subject("Ada", Creator::default()).await }
        });
        written.notified().await;
        let id = ids.lock().unwrap()[0].clone();
        assert!(e.delete_subject(&id).await.unwrap());
        release.notify_one();
        let created = creating.await.unwrap().unwrap();
        assert_eq!(created.id, id, "answered as the store created it");
        assert!(e.index().get(&id).is_none(), "a deleted subject came back");
        assert_eq!(e.index().stats().subjects, 0);
    }

    /// A store in `dir` whose next read can be held ([`HeldRead`]), and enrolments over it.
    async fn listened(
        dir: &std::path::Path,
    ) -> (Arc<HeldAfterWrite>, Arc<HeldRead>, Arc<Enrolments>) {
        let line = format!("k:{}", "ab".repeat(32));
        let keys = TemplateKeys::parse(&line, std::path::Path::new("k")).unwrap();
        let reads = Arc::<HeldRead>::default();
        let store = Arc::new(HeldAfterWrite {
            inner: RedbStore::open(dir, 5, keys).unwrap(),
            written: Arc::default(),
            release: Arc::default(),
            creates: None,
            reads: Arc::clone(&reads),
        });
        let e = Arc::new(
            Enrolments::open(Arc::clone(&store) as Arc<dyn TemplateStore>, "m", 2)
                .await
                .unwrap(),
        );
        (store, reads, e)
    }

    /// The change listener's read of `id` started and held (released by `reads.release`).
    async fn held_listener_read(
        store: &Arc<HeldAfterWrite>,
        reads: &HeldRead,
        e: &Arc<Enrolments>,
        id: &str,
    ) -> tokio::task::JoinHandle<Result<(), StoreError>> {
        reads.armed.store(true, Ordering::SeqCst);
        let listener = tokio::spawn({
            let (e, store, id) = (Arc::clone(e), Arc::clone(store), id.to_owned());
            async move { e.refresh_subject_from(&*store, &id).await }
        });
        reads.reached.notified().await;
        listener
    }

    /// Regression: the change listener's read of a subject, taken before a deletion through
    /// this replica landed in the index, was applied after it and put the deleted subject back
    /// (verifying here until the deletion's own notification was read).
    #[tokio::test]
    async fn a_listener_read_older_than_a_local_deletion_does_not_bring_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let (store, reads, e) = listened(dir.path()).await;
        let s = e.create_subject("Ada", Creator::default()).await.unwrap();
        let listener = held_listener_read(&store, &reads, &e, &s.id).await;
        assert!(e.delete_subject(&s.id).await.unwrap());
        reads.release.notify_one();
        listener.await.unwrap().unwrap();
        assert!(
            e.index().get(&s.id).is_none(),
            "a deleted subject came back"
        );
    }

    /// The guard must not cost the listener a subject another replica created: the version of a
    /// subject the index lacks moves with every removal, so a deletion of any other subject
    /// during the listener's read refused it, and the new subject stayed missing here.
    #[tokio::test]
    async fn a_local_deletion_does_not_cost_the_listener_another_subject() {
        let dir = tempfile::tempdir().unwrap();
        let (store, reads, e) = listened(dir.path()).await;
        let x = e.create_subject("X", Creator::default()).await.unwrap();
        // Created as another replica would: in the store, not through this index.
        let y = store.inner.create_subject("Y", None, None).await.unwrap();
        let listener = held_listener_read(&store, &reads, &e, &y.id).await;
        assert!(e.delete_subject(&x.id).await.unwrap());
        reads.release.notify_one();
        listener.await.unwrap().unwrap();
        assert!(e.index().get(&y.id).is_some(), "the new subject is missing");
        assert!(e.index().get(&x.id).is_none());
    }

    /// An enrolment whose index update lost to another write of its subject (a rename here;
    /// the listener's change with PostgreSQL) is read back from the store, and stays counted
    /// against its key's quota meanwhile: a reservation given back before the reread let the
    /// key's next enrolment past its quota in between (the embedded store has no other check).
    #[tokio::test]
    async fn a_write_read_back_stays_counted_against_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let line = format!("k:{}", "ab".repeat(32));
        let keys = TemplateKeys::parse(&line, std::path::Path::new("k")).unwrap();
        let (written, release) = (Arc::default(), Arc::<tokio::sync::Notify>::default());
        let reads = Arc::<HeldRead>::default();
        let store = HeldAfterWrite {
            inner: RedbStore::open(dir.path(), 5, keys).unwrap(),
            written: Arc::clone(&written),
            release: Arc::clone(&release),
            creates: None,
            reads: Arc::clone(&reads),
        };
        let e = Arc::new(Enrolments::open(Arc::new(store), "m", 2).await.unwrap());
        let s = e.create_subject("Ada", Creator::default()).await.unwrap();
        let app = Creator {
            key_id: Some("app"),
            quota: Some(2),
        };
        let enrol = |v: f32| {
            let (e, id) = (Arc::clone(&e), s.id.clone());
            tokio::spawn(async move { e.add_template(&id, face(v), app).await })
        };
        let first = enrol(0.1);
        written.notified().await;
        release.notify_one();
        first.await.unwrap().unwrap();
        // The second enrolment is committed; before its index update, the subject is renamed.
        let second = enrol(0.2);
        written.notified().await;
        e.rename_subject(&s.id, "Ada L.").await.unwrap();
        reads.armed.store(true, Ordering::SeqCst);
        release.notify_one();
        reads.reached.notified().await;
        // Read back from the store, not yet in the index: still counted.
        assert_eq!(e.index().templates_enrolled_by("app"), 1);
        assert!(matches!(
            e.reserve(QuotaOf::Templates, app),
            Err(StoreError::KeyQuota { .. })
        ));
        reads.release.notify_one();
        let (_, subject) = second.await.unwrap().unwrap();
        assert_eq!((subject.faces, subject.name.as_str()), (2, "Ada L."));
        assert_eq!(e.index().templates_enrolled_by("app"), 2);
    }

    /// Regression: a request dropped (timed out, client gone) after the store acknowledged its
    /// enrolment left the face stored but missing from the index, uncounted against the key's
    /// quota and never matched until a restart.
    #[tokio::test]
    async fn a_write_whose_caller_went_away_still_reaches_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let line = format!("k:{}", "ab".repeat(32));
        let keys = TemplateKeys::parse(&line, std::path::Path::new("k")).unwrap();
        let (written, release) = (Arc::default(), Arc::<tokio::sync::Notify>::default());
        let store = HeldAfterWrite {
            inner: RedbStore::open(dir.path(), 5, keys).unwrap(),
            written: Arc::clone(&written),
            release: Arc::clone(&release),
            creates: None,
            reads: Arc::default(),
        };
        let e = Arc::new(Enrolments::open(Arc::new(store), "m", 2).await.unwrap());
        let s = e.create_subject("Ada", Creator::default()).await.unwrap();
        let app = Creator {
            key_id: Some("app"),
            quota: Some(1),
        };
        // The request's audit hook, as the access-control middleware sets it.
        let audited = Arc::new(std::sync::Mutex::new(Vec::new()));
        let hook = {
            let audited = Arc::clone(&audited);
            audit::OnCommit(Arc::new(move |status, detail: AuditDetail| {
                audited.lock().unwrap().push((status, detail));
            }))
        };
        audit::ON_COMMIT
            .scope(Some(hook), async {
                tokio::select! {
                    r = e.add_template(&s.id, face(0.1), app) => panic!("the write was held: {r:?}"),
                    () = written.notified() => {}
                }
            })
            .await;
        // The caller's future is gone; the store lets the acknowledgement through.
        release.notify_one();
        for _ in 0..200 {
            if e.index().templates_enrolled_by("app") == 1 && !audited.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(e.index().templates_enrolled_by("app"), 1);
        let record = e.index().get(&s.id).unwrap();
        assert_eq!(record.0.faces, 1);
        // The write recorded what it stored, since its request's event could not.
        let audited = audited.lock().unwrap().clone();
        assert_eq!(audited.len(), 1, "{audited:?}");
        let (status, detail) = &audited[0];
        assert_eq!(*status, StatusCode::CREATED);
        assert_eq!(detail.subject.as_deref(), Some(s.id.as_str()));
        assert_eq!(detail.face.as_deref(), Some(record.1[0].id.as_str()));
        assert!(e.creating().is_empty());
        // The stored face counts against the key's quota of one.
        assert!(matches!(
            e.check_quota(QuotaOf::Templates, app),
            Err(StoreError::KeyQuota { held: 1, .. })
        ));
    }
}
