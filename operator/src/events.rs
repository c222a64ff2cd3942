//! The operator's internal events. Each struct is one thing that happened; its `emit` writes the
//! log line and moves the metric in one place, and where a Kubernetes Event is published for it,
//! `event()` builds that Event from the same fields, so logs, metrics and Events cannot drift.

use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use tracing::{debug, info, warn};

use crate::Error;
use crate::metrics::Metrics;

/// Longest Event note; longer ones are cut at a character boundary and end with `…`.
const MAX_NOTE_BYTES: usize = 1000;

/// A Kubernetes Event to publish about the FaceKeyDeployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// PascalCase reason.
    pub reason: &'static str,
    /// Human-readable note.
    pub note: String,
}

impl EventSpec {
    /// The Event as kube's recorder publishes it (action `Reconcile`, note truncated).
    pub fn to_kube(&self) -> Event {
        Event {
            type_: if self.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: self.reason.to_owned(),
            note: Some(truncate(&self.note, MAX_NOTE_BYTES)),
            action: "Reconcile".to_owned(),
            secondary: None,
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A reconcile finished without error.
#[derive(Debug)]
pub struct Reconciled<'a> {
    /// `namespace/name` of the FaceKeyDeployment.
    pub object: &'a str,
    /// When to look again.
    pub action: &'a Action,
}

impl Reconciled<'_> {
    /// Debug log line and `facekey_operator_reconciles_total{result="success"}`.
    pub fn emit(&self, metrics: &Metrics) {
        debug!(object = self.object, action = ?self.action, "reconciled");
        metrics.reconciles.with_label_values(&["success"]).inc();
    }
}

/// A reconcile failed; the error's category is the metric label and the Event reason.
#[derive(Debug)]
pub struct ReconcileFailed<'a> {
    /// `namespace/name` of the FaceKeyDeployment.
    pub object: &'a str,
    /// What failed.
    pub error: &'a Error,
}

impl ReconcileFailed<'_> {
    /// Warning log line, `facekey_operator_reconciles_total{result="error"}` and
    /// `facekey_operator_reconcile_errors_total{kind=<category>}`.
    pub fn emit(&self, metrics: &Metrics) {
        let category = self.error.category();
        warn!(object = self.object, category, error = %self.error, "reconcile failed");
        metrics.reconciles.with_label_values(&["error"]).inc();
        metrics.errors.with_label_values(&[category]).inc();
    }

    /// Warning Event, reason = the error's category, note = the error.
    pub fn event(&self) -> EventSpec {
        EventSpec {
            warning: true,
            reason: self.error.category(),
            note: self.error.to_string(),
        }
    }
}

/// The scan gate started a Trivy scan Job for an image.
#[derive(Debug)]
pub struct ScanJobCreated<'a> {
    /// `namespace/name` of the FaceKeyDeployment.
    pub object: &'a str,
    /// Its namespace (metric label).
    pub namespace: &'a str,
    /// Name of the Job.
    pub job: &'a str,
    /// The image it scans.
    pub image: &'a str,
}

impl ScanJobCreated<'_> {
    /// Info log line and `facekey_operator_scan_jobs_created_total{namespace}`.
    pub fn emit(&self, metrics: &Metrics) {
        info!(
            object = self.object,
            job = self.job,
            image = self.image,
            "scan Job created"
        );
        metrics.scan_jobs.with_label_values(&[self.namespace]).inc();
    }
}

/// The scan gate's verdict changed: the `ScanGatePassed` condition has a new reason, or a newly
/// evaluated image was blocked.
#[derive(Debug)]
pub struct ScanVerdict<'a> {
    /// `namespace/name` of the FaceKeyDeployment.
    pub object: &'a str,
    /// Its namespace (metric label).
    pub namespace: &'a str,
    /// The condition's reason: `ScanPassed`, `VulnerabilitiesFound`, `ScanFailed`, `ScanPending`,
    /// `GateDisabled` or `ImageRunning`.
    pub verdict: &'a str,
    /// The condition's message.
    pub message: &'a str,
}

