//! The desired state of a FaceKeyDeployment: the objects it should own, computed without a client.
//!
//! [`compute`] turns a resource plus a few facts gathered by the reconciler ([`DesiredInputs`]:
//! which image may run, which optional CRDs exist) into the ordered list of objects to server-side
//! apply. The reconciler, `render` and the golden tests all go through this one function.

mod access;
pub(crate) mod capacity;
mod dashboard;
mod monitoring;
mod runtime;
pub(crate) use runtime::CONTAINER as RUNTIME_CONTAINER;
mod scan_job;
mod sidecar;
mod store;
mod webhook;

use std::collections::BTreeMap;

use facekey_crds::FaceKeyDeployment;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::core::ApiResource;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::Value;

pub use access::{
    ADMIN_KEY, API_KEYS_FILE, DEFAULT_MONITORING_NAMESPACE, GENERATED_API_KEY_ID, api_peers,
    metrics_peers,
};
pub use capacity::{parse_quantity, sessions_per_model, termination_grace_period_seconds};
pub use dashboard::dashboard_json;
pub use monitoring::{DEPLOYMENT_LABEL, RuntimeTargets, alert_rule_groups};
pub use runtime::{
    METRICS_PORT, MountedConfig, MountedConfigMap, RUNTIME_PORT, config_data, mounted_config_maps,
    mounts_config_map, runtime_env_for, runtime_env_keys, runtime_env_names,
};
pub use scan_job::{
    SCAN_JOB_DEADLINE_SECONDS, SCAN_JOB_TTL_SECONDS, SCAN_SUMMARY_CONTAINER, scan_job,
};
pub use sidecar::{
    SIDECAR_CONFIG_ANNOTATION, SIDECAR_CONTAINER, SIDECAR_IMAGE_ANNOTATION, SIDECAR_LABEL,
    SIDECAR_METRICS_PORT_NAME, SIDECAR_PORT_NAME, SidecarParts, VOLUME_PREFIX, sidecar_env,
    sidecar_parts,
};
pub use store::{GeneratedContent, GeneratedSecret, StoreState, TEMPLATE_KEY_FILE, store_state};
pub use webhook::{
    EXCLUDED_NAMESPACES, INJECTION_DISABLED, INJECTION_LABEL, WEBHOOK_NAME,
    WEBHOOK_TIMEOUT_SECONDS, WebhookTarget, match_expression, mutating_webhook_configuration,
};

use crate::error::{DesiredError, MissingField};
use crate::labels::{self, Component};

/// Result of the desired-state functions.
type Result<T, E = DesiredError> = std::result::Result<T, E>;

/// Kinds of child objects the operator applies and prunes, in apply order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChildKind {
    /// core/v1 ConfigMap (runtime configuration and the Grafana dashboard).
    ConfigMap,
    /// core/v1 PersistentVolumeClaim of the embedded template store (never pruned).
    PersistentVolumeClaim,
    /// postgresql.cnpg.io/v1 Cluster of the PostgreSQL template store (never pruned).
    PostgresCluster,
    /// networking.k8s.io/v1 NetworkPolicy admitting traffic to the runtime pods (applied before
    /// the Deployment, so no pod of it runs without its policy).
    NetworkPolicy,
    /// apps/v1 Deployment of the runtime pods.
    Deployment,
    /// core/v1 Service in front of the pods.
    Service,
    /// autoscaling/v2 HorizontalPodAutoscaler.
    HorizontalPodAutoscaler,
    /// policy/v1 PodDisruptionBudget.
    PodDisruptionBudget,
    /// monitoring.coreos.com/v1 ServiceMonitor.
    ServiceMonitor,
    /// monitoring.coreos.com/v1 PodMonitor of the injected sidecars.
    PodMonitor,
    /// monitoring.coreos.com/v1 PrometheusRule.
    PrometheusRule,
    /// monitoring.coreos.com/v1alpha1 AlertmanagerConfig.
    AlertmanagerConfig,
}

impl ChildKind {
    /// Every child kind, in apply order; the pruner walks the same list.
    pub const ALL: [ChildKind; 12] = [
        ChildKind::ConfigMap,
        ChildKind::PersistentVolumeClaim,
        ChildKind::PostgresCluster,
        ChildKind::NetworkPolicy,
        ChildKind::Deployment,
        ChildKind::Service,
        ChildKind::HorizontalPodAutoscaler,
        ChildKind::PodDisruptionBudget,
        ChildKind::ServiceMonitor,
        ChildKind::PodMonitor,
        ChildKind::PrometheusRule,
        ChildKind::AlertmanagerConfig,
    ];

