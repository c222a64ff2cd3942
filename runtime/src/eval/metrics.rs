//! Error rates over recorded feature rows: FNMR/FMR at the match threshold, BPCER/APCER at the
//! liveness threshold for each liveness mode, the fused decision's error rates under both
//! decision policies, ROC AUC, and the minimax threshold used to recommend a fusion threshold.

use std::collections::BTreeSet;
use std::fmt;

use crate::config::DecisionPolicy;
use crate::decision::Decision;
use crate::fusion::FusionMlp;
use crate::verification::{self, Checks, MatchOutcome};
use crate::vision::liveness::combine_scores;
use crate::vision::{Combine, LivenessMode};

use super::features::{FeatureRow, Kind};

/// `errors` out of `total` trials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rate {
    /// Erroneous decisions.
    pub errors: usize,
    /// Decisions.
    pub total: usize,
}

impl Rate {
    /// Counts the trials of `items` and those for which `is_error` holds.
    pub fn count<T>(items: impl IntoIterator<Item = T>, is_error: impl Fn(&T) -> bool) -> Self {
        let mut r = Rate::default();
        for item in items {
            r.total += 1;
            if is_error(&item) {
                r.errors += 1;
            }
        }
        r
    }

    /// The fraction, or `None` without trials.
    pub fn value(&self) -> Option<f64> {
        (self.total > 0).then(|| self.errors as f64 / self.total as f64)
    }
}

impl fmt::Display for Rate {
    /// `12.5 % (2/16)`, or `n/a (0)` without trials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value() {
            Some(v) => write!(f, "{:.1} % ({}/{})", v * 100.0, self.errors, self.total),
            None => write!(f, "n/a (0)"),
        }
    }
}

/// The liveness modes the runtime offers, with report names.
pub const LIVENESS_MODES: [(&str, LivenessMode); 4] = [
    ("DTN only", LivenessMode::Dtn),
    ("MiniFAS only", LivenessMode::MiniFas),
    (
        "both, mean",
        LivenessMode::Both {
            combine: Combine::Mean,
        },
    ),
    (
        "both, min",
        LivenessMode::Both {
            combine: Combine::Min,
        },
    ),
];

/// The row's liveness score under `mode`, recomputed from the recorded per-model scores exactly
/// as the runtime combines them (`mode` off counts as live, 1.0).
pub fn liveness_under(row: &FeatureRow, mode: LivenessMode) -> f64 {
    combine_scores(
        mode,
        Some(row.dtn_live as f32),
        Some(row.minifas_live as f32),
    )
    .map(f64::from)
    .unwrap_or(1.0)
}

/// FNMR: genuine pairs whose similarity falls below the match threshold.
pub fn fnmr(rows: &[FeatureRow], match_threshold: f64) -> Rate {
    Rate::count(rows.iter().filter(|r| r.kind == Kind::Genuine), |r| {
        Decision::at_least(r.similarity, match_threshold) == Decision::Reject
    })
}

/// FMR: impostor pairs whose similarity reaches the match threshold.
pub fn fmr(rows: &[FeatureRow], match_threshold: f64) -> Rate {
    Rate::count(rows.iter().filter(|r| r.kind == Kind::Impostor), |r| {
        Decision::at_least(r.similarity, match_threshold) == Decision::Accept
    })
}

/// Presentation-attack detection errors of one liveness mode, each counted once per
/// presentation (an image), not per comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PadErrors {
    /// Original real photos called attacks.
    pub bpcer_originals: Rate,
    /// All real photos (originals and degraded copies) called attacks.
    pub bpcer_all: Rate,
    /// Simulated prints called live.
    pub apcer_print: Rate,
    /// Simulated replays called live.
    pub apcer_replay: Rate,
}

fn presentations<'a>(rows: &'a [FeatureRow], kinds: &[Kind]) -> Vec<&'a FeatureRow> {
    let mut seen = BTreeSet::new();
    rows.iter()
        .filter(|r| kinds.contains(&r.kind) && seen.insert(r.presentation.as_str()))
        .collect()
}

