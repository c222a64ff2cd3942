//! The runtime's own objects: configuration ConfigMap, Deployment (with the pod overrides of
//! `spec.pod`), Service, HPA and PDB.
//!
//! Every `FACEKEY_*` name written into the pods and the runtime's port come from the runtime's
//! settings catalogue (`facekey-settings`), so the operator writes only names the runtime reads.

use std::collections::BTreeMap;

use facekey_crds::{FaceKeyDeploymentSpec, ModelSource, Verification};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapEnvSource, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecretVolumeSource, Service,
    ServicePort, ServiceSpec, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use facekey_settings::{defaults, env};

use super::{Owner, access, capacity, store};
use crate::labels::{self, Component};

/// TCP port of the runtime's API (`/v1` with keys; `/healthz`, `/readyz`, and `/metrics` as
/// `auth.metrics` says), as the `i32` Kubernetes port fields take.
pub const RUNTIME_PORT: i32 = defaults::PORT as i32;
/// TCP port of the runtime's second listener (`FACEKEY_METRICS_LISTEN`): only `/healthz`,
/// `/readyz` and `/metrics`, without keys. Probes and the ServiceMonitor use it.
pub const METRICS_PORT: i32 = 9090;
/// Name of the runtime container and its ports.
pub(crate) const CONTAINER: &str = "runtime";
const PORT_NAME: &str = "http";
const METRICS_PORT_NAME: &str = "metrics";
/// Non-root UID/GID the runtime runs as (distroless `nonroot`).
pub(super) const RUN_AS: i64 = 65532;
const CONFIG_DIR: &str = "/etc/facekey/config";
const WEIGHTS_DIR: &str = "/etc/facekey/weights";
const SPOOF_MODEL_DIR: &str = "/etc/facekey/models/spoof";
const DATA_DIR: &str = "/var/lib/facekey";
/// Directory and file of the SMTP server's private CA (`alerting.email.caSecretRef`).
const SMTP_CA_DIR: &str = "/etc/facekey/smtp-ca";
const SMTP_CA_FILE: &str = "ca.crt";
pub(super) const WEIGHTS_FILE: &str = "weights.json";

/// Every runtime environment variable the operator can write into runtime pods: the keys of the
/// `<name>-config` ConfigMap (through `envFrom`) and [`SECRET_ENV`] (through `valueFrom`).
const RUNTIME_ENV: &[&str] = &[
    env::LISTEN,
    env::LOG_FORMAT,
    env::DATA_DIR,
    env::UI_ENABLED,
    env::THRESHOLD,
    env::LIVENESS_THRESHOLD,
    env::MATCH_THRESHOLD,
    env::WEIGHTS,
    env::SPOOF_MODEL_DIR,
    env::SMTP_SMARTHOST,
    env::SMTP_TLS,
    env::SMTP_USERNAME,
    env::SMTP_CA_FILE,
    env::ALERT_FROM,
    env::ALERT_TO,
    env::DATABASE_URL_FILE,
    env::DATABASE_CA_FILE,
    env::TEMPLATE_KEY_FILE,
    env::API_KEYS_FILE,
    env::METRICS_LISTEN,
    env::METRICS_AUTH,
    env::SESSIONS_PER_MODEL,
    env::MAX_INFLIGHT,
    env::SHUTDOWN_DELAY_SECS,
    env::MAX_SUBJECTS,
    env::MAX_TEMPLATES,
    env::MAX_SUBJECTS_PER_KEY,
    env::MAX_TEMPLATES_PER_KEY,
    env::MAX_FACES_PER_SUBJECT,
    env::REQUIRE_SESSION,
    env::DECISION_POLICY,
    env::SESSION_TTL_SECS,
    env::SESSION_MAX_FRAMES,
    env::MAX_SESSIONS,
    env::MAX_SESSIONS_PER_KEY,
    env::LOCKOUT_ATTEMPTS,
    env::LOCKOUT_WINDOW_SECS,
    env::LOCKOUT_SECS,
    env::LOCKOUT_MAX_SECS,
    env::ENROL_LIVENESS,
    env::ENROL_MIN_QUALITY,
    env::SMTP_PASSWORD,
];

