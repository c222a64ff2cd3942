//! Server-side apply field ownership as a real API server applies it (the harness in
//! `common/ssa.rs`): keyed list items, conflicts per field, what another manager adds surviving
//! the operator's applies, and the hand-over of the runtime Deployment's `spec.replicas` to the
//! HorizontalPodAutoscaler without a capacity dip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::ssa::{self, HPA_MANAGER, item_owners, owners, scale_as_hpa};
use facekey_operator::FIELD_MANAGER;
use facekey_operator::apply::HANDOVER_FIELD_MANAGER;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

const IMG1: &str = "ghcr.io/facekey/runtime:0.1.0";
const IMG2: &str = "ghcr.io/facekey/runtime:0.2.0";
/// The runtime container as a FieldsV1 path element.
const RUNTIME: &str = r#"k:{"name":"runtime"}"#;

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

/// core/v1's deprecated `serviceAccount` alias, as the server keeps it: set from
/// `serviceAccountName`, and an empty `serviceAccountName` filled back from it. So dropping a
/// `serviceAccountName` from an apply brings it back; applying another value replaces both.
#[tokio::test]
async fn harness_keeps_the_service_account_alias_as_the_server_does() {
    let (h, _) = ssa::harness(&[]).await;
    let with_account = |account: Option<&str>| {
        let mut d = deployment(Some(1));
        if let Some(a) = account {
            d["spec"]["template"]["spec"]["serviceAccountName"] = json!(a);
        }
        d
    };
    let accounts = |d: &Value| {
        let pod = &d["spec"]["template"]["spec"];
        (
            pod["serviceAccountName"].clone(),
            pod["serviceAccount"].clone(),
        )
    };
    apply(&h, "op", true, &with_account(Some("custom"))).await;
    assert_eq!(accounts(&raw(&h).await), (json!("custom"), json!("custom")));
    apply(&h, "op", true, &with_account(None)).await;
    assert_eq!(
        accounts(&raw(&h).await),
        (json!("custom"), json!("custom")),
        "removed by the apply, restored from the alias"
    );
    apply(&h, "op", true, &with_account(Some("default"))).await;
    assert_eq!(
        accounts(&raw(&h).await),
        (json!("default"), json!("default"))
    );
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

/// A resource scaled to zero, then autoscaled: the HPA controller never scales a target at 0
/// (`ScalingDisabled`), so handing the live 0 over left the runtime at zero pods while the status
/// said `Ready` (`ScaledToZero`). The hand-over brings the count within the autoscaling bounds;
/// an autoscaled Deployment scaled to 0 by hand afterwards is reported, not called ready.
#[tokio::test]
async fn autoscaling_a_resource_scaled_to_zero_starts_its_pods() {
    let (h, log) = ssa::harness(&[]).await;
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 0, "scanGate": {"enabled": false}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    h.mark_deployment_ready("fk").await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(
        common::cond(&h.get("fk").await, "Ready"),
        ("True".into(), "ScaledToZero".into())
    );
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
    let writes = log.of("Deployment");
    assert_eq!(writes[0].manager, HANDOVER_FIELD_MANAGER);
    assert_eq!(writes[0].body["spec"], json!({"replicas": 2}));
    assert_eq!(raw_named(&h, "fk").await["spec"]["replicas"], 2);
    h.mark_deployment_ready("fk").await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(
        common::cond(&h.get("fk").await, "Ready"),
        ("True".into(), "Available".into())
    );

    // Scaled to 0 by hand while autoscaled: nothing will scale it back, and the status says so.
    scale_as_hpa(&h, "fk", 0).await;
    h.mark_deployment_ready("fk").await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        common::cond(&fkd, "Ready"),
        ("False".into(), "AutoscalingStopped".into())
    );
    assert_eq!(
        common::cond(&fkd, "Stalled"),
        ("True".into(), "AutoscalingStopped".into())
    );
    assert!(common::cond_message(&fkd, "Ready").contains("minReplicas (2)"));
}

