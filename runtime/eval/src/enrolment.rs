//! Enrolment with and without glasses, and a landmark fallback for grossly wrong eye points
//! (issue 13, item 8: `facekey-eval enrolment`).
//!
//! **Several templates.** The runtime lets a subject hold several faces and matches a probe
//! against the closest of them ([`facekey_runtime::verifier::Verifier::judge_templates`]).
//! [`multi_template`] measures what enrolling one glasses copy beside the plain photo does:
//! templates are the plain original, or the original and the first copy of glasses style A (as
//! drawn, or rotated, resampled and toned as if from another photo);
//! genuine probes are the degraded copies and the glasses copies of the *other* styles (never
//! the enrolled image or style); impostor probes are every real presentation of every other
//! identity, against the same template sets, so each extra template is one more chance of a
//! false match and is counted as such.
//!
//! **Landmark fallback.** [`fallback_rows`] re-aligns a face with `fr_landmark`'s eye centres
//! (less the two models' mean offset on the originals) when they disagree with MTCNN's by more
//! than a limit, and scores the result like every other alignment of [`super::eyes`]. Faces
//! the evaluation's acquisition rule rejects because MTCNN's points are too far off, but whose
//! box is where the face is, are kept here (`loose`): the runtime would analyse them.
//!
//! Decisions are held out as in [`super::zfusion`]: the fusion constants and the threshold are
//! fitted on single-template impostor rows of every identity but one and applied to the trials
//! involving that one; the runtime's fixed constants are reported beside them.

use std::collections::BTreeSet;

use serde::Serialize;

use facekey_runtime::vision::detect::Detection;
use facekey_runtime::vision::landmarks::ChallengeModels;
use facekey_runtime::vision::second_opinion::{cosine, fused_match_score};
use facekey_runtime::vision::{AnalyzeOptions, Embedding, Vision};

use super::EvalError;
use super::collect::{
    CollectOptions, Identity, Source, degradation_plan, expected_landmarks, find_face,
    glasses_variants,
};
use super::degrade::{self, Kind as DegradeKind, Region, Transformed, apply_chain, chain_label};
use super::eyes::{
    apply_face_frame_offset, expected_box, eye_centres, eye_error, face_frame_offset, iou,
    mtcnn_eyes, with_eyes,
};
use super::features::{FeatureRow, Kind};
use super::geometry::Homography;
use super::rng::Rng;
use super::zfusion::{MatchModel, fit_match};

/// Eye-point disagreement (worse eye, MTCNN's own inter-ocular distances, after the models'
/// mean offset) above which a face's fallback embedding is computed, so that limits from here
/// up can be compared offline.
pub const FALLBACK_COMPUTED_ABOVE: f64 = 0.2;

/// The disagreement limits [`fallback_rows`] is scored at.
pub const FALLBACK_LIMITS: [f64; 3] = [0.25, 0.3, 0.35];

/// Family prefix of the enrolment-only glasses copies: the first copy of a style, rotated,
/// resampled and toned as if taken in another photo. They are templates only, never probes.
pub const ENROL_PREFIX: &str = "enrol_";

/// Smallest overlap of a detected box with the expected one for a `loose` face.
pub const LOOSE_IOU: f64 = 0.3;

/// One face of one image, embedded as the runtime does and, when the landmark models disagree,
/// re-aligned with fr_landmark's eyes.
#[derive(Debug, Clone, Serialize)]
pub struct Face {
    /// Index of the identity.
    pub identity: usize,
    /// Its name.
    pub name: String,
    /// `plain` (the original), `degraded`, or the glasses style (`glasses_dark`, ...).
    pub family: String,
    /// For glasses: the copy's index within its style (0: glasses only, no further change).
    pub copy: usize,
    /// Variant label.
    pub variant: String,
    /// Found by its box only: MTCNN's points are beyond the evaluation's landmark tolerance.
    pub loose: bool,
    /// Eye-point disagreement of MTCNN and fr_landmark after the mean offset (worse eye,
    /// MTCNN's inter-ocular distances).
    pub disagreement: f64,
    /// The same without removing the mean offset.
    pub raw_disagreement: f64,
    /// MTCNN's eye error against the reference (the original's points mapped into this image).
    pub mtcnn_error: f64,
    /// fr_landmark's (offset removed) against the reference.
    pub landmark_error: f64,
    /// The runtime's embedding (MTCNN's alignment).
    #[serde(skip)]
    pub embedding: Embedding,
    /// The embedding aligned with fr_landmark's eyes, when `disagreement` exceeds
    /// [`FALLBACK_COMPUTED_ABOVE`].
    #[serde(skip)]
    pub fallback: Option<Embedding>,
}

