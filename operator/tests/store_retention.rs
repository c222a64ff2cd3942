//! `spec.store.retainOnDelete` (default true): the template store's claim `<name>-data`, the
//! CloudNativePG `Cluster` `<name>-db` and its generated key carry no owner reference, so deleting
//! the FaceKeyDeployment (the fake API cascades through owner references as the garbage collector
//! does) keeps the enrolments, and a resource recreated under the same name adopts them by their
//! labels; an object of that name without those labels is still someone else's. `false` keeps the
//! owner reference: the data goes with the resource.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{NS, cond, cond_message, ssa};
use facekey_operator::desired::{ChildKind, OptionalCrd};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

const IMG1: &str = "ghcr.io/facekey/runtime:0.1.0";

fn embedded(extra: Value) -> Value {
    let mut spec = json!({"image": IMG1, "replicas": 1, "scanGate": {"enabled": false},
                          "store": {"embedded": {"pvc": {"size": "2Gi"}}}});
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            spec["store"][k] = v;
        }
    }
    spec
}

fn clusters(h: &common::Harness) -> Api<DynamicObject> {
    Api::namespaced_with(
        h.client.clone(),
        NS,
        &ChildKind::PostgresCluster.api_resource(),
    )
}

/// Play CloudNativePG: the Cluster `fk-db` reports itself ready.
async fn mark_cluster_ready(h: &common::Harness) {
    clusters(h)
        .patch_status(
            "fk-db",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Cluster in healthy state",
                "instances": 1, "readyInstances": 1,
                "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterIsReady",
                    "message": "Cluster is Ready", "lastTransitionTime": "2025-11-20T10:00:00Z"}]}})),
        )
        .await
        .unwrap();
}

async fn claim(h: &common::Harness) -> Option<PersistentVolumeClaim> {
    h.api::<PersistentVolumeClaim>()
        .get_opt("fk-data")
        .await
        .unwrap()
}

/// Delete the FaceKeyDeployment as `kubectl delete` does (background propagation): the fake
/// deletes every object whose owner references name it, as the garbage collector would.
async fn delete_resource(h: &common::Harness) {
    h.fkds()
        .delete("fk", &DeleteParams::background())
        .await
        .unwrap();
    assert!(h.fkds().get_opt("fk").await.unwrap().is_none());
}

fn has_condition(h: &facekey_crds::FaceKeyDeployment, type_: &str) -> bool {
    h.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == type_))
}

