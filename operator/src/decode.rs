//! Decoding watched FaceKeyDeployments one by one. A typed watch decodes the whole list at once,
//! so one object this operator cannot read (stored under an older CRD, or written by a newer
//! operator before a rollback) would stop reconciles of every resource. Here the watch carries
//! untyped objects; each is decoded alone, an unreadable status is treated as absent, and an
//! unreadable spec — a value this operator does not know, or a field it does not have (the API
//! server keeps only fields its CRD declares, so one this operator lacks is a newer operator's,
//! which reconciling without would silently drop) — takes that one resource out of the cache
//! and is reported. Pure: [`Decoder`] tracks what it saw, the caller reports it.

use std::collections::BTreeMap;
use std::sync::Arc;

use facekey_crds::{FaceKeyDeployment, FaceKeyDeploymentSpec, SidecarFailurePolicy};
use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use serde_json::Value;

/// A FaceKeyDeployment whose spec this operator cannot decode.
#[derive(Debug, Clone, PartialEq)]
pub struct Undecodable {
    /// `namespace/name`.
    pub object: String,
    /// `metadata.generation` of what was stored.
    pub generation: Option<i64>,
    /// Where and why decoding failed, e.g. `spec.verification.decisionPolicy: unknown variant`.
    pub reason: String,
    /// The object with the spec and status left out: enough to address it (name, namespace, uid,
    /// generation) and to drop it from the cache.
    pub placeholder: FaceKeyDeployment,
    /// Its status when that part decodes alone (what the operator last wrote).
    pub status: Option<facekey_crds::FaceKeyDeploymentStatus>,
    /// `spec.sidecar.failurePolicy` read alone (`Ignore` when absent or unreadable), so the
    /// sidecar webhook answers a pod that asks for this resource by the resource's own policy.
    pub sidecar_failure_policy: SidecarFailurePolicy,
}

/// How one stored object decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// Spec and status decoded.
    Whole(FaceKeyDeployment),
    /// The spec decoded; the status did not (`reason`) and is treated as absent: the next
    /// reconcile writes a status this operator can read.
    StatusDropped(FaceKeyDeployment, String),
    /// The spec did not decode.
    Undecodable(Box<Undecodable>),
}

impl Decoded {
    /// The decoded resource (its status as far as it decoded), or what is known of one that
    /// did not decode.
    pub fn resource(self) -> Result<FaceKeyDeployment, Box<Undecodable>> {
        match self {
            Decoded::Whole(fkd) | Decoded::StatusDropped(fkd, _) => Ok(fkd),
            Decoded::Undecodable(u) => Err(u),
        }
    }
}

/// FaceKeyDeployments read and written untyped, so each is decoded alone ([`decode`]): in
/// `namespace`, or in every namespace.
pub fn api(client: kube::Client, namespace: Option<&str>) -> kube::Api<DynamicObject> {
    let resource = kube::api::ApiResource::erase::<FaceKeyDeployment>(&());
    match namespace {
        Some(ns) => kube::Api::namespaced_with(client, ns, &resource),
        None => kube::Api::all_with(client, &resource),
    }
}

/// `namespace/name` of a stored object.
fn object_key(obj: &DynamicObject) -> String {
    format!(
        "{}/{}",
        obj.metadata.namespace.as_deref().unwrap_or_default(),
        obj.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Decode `value` as `T`, naming the path of the first field that failed.
fn decode_at<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path.is_empty() || path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })
}

/// Whether a spec field this operator does not have makes the spec undecodable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownFields {
    /// Undecodable: the controller, which would otherwise silently drop what the field asks.
    #[default]
    Reject,
    /// Ignored: the webhook and the sidecar count, which read only the sidecar's settings. A
    /// newer CRD's defaulted field shows on every object (the API server defaults on read) from
    /// the moment that CRD is applied, and an operator upgrade must not stop injection.
    Ignore,
}

/// Decode one stored object, rejecting unknown spec fields ([`UnknownFields::Reject`]).
pub fn decode(obj: DynamicObject) -> Decoded {
    decode_with(obj, UnknownFields::Reject)
}

