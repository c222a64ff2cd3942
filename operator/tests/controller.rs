//! The `run` glue against kube-fake-client: leader election, the kube-runtime Controller driving
//! reconciles from its initial list and from watch events (served by `common::watch`), graceful
//! shutdown that releases the Lease after draining (not ready, still up).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::harness;
use facekey_operator::controller::{Exit, RunConfig, run_with};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::json;

/// The drain delay the first test runs with (the operator's is 10 s with the webhook).
const DRAIN: Duration = Duration::from_secs(2);

/// The status code of `GET /readyz` on the operator's metrics/health server, 0 when unreachable.
async fn readyz(port: u16) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return 0;
    };
    let request = "GET /readyz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The operator's run configuration in these tests: leader `op-1` watching `common::NS`, no
/// webhook, no drain and no grace before an undecodable resource is reported.
fn run_config(metrics: &facekey_operator::metrics::Metrics) -> RunConfig {
    RunConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        operator_image: "op:test".into(),
        lease_namespace: "facekey-system".into(),
        lease_name: "facekey-operator-leader".into(),
        identity: "op-1".into(),
        lease_duration: Duration::from_secs(3),
        watch_namespace: Some(common::NS.into()),
        policy: facekey_operator::policy_floor::ClusterPolicy::permissive(),
        metrics: metrics.clone(),
        webhook: None,
        drain: Duration::ZERO,
        undecodable_grace: Duration::ZERO,
    }
}

/// Polls `ready` every 100 ms for up to a minute (three resources, leader election and the
/// reporter on a busy CI host); whether it came true.
async fn eventually<F, Fut>(ready: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(Duration::from_secs(60), ready).await
}

