//! The default template store: one redb file (ACID, crash-safe copy-on-write B-trees) under the
//! data directory, for a single runtime process.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    NewTemplate, StoreError, Subject, Template, TemplateStore, now_rfc3339, validate_name,
};

/// Subjects by id.
const SUBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("subjects");
/// Templates by `"{subject_id}/{template_id}"`, so one subject's templates form a key range.
const TEMPLATES: TableDefinition<&str, &[u8]> = TableDefinition::new("templates");

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "templates.redb";

/// A [`TemplateStore`] in a redb database file.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    max_faces: usize,
}

fn backend(operation: &'static str) -> impl Fn(redb::Error) -> StoreError {
    move |e| StoreError::Backend {
        operation,
        source: Box::new(e),
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
    /// Open (or create) the store in `data_dir`, creating the directory if needed.
    pub fn open(data_dir: &Path, max_faces: usize) -> Result<Self, StoreError> {
        let path = data_dir.join(DB_FILE);
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(|e| open_err(Box::new(e)))?;
        let db = Database::create(&path).map_err(|e| open_err(Box::new(e)))?;
        // Create both tables up front so readers never meet a missing table.
        let txn = db.begin_write().map_err(|e| open_err(Box::new(e)))?;
        txn.open_table(SUBJECTS)
            .map_err(|e| open_err(Box::new(e)))?;
        txn.open_table(TEMPLATES)
            .map_err(|e| open_err(Box::new(e)))?;
        txn.commit().map_err(|e| open_err(Box::new(e)))?;
        Ok(Self {
            db,
            path,
            max_faces,
        })
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
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
}

impl TemplateStore for RedbStore {
    fn create_subject(&self, name: &str) -> Result<Subject, StoreError> {
        let name = validate_name(name)?;
        let subject = Subject {
            id: uuid::Uuid::new_v4().to_string(),
            name,
            faces: 0,
            created_at: now_rfc3339(),
        };
        let err = backend("create subject");
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut t = txn.open_table(SUBJECTS).map_err(|e| err(e.into()))?;
            t.insert(subject.id.as_str(), encode(&subject)?.as_slice())
                .map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(subject)
    }

    fn list_subjects(&self) -> Result<Vec<Subject>, StoreError> {
        let err = backend("list subjects");
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = txn.open_table(SUBJECTS).map_err(|e| err(e.into()))?;
        let mut out = Vec::with_capacity(t.len().map_err(|e| err(e.into()))? as usize);
        for row in t.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            out.push(decode::<Subject>(k.value(), v.value())?);
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    fn get_subject(&self, id: &str) -> Result<Option<Subject>, StoreError> {
        let err = backend("get subject");
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = txn.open_table(SUBJECTS).map_err(|e| err(e.into()))?;
        Self::read_subject(&t, id)
    }

    fn delete_subject(&self, id: &str) -> Result<bool, StoreError> {
        let err = backend("delete subject");
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
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
        if template.embedding.is_empty() || template.embedding.iter().any(|v| !v.is_finite()) {
            return Err(StoreError::Invalid(
                "embedding must be a non-empty vector of finite numbers".into(),
            ));
        }
        let err = backend("add template");
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
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
                id: uuid::Uuid::new_v4().to_string(),
                subject_id: subject_id.to_string(),
                model: template.model,
                embedding: template.embedding,
                quality: template.quality,
                created_at: now_rfc3339(),
            };
            let key = format!("{subject_id}/{}", stored.id);
            let mut templates = txn.open_table(TEMPLATES).map_err(|e| err(e.into()))?;
            templates
                .insert(key.as_str(), encode(&stored)?.as_slice())
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

    fn templates(&self, subject_id: &str) -> Result<Vec<Template>, StoreError> {
        let err = backend("read templates");
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let subjects = txn.open_table(SUBJECTS).map_err(|e| err(e.into()))?;
        if Self::read_subject(&subjects, subject_id)?.is_none() {
            return Err(StoreError::SubjectNotFound(subject_id.to_string()));
        }
        let t = txn.open_table(TEMPLATES).map_err(|e| err(e.into()))?;
        let (lo, hi) = template_range(subject_id);
        let mut out = Vec::new();
        for row in t
            .range(lo.as_str()..hi.as_str())
            .map_err(|e| err(e.into()))?
        {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            out.push(decode::<Template>(k.value(), v.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn tmpl(v: f32) -> NewTemplate {
        NewTemplate {
            model: "test".into(),
            embedding: vec![v; 4],
            quality: Some(0.5),
        }
    }

    #[test]
    fn subjects_and_templates_round_trip_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let (a_id, b_id) = {
            let store = RedbStore::open(dir.path(), 10).unwrap();
            let a = store.create_subject(" Ada ").unwrap();
            assert_eq!(a.name, "Ada");
            assert_eq!(a.faces, 0);
            let b = store.create_subject("Grace").unwrap();
            store.add_template(&a.id, tmpl(1.0)).unwrap();
            store.add_template(&a.id, tmpl(2.0)).unwrap();
            store.add_template(&b.id, tmpl(3.0)).unwrap();
            (a.id, b.id)
        };
        // Reopen: everything committed is still there.
        let store = RedbStore::open(dir.path(), 10).unwrap();
        let a = store.get_subject(&a_id).unwrap().unwrap();
        assert_eq!(a.faces, 2);
        let ts = store.templates(&a_id).unwrap();
        assert_eq!(ts.len(), 2);
        assert!(ts.iter().all(|t| t.subject_id == a_id));
        let mut firsts: Vec<f32> = ts.iter().map(|t| t.embedding[0]).collect();
        firsts.sort_by(f32::total_cmp);
        assert_eq!(firsts, vec![1.0, 2.0]);
        assert_eq!(store.templates(&b_id).unwrap().len(), 1);
        let names: Vec<String> = store
            .list_subjects()
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"Ada".to_string()) && names.contains(&"Grace".to_string()));
    }

    #[test]
    fn deleting_a_subject_deletes_its_templates_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path(), 10).unwrap();
        let a = store.create_subject("a").unwrap();
        let b = store.create_subject("b").unwrap();
        for i in 0..3 {
            store.add_template(&a.id, tmpl(i as f32)).unwrap();
        }
        store.add_template(&b.id, tmpl(9.0)).unwrap();
        assert!(store.delete_subject(&a.id).unwrap());
        assert!(!store.delete_subject(&a.id).unwrap());
        assert!(store.get_subject(&a.id).unwrap().is_none());
        assert!(matches!(
            store.templates(&a.id),
            Err(StoreError::SubjectNotFound(_))
        ));
        assert_eq!(store.templates(&b.id).unwrap().len(), 1);
        // No orphan template rows remain.
        let txn = store.db.begin_read().unwrap();
        let t = txn.open_table(TEMPLATES).unwrap();
        assert_eq!(t.len().unwrap(), 1);
    }

    #[test]
    fn limits_and_unknown_subjects() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path(), 2).unwrap();
        let a = store.create_subject("a").unwrap();
        store.add_template(&a.id, tmpl(1.0)).unwrap();
        store.add_template(&a.id, tmpl(1.0)).unwrap();
        assert!(matches!(
            store.add_template(&a.id, tmpl(1.0)),
            Err(StoreError::TooManyFaces { limit: 2, .. })
        ));
        assert_eq!(store.get_subject(&a.id).unwrap().unwrap().faces, 2);
        assert!(matches!(
            store.add_template("missing", tmpl(1.0)),
            Err(StoreError::SubjectNotFound(_))
        ));
        assert!(matches!(
            store.add_template(
                &a.id,
                NewTemplate {
                    model: "m".into(),
                    embedding: vec![f32::NAN],
                    quality: None
                }
            ),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.create_subject(""),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn unopenable_path_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = RedbStore::open(&file, 1).err().unwrap();
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}
