//! The namespace's LimitRanges against the sidecar, as the API server's LimitRanger plugin will
//! hold it (pure): after a webhook changes a pod the API server runs its built-in mutating
//! plugins again, so LimitRanger fills in the sidecar's missing requests and limits from the
//! `Container` items' `defaultRequest` and `default`; its validation then refuses the **whole
//! pod** when the sidecar falls outside their `min`, `max` or `maxLimitRequestRatio`. Knowing
//! that at admission, the webhook leaves the sidecar out (`LimitRange`) instead of getting the
//! application's pod refused.
//!
//! `Pod` items (bounds on the sum over a pod's containers) are not checked.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, LimitRange};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::desired::capacity;

/// The amount of `resource` in `q` (cores for `cpu`, bytes for memory and storage), if it parses.
fn amount(resource: &str, q: &Quantity) -> Option<f64> {
    capacity::amount(resource, &q.0)
}

/// The sidecar's requests and limits as the API server will have them: the LimitRanges'
/// `defaultRequest`/`default` for what it leaves unset (LimitRanger, run again after the
/// webhook), then a request equal to the limit where only a limit is set (pod defaulting).
fn effective(
    container: &Container,
    ranges: &[LimitRange],
) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let resources = container.resources.clone().unwrap_or_default();
    let mut requests = resources.requests.unwrap_or_default();
    let mut limits = resources.limits.unwrap_or_default();
    for (_, item) in container_items(ranges) {
        for (name, q) in item.default.iter().flatten() {
            limits.entry(name.clone()).or_insert_with(|| q.clone());
        }
        for (name, q) in item.default_request.iter().flatten() {
            requests.entry(name.clone()).or_insert_with(|| q.clone());
        }
    }
    for (name, q) in &limits {
        requests.entry(name.clone()).or_insert_with(|| q.clone());
    }
    (requests, limits)
}

/// The `Container` items of `ranges`, each with its LimitRange's name.
fn container_items(
    ranges: &[LimitRange],
) -> impl Iterator<Item = (&str, &k8s_openapi::api::core::v1::LimitRangeItem)> {
    ranges.iter().flat_map(|r| {
        let name = r.metadata.name.as_deref().unwrap_or("?");
        r.spec
            .iter()
            .flat_map(|s| s.limits.iter())
            .filter(|item| item.type_ == "Container")
            .map(move |item| (name, item))
    })
}

/// Why the API server would refuse a pod with `container` (the sidecar) under `ranges`, the
/// namespace's LimitRanges, in words naming the LimitRange and the bound; `None` when it fits.
pub fn refusal(container: &Container, ranges: &[LimitRange]) -> Option<String> {
    let (requests, limits) = effective(container, ranges);
    for (name, item) in container_items(ranges) {
        for (resource, bound) in item.max.iter().flatten() {
            let Some(max) = amount(resource, bound) else {
                continue;
            };
            match limits.get(resource).and_then(|q| amount(resource, q)) {
                None => {
                    return Some(format!(
                        "LimitRange {name} sets a maximum {resource} per container ({}) but \
                             the sidecar has no {resource} limit and the LimitRange no default",
                        bound.0
                    ));
                }
                Some(limit) if limit > max * (1.0 + 1e-9) => {
                    return Some(format!(
                        "LimitRange {name} caps {resource} per container at {}; the \
                             sidecar's limit is {}",
                        bound.0, limits[resource].0
                    ));
                }
                Some(_) => {}
            }
        }
        for (resource, bound) in item.min.iter().flatten() {
            let Some(min) = amount(resource, bound) else {
                continue;
            };
            let request = requests.get(resource).and_then(|q| amount(resource, q));
            if request.is_none_or(|r| r < min * (1.0 - 1e-9)) {
                return Some(format!(
                    "LimitRange {name} requires at least {} {resource} per container; the \
                         sidecar requests {}",
                    bound.0,
                    requests.get(resource).map_or("none", |q| q.0.as_str())
                ));
            }
        }
        for (resource, bound) in item.max_limit_request_ratio.iter().flatten() {
            let Some(ratio) = amount("cpu", bound) else {
                continue;
            };
            let limit = limits.get(resource).and_then(|q| amount(resource, q));
            let request = requests.get(resource).and_then(|q| amount(resource, q));
            if let (Some(limit), Some(request)) = (limit, request)
                && request > 0.0
                && limit / request > ratio * (1.0 + 1e-9)
            {
                return Some(format!(
                    "LimitRange {name} allows a {resource} limit at most {} times the \
                         request; the sidecar's is {} over {}",
                    bound.0, limits[resource].0, requests[resource].0
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

    fn sidecar(resources: serde_json::Value) -> Container {
        serde_json::from_value(json!({"name": "facekey-runtime", "resources": resources})).unwrap()
    }

    fn range(items: serde_json::Value) -> LimitRange {
        serde_json::from_value(json!({"metadata": {"name": "tenant"}, "spec": {"limits": items}}))
            .unwrap()
    }

    /// The operator's default sidecar resources.
    fn default_sidecar() -> Container {
        sidecar(
            json!({"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}),
        )
    }

    #[test]
    fn bounds_the_api_server_would_enforce_are_found() {
        let s = default_sidecar();
        // Fits: defaults fill the missing CPU limit within the maximum.
        let roomy = range(json!([{"type": "Container",
            "max": {"cpu": "2", "memory": "2Gi"}, "default": {"cpu": "1"}}]));
        assert_eq!(refusal(&s, &[roomy]), None);
        // A memory cap below the sidecar's limit.
        let small = range(json!([{"type": "Container", "max": {"memory": "512Mi"},
            "default": {"memory": "512Mi"}}]));
        let why = refusal(&s, &[small]).unwrap();
        assert!(
            why.contains("caps memory per container at 512Mi") && why.contains("1Gi"),
            "{why}"
        );
        // A minimum request above the sidecar's.
        let floor = range(json!([{"type": "Container", "min": {"cpu": "1"}}]));
        assert!(refusal(&s, &[floor]).unwrap().contains("at least 1 cpu"));
        // Guaranteed-only namespaces: limit = request.
        let ratio = range(json!([{"type": "Container", "maxLimitRequestRatio": {"memory": "1"}}]));
        assert!(refusal(&s, &[ratio]).unwrap().contains("at most 1 times"));
        // A maximum without a default: the missing CPU limit is refused.
        let no_default = range(json!([{"type": "Container", "max": {"cpu": "4"}}]));
        let why = refusal(&s, &[no_default]).unwrap();
        assert!(why.contains("no cpu limit"), "{why}");
        // Pod items are not held against the sidecar alone.
        let pod = range(json!([{"type": "Pod", "max": {"memory": "256Mi"}}]));
        assert_eq!(refusal(&s, &[pod]), None);
    }

    #[test]
    fn a_limit_alone_is_also_the_request() {
        // Only a limit: pod defaulting makes it the request, which the minimum accepts.
        let s = sidecar(json!({"limits": {"cpu": "2", "memory": "1Gi"}}));
        let floor = range(json!([{"type": "Container", "min": {"cpu": "1", "memory": "1Gi"}}]));
        assert_eq!(refusal(&s, &[floor]), None);
        // A default request fills what is missing before the minimum is checked.
        let s = sidecar(json!({}));
        let defaults = range(json!([{"type": "Container", "min": {"cpu": "100m"},
            "defaultRequest": {"cpu": "200m"}}]));
        assert_eq!(refusal(&s, &[defaults]), None);
    }
}
