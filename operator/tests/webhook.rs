//! The sidecar injection webhook's admission answers for AdmissionReview fixtures (inject,
//! already injected, unknown resource, opt-out, resource not ready with Fail and with Ignore, port
//! clash, an UPDATE), the JSON patch applied to the fixtures' real pod specs and validated with
//! `kubernetes-validate --strict`, the manifest's MutatingWebhookConfiguration against the code,
//! and the certificate upkeep against an in-memory API server.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::rbac;
use facekey_operator::desired::{
    INJECTION_DISABLED, INJECTION_LABEL, SIDECAR_CONTAINER, SIDECAR_IMAGE_ANNOTATION,
    SIDECAR_LABEL, WebhookTarget, mutating_webhook_configuration,
};
use facekey_operator::render::parse_resources;
use facekey_operator::webhook::certs::{self, CertSettings, keys};
use facekey_operator::webhook::manage::{self, CertMode, CertTargets};
use facekey_operator::webhook::review::review_with;
use facekey_operator::webhook::server::MUTATE_PATH;
use facekey_operator::webhook::{Decision, InjectOptions, NotInjectedReason};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use serde::Deserialize;
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhook")
}

const ADMITTED: &str = "ghcr.io/facekey/runtime@sha256:4b825dc642cb6eb9a060e54bf8d69288fbee4904c8d1a9b2f07d3d5c2e4f6a1b";

struct Outcome {
    response: Value,
    decision: Option<Decision>,
    request_pod: Value,
}

fn run(case: &str) -> Outcome {
    run_changed(case, |_| {})
}

/// [`run`] with the review's pod changed by `change` first.
fn run_changed(case: &str, change: impl FnOnce(&mut Value)) -> Outcome {
    let mut review: Value = serde_json::from_slice(
        &std::fs::read(fixtures().join(format!("reviews/{case}.json"))).unwrap(),
    )
    .unwrap();
    change(&mut review["request"]["object"]);
    let body = serde_json::to_vec(&review).unwrap();
    let resources = std::fs::read_to_string(fixtures().join("resources.yaml")).unwrap();
    let fkds = parse_resources(&resources).unwrap().resources;
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
    let request: Value = serde_json::from_slice(&body).unwrap();
    Outcome {
        response: review["response"].clone(),
        decision,
        request_pod: request["request"]["object"].clone(),
    }
}

/// The pod after the response's patch (base64 JSON patch, as the API server applies it).
fn patched(o: &Outcome) -> Value {
    let b64 = o.response["patch"].as_str().expect("a patch");
    let bytes = base64_decode(b64);
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut pod = o.request_pod.clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    pod
}

