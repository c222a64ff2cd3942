//! 68-point landmarks (`fr_landmark`) and eye state (`fr_eye`) for challenge sessions, and
//! [`observe_frame`]: one decoded camera frame → one [`FrameObservation`], the unit the challenge
//! checker judges. The server and the evaluation crate both call [`observe_frame`], so offline
//! calibration sees exactly what the server sees.
//!
//! Pre-processing follows the models' npm package (`faceplugin-face-recognition-js`):
//! - landmarks: the detector box scaled 1.2x around its centre and shifted inside the image (the
//!   same geometry as fr_liveness's crop, [`minifas_crop`]), resized to 64x64 grey, `v / 256`;
//!   the 136 outputs are (x, y) in `[0, 1]` of that crop, mapped back through the crop (the
//!   package maps them through the unscaled box instead, which misplaces every point by up to
//!   10 % of the face; checked against MTCNN's five points in this module's model test);
//! - eyes: a square per eye centred on the mean of its four lid points, side 1.6x its
//!   corner-to-corner width, resized to 24x24 grey, `v / 255`, softmax over two classes.
//!   [`EYE_OPEN_CLASS`] is the index that reads open: on the open-eye sample photos it is class 1
//!   (class 0 is "closed"), the opposite of what the package's `predictEye` return value suggests.

use std::path::Path;

use image::RgbImage;

use super::VisionError;
use super::config::VisionConfig;
use super::detect::{BoundingBox, Point};
use super::imgproc::{Layout, Rect, crop_resize_bilinear};
use super::liveness::minifas_crop;
use super::models::{self, EYE, LANDMARK, ModelSpec};
use super::onnx::{SessionError, SessionOptions, SessionPool, ort_runtime};
use super::pipeline::{AnalyzeOptions, Vision, choose_face};
use crate::challenge::{
    EyeState, FaceObservation, Fingerprint, FrameObservation, LANDMARK_COUNT, Landmarks68,
};

/// Landmark model input side.
pub const LANDMARK_INPUT: usize = 64;
/// Eye model input side.
pub const EYE_INPUT: usize = 24;
/// Scale of the face box for the landmark crop.
pub const LANDMARK_CROP_SCALE: f32 = 1.2;
/// Eye crop side relative to the eye's corner-to-corner width.
pub const EYE_CROP_PADDING: f32 = 1.6;
/// Output index of `fr_eye` that means "open" (verified on open-eye photos).
pub const EYE_OPEN_CLASS: usize = 1;

/// The two challenge models, loaded once at start-up beside [`Vision`].
#[derive(Debug)]
pub struct ChallengeModels {
    landmark: SessionPool,
    eye: SessionPool,
}

