//! Benchmark: pure desired-state time of one FaceKeyDeployment, reconciling 1,000 of them against
//! kube-fake-client's in-memory API (time and peak memory), and the API calls and reconciles one
//! change costs (the controller's watch triggers replayed over the objects each reconcile wrote).
//! Prints plain numbers.
//!
//! Run: `cargo bench -p facekey-operator --bench reconcile` (optionally `-- 2000` for another count).
//! The in-memory API runs in this process, so times include its JSON (de)serialisation and
//! memory includes its object store: read them as an upper bound of the operator's own cost.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use facekey_crds::FaceKeyDeployment;
use facekey_operator::desired::{self, Capabilities, DesiredInputs};
use facekey_operator::metrics::Metrics;
use facekey_operator::reconcile::{Context, reconcile};
use facekey_operator::render::{RenderOptions, parse_resources, render};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ListParams, PostParams};
use kube_fake_client::ClientBuilder;
use serde_json::json;

#[path = "../tests/common/mod.rs"]
mod common;

const SAMPLE: &str = include_str!("../../manifests/samples/facekeydeployment.yaml");

use common::kinds::{AlertmanagerConfig, PrometheusRule, ServiceMonitor, VulnerabilityReport};

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn per_iter(total: Duration, n: u32) -> String {
    format!("{:.1} µs", total.as_secs_f64() * 1e6 / f64::from(n))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench_desired(fkd: &FaceKeyDeployment) {
    let caps = Capabilities::all();
    let inputs = DesiredInputs {
        fkd,
        runtime_image: Some(&fkd.spec.image),
        capabilities: &caps,
        mounted_config: None,
    };
    let objects = desired::compute(&inputs).unwrap().objects.len();
    for _ in 0..500 {
        black_box(desired::compute(black_box(&inputs)).unwrap());
    }
    let n = 2_000;
    let batches: Vec<Duration> = (0..10)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                black_box(desired::compute(black_box(&inputs)).unwrap());
            }
            t.elapsed()
        })
        .collect();
    println!(
        "pure desired state of the full sample ({objects} objects): median {} per resource (10 batches of {n})",
        per_iter(median(batches), n)
    );
    let opts = RenderOptions {
        capabilities: caps.clone(),
        include_scan_job: false,
        operator_image: "op".into(),
        policy: facekey_operator::policy_floor::ClusterPolicy::permissive(),
    };
    let t = Instant::now();
    let m = 500;
    for _ in 0..m {
        black_box(render(black_box(SAMPLE), &opts).unwrap());
    }
    println!(
        "render (parse YAML + desired state + serialise YAML) of the full sample: {} per resource",
        per_iter(t.elapsed(), m)
    );
}

async fn bench_reconcile(count: usize, concurrency: usize) {
    let mut builder = ClientBuilder::new()
        .with_resource::<FaceKeyDeployment>()
        .with_status_subresource::<FaceKeyDeployment>()
        .with_status_subresource::<Deployment>()
        .with_resource::<ServiceMonitor>()
        .with_resource::<PrometheusRule>()
        .with_resource::<AlertmanagerConfig>()
        .with_resource::<VulnerabilityReport>();
    for name in [
        "servicemonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com",
        "alertmanagerconfigs.monitoring.coreos.com",
    ] {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {"group": "x", "names": {"kind": "X", "plural": "xs"}, "scope": "Namespaced", "versions": []},
        }))
        .unwrap();
        builder = builder.with_object(crd);
    }
    let client = builder.build().await.unwrap();
    let ctx = Arc::new(
        Context::new(client.clone(), Metrics::new().unwrap(), "op".into(), None)
            // The gate is off below: no policy floor.
            .with_policy(facekey_operator::policy_floor::ClusterPolicy::permissive()),
    );

    let template = parse_resources(SAMPLE).unwrap().resources.remove(0);
    let rss_before = rss_kib("VmRSS:");
    let fkds: Vec<FaceKeyDeployment> = {
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let mut fkd = template.clone();
            let ns = format!("team-{}", i % 50);
            fkd.metadata.name = Some(format!("fk-{i}"));
            fkd.metadata.namespace = Some(ns.clone());
            // Gate off: this measures reconcile/apply cost, not waiting for scans.
            fkd.spec.scan_gate = Some(facekey_crds::ScanGate {
                enabled: false,
                ..Default::default()
            });
            let api: Api<FaceKeyDeployment> = Api::namespaced(client.clone(), &ns);
            out.push(api.create(&PostParams::default(), &fkd).await.unwrap());
        }
        out
    };

    for pass in ["first (creates all children)", "second (steady state)"] {
        let objs: Vec<Arc<FaceKeyDeployment>> = if pass.starts_with("first") {
            fkds.iter().cloned().map(Arc::new).collect()
        } else {
            let api: Api<FaceKeyDeployment> = Api::all(client.clone());
            api.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .map(Arc::new)
                .collect()
        };
        let t = Instant::now();
        let errors = futures::stream::iter(objs)
            .map(|o| reconcile(o, ctx.clone()))
            .buffer_unordered(concurrency)
            .filter(|r| futures::future::ready(r.is_err()))
            .count()
            .await;
        let elapsed = t.elapsed();
        println!(
            "reconcile {count} FaceKeyDeployments, {pass}, concurrency {concurrency}: {:.2} s total, {:.2} ms each, {errors} errors",
            elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1e3 / count as f64
        );
        assert_eq!(errors, 0);
    }
    let deployments: Api<Deployment> = Api::all(client.clone());
    let n = deployments
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(n, count);
    println!(
        "memory: RSS {} MiB → {} MiB after {count} resources and their {} children; peak RSS (VmHWM) {} MiB",
        rss_before / 1024,
        rss_kib("VmRSS:") / 1024,
        count * 9,
        rss_kib("VmHWM:") / 1024
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a bare number sets the resource count.
    let count = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(1000);
    let template = parse_resources(SAMPLE).unwrap().resources.remove(0);
    bench_desired(&template);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench_reconcile(count, 1));
    rt.block_on(bench_reconcile(count, 16));
    rt.block_on(api_calls_per_change());
}

/// API calls and reconciles per change, the controller's watch triggers replayed (see
/// tests/common/replay.rs); tests/api_calls.rs asserts on the same numbers.
async fn api_calls_per_change() {
    println!("API calls per change (watch triggers replayed; server-side-apply harness):");
    for (what, cost) in common::replay::standard_changes(6).await {
        println!(
            "  {what:<45} {} reconcile(s), {} calls ({} GET, {} LIST, {} writes){}",
            cost.reconciles,
            cost.total(),
            cost.calls
                .iter()
                .filter(|(k, _)| k.starts_with("GET "))
                .map(|(_, n)| n)
                .sum::<usize>(),
            cost.calls
                .iter()
                .filter(|(k, _)| k.starts_with("LIST "))
                .map(|(_, n)| n)
                .sum::<usize>(),
            cost.writes(),
            if cost.settled { "" } else { ", NOT SETTLED" }
        );
    }
}
