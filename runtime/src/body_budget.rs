//! The memory request bodies may hold at once, and how slowly they may arrive.
//!
//! Handlers read a whole body into memory before any work, and an image's stays there through
//! its inference. The body limit (`FACEKEY_MAX_BODY_BYTES`) bounds one request and the
//! connection limit the requests over HTTP/1.1, but their product (1024 connections x 8 MiB,
//! and HTTP/2 carries up to 200 requests on each connection) is far beyond a pod's memory: a
//! burst of large uploads from callers with a key would get the pod OOM-killed, failing every
//! login it was serving. So an admitted request with a body reserves its size (its declared
//! length, or the body limit when it declares none) in the [`BodyBudget`]
//! (`FACEKEY_MAX_BODY_MEMORY_BYTES`) before its handler runs and gives it back when its answer
//! is ready; a request the budget cannot hold is answered 503 `overloaded` at once, before a
//! byte of its body is read. What a body becomes while it is parsed (a base64 image decoded, a
//! multipart part copied out) is not counted: up to as much again, briefly.
//!
//! Reserving the declared length up front means a body holds its room for as long as it takes
//! to arrive, so two more bounds keep one caller from holding the whole budget with bodies it
//! trickles in a byte at a time (16 connections declaring 8 MiB each held all 128 MiB for the
//! whole request timeout, and every other key's uploads got 503):
//!
//! - a key's bodies may hold at most its share of the budget at once
//!   (`FACEKEY_MAX_BODY_MEMORY_PER_KEY_SHARE`, [`key_share_bytes`]); beyond it its request is
//!   refused ([`KeyShareFull`], 429 `too_many_uploads`) while other keys' still fit;
//! - a body must keep arriving at a floor rate after a grace period
//!   (`FACEKEY_MIN_BODY_BYTES_PER_SEC`, `FACEKEY_BODY_RATE_GRACE_SECS`, [`RateFloor`]), and at
//!   least at the pace that brings the bytes it holds in before the request timeout
//!   ([`RateFloor::for_body`]): one that falls behind is cut off ([`BodyTooSlow`], 408
//!   `body_too_slow`) and its room given back at once, instead of at the request timeout. So
//!   holding memory costs a caller the bandwidth of filling it: a body just above the floor
//!   cannot keep 8 MiB for the whole timeout, it would need 8 MiB's worth of bytes.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::{Instant, Sleep};

/// The `reason` label of `facekey_admission_rejected_total` for a refusal here.
pub const REFUSAL_LABEL: &str = "body_memory";

/// Reservations are counted in KiB, so that a budget of terabytes still fits the semaphore's
/// per-acquisition `u32`.
const UNIT: u64 = 1024;

/// Bytes each key's bodies hold now, only keys holding some (shared by the budget's clones and
/// the reservations, which take their bytes out when dropped).
type KeyHeld = Arc<Mutex<HashMap<Arc<str>, u64>>>;

/// The budget shared by every request of the process.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    units: u32,
    max_body: u64,
    keys: KeyHeld,
}

/// A body's reservation: its bytes return to the budget (and its key's share) when this is
/// dropped.
#[derive(Debug)]
pub struct BodyReservation {
    _permit: OwnedSemaphorePermit,
    _key: Option<KeyHold>,
    bytes: u64,
}

impl BodyReservation {
    /// Bytes the body holds in the budget.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// The bytes a reservation counts against its key's share.
#[derive(Debug)]
struct KeyHold {
    keys: KeyHeld,
    key: Arc<str>,
    bytes: u64,
}

impl Drop for KeyHold {
    fn drop(&mut self) {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = keys.get_mut(&*self.key) {
            *held = held.saturating_sub(self.bytes);
            if *held == 0 {
                keys.remove(&*self.key);
            }
        }
    }
}

/// The budget cannot hold this request's body now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "overloaded: request bodies being received hold {held} of the {budget} bytes they may hold \
     at once (FACEKEY_MAX_BODY_MEMORY_BYTES) and this one needs {wanted}; retry in 1 s"
)]
pub struct BodyMemoryFull {
    /// Bytes this request would reserve.
    pub wanted: u64,
    /// Bytes reserved by other requests.
    pub held: u64,
    /// The whole budget.
    pub budget: u64,
}