/// Grey value of an RGB pixel (ITU-R BT.601 weights).
fn grey(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// Crops `rect` of `img`, resizes it bilinearly to `side x side` and returns grey values
/// multiplied by `scale`.
fn grey_crop(img: &RgbImage, rect: Rect, side: usize, scale: f32) -> Vec<f32> {
    let mut rgb = vec![0.0f32; side * side * 3];
    crop_resize_bilinear(img, rect, side, side, 1.0, Layout::Hwc, &mut rgb);
    rgb.chunks_exact(3)
        .map(|p| grey(p[0], p[1], p[2]) * scale)
        .collect()
}

/// The square eye crop for the eye whose six points start at `first` (36 or 42): centre from
/// the four lid points, side `EYE_CROP_PADDING` x the corner distance, clamped into the image.
pub fn eye_crop(lm: &Landmarks68, first: usize, width: u32, height: u32) -> Option<Rect> {
    let lids = [first + 1, first + 2, first + 4, first + 5].map(|i| lm.at(i));
    let cx = lids.iter().map(|p| p.x).sum::<f32>() / 4.0;
    let cy = lids.iter().map(|p| p.y).sum::<f32>() / 4.0;
    let (a, b) = (lm.at(first), lm.at(first + 3));
    let w = ((a.x - b.x).powi(2) + (a.y - b.y).powi(2)).sqrt();
    let side = (w * EYE_CROP_PADDING).round();
    if side.is_nan() || side < 2.0 || width < 2 || height < 2 {
        return None;
    }
    let x0 = (cx - side / 2.0).round().max(0.0);
    let y0 = (cy - side / 2.0).round().max(0.0);
    let max_side = (width as f32 - x0).min(height as f32 - y0);
    let side = side.min(max_side);
    if side < 2.0 || x0 >= width as f32 || y0 >= height as f32 {
        return None;
    }
    Some(Rect {
        x: x0 as u32,
        y: y0 as u32,
        w: side as u32,
        h: side as u32,
    })
}

/// Maps the landmark model's 136 crop-relative outputs back to image pixels.
pub fn landmarks_from_output(out: &[f32], crop: Rect) -> Option<Landmarks68> {
    if out.len() != LANDMARK_COUNT * 2 {
        return None;
    }
    let points = out
        .chunks_exact(2)
        .map(|p| Point {
            x: crop.x as f32 + p[0] * crop.w as f32,
            y: crop.y as f32 + p[1] * crop.h as f32,
        })
        .collect();
    Landmarks68::new(points).ok()
}

/// Softmax probability of [`EYE_OPEN_CLASS`] from two logits.
pub fn eye_open_probability(logits: [f32; 2]) -> f32 {
    let m = logits[0].max(logits[1]);
    let e = logits.map(|v| (v - m).exp());
    e[EYE_OPEN_CLASS] / (e[0] + e[1])
}

impl ChallengeModels {
    /// Loads `fr_landmark` and `fr_eye` from the models directory `config` resolves, checking
    /// their pinned checksums when `config.runtime.verify_checksums`.
    pub fn load(config: &VisionConfig) -> Result<Self, VisionError> {
        let rt = ort_runtime(config.runtime.ort_library.as_deref())?;
        let dir = models::resolve_models_dir(config.runtime.models_dir.as_deref())?;
        let options = SessionOptions {
            intra_threads: config.runtime.intra_threads,
            sessions: config.runtime.sessions_per_model.max(1),
        };
        let load = |spec: ModelSpec, dir: &Path| -> Result<SessionPool, VisionError> {
            let expected = config.runtime.verify_checksums.then_some(spec.sha256);
            Ok(models::load_model(
                rt,
                dir,
                spec,
                expected,
                config.runtime.warm_up,
                options,
            )?)
        };
        Ok(Self {
            landmark: load(LANDMARK, &dir)?,
            eye: load(EYE, &dir)?,
        })
    }

    /// 68 landmarks of the face in `bbox`.
    pub fn landmarks(
        &self,
        img: &RgbImage,
        bbox: &BoundingBox,
    ) -> Result<Landmarks68, SessionError> {
        let (w, h) = img.dimensions();
        let crop = minifas_crop(bbox, w, h, LANDMARK_CROP_SCALE).ok_or(SessionError::Output {
            model: self.landmark.name(),
            detail: "no crop fits the face box in the image".into(),
        })?;
        let input = grey_crop(img, crop, LANDMARK_INPUT, 1.0 / 256.0);
        let (lm, _) =
            self.landmark
                .run(&[1, 1, LANDMARK_INPUT, LANDMARK_INPUT], &input, |out| {
                    let (shape, data) = self.landmark.output(out, 0)?;
                    if shape != [1, LANDMARK_COUNT * 2] {
                        return Err(SessionError::Output {
                            model: self.landmark.name(),
                            detail: format!("expected [1, 136], got {shape:?}"),
                        });
                    }
                    landmarks_from_output(data, crop).ok_or(SessionError::Output {
                        model: self.landmark.name(),
                        detail: "non-finite landmarks".into(),
                    })
                })?;
        Ok(lm)
    }

    /// Open probability of each eye.
    pub fn eyes(&self, img: &RgbImage, lm: &Landmarks68) -> Result<EyeState, SessionError> {
        let (w, h) = img.dimensions();
        let mut open = [0.0f32; 2];
        for (k, first) in [36usize, 42].into_iter().enumerate() {
            let rect = eye_crop(lm, first, w, h).ok_or(SessionError::Output {
                model: self.eye.name(),
                detail: "no eye crop fits the image".into(),
            })?;
            let input = grey_crop(img, rect, EYE_INPUT, 1.0 / 255.0);
            let (p, _) = self.eye.run(&[1, 1, EYE_INPUT, EYE_INPUT], &input, |out| {
                let (shape, data) = self.eye.output(out, 0)?;
                if shape != [1, 2] {
                    return Err(SessionError::Output {
                        model: self.eye.name(),
                        detail: format!("expected [1, 2], got {shape:?}"),
                    });
                }
                Ok(eye_open_probability([data[0], data[1]]))
            })?;
            open[k] = p;
        }
        Ok(EyeState {
            left_open: open[0],
            right_open: open[1],
        })
    }
}

/// Turns one decoded, upright camera frame into a [`FrameObservation`]: fingerprint, face
/// detection (the multi-face policy of `vision`), embedding, passive liveness and quality
/// ([`Vision::analyze_face`]), 68 landmarks and eye state. Never fails: no face, or any model
/// failing, gives a frame without a face (unusable, never evidence) with the reason.
pub fn observe_frame(
    vision: &Vision,
    models: &ChallengeModels,
    img: &RgbImage,
    timestamp_ms: u64,
) -> FrameObservation {
    let fingerprint = Fingerprint::of(img);
    let unusable = |reason: String| FrameObservation {
        timestamp_ms,
        received_ms: None,
        face: None,
        unusable: Some(reason),
        fingerprint: fingerprint.clone(),
    };
    let face = match vision
        .detect(img)
        .and_then(|(faces, _)| choose_face(&faces, vision.config().multi_face))
    {
        Ok(f) => f,
        Err(e) => return unusable(e.to_string()),
    };
    let analysis = match vision.analyze_face(img, face, AnalyzeOptions::FULL) {
        Ok(a) => a,
        Err(e) => return unusable(e.to_string()),
    };
    let landmarks = match models.landmarks(img, &face.bbox) {
        Ok(l) => l,
        Err(e) => return unusable(format!("landmarks: {e}")),
    };
    let eyes = match models.eyes(img, &landmarks) {
        Ok(e) => e,
        Err(e) => return unusable(format!("eyes: {e}")),
    };
    FrameObservation {
        timestamp_ms,
        received_ms: None,
        face: Some(FaceObservation {
            bbox: face.bbox,
            landmarks,
            eyes: Some(eyes),
            embedding: Some(analysis.embedding),
            liveness: analysis.liveness.as_ref().and_then(passive_score),
            quality: analysis.quality.map(|q| q.score),
        }),
        unusable: None,
        fingerprint,
    }
}

/// A frame's passive liveness evidence: its score, or 0 when a configured model could not
/// score the face (no crop fits, an inference error). A failure is never live, and must not
/// weigh less than a low score: the session's confidence stands in 0.5 only where passive
/// liveness is off (no score and no failure), so a hostile client could otherwise push its
/// face to the frame edge to trade a low passive score for the stand-in.
fn passive_score(l: &crate::vision::LivenessResult) -> Option<f32> {
    if l.failure.is_some() {
        Some(0.0)
    } else {
        l.score
    }
}

/// Decodes `bytes` under `vision`'s limits and observes the frame; decoding errors are the
/// caller's (an unreadable frame is rejected, not recorded).
pub fn observe_bytes(
    vision: &Vision,
    models: &ChallengeModels,
    bytes: &[u8],
    timestamp_ms: u64,
) -> Result<FrameObservation, VisionError> {
    let img = vision.decode(bytes)?;
    Ok(observe_frame(vision, models, &img, timestamp_ms))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_passive_failure_is_a_zero_score_and_passive_off_is_none() {
        let scored = crate::vision::LivenessResult {
            score: Some(0.9),
            ..crate::vision::LivenessResult::failed("x")
        };
        // A model that failed beside a score still counts as no evidence of life.
        assert_eq!(passive_score(&scored), Some(0.0));
        let failed = crate::vision::LivenessResult::failed("minifas: no crop fits");
        assert_eq!(passive_score(&failed), Some(0.0));
        let ran = crate::vision::LivenessResult {
            failure: None,
            ..scored
        };
        assert_eq!(passive_score(&ran), Some(0.9));
        let off = crate::vision::LivenessResult { score: None, ..ran };
        assert_eq!(passive_score(&off), None);
    }

    #[test]
    fn output_maps_through_the_crop() {
        let crop = Rect {
            x: 10,
            y: 20,
            w: 100,
            h: 50,
        };
        let mut out = vec![0.5f32; 136];
        out[0] = 0.0;
        out[1] = 1.0;
        let lm = landmarks_from_output(&out, crop).unwrap();
        assert_eq!(lm.at(0), Point { x: 10.0, y: 70.0 });
        assert_eq!(lm.at(67), Point { x: 60.0, y: 45.0 });
        assert!(landmarks_from_output(&out[..10], crop).is_none());
    }

    #[test]
    fn eye_probability_uses_the_open_class() {
        let mut l = [0.0f32; 2];
        l[EYE_OPEN_CLASS] = 4.0;
        assert!(eye_open_probability(l) > 0.98);
        let mut l = [0.0f32; 2];
        l[1 - EYE_OPEN_CLASS] = 4.0;
        assert!(eye_open_probability(l) < 0.02);
    }

    #[test]
    fn eye_crop_is_square_and_inside() {
        let lm = crate::challenge::signals::tests_face();
        let r = eye_crop(&lm, 36, 640, 480).unwrap();
        assert_eq!(r.w, r.h);
        assert_eq!(r.w, 32, "1.6 x a 20 px eye");
        let r = eye_crop(&lm, 42, 230, 480).unwrap();
        assert!(r.x + r.w <= 230);
    }
}
