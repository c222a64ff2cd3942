//! An object with a child's name that this FaceKeyDeployment does not own is never taken over:
//! condition `Conflict` (ObjectNotOwned), a Warning Event, no apply to it; the rest is applied.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{NS, cond, cond_message, ssa};
use facekey_operator::FIELD_MANAGER;
use facekey_operator::reconcile::{STEADY_REQUEUE, error_policy};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use serde_json::json;

const IMG1: &str = "ghcr.io/facekey/runtime:0.1.0";

fn foreign_service() -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "fk", "namespace": NS, "labels": {"team": "payments"}},
        "spec": {"selector": {"app": "payments"}, "ports": [{"port": 80}]},
    }))
    .unwrap()
}

#[tokio::test]
async fn a_foreign_service_is_left_alone_and_reported_until_it_goes() {
    let (h, log) = ssa::harness(&[]).await;
    h.api::<Service>()
        .create(&PostParams::default(), &foreign_service())
        .await
        .unwrap();
    h.create("fk", json!({"image": IMG1, "scanGate": {"enabled": false}}))
        .await;

    let err = h.reconcile("fk").await.unwrap_err();
    assert_eq!(err.category(), "ObjectNotOwned");
    assert!(
        log.of("Service").is_empty(),
        "no apply to the foreign Service"
    );
    let svc = h.api::<Service>().get("fk").await.unwrap();
    assert_eq!(svc.metadata.labels.unwrap().len(), 1, "untouched");
    assert!(svc.metadata.owner_references.is_none());
    assert!(
        h.deployment("fk").await.is_some(),
        "everything else is applied"
    );

    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "Conflict"),
        ("True".into(), "ObjectNotOwned".into())
    );
    let message = cond_message(&fkd, "Conflict");
    assert!(
        message.contains(&format!("Service {NS}/fk exists")),
        "{message}"
    );
    assert_eq!(cond(&fkd, "Degraded").1, "ObjectNotOwned");
    assert_eq!(
        cond(&fkd, "Stalled"),
        ("True".into(), "ObjectNotOwned".into())
    );
    let events = h.events("fk").await;
    assert!(
        events.iter().any(|(t, r, note)| t == "Warning"
            && r == "ObjectNotOwned"
            && note.contains("Service")),
        "{events:?}"
    );
    assert_eq!(
        error_policy(Arc::new(fkd), &err, h.ctx.clone()),
        Action::requeue(STEADY_REQUEUE),
        "no fast retry loop: a human resolves it"
    );

    // Its owner deletes it: the next reconcile creates ours and the condition goes.
    h.api::<Service>()
        .delete("fk", &DeleteParams::default())
        .await
        .unwrap();
    h.reconcile("fk").await.unwrap();
    let svc = h.api::<Service>().get("fk").await.unwrap();
    assert!(svc.metadata.owner_references.unwrap()[0].controller == Some(true));
    let fkd = h.get("fk").await;
    assert!(
        fkd.status
            .unwrap()
            .conditions
            .iter()
            .all(|c| c.type_ != "Conflict")
    );
}

/// Create a Deployment named `fk` that no FaceKeyDeployment owns, running `image`.
async fn create_foreign_deployment(h: &common::Harness, image: &str) {
    let foreign: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "fk", "namespace": NS},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "other"}},
                 "template": {"metadata": {"labels": {"app": "other"}},
                              "spec": {"containers": [{"name": "runtime", "image": image}]}}},
    }))
    .unwrap();
    h.api::<Deployment>()
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
}

/// A foreign Deployment of the same name: not applied, and no HPA that would scale it.
#[tokio::test]
async fn a_foreign_deployment_gets_no_apply_and_no_autoscaler() {
    let (h, log) = ssa::harness(&[]).await;
    create_foreign_deployment(&h, "other:1").await;
    h.create(
        "fk",
        json!({"image": IMG1, "scanGate": {"enabled": false},
               "autoscaling": {"minReplicas": 2, "maxReplicas": 4, "targetCPUUtilizationPercentage": 60}}),
    )
    .await;
    let err = h.reconcile("fk").await.unwrap_err();
    assert_eq!(err.category(), "ObjectNotOwned");
    assert!(err.to_string().contains(&format!("Deployment {NS}/fk")));
    assert!(log.of("Deployment").is_empty());
    assert!(
        h.api::<HorizontalPodAutoscaler>()
            .get_opt("fk")
            .await
            .unwrap()
            .is_none()
    );
    let d = serde_json::to_value(h.deployment("fk").await.unwrap()).unwrap();
    assert!(
        ssa::owners(&d, &["spec", "template"])
            .iter()
            .all(|m| m != FIELD_MANAGER)
    );
    assert!(h.api::<Service>().get_opt("fk").await.unwrap().is_some());
}

