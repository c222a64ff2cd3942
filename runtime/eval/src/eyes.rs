//! How far the detector's eye points move when glasses are drawn on a face, against the eye
//! centres of the 68-point `fr_landmark` model (issue 13, item 8: the alignment-refinement
//! measurement, `facekey-eval eyes`).
//!
//! The reference is the MTCNN eye points of the undegraded photo: the glasses are drawn centred
//! on them and the template was aligned with them, so a probe's eye points that land elsewhere
//! misalign the probe against its own template. Every distance is in units of the reference
//! inter-ocular distance.

use image::RgbImage;
use serde::Serialize;

use facekey_runtime::challenge::Landmarks68;
use facekey_runtime::vision::detect::{BoundingBox, Detection, Landmarks};
use facekey_runtime::vision::landmarks::ChallengeModels;
use facekey_runtime::vision::second_opinion::cosine;
use facekey_runtime::vision::{AnalyzeOptions, Embedding, Vision};

use super::EvalError;
use super::collect::{
    CollectOptions, Identity, SecondProbe, Source, degradation_plan, expected_landmarks, find_face,
    glasses_variants,
};
use super::degrade::{Transformed, apply_chain, chain_label};
use super::features::{FeatureRow, Kind};
use super::geometry::Homography;

/// The eye centres (image-left eye first) of 68 landmarks: the mean of each eye's six contour
/// points (iBUG 36–41 and 42–47).
pub fn eye_centres(lm: &Landmarks68) -> [(f64, f64); 2] {
    let centre = |first: usize| {
        let (mut x, mut y) = (0.0, 0.0);
        for i in first..first + 6 {
            let p = lm.at(i);
            x += f64::from(p.x);
            y += f64::from(p.y);
        }
        (x / 6.0, y / 6.0)
    };
    [centre(36), centre(42)]
}

/// The two MTCNN eye points.
pub fn mtcnn_eyes(l: &Landmarks) -> [(f64, f64); 2] {
    [
        (f64::from(l.left_eye.x), f64::from(l.left_eye.y)),
        (f64::from(l.right_eye.x), f64::from(l.right_eye.y)),
    ]
}

fn dist(a: (f64, f64), b: (f64, f64)) -> f64 {
    (a.0 - b.0).hypot(a.1 - b.1)
}

/// The larger of the two eyes' distances between `a` and `b`, divided by `iod`.
pub fn eye_error(a: &[(f64, f64); 2], b: &[(f64, f64); 2], iod: f64) -> f64 {
    dist(a[0], b[0]).max(dist(a[1], b[1])) / iod
}

/// One face of one image.
#[derive(Debug, Clone, Serialize)]
pub struct EyeSample {
    /// Identity.
    pub identity: String,
    /// `plain` (the original), `degraded` (a degradation chain) or the glasses style.
    pub family: String,
    /// Variant label.
    pub variant: String,
    /// Reference inter-ocular distance (pixels, in this image).
    pub iod: f64,
    /// MTCNN eye points vs the reference (worse eye, inter-ocular distances).
    pub mtcnn_vs_ref: f64,
    /// fr_landmark eye centres vs the reference.
    pub landmark_vs_ref: f64,
    /// fr_landmark eye centres vs fr_landmark's on the original, mapped (its own drift).
    pub landmark_vs_own_ref: f64,
    /// MTCNN eye points vs fr_landmark eye centres in this image.
    pub mtcnn_vs_landmark: f64,
    /// Largest move of MTCNN's nose and mouth points vs the reference.
    pub mtcnn_lower_vs_ref: f64,
    /// fr_landmark eye centres minus MTCNN's, in the face frame (x along the eye line, y
    /// down), inter-ocular distances, per eye: the systematic offset between the models.
    pub offset: [[f64; 2]; 2],
    /// The image's MTCNN eye points and fr_landmark eye centres, for re-scoring refinements
    /// offline.
    pub mtcnn: [(f64, f64); 2],
    /// fr_landmark eye centres.
    pub landmark: [(f64, f64); 2],
    /// Reference eye points mapped into this image.
    pub reference: [(f64, f64); 2],
    /// The face re-aligned with each candidate set of five points ([`ALIGNMENTS`]): dlib
    /// distance and faceres-deep cosine (NaN without it) to the identity's template aligned
    /// the same way.
    pub alignments: Vec<AlignmentScore>,
    /// The embeddings under each alignment ([`ALIGNMENTS`] order).
    #[serde(skip)]
    pub embeddings: Vec<Embedding>,
    /// fr_landmark's time on this face (pre-processing and inference), milliseconds.
    pub landmark_ms: f64,
    /// Whether `switch_eyes` used fr_landmark's eyes.
    pub switched: bool,
}

