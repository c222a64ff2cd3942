//! The MutatingWebhookConfiguration of the sidecar injector, as code: `manifests/webhook.yaml`
//! must equal it (a test compares them), so the safety settings below cannot drift.
//!
//! Safety: an operator outage never blocks a pod that did not ask for the sidecar. The API server
//! only calls the webhook for pods whose annotations carry `facekey.dev/inject` (a CEL
//! `matchConditions`; annotations cannot be selected by `objectSelector`) outside `kube-system`,
//! `kube-public`, `kube-node-lease` and the namespaces whose [`INJECTION_LABEL`] is
//! [`INJECTION_DISABLED`], as the install's own is (so the operator's pods can always start, and
//! an overlay that installs into another namespace needs no patch of the selector);
//! `failurePolicy: Ignore` and a 5-second timeout mean that even those pods are admitted
//! (without the sidecar) while no webhook answers. A resource's `sidecar.failurePolicy:
//! Fail` is enforced by the webhook's answer, not by the API server.

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ServiceReference, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use facekey_crds::INJECT_ANNOTATION;

/// Name of the webhook within the configuration.
pub const WEBHOOK_NAME: &str = "sidecar-injector.facekey.dev";
/// Seconds the API server waits for an answer before applying `failurePolicy: Ignore`.
pub const WEBHOOK_TIMEOUT_SECONDS: i32 = 5;
/// Namespaces never sent to the webhook, by name.
pub const EXCLUDED_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// The namespace label that keeps a namespace's pods from the webhook when it is
/// [`INJECTION_DISABLED`]: `manifests/namespace.yaml` sets it on the operator's namespace, and
/// it follows that namespace whatever an overlay renames it to.
pub const INJECTION_LABEL: &str = "facekey.dev/sidecar-injection";

/// The [`INJECTION_LABEL`] value that excludes a namespace.
pub const INJECTION_DISABLED: &str = "disabled";

/// Where the webhook is served.
#[derive(Clone, Debug)]
pub struct WebhookTarget<'a> {
    /// Name of the MutatingWebhookConfiguration.
    pub config_name: &'a str,
    /// The operator's namespace (the Service's).
    pub namespace: &'a str,
    /// The webhook Service.
    pub service: &'a str,
    /// Its HTTPS path.
    pub path: &'a str,
}

/// The CEL condition selecting pods that ask for the sidecar and did not opt out.
pub fn match_expression() -> String {
    let opt_out = crate::webhook::OPT_OUT_ANNOTATION;
    format!(
        "has(object.metadata.annotations) && '{INJECT_ANNOTATION}' in object.metadata.annotations \
         && !('{opt_out}' in object.metadata.annotations && \
         object.metadata.annotations['{opt_out}'] == 'true')"
    )
}

/// The MutatingWebhookConfiguration (without `caBundle`: the operator publishes it).
pub fn mutating_webhook_configuration(t: &WebhookTarget<'_>) -> MutatingWebhookConfiguration {
    let excluded: Vec<String> = EXCLUDED_NAMESPACES.map(str::to_owned).to_vec();
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(t.config_name.to_owned()),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: WEBHOOK_NAME.to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            client_config: WebhookClientConfig {
                service: Some(ServiceReference {
                    name: t.service.to_owned(),
                    namespace: t.namespace.to_owned(),
                    path: Some(t.path.to_owned()),
                    port: Some(443),
                }),
                ..WebhookClientConfig::default()
            },
            failure_policy: Some("Ignore".to_owned()),
            timeout_seconds: Some(WEBHOOK_TIMEOUT_SECONDS),
            // Events are only published for real requests.
            side_effects: "NoneOnDryRun".to_owned(),
            match_policy: Some("Equivalent".to_owned()),
            // Injection is idempotent: a second call changes nothing.
            reinvocation_policy: Some("IfNeeded".to_owned()),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".to_owned()]),
                operations: Some(vec!["CREATE".to_owned()]),
                resources: Some(vec!["pods".to_owned()]),
                scope: Some("Namespaced".to_owned()),
            }]),
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![
                    LabelSelectorRequirement {
                        key: "kubernetes.io/metadata.name".to_owned(),
                        operator: "NotIn".to_owned(),
                        values: Some(excluded),
                    },
                    LabelSelectorRequirement {
                        key: INJECTION_LABEL.to_owned(),
                        operator: "NotIn".to_owned(),
                        values: Some(vec![INJECTION_DISABLED.to_owned()]),
                    },
                ]),
                ..LabelSelector::default()
            }),
            match_conditions: Some(vec![MatchCondition {
                name: "asks-for-the-facekey-sidecar".to_owned(),
                expression: match_expression(),
            }]),
            ..MutatingWebhook::default()
        }]),
    }
}
