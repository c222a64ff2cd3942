//! Server-side apply with a real API server's field-ownership rules (structured-merge-diff, as the
//! Kubernetes server-side-apply documentation describes them), in front of kube-fake-client (which
//! merges an apply like a JSON merge patch and keeps every field a manager stops applying).
//!
//! Modelled:
//! - each manager's field set in `metadata.managedFields` (FieldsV1): `f:<key>` per map key; an
//!   item of an associative list as `k:<its key fields as JSON, sorted>` (e.g.
//!   `k:{"containerPort":8080,"protocol":"TCP"}`), owned itself (`.`) and field by field; an item
//!   of a set as `v:<value>`; any other list owned whole, as one atomic field;
//! - which lists are associative, and their keys: [`LISTS`], the upstream OpenAPI's
//!   `x-kubernetes-list-type` and `x-kubernetes-list-map-keys` for every list of the kinds the
//!   harness serves that is not atomic (a key field the schema defaults, `protocol`, counts as
//!   `TCP` when an item leaves it out);
//! - an apply merges associative lists item by item, in the server's order: items another
//!   manager added (an `env` entry, a sidecar container) stay;
//! - a field or item a manager applied before and leaves out of its next apply is removed when
//!   no manager owns it any more; an item stays only while another manager owns the item itself
//!   (it added or applied it) — one that owns a field inside it (an update changed one value)
//!   does not keep it; a map field goes when nobody owns anything under it;
//! - applying a value that differs from one another manager owns is a conflict (409) unless
//!   forced, when that one field (inside an item, not the whole list) moves; applying the same
//!   value shares it;
//! - an update (merge patch with a field manager: `kubectl edit`, the HPA controller writing
//!   `spec.replicas` through `/scale`) takes the fields and items it adds or changes, from
//!   everyone, without conflicts, and drops those it removes from everyone's sets;
//! - apps/v1 defaulting: a Deployment without `spec.replicas` gets 1;
//! - core/v1's deprecated alias `serviceAccount` of a pod template's `serviceAccountName`
//!   ([`service_account_alias`]): set from `serviceAccountName` on every write, and an empty
//!   `serviceAccountName` filled back from it, so a `serviceAccountName` its manager stops
//!   applying comes back;
//! - `metadata.generation` moves only when something outside `metadata` changed, and an apply
//!   that changes nothing writes nothing.
//!
//! Not modelled: atomic maps and structs (`x-kubernetes-map-type: atomic`, e.g. label selectors)
//! are owned key by key; server defaulting other than `replicas` and the `serviceAccount` alias;
//! the status subresource field by field (an apply's `status` is ignored here, status writes
//! bypass this model); strategic merge patches
//! (`kubectl set env` is played by the merge patch `kubectl edit` would send); API versions and
//! timestamps of managers; the kinds the operator does not apply through it (prometheus-operator
//! stand-ins get the fake's own merge). The FaceKeyDeployment status gets a coarser rule of its
//! own ([`super::status_apply_rule`]: top-level fields a manager stops applying go).
//!
//! Every apply and update is recorded ([`Log`]) so tests can check the bodies the operator sent.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use facekey_operator::desired::OptionalCrd;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Patch, PatchParams, PostParams};
use kube_fake_client::{Error, PatchType, interceptor};
use serde_json::{Map, Value, json};

use super::{Harness, TestClock, builder, t0, test_context};

/// Field manager the HPA controller's `/scale` updates are recorded under.
pub const HPA_MANAGER: &str = "kube-controller-manager";

/// One write the harness saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub kind: String,
    pub name: String,
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: &'static str,
    pub force: bool,
    pub body: Value,
}

/// Every apply and update, oldest first; and refusals to inject.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Write>>>, Arc<Mutex<Vec<(String, String)>>>);

impl Log {
    /// From now on the API server refuses every write to `kind` with 422 Invalid and `message`
    /// (e.g. a change to an immutable field).
    pub fn refuse(&self, kind: &str, message: &str) {
        self.1.lock().unwrap().push((kind.into(), message.into()));
    }
    fn refusal(&self, kind: &str) -> Option<String> {
        let r = self.1.lock().unwrap();
        r.iter().find(|(k, _)| k == kind).map(|(_, m)| m.clone())
    }
    pub fn all(&self) -> Vec<Write> {
        self.0.lock().unwrap().clone()
    }
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
    /// Writes to objects of `kind`.
    pub fn of(&self, kind: &str) -> Vec<Write> {
        self.all().into_iter().filter(|w| w.kind == kind).collect()
    }
    fn push(&self, w: Write) {
        self.0.lock().unwrap().push(w);
    }
}