/// BPCER and APCER of `mode` at `threshold` (live when the score reaches it).
pub fn pad_errors(rows: &[FeatureRow], mode: LivenessMode, threshold: f64) -> PadErrors {
    let live = |r: &&FeatureRow| Decision::at_least(liveness_under(r, mode), threshold);
    PadErrors {
        bpcer_originals: Rate::count(presentations(rows, &[Kind::BonaFide]), |r| {
            live(r) == Decision::Reject
        }),
        bpcer_all: Rate::count(presentations(rows, &[Kind::BonaFide, Kind::Genuine]), |r| {
            live(r) == Decision::Reject
        }),
        apcer_print: Rate::count(presentations(rows, &[Kind::AttackPrint]), |r| {
            live(r) == Decision::Accept
        }),
        apcer_replay: Rate::count(presentations(rows, &[Kind::AttackReplay]), |r| {
            live(r) == Decision::Accept
        }),
    }
}

/// The settings of one verification decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecisionSettings {
    /// Minimum match similarity.
    pub match_threshold: f64,
    /// Minimum liveness score.
    pub liveness_threshold: f64,
    /// Liveness mode whose score feeds the MLP and the liveness check.
    pub liveness_mode: LivenessMode,
    /// Probability threshold of the fused decision.
    pub threshold: f64,
    /// Strict (every check) or fusion (probability alone).
    pub policy: DecisionPolicy,
}

/// The runtime's verification decision for one row.
pub fn decide(row: &FeatureRow, mlp: &FusionMlp, s: &DecisionSettings) -> Decision {
    let m = MatchOutcome {
        distance: row.distance,
        similarity: row.similarity,
        threshold: s.match_threshold,
    };
    let live = liveness_under(row, s.liveness_mode);
    let x = verification::features(&m, Some(live), row.quality);
    let p = mlp.forward(&x).probability;
    let checks = Checks {
        matched: m.decision(),
        live: Decision::at_least(live, s.liveness_threshold),
    };
    verification::decide(s.policy, p, s.threshold, checks).0
}

/// Error rates of the fused verification decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FusedErrors {
    /// Genuine pairs (degraded real photos of the claimed person) rejected.
    pub frr_genuine: Rate,
    /// Original photos claimed as themselves rejected.
    pub frr_originals: Rate,
    /// Impostor pairs accepted.
    pub far_impostor: Rate,
    /// Simulated prints of the claimed person accepted.
    pub far_print: Rate,
    /// Simulated replays of the claimed person accepted.
    pub far_replay: Rate,
}

/// The fused decision's error rates over `rows`.
pub fn fused_errors(rows: &[FeatureRow], mlp: &FusionMlp, s: &DecisionSettings) -> FusedErrors {
    let of = |kind: Kind, error_when: Decision| {
        Rate::count(rows.iter().filter(|r| r.kind == kind), |r| {
            decide(r, mlp, s) == error_when
        })
    };
    FusedErrors {
        frr_genuine: of(Kind::Genuine, Decision::Reject),
        frr_originals: of(Kind::BonaFide, Decision::Reject),
        far_impostor: of(Kind::Impostor, Decision::Accept),
        far_print: of(Kind::AttackPrint, Decision::Accept),
        far_replay: of(Kind::AttackReplay, Decision::Accept),
    }
}