/// Every runtime environment variable name the operator can write into runtime pods, whatever
/// the spec: its own and those `spec.settings` may set ([`facekey_crds::RUNTIME_SETTINGS`]).
/// Each is one of `facekey_settings::env::ALL`.
pub fn runtime_env_names() -> Vec<&'static str> {
    RUNTIME_ENV
        .iter()
        .chain(facekey_crds::RUNTIME_SETTINGS)
        .copied()
        .collect()
}

/// Runtime configuration as `FACEKEY_*` variables (plus inline weights), the data of the
/// `<name>-config` ConfigMap. Kept deterministic (sorted) so its hash only changes with content.
pub fn config_data(spec: &FaceKeyDeploymentSpec) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        data.insert(k.to_owned(), v);
    };
    set(env::LISTEN, format!("[::]:{}", defaults::PORT));
    set(env::METRICS_LISTEN, format!("[::]:{METRICS_PORT}"));
    set(
        env::METRICS_AUTH,
        access::metrics_auth(spec).as_str().to_owned(),
    );
    // Always a keys file: the operator's generated admin key, or the user's Secret.
    set(
        env::API_KEYS_FILE,
        format!("{}/{}", access::API_KEYS_DIR, access::API_KEYS_FILE),
    );
    set(env::LOG_FORMAT, "json".to_owned());
    set(env::DATA_DIR, DATA_DIR.to_owned());
    // Sized to the container, not to the node's cores the runtime would otherwise see.
    for (name, value) in capacity_env(&runtime_resources(spec), spec) {
        set(name, value);
    }
    if let Some(store) = &spec.store {
        if let Some(n) = store.max_subjects {
            set(env::MAX_SUBJECTS, n.to_string());
        }
        if let Some(n) = store.max_templates {
            set(env::MAX_TEMPLATES, n.to_string());
        }
        if let Some(n) = store.max_subjects_per_key {
            set(env::MAX_SUBJECTS_PER_KEY, n.to_string());
        }
        if let Some(n) = store.max_templates_per_key {
            set(env::MAX_TEMPLATES_PER_KEY, n.to_string());
        }
        if let Some(n) = store.max_faces_per_subject {
            set(env::MAX_FACES_PER_SUBJECT, n.to_string());
        }
    }
    if let Some(v) = &spec.verification {
        verification_env(v, &mut set);
    }
    // Behind the Service: keep serving while the endpoints catch up with a terminating pod.
    set(
        env::SHUTDOWN_DELAY_SECS,
        capacity::SHUTDOWN_DELAY_SECS.to_string(),
    );
    let ui = spec.ui.as_ref().is_none_or(|u| u.enabled);
    set(env::UI_ENABLED, ui.to_string());
    if let Some(models) = &spec.models {
        if let Some(t) = &models.thresholds {
            if let Some(v) = t.auth {
                set(env::THRESHOLD, v.to_string());
            }
            if let Some(v) = t.spoof {
                set(env::LIVENESS_THRESHOLD, v.to_string());
            }
            if let Some(v) = t.match_ {
                set(env::MATCH_THRESHOLD, v.to_string());
            }
        }
        if let Some(w) = &models.score_weights {
            if let Some(inline) = &w.inline {
                set(WEIGHTS_FILE, inline.clone());
                set(env::WEIGHTS, format!("{CONFIG_DIR}/{WEIGHTS_FILE}"));
            } else if w.config_map_key_ref.is_some() {
                set(env::WEIGHTS, format!("{WEIGHTS_DIR}/{WEIGHTS_FILE}"));
            }
        }
        // A mounted model directory; `uri` is refused by validation (never downloaded).
        if let Some(
            ModelSource {
                config_map: Some(_),
                ..
            }
            | ModelSource { pvc: Some(_), .. },
        ) = &models.spoof
        {
            set(env::SPOOF_MODEL_DIR, SPOOF_MODEL_DIR.to_owned());
        }
    }
    if let Some(email) = spec.alerting.as_ref().and_then(|a| a.email.as_ref()) {
        // The runtime's own spoof-alert emails (its flags: --smtp-smarthost, --smtp-tls, ...).
        set(env::SMTP_SMARTHOST, email.smarthost.clone());
        let tls = match (email.require_tls, email.smarthost.rsplit_once(':')) {
            (false, _) => "none",
            (true, Some((_, "465"))) => "tls",
            (true, _) => "starttls",
        };
        set(env::SMTP_TLS, tls.to_owned());
        // A user name only with a password (the runtime refuses credentials without TLS, as
        // the CRD refuses authSecretRef without requireTls).
        if email.auth_secret_ref.is_some() {
            set(
                env::SMTP_USERNAME,
                email
                    .auth_username
                    .clone()
                    .unwrap_or_else(|| email.from.clone()),
            );
        }
        if email.ca_secret_ref.is_some() {
            set(env::SMTP_CA_FILE, format!("{SMTP_CA_DIR}/{SMTP_CA_FILE}"));
        }
        set(env::ALERT_FROM, email.from.clone());
        set(env::ALERT_TO, email.to.clone());
    }
    // The spec's own fields win: validation refuses a settings name that a field sets.
    for (field, value) in &spec.settings {
        if let Some(name) = facekey_crds::setting_env_name(field) {
            set(name, value.clone());
        }
    }
    // Secrets are files: only their paths are configuration (the values never reach the
    // ConfigMap). Which Secret backs them does not matter here, so no instance name is needed.
    if store::is_postgres(spec) {
        set(
            env::DATABASE_URL_FILE,
            format!("{}/{}", store::DATABASE_DIR, store::DATABASE_URL_FILE),
        );
    }
    if store::has_database_ca(spec) {
        set(
            env::DATABASE_CA_FILE,
            format!("{}/{}", store::DATABASE_CA_DIR, store::DATABASE_CA_FILE),
        );
    }
    if store::has_template_key_file(spec) {
        set(
            env::TEMPLATE_KEY_FILE,
            format!("{}/{}", store::TEMPLATE_KEY_DIR, store::TEMPLATE_KEY_FILE),
        );
    }
    data
}

