//! Pure verification logic: pick the best template match, build the fusion features and
//! decide under the decision policy. No I/O, so every rule is unit-tested here.

use crate::config::DecisionPolicy;
use crate::decision::Decision;
use crate::vision::{Embedding, MatchScore, Vision};

/// The probe's match against a subject.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchOutcome {
    /// Euclidean distance to the closest template.
    pub distance: f64,
    /// Similarity in [0, 1] of that distance.
    pub similarity: f64,
    /// Minimum similarity to match.
    pub threshold: f64,
}

impl MatchOutcome {
    /// `accept` when the similarity reaches the threshold.
    pub fn decision(&self) -> Decision {
        Decision::at_least(self.similarity, self.threshold)
    }
}

/// The individual checks' outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    /// Did the face match the subject?
    pub matched: Decision,
    /// Is the face live?
    pub live: Decision,
}

/// The closest of `templates` to `probe` (the caller guarantees at least one template).
pub fn best_match(vision: &Vision, probe: &Embedding, templates: &[Embedding]) -> MatchScore {
    closest(templates.iter().map(|t| vision.compare(probe, t)))
}

/// The score with the smallest distance; a NaN distance never wins.
pub fn closest(scores: impl IntoIterator<Item = MatchScore>) -> MatchScore {
    scores
        .into_iter()
        .reduce(|a, b| if b.distance < a.distance { b } else { a })
        .unwrap_or(MatchScore {
            distance: f32::INFINITY,
            similarity: 0.0,
            is_match: false,
            threshold: 0.0,
        })
}

/// The fusion inputs `[match_similarity, liveness, quality]`. Without a liveness score
/// (liveness off) the face counts as live (1.0).
pub fn features(m: &MatchOutcome, liveness: Option<f64>, quality: f64) -> [f64; 3] {
    [m.similarity, liveness.unwrap_or(1.0), quality]
}

/// The final decision and the failed checks. `strict` accepts only when the probability
/// reaches the threshold and the match and liveness checks accept; `fusion` lets the probability
/// alone decide (failed checks are still reported).
pub fn decide(
    policy: DecisionPolicy,
    probability: f64,
    threshold: f64,
    checks: Checks,
) -> (Decision, Vec<&'static str>) {
    let mut reasons = Vec::new();
    if checks.matched == Decision::Reject {
        reasons.push("no_match");
    }
    if checks.live == Decision::Reject {
        reasons.push("spoof");
    }
    let fused = Decision::at_least(probability, threshold);
    if fused == Decision::Reject {
        reasons.push("low_probability");
    }
    let decision = match policy {
        DecisionPolicy::Fusion => fused,
        DecisionPolicy::Strict if reasons.is_empty() => Decision::Accept,
        DecisionPolicy::Strict => Decision::Reject,
    };
    (decision, reasons)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Checks = Checks {
        matched: Decision::Accept,
        live: Decision::Accept,
    };

    #[test]
    fn strict_needs_every_check() {
        assert_eq!(
            decide(DecisionPolicy::Strict, 0.9, 0.5, OK),
            (Decision::Accept, vec![])
        );
        let spoof = Checks {
            live: Decision::Reject,
            ..OK
        };
        assert_eq!(
            decide(DecisionPolicy::Strict, 0.9, 0.5, spoof),
            (Decision::Reject, vec!["spoof"])
        );
        let none = Checks {
            matched: Decision::Reject,
            live: Decision::Reject,
        };
        assert_eq!(
            decide(DecisionPolicy::Strict, 0.1, 0.5, none),
            (
                Decision::Reject,
                vec!["no_match", "spoof", "low_probability"]
            )
        );
    }

    #[test]
    fn fusion_policy_follows_the_probability() {
        let spoof = Checks {
            live: Decision::Reject,
            ..OK
        };
        assert_eq!(
            decide(DecisionPolicy::Fusion, 0.9, 0.5, spoof),
            (Decision::Accept, vec!["spoof"])
        );
        assert_eq!(
            decide(DecisionPolicy::Fusion, 0.4, 0.5, OK),
            (Decision::Reject, vec!["low_probability"])
        );
    }

    #[test]
    fn closest_template_wins_and_nan_never_does() {
        let s = |d: f32| MatchScore {
            distance: d,
            similarity: 1.0 - d,
            is_match: d < 0.6,
            threshold: 0.6,
        };
        assert_eq!(closest([s(0.7), s(0.3), s(0.5)]).distance, 0.3);
        assert_eq!(closest([s(0.7), s(f32::NAN)]).distance, 0.7);
        assert!(closest([]).distance.is_infinite());
    }

    #[test]
    fn features_order_and_missing_liveness() {
        let m = MatchOutcome {
            distance: 0.3,
            similarity: 0.95,
            threshold: 0.5,
        };
        assert_eq!(features(&m, Some(0.8), 0.7), [0.95, 0.8, 0.7]);
        assert_eq!(features(&m, None, 0.7), [0.95, 1.0, 0.7]);
        assert_eq!(m.decision(), Decision::Accept);
    }
}
