//! Leader election through a `coordination.k8s.io/v1` Lease, so only one operator replica
//! reconciles at a time. [`decide`] is the pure rule; [`LeaderElector`] performs it with
//! optimistic concurrency (a lost race surfaces as HTTP 409 and means "not leader").
//!
//! As client-go does, a standby judges expiry by its own monotonic clock: it notes when it first
//! saw the holder's current record (holder, renew time, transitions) and takes over only when
//! that record has stayed unchanged for a whole lease duration, so clock skew between replicas
//! cannot make it take over a live Lease. Every Lease call has a timeout, and the holder's
//! renew deadline ([`renew_deadline`]) is shorter than the lease and bounds the renewal attempts
//! themselves ([`LeaderElector::hold`]), so a leader that cannot renew, calls hanging or failing,
//! stops before a standby may take over.

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::{Error, Result};

/// What to do with the Lease, given its current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it holding it ourselves.
    Create,
    /// We hold it: renew.
    Renew,
    /// It is free or expired: take it over.
    TakeOver,
    /// Someone else holds a live Lease.
    Follow {
        /// The current holder.
        holder: String,
    },
}

/// How long a leader keeps trying to renew before it gives up leading: two thirds of the lease
/// (client-go's defaults are 10 s of 15 s), so it stops before any standby may take over.
pub fn renew_deadline(lease_duration: Duration) -> Duration {
    lease_duration.mul_f64(2.0 / 3.0)
}

/// How soon a leader tries again after a failed renewal (at most the regular renewal interval):
/// a renewal begun a third of the lease after the last one, whose call then timed out (a third
/// of the renew deadline), still leaves time for another attempt before the deadline.
pub const RENEW_RETRY: Duration = Duration::from_secs(1);

/// Why [`LeaderElector::hold`] stopped holding the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// The Lease names another holder (or a renewal lost the race for it).
    Taken,
    /// No renewal succeeded within [`renew_deadline`] of the start of the last one that did.
    RenewDeadline,
}

/// Decide from the Lease spec (None: no Lease object), our identity and for how long, by our
/// own clock, the holder's current record has been seen unchanged (`None`: first sight).
pub fn decide(lease: Option<&LeaseSpec>, me: &str, unchanged_for: Option<Duration>) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let duration =
        Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15));
    match unchanged_for {
        Some(seen) if seen >= duration => Decision::TakeOver,
        _ => Decision::Follow {
            holder: holder.to_owned(),
        },
    }
}

/// What shows the holder is alive: any write to the Lease (its resourceVersion) or a change of
/// its record.
fn record(lease: Option<&Lease>) -> Option<String> {
    let lease = lease?;
    let s = lease.spec.as_ref()?;
    Some(format!(
        "{}|{}|{:?}|{:?}|{:?}",
        lease
            .metadata
            .resource_version
            .as_deref()
            .unwrap_or_default(),
        s.holder_identity.as_deref().unwrap_or_default(),
        s.renew_time.as_ref().map(|t| t.0),
        s.acquire_time.as_ref().map(|t| t.0),
        s.lease_transitions
    ))
}

/// Performs leader election steps against the API server.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    call_timeout: Duration,
    /// The last record seen and when (our monotonic clock) it was first seen.
    observed: Mutex<Option<(String, tokio::time::Instant)>>,
}

