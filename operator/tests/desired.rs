//! Properties of the pure desired-state computation, asserted directly (the golden files pin the full output).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use facekey_crds::FaceKeyDeployment;
use facekey_operator::desired::{
    self, Capabilities, ChildKind, DEPLOYMENT_LABEL, Desired, DesiredInputs, OptionalCrd,
    RuntimeTargets, alert_rule_groups, scan_job,
};
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

fn desired(f: &FaceKeyDeployment, image: Option<&str>, caps: &Capabilities) -> Desired {
    desired::compute(&DesiredInputs {
        fkd: f,
        runtime_image: image,
        capabilities: caps,
        mounted_config: None,
    })
    .unwrap()
}

/// The generated template-key Secrets (the API keys Secret is generated for every spec without
/// `auth.keysSecretRef`).
fn template_keys(d: &Desired) -> Vec<&desired::GeneratedSecret> {
    d.generated_secrets
        .iter()
        .filter(|g| g.content == desired::GeneratedContent::TemplateKey)
        .collect()
}

fn kinds(d: &Desired) -> Vec<(ChildKind, &str)> {
    d.objects
        .iter()
        .map(|o| (o.kind, o.name.as_str()))
        .collect()
}

#[test]
fn fixed_replicas_give_deployment_replicas_and_no_hpa() {
    let f = fkd(json!({"image": "img:1", "replicas": 3}));
    let d = desired(&f, Some("img:1"), &Capabilities::all());
    let dep = &d.get(ChildKind::Deployment, "fk").unwrap().body;
    assert_eq!(dep["spec"]["replicas"], 3);
    assert!(d.get(ChildKind::HorizontalPodAutoscaler, "fk").is_none());
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["image"],
        "img:1"
    );
}

#[test]
fn autoscaling_leaves_replicas_to_the_hpa() {
    let f = fkd(json!({"image": "img:1", "autoscaling": {
        "minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 60,
        "targetRequestsPerSecond": 40}}));
    let d = desired(&f, Some("img:1"), &Capabilities::all());
    let dep = &d.get(ChildKind::Deployment, "fk").unwrap().body;
    assert!(dep["spec"].get("replicas").is_none(), "{}", dep["spec"]);
    let hpa = &d
        .get(ChildKind::HorizontalPodAutoscaler, "fk")
        .unwrap()
        .body;
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    assert_eq!(hpa["spec"]["maxReplicas"], 5);
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "fk");
    let metrics = hpa["spec"]["metrics"].as_array().unwrap();
    assert_eq!(metrics[0]["resource"]["target"]["averageUtilization"], 60);
    assert_eq!(metrics[1]["pods"]["target"]["averageValue"], "40");
}

#[test]
fn no_runtime_image_means_no_workload_objects() {
    let f = fkd(json!({"image": "img:1", "autoscaling": {
        "minReplicas": 1, "maxReplicas": 2, "targetCPUUtilizationPercentage": 60}}));
    let d = desired(&f, None, &Capabilities::all());
    let k = kinds(&d);
    assert!(!k.iter().any(|(kind, _)| matches!(
        kind,
        ChildKind::Deployment | ChildKind::HorizontalPodAutoscaler | ChildKind::PodDisruptionBudget
    )));
    assert!(k.contains(&(ChildKind::Service, "fk")));
    assert!(k.contains(&(ChildKind::ConfigMap, "fk-config")));
}

#[test]
fn missing_crds_skip_monitoring_objects_with_reasons() {
    let f = fkd(json!({"image": "img:1", "alerting": {"email": {
        "to": "a@example.com", "from": "b@example.com", "smarthost": "smtp:25",
        "authSecretRef": {"name": "s", "key": "k"}}}}));
    let mut caps = Capabilities::none();
    caps.installed.insert(OptionalCrd::PrometheusRule);
    let d = desired(&f, Some("img:1"), &caps);
    let k = kinds(&d);
    assert!(k.contains(&(ChildKind::PrometheusRule, "fk")));
    assert!(!k.iter().any(|(kind, _)| *kind == ChildKind::ServiceMonitor));
    let skipped: Vec<ChildKind> = d.skipped.iter().map(|s| s.kind).collect();
    assert_eq!(
        skipped,
        [ChildKind::ServiceMonitor, ChildKind::AlertmanagerConfig]
    );
    assert!(
        d.skipped[0]
            .reason
            .contains("servicemonitors.monitoring.coreos.com")
    );
    // The dashboard is a plain ConfigMap: no CRD needed.
    assert!(k.contains(&(ChildKind::ConfigMap, "fk-dashboard")));
}

