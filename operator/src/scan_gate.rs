//! The scan gate stage of reconcile: decide which image the runtime may run for `spec.image`.
//!
//! The verdict is state, not a Job: every evaluated scan is recorded in `status.scans` (image,
//! the digest the scan resolved, verdict, counts, policy hash, report time), and a recorded
//! verdict decides as long as the policy hash matches and `maxReportAge` has not passed, whether or
//! not its Job still exists. `spec.image` equal to the last-known-good image (the last one
//! admitted), or to the one admitted before it (a rollback), is admitted again without a scan.
//! Otherwise the sources are, in order: a trivy-operator VulnerabilityReport naming a digest of
//! the image; the summary of this deployment's own scan Job for the image, read from the pod that
//! carries the Job's uid; else a new scan Job. An admitted scanned image runs as
//! `repository@sha256:…`, never by its tag. Until a usable report exists the gate stays closed
//! (fail closed), and a recorded verdict that closed it stays in force until a new one replaces it
//! ([`recorded_hold`]).

use std::collections::BTreeSet;
use std::time::Duration;

use facekey_crds::{
    FaceKeyDeployment, FaceKeyDeploymentStatus, ScanGate, ScanStatus, ScanVerdict, Severity,
    SeverityCounts,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ListParams, PostParams};
use kube::core::DynamicObject;
use kube::{Api, Client, ResourceExt};

use crate::apply::delete_if_present;
use crate::desired::{
    Capabilities, OptionalCrd, RUNTIME_CONTAINER, SCAN_JOB_TTL_SECONDS, SCAN_SUMMARY_CONTAINER,
    scan_job,
};
use crate::error::{ReadError, ScanGateError};
use crate::labels;
use crate::scan::image_ref::{self, digest_for, digest_of, pinned};
use crate::scan::{ScanSummary, Verdict, evaluate, is_stale, policy_hash, vulnerability_report};
use crate::status::GateState;

/// The first failed scan Job of an image is kept this long (so its failure is visible) before a
/// new attempt; each further failure in a row doubles the wait ([`retry_after`]).
const FIRST_RETRY_AFTER: SignedDuration = SignedDuration::from_mins(10);

/// How long the `failures`-th failed scan Job in a row is kept before a new attempt: ten minutes,
/// doubling, at most the Job's `ttlSecondsAfterFinished` (the API server removes it then, and a
/// missing Job starts an attempt; so does deleting it, the way to retry at once). Every attempt
/// downloads Trivy's database and pulls the image's layers, so an image that cannot be scanned
/// (a registry login missing, a database mirror down) is not tried six times an hour forever.
pub(crate) fn retry_after(failures: u32) -> SignedDuration {
    let most = SignedDuration::from_secs(SCAN_JOB_TTL_SECONDS.into());
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY_AFTER
        .checked_mul(1 << doublings)
        .map_or(most, |wait| wait.min(most))
}

/// The failed scan Jobs in a row once the Job that failed at `failed_at` is counted: the
/// recorded count when that record is of this very failure (a later pass reading the same Job),
/// one more when it is of an earlier one.
fn failures_after(recorded: Option<&ScanStatus>, failed_at: Option<Timestamp>) -> u32 {
    let Some(r) = recorded.filter(|r| r.verdict == ScanVerdict::Failed) else {
        return 1;
    };
    let second = |t: Option<Timestamp>| t.map(|t| t.as_second());
    match r.failures {
        None => 1,
        Some(n)
            if failed_at.is_none()
                || second(r.scanned_at.as_ref().map(|t| t.0)) == second(failed_at) =>
        {
            n
        }
        Some(n) => n.saturating_add(1),
    }
}

/// What the gate decided and when to look again.
#[derive(Debug, Clone, PartialEq)]
pub struct GateResult {
    /// The decision about `spec.image`.
    pub state: GateState,
    /// The image to run for `spec.image` when the gate is open (`repository@sha256:…` once
    /// scanned; `spec.image` as written with the gate disabled).
    pub admitted: Option<String>,
    /// What the runtime Deployment runs: `admitted` when the gate is open, else the last-known-good
    /// image recorded in the status (None: nothing may run yet).
    pub last_known_good: Option<String>,
    /// The scan record of `spec.image` evaluated in this pass (None keeps the recorded one).
    pub record: Option<ScanStatus>,
    /// Requeue sooner than the default, e.g. while a scan runs.
    pub requeue: Option<Duration>,
    /// Name and image of a scan Job created in this pass.
    pub created_job: Option<(String, String)>,
    /// A new rescan record of the last-known-good image while `spec.image` names it (None
    /// keeps the recorded one): see [`rescan_running`].
    pub running: Option<ScanStatus>,
}

impl GateResult {
    fn state(state: GateState) -> Self {
        Self {
            state,
            admitted: None,
            last_known_good: None,
            record: None,
            requeue: None,
            created_job: None,
            running: None,
        }
    }

    fn requeue(mut self, after: Duration) -> Self {
        self.requeue = Some(after);
        self
    }
}

/// The last image the gate admitted, from a status. A status written before the operator
/// recorded it (no `lastKnownGoodImage`, no `scans`) names it in `currentImage`.
pub fn last_known_good(status: Option<&FaceKeyDeploymentStatus>) -> Option<&str> {
    let s = status?;
    s.last_known_good_image
        .as_deref()
        .or_else(|| s.scans.is_empty().then_some(s.current_image.as_deref())?)
}

/// The image a record admits to run: its reference pinned to the digest the scan resolved.
pub fn record_image(record: &ScanStatus) -> Option<String> {
    record.digest.as_deref().map(|d| pinned(&record.image, d))
}

/// Whether `image` (a `spec.image`) names the last-known-good image `lkg`: the same reference,
/// the reference a recorded scan resolved to it, or a pin of the same repository and digest.
fn names_last_known_good(image: &str, lkg: &str, records: &[ScanStatus]) -> bool {
    if image == lkg
        || records
            .iter()
            .any(|r| r.image == image && record_image(r).as_deref() == Some(lkg))
    {
        return true;
    }
    match (digest_of(image), digest_of(lkg)) {
        (Some(a), Some(b)) if a == b => {
            let (x, y) = (image_ref::parse(image), image_ref::parse(lkg));
            matches!((x, y), (Some(x), Some(y)) if x.registry == y.registry && x.repository == y.repository)
        }
        _ => false,
    }
}

/// Whether a passed scan on record admitted `lkg` (the pinned image it rolled out as). An image
/// that ran while the gate was disabled (or before scans were recorded) has none: turning the
/// gate on scans it instead of admitting it again as last known good. (The status keeps the
/// last-known-good image's passed record, so a scanned one always has it.)
pub(crate) fn scan_admitted(lkg: &str, records: &[ScanStatus]) -> bool {
    records
        .iter()
        .any(|r| r.verdict == ScanVerdict::Passed && record_image(r).as_deref() == Some(lkg))
}