#[tokio::test]
async fn a_deleted_resource_leaves_its_claim_and_a_recreated_one_adopts_it() {
    let (h, log) = ssa::harness(&[]).await;
    let first = h.create("fk", embedded(json!({}))).await;
    h.reconcile("fk").await.unwrap();
    let pvc = claim(&h).await.unwrap();
    assert!(
        pvc.metadata.owner_references.is_none(),
        "{:?}",
        pvc.metadata
    );
    assert_eq!(
        pvc.labels()["app.kubernetes.io/managed-by"],
        "facekey-operator"
    );
    assert_eq!(pvc.labels()["facekey.dev/owner"], "fk");
    assert!(pvc.annotations()["facekey.dev/retained"].contains("retainOnDelete"));
    // Argo CD's label tracking would count an unowned object with the instance label as its
    // application's (and prune it): the retained claim has none, and asks never to be pruned.
    assert!(
        !pvc.labels().contains_key("app.kubernetes.io/instance"),
        "{:?}",
        pvc.labels()
    );
    assert_eq!(
        pvc.annotations()["argocd.argoproj.io/sync-options"],
        "Prune=false"
    );
    assert_eq!(
        pvc.annotations()["argocd.argoproj.io/compare-options"],
        "IgnoreExtraneous"
    );
    // The label check writes nothing: a steady reconcile leaves the claim's version alone.
    let version = pvc.resource_version();
    h.reconcile("fk").await.unwrap();
    assert_eq!(claim(&h).await.unwrap().resource_version(), version);

    // The generated API keys go with the enrolments: kept, not owned.
    let keys = h.api::<Secret>().get("fk-api-keys").await.unwrap();
    assert!(
        keys.metadata.owner_references.is_none(),
        "{:?}",
        keys.metadata
    );
    assert!(keys.annotations()["facekey.dev/retained"].contains("API keys"));

    // `kubectl delete fkd fk` (or `kubectl delete -k`, an Argo CD app deletion): the owned
    // children go, the claim and its enrolments stay.
    delete_resource(&h).await;
    assert!(h.deployment("fk").await.is_none());
    assert!(
        h.api::<ConfigMap>()
            .get_opt("fk-config")
            .await
            .unwrap()
            .is_none()
    );
    let kept = claim(&h).await.expect("the claim outlives the resource");
    assert_eq!(kept.uid(), pvc.uid());

    // Recreated from Git under the same name: a new uid, the same claim, adopted.
    log.clear();
    let second = h.create("fk", embedded(json!({}))).await;
    assert_ne!(second.uid(), first.uid());
    h.reconcile("fk").await.unwrap();
    h.mark_deployment_ready("fk").await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert!(!has_condition(&fkd, "Conflict"), "{:?}", fkd.status);
    assert_eq!(cond(&fkd, "Ready").0, "True", "{:?}", fkd.status);
    assert_eq!(
        cond(&fkd, "Degraded"),
        ("False".into(), "AsExpected".into())
    );
    assert_eq!(
        cond(&fkd, "PersistentStore"),
        ("True".into(), "EmbeddedVolume".into())
    );
    let adopted = claim(&h).await.unwrap();
    assert_eq!(adopted.uid(), pvc.uid(), "the same claim, not a new one");
    // The applications' keys are the ones they hold: the same Secret, not a new admin key.
    let keys_after = h.api::<Secret>().get("fk-api-keys").await.unwrap();
    assert_eq!(keys_after.uid(), keys.uid());
    assert_eq!(keys_after.data, keys.data);
    assert!(adopted.metadata.owner_references.is_none());
    assert!(
        !log.of("PersistentVolumeClaim").is_empty(),
        "applied again by the new resource"
    );
    let volume = h
        .deployment("fk")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .volumes
        .unwrap();
    assert!(volume.iter().any(|v| {
        v.persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.as_str())
            == Some("fk-data")
    }));
}

#[tokio::test]
async fn without_retention_the_claim_is_owned_and_deleted_with_the_resource() {
    let (h, _log) = ssa::harness(&[]).await;
    let fkd = h
        .create("fk", embedded(json!({"retainOnDelete": false})))
        .await;
    h.reconcile("fk").await.unwrap();
    let pvc = claim(&h).await.unwrap();
    let owner = &pvc.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        (fkd.uid().unwrap().as_str(), Some(true))
    );
    assert!(!pvc.annotations().contains_key("facekey.dev/retained"));
    let keys = h.api::<Secret>().get("fk-api-keys").await.unwrap();
    assert_eq!(
        keys.metadata.owner_references.unwrap()[0].uid,
        fkd.uid().unwrap()
    );
    delete_resource(&h).await;
    assert!(
        claim(&h).await.is_none(),
        "the garbage collector deletes it, and the enrolments with it"
    );
    assert!(
        h.api::<Secret>()
            .get_opt("fk-api-keys")
            .await
            .unwrap()
            .is_none(),
        "the keys go with the enrolments"
    );
}

/// Changing `retainOnDelete` on a live resource moves the owner reference: the operator's field
/// manager applied it, so leaving it out of the next apply removes it.
#[tokio::test]
async fn turning_retention_on_and_off_moves_the_owner_reference() {
    let (h, _log) = ssa::harness(&[]).await;
    let fkd = h
        .create("fk", embedded(json!({"retainOnDelete": false})))
        .await;
    h.reconcile("fk").await.unwrap();
    assert!(claim(&h).await.unwrap().metadata.owner_references.is_some());
    h.patch_spec("fk", json!({"store": {"retainOnDelete": true}}))
        .await;
    h.reconcile("fk").await.unwrap();
    let pvc = claim(&h).await.unwrap();
    assert!(
        pvc.metadata.owner_references.is_none(),
        "{:?}",
        pvc.metadata
    );
    assert!(pvc.annotations().contains_key("facekey.dev/retained"));
    h.patch_spec("fk", json!({"store": {"retainOnDelete": false}}))
        .await;
    h.reconcile("fk").await.unwrap();
    let pvc = claim(&h).await.unwrap();
    assert!(!pvc.annotations().contains_key("facekey.dev/retained"));
    assert_eq!(
        pvc.metadata.owner_references.unwrap()[0].uid,
        fkd.uid().unwrap()
    );
}