#[test]
fn config_hash_follows_configuration_not_image() {
    let hash = |spec: Value, image: &str| {
        let f = fkd(spec);
        let d = desired(&f, Some(image), &Capabilities::all());
        d.get(ChildKind::Deployment, "fk").unwrap().body["spec"]["template"]["metadata"]
            ["annotations"]["facekey.dev/config-hash"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let base = json!({"image": "img:1", "models": {"thresholds": {"auth": 0.7}}});
    let changed = json!({"image": "img:1", "models": {"thresholds": {"auth": 0.8}}});
    assert_eq!(hash(base.clone(), "img:1"), hash(base.clone(), "img:2"));
    assert_ne!(hash(base, "img:1"), hash(changed, "img:1"));
}

/// What the pods read of the user's ConfigMaps they mount (weights, spoof model; the runtime
/// reads them only at start-up) is part of the config hash: a change of it changes the hash;
/// a key the pods do not read does not. Pods that mount none keep the hash they had before
/// (an empty observation equals none read, as `render` passes).
#[test]
fn config_hash_follows_the_mounted_config_maps() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let spec = json!({"image": "img:1", "models": {
        "scoreWeights": {"configMapKeyRef": {"name": "trained", "key": "fusion.json"}},
        "spoof": {"configMap": "minifasnet"}}});
    let f = fkd(spec);
    let mounts = desired::mounted_config_maps(&f.spec);
    assert_eq!(
        mounts.iter().map(|m| m.id()).collect::<Vec<_>>(),
        ["weights:trained/fusion.json", "spoof-model:minifasnet"]
    );
    assert!(desired::mounts_config_map(&f.spec, "trained"));
    assert!(!desired::mounts_config_map(&f.spec, "fk-config"));
    let cm = |data: Value| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": "x"}, "data": data})).unwrap()
    };
    let observed = |weights: Option<ConfigMap>, model: Option<ConfigMap>| {
        desired::MountedConfig(
            [
                (mounts[0].id(), mounts[0].digest(weights.as_ref())),
                (mounts[1].id(), mounts[1].digest(model.as_ref())),
            ]
            .into(),
        )
    };
    let hash = |f: &FaceKeyDeployment, mounted: Option<&desired::MountedConfig>| {
        let d = desired::compute(&DesiredInputs {
            fkd: f,
            runtime_image: Some("img:1"),
            capabilities: &Capabilities::all(),
            mounted_config: mounted,
        })
        .unwrap();
        d.get(ChildKind::Deployment, "fk").unwrap().body["spec"]["template"]["metadata"]
            ["annotations"]["facekey.dev/config-hash"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let weights = |w: &str, other: &str| Some(cm(json!({"fusion.json": w, "notes": other})));
    let model = || Some(cm(json!({"model.onnx": "m1"})));
    let base = hash(&f, Some(&observed(weights("w1", "a"), model())));
    assert_eq!(
        base,
        hash(&f, Some(&observed(weights("w1", "b"), model()))),
        "a key the pods do not read"
    );
    assert_ne!(
        base,
        hash(&f, Some(&observed(weights("w2", "a"), model()))),
        "new weights"
    );
    assert_ne!(
        base,
        hash(
            &f,
            Some(&observed(
                weights("w1", "a"),
                Some(cm(json!({"model.onnx": "m2"})))
            ))
        ),
        "a new spoof model"
    );
    let missing = hash(&f, Some(&observed(None, model())));
    assert_ne!(base, missing, "a missing ConfigMap is a value of its own");
    assert_eq!(
        missing,
        hash(
            &f,
            Some(&observed(Some(cm(json!({"other": "x"}))), model()))
        ),
        "so is a missing key"
    );
    let plain = fkd(json!({"image": "img:1"}));
    assert_eq!(
        hash(&plain, None),
        hash(&plain, Some(&desired::MountedConfig::default())),
        "no mounted ConfigMap: the hash of `<name>-config` alone"
    );
}

#[test]
fn owner_reference_only_with_uid() {
    let f = fkd(json!({"image": "img:1"}));
    let d = desired(&f, Some("img:1"), &Capabilities::all());
    for o in &d.objects {
        let refs = o.body["metadata"]["ownerReferences"].as_array().unwrap();
        assert_eq!(refs.len(), 1, "{:?}", o.kind);
        assert_eq!(refs[0]["uid"], "uid-1");
        assert_eq!(refs[0]["controller"], true);
        assert_eq!(refs[0]["kind"], "FaceKeyDeployment");
    }
    let mut unowned = f.clone();
    unowned.metadata.uid = None;
    let d = desired(&unowned, Some("img:1"), &Capabilities::all());
    assert!(
        d.objects
            .iter()
            .all(|o| o.body["metadata"].get("ownerReferences").is_none())
    );
}

#[test]
fn user_labels_cannot_override_the_owner_label() {
    let f = fkd(
        json!({"image": "img:1", "monitoring": {"serviceMonitor": {"labels": {
        "release": "prom", "facekey.dev/owner": "someone-else"}}}}),
    );
    let d = desired(&f, Some("img:1"), &Capabilities::all());
    let labels = &d.get(ChildKind::ServiceMonitor, "fk").unwrap().body["metadata"]["labels"];
    assert_eq!(labels["release"], "prom");
    assert_eq!(labels["facekey.dev/owner"], "fk");
}

#[test]
fn disabled_monitoring_adds_no_monitoring_objects() {
    let f = fkd(json!({"image": "img:1", "monitoring": {
        "serviceMonitor": {"enabled": false}, "rules": {"enabled": false},
        "dashboards": {"enabled": false}}}));
    let d = desired(&f, Some("img:1"), &Capabilities::all());
    assert_eq!(
        kinds(&d),
        [
            (ChildKind::ConfigMap, "fk-config"),
            (ChildKind::NetworkPolicy, "fk"),
            (ChildKind::Deployment, "fk"),
            (ChildKind::Service, "fk"),
        ]
    );
    assert!(d.skipped.is_empty());
}

#[test]
fn weights_sources_are_wired_to_the_runtime() {
    let inline =
        fkd(json!({"image": "img:1", "models": {"scoreWeights": {"inline": "{\"w\":1}"}}}));
    let d = desired(&inline, Some("img:1"), &Capabilities::all());
    let cm = &d.get(ChildKind::ConfigMap, "fk-config").unwrap().body;
    assert_eq!(cm["data"]["weights.json"], "{\"w\":1}");
    assert_eq!(
        cm["data"]["FACEKEY_WEIGHTS"],
        "/etc/facekey/config/weights.json"
    );

    let referenced = fkd(json!({"image": "img:1", "models": {"scoreWeights": {
        "configMapKeyRef": {"name": "trained", "key": "v2.json"}}}}));
    let d = desired(&referenced, Some("img:1"), &Capabilities::all());
    let cm = &d.get(ChildKind::ConfigMap, "fk-config").unwrap().body;
    assert_eq!(
        cm["data"]["FACEKEY_WEIGHTS"],
        "/etc/facekey/weights/weights.json"
    );
    let pod = &d.get(ChildKind::Deployment, "fk").unwrap().body["spec"]["template"]["spec"];
    let vol = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "weights")
        .unwrap();
    assert_eq!(vol["configMap"]["name"], "trained");
    assert_eq!(vol["configMap"]["items"][0]["key"], "v2.json");
    assert_eq!(vol["configMap"]["items"][0]["path"], "weights.json");
}

#[test]
fn invalid_spec_yields_no_objects() {
    let f = fkd(json!({"image": "img:1", "models": {"thresholds": {"spoof": 3.0}}}));
    let err = desired::compute(&DesiredInputs {
        fkd: &f,
        runtime_image: Some("img:1"),
        capabilities: &Capabilities::all(),
        mounted_config: None,
    })
    .unwrap_err();
    assert_eq!(err.category(), "InvalidSpec");
    assert!(err.to_string().contains("thresholds.spoof"), "{err}");
}

#[test]
fn scan_job_runs_trivy_then_the_summary_container() {
    let f = fkd(json!({"image": "ghcr.io/x/y:1", "scanGate": {"scannerImage": "trivy:test"}}));
    let gate = f.spec.scan_gate.clone().unwrap();
    let job = serde_json::to_value(scan_job(&f, "ghcr.io/x/y:1", &gate, "op:1").unwrap()).unwrap();
    assert_eq!(
        job["metadata"]["annotations"]["facekey.dev/scan-image"],
        "ghcr.io/x/y:1"
    );
    let pod = &job["spec"]["template"]["spec"];
    let trivy = &pod["initContainers"][0];
    assert_eq!(trivy["image"], "trivy:test");
    let args: Vec<&str> = trivy["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args.first(), Some(&"image"));
    assert_eq!(args.last(), Some(&"ghcr.io/x/y:1"));
    assert!(args.windows(2).any(|w| w == ["--format", "json"]));
    let summary = &pod["containers"][0];
    assert_eq!(summary["name"], "summary");
    assert_eq!(summary["image"], "op:1");
    assert_eq!(summary["terminationMessagePolicy"], "File");
    assert_eq!(pod["restartPolicy"], "Never");
}

/// Runtime pods go to x86-64 nodes (the image's only architecture) unless the resource chooses
/// architectures itself, in its node selector or a required node affinity.
#[test]
fn runtime_pods_run_on_amd64_unless_the_resource_chooses_architectures() {
    let caps = Capabilities::all();
    let node_selector = |pod: serde_json::Value| {
        let f = fkd(json!({"image": "img:1", "pod": pod}));
        let d = desired(&f, Some("img:1"), &caps);
        d.get(ChildKind::Deployment, "fk").unwrap().body["spec"]["template"]["spec"]["nodeSelector"]
            .clone()
    };
    assert_eq!(
        node_selector(json!({})),
        json!({"kubernetes.io/arch": "amd64"})
    );
    assert_eq!(
        node_selector(json!({"nodeSelector": {"pool": "inference"}})),
        json!({"kubernetes.io/arch": "amd64", "pool": "inference"})
    );
    assert_eq!(
        node_selector(json!({"nodeSelector": {"kubernetes.io/arch": "arm64"}})),
        json!({"kubernetes.io/arch": "arm64"})
    );
    let by_affinity = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}]}]}}}});
    assert_eq!(node_selector(by_affinity), serde_json::Value::Null);
}

