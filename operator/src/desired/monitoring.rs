//! prometheus-operator objects: ServiceMonitor, PodMonitor (injected sidecars), PrometheusRule
//! and AlertmanagerConfig.
//!
//! They are plain JSON values (no typed crate) applied through the dynamic API; their shape is
//! checked against prometheus-operator's schemas by `tests/operator/check.sh`.

use facekey_crds::{EmailAlerting, FaceKeyDeploymentSpec, RulesSpec, ServiceMonitorSpec};
use serde_json::{Value, json};

use super::sidecar::{SIDECAR_LABEL, SIDECAR_METRICS_PORT_NAME};
use super::{Owner, Result, merged_labels, to_value};
use crate::labels::{self, Component};

/// Label every alert carries so the AlertmanagerConfig route only matches this deployment.
pub const DEPLOYMENT_LABEL: &str = "facekey_deployment";

/// PromQL label matcher selecting this deployment's scraped series (job = Service name).
pub(crate) fn series_selector(owner: &Owner<'_>) -> String {
    format!(r#"namespace="{}",job="{}""#, owner.namespace, owner.name)
}

fn meta(owner: &Owner<'_>, extra: &std::collections::BTreeMap<String, String>) -> Result<Value> {
    let mut m = owner.meta(owner.name.to_owned(), Component::Monitoring);
    m.labels = Some(merged_labels(
        labels::common_labels(owner.name, Component::Monitoring),
        extra,
    ));
    to_value(&m)
}

pub(super) fn service_monitor(owner: &Owner<'_>, sm: &ServiceMonitorSpec) -> Result<Value> {
    Ok(json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta(owner, &sm.labels)?,
        "spec": {
            "selector": {"matchLabels": labels::selector_labels(owner.name)},
            "endpoints": [{
                // The runtime's metrics listener: no API key needed, whatever `auth.metrics` says.
                "port": "metrics",
                "path": "/metrics",
                "scheme": "http",
                "interval": sm.interval,
            }],
        },
    }))
}

/// The PodMonitor scraping the runtime sidecars injected into application pods: it selects pods
/// by the label the webhook puts on them ([`SIDECAR_LABEL`]` = <name>`), scrapes the sidecar's
/// keyless health and metrics port by its name ([`SIDECAR_METRICS_PORT_NAME`]) and takes the `job`
/// label from that pod label, so sidecar series carry `job="<name>"` exactly like the runtime
/// Deployment's (the ServiceMonitor's job is the Service name, also `<name>`): the
/// PrometheusRule's selectors and the dashboard see both. Interval and extra labels are the
/// ServiceMonitor's (`monitoring.serviceMonitor`), so one switch turns scraping on or off.
pub(super) fn pod_monitor(owner: &Owner<'_>, sm: &ServiceMonitorSpec) -> Result<Value> {
    Ok(json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": meta(owner, &sm.labels)?,
        "spec": {
            "selector": {"matchLabels": {SIDECAR_LABEL: owner.name}},
            "jobLabel": SIDECAR_LABEL,
            "podMetricsEndpoints": [{
                "port": SIDECAR_METRICS_PORT_NAME,
                "path": "/metrics",
                "scheme": "http",
                "interval": sm.interval,
            }],
        },
    }))
}

/// `FaceKeyAuthFailureBurst` fires when requests without a valid API key (`missing_key`,
/// `invalid_key`) arrive faster than this per second (5-minute rate) for 2 minutes: far above a
/// misconfigured client's retries, the order of a key-guessing or scanning run.
pub const AUTH_FAILURE_BURST_PER_SECOND: f64 = 1.0;

/// Liveness sessions abandoned after a face was seen in an hour above which, when they are also
/// most of the sessions that saw a face, `FaceKeyLivenessSessionsAbandoned` fires.
pub const ABANDONED_SESSIONS_PER_HOUR: u32 = 20;

/// Liveness sessions ended before a face was seen in an hour above which, when they are also
/// most of the sessions opened, `FaceKeyLivenessChallengesRedrawn` fires.
pub const UNPERFORMED_SESSIONS_PER_HOUR: u32 = 50;

/// `FaceKeyStoreNearlyFull` fires when a replica's index holds more than this share of
/// `FACEKEY_MAX_SUBJECTS` subjects or `FACEKEY_MAX_TEMPLATES` templates for 15 minutes; at the
/// limit writes answer 507 `store_full`.
pub const STORE_NEARLY_FULL_RATIO: f64 = 0.9;

/// Base of the runbook links in alert annotations: one section per alert in docs/operator.md.
pub const RUNBOOK_BASE: &str = "https://github.com/facekey/facekey/blob/main/docs/operator.md";

/// Labels every aggregation keeps. `namespace` is the one prometheus-operator matches on: it adds
/// `namespace="<the AlertmanagerConfig's namespace>"` to the AlertmanagerConfig's route, so an
/// alert whose expression sums `namespace` away is never routed. `job` is the Service name, i.e.
/// the FaceKeyDeployment's name (ServiceMonitor default).
const KEEP: &str = "namespace, job";

/// One alerting rule: every FaceKey alert carries `severity`, [`DEPLOYMENT_LABEL`] and the
/// `summary`, `description` and `runbook_url` annotations.
struct Alert<'a> {
    name: &'a str,
    expr: String,
    for_: &'a str,
    severity: &'a str,
    summary: String,
    description: String,
}

