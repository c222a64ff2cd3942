//! How much inference a runtime container is configured for, and how long it may take to stop,
//! from its resources: without this the runtime sizes itself to the cores it sees, which in a pod
//! without a CPU limit are the whole node's (8 sessions per model on a large node, ~790 MB of
//! weights in a pod limited to 1 GiB), and the kubelet's default 30 s grace period would cut
//! its drain short.
//!
//! Pure functions of the spec; the Deployment and the sidecar write their results as
//! `FACEKEY_SESSIONS_PER_MODEL`, `FACEKEY_MAX_INFLIGHT` and `terminationGracePeriodSeconds`.

use k8s_openapi::api::core::v1::ResourceRequirements;

use facekey_settings::defaults;

/// Fewest sessions per model the operator configures: with one, a single slow request (a large
/// image, a crowd photo) holds up every other.
pub const MIN_SESSIONS: usize = 2;
/// Most sessions per model the operator configures (the runtime's own default bound).
pub const MAX_SESSIONS: usize = defaults::MAX_DEFAULT_SESSIONS;
/// Resident memory of the runtime with its default models before the per-session copies,
/// rounded up from the measurement (242 MB with 2 sessions per model, 787 MB with 8; see
/// `runtime/src/memory_check.rs`).
pub const BASE_MEMORY_BYTES: u64 = 64 * MIB;
/// Resident memory each further session per model adds (measured ~91 MB, rounded up).
pub const SESSION_MEMORY_BYTES: u64 = 96 * MIB;
/// Resident memory of one template in every replica's index (README: 50 000 ≈ 270 MB).
pub const TEMPLATE_MEMORY_BYTES: u64 = 5_500;
/// Share of the memory limit the models, the request-body budget and the template index may
/// take: the runtime's start-up warning's share.
pub const MEMORY_SHARE: f64 = defaults::MEMORY_SHARE;
/// `FACEKEY_SHUTDOWN_DELAY_SECS` of pods behind the Service: time for the endpoints controller
/// and the proxies to stop sending new connections while the pod keeps serving.
pub const SHUTDOWN_DELAY_SECS: u64 = 5;
/// Slack between the runtime's own exit deadline and the kubelet's SIGKILL.
const EXIT_MARGIN_SECS: u64 = 5;
const MIB: u64 = 1024 * 1024;

/// Sessions per model (and in-flight inferences) for a container with `resources` whose store
/// may hold `templates` templates: one per core of its CPU limit, else of its request (rounded
/// up), within [`MIN_SESSIONS`]..=[`MAX_SESSIONS`]; then no more than its memory limit (else
/// request) holds beside a full template index, but never fewer than one. `None` when the
/// resources name neither CPU nor memory: the runtime's own default applies.
pub fn sessions_per_model(resources: &ResourceRequirements, templates: u64) -> Option<usize> {
    let cpu = quantity(resources, "cpu").and_then(|q| parse_cpu(&q));
    let memory = quantity(resources, "memory").and_then(|q| parse_memory(&q));
    if cpu.is_none() && memory.is_none() {
        return None;
    }
    let by_cpu = cpu.map_or(MAX_SESSIONS, |cores| {
        // Float to count: a finite non-negative number of cores, ceil'd and clamped.
        (cores.ceil() as usize).clamp(MIN_SESSIONS, MAX_SESSIONS)
    });
    let by_memory = memory.map_or(MAX_SESSIONS, |limit| sessions_in_memory(limit, templates));
    Some(by_cpu.min(by_memory).max(1))
}

/// Sessions per model whose weights, with the request-body budget and `templates` templates,
/// fit in [`MEMORY_SHARE`] of `limit` bytes.
fn sessions_in_memory(limit: u64, templates: u64) -> usize {
    let budget = (limit as f64 * MEMORY_SHARE) as u64;
    let fixed = BASE_MEMORY_BYTES
        + defaults::MAX_BODY_MEMORY_BYTES as u64
        + templates.saturating_mul(TEMPLATE_MEMORY_BYTES);
    (budget.saturating_sub(fixed) / SESSION_MEMORY_BYTES) as usize
}

