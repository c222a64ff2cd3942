//! The reconciler against kube-fake-client's in-memory API: create, scale, image changes with the
//! scan gate open and closed, drift repair, pruning, deletion, conflicts and status bookkeeping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{NS, cond, cond_message, harness};
use facekey_operator::desired::OptionalCrd;
use facekey_operator::labels::scan_job_name;
use facekey_operator::reconcile::{error_policy, retry_delay};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

const ALL: [OptionalCrd; 6] = OptionalCrd::ALL;
const MONITORING: [OptionalCrd; 3] = [
    OptionalCrd::ServiceMonitor,
    OptionalCrd::PrometheusRule,
    OptionalCrd::AlertmanagerConfig,
];
const IMG1: &str = "ghcr.io/facekey/runtime:0.1.0";
const IMG2: &str = "ghcr.io/facekey/runtime:0.2.0";
/// IMG1 and IMG2 pinned to the digests their recorded scans resolved (`Metadata.RepoDigests`).
const IMG1_DIGEST: &str = "ghcr.io/facekey/runtime@sha256:1f3c5a7e9b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a";
const IMG2_DIGEST: &str = "ghcr.io/facekey/runtime@sha256:8e0a2c4e6a8c0e2a4c6e8a0c2e4a6c8e0a2c4e6a8c0e2a4c6e8a0c2e4a6c8e0a";

fn dynamic(h: &common::Harness, kind: facekey_operator::desired::ChildKind) -> Api<DynamicObject> {
    Api::namespaced_with(h.client.clone(), NS, &kind.api_resource())
}

/// Whether the named object exists in the fake API.
async fn exists<K>(api: Api<K>, name: &str) -> bool
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.unwrap().is_some()
}

#[tokio::test]
async fn gate_disabled_creates_all_children_with_owner_refs_and_status() {
    let h = harness(&MONITORING).await;
    let fkd = h
        .create(
            "fk",
            json!({"image": IMG1, "replicas": 2, "scanGate": {"enabled": false},
               "alerting": {"email": {"to": "sec@example.com", "from": "fk@example.com",
                 "smarthost": "smtp.example.com:587", "authSecretRef": {"name": "smtp", "key": "pw"}}}}),
        )
        .await;
    let action = h.reconcile("fk").await.unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(30)),
        "rollout in progress"
    );

    let uid = fkd.uid().unwrap();
    let owned_by_fk =
        |refs: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            refs.unwrap_or_default()
                .iter()
                .any(|r| r.uid == uid && r.controller == Some(true))
        };
    let dep = h.deployment("fk").await.unwrap();
    assert!(owned_by_fk(dep.metadata.owner_references.clone()));
    assert_eq!(dep.spec.as_ref().unwrap().replicas, Some(2));
    for name in ["fk-config", "fk-dashboard"] {
        let cm = h.api::<ConfigMap>().get(name).await.unwrap();
        assert!(owned_by_fk(cm.metadata.owner_references), "{name}");
    }
    assert!(owned_by_fk(
        h.api::<Service>()
            .get("fk")
            .await
            .unwrap()
            .metadata
            .owner_references
    ));
    assert!(owned_by_fk(
        h.api::<PodDisruptionBudget>()
            .get("fk")
            .await
            .unwrap()
            .metadata
            .owner_references
    ));
    assert!(!exists(h.api::<HorizontalPodAutoscaler>(), "fk").await);
    use facekey_operator::desired::ChildKind;
    for kind in [
        ChildKind::ServiceMonitor,
        ChildKind::PrometheusRule,
        ChildKind::AlertmanagerConfig,
    ] {
        let obj = dynamic(&h, kind).get("fk").await.unwrap();
        assert!(owned_by_fk(obj.metadata.owner_references), "{kind:?}");
    }
    assert!(
        h.jobs().await.is_empty(),
        "no scan Job when the gate is disabled"
    );

    let fkd = h.get("fk").await;
    let status = fkd.status.clone().unwrap();
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.current_image.as_deref(), Some(IMG1));
    assert_eq!(status.url.as_deref(), Some("http://fk.team.svc:8080"));
    assert_eq!(
        status.selector.as_deref(),
        Some(
            "app.kubernetes.io/component=runtime,app.kubernetes.io/instance=fk,app.kubernetes.io/name=facekey"
        )
    );
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("True".into(), "GateDisabled".into())
    );
    assert_eq!(cond(&fkd, "Ready"), ("False".into(), "NotAvailable".into()));
    assert_eq!(
        cond(&fkd, "Progressing"),
        ("True".into(), "RollingOut".into())
    );
    assert_eq!(
        cond(&fkd, "MonitoringReady"),
        ("True".into(), "Applied".into())
    );

    // The Deployment controller finishes the rollout.
    h.mark_deployment_ready("fk").await;
    let action = h.reconcile("fk").await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let fkd = h.get("fk").await;
    assert_eq!(cond(&fkd, "Ready"), ("True".into(), "Available".into()));
    assert_eq!(
        cond(&fkd, "Progressing"),
        ("False".into(), "RolloutComplete".into())
    );
    assert_eq!(
        cond(&fkd, "Degraded"),
        ("False".into(), "AsExpected".into())
    );
    let status = fkd.status.unwrap();
    assert_eq!((status.replicas, status.ready_replicas), (2, 2));
    assert!(
        h.event_reasons("fk")
            .await
            .contains(&("Normal".into(), "Ready".into()))
    );
}

#[tokio::test]
async fn first_image_waits_for_its_scan_then_rolls_out() {
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1})).await;

    h.reconcile("fk").await.unwrap();
    let job = scan_job_name("fk", IMG1);
    assert_eq!(h.jobs().await, vec![job.clone()]);
    assert!(
        h.deployment("fk").await.is_none(),
        "nothing runs before the scan"
    );
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "ScanPending".into())
    );
    assert_eq!(
        cond(&fkd, "Ready"),
        ("False".into(), "RolloutBlocked".into())
    );
    assert_eq!(h.metric("facekey_operator_scan_jobs_created_total", NS), 1);

    // Still running: no second Job, gate still closed.
    let action = h.reconcile("fk").await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    assert_eq!(h.jobs().await.len(), 1);
    assert!(h.deployment("fk").await.is_none());

    h.complete_scan(&job, "runtime-0.1.0-pass.json", IMG1).await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("True".into(), "ScanPassed".into())
    );
    let scan = fkd.status.unwrap().scans[0].clone();
    assert_eq!(scan.image, IMG1);
    assert_eq!(
        scan.digest.as_deref(),
        IMG1_DIGEST.split_once('@').map(|d| d.1)
    );
    assert_eq!(
        (
            scan.counts.critical,
            scan.counts.high,
            scan.counts.medium,
            scan.counts.low,
            scan.blocking
        ),
        (0, 0, 1, 3, 0)
    );
    assert_eq!(scan.report_ref, Some(format!("Job/{job}")));
    assert_eq!(
        scan.scanned_at.unwrap().0.to_string(),
        "2025-11-20T09:14:03Z",
        "metav1.Time keeps seconds"
    );
    assert!(
        h.event_reasons("fk")
            .await
            .contains(&("Normal".into(), "ScanPassed".into()))
    );
}

/// Bring `fk` to "IMG1 running and ready" through a passing scan.
async fn running_img1(h: &common::Harness, extra: serde_json::Value) {
    let mut spec = json!({"image": IMG1, "replicas": 2});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    h.create("fk", spec).await;
    h.reconcile("fk").await.unwrap();
    h.complete_scan(&scan_job_name("fk", IMG1), "runtime-0.1.0-pass.json", IMG1)
        .await;
    h.reconcile("fk").await.unwrap();
    h.mark_deployment_ready("fk").await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));
}

#[tokio::test]
async fn blocked_image_keeps_the_previous_one_serving() {
    let h = harness(&[]).await;
    running_img1(&h, json!({})).await;

    h.patch_spec("fk", json!({"image": IMG2})).await;
    h.reconcile("fk").await.unwrap();
    let job2 = scan_job_name("fk", IMG2);
    assert!(h.jobs().await.contains(&job2));
    assert_eq!(
        h.deployment_image("fk").await.as_deref(),
        Some(IMG1_DIGEST),
        "pending: old image stays"
    );
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "ScanPending".into())
    );
    // The old pods keep serving, but the desired image is not rolled out: not Ready.
    assert_eq!(
        cond(&fkd, "Ready"),
        ("False".into(), "RolloutBlocked".into())
    );
    assert!(cond_message(&fkd, "Ready").contains(&format!("{IMG1_DIGEST} keeps serving")));

    h.complete_scan(&job2, "runtime-0.2.0-fail.json", IMG2)
        .await;
    let action = h.reconcile("fk").await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert_eq!(
        h.deployment_image("fk").await.as_deref(),
        Some(IMG1_DIGEST),
        "blocked: old image stays"
    );
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "VulnerabilitiesFound".into())
    );
    let msg = cond_message(&fkd, "ScanGatePassed");
    assert!(msg.contains("4 findings above MEDIUM"), "{msg}");
    assert!(msg.contains("critical=1 high=3"), "{msg}");
    assert_eq!(
        cond(&fkd, "Degraded"),
        ("True".into(), "ImageBlocked".into())
    );
    assert_eq!(
        cond(&fkd, "Ready"),
        ("False".into(), "RolloutBlocked".into())
    );
    assert_eq!(
        cond(&fkd, "Stalled"),
        ("True".into(), "ImageBlocked".into())
    );
    let status = fkd.status.clone().unwrap();
    assert_eq!(status.current_image.as_deref(), Some(IMG1_DIGEST));
    let scan = status.scans.iter().find(|s| s.image == IMG2).unwrap();
    assert_eq!(
        (
            scan.image.as_str(),
            scan.counts.critical,
            scan.counts.high,
            scan.blocking
        ),
        (IMG2, 1, 3, 4)
    );
    assert_eq!(h.metric("facekey_operator_blocked_rollouts_total", NS), 1);
    assert_eq!(
        h.metric(
            "facekey_operator_scan_verdicts_total",
            "verdict=\"VulnerabilitiesFound\""
        ),
        1
    );
    assert!(
        h.event_reasons("fk")
            .await
            .contains(&("Warning".into(), "RolloutBlocked".into()))
    );

    // Reconciling again neither rolls out nor counts the same blocked rollout twice.
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));
    assert_eq!(h.metric("facekey_operator_blocked_rollouts_total", NS), 1);
}