/// Polls `ready` every 100 ms for up to `limit`; whether it came true.
async fn within<F, Fut>(limit: Duration, mut ready: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + limit;
    loop {
        if ready().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The operator running as `run` runs it, until [`Running::stop`].
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<facekey_operator::Result<Exit>>,
}

/// Start the operator with `client` (seen through `manifests/rbac.yaml` unless the test wraps it
/// otherwise) and `config`.
fn start(client: kube::Client, config: RunConfig) -> Running {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_with(client, config, async move {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

impl Running {
    /// Ask it to stop and wait (up to 30 s) for it to end; how it ended.
    async fn stop(self) -> Exit {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("shut down in time")
            .unwrap()
            .unwrap()
    }
}

/// Waits (up to a minute) until no reconcile has run for 2 s: what follows is then reconciled
/// only if its own watch event brings it.
async fn settled(metrics: &facekey_operator::metrics::Metrics) {
    let count = || {
        metrics.reconciles.with_label_values(&["success"]).get()
            + metrics.reconciles.with_label_values(&["error"]).get()
    };
    for _ in 0..30 {
        let before = count();
        tokio::time::sleep(Duration::from_secs(2)).await;
        if count() == before {
            return;
        }
    }
    panic!("reconciles never settled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reconciles_as_leader_and_releases_the_lease_on_shutdown() {
    let h = harness(&[]).await;
    h.create(
        "fk",
        json!({"image": "ghcr.io/facekey/runtime:0.1.0", "scanGate": {"enabled": false}}),
    )
    .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = RunConfig {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        watch_namespace: None,
        drain: DRAIN,
        ..run_config(&facekey_operator::metrics::Metrics::new().unwrap())
    };
    let Running { stop, task } = start(common::rbac::enforcing(h.client.clone()), config);

    let mut created = false;
    for _ in 0..200 {
        // The status is written after the children in the same reconcile: wait for both.
        if h.deployment("fk").await.is_some() && h.get("fk").await.status.is_some() {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        created,
        "the controller reconciled the resource (children and status) from its initial list"
    );
    let leases: Api<Lease> = Api::namespaced(h.client.clone(), "facekey-system");
    let holder = leases
        .get("facekey-operator-leader")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some("op-1"));

    assert_eq!(readyz(port).await, 200);
    let stopped = std::time::Instant::now();
    stop.send(()).unwrap();
    // Draining: not ready at once, and the process (with the webhook it would serve) stays up.
    let mut not_ready = false;
    for _ in 0..20 {
        if readyz(port).await == 503 {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(not_ready, "/readyz fails as soon as the stop arrives");
    assert!(!task.is_finished(), "still up while draining");
    let exit = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("shut down in time")
        .unwrap()
        .unwrap();
    assert_eq!(exit, Exit::Signal);
    assert!(
        stopped.elapsed() >= DRAIN,
        "lived on for the drain delay after the stop"
    );
    let spec = leases
        .get("facekey-operator-leader")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(
        spec.holder_identity, None,
        "Lease released for a fast hand-over"
    );
}

/// A resource the operator cannot decode (here a `decisionPolicy` value of a newer operator, as
/// after an operator rollback; the fake validates no schema, a real server would have taken it
/// under the newer CRD) is reported on its own status, Event and metric, while every other
/// resource is reconciled. With a typed watch the one object failed the whole list and nothing
/// was reconciled. A resource whose stored status is unreadable is reconciled as if it had none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_undecodable_resource_does_not_stop_the_others() {
    use kube::api::{ApiResource, DynamicObject, PostParams};
    let h = harness(&[]).await;
    h.create(
        "fk",
        json!({"image": "ghcr.io/facekey/runtime:0.1.0", "scanGate": {"enabled": false}}),
    )
    .await;
    let raw: Api<DynamicObject> = Api::namespaced_with(
        h.client.clone(),
        common::NS,
        &ApiResource::erase::<facekey_crds::FaceKeyDeployment>(&()),
    );
    let stored = |name: &str, spec: serde_json::Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "facekey.dev/v1alpha1",
            "kind": "FaceKeyDeployment",
            "metadata": {"name": name, "namespace": common::NS},
            "spec": spec,
        }))
        .unwrap()
    };
    raw.create(
        &PostParams::default(),
        &stored(
            "newer",
            json!({"image": "ghcr.io/facekey/runtime:0.1.0",
                   "verification": {"decisionPolicy": "adaptive"}}),
        ),
    )
    .await
    .unwrap();
    raw.create(
        &PostParams::default(),
        &stored(
            "rolled-back",
            json!({"image": "ghcr.io/facekey/runtime:0.1.0", "scanGate": {"enabled": false}}),
        ),
    )
    .await
    .unwrap();
    let mut rolled_back = raw.get_status("rolled-back").await.unwrap();
    // As a newer operator might have written it (the field of that name is a string here).
    rolled_back.data["status"] =
        json!({"currentImage": {"image": "x", "digest": "sha256:00"}, "observedGeneration": 1});
    raw.replace_status("rolled-back", &PostParams::default(), &rolled_back)
        .await
        .unwrap();

    let metrics = facekey_operator::metrics::Metrics::new().unwrap();
    let config = run_config(&metrics);
    let operator = start(common::rbac::enforcing(h.client.clone()), config);

    let stalled = |obj: &DynamicObject| {
        obj.data
            .pointer("/status/conditions")
            .and_then(|c| c.as_array())
            .and_then(|c| {
                c.iter().find(|c| c["type"] == "Stalled").map(|c| {
                    (
                        c["status"].clone(),
                        c["reason"].clone(),
                        c["message"].clone(),
                    )
                })
            })
    };
    let mut seen = Vec::new();
    // Up to a minute: three resources, leader election and the reporter on a busy CI host.
    for _ in 0..600 {
        let newer = raw.get("newer").await.unwrap();
        let rolled_back_status = raw.get("rolled-back").await.ok().and_then(|o| {
            serde_json::from_value::<facekey_crds::FaceKeyDeploymentStatus>(
                o.data["status"].clone(),
            )
            .ok()
        });
        seen = vec![
            ("fk applied", h.deployment("fk").await.is_some()),
            ("fk status", h.get("fk").await.status.is_some()),
            (
                "rolled-back applied",
                h.deployment("rolled-back").await.is_some(),
            ),
            (
                "rolled-back status rewritten",
                rolled_back_status.is_some_and(|s| s.observed_generation.is_some()),
            ),
            ("newer reported", stalled(&newer).is_some()),
        ];
        if seen.iter().all(|(_, ok)| *ok) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.iter().all(|(_, ok)| *ok),
        "the readable resources were reconciled and the unreadable one reported: {seen:?}"
    );
    let newer = raw.get("newer").await.unwrap();
    let (status, reason, message) = stalled(&newer).unwrap();
    assert_eq!(status, "True");
    assert_eq!(reason, "SpecUndecodable");
    assert!(
        message
            .as_str()
            .unwrap()
            .contains("spec.verification.decisionPolicy: unknown variant `adaptive`"),
        "{message}"
    );
    assert_eq!(
        newer.data.pointer("/status/observedGeneration"),
        newer
            .metadata
            .generation
            .map(serde_json::Value::from)
            .as_ref(),
        "GitOps tools see the generation observed, and why it is not ready"
    );
    assert!(
        h.deployment("newer").await.is_none(),
        "nothing is applied for a spec the operator cannot read"
    );
    assert!(
        h.events("newer")
            .await
            .iter()
            .any(|(t, r, n)| t == "Warning" && r == "SpecUndecodable" && n.contains("adaptive")),
        "{:?}",
        h.events("newer").await
    );
    assert_eq!(metrics.undecodable.get(), 1);
    let rewritten = h.get("rolled-back").await.status.unwrap();
    assert_eq!(
        rewritten.current_image.as_deref(),
        Some("ghcr.io/facekey/runtime:0.1.0"),
        "the unreadable status was replaced by the operator's own"
    );

    operator.stop().await;
}

/// A resource the operator could not decode is reconciled once its spec is fixed, from the watch
/// event alone: its Deployment appears, its `SpecUndecodable` condition goes and the gauge falls
/// back to 0. Other resources go on being reconciled meanwhile (a new one created after the
/// start comes from a watch event too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_spec_is_reconciled_from_its_watch_event() {
    use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
    let h = harness(&[]).await;
    let raw: Api<DynamicObject> = Api::namespaced_with(
        h.client.clone(),
        common::NS,
        &ApiResource::erase::<facekey_crds::FaceKeyDeployment>(&()),
    );
    raw.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "facekey.dev/v1alpha1",
            "kind": "FaceKeyDeployment",
            "metadata": {"name": "newer", "namespace": common::NS},
            "spec": {"image": "ghcr.io/facekey/runtime:0.1.0", "scanGate": {"enabled": false},
                     "verification": {"decisionPolicy": "adaptive"}},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let metrics = facekey_operator::metrics::Metrics::new().unwrap();
    let operator = start(
        common::rbac::enforcing(h.client.clone()),
        run_config(&metrics),
    );
    let condition = |obj: &DynamicObject, kind: &str| {
        obj.data
            .pointer("/status/conditions")
            .and_then(|c| c.as_array())
            .and_then(|c| c.iter().find(|c| c["type"] == kind).cloned())
    };
    assert!(
        eventually(|| async {
            let newer = raw.get("newer").await.unwrap();
            condition(&newer, "Stalled").is_some_and(|c| c["reason"] == "SpecUndecodable")
        })
        .await,
        "the unreadable spec was reported"
    );
    assert_eq!(metrics.undecodable.get(), 1);

    // Created after the start: only a watch event brings it to the controller.
    h.create(
        "later",
        json!({"image": "ghcr.io/facekey/runtime:0.1.0", "scanGate": {"enabled": false}}),
    )
    .await;
    assert!(
        eventually(|| async { h.deployment("later").await.is_some() }).await,
        "a resource created while the operator runs is reconciled"
    );
    assert!(h.deployment("newer").await.is_none());

    raw.patch(
        "newer",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"verification": {"decisionPolicy": "strict"}}})),
    )
    .await
    .unwrap();
    assert!(
        eventually(|| async {
            let newer = raw.get("newer").await.unwrap();
            h.deployment("newer").await.is_some()
                && condition(&newer, "Stalled").is_none_or(|c| c["reason"] != "SpecUndecodable")
                && newer.data.pointer("/status/observedGeneration")
                    == newer
                        .metadata
                        .generation
                        .map(serde_json::Value::from)
                        .as_ref()
        })
        .await,
        "the fixed resource was reconciled: {:?}",
        raw.get("newer").await.unwrap().data.get("status")
    );
    assert_eq!(
        metrics.undecodable.get(),
        0,
        "no resource is left undecodable"
    );

    operator.stop().await;
}

