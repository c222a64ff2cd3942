//! Status conditions, computed in one place so `lastTransitionTime` only moves when a condition's
//! status actually changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition as the status computation decides it, before timestamps are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// Condition type, one of [`facekey_crds::condition`].
    pub type_: &'static str,
    /// True or False.
    pub status: bool,
    /// PascalCase machine-readable reason.
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
}

impl Decided {
    /// Shorthand constructor.
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

fn status_str(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// Turn decided conditions into API conditions: `lastTransitionTime` is kept from `old` when the
/// status of that type is unchanged, and set to `now` otherwise. Types absent from `decided` are
/// dropped. Order follows `decided`.
pub fn merge(
    old: &[Condition],
    decided: &[Decided],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    decided
        .iter()
        .map(|d| {
            let status = status_str(d.status).to_owned();
            let last_transition_time = old
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map_or_else(|| Time(now), |c| c.last_transition_time.clone());
            Condition {
                type_: d.type_.to_owned(),
                status,
                reason: d.reason.to_owned(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The condition of `type_` in `conditions`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let t0: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2025-01-01T00:05:00Z".parse().unwrap();
        let first = merge(
            &[],
            &[Decided::new("Ready", false, "NotAvailable", "0/1")],
            Some(1),
            t0,
        );
        assert_eq!(first[0].last_transition_time.0, t0);
        // Same status, different reason/message: time kept, text updated.
        let second = merge(
            &first,
            &[Decided::new("Ready", false, "RollingOut", "0/2")],
            Some(2),
            t1,
        );
        assert_eq!(second[0].last_transition_time.0, t0);
        assert_eq!(second[0].reason, "RollingOut");
        assert_eq!(second[0].observed_generation, Some(2));
        // Status flips: time moves.
        let third = merge(
            &second,
            &[Decided::new("Ready", true, "Available", "2/2")],
            Some(2),
            t1,
        );
        assert_eq!(third[0].last_transition_time.0, t1);
        assert_eq!(third[0].status, "True");
    }
}
