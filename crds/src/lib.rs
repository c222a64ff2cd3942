//! FaceKeyDeployment custom resource types (group `facekey.dev`, version `v1alpha1`).
//!
//! The types here are the single source of the CRD schema: `crdgen` serialises
//! [`FaceKeyDeployment::crd`] into `crds/facekeydeployment.yaml`, and a test fails when the
//! committed file drifts from these definitions. Validation that the API server enforces lives
//! beside the fields as schema bounds and CEL rules (`x-kubernetes-validations`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::core::Duration;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every FaceKey custom resource.
pub const GROUP: &str = "facekey.dev";
/// API version of [`FaceKeyDeployment`].
pub const VERSION: &str = "v1alpha1";

/// Longest `metadata.name` of a FaceKeyDeployment (enforced by a CEL rule on the resource). Child
/// names and label values are derived from it and must stay valid: the longest is the scan Job
/// `<name>-scan-<10 hex digits>` (16 characters more), and a Job name, like every label value
/// (`app.kubernetes.io/instance`, `facekey.dev/owner`, the `batch.kubernetes.io/job-name` its pods
/// carry), is at most 63 characters: 63 - 16 = 47. The name is also the Service's, so it must be a
/// DNS-1035 label (lower-case letters, digits and `-`, starting with a letter).
pub const MAX_NAME_LENGTH: usize = 47;

/// Condition types published in `status.conditions`, one constant each so code and docs agree.
pub mod condition {
    /// The runtime pods are available at the desired count, all running the image admitted for
    /// `spec.image` (by digest once scanned).
    pub const READY: &str = "Ready";
    /// A rollout, scale or scan is in flight.
    pub const PROGRESSING: &str = "Progressing";
    /// Something needs attention: invalid spec, failed apply, blocked image, missing CRDs.
    pub const DEGRADED: &str = "Degraded";
    /// The desired image passed the vulnerability scan policy (or the gate is disabled).
    pub const SCAN_GATE_PASSED: &str = "ScanGatePassed";
    /// Monitoring objects (ServiceMonitor, PrometheusRule, AlertmanagerConfig) are applied.
    pub const MONITORING_READY: &str = "MonitoringReady";
    /// Enrolments survive pod restarts (`spec.store`): False without a store (each pod keeps its
    /// own on an emptyDir) or while the store the spec asks for cannot be provided.
    pub const PERSISTENT_STORE: &str = "PersistentStore";
    /// kstatus' abnormal-true condition: True while the operator is still working towards the
    /// spec (a scan runs, a rollout is in progress).
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus' abnormal-true condition: True when the spec cannot be reached without a change
    /// (image blocked by the scan gate, scan failed, invalid spec, rollout past its deadline).
    pub const STALLED: &str = "Stalled";
    /// Present (True, reason `ObjectNotOwned`) while an object the operator would create already
    /// exists without this resource as its controller owner: it is not taken over.
    pub const CONFLICT: &str = "Conflict";
}

/// Desired state of a FaceKey runtime deployment: image, scale, models, scan policy, monitoring.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats type_ = \"string\"; clippy reads them as one attribute"
)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "facekey.dev",
    version = "v1alpha1",
    kind = "FaceKeyDeployment",
    plural = "facekeydeployments",
    shortname = "fkd",
    category = "facekey",
    namespaced,
    status = "FaceKeyDeploymentStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A scanned, scaled and monitored deployment of the FaceKey face-authentication runtime.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(
        name = "Serving",
        type_ = "string",
        json_path = ".status.currentImage",
        priority = 1
    ),
    printcolumn(
        name = "Scan",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"ScanGatePassed\")].reason"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = Rule::new("size(self.metadata.name) <= 47 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS-1035 label of at most 47 characters (lower-case letters, digits and '-', starting with a letter): the operator derives the Service and child names such as <name>-scan-<hash> (63 at most) from it")
)]
#[x_kube(validation = Rule::new("!has(self.autoscaling) || !has(self.replicas) || self.replicas == 1").message("set either replicas or autoscaling, not both"))]
#[x_kube(validation = Rule::new("!(has(self.autoscaling) && has(self.store) && has(self.store.embedded))").message("an embedded store serves one pod: autoscaling needs store.postgres"))]
#[x_kube(validation = Rule::new("!has(self.verification) || !has(self.verification.decisionPolicy) || self.verification.decisionPolicy != 'fusion' || (has(self.models) && has(self.models.scoreWeights)) || (has(self.settings) && has(self.settings.allowInsecure) && self.settings.allowInsecure == 'true')").message("verification.decisionPolicy fusion needs models.scoreWeights: the runtime refuses to start with its uncalibrated reference weights under fusion unless settings.allowInsecure is \"true\""))]
#[x_kube(validation = Rule::new("!has(self.settings) || !has(self.settings.liveness) || self.settings.liveness != 'off' || (has(self.settings.allowInsecure) && self.settings.allowInsecure == 'true')").message("settings.liveness off makes every face count as live: the runtime refuses to start with it unless settings.allowInsecure is \"true\""))]
#[x_kube(validation = Rule::new("!has(self.models) || !has(self.models.thresholds) || !has(self.models.thresholds.match) || self.models.thresholds.match >= 0.5 || (has(self.settings) && has(self.settings.allowInsecure) && self.settings.allowInsecure == 'true')").message("models.thresholds.match below 0.5 is looser than dlib's distance 0.6, so more impostors match: the runtime refuses to start with it unless settings.allowInsecure is \"true\""))]
#[x_kube(validation = Rule::new("!has(self.settings) || !has(self.settings.corsOrigins) || !self.settings.corsOrigins.matches('(^|,)[ ]*[*][ ]*(,|$)') || (has(self.settings.allowInsecure) && self.settings.allowInsecure == 'true')").message("settings.corsOrigins * lets any web site call the API from its visitors' browsers: the runtime refuses to start with it unless settings.allowInsecure is \"true\""))]
#[serde(rename_all = "camelCase")]
pub struct FaceKeyDeploymentSpec {
    /// Runtime container image reference (tag or digest), e.g. `ghcr.io/facekey/runtime:0.1.0`.
    #[x_kube(validation = Rule::new("size(self) > 0").message("image must not be empty"))]
    pub image: String,
    /// Fixed number of runtime pods (default 1, also the `/scale` subresource's count, so an
    /// external HPA or KEDA can target the resource). With `autoscaling` it must stay unset (or
    /// its default 1): the operator's HPA sets the pod count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("default" = 1))]
    pub replicas: Option<i32>,
    /// Horizontal autoscaling bounds and target; creates an autoscaling/v2 HorizontalPodAutoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// Model files and decision thresholds handed to the runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Models>,
    /// Vulnerability scan policy applied before a new image is rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_gate: Option<ScanGate>,
    /// Prometheus-operator objects and the Grafana dashboard created for this deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<Monitoring>,
    /// Alert routing (Alertmanager email receiver) and the runtime's own alert emails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerting: Option<Alerting>,
    /// Compute resources of the runtime container; sensible defaults when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Whether the runtime serves its bundled web UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui: Option<Ui>,
    /// Where enrolments (face templates) live. Without it each pod keeps its own on an emptyDir:
    /// not shared between replicas and lost when the pod restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<Store>,
    /// API access control: where the runtime's API keys come from and whether `/metrics` on the
    /// API port needs one. Without it the operator generates an admin key (Secret
    /// `<name>-api-keys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// The NetworkPolicy admitting traffic to the runtime pods (enabled by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,
    /// Registry credentials (Secrets of type `kubernetes.io/dockerconfigjson` in the namespace)
    /// for pulling the runtime image and, in the scan Job, for the scanner and its images; Trivy
    /// itself logs in to the scanned image's registry with the first one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Pod-level settings of the runtime pods a platform team sets: scheduling, service account,
    /// priority, extra labels and annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodOverrides>,
    /// The runtime as a native sidecar of application pods: a pod of this namespace annotated
    /// `facekey.dev/inject: <this resource's name>` gets the admitted runtime image (by digest)
    /// as an init container with `restartPolicy: Always`, listening on 127.0.0.1 only. Without
    /// this block no pod is injected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<Sidecar>,
    /// What the runtime asks before it accepts a face: challenge-liveness sessions, the lockout
    /// after failed attempts, the decision policy and the checks on enrolled faces. An omitted
    /// field keeps the runtime's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Further runtime settings, for the tuning the spec has no field for (body and image limits,
    /// the admission queue, CORS origins, the log filter, ...): each name is the runtime's
    /// `FACEKEY_<NAME>` in camelCase and each value a string as in the environment, e.g.
    /// `maxBodyBytes: "4194304"` for `FACEKEY_MAX_BODY_BYTES`. Only the names listed here are
    /// accepted (the API server drops or, with strict field validation, refuses others): those
    /// the operator writes itself or a field of the spec sets are not among them. The runtime
    /// checks the values when it starts; a pod given a value it refuses does not start (a
    /// rolling update stops with the old pods serving; the embedded store's `Recreate` has none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "settings_schema")]
    pub settings: BTreeMap<String, String>,
}

