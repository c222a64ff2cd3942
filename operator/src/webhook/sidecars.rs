//! The sidecar counter: how many application pods run a FaceKeyDeployment's injected sidecar, and
//! how many of them an outdated image (`status.sidecar`). Pods keep the image they were admitted
//! with; rolling them after an image change is the application's decision, never the operator's:
//! the status and a Warning Event say so, nothing restarts a pod.
//!
//! The count is written with a field manager of its own (`facekey-operator-sidecars`): the
//! reconciler's status apply leaves `status.sidecar` out, so neither overwrites the other.

use std::collections::BTreeMap;
use std::time::Duration;

use facekey_crds::{FaceKeyDeployment, SidecarStatus};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, warn};

use crate::decode::{UnknownFields, decode_with};
use crate::desired::{SIDECAR_CONFIG_ANNOTATION, SIDECAR_CONTAINER, SIDECAR_LABEL};

/// Pods read per list call when counting (the namespace's pods, a page at a time).
const PAGE: u32 = 500;

/// Field manager of `status.sidecar`.
pub const FIELD_MANAGER: &str = "facekey-operator-sidecars";
/// Event reason when pods run an outdated sidecar.
pub const OUTDATED_REASON: &str = "SidecarsOutdated";

/// The image of a pod's injected sidecar, if it has one.
pub fn sidecar_image(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .init_containers
        .as_ref()?
        .iter()
        .find(|c| c.name == SIDECAR_CONTAINER)?
        .image
        .as_deref()
}

/// The settings hash a pod's sidecar was admitted with ([`SIDECAR_CONFIG_ANNOTATION`]).
fn sidecar_config(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(SIDECAR_CONFIG_ANNOTATION)
        .map(String::as_str)
}

/// Whether a pod has ended or is being deleted (counted in no figure).
fn gone(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed")) || pod.metadata.deletion_timestamp.is_some()
}

/// Pods (any of the namespace) that ask for `resource`'s sidecar and did not opt out, but run
/// without it.
pub fn missing<'a>(pods: impl IntoIterator<Item = &'a Pod>, resource: &str) -> i32 {
    let count = pods
        .into_iter()
        .filter(|p| !gone(p))
        .filter(|p| super::inject::requested_resource(p) == Some(resource))
        .filter(|p| !super::inject::opted_out(p) && sidecar_image(p).is_none())
        .count();
    i32::try_from(count).unwrap_or(i32::MAX)
}

/// Count the pods (already selected by [`SIDECAR_LABEL`]) that run the sidecar, and those whose
/// image is not `image` or whose settings are not `config` (what new pods get). Terminated pods
/// do not count.
pub fn count<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    image: Option<&str>,
    config: Option<&str>,
) -> SidecarStatus {
    let mut status = SidecarStatus {
        image: image.map(str::to_owned),
        config: config.map(str::to_owned),
        ..SidecarStatus::default()
    };
    count_into(&mut status, pods);
    status
}

/// Add `pods` to `status`'s counts, judged against its `image` and `config` (a page of a list
/// at a time).
fn count_into<'a>(status: &mut SidecarStatus, pods: impl IntoIterator<Item = &'a Pod>) {
    for pod in pods {
        if gone(pod) {
            continue;
        }
        let Some(running) = sidecar_image(pod) else {
            continue;
        };
        status.injected_pods += 1;
        // Without the settings new pods get (no sidecar offered any more), the image alone.
        if Some(running) != status.image.as_deref()
            || (status.config.is_some() && sidecar_config(pod) != status.config.as_deref())
        {
            status.outdated_pods += 1;
        }
    }
}

/// The Warning Event when pods run an outdated sidecar, if the change calls for one: the count
/// went from none to some, or the image new pods get changed while some are outdated.
pub fn outdated_event(old: Option<&SidecarStatus>, new: &SidecarStatus) -> Option<Event> {
    if new.outdated_pods == 0 {
        return None;
    }
    let was = old.map_or(0, |o| o.outdated_pods);
    let same = old.is_some_and(|o| o.image == new.image && o.config == new.config);
    if was > 0 && same {
        return None;
    }
    Some(Event {
        type_: EventType::Warning,
        reason: OUTDATED_REASON.to_owned(),
        note: Some(format!(
            "{} of {} pods run an outdated FaceKey sidecar; new pods get {}. Rolling them (e.g. \
             kubectl rollout restart) is the application's decision: the operator restarts no pod",
            new.outdated_pods,
            new.injected_pods,
            new.image.as_deref().unwrap_or("no image (none admitted)")
        )),
        action: "CountSidecars".to_owned(),
        secondary: None,
    })
}

