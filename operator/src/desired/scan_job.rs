//! The Trivy scan Job of one image reference.
//!
//! The pod runs `trivy image --format json` as an init container writing the full report to a
//! shared emptyDir; the main container is the operator's own image running
//! `facekey-operator scan-summary`, which condenses the report (see [`crate::scan::ScanSummary`])
//! and writes it to `/dev/termination-log`. The reconciler reads it back from the pod's
//! `state.terminated.message`: no log access and no extra storage needed, and the 4 KiB limit of
//! termination messages is respected by construction.
//!
//! With `spec.imagePullSecrets`, a first init container (the operator's image again, running
//! `facekey-operator merge-docker-config`) merges every pull secret, in order, into one Docker
//! `config.json` in a memory-backed emptyDir that Trivy reads through `DOCKER_CONFIG`
//! (see [`crate::scan::docker_config`]).

use std::collections::BTreeMap;

use facekey_crds::{FaceKeyDeployment, ScanGate};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities as LinuxCapabilities, Container, EmptyDirVolumeSource, EnvVar, KeyToPath,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::runtime::empty_dir;
use super::{Owner, Result, instance_name};
use crate::labels::{self, Component};
use crate::policy_floor::DEFAULT_SCANNER_IMAGE;
use crate::scan::docker_config::Format;

/// Name of the container whose termination message carries the scan summary.
pub const SCAN_SUMMARY_CONTAINER: &str = "summary";
const REPORT_PATH: &str = "/report/report.json";
/// Name of the init container merging the pull secrets into Trivy's Docker config.
pub const DOCKER_CONFIG_CONTAINER: &str = "docker-config";
/// Where Trivy finds registry credentials (`DOCKER_CONFIG`): an emptyDir holding the
/// `config.json` merged from every `spec.imagePullSecrets` entry.
const DOCKER_CONFIG_DIR: &str = "/docker-config";
const DOCKER_CONFIG_FILE: &str = "/docker-config/config.json";
/// Where the pull secrets are mounted for the merge, one directory each.
const PULL_SECRETS_DIR: &str = "/pull-secrets";

/// Arguments of `trivy image` for `image` under the resolved `gate`: the DB mirrors and the
/// server mode when set (a server holds the DB, so no DB is downloaded then).
fn trivy_args(image: &str, gate: &ScanGate) -> Vec<String> {
    let mut args: Vec<String> = [
        "image",
        "--quiet",
        "--scanners",
        "vuln",
        "--format",
        "json",
        "--output",
        REPORT_PATH,
        "--cache-dir",
        "/cache",
        "--timeout",
        "10m",
    ]
    .map(str::to_owned)
    .to_vec();
    for (flag, value) in [
        ("--server", &gate.server),
        ("--db-repository", &gate.db_repository),
        ("--java-db-repository", &gate.java_db_repository),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            args.extend([flag.to_owned(), v.to_owned()]);
        }
    }
    args.push(image.to_owned());
    args
}

/// The volume of pull secret `secret`: both keys a registry login can be under, each to its own
/// file. Optional, so a Secret with only one of the keys mounts (a missing key is skipped), and
/// so does a missing Secret (an empty directory: Trivy then pulls without that login and fails
/// with its registry's "unauthorized", as the kubelet's pull without it would).
fn pull_secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            items: Some(
                Format::ALL
                    .map(|format| KeyToPath {
                        key: format.secret_key().to_owned(),
                        path: format.file_name().to_owned(),
                        ..KeyToPath::default()
                    })
                    .to_vec(),
            ),
            default_mode: Some(0o440),
            optional: Some(true),
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..VolumeMount::default()
    }
}