/// A kind the operator may list but not watch (a role missing `watch` on PodDisruptionBudgets)
/// is counted in `facekey_operator_watch_errors_total` under its kind and reason, retried on
/// its own backoff, and does not stop reconciles: a resource created meanwhile is reconciled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_watch_is_counted_and_reconciles_go_on() {
    let h = harness(&[]).await;
    let metrics = facekey_operator::metrics::Metrics::new().unwrap();
    let client = common::watch::refusing_watches_of(
        common::rbac::enforcing(h.client.clone()),
        "poddisruptionbudgets",
    );
    let operator = start(client, run_config(&metrics));
    let refused = || {
        metrics
            .watch_errors
            .with_label_values(&["controller", "PodDisruptionBudget", "forbidden"])
            .get()
    };
    // Five refusals in a row: a backoff shared by every trigger (kube's Controller's own, which
    // the refused watch's errors reached before) would now hold them all for 13 s or more.
    assert!(
        eventually(|| async { refused() >= 5 }).await,
        "the refused watch was counted and retried: {}",
        refused()
    );
    h.create(
        "fk",
        json!({"image": "ghcr.io/facekey/runtime:0.1.0", "scanGate": {"enabled": false}}),
    )
    .await;
    assert!(
        within(Duration::from_secs(6), || async {
            h.deployment("fk").await.is_some() && h.get("fk").await.status.is_some()
        })
        .await,
        "a resource created while a watch is refused is reconciled at once, not after a shared backoff"
    );
    let text = metrics.encode().unwrap();
    assert!(
        text.contains(
            "facekey_operator_watch_errors_total{component=\"controller\",kind=\"PodDisruptionBudget\",reason=\"forbidden\"}"
        ),
        "{text}"
    );
    assert!(
        !text.contains("kind=\"FaceKeyDeployment\""),
        "only the refused kind fails"
    );

    operator.stop().await;
}

