//! The injection decision and its JSON patch, as pure functions of the pod and the
//! FaceKeyDeployment it names (no client, no clock): what the webhook answers for a pod, what
//! `render --inject` prints, what the tests and the admission benchmark exercise.

use facekey_crds::{FaceKeyDeployment, INJECT_ANNOTATION, SidecarFailurePolicy};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use serde_json::{Value, json};

use crate::desired::{
    SIDECAR_CONFIG_ANNOTATION, SIDECAR_CONTAINER, SIDECAR_IMAGE_ANNOTATION, SIDECAR_LABEL,
    SidecarParts, sidecar_parts,
};

/// Annotation by which a pod whose template asks for injection opts out of it (`"true"`), e.g.
/// one workload of a chart that annotates every pod.
pub const OPT_OUT_ANNOTATION: &str = "facekey.dev/inject-disabled";

/// Why a pod that asked for the sidecar did not get it (the Event reason, in UpperCamelCase).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotInjectedReason {
    /// No FaceKeyDeployment of that name in the pod's namespace.
    UnknownResource,
    /// The resource has no `spec.sidecar`, or `spec.sidecar.enabled: false`.
    SidecarDisabled,
    /// No image admitted yet (scan pending, blocked or failed, never reconciled).
    NoAdmittedImage,
    /// The admitted image is a tag, not `repository@sha256:…` (scan gate disabled).
    ImageNotPinned,
    /// `spec.store.embedded`: its ReadWriteOnce volume serves one pod, not every application pod.
    EmbeddedStore,
    /// An application container already uses the sidecar's port or metrics port.
    PortConflict,
    /// The pod already has a volume with one of the sidecar's volume names.
    VolumeConflict,
    /// `hostNetwork: true`: 127.0.0.1 would be the node's loopback.
    HostNetwork,
    /// `spec.os.name: windows`: the sidecar's security context is forbidden there and its image
    /// is Linux-only.
    WindowsPod,
    /// Pod-level `spec.resources` requests that the containers' requests with the sidecar's
    /// would exceed: the API server would refuse the patched pod, whatever `failurePolicy`.
    PodLevelResources,
    /// A LimitRange of the namespace would refuse the sidecar, and with it the whole pod.
    LimitRange,
    /// A ResourceQuota of the namespace would refuse the pod with the sidecar (a CPU or memory
    /// value it tracks that the sidecar does not set, or not enough left), not without it.
    ResourceQuota,
    /// The FaceKeyDeployment exists but this operator cannot decode its spec
    /// ([`crate::decode`]): answered by its own `sidecar.failurePolicy`, read alone.
    ResourceUndecodable,
    /// The FaceKeyDeployment is being deleted (`metadata.deletionTimestamp`): the ConfigMap and
    /// Secrets the sidecar mounts are its children and go with it, so an injected pod would
    /// wait in ContainerCreating (FailedMount) for good.
    ResourceDeleting,
    /// The FaceKeyDeployment could not be read from the API server (an error, or no answer in
    /// time): answered as an unknown resource is, by the operator's `--sidecar-unknown-resource`.
    LookupFailed,
}

impl NotInjectedReason {
    /// Every reason, for series created at 0 before any review.
    pub const ALL: [NotInjectedReason; 15] = [
        NotInjectedReason::UnknownResource,
        NotInjectedReason::SidecarDisabled,
        NotInjectedReason::NoAdmittedImage,
        NotInjectedReason::ImageNotPinned,
        NotInjectedReason::EmbeddedStore,
        NotInjectedReason::PortConflict,
        NotInjectedReason::VolumeConflict,
        NotInjectedReason::HostNetwork,
        NotInjectedReason::WindowsPod,
        NotInjectedReason::PodLevelResources,
        NotInjectedReason::LimitRange,
        NotInjectedReason::ResourceQuota,
        NotInjectedReason::ResourceUndecodable,
        NotInjectedReason::ResourceDeleting,
        NotInjectedReason::LookupFailed,
    ];

