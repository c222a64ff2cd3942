//! Call sequences pinned with a tower-test mock API server, where order matters: leader election
//! (read, then create/replace with the read resourceVersion) and the reconcile stages (observe,
//! apply in order, prune, status last). Every client goes through `common::rbac::enforcing`, so
//! these sequences are also ones manifests/rbac.yaml lets the operator send.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use facekey_crds::FaceKeyDeployment;
use facekey_operator::capabilities::CapabilityCache;
use facekey_operator::leader::LeaderElector;
use facekey_operator::metrics::Metrics;
use facekey_operator::reconcile::{self, Context};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// One request as the mock saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    body: Value,
}

impl Seen {
    fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

type Responder = Box<dyn Fn(&Seen) -> (StatusCode, Value) + Send>;

/// Start a mock API server answering with `respond`; the handle yields every request seen once
/// the client is dropped.
fn mock(respond: Responder) -> (Client, JoinHandle<Vec<Seen>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            let bytes = req.into_body().collect().await.unwrap().to_bytes();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let s = Seen { method, path, body };
            let (status, value) = respond(&s);
            seen.push(s);
            send.send_response(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&value).unwrap()))
                    .unwrap(),
            );
        }
        seen
    });
    (
        common::rbac::enforcing(Client::new(service, "default")),
        task,
    )
}

fn not_found() -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

fn conflict() -> (StatusCode, Value) {
    (
        StatusCode::CONFLICT,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "the object has been modified"}),
    )
}

/// The Lease the deployed operator uses (manifests/rbac.yaml grants it by name).
const NS: &str = "facekey-system";
const LEASE_NAME: &str = "facekey-operator-leader";
const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/facekey-system/leases/facekey-operator-leader";

fn lease(holder: &str, renewed: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE_NAME, "namespace": NS, "resourceVersion": rv},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "acquireTime": "2025-01-01T00:00:00.000000Z", "renewTime": renewed,
                 "leaseTransitions": 3}
    })
}

