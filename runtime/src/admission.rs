//! Admission control for inference: at most `in_flight` model runs at once, at most `queue`
//! more waiting for a place, and anything beyond answered at once as overloaded instead of
//! joining an unbounded queue. A login path wants a fast "try again" over a slow timeout, and a
//! bounded number of concurrent inferences bounds memory (each can hold 100-250 MB).
//!
//! A waiting request that goes away (client disconnected, deadline passed) gives its place back
//! as soon as its future is dropped; a running one keeps its place until its model work ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The service is at capacity: the caller should retry after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "overloaded: {in_flight} inferences running and {queued} waiting (the limits); retry in \
     {} s",
    retry_after.as_secs()
)]
pub struct Overloaded {
    /// Inferences running when the request was refused.
    pub in_flight: usize,
    /// Requests waiting when it was refused.
    pub queued: usize,
    /// When to retry.
    pub retry_after: Duration,
}

/// Counts for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionStats {
    /// Inferences running now.
    pub in_flight: usize,
    /// Requests waiting now.
    pub queued: usize,
    /// Requests refused since start.
    pub rejected: u64,
}

/// The admission controller shared by every request.
#[derive(Debug)]
pub struct Admission {
    running: Arc<Semaphore>,
    in_flight: usize,
    capacity: usize,
    admitted: Arc<AtomicUsize>,
    rejected: AtomicU64,
    queue_timeout: Duration,
}

/// A place among the running inferences; given back when dropped.
#[derive(Debug)]
pub struct Permit {
    _running: OwnedSemaphorePermit,
    _place: Place,
}

/// A reserved place (running or waiting), released on drop.
#[derive(Debug)]
struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// At most `in_flight` (at least 1) running and `queue` waiting; a request waits at most
    /// `queue_timeout` for a place before it is refused.
    pub fn new(in_flight: usize, queue: usize, queue_timeout: Duration) -> Self {
        let in_flight = in_flight.max(1);
        Self {
            running: Arc::new(Semaphore::new(in_flight)),
            in_flight,
            capacity: in_flight + queue,
            admitted: Arc::new(AtomicUsize::new(0)),
            rejected: AtomicU64::new(0),
            queue_timeout,
        }
    }

    fn overloaded(&self) -> Overloaded {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let stats = self.stats();
        Overloaded {
            in_flight: stats.in_flight,
            queued: stats.queued,
            retry_after: Duration::from_secs(1),
        }
    }

    /// A place to run an inference: at once when one is free, after a short wait when the
    /// queue has room, else [`Overloaded`] immediately.
    pub async fn admit(&self) -> Result<Permit, Overloaded> {
        let place = {
            let mut current = self.admitted.load(Ordering::Acquire);
            loop {
                if current >= self.capacity {
                    return Err(self.overloaded());
                }
                match self.admitted.compare_exchange_weak(
                    current,
                    current + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break Place(self.admitted.clone()),
                    Err(now) => current = now,
                }
            }
        };
        match tokio::time::timeout(self.queue_timeout, self.running.clone().acquire_owned()).await {
            Ok(Ok(running)) => Ok(Permit {
                _running: running,
                _place: place,
            }),
            // Timed out waiting, or the semaphore closed (never closed here).
            Ok(Err(_)) | Err(_) => {
                drop(place);
                Err(self.overloaded())
            }
        }
    }

    /// Running, waiting and refused counts.
    pub fn stats(&self) -> AdmissionStats {
        let running = self.in_flight - self.running.available_permits();
        let admitted = self.admitted.load(Ordering::Acquire);
        AdmissionStats {
            in_flight: running,
            queued: admitted.saturating_sub(running),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_queues_then_refuses_at_once() {
        let a = Arc::new(Admission::new(1, 1, Duration::from_secs(10)));
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
        let a = Arc::new(Admission::new(1, 1, Duration::from_secs(10)));
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
        let a = Admission::new(1, 4, Duration::from_millis(30));
        let _running = a.admit().await.unwrap();
        let err = a.admit().await.unwrap_err();
        assert_eq!(err.in_flight, 1);
        assert_eq!(a.stats().queued, 0);
    }
}
