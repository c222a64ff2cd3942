//! Enrolments as a replica sees them: the durable [`TemplateStore`] and the in-memory
//! [`TemplateIndex`] kept in step with it. Writes go to the store first and reach the index only
//! once acknowledged; reads (list, get, verify, identify) come from the index and keep working
//! while the store is away. With PostgreSQL a background task applies other replicas' writes as
//! they are notified, and reloads everything after any gap in the notifications.
//!
//! A subject records the API key that created it, and a key may be held to a quota of subjects
//! ([`Creator`]): checked against the index plus this replica's creations in progress, so
//! concurrent requests of one key on one replica cannot pass it together, and by PostgreSQL
//! inside the write, so neither can requests spread over replicas.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::store::postgres::PgStore;
use crate::store::{
    NewTemplate, StoreError, Subject, SubjectRecord, Template, TemplateIndex, TemplateStore,
};

/// How often the change listener retries after losing the database.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// The template store's health as `/readyz` and the metrics report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHealth {
    /// Whether the last store call or change-listener check succeeded.
    pub available: bool,
    /// What failed, while unavailable.
    pub error: Option<String>,
    /// Full reloads of the index from the store since start (start-up included).
    pub reloads: u64,
}

/// Who creates a subject: the API key recorded as its creator and the most subjects that key
/// may hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Creator<'a> {
    /// The creating key's id (never the key); `None` records no creator.
    pub key_id: Option<&'a str>,
    /// Most subjects created by `key_id` the store may hold; `None`: no per-key limit.
    pub quota: Option<usize>,
}

/// The store and the index of one replica.
pub struct Enrolments {
    store: Arc<dyn TemplateStore>,
    index: TemplateIndex,
    available: AtomicBool,
    error: Mutex<Option<String>>,
    reloads: AtomicU64,
    /// Subject creations in progress on this replica per creating key id, held to its quota
    /// beside the subjects the index counts (keys with none are absent).
    creating: Mutex<HashMap<String, usize>>,
}

/// One creation counted against its key's quota until its subject is in the index (or it
/// failed, or the request went away).
struct Reservation<'a> {
    enrolments: &'a Enrolments,
    key_id: String,
    released: bool,
}