impl Face {
    /// Whether this is a glasses copy (probe).
    pub fn glasses(&self) -> bool {
        self.family.starts_with("glasses_")
    }

    /// Whether this is an enrolment-only copy ([`ENROL_PREFIX`]).
    pub fn enrol_only(&self) -> bool {
        self.family.starts_with(ENROL_PREFIX)
    }

    /// The embedding under a fallback at `limit` (`None`: never).
    pub fn embedding_at(&self, limit: Option<f64>) -> &Embedding {
        match (limit, &self.fallback) {
            (Some(l), Some(f)) if self.disagreement > l => f,
            _ => &self.embedding,
        }
    }
}

/// A face the detector did not find at all where it should be.
#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    /// Identity name.
    pub identity: String,
    /// Family.
    pub family: String,
    /// Variant label.
    pub variant: String,
}

/// Every face of the originals, degraded and glasses copies.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Faces {
    /// Found faces.
    pub faces: Vec<Face>,
    /// Faces with no box where they should be.
    pub missing: Vec<Missing>,
    /// fr_landmark's mean eye offset from MTCNN's on the originals (face frame, per eye).
    pub offset: [[f64; 2]; 2],
}

impl Faces {
    /// The plain original of identity `i`.
    pub fn original(&self, i: usize) -> Option<&Face> {
        self.faces
            .iter()
            .find(|f| f.identity == i && f.family == "plain")
    }
}

fn vision_err(context: String) -> impl FnOnce(facekey_runtime::vision::VisionError) -> EvalError {
    move |source| EvalError::Vision { context, source }
}