impl Outcome {
    /// The injected sidecar's cpu (cores) and memory (MiB) requests, from the patched pod.
    fn patched_sidecar_requests(&self) -> Option<(f64, f64)> {
        let pod = patched(self);
        let sidecar = pod["spec"]["initContainers"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == SIDECAR_CONTAINER)?
            .clone();
        let requests = &sidecar["resources"]["requests"];
        // The forms the operator writes: `500m` or whole cores, `Mi` or `Gi`.
        let cpu = requests["cpu"].as_str()?;
        let cpu = match cpu.strip_suffix('m') {
            Some(milli) => milli.parse::<f64>().ok()? / 1000.0,
            None => cpu.parse().ok()?,
        };
        let memory = requests["memory"].as_str()?;
        let memory = match memory.strip_suffix("Gi") {
            Some(gi) => gi.parse::<f64>().ok()? * 1024.0,
            None => memory.strip_suffix("Mi")?.parse().ok()?,
        };
        Some((cpu, memory))
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    // The response's `patch` is a byte string: Kubernetes' base64 (standard alphabet, padded).
    k8s_openapi::ByteString::deserialize(Value::String(s.to_owned()))
        .unwrap()
        .0
}

fn uid(o: &Outcome, case: &str) {
    let body: Value = serde_json::from_slice(
        &std::fs::read(fixtures().join(format!("reviews/{case}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        o.response["uid"], body["request"]["uid"],
        "{case}: uid echoed"
    );
}

#[test]
fn inject_adds_the_native_sidecar_first_with_the_admitted_digest() {
    let o = run("inject");
    uid(&o, "inject");
    assert_eq!(o.response["allowed"], true);
    assert_eq!(o.response["patchType"], "JSONPatch");
    let pod: Pod = serde_json::from_value(patched(&o)).unwrap();
    let spec = pod.spec.as_ref().unwrap();
    let init = spec.init_containers.as_ref().unwrap();
    // The sidecar first, the application's own init container after it.
    assert_eq!(init.len(), 2);
    let sidecar = &init[0];
    assert_eq!(sidecar.name, SIDECAR_CONTAINER);
    assert_eq!(init[1].name, "migrate");
    assert_eq!(sidecar.image.as_deref(), Some(ADMITTED));
    assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    let env: std::collections::BTreeMap<_, _> = sidecar
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(env["FACEKEY_LISTEN"], "127.0.0.1:7070");
    assert_eq!(env["FACEKEY_METRICS_LISTEN"], "[::]:7071");
    assert_eq!(env["FACEKEY_UI_ENABLED"], "false");
    assert_eq!(env["FACEKEY_THRESHOLD"], "0.8");
    assert_eq!(
        env["FACEKEY_DATABASE_URL_FILE"],
        "/etc/facekey/database/url"
    );
    // The store and key Secrets of the resource, mounted.
    let secrets: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.secret.as_ref()?.secret_name.as_deref())
        .collect();
    assert_eq!(
        secrets,
        ["verifier-db", "verifier-template-key", "verifier-api-keys"]
    );
    // The application's own volume is still there, first.
    assert_eq!(spec.volumes.as_ref().unwrap()[0].name, "kube-api-access-x1");
    assert_eq!(spec.image_pull_secrets.as_ref().unwrap()[0].name, "ghcr");
    let meta = &pod.metadata;
    assert_eq!(meta.labels.as_ref().unwrap()[SIDECAR_LABEL], "verifier");
    assert_eq!(meta.labels.as_ref().unwrap()["app"], "login");
    assert_eq!(
        meta.annotations.as_ref().unwrap()[SIDECAR_IMAGE_ANNOTATION],
        ADMITTED
    );
    let startup = sidecar.startup_probe.as_ref().unwrap();
    assert_eq!(
        startup.http_get.as_ref().unwrap().path.as_deref(),
        Some("/readyz")
    );
}

#[test]
fn a_bare_pod_gets_the_arrays_and_maps_it_lacked() {
    let o = run("inject-bare");
    let pod: Pod = serde_json::from_value(patched(&o)).unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(spec.init_containers.unwrap()[0].name, SIDECAR_CONTAINER);
    assert!(
        spec.volumes
            .unwrap()
            .iter()
            .all(|v| v.name.starts_with("facekey-"))
    );
    assert_eq!(pod.metadata.labels.unwrap()[SIDECAR_LABEL], "verifier");
}

#[test]
fn unchanged_answers_carry_no_patch() {
    for case in ["already-injected", "opt-out", "update"] {
        let o = run(case);
        uid(&o, case);
        assert_eq!(o.response["allowed"], true, "{case}");
        assert!(o.response.get("patch").is_none(), "{case}: {}", o.response);
        assert!(o.response.get("warnings").is_none(), "{case}");
    }
    assert_eq!(
        run("already-injected").decision,
        Some(Decision::AlreadyInjected)
    );
    assert_eq!(run("opt-out").decision, Some(Decision::OptedOut));
}

#[test]
fn refusals_and_warnings_say_why() {
    // Unknown resource: refused by the operator's default, naming the resource.
    let o = run("unknown-resource");
    assert_eq!(o.response["allowed"], false);
    assert_eq!(o.response["status"]["code"], 403);
    let msg = o.response["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("shop/verfier") && msg.contains("does not exist"),
        "{msg}"
    );
    // Not ready with failurePolicy Fail: refused, saying an unscanned image is never injected.
    let o = run("not-ready-refused");
    assert_eq!(o.response["allowed"], false);
    let msg = o.response["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("no admitted image") && msg.contains("unscanned"),
        "{msg}"
    );
    // Not ready with Ignore: admitted unchanged, with a warning.
    let o = run("not-ready-ignored");
    assert_eq!(o.response["allowed"], true);
    assert!(o.response.get("patch").is_none());
    let warning = o.response["warnings"][0].as_str().unwrap();
    assert!(
        warning.starts_with("FaceKey sidecar not injected:"),
        "{warning}"
    );
    // The application already listens on the sidecar's metrics port.
    let o = run("port-conflict");
    assert!(matches!(
        o.decision,
        Some(Decision::NotInjected {
            reason: NotInjectedReason::PortConflict,
            refuse: false,
            ..
        })
    ));
}

/// Pods the patched form of which the API server would refuse whatever `failurePolicy` says are
/// not injected, with the reason: a Windows pod (the sidecar's security context is forbidden
/// there), and pod-level requests the sidecar's would exceed. Pod-level requests with room for
/// it are injected.
#[test]
fn pods_the_patch_would_make_invalid_are_not_injected() {
    let reason = |o: &Outcome| match &o.decision {
        Some(Decision::NotInjected { reason, .. }) => Some(*reason),
        _ => None,
    };
    let windows = run_changed("inject", |pod| {
        pod["spec"]["os"] = json!({"name": "windows"})
    });
    assert_eq!(reason(&windows), Some(NotInjectedReason::WindowsPod));
    let with_pod_requests = |cpu: &str, memory: &str| {
        let (cpu, memory) = (cpu.to_owned(), memory.to_owned());
        run_changed("inject", move |pod| {
            pod["spec"]["resources"] = json!({"requests": {"cpu": cpu, "memory": memory}});
        })
    };
    // Pod-level requests as small as the application's own (none in the fixture): no room for
    // the sidecar's.
    let app = run("inject").request_pod["spec"]["containers"][0]["resources"]["requests"].clone();
    let full = with_pod_requests(
        app["cpu"].as_str().unwrap_or("0"),
        app["memory"].as_str().unwrap_or("0"),
    );
    assert_eq!(reason(&full), Some(NotInjectedReason::PodLevelResources));
    let warning = full.response["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("spec.resources requests cpu"),
        "{}",
        full.response
    );
    let roomy = with_pod_requests("64", "256Gi");
    assert!(
        matches!(roomy.decision, Some(Decision::Inject { .. })),
        "{:?}",
        roomy.decision
    );
    // Requests aggregated as the API server does. The pod-level requests fit the application,
    // another native sidecar (a mesh's) and our sidecar's cpu but not our memory once that
    // sidecar counts: refused, where summing the regular containers alone let it through.
    let sidecar = run("inject")
        .patched_sidecar_requests()
        .expect("the injected sidecar requests resources");
    let with_mesh = |pod_cpu: f64, pod_memory_mi: f64| {
        run_changed("inject", move |pod| {
            pod["spec"]["containers"][0]["resources"] =
                json!({"requests": {"cpu": "1", "memory": "1Gi"}});
            pod["spec"]["initContainers"] = json!([{"name": "mesh-proxy", "image": "proxy:1",
                "restartPolicy": "Always", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]);
            pod["spec"]["resources"] = json!({"requests": {
                "cpu": format!("{pod_cpu}"), "memory": format!("{pod_memory_mi}Mi")}});
        })
    };
    let (cpu, memory_mi) = sidecar;
    let short = with_mesh(2.0 + cpu, 2048.0 + memory_mi - 1.0);
    assert_eq!(reason(&short), Some(NotInjectedReason::PodLevelResources));
    assert!(matches!(
        with_mesh(2.0 + cpu, 2048.0 + memory_mi).decision,
        Some(Decision::Inject { .. })
    ));
    // An ordinary init container runs beside the sidecar started before it.
    let heavy_init = |pod_cpu: f64| {
        run_changed("inject", move |pod| {
            pod["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "100m"}});
            pod["spec"]["initContainers"] = json!([{"name": "migrate", "image": "m:1",
                "resources": {"requests": {"cpu": "4"}}}]);
            pod["spec"]["resources"] = json!({"requests": {"cpu": format!("{pod_cpu}")}});
        })
    };
    assert_eq!(
        reason(&heavy_init(4.0)),
        Some(NotInjectedReason::PodLevelResources)
    );
    assert!(matches!(
        heavy_init(4.0 + cpu).decision,
        Some(Decision::Inject { .. })
    ));
}

#[test]
fn garbage_is_answered_as_invalid_not_a_panic() {
    let (review, decision) = review_with(b"{not json", |_, _| None, InjectOptions::default());
    assert_eq!(review["response"]["allowed"], false);
    assert!(decision.is_none());
}

/// The patched pods of every injecting fixture, strictly valid Pods for Kubernetes 1.35 (the
/// test venv's kubernetes-validate, installed by tests/setup.sh).
#[test]
fn patched_pods_pass_kubernetes_validate_strict() {
    let venv = std::env::var("VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-tests"));
    let tool = venv.join("bin/kubernetes-validate");
    if !tool.exists() {
        eprintln!(
            "NOTE: {} missing (tests/setup.sh installs it); tests/operator/check.sh validates render --inject output instead",
            tool.display()
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("facekey-webhook-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut docs = String::new();
    for case in ["inject", "inject-bare"] {
        docs.push_str("---\n");
        let mut pod = patched(&run(case));
        // Pods of a ReplicaSet reach admission with `generateName` only; the API server names
        // them before storing, which the validator needs.
        if pod["metadata"]["name"].is_null() {
            pod["metadata"]["name"] = Value::String("login-7d9f8c6b5-x2x9q".into());
        }
        // JSON, which is YAML too, as the API server receives it: a YAML 1.2 emitter leaves `off`
        // unquoted, which the validator's YAML 1.1 reads as a boolean.
        docs.push_str(&serde_json::to_string_pretty(&pod).unwrap());
        docs.push('\n');
    }
    let file = dir.join("patched.yaml");
    std::fs::write(&file, &docs).unwrap();
    let out = std::process::Command::new(&tool)
        .args(["--strict", "-k", "1.35.0"])
        .arg(&file)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    std::fs::remove_dir_all(&dir).ok();
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("ERROR"), "{text}");
    assert_eq!(text.matches(" passed for resource ").count(), 2, "{text}");
}

fn manifest_mwc() -> MutatingWebhookConfiguration {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/webhook.yaml"),
    )
    .unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .find(|v| v["kind"] == "MutatingWebhookConfiguration")
        .map(|v| serde_json::from_value(v).unwrap())
        .unwrap()
}

#[test]
fn the_manifest_is_the_code() {
    let code = mutating_webhook_configuration(&WebhookTarget {
        config_name: "facekey-sidecar-injector",
        namespace: "facekey-system",
        service: "facekey-webhook",
        path: MUTATE_PATH,
    });
    let manifest = manifest_mwc();
    assert_eq!(manifest, code);
    let hook = &manifest.webhooks.as_ref().unwrap()[0];
    // An outage never blocks a pod; only opted-in pods outside the system namespaces are sent.
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
    assert!(hook.timeout_seconds.unwrap() <= 5);
    let selector = hook.namespace_selector.as_ref().unwrap();
    let expressions = selector.match_expressions.as_ref().unwrap();
    let excluded = expressions[0].values.clone().unwrap();
    assert!(excluded.contains(&"kube-system".to_owned()));
    // The install's namespace by its label, which manifests/namespace.yaml sets.
    let by_label = &expressions[1];
    assert_eq!(
        (by_label.key.as_str(), by_label.operator.as_str()),
        (INJECTION_LABEL, "NotIn")
    );
    assert_eq!(by_label.values, Some(vec![INJECTION_DISABLED.to_owned()]));
    let namespace: Value = serde_yaml::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/namespace.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        namespace["metadata"]["labels"][INJECTION_LABEL], INJECTION_DISABLED,
        "{namespace}"
    );
    assert!(
        hook.match_conditions.as_ref().unwrap()[0]
            .expression
            .contains("'facekey.dev/inject' in object.metadata.annotations")
    );
}

/// The optional NetworkPolicy (`manifests/components/webhook-network-policy`) fits the operator's
/// Deployment: it selects the operator's pods, admits the webhook's port only from its ipBlock
/// (the API server's addresses) and leaves the HTTP port (metrics, probes) open as without it.
#[test]
fn the_example_network_policy_fits_the_operator_deployment() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
    let first = |file: &str, kind: &str| -> Value {
        let text = std::fs::read_to_string(manifests.join(file)).unwrap();
        serde_yaml::Deserializer::from_str(&text)
            .map(|d| Value::deserialize(d).unwrap())
            .find(|v| v["kind"] == kind)
            .unwrap()
    };
    let policy: NetworkPolicy = serde_json::from_value(first(
        "components/webhook-network-policy/networkpolicy.yaml",
        "NetworkPolicy",
    ))
    .unwrap();
    let deployment: Deployment =
        serde_json::from_value(first("operator.yaml", "Deployment")).unwrap();
    let template = deployment.spec.unwrap().template;
    let labels = template.metadata.unwrap().labels.unwrap();
    let spec = policy.spec.unwrap();
    let selected = spec.pod_selector.unwrap().match_labels.unwrap();
    assert!(!selected.is_empty());
    assert!(selected.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let ports: std::collections::BTreeMap<String, i32> = template.spec.unwrap().containers[0]
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert_eq!(ports.get("webhook"), Some(&9443));
    let rules = spec.ingress.unwrap();
    let port_of = |rule: &k8s_openapi::api::networking::v1::NetworkPolicyIngressRule| match rule
        .ports
        .as_ref()
        .unwrap()[0]
        .port
        .clone()
        .unwrap()
    {
        IntOrString::String(name) => name,
        IntOrString::Int(n) => n.to_string(),
    };
    for rule in &rules {
        assert!(ports.contains_key(&port_of(rule)), "{rule:?}");
    }
    let webhook = rules.iter().find(|r| port_of(r) == "webhook").unwrap();
    let peers = webhook.from.as_ref().unwrap();
    assert!(!peers.is_empty());
    assert!(peers.iter().all(|p| p.ip_block.is_some()
        && p.pod_selector.is_none()
        && p.namespace_selector.is_none()));
    let http = rules.iter().find(|r| port_of(r) == "http").unwrap();
    assert!(
        http.from.is_none(),
        "the HTTP port stays open to every peer"
    );
}

fn targets() -> CertTargets {
    CertTargets {
        namespace: "facekey-system".into(),
        secret: "facekey-webhook-tls".into(),
        webhook_config: "facekey-sidecar-injector".into(),
        settings: CertSettings::new("facekey-webhook", "facekey-system"),
        mode: CertMode::SelfSigned,
    }
}

#[tokio::test]
async fn ensure_creates_publishes_keeps_and_rotates() {
    let client = kube_fake_client::ClientBuilder::new()
        .with_object(manifest_mwc())
        .build()
        .await
        .unwrap();
    // The operator's own client: only what manifests/rbac.yaml grants.
    let operator = rbac::enforcing(client.clone());
    let t0: Timestamp = "2026-01-10T00:00:00Z".parse().unwrap();
    let first = manage::ensure(&operator, &targets(), t0).await.unwrap();
    assert!(first.rotated);
    let secret = Api::<Secret>::namespaced(client.clone(), "facekey-system")
        .get("facekey-webhook-tls")
        .await
        .unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = secret.data.unwrap();
    assert_eq!(
        String::from_utf8(data[keys::TLS_CRT].0.clone()).unwrap(),
        first.cert
    );
    let mwc = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get("facekey-sidecar-injector")
        .await
        .unwrap();
    let published = mwc.webhooks.unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .unwrap();
    assert_eq!(String::from_utf8(published.0).unwrap(), first.ca_bundle);
    // A day later: nothing to do, the same certificate.
    let later = t0.checked_add(SignedDuration::from_hours(24)).unwrap();
    let same = manage::ensure(&operator, &targets(), later).await.unwrap();
    assert!(!same.rotated);
    assert_eq!(same.cert, first.cert);
    // 61 days on (under a third of 90 days left): a new serving certificate, the same CA.
    let renew = t0.checked_add(SignedDuration::from_hours(61 * 24)).unwrap();
    let renewed = manage::ensure(&operator, &targets(), renew).await.unwrap();
    assert!(renewed.rotated);
    assert_ne!(renewed.cert, first.cert);
    assert_eq!(renewed.ca_bundle, first.ca_bundle);
    assert_eq!(
        certs::plan(
            manage::bundle_of(
                &Api::<Secret>::namespaced(client.clone(), "facekey-system")
                    .get("facekey-webhook-tls")
                    .await
                    .unwrap()
            )
            .as_ref(),
            &targets().settings,
            renew
        ),
        certs::Plan::Keep
    );
}

/// A configuration whose `caBundle` was lost (re-created from Git, replaced by a sync) gets it
/// back at the next check of the certificate upkeep, without a rotation.
#[tokio::test]
async fn a_lost_ca_bundle_is_put_back_at_the_next_check() {
    let client = kube_fake_client::ClientBuilder::new()
        .with_object(manifest_mwc())
        .build()
        .await
        .unwrap();
    let operator = rbac::enforcing(client.clone());
    let cert = Arc::new(facekey_operator::webhook::server::ReloadingCert::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let upkeep = manage::keep_certificates(
        operator,
        targets(),
        cert,
        std::time::Duration::from_millis(100),
        facekey_operator::metrics::Metrics::new().unwrap(),
        async move {
            let _ = stop_rx.await;
        },
    )
    .await
    .unwrap();
    let mwcs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let bundle = |m: &MutatingWebhookConfiguration| {
        m.webhooks.as_ref().unwrap()[0]
            .client_config
            .ca_bundle
            .clone()
    };
    let published = bundle(&mwcs.get("facekey-sidecar-injector").await.unwrap());
    assert!(published.is_some(), "published at start");
    // The configuration as Git has it: no caBundle.
    mwcs.replace(
        "facekey-sidecar-injector",
        &kube::api::PostParams::default(),
        &{
            let mut m = mwcs.get("facekey-sidecar-injector").await.unwrap();
            m.webhooks.as_mut().unwrap()[0].client_config.ca_bundle = None;
            m
        },
    )
    .await
    .unwrap();
    let mut restored = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if bundle(&mwcs.get("facekey-sidecar-injector").await.unwrap()) == published {
            restored = true;
            break;
        }
    }
    assert!(restored, "the same caBundle is back");
    stop_tx.send(()).unwrap();
    upkeep.await.unwrap();
}

/// A CA rotation against the API server: the new CA is published while the old one still signs,
/// and signs only once the grace has passed with it in the published `caBundle`; a configuration
/// that lost the staged CA meanwhile (replaced from Git) gets it staged and published again, the
/// grace counted anew, never a certificate it cannot verify.
#[tokio::test]
async fn a_new_ca_is_published_before_it_signs() {
    let client = kube_fake_client::ClientBuilder::new()
        .with_object(manifest_mwc())
        .build()
        .await
        .unwrap();
    let operator = rbac::enforcing(client.clone());
    let mwcs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let published = || async {
        let m = mwcs.get("facekey-sidecar-injector").await.unwrap();
        String::from_utf8(
            m.webhooks.unwrap()[0]
                .client_config
                .ca_bundle
                .clone()
                .unwrap()
                .0,
        )
        .unwrap()
    };
    let secret = || async {
        manage::bundle_of(
            &Api::<Secret>::namespaced(client.clone(), "facekey-system")
                .get("facekey-webhook-tls")
                .await
                .unwrap(),
        )
        .unwrap()
    };
    let at = |t: Timestamp, secs: i64| t.checked_add(SignedDuration::from_secs(secs)).unwrap();
    let t0: Timestamp = "2026-01-10T00:00:00Z".parse().unwrap();
    let first = manage::ensure(&operator, &targets(), t0).await.unwrap();
    // Three years and five months on, a third of the CA's five years is left.
    let t1 = at(t0, 41 * 30 * 24 * 3600);
    let staged = manage::ensure(&operator, &targets(), t1).await.unwrap();
    assert_eq!(staged.plan, certs::Plan::StageCa);
    assert_eq!(
        staged.cert, first.cert,
        "the old CA's certificate is served"
    );
    let next = secret().await.next_ca.unwrap();
    assert_eq!(published().await, staged.ca_bundle);
    assert!(staged.ca_bundle.contains(&next.cert));
    // The serving certificate, long due, is renewed by the current CA meanwhile.
    let renewed = manage::ensure(&operator, &targets(), at(t1, 1))
        .await
        .unwrap();
    assert_eq!(renewed.plan, certs::Plan::RenewServing);
    assert_eq!(secret().await.ca_cert, first.ca_bundle);

    // Nine minutes on, the configuration is replaced from Git with the bundle of before: the
    // next check (half a minute later) finds the staged CA untrusted and stages it again, so
    // its grace counts from that publication, not from the first staging.
    let replace_from_git = || async {
        mwcs.replace(
            "facekey-sidecar-injector",
            &kube::api::PostParams::default(),
            &{
                let mut m = mwcs.get("facekey-sidecar-injector").await.unwrap();
                m.webhooks.as_mut().unwrap()[0].client_config.ca_bundle = Some(
                    k8s_openapi::ByteString(first.ca_bundle.clone().into_bytes()),
                );
                m
            },
        )
        .await
        .unwrap();
    };
    replace_from_git().await;
    let t2 = at(t1, 9 * 60 + 30);
    let again = manage::ensure(&operator, &targets(), t2).await.unwrap();
    assert_eq!(again.plan, certs::Plan::StageCa);
    assert_eq!(again.cert, renewed.cert);
    let restaged = secret().await.next_ca.unwrap();
    assert_eq!(restaged.cert, next.cert, "the same CA, staged again");
    assert_eq!(restaged.staged_at, t2);
    assert!(published().await.contains(&next.cert));
    // Ten minutes after the first staging, but 30 s after the publication: nothing signs.
    let kept = manage::ensure(&operator, &targets(), at(t1, 10 * 60))
        .await
        .unwrap();
    assert!(!kept.rotated, "{:?}", kept.plan);
    // At the grace's end a replaced configuration is caught again rather than rotated over.
    replace_from_git().await;
    let t3 = at(t2, 10 * 60);
    let caught = manage::ensure(&operator, &targets(), t3).await.unwrap();
    assert_eq!(caught.plan, certs::Plan::StageCa);
    // Published and untouched for the grace: the staged CA signs.
    let rotated = manage::ensure(&operator, &targets(), at(t3, 10 * 60))
        .await
        .unwrap();
    assert_eq!(rotated.plan, certs::Plan::RotateCa);
    let now = secret().await;
    assert_eq!(now.ca_cert, next.cert);
    assert_eq!(now.next_ca, None);
    assert_eq!(published().await, rotated.ca_bundle);
    assert!(rotated.ca_bundle.starts_with(&next.cert));
    assert!(rotated.ca_bundle.contains(&first.ca_bundle));
}

/// Golden YAML of `render --inject` for the Deployment fixture (`UPDATE_GOLDEN=1` rewrites it;
/// review the diff): every field of the injected sidecar is pinned.
#[test]
fn render_inject_golden() {
    let input = std::fs::read_to_string(fixtures().join("deployment.yaml")).unwrap();
    let resources = std::fs::read_to_string(fixtures().join("resources.yaml")).unwrap();
    let out = facekey_operator::render::render_inject(&input, &resources, InjectOptions::default())
        .unwrap();
    assert!(out.refused.is_empty(), "{:?}", out.refused);
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/sidecar-injected-deployment.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &out.yaml).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&golden)
        .unwrap_or_else(|_| panic!("{} missing; run with UPDATE_GOLDEN=1", golden.display()));
    assert!(
        out.yaml == expected,
        "render --inject differs from {}; run with UPDATE_GOLDEN=1 and review",
        golden.display()
    );
}

#[test]
fn events_name_the_pod_owner_and_what_happened() {
    use facekey_operator::webhook::{events, review};
    let body = std::fs::read(fixtures().join("reviews/unknown-resource.json")).unwrap();
    let req = review::parse(&body).unwrap();
    assert_eq!(req.resource.as_deref(), Some("verfier"));
    let decision = review::decide(&req, None, InjectOptions::default());
    let event = events::event_for(&req, &decision).unwrap();
    assert_eq!(event.reason, "SidecarUnknownResource");
    let note = event.note.unwrap();
    assert!(
        note.starts_with("pod of ReplicaSet/login-7d9f8c6b5 refused:"),
        "{note}"
    );
    // Injected and unchanged pods get no Event.
    let ok = run("inject");
    let body = std::fs::read(fixtures().join("reviews/inject.json")).unwrap();
    let req = review::parse(&body).unwrap();
    assert!(events::event_for(&req, ok.decision.as_ref().unwrap()).is_none());
}

/// The fixture's first resource (`shop/verifier`, with a uid) and the sidecar settings hash its
/// pods admitted now carry.
fn counted_resource() -> (facekey_crds::FaceKeyDeployment, String) {
    let resources = std::fs::read_to_string(fixtures().join("resources.yaml")).unwrap();
    let mut fkd = parse_resources(&resources).unwrap().resources.remove(0);
    fkd.metadata.uid = Some("6f1c2d3e-0000-4000-8000-000000000001".into());
    let current = facekey_operator::desired::sidecar_parts(
        "verifier",
        "shop",
        &fkd.spec,
        fkd.spec.sidecar.as_ref().unwrap(),
        ADMITTED,
    )
    .config_hash();
    (fkd, current)
}

/// The Event recorder the sidecar counter publishes with.
fn recorder(client: &kube::Client) -> kube::runtime::events::Recorder {
    kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "facekey-operator".into(),
            instance: None,
        },
    )
}