/// A reconciler harness whose API applies server-side apply's ownership rules.
pub async fn harness(installed: &[OptionalCrd]) -> (Harness, Log) {
    let fail = Arc::new(AtomicBool::new(false));
    let log = Log::default();
    let client = builder(installed)
        .with_return_managed_fields()
        .with_interceptor_funcs(funcs(fail.clone(), log.clone()))
        .build()
        .await
        .unwrap();
    let clock = TestClock::new(t0());
    let ctx = test_context(&client, &clock);
    let h = Harness {
        client,
        ctx: Arc::new(ctx),
        clock,
        fail_deployment_applies: fail,
        // The SSA harness does not refuse Jobs.
        fail_job_creates: Arc::default(),
        admission_adds_proxy_to_jobs: Arc::default(),
    };
    (h, log)
}

/// Play the HPA controller: write `spec.replicas` of Deployment `name` through `/scale` (an
/// update by [`HPA_MANAGER`], which takes the field's ownership).
pub async fn scale_as_hpa(h: &Harness, name: &str, replicas: i32) {
    h.api::<Deployment>()
        .patch(
            name,
            &PatchParams {
                field_manager: Some(HPA_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "spec": {"replicas": replicas},
            })),
        )
        .await
        .unwrap();
}

/// Managers owning `path` of `obj`, or anything under it, outside the status subresource. Each
/// element is a field name, or an item as FieldsV1 writes it (`k:{"name":"runtime"}`, `v:"x"`):
/// `["spec", "replicas"]`, `["spec", "template", "spec", "containers", r#"k:{"name":"runtime"}"#,
/// "image"]`.
pub fn owners(obj: &Value, path: &[&str]) -> Vec<String> {
    let path = to_path(path);
    entries(obj)
        .iter()
        .filter(|e| e.subresource.is_empty() && e.fields.iter().any(|p| p.starts_with(&path)))
        .map(|e| e.manager.clone())
        .collect()
}

/// Managers owning exactly `path` of `obj` (written as for [`owners`]): for an item, the item
/// itself (FieldsV1 `.`), not merely a field inside it.
pub fn item_owners(obj: &Value, path: &[&str]) -> Vec<String> {
    let path = to_path(path);
    entries(obj)
        .iter()
        .filter(|e| e.subresource.is_empty() && e.fields.contains(&path))
        .map(|e| e.manager.clone())
        .collect()
}

/// The FieldsV1 trie `manager` recorded for `operation` (`Apply` or `Update`) in `obj`'s
/// `metadata.managedFields`, outside the status subresource.
pub fn fields_v1(obj: &Value, manager: &str, operation: &str) -> Option<Value> {
    obj.pointer("/metadata/managedFields")?
        .as_array()?
        .iter()
        .find(|e| {
            e["manager"] == manager
                && e["operation"] == operation
                && e.get("subresource").is_none_or(|s| s == "")
        })
        .map(|e| e["fieldsV1"].clone())
}

fn to_path(path: &[&str]) -> Path {
    path.iter()
        .map(|s| {
            if s.starts_with("k:{") || s.starts_with("v:") {
                (*s).to_owned()
            } else {
                field(s)
            }
        })
        .collect()
}