/// The candidate point sets a face is re-aligned with: `detected` (MTCNN's, what the pipeline
/// does), `oracle` (the reference's five points: a perfect landmark model), `oracle_eyes`
/// (reference eyes, MTCNN nose and mouth), `landmark_eyes` (fr_landmark's eye centres less
/// the models' mean offset on the originals), `mean_eyes` (the mean of MTCNN's and those),
/// `switch_eyes` (`landmark_eyes` when they are more than [`SWITCH_DISAGREEMENT`] from
/// MTCNN's, else `detected`).
pub const ALIGNMENTS: [&str; 6] = [
    "detected",
    "oracle",
    "oracle_eyes",
    "landmark_eyes",
    "mean_eyes",
    "switch_eyes",
];

/// The eye-point disagreement (worse eye, in MTCNN's own inter-ocular distances) above which
/// `switch_eyes` aligns with fr_landmark's eyes: above the largest on the nine originals
/// (0.19 after the mean-offset correction), so enrolment templates keep MTCNN's alignment.
pub const SWITCH_DISAGREEMENT: f64 = 0.2;

/// One alignment's scores against the template.
#[derive(Debug, Clone, Serialize)]
pub struct AlignmentScore {
    /// Which point set ([`ALIGNMENTS`]).
    pub alignment: String,
    /// dlib distance.
    pub dlib: f64,
    /// faceres-deep cosine.
    pub faceres: f64,
}

/// Moves `eyes` by `offset` given in the face frame of `eyes`' own line (inverse of
/// [`face_frame_offset`]).
pub fn apply_face_frame_offset(eyes: &[(f64, f64); 2], offset: &[[f64; 2]; 2]) -> [(f64, f64); 2] {
    let (dx, dy) = (eyes[1].0 - eyes[0].0, eyes[1].1 - eyes[0].1);
    let mut out = *eyes;
    for k in 0..2 {
        out[k].0 += offset[k][0] * dx - offset[k][1] * dy;
        out[k].1 += offset[k][0] * dy + offset[k][1] * dx;
    }
    out
}

/// `l` with its two eye points replaced by `eyes` (nose and mouth kept).
pub fn with_eyes(l: &Landmarks, eyes: [(f64, f64); 2]) -> Landmarks {
    let mut out = *l;
    out.left_eye.x = eyes[0].0 as f32;
    out.left_eye.y = eyes[0].1 as f32;
    out.right_eye.x = eyes[1].0 as f32;
    out.right_eye.y = eyes[1].1 as f32;
    out
}

/// `b - a` per eye in the face frame of `a`'s eye line, in units of its length.
pub fn face_frame_offset(a: &[(f64, f64); 2], b: &[(f64, f64); 2]) -> [[f64; 2]; 2] {
    let (dx, dy) = (a[1].0 - a[0].0, a[1].1 - a[0].1);
    let iod2 = dx * dx + dy * dy;
    let mut out = [[0.0; 2]; 2];
    if iod2 <= 0.0 {
        return out;
    }
    for k in 0..2 {
        let (ox, oy) = (b[k].0 - a[k].0, b[k].1 - a[k].1);
        out[k] = [(ox * dx + oy * dy) / iod2, (-ox * dy + oy * dx) / iod2];
    }
    out
}

