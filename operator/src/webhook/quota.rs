//! The namespace's ResourceQuotas against the sidecar, as the API server's ResourceQuota plugin
//! will hold the pod (pure). It runs after every webhook and refuses the **whole pod** when a
//! quota that matches it tracks CPU or memory and a container sets no value for it ("must
//! specify limits.cpu for: facekey-runtime"; the default sidecar sets no CPU limit), or when the
//! pod's usage would take a quota past its `hard` amount. Knowing that at admission, the webhook
//! leaves the sidecar out (`ResourceQuota`) instead of getting the application's pod refused,
//! when the pod without the sidecar would have been admitted.
//!
//! The usage check reads the quota's `status.used` as the watch last saw it: pods admitted a
//! moment ago elsewhere may not be in it, and the API server has the last word.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, LimitRange, PodAffinityTerm, PodSpec, ResourceQuota, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::limit_range::{Amounts, Held, held, pod_totals, shown};
use crate::desired::capacity;

/// The quota resources that make every container state a value ("BACKWARD COMPATIBILITY
/// REQUIREMENT" of Kubernetes' pod evaluator: CPU and memory only).
const MUST_SPECIFY: [&str; 6] = [
    "cpu",
    "requests.cpu",
    "limits.cpu",
    "memory",
    "requests.memory",
    "limits.memory",
];

/// The pod-count resources: a quota that selects the pod only with the sidecar counts it.
const POD_COUNTS: [&str; 2] = ["pods", "count/pods"];

/// Which container value a quota resource counts: a request or a limit of a resource.
#[derive(Clone, Debug, PartialEq)]
enum Field {
    Request(String),
    Limit(String),
}

impl Field {
    /// The field a quota resource counts: `cpu`, `memory`, `ephemeral-storage` and
    /// `hugepages-*` are requests, as are `requests.<name>` (extended resources included);
    /// `limits.<name>` are limits. `None` for object counts and anything else.
    fn of(resource: &str) -> Option<Self> {
        if let Some(name) = resource.strip_prefix("requests.") {
            return Some(Field::Request(name.to_owned()));
        }
        if let Some(name) = resource.strip_prefix("limits.") {
            return Some(Field::Limit(name.to_owned()));
        }
        (matches!(resource, "cpu" | "memory" | "ephemeral-storage")
            || resource.starts_with("hugepages-"))
        .then(|| Field::Request(resource.to_owned()))
    }

    fn in_amounts(&self, requests: &Amounts, limits: &Amounts) -> Option<f64> {
        match self {
            Field::Request(r) => requests.get(r).copied(),
            Field::Limit(r) => limits.get(r).copied(),
        }
    }

    fn in_quantities(
        &self,
        requests: Option<&BTreeMap<String, Quantity>>,
        limits: Option<&BTreeMap<String, Quantity>>,
    ) -> Option<f64> {
        let (map, name) = match self {
            Field::Request(r) => (requests, r),
            Field::Limit(r) => (limits, r),
        };
        map?.get(name)
            .map(|q| capacity::parse_quantity(&q.0).unwrap_or(f64::NAN))
    }

    fn resource(&self) -> &str {
        match self {
            Field::Request(r) | Field::Limit(r) => r,
        }
    }
}

/// Whether a pod is of the BestEffort QoS class: neither its pod-level resources nor any
/// container sets a CPU or memory request or limit above zero (Kubernetes' `ComputePodQOS`).
fn best_effort(spec: &PodSpec, containers: &[Held], init: &[Held]) -> bool {
    let positive = |m: &Amounts| {
        ["cpu", "memory"]
            .iter()
            .any(|r| m.get(*r).is_some_and(|v| v.is_nan() || *v > 0.0))
    };
    !pod_level_compute(spec, |q| {
        capacity::parse_quantity(&q.0).is_none_or(|v| v > 0.0)
    }) && containers
        .iter()
        .chain(init)
        .all(|h| !positive(&h.requests) && !positive(&h.limits))
}

