//! The Job and pod lifecycle as a real cluster runs it, in front of kube-fake-client (which has
//! no controllers): tests call these where the cluster's controllers would act.
//!
//! Rules modelled (Kubernetes documentation of Jobs, the TTL-after-finished controller and the
//! garbage collector):
//! - the Job controller names a Job's pods `<job>-<5 random characters>` and labels them with the
//!   Job's uid (`batch.kubernetes.io/controller-uid` and the legacy `controller-uid`) and name
//!   (`batch.kubernetes.io/job-name`, `job-name`), with a controller owner reference to the Job;
//! - the kubelet puts a container's termination message (`terminationMessagePolicy: File`, at
//!   most 4 KiB) in `status.containerStatuses[].state.terminated.message`;
//! - a finished Job has `succeeded` or `failed` counts and `Complete`/`SuccessCriteriaMet` or
//!   `Failed`/`FailureTarget` conditions whose `lastTransitionTime` is the finish time;
//! - `ttlSecondsAfterFinished` after that time the TTL controller deletes the Job, and the garbage
//!   collector deletes its pods (kube-fake-client cascades owner references on delete);
//! - a Job deleted and recreated under the same name can leave pods of the old Job behind for a
//!   while (background deletion): same name labels, another uid.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use std::hash::{BuildHasher, Hasher};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::{Harness, NS};

/// How the summary container of a scan Job ends.
#[derive(Debug, Clone)]
pub enum ScanOutcome {
    /// Exit 0 with this termination message (a summary from `scan-summary`).
    Summary(String),
    /// Exit 0 without a termination message.
    NoMessage,
    /// Trivy failed in every attempt: the Job fails with `BackoffLimitExceeded`.
    Failed,
    /// An init container (`trivy`, `docker-config`) failed with this termination message in
    /// every attempt; the summary container never ran.
    InitFailed {
        /// The init container.
        container: String,
        /// Its termination message (for `trivy`, the end of its log).
        message: String,
    },
}

/// The alphabet Kubernetes' name generator draws random suffixes from (no vowels, no 0/1/3).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A random 5-character suffix, as `generateName` produces.
pub fn random_suffix() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    let mut n = h.finish();
    (0..5)
        .map(|_| {
            let c = SUFFIX_ALPHABET[(n % SUFFIX_ALPHABET.len() as u64) as usize];
            n /= SUFFIX_ALPHABET.len() as u64;
            c as char
        })
        .collect()
}

/// A pod of `job` (uid `job_uid`) running `spec`, the Job's pod template as the Job controller
/// copies it.
fn pod_body(
    job: &str,
    job_uid: &str,
    owner: bool,
    spec: Value,
    exit_code: i32,
    message: Option<&str>,
) -> Pod {
    let name = format!("{job}-{}", random_suffix());
    let mut terminated = json!({"exitCode": exit_code,
        "reason": if exit_code == 0 { "Completed" } else { "Error" }});
    if let Some(m) = message {
        terminated["message"] = Value::String(m.to_owned());
    }
    let mut meta = json!({"name": name, "namespace": NS, "labels": {
        "batch.kubernetes.io/controller-uid": job_uid, "controller-uid": job_uid,
        "batch.kubernetes.io/job-name": job, "job-name": job,
    }});
    if owner {
        meta["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": job,
            "uid": job_uid, "controller": true, "blockOwnerDeletion": true}]);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": {"phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
            "containerStatuses": [{
                "name": "summary", "image": "op", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": terminated},
            }]},
    }))
    .unwrap()
}

/// The pod template's spec of `job`, as its pods run it.
pub fn template_spec(job: &Job) -> Value {
    serde_json::to_value(&job.spec.as_ref().unwrap().template.spec).unwrap()
}

impl Harness {
    fn now_string(&self) -> String {
        self.clock.now().to_string()
    }