/// Owned objects changed by hand are put back from their watch events: an HPA's `maxReplicas`
/// edited by another manager (a real API server gives HPAs no generation before 1.37, and the
/// harness strips it as one does; the generation-based filter missed the edit) and a deleted
/// PDB (kube's change filter dropped deletions). Before, both waited for the 5-minute
/// periodic reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edited_hpa_and_a_deleted_pdb_are_put_back() {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use kube::api::{DeleteParams, Patch, PatchParams};
    let h = harness(&[]).await;
    h.create(
        "fk",
        json!({"image": "ghcr.io/facekey/runtime:0.1.0", "scanGate": {"enabled": false},
               "autoscaling": {"minReplicas": 2, "maxReplicas": 6,
                               "targetCPUUtilizationPercentage": 75}}),
    )
    .await;
    let metrics = facekey_operator::metrics::Metrics::new().unwrap();
    let operator = start(
        common::rbac::enforcing(h.client.clone()),
        run_config(&metrics),
    );
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(h.client.clone(), common::NS);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(h.client.clone(), common::NS);
    let max_replicas = || async {
        hpas.get_opt("fk")
            .await
            .unwrap()
            .and_then(|hpa| hpa.spec)
            .map(|spec| spec.max_replicas)
    };
    assert!(
        eventually(|| async {
            max_replicas().await == Some(6) && pdbs.get_opt("fk").await.unwrap().is_some()
        })
        .await,
        "the HPA and the PDB were created"
    );
    let hpa = hpas.get("fk").await.unwrap();
    assert_eq!(
        hpa.metadata.generation, None,
        "as a real API server serves HPAs"
    );
    // Rolled out: the periodic reconcile is 5 minutes away, only watch events bring one sooner.
    h.mark_deployment_ready("fk").await;
    assert!(
        eventually(|| async {
            let fkd = h.get("fk").await;
            fkd.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .await,
        "the resource became Ready"
    );
    // Nothing changed, nothing reconciled: no write of the operator's own comes back as an
    // event (the fake's no-op applies sent one a second, which hid this test's subject).
    let reconciles = || metrics.reconciles.with_label_values(&["success"]).get();
    let before = reconciles();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(reconciles(), before, "no reconcile loop while idle");

    hpas.patch(
        "fk",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"maxReplicas": 50}})),
    )
    .await
    .unwrap();
    assert_eq!(max_replicas().await, Some(50));
    assert!(
        eventually(|| async { max_replicas().await == Some(6) }).await,
        "the hand edit was put back: {:?}",
        max_replicas().await
    );

    // Quiet again (putting the HPA back reconciled once more): only the deletion's own event
    // can bring the PDB back within the minute.
    settled(&metrics).await;
    pdbs.delete("fk", &DeleteParams::default()).await.unwrap();
    assert!(
        eventually(|| async { pdbs.get_opt("fk").await.unwrap().is_some() }).await,
        "the deleted PDB was recreated"
    );

    operator.stop().await;
}