#[tokio::test]
async fn policy_change_reevaluates_the_existing_report() {
    let h = harness(&[]).await;
    running_img1(&h, json!({})).await;
    h.patch_spec("fk", json!({"image": IMG2})).await;
    h.reconcile("fk").await.unwrap();
    h.complete_scan(&scan_job_name("fk", IMG2), "runtime-0.2.0-fail.json", IMG2)
        .await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));

    // Accept the unfixed zlib CVE and two of the three HIGHs: one HIGH still blocks.
    h.patch_spec(
        "fk",
        json!({"scanGate": {"allowUnfixed": true, "ignoreCVEs": ["CVE-2024-2961", "CVE-2024-33599"]}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));
    let fkd = h.get("fk").await;
    assert!(cond_message(&fkd, "ScanGatePassed").contains("1 findings above MEDIUM"));

    // Tolerating HIGH opens the gate without a rescan.
    h.patch_spec("fk", json!({"scanGate": {"maxSeverity": "HIGH"}}))
        .await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG2_DIGEST));
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("True".into(), "ScanPassed".into())
    );
    assert_eq!(cond(&fkd, "Degraded").0, "False");
    // No rescan for a policy change; the finished Job of the replaced image is cleaned up.
    assert_eq!(h.metric("facekey_operator_scan_jobs_created_total", NS), 2);
    assert_eq!(h.jobs().await, vec![scan_job_name("fk", IMG2)]);
    assert_eq!(
        h.metric("facekey_operator_pruned_objects_total", "kind=\"Job\""),
        1
    );
}

#[tokio::test]
async fn stale_report_is_discarded_and_rescanned() {
    let h = harness(&[]).await;
    h.create(
        "fk",
        json!({"image": IMG1, "scanGate": {"maxReportAge": "1h"}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    let job = scan_job_name("fk", IMG1);
    h.complete_scan(&job, "runtime-0.1.0-pass.json", IMG1).await;
    h.clock.advance(2 * 3600);
    h.reconcile("fk").await.unwrap();
    assert!(
        h.deployment("fk").await.is_none(),
        "a stale report must not open the gate"
    );
    assert!(h.jobs().await.is_empty(), "the stale Job is deleted");
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "ScanPending".into())
    );
    assert!(cond_message(&fkd, "ScanGatePassed").contains("older than maxReportAge"));
    // Next pass starts a fresh scan.
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.jobs().await, vec![job]);
}

/// A scan Job of the right name that this resource does not control (made by anyone who may
/// create Jobs in the namespace) could write any summary: its clean report is not trusted, and
/// nothing rolls out. One the resource controls but running other containers (another operator
/// version) is deleted and scanned again.
#[tokio::test]
async fn a_scan_job_not_made_for_the_resource_is_not_trusted() {
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1})).await;
    h.reconcile("fk").await.unwrap();
    let job = scan_job_name("fk", IMG1);
    h.api::<Job>()
        .patch(
            &job,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"ownerReferences": null}})),
        )
        .await
        .unwrap();
    h.complete_scan(&job, "runtime-0.1.0-pass.json", IMG1).await;
    h.reconcile("fk").await.unwrap();
    assert!(h.deployment("fk").await.is_none(), "nothing rolled out");
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "ScanFailed".into())
    );
    assert!(
        cond_message(&fkd, "ScanGatePassed").contains("not created for this FaceKeyDeployment"),
        "{}",
        cond_message(&fkd, "ScanGatePassed")
    );
    assert_eq!(
        h.jobs().await,
        vec![job.clone()],
        "someone else's Job is left alone"
    );

    // Ours, but its containers changed after the operator wrote it: not trusted, kept, and
    // not made again (a policy that changed it would change the new one too).
    let evil = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "summary", "image": "evil/summary:1", "args": ["echo", "clean"]}
    ]}}}});
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1})).await;
    h.reconcile("fk").await.unwrap();
    h.api::<Job>()
        .patch(&job, &PatchParams::default(), &Patch::Merge(evil.clone()))
        .await
        .unwrap();
    h.complete_scan(&job, "runtime-0.1.0-pass.json", IMG1).await;
    h.reconcile("fk").await.unwrap();
    assert!(h.deployment("fk").await.is_none());
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "ScanFailed".into())
    );
    let message = cond_message(&fkd, "ScanGatePassed");
    assert!(
        message.contains("no longer runs the pod template this operator wrote")
            && message.contains("an image changed"),
        "{message}"
    );
    assert_eq!(h.jobs().await, vec![job.clone()], "kept, not replaced");

    // Ours, written by an earlier operator for another template (no template hash): deleted
    // and scanned again.
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1})).await;
    h.reconcile("fk").await.unwrap();
    let mut older = evil;
    older["metadata"] = json!({"annotations": {"facekey.dev/scan-template": null}});
    h.api::<Job>()
        .patch(&job, &PatchParams::default(), &Patch::Merge(older))
        .await
        .unwrap();
    h.complete_scan(&job, "runtime-0.1.0-pass.json", IMG1).await;
    h.reconcile("fk").await.unwrap();
    assert!(h.deployment("fk").await.is_none());
    assert!(h.jobs().await.is_empty(), "deleted to scan again");
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.jobs().await, vec![job], "a new scan starts");
}

/// A cluster policy that adds to every Job's pods at admission (a proxy variable, a registry
/// mirror) changes the scan Job as it is created. Made again, it would be changed again: the
/// gate used to delete it and create another every few seconds, a scanner pod each time, and
/// stay pending. It now creates it once, fails closed naming what changed, and scans once the
/// policy leaves scan Jobs alone and the Job is deleted.
#[tokio::test]
async fn a_scan_job_changed_at_admission_is_created_once_and_reported() {
    let h = harness(&[]).await;
    h.admission_adds_proxy_to_jobs.store(true, Ordering::SeqCst);
    h.create("fk", json!({"image": IMG1})).await;
    let job = scan_job_name("fk", IMG1);
    h.reconcile("fk").await.unwrap();
    for _ in 0..4 {
        h.reconcile("fk").await.unwrap();
        assert_eq!(h.jobs().await, vec![job.clone()]);
    }
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "ScanFailed".into())
    );
    let message = cond_message(&fkd, "ScanGatePassed");
    assert!(message.contains("the environment changed"), "{message}");
    assert!(message.contains("Exclude scan Jobs"), "{message}");
    assert_eq!(
        h.metric("facekey_operator_scan_jobs_created_total", NS),
        1,
        "one Job created, not one per reconcile"
    );
    let uid = h.api::<Job>().get(&job).await.unwrap().metadata.uid;

    // The policy excludes scan Jobs; the Job is deleted to rescan: the new one is trusted.
    h.admission_adds_proxy_to_jobs
        .store(false, Ordering::SeqCst);
    h.api::<Job>()
        .delete(&job, &Default::default())
        .await
        .unwrap();
    h.reconcile("fk").await.unwrap();
    assert_ne!(h.api::<Job>().get(&job).await.unwrap().metadata.uid, uid);
    h.complete_scan(&job, "runtime-0.1.0-pass.json", IMG1).await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(
        cond(&h.get("fk").await, "ScanGatePassed"),
        ("True".into(), "ScanPassed".into())
    );
}

#[tokio::test]
async fn failed_scan_fails_closed_and_retries_later() {
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1})).await;
    h.reconcile("fk").await.unwrap();
    let job = scan_job_name("fk", IMG1);
    h.fail_scan(&job, "2025-11-20T09:55:00Z").await;
    h.reconcile("fk").await.unwrap();
    assert!(h.deployment("fk").await.is_none());
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "ScanFailed".into())
    );
    assert_eq!(cond(&fkd, "Degraded"), ("True".into(), "ScanFailed".into()));
    assert!(cond_message(&fkd, "ScanGatePassed").contains("backoff limit"));
    assert_eq!(
        h.jobs().await,
        vec![job.clone()],
        "kept for inspection at first"
    );
    assert!(
        h.event_reasons("fk")
            .await
            .contains(&("Warning".into(), "ScanFailed".into()))
    );

    h.clock.advance(15 * 60);
    h.reconcile("fk").await.unwrap();
    assert!(h.jobs().await.is_empty(), "deleted after the retry delay");
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.jobs().await, vec![job], "a new attempt starts");
}

/// The failed scan record of `image`: its failures in a row and the ScanGatePassed message.
async fn failed_scan(h: &common::Harness, image: &str) -> (Option<u32>, String) {
    let fkd = h.get("fk").await;
    let scans = fkd
        .status
        .as_ref()
        .map(|s| s.scans.clone())
        .unwrap_or_default();
    let record = scans.iter().find(|r| r.image == image).unwrap();
    assert_eq!(record.verdict, facekey_crds::ScanVerdict::Failed);
    (record.failures, cond_message(&fkd, "ScanGatePassed"))
}

