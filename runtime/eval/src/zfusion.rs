//! Score-level fusion of the second-opinion models, fitted and scored with identities held out.
//!
//! Matching: each model's score (dlib: minus the distance; MobileFaceNet, faceres-deep: cosine)
//! becomes a z-score against the **impostor** scores of the training rows, the z-scores are
//! summed, and a pair matches when the sum exceeds a threshold set on the training impostors:
//! the larger of their maximum and `mean + tail_z · sd` of their sums (a Gaussian tail bound, so
//! the threshold does not sit right on the hardest training impostor).
//!
//! Passive liveness: each model's live probability becomes a logit, z-scored against the
//! **bona fide** presentations of the training identities; the sum is compared with the
//! threshold that lets at most `max_apcer` of the training attacks pass.
//!
//! [`leave_one_identity_out`] and [`pad_leave_one_identity_out`] fit on every identity but one
//! and score only rows involving the held-out one, so nothing is fitted and scored on the same
//! faces. An impostor row pairs two identities and is scored in both of their folds; it counts
//! as a false match if either fold accepts it (each fold's decision is reported as a trial).

use std::collections::BTreeSet;

use serde::Serialize;

use facekey_runtime::vision::second_opinion::{ZScore, logit};

use super::features::{FeatureRow, Kind};

/// A match score source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchModel {
    /// dlib ResNet (score = −distance).
    Dlib,
    /// MobileFaceNet (cosine).
    Mobilefacenet,
    /// faceres-deep (cosine).
    Faceres,
}

impl MatchModel {
    /// Short name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dlib => "dlib",
            Self::Mobilefacenet => "mobilefacenet",
            Self::Faceres => "faceres",
        }
    }

    /// The row's score under this model (larger = more alike; NaN when not measured).
    pub fn score(self, r: &FeatureRow) -> f64 {
        match self {
            Self::Dlib => -r.distance,
            Self::Mobilefacenet => r.mfn_cosine,
            Self::Faceres => r.faceres_cosine,
        }
    }
}

/// The model combinations the report compares.
pub const MATCH_COMBOS: [&[MatchModel]; 6] = [
    &[MatchModel::Dlib],
    &[MatchModel::Mobilefacenet],
    &[MatchModel::Faceres],
    &[MatchModel::Dlib, MatchModel::Mobilefacenet],
    &[MatchModel::Dlib, MatchModel::Faceres],
    &[
        MatchModel::Dlib,
        MatchModel::Mobilefacenet,
        MatchModel::Faceres,
    ],
];

/// The label of a combination (`dlib+faceres`).
pub fn combo_label(models: &[MatchModel]) -> String {
    models
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join("+")
}

fn mean_sd(v: &[f64]) -> Option<(f64, f64)> {
    if v.len() < 2 {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    (sd > 0.0 && sd.is_finite()).then_some((mean, sd))
}

/// Fitted fusion constants: one z-score per model and the threshold on their sum.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FittedFusion {
    /// Model names, in order.
    pub models: Vec<String>,
    /// Per-model constants.
    pub constants: Vec<ZScore>,
    /// Threshold on the z-sum (accept / live when the sum is above it).
    pub threshold: f64,
    /// Mean and sd of the reference z-sums (impostors for matching, bona fide for liveness).
    pub sum_mean: f64,
    /// See `sum_mean`.
    pub sum_sd: f64,
}

impl FittedFusion {
    /// The z-sum of `scores` (in model order).
    pub fn z_sum(&self, scores: &[f64]) -> f64 {
        self.constants
            .iter()
            .zip(scores)
            .map(|(c, &s)| c.z(s))
            .sum()
    }
}

