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

use image::RgbImage;

use facekey_runtime::vision::detect::Detection;
use facekey_runtime::vision::{AnalyzeOptions, Embedding, FaceAnalysis, LivenessMode, Vision};

use super::EvalError;
use super::attacks::{
    PrintParams, ReplayParams, face_crop_region, simulate_print, simulate_replay,
};
use super::degrade::{Degradation, Region, Transformed, apply_chain, chain_label, plan};
use super::features::{FeatureRow, Kind};
use super::geometry::Homography;
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
}

struct Presentation {
    id: String,
    kind: Kind,
    identity: usize,
    variant: String,
    analysis: FaceAnalysis,
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

/// Runs the pipeline over every source photo, its degraded copies and its simulated attacks.
/// `vision` must run both liveness models. `progress` receives one line per processed image.
pub fn collect(
    vision: &Vision,
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
            });
            presentations.push(Presentation {
                id: format!("bona_fide/{name}/original"),
                kind: Kind::BonaFide,
                identity: out.identities.len() - 1,
                variant: "original".into(),
                analysis,
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
            let found = acquire(vision, &t, &members, &out.identities)
                .map_err(vision_err(format!("{} {label}", src.name)))?;
            for (&m, analysis) in members.iter().zip(found) {
                let name = &out.identities[m].name;
                let id = format!("genuine/{name}/{ci:02}");
                match analysis {
                    Some(a) => presentations.push(Presentation {
                        id,
                        kind: Kind::Genuine,
                        identity: m,
                        variant: label.clone(),
                        analysis: a,
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
    }

    // 3. Simulated attacks.
    for (m, ident) in out.identities.clone().iter().enumerate() {
        let src = &sources[ident.source];
        for kind in [Kind::AttackPrint, Kind::AttackReplay] {
            for k in 0..opts.attacks_per_kind {
                let (t, variant) = attack_frame(&src.image, ident, kind, k, opts)?;
                out.attack_frames += 1;
                let id = format!("{kind}/{}/{k:02}", ident.name);
                let found = acquire(vision, &t, &[m], &out.identities)
                    .map_err(vision_err(format!("{id} {variant}")))?;
                match found.into_iter().next().flatten() {
                    Some(a) => presentations.push(Presentation {
                        id,
                        kind,
                        identity: m,
                        variant,
                        analysis: a,
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
    t: &Transformed,
    wanted: &[usize],
    identities: &[Identity],
) -> Result<Vec<Option<FaceAnalysis>>, facekey_runtime::vision::VisionError> {
    let (dets, _) = vision.detect(&t.image)?;
    let mut out = Vec::with_capacity(wanted.len());
    for &m in wanted {
        let hit = expected_landmarks(&identities[m].face, &t.map)
            .and_then(|e| find_face(&dets, &e))
            .map(|i| dets[i]);
        out.push(match hit {
            Some(face) => Some(vision.analyze_face(&t.image, face, AnalyzeOptions::FULL)?),
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
    };
    r.liveness = liveness_feature(&r, opts.liveness_mode);
    r
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
