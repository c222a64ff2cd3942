//! The FaceKeyDeployment status and the Events of its transitions, computed from what the
//! reconciler observed. Pure: the reconciler gathers [`Observed`], this module decides.

use facekey_crds::condition::{
    CONFLICT, DEGRADED, MONITORING_READY, PERSISTENT_STORE, PROGRESSING, READY, RECONCILING,
    SCAN_GATE_PASSED, STALLED,
};
use facekey_crds::{FaceKeyDeploymentStatus, ScanStatus, ScanVerdict};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;

use crate::conditions::{self, Decided};
use crate::desired::{OptionalCrd, Skipped, StoreState};
use crate::error::OBJECT_NOT_OWNED;
use crate::events::EventSpec;

/// Where the scan gate stands for `spec.image`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateState {
    /// `scanGate.enabled: false`: images roll out unscanned.
    Disabled,
    /// `spec.image` is the last-known-good image (the last one admitted), or the one admitted
    /// before it: admitted again without a scan (a rollback, or the steady state).
    LastKnownGood(String),
    /// The scan passed the policy.
    Passed(String),
    /// The scan found findings above the policy: the previous image keeps serving.
    Blocked(String),
    /// No usable report yet (scan running, or about to start): fail closed and wait.
    Pending(String),
    /// The scan could not produce a usable report: fail closed.
    Failed(String),
}

impl GateState {
    /// Whether `spec.image` may roll out.
    pub fn is_open(&self) -> bool {
        matches!(
            self,
            GateState::Disabled | GateState::LastKnownGood(_) | GateState::Passed(_)
        )
    }

    fn condition(&self) -> Decided {
        let (status, reason, message) = match self {
            GateState::Disabled => (true, "GateDisabled", "scanGate.enabled is false".to_owned()),
            GateState::LastKnownGood(m) => (true, "LastKnownGood", m.clone()),
            GateState::Passed(m) => (true, "ScanPassed", m.clone()),
            GateState::Blocked(m) => (false, VULNERABILITIES_FOUND, m.clone()),
            GateState::Pending(m) => (false, "ScanPending", m.clone()),
            GateState::Failed(m) => (false, SCAN_FAILED, m.clone()),
        };
        Decided::new(SCAN_GATE_PASSED, status, reason, message)
    }
}

/// How the apply stage ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Every desired object applied and leftovers pruned.
    Applied,
    /// The spec is invalid: nothing was applied.
    InvalidSpec(String),
    /// An API call failed; `category` is [`crate::Error::category`].
    Failed {
        /// Error category (Event reason).
        category: &'static str,
        /// Error text.
        message: String,
        /// The API server refused the request itself ([`crate::Error::is_refused`]: an
        /// immutable field, a quota, an admission webhook, an object not ours): the same
        /// request fails again until the spec or the cluster changes.
        refused: bool,
    },
}

/// What the reconciler observed, the input of [`compute`].
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// `metadata.generation` of the FaceKeyDeployment.
    pub generation: Option<i64>,
    /// Status before this reconcile.
    pub old: Option<&'a FaceKeyDeploymentStatus>,
    /// The Deployment as read after applying (None when none exists).
    pub deployment: Option<&'a Deployment>,
    /// `spec.image` of the FaceKeyDeployment.
    pub spec_image: &'a str,
    /// Scan gate state of `spec.image`.
    pub gate: &'a GateState,
    /// The scan record of `spec.image` evaluated in this reconcile (None keeps the recorded one).
    pub record: Option<ScanStatus>,
    /// The image admitted for `spec.image` (None while the gate holds it).
    pub admitted: Option<&'a str>,
    /// The last-known-good image: what the Deployment is meant to run.
    pub last_known_good: Option<&'a str>,
    /// A rescan of the last-known-good image made in this reconcile (None keeps the recorded
    /// one while it is of that image).
    pub running: Option<ScanStatus>,
    /// Result of the apply stage.
    pub outcome: &'a ApplyOutcome,
    /// Monitoring objects skipped for missing CRDs.
    pub skipped: &'a [Skipped],
    /// Where enrolments live.
    pub store: &'a StoreState,
    /// The CloudNativePG Cluster's own status, when the store is one and it was read.
    pub database: Option<&'a DatabaseHealth>,
    /// Label selector of the runtime pods.
    pub selector: &'a str,
    /// In-cluster URL of the Service.
    pub url: &'a str,
    /// `spec.autoscaling.minReplicas` when the resource is autoscaled.
    pub autoscaling_min: Option<i32>,
    /// Wall-clock time of this reconcile.
    pub now: Timestamp,
}

/// What a CloudNativePG `Cluster`'s status says about the database: its operator's view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseHealth {
    /// The Cluster's `Ready` condition (`None` before CloudNativePG has set one).
    pub ready: Option<bool>,
    /// `status.phase`, e.g. `Cluster in healthy state` or `Setting up primary`.
    pub phase: Option<String>,
    /// `status.readyInstances` and `status.instances`.
    pub instances: Option<(i64, i64)>,
    /// `spec.postgresql.synchronous.number` as the Cluster holds it.
    pub synchronous: Option<i64>,
    /// `store.postgres.cloudNativePG.synchronousReplicas` of the resource, when above 0.
    pub synchronous_asked: Option<i32>,
}

impl DatabaseHealth {
    /// Read from a Cluster object as the API server returns it.
    pub fn of(cluster: &serde_json::Value) -> Self {
        let status = &cluster["status"];
        let ready = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .and_then(|c| c["status"].as_str())
            .map(|s| s == "True");
        let count = |field: &str| status[field].as_i64();
        Self {
            ready,
            phase: status["phase"].as_str().map(str::to_owned),
            instances: count("instances").map(|n| (count("readyInstances").unwrap_or(0), n)),
            synchronous: cluster
                .pointer("/spec/postgresql/synchronous/number")
                .and_then(serde_json::Value::as_i64),
            synchronous_asked: None,
        }
    }

    /// With the synchronous standbys the resource asks for (`None` or 0: asynchronous).
    #[must_use]
    pub fn asking_synchronous(mut self, asked: Option<i32>) -> Self {
        self.synchronous_asked = asked.filter(|n| *n > 0);
        self
    }

    /// Asked for synchronous standbys the Cluster does not hold: a CloudNativePG older than
    /// 1.24 drops `postgresql.synchronous` with only a warning, and replication stays
    /// asynchronous. (Right after `synchronousReplicas` changes, one reconcile still reads the
    /// Cluster as it was before the apply.)
    pub fn synchronous_missing(&self) -> bool {
        self.synchronous_asked
            .is_some_and(|asked| self.synchronous != Some(i64::from(asked)))
    }