impl ScanVerdict<'_> {
    /// Whether the verdict keeps `spec.image` from rolling out because of the scan's result.
    pub fn blocks(&self) -> bool {
        matches!(self.verdict, "VulnerabilitiesFound" | "ScanFailed")
    }

    /// Log line (warning when it blocks) and
    /// `facekey_operator_scan_verdicts_total{namespace, verdict}`.
    pub fn emit(&self, metrics: &Metrics) {
        if self.blocks() {
            warn!(
                object = self.object,
                verdict = self.verdict,
                message = self.message,
                "scan gate verdict"
            );
        } else {
            info!(
                object = self.object,
                verdict = self.verdict,
                message = self.message,
                "scan gate verdict"
            );
        }
        metrics
            .scan_verdicts
            .with_label_values(&[self.namespace, self.verdict])
            .inc();
    }

    /// The Event: Warning `RolloutBlocked` (findings above the policy) or `ScanFailed`; Normal
    /// `ScanPassed`, `ScanPending` or `ScanGateOpen` (gate disabled, image already running).
    pub fn event(&self) -> EventSpec {
        let (warning, reason) = match self.verdict {
            "VulnerabilitiesFound" => (true, "RolloutBlocked"),
            "ScanFailed" => (true, "ScanFailed"),
            "ScanPassed" => (false, "ScanPassed"),
            "ScanPending" => (false, "ScanPending"),
            _ => (false, "ScanGateOpen"),
        };
        EventSpec {
            warning,
            reason,
            note: self.message.to_owned(),
        }
    }
}

/// The scan gate blocked the rollout of an image not blocked before (counted once per image).
/// Its Kubernetes Event is the [`ScanVerdict`]'s (`RolloutBlocked` or `ScanFailed`), published in
/// the same reconcile: a newly blocked image is always a verdict change.
#[derive(Debug)]
pub struct RolloutBlocked<'a> {
    /// `namespace/name` of the FaceKeyDeployment.
    pub object: &'a str,
    /// Its namespace (metric label).
    pub namespace: &'a str,
    /// Its name (metric label, so a PrometheusRule can alert on its own deployment).
    pub name: &'a str,
    /// The image kept from running, when a scan summary names it.
    pub image: Option<&'a str>,
    /// `VulnerabilitiesFound` or `ScanFailed`.
    pub verdict: &'a str,
}

impl RolloutBlocked<'_> {
    /// Warning log line and `facekey_operator_blocked_rollouts_total{namespace,name}`.
    pub fn emit(&self, metrics: &Metrics) {
        warn!(
            object = self.object,
            image = self.image.unwrap_or("-"),
            verdict = self.verdict,
            "rollout blocked by the scan gate"
        );
        metrics
            .blocked_rollouts
            .with_label_values(&[self.namespace, self.name])
            .inc();
    }
}

/// An owned object that is no longer desired was deleted (a child, or a finished scan Job of an
/// image other than `spec.image`).
#[derive(Debug)]
pub struct Pruned<'a> {
    /// `namespace/name` of the FaceKeyDeployment.
    pub object: &'a str,
    /// Its namespace (metric label).
    pub namespace: &'a str,
    /// Kind of the deleted object.
    pub kind: &'a str,
    /// Name of the deleted object.
    pub name: &'a str,
}

impl Pruned<'_> {
    /// Info log line and `facekey_operator_pruned_objects_total{namespace, kind}`.
    pub fn emit(&self, metrics: &Metrics) {
        info!(
            object = self.object,
            kind = self.kind,
            name = self.name,
            "pruned"
        );
        metrics
            .pruned
            .with_label_values(&[self.namespace, self.kind])
            .inc();
    }
}

/// The sidecar injection webhook answered an admission review.
#[derive(Debug)]
pub struct AdmissionAnswered<'a> {
    /// What became of the review.
    pub outcome: crate::webhook::review::Outcome,
    /// Why the pod did not get its sidecar, or what failed (empty otherwise).
    pub reason: &'a str,
    /// Time from the body read to the answer serialised.
    pub seconds: f64,
}

impl AdmissionAnswered<'_> {
    /// `facekey_operator_admission_reviews_total{outcome, reason}` and
    /// `facekey_operator_admission_duration_seconds` (the decision's own log lines and Events
    /// are written by the webhook; this adds none per review).
    pub fn emit(&self, metrics: &Metrics) {
        metrics
            .admission_reviews
            .with_label_values(&[self.outcome.as_str(), self.reason])
            .inc();
        metrics.admission_duration.observe(self.seconds);
    }
}

/// The sidecar injection webhook did not publish the Event of a pod that did not get its sidecar:
/// over its rate limit, or a review naming no valid namespace ([`crate::webhook::event_limit`]).
#[derive(Debug)]
pub struct AdmissionEventSuppressed<'a> {
    /// The review's namespace (as the review names it: it may be forged).
    pub namespace: &'a str,
    /// The FaceKeyDeployment the pod named.
    pub resource: &'a str,
    /// Why the pod did not get its sidecar ([`crate::webhook::NotInjectedReason`]).
    pub reason: &'static str,
    /// Which limit held the Event back.
    pub verdict: crate::webhook::event_limit::Verdict,
}

