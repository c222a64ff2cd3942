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

/// A client to the same API whose calls, once `hang` is set, never answer (a half-open
/// connection, a stalled API server) and which counts the calls made.
fn hanging(
    inner: kube::Client,
    hang: std::sync::Arc<std::sync::atomic::AtomicBool>,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> kube::Client {
    use std::sync::atomic::Ordering;
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        let hang = hang.load(Ordering::SeqCst);
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if hang {
                std::future::pending::<()>().await;
            }
            inner.send(req).await
        }
    });
    kube::Client::new(svc, NS)
}

/// Elector `a` of a 15 s lease through [`hanging`]: set the flag to make its calls hang; the
/// counter counts them.
fn hanging_elector(
    client: &kube::Client,
) -> (
    LeaderElector,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let hang = std::sync::Arc::default();
    let calls = std::sync::Arc::default();
    let through = hanging(
        client.clone(),
        std::sync::Arc::clone(&hang),
        std::sync::Arc::clone(&calls),
    );
    let a = LeaderElector::new(through, NS, LEASE, "a", Duration::from_secs(15));
    (a, hang, calls)
}

/// A leader whose Lease calls hang gives up leading within the renew deadline (10 s of a 15 s
/// lease) after the start of its last successful renewal, before a standby that saw that renewal
/// may take over (15 s after it). It used to check the deadline only after a call timed out, and
/// wait a whole renewal interval before each attempt: about 16.7 s.
#[tokio::test(start_paused = true)]
async fn a_leader_whose_calls_hang_stops_leading_before_a_standby_may_take_over() {
    use facekey_operator::leader::Lost;
    use std::sync::atomic::Ordering;

    let client = ClientBuilder::new().build().await.unwrap();
    let (a, hang, calls) = hanging_elector(&client);
    let b = LeaderElector::new(client.clone(), NS, LEASE, "b", Duration::from_secs(15));
    let wall = at("2025-01-01T00:00:00Z");
    let won_at = tokio::time::Instant::now();
    assert!(a.step(wall).await.unwrap());

    // One renewal goes through at 5 s; b sees it at once. Then every call hangs.
    let holding = tokio::spawn(async move { (a.hold(won_at).await, tokio::time::Instant::now()) });
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    let renewed_at = won_at + Duration::from_secs(5);
    assert!(
        calls.load(Ordering::SeqCst) >= 4,
        "a renewed once (get, replace)"
    );
    hang.store(true, Ordering::SeqCst);
    assert!(!b.step(wall).await.unwrap(), "b sees a's renewal");
    let b_saw = tokio::time::Instant::now();

    let (lost, at_) = holding.await.unwrap();
    assert_eq!(lost, Lost::RenewDeadline);
    let led_for = at_ - renewed_at;
    assert!(
        led_for <= Duration::from_secs(10),
        "a led {led_for:?} past its last renewal"
    );
    // b may take over only a whole lease after it saw that renewal: after a stopped.
    assert!(at_ < b_saw + Duration::from_secs(15));
    tokio::time::sleep_until(b_saw + Duration::from_secs(15)).await;
    assert!(
        b.step(wall).await.unwrap(),
        "b takes over once the lease expired"
    );
}

/// A failed renewal is retried after 1 s, not a whole renewal interval, so one call that timed
/// out does not cost the leadership; a Lease that names someone else ends it at once.
#[tokio::test(start_paused = true)]
async fn a_failed_renewal_is_retried_soon_and_a_taken_lease_ends_leading() {
    use facekey_operator::leader::Lost;
    use std::sync::atomic::Ordering;

    let client = ClientBuilder::new().build().await.unwrap();
    let (a, hang, calls) = hanging_elector(&client);
    let wall = at("2025-01-01T00:00:00Z");
    let won_at = tokio::time::Instant::now();
    assert!(a.step(wall).await.unwrap());
    let holding = tokio::spawn(async move { (a.hold(won_at).await, tokio::time::Instant::now()) });

    // The renewal at 5 s hangs until its call times out (8.33 s); the next attempt follows
    // 1 s later and, answered, renews: still leading past the 10 s deadline of the first term.
    tokio::time::sleep(Duration::from_millis(4_900)).await;
    hang.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    hang.store(false, Ordering::SeqCst);
    let before = calls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        calls.load(Ordering::SeqCst) >= before + 2,
        "retried (get, replace) within 1.5 s of the failure"
    );
    tokio::time::sleep(Duration::from_millis(4_400)).await;
    assert!(!holding.is_finished(), "still leading at 14 s");

    // Someone takes the Lease over (an operator with another identity, forced by hand).
    let lease: Api<Lease> = Api::namespaced(client.clone(), NS);
    let mut taken = lease.get(LEASE).await.unwrap();
    taken.spec.as_mut().unwrap().holder_identity = Some("c".into());
    lease
        .replace(LEASE, &Default::default(), &taken)
        .await
        .unwrap();
    let (lost, _) = holding.await.unwrap();
    assert_eq!(lost, Lost::Taken);
}