/// Runtime settings (`FACEKEY_*` names) `spec.settings` may set, under their
/// [`settings_field`] names: the runtime's tuning knobs that neither the operator derives
/// (listeners, files, capacity, shutdown) nor a spec field names (thresholds, store limits,
/// `verification`).
pub const RUNTIME_SETTINGS: &[&str] = &[
    "FACEKEY_MAX_BODY_BYTES",
    "FACEKEY_MAX_BODY_MEMORY_BYTES",
    "FACEKEY_MAX_BODY_MEMORY_PER_KEY_SHARE",
    "FACEKEY_MIN_BODY_BYTES_PER_SEC",
    "FACEKEY_BODY_RATE_GRACE_SECS",
    "FACEKEY_MAX_IMAGE_BYTES",
    "FACEKEY_MAX_IMAGE_PIXELS",
    "FACEKEY_MIN_FACE_SIZE",
    "FACEKEY_MULTI_FACE",
    "FACEKEY_MAX_FACES_PER_IMAGE",
    "FACEKEY_LIVENESS",
    "FACEKEY_LIVENESS_COMBINE",
    "FACEKEY_MATCH_MODELS",
    "FACEKEY_PASSIVE_LIVENESS_MODELS",
    "FACEKEY_SESSION_PASSIVE_MIN",
    "FACEKEY_SESSION_REPLAY_WINDOW_SECS",
    "FACEKEY_MAX_BATCH",
    "FACEKEY_MAX_QUEUE",
    "FACEKEY_MAX_QUEUE_WAIT_MS",
    "FACEKEY_QUEUE_MAX_LOAD",
    "FACEKEY_REQUEST_TIMEOUT_SECS",
    "FACEKEY_MAX_CONNECTIONS",
    "FACEKEY_HEADER_READ_TIMEOUT_SECS",
    "FACEKEY_MAX_CONNECTION_AGE_SECS",
    "FACEKEY_ALERT_MIN_INTERVAL_SECS",
    "FACEKEY_CORS_ORIGINS",
    "FACEKEY_LOG",
    "FACEKEY_ALLOW_INSECURE",
];

/// Longest value of one `spec.settings` entry.
pub const MAX_SETTING_LENGTH: usize = 4096;

/// The `spec.settings` name of runtime setting `env_name`: `FACEKEY_MAX_BODY_BYTES` →
/// `maxBodyBytes`.
pub fn settings_field(env_name: &str) -> String {
    let mut field = String::new();
    let words = env_name.trim_start_matches("FACEKEY_").split('_');
    for (i, word) in words.enumerate() {
        let lower = word.to_ascii_lowercase();
        let mut chars = lower.chars();
        if i > 0
            && let Some(first) = chars.next()
        {
            field.push(first.to_ascii_uppercase());
        }
        field.extend(chars);
    }
    field
}

/// The runtime setting (`FACEKEY_*`) a `spec.settings` name stands for, if it is one of
/// [`RUNTIME_SETTINGS`].
pub fn setting_env_name(field: &str) -> Option<&'static str> {
    RUNTIME_SETTINGS
        .iter()
        .copied()
        .find(|name| settings_field(name) == field)
}

/// The schema of `spec.settings`: an object whose properties are [`RUNTIME_SETTINGS`] by their
/// [`settings_field`] names, each a string of one line. The API server drops (or, with strict
/// field validation, refuses) any other name; the operator refuses one that got past it.
fn settings_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let properties: serde_json::Map<String, serde_json::Value> = RUNTIME_SETTINGS
        .iter()
        .map(|name| {
            let property = serde_json::json!({
                "type": "string",
                "maxLength": MAX_SETTING_LENGTH,
                "pattern": "^[^\\r\\n]*$",
            });
            (settings_field(name), property)
        })
        .collect();
    let mut schema = serde_json::Map::new();
    schema.insert("type".to_owned(), "object".into());
    schema.insert("properties".to_owned(), properties.into());
    schemars::Schema::from(schema)
}

/// Largest values of the `verification` and `store` numbers, the runtime's own bounds: the
/// schema's `maximum` and the operator's check of objects that got past it use these.
pub mod bounds {
    /// `verification.sessions.ttlSeconds` (the runtime's `FACEKEY_SESSION_TTL_SECS`).
    pub const SESSION_TTL_SECONDS: u32 = 3600;
    /// `verification.sessions.maxFrames` (the runtime's `FACEKEY_SESSION_MAX_FRAMES`).
    pub const SESSION_FRAMES: u32 = 256;
    /// `verification.sessions.maxOpen` and `maxOpenPerKey`.
    pub const SESSIONS_OPEN: u32 = 1_000_000;
    /// `verification.lockout.attempts` (the runtime's `lockout::MAX_ATTEMPTS`).
    pub const LOCKOUT_ATTEMPTS: u32 = 1000;
    /// `verification.lockout.windowSeconds` and `durationSeconds`: a year and a day (the
    /// runtime's `lockout::MAX_PERIOD`).
    pub const LOCKOUT_PERIOD_SECONDS: u32 = 31_622_400;
    /// `store.maxFacesPerSubject`.
    pub const FACES_PER_SUBJECT: u32 = 1000;
    /// `store.maxSubjects`, `maxTemplates`, `maxSubjectsPerKey` and `maxTemplatesPerKey`.
    pub const STORE_ITEMS: u32 = 100_000_000;
    /// `monitoring.rules.p99LatencyMs`: below the runtime's top finite latency bucket (10 s),
    /// which `histogram_quantile` never exceeds, so an alert at or past it could never fire.
    pub const P99_LATENCY_MS: u32 = 9_999;
}