impl AdmissionEventSuppressed<'_> {
    /// Debug log line (a flood must not flood the log) and
    /// `facekey_operator_admission_events_suppressed_total{reason}`.
    pub fn emit(&self, metrics: &Metrics) {
        debug!(namespace = self.namespace, resource = self.resource, reason = self.reason, limit = ?self.verdict, "sidecar not injected; Event suppressed");
        metrics
            .admission_events_suppressed
            .with_label_values(&[self.reason])
            .inc();
    }
}

/// The webhook's certificates were checked: what this replica now serves and, when it issued
/// them, what changed.
#[derive(Debug)]
pub struct WebhookCertificatesChecked {
    /// The serving certificate's notAfter (Unix seconds), if it parses.
    pub serving_not_after: Option<i64>,
    /// The (newest) CA's notAfter (Unix seconds), if the Secret has a CA that parses.
    pub ca_not_after: Option<i64>,
    /// What this replica issued (the rotation's `reason` label), or None.
    pub issued: Option<&'static str>,
}

impl WebhookCertificatesChecked {
    /// `facekey_operator_webhook_certificate_expiry_timestamp_seconds{certificate}` and, on
    /// issue, `facekey_operator_webhook_certificate_rotations_total{reason}`.
    pub fn emit(&self, metrics: &Metrics) {
        for (which, at) in [
            ("serving", self.serving_not_after),
            ("ca", self.ca_not_after),
        ] {
            match at {
                Some(t) => metrics
                    .webhook_certificate_expiry
                    .with_label_values(&[which])
                    .set(t),
                None => {
                    // Unknown: no sample rather than a stale one.
                    let _ = metrics
                        .webhook_certificate_expiry
                        .remove_label_values(&[which]);
                }
            }
        }
        if let Some(reason) = self.issued {
            info!(
                reason,
                serving_not_after = ?self.serving_not_after,
                "webhook certificate rotated"
            );
            metrics
                .webhook_certificate_rotations
                .with_label_values(&[reason])
                .inc();
        }
    }
}

/// A FaceKeyDeployment's spec could not be decoded by this operator ([`crate::decode`]).
#[derive(Debug)]
pub struct SpecUndecodable<'a> {
    /// `namespace/name` of the FaceKeyDeployment.
    pub object: &'a str,
    /// Where and why decoding failed.
    pub reason: &'a str,
}

impl SpecUndecodable<'_> {
    /// Warning log line, at once (the metric is the decoder's gauge of such resources; the
    /// Event and status follow if it lasts).
    pub fn emit(&self) {
        warn!(
            object = self.object,
            reason = self.reason,
            "cannot decode the resource's spec; it is not reconciled until the spec or the \
             operator changes"
        );
    }

    /// Warning Event `SpecUndecodable`.
    pub fn event(&self) -> EventSpec {
        EventSpec {
            warning: true,
            reason: crate::status::SPEC_UNDECODABLE,
            note: format!(
                "this operator cannot read the spec ({}); nothing is applied until the spec or \
                 the operator changes",
                self.reason
            ),
        }
    }
}

/// A FaceKeyDeployment's status could not be decoded by this operator (written by a newer one):
/// it is reconciled as if it had none, and its next status write replaces it.
#[derive(Debug)]
pub struct StatusUnreadable<'a> {
    /// `namespace/name` of the FaceKeyDeployment.
    pub object: &'a str,
    /// Where and why decoding failed.
    pub reason: &'a str,
}