/// Detects, embeds and measures every identity's face on its original, degraded copies and
/// glasses copies (the evaluation's own, `opts`).
pub fn collect_faces(
    vision: &Vision,
    models: &ChallengeModels,
    sources: &[Source],
    identities: &[Identity],
    opts: &CollectOptions,
) -> Result<Faces, EvalError> {
    let landmark_eyes = |img: &image::RgbImage, d: &Detection, name: &str| {
        models
            .landmarks(img, &d.bbox)
            .map(|lm| eye_centres(&lm))
            .map_err(|e| EvalError::Data(format!("fr_landmark on {name}: {e}")))
    };
    let mut out = Faces::default();
    for ident in identities {
        let own = landmark_eyes(&sources[ident.source].image, &ident.face, &ident.name)?;
        let o = face_frame_offset(&mtcnn_eyes(&ident.face.landmarks), &own);
        for (acc, eye) in out.offset.iter_mut().zip(o) {
            for (a, v) in acc.iter_mut().zip(eye) {
                *a += v / identities.len() as f64;
            }
        }
    }
    let undo = out.offset.map(|o| o.map(|v| -v));
    for (si, src) in sources.iter().enumerate() {
        let mut images: Vec<(String, usize, String, Transformed)> = vec![(
            "plain".into(),
            0,
            "original".into(),
            Transformed {
                image: src.image.clone(),
                map: Homography::IDENTITY,
            },
        )];
        for chain in degradation_plan(src, si, identities, opts).unwrap_or_default() {
            images.push((
                "degraded".into(),
                0,
                chain_label(&chain),
                apply_chain(&src.image, &chain)?,
            ));
        }
        let (w, h) = src.image.dimensions();
        let keep = Region::whole(w, h);
        for (k, (style, t, label)) in glasses_variants(src, si, identities, opts)?
            .into_iter()
            .enumerate()
        {
            let copy = k % opts.glasses_per_style.max(1);
            if copy == 0 {
                // The same glasses taken as if in another photo: rotated, resampled, toned.
                let mut rng =
                    Rng::derive(opts.seed, &format!("enrol-glasses/{}/{style}", src.name));
                let chain = [DegradeKind::Rotate, DegradeKind::Rescale, DegradeKind::Tone]
                    .map(|kind| degrade::sample(kind, &mut rng, w, h, keep));
                let moved = apply_chain(&t.image, &chain)?;
                images.push((
                    format!("{ENROL_PREFIX}{style}"),
                    0,
                    format!("{label}+{}", chain_label(&chain)),
                    moved,
                ));
            }
            images.push((style.to_string(), copy, label, t));
        }
        for (family, copy, variant, t) in images {
            let (dets, _) = vision.detect(&t.image).map_err(vision_err(format!(
                "detecting faces in {} {variant}",
                src.name
            )))?;
            for (m, ident) in identities
                .iter()
                .enumerate()
                .filter(|(_, i)| i.source == si)
            {
                let Some(expected) = expected_landmarks(&ident.face, &t.map) else {
                    continue;
                };
                let (det, loose) = match find_face(&dets, &expected) {
                    Some(i) => (dets[i], false),
                    None => {
                        let want = expected_box(ident, &expected);
                        let best = dets
                            .iter()
                            .map(|d| (iou(&d.bbox, &want), d))
                            .filter(|(v, _)| *v > LOOSE_IOU)
                            .max_by(|a, b| a.0.total_cmp(&b.0));
                        match best {
                            Some((_, d)) => (*d, true),
                            None => {
                                out.missing.push(Missing {
                                    identity: ident.name.clone(),
                                    family: family.clone(),
                                    variant: variant.clone(),
                                });
                                continue;
                            }
                        }
                    }
                };
                let analyse = |d: Detection| {
                    vision
                        .analyze_face(&t.image, d, AnalyzeOptions::ENROL)
                        .map(|a| a.embedding)
                        .map_err(vision_err(format!("analysing {} {variant}", ident.name)))
                };
                let mtcnn = mtcnn_eyes(&det.landmarks);
                let landmark = landmark_eyes(&t.image, &det, &ident.name)?;
                let corrected = apply_face_frame_offset(&landmark, &undo);
                let own_iod = (mtcnn[1].0 - mtcnn[0].0)
                    .hypot(mtcnn[1].1 - mtcnn[0].1)
                    .max(1.0);
                let reference = [expected[0], expected[1]];
                let ref_iod = (reference[1].0 - reference[0].0)
                    .hypot(reference[1].1 - reference[0].1)
                    .max(1.0);
                let disagreement = eye_error(&mtcnn, &corrected, own_iod);
                let fallback = if disagreement > FALLBACK_COMPUTED_ABOVE {
                    Some(analyse(Detection {
                        landmarks: with_eyes(&det.landmarks, corrected),
                        ..det
                    })?)
                } else {
                    None
                };
                out.faces.push(Face {
                    identity: m,
                    name: ident.name.clone(),
                    family: family.clone(),
                    copy,
                    variant: variant.clone(),
                    loose,
                    disagreement,
                    raw_disagreement: eye_error(&mtcnn, &landmark, own_iod),
                    mtcnn_error: eye_error(&mtcnn, &reference, ref_iod),
                    landmark_error: eye_error(&corrected, &reference, ref_iod),
                    embedding: analyse(det)?,
                    fallback,
                });
            }
        }
    }
    Ok(out)
}

/// The scores of a probe against one template: dlib distance and faceres-deep cosine (NaN
/// without it).
pub fn pair_scores(probe: &Embedding, template: &Embedding) -> (f64, f64) {
    let cos = match (probe.faceres(), template.faceres()) {
        (Some(a), Some(b)) => f64::from(cosine(a, b)),
        _ => f64::NAN,
    };
    (f64::from(probe.distance(template)), cos)
}

