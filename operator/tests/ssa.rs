//! Server-side apply field ownership as a real API server applies it (the harness in
//! `common/ssa.rs`), and the hand-over of the runtime Deployment's `spec.replicas` to the
//! HorizontalPodAutoscaler without a capacity dip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::ssa::{self, HPA_MANAGER, owners, scale_as_hpa};
use facekey_operator::FIELD_MANAGER;
use facekey_operator::apply::HANDOVER_FIELD_MANAGER;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

const IMG1: &str = "ghcr.io/facekey/runtime:0.1.0";

fn deployment(replicas: Option<i32>) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"a": "1", "b": "2"}},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "x"}]}}},
    });
    if let Some(n) = replicas {
        d["spec"]["replicas"] = json!(n);
    }
    d
}

async fn apply(h: &common::Harness, manager: &str, force: bool, body: &Value) -> Deployment {
    let mut params = PatchParams::apply(manager);
    params.force = force;
    h.api::<Deployment>()
        .patch("web", &params, &Patch::Apply(body))
        .await
        .unwrap()
}

async fn raw(h: &common::Harness) -> Value {
    serde_json::to_value(h.deployment("web").await.unwrap()).unwrap()
}

/// The rule the old operator ran into: a field dropped by its sole manager is removed, and
/// apps/v1 defaults `replicas` to 1.
#[tokio::test]
async fn harness_removes_fields_a_sole_manager_drops_and_defaults_replicas() {
    let (h, _) = ssa::harness(&[]).await;
    let d = apply(&h, "op", true, &deployment(Some(4))).await;
    assert_eq!(d.spec.unwrap().replicas, Some(4));
    let generation = d.metadata.generation;

    // The same apply again changes nothing: no write, no new generation.
    let d = apply(&h, "op", true, &deployment(Some(4))).await;
    assert_eq!(d.metadata.generation, generation);

    // Drop a label and replicas: both go, and replicas is defaulted.
    let mut body = deployment(None);
    body["metadata"]["labels"] = json!({"a": "1"});
    let d = apply(&h, "op", true, &body).await;
    assert_eq!(d.spec.unwrap().replicas, Some(1), "removed, then defaulted");
    assert_eq!(d.metadata.labels.unwrap().get("b"), None);
}

#[tokio::test]
async fn harness_keeps_fields_another_manager_owns_and_detects_conflicts() {
    let (h, _) = ssa::harness(&[]).await;
    apply(&h, "op", true, &deployment(Some(4))).await;
    // The HPA controller scales through /scale: it now owns replicas.
    scale_as_hpa(&h, "web", 6).await;
    assert_eq!(owners(&raw(&h).await, &["spec", "replicas"]), [HPA_MANAGER]);
    let d = apply(&h, "op", true, &deployment(None)).await;
    assert_eq!(d.spec.unwrap().replicas, Some(6), "kept: the HPA owns it");

    // Same value: shared, no conflict. Different value without force: 409.
    let only_replicas = |n: i32| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": n}})
    };
    apply(&h, "other", false, &only_replicas(6)).await;
    let mut owned = owners(&raw(&h).await, &["spec", "replicas"]);
    owned.sort();
    assert_eq!(owned, [HPA_MANAGER, "other"]);
    let err = h
        .api::<Deployment>()
        .patch(
            "web",
            &PatchParams::apply("third"),
            &Patch::Apply(&only_replicas(2)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err}"
    );
    // Forced: the field moves to the forcing manager alone.
    apply(&h, "third", true, &only_replicas(2)).await;
    assert_eq!(owners(&raw(&h).await, &["spec", "replicas"]), ["third"]);
}

/// Enabling autoscaling on a resource running 4 pods: the live count is handed over before the
/// operator stops applying it, so the Deployment never drops to 1; the HPA then owns it; turning
/// autoscaling off takes it back.
#[tokio::test]
async fn enabling_autoscaling_hands_replicas_over_without_a_dip() {
    let (h, log) = ssa::harness(&[]).await;
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 4, "scanGate": {"enabled": false}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    h.mark_deployment_ready("fk").await;
    h.reconcile("fk").await.unwrap();
    let live = raw_named(&h, "fk").await;
    assert_eq!(owners(&live, &["spec", "replicas"]), [FIELD_MANAGER]);

    log.clear();
    h.fkds()
        .patch(
            "fk",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": null, "autoscaling": {
                "minReplicas": 2, "maxReplicas": 8, "targetCPUUtilizationPercentage": 70}}})),
        )
        .await
        .unwrap();
    h.reconcile("fk").await.unwrap();

    // The applied bodies, in order: the hand-over (live count, its own manager, not forced),
    // then the operator's Deployment without replicas.
    let writes = log.of("Deployment");
    assert_eq!(writes.len(), 2, "{writes:#?}");
    assert_eq!(writes[0].manager, HANDOVER_FIELD_MANAGER);
    assert!(!writes[0].force);
    assert_eq!(writes[0].body["spec"], json!({"replicas": 4}));
    assert_eq!(writes[1].manager, FIELD_MANAGER);
    assert!(writes[1].body.pointer("/spec/replicas").is_none());
    let live = raw_named(&h, "fk").await;
    assert_eq!(live["spec"]["replicas"], 4, "no dip to 1");
    assert_eq!(
        owners(&live, &["spec", "replicas"]),
        [HANDOVER_FIELD_MANAGER]
    );

    // The HPA scales; the hand-over manager loses the field; no second hand-over.
    scale_as_hpa(&h, "fk", 6).await;
    log.clear();
    h.reconcile("fk").await.unwrap();
    let writes = log.of("Deployment");
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_eq!(writes[0].manager, FIELD_MANAGER);
    let live = raw_named(&h, "fk").await;
    assert_eq!(live["spec"]["replicas"], 6);
    assert_eq!(owners(&live, &["spec", "replicas"]), [HPA_MANAGER]);

    // Autoscaling off with replicas 3: the operator's forced apply takes the field back.
    h.fkds()
        .patch(
            "fk",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3, "autoscaling": null}})),
        )
        .await
        .unwrap();
    h.reconcile("fk").await.unwrap();
    let live = raw_named(&h, "fk").await;
    assert_eq!(live["spec"]["replicas"], 3);
    assert_eq!(owners(&live, &["spec", "replicas"]), [FIELD_MANAGER]);
}

/// What the operator did before the hand-over (drop `replicas` from its apply) dips to one pod
/// under the harness: proof that the harness would have caught the bug.
#[tokio::test]
async fn dropping_replicas_without_a_hand_over_dips_to_one_pod() {
    let (h, _) = ssa::harness(&[]).await;
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 4, "scanGate": {"enabled": false}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    let mut body = raw_named(&h, "fk").await;
    for k in [
        "managedFields",
        "resourceVersion",
        "uid",
        "generation",
        "creationTimestamp",
    ] {
        body["metadata"].as_object_mut().unwrap().remove(k);
    }
    body.as_object_mut().unwrap().remove("status");
    body["spec"].as_object_mut().unwrap().remove("replicas");
    let d = h
        .api::<Deployment>()
        .patch(
            "fk",
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(1));
}

async fn raw_named(h: &common::Harness, name: &str) -> Value {
    serde_json::to_value(h.deployment(name).await.unwrap()).unwrap()
}
