//! Pod overrides (`spec.pod`, `spec.imagePullSecrets`), the PodDisruptionBudget rule, the scan
//! Job's scanner settings and the cluster scan policy floor: as desired objects, and through the
//! reconciler against the in-memory API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{cond, cond_message, harness};
use facekey_crds::{FaceKeyDeployment, Severity};
use facekey_operator::capabilities::CapabilityCache;
use facekey_operator::desired::{self, Capabilities, ChildKind, Desired, DesiredInputs, scan_job};
use facekey_operator::metrics::Metrics;
use facekey_operator::policy_floor::{
    ClusterPolicy, DEFAULT_SCANNER_IMAGE, PolicyFloor, ScannerSettings,
};
use facekey_operator::reconcile::Context;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ListParams;
use serde_json::{Value, json};

fn fkd(spec: Value) -> FaceKeyDeployment {
    serde_json::from_value(json!({
        "apiVersion": "facekey.dev/v1alpha1",
        "kind": "FaceKeyDeployment",
        "metadata": {"name": "fk", "namespace": "ns", "uid": "uid-1", "generation": 1},
        "spec": spec,
    }))
    .unwrap()
}

fn desired(f: &FaceKeyDeployment) -> Desired {
    desired::compute(&DesiredInputs {
        fkd: f,
        runtime_image: Some("img:1"),
        capabilities: &Capabilities::all(),
        mounted_config: None,
    })
    .unwrap()
}

fn pod_spec(d: &Desired) -> Value {
    d.get(ChildKind::Deployment, "fk").unwrap().body["spec"]["template"]["spec"].clone()
}

fn selector() -> Value {
    json!({"app.kubernetes.io/component": "runtime", "app.kubernetes.io/instance": "fk",
           "app.kubernetes.io/name": "facekey"})
}