/// Fits the match fusion of `models` on `rows` (their impostor rows set the constants and the
/// threshold); `None` when there are fewer than two impostor rows with every score measured.
pub fn fit_match(rows: &[&FeatureRow], models: &[MatchModel], tail_z: f64) -> Option<FittedFusion> {
    let imp: Vec<&FeatureRow> = rows
        .iter()
        .copied()
        .filter(|r| r.kind == Kind::Impostor && models.iter().all(|m| m.score(r).is_finite()))
        .collect();
    let mut constants = Vec::with_capacity(models.len());
    for m in models {
        let v: Vec<f64> = imp.iter().map(|r| m.score(r)).collect();
        let (mean, sd) = mean_sd(&v)?;
        constants.push(ZScore { mean, sd });
    }
    let mut f = FittedFusion {
        models: models.iter().map(|m| m.as_str().to_string()).collect(),
        constants,
        threshold: 0.0,
        sum_mean: 0.0,
        sum_sd: 1.0,
    };
    let sums: Vec<f64> = imp
        .iter()
        .map(|r| f.z_sum(&models.iter().map(|m| m.score(r)).collect::<Vec<_>>()))
        .collect();
    let (mean, sd) = mean_sd(&sums)?;
    let max = sums.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    f.threshold = max.max(mean + tail_z * sd);
    f.sum_mean = mean;
    f.sum_sd = sd;
    Some(f)
}

/// Whether a row's claimed and probe identities include `h`.
fn involves(r: &FeatureRow, h: &str) -> bool {
    r.identity == h || r.claimed == h
}

/// The variant family of a presentation: `glasses_dark` etc. for glasses (with or without a
/// further degradation), `chain` for other chains, else the degradation's name (`jpeg`, ...).
pub fn variant_family(variant: &str) -> String {
    let head = variant.split('(').next().unwrap_or(variant);
    if head.starts_with("glasses_") {
        return head.to_string();
    }
    if variant.contains('+') {
        return "chain".into();
    }
    head.to_string()
}

/// Held-out matching errors of one model combination.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MatchHeldOut {
    /// Combination label.
    pub models: String,
    /// Impostor decisions (two per impostor row: one per fold holding out either identity).
    pub impostor_trials: usize,
    /// Impostor decisions that matched.
    pub false_matches: usize,
    /// Impostor rows matched in at least one fold.
    pub false_match_rows: usize,
    /// Impostor rows.
    pub impostor_rows: usize,
    /// Genuine pairs (degraded copies, glasses included).
    pub genuine: usize,
    /// Genuine pairs rejected.
    pub false_non_matches: usize,
    /// Genuine pairs with glasses.
    pub glasses: usize,
    /// Of which rejected.
    pub glasses_rejected: usize,
}

/// Leave-one-identity-out matching errors of `models` (see the module docs); rows whose
/// scores are not all measured are skipped.
pub fn leave_one_identity_out(
    rows: &[FeatureRow],
    models: &[MatchModel],
    tail_z: f64,
) -> Option<MatchHeldOut> {
    let usable: Vec<&FeatureRow> = rows
        .iter()
        .filter(|r| matches!(r.kind, Kind::Genuine | Kind::Impostor))
        .filter(|r| models.iter().all(|m| m.score(r).is_finite()))
        .collect();
    let ids: BTreeSet<&str> = usable.iter().map(|r| r.identity.as_str()).collect();
    if ids.is_empty() {
        return None;
    }
    let mut out = MatchHeldOut {
        models: combo_label(models),
        ..MatchHeldOut::default()
    };
    let mut matched_rows: BTreeSet<&str> = BTreeSet::new();
    for h in &ids {
        let train: Vec<&FeatureRow> = usable.iter().copied().filter(|r| !involves(r, h)).collect();
        let f = fit_match(&train, models, tail_z)?;
        for r in usable.iter().filter(|r| involves(r, h)) {
            let s: Vec<f64> = models.iter().map(|m| m.score(r)).collect();
            let accept = f.z_sum(&s) > f.threshold;
            match r.kind {
                Kind::Impostor => {
                    out.impostor_trials += 1;
                    if accept {
                        out.false_matches += 1;
                        matched_rows.insert(&r.sample_id);
                    }
                }
                _ => {
                    out.genuine += 1;
                    let glasses = variant_family(&r.variant).starts_with("glasses_");
                    out.glasses += usize::from(glasses);
                    if !accept {
                        out.false_non_matches += 1;
                        out.glasses_rejected += usize::from(glasses);
                    }
                }
            }
        }
    }
    out.impostor_rows = usable.iter().filter(|r| r.kind == Kind::Impostor).count();
    out.false_match_rows = matched_rows.len();
    Some(out)
}

/// A passive-liveness score source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PadModel {
    /// fr_liveness (MiniFASNet-like), class-0 probability.
    Minifas,
    /// human_liveness, class-0 probability.
    Human,
}