fn stranger_claim(labels: Value) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "fk-data", "namespace": NS, "labels": labels},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
    }))
    .unwrap()
}

/// A claim named `<name>-data` without the operator's labels for this resource is someone
/// else's: never applied to, never mounted (no Deployment), reported as ObjectNotOwned.
#[tokio::test]
async fn a_claim_of_that_name_without_the_labels_is_refused_as_foreign() {
    for labels in [
        json!({"team": "payments"}),
        // Another chart's release of the same name.
        json!({"app.kubernetes.io/instance": "fk", "app.kubernetes.io/managed-by": "Helm"}),
        // The operator's, for another resource.
        json!({"app.kubernetes.io/instance": "other", "app.kubernetes.io/managed-by": "facekey-operator",
               "facekey.dev/owner": "other"}),
    ] {
        let (h, log) = ssa::harness(&[]).await;
        let stranger = h
            .api::<PersistentVolumeClaim>()
            .create(&PostParams::default(), &stranger_claim(labels.clone()))
            .await
            .unwrap();
        h.create("fk", embedded(json!({}))).await;
        let err = h.reconcile("fk").await.unwrap_err();
        assert_eq!(err.category(), "ObjectNotOwned", "{labels}");
        assert!(
            err.to_string()
                .contains(&format!("PersistentVolumeClaim {NS}/fk-data")),
            "{err}"
        );
        assert!(log.of("PersistentVolumeClaim").is_empty(), "no apply to it");
        let after = claim(&h).await.unwrap();
        assert_eq!(
            after.resource_version(),
            stranger.resource_version(),
            "untouched"
        );
        assert!(after.metadata.owner_references.is_none());
        assert!(
            h.deployment("fk").await.is_none(),
            "no pod mounts a stranger's claim"
        );
        assert!(h.api::<Service>().get_opt("fk").await.unwrap().is_some());
        let fkd = h.get("fk").await;
        assert_eq!(
            cond(&fkd, "Conflict"),
            ("True".into(), "ObjectNotOwned".into())
        );
        assert!(cond_message(&fkd, "Conflict").contains("fk-data"));

        // Its owner deletes it: the next reconcile creates the operator's own.
        h.api::<PersistentVolumeClaim>()
            .delete("fk-data", &DeleteParams::default())
            .await
            .unwrap();
        h.reconcile("fk").await.unwrap();
        assert_eq!(claim(&h).await.unwrap().labels()["facekey.dev/owner"], "fk");
        assert!(h.deployment("fk").await.is_some());
        assert!(!has_condition(&h.get("fk").await, "Conflict"));
    }
}

