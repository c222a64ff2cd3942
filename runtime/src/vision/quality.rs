//! Face quality from cheap signals: face size against a target, sharpness (variance of the
//! Laplacian of the aligned chip), pose (yaw and roll estimated from the five landmarks) and
//! exposure (mean luma and clipping of the chip's centre). Each sub-score is in `[0, 1]`; the
//! overall score is their geometric mean, so any single bad factor pulls it down.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::config::QualityConfig;
use super::detect::{BoundingBox, Landmarks};
use super::imgproc::luma;

/// Depth of the nose tip in front of the eye plane relative to the inter-ocular distance, for
/// the yaw estimate (anthropometric average, ~0.55).
const NOSE_DEPTH_RATIO: f32 = 0.55;

/// Quality of one face, with the measurements behind each sub-score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QualityResult {
    /// Geometric mean of the four sub-scores.
    pub score: f32,
    /// Face-size sub-score.
    pub size: f32,
    /// Sharpness sub-score.
    pub sharpness: f32,
    /// Pose sub-score (yaw and roll).
    pub pose: f32,
    /// Exposure sub-score.
    pub exposure: f32,
    /// Short side of the face box, pixels.
    pub face_size_px: f32,
    /// Variance of the Laplacian of the chip's luma.
    pub laplacian_variance: f32,
    /// Estimated yaw, degrees (positive: nose towards the image's right).
    pub yaw_degrees: f32,
    /// Roll, degrees (angle of the eye line; positive: clockwise in the image).
    pub roll_degrees: f32,
    /// Mean luma (0–255) of the chip's centre.
    pub mean_luma: f32,
    /// Fraction of the chip's centre pixels with luma ≤ 5 or ≥ 250.
    pub clipped_fraction: f32,
}

/// Linear ramp: 0 at `lo`, 1 at `hi`, clamped.
fn ramp(v: f32, lo: f32, hi: f32) -> f32 {
    if hi <= lo {
        return if v >= hi { 1.0 } else { 0.0 };
    }
    ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
}

/// Size sub-score: 0 at `min_face_size`, 1 from `target_face_size` on (short side of the box).
pub fn size_score(bbox: &BoundingBox, cfg: &QualityConfig) -> (f32, f32) {
    let side = bbox.width.min(bbox.height).max(0.0);
    (ramp(side, cfg.min_face_size, cfg.target_face_size), side)
}

/// Variance of the 4-neighbour Laplacian over the interior of a `w x h` luma plane.
pub fn laplacian_variance(luma: &[f32], w: usize, h: usize) -> f32 {
    if w < 3 || h < 3 || luma.len() < w * h {
        return 0.0;
    }
    let (mut sum, mut sq, mut n) = (0.0f64, 0.0f64, 0.0f64);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let c = luma[y * w + x];
            let l = luma[y * w + x - 1]
                + luma[y * w + x + 1]
                + luma[(y - 1) * w + x]
                + luma[(y + 1) * w + x]
                - 4.0 * c;
            sum += f64::from(l);
            sq += f64::from(l) * f64::from(l);
            n += 1.0;
        }
    }
    let mean = sum / n;
    (sq / n - mean * mean).max(0.0) as f32
}

/// Sharpness sub-score `v / (v + midpoint)`.
pub fn sharpness_score(variance: f32, cfg: &QualityConfig) -> f32 {
    if variance <= 0.0 {
        return 0.0;
    }
    variance / (variance + cfg.sharpness_midpoint.max(f32::EPSILON))
}

/// Yaw and roll (degrees) from the landmarks. Roll is the eye line's angle. Yaw comes from the
/// nose tip's horizontal offset from the eye midpoint in the roll-corrected frame, relative to
/// the inter-ocular distance: `yaw = atan(offset / (d * 0.55))` (nose ~0.55 eye-distances in
/// front of the eyes).
pub fn pose_angles(lm: &Landmarks) -> (f32, f32) {
    let (le, re, nose) = (lm.left_eye, lm.right_eye, lm.nose);
    let (dx, dy) = (re.x - le.x, re.y - le.y);
    let eye_dist = (dx * dx + dy * dy).sqrt();
    if !eye_dist.is_finite() || eye_dist < 1e-3 {
        return (90.0, 0.0);
    }
    let roll = dy.atan2(dx);
    let (mx, my) = ((le.x + re.x) / 2.0, (le.y + re.y) / 2.0);
    let (nx, ny) = (nose.x - mx, nose.y - my);
    // Rotate by -roll so that the eye line is horizontal.
    let offset = nx * roll.cos() + ny * roll.sin();
    let yaw = (offset / (eye_dist * NOSE_DEPTH_RATIO)).atan();
    (yaw.to_degrees(), roll.to_degrees())
}