fn funcs(fail: Arc<AtomicBool>, log: Log) -> interceptor::Funcs {
    interceptor::Funcs::new()
        .patch_status(super::status_apply_rule(Default::default()))
        .patch(move |ctx| {
        if let Some(answer) = super::test_only_json_patch(&ctx) {
            return answer;
        }
        let kind = ctx
            .patch
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if kind == "Deployment" && fail.load(Ordering::SeqCst) {
            return Err(Error::Conflict(
                "Apply failed with 1 conflict: conflict with \"kubectl\" using apps/v1: .spec.replicas".into(),
            ));
        }
        if let Some(message) = log.refusal(&kind) {
            return Err(Error::InvalidRequest(message));
        }
        let manager = ctx.params.field_manager.clone().unwrap_or_default();
        let (ns, name) = (ctx.namespace, ctx.name);
        let op = match ctx.patch_type {
            PatchType::ApplyPatch => Op::Apply {
                force: ctx.params.force,
            },
            PatchType::MergePatch if !manager.is_empty() && !kind.is_empty() => Op::Update,
            _ => return Ok(None),
        };
        macro_rules! run {
            ($k:ty) => {{
                let store = Store {
                    get: &|| match ctx.client.get::<$k>(ns, name) {
                        Ok(o) => Ok(Some(serde_json::to_value(o)?)),
                        Err(Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    },
                    create: &|v| {
                        let o: $k = serde_json::from_value(v)?;
                        Ok(serde_json::to_value(ctx.client.create(
                            ns,
                            &o,
                            &PostParams::default(),
                        )?)?)
                    },
                    update: &|v, bump| {
                        let o: $k = serde_json::from_value(v)?;
                        let stored = if bump {
                            ctx.client.update(ns, &o, &PostParams::default())?
                        } else {
                            // Keeps `metadata.generation` (spec and status are unchanged).
                            ctx.client.update_status(ns, &o, &PostParams::default())?
                        };
                        Ok(serde_json::to_value(stored)?)
                    },
                };
                let write = Write {
                    kind: kind.clone(),
                    name: name.to_owned(),
                    manager: manager.clone(),
                    operation: op.name(),
                    force: matches!(op, Op::Apply { force: true }),
                    body: ctx.patch.clone(),
                };
                let result = write_through(&store, ns, name, &kind, &manager, op, ctx.patch);
                if result.is_ok() {
                    log.push(write);
                }
                result.map(Some)
            }};
        }
        match kind.as_str() {
            "Deployment" => run!(Deployment),
            "Service" => run!(Service),
            "ConfigMap" => run!(ConfigMap),
            "HorizontalPodAutoscaler" => run!(HorizontalPodAutoscaler),
            "PodDisruptionBudget" => run!(PodDisruptionBudget),
            "NetworkPolicy" => run!(NetworkPolicy),
            "PersistentVolumeClaim" => run!(PersistentVolumeClaim),
            // The CloudNativePG Cluster carries the store's owner reference, which a real
            // server removes when the operator stops sending it (retention turned on).
            "Cluster" => run!(super::kinds::Cluster),
            // prometheus-operator stand-ins: the fake's own merge.
            _ => Ok(None),
        }
    })
}

#[derive(Clone, Copy)]
enum Op {
    Apply { force: bool },
    Update,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Apply { .. } => "Apply",
            Op::Update => "Update",
        }
    }
}

type Res<T> = Result<T, Error>;

/// Typed access to one object of the fake's store (its client is not nameable outside the crate).
struct Store<'a> {
    get: &'a dyn Fn() -> Res<Option<Value>>,
    create: &'a dyn Fn(Value) -> Res<Value>,
    /// Write; `true` bumps `metadata.generation`.
    update: &'a dyn Fn(Value, bool) -> Res<Value>,
}

/// A field path as FieldsV1 writes its elements: `f:<field>`, `k:<key JSON>`, `v:<value JSON>`.
type Path = Vec<String>;

/// One `managedFields` entry.
#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    subresource: String,
    api_version: String,
    fields: BTreeSet<Path>,
}

/// How the API server merges and owns a list (`x-kubernetes-list-type`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum ListType {
    /// Replaced whole and owned as one field: the default.
    Atomic,
    /// Scalars, each owned by value (`v:<value>`).
    Set,
    /// Objects merged and owned by these key fields (`k:{...}`).
    Map(&'static [&'static str]),
}

/// Path of the pod spec in the kinds with a pod template.
const POD_SPEC: &str = "spec.template.spec";

/// Kinds whose `spec.template.spec` is a core/v1 PodSpec.
const POD_KINDS: &[&str] = &[
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
];

/// Every list that is not atomic, as `(kinds, path, type)` — kinds empty for any kind; `{pod}` is
/// the pod spec, `{container}` an item of its `containers`, `initContainers` or
/// `ephemeralContainers`. From the upstream OpenAPI (`x-kubernetes-list-type`,
/// `x-kubernetes-list-map-keys`; k8s-openapi's `DeepMerge` treats the same lists of these kinds'
/// specs and metadata as maps and sets, but keys ports and spread constraints by their first key
/// only). Atomic there, and so here: `tolerations`, `readinessGates`, `envFrom`,
/// `command`, `args`, `resizePolicy`, capabilities, affinity terms and their expressions, volume
/// `items`, HPA `spec.metrics`, NetworkPolicy `ingress`, `egress`, `from`, `ports` and
/// `policyTypes`, PVC `accessModes`, Service `ipFamilies`, and every list of a custom resource
/// whose schema says nothing (CloudNativePG's Cluster).
const LISTS: &[(&[&str], &str, ListType)] = &[
    (&[], "metadata.ownerReferences", ListType::Map(&["uid"])),
    (&[], "metadata.finalizers", ListType::Set),
    (
        &["Service"],
        "spec.ports",
        ListType::Map(&["port", "protocol"]),
    ),
    (POD_KINDS, "{pod}.containers", ListType::Map(&["name"])),
    (POD_KINDS, "{pod}.initContainers", ListType::Map(&["name"])),
    (
        POD_KINDS,
        "{pod}.ephemeralContainers",
        ListType::Map(&["name"]),
    ),
    (POD_KINDS, "{pod}.volumes", ListType::Map(&["name"])),
    (
        POD_KINDS,
        "{pod}.imagePullSecrets",
        ListType::Map(&["name"]),
    ),
    (
        POD_KINDS,
        "{pod}.topologySpreadConstraints",
        ListType::Map(&["topologyKey", "whenUnsatisfiable"]),
    ),
    (POD_KINDS, "{pod}.hostAliases", ListType::Map(&["ip"])),
    (POD_KINDS, "{pod}.schedulingGates", ListType::Map(&["name"])),
    (POD_KINDS, "{pod}.resourceClaims", ListType::Map(&["name"])),
    (POD_KINDS, "{container}.env", ListType::Map(&["name"])),
    (
        POD_KINDS,
        "{container}.ports",
        ListType::Map(&["containerPort", "protocol"]),
    ),
    (
        POD_KINDS,
        "{container}.volumeMounts",
        ListType::Map(&["mountPath"]),
    ),
    (
        POD_KINDS,
        "{container}.volumeDevices",
        ListType::Map(&["devicePath"]),
    ),
    (
        POD_KINDS,
        "{container}.resources.claims",
        ListType::Map(&["name"]),
    ),
];