    /// Group, version, kind and plural for dynamic API calls.
    pub fn api_resource(self) -> ApiResource {
        match self {
            ChildKind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
            ChildKind::PersistentVolumeClaim => ApiResource::erase::<PersistentVolumeClaim>(&()),
            ChildKind::PostgresCluster => store::cnpg_cluster_resource(),
            ChildKind::Deployment => ApiResource::erase::<Deployment>(&()),
            ChildKind::Service => ApiResource::erase::<Service>(&()),
            ChildKind::HorizontalPodAutoscaler => {
                ApiResource::erase::<HorizontalPodAutoscaler>(&())
            }
            ChildKind::PodDisruptionBudget => ApiResource::erase::<PodDisruptionBudget>(&()),
            ChildKind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
            ChildKind::ServiceMonitor => monitoring_resource("v1", "ServiceMonitor"),
            ChildKind::PodMonitor => monitoring_resource("v1", "PodMonitor"),
            ChildKind::PrometheusRule => monitoring_resource("v1", "PrometheusRule"),
            ChildKind::AlertmanagerConfig => monitoring_resource("v1alpha1", "AlertmanagerConfig"),
        }
    }

    /// The optional CRD this kind needs, if it is not built into Kubernetes.
    pub fn required_crd(self) -> Option<OptionalCrd> {
        match self {
            ChildKind::ServiceMonitor => Some(OptionalCrd::ServiceMonitor),
            ChildKind::PodMonitor => Some(OptionalCrd::PodMonitor),
            ChildKind::PrometheusRule => Some(OptionalCrd::PrometheusRule),
            ChildKind::AlertmanagerConfig => Some(OptionalCrd::AlertmanagerConfig),
            ChildKind::PostgresCluster => Some(OptionalCrd::CloudNativePgCluster),
            _ => None,
        }
    }

    /// Whether the pruner may delete objects of this kind once they are no longer desired.
    /// Not the template store's data: a PersistentVolumeClaim or database cluster left behind by
    /// a spec change keeps the enrolments until a human deletes it (or, with
    /// `store.retainOnDelete: false`, the FaceKeyDeployment goes, and the garbage collector with
    /// it). These kinds are never listed, so never pruned, whatever their owner references.
    pub fn prunable(self) -> bool {
        !matches!(
            self,
            ChildKind::PersistentVolumeClaim | ChildKind::PostgresCluster
        )
    }

    /// The kind name as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ChildKind::ConfigMap => "ConfigMap",
            ChildKind::PersistentVolumeClaim => "PersistentVolumeClaim",
            ChildKind::PostgresCluster => "Cluster",
            ChildKind::Deployment => "Deployment",
            ChildKind::Service => "Service",
            ChildKind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            ChildKind::PodDisruptionBudget => "PodDisruptionBudget",
            ChildKind::NetworkPolicy => "NetworkPolicy",
            ChildKind::ServiceMonitor => "ServiceMonitor",
            ChildKind::PodMonitor => "PodMonitor",
            ChildKind::PrometheusRule => "PrometheusRule",
            ChildKind::AlertmanagerConfig => "AlertmanagerConfig",
        }
    }
}

fn monitoring_resource(version: &str, kind: &str) -> ApiResource {
    ApiResource {
        group: "monitoring.coreos.com".to_owned(),
        version: version.to_owned(),
        api_version: format!("monitoring.coreos.com/{version}"),
        kind: kind.to_owned(),
        plural: format!("{}s", kind.to_lowercase()),
    }
}

/// CRDs that are not part of Kubernetes and may be missing from a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OptionalCrd {
    /// prometheus-operator ServiceMonitor.
    ServiceMonitor,
    /// prometheus-operator PodMonitor.
    PodMonitor,
    /// prometheus-operator PrometheusRule.
    PrometheusRule,
    /// prometheus-operator AlertmanagerConfig.
    AlertmanagerConfig,
    /// trivy-operator VulnerabilityReport.
    VulnerabilityReport,
    /// CloudNativePG Cluster.
    CloudNativePgCluster,
}

impl OptionalCrd {
    /// Every optional CRD.
    pub const ALL: [OptionalCrd; 6] = [
        OptionalCrd::ServiceMonitor,
        OptionalCrd::PodMonitor,
        OptionalCrd::PrometheusRule,
        OptionalCrd::AlertmanagerConfig,
        OptionalCrd::VulnerabilityReport,
        OptionalCrd::CloudNativePgCluster,
    ];

