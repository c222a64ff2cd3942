//! The PodMonitor scraping injected sidecars: it selects exactly the pods the webhook injects
//! (checked against a real admission answer applied to a fixture pod), scrapes the port the
//! sidecar's metrics listener is on, gives the series the job the alert rules select, and is
//! applied, owned and pruned (sidecar off, monitoring off) by the reconciler over the
//! server-side-apply harness.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{NS, cond, cond_message};
use facekey_crds::FaceKeyDeployment;
use facekey_operator::desired::{
    self, Capabilities, ChildKind, Desired, DesiredInputs, OptionalCrd, RuntimeTargets,
    SIDECAR_CONTAINER, SIDECAR_LABEL, SIDECAR_METRICS_PORT_NAME, alert_rule_groups,
};
use facekey_operator::render::parse_resources;
use facekey_operator::webhook::review::review_with;
use facekey_operator::webhook::{Decision, InjectOptions};
use kube::Api;
use kube::api::DynamicObject;
use serde::Deserialize;
use serde_json::{Value, json};

const ADMITTED: &str = "ghcr.io/facekey/runtime@sha256:4b825dc642cb6eb9a060e54bf8d69288fbee4904c8d1a9b2f07d3d5c2e4f6a1b";
const IMG1: &str = "ghcr.io/facekey/runtime:0.1.0";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhook")
}

fn resources() -> Vec<FaceKeyDeployment> {
    let text = std::fs::read_to_string(fixtures().join("resources.yaml")).unwrap();
    parse_resources(&text).unwrap().resources
}

fn named(name: &str) -> FaceKeyDeployment {
    resources()
        .into_iter()
        .find(|f| f.metadata.name.as_deref() == Some(name))
        .unwrap()
}

fn compute(f: &FaceKeyDeployment, caps: &Capabilities) -> Desired {
    desired::compute(&DesiredInputs {
        fkd: f,
        runtime_image: Some(ADMITTED),
        capabilities: caps,
        mounted_config: None,
    })
    .unwrap()
}

fn with_spec(mut f: FaceKeyDeployment, patch: Value) -> FaceKeyDeployment {
    let mut spec = serde_json::to_value(&f.spec).unwrap();
    json_patch::merge(&mut spec, &patch);
    f.spec = serde_json::from_value(spec).unwrap();
    f
}

