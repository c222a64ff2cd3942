//! The operator's own Prometheus metrics, served on `/metrics`. They move only through the event
//! structs of [`crate::events`] (and the leader gauge, the gauges the controller recomputes from
//! its cache, and the reconcile timer), so each has one owner.

use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::proto::MetricType;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Name, type and label names of one metric family, as `docs/metrics.md` catalogues it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyDescription {
    /// Family name, e.g. `facekey_operator_reconciles_total`.
    pub name: String,
    /// `counter`, `gauge`, `histogram`, `summary` or `untyped`.
    pub kind: &'static str,
    /// Label names in declaration order (`le` of histograms excluded).
    pub labels: Vec<String>,
}

/// Metric handles; cheap to clone (the collectors are reference-counted).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles by result (`success` / `error`).
    pub reconciles: IntCounterVec,
    /// Reconcile errors by [`crate::Error::category`].
    pub errors: IntCounterVec,
    /// Reconcile duration in seconds.
    pub duration: Histogram,
    /// Rollouts stopped by the scan gate, by namespace and FaceKeyDeployment name.
    pub blocked_rollouts: IntCounterVec,
    /// 1 per FaceKeyDeployment whose `spec.image` the scan gate holds back, by namespace, name
    /// and reason (`VulnerabilitiesFound`, `ScanFailed`); recomputed from the leader's cache.
    pub rollouts_held: IntGaugeVec,
    /// 1 per FaceKeyDeployment whose `Degraded` condition is True, by namespace, name and its
    /// reason; recomputed from the leader's cache.
    pub resources_degraded: IntGaugeVec,
    /// 1 per FaceKeyDeployment whose running (last-known-good) image a rescan found above the
    /// scan policy (`reason` `VulnerabilitiesFound`); recomputed from the leader's cache.
    pub running_image_vulnerable: IntGaugeVec,
    /// Scan Jobs created, by namespace.
    pub scan_jobs: IntCounterVec,
    /// Scan gate verdict changes, by namespace and verdict.
    pub scan_verdicts: IntCounterVec,
    /// Owned objects deleted because they are no longer desired, by namespace and kind.
    pub pruned: IntCounterVec,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
    /// FaceKeyDeployments the leader's watch holds whose spec it cannot decode.
    pub undecodable: IntGauge,
    /// Watch errors by component (`controller`, `webhook`), kind and
    /// [`crate::watching::reason`]; each watch retries on its own backoff.
    pub watch_errors: IntCounterVec,
    /// Admission reviews the sidecar injection webhook answered, by outcome and, for pods that
    /// did not get their sidecar, the reason ([`crate::webhook::review::Outcome`]).
    pub admission_reviews: IntCounterVec,
    /// Time to answer one admission review (body read to answer serialised), in seconds.
    pub admission_duration: Histogram,
    /// Events of pods that did not get their sidecar the webhook did not publish, over its rate
    /// limit ([`crate::webhook::event_limit`]), by reason.
    pub admission_events_suppressed: IntCounterVec,
    /// When the webhook's loaded certificates expire (Unix seconds), by `certificate`
    /// (`serving`, `ca`).
    pub webhook_certificate_expiry: IntGaugeVec,
    /// Webhook certificate Secret writes by this replica, by what changed.
    pub webhook_certificate_rotations: IntCounterVec,
    /// Every registered collector, so families can be described before they have a child.
    collectors: Arc<[Arc<dyn Collector>]>,
}

