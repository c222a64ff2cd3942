//! The scan verdict as state, digest pinning, drift repair, last-known-good and kstatus-style
//! readiness, with scan Jobs and their pods living and dying as a real cluster makes them
//! (`common::lifecycle`: random pod names found by the Job's uid, TTL deletion).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::lifecycle::ScanOutcome;
use common::{Harness, NS, cond, cond_message, harness, scan_summary_of};
use facekey_crds::ScanVerdict;
use facekey_operator::desired::OptionalCrd;
use facekey_operator::labels::scan_job_name;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::{Api, ResourceExt};
use serde_json::json;

const IMG1: &str = "ghcr.io/facekey/runtime:0.1.0";
const IMG2: &str = "ghcr.io/facekey/runtime:0.2.0";
/// The digests the recorded scans resolved the tags to (`Metadata.RepoDigests`).
const IMG1_DIGEST: &str = "ghcr.io/facekey/runtime@sha256:1f3c5a7e9b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a";
const IMG2_DIGEST: &str = "ghcr.io/facekey/runtime@sha256:8e0a2c4e6a8c0e2a4c6e8a0c2e4a6c8e0a2c4e6a8c0e2a4c6e8a0c2e4a6c8e0a";
/// One hour and a second: past the scan Jobs' `ttlSecondsAfterFinished`.
const PAST_JOB_TTL: i64 = 3601;

/// A reconciler context whose reads of Jobs the API server answers 500 (a timed-out etcd).
fn jobs_read_failing(h: &Harness) -> std::sync::Arc<facekey_operator::reconcile::Context> {
    std::sync::Arc::new(common::test_context(
        &common::answering_gets(
            h.client.clone(),
            "/jobs/",
            500,
            "etcdserver: request timed out",
        ),
        &h.clock,
    ))
}

fn sha(pinned: &str) -> &str {
    pinned.split_once('@').unwrap().1
}

fn count(events: &[(String, String)], reason: &str) -> usize {
    events.iter().filter(|(_, r)| r == reason).count()
}

fn transition_time(h: &facekey_crds::FaceKeyDeployment, type_: &str) -> String {
    h.status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap()
        .last_transition_time
        .0
        .to_string()
}

/// `fk` running IMG1 (scanned, passed, rolled out, available) with `extra` spec fields.
async fn running_img1(h: &Harness, extra: serde_json::Value) {
    let mut spec = json!({"image": IMG1, "replicas": 2});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    h.create("fk", spec).await;
    h.reconcile("fk").await.unwrap();
    // The blocked-rollout counter is exposed at 0 before anything is blocked, so the alert's
    // increase() sees the first block (a series born at 1 shows none).
    let text = h.ctx.metrics.encode().unwrap();
    assert!(
        text.lines().any(
            |l| l.starts_with("facekey_operator_blocked_rollouts_total{")
                && l.contains(&format!("namespace=\"{NS}\""))
                && l.contains("name=\"fk\"")
                && l.ends_with(" 0")
        ),
        "{text}"
    );
    h.complete_scan(&scan_job_name("fk", IMG1), "runtime-0.1.0-pass.json", IMG1)
        .await;
    h.reconcile("fk").await.unwrap();
    h.mark_deployment_ready("fk").await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));
}

/// From `running_img1`: `spec.image` IMG2, scanned and blocked (1 CRITICAL, 3 HIGH).
async fn img2_blocked(h: &Harness) {
    h.patch_spec("fk", json!({"image": IMG2})).await;
    h.reconcile("fk").await.unwrap();
    h.complete_scan(&scan_job_name("fk", IMG2), "runtime-0.2.0-fail.json", IMG2)
        .await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "VulnerabilitiesFound".into())
    );
    assert_eq!(h.metric("facekey_operator_blocked_rollouts_total", NS), 1);
}

#[tokio::test]
async fn the_deployment_runs_the_scanned_digest_and_ready_follows_it() {
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1})).await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    // Gated: kstatus sees work in progress, Ready says why.
    assert_eq!(
        cond(&fkd, "Ready"),
        ("False".into(), "RolloutBlocked".into())
    );
    assert!(cond_message(&fkd, "Ready").contains("waiting for its scan"));
    assert_eq!(
        cond(&fkd, "Reconciling"),
        ("True".into(), "ScanPending".into())
    );
    assert_eq!(cond(&fkd, "Stalled").0, "False");
    assert_eq!(fkd.status.as_ref().unwrap().observed_generation, Some(1));

    let job = scan_job_name("fk", IMG1);
    let pod = h
        .run_scan_job(
            &job,
            ScanOutcome::Summary(scan_summary_of("runtime-0.1.0-pass.json", IMG1)),
        )
        .await;
    assert!(
        pod.starts_with(&format!("{job}-")) && pod.len() == job.len() + 6,
        "{pod}"
    );
    h.reconcile("fk").await.unwrap();
    // The tag was resolved by the scan; the Deployment runs exactly that digest.
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));
    let fkd = h.get("fk").await;
    let status = fkd.status.clone().unwrap();
    assert_eq!(status.last_known_good_image.as_deref(), Some(IMG1_DIGEST));
    assert_eq!(status.current_image.as_deref(), Some(IMG1_DIGEST));
    let scan = &status.scans[0];
    assert_eq!(
        (
            scan.image.as_str(),
            scan.digest.as_deref(),
            scan.verdict,
            scan.policy_hash.len()
        ),
        (IMG1, Some(sha(IMG1_DIGEST)), ScanVerdict::Passed, 16)
    );
    assert_eq!(
        scan.scanned_at.as_ref().unwrap().0.to_string(),
        "2025-11-20T09:14:03Z"
    );
    // Admitted and applied, but the Deployment controller has not rolled it out yet.
    assert_eq!(cond(&fkd, "Ready"), ("False".into(), "NotAvailable".into()));
    assert_eq!(
        cond(&fkd, "Reconciling"),
        ("True".into(), "RollingOut".into())
    );

    h.mark_deployment_ready("fk").await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(cond(&fkd, "Ready"), ("True".into(), "Available".into()));
    assert_eq!(
        cond_message(&fkd, "Ready"),
        format!("1/1 replicas available running {IMG1_DIGEST}")
    );
    assert_eq!(cond(&fkd, "Reconciling").0, "False");
    assert_eq!(cond(&fkd, "Stalled").0, "False");
    // Every condition describes the current generation.
    for c in &fkd.status.as_ref().unwrap().conditions {
        assert_eq!(c.observed_generation, Some(1), "{}", c.type_);
    }

    // A Deployment controller that has not observed the latest template is not Ready.
    let deployments: Api<Deployment> = h.api();
    let mut d = deployments.get_status("fk").await.unwrap();
    d.status.as_mut().unwrap().observed_generation = Some(0);
    d.metadata.managed_fields = None;
    deployments
        .replace_status("fk", &PostParams::default(), &d)
        .await
        .unwrap();
    h.reconcile("fk").await.unwrap();
    assert_eq!(cond(&h.get("fk").await, "Ready").0, "False");
}

