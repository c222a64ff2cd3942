//! prometheus-operator objects: ServiceMonitor, PrometheusRule and AlertmanagerConfig.
//!
//! They are plain JSON values (no typed crate) applied through the dynamic API; their shape is
//! checked against prometheus-operator's schemas by `tests/operator/check.sh`.

use facekey_crds::{EmailAlerting, RulesSpec, ServiceMonitorSpec};
use serde_json::{Value, json};

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
                "port": "http",
                "path": "/metrics",
                "scheme": "http",
                "interval": sm.interval,
            }],
        },
    }))
}

/// The rule groups of the PrometheusRule (the `spec.groups` value), also what `promtool` checks.
pub fn alert_rule_groups(namespace: &str, name: &str, rules: &RulesSpec) -> Value {
    let owner = Owner {
        name,
        namespace,
        owner_ref: None,
    };
    let sel = series_selector(&owner);
    let p99 = format!(
        "histogram_quantile(0.99, sum by (le) (rate(facekey_http_request_duration_seconds_bucket{{{sel}}}[5m])))"
    );
    let p99_seconds = f64::from(rules.p99_latency_ms) / 1000.0;
    let spoof_per_minute = format!("sum(rate(facekey_spoof_detected_total{{{sel}}}[5m])) * 60");
    let labels = |severity: &str| json!({"severity": severity, DEPLOYMENT_LABEL: name});
    json!([{
        "name": format!("facekey.{namespace}.{name}"),
        "rules": [
            {
                "record": "facekey:http_request_duration_seconds:p99_5m",
                "expr": p99,
                "labels": {DEPLOYMENT_LABEL: name, "namespace": namespace},
            },
            {
                "record": "facekey:spoof_detected:rate1m",
                "expr": spoof_per_minute,
                "labels": {DEPLOYMENT_LABEL: name, "namespace": namespace},
            },
            {
                "alert": "FaceKeyRuntimeDown",
                "expr": format!("absent(up{{{sel}}} == 1)"),
                "for": "5m",
                "labels": labels("critical"),
                "annotations": {
                    "summary": format!("No FaceKey runtime pod of {namespace}/{name} is being scraped"),
                    "description": "Prometheus has not scraped a healthy runtime target for 5 minutes.",
                },
            },
            {
                "alert": "FaceKeyHighLatencyP99",
                "expr": format!("{p99} > {p99_seconds}"),
                "for": "10m",
                "labels": labels("warning"),
                "annotations": {
                    "summary": format!("FaceKey {namespace}/{name} p99 latency above {} ms", rules.p99_latency_ms),
                    "description": "p99 request latency over 5 minutes is {{ $value | humanizeDuration }}.",
                },
            },
            {
                "alert": "FaceKeySpoofAttemptsHigh",
                "expr": format!("{spoof_per_minute} > {}", rules.spoof_rate_per_minute),
                "for": "5m",
                "labels": labels("warning"),
                "annotations": {
                    "summary": format!("Spoof attempts against {namespace}/{name} above {} per minute", rules.spoof_rate_per_minute),
                    "description": "{{ $value | humanize }} presentation attacks per minute were detected (5-minute average).",
                },
            },
            {
                "alert": "FaceKeyHighErrorRate",
                "expr": format!(
                    "sum(rate(facekey_http_requests_total{{{sel},status=~\"5..\"}}[5m])) / sum(rate(facekey_http_requests_total{{{sel}}}[5m])) > 0.05"
                ),
                "for": "10m",
                "labels": labels("warning"),
                "annotations": {
                    "summary": format!("More than 5% of requests to {namespace}/{name} fail with 5xx"),
                    "description": "{{ $value | humanizePercentage }} of requests returned a server error.",
                },
            },
        ],
    }])
}

pub(super) fn prometheus_rule(owner: &Owner<'_>, rules: &RulesSpec) -> Result<Value> {
    Ok(json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": meta(owner, &rules.labels)?,
        "spec": {"groups": alert_rule_groups(owner.namespace, owner.name, rules)},
    }))
}

pub(super) fn alertmanager_config(owner: &Owner<'_>, email: &EmailAlerting) -> Result<Value> {
    Ok(json!({
        "apiVersion": "monitoring.coreos.com/v1alpha1",
        "kind": "AlertmanagerConfig",
        "metadata": meta(owner, &Default::default())?,
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
                "emailConfigs": [{
                    "to": email.to,
                    "from": email.from,
                    "smarthost": email.smarthost,
                    "authUsername": email.auth_username.as_deref().unwrap_or(&email.from),
                    "authPassword": {"name": email.auth_secret_ref.name, "key": email.auth_secret_ref.key},
                    "requireTLS": email.require_tls,
                    "sendResolved": true,
                }],
            }],
        },
    }))
}