/// Decode one stored object. A status that does not decode whole keeps its readable top-level
/// fields (the last-known-good image survives an unreadable scan record).
pub fn decode_with(obj: DynamicObject, unknown: UnknownFields) -> Decoded {
    let object = object_key(&obj);
    let mut value = match serde_json::to_value(&obj) {
        Ok(v) => v,
        Err(e) => return undecodable(obj, object, e.to_string(), None),
    };
    if unknown == UnknownFields::Reject
        && let Some(unknown) = unknown_spec_fields(&value)
    {
        let status = value
            .get("status")
            .cloned()
            .and_then(|s| readable_status(s).0);
        return undecodable(obj, object, unknown, status);
    }
    let whole_error = match decode_at::<FaceKeyDeployment>(value.clone()) {
        Ok(fkd) => return Decoded::Whole(fkd),
        Err(e) => e,
    };
    let status = value.as_object_mut().and_then(|o| o.remove("status"));
    match decode_at::<FaceKeyDeployment>(value) {
        Ok(fkd) => match status {
            None => Decoded::Whole(fkd),
            Some(status) => {
                let (kept, dropped) = readable_status(status);
                let fkd = FaceKeyDeployment {
                    status: kept,
                    ..fkd
                };
                Decoded::StatusDropped(
                    fkd,
                    format!(
                        "{whole_error} (left out: status.{})",
                        dropped.join(", status.")
                    ),
                )
            }
        },
        Err(reason) => {
            let status = status.and_then(|s| readable_status(s).0);
            undecodable(obj, object, reason, status)
        }
    }
}

/// The fields of `status` that decode, each top-level one judged alone, and the names of those
/// that do not.
fn readable_status(status: Value) -> (Option<facekey_crds::FaceKeyDeploymentStatus>, Vec<String>) {
    let Value::Object(fields) = status else {
        return (None, vec!["(not an object)".to_owned()]);
    };
    let mut kept = serde_json::Map::new();
    let mut dropped = Vec::new();
    for (name, field) in fields {
        let alone = Value::Object([(name.clone(), field.clone())].into_iter().collect());
        if serde_json::from_value::<facekey_crds::FaceKeyDeploymentStatus>(alone).is_ok() {
            kept.insert(name, field);
        } else {
            dropped.push(name);
        }
    }
    (serde_json::from_value(Value::Object(kept)).ok(), dropped)
}

/// The spec's fields this operator's types do not have, as `spec.<path>: unknown field` (`None`
/// when there are none, or the spec does not decode anyway: [`decode_at`] names that).
fn unknown_spec_fields(value: &Value) -> Option<String> {
    let spec = value.get("spec")?.clone();
    let mut unknown = Vec::new();
    let decoded: Result<FaceKeyDeploymentSpec, _> =
        serde_ignored::deserialize(spec, |path| unknown.push(format!("spec{}", dotted(&path))));
    if decoded.is_err() || unknown.is_empty() {
        return None;
    }
    Some(format!(
        "{}: unknown field{} (set by a newer operator's CRD)",
        unknown.join(", "),
        if unknown.len() == 1 { "" } else { "s" }
    ))
}

/// `path` as `.a.b[0].c` (the wrappers of `Option` and newtypes left out).
fn dotted(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", dotted(parent)),
        Path::Map { parent, key } => format!("{}.{key}", dotted(parent)),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => dotted(parent),
    }
}

