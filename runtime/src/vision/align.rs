//! Face alignment: the least-squares similarity transform (Umeyama, rotation + uniform scale +
//! translation) from the five MTCNN landmarks onto dlib's 150x150 template, and the bilinear warp
//! that produces the face chip the embedding model expects.

use image::RgbImage;

use super::detect::Landmarks;
use super::imgproc::{Affine, warp_affine_bilinear};

/// Side of dlib's aligned face chip, in pixels.
pub const CHIP_SIZE: u32 = 150;

/// Where the five landmarks (left eye, right eye, nose, left mouth, right mouth; image order)
/// land in dlib's 150x150 chip.
pub const DLIB_TEMPLATE: [[f64; 2]; 5] = [
    [47.5, 45.1],
    [100.1, 43.6],
    [71.9, 77.7],
    [52.7, 100.1],
    [100.2, 97.9],
];

/// Why a face could not be aligned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlignError {
    /// The landmarks coincide or are not finite, so no transform exists.
    #[error("face landmarks are degenerate; cannot align the face")]
    Degenerate,
}

/// An aligned face: the chip and the image-to-chip transform.
#[derive(Debug, Clone, PartialEq)]
pub struct AlignedFace {
    /// The `CHIP_SIZE x CHIP_SIZE` RGB chip.
    pub chip: RgbImage,
    /// Maps image coordinates to chip coordinates.
    pub transform: Affine,
    /// Root-mean-square distance (chip pixels) between the mapped landmarks and the template: a
    /// landmark-consistency measure (large for odd poses or bad landmarks).
    pub residual: f64,
}

