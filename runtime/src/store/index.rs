//! The in-memory template index every replica matches against: subjects with their decrypted
//! templates, and the templates of the serving embedding model laid out as one contiguous
//! row-major matrix for exact 1:N search. Verification and identification read it and never wait
//! on the durable store; the store's writes (and, with PostgreSQL, other replicas' writes) are
//! applied to it as whole-subject upserts and removals.

use std::collections::HashMap;
use std::sync::RwLock;

use super::{Subject, SubjectRecord, Template};

/// Squared Euclidean distance, in eight independent lanes so the compiler vectorises it.
pub fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        sum += (x - y) * (x - y);
    }
    sum
}

/// One identification candidate: a subject and its closest template's distance.
#[derive(Debug, Clone, PartialEq)]
pub struct Nearest {
    /// The subject.
    pub subject: Subject,
    /// Euclidean distance of its closest serving-model template to the probe.
    pub distance: f32,
}

/// A subject's templates for verification.
#[derive(Debug, Clone, PartialEq)]
pub enum SubjectTemplates {
    /// No such subject.
    NotFound,
    /// The subject and the embeddings of its serving-model templates (possibly none) and how
    /// many it holds of other models.
    Found {
        /// Embeddings of the serving model (dlib's part of each matched template), oldest first.
        embeddings: Vec<Vec<f32>>,
        /// The same templates whole, in the same order: the model name they record and
        /// every stored value (a fused template holds dlib's and faceres-deep's embeddings).
        templates: Vec<(String, Vec<f32>)>,
        /// Templates of other embedding models (not matched; re-enrol).
        outdated: usize,
    },
}

/// The serving model's part of a template: all of it when it records exactly `model` with
/// `dim` values, or the first `dim` values of a template holding several models that
/// starts with `model` (`model+other`, values concatenated in that order). `None`: not
/// matched (another model; re-enrol).
pub fn serving_part<'a>(t: &'a Template, model: &str, dim: usize) -> Option<&'a [f32]> {
    let first = t.model.split('+').next()?;
    let several = t.model.len() > first.len();
    match (first == model, several) {
        (true, false) if t.embedding.len() == dim => Some(&t.embedding),
        (true, true) if t.embedding.len() > dim => Some(&t.embedding[..dim]),
        _ => None,
    }
}

struct Entry {
    record: SubjectRecord,
    /// Matrix rows holding this subject's serving-model templates.
    rows: Vec<usize>,
    /// The index's write that put this state of the subject here ([`SubjectVersion`]).
    stamp: u64,
}

/// Which state of one subject the index holds: taken before a store read or write whose result
/// is then applied only if the index still holds that state ([`TemplateIndex::set_if_unchanged`]
/// and the other `_if_unchanged` writes). The change listener applies each change it is told of
/// after reading the store, in order; a request's own write reads or writes the store on its own
/// task, so without this its older view could overwrite a newer one the listener applied
/// meanwhile (a subject another replica deleted, put back until its next change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectVersion {
    /// Held, as the index's write with this number left it.
    Present(u64),
    /// Not held; the number is the index's last removal (of any subject: a removal or a reload
    /// anywhere counts as a change of every absent subject, which keeps no memory of ids).
    Absent(u64),
}

#[derive(Default)]
struct Inner {
    /// Subjects by slot; `None` for free slots (slots never move, so rows can name them).
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    by_id: HashMap<String, usize>,
    /// Serving-model embeddings, `dim` floats per row.
    matrix: Vec<f32>,
    /// Slot of each row's subject.
    owners: Vec<usize>,
    /// Subjects held per creating API key id (keys holding none are absent): the per-key quota
    /// is checked against it without walking the subjects.
    by_creator: HashMap<String, usize>,
    /// Templates held per enrolling API key id (keys holding none are absent), likewise.
    by_enroller: HashMap<String, usize>,
    /// Writes taken, the last one's number ([`SubjectVersion`]); kept across reloads.
    writes: u64,
    /// Number of the last write that removed a subject (or replaced them all).
    last_removal: u64,
    /// Templates held, every embedding model (what `FACEKEY_MAX_TEMPLATES` bounds: all of them
    /// are in memory).
    held: usize,
}

/// Count one more (`up`) or one fewer under `key`, dropping keys that reach zero.
fn count(counts: &mut HashMap<String, usize>, key: &str, up: bool) {
    if up {
        *counts.entry(key.to_owned()).or_default() += 1;
    } else if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// Which subjects a page lists: all, or only those one API key created, or holding faces one
/// key enrolled (both when both are given), to find what a key filled its quota with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageFilter<'a> {
    /// Only subjects created by this key id.
    pub created_by: Option<&'a str>,
    /// Only subjects holding at least one face enrolled by this key id.
    pub enrolled_by: Option<&'a str>,
}

impl PageFilter<'_> {
    fn admits(&self, record: &SubjectRecord) -> bool {
        self.created_by
            .is_none_or(|key| record.created_by.as_deref() == Some(key))
            && self.enrolled_by.is_none_or(|key| {
                record
                    .templates
                    .iter()
                    .any(|t| t.enrolled_by.as_deref() == Some(key))
            })
    }
}

