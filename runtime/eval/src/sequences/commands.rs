//! The `facekey-eval sequences` and `facekey-eval challenge` commands (file I/O and printing;
//! the logic lives in the sibling modules).

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use facekey_runtime::challenge::{
    Action, ActionResult, ChallengePolicy, FailReason, Fingerprint, Outcome, closest_pair,
};
use facekey_runtime::vision::landmarks::ChallengeModels;
use facekey_runtime::vision::{Vision, VisionConfig};
use serde::{Deserialize, Serialize};

use super::calibrate::{
    Count, PoseMargin, Rates, actions_alone, choose, for_action_sweep, frame_differences, grid,
    pose_margins, rates, replay_duplicated, replay_other_challenge, with_overrides,
};
use super::observe::{ObservedClip, Skipped, observe, subjects};
use super::session_match::{SessionMatchReport, session_matches};
use super::{Manifest, ManifestEntry, SequenceKind, Subject, generate, random_challenge, y4m};
use crate::EvalError;
use crate::collect::Source;
use crate::rng::Rng;

/// The 13-action order that contains every ordered choice of 2 or 3 distinct actions as a
/// subsequence (found by exhaustive search). A looping clip of it used to satisfy any
/// challenge; the runtime now fails the actions a challenge leaves out (`unrequested_action`), so
/// such a clip is the recording an attacker would make, and passes only what it starts with.
pub const EVERY_CHALLENGE: [Action; 13] = {
    use Action::*;
    [
        Blink, TurnLeft, TurnRight, LookUp, OpenMouth, Blink, TurnLeft, TurnRight, LookUp, Blink,
        TurnLeft, TurnRight, OpenMouth,
    ]
};

/// Whether a recording performing `order` once passes `challenge` when the checker sees every
/// action it performs: each awaited action found in turn, with no action the challenge leaves
/// out (blinks aside) before the last one. Such a draw is no attack for an `every_action` clip:
/// the recording does perform that challenge.
pub fn performs_unasked_nothing(order: &[Action], challenge: &[Action]) -> bool {
    let mut next = 0;
    for &a in order {
        if challenge.get(next) == Some(&a) {
            next += 1;
            if next == challenge.len() {
                return true;
            }
        } else if a != Action::Blink && !challenge.contains(&a) {
            return false;
        }
    }
    false
}

/// Where the sample photos are and how clips are framed.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Directory of the sample photos.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/faces"))]
    pub faces_dir: PathBuf,
    /// Photos to take faces from (derived copies of the same photos are left out).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "astronaut.png,messi5.jpg,t1.jpg,Tom_Hanks_54745.png"
    )]
    pub photos: Vec<String>,
    /// Frame size, WIDTHxHEIGHT (even sides).
    #[arg(long, default_value = "640x480", value_parser = parse_size)]
    pub frame: (u32, u32),
    /// Faces with a shorter box side in their photo are not used.
    #[arg(long, default_value_t = 24.0)]
    pub min_face_px: f32,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 20_261_203)]
    pub seed: u64,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| format!("{s:?} is not WIDTHxHEIGHT"))?;
    let w: u32 = w.parse().map_err(|e| format!("width {w:?}: {e}"))?;
    let h: u32 = h.parse().map_err(|e| format!("height {h:?}: {e}"))?;
    if w < 64 || h < 64 || w % 2 == 1 || h % 2 == 1 {
        return Err(format!("{s}: sides must be even and at least 64"));
    }
    Ok((w, h))
}

fn parse_kind(s: &str) -> Result<SequenceKind, String> {
    SequenceKind::parse(s)
        .filter(|k| {
            matches!(
                k,
                SequenceKind::Genuine | SequenceKind::StaticPhoto | SequenceKind::FlatPrint
            )
        })
        .ok_or_else(|| format!("{s:?} is not a rendered kind (genuine, static_photo, flat_print)"))
}

fn parse_actions(s: &str) -> Result<Action, String> {
    Action::parse(s).ok_or_else(|| {
        format!("unknown action {s:?} (blink, turn_left, turn_right, look_up, open_mouth)")
    })
}

/// `facekey-eval sequences`.
#[derive(Debug, Clone, Args)]
pub struct SequencesArgs {
    /// Photos, framing and seed.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Clips per kind (genuine, static_photo, flat_print) and face.
    #[arg(long, default_value_t = 1)]
    pub per_face: usize,
    /// Only these faces (names as printed, e.g. astronaut, t1-3); default every face.
    #[arg(long, value_delimiter = ',')]
    pub faces: Vec<String>,
    /// Kinds to write (genuine, static_photo, flat_print).
    #[arg(long, value_delimiter = ',', default_value = "genuine,static_photo,flat_print", value_parser = parse_kind)]
    pub kinds: Vec<SequenceKind>,
    /// Frames per second of the JPEG clips (default: 10–15, drawn per clip).
    #[arg(long)]
    pub fps: Option<f64>,
    /// Write one genuine clip of the first face (see --y4m-copies) as a y4m for Chromium's fake
    /// camera instead of JPEG clips.
    #[arg(long, value_name = "FILE")]
    pub y4m: Option<PathBuf>,
    /// The challenge every clip performs (or fakes); default: a random one per clip, and for
    /// the y4m an order holding every possible challenge ([`EVERY_CHALLENGE`], which the
    /// runtime fails: give the challenge to perform).
    #[arg(long, value_delimiter = ',', value_parser = parse_actions)]
    pub actions: Vec<Action>,
    /// Frame rate of the y4m clip; every frame is rendered anew (no repeats: the checker
    /// fails near-duplicate frames).
    #[arg(long, default_value_t = 15)]
    pub y4m_fps: u32,
    /// Times the y4m performs its actions, one after the other, each copy rendered with its own
    /// randomness (amplitudes, timing, camera, noise), so no two frames of the file are alike.
    /// Chromium loops the file: a session shorter than the whole file never sees a frame twice
    /// (an exact repeat fails it as duplicate_frames). With the default order and 2 copies the
    /// file holds any challenge from wherever it is when a session opens (each completes within
    /// 17 consecutive actions of the looping order, of the file's 26), which the runtime now
    /// fails as `unrequested_action`; the UI test performs one challenge ending with a blink
    /// (`--actions open_mouth,blink`) 14 times instead. A thread renders each copy.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub y4m_copies: u32,
}

