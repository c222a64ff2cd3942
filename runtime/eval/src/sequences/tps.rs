//! Thin-plate spline warps: a smooth map through control points, used to move facial landmarks
//! (a head turn, a dropped jaw) while the background, pinned by fixed anchor points, stays put.
//!
//! The warp is backward: [`Tps::fit`] takes pairs `(output point, source point)` and the result
//! maps every output pixel to the source position it samples, so [`warp`] leaves no holes.

use image::{Rgb, RgbImage};

use crate::geometry::sample_bilinear;

/// A fitted 2-D thin-plate spline `R^2 -> R^2`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tps {
    centres: Vec<(f64, f64)>,
    /// Kernel weights per centre, for x and y.
    w: Vec<(f64, f64)>,
    /// Affine part `[a0 + a1 x + a2 y]` for x and y.
    a: [(f64, f64); 3],
}

fn kernel(r2: f64) -> f64 {
    if r2 <= 1e-12 { 0.0 } else { 0.5 * r2 * r2.ln() }
}

impl Tps {
    /// Fits the spline taking each `from[i]` exactly to `to[i]` (`regularisation` 0), or
    /// approximately with a smoothing term. `None` when the system is singular (e.g. fewer than
    /// three non-collinear points or duplicated points with different targets).
    pub fn fit(from: &[(f64, f64)], to: &[(f64, f64)], regularisation: f64) -> Option<Tps> {
        let n = from.len();
        if n < 3 || to.len() != n {
            return None;
        }
        let m = n + 3;
        // [K + λI  P] [w]   [v]
        // [P^T     0] [a] = [0]
        let mut a = vec![0.0f64; m * m];
        for i in 0..n {
            for j in 0..n {
                let (dx, dy) = (from[i].0 - from[j].0, from[i].1 - from[j].1);
                a[i * m + j] = kernel(dx * dx + dy * dy);
            }
            a[i * m + i] += regularisation;
            let p = [1.0, from[i].0, from[i].1];
            for k in 0..3 {
                a[i * m + n + k] = p[k];
                a[(n + k) * m + i] = p[k];
            }
        }
        let mut bx = vec![0.0; m];
        let mut by = vec![0.0; m];
        for i in 0..n {
            bx[i] = to[i].0;
            by[i] = to[i].1;
        }
        let (sx, sy) = solve2(a, m, bx, by)?;
        Some(Tps {
            centres: from.to_vec(),
            w: (0..n).map(|i| (sx[i], sy[i])).collect(),
            a: [
                (sx[n], sy[n]),
                (sx[n + 1], sy[n + 1]),
                (sx[n + 2], sy[n + 2]),
            ],
        })
    }

    /// The spline at `(x, y)`.
    pub fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let mut ox = self.a[0].0 + self.a[1].0 * x + self.a[2].0 * y;
        let mut oy = self.a[0].1 + self.a[1].1 * x + self.a[2].1 * y;
        for (c, w) in self.centres.iter().zip(&self.w) {
            let (dx, dy) = (x - c.0, y - c.1);
            let k = kernel(dx * dx + dy * dy);
            ox += w.0 * k;
            oy += w.1 * k;
        }
        (ox, oy)
    }
}

/// Gaussian elimination with partial pivoting of `a` (`m x m`, row-major) for two right-hand
/// sides at once.
#[allow(clippy::needless_range_loop)] // Rows of `a` are read in step.
fn solve2(
    mut a: Vec<f64>,
    m: usize,
    mut bx: Vec<f64>,
    mut by: Vec<f64>,
) -> Option<(Vec<f64>, Vec<f64>)> {
    for col in 0..m {
        let pivot =
            (col..m).max_by(|&i, &j| a[i * m + col].abs().total_cmp(&a[j * m + col].abs()))?;
        if a[pivot * m + col].abs() < 1e-12 {
            return None;
        }
        if pivot != col {
            for k in 0..m {
                a.swap(col * m + k, pivot * m + k);
            }
            bx.swap(col, pivot);
            by.swap(col, pivot);
        }
        let d = a[col * m + col];
        for row in col + 1..m {
            let f = a[row * m + col] / d;
            if f != 0.0 {
                for k in col..m {
                    a[row * m + k] -= f * a[col * m + k];
                }
                bx[row] -= f * bx[col];
                by[row] -= f * by[col];
            }
        }
    }
    let mut x = vec![0.0; m];
    let mut y = vec![0.0; m];
    for i in (0..m).rev() {
        let (mut sx, mut sy) = (bx[i], by[i]);
        for k in i + 1..m {
            sx -= a[i * m + k] * x[k];
            sy -= a[i * m + k] * y[k];
        }
        x[i] = sx / a[i * m + i];
        y[i] = sy / a[i * m + i];
    }
    (x.iter().chain(&y).all(|v| v.is_finite())).then_some((x, y))
}