#[tokio::test]
async fn a_job_deleted_by_its_ttl_causes_no_rescan_no_event_and_no_second_count() {
    let h = harness(&[]).await;
    running_img1(&h, json!({})).await;
    img2_blocked(&h).await;
    let before = h.get("fk").await;
    let events_before = h.event_reasons("fk").await;
    assert_eq!(count(&events_before, "RolloutBlocked"), 1);
    let created = h.metric("facekey_operator_scan_jobs_created_total", NS);
    assert_eq!(created, 2);

    // An hour later the TTL controller removes the finished Job and the garbage collector its pod.
    h.clock.advance(PAST_JOB_TTL);
    let expired = h.expire_finished_jobs().await;
    assert!(expired.contains(&scan_job_name("fk", IMG2)), "{expired:?}");
    assert!(h.jobs().await.is_empty());
    assert!(h.pods().await.is_empty(), "the Job's pod went with it");

    for _ in 0..3 {
        h.reconcile("fk").await.unwrap();
        h.clock.advance(300);
    }
    assert!(h.jobs().await.is_empty(), "no rescan");
    assert_eq!(
        h.metric("facekey_operator_scan_jobs_created_total", NS),
        created
    );
    assert_eq!(h.metric("facekey_operator_blocked_rollouts_total", NS), 1);
    assert_eq!(h.event_reasons("fk").await, events_before, "no new Event");
    let after = h.get("fk").await;
    assert_eq!(
        before.resource_version(),
        after.resource_version(),
        "the status did not change"
    );
    assert_eq!(
        cond(&after, "ScanGatePassed"),
        ("False".into(), "VulnerabilitiesFound".into())
    );
    assert_eq!(
        transition_time(&after, "ScanGatePassed"),
        transition_time(&before, "ScanGatePassed")
    );
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));
    // The recorded verdicts: IMG2's (blocked) and the last-known-good IMG1's (passed).
    let scans = after.status.unwrap().scans;
    let verdicts: Vec<_> = scans
        .iter()
        .map(|s| (s.image.as_str(), s.verdict, s.counts.critical))
        .collect();
    assert_eq!(
        verdicts,
        vec![
            (IMG2, ScanVerdict::Blocked, 1),
            (IMG1, ScanVerdict::Passed, 0)
        ]
    );
}

#[tokio::test]
async fn while_blocked_ready_is_false_and_status_names_the_serving_image() {
    let h = harness(&[]).await;
    running_img1(&h, json!({})).await;
    img2_blocked(&h).await;
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "Ready"),
        ("False".into(), "RolloutBlocked".into())
    );
    let msg = cond_message(&fkd, "Ready");
    assert!(
        msg.contains(IMG2) && msg.contains(&format!("{IMG1_DIGEST} keeps serving (2/2 available)")),
        "{msg}"
    );
    assert_eq!(
        cond(&fkd, "Stalled"),
        ("True".into(), "ImageBlocked".into())
    );
    assert_eq!(cond(&fkd, "Reconciling").0, "False");
    let status = fkd.status.unwrap();
    assert_eq!(status.current_image.as_deref(), Some(IMG1_DIGEST));
    assert_eq!(status.last_known_good_image.as_deref(), Some(IMG1_DIGEST));
    assert_eq!(status.ready_replicas, 2, "the old pods keep serving");
}

#[tokio::test]
async fn the_result_pod_is_found_by_the_jobs_uid_not_its_name() {
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1})).await;
    h.reconcile("fk").await.unwrap();
    let job = scan_job_name("fk", IMG1);
    // A pod of an earlier Job of the same name, still there, says the image is vulnerable.
    let stale = scan_summary_of("runtime-0.2.0-fail.json", IMG1);
    h.leftover_pod_of_earlier_job(&job, &stale).await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(
        cond(&h.get("fk").await, "ScanGatePassed"),
        ("False".into(), "ScanPending".into()),
        "the running Job's result is awaited, not the leftover's"
    );
    h.complete_scan(&job, "runtime-0.1.0-pass.json", IMG1).await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("True".into(), "ScanPassed".into())
    );
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));
    assert_eq!(h.metric("facekey_operator_blocked_rollouts_total", NS), 0);
}

/// The Job's uid is readable and its pods' labels can be set by anyone who may create pods in
/// the namespace: a pod with those labels (or even a controller reference to the Job) saying the
/// image is clean is not the scan's result unless the Job controls it and it runs the Job's
/// template.
#[tokio::test]
async fn a_forged_result_pod_is_not_the_scans_result() {
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1})).await;
    h.reconcile("fk").await.unwrap();
    let job = scan_job_name("fk", IMG1);
    let clean = scan_summary_of("runtime-0.1.0-pass.json", IMG1);
    h.forged_scan_pod(&job, &clean, false).await;
    h.forged_scan_pod(&job, &clean, true).await;
    h.complete_scan(&job, "runtime-0.2.0-fail.json", IMG1).await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "VulnerabilitiesFound".into()),
        "{:?}",
        cond_message(&fkd, "ScanGatePassed")
    );
    assert!(h.deployment("fk").await.is_none());

    // With only forged pods left (the Job's own gone), the scan fails closed and says why.
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1})).await;
    h.reconcile("fk").await.unwrap();
    h.forged_scan_pod(&job, &clean, true).await;
    h.finish_job(&job, true).await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "ScanFailed".into())
    );
    let message = cond_message(&fkd, "ScanGatePassed");
    assert!(message.contains("runs its template"), "{message}");
    assert!(h.deployment("fk").await.is_none());
}