/// Every scan Job container requests and limits CPU, memory and ephemeral storage, so a
/// namespace quota on any of them admits the Job without a LimitRange; and the pod's
/// ephemeral-storage limit (the sum of its containers') covers its disk volumes.
#[test]
fn scan_job_containers_request_and_limit_every_quota_resource() {
    use facekey_operator::desired::parse_quantity;
    let f = fkd(
        json!({"image": "ghcr.io/x/y:1", "imagePullSecrets": [{"name": "regcred"}],
        "scanGate": {"scannerImage": "trivy:test"}}),
    );
    let gate = f.spec.scan_gate.clone().unwrap();
    let job = serde_json::to_value(scan_job(&f, "ghcr.io/x/y:1", &gate, "op:1").unwrap()).unwrap();
    let pod = &job["spec"]["template"]["spec"];
    let containers: Vec<&serde_json::Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod[*k].as_array().unwrap())
        .collect();
    assert_eq!(containers.len(), 3, "login merge, trivy, summary: {pod}");
    let mut ephemeral_limits = 0.0;
    for c in &containers {
        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory", "ephemeral-storage"] {
                let q = c["resources"][kind][resource].as_str();
                assert!(
                    q.and_then(parse_quantity).is_some_and(|v| v > 0.0),
                    "{} has no {kind}.{resource}: {}",
                    c["name"],
                    c["resources"]
                );
            }
        }
        ephemeral_limits += parse_quantity(
            c["resources"]["limits"]["ephemeral-storage"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    }
    let on_disk: f64 = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["emptyDir"].is_object() && v["emptyDir"]["medium"] != "Memory")
        .map(|v| parse_quantity(v["emptyDir"]["sizeLimit"].as_str().unwrap()).unwrap())
        .sum();
    assert!(
        ephemeral_limits > on_disk,
        "ephemeral-storage limits {ephemeral_limits} do not cover the disk volumes {on_disk}"
    );
}