/// A comparison row of a probe face against one template (the other features NaN), for the
/// fits of [`super::zfusion`].
pub fn pair_row(
    sample_id: String,
    probe: &Face,
    claimed: &str,
    scores: (f64, f64),
    kind: Kind,
) -> FeatureRow {
    FeatureRow {
        identity: probe.name.clone(),
        claimed: claimed.to_string(),
        variant: probe.variant.clone(),
        distance: scores.0,
        faceres_cosine: scores.1,
        ..FeatureRow::unmeasured(sample_id, kind)
    }
}

/// Every probe face (loose ones when `loose`) against every identity's original, aligned with
/// the fallback at `limit` (templates too: a fallback applies to enrolment as well).
pub fn fallback_rows(faces: &Faces, limit: Option<f64>, loose: bool) -> Vec<FeatureRow> {
    let ids: BTreeSet<usize> = faces.faces.iter().map(|f| f.identity).collect();
    let mut out = Vec::new();
    for (i, p) in faces.faces.iter().enumerate() {
        if (p.loose && !loose) || p.enrol_only() {
            continue;
        }
        for &c in &ids {
            let Some(t) = faces.original(c) else {
                continue;
            };
            let kind = if c == p.identity {
                if p.family == "plain" {
                    continue;
                }
                Kind::Genuine
            } else {
                Kind::Impostor
            };
            let s = pair_scores(p.embedding_at(limit), t.embedding_at(limit));
            out.push(pair_row(format!("{i}>{c}"), p, &t.name, s, kind));
        }
    }
    out
}

/// How a template set is built from the faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrolment {
    /// The plain original only (today's enrolment).
    Plain,
    /// The original and the first copy (glasses only) of one glasses style.
    PlainAndGlasses(&'static str),
    /// The original and that copy rotated, resampled and toned ([`ENROL_PREFIX`]).
    PlainAndMovedGlasses(&'static str),
}

impl Enrolment {
    /// Label (`plain`, `plain+glasses_dark`).
    pub fn label(self) -> String {
        match self {
            Self::Plain => "plain".into(),
            Self::PlainAndGlasses(s) => format!("plain+{s}"),
            Self::PlainAndMovedGlasses(s) => format!("plain+{s}(moved)"),
        }
    }

    /// The faces (indices) enrolled for identity `i`: the original, and the glasses copy when
    /// it was found (by the evaluation's acquisition rule).
    pub fn templates(self, faces: &Faces, i: usize) -> Vec<usize> {
        faces
            .faces
            .iter()
            .enumerate()
            .filter(|(_, f)| f.identity == i && !f.loose)
            .filter(|(_, f)| {
                f.family == "plain"
                    || matches!(self, Self::PlainAndGlasses(s) if f.family == s && f.copy == 0)
                    || matches!(self, Self::PlainAndMovedGlasses(s)
                        if f.family.strip_prefix(ENROL_PREFIX) == Some(s))
            })
            .map(|(k, _)| k)
            .collect()
    }
}

/// The genuine probes of a study where glasses style `style` may be enrolled: the degraded
/// copies and the glasses copies of the other styles (found by the acquisition rule).
pub fn genuine_probe(f: &Face, style: &str) -> bool {
    !f.loose && !f.enrol_only() && f.family != "plain" && f.family != style
}

/// Errors of one enrolment and matcher over the probes of one study.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MultiResult {
    /// Enrolment label.
    pub enrolment: String,
    /// The glasses style kept out of the probes (the one that may be enrolled).
    pub held_style: String,
    /// `dlib` or `dlib+faceres`.
    pub models: String,
    /// `held_out` (constants fitted without the identity) or `runtime` (the server's fixed
    /// thresholds: dlib 0.6, fused score 0.5).
    pub decision: String,
    /// Subjects holding a glasses template.
    pub glasses_templates: usize,
    /// Genuine probes without glasses (degraded copies).
    pub degraded: usize,
    /// Of which rejected.
    pub degraded_rejected: usize,
    /// Genuine probes with glasses of another style.
    pub glasses: usize,
    /// Of which rejected.
    pub glasses_rejected: usize,
    /// Impostor decisions (each probe–subject pair in the folds of both identities when held
    /// out; once with the runtime's constants).
    pub impostor_trials: usize,
    /// Of which accepted.
    pub false_matches: usize,
    /// Impostor decisions whose closest template was the glasses one, accepted.
    pub false_matches_via_glasses: usize,
    /// Largest impostor score: held out, the z-sum above the fold's threshold (positive =
    /// accepted); runtime, the fused score (or dlib similarity margin: 0.6 minus the distance).
    pub worst_impostor_margin: f64,
    /// The rejected glasses probes (`identity variant`; a probe rejected in several folds is
    /// listed once).
    pub rejected_glasses: Vec<String>,
}

