//! Pixels no warp can produce: a closed eye (the eyelid drawn over the eye opening in the
//! person's skin tone, with a lash line) and the dark interior of an open mouth.
//!
//! Both paint a polygon with a feathered edge (a soft 1.5 px ramp), so no hard seam gives the
//! edit away to a detector at camera resolution.

use image::RgbImage;

use super::face::{EYE_A, EYE_B, Points68, centroid};

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

/// Closes both eyes by `amount` (0 open, 1 shut): the upper lid (skin sampled from the cheek
/// below each eye, slightly shaded) comes down over the opening; from 0.6 on, a dark lash
/// line runs along where the lids meet. `lm` are the landmarks of the (already posed) face.
pub fn close_eyes(img: &mut RgbImage, lm: &Points68, amount: f64) {
    let amount = amount.clamp(0.0, 1.0);
    if amount <= 0.0 {
        return;
    }
    for eye in [EYE_A, EYE_B] {
        let p: Vec<(f64, f64)> = eye.iter().map(|&i| lm[i]).collect();
        let width = (p[3].0 - p[0].0).hypot(p[3].1 - p[0].1).max(2.0);
        // Skin: below the lower lid by ~0.8 eye widths, and beside the outer corner for tone.
        let c = centroid(lm, &eye);
        let below = (c.0, c.1 + 0.8 * width);
        let skin = median_colour(img, below, 0.22 * width);
        let brow = median_colour(img, (c.0, c.1 - 0.45 * width), 0.12 * width);
        // Lid tone: skin, shaded a little toward the brow's luminance.
        let lid = [0, 1, 2].map(|k| 0.85 * skin[k] + 0.15 * brow[k].min(skin[k]) - 6.0);
        // The lid polygon: the upper contour (0, 1, 2, 3) and the line it has come down to.
        let lower = [p[3], p[4], p[5], p[0]];
        let upper = [p[0], p[1], p[2], p[3]];
        let mut poly: Vec<(f64, f64)> = upper.to_vec();
        // Lid edge: interpolate from the upper contour to the lower one (reversed order).
        for (&u, &l) in upper.iter().rev().zip(lower.iter()) {
            poly.push((u.0 + (l.0 - u.0) * amount, u.1 + (l.1 - u.1) * amount));
        }
        // Lift the top edge a bit so the upper lid's crease is covered too.
        for q in poly.iter_mut().take(4) {
            q.1 -= 0.12 * width;
        }
        let shade = lid;
        fill(img, &poly, 0.08 * width, 1.5, 1.0, |_, y| {
            // Slightly darker toward the top (the lid's fold).
            let t = ((f64::from(y) - (c.1 - 0.3 * width)) / (0.6 * width)).clamp(0.0, 1.0);
            shade.map(|v| v * (0.93 + 0.07 * t))
        });
        if amount >= 0.6 {
            // Lash line along the meeting edge.
            let lash: Vec<(f64, f64)> = poly[4..].to_vec();
            let thick = (0.07 * width).max(1.0);
            let mut band: Vec<(f64, f64)> = lash.iter().map(|q| (q.0, q.1 - thick / 2.0)).collect();
            band.extend(lash.iter().rev().map(|q| (q.0, q.1 + thick / 2.0)));
            let strength = ((amount - 0.6) / 0.4).clamp(0.0, 1.0);
            fill(img, &band, 0.0, 1.2, 0.85 * strength, |_, _| {
                [38.0, 30.0, 30.0]
            });
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

    #[test]
    fn closing_covers_the_eye_with_skin() {
        let lm = frontal();
        let open = face_image();
        let mut shut = open.clone();
        close_eyes(&mut shut, &lm, 1.0);
        let c = centroid(&lm, &EYE_A);
        // The iris is gone: the centre is now close to skin, not dark.
        let p = shut.get_pixel(c.0 as u32, (c.1 - 3.0) as u32);
        assert!(p[0] > 150 && p[0] < 215, "{p:?}");
        // Far from the eyes nothing changed.
        assert_eq!(shut.get_pixel(320, 400), open.get_pixel(320, 400));
        // Half closed: the top of the opening is covered, the bottom still white.
        let mut half = open.clone();
        close_eyes(&mut half, &lm, 0.3);
        let lowest_white = half.get_pixel((c.0 + 8.0) as u32, (c.1 + 3.0) as u32);
        assert!(lowest_white[2] > 200, "{lowest_white:?}");
        let top = half.get_pixel((c.0 + 8.0) as u32, (c.1 - 5.0) as u32);
        assert!(top[2] < 150, "{top:?}");
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
