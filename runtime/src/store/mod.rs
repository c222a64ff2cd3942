//! Enrolled subjects and their face templates (embeddings, never images): the durable store
//! behind one trait (the embedded redb file by default, PostgreSQL for several replicas), the
//! keys that encrypt templates at rest, and the in-memory index every replica matches against.

pub mod cipher;
pub mod index;
pub mod postgres;
mod redb_store;

pub use cipher::{KeyError, TemplateKeys};
pub use index::TemplateIndex;
pub use redb_store::RedbStore;

use serde::{Deserialize, Serialize};

/// Longest subject name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open template store at {path}: {source}")]
    Open {
        /// The database file.
        path: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A read or write failed inside the database.
    #[error("template store {operation} failed: {source}")]
    Backend {
        /// What was being done, e.g. `create subject`.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored record could not be decoded (corruption or an incompatible version).
    #[error("template store record {key} is unreadable: {source}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
    /// The subject does not exist.
    #[error("subject {0} not found")]
    SubjectNotFound(String),
    /// The face (template) does not exist in that subject.
    #[error("subject {subject} has no face {face}")]
    FaceNotFound {
        /// The subject id.
        subject: String,
        /// The template id.
        face: String,
    },
    /// The subject already holds the maximum number of templates.
    #[error(
        "subject {subject} already has {limit} faces, the limit ({}); delete one first",
        facekey_settings::env::MAX_FACES_PER_SUBJECT
    )]
    TooManyFaces {
        /// The subject id.
        subject: String,
        /// The configured limit.
        limit: usize,
    },
    /// The store holds the most subjects or templates its setting allows.
    #[error(
        "the store holds {held} {what}, the limit ({setting} = {limit}); delete some, or raise \
         the limit with the memory every replica has (it keeps them all in memory)"
    )]
    Full {
        /// `subjects` or `templates`.
        what: &'static str,
        /// How many it holds now.
        held: usize,
        /// The configured limit.
        limit: usize,
        /// The setting that sets it.
        setting: &'static str,
    },
    /// The API key creating a subject or enrolling a face already holds the most of them one
    /// key may.
    #[error(
        "API key {key_id:?} holds {held} {}, its limit ({} = {limit}); delete some of them (an \
         admin key can), or ask the operator to raise the limit",
        of.held(),
        of.setting()
    )]
    KeyQuota {
        /// What the quota counts.
        of: QuotaOf,
        /// The key's id (never the key).
        key_id: String,
        /// How many the store holds, with the key's writes in progress.
        held: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The request carried an invalid value (e.g. an empty name).
    #[error("{0}")]
    Invalid(String),
    /// A stored template is malformed (a damaged row or file): the store's fault, never the
    /// request's (answered 500).
    #[error("template store record is malformed: {0}")]
    Malformed(String),
    /// The store cannot be reached (database down); reads keep working from the index.
    #[error("template store unavailable: {0}")]
    Unavailable(String),
    /// The store is up but could not serve this statement now (a lock or statement timeout, a
    /// deadlock, a serialization failure): answered 503 like [`Self::Unavailable`], without
    /// marking the store down, since the next statement may well succeed.
    #[error("template store busy: {0}")]
    Busy(String),
    /// A template could not be encrypted or decrypted.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// What a per-key quota counts: subjects a key created (`FACEKEY_MAX_SUBJECTS_PER_KEY`) or faces
/// (templates) it enrolled (`FACEKEY_MAX_TEMPLATES_PER_KEY`), so that one key, leaked or
/// runaway, cannot fill the store's bounds for every other key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaOf {
    /// Subjects the key created.
    Subjects,
    /// Templates (enrolled faces) the key enrolled.
    Templates,
}

impl QuotaOf {
    /// What the key holds, as the error message says it.
    pub fn held(self) -> &'static str {
        match self {
            Self::Subjects => "subjects it created",
            Self::Templates => "faces (templates) it enrolled",
        }
    }

    /// Both quotas.
    pub const ALL: [Self; 2] = [Self::Subjects, Self::Templates];

    /// The `quota` label of the per-key metrics and the field of `GET /v1/auth/whoami`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Subjects => "subjects",
            Self::Templates => "templates",
        }
    }

    /// The setting of the limit.
    pub fn setting(self) -> &'static str {
        match self {
            Self::Subjects => facekey_settings::env::MAX_SUBJECTS_PER_KEY,
            Self::Templates => facekey_settings::env::MAX_TEMPLATES_PER_KEY,
        }
    }
}