/// Pose sub-score: product of `1 - |yaw| / max_yaw` and `1 - |roll| / max_roll`, clamped.
pub fn pose_score(yaw: f32, roll: f32, cfg: &QualityConfig) -> f32 {
    let y = 1.0 - (yaw.abs() / cfg.max_yaw_degrees.max(f32::EPSILON)).min(1.0);
    let r = 1.0 - (roll.abs() / cfg.max_roll_degrees.max(f32::EPSILON)).min(1.0);
    y * r
}

/// Mean luma and clipped fraction of `luma` (a `w x h` plane) over its centre region (the middle
/// two thirds, mostly face on an aligned chip).
pub fn exposure_stats(luma: &[f32], w: usize, h: usize) -> (f32, f32) {
    let (x0, x1, y0, y1) = (w / 6, w - w / 6, h / 6, h - h / 6);
    let (mut sum, mut clipped, mut n) = (0.0f64, 0usize, 0usize);
    for y in y0..y1 {
        for x in x0..x1 {
            let v = luma[y * w + x];
            sum += f64::from(v);
            if v <= 5.0 || v >= 250.0 {
                clipped += 1;
            }
            n += 1;
        }
    }
    if n == 0 {
        return (0.0, 1.0);
    }
    ((sum / n as f64) as f32, clipped as f32 / n as f32)
}

/// Exposure sub-score: 1 inside the luma band, falling linearly to 0 at black (0) and white
/// (255), times `1 - clipped / max_clipped`.
pub fn exposure_score(mean_luma: f32, clipped: f32, cfg: &QualityConfig) -> f32 {
    let [lo, hi] = cfg.luma_band;
    let band = if mean_luma < lo {
        ramp(mean_luma, 0.0, lo)
    } else if mean_luma > hi {
        1.0 - ramp(mean_luma, hi, 255.0)
    } else {
        1.0
    };
    let clip = 1.0 - (clipped / cfg.max_clipped_fraction.max(f32::EPSILON)).min(1.0);
    band * clip
}