/// What the runtime asks before it accepts a face (`spec.verification`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// `true`: `/v1/verify` and `/v1/identify` refuse a face without a passed challenge-liveness
    /// session (422 `session_required`), so a still photo is never enough
    /// (`FACEKEY_REQUIRE_SESSION`; default false: passive liveness on the image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_session: Option<bool>,
    /// `strict` (the runtime's default): accept only when the fused probability, the match and
    /// the liveness check all accept; `fusion`: the fused probability alone decides (liveness
    /// that could not run still rejects), which needs calibrated `models.scoreWeights`
    /// (`FACEKEY_DECISION_POLICY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_policy: Option<DecisionPolicy>,
    /// Limits of challenge-liveness sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionLimits>,
    /// Locking a subject after repeated failed verifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockout: Option<Lockout>,
    /// Checks on a face being enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolment: Option<EnrolmentChecks>,
}

/// How the runtime's decision combines its scores (`FACEKEY_DECISION_POLICY`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DecisionPolicy {
    /// The fused probability, the match and the liveness check must all accept.
    Strict,
    /// The fused probability alone decides; liveness that could not run still rejects.
    Fusion,
}

impl DecisionPolicy {
    /// The value of `FACEKEY_DECISION_POLICY`.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionPolicy::Strict => "strict",
            DecisionPolicy::Fusion => "fusion",
        }
    }
}

/// Limits of challenge-liveness sessions (`spec.verification.sessions`); the runtime's
/// defaults when omitted.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionLimits {
    /// Seconds a session lives after it is opened (`FACEKEY_SESSION_TTL_SECS`, default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = bounds::SESSION_TTL_SECONDS))]
    pub ttl_seconds: Option<u32>,
    /// Frames one session accepts in all (`FACEKEY_SESSION_MAX_FRAMES`, default 160).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = bounds::SESSION_FRAMES))]
    pub max_frames: Option<u32>,
    /// Sessions open at once per replica, or across replicas sharing PostgreSQL
    /// (`FACEKEY_MAX_SESSIONS`, default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = bounds::SESSIONS_OPEN))]
    pub max_open: Option<u32>,
    /// Sessions open at once per API key (`FACEKEY_MAX_SESSIONS_PER_KEY`, default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = bounds::SESSIONS_OPEN))]
    pub max_open_per_key: Option<u32>,
}

/// Locking a subject after repeated failed verifications (`spec.verification.lockout`): 429
/// `subject_locked` while locked.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Lockout {
    /// Failed verifications within `windowSeconds` that lock the subject; 0 turns the lockout
    /// off (`FACEKEY_LOCKOUT_ATTEMPTS`, default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = bounds::LOCKOUT_ATTEMPTS))]
    pub attempts: Option<u32>,
    /// Seconds in which failures are counted (`FACEKEY_LOCKOUT_WINDOW_SECS`, default 900).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = bounds::LOCKOUT_PERIOD_SECONDS))]
    pub window_seconds: Option<u32>,
    /// Seconds a locked subject stays locked the first time (`FACEKEY_LOCKOUT_SECS`, default
    /// 900); each lock in a row doubles, up to `maxDurationSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = bounds::LOCKOUT_PERIOD_SECONDS))]
    pub duration_seconds: Option<u32>,
    /// The longest a lock grows to by doubling, and how long after a lock ends it still counts
    /// toward the next one's length (`FACEKEY_LOCKOUT_MAX_SECS`, default 86400, a day); 0 or
    /// at most `durationSeconds`: locks never grow. A long cap bounds guesses more tightly but
    /// lets any key knowing a subject id keep it locked out longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = bounds::LOCKOUT_PERIOD_SECONDS))]
    pub max_duration_seconds: Option<u32>,
}

/// Checks on a face being enrolled (`spec.verification.enrolment`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EnrolmentChecks {
    /// Whether the face must pass passive liveness (`FACEKEY_ENROL_LIVENESS`, default true;
    /// false for enrolment from ID photos).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<bool>,
    /// Least quality score in [0, 1] (`FACEKEY_ENROL_MIN_QUALITY`, default 0.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self <= 1.0").message("enrolment.minQuality must be in [0, 1]"))]
    pub min_quality: Option<f64>,
}

/// Pod annotation naming the FaceKeyDeployment (same namespace) whose runtime the operator's
/// admission webhook injects as a sidecar.
pub const INJECT_ANNOTATION: &str = "facekey.dev/inject";

/// Settings of the injected runtime sidecar.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.port) || !has(self.metricsPort) || self.port != self.metricsPort").message("sidecar.port and sidecar.metricsPort must differ"))]
#[serde(rename_all = "camelCase")]
pub struct Sidecar {
    /// Whether pods may ask for the sidecar (default true once the block is present).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Loopback port of the runtime's API inside the application pod (`127.0.0.1:<port>`,
    /// default 7070); the application calls `http://127.0.0.1:<port>/v1/...` with an API key.
    #[serde(default = "default_sidecar_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Port of the keyless health and metrics listener (`/healthz`, `/readyz`, `/metrics`,
    /// default 7071), for the kubelet's probes and Prometheus (a PodMonitor scrapes it).
    #[serde(default = "default_sidecar_metrics_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub metrics_port: i32,
    /// Compute resources of the sidecar container; `spec.resources` when omitted, else the
    /// runtime's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// What admission does with a pod that asks for this sidecar while it cannot be injected
    /// (no admitted image yet, `enabled: false`, a port clash): `Ignore` admits the pod
    /// unchanged with a warning and an Event, `Fail` refuses it with the same message.
    #[serde(default)]
    pub failure_policy: SidecarFailurePolicy,
}

impl Default for Sidecar {
    fn default() -> Self {
        Self {
            enabled: true,
            port: default_sidecar_port(),
            metrics_port: default_sidecar_metrics_port(),
            resources: None,
            failure_policy: SidecarFailurePolicy::default(),
        }
    }
}

fn default_sidecar_port() -> i32 {
    7070
}

fn default_sidecar_metrics_port() -> i32 {
    7071
}

/// Admission's answer to a pod whose sidecar cannot be injected.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum SidecarFailurePolicy {
    /// Admit the pod unchanged (with a warning and an Event).
    #[default]
    Ignore,
    /// Refuse the pod with the reason.
    Fail,
}