#[tokio::test]
async fn the_counter_writes_injected_and_outdated_pods() {
    use facekey_crds::FaceKeyDeployment;
    use facekey_operator::webhook::sidecars;
    // The settings pods admitted now carry (what the webhook writes in its patch).
    let (fkd, current) = counted_resource();
    let configured = |name: &str, image: &str, config: &str| -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": name, "namespace": "shop", "labels": {SIDECAR_LABEL: "verifier"},
                "annotations": {"facekey.dev/sidecar-config": config},
            },
            "spec": {
                "initContainers": [{"name": SIDECAR_CONTAINER, "image": image, "restartPolicy": "Always"}],
                "containers": [{"name": "app", "image": "app:1"}],
            },
            "status": {"phase": "Running"},
        }))
        .unwrap()
    };
    let pod = |name: &str, image: &str| configured(name, image, &current);
    // A second resource of the namespace offering its own sidecar, with one pod of its own.
    let mut other = fkd.clone();
    other.metadata.name = Some("verifier-2".into());
    other.metadata.uid = Some("6f1c2d3e-0000-4000-8000-000000000002".into());
    let mut others_pod = pod("f", ADMITTED);
    others_pod
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(SIDECAR_LABEL.into(), "verifier-2".into());
    let client = kube_fake_client::ClientBuilder::new()
        .with_resource::<FaceKeyDeployment>()
        .with_status_subresource::<FaceKeyDeployment>()
        .with_object(fkd)
        .with_object(other)
        .with_object(others_pod)
        .with_object(pod("a", ADMITTED))
        .with_object(pod("b", "ghcr.io/facekey/runtime@sha256:older"))
        .with_object(pod("c", "ghcr.io/facekey/runtime@sha256:older"))
        // The admitted image, but settings changed since (e.g. a tightened lockout).
        .with_object(configured("d", ADMITTED, "0123456789abcdef"))
        // Asked for the sidecar, admitted without it (no webhook answered).
        .with_object(
            serde_json::from_value::<Pod>(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "e", "namespace": "shop",
                             "annotations": {"facekey.dev/inject": "verifier"}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]},
                "status": {"phase": "Running"},
            }))
            .unwrap(),
        )
        .build()
        .await
        .unwrap();
    let recorder = recorder(&client);
    let calls = common::replay::CallLog::default();
    let counting = common::replay::counting(rbac::enforcing(client.clone()), calls.clone());
    sidecars::count_all(&counting, &recorder, Some("shop")).await;
    // The namespace's pods are listed once for both resources.
    let lists = calls
        .take()
        .into_iter()
        .filter(|c| c == "LIST pods")
        .count();
    assert_eq!(lists, 1);
    let others = Api::<FaceKeyDeployment>::namespaced(client.clone(), "shop")
        .get("verifier-2")
        .await
        .unwrap();
    let others = others.status.and_then(|s| s.sidecar).expect("counted too");
    assert_eq!((others.injected_pods, others.missing_pods), (1, 0));
    let fkd = Api::<FaceKeyDeployment>::namespaced(client.clone(), "shop")
        .get("verifier")
        .await
        .unwrap();
    let status = fkd.status.unwrap();
    let sidecar = status.sidecar.expect("status.sidecar written");
    assert_eq!((sidecar.injected_pods, sidecar.outdated_pods), (4, 3));
    assert_eq!(sidecar.missing_pods, 1);
    assert_eq!(sidecar.image.as_deref(), Some(ADMITTED));
    assert_eq!(sidecar.config.as_deref(), Some(current.as_str()));
    // The rest of the status is untouched.
    assert_eq!(status.last_known_good_image.as_deref(), Some(ADMITTED));
}