/// A resource deleted and created again under its name (a forced GitOps sync) finds the scan Job
/// of its predecessor, which the garbage collector is removing: the scan waits for it, without
/// recording a failed scan or stalling (which Argo CD and Flux would report as a failure), and
/// runs once it is gone.
#[tokio::test]
async fn a_predecessors_scan_job_is_awaited_not_failed() {
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1})).await;
    h.reconcile("fk").await.unwrap();
    let job = scan_job_name("fk", IMG1);
    let jobs = h.api::<k8s_openapi::api::batch::v1::Job>();
    let mut refs = jobs
        .get(&job)
        .await
        .unwrap()
        .metadata
        .owner_references
        .unwrap();
    refs[0].uid = "0d1e2f3a-0000-4b5c-8d9e-0f1a2b3c4d5e".into();
    jobs.patch(
        &job,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"ownerReferences": refs}})),
    )
    .await
    .unwrap();
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "ScanPending".into()),
        "{}",
        cond_message(&fkd, "ScanGatePassed")
    );
    assert_eq!(cond(&fkd, "Stalled").0, "False");
    let scans = fkd.status.clone().unwrap_or_default().scans;
    assert!(
        scans.iter().all(|s| s.verdict != ScanVerdict::Failed),
        "{scans:?}"
    );
    // The garbage collector removes it: this resource's own scan starts.
    jobs.delete(&job, &DeleteParams::default()).await.unwrap();
    h.reconcile("fk").await.unwrap();
    assert!(jobs.get_opt(&job).await.unwrap().is_some());
    h.complete_scan(&job, "runtime-0.1.0-pass.json", IMG1).await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(
        cond(&h.get("fk").await, "ScanGatePassed"),
        ("True".into(), "ScanPassed".into())
    );
}

#[tokio::test]
async fn a_succeeded_job_whose_pods_are_gone_fails_closed() {
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1})).await;
    h.reconcile("fk").await.unwrap();
    let job = scan_job_name("fk", IMG1);
    h.run_scan_job(&job, ScanOutcome::NoMessage).await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "ScanFailed".into())
    );
    assert!(h.deployment("fk").await.is_none());
}

fn vulnerability_reports(h: &Harness) -> Api<DynamicObject> {
    Api::namespaced_with(
        h.client.clone(),
        NS,
        &ApiResource {
            group: "aquasecurity.github.io".into(),
            version: "v1alpha1".into(),
            api_version: "aquasecurity.github.io/v1alpha1".into(),
            kind: "VulnerabilityReport".into(),
            plural: "vulnerabilityreports".into(),
        },
    )
}

async fn add_report(h: &Harness, name: &str, artifact: serde_json::Value) {
    let vr = json!({
        "apiVersion": "aquasecurity.github.io/v1alpha1",
        "kind": "VulnerabilityReport",
        "metadata": {"name": name, "namespace": NS},
        "report": {
            "artifact": artifact,
            "registry": {"server": "ghcr.io"},
            "updateTimestamp": "2025-11-20T08:00:00Z",
            "vulnerabilities": []
        }
    });
    vulnerability_reports(h)
        .create(&PostParams::default(), &serde_json::from_value(vr).unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_vulnerability_report_counts_only_for_the_digest_it_scanned() {
    let h = harness(&OptionalCrd::ALL).await;
    // A clean report of the tag without a digest, and one of another digest.
    add_report(
        &h,
        "no-digest",
        json!({"repository": "facekey/runtime", "tag": "0.2.0"}),
    )
    .await;
    add_report(
        &h,
        "other-digest",
        json!({"repository": "facekey/runtime", "digest": sha(IMG1_DIGEST)}),
    )
    .await;
    h.create("fk", json!({"image": IMG2_DIGEST})).await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(
        h.jobs().await,
        vec![scan_job_name("fk", IMG2_DIGEST)],
        "neither report describes the pinned digest: scan it"
    );
    assert!(h.deployment("fk").await.is_none());

    // A report of exactly that digest is used, and its digest is what runs.
    add_report(
        &h,
        "that-digest",
        json!({"repository": "facekey/runtime", "tag": "0.2.0", "digest": sha(IMG2_DIGEST)}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG2_DIGEST));
    let scan = h.get("fk").await.status.unwrap().scans[0].clone();
    assert_eq!(
        scan.report_ref.as_deref(),
        Some("VulnerabilityReport/that-digest")
    );
}

#[tokio::test]
async fn a_hand_edited_image_is_reverted_to_the_last_admitted_digest() {
    let h = harness(&[]).await;
    running_img1(&h, json!({})).await;

    // Someone runs the mutable tag (or anything else) by hand: reverted, not "already running".
    h.set_image_by_hand("fk", IMG2).await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));
    assert!(
        h.jobs()
            .await
            .iter()
            .all(|j| *j != scan_job_name("fk", IMG2))
    );

    // While IMG2 is blocked, editing the Deployment to IMG2 does not let it through either.
    img2_blocked(&h).await;
    h.set_image_by_hand("fk", IMG2).await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "VulnerabilitiesFound".into())
    );
    assert_eq!(
        fkd.status.unwrap().last_known_good_image.as_deref(),
        Some(IMG1_DIGEST)
    );
    assert_eq!(h.metric("facekey_operator_blocked_rollouts_total", NS), 1);
}

#[tokio::test]
async fn a_deployment_deleted_while_blocked_is_recreated_with_the_last_known_good_digest() {
    let h = harness(&[]).await;
    running_img1(&h, json!({})).await;
    img2_blocked(&h).await;
    h.clock.advance(PAST_JOB_TTL);
    h.expire_finished_jobs().await;
    h.api::<Deployment>()
        .delete("fk", &DeleteParams::default())
        .await
        .unwrap();

    h.reconcile("fk").await.unwrap();
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));
    assert!(h.jobs().await.is_empty(), "no rescan for it");
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "Ready"),
        ("False".into(), "RolloutBlocked".into())
    );
    assert_eq!(h.metric("facekey_operator_blocked_rollouts_total", NS), 1);
}

