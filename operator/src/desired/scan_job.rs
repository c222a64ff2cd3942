//! The Trivy scan Job of one image reference.
//!
//! The pod runs `trivy image --format json` as an init container writing the full report to a
//! shared emptyDir; the main container is the operator's own image running
//! `facekey-operator scan-summary`, which condenses the report (see [`crate::scan::ScanSummary`])
//! and writes it to `/dev/termination-log`. The reconciler reads it back from the pod's
//! `state.terminated.message`: no log access and no extra storage needed, and the 4 KiB limit of
//! termination messages is respected by construction.

use std::collections::BTreeMap;

use facekey_crds::{FaceKeyDeployment, ScanGate};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities as LinuxCapabilities, Container, EnvVar, KeyToPath, PodSecurityContext, PodSpec,
    PodTemplateSpec, ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::runtime::empty_dir;
use super::{Owner, Result, instance_name};
use crate::labels::{self, Component};
use crate::policy_floor::DEFAULT_SCANNER_IMAGE;

/// Name of the container whose termination message carries the scan summary.
pub const SCAN_SUMMARY_CONTAINER: &str = "summary";
const REPORT_PATH: &str = "/report/report.json";
/// Where Trivy finds registry credentials (`DOCKER_CONFIG`): the first `spec.imagePullSecrets`.
const DOCKER_CONFIG_DIR: &str = "/docker-config";

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

fn resources(cpu: &str, memory: &str, limit: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(limit.to_owned()),
        )])),
        ..ResourceRequirements::default()
    }
}

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
    // Trivy pulls the scanned image itself: it reads the registry login from DOCKER_CONFIG.
    if let Some(first) = pull_secrets.first() {
        volumes.push(Volume {
            name: "docker-config".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(first.name.clone()),
                items: Some(vec![KeyToPath {
                    key: ".dockerconfigjson".to_owned(),
                    path: "config.json".to_owned(),
                    ..KeyToPath::default()
                }]),
                default_mode: Some(0o440),
                optional: Some(false),
            }),
            ..Volume::default()
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
        resources: Some(resources("500m", "512Mi", "2Gi")),
        security_context: Some(restricted()),
        volume_mounts: Some(trivy_mounts),
        ..Container::default()
    };
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
        resources: Some(resources("50m", "64Mi", "256Mi")),
        security_context: Some(restricted()),
        volume_mounts: Some(vec![VolumeMount {
            read_only: Some(true),
            ..mount("report", "/report")
        }]),
        ..Container::default()
    };
    Ok(Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(1),
            active_deadline_seconds: Some(900),
            // The verdict is kept in the FaceKeyDeployment status; the Job only has to live
            // until the reconciler has read it.
            ttl_seconds_after_finished: Some(3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
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
                    init_containers: Some(vec![trivy]),
                    containers: vec![summary],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}
