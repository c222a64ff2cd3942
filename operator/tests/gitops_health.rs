//! The FaceKeyDeployment as GitOps tools read it, at each point of its life that a health check
//! must tell apart: no status yet, scan pending, rolling out, available, a spec change not yet
//! observed, a spec change whose apply fails, a blocked image, a failed scan, an invalid spec,
//! scaled to zero, a read the API server refuses, a spec this operator cannot decode. Each object (the
//! generation and the status the reconciler wrote) goes to `tests/golden/gitops-health.json`
//! (`UPDATE_GOLDEN=1` rewrites it), which `tests/operator/check.sh` runs the shipped Argo CD
//! health script (`manifests/gitops/argocd-health.lua`) on with a real Lua 5.1 interpreter, the
//! language Argo CD's gopher-lua implements.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, NS, cond, harness};
use facekey_operator::labels::scan_job_name;
use serde_json::{Value, json};

const IMG1: &str = "ghcr.io/facekey/runtime:0.1.0";
const IMG2: &str = "ghcr.io/facekey/runtime:0.2.0";

/// What a health check sees: kind, name, generation and status (server-set fields such as the
/// uid and resourceVersion left out, so the golden only changes when the operator's status does).
async fn seen(h: &Harness, name: &str) -> Value {
    let fkd = h.get(name).await;
    json!({
        "apiVersion": "facekey.dev/v1alpha1",
        "kind": "FaceKeyDeployment",
        "metadata": {"name": name, "namespace": NS, "generation": fkd.metadata.generation},
        "status": fkd.status,
    })
}

/// FaceKeyDeployments read untyped (one whose spec does not decode too).
fn raw_api(h: &Harness) -> kube::Api<kube::api::DynamicObject> {
    kube::Api::namespaced_with(
        h.client.clone(),
        NS,
        &kube::api::ApiResource::erase::<facekey_crds::FaceKeyDeployment>(&()),
    )
}

/// `inner`, except that every GET of a Deployment is answered 403 Forbidden, as a real API
/// server answers a ServiceAccount whose Role lacks `get` on deployments.
fn forbidding_deployment_reads(inner: kube::Client) -> kube::Client {
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        async move {
            if req.method() == http::Method::GET && req.uri().path().contains("/deployments") {
                let status = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "deployments.apps \"fk\" is forbidden: User \"system:serviceaccount:facekey-system:facekey-operator\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"team\"",
                    "reason": "Forbidden", "details": {"name": "fk", "group": "apps", "kind": "deployments"},
                    "code": 403,
                });
                return Ok(http::Response::builder()
                    .status(403)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(
                        serde_json::to_vec(&status).unwrap(),
                    ))
                    .unwrap());
            }
            inner.send(req).await
        }
    });
    kube::Client::new(svc, NS)
}