    /// `phase, k/n instances ready` with what is known.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(phase) = &self.phase {
            parts.push(format!("phase {phase:?}"));
        }
        if let Some((ready, all)) = self.instances {
            parts.push(format!("{ready}/{all} instances ready"));
        }
        if parts.is_empty() {
            parts.push("no status yet".to_owned());
        }
        parts.join(", ")
    }
}

/// Replica counts and image of a live Deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentView {
    /// `spec.replicas` (1 when unset, as the API server defaults it).
    pub desired: i32,
    /// `status.replicas`.
    pub replicas: i32,
    /// `status.readyReplicas`.
    pub ready: i32,
    /// `status.availableReplicas`.
    pub available: i32,
    /// `status.updatedReplicas`.
    pub updated: i32,
    /// The controller has seen the latest spec.
    pub observed_latest: bool,
    /// `Progressing=False, reason=ProgressDeadlineExceeded` in a status of the latest spec
    /// (`observed_latest`): a condition the controller wrote for an earlier template says nothing
    /// about the rollout of this one, which the controller has not even looked at yet (`kubectl
    /// rollout status` reads it the same way).
    pub deadline_exceeded: bool,
    /// `spec.paused`: a rollout of a new template waits until someone resumes it (the operator
    /// never sets the field; `kubectl rollout pause` does).
    pub paused: bool,
    /// Image of the runtime container.
    pub image: Option<String>,
}

impl DeploymentView {
    /// Extract the fields the status needs.
    pub fn of(d: &Deployment) -> Self {
        let spec = d.spec.as_ref();
        let status = d.status.clone().unwrap_or_default();
        let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
        let image = spec
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| {
                // By name: a container added by hand (server-side apply keeps it) may come first.
                p.containers
                    .iter()
                    .find(|c| c.name == crate::desired::RUNTIME_CONTAINER)
            })
            .and_then(|c| c.image.clone());
        let observed_latest = match (status.observed_generation, d.metadata.generation) {
            (Some(o), Some(g)) => o >= g,
            _ => false,
        };
        let deadline_exceeded = observed_latest
            && status.conditions.unwrap_or_default().iter().any(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            });
        Self {
            desired,
            replicas: status.replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            available: status.available_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            observed_latest,
            deadline_exceeded,
            paused: spec.and_then(|s| s.paused).unwrap_or(false),
            image,
        }
    }

    /// All replicas run the latest template and are available.
    pub fn rollout_complete(&self) -> bool {
        self.observed_latest
            && self.updated >= self.desired
            && self.replicas == self.updated
            && self.available >= self.desired
    }

    /// A rollout that waits for `kubectl rollout resume`: paused with replicas still to update.
    pub fn paused_rollout(&self) -> bool {
        self.paused && !self.rollout_complete()
    }
}

/// Whether the rollout this reconcile asked for is stuck: the Deployment's template runs the
/// admitted image, its controller has seen that template, and says it exceeded its progress
/// deadline. A deadline the Deployment reports while the gate holds a new `spec.image` (nothing
/// admitted: the scan is pending) or before its controller has seen the template just applied
/// is the previous rollout's: the spec now asks for something else, still being acted upon.
fn rollout_stuck(o: &Observed<'_>, v: &DeploymentView) -> bool {
    v.deadline_exceeded && runs_admitted(v.image.as_deref(), o.admitted)
}

/// The `Ready` condition: True only when the image admitted for `spec.image` is what the
/// Deployment's pod template runs, the Deployment controller has seen that template, every
/// replica runs it and the desired count is available.
fn ready_condition(o: &Observed<'_>, view: Option<&DeploymentView>) -> Decided {
    let serving = |v: Option<&DeploymentView>| match v {
        Some(v) => format!(
            "{} keeps serving ({}/{} available)",
            v.image.as_deref().unwrap_or("?"),
            v.available,
            v.desired
        ),
        None => "nothing serves yet".to_owned(),
    };
    if let ApplyOutcome::InvalidSpec(m) = o.outcome {
        return Decided::new(READY, false, "InvalidSpec", m.clone());
    }
    // An apply that failed left part of this generation unwritten (the Deployment's template
    // among it, perhaps): what runs may be the previous generation's, so it is not Ready
    // whatever the old pods report.
    if let ApplyOutcome::Failed {
        category, message, ..
    } = o.outcome
    {
        return Decided::new(
            READY,
            false,
            "ApplyFailed",
            format!(
                "applying this generation failed ({category}: {message}); {}",
                serving(view)
            ),
        );
    }
    if !o.gate.is_open() {
        let why = match o.gate {
            GateState::Pending(_) => "waiting for its scan",
            GateState::Failed(_) => "its scan failed",
            _ => "findings above the policy",
        };
        return Decided::new(
            READY,
            false,
            "RolloutBlocked",
            format!(
                "{} is held by the scan gate ({why}); {}",
                o.spec_image,
                serving(view)
            ),
        );
    }
    let Some(v) = view else {
        return Decided::new(
            READY,
            false,
            "NoDeployment",
            "the runtime Deployment does not exist yet",
        );
    };
    if !runs_admitted(v.image.as_deref(), o.admitted) {
        return Decided::new(
            READY,
            false,
            "NotUpToDate",
            format!(
                "the Deployment runs {}, not the admitted {}",
                v.image.as_deref().unwrap_or("no image"),
                o.admitted.unwrap_or("-")
            ),
        );
    }
    if let Some(message) = autoscaling_stopped(o, v) {
        return Decided::new(READY, false, AUTOSCALING_STOPPED, message);
    }
    if v.rollout_complete() {
        return if v.desired == 0 {
            Decided::new(READY, true, "ScaledToZero", "spec asks for 0 replicas")
        } else {
            Decided::new(
                READY,
                true,
                "Available",
                format!(
                    "{}/{} replicas available running {}",
                    v.available,
                    v.desired,
                    v.image.as_deref().unwrap_or("?")
                ),
            )
        };
    }
    let reason = if v.available == 0 {
        "NotAvailable"
    } else if v.available < v.desired {
        "PartiallyAvailable"
    } else {
        "RollingOut"
    };
    Decided::new(
        READY,
        false,
        reason,
        format!(
            "{}/{} replicas available, {} updated",
            v.available, v.desired, v.updated
        ),
    )
}

/// kstatus' `Reconciling` (True: still working towards the spec) and `Stalled` (True: cannot get
/// there without a change). Both False means the spec is reached, or `Ready` says what is wrong.
/// Reason of `Ready=False` and `Stalled=True` while an autoscaled Deployment stands at 0.
pub const AUTOSCALING_STOPPED: &str = "AutoscalingStopped";

/// Why an autoscaled runtime stands at zero pods, when it does: the HorizontalPodAutoscaler
/// controller does not scale a target at 0 (`ScalingActive=False, ScalingDisabled`), so a
/// Deployment scaled to 0 by hand stays there, which no spec of this resource asks for.
fn autoscaling_stopped(o: &Observed<'_>, v: &DeploymentView) -> Option<String> {
    let min = o.autoscaling_min?;
    (v.desired == 0).then(|| {
        format!(
            "the Deployment stands at 0 replicas, and the HorizontalPodAutoscaler does not scale \
             a target at 0: scale it to at least autoscaling.minReplicas ({min}) by hand"
        )
    })
}