/// Whether the pod sets a pod-level CPU or memory request or limit (`spec.resources`) that
/// `counts`: Kubernetes then counts those for the quota instead of the containers' and does not
/// make every container state them.
fn pod_level_compute(spec: &PodSpec, counts: impl Fn(&Quantity) -> bool) -> bool {
    spec.resources.as_ref().is_some_and(|r| {
        [&r.requests, &r.limits].iter().any(|m| {
            m.as_ref().is_some_and(|m| {
                ["cpu", "memory"]
                    .iter()
                    .any(|n| m.get(*n).is_some_and(&counts))
            })
        })
    })
}

/// The terms of one kind of pod (anti-)affinity, required and preferred.
fn affinity_terms<'a>(
    required: &'a Option<Vec<PodAffinityTerm>>,
    preferred: &'a Option<Vec<WeightedPodAffinityTerm>>,
) -> impl Iterator<Item = &'a PodAffinityTerm> {
    required
        .iter()
        .flatten()
        .chain(preferred.iter().flatten().map(|w| &w.pod_affinity_term))
}

/// Whether the pod `spec` uses cross-namespace pod affinity (a term naming namespaces or a
/// namespace selector).
fn cross_namespace_affinity(spec: &PodSpec) -> bool {
    let Some(affinity) = spec.affinity.as_ref() else {
        return false;
    };
    let with = affinity.pod_affinity.iter().flat_map(|a| {
        affinity_terms(
            &a.required_during_scheduling_ignored_during_execution,
            &a.preferred_during_scheduling_ignored_during_execution,
        )
    });
    let against = affinity.pod_anti_affinity.iter().flat_map(|a| {
        affinity_terms(
            &a.required_during_scheduling_ignored_during_execution,
            &a.preferred_during_scheduling_ignored_during_execution,
        )
    });
    with.chain(against).any(|t| {
        t.namespaces.as_ref().is_some_and(|n| !n.is_empty()) || t.namespace_selector.is_some()
    })
}

/// Whether `quota`'s scopes select the pod `spec` (BestEffort as `best_effort` says).
fn selects(quota: &ResourceQuota, spec: &PodSpec, best_effort: bool) -> bool {
    let Some(qs) = quota.spec.as_ref() else {
        return true;
    };
    let terminating = spec.active_deadline_seconds.is_some_and(|s| s >= 0);
    let priority = spec
        .priority_class_name
        .as_deref()
        .filter(|p| !p.is_empty());
    let scope = |name: &str, operator: &str, values: &[String]| match name {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort,
        "NotBestEffort" => !best_effort,
        "CrossNamespacePodAffinity" => cross_namespace_affinity(spec),
        "PriorityClass" => match operator {
            "In" => priority.is_some_and(|p| values.iter().any(|v| v == p)),
            "NotIn" => priority.is_none_or(|p| !values.iter().any(|v| v == p)),
            "DoesNotExist" => priority.is_none(),
            _ => priority.is_some(),
        },
        _ => false,
    };
    qs.scopes.iter().flatten().all(|s| scope(s, "Exists", &[]))
        && qs
            .scope_selector
            .iter()
            .flat_map(|s| s.match_expressions.iter().flatten())
            .all(|e| {
                scope(
                    &e.scope_name,
                    &e.operator,
                    e.values.as_deref().unwrap_or_default(),
                )
            })
}

/// The first container of `holders` missing a value the quota resources in `hard` make every
/// container state, with the quota resource: `None` when all state them.
fn unstated<'a>(
    hard: &BTreeMap<String, Quantity>,
    holders: &[&'a Held],
) -> Option<(&'a Held, &'static str)> {
    MUST_SPECIFY
        .iter()
        .filter(|resource| hard.contains_key(**resource))
        .find_map(|resource| {
            let field = Field::of(resource)?;
            holders
                .iter()
                .find(|h| field.in_amounts(&h.requests, &h.limits).is_none())
                .map(|h| (*h, *resource))
        })
}

