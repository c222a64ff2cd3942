//! Events about pods that asked for the sidecar and did not get it, published on the
//! FaceKeyDeployment they named (`kubectl describe fkd <name>` shows them; for a name that does
//! not exist, `kubectl get events --field-selector involvedObject.name=<name>`). Publishing runs
//! in the background: an admission answer never waits for it. Reviews can be forged by any pod
//! reaching the webhook, so Events are rate-limited per namespace ([`super::event_limit`]).

use std::sync::Arc;

use facekey_crds::FaceKeyDeployment;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tracing::{info, warn};

use super::event_limit::{EventLimiter, Verdict};
use super::inject::Decision;
use super::review::Request;
use crate::events::AdmissionEventSuppressed;
use crate::metrics::Metrics;

/// Event action of the webhook's Events.
pub const ACTION: &str = "InjectSidecar";

/// Publishes the webhook's Events, within the limits of its [`EventLimiter`].
#[derive(Clone)]
pub struct EventSink {
    recorder: Recorder,
    limiter: Arc<EventLimiter>,
    metrics: Metrics,
}

/// How the pod is named in messages: its controller (`ReplicaSet/web-5d8`), else its name or
/// `generateName`.
pub fn describe_pod(req: &Request) -> String {
    let Some(pod) = req.request.object.as_ref() else {
        return "pod".to_owned();
    };
    let meta = &pod.metadata;
    if let Some(owner) = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    {
        return format!("pod of {}/{}", owner.kind, owner.name);
    }
    match (&meta.name, &meta.generate_name) {
        (Some(n), _) => format!("pod {n}"),
        (None, Some(g)) => format!("pod {g}*"),
        (None, None) => "pod".to_owned(),
    }
}

/// The Event for a decision, if it deserves one (only pods that did not get their sidecar).
pub fn event_for(req: &Request, decision: &Decision) -> Option<Event> {
    let Decision::NotInjected {
        reason,
        message,
        refuse,
        ..
    } = decision
    else {
        return None;
    };
    let what = if *refuse {
        "refused"
    } else {
        "admitted without the sidecar"
    };
    Some(Event {
        type_: EventType::Warning,
        reason: format!("Sidecar{}", reason.as_str()),
        note: Some(format!("{} {what}: {message}", describe_pod(req))),
        action: ACTION.to_owned(),
        secondary: None,
    })
}

impl EventSink {
    /// Events as `facekey-operator` (instance: the pod name), within the default limits; those
    /// over them are counted in `metrics`.
    pub fn new(client: Client, instance: Option<String>, metrics: Metrics) -> Self {
        Self {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: crate::CONTROLLER_NAME.to_owned(),
                    instance,
                },
            ),
            limiter: Arc::new(EventLimiter::default()),
            metrics,
        }
    }

    /// Log the decision and, for a pod that did not get its sidecar, publish an Event in the
    /// background if the limits allow it (else count it as suppressed, logged at debug level
    /// only: a flood of forged reviews must not flood the log either).
    pub fn report(&self, req: &Request, fkd: Option<&FaceKeyDeployment>, decision: &Decision) {
        let Some(event) = event_for(req, decision) else {
            if let Decision::Inject {
                resource, image, ..
            } = decision
            {
                info!(namespace = %req.namespace, resource, image, pod = %describe_pod(req), "injected the runtime sidecar");
            }
            return;
        };
        let Decision::NotInjected {
            resource, reason, ..
        } = decision
        else {
            return;
        };
        let verdict = self.limiter.check(&req.namespace, reason.as_str());
        if verdict != Verdict::Publish {
            AdmissionEventSuppressed {
                namespace: &req.namespace,
                resource,
                reason: reason.as_str(),
                verdict,
            }
            .emit(&self.metrics);
            return;
        }
        warn!(namespace = %req.namespace, resource, reason = %event.reason, note = ?event.note, "sidecar not injected");
        let reference = ObjectReference {
            api_version: Some(FaceKeyDeployment::api_version(&()).into_owned()),
            kind: Some(FaceKeyDeployment::kind(&()).into_owned()),
            name: Some(resource.clone()),
            namespace: Some(req.namespace.clone()),
            uid: fkd.and_then(|f| f.metadata.uid.clone()),
            ..ObjectReference::default()
        };
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                warn!(error = %e, "publishing the sidecar Event failed");
            }
        });
    }
}