/// Enrols every face of every source with a short side of at least `min_face_px` (names as
/// [`super::collect::collect`] gives them; no second-opinion templates).
pub fn enrol(
    vision: &Vision,
    sources: &[Source],
    min_face_px: f32,
) -> Result<Vec<Identity>, EvalError> {
    let mut out = Vec::new();
    for (si, src) in sources.iter().enumerate() {
        let (faces, _) = vision.detect(&src.image).map_err(|e| EvalError::Vision {
            context: format!("detecting faces in {}", src.name),
            source: e,
        })?;
        let kept: Vec<Detection> = faces
            .into_iter()
            .filter(|f| f.bbox.width.min(f.bbox.height) >= min_face_px)
            .collect();
        let stem = src
            .name
            .rsplit_once('.')
            .map_or(src.name.as_str(), |(s, _)| s);
        for (k, face) in kept.iter().enumerate() {
            let a = vision
                .analyze_face(&src.image, *face, AnalyzeOptions::ENROL)
                .map_err(|e| EvalError::Vision {
                    context: format!("analysing a face of {}", src.name),
                    source: e,
                })?;
            out.push(Identity {
                name: if kept.len() == 1 {
                    stem.to_string()
                } else {
                    format!("{stem}-{}", k + 1)
                },
                source: si,
                face: *face,
                template: a.embedding,
                second: SecondProbe::default(),
            });
        }
    }
    Ok(out)
}

/// Measures every identity's eye points on its original, its degraded copies and its glasses
/// variants (the evaluation's own, `opts`).
pub fn measure(
    vision: &Vision,
    models: &ChallengeModels,
    sources: &[Source],
    identities: &[Identity],
    opts: &CollectOptions,
) -> Result<Measurement, EvalError> {
    let mut out = Measurement::default();
    // fr_landmark's eye centres on each original: the model's own reference.
    let mut own_ref = Vec::with_capacity(identities.len());
    for ident in identities {
        let lm = models
            .landmarks(&sources[ident.source].image, &ident.face.bbox)
            .map_err(|e| EvalError::Data(format!("fr_landmark on {}: {e}", ident.name)))?;
        own_ref.push(eye_centres(&lm));
    }
    // The models' mean offset (fr_landmark minus MTCNN) on the originals.
    let mut bias = [[0.0; 2]; 2];
    for (ident, own) in identities.iter().zip(&own_ref) {
        let o = face_frame_offset(&mtcnn_eyes(&ident.face.landmarks), own);
        for k in 0..2 {
            for j in 0..2 {
                bias[k][j] += o[k][j] / identities.len().max(1) as f64;
            }
        }
    }
    for (si, src) in sources.iter().enumerate() {
        let mut images: Vec<(String, String, Transformed)> = vec![(
            "plain".into(),
            "original".into(),
            Transformed {
                image: src.image.clone(),
                map: Homography::IDENTITY,
            },
        )];
        if let Some(chains) = degradation_plan(src, si, identities, opts) {
            for chain in chains {
                images.push((
                    "degraded".into(),
                    chain_label(&chain),
                    apply_chain(&src.image, &chain)?,
                ));
            }
        }
        for (style, t, label) in glasses_variants(src, si, identities, opts)? {
            images.push((style.to_string(), label, t));
        }
        for (family, variant, t) in images {
            let (dets, _) = vision.detect(&t.image).map_err(|e| EvalError::Vision {
                context: format!("detecting faces in {} {variant}", src.name),
                source: e,
            })?;
            for (m, ident) in identities
                .iter()
                .enumerate()
                .filter(|(_, i)| i.source == si)
            {
                let Some(expected) = expected_landmarks(&ident.face, &t.map) else {
                    continue;
                };
                let Some(i) = find_face(&dets, &expected) else {
                    out.missed.push(missed(
                        models, &t.image, &dets, ident, &expected, &family, &variant,
                    )?);
                    continue;
                };
                let ctx = SampleContext {
                    vision,
                    models,
                    bias,
                    own: own_ref[m],
                    map: &t.map,
                    family: &family,
                    variant: &variant,
                };
                out.samples
                    .push(sample(&ctx, &t.image, &dets[i], ident, &expected)?);
            }
        }
    }
    score_alignments(&mut out.samples);
    Ok(out)
}