#[tokio::test]
async fn failed_scans_in_a_row_wait_longer_each_time() {
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1})).await;
    h.reconcile("fk").await.unwrap();
    let job = scan_job_name("fk", IMG1);
    // Every pass reading the same failed Job counts it once.
    h.fail_scan(&job, "2025-11-20T10:00:00Z").await;
    for _ in 0..3 {
        h.reconcile("fk").await.unwrap();
    }
    let (failures, message) = failed_scan(&h, IMG1).await;
    assert_eq!(failures, Some(1));
    assert!(
        message.contains("next attempt at 2025-11-20T10:10:00Z"),
        "{message}"
    );
    assert!(!message.contains("in a row"), "{message}");

    // 10:11: the first failure waited ten minutes; the second attempt fails at 10:12.
    h.clock.advance(11 * 60);
    h.reconcile("fk").await.unwrap();
    assert!(h.jobs().await.is_empty(), "deleted after ten minutes");
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.jobs().await, vec![job.clone()], "the second attempt");
    let (failures, message) = failed_scan(&h, IMG1).await;
    assert_eq!(failures, Some(1), "the record stays while the attempt runs");
    assert!(
        message.contains("a scan is running") || message.contains("started"),
        "{message}"
    );
    h.fail_scan(&job, "2025-11-20T10:12:00Z").await;
    h.reconcile("fk").await.unwrap();
    h.reconcile("fk").await.unwrap();
    let (failures, message) = failed_scan(&h, IMG1).await;
    assert_eq!(failures, Some(2));
    assert!(
        message.contains("(2 failures in a row)")
            && message.contains("next attempt at 2025-11-20T10:32:00Z"),
        "{message}"
    );

    // 10:26: past the first wait, not the doubled one.
    h.clock.advance(15 * 60);
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.jobs().await, vec![job.clone()], "kept for twenty minutes");
    // 10:33: the third attempt fails at 10:34 and waits forty minutes.
    h.clock.advance(7 * 60);
    h.reconcile("fk").await.unwrap();
    assert!(h.jobs().await.is_empty());
    h.reconcile("fk").await.unwrap();
    h.fail_scan(&job, "2025-11-20T10:34:00Z").await;
    h.reconcile("fk").await.unwrap();
    let (failures, message) = failed_scan(&h, IMG1).await;
    assert_eq!(failures, Some(3));
    assert!(
        message.contains("next attempt at 2025-11-20T11:14:00Z"),
        "{message}"
    );

    // Deleting the failed Job retries at once, and the count goes on.
    h.api::<Job>()
        .delete(&job, &Default::default())
        .await
        .unwrap();
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.jobs().await, vec![job.clone()], "a new attempt at once");
    h.complete_scan(&job, "runtime-0.1.0-pass.json", IMG1).await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("True".into(), "ScanPassed".into())
    );
    let scans = fkd.status.unwrap().scans;
    assert!(
        scans.iter().all(|r| r.failures.is_none()),
        "a passed scan ends the count: {scans:?}"
    );
}

#[tokio::test]
async fn a_failed_scan_says_why_from_its_pod() {
    use common::lifecycle::ScanOutcome;
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1})).await;
    h.reconcile("fk").await.unwrap();
    let job = scan_job_name("fk", IMG1);
    h.run_scan_job(
        &job,
        ScanOutcome::InitFailed {
            container: "trivy".into(),
            message: "2025-11-20T09:55:00Z\tFATAL\tinit error: unable to find the specified \
                      image: GET https://ghcr.io/token: UNAUTHORIZED: authentication required\n"
                .into(),
        },
    )
    .await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "ScanFailed".into())
    );
    let message = cond_message(&fkd, "ScanGatePassed");
    assert!(
        message.contains("backoff limit; container trivy exited 1: ")
            && message.contains("UNAUTHORIZED: authentication required"),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line: {message}");
    // The Warning Event carries it too.
    let events = h.events("fk").await;
    assert!(
        events
            .iter()
            .any(|(t, r, m)| t == "Warning" && r == "ScanFailed" && m.contains("UNAUTHORIZED")),
        "{events:?}"
    );
}

#[tokio::test]
async fn succeeded_job_without_summary_fails_closed() {
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1})).await;
    h.reconcile("fk").await.unwrap();
    let job = scan_job_name("fk", IMG1);
    h.api::<Job>()
        .patch_status(
            &job,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"succeeded": 1}})),
        )
        .await
        .unwrap();
    h.reconcile("fk").await.unwrap();
    assert!(h.deployment("fk").await.is_none());
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "ScanFailed".into())
    );
    assert!(cond_message(&fkd, "ScanGatePassed").contains("no pod has a termination message"));
}

#[tokio::test]
async fn trivy_operator_report_is_used_instead_of_a_job() {
    let h = harness(&ALL).await;
    let vr = json!({
        "apiVersion": "aquasecurity.github.io/v1alpha1",
        "kind": "VulnerabilityReport",
        "metadata": {"name": "replicaset-fk-7d9f-runtime", "namespace": NS},
        "report": {
            "artifact": {"repository": "facekey/runtime", "tag": "0.2.0",
                         "digest": IMG2_DIGEST.split_once('@').unwrap().1},
            "registry": {"server": "ghcr.io"},
            "updateTimestamp": "2025-11-20T08:00:00Z",
            "summary": {"criticalCount": 0, "highCount": 1},
            "vulnerabilities": [
                {"vulnerabilityID": "CVE-2024-2961", "severity": "HIGH", "fixedVersion": "2.36-9+deb12u7"},
                {"vulnerabilityID": "CVE-2010-4756", "severity": "LOW", "fixedVersion": ""}
            ]
        }
    });
    let vr_api: Api<DynamicObject> = Api::namespaced_with(
        h.client.clone(),
        NS,
        &ApiResource {
            group: "aquasecurity.github.io".into(),
            version: "v1alpha1".into(),
            api_version: "aquasecurity.github.io/v1alpha1".into(),
            kind: "VulnerabilityReport".into(),
            plural: "vulnerabilityreports".into(),
        },
    );
    vr_api
        .create(&PostParams::default(), &serde_json::from_value(vr).unwrap())
        .await
        .unwrap();

    h.create("fk", json!({"image": IMG2})).await;
    h.reconcile("fk").await.unwrap();
    assert!(h.jobs().await.is_empty(), "no Job: the report was found");
    assert!(
        h.deployment("fk").await.is_none(),
        "one HIGH above MEDIUM blocks"
    );
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "VulnerabilitiesFound".into())
    );
    let scan = fkd.status.unwrap().scans[0].clone();
    assert_eq!(
        scan.report_ref.as_deref(),
        Some("VulnerabilityReport/replicaset-fk-7d9f-runtime")
    );
    assert_eq!(
        (scan.counts.high, scan.counts.low, scan.blocking),
        (1, 1, 1)
    );

    h.patch_spec("fk", json!({"scanGate": {"maxSeverity": "HIGH"}}))
        .await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG2_DIGEST));
}

#[tokio::test]
async fn scaling_the_spec_scales_the_deployment() {
    // Through the server-side-apply harness: fields the operator stops applying go away.
    let (h, _) = common::ssa::harness(&[]).await;
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 1, "scanGate": {"enabled": false}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    h.mark_deployment_ready("fk").await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.get("fk").await.status.unwrap().replicas, 1);

    // What `kubectl scale fkd/fk --replicas=4` does through /scale: spec.replicas changes.
    h.patch_spec("fk", json!({"replicas": 4})).await;
    h.reconcile("fk").await.unwrap();
    let dep = h.deployment("fk").await.unwrap();
    assert_eq!(dep.spec.unwrap().replicas, Some(4));
    let fkd = h.get("fk").await;
    assert_eq!(fkd.status.as_ref().unwrap().observed_generation, Some(2));
    assert_eq!(cond(&fkd, "Progressing").0, "True");
    h.mark_deployment_ready("fk").await;
    h.reconcile("fk").await.unwrap();
    let status = h.get("fk").await.status.unwrap();
    assert_eq!((status.replicas, status.ready_replicas), (4, 4));

    // Switching to autoscaling creates an HPA; switching back prunes it.
    h.fkds()
        .patch(
            "fk",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": null, "autoscaling": {
                "minReplicas": 2, "maxReplicas": 6, "targetCPUUtilizationPercentage": 75}}})),
        )
        .await
        .unwrap();
    h.reconcile("fk").await.unwrap();
    let hpa = h.api::<HorizontalPodAutoscaler>().get("fk").await.unwrap();
    assert_eq!(hpa.spec.unwrap().max_replicas, 6);
    assert_eq!(
        h.deployment("fk").await.unwrap().spec.unwrap().replicas,
        Some(4),
        "the running count is handed to the HPA, not dropped to 1"
    );
    h.fkds()
        .patch(
            "fk",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3, "autoscaling": null}})),
        )
        .await
        .unwrap();
    h.reconcile("fk").await.unwrap();
    assert!(!exists(h.api::<HorizontalPodAutoscaler>(), "fk").await);
    assert_eq!(
        h.deployment("fk").await.unwrap().spec.unwrap().replicas,
        Some(3)
    );
}

#[tokio::test]
async fn drift_is_repaired() {
    let h = harness(&[]).await;
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 2, "scanGate": {"enabled": false}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();

    // Someone edits the Deployment by hand and deletes the Service.
    h.api::<Deployment>()
        .patch(
            "fk",
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "spec": {"replicas": 9, "template": {"spec": {"containers": [{"name": "runtime", "image": "evil:latest"}]}}}
            })),
        )
        .await
        .unwrap();
    h.api::<Service>()
        .delete("fk", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        h.deployment_image("fk").await.as_deref(),
        Some("evil:latest")
    );

    h.reconcile("fk").await.unwrap();
    let dep = h.deployment("fk").await.unwrap();
    assert_eq!(dep.spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1));
    assert!(exists(h.api::<Service>(), "fk").await);
}