/// The request's key already holds its share of the budget: the budget has room, but not for
/// this key. Bytes in whole KiB, as the budget counts them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "key {key:?} has request bodies being received that hold {held} of the {share} bytes one \
     key may hold at once (FACEKEY_MAX_BODY_MEMORY_PER_KEY_SHARE of \
     FACEKEY_MAX_BODY_MEMORY_BYTES) and this one needs {wanted}; finish or close its other \
     uploads, retry in 1 s"
)]
pub struct KeyShareFull {
    /// The key's id.
    pub key: Arc<str>,
    /// Bytes this request would reserve (its size rounded up to whole KiB).
    pub wanted: u64,
    /// Bytes the key's other requests hold.
    pub held: u64,
    /// The most one key may hold (rounded up to whole KiB).
    pub share: u64,
}

/// Why a body was not reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyRefused {
    /// The whole budget is held (503 `overloaded`).
    #[error(transparent)]
    Full(#[from] BodyMemoryFull),
    /// The request's key holds its share (429 `too_many_uploads`).
    #[error(transparent)]
    KeyShare(#[from] KeyShareFull),
}

/// The key a reservation counts against, and the most that key may hold.
#[derive(Debug, Clone, Copy)]
pub struct KeyShare<'a> {
    /// The key's id.
    pub key: &'a Arc<str>,
    /// Bytes the key's bodies may hold at once ([`key_share_bytes`]).
    pub bytes: u64,
}

fn units(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

/// The bytes one key's bodies may hold at once: `share` of a budget of `budget` bytes, but at
/// least one body of the largest size (`max_body`), so every key can always send one. `None`
/// when that is the whole budget (a share of 1 or more): no per-key bound.
pub fn key_share_bytes(budget: u64, max_body: u64, share: f64) -> Option<u64> {
    // A share in [0, 1] of a u64 stays in range; `as` saturates anyway.
    let bytes = ((budget as f64 * share.clamp(0.0, 1.0)) as u64).max(max_body);
    (bytes < budget).then_some(bytes)
}

impl BodyBudget {
    /// A budget of `budget_bytes` for bodies of at most `max_body_bytes` each (the caller
    /// checks that one such body fits).
    pub fn new(budget_bytes: u64, max_body_bytes: u64) -> Self {
        let units =
            units(budget_bytes).min(u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
        Self {
            permits: Arc::new(Semaphore::new(units as usize)),
            units,
            max_body: max_body_bytes,
            keys: Arc::default(),
        }
    }

    /// Bytes a body reserves, from the upper bound of its size hint: its length when declared
    /// (capped at the body limit: a longer declared one is refused unread before it gets
    /// here), the body limit when it declares none, nothing when it has none.
    pub fn needed(&self, upper: Option<u64>) -> u64 {
        upper.unwrap_or(u64::MAX).min(self.max_body)
    }

    /// Reserve room for a body whose size hint has this upper bound, counted against `key`'s
    /// share when given: `Ok(None)` when it has no body, `Ok(Some(_))` held until the answer,
    /// or the refusal. A request the whole budget cannot hold is refused as such
    /// ([`BodyRefused::Full`]) even when its key is over its share too: the share only refuses
    /// what the budget would have held.
    pub fn reserve(
        &self,
        upper: Option<u64>,
        key: Option<KeyShare<'_>>,
    ) -> Result<Option<BodyReservation>, BodyRefused> {
        let wanted = self.needed(upper);
        if wanted == 0 {
            return Ok(None);
        }
        let needed = units(wanted);
        let permit = match self.permits.clone().try_acquire_many_owned(needed) {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                return Err(BodyMemoryFull {
                    wanted,
                    held: self.held(),
                    budget: self.budget(),
                }
                .into());
            }
        };
        let key = match key {
            None => None,
            Some(KeyShare { key, bytes: share }) => {
                // The key's share is charged what the budget is: whole KiB. Charged the bytes
                // alone, a key's tiny bodies would take 1 KiB of the budget each but 1 byte of
                // its share, and hold up to 1024 times its share of the budget. The share is
                // rounded up alike, so one body of the largest size still always fits.
                let charged = u64::from(needed) * UNIT;
                let share = share.div_ceil(UNIT).saturating_mul(UNIT);
                let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
                let held = keys.get(&**key).copied().unwrap_or(0);
                if held.saturating_add(charged) > share {
                    // The permit goes back as it drops.
                    return Err(KeyShareFull {
                        key: key.clone(),
                        wanted: charged,
                        held,
                        share,
                    }
                    .into());
                }
                keys.insert(key.clone(), held + charged);
                Some(KeyHold {
                    keys: self.keys.clone(),
                    key: key.clone(),
                    bytes: charged,
                })
            }
        };
        Ok(Some(BodyReservation {
            _permit: permit,
            _key: key,
            bytes: wanted,
        }))
    }

    /// The whole budget in bytes (whole KiB).
    pub fn budget(&self) -> u64 {
        u64::from(self.units) * UNIT
    }

    /// Bytes reserved now (in whole KiB).
    pub fn held(&self) -> u64 {
        let free = u64::try_from(self.permits.available_permits()).unwrap_or(u64::MAX);
        u64::from(self.units).saturating_sub(free) * UNIT
    }

    /// Bytes `key`'s bodies hold now of its share (in whole KiB, as the budget counts them).
    pub fn held_by(&self, key: &str) -> u64 {
        let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.get(key).copied().unwrap_or(0)
    }
}

/// The least pace a body must keep: by `t` seconds after its request's headers, at least
/// `bytes_per_sec × (t − grace)` of its bytes must have arrived. A legitimate upload, even an
/// 8 MB image over a slow mobile link at 100 KB/s, stays far ahead; a body trickled in to hold
/// its reservation falls behind and is cut off. [`RateFloor::for_body`] raises the rate for a
/// body too large to arrive at the floor within the request timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateFloor {
    /// The floor (`FACEKEY_MIN_BODY_BYTES_PER_SEC`), at least 1.
    pub bytes_per_sec: u64,
    /// Time a body may lag before the floor applies (`FACEKEY_BODY_RATE_GRACE_SECS`): the
    /// connection's slow start, a mobile radio waking up, a client waiting for
    /// `100 Continue`.
    pub grace: Duration,
}

