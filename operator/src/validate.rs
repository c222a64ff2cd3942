//! Semantic checks of a FaceKeyDeployment spec, run before any desired object is computed or applied.
//!
//! The CRD's CEL rules enforce the same invariants on API servers that evaluate them; the operator
//! repeats them so `render` catches mistakes offline and an object that slipped past admission (an
//! older server, a CRD installed without validation) is reported as `InvalidSpec` instead of being
//! half-applied.

use facekey_crds::{FaceKeyDeploymentSpec, KeyRef, Store};

/// One broken rule of a spec; the message names the field as the user wrote it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    /// `image` is empty or blank.
    #[error("image must not be empty")]
    EmptyImage,
    /// `metadata.name` cannot produce valid child names.
    #[error(transparent)]
    InvalidName(InvalidName),
    /// Both `replicas` (other than its default 1) and `autoscaling` are set.
    #[error("set either replicas or autoscaling, not both")]
    ReplicasAndAutoscaling,
    /// `replicas` is negative.
    #[error("replicas must be >= 0, got {0}")]
    NegativeReplicas(i32),
    /// `autoscaling.minReplicas` is below 1.
    #[error("autoscaling.minReplicas must be >= 1")]
    MinReplicasBelowOne,
    /// `autoscaling.minReplicas` exceeds `maxReplicas`.
    #[error("autoscaling.minReplicas ({min}) must not exceed maxReplicas ({max})")]
    MinAboveMax {
        /// `minReplicas`.
        min: i32,
        /// `maxReplicas`.
        max: i32,
    },
    /// `autoscaling` has no target metric.
    #[error("autoscaling needs targetCPUUtilizationPercentage and/or targetRequestsPerSecond")]
    NoAutoscalingTarget,
    /// A threshold outside `[0, 1]`.
    #[error("thresholds.{name} must be in [0, 1], got {value}")]
    ThresholdOutOfRange {
        /// `auth`, `spoof` or `match`.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// `scoreWeights` sets neither or both of its sources.
    #[error("scoreWeights: set exactly one of inline or configMapKeyRef")]
    ScoreWeightsSource,
    /// `spoof` sets none or several of its sources.
    #[error("spoof: set exactly one of configMap, pvc or uri")]
    SpoofModelSource,
    /// `spoof.uri`: the runtime never downloads models, so its pods would never start.
    #[error(
        "spoof.uri is not supported: the runtime never downloads models; put them on a PersistentVolumeClaim (pvc) or in a ConfigMap (configMap)"
    )]
    SpoofModelUri,
    /// `alerting.email.to` or `.from` is not an address.
    #[error("alerting.email.{field} must be an email address")]
    EmailAddress {
        /// `to` or `from`.
        field: &'static str,
    },
    /// `alerting.email.smarthost` is not `host:port`.
    #[error("alerting.email.smarthost must be host:port")]
    Smarthost,
    /// `alerting.email.authSecretRef` or `.caSecretRef` lacks its name or key.
    #[error("alerting.email.{field} needs name and key")]
    EmailSecretRef {
        /// `authSecretRef` or `caSecretRef`.
        field: &'static str,
    },
    /// `store.maxSubjects` or `store.maxTemplates` is 0 (nothing could ever be enrolled).
    #[error("store.{field} must be at least 1")]
    StoreLimit {
        /// `maxSubjects` or `maxTemplates`.
        field: &'static str,
    },
    /// `alerting.email.authSecretRef` without `requireTls`.
    #[error(
        "alerting.email.authSecretRef needs requireTls: the SMTP password would cross the network in clear text"
    )]
    CredentialsWithoutTls,
    /// `alerting.email.authUsername` without `authSecretRef`.
    #[error("alerting.email.authUsername needs authSecretRef (the password)")]
    UsernameWithoutPassword,
    /// `store` sets neither or both of `embedded` and `postgres`.
    #[error("store: set exactly one of embedded or postgres")]
    StoreSource,
    /// `store.postgres` sets neither or both of `urlSecretRef` and `cloudNativePG`.
    #[error("store.postgres: set exactly one of urlSecretRef or cloudNativePG")]
    PostgresSource,
    /// `autoscaling` with `store.embedded`: the ReadWriteOnce volume serves one pod.
    #[error("an embedded store serves one pod: autoscaling needs store.postgres")]
    EmbeddedStoreAutoscaling,
    /// A Secret reference of `store` lacks its name or key.
    #[error("store.{field} needs name and key")]
    StoreSecretRef {
        /// `postgres.urlSecretRef` or `templateKeySecretRef`.
        field: &'static str,
    },
    /// `store.postgres.cloudNativePG.instances` is below 1.
    #[error("store.postgres.cloudNativePG.instances must be >= 1, got {0}")]
    CloudNativePgInstances(i32),
    /// `store.postgres.cloudNativePG.synchronousReplicas` is negative or not below `instances`.
    #[error(
        "store.postgres.cloudNativePG.synchronousReplicas must be between 0 and instances - 1 \
         ({instances} instances), got {synchronous}"
    )]
    CloudNativePgSynchronous {
        /// The asked number of synchronous standbys.
        synchronous: i32,
        /// The instances of the Cluster.
        instances: i32,
    },
    /// `auth.keysSecretRef` lacks its name or key.
    #[error("auth.keysSecretRef needs name and key")]
    ApiKeysSecretRef,
    /// A peer of `networkPolicy.apiFrom` / `.metricsFrom` has no selector (it would admit
    /// everything).
    #[error("networkPolicy.{field}[{index}]: a peer needs namespaceSelector and/or podSelector")]
    EmptyNetworkPeer {
        /// `apiFrom` or `metricsFrom`.
        field: &'static str,
        /// Position in the list.
        index: usize,
    },
    /// `scanGate` is looser than the operator's policy floor (the message names the flag).
    #[error("{0}")]
    PolicyFloor(String),
    /// `pod.labels` sets a label the operator sets on the runtime pods (its selector).
    #[error("pod.labels must not set the operator's label {0}")]
    ReservedPodLabel(String),
    /// `pod.annotations` sets a `facekey.dev/` key.
    #[error("pod.annotations must not set {0} (facekey.dev/ keys are the operator's)")]
    ReservedPodAnnotation(String),
    /// A number of `verification` or `store` outside the bounds the runtime accepts (the
    /// schema's `minimum`/`maximum`).
    #[error("{field} must be between {min} and {max}, got {value}")]
    OutOfRange {
        /// The field as written, e.g. `verification.sessions.ttlSeconds`.
        field: &'static str,
        /// The value given.
        value: f64,
        /// Least accepted value.
        min: f64,
        /// Largest accepted value.
        max: f64,
    },
    /// `settings` names something that is not one of `facekey_crds::RUNTIME_SETTINGS` (the
    /// schema drops such names; one got past it).
    #[error(
        "settings.{0} cannot be set: settings takes only {names} (the other runtime settings are the operator's or have a field in the spec)",
        names = settings_names()
    )]
    UnknownSetting(String),
    /// A `settings` value with a line break or longer than the schema allows.
    #[error(
        "settings.{0} must be one line of at most {max} characters",
        max = facekey_crds::MAX_SETTING_LENGTH
    )]
    SettingValue(String),
    /// A `settings` value the runtime refuses at start-up (its flag parser, its log filter, or
    /// its check between settings): pods given it would never become ready, and with the
    /// embedded store's `Recreate` strategy none of the old pods would be left serving.
    #[error("settings.{field}: {reason} (the runtime would refuse to start with it)")]
    SettingRefused {
        /// The `settings` name.
        field: String,
        /// Why the runtime refuses it.
        reason: String,
    },
    /// A setting the runtime refuses to start with unless `FACEKEY_ALLOW_INSECURE` is true
    /// (its own start-up check), named with the reason.
    #[error("{0}: the runtime refuses to start with it unless settings.allowInsecure is \"true\"")]
    Insecure(&'static str),
}