    /// Play the Job controller and the kubelet: `job`'s pod runs and ends as `outcome`, and the
    /// Job finishes at the test clock's time. Returns the pod's (random) name.
    pub async fn run_scan_job(&self, job: &str, outcome: ScanOutcome) -> String {
        let jobs = self.api::<Job>();
        let live = jobs.get(job).await.unwrap();
        let uid = live.uid().expect("the API server set a uid");
        let spec = template_spec(&live);
        let (exit, message) = match &outcome {
            ScanOutcome::Summary(m) => (0, Some(m.as_str())),
            ScanOutcome::NoMessage => (0, None),
            ScanOutcome::Failed | ScanOutcome::InitFailed { .. } => (1, None),
        };
        let mut pod = pod_body(job, &uid, true, spec, exit, message);
        if let ScanOutcome::InitFailed { container, message } = &outcome {
            let mut status: Value = serde_json::to_value(pod.status.take()).unwrap();
            status["initContainerStatuses"] = json!([{
                "name": container, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": message}}}]);
            status["containerStatuses"][0]["state"] =
                json!({"waiting": {"reason": "PodInitializing"}});
            pod.status = serde_json::from_value(status).unwrap();
        }
        let name = pod.name_any();
        self.api::<Pod>()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
        let failed = matches!(
            outcome,
            ScanOutcome::Failed | ScanOutcome::InitFailed { .. }
        );
        self.finish_job(job, !failed).await;
        name
    }

    /// Play the Job controller: `job` finished (succeeded or failed) at the test clock's time,
    /// whatever pods it has.
    pub async fn finish_job(&self, job: &str, succeeded: bool) {
        let at = self.now_string();
        let status = if !succeeded {
            json!({
            "failed": 2, "startTime": at,
            "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit", "lastTransitionTime": at},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit", "lastTransitionTime": at},
            ]})
        } else {
            json!({
            "succeeded": 1, "startTime": at, "completionTime": at,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                 "lastTransitionTime": at},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                 "lastTransitionTime": at},
            ]})
        };
        self.api::<Job>()
            .patch_status(
                job,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .unwrap();
    }

    /// Play the TTL-after-finished controller at the test clock's time: delete every finished Job
    /// whose `ttlSecondsAfterFinished` has passed (its pods go with it). Returns their names.
    pub async fn expire_finished_jobs(&self) -> Vec<String> {
        let jobs = self.api::<Job>();
        let now = self.clock.now();
        let mut deleted = Vec::new();
        for job in jobs.list(&Default::default()).await.unwrap().items {
            let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
                continue;
            };
            let finished = job
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
                .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0));
            if finished.is_some_and(|t: Timestamp| {
                now.duration_since(t) >= SignedDuration::from_secs(i64::from(ttl))
            }) {
                let name = job.name_any();
                jobs.delete(&name, &DeleteParams::foreground())
                    .await
                    .unwrap();
                deleted.push(name);
            }
        }
        deleted
    }

    /// A pod of an earlier Job named `job` (another uid) that background deletion has not removed
    /// yet, whose summary container ended with `message`. Returns its name.
    pub async fn leftover_pod_of_earlier_job(&self, job: &str, message: &str) -> String {
        let spec = match self.api::<Job>().get_opt(job).await.unwrap() {
            Some(live) => template_spec(&live),
            None => {
                json!({"restartPolicy": "Never", "containers": [{"name": "summary", "image": "op"}]})
            }
        };
        let pod = pod_body(
            job,
            "0d1e2f3a-old0-4b5c-8d9e-0f1a2b3c4d5e",
            false,
            spec,
            0,
            Some(message),
        );
        let name = pod.name_any();
        self.api::<Pod>()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
        name
    }

    /// A pod someone who may create pods in the namespace made to pass as `job`'s result: named
    /// `job` (sorting before the Job controller's `<job>-xxxxx`), with the Job's uid label and a
    /// summary container that exited 0 with `message`. With `owned`, it also names the Job as its
    /// controller (no permission needed) but runs another summary image. Returns its name.
    pub async fn forged_scan_pod(&self, job: &str, message: &str, owned: bool) -> String {
        let live = self.api::<Job>().get(job).await.unwrap();
        let uid = live.uid().unwrap();
        let mut spec = template_spec(&live);
        let mut pod = if owned {
            spec["containers"][0]["image"] = json!("registry.example/any-summary:latest");
            pod_body(job, &uid, true, spec, 0, Some(message))
        } else {
            pod_body(job, &uid, false, spec, 0, Some(message))
        };
        let name = if owned {
            format!("{job}-0")
        } else {
            job.to_owned()
        };
        pod.metadata.name = Some(name.clone());
        self.api::<Pod>()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
        name
    }

    /// Names of the pods of the namespace.
    pub async fn pods(&self) -> Vec<String> {
        self.api::<Pod>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect()
    }

    /// Someone changes the runtime container's image by hand (`kubectl set image`): a JSON patch
    /// of that one field, under another field manager.
    pub async fn set_image_by_hand(&self, deployment: &str, image: &str) {
        let patch: json_patch::Patch = serde_json::from_value(json!([{
            "op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image
        }]))
        .unwrap();
        self.api::<k8s_openapi::api::apps::v1::Deployment>()
            .patch(
                deployment,
                &PatchParams {
                    field_manager: Some("kubectl-set".into()),
                    ..PatchParams::default()
                },
                &Patch::Json::<()>(patch),
            )
            .await
            .unwrap();
    }
}
