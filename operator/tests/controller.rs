//! The `run` glue against kube-fake-client: leader election, the kube-runtime Controller driving
//! reconciles from its initial list (the fake serves no watch streams), graceful shutdown that
//! releases the Lease.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::harness;
use facekey_operator::controller::{Exit, RunConfig, run_with};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reconciles_as_leader_and_releases_the_lease_on_shutdown() {
    let h = harness(&[]).await;
    h.create(
        "fk",
        json!({"image": "ghcr.io/facekey/runtime:0.1.0", "scanGate": {"enabled": false}}),
    )
    .await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let config = RunConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        operator_image: "op:test".into(),
        lease_namespace: "sys".into(),
        lease_name: "leader".into(),
        identity: "op-1".into(),
        lease_duration: Duration::from_secs(3),
        watch_namespace: None,
        policy: facekey_operator::policy_floor::ClusterPolicy::permissive(),
        metrics: facekey_operator::metrics::Metrics::new().unwrap(),
        webhook_cert: None,
    };
    let task = tokio::spawn(run_with(h.client.clone(), config, async move {
        let _ = stop_rx.await;
    }));

    let mut created = false;
    for _ in 0..200 {
        // The status is written after the children in the same reconcile: wait for both.
        if h.deployment("fk").await.is_some() && h.get("fk").await.status.is_some() {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        created,
        "the controller reconciled the resource (children and status) from its initial list"
    );
    let leases: Api<Lease> = Api::namespaced(h.client.clone(), "sys");
    let holder = leases
        .get("leader")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some("op-1"));

    stop_tx.send(()).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("shut down in time")
        .unwrap()
        .unwrap();
    assert_eq!(exit, Exit::Signal);
    let spec = leases.get("leader").await.unwrap().spec.unwrap();
    assert_eq!(
        spec.holder_identity, None,
        "Lease released for a fast hand-over"
    );
}