    /// The CustomResourceDefinition's name (`<plural>.<group>`).
    pub fn crd_name(self) -> &'static str {
        match self {
            OptionalCrd::ServiceMonitor => "servicemonitors.monitoring.coreos.com",
            OptionalCrd::PodMonitor => "podmonitors.monitoring.coreos.com",
            OptionalCrd::PrometheusRule => "prometheusrules.monitoring.coreos.com",
            OptionalCrd::AlertmanagerConfig => "alertmanagerconfigs.monitoring.coreos.com",
            OptionalCrd::VulnerabilityReport => "vulnerabilityreports.aquasecurity.github.io",
            OptionalCrd::CloudNativePgCluster => "clusters.postgresql.cnpg.io",
        }
    }
}

/// Which optional CRDs the cluster serves; monitoring objects whose CRD is missing are skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// CRDs found installed.
    pub installed: std::collections::BTreeSet<OptionalCrd>,
}

impl Capabilities {
    /// Every optional CRD present (what `render` assumes by default).
    pub fn all() -> Self {
        Self {
            installed: OptionalCrd::ALL.into_iter().collect(),
        }
    }

    /// No optional CRD present.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether `crd` is installed.
    pub fn has(&self, crd: OptionalCrd) -> bool {
        self.installed.contains(&crd)
    }
}

/// Facts the reconciler gathered that the pure desired-state computation needs.
#[derive(Clone, Debug)]
pub struct DesiredInputs<'a> {
    /// The resource being reconciled.
    pub fkd: &'a FaceKeyDeployment,
    /// Image the runtime Deployment may run: `spec.image` when the scan gate is open, the image
    /// already running while it is closed, `None` when nothing may run yet.
    pub runtime_image: Option<&'a str>,
    /// Optional CRDs present in the cluster.
    pub capabilities: &'a Capabilities,
    /// What the pods read of the user's ConfigMaps they mount, as observed; `None` when it was
    /// not read (`render`, which reads nothing from a cluster): the config hash then covers
    /// `<name>-config` alone, as it does for pods that mount none.
    pub mounted_config: Option<&'a MountedConfig>,
}

/// One object to server-side apply.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredObject {
    /// Its kind.
    pub kind: ChildKind,
    /// Its name (namespace is the owner's).
    pub name: String,
    /// The full object, including apiVersion, kind and metadata.
    pub body: Value,
}

/// An optional object left out of the desired state and why; it feeds the MonitoringReady condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The kind not applied.
    pub kind: ChildKind,
    /// Human-readable reason.
    pub reason: String,
}

/// The desired state of one resource.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    /// Objects to apply, in apply order.
    pub objects: Vec<DesiredObject>,
    /// Optional objects skipped because their CRD is missing.
    pub skipped: Vec<Skipped>,
    /// Label selector of the runtime pods (reported in status for `/scale`).
    pub selector: String,
    /// Where enrolments live (the `PersistentStore` condition).
    pub store: StoreState,
    /// Secrets to create once with generated content, before the objects are applied.
    pub generated_secrets: Vec<GeneratedSecret>,
}

impl Desired {
    /// The desired object of `kind` named `name`, if any.
    pub fn get(&self, kind: ChildKind, name: &str) -> Option<&DesiredObject> {
        self.objects
            .iter()
            .find(|o| o.kind == kind && o.name == name)
    }
}

/// Identity of the resource every desired object needs: name, namespace, owner reference.
#[derive(Clone, Debug)]
pub(crate) struct Owner<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub owner_ref: Option<OwnerReference>,
}

impl Owner<'_> {
    /// Metadata of a child: name, namespace, labels, controller owner reference.
    pub fn meta(&self, name: String, component: Component) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(labels::common_labels(self.name, component)),
            owner_references: self.owner_ref.clone().map(|r| vec![r]),
            ..ObjectMeta::default()
        }
    }
}