/// `metadata.name` cannot produce valid child names (the CRD's CEL rule on the name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "metadata.name {name:?} must be a DNS-1035 label of at most {max} characters (lower-case \
     letters, digits and '-', starting with a letter): the operator derives the Service and child \
     names such as <name>-scan-<hash> (63 at most) from it",
    max = facekey_crds::MAX_NAME_LENGTH
)]
pub struct InvalidName {
    /// The name given.
    pub name: String,
}

/// Check a FaceKeyDeployment's name: the Service is named after it (a DNS-1035 label) and the
/// longest child name and label value stay within 63 characters ([`facekey_crds::MAX_NAME_LENGTH`]).
pub fn validate_name(name: &str) -> Result<(), InvalidSpec> {
    let mut chars = name.chars();
    let dns_1035 = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if dns_1035 && name.len() <= facekey_crds::MAX_NAME_LENGTH {
        return Ok(());
    }
    Err(InvalidSpec {
        problems: vec![Problem::InvalidName(InvalidName {
            name: name.to_owned(),
        })],
    })
}

/// The error of [`validate`]: every problem of the spec, never only the first.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid spec: {}", self.message())]
pub struct InvalidSpec {
    /// The broken rules, in the order they were checked (never empty).
    pub problems: Vec<Problem>,
}

impl InvalidSpec {
    /// The problems separated by `; `: the message of the status condition and the Event.
    pub fn message(&self) -> String {
        let texts: Vec<String> = self.problems.iter().map(Problem::to_string).collect();
        texts.join("; ")
    }
}

