//! The default template store: one redb file (ACID, crash-safe copy-on-write B-trees) under the
//! data directory, for a single runtime process. Templates are stored sealed (AES-256-GCM,
//! [`super::cipher`]); records written before encryption existed are sealed on open.
//!
//! A data directory that is full or read-only is an outage of the store, not of the runtime:
//! a write that meets it fails with [`StoreError::Unavailable`] (the API's 503
//! `store_unavailable`), nothing is acknowledged that was not committed, and reads keep coming
//! from the index. redb refuses every operation after an I/O error until the file is reopened,
//! so the database is then closed and reopened (at most every [`REOPEN_EVERY`]) by the next
//! operation; once space is back, writes work again without a restart. A directory that is
//! read-only at start-up opens the file read-only: the runtime serves, writes answer 503.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{
    Database, DatabaseError, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    StorageError, TableDefinition, WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::cipher::{Binding, NONCE_LEN, Sealed, TemplateKeys};
use super::{
    NewTemplate, StoreError, Subject, SubjectRecord, Template, TemplateStore, now_rfc3339,
    validate_name, validate_template,
};

/// Subjects by id.
const SUBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("subjects");
/// Templates by `"{subject_id}/{template_id}"`, so one subject's templates form a key range.
const TEMPLATES: TableDefinition<&str, &[u8]> = TableDefinition::new("templates");

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "templates.redb";

/// A template as stored: its embedding sealed. `embedding` is only read, from records written
/// before encryption, and sealed on open.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredTemplate {
    id: String,
    subject_id: String,
    model: String,
    quality: Option<f64>,
    created_at: String,
    /// The enrolling key's id; absent in records written before enrollers were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enrolled_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    embedding: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ciphertext: Option<String>,
}

impl StoredTemplate {
    fn binding(&self) -> Binding<'_> {
        Binding {
            template_id: &self.id,
            subject_id: &self.subject_id,
            model: &self.model,
        }
    }

    fn seal(template: &Template, keys: &TemplateKeys) -> Result<Self, StoreError> {
        let mut stored = Self {
            id: template.id.clone(),
            subject_id: template.subject_id.clone(),
            model: template.model.clone(),
            quality: template.quality,
            created_at: template.created_at.clone(),
            enrolled_by: template.enrolled_by.clone(),
            embedding: None,
            key_id: None,
            nonce: None,
            ciphertext: None,
        };
        let sealed = keys.seal(stored.binding(), &template.embedding)?;
        stored.key_id = Some(sealed.key_id);
        stored.nonce = Some(hex::encode(sealed.nonce));
        stored.ciphertext = Some(hex::encode(sealed.ciphertext));
        Ok(stored)
    }

    fn is_sealed(&self) -> bool {
        self.ciphertext.is_some()
    }

    fn open(self, keys: &TemplateKeys) -> Result<Template, StoreError> {
        let embedding = match (&self.key_id, &self.nonce, &self.ciphertext) {
            (Some(key_id), Some(nonce), Some(ciphertext)) => {
                let corrupt = |what: &str| {
                    StoreError::Malformed(format!("template {} has a malformed {what}", self.id))
                };
                let nonce: [u8; NONCE_LEN] = hex::decode(nonce)
                    .ok()
                    .and_then(|n| n.try_into().ok())
                    .ok_or_else(|| corrupt("nonce"))?;
                let sealed = Sealed {
                    key_id: key_id.clone(),
                    nonce,
                    ciphertext: hex::decode(ciphertext).map_err(|_| corrupt("ciphertext"))?,
                };
                keys.open(self.binding(), &sealed)?
            }
            _ => self.embedding.clone().ok_or_else(|| {
                StoreError::Malformed(format!("template {} has no embedding", self.id))
            })?,
        };
        Ok(Template {
            id: self.id,
            subject_id: self.subject_id,
            model: self.model,
            embedding,
            quality: self.quality,
            created_at: self.created_at,
            enrolled_by: self.enrolled_by,
        })
    }
}

/// A [`TemplateStore`] in a redb database file. Calls run on the blocking pool.
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Mutex<Handle>,
    /// Why writes are refused now (the handle read-only or closed), kept beside the handle so
    /// health checks read it without touching the handle (whose lock a reopen holds).
    refused: Mutex<Option<String>>,
    path: PathBuf,
    max_faces: usize,
    keys: TemplateKeys,
}

/// Shortest time between two attempts to reopen a database closed after an I/O fault.
pub const REOPEN_EVERY: Duration = Duration::from_millis(500);