/// One side of the comparison: the pod with or without the sidecar.
struct Side<'s> {
    spec: &'s PodSpec,
    containers: Vec<Held>,
    init: Vec<Held>,
    best_effort: bool,
    totals: (Amounts, Amounts),
}

impl<'s> Side<'s> {
    fn of(spec: &'s PodSpec, ranges: &[LimitRange]) -> Self {
        let (containers, init) = held(spec, ranges);
        let best_effort = best_effort(spec, &containers, &init);
        let totals = pod_totals(&containers, &init);
        Self {
            spec,
            containers,
            init,
            best_effort,
            totals,
        }
    }

    fn holders(&self) -> Vec<&Held> {
        self.containers.iter().chain(&self.init).collect()
    }

    /// The pod's usage of `field` as quota counts it (Kubernetes' `PodRequests`/`PodLimits`):
    /// a pod-level value when set, else the containers' total; plus the RuntimeClass's
    /// overhead (for a limit only where the pod has one).
    fn usage(&self, field: &Field) -> f64 {
        let pod_level = self
            .spec
            .resources
            .as_ref()
            .and_then(|r| field.in_quantities(r.requests.as_ref(), r.limits.as_ref()));
        let own = pod_level.or_else(|| field.in_amounts(&self.totals.0, &self.totals.1));
        let overhead = self
            .spec
            .overhead
            .as_ref()
            .and_then(|o| o.get(field.resource()))
            .map(|q| capacity::parse_quantity(&q.0).unwrap_or(f64::NAN));
        match (field, own, overhead) {
            (_, None, None) => 0.0,
            (Field::Limit(_), None, Some(_)) => 0.0,
            (_, own, overhead) => own.unwrap_or(0.0) + overhead.unwrap_or(0.0),
        }
    }
}

/// Why a quota with `hard` and `used` refuses the pod `side` (words after the quota's name):
/// with `skip_must_specify` false, also a container without a CPU or memory value it tracks;
/// then an amount the pod needs (above zero: Kubernetes leaves zero amounts out) without a
/// `used` entry ("status unknown for quota"), or beyond what is left.
fn refused_by(
    hard: &BTreeMap<String, Quantity>,
    used: &BTreeMap<String, Quantity>,
    side: &Side<'_>,
    skip_must_specify: bool,
) -> Option<String> {
    if !skip_must_specify && let Some((holder, resource)) = unstated(hard, &side.holders()) {
        return Some(format!(
            "tracks {resource}, and container {} does not set it",
            holder.name
        ));
    }
    for (resource, bound) in hard {
        let (needs, field) = if POD_COUNTS.contains(&resource.as_str()) {
            (1.0, None)
        } else if let Some(field) = Field::of(resource) {
            (side.usage(&field), Some(field))
        } else {
            continue;
        };
        if needs.is_nan() || needs <= 0.0 {
            continue;
        }
        let show = |v: f64| match &field {
            None => format!("{v}"),
            Some(field) => shown(field.resource(), v),
        };
        let Some(used) = used.get(resource) else {
            return Some(format!(
                "has no status for {resource} yet (the API server refuses a pod that needs it: \
                 \"status unknown for quota\")"
            ));
        };
        let amount = |q: &Quantity| capacity::parse_quantity(&q.0);
        let (Some(hard), Some(used)) = (amount(bound), amount(used)) else {
            continue;
        };
        if used + needs > hard * (1.0 + 1e-9) {
            return Some(format!(
                "has {} of {resource} left ({} of {} used); the pod with the sidecar needs {}: \
                 size spec.sidecar.resources within it, or raise the quota",
                show((hard - used).max(0.0)),
                show(used),
                bound.0,
                show(needs)
            ));
        }
    }
    None
}

