//! Runs the real vision pipeline over the simulated data set and records one
//! [`FeatureRow`] per comparison.
//!
//! 1. Enrolment: every face of every source photo (short side at least `min_face_px`) is an
//!    identity; its embedding in the original photo is the template. A face closer than
//!    `duplicate_distance` to an earlier identity is the same photo again and is skipped.
//! 2. Bona fide presentations: the originals, and degraded copies of each source photo
//!    ([`super::degrade::plan`]); in each copy every identity's face is looked up where the
//!    transform's map puts its landmarks.
//! 3. Attack presentations: per identity, simulated prints and replays of the region around its
//!    face ([`super::attacks`]), each in its own frame.
//! 4. Rows: each bona fide presentation against its own template (`genuine`, or `bona_fide` for
//!    the originals) and against every other identity's template (`impostor`); each attack
//!    against its own identity's template.

use std::collections::BTreeMap;

use image::RgbImage;

use facekey_runtime::vision::detect::Detection;
use facekey_runtime::vision::second_opinion::{
    HumanLiveness, SecondEmbedder, SecondOpinionError, cosine,
};
use facekey_runtime::vision::{AnalyzeOptions, Embedding, FaceAnalysis, LivenessMode, Vision};

use super::EvalError;
use super::attacks::{
    PrintParams, ReplayParams, face_crop_region, simulate_print, simulate_replay,
};
use super::degrade::{Degradation, Region, Transformed, apply_chain, chain_label, plan};
use super::features::{FeatureRow, Kind};
use super::geometry::Homography;
use super::glasses::{GlassesParams, Style, draw_glasses};
use super::metrics::liveness_feature;
use super::report::PresentationRecord;
use super::rng::Rng;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CollectOptions {
    /// Seed of every random choice.
    pub seed: u64,
    /// Single degradations per kind and source photo.
    pub variants_per_kind: usize,
    /// Chains of 2–3 degradations per source photo.
    pub combos: usize,
    /// Simulated attacks per attack type and identity.
    pub attacks_per_kind: usize,
    /// Attack frame size (width, height).
    pub frame: (u32, u32),
    /// Side of the printed/shown region relative to the face box.
    pub crop_scale: f64,
    /// Faces with a shorter box side are not enrolled.
    pub min_face_px: f32,
    /// A face closer than this to an earlier identity is a duplicate photo.
    pub duplicate_distance: f32,
    /// Liveness mode of the recorded `liveness` column.
    pub liveness_mode: LivenessMode,
    /// Glasses variants per style and source photo (the first plain, the next with a tone
    /// change, then with JPEG, in turn).
    pub glasses_per_style: usize,
}

impl Default for CollectOptions {
    fn default() -> Self {
        Self {
            seed: 20_251_127,
            variants_per_kind: 2,
            combos: 4,
            attacks_per_kind: 8,
            frame: (640, 480),
            crop_scale: 2.6,
            min_face_px: 20.0,
            duplicate_distance: 0.3,
            liveness_mode: LivenessMode::default(),
            glasses_per_style: 3,
        }
    }
}

/// A source photo.
#[derive(Debug, Clone)]
pub struct Source {
    /// File name.
    pub name: String,
    /// Decoded, upright pixels.
    pub image: RgbImage,
}

/// An enrolled identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Name, e.g. `t1-3` or `astronaut`.
    pub name: String,
    /// Index into the sources.
    pub source: usize,
    /// The face in the original photo.
    pub face: Detection,
    /// The template.
    pub template: Embedding,
    /// The second-opinion templates (when those models ran).
    pub second: SecondProbe,
}

/// The second-opinion models the evaluation runs beside the pipeline (each optional).
#[derive(Debug, Default)]
pub struct SecondModels {
    /// MobileFaceNet.
    pub mobilefacenet: Option<SecondEmbedder>,
    /// faceres-deep.
    pub faceres: Option<SecondEmbedder>,
    /// human_liveness.
    pub human_liveness: Option<HumanLiveness>,
}