impl PadModel {
    /// Short name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minifas => "minifas",
            Self::Human => "human_liveness",
        }
    }

    /// The logit of the row's live probability (NaN when not measured).
    pub fn score(self, r: &FeatureRow) -> f64 {
        let p = match self {
            Self::Minifas => r.minifas_live,
            Self::Human => r.human_live,
        };
        if p.is_finite() { logit(p) } else { f64::NAN }
    }
}

/// The PAD combinations the report compares.
pub const PAD_COMBOS: [&[PadModel]; 3] = [
    &[PadModel::Minifas],
    &[PadModel::Human],
    &[PadModel::Minifas, PadModel::Human],
];

/// One row per presentation: the rows comparing a probe with its own identity.
fn presentations(rows: &[FeatureRow]) -> Vec<&FeatureRow> {
    rows.iter().filter(|r| r.identity == r.claimed).collect()
}

fn is_bona_fide(r: &FeatureRow) -> bool {
    matches!(r.kind, Kind::Genuine | Kind::BonaFide)
}

/// Fits the PAD fusion of `models` on presentation rows: constants from the bona fide ones,
/// threshold so that at most `max_apcer` of the attacks score above it.
pub fn fit_pad(pres: &[&FeatureRow], models: &[PadModel], max_apcer: f64) -> Option<FittedFusion> {
    let usable: Vec<&FeatureRow> = pres
        .iter()
        .copied()
        .filter(|r| models.iter().all(|m| m.score(r).is_finite()))
        .collect();
    let mut constants = Vec::new();
    for m in models {
        let v: Vec<f64> = usable
            .iter()
            .filter(|r| is_bona_fide(r))
            .map(|r| m.score(r))
            .collect();
        let (mean, sd) = mean_sd(&v)?;
        constants.push(ZScore { mean, sd });
    }
    let mut f = FittedFusion {
        models: models.iter().map(|m| m.as_str().to_string()).collect(),
        constants,
        threshold: 0.0,
        sum_mean: 0.0,
        sum_sd: 1.0,
    };
    let sum = |r: &FeatureRow| f.z_sum(&models.iter().map(|m| m.score(r)).collect::<Vec<_>>());
    let bona: Vec<f64> = usable
        .iter()
        .filter(|r| is_bona_fide(r))
        .map(|r| sum(r))
        .collect();
    let mut attacks: Vec<f64> = usable
        .iter()
        .filter(|r| r.kind.is_attack())
        .map(|r| sum(r))
        .collect();
    if attacks.is_empty() {
        return None;
    }
    attacks.sort_by(f64::total_cmp);
    // The smallest threshold with at most max_apcer of the attacks strictly above it.
    let allowed = (max_apcer * attacks.len() as f64).floor() as usize;
    let threshold = attacks[attacks.len() - 1 - allowed.min(attacks.len() - 1)];
    let (mean, sd) = mean_sd(&bona)?;
    f.threshold = threshold;
    f.sum_mean = mean;
    f.sum_sd = sd;
    Some(f)
}

/// Held-out passive-liveness errors of one model combination.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PadHeldOut {
    /// Combination label.
    pub models: String,
    /// Bona fide presentations (originals and degraded copies, glasses included).
    pub bona_fide: usize,
    /// Of which called attacks.
    pub bona_fide_rejected: usize,
    /// Simulated prints.
    pub prints: usize,
    /// Of which called live.
    pub prints_passed: usize,
    /// Simulated replays.
    pub replays: usize,
    /// Of which called live.
    pub replays_passed: usize,
}