/// The passed record of the image admitted before the last-known-good one, kept in a status so
/// that going back to it (a `git revert` of a rollout that fails) needs no scan: the last passed
/// record that is not the last-known-good image's. The status keeps it until another scanned
/// image is admitted (see `status::kept_scans`).
pub fn previously_admitted(status: Option<&FaceKeyDeploymentStatus>) -> Option<&ScanStatus> {
    let s = status?;
    let lkg = last_known_good(Some(s));
    s.scans.iter().rev().find(|r| {
        r.verdict == ScanVerdict::Passed && record_image(r).is_some_and(|i| Some(i.as_str()) != lkg)
    })
}

/// The state a recorded verdict that closed the gate for `image` (Blocked or Failed) keeps while
/// no new verdict can be reached: a rescan under way, or a gate stage that could not run (an API
/// error) or did not run (an invalid spec). The same state and reason, so the rollout is neither
/// reported pending nor counted as newly blocked when the verdict returns, with `why` after the
/// recorded message. `None` when the record of `image` passed, or there is none.
pub fn recorded_hold(records: &[ScanStatus], image: &str, why: &str) -> Option<GateState> {
    let r = records
        .iter()
        .find(|r| r.image == image && r.verdict != ScanVerdict::Passed)?;
    let message = format!("{}; {why}", r.message);
    Some(if r.verdict == ScanVerdict::Failed {
        GateState::Failed(message)
    } else {
        GateState::Blocked(message)
    })
}

/// Inputs of the gate stage.
pub struct GateInputs<'a> {
    /// API client.
    pub client: &'a Client,
    /// The resource.
    pub fkd: &'a FaceKeyDeployment,
    /// Its name.
    pub name: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// Optional CRDs present.
    pub capabilities: &'a Capabilities,
    /// Image of the operator (runs the summary container of scan Jobs).
    pub operator_image: &'a str,
    /// Current time.
    pub now: Timestamp,
}

/// The record of a verdict: `digest` is the `sha256:…` the scan resolved the image to.
pub fn scan_status(
    summary: &ScanSummary,
    verdict: &Verdict,
    digest: Option<String>,
    policy: &str,
    report_ref: String,
) -> ScanStatus {
    let c = |s| verdict.counted.get(&s).copied().unwrap_or(0);
    ScanStatus {
        image: summary.image.clone(),
        digest,
        verdict: if verdict.passed {
            ScanVerdict::Passed
        } else {
            ScanVerdict::Blocked
        },
        message: verdict.message.clone(),
        counts: SeverityCounts {
            critical: c(Severity::Critical),
            high: c(Severity::High),
            medium: c(Severity::Medium),
            low: c(Severity::Low),
            unknown: c(Severity::Unknown),
        },
        blocking: verdict.blocking,
        policy_hash: policy.to_owned(),
        report_ref: Some(report_ref),
        scanned_at: summary.created_at.parse::<Timestamp>().ok().map(Time),
        failures: None,
    }
}

/// The decision a recorded Passed or Blocked verdict makes.
fn decide(record: ScanStatus) -> GateResult {
    match (record.verdict, record_image(&record)) {
        (ScanVerdict::Passed, Some(image)) => GateResult {
            state: GateState::Passed(record.message.clone()),
            admitted: Some(image),
            record: Some(record),
            ..GateResult::state(GateState::Disabled)
        },
        (ScanVerdict::Passed, None) => GateResult::state(GateState::Failed(format!(
            "the scan of {} passed but resolved no digest to deploy",
            record.image
        ))),
        // A blocked image is looked at again after a while: a new report may clear it.
        _ => GateResult {
            state: GateState::Blocked(record.message.clone()),
            record: Some(record),
            ..GateResult::state(GateState::Disabled)
        }
        .requeue(Duration::from_secs(300)),
    }
}

/// The record of a scan that produced no usable report.
fn failed_record(image: &str, policy: &str, message: &str) -> ScanStatus {
    ScanStatus {
        image: image.to_owned(),
        verdict: ScanVerdict::Failed,
        message: message.to_owned(),
        policy_hash: policy.to_owned(),
        ..ScanStatus::default()
    }
}

/// Whether a scan Job found by name is one this resource's gate can trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provenance {
    /// Controlled by the resource, running the containers the gate would create now.
    Ours,
    /// Controlled by the resource, but running other containers (another operator version,
    /// other scanner settings).
    Outdated,
    /// Controlled by the resource and written for the template the gate would create now, but
    /// running other containers: changed after the operator wrote it (an admission policy that
    /// rewrites registries or adds environment, or an edit). Made again it would be changed
    /// again, so it is reported rather than replaced. The payload names what differs.
    Altered(&'static str),
    /// Controlled by a deleted FaceKeyDeployment of this name (this one was created again
    /// under its name, as a forced GitOps sync does): the garbage collector is removing it.
    Predecessor,
    /// Not controlled by the resource (made by someone else).
    Foreign,
}

/// An image reference without the digest admission added to a tagged one: image-verification
/// policies (Kyverno's `verifyImages` with `mutateDigest`, its default) rewrite `repo:tag` to
/// `repo:tag@sha256:…` in every Job they admit. Without this every scan Job would look outdated,
/// be deleted and created again, and the gate would wait forever. A reference pinned only by
/// digest (`repo@sha256:…`) is kept as it is.
pub(crate) fn without_admitted_digest(image: &str) -> &str {
    match image.split_once('@') {
        Some((named, _))
            if named
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':')) =>
        {
            named
        }
        _ => image,
    }
}

/// What decides what a scan pod writes, compared between a live Job (or pod) and what the gate
/// would create: every container's and init container's name, image, command, arguments,
/// environment (`env` and `envFrom`) and mounts, and every volume's name and source (fields the
/// API server defaults are left out: volume `defaultMode`s).
type PodShape = (
    Vec<ContainerShape>,
    Vec<ContainerShape>,
    Vec<(String, String)>,
);
type ContainerShape = (
    String,
    Option<String>,
    Option<Vec<String>>,
    Option<Vec<String>>,
    Vec<(String, Option<String>, bool)>,
    String,
    Vec<(String, String, bool, Option<String>, Option<String>)>,
);

