//! The namespace's LimitRanges against the sidecar, as the API server's LimitRanger plugin will
//! hold it (pure): after a webhook changes a pod the API server runs its built-in mutating
//! plugins again, so LimitRanger fills in the sidecar's missing requests and limits from the
//! `Container` items' `defaultRequest` and `default`; its validation then refuses the **whole
//! pod** when the sidecar falls outside their `min`, `max` or `maxLimitRequestRatio`, or the pod
//! with the sidecar outside a `Pod` item's. Knowing that at admission, the webhook leaves the
//! sidecar out (`LimitRange`) instead of getting the application's pod refused.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, LimitRange, LimitRangeItem, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::desired::capacity;

/// Amounts per resource name (cores for `cpu`, bytes for memory and storage).
pub(crate) type Amounts = BTreeMap<String, f64>;

/// A LimitRange item as the API server stores it (Kubernetes' `SetDefaults_LimitRangeItem`): a
/// `Container` item's missing `default` taken from `max`, its missing `defaultRequest` from
/// `default`, then from `min`. Items read from the API server have them already; this keeps the
/// check right for objects that did not pass through it.
fn defaulted(item: &LimitRangeItem) -> LimitRangeItem {
    let mut item = item.clone();
    if item.type_ != "Container" {
        return item;
    }
    let mut default = item.default.take().unwrap_or_default();
    for (name, q) in item.max.iter().flatten() {
        default.entry(name.clone()).or_insert_with(|| q.clone());
    }
    let mut default_request = item.default_request.take().unwrap_or_default();
    for (name, q) in default.iter().chain(item.min.iter().flatten()) {
        default_request
            .entry(name.clone())
            .or_insert_with(|| q.clone());
    }
    item.default = Some(default);
    item.default_request = Some(default_request);
    item
}

