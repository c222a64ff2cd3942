//! The Grafana dashboard, shipped as a ConfigMap that Grafana's sidecar imports.

use std::collections::BTreeMap;

use facekey_crds::DashboardsSpec;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};

use super::Owner;
use super::Result;
use super::monitoring::{SLO_AVAILABILITY, SLO_LATENCY, error_budget, series_selector};
use crate::error::DesiredError;
use crate::labels::{self, Component};

/// One query of a panel: legend format and PromQL (`{sel` becomes the series selector).
type Target = (&'static str, &'static str);

/// A panel built at run time: title, unit and targets (legend, PromQL with `{sel`).
type BuiltPanel = (&'static str, &'static str, Vec<(&'static str, String)>);

/// Panels: title, unit and targets.
const PANELS: &[(&str, &str, &[Target])] = &[
    (
        "Requests per second by route",
        "reqps",
        &[(
            "{{route}} {{method}}",
            "sum by (route, method) (rate(facekey_http_requests_total{sel}[5m]))",
        )],
    ),
    (
        "Server error ratio",
        "percentunit",
        &[(
            "5xx but 507 (as FaceKeyHighErrorRate)",
            "sum(rate(facekey_http_requests_total{sel,status=~\"5..\",status!=\"507\"}[5m])) / sum(rate(facekey_http_requests_total{sel}[5m]))",
        )],
    ),
    (
        "Request latency",
        "s",
        &[
            // Frame uploads apart, as FaceKeyHighLatencyP99 (their time is the client's uplink).
            (
                "p50",
                "histogram_quantile(0.5, sum by (le) (rate(facekey_http_request_duration_seconds_bucket{sel,route!=\"/v1/liveness/sessions/{id}/frames\"}[5m])))",
            ),
            (
                "p99",
                "histogram_quantile(0.99, sum by (le) (rate(facekey_http_request_duration_seconds_bucket{sel,route!=\"/v1/liveness/sessions/{id}/frames\"}[5m])))",
            ),
        ],
    ),
    (
        "Decisions per second",
        "ops",
        &[(
            "{{outcome}}",
            "sum by (outcome) (rate(facekey_decisions_total{sel}[5m]))",
        )],
    ),
    (
        "Spoof attempts per minute",
        "short",
        &[(
            "spoof",
            "sum(rate(facekey_spoof_detected_total{sel}[5m])) * 60",
        )],
    ),
    (
        "Model inference p95",
        "s",
        &[(
            "{{model}}",
            "histogram_quantile(0.95, sum by (le, model) (rate(facekey_inference_duration_seconds_bucket{sel}[5m])))",
        )],
    ),
    (
        "Pipeline stage p95",
        "s",
        &[(
            "{{stage}}",
            "histogram_quantile(0.95, sum by (le, stage) (rate(facekey_stage_duration_seconds_bucket{sel}[5m])))",
        )],
    ),
    (
        "Match similarity: live median by decision vs evaluated genuine median",
        "percentunit",
        &[
            (
                "live {{decision}} p50",
                "histogram_quantile(0.5, sum by (le, decision) (rate(facekey_match_similarity_bucket{sel}[1h])))",
            ),
            (
                "evaluated genuine p50",
                "max(facekey_evaluation_score_quantile{sel,score=\"similarity\",population=\"genuine\",percentile=\"50\"})",
            ),
            (
                "evaluated genuine p10",
                "max(facekey_evaluation_score_quantile{sel,score=\"similarity\",population=\"genuine\",percentile=\"10\"})",
            ),
        ],
    ),
    (
        "Liveness score: live median by decision vs evaluated real-photo median",
        "percentunit",
        &[
            (
                "live {{decision}} p50",
                "histogram_quantile(0.5, sum by (le, decision) (rate(facekey_liveness_score_bucket{sel}[1h])))",
            ),
            (
                "evaluated genuine p50",
                "max(facekey_evaluation_score_quantile{sel,score=\"liveness\",population=\"genuine\",percentile=\"50\"})",
            ),
            (
                "evaluated attack p90",
                "max(facekey_evaluation_score_quantile{sel,score=\"liveness\",population=\"attack\",percentile=\"90\"})",
            ),
        ],
    ),
    (
        "Fused probability: live median by decision",
        "percentunit",
        &[(
            "{{decision}} p50",
            "histogram_quantile(0.5, sum by (le, decision) (rate(facekey_fused_probability_bucket{sel}[1h])))",
        )],
    ),
    (
        "Evaluated error rates of the served thresholds (simulated data; applies when 1)",
        "percentunit",
        &[
            (
                "{{measure}}",
                "max by (measure) (facekey_evaluation_error_rate{sel,weights=\"\"})",
            ),
            ("applies", "min(facekey_evaluation_applies{sel})"),
        ],
    ),
    (
        "Offered inference load (1 = capacity; above FACEKEY_QUEUE_MAX_LOAD nothing queues)",
        "short",
        &[
            // The Deployment's pods (a ServiceMonitor's targets carry `service`), not sidecars.
            (
                "average of the runtime pods",
                "avg(facekey_admission_offered_load{sel,service!=\"\"})",
            ),
            (
                "{{pod}}",
                "max by (pod) (facekey_admission_offered_load{sel})",
            ),
        ],
    ),
    (
        "Overload refusals (503 overloaded) per second by reason",
        "reqps",
        &[(
            "{{reason}}",
            "sum by (reason) (rate(facekey_admission_rejected_total{sel}[5m]))",
        )],
    ),
    (
        "Template store use (of FACEKEY_MAX_SUBJECTS / FACEKEY_MAX_TEMPLATES)",
        "percentunit",
        &[
            (
                "subjects",
                "max(facekey_enrolled_subjects{sel}) / max(facekey_enrolled_subjects_limit{sel})",
            ),
            (
                "templates",
                "max(facekey_enrolled_templates{sel}) / max(facekey_enrolled_templates_limit{sel})",
            ),
        ],
    ),
    (
        "API key quota use (of each key's per-key quota)",
        "percentunit",
        &[(
            "{{key_id}} {{quota}}",
            "max by (key_id, quota) (facekey_key_quota_held{sel} / on (pod, quota) group_left () (facekey_key_quota_limit{sel} > 0))",
        )],
    ),
    (
        "Store refusals (507) per second by reason",
        "reqps",
        &[
            (
                "subjects {{reason}}",
                "sum by (reason) (rate(facekey_subjects_refused_total{sel}[5m]))",
            ),
            (
                "templates {{reason}}",
                "sum by (reason) (rate(facekey_templates_refused_total{sel}[5m]))",
            ),
        ],
    ),
    (
        "Runtime pods and sidecars up",
        "short",
        &[
            ("runtime pods", "sum(up{sel,service!=\"\"})"),
            ("sidecars", "sum(up{sel,service=\"\"})"),
        ],
    ),
    (
        "Build info",
        "short",
        &[(
            "{{version}}",
            "count by (version) (facekey_build_info{sel})",
        )],
    ),
];

/// The `/v1/verify` SLO view, from the PrometheusRule's recorded error ratios: the ratios over
/// the alert windows, and the burn rate (ratio / error budget; 1 spends the budget in 30 days,
/// the fast alert pages at 14.4 over 1h).
fn slo_panels() -> Vec<BuiltPanel> {
    let ratio = |record: &str, w: &str| format!("facekey:{record}:ratio_rate{w}{{sel}}");
    let burn = |record: &str, objective: f64| {
        format!("{} / {}", ratio(record, "1h"), error_budget(objective))
    };
    vec![
        (
            "/v1/verify SLO: server-error ratio",
            "percentunit",
            vec![
                ("5m", ratio("slo_verify_errors", "5m")),
                ("1h", ratio("slo_verify_errors", "1h")),
                ("3d", ratio("slo_verify_errors", "3d")),
            ],
        ),
        (
            "/v1/verify SLO: slow-request ratio",
            "percentunit",
            vec![
                ("5m", ratio("slo_verify_slow", "5m")),
                ("1h", ratio("slo_verify_slow", "1h")),
                ("3d", ratio("slo_verify_slow", "3d")),
            ],
        ),
        (
            "/v1/verify SLO: burn rate over 1h (page at 14.4)",
            "short",
            vec![
                ("availability", burn("slo_verify_errors", SLO_AVAILABILITY)),
                ("latency", burn("slo_verify_slow", SLO_LATENCY)),
            ],
        ),
    ]
}

/// The dashboard JSON model for the deployment `namespace/name`.
pub fn dashboard_json(namespace: &str, name: &str) -> Value {
    let owner = Owner {
        name,
        namespace,
        owner_ref: None,
    };
    let sel = series_selector(&owner);
    let mut all: Vec<BuiltPanel> = PANELS
        .iter()
        .map(|(title, unit, targets)| {
            let targets = targets.iter().map(|(l, e)| (*l, (*e).to_owned())).collect();
            (*title, *unit, targets)
        })
        .collect();
    all.extend(slo_panels());
    let panels: Vec<Value> = all
        .iter()
        .enumerate()
        .map(|(i, (title, unit, targets))| {
            let targets: Vec<Value> = targets
                .iter()
                .zip('A'..='Z')
                .map(|((legend, expr), ref_id)| {
                    let selector = format!("{{{sel}");
                    json!({
                        "refId": ref_id.to_string(),
                        "expr": expr.replace("{sel", &selector),
                        "legendFormat": legend,
                        "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    })
                })
                .collect();
            let (x, y) = ((i % 2) * 12, (i / 2) * 8);
            json!({
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": targets,
            })
        })
        .collect();
    json!({
        "uid": format!("facekey-{}", labels::short_hash(format!("{namespace}/{name}").as_bytes(), 16)),
        "title": format!("FaceKey {namespace}/{name}"),
        "tags": ["facekey"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": true,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        }]},
        "panels": panels,
    })
}

pub(super) fn dashboard_config_map(owner: &Owner<'_>, spec: &DashboardsSpec) -> Result<ConfigMap> {
    let mut meta = owner.meta(labels::dashboard_name(owner.name), Component::Monitoring);
    if let Some(labels) = meta.labels.as_mut() {
        labels.insert(labels::GRAFANA_DASHBOARD_LABEL.to_owned(), "1".to_owned());
    }
    if let Some(folder) = &spec.folder {
        meta.annotations = Some(BTreeMap::from([(
            "grafana_folder".to_owned(),
            folder.clone(),
        )]));
    }
    let json = serde_json::to_string_pretty(&dashboard_json(owner.namespace, owner.name)).map_err(
        |source| DesiredError::Serialize {
            what: "Grafana dashboard".into(),
            source,
        },
    )?;
    Ok(ConfigMap {
        metadata: meta,
        data: Some(BTreeMap::from([(
            format!("facekey-{}-{}.json", owner.namespace, owner.name),
            json,
        )])),
        ..ConfigMap::default()
    })
}