/// Check `spec`; the error lists every problem found.
pub fn validate(spec: &FaceKeyDeploymentSpec) -> Result<(), InvalidSpec> {
    let mut problems = Vec::new();
    if spec.image.trim().is_empty() {
        problems.push(Problem::EmptyImage);
    }
    // The CRD defaults `replicas` to 1 (for `/scale`), so 1 beside `autoscaling` is not a choice.
    if spec.replicas.is_some_and(|r| r != 1) && spec.autoscaling.is_some() {
        problems.push(Problem::ReplicasAndAutoscaling);
    }
    if let Some(rules) = spec.monitoring.as_ref().and_then(|m| m.rules.as_ref()) {
        check_range(
            "monitoring.rules.p99LatencyMs",
            Some(f64::from(rules.p99_latency_ms)),
            (1.0, f64::from(facekey_crds::bounds::P99_LATENCY_MS)),
            &mut problems,
        );
    }
    if let Some(replicas) = spec.replicas
        && replicas < 0
    {
        problems.push(Problem::NegativeReplicas(replicas));
    }
    if let Some(a) = &spec.autoscaling {
        if a.min_replicas < 1 {
            problems.push(Problem::MinReplicasBelowOne);
        }
        if a.min_replicas > a.max_replicas {
            problems.push(Problem::MinAboveMax {
                min: a.min_replicas,
                max: a.max_replicas,
            });
        }
        if a.target_cpu_utilization_percentage.is_none() && a.target_requests_per_second.is_none() {
            problems.push(Problem::NoAutoscalingTarget);
        }
    }
    if let Some(models) = &spec.models {
        if let Some(t) = &models.thresholds {
            for (name, value) in [("auth", t.auth), ("spoof", t.spoof), ("match", t.match_)] {
                if let Some(v) = value
                    && !(0.0..=1.0).contains(&v)
                {
                    problems.push(Problem::ThresholdOutOfRange { name, value: v });
                }
            }
        }
        if let Some(w) = &models.score_weights
            && w.inline.is_some() == w.config_map_key_ref.is_some()
        {
            problems.push(Problem::ScoreWeightsSource);
        }
        if let Some(s) = &models.spoof {
            let set = [s.config_map.is_some(), s.pvc.is_some(), s.uri.is_some()]
                .iter()
                .filter(|b| **b)
                .count();
            if set != 1 {
                problems.push(Problem::SpoofModelSource);
            }
            if s.uri.is_some() {
                problems.push(Problem::SpoofModelUri);
            }
        }
    }
    if let Some(email) = spec.alerting.as_ref().and_then(|a| a.email.as_ref()) {
        for (field, value) in [("to", &email.to), ("from", &email.from)] {
            if !is_address(value) {
                problems.push(Problem::EmailAddress { field });
            }
        }
        if parse_smarthost(&email.smarthost).is_none() {
            problems.push(Problem::Smarthost);
        }
        for (field, r) in [
            ("authSecretRef", &email.auth_secret_ref),
            ("caSecretRef", &email.ca_secret_ref),
        ] {
            if r.as_ref()
                .is_some_and(|r| r.name.is_empty() || r.key.is_empty())
            {
                problems.push(Problem::EmailSecretRef { field });
            }
        }
        if email.auth_secret_ref.is_some() && !email.require_tls {
            problems.push(Problem::CredentialsWithoutTls);
        }
        if email.auth_secret_ref.is_none() && email.auth_username.is_some() {
            problems.push(Problem::UsernameWithoutPassword);
        }
    }
    if let Some(store) = &spec.store {
        store_problems(spec, store, &mut problems);
    }
    if let Some(r) = spec.auth.as_ref().and_then(|a| a.keys_secret_ref.as_ref())
        && (r.name.is_empty() || r.key.is_empty())
    {
        problems.push(Problem::ApiKeysSecretRef);
    }
    if let Some(np) = &spec.network_policy {
        for (field, peers) in [("apiFrom", &np.api_from), ("metricsFrom", &np.metrics_from)] {
            for (index, p) in peers.iter().enumerate() {
                if p.namespace_selector.is_none() && p.pod_selector.is_none() {
                    problems.push(Problem::EmptyNetworkPeer { field, index });
                }
            }
        }
    }
    if let Some(pod) = &spec.pod {
        pod_problems(pod, &mut problems);
    }
    verification_problems(spec, &mut problems);
    settings_problems(spec, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(InvalidSpec { problems })
    }
}

/// `field` within `[min, max]` (the schema's bounds, repeated for objects that got past them).
fn check_range(
    field: &'static str,
    value: Option<f64>,
    (min, max): (f64, f64),
    problems: &mut Vec<Problem>,
) {
    if let Some(value) = value
        && !(min..=max).contains(&value)
    {
        problems.push(Problem::OutOfRange {
            field,
            value,
            min,
            max,
        });
    }
}