/// Counts of what the index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexStats {
    /// Subjects.
    pub subjects: usize,
    /// Templates of the serving model (matched).
    pub templates: usize,
    /// Templates of every embedding model ([`TemplateIndex::held_template_count`]).
    pub held_templates: usize,
    /// Subjects holding templates of another embedding model (to re-enrol).
    pub outdated_subjects: usize,
}

/// The index: shared by every request, updated under a short write lock.
pub struct TemplateIndex {
    model: String,
    dim: usize,
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for TemplateIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateIndex")
            .field("model", &self.model)
            .field("stats", &self.stats())
            .finish()
    }
}

fn summary(record: &SubjectRecord, model: &str, dim: usize) -> Subject {
    let outdated = record
        .templates
        .iter()
        .filter(|t| serving_part(t, model, dim).is_none())
        .count();
    let mut face_models = std::collections::BTreeMap::new();
    for t in &record.templates {
        *face_models.entry(t.model.clone()).or_insert(0) += 1;
    }
    Subject {
        id: record.id.clone(),
        name: record.name.clone(),
        faces: record.templates.len(),
        outdated_faces: outdated,
        face_models,
        created_at: record.created_at.clone(),
        created_by: record.created_by.clone(),
    }
}

impl Inner {
    fn remove_rows(&mut self, rows: &[usize]) {
        // Highest first, so swap_remove never moves a row still to be removed.
        let mut rows = rows.to_vec();
        rows.sort_unstable_by(|a, b| b.cmp(a));
        for r in rows {
            let last = self.owners.len() - 1;
            let dim = self.matrix.len() / self.owners.len();
            if r != last {
                let moved_owner = self.owners[last];
                let (head, tail) = self.matrix.split_at_mut(last * dim);
                head[r * dim..(r + 1) * dim].copy_from_slice(&tail[..dim]);
                self.owners[r] = moved_owner;
                if let Some(Some(e)) = self.slots.get_mut(moved_owner)
                    && let Some(x) = e.rows.iter_mut().find(|x| **x == last)
                {
                    *x = r;
                }
            }
            self.matrix.truncate(last * dim);
            self.owners.truncate(last);
        }
    }

    /// Number a new write.
    fn next_write(&mut self) -> u64 {
        self.writes += 1;
        self.writes
    }

    fn version(&self, id: &str) -> SubjectVersion {
        match self
            .by_id
            .get(id)
            .and_then(|&slot| self.slots.get(slot)?.as_ref())
        {
            Some(entry) => SubjectVersion::Present(entry.stamp),
            None => SubjectVersion::Absent(self.last_removal),
        }
    }

    /// Remove a subject (held or not: a removal is a change of every absent subject).
    fn remove(&mut self, id: &str) -> bool {
        let removed = self.take(id);
        self.last_removal = self.next_write();
        removed
    }

    /// Take a subject out, to be put back changed.
    fn take(&mut self, id: &str) -> bool {
        let Some(slot) = self.by_id.remove(id) else {
            return false;
        };
        if let Some(entry) = self.slots[slot].take() {
            self.held = self.held.saturating_sub(entry.record.templates.len());
            self.remove_rows(&entry.rows);
            if let Some(key) = &entry.record.created_by {
                count(&mut self.by_creator, key, false);
            }
            for key in entry
                .record
                .templates
                .iter()
                .filter_map(|t| t.enrolled_by.as_ref())
            {
                count(&mut self.by_enroller, key, false);
            }
        }
        self.free.push(slot);
        true
    }
}

impl TemplateIndex {
    /// An empty index matching templates of `model`, whose embeddings have `dim` values.
    pub fn new(model: &str, dim: usize) -> Self {
        Self {
            model: model.to_owned(),
            dim,
            inner: RwLock::new(Inner::default()),
        }
    }

    /// The state of subject `id` the index holds now: taken before a store read or write whose
    /// result is applied with an `_if_unchanged` write.
    pub fn version(&self, id: &str) -> SubjectVersion {
        self.read().version(id)
    }

    /// The state of a subject the index has never held (a new id, before its creation).
    pub fn version_of_new(&self) -> SubjectVersion {
        SubjectVersion::Absent(self.read().last_removal)
    }

    /// Put the store's state of subject `id` (`None`: the store has no such subject) in the
    /// index if it still holds the state [`TemplateIndex::version`] returned as `seen`: a subject
    /// read from the store while the change listener applied its deletion (or a new face) must
    /// not be put back as it was read. Returns whether it was applied.
    pub fn set_if_unchanged(
        &self,
        id: &str,
        stored: Option<SubjectRecord>,
        seen: SubjectVersion,
    ) -> bool {
        let mut inner = self.write();
        if inner.version(id) != seen {
            return false;
        }
        match stored {
            Some(record) => Self::insert(&mut inner, record, &self.model, self.dim),
            // Neither holds it: nothing changes (a removal would count as a change of every
            // absent subject, and a read of an unknown id is no such change).
            None if !inner.by_id.contains_key(id) => {}
            None => {
                inner.remove(id);
            }
        }
        true
    }

