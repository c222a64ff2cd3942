//! `facekey-eval`: evaluates the verification pipeline on data simulated from the sample photos
//! (genuine pairs from degraded copies, impostor pairs, simulated print and replay attacks),
//! fits a second fusion-weights file on the recorded features, and writes a markdown report.
//!
//! ```text
//! facekey-eval            # = collect: run the pipeline, write features.csv and report.md
//! facekey-eval fit        # fit runtime/weights/trained.json on features.csv, rewrite report.md
//! facekey-eval report     # recompute report.md from features.csv (no models needed)
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use facekey_eval::collect::{
    CollectOptions, Identity, Latencies, SecondModels, Source, attack_frame, collect,
    degradation_plan, glasses_variants,
};
use facekey_eval::degrade::apply_chain;
use facekey_eval::features::{Kind, read_csv, to_csv};
use facekey_eval::fit::{FitOptions, fit, weights_file};
use facekey_eval::metrics::liveness_feature;
use facekey_eval::report::{
    DatasetLog, FitSummary, ReportInput, baseline, read_dataset_log, read_fit_summary, render,
    render_second_opinions,
};
use facekey_runtime::config::LivenessModel;
use facekey_runtime::fusion::{FusionMlp, WeightsSource};
use facekey_runtime::verifier::{Verifier, VerifierConfig};
use facekey_runtime::vision::models::ModelSpec;
use facekey_runtime::vision::onnx::{SessionOptions, ort_runtime};
use facekey_runtime::vision::second_opinion::{
    FACERES, HUMAN_LIVENESS, HumanLiveness, MOBILEFACENET, SecondEmbedder, SecondModel,
};
use facekey_runtime::vision::{Combine, LivenessMode, Vision, VisionConfig};
use facekey_settings::defaults;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Sample files that are copies of another sample photo (see runtime/testdata/faces/PROVENANCE.md).
const DERIVED_COPIES: [&str; 3] = [
    "messi5.libjpeg.png",
    "t1.libjpeg.png",
    "astronaut_640x480.jpg",
];

#[derive(Debug, Parser)]
#[command(
    name = "facekey-eval",
    version,
    about = "Evaluate FaceKey on data simulated from the sample photos and fit fusion weights"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    collect: CollectArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipeline over the simulated data; write features.csv, dataset.json and
    /// report.md (the default).
    Collect,
    /// Fit the 3-4-3-1 MLP on features.csv; write the weights file and fit.json, then report.md.
    Fit(FitArgs),
    /// Recompute report.md from features.csv.
    Report,
    /// Write synthetic challenge clips (JPEG frames + manifest.json) to --out, or one as a y4m.
    Sequences(facekey_eval::sequences::commands::SequencesArgs),
    /// Run the synthetic challenge clips through the server's checker: pass rates per kind and
    /// action, a threshold sweep, <out>/challenge.json.
    Challenge(facekey_eval::sequences::commands::ChallengeArgs),
    /// Measure how far MTCNN's eye points and fr_landmark's eye centres move on the degraded
    /// and glasses copies (against the original's MTCNN eyes); write <out>/eyes.json.
    Eyes,
    /// Measure enrolling a glasses photo beside the plain one (several templates per subject)
    /// and a fr_landmark fallback for grossly wrong MTCNN eye points; write
    /// <out>/enrolment.json.
    Enrolment,
}

#[derive(Debug, Args)]
struct Common {
    /// Directory of the recorded outputs (features.csv, report.md, ...).
    #[arg(long, global = true, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
    /// Fusion weights to report on: a built-in name (`reference`) or a weights file; repeat for
    /// several. Default: `reference` and runtime/weights/trained.json when it exists.
    #[arg(long, global = true)]
    weights: Vec<String>,
    /// Fused-probability threshold for every weights file (default: each file's recommended
    /// threshold, else the runtime's default).
    #[arg(long, global = true)]
    threshold: Option<f64>,
    /// Minimum match similarity (the runtime's default; 0.5 is dlib's distance 0.6).
    #[arg(long, global = true, default_value_t = defaults::MATCH_THRESHOLD)]
    match_threshold: f64,
    /// Minimum liveness score (the runtime's default).
    #[arg(long, global = true, default_value_t = defaults::LIVENESS_THRESHOLD)]
    liveness_threshold: f64,
    /// Liveness models of the recorded `liveness` feature and the fused decision, as the
    /// runtime's `--liveness` (default: the runtime's).
    #[arg(long, global = true, value_enum, default_value = defaults::LIVENESS)]
    liveness: LivenessModel,
    /// How two liveness scores combine, as the runtime's `--liveness-combine`.
    #[arg(long, global = true, value_enum, default_value = defaults::LIVENESS_COMBINE)]
    liveness_combine: Combine,
}