/// `spec.verification` as runtime variables; omitted fields keep the runtime's defaults.
fn verification_env(v: &Verification, set: &mut impl FnMut(&str, String)) {
    let switch = |on: bool| if on { "on" } else { "off" }.to_owned();
    if let Some(on) = v.require_session {
        set(env::REQUIRE_SESSION, switch(on));
    }
    if let Some(policy) = v.decision_policy {
        set(env::DECISION_POLICY, policy.as_str().to_owned());
    }
    if let Some(s) = &v.sessions {
        for (name, value) in [
            (env::SESSION_TTL_SECS, s.ttl_seconds),
            (env::SESSION_MAX_FRAMES, s.max_frames),
            (env::MAX_SESSIONS, s.max_open),
            (env::MAX_SESSIONS_PER_KEY, s.max_open_per_key),
        ] {
            if let Some(n) = value {
                set(name, n.to_string());
            }
        }
    }
    if let Some(l) = &v.lockout {
        for (name, value) in [
            (env::LOCKOUT_ATTEMPTS, l.attempts),
            (env::LOCKOUT_WINDOW_SECS, l.window_seconds),
            (env::LOCKOUT_SECS, l.duration_seconds),
            (env::LOCKOUT_MAX_SECS, l.max_duration_seconds),
        ] {
            if let Some(n) = value {
                set(name, n.to_string());
            }
        }
    }
    if let Some(e) = &v.enrolment {
        if let Some(on) = e.liveness {
            set(env::ENROL_LIVENESS, switch(on));
        }
        if let Some(q) = e.min_quality {
            set(env::ENROL_MIN_QUALITY, q.to_string());
        }
    }
}