/// `facekey-eval challenge`.
#[derive(Debug, Clone, Args)]
pub struct ChallengeArgs {
    /// Photos, framing and seed.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Genuine clips per face (each a random 2–3-action challenge).
    #[arg(long, default_value_t = 4)]
    pub genuine_per_face: usize,
    /// Static-photo, flat-print and every-action clips per face.
    #[arg(long, default_value_t = 2)]
    pub attacks_per_face: usize,
    /// Faces held out of the threshold sweep (reported apart); default: every third face.
    #[arg(long, value_delimiter = ',')]
    pub held_out: Vec<String>,
    /// Leave blinks out of the challenges of faces whose open eyes `fr_eye` reads as closed
    /// (the lab's behaviour before the landmark blink); default: every face may draw a blink.
    #[arg(long)]
    pub skip_unreadable_blinks: bool,
    /// Judge the observations cached by an earlier run (its `<out>/observations.json`) instead
    /// of rendering and observing the clips again (seconds instead of minutes; the source,
    /// seed and clip counts of that run apply, these arguments' are ignored).
    #[arg(long, value_name = "FILE")]
    pub observations: Option<PathBuf>,
    /// Also judge every clip under the shipped policy with these thresholds changed
    /// (`FIELD=VALUE`, field names as in `challenge.json`'s `shipped_policy`, comma-separated)
    /// and list the clips whose verdict or actions differ.
    #[arg(long, value_delimiter = ',', value_name = "FIELD=VALUE", value_parser = parse_override)]
    pub compare: Vec<(String, f64)>,
}

fn parse_override(s: &str) -> Result<(String, f64), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected FIELD=VALUE, got {s}"))?;
    let v: f64 = v
        .trim()
        .parse()
        .map_err(|_| format!("{k}: not a number: {v}"))?;
    if !v.is_finite() {
        return Err(format!("{k}: not a finite number: {v}"));
    }
    Ok((k.trim().to_string(), v))
}

/// What rendering and observing the clips produced, the minutes-long part of
/// `facekey-eval challenge`: written to `<out>/observations.json` and read back with
/// `--observations` to re-judge the same frames under a changed checker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Observations {
    /// Seed the clips were rendered from.
    pub seed: u64,
    /// The faces in order, each with `fr_eye`'s mean open probability on its neutral frame.
    pub faces: Vec<(String, f32)>,
    /// Faces left out, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Frames rendered.
    pub frames: usize,
    /// Seconds rendering and observing took.
    pub seconds: f64,
    /// The rendered clips (genuine, static_photo, flat_print), observed.
    pub clips: Vec<ObservedClip>,
    /// Per genuine clip id: the fingerprints of its frames re-encoded at JPEG 70 (what a
    /// replaying client sends again).
    pub reencoded: Vec<(String, Vec<Fingerprint>)>,
}

fn load_models() -> Result<(Vision, ChallengeModels), anyhow::Error> {
    let cfg = VisionConfig::default();
    let vision = Vision::load(cfg.clone())
        .map_err(|e| anyhow::anyhow!("loading the vision pipeline: {e}"))?;
    let models = ChallengeModels::load(&cfg)
        .map_err(|e| anyhow::anyhow!("loading the challenge models: {e}"))?;
    Ok((vision, models))
}

fn load_sources(args: &SourceArgs, vision: &Vision) -> Result<Vec<Source>, anyhow::Error> {
    args.photos
        .iter()
        .map(|name| {
            let path = args.faces_dir.join(name);
            let bytes = std::fs::read(&path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            let image = vision
                .decode(&bytes)
                .map_err(|e| anyhow::anyhow!("decoding {}: {e}", path.display()))?;
            Ok(Source {
                name: name.clone(),
                image,
            })
        })
        .collect()
}

fn load_subjects(
    args: &SourceArgs,
) -> Result<(Vision, ChallengeModels, Vec<Subject>, Vec<Skipped>), anyhow::Error> {
    let (vision, models) = load_models()?;
    let sources = load_sources(args, &vision)?;
    let (w, h) = args.frame;
    let (subs, skipped) = subjects(
        &vision,
        &models,
        &sources,
        w,
        h,
        args.min_face_px,
        args.seed,
    )?;
    for s in &skipped {
        eprintln!("skipped {}: {}", s.face, s.reason);
    }
    eprintln!(
        "faces: {}",
        subs.iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok((vision, models, subs, skipped))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), EvalError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| EvalError::Io {
            action: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, bytes).map_err(|source| EvalError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    })
}

fn fps_of(rng: &mut Rng) -> f64 {
    rng.uniform(10.0, 15.0)
}