/// The database as it can be used now.
enum Handle {
    /// Open for reads and writes.
    Writable(Arc<Database>),
    /// The file could only be opened read-only: reads work, writes are refused with `why`.
    ReadOnly(Arc<ReadOnlyDatabase>, String),
    /// Closed after an I/O fault (`why`); reopened by the next operation after [`REOPEN_EVERY`].
    Closed { why: String, tried: Instant },
}

impl Handle {
    /// Why writes are refused with this handle (`None` when writable).
    fn refusal(&self) -> Option<String> {
        match self {
            Handle::Writable(_) => None,
            Handle::ReadOnly(_, why) | Handle::Closed { why, .. } => Some(why.clone()),
        }
    }
}

/// What an I/O error means for the store, for the operator (`None`: not an I/O fault).
fn io_fault(e: &redb::Error) -> Option<String> {
    match e {
        redb::Error::PreviousIo => Some("an earlier write to the data directory failed".into()),
        redb::Error::Io(io) => Some(describe_io(io)),
        _ => None,
    }
}

fn describe_io(io: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match io.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
            format!("the data directory is full ({io})")
        }
        ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied => {
            format!("the data directory is read-only ({io})")
        }
        _ => format!("I/O error in the data directory ({io})"),
    }
}

/// A redb error of `operation`: an I/O fault (disk full, read-only, failing) makes the store
/// unavailable (503, retry later); anything else is a backend error (500).
fn backend(operation: &'static str) -> impl Fn(redb::Error) -> StoreError {
    move |e| match io_fault(&e) {
        Some(why) => StoreError::Unavailable(format!("{operation} failed: {why}")),
        None => StoreError::Backend {
            operation,
            source: Box::new(e),
        },
    }
}

/// Open the database file for writing, or read-only when its directory cannot be written.
fn open_handle(path: &Path) -> Result<Handle, StoreError> {
    let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    match Database::create(path) {
        Ok(db) => Ok(Handle::Writable(Arc::new(db))),
        Err(DatabaseError::Storage(StorageError::Io(io)))
            if matches!(
                io.kind(),
                std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
            ) && path.is_file() =>
        {
            let db = ReadOnlyDatabase::open(path).map_err(|e| open_err(Box::new(e)))?;
            let why = format!(
                "the data directory is read-only ({io}); {} is open for reads only",
                path.display()
            );
            tracing::warn!(%why, "template store opened read-only: writes are refused");
            Ok(Handle::ReadOnly(Arc::new(db), why))
        }
        Err(e) => Err(open_err(Box::new(e))),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Backend {
        operation: "encode record",
        source: Box::new(e),
    })
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: key.to_string(),
        source,
    })
}

/// The key range holding one subject's templates: `id/` up to (not including) `id0`.
fn template_range(subject_id: &str) -> (String, String) {
    (format!("{subject_id}/"), format!("{subject_id}0"))
}

impl RedbStore {
    /// Open (or create) the store in `data_dir`, creating the directory if needed, and seal any
    /// template written before encryption with the current key.
    pub fn open(data_dir: &Path, max_faces: usize, keys: TemplateKeys) -> Result<Self, StoreError> {
        let path = data_dir.join(DB_FILE);
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        crate::private_file::create_dir(data_dir).map_err(|e| open_err(Box::new(e)))?;
        // Subject names and ids are stored in clear: the file is the owner's only. A read-only
        // data directory (reads keep working) cannot be changed, which is not an error here.
        if let Err(e) = crate::private_file::restrict(&path) {
            tracing::warn!(path = %path.display(), error = %e, "could not make the template store owner-only");
        }
        let handle = open_handle(&path)?;
        if let Handle::Writable(db) = &handle {
            // Create both tables up front so readers never meet a missing table.
            let txn = db.begin_write().map_err(|e| open_err(Box::new(e)))?;
            txn.open_table(SUBJECTS)
                .map_err(|e| open_err(Box::new(e)))?;
            txn.open_table(TEMPLATES)
                .map_err(|e| open_err(Box::new(e)))?;
            txn.commit().map_err(|e| open_err(Box::new(e)))?;
        }
        let writable = matches!(handle, Handle::Writable(_));
        let refused = Mutex::new(Handle::refusal(&handle));
        let mut inner = Inner {
            db: Mutex::new(handle),
            refused,
            path,
            max_faces,
            keys,
        };
        let (sealed, retired) = if writable {
            inner.seal_legacy()?
        } else {
            (0, BTreeSet::new())
        };
        if sealed > 0 {
            // Copy-on-write leaves the old pages (plaintext, or sealed with the retired key) in
            // the file until they are reused; compaction rewrites the file without most of them.
            let db = match inner.db.get_mut() {
                Ok(Handle::Writable(db)) => Arc::get_mut(db),
                _ => None,
            };
            if let Some(db) = db {
                db.compact().map_err(|e| StoreError::Open {
                    path: inner.path.display().to_string(),
                    source: Box::new(e),
                })?;
            }
            tracing::info!(
                templates = sealed,
                key = inner.keys.current_id(),
                retired_keys = ?retired,
                "sealed templates stored before encryption or with an older key; the older keys \
                 can now leave the key file"
            );
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.after(f(&inner)))
            .await
            .map_err(|e| StoreError::Backend {
                operation: "store task",
                source: Box::new(e),
            })?
    }
}