/// Key fields the schema defaults, as the server reads them from an item that leaves them out
/// (container and Service ports).
const KEY_DEFAULTS: &[(&str, &str)] = &[("protocol", "TCP")];

/// Metadata the server sets or that names the object: never part of a field set.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

/// The path element of map key `name`.
fn field(name: &str) -> String {
    format!("f:{name}")
}

/// `path` with list items as `[]`, e.g. `spec.template.spec.containers[].env`.
fn shape(path: &[String]) -> String {
    let mut s = String::new();
    for e in path {
        match e.strip_prefix("f:") {
            Some(f) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(f);
            }
            None => s.push_str("[]"),
        }
    }
    s
}

/// Whether a [`LISTS`] pattern names the list at `shape`.
fn matches(pattern: &str, shape: &str) -> bool {
    let pattern = pattern.replace("{pod}", POD_SPEC);
    match pattern.strip_prefix("{container}") {
        Some(rest) => ["containers", "initContainers", "ephemeralContainers"]
            .iter()
            .any(|c| shape == format!("{POD_SPEC}.{c}[]{rest}")),
        None => shape == pattern,
    }
}

/// `obj` without what names it and what the server sets: the part field sets and comparisons
/// cover.
fn strip(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(root) = v.as_object_mut() {
        for k in ["apiVersion", "kind", "status"] {
            root.remove(k);
        }
        if let Some(meta) = root.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in SERVER_METADATA {
                meta.remove(*k);
            }
        }
    }
    v
}

/// Fields and items one write adds, changes and removes (structured-merge-diff's `Compare`).
#[derive(Default, Debug)]
struct Comparison {
    added: BTreeSet<Path>,
    modified: BTreeSet<Path>,
    removed: BTreeSet<Path>,
}

/// The list types of one kind, and the operations that depend on them.
struct Schema<'a> {
    kind: &'a str,
}