impl Reservation<'_> {
    /// Put the created subject in the index and give the reservation back in one step under
    /// the reservations' lock, so no quota check misses the subject in between. (With
    /// PostgreSQL this replica's own notification may upsert it first: until this step it is
    /// then counted twice, which can only refuse early, never admit one too many.)
    fn complete(mut self, record: SubjectRecord) {
        let mut creating = self.enrolments.creating();
        self.enrolments.index.upsert(record);
        Self::release(&mut creating, &self.key_id);
        self.released = true;
    }

    fn release(creating: &mut HashMap<String, usize>, key_id: &str) {
        if let Some(n) = creating.get_mut(key_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                creating.remove(key_id);
            }
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.released {
            Self::release(&mut self.enrolments.creating(), &self.key_id);
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
            reloads: AtomicU64::new(0),
            creating: Mutex::new(HashMap::new()),
        };
        this.reload().await?;
        Ok(this)
    }

    /// The index (reads).
    pub fn index(&self) -> &TemplateIndex {
        &self.index
    }

    /// Where the data lives, for logs.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// The store's health.
    pub fn health(&self) -> StoreHealth {
        StoreHealth {
            available: self.available.load(Ordering::Relaxed),
            error: self.error.lock().map(|e| e.clone()).unwrap_or_default(),
            reloads: self.reloads.load(Ordering::Relaxed),
        }
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
        let records = self.mark(self.store.load_all().await)?;
        self.index.replace_all(records);
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Reload one subject into the index (removing it when the store no longer has it).
    pub async fn refresh_subject(&self, id: &str) -> Result<(), StoreError> {
        match self.mark(self.store.load_subject(id).await)? {
            Some(record) => self.index.upsert(record),
            None => {
                self.index.remove(id);
            }
        }
        Ok(())
    }

    /// The creations in progress (a poisoned lock is still consistent: every change is one
    /// counter step).
    fn creating(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.creating.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Count one creation against `key_id`'s quota: [`StoreError::KeyQuota`] when the subjects
    /// it created (in the index, and being created on this replica) already reach `limit`.
    fn reserve(&self, key_id: &str, limit: usize) -> Result<Reservation<'_>, StoreError> {
        let mut creating = self.creating();
        let in_progress = creating.get(key_id).copied().unwrap_or(0);
        let held = self.index.subjects_created_by(key_id) + in_progress;
        if held >= limit {
            return Err(StoreError::KeyQuota {
                key_id: key_id.to_owned(),
                held,
                limit,
            });
        }
        *creating.entry(key_id.to_owned()).or_default() += 1;
        Ok(Reservation {
            enrolments: self,
            key_id: key_id.to_owned(),
            released: false,
        })
    }

    /// Create a subject recording `creator`'s key, within its quota; in the index once the
    /// store acknowledged it. The quota is checked against this replica's index and again by a
    /// store shared between replicas inside its write (PostgreSQL), which sees the other
    /// replicas' creations before their notifications arrive.
    pub async fn create_subject(
        &self,
        name: &str,
        creator: Creator<'_>,
    ) -> Result<Subject, StoreError> {
        let reservation = match (creator.key_id, creator.quota) {
            (Some(key_id), Some(limit)) => Some(self.reserve(key_id, limit)?),
            _ => None,
        };
        let record: SubjectRecord = self.mark(
            self.store
                .create_subject(name, creator.key_id, creator.quota)
                .await,
        )?;
        let id = record.id.clone();
        match reservation {
            Some(r) => r.complete(record),
            None => self.index.upsert(record),
        }
        self.index
            .get(&id)
            .map(|(s, _)| s)
            .ok_or(StoreError::SubjectNotFound(id))
    }

    /// Delete a subject and its templates; `false` when it did not exist.
    pub async fn delete_subject(&self, id: &str) -> Result<bool, StoreError> {
        let existed = self.mark(self.store.delete_subject(id).await)?;
        self.index.remove(id);
        Ok(existed)
    }

    /// Add a template; returns it and the subject's new summary.
    pub async fn add_template(
        &self,
        subject_id: &str,
        template: NewTemplate,
    ) -> Result<(Template, Subject), StoreError> {
        let stored = self.mark(self.store.add_template(subject_id, template).await)?;
        let applied = self.index.add_template(stored.clone());
        let subject = self.after_write(subject_id, applied).await?;
        Ok((stored, subject))
    }

    /// The subject's summary after a write the index applied (or, for a subject this replica
    /// has not heard of yet, after reloading it from the store).
    async fn after_write(&self, subject_id: &str, applied: bool) -> Result<Subject, StoreError> {
        if !applied {
            // Created on another replica and not yet heard of here.
            self.refresh_subject(subject_id).await?;
        }
        self.index
            .get(subject_id)
            .map(|(s, _)| s)
            .ok_or_else(|| StoreError::SubjectNotFound(subject_id.to_owned()))
    }

    /// Delete one face (template) of a subject; returns the subject's new summary.
    pub async fn delete_template(
        &self,
        subject_id: &str,
        template_id: &str,
    ) -> Result<Subject, StoreError> {
        self.mark(self.store.delete_template(subject_id, template_id).await)?;
        let applied = self.index.remove_template(subject_id, template_id);
        self.after_write(subject_id, applied).await
    }

    /// Rename a subject; returns its new summary.
    pub async fn rename_subject(&self, id: &str, name: &str) -> Result<Subject, StoreError> {
        let name = self.mark(self.store.rename_subject(id, name).await)?;
        let applied = self.index.rename(id, &name);
        self.after_write(id, applied).await
    }

    /// Keep the index in step with other replicas' writes: apply each notified subject, and
    /// reload everything after the listener (re)connects, since notifications sent while it was
    /// away are lost. Runs until the task is dropped.
    pub async fn follow(self: Arc<Self>, store: PgStore) {
        loop {
            let mut listener = match store.listener().await {
                Ok(l) => l,
                Err(e) => {
                    self.set_available(false, Some(e.to_string()));
                    tokio::time::sleep(RECONNECT_EVERY).await;
                    continue;
                }
            };
            // Anything may have changed while nobody listened.
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "resynchronising the template index failed; retrying");
                tokio::time::sleep(RECONNECT_EVERY).await;
                continue;
            }
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => {
                        if let Err(e) = self.refresh_subject(n.payload()).await {
                            tracing::warn!(subject = n.payload(), error = %e, "applying a change failed; reloading");
                            break;
                        }
                    }
                    // The connection closed: notifications may have been missed.
                    Ok(None) => {
                        self.set_available(false, Some("change listener disconnected".into()));
                        break;
                    }
                    Err(e) => {
                        self.set_available(false, Some(format!("change listener: {e}")));
                        break;
                    }
                }
            }
            tokio::time::sleep(RECONNECT_EVERY).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::RedbStore;
    use crate::store::cipher::{TemplateKeys, new_key_line};

    async fn open(dir: &std::path::Path) -> Enrolments {
        let keys =
            TemplateKeys::parse(&new_key_line("k").unwrap(), std::path::Path::new("k")).unwrap();
        let store = RedbStore::open(dir, 5, keys).unwrap();
        Enrolments::open(Arc::new(store), "m", 2).await.unwrap()
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
        };
        let (_, after) = e.add_template(&s.id, t).await.unwrap();
        assert_eq!(after.faces, 1);
        assert_eq!(e.index().nearest(&[0.5, 0.5], 1)[0].subject.id, s.id);
        let (second, _) = e
            .add_template(
                &s.id,
                NewTemplate {
                    model: "m".into(),
                    embedding: vec![-1.0, -1.0],
                    quality: None,
                },
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
        let e = Arc::new(open(dir.path()).await);
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
}
