//! The fitted fusion weights (`runtime/weights/trained.json`) against the features they were
//! fitted on (`runtime/eval/results/features.csv`, recorded by `facekey-eval`): the file loads the way
//! the runtime loads weights, and its probabilities separate accept-worthy rows (genuine pairs,
//! originals) from impostors and simulated attacks better than chance — overall, on the held-out
//! identities, and per negative kind. All numbers are computed here from the recorded files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

use facekey_eval::features::{FeatureRow, Kind, read_csv};
use facekey_eval::fit::{Split, split_of};
use facekey_eval::metrics::{auc, group_errors};
use facekey_eval::report::read_fit_summary;
use facekey_runtime::fusion::{FEATURE_NAMES, FusionMlp};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn load() -> (FusionMlp, Vec<FeatureRow>) {
    let mlp = FusionMlp::from_path(&root().join("../weights/trained.json")).unwrap();
    let rows = read_csv(&root().join("results/features.csv")).unwrap();
    (mlp, rows)
}

fn scored<'a>(mlp: &FusionMlp, rows: impl IntoIterator<Item = &'a FeatureRow>) -> Vec<(f64, u8)> {
    rows.into_iter()
        .map(|r| (mlp.forward(&r.features()).probability, r.label()))
        .collect()
}

#[test]
fn trained_weights_load_and_describe_their_fit() {
    let (mlp, _) = load();
    assert_eq!(mlp.name(), "trained");
    let t = mlp
        .recommended_threshold()
        .expect("a recommended threshold");
    assert!(t > 0.0 && t < 1.0, "{t}");
    let d = mlp.description();
    for needle in ["SIMULATED", "seed", "Threshold", "L2"] {
        assert!(d.contains(needle), "description lacks {needle:?}: {d}");
    }
    let text = std::fs::read_to_string(root().join("../weights/trained.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["features"], serde_json::json!(FEATURE_NAMES));
}

#[test]
fn trained_weights_separate_the_recorded_features_better_than_chance() {
    let (mlp, rows) = load();
    assert!(rows.iter().any(|r| r.label() == 1) && rows.iter().any(|r| r.label() == 0));
    let overall = auc(&scored(&mlp, &rows)).unwrap();
    assert!(overall > 0.5, "overall AUC {overall}");

    // Per negative kind: positives against that kind only.
    let positives: Vec<&FeatureRow> = rows.iter().filter(|r| r.label() == 1).collect();
    for kind in [Kind::Impostor, Kind::AttackPrint, Kind::AttackReplay] {
        let subset = positives
            .iter()
            .copied()
            .chain(rows.iter().filter(|r| r.kind == kind));
        let a = auc(&scored(&mlp, subset)).unwrap();
        assert!(a > 0.5, "AUC against {kind}: {a}");
    }

    // At the recommended threshold the balanced error is below chance (0.5).
    let t = mlp.recommended_threshold().unwrap();
    let probs: Vec<(f64, Kind)> = rows
        .iter()
        .map(|r| (mlp.forward(&r.features()).probability, r.kind))
        .collect();
    let errors = group_errors(&probs, t);
    let present: Vec<f64> = errors.iter().flatten().copied().collect();
    let balanced = present.iter().sum::<f64>() / present.len() as f64;
    assert!(
        balanced < 0.5,
        "balanced error {balanced} at {t}: {errors:?}"
    );
}

#[test]
fn trained_weights_beat_chance_on_held_out_identities() {
    let (mlp, rows) = load();
    let Some(fit) = read_fit_summary(&root().join("results/fit.json")).unwrap() else {
        panic!("runtime/eval/results/fit.json is missing: run `facekey-eval fit`");
    };
    let held: BTreeSet<String> = fit.validation_identities.iter().cloned().collect();
    assert!(!held.is_empty(), "the fit held no identity out");
    let val: Vec<&FeatureRow> = rows
        .iter()
        .filter(|r| split_of(r, &held) == Split::Validation)
        .collect();
    let a = auc(&scored(&mlp, val.iter().copied())).unwrap();
    assert!(a > 0.5, "validation AUC {a} on {} rows", val.len());
}
