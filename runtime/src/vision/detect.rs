//! MTCNN face detection with five landmarks on ONNX Runtime: image pyramid through PNet, then
//! RNet and ONet on batched crops, with the pure box logic of [`super::mtcnn`] in between.

use std::time::Duration;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::config::DetectorConfig;
use super::imgproc::{crop_and_resize_tf, resize_area};
use super::mtcnn::{
    Candidate, Overlap, clamp_to_image, keep_best_scores, keep_largest, nms, normalized_box,
    place_landmarks, pnet_candidates, pyramid_scales, regress, scaled_size, square,
};
use super::onnx::{SessionError, SessionPool};

/// Most PNet proposals of one pyramid level merged (the best-scoring): bounds the merge's
/// quadratic cost.
pub const PNET_LEVEL_MAX: usize = 4096;
/// Most boxes RNet refines in one image (PNet's best-scoring: its largest proposals are mostly
/// coarse-level noise), and ONet after it (RNet's largest). An ordinary photo,
/// a group photo included, stays far below both; a mosaic of two thousand small faces made the
/// two networks take about 10 s (9000 and 2250 boxes) against some 0.1 s for a portrait, and
/// their batches some 60 MB each; at these caps they take under a second (`vision_inputs.rs`).
pub const RNET_MAX_INPUTS: usize = 2048;
/// See [`RNET_MAX_INPUTS`].
pub const ONET_MAX_INPUTS: usize = 256;

/// MTCNN's input normalisation: `(v - 127.5) / 128`.
const NORM_SCALE: f32 = 1.0 / 128.0;
const NORM_OFFSET: f32 = -127.5 / 128.0;

/// A point in image pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Column.
    pub x: f32,
    /// Row.
    pub y: f32,
}

/// A face box in image pixels: top-left corner and size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoundingBox {
    /// Left edge.
    pub x: f32,
    /// Top edge.
    pub y: f32,
    /// Width.
    pub width: f32,
    /// Height.
    pub height: f32,
}

impl BoundingBox {
    /// Area in square pixels.
    pub fn area(&self) -> f32 {
        self.width.max(0.0) * self.height.max(0.0)
    }

    /// The box rounded like the reference's JSON output: `[x, y, w, h]` each rounded
    /// half-to-even (`w` and `h` from the unrounded corners).
    pub fn rounded(&self) -> [i64; 4] {
        [
            f64::from(self.x).round_ties_even() as i64,
            f64::from(self.y).round_ties_even() as i64,
            f64::from(self.width).round_ties_even() as i64,
            f64::from(self.height).round_ties_even() as i64,
        ]
    }
}

/// The five MTCNN landmarks; "left" and "right" are as seen in the image (the subject's right
/// eye is `left_eye`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Landmarks {
    /// Eye on the image's left.
    pub left_eye: Point,
    /// Eye on the image's right.
    pub right_eye: Point,
    /// Nose tip.
    pub nose: Point,
    /// Mouth corner on the image's left.
    pub mouth_left: Point,
    /// Mouth corner on the image's right.
    pub mouth_right: Point,
}

impl Landmarks {
    /// The points in template order: left eye, right eye, nose, left mouth, right mouth.
    pub fn points(&self) -> [Point; 5] {
        [
            self.left_eye,
            self.right_eye,
            self.nose,
            self.mouth_left,
            self.mouth_right,
        ]
    }

    /// The points in template order, to move them in place (scaling, warping).
    pub fn points_mut(&mut self) -> [&mut Point; 5] {
        [
            &mut self.left_eye,
            &mut self.right_eye,
            &mut self.nose,
            &mut self.mouth_left,
            &mut self.mouth_right,
        ]
    }

    fn from_candidate(c: &Candidate) -> Self {
        let p = |k: usize| Point {
            x: c.landmarks[k] as f32,
            y: c.landmarks[k + 5] as f32,
        };
        Self {
            left_eye: p(0),
            right_eye: p(1),
            nose: p(2),
            mouth_left: p(3),
            mouth_right: p(4),
        }
    }
}

/// One detected face.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Face box (clamped into the image).
    #[serde(rename = "box")]
    pub bbox: BoundingBox,
    /// ONet face probability.
    pub confidence: f32,
    /// Five landmarks.
    pub landmarks: Landmarks,
}