impl StoreError {
    /// [`StoreError::KeyQuota`] when `key_id` holds `held` of `of`, at or beyond its `limit`.
    pub fn check_quota(
        of: QuotaOf,
        key_id: &str,
        held: usize,
        limit: usize,
    ) -> Result<(), StoreError> {
        if held >= limit {
            return Err(StoreError::KeyQuota {
                of,
                key_id: key_id.to_owned(),
                held,
                limit,
            });
        }
        Ok(())
    }

    /// [`StoreError::Full`] when `held` has reached `limit` (of `what`, set by `setting`).
    pub fn check_room(
        what: &'static str,
        held: usize,
        limit: usize,
        setting: &'static str,
    ) -> Result<(), StoreError> {
        if held >= limit {
            return Err(StoreError::Full {
                what,
                held,
                limit,
                setting,
            });
        }
        Ok(())
    }
}

/// An enrolled person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Subject {
    /// Server-assigned identifier (UUID).
    pub id: String,
    /// Display name given at creation.
    pub name: String,
    /// Number of face templates enrolled.
    pub faces: usize,
    /// Templates made by another embedding model than the one serving: not matched; re-enrol
    /// the subject's faces.
    #[serde(default)]
    pub outdated_faces: usize,
    /// How many faces hold each embedding-model combination, e.g.
    /// `{"dlib_resnet_v1_128d+faceres_deep_1024d": 2, "dlib_resnet_v1_128d": 1}`: faces
    /// enrolled before faceres-deep hold dlib alone and are matched on dlib alone; adding a
    /// face again stores both.
    #[serde(default)]
    pub face_models: std::collections::BTreeMap<String, usize>,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// Id of the API key that created the subject (never the key itself), which it counts
    /// against (`FACEKEY_MAX_SUBJECTS_PER_KEY`); absent for subjects created before creators
    /// were recorded, which count against no key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

/// A subject with all its templates, as the store loads it for the index.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectRecord {
    /// Subject id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// Id of the API key that created it; `None` when unknown (created before creators were
    /// recorded): such a subject counts against no key's quota.
    pub created_by: Option<String>,
    /// Its templates, decrypted.
    pub templates: Vec<Template>,
}

/// One enrolled face: its embedding and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// Server-assigned identifier (UUID).
    pub id: String,
    /// Owning subject.
    pub subject_id: String,
    /// The embedding model that produced `embedding`; templates only compare within a model.
    pub model: String,
    /// The face embedding.
    pub embedding: Vec<f32>,
    /// Quality score of the enrolled face, if measured.
    pub quality: Option<f64>,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// Id of the API key that enrolled it (never the key itself), which it counts against
    /// (`FACEKEY_MAX_TEMPLATES_PER_KEY`); absent for templates enrolled before enrollers were
    /// recorded, which count against no key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled_by: Option<String>,
}

/// A template to add.
#[derive(Debug, Clone)]
pub struct NewTemplate {
    /// The embedding model's name.
    pub model: String,
    /// The embedding.
    pub embedding: Vec<f32>,
    /// Quality score of the face.
    pub quality: Option<f64>,
    /// Id of the API key enrolling it (never the key); `None` records no enroller.
    pub enrolled_by: Option<String>,
}