impl Alert<'_> {
    fn to_json(&self, deployment: &str) -> Value {
        let mut rule = json!({
            "alert": self.name,
            "expr": self.expr,
            "labels": {"severity": self.severity, DEPLOYMENT_LABEL: deployment},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": format!("{RUNBOOK_BASE}#{}", self.name.to_lowercase()),
            },
        });
        if !self.for_.is_empty()
            && let Some(map) = rule.as_object_mut()
        {
            map.insert("for".into(), json!(self.for_));
        }
        rule
    }
}

/// Which scrape targets `FaceKeyRuntimeDown` watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeTargets {
    /// The runtime Deployment runs pods: its own targets must be up, whatever sidecars report.
    Deployment,
    /// The Deployment is scaled to zero: any target, sidecars included, counts.
    AnyTarget,
}

impl RuntimeTargets {
    /// [`Self::AnyTarget`] when `spec` asks for no runtime pod (`replicas: 0`, no autoscaling).
    pub fn of(spec: &FaceKeyDeploymentSpec) -> Self {
        if spec.autoscaling.is_none() && spec.replicas == Some(0) {
            Self::AnyTarget
        } else {
            Self::Deployment
        }
    }
}

/// The rule groups of the PrometheusRule (the `spec.groups` value), also what `promtool` checks:
/// the service alerts, then the `/v1/verify` SLO group (see [`slo_rule_group`]).
pub fn alert_rule_groups(
    namespace: &str,
    name: &str,
    rules: &RulesSpec,
    watched: RuntimeTargets,
) -> Value {
    let owner = Owner {
        name,
        namespace,
        owner_ref: None,
    };
    let sel = series_selector(&owner);
    // The runtime Deployment's own targets: only a ServiceMonitor's carry `service` (a
    // PodMonitor's sidecar targets have none), so an injected sidecar cannot stand in for them.
    // Scaled to zero, no pod is expected: down is every sidecar scraped being down.
    let (own, down) = match watched {
        RuntimeTargets::Deployment => {
            let own = format!("{sel},service=\"{name}\"");
            let down = format!(
                "sum by ({KEEP}) (up{{{own}}}) < 1 or sum by ({KEEP}) (absent(up{{{own}}}))"
            );
            (own, down)
        }
        RuntimeTargets::AnyTarget => (sel.clone(), format!("sum by ({KEEP}) (up{{{sel}}}) < 1")),
    };
    // Frame batches of challenge sessions carry up to a few MB of base64 frames from phones,
    // timed from the first byte: their upload time is the client's uplink, not the service.
    let p99 = format!(
        "histogram_quantile(0.99, sum by ({KEEP}, le) (rate(facekey_http_request_duration_seconds_bucket{{{sel},route!=\"{FRAMES_ROUTE}\"}}[5m])))"
    );
    // Server errors: 5xx but 507 (a key or the store at its quota: a client's limit, alerted
    // by FaceKeySubjectsRefused/FaceKeyTemplatesRefused).
    let server_errors = format!("{sel},status=~\"5..\",status!=\"507\"");
    let p99_seconds = f64::from(rules.p99_latency_ms) / 1000.0;
    // Attacks counted over 5 minutes: the alert's value is the attack count the mail names.
    let spoof_threshold = rules.spoof_rate_per_minute * 5.0;
    let spoofs_5m =
        format!("sum by ({KEEP}) (increase(facekey_spoof_detected_total{{{sel}}}[5m]))");
    let record_labels = json!({DEPLOYMENT_LABEL: name});
    let alerts = [
        Alert {
            name: "FaceKeySpoofAttemptsHigh",
            expr: format!("{spoofs_5m} > {spoof_threshold}"),
            for_: "1m",
            severity: "warning",
            summary: format!(
                "Spoof attempts against {namespace}/{name} above {} per minute",
                rules.spoof_rate_per_minute
            ),
            description: format!(
                "{{{{ $value | printf \"%.0f\" }}}} presentation attacks against FaceKeyDeployment {namespace}/{name} in the last 5 minutes."
            ),
        },
        Alert {
            name: "FaceKeyHighLatencyP99",
            expr: format!("{p99} > {p99_seconds}"),
            for_: "10m",
            severity: "warning",
            summary: format!(
                "FaceKey {namespace}/{name} p99 latency above {} ms",
                rules.p99_latency_ms
            ),
            description: "p99 request latency over 5 minutes is {{ $value | humanizeDuration }}.".into(),
        },
        Alert {
            name: "FaceKeyHighErrorRate",
            // At least MIN_BAD_EVENTS errors in the window: at a request a minute, one error
            // is 20 % of five minutes.
            expr: format!(
                "sum by ({KEEP}) (rate(facekey_http_requests_total{{{server_errors}}}[5m])) / sum by ({KEEP}) (rate(facekey_http_requests_total{{{sel}}}[5m])) > 0.05 and on ({KEEP}) sum by ({KEEP}) (increase(facekey_http_requests_total{{{server_errors}}}[5m])) >= {MIN_BAD_EVENTS}"
            ),
            for_: "10m",
            severity: "warning",
            summary: format!("More than 5% of requests to {namespace}/{name} fail with 5xx"),
            description: "{{ $value | humanizePercentage }} of requests returned a server error.".into(),
        },
        Alert {
            name: "FaceKeyOverCapacity",
            // The runtime's own estimate (arrival rate x service time / in-flight places),
            // averaged over the Deployment's pods (idle sidecars would dilute it): above 1 more
            // arrives than the replicas can serve, and the excess is answered 503 `overloaded`
            // rather than queued.
            // Averaged over 5 minutes too: the gauge is a 2-second estimate that swings
            // ±15-20 %, and one sample under 1 would restart the `for` of a sustained overload.
            expr: format!(
                "avg by ({KEEP}) (avg_over_time(facekey_admission_offered_load{{{own}}}[5m])) > 1"
            ),
            for_: "10m",
            severity: "warning",
            summary: format!("FaceKey {namespace}/{name} is offered more inferences than it can serve"),
            description: "The runtime pods are offered {{ $value | printf \"%.2f\" }}x their inference capacity on average for 10 minutes; requests beyond it get 503 overloaded. Add replicas or raise the autoscaler's maximum.".into(),
        },
        Alert {
            name: "FaceKeyRuntimeDown",
            // `absent` covers "no target at all" (with replicas) and keeps namespace and job.
            expr: down,
            for_: "5m",
            severity: "critical",
            summary: format!("No FaceKey runtime pod of {namespace}/{name} is being scraped"),
            description: "Prometheus has not scraped a healthy runtime target for 5 minutes.".into(),
        },
        Alert {
            name: "FaceKeySidecarDown",
            // Sidecar targets are the PodMonitor's: no `service` label.
            expr: format!("max by ({KEEP}, pod) (up{{{sel},service=\"\"}}) == 0"),
            for_: "5m",
            severity: "warning",
            summary: format!("A FaceKey runtime sidecar of {namespace}/{name} is not answering"),
            description: "The runtime sidecar in pod {{ $labels.pod }} has not answered Prometheus for 5 minutes: that application pod cannot verify faces.".into(),
        },
        Alert {
            name: "FaceKeyNoReadyReplica",
            // kube-state-metrics (scraped with its own namespace label, as kube-prometheus-stack does).
            expr: format!(
                "max by (namespace, deployment) (kube_deployment_status_replicas_available{{namespace=\"{namespace}\",deployment=\"{name}\"}}) < 1 and on (namespace, deployment) max by (namespace, deployment) (kube_deployment_spec_replicas{{namespace=\"{namespace}\",deployment=\"{name}\"}}) > 0"
            ),
            for_: "5m",
            severity: "critical",
            summary: format!("FaceKey {namespace}/{name} has no ready replica"),
            description: "The runtime Deployment has had no available replica for 5 minutes (kube-state-metrics).".into(),
        },
        Alert {
            name: "FaceKeyModelNotReady",
            // A pod that serves /metrics but has loaded no model (facekey_model_info is set when
            // the models are loaded, the moment /readyz turns ready).
            expr: format!(
                "max by ({KEEP}, pod) (up{{{sel}}}) == 1 unless on ({KEEP}, pod) count by ({KEEP}, pod) (facekey_model_info{{{sel}}})"
            ),
            for_: "10m",
            severity: "warning",
            summary: format!("A FaceKey runtime pod of {namespace}/{name} has not loaded its models"),
            description: "Pod {{ $labels.pod }} is up but reports no loaded model for 10 minutes.".into(),
        },
        Alert {
            name: "FaceKeyTemplateStoreDown",
            expr: format!("max by ({KEEP}, pod) (facekey_store_up{{{sel}}}) == 0"),
            for_: "2m",
            severity: "critical",
            summary: format!("FaceKey {namespace}/{name} cannot reach its template store"),
            description: "Pod {{ $labels.pod }} reports its template store unreachable (facekey_store_up 0) for 2 minutes.".into(),
        },
        Alert {
            name: "FaceKeyStoreNearlyFull",
            // Each replica's index against the limits it checks writes against (the same
            // counts); `limit` says which bound, the fullest replica counts.
            expr: format!(
                "max by ({KEEP}, limit) (label_replace(facekey_enrolled_subjects{{{sel}}} / facekey_enrolled_subjects_limit{{{sel}}}, \"limit\", \"subjects\", \"\", \"\") or label_replace(facekey_enrolled_templates{{{sel}}} / facekey_enrolled_templates_limit{{{sel}}}, \"limit\", \"templates\", \"\", \"\")) > {STORE_NEARLY_FULL_RATIO}"
            ),
            for_: "15m",
            severity: "warning",
            summary: format!("The template store of {namespace}/{name} is nearly full"),
            description: format!(
                "FaceKeyDeployment {namespace}/{name} holds {{{{ $value | humanizePercentage }}}} of its {{{{ $labels.limit }}}} limit (above {:.0}% for 15 minutes); at the limit writes answer 507 store_full.",
                STORE_NEARLY_FULL_RATIO * 100.0
            ),
        },
        Alert {
            name: "FaceKeyApiKeyQuotaNearlyFull",
            // Each key held to a per-key quota against that quota (none when it is 0), on each
            // pod against its own limit (a sidecar or a pod of another rollout step may run
            // another one, and the larger would hide the smaller); the fullest counts.
            expr: format!(
                "max by ({KEEP}, key_id, quota) (facekey_key_quota_held{{{sel}}} / on ({KEEP}, pod, quota) group_left () (facekey_key_quota_limit{{{sel}}} > 0)) > {STORE_NEARLY_FULL_RATIO}"
            ),
            for_: "15m",
            severity: "warning",
            summary: format!("An API key of {namespace}/{name} nearly holds its quota"),
            description: format!(
                "API key {{{{ $labels.key_id }}}} of FaceKeyDeployment {namespace}/{name} holds {{{{ $value | humanizePercentage }}}} of its {{{{ $labels.quota }}}} quota (above {:.0}% for 15 minutes); at the quota its writes answer 507 key_subject_quota or key_template_quota.",
                STORE_NEARLY_FULL_RATIO * 100.0
            ),
        },
        Alert {
            name: "FaceKeySubjectsRefused",
            // Any refusal: a key at its subject quota is a runaway client, someone filling the
            // store, or one application outgrowing its quota; a full store refuses everyone.
            expr: format!(
                "sum by ({KEEP}, reason) (increase(facekey_subjects_refused_total{{{sel}}}[15m])) > 0"
            ),
            for_: "",
            severity: "warning",
            summary: format!("FaceKey {namespace}/{name} refuses to create subjects"),
            description: format!(
                "{{{{ $value | printf \"%.0f\" }}}} subject creations in FaceKeyDeployment {namespace}/{name} were refused with 507 in the last 15 minutes, reason {{{{ $labels.reason }}}}: key_quota is a key holding FACEKEY_MAX_SUBJECTS_PER_KEY subjects (the facekey::security log names it), store_full the store at FACEKEY_MAX_SUBJECTS."
            ),
        },
        Alert {
            name: "FaceKeyTemplatesRefused",
            // As for subjects: a key at its template quota, or a store that takes no more faces.
            expr: format!(
                "sum by ({KEEP}, reason) (increase(facekey_templates_refused_total{{{sel}}}[15m])) > 0"
            ),
            for_: "",
            severity: "warning",
            summary: format!("FaceKey {namespace}/{name} refuses to enrol faces"),
            description: format!(
                "{{{{ $value | printf \"%.0f\" }}}} enrolments in FaceKeyDeployment {namespace}/{name} were refused with 507 in the last 15 minutes, reason {{{{ $labels.reason }}}}: key_quota is a key holding FACEKEY_MAX_TEMPLATES_PER_KEY faces it enrolled (the facekey::security log names it), store_full the store at FACEKEY_MAX_TEMPLATES."
            ),
        },
        Alert {
            name: "FaceKeyRolloutBlocked",
            // The operator's metric; its `namespace` label names the FaceKeyDeployment's namespace,
            // so the operator must be scraped with honorLabels: true. A state the leader reads
            // from the statuses (not an increase of the blocked-rollouts counter, which a new
            // leader's first reconcile can start at 1 unseen): it holds while the image is held,
            // and over the few scrapes an operator rollout leaves without the series (the old
            // leader gone, the new one listing), so a leader change neither resolves nor repeats it.
            expr: format!(
                "max by (namespace, name, reason) (max_over_time(facekey_operator_rollout_held{{namespace=\"{namespace}\",name=\"{name}\"}}[5m])) > 0"
            ),
            for_: "",
            severity: "warning",
            summary: format!("The scan gate holds back the new image of {namespace}/{name}"),
            description: "The vulnerability scan gate holds spec.image back ({{ $labels.reason }}: VulnerabilitiesFound is findings above the policy, ScanFailed a scan without a usable report); the previous image keeps serving. See the ScanGatePassed condition.".into(),
        },
        Alert {
            name: "FaceKeyRunningImageVulnerable",
            // The operator's metric, read like facekey_operator_rollout_held: a rescan of the
            // image that runs (once its scan is older than maxReportAge) found vulnerabilities
            // published since it was admitted.
            expr: format!(
                "max by (namespace, name, reason) (max_over_time(facekey_operator_running_image_vulnerable{{namespace=\"{namespace}\",name=\"{name}\"}}[5m])) > 0"
            ),
            for_: "",
            severity: "warning",
            summary: format!("The image {namespace}/{name} runs has vulnerabilities above its scan policy"),
            description: "A rescan of the running (last-known-good) image, made once its scan was older than scanGate.maxReportAge, found vulnerabilities above the policy, published after it was admitted. It keeps serving; roll out a fixed image. See status.runningImageScan.".into(),
        },
        Alert {
            name: "FaceKeyDeploymentDegraded",
            // The operator's metric, read like facekey_operator_rollout_held (honorLabels: true;
            // max_over_time bridges a leader change). A held image has its own alert above, and
            // a status the operator cannot read its own in the operator's rules.
            expr: format!(
                "max by (namespace, name, reason) (max_over_time(facekey_operator_resource_degraded{{namespace=\"{namespace}\",name=\"{name}\",reason!~\"ImageBlocked|ScanFailed|SpecUndecodable\"}}[5m])) > 0"
            ),
            for_: "15m",
            severity: "warning",
            summary: format!("FaceKeyDeployment {namespace}/{name} is degraded ({{{{ $labels.reason }}}})"),
            description: format!(
                "For 15 minutes the operator has reported FaceKeyDeployment {namespace}/{name} Degraded with reason {{{{ $labels.reason }}}}; what runs does not follow the spec (an apply the API server refuses or that conflicts, an object of a child's name it does not own, a rollout past its progress deadline, an invalid spec). The Degraded condition's message says what; kubectl describe fkd {name} -n {namespace}."
            ),
        },
        Alert {
            name: "FaceKeySubjectLockouts",
            // Every lock counts: it follows repeated failed verifications of one subject.
            expr: format!(
                "sum by ({KEEP}) (increase(facekey_subject_lockouts_total{{{sel}}}[5m])) > 0"
            ),
            for_: "",
            severity: "warning",
            summary: format!("Subjects of {namespace}/{name} locked after failed verifications"),
            description: format!(
                "{{{{ $value | printf \"%.0f\" }}}} subject lockouts in FaceKeyDeployment {namespace}/{name} in the last 5 minutes (repeated failed verifications of one subject)."
            ),
        },
        Alert {
            name: "FaceKeyLivenessSessionsAbandoned",
            // A session left to expire after faces were seen is no spoof event (people give
            // up), so a client tuning a spoof on the per-frame feedback and walking away raises
            // none; many such sessions, most of those that saw a face, are that pattern. Not
            // "of those opened": sessions opened without a face cost nothing and would dilute it.
            expr: format!(
                "sum by ({KEEP}) (increase(facekey_liveness_sessions_abandoned_total{{{sel}}}[1h])) > {ABANDONED_SESSIONS_PER_HOUR} and sum by ({KEEP}) (increase(facekey_liveness_sessions_abandoned_total{{{sel}}}[1h])) > 0.5 * sum by ({KEEP}) (increase(facekey_liveness_sessions_faced_total{{{sel}}}[1h]))"
            ),
            for_: "",
            severity: "warning",
            summary: format!("Liveness sessions of {namespace}/{name} abandoned after faces were seen"),
            description: format!(
                "{{{{ $value | printf \"%.0f\" }}}} challenge-liveness sessions of FaceKeyDeployment {namespace}/{name} expired, or were closed by their client in progress, in the last hour after a face was seen, over half of the sessions that saw one: people giving up at a step, or a client probing the challenge's feedback (the facekey::security log lists the sessions)."
            ),
        },
        Alert {
            name: "FaceKeyLivenessChallengesRedrawn",
            // A session opened and closed (or left to expire) before a face was seen costs the
            // client nothing and shows it another random challenge: many of them, most of the
            // sessions opened, are a client drawing challenges until one suits a recording it
            // holds (80 challenges). People who never start are a few of many.
            expr: format!(
                "sum by ({KEEP}) (increase(facekey_liveness_sessions_unperformed_total{{{sel}}}[1h])) > {UNPERFORMED_SESSIONS_PER_HOUR} and sum by ({KEEP}) (increase(facekey_liveness_sessions_unperformed_total{{{sel}}}[1h])) > 0.5 * sum by ({KEEP}) (increase(facekey_liveness_sessions_started_total{{{sel}}}[1h]))"
            ),
            for_: "",
            severity: "warning",
            summary: format!("Liveness challenges of {namespace}/{name} drawn and not performed"),
            description: format!(
                "{{{{ $value | printf \"%.0f\" }}}} challenge-liveness sessions of FaceKeyDeployment {namespace}/{name} ended in the last hour before a face was seen (closed by their client or expired), over half of the sessions opened: an application opening sessions it does not use, or a client redrawing challenges until one suits a recording it holds."
            ),
        },
        Alert {
            name: "FaceKeyAuthFailureBurst",
            // Requests without a valid key only: `forbidden` (a valid key, wrong scope) and
            // `rate_limited` are a client's configuration, not someone trying keys.
            expr: format!(
                "sum by ({KEEP}) (rate(facekey_auth_failures_total{{{sel},reason=~\"missing_key|invalid_key\"}}[5m])) > {AUTH_FAILURE_BURST_PER_SECOND}"
            ),
            for_: "2m",
            severity: "warning",
            summary: format!("Burst of requests without a valid API key to {namespace}/{name}"),
            description: format!(
                "{{{{ $value | printf \"%.1f\" }}}} requests per second without a valid API key (missing or invalid) to FaceKeyDeployment {namespace}/{name}, above {AUTH_FAILURE_BURST_PER_SECOND} for 2 minutes."
            ),
        },
        Alert {
            name: "FaceKeyAlertEmailFailing",
            // The runtime's own spoof and lockout emails: `failed` counts each failed attempt
            // (its events are kept and retried, at least every 10 minutes while they fail),
            // `dropped` each event not queued (lost). No `for`: one failure keeps the 15-minute
            // increase above 0 for the whole window, so a `for` shorter than it would only delay
            // the alert, never filter it, and a broken security-alert path should be known at
            // once; through an outage the retries keep it firing without flapping. The series
            // exist (at 0 from the start) only with SMTP configured.
            expr: format!(
                "sum by ({KEEP}) (increase(facekey_alert_emails_total{{{sel},result=~\"failed|dropped\"}}[15m])) > 0"
            ),
            for_: "",
            severity: "warning",
            summary: format!("FaceKey {namespace}/{name} cannot deliver its alert emails"),
            description: format!(
                "{{{{ $value | printf \"%.0f\" }}}} failed alert email attempts and dropped alert events in FaceKeyDeployment {namespace}/{name} in the last 15 minutes: the runtime's own spoof and lockout emails are not reaching their recipients."
            ),
        },
        Alert {
            name: "FaceKeyAlertEmailUnreachable",
            // The relay checked at start-up and every 10 minutes (connect, TLS, login) without
            // an email being due: a wrong password or CA is known before an attack needs the
            // mail. The series exist only with SMTP configured.
            expr: format!("min by ({KEEP}) (facekey_alert_smtp_reachable{{{sel}}}) == 0"),
            for_: "15m",
            severity: "warning",
            summary: format!("FaceKey {namespace}/{name} cannot reach its alert email relay"),
            description: format!(
                "A replica of FaceKeyDeployment {namespace}/{name} has not been able to connect to, start TLS with or log in to its SMTP relay for 15 minutes: spoof and lockout emails would not go out."
            ),
        },
        Alert {
            name: "FaceKeyApiKeysFileRejected",
            // A changed keys file that does not parse grants nothing new, and its rotations
            // and scope changes wait (removed keys are revoked anyway): someone's edit did not
            // take. No `for`, as above: the 15-minute increase stays up for the window.
            expr: format!(
                "sum by ({KEEP}) (increase(facekey_api_key_reloads_total{{{sel},result=\"rejected\"}}[15m])) > 0"
            ),
            for_: "",
            severity: "warning",
            summary: format!("FaceKey {namespace}/{name} refused a changed API keys file"),
            description: format!(
                "Replicas of FaceKeyDeployment {namespace}/{name} refused a changed or unreadable API keys file in the last 15 minutes: new or changed keys are not in force (keys it no longer lists are revoked); the runtime log names the line."
            ),
        },
        Alert {
            name: "FaceKeyLockoutLedgerLocal",
            // The shared lockout ledger (PostgreSQL) unreachable: failed attempts are counted
            // in each replica's memory, so an attacker gets the threshold once per replica.
            expr: format!("max by ({KEEP}) (facekey_lockout_ledger_local{{{sel}}}) > 0"),
            for_: "5m",
            severity: "warning",
            summary: format!("FaceKey {namespace}/{name} counts failed verifications per replica"),
            description: format!(
                "A replica of FaceKeyDeployment {namespace}/{name} has counted failed verifications in its own memory for 5 minutes because the shared lockout ledger in PostgreSQL is unreachable: the lockout holds per replica, so guesses at a subject are bounded by the threshold times the replicas."
            ),
        },
    ];
    // Failed challenge sessions are spoof events (facekey_spoof_detected_total), so
    // FaceKeySpoofAttemptsHigh covers them.
    let mut rules_json = vec![
        json!({
            "record": "facekey:http_request_duration_seconds:p99_5m",
            "expr": p99,
            "labels": record_labels,
        }),
        json!({
            "record": "facekey:spoof_detected:rate1m",
            "expr": format!("sum by ({KEEP}) (rate(facekey_spoof_detected_total{{{sel}}}[5m])) * 60"),
            "labels": record_labels,
        }),
    ];
    rules_json.extend(alerts.iter().map(|a| a.to_json(name)));
    json!([
        {"name": format!("facekey.{namespace}.{name}"), "rules": rules_json},
        slo_rule_group(namespace, name),
    ])
}

