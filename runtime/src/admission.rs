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
}

/// A place among the running inferences; given back when dropped, when its hold time feeds the
/// service-time average.
#[derive(Debug)]
pub struct Permit {
    _running: OwnedSemaphorePermit,
    _place: Place,
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
            since: Instant::now(),
            service: self.service.clone(),
        }
    }

    /// A place to run an inference: at once when one is free, after a short wait when the
    /// offered load is within `queue_max_load`, the queue has room and the predicted wait is
    /// within the bound, else [`Overloaded`] immediately.
    pub async fn admit(&self) -> Result<Permit, Overloaded> {
        let arrivals_per_sec = self.arrivals.arrive();
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
            if load > self.limits.queue_max_load {
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
}