/// Once the sidecar is turned off and the last pod that ran it is gone, the counter removes its
/// report (the status is applied without it, as a real API server then drops the field), so the
/// resource is not counted again every round; while a pod still runs it, the report stays.
#[tokio::test]
async fn the_counter_drops_its_report_once_the_sidecar_is_off_and_gone() {
    use facekey_crds::FaceKeyDeployment;
    use facekey_operator::webhook::sidecars;
    let (fkd, current) = counted_resource();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "a", "namespace": "shop", "labels": {SIDECAR_LABEL: "verifier"},
            "annotations": {"facekey.dev/sidecar-config": current},
        },
        "spec": {
            "initContainers": [{"name": SIDECAR_CONTAINER, "image": ADMITTED, "restartPolicy": "Always"}],
            "containers": [{"name": "app", "image": "app:1"}],
        },
        "status": {"phase": "Running"},
    }))
    .unwrap();
    let client = kube_fake_client::ClientBuilder::new()
        .with_resource::<FaceKeyDeployment>()
        .with_status_subresource::<FaceKeyDeployment>()
        .with_object(fkd)
        .with_object(pod)
        .with_interceptor_funcs(
            kube_fake_client::interceptor::Funcs::new()
                .patch_status(common::status_apply_rule(Default::default())),
        )
        .build()
        .await
        .unwrap();
    let recorder = recorder(&client);
    let fkds = Api::<FaceKeyDeployment>::namespaced(client.clone(), "shop");
    let report = || async {
        fkds.get("verifier")
            .await
            .unwrap()
            .status
            .unwrap()
            .sidecar
            .map(|s| s.injected_pods)
    };
    let count = || sidecars::count_all(&client, &recorder, Some("shop"));
    count().await;
    assert_eq!(report().await, Some(1));

    fkds.patch(
        "verifier",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"spec": {"sidecar": {"enabled": false}}})),
    )
    .await
    .unwrap();
    count().await;
    assert_eq!(report().await, Some(1), "a pod still runs it");

    Api::<Pod>::namespaced(client.clone(), "shop")
        .delete("a", &Default::default())
        .await
        .unwrap();
    count().await;
    assert_eq!(report().await, None, "nothing left to report");
    let status = fkds.get("verifier").await.unwrap().status.unwrap();
    assert_eq!(
        status.last_known_good_image.as_deref(),
        Some(ADMITTED),
        "the rest of the status is untouched"
    );
}

/// With the gate on, a last-known-good image no scan passed (a tag that ran with the gate off,
/// held by its digest while its scan is pending) is injected nowhere: the counter does not name
/// it as the sidecar image either.
#[tokio::test]
async fn the_counter_names_no_image_the_webhook_would_not_inject() {
    use facekey_crds::FaceKeyDeployment;
    use facekey_operator::webhook::sidecars;
    let (mut fkd, _) = counted_resource();
    let held = "ghcr.io/facekey/runtime@sha256:9999999999999999999999999999999999999999999999999999999999999999";
    fkd.status.as_mut().unwrap().last_known_good_image = Some(held.into());
    let client = kube_fake_client::ClientBuilder::new()
        .with_resource::<FaceKeyDeployment>()
        .with_status_subresource::<FaceKeyDeployment>()
        .with_object(fkd)
        .build()
        .await
        .unwrap();
    let recorder = recorder(&client);
    sidecars::count_all(&rbac::enforcing(client.clone()), &recorder, Some("shop")).await;
    let sidecar = Api::<FaceKeyDeployment>::namespaced(client.clone(), "shop")
        .get("verifier")
        .await
        .unwrap()
        .status
        .unwrap()
        .sidecar
        .expect("status.sidecar written");
    assert_eq!((sidecar.image, sidecar.config), (None, None));
}