#[tokio::test]
async fn rolling_back_to_the_last_known_good_image_needs_no_scan() {
    let h = harness(&[]).await;
    running_img1(&h, json!({})).await;
    img2_blocked(&h).await;
    h.clock.advance(PAST_JOB_TTL);
    h.expire_finished_jobs().await;

    h.patch_spec("fk", json!({"image": IMG1})).await;
    h.reconcile("fk").await.unwrap();
    assert!(h.jobs().await.is_empty(), "no new Job");
    assert_eq!(h.metric("facekey_operator_scan_jobs_created_total", NS), 2);
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("True".into(), "LastKnownGood".into())
    );
    // Nothing to roll out: the Deployment already runs it.
    assert_eq!(cond(&fkd, "Ready"), ("True".into(), "Available".into()));
    assert_eq!(cond(&fkd, "Stalled").0, "False");
    assert_eq!(fkd.status.as_ref().unwrap().observed_generation, Some(3));
    // The same image pinned by its digest is the same last-known-good image.
    h.patch_spec("fk", json!({"image": IMG1_DIGEST})).await;
    h.reconcile("fk").await.unwrap();
    assert!(h.jobs().await.is_empty());
    assert_eq!(cond(&h.get("fk").await, "Ready").0, "True");
}

#[tokio::test]
async fn a_new_policy_after_the_job_is_gone_rescans_without_reopening_the_verdict() {
    let h = harness(&[]).await;
    running_img1(&h, json!({})).await;
    img2_blocked(&h).await;
    h.clock.advance(PAST_JOB_TTL);
    h.expire_finished_jobs().await;
    let before = h.get("fk").await;

    // Tolerating HIGH and the unfixed CRITICAL would pass IMG2, but the report is gone: rescan.
    h.patch_spec(
        "fk",
        json!({"scanGate": {"maxSeverity": "HIGH", "allowUnfixed": true}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    let job2 = scan_job_name("fk", IMG2);
    assert_eq!(h.jobs().await, vec![job2.clone()]);
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "VulnerabilitiesFound".into()),
        "no flapping to ScanPending while rescanning"
    );
    assert!(cond_message(&fkd, "ScanGatePassed").contains("started"));
    assert_eq!(
        transition_time(&fkd, "ScanGatePassed"),
        transition_time(&before, "ScanGatePassed")
    );
    assert_eq!(count(&h.event_reasons("fk").await, "RolloutBlocked"), 1);
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));

    h.complete_scan(&job2, "runtime-0.2.0-fail.json", IMG2)
        .await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG2_DIGEST));
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("True".into(), "ScanPassed".into())
    );
    assert_eq!(
        fkd.status.unwrap().last_known_good_image.as_deref(),
        Some(IMG2_DIGEST)
    );
    assert_eq!(h.metric("facekey_operator_blocked_rollouts_total", NS), 1);
}

#[tokio::test]
async fn a_blocked_verdict_older_than_max_report_age_is_rescanned_once() {
    let h = harness(&[]).await;
    running_img1(&h, json!({"scanGate": {"maxReportAge": "3h"}})).await;
    img2_blocked(&h).await;
    h.clock.advance(PAST_JOB_TTL);
    h.expire_finished_jobs().await;
    h.reconcile("fk").await.unwrap();
    assert!(h.jobs().await.is_empty(), "still fresh: no rescan");

    h.clock.advance(3 * 3600);
    h.reconcile("fk").await.unwrap();
    assert_eq!(
        h.jobs().await,
        vec![scan_job_name("fk", IMG2)],
        "stale: rescan"
    );
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.jobs().await.len(), 1, "one rescan, not one per reconcile");
    assert_eq!(
        cond(&h.get("fk").await, "ScanGatePassed").1,
        "VulnerabilitiesFound"
    );
    assert_eq!(h.metric("facekey_operator_blocked_rollouts_total", NS), 1);
}

#[tokio::test]
async fn turning_the_gate_on_scans_the_image_that_ran_without_it() {
    let h = harness(&[]).await;
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 2, "scanGate": {"enabled": false}, "sidecar": {}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1));
    assert_eq!(cond(&h.get("fk").await, "ScanGatePassed").1, "GateDisabled");
    // The gate is turned on: the image admitted while it was off was never scanned, so it is
    // scanned now, not admitted again as last known good. It keeps serving meanwhile.
    h.patch_spec("fk", json!({"scanGate": {"enabled": true}}))
        .await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.jobs().await, vec![scan_job_name("fk", IMG1)]);
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "ScanPending".into()),
        "not True/LastKnownGood"
    );
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1));
    // The sidecar webhook injects no image that no scan passed.
    let asks: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "app", "annotations": {"facekey.dev/inject": "fk"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }))
    .unwrap();
    let decide = |fkd: &facekey_crds::FaceKeyDeployment| {
        facekey_operator::webhook::inject::decide(
            &asks,
            NS,
            Some(fkd),
            facekey_operator::webhook::InjectOptions::default(),
        )
    };
    let refused = decide(&fkd);
    assert!(
        matches!(
            refused,
            facekey_operator::webhook::Decision::NotInjected {
                reason: facekey_operator::webhook::NotInjectedReason::NoAdmittedImage,
                ..
            }
        ),
        "{refused:?}"
    );
    // Passed: it rolls out pinned to the digest the scan resolved, and is last known good now.
    h.complete_scan(&scan_job_name("fk", IMG1), "runtime-0.1.0-pass.json", IMG1)
        .await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));
    let fkd = h.get("fk").await;
    assert_eq!(cond(&fkd, "ScanGatePassed").0, "True");
    assert!(
        matches!(decide(&fkd), facekey_operator::webhook::Decision::Inject { ref image, .. } if image == IMG1_DIGEST)
    );
}