/// A pull Secret listed twice (a kustomize base and overlay both adding it): the pod's
/// `imagePullSecrets` is keyed by name, and the API server refuses an applied body naming one
/// twice, which stopped every apply of the Deployment. It is applied once.
#[tokio::test]
async fn a_pull_secret_listed_twice_is_applied_once() {
    let (h, _log) = ssa::harness(&[]).await;
    h.create(
        "fk",
        json!({"image": IMG1, "scanGate": {"enabled": false}, "imagePullSecrets": [
            {"name": "regcred"}, {"name": "other"}, {"name": "regcred"}]}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    let live = raw_named(&h, "fk").await;
    assert_eq!(
        live["spec"]["template"]["spec"]["imagePullSecrets"],
        json!([{"name": "regcred"}, {"name": "other"}])
    );
}

/// The same hand-over while another child is someone else's (a Service left by an earlier
/// release, reported as a conflict for as long as it stays): the Deployment is still applied, so
/// its replicas are handed over first, not dropped to one pod.
#[tokio::test]
async fn enabling_autoscaling_beside_a_foreign_child_hands_replicas_over() {
    let (h, log) = ssa::harness(&[]).await;
    h.create(
        "fk",
        json!({"image": IMG1, "replicas": 4, "scanGate": {"enabled": false}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    h.mark_deployment_ready("fk").await;
    h.reconcile("fk").await.unwrap();

    // The Service goes and another team's of the same name takes its place.
    h.api::<Service>()
        .delete("fk", &Default::default())
        .await
        .unwrap();
    let foreign: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "fk", "labels": {"team": "payments"}},
        "spec": {"selector": {"app": "payments"}, "ports": [{"port": 80}]},
    }))
    .unwrap();
    h.api::<Service>()
        .create(&Default::default(), &foreign)
        .await
        .unwrap();
    let err = h.reconcile("fk").await.unwrap_err();
    assert_eq!(err.category(), "ObjectNotOwned");

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
    let err = h.reconcile("fk").await.unwrap_err();
    assert_eq!(err.category(), "ObjectNotOwned", "the conflict stays");
    let writes = log.of("Deployment");
    assert_eq!(writes.len(), 2, "{writes:#?}");
    assert_eq!(writes[0].manager, HANDOVER_FIELD_MANAGER);
    assert_eq!(writes[0].body["spec"], json!({"replicas": 4}));
    assert!(writes[1].body.pointer("/spec/replicas").is_none());
    let live = raw_named(&h, "fk").await;
    assert_eq!(live["spec"]["replicas"], 4, "no dip to 1");
    assert_eq!(
        owners(&live, &["spec", "replicas"]),
        [HANDOVER_FIELD_MANAGER]
    );
    assert!(
        log.of("Service").is_empty(),
        "the foreign Service is not applied"
    );
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

/// managedFields name the items of keyed lists as the API server does: `k:` and the item's key
/// fields as JSON with sorted keys (a port's defaulted `protocol` included), each item owned
/// itself (`.`) and field by field; `v:` and the value for a set; an atomic list as one field.
#[tokio::test]
async fn harness_records_keyed_items_as_the_server_does() {
    let (h, _) = ssa::harness(&[]).await;
    let mut body = deployment(Some(1));
    body["metadata"]["finalizers"] = json!(["example.com/keep"]);
    body["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "u-1"}]);
    body["spec"]["template"]["spec"] = json!({
        "containers": [{"name": "c", "image": "x",
            "ports": [{"containerPort": 8080, "protocol": "TCP"}, {"containerPort": 9090}],
            "env": [{"name": "A", "value": "1"}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        "initContainers": [{"name": "init", "image": "y"}],
        "volumes": [{"name": "data", "emptyDir": {}}],
        "imagePullSecrets": [{"name": "registry"}],
        "topologySpreadConstraints": [{"topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway", "maxSkew": 1}],
        "tolerations": [{"key": "k", "operator": "Exists"}],
    });
    apply(&h, "op", true, &body).await;
    let fields = ssa::fields_v1(&raw(&h).await, "op", "Apply").unwrap();
    let pod = &fields["f:spec"]["f:template"]["f:spec"];
    let c = &pod["f:containers"][r#"k:{"name":"c"}"#];
    assert_eq!(c["."], json!({}), "the item itself is owned: {c}");
    assert_eq!((&c["f:name"], &c["f:image"]), (&json!({}), &json!({})));
    assert_eq!(
        c["f:ports"][r#"k:{"containerPort":8080,"protocol":"TCP"}"#],
        json!({".": {}, "f:containerPort": {}, "f:protocol": {}})
    );
    assert_eq!(
        c["f:ports"][r#"k:{"containerPort":9090,"protocol":"TCP"}"#],
        json!({".": {}, "f:containerPort": {}}),
        "the key reads the defaulted protocol; the field itself was not applied"
    );
    assert_eq!(
        c["f:env"][r#"k:{"name":"A"}"#],
        json!({".": {}, "f:name": {}, "f:value": {}})
    );
    assert_eq!(
        c["f:volumeMounts"][r#"k:{"mountPath":"/data"}"#],
        json!({".": {}, "f:mountPath": {}, "f:name": {}})
    );
    assert_eq!(
        pod["f:initContainers"][r#"k:{"name":"init"}"#],
        json!({".": {}, "f:image": {}, "f:name": {}})
    );
    assert_eq!(
        pod["f:volumes"][r#"k:{"name":"data"}"#],
        json!({".": {}, "f:emptyDir": {}, "f:name": {}})
    );
    assert_eq!(
        pod["f:imagePullSecrets"][r#"k:{"name":"registry"}"#],
        json!({".": {}, "f:name": {}})
    );
    let spread =
        r#"k:{"topologyKey":"kubernetes.io/hostname","whenUnsatisfiable":"ScheduleAnyway"}"#;
    assert_eq!(
        pod["f:topologySpreadConstraints"][spread]["f:maxSkew"],
        json!({})
    );
    assert_eq!(pod["f:tolerations"], json!({}), "atomic: one field");
    let meta = &fields["f:metadata"];
    assert_eq!(
        meta["f:ownerReferences"][r#"k:{"uid":"u-1"}"#]["."],
        json!({})
    );
    assert_eq!(meta["f:finalizers"][r#"v:"example.com/keep""#], json!({}));

    // Service ports are keyed by port and protocol.
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 53, "protocol": "UDP"}]}});
    let svc = h
        .api::<Service>()
        .patch("web", &PatchParams::apply("op"), &Patch::Apply(&svc))
        .await
        .unwrap();
    let fields = ssa::fields_v1(&serde_json::to_value(svc).unwrap(), "op", "Apply").unwrap();
    let ports = fields["f:spec"]["f:ports"].as_object().unwrap();
    let keys: Vec<&String> = ports.keys().collect();
    assert_eq!(
        keys,
        [
            r#"k:{"port":53,"protocol":"UDP"}"#,
            r#"k:{"port":80,"protocol":"TCP"}"#
        ]
    );

    // An item without its key field is refused, as the server refuses it.
    let mut body = deployment(Some(1));
    body["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"value": "1"}]);
    let err = h
        .api::<Deployment>()
        .patch("web", &PatchParams::apply("op"), &Patch::Apply(&body))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422 && s.message.contains("omits key field \"name\"")),
        "{err}"
    );
}

/// Keyed items merge by key: another manager's env var and container stay when "op" applies
/// again without them; what "op" drops goes unless another manager owns the item itself. An
/// update that only changed a field inside an item (a value edited by hand) does not keep it:
/// structured-merge-diff removes the item with that field. Sets merge by value the same way.
#[tokio::test]
async fn harness_merges_keyed_items_and_prunes_only_what_nobody_else_owns() {
    let (h, _) = ssa::harness(&[]).await;
    let op = |env: Value, volumes: Value, finalizers: Value| {
        let mut d = deployment(Some(1));
        d["metadata"]["finalizers"] = finalizers;
        d["spec"]["template"]["spec"] =
            json!({"containers": [{"name": "c", "image": "x", "env": env}], "volumes": volumes});
        d
    };
    let emptydir = |name: &str| json!({"name": name, "emptyDir": {}});
    apply(
        &h,
        "op",
        true,
        &op(
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}]),
            json!([emptydir("v1"), emptydir("v2")]),
            json!(["example.com/a", "example.com/b"]),
        ),
    )
    .await;

    // Another applier adds a sidecar container and an env var of c, and declares B and a
    // finalizer too (the same values: shared, no conflict).
    let other = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web",
        "finalizers": ["example.com/b", "example.com/c"]},
        "spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "image": "s"},
            {"name": "c", "env": [{"name": "B", "value": "2"}, {"name": "X", "value": "x"}]}]}}}});
    apply(&h, "other", false, &other).await;
    // An editor changes C's value (a merge patch of the whole list, as `kubectl edit` sends).
    let mut containers = raw(&h).await["spec"]["template"]["spec"]["containers"].clone();
    let c = containers
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == "c")
        .unwrap();
    for e in c["env"].as_array_mut().unwrap() {
        if e["name"] == "C" {
            e["value"] = json!("30");
        }
    }
    h.api::<Deployment>()
        .patch(
            "web",
            &PatchParams {
                field_manager: Some("editor".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "spec": {"template": {"spec": {"containers": containers}}}})),
        )
        .await
        .unwrap();
    // Owners of env var `name` of container c: of the item itself, or of its `field`.
    let owners_of = |d: &Value, name: &str, field: Option<&str>| {
        let item = format!(r#"k:{{"name":"{name}"}}"#);
        let mut p = vec![
            "spec",
            "template",
            "spec",
            "containers",
            r#"k:{"name":"c"}"#,
            "env",
        ];
        p.push(&item);
        let o = match field {
            Some(f) => {
                p.push(f);
                owners(d, &p)
            }
            None => item_owners(d, &p),
        };
        sorted(o)
    };
    let d = raw(&h).await;
    assert_eq!(owners_of(&d, "C", Some("value")), ["editor"]);
    assert_eq!(owners_of(&d, "C", None), ["op"]);
    assert_eq!(owners_of(&d, "B", None), ["op", "other"]);

    // "op" applies again with A, v1 and finalizer x only.
    apply(
        &h,
        "op",
        true,
        &op(
            json!([{"name": "A", "value": "1"}]),
            json!([emptydir("v1")]),
            json!(["example.com/x"]),
        ),
    )
    .await;
    let d = raw(&h).await;
    let spec = &d["spec"]["template"]["spec"];
    let names = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(&spec["containers"]),
        ["sidecar", "c"],
        "the other manager's container stays, in the server's order"
    );
    let c = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "c")
        .unwrap();
    assert_eq!(
        c["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "X", "value": "x"}]),
        "B stays (another applier owns it), C goes (the editor owned only its value)"
    );
    assert_eq!(c["image"], "x");
    assert_eq!(names(&spec["volumes"]), ["v1"], "v2 had no other owner");
    assert_eq!(
        d["metadata"]["finalizers"],
        json!(["example.com/b", "example.com/c", "example.com/x"])
    );
    assert_eq!(owners_of(&d, "B", None), ["other"]);
    assert_eq!(owners_of(&d, "X", None), ["other"]);
    assert_eq!(
        ssa::fields_v1(&d, "editor", "Update"),
        None,
        "the editor's one field went with the item"
    );
}