/// More pods than one page (500): the counter follows the `continue` token to the end, as it
/// must on a real API server; the harness pages lists as one does (the fake cut them at the
/// limit, so a counter that stopped after one page could not be told apart).
#[tokio::test]
async fn the_counter_pages_through_every_pod() {
    use facekey_crds::FaceKeyDeployment;
    use facekey_operator::webhook::sidecars;
    let (fkd, current) = counted_resource();
    let mut builder = kube_fake_client::ClientBuilder::new()
        .with_resource::<FaceKeyDeployment>()
        .with_status_subresource::<FaceKeyDeployment>()
        .with_object(fkd);
    for i in 0..501 {
        builder = builder.with_object(
            serde_json::from_value::<Pod>(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": format!("p{i:04}"), "namespace": "shop",
                    "labels": {SIDECAR_LABEL: "verifier"},
                    "annotations": {"facekey.dev/sidecar-config": current},
                },
                "spec": {
                    "initContainers": [{"name": SIDECAR_CONTAINER, "image": ADMITTED, "restartPolicy": "Always"}],
                    "containers": [{"name": "app", "image": "app:1"}],
                },
                "status": {"phase": "Running"},
            }))
            .unwrap(),
        );
    }
    // On the second page: asked for the sidecar, admitted without it.
    builder = builder.with_object(
        serde_json::from_value::<Pod>(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "zz-missing", "namespace": "shop",
                         "annotations": {"facekey.dev/inject": "verifier"}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
            "status": {"phase": "Running"},
        }))
        .unwrap(),
    );
    let client = common::watch::serving(builder.build().await.unwrap());
    let recorder = recorder(&client);
    sidecars::count_all(&rbac::enforcing(client.clone()), &recorder, Some("shop")).await;
    let sidecar = Api::<FaceKeyDeployment>::namespaced(client.clone(), "shop")
        .get("verifier")
        .await
        .unwrap()
        .status
        .unwrap()
        .sidecar
        .expect("status.sidecar written");
    assert_eq!(
        (
            sidecar.injected_pods,
            sidecar.outdated_pods,
            sidecar.missing_pods
        ),
        (501, 0, 1),
        "every page counted"
    );
}

/// Every fixture review posted to the webhook's router (the handler the HTTPS server runs): each
/// answer is counted once under its outcome and reason and timed, and the label values are the
/// documented ones.
/// A LimitRange or ResourceQuota of the pod's namespace that would refuse the pod with the
/// sidecar (and so the whole pod): the sidecar is left out, the pod admitted under
/// `failurePolicy: Ignore` with a warning naming the LimitRange or quota and the bound; one of
/// another namespace, one the sidecar fits, or one that refuses the pod without the sidecar too
/// changes nothing. (The fixture's sidecar: requests 250m and 384Mi, memory limit 768Mi.)
#[tokio::test]
async fn a_sidecar_a_limit_range_or_quota_would_refuse_is_left_out() {
    use facekey_operator::metrics::Metrics;
    use facekey_operator::webhook::server::{
        LimitRanges, ResourceQuotas, Resources, WebhookState, router,
    };

    let resources = std::fs::read_to_string(fixtures().join("resources.yaml")).unwrap();
    let range = |namespace: &str, max_memory: &str| -> k8s_openapi::api::core::v1::LimitRange {
        serde_json::from_value(json!({
            "metadata": {"name": "tenant-bounds", "namespace": namespace},
            "spec": {"limits": [{"type": "Container", "max": {"memory": max_memory},
                                 "default": {"memory": max_memory}}]},
        }))
        .unwrap()
    };
    let fixture = || std::fs::read(fixtures().join("reviews/inject.json")).unwrap();
    let answer_with = |ranges: Vec<k8s_openapi::api::core::v1::LimitRange>,
                       quotas: Vec<k8s_openapi::api::core::v1::ResourceQuota>,
                       body: Vec<u8>| {
        let metrics = Metrics::new().unwrap();
        let app = router(WebhookState {
            limit_ranges: LimitRanges::Fixed(Arc::new(ranges)),
            resource_quotas: ResourceQuotas::Fixed(Arc::new(quotas)),
            resources: Resources::fixed(parse_resources(&resources).unwrap().resources),
            options: InjectOptions::default(),
            events: None,
            metrics: metrics.clone(),
            scope: None,
        });
        async move {
            let response = post_review(&app, body).await;
            let bytes = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            let review: Value = serde_json::from_slice(&bytes).unwrap();
            let skipped = |reason: &str| {
                metrics
                    .admission_reviews
                    .with_label_values(&["skipped", reason])
                    .get()
            };
            (review, skipped("LimitRange"), skipped("ResourceQuota"))
        }
    };
    let answer = |ranges: Vec<k8s_openapi::api::core::v1::LimitRange>| {
        let pending = answer_with(ranges, Vec::new(), fixture());
        async move {
            let (review, skipped, _) = pending.await;
            (review, skipped)
        }
    };
    let (review, skipped) = answer(vec![range("shop", "512Mi")]).await;
    assert_eq!(review["response"]["allowed"], true, "{review}");
    assert!(review["response"]["patch"].is_null(), "{review}");
    let warning = review["response"]["warnings"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        warning.contains("LimitRange tenant-bounds caps memory per container at 512Mi")
            && warning.contains("768Mi"),
        "{review}"
    );
    assert_eq!(skipped, 1);
    // A bound on the whole pod: the application's containers get the namespace's default of
    // 256Mi, and the sidecar's 768Mi runs beside them: 1Gi.
    let pod_bound: k8s_openapi::api::core::v1::LimitRange = serde_json::from_value(json!({
        "metadata": {"name": "tenant-pods", "namespace": "shop"},
        "spec": {"limits": [{"type": "Pod", "max": {"memory": "512Mi"}},
                            {"type": "Container", "default": {"memory": "256Mi"}}]},
    }))
    .unwrap();
    let (review, skipped) = answer(vec![pod_bound]).await;
    assert!(review["response"]["patch"].is_null(), "{review}");
    let warning = review["response"]["warnings"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        warning.contains("LimitRange tenant-pods caps memory per pod at 512Mi")
            && warning.contains("has a limit of 1024Mi"),
        "{review}"
    );
    assert_eq!(skipped, 1);
    // Another namespace's, or a bound the sidecar fits: injected as before.
    for ranges in [
        vec![range("elsewhere", "512Mi")],
        vec![range("shop", "1Gi")],
    ] {
        let (review, skipped) = answer(ranges).await;
        assert!(review["response"]["patch"].is_string(), "{review}");
        assert_eq!(skipped, 0);
    }

    // A ResourceQuota on CPU limits: every container must set one; the application's do, the
    // fixture's sidecar does not.
    let quota = |namespace: &str, hard: Value, used: Value| {
        serde_json::from_value::<k8s_openapi::api::core::v1::ResourceQuota>(json!({
            "metadata": {"name": "team-quota", "namespace": namespace},
            "spec": {"hard": hard}, "status": {"hard": hard, "used": used},
        }))
        .unwrap()
    };
    let sized = {
        let mut review: Value = serde_json::from_slice(&fixture()).unwrap();
        let resources = json!({"requests": {"cpu": "100m", "memory": "128Mi"},
                               "limits": {"cpu": "500m", "memory": "256Mi"}});
        review["request"]["object"]["spec"]["containers"][0]["resources"] = resources.clone();
        review["request"]["object"]["spec"]["initContainers"][0]["resources"] = resources;
        serde_json::to_vec(&review).unwrap()
    };
    let limits = quota(
        "shop",
        json!({"limits.cpu": "8", "requests.cpu": "4"}),
        json!({"limits.cpu": "1", "requests.cpu": "1"}),
    );
    let (review, _, skipped) = answer_with(vec![], vec![limits.clone()], sized.clone()).await;
    assert!(review["response"]["patch"].is_null(), "{review}");
    let warning = review["response"]["warnings"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        warning.contains("ResourceQuota team-quota tracks limits.cpu, so every container must set it, and the sidecar does not"),
        "{review}"
    );
    assert_eq!(skipped, 1);
    // The application's pod without CPU limits is refused by that quota anyway: injected.
    let (review, _, skipped) = answer_with(vec![], vec![limits], fixture()).await;
    assert!(review["response"]["patch"].is_string(), "{review}");
    assert_eq!(skipped, 0);
    // Nearly used up: the sidecar's 250m of CPU requests do not fit what is left.
    let nearly = quota(
        "shop",
        json!({"requests.cpu": "4"}),
        json!({"requests.cpu": "3700m"}),
    );
    let (review, _, skipped) = answer_with(vec![], vec![nearly], sized.clone()).await;
    assert!(review["response"]["patch"].is_null(), "{review}");
    let warning = review["response"]["warnings"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        warning.contains("ResourceQuota team-quota has 300m of requests.cpu left"),
        "{review}"
    );
    assert_eq!(skipped, 1);
    // Room left, or another namespace's quota: injected.
    for quotas in [
        vec![quota(
            "shop",
            json!({"requests.cpu": "4"}),
            json!({"requests.cpu": "1"}),
        )],
        vec![quota("elsewhere", json!({"limits.cpu": "4"}), json!({}))],
    ] {
        let (review, _, skipped) = answer_with(vec![], quotas, sized.clone()).await;
        assert!(review["response"]["patch"].is_string(), "{review}");
        assert_eq!(skipped, 0);
    }
}

