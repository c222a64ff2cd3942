//! Markdown report of an evaluation: data counts, FNMR/FMR, BPCER/APCER per liveness mode and
//! the fused decision's error rates per weights file and decision policy. Also the small
//! side files the report reads: the presentation log and the fit summary.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use facekey_runtime::baseline::{
    BASELINE_FORMAT, BASELINE_VERSION, Baseline, BaselineQuantile, BaselineRate,
};
use facekey_runtime::decision::Decision;
use facekey_runtime::verifier::{DecisionPolicy, Verifier, VerifierConfig};
use facekey_runtime::vision::LivenessMode;

use super::EvalError;
use super::features::{FeatureRow, Kind};
use super::fit::{Counts, FitReport, Split, split_of};
use super::metrics::{
    LIVENESS_MODES, Rate, auc, config_for_mode, fmr, fnmr, fused_errors, liveness_feature,
    liveness_under, liveness_verdict, pad_errors,
};

/// One presentation attempt (acquired or not) or a face left out of enrolment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresentationRecord {
    /// Presentation id (or `enrolment/<source>/<k>` for a skipped face).
    pub presentation: String,
    /// `genuine`, `bona_fide`, `attack_print`, `attack_replay` or `enrolment`.
    pub kind: String,
    /// Identity (empty for skipped faces).
    pub identity: String,
    /// Transform or attack parameters.
    pub variant: String,
    /// `acquired`, `not_found` or `skipped`.
    pub status: String,
    /// Why, when not acquired.
    pub reason: String,
}

/// How the data set was generated, and every presentation attempt (`dataset.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetLog {
    /// Simulation seed.
    pub seed: u64,
    /// Single degradations per kind and photo.
    pub variants_per_kind: usize,
    /// Degradation chains per photo.
    pub combos: usize,
    /// Attacks per type and identity.
    pub attacks_per_kind: usize,
    /// Attack frame size.
    pub frame: (u32, u32),
    /// Printed/shown region side relative to the face box.
    pub crop_scale: f64,
    /// Source photos used.
    pub sources: Vec<String>,
    /// Sample files skipped as copies of another photo.
    pub derived_copies_skipped: Vec<String>,
    /// Every presentation attempt and skipped face.
    pub presentations: Vec<PresentationRecord>,
}

impl DatasetLog {
    /// Pretty JSON.
    pub fn to_json(&self) -> Result<String, EvalError> {
        serde_json::to_string_pretty(self).map_err(|source| EvalError::Json {
            context: "serialising the data set log".into(),
            source,
        })
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, EvalError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(EvalError::Io {
                action: "reading",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| EvalError::Json {
            context: format!("parsing {}", path.display()),
            source,
        })
}

/// Reads a data set log, `None` when the file is absent.
pub fn read_dataset_log(path: &Path) -> Result<Option<DatasetLog>, EvalError> {
    read_json(path)
}

/// What a fit did, saved next to the features so reports can show validation results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitSummary {
    /// Seed.
    pub seed: u64,
    /// Adam steps per restart.
    pub epochs: usize,
    /// Adam step size.
    pub learning_rate: f64,
    /// L2 penalty.
    pub l2: f64,
    /// Restarts tried.
    pub restarts: usize,
    /// Whether the weights were kept non-negative (a monotone network).
    #[serde(default)]
    pub monotone: bool,
    /// Winning restart.
    pub best_restart: usize,
    /// Identities in training.
    pub train_identities: Vec<String>,
    /// Identities held out.
    pub validation_identities: Vec<String>,
    /// Training rows by kind.
    pub train_counts: Counts,
    /// Validation rows by kind.
    pub validation_counts: Counts,
    /// Cross-split impostor rows left out.
    pub excluded: usize,
    /// Balanced BCE on training rows.
    pub train_loss: f64,
    /// Balanced BCE on validation rows.
    pub validation_loss: Option<f64>,
    /// Recommended threshold.
    pub threshold: f64,
    /// Worst of FRR and the three FARs at the threshold on the training rows.
    #[serde(default)]
    pub train_worst_error: f64,
    /// ROC AUC, training rows.
    pub train_auc: Option<f64>,
    /// ROC AUC, validation rows.
    pub validation_auc: Option<f64>,
    /// Date of the fit (UTC, `YYYY-MM-DD`).
    pub date: String,
}

impl FitSummary {
    /// The summary of a fit.
    pub fn new(r: &FitReport, date: &str) -> Self {
        Self {
            seed: r.options.seed,
            epochs: r.options.epochs,
            learning_rate: r.options.learning_rate,
            l2: r.options.l2,
            restarts: r.options.restarts,
            monotone: r.options.monotone,
            best_restart: r.best_restart,
            train_identities: r.train_identities.iter().cloned().collect(),
            validation_identities: r.validation_identities.iter().cloned().collect(),
            train_counts: r.train_counts,
            validation_counts: r.validation_counts,
            excluded: r.excluded,
            train_loss: r.train_loss,
            validation_loss: r.validation_loss,
            threshold: r.threshold,
            train_worst_error: r.train_worst_error,
            train_auc: r.train_auc,
            validation_auc: r.validation_auc,
            date: date.to_string(),
        }
    }