fn pod_shape(pod: Option<&PodSpec>, image: &dyn Fn(&str) -> String) -> PodShape {
    let containers = |list: Option<&Vec<Container>>| {
        list.into_iter()
            .flatten()
            .map(|c| {
                (
                    c.name.clone(),
                    c.image.as_deref().map(image),
                    c.command.clone(),
                    c.args.clone(),
                    c.env
                        .iter()
                        .flatten()
                        .map(|e| (e.name.clone(), e.value.clone(), e.value_from.is_some()))
                        .collect::<Vec<_>>(),
                    serde_json::to_string(&c.env_from).unwrap_or_default(),
                    c.volume_mounts
                        .iter()
                        .flatten()
                        .map(|m| {
                            (
                                m.name.clone(),
                                m.mount_path.clone(),
                                m.read_only.unwrap_or(false),
                                m.sub_path.clone().filter(|p| !p.is_empty()),
                                m.sub_path_expr.clone().filter(|p| !p.is_empty()),
                            )
                        })
                        .collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    };
    let volumes = pod
        .and_then(|p| p.volumes.as_ref())
        .into_iter()
        .flatten()
        .map(|v| {
            let mut source = serde_json::to_value(v).unwrap_or_default();
            if let Some(fields) = source.as_object_mut() {
                fields.remove("name");
                for defaulted in fields.values_mut() {
                    if let Some(inner) = defaulted.as_object_mut() {
                        inner.remove("defaultMode");
                    }
                }
            }
            (v.name.clone(), source.to_string())
        })
        .collect();
    (
        containers(pod.map(|p| &p.containers)),
        containers(pod.and_then(|p| p.init_containers.as_ref())),
        volumes,
    )
}

/// `image` as the wanted reference when it is one of `wanted` with a digest added
/// ([`without_admitted_digest`]: an image policy pinning tags); otherwise itself.
fn admitted_as<'a>(wanted: &'a BTreeSet<&'a str>) -> impl Fn(&str) -> String + 'a {
    move |image: &str| {
        let named = without_admitted_digest(image);
        if named != image && wanted.contains(named) {
            named.to_owned()
        } else {
            image.to_owned()
        }
    }
}

fn images_of(pod: Option<&PodSpec>) -> BTreeSet<&str> {
    pod.into_iter()
        .flat_map(|p| {
            p.containers
                .iter()
                .chain(p.init_containers.iter().flatten())
        })
        .filter_map(|c| c.image.as_deref())
        .collect()
}

fn template_of(job: &Job) -> Option<&PodSpec> {
    job.spec.as_ref().and_then(|s| s.template.spec.as_ref())
}

/// The [`Provenance`] of `job` against the Job the gate would create (`wanted`) for the resource
/// of uid `owner_uid`: its controller reference, and its pod template's [`pod_shape`]. A live
/// image is taken as the wanted one when it is that tagged reference with a digest added
/// ([`without_admitted_digest`]); a wanted image pinned by digest must match exactly.
fn provenance(job: &Job, wanted: &Job, owner_uid: Option<&str>) -> Provenance {
    let refs = job.metadata.owner_references.as_deref().unwrap_or_default();
    let instance = wanted
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.name.as_str())
        .unwrap_or_default();
    match owner_uid.map(|uid| crate::apply::standing(refs, uid, instance)) {
        Some(crate::apply::Standing::Owned) => {}
        Some(crate::apply::Standing::Predecessor) => return Provenance::Predecessor,
        _ => return Provenance::Foreign,
    }
    if same_shape(template_of(job), template_of(wanted)) {
        return Provenance::Ours;
    }
    let written_for = |j: &Job| {
        j.annotations()
            .get(labels::SCAN_TEMPLATE_ANNOTATION)
            .cloned()
    };
    match written_for(job) {
        Some(hash) if Some(&hash) == written_for(wanted).as_ref() => {
            Provenance::Altered(shape_difference(template_of(job), template_of(wanted)))
        }
        _ => Provenance::Outdated,
    }
}

/// The first part of the [`pod_shape`] in which `live` differs from `wanted`, for a message.
fn shape_difference(live: Option<&PodSpec>, wanted: Option<&PodSpec>) -> &'static str {
    let images = images_of(wanted);
    let (live_c, live_i, live_v) = pod_shape(live, &admitted_as(&images));
    let (want_c, want_i, want_v) = pod_shape(wanted, &str::to_owned);
    let containers = |live: &[ContainerShape], want: &[ContainerShape]| {
        if live.len() != want.len() || live.iter().zip(want).any(|(l, w)| l.0 != w.0) {
            return Some("the containers' names");
        }
        live.iter().zip(want).find_map(|(l, w)| {
            if l.1 != w.1 {
                Some("an image")
            } else if (&l.2, &l.3) != (&w.2, &w.3) {
                Some("a command or its arguments")
            } else if (&l.4, &l.5) != (&w.4, &w.5) {
                Some("the environment")
            } else if l.6 != w.6 {
                Some("the volume mounts")
            } else {
                None
            }
        })
    };
    containers(&live_i, &want_i)
        .or_else(|| containers(&live_c, &want_c))
        .unwrap_or(if live_v != want_v {
            "the volumes"
        } else {
            "the pod template"
        })
}

/// Whether the pod spec `live` has the [`pod_shape`] of `wanted`, its images taken as the wanted
/// ones where an image policy only added a digest to them ([`admitted_as`]): a live Job against
/// the one the gate would create, or a Job's pod against its template.
fn same_shape(live: Option<&PodSpec>, wanted: Option<&PodSpec>) -> bool {
    let images = images_of(wanted);
    pod_shape(live, &admitted_as(&images)) == pod_shape(wanted, &str::to_owned)
}

/// Whether `pod` runs what `job`'s template says (a pod another webhook changed, or one created
/// by hand with the Job's labels and owner, does not).
fn runs_template(pod: &Pod, job: &Job) -> bool {
    same_shape(pod.spec.as_ref(), template_of(job))
}

fn failed(image: &str, policy: &str, message: String) -> GateResult {
    GateResult {
        record: Some(failed_record(image, policy, &message)),
        ..GateResult::state(GateState::Failed(message))
    }
}

/// The `sha256:…` digest to deploy for `image` from a summary: the one the scan resolved, which
/// must equal `image`'s own when `image` is pinned.
fn resolved_digest(image: &str, summary: &ScanSummary) -> Result<String, String> {
    let scanned = summary
        .digest
        .as_ref()
        .and_then(|d| digest_for(image, std::slice::from_ref(d)));
    match (scanned, digest_of(image)) {
        (Some(s), Some(pin)) if s != pin => Err(format!(
            "the scan resolved {image} to {s}, not the pinned digest"
        )),
        (Some(s), _) => Ok(s),
        (None, Some(pin)) => Ok(pin.to_owned()),
        (None, None) => Err(format!(
            "the scan of {image} reported no digest (Trivy's Metadata.RepoDigests), so what it \
             scanned cannot be pinned"
        )),
    }
}

/// Run the gate stage.
pub async fn run(inputs: &GateInputs<'_>) -> Result<GateResult, ScanGateError> {
    let fkd = inputs.fkd;
    let old = fkd.status.as_ref();
    let prior_lkg = last_known_good(old).map(str::to_owned);
    let mut result = decide_image(inputs).await?;
    result.last_known_good = match result.admitted.clone() {
        Some(admitted) => Some(admitted),
        None => match prior_lkg {
            Some(lkg) => Some(held_by_digest(inputs, lkg).await),
            None => None,
        },
    };
    Ok(result)
}

/// The image a closed gate keeps running: the last-known-good one, pinned to the digest its pods
/// run when it ran by tag. An image admitted by a scan is pinned already; one that ran while the
/// gate was disabled (or before the operator recorded scans) is a tag, and a pod started while
/// the gate holds (a new node, a rescheduled pod, a scale-up) would pull whatever the tag points
/// to now, an image no scan has seen, not even the one that was running. Kept as a tag when its
/// pods cannot say (none running it yet, a runtime that reports no repository digest, a pod list
/// refused) or disagree (the tag moved between pulls: which of them is "the" image is unknown).
async fn held_by_digest(inputs: &GateInputs<'_>, lkg: String) -> String {
    if digest_of(&lkg).is_some() {
        return lkg;
    }
    let pods: Api<Pod> = Api::namespaced(inputs.client.clone(), inputs.namespace);
    let selector = labels::selector_string(&labels::selector_labels(inputs.name));
    let listed = match pods.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => list.items,
        Err(e) => {
            tracing::debug!(error = %e, image = %lkg, "runtime pods not read; the held image stays a tag");
            return lkg;
        }
    };
    match running_digests(&lkg, &listed).as_slice() {
        [digest] => {
            let held = pinned(&lkg, digest);
            tracing::info!(image = %lkg, %held, "the scan gate holds a tag: the image its pods run is kept by digest");
            held
        }
        [] => lkg,
        several => {
            tracing::warn!(image = %lkg, digests = ?several, "the pods of the held tag run different digests; it stays a tag");
            lkg
        }
    }
}

