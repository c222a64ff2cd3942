//! The runtime as a native sidecar of an application pod: the init container (with
//! `restartPolicy: Always`) and the volumes the admission webhook adds to a pod annotated
//! `facekey.dev/inject: <name>`.
//!
//! It is the runtime Deployment's container, re-targeted at someone else's pod: the same
//! configuration (thresholds, models, store, keys, alert mail), written as `env` instead of through
//! the `<name>-config` ConfigMap's `envFrom` so the injected pod reads as what it runs; the API
//! listens on `127.0.0.1:<sidecar.port>` only and the UI is off; the keyless health and metrics
//! listener on `<sidecar.metricsPort>` serves the kubelet's probes and Prometheus. The startup
//! probe asks `/readyz`, which answers 200 only once every model is loaded: the kubelet starts the
//! application's containers after a native sidecar has started, so the application never runs
//! before its verifier can answer.

use std::collections::BTreeMap;

use facekey_crds::{FaceKeyDeploymentSpec, Sidecar};
use k8s_openapi::api::core::v1::{
    Capabilities as LinuxCapabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    HTTPGetAction, LocalObjectReference, Probe, SeccompProfile, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use facekey_settings::env;

use super::{Owner, runtime};

/// Name of the injected init container; a pod that has a container of this name is already
/// injected and is left alone.
pub const SIDECAR_CONTAINER: &str = "facekey-runtime";
/// Label put on injected pods, valued with the FaceKeyDeployment's name: the PodMonitor and the
/// sidecar counter select pods by it.
pub const SIDECAR_LABEL: &str = "facekey.dev/sidecar";
/// Annotation put on injected pods recording the image injected (`repository@sha256:…`).
pub const SIDECAR_IMAGE_ANNOTATION: &str = "facekey.dev/sidecar-image";
/// Annotation put on injected pods recording [`SidecarParts::config_hash`]: the settings the
/// sidecar was admitted with, so a pod still running older thresholds, lockout or alerting
/// settings counts as outdated as one running an older image does.
pub const SIDECAR_CONFIG_ANNOTATION: &str = "facekey.dev/sidecar-config";
/// Prefix of every volume the sidecar adds, so they cannot be mistaken for the application's.
pub const VOLUME_PREFIX: &str = "facekey-";
/// Name of the sidecar's API port (container port names must be unique within a pod).
pub const SIDECAR_PORT_NAME: &str = "facekey-http";
/// Name of the sidecar's health and metrics port; the PodMonitor scrapes it by this name.
pub const SIDECAR_METRICS_PORT_NAME: &str = "facekey-metrics";
/// Mode of the sidecar's Secret files. The runtime Deployment uses 0440 with its pod's
/// `fsGroup`; an application pod's `fsGroup` is the application's (often unset, leaving the files
/// `root:root`), so the files are world-readable within the pod's own mount namespace instead.
/// Any container of the pod could mount the same Secret, so this hides nothing it could not read.
const SIDECAR_SECRET_MODE: i32 = 0o444;

/// Where Kubernetes mounts a pod's service-account token into every container that has nothing
/// mounted there.
pub const SERVICE_ACCOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The empty volume mounted over [`SERVICE_ACCOUNT_PATH`] in the sidecar: the runtime parses
/// images from untrusted callers and needs no API access, so the application's token is kept
/// out of its reach (the ServiceAccount admission plugin skips a container with a mount there).
pub const NO_TOKEN_VOLUME: &str = "facekey-no-service-account-token";

/// Everything the webhook adds to a pod.
#[derive(Clone, Debug, PartialEq)]
pub struct SidecarParts {
    /// The init container with `restartPolicy: Always`.
    pub container: Container,
    /// Volumes it mounts, each named `facekey-…`.
    pub volumes: Vec<Volume>,
    /// The FaceKeyDeployment's registry credentials (for pulling the runtime image).
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

impl SidecarParts {
    /// A short hash of everything injected but the image (the container's settings, its
    /// volumes and pull secrets): equal hashes, same settings.
    pub fn config_hash(&self) -> String {
        let mut container = self.container.clone();
        container.image = None;
        let text = serde_json::to_string(&(&container, &self.volumes, &self.image_pull_secrets))
            .unwrap_or_default();
        crate::labels::short_hash(text.as_bytes(), 16)
    }
}

/// Default resources of the sidecar: `spec.sidecar.resources`, else `spec.resources`, else the
/// runtime's defaults.
fn resources(
    spec: &FaceKeyDeploymentSpec,
    sidecar: &Sidecar,
) -> k8s_openapi::api::core::v1::ResourceRequirements {
    sidecar
        .resources
        .clone()
        .or_else(|| spec.resources.clone())
        .unwrap_or_else(runtime::default_resources)
}

fn probe(path: &str, port: i32, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// The environment of the sidecar: the runtime Deployment's configuration with the listeners
/// moved (API on loopback, health/metrics on the sidecar's port) and the UI off.
pub fn sidecar_env(spec: &FaceKeyDeploymentSpec, sidecar: &Sidecar) -> Vec<EnvVar> {
    let mut data: BTreeMap<String, String> = runtime::config_data(spec);
    data.remove(runtime::WEIGHTS_FILE);
    data.insert(
        env::LISTEN.to_owned(),
        format!("127.0.0.1:{}", sidecar.port),
    );
    data.insert(
        env::METRICS_LISTEN.to_owned(),
        format!("[::]:{}", sidecar.metrics_port),
    );
    // No NetworkPolicy of the operator's covers application pods, so any pod may read this
    // port: without the per-attempt score histograms, whose sums around one's own attempt give
    // its exact score.
    data.insert(env::METRICS_LISTEN_PRIVATE.to_owned(), "off".to_owned());
    data.insert(env::UI_ENABLED.to_owned(), "false".to_owned());
    // The sidecar's own resources size its sessions, not the Deployment's.
    data.remove(env::SESSIONS_PER_MODEL);
    data.remove(env::MAX_INFLIGHT);
    // The kubelet stops a native sidecar after the application's containers: nothing sends to
    // it once it is told to stop, so no delay (it would only eat the application's grace period).
    data.remove(env::SHUTDOWN_DELAY_SECS);
    for (name, value) in runtime::capacity_env(&resources(spec, sidecar), spec) {
        data.insert(name.to_owned(), value);
    }
    let mut vars: Vec<EnvVar> = data
        .into_iter()
        .map(|(name, value)| EnvVar {
            name,
            value: Some(value),
            ..EnvVar::default()
        })
        .collect();
    vars.extend(runtime::secret_env(spec));
    vars
}

/// The sidecar of FaceKeyDeployment `name` in `namespace` running `image` (the admitted image,
/// by digest: the caller checks that).
pub fn sidecar_parts(
    name: &str,
    namespace: &str,
    spec: &FaceKeyDeploymentSpec,
    sidecar: &Sidecar,
    image: &str,
) -> SidecarParts {
    let owner = Owner {
        name,
        namespace,
        owner_ref: None,
    };
    let (volumes, mounts) = runtime::volumes(&owner, spec);
    let mut volumes: Vec<Volume> = volumes
        .into_iter()
        .map(|mut v| {
            v.name = format!("{VOLUME_PREFIX}{}", v.name);
            if let Some(secret) = v.secret.as_mut() {
                secret.default_mode = Some(SIDECAR_SECRET_MODE);
            }
            v
        })
        .collect();
    let mut mounts: Vec<VolumeMount> = mounts
        .into_iter()
        .map(|mut m| {
            m.name = format!("{VOLUME_PREFIX}{}", m.name);
            m
        })
        .collect();
    volumes.push(Volume {
        name: NO_TOKEN_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".to_owned()),
            size_limit: Some(Quantity("1Ki".to_owned())),
        }),
        ..Volume::default()
    });
    mounts.push(VolumeMount {
        name: NO_TOKEN_VOLUME.to_owned(),
        mount_path: SERVICE_ACCOUNT_PATH.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    });
    let container = Container {
        name: SIDECAR_CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        // A native sidecar: started before the application's containers, kept running beside
        // them, stopped after them.
        restart_policy: Some("Always".to_owned()),
        ports: Some(vec![
            ContainerPort {
                name: Some(SIDECAR_PORT_NAME.to_owned()),
                container_port: sidecar.port,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some(SIDECAR_METRICS_PORT_NAME.to_owned()),
                container_port: sidecar.metrics_port,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
        env: Some(sidecar_env(spec, sidecar)),
        resources: Some(resources(spec, sidecar)),
        // `/readyz` is 200 once the models are loaded: the application starts after that
        // (up to 3 minutes: 90 × 2 s).
        startup_probe: Some(probe("/readyz", sidecar.metrics_port, 2, 90)),
        readiness_probe: Some(probe("/readyz", sidecar.metrics_port, 5, 3)),
        liveness_probe: Some(probe("/healthz", sidecar.metrics_port, 10, 3)),
        // The pod's security context is the application's: the sidecar carries its own.
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(runtime::RUN_AS),
            run_as_group: Some(runtime::RUN_AS),
            capabilities: Some(LinuxCapabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..LinuxCapabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    };
    SidecarParts {
        container,
        volumes,
        image_pull_secrets: super::pull_secrets(spec),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env_of(parts: &SidecarParts) -> BTreeMap<String, Option<String>> {
        parts
            .container
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value))
            .collect()
    }

    #[test]
    fn listens_on_loopback_without_ui_and_probes_the_metrics_port() {
        let spec: FaceKeyDeploymentSpec = serde_json::from_value(serde_json::json!({
            "image": "r/rt:1",
            "models": {"thresholds": {"auth": 0.7, "match": 0.6}},
            "ui": {"enabled": true},
        }))
        .unwrap();
        let sidecar = Sidecar {
            port: 7300,
            metrics_port: 7301,
            ..Sidecar::default()
        };
        let parts = sidecar_parts("fk", "team", &spec, &sidecar, "r/rt@sha256:ab");
        let env = env_of(&parts);
        assert_eq!(env[env::LISTEN].as_deref(), Some("127.0.0.1:7300"));
        assert_eq!(env[env::METRICS_LISTEN].as_deref(), Some("[::]:7301"));
        assert_eq!(env[env::UI_ENABLED].as_deref(), Some("false"));
        assert_eq!(env[env::THRESHOLD].as_deref(), Some("0.7"));
        assert_eq!(env[env::MATCH_THRESHOLD].as_deref(), Some("0.6"));
        let c = &parts.container;
        assert_eq!(c.restart_policy.as_deref(), Some("Always"));
        let startup = c.startup_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(startup.path.as_deref(), Some("/readyz"));
        assert_eq!(startup.port, IntOrString::Int(7301));
        // Every volume is prefixed and every mount names one of them.
        let names: Vec<&str> = parts.volumes.iter().map(|v| v.name.as_str()).collect();
        assert!(
            names.iter().all(|n| n.starts_with(VOLUME_PREFIX)),
            "{names:?}"
        );
        for m in c.volume_mounts.as_ref().unwrap() {
            assert!(names.contains(&m.name.as_str()), "{}", m.name);
        }
        // The generated API keys Secret is mounted, readable by the sidecar's UID.
        let keys = parts
            .volumes
            .iter()
            .find(|v| v.name == "facekey-api-keys")
            .unwrap();
        let secret = keys.secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("fk-api-keys"));
        assert_eq!(secret.default_mode, Some(0o444));
        // The application's service-account token is not mounted into the sidecar: an empty
        // read-only volume sits where Kubernetes would put it.
        let over_token = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.mount_path == SERVICE_ACCOUNT_PATH)
            .unwrap();
        assert_eq!(over_token.read_only, Some(true));
        let volume = parts
            .volumes
            .iter()
            .find(|v| v.name == over_token.name)
            .unwrap();
        assert!(
            volume.empty_dir.is_some() && volume.secret.is_none() && volume.projected.is_none()
        );
    }

    #[test]
    fn resources_fall_back_from_sidecar_to_spec_to_defaults() {
        let mut spec = FaceKeyDeploymentSpec::default();
        let sidecar = Sidecar::default();
        let defaults = sidecar_parts("fk", "ns", &spec, &sidecar, "i@sha256:1");
        assert_eq!(
            defaults.container.resources,
            Some(runtime::default_resources())
        );
        let small: k8s_openapi::api::core::v1::ResourceRequirements =
            serde_json::from_value(serde_json::json!({"requests": {"cpu": "100m"}})).unwrap();
        spec.resources = Some(small.clone());
        let from_spec = sidecar_parts("fk", "ns", &spec, &sidecar, "i@sha256:1");
        assert_eq!(from_spec.container.resources.as_ref(), Some(&small));
        let tiny: k8s_openapi::api::core::v1::ResourceRequirements =
            serde_json::from_value(serde_json::json!({"requests": {"cpu": "50m"}})).unwrap();
        let own = Sidecar {
            resources: Some(tiny.clone()),
            ..Sidecar::default()
        };
        let from_sidecar = sidecar_parts("fk", "ns", &spec, &own, "i@sha256:1");
        assert_eq!(from_sidecar.container.resources.as_ref(), Some(&tiny));
    }
}