/// The status is the operator's only memory of the last admitted image. With the harness's
/// status rule (a top-level field its manager stops applying is removed, as on a real server),
/// every status path while an image is held keeps it: an invalid spec, a failed apply, and
/// the reconcile after them still run the admitted digest. A path that forgot the field would
/// lose it here, and the next desired state would have no image to run.
#[tokio::test]
async fn the_last_known_good_image_survives_every_status_path_while_held() {
    use std::sync::atomic::Ordering;
    let h = harness(&[]).await;
    running_img1(&h, json!({})).await;
    img2_blocked(&h).await;
    let held = h.get("fk").await.status.unwrap().last_known_good_image;
    assert!(held.is_some());
    let kept = |what: &'static str| {
        let h = &h;
        let held = held.clone();
        async move {
            assert_eq!(
                h.get("fk").await.status.unwrap().last_known_good_image,
                held,
                "after {what}"
            );
        }
    };

    // An invalid spec: InvalidSpec status, nothing applied.
    h.patch_spec(
        "fk",
        json!({"replicas": null, "autoscaling": {"minReplicas": 3, "maxReplicas": 2,
                                                  "targetCPUUtilizationPercentage": 50}}),
    )
    .await;
    assert_eq!(
        h.reconcile("fk").await.unwrap_err().category(),
        "InvalidSpec"
    );
    kept("an invalid spec").await;
    h.patch_spec("fk", json!({"replicas": 2, "autoscaling": null}))
        .await;

    // A failed apply.
    h.fail_deployment_applies.store(true, Ordering::SeqCst);
    assert_eq!(
        h.reconcile("fk").await.unwrap_err().category(),
        "ApplyConflict"
    );
    kept("a failed apply").await;
    h.fail_deployment_applies.store(false, Ordering::SeqCst);

    h.reconcile("fk").await.unwrap();
    kept("the next reconcile").await;
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));
}

/// A gate policy that passes IMG2 too (its CRITICAL has no fix, the rest are HIGH).
fn tolerant_gate() -> serde_json::Value {
    json!({"scanGate": {"maxSeverity": "HIGH", "allowUnfixed": true}})
}

/// From `running_img1` with [`tolerant_gate`]: `spec.image` IMG2, scanned, passed and applied,
/// its rollout not (yet) done.
async fn img2_admitted(h: &Harness) {
    h.patch_spec("fk", json!({"image": IMG2})).await;
    h.reconcile("fk").await.unwrap();
    h.complete_scan(&scan_job_name("fk", IMG2), "runtime-0.2.0-fail.json", IMG2)
        .await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("True".into(), "ScanPassed".into())
    );
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG2_DIGEST));
}

/// Play the Deployment controller of a rollout past its `progressDeadlineSeconds`: the latest
/// template seen, one of the replicas updated, `Progressing=False, ProgressDeadlineExceeded`.
async fn deadline_exceeded(h: &Harness) {
    let d = h.deployment("fk").await.unwrap();
    h.api::<Deployment>()
        .patch_status(
            "fk",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "observedGeneration": d.metadata.generation,
                "replicas": 3, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2,
                "conditions": [{"type": "Progressing", "status": "False",
                                "reason": "ProgressDeadlineExceeded",
                                "message": "ReplicaSet \"fk-7d9\" has timed out progressing."}],
            }})),
        )
        .await
        .unwrap();
}

/// A rollout stuck at its deadline is `Stalled`; a new `spec.image` pushed to fix it is work in
/// progress from the moment the operator observes it (kstatus: InProgress, not Failed): while its
/// scan is pending, and after, while the Deployment controller has not seen the new template
/// (its status still carries the old deadline).
#[tokio::test]
async fn a_stuck_rollout_is_not_stalled_once_a_new_image_is_pushed() {
    let h = harness(&[]).await;
    running_img1(&h, tolerant_gate()).await;
    deadline_exceeded(&h).await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "Stalled"),
        ("True".into(), "RolloutStuck".into())
    );
    assert_eq!(
        cond(&fkd, "Degraded"),
        ("True".into(), "RolloutStuck".into())
    );
    assert_eq!(cond(&fkd, "Reconciling").0, "False");
    assert_eq!(
        cond(&fkd, "Progressing"),
        ("False".into(), "ProgressDeadlineExceeded".into()),
        "a rollout past its deadline is not progressing"
    );

    // The fix is pushed: its scan is pending, the old Deployment still reports the deadline.
    h.patch_spec("fk", json!({"image": IMG2})).await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(fkd.status.as_ref().unwrap().observed_generation, Some(2));
    assert_eq!(
        cond(&fkd, "Reconciling"),
        ("True".into(), "ScanPending".into())
    );
    assert_eq!(cond(&fkd, "Stalled"), ("False".into(), "AsExpected".into()));
    assert_eq!(cond(&fkd, "Degraded").0, "False");
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));

    // Passed and applied: the Deployment's generation moved, its status is still the old one.
    h.complete_scan(&scan_job_name("fk", IMG2), "runtime-0.2.0-fail.json", IMG2)
        .await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG2_DIGEST));
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "Reconciling"),
        ("True".into(), "RollingOut".into())
    );
    assert_eq!(cond(&fkd, "Stalled"), ("False".into(), "AsExpected".into()));
    assert_eq!(cond(&fkd, "Degraded").0, "False");
    assert_eq!(
        cond(&fkd, "Progressing"),
        ("True".into(), "RollingOut".into())
    );

    // The new template is seen and rolls out.
    h.api::<Deployment>()
        .patch_status(
            "fk",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Progressing",
                "status": "True", "reason": "NewReplicaSetAvailable"}]}})),
        )
        .await
        .unwrap();
    h.mark_deployment_ready("fk").await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(cond(&fkd, "Ready"), ("True".into(), "Available".into()));
    assert_eq!(cond(&fkd, "Stalled").0, "False");
    assert_eq!(cond(&fkd, "Reconciling").0, "False");
}