/// Event reason when pods that ask for the sidecar run without it.
pub const MISSING_REASON: &str = "SidecarsMissing";

/// The Warning Event when pods that ask for the sidecar run without it, when their count rises.
pub fn missing_event(
    old: Option<&SidecarStatus>,
    new: &SidecarStatus,
    resource: &str,
) -> Option<Event> {
    if new.missing_pods <= old.map_or(0, |o| o.missing_pods) {
        return None;
    }
    Some(Event {
        type_: EventType::Warning,
        reason: MISSING_REASON.to_owned(),
        note: Some(format!(
            "{} pods ask for the FaceKey sidecar of {resource} (facekey.dev/inject) but run \
             without it: admitted while no webhook answered (failurePolicy Ignore), or skipped \
             for a reason of their own (hostNetwork, a port or volume conflict, no admitted \
             image: see the Sidecar<Reason> Warning Events on their owners); restart those admitted \
             during an outage once the webhook answers",
            new.missing_pods
        )),
        action: "CountSidecars".to_owned(),
        secondary: None,
    })
}

/// Whether `identity` holds the Lease `namespace/name` (only the leader writes counts).
async fn leads(client: &Client, namespace: &str, name: &str, identity: &str) -> bool {
    match Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
    {
        Ok(Some(lease)) => lease.spec.and_then(|s| s.holder_identity).as_deref() == Some(identity),
        Ok(None) => false,
        Err(e) => {
            debug!(error = %e, "reading the leader Lease failed");
            false
        }
    }
}

/// Settings of the counter loop.
#[derive(Clone, Debug)]
pub struct CounterConfig {
    /// Namespace to watch, or all.
    pub namespace: Option<String>,
    /// The leader Lease (namespace, name) and this replica's identity in it.
    pub lease: (String, String, String),
    /// How often to count.
    pub every: Duration,
}

/// Count once for every FaceKeyDeployment offering a sidecar (or still reporting one).
pub async fn count_all(client: &Client, recorder: &Recorder, namespace: Option<&str>) {
    // Listed untyped and decoded one by one (unknown spec fields ignored, as the webhook does):
    // a resource this operator cannot read is skipped (the controller reports it), not a failed
    // list that stops the count of every other.
    let fkds = crate::decode::api(client.clone(), namespace);
    let list = match fkds.list(&ListParams::default()).await {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "listing FaceKeyDeployments for the sidecar count failed");
            return;
        }
    };
    let decoded = list
        .into_iter()
        .filter_map(|obj| decode_with(obj, UnknownFields::Ignore).resource().ok());
    // Grouped by namespace: each namespace's pods are listed once a round, whatever the number
    // of resources counting in it.
    let mut by_namespace: BTreeMap<String, Vec<FaceKeyDeployment>> = BTreeMap::new();
    for fkd in decoded {
        let offers = fkd.spec.sidecar.as_ref().is_some_and(|s| s.enabled);
        let reported = fkd.status.as_ref().is_some_and(|s| s.sidecar.is_some());
        if offers || reported {
            by_namespace
                .entry(fkd.namespace().unwrap_or_default())
                .or_default()
                .push(fkd);
        }
    }
    for (ns, fkds) in by_namespace {
        if let Err(e) = count_namespace(client, recorder, &ns, &fkds).await {
            warn!(namespace = %ns, error = %e, "counting sidecars failed");
        }
    }
}

/// What `fkd`'s sidecars are judged against before any pod is counted: the image and settings
/// new pods get now.
fn fresh_count(fkd: &FaceKeyDeployment) -> SidecarStatus {
    let ns = fkd.namespace().unwrap_or_default();
    let name = fkd.name_any();
    // What the webhook injects now: a last-known-good image no scan passed (the gate turned on
    // over one that ran with it off) is held by the Deployment but injected nowhere.
    let image = super::inject::admitted_image(fkd).ok();
    let config = match (image, fkd.spec.sidecar.as_ref().filter(|s| s.enabled)) {
        (Some(image), Some(sidecar)) => {
            Some(crate::desired::sidecar_parts(&name, &ns, &fkd.spec, sidecar, image).config_hash())
        }
        _ => None,
    };
    SidecarStatus {
        image: image.map(str::to_owned),
        config,
        ..SidecarStatus::default()
    }
}