/// The manifest digests the runtime containers of `pods` that run `image` by that very reference
/// report (`status.containerStatuses[].imageID`, written by the kubelet: `repo@sha256:…`;
/// Docker's `docker-pullable://` prefix aside) for `image`'s own repository, each once. Only
/// pods a ReplicaSet controls count, and only a reference without a digest: anyone who may
/// create pods here could make one with the labels running `repo:tag@sha256:<an older release>`,
/// and the pin would be theirs to choose (a digest an image policy added at admission is left
/// out with it; the tag then stays a tag). A pod running the tag itself pulls what the tag
/// points to, or what a node cached of it, which is no worse than the tag. A bare `sha256:…` is
/// the image's config ID, not a digest one can pull by, and is left out.
pub(crate) fn running_digests(image: &str, pods: &[Pod]) -> Vec<String> {
    let wanted = image_ref::parse(image);
    let same_repository = |reference: &str| {
        matches!((image_ref::parse(reference), &wanted),
            (Some(r), Some(w)) if r.registry == w.registry && r.repository == w.repository)
    };
    let mut digests: Vec<String> = pods
        .iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.kind == "ReplicaSet")
        })
        .filter(|p| {
            p.spec.as_ref().is_some_and(|s| {
                s.containers
                    .iter()
                    .any(|c| c.name == RUNTIME_CONTAINER && c.image.as_deref() == Some(image))
            })
        })
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .filter(|cs| cs.name == RUNTIME_CONTAINER)
        .filter_map(|cs| {
            let id = cs.image_id.trim();
            let id = id.strip_prefix("docker-pullable://").unwrap_or(id);
            let (repository, digest) = id.rsplit_once('@')?;
            (image_ref::is_sha256_digest(digest) && same_repository(repository))
                .then(|| digest.to_owned())
        })
        .collect();
    digests.sort();
    digests.dedup();
    digests
}

async fn decide_image(inputs: &GateInputs<'_>) -> Result<GateResult, ScanGateError> {
    let fkd = inputs.fkd;
    let gate = fkd.spec.scan_gate.clone().unwrap_or_default();
    let image = fkd.spec.image.as_str();
    if !gate.enabled {
        return Ok(GateResult {
            admitted: Some(image.to_owned()),
            ..GateResult::state(GateState::Disabled)
        });
    }
    let old = fkd.status.as_ref();
    let records = old.map(|s| s.scans.as_slice()).unwrap_or_default();
    if let Some(lkg) = last_known_good(old)
        && scan_admitted(lkg, records)
        && names_last_known_good(image, lkg, records)
    {
        let admitted =
            format!("{image} is the last admitted image ({lkg}): admitted again without a scan");
        let running = of_digest(old.and_then(|s| s.running_image_scan.as_ref()), lkg);
        let rescan = match rescan_running(inputs, &gate, lkg, records, running).await {
            Ok(rescan) => rescan,
            // The image is admitted whatever a rescan says. A call that failed is recorded as a
            // failed attempt (the last verdict's findings kept), unless one is recorded already:
            // a failed Job's record holds its retry count and time (its backoff), and rewriting
            // it each reconcile would only churn the status.
            Err(e) => {
                tracing::warn!(image = %lkg, error = %e, "rescanning the running image failed");
                let record = if running.is_some_and(|r| r.verdict == ScanVerdict::Failed) {
                    None
                } else {
                    let message = format!("the rescan could not run: {e}");
                    let mut record = failed_record(lkg, &policy_hash(&gate), &message);
                    record.digest = digest_of(lkg).map(str::to_owned);
                    record.scanned_at = Some(Time(inputs.now));
                    Some(keeping_findings(record, running))
                };
                Rescan {
                    record,
                    requeue: Some(Duration::from_secs(300)),
                    created_job: None,
                }
            }
        };
        let note = of_digest(rescan.record.as_ref().or(running), lkg)
            .filter(|r| finds_vulnerable(r))
            .map(|r| {
                format!(
                    "; its rescan found vulnerabilities above the policy: {}",
                    r.message
                )
            })
            .unwrap_or_default();
        return Ok(GateResult {
            admitted: Some(lkg.to_owned()),
            requeue: rescan.requeue,
            created_job: rescan.created_job,
            running: rescan.record,
            ..GateResult::state(GateState::LastKnownGood(format!("{admitted}{note}")))
        });
    }
    // The image admitted before the last-known-good one (whose rollout may be failing): going
    // back to it is a rollback too. Only while the last-known-good image is a scanned one: an
    // image that ran with the gate off is scanned when the gate is turned on, and so is the one
    // before it.
    if let Some(lkg) = last_known_good(old)
        && scan_admitted(lkg, records)
        && let Some(previous) = previously_admitted(old).and_then(record_image)
        && names_last_known_good(image, &previous, records)
    {
        return Ok(GateResult {
            admitted: Some(previous.clone()),
            ..GateResult::state(GateState::LastKnownGood(format!(
                "{image} was admitted before {lkg} ({previous}): admitted again without a scan"
            )))
        });
    }
    let policy = policy_hash(&gate);
    let recorded = records.iter().find(|r| r.image == image);
    if let Some(r) = recorded
        && r.verdict != ScanVerdict::Failed
        && r.policy_hash == policy
        && !is_stale(r.scanned_at.as_ref().map(|t| t.0), &gate, inputs.now)
    {
        // The verdict is state: no Job, pod or report is read for it.
        return Ok(decide(r.clone()));
    }
    let fresh = from_reports(inputs, image, &gate, &policy, recorded).await?;
    // A rescan (stale report, new policy, failed attempt retried) does not reopen a recorded
    // verdict that closed the gate: it stays closed, with the same reason, until the new one.
    Ok(match &fresh.state {
        GateState::Pending(why) => match recorded_hold(records, image, why) {
            Some(state) => GateResult { state, ..fresh },
            None => fresh,
        },
        _ => fresh,
    })
}