impl Schema<'_> {
    /// How the list at `path` merges: as [`LISTS`] says, atomic otherwise.
    fn list_type(&self, path: &[String]) -> ListType {
        let shape = shape(path);
        LISTS
            .iter()
            .find(|(kinds, pattern, _)| {
                (kinds.is_empty() || kinds.contains(&self.kind)) && matches(pattern, &shape)
            })
            .map_or(ListType::Atomic, |(_, _, t)| *t)
    }

    /// The path element of `item` in a list of type `list`.
    fn element(list: ListType, item: &Value) -> Result<String, String> {
        match list {
            ListType::Atomic => Err("an atomic list has no item keys".into()),
            ListType::Set => Ok(format!("v:{item}")),
            ListType::Map(keys) => {
                let mut names = keys.to_vec();
                names.sort_unstable();
                let mut key = Map::new();
                for k in names {
                    let default = KEY_DEFAULTS
                        .iter()
                        .find(|(f, _)| *f == k)
                        .map(|(_, d)| json!(d));
                    let value = item.get(k).cloned().or(default).ok_or_else(|| {
                        format!(
                            "associative list with keys has an element that omits key field {k:?}"
                        )
                    })?;
                    key.insert(k.to_owned(), value);
                }
                Ok(format!("k:{}", Value::Object(key)))
            }
        }
    }

    /// The items of the list at `path` with their path elements, first of each key only; with
    /// `strict` a repeated key is refused, as the server refuses it in an applied body.
    fn index<'v>(
        &self,
        items: &'v [Value],
        path: &[String],
        strict: bool,
    ) -> Res<Vec<(String, &'v Value)>> {
        let list = self.list_type(path);
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let pe = Self::element(list, item).map_err(|e| {
                Error::InvalidRequest(format!(
                    "{} is invalid: .{}: element {i}: {e}",
                    self.kind,
                    shape(path)
                ))
            })?;
            if !seen.insert(pe.clone()) {
                if strict {
                    return Err(Error::InvalidRequest(format!(
                        "{} is invalid: .{}: duplicate entries for key {pe}",
                        self.kind,
                        shape(path)
                    )));
                }
                continue;
            }
            out.push((pe, item));
        }
        Ok(out)
    }

    /// The field set of an applied body (structured-merge-diff's `ToFieldSet`): leaves, atomic
    /// lists, empty maps, and every item of an associative list or set together with its fields.
    fn field_set(&self, body: &Value) -> Res<BTreeSet<Path>> {
        let mut out = BTreeSet::new();
        self.collect(&strip(body), &mut Vec::new(), &mut out)?;
        Ok(out)
    }

    /// Add the field set of `v`, found at `path`, to `out`.
    fn collect(&self, v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) -> Res<()> {
        match v {
            Value::Object(map) if !map.is_empty() => {
                for (k, child) in map {
                    path.push(field(k));
                    self.collect(child, path, out)?;
                    path.pop();
                }
            }
            // What named the object was stripped: nothing of it is owned.
            Value::Object(_) if path.as_slice() == [field("metadata")] => {}
            Value::Array(items) if self.list_type(path) != ListType::Atomic => {
                for (pe, item) in self.index(items, path, true)? {
                    path.push(pe);
                    out.insert(path.clone());
                    if item.is_object() {
                        self.collect(item, path, out)?;
                    }
                    path.pop();
                }
            }
            _ if !path.is_empty() => {
                out.insert(path.clone());
            }
            _ => {}
        }
        Ok(())
    }

    /// `applied` merged into `live` (structured-merge-diff's `Merge`): maps key by key,
    /// associative lists and sets item by item, anything else replaced. `None`: remove (an
    /// applied `null`).
    fn merge(&self, live: Option<&Value>, applied: &Value, path: &mut Path) -> Res<Option<Value>> {
        match (live, applied) {
            (_, Value::Null) => Ok(None),
            (live, Value::Object(a)) => {
                let mut out = match live {
                    Some(Value::Object(l)) => l.clone(),
                    _ => Map::new(),
                };
                for (k, av) in a {
                    path.push(field(k));
                    match self.merge(out.get(k), av, path)? {
                        Some(v) => {
                            out.insert(k.clone(), v);
                        }
                        None => {
                            out.remove(k);
                        }
                    }
                    path.pop();
                }
                Ok(Some(Value::Object(out)))
            }
            (live, Value::Array(a)) if self.list_type(path) != ListType::Atomic => {
                let live = match live {
                    Some(Value::Array(l)) => l.as_slice(),
                    _ => &[],
                };
                let merged = self.merge_list(live, a, path)?;
                Ok(Some(if merged.is_empty() {
                    applied.clone()
                } else {
                    Value::Array(merged)
                }))
            }
            _ => Ok(Some(applied.clone())),
        }
    }

    /// Merge the items of an associative list or set in the server's order: the applied order
    /// for the items it names, the live position for the others.
    fn merge_list(&self, live: &[Value], applied: &[Value], path: &mut Path) -> Res<Vec<Value>> {
        let lhs = self.index(live, path, false)?;
        let rhs = self.index(applied, path, true)?;
        let in_lhs: HashMap<&str, &Value> = lhs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let in_rhs: HashSet<&str> = rhs.iter().map(|(k, _)| k.as_str()).collect();
        let mut shared: VecDeque<&str> = rhs
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| in_lhs.contains_key(k))
            .collect();
        let mut next = shared.pop_front();
        let mut merged: HashSet<&str> = HashSet::new();
        let mut out = Vec::new();
        let (mut li, mut ri) = (0, 0);
        while li < lhs.len() || ri < rhs.len() {
            if li < lhs.len() && ri < rhs.len() {
                let pe = lhs[li].0.as_str();
                if pe == rhs[ri].0 {
                    out.push(self.merge_item(Some(lhs[li].1), rhs[ri].1, pe, path)?);
                    merged.insert(pe);
                    li += 1;
                    ri += 1;
                    next = shared.pop_front();
                    continue;
                }
                if in_rhs.contains(pe) && next.is_some_and(|n| n != pe) {
                    // Shared, but not the one this round places.
                    li += 1;
                    continue;
                }
            }
            if li < lhs.len() {
                let pe = lhs[li].0.as_str();
                if !in_rhs.contains(pe) {
                    out.push(lhs[li].1.clone());
                    li += 1;
                    continue;
                }
                if merged.contains(pe) {
                    li += 1;
                    continue;
                }
            }
            if ri < rhs.len() {
                let pe = rhs[ri].0.as_str();
                out.push(self.merge_item(in_lhs.get(pe).copied(), rhs[ri].1, pe, path)?);
                merged.insert(pe);
                ri += 1;
                if next == Some(pe) {
                    next = shared.pop_front();
                }
            }
        }
        Ok(out)
    }

    /// One item of a merged list: `applied` merged into its `live` counterpart.
    fn merge_item(
        &self,
        live: Option<&Value>,
        applied: &Value,
        pe: &str,
        path: &mut Path,
    ) -> Res<Value> {
        path.push(pe.to_owned());
        let merged = self.merge(live, applied, path)?;
        path.pop();
        Ok(merged.unwrap_or_else(|| applied.clone()))
    }

    /// What changed from `old` to `new` (structured-merge-diff's `Compare`): changed leaves and
    /// atomic lists, and every field, map and item present on one side only.
    fn compare(&self, old: &Value, new: &Value) -> Res<Comparison> {
        let mut c = Comparison::default();
        self.diff(
            Some(&strip(old)),
            Some(&strip(new)),
            &mut Vec::new(),
            &mut c,
        )?;
        Ok(c)
    }

    /// Add what changed from `old` to `new`, both found at `path`, to `c`.
    fn diff(
        &self,
        old: Option<&Value>,
        new: Option<&Value>,
        path: &mut Path,
        c: &mut Comparison,
    ) -> Res<()> {
        let empty = |v: Option<&Value>| match v {
            None | Some(Value::Null) => true,
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(_) => false,
        };
        let is = |v: Option<&Value>, f: fn(&Value) -> bool| v.is_none_or(f);
        let both_empty = empty(old) && empty(new);
        if !both_empty && is(old, Value::is_object) && is(new, Value::is_object) {
            let no = Map::new();
            let o = old.and_then(Value::as_object).unwrap_or(&no);
            let n = new.and_then(Value::as_object).unwrap_or(&no);
            let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
            for k in keys {
                path.push(field(k));
                self.diff(o.get(k), n.get(k), path, c)?;
                path.pop();
            }
        } else if !both_empty
            && self.list_type(path) != ListType::Atomic
            && is(old, Value::is_array)
            && is(new, Value::is_array)
        {
            let none = Vec::new();
            let o = self.index(old.and_then(Value::as_array).unwrap_or(&none), path, false)?;
            let n = self.index(new.and_then(Value::as_array).unwrap_or(&none), path, false)?;
            let in_old: HashMap<&str, &Value> = o.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let in_new: HashSet<&str> = n.iter().map(|(k, _)| k.as_str()).collect();
            for (pe, item) in &n {
                path.push(pe.clone());
                self.diff(in_old.get(pe.as_str()).copied(), Some(item), path, c)?;
                path.pop();
            }
            for (pe, item) in o.iter().filter(|(pe, _)| !in_new.contains(pe.as_str())) {
                path.push(pe.clone());
                self.diff(Some(item), None, path, c)?;
                path.pop();
            }
        } else {
            match (old, new) {
                (None, Some(_)) => c.added.insert(path.clone()),
                (Some(_), None) => c.removed.insert(path.clone()),
                (Some(a), Some(b)) if a != b => c.modified.insert(path.clone()),
                _ => false,
            };
            return Ok(());
        }
        if !path.is_empty() {
            if old.is_none() {
                c.added.insert(path.clone());
            } else if new.is_none() {
                c.removed.insert(path.clone());
            }
        }
        Ok(())
    }

    /// The node at `path`, if `obj` has it.
    fn node_mut<'v>(&self, obj: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
        let mut cur = obj;
        for (i, e) in path.iter().enumerate() {
            cur = match e.strip_prefix("f:") {
                Some(f) => cur.get_mut(f)?,
                None => {
                    let list = self.list_type(&path[..i]);
                    cur.as_array_mut()?
                        .iter_mut()
                        .find(|item| Self::element(list, item).as_deref() == Ok(e.as_str()))?
                }
            };
        }
        Some(cur)
    }

    /// Remove the field or item at `path` with everything under it; whether it was there.
    fn remove(&self, obj: &mut Value, path: &[String]) -> bool {
        let Some((last, parents)) = path.split_last() else {
            return false;
        };
        let list = self.list_type(parents);
        match self.node_mut(obj, parents) {
            Some(Value::Object(map)) => last
                .strip_prefix("f:")
                .is_some_and(|f| map.remove(f).is_some()),
            Some(Value::Array(items)) => {
                let before = items.len();
                items.retain(|item| Self::element(list, item).as_deref() != Ok(last.as_str()));
                items.len() != before
            }
            _ => false,
        }
    }

    /// Remove from `merged` what the applying manager owned (`last`) and no manager in `managed`
    /// (its new set included) owns any more (structured-merge-diff's prune): an item, when
    /// nobody owns the item itself; a field, when nobody owns it or anything under it — also
    /// for the fields above what it owned. `metadata` itself stays.
    fn prune(&self, merged: &mut Value, last: &BTreeSet<Path>, managed: &[Entry]) {
        let owned = |p: &Path| managed.iter().any(|e| e.fields.contains(p));
        let owned_under = |p: &Path| {
            managed
                .iter()
                .any(|e| e.fields.iter().any(|q| q.starts_with(p)))
        };
        let mut candidates: BTreeSet<(usize, Path)> = BTreeSet::new();
        for p in last {
            for n in 1..=p.len() {
                if n == p.len() || p[n - 1].starts_with("f:") {
                    candidates.insert((n, p[..n].to_vec()));
                }
            }
        }
        let mut removed: Vec<Path> = Vec::new();
        for (_, c) in candidates {
            if c == [field("metadata")] || removed.iter().any(|r| c.starts_with(r)) {
                continue;
            }
            let is_field = c.last().is_some_and(|e| e.starts_with("f:"));
            let kept = if is_field { owned_under(&c) } else { owned(&c) };
            if !kept && self.remove(merged, &c) {
                removed.push(c);
            }
        }
    }
}