/// Play `kubectl apply --server-side` (field manager `kubectl`) of the pod spec `pod` into
/// Deployment `name`.
async fn kubectl_apply(
    h: &common::Harness,
    name: &str,
    force: bool,
    pod: Value,
) -> Result<Deployment, kube::Error> {
    let mut params = PatchParams::apply("kubectl");
    params.force = force;
    let body = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                      "spec": {"template": {"spec": pod}}});
    h.api::<Deployment>()
        .patch(name, &params, &Patch::Apply(&body))
        .await
}

/// Play `kubectl edit` (or `kubectl set env`) of Deployment `name` under field manager
/// `kubectl-edit`: `edit` changes the stored pod spec, which goes back as a merge patch.
async fn kubectl_edit(h: &common::Harness, name: &str, edit: impl FnOnce(&mut Value)) {
    let mut pod = raw_named(h, name).await["spec"]["template"]["spec"].clone();
    edit(&mut pod);
    h.api::<Deployment>()
        .patch(
            name,
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                                 "spec": {"template": {"spec": pod}}})),
        )
        .await
        .unwrap();
}

/// The item of `list` named `name`.
fn named<'v>(list: &'v Value, name: &str) -> Option<&'v Value> {
    list.as_array()?.iter().find(|i| i["name"] == name)
}

