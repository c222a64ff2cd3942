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
//! [`inference_shares`]), so that one key sending more than the places serve cannot leave the
//! keys that ask for little with 503s. Each key's demand is its arrival rate times the service
//! time (in places, [`key_demand`]); shares are max-min fair: a key asking for at most an equal
//! share of what is left is *met* (its share is its demand), the keys asking for more share the
//! rest equally, so the shares never add up to more than the places. Every key takes a free
//! place at once, so a key alone (or beside idle ones) keeps the whole capacity. What the shares
//! change, while other keys ask for places too:
//!
//! - a met key holding fewer places than its share (rounded up) may wait for the next place
//!   even while the offered load is over `queue_max_load`, and waiting requests get freed places
//!   before new arrivals. The met keys' demands together fit the places, so their waiting builds
//!   no standing queue;
//! - the other keys may not take the queue places the met keys may still need;
//! - a key refused while it already holds its share is told so with [`InferenceShareFull`] (429
//!   `too_many_inferences`) rather than 503.
//!
//! Without a queue (`queue` 0) nobody waits, and the shares only name the refusal.

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

/// The request's key already holds its share of the places (rounded up) while other keys ask for
/// places too, and no place was given: it should retry after `retry_after` (429
/// `too_many_inferences`).
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error(
    "too many inferences for this key: it holds {held} inference places (running and waiting) \
     and its share of the {in_flight} running places while {keys} keys ask for them is \
     {share:.2}; {refused}; retry in {} s",
    retry_after.as_secs()
)]
pub struct InferenceShareFull {
    /// Places the key held (running and waiting).
    pub held: usize,
    /// Its share of the running places ([`inference_shares`]).
    pub share: f64,
    /// Keys asking for places now, the key included.
    pub keys: usize,
    /// The running places.
    pub in_flight: usize,
    /// Why no place was given: the refusal any request would have got, or the queue places
    /// kept for the keys that ask for little.
    pub refused: OverloadReason,
    /// When to retry.
    pub retry_after: Duration,
}

impl InferenceShareFull {
    /// The `reason` label of `facekey_admission_rejected_total` for this refusal.
    pub const LABEL: &'static str = "inference_share";
}

/// Why a keyed request got no place: its key's share, or the service's capacity.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum Refused {
    /// The key holds its share while other keys ask for places too.
    #[error(transparent)]
    InferenceShare(#[from] InferenceShareFull),
    /// Every place is taken.
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
}

impl Refused {
    /// The `reason` label of `facekey_admission_rejected_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Refused::InferenceShare(_) => InferenceShareFull::LABEL,
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
    /// Whether the hold's time feeds the service-time average when the place is given back.
    timed: bool,
}

impl Permit {
    /// Leave this hold out of the service-time average: a place taken for a check that ran no
    /// inference (a lockout read before a session opens) would otherwise pull the average
    /// down, and admission's predicted waits with it.
    pub fn untimed(&mut self) {
        self.timed = false;
    }

    /// Count the hold's service time from now: for a place taken before a wait that is not
    /// inference (a liveness session read from its store before it is consumed), which would
    /// otherwise lengthen the service-time average admission predicts with.
    pub fn restart_clock(&mut self) {
        self.since = Instant::now();
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.timed {
            self.service.record(self.since.elapsed());
        }
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

/// What each key holds and asks for; a key is forgotten once it holds nothing and has not
/// asked for [`KEY_FORGET_AFTER`] ([`forgotten`]). Entries are per authenticated key id, so the
/// map holds at most the keys of the key file; each admission scans it (and sorts the keys
/// asking for places), which suits tens of keys, not thousands.
type KeyUses = Arc<Mutex<HashMap<Arc<str>, KeyUse>>>;

/// How long a key holding no place still counts as asking for places after its last arrival:
/// longer than a `Retry-After` of 1 s, so a client retrying is not forgotten in between.
pub const KEY_FORGET_AFTER: Duration = Duration::from_secs(5);

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

/// Whether a key holding `held` places whose last arrival was `quiet_secs` ago no longer counts
/// as asking for places.
pub fn forgotten(held: usize, quiet_secs: f64) -> bool {
    held == 0 && quiet_secs >= KEY_FORGET_AFTER.as_secs_f64()
}

/// A key's demand in places: its arrival rate times the service time, and at least what it
/// holds (a key whose requests run long asks for the places they hold).
pub fn key_demand(arrivals_per_sec: f64, service: Duration, held: usize) -> f64 {
    (arrivals_per_sec * service.as_secs_f64()).max(held as f64)
}

/// A key's standing when it asked for a place.
#[derive(Debug, Clone, Copy)]
struct Standing {
    /// Places it held before this request (running and waiting).
    held: usize,
    /// Its share.
    share: InferenceShare,
    /// Queue places the other met keys may still need ([`queue_kept`]).
    kept: usize,
    /// Keys asking for places, it included.
    keys: usize,
}

/// One key's share of the running places.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InferenceShare {
    /// Places (fractional): its demand when met, else an equal part of what the met keys leave.
    pub places: f64,
    /// Whether its whole demand fits an equal share (it asks for little).
    pub met: bool,
}

impl InferenceShare {
    /// The places the share stands for: rounded up, at least one.
    pub fn due(&self) -> usize {
        self.places.ceil().max(1.0) as usize
    }