/// Scores a face from its box, landmarks and aligned chip.
pub fn assess(
    bbox: &BoundingBox,
    landmarks: &Landmarks,
    chip: &RgbImage,
    cfg: &QualityConfig,
) -> QualityResult {
    let (size, face_size_px) = size_score(bbox, cfg);
    let (w, h) = (chip.width() as usize, chip.height() as usize);
    let y = luma(chip);
    let laplacian = laplacian_variance(&y, w, h);
    let sharpness = sharpness_score(laplacian, cfg);
    let (yaw, roll) = pose_angles(landmarks);
    let pose = pose_score(yaw, roll, cfg);
    let (mean_luma, clipped) = exposure_stats(&y, w, h);
    let exposure = exposure_score(mean_luma, clipped, cfg);
    let score = (size * sharpness * pose * exposure).max(0.0).powf(0.25);
    QualityResult {
        score,
        size,
        sharpness,
        pose,
        exposure,
        face_size_px,
        laplacian_variance: laplacian,
        yaw_degrees: yaw,
        roll_degrees: roll,
        mean_luma,
        clipped_fraction: clipped,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::detect::Point;
    use super::*;

    fn lm(le: (f32, f32), re: (f32, f32), nose: (f32, f32)) -> Landmarks {
        let p = |(x, y): (f32, f32)| Point { x, y };
        Landmarks {
            left_eye: p(le),
            right_eye: p(re),
            nose: p(nose),
            mouth_left: p((le.0, nose.1 + 20.0)),
            mouth_right: p((re.0, nose.1 + 20.0)),
        }
    }

    #[test]
    fn size_ramp() {
        let cfg = QualityConfig::default();
        let b = |s: f32| BoundingBox {
            x: 0.0,
            y: 0.0,
            width: s,
            height: s * 1.3,
        };
        assert_eq!(size_score(&b(10.0), &cfg).0, 0.0);
        assert!((size_score(&b(60.0), &cfg).0 - 0.5).abs() < 1e-6);
        assert_eq!(size_score(&b(300.0), &cfg).0, 1.0);
    }

    #[test]
    fn laplacian_flat_vs_checkerboard() {
        let flat = vec![100.0; 100];
        assert_eq!(laplacian_variance(&flat, 10, 10), 0.0);
        let checker: Vec<f32> = (0..100)
            .map(|i| {
                if (i % 10 + i / 10) % 2 == 0 {
                    0.0
                } else {
                    255.0
                }
            })
            .collect();
        assert!(laplacian_variance(&checker, 10, 10) > 1e5);
        let cfg = QualityConfig::default();
        assert_eq!(sharpness_score(0.0, &cfg), 0.0);
        assert!((sharpness_score(100.0, &cfg) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn pose_from_landmarks() {
        // Frontal: nose under the eye midpoint.
        let (yaw, roll) = pose_angles(&lm((40.0, 50.0), (100.0, 50.0), (70.0, 80.0)));
        assert!(yaw.abs() < 1e-3 && roll.abs() < 1e-3);
        // Nose shifted right by 0.55 eye-distances: yaw 45 degrees.
        let (yaw, _) = pose_angles(&lm((40.0, 50.0), (100.0, 50.0), (70.0 + 33.0, 80.0)));
        assert!((yaw - 45.0).abs() < 0.1, "{yaw}");
        // Rolled 30 degrees clockwise: frontal yaw still ~0.
        let r = 30f32.to_radians();
        let rot = |x: f32, y: f32| (x * r.cos() - y * r.sin(), x * r.sin() + y * r.cos());
        let (yaw, roll) = pose_angles(&lm(rot(-30.0, 0.0), rot(30.0, 0.0), rot(0.0, 30.0)));
        assert!(
            (roll - 30.0).abs() < 1e-3 && yaw.abs() < 1e-3,
            "{yaw} {roll}"
        );
        let cfg = QualityConfig::default();
        assert_eq!(pose_score(0.0, 0.0, &cfg), 1.0);
        assert_eq!(pose_score(45.0, 0.0, &cfg), 0.0);
        assert!((pose_score(22.5, 0.0, &cfg) - 0.5).abs() < 1e-6);
        // Coincident eyes: treated as a profile.
        assert_eq!(pose_angles(&lm((1.0, 1.0), (1.0, 1.0), (2.0, 2.0))).0, 90.0);
    }

    #[test]
    fn exposure_scores() {
        let cfg = QualityConfig::default();
        assert_eq!(exposure_score(128.0, 0.0, &cfg), 1.0);
        assert!((exposure_score(35.0, 0.0, &cfg) - 0.5).abs() < 1e-6);
        assert_eq!(exposure_score(255.0, 0.0, &cfg), 0.0);
        assert!((exposure_score(128.0, 0.15, &cfg) - 0.5).abs() < 1e-6);
        let plane = vec![250.0; 36];
        assert_eq!(exposure_stats(&plane, 6, 6), (250.0, 1.0));
    }

    #[test]
    fn assess_combines_geometrically() {
        let cfg = QualityConfig::default();
        let mut chip = RgbImage::new(150, 150);
        for (x, y, p) in chip.enumerate_pixels_mut() {
            let v = if (x / 3 + y / 3) % 2 == 0 { 90 } else { 160 };
            *p = image::Rgb([v, v, v]);
        }
        let bbox = BoundingBox {
            x: 0.0,
            y: 0.0,
            width: 120.0,
            height: 150.0,
        };
        let q = assess(
            &bbox,
            &lm((40.0, 50.0), (100.0, 50.0), (70.0, 80.0)),
            &chip,
            &cfg,
        );
        assert_eq!(q.size, 1.0);
        assert_eq!(q.pose, 1.0);
        assert_eq!(q.exposure, 1.0);
        assert!(q.sharpness > 0.9);
        assert!((q.score - q.sharpness.powf(0.25)).abs() < 1e-6);
        let dark = RgbImage::new(150, 150);
        let q = assess(
            &bbox,
            &lm((40.0, 50.0), (100.0, 50.0), (70.0, 80.0)),
            &dark,
            &cfg,
        );
        assert_eq!(q.score, 0.0);
    }
}