/// Availability objective of `/v1/verify`: the share of requests answered without a 5xx.
pub const SLO_AVAILABILITY: f64 = 0.999;
/// Latency objective of `/v1/verify`: the share of requests answered within [`SLO_LATENCY_LE`].
pub const SLO_LATENCY: f64 = 0.99;
/// Latency bound of the latency SLO, in seconds: a bucket bound of the runtime's request histogram.
pub const SLO_LATENCY_LE: &str = "0.5";
/// Error budget of an objective (1 - objective), rounded to the objective's precision: 1 - 0.999
/// is 0.0010000000000000009 in binary.
pub(crate) fn error_budget(objective: f64) -> f64 {
    ((1.0 - objective) * 1e6).round() / 1e6
}

/// Least bad events (5xx, or answers slower than the latency bound) in an alert's window before
/// a ratio alert fires: at low traffic one failure is a large share (one 503 among 60 verifies an
/// hour burns the 99.9 % budget 16x), which is no outage to page for.
pub const MIN_BAD_EVENTS: u32 = 5;

/// The frame-batch route of challenge sessions, whose requests carry uploads of up to a few MB.
const FRAMES_ROUTE: &str = "/v1/liveness/sessions/{id}/frames";

/// Rate windows the burn-rate alerts read.
const SLO_WINDOWS: [&str; 7] = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];