    /// The embedding model whose templates are matched.
    pub fn model(&self) -> &str {
        &self.model
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the index half-updated in a way readers
        // could misread (every update is a whole-subject replace), so poisoning is ignored.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Replace everything with `records` (start-up, resynchronisation): a change of every
    /// subject, held or not.
    pub fn replace_all(&self, records: Vec<SubjectRecord>) {
        let mut fresh = Inner::default();
        let mut inner = self.write();
        fresh.writes = inner.writes;
        fresh.last_removal = fresh.next_write();
        for r in records {
            Self::insert(&mut fresh, r, &self.model, self.dim);
        }
        *inner = fresh;
    }

    /// Every write of a subject goes through here: its templates are kept oldest first (RFC 3339
    /// UTC times order as text; ties keep the given order), so reads need not sort them.
    fn insert(inner: &mut Inner, mut record: SubjectRecord, model: &str, dim: usize) {
        record
            .templates
            .sort_by(|a, b| a.created_at.cmp(&b.created_at));
        inner.take(&record.id);
        let slot = inner.free.pop().unwrap_or_else(|| {
            inner.slots.push(None);
            inner.slots.len() - 1
        });
        let mut rows = Vec::new();
        for part in record
            .templates
            .iter()
            .filter_map(|t| serving_part(t, model, dim))
        {
            rows.push(inner.owners.len());
            inner.owners.push(slot);
            inner.matrix.extend_from_slice(part);
        }
        inner.by_id.insert(record.id.clone(), slot);
        if let Some(key) = &record.created_by {
            count(&mut inner.by_creator, key, true);
        }
        for key in record
            .templates
            .iter()
            .filter_map(|t| t.enrolled_by.as_ref())
        {
            count(&mut inner.by_enroller, key, true);
        }
        inner.held += record.templates.len();
        let stamp = inner.next_write();
        inner.slots[slot] = Some(Entry {
            record,
            rows,
            stamp,
        });
    }

    /// Insert or replace one subject with all its templates.
    pub fn upsert(&self, record: SubjectRecord) {
        Self::insert(&mut self.write(), record, &self.model, self.dim);
    }

    /// [`TemplateIndex::upsert`] if the index still holds the state `seen` of the subject;
    /// returns whether it was applied.
    pub fn upsert_if_unchanged(&self, record: SubjectRecord, seen: SubjectVersion) -> bool {
        let mut inner = self.write();
        if inner.version(&record.id) != seen {
            return false;
        }
        Self::insert(&mut inner, record, &self.model, self.dim);
        true
    }

    /// Add one template to a subject already in the index; `false` when the subject is absent.
    pub fn add_template(&self, template: Template) -> bool {
        self.add_template_over(template, None)
    }

    /// [`TemplateIndex::add_template`] if the index still holds the state `seen` of the
    /// subject; `false` when it is absent or changed.
    pub fn add_template_if_unchanged(&self, template: Template, seen: SubjectVersion) -> bool {
        self.add_template_over(template, Some(seen))
    }

    /// Add one template (once) to a subject the index holds, in the state `seen` when given.
    fn add_template_over(&self, template: Template, seen: Option<SubjectVersion>) -> bool {
        let id = template.subject_id.clone();
        self.update(&id, seen, |r| {
            if !r.templates.iter().any(|t| t.id == template.id) {
                r.templates.push(template);
            }
        })
    }

    /// Apply `change` to a copy of a subject's record and put it back; `false` when the
    /// subject is absent, or not in the state `seen` when given.
    fn update(
        &self,
        id: &str,
        seen: Option<SubjectVersion>,
        change: impl FnOnce(&mut SubjectRecord),
    ) -> bool {
        let mut inner = self.write();
        if seen.is_some_and(|seen| inner.version(id) != seen) {
            return false;
        }
        let Some(Some(entry)) = inner.by_id.get(id).and_then(|&slot| inner.slots.get(slot)) else {
            return false;
        };
        let mut record = entry.record.clone();
        change(&mut record);
        Self::insert(&mut inner, record, &self.model, self.dim);
        true
    }

    /// Remove one template of a subject (no-op when the template is already gone); `false`
    /// when the subject is absent, or not in the state `seen` when given.
    pub fn remove_template(
        &self,
        subject_id: &str,
        template_id: &str,
        seen: Option<SubjectVersion>,
    ) -> bool {
        self.update(subject_id, seen, |r| {
            r.templates.retain(|t| t.id != template_id);
        })
    }

    /// Rename a subject if the index holds the state `seen` of it; `false` when it is absent
    /// or changed.
    pub fn rename_if_unchanged(&self, subject_id: &str, name: &str, seen: SubjectVersion) -> bool {
        self.update(subject_id, Some(seen), |r| name.clone_into(&mut r.name))
    }

    /// The summary of a subject as `record` has it (a write's answer when the index has moved
    /// on: the subject deleted meanwhile elsewhere).
    pub fn summary_of(&self, record: &SubjectRecord) -> Subject {
        summary(record, &self.model, self.dim)
    }

    /// Remove a subject; `false` when it was absent.
    pub fn remove(&self, id: &str) -> bool {
        self.write().remove(id)
    }

    /// All subjects, ordered by creation time then id.
    pub fn list(&self) -> Vec<Subject> {
        let inner = self.read();
        let mut out: Vec<Subject> = inner
            .slots
            .iter()
            .flatten()
            .map(|e| summary(&e.record, &self.model, self.dim))
            .collect();
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        out
    }

    /// At most `limit` subjects in the order of [`TemplateIndex::list`], starting after
    /// `after` (a position in that order: creation time and id, which stays valid when that
    /// subject is deleted), only those `filter` admits, and whether more follow.
    pub fn page(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
        filter: PageFilter<'_>,
    ) -> (Vec<Subject>, bool) {
        let inner = self.read();
        let mut out: Vec<&Entry> = inner
            .slots
            .iter()
            .flatten()
            .filter(|e| filter.admits(&e.record))
            .filter(|e| {
                after.is_none_or(|(at, id)| {
                    (e.record.created_at.as_str(), e.record.id.as_str()) > (at, id)
                })
            })
            .collect();
        let key = |e: &&Entry| (e.record.created_at.clone(), e.record.id.clone());
        let more = out.len() > limit;
        if more {
            out.select_nth_unstable_by_key(limit, key);
            out.truncate(limit);
        }
        out.sort_by_key(key);
        let page = out
            .iter()
            .map(|e| summary(&e.record, &self.model, self.dim))
            .collect();
        (page, more)
    }

    /// One subject with its templates (embeddings included; never shown by the API).
    pub fn get(&self, id: &str) -> Option<(Subject, Vec<Template>)> {
        let inner = self.read();
        let slot = *inner.by_id.get(id)?;
        let entry = inner.slots.get(slot)?.as_ref()?;
        Some((
            summary(&entry.record, &self.model, self.dim),
            entry.record.templates.clone(),
        ))
    }

    /// The embeddings verification compares a probe with.
    pub fn subject_templates(&self, id: &str) -> SubjectTemplates {
        let inner = self.read();
        let Some(entry) = inner
            .by_id
            .get(id)
            .and_then(|&slot| inner.slots.get(slot))
            .and_then(Option::as_ref)
        else {
            return SubjectTemplates::NotFound;
        };
        let mut embeddings = Vec::new();
        let mut templates = Vec::new();
        let mut outdated = 0;
        // Oldest first, as `insert` keeps them.
        for t in &entry.record.templates {
            if let Some(part) = serving_part(t, &self.model, self.dim) {
                embeddings.push(part.to_vec());
                templates.push((t.model.clone(), t.embedding.clone()));
            } else {
                outdated += 1;
            }
        }
        SubjectTemplates::Found {
            embeddings,
            templates,
            outdated,
        }
    }

    /// Exact 1:N search: the `k` subjects whose closest serving-model template is nearest to
    /// `probe`, nearest first. Scans every row (no approximation); call it off the async
    /// executor for large indexes.
    pub fn nearest(&self, probe: &[f32], k: usize) -> Vec<Nearest> {
        if probe.len() != self.dim || k == 0 {
            return Vec::new();
        }
        let inner = self.read();
        let mut best = vec![f32::INFINITY; inner.slots.len()];
        for (row, &owner) in inner.matrix.chunks_exact(self.dim).zip(&inner.owners) {
            let d = squared_distance(row, probe);
            if d < best[owner] {
                best[owner] = d;
            }
        }
        let mut ranked: Vec<(usize, f32)> = best
            .into_iter()
            .enumerate()
            .filter(|(_, d)| d.is_finite())
            .collect();
        let k = k.min(ranked.len());
        if k == 0 {
            return Vec::new();
        }
        ranked.select_nth_unstable_by(k - 1, |a, b| a.1.total_cmp(&b.1));
        ranked.truncate(k);
        ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
        ranked
            .into_iter()
            .filter_map(|(slot, d2)| {
                let entry = inner.slots.get(slot)?.as_ref()?;
                Some(Nearest {
                    subject: summary(&entry.record, &self.model, self.dim),
                    distance: d2.sqrt(),
                })
            })
            .collect()
    }

    /// Serving-model templates in the index (the rows [`TemplateIndex::nearest`] scans).
    pub fn template_count(&self) -> usize {
        self.read().owners.len()
    }

    /// Templates in the index of every embedding model: what `FACEKEY_MAX_TEMPLATES` bounds
    /// (templates of an earlier model, kept until their subjects are enrolled again, are in
    /// memory too).
    pub fn held_template_count(&self) -> usize {
        self.read().held
    }

    /// Subjects in the index.
    pub fn subject_count(&self) -> usize {
        self.read().by_id.len()
    }

    /// Subjects in the index created by the API key `key_id` (one map lookup).
    pub fn subjects_created_by(&self, key_id: &str) -> usize {
        self.read().by_creator.get(key_id).copied().unwrap_or(0)
    }

    /// Templates the index holds that `key_id` enrolled (of any model).
    pub fn templates_enrolled_by(&self, key_id: &str) -> usize {
        self.read().by_enroller.get(key_id).copied().unwrap_or(0)
    }

    /// What the index holds (walks every subject: for metrics, not per request).
    pub fn stats(&self) -> IndexStats {
        let inner = self.read();
        let entries = inner.slots.iter().flatten();
        let mut stats = IndexStats {
            templates: inner.owners.len(),
            held_templates: inner.held,
            ..IndexStats::default()
        };
        for e in entries {
            stats.subjects += 1;
            // The rule `summary` reports per subject: a template is outdated when verify cannot
            // use it, not when its name differs (fused templates are `model+other`).
            if e.record
                .templates
                .iter()
                .any(|t| serving_part(t, &self.model, self.dim).is_none())
            {
                stats.outdated_subjects += 1;
            }
        }
        stats
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn template(id: &str, subject: &str, model: &str, v: Vec<f32>) -> Template {
        Template {
            id: id.into(),
            subject_id: subject.into(),
            model: model.into(),
            embedding: v,
            quality: None,
            created_at: format!("2026-01-01T00:00:0{}Z", id.len() % 10),
            enrolled_by: None,
        }
    }

    #[test]
    fn a_subjects_templates_come_oldest_first() {
        let index = TemplateIndex::new("m", 2);
        let at = |id: &str, v: f32, time: &str| Template {
            created_at: time.into(),
            ..template(id, "a", "m", vec![v, 0.0])
        };
        index.upsert(record(
            "a",
            vec![
                at("x", 3.0, "2026-03-01T00:00:00Z"),
                at("y", 1.0, "2026-01-01T00:00:00Z"),
                at("z", 2.0, "2026-02-01T00:00:00Z"),
            ],
        ));
        let SubjectTemplates::Found { embeddings, .. } = index.subject_templates("a") else {
            panic!("no subject");
        };
        assert_eq!(
            embeddings,
            vec![vec![1.0, 0.0], vec![2.0, 0.0], vec![3.0, 0.0]]
        );
    }

    fn enrolled_by(id: &str, subject: &str, key: Option<&str>) -> Template {
        Template {
            enrolled_by: key.map(str::to_owned),
            ..template(id, subject, "m", vec![0.0, 1.0])
        }
    }

    fn record(id: &str, templates: Vec<Template>) -> SubjectRecord {
        SubjectRecord {
            id: id.into(),
            name: format!("name-{id}"),
            created_at: format!("2026-01-01T00:00:00Z{id}"),
            created_by: None,
            templates,
        }
    }

    fn created_by(id: &str, key: Option<&str>) -> SubjectRecord {
        SubjectRecord {
            created_by: key.map(str::to_owned),
            ..record(id, vec![])
        }
    }

    fn brute_force(records: &[SubjectRecord], probe: &[f32], model: &str) -> Vec<(String, f32)> {
        let mut out: Vec<(String, f32)> = records
            .iter()
            .filter_map(|r| {
                r.templates
                    .iter()
                    .filter(|t| t.model == model)
                    .map(|t| {
                        t.embedding
                            .iter()
                            .zip(probe)
                            .map(|(a, b)| (a - b) * (a - b))
                            .sum::<f32>()
                            .sqrt()
                    })
                    .reduce(f32::min)
                    .map(|d| (r.id.clone(), d))
            })
            .collect();
        out.sort_by(|a, b| a.1.total_cmp(&b.1));
        out
    }

    /// A small deterministic generator (xorshift) for synthetic embeddings.
    fn vectors(seed: u64, n: usize, dim: usize) -> Vec<Vec<f32>> {
        let mut s = seed.max(1);
        (0..n)
            .map(|_| {
                (0..dim)
                    .map(|_| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        (s % 2000) as f32 / 1000.0 - 1.0
                    })
                    .collect()
            })
            .collect()
    }

    /// A subject read from the store is applied only if the index took no write of it since
    /// the read began: a deletion or a new face the change listener applied meanwhile stays.
    #[test]
    fn a_read_is_applied_only_if_the_index_did_not_change_the_subject_meanwhile() {
        let index = TemplateIndex::new("m", 2);
        let seen = index.version("a");
        assert!(index.set_if_unchanged("a", Some(record("a", vec![])), seen));
        assert!(index.get("a").is_some());
        // Read "b"; meanwhile "b" is upserted and removed (the listener applying a deletion).
        let seen = index.version("b");
        index.upsert(record("b", vec![]));
        index.remove("b");
        assert!(!index.set_if_unchanged("b", Some(record("b", vec![])), seen));
        assert!(index.get("b").is_none(), "a deleted subject came back");
        // A read of "a" older than a face the listener added is not applied over it.
        let seen = index.version("a");
        assert!(index.add_template(template("new", "a", "m", vec![1.0, 1.0])));
        assert!(!index.set_if_unchanged("a", Some(record("a", vec![])), seen));
        assert_eq!(index.get("a").unwrap().0.faces, 1, "the new face was lost");
        // A write of another subject held is no change of this one.
        let seen = index.version("a");
        index.upsert(record("c", vec![]));
        assert!(index.rename_if_unchanged("a", "Ada", seen));
        assert_eq!(index.get("a").unwrap().0.name, "Ada");
        // Reading that a subject is gone removes it, likewise only over the state read.
        let seen = index.version("a");
        assert!(index.set_if_unchanged("a", None, seen));
        assert!(index.get("a").is_none());
    }

    /// A new subject's creation is put in the index only if no subject was removed meanwhile:
    /// the index keeps no memory of removed ids, so any removal (or a reload) may be this one's.
    #[test]
    fn a_creation_is_not_put_back_over_a_removal_applied_meanwhile() {
        let index = TemplateIndex::new("m", 2);
        let seen = index.version_of_new();
        index.upsert(record("other", vec![]));
        assert!(
            index.upsert_if_unchanged(record("x", vec![]), seen),
            "another subject's write is no change of a new one"
        );
        // A read of an unknown id that the store does not have either changes nothing: a
        // stream of lookups of unknown ids does not hold up creations.
        let seen = index.version_of_new();
        assert!(index.set_if_unchanged("ghost", None, index.version("ghost")));
        assert!(index.upsert_if_unchanged(record("w", vec![]), seen));
        let seen = index.version_of_new();
        // The listener applies the deletion of "y" (created elsewhere, never held here).
        assert!(!index.remove("y"));
        assert!(!index.upsert_if_unchanged(record("y", vec![]), seen));
        assert!(index.get("y").is_none(), "a deleted subject came back");
        let seen = index.version_of_new();
        index.replace_all(vec![record("x", vec![])]);
        assert!(!index.upsert_if_unchanged(record("z", vec![]), seen));
        let seen = index.version("x");
        index.replace_all(vec![record("x", vec![])]);
        assert!(
            !index.add_template_if_unchanged(template("t", "x", "m", vec![0.0, 0.0]), seen),
            "a reload changes every subject"
        );
        assert!(
            !index.remove_template("x", "t", Some(SubjectVersion::Present(0))),
            "a version the index never had"
        );
    }

    /// `FACEKEY_MAX_TEMPLATES` bounds what is in memory: templates of an earlier embedding
    /// model count beside the serving model's, through every kind of write.
    #[test]
    fn every_model_s_templates_are_counted_as_held() {
        let index = TemplateIndex::new("m", 2);
        index.upsert(record(
            "a",
            vec![
                template("1", "a", "m", vec![0.0, 0.0]),
                template("2", "a", "old", vec![1.0, 1.0, 1.0]),
            ],
        ));
        assert_eq!(
            (index.template_count(), index.held_template_count()),
            (1, 2)
        );
        assert!(index.add_template(template("3", "a", "old", vec![2.0, 2.0, 2.0])));
        assert_eq!(index.stats().held_templates, 3);
        assert!(index.remove_template("a", "2", None));
        assert_eq!(
            (index.template_count(), index.held_template_count()),
            (1, 2)
        );
        index.upsert(record("b", vec![template("4", "b", "old", vec![0.0; 3])]));
        assert!(index.remove("a"));
        assert_eq!(
            (index.template_count(), index.held_template_count()),
            (0, 1)
        );
        index.replace_all(vec![record(
            "c",
            vec![template("5", "c", "m", vec![0.0, 0.0])],
        )]);
        assert_eq!(index.held_template_count(), 1);
    }

    #[test]
    fn squared_distance_matches_the_definition() {
        for dim in [1, 7, 8, 9, 128, 130] {
            let v = vectors(dim as u64, 2, dim);
            let want: f32 = v[0].iter().zip(&v[1]).map(|(a, b)| (a - b) * (a - b)).sum();
            assert!((squared_distance(&v[0], &v[1]) - want).abs() < 1e-3 * want.max(1.0));
        }
    }

    #[test]
    fn nearest_equals_brute_force_through_updates_and_removals() {
        let dim = 16;
        let vs = vectors(7, 60, dim);
        let mut records = Vec::new();
        for s in 0..20 {
            let ts = (0..3)
                .map(|k| {
                    let model = if k == 2 && s % 5 == 0 { "old" } else { "m" };
                    template(
                        &format!("t{s}-{k}"),
                        &format!("s{s}"),
                        model,
                        vs[s * 3 + k].clone(),
                    )
                })
                .collect();
            records.push(record(&format!("s{s}"), ts));
        }
        let index = TemplateIndex::new("m", dim);
        index.replace_all(records.clone());
        let probes = vectors(99, 5, dim);
        let check = |records: &[SubjectRecord]| {
            for p in &probes {
                let got = index.nearest(p, 4);
                let want = brute_force(records, p, "m");
                assert_eq!(got.len(), 4);
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(g.subject.id, w.0);
                    assert!((g.distance - w.1).abs() < 1e-4, "{} vs {}", g.distance, w.1);
                }
            }
        };
        check(&records);
        // Removals move rows around; results must not change for the others.
        for id in ["s3", "s0", "s19"] {
            assert!(index.remove(id));
            records.retain(|r| r.id != id);
            check(&records);
        }
        assert!(!index.remove("s3"));
        // Replace a subject with new templates, and add one template to another.
        let replaced = record("s4", vec![template("n1", "s4", "m", probes[0].clone())]);
        index.upsert(replaced.clone());
        records.retain(|r| r.id != "s4");
        records.push(replaced);
        assert_eq!(index.nearest(&probes[0], 1)[0].subject.id, "s4");
        assert!(index.add_template(template("n2", "s5", "m", probes[1].clone())));
        assert_eq!(index.nearest(&probes[1], 1)[0].subject.id, "s5");
        assert!(!index.add_template(template("n3", "nobody", "m", probes[1].clone())));
        let stats = index.stats();
        assert_eq!(index.template_count(), stats.templates);
        assert_eq!(stats.subjects, 17);
        assert_eq!(
            stats.outdated_subjects, 3,
            "s5, s10 and s15 keep an old template; s0 is gone"
        );
    }