/// Time spent inside ONNX Runtime by the detector's three networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DetectorInference {
    /// PNet, summed over pyramid levels.
    pub pnet: Duration,
    /// Number of PNet runs (pyramid levels).
    pub pnet_runs: u32,
    /// RNet (one batched run).
    pub rnet: Duration,
    /// ONet (one batched run).
    pub onet: Duration,
    /// Boxes RNet refined (PNet's proposals after merging).
    pub rnet_inputs: usize,
    /// Boxes ONet refined (RNet's survivors after merging).
    pub onet_inputs: usize,
}

impl DetectorInference {
    /// Total model time.
    pub fn total(&self) -> Duration {
        self.pnet + self.rnet + self.onet
    }
}

/// The MTCNN cascade over three shared session pools.
#[derive(Debug)]
pub struct Detector {
    pnet: SessionPool,
    rnet: SessionPool,
    onet: SessionPool,
    config: DetectorConfig,
}

impl Detector {
    /// Wraps the three networks' sessions.
    pub fn new(
        pnet: SessionPool,
        rnet: SessionPool,
        onet: SessionPool,
        config: DetectorConfig,
    ) -> Self {
        Self {
            pnet,
            rnet,
            onet,
            config,
        }
    }

    /// Detects faces, sorted by descending confidence. Images larger than
    /// [`DetectorConfig::max_input_side`] are detected on a downscaled copy and the results
    /// mapped back to `img`'s coordinates.
    pub fn detect(
        &self,
        img: &RgbImage,
    ) -> Result<(Vec<Detection>, DetectorInference), SessionError> {
        let (w, h) = img.dimensions();
        let Some((sw, sh)) = self
            .config
            .max_input_side
            .and_then(|m| downscaled_size(w, h, m))
        else {
            return self.detect_full(img);
        };
        let mut buf = Vec::new();
        resize_area(img, sw as usize, sh as usize, 1.0, 0.0, &mut buf);
        let raw: Vec<u8> = buf
            .iter()
            .map(|v| v.round().clamp(0.0, 255.0) as u8)
            .collect();
        let Some(small) = RgbImage::from_raw(sw, sh, raw) else {
            return self.detect_full(img);
        };
        let (mut faces, timing) = self.detect_full(&small)?;
        let (fx, fy) = (w as f32 / sw as f32, h as f32 / sh as f32);
        for f in &mut faces {
            scale_detection(f, fx, fy, w, h);
        }
        Ok((faces, timing))
    }

    /// Detects at the image's own resolution (the reference pipeline).
    fn detect_full(
        &self,
        img: &RgbImage,
    ) -> Result<(Vec<Detection>, DetectorInference), SessionError> {
        let mut timing = DetectorInference::default();
        let (w, h) = img.dimensions();
        let cfg = &self.config;

        // Stage 1: PNet over the pyramid.
        let mut proposals: Vec<Candidate> = Vec::new();
        let mut level = Vec::new();
        for scale in pyramid_scales(w, h, cfg.min_face_size, cfg.scale_factor) {
            let (sw, sh) = scaled_size(w, h, scale);
            resize_area(img, sw, sh, NORM_SCALE, NORM_OFFSET, &mut level);
            let (mut found, took) = self.pnet.run(&[1, sh, sw, 3], &level, |out| {
                let (rshape, reg) = self.pnet.output(out, 0)?;
                let (pshape, prob) = self.pnet.output(out, 1)?;
                check_grid(self.pnet.name(), &rshape, 4)?;
                check_grid(self.pnet.name(), &pshape, 2)?;
                if rshape[1..3] != pshape[1..3] {
                    return Err(SessionError::Output {
                        model: self.pnet.name(),
                        detail: format!("grid mismatch {rshape:?} vs {pshape:?}"),
                    });
                }
                Ok(pnet_candidates(
                    reg,
                    prob,
                    pshape[1],
                    pshape[2],
                    scale,
                    cfg.pnet_threshold,
                ))
            })?;
            timing.pnet += took;
            timing.pnet_runs += 1;
            keep_best_scores(&mut found, PNET_LEVEL_MAX);
            nms(&mut found, cfg.pnet_scale_nms, Overlap::Union, false);
            proposals.append(&mut found);
        }
        nms(&mut proposals, cfg.pnet_nms, Overlap::Union, true);
        square(&mut proposals);
        if proposals.is_empty() {
            return Ok((Vec::new(), timing));
        }
        keep_best_scores(&mut proposals, RNET_MAX_INPUTS);

        // Stage 2: RNet on 24x24 crops.
        let (rnet_out, took) = self.refine(&self.rnet, img, &proposals, 24, false)?;
        timing.rnet = took;
        timing.rnet_inputs = proposals.len();
        let mut boxes: Vec<Candidate> = Vec::with_capacity(proposals.len());
        for (mut b, (reg, _, score)) in proposals.into_iter().zip(rnet_out) {
            b.score = score;
            regress(&mut b, &reg);
            if b.score > cfg.rnet_threshold {
                boxes.push(b);
            }
        }
        nms(&mut boxes, cfg.rnet_nms, Overlap::Union, true);
        square(&mut boxes);
        if boxes.is_empty() {
            return Ok((Vec::new(), timing));
        }
        keep_largest(&mut boxes, ONET_MAX_INPUTS);

        // Stage 3: ONet on 48x48 crops, with landmarks.
        let (onet_out, took) = self.refine(&self.onet, img, &boxes, 48, true)?;
        timing.onet = took;
        timing.onet_inputs = boxes.len();
        let mut faces: Vec<Candidate> = Vec::with_capacity(boxes.len());
        for (mut b, (reg, lm, score)) in boxes.into_iter().zip(onet_out) {
            b.landmarks = place_landmarks(&b, &lm);
            b.score = score;
            regress(&mut b, &reg);
            if b.score > cfg.onet_threshold {
                faces.push(b);
            }
        }
        nms(&mut faces, cfg.onet_nms, Overlap::Min, true);

        let detections = faces
            .into_iter()
            .map(|mut c| {
                clamp_to_image(&mut c, w, h);
                Detection {
                    bbox: BoundingBox {
                        x: c.x1 as f32,
                        y: c.y1 as f32,
                        width: (c.x2 - c.x1) as f32,
                        height: (c.y2 - c.y1) as f32,
                    },
                    confidence: c.score as f32,
                    landmarks: Landmarks::from_candidate(&c),
                }
            })
            .collect();
        Ok((detections, timing))
    }

