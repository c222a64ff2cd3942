//! Admission control for inference: at most `in_flight` model runs at once, at most `queue`
//! more waiting for a place, and anything beyond answered at once as overloaded instead of
//! joining an unbounded queue. A login path wants a fast "try again" over a slow timeout, and a
//! bounded number of concurrent inferences bounds memory (each can hold 100-250 MB).
//!
//! The queue is also bounded in time: a request waits at most `max_wait` for a place, and one
//! whose wait is already predicted to exceed it (its place in the queue times the recent
//! service time, over the places running) is refused at once rather than after waiting in
//! vain, so the excess under overload gets its 503 in milliseconds and an accepted request's
//! latency stays near one service time plus `max_wait`.
//!
//! Queueing is for bursts, not for overload: while the offered load (arrival rate times service
//! time, over the running places) stays above `queue_max_load`, a request that finds every place
//! busy is refused at once instead of queueing. Under sustained overload a queue serves no more
//! requests, it only makes every accepted one wait (on a small machine that alone doubles the
//! accepted p99), while below capacity it absorbs the bursts a random arrival process brings,
//! which a short fixed queue would shed. The switch is the standing-queue test of CoDel-style
//! servers, judged on the arrival rate so that the shedding itself does not hide the overload.
//!
//! A waiting request that goes away (client disconnected, deadline passed) gives its place back
//! as soon as its future is dropped; a running one keeps its place until its model work ends.
//!
//! The running places are shared among API keys by demand ([`Admission::admit_for`],
//! [`key_caps`]), so that one key sending more than the places serve cannot leave every other
//! key with 503s. Each key's demand is its arrival rate times the service time (in places); a
//! key asking for less than an equal share is allotted what it asks for (at least one place),
//! the keys asking for more share the rest equally. Every key takes a free place at once, so a
//! key alone (or beside idle ones) keeps the whole capacity. What the share changes is who may
//! wait: a key within its share may wait for the next place even while the offered load is over
//! `queue_max_load`, and the waiting are served before any new arrival, while a key at its
//! share gets no more than the free places then and, refused, is told so with [`KeyShareFull`]
//! (429 `too_many_inferences`) rather than 503. Without a queue (`queue` 0) nobody waits, and
//! the share only names the refusal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request was refused a place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OverloadReason {
    /// Running and queue were full.
    QueueFull,
    /// Every place was running and the offered load was above `queue_max_load`: no queueing.
    OverCapacity {
        /// The offered load (arrivals x service time / running places) at the time.
        offered_load: f64,
    },
    /// The wait predicted from the queue ahead and the recent service time exceeded the bound.
    WaitPredicted {
        /// The predicted wait.
        predicted: Duration,
    },
    /// The request waited the whole bound without a place coming free.
    WaitedTooLong,
}

impl OverloadReason {
    /// Every metric label, so each series exists from the start.
    pub const LABELS: [&'static str; 4] = [
        "queue_full",
        "over_capacity",
        "wait_predicted",
        "waited_too_long",
    ];

    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            OverloadReason::QueueFull => "queue_full",
            OverloadReason::OverCapacity { .. } => "over_capacity",
            OverloadReason::WaitPredicted { .. } => "wait_predicted",
            OverloadReason::WaitedTooLong => "waited_too_long",
        }
    }
}

impl std::fmt::Display for OverloadReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OverloadReason::QueueFull => f.write_str("running and queue are full"),
            OverloadReason::OverCapacity { offered_load } => write!(
                f,
                "every place is running and the offered load is {offered_load:.2}x capacity, \
                 so requests do not queue"
            ),
            OverloadReason::WaitPredicted { predicted } => write!(
                f,
                "the wait for a place is predicted at {} ms, over the bound",
                predicted.as_millis()
            ),
            OverloadReason::WaitedTooLong => f.write_str("no place came free within the bound"),
        }
    }
}