fn elector(client: Client) -> LeaderElector {
    LeaderElector::new(
        client,
        NS,
        LEASE_NAME,
        "me",
        std::time::Duration::from_secs(15),
    )
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[tokio::test]
async fn lease_is_created_when_absent() {
    let (client, task) = mock(Box::new(|s| match s.method {
        Method::GET => not_found(),
        _ => (StatusCode::CREATED, s.body.clone()),
    }));
    assert!(
        elector(client)
            .step(at("2025-01-01T00:00:20Z"))
            .await
            .unwrap()
    );
    let seen = task.await.unwrap();
    let lines: Vec<String> = seen.iter().map(Seen::line).collect();
    assert_eq!(
        lines,
        [
            format!("GET {LEASE}"),
            "POST /apis/coordination.k8s.io/v1/namespaces/facekey-system/leases".to_owned()
        ]
    );
    assert_eq!(seen[1].body["spec"]["holderIdentity"], "me");
    assert_eq!(seen[1].body["spec"]["leaseTransitions"], 0);
}

#[tokio::test]
async fn live_lease_of_another_holder_is_only_read() {
    let (client, task) = mock(Box::new(|_| {
        (
            StatusCode::OK,
            lease("other", "2025-01-01T00:00:10.000000Z", "7"),
        )
    }));
    assert!(
        !elector(client)
            .step(at("2025-01-01T00:00:20Z"))
            .await
            .unwrap()
    );
    let lines: Vec<String> = task.await.unwrap().iter().map(Seen::line).collect();
    assert_eq!(lines, [format!("GET {LEASE}")]);
}

/// Seen unchanged for a lease duration by the standby's own clock (paused and advanced here):
/// only then is it taken over, whatever the timestamps in the record say.
#[tokio::test(start_paused = true)]
async fn expired_lease_is_taken_over_with_optimistic_locking() {
    let (client, task) = mock(Box::new(|s| match s.method {
        Method::GET => (
            StatusCode::OK,
            lease("other", "2025-01-01T00:00:00.000000Z", "7"),
        ),
        _ => (StatusCode::OK, s.body.clone()),
    }));
    let me = elector(client);
    // Long expired by the record's timestamp, but first seen now: followed.
    assert!(!me.step(at("2025-01-01T01:00:00Z")).await.unwrap());
    tokio::time::advance(std::time::Duration::from_secs(14)).await;
    assert!(!me.step(at("2025-01-01T01:00:14Z")).await.unwrap());
    tokio::time::advance(std::time::Duration::from_secs(1)).await;
    assert!(me.step(at("2025-01-01T01:00:15Z")).await.unwrap());
    drop(me);
    let seen = task.await.unwrap();
    let lines: Vec<String> = seen.iter().map(Seen::line).collect();
    assert_eq!(
        lines,
        [
            format!("GET {LEASE}"),
            format!("GET {LEASE}"),
            format!("GET {LEASE}"),
            format!("PUT {LEASE}")
        ]
    );
    let put = &seen[3].body;
    assert_eq!(
        put["metadata"]["resourceVersion"], "7",
        "replace carries the read version"
    );
    assert_eq!(put["spec"]["holderIdentity"], "me");
    assert_eq!(put["spec"]["leaseTransitions"], 4);
}

#[tokio::test(start_paused = true)]
async fn lost_takeover_race_means_not_leader() {
    let (client, task) = mock(Box::new(|s| match s.method {
        Method::GET => (
            StatusCode::OK,
            lease("other", "2025-01-01T00:00:00.000000Z", "7"),
        ),
        _ => conflict(),
    }));
    let me = elector(client);
    assert!(!me.step(at("2025-01-01T00:00:20Z")).await.unwrap());
    tokio::time::advance(std::time::Duration::from_secs(15)).await;
    assert!(!me.step(at("2025-01-01T00:00:35Z")).await.unwrap());
    drop(me);
    // Read, read, and the lost PUT.
    assert_eq!(task.await.unwrap().len(), 3);
}

#[tokio::test]
async fn renewal_keeps_acquire_time_and_transitions() {
    let (client, task) = mock(Box::new(|s| match s.method {
        Method::GET => (
            StatusCode::OK,
            lease("me", "2025-01-01T00:00:10.000000Z", "9"),
        ),
        _ => (StatusCode::OK, s.body.clone()),
    }));
    assert!(
        elector(client)
            .step(at("2025-01-01T00:00:15Z"))
            .await
            .unwrap()
    );
    let seen = task.await.unwrap();
    let put = &seen[1].body["spec"];
    assert_eq!(put["leaseTransitions"], 3);
    assert_eq!(put["acquireTime"], "2025-01-01T00:00:00.000000Z");
    assert_eq!(put["renewTime"], "2025-01-01T00:00:15.000000Z");
}

/// The reconcile stages in order for a resource with the gate disabled and no optional CRDs:
/// CRD discovery, observe, create the generated Secret, apply children in order, prune by
/// listing, clean up scan Jobs, then the status patch; Events come after the status.
/// Reconcile a resource with `spec` against a mock API server that knows no optional CRD and no
/// Deployment, answering lists empty and echoing writes; the calls it saw, as `METHOD path` lines.
async fn reconcile_calls(spec: serde_json::Value) -> Vec<String> {
    let fkd_json = json!({
        "apiVersion": "facekey.dev/v1alpha1", "kind": "FaceKeyDeployment",
        "metadata": {"name": "fk", "namespace": "ns", "uid": "u1", "generation": 1},
        "spec": spec,
    });
    let fkd: FaceKeyDeployment = serde_json::from_value(fkd_json.clone()).unwrap();
    let (client, task) = mock(Box::new(move |s| {
        if s.path.ends_with("/status") {
            let mut obj = fkd_json.clone();
            obj["status"] = s.body["status"].clone();
            return (StatusCode::OK, obj);
        }
        if s.method == Method::GET
            && (s.path.contains("customresourcedefinitions")
                || s.path
                    .rsplit('/')
                    .next()
                    .is_some_and(|l| l == "fk" || l.starts_with("fk-")))
        {
            return not_found();
        }
        if s.method == Method::GET {
            return (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []}),
            );
        }
        // Echo the applied object, as an API server returns it (with metadata).
        let mut obj = s.body.clone();
        if obj.get("metadata").is_none() {
            obj["metadata"] = json!({"name": "fk", "namespace": "ns", "uid": "u1"});
        }
        (StatusCode::OK, obj)
    }));
    let ctx = Context::new(
        client.clone(),
        Metrics::new().unwrap(),
        "op:test".into(),
        None,
    )
    .with_capabilities(CapabilityCache::new(client))
    .with_policy(facekey_operator::policy_floor::ClusterPolicy::permissive());
    reconcile::reconcile(Arc::new(fkd), Arc::new(ctx))
        .await
        .unwrap();
    task.await.unwrap().iter().map(Seen::line).collect()
}