fn kstatus_conditions(o: &Observed<'_>, view: Option<&DeploymentView>) -> [Decided; 2] {
    let stalled = match (&o.outcome, o.gate, view) {
        (ApplyOutcome::InvalidSpec(m), _, _) => Some(("InvalidSpec", m.clone())),
        // Refused writes (an object not ours among them) repeat until something changes: GitOps
        // tools must show them as failed, not as progressing forever.
        (
            ApplyOutcome::Failed {
                category,
                message,
                refused: true,
            },
            _,
            _,
        ) => Some((*category, message.clone())),
        (_, GateState::Blocked(m), _) => Some((IMAGE_BLOCKED, m.clone())),
        (_, GateState::Failed(m), _) => Some((SCAN_FAILED, m.clone())),
        // Waiting cannot install a CRD: the pods wait for a Secret nothing will create.
        _ if matches!(o.store, StoreState::CloudNativePgMissing { .. }) => Some((
            CNPG_NOT_INSTALLED,
            store_condition(o.store, o.database).message,
        )),
        (_, _, Some(v)) if rollout_stuck(o, v) => Some((
            "RolloutStuck",
            "the Deployment exceeded its progress deadline".to_owned(),
        )),
        (_, _, Some(v)) => autoscaling_stopped(o, v).map(|m| (AUTOSCALING_STOPPED, m)),
        _ => None,
    };
    let reconciling = match (&o.outcome, o.gate, view) {
        _ if stalled.is_some() => None,
        (
            ApplyOutcome::Failed {
                category, message, ..
            },
            _,
            _,
        ) => Some((*category, format!("retrying: {message}"))),
        (_, GateState::Pending(m), _) => Some(("ScanPending", m.clone())),
        // Still in progress, but only a human moves it on: say so rather than "rolling out".
        (_, _, Some(v)) if v.paused_rollout() => Some((PAUSED, paused_message(v))),
        (_, _, Some(v))
            if !v.rollout_complete() || !runs_admitted(v.image.as_deref(), o.admitted) =>
        {
            Some((
                "RollingOut",
                format!(
                    "{}/{} replicas updated, {} available",
                    v.updated, v.desired, v.available
                ),
            ))
        }
        (_, _, None) => Some((
            "NoDeployment",
            "the runtime Deployment does not exist yet".to_owned(),
        )),
        _ => None,
    };
    [
        match reconciling {
            Some((reason, message)) => Decided::new(RECONCILING, true, reason, message),
            None => Decided::new(RECONCILING, false, "Reconciled", "nothing in progress"),
        },
        match stalled {
            Some((reason, message)) => Decided::new(STALLED, true, reason, message),
            None => Decided::new(STALLED, false, "AsExpected", "nothing is stuck"),
        },
    ]
}

/// The recorded scans to keep, at most three: the one of `spec.image`, the passed one of the
/// last-known-good image, and the passed one of the image admitted before it
/// ([`crate::scan_gate::previously_admitted`]: going back to it, the usual way out of a
/// rollout that fails, needs no scan). That last one is replaced only when the last-known-good
/// image changes and a passed scan had admitted the one replaced, which becomes the previous one.
fn kept_scans(o: &Observed<'_>) -> Vec<ScanStatus> {
    let old = o.old.map(|s| s.scans.as_slice()).unwrap_or_default();
    let mut kept = Vec::with_capacity(3);
    let current = o
        .record
        .clone()
        .or_else(|| old.iter().find(|r| r.image == o.spec_image).cloned());
    if let Some(r) = current {
        kept.push(r);
    }
    if let Some(lkg) = o.last_known_good {
        let is_lkg = |r: &&ScanStatus| {
            r.verdict == ScanVerdict::Passed
                && crate::scan_gate::record_image(r).as_deref() == Some(lkg)
        };
        let record = o.record.iter().chain(old).find(is_lkg);
        if let Some(r) = record
            && !kept.contains(r)
        {
            kept.push(r.clone());
        }
    }
    let old_lkg = crate::scan_gate::last_known_good(o.old);
    let replaced = old_lkg
        .filter(|old_lkg| Some(*old_lkg) != o.last_known_good)
        .and_then(|old_lkg| {
            old.iter().find(|r| {
                r.verdict == ScanVerdict::Passed
                    && crate::scan_gate::record_image(r).as_deref() == Some(old_lkg)
            })
        });
    let previous = replaced.or_else(|| crate::scan_gate::previously_admitted(o.old));
    if let Some(r) = previous
        && crate::scan_gate::record_image(r).as_deref() != o.last_known_good
        && !kept.iter().any(|k| k.image == r.image)
    {
        kept.push(r.clone());
    }
    kept
}

/// The running image's rescan: this reconcile's, else the recorded one, while it is of the
/// last-known-good image's digest; none once another image is admitted.
fn running_scan(o: &Observed<'_>) -> Option<ScanStatus> {
    // With the gate off nothing rescans: a report would stay whatever the image became.
    if *o.gate == GateState::Disabled {
        return None;
    }
    let recorded = o
        .running
        .as_ref()
        .or_else(|| o.old?.running_image_scan.as_ref());
    crate::scan_gate::of_digest(recorded, o.last_known_good?).cloned()
}