/// Apply or update `patch` on object `name` of `kind` as the API server would, and store it.
fn write_through(
    store: &Store<'_>,
    ns: &str,
    name: &str,
    kind: &str,
    manager: &str,
    op: Op,
    patch: &Value,
) -> Res<Value> {
    let schema = Schema { kind };
    let existing = (store.get)()?;
    let api_version = patch
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut obj = existing.clone().unwrap_or_else(|| {
        json!({"apiVersion": api_version, "kind": kind,
               "metadata": {"name": name, "namespace": ns}})
    });
    let mut body = patch.clone();
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    let mut managed = entries(&obj);
    match op {
        Op::Apply { force } => {
            if let Some(root) = body.as_object_mut() {
                // The status subresource's: an apply to the resource leaves it alone.
                root.remove("status");
            }
            let applied = schema.field_set(&body)?;
            let mut merged = schema
                .merge(Some(&obj), &body, &mut Vec::new())?
                .unwrap_or_default();
            let last = match managed.iter_mut().find(|e| is_mine(e, manager, "Apply")) {
                Some(e) => {
                    e.api_version.clone_from(&api_version);
                    std::mem::replace(&mut e.fields, applied)
                }
                None => {
                    managed.push(Entry {
                        manager: manager.to_owned(),
                        operation: "Apply".into(),
                        subresource: String::new(),
                        api_version: api_version.clone(),
                        fields: applied,
                    });
                    BTreeSet::new()
                }
            };
            schema.prune(&mut merged, &last, &managed);
            // Conflicts: another manager owns a field this apply adds or changes.
            let change = schema.compare(&obj, &merged)?;
            let mut conflicts = Vec::new();
            for e in managed.iter_mut().filter(|e| is_other(e, manager, "Apply")) {
                let theirs: Vec<Path> = e
                    .fields
                    .iter()
                    .filter(|p| change.modified.contains(*p) || change.added.contains(*p))
                    .cloned()
                    .collect();
                for p in theirs {
                    if force {
                        e.fields.remove(&p);
                    } else {
                        conflicts.push(format!(
                            "conflict with \"{}\" using {}: {}",
                            e.manager,
                            e.api_version,
                            display(&p)
                        ));
                    }
                }
                e.fields.retain(|p| !change.removed.contains(p));
            }
            if !conflicts.is_empty() {
                let plural = if conflicts.len() == 1 { "" } else { "s" };
                return Err(Error::Conflict(format!(
                    "Apply failed with {} conflict{plural}: {}",
                    conflicts.len(),
                    conflicts.join(", ")
                )));
            }
            obj = merged;
        }
        Op::Update => {
            let before = obj.clone();
            json_patch::merge(&mut obj, &body);
            // The fields this update adds or changes move to its manager, from everyone; those
            // it removes leave everyone's sets.
            let change = schema.compare(&before, &obj)?;
            for e in managed.iter_mut().filter(|e| e.subresource.is_empty()) {
                e.fields
                    .retain(|p| !change.modified.contains(p) && !change.added.contains(p));
            }
            for e in &mut managed {
                e.fields.retain(|p| !change.removed.contains(p));
            }
            let taken = change.modified.into_iter().chain(change.added);
            match managed.iter_mut().find(|e| is_mine(e, manager, "Update")) {
                Some(e) => e.fields.extend(taken),
                None => managed.push(Entry {
                    manager: manager.to_owned(),
                    operation: "Update".into(),
                    subresource: String::new(),
                    api_version: api_version.clone(),
                    fields: taken.collect(),
                }),
            }
        }
    }
    managed.retain(|e| !e.fields.is_empty());
    if kind == "Deployment" && obj.pointer("/spec/replicas").is_none() {
        // apps/v1 defaulting (SetDefaults_Deployment).
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("replicas".into(), json!(1));
        }
    }
    if POD_KINDS.contains(&kind) {
        service_account_alias(&mut obj);
    }
    obj["metadata"]["managedFields"] = Value::Array(managed.iter().map(to_json).collect());
    let Some(existing) = existing else {
        return (store.create)(obj);
    };
    if obj == existing {
        return Ok(existing);
    }
    let outside_metadata = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
        }
        v
    };
    let bump = outside_metadata(&obj) != outside_metadata(&existing);
    (store.update)(obj, bump)
}

