//! The memory request bodies may hold at once, all requests together
//! (`FACEKEY_MAX_BODY_MEMORY_BYTES`). Handlers read a whole body into memory before any work,
//! and an image's stays there through its inference. The body limit bounds one request and the
//! connection limit the requests over HTTP/1.1, but their product (1024 connections x 8 MiB,
//! and HTTP/2 carries up to 200 requests on each connection) is far beyond a pod's memory: a
//! burst of large uploads from callers with a key would get the pod OOM-killed, failing every
//! login it was serving. So an authorised request with a body reserves its size (its declared
//! length, or the body limit when it declares none) before its handler runs and gives it back
//! when its answer is ready; a request the budget cannot hold is answered 503 `overloaded` at
//! once, before a byte of its body is read. What a body becomes while it is parsed (a base64
//! image decoded, a multipart part copied out) is not counted: up to as much again, briefly.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// The `reason` label of `facekey_admission_rejected_total` for a refusal here.
pub const REFUSAL_LABEL: &str = "body_memory";

/// Reservations are counted in KiB, so that a budget of terabytes still fits the semaphore's
/// per-acquisition `u32`.
const UNIT: u64 = 1024;

/// The budget shared by every request of the process.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    units: u32,
    max_body: u64,
}

/// A body's reservation: its bytes return to the budget when this is dropped.
#[derive(Debug)]
pub struct BodyReservation {
    _permit: OwnedSemaphorePermit,
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

fn units(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
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
        }
    }

    /// Bytes a body reserves, from the upper bound of its size hint: its length when declared
    /// (capped at the body limit, which refuses a longer one unread), the body limit when it
    /// declares none, nothing when it has none.
    pub fn needed(&self, upper: Option<u64>) -> u64 {
        upper.unwrap_or(u64::MAX).min(self.max_body)
    }

    /// Reserve room for a body whose size hint has this upper bound: `Ok(None)` when it has no
    /// body, `Ok(Some(_))` held until the answer, or the refusal when the budget is full.
    pub fn reserve(&self, upper: Option<u64>) -> Result<Option<BodyReservation>, BodyMemoryFull> {
        let wanted = self.needed(upper);
        if wanted == 0 {
            return Ok(None);
        }
        match self.permits.clone().try_acquire_many_owned(units(wanted)) {
            Ok(permit) => Ok(Some(BodyReservation { _permit: permit })),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => Err(BodyMemoryFull {
                wanted,
                held: self.held(),
                budget: u64::from(self.units) * UNIT,
            }),
        }
    }

    /// Bytes reserved now (in whole KiB).
    pub fn held(&self) -> u64 {
        let free = u64::try_from(self.permits.available_permits()).unwrap_or(u64::MAX);
        u64::from(self.units).saturating_sub(free) * UNIT
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
        assert!(b.reserve(Some(0)).unwrap().is_none());
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn the_budget_refuses_what_it_cannot_hold_and_takes_it_back_on_drop() {
        let b = BodyBudget::new(16 * MIB, 8 * MIB);
        let first = b.reserve(None).unwrap().unwrap();
        let second = b.reserve(Some(6 * MIB)).unwrap().unwrap();
        assert_eq!(b.held(), 14 * MIB);
        let full = b.reserve(Some(3 * MIB)).unwrap_err();
        assert_eq!(
            full,
            BodyMemoryFull {
                wanted: 3 * MIB,
                held: 14 * MIB,
                budget: 16 * MIB
            }
        );
        assert!(full.to_string().contains("FACEKEY_MAX_BODY_MEMORY_BYTES"));
        // A small one still fits (2 MiB free); sizes round up to whole KiB.
        let small = b.reserve(Some(1)).unwrap().unwrap();
        assert_eq!(b.held(), 14 * MIB + 1024);
        drop((first, small));
        assert_eq!(b.held(), 6 * MIB);
        assert!(b.reserve(Some(3 * MIB)).unwrap().is_some());
        drop(second);
        assert_eq!(b.held(), 0);
    }
}
