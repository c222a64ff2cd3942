//! The rate limit on the webhook's Events. The webhook's port takes no client certificate and any
//! pod can reach it, so anyone can post reviews naming any namespace (`kube-system` included):
//! without a limit, each forged review of a pod that does not get its sidecar would write a
//! Warning Event there. Events are limited per (namespace, reason) and per namespace (governor's
//! GCRA, a token bucket), in maps of bounded size, so a flood of forged reviews writes a bounded
//! number of Events and holds bounded memory however many namespaces it names. Pure but for the
//! clock, which tests replace.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::{Quota, RateLimiter};

/// `n` as a `NonZeroU32` in a constant (1 for 0).
const fn non_zero(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

/// Events of one reason in one namespace: a burst of 10, then one per 10 s. A real refusal
/// loop (a ReplicaSet retrying a refused pod) is told by its first Events; the kube recorder
/// folds repeats for the same resource into one Event's series anyway.
pub const PER_REASON: Quota = Quota::per_minute(non_zero(6)).allow_burst(non_zero(10));

/// Events of every reason in one namespace: a burst of 20, then one per 5 s.
pub const PER_NAMESPACE: Quota = Quota::per_minute(non_zero(12)).allow_burst(non_zero(20));

/// Keys each of the two maps holds at most (a few hundred bytes each: a namespace name is at
/// most 63 bytes).
pub const MAX_KEYS: usize = 4096;

/// Longest namespace name (a DNS-1123 label).
const MAX_NAMESPACE_LENGTH: usize = 63;

/// The limits of an [`EventLimiter`].
#[derive(Clone, Copy, Debug)]
pub struct EventLimits {
    /// Events of one reason in one namespace ([`PER_REASON`]).
    pub per_reason: Quota,
    /// Events of every reason in one namespace ([`PER_NAMESPACE`]).
    pub per_namespace: Quota,
    /// Keys each map holds at most ([`MAX_KEYS`]).
    pub max_keys: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        Self {
            per_reason: PER_REASON,
            per_namespace: PER_NAMESPACE,
            max_keys: MAX_KEYS,
        }
    }
}

/// Whether an Event may be published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within every limit.
    Publish,
    /// Over the limit of its reason in its namespace.
    OverReasonLimit,
    /// Over the limit of its namespace (its reason's was not; that one is spent all the same).
    OverNamespaceLimit,
    /// Not a namespace name: no such namespace can exist, and the API server would refuse
    /// the Event. Not kept, so a long name cannot hold memory.
    InvalidNamespace,
}

/// Governor's state (the GCRA's "theoretical arrival time") per key, for at most `max` keys. A
/// new key past that replaces the key with the earliest time, the fullest bucket: one a forged
/// review touched once is dropped long before one a flood has drained (which, dropped, would
/// start again full).
#[derive(Debug)]
struct BoundedStore<K> {
    max: usize,
    map: Mutex<HashMap<K, Nanos>>,
}

impl<K> BoundedStore<K> {
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<K, Nanos>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Hash + Eq + Clone> StateStore for BoundedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut map = self.map();
        let previous = map.get(key).copied();
        let (outcome, next) = f(previous)?;
        if previous.is_none() && map.len() >= self.max {
            let fullest = map
                .iter()
                .min_by_key(|(_, tat)| **tat)
                .map(|(k, _)| k.clone());
            if let Some(fullest) = fullest {
                map.remove(&fullest);
            }
        }
        map.insert(key.clone(), next);
        Ok(outcome)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for BoundedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.map().retain(|_, tat| *tat > drop_below);
    }

    fn len(&self) -> usize {
        self.map().len()
    }

    fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
}

/// A keyed limiter over a [`BoundedStore`].
type Keyed<K, C> = RateLimiter<K, BoundedStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Decides which of the webhook's Events are published ([`Verdict`]).
#[derive(Debug)]
pub struct EventLimiter<C: Clock = MonotonicClock> {
    per_reason: Keyed<(String, &'static str), C>,
    per_namespace: Keyed<String, C>,
}

impl EventLimiter {
    /// A limiter on the monotonic clock.
    pub fn new(limits: EventLimits) -> Self {
        Self::with_clock(limits, MonotonicClock)
    }
}

impl Default for EventLimiter {
    fn default() -> Self {
        Self::new(EventLimits::default())
    }
}

impl<C: Clock + Clone> EventLimiter<C> {
    /// A limiter on `clock` (tests pass a fake one).
    pub fn with_clock(limits: EventLimits, clock: C) -> Self {
        Self {
            per_reason: RateLimiter::new(
                limits.per_reason,
                BoundedStore::new(limits.max_keys),
                clock.clone(),
            ),
            per_namespace: RateLimiter::new(
                limits.per_namespace,
                BoundedStore::new(limits.max_keys),
                clock,
            ),
        }
    }
}

impl<C: Clock> EventLimiter<C> {
    /// Whether an Event of `reason` in `namespace` may be published now; one that may is
    /// counted against both limits. Its reason's limit is checked first, so a flood of one
    /// reason spends nothing of what the namespace's other reasons may publish.
    pub fn check(&self, namespace: &str, reason: &'static str) -> Verdict {
        if !is_namespace_name(namespace) {
            return Verdict::InvalidNamespace;
        }
        if self
            .per_reason
            .check_key(&(namespace.to_owned(), reason))
            .is_err()
        {
            return Verdict::OverReasonLimit;
        }
        if self.per_namespace.check_key(&namespace.to_owned()).is_err() {
            return Verdict::OverNamespaceLimit;
        }
        Verdict::Publish
    }
}

/// Whether `s` can name a namespace: a DNS-1123 label (lowercase letters, digits and `-`, at most
/// 63, starting and ending with a letter or digit).
fn is_namespace_name(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= MAX_NAMESPACE_LENGTH
        && s.chars().all(|c| alnum(c) || c == '-')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limiter() -> (EventLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            EventLimiter::with_clock(EventLimits::default(), clock.clone()),
            clock,
        )
    }