    #[test]
    fn templates_are_removed_one_by_one_and_subjects_renamed() {
        let index = TemplateIndex::new("m", 2);
        index.upsert(record(
            "a",
            vec![
                template("1", "a", "m", vec![0.0, 0.0]),
                template("22", "a", "m", vec![1.0, 1.0]),
            ],
        ));
        index.upsert(record("b", vec![template("333", "b", "m", vec![5.0, 5.0])]));
        assert!(index.remove_template("a", "1", None));
        assert!(index.remove_template("a", "1", None), "already gone: no-op");
        assert!(!index.remove_template("nobody", "1", None));
        assert_eq!(index.template_count(), 2);
        // The removed embedding no longer matches; the others still do.
        assert_eq!(index.nearest(&[0.0, 0.0], 1)[0].distance, 2f32.sqrt());
        assert_eq!(index.nearest(&[5.0, 5.0], 1)[0].subject.id, "b");
        assert!(index.rename_if_unchanged("a", "Ada", index.version("a")));
        assert!(!index.rename_if_unchanged("nobody", "x", index.version("nobody")));
        let (a, templates) = index.get("a").unwrap();
        assert_eq!((a.name.as_str(), a.faces, templates.len()), ("Ada", 1, 1));
    }

    #[test]
    fn pages_follow_the_list_order_and_survive_deleting_the_cursor() {
        let index = TemplateIndex::new("m", 2);
        let mut records = Vec::new();
        for i in 0..7 {
            let mut r = record(&format!("s{i}"), vec![]);
            // Two subjects share each second: ties are broken by id.
            r.created_at = format!("2026-01-01T00:00:0{}Z", i / 2);
            records.push(r);
        }
        records.reverse();
        index.replace_all(records);
        let all = index.list();
        let mut seen = Vec::new();
        let mut after: Option<(String, String)> = None;
        loop {
            let (page, more) = index.page(
                after.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                3,
                PageFilter::default(),
            );
            assert!(page.len() <= 3);
            seen.extend(page.iter().cloned());
            let Some(last) = page.last() else { break };
            after = Some((last.created_at.clone(), last.id.clone()));
            if !more {
                break;
            }
        }
        assert_eq!(seen, all);
        // Delete the subject a cursor points at: the next page is still the rest.
        let (first, more) = index.page(None, 2, PageFilter::default());
        assert!(more);
        let cursor = first[1].clone();
        assert!(index.remove(&cursor.id));
        let (rest, more) = index.page(
            Some((&cursor.created_at, &cursor.id)),
            100,
            PageFilter::default(),
        );
        assert!(!more);
        assert_eq!(rest, all[2..].to_vec());
        assert_eq!(index.page(None, 0, PageFilter::default()), (vec![], true));
    }