/// What the second-opinion models made of one face.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecondProbe {
    /// MobileFaceNet embedding (L2-normalised).
    pub mobilefacenet: Option<Vec<f32>>,
    /// faceres-deep embedding (L2-normalised).
    pub faceres: Option<Vec<f32>>,
    /// human_liveness live probability.
    pub human_live: Option<f32>,
}

/// Per-face times (milliseconds) of the matching and liveness stages, by model: `dlib` (align +
/// embed), `mobilefacenet` and `faceres` (align + preprocessing + inference), `minifas` and
/// `human_liveness` (inference).
pub type Latencies = BTreeMap<String, Vec<f64>>;

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the second-opinion models on the analysed face, recording their times.
fn second_probe(
    models: &SecondModels,
    img: &RgbImage,
    a: &FaceAnalysis,
    lat: &mut Latencies,
) -> Result<SecondProbe, SecondOpinionError> {
    let mut out = SecondProbe::default();
    lat.entry("dlib".into())
        .or_default()
        .push(ms(a.timings.align + a.timings.embed));
    if let Some(m) = a.inference.minifas {
        lat.entry("minifas".into()).or_default().push(ms(m));
    }
    if let Some(e) = &models.mobilefacenet {
        let (v, _, total) = e.embed(img, &a.face.landmarks)?;
        lat.entry("mobilefacenet".into())
            .or_default()
            .push(ms(total));
        out.mobilefacenet = Some(v);
    }
    if let Some(e) = &models.faceres {
        let (v, _, total) = e.embed(img, &a.face.landmarks)?;
        lat.entry("faceres".into()).or_default().push(ms(total));
        out.faceres = Some(v);
    }
    if let Some(h) = &models.human_liveness {
        let (p, took) = h.check(img, &a.face.bbox)?;
        lat.entry("human_liveness".into())
            .or_default()
            .push(ms(took));
        out.human_live = Some(p);
    }
    Ok(out)
}

/// A presentation the pipeline could not use.
#[derive(Debug, Clone, PartialEq)]
pub struct Unacquired {
    /// Presentation id.
    pub presentation: String,
    /// What it would have been.
    pub kind: Kind,
    /// Whose face it holds.
    pub identity: String,
    /// Transform or attack parameters.
    pub variant: String,
    /// Why.
    pub reason: String,
}

/// A face of a source photo that did not become an identity.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedFace {
    /// Source photo.
    pub source: String,
    /// The detection.
    pub face: Detection,
    /// Why.
    pub reason: String,
}

/// The outcome of [`collect`].
#[derive(Debug, Clone, Default)]
pub struct Collected {
    /// One row per comparison.
    pub rows: Vec<FeatureRow>,
    /// Enrolled identities.
    pub identities: Vec<Identity>,
    /// Presentations without a usable face (failures to acquire).
    pub unacquired: Vec<Unacquired>,
    /// Faces not enrolled.
    pub skipped: Vec<SkippedFace>,
    /// Degraded images produced.
    pub degraded_images: usize,
    /// Attack frames produced.
    pub attack_frames: usize,
    /// Glasses images produced.
    pub glasses_images: usize,
    /// Per-face stage times by model.
    pub latencies: Latencies,
}

struct Presentation {
    id: String,
    kind: Kind,
    identity: usize,
    variant: String,
    analysis: FaceAnalysis,
    second: SecondProbe,
}

/// A face box as a region.
pub fn face_region(d: &Detection) -> Region {
    Region {
        x0: f64::from(d.bbox.x),
        y0: f64::from(d.bbox.y),
        x1: f64::from(d.bbox.x + d.bbox.width),
        y1: f64::from(d.bbox.y + d.bbox.height),
    }
}