/// The service is at capacity: the caller should retry after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error(
    "overloaded: {reason} ({in_flight} inferences running, {queued} waiting); retry in {} s",
    retry_after.as_secs()
)]
pub struct Overloaded {
    /// Why.
    pub reason: OverloadReason,
    /// Inferences running when the request was refused.
    pub in_flight: usize,
    /// Requests waiting when it was refused.
    pub queued: usize,
    /// When to retry.
    pub retry_after: Duration,
}

/// The request's key holds its share of the places while other keys ask for places too, and no
/// place was free: it should retry after `retry_after` (429 `too_many_inferences`).
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error(
    "too many inferences for this key: it holds {held} inference places (running and waiting) \
     and its share of the {in_flight} running places while {keys} keys ask for them is {cap}; \
     {refused}; retry in {} s",
    retry_after.as_secs()
)]
pub struct KeyShareFull {
    /// Places the key held (running and waiting).
    pub held: usize,
    /// Its share of the running places ([`key_caps`]).
    pub cap: usize,
    /// Keys asking for places now, the key included.
    pub keys: usize,
    /// The running places.
    pub in_flight: usize,
    /// Why no place was given beyond its share.
    pub refused: OverloadReason,
    /// When to retry.
    pub retry_after: Duration,
}

impl KeyShareFull {
    /// The `reason` label of `facekey_admission_rejected_total` for this refusal.
    pub const LABEL: &'static str = "key_share";
}

/// Why a keyed request got no place: its key's share, or the service's capacity.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum Refused {
    /// The key holds its share while other keys need the rest.
    #[error(transparent)]
    KeyShare(#[from] KeyShareFull),
    /// Every place is taken.
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
}

impl Refused {
    /// The `reason` label of `facekey_admission_rejected_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Refused::KeyShare(_) => KeyShareFull::LABEL,
            Refused::Overloaded(o) => o.reason.label(),
        }
    }
}

/// Counts for metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionStats {
    /// Inferences running now.
    pub in_flight: usize,
    /// Requests waiting now.
    pub queued: usize,
    /// Requests refused since start.
    pub rejected: u64,
    /// Recent service time (how long an inference holds its place, moving average), once one
    /// has finished.
    pub service_time: Option<Duration>,
    /// Offered load now (arrival rate x service time / running places), once a service time
    /// is known: above 1 more arrives than the places can serve.
    pub offered_load: Option<f64>,
}

/// The limits of [`Admission`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Inferences running at once (at least 1).
    pub in_flight: usize,
    /// Requests waiting beyond them.
    pub queue: usize,
    /// Longest wait for a place, and the bound a predicted wait is checked against.
    pub max_wait: Duration,
    /// Offered load above which a request that finds every place busy is refused instead of
    /// queued (1 = exactly as much arrives as the places serve).
    pub queue_max_load: f64,
}

/// The admission controller shared by every request.
#[derive(Debug)]
pub struct Admission {
    running: Arc<Semaphore>,
    limits: Limits,
    admitted: Arc<AtomicUsize>,
    rejected: AtomicU64,
    service: Arc<ServiceTime>,
    arrivals: Arrivals,
    keys: KeyUses,
}

/// A place among the running inferences; given back when dropped, when its hold time feeds the
/// service-time average.
#[derive(Debug)]
pub struct Permit {
    _running: OwnedSemaphorePermit,
    _place: Place,
    _key: Option<KeyPlace>,
    since: Instant,
    service: Arc<ServiceTime>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.service.record(self.since.elapsed());
    }
}

/// A reserved place (running or waiting), released on drop.
#[derive(Debug)]
struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What each key holds and asks for; a key is forgotten once it holds nothing and its arrival
/// rate has decayed below [`KEY_FORGET_RATE`].
type KeyUses = Arc<Mutex<HashMap<Arc<str>, KeyUse>>>;

/// Arrivals per second below which a key holding no place no longer counts as asking for one:
/// about 5 s after its last arrival.
pub const KEY_FORGET_RATE: f64 = 0.05;

/// One key's use of the places.
#[derive(Debug, Clone, Copy, Default)]
struct KeyUse {
    /// Places held, running and waiting.
    held: usize,
    /// Its arrivals, refused ones included (that is its demand).
    arrivals: ArrivalRate,
}