/// A decision score of a probe–template pair's (dlib distance, faceres cosine).
type ScoreFn = Box<dyn Fn((f64, f64)) -> f64>;

fn model_scores(models: &[MatchModel], s: (f64, f64)) -> Vec<f64> {
    models
        .iter()
        .map(|m| match m {
            MatchModel::Dlib => -s.0,
            _ => s.1,
        })
        .collect()
}

/// A probe against a template set: the closest template's index and its decision score under
/// `score` (larger = more alike).
fn best(
    faces: &Faces,
    probe: &Face,
    templates: &[usize],
    score: &dyn Fn((f64, f64)) -> f64,
) -> Option<(usize, f64)> {
    templates
        .iter()
        .map(|&t| {
            (
                t,
                score(pair_scores(&probe.embedding, &faces.faces[t].embedding)),
            )
        })
        .filter(|(_, v)| v.is_finite())
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// The multi-template study of glasses style `style` for `enrolment` and `models`, with
/// held-out constants (`tail_z` as in [`super::zfusion::leave_one_identity_out`]) or the
/// runtime's.
pub fn multi_template(
    faces: &Faces,
    enrolment: Enrolment,
    style: &str,
    models: &[MatchModel],
    held_out: bool,
    tail_z: f64,
) -> Option<MultiResult> {
    let ids: BTreeSet<usize> = faces
        .faces
        .iter()
        .filter(|f| !f.loose)
        .map(|f| f.identity)
        .collect();
    let sets: Vec<(usize, Vec<usize>)> = ids
        .iter()
        .map(|&i| (i, enrolment.templates(faces, i)))
        .collect();
    let fused = models.len() > 1;
    let mut out = MultiResult {
        enrolment: enrolment.label(),
        held_style: style.to_string(),
        models: super::zfusion::combo_label(models),
        decision: if held_out { "held_out" } else { "runtime" }.into(),
        glasses_templates: sets.iter().filter(|(_, s)| s.len() > 1).count(),
        worst_impostor_margin: f64::NEG_INFINITY,
        ..MultiResult::default()
    };
    // Single-template impostor rows (probe vs original), the fits' training data.
    let train: Vec<FeatureRow> = if held_out {
        fallback_rows(faces, None, false)
            .into_iter()
            .filter(|r| r.kind == Kind::Impostor)
            .collect()
    } else {
        Vec::new()
    };
    let folds: Vec<Option<usize>> = if held_out {
        ids.iter().map(|&h| Some(h)).collect()
    } else {
        vec![None]
    };
    for h in folds {
        // Decision score and threshold of this fold.
        let (score, threshold): (ScoreFn, f64) = match h {
            Some(h) => {
                let name = &faces.original(h)?.name;
                let rows: Vec<&FeatureRow> = train
                    .iter()
                    .filter(|r| r.identity != *name && r.claimed != *name)
                    .collect();
                let f = fit_match(&rows, models, tail_z)?;
                let m = models.to_vec();
                let t = f.threshold;
                (Box::new(move |s| f.z_sum(&model_scores(&m, s))), t)
            }
            None if fused => (Box::new(|s: (f64, f64)| fused_match_score(s.0, s.1)), 0.5),
            None => (Box::new(|s: (f64, f64)| 0.6 - s.0), 0.0),
        };
        for (c, templates) in &sets {
            for p in faces.faces.iter().filter(|f| !f.loose && !f.enrol_only()) {
                let involved = h.is_none_or(|h| p.identity == h || *c == h);
                if !involved {
                    continue;
                }
                let Some((t, v)) = best(faces, p, templates, &score) else {
                    continue;
                };
                // The runtime accepts at the threshold itself; the held-out fit above it.
                let accept = if h.is_some() {
                    v > threshold
                } else {
                    v >= threshold
                };
                if p.identity == *c {
                    if !genuine_probe(p, style) {
                        continue;
                    }
                    if p.glasses() {
                        out.glasses += 1;
                        out.glasses_rejected += usize::from(!accept);
                        if !accept {
                            out.rejected_glasses
                                .push(format!("{} {}", p.name, p.variant));
                        }
                    } else {
                        out.degraded += 1;
                        out.degraded_rejected += usize::from(!accept);
                    }
                } else {
                    out.impostor_trials += 1;
                    out.false_matches += usize::from(accept);
                    out.false_matches_via_glasses +=
                        usize::from(accept && faces.faces[t].family != "plain");
                    out.worst_impostor_margin = out.worst_impostor_margin.max(v - threshold);
                }
            }
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A face of identity `i` whose dlib embedding is `v` (2-d, zero-padded to 128) and
    /// faceres embedding is `v` too (so the cosine follows the direction).
    fn face(i: usize, family: &str, copy: usize, v: [f32; 2]) -> Face {
        let mut d = vec![0.0f32; 128];
        d[0] = v[0];
        d[1] = v[1];
        let mut r = vec![0.0f32; 1024];
        r[0] = v[0];
        r[1] = v[1];
        r[2] = 0.1;
        Face {
            identity: i,
            name: format!("id{i}"),
            family: family.into(),
            copy,
            variant: family.into(),
            loose: false,
            disagreement: 0.0,
            raw_disagreement: 0.0,
            mtcnn_error: 0.0,
            landmark_error: 0.0,
            embedding: Embedding::new(d).unwrap().with_faceres(r).unwrap(),
            fallback: None,
        }
    }

    /// Four identities spread on a circle; each has an original, two degraded copies near it,
    /// and glasses copies displaced in one shared direction (the "glasses" look), far enough
    /// that the plain template misses them.
    fn data() -> Faces {
        let mut faces = Vec::new();
        for i in 0..4 {
            let a = i as f32 * 1.5;
            let c = [3.0 * a.cos(), 3.0 * a.sin()];
            faces.push(face(i, "plain", 0, c));
            faces.push(face(i, "degraded", 0, [c[0] + 0.05, c[1]]));
            faces.push(face(i, "degraded", 0, [c[0], c[1] - 0.05]));
            for (s, style) in ["glasses_dark", "glasses_thin"].iter().enumerate() {
                for k in 0..2 {
                    let off = 0.9 + 0.02 * (s + k) as f32;
                    faces.push(face(i, style, k, [c[0] + off, c[1] + off]));
                }
            }
        }
        Faces {
            faces,
            ..Faces::default()
        }
    }

    #[test]
    fn a_glasses_template_recovers_glasses_probes_of_another_style() {
        let f = data();
        let plain = multi_template(
            &f,
            Enrolment::Plain,
            "glasses_dark",
            &[MatchModel::Dlib],
            false,
            3.0,
        )
        .unwrap();
        let multi = multi_template(
            &f,
            Enrolment::PlainAndGlasses("glasses_dark"),
            "glasses_dark",
            &[MatchModel::Dlib],
            false,
            3.0,
        )
        .unwrap();
        // Probes: 2 degraded and 2 thin-rim copies per identity; the dark ones are held out.
        assert_eq!((plain.degraded, plain.glasses), (8, 8));
        assert_eq!((multi.degraded, multi.glasses), (8, 8));
        assert_eq!(
            plain.glasses_rejected, 8,
            "1.3 from the original, beyond 0.6"
        );
        assert_eq!(multi.glasses_rejected, 0, "0.03 from the dark copy");
        assert_eq!(multi.glasses_templates, 4);
        // 4 subjects x 3 other identities x 7 probes each.
        assert_eq!(multi.impostor_trials, 4 * 3 * 7);
        assert_eq!(multi.false_matches, 0);
    }

    #[test]
    fn an_extra_template_can_add_false_matches_and_they_are_counted() {
        let mut f = data();
        // Identity 1's dark-glasses copy lands on identity 0's original.
        let c0 = [3.0f32, 0.0];
        let k = f
            .faces
            .iter()
            .position(|x| x.identity == 1 && x.family == "glasses_dark" && x.copy == 0)
            .unwrap();
        f.faces[k] = face(1, "glasses_dark", 0, [c0[0] + 0.1, c0[1]]);
        let plain = multi_template(
            &f,
            Enrolment::Plain,
            "glasses_dark",
            &[MatchModel::Dlib],
            false,
            3.0,
        )
        .unwrap();
        let multi = multi_template(
            &f,
            Enrolment::PlainAndGlasses("glasses_dark"),
            "glasses_dark",
            &[MatchModel::Dlib],
            false,
            3.0,
        )
        .unwrap();
        // Identity 1's dark copy as a probe already matches identity 0's original; enrolled,
        // it also lets identity 0's original and two degraded copies match subject 1.
        assert_eq!(plain.false_matches, 1);
        assert_eq!(plain.false_matches_via_glasses, 0);
        assert_eq!(multi.false_matches, 4);
        assert_eq!(multi.false_matches_via_glasses, 3);
    }

    #[test]
    fn held_out_single_template_counts_each_impostor_pair_in_two_folds() {
        let f = data();
        let models = [MatchModel::Dlib, MatchModel::Faceres];
        let r = multi_template(&f, Enrolment::Plain, "glasses_dark", &models, true, 3.0).unwrap();
        // Every face (7 per identity: the original, 2 degraded, 4 glasses) is an impostor probe
        // against the 3 other subjects, each pair scored in both identities' folds.
        assert_eq!(r.impostor_trials, 2 * 4 * 3 * 7);
        assert_eq!(r.false_matches, 0);
        assert_eq!(r.degraded, 8);
    }

    #[test]
    fn enrolment_only_copies_are_templates_never_probes() {
        let mut f = data();
        let n = f.faces.len();
        for i in 0..4 {
            let a = i as f32 * 1.5;
            let c = [3.0 * a.cos() + 0.91, 3.0 * a.sin() + 0.9];
            f.faces.push(face(i, "enrol_glasses_dark", 0, c));
        }
        let dark = Enrolment::PlainAndMovedGlasses("glasses_dark");
        assert_eq!(dark.templates(&f, 2), vec![2 * 7, n + 2]);
        let r = multi_template(&f, dark, "glasses_dark", &[MatchModel::Dlib], false, 3.0).unwrap();
        assert_eq!((r.degraded, r.glasses, r.glasses_rejected), (8, 8, 0));
        assert_eq!(
            r.impostor_trials,
            4 * 3 * 7,
            "the extra copies are no impostor probes"
        );
        assert_eq!(
            fallback_rows(&f, None, false).len(),
            fallback_rows(&data(), None, false).len()
        );
    }

    #[test]
    fn the_fallback_replaces_only_faces_past_the_limit() {
        let mut f = face(0, "degraded", 0, [1.0, 0.0]);
        f.fallback = Some(face(0, "degraded", 0, [0.0, 1.0]).embedding);
        f.disagreement = 0.31;
        assert_eq!(f.embedding_at(None), &f.embedding);
        assert_eq!(f.embedding_at(Some(0.35)), &f.embedding);
        assert_ne!(f.embedding_at(Some(0.3)), &f.embedding);
    }
}