/// Everything [`measure`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Measurement {
    /// Every face found where it should be.
    pub samples: Vec<EyeSample>,
    /// Every face not found there.
    pub missed: Vec<Missed>,
}

/// A face the detector did not find where its landmarks should be.
#[derive(Debug, Clone, Serialize)]
pub struct Missed {
    /// Identity.
    pub identity: String,
    /// Family, as [`EyeSample::family`].
    pub family: String,
    /// Variant label.
    pub variant: String,
    /// Largest intersection-over-union of a detected box with the expected box (the original
    /// box moved by the transform's map of its corners; 0 without detections).
    pub best_iou: f64,
    /// For that box: MTCNN's mean five-point error, inter-ocular distances.
    pub mtcnn_error: Option<f64>,
    /// For that box: the mean five-point error of fr_landmark's points (eye centres less the
    /// models' mean offset, nose tip 30, mouth corners 48 and 54), inter-ocular distances.
    pub landmark_error: Option<f64>,
}

/// Intersection over union of two boxes.
pub fn iou(a: &BoundingBox, b: &BoundingBox) -> f64 {
    let ix = (a.x + a.width).min(b.x + b.width) - a.x.max(b.x);
    let iy = (a.y + a.height).min(b.y + b.height) - a.y.max(b.y);
    if ix <= 0.0 || iy <= 0.0 {
        return 0.0;
    }
    let inter = f64::from(ix * iy);
    inter / (f64::from(a.area()) + f64::from(b.area()) - inter)
}

/// Where `ident`'s face box should be in a copy whose landmarks should be at `expected`: the
/// original's box shifted by the eyes' mean displacement (the glasses and tone/JPEG variants
/// do not move the face; geometric chains move it little).
pub fn expected_box(ident: &Identity, expected: &[(f64, f64); 5]) -> BoundingBox {
    let l = &ident.face.landmarks;
    let (sx, sy) = (
        (expected[0].0 + expected[1].0) / 2.0 - f64::from(l.left_eye.x + l.right_eye.x) / 2.0,
        (expected[0].1 + expected[1].1) / 2.0 - f64::from(l.left_eye.y + l.right_eye.y) / 2.0,
    );
    BoundingBox {
        x: ident.face.bbox.x + sx as f32,
        y: ident.face.bbox.y + sy as f32,
        ..ident.face.bbox
    }
}

fn missed(
    models: &ChallengeModels,
    img: &RgbImage,
    dets: &[Detection],
    ident: &Identity,
    expected: &[(f64, f64); 5],
    family: &str,
    variant: &str,
) -> Result<Missed, EvalError> {
    let want = expected_box(ident, expected);
    let best = dets
        .iter()
        .map(|d| (iou(&d.bbox, &want), d))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let iod = dist(expected[0], expected[1]).max(1.0);
    let mean_err = |pts: [(f64, f64); 5]| {
        pts.iter()
            .zip(expected)
            .map(|(p, e)| dist(*p, *e))
            .sum::<f64>()
            / 5.0
            / iod
    };
    let (best_iou, mtcnn_error, landmark_error) = match best {
        Some((v, d)) if v > 0.3 => {
            let lm = models
                .landmarks(img, &d.bbox)
                .map_err(|e| EvalError::Data(format!("fr_landmark on {}: {e}", ident.name)))?;
            let eyes = eye_centres(&lm);
            let p = |i: usize| (f64::from(lm.at(i).x), f64::from(lm.at(i).y));
            let m = d
                .landmarks
                .points()
                .map(|q| (f64::from(q.x), f64::from(q.y)));
            (
                v,
                Some(mean_err(m)),
                Some(mean_err([eyes[0], eyes[1], p(30), p(48), p(54)])),
            )
        }
        Some((v, _)) => (v, None, None),
        None => (0.0, None, None),
    };
    Ok(Missed {
        identity: ident.name.clone(),
        family: family.to_string(),
        variant: variant.to_string(),
        best_iou,
        mtcnn_error,
        landmark_error,
    })
}