/// Runs `facekey-eval sequences`: JPEG clips and `manifest.json` under `out`, or one y4m.
pub fn run_sequences(args: &SequencesArgs, out: &Path) -> anyhow::Result<()> {
    let (_vision, _models, mut subs, _) = load_subjects(&args.source)?;
    if !args.faces.is_empty() {
        subs.retain(|s| args.faces.contains(&s.name));
    }
    if subs.is_empty() {
        anyhow::bail!("no face to animate (check --faces and --photos)");
    }
    let seed = args.source.seed;
    if let Some(path) = &args.y4m {
        let actions = if args.actions.is_empty() {
            EVERY_CHALLENGE.to_vec()
        } else {
            args.actions.clone()
        };
        let subject = &subs[0];
        let fps = f64::from(args.y4m_fps.max(1));
        // About one second per action at the y4m's frame rate (a brisk clip is ~0.6 s at 12 fps).
        let slow = fps / 12.0 * 1.6;
        let (images, copy_starts) =
            render_copies(subject, &actions, args.y4m_copies as usize, fps, slow, seed)?;
        let closest = closest_frames(&images)?;
        let bound = ChallengePolicy::default().duplicate_max_difference;
        if let Some((d, a, b)) = closest
            && d <= bound
        {
            anyhow::bail!(
                "frames {a} and {b} of the y4m are near-duplicates (fingerprint difference {d:.3} <= {bound}): a session seeing both fails"
            );
        }
        let frames: Vec<(&image::RgbImage, usize)> = images.iter().map(|i| (i, 1)).collect();
        let mut buf = Vec::new();
        y4m::write(&mut buf, &frames, args.y4m_fps).map_err(|source| EvalError::Io {
            action: "encoding y4m",
            path: path.clone(),
            source,
        })?;
        write_file(path, &buf)?;
        eprintln!(
            "{}: {} frames of {} at {} fps ({:.1} s), {} cop{} (from frames {}) of actions {}; closest two frames differ by {}",
            path.display(),
            images.len(),
            subject.name,
            args.y4m_fps,
            images.len() as f64 / fps,
            copy_starts.len(),
            if copy_starts.len() == 1 { "y" } else { "ies" },
            copy_starts
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            actions_str(&actions),
            closest.map_or("-".to_string(), |(d, a, b)| format!(
                "{d:.3} (frames {a} and {b}; near-duplicates at <= {bound})"
            ))
        );
        return Ok(());
    }
    let mut manifest = Manifest {
        seed,
        frame: args.source.frame,
        sequences: Vec::new(),
    };
    for s in &subs {
        for k in 0..args.per_face {
            for &kind in &args.kinds {
                let mut rng = Rng::derive(seed, &format!("clip/{kind}/{}/{k}", s.name));
                let challenge = if args.actions.is_empty() {
                    random_challenge(&mut rng)
                } else {
                    args.actions.clone()
                };
                let fps = args.fps.unwrap_or_else(|| fps_of(&mut rng));
                let seq = generate(s, kind, &challenge, k, fps, 1.0, seed)?;
                let dir = seq.id.clone();
                for (i, f) in seq.frames.iter().enumerate() {
                    write_file(&out.join(&dir).join(format!("{i:03}.jpg")), &f.jpeg)?;
                }
                manifest.sequences.push(ManifestEntry::of(&seq, &dir));
                eprintln!("{}: {} frames", seq.id, seq.frames.len());
            }
        }
    }
    let json = serde_json::to_string_pretty(&manifest).map_err(|source| EvalError::Json {
        context: "manifest".into(),
        source,
    })?;
    write_file(&out.join("manifest.json"), (json + "\n").as_bytes())?;
    eprintln!(
        "{} clips, manifest {}",
        manifest.sequences.len(),
        out.join("manifest.json").display()
    );
    Ok(())
}

/// Per-kind and per-action rates as printed and recorded.
#[derive(Debug, Clone, Serialize)]
struct RatesRecord {
    by_kind: Vec<(String, usize, usize)>,
    genuine_actions: Vec<(String, usize, usize)>,
    genuine_failures: Vec<(String, usize)>,
    attack_failures: Vec<(String, usize)>,
}

impl From<&Rates> for RatesRecord {
    fn from(r: &Rates) -> Self {
        let counts = |m: &std::collections::BTreeMap<&'static str, Count>| {
            m.iter()
                .map(|(k, c)| (k.to_string(), c.passed, c.total))
                .collect()
        };
        Self {
            by_kind: counts(&r.by_kind),
            genuine_actions: counts(&r.genuine_actions),
            genuine_failures: r
                .genuine_failures
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            attack_failures: r
                .attack_failures
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        }
    }
}

/// `challenge.json`.
#[derive(Debug, Clone, Serialize)]
struct ChallengeRecord {
    seed: u64,
    faces: Vec<String>,
    held_out: Vec<String>,
    skipped: Vec<(String, String)>,
    clips: usize,
    frames: usize,
    seconds: f64,
    shipped_policy: ChallengePolicy,
    shipped_all: RatesRecord,
    /// The shipped policy with the landmark blink off (`eye_lid_closed_ratio` 0): the blink
    /// rule before it, `fr_eye` alone.
    fr_eye_only_all: RatesRecord,
    /// Per face: `fr_eye` on its neutral frame, and genuine blinks seen (fr_eye only, shipped).
    blink_by_face: Vec<BlinkByFace>,
    /// The landmark-blink sweep: `[closed_ratio, open_ratio, min_drop]`, genuine clips passed
    /// and attack clips passed, over every clip.
    blink_sweep: Vec<([f32; 3], usize, usize)>,
    proposed_policy: Option<ChallengePolicy>,
    proposed_train: Option<RatesRecord>,
    proposed_held_out: Option<RatesRecord>,
    proposed_all: Option<RatesRecord>,
    /// Per genuine clip with a blink: what the two blink signals read on the rendered blink.
    blink_evidence: Vec<BlinkEvidence>,
    /// Per genuine clip: the shipped policy's verdict.
    genuine_clips: Vec<ClipResult>,
    /// Per attack clip (static_photo, flat_print and both replays): the shipped policy's
    /// verdict, so an attack that passes shows which action was seen where.
    attack_clips: Vec<ClipResult>,
    signals: Vec<SignalRange>,
    /// Per action of the genuine challenges, judged alone under the shipped policy (seen
    /// during its own performance, whether or not the actions before it were seen): `(action,
    /// seen, total)`.
    genuine_actions_alone: Vec<(String, usize, usize)>,
    /// Per turn and look-up seen under the shipped policy (every kind but the duplicated
    /// replays, which fail on their frames): how far its thresholds can rise before it is lost.
    pose_margins: Vec<PoseMargin>,
    /// The shipped policy with `--compare`'s thresholds changed, when given.
    compared: Option<Compared>,
    /// Per kind: each clip's smallest fingerprint difference between two of its frames.
    frame_differences: std::collections::BTreeMap<&'static str, Vec<f32>>,
    /// Passed genuine sessions matched as verify matches them, against their own face's and
    /// the other faces' templates, without and with the action frames.
    session_match: SessionMatchReport,
}