/// Count the sidecars of every resource in `fkds` (all of namespace `ns`) from one paged list
/// of the namespace's pods, then report each.
async fn count_namespace(
    client: &Client,
    recorder: &Recorder,
    ns: &str,
    fkds: &[FaceKeyDeployment],
) -> Result<(), kube::Error> {
    let mut counts: Vec<(String, SidecarStatus)> = fkds
        .iter()
        .map(|f| (f.name_any(), fresh_count(f)))
        .collect();
    // Every pod of the namespace, a page at a time (bounded memory however many there are): the
    // injected ones carry the label, the ones that asked and were admitted without the sidecar
    // only the annotation (not selectable).
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = api.list(&params).await?;
        for (name, new) in &mut counts {
            let labelled = page.items.iter().filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SIDECAR_LABEL))
                    .is_some_and(|v| v == name)
            });
            count_into(new, labelled);
            new.missing_pods += missing(&page.items, name);
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    for (fkd, (_, new)) in fkds.iter().zip(counts) {
        if let Err(e) = report(client, recorder, fkd, new).await {
            warn!(resource = %fkd.name_any(), error = %e, "reporting the sidecar count failed");
        }
    }
    Ok(())
}

/// Write `fkd`'s new count to its status (when it changed) and the Events the change calls for.
async fn report(
    client: &Client,
    recorder: &Recorder,
    fkd: &FaceKeyDeployment,
    new: SidecarStatus,
) -> Result<(), kube::Error> {
    let ns = fkd.namespace().unwrap_or_default();
    let name = fkd.name_any();
    let old = fkd.status.as_ref().and_then(|s| s.sidecar.as_ref());
    // The sidecar turned off and no pod carries it or asks for it any more: the report goes
    // (an apply without the field removes it), so the namespace is not listed every round
    // for a resource that no longer has anything to count.
    let offered = fkd.spec.sidecar.as_ref().is_some_and(|s| s.enabled);
    let nothing_left = new.injected_pods == 0 && new.missing_pods == 0;
    let status = if offered || !nothing_left {
        if old == Some(&new) {
            return Ok(());
        }
        json!({"sidecar": new})
    } else {
        json!({})
    };
    let patch = json!({
        "apiVersion": FaceKeyDeployment::api_version(&()),
        "kind": FaceKeyDeployment::kind(&()),
        "status": status,
    });
    crate::decode::api(client.clone(), Some(&ns))
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    let reference: ObjectReference = fkd.object_ref(&());
    for event in [outdated_event(old, &new), missing_event(old, &new, &name)]
        .into_iter()
        .flatten()
    {
        if let Err(e) = recorder.publish(&event, &reference).await {
            warn!(error = %e, reason = %event.reason, "publishing a sidecar Event failed");
        }
    }
    Ok(())
}