#[tokio::test]
async fn prune_removes_only_our_objects_no_longer_desired() {
    let h = harness(&MONITORING).await;
    h.create("fk", json!({"image": IMG1, "scanGate": {"enabled": false}}))
        .await;
    h.reconcile("fk").await.unwrap();
    use facekey_operator::desired::ChildKind;
    assert!(exists(dynamic(&h, ChildKind::ServiceMonitor), "fk").await);
    assert!(exists(h.api::<ConfigMap>(), "fk-dashboard").await);

    // A ConfigMap carrying our labels but owned by something else must survive pruning.
    let foreign: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "lookalike", "namespace": NS, "labels": {
            "app.kubernetes.io/managed-by": "facekey-operator", "facekey.dev/owner": "fk"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "other", "controller": true}]},
    }))
    .unwrap();
    h.api::<ConfigMap>()
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();

    h.patch_spec(
        "fk",
        json!({"monitoring": {"serviceMonitor": {"enabled": false}, "dashboards": {"enabled": false}}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    assert!(!exists(dynamic(&h, ChildKind::ServiceMonitor), "fk").await);
    assert!(!exists(h.api::<ConfigMap>(), "fk-dashboard").await);
    assert!(exists(dynamic(&h, ChildKind::PrometheusRule), "fk").await);
    assert!(exists(h.api::<ConfigMap>(), "lookalike").await);
    assert!(exists(h.api::<ConfigMap>(), "fk-config").await);
    for kind in ["ServiceMonitor", "ConfigMap"] {
        assert_eq!(
            h.metric(
                "facekey_operator_pruned_objects_total",
                &format!("kind=\"{kind}\"")
            ),
            1,
            "{kind}"
        );
    }
}

#[tokio::test]
async fn deleting_the_resource_cascades_through_owner_references() {
    let h = harness(&MONITORING).await;
    h.create("fk", json!({"image": IMG1, "scanGate": {"enabled": false}}))
        .await;
    h.reconcile("fk").await.unwrap();
    assert!(h.deployment("fk").await.is_some());
    h.fkds()
        .delete("fk", &DeleteParams::background())
        .await
        .unwrap();
    assert!(h.deployment("fk").await.is_none());
    assert!(!exists(h.api::<Service>(), "fk").await);
    assert!(!exists(h.api::<ConfigMap>(), "fk-config").await);
    use facekey_operator::desired::ChildKind;
    assert!(!exists(dynamic(&h, ChildKind::PrometheusRule), "fk").await);
}

#[tokio::test]
async fn terminating_resource_is_left_alone() {
    let h = harness(&[]).await;
    let mut fkd = h
        .create("fk", json!({"image": IMG1, "scanGate": {"enabled": false}}))
        .await;
    fkd.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        common::t0(),
    ));
    let action = facekey_operator::reconcile::reconcile(Arc::new(fkd), h.ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    assert!(h.deployment("fk").await.is_none());
}

#[tokio::test]
async fn missing_monitoring_crds_are_reported_not_fatal() {
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1, "scanGate": {"enabled": false}}))
        .await;
    h.reconcile("fk").await.unwrap();
    assert!(h.deployment("fk").await.is_some());
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "MonitoringReady"),
        ("False".into(), "CRDNotInstalled".into())
    );
    let msg = cond_message(&fkd, "MonitoringReady");
    assert!(
        msg.contains(
            "ServiceMonitor skipped: CRD servicemonitors.monitoring.coreos.com is not installed"
        ),
        "{msg}"
    );
    assert!(msg.contains("PrometheusRule skipped"), "{msg}");
    assert!(
        h.event_reasons("fk")
            .await
            .contains(&("Warning".into(), "MonitoringSkipped".into()))
    );
}

/// A scan Job the API server refuses (a quota, an admission policy) is reported in the status:
/// observedGeneration moves and Degraded says why, instead of a status that stays Progressing
/// while every reconcile fails before it.
#[tokio::test]
async fn a_refused_scan_job_is_reported_in_the_status() {
    let h = harness(&[]).await;
    h.fail_job_creates.store(true, Ordering::SeqCst);
    h.create("fk", json!({"image": IMG1})).await;
    let err = h.reconcile("fk").await.unwrap_err();
    let fkd = h.get("fk").await;
    let status = fkd.status.as_ref().expect("a status despite the failure");
    assert_eq!(status.observed_generation, fkd.metadata.generation);
    assert_eq!(
        cond(&fkd, "Degraded"),
        ("True".into(), err.category().into())
    );
    assert!(
        cond_message(&fkd, "Degraded").contains("exceeded quota"),
        "{}",
        cond_message(&fkd, "Degraded")
    );
    assert_eq!(cond(&fkd, "Ready").0, "False");
    // The quota lifted: the next reconcile creates the Job and clears Degraded.
    h.fail_job_creates.store(false, Ordering::SeqCst);
    h.reconcile("fk").await.unwrap();
    assert_eq!(cond(&h.get("fk").await, "Degraded").0, "False");
}

/// A read outside the observe stage that the API server refuses (403: an install whose Role
/// lacks `list` on trivy-operator's vulnerabilityreports) needs a human as much as one inside
/// it: `Stalled` names it (kstatus: Failed) and it is retried at the steady interval, not in
/// backoff with `Reconciling` True for ever. Granted again, the scan goes on.
#[tokio::test]
async fn a_report_list_the_api_server_refuses_stalls_instead_of_retrying() {
    let h = harness(&[OptionalCrd::VulnerabilityReport]).await;
    h.create("fk", json!({"image": IMG1})).await;
    let refusing = Arc::new(common::test_context(
        &common::answering_gets(
            h.client.clone(),
            // The list, not the CRD's discovery (`customresourcedefinitions/vulnerabilityreports.…`).
            "/namespaces/team/vulnerabilityreports",
            403,
            "vulnerabilityreports.aquasecurity.github.io is forbidden: User \
             \"system:serviceaccount:facekey-system:facekey-operator\" cannot list resource \
             \"vulnerabilityreports\" in API group \"aquasecurity.github.io\" in the namespace \
             \"team\"",
        ),
        &h.clock,
    ));
    let fkd = Arc::new(h.get("fk").await);
    let err = facekey_operator::reconcile::reconcile(fkd.clone(), refusing.clone())
        .await
        .unwrap_err();
    assert_eq!(err.category(), "ReadFailed");
    assert!(
        err.to_string()
            .starts_with("reading VulnerabilityReports in team failed"),
        "the scan gate's read: {err}"
    );
    assert!(err.is_refused(), "{err}");
    assert_eq!(
        error_policy(fkd, &err, refusing),
        Action::requeue(facekey_operator::reconcile::STEADY_REQUEUE)
    );
    let fkd = h.get("fk").await;
    assert_eq!(fkd.status.as_ref().unwrap().observed_generation, Some(1));
    assert_eq!(cond(&fkd, "Stalled"), ("True".into(), "ReadFailed".into()));
    assert!(
        cond_message(&fkd, "Stalled").contains("cannot list resource"),
        "{}",
        cond_message(&fkd, "Stalled")
    );
    assert_eq!(cond(&fkd, "Reconciling").0, "False");
    assert!(h.jobs().await.is_empty(), "nothing scanned meanwhile");

    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(cond(&fkd, "Stalled").0, "False");
    assert_eq!(
        cond(&fkd, "Reconciling"),
        ("True".into(), "ScanPending".into())
    );
    assert_eq!(h.jobs().await, vec![scan_job_name("fk", IMG1)]);
}

#[tokio::test]
async fn apply_conflict_is_reported_and_backed_off() {
    let h = harness(&[]).await;
    h.fail_deployment_applies.store(true, Ordering::SeqCst);
    h.create("fk", json!({"image": IMG1, "scanGate": {"enabled": false}}))
        .await;

    let err = h.reconcile("fk").await.unwrap_err();
    assert_eq!(err.category(), "ApplyConflict");
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "Degraded"),
        ("True".into(), "ApplyConflict".into())
    );
    assert_eq!(
        h.metric("facekey_operator_reconcile_errors_total", "ApplyConflict"),
        1
    );
    assert!(
        h.event_reasons("fk")
            .await
            .contains(&("Warning".into(), "ApplyConflict".into()))
    );
    let fkd = Arc::new(fkd);
    let object = format!("{NS}/fk");
    assert_eq!(
        error_policy(fkd.clone(), &err, h.ctx.clone()),
        Action::requeue(retry_delay(&object, 1))
    );
    assert_eq!(
        error_policy(fkd.clone(), &err, h.ctx.clone()),
        Action::requeue(retry_delay(&object, 2))
    );

    h.fail_deployment_applies.store(false, Ordering::SeqCst);
    h.reconcile("fk").await.unwrap();
    assert!(h.deployment("fk").await.is_some());
    assert_eq!(
        h.ctx.failures(&format!("{NS}/fk")),
        0,
        "success resets the backoff"
    );
    assert_eq!(cond(&h.get("fk").await, "Degraded").0, "False");
}