impl Metrics {
    /// Create and register every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "facekey_operator_reconciles_total",
                "FaceKeyDeployment reconciles by result",
            ),
            &["result"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "facekey_operator_reconcile_errors_total",
                "Reconcile errors by kind",
            ),
            &["kind"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "facekey_operator_reconcile_duration_seconds",
                "Time to reconcile one FaceKeyDeployment",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let blocked_rollouts = IntCounterVec::new(
            Opts::new(
                "facekey_operator_blocked_rollouts_total",
                "Image rollouts stopped by the scan gate",
            ),
            &["namespace", "name"],
        )?;
        let rollouts_held = IntGaugeVec::new(
            Opts::new(
                "facekey_operator_rollout_held",
                "1 while the scan gate holds a FaceKeyDeployment's spec.image back, by reason",
            ),
            &["namespace", "name", "reason"],
        )?;
        let resources_degraded = IntGaugeVec::new(
            Opts::new(
                "facekey_operator_resource_degraded",
                "1 while a FaceKeyDeployment's Degraded condition is True, by its reason",
            ),
            &["namespace", "name", "reason"],
        )?;
        let running_image_vulnerable = IntGaugeVec::new(
            Opts::new(
                "facekey_operator_running_image_vulnerable",
                "1 while a rescan of the image a FaceKeyDeployment runs finds vulnerabilities above its scan policy",
            ),
            &["namespace", "name", "reason"],
        )?;
        let scan_jobs = IntCounterVec::new(
            Opts::new(
                "facekey_operator_scan_jobs_created_total",
                "Trivy scan Jobs created",
            ),
            &["namespace"],
        )?;
        let scan_verdicts = IntCounterVec::new(
            Opts::new(
                "facekey_operator_scan_verdicts_total",
                "Scan gate verdict changes by verdict",
            ),
            &["namespace", "verdict"],
        )?;
        let pruned = IntCounterVec::new(
            Opts::new(
                "facekey_operator_pruned_objects_total",
                "Owned objects deleted because they are no longer desired",
            ),
            &["namespace", "kind"],
        )?;
        let leader = IntGauge::new(
            "facekey_operator_leader",
            "1 while this replica holds the leader Lease",
        )?;
        let undecodable = IntGauge::new(
            "facekey_operator_undecodable_resources",
            "FaceKeyDeployments whose spec this operator cannot decode (not reconciled)",
        )?;
        let watch_errors = IntCounterVec::new(
            Opts::new(
                "facekey_operator_watch_errors_total",
                "Watch errors by component, kind and reason (each watch retries with backoff)",
            ),
            &["component", "kind", "reason"],
        )?;
        let admission_reviews = IntCounterVec::new(
            Opts::new(
                "facekey_operator_admission_reviews_total",
                "Admission reviews answered by the sidecar injection webhook, by outcome",
            ),
            &["outcome", "reason"],
        )?;
        // The series the webhook alerts count (refusals, skips, errors) exist at 0 from the
        // start: increase() and changes() cannot see a series born at 1, so each replica's first
        // refusal or error would go unseen.
        {
            use crate::webhook::NotInjectedReason;
            use crate::webhook::review::{ERROR_REASONS, Outcome};
            for reason in NotInjectedReason::ALL
                .iter()
                .filter(|r| **r != NotInjectedReason::LookupFailed)
            {
                for outcome in [Outcome::Skipped, Outcome::Refused] {
                    admission_reviews.with_label_values(&[outcome.as_str(), reason.as_str()]);
                }
            }
            for reason in ERROR_REASONS {
                admission_reviews.with_label_values(&[Outcome::Error.as_str(), reason]);
            }
        }
        // The API server gives up after the configuration's timeoutSeconds (5 s); the answer
        // itself takes well under a millisecond (docs/operator.md, Benchmark).
        let admission_duration = Histogram::with_opts(
            HistogramOpts::new(
                "facekey_operator_admission_duration_seconds",
                "Time to answer one admission review",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0,
            ]),
        )?;
        // No namespace label: reviews can be forged naming any namespace, which would make
        // unbounded series.
        let admission_events_suppressed = IntCounterVec::new(
            Opts::new(
                "facekey_operator_admission_events_suppressed_total",
                "Sidecar Events the webhook did not publish, over its rate limit, by reason",
            ),
            &["reason"],
        )?;
        let webhook_certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "facekey_operator_webhook_certificate_expiry_timestamp_seconds",
                "Expiry (notAfter) of the webhook certificate this replica serves and of its CA",
            ),
            &["certificate"],
        )?;
        let webhook_certificate_rotations = IntCounterVec::new(
            Opts::new(
                "facekey_operator_webhook_certificate_rotations_total",
                "Webhook certificates issued by this replica, by what changed",
            ),
            &["reason"],
        )?;
        // One list feeds both the registry and `describe`, so they cannot drift apart.
        let collectors: Arc<[Arc<dyn Collector>]> = Arc::new([
            Arc::new(reconciles.clone()) as Arc<dyn Collector>,
            Arc::new(errors.clone()),
            Arc::new(duration.clone()),
            Arc::new(blocked_rollouts.clone()),
            Arc::new(rollouts_held.clone()),
            Arc::new(resources_degraded.clone()),
            Arc::new(running_image_vulnerable.clone()),
            Arc::new(scan_jobs.clone()),
            Arc::new(scan_verdicts.clone()),
            Arc::new(pruned.clone()),
            Arc::new(leader.clone()),
            Arc::new(undecodable.clone()),
            Arc::new(watch_errors.clone()),
            Arc::new(admission_reviews.clone()),
            Arc::new(admission_duration.clone()),
            Arc::new(admission_events_suppressed.clone()),
            Arc::new(webhook_certificate_expiry.clone()),
            Arc::new(webhook_certificate_rotations.clone()),
        ]);
        for c in collectors.iter() {
            registry.register(Box::new(Shared(Arc::clone(c))))?;
        }
        Ok(Self {
            registry,
            reconciles,
            errors,
            duration,
            blocked_rollouts,
            rollouts_held,
            resources_degraded,
            running_image_vulnerable,
            scan_jobs,
            scan_verdicts,
            pruned,
            leader,
            undecodable,
            watch_errors,
            admission_reviews,
            admission_duration,
            admission_events_suppressed,
            webhook_certificate_expiry,
            webhook_certificate_rotations,
            collectors,
        })
    }

    /// Name, type and label names of every registered family, including label vectors that
    /// have no child yet (the text exposition leaves those out).
    pub fn describe(&self) -> Vec<FamilyDescription> {
        self.collectors
            .iter()
            .flat_map(|c| {
                let kinds: Vec<MetricType> =
                    c.collect().iter().map(|f| f.get_field_type()).collect();
                c.desc()
                    .into_iter()
                    .zip(kinds)
                    .map(|(d, kind)| FamilyDescription {
                        name: d.fq_name.clone(),
                        kind: match kind {
                            MetricType::COUNTER => "counter",
                            MetricType::GAUGE => "gauge",
                            MetricType::HISTOGRAM => "histogram",
                            MetricType::SUMMARY => "summary",
                            MetricType::UNTYPED => "untyped",
                        },
                        labels: d.variable_labels.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// A collector shared between the registry and [`Metrics::describe`].
struct Shared(Arc<dyn Collector>);

impl Collector for Shared {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.collect()
    }
}
