//! Fitting the 3-4-3-1 fusion MLP (ReLU, ReLU, sigmoid) on recorded feature rows: class-balanced
//! binary cross-entropy with an L2 penalty on the weight matrices, full-batch Adam projected onto
//! non-negative weights (a monotone network), several
//! seeded restarts (the lowest training objective wins), a train/validation split by identity,
//! and a recommended threshold chosen on the training rows.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use facekey_runtime::fusion::WeightsFile;

use super::EvalError;
use super::features::{FeatureRow, Kind};
use super::metrics::{auc, group_errors, minimax_threshold};
use super::rng::Rng;

/// Fit settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitOptions {
    /// Seed of the split and the initialisations.
    pub seed: u64,
    /// Full-batch Adam steps per restart.
    pub epochs: usize,
    /// Adam step size.
    pub learning_rate: f64,
    /// L2 penalty `lambda / 2 * sum(w^2)` on `w1`, `w2`, `w3` (not the biases).
    pub l2: f64,
    /// Random initialisations tried.
    pub restarts: usize,
    /// Fraction of identities held out for validation (0 disables the split).
    pub validation_fraction: f64,
    /// Keep `w1`, `w2`, `w3` non-negative (projected after every step), so the probability never
    /// decreases when a feature increases: a better match, a livelier or sharper face can never
    /// lower the score.
    pub monotone: bool,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            seed: 20_251_127,
            epochs: 4000,
            learning_rate: 0.02,
            l2: 1e-3,
            restarts: 8,
            validation_fraction: 0.3,
            monotone: true,
        }
    }
}

/// The MLP's parameters in the weights file's shapes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Params {
    /// 4x3.
    pub w1: [[f64; 3]; 4],
    /// 4.
    pub b1: [f64; 4],
    /// 3x4.
    pub w2: [[f64; 4]; 3],
    /// 3.
    pub b2: [f64; 3],
    /// 1x3.
    pub w3: [f64; 3],
    /// 1.
    pub b3: f64,
}

impl Params {
    /// He-uniform weights and small positive biases (fewer dead ReLUs at the start).
    pub fn init(rng: &mut Rng) -> Self {
        let mut p = Params::default();
        let l1 = (6.0f64 / 3.0).sqrt();
        let l2 = (6.0f64 / 4.0).sqrt();
        let l3 = (6.0f64 / 3.0).sqrt();
        for row in &mut p.w1 {
            for v in row {
                *v = rng.uniform(-l1, l1);
            }
        }
        for row in &mut p.w2 {
            for v in row {
                *v = rng.uniform(-l2, l2);
            }
        }
        for v in &mut p.w3 {
            *v = rng.uniform(-l3, l3);
        }
        p.b1 = [0.1; 4];
        p.b2 = [0.1; 3];
        p
    }

    /// Clamps every weight (not the biases) to be non-negative.
    pub fn project_monotone(&mut self) {
        for v in self.w1.iter_mut().flatten() {
            *v = v.max(0.0);
        }
        for v in self.w2.iter_mut().flatten() {
            *v = v.max(0.0);
        }
        for v in &mut self.w3 {
            *v = v.max(0.0);
        }
    }

    fn axpy(&mut self, k: f64, g: &Params) {
        self.zip_mut(g, |a, b| *a += k * b);
    }

    /// Applies `f(self_value, other_value)` to every parameter pair.
    fn zip_mut(&mut self, o: &Params, mut f: impl FnMut(&mut f64, f64)) {
        for (r, ro) in self.w1.iter_mut().zip(&o.w1) {
            for (a, b) in r.iter_mut().zip(ro) {
                f(a, *b);
            }
        }
        for (a, b) in self.b1.iter_mut().zip(&o.b1) {
            f(a, *b);
        }
        for (r, ro) in self.w2.iter_mut().zip(&o.w2) {
            for (a, b) in r.iter_mut().zip(ro) {
                f(a, *b);
            }
        }
        for (a, b) in self.b2.iter_mut().zip(&o.b2) {
            f(a, *b);
        }
        for (a, b) in self.w3.iter_mut().zip(&o.w3) {
            f(a, *b);
        }
        f(&mut self.b3, o.b3);
    }