/// Why the API server's ResourceQuota plugin would refuse the pod `spec` once `sidecar` is added
/// first among its init containers (after `ranges`' defaults) when it would admit the pod
/// without it, under `quotas`, the namespace's ResourceQuotas: what is wrong and what to do,
/// naming the quota; `None` otherwise. A quota is read as the API server's quota check reads
/// it, from its status (`status.hard`, `status.used`; a quota the quota controller has not
/// written a status for yet holds nothing back).
pub fn refusal(
    sidecar: &Container,
    spec: &PodSpec,
    quotas: &[ResourceQuota],
    ranges: &[LimitRange],
) -> Option<String> {
    let mut with_spec = spec.clone();
    with_spec
        .init_containers
        .get_or_insert_with(Vec::new)
        .insert(0, sidecar.clone());
    let with = Side::of(&with_spec, ranges);
    let without = Side::of(spec, ranges);
    let pod_level = pod_level_compute(spec, |_| true);
    for quota in quotas {
        let name = quota.metadata.name.as_deref().unwrap_or("?");
        let Some(status) = quota.status.as_ref() else {
            continue;
        };
        let Some(hard) = status.hard.as_ref() else {
            continue;
        };
        let used = status.used.clone().unwrap_or_default();
        if !selects(quota, &with_spec, with.best_effort) {
            continue;
        }
        let applies_without = selects(quota, spec, without.best_effort);
        // A pod this quota refuses without the sidecar is refused anyway: not the sidecar's
        // doing, whatever else it would break.
        if applies_without && refused_by(hard, &used, &without, pod_level).is_some() {
            continue;
        }
        if !pod_level && let Some((holder, resource)) = unstated(hard, &with.holders()) {
            return Some(if holder.name == sidecar.name {
                format!(
                    "ResourceQuota {name} tracks {resource}, so every container must set it, \
                     and the sidecar does not: set it in spec.sidecar.resources"
                )
            } else {
                format!(
                    "ResourceQuota {name} tracks {resource}, so every container must set it; \
                     it selects the pod only with the sidecar (whose requests end the pod's \
                     BestEffort class), and container {} does not set it: set it on every \
                     container of the application's pod",
                    holder.name
                )
            });
        }
        if let Some(why) = refused_by(hard, &used, &with, true) {
            return Some(format!("ResourceQuota {name} {why}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn default_sidecar() -> Container {
        serde_json::from_value(json!({"name": "facekey-runtime", "restartPolicy": "Always",
            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"},
                          "limits": {"memory": "1Gi"}}}))
        .unwrap()
    }

    fn pod(spec: serde_json::Value) -> PodSpec {
        serde_json::from_value(spec).unwrap()
    }

    fn quota(spec: serde_json::Value, used: serde_json::Value) -> ResourceQuota {
        serde_json::from_value(json!({"metadata": {"name": "team"}, "spec": spec,
            "status": {"hard": spec["hard"], "used": used}}))
        .unwrap()
    }

    fn app() -> PodSpec {
        pod(json!({"containers": [{"name": "app", "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"}}}]}))
    }

    /// A quota on `limits.cpu` makes every container set a CPU limit; the default sidecar sets
    /// none, so the API server would refuse the whole pod.
    #[test]
    fn a_quota_on_cpu_limits_needs_a_cpu_limit_on_the_sidecar() {
        let q = quota(
            json!({"hard": {"limits.cpu": "10"}}),
            json!({"limits.cpu": "1"}),
        );
        let why = refusal(&default_sidecar(), &app(), std::slice::from_ref(&q), &[]).unwrap();
        assert!(
            why.contains("ResourceQuota team tracks limits.cpu") && why.contains("the sidecar"),
            "{why}"
        );
        // A LimitRange default gives it one.
        let range: LimitRange = serde_json::from_value(json!({"metadata": {"name": "d"},
            "spec": {"limits": [{"type": "Container", "default": {"cpu": "1"}}]}}))
        .unwrap();
        assert_eq!(
            refusal(
                &default_sidecar(),
                &app(),
                std::slice::from_ref(&q),
                &[range]
            ),
            None
        );
        // An application container without one is refused anyway: not the sidecar's doing.
        let bare = pod(json!({"containers": [{"name": "app"}]}));
        assert_eq!(refusal(&default_sidecar(), &bare, &[q], &[]), None);
        // Requests the sidecar sets are fine.
        let q = quota(
            json!({"hard": {"requests.cpu": "10", "memory": "10Gi"}}),
            json!({}),
        );
        assert_eq!(refusal(&default_sidecar(), &app(), &[q], &[]), None);
    }

    /// The pod's usage with the sidecar against what the quota has left.
    #[test]
    fn a_quota_nearly_used_up_is_found() {
        let q = quota(
            json!({"hard": {"requests.memory": "4Gi"}}),
            json!({"requests.memory": "3Gi"}),
        );
        // 256Mi + 512Mi = 768Mi fits the 1Gi left; another 256Mi of app does not.
        assert_eq!(
            refusal(&default_sidecar(), &app(), std::slice::from_ref(&q), &[]),
            None
        );
        let two = pod(json!({"containers": [
            {"name": "a", "resources": {"requests": {"memory": "384Mi"}}},
            {"name": "b", "resources": {"requests": {"memory": "384Mi"}}}]}));
        let why = refusal(&default_sidecar(), &two, std::slice::from_ref(&q), &[]).unwrap();
        assert!(
            why.contains("has 1024Mi of requests.memory left") && why.contains("needs 1280Mi"),
            "{why}"
        );
        // Over the quota without the sidecar too: not the sidecar's doing.
        let full = quota(
            json!({"hard": {"requests.memory": "4Gi"}}),
            json!({"requests.memory": "4Gi"}),
        );
        assert_eq!(refusal(&default_sidecar(), &two, &[full], &[]), None);
    }

    /// Scopes: a NotBestEffort quota starts to hold a BestEffort pod once the sidecar gives it
    /// requests; a PriorityClass quota holds only the pods of its classes.
    #[test]
    fn scopes_are_judged_on_the_pod_with_the_sidecar() {
        let best_effort = pod(json!({"containers": [{"name": "app"}]}));
        let q = quota(
            json!({"hard": {"requests.cpu": "10"}, "scopes": ["NotBestEffort"]}),
            json!({"requests.cpu": "1"}),
        );
        // Room enough, but the quota now selects the pod and makes every container state a CPU
        // request, which the application's does not.
        let why = refusal(&default_sidecar(), &best_effort, &[q], &[]).unwrap();
        assert!(
            why.contains("requests.cpu") && why.contains("container app does not"),
            "{why}"
        );
        // The quota's pod count, full, newly holds the pod.
        let pods = quota(
            json!({"hard": {"pods": "5"}, "scopes": ["NotBestEffort"]}),
            json!({"pods": "5"}),
        );
        let why = refusal(
            &default_sidecar(),
            &best_effort,
            std::slice::from_ref(&pods),
            &[],
        )
        .unwrap();
        assert!(why.contains("has 0 of pods left"), "{why}");
        // A zero request leaves a pod BestEffort: the sidecar is what changes that.
        let zero = pod(json!({"containers": [{"name": "app",
            "resources": {"requests": {"cpu": "0"}}}]}));
        assert!(refusal(&default_sidecar(), &zero, std::slice::from_ref(&pods), &[]).is_some());
        // A pod the count already holds is held the same without the sidecar.
        assert_eq!(refusal(&default_sidecar(), &app(), &[pods], &[]), None);
        let gold = |class: &str| {
            quota(
                json!({"hard": {"requests.cpu": "1"}, "scopeSelector": {"matchExpressions": [
                    {"scopeName": "PriorityClass", "operator": "In", "values": [class]}]}}),
                json!({"requests.cpu": "500m"}),
            )
        };
        assert_eq!(
            refusal(&default_sidecar(), &app(), &[gold("gold")], &[]),
            None
        );
        let mut golden = app();
        golden.priority_class_name = Some("gold".into());
        assert!(refusal(&default_sidecar(), &golden, &[gold("gold")], &[]).is_some());
        let terminating = quota(
            json!({"hard": {"requests.cpu": "1"}, "scopes": ["Terminating"]}),
            json!({"requests.cpu": "1"}),
        );
        assert_eq!(
            refusal(&default_sidecar(), &app(), &[terminating], &[]),
            None
        );
    }

    /// A quota whose status the quota controller has not written holds nothing back, as at the
    /// API server; a resource without a `used` amount is not judged.
    #[test]
    fn a_quota_without_status_is_not_judged() {
        let unsynced: ResourceQuota = serde_json::from_value(json!({
            "metadata": {"name": "new"}, "spec": {"hard": {"limits.cpu": "4"}}}))
        .unwrap();
        assert_eq!(refusal(&default_sidecar(), &app(), &[unsynced], &[]), None);
        let no_used = quota(json!({"hard": {"requests.memory": "1Mi"}}), json!({}));
        assert_eq!(refusal(&default_sidecar(), &app(), &[no_used], &[]), None);
    }

    /// Pod-level resources are what quota counts when set: the sidecar's own add nothing.
    #[test]
    fn pod_level_resources_are_what_the_quota_counts() {
        let mut sized = app();
        sized.resources = Some(
            serde_json::from_value(json!({"requests": {"memory": "1Gi"},
                                          "limits": {"memory": "1Gi"}}))
            .unwrap(),
        );
        let q = quota(
            json!({"hard": {"limits.memory": "10Gi"}}),
            json!({"limits.memory": "8960Mi"}),
        );
        assert_eq!(refusal(&default_sidecar(), &sized, &[q], &[]), None);
    }

    /// A quota over its amount already, or without a status for what only the sidecar makes
    /// the pod need: judged as the API server does.
    #[test]
    fn zero_needs_and_missing_status_are_judged_as_the_api_server_does() {
        let best_effort = pod(json!({"containers": [{"name": "app"}]}));
        // Selects the pod only with the sidecar, and has no status for its pod count yet.
        let unsynced = quota(
            json!({"hard": {"pods": "10"}, "scopes": ["NotBestEffort"]}),
            json!({}),
        );
        let why = refusal(&default_sidecar(), &best_effort, &[unsynced], &[]).unwrap();
        assert!(why.contains("no status for pods yet"), "{why}");
        // No status for what the application's pod needs as well: refused anyway.
        let unknown = quota(json!({"hard": {"requests.cpu": "10"}}), json!({}));
        assert_eq!(refusal(&default_sidecar(), &app(), &[unknown], &[]), None);
        // Over its memory amount already: the pod is refused with or without the sidecar.
        let over = quota(
            json!({"hard": {"requests.memory": "1Gi"}}),
            json!({"requests.memory": "2Gi"}),
        );
        assert_eq!(refusal(&default_sidecar(), &app(), &[over], &[]), None);
    }

    /// Usage as Kubernetes sums it: a native sidecar runs beside the containers, an ordinary
    /// init container beside the sidecars started before it.
    #[test]
    fn usage_counts_native_sidecars_with_the_containers() {
        let mut spec = pod(json!({
            "containers": [{"name": "app", "resources": {"requests": {"cpu": "1"}}}],
            "initContainers": [
                {"name": "mesh", "restartPolicy": "Always",
                 "resources": {"requests": {"cpu": "200m"}}},
                {"name": "migrate", "resources": {"requests": {"cpu": "2"}}}]}));
        let cpu = Side::of(&spec, &[]).usage(&Field::Request("cpu".into()));
        assert!((cpu - 2.2).abs() < 1e-9, "{cpu}");
        // A RuntimeClass's overhead is added; a pod-level value replaces the containers'.
        spec.overhead = Some([("cpu".to_owned(), Quantity("100m".into()))].into());
        let cpu = Side::of(&spec, &[]).usage(&Field::Request("cpu".into()));
        assert!((cpu - 2.3).abs() < 1e-9, "{cpu}");
        spec.resources = Some(serde_json::from_value(json!({"requests": {"cpu": "4"}})).unwrap());
        let cpu = Side::of(&spec, &[]).usage(&Field::Request("cpu".into()));
        assert!((cpu - 4.1).abs() < 1e-9, "{cpu}");
    }
}