/// Count every `config.every` while this replica leads, until `shutdown`.
pub async fn run_counter(
    client: Client,
    config: CounterConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: crate::CONTROLLER_NAME.to_owned(),
            instance: Some(config.lease.2.clone()),
        },
    );
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(config.every) => {}
        }
        let (ns, name, identity) = &config.lease;
        if leads(&client, ns, name, identity).await {
            count_all(&client, &recorder, config.namespace.as_deref()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod(image: Option<&str>, phase: &str) -> Pod {
        configured(image, phase, Some("cfg-new"))
    }

    fn configured(image: Option<&str>, phase: &str, config: Option<&str>) -> Pod {
        let mut init = vec![json!({"name": "setup", "image": "busybox"})];
        if let Some(i) = image {
            init.push(json!({"name": SIDECAR_CONTAINER, "image": i, "restartPolicy": "Always"}));
        }
        let annotations = config.map_or(json!({}), |c| json!({SIDECAR_CONFIG_ANNOTATION: c}));
        serde_json::from_value(json!({
            "metadata": {"name": "p", "annotations": annotations},
            "spec": {"initContainers": init, "containers": [{"name": "app"}]},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    #[test]
    fn counts_injected_and_outdated_pods() {
        let pods = [
            pod(Some("r@sha256:new"), "Running"),
            pod(Some("r@sha256:old"), "Running"),
            pod(Some("r@sha256:old"), "Pending"),
            pod(Some("r@sha256:old"), "Succeeded"),
            pod(None, "Running"),
        ];
        let s = count(pods.iter(), Some("r@sha256:new"), Some("cfg-new"));
        assert_eq!((s.injected_pods, s.outdated_pods), (3, 2));
        assert_eq!(s.image.as_deref(), Some("r@sha256:new"));
        assert_eq!(s.config.as_deref(), Some("cfg-new"));
    }

    #[test]
    fn a_pod_admitted_with_other_settings_is_outdated_whatever_its_image() {
        let image = Some("r@sha256:new");
        let pods = [
            configured(image, "Running", Some("cfg-new")),
            // Settings changed since (a tightened lockout, another threshold).
            configured(image, "Running", Some("cfg-old")),
            // Injected before settings were recorded: not known to be current.
            configured(image, "Running", None),
        ];
        let s = count(pods.iter(), image, Some("cfg-new"));
        assert_eq!((s.injected_pods, s.outdated_pods), (3, 2));
        // No settings to compare (the sidecar is no longer offered): the image alone decides.
        let s = count(pods.iter(), image, None);
        assert_eq!((s.injected_pods, s.outdated_pods), (3, 0));
    }

    #[test]
    fn pods_that_asked_and_run_without_the_sidecar_are_missing() {
        let asking =
            |name: &str, annotations: serde_json::Value, phase: &str, with_sidecar: bool| -> Pod {
                let mut init = vec![];
                if with_sidecar {
                    init.push(json!({"name": SIDECAR_CONTAINER, "image": "r@sha256:a"}));
                }
                serde_json::from_value(json!({
                    "metadata": {"name": name, "annotations": annotations},
                    "spec": {"initContainers": init, "containers": [{"name": "app"}]},
                    "status": {"phase": phase},
                }))
                .unwrap()
            };
        let pods = [
            // Admitted while no webhook answered.
            asking("a", json!({"facekey.dev/inject": "fk"}), "Running", false),
            asking("b", json!({"facekey.dev/inject": "fk"}), "Pending", false),
            // Injected, another resource's, opted out, ended, or not asking: not missing.
            asking("c", json!({"facekey.dev/inject": "fk"}), "Running", true),
            asking(
                "d",
                json!({"facekey.dev/inject": "other"}),
                "Running",
                false,
            ),
            asking(
                "e",
                json!({"facekey.dev/inject": "fk", "facekey.dev/inject-disabled": "true"}),
                "Running",
                false,
            ),
            asking("f", json!({"facekey.dev/inject": "fk"}), "Succeeded", false),
            asking("g", json!({}), "Running", false),
        ];
        assert_eq!(missing(pods.iter(), "fk"), 2);
        let none = SidecarStatus::default();
        let two = SidecarStatus {
            missing_pods: 2,
            ..SidecarStatus::default()
        };
        let note = missing_event(Some(&none), &two, "fk")
            .unwrap()
            .note
            .unwrap();
        assert!(
            note.starts_with("2 pods ask for the FaceKey sidecar of fk"),
            "{note}"
        );
        assert!(missing_event(Some(&two), &two, "fk").is_none());
        assert!(missing_event(Some(&two), &none, "fk").is_none());
    }

    #[test]
    fn outdated_event_on_the_transition_only() {
        let none = SidecarStatus {
            image: Some("a".into()),
            injected_pods: 2,
            outdated_pods: 0,
            config: None,
            missing_pods: 0,
        };
        let some = SidecarStatus {
            image: Some("b".into()),
            injected_pods: 2,
            outdated_pods: 2,
            config: None,
            missing_pods: 0,
        };
        let ev = outdated_event(Some(&none), &some).unwrap();
        let note = ev.note.unwrap();
        assert!(
            note.contains("2 of 2") && note.contains("application's decision"),
            "{note}"
        );
        assert!(outdated_event(Some(&some), &some).is_none());
        let newer = SidecarStatus {
            image: Some("c".into()),
            ..some.clone()
        };
        assert!(outdated_event(Some(&some), &newer).is_some());
        assert!(outdated_event(Some(&some), &none).is_none());
        // New settings while some pods are outdated: told again, as for a new image.
        let reconfigured = SidecarStatus {
            config: Some("cfg-2".into()),
            ..some.clone()
        };
        assert!(outdated_event(Some(&some), &reconfigured).is_some());
    }
}