    /// The reason as an Event reason and a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            NotInjectedReason::UnknownResource => "UnknownResource",
            NotInjectedReason::SidecarDisabled => "SidecarDisabled",
            NotInjectedReason::NoAdmittedImage => "NoAdmittedImage",
            NotInjectedReason::ImageNotPinned => "ImageNotPinned",
            NotInjectedReason::EmbeddedStore => "EmbeddedStore",
            NotInjectedReason::PortConflict => "PortConflict",
            NotInjectedReason::VolumeConflict => "VolumeConflict",
            NotInjectedReason::HostNetwork => "HostNetwork",
            NotInjectedReason::WindowsPod => "WindowsPod",
            NotInjectedReason::PodLevelResources => "PodLevelResources",
            NotInjectedReason::LimitRange => "LimitRange",
            NotInjectedReason::ResourceQuota => "ResourceQuota",
            NotInjectedReason::ResourceUndecodable => "ResourceUndecodable",
            NotInjectedReason::ResourceDeleting => "ResourceDeleting",
            NotInjectedReason::LookupFailed => "LookupFailed",
        }
    }
}

/// What admission does with one pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// The pod does not ask for a sidecar: admitted unchanged, nothing reported.
    NotRequested,
    /// The pod carries [`OPT_OUT_ANNOTATION`]: admitted unchanged, nothing reported.
    OptedOut,
    /// The pod already has the sidecar container: admitted unchanged (injection is idempotent).
    AlreadyInjected,
    /// The sidecar is added by `patch` (RFC 6902 operations).
    Inject {
        /// The FaceKeyDeployment named by the pod.
        resource: String,
        /// The image injected (`repository@sha256:…`).
        image: String,
        /// The JSON patch operations.
        patch: Vec<Value>,
    },
    /// The sidecar cannot be injected: the pod is refused (`refuse`) or admitted unchanged with
    /// a warning, and an Event says why either way.
    NotInjected {
        /// The FaceKeyDeployment named by the pod.
        resource: String,
        /// Why.
        reason: NotInjectedReason,
        /// A sentence for the user (the refusal message or the warning).
        message: String,
        /// Refused (`failurePolicy: Fail`) rather than admitted unchanged.
        refuse: bool,
    },
}

/// Settings of the decision that are the operator's, not any resource's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectOptions {
    /// What happens to a pod naming a FaceKeyDeployment that does not exist (there is no
    /// resource whose `failurePolicy` could say): the operator's `--sidecar-unknown-resource`.
    pub unknown_resource: SidecarFailurePolicy,
}

impl Default for InjectOptions {
    fn default() -> Self {
        Self {
            unknown_resource: SidecarFailurePolicy::Fail,
        }
    }
}

/// The FaceKeyDeployment a pod asks for (`facekey.dev/inject`), if any, unless it opted out.
pub fn requested_resource(pod: &Pod) -> Option<&str> {
    let annotations = pod.metadata.annotations.as_ref()?;
    let name = annotations.get(INJECT_ANNOTATION)?.trim();
    (!name.is_empty()).then_some(name)
}

/// Whether the pod carries the opt-out annotation.
pub fn opted_out(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(OPT_OUT_ANNOTATION))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Every container of the pod: init, regular and ephemeral.
fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .chain(spec.map(|s| s.containers.iter()).into_iter().flatten())
}

