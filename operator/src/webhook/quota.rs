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

use k8s_openapi::api::core::v1::{Container, LimitRange, PodSpec, ResourceQuota};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::limit_range::{Held, held, pod_totals, shown};
use crate::desired::capacity;

/// The quota resources that make every container state a value ("BACKWARD COMPATIBILITY
/// REQUIREMENT" of Kubernetes' pod evaluator): each with the container field that provides it.
const MUST_SPECIFY: [(&str, Field); 6] = [
    ("cpu", Field::Request("cpu")),
    ("requests.cpu", Field::Request("cpu")),
    ("limits.cpu", Field::Limit("cpu")),
    ("memory", Field::Request("memory")),
    ("requests.memory", Field::Request("memory")),
    ("limits.memory", Field::Limit("memory")),
];

/// The pod-count resources: a quota that selects the pod only with the sidecar counts it.
const POD_COUNTS: [&str; 2] = ["pods", "count/pods"];

/// Which container value a quota resource counts.
#[derive(Clone, Copy, Debug)]
enum Field {
    Request(&'static str),
    Limit(&'static str),
}

impl Field {
    fn of(
        amounts: (&super::limit_range::Amounts, &super::limit_range::Amounts),
        field: Self,
    ) -> Option<f64> {
        match field {
            Field::Request(r) => amounts.0.get(r).copied(),
            Field::Limit(r) => amounts.1.get(r).copied(),
        }
    }

    fn resource(self) -> &'static str {
        match self {
            Field::Request(r) | Field::Limit(r) => r,
        }
    }
}

/// The container field a quota resource counts (`cpu`, `requests.memory`, `limits.cpu`, …).
fn field_of(resource: &str) -> Option<Field> {
    MUST_SPECIFY
        .iter()
        .find(|(name, _)| *name == resource)
        .map(|(_, f)| *f)
}

/// Whether a pod is of the BestEffort QoS class: no container sets a CPU or memory request or
/// limit above zero (Kubernetes' `ComputePodQOS`).
fn best_effort(containers: &[Held], init: &[Held]) -> bool {
    containers.iter().chain(init).all(|h| {
        ["cpu", "memory"].iter().all(|r| {
            [&h.requests, &h.limits]
                .iter()
                .all(|m| m.get(*r).is_none_or(|v| *v <= 0.0))
        })
    })
}

/// Whether the pod `spec` uses cross-namespace pod affinity (a term naming namespaces or a
/// namespace selector).
fn cross_namespace_affinity(spec: &PodSpec) -> bool {
    let Some(affinity) = spec.affinity.as_ref() else {
        return false;
    };
    let affinity_terms = affinity.pod_affinity.iter().flat_map(|a| {
        let required = a
            .required_during_scheduling_ignored_during_execution
            .iter()
            .flatten();
        let preferred = a
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .map(|w| &w.pod_affinity_term);
        required.chain(preferred)
    });
    let anti_terms = affinity.pod_anti_affinity.iter().flat_map(|a| {
        let required = a
            .required_during_scheduling_ignored_during_execution
            .iter()
            .flatten();
        let preferred = a
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .map(|w| &w.pod_affinity_term);
        required.chain(preferred)
    });
    affinity_terms.chain(anti_terms).any(|t| {
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
    hard: &std::collections::BTreeMap<String, Quantity>,
    holders: &[&'a Held],
) -> Option<(&'a Held, &'static str)> {
    MUST_SPECIFY
        .iter()
        .filter(|(resource, _)| hard.contains_key(*resource))
        .find_map(|(resource, field)| {
            holders
                .iter()
                .find(|h| Field::of((&h.requests, &h.limits), *field).is_none())
                .map(|h| (*h, *resource))
        })
}

/// One side of the comparison: the pod with or without the sidecar.
struct Side {
    containers: Vec<Held>,
    init: Vec<Held>,
    best_effort: bool,
    totals: (super::limit_range::Amounts, super::limit_range::Amounts),
}

impl Side {
    fn of(spec: &PodSpec, ranges: &[LimitRange]) -> Self {
        let (containers, init) = held(spec, ranges);
        let best_effort = best_effort(&containers, &init);
        let totals = pod_totals(&containers, &init);
        Self {
            containers,
            init,
            best_effort,
            totals,
        }
    }

    fn holders(&self) -> Vec<&Held> {
        self.containers.iter().chain(&self.init).collect()
    }

    fn usage(&self, field: Field) -> f64 {
        Field::of((&self.totals.0, &self.totals.1), field).unwrap_or(0.0)
    }
}

/// Why the API server's ResourceQuota plugin would refuse the pod `spec` once `sidecar` is added
/// first among its init containers (after `ranges`' defaults) when it would admit the pod
/// without it, under `quotas`, the namespace's ResourceQuotas, in words naming the quota; `None`
/// otherwise. A quota is read as the API server's quota check reads it: its `status.hard` and
/// `status.used` (a quota whose status the quota controller has not written yet holds nothing
/// back), so a resource without a `used` amount is not judged.
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
    // Pod-level resources lift the per-container requirement (Kubernetes 1.32+).
    let pod_level = spec
        .resources
        .as_ref()
        .is_some_and(|r| r.requests.is_some() || r.limits.is_some());
    for quota in quotas {
        let name = quota.metadata.name.as_deref().unwrap_or("?");
        let Some(status) = quota.status.as_ref() else {
            continue;
        };
        let (Some(hard), used) = (
            status.hard.as_ref(),
            status.used.clone().unwrap_or_default(),
        ) else {
            continue;
        };
        if !selects(quota, &with_spec, with.best_effort) {
            continue;
        }
        let applies_without = selects(quota, spec, without.best_effort);
        if !pod_level
            && let Some((holder, resource)) = unstated(hard, &with.holders())
            && !(applies_without && unstated(hard, &without.holders()).is_some())
        {
            let who = if holder.name == sidecar.name {
                "the sidecar does not".to_owned()
            } else {
                format!(
                    "container {} does not (the quota selects the pod only with the sidecar)",
                    holder.name
                )
            };
            return Some(format!(
                "ResourceQuota {name} tracks {resource}, so every container must set it, and {who}"
            ));
        }
        for (resource, bound) in hard {
            let Some(used) = used.get(resource) else {
                continue;
            };
            let (needs, needed_without, base) = if POD_COUNTS.contains(&resource.as_str()) {
                (1.0, if applies_without { 1.0 } else { 0.0 }, "pods")
            } else if let Some(field) = field_of(resource) {
                let without_usage = if applies_without {
                    without.usage(field)
                } else {
                    0.0
                };
                (with.usage(field), without_usage, field.resource())
            } else {
                continue;
            };
            let amount = |q: &Quantity| capacity::parse_quantity(&q.0);
            let (Some(hard), Some(used)) = (amount(bound), amount(used)) else {
                continue;
            };
            let over = |n: f64| used + n > hard * (1.0 + 1e-9);
            if over(needs) && !over(needed_without) {
                let show = |v: f64| {
                    if base == "pods" {
                        format!("{v}")
                    } else {
                        shown(base, v)
                    }
                };
                return Some(format!(
                    "ResourceQuota {name} has {} of {resource} left ({} of {} used); the pod \
                     with the sidecar needs {}",
                    show((hard - used).max(0.0)),
                    show(used),
                    bound.0,
                    show(needs)
                ));
            }
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

    /// Usage as Kubernetes sums it: a native sidecar runs beside the containers, an ordinary
    /// init container beside the sidecars started before it.
    #[test]
    fn usage_counts_native_sidecars_with_the_containers() {
        let side = Side::of(
            &pod(json!({
                "containers": [{"name": "app", "resources": {"requests": {"cpu": "1"}}}],
                "initContainers": [
                    {"name": "mesh", "restartPolicy": "Always",
                     "resources": {"requests": {"cpu": "200m"}}},
                    {"name": "migrate", "resources": {"requests": {"cpu": "2"}}}]})),
            &[],
        );
        let cpu = side.usage(Field::Request("cpu"));
        assert!((cpu - 2.2).abs() < 1e-9, "{cpu}");
    }
}
