//! The scan gate stage of reconcile: find or produce a scan report for `spec.image` and decide.
//!
//! Sources, in order: a fresh trivy-operator VulnerabilityReport for the image (when that CRD is
//! installed); the summary written by this deployment's own scan Job for the image; otherwise a new
//! scan Job is created. Until a usable report exists the gate stays closed (fail closed).

use std::time::Duration;

use facekey_crds::{FaceKeyDeployment, ScanStatus, Severity};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ListParams, PostParams};
use kube::core::DynamicObject;
use kube::{Api, Client, ResourceExt};

use crate::apply::delete_if_present;
use crate::desired::{Capabilities, OptionalCrd, SCAN_SUMMARY_CONTAINER, scan_job};
use crate::error::{ReadError, ScanGateError};
use crate::labels;
use crate::scan::{ScanSummary, Verdict, evaluate, vulnerability_report};
use crate::status::GateState;

/// A failed scan Job is kept this long (so its failure is visible) before a new attempt.
const FAILED_JOB_RETRY_AFTER: SignedDuration = SignedDuration::from_mins(10);

/// What the gate decided and when to look again.
#[derive(Debug, Clone, PartialEq)]
pub struct GateResult {
    /// The decision.
    pub state: GateState,
    /// Summary for the status (None when no report was evaluated in this pass).
    pub scan: Option<ScanStatus>,
    /// Requeue sooner than the default, e.g. while a scan runs.
    pub requeue: Option<Duration>,
    /// Name of a scan Job created in this pass.
    pub created_job: Option<String>,
}

impl GateResult {
    fn state(state: GateState) -> Self {
        Self {
            state,
            scan: None,
            requeue: None,
            created_job: None,
        }
    }
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
    /// Image the live Deployment runs, if any.
    pub running_image: Option<&'a str>,
    /// Optional CRDs present.
    pub capabilities: &'a Capabilities,
    /// Image of the operator (runs the summary container of scan Jobs).
    pub operator_image: &'a str,
    /// Current time.
    pub now: Timestamp,
}

/// The status summary of a verdict.
pub fn scan_status(summary: &ScanSummary, verdict: &Verdict, report_ref: String) -> ScanStatus {
    let c = |s| verdict.counted.get(&s).copied().unwrap_or(0);
    ScanStatus {
        image: summary.image.clone(),
        critical: c(Severity::Critical),
        high: c(Severity::High),
        medium: c(Severity::Medium),
        low: c(Severity::Low),
        blocking: verdict.blocking,
        report_ref: Some(report_ref),
        scanned_at: summary.created_at.parse::<Timestamp>().ok().map(Time),
    }
}

fn decide(summary: &ScanSummary, verdict: &Verdict, report_ref: String) -> GateResult {
    let state = if verdict.passed {
        GateState::Passed(verdict.message.clone())
    } else {
        GateState::Blocked(verdict.message.clone())
    };
    GateResult {
        scan: Some(scan_status(summary, verdict, report_ref)),
        state,
        // A blocked image is looked at again after a while: a new trivy DB may clear it.
        requeue: (!verdict.passed).then_some(Duration::from_secs(300)),
        created_job: None,
    }
}

/// Run the gate stage.
pub async fn run(inputs: &GateInputs<'_>) -> Result<GateResult, ScanGateError> {
    let fkd = inputs.fkd;
    let gate = fkd.spec.scan_gate.clone().unwrap_or_default();
    let image = fkd.spec.image.as_str();
    if !gate.enabled {
        return Ok(GateResult::state(GateState::Disabled));
    }
    if inputs.running_image == Some(image) {
        return Ok(GateResult::state(GateState::AlreadyRunning));
    }
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
            let verdict = evaluate(&summary, &gate, inputs.now);
            if !verdict.stale {
                return Ok(decide(
                    &summary,
                    &verdict,
                    format!("VulnerabilityReport/{name}"),
                ));
            }
        }
    }

    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let job_name = labels::scan_job_name(inputs.name, image);
    let Some(job) = jobs
        .get_opt(&job_name)
        .await
        .map_err(ReadError::of(format!("Job {namespace}/{job_name}")))?
    else {
        let job = scan_job(fkd, image, &gate, inputs.operator_image)?;
        jobs.create(&PostParams::default(), &job)
            .await
            .map_err(|source| ScanGateError::Job {
                name: job_name.clone(),
                source: Box::new(source),
            })?;
        return Ok(GateResult {
            state: GateState::Pending(format!("scan Job {job_name} started for {image}")),
            scan: None,
            requeue: Some(Duration::from_secs(10)),
            created_job: Some(job_name),
        });
    };
    let scanned = job
        .annotations()
        .get(labels::SCAN_IMAGE_ANNOTATION)
        .map(String::as_str);
    if scanned != Some(image) {
        return Ok(GateResult::state(GateState::Failed(format!(
            "Job {job_name} scans {} instead of {image}",
            scanned.unwrap_or("an unknown image")
        ))));
    }
    let status = job.status.clone().unwrap_or_default();
    let failed = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed" && c.status == "True");
    if let Some(cond) = failed {
        let since = cond
            .last_transition_time
            .as_ref()
            .map(|t| inputs.now.duration_since(t.0));
        if since.is_some_and(|d| d > FAILED_JOB_RETRY_AFTER) {
            delete_job(&jobs, &job_name).await?;
        }
        return Ok(GateResult {
            state: GateState::Failed(format!(
                "scan Job {job_name} failed: {}",
                cond.message.as_deref().unwrap_or("no message")
            )),
            scan: None,
            requeue: Some(Duration::from_secs(300)),
            created_job: None,
        });
    }
    if status.succeeded.unwrap_or(0) < 1 {
        return Ok(GateResult {
            state: GateState::Pending(format!("scan Job {job_name} is running")),
            scan: None,
            requeue: Some(Duration::from_secs(15)),
            created_job: None,
        });
    }
    let summary = match read_summary(client, namespace, &job_name).await? {
        Ok(summary) => summary,
        Err(why) => {
            return Ok(GateResult {
                state: GateState::Failed(format!("scan Job {job_name} succeeded but {why}")),
                scan: None,
                requeue: Some(Duration::from_secs(300)),
                created_job: None,
            });
        }
    };
    if summary.image != image {
        return Ok(GateResult::state(GateState::Failed(format!(
            "scan summary of Job {job_name} describes {} instead of {image}",
            summary.image
        ))));
    }
    let verdict = evaluate(&summary, &gate, inputs.now);
    if verdict.stale {
        delete_job(&jobs, &job_name).await?;
        return Ok(GateResult {
            state: GateState::Pending(format!(
                "scan report from {} is older than maxReportAge; rescanning",
                summary.created_at
            )),
            scan: None,
            requeue: Some(Duration::from_secs(5)),
            created_job: None,
        });
    }
    Ok(decide(&summary, &verdict, format!("Job/{job_name}")))
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

/// Read the summary from the termination message of the Job's summary container.
/// The outer error is an API failure; the inner one explains a missing or unreadable summary.
async fn read_summary(
    client: &Client,
    namespace: &str,
    job_name: &str,
) -> Result<Result<ScanSummary, String>, ReadError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job_name}")))
        .await
        .map_err(ReadError::of(format!("pods of Job {namespace}/{job_name}")))?;
    let messages: Vec<&str> = list
        .items
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