/// The restricted container security context every FaceKey container runs with: no privilege
/// escalation, read-only root, non-root, no capabilities.
pub(super) fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(LinuxCapabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..LinuxCapabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// Requests and limits of one scan Job container, each of `[cpu, memory, ephemeral-storage]`.
/// Every resource has both, so the Job's pod is admitted in a namespace whose ResourceQuota
/// covers `limits.cpu` or ephemeral storage without a LimitRange to fill them in (the API
/// server refuses a pod missing one, and the scan would fail at its deadline).
fn resources(requests: [&str; 3], limits: [&str; 3]) -> ResourceRequirements {
    let map = |values: [&str; 3]| {
        ["cpu", "memory", "ephemeral-storage"]
            .into_iter()
            .zip(values)
            .map(|(name, value)| (name.to_owned(), Quantity(value.to_owned())))
            .collect::<BTreeMap<_, _>>()
    };
    ResourceRequirements {
        requests: Some(map(requests)),
        limits: Some(map(limits)),
        ..ResourceRequirements::default()
    }
}

/// A small helper container's resources (the login merge, the summary).
fn helper_resources() -> ResourceRequirements {
    resources(["50m", "64Mi", "16Mi"], ["500m", "256Mi", "64Mi"])
}

/// Trivy's resources. Its ephemeral-storage limit covers the pod's disk volumes (the 4 GiB
/// cache, 1 GiB of temporary files, the report): the kubelet holds a pod's volumes and logs to
/// the sum of its containers' limits.
fn trivy_resources() -> ResourceRequirements {
    resources(["500m", "512Mi", "1Gi"], ["1", "2Gi", "6Gi"])
}

/// How long a scan Job may run (`activeDeadlineSeconds`); the scan gate holds a report fresh
/// for at least this long ([`crate::scan::policy::MIN_REPORT_AGE`]).
pub const SCAN_JOB_DEADLINE_SECONDS: i64 = 900;

/// How long a finished scan Job is kept (`ttlSecondsAfterFinished`): the verdict lives in the
/// FaceKeyDeployment status, so the Job only has to outlive the reconciler's reading of it, and
/// a failed one its inspection. It also bounds the wait between failed attempts.
pub const SCAN_JOB_TTL_SECONDS: i32 = 3600;

/// The Job scanning `image` for `fkd`, whose summary container runs `operator_image`. `gate` is
/// the resolved gate ([`crate::policy_floor::ClusterPolicy::resolve_gate`]); an unset scanner
/// image falls back to [`DEFAULT_SCANNER_IMAGE`].
pub fn scan_job(
    fkd: &FaceKeyDeployment,
    image: &str,
    gate: &ScanGate,
    operator_image: &str,
) -> Result<Job> {
    let name = instance_name(fkd)?;
    let namespace = fkd.namespace().unwrap_or_else(|| "default".to_owned());
    let owner = Owner {
        name,
        namespace: &namespace,
        owner_ref: fkd.controller_owner_ref(&()),
    };
    let mut meta = owner.meta(labels::scan_job_name(name, image), Component::Scan);
    meta.annotations = Some(BTreeMap::from([(
        labels::SCAN_IMAGE_ANNOTATION.to_owned(),
        image.to_owned(),
    )]));
    let pod_labels = labels::common_labels(name, Component::Scan);
    let mut trivy_env = vec![
        EnvVar {
            name: "HOME".to_owned(),
            value: Some("/tmp".to_owned()),
            ..EnvVar::default()
        },
        EnvVar {
            name: "TRIVY_NO_PROGRESS".to_owned(),
            value: Some("true".to_owned()),
            ..EnvVar::default()
        },
    ];
    let mut trivy_mounts = vec![
        mount("report", "/report"),
        mount("cache", "/cache"),
        mount("tmp", "/tmp"),
    ];
    let mut volumes = vec![
        empty_dir("report", "64Mi"),
        empty_dir("cache", "4Gi"),
        empty_dir("tmp", "1Gi"),
    ];
    let pull_secrets = &fkd.spec.image_pull_secrets;
    // Trivy pulls the scanned image itself: it reads the registry logins from DOCKER_CONFIG, one
    // config.json merged from every pull secret by an init container.
    let mut init_containers = Vec::new();
    if !pull_secrets.is_empty() {
        let mut merge_mounts = Vec::new();
        let mut merge_args = vec!["merge-docker-config".to_owned()];
        for (i, secret) in pull_secrets.iter().enumerate() {
            let volume = format!("pull-secret-{i}");
            // The index keeps the paths distinct when a Secret is listed twice; the name makes
            // the merge's messages say which Secret a file is.
            let dir = format!("{PULL_SECRETS_DIR}/{i}-{}", secret.name);
            volumes.push(pull_secret_volume(&volume, &secret.name));
            merge_mounts.push(VolumeMount {
                read_only: Some(true),
                ..mount(&volume, &dir)
            });
            merge_args.extend(["--input".to_owned(), dir]);
        }
        merge_mounts.push(mount("docker-config", DOCKER_CONFIG_DIR));
        merge_args.extend(
            [
                "--output",
                DOCKER_CONFIG_FILE,
                "--termination-log",
                "/dev/termination-log",
            ]
            .map(str::to_owned),
        );
        // Logins only: in memory, never on the node's disk.
        volumes.push(Volume {
            name: "docker-config".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".to_owned()),
                size_limit: Some(Quantity("1Mi".to_owned())),
            }),
            ..Volume::default()
        });
        init_containers.push(Container {
            name: DOCKER_CONFIG_CONTAINER.to_owned(),
            image: Some(operator_image.to_owned()),
            args: Some(merge_args),
            termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
            resources: Some(helper_resources()),
            security_context: Some(restricted()),
            volume_mounts: Some(merge_mounts),
            ..Container::default()
        });
        trivy_mounts.push(VolumeMount {
            read_only: Some(true),
            ..mount("docker-config", DOCKER_CONFIG_DIR)
        });
        trivy_env.push(EnvVar {
            name: "DOCKER_CONFIG".to_owned(),
            value: Some(DOCKER_CONFIG_DIR.to_owned()),
            ..EnvVar::default()
        });
    }
    let trivy = Container {
        name: "trivy".to_owned(),
        image: Some(
            gate.scanner_image
                .clone()
                .unwrap_or_else(|| DEFAULT_SCANNER_IMAGE.to_owned()),
        ),
        command: Some(vec!["trivy".to_owned()]),
        args: Some(trivy_args(image, gate)),
        env: Some(trivy_env),
        // Trivy's error output becomes the termination message the ScanFailed reason quotes.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        resources: Some(trivy_resources()),
        security_context: Some(restricted()),
        volume_mounts: Some(trivy_mounts),
        ..Container::default()
    };
    init_containers.push(trivy);
    let summary = Container {
        name: SCAN_SUMMARY_CONTAINER.to_owned(),
        image: Some(operator_image.to_owned()),
        args: Some(
            [
                "scan-summary",
                "--report",
                REPORT_PATH,
                "--image",
                image,
                "--output",
                "/dev/termination-log",
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        termination_message_policy: Some("File".to_owned()),
        resources: Some(helper_resources()),
        security_context: Some(restricted()),
        volume_mounts: Some(vec![VolumeMount {
            read_only: Some(true),
            ..mount("report", "/report")
        }]),
        ..Container::default()
    };
    let pod_spec = PodSpec {
        restart_policy: Some("Never".to_owned()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            fs_group: Some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        // The kubelet pulls the scanner and summary images with them.
        image_pull_secrets: Some(pull_secrets.clone()).filter(|s| !s.is_empty()),
        init_containers: Some(init_containers),
        containers: vec![summary],
        volumes: Some(volumes),
        ..PodSpec::default()
    };
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.insert(
            labels::SCAN_TEMPLATE_ANNOTATION.to_owned(),
            template_hash(&pod_spec),
        );
    }
    Ok(Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(1),
            active_deadline_seconds: Some(SCAN_JOB_DEADLINE_SECONDS),
            ttl_seconds_after_finished: Some(SCAN_JOB_TTL_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    // A mesh's sidecar never exits, so the Job would never complete; and the
                    // result is read only from a pod that runs exactly this template.
                    annotations: Some(BTreeMap::from([
                        ("sidecar.istio.io/inject".to_owned(), "false".to_owned()),
                        ("linkerd.io/inject".to_owned(), "disabled".to_owned()),
                    ])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

/// The [`labels::SCAN_TEMPLATE_ANNOTATION`] value of a scan Job whose pod runs `spec`: a hash of
/// the spec as the operator writes it.
fn template_hash(spec: &PodSpec) -> String {
    labels::short_hash(&serde_json::to_vec(spec).unwrap_or_default(), 16)
}
