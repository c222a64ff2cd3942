//! Golden YAML of `render` for every sample and fixture resource. Run with `UPDATE_GOLDEN=1` to
//! rewrite the files after an intended change, then review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use facekey_operator::desired::{Capabilities, OptionalCrd};
use facekey_operator::policy_floor::ClusterPolicy;
use facekey_operator::render::{RenderOptions, render};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check(input: &Path, golden_name: &str, opts: &RenderOptions) {
    let text = std::fs::read_to_string(input).unwrap();
    let rendered = render(&text, opts).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
    compare(input, &rendered, golden_name);
}

/// Like [`check`] for the template store's goldens: only the objects that are not monitoring
/// (ServiceMonitor, PrometheusRule, dashboard…), which the other golden files pin, so a change
/// there does not touch these.
fn check_without_monitoring(input: &Path, golden_name: &str, opts: &RenderOptions) {
    let text = std::fs::read_to_string(input).unwrap();
    let rendered = render(&text, opts).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
    let kept: Vec<&str> = rendered
        .split("\n---\n")
        .filter(|doc| !doc.contains("app.kubernetes.io/component: monitoring"))
        .collect();
    compare(
        input,
        &format!("{}\n", kept.join("\n---\n").trim_end()),
        golden_name,
    );
}

fn compare(input: &Path, rendered: &str, golden_name: &str) {
    let golden = root().join("tests/golden").join(golden_name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, rendered).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&golden)
        .unwrap_or_else(|_| panic!("{} missing; run with UPDATE_GOLDEN=1", golden.display()));
    if rendered != expected {
        let line = rendered
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .map_or(0, |i| i + 1);
        panic!(
            "{} differs from {} (first difference at line {line}); run with UPDATE_GOLDEN=1 and review",
            input.display(),
            golden.display()
        );
    }
}

fn opts() -> RenderOptions {
    RenderOptions {
        capabilities: Capabilities::all(),
        include_scan_job: true,
        operator_image: "ghcr.io/facekey/operator:0.1.0".into(),
        // The fixtures include a disabled gate; the floor has its own golden below.
        policy: ClusterPolicy::permissive(),
    }
}

#[test]
fn sample_full() {
    check(
        &root().join("../manifests/samples/facekeydeployment.yaml"),
        "sample-full.yaml",
        &opts(),
    );
}

#[test]
fn sample_minimal_without_monitoring_crds() {
    let mut o = opts();
    o.capabilities
        .installed
        .retain(|c| *c == OptionalCrd::VulnerabilityReport);
    o.include_scan_job = false;
    check(
        &root().join("../manifests/samples/facekeydeployment-minimal.yaml"),
        "sample-minimal-no-monitoring-crds.yaml",
        &o,
    );
}

#[test]
fn models_and_rps() {
    check(
        &root().join("tests/fixtures/resources/models-and-rps.yaml"),
        "models-and-rps.yaml",
        &opts(),
    );
}

#[test]
fn weights_configmap() {
    check(
        &root().join("tests/fixtures/resources/weights-configmap.yaml"),
        "weights-configmap.yaml",
        &opts(),
    );
}

/// Sidecars allowed with monitoring on: the PodMonitor of the injected sidecars.
#[test]
fn sidecar_pod_monitor() {
    check(
        &root().join("tests/fixtures/resources/sidecar.yaml"),
        "sidecar-pod-monitor.yaml",
        &opts(),
    );
}

#[test]
fn sample_embedded_store() {
    check_without_monitoring(
        &root().join("../manifests/samples/facekeydeployment-embedded.yaml"),
        "store-embedded.yaml",
        &opts(),
    );
}

#[test]
fn cloudnativepg_store() {
    check_without_monitoring(
        &root().join("tests/fixtures/store/cloudnativepg.yaml"),
        "store-cloudnativepg.yaml",
        &opts(),
    );
}

/// Pod overrides, pull secrets and a PDB, rendered under the default policy floor with the
/// scanner settings of an air-gapped cluster (mirrored scanner image and DBs).
#[test]
fn pod_overrides_under_the_default_floor() {
    let mut o = opts();
    o.policy = ClusterPolicy {
        scanner: facekey_operator::policy_floor::ScannerSettings {
            image: "registry.internal.example/aquasecurity/trivy:0.76.0".into(),
            db_repository: Some("registry.internal.example/aquasecurity/trivy-db:2".into()),
            java_db_repository: Some(
                "registry.internal.example/aquasecurity/trivy-java-db:1".into(),
            ),
            server: None,
        },
        ..ClusterPolicy::default()
    };
    check(
        &root().join("tests/fixtures/resources/pod-overrides.yaml"),
        "pod-overrides.yaml",
        &o,
    );
}