impl SidecarFailurePolicy {
    /// The value as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            SidecarFailurePolicy::Ignore => "Ignore",
            SidecarFailurePolicy::Fail => "Fail",
        }
    }
}

/// Label keys the operator sets on the runtime pods (its selector and ownership labels); a pod
/// override may not set them, nor any other key under `facekey.dev/`.
pub const RESERVED_POD_LABELS: [&str; 4] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
];

/// Prefix of the labels and annotations only the operator sets (`facekey.dev/owner`,
/// `facekey.dev/config-hash`, …).
pub const RESERVED_PREFIX: &str = "facekey.dev/";

/// Scheduling and identity settings of the runtime pods, written into the Deployment's pod
/// template as given (Kubernetes' own types and schemas).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Node labels a node must carry to run the pods. Without a `kubernetes.io/arch` choice
    /// here or in a required node affinity, `kubernetes.io/arch: amd64` is added: the runtime
    /// image is built for x86-64 only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Node and pod (anti-)affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Replace the default spread (one pod per node where possible, `ScheduleAnyway`); a
    /// constraint without `labelSelector` gets the runtime pods' selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Service account of the pods (its token is still not mounted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Extra pod labels. The operator's own keys (`app.kubernetes.io/name`, `instance`,
    /// `component`, `managed-by`, anything under `facekey.dev/`) are refused: they select the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, !(k in ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/component', 'app.kubernetes.io/managed-by']) && !k.startsWith('facekey.dev/'))").message("pod.labels must not set the operator's labels (app.kubernetes.io/name, instance, component, managed-by, facekey.dev/*)"))]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations; keys under `facekey.dev/` are the operator's and refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('facekey.dev/'))").message("pod.annotations must not set facekey.dev/* keys"))]
    pub annotations: BTreeMap<String, String>,
}

/// API access control of the runtime. The runtime requires a key (`Authorization: Bearer`) on
/// every `/v1` route; `/healthz` and `/readyz` stay open, and a second port (9090) serves only
/// health and metrics without keys.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// Secret key holding the keys file (`<key-id>:<scope,…>:<hex SHA-256 of the key>[:<rps>]`
    /// per line), mounted as a file the runtime re-reads when the Secret changes
    /// (`FACEKEY_API_KEYS_FILE`). Without it the operator creates the Secret `<name>-api-keys`
    /// once, holding `api-keys` (one `admin` key's line) and `admin-key` (that key), and never
    /// overwrites it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_secret_ref: Option<ApiKeysSecretRef>,
    /// Whether `/metrics` on the API port needs a key with the `metrics` scope (`key`) or not
    /// (`open`, the default); the metrics port never does (`FACEKEY_METRICS_AUTH`).
    #[serde(default)]
    pub metrics: MetricsAuth,
}

/// A key of a Secret of the same namespace holding an API keys file.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeysSecretRef {
    /// Secret name.
    #[x_kube(validation = Rule::new("size(self) > 0").message("name must not be empty"))]
    pub name: String,
    /// Key inside the Secret's data (default `api-keys`).
    #[serde(default = "default_api_keys_key")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("key must not be empty"))]
    pub key: String,
}

/// Data key of an API keys file in a Secret, the default of [`ApiKeysSecretRef::key`].
pub const API_KEYS_KEY: &str = "api-keys";

fn default_api_keys_key() -> String {
    API_KEYS_KEY.to_owned()
}

/// Whether `/metrics` on the API port needs an API key.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAuth {
    /// No key needed.
    #[default]
    Open,
    /// A key with the `metrics` (or `admin`) scope.
    Key,
}

impl MetricsAuth {
    /// The value of `FACEKEY_METRICS_AUTH`.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricsAuth::Open => "open",
            MetricsAuth::Key => "key",
        }
    }
}

/// The NetworkPolicy `<name>` selecting the runtime pods (ingress only): the API port admits
/// `apiFrom`, the metrics port `metricsFrom`, nothing else is admitted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Whether the NetworkPolicy is created.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Who may reach the API port (8080). Empty: pods of the same namespace only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_from: Vec<NetworkPeer>,
    /// Who may reach the metrics port (9090, health and metrics without keys). Empty: pods of
    /// the namespace `monitoring` (label `kubernetes.io/metadata.name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics_from: Vec<NetworkPeer>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            api_from: Vec::new(),
            metrics_from: Vec::new(),
        }
    }
}

/// Pods allowed in, as in a NetworkPolicy peer: `namespaceSelector` alone (every pod of those
/// namespaces), `podSelector` alone (those pods of the FaceKeyDeployment's namespace), or both
/// (those pods of those namespaces). At least one is required: an empty peer would admit
/// everything.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.namespaceSelector) || has(self.podSelector)").message("a peer needs namespaceSelector and/or podSelector"))]
#[serde(rename_all = "camelCase")]
pub struct NetworkPeer {
    /// Namespaces selected by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Pods selected by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
}