/// Area under the ROC curve of `(score, label)` pairs (probability that a random positive
/// scores above a random negative, ties counting half); `None` without both classes.
pub fn auc(scored: &[(f64, u8)]) -> Option<f64> {
    let mut v: Vec<(f64, u8)> = scored.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut pos, mut neg) = (0.0f64, 0usize, 0usize);
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            j += 1;
        }
        // Average 1-based rank of the tie group.
        let rank = (i + 1 + j) as f64 / 2.0;
        for item in &v[i..j] {
            if item.1 == 1 {
                rank_sum += rank;
                pos += 1;
            } else {
                neg += 1;
            }
        }
        i = j;
    }
    if pos == 0 || neg == 0 {
        return None;
    }
    let (p, n) = (pos as f64, neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Error groups of a fused score: positives (genuine + original), impostors, prints, replays.
fn group(kind: Kind) -> usize {
    match kind {
        Kind::Genuine | Kind::BonaFide => 0,
        Kind::Impostor => 1,
        Kind::AttackPrint => 2,
        Kind::AttackReplay => 3,
    }
}

/// Per-group error rates of accepting `p >= t`: `[FRR, FAR impostor, FAR print, FAR replay]`
/// (`None` for an empty group).
pub fn group_errors(scored: &[(f64, Kind)], t: f64) -> [Option<f64>; 4] {
    let mut errors = [0usize; 4];
    let mut totals = [0usize; 4];
    for &(p, kind) in scored {
        let g = group(kind);
        totals[g] += 1;
        let accept = p >= t;
        if (g == 0) != accept {
            errors[g] += 1;
        }
    }
    let mut out = [None; 4];
    for g in 0..4 {
        if totals[g] > 0 {
            out[g] = Some(errors[g] as f64 / totals[g] as f64);
        }
    }
    out
}

/// The threshold minimising the worst of FRR, impostor FAR, print FAR and replay FAR (then
/// their sum), taken in the middle of the best run of candidate thresholds (midpoints between
/// distinct scores); with that worst error.
pub fn minimax_threshold(scored: &[(f64, Kind)]) -> (f64, f64) {
    let mut ps: Vec<f64> = scored.iter().map(|s| s.0).collect();
    ps.sort_by(f64::total_cmp);
    ps.dedup();
    let mut candidates = vec![0.0];
    candidates.extend(ps.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    if let Some(&last) = ps.last() {
        candidates.push((last + 1.0) / 2.0);
    }
    let cost = |t: f64| {
        let e = group_errors(scored, t);
        let worst = e.iter().flatten().copied().fold(0.0, f64::max);
        let sum: f64 = e.iter().flatten().sum();
        (worst, sum)
    };
    let costs: Vec<(f64, f64)> = candidates.iter().map(|&t| cost(t)).collect();
    let best = costs
        .iter()
        .copied()
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)))
        .unwrap_or((1.0, 4.0));
    let tied: Vec<f64> = candidates
        .iter()
        .zip(&costs)
        .filter(|(_, c)| (c.0 - best.0).abs() < 1e-12 && (c.1 - best.1).abs() < 1e-12)
        .map(|(t, _)| *t)
        .collect();
    let t = tied.get(tied.len() / 2).copied().unwrap_or(0.5);
    (t.clamp(0.0, 1.0), best.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::features::tests::row;
    use super::*;

    #[test]
    fn rate_display_and_value() {
        let r = Rate::count([1, 2, 3, 4], |v| *v > 3);
        assert_eq!(
            r,
            Rate {
                errors: 1,
                total: 4
            }
        );
        assert_eq!(r.to_string(), "25.0 % (1/4)");
        assert_eq!(Rate::default().to_string(), "n/a (0)");
        assert!(Rate::default().value().is_none());
    }

    #[test]
    fn match_errors_use_the_threshold_inclusively() {
        let rows = vec![
            row(Kind::Genuine, "a", "a", [0.5, 1.0, 1.0]),
            row(Kind::Genuine, "a", "a", [0.49, 1.0, 1.0]),
            row(Kind::Impostor, "a", "b", [0.5, 1.0, 1.0]),
            row(Kind::Impostor, "a", "b", [0.1, 1.0, 1.0]),
            row(Kind::AttackPrint, "a", "a", [0.1, 1.0, 1.0]),
        ];
        assert_eq!(
            fnmr(&rows, 0.5),
            Rate {
                errors: 1,
                total: 2
            }
        );
        assert_eq!(
            fmr(&rows, 0.5),
            Rate {
                errors: 1,
                total: 2
            }
        );
    }

    #[test]
    fn pad_errors_count_presentations_once_per_mode() {
        let mut g = row(Kind::Genuine, "a", "a", [0.9, 0.0, 1.0]);
        g.dtn_live = 0.8;
        g.minifas_live = 0.3;
        let mut imp = g.clone();
        imp.kind = Kind::Impostor;
        let mut att = row(Kind::AttackReplay, "a", "a", [0.9, 0.0, 1.0]);
        att.presentation = "attack".into();
        att.dtn_live = 0.6;
        att.minifas_live = 0.45;
        let rows = vec![g, imp, att];
        let dtn = pad_errors(&rows, LivenessMode::Dtn, 0.5);
        assert_eq!(
            dtn.bpcer_all,
            Rate {
                errors: 0,
                total: 1
            }
        );
        assert_eq!(
            dtn.apcer_replay,
            Rate {
                errors: 1,
                total: 1
            }
        );
        assert_eq!(dtn.apcer_print.total, 0);
        let mini = pad_errors(&rows, LivenessMode::MiniFas, 0.5);
        assert_eq!(
            mini.bpcer_all,
            Rate {
                errors: 1,
                total: 1
            }
        );
        assert_eq!(
            mini.apcer_replay,
            Rate {
                errors: 0,
                total: 1
            }
        );
        let mean = LIVENESS_MODES[2].1;
        assert!((liveness_under(&rows[2], mean) - 0.525).abs() < 1e-6);
        assert_eq!(pad_errors(&rows, mean, 0.5).apcer_replay.errors, 1);
        let min = LIVENESS_MODES[3].1;
        assert_eq!(pad_errors(&rows, min, 0.5).apcer_replay.errors, 0);
    }

    #[test]
    fn strict_policy_never_accepts_more_than_fusion() {
        let mlp = FusionMlp::reference().unwrap();
        let mut rows = Vec::new();
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            for k in 0..20 {
                let v = f64::from(k) / 19.0;
                let mut r = row(kind, "a", "b", [v, 1.0 - v, (v + i as f64 * 0.1) % 1.0]);
                r.dtn_live = 1.0 - v;
                r.minifas_live = (v * 3.0) % 1.0;
                rows.push(r);
            }
        }
        let base = DecisionSettings {
            match_threshold: 0.5,
            liveness_threshold: 0.5,
            liveness_mode: LIVENESS_MODES[2].1,
            threshold: 0.5,
            policy: DecisionPolicy::Fusion,
        };
        let strict = DecisionSettings {
            policy: DecisionPolicy::Strict,
            ..base
        };
        let (f, s) = (
            fused_errors(&rows, &mlp, &base),
            fused_errors(&rows, &mlp, &strict),
        );
        assert!(s.far_impostor.errors <= f.far_impostor.errors);
        assert!(s.far_replay.errors <= f.far_replay.errors);
        assert!(s.frr_genuine.errors >= f.frr_genuine.errors);
        assert_eq!(f.frr_genuine.total, 20);
        // Every row's strict accept implies a fusion accept.
        for r in &rows {
            if decide(r, &mlp, &strict) == Decision::Accept {
                assert_eq!(decide(r, &mlp, &base), Decision::Accept);
            }
        }
    }

    #[test]
    fn auc_extremes_ties_and_chance() {
        assert_eq!(auc(&[(0.9, 1), (0.8, 1), (0.1, 0)]), Some(1.0));
        assert_eq!(auc(&[(0.1, 1), (0.9, 0)]), Some(0.0));
        assert_eq!(auc(&[(0.5, 1), (0.5, 0)]), Some(0.5));
        assert_eq!(auc(&[(0.5, 1)]), None);
        // One of the two negatives outranks the positive.
        assert_eq!(auc(&[(0.6, 1), (0.7, 0), (0.2, 0)]), Some(0.5));
    }

    #[test]
    fn minimax_threshold_separates_separable_groups() {
        let scored = vec![
            (0.9, Kind::Genuine),
            (0.8, Kind::BonaFide),
            (0.3, Kind::Impostor),
            (0.4, Kind::AttackPrint),
            (0.2, Kind::AttackReplay),
        ];
        let (t, worst) = minimax_threshold(&scored);
        assert_eq!(worst, 0.0);
        assert!(t > 0.4 && t <= 0.8, "{t}");
        assert_eq!(group_errors(&scored, t), [Some(0.0); 4]);
        // Overlap: one print scores like the genuine; the best worst error is then 0.5 or less.
        let scored = vec![
            (0.9, Kind::Genuine),
            (0.7, Kind::Genuine),
            (0.3, Kind::Impostor),
            (0.8, Kind::AttackPrint),
            (0.1, Kind::AttackPrint),
        ];
        let (t, worst) = minimax_threshold(&scored);
        assert_eq!(worst, 0.5);
        let e = group_errors(&scored, t);
        assert!(e.iter().flatten().all(|v| *v <= 0.5), "{e:?} at {t}");
    }
}