/// Fills every sample's [`EyeSample::alignments`]: its embedding under each alignment against
/// its identity's template under the same alignment (the `plain` sample's).
fn score_alignments(samples: &mut [EyeSample]) {
    let templates: Vec<(String, Vec<Embedding>)> = samples
        .iter()
        .filter(|s| s.family == "plain")
        .map(|s| (s.identity.clone(), s.embeddings.clone()))
        .collect();
    for s in samples.iter_mut() {
        let Some((_, t)) = templates.iter().find(|(n, _)| *n == s.identity) else {
            continue;
        };
        s.alignments = ALIGNMENTS
            .iter()
            .zip(s.embeddings.iter().zip(t))
            .map(|(name, (p, t))| AlignmentScore {
                alignment: (*name).to_string(),
                dlib: f64::from(p.distance(t)),
                faceres: faceres_cosine(p, t),
            })
            .collect();
    }
}

fn faceres_cosine(a: &Embedding, b: &Embedding) -> f64 {
    match (a.faceres(), b.faceres()) {
        (Some(a), Some(b)) => f64::from(cosine(a, b)),
        _ => f64::NAN,
    }
}

/// The genuine and impostor rows the samples make under alignment `k` of [`ALIGNMENTS`]: every
/// non-`plain` sample against its own template (genuine), every sample against every other
/// identity's template (impostor); templates are the `plain` samples under the same alignment,
/// so a refinement applied to enrolment and verification alike is scored as such.
pub fn rows(samples: &[EyeSample], k: usize) -> Vec<FeatureRow> {
    let templates: Vec<(&str, &Embedding)> = samples
        .iter()
        .filter(|s| s.family == "plain")
        .filter_map(|s| Some((s.identity.as_str(), s.embeddings.get(k)?)))
        .collect();
    let mut out = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        let Some(p) = s.embeddings.get(k) else {
            continue;
        };
        for (name, t) in &templates {
            let kind = if *name == s.identity {
                if s.family == "plain" {
                    continue;
                }
                Kind::Genuine
            } else {
                Kind::Impostor
            };
            out.push(FeatureRow {
                identity: s.identity.clone(),
                claimed: (*name).to_string(),
                presentation: i.to_string(),
                variant: s.variant.clone(),
                distance: f64::from(p.distance(t)),
                faceres_cosine: faceres_cosine(p, t),
                ..FeatureRow::unmeasured(format!("{i}>{name}"), kind)
            });
        }
    }
    out
}

struct SampleContext<'a> {
    vision: &'a Vision,
    models: &'a ChallengeModels,
    bias: [[f64; 2]; 2],
    own: [(f64, f64); 2],
    map: &'a Homography,
    family: &'a str,
    variant: &'a str,
}