/// The score weights the pods mount from a ConfigMap of the user's are read by the runtime at
/// start-up only: a change of what the pods read changes the pod template's config hash, so
/// the pods roll (replicas started before and after would otherwise run different weights). A
/// key they do not read changes nothing; a missing ConfigMap counts as a value of its own.
#[tokio::test]
async fn a_changed_weights_config_map_rolls_the_pods() {
    let h = harness(&[]).await;
    let config_maps = h.api::<ConfigMap>();
    let weights: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "trained-weights", "namespace": NS},
        "data": {"fusion.json": "{\"w\": 1}", "README": "trained 2025-11"},
    }))
    .unwrap();
    config_maps
        .create(&PostParams::default(), &weights)
        .await
        .unwrap();
    h.create(
        "fk",
        json!({"image": IMG1, "scanGate": {"enabled": false}, "models": {"scoreWeights":
            {"configMapKeyRef": {"name": "trained-weights", "key": "fusion.json"}}}}),
    )
    .await;
    let hash = || async {
        h.deployment("fk")
            .await
            .unwrap()
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()["facekey.dev/config-hash"]
            .clone()
    };
    let edit = |data: serde_json::Value| {
        let config_maps = config_maps.clone();
        async move {
            config_maps
                .patch(
                    "trained-weights",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": data})),
                )
                .await
                .unwrap();
        }
    };
    h.reconcile("fk").await.unwrap();
    let first = hash().await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(hash().await, first, "nothing changed");

    edit(json!({"README": "retrained notes"})).await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(hash().await, first, "a key the pods do not read");

    edit(json!({"fusion.json": "{\"w\": 2}"})).await;
    h.reconcile("fk").await.unwrap();
    let second = hash().await;
    assert_ne!(second, first, "new weights roll the pods");

    config_maps
        .delete("trained-weights", &DeleteParams::default())
        .await
        .unwrap();
    h.reconcile("fk").await.unwrap();
    // Missing: the pods are not rolled onto ones that cannot start (the volume is not
    // optional, and an embedded store's Recreate would stop the one running); they read it at
    // start-up and go on.
    assert_eq!(hash().await, second, "a missing ConfigMap rolled the pods");
    // Back with other weights: they roll.
    let back: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "trained-weights", "namespace": NS},
        "data": {"fusion.json": "{\"w\": 3}"},
    }))
    .unwrap();
    config_maps
        .create(&PostParams::default(), &back)
        .await
        .unwrap();
    h.reconcile("fk").await.unwrap();
    let third = hash().await;
    assert!(third != first && third != second, "third: {third}");
}

/// What the context keeps per resource (its blocked-rollouts series, its failure count) goes when
/// the controller forgets a deleted resource, and only that resource's; `tracked` lists what is
/// kept, which the controller's sweep compares with its cache
/// (tests/controller.rs, `a_deleted_resources_metric_series_go_with_it`).
#[tokio::test]
async fn forgetting_a_resource_drops_its_series_and_backoff() {
    let h = harness(&[]).await;
    h.fail_deployment_applies.store(true, Ordering::SeqCst);
    for name in ["fk", "other"] {
        h.create(name, json!({"image": IMG1, "scanGate": {"enabled": false}}))
            .await;
        let err = h.reconcile(name).await.unwrap_err();
        error_policy(Arc::new(h.get(name).await), &err, h.ctx.clone());
    }
    let series = |name: &str| {
        h.ctx.metrics.encode().unwrap().lines().any(|l| {
            l.starts_with("facekey_operator_blocked_rollouts_total{")
                && l.contains(&format!("name=\"{name}\""))
        })
    };
    let tracked = |name: &str| h.ctx.tracked().contains(&(NS.to_owned(), name.to_owned()));
    assert!(series("fk") && tracked("fk") && h.ctx.failures(&format!("{NS}/fk")) == 1);

    h.ctx.forget(NS, "fk");
    assert!(!series("fk") && !tracked("fk"));
    assert_eq!(h.ctx.failures(&format!("{NS}/fk")), 0);
    assert!(series("other") && tracked("other"), "the others' stay");
    assert_eq!(h.ctx.failures(&format!("{NS}/other")), 1);
    // Forgetting twice, or a resource never seen, is harmless.
    h.ctx.forget(NS, "fk");
    h.ctx.forget(NS, "never");
}

/// An API server that takes a request and never answers (the kube client has no response
/// timeout) does not hold a reconcile, and its concurrency slot, forever: the reconcile is
/// abandoned at its timeout, counted as `Timeout`, reported in the status (`Degraded`, when the
/// status write is answered) and retried with backoff; once the API server answers again the
/// next reconcile goes through.
#[tokio::test]
async fn a_reconcile_whose_api_call_never_answers_times_out_and_is_retried() {
    use std::sync::atomic::AtomicBool;
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1, "scanGate": {"enabled": false}}))
        .await;
    let stalled = Arc::new(AtomicBool::new(true));
    let inner = h.client.clone();
    let stall = stalled.clone();
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        let hang = stall.load(Ordering::SeqCst) && req.uri().path().contains("/deployments");
        async move {
            if hang {
                std::future::pending::<()>().await;
            }
            inner.send(req).await
        }
    });
    let client = kube::Client::new(svc, NS);
    let ctx = Arc::new(
        common::test_context(&client, &h.clock).with_reconcile_timeout(Duration::from_millis(500)),
    );
    let fkd = Arc::new(h.get("fk").await);

    let err = tokio::time::timeout(
        Duration::from_secs(30),
        facekey_operator::reconcile::reconcile(fkd.clone(), ctx.clone()),
    )
    .await
    .expect("the reconcile gave up at its own timeout")
    .unwrap_err();
    assert_eq!(err.category(), "Timeout", "{err}");
    assert_eq!(ctx.metrics.errors.with_label_values(&["Timeout"]).get(), 1);
    // The status write itself is answered: GitOps tools see why.
    let seen = h.get("fk").await;
    assert_eq!(cond(&seen, "Degraded"), ("True".into(), "Timeout".into()));
    assert_eq!(
        cond(&seen, "Reconciling"),
        ("True".into(), "Timeout".into())
    );
    assert!(
        cond_message(&seen, "Degraded").contains("an API call got no answer"),
        "{}",
        cond_message(&seen, "Degraded")
    );
    assert_eq!(
        error_policy(fkd.clone(), &err, ctx.clone()),
        Action::requeue(retry_delay(&format!("{NS}/fk"), 1)),
        "retried with backoff"
    );

    stalled.store(false, Ordering::SeqCst);
    facekey_operator::reconcile::reconcile(fkd, ctx)
        .await
        .unwrap();
    assert!(h.deployment("fk").await.is_some());
    assert_eq!(cond(&h.get("fk").await, "Degraded").0, "False");
}

/// A reconcile whose status write landed but whose answer never came (a half-open connection)
/// times out; what it writes then are conditions only, on the status as stored, under their
/// own field manager: the status it just wrote stays. Before, it applied the status read at its
/// start under the operator's manager, and the server removed the new fields (here
/// `currentImage` and `url`; with a held image, `lastKnownGoodImage` and the scans, so the next
/// reconcile rolled the runtime back).
#[tokio::test]
async fn a_timed_out_reconcile_never_takes_back_the_status_it_wrote() {
    use std::sync::atomic::AtomicBool;
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1, "scanGate": {"enabled": false}}))
        .await;
    let answer_lost = Arc::new(AtomicBool::new(true));
    let inner = h.client.clone();
    let lost = answer_lost.clone();
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        let own_status_write = req.method() == http::Method::PATCH
            && req.uri().path().ends_with("/facekeydeployments/fk/status")
            && req.uri().query().is_some_and(|q| {
                q.split('&')
                    .any(|kv| kv == format!("fieldManager={}", facekey_operator::FIELD_MANAGER))
            });
        let lose = lost.load(Ordering::SeqCst) && own_status_write;
        async move {
            let answer = inner.send(req).await;
            if lose {
                // Applied, but the answer never arrives.
                std::future::pending::<()>().await;
            }
            answer
        }
    });
    let client = kube::Client::new(svc, NS);
    let ctx = Arc::new(
        common::test_context(&client, &h.clock).with_reconcile_timeout(Duration::from_secs(1)),
    );
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        facekey_operator::reconcile::reconcile(Arc::new(h.get("fk").await), ctx.clone()),
    )
    .await
    .expect("the reconcile gave up at its own timeout")
    .unwrap_err();
    assert_eq!(err.category(), "Timeout", "{err}");
    let fkd = h.get("fk").await;
    let status = fkd.status.clone().unwrap();
    assert!(
        status.current_image.is_some() && status.url.is_some(),
        "the status the reconcile wrote is kept: {status:?}"
    );
    assert_eq!(cond(&fkd, "Degraded"), ("True".into(), "Timeout".into()));

    // Answers arrive again: the next reconcile clears the condition it wrote.
    answer_lost.store(false, Ordering::SeqCst);
    facekey_operator::reconcile::reconcile(Arc::new(h.get("fk").await), ctx)
        .await
        .unwrap();
    assert_eq!(cond(&h.get("fk").await, "Degraded").0, "False");
}

#[tokio::test]
async fn invalid_spec_applies_nothing_and_waits_for_a_change() {
    let h = harness(&[]).await;
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 2, "scanGate": {"enabled": false},
               "autoscaling": {"minReplicas": 3, "maxReplicas": 2, "targetCPUUtilizationPercentage": 50}}),
    )
    .await;
    let err = h.reconcile("fk").await.unwrap_err();
    assert_eq!(err.category(), "InvalidSpec");
    assert!(h.deployment("fk").await.is_none());
    assert!(!exists(h.api::<ConfigMap>(), "fk-config").await);
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "Degraded"),
        ("True".into(), "InvalidSpec".into())
    );
    assert!(cond_message(&fkd, "Degraded").contains("not both"));
    assert_eq!(
        error_policy(Arc::new(fkd), &err, h.ctx.clone()),
        Action::await_change()
    );
}