/// Labelled for this name but still controlled by a deleted resource of this name (deleted with
/// `retainOnDelete: false` and created again; the garbage collector removes the claim once its
/// pods are gone): not adopted, no Deployment mounts it, and no conflict is reported: the
/// reconcile says what it waits for and retries with backoff, not in 5 minutes. Once the claim
/// is gone, ours is created. Before, this was `ObjectNotOwned` (Stalled, a Warning, a retry every
/// 5 minutes) and the recreated resource ran no runtime until then.
#[tokio::test]
async fn a_claim_still_controlled_by_a_deleted_resource_of_this_name_is_waited_for() {
    use facekey_operator::reconcile::{error_policy, retry_delay};
    use kube::runtime::controller::Action;
    let (h, log) = ssa::harness(&[]).await;
    let mut pvc = stranger_claim(json!({"app.kubernetes.io/instance": "fk",
        "app.kubernetes.io/managed-by": "facekey-operator", "facekey.dev/owner": "fk"}));
    pvc.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({"apiVersion": "facekey.dev/v1alpha1",
            "kind": "FaceKeyDeployment", "name": "fk", "uid": "old-uid", "controller": true}))
        .unwrap(),
    ]);
    h.api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &pvc)
        .await
        .unwrap();
    h.create("fk", embedded(json!({}))).await;
    let err = h.reconcile("fk").await.unwrap_err();
    assert_eq!(err.category(), "AwaitingDeletion", "{err}");
    assert!(
        err.to_string()
            .contains(&format!("PersistentVolumeClaim {NS}/fk-data still belongs")),
        "{err}"
    );
    assert!(log.of("PersistentVolumeClaim").is_empty(), "not adopted");
    assert!(
        h.deployment("fk").await.is_none(),
        "no pod mounts the old claim"
    );
    let fkd = h.get("fk").await;
    assert!(!has_condition(&fkd, "Conflict"), "no conflict to resolve");
    assert_eq!(cond(&fkd, "Stalled").0, "False", "it resolves by itself");
    assert_eq!(
        error_policy(std::sync::Arc::new(fkd), &err, h.ctx.clone()),
        Action::requeue(retry_delay(&format!("{NS}/fk"), 1)),
        "retried soon, not at the 5-minute refusal interval"
    );

    // The garbage collector removes it: ours is created and mounted.
    h.api::<PersistentVolumeClaim>()
        .delete("fk-data", &DeleteParams::default())
        .await
        .unwrap();
    h.reconcile("fk").await.unwrap();
    let ours = claim(&h).await.unwrap();
    assert!(
        ours.metadata
            .owner_references
            .iter()
            .flatten()
            .all(|r| r.uid != "old-uid")
    );
    assert!(h.deployment("fk").await.is_some());
}

/// Controlled by another kind of owner, or by a FaceKeyDeployment of another name: someone
/// else's, reported as ObjectNotOwned as before.
#[tokio::test]
async fn a_labelled_claim_controlled_by_another_owner_is_not_adopted() {
    for owner in [
        json!({"apiVersion": "facekey.dev/v1alpha1", "kind": "FaceKeyDeployment", "name": "other",
               "uid": "other-uid", "controller": true}),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "fk",
               "uid": "sts-uid", "controller": true}),
    ] {
        let (h, log) = ssa::harness(&[]).await;
        let mut pvc = stranger_claim(json!({"app.kubernetes.io/instance": "fk",
            "app.kubernetes.io/managed-by": "facekey-operator", "facekey.dev/owner": "fk"}));
        pvc.metadata.owner_references = Some(vec![serde_json::from_value(owner).unwrap()]);
        h.api::<PersistentVolumeClaim>()
            .create(&PostParams::default(), &pvc)
            .await
            .unwrap();
        h.create("fk", embedded(json!({}))).await;
        let err = h.reconcile("fk").await.unwrap_err();
        assert_eq!(err.category(), "ObjectNotOwned");
        assert!(log.of("PersistentVolumeClaim").is_empty());
    }
}

const CNPG: [OptionalCrd; 1] = [OptionalCrd::CloudNativePgCluster];

fn cloudnativepg(extra: Value) -> Value {
    let mut spec = json!({"image": IMG1, "replicas": 2, "scanGate": {"enabled": false},
                          "store": {"postgres": {"cloudNativePG": {"instances": 1}}}});
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            spec["store"][k] = v;
        }
    }
    spec
}

fn key_text(s: &Secret) -> Vec<u8> {
    s.data.as_ref().unwrap()["template.key"].0.clone()
}