/// Bounds of `verification` and `store.maxFacesPerSubject` / `maxSubjectsPerKey` /
/// `maxTemplatesPerKey`: the
/// schema's ([`facekey_crds::bounds`]), the runtime's own.
fn verification_problems(spec: &FaceKeyDeploymentSpec, problems: &mut Vec<Problem>) {
    use facekey_crds::bounds;
    let mut check = |field, value: Option<u32>, min: u32, max: u32| {
        check_range(
            field,
            value.map(f64::from),
            (f64::from(min), f64::from(max)),
            problems,
        );
    };
    if let Some(store) = &spec.store {
        check(
            "store.maxFacesPerSubject",
            store.max_faces_per_subject,
            1,
            bounds::FACES_PER_SUBJECT,
        );
        check(
            "store.maxSubjectsPerKey",
            store.max_subjects_per_key,
            0,
            bounds::STORE_ITEMS,
        );
        check(
            "store.maxTemplatesPerKey",
            store.max_templates_per_key,
            0,
            bounds::STORE_ITEMS,
        );
    }
    let Some(v) = &spec.verification else {
        return;
    };
    if let Some(s) = &v.sessions {
        check(
            "verification.sessions.ttlSeconds",
            s.ttl_seconds,
            1,
            bounds::SESSION_TTL_SECONDS,
        );
        check(
            "verification.sessions.maxFrames",
            s.max_frames,
            1,
            bounds::SESSION_FRAMES,
        );
        check(
            "verification.sessions.maxOpen",
            s.max_open,
            1,
            bounds::SESSIONS_OPEN,
        );
        check(
            "verification.sessions.maxOpenPerKey",
            s.max_open_per_key,
            1,
            bounds::SESSIONS_OPEN,
        );
    }
    if let Some(l) = &v.lockout {
        check(
            "verification.lockout.attempts",
            l.attempts,
            0,
            bounds::LOCKOUT_ATTEMPTS,
        );
        check(
            "verification.lockout.windowSeconds",
            l.window_seconds,
            1,
            bounds::LOCKOUT_PERIOD_SECONDS,
        );
        check(
            "verification.lockout.durationSeconds",
            l.duration_seconds,
            1,
            bounds::LOCKOUT_PERIOD_SECONDS,
        );
        check(
            "verification.lockout.maxDurationSeconds",
            l.max_duration_seconds,
            0,
            bounds::LOCKOUT_PERIOD_SECONDS,
        );
    }
    if let Some(min_quality) = v.enrolment.as_ref().and_then(|e| e.min_quality) {
        check_range(
            "verification.enrolment.minQuality",
            Some(min_quality),
            (0.0, 1.0),
            problems,
        );
    }
    let weights = spec
        .models
        .as_ref()
        .is_some_and(|m| m.score_weights.is_some());
    if v.decision_policy == Some(facekey_crds::DecisionPolicy::Fusion)
        && !weights
        && !allows_insecure(spec)
    {
        problems.push(Problem::Insecure(
            "verification.decisionPolicy fusion without models.scoreWeights (the built-in reference weights are not calibrated)",
        ));
    }
}