/// Compute the new status.
pub fn compute(o: &Observed<'_>) -> FaceKeyDeploymentStatus {
    let view = o.deployment.map(DeploymentView::of);
    let mut decided = Vec::with_capacity(8);

    decided.push(ready_condition(o, view.as_ref()));
    decided.extend(kstatus_conditions(o, view.as_ref()));

    // Progressing: is something still changing? Not a rollout past its deadline (the
    // Deployment's own Progressing says False then) nor one paused by hand.
    decided.push(match (&view, o.gate) {
        (Some(v), _) if rollout_stuck(o, v) => Decided::new(
            PROGRESSING,
            false,
            "ProgressDeadlineExceeded",
            format!(
                "the Deployment exceeded its progress deadline: {}/{} replicas updated, {} \
                 available",
                v.updated, v.desired, v.available
            ),
        ),
        (Some(v), _) if v.paused_rollout() => {
            Decided::new(PROGRESSING, false, PAUSED, paused_message(v))
        }
        (Some(v), _) if !v.rollout_complete() => Decided::new(
            PROGRESSING,
            true,
            "RollingOut",
            format!(
                "{}/{} replicas updated, {} available",
                v.updated, v.desired, v.available
            ),
        ),
        (_, GateState::Pending(m)) => Decided::new(PROGRESSING, true, "ScanPending", m.clone()),
        (Some(_), _) => Decided::new(
            PROGRESSING,
            false,
            "RolloutComplete",
            "all replicas run the current template",
        ),
        (None, _) => Decided::new(PROGRESSING, false, "Idle", "nothing is rolling out"),
    });

    // Degraded: does the result deviate from the spec in a way a human should look at?
    decided.push(match (&o.outcome, o.gate, &view) {
        (ApplyOutcome::InvalidSpec(m), _, _) => {
            Decided::new(DEGRADED, true, "InvalidSpec", m.clone())
        }
        (
            ApplyOutcome::Failed {
                category, message, ..
            },
            _,
            _,
        ) => Decided::new(DEGRADED, true, category, message.clone()),
        (_, GateState::Blocked(m), _) => Decided::new(DEGRADED, true, IMAGE_BLOCKED, m.clone()),
        (_, GateState::Failed(m), _) => Decided::new(DEGRADED, true, SCAN_FAILED, m.clone()),
        _ if matches!(o.store, StoreState::CloudNativePgMissing { .. }) => Decided::new(
            DEGRADED,
            true,
            CNPG_NOT_INSTALLED,
            store_condition(o.store, o.database).message,
        ),
        (_, _, Some(v)) if rollout_stuck(o, v) => Decided::new(
            DEGRADED,
            true,
            "RolloutStuck",
            "the Deployment exceeded its progress deadline",
        ),
        _ => Decided::new(DEGRADED, false, "AsExpected", "no problems detected"),
    });

    decided.push(o.gate.condition());

    decided.push(if o.skipped.is_empty() {
        Decided::new(
            MONITORING_READY,
            true,
            "Applied",
            "requested monitoring objects are applied",
        )
    } else {
        let list: Vec<String> = o
            .skipped
            .iter()
            .map(|s| format!("{} skipped: {}", s.kind.as_str(), s.reason))
            .collect();
        Decided::new(MONITORING_READY, false, "CRDNotInstalled", list.join("; "))
    });

    decided.push(store_condition(o.store, o.database));

    // Only while an object is not ours; it goes away with the conflict.
    if let ApplyOutcome::Failed {
        category, message, ..
    } = &o.outcome
        && *category == OBJECT_NOT_OWNED
    {
        decided.push(Decided::new(
            CONFLICT,
            true,
            OBJECT_NOT_OWNED,
            message.clone(),
        ));
    }

    let old_conditions = o.old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let scans = kept_scans(o);
    FaceKeyDeploymentStatus {
        observed_generation: o.generation,
        conditions: conditions::merge(old_conditions, &decided, o.generation, o.now),
        replicas: view.as_ref().map_or(0, |v| v.replicas),
        ready_replicas: view.as_ref().map_or(0, |v| v.ready),
        selector: Some(o.selector.to_owned()),
        current_image: view.and_then(|v| v.image),
        last_known_good_image: o.last_known_good.map(str::to_owned),
        scans,
        running_image_scan: running_scan(o),
        url: Some(o.url.to_owned()),
        // Written by the sidecar counter (its own field manager), carried over unchanged so an
        // unchanged status is not patched again; `reconcile` leaves it out of its apply.
        sidecar: o.old.and_then(|s| s.sidecar.clone()),
    }
}

/// The status of a generation the operator could not observe (capability discovery or the
/// Deployment's read failed: RBAC, the API server): `observedGeneration` moves to `generation`,
/// with `Ready` False, `Reconciling` True (retried; False when refused) and `Degraded` True
/// naming `category` and
/// `message`, so GitOps tools show why instead of "not yet observed"; everything else is kept
/// from `old` (what was last known, `sidecar` included: the counter's, never applied from
/// here). `Stalled` is True when the API server `refused` the read itself (a 403: RBAC needs a
/// human, and kstatus and the Argo CD check then show a failure, not progress forever), False
/// otherwise (retrying may succeed).
pub fn observe_failure(
    old: Option<&FaceKeyDeploymentStatus>,
    generation: Option<i64>,
    category: &'static str,
    message: &str,
    refused: bool,
    now: Timestamp,
) -> FaceKeyDeploymentStatus {
    // kstatus reads the first of Reconciling/Stalled that is True: a refusal must not also say
    // Reconciling, or Flux would wait on it as progress.
    let (reconciling, stalled) = if refused {
        (
            Decided::new(
                RECONCILING,
                false,
                category,
                format!("retried only every 5 minutes: {message}"),
            ),
            Decided::new(
                STALLED,
                true,
                category,
                format!("the API server refuses what the operator must read: {message}"),
            ),
        )
    } else if let Some((reason, held)) = held_stalled(old) {
        // A recorded verdict holds the image back: an observation failing for a moment changes
        // nothing about it, so Stalled stays (kstatus would otherwise read Failed, InProgress,
        // Failed again); the retry is said in its message.
        (
            Decided::new(RECONCILING, false, reason, format!("retrying: {message}")),
            Decided::new(STALLED, true, reason, held),
        )
    } else {
        (
            Decided::new(RECONCILING, true, category, format!("retrying: {message}")),
            Decided::new(STALLED, false, "AsExpected", "retrying"),
        )
    };
    let decided = [
        Decided::new(
            READY,
            false,
            category,
            format!("the operator cannot observe this generation: {message}"),
        ),
        reconciling,
        stalled,
        Decided::new(DEGRADED, true, category, message.to_owned()),
    ];
    with_conditions(old, generation, &decided, now)
}

/// The `Stalled` condition of a written status that a scan verdict holds (True, reason
/// `ImageBlocked` or `ScanFailed`): its reason and message.
fn held_stalled(old: Option<&FaceKeyDeploymentStatus>) -> Option<(&'static str, String)> {
    let c = conditions::find(&old?.conditions, STALLED)?;
    if c.status != "True" {
        return None;
    }
    let reason = HELD_BY_VERDICT.into_iter().find(|r| *r == c.reason)?;
    Some((reason, c.message.clone()))
}

/// Why the scan gate holds `spec.image` back, read from a written status: the `ScanGatePassed`
/// reason when it is `VulnerabilitiesFound` or `ScanFailed` (the previous image keeps serving);
/// `None` otherwise (admitted, disabled, or a scan still pending, which is no fault).
pub fn rollout_held(status: Option<&FaceKeyDeploymentStatus>) -> Option<&'static str> {
    let c = conditions::find(&status?.conditions, SCAN_GATE_PASSED)?;
    if c.status != "False" {
        return None;
    }
    [VULNERABILITIES_FOUND, SCAN_FAILED]
        .into_iter()
        .find(|r| *r == c.reason)
}

/// Reason of the Warning Event when a rescan finds the running image above the scan policy.
pub const RUNNING_IMAGE_VULNERABLE: &str = "RunningImageVulnerable";