/// Leave-one-identity-out PAD errors of `models` at the training threshold for `max_apcer`.
pub fn pad_leave_one_identity_out(
    rows: &[FeatureRow],
    models: &[PadModel],
    max_apcer: f64,
) -> Option<PadHeldOut> {
    let pres: Vec<&FeatureRow> = presentations(rows)
        .into_iter()
        .filter(|r| models.iter().all(|m| m.score(r).is_finite()))
        .collect();
    let ids: BTreeSet<&str> = pres.iter().map(|r| r.identity.as_str()).collect();
    let mut out = PadHeldOut {
        models: models
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join("+"),
        ..PadHeldOut::default()
    };
    for h in &ids {
        let train: Vec<&FeatureRow> = pres.iter().copied().filter(|r| r.identity != *h).collect();
        let f = fit_pad(&train, models, max_apcer)?;
        for r in pres.iter().filter(|r| r.identity == *h) {
            let live =
                f.z_sum(&models.iter().map(|m| m.score(r)).collect::<Vec<_>>()) > f.threshold;
            match r.kind {
                Kind::AttackPrint => {
                    out.prints += 1;
                    out.prints_passed += usize::from(live);
                }
                Kind::AttackReplay => {
                    out.replays += 1;
                    out.replays_passed += usize::from(live);
                }
                _ => {
                    out.bona_fide += 1;
                    out.bona_fide_rejected += usize::from(!live);
                }
            }
        }
    }
    Some(out)
}

/// Detection and matching of genuine presentations per variant family.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FamilyRates {
    /// Family (`glasses_dark`, `jpeg`, `chain`, ...).
    pub family: String,
    /// Presentations attempted.
    pub attempted: usize,
    /// Presentations where the face was found.
    pub detected: usize,
    /// Genuine pairs with a dlib distance at most the threshold.
    pub matched: usize,
    /// Median dlib distance of the genuine pairs.
    pub median_distance: Option<f64>,
    /// Largest dlib distance of the genuine pairs.
    pub max_distance: Option<f64>,
}

