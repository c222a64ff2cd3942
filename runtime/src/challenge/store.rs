//! One interface over the two places challenge sessions can live, so the HTTP API and the verify
//! hook do not care which is in force: this replica's memory ([`Registry`], the single-replica
//! embedded-store mode) or the shared PostgreSQL database ([`super::pg::PgSessions`], when
//! replicas share `FACEKEY_DATABASE_URL`, so any replica serves any call of a session).
//!
//! Contract common to both: sessions are bound to the key that opened them (another key gets
//! [`SessionError::NotFound`]), expire after the TTL, are bounded (globally and per key) and a
//! passed session is consumed by exactly one verification or identification. A store that
//! cannot be reached answers [`SessionError::Unavailable`], never a pass. An id that is not of
//! the form sessions get (`session::check_id`) is [`SessionError::NotFound`] in both, before
//! any lookup. Both also keep the record of the frames of each subject's accepted sessions
//! against replays across sessions ([`super::replay`]).

use std::time::{Instant, SystemTime};

use super::fingerprint::Fingerprint;
use super::replay::{AcceptedSession, Compared, Replayed};
use super::session::{
    BatchResult, Closed, Concluded, Opened, PassedProbe, Registry, SessionError, SessionLimits,
    SessionUse, SessionView,
};
use super::{ChallengePolicy, FrameObservation};

/// Where challenge sessions live.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync {
    /// The bounds in force.
    fn limits(&self) -> SessionLimits;

    /// The checker's thresholds in force.
    fn policy(&self) -> &ChallengePolicy;

    /// Where sessions live, for logs (`memory`, `PostgreSQL`).
    fn describe(&self) -> &'static str;

    /// Opens a session for `key`, optionally bound to `subject`; also returns sessions that
    /// ended by expiry meanwhile (for metrics).
    async fn open(
        &self,
        key: &str,
        subject: Option<String>,
    ) -> Result<(Opened, Vec<Concluded>), SessionError>;

    /// Checks (and in memory reserves) the session for a batch of `n` frames before they are
    /// run through the models; `Ok(Some(view))` when the session has already ended.
    async fn begin_batch(
        &self,
        key: &str,
        id: &str,
        n: usize,
    ) -> Result<Option<SessionView>, SessionError>;

    /// Releases a reservation whose frames could not be processed.
    async fn release(&self, key: &str, id: &str);

    /// Adds a batch's observations, re-judges the session and ends it when passed, failed or
    /// out of frames. `concluded` is set by exactly one call: the one that ended the session.
    async fn add_frames(
        &self,
        key: &str,
        id: &str,
        batch: Vec<FrameObservation>,
    ) -> Result<BatchResult, SessionError>;

    /// The session's state.
    async fn view(&self, key: &str, id: &str) -> Result<SessionView, SessionError>;

    /// Consumes a passed session for one face decision, `purpose` (at most once, across
    /// replicas; a bound session serves only a verification of its subject).
    async fn take_probe(
        &self,
        key: &str,
        id: &str,
        purpose: SessionUse<'_>,
    ) -> Result<PassedProbe, SessionError>;

    /// Ends sessions past their time (returned once, for metrics) and forgets old ones.
    async fn sweep(&self) -> Result<Vec<Concluded>, SessionError>;

    /// Deletes `key`'s session `id` at its client's request, whatever its state, with what it
    /// holds; its place is free at once, on every replica.
    async fn close(&self, key: &str, id: &str) -> Result<Closed, SessionError>;

    /// Sessions holding a place now (in progress, or passed and unused).
    async fn active(&self) -> Result<usize, SessionError>;

    /// Deletes every session bound to `subject`, with the frames and probe they hold (the
    /// subject was deleted: what was captured for it goes too, not at the sessions' expiry),
    /// and the record of its accepted sessions' frames; returns how many sessions.
    async fn forget_subject(&self, subject: &str) -> Result<usize, SessionError>;

    /// The sessions accepted for `subject` within the replay window, most recent first, with
    /// their frames' fingerprints ([`super::replay`]; none when the window is zero). The caller
    /// compares them ([`super::replay::nearest_replay`]) outside any lock.
    async fn accepted_sessions(&self, subject: &str) -> Result<Vec<AcceptedSession>, SessionError>;

    /// Remembers the frames (`prints`) of `session`, which a verification or identification
    /// just accepted for the subjects `checked` names, for the replay window (on every replica
    /// sharing the store), unless they repeat a session remembered for one of them that the
    /// caller's check did not see (each [`Compared`] names the sessions
    /// [`Self::accepted_sessions`] gave it): then nothing is remembered and that subject and
    /// replay are given, for the caller to refuse. Comparing and writing are one step under a
    /// lock on each subject, so two sessions of one recording accepted for a subject at the same
    /// moment, each checked before the other was remembered, cannot both be accepted.
    async fn remember_verified(
        &self,
        checked: Vec<Compared>,
        session: &str,
        prints: Vec<Fingerprint>,
    ) -> Result<Option<(String, Replayed)>, SessionError>;
}

#[async_trait::async_trait]
impl SessionStore for Registry {
    fn limits(&self) -> SessionLimits {
        Registry::limits(self)
    }

    fn policy(&self) -> &ChallengePolicy {
        Registry::policy(self)
    }

    fn describe(&self) -> &'static str {
        "memory"
    }

    async fn open(
        &self,
        key: &str,
        subject: Option<String>,
    ) -> Result<(Opened, Vec<Concluded>), SessionError> {
        Registry::open(self, key, subject, Instant::now(), SystemTime::now())
    }

    async fn begin_batch(
        &self,
        key: &str,
        id: &str,
        n: usize,
    ) -> Result<Option<SessionView>, SessionError> {
        Registry::begin_batch(self, key, id, n, Instant::now())
    }

    async fn release(&self, key: &str, id: &str) {
        Registry::release(self, key, id);
    }

    async fn add_frames(
        &self,
        key: &str,
        id: &str,
        batch: Vec<FrameObservation>,
    ) -> Result<BatchResult, SessionError> {
        Registry::add_frames(self, key, id, batch, Instant::now())
    }

    async fn view(&self, key: &str, id: &str) -> Result<SessionView, SessionError> {
        Registry::view(self, key, id, Instant::now())
    }

    async fn close(&self, key: &str, id: &str) -> Result<Closed, SessionError> {
        Registry::close(self, key, id)
    }

    async fn take_probe(
        &self,
        key: &str,
        id: &str,
        purpose: SessionUse<'_>,
    ) -> Result<PassedProbe, SessionError> {
        Registry::take_probe(self, key, id, purpose, Instant::now())
    }

    async fn sweep(&self) -> Result<Vec<Concluded>, SessionError> {
        let now = Instant::now();
        self.sweep_replays(now).await?;
        Ok(Registry::sweep(self, now))
    }

    async fn active(&self) -> Result<usize, SessionError> {
        Ok(Registry::active(self))
    }

    async fn forget_subject(&self, subject: &str) -> Result<usize, SessionError> {
        Registry::forget_subject(self, subject).await
    }

    async fn accepted_sessions(&self, subject: &str) -> Result<Vec<AcceptedSession>, SessionError> {
        Registry::accepted_sessions(self, subject, Instant::now()).await
    }

    async fn remember_verified(
        &self,
        checked: Vec<Compared>,
        session: &str,
        prints: Vec<Fingerprint>,
    ) -> Result<Option<(String, Replayed)>, SessionError> {
        Registry::remember_verified(self, checked, session.to_owned(), prints, Instant::now()).await
    }
}