/// Multi-window, multi-burn-rate alerts (Google SRE workbook, "Alerting on SLOs", table 5-8):
/// (alert suffix, long window, short window, burn rate). `Fast` pages, `Slow` opens a ticket.
const BURN_RATES: [(&str, &str, &str, f64); 4] = [
    ("Fast", "1h", "5m", 14.4),
    ("Fast", "6h", "30m", 6.0),
    ("Slow", "1d", "2h", 3.0),
    ("Slow", "3d", "6h", 1.0),
];

/// The `/v1/verify` SLO group: error ratios of the availability SLI (5xx) and of the latency SLI
/// (slower than [`SLO_LATENCY_LE`] s) per window as recording rules, and for each SLI a fast
/// (page) and a slow (ticket) burn-rate alert, each firing when both its long and short window
/// burn the error budget faster than the workbook's rate.
fn slo_rule_group(namespace: &str, name: &str) -> Value {
    let owner = Owner {
        name,
        namespace,
        owner_ref: None,
    };
    let sel = series_selector(&owner);
    let verify = format!("{sel},route=\"/v1/verify\"");
    let record_labels = json!({DEPLOYMENT_LABEL: name});
    let mut rules = Vec::new();
    for w in SLO_WINDOWS {
        // `or 0 * all`: with traffic but no 5xx series yet, the error ratio is 0, not absent.
        let all = format!("sum by ({KEEP}) (rate(facekey_http_requests_total{{{verify}}}[{w}]))");
        rules.push(json!({
            "record": format!("facekey:slo_verify_errors:ratio_rate{w}"),
            "expr": format!(
                "(sum by ({KEEP}) (rate(facekey_http_requests_total{{{verify},status=~\"5..\"}}[{w}])) or 0 * {all}) / {all}"
            ),
            "labels": record_labels,
        }));
        rules.push(json!({
            "record": format!("facekey:slo_verify_slow:ratio_rate{w}"),
            "expr": format!(
                "1 - sum by ({KEEP}) (rate(facekey_http_request_duration_seconds_bucket{{{verify},le=\"{SLO_LATENCY_LE}\"}}[{w}])) / sum by ({KEEP}) (rate(facekey_http_request_duration_seconds_count{{{verify}}}[{w}]))"
            ),
            "labels": record_labels,
        }));
    }
    let slis = [
        (
            "Availability",
            "slo_verify_errors",
            SLO_AVAILABILITY,
            format!(
                "{:.1}% of /v1/verify requests answered without a server error",
                SLO_AVAILABILITY * 100.0
            ),
        ),
        (
            "Latency",
            "slo_verify_slow",
            SLO_LATENCY,
            format!(
                "{:.1}% of /v1/verify requests answered within {SLO_LATENCY_LE} s",
                SLO_LATENCY * 100.0
            ),
        ),
    ];
    // Bad events in a window, for the MIN_BAD_EVENTS guard.
    let bad_events = |record: &str, w: &str| -> String {
        if record == "slo_verify_errors" {
            format!(
                "sum by ({KEEP}) (increase(facekey_http_requests_total{{{verify},status=~\"5..\"}}[{w}]))"
            )
        } else {
            format!(
                "(sum by ({KEEP}) (increase(facekey_http_request_duration_seconds_count{{{verify}}}[{w}])) - sum by ({KEEP}) (increase(facekey_http_request_duration_seconds_bucket{{{verify},le=\"{SLO_LATENCY_LE}\"}}[{w}])))"
            )
        }
    };
    for (sli, record, objective, meaning) in &slis {
        let budget = error_budget(*objective);
        for (speed, severity, for_) in [("Fast", "critical", "2m"), ("Slow", "warning", "15m")] {
            let expr = BURN_RATES
                .iter()
                .filter(|(s, ..)| *s == speed)
                .map(|(_, long, short, rate)| {
                    let limit = format!("({rate} * {budget})");
                    format!(
                        "(facekey:{record}:ratio_rate{long}{{{sel}}} > {limit} and facekey:{record}:ratio_rate{short}{{{sel}}} > {limit} and on ({KEEP}) {} >= {MIN_BAD_EVENTS})",
                        bad_events(record, long)
                    )
                })
                .collect::<Vec<_>>()
                .join(" or ");
            let windows = BURN_RATES
                .iter()
                .filter(|(s, ..)| *s == speed)
                .map(|(_, long, short, rate)| format!("{rate}x over {long} and {short}"))
                .collect::<Vec<_>>()
                .join(", or ");
            let alert = Alert {
                name: &format!("FaceKeyVerify{sli}BudgetBurn{speed}"),
                expr,
                for_,
                severity,
                summary: format!(
                    "FaceKey {namespace}/{name} burns its /v1/verify {} error budget {}",
                    sli.to_lowercase(),
                    if speed == "Fast" {
                        "fast (page)"
                    } else {
                        "slowly (ticket)"
                    }
                ),
                description: format!(
                    "SLO (30 days): {meaning}. The error budget burns faster than {windows} (1x spends it in exactly 30 days); error ratio {{{{ $value | humanizePercentage }}}}."
                ),
            };
            rules.push(alert.to_json(name));
        }
    }
    json!({"name": format!("facekey-slo.{namespace}.{name}"), "rules": rules})
}