/// The admitted image of `fkd` if it may be injected: the last-known-good image, by digest, that
/// passed a scan while the gate is on.
pub(crate) fn admitted_image(fkd: &FaceKeyDeployment) -> Result<&str, (NotInjectedReason, String)> {
    let name = fkd.metadata.name.as_deref().unwrap_or("?");
    let Some(image) = crate::scan_gate::last_known_good(fkd.status.as_ref()) else {
        return Err((
            NotInjectedReason::NoAdmittedImage,
            format!(
                "FaceKeyDeployment {name} has no admitted image yet (its scan is pending, \
                 blocked or failed): an unscanned image is never injected"
            ),
        ));
    };
    // With the gate on, the image must have passed a scan: one that ran while the gate was
    // off, then blocked or pending once it was turned on, keeps serving the Deployment but
    // reaches no new pod. Off only when both the spec and the reconciler's last run say so (a
    // policy floor may force it on; a spec that just turned it on is not reconciled yet).
    let status = fkd.status.as_ref();
    let spec_off = fkd.spec.scan_gate.as_ref().is_some_and(|g| !g.enabled);
    let gate_off = spec_off
        && status.is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == facekey_crds::condition::SCAN_GATE_PASSED && c.reason == "GateDisabled"
            })
        });
    if !gate_off
        && !crate::scan_gate::scan_admitted(
            image,
            status.map(|s| s.scans.as_slice()).unwrap_or_default(),
        )
    {
        return Err((
            NotInjectedReason::NoAdmittedImage,
            format!(
                "FaceKeyDeployment {name} runs {image}, which no scan has passed (it ran while \
                 the scan gate was off, and its scan since is pending, blocked or failed): an \
                 unscanned image is never injected"
            ),
        ));
    }
    if !image.contains("@sha256:") {
        return Err((
            NotInjectedReason::ImageNotPinned,
            format!(
                "FaceKeyDeployment {name} runs {image}, not pinned by digest (scan gate \
                 disabled?): set spec.image to repository@sha256:… or enable the scan gate"
            ),
        ));
    }
    Ok(image)
}

/// `decision` for a pod naming a FaceKeyDeployment this operator cannot decode (`undecodable`):
/// where [`decide`] found no resource to inject from, the answer is `ResourceUndecodable` under
/// the resource's own failure policy rather than `UnknownResource` (it exists); every other
/// decision (not requested, opted out, already injected) stands.
pub fn undecodable(
    decision: Decision,
    namespace: &str,
    undecodable: &crate::decode::Undecodable,
) -> Decision {
    match decision {
        Decision::NotInjected {
            resource,
            reason: NotInjectedReason::UnknownResource,
            ..
        } => Decision::NotInjected {
            message: format!(
                "FaceKeyDeployment {namespace}/{resource} cannot be read by this operator ({}); \
                 no sidecar until its spec or the operator changes",
                undecodable.reason
            ),
            resource,
            reason: NotInjectedReason::ResourceUndecodable,
            refuse: undecodable.sidecar_failure_policy == SidecarFailurePolicy::Fail,
        },
        other => other,
    }
}

/// `decision` for a pod whose FaceKeyDeployment could not be looked up (`error`): where
/// [`decide`], given no resource, answered `UnknownResource`, the answer is `LookupFailed` under
/// the same policy (the operator's `--sidecar-unknown-resource`: whether the resource exists is
/// not known either); every other decision (not requested, opted out, already injected) stands.
pub fn lookup_failed(decision: Decision, namespace: &str, error: &str) -> Decision {
    match decision {
        Decision::NotInjected {
            resource,
            reason: NotInjectedReason::UnknownResource,
            refuse,
            ..
        } => Decision::NotInjected {
            message: format!(
                "FaceKeyDeployment {namespace}/{resource} could not be read from the API server \
                 ({error}); answered as for an unknown resource (the operator's \
                 --sidecar-unknown-resource)"
            ),
            resource,
            reason: NotInjectedReason::LookupFailed,
            refuse,
        },
        other => other,
    }
}