fn sample(
    ctx: &SampleContext<'_>,
    img: &RgbImage,
    det: &Detection,
    ident: &Identity,
    expected: &[(f64, f64); 5],
) -> Result<EyeSample, EvalError> {
    let (models, own, map) = (ctx.models, ctx.own, ctx.map);
    let started = std::time::Instant::now();
    let lm = models
        .landmarks(img, &det.bbox)
        .map_err(|e| EvalError::Data(format!("fr_landmark on {}: {e}", ident.name)))?;
    let landmark_ms = started.elapsed().as_secs_f64() * 1000.0;
    let landmark = eye_centres(&lm);
    let mtcnn = mtcnn_eyes(&det.landmarks);
    let reference = [expected[0], expected[1]];
    let iod = dist(reference[0], reference[1]).max(1.0);
    let own_mapped = [
        map.apply(own[0].0, own[0].1).unwrap_or(own[0]),
        map.apply(own[1].0, own[1].1).unwrap_or(own[1]),
    ];
    let lower = det.landmarks.points()[2..]
        .iter()
        .zip(&expected[2..])
        .map(|(p, e)| dist((f64::from(p.x), f64::from(p.y)), *e))
        .fold(0.0f64, f64::max)
        / iod;
    let corrected = apply_face_frame_offset(&landmark, &ctx.bias.map(|o| o.map(|v| -v)));
    let mut oracle = det.landmarks;
    for (p, e) in oracle.points_mut().into_iter().zip(expected) {
        p.x = e.0 as f32;
        p.y = e.1 as f32;
    }
    let mean = [0, 1].map(|k| {
        (
            (mtcnn[k].0 + corrected[k].0) / 2.0,
            (mtcnn[k].1 + corrected[k].1) / 2.0,
        )
    });
    let sets = [
        det.landmarks,
        oracle,
        with_eyes(&det.landmarks, reference),
        with_eyes(&det.landmarks, corrected),
        with_eyes(&det.landmarks, mean),
    ];
    let mut embeddings = Vec::with_capacity(sets.len());
    for (name, l) in ALIGNMENTS.iter().zip(sets) {
        // `sets` has one entry per re-alignment; `switch_eyes` is chosen among them below.
        let face = Detection {
            landmarks: l,
            ..*det
        };
        let a = ctx
            .vision
            .analyze_face(img, face, AnalyzeOptions::ENROL)
            .map_err(|e| EvalError::Vision {
                context: format!("re-aligning {} ({name})", ident.name),
                source: e,
            })?;
        embeddings.push(a.embedding);
    }
    let own_iod = dist(mtcnn[0], mtcnn[1]).max(1.0);
    let switched = eye_error(&mtcnn, &corrected, own_iod) > SWITCH_DISAGREEMENT;
    embeddings.push(embeddings[if switched { 3 } else { 0 }].clone());
    Ok(EyeSample {
        identity: ident.name.clone(),
        family: ctx.family.to_string(),
        variant: ctx.variant.to_string(),
        iod,
        mtcnn_vs_ref: eye_error(&mtcnn, &reference, iod),
        landmark_vs_ref: eye_error(&landmark, &reference, iod),
        landmark_vs_own_ref: eye_error(&landmark, &own_mapped, iod),
        mtcnn_vs_landmark: eye_error(&mtcnn, &landmark, iod),
        mtcnn_lower_vs_ref: lower,
        offset: face_frame_offset(&mtcnn, &landmark),
        mtcnn,
        landmark,
        reference,
        alignments: Vec::new(),
        embeddings,
        landmark_ms,
        switched,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use facekey_runtime::vision::detect::Point;

    #[test]
    fn eye_centres_are_the_contour_means() {
        let mut pts = vec![Point { x: 0.0, y: 0.0 }; 68];
        for (k, p) in pts[36..42].iter_mut().enumerate() {
            *p = Point {
                x: 10.0 + k as f32,
                y: 20.0,
            };
        }
        pts[42..48].fill(Point { x: 50.0, y: 22.0 });
        let c = eye_centres(&Landmarks68::new(pts).unwrap());
        assert!((c[0].0 - 12.5).abs() < 1e-9 && (c[0].1 - 20.0).abs() < 1e-9);
        assert_eq!(c[1], (50.0, 22.0));
    }

    #[test]
    fn offsets_follow_the_eye_line() {
        // Eye line rotated 90 degrees: image +y is along the line.
        let a = [(0.0, 0.0), (0.0, 10.0)];
        let b = [(0.0, 1.0), (-2.0, 10.0)];
        let o = face_frame_offset(&a, &b);
        assert!((o[0][0] - 0.1).abs() < 1e-12 && o[0][1].abs() < 1e-12);
        assert!(o[1][0].abs() < 1e-12 && (o[1][1] - 0.2).abs() < 1e-12);
        assert!((eye_error(&a, &b, 10.0) - 0.2).abs() < 1e-12);
    }

    #[test]
    fn applying_an_offset_inverts_measuring_it() {
        let a = [(100.0, 50.0), (140.0, 60.0)];
        let b = [(103.0, 55.0), (137.5, 66.0)];
        let back = apply_face_frame_offset(&a, &face_frame_offset(&a, &b));
        for k in 0..2 {
            assert!((back[k].0 - b[k].0).abs() < 1e-9, "{back:?}");
            assert!((back[k].1 - b[k].1).abs() < 1e-9, "{back:?}");
        }
    }
}