    fn weight_norm2(&self) -> f64 {
        let s1: f64 = self.w1.iter().flatten().map(|v| v * v).sum();
        let s2: f64 = self.w2.iter().flatten().map(|v| v * v).sum();
        let s3: f64 = self.w3.iter().map(|v| v * v).sum();
        s1 + s2 + s3
    }

    /// The output logit `z3`.
    pub fn logit(&self, x: &[f64; 3]) -> f64 {
        self.forward(x).z3
    }

    fn forward(&self, x: &[f64; 3]) -> Cache {
        let mut c = Cache::default();
        for i in 0..4 {
            c.z1[i] = self.b1[i] + (0..3).map(|j| self.w1[i][j] * x[j]).sum::<f64>();
            c.a1[i] = c.z1[i].max(0.0);
        }
        for i in 0..3 {
            c.z2[i] = self.b2[i] + (0..4).map(|j| self.w2[i][j] * c.a1[j]).sum::<f64>();
            c.a2[i] = c.z2[i].max(0.0);
        }
        c.z3 = self.b3 + (0..3).map(|j| self.w3[j] * c.a2[j]).sum::<f64>();
        c
    }

    /// Adds the gradient of `weight * bce(sigmoid(z3), y)` at `x` to `g`.
    #[allow(clippy::needless_range_loop)] // Matrix indices read as the maths.
    fn backward(&self, x: &[f64; 3], y: f64, weight: f64, g: &mut Params) -> f64 {
        let c = self.forward(x);
        let dz3 = weight * (facekey_runtime::fusion::sigmoid(c.z3) - y);
        g.b3 += dz3;
        let mut dz2 = [0.0; 3];
        for i in 0..3 {
            g.w3[i] += dz3 * c.a2[i];
            dz2[i] = if c.z2[i] > 0.0 { dz3 * self.w3[i] } else { 0.0 };
        }
        let mut dz1 = [0.0; 4];
        for i in 0..3 {
            g.b2[i] += dz2[i];
            for j in 0..4 {
                g.w2[i][j] += dz2[i] * c.a1[j];
            }
        }
        for (j, d) in dz1.iter_mut().enumerate() {
            if c.z1[j] > 0.0 {
                *d = (0..3).map(|i| dz2[i] * self.w2[i][j]).sum();
            }
        }
        for i in 0..4 {
            g.b1[i] += dz1[i];
            for j in 0..3 {
                g.w1[i][j] += dz1[i] * x[j];
            }
        }
        weight * bce_with_logit(c.z3, y)
    }
}

#[derive(Debug, Default)]
struct Cache {
    z1: [f64; 4],
    a1: [f64; 4],
    z2: [f64; 3],
    a2: [f64; 3],
    z3: f64,
}

/// `-(y ln p + (1 - y) ln(1 - p))` with `p = sigmoid(z)`, computed stably from the logit.
pub fn bce_with_logit(z: f64, y: f64) -> f64 {
    z.max(0.0) - y * z + (-z.abs()).exp().ln_1p()
}

/// A training example: features, label, weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Example {
    /// `[match_similarity, liveness, quality]`.
    pub x: [f64; 3],
    /// 1 or 0.
    pub y: f64,
    /// Weight in the loss (weights of a set sum to 1).
    pub weight: f64,
}

/// Loss-group weights: genuine (with originals) 1/2, impostors 1/4, prints 1/8, replays 1/8,
/// each spread evenly over the group's rows, so no group dominates by count.
pub fn balanced_examples(rows: &[&FeatureRow]) -> Vec<Example> {
    let group = |k: Kind| match k {
        Kind::Genuine | Kind::BonaFide => (0, 0.5),
        Kind::Impostor => (1, 0.25),
        Kind::AttackPrint => (2, 0.125),
        Kind::AttackReplay => (3, 0.125),
    };
    let mut counts = [0usize; 4];
    for r in rows {
        counts[group(r.kind).0] += 1;
    }
    let mut out: Vec<Example> = rows
        .iter()
        .map(|r| {
            let (g, share) = group(r.kind);
            Example {
                x: r.features(),
                y: f64::from(r.label()),
                weight: share / counts[g].max(1) as f64,
            }
        })
        .collect();
    // Renormalise when a group is missing.
    let total: f64 = out.iter().map(|e| e.weight).sum();
    if total > 0.0 {
        for e in &mut out {
            e.weight /= total;
        }
    }
    out
}

