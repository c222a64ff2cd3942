//! The controller's watch triggers replayed over kube-fake-client, which serves no watch streams,
//! to count what one change costs: API calls by verb and resource, and reconciles until quiet.
//!
//! After each reconcile the objects it (or a test playing another controller) changed are diffed
//! against a snapshot the way a real API server reports them: a write that changes nothing emits no
//! watch event (the fake bumps `resourceVersion` on every write, so content is compared without the
//! server-managed metadata). A change queues a follow-up reconcile when the controller would have
//! seen it: any change of an owned Deployment, Service, ConfigMap or Job; for the
//! FaceKeyDeployment itself and an owned HPA or PDB, a change of the controller's own predicate
//! [`facekey_operator::controller::spec_or_ownership`] (generation, labels, owner references,
//! deletion). All events of one reconcile fall inside the debounce window, so they queue one
//! reconcile, as the controller's debounce would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use facekey_crds::FaceKeyDeployment;
use facekey_operator::controller::spec_or_ownership;
use facekey_operator::desired::ChildKind;
use facekey_operator::reconcile;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Client};
use serde_json::Value;

use facekey_operator::metrics::Metrics;
use facekey_operator::policy_floor::ClusterPolicy;
use facekey_operator::reconcile::Context;

use super::{Harness, NS};

/// Every API request a client sent, as `VERB resource[/subresource]` (LIST for a collection GET).
#[derive(Clone, Default)]
pub struct CallLog(Arc<Mutex<Vec<String>>>);

impl CallLog {
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Name one request by verb and resource: `/apis/apps/v1/namespaces/team/deployments/x` with
/// PATCH is `PATCH deployments`; a GET of a collection is `LIST`.
pub fn classify(method: &http::Method, path: &str) -> String {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    // Skip the prefix: api/v1 or apis/<group>/<version>.
    let rest = match segs.first() {
        Some(&"api") => &segs[2.min(segs.len())..],
        _ => &segs[3.min(segs.len())..],
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, named, sub) = match rest {
        [r] => (*r, false, None),
        [r, _name] => (*r, true, None),
        [r, _name, sub, ..] => (*r, true, Some(*sub)),
        [] => ("?", false, None),
    };
    let verb = if method == http::Method::GET && !named {
        "LIST".to_owned()
    } else {
        method.to_string()
    };
    match sub {
        Some(s) => format!("{verb} {resource}/{s}"),
        None => format!("{verb} {resource}"),
    }
}

/// A client that records every request in `log`, then sends it through `inner`.
pub fn counting(inner: Client, log: CallLog) -> Client {
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        log.0
            .lock()
            .unwrap()
            .push(classify(req.method(), req.uri().path()));
        async move { inner.send(req).await }
    });
    Client::new(svc, NS)
}

/// What a watch on one kind reports.
#[derive(Clone, Copy, PartialEq)]
enum Watched {
    /// Every change queues a reconcile.
    All,
    /// Only what the controller's predicate hashes (spec_or_ownership).
    SpecOrOwnership,
    /// Not watched by the controller.
    No,
}

fn kinds() -> Vec<(ApiResource, Watched)> {
    let mut out = vec![
        (
            ApiResource::erase::<FaceKeyDeployment>(&()),
            Watched::SpecOrOwnership,
        ),
        (
            ApiResource::erase::<k8s_openapi::api::batch::v1::Job>(&()),
            Watched::All,
        ),
        (
            ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
            Watched::No,
        ),
    ];
    for k in ChildKind::ALL {
        let w = match k {
            ChildKind::Deployment | ChildKind::Service | ChildKind::ConfigMap => Watched::All,
            ChildKind::HorizontalPodAutoscaler | ChildKind::PodDisruptionBudget => {
                Watched::SpecOrOwnership
            }
            _ => Watched::No,
        };
        out.push((k.api_resource(), w));
    }
    out
}