/// `record` when it is a scan of `image`'s pinned digest, else `None`: a rescan recorded for
/// an image admitted before says nothing about this one, and an unpinned image has no rescan.
pub fn of_digest<'a>(record: Option<&'a ScanStatus>, image: &str) -> Option<&'a ScanStatus> {
    let digest = digest_of(image)?;
    record.filter(|r| r.digest.as_deref() == Some(digest))
}

/// Whether a rescan record of the running image reports it above the policy: a Blocked verdict,
/// or a failed attempt that keeps one ([`keeping_findings`]).
pub fn finds_vulnerable(record: &ScanStatus) -> bool {
    match record.verdict {
        ScanVerdict::Blocked => true,
        ScanVerdict::Failed => record.blocking > 0,
        ScanVerdict::Passed => false,
    }
}

/// A failed rescan attempt is no new verdict: it keeps the findings of the last one (its
/// counts and blocking findings, named in its message), so a finding stays reported while the
/// rescans fail. Other records are returned as they are.
fn keeping_findings(mut record: ScanStatus, last: Option<&ScanStatus>) -> ScanStatus {
    if record.verdict == ScanVerdict::Failed
        && let Some(last) = last.filter(|l| finds_vulnerable(l))
    {
        record.counts = last.counts;
        record.blocking = last.blocking;
        let found = last
            .message
            .split_once("; the last verdict: ")
            .map_or(last.message.as_str(), |(_, v)| v);
        record.message = format!("{}; the last verdict: {found}", record.message);
    }
    record
}

/// What a rescan of the running image did in this pass.
#[derive(Debug, Default)]
struct Rescan {
    /// Its new record (Passed, Blocked or Failed), once it has one.
    record: Option<ScanStatus>,
    requeue: Option<Duration>,
    created_job: Option<(String, String)>,
}

/// Rescan the last-known-good image `lkg` (pinned by digest) while `spec.image` names it, once
/// its newest scan (the rescan recorded in `running`, of that digest, else the passed
/// record that admitted it) is older than `maxReportAge` or was made under another policy: the
/// same sources as a new image's scan (a VulnerabilityReport naming the digest, else a scan Job
/// of the pinned reference). Its verdict is a report, never a rollback: a vulnerability
/// published after the image was admitted leaves nothing better to run.
async fn rescan_running(
    inputs: &GateInputs<'_>,
    gate: &ScanGate,
    lkg: &str,
    records: &[ScanStatus],
    running: Option<&ScanStatus>,
) -> Result<Rescan, ScanGateError> {
    let Some(digest) = digest_of(lkg) else {
        return Ok(Rescan::default());
    };
    let admitted = records
        .iter()
        .find(|r| r.verdict == ScanVerdict::Passed && record_image(r).as_deref() == Some(lkg));
    let policy = policy_hash(gate);
    let newest = running.or(admitted);
    if newest.is_some_and(|r| {
        r.verdict != ScanVerdict::Failed
            && r.policy_hash == policy
            && !is_stale(r.scanned_at.as_ref().map(|t| t.0), gate, inputs.now)
    }) {
        return Ok(Rescan::default());
    }
    let found = from_reports(inputs, lkg, gate, &policy, running).await?;
    let record = found.record.map(|mut r| {
        // A failed attempt resolves no digest: it is still this image's.
        r.digest.get_or_insert_with(|| digest.to_owned());
        keeping_findings(r, running)
    });
    Ok(Rescan {
        record,
        requeue: found.requeue,
        created_job: found.created_job,
    })
}