/// The template store: exactly one of `embedded` (one pod, a PersistentVolumeClaim) or `postgres`
/// (any number of replicas sharing one database), the template encryption key, and whether the
/// data outlives the resource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.embedded) != has(self.postgres)").message("store: set exactly one of embedded or postgres"))]
#[x_kube(validation = Rule::new("!has(oldSelf.postgres) || !has(oldSelf.postgres.cloudNativePG) || has(oldSelf.templateKeySecretRef) || ((has(self.postgres) && has(self.postgres.cloudNativePG)) ? (has(self.retainOnDelete) ? self.retainOnDelete : true) == (has(oldSelf.retainOnDelete) ? oldSelf.retainOnDelete : true) : (has(oldSelf.retainOnDelete) ? oldSelf.retainOnDelete : true))").message("with cloudNativePG and a generated template key, store.retainOnDelete cannot change, and with retainOnDelete false the store cannot leave cloudNativePG: the key Secret keeps the owner it was created with, so the database and its key would no longer go (or stay) together, or templates moved to another database would lose their key with this resource; set templateKeySecretRef to a Secret you manage first"))]
#[serde(rename_all = "camelCase")]
pub struct Store {
    /// The runtime's embedded store on a PersistentVolumeClaim the operator creates
    /// (ReadWriteOnce): one pod (replicas at most 1, Recreate rollouts), no autoscaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded: Option<EmbeddedStore>,
    /// A PostgreSQL database shared by every replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresStore>,
    /// Secret key holding the template encryption keys (`<key-id>:<64 hex>` per line, the first
    /// current), mounted as a file (`FACEKEY_TEMPLATE_KEY_FILE`). With `postgres` and without
    /// this, the operator creates the Secret `<name>-template-key` (key `template.key`) once with
    /// a random key; with `embedded` and without this, the runtime keeps its own key on the
    /// volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_key_secret_ref: Option<KeyRef>,
    /// Whether the enrolments outlive the FaceKeyDeployment (like a StatefulSet's
    /// `persistentVolumeClaimRetentionPolicy`, whose default is Retain). `true` (default): the
    /// claim `<name>-data`, the CloudNativePG `Cluster` `<name>-db` and its generated
    /// `<name>-template-key` carry no owner reference (annotation `facekey.dev/retained`), so
    /// deleting the resource (by mistake, `kubectl delete -k`, an Argo CD app deletion, or to
    /// recreate it from Git) keeps them, and a FaceKeyDeployment of the same name in the same
    /// namespace adopts them (they carry the operator's labels for it). `false`: they carry the
    /// resource's owner reference, and the garbage collector deletes them, and the enrolments,
    /// with it.
    #[serde(default = "default_true")]
    pub retain_on_delete: bool,
    /// Most subjects the store holds (`FACEKEY_MAX_SUBJECTS`; the runtime's 100 000 when
    /// omitted): beyond, creating a subject answers 507 `store_full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = bounds::STORE_ITEMS))]
    pub max_subjects: Option<u32>,
    /// Most templates, the enrolled faces of all subjects together (`FACEKEY_MAX_TEMPLATES`; the
    /// runtime's 50 000 when omitted): beyond, enrolling answers 507 `store_full`. Every replica
    /// keeps them in memory (about 5.5 KB each), which the operator counts against the memory
    /// limit when it sizes the model sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = bounds::STORE_ITEMS))]
    pub max_templates: Option<u32>,
    /// Most subjects one API key may have created and still hold
    /// (`FACEKEY_MAX_SUBJECTS_PER_KEY`; the runtime's 10 000 when omitted, 0 for no per-key
    /// limit): beyond, creating a subject answers 507 `key_subject_quota`, so one `enrol` key
    /// cannot fill the store. Admin keys are held to `maxSubjects` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = bounds::STORE_ITEMS))]
    pub max_subjects_per_key: Option<u32>,
    /// Most templates (enrolled faces) one API key may have enrolled and still hold
    /// (`FACEKEY_MAX_TEMPLATES_PER_KEY`; the runtime's 5 000 when omitted, 0 for no per-key
    /// limit): beyond, enrolling answers 507 `key_template_quota`, so one `enrol` key cannot
    /// fill the templates of every other. Admin keys are held to `maxTemplates` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = bounds::STORE_ITEMS))]
    pub max_templates_per_key: Option<u32>,
    /// Most faces one subject holds (`FACEKEY_MAX_FACES_PER_SUBJECT`; the runtime's 5 when
    /// omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = bounds::FACES_PER_SUBJECT))]
    pub max_faces_per_subject: Option<u32>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            embedded: None,
            postgres: None,
            template_key_secret_ref: None,
            retain_on_delete: true,
            max_subjects: None,
            max_templates: None,
            max_subjects_per_key: None,
            max_templates_per_key: None,
            max_faces_per_subject: None,
        }
    }
}

/// The embedded store's volume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddedStore {
    /// The PersistentVolumeClaim `<name>-data` mounted at the runtime's data directory.
    #[serde(default)]
    pub pvc: VolumeClaim,
}

/// Size and class of a volume the operator asks for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeClaim {
    /// Requested capacity (default `1Gi`).
    #[serde(default = "default_volume_size")]
    pub size: Quantity,
    /// StorageClass; the cluster's default class when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for VolumeClaim {
    fn default() -> Self {
        Self {
            size: default_volume_size(),
            storage_class_name: None,
        }
    }
}

fn default_volume_size() -> Quantity {
    Quantity("1Gi".to_owned())
}

/// The PostgreSQL database: exactly one of an existing database's URL in a Secret, or a
/// CloudNativePG cluster the operator creates.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.urlSecretRef) != has(self.cloudNativePG)").message("store.postgres: set exactly one of urlSecretRef or cloudNativePG"))]
#[serde(rename_all = "camelCase")]
pub struct PostgresStore {
    /// Secret key holding the URL (`postgres://user:password@host:5432/db?sslmode=verify-full`),
    /// mounted as a file (`FACEKEY_DATABASE_URL_FILE`); the URL never appears in a ConfigMap or
    /// an environment value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<KeyRef>,
    /// A CloudNativePG `Cluster` named `<name>-db` (postgresql.cnpg.io/v1, needs the
    /// CloudNativePG operator); its generated Secret `<name>-db-app` (key `uri`) is wired in.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "cloudNativePG"
    )]
    pub cloud_native_pg: Option<CloudNativePg>,
    /// Secret key holding the PEM CA the database server's certificate must chain to, mounted
    /// as `FACEKEY_DATABASE_CA_FILE`: TLS is then required and the certificate and host name
    /// verified, whatever the URL says. Default with `cloudNativePG`: the cluster's own CA,
    /// Secret `<name>-db-ca` key `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<KeyRef>,
}

/// A CloudNativePG cluster for the template store.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.synchronousReplicas) || self.synchronousReplicas < (has(self.instances) ? self.instances : 1)").message("store.postgres.cloudNativePG.synchronousReplicas must be below instances (the primary does not count)"))]
#[serde(rename_all = "camelCase")]
pub struct CloudNativePg {
    /// PostgreSQL instances (1 primary + replicas; default 1).
    #[serde(default = "default_instances")]
    #[schemars(range(min = 1))]
    pub instances: i32,
    /// Standbys that must confirm each commit before it is acknowledged (CloudNativePG
    /// `postgresql.synchronous`, method `any`, data durability `required`). 0 (default):
    /// asynchronous replication, so a failover can lose the last acknowledged enrolments,
    /// deletions and lock releases. With 1 and `instances: 3` no acknowledged write is lost when
    /// the primary's node is, and writes go on while one standby is down; with `instances: 2`
    /// writes wait while the only standby is down. Must be below `instances`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub synchronous_replicas: Option<i32>,
    /// Volume of each instance.
    #[serde(default)]
    pub storage: VolumeClaim,
    /// PostgreSQL image; CloudNativePG's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
}

impl Default for CloudNativePg {
    fn default() -> Self {
        Self {
            instances: default_instances(),
            synchronous_replicas: None,
            storage: VolumeClaim::default(),
            image_name: None,
        }
    }
}

fn default_instances() -> i32 {
    1
}

/// Horizontal autoscaling of the runtime pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
#[x_kube(validation = Rule::new("has(self.targetCPUUtilizationPercentage) || has(self.targetRequestsPerSecond)").message("set targetCPUUtilizationPercentage and/or targetRequestsPerSecond"))]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    /// Lower bound of runtime pods.
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Upper bound of runtime pods.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Target average CPU utilisation in percent of the requested CPU.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "targetCPUUtilizationPercentage"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: Option<i32>,
    /// Target requests per second per pod (Pods metric `facekey_http_requests_per_second`,
    /// which needs a custom-metrics adapter such as prometheus-adapter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_requests_per_second: Option<i32>,
}