    /// Runs RNet or ONet on `size x size` crops of `boxes`; returns per box the regression,
    /// the landmarks (ONet) and the face probability.
    #[allow(clippy::type_complexity)]
    fn refine(
        &self,
        net: &SessionPool,
        img: &RgbImage,
        boxes: &[Candidate],
        size: usize,
        landmarks: bool,
    ) -> Result<(Vec<([f32; 4], [f32; 10], f64)>, Duration), SessionError> {
        let (w, h) = img.dimensions();
        let patch = size * size * 3;
        let mut batch = vec![0.0f32; boxes.len() * patch];
        for (b, chunk) in boxes.iter().zip(batch.chunks_exact_mut(patch)) {
            crop_and_resize_tf(
                img,
                normalized_box(b, w, h),
                size,
                NORM_SCALE,
                NORM_OFFSET,
                chunk,
            );
        }
        let n = boxes.len();
        net.run(&[n, size, size, 3], &batch, |out| {
            let (rshape, reg) = net.output(out, 0)?;
            let prob_index = if landmarks { 2 } else { 1 };
            let (pshape, prob) = net.output(out, prob_index)?;
            check_rows(net.name(), &rshape, n, 4)?;
            check_rows(net.name(), &pshape, n, 2)?;
            let lms = if landmarks {
                let (lshape, l) = net.output(out, 1)?;
                check_rows(net.name(), &lshape, n, 10)?;
                Some(l)
            } else {
                None
            };
            Ok((0..n)
                .map(|i| {
                    let mut r = [0.0f32; 4];
                    r.copy_from_slice(&reg[i * 4..i * 4 + 4]);
                    let mut l = [0.0f32; 10];
                    if let Some(lms) = lms {
                        l.copy_from_slice(&lms[i * 10..i * 10 + 10]);
                    }
                    (r, l, f64::from(prob[i * 2 + 1]))
                })
                .collect())
        })
    }
}

/// The size an image is detected at when its longer side exceeds `max_side` (aspect kept),
/// or `None` when it fits.
pub fn downscaled_size(width: u32, height: u32, max_side: u32) -> Option<(u32, u32)> {
    let long = width.max(height);
    if max_side == 0 || long <= max_side {
        return None;
    }
    let s = f64::from(max_side) / f64::from(long);
    let w = ((f64::from(width) * s).round() as u32).max(1);
    let h = ((f64::from(height) * s).round() as u32).max(1);
    Some((w, h))
}