/// The per-resource series `facekey_operator_blocked_rollouts_total{namespace,name}` goes with
/// its resource: at once from the watch's deletion event, and, for one deleted while no watch
/// saw it (here: while the operator was stopped, as a relist after a broken watch misses a
/// deletion too; its children went with it, so no child's event asks for it either), at the
/// next sweep of the cache (every 15 s). The metrics are shared by both runs, as one process's
/// are across relists. Before, every deleted resource left its series on `/metrics` for the
/// life of the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_resources_metric_series_go_with_it() {
    use kube::api::DeleteParams;
    let h = harness(&[]).await;
    for name in ["fk", "other", "third"] {
        h.create(
            name,
            json!({"image": "ghcr.io/facekey/runtime:0.1.0", "scanGate": {"enabled": false}}),
        )
        .await;
    }
    let metrics = facekey_operator::metrics::Metrics::new().unwrap();
    let series = |name: &str| {
        let label = format!("name=\"{name}\"");
        metrics.encode().unwrap().lines().any(|l| {
            l.starts_with("facekey_operator_blocked_rollouts_total{") && l.contains(&label)
        })
    };
    let operator = start(
        common::rbac::enforcing(h.client.clone()),
        run_config(&metrics),
    );
    assert!(
        eventually(|| async { series("fk") && series("other") && series("third") }).await,
        "each resource's series exists from its first reconcile"
    );
    h.fkds()
        .delete("fk", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        eventually(|| async { !series("fk") }).await,
        "the deleted resource's series is gone"
    );
    assert!(series("other") && series("third"), "the others' stay");
    operator.stop().await;

    h.fkds()
        .delete("other", &DeleteParams::default())
        .await
        .unwrap();
    let operator = start(
        common::rbac::enforcing(h.client.clone()),
        run_config(&metrics),
    );
    assert!(
        eventually(|| async { !series("other") }).await,
        "a resource deleted unseen loses its series at the next sweep"
    );
    assert!(series("third"), "the remaining resource's series stays");
    operator.stop().await;
}

/// The gauges recomputed from the controller's cache (`facekey_operator_resource_degraded`
/// here) are set once the cache has its first list. Their task waited on the cache alone with
/// kube's `wait_until_ready`, which wakes only the last of several waiters: the Controller
/// waited after it, so the task never started and the gauges (and the alerts on them) never
/// showed anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gauges_from_the_cache_are_set() {
    let h = harness(&[]).await;
    // Autoscaling with an embedded store: refused by validate.rs (the CEL rule's twin).
    h.create(
        "bad",
        json!({"image": "ghcr.io/facekey/runtime:0.1.0", "scanGate": {"enabled": false},
               "store": {"embedded": {"pvc": {"size": "1Gi"}}},
               "autoscaling": {"minReplicas": 1, "maxReplicas": 3,
                               "targetCPUUtilizationPercentage": 70}}),
    )
    .await;
    let metrics = facekey_operator::metrics::Metrics::new().unwrap();
    let operator = start(
        common::rbac::enforcing(h.client.clone()),
        run_config(&metrics),
    );
    assert!(
        eventually(|| async {
            metrics
                .resources_degraded
                .with_label_values(&[common::NS, "bad", "InvalidSpec"])
                .get()
                == 1
        })
        .await,
        "{}",
        metrics.encode().unwrap()
    );
    operator.stop().await;
}

/// A changed spoof model in the ConfigMap the runtime pods mount rolls them from the
/// ConfigMap's own watch event: the ConfigMap is the user's (no label or owner reference of the
/// operator's), and without a watch on it the change waited for the 5-minute periodic reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_mounted_config_map_is_reconciled_from_its_watch_event() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Patch, PatchParams, PostParams};
    let h = harness(&[]).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(h.client.clone(), common::NS);
    config_maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "minifasnet", "namespace": common::NS},
                "data": {"model.onnx": "v1"},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    h.create(
        "fk",
        json!({"image": "ghcr.io/facekey/runtime:0.1.0", "scanGate": {"enabled": false},
               "models": {"spoof": {"configMap": "minifasnet"}}}),
    )
    .await;
    let metrics = facekey_operator::metrics::Metrics::new().unwrap();
    let operator = start(
        common::rbac::enforcing(h.client.clone()),
        run_config(&metrics),
    );
    let hash = || async {
        h.deployment("fk").await.and_then(|d| {
            d.spec?
                .template
                .metadata?
                .annotations?
                .get("facekey.dev/config-hash")
                .cloned()
        })
    };
    assert!(
        eventually(|| async { hash().await.is_some() }).await,
        "the Deployment was created"
    );
    // Rolled out: the periodic reconcile is 5 minutes away, only watch events bring one sooner.
    h.mark_deployment_ready("fk").await;
    settled(&metrics).await;
    let before = hash().await;

    config_maps
        .patch(
            "minifasnet",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"model.onnx": "v2"}})),
        )
        .await
        .unwrap();
    assert!(
        within(Duration::from_secs(20), || async { hash().await != before }).await,
        "the new model rolled the pods"
    );
    operator.stop().await;
}