/// Whether the image the resource runs was found above its scan policy by its latest rescan,
/// read from a written status: `VulnerabilitiesFound` while `runningImageScan` is Blocked for
/// the last-known-good image's digest; `None` otherwise.
pub fn running_image_vulnerable(status: Option<&FaceKeyDeploymentStatus>) -> Option<&'static str> {
    let s = status?;
    let lkg = s.last_known_good_image.as_deref()?;
    crate::scan_gate::of_digest(s.running_image_scan.as_ref(), lkg)
        .filter(|r| crate::scan_gate::finds_vulnerable(r))
        .map(|_| VULNERABILITIES_FOUND)
}

/// Why the resource is degraded, read from a written status: the `Degraded` condition's reason
/// while it is True (`ApplyFailed`, `ObjectNotOwned`, `RolloutStuck`, `ImageBlocked`, ...);
/// `None` otherwise. A reason that is not one short PascalCase word reads as `Other`, so the
/// metric built on it keeps a small label set whoever wrote the status.
pub fn degraded(status: Option<&FaceKeyDeploymentStatus>) -> Option<String> {
    let c = conditions::find(&status?.conditions, DEGRADED)?;
    if c.status != "True" {
        return None;
    }
    let known = c.reason.len() <= 40 && c.reason.chars().all(|ch| ch.is_ascii_alphanumeric());
    Some(if known {
        c.reason.clone()
    } else {
        "Other".to_owned()
    })
}

/// `ScanGatePassed` reason: findings above the policy hold `spec.image` back.
const VULNERABILITIES_FOUND: &str = "VulnerabilitiesFound";
/// `ScanGatePassed` reason: the scan produced no usable report; `spec.image` is held back.
const SCAN_FAILED: &str = "ScanFailed";
/// `Stalled` and `Degraded` reason: findings above the policy hold `spec.image` back.
const IMAGE_BLOCKED: &str = "ImageBlocked";
/// The `Stalled` and `Degraded` reasons of a recorded scan verdict holding `spec.image` back
/// (announced by the verdict's own Event, not as `Degraded`).
const HELD_BY_VERDICT: [&str; 2] = [IMAGE_BLOCKED, SCAN_FAILED];

/// Reason of the conditions of a resource whose spec this operator cannot decode.
pub const SPEC_UNDECODABLE: &str = "SpecUndecodable";

/// The status of a generation whose spec this operator cannot decode ([`crate::decode`]: a value
/// a newer operator accepts, or a field an older CRD did not require): nothing is applied,
/// pruned or scanned for it, its runtime keeps running as it is. `observedGeneration` moves to
/// `generation` with `Ready` False, `Stalled` True (retrying cannot help: the spec or the
/// operator must change), `Reconciling` False and `Degraded` True naming the field; everything
/// else is kept from `old`.
pub fn undecodable(
    old: Option<&FaceKeyDeploymentStatus>,
    generation: Option<i64>,
    reason: &str,
    now: Timestamp,
) -> FaceKeyDeploymentStatus {
    let message = format!(
        "this operator cannot read the spec ({reason}); nothing is applied until the spec or \
         the operator changes, the running pods are left as they are"
    );
    let decided = [
        Decided::new(READY, false, SPEC_UNDECODABLE, message.clone()),
        Decided::new(
            RECONCILING,
            false,
            SPEC_UNDECODABLE,
            "waiting for a spec this operator can read",
        ),
        Decided::new(STALLED, true, SPEC_UNDECODABLE, message.clone()),
        Decided::new(DEGRADED, true, SPEC_UNDECODABLE, message),
    ];
    with_conditions(old, generation, &decided, now)
}

/// `old` (or an empty status) with `decided` merged over its conditions, the others kept, and
/// `observedGeneration` moved to `generation`.
fn with_conditions(
    old: Option<&FaceKeyDeploymentStatus>,
    generation: Option<i64>,
    decided: &[Decided],
    now: Timestamp,
) -> FaceKeyDeploymentStatus {
    let mut status = old.cloned().unwrap_or_default();
    let mut conditions = conditions::merge(&status.conditions, decided, generation, now);
    conditions.extend(
        status
            .conditions
            .iter()
            .filter(|c| !decided.iter().any(|d| d.type_ == c.type_))
            .cloned(),
    );
    status.conditions = conditions;
    status.observed_generation = generation;
    status
}

/// Reason of `Progressing` (False) and `Reconciling` (True) while the Deployment is paused with a
/// rollout to do.
const PAUSED: &str = "Paused";

/// What a paused rollout waits for.
fn paused_message(v: &DeploymentView) -> String {
    format!(
        "the Deployment is paused (spec.paused, set outside the operator) with {}/{} replicas \
         updated, {} available: the rollout continues after `kubectl rollout resume`",
        v.updated, v.desired, v.available
    )
}

/// Reason of `PersistentStore` (and `Degraded`) when the CloudNativePG CRD is missing.
const CNPG_NOT_INSTALLED: &str = "CloudNativePGNotInstalled";
/// Reason of `PersistentStore` while the CloudNativePG Cluster is not ready.
const DATABASE_NOT_READY: &str = "DatabaseNotReady";
/// Reason of `PersistentStore` when `spec.replicas` asked for more pods than an embedded store serves.
const REPLICAS_LIMITED: &str = "ReplicasLimited";