impl Inner {
    /// The current handle, reopening a database closed after a fault when it is time to try.
    fn handle(&self) -> std::sync::MutexGuard<'_, Handle> {
        let mut guard = self
            .db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Handle::Closed { why, tried } = &*guard
            && tried.elapsed() >= REOPEN_EVERY
        {
            match open_handle(&self.path) {
                Ok(h) => {
                    tracing::info!(path = %self.path.display(), "template store reopened after an I/O fault");
                    *guard = h;
                    self.note_refusal(&guard);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "template store still cannot be reopened");
                    *guard = Handle::Closed {
                        why: why.clone(),
                        tried: Instant::now(),
                    };
                }
            }
        }
        guard
    }

    fn unavailable(&self, why: &str) -> StoreError {
        StoreError::Unavailable(format!("{why} (data directory {})", self.dir()))
    }

    fn dir(&self) -> String {
        self.path.parent().map_or_else(
            || self.path.display().to_string(),
            |d| d.display().to_string(),
        )
    }

    /// A write transaction, or `Unavailable` while the file is read-only or closed.
    fn begin_write(&self, operation: &'static str) -> Result<WriteTransaction, StoreError> {
        let db = match &*self.handle() {
            Handle::Writable(db) => db.clone(),
            Handle::ReadOnly(_, why) | Handle::Closed { why, .. } => {
                return Err(self.unavailable(why));
            }
        };
        db.begin_write().map_err(|e| backend(operation)(e.into()))
    }

    /// A read transaction (also on a read-only file), or `Unavailable` while closed.
    fn begin_read(&self, operation: &'static str) -> Result<ReadTransaction, StoreError> {
        match &*self.handle() {
            Handle::Writable(db) => db.begin_read(),
            Handle::ReadOnly(db, _) => db.begin_read(),
            Handle::Closed { why, .. } => return Err(self.unavailable(why)),
        }
        .map_err(|e| backend(operation)(e.into()))
    }

    /// After an operation: an I/O fault on a writable file closes it (redb refuses everything
    /// after one until reopened), so the next operation reopens it once the cause is gone.
    fn after<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::Unavailable(why)) = &result {
            let mut guard = self
                .db
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if matches!(&*guard, Handle::Writable(_)) {
                tracing::error!(path = %self.path.display(), error = %why, "template store write failed; closing the file, reopening on a later request");
                *guard = Handle::Closed {
                    why: why.clone(),
                    tried: Instant::now(),
                };
                self.note_refusal(&guard);
            }
        }
        result
    }

    fn note_refusal(&self, handle: &Handle) {
        *self
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = handle.refusal();
    }

    fn read_subject(
        table: &impl ReadableTable<&'static str, &'static [u8]>,
        id: &str,
    ) -> Result<Option<Subject>, StoreError> {
        match table
            .get(id)
            .map_err(|e| backend("read subject")(e.into()))?
        {
            Some(v) => Ok(Some(decode(id, v.value())?)),
            None => Ok(None),
        }
    }

    /// Seal every template not sealed with the current key: those stored before encryption, and
    /// those sealed with a key the file now lists after the current one (a rotation), so a
    /// retired key can leave the key file after one start with the new key first. Returns the
    /// templates rewritten and the older key ids they were sealed with.
    fn seal_legacy(&self) -> Result<(usize, BTreeSet<String>), StoreError> {
        let err = backend("seal legacy templates");
        let txn = self.begin_write("seal legacy templates")?;
        let mut count = 0;
        let mut retired = BTreeSet::new();
        {
            let mut t = txn.open_table(TEMPLATES).map_err(|e| err(e.into()))?;
            let mut legacy = Vec::new();
            for row in t.iter().map_err(|e| err(e.into()))? {
                let (k, v) = row.map_err(|e| err(e.into()))?;
                let stored: StoredTemplate = decode(k.value(), v.value())?;
                match stored.key_id.as_deref() {
                    _ if !stored.is_sealed() => {}
                    Some(id) if id == self.keys.current_id() => continue,
                    Some(id) => {
                        retired.insert(id.to_owned());
                    }
                    None => {}
                }
                legacy.push((k.value().to_owned(), stored));
            }
            for (key, stored) in legacy {
                let template = stored.open(&self.keys)?;
                let sealed = StoredTemplate::seal(&template, &self.keys)?;
                t.insert(key.as_str(), encode(&sealed)?.as_slice())
                    .map_err(|e| err(e.into()))?;
                count += 1;
            }
        }
        txn.commit().map_err(|e| err(e.into()))?;
        Ok((count, retired))
    }

    fn create_subject(
        &self,
        name: &str,
        created_by: Option<&str>,
    ) -> Result<SubjectRecord, StoreError> {
        let name = validate_name(name)?;
        let subject = Subject {
            id: uuid::Uuid::new_v4().to_string(),
            name,
            faces: 0,
            outdated_faces: 0,
            face_models: Default::default(),
            created_at: now_rfc3339(),
            created_by: created_by.map(str::to_owned),
        };
        let err = backend("create subject");
        let txn = self.begin_write("create subject")?;
        {
            let mut t = txn.open_table(SUBJECTS).map_err(|e| err(e.into()))?;
            t.insert(subject.id.as_str(), encode(&subject)?.as_slice())
                .map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(SubjectRecord {
            id: subject.id,
            name: subject.name,
            created_at: subject.created_at,
            created_by: subject.created_by,
            templates: Vec::new(),
        })
    }

    fn delete_subject(&self, id: &str) -> Result<bool, StoreError> {
        let err = backend("delete subject");
        let txn = self.begin_write("delete subject")?;
        let existed = {
            let mut subjects = txn.open_table(SUBJECTS).map_err(|e| err(e.into()))?;
            let existed = subjects.remove(id).map_err(|e| err(e.into()))?.is_some();
            let mut templates = txn.open_table(TEMPLATES).map_err(|e| err(e.into()))?;
            let (lo, hi) = template_range(id);
            templates
                .retain_in(lo.as_str()..hi.as_str(), |_, _| false)
                .map_err(|e| err(e.into()))?;
            existed
        };
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(existed)
    }

    fn add_template(
        &self,
        subject_id: &str,
        template: NewTemplate,
    ) -> Result<Template, StoreError> {
        validate_template(&template)?;
        let err = backend("add template");
        let txn = self.begin_write("add template")?;
        let stored = {
            let mut subjects = txn.open_table(SUBJECTS).map_err(|e| err(e.into()))?;
            let mut subject = Self::read_subject(&subjects, subject_id)?
                .ok_or_else(|| StoreError::SubjectNotFound(subject_id.to_string()))?;
            if subject.faces >= self.max_faces {
                return Err(StoreError::TooManyFaces {
                    subject: subject_id.to_string(),
                    limit: self.max_faces,
                });
            }
            let stored = Template {
                // Time-ordered: the table's key order (subject, template id) is then the order
                // of enrolment, which a load keeps among faces enrolled in the same second (the
                // one `created_at` shows), so a subject's first face is the same after a restart.
                id: uuid::Uuid::now_v7().to_string(),
                subject_id: subject_id.to_string(),
                model: template.model,
                embedding: template.embedding,
                quality: template.quality,
                created_at: now_rfc3339(),
                enrolled_by: template.enrolled_by,
            };
            let key = format!("{subject_id}/{}", stored.id);
            let mut templates = txn.open_table(TEMPLATES).map_err(|e| err(e.into()))?;
            templates
                .insert(
                    key.as_str(),
                    encode(&StoredTemplate::seal(&stored, &self.keys)?)?.as_slice(),
                )
                .map_err(|e| err(e.into()))?;
            subject.faces += 1;
            subjects
                .insert(subject_id, encode(&subject)?.as_slice())
                .map_err(|e| err(e.into()))?;
            stored
        };
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(stored)
    }

    fn delete_template(&self, subject_id: &str, template_id: &str) -> Result<(), StoreError> {
        let err = backend("delete template");
        let txn = self.begin_write("delete template")?;
        {
            let mut subjects = txn.open_table(SUBJECTS).map_err(|e| err(e.into()))?;
            let mut subject = Self::read_subject(&subjects, subject_id)?
                .ok_or_else(|| StoreError::SubjectNotFound(subject_id.to_string()))?;
            let mut templates = txn.open_table(TEMPLATES).map_err(|e| err(e.into()))?;
            let removed = templates
                .remove(format!("{subject_id}/{template_id}").as_str())
                .map_err(|e| err(e.into()))?
                .is_some();
            if !removed {
                return Err(StoreError::FaceNotFound {
                    subject: subject_id.to_string(),
                    face: template_id.to_string(),
                });
            }
            subject.faces = subject.faces.saturating_sub(1);
            subjects
                .insert(subject_id, encode(&subject)?.as_slice())
                .map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(())
    }

    fn rename_subject(&self, id: &str, name: &str) -> Result<String, StoreError> {
        let name = validate_name(name)?;
        let err = backend("rename subject");
        let txn = self.begin_write("rename subject")?;
        {
            let mut subjects = txn.open_table(SUBJECTS).map_err(|e| err(e.into()))?;
            let mut subject = Self::read_subject(&subjects, id)?
                .ok_or_else(|| StoreError::SubjectNotFound(id.to_string()))?;
            subject.name.clone_from(&name);
            subjects
                .insert(id, encode(&subject)?.as_slice())
                .map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(name)
    }

    fn templates_of(
        &self,
        table: &impl ReadableTable<&'static str, &'static [u8]>,
        subject_id: &str,
    ) -> Result<Vec<Template>, StoreError> {
        let err = backend("read templates");
        let (lo, hi) = template_range(subject_id);
        let mut out = Vec::new();
        for row in table
            .range(lo.as_str()..hi.as_str())
            .map_err(|e| err(e.into()))?
        {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            out.push(decode::<StoredTemplate>(k.value(), v.value())?.open(&self.keys)?);
        }
        Ok(out)
    }

    fn load_subject(&self, id: &str) -> Result<Option<SubjectRecord>, StoreError> {
        let err = backend("load subject");
        let txn = self.begin_read("load subject")?;
        let subjects = txn.open_table(SUBJECTS).map_err(|e| err(e.into()))?;
        let Some(subject) = Self::read_subject(&subjects, id)? else {
            return Ok(None);
        };
        let templates = txn.open_table(TEMPLATES).map_err(|e| err(e.into()))?;
        Ok(Some(SubjectRecord {
            templates: self.templates_of(&templates, id)?,
            id: subject.id,
            name: subject.name,
            created_at: subject.created_at,
            created_by: subject.created_by,
        }))
    }

    fn load_all(&self) -> Result<Vec<SubjectRecord>, StoreError> {
        let err = backend("load subjects");
        let txn = self.begin_read("load subjects")?;
        let subjects = txn.open_table(SUBJECTS).map_err(|e| err(e.into()))?;
        let templates = txn.open_table(TEMPLATES).map_err(|e| err(e.into()))?;
        let mut out = Vec::new();
        for row in subjects.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            let subject: Subject = decode(k.value(), v.value())?;
            out.push(SubjectRecord {
                templates: self.templates_of(&templates, &subject.id)?,
                id: subject.id,
                name: subject.name,
                created_at: subject.created_at,
                created_by: subject.created_by,
            });
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl TemplateStore for RedbStore {
    fn describe(&self) -> String {
        format!("embedded redb file {}", self.inner.path.display())
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn write_refusal(&self) -> Option<String> {
        // Read beside the handle, never through it: a health check must not reopen the file
        // (a repair can take seconds) nor wait on a reopen in progress.
        let why = self
            .inner
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()?;
        Some(self.inner.unavailable(&why).to_string())
    }

    async fn create_subject(
        &self,
        name: &str,
        created_by: Option<&str>,
        // One process writes this store: the index's quota check sees every creation.
        _key_quota: Option<usize>,
    ) -> Result<SubjectRecord, StoreError> {
        let name = name.to_owned();
        let created_by = created_by.map(str::to_owned);
        self.blocking(move |s| s.create_subject(&name, created_by.as_deref()))
            .await
    }

    async fn delete_subject(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.blocking(move |s| s.delete_subject(&id)).await
    }

    /// One replica serves this file, and its index sees every enrolment, so the key's quota
    /// is held there ([`crate::enrolments`]), not here.
    async fn add_template(
        &self,
        subject_id: &str,
        template: NewTemplate,
        _key_quota: Option<usize>,
    ) -> Result<Template, StoreError> {
        let id = subject_id.to_owned();
        self.blocking(move |s| s.add_template(&id, template)).await
    }

    async fn delete_template(&self, subject_id: &str, template_id: &str) -> Result<(), StoreError> {
        let (subject, template) = (subject_id.to_owned(), template_id.to_owned());
        self.blocking(move |s| s.delete_template(&subject, &template))
            .await
    }

    async fn rename_subject(&self, id: &str, name: &str) -> Result<String, StoreError> {
        let (id, name) = (id.to_owned(), name.to_owned());
        self.blocking(move |s| s.rename_subject(&id, &name)).await
    }

    async fn load_all(&self) -> Result<Vec<SubjectRecord>, StoreError> {
        self.blocking(Inner::load_all).await
    }

    async fn load_subject(&self, id: &str) -> Result<Option<SubjectRecord>, StoreError> {
        let id = id.to_owned();
        self.blocking(move |s| s.load_subject(&id)).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::cipher::new_key_line;

    fn tmpl(v: f32) -> NewTemplate {
        NewTemplate {
            model: "test".into(),
            embedding: vec![v; 4],
            quality: Some(0.5),
            enrolled_by: Some("app".into()),
        }
    }

    fn keys() -> TemplateKeys {
        TemplateKeys::parse(&new_key_line("k1").unwrap(), Path::new("test-keys")).unwrap()
    }

    fn open(dir: &Path, max: usize, keys: &TemplateKeys) -> RedbStore {
        RedbStore::open(dir, max, keys.clone()).unwrap()
    }

    /// The write refusal a health check reads is the handle's state, read beside it: a check
    /// neither reopens a closed file (a repair can take seconds, on an async worker) nor
    /// waits on the handle's lock; the next operation reopens it.
    #[test]
    fn a_health_check_reports_a_closed_file_without_reopening_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10, &keys());
        assert_eq!(store.write_refusal(), None);
        let fault: Result<(), StoreError> = Err(StoreError::Unavailable("disk gone".into()));
        assert!(store.inner.after(fault).is_err());
        // Due for a reopen.
        if let Handle::Closed { tried, .. } = &mut *store.inner.db.lock().unwrap() {
            *tried = Instant::now() - 2 * REOPEN_EVERY;
        }
        let refusal = store.write_refusal().expect("closed: writes refused");
        assert!(refusal.contains("disk gone"), "{refusal}");
        assert!(
            matches!(&*store.inner.db.lock().unwrap(), Handle::Closed { .. }),
            "the check reopened the file"
        );
        // An operation reopens it, and the refusal goes with it.
        drop(store.inner.handle());
        assert_eq!(store.write_refusal(), None);
    }

    fn firsts(r: &SubjectRecord) -> Vec<f32> {
        let mut v: Vec<f32> = r.templates.iter().map(|t| t.embedding[0]).collect();
        v.sort_by(f32::total_cmp);
        v
    }

    /// Faces enrolled within one second (`created_at` shows seconds) load in the order they
    /// were enrolled, so the subject's first face is the same after a restart.
    #[tokio::test]
    async fn faces_of_one_second_reload_in_their_enrolment_order() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys();
        let id = {
            let store = open(dir.path(), 10, &keys);
            let a = store.create_subject("Ada", None, None).await.unwrap();
            for v in 1..=8 {
                store
                    .add_template(&a.id, tmpl(v as f32), None)
                    .await
                    .unwrap();
            }
            a.id
        };
        let store = open(dir.path(), 10, &keys);
        let a = store.load_subject(&id).await.unwrap().unwrap();
        let order: Vec<f32> = a.templates.iter().map(|t| t.embedding[0]).collect();
        assert_eq!(order, (1..=8).map(|v| v as f32).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn subjects_and_templates_round_trip_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys();
        let (a_id, b_id) = {
            let store = open(dir.path(), 10, &keys);
            let a = store.create_subject(" Ada ", None, None).await.unwrap();
            assert_eq!(a.name, "Ada");
            assert!(a.templates.is_empty());
            let b = store.create_subject("Grace", None, None).await.unwrap();
            store.add_template(&a.id, tmpl(1.0), None).await.unwrap();
            store.add_template(&a.id, tmpl(2.0), None).await.unwrap();
            store.add_template(&b.id, tmpl(3.0), None).await.unwrap();
            (a.id, b.id)
        };
        // Reopen: everything committed is still there.
        let store = open(dir.path(), 10, &keys);
        let a = store.load_subject(&a_id).await.unwrap().unwrap();
        assert_eq!(a.templates.len(), 2);
        assert!(a.templates.iter().all(|t| t.subject_id == a_id));
        // The enrolling key is kept (each key's quota counts it after a restart).
        assert!(
            a.templates
                .iter()
                .all(|t| t.enrolled_by.as_deref() == Some("app"))
        );
        assert_eq!(firsts(&a), vec![1.0, 2.0]);
        let all = store.load_all().await.unwrap();
        assert_eq!(all.len(), 2);
        let b = all.iter().find(|r| r.id == b_id).unwrap();
        assert_eq!(firsts(b), vec![3.0]);
        assert!(all.iter().any(|r| r.name == "Ada") && all.iter().any(|r| r.name == "Grace"));
    }

    #[tokio::test]
    async fn templates_are_sealed_on_disk_and_need_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys();
        let id = {
            let store = open(dir.path(), 10, &keys);
            let a = store.create_subject("a", None, None).await.unwrap();
            store
                .add_template(&a.id, tmpl(0.123_456_79), None)
                .await
                .unwrap();
            a.id
        };
        // The embedding's value is nowhere in the file in clear.
        let bytes = std::fs::read(dir.path().join(DB_FILE)).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("ciphertext"));
        assert!(!text.contains("0.12345679"), "plaintext embedding on disk");
        // Another key under the same id: loading fails, it never yields garbage.
        let other = TemplateStore::load_all(&open(dir.path(), 10, &self::keys()))
            .await
            .unwrap_err();
        assert!(other.to_string().contains("does not decrypt"), "{other}");
        assert_eq!(
            firsts(
                &open(dir.path(), 10, &keys)
                    .load_subject(&id)
                    .await
                    .unwrap()
                    .unwrap()
            ),
            vec![0.123_456_79]
        );
    }

    /// A rotation retires the old key after one start with the new key first: every template
    /// is sealed again with it on open, so the old line can then leave the key file.
    #[tokio::test]
    async fn templates_sealed_with_an_older_key_are_sealed_again_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, k2) = (new_key_line("k1").unwrap(), new_key_line("k2").unwrap());
        let parse = |text: &str| TemplateKeys::parse(text, Path::new("test-keys")).unwrap();
        let id = {
            let store = open(dir.path(), 10, &parse(&k1));
            let a = store.create_subject("a", None, None).await.unwrap();
            store.add_template(&a.id, tmpl(0.75), None).await.unwrap();
            a.id
        };
        // Only k2: the template needs k1, so opening refuses, naming it (never garbage).
        let refused = RedbStore::open(dir.path(), 10, parse(&k2)).err().unwrap();
        assert!(refused.to_string().contains("k1"), "{refused}");
        // k2 first, k1 still listed: opening seals everything with k2...
        drop(open(dir.path(), 10, &parse(&format!("{k2}\n{k1}"))));
        let bytes = std::fs::read(dir.path().join(DB_FILE)).unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains("\"key_id\":\"k2\""));
        // ... so k1 can go: the store opens and reads with k2 alone.
        let store = open(dir.path(), 10, &parse(&k2));
        let r = store.load_subject(&id).await.unwrap().unwrap();
        assert_eq!(firsts(&r), vec![0.75]);
        assert_eq!(store.load_all().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn plaintext_templates_from_before_encryption_are_sealed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys();
        let store = open(dir.path(), 10, &keys);
        let a = store.create_subject("a", None, None).await.unwrap();
        // Write a record the way the previous release did: the embedding in clear.
        let legacy = serde_json::json!({
            "id": "t-old", "subject_id": a.id, "model": "test", "embedding": [0.5, 0.25],
            "quality": null, "created_at": "2026-11-27T00:00:00Z"
        });
        {
            let txn = store.inner.begin_write("test").unwrap();
            {
                let mut t = txn.open_table(TEMPLATES).unwrap();
                let key = format!("{}/t-old", a.id);
                t.insert(key.as_str(), legacy.to_string().as_bytes())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        drop(store);
        let store = open(dir.path(), 10, &keys);
        let r = store.load_subject(&a.id).await.unwrap().unwrap();
        assert_eq!(r.templates[0].embedding, vec![0.5, 0.25]);
        let bytes = std::fs::read(dir.path().join(DB_FILE)).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("[0.5,0.25]"));
    }

    #[tokio::test]
    async fn the_creating_key_persists_and_old_subjects_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys();
        let (owned, legacy) = {
            let store = open(dir.path(), 10, &keys);
            let owned = store
                .create_subject("a", Some("app-1"), None)
                .await
                .unwrap();
            assert_eq!(owned.created_by.as_deref(), Some("app-1"));
            // Writes that rewrite the subject's record keep its creator.
            store
                .add_template(&owned.id, tmpl(1.0), None)
                .await
                .unwrap();
            store.rename_subject(&owned.id, "b").await.unwrap();
            // A subject the way the previous release wrote it: no creator.
            let legacy = serde_json::json!({
                "id": "s-old", "name": "old", "faces": 0, "created_at": "2026-11-27T00:00:00Z"
            });
            let txn = store.inner.begin_write("test").unwrap();
            {
                let mut t = txn.open_table(SUBJECTS).unwrap();
                t.insert("s-old", legacy.to_string().as_bytes()).unwrap();
            }
            txn.commit().unwrap();
            (owned.id, "s-old")
        };
        let store = open(dir.path(), 10, &keys);
        let all = store.load_all().await.unwrap();
        let by_id = |id: &str| all.iter().find(|r| r.id == id).unwrap().created_by.clone();
        assert_eq!(by_id(&owned).as_deref(), Some("app-1"));
        assert_eq!(by_id(legacy), None, "an old record loads, owned by no key");
        let one = store.load_subject(&owned).await.unwrap().unwrap();
        assert_eq!(
            (one.name.as_str(), one.created_by.as_deref()),
            ("b", Some("app-1"))
        );
    }

    #[tokio::test]
    async fn deleting_a_subject_deletes_its_templates_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10, &keys());
        let a = store.create_subject("a", None, None).await.unwrap();
        let b = store.create_subject("b", None, None).await.unwrap();
        for i in 0..3 {
            store
                .add_template(&a.id, tmpl(i as f32), None)
                .await
                .unwrap();
        }
        store.add_template(&b.id, tmpl(9.0), None).await.unwrap();
        assert!(store.delete_subject(&a.id).await.unwrap());
        assert!(!store.delete_subject(&a.id).await.unwrap());
        assert!(store.load_subject(&a.id).await.unwrap().is_none());
        assert_eq!(
            store
                .load_subject(&b.id)
                .await
                .unwrap()
                .unwrap()
                .templates
                .len(),
            1
        );
        // No orphan template rows remain.
        let txn = store.inner.begin_read("test").unwrap();
        let t = txn.open_table(TEMPLATES).unwrap();
        assert_eq!(redb::ReadableTableMetadata::len(&t).unwrap(), 1);
    }

    #[tokio::test]
    async fn limits_and_unknown_subjects() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 2, &keys());
        let a = store.create_subject("a", None, None).await.unwrap();
        store.add_template(&a.id, tmpl(1.0), None).await.unwrap();
        store.add_template(&a.id, tmpl(1.0), None).await.unwrap();
        assert!(matches!(
            store.add_template(&a.id, tmpl(1.0), None).await,
            Err(StoreError::TooManyFaces { limit: 2, .. })
        ));
        assert_eq!(
            store
                .load_subject(&a.id)
                .await
                .unwrap()
                .unwrap()
                .templates
                .len(),
            2
        );
        assert!(matches!(
            store.add_template("missing", tmpl(1.0), None).await,
            Err(StoreError::SubjectNotFound(_))
        ));
        assert!(matches!(
            store
                .add_template(
                    &a.id,
                    NewTemplate {
                        model: "m".into(),
                        embedding: vec![f32::NAN],
                        quality: None,
                        enrolled_by: None,
                    },
                    None
                )
                .await,
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.create_subject("", None, None).await,
            Err(StoreError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn faces_are_deleted_one_by_one_and_subjects_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys();
        let (a, b, keep) = {
            let store = open(dir.path(), 2, &keys);
            let a = store.create_subject("a", None, None).await.unwrap();
            let b = store.create_subject("b", None, None).await.unwrap();
            let gone = store.add_template(&a.id, tmpl(1.0), None).await.unwrap();
            let keep = store.add_template(&a.id, tmpl(2.0), None).await.unwrap();
            let other = store.add_template(&b.id, tmpl(3.0), None).await.unwrap();
            store.delete_template(&a.id, &gone.id).await.unwrap();
            // Gone now; another subject's face is not this subject's; unknown subject.
            assert!(matches!(
                store.delete_template(&a.id, &gone.id).await,
                Err(StoreError::FaceNotFound { .. })
            ));
            assert!(matches!(
                store.delete_template(&a.id, &other.id).await,
                Err(StoreError::FaceNotFound { .. })
            ));
            assert!(matches!(
                store
                    .delete_template(&a.id, &format!("../{}/{}", b.id, other.id))
                    .await,
                Err(StoreError::FaceNotFound { .. })
            ));
            assert!(matches!(
                store.delete_template("missing", &keep.id).await,
                Err(StoreError::SubjectNotFound(_))
            ));
            // The freed place counts: the limit of 2 admits one more.
            store.add_template(&a.id, tmpl(4.0), None).await.unwrap();
            assert_eq!(
                store.rename_subject(&a.id, "  Ada L.  ").await.unwrap(),
                "Ada L."
            );
            assert!(matches!(
                store.rename_subject(&a.id, " ").await,
                Err(StoreError::Invalid(_))
            ));
            assert!(matches!(
                store.rename_subject("missing", "x").await,
                Err(StoreError::SubjectNotFound(_))
            ));
            (a.id, b.id, keep.id)
        };
        // Durable: reopen and look.
        let store = open(dir.path(), 2, &keys);
        let a = store.load_subject(&a).await.unwrap().unwrap();
        assert_eq!(a.name, "Ada L.");
        assert_eq!(firsts(&a), vec![2.0, 4.0]);
        assert!(a.templates.iter().any(|t| t.id == keep));
        let b = store.load_subject(&b).await.unwrap().unwrap();
        assert_eq!((b.name.as_str(), firsts(&b)), ("b", vec![3.0]));
    }

    #[test]
    fn unopenable_path_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = RedbStore::open(&file, 1, keys()).err().unwrap();
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}