/// Per-family detection and match rates of genuine presentations: `attempted` lists every
/// genuine presentation attempt as `(variant, acquired)`; `rows` the recorded rows.
pub fn family_rates(
    attempted: &[(String, bool)],
    rows: &[FeatureRow],
    distance_threshold: f64,
) -> Vec<FamilyRates> {
    let mut fams: std::collections::BTreeMap<String, FamilyRates> = Default::default();
    for (variant, acquired) in attempted {
        let f = variant_family(variant);
        let e = fams.entry(f.clone()).or_insert_with(|| FamilyRates {
            family: f,
            ..FamilyRates::default()
        });
        e.attempted += 1;
        e.detected += usize::from(*acquired);
    }
    for (fam, e) in fams.iter_mut() {
        let mut d: Vec<f64> = rows
            .iter()
            .filter(|r| r.kind == Kind::Genuine && variant_family(&r.variant) == *fam)
            .map(|r| r.distance)
            .collect();
        d.sort_by(f64::total_cmp);
        e.matched = d.iter().filter(|&&x| x <= distance_threshold).count();
        e.median_distance = d.get(d.len() / 2).copied();
        e.max_distance = d.last().copied();
    }
    fams.into_values().collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::features::tests::row;

    /// A genuine or impostor row with the given dlib distance and faceres cosine.
    fn m(kind: Kind, id: &str, claimed: &str, dist: f64, fr: f64, variant: &str) -> FeatureRow {
        let mut r = row(kind, id, claimed, [0.5, 0.5, 0.5]);
        r.sample_id = format!("{kind}/{id}/{claimed}/{dist}/{fr}/{variant}");
        r.distance = dist;
        r.faceres_cosine = fr;
        r.mfn_cosine = fr;
        r.variant = variant.into();
        r
    }

    fn data() -> Vec<FeatureRow> {
        let ids = ["a", "b", "c", "d", "e"];
        let mut rows = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            for k in 0..4 {
                let v = if k == 3 {
                    "glasses_dark(x)"
                } else {
                    "jpeg(q40)"
                };
                let dist = 0.2 + 0.05 * k as f64;
                rows.push(m(Kind::Genuine, id, id, dist, 0.9 - 0.05 * k as f64, v));
            }
            for (j, other) in ids.iter().enumerate() {
                if i != j {
                    let dist = 0.75 + 0.02 * ((i * 5 + j) % 7) as f64;
                    rows.push(m(
                        Kind::Impostor,
                        id,
                        other,
                        dist,
                        0.1 + 0.02 * (j as f64),
                        "jpeg(q40)",
                    ));
                }
            }
        }
        rows
    }

    #[test]
    fn separable_data_has_no_held_out_errors() {
        let rows = data();
        for combo in MATCH_COMBOS {
            let r = leave_one_identity_out(&rows, combo, 3.0).unwrap();
            assert_eq!(r.genuine, 20, "{}", r.models);
            assert_eq!(r.glasses, 5);
            assert_eq!(r.impostor_rows, 20);
            assert_eq!(
                r.impostor_trials, 40,
                "each impostor row is scored in two folds"
            );
            assert_eq!(r.false_matches, 0, "{}", r.models);
            assert_eq!(r.false_non_matches, 0, "{}", r.models);
        }
    }

    #[test]
    fn a_lookalike_pair_unseen_in_training_is_a_held_out_false_match() {
        let mut rows = data();
        // a and b look alike: their impostor pair scores like a genuine one. Whichever of the
        // two is held out, the training set never saw that pair.
        for r in rows.iter_mut() {
            if r.kind == Kind::Impostor && r.identity == "a" && r.claimed == "b" {
                r.distance = 0.3;
                r.faceres_cosine = 0.85;
                r.mfn_cosine = 0.85;
            }
        }
        let r = leave_one_identity_out(&rows, &[MatchModel::Dlib], 3.0).unwrap();
        assert_eq!(r.false_match_rows, 1);
        assert_eq!(r.false_matches, 2, "accepted in the folds of a and of b");
        // Fitted on everything, the pair raises the threshold above itself.
        let all: Vec<&FeatureRow> = rows.iter().collect();
        let f = fit_match(&all, &[MatchModel::Dlib], 3.0).unwrap();
        assert!(f.threshold >= f.z_sum(&[-0.3]));
    }

    #[test]
    fn unmeasured_scores_are_skipped() {
        let mut rows = data();
        for r in rows.iter_mut() {
            r.faceres_cosine = f64::NAN;
        }
        assert!(leave_one_identity_out(&rows, &[MatchModel::Faceres], 3.0).is_none());
        let dlib = leave_one_identity_out(&rows, &[MatchModel::Dlib], 3.0).unwrap();
        assert_eq!(dlib.genuine, 20);
    }

    #[test]
    fn pad_threshold_caps_training_apcer() {
        let mut rows = Vec::new();
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            for k in 0..10 {
                let mut bona = row(Kind::Genuine, id, id, [0.9, 0.0, 0.5]);
                bona.sample_id = format!("g/{id}/{k}");
                bona.minifas_live = 0.5 + 0.045 * k as f64;
                bona.human_live = 0.99 + 0.0009 * k as f64;
                rows.push(bona);
                let mut att = row(Kind::AttackPrint, id, id, [0.9, 0.0, 0.5]);
                att.sample_id = format!("p/{id}/{k}");
                att.minifas_live = 0.02 * (k + i) as f64 + 0.01;
                att.human_live = 0.9 + 0.005 * k as f64;
                rows.push(att);
            }
        }
        let pres: Vec<&FeatureRow> = rows.iter().collect();
        let f = fit_pad(&pres, &[PadModel::Minifas, PadModel::Human], 0.1).unwrap();
        let passed = rows
            .iter()
            .filter(|r| r.kind.is_attack())
            .filter(|r| {
                f.z_sum(&[PadModel::Minifas.score(r), PadModel::Human.score(r)]) > f.threshold
            })
            .count();
        assert!(passed <= 4, "{passed} of 40 attacks pass a 10 % threshold");
        let held = pad_leave_one_identity_out(&rows, &[PadModel::Minifas], 0.1).unwrap();
        assert_eq!((held.bona_fide, held.prints, held.replays), (40, 40, 0));
        assert_eq!(held.bona_fide_rejected, 0);
    }

    #[test]
    fn families() {
        assert_eq!(
            variant_family("glasses_dark(w0.4)+jpeg(q40)"),
            "glasses_dark"
        );
        assert_eq!(variant_family("tone(b+3;c1.0)+jpeg(q40)"), "chain");
        assert_eq!(variant_family("jpeg(q40)"), "jpeg");
        let rows = data();
        let attempted = vec![
            ("glasses_dark(x)".to_string(), true),
            ("glasses_dark(y)".to_string(), false),
            ("jpeg(q40)".to_string(), true),
        ];
        let f = family_rates(&attempted, &rows, 0.6);
        let dark = f.iter().find(|f| f.family == "glasses_dark").unwrap();
        assert_eq!((dark.attempted, dark.detected, dark.matched), (2, 1, 5));
    }
}