#[test]
fn email_settings_reach_the_runtime_and_the_password_comes_from_the_secret() {
    let email = |smarthost: &str, tls: bool| {
        fkd(json!({"image": "img:1", "alerting": {"email": {
            "to": "sec@example.com", "from": "fk@example.com", "smarthost": smarthost,
            "requireTls": tls, "authSecretRef": {"name": "smtp", "key": "pw"}}}}))
    };
    let caps = Capabilities::all();
    let d = desired(&email("smtp.example.com:587", true), Some("img:1"), &caps);
    let data = &d.get(ChildKind::ConfigMap, "fk-config").unwrap().body["data"];
    assert_eq!(data["FACEKEY_SMTP_SMARTHOST"], "smtp.example.com:587");
    assert_eq!(data["FACEKEY_SMTP_TLS"], "starttls");
    assert_eq!(data["FACEKEY_SMTP_USERNAME"], "fk@example.com");
    assert_eq!(data["FACEKEY_ALERT_TO"], "sec@example.com");
    assert!(
        data.get("FACEKEY_SMTP_PASSWORD").is_none(),
        "never in a ConfigMap"
    );
    let env = &d.get(ChildKind::Deployment, "fk").unwrap().body["spec"]["template"]["spec"]["containers"]
        [0]["env"][0];
    assert_eq!(env["name"], "FACEKEY_SMTP_PASSWORD");
    assert_eq!(env["valueFrom"]["secretKeyRef"]["name"], "smtp");
    assert_eq!(env["valueFrom"]["secretKeyRef"]["key"], "pw");
    let d = desired(&email("smtp.example.com:465", true), Some("img:1"), &caps);
    assert_eq!(
        d.get(ChildKind::ConfigMap, "fk-config").unwrap().body["data"]["FACEKEY_SMTP_TLS"],
        "tls"
    );
    // A trusted relay without TLS takes mail without AUTH: no user name, no password.
    let relay = fkd(json!({"image": "img:1", "alerting": {"email": {
        "to": "sec@example.com", "from": "fk@example.com", "smarthost": "relay:25",
        "requireTls": false}}}));
    let d = desired(&relay, Some("img:1"), &caps);
    let data = &d.get(ChildKind::ConfigMap, "fk-config").unwrap().body["data"];
    assert_eq!(data["FACEKEY_SMTP_TLS"], "none");
    assert!(data.get("FACEKEY_SMTP_USERNAME").is_none(), "{data}");
    let container = &d.get(ChildKind::Deployment, "fk").unwrap().body["spec"]["template"]["spec"]["containers"]
        [0];
    assert!(container.get("env").is_none(), "{container}");
    let amc = &d.get(ChildKind::AlertmanagerConfig, "fk").unwrap().body;
    let email_config = &amc["spec"]["receivers"][0]["emailConfigs"][0];
    assert!(email_config.get("authUsername").is_none(), "{email_config}");
    assert!(email_config.get("authPassword").is_none(), "{email_config}");
    assert_eq!(email_config["requireTLS"], false);
    // Credentials never go out in clear text: such a spec yields no objects.
    let cleartext = email("relay:25", false);
    assert!(
        desired::compute(&DesiredInputs {
            fkd: &cleartext,
            runtime_image: Some("img:1"),
            capabilities: &caps,
            mounted_config: None,
        })
        .is_err()
    );
}

#[test]
fn a_private_smtp_ca_reaches_the_runtime_and_alertmanager() {
    let f = fkd(json!({"image": "img:1", "alerting": {"email": {
        "to": "sec@example.com", "from": "fk@example.com", "smarthost": "smtp.corp:587",
        "authSecretRef": {"name": "smtp", "key": "pw"},
        "caSecretRef": {"name": "corp-ca", "key": "ca.pem"}}}}));
    let d = desired(&f, Some("img:1"), &Capabilities::all());
    let data = &d.get(ChildKind::ConfigMap, "fk-config").unwrap().body["data"];
    let ca_file = data["FACEKEY_SMTP_CA_FILE"].as_str().unwrap();
    let (volume, mount) = volume_and_mount(&d, "smtp-ca");
    assert_eq!(volume["secret"]["secretName"], "corp-ca");
    assert_eq!(volume["secret"]["items"][0]["key"], "ca.pem");
    let mounted = format!(
        "{}/{}",
        mount["mountPath"].as_str().unwrap(),
        volume["secret"]["items"][0]["path"].as_str().unwrap()
    );
    assert_eq!(ca_file, mounted);
    let amc = &d.get(ChildKind::AlertmanagerConfig, "fk").unwrap().body;
    assert_eq!(
        amc["spec"]["receivers"][0]["emailConfigs"][0]["tlsConfig"],
        json!({"ca": {"secret": {"name": "corp-ca", "key": "ca.pem"}}})
    );
}

/// Names of the environment variables in the runtime container of `d`: the ConfigMap's keys it
/// loads with `envFrom` (minus the weights file) and its own `env` entries.
fn pod_env_names(d: &Desired) -> Vec<String> {
    let data = d.get(ChildKind::ConfigMap, "fk-config").unwrap().body["data"]
        .as_object()
        .unwrap();
    let container = &d.get(ChildKind::Deployment, "fk").unwrap().body["spec"]["template"]["spec"]["containers"]
        [0];
    let mut names: Vec<String> = data
        .keys()
        .filter(|k| k.as_str() != "weights.json")
        .cloned()
        .collect();
    for e in container["env"].as_array().into_iter().flatten() {
        names.push(e["name"].as_str().unwrap().to_owned());
    }
    names.sort();
    names
}

/// A value the runtime (and so the operator) accepts for the setting `env_name`.
fn accepted_value(env_name: &str) -> &'static str {
    let names = facekey_settings::values::names(env_name).unwrap_or_default();
    ["1", "12", "info"]
        .into_iter()
        .chain(names.iter().copied())
        .find(|v| facekey_settings::values::check(env_name, v).is_ok())
        .unwrap()
}

#[test]
fn written_env_names_are_runtime_settings_and_listed() {
    let specs = [
        json!({"image": "img:1"}),
        json!({"image": "img:1", "ui": {"enabled": false},
               "models": {"thresholds": {"auth": 0.6, "spoof": 0.4, "match": 0.5},
                          "scoreWeights": {"inline": "{}"},
                          "spoof": {"configMap": "liveness-models"}},
               "alerting": {"email": {"to": "a@example.com", "from": "b@example.com",
                 "smarthost": "smtp:587", "authSecretRef": {"name": "s", "key": "k"},
                 "caSecretRef": {"name": "ca", "key": "ca.crt"}}}}),
        json!({"image": "img:1", "models": {
               "scoreWeights": {"configMapKeyRef": {"name": "w", "key": "k"}},
               "spoof": {"pvc": "models"}}}),
        json!({"image": "img:1", "store": {"postgres": {"urlSecretRef": {"name": "db", "key": "url"},
               "caSecretRef": {"name": "db-ca", "key": "ca.pem"}},
               "maxSubjects": 500, "maxTemplates": 1000, "maxFacesPerSubject": 3,
               "maxSubjectsPerKey": 100, "maxTemplatesPerKey": 200}}),
        json!({"image": "img:1", "verification": {
               "requireSession": true, "decisionPolicy": "strict",
               "sessions": {"ttlSeconds": 30, "maxFrames": 90, "maxOpen": 100, "maxOpenPerKey": 10},
               "lockout": {"attempts": 3, "windowSeconds": 600, "durationSeconds": 1200,
                   "maxDurationSeconds": 7200},
               "enrolment": {"liveness": false, "minQuality": 0.5}},
               "settings": facekey_crds::RUNTIME_SETTINGS.iter()
                   .map(|n| (facekey_crds::settings_field(n), json!(accepted_value(n))))
                   .collect::<serde_json::Map<_, _>>()}),
    ];
    let listed: std::collections::BTreeSet<&str> =
        desired::runtime_env_names().into_iter().collect();
    let mut written = std::collections::BTreeSet::new();
    for spec in specs {
        let f = fkd(spec);
        let names = desired::runtime_env_for(&f.spec);
        assert_eq!(
            names,
            pod_env_names(&desired(&f, Some("img:1"), &Capabilities::all())),
            "runtime_env_for must describe the objects"
        );
        for name in names {
            assert!(
                facekey_settings::env::ALL.contains(&name.as_str()),
                "{name} is not a runtime setting"
            );
            assert!(
                listed.contains(name.as_str()),
                "{name} missing from runtime_env_names"
            );
            written.insert(name);
        }
    }
    let written: std::collections::BTreeSet<&str> = written.iter().map(String::as_str).collect();
    assert_eq!(
        written, listed,
        "runtime_env_names lists a name no spec writes"
    );
}