/// Resources of the runtime container: `spec.resources`, else [`default_resources`].
pub(super) fn runtime_resources(spec: &FaceKeyDeploymentSpec) -> ResourceRequirements {
    spec.resources.clone().unwrap_or_else(default_resources)
}

/// `FACEKEY_SESSIONS_PER_MODEL` and `FACEKEY_MAX_INFLIGHT` for a container with `resources`
/// holding `spec`'s templates (one in-flight inference per session); none when the resources
/// name neither CPU nor memory.
pub(super) fn capacity_env(
    resources: &ResourceRequirements,
    spec: &FaceKeyDeploymentSpec,
) -> Vec<(&'static str, String)> {
    let templates = spec
        .store
        .as_ref()
        .and_then(|s| s.max_templates)
        .map_or(defaults::MAX_TEMPLATES as u64, u64::from);
    capacity::sessions_per_model(resources, templates)
        .map(|n| {
            vec![
                (env::SESSIONS_PER_MODEL, n.to_string()),
                (env::MAX_INFLIGHT, n.to_string()),
            ]
        })
        .unwrap_or_default()
}

/// Names of the environment variables the ConfigMap sets (everything but the weights file).
pub fn runtime_env_keys(spec: &FaceKeyDeploymentSpec) -> Vec<String> {
    config_data(spec)
        .into_keys()
        .filter(|k| k.as_str() != WEIGHTS_FILE)
        .collect()
}

/// Variables taken from Secrets (`valueFrom`), never written into the ConfigMap: the SMTP
/// password when email alerting names one.
pub(super) fn secret_env(spec: &FaceKeyDeploymentSpec) -> Vec<EnvVar> {
    let Some(secret) = spec
        .alerting
        .as_ref()
        .and_then(|a| a.email.as_ref())
        .and_then(|e| e.auth_secret_ref.as_ref())
    else {
        return Vec::new();
    };
    vec![EnvVar {
        name: env::SMTP_PASSWORD.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }]
}

/// Names of every environment variable the runtime pods get for `spec`: the ConfigMap's keys
/// ([`runtime_env_keys`]) and those taken from Secrets (`FACEKEY_SMTP_PASSWORD`), sorted.
pub fn runtime_env_for(spec: &FaceKeyDeploymentSpec) -> Vec<String> {
    let mut names = runtime_env_keys(spec);
    names.extend(secret_env(spec).into_iter().map(|e| e.name));
    names.sort();
    names
}

pub(super) fn config_map(owner: &Owner<'_>, spec: &FaceKeyDeploymentSpec) -> ConfigMap {
    ConfigMap {
        metadata: owner.meta(labels::config_map_name(owner.name), Component::Runtime),
        data: Some(config_data(spec)),
        ..ConfigMap::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            // The metrics listener: no key needed, and it answers while the API port is busy.
            port: IntOrString::String(METRICS_PORT_NAME.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

pub(super) fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("500m".to_owned())),
            ("memory".to_owned(), Quantity("512Mi".to_owned())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity("1Gi".to_owned()),
        )])),
        ..ResourceRequirements::default()
    }
}

/// An `emptyDir` volume with a size limit (the runtime's data and /tmp, the scan Job's scratch).
pub(super) fn empty_dir(name: &str, limit: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(limit.to_owned())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// Read-only permissions of mounted Secret files: owner and group (the kubelet gives the group to
/// the pod's `fsGroup`, the runtime's group), nobody else.
const SECRET_FILE_MODE: i32 = 0o440;

/// A volume with one key of a Secret as the file `file` (never an environment value, so it
/// stays out of `kubectl describe` and process listings).
fn secret_file(volume: &str, r: &facekey_crds::KeyRef, file: &str) -> Volume {
    Volume {
        name: volume.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(r.name.clone()),
            items: Some(vec![KeyToPath {
                key: r.key.clone(),
                path: file.to_owned(),
                ..KeyToPath::default()
            }]),
            default_mode: Some(SECRET_FILE_MODE),
            optional: Some(false),
        }),
        ..Volume::default()
    }
}