#[tokio::test]
async fn a_retained_cluster_and_its_key_survive_deletion_and_are_adopted() {
    let (h, _log) = ssa::harness(&CNPG).await;
    h.create("fk", cloudnativepg(json!({}))).await;
    h.reconcile("fk").await.unwrap();
    let cluster = clusters(&h).get("fk-db").await.unwrap();
    assert!(cluster.metadata.owner_references.is_none());
    let key = h.api::<Secret>().get("fk-template-key").await.unwrap();
    assert!(key.metadata.owner_references.is_none());

    delete_resource(&h).await;
    assert!(h.deployment("fk").await.is_none());
    let kept = clusters(&h).get_opt("fk-db").await.unwrap().expect("kept");
    assert_eq!(kept.uid(), cluster.uid());
    let kept_key = h.api::<Secret>().get_opt("fk-template-key").await.unwrap();
    assert_eq!(
        kept_key.as_ref().map(key_text),
        Some(key_text(&key)),
        "the key of the retained database's templates is kept too"
    );

    h.create("fk", cloudnativepg(json!({}))).await;
    h.reconcile("fk").await.unwrap();
    h.mark_deployment_ready("fk").await;
    mark_cluster_ready(&h).await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert!(!has_condition(&fkd, "Conflict"), "{:?}", fkd.status);
    assert_eq!(cond(&fkd, "Ready").0, "True", "{:?}", fkd.status);
    assert_eq!(
        cond(&fkd, "PersistentStore"),
        ("True".into(), "CloudNativePG".into())
    );
    assert_eq!(
        clusters(&h).get("fk-db").await.unwrap().uid(),
        cluster.uid()
    );
    let key_after = h.api::<Secret>().get("fk-template-key").await.unwrap();
    assert_eq!(key_text(&key_after), key_text(&key), "not regenerated");
    assert_eq!(
        h.event_reasons("fk")
            .await
            .iter()
            .filter(|(_, r)| r == "TemplateKeyCreated")
            .count(),
        1,
        "one Event, from the first resource"
    );
}

#[tokio::test]
async fn without_retention_the_cluster_and_its_key_go_with_the_resource() {
    let (h, _log) = ssa::harness(&CNPG).await;
    let fkd = h
        .create("fk", cloudnativepg(json!({"retainOnDelete": false})))
        .await;
    h.reconcile("fk").await.unwrap();
    let cluster = clusters(&h).get("fk-db").await.unwrap();
    assert_eq!(
        cluster.metadata.owner_references.unwrap()[0].uid,
        fkd.uid().unwrap()
    );
    delete_resource(&h).await;
    assert!(clusters(&h).get_opt("fk-db").await.unwrap().is_none());
    assert!(
        h.api::<Secret>()
            .get_opt("fk-template-key")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn an_unlabelled_cluster_of_that_name_is_refused_as_foreign() {
    let (h, _log) = ssa::harness(&CNPG).await;
    let stranger: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": "fk-db", "namespace": NS, "labels": {"team": "payments"}},
        "spec": {"instances": 3},
    }))
    .unwrap();
    clusters(&h)
        .create(&PostParams::default(), &stranger)
        .await
        .unwrap();
    h.create("fk", cloudnativepg(json!({}))).await;
    let err = h.reconcile("fk").await.unwrap_err();
    assert_eq!(err.category(), "ObjectNotOwned");
    assert!(
        err.to_string().contains(&format!("Cluster {NS}/fk-db")),
        "{err}"
    );
    let after = clusters(&h).get("fk-db").await.unwrap();
    assert_eq!(after.data["spec"]["instances"], 3, "untouched");
    assert_eq!(after.labels().len(), 1);
    assert!(
        h.deployment("fk").await.is_none(),
        "no pod connects to a stranger's database"
    );
}

/// With a template key of one's own (`templateKeySecretRef`), retention of a CloudNativePG store
/// may change; the Cluster's owner reference moves as a real server moves it (the operator's
/// apply stops sending it, server-side apply removes it), so the database is then kept.
#[tokio::test]
async fn turning_retention_on_moves_the_clusters_owner_reference() {
    let (h, _log) = ssa::harness(&CNPG).await;
    let key = json!({"name": "my-key", "key": "template.key"});
    h.create(
        "fk",
        cloudnativepg(json!({"retainOnDelete": false, "templateKeySecretRef": key})),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    let owned = clusters(&h).get("fk-db").await.unwrap();
    assert!(owned.metadata.owner_references.is_some());
    h.patch_spec("fk", json!({"store": {"retainOnDelete": true}}))
        .await;
    h.reconcile("fk").await.unwrap();
    let kept = clusters(&h).get("fk-db").await.unwrap();
    assert!(
        kept.metadata.owner_references.is_none(),
        "{:?}",
        kept.metadata
    );
    assert!(
        kept.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("facekey.dev/retained"))
    );
    delete_resource(&h).await;
    assert_eq!(
        clusters(&h)
            .get_opt("fk-db")
            .await
            .unwrap()
            .map(|c| c.uid()),
        Some(owned.uid()),
        "the database outlives the resource"
    );
}