/// The weighted loss (with the L2 term) and its gradient.
pub fn loss_and_gradient(p: &Params, data: &[Example], l2: f64) -> (f64, Params) {
    let mut g = Params::default();
    let mut loss = 0.0;
    for e in data {
        loss += p.backward(&e.x, e.y, e.weight, &mut g);
    }
    loss += 0.5 * l2 * p.weight_norm2();
    let mut reg = *p;
    reg.b1 = [0.0; 4];
    reg.b2 = [0.0; 3];
    reg.b3 = 0.0;
    g.axpy(l2, &reg);
    (loss, g)
}

/// The weighted loss without the L2 term.
pub fn data_loss(p: &Params, data: &[Example]) -> f64 {
    data.iter()
        .map(|e| e.weight * bce_with_logit(p.logit(&e.x), e.y))
        .sum()
}

/// Full-batch Adam from `start` (projected onto non-negative weights when `opts.monotone`).
pub fn train(start: Params, data: &[Example], opts: &FitOptions) -> Params {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
    let mut p = start;
    if opts.monotone {
        p.project_monotone();
    }
    let mut m = Params::default();
    let mut v = Params::default();
    for t in 1..=opts.epochs {
        let (_, g) = loss_and_gradient(&p, data, opts.l2);
        m.zip_mut(&g, |a, b| *a = b1 * *a + (1.0 - b1) * b);
        v.zip_mut(&g, |a, b| *a = b2 * *a + (1.0 - b2) * b * b);
        let (c1, c2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
        let mut step = m;
        step.zip_mut(&v, |a, b| *a = (*a / c1) / ((b / c2).sqrt() + eps));
        p.axpy(-opts.learning_rate, &step);
        if opts.monotone {
            p.project_monotone();
        }
    }
    p
}

/// Which identities are held out: a seeded shuffle, `round(fraction * n)` of them (at least
/// one and at most `n - 2` when `fraction > 0` and there are at least 4 identities).
pub fn validation_identities(
    identities: &BTreeSet<String>,
    seed: u64,
    fraction: f64,
) -> BTreeSet<String> {
    let n = identities.len();
    if fraction <= 0.0 || n < 4 {
        return BTreeSet::new();
    }
    let k = ((fraction * n as f64).round() as usize).clamp(1, n - 2);
    let mut names: Vec<&String> = identities.iter().collect();
    Rng::derive(seed, "split").shuffle(&mut names);
    names.into_iter().take(k).cloned().collect()
}

/// Where a row goes under an identity split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Probe and claimed identity both in training.
    Train,
    /// Probe and claimed identity both held out.
    Validation,
    /// An impostor pair across the split: in neither set.
    Excluded,
}

/// The row's split.
pub fn split_of(row: &FeatureRow, validation: &BTreeSet<String>) -> Split {
    match (
        validation.contains(&row.identity),
        validation.contains(&row.claimed),
    ) {
        (false, false) => Split::Train,
        (true, true) => Split::Validation,
        _ => Split::Excluded,
    }
}

/// Row counts by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Genuine pairs.
    pub genuine: usize,
    /// Originals.
    pub bona_fide: usize,
    /// Impostor pairs.
    pub impostor: usize,
    /// Simulated prints.
    pub attack_print: usize,
    /// Simulated replays.
    pub attack_replay: usize,
}

impl Counts {
    /// Counts `rows`.
    pub fn of(rows: &[&FeatureRow]) -> Self {
        let mut c = Counts::default();
        for r in rows {
            match r.kind {
                Kind::Genuine => c.genuine += 1,
                Kind::BonaFide => c.bona_fide += 1,
                Kind::Impostor => c.impostor += 1,
                Kind::AttackPrint => c.attack_print += 1,
                Kind::AttackReplay => c.attack_replay += 1,
            }
        }
        c
    }

    /// All rows.
    pub fn total(&self) -> usize {
        self.genuine + self.bona_fide + self.impostor + self.attack_print + self.attack_replay
    }
}