/// Least-squares similarity transform mapping `src[i]` onto `dst[i]` (Umeyama 1991, restricted to
/// proper rotations): in 2-D the optimal `s R` is `[a -b; b a]` with `a = sum(p . q) / sum |p|^2`
/// and `b = sum(p x q) / sum |p|^2` over centred points, and `t = mean(q) - s R mean(p)`.
pub fn similarity_transform(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Option<Affine> {
    let n = src.len();
    if n < 2 || dst.len() != n {
        return None;
    }
    let nf = n as f64;
    let mean = |pts: &[[f64; 2]]| {
        let (sx, sy) = pts
            .iter()
            .fold((0.0, 0.0), |(ax, ay), p| (ax + p[0], ay + p[1]));
        [sx / nf, sy / nf]
    };
    let ms = mean(src);
    let md = mean(dst);
    let (mut dot, mut cross, mut var) = (0.0, 0.0, 0.0);
    for (p, q) in src.iter().zip(dst) {
        let (px, py) = (p[0] - ms[0], p[1] - ms[1]);
        let (qx, qy) = (q[0] - md[0], q[1] - md[1]);
        dot += px * qx + py * qy;
        cross += px * qy - py * qx;
        var += px * px + py * py;
    }
    if !(var.is_finite() && dot.is_finite() && cross.is_finite()) || var < 1e-9 {
        return None;
    }
    let a = dot / var;
    let b = cross / var;
    let tx = md[0] - (a * ms[0] - b * ms[1]);
    let ty = md[1] - (b * ms[0] + a * ms[1]);
    Some(Affine {
        m: [a, -b, tx, b, a, ty],
    })
}

/// The image-to-chip transform for `landmarks` and its RMS residual in chip pixels.
pub fn chip_transform(landmarks: &Landmarks) -> Result<(Affine, f64), AlignError> {
    let src: Vec<[f64; 2]> = landmarks
        .points()
        .iter()
        .map(|p| [f64::from(p.x), f64::from(p.y)])
        .collect();
    let t = similarity_transform(&src, &DLIB_TEMPLATE).ok_or(AlignError::Degenerate)?;
    let sq: f64 = src
        .iter()
        .zip(DLIB_TEMPLATE)
        .map(|(p, q)| {
            let (x, y) = t.apply(p[0], p[1]);
            (x - q[0]).powi(2) + (y - q[1]).powi(2)
        })
        .sum();
    Ok((t, (sq / src.len() as f64).sqrt()))
}

/// Samples per axis for the chip warp: about one per source pixel under each chip pixel
/// (`ceil(1 / scale)`, 1–4), so large faces are averaged rather than aliased.
pub fn supersampling(transform: &Affine) -> u32 {
    let scale = transform.m[0].hypot(transform.m[3]);
    if !scale.is_finite() || scale <= 0.0 {
        return 1;
    }
    ((1.0 / scale).ceil() as u32).clamp(1, 4)
}

/// Aligns the face with `landmarks` in `img` into a dlib-style 150x150 chip (bilinear, black
/// outside the image).
pub fn align_face(img: &RgbImage, landmarks: &Landmarks) -> Result<AlignedFace, AlignError> {
    align_to(img, landmarks, &DLIB_TEMPLATE, CHIP_SIZE)
}

/// Aligns the face with `landmarks` in `img` onto any five-point `template` of a `size x size`
/// chip (the second-opinion embeddings use their own templates, see
/// [`super::second_opinion`]).
pub fn align_to(
    img: &RgbImage,
    landmarks: &Landmarks,
    template: &[[f64; 2]; 5],
    size: u32,
) -> Result<AlignedFace, AlignError> {
    let src: Vec<[f64; 2]> = landmarks
        .points()
        .iter()
        .map(|p| [f64::from(p.x), f64::from(p.y)])
        .collect();
    let transform = similarity_transform(&src, template).ok_or(AlignError::Degenerate)?;
    let sq: f64 = src
        .iter()
        .zip(template)
        .map(|(p, q)| {
            let (x, y) = transform.apply(p[0], p[1]);
            (x - q[0]).powi(2) + (y - q[1]).powi(2)
        })
        .sum();
    let residual = (sq / src.len() as f64).sqrt();
    let inv = transform.inverse().ok_or(AlignError::Degenerate)?;
    let chip = warp_affine_bilinear(img, &inv, size, size, supersampling(&transform));
    Ok(AlignedFace {
        chip,
        transform,
        residual,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::detect::Point;
    use super::*;

    fn landmarks_from(pts: [[f64; 2]; 5]) -> Landmarks {
        let p = |i: usize| Point {
            x: pts[i][0] as f32,
            y: pts[i][1] as f32,
        };
        Landmarks {
            left_eye: p(0),
            right_eye: p(1),
            nose: p(2),
            mouth_left: p(3),
            mouth_right: p(4),
        }
    }

    #[test]
    fn recovers_a_known_similarity() {
        // dst = 2 * R(30 deg) * src + (5, -3)
        let (s, th) = (2.0f64, 30f64.to_radians());
        let src = [[1.0, 2.0], [4.0, 1.0], [3.0, 5.0], [0.0, 0.0], [7.0, 3.0]];
        let dst: Vec<[f64; 2]> = src
            .iter()
            .map(|p| {
                [
                    s * (th.cos() * p[0] - th.sin() * p[1]) + 5.0,
                    s * (th.sin() * p[0] + th.cos() * p[1]) - 3.0,
                ]
            })
            .collect();
        let t = similarity_transform(&src, &dst).unwrap();
        assert!((t.m[0] - s * th.cos()).abs() < 1e-9);
        assert!((t.m[3] - s * th.sin()).abs() < 1e-9);
        assert!((t.m[2] - 5.0).abs() < 1e-9);
        assert!((t.m[5] + 3.0).abs() < 1e-9);
    }

    #[test]
    fn least_squares_with_noise_matches_template_closely() {
        // Template scaled by 0.5, shifted, with small noise: residual small, scale ~2 back.
        let mut pts = DLIB_TEMPLATE;
        for (i, p) in pts.iter_mut().enumerate() {
            p[0] = p[0] * 0.5 + 100.0 + if i % 2 == 0 { 0.3 } else { -0.3 };
            p[1] = p[1] * 0.5 + 50.0;
        }
        let (t, residual) = chip_transform(&landmarks_from(pts)).unwrap();
        assert!((t.m[0] - 2.0).abs() < 0.05, "{t:?}");
        assert!(t.m[1].abs() < 0.05);
        assert!(residual < 1.0, "{residual}");
    }

    #[test]
    fn supersampling_follows_the_scale() {
        let at = |s: f64| Affine {
            m: [s, 0.0, 0.0, 0.0, s, 0.0],
        };
        assert_eq!(supersampling(&at(2.0)), 1);
        assert_eq!(supersampling(&at(1.0)), 1);
        assert_eq!(supersampling(&at(0.5)), 2);
        assert_eq!(supersampling(&at(0.3)), 4);
        assert_eq!(supersampling(&at(0.01)), 4);
        assert_eq!(supersampling(&at(0.0)), 1);
    }

    #[test]
    fn degenerate_points_fail() {
        let same = [[10.0, 10.0]; 5];
        assert_eq!(
            chip_transform(&landmarks_from(same)).unwrap_err(),
            AlignError::Degenerate
        );
        let nan = [
            [f64::NAN, 0.0],
            [1.0, 1.0],
            [2.0, 2.0],
            [3.0, 3.0],
            [4.0, 4.0],
        ];
        assert!(chip_transform(&landmarks_from(nan)).is_err());
    }

    #[test]
    fn chip_of_template_positioned_face_is_identity_crop() {
        // Landmarks exactly at the template in a 150x150 image: the chip equals the image.
        let mut img = RgbImage::new(150, 150);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([x as u8, y as u8, 99]);
        }
        let aligned = align_face(&img, &landmarks_from(DLIB_TEMPLATE)).unwrap();
        assert!(aligned.residual < 1e-4, "{}", aligned.residual);
        assert_eq!(aligned.chip, img);
    }
}