/// Until the LimitRange and ResourceQuota caches have their first list, neither is checked: a
/// quota judged without the LimitRange defaults that fill the sidecar could leave it out of a
/// pod the API server admits. Once both are synced the same LimitRange leaves the sidecar out.
#[tokio::test]
async fn namespace_bounds_wait_for_both_caches() {
    use facekey_operator::metrics::Metrics;
    use facekey_operator::webhook::server::{Bounds, Resources, WebhookState, router};
    use kube::runtime::{reflector, watcher};
    use std::sync::atomic::{AtomicBool, Ordering};

    let resources = std::fs::read_to_string(fixtures().join("resources.yaml")).unwrap();
    let range: k8s_openapi::api::core::v1::LimitRange = serde_json::from_value(json!({
        "metadata": {"name": "tenant-bounds", "namespace": "shop"},
        "spec": {"limits": [{"type": "Container", "max": {"memory": "512Mi"},
                             "default": {"memory": "512Mi"}}]},
    }))
    .unwrap();
    let (ranges, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Apply(range));
    let (quotas, _quota_writer) = reflector::store();
    let (ranges_synced, quotas_synced) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(false)),
    );
    let app = router(WebhookState {
        limit_ranges: Bounds::Watched(ranges, ranges_synced),
        resource_quotas: Bounds::Watched(quotas, quotas_synced.clone()),
        resources: Resources::fixed(parse_resources(&resources).unwrap().resources),
        options: InjectOptions::default(),
        events: None,
        metrics: Metrics::new().unwrap(),
        scope: None,
    });
    let answer = || async {
        let body = std::fs::read(fixtures().join("reviews/inject.json")).unwrap();
        let response = post_review(&app, body).await;
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        serde_json::from_slice::<Value>(&bytes).unwrap()
    };
    let review = answer().await;
    assert!(review["response"]["patch"].is_string(), "{review}");
    quotas_synced.store(true, Ordering::Release);
    let review = answer().await;
    assert!(review["response"]["patch"].is_null(), "{review}");
}