/// Every problem `validate` finds, whatever its kind, is in the status and in a Warning Event.
#[tokio::test]
async fn every_validation_problem_reaches_status_and_a_warning_event() {
    let h = harness(&[]).await;
    h.create(
        "fk",
        json!({"image": " ", "replicas": -1, "scanGate": {"enabled": false},
               "models": {"thresholds": {"match": 1.5},
                          "scoreWeights": {},
                          "spoof": {"pvc": "models", "uri": "https://example.com/m.onnx"}},
               "alerting": {"email": {"to": "nobody", "from": "fk@example.com",
                 "smarthost": "smtp.example.com", "authSecretRef": {"name": "", "key": "pw"}}}}),
    )
    .await;
    let err = h.reconcile("fk").await.unwrap_err();
    assert_eq!(err.category(), "InvalidSpec");
    let expected = [
        "image must not be empty",
        "replicas must be >= 0, got -1",
        "thresholds.match must be in [0, 1], got 1.5",
        "scoreWeights: set exactly one of inline or configMapKeyRef",
        "spoof: set exactly one of configMap, pvc or uri",
        "spoof.uri is not supported: the runtime never downloads models",
        "alerting.email.to must be an email address",
        "alerting.email.smarthost must be host:port",
        "alerting.email.authSecretRef needs name and key",
    ];
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "Degraded"),
        ("True".into(), "InvalidSpec".into())
    );
    assert_eq!(cond(&fkd, "Ready"), ("False".into(), "InvalidSpec".into()));
    let degraded = cond_message(&fkd, "Degraded");
    let events = h.events("fk").await;
    let invalid_event = events
        .iter()
        .find(|(type_, reason, _)| type_ == "Warning" && reason == "InvalidSpec")
        .unwrap_or_else(|| panic!("no Warning InvalidSpec Event in {events:?}"));
    for problem in expected {
        assert!(
            degraded.contains(problem),
            "{problem:?} not in {degraded:?}"
        );
        assert!(
            invalid_event.2.contains(problem),
            "{problem:?} not in the Event {:?}",
            invalid_event.2
        );
    }
    assert!(!exists(h.api::<ConfigMap>(), "fk-config").await);
    assert_eq!(
        h.metric("facekey_operator_reconcile_errors_total", "InvalidSpec"),
        1
    );
}

#[tokio::test]
async fn unchanged_status_is_not_rewritten_and_keeps_transition_times() {
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1, "scanGate": {"enabled": false}}))
        .await;
    h.reconcile("fk").await.unwrap();
    h.mark_deployment_ready("fk").await;
    h.reconcile("fk").await.unwrap();
    let before = h.get("fk").await;
    let ready_since = before
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .last_transition_time
        .clone();

    h.clock.advance(600);
    h.reconcile("fk").await.unwrap();
    let after = h.get("fk").await;
    assert_eq!(
        before.resource_version(),
        after.resource_version(),
        "no status write when nothing changed"
    );
    let ready = after
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.last_transition_time, ready_since);
    assert_eq!(ready.last_transition_time.0, common::t0());
}

// ---------------------------------------------------------------------------- template store

fn pod_volume(d: &Deployment, name: &str) -> k8s_openapi::api::core::v1::Volume {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
        .clone()
}

fn count_events(events: &[(String, String, String)], reason: &str) -> usize {
    events.iter().filter(|(_, r, _)| r == reason).count()
}

#[tokio::test]
async fn no_store_is_reported_as_ephemeral_without_an_event() {
    let h = harness(&MONITORING).await;
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 2, "scanGate": {"enabled": false}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "PersistentStore"),
        ("False".into(), "Ephemeral".into())
    );
    let message = cond_message(&fkd, "PersistentStore");
    assert!(
        message.contains("lost when the pod restarts") && message.contains("spec.store"),
        "{message}"
    );
    // The default is not an incident: Ready and Degraded are unaffected, and no Event says it.
    assert_eq!(
        cond(&fkd, "Degraded"),
        ("False".into(), "AsExpected".into())
    );
    let events = h.events("fk").await;
    assert!(
        events.iter().all(|(_, _, note)| !note.contains("emptyDir")),
        "{events:?}"
    );
    let volume = pod_volume(&h.deployment("fk").await.unwrap(), "data");
    assert!(volume.empty_dir.is_some());
}

#[tokio::test]
async fn embedded_store_creates_its_claim_runs_one_pod_and_keeps_the_data() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let h = harness(&MONITORING).await;
    let fkd = h
        .create(
            "fk",
            json!({"image": IMG1, "replicas": 1, "scanGate": {"enabled": false},
                   "store": {"embedded": {"pvc": {"size": "3Gi"}}}}),
        )
        .await;
    h.reconcile("fk").await.unwrap();
    let pvc = h
        .api::<PersistentVolumeClaim>()
        .get("fk-data")
        .await
        .unwrap();
    // Retained by default (store.retainOnDelete): no owner reference, the operator's labels.
    assert!(
        pvc.metadata.owner_references.is_none(),
        "{:?}",
        pvc.metadata
    );
    assert_eq!(pvc.labels()["facekey.dev/owner"], fkd.name_any());
    assert!(pvc.annotations()["facekey.dev/retained"].contains("kept"));
    let spec = pvc.spec.unwrap();
    assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOnce"]);
    assert_eq!(
        spec.resources.unwrap().requests.unwrap()["storage"].0,
        "3Gi"
    );
    let dep = h.deployment("fk").await.unwrap();
    let dspec = dep.spec.as_ref().unwrap();
    assert_eq!(dspec.replicas, Some(1));
    assert_eq!(
        dspec.strategy.as_ref().unwrap().type_.as_deref(),
        Some("Recreate")
    );
    let volume = pod_volume(&dep, "data");
    assert_eq!(
        volume.persistent_volume_claim.unwrap().claim_name,
        "fk-data"
    );
    assert!(volume.empty_dir.is_none());
    assert!(
        !exists(
            h.api::<k8s_openapi::api::core::v1::Secret>(),
            "fk-template-key"
        )
        .await,
        "no key Secret: the runtime keeps its key on the volume"
    );
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "PersistentStore"),
        ("True".into(), "EmbeddedVolume".into())
    );

    // `kubectl scale --replicas=3`: still one pod, a condition and one Warning Event say why.
    h.patch_spec("fk", json!({"replicas": 3})).await;
    h.reconcile("fk").await.unwrap();
    h.reconcile("fk").await.unwrap();
    assert_eq!(
        h.deployment("fk").await.unwrap().spec.unwrap().replicas,
        Some(1)
    );
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "PersistentStore"),
        ("True".into(), "ReplicasLimited".into())
    );
    assert!(cond_message(&fkd, "PersistentStore").contains("spec.replicas is 3 but runs 1 pod"));
    let events = h.events("fk").await;
    assert_eq!(count_events(&events, "ReplicasLimited"), 1, "{events:?}");
    assert!(
        events
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "ReplicasLimited")
    );

    // Dropping the store keeps the claim (and the enrolments on it): never pruned.
    h.fkds()
        .patch(
            "fk",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"store": null, "replicas": 1}})),
        )
        .await
        .unwrap();
    h.reconcile("fk").await.unwrap();
    assert!(exists(h.api::<PersistentVolumeClaim>(), "fk-data").await);
    assert_eq!(
        cond(&h.get("fk").await, "PersistentStore"),
        ("False".into(), "Ephemeral".into())
    );
}

#[tokio::test]
async fn embedded_store_with_autoscaling_is_refused_with_a_condition_and_no_hpa() {
    let h = harness(&MONITORING).await;
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 1, "scanGate": {"enabled": false},
               "store": {"embedded": {}}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    // Turning autoscaling on (an API server without the CEL rule let it through).
    h.fkds()
        .patch(
            "fk",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": null, "autoscaling": {
                "minReplicas": 2, "maxReplicas": 6, "targetCPUUtilizationPercentage": 75}}})),
        )
        .await
        .unwrap();
    let err = h.reconcile("fk").await.unwrap_err();
    assert_eq!(err.category(), "InvalidSpec");
    assert!(!exists(h.api::<HorizontalPodAutoscaler>(), "fk").await);
    assert_eq!(
        h.deployment("fk").await.unwrap().spec.unwrap().replicas,
        Some(1),
        "the running pod is left as it was"
    );
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "Degraded"),
        ("True".into(), "InvalidSpec".into())
    );
    let why = "an embedded store serves one pod: autoscaling needs store.postgres";
    assert!(cond_message(&fkd, "Degraded").contains(why));
    let events = h.events("fk").await;
    assert!(
        events
            .iter()
            .any(|(t, r, note)| t == "Warning" && r == "InvalidSpec" && note.contains(why)),
        "{events:?}"
    );
    assert_eq!(
        error_policy(Arc::new(fkd), &err, h.ctx.clone()),
        Action::await_change()
    );
}

