//! Resource names that cannot produce valid child names are refused (the CRD's CEL rule, and the
//! operator's twin for servers without it), and errors retrying cannot fix never hot-loop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{NS, cond, cond_message, harness, ssa};
use facekey_crds::MAX_NAME_LENGTH;
use facekey_operator::desired::OptionalCrd;
use facekey_operator::labels::{
    api_keys_secret_name, config_map_name, dashboard_name, data_claim_name,
    database_app_secret_name, database_cluster_name, scan_job_name, template_key_secret_name,
};
use facekey_operator::reconcile::{STEADY_REQUEUE, error_policy};
use facekey_operator::validate::validate_name;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use serde_json::json;

const IMG1: &str = "ghcr.io/facekey/runtime:0.1.0";
const IMG2: &str = "ghcr.io/facekey/runtime:0.2.0";

fn is_dns_1035(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The longest allowed name yields valid names and label values for every child; one more
/// character would make the scan Job's name (a label value on its pods) too long.
#[test]
fn the_longest_allowed_name_fits_every_child() {
    let name = format!("a{}", "b".repeat(MAX_NAME_LENGTH - 1));
    assert!(validate_name(&name).is_ok());
    let job = scan_job_name(&name, "ghcr.io/facekey/runtime@sha256:0123");
    assert!(job.starts_with(&name), "{job}: not truncated");
    assert_eq!(
        job.len(),
        63,
        "{job}: the longest child name is exactly at the limit"
    );
    for child in [
        name.clone(), // Service, Deployment, HPA, PDB, NetworkPolicy, monitoring objects
        job,
        config_map_name(&name),
        dashboard_name(&name),
        data_claim_name(&name),
        database_cluster_name(&name),
        database_app_secret_name(&name),
        template_key_secret_name(&name),
        api_keys_secret_name(&name),
    ] {
        assert!(is_dns_1035(&child), "{child} ({} chars)", child.len());
    }
    let too_long = format!("{name}c");
    assert!(validate_name(&too_long).is_err());
    // Truncating instead would give two resources the same Job name prefix.
    assert!(scan_job_name(&too_long, "x").len() <= 63);
}

#[test]
fn names_must_be_dns_1035_labels() {
    for good in ["fk", "a", "face-key-1"] {
        assert!(validate_name(good).is_ok(), "{good}");
    }
    for bad in ["1fk", "-fk", "fk-", "Fk", "f.k", "f_k", ""] {
        let err = validate_name(bad).unwrap_err();
        assert!(
            err.message().contains("DNS-1035 label of at most 47"),
            "{bad}: {err}"
        );
    }
}

#[tokio::test]
async fn a_name_too_long_for_its_children_applies_nothing_and_waits() {
    let h = harness(&[]).await;
    let name = "x".repeat(MAX_NAME_LENGTH + 1);
    h.create(
        &name,
        json!({"image": IMG1, "scanGate": {"enabled": false}}),
    )
    .await;
    let err = h.reconcile(&name).await.unwrap_err();
    assert_eq!(err.category(), "InvalidSpec");
    let fkd = h.get(&name).await;
    assert_eq!(
        cond(&fkd, "Degraded"),
        ("True".into(), "InvalidSpec".into())
    );
    assert!(cond_message(&fkd, "Degraded").contains("at most 47 characters"));
    assert_eq!(cond(&fkd, "Ready").1, "InvalidSpec");
    assert!(
        h.api::<Deployment>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(h.jobs().await.is_empty(), "no scan Job either");
    assert_eq!(
        error_policy(Arc::new(fkd), &err, h.ctx.clone()),
        Action::await_change(),
        "no retry loop: only a change helps"
    );
}

/// A write the API server refuses (422: an immutable field, a quota, an admission webhook) is
/// reported in `Degraded` and retried at the steady interval, not in a fast backoff loop.
#[tokio::test]
async fn a_refused_apply_is_reported_and_not_retried_in_a_loop() {
    let (h, log) = ssa::harness(&[]).await;
    log.refuse(
        "Service",
        "Service \"fk\" is invalid: spec.clusterIP: field is immutable",
    );
    h.create("fk", json!({"image": IMG1, "scanGate": {"enabled": false}}))
        .await;
    let err = h.reconcile("fk").await.unwrap_err();
    assert_eq!(err.category(), "ApplyFailed");
    assert!(err.is_refused() && !err.is_permanent());
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "Degraded"),
        ("True".into(), "ApplyFailed".into())
    );
    assert!(cond_message(&fkd, "Degraded").contains("field is immutable"));
    // Retrying cannot help until something changes: Stalled (kstatus), which Flux and the
    // documented Argo CD health check read as failed, not "Reconciling" for ever.
    assert_eq!(cond(&fkd, "Stalled"), ("True".into(), "ApplyFailed".into()));
    assert_eq!(cond(&fkd, "Reconciling").0, "False");
    let fkd = Arc::new(fkd);
    for _ in 0..3 {
        assert_eq!(
            error_policy(fkd.clone(), &err, h.ctx.clone()),
            Action::requeue(STEADY_REQUEUE)
        );
    }
    assert_eq!(h.ctx.failures(&format!("{NS}/fk")), 0, "no backoff counted");
}