/// The deprecated `serviceAccount` of a pod template's spec, as the API server's core/v1
/// conversion keeps it (`Convert_v1_PodSpec_To_core_PodSpec` and back): reading a written or
/// stored object, an empty `serviceAccountName` is filled from `serviceAccount`; writing it,
/// `serviceAccount` is set to `serviceAccountName` (left out when that is empty). Neither makes
/// the alias a field of any manager. So an apply that drops a `serviceAccountName` its manager
/// alone owned removes it, and the alias, still holding the old value, puts it back.
fn service_account_alias(obj: &mut Value) {
    let Some(pod) = obj
        .pointer_mut("/spec/template/spec")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let named = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    match named(pod.get("serviceAccountName")).or_else(|| named(pod.get("serviceAccount"))) {
        Some(account) => {
            pod.insert("serviceAccountName".into(), json!(account));
            pod.insert("serviceAccount".into(), json!(account));
        }
        None => {
            pod.remove("serviceAccount");
        }
    }
}

/// Whether `e` is `manager`'s entry for `operation` on the resource itself.
fn is_mine(e: &Entry, manager: &str, operation: &str) -> bool {
    e.manager == manager && e.operation == operation && e.subresource.is_empty()
}

/// Whether `e` is another entry on the resource itself (status subresource entries are not).
fn is_other(e: &Entry, manager: &str, operation: &str) -> bool {
    !is_mine(e, manager, operation) && e.subresource.is_empty()
}