    /// JSON text.
    pub fn to_json(&self) -> Result<String, EvalError> {
        serde_json::to_string_pretty(self).map_err(|source| EvalError::Json {
            context: "serialising the fit summary".into(),
            source,
        })
    }
}

/// Reads a fit summary, `None` when the file is absent.
pub fn read_fit_summary(path: &Path) -> Result<Option<FitSummary>, EvalError> {
    read_json(path)
}

/// Everything the report shows.
#[derive(Debug, Clone)]
pub struct ReportInput<'a> {
    /// Recorded rows.
    pub rows: &'a [FeatureRow],
    /// Data set log, when available.
    pub dataset: Option<&'a DatasetLog>,
    /// Fit summary, when available.
    pub fit: Option<&'a FitSummary>,
    /// One verifier per weights file to evaluate (each with its probability threshold).
    pub verifiers: &'a [Verifier],
    /// Match and liveness thresholds of the match and liveness tables.
    pub config: VerifierConfig,
    /// The configured liveness mode (fusion input and strict check).
    pub liveness_mode: LivenessMode,
}

fn stats(values: &mut [f64]) -> String {
    if values.is_empty() {
        return "–".into();
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    format!("{:.3} / {:.3} / {:.3}", values[0], median, values[n - 1])
}

/// The fused-decision table rows for one set of rows.
fn fused_table(out: &mut String, rows: &[FeatureRow], input: &ReportInput<'_>) {
    out.push_str(
        "| weights | threshold | policy | FRR genuine | FRR originals | FAR impostor | FAR print | FAR replay |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for verifier in input.verifiers {
        for policy in [DecisionPolicy::Strict, DecisionPolicy::Fusion] {
            let v = verifier.with_policy(policy);
            let e = fused_errors(rows, &v, input.liveness_mode);
            let _ = writeln!(
                out,
                "| {} | {:.4} | {} | {} | {} | {} | {} | {} |",
                v.fusion().name(),
                v.threshold(),
                match policy {
                    DecisionPolicy::Strict => "strict",
                    DecisionPolicy::Fusion => "fusion",
                },
                e.frr_genuine,
                e.frr_originals,
                e.far_impostor,
                e.far_print,
                e.far_replay
            );
        }
    }
}

/// Renders the report.
pub fn render(input: &ReportInput<'_>) -> String {
    let rows = input.rows;
    let mut out = String::new();
    let _ = writeln!(out, "# FaceKey evaluation on simulated data\n");
    let _ = writeln!(
        out,
        "Generated by `facekey-eval` from `features.csv`{}. **Every attack below is a software \
         simulation built from the sample photos, and every genuine pair is a photo against a \
         degraded copy of itself**: see `docs/evaluation.md` for what these numbers can and \
         cannot show.\n",
        input
            .dataset
            .map_or(String::new(), |d| format!(" (seed {})", d.seed))
    );
    let _ = writeln!(
        out,
        "Thresholds: match similarity ≥ {} (distance ≤ 0.6), liveness ≥ {}; fused decisions use \
         the liveness mode **{}**.\n",
        input.config.match_threshold,
        input.config.liveness_threshold,
        input.liveness_mode.describe()
    );

    // Data.
    let identities: BTreeSet<&str> = rows.iter().map(|r| r.identity.as_str()).collect();
    let sources: BTreeSet<&str> = rows.iter().map(|r| r.source.as_str()).collect();
    let _ = writeln!(out, "## Data\n");
    let _ = writeln!(
        out,
        "{} identities (distinct faces) from {} photos: {}.\n",
        identities.len(),
        sources.len(),
        identities.iter().copied().collect::<Vec<_>>().join(", ")
    );
    out.push_str(
        "| kind | rows | presentations | attempted | not acquired |\n|---|---|---|---|---|\n",
    );
    for kind in Kind::ALL {
        let n = rows.iter().filter(|r| r.kind == kind).count();
        let pres: BTreeSet<&str> = rows
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.presentation.as_str())
            .collect();
        let (attempted, missing) = match input.dataset {
            Some(d) if kind != Kind::Impostor => {
                let of: Vec<_> = d
                    .presentations
                    .iter()
                    .filter(|r| r.kind == kind.as_str())
                    .collect();
                (
                    of.len().to_string(),
                    of.iter()
                        .filter(|r| r.status == "not_found")
                        .count()
                        .to_string(),
                )
            }
            _ => ("–".into(), "–".into()),
        };
        let pres_count = if kind == Kind::Impostor {
            "(probes of genuine and bona_fide)".to_string()
        } else {
            pres.len().to_string()
        };
        let _ = writeln!(
            out,
            "| {kind} | {n} | {pres_count} | {attempted} | {missing} |"
        );
    }
    if let Some(d) = input.dataset {
        let _ = writeln!(
            out,
            "\nPer photo: {} single degradations per kind (6 kinds) and {} chains; per identity: \
             {} simulated prints and {} simulated replays in {}x{} frames. Photos: {}; copies \
             skipped: {}.",
            d.variants_per_kind,
            d.combos,
            d.attacks_per_kind,
            d.attacks_per_kind,
            d.frame.0,
            d.frame.1,
            d.sources.join(", "),
            d.derived_copies_skipped.join(", ")
        );
        let skipped: Vec<_> = d
            .presentations
            .iter()
            .filter(|r| r.status == "skipped")
            .collect();
        if !skipped.is_empty() {
            let _ = writeln!(out, "\nFaces not enrolled:");
            for s in skipped {
                let _ = writeln!(out, "- {}: {}", s.presentation, s.reason);
            }
        }
    }
    out.push('\n');

    // Matching.
    let _ = writeln!(out, "## Matching (dlib embedding)\n");
    let (fnm, fm) = (fnmr(rows, &input.config), fmr(rows, &input.config));
    let dist = |k: Kind| -> Vec<f64> {
        rows.iter()
            .filter(|r| r.kind == k)
            .map(|r| r.distance)
            .collect()
    };
    out.push_str("| measure | value |\n|---|---|\n");
    let _ = writeln!(out, "| FNMR (genuine pairs rejected) | {fnm} |");
    let _ = writeln!(out, "| FMR (impostor pairs accepted) | {fm} |");
    let _ = writeln!(
        out,
        "| genuine distance min / median / max | {} |",
        stats(&mut dist(Kind::Genuine))
    );
    let _ = writeln!(
        out,
        "| impostor distance min / median / max | {} |",
        stats(&mut dist(Kind::Impostor))
    );
    let _ = writeln!(
        out,
        "| print attack distance min / median / max | {} |",
        stats(&mut dist(Kind::AttackPrint))
    );
    let _ = writeln!(
        out,
        "| replay attack distance min / median / max | {} |\n",
        stats(&mut dist(Kind::AttackReplay))
    );

    // Liveness.
    let _ = writeln!(
        out,
        "## Presentation-attack detection (liveness ≥ {})\n",
        input.config.liveness_threshold
    );
    let _ = writeln!(
        out,
        "Counted once per presentation (image). BPCER: real photos called attacks (originals \
         only, and originals plus their degraded copies). APCER: simulated attacks called live.\n"
    );
    out.push_str(
        "| liveness mode | BPCER originals | BPCER all real | APCER print (sim.) | APCER replay (sim.) | AUC real vs attacks |\n\
         |---|---|---|---|---|---|\n",
    );
    for mode in LIVENESS_MODES {
        let name = mode.describe();
        let e = pad_errors(rows, mode, &input.config);
        let mut seen = BTreeSet::new();
        let scored: Vec<(f64, u8)> = rows
            .iter()
            .filter(|r| r.kind != Kind::Impostor && seen.insert(r.presentation.as_str()))
            .map(|r| {
                (
                    liveness_under(r, mode).unwrap_or(0.0),
                    u8::from(!r.kind.is_attack()),
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} |",
            e.bpcer_originals,
            e.bpcer_all,
            e.apcer_print,
            e.apcer_replay,
            auc(&scored).map_or("n/a".into(), |a| format!("{a:.3}"))
        );
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "Live-score distribution per presentation kind (min / median / max):\n"
    );
    out.push_str("| kind | DTN live | MiniFAS live | quality |\n|---|---|---|---|\n");
    for kind in [
        Kind::BonaFide,
        Kind::Genuine,
        Kind::AttackPrint,
        Kind::AttackReplay,
    ] {
        let mut seen = BTreeSet::new();
        let pres: Vec<&FeatureRow> = rows
            .iter()
            .filter(|r| r.kind == kind && seen.insert(r.presentation.as_str()))
            .collect();
        let mut d: Vec<f64> = pres.iter().map(|r| r.dtn_live).collect();
        let mut m: Vec<f64> = pres.iter().map(|r| r.minifas_live).collect();
        let mut q: Vec<f64> = pres.iter().map(|r| r.quality).collect();
        let _ = writeln!(
            out,
            "| {kind} | {} | {} | {} |",
            stats(&mut d),
            stats(&mut m),
            stats(&mut q)
        );
    }
    out.push('\n');

    // Fusion.
    let _ = writeln!(out, "## Fused decision\n");
    let _ = writeln!(
        out,
        "`strict`: accept only when the fused probability reaches the threshold *and* the match \
         and liveness checks accept; `fusion`: the probability alone decides. FRR genuine: \
         genuine pairs (degraded real photos) rejected; FRR originals: original photos claimed as \
         themselves rejected; FAR: impostor pairs or simulated attacks on the claimed person \
         accepted. All rows:\n"
    );
    fused_table(&mut out, rows, input);
    out.push('\n');

    if let Some(fit) = input.fit {
        let val: BTreeSet<String> = fit.validation_identities.iter().cloned().collect();
        let held: Vec<FeatureRow> = rows
            .iter()
            .filter(|r| split_of(r, &val) == Split::Validation)
            .cloned()
            .collect();
        let _ = writeln!(out, "## Fit of `trained`\n");
        let _ = writeln!(
            out,
            "Fitted {} ({}) on the training identities ({}); held out: {}. Training rows {}, \
             validation rows {}, cross-split impostor rows excluded {}. Balanced BCE: training \
             {:.4}, validation {}. ROC AUC: training {}, validation {}. Recommended threshold \
             {:.4} (minimax of FRR and the three FARs on the training rows; worst of them there \
             {:.1} %).\n",
            fit.date,
            if fit.monotone {
                "monotone: non-negative weights"
            } else {
                "unconstrained weights"
            },
            fit.train_identities.join(", "),
            fit.validation_identities.join(", "),
            fit.train_counts.total(),
            fit.validation_counts.total(),
            fit.excluded,
            fit.train_loss,
            fit.validation_loss
                .map_or("n/a".into(), |v| format!("{v:.4}")),
            fit.train_auc.map_or("n/a".into(), |v| format!("{v:.3}")),
            fit.validation_auc
                .map_or("n/a".into(), |v| format!("{v:.3}")),
            fit.threshold,
            fit.train_worst_error * 100.0
        );
        if !held.is_empty() {
            let _ = writeln!(
                out,
                "Fused decision on the held-out identities only ({} rows; the reference weights \
                 shown for comparison):\n",
                held.len()
            );
            fused_table(&mut out, &held, input);
            out.push('\n');
        }
    }

    // Per-source breakdown of the genuine FNMR and attack acceptance.
    let mut by_source: BTreeMap<&str, (Rate, Rate)> = BTreeMap::new();
    let configured = config_for_mode(&input.config, input.liveness_mode);
    for r in rows {
        let e = by_source.entry(r.source.as_str()).or_default();
        match r.kind {
            Kind::Genuine => {
                e.0.total += 1;
                if configured.match_decision(r.similarity) == Decision::Reject {
                    e.0.errors += 1;
                }
            }
            Kind::AttackPrint | Kind::AttackReplay => {
                e.1.total += 1;
                let live = liveness_verdict(r, input.liveness_mode, &configured);
                if live.decision() == Decision::Accept {
                    e.1.errors += 1;
                }
            }
            _ => {}
        }
    }
    let _ = writeln!(out, "## By source photo\n");
    out.push_str("| source | FNMR | APCER (both attack types, configured mode) |\n|---|---|---|\n");
    for (src, (g, a)) in by_source {
        let _ = writeln!(out, "| {src} | {g} | {a} |");
    }
    let _ = writeln!(out, "\nRates read `percent (errors/trials)`.");
    out
}

/// The nearest-rank quantile `q` of `values` (sorted in place); `None` when empty.
fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

/// The baseline the runtime serves beside its live distributions: the pipeline's error rates at
/// the configured thresholds, each verifier's fused error rates under both policies, and score
/// quantiles per population, all from the recorded rows and decided by the runtime's verifier.
pub fn baseline(input: &ReportInput<'_>, source: &str) -> Baseline {
    let rows = input.rows;
    let mode = input.liveness_mode;
    let config = config_for_mode(&input.config, mode);
    let rate = |measure: &str, r: Rate, weights: Option<&str>, policy: Option<&str>| BaselineRate {
        measure: measure.to_owned(),
        weights: weights.map(str::to_owned),
        policy: policy.map(str::to_owned),
        errors: r.errors,
        trials: r.total,
    };
    let pad = pad_errors(rows, mode, &input.config);
    let mut rates = vec![
        rate("fnmr", fnmr(rows, &config), None, None),
        rate("fmr", fmr(rows, &config), None, None),
        rate("bpcer", pad.bpcer_all, None, None),
        rate("apcer_print", pad.apcer_print, None, None),
        rate("apcer_replay", pad.apcer_replay, None, None),
    ];
    for verifier in input.verifiers {
        for (policy, name) in [
            (DecisionPolicy::Strict, "strict"),
            (DecisionPolicy::Fusion, "fusion"),
        ] {
            let v = verifier.with_policy(policy);
            let e = fused_errors(rows, &v, mode);
            let w = Some(v.fusion().name());
            rates.extend([
                rate("frr", e.frr_genuine, w, Some(name)),
                rate("far_impostor", e.far_impostor, w, Some(name)),
                rate("far_print", e.far_print, w, Some(name)),
                rate("far_replay", e.far_replay, w, Some(name)),
            ]);
        }
    }
    let population = |k: Kind| match k {
        Kind::Genuine | Kind::BonaFide => "genuine",
        Kind::Impostor => "impostor",
        Kind::AttackPrint | Kind::AttackReplay => "attack",
    };
    let mut quantiles = Vec::new();
    let mut push = |score: &str, pop: &str, weights: Option<&str>, mut values: Vec<f64>| {
        for q in [0.1, 0.5, 0.9] {
            if let Some(value) = quantile(&mut values, q) {
                quantiles.push(BaselineQuantile {
                    score: score.to_owned(),
                    population: pop.to_owned(),
                    weights: weights.map(str::to_owned),
                    quantile: q,
                    value,
                });
            }
        }
    };
    for pop in ["genuine", "impostor"] {
        let values = rows
            .iter()
            .filter(|r| population(r.kind) == pop)
            .map(|r| r.similarity)
            .collect();
        push("similarity", pop, None, values);
    }
    for pop in ["genuine", "attack"] {
        let mut seen = BTreeSet::new();
        let values = rows
            .iter()
            .filter(|r| {
                r.kind != Kind::Impostor
                    && population(r.kind) == pop
                    && seen.insert(r.presentation.as_str())
            })
            .map(|r| liveness_feature(r, mode))
            .collect();
        push("liveness", pop, None, values);
    }
    for verifier in input.verifiers {
        for pop in ["genuine", "impostor", "attack"] {
            let values = rows
                .iter()
                .filter(|r| population(r.kind) == pop)
                .map(|r| {
                    let x = [r.similarity, liveness_feature(r, mode), r.quality];
                    verifier.fusion().forward(&x).probability
                })
                .collect();
            push("probability", pop, Some(verifier.fusion().name()), values);
        }
    }
    Baseline {
        format: BASELINE_FORMAT.to_owned(),
        version: BASELINE_VERSION,
        source: source.to_owned(),
        match_threshold: input.config.match_threshold,
        liveness_threshold: input.config.liveness_threshold,
        liveness_mode: mode,
        rates,
        quantiles,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::features::tests::row;
    use super::*;
    use facekey_runtime::fusion::FusionMlp;

    #[test]
    fn report_has_every_table_and_counts() {
        let mut rows = vec![
            row(Kind::BonaFide, "a", "a", [0.99, 0.8, 0.9]),
            row(Kind::Genuine, "a", "a", [0.95, 0.7, 0.8]),
            row(Kind::Genuine, "a", "a", [0.3, 0.7, 0.8]),
            row(Kind::Impostor, "a", "b", [0.05, 0.7, 0.8]),
            row(Kind::AttackPrint, "b", "b", [0.9, 0.2, 0.5]),
            row(Kind::AttackReplay, "b", "b", [0.9, 0.6, 0.5]),
        ];
        for (i, r) in rows.iter_mut().enumerate() {
            r.presentation = format!("p{i}");
        }
        let config = VerifierConfig {
            threshold: Some(0.5),
            ..VerifierConfig::default()
        };
        let verifiers = vec![Verifier::new(FusionMlp::reference().unwrap(), config)];
        let md = render(&ReportInput {
            rows: &rows,
            dataset: None,
            fit: None,
            verifiers: &verifiers,
            config,
            liveness_mode: LivenessMode::default(),
        });
        assert!(
            md.contains("| FNMR (genuine pairs rejected) | 50.0 % (1/2) |"),
            "{md}"
        );
        assert!(
            md.contains("| FMR (impostor pairs accepted) | 0.0 % (0/1) |"),
            "{md}"
        );
        assert!(md.contains("| DTN only |"));
        assert!(md.contains("| both PAD models, minimum |"));
        assert_eq!(md.matches("| reference | 0.5000 |").count(), 2);
        assert!(md.contains("2 identities"));
        let input = ReportInput {
            rows: &rows,
            dataset: None,
            fit: None,
            verifiers: &verifiers,
            config,
            liveness_mode: LivenessMode::default(),
        };
        let b = baseline(&input, "test rows");
        let fnmr = b.rates.iter().find(|r| r.measure == "fnmr").unwrap();
        assert_eq!((fnmr.errors, fnmr.trials), (1, 2));
        assert_eq!(
            b.rates
                .iter()
                .filter(|r| r.weights.as_deref() == Some("reference"))
                .count(),
            8
        );
        let median = |score: &str, pop: &str| {
            b.quantiles
                .iter()
                .find(|q| q.score == score && q.population == pop && q.quantile == 0.5)
                .map(|q| q.value)
        };
        // Genuine similarities 0.99, 0.95, 0.3 (originals count as genuine): median 0.95.
        assert_eq!(median("similarity", "genuine"), Some(0.95));
        assert_eq!(median("similarity", "impostor"), Some(0.05));
        assert!(median("probability", "attack").is_some());
        assert_eq!(
            Baseline::parse(&b.to_json()).unwrap(),
            b,
            "the runtime reads what the evaluation writes"
        );
    }
}

/// Held-out constants: a match z-sum threshold at the impostor mean plus this many standard
/// deviations (a one-sided Gaussian tail of 1e-4), unless the hardest impostor is higher.
pub const MATCH_TAIL_Z: f64 = 3.72;
/// Passive-liveness fusion threshold: at most this share of the training attacks pass.
pub const PAD_MAX_APCER: f64 = 0.10;

/// What the second-opinion section found (`second_opinion.json`): held-out error rates of
/// every combination, the recommended one and its constants fitted on every identity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecondOpinionSummary {
    /// `MATCH_TAIL_Z`.
    pub match_tail_z: f64,
    /// `PAD_MAX_APCER`.
    pub pad_max_apcer: f64,
    /// Leave-one-identity-out matching errors per combination.
    pub matching: Vec<super::zfusion::MatchHeldOut>,
    /// Leave-one-identity-out PAD errors per combination.
    pub liveness: Vec<super::zfusion::PadHeldOut>,
    /// The matching combination with no held-out false match and the fewest held-out false
    /// non-matches (fewer models on a tie), if any.
    pub recommended_matching: Option<String>,
    /// Its constants fitted on every identity (what a runtime would serve).
    pub matching_constants: Option<super::zfusion::FittedFusion>,
    /// The PAD combination with the fewest held-out bona fide rejections.
    pub recommended_liveness: Option<String>,
    /// Its constants fitted on every identity.
    pub liveness_constants: Option<super::zfusion::FittedFusion>,
    /// Per-family detection and match rates of genuine presentations (dlib at distance 0.6).
    pub families: Vec<super::zfusion::FamilyRates>,
}

fn pct(n: usize, d: usize) -> String {
    if d == 0 {
        return "–".into();
    }
    format!("{:.1} % ({n}/{d})", 100.0 * n as f64 / d as f64)
}

/// The second-opinion sections of the report (glasses per variant family, held-out fusion of
/// the match and liveness models, per-model times from `latency`, `latency.json`'s content) and
/// their summary.
pub fn render_second_opinions(
    rows: &[FeatureRow],
    dataset: Option<&DatasetLog>,
    latency: Option<&serde_json::Value>,
) -> (String, SecondOpinionSummary) {
    use super::zfusion::{
        MATCH_COMBOS, PAD_COMBOS, combo_label, family_rates, fit_match, fit_pad,
        leave_one_identity_out, pad_leave_one_identity_out,
    };
    let mut out = String::new();
    let attempted: Vec<(String, bool)> = dataset
        .map(|d| {
            d.presentations
                .iter()
                .filter(|p| p.kind == Kind::Genuine.as_str())
                .map(|p| (p.variant.clone(), p.status == "acquired"))
                .collect()
        })
        .unwrap_or_default();
    let families = family_rates(&attempted, rows, 0.6);
    let _ = writeln!(
        out,
        "\n## Glasses and the other degradations (genuine presentations)\n"
    );
    out.push_str(
        "Detection: the face found where it should be; match: dlib distance ≤ 0.6 against the \
         own template.\n\n| variant family | detected | matched (of detected) | dlib distance median / max |\n|---|---|---|---|\n",
    );
    for f in &families {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} / {} |",
            f.family,
            pct(f.detected, f.attempted),
            pct(f.matched, f.detected),
            f.median_distance.map_or("–".into(), |v| format!("{v:.3}")),
            f.max_distance.map_or("–".into(), |v| format!("{v:.3}")),
        );
    }

    let matching: Vec<_> = MATCH_COMBOS
        .iter()
        .filter_map(|c| leave_one_identity_out(rows, c, MATCH_TAIL_Z))
        .collect();
    let _ = writeln!(
        out,
        "\n## Second embedding: score-level fusion, identities held out\n\nEach identity in turn \
         is held out; z-score constants (impostor mean and sd per model) and the threshold \
         (max of the training impostors' z-sums and their mean + {MATCH_TAIL_Z} sd) come from \
         the rows not involving it, and only rows involving it are scored. An impostor row is \
         scored in both of its identities' folds.\n"
    );
    out.push_str(
        "| models | false matches (impostor rows) | false-match decisions | FNMR genuine | FNMR glasses |\n|---|---|---|---|---|\n",
    );
    for m in &matching {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            m.models,
            pct(m.false_match_rows, m.impostor_rows),
            pct(m.false_matches, m.impostor_trials),
            pct(m.false_non_matches, m.genuine),
            pct(m.glasses_rejected, m.glasses),
        );
    }
    let recommended = matching
        .iter()
        .filter(|m| m.false_match_rows == 0)
        .min_by_key(|m| (m.false_non_matches, m.models.matches('+').count()))
        .map(|m| m.models.clone());
    let all: Vec<&FeatureRow> = rows.iter().collect();
    let matching_constants = recommended.as_ref().and_then(|name| {
        MATCH_COMBOS
            .iter()
            .find(|c| combo_label(c) == *name)
            .and_then(|c| fit_match(&all, c, MATCH_TAIL_Z))
    });

    let liveness: Vec<_> = PAD_COMBOS
        .iter()
        .filter_map(|c| pad_leave_one_identity_out(rows, c, PAD_MAX_APCER))
        .collect();
    let _ = writeln!(
        out,
        "\n## Passive liveness: fusion of fr_liveness and human_liveness, identities held out\n\n\
         Logits z-scored against the training identities' bona fide presentations, summed; the \
         threshold lets at most {:.0} % of the training identities' simulated attacks pass. \
         Scored on the held-out identity's presentations.\n",
        PAD_MAX_APCER * 100.0
    );
    out.push_str(
        "| models | BPCER (real called attack) | APCER print (sim.) | APCER replay (sim.) |\n|---|---|---|---|\n",
    );
    for p in &liveness {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            p.models,
            pct(p.bona_fide_rejected, p.bona_fide),
            pct(p.prints_passed, p.prints),
            pct(p.replays_passed, p.replays),
        );
    }
    let recommended_liveness = liveness
        .iter()
        .min_by_key(|p| (p.bona_fide_rejected, p.models.matches('+').count()))
        .map(|p| p.models.clone());
    let pres: Vec<&FeatureRow> = rows.iter().filter(|r| r.identity == r.claimed).collect();
    let liveness_constants = recommended_liveness.as_ref().and_then(|name| {
        PAD_COMBOS
            .iter()
            .find(|c| c.iter().map(|m| m.as_str()).collect::<Vec<_>>().join("+") == *name)
            .and_then(|c| fit_pad(&pres, c, PAD_MAX_APCER))
    });
    if let Some(lat) = latency.and_then(|l| l.as_object()) {
        let _ = writeln!(
            out,
            "\n## Per-face model times in this run (ms; align + preprocessing + inference for \
             embeddings, inference for liveness; the machine was shared, compare the columns \
             with each other)\n\n| model | faces | p50 | p90 |\n|---|---|---|---|"
        );
        for (model, v) in lat {
            let f = |k: &str| v[k].as_f64().map_or("–".into(), |x| format!("{x:.1}"));
            let _ = writeln!(
                out,
                "| {model} | {} | {} | {} |",
                v["n"],
                f("p50_ms"),
                f("p90_ms")
            );
        }
    }
    if let Some(r) = &recommended {
        let _ = writeln!(
            out,
            "\nRecommended match combination by these rules: **{r}**; liveness: **{}**.",
            recommended_liveness.as_deref().unwrap_or("–")
        );
    }
    (
        out,
        SecondOpinionSummary {
            match_tail_z: MATCH_TAIL_Z,
            pad_max_apcer: PAD_MAX_APCER,
            matching,
            liveness,
            recommended_matching: recommended,
            matching_constants,
            recommended_liveness,
            liveness_constants,
            families,
        },
    )
}
