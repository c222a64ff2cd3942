//! The FaceKeyDeployment status and the Events of its transitions, computed from what the
//! reconciler observed. Pure: the reconciler gathers [`Observed`], this module decides.

use facekey_crds::condition::{
    DEGRADED, MONITORING_READY, PERSISTENT_STORE, PROGRESSING, READY, SCAN_GATE_PASSED,
};
use facekey_crds::{FaceKeyDeploymentStatus, ScanStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;

use crate::conditions::{self, Decided};
use crate::desired::{OptionalCrd, Skipped, StoreState};
use crate::events::EventSpec;

/// Where the scan gate stands for `spec.image`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateState {
    /// `scanGate.enabled: false`: images roll out unscanned.
    Disabled,
    /// `spec.image` is already what the Deployment runs; nothing to gate.
    AlreadyRunning,
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
            GateState::Disabled | GateState::AlreadyRunning | GateState::Passed(_)
        )
    }

    fn condition(&self) -> Decided {
        let (status, reason, message) = match self {
            GateState::Disabled => (true, "GateDisabled", "scanGate.enabled is false".to_owned()),
            GateState::AlreadyRunning => (
                true,
                "ImageRunning",
                "spec.image is the image already running".to_owned(),
            ),
            GateState::Passed(m) => (true, "ScanPassed", m.clone()),
            GateState::Blocked(m) => (false, "VulnerabilitiesFound", m.clone()),
            GateState::Pending(m) => (false, "ScanPending", m.clone()),
            GateState::Failed(m) => (false, "ScanFailed", m.clone()),
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
    /// Scan gate state of `spec.image`.
    pub gate: &'a GateState,
    /// Latest scan summary for `spec.image` (None keeps the previous one).
    pub scan: Option<ScanStatus>,
    /// Result of the apply stage.
    pub outcome: &'a ApplyOutcome,
    /// Monitoring objects skipped for missing CRDs.
    pub skipped: &'a [Skipped],
    /// Where enrolments live.
    pub store: &'a StoreState,
    /// Label selector of the runtime pods.
    pub selector: &'a str,
    /// In-cluster URL of the Service.
    pub url: &'a str,
    /// Wall-clock time of this reconcile.
    pub now: Timestamp,
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
    /// `Progressing=False, reason=ProgressDeadlineExceeded`.
    pub deadline_exceeded: bool,
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
            .and_then(|p| p.containers.first())
            .and_then(|c| c.image.clone());
        let observed_latest = match (status.observed_generation, d.metadata.generation) {
            (Some(o), Some(g)) => o >= g,
            _ => false,
        };
        let deadline_exceeded = status.conditions.unwrap_or_default().iter().any(|c| {
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
}

/// Compute the new status.
pub fn compute(o: &Observed<'_>) -> FaceKeyDeploymentStatus {
    let view = o.deployment.map(DeploymentView::of);
    let mut decided = Vec::with_capacity(5);

    // Ready: is the service available at all (with whatever image runs)?
    decided.push(match (&o.outcome, &view) {
        (ApplyOutcome::InvalidSpec(m), None) => {
            Decided::new(READY, false, "InvalidSpec", m.clone())
        }
        (_, None) => Decided::new(
            READY,
            false,
            "NoDeployment",
            match o.gate {
                GateState::Pending(_) => "no runtime yet: waiting for the first image scan",
                GateState::Blocked(_) | GateState::Failed(_) => {
                    "no runtime yet: the first image did not pass the scan gate"
                }
                _ => "the runtime Deployment does not exist yet",
            },
        ),
        (_, Some(v)) if v.desired == 0 => {
            Decided::new(READY, true, "ScaledToZero", "spec asks for 0 replicas")
        }
        (_, Some(v)) if v.available >= v.desired => Decided::new(
            READY,
            true,
            "Available",
            format!(
                "{}/{} replicas available running {}",
                v.available,
                v.desired,
                v.image.as_deref().unwrap_or("?")
            ),
        ),
        (_, Some(v)) => Decided::new(
            READY,
            false,
            if v.available > 0 {
                "PartiallyAvailable"
            } else {
                "NotAvailable"
            },
            format!("{}/{} replicas available", v.available, v.desired),
        ),
    });

    // Progressing: is something still changing?
    decided.push(match (&view, o.gate) {
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
        (ApplyOutcome::Failed { category, message }, _, _) => {
            Decided::new(DEGRADED, true, category, message.clone())
        }
        (_, GateState::Blocked(m), _) => Decided::new(DEGRADED, true, "ImageBlocked", m.clone()),
        (_, GateState::Failed(m), _) => Decided::new(DEGRADED, true, "ScanFailed", m.clone()),
        _ if matches!(o.store, StoreState::CloudNativePgMissing { .. }) => Decided::new(
            DEGRADED,
            true,
            CNPG_NOT_INSTALLED,
            store_condition(o.store).message,
        ),
        (_, _, Some(v)) if v.deadline_exceeded => Decided::new(
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

    decided.push(store_condition(o.store));

    let old_conditions = o.old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    FaceKeyDeploymentStatus {
        observed_generation: o.generation,
        conditions: conditions::merge(old_conditions, &decided, o.generation, o.now),
        replicas: view.as_ref().map_or(0, |v| v.replicas),
        ready_replicas: view.as_ref().map_or(0, |v| v.ready),
        selector: Some(o.selector.to_owned()),
        current_image: view.and_then(|v| v.image),
        scan: o
            .scan
            .clone()
            .or_else(|| o.old.and_then(|s| s.scan.clone())),
        url: Some(o.url.to_owned()),
    }
}

/// Reason of `PersistentStore` (and `Degraded`) when the CloudNativePG CRD is missing.
const CNPG_NOT_INSTALLED: &str = "CloudNativePGNotInstalled";
/// Reason of `PersistentStore` when `spec.replicas` asked for more pods than an embedded store serves.
const REPLICAS_LIMITED: &str = "ReplicasLimited";

/// The `PersistentStore` condition: do enrolments survive a pod restart, and where are they?
fn store_condition(store: &StoreState) -> Decided {
    match store {
        StoreState::Ephemeral => Decided::new(
            PERSISTENT_STORE,
            false,
            "Ephemeral",
            "no spec.store: each pod keeps its own enrolments on an emptyDir; they are not shared \
             between replicas and are lost when the pod restarts (set spec.store.embedded or \
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
        StoreState::CloudNativePg { cluster } => Decided::new(
            PERSISTENT_STORE,
            true,
            "CloudNativePG",
            format!(
                "enrolments in the CloudNativePG Cluster {cluster} (URL from Secret {cluster}-app)"
            ),
        ),
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

/// Whether this reconcile newly blocked a rollout (counted once per blocked image, not per loop).
pub fn newly_blocked(old: Option<&FaceKeyDeploymentStatus>, new: &FaceKeyDeploymentStatus) -> bool {
    let blocked = |s: Option<&FaceKeyDeploymentStatus>| {
        matches!(
            reason_of(s, SCAN_GATE_PASSED),
            Some((_, "VulnerabilitiesFound" | "ScanFailed"))
        )
    };
    let image = |s: Option<&FaceKeyDeploymentStatus>| {
        s.and_then(|s| s.scan.as_ref()).map(|x| x.image.clone())
    };
    blocked(Some(new)) && (!blocked(old) || image(old) != image(Some(new)))
}

/// The scan gate's verdict, when this reconcile changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictChange<'a> {
    /// Reason of the `ScanGatePassed` condition.
    pub verdict: &'a str,
    /// Its message.
    pub message: &'a str,
    /// Image of the latest scan summary.
    pub image: Option<&'a str>,
    /// See [`newly_blocked`].
    pub newly_blocked: bool,
}

/// The verdict when the `ScanGatePassed` reason changed or a newly evaluated image is blocked
/// (the occasions for [`crate::events::ScanVerdict`] and its Event).
pub fn verdict_change<'a>(
    old: Option<&FaceKeyDeploymentStatus>,
    new: &'a FaceKeyDeploymentStatus,
) -> Option<VerdictChange<'a>> {
    let c = conditions::find(&new.conditions, SCAN_GATE_PASSED)?;
    let newly_blocked = newly_blocked(old, new);
    let changed = reason_of(old, SCAN_GATE_PASSED) != reason_of(Some(new), SCAN_GATE_PASSED);
    (changed || newly_blocked).then(|| VerdictChange {
        verdict: &c.reason,
        message: &c.message,
        image: new.scan.as_ref().map(|s| s.image.as_str()),
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
        && !matches!(c.reason.as_str(), "ImageBlocked" | "ScanFailed")
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