    #[test]
    fn subjects_report_outdated_templates_and_verify_gets_only_serving_ones() {
        let index = TemplateIndex::new("m", 2);
        index.upsert(record(
            "a",
            vec![
                template("1", "a", "m", vec![0.0, 0.0]),
                template("2", "a", "old", vec![1.0, 1.0]),
            ],
        ));
        index.upsert(record("b", vec![template("3", "b", "old", vec![0.0, 0.0])]));
        let list = index.list();
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].faces, list[0].outdated_faces), (2, 1));
        assert_eq!(
            index.subject_templates("a"),
            SubjectTemplates::Found {
                embeddings: vec![vec![0.0, 0.0]],
                templates: vec![("m".into(), vec![0.0, 0.0])],
                outdated: 1
            }
        );
        assert_eq!(
            index.subject_templates("b"),
            SubjectTemplates::Found {
                embeddings: vec![],
                templates: vec![],
                outdated: 1
            }
        );
        assert_eq!(index.subject_templates("c"), SubjectTemplates::NotFound);
        // b has no serving-model template, so identification never returns it.
        let hits = index.nearest(&[0.0, 0.0], 5);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].subject.id, "a");
        assert!(index.nearest(&[0.0], 5).is_empty(), "wrong dimension");
        assert_eq!(index.stats().outdated_subjects, 2);
    }

    #[test]
    fn templates_holding_several_models_match_on_their_serving_part() {
        let index = TemplateIndex::new("m", 2);
        index.upsert(record(
            "a",
            vec![
                template("1", "a", "m+second", vec![0.0, 0.0, 9.0, 9.0, 9.0]),
                template("2", "a", "m", vec![3.0, 3.0]),
                template("3", "a", "m+second", vec![1.0]),
                template("4", "a", "second+m", vec![0.0, 0.0, 1.0]),
            ],
        ));
        // A subject holding only fused templates the serving model reads is up to date (the
        // gauge and start-up warning once counted every `m+second` template as outdated).
        index.upsert(record(
            "fused",
            vec![template("5", "fused", "m+second", vec![0.0, 1.0, 2.0])],
        ));
        assert_eq!(index.get("fused").unwrap().0.outdated_faces, 0);
        assert_eq!(index.stats().outdated_subjects, 1, "only a is outdated");
        let (subject, _) = index.get("a").unwrap();
        assert_eq!((subject.faces, subject.outdated_faces), (4, 2));
        assert_eq!(subject.face_models.get("m+second"), Some(&2));
        assert_eq!(subject.face_models.get("m"), Some(&1));
        match index.subject_templates("a") {
            SubjectTemplates::Found {
                embeddings,
                templates,
                outdated,
            } => {
                assert_eq!(embeddings, vec![vec![0.0, 0.0], vec![3.0, 3.0]]);
                assert_eq!(
                    templates[0],
                    ("m+second".into(), vec![0.0, 0.0, 9.0, 9.0, 9.0])
                );
                assert_eq!(templates.len(), 2);
                assert_eq!(outdated, 2);
            }
            SubjectTemplates::NotFound => panic!("subject a is indexed"),
        }
        // 1:N search uses the serving part only.
        let hits = index.nearest(&[0.0, 0.0], 1);
        assert_eq!(hits[0].distance, 0.0);
    }

    #[test]
    fn subjects_are_counted_per_creating_key_through_every_change() {
        let index = TemplateIndex::new("m", 2);
        index.replace_all(vec![
            created_by("a1", Some("app")),
            created_by("a2", Some("app")),
            created_by("b1", Some("other")),
            created_by("old", None),
        ]);
        let counts = || {
            (
                index.subjects_created_by("app"),
                index.subjects_created_by("other"),
                index.subjects_created_by("nobody"),
            )
        };
        assert_eq!(counts(), (2, 1, 0));
        // Creator-less (old) subjects count against no key, and no key is named by "".
        assert_eq!(index.subjects_created_by(""), 0);
        // Updates that replace the record (a face added or removed, a rename, a replica's
        // notification upserting it again) keep the count.
        assert!(index.add_template(template("t", "a1", "m", vec![0.0, 0.0])));
        assert!(index.rename_if_unchanged("a1", "Ada", index.version("a1")));
        assert!(index.remove_template("a1", "t", None));
        index.upsert(created_by("a2", Some("app")));
        assert_eq!(counts(), (2, 1, 0));
        index.upsert(created_by("a3", Some("app")));
        assert_eq!(counts(), (3, 1, 0));
        // Deleting frees the key's place; deleting an absent subject changes nothing.
        assert!(index.remove("a1"));
        assert!(!index.remove("a1"));
        assert!(index.remove("b1"));
        assert_eq!(counts(), (2, 0, 0));
        assert_eq!(index.subject_count(), 3);
        // A reload replaces the counts with the store's.
        index.replace_all(vec![created_by("x", Some("other"))]);
        assert_eq!(counts(), (0, 1, 0));
    }

    #[test]
    fn templates_are_counted_per_enrolling_key_through_every_change() {
        let index = TemplateIndex::new("m", 2);
        index.replace_all(vec![
            record(
                "a",
                vec![
                    enrolled_by("t1", "a", Some("app")),
                    enrolled_by("t2", "a", Some("other")),
                    enrolled_by("old", "a", None),
                ],
            ),
            record("b", vec![enrolled_by("t3", "b", Some("app"))]),
        ]);
        let counts = || {
            (
                index.templates_enrolled_by("app"),
                index.templates_enrolled_by("other"),
            )
        };
        assert_eq!(counts(), (2, 1));
        let listed = |created_by, enrolled_by| {
            let filter = PageFilter {
                created_by,
                enrolled_by,
            };
            let (page, _) = index.page(None, 10, filter);
            page.into_iter().map(|s| s.id).collect::<Vec<_>>()
        };
        assert_eq!(listed(None, Some("app")), ["a", "b"]);
        assert_eq!(listed(None, Some("other")), ["a"]);
        assert!(listed(None, Some("nobody")).is_empty());
        assert!(listed(Some("app"), Some("app")).is_empty());
        // A face added twice (this replica's write and its own notification) counts once.
        assert!(index.add_template(enrolled_by("t4", "b", Some("app"))));
        assert!(index.add_template(enrolled_by("t4", "b", Some("app"))));
        assert!(index.rename_if_unchanged("b", "Bea", index.version("b")));
        assert_eq!(counts(), (3, 1));
        assert!(index.remove_template("a", "t2", None));
        assert!(index.remove_template("a", "t2", None));
        assert_eq!(counts(), (3, 0));
        // Deleting a subject frees every face in it, whoever created the subject.
        assert!(index.remove("b"));
        assert_eq!(counts(), (1, 0));
        assert_eq!(index.templates_enrolled_by(""), 0);
        index.replace_all(vec![]);
        assert_eq!(counts(), (0, 0));
    }
}