/// Model files and thresholds of the runtime.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Models {
    /// Score-fusion MLP weights (JSON). Bundled reference weights are used when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_weights: Option<ScoreWeights>,
    /// Where the anti-spoofing model comes from. The bundled model is used when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spoof: Option<ModelSource>,
    /// Decision thresholds; runtime defaults apply to any left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Thresholds>,
}

/// Source of the fusion weights file: inline JSON (stored in the owned ConfigMap) or a key of an
/// existing ConfigMap.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.inline) != has(self.configMapKeyRef)").message("set exactly one of inline or configMapKeyRef"))]
#[serde(rename_all = "camelCase")]
pub struct ScoreWeights {
    /// The weights JSON document itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    /// A key of a ConfigMap in the same namespace holding the weights JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
}

/// A key inside a named ConfigMap or Secret of the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// Object name.
    #[x_kube(validation = Rule::new("size(self) > 0").message("name must not be empty"))]
    pub name: String,
    /// Key inside the object's data.
    #[x_kube(validation = Rule::new("size(self) > 0").message("key must not be empty"))]
    pub key: String,
}

/// Where a model directory comes from: exactly one of a ConfigMap or a PersistentVolumeClaim
/// (`uri` is refused: the runtime never downloads models).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.configMap) ? 1 : 0) + (has(self.pvc) ? 1 : 0) + (has(self.uri) ? 1 : 0) == 1").message("set exactly one of configMap, pvc or uri"))]
#[x_kube(validation = Rule::new("!has(self.uri)").message("uri is not supported: the runtime never downloads models; put them on a PersistentVolumeClaim (pvc) or in a ConfigMap (configMap)"))]
#[serde(rename_all = "camelCase")]
pub struct ModelSource {
    /// Name of a ConfigMap whose keys are the model files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("configMap must not be empty"))]
    pub config_map: Option<String>,
    /// Name of a PersistentVolumeClaim holding the model files (mounted read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("pvc must not be empty"))]
    pub pvc: Option<String>,
    /// Refused: the runtime never downloads models (no network at start-up is assumed, and a
    /// download would be an unverified model on the authentication path). Kept in the schema so
    /// a resource that sets it gets this reason instead of a silently pruned field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// Decision thresholds in [0, 1].
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Thresholds {
    /// Minimum fused authentication probability to accept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self <= 1.0").message("auth threshold must be in [0, 1]"))]
    pub auth: Option<f64>,
    /// Minimum liveness score for a face to count as live; lower scores are spoof attempts
    /// (the runtime's `FACEKEY_LIVENESS_THRESHOLD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self <= 1.0").message("spoof threshold must be in [0, 1]"))]
    pub spoof: Option<f64>,
    /// Minimum embedding similarity for a template match.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "match")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self <= 1.0").message("match threshold must be in [0, 1]"))]
    pub match_: Option<f64>,
}

/// Trivy vulnerability severities, ordered from least to most severe.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    /// Trivy could not rate the finding.
    Unknown,
    /// Low severity.
    Low,
    /// Medium severity.
    Medium,
    /// High severity.
    High,
    /// Critical severity.
    Critical,
}

impl Severity {
    /// All severities from least to most severe.
    pub const ALL: [Severity; 5] = [
        Severity::Unknown,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The upper-case name Trivy uses in its reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "UNKNOWN",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// Scan policy gating rollouts of a new image.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanGate {
    /// Whether new images must pass a scan before they are rolled out.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Highest severity tolerated; any counted finding above it closes the gate.
    #[serde(default = "default_max_severity")]
    pub max_severity: Severity,
    /// When true, findings without a fixed version are not counted.
    #[serde(default)]
    pub allow_unfixed: bool,
    /// Vulnerability IDs (CVE-…, GHSA-…) that are never counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "ignoreCVEs")]
    pub ignore_cves: Vec<String>,
    /// Reports older than this are stale: the image is scanned again (a report is fresh for at
    /// least 15 minutes, the scan Job's deadline, whatever this says). A Go duration of one to
    /// eight components, each a non-negative decimal number and a unit (`ns`, `us`, `µs`, `ms`,
    /// `s`, `m`, `h`), such as `24h`, `1h30m` or `1.5h`, or `0`; a number has at most 18, 15,
    /// 12, 9, 7 or 5 digits before its point for ns, us, ms, s, m or h (so a component stays
    /// below about 31 years). The API server refuses any other string.
    #[serde(
        default = "default_max_report_age",
        deserialize_with = "bounded_duration::deserialize"
    )]
    #[schemars(
        regex(pattern = bounded_duration::pattern()),
        length(max = bounded_duration::MAX_CHARS)
    )]
    pub max_report_age: Duration,
    /// Image that runs `trivy image` in the scan Job. Unset: the operator's `--scanner-image`.
    /// Setting it (like `dbRepository`, `javaDbRepository`, `server`) needs the operator's
    /// `--allow-scanner-overrides`: the scanner decides what is found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanner_image: Option<String>,
    /// OCI repository of Trivy's vulnerability DB (a mirror for air-gapped or rate-limited
    /// clusters, Trivy's `--db-repository`). Unset: the operator's `--db-repository`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_repository: Option<String>,
    /// OCI repository of Trivy's Java DB (`--java-db-repository`). Unset: the operator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub java_db_repository: Option<String>,
    /// URL of a Trivy server (client/server mode, `trivy image --server`): the server holds the
    /// DB, the Job downloads none. Unset: the operator's `--trivy-server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