/// A volume claim the API server refuses (a bound claim's size cannot shrink, nor its class
/// change; the harness enforces both as a real server does) holds back nothing else: the new
/// image still rolls out with the existing claim, and the status says what was refused.
#[tokio::test]
async fn a_refused_volume_claim_does_not_hold_back_the_rollout() {
    let h = harness(&[]).await;
    let store = |size: &str| json!({"embedded": {"pvc": {"size": size}}});
    h.create(
        "fk",
        json!({"image": IMG1, "scanGate": {"enabled": false}, "store": store("10Gi")}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    h.patch_spec("fk", json!({"image": IMG2, "store": store("5Gi")}))
        .await;
    let err = h.reconcile("fk").await.unwrap_err();
    assert!(err.is_refused(), "{err}");
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG2));
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "Degraded"),
        ("True".into(), "ApplyFailed".into())
    );
    assert!(cond_message(&fkd, "Degraded").contains("can not be less"));
    assert_eq!(cond(&fkd, "Stalled").0, "True");
    // Growing it is accepted and clears the condition.
    h.patch_spec("fk", json!({"store": store("20Gi")})).await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(cond(&h.get("fk").await, "Degraded").0, "False");
}

/// A CloudNativePG `Cluster` whose apply is refused (its admission webhook refuses a shrunk
/// `storage.size`) holds back nothing else either: the new image (a security fix, say) still
/// rolls out, the PodDisruptionBudget no longer wanted is pruned, and the status says what was
/// refused. Before, the refusal stopped the apply at the Cluster: no Deployment, no pruning.
#[tokio::test]
async fn a_refused_database_cluster_does_not_hold_back_the_rollout() {
    let (h, log) = ssa::harness(&[OptionalCrd::CloudNativePgCluster]).await;
    let store = |size: &str| json!({"postgres": {"cloudNativePG": {"instances": 1, "storage": {"size": size}}}});
    h.create(
        "fk",
        json!({"image": IMG1, "scanGate": {"enabled": false}, "replicas": 2,
               "store": store("10Gi")}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    let pdbs = h.api::<PodDisruptionBudget>();
    assert!(pdbs.get_opt("fk").await.unwrap().is_some());

    log.refuse(
        "Cluster",
        "admission webhook \"vcluster.cnpg.io\" denied the request: spec.storage.size: \
         Invalid value: \"5Gi\": can't shrink existing storage from 10Gi to 5Gi",
    );
    h.patch_spec(
        "fk",
        json!({"image": IMG2, "replicas": 1, "store": store("5Gi")}),
    )
    .await;
    let err = h.reconcile("fk").await.unwrap_err();
    assert!(err.is_refused(), "{err}");
    assert!(err.to_string().contains("Cluster fk-db"), "{err}");
    assert_eq!(h.deployment_image("fk").await.as_deref(), Some(IMG2));
    assert!(
        pdbs.get_opt("fk").await.unwrap().is_none(),
        "pruned beside the refusal"
    );
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "Degraded"),
        ("True".into(), "ApplyFailed".into())
    );
    assert!(cond_message(&fkd, "Degraded").contains("can't shrink"));
    assert_eq!(cond(&fkd, "Stalled").0, "True");
}