pub(super) fn prometheus_rule(
    owner: &Owner<'_>,
    rules: &RulesSpec,
    watched: RuntimeTargets,
) -> Result<Value> {
    Ok(json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": meta(owner, &rules.labels)?,
        "spec": {"groups": alert_rule_groups(owner.namespace, owner.name, rules, watched)},
    }))
}

pub(super) fn alertmanager_config(owner: &Owner<'_>, email: &EmailAlerting) -> Result<Value> {
    let mut email_config = json!({
        "to": email.to,
        "from": email.from,
        "smarthost": email.smarthost,
        "requireTLS": email.require_tls,
        "sendResolved": true,
    });
    // Credentials only when given (a relay without AUTH gets none), a private CA when given.
    if let Some(secret) = &email.auth_secret_ref {
        email_config["authUsername"] = json!(email.auth_username.as_deref().unwrap_or(&email.from));
        email_config["authPassword"] = json!({"name": secret.name, "key": secret.key});
    }
    if let Some(ca) = &email.ca_secret_ref {
        email_config["tlsConfig"] = json!({"ca": {"secret": {"name": ca.name, "key": ca.key}}});
    }
    Ok(json!({
        "apiVersion": "monitoring.coreos.com/v1alpha1",
        "kind": "AlertmanagerConfig",
        "metadata": meta(owner, &email.labels)?,
        "spec": {
            "route": {
                "receiver": "email",
                "groupBy": ["alertname"],
                "groupWait": "30s",
                "groupInterval": "5m",
                "repeatInterval": "4h",
                "matchers": [{"name": DEPLOYMENT_LABEL, "value": owner.name}],
            },
            "receivers": [{
                "name": "email",
                "emailConfigs": [email_config],
            }],
        },
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The alerting rule named `name` in the service group of `ns/fk`.
    fn alert(name: &str) -> Value {
        let groups = alert_rule_groups(
            "ns",
            "fk",
            &RulesSpec::default(),
            RuntimeTargets::Deployment,
        );
        groups[0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["alert"] == name)
            .unwrap_or_else(|| panic!("no alert {name}"))
            .clone()
    }

    /// A warning of deployment `fk` whose runbook is its own section; its description.
    fn warning_with_runbook(rule: &Value, anchor: &str) -> String {
        assert_eq!(rule["labels"]["severity"], "warning");
        assert_eq!(rule["labels"][DEPLOYMENT_LABEL], "fk");
        assert_eq!(
            rule["annotations"]["runbook_url"],
            format!("{RUNBOOK_BASE}#{anchor}")
        );
        rule["annotations"]["description"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn alert_email_failures_and_drops_alert_at_once() {
        let rule = alert("FaceKeyAlertEmailFailing");
        assert_eq!(
            rule["expr"],
            r#"sum by (namespace, job) (increase(facekey_alert_emails_total{namespace="ns",job="fk",result=~"failed|dropped"}[15m])) > 0"#
        );
        // No `for`: a shorter one would only delay an alert the window already holds.
        assert!(rule.get("for").is_none(), "{rule}");
        let description = warning_with_runbook(&rule, "facekeyalertemailfailing");
        assert!(
            description.starts_with("{{ $value | printf \"%.0f\" }} failed alert email attempts"),
            "{description}"
        );
        assert!(description.contains("ns/fk"), "{description}");
    }

    #[test]
    fn a_key_near_its_quota_alerts_by_key_and_quota() {
        let rule = alert("FaceKeyApiKeyQuotaNearlyFull");
        assert_eq!(
            rule["expr"],
            r#"max by (namespace, job, key_id, quota) (facekey_key_quota_held{namespace="ns",job="fk"} / on (namespace, job, pod, quota) group_left () (facekey_key_quota_limit{namespace="ns",job="fk"} > 0)) > 0.9"#
        );
        assert_eq!(rule["for"], "15m");
        let description = warning_with_runbook(&rule, "facekeyapikeyquotanearlyfull");
        assert!(
            description.contains("{{ $labels.key_id }}"),
            "{description}"
        );
    }

    #[test]
    fn abandoned_sessions_alert_when_many_and_most_of_those_that_saw_a_face() {
        let rule = alert("FaceKeyLivenessSessionsAbandoned");
        let expr = rule["expr"].as_str().unwrap();
        assert!(
            expr.starts_with(r#"sum by (namespace, job) (increase(facekey_liveness_sessions_abandoned_total{namespace="ns",job="fk"}[1h])) > 20 and "#),
            "{expr}"
        );
        assert!(
            expr.ends_with(r#"> 0.5 * sum by (namespace, job) (increase(facekey_liveness_sessions_faced_total{namespace="ns",job="fk"}[1h]))"#),
            "{expr}"
        );
        let description = warning_with_runbook(&rule, "facekeylivenesssessionsabandoned");
        assert!(description.contains("facekey::security"), "{description}");
    }

    #[test]
    fn redrawn_challenges_alert_when_many_and_most_of_those_opened() {
        let rule = alert("FaceKeyLivenessChallengesRedrawn");
        assert_eq!(
            rule["expr"],
            r#"sum by (namespace, job) (increase(facekey_liveness_sessions_unperformed_total{namespace="ns",job="fk"}[1h])) > 50 and sum by (namespace, job) (increase(facekey_liveness_sessions_unperformed_total{namespace="ns",job="fk"}[1h])) > 0.5 * sum by (namespace, job) (increase(facekey_liveness_sessions_started_total{namespace="ns",job="fk"}[1h]))"#
        );
        assert!(rule.get("for").is_none(), "{rule}");
        let description = warning_with_runbook(&rule, "facekeylivenesschallengesredrawn");
        assert!(description.contains("recording"), "{description}");
    }

    #[test]
    fn refused_enrolments_alert_at_once_by_reason() {
        let rule = alert("FaceKeyTemplatesRefused");
        assert_eq!(
            rule["expr"],
            r#"sum by (namespace, job, reason) (increase(facekey_templates_refused_total{namespace="ns",job="fk"}[15m])) > 0"#
        );
        assert!(rule.get("for").is_none(), "{rule}");
        let description = warning_with_runbook(&rule, "facekeytemplatesrefused");
        assert!(
            description.contains("FACEKEY_MAX_TEMPLATES_PER_KEY"),
            "{description}"
        );
    }

    #[test]
    fn refused_subject_creations_alert_at_once_by_reason() {
        let rule = alert("FaceKeySubjectsRefused");
        assert_eq!(
            rule["expr"],
            r#"sum by (namespace, job, reason) (increase(facekey_subjects_refused_total{namespace="ns",job="fk"}[15m])) > 0"#
        );
        assert!(rule.get("for").is_none(), "{rule}");
        let description = warning_with_runbook(&rule, "facekeysubjectsrefused");
        assert!(
            description.contains("reason {{ $labels.reason }}: key_quota"),
            "{description}"
        );
    }

    #[test]
    fn store_nearly_full_names_the_limit_reached() {
        let rule = alert("FaceKeyStoreNearlyFull");
        assert_eq!(
            rule["expr"],
            concat!(
                r#"max by (namespace, job, limit) ("#,
                r#"label_replace(facekey_enrolled_subjects{namespace="ns",job="fk"} / facekey_enrolled_subjects_limit{namespace="ns",job="fk"}, "limit", "subjects", "", "")"#,
                r#" or "#,
                r#"label_replace(facekey_enrolled_templates{namespace="ns",job="fk"} / facekey_enrolled_templates_limit{namespace="ns",job="fk"}, "limit", "templates", "", "")"#,
                r#") > 0.9"#
            )
        );
        assert_eq!(rule["for"], "15m");
        let description = warning_with_runbook(&rule, "facekeystorenearlyfull");
        assert!(
            description.contains(
                "holds {{ $value | humanizePercentage }} of its {{ $labels.limit }} limit (above 90% for 15 minutes)"
            ),
            "{description}"
        );
        assert!(description.contains("507 store_full"), "{description}");
    }
}