impl RateFloor {
    /// The floor of these settings; `None` when `bytes_per_sec` is 0 (off).
    pub fn new(bytes_per_sec: u64, grace: Duration) -> Option<Self> {
        (bytes_per_sec > 0).then_some(Self {
            bytes_per_sec,
            grace,
        })
    }

    /// The floor for one body holding `bytes` of the budget, whose request times out after
    /// `timeout`: the configured rate, or the rate at which all `bytes` arrive by the timeout
    /// when that is higher. Such a body would be answered with the timeout anyway; cut off as
    /// soon as it falls behind that pace, it gives its room back early instead of holding it
    /// to the end at the floor's trickle. No change when the timeout is within the grace.
    pub fn for_body(self, bytes: u64, timeout: Duration) -> Self {
        let window = timeout.saturating_sub(self.grace);
        if window.is_zero() {
            return self;
        }
        let nanos = window.as_nanos().max(1);
        let pace = (u128::from(bytes) * 1_000_000_000).div_ceil(nanos);
        Self {
            bytes_per_sec: self
                .bytes_per_sec
                .max(u64::try_from(pace).unwrap_or(u64::MAX)),
            grace: self.grace,
        }
    }

    /// Time after the headers by which a body with `received` bytes falls behind the floor.
    fn lag_after(&self, received: u64) -> Duration {
        let nanos = u128::from(received) * 1_000_000_000 / u128::from(self.bytes_per_sec.max(1));
        self.grace.saturating_add(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }
}

/// A body fell behind the [`RateFloor`] and was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "request body too slow: {received} bytes in {:.1} s; after the first {} s this body must \
     arrive at {} bytes/s or more on average: the floor (FACEKEY_MIN_BODY_BYTES_PER_SEC, \
     FACEKEY_BODY_RATE_GRACE_SECS), or the pace that brings a body of its size in before the \
     request timeout (FACEKEY_REQUEST_TIMEOUT_SECS) when that is higher",
    elapsed.as_secs_f64(),
    floor.grace.as_secs(),
    floor.bytes_per_sec
)]
pub struct BodyTooSlow {
    /// Bytes of the body that had arrived.
    pub received: u64,
    /// Time since the request's headers.
    pub elapsed: Duration,
    /// The floor it fell behind.
    pub floor: RateFloor,
}

/// What a body's [`Metered`] wrapper tells its [`BodyWatch`].
#[derive(Debug, Default)]
struct Progress {
    received: AtomicU64,
    /// The body ended, failed, or its handler dropped it: nothing more to watch.
    done: AtomicBool,
}

/// A request body that counts its bytes for its [`BodyWatch`]. Both live in the request's
/// task, so relaxed atomics suffice.
#[derive(Debug)]
pub struct Metered {
    inner: Body,
    progress: Arc<Progress>,
}