/// A place counted against its key; released on drop.
#[derive(Debug)]
struct KeyPlace {
    keys: KeyUses,
    key: Arc<str>,
}

impl Drop for KeyPlace {
    fn drop(&mut self) {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(used) = keys.get_mut(&self.key) {
            used.held = used.held.saturating_sub(1);
        }
    }
}

/// A key's standing when it asked for a place.
#[derive(Debug, Clone, Copy)]
struct Share {
    /// Places it held before this request.
    held: usize,
    /// Its share of the running places.
    cap: usize,
    /// Keys asking for places, it included.
    keys: usize,
}

/// Each key's share of `capacity` places, max-min fair by demand (in places): keys asking for less
/// than an equal share of what is left get what they ask for, rounded up; the others share the
/// rest equally, rounded down; every key at least one place. The order is that of `demands`.
pub fn key_caps(capacity: usize, demands: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..demands.len()).collect();
    order.sort_by(|&a, &b| demands[a].total_cmp(&demands[b]));
    let mut caps = vec![0; demands.len()];
    let mut left = capacity as f64;
    for (served, &i) in order.iter().enumerate() {
        let equal = left / (demands.len() - served) as f64;
        let demand = if demands[i].is_finite() {
            demands[i].max(0.0)
        } else {
            f64::INFINITY
        };
        if demand > equal {
            // This key and every one after it asks for more than an equal share of the rest.
            for &j in &order[served..] {
                caps[j] = (equal.floor() as usize).max(1);
            }
            break;
        }
        caps[i] = (demand.ceil() as usize).max(1);
        left = (left - demand.ceil()).max(0.0);
    }
    caps
}

/// Exponentially weighted moving average of hold times in microseconds (0: none yet), weight
/// 1/8 per sample: it follows a change of image sizes or machine load within a few dozen
/// requests without jumping on one slow outlier.
#[derive(Debug, Default)]
struct ServiceTime(AtomicU64);

impl ServiceTime {
    fn record(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                Some(if old == 0 {
                    sample
                } else {
                    // old + (sample - old) / 8, in signed arithmetic.
                    let next = i128::from(old) + (i128::from(sample) - i128::from(old)) / 8;
                    u64::try_from(next.max(1)).unwrap_or(u64::MAX)
                })
            });
    }

    fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

/// Time constant of the arrival-rate estimate: long enough that the random bunching of
/// arrivals at 80 % load does not read as overload (at 13/s the estimate's spread is about
/// +-14 %), short enough that a drop in load restores queueing within a few seconds.
pub const ARRIVAL_TIME_CONSTANT: Duration = Duration::from_secs(2);

/// An exponentially decayed count of arrivals: each adds `1/tau` to a rate that decays with
/// time constant `tau`, so steady arrivals at `r` per second hold it near `r`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ArrivalRate {
    /// Rate per second as of `at`.
    rate: f64,
    /// Seconds since the estimator's epoch.
    at: f64,
}

impl ArrivalRate {
    /// The rate at `now` (seconds since the epoch), decayed since the last arrival.
    pub fn at(self, now: f64, tau: Duration) -> f64 {
        let elapsed = (now - self.at).max(0.0);
        self.rate * (-elapsed / tau.as_secs_f64()).exp()
    }

    /// The estimate after an arrival at `now`.
    pub fn arrive(self, now: f64, tau: Duration) -> Self {
        Self {
            rate: self.at(now, tau) + 1.0 / tau.as_secs_f64(),
            at: now.max(self.at),
        }
    }
}

/// The offered load: how many running places the arrivals would keep busy, over the places
/// there are (1 = exactly full).
pub fn offered_load(arrivals_per_sec: f64, service: Duration, in_flight: usize) -> f64 {
    arrivals_per_sec * service.as_secs_f64() / in_flight.max(1) as f64
}

/// The shared arrival-rate estimate.
#[derive(Debug)]
struct Arrivals {
    epoch: Instant,
    rate: Mutex<ArrivalRate>,
}