#[tokio::test]
async fn admission_metrics_count_every_fixture_review_by_outcome() {
    use facekey_operator::metrics::Metrics;
    use facekey_operator::webhook::server::{Resources, WebhookState, router};

    let resources = std::fs::read_to_string(fixtures().join("resources.yaml")).unwrap();
    let metrics = Metrics::new().unwrap();
    let app = router(WebhookState {
        limit_ranges: Default::default(),
        resource_quotas: Default::default(),
        resources: Resources::fixed(parse_resources(&resources).unwrap().resources),
        options: InjectOptions::default(),
        events: None,
        metrics: metrics.clone(),
        scope: None,
    });
    let cases: [(&str, &str, &str, u16); 10] = [
        ("inject", "injected", "", 200),
        ("inject-bare", "injected", "", 200),
        ("already-injected", "already_injected", "", 200),
        ("opt-out", "opted_out", "", 200),
        ("update", "not_requested", "", 200),
        ("not-ready-ignored", "skipped", "NoAdmittedImage", 200),
        ("port-conflict", "skipped", "PortConflict", 200),
        ("not-ready-refused", "refused", "NoAdmittedImage", 200),
        ("unknown-resource", "refused", "UnknownResource", 200),
        ("garbage", "error", "InvalidReview", 400),
    ];
    for (case, _, _, status) in cases {
        let body = if case == "garbage" {
            b"{not json".to_vec()
        } else {
            std::fs::read(fixtures().join(format!("reviews/{case}.json"))).unwrap()
        };
        let response = post_review(&app, body).await;
        assert_eq!(response.status().as_u16(), status, "{case}");
    }
    let count = |outcome: &str, reason: &str| {
        metrics
            .admission_reviews
            .with_label_values(&[outcome, reason])
            .get()
    };
    let mut expected = std::collections::BTreeMap::new();
    for (_, outcome, reason, _) in cases {
        *expected.entry((outcome, reason)).or_insert(0u64) += 1;
    }
    for ((outcome, reason), n) in &expected {
        assert_eq!(count(outcome, reason), *n, "{outcome}/{reason}");
    }
    // Nothing else was counted, and every review was timed.
    let text = metrics.encode().unwrap();
    let counted: u64 = text
        .lines()
        .filter(|l| l.starts_with("facekey_operator_admission_reviews_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, cases.len() as u64, "{text}");
    assert!(
        text.contains(&format!(
            "facekey_operator_admission_duration_seconds_count {}",
            cases.len()
        )),
        "{text}"
    );
}

/// The series the webhook alerts count (`FaceKeyWebhookPodsRefused` on `refused`,
/// `FaceKeyWebhookErrors` on `error`) exist at 0 before any review: `changes()` and `increase()`
/// cannot see a series born at 1, so each replica's first refusal or error would go unseen.
#[test]
fn the_alerted_admission_series_exist_at_zero_before_any_review() {
    use facekey_operator::metrics::Metrics;
    use facekey_operator::webhook::NotInjectedReason;
    let text = Metrics::new().unwrap().encode().unwrap();
    let zero = |outcome: &str, reason: &str| {
        format!(
            "facekey_operator_admission_reviews_total{{outcome=\"{outcome}\",reason=\"{reason}\"}} 0"
        )
    };
    for reason in NotInjectedReason::ALL {
        if reason == NotInjectedReason::LookupFailed {
            continue;
        }
        for outcome in ["refused", "skipped"] {
            let line = zero(outcome, reason.as_str());
            assert!(text.contains(&line), "{line} missing:\n{text}");
        }
    }
    for reason in ["InvalidReview", "AnswerFailed", "LookupFailed"] {
        let line = zero("error", reason);
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
}

/// The certificate metrics after the operator's own issue and renewal: the expiry gauges hold
/// the certificates' notAfter (the same instant the Secret's annotations record, read from the
/// X.509 instead), and each issue is counted by what changed; a check that issues nothing counts
/// nothing.
#[tokio::test]
async fn certificate_metrics_follow_issue_and_renewal() {
    use facekey_operator::metrics::Metrics;
    let client = kube_fake_client::ClientBuilder::new()
        .with_object(manifest_mwc())
        .build()
        .await
        .unwrap();
    let metrics = Metrics::new().unwrap();
    let expiry = |which: &str| {
        metrics
            .webhook_certificate_expiry
            .with_label_values(&[which])
            .get()
    };
    let rotations = |reason: &str| {
        metrics
            .webhook_certificate_rotations
            .with_label_values(&[reason])
            .get()
    };
    async fn annotated(client: &kube::Client, key: &str) -> i64 {
        let secret = Api::<Secret>::namespaced(client.clone(), "facekey-system")
            .get("facekey-webhook-tls")
            .await
            .unwrap();
        secret.metadata.annotations.unwrap()[key]
            .parse::<Timestamp>()
            .unwrap()
            .as_second()
    }

    // The operator's own client: only what manifests/rbac.yaml grants.
    let operator = rbac::enforcing(client.clone());
    let t0: Timestamp = "2026-01-10T00:00:00Z".parse().unwrap();
    let first = manage::ensure(&operator, &targets(), t0).await.unwrap();
    manage::observe(&metrics, &first);
    assert_eq!(first.plan, certs::Plan::Create);
    assert_eq!(rotations("created"), 1);
    assert_eq!(
        expiry("serving"),
        annotated(&client, certs::annotations::CERT_NOT_AFTER).await
    );
    assert_eq!(
        expiry("ca"),
        annotated(&client, certs::annotations::CA_NOT_AFTER).await
    );
    // 90 days and 5 years after t0 (give or take the issue's own clock rounding).
    assert!((expiry("serving") - (t0.as_second() + 90 * 86_400)).abs() < 120);
    assert!(expiry("ca") > t0.as_second() + 4 * 365 * 86_400);

    let later = t0.checked_add(SignedDuration::from_hours(24)).unwrap();
    let same = manage::ensure(&operator, &targets(), later).await.unwrap();
    manage::observe(&metrics, &same);
    assert_eq!(rotations("created"), 1);
    assert_eq!(rotations("serving_renewed"), 0);

    let renew = t0.checked_add(SignedDuration::from_hours(61 * 24)).unwrap();
    let renewed = manage::ensure(&operator, &targets(), renew).await.unwrap();
    let ca_before = expiry("ca");
    let serving_before = expiry("serving");
    manage::observe(&metrics, &renewed);
    assert_eq!(rotations("serving_renewed"), 1);
    assert_eq!(expiry("ca"), ca_before, "the same CA");
    assert!(expiry("serving") > serving_before + 60 * 86_400);
    assert_eq!(
        expiry("serving"),
        annotated(&client, certs::annotations::CERT_NOT_AFTER).await
    );
}

/// An operator serving one namespace (`--namespace`) admits pods of other namespaces unchanged:
/// the resource they name is not in its cache, and refusing them as unknown would block pods
/// another operator serves. Its own namespace is judged as before.
#[tokio::test]
async fn an_operator_scoped_to_one_namespace_leaves_other_namespaces_alone() {
    use facekey_operator::metrics::Metrics;
    use facekey_operator::webhook::server::{Resources, WebhookState, router};

    let resources = std::fs::read_to_string(fixtures().join("resources.yaml")).unwrap();
    let answer = |scope: &str, case: &str| {
        let app = router(WebhookState {
            limit_ranges: Default::default(),
            resource_quotas: Default::default(),
            resources: Resources::fixed(parse_resources(&resources).unwrap().resources),
            options: InjectOptions::default(),
            events: None,
            metrics: Metrics::new().unwrap(),
            scope: Some(scope.to_owned()),
        });
        let body = std::fs::read(fixtures().join(format!("reviews/{case}.json"))).unwrap();
        async move {
            let response = post_review(&app, body).await;
            let bytes = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
        }
    };
    // The fixtures' pods are in `shop`.
    let elsewhere = answer("team-b", "unknown-resource").await;
    assert_eq!(elsewhere["response"]["allowed"], true, "{elsewhere}");
    assert!(elsewhere["response"]["patch"].is_null(), "{elsewhere}");
    let untouched = answer("team-b", "inject").await;
    assert!(untouched["response"]["patch"].is_null(), "{untouched}");
    let own = answer("shop", "unknown-resource").await;
    assert_eq!(own["response"]["allowed"], false, "{own}");
    let injected = answer("shop", "inject").await;
    assert!(injected["response"]["patch"].is_string(), "{injected}");
}

/// POST an AdmissionReview `body` to the webhook's router.
async fn post_review(app: &axum::Router, body: Vec<u8>) -> axum::response::Response {
    use tower::ServiceExt;
    app.clone()
        .oneshot(
            http::Request::post(MUTATE_PATH)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap()
}

/// A FaceKeyDeployment the operator cannot decode (a value of a newer operator) neither fails
/// the lookups of the others nor the sidecar count: the readable resource's pods are injected
/// and counted, and a pod naming the unreadable one is answered `ResourceUndecodable` under that
/// resource's own `sidecar.failurePolicy` (default Ignore: admitted with a warning), not refused
/// as `LookupFailed` or `UnknownResource`. With typed reads every lookup before the cache synced
/// and every count failed; with a typed watch the cache never synced.
#[tokio::test]
async fn an_undecodable_resource_blocks_neither_lookups_nor_the_count() {
    use facekey_crds::FaceKeyDeployment;
    use facekey_operator::decode::{Decoder, UnknownFields};
    use facekey_operator::metrics::Metrics;
    use facekey_operator::webhook::server::{Resources, WebhookState, router};
    use facekey_operator::webhook::sidecars;
    use kube::api::{ApiResource, DynamicObject, PostParams};
    use kube::runtime::watcher::Event;
    use std::sync::atomic::AtomicBool;

    let resources = std::fs::read_to_string(fixtures().join("resources.yaml")).unwrap();
    let mut good = parse_resources(&resources).unwrap().resources.remove(0);
    good.metadata.uid = Some("6f1c2d3e-0000-4000-8000-000000000001".into());
    let client = kube_fake_client::ClientBuilder::new()
        .with_resource::<FaceKeyDeployment>()
        .with_status_subresource::<FaceKeyDeployment>()
        .with_object(good)
        .build()
        .await
        .unwrap();
    let raw: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "shop",
        &ApiResource::erase::<FaceKeyDeployment>(&()),
    );
    // Named as the unknown-resource review's pod asks (`verfier`).
    let bad: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "facekey.dev/v1alpha1", "kind": "FaceKeyDeployment",
        "metadata": {"name": "verfier", "namespace": "shop"},
        "spec": {"image": "ghcr.io/facekey/runtime:0.1.0", "sidecar": {"enabled": true},
                 "verification": {"decisionPolicy": "adaptive"}},
    }))
    .unwrap();
    let bad = raw.create(&PostParams::default(), &bad).await.unwrap();

    let answer = |resources: Resources, case: &str| {
        let app = router(WebhookState {
            limit_ranges: Default::default(),
            resource_quotas: Default::default(),
            resources,
            options: InjectOptions::default(),
            events: None,
            metrics: Metrics::new().unwrap(),
            scope: None,
        });
        let body = std::fs::read(fixtures().join(format!("reviews/{case}.json"))).unwrap();
        async move {
            let response = post_review(&app, body).await;
            let bytes = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
        }
    };
    // Before the cache has synced: one GET per review, decoded alone.
    let unsynced = || Resources::Watched {
        store: kube::runtime::reflector::store().0,
        decoder: Arc::new(std::sync::Mutex::new(Decoder::new(UnknownFields::Ignore))),
        synced: Arc::new(AtomicBool::new(false)),
        client: client.clone(),
    };
    let injected = answer(unsynced(), "inject").await;
    assert!(injected["response"]["patch"].is_string(), "{injected}");
    // A name no resource can have is unknown, not a path: `verifier/status` is not `verifier`.
    let mut review: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("reviews/inject.json")).unwrap())
            .unwrap();
    let annotations = &mut review["request"]["object"]["metadata"]["annotations"];
    let named = annotations["facekey.dev/inject"]
        .as_str()
        .unwrap()
        .to_owned();
    annotations["facekey.dev/inject"] = serde_json::json!(format!("{named}/status"));
    let app = router(WebhookState {
        limit_ranges: Default::default(),
        resource_quotas: Default::default(),
        resources: unsynced(),
        options: InjectOptions::default(),
        events: None,
        metrics: Metrics::new().unwrap(),
        scope: None,
    });
    let response = post_review(&app, serde_json::to_vec(&review).unwrap()).await;
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let pathlike: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(pathlike["response"]["patch"].is_null(), "{pathlike}");
    assert_eq!(pathlike["response"]["allowed"], false, "{pathlike}");
    assert!(
        pathlike["response"]["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not exist")),
        "{pathlike}"
    );
    let undecodable = answer(unsynced(), "unknown-resource").await;
    assert_eq!(undecodable["response"]["allowed"], true, "{undecodable}");
    let warning = undecodable["response"]["warnings"].to_string();
    assert!(
        warning.contains("cannot be read by this operator")
            && warning.contains("decisionPolicy: unknown variant `adaptive`"),
        "{undecodable}"
    );

    // Synced: the watch's decoder knows the resource it left out of the cache.
    let decoder = Arc::new(std::sync::Mutex::new(Decoder::new(UnknownFields::Ignore)));
    decoder.lock().unwrap().event(Event::Apply(bad.clone()));
    let synced = Resources::Watched {
        store: kube::runtime::reflector::store().0,
        decoder,
        synced: Arc::new(AtomicBool::new(true)),
        client: client.clone(),
    };
    let undecodable = answer(synced, "unknown-resource").await;
    assert_eq!(undecodable["response"]["allowed"], true, "{undecodable}");

    // With `sidecar.failurePolicy: Fail` the pod is refused, by the resource's own policy.
    let mut failing = bad;
    failing.data["spec"]["sidecar"]["failurePolicy"] = serde_json::json!("Fail");
    let decoder = Arc::new(std::sync::Mutex::new(Decoder::new(UnknownFields::Ignore)));
    decoder.lock().unwrap().event(Event::Apply(failing));
    let refused = answer(
        Resources::Watched {
            store: kube::runtime::reflector::store().0,
            decoder,
            synced: Arc::new(AtomicBool::new(true)),
            client: client.clone(),
        },
        "unknown-resource",
    )
    .await;
    assert_eq!(refused["response"]["allowed"], false, "{refused}");

    // The count goes on for the readable resource.
    let recorder = recorder(&client);
    sidecars::count_all(&client, &recorder, Some("shop")).await;
    let counted = Api::<FaceKeyDeployment>::namespaced(client.clone(), "shop")
        .get("verifier")
        .await
        .unwrap();
    assert!(
        counted.status.and_then(|s| s.sidecar).is_some(),
        "status.sidecar written for the readable resource"
    );
}