impl Common {
    /// The liveness mode of the fusion feature and the fused decision.
    fn liveness_mode(&self) -> LivenessMode {
        self.liveness.mode(self.liveness_combine)
    }

    /// The thresholds and policy the evaluation decides with: the runtime's defaults with
    /// this command's overrides (never the caller's `FACEKEY_*` environment).
    fn verifier_config(&self) -> VerifierConfig {
        VerifierConfig {
            match_threshold: self.match_threshold,
            liveness_threshold: self.liveness_threshold,
            check_liveness: self.liveness_mode() != LivenessMode::Off,
            threshold: self.threshold,
            ..VerifierConfig::default()
        }
    }
}

#[derive(Debug, Args)]
struct CollectArgs {
    /// Directory of the sample photos.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/faces"))]
    faces_dir: PathBuf,
    /// Seed of the simulation.
    #[arg(long, default_value_t = CollectOptions::default().seed)]
    seed: u64,
    /// Single degradations per kind and photo.
    #[arg(long, default_value_t = CollectOptions::default().variants_per_kind)]
    variants_per_kind: usize,
    /// Chains of 2-3 degradations per photo.
    #[arg(long, default_value_t = CollectOptions::default().combos)]
    combos: usize,
    /// Simulated attacks per attack type and identity.
    #[arg(long, default_value_t = CollectOptions::default().attacks_per_kind)]
    attacks_per_kind: usize,
    /// Also write example images of one photo (a degraded copy, the first print and the first
    /// replay of each of its faces) to <out>/examples/; the photo defaults to astronaut.png.
    #[arg(long, value_name = "PHOTO", num_args = 0..=1, default_missing_value = "astronaut.png")]
    examples: Option<String>,
    /// Glasses variants per style (dark rims, thin rims, tinted lenses) and photo.
    #[arg(long, default_value_t = CollectOptions::default().glasses_per_style)]
    glasses_per_style: usize,
    /// Directory of the second-opinion models (MobileFaceNet, faceres-deep, human_liveness);
    /// a model whose file is missing there is skipped (its columns read NaN).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../models"))]
    second_models_dir: PathBuf,
}

#[derive(Debug, Args)]
struct FitArgs {
    /// Seed of the split and the initialisations.
    #[arg(long, default_value_t = FitOptions::default().seed)]
    seed: u64,
    /// Adam steps per restart.
    #[arg(long, default_value_t = FitOptions::default().epochs)]
    epochs: usize,
    /// Adam step size.
    #[arg(long, default_value_t = FitOptions::default().learning_rate)]
    learning_rate: f64,
    /// L2 penalty on the weight matrices.
    #[arg(long, default_value_t = FitOptions::default().l2)]
    l2: f64,
    /// Random initialisations.
    #[arg(long, default_value_t = FitOptions::default().restarts)]
    restarts: usize,
    /// Fraction of identities held out for validation.
    #[arg(long, default_value_t = FitOptions::default().validation_fraction)]
    validation_fraction: f64,
    /// Let weights go negative (by default they are kept non-negative, so the probability never
    /// falls when a feature rises).
    #[arg(long)]
    unconstrained: bool,
    /// Where to write the weights.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../weights/trained.json"))]
    output: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    for (name, v) in [
        ("--match-threshold", cli.common.match_threshold),
        ("--liveness-threshold", cli.common.liveness_threshold),
    ]
    .into_iter()
    .chain(cli.common.threshold.map(|t| ("--threshold", t)))
    {
        facekey_settings::validate_unit_threshold(name, v).map_err(anyhow::Error::msg)?;
    }
    std::fs::create_dir_all(&cli.common.out)
        .with_context(|| format!("creating {}", cli.common.out.display()))?;
    match &cli.command {
        None | Some(Command::Collect) => run_collect(&cli)?,
        Some(Command::Fit(args)) => run_fit(&cli.common, args)?,
        Some(Command::Report) => {}
        Some(Command::Sequences(args)) => {
            return facekey_eval::sequences::commands::run_sequences(args, &cli.common.out);
        }
        Some(Command::Challenge(args)) => {
            return facekey_eval::sequences::commands::run_challenge(args, &cli.common.out);
        }
        Some(Command::Eyes) => return run_eyes(&cli),
        Some(Command::Enrolment) => return run_enrolment(&cli),
    }
    write_report(&cli.common)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn sources(dir: &Path, vision: &Vision) -> anyhow::Result<Vec<Source>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            let lower = n.to_ascii_lowercase();
            (lower.ends_with(".png") || lower.ends_with(".jpg") || lower.ends_with(".jpeg"))
                && !DERIVED_COPIES.contains(&n.as_str())
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let image = vision
                .decode(&bytes)
                .with_context(|| format!("decoding {}", path.display()))?;
            Ok(Source { name, image })
        })
        .collect()
}