/// With the scan gate on, a foreign Deployment of the same name (another team's, or one left
/// behind by `kubectl delete --cascade=orphan`) is not this resource's rollout: its image is
/// never reported as `currentImage`, never becomes the last-known-good image (which the
/// webhook would inject and a later rollout would fall back to), and once it is deleted
/// nothing runs until the scan admits an image.
#[tokio::test]
async fn a_foreign_deployments_image_is_never_admitted_by_the_gate() {
    let (h, _log) = ssa::harness(&[]).await;
    create_foreign_deployment(
        &h,
        "other@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    )
    .await;
    h.create("fk", json!({"image": IMG1})).await;
    for _ in 0..2 {
        let _ = h.reconcile("fk").await;
        let status = h.get("fk").await.status.unwrap();
        assert_eq!(status.current_image, None, "{status:?}");
        assert_eq!(status.last_known_good_image, None, "{status:?}");
        assert_eq!(
            facekey_operator::scan_gate::last_known_good(Some(&status)),
            None
        );
    }
    h.api::<Deployment>()
        .delete("fk", &DeleteParams::default())
        .await
        .unwrap();
    let _ = h.reconcile("fk").await;
    assert!(
        h.deployment("fk").await.is_none(),
        "a Deployment runs before the scan admitted an image"
    );
}

/// A finished Job, carrying the operator's scan labels for `fk`, of an image `fk` does not run,
/// created with `owner` (a FaceKeyDeployment's uid) as controller owner, or with none.
async fn finished_scan_job(h: &common::Harness, name: &str, owner: Option<&str>) {
    let mut job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": NS,
            "labels": {"app.kubernetes.io/managed-by": "facekey-operator",
                       "app.kubernetes.io/name": "facekey",
                       "app.kubernetes.io/component": "scan", "facekey.dev/owner": "fk"},
            "annotations": {"facekey.dev/scan-image": "ghcr.io/facekey/runtime:0.0.9"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "scan", "image": "scanner:1"}]}}},
    });
    if let Some(uid) = owner {
        job["metadata"]["ownerReferences"] = json!([{"apiVersion": "facekey.dev/v1alpha1",
            "kind": "FaceKeyDeployment", "name": "fk", "uid": uid, "controller": true}]);
    }
    let job: Job = serde_json::from_value(job).unwrap();
    let jobs = h.api::<Job>();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    jobs.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"succeeded": 1}})),
    )
    .await
    .unwrap();
}

/// The pruner of finished scan Jobs finds them by the operator's labels, which anyone may set:
/// it deletes only those this resource controls. A finished Job with the labels and no owner
/// reference (someone else's, or a copy) survives; the resource's own finished scan Job of an
/// image it no longer runs goes.
#[tokio::test]
async fn a_labelled_scan_job_it_does_not_control_is_never_pruned() {
    let (h, _log) = ssa::harness(&[]).await;
    let fkd = h
        .create("fk", json!({"image": IMG1, "scanGate": {"enabled": false}}))
        .await;
    let uid = fkd.metadata.uid.clone().unwrap();
    finished_scan_job(&h, "lookalike-scan", None).await;
    finished_scan_job(&h, "fk-scan-old", Some(&uid)).await;
    h.reconcile("fk").await.unwrap();
    let jobs = h.jobs().await;
    assert!(jobs.contains(&"lookalike-scan".to_owned()), "{jobs:?}");
    assert!(
        !jobs.contains(&"fk-scan-old".to_owned()),
        "its own finished Job of another image is pruned: {jobs:?}"
    );
}