/// Object content as watch events would distinguish it: without the metadata the fake rewrites on
/// every write; for predicate-filtered kinds, the controller's own predicate value.
fn fingerprint(obj: &DynamicObject, watched: Watched) -> String {
    if watched == Watched::SpecOrOwnership {
        return format!("{:?}", spec_or_ownership(obj));
    }
    let mut v = serde_json::to_value(obj).unwrap();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in ["resourceVersion", "generation", "managedFields"] {
            meta.remove(k);
        }
    }
    v.to_string()
}

type Snapshot = BTreeMap<(String, String), (String, Watched)>;

async fn snapshot(client: &Client) -> Snapshot {
    let mut out = Snapshot::new();
    for (ar, watched) in kinds() {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &ar);
        let Ok(list) = api.list(&ListParams::default()).await else {
            continue;
        };
        for o in list.items {
            let name = o.metadata.name.clone().unwrap_or_default();
            out.insert((ar.kind.clone(), name), (fingerprint(&o, watched), watched));
        }
    }
    out
}

/// Kinds whose change between two snapshots the controller would have been told about.
fn triggers(before: &Snapshot, after: &Snapshot) -> BTreeSet<String> {
    let keys: BTreeSet<_> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (b, a) = (before.get(k), after.get(k));
            let watched = a.or(b).map(|x| x.1).unwrap_or(Watched::No);
            let changed = b.map(|x| &x.0) != a.map(|x| &x.0);
            (changed && watched != Watched::No).then(|| k.0.clone())
        })
        .collect()
}

/// What one change cost until the controller went quiet.
#[derive(Debug, Default)]
pub struct Cost {
    pub reconciles: usize,
    /// Calls by `VERB resource`, summed over the reconciles.
    pub calls: BTreeMap<String, usize>,
    /// Whether it settled within the round limit (false: a reconcile keeps triggering itself).
    pub settled: bool,
    /// Per reconcile, the kinds whose change queued the next one.
    pub causes: Vec<BTreeSet<String>>,
}

impl Cost {
    pub fn total(&self) -> usize {
        self.calls.values().sum()
    }
    /// Write requests (everything but GET and LIST); a server-side apply that changes nothing
    /// is one, though the server stores nothing and tells no watcher.
    pub fn writes(&self) -> usize {
        self.calls
            .iter()
            .filter(|(k, _)| !k.starts_with("GET ") && !k.starts_with("LIST "))
            .map(|(_, n)| n)
            .sum()
    }
    pub fn line(&self) -> String {
        let calls: Vec<String> = self
            .calls
            .iter()
            .map(|(k, n)| format!("{n}× {k}"))
            .collect();
        format!(
            "{} reconcile(s), {} API calls ({} writes){}: {}",
            self.reconciles,
            self.total(),
            self.writes(),
            if self.settled { "" } else { ", NOT SETTLED" },
            calls.join(", ")
        )
    }
}

/// Replays changes against one harness through one counting client and one reconciler context
/// (so caches live across changes, as in the running operator).
pub struct Replayer<'h> {
    h: &'h Harness,
    name: String,
    log: CallLog,
    ctx: Arc<Context>,
    /// More reconciles than this for one change counts as not settling.
    limit: usize,
}

impl<'h> Replayer<'h> {
    pub fn new(h: &'h Harness, name: &str, limit: usize) -> Self {
        let log = CallLog::default();
        let client = counting(super::rbac::enforcing(h.client.clone()), log.clone());
        // As in production: installed CRDs cached for a minute, not re-read per reconcile.
        let clock = h.clock.clone();
        let ctx = Arc::new(
            Context::new(client, Metrics::new().unwrap(), "op".into(), None)
                .with_clock(Arc::new(move || clock.now()))
                .with_policy(ClusterPolicy::permissive()),
        );
        Self {
            h,
            name: name.to_owned(),
            log,
            ctx,
            limit,
        }
    }

    /// A periodic requeue: one reconcile with nothing changed, then whatever it queues.
    pub async fn requeue(&self) -> Cost {
        self.replay(BTreeSet::from(["requeue".to_owned()])).await
    }