fn runtime(d: &Value) -> &Value {
    named(&d["spec"]["template"]["spec"]["containers"], "runtime").expect("runtime container")
}

/// `["spec", "template", "spec", "containers", <runtime>, rest…]`.
fn in_runtime<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    let mut p = vec!["spec", "template", "spec", "containers", RUNTIME];
    p.extend_from_slice(rest);
    p
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn email(extra: Value) -> Value {
    let mut e = json!({"to": "sec@example.com", "from": "fk@example.com",
                       "smarthost": "smtp.example.com:587"});
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            e[k] = v;
        }
    }
    json!({"email": e})
}

/// What `kubectl edit` / `kubectl set env` add to the runtime container and what
/// `kubectl apply --server-side` adds to the pod (a sidecar container before the runtime, a
/// volume) stay through the operator's next applies, as docs/operator.md says; the operator's
/// own env var takes its new value, the new image rolls out and is read from the runtime
/// container, and a steady reconcile writes nothing. Under the atomic-list harness the
/// operator's forced apply replaced `containers` and `volumes` whole.
#[tokio::test]
async fn what_another_manager_adds_to_the_pod_survives_the_operators_apply() {
    let (h, log) = ssa::harness(&[]).await;
    h.create(
        "fk",
        json!({"image": IMG1, "scanGate": {"enabled": false},
               "alerting": email(json!({"authSecretRef": {"name": "smtp", "key": "pw"}}))}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    kubectl_edit(&h, "fk", |pod| {
        let containers = pod["containers"].as_array_mut().unwrap();
        let runtime = containers
            .iter_mut()
            .find(|c| c["name"] == "runtime")
            .unwrap();
        runtime["env"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "EXTRA", "value": "1"}));
    })
    .await;
    kubectl_apply(
        &h,
        "fk",
        false,
        json!({"containers": [{"name": "proxy", "image": "envoy:1"}, {"name": "runtime"}],
               "volumes": [{"name": "proxy-config", "emptyDir": {}}]}),
    )
    .await
    .unwrap();

    h.patch_spec(
        "fk",
        json!({"image": IMG2, "alerting": {"email": {"authSecretRef": {"name": "smtp", "key": "password"}}}}),
    )
    .await;
    log.clear();
    h.reconcile("fk").await.unwrap();
    let writes = log.of("Deployment");
    assert!(
        writes
            .iter()
            .any(|w| w.manager == FIELD_MANAGER && w.force && w.operation == "Apply"),
        "{writes:#?}"
    );
    let d = raw_named(&h, "fk").await;
    let pod = &d["spec"]["template"]["spec"];
    let containers: Vec<&str> = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(containers, ["proxy", "runtime"]);
    assert_eq!(
        named(&pod["containers"], "proxy").unwrap()["image"],
        "envoy:1"
    );
    assert!(named(&pod["volumes"], "proxy-config").is_some(), "{pod}");
    let runtime_env = &runtime(&d)["env"];
    assert_eq!(runtime(&d)["image"], IMG2);
    assert_eq!(named(runtime_env, "EXTRA").unwrap()["value"], "1");
    assert_eq!(
        named(runtime_env, "FACEKEY_SMTP_PASSWORD").unwrap()["valueFrom"]["secretKeyRef"],
        json!({"name": "smtp", "key": "password", "optional": false})
    );
    let extra = in_runtime(&["env", r#"k:{"name":"EXTRA"}"#]);
    assert_eq!(item_owners(&d, &extra), ["kubectl-edit"]);
    let password = in_runtime(&["env", r#"k:{"name":"FACEKEY_SMTP_PASSWORD"}"#]);
    assert_eq!(item_owners(&d, &password), [FIELD_MANAGER]);
    let proxy = [
        "spec",
        "template",
        "spec",
        "containers",
        r#"k:{"name":"proxy"}"#,
    ];
    assert_eq!(item_owners(&d, &proxy), ["kubectl"]);

    // The runtime container is found by name, not by position.
    h.mark_deployment_ready("fk").await;
    h.reconcile("fk").await.unwrap();
    let status = h.get("fk").await.status.unwrap();
    assert_eq!(status.current_image.as_deref(), Some(IMG2));

    // Nothing to fight over: the next reconcile writes nothing.
    let version = raw_named(&h, "fk").await["metadata"]["resourceVersion"].clone();
    h.reconcile("fk").await.unwrap();
    assert_eq!(
        raw_named(&h, "fk").await["metadata"]["resourceVersion"],
        version
    );
}

/// An env var, volume and mount the operator stops rendering (email alerting turned off) are
/// removed from the Deployment — unless another manager owns the item itself: the env var that
/// a `kubectl apply` declared too stays, now that manager's alone. Under the atomic-list
/// harness the second applier could not even declare it (409 on the whole `containers`).
#[tokio::test]
async fn what_the_operator_stops_applying_goes_unless_another_manager_owns_it() {
    let (h, _) = ssa::harness(&[]).await;
    h.create(
        "fk",
        json!({"image": IMG1, "scanGate": {"enabled": false},
               "alerting": email(json!({"authSecretRef": {"name": "smtp", "key": "pw"},
                                        "caSecretRef": {"name": "smtp-ca", "key": "ca.crt"}}))}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    let d = raw_named(&h, "fk").await;
    let mounts = |d: &Value| -> Vec<String> {
        runtime(d)["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(named(&d["spec"]["template"]["spec"]["volumes"], "smtp-ca").is_some());
    assert!(mounts(&d).contains(&"/etc/facekey/smtp-ca".to_owned()));
    let password = named(&runtime(&d)["env"], "FACEKEY_SMTP_PASSWORD")
        .unwrap()
        .clone();

    // Someone who relies on the variable declares it too: the same value, shared.
    kubectl_apply(
        &h,
        "fk",
        false,
        json!({"containers": [{"name": "runtime", "env": [password.clone()]}]}),
    )
    .await
    .unwrap();
    let item = in_runtime(&["env", r#"k:{"name":"FACEKEY_SMTP_PASSWORD"}"#]);
    assert_eq!(
        sorted(item_owners(&raw_named(&h, "fk").await, &item)),
        sorted(vec![FIELD_MANAGER.to_owned(), "kubectl".to_owned()])
    );

    h.patch_spec("fk", json!({"alerting": null})).await;
    h.reconcile("fk").await.unwrap();
    let d = raw_named(&h, "fk").await;
    assert!(
        named(&d["spec"]["template"]["spec"]["volumes"], "smtp-ca").is_none(),
        "the operator's alone: removed"
    );
    assert!(!mounts(&d).contains(&"/etc/facekey/smtp-ca".to_owned()));
    assert_eq!(
        named(&runtime(&d)["env"], "FACEKEY_SMTP_PASSWORD"),
        Some(&password),
        "kubectl owns it too: kept"
    );
    assert_eq!(item_owners(&d, &item), ["kubectl"]);
    assert_eq!(
        runtime(&d)["image"],
        IMG1,
        "the rest of the container is intact"
    );
}

/// The runtime container's image changed by `kubectl apply --server-side` (another manager)
/// conflicts with the operator's field: 409 unless forced, naming that one field. Forced, kubectl
/// owns just that field; the operator's own apply, unforced, would conflict on it alone; the
/// operator forces (as it always does) and takes just that field back, while kubectl keeps the
/// env var it applied and a share of the container item.
#[tokio::test]
async fn an_image_set_by_another_manager_conflicts_per_field_and_the_operator_takes_it_back() {
    let (h, log) = ssa::harness(&[]).await;
    h.create("fk", json!({"image": IMG1, "scanGate": {"enabled": false}}))
        .await;
    h.reconcile("fk").await.unwrap();
    let pod = json!({"containers": [{"name": "runtime", "image": "evil:1",
                                     "env": [{"name": "EXTRA", "value": "1"}]}]});
    let image = in_runtime(&["image"]);
    let field = r#".spec.template.spec.containers[name="runtime"].image"#;

    let err = kubectl_apply(&h, "fk", false, pod.clone())
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err}")
    };
    assert_eq!(status.code, 409);
    assert!(
        status.message.starts_with("Apply failed with 1 conflict:")
            && status.message.contains(&format!(
                "conflict with \"{FIELD_MANAGER}\" using apps/v1: {field}"
            )),
        "{}",
        status.message
    );
    assert_eq!(runtime(&raw_named(&h, "fk").await)["image"], IMG1);

    kubectl_apply(&h, "fk", true, pod).await.unwrap();
    let d = raw_named(&h, "fk").await;
    assert_eq!(runtime(&d)["image"], "evil:1");
    assert_eq!(owners(&d, &image), ["kubectl"]);
    assert_eq!(
        owners(&d, &in_runtime(&["imagePullPolicy"])),
        [FIELD_MANAGER],
        "the rest of the container stays the operator's"
    );

    // The operator's last body, applied without force: the one field conflicts.
    let body = log
        .of("Deployment")
        .into_iter()
        .rev()
        .find(|w| w.manager == FIELD_MANAGER)
        .unwrap();
    assert!(body.force, "the operator forces its applies");
    let err = h
        .api::<Deployment>()
        .patch(
            "fk",
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&body.body),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err}")
    };
    assert_eq!(status.code, 409);
    assert!(
        status.message.starts_with("Apply failed with 1 conflict:")
            && status
                .message
                .contains(&format!("conflict with \"kubectl\" using apps/v1: {field}")),
        "{}",
        status.message
    );

    h.reconcile("fk").await.unwrap();
    let d = raw_named(&h, "fk").await;
    assert_eq!(runtime(&d)["image"], IMG1, "drift repaired");
    assert_eq!(owners(&d, &image), [FIELD_MANAGER]);
    assert_eq!(
        sorted(item_owners(&d, &in_runtime(&[]))),
        sorted(vec![FIELD_MANAGER.to_owned(), "kubectl".to_owned()]),
        "kubectl keeps its share of the container"
    );
    assert_eq!(named(&runtime(&d)["env"], "EXTRA").unwrap()["value"], "1");
    assert_eq!(
        item_owners(&d, &in_runtime(&["env", r#"k:{"name":"EXTRA"}"#])),
        ["kubectl"]
    );
}

/// A FaceKeyDeployment status field its manager applied before and leaves out of its next apply
/// is removed, as a real server removes it (the fake kept it, so a status path that forgot
/// `lastKnownGoodImage` passed its tests); one another manager applied stays.
#[tokio::test]
async fn a_status_field_its_manager_stops_applying_is_removed() {
    use facekey_crds::FaceKeyDeployment;
    let (h, _) = ssa::harness(&[]).await;
    h.create(
        "fk",
        json!({"image": "ghcr.io/facekey/runtime:0.1.0", "scanGate": {"enabled": false}}),
    )
    .await;
    let api = h.api::<FaceKeyDeployment>();
    let status = |manager: &str, status: Value| {
        let api = api.clone();
        let manager = manager.to_owned();
        async move {
            api.patch_status(
                "fk",
                &PatchParams::apply(&manager).force(),
                &Patch::Apply(json!({"apiVersion": "facekey.dev/v1alpha1",
                                     "kind": "FaceKeyDeployment", "status": status})),
            )
            .await
            .unwrap();
        }
    };
    status(
        FIELD_MANAGER,
        json!({"observedGeneration": 1, "lastKnownGoodImage": "ghcr.io/facekey/runtime:0.1.0"}),
    )
    .await;
    status("someone-else", json!({"url": "http://fk.team.svc:8080"})).await;
    status(FIELD_MANAGER, json!({"observedGeneration": 2})).await;
    let got = h.get("fk").await.status.unwrap();
    assert_eq!(got.observed_generation, Some(2));
    assert_eq!(
        got.last_known_good_image, None,
        "dropped by its only manager"
    );
    assert_eq!(
        got.url.as_deref(),
        Some("http://fk.team.svc:8080"),
        "another manager's field stays"
    );
}