/// Every clip judged under a changed policy (`--compare`).
#[derive(Debug, Clone, Serialize)]
struct Compared {
    /// The changed thresholds.
    overrides: Vec<(String, f64)>,
    policy: ChallengePolicy,
    all: RatesRecord,
    /// The clips whose outcome or actions differ from the shipped policy's verdict.
    changed: Vec<ClipChange>,
}

/// One clip's verdict under the shipped and the compared policy.
#[derive(Debug, Clone, Serialize)]
struct ClipChange {
    id: String,
    kind: SequenceKind,
    challenge: Vec<Action>,
    shipped: Outcome,
    compared: Outcome,
    /// Per action: the completing frame under the shipped and the compared policy.
    at_frames: Vec<(Action, Option<usize>, Option<usize>)>,
}

/// One clip's verdict under a policy.
#[derive(Debug, Clone, Serialize)]
struct ClipResult {
    id: String,
    kind: SequenceKind,
    /// The challenge it was judged against.
    challenge: Vec<Action>,
    outcome: Outcome,
    reasons: Vec<FailReason>,
    /// Per action: seen in order, and the frame that completed it.
    actions: Vec<ActionResult>,
    frames: usize,
}

impl ClipResult {
    fn of(clip: &ObservedClip, p: &ChallengePolicy) -> Self {
        let v = super::calibrate::judge(clip, p);
        Self {
            id: clip.id.clone(),
            kind: clip.kind,
            challenge: clip.challenge.clone(),
            outcome: v.outcome,
            reasons: v.reasons,
            actions: v.actions,
            frames: clip.frames.len(),
        }
    }
}

/// The two blink signals on a genuine clip's rendered blink: `fr_eye` and the landmark eye
/// opening over the session's open baseline (as the checker computes it), at the open start
/// and at the most closed frame of the blink (the frames the script marks as blinking).
#[derive(Debug, Clone, Serialize)]
struct BlinkEvidence {
    id: String,
    /// Median landmark eye opening of the first `eye_baseline_frames` usable frames.
    lid_baseline: Option<f32>,
    /// Median `fr_eye` open probability of the same frames.
    fr_eye_baseline: Option<f32>,
    /// Smallest lid ratio (opening over baseline) among the blinking frames.
    closed_lid_ratio: Option<f32>,
    /// Smallest `fr_eye` open probability among the blinking frames.
    closed_fr_eye: Option<f32>,
    /// Blinking frames with a usable face.
    blinking_frames: usize,
}

impl BlinkEvidence {
    fn of(clip: &ObservedClip, p: &ChallengePolicy) -> Option<Self> {
        use facekey_runtime::challenge::signals::eye_opening;
        if clip.kind != SequenceKind::Genuine || !clip.challenge.contains(&Action::Blink) {
            return None;
        }
        let median = |mut v: Vec<f32>| {
            v.sort_by(f32::total_cmp);
            (!v.is_empty()).then(|| v[v.len() / 2])
        };
        let usable: Vec<_> = clip
            .frames
            .iter()
            .filter_map(|f| f.face.as_ref().filter(|face| face.embedding.is_some()))
            .take(p.eye_baseline_frames.max(1))
            .collect();
        let lid_baseline = median(
            usable
                .iter()
                .filter_map(|f| eye_opening(&f.landmarks))
                .collect(),
        );
        let fr_eye_baseline = median(
            usable
                .iter()
                .filter_map(|f| f.eyes.map(|e| e.mean_open()))
                .collect(),
        );
        let blinking: Vec<_> = clip
            .frames
            .iter()
            .zip(&clip.performing)
            .filter(|(_, a)| **a == Some(Action::Blink))
            .filter_map(|(f, _)| f.face.as_ref())
            .collect();
        let lowest = |v: Vec<f32>| v.into_iter().reduce(f32::min);
        Some(Self {
            id: clip.id.clone(),
            lid_baseline,
            fr_eye_baseline,
            closed_lid_ratio: lid_baseline.and_then(|b| {
                lowest(
                    blinking
                        .iter()
                        .filter_map(|f| eye_opening(&f.landmarks).map(|o| o / b))
                        .collect(),
                )
            }),
            closed_fr_eye: lowest(
                blinking
                    .iter()
                    .filter_map(|f| f.eyes.map(|e| e.mean_open()))
                    .collect(),
            ),
            blinking_frames: blinking.len(),
        })
    }
}

/// Blinks of one face's genuine clips.
#[derive(Debug, Clone, Serialize)]
struct BlinkByFace {
    face: String,
    fr_eye_open: f32,
    /// Genuine clips of this face whose challenge holds a blink.
    clips: usize,
    /// Blinks seen with `fr_eye` alone.
    fr_eye_only: usize,
    /// Blinks seen with the shipped policy (landmark blink on).
    shipped: usize,
}

/// Whether the blink of `clip`'s challenge was seen in order under `p`.
fn blink_seen(clip: &ObservedClip, p: &ChallengePolicy) -> bool {
    let v = super::calibrate::judge(clip, p);
    v.actions
        .iter()
        .any(|a| a.action == Action::Blink && a.passed)
}

/// Range of a per-frame signal over one kind of clip, to show the margins.
#[derive(Debug, Clone, Serialize)]
struct SignalRange {
    kind: String,
    signal: String,
    min: f32,
    max: f32,
}

fn print_rates(title: &str, r: &Rates) {
    println!("{title}");
    for (k, c) in &r.by_kind {
        println!(
            "  {k:<24} passed {:>3}/{:<3} ({:5.1} %)",
            c.passed,
            c.total,
            100.0 * c.rate()
        );
    }
    for (a, c) in &r.genuine_actions {
        println!(
            "  genuine action {a:<12} seen {:>3}/{:<3} ({:5.1} %)",
            c.passed,
            c.total,
            100.0 * c.rate()
        );
    }
    if !r.genuine_failures.is_empty() {
        println!("  genuine failures: {:?}", r.genuine_failures);
    }
    if !r.attack_failures.is_empty() {
        println!("  attack failures: {:?}", r.attack_failures);
    }
}