/// A new verdict for `image` (`spec.image`, or the running image's rescan) from a
/// VulnerabilityReport or this deployment's scan Job.
async fn from_reports(
    inputs: &GateInputs<'_>,
    image: &str,
    gate: &ScanGate,
    policy: &str,
    recorded: Option<&ScanStatus>,
) -> Result<GateResult, ScanGateError> {
    let fkd = inputs.fkd;
    let namespace = inputs.namespace;
    let client = inputs.client;

    if inputs.capabilities.has(OptionalCrd::VulnerabilityReport) {
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            namespace,
            &vulnerability_report::api_resource(),
        );
        let reports = api
            .list(&ListParams::default())
            .await
            .map_err(ReadError::of(format!(
                "VulnerabilityReports in {namespace}"
            )))?;
        if let Some((name, summary)) = vulnerability_report::find(&reports.items, image) {
            let verdict = evaluate(&summary, gate, inputs.now);
            if !verdict.stale
                && let Ok(digest) = resolved_digest(image, &summary)
            {
                let report_ref = format!("VulnerabilityReport/{name}");
                return Ok(decide(scan_status(
                    &summary,
                    &verdict,
                    Some(digest),
                    policy,
                    report_ref,
                )));
            }
        }
    }

    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let job_name = labels::scan_job_name(inputs.name, image);
    let wanted = scan_job(fkd, image, gate, inputs.operator_image)?;
    let Some(job) = jobs
        .get_opt(&job_name)
        .await
        .map_err(ReadError::of(format!("Job {namespace}/{job_name}")))?
    else {
        let job = wanted;
        jobs.create(&PostParams::default(), &job)
            .await
            .map_err(|source| ScanGateError::Job {
                name: job_name.clone(),
                source: Box::new(source),
            })?;
        return Ok(GateResult {
            created_job: Some((job_name.clone(), image.to_owned())),
            ..GateResult::state(GateState::Pending(format!(
                "scan Job {job_name} started for {image}"
            )))
        }
        .requeue(Duration::from_secs(10)));
    };
    let scanned = job
        .annotations()
        .get(labels::SCAN_IMAGE_ANNOTATION)
        .map(String::as_str);
    if scanned != Some(image) {
        return Ok(failed(
            image,
            policy,
            format!(
                "Job {job_name} scans {} instead of {image}",
                scanned.unwrap_or("an unknown image")
            ),
        ));
    }
    match provenance(&job, &wanted, fkd.uid().as_deref()) {
        Provenance::Ours => {}
        // Anyone who may create Jobs here could have made one of this name writing any summary.
        Provenance::Foreign => {
            return Ok(failed(
                image,
                policy,
                format!(
                    "Job {job_name} was not created for this FaceKeyDeployment (no controller \
                     reference to it): its report is not trusted; delete the Job to rescan"
                ),
            )
            .requeue(Duration::from_secs(300)));
        }
        // The previous resource's, on its way out: its verdict is not this one's, and it is
        // not someone else's either. Scan once it is gone.
        Provenance::Predecessor => {
            return Ok(GateResult::state(GateState::Pending(format!(
                "scan Job {job_name} belongs to a deleted FaceKeyDeployment of this name; \
                 waiting for the garbage collector to remove it, then scanning {image}"
            )))
            .requeue(Duration::from_secs(10)));
        }
        // Ours, changed after it was written: a Job made again would be changed again (a
        // create/delete loop, a scanner pod each time), and what it reports is not what the
        // gate asked for. Fail closed and keep it until its TTL or a deletion retries.
        Provenance::Altered(what) => {
            return Ok(failed(
                image,
                policy,
                format!(
                    "scan Job {job_name} no longer runs the pod template this operator wrote \
                     ({what} changed, by an admission webhook or policy, or an edit): its report \
                     is not trusted. Exclude scan Jobs (label \
                     app.kubernetes.io/component=scan) from that policy, then delete the Job to \
                     rescan"
                ),
            )
            .requeue(Duration::from_secs(300)));
        }
        // Ours, but made by another operator version or scanner setting: scan again.
        Provenance::Outdated => {
            delete_job(&jobs, &job_name).await?;
            return Ok(GateResult::state(GateState::Pending(format!(
                "scan Job {job_name} runs other containers than this operator's; rescanning"
            )))
            .requeue(Duration::from_secs(5)));
        }
    }
    let status = job.status.clone().unwrap_or_default();
    let failed_cond = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed" && c.status == "True");
    if let Some(cond) = failed_cond {
        let failed_at = cond
            .last_transition_time
            .as_ref()
            .or(job.metadata.creation_timestamp.as_ref())
            .map(|t| t.0);
        let failures = failures_after(recorded, failed_at);
        let retry_at = failed_at.and_then(|t| t.checked_add(retry_after(failures)).ok());
        let next = match retry_at {
            Some(at) if at > inputs.now => format!("next attempt at {at}"),
            _ => {
                delete_job(&jobs, &job_name).await?;
                "a new attempt starts".to_owned()
            }
        };
        // Why, from the pod: Trivy's or the login merge's own error. Best effort: a pod list
        // that fails leaves the Job's condition alone as the reason.
        let detail = match job_pods(client, namespace, &job).await {
            Ok(pods) => pod_failure(&pods),
            Err(e) => {
                tracing::debug!(error = %e, job = %job_name, "pods of a failed scan Job not read");
                None
            }
        };
        let in_a_row = if failures > 1 {
            format!(" ({failures} failures in a row)")
        } else {
            String::new()
        };
        let message = format!(
            "scan Job {job_name} failed{in_a_row}: {}{}; {next}",
            cond.message.as_deref().unwrap_or("no message"),
            detail.map(|d| format!("; {d}")).unwrap_or_default()
        );
        let mut result = failed(image, policy, message);
        if let Some(record) = result.record.as_mut() {
            record.scanned_at = failed_at.map(Time);
            record.failures = Some(failures);
        }
        let wait = retry_at
            .and_then(|at| Duration::try_from(at.duration_since(inputs.now)).ok())
            .unwrap_or_default();
        return Ok(result.requeue(wait.clamp(Duration::from_secs(5), Duration::from_secs(300))));
    }
    if status.succeeded.unwrap_or(0) < 1 {
        return Ok(GateResult::state(GateState::Pending(format!(
            "scan Job {job_name} is running"
        )))
        .requeue(Duration::from_secs(15)));
    }
    let summary = match read_summary(client, namespace, &job).await? {
        Ok(summary) => summary,
        Err(why) => {
            let message = format!("scan Job {job_name} succeeded but {why}");
            return Ok(failed(image, policy, message).requeue(Duration::from_secs(300)));
        }
    };
    if summary.image != image {
        return Ok(failed(
            image,
            policy,
            format!(
                "scan summary of Job {job_name} describes {} instead of {image}",
                summary.image
            ),
        ));
    }
    let verdict = evaluate(&summary, gate, inputs.now);
    if verdict.stale {
        delete_job(&jobs, &job_name).await?;
        return Ok(GateResult::state(GateState::Pending(format!(
            "scan report from {} is older than maxReportAge; rescanning",
            summary.created_at
        )))
        .requeue(Duration::from_secs(5)));
    }
    let digest = match resolved_digest(image, &summary) {
        Ok(digest) => digest,
        Err(why) => return Ok(failed(image, policy, why)),
    };
    let report_ref = format!("Job/{job_name}");
    Ok(decide(scan_status(
        &summary,
        &verdict,
        Some(digest),
        policy,
        report_ref,
    )))
}

async fn delete_job(jobs: &Api<Job>, name: &str) -> Result<(), ScanGateError> {
    delete_if_present(jobs, name)
        .await
        .map(drop)
        .map_err(|source| ScanGateError::Job {
            name: name.to_owned(),
            source: Box::new(source),
        })
}

/// Labels the Job controller puts on a Job's pods, holding the Job's uid: the current one, and
/// the legacy one older clusters set. A Job's pods are found by its uid, never by its name (a
/// Job deleted and recreated under the same name leaves pods of the old one behind for a while).
pub const JOB_UID_LABELS: [&str; 2] = ["batch.kubernetes.io/controller-uid", "controller-uid"];

/// The pods of `job`, found by its uid and kept only when the Job is their controller (a label
/// anyone may set; the Job controller sets both), none when it has no uid.
async fn job_pods(client: &Client, namespace: &str, job: &Job) -> Result<Vec<Pod>, ReadError> {
    let Some(uid) = job.uid() else {
        return Ok(Vec::new());
    };
    let job_name = job.name_any();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for label in JOB_UID_LABELS {
        let items = pods
            .list(&ListParams::default().labels(&format!("{label}={uid}")))
            .await
            .map_err(ReadError::of(format!("pods of Job {namespace}/{job_name}")))?
            .items
            .into_iter()
            .filter(|p| crate::apply::controlled_by(p.metadata.owner_references.as_ref(), &uid))
            .collect::<Vec<_>>();
        if !items.is_empty() {
            return Ok(items);
        }
    }
    Ok(Vec::new())
}

/// Longest part of a failed container's termination message put into a status message.
const FAILURE_DETAIL_CHARS: usize = 300;

/// Why a scan pod failed: the first container, init containers first in their order, that
/// ended with a non-zero exit code, with the end of its termination message (Trivy's error
/// output through `FallbackToLogsOnError`, the login merge's through its termination log) on
/// one line. `None` when no container says.
pub fn pod_failure(pods: &[Pod]) -> Option<String> {
    pods.iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            let init = s.init_container_statuses.iter().flatten();
            init.chain(s.container_statuses.iter().flatten())
        })
        .find_map(|cs| {
            let t = cs.state.as_ref()?.terminated.as_ref()?;
            if t.exit_code == 0 {
                return None;
            }
            let message = t
                .message
                .as_deref()
                .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|m| !m.is_empty());
            Some(match message {
                Some(m) => {
                    let skip = m.chars().count().saturating_sub(FAILURE_DETAIL_CHARS);
                    let tail: String = m.chars().skip(skip).collect();
                    let cut = if skip > 0 { "…" } else { "" };
                    format!("container {} exited {}: {cut}{tail}", cs.name, t.exit_code)
                }
                None => format!("container {} exited {}", cs.name, t.exit_code),
            })
        })
}