#[test]
fn runtime_port_is_the_runtime_default() {
    let f = fkd(json!({"image": "img:1"}));
    let d = desired(&f, Some("img:1"), &Capabilities::all());
    let port = i64::from(facekey_settings::defaults::PORT);
    let container = &d.get(ChildKind::Deployment, "fk").unwrap().body["spec"]["template"]["spec"]["containers"]
        [0];
    assert_eq!(container["ports"][0]["containerPort"], port);
    assert_eq!(
        d.get(ChildKind::Service, "fk").unwrap().body["spec"]["ports"][0]["port"],
        port
    );
    let data = &d.get(ChildKind::ConfigMap, "fk-config").unwrap().body["data"];
    assert_eq!(data[facekey_settings::env::LISTEN], format!("[::]:{port}"));
}

/// Every alert keeps `namespace` through its aggregations (prometheus-operator's
/// AlertmanagerConfig route matches on it; an alert without it is never routed) and carries the
/// labels and annotations its route and its reader need.
#[test]
fn every_alert_is_routable_and_documented() {
    let groups = [RuntimeTargets::Deployment, RuntimeTargets::AnyTarget]
        .map(|watched| alert_rule_groups("ns", "fk", &Default::default(), watched));
    let mut alerts = 0;
    for rule in groups
        .iter()
        .flat_map(|g| g.as_array().unwrap())
        .flat_map(|g| g["rules"].as_array().unwrap())
    {
        let expr = rule["expr"].as_str().unwrap();
        for agg in ["sum", "max", "min", "count", "avg"] {
            assert!(
                !expr.contains(&format!("{agg}(")),
                "aggregation without `by` drops namespace: {expr}"
            );
        }
        for (i, _) in expr.match_indices(" by (") {
            let list = &expr[i + 5..i + 5 + expr[i + 5..].find(')').unwrap()];
            assert!(
                list.split(',').any(|l| l.trim() == "namespace"),
                "`by ({list})` drops namespace: {expr}"
            );
        }
        let Some(name) = rule["alert"].as_str() else {
            assert_eq!(rule["labels"][DEPLOYMENT_LABEL], "fk");
            continue;
        };
        alerts += 1;
        assert_eq!(rule["labels"][DEPLOYMENT_LABEL], "fk", "{name}");
        assert!(rule["labels"]["severity"].is_string(), "{name}");
        for a in ["summary", "description", "runbook_url"] {
            assert!(
                !rule["annotations"][a].as_str().unwrap_or("").is_empty(),
                "{name} lacks {a}"
            );
        }
        assert!(
            rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap()
                .ends_with(&format!("#{}", name.to_lowercase())),
            "{name}"
        );
    }
    // 28 alerts, rendered for each kind of watched targets.
    assert_eq!(alerts, 2 * 28);
}

fn pod_spec(d: &Desired) -> &Value {
    &d.get(ChildKind::Deployment, "fk").unwrap().body["spec"]["template"]["spec"]
}

/// The volume named `name` of the runtime pod and where the runtime container mounts it.
fn volume_and_mount<'a>(d: &'a Desired, name: &str) -> (&'a Value, &'a Value) {
    let pod = pod_spec(d);
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"));
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no mount {name}"));
    (volume, mount)
}