impl Arrivals {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            rate: Mutex::new(ArrivalRate::default()),
        }
    }

    /// Count an arrival; the rate including it.
    fn arrive(&self) -> f64 {
        let now = self.epoch.elapsed().as_secs_f64();
        let mut rate = self.rate.lock().unwrap_or_else(PoisonError::into_inner);
        *rate = rate.arrive(now, ARRIVAL_TIME_CONSTANT);
        rate.rate
    }

    /// The rate now, without an arrival.
    fn get(&self) -> f64 {
        let now = self.epoch.elapsed().as_secs_f64();
        let rate = *self.rate.lock().unwrap_or_else(PoisonError::into_inner);
        rate.at(now, ARRIVAL_TIME_CONSTANT)
    }
}

/// The wait of the `position`-th request in the queue (1 = next) when every one of `in_flight`
/// places is busy and each holds its place for `service` on average: the places free up
/// `in_flight` at a time per service time, so it is served after `ceil(position / in_flight)`
/// rounds, the first of which is on average half over.
pub fn predicted_wait(position: usize, in_flight: usize, service: Duration) -> Duration {
    let in_flight = in_flight.max(1);
    let rounds = position.max(1).div_ceil(in_flight) as u32;
    service.saturating_mul(rounds).saturating_sub(service / 2)
}

