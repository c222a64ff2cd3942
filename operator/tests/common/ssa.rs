//! Server-side apply with a real API server's field-ownership rules, for the fields that matter
//! here, in front of kube-fake-client (which merges an apply like a JSON merge patch and keeps
//! every field a manager stops applying).
//!
//! Rules modelled (from the Kubernetes server-side-apply documentation):
//! - each manager's applied field set is recorded in `metadata.managedFields` (FieldsV1 trie:
//!   `f:<key>` per map key, lists owned whole as atomic leaves — a simplification: the server
//!   treats e.g. `containers` as a list keyed by name);
//! - a field a manager applied before and leaves out of its next apply is **removed** when no
//!   other manager owns it (kept when another one does);
//! - applying a value that differs from one another manager owns is a conflict (409) unless
//!   forced, when ownership moves; applying the same value shares ownership;
//! - an update (merge patch with a field manager, e.g. the HPA controller writing
//!   `spec.replicas` through `/scale`) takes ownership of the fields it changes, without conflicts;
//! - apps/v1 defaulting: a Deployment without `spec.replicas` gets 1;
//! - `metadata.generation` moves only when something outside `metadata` changed, and an apply
//!   that changes nothing writes nothing.
//!
//! Every apply and update is recorded ([`Log`]) so tests can check the bodies the operator sent.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use std::collections::BTreeSet;
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

/// Managers owning `path` (e.g. `["spec", "replicas"]`) of `obj`, outside the status subresource.
pub fn owners(obj: &Value, path: &[&str]) -> Vec<String> {
    let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
    entries(obj)
        .iter()
        .filter(|e| e.subresource.is_empty() && e.fields.iter().any(|p| related(p, &path)))
        .map(|e| e.manager.clone())
        .collect()
}

fn funcs(fail: Arc<AtomicBool>, log: Log) -> interceptor::Funcs {
    interceptor::Funcs::new().patch(move |ctx| {
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

fn write_through(
    store: &Store<'_>,
    ns: &str,
    name: &str,
    kind: &str,
    manager: &str,
    op: Op,
    patch: &Value,
) -> Res<Value> {
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
    let mut managed = entries(&obj);
    let applied = leaves(patch);
    match op {
        Op::Apply { force } => {
            // Conflicts: another manager owns a field this apply sets to a different value.
            let mut conflicts = Vec::new();
            for e in managed.iter_mut().filter(|e| is_other(e, manager, "Apply")) {
                let theirs: Vec<Path> = e
                    .fields
                    .iter()
                    .filter(|p| applied.iter().any(|a| related(a, p)))
                    .cloned()
                    .collect();
                for p in theirs {
                    let differs = applied
                        .iter()
                        .filter(|a| related(a, &p))
                        .any(|a| value_at(&obj, a) != value_at(patch, a));
                    if !differs {
                        continue; // same value: shared ownership
                    }
                    if force {
                        e.fields.remove(&p);
                    } else {
                        conflicts.push(format!(
                            "conflict with \"{}\": .{}",
                            e.manager,
                            p.join(".")
                        ));
                    }
                }
            }
            if !conflicts.is_empty() {
                return Err(Error::Conflict(format!(
                    "Apply failed with {} conflict(s): {}",
                    conflicts.len(),
                    conflicts.join(", ")
                )));
            }
            // Fields this manager applied before and leaves out now: removed unless someone
            // else owns them.
            let before: BTreeSet<Path> = managed
                .iter()
                .find(|e| is_mine(e, manager, "Apply"))
                .map(|e| e.fields.clone())
                .unwrap_or_default();
            for dropped in before
                .iter()
                .filter(|p| !applied.iter().any(|a| related(a, p)))
            {
                let kept = managed
                    .iter()
                    .filter(|e| !is_mine(e, manager, "Apply") && e.subresource.is_empty())
                    .any(|e| e.fields.iter().any(|p| related(p, dropped)));
                if !kept {
                    remove_at(&mut obj, dropped);
                }
            }
            managed.retain(|e| !is_mine(e, manager, "Apply"));
            managed.push(Entry {
                manager: manager.to_owned(),
                operation: "Apply".into(),
                subresource: String::new(),
                api_version: api_version.clone(),
                fields: applied,
            });
        }
        Op::Update => {
            // The fields this update changes move to its manager, from everyone.
            let changed: BTreeSet<Path> = applied
                .into_iter()
                .filter(|p| value_at(&obj, p) != value_at(patch, p))
                .collect();
            for e in managed.iter_mut().filter(|e| e.subresource.is_empty()) {
                e.fields.retain(|p| !changed.iter().any(|c| related(c, p)));
            }
            match managed.iter_mut().find(|e| is_mine(e, manager, "Update")) {
                Some(e) => e.fields.extend(changed),
                None => managed.push(Entry {
                    manager: manager.to_owned(),
                    operation: "Update".into(),
                    subresource: String::new(),
                    api_version: api_version.clone(),
                    fields: changed,
                }),
            }
        }
    }
    managed.retain(|e| !e.fields.is_empty());
    let mut body = patch.clone();
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    json_patch::merge(&mut obj, &body);
    if kind == "Deployment" && obj.pointer("/spec/replicas").is_none() {
        // apps/v1 defaulting (SetDefaults_Deployment).
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("replicas".into(), json!(1));
        }
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

fn is_mine(e: &Entry, manager: &str, operation: &str) -> bool {
    e.manager == manager && e.operation == operation && e.subresource.is_empty()
}

fn is_other(e: &Entry, manager: &str, operation: &str) -> bool {
    !is_mine(e, manager, operation) && e.subresource.is_empty()
}

/// One path is the other or an ancestor of it.
fn related(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Leaf paths of an applied body (lists and scalars are leaves), without the identifying and
/// server-set fields.
fn leaves(body: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
        match v.as_object() {
            Some(map) if !map.is_empty() => {
                for (k, child) in map {
                    let skip = match path.as_slice() {
                        [] => matches!(k.as_str(), "apiVersion" | "kind" | "status"),
                        [m] if m == "metadata" => matches!(
                            k.as_str(),
                            "name"
                                | "namespace"
                                | "uid"
                                | "resourceVersion"
                                | "generation"
                                | "creationTimestamp"
                                | "managedFields"
                        ),
                        _ => false,
                    };
                    if !skip {
                        path.push(k.clone());
                        walk(child, path, out);
                        path.pop();
                    }
                }
            }
            _ if !path.is_empty() => {
                out.insert(path.clone());
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(body, &mut Vec::new(), &mut out);
    out
}

fn value_at<'v>(v: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

/// Remove `path`, then the maps it leaves empty.
fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = &mut *obj;
    for k in parents {
        match cur.get_mut(k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(map) = cur.as_object_mut() {
        map.remove(last);
        if map.is_empty() && !parents.is_empty() {
            remove_at(obj, parents);
        }
    }
}

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

fn trie_paths(trie: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(map) = trie.as_object() else {
        return;
    };
    if map.is_empty() {
        if !path.is_empty() {
            out.insert(path.clone());
        }
        return;
    }
    for (k, child) in map {
        let Some(key) = k.strip_prefix("f:") else {
            continue;
        };
        path.push(key.to_owned());
        trie_paths(child, path, out);
        path.pop();
    }
}

fn to_json(e: &Entry) -> Value {
    let mut trie = Map::new();
    for p in &e.fields {
        let mut cur = &mut trie;
        for k in p {
            cur = cur
                .entry(format!("f:{k}"))
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("trie node");
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