/// The generated key: one `k1:<64 hex>` line.
fn is_key_line(text: &str) -> bool {
    text.strip_prefix("k1:")
        .and_then(|rest| rest.strip_suffix('\n'))
        .is_some_and(|hex| hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

fn secret_text(s: &k8s_openapi::api::core::v1::Secret, key: &str) -> String {
    String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

#[tokio::test]
async fn postgres_store_wires_the_url_secret_and_generates_the_key_once() {
    use k8s_openapi::api::core::v1::Secret;
    let h = harness(&MONITORING).await;
    let url = "postgres://facekey:s3cret@db.example:5432/facekey?sslmode=verify-full";
    let db: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": NS},
        "data": {"url": k8s_openapi::ByteString(url.as_bytes().to_vec())},
    }))
    .unwrap();
    h.api::<Secret>()
        .create(&PostParams::default(), &db)
        .await
        .unwrap();
    h.create(
            "fk",
            json!({"image": IMG1, "scanGate": {"enabled": false},
                   "autoscaling": {"minReplicas": 2, "maxReplicas": 4, "targetCPUUtilizationPercentage": 60},
                   "store": {"postgres": {"urlSecretRef": {"name": "db", "key": "url"}}}}),
        )
        .await;
    h.reconcile("fk").await.unwrap();

    let dep = h.deployment("fk").await.unwrap();
    let url_volume = pod_volume(&dep, "database-url").secret.unwrap();
    assert_eq!(url_volume.secret_name.as_deref(), Some("db"));
    assert_eq!(url_volume.items.as_ref().unwrap()[0].key, "url");
    let key_volume = pod_volume(&dep, "template-key").secret.unwrap();
    assert_eq!(key_volume.secret_name.as_deref(), Some("fk-template-key"));
    let cm = h.api::<ConfigMap>().get("fk-config").await.unwrap();
    let data = cm.data.unwrap();
    assert_eq!(
        data["FACEKEY_DATABASE_URL_FILE"],
        "/etc/facekey/database/url"
    );
    assert_eq!(
        data["FACEKEY_TEMPLATE_KEY_FILE"],
        "/etc/facekey/template-key/template.key"
    );
    // The URL is never copied anywhere.
    let everything = format!(
        "{}{}",
        serde_json::to_string(&dep).unwrap(),
        serde_json::to_string(
            &h.api::<ConfigMap>()
                .list(&Default::default())
                .await
                .unwrap()
        )
        .unwrap()
    );
    assert!(!everything.contains("s3cret"));
    assert!(
        exists(h.api::<HorizontalPodAutoscaler>(), "fk").await,
        "postgres scales"
    );

    let secret = h.api::<Secret>().get("fk-template-key").await.unwrap();
    let key = secret_text(&secret, "template.key");
    assert!(is_key_line(&key), "not one k1:<64 hex> line");
    // An external database outlives the resource, so its key must too: no owner reference.
    assert!(
        secret.metadata.owner_references.is_none(),
        "deleting the FaceKeyDeployment must not delete the key of an external database"
    );
    assert!(secret.metadata.annotations.as_ref().unwrap()["facekey.dev/retained"].contains("kept"));
    assert_eq!(
        secret.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "facekey-operator"
    );
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "PersistentStore"),
        ("True".into(), "PostgreSQL".into())
    );

    // Next reconciles: the Secret is not regenerated, and one Event said it was created.
    h.reconcile("fk").await.unwrap();
    h.patch_spec("fk", json!({"image": IMG2})).await;
    h.reconcile("fk").await.unwrap();
    let again = h.api::<Secret>().get("fk-template-key").await.unwrap();
    assert_eq!(secret_text(&again, "template.key"), key);
    let events = h.events("fk").await;
    assert_eq!(count_events(&events, "TemplateKeyCreated"), 1, "{events:?}");
    assert!(
        events.iter().all(|(_, _, note)| !note.contains(&key[3..])),
        "the key never appears in an Event"
    );
}

#[tokio::test]
async fn an_existing_template_key_secret_is_never_overwritten() {
    use k8s_openapi::api::core::v1::Secret;
    let h = harness(&MONITORING).await;
    let mine = format!("k9:{}\nk1:{}\n", "ab".repeat(32), "cd".repeat(32));
    let existing: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "fk-template-key", "namespace": NS},
        "data": {"template.key": k8s_openapi::ByteString(mine.clone().into_bytes())},
    }))
    .unwrap();
    h.api::<Secret>()
        .create(&PostParams::default(), &existing)
        .await
        .unwrap();
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 2, "scanGate": {"enabled": false},
               "store": {"postgres": {"urlSecretRef": {"name": "db", "key": "url"}}}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    h.reconcile("fk").await.unwrap();
    let after = h.api::<Secret>().get("fk-template-key").await.unwrap();
    assert_eq!(secret_text(&after, "template.key"), mine);
    assert_eq!(count_events(&h.events("fk").await, "TemplateKeyCreated"), 0);
}

#[tokio::test]
async fn cloudnativepg_cluster_is_created_when_its_crd_is_installed() {
    use facekey_operator::desired::ChildKind;
    let h = harness(&[
        OptionalCrd::ServiceMonitor,
        OptionalCrd::PrometheusRule,
        OptionalCrd::AlertmanagerConfig,
        OptionalCrd::CloudNativePgCluster,
    ])
    .await;
    let fkd = h
        .create(
            "fk",
            json!({"image": IMG1, "replicas": 2, "scanGate": {"enabled": false},
                   "store": {"postgres": {"cloudNativePG": {"instances": 3, "storage": {"size": "8Gi"}}}}}),
        )
        .await;
    h.reconcile("fk").await.unwrap();
    let cluster = dynamic(&h, ChildKind::PostgresCluster)
        .get("fk-db")
        .await
        .unwrap();
    assert_eq!(cluster.data["spec"]["instances"], 3);
    assert_eq!(cluster.data["spec"]["storage"]["size"], "8Gi");
    assert_eq!(
        cluster.data["spec"]["bootstrap"]["initdb"]["database"],
        "facekey"
    );
    // Retained by default (store.retainOnDelete): no owner reference, the operator's labels,
    // and its generated template key is kept with it.
    assert!(cluster.metadata.owner_references.is_none());
    assert_eq!(cluster.labels()["facekey.dev/owner"], fkd.name_any());
    let key = h
        .api::<k8s_openapi::api::core::v1::Secret>()
        .get("fk-template-key")
        .await
        .unwrap();
    assert!(key.metadata.owner_references.is_none());
    assert!(key.annotations()["facekey.dev/retained"].contains("CloudNativePG"));
    let dep = h.deployment("fk").await.unwrap();
    let url_volume = pod_volume(&dep, "database-url").secret.unwrap();
    assert_eq!(url_volume.secret_name.as_deref(), Some("fk-db-app"));
    assert_eq!(url_volume.items.as_ref().unwrap()[0].key, "uri");
    assert!(
        exists(
            h.api::<k8s_openapi::api::core::v1::Secret>(),
            "fk-template-key"
        )
        .await
    );
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "PersistentStore"),
        ("True".into(), "CloudNativePG".into())
    );
    assert_eq!(cond(&fkd, "Degraded").0, "False");

    // CloudNativePG reports the Cluster as it comes up: the condition follows its word.
    let set_cluster_status = |status: serde_json::Value| {
        let clusters = dynamic(&h, ChildKind::PostgresCluster);
        async move {
            clusters
                .patch_status(
                    "fk-db",
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": status })),
                )
                .await
                .unwrap();
        }
    };
    set_cluster_status(json!({"phase": "Setting up primary", "instances": 3, "readyInstances": 0,
        "conditions": [{"type": "Ready", "status": "False", "reason": "ClusterIsNotReady",
                        "message": "Cluster Is Not Ready", "lastTransitionTime": "2025-11-20T10:00:00Z"}]}))
    .await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "PersistentStore"),
        ("False".into(), "DatabaseNotReady".into())
    );
    let message = cond_message(&fkd, "PersistentStore");
    assert!(
        message.contains("\"Setting up primary\", 0/3 instances ready"),
        "{message}"
    );
    set_cluster_status(json!({"phase": "Cluster in healthy state", "readyInstances": 3,
        "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterIsReady",
                        "message": "Cluster is Ready", "lastTransitionTime": "2025-11-20T10:05:00Z"}]}))
    .await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "PersistentStore"),
        ("True".into(), "CloudNativePG".into())
    );
    assert!(cond_message(&fkd, "PersistentStore").contains("3/3 instances ready"));

    // Switching to an existing database keeps the Cluster (its data): never pruned.
    h.patch_spec(
        "fk",
        json!({"store": {"postgres": {"cloudNativePG": null,
            "urlSecretRef": {"name": "db", "key": "url"}}}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    assert!(exists(dynamic(&h, ChildKind::PostgresCluster), "fk-db").await);
    let dep = h.deployment("fk").await.unwrap();
    assert_eq!(
        pod_volume(&dep, "database-url")
            .secret
            .unwrap()
            .secret_name
            .as_deref(),
        Some("db")
    );
}

#[tokio::test]
async fn cloudnativepg_without_its_crd_is_reported_until_it_is_installed() {
    use facekey_operator::desired::ChildKind;
    let h = harness(&MONITORING).await;
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 2, "scanGate": {"enabled": false},
               "store": {"postgres": {"cloudNativePG": {}}}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "PersistentStore"),
        ("False".into(), "CloudNativePGNotInstalled".into())
    );
    assert_eq!(
        cond(&fkd, "Degraded"),
        ("True".into(), "CloudNativePGNotInstalled".into())
    );
    // Waiting cannot install a CRD: kstatus and Flux must see it stalled, not in progress.
    assert_eq!(
        cond(&fkd, "Stalled"),
        ("True".into(), "CloudNativePGNotInstalled".into())
    );
    assert_eq!(cond(&fkd, "Reconciling").0, "False");
    assert!(cond_message(&fkd, "PersistentStore").contains("clusters.postgresql.cnpg.io"));
    assert_eq!(
        cond(&fkd, "MonitoringReady"),
        ("True".into(), "Applied".into()),
        "not a monitoring matter"
    );
    let events = h.events("fk").await;
    assert!(
        events.iter().any(|(t, r, note)| t == "Warning"
            && r == "Degraded"
            && note.contains("CloudNativePGNotInstalled")),
        "{events:?}"
    );
    // The pods are wired to the Secret CloudNativePG will create, and wait for it.
    let dep = h.deployment("fk").await.unwrap();
    assert_eq!(
        pod_volume(&dep, "database-url")
            .secret
            .unwrap()
            .secret_name
            .as_deref(),
        Some("fk-db-app")
    );

    // The CloudNativePG operator gets installed: the next reconcile creates the Cluster.
    let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "clusters.postgresql.cnpg.io"},
            "spec": {"group": "postgresql.cnpg.io", "names": {"kind": "Cluster", "plural": "clusters"},
                     "scope": "Namespaced", "versions": []},
        }))
        .unwrap();
    Api::all(h.client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
    h.reconcile("fk").await.unwrap();
    assert!(exists(dynamic(&h, ChildKind::PostgresCluster), "fk-db").await);
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "PersistentStore"),
        ("True".into(), "CloudNativePG".into())
    );
    assert_eq!(cond(&fkd, "Degraded").0, "False");
}

