//! Leader election through a `coordination.k8s.io/v1` Lease, so only one operator replica
//! reconciles at a time. [`decide`] is the pure rule; [`LeaderElector`] performs it with
//! optimistic concurrency (a lost race surfaces as HTTP 409 and means "not leader").

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
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

/// Decide from the Lease spec (None: no Lease object), our identity and the time.
pub fn decide(lease: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
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
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match renewed {
        Some(t) if now.duration_since(t) <= duration => Decision::Follow {
            holder: holder.to_owned(),
        },
        _ => Decision::TakeOver,
    }
}

/// Performs leader election steps against the API server.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
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

    /// One election step at time `now`: create, renew or take over the Lease if we may.
    /// Returns whether we hold it afterwards.
    pub async fn step(&self, now: Timestamp) -> Result<bool> {
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|source| Error::Lease {
                source: Box::new(source),
            })?;
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        );
        let result = match (decision, current) {
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(now, None, 0)),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            (Decision::Renew, Some(mut lease)) => {
                let old = lease.spec.clone().unwrap_or_default();
                lease.spec =
                    Some(self.spec(now, old.acquire_time, old.lease_transitions.unwrap_or(0)));
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
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
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
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

    /// Give the Lease up (on shutdown) so a standby takes over without waiting for expiry.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) =
            self.api
                .get_opt(&self.name)
                .await
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
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
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
        let now = t("2025-01-01T00:00:20Z");
        assert_eq!(decide(None, "a", now), Decision::Create);
        assert_eq!(
            decide(Some(&lease(Some("a"), "2025-01-01T00:00:00Z")), "a", now),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), "2025-01-01T00:00:10Z")), "a", now),
            Decision::Follow { holder: "b".into() }
        );
        // b last renewed 20 s ago with a 15 s lease: expired.
        assert_eq!(
            decide(Some(&lease(Some("b"), "2025-01-01T00:00:00Z")), "a", now),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(None, "2025-01-01T00:00:19Z")), "a", now),
            Decision::TakeOver
        );
    }
}
