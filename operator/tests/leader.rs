//! Two operator replicas electing a leader through a Lease in kube-fake-client's in-memory API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use facekey_operator::leader::LeaderElector;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube_fake_client::ClientBuilder;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[tokio::test]
async fn one_leader_takeover_after_expiry_and_release() {
    let client = ClientBuilder::new().build().await.unwrap();
    let a = LeaderElector::new(
        client.clone(),
        "sys",
        "leader",
        "a",
        Duration::from_secs(15),
    );
    let b = LeaderElector::new(
        client.clone(),
        "sys",
        "leader",
        "b",
        Duration::from_secs(15),
    );

    assert!(
        a.step(at("2025-01-01T00:00:00Z")).await.unwrap(),
        "a creates the Lease"
    );
    assert!(
        !b.step(at("2025-01-01T00:00:05Z")).await.unwrap(),
        "b follows a live Lease"
    );
    assert!(
        a.step(at("2025-01-01T00:00:10Z")).await.unwrap(),
        "a renews"
    );
    assert!(
        !b.step(at("2025-01-01T00:00:20Z")).await.unwrap(),
        "renewed 10 s ago: still a's"
    );

    // a stops renewing; 16 s after its last renewal b takes over.
    assert!(b.step(at("2025-01-01T00:00:26Z")).await.unwrap());
    assert!(
        !a.step(at("2025-01-01T00:00:27Z")).await.unwrap(),
        "a lost it"
    );
    let lease: Api<Lease> = Api::namespaced(client.clone(), "sys");
    let spec = lease.get("leader").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));

    // b shuts down gracefully: a can take over at once instead of waiting for expiry.
    b.release().await.unwrap();
    assert!(a.step(at("2025-01-01T00:00:28Z")).await.unwrap());
    let spec = lease.get("leader").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_transitions, Some(2));
}