    /// Whether a key of this share holding `held` places may wait for one more whatever the
    /// load: met, and holding fewer than its due places.
    pub fn may_wait(&self, held: usize) -> bool {
        self.met && held < self.due()
    }

    /// Whether a key holding `held` places holds its due places already (its refusal is then
    /// [`InferenceShareFull`]; a key under its share refused for the capacity gets a plain 503).
    pub fn is_full(&self, held: usize) -> bool {
        held >= self.due()
    }
}

/// Each key's share of `capacity` places, max-min fair by `demands` (in places; unreadable ones
/// count as unbounded): in order of demand, a key asking for at most an equal share of what is
/// left is met, and once one asks for more, it and every key after it get an equal share of
/// the rest. The shares add up to at most `capacity`. The order is that of `demands`.
pub fn inference_shares(capacity: usize, demands: &[f64]) -> Vec<InferenceShare> {
    let demand = |d: f64| {
        if d.is_finite() {
            d.max(0.0)
        } else {
            f64::INFINITY
        }
    };
    let mut order: Vec<usize> = (0..demands.len()).collect();
    order.sort_by(|&a, &b| demand(demands[a]).total_cmp(&demand(demands[b])));
    let mut shares = vec![
        InferenceShare {
            places: 0.0,
            met: false
        };
        demands.len()
    ];
    let mut left = capacity as f64;
    for (served, &i) in order.iter().enumerate() {
        let equal = left / (demands.len() - served) as f64;
        let d = demand(demands[i]);
        if d > equal {
            for &j in &order[served..] {
                shares[j] = InferenceShare {
                    places: equal,
                    met: false,
                };
            }
            break;
        }
        shares[i] = InferenceShare {
            places: d,
            met: true,
        };
        left = (left - d).max(0.0);
    }
    shares
}

/// Queue places kept for met keys other than `me`: what each may still wait for (its share
/// rounded up, at least one, less what it holds), at most `queue`.
pub fn queue_kept(me: usize, shares: &[InferenceShare], held: &[usize], queue: usize) -> usize {
    let kept: usize = (0..shares.len())
        .filter(|&k| k != me && shares[k].met)
        .map(|k| shares[k].due().saturating_sub(held[k]))
        .sum();
    kept.min(queue)
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

    /// Seconds since the last arrival, as of `now` (since the epoch when there was none).
    pub fn quiet_for(self, now: f64) -> f64 {
        (now - self.at).max(0.0)
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
            timed: true,
            service: self.service.clone(),
        }
    }

    /// A place to run an inference: at once when one is free, after a short wait when the
    /// offered load is within `queue_max_load`, the queue has room and the predicted wait is
    /// within the bound, else [`Overloaded`] immediately.
    pub async fn admit(&self) -> Result<Permit, Overloaded> {
        self.admit_arrived(self.arrivals.arrive(), false, 0).await
    }