fn collect_options(cli: &Cli) -> CollectOptions {
    CollectOptions {
        seed: cli.collect.seed,
        variants_per_kind: cli.collect.variants_per_kind,
        combos: cli.collect.combos,
        attacks_per_kind: cli.collect.attacks_per_kind,
        liveness_mode: cli.common.liveness_mode(),
        glasses_per_style: cli.collect.glasses_per_style,
        ..CollectOptions::default()
    }
}

fn run_collect(cli: &Cli) -> anyhow::Result<()> {
    let started = Instant::now();
    // The runtime's own defaults, with both liveness models so every mode can be scored.
    let mut vcfg = VisionConfig::default();
    vcfg.liveness.mode = LivenessMode::Both {
        combine: Combine::Mean,
    };
    let vision = Vision::load(vcfg).context("loading the vision pipeline")?;
    let srcs = sources(&cli.collect.faces_dir, &vision)?;
    eprintln!(
        "sources: {}",
        srcs.iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let opts = collect_options(cli);
    let second = load_second_models(&cli.collect.second_models_dir, vision.config())?;
    let collected = collect(&vision, &second, &srcs, &opts, &mut |line| {
        eprintln!("  {line}")
    })
    .context("collecting features")?;
    let out = &cli.common.out;
    write(&out.join("features.csv"), &to_csv(&collected.rows))?;
    write(
        &out.join("latency.json"),
        &(latency_summary(&collected.latencies)? + "\n"),
    )?;
    let log = DatasetLog {
        seed: opts.seed,
        variants_per_kind: opts.variants_per_kind,
        combos: opts.combos,
        attacks_per_kind: opts.attacks_per_kind,
        frame: opts.frame,
        crop_scale: opts.crop_scale,
        sources: srcs.iter().map(|s| s.name.clone()).collect(),
        derived_copies_skipped: DERIVED_COPIES.iter().map(|s| s.to_string()).collect(),
        presentations: collected.presentation_records(),
    };
    write(&out.join("dataset.json"), &(log.to_json()? + "\n"))?;
    eprintln!(
        "{} rows from {} degraded images and {} attack frames ({} presentations not acquired) in {:.0} s",
        collected.rows.len(),
        collected.degraded_images,
        collected.attack_frames,
        collected.unacquired.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(photo) = &cli.collect.examples {
        write_examples(
            &out.join("examples"),
            photo,
            &srcs,
            &collected.identities,
            &opts,
        )?;
    }
    Ok(())
}

/// `facekey-eval eyes`: the eye-point and re-alignment measurement of
/// [`facekey_eval::eyes`]: eye-point errors per variant family, held-out matching errors per
/// alignment (the evaluation's leave-one-identity-out fusion), the missed faces and
/// fr_landmark's time, on stdout and in `<out>/eyes.json`.
fn run_eyes(cli: &Cli) -> anyhow::Result<()> {
    use facekey_eval::eyes::{ALIGNMENTS, EyeSample, measure, rows};
    use facekey_eval::zfusion::{MatchModel, leave_one_identity_out};
    let LandmarkLab {
        vision,
        models,
        srcs,
        opts,
        identities,
    } = LandmarkLab::load(cli)?;
    let m = measure(&vision, &models, &srcs, &identities, &opts)?;
    let samples = &m.samples;
    let quantiles = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
        format!("{:.3} / {:.3} / {:.3}", q(0.5), q(0.9), q(1.0))
    };
    let mut families: Vec<&str> = samples.iter().map(|s| s.family.as_str()).collect();
    families.sort_unstable();
    families.dedup();
    println!(
        "eye points, median / p90 / max in inter-ocular distances (seed {}):\n\
         family n | MTCNN vs reference | fr_landmark vs reference | fr_landmark vs its own on \
         the original | MTCNN vs fr_landmark",
        opts.seed
    );
    for f in &families {
        let of = |g: fn(&EyeSample) -> f64| {
            quantiles(samples.iter().filter(|s| s.family == *f).map(g).collect())
        };
        println!(
            "{f} {} | {} | {} | {} | {}",
            samples.iter().filter(|s| s.family == *f).count(),
            of(|s| s.mtcnn_vs_ref),
            of(|s| s.landmark_vs_ref),
            of(|s| s.landmark_vs_own_ref),
            of(|s| s.mtcnn_vs_landmark),
        );
    }
    println!(
        "\ngenuine dlib distance and faceres-deep cosine per alignment, median / p90 / max (cosine: min):"
    );
    for f in families.iter().filter(|f| **f != "plain") {
        for (k, a) in ALIGNMENTS.iter().enumerate() {
            let of = |g: fn(&facekey_eval::eyes::AlignmentScore) -> f64| {
                samples
                    .iter()
                    .filter(|s| s.family == *f)
                    .filter_map(|s| s.alignments.get(k).map(g))
                    .collect::<Vec<f64>>()
            };
            let cos = of(|a| a.faceres);
            let min_cos = cos.iter().copied().fold(f64::INFINITY, f64::min);
            println!("{f} {a} | {} | {min_cos:.3}", quantiles(of(|a| a.dlib)));
        }
    }
    println!(
        "\nheld out (leave one identity out, tail z 3.72): FNMR | glasses FNMR | false-match trials"
    );
    let mut held = Vec::new();
    for (k, a) in ALIGNMENTS.iter().enumerate() {
        let r = rows(samples, k);
        for combo in [
            &[MatchModel::Dlib][..],
            &[MatchModel::Dlib, MatchModel::Faceres],
        ] {
            let Some(h) = leave_one_identity_out(&r, combo, 3.72) else {
                continue;
            };
            println!(
                "{a} {} | {}/{} | {}/{} | {}/{} ({} rows)",
                h.models,
                h.false_non_matches,
                h.genuine,
                h.glasses_rejected,
                h.glasses,
                h.false_matches,
                h.impostor_trials,
                h.false_match_rows
            );
            held.push(serde_json::json!({"alignment": a, "held_out": h}));
        }
    }
    println!("\nmissed faces (best box IoU; MTCNN / fr_landmark five-point mean error on it):");
    for x in &m.missed {
        println!(
            "{} {} | {:.2} | {:?} / {:?}",
            x.identity, x.variant, x.best_iou, x.mtcnn_error, x.landmark_error
        );
    }
    println!("\nswitch_eyes used fr_landmark's eyes on:");
    for f in &families {
        let of: Vec<&EyeSample> = samples.iter().filter(|s| s.family == *f).collect();
        println!(
            "{f} {}/{}",
            of.iter().filter(|s| s.switched).count(),
            of.len()
        );
    }
    println!(
        "\ntemplate shift: dlib distance between the original's detected-aligned embedding and each alignment's, max over the originals:"
    );
    for (k, a) in ALIGNMENTS.iter().enumerate() {
        let max = samples
            .iter()
            .filter(|s| s.family == "plain")
            .filter_map(|s| Some(s.embeddings.first()?.distance(s.embeddings.get(k)?)))
            .fold(0.0f32, f32::max);
        println!("{a} {max:.3}");
    }
    let lm_ms = quantiles(samples.iter().map(|s| s.landmark_ms).collect());
    println!("\nfr_landmark per face (ms): {lm_ms}");
    write(
        &cli.common.out.join("eyes.json"),
        &(serde_json::to_string_pretty(&serde_json::json!({
            "seed": opts.seed,
            "glasses_per_style": opts.glasses_per_style,
            "landmark_ms_p50_p90_max": lm_ms,
            "held_out": held,
            "missed": m.missed,
            "samples": m.samples,
        }))? + "\n"),
    )
}

/// What `eyes` and `enrolment` both start from: the pipeline without liveness, fr_landmark,
/// the sample photos, the collection options and each photo's enrolled identities.
struct LandmarkLab {
    vision: Vision,
    models: facekey_runtime::vision::landmarks::ChallengeModels,
    srcs: Vec<Source>,
    opts: CollectOptions,
    identities: Vec<facekey_eval::collect::Identity>,
}

impl LandmarkLab {
    fn load(cli: &Cli) -> anyhow::Result<Self> {
        let mut vcfg = VisionConfig::default();
        vcfg.liveness.mode = LivenessMode::Off;
        let vision = Vision::load(vcfg).context("loading the vision pipeline")?;
        let models = facekey_runtime::vision::landmarks::ChallengeModels::load(vision.config())
            .context("loading fr_landmark")?;
        let srcs = sources(&cli.collect.faces_dir, &vision)?;
        let opts = collect_options(cli);
        let identities = facekey_eval::eyes::enrol(&vision, &srcs, opts.min_face_px)?;
        Ok(Self {
            vision,
            models,
            srcs,
            opts,
            identities,
        })
    }
}

/// `facekey-eval enrolment`: the multi-template and landmark-fallback measurements of
/// [`facekey_eval::enrolment`], on stdout and in `<out>/enrolment.json`.
fn run_enrolment(cli: &Cli) -> anyhow::Result<()> {
    use facekey_eval::enrolment::{
        Enrolment, FALLBACK_LIMITS, Face, collect_faces, fallback_rows, multi_template, pair_scores,
    };
    use facekey_eval::glasses::Style;
    use facekey_eval::zfusion::{MatchModel, leave_one_identity_out};
    const TAIL_Z: f64 = 3.72;
    let LandmarkLab {
        vision,
        models,
        srcs,
        opts,
        identities,
    } = LandmarkLab::load(cli)?;
    let faces = collect_faces(&vision, &models, &srcs, &identities, &opts)?;
    let combos: [&[MatchModel]; 2] = [
        &[MatchModel::Dlib],
        &[MatchModel::Dlib, MatchModel::Faceres],
    ];
    println!(
        "A. several templates (seed {}): enrolment | probes kept out: style | models | decision: \
         degraded rejected | glasses (other styles) rejected | false matches / impostor trials \
         (via the glasses template) | worst impostor margin",
        opts.seed
    );
    let mut multi = Vec::new();
    for decision in [true, false] {
        for combo in combos {
            let mut totals: std::collections::BTreeMap<String, [usize; 7]> = Default::default();
            for style in Style::ALL.map(|s| s.as_str()) {
                for e in [
                    Enrolment::Plain,
                    Enrolment::PlainAndGlasses(style),
                    Enrolment::PlainAndMovedGlasses(style),
                ] {
                    let Some(r) = multi_template(&faces, e, style, combo, decision, TAIL_Z) else {
                        continue;
                    };
                    println!(
                        "{} | {style} | {} | {}: {}/{} | {}/{} | {}/{} ({}) | {:.3} ({} glasses templates)",
                        r.enrolment,
                        r.models,
                        r.decision,
                        r.degraded_rejected,
                        r.degraded,
                        r.glasses_rejected,
                        r.glasses,
                        r.false_matches,
                        r.impostor_trials,
                        r.false_matches_via_glasses,
                        r.worst_impostor_margin,
                        r.glasses_templates
                    );
                    if !r.rejected_glasses.is_empty() {
                        println!("    rejected: {}", r.rejected_glasses.join("; "));
                    }
                    let key = match e {
                        Enrolment::Plain => "plain",
                        Enrolment::PlainAndGlasses(_) => "plain+glasses",
                        Enrolment::PlainAndMovedGlasses(_) => "plain+glasses(moved)",
                    };
                    let t = totals.entry(key.to_string()).or_default();
                    for (a, b) in t.iter_mut().zip([
                        r.degraded_rejected,
                        r.degraded,
                        r.glasses_rejected,
                        r.glasses,
                        r.false_matches,
                        r.impostor_trials,
                        r.false_matches_via_glasses,
                    ]) {
                        *a += b;
                    }
                    multi.push(r);
                }
            }
            for (k, t) in &totals {
                println!(
                    "  total {k} {} {}: degraded {}/{} | glasses {}/{} | false matches {}/{} ({} via glasses)",
                    facekey_eval::zfusion::combo_label(combo),
                    if decision { "held_out" } else { "runtime" },
                    t[0],
                    t[1],
                    t[2],
                    t[3],
                    t[4],
                    t[5],
                    t[6]
                );
            }
        }
    }
    // B. The landmark fallback.
    fn fam(f: &Face) -> &str {
        if f.glasses() {
            "glasses"
        } else {
            f.family.as_str()
        }
    }
    println!(
        "\nB. MTCNN vs fr_landmark eye disagreement (offset removed; raw) per family, faces above each limit:"
    );
    for limit in FALLBACK_LIMITS {
        for family in ["plain", "degraded", "glasses"] {
            let of: Vec<&Face> = faces
                .faces
                .iter()
                .filter(|f| fam(f) == family && !f.enrol_only())
                .collect();
            println!(
                "> {limit}: {family} {}/{} ({} raw)",
                of.iter().filter(|f| f.disagreement > limit).count(),
                of.len(),
                of.iter().filter(|f| f.raw_disagreement > limit).count()
            );
        }
    }
    println!(
        "\nfaces above {}: name | family | variant | loose | disagreement (raw) | MTCNN / fr_landmark eye error vs reference | dlib, faceres to the original: MTCNN -> fallback",
        facekey_eval::enrolment::FALLBACK_COMPUTED_ABOVE
    );
    let mut fired = Vec::new();
    for f in faces
        .faces
        .iter()
        .filter(|f| f.fallback.is_some() && !f.enrol_only())
    {
        let Some(t) = faces.original(f.identity) else {
            continue;
        };
        let before = pair_scores(&f.embedding, &t.embedding);
        let after = f
            .fallback
            .as_ref()
            .map(|e| pair_scores(e, t.fallback.as_ref().unwrap_or(&t.embedding)));
        println!(
            "{} | {} | {} | {} | {:.3} ({:.3}) | {:.3} / {:.3} | {:.3}, {:.3} -> {}",
            f.name,
            f.family,
            f.variant,
            f.loose,
            f.disagreement,
            f.raw_disagreement,
            f.mtcnn_error,
            f.landmark_error,
            before.0,
            before.1,
            after.map_or("-".into(), |a| format!("{:.3}, {:.3}", a.0, a.1))
        );
        fired.push(serde_json::json!({
            "face": f, "mtcnn_dlib_faceres": before, "fallback_dlib_faceres": after,
        }));
    }
    println!(
        "\nheld out (tail z {TAIL_Z}), loose faces included: alignment | models: FNMR | glasses | false-match trials"
    );
    let mut fallback = Vec::new();
    for limit in std::iter::once(None).chain(FALLBACK_LIMITS.map(Some)) {
        let rows = fallback_rows(&faces, limit, true);
        for combo in combos {
            let Some(h) = leave_one_identity_out(&rows, combo, TAIL_Z) else {
                continue;
            };
            let label = limit.map_or("MTCNN".to_string(), |l| format!("fallback > {l}"));
            println!(
                "{label} | {}: {}/{} | {}/{} | {}/{}",
                h.models,
                h.false_non_matches,
                h.genuine,
                h.glasses_rejected,
                h.glasses,
                h.false_matches,
                h.impostor_trials
            );
            let moved = faces
                .faces
                .iter()
                .filter(|f| f.family == "plain")
                .filter(|f| !std::ptr::eq(f.embedding_at(limit), &f.embedding))
                .count();
            fallback
                .push(serde_json::json!({"limit": limit, "held_out": h, "templates_moved": moved}));
        }
    }
    println!("\nmissing faces (no box where the face is):");
    for m in &faces.missing {
        println!("{} {} {}", m.identity, m.family, m.variant);
    }
    write(
        &cli.common.out.join("enrolment.json"),
        &(serde_json::to_string_pretty(&serde_json::json!({
            "seed": opts.seed,
            "glasses_per_style": opts.glasses_per_style,
            "tail_z": TAIL_Z,
            "multi_template": multi,
            "fallback": fallback,
            "fallback_faces": fired,
            "missing": faces.missing,
            "offset": faces.offset,
            "faces": faces.faces,
        }))? + "\n"),
    )
}

/// Loads the second-opinion models found in `dir` with the pipeline's session options.
fn load_second_models(dir: &Path, cfg: &VisionConfig) -> anyhow::Result<SecondModels> {
    let rt = ort_runtime(cfg.runtime.ort_library.as_deref())?;
    let options = SessionOptions {
        intra_threads: cfg.runtime.intra_threads,
        sessions: 1,
    };
    let mut m = SecondModels::default();
    let present = |spec: ModelSpec| {
        let ok = dir.join(spec.file).is_file();
        if !ok {
            eprintln!(
                "second opinion: {} not in {}, skipped",
                spec.file,
                dir.display()
            );
        }
        ok
    };
    if present(MOBILEFACENET) {
        m.mobilefacenet = Some(SecondEmbedder::load(
            rt,
            dir,
            SecondModel::Mobilefacenet,
            true,
            options,
        )?);
    }
    if present(FACERES) {
        m.faceres = Some(SecondEmbedder::load(
            rt,
            dir,
            SecondModel::Faceres,
            true,
            options,
        )?);
    }
    if present(HUMAN_LIVENESS) {
        m.human_liveness = Some(HumanLiveness::load(rt, dir, true, options)?);
    }
    Ok(m)
}

/// Per-model median, 90th percentile and count of the recorded per-face times, as JSON.
fn latency_summary(lat: &Latencies) -> anyhow::Result<String> {
    let mut out = serde_json::Map::new();
    for (model, values) in lat {
        let mut v = values.clone();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            v.get(((v.len() as f64 - 1.0) * p).round() as usize)
                .copied()
        };
        out.insert(
            model.clone(),
            serde_json::json!({"n": v.len(), "p50_ms": q(0.5), "p90_ms": q(0.9)}),
        );
    }
    Ok(serde_json::to_string_pretty(&out)?)
}