impl HttpBody for Metered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    self.progress.received.fetch_add(len, Ordering::Relaxed);
                }
                if self.inner.is_end_stream() {
                    self.progress.done.store(true, Ordering::Relaxed);
                }
            }
            Poll::Ready(_) => self.progress.done.store(true, Ordering::Relaxed),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.progress.done.store(true, Ordering::Relaxed);
    }
}

/// What a [`BodyWatch`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// The body has arrived (or its handler is done with it): stop watching.
    Done,
    /// The body fell behind the floor: cut the request off.
    TooSlow(BodyTooSlow),
}

/// Watches one request's body against a [`RateFloor`]. Its timer is made on the first poll
/// that finds the body still arriving, set to when the body would fall behind with the bytes
/// it has; when it fires, the deadline is recomputed from the bytes that arrived meanwhile. A
/// body at `r` times the floor is looked at a handful of times (each deadline `r` times further
/// out), never once per chunk.
#[derive(Debug)]
pub struct BodyWatch {
    progress: Arc<Progress>,
    floor: RateFloor,
    start: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

/// Wrap `body`, whose request's headers arrived at `start`, to be watched against `floor`.
pub fn watch(body: Body, floor: RateFloor, start: Instant) -> (Body, BodyWatch) {
    let progress = Arc::new(Progress::default());
    let metered = Metered {
        inner: body,
        progress: progress.clone(),
    };
    let watch = BodyWatch {
        progress,
        floor,
        start,
        timer: None,
    };
    (Body::new(metered), watch)
}

impl BodyWatch {
    /// Bytes of the body that have arrived.
    pub fn received(&self) -> u64 {
        self.progress.received.load(Ordering::Relaxed)
    }

    /// When the body falls behind with the bytes it has now.
    fn due(&self) -> Instant {
        let lag = self.floor.lag_after(self.received());
        // Beyond the clock's range (a floor of 1 byte/s and exabytes received): a year is
        // never reached either.
        self.start
            .checked_add(lag)
            .unwrap_or_else(|| self.start + Duration::from_secs(365 * 86_400))
    }