/// The items of `type_` (`Container` or `Pod`) of `ranges`, defaulted, each with its
/// LimitRange's name.
fn items<'a>(
    ranges: &'a [LimitRange],
    type_: &'a str,
) -> impl Iterator<Item = (&'a str, LimitRangeItem)> + 'a {
    ranges.iter().flat_map(move |r| {
        let name = r.metadata.name.as_deref().unwrap_or("?");
        r.spec
            .iter()
            .flat_map(|s| s.limits.iter())
            .filter(move |item| item.type_ == type_)
            .map(move |item| (name, defaulted(item)))
    })
}

/// The amounts of a quantity map. A quantity this reader does not parse (the API server took
/// it) is kept as NaN: present, as the API server's checks of what a container sets see it, and
/// never above, below or over any bound, so it never makes the webhook leave the sidecar out.
fn amounts(quantities: &BTreeMap<String, Quantity>) -> Amounts {
    quantities
        .iter()
        .map(|(name, q)| {
            (
                name.clone(),
                capacity::parse_quantity(&q.0).unwrap_or(f64::NAN),
            )
        })
        .collect()
}

/// A container's requests and limits as the API server will have them: a request equal to the
/// limit where only a limit is set (pod defaulting, when the object is decoded), then the
/// LimitRanges' `defaultRequest`/`default` for what is still unset (LimitRanger).
pub(crate) fn effective(container: &Container, ranges: &[LimitRange]) -> (Amounts, Amounts) {
    let resources = container.resources.clone().unwrap_or_default();
    let mut requests = resources.requests.unwrap_or_default();
    let mut limits = resources.limits.unwrap_or_default();
    for (name, q) in &limits {
        requests.entry(name.clone()).or_insert_with(|| q.clone());
    }
    for (_, item) in items(ranges, "Container") {
        for (name, q) in item.default.iter().flatten() {
            limits.entry(name.clone()).or_insert_with(|| q.clone());
        }
        for (name, q) in item.default_request.iter().flatten() {
            requests.entry(name.clone()).or_insert_with(|| q.clone());
        }
    }
    (amounts(&requests), amounts(&limits))
}

/// An amount as a quantity (`1500m`, `768Mi`, bytes otherwise), for messages.
pub(crate) fn shown(resource: &str, amount: f64) -> String {
    const MI: f64 = 1024.0 * 1024.0;
    if resource == "cpu" {
        format!("{}m", (amount * 1000.0).round())
    } else if amount % MI == 0.0 {
        format!("{}Mi", amount / MI)
    } else {
        format!("{amount}")
    }
}

/// An amount in thousandths, rounded up as Kubernetes rounds a quantity's `MilliValue` (so
/// `100u` of CPU is `1m`), after taking off the noise of decimal suffixes read as binary
/// floating point (`700m` reads as 0.7000000000000001). NaN stays NaN.
fn milli(amount: f64) -> f64 {
    (amount * 1000.0 - 1e-6).ceil()
}

/// The first bound of `item` (LimitRange `name`, applying per `per`: "container" or "pod") that
/// `requests` and `limits` break, in words (LimitRanger's `minConstraint`, `maxConstraint` and
/// `limitRequestRatioConstraint`, which compare thousandths); `what` names the holder ("the
/// sidecar", "the pod with the sidecar").
fn broken(
    name: &str,
    per: &str,
    item: &LimitRangeItem,
    (requests, limits): (&Amounts, &Amounts),
    what: &str,
) -> Option<String> {
    let bound = |q: &Quantity| capacity::parse_quantity(&q.0).map(milli);
    let held = |m: &Amounts, resource: &str| m.get(resource).map(|v| milli(*v));
    for (resource, q) in item.max.iter().flatten() {
        let Some(max) = bound(q) else {
            continue;
        };
        let (limit, request) = (held(limits, resource), held(requests, resource));
        let Some(limit) = limit else {
            return Some(format!(
                "LimitRange {name} sets a maximum {resource} per {per} ({}) but {what} has no \
                 {resource} limit",
                q.0
            ));
        };
        let over = if limit > max {
            Some(("a limit", limits[resource]))
        } else if request.is_some_and(|r| r > max) {
            Some(("a request", requests[resource]))
        } else {
            None
        };
        if let Some((kind, amount)) = over {
            return Some(format!(
                "LimitRange {name} caps {resource} per {per} at {}; {what} has {kind} of {}",
                q.0,
                shown(resource, amount)
            ));
        }
    }
    for (resource, q) in item.min.iter().flatten() {
        let Some(min) = bound(q) else {
            continue;
        };
        let (limit, request) = (held(limits, resource), held(requests, resource));
        let under = match (request, limit) {
            (None, _) => Some("no request".to_owned()),
            (Some(r), _) if r < min => Some(format!(
                "a request of {}",
                shown(resource, requests[resource])
            )),
            (_, Some(l)) if l < min => {
                Some(format!("a limit of {}", shown(resource, limits[resource])))
            }
            _ => None,
        };
        if let Some(under) = under {
            return Some(format!(
                "LimitRange {name} requires at least {} {resource} per {per}; {what} has {under}",
                q.0
            ));
        }
    }
    for (resource, q) in item.max_limit_request_ratio.iter().flatten() {
        let Some(ratio) = bound(q) else {
            continue;
        };
        let (request, limit) = (
            held(requests, resource).unwrap_or(0.0),
            held(limits, resource).unwrap_or(0.0),
        );
        if request <= 0.0 || limit <= 0.0 {
            return Some(format!(
                "LimitRange {name} allows a {resource} limit at most {} times the request per \
                 {per}, and {what} has no {} for {resource}",
                q.0,
                if request <= 0.0 { "request" } else { "limit" }
            ));
        }
        if limit / request * 1000.0 > ratio {
            return Some(format!(
                "LimitRange {name} allows a {resource} limit at most {} times the request per \
                 {per}; {what} has {} over {}",
                q.0,
                shown(resource, limits[resource]),
                shown(resource, requests[resource])
            ));
        }
    }
    None
}

/// One container's requests and limits as the API server holds them ([`effective`]).
pub(crate) struct Held {
    /// The container's name.
    pub name: String,
    /// Its requests.
    pub requests: Amounts,
    /// Its limits.
    pub limits: Amounts,
    /// A native sidecar (`restartPolicy: Always` init container).
    pub sidecar: bool,
}

impl Held {
    /// `container` holding `requests` and `limits`.
    fn of(container: &Container, (requests, limits): (Amounts, Amounts)) -> Self {
        Self {
            name: container.name.clone(),
            requests,
            limits,
            sidecar: container.restart_policy.as_deref() == Some("Always"),
        }
    }

    /// `container`'s requests and limits as written, no default applied.
    pub(crate) fn as_written(container: &Container) -> Self {
        let resources = container.resources.clone().unwrap_or_default();
        let amounts_of = |m: Option<BTreeMap<String, Quantity>>| amounts(&m.unwrap_or_default());
        Self::of(
            container,
            (amounts_of(resources.requests), amounts_of(resources.limits)),
        )
    }
}

/// The pod's containers and init containers (in order), each held as the API server will.
pub(crate) fn held(spec: &PodSpec, ranges: &[LimitRange]) -> (Vec<Held>, Vec<Held>) {
    let hold = |c: &Container| Held::of(c, effective(c, ranges));
    (
        spec.containers.iter().map(hold).collect(),
        spec.init_containers.iter().flatten().map(hold).collect(),
    )
}

/// A pod's requests and limits as the API server totals them (Kubernetes' `podRequests` and
/// `podLimits`, used by LimitRanger's `Pod` items and by quota): per resource any container
/// sets, the containers and native sidecars together, or an ordinary init container beside the
/// sidecars started before it, whichever is larger.
pub(crate) fn pod_totals(containers: &[Held], init: &[Held]) -> (Amounts, Amounts) {
    let total = |pick: fn(&Held) -> &Amounts| {
        let mut sum = Amounts::new();
        let add = |into: &mut Amounts, from: &Amounts| {
            for (name, amount) in from {
                *into.entry(name.clone()).or_insert(0.0) += amount;
            }
        };
        for c in containers {
            add(&mut sum, pick(c));
        }
        let (mut sidecars, mut peak) = (Amounts::new(), Amounts::new());
        for c in init {
            let at_start = if c.sidecar {
                add(&mut sum, pick(c));
                add(&mut sidecars, pick(c));
                sidecars.clone()
            } else {
                let mut beside = sidecars.clone();
                add(&mut beside, pick(c));
                beside
            };
            for (name, amount) in at_start {
                let at = peak.entry(name).or_insert(amount);
                *at = at.max(amount);
            }
        }
        for (name, amount) in peak {
            let at = sum.entry(name).or_insert(amount);
            *at = at.max(amount);
        }
        sum
    };
    (total(|c| &c.requests), total(|c| &c.limits))
}

/// The first `Pod` item bound `spec` breaks, in words; `what` names the pod.
fn pod_refusal(spec: &PodSpec, ranges: &[LimitRange], what: &str) -> Option<String> {
    let (containers, init) = held(spec, ranges);
    let (requests, limits) = pod_totals(&containers, &init);
    items(ranges, "Pod")
        .find_map(|(name, item)| broken(name, "pod", &item, (&requests, &limits), what))
}

/// Why the API server would refuse the pod `spec` once `sidecar` is added first among its init
/// containers, under `ranges`, the namespace's LimitRanges, in words naming the LimitRange and
/// the bound; `None` when it would not, or when it would refuse the pod without the sidecar
/// too (a `Pod` bound the application breaks on its own is not the sidecar's doing).
pub fn refusal(sidecar: &Container, spec: &PodSpec, ranges: &[LimitRange]) -> Option<String> {
    let (requests, limits) = effective(sidecar, ranges);
    // A default limit below the sidecar's own request: the pod fails validation ("must be less
    // than or equal to cpu limit").
    let own_limits = sidecar
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .cloned()
        .unwrap_or_default();
    if let Some((resource, limit)) = limits
        .iter()
        .find(|(r, l)| requests.get(*r).is_some_and(|q| milli(*q) > milli(**l)))
    {
        let from = if own_limits.contains_key(resource) {
            "spec.sidecar.resources"
        } else {
            "the namespace's LimitRange defaults"
        };
        return Some(format!(
            "the sidecar's {resource} limit ({}, from {from}) is below its request ({})",
            shown(resource, *limit),
            shown(resource, requests[resource])
        ));
    }
    if let Some(why) = items(ranges, "Container").find_map(|(name, item)| {
        broken(
            name,
            "container",
            &item,
            (&requests, &limits),
            "the sidecar",
        )
    }) {
        return Some(why);
    }
    let mut with = spec.clone();
    with.init_containers
        .get_or_insert_with(Vec::new)
        .insert(0, sidecar.clone());
    pod_refusal(&with, ranges, "the pod with the sidecar")
        .filter(|_| pod_refusal(spec, ranges, "the pod").is_none())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn sidecar(resources: serde_json::Value) -> Container {
        serde_json::from_value(json!({"name": "facekey-runtime", "restartPolicy": "Always",
            "resources": resources}))
        .unwrap()
    }

    fn range(items: serde_json::Value) -> LimitRange {
        serde_json::from_value(json!({"metadata": {"name": "tenant"}, "spec": {"limits": items}}))
            .unwrap()
    }

    /// An application pod of containers with these resources.
    fn app(containers: serde_json::Value) -> PodSpec {
        let containers: Vec<serde_json::Value> = containers
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, r)| json!({"name": format!("app{i}"), "resources": r}))
            .collect();
        serde_json::from_value(json!({"containers": containers})).unwrap()
    }

    /// The operator's default sidecar resources.
    fn default_sidecar() -> Container {
        sidecar(
            json!({"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}),
        )
    }

    fn bare() -> PodSpec {
        app(json!([{}]))
    }

    #[test]
    fn bounds_the_api_server_would_enforce_are_found() {
        let s = default_sidecar();
        // Fits: defaults fill the missing CPU limit within the maximum.
        let roomy = range(json!([{"type": "Container",
            "max": {"cpu": "2", "memory": "2Gi"}, "default": {"cpu": "1"}}]));
        assert_eq!(refusal(&s, &bare(), &[roomy]), None);
        // A memory cap below the sidecar's limit.
        let small = range(json!([{"type": "Container", "max": {"memory": "512Mi"},
            "default": {"memory": "512Mi"}}]));
        let why = refusal(&s, &bare(), &[small]).unwrap();
        assert!(
            why.contains("caps memory per container at 512Mi") && why.contains("1024Mi"),
            "{why}"
        );
        // A minimum request above the sidecar's.
        let floor = range(json!([{"type": "Container", "min": {"cpu": "1"}}]));
        let why = refusal(&s, &bare(), &[floor]).unwrap();
        assert!(why.contains("at least 1 cpu"), "{why}");
        // Guaranteed-only namespaces: limit = request.
        let ratio = range(json!([{"type": "Container", "maxLimitRequestRatio": {"memory": "1"}}]));
        let why = refusal(&s, &bare(), &[ratio]).unwrap();
        assert!(why.contains("at most 1 times"), "{why}");
    }

    /// The API server stores a LimitRange with its `Container` defaults filled in from `max`
    /// and `min`: a maximum alone gives the sidecar's missing CPU limit, which then fits.
    #[test]
    fn a_maximum_alone_is_also_the_default_limit() {
        let s = default_sidecar();
        let max_only = range(json!([{"type": "Container", "max": {"cpu": "4"}}]));
        assert_eq!(refusal(&s, &bare(), &[max_only]), None);
        // A maximum below the sidecar's request is its default limit too, below the request.
        let low = range(json!([{"type": "Container", "max": {"cpu": "250m"}}]));
        let why = refusal(&s, &bare(), &[low]).unwrap();
        assert!(
            why.contains("cpu limit (250m, from the namespace's LimitRange defaults)"),
            "{why}"
        );
    }

    /// LimitRanger refuses a ratio it cannot compute: no limit (or no request) at all.
    #[test]
    fn a_ratio_over_a_resource_the_sidecar_does_not_limit_is_refused() {
        let s = default_sidecar();
        let ratio = range(json!([{"type": "Container", "maxLimitRequestRatio": {"cpu": "4"}}]));
        let why = refusal(&s, &bare(), std::slice::from_ref(&ratio)).unwrap();
        assert!(why.contains("has no limit for cpu"), "{why}");
        // A default limit fills it.
        let with_default = range(json!([{"type": "Container",
            "maxLimitRequestRatio": {"cpu": "4"}, "default": {"cpu": "1"}}]));
        assert_eq!(refusal(&s, &bare(), &[with_default]), None);
    }

    #[test]
    fn a_limit_alone_is_also_the_request() {
        // Only a limit: pod defaulting makes it the request, which the minimum accepts.
        let s = sidecar(json!({"limits": {"cpu": "2", "memory": "1Gi"}}));
        let floor = range(json!([{"type": "Container", "min": {"cpu": "1", "memory": "1Gi"}}]));
        assert_eq!(refusal(&s, &bare(), &[floor]), None);
        // Pod defaulting comes first: a default request does not lower it.
        let lower = range(json!([{"type": "Container", "min": {"cpu": "1"},
            "defaultRequest": {"cpu": "100m"}}]));
        assert_eq!(refusal(&s, &bare(), &[lower]), None);
        // A default request fills what is missing before the minimum is checked.
        let s = sidecar(json!({}));
        let defaults = range(json!([{"type": "Container", "min": {"cpu": "100m"},
            "defaultRequest": {"cpu": "200m"}}]));
        assert_eq!(refusal(&s, &bare(), &[defaults]), None);
    }

    /// `Pod` items bound the pod as the API server totals it: the containers and native sidecars
    /// together (any container setting a resource counts it), or an ordinary init container
    /// beside the sidecars started before it.
    #[test]
    fn pod_bounds_count_the_sidecar_with_the_containers() {
        let s = default_sidecar();
        let pod_max = |memory: &str| {
            range(json!([{"type": "Pod", "max": {"memory": memory}},
                {"type": "Container", "default": {"memory": "256Mi"}}]))
        };
        let two = app(json!([{"limits": {"memory": "300Mi"}}, {"limits": {"memory": "300Mi"}}]));
        // 600Mi of containers and the sidecar's 1Gi: 1624Mi, over a 1.5Gi cap.
        let why = refusal(&s, &two, &[pod_max("1536Mi")]).unwrap();
        assert!(
            why.contains("caps memory per pod at 1536Mi")
                && why.contains("the pod with the sidecar has a limit of 1624Mi"),
            "{why}"
        );
        assert_eq!(refusal(&s, &two, &[pod_max("2Gi")]), None);
        // A pod the cap refuses without the sidecar is not the sidecar's doing.
        let big = app(json!([{"limits": {"memory": "768Mi"}}, {"limits": {"memory": "768Mi"}}]));
        assert_eq!(refusal(&s, &big, &[pod_max("1Gi")]), None);
        // An ordinary init container runs beside the sidecar: its own 1Gi and the sidecar's.
        let mut migrating = app(json!([{"limits": {"memory": "100Mi"}}]));
        migrating.init_containers = Some(vec![
            serde_json::from_value(json!({"name": "migrate",
                "resources": {"limits": {"memory": "1Gi"}}}))
            .unwrap(),
        ]);
        let why = refusal(&s, &migrating, &[pod_max("1536Mi")]).unwrap();
        assert!(why.contains("has a limit of 2048Mi"), "{why}");
        // A Pod maximum on CPU: the sidecar sets no CPU limit and adds none.
        let cpu = range(json!([{"type": "Pod", "max": {"cpu": "4"}}]));
        let limited = app(json!([{"limits": {"cpu": "1"}}]));
        assert_eq!(refusal(&s, &limited, std::slice::from_ref(&cpu)), None);
        // A sidecar given a CPU limit adds it to the application's.
        let greedy = sidecar(json!({"limits": {"cpu": "3500m"}}));
        let why = refusal(&greedy, &limited, &[cpu]).unwrap();
        assert!(
            why.contains("caps cpu per pod at 4") && why.contains("4500m"),
            "{why}"
        );
        // A Pod minimum: the sidecar can only add to the pod.
        let floor = range(json!([{"type": "Pod", "min": {"memory": "128Mi"}}]));
        let small = app(json!([{"requests": {"memory": "64Mi"}}]));
        assert_eq!(refusal(&s, &small, &[floor]), None);
    }

    /// A default CPU limit below the sidecar's request: the pod fails validation.
    #[test]
    fn a_default_limit_below_the_sidecars_request_is_found() {
        let s = default_sidecar();
        let low = range(json!([{"type": "Container", "default": {"cpu": "200m"}}]));
        let why = refusal(&s, &bare(), &[low]).unwrap();
        assert!(
            why.contains(
                "cpu limit (200m, from the namespace's LimitRange defaults) is below \
                          its request (500m)"
            ),
            "{why}"
        );
        // 100u of CPU is 1m to the API server, as `min: 1m` asks.
        let tiny = sidecar(json!({"requests": {"cpu": "100u"}, "limits": {"cpu": "1m"}}));
        let floor = range(json!([{"type": "Container", "min": {"cpu": "1m"}}]));
        assert_eq!(refusal(&tiny, &bare(), &[floor]), None);
        // 700m is 700m, whatever binary floating point makes of it.
        let exact = sidecar(json!({"requests": {"cpu": "700m"}, "limits": {"cpu": "700m"}}));
        let cap = range(json!([{"type": "Container", "max": {"cpu": "0.7"}}]));
        assert_eq!(refusal(&exact, &bare(), &[cap]), None);
    }

    /// A quantity this reader does not parse is present (the API server's "must set" checks)
    /// and breaks no bound (the sidecar is not left out on a guess).
    #[test]
    fn an_unread_quantity_breaks_no_bound() {
        let odd = sidecar(json!({"requests": {"cpu": "1x"}, "limits": {"cpu": "2x"}}));
        let bounds = range(
            json!([{"type": "Container", "max": {"cpu": "1"}, "min": {"cpu": "1"},
            "maxLimitRequestRatio": {"cpu": "1"}}]),
        );
        assert_eq!(refusal(&odd, &bare(), &[bounds]), None);
    }
}