    /// `change` (a test acting as a user or another controller) runs on the harness's own
    /// client; if what it changed would queue a reconcile, reconcile through the counting
    /// client, and again while a reconcile's own writes queue another.
    pub async fn change<F, Fut>(&self, change: F) -> Cost
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let before = snapshot(&self.h.client).await;
        change().await;
        let pending = triggers(&before, &snapshot(&self.h.client).await);
        self.replay(pending).await
    }

    async fn replay(&self, mut pending: BTreeSet<String>) -> Cost {
        let mut cost = Cost::default();
        while !pending.is_empty() {
            if cost.reconciles == self.limit {
                return cost;
            }
            cost.causes.push(pending);
            let before = snapshot(&self.h.client).await;
            let fkd = self.h.get(&self.name).await;
            self.log.take();
            reconcile::reconcile(Arc::new(fkd), self.ctx.clone())
                .await
                .expect("reconcile");
            for call in self.log.take() {
                *cost.calls.entry(call).or_default() += 1;
            }
            cost.reconciles += 1;
            pending = triggers(&before, &snapshot(&self.h.client).await);
        }
        cost.settled = true;
        cost
    }
}

/// The resource the standard changes run on: autoscaled, monitored, alerting, with a
/// NetworkPolicy and sidecars allowed (so a PodMonitor); scan gate off (the gate's own calls are
/// tests/scan_state.rs's subject).
pub fn sample_spec() -> Value {
    serde_json::json!({
        "image": "ghcr.io/facekey/runtime:0.1.0",
        "autoscaling": {"minReplicas": 2, "maxReplicas": 6, "targetCPUUtilizationPercentage": 70},
        "models": {"thresholds": {"auth": 0.77, "spoof": 0.5, "match": 0.6}},
        "scanGate": {"enabled": false},
        "monitoring": {"serviceMonitor": {"interval": "30s"}, "rules": {"p99LatencyMs": 500}},
        "alerting": {"email": {"to": "security@example.com", "from": "facekey@example.com",
                               "smarthost": "smtp.example.com:587",
                               "authSecretRef": {"name": "smtp", "key": "password"}}},
        "networkPolicy": {"apiFrom": [{"podSelector": {"matchLabels": {"app": "door"}}}]},
        "sidecar": {},
    })
}

/// What each of the usual changes in a resource's life costs, in order, on one harness with the
/// monitoring CRDs installed: (what happened, its cost).
pub async fn standard_changes(limit: usize) -> Vec<(&'static str, Cost)> {
    use facekey_operator::desired::OptionalCrd;
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    use kube::api::{Patch, PatchParams};

    const NAME: &str = "fk";
    let (h, _) = super::ssa::harness(&[
        OptionalCrd::ServiceMonitor,
        OptionalCrd::PodMonitor,
        OptionalCrd::PrometheusRule,
        OptionalCrd::AlertmanagerConfig,
    ])
    .await;
    let r = Replayer::new(&h, NAME, limit);
    let mut out = Vec::new();
    let cost = r
        .change(|| async {
            h.create(NAME, sample_spec()).await;
        })
        .await;
    out.push(("resource created", cost));
    let cost = r.change(|| h.mark_deployment_ready(NAME)).await;
    out.push(("Deployment rolled out (its status written)", cost));
    out.push(("periodic requeue, nothing changed", r.requeue().await));
    let cost = r
        .change(|| async {
            h.api::<HorizontalPodAutoscaler>()
                .patch_status(
                    NAME,
                    &PatchParams::default(),
                    &Patch::Merge(
                        serde_json::json!({"status": {"currentReplicas": 3, "desiredReplicas": 3}}),
                    ),
                )
                .await
                .unwrap();
        })
        .await;
    out.push(("HPA status written (every metrics sync)", cost));
    let cost = r.change(|| super::ssa::scale_as_hpa(&h, NAME, 4)).await;
    out.push(("HPA scales the Deployment to 4", cost));
    let replicas = h.deployment(NAME).await.unwrap().spec.unwrap().replicas;
    assert_eq!(
        replicas,
        Some(4),
        "the operator fought the HPA over replicas"
    );
    let cost = r
        .change(|| {
            h.patch_spec(
                NAME,
                serde_json::json!({"models": {"thresholds": {"auth": 0.8}}}),
            )
        })
        .await;
    out.push(("spec change: a threshold", cost));
    out
}
