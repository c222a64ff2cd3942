//! Two operator replicas electing a leader through a Lease in kube-fake-client's in-memory API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use facekey_operator::leader::LeaderElector;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube_fake_client::ClientBuilder;

/// The operator's namespace and Lease, as manifests/rbac.yaml's leader-election Role names them.
const NS: &str = "facekey-system";
const LEASE: &str = "facekey-operator-leader";

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Expiry is judged by the standby's own (paused, advanced) monotonic clock from when it saw
/// the holder's record change, never by comparing the record's timestamps with its wall clock.
#[tokio::test(start_paused = true)]
async fn one_leader_takeover_after_expiry_and_release() {
    let client = ClientBuilder::new().build().await.unwrap();
    // Each replica's own client: only what manifests/rbac.yaml's leader-election Role grants,
    // in the namespace and for the Lease name it names.
    let operator = common::rbac::enforcing(client.clone());
    let a = LeaderElector::new(operator.clone(), NS, LEASE, "a", Duration::from_secs(15));
    let b = LeaderElector::new(operator.clone(), NS, LEASE, "b", Duration::from_secs(15));
    let wall = at("2025-01-01T00:00:00Z");

    assert!(a.step(wall).await.unwrap(), "a creates the Lease");
    assert!(!b.step(wall).await.unwrap(), "b follows a live Lease");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(
        a.step(at("2025-01-01T00:00:10Z")).await.unwrap(),
        "a renews"
    );
    // b's wall clock is an hour ahead: a clock-skewed standby still sees a live Lease, because
    // a's record changed since b last looked.
    let skewed = at("2025-01-01T01:00:00Z");
    assert!(
        !b.step(skewed).await.unwrap(),
        "renewed since b last looked"
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(
        !b.step(skewed).await.unwrap(),
        "unchanged for 10 s of a 15 s lease: still a's"
    );

    // a stops renewing; once b has seen the same record for 15 s it takes over.
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(b.step(skewed).await.unwrap(), "b takes over");
    assert!(!a.step(wall).await.unwrap(), "a lost it");
    let lease: Api<Lease> = Api::namespaced(client.clone(), NS);
    let lease_spec = || async { lease.get(LEASE).await.unwrap().spec.unwrap() };
    let spec = lease_spec().await;
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));

    // b shuts down gracefully: a can take over at once instead of waiting for expiry.
    b.release().await.unwrap();
    assert!(a.step(wall).await.unwrap());
    let spec = lease_spec().await;
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_transitions, Some(2));
}