fn signal_ranges(clips: &[ObservedClip]) -> Vec<SignalRange> {
    use facekey_runtime::challenge::signals::{eye_opening, mouth_opening, pitch, yaw};
    let mut out = Vec::new();
    for kind in [
        SequenceKind::Genuine,
        SequenceKind::StaticPhoto,
        SequenceKind::FlatPrint,
    ] {
        let faces: Vec<_> = clips
            .iter()
            .filter(|c| c.kind == kind)
            .flat_map(|c| c.frames.iter())
            .filter_map(|f| f.face.as_ref())
            .collect();
        let mut push = |name: &str, v: Vec<f32>| {
            if let (Some(min), Some(max)) = (
                v.iter().copied().reduce(f32::min),
                v.iter().copied().reduce(f32::max),
            ) {
                out.push(SignalRange {
                    kind: kind.as_str().into(),
                    signal: name.into(),
                    min,
                    max,
                });
            }
        };
        push(
            "yaw",
            faces.iter().filter_map(|f| yaw(&f.landmarks)).collect(),
        );
        push(
            "pitch",
            faces.iter().filter_map(|f| pitch(&f.landmarks)).collect(),
        );
        push(
            "mouth_opening",
            faces
                .iter()
                .filter_map(|f| mouth_opening(&f.landmarks))
                .collect(),
        );
        push(
            "eye_opening",
            faces
                .iter()
                .filter_map(|f| eye_opening(&f.landmarks))
                .collect(),
        );
        push(
            "eyes_open",
            faces
                .iter()
                .filter_map(|f| f.eyes.map(|e| e.mean_open()))
                .collect(),
        );
    }
    out
}

/// Renders every clip of `args` and observes its frames with the runtime's models.
fn render_and_observe(args: &ChallengeArgs) -> anyhow::Result<Observations> {
    let started = Instant::now();
    let (vision, models, subs, skipped) = load_subjects(&args.source)?;
    let seed = args.source.seed;
    let base_ms = 1_000_000u64;
    let mut clips: Vec<ObservedClip> = Vec::new();
    let mut reencoded: Vec<(String, Vec<Fingerprint>)> = Vec::new();
    let mut frames = 0usize;
    for s in &subs {
        let plan = std::iter::repeat_n(SequenceKind::Genuine, args.genuine_per_face)
            .enumerate()
            .chain(
                std::iter::repeat_n(SequenceKind::StaticPhoto, args.attacks_per_face).enumerate(),
            )
            .chain(std::iter::repeat_n(SequenceKind::FlatPrint, args.attacks_per_face).enumerate())
            .chain(
                std::iter::repeat_n(SequenceKind::EveryAction, args.attacks_per_face).enumerate(),
            );
        for (k, kind) in plan {
            let mut rng = Rng::derive(seed, &format!("clip/{kind}/{}/{k}", s.name));
            // Cover every action: clip k of a face starts from action (face index + k) mod 5.
            let mut challenge = random_challenge(&mut rng);
            let lead = Action::ALL[(k + s.name.len()) % Action::ALL.len()];
            if !challenge.contains(&lead) {
                challenge[0] = lead;
            }
            // fr_eye reads this face's open eyes as closed: no blink can show, leave it out
            // (counted in the report as `blink_unreadable`).
            if args.skip_unreadable_blinks
                && s.eyes_open < ChallengePolicy::default().eye_open_min
                && let Some(i) = challenge.iter().position(|&a| a == Action::Blink)
            {
                challenge[i] = Action::ALL
                    .into_iter()
                    .find(|a| !challenge.contains(a))
                    .unwrap_or(Action::TurnLeft);
            }
            // A recording of every action is rendered performing them all and judged against
            // the challenge drawn for it, redrawn while the recording does perform it.
            let performed = if kind == SequenceKind::EveryAction {
                while performs_unasked_nothing(&EVERY_CHALLENGE, &challenge) {
                    challenge = random_challenge(&mut rng);
                }
                EVERY_CHALLENGE.to_vec()
            } else {
                challenge.clone()
            };
            let seq = generate(s, kind, &performed, k, fps_of(&mut rng), 1.0, seed)?;
            frames += seq.frames.len();
            let mut clip = observe(&vision, &models, &seq, base_ms)?;
            clip.challenge = challenge.clone();
            if kind == SequenceKind::Genuine {
                // What a replaying client sends again: each frame re-encoded at JPEG 70.
                let copies = seq
                    .frames
                    .iter()
                    .map(|f| {
                        let img = image::load_from_memory(&f.jpeg)
                            .map_err(|source| EvalError::Image {
                                context: format!("decoding a frame of {}", seq.id),
                                source,
                            })?
                            .to_rgb8();
                        let again = crate::imageops::jpeg_roundtrip(&img, 70)?;
                        Fingerprint::of(&again)
                            .ok_or_else(|| EvalError::Data("an empty frame".into()))
                    })
                    .collect::<Result<Vec<_>, EvalError>>()?;
                reencoded.push((clip.id.clone(), copies));
            }
            eprintln!(
                "  {} ({} frames, {})",
                clip.id,
                clip.frames.len(),
                actions_str(&challenge)
            );
            clips.push(clip);
        }
    }
    Ok(Observations {
        seed,
        faces: subs.iter().map(|s| (s.name.clone(), s.eyes_open)).collect(),
        skipped: skipped
            .iter()
            .map(|s| (s.face.clone(), s.reason.clone()))
            .collect(),
        frames,
        seconds: started.elapsed().as_secs_f64(),
        clips,
        reencoded,
    })
}

