//! Plane projective maps (homographies) and perspective warps. Every geometric transform of the
//! simulation returns the map from source-image coordinates to output coordinates, so the
//! evaluation knows where each source face (and its landmarks) should appear in the output.

use image::RgbImage;

/// A 3x3 projective map, row-major: `(x, y) -> ((m0 x + m1 y + m2) / w, (m3 x + m4 y + m5) / w)`
/// with `w = m6 x + m7 y + m8`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Homography {
    /// Row-major coefficients.
    pub m: [f64; 9],
}

impl Default for Homography {
    fn default() -> Self {
        Self::IDENTITY
    }
}

impl Homography {
    /// The identity map.
    pub const IDENTITY: Self = Self {
        m: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
    };

    /// Translation by `(tx, ty)`.
    pub fn translation(tx: f64, ty: f64) -> Self {
        Self {
            m: [1.0, 0.0, tx, 0.0, 1.0, ty, 0.0, 0.0, 1.0],
        }
    }

    /// Scaling about the origin.
    pub fn scale(sx: f64, sy: f64) -> Self {
        Self {
            m: [sx, 0.0, 0.0, 0.0, sy, 0.0, 0.0, 0.0, 1.0],
        }
    }

    /// Rotation by `degrees` (clockwise on screen, y pointing down) about `(cx, cy)`.
    pub fn rotation_about(cx: f64, cy: f64, degrees: f64) -> Self {
        let (s, c) = degrees.to_radians().sin_cos();
        Self::translation(-cx, -cy)
            .then(&Self {
                m: [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0],
            })
            .then(&Self::translation(cx, cy))
    }

    /// `self` first, then `next`: the map `p -> next(self(p))`.
    pub fn then(&self, next: &Homography) -> Homography {
        let (a, b) = (&next.m, &self.m);
        let mut m = [0.0; 9];
        for r in 0..3 {
            for c in 0..3 {
                m[r * 3 + c] = (0..3).map(|k| a[r * 3 + k] * b[k * 3 + c]).sum();
            }
        }
        Homography { m }
    }

    /// Maps a point; `None` when it goes to infinity.
    pub fn apply(&self, x: f64, y: f64) -> Option<(f64, f64)> {
        let m = &self.m;
        let w = m[6] * x + m[7] * y + m[8];
        if w.abs() < 1e-12 || !w.is_finite() {
            return None;
        }
        Some((
            (m[0] * x + m[1] * y + m[2]) / w,
            (m[3] * x + m[4] * y + m[5]) / w,
        ))
    }

    /// The inverse map, or `None` when singular.
    pub fn inverse(&self) -> Option<Homography> {
        let [a, b, c, d, e, f, g, h, i] = self.m;
        let co = [
            e * i - f * h,
            -(d * i - f * g),
            d * h - e * g,
            -(b * i - c * h),
            a * i - c * g,
            -(a * h - b * g),
            b * f - c * e,
            -(a * f - c * d),
            a * e - b * d,
        ];
        let det = a * co[0] + b * co[1] + c * co[2];
        if det.abs() < 1e-12 || !det.is_finite() {
            return None;
        }
        // Inverse = adjugate / det; the adjugate is the transposed cofactor matrix.
        let mut m = [0.0; 9];
        for r in 0..3 {
            for c in 0..3 {
                m[r * 3 + c] = co[c * 3 + r] / det;
            }
        }
        Some(Homography { m })
    }

    /// The map taking the four `src` corners to the four `dst` corners (direct linear transform
    /// with `m8 = 1`), or `None` for degenerate quadrilaterals.
    pub fn from_quad(src: [(f64, f64); 4], dst: [(f64, f64); 4]) -> Option<Homography> {
        let mut a = [[0.0f64; 9]; 8];
        for (k, (&(x, y), &(u, v))) in src.iter().zip(dst.iter()).enumerate() {
            a[2 * k] = [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u];
            a[2 * k + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v];
        }
        let h = solve8(a)?;
        Some(Homography {
            m: [h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], 1.0],
        })
    }
}

