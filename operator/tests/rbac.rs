//! `manifests/rbac.yaml` as the test harness enforces it (`common::rbac`): requests map to RBAC
//! verbs and resources as the API server maps them, and the manifest grants what it says and no
//! more. Every reconciler test runs its operator client through the enforcement.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::rbac::{Request, Rules, request_of};

fn req(method: &str, uri: &str) -> Request {
    request_of(&method.parse().unwrap(), &uri.parse().unwrap()).unwrap()
}

#[test]
fn requests_map_to_rbac_verbs_and_resources() {
    let r = req("GET", "/apis/apps/v1/namespaces/team/deployments/fk");
    assert_eq!(
        (r.verb.as_str(), r.group.as_str(), r.resource.as_str()),
        ("get", "apps", "deployments")
    );
    let r = req("GET", "/api/v1/namespaces/team/pods?labelSelector=a%3Db");
    assert_eq!(
        (r.verb.as_str(), r.group.as_str(), r.resource.as_str()),
        ("list", "", "pods")
    );
    let r = req("GET", "/apis/apps/v1/deployments?watch=true");
    assert_eq!(r.verb, "watch");
    let r = req(
        "PATCH",
        "/apis/facekey.dev/v1alpha1/namespaces/t/facekeydeployments/fk/status",
    );
    assert_eq!(r.resource, "facekeydeployments/status");
    assert!(request_of(&http::Method::GET, &"/apis".parse().unwrap()).is_none());
}

#[test]
fn the_manifest_is_least_privilege_as_it_says() {
    let rules = Rules::load();
    let allows = |m: &str, u: &str| rules.allows(&req(m, u));
    assert!(allows("PATCH", "/apis/apps/v1/namespaces/t/deployments/fk"));
    // Application Secrets: create only; its own certificate Secret by name in its namespace.
    assert!(allows("POST", "/api/v1/namespaces/t/secrets"));
    assert!(!allows("GET", "/api/v1/namespaces/t/secrets/db"));
    assert!(allows(
        "GET",
        "/api/v1/namespaces/facekey-system/secrets/facekey-webhook-tls"
    ));
    assert!(!allows(
        "GET",
        "/api/v1/namespaces/t/secrets/facekey-webhook-tls"
    ));
    assert!(!allows(
        "GET",
        "/api/v1/namespaces/facekey-system/secrets/other"
    ));
    // The template store's data is never pruned.
    assert!(!allows(
        "DELETE",
        "/api/v1/namespaces/t/persistentvolumeclaims/fk-data"
    ));
}