/// Before the cache has synced, a pod's FaceKeyDeployment is read from the API server. When that
/// read fails (a 429 or 5xx of a struggling API server) or outlasts [`LOOKUP_TIMEOUT`] (the API
/// server gives up on the review after its `timeoutSeconds: 5` and admits the pod under
/// `failurePolicy: Ignore`, whatever the operator's setting), the pod is answered as for an
/// unknown resource under `--sidecar-unknown-resource` (`LookupFailed`, counted as an error),
/// within the API server's wait. A failed read used to refuse it whatever that setting said.
#[tokio::test]
async fn a_failed_lookup_is_answered_under_the_unknown_resource_policy() {
    use facekey_crds::SidecarFailurePolicy;
    use facekey_operator::decode::{Decoder, UnknownFields};
    use facekey_operator::metrics::Metrics;
    use facekey_operator::webhook::server::{LOOKUP_TIMEOUT, Resources, WebhookState, router};
    use http::{Response, StatusCode};
    use kube::client::Body;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    // A mock API server: 503 for `verifier`, no answer at all for `stalled`.
    let (service, mut handle) =
        tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    tokio::spawn(async move {
        let mut unanswered = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            if req.uri().path().ends_with("/stalled") {
                unanswered.push(send);
                continue;
            }
            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "ServiceUnavailable", "code": 503, "message": "etcd is overloaded"});
            send.send_response(
                Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&status).unwrap()))
                    .unwrap(),
            );
        }
    });
    let client = kube::Client::new(service, "default");
    let review = |resource: &str| {
        let mut review: Value =
            serde_json::from_slice(&std::fs::read(fixtures().join("reviews/inject.json")).unwrap())
                .unwrap();
        review["request"]["object"]["metadata"]["annotations"]["facekey.dev/inject"] =
            json!(resource);
        serde_json::to_vec(&review).unwrap()
    };
    let answer = |policy: SidecarFailurePolicy, resource: &str| {
        let metrics = Metrics::new().unwrap();
        let app = router(WebhookState {
            limit_ranges: Default::default(),
            resource_quotas: Default::default(),
            resources: Resources::Watched {
                store: kube::runtime::reflector::store().0,
                decoder: Arc::new(std::sync::Mutex::new(Decoder::new(UnknownFields::Ignore))),
                synced: Arc::new(AtomicBool::new(false)),
                client: client.clone(),
            },
            options: InjectOptions {
                unknown_resource: policy,
            },
            events: None,
            metrics: metrics.clone(),
            scope: None,
        });
        let body = review(resource);
        async move {
            let response = tokio::time::timeout(Duration::from_secs(4), post_review(&app, body))
                .await
                .expect("the review outlasted the API server's timeoutSeconds");
            let bytes = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            let counted = metrics
                .admission_reviews
                .with_label_values(&["error", "LookupFailed"])
                .get();
            (
                serde_json::from_slice::<Value>(&bytes).unwrap()["response"].clone(),
                counted,
            )
        }
    };

    // The operator admits pods naming an unknown resource: so it does when it cannot tell.
    let (response, counted) = answer(SidecarFailurePolicy::Ignore, "verifier").await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("patch").is_none(), "{response}");
    let warning = response["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("shop/verifier could not be read")
            && warning.contains("etcd is overloaded"),
        "{response}"
    );
    assert_eq!(counted, 1);
    // It refuses them: so it does, naming the error.
    let (response, counted) = answer(SidecarFailurePolicy::Fail, "verifier").await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 403, "{response}");
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("etcd is overloaded"), "{response}");
    assert_eq!(counted, 1);
    // No answer: given up after LOOKUP_TIMEOUT, well within the API server's 5 s.
    let started = Instant::now();
    let (response, counted) = answer(SidecarFailurePolicy::Ignore, "stalled").await;
    let took = started.elapsed();
    assert!(
        took >= LOOKUP_TIMEOUT && took < LOOKUP_TIMEOUT + Duration::from_secs(1),
        "{took:?}"
    );
    assert_eq!(response["allowed"], true, "{response}");
    let warning = response["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("no answer within 2s"), "{response}");
    assert_eq!(counted, 1);
}

/// Any pod reaching the webhook's port can post reviews (no client certificate) naming any
/// namespace, and each review of a pod that does not get its sidecar published a Warning Event
/// there. A flood of forged reviews — `kube-system` and `team-a` with a new resource name each
/// time, three reasons in `shop` — now publishes the burst of each namespace and reason (10), and
/// no more than a namespace's (20) over its reasons; the rest are counted as suppressed, and
/// every review is still answered and counted.
#[tokio::test]
async fn a_flood_of_forged_reviews_publishes_a_bounded_number_of_events() {
    use facekey_operator::metrics::Metrics;
    use facekey_operator::webhook::event_limit::{PER_NAMESPACE, PER_REASON};
    use facekey_operator::webhook::events::EventSink;
    use facekey_operator::webhook::server::{Resources, WebhookState, router};
    use http::{Response, StatusCode};
    use kube::client::Body;
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    // A mock API server: every Event write answered with what was sent, and reported as
    // (namespace, reason).
    let (service, mut handle) =
        tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            // /apis/events.k8s.io/v1/namespaces/<namespace>/events[/<name>]
            let namespace = req
                .uri()
                .path()
                .strip_prefix("/apis/events.k8s.io/v1/namespaces/")
                .and_then(|rest| rest.split('/').next())
                .unwrap_or_default()
                .to_owned();
            let body = http_body_util::BodyExt::collect(req.into_body())
                .await
                .unwrap()
                .to_bytes();
            let event: Value = serde_json::from_slice(&body).unwrap();
            let reason = event["reason"].as_str().unwrap_or_default().to_owned();
            tx.send((namespace, reason)).unwrap();
            send.send_response(
                Response::builder()
                    .status(StatusCode::CREATED)
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_vec()))
                    .unwrap(),
            );
        }
    });
    let client = kube::Client::new(service, "default");
    let metrics = Metrics::new().unwrap();
    let resources = std::fs::read_to_string(fixtures().join("resources.yaml")).unwrap();
    let app = router(WebhookState {
        limit_ranges: Default::default(),
        resource_quotas: Default::default(),
        resources: Resources::fixed(parse_resources(&resources).unwrap().resources),
        options: InjectOptions::default(),
        events: Some(EventSink::new(client, None, metrics.clone())),
        metrics: metrics.clone(),
        scope: None,
    });
    let forged = |case: &str, namespace: &str, resource: Option<String>| {
        let mut review: Value = serde_json::from_slice(
            &std::fs::read(fixtures().join(format!("reviews/{case}.json"))).unwrap(),
        )
        .unwrap();
        review["request"]["namespace"] = json!(namespace);
        review["request"]["object"]["metadata"]["namespace"] = json!(namespace);
        if let Some(resource) = resource {
            review["request"]["object"]["metadata"]["annotations"]["facekey.dev/inject"] =
                json!(resource);
        }
        serde_json::to_vec(&review).unwrap()
    };

    let started = Instant::now();
    let rounds: u64 = 40;
    for i in 0..rounds {
        for namespace in ["kube-system", "team-a"] {
            let body = forged("unknown-resource", namespace, Some(format!("forged-{i}")));
            assert_eq!(post_review(&app, body).await.status(), 200);
        }
        for case in ["unknown-resource", "not-ready-refused", "port-conflict"] {
            assert_eq!(
                post_review(&app, forged(case, "shop", None)).await.status(),
                200
            );
        }
    }
    // Publishing runs in the background: wait until the writes stop.
    let mut published = BTreeMap::<(String, String), u64>::new();
    while let Ok(Some(key)) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
        *published.entry(key).or_default() += 1;
    }
    // One more per reason every 10 s and per namespace every 5 s the flood took (none on any
    // machine that posts 200 reviews within 5 s).
    let took = started.elapsed();
    let reason_burst = u64::from(PER_REASON.burst_size().get());
    let namespace_burst = u64::from(PER_NAMESPACE.burst_size().get());
    let reason_refill = took.as_secs() / PER_REASON.replenish_interval().as_secs();
    let namespace_refill = took.as_secs() / PER_NAMESPACE.replenish_interval().as_secs();
    let of = |namespace: &str, reason: &str| {
        published
            .get(&(namespace.to_owned(), reason.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    for namespace in ["kube-system", "team-a"] {
        let n = of(namespace, "SidecarUnknownResource");
        assert!(
            (reason_burst..=reason_burst + reason_refill).contains(&n),
            "{namespace}: {n} Events published: {published:?}"
        );
    }
    let in_shop: u64 = published
        .iter()
        .filter(|((namespace, _), _)| namespace == "shop")
        .map(|(_, n)| n)
        .sum();
    assert!(
        (namespace_burst..=namespace_burst + namespace_refill).contains(&in_shop),
        "shop: {in_shop} Events published: {published:?}"
    );
    for reason in [
        "SidecarUnknownResource",
        "SidecarNoAdmittedImage",
        "SidecarPortConflict",
    ] {
        let n = of("shop", reason);
        assert!(
            (1..=reason_burst + reason_refill).contains(&n),
            "shop {reason}: {n}"
        );
    }
    assert_eq!(published.len(), 5, "{published:?}");

    // Every Event not published is counted as suppressed, by reason; every review is counted.
    let suppressed = |reason: &str| {
        metrics
            .admission_events_suppressed
            .with_label_values(&[reason])
            .get()
    };
    let unknown = of("kube-system", "SidecarUnknownResource")
        + of("team-a", "SidecarUnknownResource")
        + of("shop", "SidecarUnknownResource");
    assert_eq!(suppressed("UnknownResource"), 3 * rounds - unknown);
    assert_eq!(
        suppressed("NoAdmittedImage"),
        rounds - of("shop", "SidecarNoAdmittedImage")
    );
    assert_eq!(
        suppressed("PortConflict"),
        rounds - of("shop", "SidecarPortConflict")
    );
    let reviews = |outcome: &str, reason: &str| {
        metrics
            .admission_reviews
            .with_label_values(&[outcome, reason])
            .get()
    };
    assert_eq!(reviews("refused", "UnknownResource"), 3 * rounds);
    assert_eq!(reviews("refused", "NoAdmittedImage"), rounds);
    assert_eq!(reviews("skipped", "PortConflict"), rounds);
}