/// The `PersistentStore` condition: do enrolments survive a pod restart, and where are they?
/// With CloudNativePG, also whether its Cluster says it is ready (`DatabaseNotReady` until then).
fn store_condition(store: &StoreState, database: Option<&DatabaseHealth>) -> Decided {
    match store {
        StoreState::Ephemeral => Decided::new(
            PERSISTENT_STORE,
            false,
            "Ephemeral",
            "no spec.store: each pod keeps its own enrolments on an emptyDir; they are not shared \
             between replicas and are lost when the pod restarts, a deletion reaches only the \
             pod that answers it, and each pod (an injected sidecar too) counts failed \
             verifications apart, so the lockout holds per pod (set spec.store.embedded or \
             spec.store.postgres)",
        ),
        StoreState::Embedded {
            claim,
            limited_from: None,
        } => Decided::new(
            PERSISTENT_STORE,
            true,
            "EmbeddedVolume",
            format!("enrolments on PersistentVolumeClaim {claim}: one pod, Recreate rollouts"),
        ),
        StoreState::Embedded {
            claim,
            limited_from: Some(asked),
        } => Decided::new(
            PERSISTENT_STORE,
            true,
            REPLICAS_LIMITED,
            format!(
                "spec.replicas is {asked} but runs 1 pod: the embedded store's ReadWriteOnce \
                 PersistentVolumeClaim {claim} serves one pod (use spec.store.postgres to scale)"
            ),
        ),
        StoreState::Postgres { url } => Decided::new(
            PERSISTENT_STORE,
            true,
            "PostgreSQL",
            format!(
                "enrolments in PostgreSQL, URL from Secret {} key {}",
                url.name, url.key
            ),
        ),
        StoreState::CloudNativePg { cluster } => match database {
            Some(h) if h.ready != Some(true) => Decided::new(
                PERSISTENT_STORE,
                false,
                DATABASE_NOT_READY,
                format!(
                    "the CloudNativePG Cluster {cluster} is not ready ({}): the runtime pods \
                     cannot reach their template store until it is",
                    h.describe()
                ),
            ),
            _ => Decided::new(
                PERSISTENT_STORE,
                true,
                "CloudNativePG",
                format!(
                    "enrolments in the CloudNativePG Cluster {cluster} (URL from Secret \
                     {cluster}-app){}{}",
                    database
                        .map(|h| format!("; Cluster ready, {}", h.describe()))
                        .unwrap_or_default(),
                    database
                        .filter(|h| h.synchronous_missing())
                        .map(|h| format!(
                            "; replication is asynchronous: synchronousReplicas asks for {} but \
                             the Cluster holds no postgresql.synchronous of that number \
                             (CloudNativePG older than 1.24 drops it), so a failover can lose \
                             acknowledged writes",
                            h.synchronous_asked.unwrap_or_default()
                        ))
                        .unwrap_or_default()
                ),
            ),
        },
        StoreState::CloudNativePgMissing { cluster } => Decided::new(
            PERSISTENT_STORE,
            false,
            CNPG_NOT_INSTALLED,
            format!(
                "store.postgres.cloudNativePG needs the CloudNativePG operator: CRD {} is not \
                 installed, so the Cluster {cluster} was not created and the runtime pods wait \
                 for its Secret {cluster}-app",
                OptionalCrd::CloudNativePgCluster.crd_name()
            ),
        ),
    }
}

fn reason_of<'a>(
    s: Option<&'a FaceKeyDeploymentStatus>,
    type_: &str,
) -> Option<(&'a str, &'a str)> {
    let c = conditions::find(&s?.conditions, type_)?;
    Some((c.status.as_str(), c.reason.as_str()))
}

/// The image whose rollout a status says is blocked: `spec.image` when its recorded verdict is
/// not Passed and the gate condition says the scan holds it.
fn blocked_image<'a>(s: Option<&'a FaceKeyDeploymentStatus>, spec_image: &str) -> Option<&'a str> {
    let blocked = matches!(
        reason_of(s, SCAN_GATE_PASSED),
        Some((_, "VulnerabilitiesFound" | "ScanFailed"))
    );
    let record = s?.scans.iter().find(|r| r.image == spec_image)?;
    (blocked && record.verdict != ScanVerdict::Passed).then_some(record.image.as_str())
}

/// Whether this reconcile newly blocked the rollout of `spec_image`: counted once per blocked
/// image, not per reconcile, per rescan or per scan Job (the verdict is in the status).
pub fn newly_blocked(
    old: Option<&FaceKeyDeploymentStatus>,
    new: &FaceKeyDeploymentStatus,
    spec_image: &str,
) -> bool {
    blocked_image(Some(new), spec_image).is_some() && blocked_image(old, spec_image).is_none()
}

/// The scan gate's verdict, when this reconcile changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictChange<'a> {
    /// Reason of the `ScanGatePassed` condition.
    pub verdict: &'a str,
    /// Its message.
    pub message: &'a str,
    /// The image held, when newly blocked.
    pub image: Option<&'a str>,
    /// See [`newly_blocked`].
    pub newly_blocked: bool,
}

/// The verdict when the `ScanGatePassed` reason changed or `spec_image` is newly blocked (the
/// occasions for [`crate::events::ScanVerdict`] and its Event).
pub fn verdict_change<'a>(
    old: Option<&FaceKeyDeploymentStatus>,
    new: &'a FaceKeyDeploymentStatus,
    spec_image: &str,
) -> Option<VerdictChange<'a>> {
    let c = conditions::find(&new.conditions, SCAN_GATE_PASSED)?;
    let newly_blocked = newly_blocked(old, new, spec_image);
    let changed = reason_of(old, SCAN_GATE_PASSED) != reason_of(Some(new), SCAN_GATE_PASSED);
    (changed || newly_blocked).then(|| VerdictChange {
        verdict: &c.reason,
        message: &c.message,
        image: blocked_image(Some(new), spec_image),
        newly_blocked,
    })
}

/// Events for the transitions between `old` and `new`, except the scan gate's
/// ([`verdict_change`]).
pub fn transition_events(
    old: Option<&FaceKeyDeploymentStatus>,
    new: &FaceKeyDeploymentStatus,
) -> Vec<EventSpec> {
    let mut events = Vec::new();
    let changed = |type_: &str| reason_of(old, type_) != reason_of(Some(new), type_);
    let cond = |type_: &str| conditions::find(&new.conditions, type_);
    if let Some(c) = cond(READY)
        && changed(READY)
    {
        events.push(EventSpec {
            warning: false,
            reason: if c.status == "True" {
                "Ready"
            } else {
                "NotReady"
            },
            note: c.message.clone(),
        });
    }
    if let Some(c) = cond(DEGRADED)
        && changed(DEGRADED)
        && c.status == "True"
        && !HELD_BY_VERDICT.contains(&c.reason.as_str())
    {
        events.push(EventSpec {
            warning: true,
            reason: "Degraded",
            note: format!("{}: {}", c.reason, c.message),
        });
    }
    if let Some(c) = cond(MONITORING_READY)
        && changed(MONITORING_READY)
        && c.status == "False"
    {
        events.push(EventSpec {
            warning: true,
            reason: "MonitoringSkipped",
            note: c.message.clone(),
        });
    }
    // No Event for `Ephemeral` (the default; the condition says it) and none for CloudNativePG
    // missing (the Degraded Event says it); limited replicas surprise: one Warning.
    if let Some(c) = cond(PERSISTENT_STORE)
        && changed(PERSISTENT_STORE)
        && c.reason == REPLICAS_LIMITED
    {
        events.push(EventSpec {
            warning: true,
            reason: REPLICAS_LIMITED,
            note: c.message.clone(),
        });
    }
    // A rescan of the running image: a Warning when it first finds it above the policy (or
    // finds other counts), a Normal Event when a later one no longer does.
    fn vulnerable(s: Option<&FaceKeyDeploymentStatus>) -> Option<&facekey_crds::SeverityCounts> {
        running_image_vulnerable(s)
            .and(s?.running_image_scan.as_ref())
            .map(|r| &r.counts)
    }
    match (vulnerable(old), vulnerable(Some(new))) {
        (was, Some(counts)) if was != Some(counts) => {
            if let Some(r) = &new.running_image_scan {
                events.push(EventSpec {
                    warning: true,
                    reason: RUNNING_IMAGE_VULNERABLE,
                    note: format!(
                        "{} runs with vulnerabilities above the scan policy, found by its \
                         rescan (it keeps serving; roll out a fixed image): {}",
                        new.last_known_good_image.as_deref().unwrap_or("the image"),
                        r.message
                    ),
                });
            }
        }
        (Some(_), None)
            if new
                .running_image_scan
                .as_ref()
                .is_some_and(|r| r.verdict == ScanVerdict::Passed) =>
        {
            events.push(EventSpec {
                warning: false,
                reason: "RunningImageRescanPassed",
                note: format!(
                    "the rescan of {} passes the scan policy",
                    new.last_known_good_image
                        .as_deref()
                        .unwrap_or("the running image")
                ),
            });
        }
        _ => {}
    }
    let old_image = old.and_then(|s| s.current_image.as_deref());
    if let Some(img) = new.current_image.as_deref()
        && old_image.is_some_and(|o| o != img)
    {
        events.push(EventSpec {
            warning: false,
            reason: "RolloutStarted",
            note: format!("rolling out {img}"),
        });
    }
    events
}