/// Renders `copies` genuine clips of `subject` performing `actions`, copy `k` as clip index `k`
/// (so each has its own amplitudes, timing, camera and noise), one thread per copy, and returns
/// their frames one copy after the other with the index where each copy starts.
fn render_copies(
    subject: &Subject,
    actions: &[Action],
    copies: usize,
    fps: f64,
    slow: f64,
    seed: u64,
) -> Result<(Vec<image::RgbImage>, Vec<usize>), EvalError> {
    let rendered: Vec<Result<Vec<image::RgbImage>, EvalError>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..copies)
            .map(|copy| {
                scope.spawn(move || {
                    let seq = generate(
                        subject,
                        SequenceKind::Genuine,
                        actions,
                        copy,
                        fps,
                        slow,
                        seed,
                    )?;
                    seq.frames
                        .iter()
                        .map(|f| {
                            image::load_from_memory_with_format(&f.jpeg, image::ImageFormat::Jpeg)
                                .map(|img| img.to_rgb8())
                                .map_err(|source| EvalError::Image {
                                    context: "decoding a rendered frame".into(),
                                    source,
                                })
                        })
                        .collect()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join().unwrap_or_else(|_| {
                    Err(EvalError::Data(
                        "a thread rendering the y4m panicked".into(),
                    ))
                })
            })
            .collect()
    });
    let mut images = Vec::new();
    let mut starts = Vec::with_capacity(copies);
    for copy in rendered {
        starts.push(images.len());
        images.extend(copy?);
    }
    Ok((images, starts))
}

/// The two most alike frames of `images` by the runtime's near-duplicate fingerprint: their
/// difference and indices (`None` for fewer than two frames).
fn closest_frames(images: &[image::RgbImage]) -> Result<Option<(f32, usize, usize)>, EvalError> {
    let prints = images
        .iter()
        .map(|img| Fingerprint::of(img).ok_or_else(|| EvalError::Data("an empty frame".into())))
        .collect::<Result<Vec<_>, EvalError>>()?;
    Ok(closest_pair(prints.iter().map(Some)))
}