#[test]
fn pod_overrides_reach_the_runtime_pod_template() {
    let f = fkd(
        json!({"image": "img:1", "imagePullSecrets": [{"name": "regcred"}], "pod": {
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "fk", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"},
            {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": {"team": "x"}}}],
        "serviceAccountName": "fk-runtime",
        "priorityClassName": "critical",
        "labels": {"team": "identity"},
        "annotations": {"example.com/owner": "platform"}}}),
    );
    let d = desired(&f);
    let pod = pod_spec(&d);
    assert_eq!(pod["nodeSelector"], json!({"pool": "gpu"}));
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["values"],
        json!(["amd64"])
    );
    // The given constraints replace the default; one without a selector gets the pods' own.
    let spread = pod["topologySpreadConstraints"].as_array().unwrap();
    assert_eq!(spread.len(), 2);
    assert_eq!(spread[0]["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(spread[0]["labelSelector"]["matchLabels"], selector());
    assert_eq!(
        spread[1]["labelSelector"]["matchLabels"],
        json!({"team": "x"})
    );
    assert_eq!(pod["serviceAccountName"], "fk-runtime");
    // A named service account still gets no token: the runtime never calls the API.
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["priorityClassName"], "critical");
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
    let meta = &d.get(ChildKind::Deployment, "fk").unwrap().body["spec"]["template"]["metadata"];
    assert_eq!(meta["labels"]["team"], "identity");
    assert_eq!(meta["labels"]["app.kubernetes.io/instance"], "fk");
    assert_eq!(meta["annotations"]["example.com/owner"], "platform");
    assert!(meta["annotations"]["facekey.dev/config-hash"].is_string());
    // The security settings are not overridable.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
}

#[test]
fn without_overrides_the_pod_keeps_its_defaults() {
    let pod = pod_spec(&desired(&fkd(json!({"image": "img:1"}))));
    // The one default: the image's architecture.
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/arch": "amd64"}));
    for absent in [
        "tolerations",
        "affinity",
        "priorityClassName",
        "imagePullSecrets",
    ] {
        assert!(pod.get(absent).is_none(), "{absent}: {pod}");
    }
    // Always applied, so a custom account removed from the spec leaves the pods (see
    // `removing_the_service_account_reaches_the_pods`).
    assert_eq!(pod["serviceAccountName"], "default");
    assert_eq!(
        pod["topologySpreadConstraints"],
        json!([{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": selector()}}])
    );
}

/// The runtime configuration (`<name>-config` ConfigMap data) of `f`.
fn config(f: &FaceKeyDeployment) -> Value {
    desired(f)
        .get(ChildKind::ConfigMap, "fk-config")
        .unwrap()
        .body["data"]
        .clone()
}

#[test]
fn sessions_follow_the_pod_resources_not_the_node() {
    use facekey_settings::env;
    // The defaults: 500m requested, no CPU limit, 1 GiB memory limit.
    let c = config(&fkd(json!({"image": "img:1"})));
    assert_eq!(c[env::SESSIONS_PER_MODEL], "2", "{c}");
    assert_eq!(c[env::MAX_INFLIGHT], "2");
    // Four cores and room for them.
    let c = config(&fkd(json!({"image": "img:1", "resources": {
        "requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "4", "memory": "2Gi"}}})));
    assert_eq!(c[env::SESSIONS_PER_MODEL], "4", "{c}");
    assert_eq!(c[env::MAX_INFLIGHT], "4");
    // Many cores, too little memory for a session each beside 50 000 templates; fewer templates
    // leave room for more.
    let c = config(&fkd(json!({"image": "img:1", "resources": {
        "requests": {"cpu": "16"}, "limits": {"memory": "1Gi"}}})));
    assert_eq!(c[env::SESSIONS_PER_MODEL], "3", "{c}");
    let c = config(&fkd(json!({"image": "img:1", "resources": {
        "requests": {"cpu": "16"}, "limits": {"memory": "1Gi"}},
        "store": {"embedded": {}, "maxSubjects": 2000, "maxTemplates": 5000}})));
    assert_eq!(c[env::SESSIONS_PER_MODEL], "6", "{c}");
    assert_eq!(c[env::MAX_SUBJECTS], "2000");
    assert_eq!(c[env::MAX_TEMPLATES], "5000");
    // Neither CPU nor memory named: the runtime's own default.
    let c = config(&fkd(json!({"image": "img:1", "resources": {
        "limits": {"ephemeral-storage": "2Gi"}}})));
    assert!(c.get(env::SESSIONS_PER_MODEL).is_none(), "{c}");
    assert!(c.get(env::MAX_INFLIGHT).is_none(), "{c}");
}

#[test]
fn the_grace_period_outlasts_the_delay_the_drain_and_the_mail() {
    use facekey_settings::{defaults, env};
    let f = fkd(json!({"image": "img:1"}));
    let delay: u64 = config(&f)[env::SHUTDOWN_DELAY_SECS]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(delay > 0);
    let grace = pod_spec(&desired(&f))["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        grace > delay + defaults::SHUTDOWN_TIMEOUT_SECS + defaults::ALERT_FLUSH_TIMEOUT_SECS,
        "grace {grace}"
    );
    assert_eq!(
        i64::try_from(grace).unwrap(),
        desired::termination_grace_period_seconds()
    );
}

#[test]
fn the_sidecar_is_sized_by_its_own_resources_without_a_delay() {
    use facekey_settings::env;
    let f = fkd(
        json!({"image": "img:1", "resources": {"limits": {"cpu": "4", "memory": "4Gi"}},
        "sidecar": {"enabled": true, "resources": {"requests": {"cpu": "250m", "memory": "384Mi"},
                                                  "limits": {"memory": "768Mi"}}}}),
    );
    let sidecar = f.spec.sidecar.clone().unwrap();
    let vars = desired::sidecar_env(&f.spec, &sidecar);
    let get = |name: &str| {
        vars.iter()
            .find(|v| v.name == name)
            .and_then(|v| v.value.clone())
    };
    // 768 MiB: 0.8 of it less 192 MiB and 262 MiB for 50 000 templates holds one 96 MiB
    // session, under the CPU floor of two.
    assert_eq!(get(env::SESSIONS_PER_MODEL).as_deref(), Some("1"));
    assert_eq!(get(env::MAX_INFLIGHT).as_deref(), Some("1"));
    assert_eq!(get(env::SHUTDOWN_DELAY_SECS), None);
    assert_eq!(config(&f)[env::SESSIONS_PER_MODEL], "4");
}

#[test]
fn operator_labels_and_annotations_are_refused() {
    let f = fkd(json!({"image": "img:1", "pod": {
        "labels": {"app.kubernetes.io/instance": "other", "facekey.dev/owner": "x", "ok": "1"},
        "annotations": {"facekey.dev/config-hash": "x", "ok": "1"}}}));
    let err = desired::compute(&DesiredInputs {
        fkd: &f,
        runtime_image: Some("img:1"),
        capabilities: &Capabilities::all(),
        mounted_config: None,
    })
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("pod.labels must not set the operator's label app.kubernetes.io/instance"),
        "{text}"
    );
    assert!(text.contains("facekey.dev/owner"), "{text}");
    assert!(
        text.contains("pod.annotations must not set facekey.dev/config-hash"),
        "{text}"
    );
    assert!(!text.contains(" ok"), "{text}");
}

fn pdb(spec: Value) -> Option<Value> {
    desired(&fkd(spec))
        .get(ChildKind::PodDisruptionBudget, "fk")
        .map(|o| o.body["spec"].clone())
}

#[test]
fn pdb_only_when_two_or_more_pods_are_asked_for() {
    // One pod: none (minAvailable 1 would block every drain; maxUnavailable 1 protects nothing).
    assert_eq!(pdb(json!({"image": "img:1"})), None);
    assert_eq!(pdb(json!({"image": "img:1", "replicas": 1})), None);
    assert_eq!(pdb(json!({"image": "img:1", "replicas": 0})), None);
    let two = pdb(json!({"image": "img:1", "replicas": 2})).unwrap();
    assert_eq!(two["maxUnavailable"], 1);
    assert!(two.get("minAvailable").is_none());
    assert_eq!(two["unhealthyPodEvictionPolicy"], "AlwaysAllow");
    assert_eq!(two["selector"]["matchLabels"], selector());
    // Autoscaling: its lower bound decides.
    let auto = |min: i32| {
        pdb(json!({"image": "img:1", "autoscaling": {
            "minReplicas": min, "maxReplicas": 5, "targetCPUUtilizationPercentage": 60},
            "store": {"postgres": {"urlSecretRef": {"name": "db", "key": "url"}}}}))
    };
    assert_eq!(auto(1), None);
    assert_eq!(auto(2).unwrap()["maxUnavailable"], 1);
    // An embedded store runs one pod whatever spec.replicas says.
    assert_eq!(
        pdb(json!({"image": "img:1", "replicas": 3, "store": {"embedded": {}}})),
        None
    );
}

#[test]
fn scan_job_uses_pull_secrets_and_the_resolved_scanner_settings() {
    let f = fkd(json!({"image": "reg.example/fk:1", "imagePullSecrets": [
        {"name": "first"}, {"name": "second"}]}));
    let policy = ClusterPolicy {
        floor: PolicyFloor::default(),
        scanner: ScannerSettings {
            image: "mirror.example/trivy:0.76.0".into(),
            db_repository: Some("mirror.example/trivy-db:2".into()),
            java_db_repository: Some("mirror.example/trivy-java-db:1".into()),
            server: Some("http://trivy.trivy-system:4954".into()),
        },
    };
    let gate = policy.resolve_gate(f.spec.scan_gate.as_ref());
    let job =
        serde_json::to_value(scan_job(&f, "reg.example/fk:1", &gate, "op:1").unwrap()).unwrap();
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        pod["imagePullSecrets"],
        json!([{"name": "first"}, {"name": "second"}])
    );
    // With pull secrets the merge of their logins runs first, then Trivy.
    let trivy = &pod["initContainers"][1];
    assert_eq!(trivy["image"], "mirror.example/trivy:0.76.0");
    let args: Vec<&str> = trivy["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for pair in [
        ["--server", "http://trivy.trivy-system:4954"],
        ["--db-repository", "mirror.example/trivy-db:2"],
        ["--java-db-repository", "mirror.example/trivy-java-db:1"],
    ] {
        assert!(args.windows(2).any(|w| w == pair), "{pair:?} in {args:?}");
    }
    assert_eq!(args.last(), Some(&"reg.example/fk:1"));
    // Trivy logs in with the config merged from both Secrets (see the test below).
    let env = trivy["env"].as_array().unwrap();
    assert!(env.contains(&json!({"name": "DOCKER_CONFIG", "value": "/docker-config"})));
    assert!(trivy["volumeMounts"].as_array().unwrap().contains(
        &json!({"name": "docker-config", "mountPath": "/docker-config", "readOnly": true})
    ));
    assert_eq!(pod["initContainers"][0]["name"], "docker-config");
    assert_eq!(pod["initContainers"][1]["name"], "trivy");

    // Without any: Trivy's defaults, no credentials, the default scanner image.
    let plain = fkd(json!({"image": "img:1"}));
    let gate = ClusterPolicy::default().resolve_gate(None);
    let job = serde_json::to_value(scan_job(&plain, "img:1", &gate, "op:1").unwrap()).unwrap();
    let pod = &job["spec"]["template"]["spec"];
    assert!(pod.get("imagePullSecrets").is_none());
    assert_eq!(pod["initContainers"][0]["image"], DEFAULT_SCANNER_IMAGE);
    let args = pod["initContainers"][0]["args"].to_string();
    assert!(
        !args.contains("--server") && !args.contains("--db-repository"),
        "{args}"
    );
    assert!(!pod["volumes"].to_string().contains("docker-config"));
    assert!(!pod["volumes"].to_string().contains("pull-secret"));
    assert_eq!(pod["initContainers"].as_array().unwrap().len(), 1);
    assert!(
        !pod["initContainers"][0]["env"]
            .to_string()
            .contains("DOCKER_CONFIG")
    );
}

/// Every pull secret reaches Trivy, not only the first: with `[dockerhub, corp-registry]` and
/// the image on the corporate registry, Trivy needs the second one's login.
#[test]
fn scan_job_merges_every_pull_secret_for_trivy() {
    let f = fkd(json!({"image": "corp.example/fk:1", "imagePullSecrets": [
        {"name": "dockerhub"}, {"name": "corp-registry"}]}));
    let gate = ClusterPolicy::default().resolve_gate(None);
    let job =
        serde_json::to_value(scan_job(&f, "corp.example/fk:1", &gate, "op:1").unwrap()).unwrap();
    let pod = &job["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_array().unwrap();
    let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).unwrap().clone();
    // Each Secret its own volume, both formats to distinct files, optional so a Secret with
    // only one of the keys (or a legacy kubernetes.io/dockercfg one) mounts.
    for (i, secret) in ["dockerhub", "corp-registry"].into_iter().enumerate() {
        assert_eq!(
            volume(&format!("pull-secret-{i}"))["secret"],
            json!({"secretName": secret, "defaultMode": 0o440, "optional": true, "items": [
                {"key": ".dockerconfigjson", "path": "dockerconfigjson"},
                {"key": ".dockercfg", "path": "dockercfg"}]})
        );
    }
    assert_eq!(
        volume("docker-config")["emptyDir"],
        json!({"medium": "Memory", "sizeLimit": "1Mi"})
    );

    // The merge runs first, from the operator's image, with both inputs in order.
    let init = pod["initContainers"].as_array().unwrap();
    assert_eq!(init.len(), 2);
    let merge = &init[0];
    assert_eq!(merge["name"], "docker-config");
    assert_eq!(merge["image"], "op:1");
    assert_eq!(
        merge["args"],
        json!([
            "merge-docker-config",
            "--input",
            "/pull-secrets/0-dockerhub",
            "--input",
            "/pull-secrets/1-corp-registry",
            "--output",
            "/docker-config/config.json",
            "--termination-log",
            "/dev/termination-log"
        ])
    );
    assert_eq!(
        merge["volumeMounts"],
        json!([
            {"name": "pull-secret-0", "mountPath": "/pull-secrets/0-dockerhub", "readOnly": true},
            {"name": "pull-secret-1", "mountPath": "/pull-secrets/1-corp-registry", "readOnly": true},
            {"name": "docker-config", "mountPath": "/docker-config"}])
    );
    // Same restricted context and resources as the summary container.
    let summary = &pod["containers"][0];
    assert_eq!(merge["securityContext"], summary["securityContext"]);
    assert_eq!(merge["resources"], summary["resources"]);
    assert_eq!(merge["securityContext"]["readOnlyRootFilesystem"], true);

    // Trivy reads the merged config only, read-only; the raw Secrets are not mounted in it.
    let trivy = &init[1];
    assert_eq!(trivy["name"], "trivy");
    assert!(
        trivy["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "DOCKER_CONFIG", "value": "/docker-config"}))
    );
    let mounts = trivy["volumeMounts"].to_string();
    assert!(!mounts.contains("pull-secret"), "{mounts}");
    assert!(trivy["volumeMounts"].as_array().unwrap().contains(
        &json!({"name": "docker-config", "mountPath": "/docker-config", "readOnly": true})
    ));
}

/// The harness with `policy` instead of its permissive one.
fn with_policy(h: &mut common::Harness, policy: ClusterPolicy) {
    let clock = h.clock.clone();
    h.ctx = Arc::new(
        Context::new(
            h.client.clone(),
            Metrics::new().unwrap(),
            "ghcr.io/facekey/operator:test".into(),
            Some("test".into()),
        )
        .with_clock(Arc::new(move || clock.now()))
        .with_capabilities(CapabilityCache::with_ttl(h.client.clone(), Duration::ZERO))
        .with_policy(policy),
    );
}

#[tokio::test]
async fn a_gate_below_the_floor_is_refused_and_nothing_is_applied() {
    let mut h = harness(&[]).await;
    with_policy(&mut h, ClusterPolicy::default());
    h.create(
        "fk",
        json!({"image": "img:1", "scanGate": {"enabled": false}}),
    )
    .await;
    let err = h.reconcile("fk").await.unwrap_err();
    assert_eq!(err.category(), "InvalidSpec");
    assert!(h.deployment("fk").await.is_none());
    let fkd = h.get("fk").await;
    assert_eq!(
        cond(&fkd, "Degraded"),
        ("True".to_owned(), "InvalidSpec".to_owned())
    );
    let message = cond_message(&fkd, "Degraded");
    assert!(
        message.contains("scanning is required") && message.contains("--require-scan"),
        "{message}"
    );
    let events = h.events("fk").await;
    assert!(
        events
            .iter()
            .any(|(_, reason, note)| reason == "InvalidSpec" && note.contains("--require-scan")),
        "{events:?}"
    );

    // Tightening instead is accepted: the gate runs, a scan Job is started.
    h.patch_spec(
        "fk",
        json!({"scanGate": {"enabled": true, "maxSeverity": "LOW"}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(h.jobs().await.len(), 1);
    assert_eq!(cond(&h.get("fk").await, "ScanGatePassed").1, "ScanPending");
}

#[tokio::test]
async fn a_severity_above_the_ceiling_is_refused_with_the_ceiling_named() {
    let mut h = harness(&[]).await;
    with_policy(
        &mut h,
        ClusterPolicy {
            floor: PolicyFloor {
                max_severity: Severity::Medium,
                allow_ignore_cves: false,
                ..PolicyFloor::default()
            },
            ..ClusterPolicy::default()
        },
    );
    h.create(
        "fk",
        json!({"image": "img:1", "scanGate": {"maxSeverity": "HIGH", "ignoreCVEs": ["CVE-2024-1"]}}),
    )
    .await;
    h.reconcile("fk").await.unwrap_err();
    let message = cond_message(&h.get("fk").await, "Degraded");
    assert!(
        message.contains("maxSeverity HIGH is above the cluster policy floor: at most MEDIUM"),
        "{message}"
    );
    assert!(message.contains("--allow-ignore-cves=false"), "{message}");
    assert!(h.jobs().await.is_empty());
}

#[tokio::test]
async fn the_scan_job_runs_the_operators_scanner_settings() {
    let mut h = harness(&[]).await;
    with_policy(
        &mut h,
        ClusterPolicy {
            floor: PolicyFloor::default(),
            scanner: ScannerSettings {
                image: "mirror.example/trivy:0.76.0".into(),
                db_repository: Some("mirror.example/trivy-db:2".into()),
                java_db_repository: None,
                server: Some("http://trivy.trivy-system:4954".into()),
            },
        },
    );
    // No scanGate at all: the operator's floor and scanner apply.
    h.create(
        "fk",
        json!({"image": "img:1", "imagePullSecrets": [{"name": "regcred"}]}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    let jobs = h.api::<Job>().list(&ListParams::default()).await.unwrap();
    assert_eq!(jobs.items.len(), 1);
    let pod = jobs.items[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .clone()
        .unwrap();
    let init = pod.init_containers.unwrap();
    assert_eq!(init[0].name, "docker-config");
    let trivy = &init[1];
    assert_eq!(trivy.image.as_deref(), Some("mirror.example/trivy:0.76.0"));
    let args = trivy.args.clone().unwrap();
    assert!(
        args.windows(2)
            .any(|w| w == ["--server", "http://trivy.trivy-system:4954"])
    );
    assert!(
        args.windows(2)
            .any(|w| w == ["--db-repository", "mirror.example/trivy-db:2"])
    );
    assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "regcred");

    // A resource choosing its own scanner is refused unless the operator allows overrides.
    h.create(
        "own",
        json!({"image": "img:1", "scanGate": {"scannerImage": "example.com/not-trivy:1"}}),
    )
    .await;
    h.reconcile("own").await.unwrap_err();
    let message = cond_message(&h.get("own").await, "Degraded");
    assert!(
        message.contains("scanGate.scannerImage is the operator's to set"),
        "{message}"
    );
}

#[tokio::test]
async fn the_pdb_is_pruned_when_the_deployment_drops_to_one_pod() {
    let h = harness(&[]).await;
    h.create(
        "fk",
        json!({"image": "img:1", "replicas": 3, "scanGate": {"enabled": false},
               "pod": {"priorityClassName": "critical", "nodeSelector": {"pool": "a"}}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    let pdbs = h.api::<PodDisruptionBudget>();
    let pdb = pdbs.get("fk").await.unwrap();
    assert_eq!(
        pdb.spec.unwrap().max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    let dep: Deployment = h.deployment("fk").await.unwrap();
    let pod = dep.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.priority_class_name.as_deref(), Some("critical"));

    h.patch_spec("fk", json!({"replicas": 1})).await;
    h.reconcile("fk").await.unwrap();
    assert!(pdbs.get_opt("fk").await.unwrap().is_none(), "PDB pruned");
    assert!(h.deployment("fk").await.is_some());

    h.patch_spec("fk", json!({"replicas": 2})).await;
    h.reconcile("fk").await.unwrap();
    assert!(pdbs.get_opt("fk").await.unwrap().is_some(), "PDB back");
}

/// Removing `spec.pod.serviceAccountName` puts the pods back on the namespace's `default`
/// account. The API server keeps the deprecated alias `serviceAccount` of a pod template's
/// `serviceAccountName` and fills an empty `serviceAccountName` back from it (the SSA harness
/// does the same): had the operator left the field out of its apply when unset, the custom
/// account would have come straight back from the alias and stayed on the pods.
#[tokio::test]
async fn removing_the_service_account_reaches_the_pods() {
    let (h, _log) = common::ssa::harness(&[]).await;
    h.create(
        "fk",
        json!({"image": "ghcr.io/facekey/runtime:0.1.0", "scanGate": {"enabled": false},
               "pod": {"serviceAccountName": "fk-runtime"}}),
    )
    .await;
    h.reconcile("fk").await.unwrap();
    let pod_spec = |d: Deployment| {
        let pod = serde_json::to_value(d).unwrap()["spec"]["template"]["spec"].clone();
        (
            pod["serviceAccountName"].clone(),
            pod["serviceAccount"].clone(),
        )
    };
    assert_eq!(
        pod_spec(h.deployment("fk").await.unwrap()),
        (json!("fk-runtime"), json!("fk-runtime")),
        "the server keeps the alias"
    );

    h.patch_spec("fk", json!({"pod": null})).await;
    h.reconcile("fk").await.unwrap();
    assert_eq!(
        pod_spec(h.deployment("fk").await.unwrap()),
        (json!("default"), json!("default")),
        "the custom account left the pod template"
    );
}