/// A ConfigMap of the user's that the runtime pods mount and read only at start-up: the score
/// weights (`spec.models.scoreWeights.configMapKeyRef`) and the spoof model directory
/// (`spec.models.spoof.configMap`). A change of its content reaches no running pod, so what the
/// pods read of it is part of the pod template's config hash ([`MountedConfig`]): a change rolls
/// the pods, and every replica runs the same weights and model.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MountedConfigMap {
    /// The volume it is mounted as (`weights`, `spoof-model`).
    pub volume: &'static str,
    /// Its name, in the resource's namespace.
    pub name: String,
    /// The one key the pods read (the weights file), or `None`: every key (a directory).
    pub key: Option<String>,
}

impl MountedConfigMap {
    /// A digest of what the pods read of `config_map` (the key's value, or every key of `data`
    /// and `binaryData`); `None` when it is missing (no ConfigMap, or not that key), a value of
    /// its own: the pods cannot start without it, and its return rolls them.
    pub fn digest(&self, config_map: Option<&ConfigMap>) -> Option<String> {
        use sha2::{Digest, Sha256};
        let cm = config_map?;
        let (data, binary) = (cm.data.as_ref(), cm.binary_data.as_ref());
        let read = match &self.key {
            Some(key) => serde_json::json!({
                "data": data.and_then(|d| d.get(key)),
                "binaryData": binary.and_then(|b| b.get(key)),
            }),
            None => serde_json::json!({"data": data, "binaryData": binary}),
        };
        if self.key.is_some() && read["data"].is_null() && read["binaryData"].is_null() {
            return None;
        }
        let digest = Sha256::digest(read.to_string().as_bytes());
        Some(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// How [`MountedConfig`] names it: `<volume>:<name>` and `/<key>` when one key is read.
    pub fn id(&self) -> String {
        match &self.key {
            Some(key) => format!("{}:{}/{key}", self.volume, self.name),
            None => format!("{}:{}", self.volume, self.name),
        }
    }
}

/// The ConfigMaps of the user's that the runtime pods of `spec` mount ([`MountedConfigMap`]).
pub fn mounted_config_maps(spec: &FaceKeyDeploymentSpec) -> Vec<MountedConfigMap> {
    let models = spec.models.as_ref();
    let weights = models
        .and_then(|m| m.score_weights.as_ref())
        .and_then(|w| w.config_map_key_ref.as_ref())
        .map(|r| MountedConfigMap {
            volume: "weights",
            name: r.name.clone(),
            key: Some(r.key.clone()),
        });
    let spoof = models
        .and_then(|m| m.spoof.as_ref())
        .and_then(|s| s.config_map.clone())
        .map(|name| MountedConfigMap {
            volume: "spoof-model",
            name,
            key: None,
        });
    weights.into_iter().chain(spoof).collect()
}

/// Whether the runtime pods of `spec` mount the ConfigMap `name` ([`mounted_config_maps`]).
pub fn mounts_config_map(spec: &FaceKeyDeploymentSpec, name: &str) -> bool {
    mounted_config_maps(spec).iter().any(|m| m.name == name)
}

/// What the runtime pods read of the ConfigMaps they mount ([`mounted_config_maps`]), as the
/// observe stage found it: [`MountedConfigMap::digest`] by [`MountedConfigMap::id`]. Part of
/// the config hash; empty when the pods mount none, which leaves the hash as it was before
/// these ConfigMaps counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountedConfig(pub BTreeMap<String, Option<String>>);

/// Volumes and mounts: configuration, optional weights/spoof model, data and /tmp.
pub(super) fn volumes(
    owner: &Owner<'_>,
    spec: &FaceKeyDeploymentSpec,
) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = vec![Volume {
        name: "config".to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: labels::config_map_name(owner.name),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut mounts = vec![mount("config", CONFIG_DIR)];
    let models = spec.models.as_ref();
    if let Some(r) = models
        .and_then(|m| m.score_weights.as_ref())
        .and_then(|w| w.config_map_key_ref.as_ref())
    {
        volumes.push(Volume {
            name: "weights".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: r.name.clone(),
                items: Some(vec![KeyToPath {
                    key: r.key.clone(),
                    path: WEIGHTS_FILE.to_owned(),
                    ..KeyToPath::default()
                }]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(mount("weights", WEIGHTS_DIR));
    }
    match models.and_then(|m| m.spoof.as_ref()) {
        Some(ModelSource {
            config_map: Some(cm),
            ..
        }) => {
            volumes.push(Volume {
                name: "spoof-model".to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: cm.clone(),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            });
            mounts.push(mount("spoof-model", SPOOF_MODEL_DIR));
        }
        Some(ModelSource { pvc: Some(pvc), .. }) => {
            volumes.push(Volume {
                name: "spoof-model".to_owned(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: pvc.clone(),
                    read_only: Some(true),
                }),
                ..Volume::default()
            });
            mounts.push(mount("spoof-model", SPOOF_MODEL_DIR));
        }
        _ => {}
    }
    for (volume, secret, dir, file) in [
        (
            "database-url",
            store::database_url_ref(owner.name, spec),
            store::DATABASE_DIR,
            store::DATABASE_URL_FILE,
        ),
        (
            "database-ca",
            store::database_ca_ref(owner.name, spec),
            store::DATABASE_CA_DIR,
            store::DATABASE_CA_FILE,
        ),
        (
            "template-key",
            store::template_key_ref(owner.name, spec),
            store::TEMPLATE_KEY_DIR,
            store::TEMPLATE_KEY_FILE,
        ),
        // Only the keys-file key is projected (never the generated Secret's `admin-key`), into
        // a directory mount, so Secret updates reach the running pods.
        (
            "api-keys",
            Some(access::api_keys_ref(owner.name, spec)),
            access::API_KEYS_DIR,
            access::API_KEYS_FILE,
        ),
        (
            "smtp-ca",
            spec.alerting
                .as_ref()
                .and_then(|a| a.email.as_ref())
                .and_then(|e| e.ca_secret_ref.clone()),
            SMTP_CA_DIR,
            SMTP_CA_FILE,
        ),
    ] {
        if let Some(r) = secret {
            volumes.push(secret_file(volume, &r, file));
            mounts.push(mount(volume, dir));
        }
    }
    if store::is_embedded(spec) {
        volumes.push(Volume {
            name: "data".to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: labels::data_claim_name(owner.name),
                read_only: None,
            }),
            ..Volume::default()
        });
    } else {
        volumes.push(empty_dir("data", "1Gi"));
    }
    mounts.push(VolumeMount {
        read_only: None,
        ..mount("data", DATA_DIR)
    });
    volumes.push(empty_dir("tmp", "256Mi"));
    mounts.push(VolumeMount {
        read_only: None,
        ..mount("tmp", "/tmp")
    });
    (volumes, mounts)
}

pub(super) fn deployment(
    owner: &Owner<'_>,
    spec: &FaceKeyDeploymentSpec,
    image: &str,
    config_hash: &str,
) -> Deployment {
    let selector = labels::selector_labels(owner.name);
    let pod = spec.pod.clone().unwrap_or_default();
    let node_selector = node_selector(&pod);
    let service_account = service_account_name(&pod);
    // The user's labels and annotations first, the operator's over them (validation refuses the
    // operator's keys; this keeps the selector intact even where validation was skipped).
    let mut pod_labels = pod.labels.clone();
    pod_labels.extend(labels::common_labels(owner.name, Component::Runtime));
    pod_labels.extend(selector.clone());
    let mut pod_annotations = pod.annotations.clone();
    pod_annotations.insert(
        labels::CONFIG_HASH_ANNOTATION.to_owned(),
        config_hash.to_owned(),
    );
    let (volumes, volume_mounts) = volumes(owner, spec);
    let env = Some(secret_env(spec)).filter(|e| !e.is_empty());
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        ports: Some(vec![
            ContainerPort {
                name: Some(PORT_NAME.to_owned()),
                container_port: RUNTIME_PORT,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some(METRICS_PORT_NAME.to_owned()),
                container_port: METRICS_PORT,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: labels::config_map_name(owner.name),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        env,
        resources: Some(runtime_resources(spec)),
        // Model loading can take a while: the startup probe allows up to 2 minutes.
        startup_probe: Some(http_probe("/healthz", 2, 60)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        security_context: Some(super::scan_job::restricted()),
        volume_mounts: Some(volume_mounts),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    };
    Deployment {
        metadata: owner.meta(owner.name.to_owned(), Component::Runtime),
        spec: Some(DeploymentSpec {
            // With autoscaling the HPA owns the replica count; leaving it out of the apply keeps
            // the operator from fighting it. An embedded store serves one pod.
            replicas: if spec.autoscaling.is_some() {
                None
            } else {
                Some(store::replicas(spec))
            },
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            revision_history_limit: Some(5),
            progress_deadline_seconds: Some(600),
            strategy: Some(strategy(spec)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    termination_grace_period_seconds: Some(
                        capacity::termination_grace_period_seconds(),
                    ),
                    topology_spread_constraints: Some(spread(
                        pod.topology_spread_constraints,
                        &selector,
                    )),
                    node_selector: Some(node_selector).filter(|m| !m.is_empty()),
                    tolerations: Some(pod.tolerations).filter(|t| !t.is_empty()),
                    affinity: pod.affinity,
                    service_account_name: Some(service_account),
                    priority_class_name: pod.priority_class_name,
                    image_pull_secrets: Some(super::pull_secrets(spec)).filter(|s| !s.is_empty()),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The service account of the runtime pods: `spec.pod.serviceAccountName`, else `default`, the
/// account a pod without one gets. Always applied, never left out: the API server keeps a pod
/// template's `serviceAccountName` in the deprecated alias `serviceAccount` too, and fills an
/// empty `serviceAccountName` back from that alias whenever it reads the object. Left out of the
/// apply, the field would be removed and at once restored from the alias, so a custom account,
/// once set, would stay on the pods after `spec.pod.serviceAccountName` was removed.
fn service_account_name(pod: &facekey_crds::PodOverrides) -> String {
    pod.service_account_name
        .clone()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_owned())
}

/// The service account every namespace has, which a pod naming none runs as.
const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// The node label naming a node's CPU architecture.
const ARCH_LABEL: &str = "kubernetes.io/arch";

/// `spec.pod.nodeSelector`, with `kubernetes.io/arch: amd64` unless the resource chooses the
/// architectures itself, in its node selector or a required node affinity: the runtime image
/// this project builds is x86-64 only (its ONNX Runtime library), and a pod scheduled on another
/// node crash-loops. An image built for more architectures says so by choosing them.
fn node_selector(pod: &facekey_crds::PodOverrides) -> BTreeMap<String, String> {
    let mut selector = pod.node_selector.clone();
    let chosen_by_affinity = pod
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_some_and(|required| {
            required.node_selector_terms.iter().any(|term| {
                term.match_expressions
                    .iter()
                    .flatten()
                    .any(|e| e.key == ARCH_LABEL)
            })
        });
    if !chosen_by_affinity {
        selector
            .entry(ARCH_LABEL.to_owned())
            .or_insert_with(|| "amd64".to_owned());
    }
    selector
}

/// `spec.pod.topologySpreadConstraints` (each without `labelSelector` given the runtime pods'
/// selector), or the default: one pod per node where possible (`ScheduleAnyway`).
fn spread(
    given: Vec<TopologySpreadConstraint>,
    selector: &BTreeMap<String, String>,
) -> Vec<TopologySpreadConstraint> {
    let runtime_pods = || LabelSelector {
        match_labels: Some(selector.clone()),
        ..LabelSelector::default()
    };
    if given.is_empty() {
        return vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            label_selector: Some(runtime_pods()),
            ..TopologySpreadConstraint::default()
        }];
    }
    given
        .into_iter()
        .map(|mut c| {
            c.label_selector.get_or_insert_with(runtime_pods);
            c
        })
        .collect()
}

/// Rolling updates (one extra pod, none unavailable), except with an embedded store: its
/// ReadWriteOnce volume cannot be attached to the old and the new pod at once, so the old pod
/// stops before the new one starts (`Recreate`).
fn strategy(spec: &FaceKeyDeploymentSpec) -> DeploymentStrategy {
    if store::is_embedded(spec) {
        return DeploymentStrategy {
            type_: Some("Recreate".to_owned()),
            rolling_update: None,
        };
    }
    DeploymentStrategy {
        type_: Some("RollingUpdate".to_owned()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(1)),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    }
}

pub(super) fn service(owner: &Owner<'_>) -> Service {
    Service {
        metadata: owner.meta(owner.name.to_owned(), Component::Runtime),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(labels::selector_labels(owner.name)),
            ports: Some(vec![
                ServicePort {
                    name: Some(PORT_NAME.to_owned()),
                    port: RUNTIME_PORT,
                    target_port: Some(IntOrString::String(PORT_NAME.to_owned())),
                    protocol: Some("TCP".to_owned()),
                    ..ServicePort::default()
                },
                // Scraped by the ServiceMonitor (endpoint port `metrics`).
                ServicePort {
                    name: Some(METRICS_PORT_NAME.to_owned()),
                    port: METRICS_PORT,
                    target_port: Some(IntOrString::String(METRICS_PORT_NAME.to_owned())),
                    protocol: Some("TCP".to_owned()),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

pub(super) fn hpa(
    owner: &Owner<'_>,
    spec: &FaceKeyDeploymentSpec,
) -> Option<HorizontalPodAutoscaler> {
    let a = spec.autoscaling.as_ref()?;
    let mut metrics = Vec::new();
    if let Some(cpu) = a.target_cpu_utilization_percentage {
        metrics.push(MetricSpec {
            type_: "Resource".to_owned(),
            resource: Some(ResourceMetricSource {
                name: "cpu".to_owned(),
                target: MetricTarget {
                    type_: "Utilization".to_owned(),
                    average_utilization: Some(cpu),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    if let Some(rps) = a.target_requests_per_second {
        metrics.push(MetricSpec {
            type_: "Pods".to_owned(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier {
                    name: "facekey_http_requests_per_second".to_owned(),
                    ..MetricIdentifier::default()
                },
                target: MetricTarget {
                    type_: "AverageValue".to_owned(),
                    average_value: Some(Quantity(rps.to_string())),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    Some(HorizontalPodAutoscaler {
        metadata: owner.meta(owner.name.to_owned(), Component::Runtime),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: owner.name.to_owned(),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(metrics),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    })
}

/// The fewest runtime pods the spec asks for: `autoscaling.minReplicas`, else the Deployment's
/// fixed count (1 with an embedded store).
fn least_replicas(spec: &FaceKeyDeploymentSpec) -> i32 {
    match &spec.autoscaling {
        Some(a) => a.min_replicas,
        None => store::replicas(spec),
    }
}

/// The PodDisruptionBudget, only while at least two pods are asked for: `maxUnavailable: 1`,
/// so a drain evicts one pod at a time and never the last ready one. With one pod there is none:
/// a budget that protected it (`minAvailable: 1`) would block every node drain forever, and
/// one that did not would protect nothing. Pods that are not ready may always be evicted
/// (`unhealthyPodEvictionPolicy: AlwaysAllow`), so crash-looping pods never block a drain.
pub(super) fn pdb(owner: &Owner<'_>, spec: &FaceKeyDeploymentSpec) -> Option<PodDisruptionBudget> {
    if least_replicas(spec) < 2 {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: owner.meta(owner.name.to_owned(), Component::Runtime),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(labels::selector_labels(owner.name)),
                ..LabelSelector::default()
            }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}