/// Decide what admission does with `pod`, created in `namespace`, given the FaceKeyDeployment
/// it names (`None`: not found).
pub fn decide(
    pod: &Pod,
    namespace: &str,
    fkd: Option<&FaceKeyDeployment>,
    options: InjectOptions,
) -> Decision {
    let Some(resource) = requested_resource(pod) else {
        return Decision::NotRequested;
    };
    if opted_out(pod) {
        return Decision::OptedOut;
    }
    if all_containers(pod).any(|c| c.name == SIDECAR_CONTAINER) {
        return Decision::AlreadyInjected;
    }
    let resource = resource.to_owned();
    let not_injected =
        |reason, message: String, policy: SidecarFailurePolicy| Decision::NotInjected {
            resource: resource.clone(),
            reason,
            message,
            refuse: policy == SidecarFailurePolicy::Fail,
        };
    let Some(fkd) = fkd else {
        return not_injected(
            NotInjectedReason::UnknownResource,
            format!(
                "pod asks for the FaceKey sidecar of FaceKeyDeployment {namespace}/{resource} \
                 ({INJECT_ANNOTATION}), which does not exist"
            ),
            options.unknown_resource,
        );
    };
    let Some(sidecar) = fkd.spec.sidecar.as_ref().filter(|s| s.enabled) else {
        let policy = fkd
            .spec
            .sidecar
            .as_ref()
            .map_or(SidecarFailurePolicy::Ignore, |s| s.failure_policy);
        return not_injected(
            NotInjectedReason::SidecarDisabled,
            format!(
                "FaceKeyDeployment {namespace}/{resource} does not offer a sidecar \
                 (spec.sidecar is unset or disabled)"
            ),
            policy,
        );
    };
    let policy = sidecar.failure_policy;
    if let Some(since) = &fkd.metadata.deletion_timestamp {
        return not_injected(
            NotInjectedReason::ResourceDeleting,
            format!(
                "FaceKeyDeployment {namespace}/{resource} is being deleted (since {}): the \
                 ConfigMap and Secrets the sidecar mounts go with it, and the pod would never \
                 start",
                since.0
            ),
            policy,
        );
    }
    let image = match admitted_image(fkd) {
        Ok(image) => image,
        Err((reason, message)) => return not_injected(reason, message, policy),
    };
    if fkd
        .spec
        .store
        .as_ref()
        .is_some_and(|s| s.embedded.is_some())
    {
        return not_injected(
            NotInjectedReason::EmbeddedStore,
            format!(
                "FaceKeyDeployment {namespace}/{resource} keeps enrolments on an embedded \
                 volume that serves one pod: sidecars need store.postgres (or no store)"
            ),
            policy,
        );
    }
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.host_network == Some(true) {
        return not_injected(
            NotInjectedReason::HostNetwork,
            "the pod uses hostNetwork: a sidecar listening on 127.0.0.1 would share the \
             node's loopback"
                .to_owned(),
            policy,
        );
    }
    if spec.os.as_ref().is_some_and(|os| os.name == "windows") {
        return not_injected(
            NotInjectedReason::WindowsPod,
            "the pod runs on Windows (spec.os.name): the sidecar's image is Linux-only and its \
             security context (seccomp, runAsUser, read-only root) is forbidden there"
                .to_owned(),
            policy,
        );
    }
    let parts = sidecar_parts(resource.as_str(), namespace, &fkd.spec, sidecar, image);
    if let Some(short) = pod_level_shortfall(&spec, &parts.container) {
        return not_injected(
            NotInjectedReason::PodLevelResources,
            format!(
                "the pod's spec.resources requests {short}: the API server refuses a pod whose \
                 containers request more than its pod-level requests; raise them by the \
                 sidecar's (spec.sidecar.resources of {namespace}/{resource})"
            ),
            policy,
        );
    }
    let taken: Vec<(String, i32)> = all_containers(pod)
        .flat_map(|c| {
            c.ports
                .iter()
                .flatten()
                .map(|p| (c.name.clone(), p.container_port))
        })
        .collect();
    if let Some((container, port)) = taken
        .iter()
        .find(|(_, p)| *p == sidecar.port || *p == sidecar.metrics_port)
    {
        return not_injected(
            NotInjectedReason::PortConflict,
            format!(
                "container {container} already uses port {port}; the sidecar of \
                 {namespace}/{resource} needs ports {} and {} (spec.sidecar.port, metricsPort)",
                sidecar.port, sidecar.metrics_port
            ),
            policy,
        );
    }
    let existing: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    if let Some(clash) = parts
        .volumes
        .iter()
        .find(|v| existing.contains(&v.name.as_str()))
    {
        return not_injected(
            NotInjectedReason::VolumeConflict,
            format!(
                "the pod already has a volume named {}, which the sidecar needs",
                clash.name
            ),
            policy,
        );
    }
    let patch = patch_ops(pod, &parts, &resource, image);
    Decision::Inject {
        resource,
        image: image.to_owned(),
        patch,
    }
}