fn has_volume(d: &Desired, name: &str) -> bool {
    pod_spec(d)["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == name)
}

/// The whole rendered desired state as text, to prove a value never appears in it.
fn all_text(d: &Desired) -> String {
    d.objects
        .iter()
        .map(|o| o.body.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_store_keeps_the_emptydir_and_says_so() {
    let f = fkd(json!({"image": "img:1", "replicas": 2}));
    let d = desired(&f, Some("img:1"), &Capabilities::all());
    let (volume, mount) = volume_and_mount(&d, "data");
    assert_eq!(volume["emptyDir"]["sizeLimit"], "1Gi");
    assert_eq!(mount["mountPath"], "/var/lib/facekey");
    assert_eq!(d.store, desired::StoreState::Ephemeral);
    assert!(template_keys(&d).is_empty());
    assert!(!has_volume(&d, "database-url") && !has_volume(&d, "template-key"));
    let data = &d.get(ChildKind::ConfigMap, "fk-config").unwrap().body["data"];
    assert!(data.get("FACEKEY_DATABASE_URL_FILE").is_none());
    assert!(data.get("FACEKEY_TEMPLATE_KEY_FILE").is_none());
}

#[test]
fn embedded_store_is_a_pvc_one_replica_and_recreate() {
    let f = fkd(json!({"image": "img:1", "replicas": 3,
        "store": {"embedded": {"pvc": {"size": "5Gi", "storageClassName": "fast"}}}}));
    let d = desired(&f, Some("img:1"), &Capabilities::all());
    let pvc = &d
        .get(ChildKind::PersistentVolumeClaim, "fk-data")
        .unwrap()
        .body;
    assert_eq!(pvc["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "5Gi");
    assert_eq!(pvc["spec"]["storageClassName"], "fast");
    // Retained by default (store.retainOnDelete): no owner reference, the operator's labels and
    // an annotation saying why; `retainOnDelete: false` gives the controller owner reference.
    assert!(pvc["metadata"].get("ownerReferences").is_none(), "{pvc}");
    assert_eq!(pvc["metadata"]["labels"]["facekey.dev/owner"], "fk");
    assert_eq!(
        pvc["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "facekey-operator"
    );
    assert!(pvc["metadata"]["annotations"]["facekey.dev/retained"].is_string());
    let owned = fkd(json!({"image": "img:1",
        "store": {"embedded": {}, "retainOnDelete": false}}));
    let owned = desired(&owned, Some("img:1"), &Capabilities::all());
    let meta = &owned
        .get(ChildKind::PersistentVolumeClaim, "fk-data")
        .unwrap()
        .body["metadata"];
    assert_eq!(meta["ownerReferences"][0]["uid"], "uid-1");
    assert_eq!(meta["ownerReferences"][0]["controller"], true);
    assert!(meta.get("annotations").is_none());
    // The claim is applied before the Deployment whose pod mounts it.
    let order: Vec<ChildKind> = d.objects.iter().map(|o| o.kind).collect();
    let pos = |k| order.iter().position(|x| *x == k).unwrap();
    assert!(pos(ChildKind::PersistentVolumeClaim) < pos(ChildKind::Deployment));
    let (volume, mount) = volume_and_mount(&d, "data");
    assert_eq!(volume["persistentVolumeClaim"]["claimName"], "fk-data");
    assert!(volume.get("emptyDir").is_none());
    assert_eq!(mount["mountPath"], "/var/lib/facekey");
    assert!(mount.get("readOnly").is_none(), "the store writes there");
    let dep = &d.get(ChildKind::Deployment, "fk").unwrap().body["spec"];
    assert_eq!(dep["replicas"], 1, "replicas 3 is limited to 1");
    assert_eq!(dep["strategy"], json!({"type": "Recreate"}));
    assert_eq!(
        d.store,
        desired::StoreState::Embedded {
            claim: "fk-data".into(),
            limited_from: Some(3)
        }
    );
    // The runtime keeps its own key on the volume: no key Secret, no key file setting.
    assert!(template_keys(&d).is_empty());
    assert!(!has_volume(&d, "template-key"));
    let data = &d.get(ChildKind::ConfigMap, "fk-config").unwrap().body["data"];
    assert!(data.get("FACEKEY_TEMPLATE_KEY_FILE").is_none());
    assert!(data.get("FACEKEY_DATABASE_URL_FILE").is_none());
    // Scaled to zero stays zero; default size 1Gi.
    let f = fkd(json!({"image": "img:1", "replicas": 0, "store": {"embedded": {}}}));
    let d = desired(&f, Some("img:1"), &Capabilities::all());
    assert_eq!(
        d.get(ChildKind::Deployment, "fk").unwrap().body["spec"]["replicas"],
        0
    );
    assert_eq!(
        d.get(ChildKind::PersistentVolumeClaim, "fk-data")
            .unwrap()
            .body["spec"]["resources"]["requests"]["storage"],
        "1Gi"
    );
    assert!(
        d.get(ChildKind::PersistentVolumeClaim, "fk-data")
            .unwrap()
            .body["spec"]
            .get("storageClassName")
            .is_none()
    );
}

#[test]
fn embedded_store_with_a_key_secret_mounts_it() {
    let f = fkd(json!({"image": "img:1", "store": {"embedded": {},
        "templateKeySecretRef": {"name": "keys", "key": "current"}}}));
    let d = desired(&f, Some("img:1"), &Capabilities::all());
    let (volume, mount) = volume_and_mount(&d, "template-key");
    assert_eq!(volume["secret"]["secretName"], "keys");
    assert_eq!(
        volume["secret"]["items"],
        json!([{"key": "current", "path": "template.key"}])
    );
    assert_eq!(mount["mountPath"], "/etc/facekey/template-key");
    let data = &d.get(ChildKind::ConfigMap, "fk-config").unwrap().body["data"];
    assert_eq!(
        data["FACEKEY_TEMPLATE_KEY_FILE"],
        "/etc/facekey/template-key/template.key"
    );
    assert!(template_keys(&d).is_empty());
}

#[test]
fn embedded_store_with_autoscaling_is_invalid() {
    let f = fkd(json!({"image": "img:1", "store": {"embedded": {}},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50}}));
    let err = desired::compute(&DesiredInputs {
        fkd: &f,
        runtime_image: Some("img:1"),
        capabilities: &Capabilities::all(),
        mounted_config: None,
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("an embedded store serves one pod: autoscaling needs store.postgres"),
        "{err}"
    );
}

#[test]
fn postgres_url_and_generated_key_are_secret_files() {
    let f = fkd(json!({"image": "img:1",
        "autoscaling": {"minReplicas": 2, "maxReplicas": 4, "targetCPUUtilizationPercentage": 50},
        "store": {"postgres": {"urlSecretRef": {"name": "db", "key": "url"}}}}));
    let d = desired(&f, Some("img:1"), &Capabilities::all());
    let (volume, mount) = volume_and_mount(&d, "database-url");
    assert_eq!(
        volume["secret"],
        json!({"secretName": "db", "items": [{"key": "url", "path": "url"}],
               "defaultMode": 0o440, "optional": false})
    );
    assert_eq!(mount["mountPath"], "/etc/facekey/database");
    assert_eq!(mount["readOnly"], true);
    let (volume, _) = volume_and_mount(&d, "template-key");
    assert_eq!(volume["secret"]["secretName"], "fk-template-key");
    assert_eq!(
        volume["secret"]["items"],
        json!([{"key": "template.key", "path": "template.key"}])
    );
    let data = &d.get(ChildKind::ConfigMap, "fk-config").unwrap().body["data"];
    assert_eq!(
        data["FACEKEY_DATABASE_URL_FILE"],
        "/etc/facekey/database/url"
    );
    // TLS as the user's URL says: no CA of the operator's choosing.
    assert!(data.get("FACEKEY_DATABASE_CA_FILE").is_none(), "{data}");
    assert!(!has_volume(&d, "database-ca"));
    assert_eq!(
        data["FACEKEY_TEMPLATE_KEY_FILE"],
        "/etc/facekey/template-key/template.key"
    );
    assert!(
        data.get("FACEKEY_DATABASE_URL").is_none(),
        "never the URL itself"
    );
    let container = &pod_spec(&d)["containers"][0];
    assert!(
        container["env"]
            .as_array()
            .is_none_or(|e| e.iter().all(|v| v["name"] != "FACEKEY_DATABASE_URL")),
        "never as an env value"
    );
    // Several replicas and rolling updates stay.
    assert!(d.get(ChildKind::HorizontalPodAutoscaler, "fk").is_some());
    assert_eq!(
        d.get(ChildKind::Deployment, "fk").unwrap().body["spec"]["strategy"]["type"],
        "RollingUpdate"
    );
    // The data directory stays an emptyDir: nothing is stored there with PostgreSQL.
    assert!(volume_and_mount(&d, "data").0.get("emptyDir").is_some());
    // The generated key Secret: metadata only, labelled, and not owned (an external database
    // outlives the resource, so must its key); the reconciler adds the key.
    let keys = template_keys(&d);
    let [secret] = keys.as_slice() else {
        panic!("{:?}", d.generated_secrets)
    };
    assert_eq!(
        (secret.name.as_str(), secret.key.as_str()),
        ("fk-template-key", "template.key")
    );
    assert!(secret.body.get("data").is_none() && secret.body.get("stringData").is_none());
    assert!(secret.body["metadata"].get("ownerReferences").is_none());
    assert!(secret.body["metadata"]["annotations"]["facekey.dev/retained"].is_string());
    assert_eq!(secret.body["metadata"]["labels"]["facekey.dev/owner"], "fk");
    assert_eq!(
        d.store,
        desired::StoreState::Postgres {
            url: facekey_crds::KeyRef {
                name: "db".into(),
                key: "url".into()
            }
        }
    );
    // A given key Secret is mounted instead, and nothing is generated.
    let f = fkd(json!({"image": "img:1", "store": {
        "postgres": {"urlSecretRef": {"name": "db", "key": "url"}},
        "templateKeySecretRef": {"name": "keys", "key": "k"}}}));
    let d = desired(&f, Some("img:1"), &Capabilities::all());
    assert!(template_keys(&d).is_empty());
    assert_eq!(
        volume_and_mount(&d, "template-key").0["secret"]["secretName"],
        "keys"
    );
    assert!(!all_text(&d).contains("fk-template-key"));
}

#[test]
fn cloudnativepg_cluster_and_its_app_secret() {
    let f = fkd(
        json!({"image": "img:1", "replicas": 2, "store": {"postgres": {"cloudNativePG": {
        "instances": 3, "storage": {"size": "10Gi", "storageClassName": "ssd"},
        "imageName": "ghcr.io/cloudnative-pg/postgresql:17"}}}}),
    );
    let d = desired(&f, Some("img:1"), &Capabilities::all());
    let cluster = &d.get(ChildKind::PostgresCluster, "fk-db").unwrap().body;
    assert_eq!(cluster["apiVersion"], "postgresql.cnpg.io/v1");
    assert_eq!(cluster["kind"], "Cluster");
    assert_eq!(
        cluster["spec"],
        json!({"instances": 3, "storage": {"size": "10Gi", "storageClass": "ssd"},
               "bootstrap": {"initdb": {"database": "facekey", "owner": "facekey"}},
               "imageName": "ghcr.io/cloudnative-pg/postgresql:17"})
    );
    // Retained by default, with its generated template key (the key of its templates).
    assert!(cluster["metadata"].get("ownerReferences").is_none());
    assert!(cluster["metadata"]["annotations"]["facekey.dev/retained"].is_string());
    assert_eq!(
        cluster["metadata"]["labels"]["app.kubernetes.io/component"],
        "database"
    );
    let key = &template_keys(&d)[0].body["metadata"];
    assert!(key.get("ownerReferences").is_none());
    assert!(key["annotations"]["facekey.dev/retained"].is_string());
    // `retainOnDelete: false`: both carry the controller owner reference.
    let mut owned = f.clone();
    owned.spec.store.as_mut().unwrap().retain_on_delete = false;
    let owned = desired(&owned, Some("img:1"), &Capabilities::all());
    let meta = &owned.get(ChildKind::PostgresCluster, "fk-db").unwrap().body["metadata"];
    assert_eq!(meta["ownerReferences"][0]["uid"], "uid-1");
    assert_eq!(meta["ownerReferences"][0]["controller"], true);
    assert!(meta.get("annotations").is_none());
    let key = &template_keys(&owned)[0].body["metadata"];
    assert_eq!(key["ownerReferences"][0]["uid"], "uid-1");
    assert!(key.get("annotations").is_none());
    let (volume, _) = volume_and_mount(&d, "database-url");
    assert_eq!(volume["secret"]["secretName"], "fk-db-app");
    assert_eq!(
        volume["secret"]["items"],
        json!([{"key": "uri", "path": "url"}])
    );
    // Its URL has no sslmode: the runtime verifies the server against the cluster's own CA.
    let (volume, mount) = volume_and_mount(&d, "database-ca");
    assert_eq!(volume["secret"]["secretName"], "fk-db-ca");
    assert_eq!(
        volume["secret"]["items"],
        json!([{"key": "ca.crt", "path": "ca.crt"}])
    );
    assert_eq!(
        d.get(ChildKind::ConfigMap, "fk-config").unwrap().body["data"]["FACEKEY_DATABASE_CA_FILE"],
        format!("{}/ca.crt", mount["mountPath"].as_str().unwrap())
    );
    assert_eq!(
        template_keys(&d).len(),
        1,
        "the template key is generated too"
    );
    assert_eq!(
        d.store,
        desired::StoreState::CloudNativePg {
            cluster: "fk-db".into()
        }
    );
    // Without the CRD: no Cluster, the state says why, the wiring stays (pods wait for the Secret).
    let d = desired(&f, Some("img:1"), &Capabilities::none());
    assert!(d.get(ChildKind::PostgresCluster, "fk-db").is_none());
    assert_eq!(
        d.store,
        desired::StoreState::CloudNativePgMissing {
            cluster: "fk-db".into()
        }
    );
    assert!(
        d.skipped
            .iter()
            .all(|s| s.kind != ChildKind::PostgresCluster),
        "not a monitoring object: MonitoringReady does not report it"
    );
    assert_eq!(
        volume_and_mount(&d, "database-url").0["secret"]["secretName"],
        "fk-db-app"
    );
}

#[test]
fn api_keys_metrics_listener_and_probes_are_wired() {
    let f = fkd(json!({"image": "img:1"}));
    let d = desired(&f, Some("img:1"), &Capabilities::all());
    let data = &d.get(ChildKind::ConfigMap, "fk-config").unwrap().body["data"];
    assert_eq!(
        data["FACEKEY_API_KEYS_FILE"],
        "/etc/facekey/api-keys/api-keys"
    );
    assert_eq!(data["FACEKEY_METRICS_LISTEN"], "[::]:9090");
    assert_eq!(data["FACEKEY_METRICS_AUTH"], "open");
    // Generated: `<name>-api-keys`, owned, without data (the reconciler fills it in).
    let [api] = d
        .generated_secrets
        .iter()
        .filter(|g| g.content == desired::GeneratedContent::ApiKeys)
        .collect::<Vec<_>>()[..]
    else {
        panic!("{:?}", d.generated_secrets)
    };
    assert_eq!(
        (api.name.as_str(), api.key.as_str()),
        ("fk-api-keys", "api-keys")
    );
    assert!(api.body.get("data").is_none());
    assert_eq!(api.body["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    let (volume, mount) = volume_and_mount(&d, "api-keys");
    assert_eq!(
        volume["secret"],
        json!({"secretName": "fk-api-keys", "items": [{"key": "api-keys", "path": "api-keys"}],
               "defaultMode": 0o440, "optional": false})
    );
    assert_eq!(mount["mountPath"], "/etc/facekey/api-keys");
    assert!(
        mount.get("subPath").is_none(),
        "a directory mount sees Secret updates"
    );
    let container = &pod_spec(&d)["containers"][0];
    assert_eq!(
        container["ports"],
        json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"},
               {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}])
    );
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    let svc = &d.get(ChildKind::Service, "fk").unwrap().body;
    assert_eq!(svc["spec"]["ports"][1]["name"], "metrics");
    assert_eq!(svc["spec"]["ports"][1]["port"], 9090);
    let sm = &d.get(ChildKind::ServiceMonitor, "fk").unwrap().body;
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");

    // A given Secret: mounted, nothing generated; `metrics: key` reaches the runtime.
    let f = fkd(json!({"image": "img:1",
        "auth": {"keysSecretRef": {"name": "team-keys"}, "metrics": "key"}}));
    let d = desired(&f, Some("img:1"), &Capabilities::all());
    assert!(d.generated_secrets.is_empty());
    assert_eq!(
        volume_and_mount(&d, "api-keys").0["secret"]["items"],
        json!([{"key": "api-keys", "path": "api-keys"}])
    );
    assert_eq!(
        volume_and_mount(&d, "api-keys").0["secret"]["secretName"],
        "team-keys"
    );
    assert_eq!(
        d.get(ChildKind::ConfigMap, "fk-config").unwrap().body["data"]["FACEKEY_METRICS_AUTH"],
        "key"
    );
}

#[test]
fn network_policy_peers_default_to_namespace_and_monitoring() {
    let f = fkd(json!({"image": "img:1"}));
    // Rendered even while nothing may run yet, and before the Deployment.
    let d = desired(&f, None, &Capabilities::none());
    assert!(d.get(ChildKind::NetworkPolicy, "fk").is_some());
    let d = desired(&f, Some("img:1"), &Capabilities::none());
    let order: Vec<ChildKind> = d.objects.iter().map(|o| o.kind).collect();
    let pos = |k| order.iter().position(|x| *x == k).unwrap();
    assert!(pos(ChildKind::NetworkPolicy) < pos(ChildKind::Deployment));
    let np = &d.get(ChildKind::NetworkPolicy, "fk").unwrap().body;
    assert_eq!(
        np["spec"],
        json!({
            "podSelector": {"matchLabels": {"app.kubernetes.io/component": "runtime",
                "app.kubernetes.io/instance": "fk", "app.kubernetes.io/name": "facekey"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {}}], "ports": [{"port": 8080, "protocol": "TCP"}]},
                {"from": [{"namespaceSelector": {"matchLabels":
                    {"kubernetes.io/metadata.name": "monitoring"}}}],
                 "ports": [{"port": 9090, "protocol": "TCP"}]},
            ],
        })
    );
    // Given peers replace the defaults, each as written.
    let f = fkd(json!({"image": "img:1", "networkPolicy": {
        "apiFrom": [{"namespaceSelector": {"matchLabels": {"team": "doors"}},
                     "podSelector": {"matchLabels": {"app": "door"}}}],
        "metricsFrom": [{"podSelector": {"matchLabels": {"app": "prometheus"}}}]}}));
    let d = desired(&f, Some("img:1"), &Capabilities::none());
    let ingress = &d.get(ChildKind::NetworkPolicy, "fk").unwrap().body["spec"]["ingress"];
    assert_eq!(
        ingress[0]["from"],
        json!([{"namespaceSelector": {"matchLabels": {"team": "doors"}},
                "podSelector": {"matchLabels": {"app": "door"}}}])
    );
    assert_eq!(
        ingress[1]["from"],
        json!([{"podSelector": {"matchLabels": {"app": "prometheus"}}}])
    );
    // Disabled: no policy; an empty peer is refused (it would admit everyone).
    let f = fkd(json!({"image": "img:1", "networkPolicy": {"enabled": false}}));
    assert!(
        desired(&f, Some("img:1"), &Capabilities::none())
            .get(ChildKind::NetworkPolicy, "fk")
            .is_none()
    );
    let f = fkd(json!({"image": "img:1", "networkPolicy": {"apiFrom": [{}]}}));
    let err = desired::compute(&DesiredInputs {
        fkd: &f,
        runtime_image: Some("img:1"),
        capabilities: &Capabilities::none(),
        mounted_config: None,
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("networkPolicy.apiFrom[0]"),
        "{err}"
    );
}