/// `spec.sidecar.failurePolicy` of a stored object, read alone.
fn raw_sidecar_failure_policy(obj: &DynamicObject) -> SidecarFailurePolicy {
    obj.data
        .pointer("/spec/sidecar/failurePolicy")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

fn undecodable(
    obj: DynamicObject,
    object: String,
    reason: String,
    status: Option<facekey_crds::FaceKeyDeploymentStatus>,
) -> Decoded {
    let sidecar_failure_policy = raw_sidecar_failure_policy(&obj);
    Decoded::Undecodable(Box::new(Undecodable {
        object,
        sidecar_failure_policy,
        generation: obj.metadata.generation,
        reason,
        placeholder: FaceKeyDeployment {
            metadata: obj.metadata,
            spec: Default::default(),
            status: None,
        },
        status,
    }))
}

/// What one watch event asks of the caller besides feeding the cache.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// A resource (or a new generation of it) cannot be decoded: log, Event, status.
    Undecodable(Box<Undecodable>),
    /// A resource's status could not be decoded whole: its readable fields are kept and the
    /// rest rewritten by its next reconcile (reported once per reason).
    StatusDropped {
        /// `namespace/name`.
        object: String,
        /// Where and why decoding failed.
        reason: String,
    },
    /// A resource undecodable until now decodes again (the CRD or the operator changed, maybe
    /// at the same generation, which the controller's change filter would pass over): reconcile
    /// it now that the cache has it.
    Recovered {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// Turns the untyped watch into the typed events the controller's cache takes, and keeps the
/// set of resources that could not be decoded (for the metric, the webhook's answers, and to
/// report each generation once, not on every relist or status write).
#[derive(Debug, Default)]
pub struct Decoder {
    /// What a spec field this operator lacks means.
    unknown: UnknownFields,
    /// Undecodable resources by `namespace/name`, as last reported.
    undecodable: BTreeMap<String, Arc<Undecodable>>,
    /// Status decoding problems by `namespace/name`, as last reported.
    status_dropped: BTreeMap<String, String>,
    /// During a relist: what it found so far.
    relisting: Option<Relist>,
}

/// What a relist found so far: the undecodable resources, and those of [`Decoder`]'s
/// undecodable set it found decodable (reported recovered once the relist is in the cache).
type Relist = (BTreeMap<String, Arc<Undecodable>>, Vec<String>);

impl Decoder {
    /// A decoder judging unknown spec fields by `unknown`.
    pub fn new(unknown: UnknownFields) -> Self {
        Self {
            unknown,
            ..Self::default()
        }
    }

    /// How many resources are currently undecodable.
    pub fn undecodable_count(&self) -> usize {
        self.undecodable.len()
    }

    /// The resource `namespace/name` when it is currently undecodable.
    pub fn undecodable(&self, namespace: &str, name: &str) -> Option<Arc<Undecodable>> {
        self.undecodable
            .get(&format!("{namespace}/{name}"))
            .cloned()
    }

    /// Whether `namespace/name` is undecodable at `generation` now.
    pub fn still_undecodable(&self, object: &str, generation: Option<i64>) -> bool {
        self.undecodable
            .get(object)
            .is_some_and(|u| u.generation == generation)
    }

    /// Map one untyped event. An undecodable object becomes a `Delete` of its placeholder, so a
    /// readable older version of it leaves the cache instead of being reconciled as if current
    /// (and during a relist it is simply left out of the new cache).
    pub fn event(
        &mut self,
        event: Event<DynamicObject>,
    ) -> (Event<FaceKeyDeployment>, Vec<Report>) {
        match event {
            Event::Init => {
                self.relisting = Some((BTreeMap::new(), Vec::new()));
                (Event::Init, Vec::new())
            }
            Event::InitDone => {
                let mut reports = Vec::new();
                if let Some((seen, recovered)) = self.relisting.take() {
                    self.undecodable = seen;
                    reports.extend(
                        recovered
                            .into_iter()
                            .filter(|k| !self.undecodable.contains_key(k))
                            .filter_map(|k| recovered_report(&k)),
                    );
                }
                (Event::InitDone, reports)
            }
            Event::Apply(obj) => self.applied(obj, false),
            Event::InitApply(obj) => self.applied(obj, true),
            Event::Delete(obj) => {
                let key = object_key(&obj);
                self.undecodable.remove(&key);
                self.status_dropped.remove(&key);
                if let Some((seen, recovered)) = self.relisting.as_mut() {
                    seen.remove(&key);
                    recovered.retain(|k| *k != key);
                }
                let fkd = decode_with(obj, self.unknown)
                    .resource()
                    .unwrap_or_else(|u| u.placeholder);
                (Event::Delete(fkd), Vec::new())
            }
        }
    }

    fn applied(
        &mut self,
        obj: DynamicObject,
        init: bool,
    ) -> (Event<FaceKeyDeployment>, Vec<Report>) {
        let key = object_key(&obj);
        let wrap = |fkd| {
            if init {
                Event::InitApply(fkd)
            } else {
                Event::Apply(fkd)
            }
        };
        match decode_with(obj, self.unknown) {
            Decoded::Whole(fkd) => {
                self.status_dropped.remove(&key);
                let reports = self.decodable(&key).into_iter().collect();
                (wrap(fkd), reports)
            }
            Decoded::StatusDropped(fkd, reason) => {
                let mut reports: Vec<Report> = self.decodable(&key).into_iter().collect();
                if self.status_dropped.get(&key) != Some(&reason) {
                    self.status_dropped.insert(key.clone(), reason.clone());
                    reports.push(Report::StatusDropped {
                        object: key,
                        reason,
                    });
                }
                (wrap(fkd), reports)
            }
            Decoded::Undecodable(u) => {
                let reported = self.undecodable.get(&key).map(|r| r.generation);
                let new = reported != Some(u.generation);
                let shared: Arc<Undecodable> = Arc::from(u.clone());
                if let Some((seen, recovered)) = self.relisting.as_mut() {
                    seen.insert(key.clone(), shared.clone());
                    recovered.retain(|k| *k != key);
                }
                // At once, relist or not: its `Delete` takes it out of the cache at once too.
                self.undecodable.insert(key, shared);
                let reports = if new {
                    vec![Report::Undecodable(u.clone())]
                } else {
                    Vec::new()
                };
                (Event::Delete(u.placeholder), reports)
            }
        }
    }

    /// `key` decoded: forgotten as undecodable (at the end of a relist, when one is under way,
    /// as the cache takes the relist's contents then), and reported recovered if it was.
    fn decodable(&mut self, key: &str) -> Option<Report> {
        match self.relisting.as_mut() {
            Some((seen, recovered)) => {
                seen.remove(key);
                if self.undecodable.contains_key(key) && !recovered.iter().any(|k| k == key) {
                    recovered.push(key.to_owned());
                }
                None
            }
            None => self
                .undecodable
                .remove(key)
                .and_then(|_| recovered_report(key)),
        }
    }
}

/// [`Report::Recovered`] for `namespace/name`.
fn recovered_report(key: &str) -> Option<Report> {
    let (namespace, name) = key.split_once('/')?;
    Some(Report::Recovered {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn stored(name: &str, generation: i64, spec: Value, status: Option<Value>) -> DynamicObject {
        let mut v = json!({
            "apiVersion": "facekey.dev/v1alpha1",
            "kind": "FaceKeyDeployment",
            "metadata": {"name": name, "namespace": "apps", "uid": format!("uid-{name}"),
                         "generation": generation, "resourceVersion": "7"},
            "spec": spec,
        });
        if let Some(s) = status {
            v["status"] = s;
        }
        serde_json::from_value(v).unwrap()
    }

    fn good() -> Value {
        json!({"image": "ghcr.io/facekey/runtime:0.1.0"})
    }

    fn bad() -> Value {
        json!({"image": "ghcr.io/facekey/runtime:0.1.0",
               "verification": {"decisionPolicy": "adaptive"}})
    }

    #[test]
    fn a_readable_object_decodes_whole() {
        let Decoded::Whole(fkd) = decode(stored("a", 1, good(), None)) else {
            panic!("decodes");
        };
        assert_eq!(fkd.spec.image, "ghcr.io/facekey/runtime:0.1.0");
    }

    #[test]
    fn an_unreadable_spec_names_the_field_and_keeps_identity_and_status() {
        let status = json!({"observedGeneration": 2, "lastKnownGoodImage": "img:1"});
        let Decoded::Undecodable(u) = decode(stored("a", 3, bad(), Some(status))) else {
            panic!("undecodable");
        };
        assert_eq!(u.object, "apps/a");
        assert_eq!(u.generation, Some(3));
        assert!(
            u.reason
                .starts_with("spec.verification.decisionPolicy: unknown variant `adaptive`"),
            "{}",
            u.reason
        );
        assert_eq!(u.placeholder.metadata.uid.as_deref(), Some("uid-a"));
        assert_eq!(
            u.status.unwrap().last_known_good_image.as_deref(),
            Some("img:1")
        );

        let status = json!({"scans": [{"image": "img:2", "verdict": "Waived"}]});
        let Decoded::Undecodable(u) = decode(stored("a", 3, bad(), Some(status))) else {
            panic!("undecodable");
        };
        assert!(
            u.status.is_some_and(|s| s.scans.is_empty()),
            "its readable part: the conditions are merged over it"
        );
    }

    #[test]
    fn a_field_this_operator_lacks_makes_the_spec_undecodable() {
        let spec = json!({"image": "ghcr.io/facekey/runtime:0.1.0",
            "sidecar": {"enabled": true, "failurePolicy": "Fail"},
            "store": {"postgres": {"cloudNativePG": {"instances": 3, "witnesses": 1}}}});
        let Decoded::Undecodable(u) = decode(stored("a", 4, spec, None)) else {
            panic!("undecodable");
        };
        assert_eq!(
            u.reason,
            "spec.store.postgres.cloudNativePG.witnesses: unknown field (set by a newer \
             operator's CRD)"
        );
        assert_eq!(u.sidecar_failure_policy, SidecarFailurePolicy::Fail);
    }

    /// Every FaceKeyDeployment the repository ships or tests with decodes whole: the unknown
    /// field check has no false positives on this operator's own fields.
    #[test]
    fn shipped_resources_have_no_unknown_fields() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut seen = 0;
        for dir in [
            "manifests/samples",
            "operator/tests/fixtures/resources",
            "operator/tests/fixtures/store",
        ] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                let text = std::fs::read_to_string(&path).unwrap();
                for doc in serde_yaml::Deserializer::from_str(&text) {
                    let Ok(v) = <Value as serde::Deserialize>::deserialize(doc) else {
                        continue;
                    };
                    if v.get("kind").and_then(Value::as_str) != Some("FaceKeyDeployment") {
                        continue;
                    }
                    let obj: DynamicObject = serde_json::from_value(v).unwrap();
                    match decode(obj) {
                        Decoded::Whole(_) => seen += 1,
                        other => panic!("{}: {other:?}", path.display()),
                    }
                }
            }
        }
        assert!(seen >= 5, "{seen} resources checked");
    }

    #[test]
    fn an_unreadable_status_is_dropped_and_the_spec_kept() {
        // The readable fields stay (the last-known-good image above all); the unreadable go.
        let status = json!({"scans": [{"image": "img:2", "verdict": "Waived"}],
                            "lastKnownGoodImage": "img:1", "observedGeneration": 1});
        let Decoded::StatusDropped(fkd, reason) = decode(stored("a", 1, good(), Some(status)))
        else {
            panic!("status dropped");
        };
        let kept = fkd.status.unwrap();
        assert!(kept.scans.is_empty());
        assert_eq!(kept.last_known_good_image.as_deref(), Some("img:1"));
        assert!(
            reason.starts_with("status.scans[0]") && reason.ends_with("(left out: status.scans)"),
            "{reason}"
        );
    }

    #[test]
    fn a_dropped_status_is_reported_once_per_reason() {
        let mut d = Decoder::default();
        let status = || Some(json!({"scans": [{"image": "img:2", "verdict": "Waived"}]}));
        let (_, reports) = d.event(Event::Apply(stored("a", 1, good(), status())));
        assert!(matches!(reports[..], [Report::StatusDropped { .. }]));
        let (_, reports) = d.event(Event::Apply(stored("a", 1, good(), status())));
        assert!(reports.is_empty(), "its own status writes do not repeat it");
    }

    #[test]
    fn unknown_fields_can_be_ignored() {
        let spec = json!({"image": "img:1", "store": {"postgres":
            {"cloudNativePG": {"instances": 3, "witnesses": 1}}}});
        let mut d = Decoder::new(UnknownFields::Ignore);
        let (ev, reports) = d.event(Event::Apply(stored("a", 1, spec.clone(), None)));
        assert!(matches!(ev, Event::Apply(_)) && reports.is_empty());
        let mut d = Decoder::new(UnknownFields::Reject);
        let (ev, _) = d.event(Event::Apply(stored("a", 1, spec, None)));
        assert!(matches!(ev, Event::Delete(_)));
    }

    /// Decodable again at the same generation (the CRD or the operator changed): the controller's
    /// change filter would pass over it, so the decoder asks for its reconcile — at once on a
    /// watch event, after the relist's end during one (when the cache has it).
    #[test]
    fn a_resource_decodable_again_is_reported_recovered() {
        let recovered = |r: &[Report]| {
            r.iter()
                .any(|r| matches!(r, Report::Recovered { namespace, name } if namespace == "apps" && name == "a"))
        };
        let mut d = Decoder::default();
        d.event(Event::Apply(stored("a", 1, bad(), None)));
        let (_, reports) = d.event(Event::Apply(stored("a", 1, good(), None)));
        assert!(recovered(&reports), "{reports:?}");
        // A decodable resource that never was undecodable is no recovery.
        let (_, reports) = d.event(Event::Apply(stored("a", 1, good(), None)));
        assert!(!recovered(&reports));

        d.event(Event::Apply(stored("a", 1, bad(), None)));
        d.event(Event::Init);
        let (_, reports) = d.event(Event::InitApply(stored("a", 1, good(), None)));
        assert!(!recovered(&reports), "not before the cache has it");
        assert!(
            d.undecodable("apps", "a").is_some(),
            "until the relist ends, lookups see what the cache holds"
        );
        let (_, reports) = d.event(Event::InitDone);
        assert!(recovered(&reports), "{reports:?}");
        assert!(d.undecodable("apps", "a").is_none());
    }

    #[test]
    fn an_undecodable_object_leaves_the_cache_and_is_reported_once_per_generation() {
        let mut d = Decoder::default();
        let (ev, reports) = d.event(Event::Apply(stored("a", 1, bad(), None)));
        assert!(matches!(ev, Event::Delete(ref p) if p.metadata.name.as_deref() == Some("a")));
        assert_eq!(reports.len(), 1);
        assert_eq!(d.undecodable_count(), 1);

        // Its own status write (same generation) and a relist do not report it again.
        let (_, reports) = d.event(Event::Apply(stored("a", 1, bad(), None)));
        assert!(reports.is_empty());
        d.event(Event::Init);
        let (ev, reports) = d.event(Event::InitApply(stored("a", 1, bad(), None)));
        assert!(matches!(ev, Event::Delete(_)));
        assert!(reports.is_empty());
        d.event(Event::InitDone);
        assert_eq!(d.undecodable_count(), 1);

        // A new generation still unreadable is reported; fixed, it is reconciled again.
        let (_, reports) = d.event(Event::Apply(stored("a", 2, bad(), None)));
        assert_eq!(reports.len(), 1);
        let (ev, reports) = d.event(Event::Apply(stored("a", 3, good(), None)));
        assert!(matches!(ev, Event::Apply(ref f) if f.spec.image.ends_with("0.1.0")));
        assert!(matches!(reports[..], [Report::Recovered { .. }]));
        assert_eq!(d.undecodable_count(), 0);
    }

    #[test]
    fn a_relist_forgets_undecodable_objects_that_are_gone() {
        let mut d = Decoder::default();
        d.event(Event::Apply(stored("a", 1, bad(), None)));
        d.event(Event::Apply(stored("b", 1, bad(), None)));
        assert_eq!(d.undecodable_count(), 2);
        d.event(Event::Init);
        d.event(Event::InitApply(stored("b", 1, bad(), None)));
        let (ev, _) = d.event(Event::InitApply(stored("c", 1, good(), None)));
        assert!(matches!(ev, Event::InitApply(_)));
        d.event(Event::InitDone);
        assert_eq!(d.undecodable_count(), 1, "a was deleted while unwatched");
        let (ev, _) = d.event(Event::Delete(stored("b", 1, bad(), None)));
        assert!(matches!(ev, Event::Delete(_)));
        assert_eq!(d.undecodable_count(), 0);
    }
}