/// The fixture pod of `inject.json` as the API server stores it after the webhook's patch.
fn injected_pod() -> Value {
    let body = std::fs::read(fixtures().join("reviews/inject.json")).unwrap();
    let fkds = resources();
    let lookup = |ns: &str, name: &str| {
        fkds.iter()
            .find(|f| {
                f.metadata.namespace.as_deref() == Some(ns)
                    && f.metadata.name.as_deref() == Some(name)
            })
            .cloned()
            .map(Arc::new)
    };
    let (review, decision) = review_with(&body, lookup, InjectOptions::default());
    assert!(
        matches!(decision, Some(Decision::Inject { .. })),
        "{decision:?}"
    );
    let bytes = k8s_openapi::ByteString::deserialize(review["response"]["patch"].clone())
        .unwrap()
        .0;
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let request: Value = serde_json::from_slice(&body).unwrap();
    let mut pod = request["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    pod
}

#[test]
fn pod_monitor_scrapes_the_pods_and_port_the_webhook_injects() {
    let fkd = named("verifier");
    let d = compute(&fkd, &Capabilities::all());
    let pm = &d.get(ChildKind::PodMonitor, "verifier").unwrap().body;
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pm["metadata"]["namespace"], "shop");
    assert_eq!(
        pm["metadata"]["ownerReferences"][0]["uid"],
        "6f1c2d3e-0000-4000-8000-000000000001"
    );
    assert_eq!(
        pm["metadata"]["labels"]["facekey.dev/owner"], "verifier",
        "the pruner finds it by the owner label"
    );

    let pod = injected_pod();
    let labels = pod["metadata"]["labels"].as_object().unwrap();
    let selector = pm["spec"]["selector"]["matchLabels"].as_object().unwrap();
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(
            labels.get(k),
            Some(v),
            "injected pod lacks selector label {k}"
        );
    }
    // A pod the webhook did not touch is not selected.
    let request: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("reviews/inject.json")).unwrap())
            .unwrap();
    let before = request["request"]["object"]["metadata"]["labels"].clone();
    assert!(
        selector.iter().any(|(k, v)| before.get(k) != Some(v)),
        "the selector must not match the un-injected pod: {before}"
    );

    // The endpoint's port is a named port of the injected sidecar, the one its metrics listener
    // is bound to.
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    let port_name = endpoint["port"].as_str().unwrap();
    assert_eq!(port_name, SIDECAR_METRICS_PORT_NAME);
    let sidecar = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == SIDECAR_CONTAINER)
        .unwrap();
    let port = sidecar["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port_name)
        .unwrap_or_else(|| panic!("no port {port_name} on the sidecar: {sidecar}"));
    assert_eq!(port["containerPort"], 7071);
    let listen = sidecar["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "FACEKEY_METRICS_LISTEN")
        .unwrap();
    assert_eq!(listen["value"], "[::]:7071");

    // `job` comes from the pod label, valued with the resource's name: the series the alert
    // rules select (`job="<name>"`, the ServiceMonitor's Service name) include the sidecars.
    assert_eq!(pm["spec"]["jobLabel"], SIDECAR_LABEL);
    assert_eq!(labels[SIDECAR_LABEL], "verifier");
    let rules = alert_rule_groups(
        "shop",
        "verifier",
        &Default::default(),
        RuntimeTargets::Deployment,
    )
    .to_string();
    assert!(rules.contains(r#"job=\"verifier\""#), "{rules}");
}

/// `FaceKeyRuntimeDown` watches the Deployment's own targets (the ServiceMonitor's, which carry
/// `service`) while it runs pods, so an injected sidecar up does not hide it down; scaled to zero,
/// any target counts. Sidecars have their own per-pod alert.
#[test]
fn runtime_down_is_not_hidden_by_sidecars() {
    let expr = |fkd: &FaceKeyDeployment, alert: &str| {
        let d = compute(fkd, &Capabilities::all());
        let rule = &d.get(ChildKind::PrometheusRule, "verifier").unwrap().body;
        rule["spec"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["alert"] == alert)
            .unwrap_or_else(|| panic!("no {alert}"))["expr"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let own = r#"up{namespace="shop",job="verifier",service="verifier"}"#;
    for spec in [
        json!({}),
        json!({"replicas": 3}),
        json!({"autoscaling": {"minReplicas": 2, "maxReplicas": 4, "targetCPUUtilizationPercentage": 70}}),
    ] {
        let fkd = with_spec(named("verifier"), spec.clone());
        let down = expr(&fkd, "FaceKeyRuntimeDown");
        assert_eq!(down.matches(own).count(), 2, "{spec}: {down}");
        assert!(!down.contains(r#"job="verifier"})"#), "{spec}: {down}");
    }
    let load = expr(&named("verifier"), "FaceKeyOverCapacity");
    assert!(
        load.contains(
            r#"facekey_admission_offered_load{namespace="shop",job="verifier",service="verifier"}"#
        ),
        "idle sidecars dilute the replicas' load: {load}"
    );
    // Scaled to zero (KEDA, `kubectl scale`): no pod is expected, so no target is no alert.
    let scaled_to_zero = with_spec(named("verifier"), json!({"replicas": 0}));
    let down = expr(&scaled_to_zero, "FaceKeyRuntimeDown");
    assert!(!down.contains("service="), "{down}");
    assert!(!down.contains("absent"), "{down}");
    assert!(
        down.contains(r#"up{namespace="shop",job="verifier"}"#),
        "{down}"
    );
    let sidecar = expr(&scaled_to_zero, "FaceKeySidecarDown");
    assert!(
        sidecar.contains(r#"up{namespace="shop",job="verifier",service=""}"#),
        "{sidecar}"
    );
}

#[test]
fn pod_monitor_follows_the_service_monitor_settings() {
    let fkd = with_spec(
        named("verifier"),
        json!({"monitoring": {"serviceMonitor": {"interval": "15s", "labels": {"release": "kps"}}}}),
    );
    let d = compute(&fkd, &Capabilities::all());
    let pm = &d.get(ChildKind::PodMonitor, "verifier").unwrap().body;
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["interval"], "15s");
    assert_eq!(pm["metadata"]["labels"]["release"], "kps");
    // Apply order: right after the ServiceMonitor.
    let order: Vec<ChildKind> = d.objects.iter().map(|o| o.kind).collect();
    let sm = order.iter().position(|k| *k == ChildKind::ServiceMonitor);
    let pmi = order.iter().position(|k| *k == ChildKind::PodMonitor);
    assert_eq!(pmi, sm.map(|i| i + 1), "{order:?}");
}

#[test]
fn no_pod_monitor_without_sidecars_or_monitoring() {
    let has_pm = |d: &Desired| d.objects.iter().any(|o| o.kind == ChildKind::PodMonitor);
    let base = named("verifier");
    assert!(has_pm(&compute(&base, &Capabilities::all())));
    let mut no_block = base.clone();
    no_block.spec.sidecar = None;
    assert!(!has_pm(&compute(&no_block, &Capabilities::all())));
    let disabled = with_spec(base.clone(), json!({"sidecar": {"enabled": false}}));
    assert!(!has_pm(&compute(&disabled, &Capabilities::all())));
    let unmonitored = with_spec(
        base.clone(),
        json!({"monitoring": {"serviceMonitor": {"enabled": false}}}),
    );
    let d = compute(&unmonitored, &Capabilities::all());
    assert!(!has_pm(&d));
    assert!(d.skipped.is_empty(), "turned off is not skipped");

    // Without the CRD it is skipped and the reason names it; the ServiceMonitor is unaffected.
    let mut caps = Capabilities::all();
    caps.installed.remove(&OptionalCrd::PodMonitor);
    let d = compute(&base, &caps);
    assert!(!has_pm(&d));
    assert!(d.get(ChildKind::ServiceMonitor, "verifier").is_some());
    assert_eq!(d.skipped.len(), 1);
    assert_eq!(d.skipped[0].kind, ChildKind::PodMonitor);
    assert!(
        d.skipped[0]
            .reason
            .contains("podmonitors.monitoring.coreos.com")
    );
}

const MONITORING: [OptionalCrd; 4] = [
    OptionalCrd::ServiceMonitor,
    OptionalCrd::PodMonitor,
    OptionalCrd::PrometheusRule,
    OptionalCrd::AlertmanagerConfig,
];

async fn pod_monitor(h: &common::Harness) -> Option<DynamicObject> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(h.client.clone(), NS, &ChildKind::PodMonitor.api_resource());
    api.get_opt("fk").await.unwrap()
}

fn pruned(h: &common::Harness) -> u64 {
    h.metric(
        "facekey_operator_pruned_objects_total",
        "kind=\"PodMonitor\"",
    )
}

#[tokio::test]
async fn pod_monitor_is_applied_owned_and_pruned_when_the_sidecar_or_monitoring_goes() {
    let (h, log) = common::ssa::harness(&MONITORING).await;
    h.create(
        "fk",
        json!({"image": IMG1, "scanGate": {"enabled": false}, "sidecar": {"metricsPort": 7171}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    let pm = pod_monitor(&h).await.expect("PodMonitor applied");
    let uid = h.get("fk").await.metadata.uid.unwrap();
    let owners = pm.metadata.owner_references.clone().unwrap_or_default();
    assert!(
        owners
            .iter()
            .any(|r| r.uid == uid && r.controller == Some(true)),
        "{owners:?}"
    );
    assert_eq!(
        pm.data["spec"]["selector"]["matchLabels"][SIDECAR_LABEL],
        "fk"
    );
    let writes = log.of("PodMonitor");
    assert!(
        writes
            .iter()
            .all(|w| w.operation == "Apply" && w.manager == facekey_operator::FIELD_MANAGER),
        "{writes:?}"
    );

    // The sidecar turned off: the PodMonitor goes, the ServiceMonitor stays.
    h.patch_spec("fk", json!({"sidecar": {"enabled": false}}))
        .await;
    h.reconcile("fk").await.unwrap();
    assert!(pod_monitor(&h).await.is_none());
    assert_eq!(pruned(&h), 1);
    let sm: Api<DynamicObject> = Api::namespaced_with(
        h.client.clone(),
        NS,
        &ChildKind::ServiceMonitor.api_resource(),
    );
    assert!(sm.get_opt("fk").await.unwrap().is_some());

    // Back on, then monitoring off: applied again, then pruned again.
    h.patch_spec("fk", json!({"sidecar": {"enabled": true}}))
        .await;
    h.reconcile("fk").await.unwrap();
    assert!(pod_monitor(&h).await.is_some());
    h.patch_spec(
        "fk",
        json!({"monitoring": {"serviceMonitor": {"enabled": false}}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    assert!(pod_monitor(&h).await.is_none());
    assert_eq!(pruned(&h), 2);

    // The block removed altogether (monitoring back on): nothing to scrape, nothing applied.
    h.patch_spec(
        "fk",
        json!({"sidecar": null, "monitoring": {"serviceMonitor": {"enabled": true}}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    assert!(pod_monitor(&h).await.is_none());
    assert!(sm.get_opt("fk").await.unwrap().is_some());
}

#[tokio::test]
async fn a_missing_pod_monitor_crd_is_reported_and_nothing_else_changes() {
    let (h, _) = common::ssa::harness(&[
        OptionalCrd::ServiceMonitor,
        OptionalCrd::PrometheusRule,
        OptionalCrd::AlertmanagerConfig,
    ])
    .await;
    h.create(
        "fk",
        json!({"image": IMG1, "scanGate": {"enabled": false}, "sidecar": {}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "MonitoringReady"),
        ("False".into(), "CRDNotInstalled".into())
    );
    let msg = cond_message(&fkd, "MonitoringReady");
    assert!(
        msg.contains("PodMonitor skipped: CRD podmonitors.monitoring.coreos.com is not installed"),
        "{msg}"
    );
    assert!(h.deployment("fk").await.is_some());
}