/// A Deployment paused by hand (`kubectl rollout pause`) with a rollout to do is reported as
/// paused, naming the way on, not as rolling out for ever; resumed, it rolls out.
#[tokio::test]
async fn a_paused_deployment_is_reported_paused_not_rolling_out() {
    let h = harness(&[]).await;
    running_img1(&h, tolerant_gate()).await;
    h.api::<Deployment>()
        .patch(
            "fk",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    img2_admitted(&h).await;
    let d = h.deployment("fk").await.unwrap();
    assert_eq!(
        d.spec.unwrap().paused,
        Some(true),
        "the apply leaves it to its manager"
    );
    let fkd = h.get("fk").await;
    assert_eq!(cond(&fkd, "Reconciling"), ("True".into(), "Paused".into()));
    assert_eq!(cond(&fkd, "Progressing"), ("False".into(), "Paused".into()));
    assert!(
        cond_message(&fkd, "Progressing").contains("kubectl rollout resume"),
        "{}",
        cond_message(&fkd, "Progressing")
    );
    assert_eq!(cond(&fkd, "Stalled").0, "False");

    h.api::<Deployment>()
        .patch(
            "fk",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await
        .unwrap();
    h.reconcile("fk").await.unwrap();
    assert_eq!(
        cond(&h.get("fk").await, "Reconciling"),
        ("True".into(), "RollingOut".into())
    );
    h.mark_deployment_ready("fk").await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(cond(&fkd, "Ready"), ("True".into(), "Available".into()));
    assert_eq!(
        cond(&fkd, "Progressing"),
        ("False".into(), "RolloutComplete".into())
    );
}

/// The usual way out of a rollout that fails: `git revert` to the image that served before. Its
/// passed record is kept beside the new last-known-good image's, so it is admitted again at once,
/// without a scan (the Job is gone, and a CVE published since must not hold the rollback).
#[tokio::test]
async fn rolling_back_to_the_previously_admitted_image_needs_no_scan() {
    let h = harness(&[]).await;
    running_img1(&h, tolerant_gate()).await;
    img2_admitted(&h).await;
    // IMG2 never becomes ready (a crash loop); its Jobs and IMG1's are long gone.
    h.clock.advance(PAST_JOB_TTL);
    h.expire_finished_jobs().await;
    assert!(h.jobs().await.is_empty());
    let scans: Vec<_> = h.get("fk").await.status.unwrap().scans;
    let kept: Vec<_> = scans
        .iter()
        .map(|s| (s.image.as_str(), s.verdict))
        .collect();
    assert_eq!(
        kept,
        vec![(IMG2, ScanVerdict::Passed), (IMG1, ScanVerdict::Passed)],
        "the previous image's record is kept"
    );

    h.patch_spec("fk", json!({"image": IMG1})).await;
    h.reconcile("fk").await.unwrap();
    assert!(h.jobs().await.is_empty(), "no new Job");
    assert_eq!(h.metric("facekey_operator_scan_jobs_created_total", NS), 2);
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("True".into(), "LastKnownGood".into())
    );
    let message = cond_message(&fkd, "ScanGatePassed");
    assert!(
        message.contains(&format!("{IMG1} was admitted before {IMG2_DIGEST}")),
        "{message}"
    );
    let status = fkd.status.unwrap();
    assert_eq!(status.last_known_good_image.as_deref(), Some(IMG1_DIGEST));
    // Now IMG2 is the previous image: going forward again needs no scan either.
    let kept: Vec<_> = status
        .scans
        .iter()
        .map(|s| (s.image.as_str(), s.verdict))
        .collect();
    assert_eq!(
        kept,
        vec![(IMG1, ScanVerdict::Passed), (IMG2, ScanVerdict::Passed)]
    );
    h.patch_spec("fk", json!({"image": IMG2})).await;
    h.reconcile("fk").await.unwrap();
    assert!(h.jobs().await.is_empty());
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG2_DIGEST));
    assert_eq!(h.metric("facekey_operator_blocked_rollouts_total", NS), 0);
}

/// A recorded failed scan stays the verdict while a call of the scan gate fails (a 500 on
/// reading the Job): `ScanGatePassed` and `Stalled` keep their reason instead of flapping to
/// `ScanPending` and back, and the blocked rollout is counted and announced once.
#[tokio::test]
async fn a_failed_call_of_the_scan_gate_keeps_the_recorded_verdict() {
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1})).await;
    h.reconcile("fk").await.unwrap();
    h.fail_scan(&scan_job_name("fk", IMG1), "2025-11-20T09:55:00Z")
        .await;
    h.reconcile("fk").await.unwrap();
    let failed = h.get("fk").await;
    assert_eq!(
        cond(&failed, "ScanGatePassed"),
        ("False".into(), "ScanFailed".into())
    );
    assert_eq!(h.metric("facekey_operator_blocked_rollouts_total", NS), 1);
    let warnings = |events: &[(String, String)]| {
        events
            .iter()
            .filter(|(t, r)| t == "Warning" && r == "ScanFailed")
            .count()
    };
    assert_eq!(warnings(&h.event_reasons("fk").await), 1);

    // The failed scan's Job is read every reconcile; the API server answers 500 once.
    let failing = jobs_read_failing(&h);
    let err =
        facekey_operator::reconcile::reconcile(std::sync::Arc::new(h.get("fk").await), failing)
            .await
            .unwrap_err();
    assert_eq!(err.category(), "ReadFailed");
    assert!(!err.is_refused());
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "ScanFailed".into()),
        "{}",
        cond_message(&fkd, "ScanGatePassed")
    );
    let message = cond_message(&fkd, "ScanGatePassed");
    assert!(
        message.starts_with(&cond_message(&failed, "ScanGatePassed"))
            && message.contains("; the scan gate could not run: ")
            && message.contains("etcdserver: request timed out"),
        "{message}"
    );
    assert_eq!(cond(&fkd, "Stalled"), ("True".into(), "ScanFailed".into()));
    assert_eq!(
        transition_time(&fkd, "ScanGatePassed"),
        transition_time(&failed, "ScanGatePassed")
    );

    // The API server answers again: nothing is counted or announced a second time.
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "ScanFailed".into())
    );
    assert_eq!(h.metric("facekey_operator_blocked_rollouts_total", NS), 1);
    assert_eq!(warnings(&h.event_reasons("fk").await), 1);
}

/// The same for an invalid spec between two valid ones: the blocked image's verdict stays
/// recorded in force, and its return is not a second block.
#[tokio::test]
async fn an_invalid_spec_interlude_keeps_the_recorded_verdict() {
    let h = harness(&[]).await;
    running_img1(&h, json!({})).await;
    img2_blocked(&h).await;
    h.patch_spec(
        "fk",
        json!({"replicas": null, "autoscaling": {"minReplicas": 3, "maxReplicas": 2,
                                                  "targetCPUUtilizationPercentage": 50}}),
    )
    .await;
    assert_eq!(
        h.reconcile("fk").await.unwrap_err().category(),
        "InvalidSpec"
    );
    let fkd = h.get("fk").await;
    assert_eq!(cond(&fkd, "Stalled"), ("True".into(), "InvalidSpec".into()));
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("False".into(), "VulnerabilitiesFound".into())
    );
    h.patch_spec("fk", json!({"replicas": 2, "autoscaling": null}))
        .await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "Stalled"),
        ("True".into(), "ImageBlocked".into())
    );
    assert_eq!(h.metric("facekey_operator_blocked_rollouts_total", NS), 1);
    assert_eq!(count(&h.event_reasons("fk").await, "RolloutBlocked"), 1);
}

