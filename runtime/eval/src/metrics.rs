//! Error rates over recorded feature rows: FNMR/FMR at the match threshold, BPCER/APCER at the
//! liveness threshold for each liveness mode, the fused decision's error rates under both
//! decision policies, ROC AUC, and the minimax threshold used to recommend a fusion threshold.
//! Every accept/reject here is the runtime's own [`Verifier`] (or its [`VerifierConfig`]) deciding
//! on the recorded measurements, so the evaluation cannot drift from what the server does.

use std::collections::BTreeSet;
use std::fmt;

use facekey_runtime::decision::Decision;
use facekey_runtime::verifier::{LivenessVerdict, Verifier, VerifierConfig};
use facekey_runtime::vision::liveness::combine_scores;
use facekey_runtime::vision::{Combine, LivenessMode};

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

/// The liveness modes the runtime offers that score a face (names: [`LivenessMode::describe`]).
pub const LIVENESS_MODES: [LivenessMode; 4] = [
    LivenessMode::Dtn,
    LivenessMode::MiniFas,
    LivenessMode::Both {
        combine: Combine::Mean,
    },
    LivenessMode::Both {
        combine: Combine::Min,
    },
];

/// The row's combined liveness score under `mode`, recomputed from the recorded per-model scores
/// exactly as the runtime combines them; `None` when `mode` is off.
pub fn liveness_under(row: &FeatureRow, mode: LivenessMode) -> Option<f64> {
    combine_scores(
        mode,
        Some(row.dtn_live as f32),
        Some(row.minifas_live as f32),
    )
    .map(f64::from)
}

/// The verifier's liveness verdict of `row` under `mode`.
pub fn liveness_verdict(
    row: &FeatureRow,
    mode: LivenessMode,
    config: &VerifierConfig,
) -> LivenessVerdict {
    config.judge_liveness_score(liveness_under(row, mode), None)
}

/// The fusion input `x2` the runtime feeds for `row` under `mode` (the verifier's rule: the
/// score when measured, 1 when liveness is off).
pub fn liveness_feature(row: &FeatureRow, mode: LivenessMode) -> f64 {
    let config = config_for_mode(&VerifierConfig::default(), mode);
    liveness_verdict(row, mode, &config).feature()
}

/// A verifier configuration whose liveness check matches `mode` (off only when `mode` is).
pub fn config_for_mode(config: &VerifierConfig, mode: LivenessMode) -> VerifierConfig {
    VerifierConfig {
        check_liveness: mode != LivenessMode::Off,
        ..*config
    }
}

/// FNMR: genuine pairs whose similarity falls below the match threshold.
pub fn fnmr(rows: &[FeatureRow], config: &VerifierConfig) -> Rate {
    Rate::count(rows.iter().filter(|r| r.kind == Kind::Genuine), |r| {
        config.match_decision(r.similarity) == Decision::Reject
    })
}

/// FMR: impostor pairs whose similarity reaches the match threshold.
pub fn fmr(rows: &[FeatureRow], config: &VerifierConfig) -> Rate {
    Rate::count(rows.iter().filter(|r| r.kind == Kind::Impostor), |r| {
        config.match_decision(r.similarity) == Decision::Accept
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

/// BPCER and APCER of `mode` under the configuration's liveness threshold.
pub fn pad_errors(rows: &[FeatureRow], mode: LivenessMode, config: &VerifierConfig) -> PadErrors {
    let config = config_for_mode(config, mode);
    let live = |r: &&FeatureRow| liveness_verdict(r, mode, &config).decision();
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

/// The runtime's verification decision for one row, the liveness score taken under `mode`.
pub fn decide(row: &FeatureRow, verifier: &Verifier, mode: LivenessMode) -> Decision {
    let config = config_for_mode(verifier.config(), mode);
    let matched = config.judge_match(row.distance, row.similarity, 1);
    let live = liveness_verdict(row, mode, &config);
    verifier.decide(&matched, &live, row.quality).decision
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
pub fn fused_errors(rows: &[FeatureRow], verifier: &Verifier, mode: LivenessMode) -> FusedErrors {
    let of = |kind: Kind, error_when: Decision| {
        Rate::count(rows.iter().filter(|r| r.kind == kind), |r| {
            decide(r, verifier, mode) == error_when
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
        let accept = Decision::at_least(p, t) == Decision::Accept;
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
    use facekey_runtime::fusion::FusionMlp;
    use facekey_runtime::verifier::DecisionPolicy;

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
        let config = VerifierConfig::default();
        assert_eq!(config.match_threshold, 0.5);
        assert_eq!(
            fnmr(&rows, &config),
            Rate {
                errors: 1,
                total: 2
            }
        );
        assert_eq!(
            fmr(&rows, &config),
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
        let config = VerifierConfig::default();
        assert_eq!(config.liveness_threshold, 0.5);
        let dtn = pad_errors(&rows, LivenessMode::Dtn, &config);
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
        let mini = pad_errors(&rows, LivenessMode::MiniFas, &config);
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
        let mean = LIVENESS_MODES[2];
        assert!((liveness_under(&rows[2], mean).unwrap() - 0.525).abs() < 1e-6);
        assert_eq!(pad_errors(&rows, mean, &config).apcer_replay.errors, 1);
        let min = LIVENESS_MODES[3];
        assert_eq!(pad_errors(&rows, min, &config).apcer_replay.errors, 0);
        // Liveness off accepts every attack: the insecure mode the verifier makes explicit.
        assert_eq!(liveness_under(&rows[2], LivenessMode::Off), None);
        assert_eq!(
            pad_errors(&rows, LivenessMode::Off, &config)
                .apcer_replay
                .errors,
            1
        );
    }

    #[test]
    fn strict_policy_never_accepts_more_than_fusion() {
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
        let mode = LIVENESS_MODES[2];
        let base = Verifier::new(
            FusionMlp::reference().unwrap(),
            VerifierConfig {
                threshold: Some(0.5),
                policy: DecisionPolicy::Fusion,
                ..VerifierConfig::default()
            },
        );
        let strict = base.with_policy(DecisionPolicy::Strict);
        let (f, s) = (
            fused_errors(&rows, &base, mode),
            fused_errors(&rows, &strict, mode),
        );
        assert!(s.far_impostor.errors <= f.far_impostor.errors);
        assert!(s.far_replay.errors <= f.far_replay.errors);
        assert!(s.frr_genuine.errors >= f.frr_genuine.errors);
        assert_eq!(f.frr_genuine.total, 20);
        // Every row's strict accept implies a fusion accept.
        for r in &rows {
            if decide(r, &strict, mode) == Decision::Accept {
                assert_eq!(decide(r, &base, mode), Decision::Accept);
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
