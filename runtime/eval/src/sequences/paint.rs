//! The eye and mouth edits the head model's warp does not make: a closed eye (the upper lid's
//! own pixels slid down over the eye, [`slide_lids`]) and the dark interior of an open mouth
//! (a polygon painted with a feathered edge, a soft 1.5 px ramp, so no hard seam gives the edit
//! away to a detector at camera resolution).

use image::RgbImage;

use super::face::{EYE_A, EYE_B, Points68, centroid};
use crate::geometry::sample_bilinear;

/// Signed distance from `p` to the polygon `poly` (negative inside).
fn signed_distance(poly: &[(f64, f64)], p: (f64, f64)) -> f64 {
    let n = poly.len();
    let mut d = f64::INFINITY;
    let mut inside = false;
    for i in 0..n {
        let a = poly[i];
        let b = poly[(i + 1) % n];
        // Distance to the segment.
        let (ex, ey) = (b.0 - a.0, b.1 - a.1);
        let len2 = ex * ex + ey * ey;
        let t = if len2 > 0.0 {
            (((p.0 - a.0) * ex + (p.1 - a.1) * ey) / len2).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let (qx, qy) = (a.0 + t * ex, a.1 + t * ey);
        d = d.min((p.0 - qx).hypot(p.1 - qy));
        // Even-odd crossing test.
        if (a.1 > p.1) != (b.1 > p.1) {
            let x = a.0 + (p.1 - a.1) / (b.1 - a.1) * (b.0 - a.0);
            if p.0 < x {
                inside = !inside;
            }
        }
    }
    if inside { -d } else { d }
}

/// Blends `colour(x, y)` into `img` inside `poly` grown by `grow` pixels, with a soft edge of
/// `feather` pixels and at most `opacity`.
fn fill(
    img: &mut RgbImage,
    poly: &[(f64, f64)],
    grow: f64,
    feather: f64,
    opacity: f64,
    colour: impl Fn(u32, u32) -> [f64; 3],
) {
    if poly.len() < 3 {
        return;
    }
    let pad = grow + feather + 1.0;
    let x0 = poly.iter().map(|p| p.0).fold(f64::INFINITY, f64::min) - pad;
    let x1 = poly.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max) + pad;
    let y0 = poly.iter().map(|p| p.1).fold(f64::INFINITY, f64::min) - pad;
    let y1 = poly.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max) + pad;
    let (w, h) = (img.width() as f64, img.height() as f64);
    let (xa, xb) = (x0.max(0.0) as u32, x1.min(w - 1.0).max(0.0) as u32);
    let (ya, yb) = (y0.max(0.0) as u32, y1.min(h - 1.0).max(0.0) as u32);
    for y in ya..=yb {
        for x in xa..=xb {
            let d = signed_distance(poly, (f64::from(x), f64::from(y))) - grow;
            let a = opacity * (0.5 - d / feather.max(1e-6)).clamp(0.0, 1.0);
            if a <= 0.0 {
                continue;
            }
            let c = colour(x, y);
            let p = img.get_pixel_mut(x, y);
            for k in 0..3 {
                let v = f64::from(p[k]) * (1.0 - a) + c[k] * a;
                p[k] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// Median colour of the pixels in a disc.
fn median_colour(img: &RgbImage, c: (f64, f64), r: f64) -> [f64; 3] {
    let mut ch: [Vec<u8>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let (w, h) = (img.width() as i64, img.height() as i64);
    let ri = r.ceil() as i64;
    for dy in -ri..=ri {
        for dx in -ri..=ri {
            if (dx * dx + dy * dy) as f64 > r * r {
                continue;
            }
            let (x, y) = (c.0.round() as i64 + dx, c.1.round() as i64 + dy);
            if x < 0 || y < 0 || x >= w || y >= h {
                continue;
            }
            let p = img.get_pixel(x as u32, y as u32);
            for k in 0..3 {
                ch[k].push(p[k]);
            }
        }
    }
    let mut out = [128.0; 3];
    for k in 0..3 {
        if !ch[k].is_empty() {
            ch[k].sort_unstable();
            out[k] = f64::from(ch[k][ch[k].len() / 2]);
        }
    }
    out
}

/// How [`slide_lids`] closes an eye (the defaults are the renderer's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LidSlide {
    /// Where the closed lid's edge stops, as a fraction of the way from the upper lid to the
    /// lower one (below 1: the pinched-together opening stays a thin band under it).
    pub reach: f64,
    /// Height of the skin above the upper lid carried down with it, in eye widths (at most
    /// 0.85 of the way to the brow's landmark line): the lid unfolds, the brow's line stays.
    pub carry: f64,
    /// Darkening of the closed seam (the lashes), 0 none, 1 black at its centre.
    pub lash: f64,
    /// Half the seam's thickness, in eye widths (its darkening falls off linearly).
    pub seam: f64,
    /// How far the moved lid is blended toward the skin tone below the eye (0: the moved
    /// pixels as they are), most just above the seam, fading toward the carried skin's top.
    pub tone: f64,
}

impl Default for LidSlide {
    fn default() -> Self {
        Self {
            reach: 0.8,
            carry: 0.6,
            lash: 1.0,
            seam: 0.1,
            tone: 0.8,
        }
    }
}

/// A smooth function through `knots` (x increasing): a cubic Hermite spline with finite-
/// difference tangents, constant beyond the ends.
fn hermite(knots: &[(f64, f64)], x: f64) -> f64 {
    let n = knots.len();
    if n == 0 {
        return 0.0;
    }
    if x <= knots[0].0 {
        return knots[0].1;
    }
    if x >= knots[n - 1].0 {
        return knots[n - 1].1;
    }
    let slope =
        |i: usize, j: usize| (knots[j].1 - knots[i].1) / (knots[j].0 - knots[i].0).max(1e-9);
    let tangent = |k: usize| match k {
        0 => slope(0, 1),
        k if k == n - 1 => slope(n - 2, n - 1),
        k => slope(k - 1, k + 1),
    };
    let k = (0..n - 1).find(|&k| x <= knots[k + 1].0).unwrap_or(n - 2);
    let (x0, y0) = knots[k];
    let (x1, y1) = knots[k + 1];
    let h = (x1 - x0).max(1e-9);
    let t = (x - x0) / h;
    let (t2, t3) = (t * t, t * t * t);
    (2.0 * t3 - 3.0 * t2 + 1.0) * y0
        + (t3 - 2.0 * t2 + t) * h * tangent(k)
        + (-2.0 * t3 + 3.0 * t2) * y1
        + (t3 - t2) * h * tangent(k + 1)
}

/// Closes both eyes by `amount` (0 open, 1 shut) the way an eye closes: the upper lid slides
/// down over the eye. Pixels are moved: in each eye's own frame (x along the corners, y down),
/// the column between the skin `style.carry` eye widths above the upper lid and the new lid
/// edge samples the column between that skin and the upper lid (the lid and the skin above it
/// stretched down over the iris), and the rest of the opening is pinched into the band between
/// the new edge and the lower lid; the lower lid, the corners, the brow's line and everything
/// outside stay. Two touches are painted on the moved pixels: the lid is blended toward the
/// skin below the eye (`style.tone`) and the seam is darkened from `amount` 0.6 on (the lashes,
/// `style.lash`, `style.seam`). `lm` are the landmarks of the (already posed) face.
pub fn slide_lids(img: &mut RgbImage, lm: &Points68, amount: f64, style: &LidSlide) {
    let amount = amount.clamp(0.0, 1.0);
    if amount <= 0.0 {
        return;
    }
    let src = img.clone();
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    for (eye, brow) in [
        (EYE_A, [17usize, 18, 19, 20, 21]),
        (EYE_B, [22, 23, 24, 25, 26]),
    ] {
        let a = lm[eye[0]];
        let b = lm[eye[3]];
        let width = (b.0 - a.0).hypot(b.1 - a.1);
        if width < 4.0 || !width.is_finite() {
            continue;
        }
        let ex = ((b.0 - a.0) / width, (b.1 - a.1) / width);
        let ey = (-ex.1, ex.0);
        let local = |p: (f64, f64)| {
            let (dx, dy) = (p.0 - a.0, p.1 - a.1);
            (dx * ex.0 + dy * ex.1, dx * ey.0 + dy * ey.1)
        };
        // Lid knots, x strictly increasing between the corners.
        let knots = |mid: [usize; 2]| {
            let mut k = vec![(0.0, 0.0)];
            let mut last = 0.0;
            for i in mid {
                let (x, y) = local(lm[i]);
                let x = x.clamp(last + 0.05 * width, 0.95 * width);
                last = x;
                k.push((x, y));
            }
            k.push(local(b));
            k
        };
        let upper = knots([eye[1], eye[2]]);
        let lower = knots([eye[5], eye[4]]);
        // The brow's height above the eye (y is negative above).
        let brow_y = brow.iter().map(|&i| local(lm[i]).1).sum::<f64>() / brow.len() as f64;
        let lid_y = 0.5 * (upper[1].1 + upper[2].1);
        let carry = (style.carry * width).min(0.85 * (lid_y - brow_y).max(0.0));
        // The region: the eye's bounding box in image coordinates.
        let corners = [
            (0.0, lid_y - carry - 2.0),
            (width, lid_y - carry - 2.0),
            (width, 0.6 * width),
            (0.0, 0.6 * width),
        ];
        let img_pts = corners.map(|(x, y)| (a.0 + x * ex.0 + y * ey.0, a.1 + x * ex.1 + y * ey.1));
        let x0 = img_pts
            .iter()
            .map(|p| p.0)
            .fold(f64::INFINITY, f64::min)
            .floor() as i64;
        let x1 = img_pts
            .iter()
            .map(|p| p.0)
            .fold(f64::NEG_INFINITY, f64::max)
            .ceil() as i64;
        let y0 = img_pts
            .iter()
            .map(|p| p.1)
            .fold(f64::INFINITY, f64::min)
            .floor() as i64;
        let y1 = img_pts
            .iter()
            .map(|p| p.1)
            .fold(f64::NEG_INFINITY, f64::max)
            .ceil() as i64;
        let lash = style.lash * ((amount - 0.6) / 0.4).clamp(0.0, 1.0);
        let max_gap = (1..40)
            .map(|k| {
                let x = width * f64::from(k) / 40.0;
                hermite(&lower, x) - hermite(&upper, x)
            })
            .fold(1e-6, f64::max);
        let c = centroid(lm, &eye);
        let skin = median_colour(
            &src,
            (c.0 + 0.8 * width * ey.0, c.1 + 0.8 * width * ey.1),
            0.22 * width,
        );
        let seam_half = (style.seam * width).max(0.8);
        for py in y0.max(0)..=y1.min(h - 1) {
            for px in x0.max(0)..=x1.min(w - 1) {
                let (x, y) = local((px as f64, py as f64));
                if x <= 0.0 || x >= width {
                    continue;
                }
                let lo = hermite(&lower, x);
                let gap = lo - hermite(&upper, x);
                if gap <= 0.0 {
                    continue;
                }
                let up = hermite(&upper, x);
                let top = up - carry;
                let edge = up + (lo - up) * style.reach * amount;
                if y < top || y > lo {
                    continue;
                }
                // Output y → source y, piecewise linear; averaged over the pixel's height so the
                // pinched opening blends instead of aliasing.
                let map = |y: f64| {
                    if y <= top || y >= lo {
                        y
                    } else if y <= edge {
                        top + (y - top) * (up - top) / (edge - top).max(1e-9)
                    } else {
                        up + (y - edge) * (lo - up) / (lo - edge).max(1e-9)
                    }
                };
                let mut c = [0.0; 3];
                const N: usize = 5;
                for k in 0..N {
                    let yy = y + (k as f64 + 0.5) / N as f64 - 0.5;
                    let sy = map(yy);
                    let (sx, sy) = (a.0 + x * ex.0 + sy * ey.0, a.1 + x * ex.1 + sy * ey.1);
                    let v = sample_bilinear(&src, sx, sy);
                    for j in 0..3 {
                        c[j] += v[j] / N as f64;
                    }
                }
                if style.tone > 0.0 && y < edge {
                    // The lid's own surface, lit, over the eyeball: toward skin, fading upward.
                    let f = ((y - top) / (edge - top).max(1e-9)).clamp(0.0, 1.0);
                    let across = (gap / max_gap).clamp(0.0, 1.0).sqrt();
                    let k = style.tone * amount * f.powf(0.7) * across;
                    for j in 0..3 {
                        c[j] = c[j] * (1.0 - k) + skin[j] * k;
                    }
                }
                if lash > 0.0 {
                    // Darker along the seam, fading only right at the corners.
                    let along = (std::f64::consts::PI * x / width).sin().powf(0.15);
                    let d = ((y - edge) / seam_half).abs();
                    let k = lash * along * (1.0 - d).clamp(0.0, 1.0);
                    for v in &mut c {
                        *v *= 1.0 - k;
                    }
                }
                img.put_pixel(
                    px as u32,
                    py as u32,
                    image::Rgb(c.map(|v| v.round().clamp(0.0, 255.0) as u8)),
                );
            }
        }
    }
}

/// Paints the opening between the inner lips (60–67) dark: a mouth interior, darkest at the
/// centre, with a hint of upper teeth when the opening is tall enough.
pub fn mouth_interior(img: &mut RgbImage, lm: &Points68) {
    let poly: Vec<(f64, f64)> = (60..68).map(|i| lm[i]).collect();
    let c = centroid(lm, &[60, 61, 62, 63, 64, 65, 66, 67]);
    let width = (lm[64].0 - lm[60].0).hypot(lm[64].1 - lm[60].1).max(2.0);
    let height = (lm[66].0 - lm[62].0).hypot(lm[66].1 - lm[62].1);
    let top = lm[62].1;
    fill(img, &poly, 0.0, 1.5, 1.0, |x, y| {
        let r = ((f64::from(x) - c.0) / (0.5 * width))
            .hypot((f64::from(y) - c.1) / (0.5 * height.max(1.0)));
        let base = [70.0, 30.0, 32.0].map(|v| v * (0.45 + 0.55 * r.clamp(0.0, 1.0)));
        if height > 8.0
            && f64::from(y) - top < 0.18 * height
            && (f64::from(x) - c.0).abs() < 0.3 * width
        {
            [205.0, 195.0, 180.0]
        } else {
            base
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::face::tests::frontal;
    use super::super::face::{FaceFrame, mouth_opened};
    use super::*;
    use image::Rgb;

    fn face_image() -> RgbImage {
        // Skin everywhere, white eye openings with dark irises.
        let lm = frontal();
        let mut img = RgbImage::from_pixel(640, 480, Rgb([200, 150, 120]));
        for eye in [EYE_A, EYE_B] {
            let poly: Vec<_> = eye.iter().map(|&i| lm[i]).collect();
            fill(&mut img, &poly, 0.0, 1.0, 1.0, |_, _| [240.0, 240.0, 240.0]);
            let c = centroid(&lm, &eye);
            fill(
                &mut img,
                &[
                    (c.0 - 5.0, c.1 - 5.0),
                    (c.0 + 5.0, c.1 - 5.0),
                    (c.0 + 5.0, c.1 + 5.0),
                    (c.0 - 5.0, c.1 + 5.0),
                ],
                0.0,
                1.0,
                1.0,
                |_, _| [40.0, 30.0, 20.0],
            );
        }
        img
    }

    /// A purple band of lid skin above each eye (up to 8 px above the upper lid), to follow.
    fn with_lid_band(mut img: RgbImage) -> RgbImage {
        let lm = frontal();
        for eye in [EYE_A, EYE_B] {
            let (a, b) = (lm[eye[0]], lm[eye[3]]);
            let poly = [
                (a.0, a.1 - 8.0),
                (lm[eye[1]].0, lm[eye[1]].1 - 8.0),
                (lm[eye[2]].0, lm[eye[2]].1 - 8.0),
                (b.0, b.1 - 8.0),
                (lm[eye[2]].0, lm[eye[2]].1 - 1.0),
                (lm[eye[1]].0, lm[eye[1]].1 - 1.0),
            ];
            fill(&mut img, &poly, 0.0, 1.0, 1.0, |_, _| [150.0, 90.0, 160.0]);
        }
        img
    }

    fn purple(p: &Rgb<u8>) -> bool {
        p[0] < 170 && i32::from(p[2]) > i32::from(p[1]) + 40
    }

    /// The lowest row of column `x` showing the lid band.
    fn lowest_purple(img: &RgbImage, x: u32) -> Option<u32> {
        (150..260).rev().find(|&y| purple(img.get_pixel(x, y)))
    }

    #[test]
    fn a_shut_lid_covers_the_iris_with_the_lid_moved_down() {
        let lm = frontal();
        let open = with_lid_band(face_image());
        let c = centroid(&lm, &EYE_A);
        let (cx, cy) = (c.0.round() as u32, c.1.round() as u32);
        assert!(open.get_pixel(cx, cy)[0] < 60, "the test face has an iris");
        // The lid's own pixels, untoned: the band above the eye comes down over the opening.
        let bare = LidSlide {
            tone: 0.0,
            lash: 0.0,
            ..LidSlide::default()
        };
        let mut moved = open.clone();
        slide_lids(&mut moved, &lm, 1.0, &bare);
        let (before, after) = (
            lowest_purple(&open, cx).unwrap(),
            lowest_purple(&moved, cx).unwrap(),
        );
        assert!(before < 213 && after > cy, "{before} → {after}");
        // As rendered: no iris and no white left above the seam, a dark seam near the lower lid.
        let mut shut = open.clone();
        slide_lids(&mut shut, &lm, 1.0, &LidSlide::default());
        for y in cy - 5..=cy {
            let p = shut.get_pixel(cx, y);
            assert!(p[0] > 120 && p[2] < 200, "row {y}: {p:?}");
        }
        let seam = (cy..=lm[EYE_A[4]].1.round() as u32)
            .map(|y| shut.get_pixel(cx, y)[0])
            .min()
            .unwrap();
        assert!(seam < 60, "{seam}");
        // Nothing else moves: the lower lid and below, the brow, the corners' outside, the
        // rest of the face.
        for (x, y, p) in shut.enumerate_pixels() {
            let (xf, yf) = (f64::from(x), f64::from(y));
            let in_eye = [EYE_A, EYE_B].iter().any(|e| {
                let (a, b) = (lm[e[0]], lm[e[3]]);
                xf > a.0 && xf < b.0 && yf > lm[19].1 && yf <= lm[e[4]].1 + 1.0
            });
            if !in_eye {
                assert_eq!(p, open.get_pixel(x, y), "({x}, {y})");
            }
        }
        // The brow's line (y 195) stays.
        assert_eq!(shut.get_pixel(cx, 195), open.get_pixel(cx, 195));
        // Open: nothing at all changes.
        let mut same = open.clone();
        slide_lids(&mut same, &lm, 0.0, &LidSlide::default());
        assert_eq!(same, open);
    }

    #[test]
    fn a_half_closed_lid_covers_the_top_of_the_eye_only() {
        let lm = frontal();
        let open = with_lid_band(face_image());
        let c = centroid(&lm, &EYE_A);
        let mut half = open.clone();
        slide_lids(&mut half, &lm, 0.3, &LidSlide::default());
        // The sclera beside the iris: still white low in the opening, covered at its top.
        let x = (c.0 + 8.0) as u32;
        let low = half.get_pixel(x, (c.1 + 3.0) as u32);
        assert!(low[2] > 200, "{low:?}");
        let top = lowest_purple(&half, x).unwrap();
        assert!(top > lowest_purple(&open, x).unwrap() + 1, "{top}");
    }

    #[test]
    fn the_lid_spline_passes_through_its_knots() {
        let k = [(0.0, 0.0), (10.0, -6.0), (20.0, -6.0), (30.0, 0.0)];
        for p in k {
            assert!((hermite(&k, p.0) - p.1).abs() < 1e-9);
        }
        assert!(hermite(&k, 15.0) < -5.9 && hermite(&k, 15.0) > -7.0);
        assert_eq!(hermite(&k, -5.0), 0.0);
    }

    #[test]
    fn mouth_interior_is_dark() {
        let lm = frontal();
        let f = FaceFrame::of(&lm).unwrap();
        let open = mouth_opened(&lm, &f, 24.0);
        let mut img = face_image();
        mouth_interior(&mut img, &open);
        let c = centroid(&open, &[62, 66]);
        let p = img.get_pixel(c.0 as u32, (c.1 + 4.0) as u32);
        assert!(p[0] < 80, "{p:?}");
    }

    #[test]
    fn signed_distance_sign() {
        let sq = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)];
        assert!((signed_distance(&sq, (5.0, 5.0)) + 5.0).abs() < 1e-9);
        assert!((signed_distance(&sq, (13.0, 5.0)) - 3.0).abs() < 1e-9);
    }
}