    /// `Ready(Done)` once the body is complete, `Ready(TooSlow)` once it has fallen behind,
    /// else `Pending` with `cx` woken when it would.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Pace> {
        loop {
            if self.progress.done.load(Ordering::Relaxed) {
                self.timer = None;
                return Poll::Ready(Pace::Done);
            }
            let due = self.due();
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if due <= now {
                return Poll::Ready(Pace::TooSlow(BodyTooSlow {
                    received: self.received(),
                    elapsed: now.saturating_duration_since(self.start),
                    floor: self.floor,
                }));
            }
            timer.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn bodies_reserve_their_declared_length_or_the_limit() {
        let b = BodyBudget::new(16 * MIB, 8 * MIB);
        assert_eq!(b.needed(Some(0)), 0);
        assert_eq!(b.needed(Some(300_000)), 300_000);
        assert_eq!(
            b.needed(Some(100 * MIB)),
            8 * MIB,
            "a longer body is refused unread"
        );
        assert_eq!(b.needed(None), 8 * MIB, "chunked: the most it may carry");
        assert!(b.reserve(Some(0), None).unwrap().is_none());
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn the_budget_refuses_what_it_cannot_hold_and_takes_it_back_on_drop() {
        let b = BodyBudget::new(16 * MIB, 8 * MIB);
        let first = b.reserve(None, None).unwrap().unwrap();
        let second = b.reserve(Some(6 * MIB), None).unwrap().unwrap();
        assert_eq!(b.held(), 14 * MIB);
        let full = b.reserve(Some(3 * MIB), None).unwrap_err();
        let expected = BodyMemoryFull {
            wanted: 3 * MIB,
            held: 14 * MIB,
            budget: 16 * MIB,
        };
        assert_eq!(full, BodyRefused::Full(expected));
        assert!(full.to_string().contains("FACEKEY_MAX_BODY_MEMORY_BYTES"));
        // A small one still fits (2 MiB free); sizes round up to whole KiB.
        let small = b.reserve(Some(1), None).unwrap().unwrap();
        assert_eq!(b.held(), 14 * MIB + 1024);
        drop((first, small));
        assert_eq!(b.held(), 6 * MIB);
        assert!(b.reserve(Some(3 * MIB), None).unwrap().is_some());
        drop(second);
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn a_key_holds_at_most_its_share_and_other_keys_still_fit() {
        let b = BodyBudget::new(32 * MIB, 8 * MIB);
        let (greedy, other): (Arc<str>, Arc<str>) = ("greedy".into(), "other".into());
        let share = |key| {
            Some(KeyShare {
                key,
                bytes: 8 * MIB,
            })
        };
        let first = b.reserve(Some(6 * MIB), share(&greedy)).unwrap().unwrap();
        let second = b.reserve(Some(2 * MIB), share(&greedy)).unwrap().unwrap();
        assert_eq!(b.held_by("greedy"), 8 * MIB);
        let refused = b.reserve(Some(1), share(&greedy)).unwrap_err();
        let BodyRefused::KeyShare(refused) = refused else {
            panic!("{refused:?}")
        };
        assert_eq!(
            (refused.wanted, refused.held, refused.share),
            (1024, 8 * MIB, 8 * MIB),
            "in whole KiB"
        );
        assert!(
            refused
                .to_string()
                .contains("FACEKEY_MAX_BODY_MEMORY_PER_KEY_SHARE"),
            "{refused}"
        );
        assert_eq!(b.held(), 8 * MIB, "the refused request's room went back");
        // Another key, and requests without a key, still fit.
        let theirs = b.reserve(Some(8 * MIB), share(&other)).unwrap().unwrap();
        let keyless = b.reserve(Some(8 * MIB), None).unwrap().unwrap();
        // A full budget is reported as such, whatever the key's share says.
        let last = b.reserve(Some(8 * MIB), None).unwrap().unwrap();
        assert!(matches!(
            b.reserve(Some(1), share(&greedy)),
            Err(BodyRefused::Full(_))
        ));
        drop(last);
        drop(first);
        assert_eq!(b.held_by("greedy"), 2 * MIB);
        assert!(b.reserve(Some(6 * MIB), share(&greedy)).unwrap().is_some());
        drop((second, theirs, keyless));
        assert_eq!(
            (b.held(), b.held_by("greedy"), b.held_by("other")),
            (0, 0, 0)
        );
        assert!(b.keys.lock().unwrap().is_empty(), "idle keys leave the map");
    }

    /// A key's bodies take its share in whole KiB, as they take the budget: 16 one-byte bodies
    /// fill a 16 KiB share (not 16 bytes of it), and the next is refused for the share while
    /// the budget and other keys still have room.
    #[test]
    fn a_key_share_counts_whole_kib_as_the_budget_does() {
        let b = BodyBudget::new(64 * 1024, 16 * 1024);
        let (tiny, other): (Arc<str>, Arc<str>) = ("tiny".into(), "other".into());
        let share = |key| {
            Some(KeyShare {
                key,
                bytes: 16 * 1024,
            })
        };
        let held: Vec<_> = (0..16)
            .map(|_| b.reserve(Some(1), share(&tiny)).unwrap().unwrap())
            .collect();
        assert_eq!((b.held(), b.held_by("tiny")), (16 * 1024, 16 * 1024));
        let refused = b.reserve(Some(1), share(&tiny)).unwrap_err();
        let BodyRefused::KeyShare(refused) = refused else {
            panic!("{refused:?}")
        };
        assert_eq!(
            (refused.wanted, refused.held, refused.share),
            (1024, 16 * 1024, 16 * 1024)
        );
        assert_eq!(b.held(), 16 * 1024, "the refused request's room went back");
        assert!(b.reserve(Some(1), share(&other)).unwrap().is_some());
        drop(held);
        assert_eq!(b.held_by("tiny"), 0);
        // A share that is no whole number of KiB is rounded up too: a body of the largest size
        // (here 1000 bytes, held as 1 KiB) always fits a share of that size.
        let b = BodyBudget::new(10_000, 1_000);
        let share = Some(KeyShare {
            key: &tiny,
            bytes: 1_000,
        });
        let one = b.reserve(Some(1_000), share).unwrap().unwrap();
        assert_eq!(b.held_by("tiny"), 1024);
        assert!(matches!(
            b.reserve(Some(1), share),
            Err(BodyRefused::KeyShare(_))
        ));
        drop(one);
    }

    #[test]
    fn a_key_share_is_at_least_one_body_and_none_when_it_is_the_budget() {
        assert_eq!(key_share_bytes(128 * MIB, 8 * MIB, 0.25), Some(32 * MIB));
        assert_eq!(key_share_bytes(16 * MIB, 8 * MIB, 0.25), Some(8 * MIB));
        assert_eq!(key_share_bytes(16 * MIB, 8 * MIB, 0.0), Some(8 * MIB));
        assert_eq!(key_share_bytes(8 * MIB, 8 * MIB, 0.25), None);
        assert_eq!(key_share_bytes(128 * MIB, 8 * MIB, 1.0), None);
    }

    #[test]
    fn the_floor_allows_the_grace_then_its_rate() {
        let floor = RateFloor::new(1000, Duration::from_secs(5)).unwrap();
        assert_eq!(floor.lag_after(0), Duration::from_secs(5));
        assert_eq!(floor.lag_after(2500), Duration::from_millis(7500));
        assert!(floor.lag_after(u64::MAX) > Duration::from_secs(500 * 365 * 86_400));
        assert_eq!(RateFloor::new(0, Duration::from_secs(5)), None);
        let slow = BodyTooSlow {
            received: 3,
            elapsed: Duration::from_millis(5250),
            floor,
        };
        assert_eq!(
            slow.to_string(),
            "request body too slow: 3 bytes in 5.2 s; after the first 5 s this body must arrive \
             at 1000 bytes/s or more on average: the floor (FACEKEY_MIN_BODY_BYTES_PER_SEC, \
             FACEKEY_BODY_RATE_GRACE_SECS), or the pace that brings a body of its size in \
             before the request timeout (FACEKEY_REQUEST_TIMEOUT_SECS) when that is higher"
        );
    }

    #[test]
    fn a_large_body_must_keep_the_pace_that_ends_it_before_the_timeout() {
        let floor = RateFloor::new(16 * 1024, Duration::from_secs(5)).unwrap();
        let timeout = Duration::from_secs(30);
        // 8 MiB in the 25 s after the grace: 335 545 bytes/s (rounded up), 20x the floor.
        let large = floor.for_body(8 * MIB, timeout);
        assert_eq!(large.bytes_per_sec, (8 * MIB).div_ceil(25));
        assert_eq!(large.grace, floor.grace);
        // At that pace the whole body is in exactly when the request times out.
        let lag = large.lag_after(8 * MIB);
        assert!(
            lag <= timeout && timeout - lag < Duration::from_millis(1),
            "{lag:?}"
        );
        // A small body keeps the floor: it arrives at the floor long before the timeout.
        assert_eq!(floor.for_body(64 * 1024, timeout), floor);
        // No window after the grace: nothing to pace against.
        assert_eq!(floor.for_body(8 * MIB, Duration::from_secs(5)), floor);
        assert_eq!(floor.for_body(8 * MIB, Duration::from_secs(1)), floor);
    }

    /// A body that stops is cut off once it lags; one that keeps up, or has ended, is not.
    #[tokio::test]
    async fn the_watch_cuts_off_a_body_that_falls_behind() {
        use futures::StreamExt as _;
        let floor = RateFloor::new(10_000, Duration::from_millis(100)).unwrap();
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, axum::Error>>();
        let stream = http_body_util::StreamBody::new(rx);
        let start = Instant::now();
        let (body, mut watch) = watch(Body::new(stream), floor, start);
        let mut data = body.into_data_stream();
        // 1000 bytes buy 100 ms beyond the grace.
        tx.unbounded_send(Ok(Frame::data(Bytes::from(vec![0; 1000]))))
            .unwrap();
        assert_eq!(data.next().await.unwrap().unwrap().len(), 1000);
        let pace = std::future::poll_fn(|cx| watch.poll(cx)).await;
        let Pace::TooSlow(slow) = pace else {
            panic!("{pace:?}")
        };
        assert_eq!(slow.received, 1000);
        assert!(slow.elapsed >= Duration::from_millis(200), "{slow:?}");
        assert!(start.elapsed() >= Duration::from_millis(200));

        // An ended body, or one its handler dropped, is done.
        let (body, mut watch) = watch_of(Body::from("done"), floor);
        let mut data = body.into_data_stream();
        assert!(data.next().await.is_some());
        assert_eq!(std::future::poll_fn(|cx| watch.poll(cx)).await, Pace::Done);
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, axum::Error>>();
        let (body, mut watch) = watch_of(Body::new(http_body_util::StreamBody::new(rx)), floor);
        drop(body);
        assert_eq!(std::future::poll_fn(|cx| watch.poll(cx)).await, Pace::Done);
        drop(tx);
    }

    fn watch_of(body: Body, floor: RateFloor) -> (Body, BodyWatch) {
        watch(body, floor, Instant::now())
    }
}