/// The degradation chains of source `si` (index into the sources), planned around the union of
/// its identities' faces grown by 15 % so that every degraded copy keeps them in frame; `None`
/// when no identity comes from that source.
pub fn degradation_plan(
    src: &Source,
    si: usize,
    identities: &[Identity],
    opts: &CollectOptions,
) -> Option<Vec<Vec<Degradation>>> {
    let keep = identities
        .iter()
        .filter(|i| i.source == si)
        .map(|i| face_region(&i.face))
        .reduce(|a, b| a.union(&b))?;
    let (w, h) = src.image.dimensions();
    Some(plan(
        opts.seed,
        &src.name,
        w,
        h,
        keep.grown(0.15),
        opts.variants_per_kind,
        opts.combos,
    ))
}

/// Where `map` sends the five landmarks of `face`.
pub fn expected_landmarks(face: &Detection, map: &Homography) -> Option<[(f64, f64); 5]> {
    let mut out = [(0.0, 0.0); 5];
    for (o, p) in out.iter_mut().zip(face.landmarks.points()) {
        *o = map.apply(f64::from(p.x), f64::from(p.y))?;
    }
    Some(out)
}

/// The detection whose landmarks lie closest to `expected` (mean distance), if that distance is
/// at most 30 % of the expected inter-ocular distance.
pub fn find_face(detections: &[Detection], expected: &[(f64, f64); 5]) -> Option<usize> {
    let eye = (expected[1].0 - expected[0].0).hypot(expected[1].1 - expected[0].1);
    let tolerance = 0.3 * eye.max(4.0);
    detections
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mean = d
                .landmarks
                .points()
                .iter()
                .zip(expected)
                .map(|(p, e)| (f64::from(p.x) - e.0).hypot(f64::from(p.y) - e.1))
                .sum::<f64>()
                / 5.0;
            (i, mean)
        })
        .filter(|(_, m)| *m <= tolerance)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

fn stem(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(s, _)| s)
}

fn vision_err(context: String) -> impl FnOnce(facekey_runtime::vision::VisionError) -> EvalError {
    move |source| EvalError::Vision { context, source }
}

fn second_err(context: String) -> impl FnOnce(SecondOpinionError) -> EvalError {
    move |e| EvalError::Data(format!("{context}: {e}"))
}

/// `img` with a pair of `style` glasses drawn on the face of every identity in `members`, and
/// the parameter label (the first face's parameters; every face gets its own draw).
pub fn with_glasses(
    img: &RgbImage,
    members: &[&Identity],
    style: Style,
    rng: &mut Rng,
) -> (RgbImage, String) {
    let mut out = img.clone();
    let mut label = String::new();
    for m in members {
        let p = GlassesParams::sample(style, rng);
        if label.is_empty() {
            label = p.label();
        }
        let l = &m.face.landmarks;
        draw_glasses(
            &mut out,
            (f64::from(l.left_eye.x), f64::from(l.left_eye.y)),
            (f64::from(l.right_eye.x), f64::from(l.right_eye.y)),
            &p,
        );
    }
    (out, label)
}

/// The glasses variants of source `si`: per style, `opts.glasses_per_style` images, the `k`-th
/// followed by nothing, a tone change or a JPEG re-encoding (`k mod 3`). Each is the image, its
/// label and the map (identity: glasses do not move the face).
pub fn glasses_variants(
    src: &Source,
    si: usize,
    identities: &[Identity],
    opts: &CollectOptions,
) -> Result<Vec<(Style, Transformed, String)>, EvalError> {
    let members: Vec<&Identity> = identities.iter().filter(|i| i.source == si).collect();
    if members.is_empty() {
        return Ok(Vec::new());
    }
    let (w, h) = src.image.dimensions();
    let keep = Region::whole(w, h);
    let mut out = Vec::new();
    for style in Style::ALL {
        for k in 0..opts.glasses_per_style {
            let mut rng = Rng::derive(opts.seed, &format!("glasses/{}/{style}/{k}", src.name));
            let (img, mut label) = with_glasses(&src.image, &members, style, &mut rng);
            let extra = match k % 3 {
                1 => Some(super::degrade::sample(
                    super::degrade::Kind::Tone,
                    &mut rng,
                    w,
                    h,
                    keep,
                )),
                2 => Some(super::degrade::sample(
                    super::degrade::Kind::Jpeg,
                    &mut rng,
                    w,
                    h,
                    keep,
                )),
                _ => None,
            };
            let t = match extra {
                Some(d) => {
                    label = format!("{label}+{d}");
                    apply_chain(&img, &[d])?
                }
                None => Transformed {
                    image: img,
                    map: Homography::IDENTITY,
                },
            };
            out.push((style, t, label));
        }
    }
    Ok(out)
}