impl Admission {
    /// An admission controller with these limits.
    pub fn new(limits: Limits) -> Self {
        let limits = Limits {
            in_flight: limits.in_flight.max(1),
            ..limits
        };
        Self {
            running: Arc::new(Semaphore::new(limits.in_flight)),
            limits,
            admitted: Arc::new(AtomicUsize::new(0)),
            rejected: AtomicU64::new(0),
            service: Arc::new(ServiceTime::default()),
            arrivals: Arrivals::new(),
            keys: KeyUses::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn overloaded(&self, reason: OverloadReason) -> Overloaded {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let stats = self.stats();
        Overloaded {
            reason,
            in_flight: stats.in_flight,
            queued: stats.queued,
            retry_after: Duration::from_secs(1),
        }
    }

    fn permit(&self, running: OwnedSemaphorePermit, place: Place) -> Permit {
        Permit {
            _running: running,
            _place: place,
            _key: None,
            since: Instant::now(),
            service: self.service.clone(),
        }
    }

    /// A place to run an inference: at once when one is free, after a short wait when the
    /// offered load is within `queue_max_load`, the queue has room and the predicted wait is
    /// within the bound, else [`Overloaded`] immediately.
    pub async fn admit(&self) -> Result<Permit, Overloaded> {
        self.admit_arrived(self.arrivals.arrive(), false).await
    }

    /// [`Admission::admit`] for a request already counted in `arrivals_per_sec`; with
    /// `may_wait` it may wait for a place whatever the offered load.
    async fn admit_arrived(
        &self,
        arrivals_per_sec: f64,
        may_wait: bool,
    ) -> Result<Permit, Overloaded> {
        // Reserve a place among running + waiting; `ahead` is how many held one before.
        let (place, ahead) = {
            let capacity = self.limits.in_flight + self.limits.queue;
            let mut current = self.admitted.load(Ordering::Acquire);
            loop {
                if current >= capacity {
                    return Err(self.overloaded(OverloadReason::QueueFull));
                }
                match self.admitted.compare_exchange_weak(
                    current,
                    current + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break (Place(self.admitted.clone()), current),
                    Err(now) => current = now,
                }
            }
        };
        if let Ok(running) = self.running.clone().try_acquire_owned() {
            return Ok(self.permit(running, place));
        }
        // Every place runs: this request is behind the others waiting.
        let position = ahead.saturating_sub(self.limits.in_flight) + 1;
        if let Some(service) = self.service.get() {
            let load = offered_load(arrivals_per_sec, service, self.limits.in_flight);
            if load > self.limits.queue_max_load && !may_wait {
                drop(place);
                return Err(self.overloaded(OverloadReason::OverCapacity { offered_load: load }));
            }
            let predicted = predicted_wait(position, self.limits.in_flight, service);
            if predicted > self.limits.max_wait {
                drop(place);
                return Err(self.overloaded(OverloadReason::WaitPredicted { predicted }));
            }
        }
        match tokio::time::timeout(self.limits.max_wait, self.running.clone().acquire_owned()).await
        {
            Ok(Ok(running)) => Ok(self.permit(running, place)),
            // Timed out waiting, or the semaphore closed (never closed here).
            Ok(Err(_)) | Err(_) => {
                drop(place);
                Err(self.overloaded(OverloadReason::WaitedTooLong))
            }
        }
    }

    /// A place for a request of API key `key`: as [`Admission::admit`], but while other keys ask
    /// for places too, a key within its share ([`key_caps`]) may wait for one whatever the
    /// offered load, and a key at its share that is refused gets [`KeyShareFull`]. The key's
    /// arrival counts towards its demand whether or not it gets a place.
    pub async fn admit_for(&self, key: &str) -> Result<Permit, Refused> {
        let arrivals_per_sec = self.arrivals.arrive();
        let (place, share) = self.take_key_place(key);
        let within = share.is_some_and(|s| s.held < s.cap);
        match self.admit_arrived(arrivals_per_sec, within).await {
            Ok(mut permit) => {
                permit._key = Some(place);
                Ok(permit)
            }
            Err(overloaded) => Err(match share {
                Some(share) if !within => KeyShareFull {
                    held: share.held,
                    cap: share.cap,
                    keys: share.keys,
                    in_flight: self.limits.in_flight,
                    refused: overloaded.reason,
                    retry_after: overloaded.retry_after,
                }
                .into(),
                _ => overloaded.into(),
            }),
        }
    }

    /// Count the key's arrival and a place against it; its share when other keys ask for places
    /// too and a service time is known.
    fn take_key_place(&self, key: &str) -> (KeyPlace, Option<Share>) {
        let now = self.arrivals.epoch.elapsed().as_secs_f64();
        let tau = ARRIVAL_TIME_CONSTANT;
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let stored = match keys.get_key_value(key) {
            Some((stored, _)) => stored.clone(),
            None => {
                let stored: Arc<str> = Arc::from(key);
                keys.insert(stored.clone(), KeyUse::default());
                stored
            }
        };
        if let Some(used) = keys.get_mut(key) {
            used.arrivals = used.arrivals.arrive(now, tau);
        }
        keys.retain(|_, u| u.held > 0 || u.arrivals.at(now, tau) >= KEY_FORGET_RATE);
        let share = match self.service.get() {
            Some(service) if keys.len() > 1 => {
                let ids: Vec<&Arc<str>> = keys.keys().collect();
                let demands: Vec<f64> = ids
                    .iter()
                    .map(|k| {
                        let u = keys[*k];
                        (u.arrivals.at(now, tau) * service.as_secs_f64()).max(u.held as f64)
                    })
                    .collect();
                let caps = key_caps(self.limits.in_flight, &demands);
                ids.iter().position(|k| ***k == *key).map(|me| Share {
                    held: keys[ids[me]].held,
                    cap: caps[me],
                    keys: ids.len(),
                })
            }
            _ => None,
        };
        if let Some(used) = keys.get_mut(key) {
            used.held += 1;
        }
        let place = KeyPlace {
            keys: self.keys.clone(),
            key: stored,
        };
        (place, share)
    }

    /// Running, waiting and refused counts.
    pub fn stats(&self) -> AdmissionStats {
        let running = self.limits.in_flight - self.running.available_permits();
        let admitted = self.admitted.load(Ordering::Acquire);
        let service_time = self.service.get();
        AdmissionStats {
            in_flight: running,
            queued: admitted.saturating_sub(running),
            rejected: self.rejected.load(Ordering::Relaxed),
            service_time,
            offered_load: service_time
                .map(|s| offered_load(self.arrivals.get(), s, self.limits.in_flight)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn admission(in_flight: usize, queue: usize, max_wait: Duration) -> Admission {
        Admission::new(Limits {
            in_flight,
            queue,
            max_wait,
            queue_max_load: f64::INFINITY,
        })
    }

    #[tokio::test]
    async fn runs_queues_then_refuses_at_once() {
        let a = Arc::new(admission(1, 1, Duration::from_secs(10)));
        let first = a.admit().await.unwrap();
        assert_eq!(a.stats().in_flight, 1);
        // The second waits in the queue.
        let waiting = {
            let a = a.clone();
            tokio::spawn(async move { a.admit().await.map(|_p| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(a.stats().queued, 1);
        // The third finds running and queue full: refused without waiting.
        let started = std::time::Instant::now();
        let err = a.admit().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(50));
        assert_eq!((err.in_flight, err.queued), (1, 1));
        assert_eq!(err.reason, OverloadReason::QueueFull);
        assert_eq!(err.retry_after, Duration::from_secs(1));
        assert_eq!(a.stats().rejected, 1);
        // Freeing the running place admits the waiting one.
        drop(first);
        waiting.await.unwrap().unwrap();
        assert_eq!(a.stats().in_flight, 0);
        assert_eq!(a.stats().queued, 0);
    }

    #[tokio::test]
    async fn a_waiter_that_goes_away_gives_its_place_back() {
        let a = Arc::new(admission(1, 1, Duration::from_secs(10)));
        let _running = a.admit().await.unwrap();
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.admit().await.map(|_p| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(a.stats().queued, 1);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(
            a.stats().queued,
            0,
            "the dropped waiter's place is free again"
        );
        // So the queue has room for the next one.
        let next = {
            let a = a.clone();
            tokio::spawn(async move { a.admit().await.map(|_p| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(a.stats().queued, 1);
        next.abort();
    }

    #[tokio::test]
    async fn waiting_is_bounded_in_time() {
        let a = admission(1, 4, Duration::from_millis(30));
        let _running = a.admit().await.unwrap();
        let started = std::time::Instant::now();
        let err = a.admit().await.unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(err.in_flight, 1);
        assert_eq!(err.reason, OverloadReason::WaitedTooLong);
        assert_eq!(a.stats().queued, 0);
    }

    #[test]
    fn every_reason_has_its_label_listed() {
        let reasons = [
            OverloadReason::QueueFull,
            OverloadReason::OverCapacity { offered_load: 2.0 },
            OverloadReason::WaitPredicted {
                predicted: Duration::ZERO,
            },
            OverloadReason::WaitedTooLong,
        ];
        assert_eq!(reasons.map(|r| r.label()), OverloadReason::LABELS);
    }

    #[test]
    fn the_predicted_wait_grows_with_the_place_in_the_queue() {
        let s = Duration::from_millis(100);
        // One running place: the next waits half a service time, the second one and a half.
        assert_eq!(predicted_wait(1, 1, s), Duration::from_millis(50));
        assert_eq!(predicted_wait(2, 1, s), Duration::from_millis(150));
        // Two running places serve two per round.
        assert_eq!(predicted_wait(2, 2, s), Duration::from_millis(50));
        assert_eq!(predicted_wait(3, 2, s), Duration::from_millis(150));
        assert_eq!(predicted_wait(0, 0, s), Duration::from_millis(50));
    }

    #[tokio::test]
    async fn the_service_time_is_a_moving_average_of_hold_times() {
        let a = admission(1, 0, Duration::from_secs(1));
        assert_eq!(a.stats().service_time, None);
        let p = a.admit().await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        drop(p);
        let first = a.stats().service_time.unwrap();
        assert!(first >= Duration::from_millis(40), "{first:?}");
        // A short hold moves the average an eighth of the way, not all of it.
        drop(a.admit().await.unwrap());
        let second = a.stats().service_time.unwrap();
        assert!(second < first, "{second:?} < {first:?}");
        assert!(
            second >= first * 7 / 8 - Duration::from_millis(1),
            "{second:?}"
        );
    }

    /// With a known service time, a request whose place in the queue predicts a wait beyond the
    /// bound is refused at once, while one that fits the bound waits and runs.
    #[tokio::test]
    async fn a_wait_predicted_over_the_bound_is_refused_at_once() {
        let a = Arc::new(admission(1, 4, Duration::from_millis(400)));
        // Teach it a service time of about 300 ms.
        let p = a.admit().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(p);
        let _running = a.admit().await.unwrap();
        // First in the queue: predicted ~150 ms, within 400 ms: it waits.
        let first = {
            let a = a.clone();
            tokio::spawn(async move { a.admit().await.map(|_p| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(a.stats().queued, 1);
        // Second in the queue: predicted ~450 ms, over the bound: refused without waiting,
        // although the queue has room.
        let started = std::time::Instant::now();
        let err = a.admit().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(50));
        match err.reason {
            OverloadReason::WaitPredicted { predicted } => {
                assert!(predicted > Duration::from_millis(400), "{predicted:?}")
            }
            other => panic!("refused for {other:?}"),
        }
        assert!(err.to_string().contains("predicted"), "{err}");
        assert_eq!(a.stats().queued, 1, "the refused request holds no place");
        first.abort();
    }

    #[test]
    fn the_arrival_rate_follows_steady_arrivals_and_decays_without_them() {
        let tau = ARRIVAL_TIME_CONSTANT;
        let mut r = ArrivalRate::default();
        // 10 per second for 20 s (ten time constants).
        for i in 1..=200 {
            r = r.arrive(f64::from(i) / 10.0, tau);
        }
        let now = r.at(20.0, tau);
        assert!((now - 10.0).abs() < 0.5, "{now}");
        // Then nothing for one time constant: down by a factor e.
        let later = r.at(22.0, tau);
        assert!((later - now / std::f64::consts::E).abs() < 1e-9, "{later}");
        // Four times the rate is read as such (after five time constants).
        for i in 1..=400 {
            r = r.arrive(22.0 + f64::from(i) / 40.0, tau);
        }
        let busy = r.at(32.0, tau);
        assert!((busy - 40.0).abs() < 1.0, "{busy}");
        // A clock read out of order never raises the rate.
        assert!(r.at(31.0, tau) <= busy + 1e-9);
    }

    #[test]
    fn the_offered_load_is_the_busy_places_the_arrivals_need() {
        let s = Duration::from_millis(125);
        assert!((offered_load(16.0, s, 2) - 1.0).abs() < 1e-12);
        assert!((offered_load(64.0, s, 2) - 4.0).abs() < 1e-12);
        assert!((offered_load(8.0, s, 0) - 1.0).abs() < 1e-12);
    }

    /// Requests queue while the arrivals are within capacity; once more arrives than the
    /// places serve, one that finds every place busy is refused at once although the queue has
    /// room, and when the arrivals ease queueing resumes.
    #[tokio::test]
    async fn above_the_load_bound_nothing_queues() {
        let a = Arc::new(Admission::new(Limits {
            in_flight: 1,
            queue: 64,
            max_wait: Duration::from_secs(10),
            queue_max_load: 1.0,
        }));
        // A service time of about 100 ms: the place serves 10 per second.
        let p = a.admit().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(p);
        let _running = a.admit().await.unwrap();
        // Arrivals in quick succession, each giving up its queue place after a moment.
        let mut refused_at = None;
        for n in 1..=60 {
            match tokio::time::timeout(Duration::from_millis(1), a.admit()).await {
                Err(_) => {}
                Ok(Ok(_)) => panic!("admitted while the only place runs"),
                Ok(Err(e)) => {
                    match e.reason {
                        OverloadReason::OverCapacity { offered_load } => {
                            assert!(offered_load > 1.0, "{offered_load}")
                        }
                        other => panic!("refused for {other:?}"),
                    }
                    assert!(e.to_string().contains("offered load"), "{e}");
                    refused_at = Some(n);
                    break;
                }
            }
        }
        // 0.5/s per arrival (tau 2 s): more than ten per second after about twenty.
        let refused_at = refused_at.expect("a burst of 60 is over capacity");
        assert!(
            (15..=25).contains(&refused_at),
            "refused at arrival {refused_at}"
        );
        assert_eq!(a.stats().queued, 0);
        assert!(a.stats().offered_load.unwrap() > 0.9);
        // A quiet moment brings the rate under capacity: the next one queues again.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let waiting = {
            let a = a.clone();
            tokio::spawn(async move { a.admit().await.map(|_p| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(a.stats().queued, 1);
        waiting.abort();
    }

    #[test]
    fn keys_asking_for_little_are_reserved_it_and_the_rest_is_shared() {
        // A key alone may count on every place.
        assert_eq!(key_caps(20, &[100.0]), vec![20]);
        assert_eq!(key_caps(20, &[0.2]), vec![1]);
        // A flood beside a key asking for half a place: one place kept for the small one.
        assert_eq!(key_caps(4, &[25.0, 0.5]), vec![3, 1]);
        assert_eq!(key_caps(4, &[0.5, 25.0]), vec![1, 3]);
        // Floods share equally, rounded down, at least one place each.
        assert_eq!(key_caps(4, &[10.0, 10.0]), vec![2, 2]);
        assert_eq!(key_caps(4, &[10.0, 10.0, 10.0]), vec![1, 1, 1]);
        assert_eq!(key_caps(2, &[9.0, 9.0, 9.0]), vec![1, 1, 1]);
        // What a small key leaves goes to the others.
        assert_eq!(key_caps(10, &[1.0, 30.0, 30.0]), vec![1, 4, 4]);
        // Unreadable demands count as floods; none at all is no key.
        assert_eq!(key_caps(4, &[f64::NAN, 0.5]), vec![3, 1]);
        assert_eq!(key_caps(4, &[]), Vec::<usize>::new());
    }

    /// A key alone is refused as before; once another key asks, the other waits for the next
    /// place although nothing queues at this load, and the first, at its share, is told so.
    #[tokio::test]
    async fn a_key_within_its_share_waits_for_the_next_place_the_others_do_not() {
        let a = Arc::new(Admission::new(Limits {
            in_flight: 1,
            queue: 4,
            max_wait: Duration::from_secs(10),
            // Every arrival counts as overload: only a key within its share may wait.
            queue_max_load: 0.0,
        }));
        let p = a.admit_for("flood").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(p);
        let running = a.admit_for("flood").await.unwrap();
        match a.admit_for("flood").await.unwrap_err() {
            Refused::Overloaded(o) => {
                assert!(
                    matches!(o.reason, OverloadReason::OverCapacity { .. }),
                    "{o}"
                )
            }
            other => panic!("a key alone refused for {other:?}"),
        }
        let small = {
            let a = a.clone();
            tokio::spawn(async move { a.admit_for("small").await.map(|_p| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(a.stats().queued, 1, "the small key waits");
        let refused = a.admit_for("flood").await.unwrap_err();
        assert_eq!(refused.label(), "key_share");
        let Refused::KeyShare(share) = refused else {
            panic!("refused for {refused:?}")
        };
        assert_eq!(
            (share.held, share.cap, share.keys, share.in_flight),
            (1, 1, 2, 1)
        );
        assert!(matches!(share.refused, OverloadReason::OverCapacity { .. }));
        assert_eq!(share.retry_after, Duration::from_secs(1));
        assert!(
            share.to_string().contains("share of the 1 running"),
            "{share}"
        );
        // The place the flood gives back goes to the waiting key.
        drop(running);
        small.await.unwrap().unwrap();
        assert_eq!(a.stats().rejected, 2);
    }

    /// Places a key waits for count against it too, and are given back when its request goes.
    #[tokio::test]
    async fn a_key_gives_its_places_back_with_its_requests() {
        let a = Arc::new(admission(1, 2, Duration::from_secs(10)));
        let running = a.admit_for("one").await.unwrap();
        let waiting = {
            let a = a.clone();
            tokio::spawn(async move { a.admit_for("one").await.map(|_p| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(a.keys.lock().unwrap()["one"].held, 2);
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(a.keys.lock().unwrap()["one"].held, 1);
        drop(running);
        assert_eq!(a.keys.lock().unwrap()["one"].held, 0);
    }
}