/// The names `spec.settings` accepts, for messages.
fn settings_names() -> String {
    facekey_crds::RUNTIME_SETTINGS
        .iter()
        .map(|name| facekey_crds::settings_field(name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `settings` turns the runtime's start-up safety check into warnings.
fn allows_insecure(spec: &FaceKeyDeploymentSpec) -> bool {
    spec.settings
        .get("allowInsecure")
        .is_some_and(|v| v == "true")
}

/// `settings` names only [`facekey_crds::RUNTIME_SETTINGS`], with one-line values, and does not
/// turn liveness off without saying it is insecure.
fn settings_problems(spec: &FaceKeyDeploymentSpec, problems: &mut Vec<Problem>) {
    for (name, value) in &spec.settings {
        if facekey_crds::setting_env_name(name).is_none() {
            problems.push(Problem::UnknownSetting(name.clone()));
        } else if value.chars().count() > facekey_crds::MAX_SETTING_LENGTH
            || value.contains(['\r', '\n'])
        {
            problems.push(Problem::SettingValue(name.clone()));
        } else if let Err(reason) = setting_value(name, value) {
            problems.push(Problem::SettingRefused {
                field: name.clone(),
                reason,
            });
        }
    }
    body_memory_problem(spec, problems);
    if spec.settings.get("liveness").is_some_and(|v| v == "off") && !allows_insecure(spec) {
        problems.push(Problem::Insecure(
            "settings.liveness off (every face counts as live)",
        ));
    }
    if spec
        .settings
        .get("corsOrigins")
        .is_some_and(|v| v.split(',').any(|o| o.trim() == "*"))
        && !allows_insecure(spec)
    {
        problems.push(Problem::Insecure(
            "settings.corsOrigins * (any web site may call the API from its visitors' browsers)",
        ));
    }
    let loose_match = spec
        .models
        .as_ref()
        .and_then(|m| m.thresholds.as_ref())
        .and_then(|t| t.match_)
        .is_some_and(|m| m < facekey_settings::defaults::MATCH_THRESHOLD);
    if loose_match && !allows_insecure(spec) {
        problems.push(Problem::Insecure(
            "models.thresholds.match below 0.5 (looser than dlib's distance 0.6: more impostors match)",
        ));
    }
}

/// Whether the runtime accepts `value` for the `settings` name `field` (one of
/// [`facekey_crds::RUNTIME_SETTINGS`]): its flag parser's rules
/// ([`facekey_settings::values::check`]), and for `log` its filter syntax.
fn setting_value(field: &str, value: &str) -> Result<(), String> {
    let Some(env_name) = facekey_crds::setting_env_name(field) else {
        return Ok(());
    };
    if env_name == facekey_settings::env::LOG {
        return tracing_subscriber::EnvFilter::try_new(value)
            .map(drop)
            .map_err(|e| format!("invalid log filter {value:?}: {e}"));
    }
    facekey_settings::values::check(env_name, value)
}

/// `settings.maxBodyMemoryBytes` (or its default) is at least `settings.maxBodyBytes` (or its
/// default), as the runtime's start-up check requires: a body of the largest allowed size must
/// fit in the memory budget.
fn body_memory_problem(spec: &FaceKeyDeploymentSpec, problems: &mut Vec<Problem>) {
    use facekey_settings::defaults;
    let number = |field: &str, default: usize| match spec.settings.get(field) {
        Some(v) => v.parse::<u64>().ok(),
        None => u64::try_from(default).ok(),
    };
    let body = number("maxBodyBytes", defaults::MAX_BODY_BYTES);
    let memory = number("maxBodyMemoryBytes", defaults::MAX_BODY_MEMORY_BYTES);
    if let (Some(body), Some(memory)) = (body, memory)
        && memory < body
    {
        problems.push(Problem::SettingRefused {
            field: "maxBodyMemoryBytes".into(),
            reason: format!(
                "{memory} is below maxBodyBytes ({body}): a body of the largest allowed size \
                 could never be received"
            ),
        });
    }
}

/// Pod labels and annotations must leave the operator's keys alone (the CRD's CEL rules).
fn pod_problems(pod: &facekey_crds::PodOverrides, problems: &mut Vec<Problem>) {
    let reserved = |k: &str| k.starts_with(facekey_crds::RESERVED_PREFIX);
    for k in pod.labels.keys() {
        if reserved(k) || facekey_crds::RESERVED_POD_LABELS.contains(&k.as_str()) {
            problems.push(Problem::ReservedPodLabel(k.clone()));
        }
    }
    for k in pod.annotations.keys().filter(|k| reserved(k)) {
        problems.push(Problem::ReservedPodAnnotation(k.clone()));
    }
}

fn store_problems(spec: &FaceKeyDeploymentSpec, store: &Store, problems: &mut Vec<Problem>) {
    if store.embedded.is_some() == store.postgres.is_some() {
        problems.push(Problem::StoreSource);
    }
    if store.embedded.is_some() && spec.autoscaling.is_some() {
        problems.push(Problem::EmbeddedStoreAutoscaling);
    }
    let blank = |r: &KeyRef| r.name.is_empty() || r.key.is_empty();
    if let Some(pg) = &store.postgres {
        if pg.url_secret_ref.is_some() == pg.cloud_native_pg.is_some() {
            problems.push(Problem::PostgresSource);
        }
        for (field, r) in [
            ("postgres.urlSecretRef", &pg.url_secret_ref),
            ("postgres.caSecretRef", &pg.ca_secret_ref),
        ] {
            if r.as_ref().is_some_and(blank) {
                problems.push(Problem::StoreSecretRef { field });
            }
        }
        if let Some(cnpg) = &pg.cloud_native_pg
            && cnpg.instances < 1
        {
            problems.push(Problem::CloudNativePgInstances(cnpg.instances));
        }
        if let Some(cnpg) = &pg.cloud_native_pg
            && let Some(synchronous) = cnpg.synchronous_replicas
            && !(0..cnpg.instances).contains(&synchronous)
        {
            problems.push(Problem::CloudNativePgSynchronous {
                synchronous,
                instances: cnpg.instances,
            });
        }
    }
    for (field, limit) in [
        ("maxSubjects", store.max_subjects),
        ("maxTemplates", store.max_templates),
    ] {
        if limit == Some(0) {
            problems.push(Problem::StoreLimit { field });
        }
    }
    if store.template_key_secret_ref.as_ref().is_some_and(blank) {
        problems.push(Problem::StoreSecretRef {
            field: "templateKeySecretRef",
        });
    }
}

fn is_address(s: &str) -> bool {
    let mut parts = s.split('@');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(local), Some(domain), None)
            if !local.is_empty() && !domain.is_empty() && !s.contains(char::is_whitespace)
    )
}

/// Split `host:port`; `None` unless the port is a number and the host is non-empty.
pub fn parse_smarthost(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use facekey_crds::{Autoscaling, Models, Thresholds};

    fn spec() -> FaceKeyDeploymentSpec {
        serde_json::from_value(serde_json::json!({"image": "img:1"})).unwrap()
    }

    #[test]
    fn minimal_spec_is_valid() {
        validate(&spec()).unwrap();
    }

    #[test]
    fn reports_every_problem() {
        let mut s = spec();
        s.image = " ".into();
        s.replicas = Some(2);
        s.autoscaling = Some(Autoscaling {
            min_replicas: 4,
            max_replicas: 2,
            target_cpu_utilization_percentage: None,
            target_requests_per_second: None,
        });
        s.models = Some(Models {
            thresholds: Some(Thresholds {
                auth: Some(1.2),
                ..Default::default()
            }),
            ..Default::default()
        });
        let msg = validate(&s).unwrap_err().message();
        for needle in [
            "image must not be empty",
            "not both",
            "must not exceed maxReplicas",
            "needs targetCPUUtilizationPercentage",
            "thresholds.auth must be in [0, 1], got 1.2",
        ] {
            assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
        }
    }

    #[test]
    fn error_text_starts_with_invalid_spec() {
        // `render` prints this and tests/operator/check.sh looks for the prefix.
        let mut s = spec();
        s.replicas = Some(-1);
        let err = validate(&s).unwrap_err();
        assert_eq!(err.problems, [Problem::NegativeReplicas(-1)]);
        assert_eq!(
            err.to_string(),
            "invalid spec: replicas must be >= 0, got -1"
        );
    }

    fn parse(spec: serde_json::Value) -> FaceKeyDeploymentSpec {
        serde_json::from_value(spec).unwrap()
    }

    #[test]
    fn verification_bounds_are_the_runtimes() {
        let s = parse(serde_json::json!({"image": "img:1",
            "store": {"embedded": {}, "maxFacesPerSubject": 0},
            "verification": {
                "sessions": {"ttlSeconds": 7200, "maxFrames": 0, "maxOpen": 1, "maxOpenPerKey": 1},
                "lockout": {"attempts": 1001, "windowSeconds": 60, "durationSeconds": 0,
                    "maxDurationSeconds": 31_622_401},
                "enrolment": {"minQuality": 1.5}}}));
        let fields: Vec<&str> = validate(&s)
            .unwrap_err()
            .problems
            .iter()
            .map(|p| match p {
                Problem::OutOfRange { field, .. } => *field,
                other => panic!("unexpected {other}"),
            })
            .collect();
        assert_eq!(
            fields,
            [
                "store.maxFacesPerSubject",
                "verification.sessions.ttlSeconds",
                "verification.sessions.maxFrames",
                "verification.lockout.attempts",
                "verification.lockout.durationSeconds",
                "verification.lockout.maxDurationSeconds",
                "verification.enrolment.minQuality",
            ]
        );
        let ok = parse(serde_json::json!({"image": "img:1", "verification": {
            "requireSession": true, "lockout": {"attempts": 0, "maxDurationSeconds": 0},
            "sessions": {"ttlSeconds": 3600}}}));
        assert_eq!(validate(&ok), Ok(()));
    }

    /// A p99 alert threshold at or past the latency histogram's top bucket (10 s) could never
    /// fire: refused, as the schema's maximum refuses it.
    #[test]
    fn the_p99_alert_threshold_stays_below_the_top_latency_bucket() {
        let spec = |ms: i32| {
            parse(serde_json::json!({"image": "img:1",
                "monitoring": {"rules": {"p99LatencyMs": ms}}}))
        };
        assert_eq!(validate(&spec(9_999)), Ok(()));
        for ms in [0, 10_000, 60_000] {
            let problems = validate(&spec(ms)).unwrap_err().problems;
            assert!(
                matches!(
                    problems.as_slice(),
                    [Problem::OutOfRange {
                        field: "monitoring.rules.p99LatencyMs",
                        ..
                    }]
                ),
                "{ms}: {problems:?}"
            );
        }
    }

    #[test]
    fn settings_take_only_listed_names_and_single_lines() {
        let s = parse(serde_json::json!({"image": "img:1", "settings": {
            "maxBodyBytes": "4194304",
            "listen": "0.0.0.0:1",
            "FACEKEY_MAX_BODY_BYTES": "1",
            "corsOrigins": "https://a.example\nFACEKEY_LISTEN=x"}}));
        let problems = validate(&s).unwrap_err().problems;
        assert_eq!(
            problems,
            [
                Problem::UnknownSetting("FACEKEY_MAX_BODY_BYTES".into()),
                Problem::SettingValue("corsOrigins".into()),
                Problem::UnknownSetting("listen".into()),
            ]
        );
        assert!(problems[2].to_string().contains("maxBodyMemoryPerKeyShare"));
    }

    /// A value the runtime would refuse at start-up is refused before any rollout, naming the
    /// setting and why (`runtime/tests/operator_contract.rs` holds the rules to the runtime's).
    #[test]
    fn setting_values_the_runtime_refuses_are_invalid() {
        let s = parse(serde_json::json!({"image": "img:1", "settings": {
            "maxBatch": "0",
            "minFaceSize": "1",
            "liveness": "minifas ",
            "log": "facekey_runtime=[",
            "requestTimeoutSecs": "600",
            "maxBodyBytes": "200000000"}}));
        let problems = validate(&s).unwrap_err().problems;
        let fields: Vec<&str> = problems
            .iter()
            .map(|p| match p {
                Problem::SettingRefused { field, .. } => field.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            fields,
            [
                "liveness",
                "log",
                "maxBatch",
                "minFaceSize",
                "requestTimeoutSecs",
                "maxBodyMemoryBytes"
            ]
        );
        let message = problems[3].to_string();
        assert!(
            message.starts_with("settings.minFaceSize: must be 12 to 4096 pixels, got 1")
                && message.ends_with("(the runtime would refuse to start with it)"),
            "{message}"
        );
        assert!(
            problems[5]
                .to_string()
                .contains("below maxBodyBytes (200000000)")
        );
        // Values it accepts, and a memory budget raised with the body limit.
        let ok = parse(serde_json::json!({"image": "img:1", "settings": {
            "maxBatch": "64", "minFaceSize": "40", "liveness": "both", "log": "debug",
            "maxBodyBytes": "200000000", "maxBodyMemoryBytes": "400000000"}}));
        validate(&ok).unwrap();
    }

    #[test]
    fn insecure_choices_need_allow_insecure() {
        let fusion = parse(serde_json::json!({"image": "img:1",
            "verification": {"decisionPolicy": "fusion"}}));
        let off = parse(serde_json::json!({"image": "img:1", "settings": {"liveness": "off"}}));
        let loose = parse(serde_json::json!({"image": "img:1",
            "models": {"thresholds": {"match": 0.4}}}));
        let any_site = parse(serde_json::json!({"image": "img:1",
            "settings": {"corsOrigins": "https://a.example, *"}}));
        for spec in [&fusion, &off, &loose, &any_site] {
            let problems = validate(spec).unwrap_err().problems;
            assert!(
                matches!(problems.as_slice(), [Problem::Insecure(_)]),
                "{problems:?}"
            );
        }
        for mut spec in [fusion, off, loose, any_site] {
            spec.settings.insert("allowInsecure".into(), "true".into());
            assert_eq!(validate(&spec), Ok(()));
        }
        let weighted = parse(serde_json::json!({"image": "img:1",
            "models": {"scoreWeights": {"inline": "{}"}},
            "verification": {"decisionPolicy": "fusion"}}));
        assert_eq!(validate(&weighted), Ok(()));
        let strict_match = parse(serde_json::json!({"image": "img:1",
            "models": {"thresholds": {"match": 0.5}},
            "settings": {"corsOrigins": "https://a.example,https://b.example"}}));
        assert_eq!(validate(&strict_match), Ok(()));
    }

    #[test]
    fn store_limits_must_allow_an_enrolment() {
        let s: FaceKeyDeploymentSpec = serde_json::from_value(serde_json::json!({
            "image": "img:1", "store": {"embedded": {}, "maxSubjects": 0, "maxTemplates": 1}}))
        .unwrap();
        assert_eq!(
            validate(&s).unwrap_err().problems,
            [Problem::StoreLimit {
                field: "maxSubjects"
            }]
        );
    }

    #[test]
    fn a_spoof_model_uri_is_refused() {
        let s: FaceKeyDeploymentSpec = serde_json::from_value(serde_json::json!({
            "image": "img:1", "models": {"spoof": {"uri": "https://m.example/x.onnx"}}}))
        .unwrap();
        assert_eq!(validate(&s).unwrap_err().problems, [Problem::SpoofModelUri]);
        let s: FaceKeyDeploymentSpec = serde_json::from_value(serde_json::json!({
            "image": "img:1", "models": {"spoof": {"pvc": "models"}}}))
        .unwrap();
        validate(&s).unwrap();
    }

    #[test]
    fn email_credentials_need_tls_and_a_password() {
        let problems = |email: serde_json::Value| {
            let mut e = serde_json::json!({"to": "a@example.com", "from": "b@example.com",
                                           "smarthost": "relay.example.com:25"});
            if let (Some(o), Some(extra)) = (e.as_object_mut(), email.as_object()) {
                o.extend(extra.clone());
            }
            let s: FaceKeyDeploymentSpec = serde_json::from_value(
                serde_json::json!({"image": "img:1", "alerting": {"email": e}}),
            )
            .unwrap();
            validate(&s).err().map(|e| e.problems).unwrap_or_default()
        };
        let secret = serde_json::json!({"name": "smtp", "key": "password"});
        // A relay without AUTH, with or without TLS; credentials over TLS.
        assert_eq!(problems(serde_json::json!({"requireTls": false})), []);
        assert_eq!(problems(serde_json::json!({})), []);
        assert_eq!(
            problems(
                serde_json::json!({"authSecretRef": secret, "authUsername": "u",
                                        "caSecretRef": {"name": "ca", "key": "ca.crt"}})
            ),
            []
        );
        assert_eq!(
            problems(serde_json::json!({"authSecretRef": secret, "requireTls": false})),
            [Problem::CredentialsWithoutTls]
        );
        assert_eq!(
            problems(serde_json::json!({"authUsername": "u"})),
            [Problem::UsernameWithoutPassword]
        );
        assert_eq!(
            problems(serde_json::json!({"caSecretRef": {"name": "ca", "key": ""}})),
            [Problem::EmailSecretRef {
                field: "caSecretRef"
            }]
        );
    }

    #[test]
    fn store_problems_are_reported() {
        let with = |store: serde_json::Value, extra: serde_json::Value| {
            let mut v = serde_json::json!({"image": "img:1", "store": store});
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            let s: FaceKeyDeploymentSpec = serde_json::from_value(v).unwrap();
            validate(&s).err().map(|e| e.problems).unwrap_or_default()
        };
        let none = serde_json::json!({});
        let url = serde_json::json!({"name": "db", "key": "url"});
        assert_eq!(
            with(serde_json::json!({}), none.clone()),
            [Problem::StoreSource]
        );
        assert_eq!(
            with(
                serde_json::json!({"embedded": {}, "postgres": {"urlSecretRef": url}}),
                none.clone()
            ),
            [Problem::StoreSource]
        );
        assert_eq!(
            with(
                serde_json::json!({"embedded": {}}),
                serde_json::json!({"autoscaling": {"minReplicas": 1, "maxReplicas": 2,
                    "targetCPUUtilizationPercentage": 50}})
            ),
            [Problem::EmbeddedStoreAutoscaling]
        );
        assert_eq!(
            with(
                serde_json::json!({"postgres": {"urlSecretRef": {"name": "", "key": "url"},
                    "cloudNativePG": {"instances": 0}},
                    "templateKeySecretRef": {"name": "k", "key": ""}}),
                none.clone()
            ),
            [
                Problem::PostgresSource,
                Problem::StoreSecretRef {
                    field: "postgres.urlSecretRef"
                },
                Problem::CloudNativePgInstances(0),
                Problem::StoreSecretRef {
                    field: "templateKeySecretRef"
                },
            ]
        );
        assert_eq!(
            with(
                serde_json::json!({"postgres": {"cloudNativePG":
                    {"instances": 2, "synchronousReplicas": 2}}}),
                none.clone()
            ),
            [Problem::CloudNativePgSynchronous {
                synchronous: 2,
                instances: 2
            }]
        );
        // Valid stores; replicas above 1 with embedded are limited, not refused.
        for (store, extra) in [
            (
                serde_json::json!({"postgres": {"cloudNativePG":
                    {"instances": 3, "synchronousReplicas": 1}}}),
                none.clone(),
            ),
            (
                serde_json::json!({"embedded": {}}),
                serde_json::json!({"replicas": 3}),
            ),
            (
                serde_json::json!({"postgres": {"urlSecretRef": url}}),
                serde_json::json!({"autoscaling": {"minReplicas": 1, "maxReplicas": 2,
                    "targetCPUUtilizationPercentage": 50}}),
            ),
            (
                serde_json::json!({"postgres": {"cloudNativePG": {}}}),
                none.clone(),
            ),
        ] {
            assert_eq!(with(store.clone(), extra), [], "{store}");
        }
    }

    #[test]
    fn access_problems_are_reported() {
        let s: FaceKeyDeploymentSpec = serde_json::from_value(serde_json::json!({
            "image": "img:1",
            "auth": {"keysSecretRef": {"name": "", "key": "api-keys"}},
            "networkPolicy": {"apiFrom": [{"podSelector": {}}, {}], "metricsFrom": [{}]},
        }))
        .unwrap();
        assert_eq!(
            validate(&s).unwrap_err().problems,
            [
                Problem::ApiKeysSecretRef,
                Problem::EmptyNetworkPeer {
                    field: "apiFrom",
                    index: 1
                },
                Problem::EmptyNetworkPeer {
                    field: "metricsFrom",
                    index: 0
                },
            ]
        );
    }

    #[test]
    fn smarthost_parsing() {
        assert_eq!(
            parse_smarthost("smtp.example.com:587"),
            Some(("smtp.example.com", 587))
        );
        assert_eq!(parse_smarthost("smtp.example.com"), None);
        assert_eq!(parse_smarthost(":25"), None);
        assert_eq!(parse_smarthost("h:port"), None);
    }
}