impl Default for ScanGate {
    fn default() -> Self {
        Self {
            enabled: true,
            max_severity: default_max_severity(),
            allow_unfixed: false,
            ignore_cves: Vec::new(),
            max_report_age: default_max_report_age(),
            scanner_image: None,
            db_repository: None,
            java_db_repository: None,
            server: None,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_max_severity() -> Severity {
    Severity::Medium
}

fn default_max_report_age() -> Duration {
    Duration::from(std::time::Duration::from_secs(24 * 3600))
}

/// Go durations read without a panic. kube-core's parser multiplies each component into a
/// `std::time::Duration` unchecked, so a component beyond `u64` seconds (`99999999999999999999h`)
/// or a negative one after the first (`1h-5h`) panics: one such FaceKeyDeployment would crash
/// the operator on every start. The string is checked here first, then kube-core parses it
/// (the report to file upstream: docs/upstream/kube-core-duration-panic.md).
///
/// The syntax `check` accepts is exactly what `pattern` matches (the CRD schema's pattern, so
/// the API server refuses the rest at apply time): an optional `+`, then `0` or one to eight
/// components, each a number (`5`, `5.`, `.5`, `5.25`: no sign, no exponent) with at most the
/// digits `UNITS` allows its unit before the point, and a unit; at most `MAX_CHARS` characters.
/// The digit bounds keep every component below 10⁹ seconds, so nothing the pattern accepts can
/// overflow, and the pattern is the whole rule: what the API server admits, the operator reads.
mod bounded_duration {
    use kube::core::Duration;
    use serde::{Deserialize, Deserializer, de};

    /// Longest string accepted, in characters (the schema's `maxLength`, which counts code points).
    pub(super) const MAX_CHARS: usize = 64;
    /// Largest count of components accepted.
    const MAX_COMPONENTS: usize = 8;
    /// Each unit kube-core reads and the most digits before the point: enough for ten years in
    /// that unit (87840h, 316224000s, 3.16e17ns), and each bound keeps a component below 10⁹
    /// seconds.
    const UNITS: [(&[&str], usize); 6] = [
        (&["ns"], 18),
        (&["us", "\u{00b5}s", "\u{03bc}s"], 15),
        (&["ms"], 12),
        (&["s"], 9),
        (&["m"], 7),
        (&["h"], 5),
    ];

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        check(&s).map_err(de::Error::custom)?;
        s.parse::<Duration>().map_err(de::Error::custom)
    }

    /// The ECMA-262/RE2 pattern of the syntax [`check`] accepts, built from the same [`UNITS`].
    pub(super) fn pattern() -> String {
        let components: Vec<String> = UNITS
            .iter()
            .map(|(units, digits)| {
                let units = units.join("|");
                format!(r"(?:[0-9]{{1,{digits}}}(?:\.[0-9]*)?|\.[0-9]+)(?:{units})")
            })
            .collect();
        format!(
            r"^\+?(?:0|(?:{}){{1,{MAX_COMPONENTS}}})$",
            components.join("|")
        )
    }

    /// Why `s` is not an accepted duration (what [`pattern`] does not match), if it is not.
    pub(super) fn check(s: &str) -> Result<(), String> {
        if s.chars().count() > MAX_CHARS {
            return Err(format!(
                "duration {s:?}: longer than {MAX_CHARS} characters"
            ));
        }
        if s.starts_with('-') {
            return Err(format!("duration {s:?}: a report age cannot be negative"));
        }
        let mut rest = s.strip_prefix('+').unwrap_or(s);
        if rest == "0" {
            return Ok(());
        }
        if rest.is_empty() {
            return Err(format!("duration {s:?}: empty, expected e.g. 24h"));
        }
        let mut components = 0;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (number, tail) = rest.split_at(digits);
            let units = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(units);
            let Some(&(_, max_digits)) = UNITS.iter().find(|(u, _)| u.contains(&unit)) else {
                return Err(format!(
                    "duration {s:?}: expected a number and one of ns, us, \u{00b5}s, ms, s, m, h"
                ));
            };
            let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
            if fraction.contains('.') || (whole.is_empty() && fraction.is_empty()) {
                return Err(format!("duration {s:?}: {number:?} is not a number"));
            }
            if whole.len() > max_digits {
                return Err(format!(
                    "duration {s:?}: {number}{unit} has more than {max_digits} digits before the point"
                ));
            }
            components += 1;
            if components > MAX_COMPONENTS {
                return Err(format!(
                    "duration {s:?}: more than {MAX_COMPONENTS} components"
                ));
            }
            rest = tail;
        }
        Ok(())
    }
}

/// Monitoring objects generated for the deployment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Monitoring {
    /// A prometheus-operator ServiceMonitor scraping the runtime's `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_monitor: Option<ServiceMonitorSpec>,
    /// A PrometheusRule with latency and spoof-rate alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<RulesSpec>,
    /// A Grafana dashboard ConfigMap picked up by Grafana's sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboards: Option<DashboardsSpec>,
}

/// ServiceMonitor settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// Whether the ServiceMonitor is created.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Extra labels, e.g. the `release` label a Prometheus instance selects on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Scrape interval (Prometheus duration such as `30s`), at most 75s: the alert rules' shortest
    /// windows are 5 minutes, and `rate()` needs at least 4 samples in one to fire reliably.
    #[serde(default = "default_interval")]
    #[schemars(
        regex(
            pattern = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
        ),
        length(max = 32)
    )]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(h|m|s|ms))+$') && duration(self) > duration('0s') && duration(self) <= duration('75s')").message("serviceMonitor.interval must be more than 0 and at most 75s: the alert rules' 5-minute windows need at least 4 scrapes, or the spoof and error alerts never fire"))]
    pub interval: String,
}

impl Default for ServiceMonitorSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            labels: BTreeMap::new(),
            interval: default_interval(),
        }
    }
}

fn default_interval() -> String {
    "30s".to_owned()
}

/// PrometheusRule settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RulesSpec {
    /// Whether the PrometheusRule is created.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Alert when the p99 request latency over 5 minutes exceeds this many milliseconds (below
    /// 10 000: the latency histogram's top bucket is 10 s, past which the p99 cannot be told).
    #[serde(default = "default_p99")]
    #[schemars(range(min = 1, max = bounds::P99_LATENCY_MS))]
    pub p99_latency_ms: i32,
    /// Alert when more spoof attempts than this are detected per minute (5-minute average).
    #[serde(default = "default_spoof_rate")]
    #[schemars(range(min = 0.0))]
    pub spoof_rate_per_minute: f64,
    /// Extra labels, e.g. the `release` label a Prometheus instance selects rules on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Default for RulesSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            p99_latency_ms: default_p99(),
            spoof_rate_per_minute: default_spoof_rate(),
            labels: BTreeMap::new(),
        }
    }
}

fn default_p99() -> i32 {
    500
}

fn default_spoof_rate() -> f64 {
    5.0
}

/// Grafana dashboard settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardsSpec {
    /// Whether the dashboard ConfigMap is created.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Grafana folder (annotation `grafana_folder` read by the sidecar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
}

impl Default for DashboardsSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            folder: None,
        }
    }
}

/// Alert delivery.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Alerting {
    /// Email receiver for Alertmanager and the runtime's own alert emails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailAlerting>,
}