/// Renders an `out_w x out_h` image whose pixel `(x, y)` samples `src` at `map(x, y)` (pixel
/// centres at integer coordinates). `map` is evaluated on a grid every `step` pixels and
/// interpolated bilinearly in between (a spline is smooth, so a step of 4 loses nothing
/// visible and saves most of the work).
pub fn warp(
    src: &RgbImage,
    out_w: u32,
    out_h: u32,
    step: u32,
    map: impl Fn(f64, f64) -> (f64, f64),
) -> RgbImage {
    let step = step.max(1);
    let gw = out_w.div_ceil(step) as usize + 1;
    let gh = out_h.div_ceil(step) as usize + 1;
    let mut grid = Vec::with_capacity(gw * gh);
    for gy in 0..gh {
        for gx in 0..gw {
            grid.push(map(
                f64::from(gx as u32 * step),
                f64::from(gy as u32 * step),
            ));
        }
    }
    let s = f64::from(step);
    let mut out = RgbImage::new(out_w, out_h);
    for (x, y, p) in out.enumerate_pixels_mut() {
        let (gx, gy) = ((x / step) as usize, (y / step) as usize);
        let (fx, fy) = (f64::from(x % step) / s, f64::from(y % step) / s);
        let g = |i: usize, j: usize| grid[j * gw + i];
        let (a, b, c, d) = (g(gx, gy), g(gx + 1, gy), g(gx, gy + 1), g(gx + 1, gy + 1));
        let sx = (a.0 * (1.0 - fx) + b.0 * fx) * (1.0 - fy) + (c.0 * (1.0 - fx) + d.0 * fx) * fy;
        let sy = (a.1 * (1.0 - fx) + b.1 * fx) * (1.0 - fy) + (c.1 * (1.0 - fx) + d.1 * fx) * fy;
        let v = sample_bilinear(src, sx, sy);
        *p = Rgb(v.map(|c| c.round().clamp(0.0, 255.0) as u8));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_its_control_points_and_is_affine_without_bending() {
        let from = [
            (0.0, 0.0),
            (10.0, 0.0),
            (0.0, 10.0),
            (10.0, 10.0),
            (5.0, 5.0),
        ];
        // A pure translation by (2, -3): the spline is that translation everywhere.
        let to: Vec<_> = from.iter().map(|p| (p.0 + 2.0, p.1 - 3.0)).collect();
        let t = Tps::fit(&from, &to, 0.0).unwrap();
        let (x, y) = t.apply(37.0, -4.0);
        assert!((x - 39.0).abs() < 1e-6 && (y + 7.0).abs() < 1e-6, "{x} {y}");
        // Move only the centre: control points are hit exactly, the corners stay.
        let mut bent = from.to_vec();
        bent[4] = (6.5, 5.0);
        let t = Tps::fit(&from, &bent, 0.0).unwrap();
        for (f, b) in from.iter().zip(&bent) {
            let (x, y) = t.apply(f.0, f.1);
            assert!((x - b.0).abs() < 1e-6 && (y - b.1).abs() < 1e-6);
        }
        // A point near the centre moves right, less than the centre did.
        let (x, _) = t.apply(5.0, 6.0);
        assert!(x > 5.0 && x < 6.5, "{x}");
    }

    #[test]
    fn degenerate_input_is_refused() {
        assert!(Tps::fit(&[(0.0, 0.0), (1.0, 1.0)], &[(0.0, 0.0), (1.0, 1.0)], 0.0).is_none());
        let line = [(0.0, 0.0), (1.0, 1.0), (2.0, 2.0)];
        assert!(Tps::fit(&line, &line, 0.0).is_none());
    }

    #[test]
    fn warp_with_identity_map_copies() {
        let mut img = RgbImage::new(9, 7);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = Rgb([(x * 20) as u8, (y * 30) as u8, 7]);
        }
        let out = warp(&img, 9, 7, 4, |x, y| (x, y));
        assert_eq!(out, img);
        let shifted = warp(&img, 9, 7, 3, |x, y| (x + 1.0, y));
        assert_eq!(shifted.get_pixel(2, 3), img.get_pixel(3, 3));
    }
}