/// Maps a detection from a downscaled copy back to the full image (`fx`, `fy`: full / small),
/// keeping the box inside the `width x height` image.
pub fn scale_detection(d: &mut Detection, fx: f32, fy: f32, width: u32, height: u32) {
    let (max_x, max_y) = (
        width.saturating_sub(1) as f32,
        height.saturating_sub(1) as f32,
    );
    let x1 = (d.bbox.x * fx).clamp(0.0, max_x);
    let y1 = (d.bbox.y * fy).clamp(0.0, max_y);
    let x2 = ((d.bbox.x + d.bbox.width) * fx).clamp(0.0, max_x);
    let y2 = ((d.bbox.y + d.bbox.height) * fy).clamp(0.0, max_y);
    d.bbox = BoundingBox {
        x: x1,
        y: y1,
        width: x2 - x1,
        height: y2 - y1,
    };
    for p in d.landmarks.points_mut() {
        p.x *= fx;
        p.y *= fy;
    }
}

fn check_grid(model: &'static str, shape: &[usize], channels: usize) -> Result<(), SessionError> {
    if shape.len() == 4 && shape[0] == 1 && shape[3] == channels {
        Ok(())
    } else {
        Err(SessionError::Output {
            model,
            detail: format!("expected [1, h, w, {channels}], got {shape:?}"),
        })
    }
}

fn check_rows(
    model: &'static str,
    shape: &[usize],
    rows: usize,
    cols: usize,
) -> Result<(), SessionError> {
    if shape == [rows, cols] {
        Ok(())
    } else {
        Err(SessionError::Output {
            model,
            detail: format!("expected [{rows}, {cols}], got {shape:?}"),
        })
    }
}

/// Index of the detection with the largest box, if any.
pub fn largest(detections: &[Detection]) -> Option<usize> {
    detections
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.bbox.area().total_cmp(&b.1.bbox.area()))
        .map(|(i, _)| i)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn det(w: f32, h: f32) -> Detection {
        let p = Point { x: 0.0, y: 0.0 };
        Detection {
            bbox: BoundingBox {
                x: 0.0,
                y: 0.0,
                width: w,
                height: h,
            },
            confidence: 0.9,
            landmarks: Landmarks {
                left_eye: p,
                right_eye: p,
                nose: p,
                mouth_left: p,
                mouth_right: p,
            },
        }
    }

    #[test]
    fn largest_picks_biggest_area() {
        assert_eq!(largest(&[]), None);
        assert_eq!(
            largest(&[det(10.0, 10.0), det(30.0, 4.0), det(12.0, 12.0)]),
            Some(2)
        );
    }

    #[test]
    fn rounding_is_half_to_even() {
        let b = BoundingBox {
            x: 2.5,
            y: 3.5,
            width: 10.49,
            height: 0.5,
        };
        assert_eq!(b.rounded(), [2, 4, 10, 0]);
    }

    #[test]
    fn detection_serialises_box_field() {
        let v = serde_json::to_value(det(1.0, 2.0)).unwrap();
        assert!(v.get("box").is_some());
        assert!(v["landmarks"]["left_eye"]["x"].is_number());
    }

    #[test]
    fn downscale_only_when_too_large() {
        assert_eq!(downscaled_size(640, 480, 1280), None);
        assert_eq!(downscaled_size(1280, 886, 1280), None);
        assert_eq!(downscaled_size(4032, 3024, 1280), Some((1280, 960)));
        assert_eq!(downscaled_size(3000, 4000, 1000), Some((750, 1000)));
        assert_eq!(downscaled_size(4000, 3000, 0), None);
    }

    #[test]
    fn detections_map_back_to_full_resolution() {
        let mut d = det(10.0, 20.0);
        d.bbox.x = 5.0;
        d.bbox.y = 6.0;
        d.landmarks.nose = Point { x: 8.0, y: 9.0 };
        scale_detection(&mut d, 2.0, 3.0, 100, 100);
        assert_eq!(
            (d.bbox.x, d.bbox.y, d.bbox.width, d.bbox.height),
            (10.0, 18.0, 20.0, 60.0)
        );
        assert_eq!((d.landmarks.nose.x, d.landmarks.nose.y), (16.0, 27.0));
        // Boxes stay inside the image.
        let mut e = det(60.0, 60.0);
        scale_detection(&mut e, 2.0, 2.0, 100, 100);
        assert_eq!(e.bbox.width, 99.0);
    }

    #[test]
    fn shape_checks() {
        assert!(check_grid("m", &[1, 5, 6, 4], 4).is_ok());
        assert!(check_grid("m", &[2, 5, 6, 4], 4).is_err());
        assert!(check_rows("m", &[3, 4], 3, 4).is_ok());
        assert!(check_rows("m", &[3, 2], 3, 4).is_err());
    }
}