/// Read the summary from the termination message of the Job's summary container.
/// The outer error is an API failure; the inner one explains a missing or unreadable summary.
async fn read_summary(
    client: &Client,
    namespace: &str,
    job: &Job,
) -> Result<Result<ScanSummary, String>, ReadError> {
    if job.uid().is_none() {
        return Ok(Err("the Job has no uid".into()));
    }
    let items = job_pods(client, namespace, job).await?;
    let faithful: Vec<&Pod> = items.iter().filter(|p| runs_template(p, job)).collect();
    if faithful.is_empty() && !items.is_empty() {
        return Ok(Err(format!(
            "no pod of the Job runs its template's containers ({} differ: changed by another \
             admission webhook, or not created by the Job controller)",
            items
                .iter()
                .map(|p| p.name_any())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let messages: Vec<&str> = faithful
        .iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .filter(|cs| cs.name == SCAN_SUMMARY_CONTAINER)
        .filter_map(|cs| cs.state.as_ref()?.terminated.as_ref())
        .filter(|t| t.exit_code == 0)
        .filter_map(|t| t.message.as_deref())
        .collect();
    let Some(message) = messages.first() else {
        return Ok(Err(
            "no pod has a termination message from the summary container".into(),
        ));
    };
    Ok(serde_json::from_str::<ScanSummary>(message)
        .map_err(|e| format!("its summary is unreadable: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod(init: serde_json::Value, containers: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "scan-x"},
            "status": {"initContainerStatuses": init, "containerStatuses": containers},
        }))
        .unwrap()
    }

    fn status(name: &str, exit: i32, message: Option<&str>) -> serde_json::Value {
        let mut terminated = serde_json::json!({"exitCode": exit});
        if let Some(m) = message {
            terminated["message"] = m.into();
        }
        serde_json::json!({"name": name, "image": "i", "imageID": "", "ready": false,
                           "restartCount": 0, "state": {"terminated": terminated}})
    }

    #[test]
    fn failed_attempts_wait_twice_as_long_each_time_up_to_the_jobs_ttl() {
        let mins = |n: u32| retry_after(n).as_secs() / 60;
        assert_eq!([mins(0), mins(1), mins(2), mins(3)], [10, 10, 20, 40]);
        assert_eq!(mins(4), 60, "the Job's TTL removes it after an hour anyway");
        assert_eq!(mins(u32::MAX), 60);
    }

    #[test]
    fn a_failure_is_counted_once_however_often_it_is_read() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let record = |verdict, failures, when: &str| ScanStatus {
            verdict,
            failures,
            scanned_at: Some(Time(at(when))),
            ..ScanStatus::default()
        };
        let failed = record(ScanVerdict::Failed, Some(2), "2025-11-20T10:00:00Z");
        let same = Some(at("2025-11-20T10:00:00.4Z"));
        assert_eq!(
            failures_after(Some(&failed), same),
            2,
            "the same Job read again"
        );
        assert_eq!(
            failures_after(Some(&failed), None),
            2,
            "no time: not a new one"
        );
        let later = Some(at("2025-11-20T10:30:00Z"));
        assert_eq!(failures_after(Some(&failed), later), 3, "the next attempt");
        assert_eq!(failures_after(None, later), 1);
        let passed = record(ScanVerdict::Passed, None, "2025-11-20T10:00:00Z");
        assert_eq!(failures_after(Some(&passed), later), 1);
        let uncounted = record(ScanVerdict::Failed, None, "2025-11-20T10:00:00Z");
        assert_eq!(
            failures_after(Some(&uncounted), later),
            1,
            "an older operator's record"
        );
    }

    #[test]
    fn a_digest_admission_added_to_a_tag_is_not_a_change() {
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let kyverno = format!("mirror.gcr.io/aquasec/trivy:0.58.1@{digest}");
        assert_eq!(
            without_admitted_digest(&kyverno),
            "mirror.gcr.io/aquasec/trivy:0.58.1"
        );
        // A registry port is not a tag; a digest-only pin stays as it is.
        let pinned = format!("registry:5000/trivy@{digest}");
        assert_eq!(without_admitted_digest(&pinned), pinned);
        assert_eq!(
            without_admitted_digest("registry:5000/trivy:1"),
            "registry:5000/trivy:1"
        );
        // The whole comparison: the mutated Job is ours, another scanner is not.
        let job = |image: &str| -> Job {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "fk-scan-1", "ownerReferences": [{"apiVersion": "facekey.dev/v1alpha1",
                    "kind": "FaceKeyDeployment", "name": "fk", "uid": "u1", "controller": true}]},
                "spec": {"template": {"spec": {"containers": [{"name": "trivy", "image": image}]}}},
            }))
            .unwrap()
        };
        let wanted = job("mirror.gcr.io/aquasec/trivy:0.58.1");
        assert_eq!(
            provenance(&job(&kyverno), &wanted, Some("u1")),
            Provenance::Ours
        );
        assert_eq!(
            provenance(
                &job("mirror.gcr.io/aquasec/trivy:0.50.0"),
                &wanted,
                Some("u1")
            ),
            Provenance::Outdated
        );
        // A wanted image pinned by digest matches only that digest.
        let other = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
        let pinned_wanted = job(&kyverno);
        assert_eq!(
            provenance(&job(&kyverno), &pinned_wanted, Some("u1")),
            Provenance::Ours
        );
        assert_eq!(
            provenance(
                &job(&format!("mirror.gcr.io/aquasec/trivy:0.58.1@{other}")),
                &pinned_wanted,
                Some("u1")
            ),
            Provenance::Outdated
        );
    }

    /// A Job made beforehand under the wanted name, with a controller reference to the resource
    /// (which needs no permission), is ours only if its pods would write what ours would: an
    /// `envFrom` (scanner settings from a ConfigMap), another volume source or mount is not; the
    /// modes the API server defaults are.
    #[test]
    fn a_job_made_beforehand_must_match_in_env_from_volumes_and_mounts() {
        let job = |change: &dyn Fn(&mut serde_json::Value)| -> Job {
            let mut v = serde_json::json!({
                "metadata": {"name": "fk-scan-1", "ownerReferences": [{"apiVersion": "facekey.dev/v1alpha1",
                    "kind": "FaceKeyDeployment", "name": "fk", "uid": "u1", "controller": true}]},
                "spec": {"template": {"spec": {
                    "containers": [{"name": "trivy", "image": "trivy:1",
                        "volumeMounts": [{"name": "cache", "mountPath": "/cache"},
                                         {"name": "pull-secret-0", "mountPath": "/p", "readOnly": true}]}],
                    "volumes": [{"name": "cache", "emptyDir": {"sizeLimit": "4Gi"}},
                                {"name": "pull-secret-0", "secret": {"secretName": "regcred"}}]}}},
            });
            change(&mut v["spec"]["template"]["spec"]);
            serde_json::from_value(v).unwrap()
        };
        let wanted = job(&|_| {});
        let as_stored = job(&|p| p["volumes"][1]["secret"]["defaultMode"] = 420.into());
        assert_eq!(
            provenance(&as_stored, &wanted, Some("u1")),
            Provenance::Ours
        );
        let changes: [&dyn Fn(&mut serde_json::Value); 4] = [
            &|p| {
                p["containers"][0]["envFrom"] = serde_json::json!([{"configMapRef": {"name": "x"}}])
            },
            &|p| {
                p["volumes"][0] = serde_json::json!({"name": "cache", "hostPath": {"path": "/db"}})
            },
            &|p| p["containers"][0]["volumeMounts"][1]["readOnly"] = false.into(),
            &|p| p["volumes"][1]["secret"]["secretName"] = "other".into(),
        ];
        for (i, change) in changes.iter().enumerate() {
            assert_eq!(
                provenance(&job(change), &wanted, Some("u1")),
                Provenance::Outdated,
                "change {i}"
            );
        }
    }

    /// A Job whose template hash is the wanted one but whose pod differs was changed after the
    /// operator wrote it (admission, an edit): reported, naming the part; one written for another
    /// template (another hash, or none from an older operator) is outdated and replaced.
    #[test]
    fn a_job_changed_after_it_was_written_is_told_from_an_outdated_one() {
        let job = |hash: Option<&str>, change: &dyn Fn(&mut serde_json::Value)| -> Job {
            let mut v = serde_json::json!({
                "metadata": {"name": "fk-scan-1", "ownerReferences": [{"apiVersion": "facekey.dev/v1alpha1",
                    "kind": "FaceKeyDeployment", "name": "fk", "uid": "u1", "controller": true}]},
                "spec": {"template": {"spec": {
                    "initContainers": [{"name": "trivy", "image": "trivy:1",
                        "env": [{"name": "HOME", "value": "/tmp"}],
                        "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]}],
                    "containers": [{"name": "summary", "image": "op:1", "args": ["summary"]}],
                    "volumes": [{"name": "cache", "emptyDir": {}}]}}},
            });
            if let Some(h) = hash {
                v["metadata"]["annotations"] =
                    serde_json::json!({ labels::SCAN_TEMPLATE_ANNOTATION: h });
            }
            change(&mut v["spec"]["template"]["spec"]);
            serde_json::from_value(v).unwrap()
        };
        let wanted = job(Some("h1"), &|_| {});
        assert_eq!(
            provenance(&job(Some("h1"), &|_| {}), &wanted, Some("u1")),
            Provenance::Ours
        );
        fn push(list: &mut serde_json::Value, item: serde_json::Value) {
            list.as_array_mut().unwrap().push(item);
        }
        type Change<'a> = (&'a dyn Fn(&mut serde_json::Value), &'a str);
        let changes: [Change; 6] = [
            (
                &|p| p["initContainers"][0]["image"] = "mirror.corp/trivy:1".into(),
                "an image",
            ),
            (
                &|p| {
                    push(
                        &mut p["initContainers"][0]["env"],
                        serde_json::json!({"name": "HTTPS_PROXY", "value": "http://proxy:3128"}),
                    )
                },
                "the environment",
            ),
            (
                &|p| p["containers"][0]["args"] = serde_json::json!(["echo", "clean"]),
                "a command or its arguments",
            ),
            (
                &|p| {
                    push(
                        &mut p["initContainers"][0]["volumeMounts"],
                        serde_json::json!({"name": "ca", "mountPath": "/etc/ssl/certs"}),
                    )
                },
                "the volume mounts",
            ),
            (
                &|p| {
                    push(
                        &mut p["volumes"],
                        serde_json::json!({"name": "ca", "emptyDir": {}}),
                    )
                },
                "the volumes",
            ),
            (
                &|p| {
                    push(
                        &mut p["containers"],
                        serde_json::json!({"name": "istio-proxy", "image": "p:1"}),
                    )
                },
                "the containers' names",
            ),
        ];
        for (change, what) in changes {
            assert_eq!(
                provenance(&job(Some("h1"), change), &wanted, Some("u1")),
                Provenance::Altered(what)
            );
            for older in [Some("h0"), None] {
                assert_eq!(
                    provenance(&job(older, change), &wanted, Some("u1")),
                    Provenance::Outdated,
                    "{what}, written for {older:?}"
                );
            }
        }
    }

    #[test]
    fn the_first_failed_container_says_why_on_one_line() {
        let waiting = serde_json::json!([{"name": "summary", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]);
        let trivy = pod(
            serde_json::json!([
                status("docker-config", 0, None),
                status(
                    "trivy",
                    1,
                    Some(
                        "2026-12-04T10:00:00Z\tFATAL\tunable to find the image:\n  UNAUTHORIZED: authentication required\n"
                    )
                ),
            ]),
            waiting.clone(),
        );
        assert_eq!(
            pod_failure(&[trivy]).as_deref(),
            Some(
                "container trivy exited 1: 2026-12-04T10:00:00Z FATAL unable to find the image: UNAUTHORIZED: authentication required"
            )
        );
        // The merge fails first: Trivy never ran.
        let merge = pod(
            serde_json::json!([status(
                "docker-config",
                2,
                Some("pull secret regcred: not JSON")
            )]),
            waiting,
        );
        assert_eq!(
            pod_failure(&[merge]).as_deref(),
            Some("container docker-config exited 2: pull secret regcred: not JSON")
        );
        // A long log keeps its end, where the error is.
        let long = format!("{} the real error", "noise ".repeat(200));
        let verbose = pod(
            serde_json::json!([status("trivy", 1, Some(&long))]),
            serde_json::json!([]),
        );
        let detail = pod_failure(&[verbose]).unwrap();
        assert!(detail.ends_with("the real error"), "{detail}");
        assert!(detail.contains(": …"), "{detail}");
        assert!(
            detail.chars().count() < FAILURE_DETAIL_CHARS + 40,
            "{detail}"
        );
        // Nothing failed, or no message: what is known.
        let quiet = pod(
            serde_json::json!([status("trivy", 137, None)]),
            serde_json::json!([]),
        );
        assert_eq!(
            pod_failure(&[quiet]).as_deref(),
            Some("container trivy exited 137")
        );
        let fine = pod(
            serde_json::json!([status("trivy", 0, Some("ok"))]),
            serde_json::json!([]),
        );
        assert_eq!(pod_failure(&[fine]), None);
        assert_eq!(pod_failure(&[]), None);
    }
}