/// Where the pod's pod-level requests (`spec.resources`) would fall short of its containers'
/// requests with `sidecar`'s added first among its init containers, in words (`"cpu 1 < 1.5
/// cores"`); `None` when they do not, or are not set. The requests, as written, are totalled as
/// the API server does (Kubernetes' `AggregateContainerRequests`, [`super::limit_range::pod_totals`]):
/// other native sidecars (a mesh's) add to the sum, and an ordinary init container runs beside
/// the injected sidecar.
fn pod_level_shortfall(spec: &PodSpec, sidecar: &Container) -> Option<String> {
    use super::limit_range::{Held, pod_totals};
    use crate::desired::capacity::parse_quantity;
    let pod = spec.resources.as_ref()?.requests.as_ref()?;
    // The pod as the patch leaves it: the sidecar first among the init containers.
    let containers: Vec<Held> = spec.containers.iter().map(Held::as_written).collect();
    let init: Vec<Held> = std::iter::once(sidecar)
        .chain(spec.init_containers.iter().flatten())
        .map(Held::as_written)
        .collect();
    let (requests, _) = pod_totals(&containers, &init);
    [("cpu", "cores"), ("memory", "bytes")]
        .into_iter()
        .find_map(|(name, unit)| {
            let given = &pod.get(name)?.0;
            let limit = parse_quantity(given)?;
            let needed = requests.get(name).copied().unwrap_or(0.0);
            (needed > limit * (1.0 + 1e-9))
                .then(|| format!("{name} {given} < {needed} {unit} with the sidecar"))
        })
}

/// `decision` about `pod` held to the LimitRanges (`ranges`) and ResourceQuotas (`quotas`) of
/// its namespace: an injection one of them would refuse the pod for (the whole pod, whatever
/// the failure policy) becomes `LimitRange` or `ResourceQuota`, under the resource's
/// `sidecar.failurePolicy`; every other decision stands.
pub fn within_namespace_bounds(
    decision: Decision,
    pod: Option<&Pod>,
    namespace: &str,
    fkd: Option<&FaceKeyDeployment>,
    ranges: &[k8s_openapi::api::core::v1::LimitRange],
    quotas: &[k8s_openapi::api::core::v1::ResourceQuota],
) -> Decision {
    let Decision::Inject {
        resource, image, ..
    } = &decision
    else {
        return decision;
    };
    let (Some(fkd), false) = (fkd, ranges.is_empty() && quotas.is_empty()) else {
        return decision;
    };
    let Some(sidecar) = fkd.spec.sidecar.as_ref() else {
        return decision;
    };
    let parts = sidecar_parts(resource, namespace, &fkd.spec, sidecar, image);
    let spec = pod.and_then(|p| p.spec.clone()).unwrap_or_default();
    let refused = super::limit_range::refusal(&parts.container, &spec, ranges)
        .map(|why| {
            (
                NotInjectedReason::LimitRange,
                format!(
                    "{why}: the API server would refuse the whole pod; size \
                     spec.sidecar.resources of {namespace}/{resource} within the namespace's \
                     LimitRanges"
                ),
            )
        })
        .or_else(|| {
            super::quota::refusal(&parts.container, &spec, quotas, ranges).map(|why| {
                (
                    NotInjectedReason::ResourceQuota,
                    format!(
                        "{why} (FaceKeyDeployment {namespace}/{resource}): the API server would \
                         refuse the whole pod"
                    ),
                )
            })
        });
    match refused {
        None => decision,
        Some((reason, message)) => Decision::NotInjected {
            resource: resource.clone(),
            reason,
            message,
            refuse: sidecar.failure_policy == SidecarFailurePolicy::Fail,
        },
    }
}