/// `terminationGracePeriodSeconds` of runtime pods: the shutdown delay, the runtime's drain
/// (`FACEKEY_SHUTDOWN_TIMEOUT_SECS`), its wait for queued alert emails, and a margin, so the
/// kubelet never kills a runtime that is still finishing requests or mail.
pub fn termination_grace_period_seconds() -> i64 {
    let secs = SHUTDOWN_DELAY_SECS
        + defaults::SHUTDOWN_TIMEOUT_SECS
        + defaults::ALERT_FLUSH_TIMEOUT_SECS
        + EXIT_MARGIN_SECS;
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// The limit named `name`, else its request.
fn quantity(resources: &ResourceRequirements, name: &str) -> Option<String> {
    [&resources.limits, &resources.requests]
        .into_iter()
        .flatten()
        .find_map(|m| m.get(name))
        .map(|q| q.0.clone())
}

/// Cores of a CPU quantity (`"500m"`, `"2"`, `"1.5"`, `"250000u"`); `None` when it is not one.
pub fn parse_cpu(q: &str) -> Option<f64> {
    parse_quantity(q)
}

/// Bytes of a memory quantity (`"512Mi"`, `"1G"`, `"1e9"`, `"1073741824"`), rounded up as the
/// API server rounds a quantity's value; `None` when it is not one (the API server would have
/// refused it).
pub fn parse_memory(q: &str) -> Option<u64> {
    // Float to integer: finite and non-negative checked, saturating at u64::MAX.
    parse_quantity(q).map(|bytes| bytes.ceil() as u64)
}

/// The value of a Kubernetes quantity: a decimal number with a binary (`Ki` … `Ei`) or decimal
/// (`n`, `u`, `m`, `k`, `M` … `E`) suffix or an exponent (`1e3`); `None` when it is not one, or
/// negative.
pub fn parse_quantity(q: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 15] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("Pi", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("Ei", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let q = q.trim();
    let (number, scale) = SUFFIXES
        .iter()
        .find_map(|(suffix, scale)| q.strip_suffix(suffix).map(|n| (n, *scale)))
        .unwrap_or((q, 1.0));
    // A number only: no sign other than the API server's, no "inf" or "NaN" words.
    if number.is_empty()
        || !number
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    let value = number.parse::<f64>().ok()? * scale;
    (value.is_finite() && value >= 0.0).then_some(value)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;

    fn resources(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> ResourceRequirements {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
                    .collect::<BTreeMap<_, _>>(),
            )
            .filter(|m| !m.is_empty())
        };
        ResourceRequirements {
            requests: map(requests),
            limits: map(limits),
            ..ResourceRequirements::default()
        }
    }

    #[test]
    fn parses_cpu_and_memory_quantities() {
        assert_eq!(parse_cpu("500m"), Some(0.5));
        assert_eq!(parse_cpu("2"), Some(2.0));
        assert_eq!(parse_cpu("1.5"), Some(1.5));
        assert_eq!(parse_cpu("lots"), None);
        assert_eq!(parse_cpu("-1"), None);
        assert_eq!(parse_cpu("250000u"), Some(0.25));
        assert_eq!(parse_cpu("1k"), Some(1000.0));
        assert_eq!(parse_cpu("5e-1"), Some(0.5));
        assert_eq!(parse_cpu("inf"), None);
        assert_eq!(parse_memory("1E"), Some(1_000_000_000_000_000_000));
        assert_eq!(parse_memory("1e3"), Some(1000));
        assert_eq!(parse_memory("1500m"), Some(2), "rounded up");
        assert_eq!(parse_memory("512Mi"), Some(512 * MIB));
        assert_eq!(parse_memory("1Gi"), Some(1024 * MIB));
        assert_eq!(parse_memory("1G"), Some(1_000_000_000));
        assert_eq!(parse_memory("1e9"), Some(1_000_000_000));
        assert_eq!(parse_memory("1073741824"), Some(1024 * MIB));
        assert_eq!(parse_memory("much"), None);
    }

    /// The runtime's default template bound.
    const TEMPLATES: u64 = defaults::MAX_TEMPLATES as u64;

    #[test]
    fn the_default_resources_get_two_sessions() {
        // 500m requested, no CPU limit, 1 GiB memory limit.
        let r = super::super::runtime::default_resources();
        assert_eq!(sessions_per_model(&r, TEMPLATES), Some(2));
    }

    #[test]
    fn cpu_limit_wins_over_request_and_is_clamped() {
        let r = resources(&[("cpu", "1")], &[("cpu", "3500m")]);
        assert_eq!(sessions_per_model(&r, TEMPLATES), Some(4));
        let r = resources(&[("cpu", "64")], &[]);
        assert_eq!(sessions_per_model(&r, TEMPLATES), Some(MAX_SESSIONS));
        let r = resources(&[("cpu", "100m")], &[]);
        assert_eq!(sessions_per_model(&r, TEMPLATES), Some(MIN_SESSIONS));
    }

    #[test]
    fn memory_bounds_the_sessions() {
        // 1 GiB: 0.8 GiB - 64 MiB - 128 MiB body budget - 262 MiB for 50 000 templates = 365 MiB,
        // three 96 MiB sessions; without templates 627 MiB, six.
        let r = resources(&[("cpu", "8")], &[("memory", "1Gi")]);
        assert_eq!(sessions_per_model(&r, TEMPLATES), Some(3));
        assert_eq!(sessions_per_model(&r, 0), Some(6));
        let r = resources(&[("cpu", "8")], &[("memory", "4Gi")]);
        assert_eq!(sessions_per_model(&r, TEMPLATES), Some(8));
        // A tiny limit still gets one session (the runtime warns at start).
        let r = resources(&[("cpu", "4")], &[("memory", "128Mi")]);
        assert_eq!(sessions_per_model(&r, TEMPLATES), Some(1));
        // Memory alone (no CPU named) bounds the runtime's per-core default.
        let r = resources(&[], &[("memory", "768Mi")]);
        assert_eq!(sessions_per_model(&r, 10_000), Some(3));
    }

    #[test]
    fn a_larger_template_index_leaves_fewer_sessions() {
        let r = resources(&[("cpu", "8")], &[("memory", "2Gi")]);
        let few = sessions_per_model(&r, 1_000);
        let many = sessions_per_model(&r, 200_000);
        assert_eq!((few, many), (Some(8), Some(4)));
        // An index that alone passes the share: one session, never zero.
        assert_eq!(sessions_per_model(&r, 10_000_000), Some(1));
    }

    #[test]
    fn without_cpu_or_memory_the_runtime_decides() {
        assert_eq!(sessions_per_model(&resources(&[], &[]), TEMPLATES), None);
        let r = resources(&[("nvidia.com/gpu", "1")], &[]);
        assert_eq!(sessions_per_model(&r, TEMPLATES), None);
    }

    #[test]
    fn the_grace_period_covers_delay_drain_and_mail() {
        let grace = termination_grace_period_seconds();
        let needed = SHUTDOWN_DELAY_SECS
            + defaults::SHUTDOWN_TIMEOUT_SECS
            + defaults::ALERT_FLUSH_TIMEOUT_SECS;
        assert!(u64::try_from(grace).is_ok_and(|g| g > needed), "{grace}");
    }
}