/// Whether the Deployment's image `live` is the admitted one: the same reference, or the admitted
/// tag with a digest an image policy added at admission (Kyverno's `verifyImages` rewrites
/// `repo:tag` to `repo:tag@sha256:…`), which runs the tag as it resolved then.
fn runs_admitted(live: Option<&str>, admitted: Option<&str>) -> bool {
    match (live, admitted) {
        (Some(live), Some(admitted)) => {
            live == admitted || crate::scan_gate::without_admitted_digest(live) == admitted
        }
        (live, admitted) => live == admitted,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_digest_an_image_policy_added_to_the_admitted_tag_is_up_to_date() {
        let tag = "ghcr.io/facekey/runtime:0.1.0";
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let mutated = format!("{tag}@{digest}");
        assert!(runs_admitted(Some(&mutated), Some(tag)));
        assert!(runs_admitted(Some(tag), Some(tag)));
        // Another tag, or a digest-only reference for an admitted digest, is not.
        assert!(!runs_admitted(
            Some("ghcr.io/facekey/runtime:0.2.0"),
            Some(tag)
        ));
        let pinned = format!("ghcr.io/facekey/runtime@{digest}");
        assert!(runs_admitted(Some(&pinned), Some(&pinned)));
        assert!(!runs_admitted(Some(&mutated), Some(&pinned)));
        assert!(!runs_admitted(None, Some(tag)));
    }

    /// `status.scans` keeps the passed record of the image admitted before the last-known-good
    /// one until another scanned image is admitted: then the last-known-good one it replaces
    /// takes its place, and the one before is dropped (going back to it scans again).
    #[test]
    fn the_previous_images_record_is_kept_until_a_third_is_admitted() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let passed = |tag: &str, c: char| ScanStatus {
            image: format!("ghcr.io/facekey/runtime:{tag}"),
            digest: Some(digest(c)),
            verdict: ScanVerdict::Passed,
            ..ScanStatus::default()
        };
        let pinned = |c: char| format!("ghcr.io/facekey/runtime@{}", digest(c));
        let (a, b, c) = (passed("a", 'a'), passed("b", 'b'), passed("c", 'c'));
        // B admitted after A: A is the previous image.
        let old = FaceKeyDeploymentStatus {
            last_known_good_image: Some(pinned('b')),
            scans: vec![b.clone(), a.clone()],
            ..FaceKeyDeploymentStatus::default()
        };
        assert_eq!(crate::scan_gate::previously_admitted(Some(&old)), Some(&a));
        let compute_with =
            |spec_image: &str, gate: &GateState, record: Option<ScanStatus>, lkg: &str| {
                compute(&Observed {
                    generation: Some(2),
                    old: Some(&old),
                    deployment: None,
                    spec_image,
                    gate,
                    record,
                    admitted: gate.is_open().then_some(lkg),
                    last_known_good: Some(lkg),
                    running: None,
                    outcome: &ApplyOutcome::Applied,
                    skipped: &[],
                    store: &StoreState::Ephemeral,
                    database: None,
                    selector: "s",
                    url: "u",
                    autoscaling_min: None,
                    now: t0,
                })
                .scans
            };
        // A new image pending its scan: B and A both kept.
        let pending = GateState::Pending("m".into());
        assert_eq!(
            compute_with("ghcr.io/facekey/runtime:d", &pending, None, &pinned('b')),
            vec![b.clone(), a.clone()]
        );
        // A third image admitted: B becomes the previous one, A goes.
        let c_passed = GateState::Passed("m".into());
        assert_eq!(
            compute_with(&c.image, &c_passed, Some(c.clone()), &pinned('c')),
            vec![c.clone(), b.clone()]
        );
        // Back to A: A is last known good again, B the previous one.
        let back = GateState::LastKnownGood("m".into());
        assert_eq!(
            compute_with(&a.image, &back, None, &pinned('a')),
            vec![a.clone(), b.clone()]
        );
    }

    #[test]
    fn the_degraded_reason_is_read_while_the_condition_is_true() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let with = |status: bool, reason: &'static str| FaceKeyDeploymentStatus {
            conditions: conditions::merge(
                &[],
                &[Decided::new(DEGRADED, status, reason, "m")],
                Some(1),
                t0,
            ),
            ..FaceKeyDeploymentStatus::default()
        };
        assert_eq!(
            degraded(Some(&with(true, "ApplyFailed"))).as_deref(),
            Some("ApplyFailed")
        );
        assert_eq!(degraded(Some(&with(false, "AsExpected"))), None);
        assert_eq!(
            degraded(Some(&with(true, "not a reason: {x}"))).as_deref(),
            Some("Other"),
            "a label set kept small whoever wrote the status"
        );
        assert_eq!(degraded(None), None);
    }

    #[test]
    fn a_held_rollout_is_read_from_the_gate_condition() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let with = |gate: GateState| FaceKeyDeploymentStatus {
            conditions: conditions::merge(&[], &[gate.condition()], Some(1), t0),
            ..FaceKeyDeploymentStatus::default()
        };
        let m = || "m".to_owned();
        assert_eq!(
            rollout_held(Some(&with(GateState::Blocked(m())))),
            Some("VulnerabilitiesFound")
        );
        assert_eq!(
            rollout_held(Some(&with(GateState::Failed(m())))),
            Some("ScanFailed")
        );
        for open in [
            GateState::Pending(m()),
            GateState::Passed(m()),
            GateState::Disabled,
            GateState::LastKnownGood(m()),
        ] {
            assert_eq!(rollout_held(Some(&with(open.clone()))), None, "{open:?}");
        }
        assert_eq!(rollout_held(None), None);
    }

    #[test]
    fn a_generation_that_cannot_be_observed_is_not_ready_and_says_why() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:05:00Z".parse().unwrap();
        // Generation 1 was available; generation 2 cannot be observed (a 403 on the read).
        let old = FaceKeyDeploymentStatus {
            observed_generation: Some(1),
            conditions: conditions::merge(
                &[],
                &[
                    Decided::new(READY, true, "Available", "2/2"),
                    Decided::new(PERSISTENT_STORE, true, "EmbeddedVolume", "claim"),
                ],
                Some(1),
                t0,
            ),
            replicas: 2,
            current_image: Some("img@sha256:1".into()),
            ..FaceKeyDeploymentStatus::default()
        };
        let new = observe_failure(Some(&old), Some(2), "ReadFailed", "timed out", false, t1);
        assert_eq!(new.observed_generation, Some(2));
        let get = |t: &str| conditions::find(&new.conditions, t).unwrap().clone();
        assert_eq!(
            (get(READY).status.as_str(), get(READY).reason.as_str()),
            ("False", "ReadFailed")
        );
        assert!(get(READY).message.contains("timed out"));
        assert_eq!(get(RECONCILING).status, "True");
        assert_eq!(get(DEGRADED).status, "True");
        assert_eq!(get(STALLED).status, "False");
        assert_eq!(get(READY).last_transition_time.0, t1);
        // What was last known stays.
        assert_eq!(get(PERSISTENT_STORE).reason, "EmbeddedVolume");
        assert_eq!(get(PERSISTENT_STORE).last_transition_time.0, t0);
        assert_eq!(
            (new.replicas, new.current_image.as_deref()),
            (2, Some("img@sha256:1"))
        );
        // The same failure again changes nothing (no status write).
        assert_eq!(
            observe_failure(Some(&new), Some(2), "ReadFailed", "timed out", false, t1),
            new
        );
        // Refused (a 403): retrying alone cannot help, so it is a failure, not progress.
        let refused = observe_failure(Some(&old), Some(2), "ReadFailed", "forbidden", true, t1);
        let stalled = conditions::find(&refused.conditions, STALLED).unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "ReadFailed")
        );
        assert!(stalled.message.contains("forbidden"));
        assert_eq!(
            conditions::find(&refused.conditions, RECONCILING)
                .unwrap()
                .status,
            "False",
            "kstatus reads the first True of Reconciling and Stalled"
        );
    }

    /// A resource a scan verdict holds stays Stalled through a transient observation failure:
    /// kstatus does not flap Failed, InProgress, Failed.
    #[test]
    fn a_held_resource_stays_stalled_when_an_observation_fails() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:05:00Z".parse().unwrap();
        let old = FaceKeyDeploymentStatus {
            observed_generation: Some(2),
            conditions: conditions::merge(
                &[],
                &[
                    Decided::new(RECONCILING, false, SCAN_FAILED, "scan failed"),
                    Decided::new(STALLED, true, SCAN_FAILED, "the scan of img:2 failed"),
                ],
                Some(2),
                t0,
            ),
            ..FaceKeyDeploymentStatus::default()
        };
        let new = observe_failure(Some(&old), Some(2), "ReadFailed", "timed out", false, t1);
        let get = |t: &str| conditions::find(&new.conditions, t).unwrap().clone();
        let stalled = get(STALLED);
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", SCAN_FAILED)
        );
        assert_eq!(stalled.message, "the scan of img:2 failed");
        assert_eq!(stalled.last_transition_time.0, t0);
        let reconciling = get(RECONCILING);
        assert_eq!(reconciling.status, "False");
        assert!(reconciling.message.contains("timed out"), "{reconciling:?}");
        // Not held: the usual retry.
        let free = FaceKeyDeploymentStatus::default();
        let new = observe_failure(Some(&free), Some(2), "ReadFailed", "timed out", false, t1);
        assert_eq!(
            conditions::find(&new.conditions, STALLED).unwrap().status,
            "False"
        );
    }

    #[test]
    fn a_cloudnativepg_cluster_not_ready_says_so() {
        let store = StoreState::CloudNativePg {
            cluster: "fk-db".into(),
        };
        let setting_up = DatabaseHealth::of(&serde_json::json!({"status": {
            "phase": "Setting up primary", "instances": 3, "readyInstances": 0,
            "conditions": [{"type": "Ready", "status": "False"}]}}));
        assert_eq!(
            setting_up,
            DatabaseHealth {
                ready: Some(false),
                phase: Some("Setting up primary".into()),
                instances: Some((0, 3)),
                ..DatabaseHealth::default()
            }
        );
        let d = store_condition(&store, Some(&setting_up));
        assert_eq!((d.status, d.reason), (false, DATABASE_NOT_READY));
        assert!(
            d.message
                .contains("fk-db is not ready (phase \"Setting up primary\", 0/3 instances ready)"),
            "{}",
            d.message
        );
        // A Cluster CloudNativePG has not looked at yet is not ready either.
        let fresh = DatabaseHealth::of(&serde_json::json!({"spec": {}}));
        let d = store_condition(&store, Some(&fresh));
        assert_eq!((d.status, d.reason), (false, DATABASE_NOT_READY));
        assert!(d.message.contains("no status yet"), "{}", d.message);
        // Ready: where enrolments are, and the Cluster's word.
        let healthy = DatabaseHealth::of(&serde_json::json!({"status": {
            "phase": "Cluster in healthy state", "instances": 3, "readyInstances": 3,
            "conditions": [{"type": "Ready", "status": "True"}]}}));
        let d = store_condition(&store, Some(&healthy));
        assert_eq!((d.status, d.reason), (true, "CloudNativePG"));
        assert!(
            d.message.ends_with(
                "; Cluster ready, phase \"Cluster in healthy state\", 3/3 instances ready"
            ),
            "{}",
            d.message
        );
        // Synchronous standbys asked for and held; asked for and dropped by an old CloudNativePG.
        let held = DatabaseHealth::of(&serde_json::json!({
            "spec": {"postgresql": {"synchronous": {"method": "any", "number": 1}}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
        .asking_synchronous(Some(1));
        assert!(
            !store_condition(&store, Some(&held))
                .message
                .contains("asynchronous")
        );
        let dropped = DatabaseHealth::of(&serde_json::json!({
            "spec": {"postgresql": {}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
        .asking_synchronous(Some(1));
        let d = store_condition(&store, Some(&dropped));
        assert_eq!((d.status, d.reason), (true, "CloudNativePG"));
        assert!(
            d.message
                .contains("replication is asynchronous: synchronousReplicas asks for 1"),
            "{}",
            d.message
        );
        assert!(
            !store_condition(&store, Some(&dropped.clone().asking_synchronous(Some(0))))
                .message
                .contains("asynchronous"),
            "none asked for"
        );
        // Not read (not created yet, or the read failed): as before, where enrolments go.
        let d = store_condition(&store, None);
        assert_eq!((d.status, d.reason), (true, "CloudNativePG"));
    }
}
