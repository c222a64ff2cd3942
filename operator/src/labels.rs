//! Object names and labels shared by the desired-state code, the pruner and the status writer, so the
//! selector the Deployment uses, the one the Service uses and the one `/scale` reports never drift.

use std::collections::BTreeMap;

/// `app.kubernetes.io/name` value of every object the operator creates.
pub const APP_NAME: &str = "facekey";
/// Label naming the FaceKeyDeployment that owns an object; the pruner lists by it.
pub const OWNER_LABEL: &str = "facekey.dev/owner";
/// The recommended label naming the instance (the FaceKeyDeployment); left off retained store
/// objects, which GitOps tools would otherwise claim (see `desired::store`).
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Label Grafana's dashboard sidecar (kube-prometheus-stack default) watches for.
pub const GRAFANA_DASHBOARD_LABEL: &str = "grafana_dashboard";
/// Annotation on the pod template carrying a hash of the runtime configuration; a change rolls pods.
pub const CONFIG_HASH_ANNOTATION: &str = "facekey.dev/config-hash";
/// Annotation on the template store's objects created without an owner reference (the claim, the
/// CloudNativePG `Cluster`, a generated template key): they are kept when the FaceKeyDeployment is
/// deleted. The value says why.
pub const RETAINED_ANNOTATION: &str = "facekey.dev/retained";
/// Annotation on scan Jobs recording the full image reference they scan.
pub const SCAN_IMAGE_ANNOTATION: &str = "facekey.dev/scan-image";
/// Annotation on scan Jobs: a hash of the pod template the operator wrote, so a template changed
/// after it was written (by an admission policy, or by hand) is told apart from one an earlier
/// operator version or scanner setting wrote.
pub const SCAN_TEMPLATE_ANNOTATION: &str = "facekey.dev/scan-template";

/// Role of an object within one deployment, used as `app.kubernetes.io/component`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// Runtime pods, their Deployment, Service, HPA, PDB and configuration.
    Runtime,
    /// ServiceMonitor, PrometheusRule, AlertmanagerConfig and the dashboard.
    Monitoring,
    /// Trivy scan Jobs.
    Scan,
    /// The CloudNativePG cluster of the template store.
    Database,
}

impl Component {
    fn as_str(self) -> &'static str {
        match self {
            Component::Runtime => "runtime",
            Component::Monitoring => "monitoring",
            Component::Scan => "scan",
            Component::Database => "database",
        }
    }
}

/// Labels selecting the runtime pods of `instance`; immutable once a Deployment exists.
pub fn selector_labels(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), APP_NAME.to_owned()),
        (INSTANCE_LABEL.to_owned(), instance.to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            Component::Runtime.as_str().to_owned(),
        ),
    ])
}

/// Labels put on every object the operator owns for `instance`.
pub fn common_labels(instance: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), APP_NAME.to_owned()),
        (INSTANCE_LABEL.to_owned(), instance.to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.as_str().to_owned(),
        ),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            crate::CONTROLLER_NAME.to_owned(),
        ),
        (OWNER_LABEL.to_owned(), instance.to_owned()),
    ])
}

/// Label selector string (`k=v,k=v`) for a label map, as `/scale` and list calls expect.
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether `labels` are the operator's labels for `instance` (managed by it, owner
/// `instance`): what makes a retained claim or CloudNativePG `Cluster` adoptable by a
/// FaceKeyDeployment of that name, when no owner reference says so.
pub fn labelled_for(labels: &BTreeMap<String, String>, instance: &str) -> bool {
    identity_labels(instance)
        .iter()
        .all(|(k, v)| labels.get(*k) == Some(v))
}

/// The labels that say an object is the operator's for `instance` (a subset of
/// [`common_labels`]): `app.kubernetes.io/managed-by` and [`OWNER_LABEL`]. Not
/// `app.kubernetes.io/instance`, which retained objects do not carry (older releases put it on
/// them too; they still match).
pub fn identity_labels(instance: &str) -> [(&'static str, String); 2] {
    [
        (
            "app.kubernetes.io/managed-by",
            crate::CONTROLLER_NAME.to_owned(),
        ),
        (OWNER_LABEL, instance.to_owned()),
    ]
}

/// Label selector matching every object owned by `instance`, used by the pruner.
pub fn owned_selector(instance: &str) -> String {
    format!(
        "app.kubernetes.io/managed-by={},{OWNER_LABEL}={instance}",
        crate::CONTROLLER_NAME
    )
}

/// Name of the runtime configuration ConfigMap.
pub fn config_map_name(instance: &str) -> String {
    format!("{instance}-config")
}

/// Name of the Grafana dashboard ConfigMap.
pub fn dashboard_name(instance: &str) -> String {
    format!("{instance}-dashboard")
}

/// Name of the embedded store's PersistentVolumeClaim.
pub fn data_claim_name(instance: &str) -> String {
    format!("{instance}-data")
}

/// Name of the CloudNativePG `Cluster` of `store.postgres.cloudNativePG`.
pub fn database_cluster_name(instance: &str) -> String {
    format!("{instance}-db")
}

/// Name of the Secret CloudNativePG generates for a cluster's application user (key `uri`).
pub fn database_app_secret_name(instance: &str) -> String {
    format!("{}-app", database_cluster_name(instance))
}

/// Name of the Secret CloudNativePG generates with the CA of a cluster's server certificates
/// (key `ca.crt`).
pub fn database_ca_secret_name(instance: &str) -> String {
    format!("{}-ca", database_cluster_name(instance))
}

/// Name of the template-key Secret the operator generates when `store.templateKeySecretRef` is
/// not given for a PostgreSQL store.
pub fn template_key_secret_name(instance: &str) -> String {
    format!("{instance}-template-key")
}

/// Name of the API keys Secret the operator generates when `auth.keysSecretRef` is not given.
pub fn api_keys_secret_name(instance: &str) -> String {
    format!("{instance}-api-keys")
}

/// Short, stable hex digest (first `len` hex chars of SHA-256) used in names and annotations.
pub fn short_hash(input: &[u8], len: usize) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(input);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..len.min(hex.len())].to_owned()
}

/// Name of the scan Job for `image`: `<instance>-scan-<hash>`, trimmed to the 63-char label limit.
pub fn scan_job_name(instance: &str, image: &str) -> String {
    let hash = short_hash(image.as_bytes(), 10);
    let max_prefix = 63 - "-scan-".len() - hash.len();
    let prefix: String = instance.chars().take(max_prefix).collect();
    format!("{}-scan-{hash}", prefix.trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_job_names_fit_the_label_limit_and_differ_by_image() {
        let long = "a".repeat(80);
        let a = scan_job_name(&long, "img:1");
        let b = scan_job_name(&long, "img:2");
        assert!(a.len() <= 63, "{a}");
        assert_ne!(a, b);
        assert_eq!(scan_job_name("fk", "img:1"), scan_job_name("fk", "img:1"));
    }

    #[test]
    fn selector_string_is_sorted_and_comma_joined() {
        assert_eq!(
            selector_string(&selector_labels("fk")),
            "app.kubernetes.io/component=runtime,app.kubernetes.io/instance=fk,app.kubernetes.io/name=facekey"
        );
    }
}