/// The summary of a rescan of the pinned image `pinned` from a recorded report, as made now by
/// the harness clock: the report's digest replaced by the pin's (Trivy resolves a pinned
/// reference to its own digest), its time by now (a fresh report).
fn rescan_summary(h: &Harness, fixture: &str, pinned: &str) -> String {
    let mut summary: serde_json::Value =
        serde_json::from_str(&scan_summary_of(fixture, pinned)).unwrap();
    summary["digest"] = json!(pinned);
    summary["createdAt"] = json!(h.clock.now().to_string());
    summary.to_string()
}

/// Three hours and the Job TTL on (a `maxReportAge` of 3h has passed, finished Jobs are gone),
/// then a reconcile: the running image's rescan Job starts.
async fn next_rescan_period(h: &Harness) {
    h.clock.advance(PAST_JOB_TTL + 3 * 3600);
    h.expire_finished_jobs().await;
    h.reconcile("fk").await.unwrap();
}

/// The running IMG1's rescan Job completes with `fixture`'s findings, and is read.
async fn finish_rescan(h: &Harness, fixture: &str) {
    let summary = rescan_summary(h, fixture, IMG1_DIGEST);
    h.run_scan_job(
        &scan_job_name("fk", IMG1_DIGEST),
        ScanOutcome::Summary(summary),
    )
    .await;
    h.reconcile("fk").await.unwrap();
}

/// While `spec.image` names the image that runs, that image is rescanned once its scan is older
/// than `maxReportAge`: a scan Job of its pinned digest, the gate open all along. Findings
/// published since it was admitted are reported (`status.runningImageScan`, a Warning Event,
/// the gate's message), never rolled back: there is nothing better to run. One rescan per
/// period, not one per reconcile; a later rescan that passes clears the report.
#[tokio::test]
async fn the_running_image_is_rescanned_and_findings_are_reported_not_rolled_back() {
    let h = harness(&[]).await;
    running_img1(&h, json!({"scanGate": {"maxReportAge": "3h"}})).await;
    h.clock.advance(PAST_JOB_TTL);
    h.expire_finished_jobs().await;
    h.reconcile("fk").await.unwrap();
    assert!(h.jobs().await.is_empty(), "still fresh: no rescan");

    h.clock.advance(3 * 3600);
    h.reconcile("fk").await.unwrap();
    let rescan = scan_job_name("fk", IMG1_DIGEST);
    assert_eq!(
        h.jobs().await,
        vec![rescan.clone()],
        "stale: the pinned image rescanned"
    );
    let uid = |job: k8s_openapi::api::batch::v1::Job| job.metadata.uid.unwrap();
    let first = uid(h.api().get(&rescan).await.unwrap());
    h.reconcile("fk").await.unwrap();
    assert_eq!(
        uid(h.api().get(&rescan).await.unwrap()),
        first,
        "one rescan, not one per reconcile"
    );
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("True".into(), "LastKnownGood".into())
    );
    assert_eq!(cond(&fkd, "Ready").0, "True");

    finish_rescan(&h, "runtime-0.2.0-fail.json").await;
    let fkd = h.get("fk").await;
    let status = fkd.status.clone().unwrap();
    let running = status.running_image_scan.clone().unwrap_or_else(|| {
        panic!(
            "not recorded: {:?} {:?}",
            cond_message(&fkd, "ScanGatePassed"),
            status.scans
        )
    });
    assert_eq!(running.verdict, ScanVerdict::Blocked);
    assert_eq!(running.digest.as_deref(), Some(sha(IMG1_DIGEST)));
    assert_eq!((running.counts.critical, running.counts.high), (1, 3));
    // Reported, not rolled back: the image keeps serving, the gate open, Ready unchanged.
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("True".into(), "LastKnownGood".into())
    );
    assert!(
        cond_message(&fkd, "ScanGatePassed").contains("its rescan found vulnerabilities"),
        "{}",
        cond_message(&fkd, "ScanGatePassed")
    );
    assert_eq!(cond(&fkd, "Ready").0, "True");
    assert_eq!(
        facekey_operator::status::running_image_vulnerable(Some(&status)),
        Some("VulnerabilitiesFound")
    );
    // The tag's own record still admits it: the steady state is unchanged.
    assert!(
        status
            .scans
            .iter()
            .any(|r| r.image == IMG1 && r.verdict == ScanVerdict::Passed),
        "{:?}",
        status.scans
    );
    let warnings = |events: &[(String, String, String)]| {
        events
            .iter()
            .filter(|(t, r, _)| t == "Warning" && r == "RunningImageVulnerable")
            .count()
    };
    let events = h.events("fk").await;
    assert_eq!(warnings(&events), 1, "{events:?}");
    h.reconcile("fk").await.unwrap();
    assert_eq!(
        warnings(&h.events("fk").await),
        1,
        "one Warning per finding"
    );
    assert_eq!(h.metric("facekey_operator_blocked_rollouts_total", NS), 0);

    // The next period's rescan passes (a fixed base image under the same tag's digest is not
    // possible; the policy's view changed, e.g. the findings were withdrawn): the report clears.
    next_rescan_period(&h).await;
    assert_eq!(h.jobs().await, vec![rescan.clone()], "rescanned again");
    finish_rescan(&h, "runtime-0.1.0-pass.json").await;
    let status = h.get("fk").await.status.unwrap();
    assert_eq!(
        status.running_image_scan.as_ref().map(|r| r.verdict),
        Some(ScanVerdict::Passed)
    );
    assert_eq!(
        facekey_operator::status::running_image_vulnerable(Some(&status)),
        None
    );
    let events = h.events("fk").await;
    assert!(
        events
            .iter()
            .any(|(t, r, _)| t == "Normal" && r == "RunningImageRescanPassed"),
        "{events:?}"
    );

    // A newer image held by the gate: the image that runs keeps its report (and is not
    // rescanned while the newer one's scan decides).
    h.patch_spec("fk", json!({"image": IMG2})).await;
    h.reconcile("fk").await.unwrap();
    h.complete_scan(&scan_job_name("fk", IMG2), "runtime-0.2.0-fail.json", IMG2)
        .await;
    h.reconcile("fk").await.unwrap();
    assert!(
        h.get("fk")
            .await
            .status
            .unwrap()
            .running_image_scan
            .is_some(),
        "IMG2 blocked: IMG1 still runs, its report stays"
    );
}