    /// How many of `n` Events of `reason` in `namespace` are published now.
    fn published<C: Clock>(
        l: &EventLimiter<C>,
        namespace: &str,
        reason: &'static str,
        n: usize,
    ) -> usize {
        (0..n)
            .filter(|_| l.check(namespace, reason) == Verdict::Publish)
            .count()
    }

    #[test]
    fn a_burst_then_one_per_ten_seconds() {
        let (l, clock) = limiter();
        assert_eq!(published(&l, "kube-system", "UnknownResource", 1000), 10);
        assert_eq!(
            l.check("kube-system", "UnknownResource"),
            Verdict::OverReasonLimit
        );
        clock.advance(Duration::from_secs(9));
        assert_eq!(published(&l, "kube-system", "UnknownResource", 100), 0);
        clock.advance(Duration::from_secs(1));
        assert_eq!(published(&l, "kube-system", "UnknownResource", 100), 1);
        // A minute later: six more, not a new burst.
        clock.advance(Duration::from_secs(60));
        assert_eq!(published(&l, "kube-system", "UnknownResource", 100), 6);
        // Quiet long enough, the burst is back.
        clock.advance(Duration::from_secs(100));
        assert_eq!(published(&l, "kube-system", "UnknownResource", 100), 10);
    }

    #[test]
    fn namespaces_and_reasons_are_limited_apart() {
        let (l, _) = limiter();
        assert_eq!(published(&l, "kube-system", "UnknownResource", 50), 10);
        assert_eq!(published(&l, "shop", "UnknownResource", 50), 10);
        assert_eq!(published(&l, "kube-system", "NoAdmittedImage", 50), 10);
    }

    #[test]
    fn a_namespace_is_limited_over_every_reason() {
        let (l, clock) = limiter();
        let reasons = [
            "UnknownResource",
            "NoAdmittedImage",
            "PortConflict",
            "HostNetwork",
        ];
        let mut total = 0;
        for _ in 0..20 {
            for reason in reasons {
                total += published(&l, "shop", reason, 1);
            }
        }
        assert_eq!(total, 20);
        assert_eq!(l.check("shop", "WindowsPod"), Verdict::OverNamespaceLimit);
        clock.advance(Duration::from_secs(5));
        assert_eq!(published(&l, "shop", "WindowsPod", 10), 1);
    }

    #[test]
    fn a_flood_of_one_reason_leaves_the_namespace_its_other_reasons() {
        let (l, _) = limiter();
        assert_eq!(published(&l, "shop", "UnknownResource", 10_000), 10);
        // The namespace spent 10 of its 20, not 10 000.
        assert_eq!(published(&l, "shop", "NoAdmittedImage", 100), 10);
    }

    #[test]
    fn random_namespaces_hold_bounded_memory_and_reset_no_drained_bucket() {
        let clock = FakeRelativeClock::default();
        let l = EventLimiter::with_clock(
            EventLimits {
                max_keys: 64,
                ..EventLimits::default()
            },
            clock.clone(),
        );
        assert_eq!(published(&l, "kube-system", "UnknownResource", 100), 10);
        for i in 0..10_000 {
            l.check(&format!("forged-{i}"), "UnknownResource");
            if i % 1000 == 0 {
                clock.advance(Duration::from_millis(100));
            }
        }
        let (reasons, namespaces) = (l.per_reason.len(), l.per_namespace.len());
        assert!(reasons <= 64 && namespaces <= 64, "{reasons} {namespaces}");
        // Still drained: the forged namespaces' fuller buckets were dropped instead.
        assert_eq!(published(&l, "kube-system", "UnknownResource", 100), 0);
    }

    #[test]
    fn names_no_namespace_can_have_are_never_published_nor_kept() {
        let (l, _) = limiter();
        let long = "a".repeat(64);
        for ns in ["", "Kube-System", "-a", "a-", "a_b", "a.b", long.as_str()] {
            assert_eq!(
                l.check(ns, "UnknownResource"),
                Verdict::InvalidNamespace,
                "{ns:?}"
            );
        }
        assert!(l.per_reason.is_empty() && l.per_namespace.is_empty());
        assert_eq!(published(&l, &"a".repeat(63), "UnknownResource", 1), 1);
    }
}