/// Runs the pipeline over every source photo, its degraded copies and its simulated attacks.
/// `vision` must run both liveness models. `progress` receives one line per processed image.
pub fn collect(
    vision: &Vision,
    second: &SecondModels,
    sources: &[Source],
    opts: &CollectOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Collected, EvalError> {
    if !vision.config().liveness.mode.uses_dtn() || !vision.config().liveness.mode.uses_minifas() {
        return Err(EvalError::Data(
            "the evaluation needs both liveness models loaded (liveness mode `both`)".into(),
        ));
    }
    let mut out = Collected::default();
    let mut presentations: Vec<Presentation> = Vec::new();

    // 1. Enrolment.
    for (si, src) in sources.iter().enumerate() {
        let (faces, _) = vision
            .detect(&src.image)
            .map_err(vision_err(format!("detecting faces in {}", src.name)))?;
        let mut kept = Vec::new();
        for face in faces {
            let side = face.bbox.width.min(face.bbox.height);
            if side < opts.min_face_px {
                out.skipped.push(SkippedFace {
                    source: src.name.clone(),
                    face,
                    reason: format!("face box short side {side:.0} px < {} px", opts.min_face_px),
                });
                continue;
            }
            let analysis = vision
                .analyze_face(&src.image, face, AnalyzeOptions::FULL)
                .map_err(vision_err(format!("analysing a face of {}", src.name)))?;
            if let Some(dup) = out
                .identities
                .iter()
                .find(|id| id.template.distance(&analysis.embedding) < opts.duplicate_distance)
            {
                out.skipped.push(SkippedFace {
                    source: src.name.clone(),
                    face,
                    reason: format!(
                        "duplicate of {} (distance {:.3})",
                        dup.name,
                        dup.template.distance(&analysis.embedding)
                    ),
                });
                continue;
            }
            kept.push((face, analysis));
        }
        let n = kept.len();
        for (k, (face, analysis)) in kept.into_iter().enumerate() {
            let second_probe = second_probe(second, &src.image, &analysis, &mut out.latencies)
                .map_err(second_err(format!("second opinions on {}", src.name)))?;
            let name = if n == 1 {
                stem(&src.name).to_string()
            } else {
                format!("{}-{}", stem(&src.name), k + 1)
            };
            out.identities.push(Identity {
                name: name.clone(),
                source: si,
                face,
                template: analysis.embedding.clone(),
                second: second_probe.clone(),
            });
            presentations.push(Presentation {
                id: format!("bona_fide/{name}/original"),
                kind: Kind::BonaFide,
                identity: out.identities.len() - 1,
                variant: "original".into(),
                analysis,
                second: second_probe,
            });
        }
        progress(&format!(
            "{}: {} identities enrolled",
            src.name,
            out.identities.iter().filter(|i| i.source == si).count()
        ));
    }

    // 2. Degraded copies.
    for (si, src) in sources.iter().enumerate() {
        let members: Vec<usize> = (0..out.identities.len())
            .filter(|&i| out.identities[i].source == si)
            .collect();
        let Some(chains) = degradation_plan(src, si, &out.identities, opts) else {
            continue;
        };
        for (ci, chain) in chains.iter().enumerate() {
            let label = chain_label(chain);
            let t = apply_chain(&src.image, chain)?;
            out.degraded_images += 1;
            let found = acquire(
                vision,
                second,
                &t,
                &members,
                &out.identities,
                &mut out.latencies,
            )?;
            for (&m, analysis) in members.iter().zip(found) {
                let name = &out.identities[m].name;
                let id = format!("genuine/{name}/{ci:02}");
                match analysis {
                    Some((a, s)) => presentations.push(Presentation {
                        id,
                        kind: Kind::Genuine,
                        identity: m,
                        variant: label.clone(),
                        analysis: a,
                        second: s,
                    }),
                    None => out.unacquired.push(Unacquired {
                        presentation: id,
                        kind: Kind::Genuine,
                        identity: name.clone(),
                        variant: label.clone(),
                        reason: "face not found where the transform put it".into(),
                    }),
                }
            }
            progress(&format!("{} #{ci:02} {label}", src.name));
        }
        // 2b. Glasses.
        for (gi, (style, t, label)) in glasses_variants(src, si, &out.identities, opts)?
            .into_iter()
            .enumerate()
        {
            out.glasses_images += 1;
            let found = acquire(
                vision,
                second,
                &t,
                &members,
                &out.identities,
                &mut out.latencies,
            )?;
            for (&m, analysis) in members.iter().zip(found) {
                let name = &out.identities[m].name;
                let id = format!("genuine/{name}/{style}-{gi:02}");
                match analysis {
                    Some((a, s)) => presentations.push(Presentation {
                        id,
                        kind: Kind::Genuine,
                        identity: m,
                        variant: label.clone(),
                        analysis: a,
                        second: s,
                    }),
                    None => out.unacquired.push(Unacquired {
                        presentation: id,
                        kind: Kind::Genuine,
                        identity: name.clone(),
                        variant: label.clone(),
                        reason: "face not found where the glasses were drawn".into(),
                    }),
                }
            }
            progress(&format!("{} {label}", src.name));
        }
    }

    // 3. Simulated attacks.
    for (m, ident) in out.identities.clone().iter().enumerate() {
        let src = &sources[ident.source];
        for kind in [Kind::AttackPrint, Kind::AttackReplay] {
            for k in 0..opts.attacks_per_kind {
                let (t, variant) = attack_frame(&src.image, ident, kind, k, opts)?;
                out.attack_frames += 1;
                let id = format!("{kind}/{}/{k:02}", ident.name);
                let found = acquire(
                    vision,
                    second,
                    &t,
                    &[m],
                    &out.identities,
                    &mut out.latencies,
                )?;
                match found.into_iter().next().flatten() {
                    Some((a, s)) => presentations.push(Presentation {
                        id,
                        kind,
                        identity: m,
                        variant,
                        analysis: a,
                        second: s,
                    }),
                    None => out.unacquired.push(Unacquired {
                        presentation: id,
                        kind,
                        identity: ident.name.clone(),
                        variant,
                        reason: "face not found in the attack frame".into(),
                    }),
                }
            }
            progress(&format!(
                "{}: {} {kind} frames",
                ident.name, opts.attacks_per_kind
            ));
        }
    }

    // 4. Rows.
    for p in &presentations {
        for (c, claimed) in out.identities.iter().enumerate() {
            let kind = if c == p.identity {
                p.kind
            } else if p.kind.is_attack() {
                continue;
            } else {
                Kind::Impostor
            };
            out.rows.push(row(
                vision,
                p,
                &out.identities,
                sources,
                claimed,
                kind,
                opts,
            ));
        }
    }
    Ok(out)
}

/// The `k`-th simulated attack of `kind` on `identity` (whose photo is `photo`), with its
/// parameter label: the same frame [`collect`] evaluates.
pub fn attack_frame(
    photo: &RgbImage,
    identity: &Identity,
    kind: Kind,
    k: usize,
    opts: &CollectOptions,
) -> Result<(Transformed, String), EvalError> {
    let (w, h) = photo.dimensions();
    let (fw, fh) = opts.frame;
    let region = face_crop_region(face_region(&identity.face), w, h, opts.crop_scale);
    let mut rng = Rng::derive(opts.seed, &format!("{kind}/{}/{k}", identity.name));
    match kind {
        Kind::AttackPrint => {
            let p = PrintParams::sample(&mut rng);
            Ok((simulate_print(photo, region, fw, fh, &p)?, p.label()))
        }
        Kind::AttackReplay => {
            let p = ReplayParams::sample(&mut rng);
            Ok((simulate_replay(photo, region, fw, fh, &p)?, p.label()))
        }
        other => Err(EvalError::Data(format!("{other} is not an attack kind"))),
    }
}

impl Collected {
    /// One record per presentation attempt and per face left out of enrolment.
    pub fn presentation_records(&self) -> Vec<PresentationRecord> {
        let mut out: Vec<PresentationRecord> = self
            .skipped
            .iter()
            .enumerate()
            .map(|(i, s)| PresentationRecord {
                presentation: format!("enrolment/{}/{i}", s.source),
                kind: "enrolment".into(),
                identity: String::new(),
                variant: format!(
                    "box {:.0};{:.0} {:.0}x{:.0} conf {:.3}",
                    s.face.bbox.x,
                    s.face.bbox.y,
                    s.face.bbox.width,
                    s.face.bbox.height,
                    s.face.confidence
                ),
                status: "skipped".into(),
                reason: s.reason.clone(),
            })
            .collect();
        out.extend(
            self.rows
                .iter()
                .filter(|r| r.kind != Kind::Impostor)
                .map(|r| PresentationRecord {
                    presentation: r.presentation.clone(),
                    kind: r.kind.to_string(),
                    identity: r.identity.clone(),
                    variant: r.variant.clone(),
                    status: "acquired".into(),
                    reason: String::new(),
                }),
        );
        out.extend(self.unacquired.iter().map(|u| PresentationRecord {
            presentation: u.presentation.clone(),
            kind: u.kind.to_string(),
            identity: u.identity.clone(),
            variant: u.variant.clone(),
            status: "not_found".into(),
            reason: u.reason.clone(),
        }));
        out
    }
}

/// Detects faces in a transformed image and analyses, for each wanted identity, the face found
/// where the map puts its landmarks (`None` where none is).
fn acquire(
    vision: &Vision,
    second: &SecondModels,
    t: &Transformed,
    wanted: &[usize],
    identities: &[Identity],
    lat: &mut Latencies,
) -> Result<Vec<Option<(FaceAnalysis, SecondProbe)>>, EvalError> {
    let (dets, _) = vision
        .detect(&t.image)
        .map_err(vision_err("detecting faces".into()))?;
    let mut out = Vec::with_capacity(wanted.len());
    for &m in wanted {
        let hit = expected_landmarks(&identities[m].face, &t.map)
            .and_then(|e| find_face(&dets, &e))
            .map(|i| dets[i]);
        out.push(match hit {
            Some(face) => {
                let name = &identities[m].name;
                let a = vision
                    .analyze_face(&t.image, face, AnalyzeOptions::FULL)
                    .map_err(vision_err(format!("analysing {name}")))?;
                let s = second_probe(second, &t.image, &a, lat)
                    .map_err(second_err(format!("second opinions on {name}")))?;
                Some((a, s))
            }
            None => None,
        });
    }
    Ok(out)
}

fn row(
    vision: &Vision,
    p: &Presentation,
    identities: &[Identity],
    sources: &[Source],
    claimed: &Identity,
    kind: Kind,
    opts: &CollectOptions,
) -> FeatureRow {
    let a = &p.analysis;
    let score = vision.compare(&a.embedding, &claimed.template);
    let live = a.liveness.as_ref();
    let dtn = live.and_then(|l| l.dtn);
    let minifas = live.and_then(|l| l.minifas);
    let q = a.quality;
    let mut r = FeatureRow {
        sample_id: format!("{}>{}", p.id, claimed.name),
        kind,
        identity: identities[p.identity].name.clone(),
        claimed: claimed.name.clone(),
        source: sources
            .get(identities[p.identity].source)
            .map(|s| s.name.clone())
            .unwrap_or_default(),
        presentation: p.id.clone(),
        variant: p.variant.clone(),
        similarity: f64::from(score.similarity),
        distance: f64::from(score.distance),
        liveness: 0.0,
        dtn_live: dtn.map_or(0.0, |d| f64::from(d.live_score)),
        dtn_spoof: dtn.map_or(0.0, |d| f64::from(d.spoof_score)),
        minifas_live: minifas.map_or(0.0, |m| f64::from(m.live_score)),
        quality: q.map_or(0.0, |q| f64::from(q.score)),
        quality_size: q.map_or(0.0, |q| f64::from(q.size)),
        quality_sharpness: q.map_or(0.0, |q| f64::from(q.sharpness)),
        quality_pose: q.map_or(0.0, |q| f64::from(q.pose)),
        quality_exposure: q.map_or(0.0, |q| f64::from(q.exposure)),
        face_px: f64::from(a.face.bbox.width.min(a.face.bbox.height)),
        det_confidence: f64::from(a.face.confidence),
        mfn_cosine: pair_cosine(
            p.second.mobilefacenet.as_deref(),
            claimed.second.mobilefacenet.as_deref(),
        ),
        faceres_cosine: pair_cosine(
            p.second.faceres.as_deref(),
            claimed.second.faceres.as_deref(),
        ),
        human_live: p.second.human_live.map_or(f64::NAN, f64::from),
    };
    r.liveness = liveness_feature(&r, opts.liveness_mode);
    r
}

fn pair_cosine(a: Option<&[f32]>, b: Option<&[f32]>) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) => f64::from(cosine(a, b)),
        _ => f64::NAN,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use facekey_runtime::vision::detect::{BoundingBox, Landmarks, Point};

    fn det(x: f32, y: f32) -> Detection {
        let p = |dx: f32, dy: f32| Point {
            x: x + dx,
            y: y + dy,
        };
        Detection {
            bbox: BoundingBox {
                x: x - 10.0,
                y: y - 10.0,
                width: 60.0,
                height: 70.0,
            },
            confidence: 0.99,
            landmarks: Landmarks {
                left_eye: p(10.0, 10.0),
                right_eye: p(30.0, 10.0),
                nose: p(20.0, 22.0),
                mouth_left: p(12.0, 34.0),
                mouth_right: p(28.0, 34.0),
            },
        }
    }

    #[test]
    fn finds_the_face_the_map_points_to() {
        let original = det(100.0, 100.0);
        let map = Homography::translation(-50.0, -20.0).then(&Homography::scale(0.5, 0.5));
        let expected = expected_landmarks(&original, &map).unwrap();
        // The moved face (scaled landmarks) and a neighbour.
        let mut moved = det(25.0, 40.0);
        for p in moved.landmarks.points_mut() {
            p.x = 25.0 + (p.x - 25.0) * 0.5 + 0.7;
            p.y = 40.0 + (p.y - 40.0) * 0.5 - 0.4;
        }
        let neighbour = det(60.0, 40.0);
        assert_eq!(find_face(&[neighbour, moved], &expected), Some(1));
        assert_eq!(find_face(&[neighbour], &expected), None);
        assert_eq!(find_face(&[], &expected), None);
    }

    #[test]
    fn stems_and_regions() {
        assert_eq!(stem("t1.jpg"), "t1");
        assert_eq!(stem("Tom_Hanks_54745.png"), "Tom_Hanks_54745");
        let r = face_region(&det(100.0, 100.0));
        assert_eq!((r.x0, r.y0, r.x1, r.y1), (90.0, 90.0, 150.0, 160.0));
    }
}