/// Example images of `photo`: its last degradation chain and the first print and replay of each
/// of its identities.
fn write_examples(
    dir: &Path,
    photo: &str,
    srcs: &[Source],
    identities: &[Identity],
    opts: &CollectOptions,
) -> anyhow::Result<()> {
    let Some(si) = srcs.iter().position(|s| s.name == photo) else {
        bail!("--examples: no photo named {photo:?} among the sources");
    };
    let src = &srcs[si];
    let members: Vec<&Identity> = identities.iter().filter(|i| i.source == si).collect();
    let Some(chains) = degradation_plan(src, si, identities, opts) else {
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stem = photo.rsplit_once('.').map_or(photo, |(s, _)| s);
    for (style, t, _) in glasses_variants(src, si, identities, opts)?
        .into_iter()
        .step_by(opts.glasses_per_style.max(1))
    {
        // A PNG crop around the faces: small, and viewable without a JPEG decoder.
        let (w, h) = t.image.dimensions();
        let faces = members
            .iter()
            .map(|i| facekey_eval::collect::face_region(&i.face))
            .reduce(|a, b| a.union(&b));
        let crop = match faces.map(|r| r.grown(0.4)) {
            Some(r) => {
                let x0 = r.x0.max(0.0) as u32;
                let y0 = r.y0.max(0.0) as u32;
                let x1 = (r.x1.min(f64::from(w)) as u32).max(x0 + 1);
                let y1 = (r.y1.min(f64::from(h)) as u32).max(y0 + 1);
                image::imageops::crop_imm(&t.image, x0, y0, x1 - x0, y1 - y0).to_image()
            }
            None => t.image.clone(),
        };
        let path = dir.join(format!("{stem}_{style}.png"));
        crop.save(&path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for ident in members {
        if let Some(chain) = chains.last() {
            let t = apply_chain(&src.image, chain)?;
            save_jpeg(&dir.join(format!("{}_genuine.jpg", ident.name)), &t.image)?;
        }
        for kind in [Kind::AttackPrint, Kind::AttackReplay] {
            let (t, _) = attack_frame(&src.image, ident, kind, 0, opts)?;
            save_jpeg(&dir.join(format!("{}_{kind}.jpg", ident.name)), &t.image)?;
        }
    }
    Ok(())
}

fn save_jpeg(path: &Path, img: &image::RgbImage) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85)
        .encode_image(img)
        .with_context(|| format!("encoding {}", path.display()))?;
    write_bytes(path, &bytes)
}

fn write_bytes(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Today's UTC date as `YYYY-MM-DD` (civil-from-days, Howard Hinnant's algorithm).
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn run_fit(common: &Common, args: &FitArgs) -> anyhow::Result<()> {
    let path = common.out.join("features.csv");
    let mut rows = read_csv(&path)?;
    // Fit on the liveness feature the runtime will feed under the chosen mode.
    let mode = common.liveness_mode();
    for r in &mut rows {
        r.liveness = liveness_feature(r, mode);
    }
    let opts = FitOptions {
        seed: args.seed,
        epochs: args.epochs,
        learning_rate: args.learning_rate,
        l2: args.l2,
        restarts: args.restarts,
        validation_fraction: args.validation_fraction,
        monotone: !args.unconstrained,
    };
    let report = fit(&rows, &opts)?;
    let date = today();
    let summary = FitSummary::new(&report, &date);
    let tc = &report.train_counts;
    let description = format!(
        "Fitted by `facekey-eval fit` on {date} on runtime/eval/results/features.csv: features the \
         runtime's own pipeline produced on data SIMULATED from the {n_id} faces of the sample \
         photos (genuine = a face vs degraded copies of its own photo; impostor = different \
         faces; attacks = software print and screen-replay simulations, not real attacks). \
         Label 1 = genuine or original bona fide, 0 = impostor or attack. Liveness feature: \
         {live_mode} ({liveness_env}); other liveness modes change the input \
         distribution. Split by identity (seed {seed}): {n_train} training identities, held out \
         {held}; training rows {tr} (genuine {g}, original {b}, impostor {i}, print {p}, replay \
         {r}), validation rows {vr}, cross-split impostor rows excluded {ex}. Loss: binary \
         cross-entropy with group weights (genuine+original 1/2, impostor 1/4, print 1/8, \
         replay 1/8) plus L2 {l2} on w1..w3; full-batch Adam, step {lr}, {epochs} steps, {mono}, \
         best of {restarts} seeded restarts by training objective. Balanced BCE: training {tl:.4}, \
         validation {vl}; ROC AUC training {ta}, validation {va}. Threshold {thr:.4}: minimax \
         of FRR and impostor/print/replay FAR on the training rows. See docs/evaluation.md.",
        live_mode = mode.describe(),
        n_id = report.train_identities.len() + report.validation_identities.len(),
        seed = opts.seed,
        n_train = report.train_identities.len(),
        held = report
            .validation_identities
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(" "),
        tr = tc.total(),
        g = tc.genuine,
        b = tc.bona_fide,
        i = tc.impostor,
        p = tc.attack_print,
        r = tc.attack_replay,
        vr = report.validation_counts.total(),
        ex = report.excluded,
        l2 = opts.l2,
        lr = opts.learning_rate,
        epochs = opts.epochs,
        restarts = opts.restarts,
        mono = if opts.monotone {
            "weights kept non-negative (the probability never falls when a feature rises)"
        } else {
            "unconstrained weights"
        },
        tl = report.train_loss,
        vl = report
            .validation_loss
            .map_or("n/a".into(), |v| format!("{v:.4}")),
        ta = report.train_auc.map_or("n/a".into(), |v| format!("{v:.3}")),
        va = report
            .validation_auc
            .map_or("n/a".into(), |v| format!("{v:.3}")),
        thr = report.threshold,
        liveness_env = facekey_settings::env::LIVENESS,
    );
    let weights = weights_file(&report, "trained", &description);
    // The file must load the way the runtime loads it.
    FusionMlp::from_weights(weights.clone(), "fitted weights")?;
    let text = weights.to_json();
    if let Some(dir) = args.output.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write(&args.output, &text)?;
    write(&common.out.join("fit.json"), &(summary.to_json()? + "\n"))?;
    FusionMlp::from_path(&args.output)?;
    eprintln!(
        "wrote {} (threshold {:.4}; training AUC {}, validation AUC {}; validation errors \
         [FRR, FAR impostor, FAR print, FAR replay] {:?})",
        args.output.display(),
        report.threshold,
        report.train_auc.map_or("n/a".into(), |v| format!("{v:.3}")),
        report
            .validation_auc
            .map_or("n/a".into(), |v| format!("{v:.3}")),
        report.validation_errors
    );
    Ok(())
}

fn write_report(common: &Common) -> anyhow::Result<()> {
    let rows = read_csv(&common.out.join("features.csv"))?;
    let mut specs = common.weights.clone();
    if specs.is_empty() {
        specs.push(defaults::WEIGHTS.into());
        let trained = Path::new(MANIFEST_DIR).join("../weights/trained.json");
        if trained.is_file() {
            specs.push(trained.display().to_string());
        }
    }
    let config = common.verifier_config();
    let verifiers = specs
        .iter()
        .map(|s| {
            let source = WeightsSource::parse(s).map_err(anyhow::Error::msg)?;
            Ok(Verifier::new(FusionMlp::load(&source)?, config))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dataset = read_dataset_log(&common.out.join("dataset.json"))?;
    let fit = read_fit_summary(&common.out.join("fit.json"))?;
    let input = ReportInput {
        rows: &rows,
        dataset: dataset.as_ref(),
        fit: fit.as_ref(),
        verifiers: &verifiers,
        config,
        liveness_mode: common.liveness_mode(),
    };
    let mut md = render(&input);
    let latency: Option<serde_json::Value> =
        std::fs::read_to_string(common.out.join("latency.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
    let (second_md, second) = render_second_opinions(&rows, dataset.as_ref(), latency.as_ref());
    md.push_str(&second_md);
    write(
        &common.out.join("second_opinion.json"),
        &(serde_json::to_string_pretty(&second)? + "\n"),
    )?;
    let source = format!(
        "facekey-eval report on runtime/eval/results/features.csv{}: data SIMULATED from the \
         sample photos (see docs/evaluation.md); rates and quantiles of the recorded rows as the \
         runtime's verifier decides them",
        dataset
            .as_ref()
            .map_or(String::new(), |d| format!(" (seed {})", d.seed))
    );
    let baseline_path = common.out.join("baseline.json");
    write(&baseline_path, &baseline(&input, &source).to_json())?;
    eprintln!("wrote {}", baseline_path.display());
    let path = common.out.join("report.md");
    write(&path, &md)?;
    print!("{md}");
    eprintln!("wrote {}", path.display());
    Ok(())
}