/// Compute the desired objects for `inputs`. Fails with `InvalidSpec` when validation fails.
pub fn compute(inputs: &DesiredInputs<'_>) -> Result<Desired> {
    let fkd = inputs.fkd;
    crate::validate::validate(&fkd.spec)?;
    let name = instance_name(fkd)?;
    crate::validate::validate_name(name)?;
    let namespace = fkd.namespace().unwrap_or_else(|| "default".to_owned());
    let owner = Owner {
        name,
        namespace: &namespace,
        // None without a uid (e.g. `render` of a file): the object is then printed unowned.
        owner_ref: fkd.controller_owner_ref(&()),
    };
    let spec = &fkd.spec;
    let mut desired = Desired {
        selector: labels::selector_string(&labels::selector_labels(name)),
        ..Desired::default()
    };
    let mut push = |kind: ChildKind, name: String, body: Value| {
        desired.objects.push(DesiredObject { kind, name, body });
    };

    let config = runtime::config_map(&owner, spec);
    let config_hash = config_hash(&config, inputs.mounted_config)?;
    push(
        ChildKind::ConfigMap,
        labels::config_map_name(name),
        to_value(&config)?,
    );
    if let Some(pvc) = store::data_claim(&owner, spec) {
        push(
            ChildKind::PersistentVolumeClaim,
            labels::data_claim_name(name),
            to_value(&pvc)?,
        );
    }
    let cnpg_installed = inputs.capabilities.has(OptionalCrd::CloudNativePgCluster);
    if let Some(cluster) = store::database_cluster(&owner, spec)
        && cnpg_installed
    {
        push(
            ChildKind::PostgresCluster,
            labels::database_cluster_name(name),
            cluster,
        );
    }
    // Before the Deployment: once the first reconcile is through, no runtime pod runs without it.
    if let Some(policy) = access::network_policy(&owner, spec) {
        push(
            ChildKind::NetworkPolicy,
            name.to_owned(),
            to_value(&policy)?,
        );
    }
    if let Some(image) = inputs.runtime_image {
        push(
            ChildKind::Deployment,
            name.to_owned(),
            to_value(&runtime::deployment(&owner, spec, image, &config_hash))?,
        );
    }
    push(
        ChildKind::Service,
        name.to_owned(),
        to_value(&runtime::service(&owner))?,
    );
    if inputs.runtime_image.is_some() {
        if let Some(hpa) = runtime::hpa(&owner, spec) {
            push(
                ChildKind::HorizontalPodAutoscaler,
                name.to_owned(),
                to_value(&hpa)?,
            );
        }
        if let Some(pdb) = runtime::pdb(&owner, spec) {
            push(
                ChildKind::PodDisruptionBudget,
                name.to_owned(),
                to_value(&pdb)?,
            );
        }
    }
    let monitoring = spec.monitoring.clone().unwrap_or_default();
    let dashboards = monitoring.dashboards.clone().unwrap_or_default();
    if dashboards.enabled {
        push(
            ChildKind::ConfigMap,
            labels::dashboard_name(name),
            to_value(&dashboard::dashboard_config_map(&owner, &dashboards)?)?,
        );
    }
    let mut optional = Vec::new();
    let sm = monitoring.service_monitor.clone().unwrap_or_default();
    if sm.enabled {
        optional.push((
            ChildKind::ServiceMonitor,
            monitoring::service_monitor(&owner, &sm)?,
        ));
        // Sidecars are scraped when monitoring is on and pods may ask for them.
        if spec.sidecar.as_ref().is_some_and(|s| s.enabled) {
            optional.push((ChildKind::PodMonitor, monitoring::pod_monitor(&owner, &sm)?));
        }
    }
    let rules = monitoring.rules.clone().unwrap_or_default();
    if rules.enabled {
        optional.push((
            ChildKind::PrometheusRule,
            monitoring::prometheus_rule(&owner, &rules, RuntimeTargets::of(spec))?,
        ));
    }
    if let Some(email) = spec.alerting.as_ref().and_then(|a| a.email.as_ref()) {
        optional.push((
            ChildKind::AlertmanagerConfig,
            monitoring::alertmanager_config(&owner, email)?,
        ));
    }
    for (kind, body) in optional {
        let Some(crd) = kind.required_crd() else {
            continue;
        };
        if inputs.capabilities.has(crd) {
            push(kind, name.to_owned(), body);
        } else {
            desired.skipped.push(Skipped {
                kind,
                reason: format!("CRD {} is not installed", crd.crd_name()),
            });
        }
    }
    desired.store = store::store_state(name, spec, cnpg_installed);
    if let Some(secret) = store::generated_template_key(&owner, spec) {
        desired.generated_secrets.push(GeneratedSecret {
            name: labels::template_key_secret_name(name),
            content: GeneratedContent::TemplateKey,
            key: TEMPLATE_KEY_FILE.to_owned(),
            body: to_value(&secret)?,
        });
    }
    if let Some(secret) = access::generated_api_keys(&owner, spec) {
        desired.generated_secrets.push(GeneratedSecret {
            name: labels::api_keys_secret_name(name),
            content: GeneratedContent::ApiKeys,
            key: API_KEYS_FILE.to_owned(),
            body: to_value(&secret)?,
        });
    }
    Ok(desired)
}