/// Escape a map key for a JSON pointer (RFC 6901).
fn pointer_key(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    // The k8s-openapi types serialise infallibly (maps with string keys, no floats as keys).
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The RFC 6902 operations adding `parts` to `pod`: the sidecar first among the init containers
/// (so later init containers may use it too), its volumes, the resource's pull secrets the pod
/// lacks, the [`SIDECAR_LABEL`] label and the [`SIDECAR_IMAGE_ANNOTATION`] and
/// [`SIDECAR_CONFIG_ANNOTATION`] annotations.
pub fn patch_ops(pod: &Pod, parts: &SidecarParts, resource: &str, image: &str) -> Vec<Value> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut ops = Vec::new();
    let container = to_json(&parts.container);
    if spec.init_containers.as_ref().is_none_or(Vec::is_empty) {
        ops.push(json!({"op": "add", "path": "/spec/initContainers", "value": [container]}));
    } else {
        ops.push(json!({"op": "add", "path": "/spec/initContainers/0", "value": container}));
    }
    if spec.volumes.as_ref().is_none_or(Vec::is_empty) {
        ops.push(json!({"op": "add", "path": "/spec/volumes", "value": to_json(&parts.volumes)}));
    } else {
        for v in &parts.volumes {
            ops.push(json!({"op": "add", "path": "/spec/volumes/-", "value": to_json(v)}));
        }
    }
    let have: Vec<&str> = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|s| s.name.as_str())
        .collect();
    let missing: Vec<_> = parts
        .image_pull_secrets
        .iter()
        .filter(|s| !have.contains(&s.name.as_str()))
        .collect();
    if !missing.is_empty() {
        if spec.image_pull_secrets.as_ref().is_none_or(Vec::is_empty) {
            ops.push(
                json!({"op": "add", "path": "/spec/imagePullSecrets", "value": to_json(&missing)}),
            );
        } else {
            for s in missing {
                ops.push(
                    json!({"op": "add", "path": "/spec/imagePullSecrets/-", "value": to_json(s)}),
                );
            }
        }
    }
    let config = parts.config_hash();
    for (field, entries, present) in [
        (
            "labels",
            vec![(SIDECAR_LABEL, resource)],
            pod.metadata.labels.is_some(),
        ),
        (
            "annotations",
            vec![
                (SIDECAR_IMAGE_ANNOTATION, image),
                (SIDECAR_CONFIG_ANNOTATION, config.as_str()),
            ],
            pod.metadata.annotations.is_some(),
        ),
    ] {
        if present {
            for (key, value) in entries {
                ops.push(json!({
                    "op": "add",
                    "path": format!("/metadata/{field}/{}", pointer_key(key)),
                    "value": value,
                }));
            }
        } else {
            let map: serde_json::Map<String, Value> = entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), json!(v)))
                .collect();
            ops.push(json!({"op": "add", "path": format!("/metadata/{field}"), "value": map}));
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod(annotations: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"generateName": "app-", "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080}]}]},
        }))
        .unwrap()
    }

    fn fkd(sidecar: Value, lkg: Option<&str>) -> FaceKeyDeployment {
        let mut status = json!({});
        if let Some(i) = lkg {
            // A pinned image as a passed scan leaves it; an unpinned one as the gate left off.
            status = match i.split_once('@') {
                Some((_, digest)) => json!({"lastKnownGoodImage": i, "scans": [
                    {"image": "r/rt:1", "digest": digest, "verdict": "Passed"}]}),
                None => json!({"lastKnownGoodImage": i, "conditions": [
                    {"type": "ScanGatePassed", "status": "True", "reason": "GateDisabled",
                     "message": "scanGate.enabled is false",
                     "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
            };
        }
        let gate_off = lkg.is_some_and(|i| !i.contains('@'));
        serde_json::from_value(json!({
            "apiVersion": "facekey.dev/v1alpha1", "kind": "FaceKeyDeployment",
            "metadata": {"name": "fk", "namespace": "team"},
            "spec": {"image": "r/rt:1", "sidecar": sidecar, "scanGate": {"enabled": !gate_off}},
            "status": status,
        }))
        .unwrap()
    }

    const DIGEST: &str = "r/rt@sha256:0123";

    #[test]
    fn the_decision_for_each_case() {
        let asks = pod(json!({INJECT_ANNOTATION: "fk"}));
        let ready = fkd(json!({}), Some(DIGEST));
        let opts = InjectOptions::default();
        assert_eq!(
            decide(&pod(json!({})), "team", Some(&ready), opts),
            Decision::NotRequested
        );
        let out = pod(json!({INJECT_ANNOTATION: "fk", OPT_OUT_ANNOTATION: "true"}));
        assert_eq!(decide(&out, "team", Some(&ready), opts), Decision::OptedOut);
        match decide(&asks, "team", Some(&ready), opts) {
            Decision::Inject {
                image, resource, ..
            } => {
                assert_eq!((image.as_str(), resource.as_str()), (DIGEST, "fk"));
            }
            other => panic!("{other:?}"),
        }
        // Unknown: the operator's default refuses.
        let Decision::NotInjected {
            reason,
            refuse,
            message,
            ..
        } = decide(&asks, "team", None, opts)
        else {
            panic!()
        };
        assert_eq!(reason, NotInjectedReason::UnknownResource);
        assert!(refuse && message.contains("team/fk"), "{message}");
        // Just turned on in the spec, not reconciled yet (the condition still says disabled):
        // already on for injection.
        let mut turned_on = fkd(json!({}), Some(DIGEST));
        if let Some(status) = turned_on.status.as_mut() {
            status.scans.clear();
            status.conditions = serde_json::from_value(json!([{"type": "ScanGatePassed",
                "status": "True", "reason": "GateDisabled", "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]))
            .unwrap();
        }
        assert!(matches!(
            decide(&asks, "team", Some(&turned_on), opts),
            Decision::NotInjected {
                reason: NotInjectedReason::NoAdmittedImage,
                ..
            }
        ));
        // Pinned, but run while the gate was off and not passed by a scan since it is on: the
        // Deployment keeps it, no new pod gets it.
        let mut unscanned = ready.clone();
        if let Some(status) = unscanned.status.as_mut() {
            status.scans.clear();
        }
        let d = decide(&asks, "team", Some(&unscanned), opts);
        assert!(
            matches!(&d, Decision::NotInjected { reason: NotInjectedReason::NoAdmittedImage, message, .. }
                if message.contains("no scan has passed")),
            "{d:?}"
        );
        // Not admitted yet: Ignore by default, Fail when the resource says so.
        let pending = fkd(json!({}), None);
        let d = decide(&asks, "team", Some(&pending), opts);
        assert!(
            matches!(
                d,
                Decision::NotInjected {
                    reason: NotInjectedReason::NoAdmittedImage,
                    refuse: false,
                    ..
                }
            ),
            "{d:?}"
        );
        let strict = fkd(json!({"failurePolicy": "Fail"}), None);
        let d = decide(&asks, "team", Some(&strict), opts);
        assert!(
            matches!(d, Decision::NotInjected { refuse: true, .. }),
            "{d:?}"
        );
        // A tag is never injected.
        let tag = fkd(json!({}), Some("r/rt:1"));
        let d = decide(&asks, "team", Some(&tag), opts);
        assert!(
            matches!(
                d,
                Decision::NotInjected {
                    reason: NotInjectedReason::ImageNotPinned,
                    ..
                }
            ),
            "{d:?}"
        );
        // Port clash with the application's 8080.
        let clash = fkd(json!({"port": 8080, "metricsPort": 8081}), Some(DIGEST));
        let d = decide(&asks, "team", Some(&clash), opts);
        assert!(
            matches!(
                d,
                Decision::NotInjected {
                    reason: NotInjectedReason::PortConflict,
                    ..
                }
            ),
            "{d:?}"
        );
        let off = fkd(json!({"enabled": false}), Some(DIGEST));
        let d = decide(&asks, "team", Some(&off), opts);
        assert!(
            matches!(
                d,
                Decision::NotInjected {
                    reason: NotInjectedReason::SidecarDisabled,
                    refuse: false,
                    ..
                }
            ),
            "{d:?}"
        );
    }

    #[test]
    fn applying_the_patch_injects_once() {
        let asks = pod(json!({INJECT_ANNOTATION: "fk"}));
        let ready = fkd(json!({}), Some(DIGEST));
        let Decision::Inject { patch, .. } =
            decide(&asks, "team", Some(&ready), InjectOptions::default())
        else {
            panic!()
        };
        let mut doc = serde_json::to_value(&asks).unwrap();
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(patch)).unwrap();
        json_patch::patch(&mut doc, &patch).unwrap();
        let injected: Pod = serde_json::from_value(doc).unwrap();
        let spec = injected.spec.as_ref().unwrap();
        let init = spec.init_containers.as_ref().unwrap();
        assert_eq!(init[0].name, SIDECAR_CONTAINER);
        assert_eq!(init[0].image.as_deref(), Some(DIGEST));
        assert_eq!(
            injected.metadata.labels.as_ref().unwrap()[SIDECAR_LABEL],
            "fk"
        );
        assert_eq!(
            injected.metadata.annotations.as_ref().unwrap()[SIDECAR_IMAGE_ANNOTATION],
            DIGEST
        );
        // The settings it was admitted with, as the sidecar counter computes them: up to date.
        let sidecar = ready.spec.sidecar.as_ref().unwrap();
        let current = sidecar_parts("fk", "team", &ready.spec, sidecar, DIGEST).config_hash();
        assert_eq!(
            injected.metadata.annotations.as_ref().unwrap()[SIDECAR_CONFIG_ANNOTATION],
            current
        );
        let counted = super::super::sidecars::count([&injected], Some(DIGEST), Some(&current));
        assert_eq!((counted.injected_pods, counted.outdated_pods), (1, 0));
        // Another threshold for new pods: this one is outdated.
        let mut tightened = ready.spec.clone();
        tightened.models =
            Some(serde_json::from_value(json!({"thresholds": {"match": 0.7}})).unwrap());
        let changed = sidecar_parts("fk", "team", &tightened, sidecar, DIGEST).config_hash();
        assert_ne!(changed, current);
        let counted = super::super::sidecars::count([&injected], Some(DIGEST), Some(&changed));
        assert_eq!(counted.outdated_pods, 1);
        // Reviewed again (reinvocation, or a pod copied from an injected one): unchanged.
        assert_eq!(
            decide(&injected, "team", Some(&ready), InjectOptions::default()),
            Decision::AlreadyInjected
        );
    }

    /// A resource being deleted (foreground deletion, an Argo CD prune) takes the ConfigMap and
    /// Secrets the sidecar mounts with it: its pods are not injected, under its own policy.
    #[test]
    fn a_resource_being_deleted_is_not_injected() {
        let asks = pod(json!({INJECT_ANNOTATION: "fk"}));
        let opts = InjectOptions::default();
        for (sidecar, refused) in [(json!({}), false), (json!({"failurePolicy": "Fail"}), true)] {
            let mut deleting = fkd(sidecar, Some(DIGEST));
            deleting.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    "2026-01-01T00:00:00Z".parse().unwrap(),
                ));
            let d = decide(&asks, "team", Some(&deleting), opts);
            assert!(
                matches!(&d, Decision::NotInjected {
                    reason: NotInjectedReason::ResourceDeleting, refuse, message, ..
                } if *refuse == refused && message.contains("team/fk is being deleted")),
                "{d:?}"
            );
        }
    }

    /// A failed lookup is answered as an unknown resource is, under the operator's setting,
    /// naming the error; a pod that did not need the resource keeps its answer.
    #[test]
    fn a_failed_lookup_follows_the_unknown_resource_policy() {
        let asks = pod(json!({INJECT_ANNOTATION: "fk"}));
        for (policy, refused) in [
            (SidecarFailurePolicy::Fail, true),
            (SidecarFailurePolicy::Ignore, false),
        ] {
            let opts = InjectOptions {
                unknown_resource: policy,
            };
            let d = lookup_failed(decide(&asks, "team", None, opts), "team", "503 overloaded");
            assert!(
                matches!(&d, Decision::NotInjected {
                    reason: NotInjectedReason::LookupFailed, refuse, message, ..
                } if *refuse == refused && message.contains("team/fk") && message.contains("503 overloaded")),
                "{d:?}"
            );
        }
        let out = pod(json!({INJECT_ANNOTATION: "fk", OPT_OUT_ANNOTATION: "true"}));
        let d = decide(&out, "team", None, InjectOptions::default());
        assert_eq!(lookup_failed(d, "team", "x"), Decision::OptedOut);
    }

    #[test]
    fn pointer_keys_are_escaped() {
        assert_eq!(pointer_key("facekey.dev/sidecar"), "facekey.dev~1sidecar");
        assert_eq!(pointer_key("a~b/c"), "a~0b~1c");
    }
}