/// Email alert settings; the SMTP password and a private CA come from Secrets. Credentials only
/// cross the network inside TLS: without `requireTls` the relay must not ask for AUTH.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.requireTls || !has(self.authSecretRef)").message("authSecretRef needs requireTls: the SMTP password would cross the network in clear text"))]
#[x_kube(validation = Rule::new("has(self.authSecretRef) || !has(self.authUsername)").message("authUsername needs authSecretRef (the password)"))]
#[serde(rename_all = "camelCase")]
pub struct EmailAlerting {
    /// Recipient address.
    #[x_kube(validation = Rule::new("self.matches('^[^@ ]+@[^@ ]+$')").message("to must be an email address"))]
    pub to: String,
    /// Sender address.
    #[x_kube(validation = Rule::new("self.matches('^[^@ ]+@[^@ ]+$')").message("from must be an email address"))]
    pub from: String,
    /// SMTP server as `host:port`.
    #[x_kube(validation = Rule::new("self.matches('^[^: ]+:[0-9]+$')").message("smarthost must be host:port"))]
    pub smarthost: String,
    /// SMTP user name; defaults to `from`. Only with `authSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_username: Option<String>,
    /// Secret key holding the SMTP password; omit it for a relay that takes mail without AUTH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<KeyRef>,
    /// Secret key holding the PEM certificate(s) of a private CA that signed the SMTP server's
    /// certificate, trusted by the runtime besides the public web roots built into it (Mozilla's
    /// list, not the image's system store) and by Alertmanager besides its system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<KeyRef>,
    /// Require TLS: STARTTLS, or implicit TLS when the port is 465 (default true). Turning it off
    /// is for a trusted relay without AUTH only (no `authSecretRef`).
    #[serde(default = "default_true")]
    pub require_tls: bool,
    /// Extra labels on the AlertmanagerConfig, e.g. the label the Alertmanager resource's
    /// `alertmanagerConfigSelector` selects on: one it does not select is never loaded, and no
    /// alert of this deployment is mailed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Web UI switch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ui {
    /// Whether the runtime serves the bundled UI at `/` (passed as `FACEKEY_UI_ENABLED`).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

/// Observed state written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct FaceKeyDeploymentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled, Progressing, Degraded, ScanGatePassed, MonitoringReady and
    /// PersistentStore conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Runtime pods counted by the Deployment (the /scale status replicas).
    #[serde(default)]
    pub replicas: i32,
    /// Runtime pods ready to serve.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the runtime pods, in string form (the /scale label selector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Image of the runtime Deployment's pod template, i.e. the image that serves:
    /// `repository@sha256:…` as the scan resolved it (`spec.image` as written with the gate
    /// disabled); the last-known-good one while a newer `spec.image` is held by the scan gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_image: Option<String>,
    /// The last image the scan gate admitted (same form as `currentImage`): what the Deployment
    /// runs, and is recreated or reverted to, while a newer `spec.image` is held by the gate. An
    /// image that ran by tag with the gate off is held by the digest its pods run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_known_good_image: Option<String>,
    /// Scan verdicts kept as state, one per image: the one of `spec.image`, the one of the
    /// last-known-good image, and the passed one of the image admitted before it, so a rollback
    /// to that image needs no new scan (at most three). A scan Job deleted by its TTL changes
    /// nothing here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scans: Vec<ScanStatus>,
    /// The latest rescan of the image the Deployment runs (the last-known-good one, by its
    /// digest), made once its scan is older than `scanGate.maxReportAge` while `spec.image` names
    /// it: vulnerabilities published after it was admitted show here (`verdict: Blocked`). A
    /// report, never a rollback (there is no better image to go back to): roll out a fixed one.
    /// Gone once another image is admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_image_scan: Option<ScanStatus>,
    /// In-cluster URL of the runtime Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Application pods running this resource's injected sidecar (written by the operator's
    /// sidecar counter, a field manager of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarStatus>,
}

/// Pods carrying the injected runtime sidecar. Pods keep the image they were admitted with:
/// after an image change they run an outdated sidecar until the application rolls them (its
/// decision, never the operator's).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SidecarStatus {
    /// The image new pods get (`repository@sha256:…`, the last-known-good image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Pods of the namespace running this resource's sidecar.
    #[serde(default)]
    pub injected_pods: i32,
    /// Hash of the sidecar settings new pods get (thresholds, lockout, alerting, store, …;
    /// the pods' `facekey.dev/sidecar-config` annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Of those, pods whose sidecar runs another image than `image`, or other settings than
    /// `config` (pods injected before settings were recorded count as outdated).
    #[serde(default)]
    pub outdated_pods: i32,
    /// Pods of the namespace that ask for this resource's sidecar (`facekey.dev/inject`) but
    /// run without it: admitted while no webhook answered (`failurePolicy: Ignore`), or skipped
    /// (the reasons are Events on the pods' owners).
    #[serde(default)]
    pub missing_pods: i32,
}

/// Outcome of a scan under the policy it was evaluated with.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ScanVerdict {
    /// No counted finding above `maxSeverity`: the image may roll out.
    Passed,
    /// Findings above `maxSeverity`: the image is held, the last-known-good one keeps serving.
    #[default]
    Blocked,
    /// The scan produced no usable report (failed Job, unreadable summary, no digest).
    Failed,
}

/// Distinct vulnerabilities per severity counted under the policy (after `ignoreCVEs` and
/// `allowUnfixed`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SeverityCounts {
    /// Critical findings.
    #[serde(default)]
    pub critical: i32,
    /// High findings.
    #[serde(default)]
    pub high: i32,
    /// Medium findings.
    #[serde(default)]
    pub medium: i32,
    /// Low findings.
    #[serde(default)]
    pub low: i32,
    /// Findings the scanner could not rate.
    #[serde(default)]
    pub unknown: i32,
}

/// The verdict of one scanned image, kept in the status so it outlives the scan Job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScanStatus {
    /// The image reference as written in `spec.image` when it was scanned.
    pub image: String,
    /// The manifest digest (`sha256:…`) the scan resolved the reference to: what is deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Passed, Blocked or Failed.
    pub verdict: ScanVerdict,
    /// Human-readable verdict (the `ScanGatePassed` message).
    #[serde(default)]
    pub message: String,
    /// Counted findings per severity.
    #[serde(default)]
    pub counts: SeverityCounts,
    /// Findings above `maxSeverity` after ignores; non-zero blocks.
    #[serde(default)]
    pub blocking: i32,
    /// Hash of the policy (`maxSeverity`, `allowUnfixed`, `ignoreCVEs`) the verdict was
    /// evaluated under; a different policy re-evaluates (or rescans) the image.
    #[serde(default)]
    pub policy_hash: String,
    /// Where the report came from: `Job/<name>` or `VulnerabilityReport/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_ref: Option<String>,
    /// When the scanner produced the report (`maxReportAge` counts from here); on a Failed
    /// record of a scan Job, when the Job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanned_at: Option<Time>,
    /// Failed scan Jobs of this image in a row (Failed records only). Each new attempt waits
    /// twice as long as the one before: 10 minutes after the first failure, at most an hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
}

/// The CRD as shipped: [`FaceKeyDeployment::crd`] with the annotations that keep GitOps tools
/// from deleting it when the operator's own Application or Kustomization is removed or pruned
/// (deleting the CRD deletes every FaceKeyDeployment, and with them every runtime): Argo CD's
/// `Delete=false,Prune=false` and Flux's `prune: disabled`.
pub fn protected_crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    let mut crd = FaceKeyDeployment::crd();
    let annotations = crd.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in CRD_PROTECTION_ANNOTATIONS {
        annotations.insert(k.to_owned(), v.to_owned());
    }
    crd
}

/// The annotations of [`protected_crd`].
pub const CRD_PROTECTION_ANNOTATIONS: [(&str, &str); 2] = [
    (
        "argocd.argoproj.io/sync-options",
        "Delete=false,Prune=false",
    ),
    ("kustomize.toolkit.fluxcd.io/prune", "disabled"),
];

/// Render the CustomResourceDefinition as YAML, exactly as committed in `crds/facekeydeployment.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(&protected_crd())?;
    Ok(format!(
        "# Generated by `cargo run -p facekey-crds --bin crdgen`; do not edit by hand.\n{body}"
    ))
}