impl StatusUnreadable<'_> {
    /// Warning log line.
    pub fn emit(&self) {
        warn!(
            object = self.object,
            reason = self.reason,
            "cannot decode the resource's status; reconciling it as if it had none"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::validate::{InvalidSpec, Problem};

    fn metrics() -> Metrics {
        Metrics::new().unwrap()
    }

    #[test]
    fn reconciled_counts_a_success() {
        let m = metrics();
        Reconciled {
            object: "ns/fk",
            action: &Action::await_change(),
        }
        .emit(&m);
        assert_eq!(m.reconciles.with_label_values(&["success"]).get(), 1);
        assert_eq!(m.reconciles.with_label_values(&["error"]).get(), 0);
    }

    #[test]
    fn reconcile_failed_counts_by_category_and_names_the_event_after_it() {
        let m = metrics();
        let error = Error::from(InvalidSpec {
            problems: vec![Problem::EmptyImage],
        });
        let failed = ReconcileFailed {
            object: "ns/fk",
            error: &error,
        };
        failed.emit(&m);
        assert_eq!(m.reconciles.with_label_values(&["error"]).get(), 1);
        assert_eq!(m.errors.with_label_values(&["InvalidSpec"]).get(), 1);
        assert_eq!(
            failed.event(),
            EventSpec {
                warning: true,
                reason: "InvalidSpec",
                note: "invalid spec: image must not be empty".into(),
            }
        );
    }

    #[test]
    fn scan_job_created_counts_per_namespace() {
        let m = metrics();
        ScanJobCreated {
            object: "ns/fk",
            namespace: "ns",
            job: "fk-scan-1",
            image: "img:1",
        }
        .emit(&m);
        assert_eq!(m.scan_jobs.with_label_values(&["ns"]).get(), 1);
    }

    #[test]
    fn scan_verdict_counts_by_verdict_and_maps_to_its_event() {
        let m = metrics();
        for (verdict, warning, reason) in [
            ("VulnerabilitiesFound", true, "RolloutBlocked"),
            ("ScanFailed", true, "ScanFailed"),
            ("ScanPassed", false, "ScanPassed"),
            ("ScanPending", false, "ScanPending"),
            ("GateDisabled", false, "ScanGateOpen"),
            ("ImageRunning", false, "ScanGateOpen"),
        ] {
            let v = ScanVerdict {
                object: "ns/fk",
                namespace: "ns",
                verdict,
                message: "why",
            };
            v.emit(&m);
            assert_eq!(m.scan_verdicts.with_label_values(&["ns", verdict]).get(), 1);
            assert_eq!(v.blocks(), warning, "{verdict}");
            assert_eq!(
                v.event(),
                EventSpec {
                    warning,
                    reason,
                    note: "why".into()
                }
            );
        }
    }

    #[test]
    fn rollout_blocked_counts_per_namespace() {
        let m = metrics();
        RolloutBlocked {
            object: "ns/fk",
            namespace: "ns",
            name: "fk",
            image: Some("img:2"),
            verdict: "VulnerabilitiesFound",
        }
        .emit(&m);
        assert_eq!(m.blocked_rollouts.with_label_values(&["ns", "fk"]).get(), 1);
    }

    #[test]
    fn pruned_counts_per_namespace_and_kind() {
        let m = metrics();
        for kind in ["Service", "Job", "Service"] {
            Pruned {
                object: "ns/fk",
                namespace: "ns",
                kind,
                name: "fk",
            }
            .emit(&m);
        }
        assert_eq!(m.pruned.with_label_values(&["ns", "Service"]).get(), 2);
        assert_eq!(m.pruned.with_label_values(&["ns", "Job"]).get(), 1);
    }

    #[test]
    fn long_notes_are_cut_at_a_character_boundary() {
        let ev = EventSpec {
            warning: false,
            reason: "X",
            note: "é".repeat(600),
        };
        let note = ev.to_kube().note.unwrap();
        assert!(note.ends_with('…'));
        assert!(note.len() <= MAX_NOTE_BYTES + '…'.len_utf8());
    }
}

/// The reconciler created a Secret with a generated template key (a PostgreSQL store without
/// `templateKeySecretRef`). Neither the log line nor the Event carries the key.
#[derive(Debug)]
pub struct TemplateKeyCreated<'a> {
    /// `namespace/name` of the FaceKeyDeployment.
    pub object: &'a str,
    /// Name of the Secret created.
    pub secret: &'a str,
}

impl TemplateKeyCreated<'_> {
    /// Info log line (no metric: it happens once per resource).
    pub fn emit(&self) {
        info!(
            object = self.object,
            secret = self.secret,
            "template key Secret created"
        );
    }

    /// Normal Event `TemplateKeyCreated` naming the Secret.
    pub fn event(&self) -> EventSpec {
        EventSpec {
            warning: false,
            reason: "TemplateKeyCreated",
            note: format!(
                "created Secret {} with a new template encryption key (key id {}); back it up \
                 with the database: without it the templates cannot be read",
                self.secret,
                crate::apply::GENERATED_KEY_ID
            ),
        }
    }
}

/// The reconciler created the Secret with a generated `admin` API key (no `auth.keysSecretRef`).
/// Neither the log line nor the Event carries the key, only where to find it.
#[derive(Debug)]
pub struct ApiKeyCreated<'a> {
    /// `namespace/name` of the FaceKeyDeployment.
    pub object: &'a str,
    /// Name of the Secret created.
    pub secret: &'a str,
}

impl ApiKeyCreated<'_> {
    /// Info log line (no metric: it happens once per resource).
    pub fn emit(&self) {
        info!(
            object = self.object,
            secret = self.secret,
            "API keys Secret created"
        );
    }

    /// Normal Event `ApiKeyCreated` naming the Secret and the data key holding the admin key.
    pub fn event(&self) -> EventSpec {
        EventSpec {
            warning: false,
            reason: "ApiKeyCreated",
            note: format!(
                "created Secret {} with a new API key (key id {}, scope admin); the key is its \
                 data key {}",
                self.secret,
                crate::desired::GENERATED_API_KEY_ID,
                crate::desired::ADMIN_KEY
            ),
        }
    }
}