/// Gaussian elimination with partial pivoting of an 8x8 system given as `[A | b]` rows.
#[allow(clippy::needless_range_loop)] // Two rows of `a` are read in step.
fn solve8(mut a: [[f64; 9]; 8]) -> Option<[f64; 8]> {
    for col in 0..8 {
        let pivot = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        for row in 0..8 {
            if row != col {
                let f = a[row][col] / a[col][col];
                if f != 0.0 {
                    for k in col..9 {
                        a[row][k] -= f * a[col][k];
                    }
                }
            }
        }
    }
    let mut x = [0.0; 8];
    for (i, xi) in x.iter_mut().enumerate() {
        *xi = a[i][8] / a[i][i];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Bilinear sample of `img` at `(x, y)` with clamp-to-edge.
pub fn sample_bilinear(img: &RgbImage, x: f64, y: f64) -> [f64; 3] {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let x0 = x.floor() as i64;
    let y0 = y.floor() as i64;
    let (fx, fy) = (x - x0 as f64, y - y0 as f64);
    let px = |xx: i64, yy: i64| {
        let p = img.get_pixel(xx.clamp(0, w - 1) as u32, yy.clamp(0, h - 1) as u32);
        [f64::from(p[0]), f64::from(p[1]), f64::from(p[2])]
    };
    let (a, b, c, d) = (
        px(x0, y0),
        px(x0 + 1, y0),
        px(x0, y0 + 1),
        px(x0 + 1, y0 + 1),
    );
    let mut out = [0.0; 3];
    for k in 0..3 {
        let t = a[k] + (b[k] - a[k]) * fx;
        let u = c[k] + (d[k] - c[k]) * fx;
        out[k] = t + (u - t) * fy;
    }
    out
}

/// Draws `src` onto `canvas` through `map` (source → canvas coordinates), bilinear, leaving
/// canvas pixels whose pre-image falls outside `src` untouched. A singular map draws nothing.
pub fn warp_onto(canvas: &mut RgbImage, src: &RgbImage, map: &Homography) {
    let Some(inv) = map.inverse() else {
        return;
    };
    if src.width() == 0 || src.height() == 0 {
        return;
    }
    let (sw, sh) = (f64::from(src.width()), f64::from(src.height()));
    let (cw, ch) = canvas.dimensions();
    for v in 0..ch {
        for u in 0..cw {
            let Some((x, y)) = inv.apply(f64::from(u), f64::from(v)) else {
                continue;
            };
            if x < -0.5 || y < -0.5 || x > sw - 0.5 || y > sh - 0.5 {
                continue;
            }
            let s = sample_bilinear(src, x, y);
            canvas.put_pixel(
                u,
                v,
                image::Rgb(s.map(|c| c.round().clamp(0.0, 255.0) as u8)),
            );
        }
    }
}

/// `src` warped through `map` into a new `out_w x out_h` image; output pixels whose pre-image
/// falls outside `src` take the nearest edge pixel (no black corners).
pub fn warp_clamped(src: &RgbImage, map: &Homography, out_w: u32, out_h: u32) -> RgbImage {
    let mut out = RgbImage::new(out_w, out_h);
    let Some(inv) = map.inverse() else {
        return out;
    };
    if src.width() == 0 || src.height() == 0 {
        return out;
    }
    for (u, v, p) in out.enumerate_pixels_mut() {
        if let Some((x, y)) = inv.apply(f64::from(u), f64::from(v)) {
            let s = sample_bilinear(src, x, y);
            *p = image::Rgb(s.map(|c| c.round().clamp(0.0, 255.0) as u8));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn close(a: (f64, f64), b: (f64, f64), tol: f64) {
        assert!(
            (a.0 - b.0).abs() < tol && (a.1 - b.1).abs() < tol,
            "{a:?} vs {b:?}"
        );
    }

    #[test]
    fn composition_and_inverse() {
        let h = Homography::rotation_about(10.0, 20.0, 30.0)
            .then(&Homography::scale(2.0, 0.5))
            .then(&Homography::translation(3.0, -4.0));
        let p = h.apply(7.0, 9.0).unwrap();
        let back = h.inverse().unwrap().apply(p.0, p.1).unwrap();
        close(back, (7.0, 9.0), 1e-9);
        // The rotation centre is fixed by the rotation alone.
        close(
            Homography::rotation_about(10.0, 20.0, 30.0)
                .apply(10.0, 20.0)
                .unwrap(),
            (10.0, 20.0),
            1e-9,
        );
        // 90 degrees clockwise on screen: +x goes to +y.
        close(
            Homography::rotation_about(0.0, 0.0, 90.0)
                .apply(1.0, 0.0)
                .unwrap(),
            (0.0, 1.0),
            1e-9,
        );
        assert!(Homography::scale(0.0, 1.0).inverse().is_none());
    }

    #[test]
    fn quad_map_hits_its_corners_and_is_projective() {
        let src = [(0.0, 0.0), (100.0, 0.0), (100.0, 50.0), (0.0, 50.0)];
        let dst = [(10.0, 12.0), (95.0, 5.0), (105.0, 70.0), (3.0, 60.0)];
        let h = Homography::from_quad(src, dst).unwrap();
        for (s, d) in src.iter().zip(dst.iter()) {
            close(h.apply(s.0, s.1).unwrap(), *d, 1e-6);
        }
        assert!(
            h.m[6] != 0.0 || h.m[7] != 0.0,
            "a trapezoid needs perspective"
        );
        let degenerate = [(0.0, 0.0), (0.0, 0.0), (0.0, 0.0), (1.0, 1.0)];
        assert!(Homography::from_quad(degenerate, dst).is_none());
    }

    #[test]
    fn warps_move_a_marker_where_the_map_says() {
        let mut src = RgbImage::from_pixel(60, 40, image::Rgb([0, 0, 0]));
        for dy in 0..3 {
            for dx in 0..3 {
                src.put_pixel(19 + dx, 9 + dy, image::Rgb([255, 255, 255]));
            }
        }
        let map = Homography::rotation_about(30.0, 20.0, 12.0)
            .then(&Homography::scale(1.5, 1.5))
            .then(&Homography::translation(10.0, 5.0));
        let (ex, ey) = map.apply(20.0, 10.0).unwrap();
        let bright = |img: &RgbImage| {
            let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
            for (x, y, p) in img.enumerate_pixels() {
                let w = f64::from(p[0]);
                sx += w * f64::from(x);
                sy += w * f64::from(y);
                n += w;
            }
            (sx / n, sy / n)
        };
        let out = warp_clamped(&src, &map, 120, 90);
        close(bright(&out), (ex, ey), 1.0);

        let mut canvas = RgbImage::from_pixel(120, 90, image::Rgb([0, 0, 0]));
        warp_onto(&mut canvas, &src, &map);
        close(bright(&canvas), (ex, ey), 1.0);
    }

    #[test]
    fn warp_onto_leaves_the_outside_alone() {
        let src = RgbImage::from_pixel(10, 10, image::Rgb([200, 100, 50]));
        let mut canvas = RgbImage::from_pixel(40, 40, image::Rgb([1, 2, 3]));
        warp_onto(&mut canvas, &src, &Homography::translation(15.0, 15.0));
        assert_eq!(canvas.get_pixel(0, 0).0, [1, 2, 3]);
        assert_eq!(canvas.get_pixel(39, 39).0, [1, 2, 3]);
        assert_eq!(canvas.get_pixel(20, 20).0, [200, 100, 50]);
    }
}