/// A path as the server's conflict message writes it:
/// `.spec.template.spec.containers[name="runtime"].image`.
fn display(path: &Path) -> String {
    path.iter()
        .map(|e| {
            if let Some(f) = e.strip_prefix("f:") {
                format!(".{f}")
            } else if let Some(k) = e.strip_prefix("k:") {
                let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let fields: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("[{}]", fields.join(","))
            } else {
                format!("[={}]", e.trim_start_matches("v:"))
            }
        })
        .collect()
}

/// The `managedFields` entries of `obj`.
fn entries(obj: &Value) -> Vec<Entry> {
    let list = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    list.iter()
        .map(|e| {
            let s = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let mut fields = BTreeSet::new();
            trie_paths(
                e.get("fieldsV1").unwrap_or(&Value::Null),
                &mut Vec::new(),
                &mut fields,
            );
            Entry {
                manager: s("manager"),
                operation: s("operation"),
                subresource: s("subresource"),
                api_version: s("apiVersion"),
                fields,
            }
        })
        .collect()
}

/// The paths of a FieldsV1 trie: a node that is empty or has `.` is itself in the set.
fn trie_paths(trie: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(map) = trie.as_object() else {
        return;
    };
    if (map.is_empty() || map.contains_key(".")) && !path.is_empty() {
        out.insert(path.clone());
    }
    for (k, child) in map.iter().filter(|(k, _)| k.as_str() != ".") {
        path.push(k.clone());
        trie_paths(child, path, out);
        path.pop();
    }
}

/// `e` as a `managedFields` entry.
fn to_json(e: &Entry) -> Value {
    let mut trie = Map::new();
    for p in &e.fields {
        let mut cur = &mut trie;
        for k in p {
            cur = cur
                .entry(k.clone())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("trie node");
        }
    }
    // A member with fields under it says so with `.`.
    for p in &e.fields {
        let mut cur = &mut trie;
        for k in p {
            cur = cur
                .get_mut(k)
                .and_then(Value::as_object_mut)
                .expect("trie node");
        }
        if !cur.is_empty() {
            cur.insert(".".into(), json!({}));
        }
    }
    let mut v = json!({
        "manager": e.manager,
        "operation": e.operation,
        "apiVersion": e.api_version,
        "fieldsType": "FieldsV1",
        "fieldsV1": Value::Object(trie),
    });
    if !e.subresource.is_empty() {
        v["subresource"] = json!(e.subresource);
    }
    v
}