/// Without `auth.keysSecretRef` the operator creates `<name>-api-keys` once: an `admin` key's
/// keys-file line (what the pods mount) and the key itself (for an admin), owned by the resource;
/// later reconciles and an image change leave it alone, and the key is nowhere else.
#[tokio::test]
async fn generated_api_key_is_created_once_owned_and_shown_nowhere_else() {
    use k8s_openapi::api::core::v1::Secret;
    use sha2::{Digest, Sha256};
    let h = harness(&MONITORING).await;
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 1, "scanGate": {"enabled": false}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();

    let secret = h.api::<Secret>().get("fk-api-keys").await.unwrap();
    let key = secret_text(&secret, "admin-key");
    let line = secret_text(&secret, "api-keys");
    let body = key.strip_prefix("fk_").expect("fk_ prefix");
    assert_eq!(body.len(), 43);
    let hex: String = Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(line, format!("admin:admin:{hex}\n"));
    assert_eq!(
        secret.metadata.owner_references.as_ref().unwrap()[0].name,
        "fk",
        "the generated key goes with the resource"
    );
    // The pods mount only the keys file, as a directory (Secret updates reach them).
    let dep = h.deployment("fk").await.unwrap();
    let volume = pod_volume(&dep, "api-keys").secret.unwrap();
    assert_eq!(volume.secret_name.as_deref(), Some("fk-api-keys"));
    assert_eq!(
        volume
            .items
            .unwrap()
            .iter()
            .map(|i| (i.key.as_str(), i.path.as_str()))
            .collect::<Vec<_>>(),
        [("api-keys", "api-keys")]
    );
    let mounts = dep
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .volume_mounts
        .clone()
        .unwrap();
    let mount = mounts.iter().find(|m| m.name == "api-keys").unwrap();
    assert_eq!(mount.mount_path, "/etc/facekey/api-keys");
    assert!(mount.sub_path.is_none() && mount.read_only == Some(true));

    h.reconcile("fk").await.unwrap();
    h.patch_spec("fk", json!({"image": IMG2})).await;
    h.reconcile("fk").await.unwrap();
    let again = h.api::<Secret>().get("fk-api-keys").await.unwrap();
    assert_eq!(secret_text(&again, "admin-key"), key);
    assert_eq!(secret_text(&again, "api-keys"), line);
    let events = h.events("fk").await;
    assert_eq!(count_events(&events, "ApiKeyCreated"), 1, "{events:?}");
    // Neither the key nor its hash in Events, status, ConfigMaps or the Deployment.
    let everything = format!(
        "{}{}{}{}",
        serde_json::to_string(&events).unwrap(),
        serde_json::to_string(&h.get("fk").await).unwrap(),
        serde_json::to_string(
            &h.api::<ConfigMap>()
                .list(&Default::default())
                .await
                .unwrap()
        )
        .unwrap(),
        serde_json::to_string(&h.deployment("fk").await).unwrap(),
    );
    assert!(!everything.contains(body) && !everything.contains(&hex));
}

/// An existing `<name>-api-keys` (rotated by hand, say) is never overwritten; with
/// `auth.keysSecretRef` nothing is generated and the user's Secret is mounted.
#[tokio::test]
async fn api_keys_are_never_overwritten_and_a_given_secret_is_mounted() {
    use k8s_openapi::api::core::v1::Secret;
    let h = harness(&MONITORING).await;
    let mine = format!("ops:verify,enrol:{}:20\n", "ab".repeat(32));
    let existing: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "fk-api-keys", "namespace": NS},
        "data": {"api-keys": k8s_openapi::ByteString(mine.clone().into_bytes())},
    }))
    .unwrap();
    h.api::<Secret>()
        .create(&PostParams::default(), &existing)
        .await
        .unwrap();
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 1, "scanGate": {"enabled": false}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    h.reconcile("fk").await.unwrap();
    let after = h.api::<Secret>().get("fk-api-keys").await.unwrap();
    assert_eq!(secret_text(&after, "api-keys"), mine);
    assert!(!after.data.unwrap().contains_key("admin-key"));
    assert_eq!(count_events(&h.events("fk").await, "ApiKeyCreated"), 0);

    h.create(
        "fk2",
        json!({"image": IMG1, "replicas": 1, "scanGate": {"enabled": false},
               "auth": {"keysSecretRef": {"name": "team-keys", "key": "keys"}, "metrics": "key"}}),
    )
    .await;
    h.reconcile("fk2").await.unwrap();
    assert!(!exists(h.api::<Secret>(), "fk2-api-keys").await);
    let dep = h.deployment("fk2").await.unwrap();
    let volume = pod_volume(&dep, "api-keys").secret.unwrap();
    assert_eq!(volume.secret_name.as_deref(), Some("team-keys"));
    assert_eq!(volume.items.unwrap()[0].key, "keys");
    let data = h
        .api::<ConfigMap>()
        .get("fk2-config")
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(
        data["FACEKEY_API_KEYS_FILE"],
        "/etc/facekey/api-keys/api-keys"
    );
    assert_eq!(data["FACEKEY_METRICS_AUTH"], "key");
    assert_eq!(data["FACEKEY_METRICS_LISTEN"], "[::]:9090");
}

/// The NetworkPolicy is applied with the other children, and pruned once disabled.
#[tokio::test]
async fn network_policy_is_applied_and_pruned_when_disabled() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let h = harness(&MONITORING).await;
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 1, "scanGate": {"enabled": false}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    let np = h.api::<NetworkPolicy>().get("fk").await.unwrap();
    assert_eq!(np.metadata.owner_references.unwrap()[0].name, "fk");
    let spec = np.spec.unwrap();
    assert_eq!(spec.policy_types.unwrap(), ["Ingress"]);
    assert_eq!(spec.ingress.unwrap().len(), 2);
    h.patch_spec("fk", json!({"networkPolicy": {"enabled": false}}))
        .await;
    h.reconcile("fk").await.unwrap();
    assert!(!exists(h.api::<NetworkPolicy>(), "fk").await, "pruned");
}

/// A runtime pod of `fk` as the kubelet reports it: running `image`, resolved to `image_id`,
/// controlled by a ReplicaSet (`None`: a pod someone made with the labels).
async fn runtime_pod(h: &common::Harness, name: &str, image: &str, image_id: &str) {
    labelled_pod(h, name, image, image_id, Some("fk-5d8f7c6b9")).await;
}

async fn labelled_pod(
    h: &common::Harness,
    name: &str,
    image: &str,
    image_id: &str,
    replica_set: Option<&str>,
) {
    let owners: Vec<serde_json::Value> = replica_set
        .map(|rs| {
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                   "uid": "0b6e6a43-6d41-4a4e-9c11-5f3b1d6f0a7e", "controller": true})
        })
        .into_iter()
        .collect();
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS, "ownerReferences": owners,
                     "labels": facekey_operator::labels::selector_labels("fk")},
        "spec": {"containers": [{"name": "runtime", "image": image}]},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "runtime", "image": image, "imageID": image_id, "ready": true,
            "restartCount": 0, "state": {"running": {}}
        }]},
    }))
    .unwrap();
    h.api::<k8s_openapi::api::core::v1::Pod>()
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

#[tokio::test]
async fn turning_the_gate_on_holds_the_running_tag_by_its_digest() {
    let h = harness(&[]).await;
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 2, "scanGate": {"enabled": false}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1));
    // What containerd reports, and what Docker's shim did; a pod of another image and one
    // whose runtime gives only the config ID say nothing about the tag.
    let digest = IMG1_DIGEST.split_once('@').unwrap().1;
    runtime_pod(&h, "fk-a", IMG1, IMG1_DIGEST).await;
    runtime_pod(
        &h,
        "fk-b",
        IMG1,
        &format!("docker-pullable://{IMG1_DIGEST}"),
    )
    .await;
    let other = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    runtime_pod(
        &h,
        "fk-c",
        "elsewhere/image:1",
        &format!("elsewhere/image@{other}"),
    )
    .await;
    runtime_pod(&h, "fk-d", IMG1, other).await;
    // Pods anyone who may create pods here could make: one with the labels and no ReplicaSet,
    // one naming an older release of the repository by digest beside the tag.
    let old = "ghcr.io/facekey/runtime@sha256:3333333333333333333333333333333333333333333333333333333333333333";
    labelled_pod(&h, "fk-e", IMG1, old, None).await;
    let tagged_old = format!("{IMG1}@{}", old.split_once('@').unwrap().1);
    runtime_pod(&h, "fk-f", &tagged_old, old).await;

    // While the scan runs, a pod started on a new node pulls this digest, not what the tag
    // points to now.
    h.patch_spec("fk", json!({"scanGate": {"enabled": true}}))
        .await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "ScanPending".into())
    );
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));
    assert_eq!(
        fkd.status.unwrap().last_known_good_image.as_deref(),
        Some(IMG1_DIGEST)
    );
    let job = scan_job_name("fk", IMG1);
    assert_eq!(h.jobs().await, vec![job.clone()], "the tag is scanned");

    // The scan resolves the tag to the same digest: nothing rolls out again.
    h.complete_scan(&job, "runtime-0.1.0-pass.json", IMG1).await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("True".into(), "ScanPassed".into())
    );
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));
    assert!(IMG1_DIGEST.ends_with(digest));
}

#[tokio::test]
async fn a_held_tag_whose_pods_disagree_stays_a_tag() {
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1, "scanGate": {"enabled": false}}))
        .await;
    h.reconcile("fk").await.unwrap();
    let moved = "ghcr.io/facekey/runtime@sha256:2222222222222222222222222222222222222222222222222222222222222222";
    runtime_pod(&h, "fk-a", IMG1, IMG1_DIGEST).await;
    runtime_pod(&h, "fk-b", IMG1, moved).await;
    h.patch_spec("fk", json!({"scanGate": {"enabled": true}}))
        .await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1));
}