/// A rescan of the running image that fails (a registry login gone, a database mirror down) is
/// recorded as Failed and waits out its retry in its Job like any scan: the Job is not pruned,
/// so no new Trivy run starts every reconcile, and the image keeps serving with the gate open.
#[tokio::test]
async fn a_failed_rescan_of_the_running_image_waits_for_its_retry() {
    let h = harness(&[]).await;
    running_img1(&h, json!({"scanGate": {"maxReportAge": "3h"}})).await;
    next_rescan_period(&h).await;
    let rescan = scan_job_name("fk", IMG1_DIGEST);
    assert_eq!(h.jobs().await, vec![rescan.clone()]);
    h.fail_scan(&rescan, &h.clock.now().to_string()).await;
    for _ in 0..3 {
        h.reconcile("fk").await.unwrap();
        assert_eq!(
            h.jobs().await,
            vec![rescan.clone()],
            "kept for its retry wait"
        );
    }
    let fkd = h.get("fk").await;
    let running = fkd.status.clone().unwrap().running_image_scan.unwrap();
    assert_eq!(running.verdict, ScanVerdict::Failed);
    assert_eq!(running.failures, Some(1));
    // The API server failing a read in between neither resets the failed Job's record (its
    // backoff) nor fails the reconcile: the image is admitted whatever a rescan says.
    let failing = jobs_read_failing(&h);
    facekey_operator::reconcile::reconcile(std::sync::Arc::new(h.get("fk").await), failing)
        .await
        .unwrap();
    let kept = h
        .get("fk")
        .await
        .status
        .unwrap()
        .running_image_scan
        .unwrap();
    assert_eq!(kept, running, "the failed Job's record kept");
    assert_eq!(h.jobs().await, vec![rescan.clone()]);
    assert_eq!(
        cond(&fkd, "ScanGatePassed"),
        ("True".into(), "LastKnownGood".into())
    );
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG1_DIGEST));
    // Ten minutes later the failed Job goes and a new attempt starts.
    h.clock.advance(601);
    h.reconcile("fk").await.unwrap();
    h.reconcile("fk").await.unwrap();
    let job = h
        .api::<k8s_openapi::api::batch::v1::Job>()
        .get(&rescan)
        .await
        .unwrap();
    assert!(
        job.status
            .and_then(|s| s.conditions)
            .is_none_or(|c| c.is_empty()),
        "a fresh attempt"
    );
}

/// A rescan that fails after one found the running image vulnerable is no new verdict: the
/// finding stays reported (gauge, gate message), with no Event saying it passed and no second
/// Warning. Another image admitted takes the report away.
#[tokio::test]
async fn a_failed_rescan_keeps_the_finding_until_another_image_is_admitted() {
    let h = harness(&[]).await;
    running_img1(&h, json!({"scanGate": {"maxReportAge": "3h"}})).await;
    let rescan = scan_job_name("fk", IMG1_DIGEST);
    next_rescan_period(&h).await;
    finish_rescan(&h, "runtime-0.2.0-fail.json").await;
    let vulnerable = |status: &facekey_crds::FaceKeyDeploymentStatus| {
        facekey_operator::status::running_image_vulnerable(Some(status))
    };
    assert_eq!(
        vulnerable(&h.get("fk").await.status.unwrap()),
        Some("VulnerabilitiesFound")
    );

    next_rescan_period(&h).await;
    h.fail_scan(&rescan, &h.clock.now().to_string()).await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    let status = fkd.status.clone().unwrap();
    let running = status.running_image_scan.clone().unwrap();
    assert_eq!(running.verdict, ScanVerdict::Failed);
    assert_eq!((running.counts.critical, running.counts.high), (1, 3));
    assert!(
        running.message.contains("the last verdict"),
        "{}",
        running.message
    );
    assert_eq!(vulnerable(&status), Some("VulnerabilitiesFound"));
    assert!(cond_message(&fkd, "ScanGatePassed").contains("its rescan found vulnerabilities"));
    let events = h.events("fk").await;
    assert_eq!(
        events
            .iter()
            .filter(|(_, r, _)| r == "RunningImageVulnerable")
            .count(),
        1,
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|(_, r, _)| r == "RunningImageRescanPassed"),
        "{events:?}"
    );

    // A fixed image (here: one the tolerant policy admits) takes the report away.
    h.patch_spec(
        "fk",
        json!({"image": IMG2, "scanGate": {"maxReportAge": "3h", "maxSeverity": "HIGH", "allowUnfixed": true}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    let mut fresh: serde_json::Value =
        serde_json::from_str(&scan_summary_of("runtime-0.2.0-fail.json", IMG2)).unwrap();
    fresh["createdAt"] = json!(h.clock.now().to_string());
    h.run_scan_job(
        &scan_job_name("fk", IMG2),
        ScanOutcome::Summary(fresh.to_string()),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG2_DIGEST));
    let status = h.get("fk").await.status.unwrap();
    assert_eq!(status.running_image_scan, None);
    assert_eq!(vulnerable(&status), None);
}

/// With the gate turned off nothing rescans the image, so its report goes rather than staying
/// for ever (a digest-pinned `spec.image` would otherwise keep it and its alert).
#[tokio::test]
async fn turning_the_gate_off_drops_the_running_image_report() {
    let h = harness(&[]).await;
    running_img1(&h, json!({"scanGate": {"maxReportAge": "3h"}})).await;
    h.patch_spec("fk", json!({"image": IMG1_DIGEST})).await;
    h.reconcile("fk").await.unwrap();
    next_rescan_period(&h).await;
    finish_rescan(&h, "runtime-0.2.0-fail.json").await;
    assert!(
        h.get("fk")
            .await
            .status
            .unwrap()
            .running_image_scan
            .is_some()
    );
    h.patch_spec("fk", json!({"scanGate": {"enabled": false}}))
        .await;
    h.reconcile("fk").await.unwrap();
    let status = h.get("fk").await.status.unwrap();
    assert_eq!(status.running_image_scan, None);
    assert_eq!(
        facekey_operator::status::running_image_vulnerable(Some(&status)),
        None
    );
}