/// Everything a fit produced.
#[derive(Debug, Clone)]
pub struct FitReport {
    /// The fitted parameters.
    pub params: Params,
    /// Settings used.
    pub options: FitOptions,
    /// Identities in training.
    pub train_identities: BTreeSet<String>,
    /// Identities held out.
    pub validation_identities: BTreeSet<String>,
    /// Training rows by kind.
    pub train_counts: Counts,
    /// Validation rows by kind.
    pub validation_counts: Counts,
    /// Cross-split impostor rows left out.
    pub excluded: usize,
    /// Balanced training loss (no L2) of the chosen restart.
    pub train_loss: f64,
    /// Balanced validation loss, when there is a validation set.
    pub validation_loss: Option<f64>,
    /// Restart that won (0-based).
    pub best_restart: usize,
    /// Recommended threshold (minimax on the training rows).
    pub threshold: f64,
    /// Worst group error at the threshold on the training rows.
    pub train_worst_error: f64,
    /// `[FRR, FAR impostor, FAR print, FAR replay]` at the threshold on validation rows.
    pub validation_errors: [Option<f64>; 4],
    /// ROC AUC on training rows.
    pub train_auc: Option<f64>,
    /// ROC AUC on validation rows.
    pub validation_auc: Option<f64>,
}

/// Fits the MLP on `rows` (their `liveness` column is the liveness feature).
pub fn fit(rows: &[FeatureRow], opts: &FitOptions) -> Result<FitReport, EvalError> {
    let identities: BTreeSet<String> = rows
        .iter()
        .flat_map(|r| [r.identity.clone(), r.claimed.clone()])
        .collect();
    let validation = validation_identities(&identities, opts.seed, opts.validation_fraction);
    let mut train_rows = Vec::new();
    let mut val_rows = Vec::new();
    let mut excluded = 0;
    for r in rows {
        match split_of(r, &validation) {
            Split::Train => train_rows.push(r),
            Split::Validation => val_rows.push(r),
            Split::Excluded => excluded += 1,
        }
    }
    let train_counts = Counts::of(&train_rows);
    if train_counts.genuine + train_counts.bona_fide == 0
        || train_counts.impostor + train_counts.attack_print + train_counts.attack_replay == 0
    {
        return Err(EvalError::Data(format!(
            "cannot fit: the training rows need both classes, got {train_counts:?}"
        )));
    }
    let train_data = balanced_examples(&train_rows);
    let val_data = balanced_examples(&val_rows);
    let mut best: Option<(f64, usize, Params)> = None;
    for restart in 0..opts.restarts.max(1) {
        let mut rng = Rng::derive(opts.seed, &format!("init/{restart}"));
        let p = train(Params::init(&mut rng), &train_data, opts);
        let objective = loss_and_gradient(&p, &train_data, opts.l2).0;
        if best.as_ref().is_none_or(|b| objective < b.0) {
            best = Some((objective, restart, p));
        }
    }
    let (_, best_restart, params) = best.ok_or_else(|| EvalError::Data("no restart ran".into()))?;
    let prob = |r: &FeatureRow| facekey_runtime::fusion::sigmoid(params.logit(&r.features()));
    let train_scored: Vec<(f64, Kind)> = train_rows.iter().map(|r| (prob(r), r.kind)).collect();
    let val_scored: Vec<(f64, Kind)> = val_rows.iter().map(|r| (prob(r), r.kind)).collect();
    let (threshold, train_worst_error) = minimax_threshold(&train_scored);
    let labelled =
        |s: &[(f64, Kind)]| -> Vec<(f64, u8)> { s.iter().map(|(p, k)| (*p, k.label())).collect() };
    Ok(FitReport {
        params,
        options: *opts,
        train_identities: identities.difference(&validation).cloned().collect(),
        validation_identities: validation,
        train_counts,
        validation_counts: Counts::of(&val_rows),
        excluded,
        train_loss: data_loss(&params, &train_data),
        validation_loss: (!val_data.is_empty()).then(|| data_loss(&params, &val_data)),
        best_restart,
        threshold,
        train_worst_error,
        validation_errors: group_errors(&val_scored, threshold),
        train_auc: auc(&labelled(&train_scored)),
        validation_auc: auc(&labelled(&val_scored)),
    })
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// The weights file of a fit (`facekey.fusion-weights` v1, written by the runtime's own
/// [`WeightsFile`] type). Weights are rounded to 6 decimals, the threshold to 4.
pub fn weights_file(report: &FitReport, name: &str, description: &str) -> WeightsFile {
    let p = &report.params;
    let vector = |v: &[f64]| v.iter().map(|x| round6(*x)).collect::<Vec<_>>();
    let matrix = |m: &[[f64; 3]]| m.iter().map(|r| vector(r)).collect::<Vec<_>>();
    WeightsFile::new(
        name,
        description,
        Some((report.threshold * 1e4).round() / 1e4),
        matrix(&p.w1),
        vector(&p.b1),
        p.w2.iter().map(|r| vector(r)).collect(),
        vector(&p.b2),
        vec![vector(&p.w3)],
        vec![round6(p.b3)],
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::features::tests::row;
    use super::*;
    use facekey_runtime::fusion::FusionMlp;

    #[test]
    fn bce_is_stable_and_correct() {
        let p = facekey_runtime::fusion::sigmoid(0.7);
        assert!((bce_with_logit(0.7, 1.0) + p.ln()).abs() < 1e-12);
        assert!((bce_with_logit(0.7, 0.0) + (1.0 - p).ln()).abs() < 1e-12);
        assert!(bce_with_logit(-800.0, 1.0).is_finite());
        assert!((bce_with_logit(-800.0, 1.0) - 800.0).abs() < 1e-9);
    }

    #[test]
    fn analytic_gradient_matches_finite_differences() {
        let mut rng = Rng::new(3);
        let p = Params::init(&mut rng);
        let data: Vec<Example> = (0..12)
            .map(|i| Example {
                x: [rng.unit(), rng.unit(), rng.unit()],
                y: f64::from(i % 2),
                weight: 1.0 / 12.0,
            })
            .collect();
        let l2 = 0.01;
        let (_, g) = loss_and_gradient(&p, &data, l2);
        let f = |q: &Params| loss_and_gradient(q, &data, l2).0;
        let h = 1e-6;
        let mut checked = 0;
        let mut flat_g = Vec::new();
        let mut probe = Params::default();
        probe.zip_mut(&g, |_, b| flat_g.push(b));
        for (k, analytic) in flat_g.iter().enumerate() {
            let bump = |s: f64| {
                let mut q = p;
                let mut idx = 0;
                q.zip_mut(&Params::default(), |a, _| {
                    if idx == k {
                        *a += s;
                    }
                    idx += 1;
                });
                q
            };
            let numeric = (f(&bump(h)) - f(&bump(-h))) / (2.0 * h);
            assert!(
                (numeric - analytic).abs() < 1e-6,
                "parameter {k}: numeric {numeric}, analytic {analytic}"
            );
            checked += 1;
        }
        assert_eq!(checked, 35);
    }

    fn toy_rows() -> Vec<FeatureRow> {
        let mut rng = Rng::new(9);
        let mut rows = Vec::new();
        let ids = ["a", "b", "c", "d", "e", "f"];
        for (i, id) in ids.iter().enumerate() {
            for _ in 0..15 {
                let j = rng.uniform(0.0, 0.1);
                rows.push(row(Kind::Genuine, id, id, [0.9 + j, 0.6 + j, 0.7]));
                rows.push(row(Kind::AttackPrint, id, id, [0.9 + j, 0.2 + j, 0.5]));
                rows.push(row(Kind::AttackReplay, id, id, [0.85 + j, 0.3 - j, 0.6]));
                let other = ids[(i + 1) % ids.len()];
                rows.push(row(Kind::Impostor, id, other, [0.1 + j, 0.6 + j, 0.7]));
            }
        }
        rows
    }

    #[test]
    fn fits_a_separable_toy_problem() {
        let rows = toy_rows();
        let opts = FitOptions {
            epochs: 1500,
            restarts: 3,
            ..FitOptions::default()
        };
        let rep = fit(&rows, &opts).unwrap();
        assert_eq!(rep.validation_identities.len(), 2);
        assert!(rep.validation_identities.is_disjoint(&rep.train_identities));
        assert!(rep.train_loss < 0.2, "train loss {}", rep.train_loss);
        assert_eq!(rep.train_auc, Some(1.0));
        assert!(rep.validation_auc.unwrap() > 0.95);
        assert_eq!(rep.train_worst_error, 0.0);
        assert!(rep.excluded > 0);
        let file = weights_file(&rep, "trained", "toy");
        let text = file.to_json();
        let mlp = FusionMlp::from_json_str(&text, "fitted").unwrap();
        assert!(text.contains("\"format\": \"facekey.fusion-weights\""));
        assert_eq!(
            text.lines()
                .filter(|l| l.trim_start().starts_with('['))
                .count(),
            7,
            "{text}"
        );
        assert_eq!(mlp.name(), "trained");
        assert_eq!(
            mlp.recommended_threshold(),
            Some((rep.threshold * 1e4).round() / 1e4)
        );
        // The file's network is the fitted one (up to rounding).
        for r in rows.iter().take(20) {
            let want = facekey_runtime::fusion::sigmoid(rep.params.logit(&r.features()));
            assert!((mlp.forward(&r.features()).probability - want).abs() < 1e-4);
        }
        // Deterministic.
        let again = fit(&rows, &opts).unwrap();
        assert_eq!(again.params, rep.params);
    }

    #[test]
    fn monotone_fit_never_lowers_the_probability_when_a_feature_rises() {
        let rows = toy_rows();
        let opts = FitOptions {
            epochs: 800,
            restarts: 2,
            ..FitOptions::default()
        };
        let rep = fit(&rows, &opts).unwrap();
        let p = rep.params;
        assert!(
            p.w1.iter()
                .flatten()
                .chain(p.w2.iter().flatten())
                .chain(&p.w3)
                .all(|v| *v >= 0.0)
        );
        let prob = |x: [f64; 3]| facekey_runtime::fusion::sigmoid(p.logit(&x));
        let grid: Vec<f64> = (0..=10).map(|i| f64::from(i) / 10.0).collect();
        for &a in &grid {
            for &b in &grid {
                for w in grid.windows(2) {
                    assert!(prob([w[1], a, b]) >= prob([w[0], a, b]) - 1e-12);
                    assert!(prob([a, w[1], b]) >= prob([a, w[0], b]) - 1e-12);
                    assert!(prob([a, b, w[1]]) >= prob([a, b, w[0]]) - 1e-12);
                }
            }
        }
        // Unconstrained fits may put negative weights anywhere.
        let free = fit(
            &rows,
            &FitOptions {
                monotone: false,
                ..opts
            },
        )
        .unwrap();
        assert!(free.params.w1.iter().flatten().any(|v| *v < 0.0));
    }

    #[test]
    fn split_keeps_pairs_on_one_side() {
        let ids: BTreeSet<String> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let val = validation_identities(&ids, 1, 0.4);
        assert_eq!(val.len(), 2);
        assert_eq!(val, validation_identities(&ids, 1, 0.4));
        let v: Vec<&String> = val.iter().collect();
        let t: Vec<&String> = ids.difference(&val).collect();
        let r = |a: &str, b: &str| row(Kind::Impostor, a, b, [0.1, 0.5, 0.5]);
        assert_eq!(split_of(&r(v[0], v[1]), &val), Split::Validation);
        assert_eq!(split_of(&r(t[0], t[1]), &val), Split::Train);
        assert_eq!(split_of(&r(t[0], v[0]), &val), Split::Excluded);
        assert!(validation_identities(&ids, 1, 0.0).is_empty());
    }

    #[test]
    fn balanced_weights_sum_to_one_per_group_share() {
        let rows = toy_rows();
        let refs: Vec<&FeatureRow> = rows.iter().collect();
        let ex = balanced_examples(&refs);
        let total: f64 = ex.iter().map(|e| e.weight).sum();
        assert!((total - 1.0).abs() < 1e-9);
        let pos: f64 = ex.iter().filter(|e| e.y == 1.0).map(|e| e.weight).sum();
        assert!((pos - 0.5).abs() < 1e-9, "{pos}");
    }
}