/// While a ConfigMap the pods mount (or the key they read of it) is missing, the desired pod
/// template keeps the live Deployment's config hash: the pods would roll onto ones that cannot
/// start (the volume is not optional), and an embedded store's `Recreate` would stop the one
/// that runs; the running pods read it at start-up and go on. The ids of the missing ones
/// ([`MountedConfigMap::id`]); the hash is held only when a live Deployment carries one.
pub fn hold_config_hash(
    desired: &mut Desired,
    live: Option<&Deployment>,
    mounted: &MountedConfig,
) -> Vec<String> {
    let missing: Vec<String> = mounted
        .0
        .iter()
        .filter(|(_, digest)| digest.is_none())
        .map(|(id, _)| id.clone())
        .collect();
    let held = live
        .and_then(|d| {
            d.spec
                .as_ref()?
                .template
                .metadata
                .as_ref()?
                .annotations
                .as_ref()
        })
        .and_then(|a| a.get(labels::CONFIG_HASH_ANNOTATION));
    if let (false, Some(held)) = (missing.is_empty(), held) {
        let pointer = format!(
            "/spec/template/metadata/annotations/{}",
            labels::CONFIG_HASH_ANNOTATION
                .replace('~', "~0")
                .replace('/', "~1")
        );
        for o in desired
            .objects
            .iter_mut()
            .filter(|o| o.kind == ChildKind::Deployment)
        {
            if let Some(slot) = o.body.pointer_mut(&pointer) {
                *slot = Value::String(held.clone());
            }
        }
    }
    missing
}

/// The pod template's config hash ([`labels::CONFIG_HASH_ANNOTATION`]): the `<name>-config`
/// data, and what the pods read of the user's ConfigMaps they mount (`mounted`), which they read
/// only at start-up. A change of either changes the pod template, so the pods roll. The
/// mounted part is left out when empty (or not read), so pods that mount none keep the hash
/// they had before it counted. Secrets are not in it: the operator cannot read them.
fn config_hash(config: &ConfigMap, mounted: Option<&MountedConfig>) -> Result<String> {
    let serialize = |source| DesiredError::Serialize {
        what: "runtime configuration".into(),
        source,
    };
    let mut text = serde_json::to_string(&config.data).map_err(serialize)?;
    if let Some(mounted) = mounted.filter(|m| !m.0.is_empty()) {
        text.push_str(&serde_json::to_string(&mounted.0).map_err(serialize)?);
    }
    Ok(labels::short_hash(text.as_bytes(), 16))
}

fn to_value<T: Serialize>(obj: &T) -> Result<Value> {
    serde_json::to_value(obj).map_err(|source| DesiredError::Serialize {
        what: std::any::type_name::<T>().to_owned(),
        source,
    })
}

/// User-supplied labels plus the operator's own; the operator's win so selectors and pruning hold.
pub(super) fn merged_labels(
    base: BTreeMap<String, String>,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = extra.clone();
    for (k, v) in base {
        out.insert(k, v);
    }
    out
}

/// `spec.imagePullSecrets` with each Secret once, in the order first listed: a pod's
/// `imagePullSecrets` is a list keyed by name, and a server-side apply body naming one twice is
/// refused, which would stop every later apply of the Deployment (a kustomize base and overlay
/// both adding one is enough).
pub fn pull_secrets(
    spec: &facekey_crds::FaceKeyDeploymentSpec,
) -> Vec<k8s_openapi::api::core::v1::LocalObjectReference> {
    let mut seen = std::collections::BTreeSet::new();
    spec.image_pull_secrets
        .iter()
        .filter(|s| seen.insert(s.name.clone()))
        .cloned()
        .collect()
}

/// Reads the FaceKeyDeployment name, for callers outside this module.
pub fn instance_name(fkd: &FaceKeyDeployment) -> Result<&str, MissingField> {
    fkd.meta().name.as_deref().ok_or(MissingField {
        kind: "FaceKeyDeployment",
        field: "metadata.name",
    })
}