/// Durable storage of subjects and templates. Implementations encrypt templates at rest,
/// delete a subject's templates with the subject, acknowledge a write only once it is durable,
/// and enforce the per-subject template limit inside the write. Reads for matching come from
/// the [`TemplateIndex`], filled by [`TemplateStore::load_all`].
#[async_trait::async_trait]
pub trait TemplateStore: Send + Sync + 'static {
    /// Where the data lives, for logs (never a password).
    fn describe(&self) -> String;
    /// The kind of store (`embedded`, `postgresql`), for the open `/readyz`: unlike
    /// [`Self::describe`] it names no host, user, database or path.
    fn kind(&self) -> &'static str;
    /// Create a subject with a trimmed, non-empty name of at most [`MAX_NAME_CHARS`], recording
    /// the id of the API key creating it (`created_by`; never the key itself). With
    /// `key_quota`, a store shared by replicas refuses the subject inside the write
    /// ([`StoreError::KeyQuota`]) when `created_by` already holds that many, so concurrent
    /// creations through several replicas cannot pass it together; a store of one replica
    /// leaves the quota to its index ([`crate::enrolments`]), which sees every creation.
    async fn create_subject(
        &self,
        name: &str,
        created_by: Option<&str>,
        key_quota: Option<usize>,
    ) -> Result<SubjectRecord, StoreError>;
    /// Delete a subject and all its templates; `false` when it did not exist.
    async fn delete_subject(&self, id: &str) -> Result<bool, StoreError>;
    /// Add a template to an existing subject, within the per-subject limit, recording the key
    /// that enrolled it (`template.enrolled_by`). With `key_quota`, a store shared by replicas
    /// refuses it inside the write ([`StoreError::KeyQuota`]) when that key already enrolled
    /// that many templates, as [`TemplateStore::create_subject`] does for subjects.
    async fn add_template(
        &self,
        subject_id: &str,
        template: NewTemplate,
        key_quota: Option<usize>,
    ) -> Result<Template, StoreError>;
    /// Delete one template of a subject: [`StoreError::SubjectNotFound`] or
    /// [`StoreError::FaceNotFound`] when either is absent.
    async fn delete_template(&self, subject_id: &str, template_id: &str) -> Result<(), StoreError>;
    /// Rename a subject (the name validated as at creation); returns the stored name.
    async fn rename_subject(&self, id: &str, name: &str) -> Result<String, StoreError>;
    /// Every subject with its decrypted templates (start-up and resynchronisation). A template
    /// no loaded key opens either fails the load, or (a store shared by replicas) is left out
    /// and named by [`TemplateStore::unreadable`]: never matched, and [`crate::enrolments`]
    /// refuses to start with any.
    async fn load_all(&self) -> Result<Vec<SubjectRecord>, StoreError>;
    /// One subject with its decrypted templates, or `None` (unreadable templates as in
    /// [`TemplateStore::load_all`]).
    async fn load_subject(&self, id: &str) -> Result<Option<SubjectRecord>, StoreError>;
    /// The templates the loads so far left out because they do not open here (a shared store
    /// only: another replica sealed them with a key this replica's key file lacks).
    fn unreadable(&self) -> Vec<UnreadableTemplate> {
        Vec::new()
    }
    /// Why writes are refused now, when the store knows without trying one (an embedded file
    /// open read-only, or closed after an I/O fault); `None` otherwise. Reads keep working
    /// then, so a successful read must not report the store available.
    fn write_refusal(&self) -> Option<String> {
        None
    }
}

/// A stored template that does not open with this replica's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableTemplate {
    /// Template id.
    pub id: String,
    /// Its subject.
    pub subject_id: String,
    /// Why (the key id it names, or the damage).
    pub reason: String,
}

/// Check a template before it is stored.
pub fn validate_template(template: &NewTemplate) -> Result<(), StoreError> {
    if template.embedding.is_empty() || template.embedding.iter().any(|v| !v.is_finite()) {
        return Err(StoreError::Invalid(
            "embedding must be a non-empty vector of finite numbers".into(),
        ));
    }
    Ok(())
}

/// Check and normalise a subject name.
pub fn validate_name(name: &str) -> Result<String, StoreError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(StoreError::Invalid("name must not be empty".into()));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(StoreError::Invalid(format!(
            "name has {chars} characters; at most {MAX_NAME_CHARS} are allowed"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(StoreError::Invalid(
            "name must not contain control characters".into(),
        ));
    }
    Ok(name.to_string())
}

/// The current time as RFC 3339 UTC with seconds precision.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert!(matches!(validate_name("  Ada  ").as_deref(), Ok("Ada")));
        assert!(validate_name("   ").is_err());
        assert!(validate_name("a\u{0}b").is_err());
        assert!(validate_name(&"é".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(validate_name(&"é".repeat(MAX_NAME_CHARS + 1)).is_err());
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.contains('T'), "{t}");
    }
}