#[tokio::test]
async fn reconcile_applies_in_order_and_writes_status_last() {
    let lines =
        reconcile_calls(json!({"image": "img:1", "replicas": 2, "scanGate": {"enabled": false}}))
            .await;
    let crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let expected = [
        format!("GET {crd}/servicemonitors.monitoring.coreos.com"),
        format!("GET {crd}/podmonitors.monitoring.coreos.com"),
        format!("GET {crd}/prometheusrules.monitoring.coreos.com"),
        format!("GET {crd}/alertmanagerconfigs.monitoring.coreos.com"),
        format!("GET {crd}/vulnerabilityreports.aquasecurity.github.io"),
        format!("GET {crd}/clusters.postgresql.cnpg.io"),
        "GET /apis/apps/v1/namespaces/ns/deployments/fk".to_owned(),
        // The inventory: the labelled children of each kind, listed once (metadata only) for
        // the ownership check and the pruner.
        "GET /api/v1/namespaces/ns/configmaps".to_owned(),
        "GET /apis/networking.k8s.io/v1/namespaces/ns/networkpolicies".to_owned(),
        "GET /apis/apps/v1/namespaces/ns/deployments".to_owned(),
        "GET /api/v1/namespaces/ns/services".to_owned(),
        "GET /apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers".to_owned(),
        "GET /apis/policy/v1/namespaces/ns/poddisruptionbudgets".to_owned(),
        // The generated API keys Secret (create only, 409 once it exists), before any pod.
        "POST /api/v1/namespaces/ns/secrets".to_owned(),
        // Its `ApiKeyCreated` Event (once: later creates answer 409).
        "POST /apis/events.k8s.io/v1/namespaces/ns/events".to_owned(),
        // Ownership of each child missing from the inventory (it may exist without the
        // operator's labels; the Deployment was read above): an object this resource does not
        // own is never applied.
        "GET /api/v1/namespaces/ns/configmaps/fk-config".to_owned(),
        "GET /apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/fk".to_owned(),
        "GET /api/v1/namespaces/ns/services/fk".to_owned(),
        "GET /apis/policy/v1/namespaces/ns/poddisruptionbudgets/fk".to_owned(),
        "GET /api/v1/namespaces/ns/configmaps/fk-dashboard".to_owned(),
        "PATCH /api/v1/namespaces/ns/configmaps/fk-config".to_owned(),
        // The NetworkPolicy before the Deployment: no pod runs without it.
        "PATCH /apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/fk".to_owned(),
        "PATCH /apis/apps/v1/namespaces/ns/deployments/fk".to_owned(),
        "PATCH /api/v1/namespaces/ns/services/fk".to_owned(),
        "PATCH /apis/policy/v1/namespaces/ns/poddisruptionbudgets/fk".to_owned(),
        "PATCH /api/v1/namespaces/ns/configmaps/fk-dashboard".to_owned(),
        // Finished scan Jobs of other images (children were pruned from the inventory).
        "GET /apis/batch/v1/namespaces/ns/jobs".to_owned(),
        "PATCH /apis/facekey.dev/v1alpha1/namespaces/ns/facekeydeployments/fk/status".to_owned(),
    ];
    assert_eq!(&lines[..expected.len()], &expected[..], "{lines:#?}");
    assert!(
        lines[expected.len()..]
            .iter()
            .all(|l| l.starts_with("POST /apis/events.k8s.io/v1/namespaces/ns/events")),
        "only Events after the status: {lines:#?}"
    );
}

/// A PostgreSQL store without `templateKeySecretRef` (and no `auth.keysSecretRef`): the template
/// key and API keys Secrets are created (POST, never read: the operator holds no `get` on
/// Secrets) before any object is applied, so no pod can start without them.
#[tokio::test]
async fn generated_template_key_is_created_before_the_applies_and_never_read() {
    let lines = reconcile_calls(json!({"image": "img:1", "scanGate": {"enabled": false},
        "store": {"postgres": {"urlSecretRef": {"name": "db", "key": "url"}}}}))
    .await;
    let first_patch = lines.iter().position(|l| l.starts_with("PATCH ")).unwrap();
    let posts = lines[..first_patch]
        .iter()
        .filter(|l| *l == "POST /api/v1/namespaces/ns/secrets")
        .count();
    assert_eq!(posts, 2, "{lines:#?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("/secrets") && !l.starts_with("POST ")),
        "Secrets are only created: {lines:#?}"
    );
}
