//! API access control (`spec.auth`, `spec.networkPolicy`): where the runtime's API keys come from,
//! and the NetworkPolicy admitting traffic to its two ports.
//!
//! The keys file is a Secret key mounted as a file (`FACEKEY_API_KEYS_FILE`), through a directory
//! mount (never `subPath`) so the kubelet's in-place Secret updates reach the runtime, which
//! re-reads the file. It is `auth.keysSecretRef`, or the Secret `<name>-api-keys` the reconciler
//! creates once ([`super::GeneratedSecret`]) with one `admin` key: its line under `api-keys` (the
//! only key mounted into the pods) and the key itself under `admin-key`, for an admin to read
//! with `kubectl`. The key never passes through the desired state, status, Events or logs.

use std::collections::BTreeMap;

use facekey_crds::{FaceKeyDeploymentSpec, KeyRef, MetricsAuth, NetworkPeer, NetworkPolicySpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec as K8sNetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Owner;
use super::runtime::{METRICS_PORT, RUNTIME_PORT};
use crate::labels::{self, Component};

/// Directory the API keys file is mounted in.
pub(super) const API_KEYS_DIR: &str = "/etc/facekey/api-keys";
/// File name of the keys file inside [`API_KEYS_DIR`], and the data key of the generated Secret.
pub const API_KEYS_FILE: &str = facekey_crds::API_KEYS_KEY;
/// Data key of the generated Secret holding the admin key itself (never mounted into pods).
pub const ADMIN_KEY: &str = "admin-key";
/// Key id and scope of the generated key.
pub const GENERATED_API_KEY_ID: &str = "admin";
/// Namespace whose pods may scrape the metrics port when `networkPolicy.metricsFrom` is empty
/// (kube-prometheus-stack's usual namespace; the spec names no monitoring namespace).
pub const DEFAULT_MONITORING_NAMESPACE: &str = "monitoring";
/// The label every namespace carries with its own name (Kubernetes >= 1.22).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The Secret key holding the API keys file: the user's, or the generated one.
pub(super) fn api_keys_ref(instance: &str, spec: &FaceKeyDeploymentSpec) -> KeyRef {
    match spec.auth.as_ref().and_then(|a| a.keys_secret_ref.as_ref()) {
        Some(r) => KeyRef {
            name: r.name.clone(),
            key: r.key.clone(),
        },
        None => KeyRef {
            name: labels::api_keys_secret_name(instance),
            key: API_KEYS_FILE.to_owned(),
        },
    }
}

/// `FACEKEY_METRICS_AUTH` for the spec (`open` unless `auth.metrics: key`).
pub(super) fn metrics_auth(spec: &FaceKeyDeploymentSpec) -> MetricsAuth {
    spec.auth.as_ref().map(|a| a.metrics).unwrap_or_default()
}

/// The API keys Secret to generate when `auth.keysSecretRef` is not given: metadata only (the
/// reconciler fills in the key). Owned by the FaceKeyDeployment so it goes with it, unless the
/// enrolments outlive the resource ([`super::store::data_outlives`]): then it is kept with
/// them, so a resource deleted and recreated from Git finds its applications' keys (and the
/// key ids its subjects record) as they were, instead of a new admin key that answers every
/// client 401.
pub(super) fn generated_api_keys(
    owner: &Owner<'_>,
    spec: &FaceKeyDeploymentSpec,
) -> Option<Secret> {
    if spec
        .auth
        .as_ref()
        .is_some_and(|a| a.keys_secret_ref.is_some())
    {
        return None;
    }
    let mut metadata = owner.meta(labels::api_keys_secret_name(owner.name), Component::Runtime);
    if super::store::data_outlives(spec) {
        super::store::retain(
            &mut metadata,
            "the API keys of a store that outlives the FaceKeyDeployment: kept when it is \
             deleted, with the enrolments",
        );
    }
    Some(Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    })
}

fn peer(p: &NetworkPeer) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: p.namespace_selector.clone(),
        pod_selector: p.pod_selector.clone(),
        ..NetworkPolicyPeer::default()
    }
}

fn tcp(port: i32) -> Vec<NetworkPolicyPort> {
    vec![NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_owned()),
        ..NetworkPolicyPort::default()
    }]
}

/// The peers admitted to the API port: `apiFrom`, or every pod of the resource's namespace.
pub fn api_peers(np: &NetworkPolicySpec) -> Vec<NetworkPolicyPeer> {
    if np.api_from.is_empty() {
        // A podSelector alone (here: every pod) means pods of the policy's own namespace.
        return vec![NetworkPolicyPeer {
            pod_selector: Some(LabelSelector::default()),
            ..NetworkPolicyPeer::default()
        }];
    }
    np.api_from.iter().map(peer).collect()
}

/// The peers admitted to the metrics port: `metricsFrom`, or every pod of the namespace
/// [`DEFAULT_MONITORING_NAMESPACE`].
pub fn metrics_peers(np: &NetworkPolicySpec) -> Vec<NetworkPolicyPeer> {
    if np.metrics_from.is_empty() {
        return vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    NAMESPACE_NAME_LABEL.to_owned(),
                    DEFAULT_MONITORING_NAMESPACE.to_owned(),
                )])),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        }];
    }
    np.metrics_from.iter().map(peer).collect()
}

/// The NetworkPolicy `<name>` (ingress only) selecting the runtime pods: the API port admits
/// [`api_peers`], the metrics port [`metrics_peers`]; any other ingress is denied once it
/// selects the pods. `None` when `networkPolicy.enabled` is false.
pub(super) fn network_policy(
    owner: &Owner<'_>,
    spec: &FaceKeyDeploymentSpec,
) -> Option<NetworkPolicy> {
    let np = spec.network_policy.clone().unwrap_or_default();
    if !np.enabled {
        return None;
    }
    Some(NetworkPolicy {
        metadata: owner.meta(owner.name.to_owned(), Component::Runtime),
        spec: Some(K8sNetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels::selector_labels(owner.name)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(api_peers(&np)),
                    ports: Some(tcp(RUNTIME_PORT)),
                },
                NetworkPolicyIngressRule {
                    from: Some(metrics_peers(&np)),
                    ports: Some(tcp(METRICS_PORT)),
                },
            ]),
            ..K8sNetworkPolicySpec::default()
        }),
    })
}