#[tokio::test]
async fn statuses_for_gitops_health_checks() {
    let mut out: Vec<Value> = Vec::new();
    let mut record = |scenario: &str, object: Value| {
        out.push(json!({"scenario": scenario, "object": object}));
    };

    // One resource from creation to a blocked upgrade.
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1, "replicas": 2})).await;
    record("created, no status yet", seen(&h, "fk").await);
    h.reconcile("fk").await.unwrap();
    assert_eq!(cond(&h.get("fk").await, "Reconciling").1, "ScanPending");
    record("scan pending", seen(&h, "fk").await);
    h.complete_scan(&scan_job_name("fk", IMG1), "runtime-0.1.0-pass.json", IMG1)
        .await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(cond(&h.get("fk").await, "Reconciling").1, "RollingOut");
    record("rolling out", seen(&h, "fk").await);
    h.mark_deployment_ready("fk").await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(cond(&h.get("fk").await, "Ready").1, "Available");
    record("available", seen(&h, "fk").await);
    h.patch_spec("fk", json!({"image": IMG2})).await;
    let ahead = seen(&h, "fk").await;
    assert_eq!(ahead["metadata"]["generation"], 2);
    assert_eq!(ahead["status"]["observedGeneration"], 1);
    record("spec changed, not yet observed", ahead);
    h.reconcile("fk").await.unwrap();
    h.complete_scan(&scan_job_name("fk", IMG2), "runtime-0.2.0-fail.json", IMG2)
        .await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(cond(&h.get("fk").await, "Stalled").1, "ImageBlocked");
    record(
        "image blocked, the previous one serving",
        seen(&h, "fk").await,
    );

    // A spec change whose apply keeps failing (a 409 on the Deployment, retried): the old
    // generation's pods are all available, yet this generation is not rolled out.
    let h = harness(&[]).await;
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 2, "scanGate": {"enabled": false}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    h.mark_deployment_ready("fk").await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(cond(&h.get("fk").await, "Ready").1, "Available");
    h.patch_spec("fk", json!({"replicas": 3})).await;
    h.fail_deployment_applies
        .store(true, std::sync::atomic::Ordering::SeqCst);
    h.reconcile("fk").await.unwrap_err();
    let failing = h.get("fk").await;
    assert_eq!(
        cond(&failing, "Ready"),
        ("False".into(), "ApplyFailed".into())
    );
    assert_eq!(cond(&failing, "Reconciling").0, "True");
    record(
        "a spec change whose apply fails, the previous generation serving",
        seen(&h, "fk").await,
    );

    // A scan that fails (the Job's backoff limit).
    let h = harness(&[]).await;
    h.create("fk", json!({"image": IMG1})).await;
    h.reconcile("fk").await.unwrap();
    h.fail_scan(&scan_job_name("fk", IMG1), "2025-11-20T09:55:00Z")
        .await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(cond(&h.get("fk").await, "Stalled").1, "ScanFailed");
    record("scan failed", seen(&h, "fk").await);

    // A spec the operator refuses (autoscaling bounds the wrong way round).
    let h = harness(&[]).await;
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 2, "scanGate": {"enabled": false},
               "autoscaling": {"minReplicas": 3, "maxReplicas": 2, "targetCPUUtilizationPercentage": 50}}),
    )
    .await;
    h.reconcile("fk").await.unwrap_err();
    assert_eq!(cond(&h.get("fk").await, "Stalled").1, "InvalidSpec");
    record("invalid spec", seen(&h, "fk").await);

    // Deliberately scaled to zero.
    let h = harness(&[]).await;
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 0, "scanGate": {"enabled": false}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    h.mark_deployment_ready("fk").await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(cond(&h.get("fk").await, "Ready").1, "ScaledToZero");
    record("scaled to zero", seen(&h, "fk").await);

    // The Deployment's read refused (403: a Role the operator lacks): a failure that needs a
    // human, not progress forever.
    let h = harness(&[]).await;
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 2, "scanGate": {"enabled": false}}),
    )
    .await;
    let ctx = std::sync::Arc::new(common::test_context(
        &forbidding_deployment_reads(h.client.clone()),
        &h.clock,
    ));
    let fkd = std::sync::Arc::new(h.get("fk").await);
    facekey_operator::reconcile::reconcile(fkd, ctx)
        .await
        .unwrap_err();
    assert_eq!(
        cond(&h.get("fk").await, "Stalled"),
        ("True".into(), "ReadFailed".into())
    );
    record("a read refused (RBAC)", seen(&h, "fk").await);

    // A spec this operator cannot decode (a value of a newer operator's CRD).
    let h = harness(&[]).await;
    let raw = raw_api(&h);
    raw.create(
        &kube::api::PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "facekey.dev/v1alpha1", "kind": "FaceKeyDeployment",
            "metadata": {"name": "fk", "namespace": NS},
            "spec": {"image": IMG1, "verification": {"decisionPolicy": "adaptive"}},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let facekey_operator::decode::Decoded::Undecodable(u) =
        facekey_operator::decode::decode(raw.get("fk").await.unwrap())
    else {
        panic!("undecodable");
    };
    facekey_operator::reconcile::report_undecodable(&h.ctx, &u, &|| true).await;
    let stored = raw.get("fk").await.unwrap();
    record(
        "spec undecodable",
        json!({
            "apiVersion": "facekey.dev/v1alpha1",
            "kind": "FaceKeyDeployment",
            "metadata": {"name": "fk", "namespace": NS, "generation": stored.metadata.generation},
            "status": stored.data["status"],
        }),
    );

    let text = format!("{}\n", serde_json::to_string_pretty(&out).unwrap());
    let golden =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/gitops-health.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&golden)
        .unwrap_or_else(|_| panic!("{} missing; run with UPDATE_GOLDEN=1", golden.display()));
    assert!(
        text == expected,
        "the statuses differ from {}; run with UPDATE_GOLDEN=1, review, and run tests/operator/check.sh (its Argo CD health section reads them)",
        golden.display()
    );
}