    /// [`Admission::admit`] for a request already counted in `arrivals_per_sec`; with
    /// `may_wait` it may wait for a place whatever the offered load; it may not take the last
    /// `kept` queue places.
    async fn admit_arrived(
        &self,
        arrivals_per_sec: f64,
        may_wait: bool,
        kept: usize,
    ) -> Result<Permit, Overloaded> {
        // Reserve a place among running + waiting; `ahead` is how many held one before.
        let (place, ahead) = {
            let capacity = self.limits.in_flight + self.limits.queue.saturating_sub(kept);
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
    /// for places too ([`inference_shares`]), a met key holding less than its share may wait
    /// for one whatever the offered load, the other keys may not take the queue places the met
    /// keys may still need, and a key already holding its share is refused with
    /// [`InferenceShareFull`]. The key's arrival counts towards its demand whether or not it
    /// gets a place.
    pub async fn admit_for(&self, key: &str) -> Result<Permit, Refused> {
        let arrivals_per_sec = self.arrivals.arrive();
        let (place, standing) = self.take_key_place(key);
        let (may_wait, kept) = standing.map_or((false, 0), |s| (s.share.may_wait(s.held), s.kept));
        match self.admit_arrived(arrivals_per_sec, may_wait, kept).await {
            Ok(mut permit) => {
                permit._key = Some(place);
                Ok(permit)
            }
            Err(overloaded) => Err(match standing {
                Some(s) if s.share.is_full(s.held) => InferenceShareFull {
                    held: s.held,
                    share: s.share.places,
                    keys: s.keys,
                    in_flight: self.limits.in_flight,
                    refused: overloaded.reason,
                    retry_after: overloaded.retry_after,
                }
                .into(),
                _ => overloaded.into(),
            }),
        }
    }

    /// Count the key's arrival and a place against it; its standing when other keys ask for
    /// places too and a service time is known.
    fn take_key_place(&self, key: &str) -> (KeyPlace, Option<Standing>) {
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
        keys.retain(|_, u| !forgotten(u.held, u.arrivals.quiet_for(now)));
        let standing = match self.service.get() {
            Some(service) if keys.len() > 1 => {
                let uses: Vec<(&Arc<str>, &KeyUse)> = keys.iter().collect();
                let held: Vec<usize> = uses.iter().map(|(_, u)| u.held).collect();
                let demands: Vec<f64> = uses
                    .iter()
                    .map(|(_, u)| key_demand(u.arrivals.at(now, tau), service, u.held))
                    .collect();
                let shares = inference_shares(self.limits.in_flight, &demands);
                uses.iter()
                    .position(|(k, _)| ***k == *key)
                    .map(|me| Standing {
                        held: held[me],
                        share: shares[me],
                        kept: queue_kept(me, &shares, &held, self.limits.queue),
                        keys: uses.len(),
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
        (place, standing)
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
        // A hold whose clock restarted counts from then: a wait before the work is left out.
        let fresh = admission(1, 0, Duration::from_secs(1));
        let mut p = fresh.admit().await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        p.restart_clock();
        drop(p);
        let held = fresh.stats().service_time.unwrap();
        assert!(held < Duration::from_millis(40), "{held:?}");
        // A hold that ran no work (a check before a session opens) gives no service time.
        let idle = admission(1, 0, Duration::from_secs(1));
        let mut p = idle.admit().await.unwrap();
        p.untimed();
        drop(p);
        assert_eq!(idle.stats().service_time, None);
        assert_eq!(
            idle.stats().in_flight,
            0,
            "the place is given back all the same"
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

    fn share(places: f64, met: bool) -> InferenceShare {
        InferenceShare { places, met }
    }

    #[test]
    fn keys_asking_for_little_are_met_and_the_rest_is_shared_equally() {
        // A key alone asking for more than the places gets them all, unmet.
        assert_eq!(inference_shares(20, &[100.0]), vec![share(20.0, false)]);
        assert_eq!(inference_shares(20, &[0.2]), vec![share(0.2, true)]);
        // A flood beside a key asking for half a place.
        assert_eq!(
            inference_shares(4, &[25.0, 0.5]),
            vec![share(3.5, false), share(0.5, true)]
        );
        // Floods share equally.
        assert_eq!(
            inference_shares(4, &[10.0, 10.0]),
            vec![share(2.0, false), share(2.0, false)]
        );
        // Three keys asking for 0.6 of two places each fit; five do not, and none is met.
        assert!(inference_shares(2, &[0.6; 3]).iter().all(|s| s.met));
        assert!(inference_shares(2, &[0.6; 5]).iter().all(|s| !s.met));
        // The shares never add up to more than the places.
        for demands in [
            vec![0.1, 0.1, 0.1, 0.1, 10.0],
            vec![0.6; 10],
            vec![1.2, 5.0],
            vec![0.9, 0.9, 3.0],
        ] {
            let total: f64 = inference_shares(2, &demands).iter().map(|s| s.places).sum();
            assert!(total <= 2.0 + 1e-9, "{demands:?}: {total}");
        }
        // Unreadable demands count as floods; none at all is no key.
        assert_eq!(
            inference_shares(4, &[f64::NAN, 0.5]),
            vec![share(3.5, false), share(0.5, true)]
        );
        assert_eq!(inference_shares(4, &[]), Vec::<InferenceShare>::new());
    }

    #[test]
    fn a_key_is_full_at_its_share_rounded_up_and_forgotten_when_quiet() {
        assert_eq!(share(1.5, false).due(), 2);
        assert_eq!(share(0.2, true).due(), 1);
        assert_eq!(share(0.0, false).due(), 1);
        // An unmet key under its share is refused for the capacity, not for its share.
        assert!(!share(1.5, false).is_full(1));
        assert!(share(1.5, false).is_full(2));
        assert!(share(0.2, true).is_full(1));
        // A key's demand is its rate times the service time, and at least what it holds.
        let s = Duration::from_millis(100);
        assert!((key_demand(10.0, s, 0) - 1.0).abs() < 1e-12);
        assert!((key_demand(0.1, s, 2) - 2.0).abs() < 1e-12);
        // A key holding nothing is forgotten after a quiet spell; one holding a place never is.
        let after = KEY_FORGET_AFTER.as_secs_f64();
        assert!(forgotten(0, after));
        assert!(!forgotten(0, after - 0.1));
        assert!(!forgotten(1, 10.0 * after));
        let mut r = ArrivalRate::default();
        for i in 0..100 {
            r = r.arrive(f64::from(i) / 50.0, ARRIVAL_TIME_CONSTANT);
        }
        // However busy it was: 50 per second for 2 s, then quiet.
        assert!((r.quiet_for(1.98 + after) - after).abs() < 1e-9);
    }

    #[test]
    fn only_a_met_key_under_its_share_may_wait_and_its_queue_places_are_kept() {
        assert!(share(0.5, true).may_wait(0));
        assert!(!share(0.5, true).may_wait(1));
        assert!(share(1.2, true).may_wait(1));
        assert!(!share(3.5, false).may_wait(0));
        // The flood (1) may not take the queue place the small key (0) may still need.
        let shares = [share(0.5, true), share(3.5, false)];
        assert_eq!(queue_kept(1, &shares, &[0, 3], 8), 1);
        assert_eq!(queue_kept(1, &shares, &[1, 3], 8), 0);
        assert_eq!(queue_kept(0, &shares, &[0, 3], 8), 0);
        assert_eq!(queue_kept(1, &shares, &[0, 3], 0), 0);
    }

    /// A key alone is refused as before; once another key asks, the other waits for the next
    /// place although nothing queues at this load, and the first, beyond its share, is told so.
    #[tokio::test]
    async fn a_met_key_waits_for_the_next_place_the_flood_does_not() {
        let a = Arc::new(Admission::new(Limits {
            in_flight: 1,
            queue: 4,
            max_wait: Duration::from_secs(10),
            // Every arrival counts as overload: only a met key may wait.
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
        assert_eq!(refused.label(), "inference_share");
        let Refused::InferenceShare(full) = refused else {
            panic!("refused for {refused:?}")
        };
        assert_eq!((full.held, full.keys, full.in_flight), (1, 2, 1));
        assert!(full.share < 1.0, "{full}");
        assert!(matches!(full.refused, OverloadReason::OverCapacity { .. }));
        assert_eq!(full.retry_after, Duration::from_secs(1));
        assert!(
            full.to_string().contains("share of the 1 running"),
            "{full}"
        );
        // A second request of the small key is beyond its share: it may not wait.
        assert_eq!(
            a.admit_for("small").await.unwrap_err().label(),
            "inference_share"
        );
        // The place the flood gives back goes to the waiting key.
        drop(running);
        small.await.unwrap().unwrap();
        assert_eq!(a.stats().rejected, 3);
    }

    /// Below the load bound a flood queues, but not into the queue places a met key may still
    /// need; a met key refused for the capacity itself gets 503, not 429.
    #[tokio::test]
    async fn a_flood_that_queues_leaves_the_met_keys_their_queue_places() {
        let a = Arc::new(admission(1, 2, Duration::from_secs(10)));
        let p = a.admit_for("small").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(p);
        let _running = a.admit_for("flood").await.unwrap();
        let queued = {
            let a = a.clone();
            tokio::spawn(async move { a.admit_for("flood").await.map(|_p| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(a.stats().queued, 1);
        // The last queue place is the small key's.
        let refused = a.admit_for("flood").await.unwrap_err();
        let Refused::InferenceShare(full) = refused else {
            panic!("refused for {refused:?}")
        };
        assert_eq!(full.refused, OverloadReason::QueueFull);
        let small = {
            let a = a.clone();
            tokio::spawn(async move { a.admit_for("small").await.map(|_p| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(a.stats().queued, 2, "the small key waits in its place");
        // Every place is taken now: a third key, met, is refused for the capacity itself, with
        // the plain 503.
        match a.admit_for("third").await.unwrap_err() {
            Refused::Overloaded(o) => assert_eq!(o.reason, OverloadReason::QueueFull),
            other => panic!("a met key refused for {other:?}"),
        }
        queued.abort();
        small.abort();
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