impl LeaderElector {
    /// An elector for the Lease `namespace/name` with our `identity` (usually the pod name).
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration,
            // A call may take at most a third of the renew deadline, so a hung API server is
            // noticed with time left to retry.
            call_timeout: renew_deadline(lease_duration) / 3,
            observed: Mutex::new(None),
        }
    }

    /// Run one Lease call under the per-call timeout.
    async fn call<T>(
        &self,
        name: &'static str,
        fut: impl std::future::Future<Output = std::result::Result<T, kube::Error>>,
    ) -> Result<std::result::Result<T, kube::Error>> {
        tokio::time::timeout(self.call_timeout, fut)
            .await
            .map_err(|_| Error::LeaseTimeout {
                call: name,
                after: self.call_timeout,
            })
    }

    /// For how long the holder's current record has been seen unchanged, by our clock.
    fn unchanged_for(&self, lease: Option<&Lease>) -> Option<Duration> {
        let now = tokio::time::Instant::now();
        let current = record(lease)?;
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        match observed.as_ref() {
            Some((seen, since)) if *seen == current => Some(now.duration_since(*since)),
            _ => {
                *observed = Some((current, now));
                None
            }
        }
    }

    /// Our identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn spec(&self, now: Timestamp, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.lease_duration.as_secs()).unwrap_or(15),
            ),
            acquire_time: Some(acquire.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One election step: create, renew or take over the Lease if we may. `now` is the wall
    /// time written into the Lease; expiry of another holder's Lease is judged by our monotonic
    /// clock (`tokio::time::Instant`). Returns whether we hold it afterwards.
    pub async fn step(&self, now: Timestamp) -> Result<bool> {
        let current = self
            .call("get", self.api.get_opt(&self.name))
            .await?
            .map_err(|source| Error::Lease {
                source: Box::new(source),
            })?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let decision = decide(spec, &self.identity, self.unchanged_for(current.as_ref()));
        let result = match (decision, current) {
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(now, None, 0)),
                };
                self.call("create", self.api.create(&PostParams::default(), &lease))
                    .await?
                    .map(|_| ())
            }
            (Decision::Renew, Some(mut lease)) => {
                let old = lease.spec.clone().unwrap_or_default();
                lease.spec =
                    Some(self.spec(now, old.acquire_time, old.lease_transitions.unwrap_or(0)));
                self.call(
                    "replace",
                    self.api.replace(&self.name, &PostParams::default(), &lease),
                )
                .await?
                .map(|_| ())
            }
            (Decision::TakeOver, Some(mut lease)) => {
                let transitions = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.lease_transitions)
                    .unwrap_or(0)
                    .saturating_add(1);
                lease.spec = Some(self.spec(now, None, transitions));
                self.call(
                    "replace",
                    self.api.replace(&self.name, &PostParams::default(), &lease),
                )
                .await?
                .map(|_| ())
            }
            (Decision::Follow { .. }, _) => return Ok(false),
            (Decision::Renew | Decision::TakeOver, None) => return Ok(false),
        };
        match result {
            Ok(()) => Ok(true),
            // Another replica won the race (stale resourceVersion or concurrent create).
            Err(e) if crate::error::is_conflict(&e) => Ok(false),
            Err(source) => Err(Error::Lease {
                source: Box::new(source),
            }),
        }
    }

    /// Keep a Lease won by a step that started at `won_at`: renew every third of the lease, and
    /// after a failed renewal every [`RENEW_RETRY`]. Returns once leadership is lost: at the
    /// latest [`renew_deadline`] after the start of the last successful renewal, whether or not
    /// a call is still waiting then, so a leader whose API calls hang stops leading before a
    /// standby (which waits a whole lease from when it saw that renewal) may take over.
    pub async fn hold(&self, won_at: tokio::time::Instant) -> Lost {
        let renew_every = self.lease_duration / 3;
        let deadline = renew_deadline(self.lease_duration);
        let mut last_ok = won_at;
        let mut wait = renew_every;
        loop {
            let attempt = async {
                tokio::time::sleep(wait).await;
                let started = tokio::time::Instant::now();
                (started, self.step(Timestamp::now()).await)
            };
            match tokio::time::timeout_at(last_ok + deadline, attempt).await {
                Err(_) => {
                    tracing::warn!(
                        deadline = ?deadline,
                        "no Lease renewal succeeded within the renew deadline"
                    );
                    return Lost::RenewDeadline;
                }
                Ok((started, Ok(true))) => {
                    last_ok = started;
                    wait = renew_every;
                }
                Ok((_, Ok(false))) => return Lost::Taken,
                Ok((_, Err(e))) => {
                    tracing::warn!(error = %e, "lease renewal failed");
                    wait = RENEW_RETRY.min(renew_every);
                }
            }
        }
    }

    /// Give the Lease up (on shutdown) so a standby takes over without waiting for expiry.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self
            .call("get", self.api.get_opt(&self.name))
            .await?
            .map_err(|source| Error::Lease {
                source: Box::new(source),
            })?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .call(
                "replace",
                self.api.replace(&self.name, &PostParams::default(), &lease),
            )
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) if crate::error::is_conflict(&e) => Ok(()),
            Err(source) => Err(Error::Lease {
                source: Box::new(source),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn lease(holder: Option<&str>, renewed: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(t(renewed))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        let live = lease(Some("b"), "2025-01-01T00:00:10Z");
        assert_eq!(decide(None, "a", None), Decision::Create);
        assert_eq!(
            decide(Some(&lease(Some("a"), "2025-01-01T00:00:00Z")), "a", None),
            Decision::Renew
        );
        // First sight of b's record, or seen unchanged for less than the 15 s lease: follow,
        // whatever the timestamps in the record say against our wall clock.
        for seen in [None, Some(Duration::from_secs(14))] {
            assert_eq!(
                decide(Some(&live), "a", seen),
                Decision::Follow { holder: "b".into() }
            );
        }
        assert_eq!(
            decide(Some(&live), "a", Some(Duration::from_secs(15))),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(None, "2025-01-01T00:00:19Z")), "a", None),
            Decision::TakeOver
        );
        assert!(renew_deadline(Duration::from_secs(15)) < Duration::from_secs(15));
        assert_eq!(
            renew_deadline(Duration::from_secs(15)),
            Duration::from_secs(10)
        );
    }
}