fn actions_str(actions: &[Action]) -> String {
    actions
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `facekey-eval challenge`: renders and observes every clip (or reads the observations
/// of an earlier run), prints pass rates under the shipped policy, sweeps the thresholds on the
/// training faces and writes `challenge.json` (and `observations.json` after rendering).
pub fn run_challenge(args: &ChallengeArgs, out: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let obs = match &args.observations {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            let obs: Observations = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("parsing {}: {e}", path.display()))?;
            eprintln!(
                "observations of {} clips from {} (seed {})",
                obs.clips.len(),
                path.display(),
                obs.seed
            );
            obs
        }
        None => {
            let obs = render_and_observe(args)?;
            let json = serde_json::to_string(&obs).map_err(|source| EvalError::Json {
                context: "observations.json".into(),
                source,
            })?;
            write_file(&out.join("observations.json"), (json + "\n").as_bytes())?;
            obs
        }
    };
    let seed = obs.seed;
    for (name, open) in &obs.faces {
        println!("face {name:<18} fr_eye open {open:.2} on the neutral frame");
    }
    let held_out: Vec<String> = if args.held_out.is_empty() {
        obs.faces
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 == 2)
            .map(|(_, (name, _))| name.clone())
            .collect()
    } else {
        args.held_out.clone()
    };
    let frames = obs.frames;
    let reencoded = &obs.reencoded;
    let mut clips = obs.clips.clone();
    let replays: Vec<ObservedClip> = clips
        .iter()
        .filter(|c| c.kind == SequenceKind::Genuine)
        .flat_map(|c| {
            let copies = reencoded
                .iter()
                .find(|(id, _)| *id == c.id)
                .map(|(_, f)| f.as_slice());
            [replay_duplicated(c, copies), replay_other_challenge(c)]
        })
        .collect();
    clips.extend(replays);
    let shipped = ChallengePolicy::default();
    let all = rates(&clips, &shipped);
    println!(
        "{} clips ({} rendered frames) of {} faces in {:.0} s",
        clips.len(),
        frames,
        obs.faces.len(),
        obs.seconds + started.elapsed().as_secs_f64()
    );
    print_rates("shipped ChallengePolicy::default():", &all);
    let results: Vec<ClipResult> = clips.iter().map(|c| ClipResult::of(c, &shipped)).collect();
    for r in results
        .iter()
        .filter(|r| r.kind.is_attack() && r.outcome == Outcome::Passed)
    {
        println!(
            "  ATTACK PASSED {} against {}: actions at frames {}",
            r.id,
            actions_str(&r.challenge),
            r.actions
                .iter()
                .map(|a| format!(
                    "{} {}",
                    a.action,
                    a.at_frame.map_or("-".to_string(), |f| f.to_string())
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let fr_eye_only = ChallengePolicy {
        eye_lid_closed_ratio: 0.0,
        ..shipped.clone()
    };
    let before = rates(&clips, &fr_eye_only);
    print_rates(
        "the blink by fr_eye alone (eye_lid_closed_ratio 0, the rule before the landmark blink):",
        &before,
    );
    let blink_by_face: Vec<BlinkByFace> = obs
        .faces
        .iter()
        .map(|(name, open)| {
            let mine: Vec<&ObservedClip> = clips
                .iter()
                .filter(|c| {
                    c.kind == SequenceKind::Genuine
                        && c.identity == *name
                        && c.challenge.contains(&Action::Blink)
                })
                .collect();
            BlinkByFace {
                face: name.clone(),
                fr_eye_open: *open,
                clips: mine.len(),
                fr_eye_only: mine.iter().filter(|c| blink_seen(c, &fr_eye_only)).count(),
                shipped: mine.iter().filter(|c| blink_seen(c, &shipped)).count(),
            }
        })
        .collect();
    println!(
        "genuine blinks per face (fr_eye on the neutral frame; seen by fr_eye alone → shipped):"
    );
    for b in &blink_by_face {
        println!(
            "  {:<18} fr_eye {:.2}  {}/{} → {}/{}",
            b.face, b.fr_eye_open, b.fr_eye_only, b.clips, b.shipped, b.clips
        );
    }
    let blink_evidence: Vec<BlinkEvidence> = clips
        .iter()
        .filter_map(|c| BlinkEvidence::of(c, &shipped))
        .collect();
    let f2 = |v: Option<f32>| v.map_or("-".to_string(), |x| format!("{x:.2}"));
    println!(
        "rendered blinks (open baseline of the first frames → most closed blinking frame): fr_eye, lid ratio"
    );
    for b in &blink_evidence {
        println!(
            "  {:<28} fr_eye {} → {}  lids {} (baseline {})",
            b.id,
            f2(b.fr_eye_baseline),
            f2(b.closed_fr_eye),
            f2(b.closed_lid_ratio),
            b.lid_baseline
                .map_or("-".to_string(), |x| format!("{x:.3}")),
        );
    }
    let mut blink_sweep = Vec::new();
    println!(
        "landmark blink sweep (closed ratio, open ratio, fr_eye drop: genuine / attacks passed):"
    );
    for closed in [0.5f32, 0.6, 0.7] {
        for open in [0.8f32, 0.85, 0.9] {
            for drop in [0.1f32, 0.2, 0.3] {
                let p = ChallengePolicy {
                    eye_lid_closed_ratio: closed,
                    eye_lid_open_ratio: open,
                    eye_min_drop: drop,
                    ..shipped.clone()
                };
                let r = rates(&clips, &p);
                let genuine = r
                    .by_kind
                    .get(SequenceKind::Genuine.as_str())
                    .map_or(0, |c| c.passed);
                let attacks: usize = r
                    .by_kind
                    .iter()
                    .filter(|(k, _)| **k != SequenceKind::Genuine.as_str())
                    .map(|(_, c)| c.passed)
                    .sum();
                println!("  {closed:.2} {open:.2} {drop:.2}: {genuine} / {attacks}");
                blink_sweep.push(([closed, open, drop], genuine, attacks));
            }
        }
    }
    let (train, test): (Vec<ObservedClip>, Vec<ObservedClip>) = clips
        .iter()
        .cloned()
        .partition(|c| !held_out.contains(&c.identity));
    let candidates = grid(&shipped);
    let proposed = choose(&for_action_sweep(&train), &candidates);
    let diffs = frame_differences(&clips);
    println!(
        "smallest frame-to-frame fingerprint difference per clip (grey levels; duplicates at <= {}):",
        shipped.duplicate_max_difference
    );
    for (k, v) in &diffs {
        let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
        println!(
            "  {k:<24} n {:>3}  min {:6.3}  10% {:6.3}  median {:6.3}  max {:6.3}",
            v.len(),
            q(0.0),
            q(0.1),
            q(0.5),
            q(1.0)
        );
    }
    match &proposed {
        Some((p, r)) => {
            println!(
                "proposed policy (sweep of {} policies on {} training clips, held out: {}):",
                candidates.len(),
                train.len(),
                held_out.join(", ")
            );
            println!(
                "  eye_open_min {} eye_closed_max {} turn_min_yaw {} turn_min_delta {} look_up_min_delta {} mouth_open_min {} mouth_min_delta {}",
                p.eye_open_min,
                p.eye_closed_max,
                p.turn_min_yaw,
                p.turn_min_delta,
                p.look_up_min_delta,
                p.mouth_open_min,
                p.mouth_min_delta
            );
            print_rates(
                "  training faces (action sweep: no fingerprints, no duplicated replays):",
                r,
            );
            print_rates("  training faces, every check:", &rates(&train, p));
            print_rates("  held-out faces:", &rates(&test, p));
        }
        None => println!("no swept policy stops every training attack"),
    }
    let alone: Vec<(String, usize, usize)> = actions_alone(&clips, &shipped)
        .iter()
        .map(|(a, c)| (a.to_string(), c.passed, c.total))
        .collect();
    println!(
        "genuine actions judged alone (seen during their own performance or the rest after it, order aside):"
    );
    for (a, seen, total) in &alone {
        println!("  {a:<12} seen {seen:>3}/{total:<3}");
    }
    let margin_clips: Vec<ObservedClip> = clips
        .iter()
        .filter(|c| c.kind != SequenceKind::ReplayDuplicated)
        .cloned()
        .collect();
    let margins = pose_margins(&margin_clips, &shipped, 0.5).map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "pose actions seen under the shipped policy: each threshold's highest value still seeing it (performed there per the script)"
    );
    for m in &margins {
        println!(
            "  {:<44} {:<10} #{} at frame {:>2} (performing {:<10}) {}",
            m.id,
            m.action.as_str(),
            m.index,
            m.at_frame,
            m.performing.map_or("-", Action::as_str),
            m.holds_up_to
                .iter()
                .map(|(f, base, hi)| format!("{f} {base:.3}→{hi:.3}"))
                .collect::<Vec<_>>()
                .join("  ")
        );
    }
    let compared = if args.compare.is_empty() {
        None
    } else {
        let policy = with_overrides(&shipped, &args.compare).map_err(|e| anyhow::anyhow!(e))?;
        let r = rates(&clips, &policy);
        let title = format!(
            "compared: the shipped policy with {}:",
            args.compare
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        print_rates(&title, &r);
        let changed: Vec<ClipChange> = clips
            .iter()
            .zip(&results)
            .filter_map(|(c, before)| {
                let after = ClipResult::of(c, &policy);
                let at_frames: Vec<(Action, Option<usize>, Option<usize>)> = before
                    .actions
                    .iter()
                    .zip(&after.actions)
                    .map(|(b, a)| {
                        (
                            b.action,
                            b.at_frame.filter(|_| b.passed),
                            a.at_frame.filter(|_| a.passed),
                        )
                    })
                    .collect();
                let same =
                    before.outcome == after.outcome && at_frames.iter().all(|(_, b, a)| b == a);
                (!same).then(|| ClipChange {
                    id: c.id.clone(),
                    kind: c.kind,
                    challenge: c.challenge.clone(),
                    shipped: before.outcome,
                    compared: after.outcome,
                    at_frames,
                })
            })
            .collect();
        println!("  clips whose verdict or actions change (action: frame shipped → compared):");
        let frame = |f: Option<usize>| f.map_or("-".to_string(), |f| f.to_string());
        for ch in &changed {
            println!(
                "  {:<44} {:?} → {:?}  {}",
                ch.id,
                ch.shipped,
                ch.compared,
                ch.at_frames
                    .iter()
                    .map(|(a, b, c)| format!("{a}: {} → {}", frame(*b), frame(*c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Some(Compared {
            overrides: args.compare.clone(),
            policy,
            all: RatesRecord::from(&r),
            changed,
        })
    };
    let session_match = session_matches(&clips, &shipped)?;
    let c = &session_match.counts;
    println!(
        "passed genuine sessions verified (template: another clip of the face): genuine {}/{} \
         accepted without the action frames, {}/{} with them; other faces {}/{} and {}/{}",
        c.genuine_accepted_before,
        c.genuine,
        c.genuine_accepted_now,
        c.genuine,
        c.impostor_accepted_before,
        c.impostor,
        c.impostor_accepted_now,
        c.impostor
    );
    let shipped_record = RatesRecord::from(&all);
    let record = ChallengeRecord {
        seed,
        faces: obs.faces.iter().map(|(name, _)| name.clone()).collect(),
        held_out: held_out.clone(),
        skipped: obs.skipped.clone(),
        clips: clips.len(),
        frames,
        seconds: obs.seconds + started.elapsed().as_secs_f64(),
        shipped_policy: shipped.clone(),
        shipped_all: shipped_record,
        fr_eye_only_all: RatesRecord::from(&before),
        blink_by_face,
        blink_sweep,
        proposed_train: proposed
            .as_ref()
            .map(|(p, _)| RatesRecord::from(&rates(&train, p))),
        proposed_held_out: proposed
            .as_ref()
            .map(|(p, _)| RatesRecord::from(&rates(&test, p))),
        proposed_all: proposed
            .as_ref()
            .map(|(p, _)| RatesRecord::from(&rates(&clips, p))),
        proposed_policy: proposed.map(|(p, _)| p),
        blink_evidence,
        genuine_clips: results
            .iter()
            .filter(|r| !r.kind.is_attack())
            .cloned()
            .collect(),
        attack_clips: results
            .iter()
            .filter(|r| r.kind.is_attack())
            .cloned()
            .collect(),
        signals: signal_ranges(&clips),
        genuine_actions_alone: alone,
        pose_margins: margins,
        compared,
        frame_differences: diffs,
        session_match,
    };
    for s in &record.signals {
        println!(
            "  signal {:<14} {:<13} {:7.3} .. {:7.3}",
            s.kind, s.signal, s.min, s.max
        );
    }
    let json = serde_json::to_string_pretty(&record).map_err(|source| EvalError::Json {
        context: "challenge.json".into(),
        source,
    })?;
    write_file(&out.join("challenge.json"), (json + "\n").as_bytes())?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use facekey_runtime::challenge::session::every_challenge;

    fn grey(level: u8) -> image::RgbImage {
        image::RgbImage::from_fn(64, 48, |x, _| image::Rgb([level.wrapping_add(x as u8); 3]))
    }

    /// Actions of the looping order, from its action `start` on, until `challenge` has been
    /// performed in order (each action found at its next occurrence, as the checker finds them).
    fn actions_until_done(challenge: &[Action], start: usize) -> usize {
        let n = EVERY_CHALLENGE.len();
        let mut at = start;
        for a in challenge {
            while EVERY_CHALLENGE[at % n] != *a {
                at += 1;
            }
            at += 1;
        }
        at - start
    }

    /// The order passes exactly the challenges it starts with (every action seen): 4 of 80,
    /// which the lab never draws for an `every_action` clip.
    #[test]
    fn the_every_action_order_performs_four_challenges_unasked_nothing() {
        use Action::{Blink, LookUp, TurnLeft, TurnRight};
        let passed: Vec<Vec<Action>> = every_challenge()
            .into_iter()
            .filter(|c| performs_unasked_nothing(&EVERY_CHALLENGE, c))
            .collect();
        assert_eq!(
            passed,
            vec![
                vec![Blink, TurnLeft],
                vec![Blink, TurnLeft, TurnRight],
                vec![TurnLeft, TurnRight],
                vec![TurnLeft, TurnRight, LookUp],
            ]
        );
        // Out of turn, the challenge's own actions are skipped, not failed.
        assert!(performs_unasked_nothing(
            &[TurnRight, TurnLeft, TurnRight],
            &[TurnLeft, TurnRight]
        ));
        assert!(!performs_unasked_nothing(&[LookUp, TurnLeft], &[TurnLeft]));
    }

    #[test]
    fn every_challenge_is_done_within_17_actions_of_the_looping_order() {
        let challenges = every_challenge();
        assert_eq!(challenges.len(), 20 + 60);
        // From the order's first action, each challenge is a subsequence of one copy.
        for c in &challenges {
            assert!(actions_until_done(c, 0) <= EVERY_CHALLENGE.len(), "{c:?}");
        }
        // From any action of the looping y4m, at most 17 actions: what its sessions must span
        // (tests/ui/run.sh), besides the action under way when they open.
        let longest = (0..EVERY_CHALLENGE.len())
            .flat_map(|start| challenges.iter().map(move |c| actions_until_done(c, start)))
            .max();
        assert_eq!(longest, Some(17));
    }

    #[test]
    fn closest_frames_finds_a_repeat_anywhere_in_the_clip() {
        let frames = [grey(10), grey(60), grey(11), grey(60), grey(200)];
        assert_eq!(closest_frames(&frames).unwrap(), Some((0.0, 1, 3)));
        let distinct = [grey(10), grey(60), grey(12)];
        let (d, a, b) = closest_frames(&distinct).unwrap().unwrap();
        assert_eq!((d, a, b), (2.0, 0, 2));
        assert_eq!(closest_frames(&[grey(1)]).unwrap(), None);
    }
}
