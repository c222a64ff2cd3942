//! Pure image resampling used by the models' pre-processing: TensorFlow-compatible area resize and
//! crop-and-resize (the MTCNN reference runs on TensorFlow), OpenCV-style bilinear crops (the PAD
//! models' source apps) and an inverse-mapped bilinear affine warp (face alignment).
//!
//! Everything here works on interleaved RGB buffers and writes into caller-provided slices, so
//! the pipeline can fill ONNX input tensors in place without intermediate copies.

use image::RgbImage;

/// Memory layout of a tensor written by the crop helpers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[H, W, C]` interleaved (TensorFlow-converted models).
    Hwc,
    /// `[C, H, W]` planar (PyTorch-converted models).
    Chw,
}

/// One output sample's contributions along one axis of an area resize: the first input index
/// and the weights of consecutive input cells (already clamped into the image).
#[derive(Debug, Clone)]
struct AreaTap {
    indices: Vec<usize>,
    weights: Vec<f32>,
}

/// Computes TensorFlow `ResizeArea` (align_corners = false) contributions along one axis.
fn area_taps(in_size: usize, out_size: usize) -> Vec<AreaTap> {
    let scale = in_size as f32 / out_size as f32;
    let bound = |v: i64| -> usize { v.clamp(0, in_size as i64 - 1) as usize };
    (0..out_size)
        .map(|o| {
            let in0 = o as f32 * scale;
            let in1 = (o + 1) as f32 * scale;
            let start = in0.floor() as i64;
            let end = in1.ceil() as i64;
            let mut tap = AreaTap {
                indices: Vec::with_capacity((end - start).max(1) as usize),
                weights: Vec::with_capacity((end - start).max(1) as usize),
            };
            for i in start..end {
                let fi = i as f32;
                let w = if fi < in0 {
                    if fi + 1.0 > in1 {
                        scale
                    } else {
                        fi + 1.0 - in0
                    }
                } else if fi + 1.0 > in1 {
                    in1 - fi
                } else {
                    1.0
                };
                tap.indices.push(bound(i));
                tap.weights.push(w);
            }
            tap
        })
        .collect()
}

/// Resizes `img` to `out_w x out_h` with TensorFlow's area interpolation (`tf.image.resize`,
/// method `AREA`), writing `v * scale + offset` HWC samples into `out` (resized to fit).
///
/// The affine normalisation is applied after averaging, which equals normalising first (the
/// weights sum to one) without a full-resolution `f32` copy of the image. Separable, vertical
/// pass first: whole input rows are accumulated with their row weights (a vectorisable loop),
/// then only the `out_h` accumulated rows are reduced horizontally. The weights are TensorFlow's;
/// only the summation order differs (relative differences ~1e-6).
pub fn resize_area(
    img: &RgbImage,
    out_w: usize,
    out_h: usize,
    scale: f32,
    offset: f32,
    out: &mut Vec<f32>,
) {
    out.clear();
    out.resize(out_w * out_h * 3, 0.0);
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    if in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 {
        return;
    }
    let raw = img.as_raw();
    let x_taps = area_taps(in_w, out_w);
    let y_taps = area_taps(in_h, out_h);
    let norm = scale / ((in_h as f32 / out_h as f32) * (in_w as f32 / out_w as f32));
    let row_len = in_w * 3;
    let mut acc = vec![0.0f32; row_len];
    for (oy, tap) in y_taps.iter().enumerate() {
        acc.fill(0.0);
        for (&iy, &w) in tap.indices.iter().zip(&tap.weights) {
            let row = &raw[iy * row_len..(iy + 1) * row_len];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += f32::from(v) * w;
            }
        }
        let dst = &mut out[oy * out_w * 3..(oy + 1) * out_w * 3];
        for (px, tap) in dst.chunks_exact_mut(3).zip(&x_taps) {
            let (mut r, mut g, mut b) = (0.0f32, 0.0f32, 0.0f32);
            for (&ix, &w) in tap.indices.iter().zip(&tap.weights) {
                let p = &acc[ix * 3..ix * 3 + 3];
                r += p[0] * w;
                g += p[1] * w;
                b += p[2] * w;
            }
            px[0] = r * norm + offset;
            px[1] = g * norm + offset;
            px[2] = b * norm + offset;
        }
    }
}

/// TensorFlow `crop_and_resize` (bilinear, extrapolation value 0 in normalised units) of one box
/// into an `out_size x out_size` HWC patch of `v * scale + offset` samples written to `out`
/// (`out_size * out_size * 3` samples).
///
/// `box_norm` is `[y1, x1, y2, x2]` normalised by the image height/width, as TensorFlow takes it.
/// Interpolating raw values and normalising afterwards equals TensorFlow's interpolation of the
/// normalised image (bilinear weights sum to one).
pub fn crop_and_resize_tf(
    img: &RgbImage,
    box_norm: [f32; 4],
    out_size: usize,
    scale: f32,
    offset: f32,
    out: &mut [f32],
) {
    let [y1, x1, y2, x2] = box_norm;
    let raw = img.as_raw();
    let ih = img.height() as f32;
    let iw = img.width() as f32;
    let (hs, ws) = if out_size > 1 {
        (
            (y2 - y1) * (ih - 1.0) / (out_size - 1) as f32,
            (x2 - x1) * (iw - 1.0) / (out_size - 1) as f32,
        )
    } else {
        (0.0, 0.0)
    };
    let stride = img.width() as usize * 3;
    for y in 0..out_size {
        let in_y = if out_size > 1 {
            y1 * (ih - 1.0) + y as f32 * hs
        } else {
            0.5 * (y1 + y2) * (ih - 1.0)
        };
        let row_out = &mut out[y * out_size * 3..(y + 1) * out_size * 3];
        if in_y < 0.0 || in_y > ih - 1.0 {
            row_out.fill(0.0);
            continue;
        }
        let top = in_y.floor() as usize * stride;
        let bottom = in_y.ceil() as usize * stride;
        let y_lerp = in_y - in_y.floor();
        for x in 0..out_size {
            let in_x = if out_size > 1 {
                x1 * (iw - 1.0) + x as f32 * ws
            } else {
                0.5 * (x1 + x2) * (iw - 1.0)
            };
            let px = &mut row_out[x * 3..x * 3 + 3];
            if in_x < 0.0 || in_x > iw - 1.0 {
                px.fill(0.0);
                continue;
            }
            let left = in_x.floor() as usize * 3;
            let right = in_x.ceil() as usize * 3;
            let x_lerp = in_x - in_x.floor();
            for (c, p) in px.iter_mut().enumerate() {
                let tl = f32::from(raw[top + left + c]);
                let tr = f32::from(raw[top + right + c]);
                let bl = f32::from(raw[bottom + left + c]);
                let br = f32::from(raw[bottom + right + c]);
                let t = tl + (tr - tl) * x_lerp;
                let b = bl + (br - bl) * x_lerp;
                *p = (t + (b - t) * y_lerp) * scale + offset;
            }
        }
    }
}

/// An axis-aligned integer rectangle inside an image (`x`, `y` top-left, `w`, `h` size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width in pixels (at least 1).
    pub w: u32,
    /// Height in pixels (at least 1).
    pub h: u32,
}

/// Bilinear resize of the `rect` region of `img` to `out_w x out_h` with OpenCV's `INTER_LINEAR`
/// pixel-centre convention (samples clamped to the region's border), writing
/// `value * scale` into `out` in `layout` (`out_w * out_h * 3` samples).
pub fn crop_resize_bilinear(
    img: &RgbImage,
    rect: Rect,
    out_w: usize,
    out_h: usize,
    scale: f32,
    layout: Layout,
    out: &mut [f32],
) {
    let raw = img.as_raw();
    let stride = img.width() as usize * 3;
    let axis = |in_len: u32, out_len: usize| -> Vec<(usize, usize, f32)> {
        let s = in_len as f32 / out_len as f32;
        (0..out_len)
            .map(|o| {
                let f = ((o as f32 + 0.5) * s - 0.5).max(0.0);
                let i0 = (f.floor() as u32).min(in_len - 1);
                let i1 = (i0 + 1).min(in_len - 1);
                (i0 as usize, i1 as usize, f - i0 as f32)
            })
            .collect()
    };
    let xs = axis(rect.w.max(1), out_w);
    let ys = axis(rect.h.max(1), out_h);
    let plane = out_w * out_h;
    for (oy, &(y0, y1, fy)) in ys.iter().enumerate() {
        let r0 = (rect.y as usize + y0) * stride;
        let r1 = (rect.y as usize + y1) * stride;
        for (ox, &(x0, x1, fx)) in xs.iter().enumerate() {
            let c0 = (rect.x as usize + x0) * 3;
            let c1 = (rect.x as usize + x1) * 3;
            for c in 0..3 {
                let tl = f32::from(raw[r0 + c0 + c]);
                let tr = f32::from(raw[r0 + c1 + c]);
                let bl = f32::from(raw[r1 + c0 + c]);
                let br = f32::from(raw[r1 + c1 + c]);
                let t = tl + (tr - tl) * fx;
                let b = bl + (br - bl) * fx;
                let v = (t + (b - t) * fy) * scale;
                let idx = match layout {
                    Layout::Hwc => (oy * out_w + ox) * 3 + c,
                    Layout::Chw => c * plane + oy * out_w + ox,
                };
                out[idx] = v;
            }
        }
    }
}

/// A 2x3 affine map `[a, b, tx; c, d, ty]`: `x' = a x + b y + tx`, `y' = c x + d y + ty`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    /// Row-major coefficients `[a, b, tx, c, d, ty]`.
    pub m: [f64; 6],
}

impl Affine {
    /// Applies the map to a point.
    pub fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let m = &self.m;
        (m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5])
    }

    /// The inverse map, or `None` when the linear part is singular.
    pub fn inverse(&self) -> Option<Affine> {
        let [a, b, tx, c, d, ty] = self.m;
        let det = a * d - b * c;
        if det.abs() < 1e-12 || !det.is_finite() {
            return None;
        }
        let ia = d / det;
        let ib = -b / det;
        let ic = -c / det;
        let id = a / det;
        Some(Affine {
            m: [ia, ib, -(ia * tx + ib * ty), ic, id, -(ic * tx + id * ty)],
        })
    }
}

/// Warps `img` into an `out_w x out_h` RGB image: each output pixel `(u, v)` samples the input
/// at `inv(u, v)` bilinearly; samples falling outside the image read as black (as dlib's
/// `extract_image_chip`).
///
/// `supersample` (1–4) averages `n x n` bilinear samples spread over each output pixel, an
/// anti-aliasing filter for warps that shrink the image (dlib downsamples with a pyramid there).
pub fn warp_affine_bilinear(
    img: &RgbImage,
    inv: &Affine,
    out_w: u32,
    out_h: u32,
    supersample: u32,
) -> RgbImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let raw = img.as_raw();
    let stride = w as usize * 3;
    let n = supersample.clamp(1, 4);
    let offsets: Vec<f64> = (0..n)
        .map(|i| (f64::from(i) + 0.5) / f64::from(n) - 0.5)
        .collect();
    let weight = 1.0 / f64::from(n * n);
    let mut out = vec![0u8; out_w as usize * out_h as usize * 3];
    let fetch = |x: i64, y: i64, c: usize| -> f64 {
        if x < 0 || y < 0 || x >= w || y >= h {
            0.0
        } else {
            f64::from(raw[y as usize * stride + x as usize * 3 + c])
        }
    };
    for v in 0..out_h {
        for u in 0..out_w {
            let mut acc = [0.0f64; 3];
            for &dy in &offsets {
                for &dx in &offsets {
                    let (sx, sy) = inv.apply(f64::from(u) + dx, f64::from(v) + dy);
                    if sx <= -1.0 || sy <= -1.0 || sx >= w as f64 || sy >= h as f64 {
                        continue;
                    }
                    let x0 = sx.floor() as i64;
                    let y0 = sy.floor() as i64;
                    let fx = sx - x0 as f64;
                    let fy = sy - y0 as f64;
                    for (c, a) in acc.iter_mut().enumerate() {
                        let t = fetch(x0, y0, c) * (1.0 - fx) + fetch(x0 + 1, y0, c) * fx;
                        let b = fetch(x0, y0 + 1, c) * (1.0 - fx) + fetch(x0 + 1, y0 + 1, c) * fx;
                        *a += t * (1.0 - fy) + b * fy;
                    }
                }
            }
            let base = (v as usize * out_w as usize + u as usize) * 3;
            for c in 0..3 {
                out[base + c] = (acc[c] * weight).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    // The buffer has exactly out_w * out_h * 3 samples, so construction cannot fail; fall back
    // to an empty image rather than panic.
    RgbImage::from_raw(out_w, out_h, out).unwrap_or_else(|| RgbImage::new(out_w, out_h))
}

/// ITU-R BT.601 luma of each pixel of an RGB image, in 0–255.
pub fn luma(img: &RgbImage) -> Vec<f32> {
    img.as_raw()
        .chunks_exact(3)
        .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// R = x, G = y, B = x + y.
    fn ramp(w: u32, h: u32) -> RgbImage {
        let mut img = RgbImage::new(w, h);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([x as u8, y as u8, (x + y) as u8]);
        }
        img
    }

    #[test]
    fn area_resize_matches_tensorflow_example() {
        // TensorFlow's own AREA test: a 3x2 image resized to 6x4 replicates pixels.
        let vals = [64u8, 32, 32, 64, 50, 100];
        let mut img = RgbImage::new(2, 3);
        for (i, p) in img.pixels_mut().enumerate() {
            *p = image::Rgb([vals[i]; 3]);
        }
        let mut out = Vec::new();
        resize_area(&img, 4, 6, 1.0, 0.0, &mut out);
        let expected = [
            64.0, 64.0, 32.0, 32.0, 64.0, 64.0, 32.0, 32.0, 32.0, 32.0, 64.0, 64.0, 32.0, 32.0,
            64.0, 64.0, 50.0, 50.0, 100.0, 100.0, 50.0, 50.0, 100.0, 100.0,
        ];
        let got: Vec<f32> = out.chunks(3).map(|p| p[0]).collect();
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 1e-4, "{got:?}");
        }
    }

    #[test]
    fn area_resize_halving_averages_blocks_and_normalises() {
        let img = ramp(4, 4);
        let mut out = Vec::new();
        resize_area(&img, 2, 2, 1.0, 0.0, &mut out);
        // Output (0,0) averages x in {0,1}, y in {0,1}.
        assert!((out[0] - 0.5).abs() < 1e-6);
        assert!((out[1] - 0.5).abs() < 1e-6);
        // Output (1,1): x in {2,3} -> 2.5, y -> 2.5.
        let p = &out[9..12];
        assert!((p[0] - 2.5).abs() < 1e-6 && (p[1] - 2.5).abs() < 1e-6);
        let mut n = Vec::new();
        resize_area(&img, 2, 2, 0.5, -1.0, &mut n);
        assert!((n[9] - (2.5 * 0.5 - 1.0)).abs() < 1e-6);
    }

    #[test]
    fn area_resize_fractional_preserves_constant() {
        let img = RgbImage::from_pixel(17, 11, image::Rgb([64, 64, 64]));
        let mut out = Vec::new();
        resize_area(&img, 7, 5, 1.0, 0.0, &mut out);
        assert_eq!(out.len(), 7 * 5 * 3);
        assert!(out.iter().all(|v| (v - 64.0).abs() < 1e-3), "{out:?}");
    }

    #[test]
    fn area_resize_one_third_weights() {
        // TensorFlow's documented example: in[4] -> out[3]; out[0] = (in0 + in1 / 3) * 0.75.
        let vals = [30u8, 60, 90, 120];
        let mut img = RgbImage::new(4, 1);
        for (i, p) in img.pixels_mut().enumerate() {
            *p = image::Rgb([vals[i]; 3]);
        }
        let mut out = Vec::new();
        resize_area(&img, 3, 1, 1.0, 0.0, &mut out);
        assert!((out[0] - (30.0 + 60.0 / 3.0) * 0.75).abs() < 1e-4);
        assert!((out[3] - (60.0 * 2.0 / 3.0 + 90.0 * 2.0 / 3.0) * 0.75).abs() < 1e-4);
        assert!((out[6] - (90.0 / 3.0 + 120.0) * 0.75).abs() < 1e-4);
    }

    #[test]
    fn crop_and_resize_identity_and_extrapolation() {
        let img = ramp(5, 5);
        let mut out = vec![0.0; 5 * 5 * 3];
        // Box covering the whole image maps pixel centres exactly: [0, 0, 1, 1] * (size - 1).
        crop_and_resize_tf(&img, [0.0, 0.0, 1.0, 1.0], 5, 1.0, 0.0, &mut out);
        let expected: Vec<f32> = img.as_raw().iter().map(|&v| f32::from(v)).collect();
        assert_eq!(out, expected);
        // A box starting outside the image extrapolates with 0 (after normalisation).
        let mut out2 = vec![1.0; 2 * 2 * 3];
        crop_and_resize_tf(
            &img,
            [-1.0, -1.0, 0.0, 0.0],
            2,
            1.0 / 128.0,
            -1.0,
            &mut out2,
        );
        assert_eq!(&out2[0..3], &[0.0, 0.0, 0.0]);
        // The bottom-right sample is pixel (0, 0), normalised.
        assert_eq!(&out2[9..12], &[-1.0, -1.0, -1.0]);
    }

    #[test]
    fn crop_and_resize_interpolates() {
        let img = ramp(5, 5);
        let mut out = vec![0.0; 3 * 3 * 3];
        // x from 0 to 0.5 of (5 - 1) = 0..2, 3 samples -> 0, 1, 2.
        crop_and_resize_tf(&img, [0.0, 0.0, 0.5, 0.5], 3, 1.0, 0.0, &mut out);
        assert!((out[3] - 1.0).abs() < 1e-6);
        assert!((out[6] - 2.0).abs() < 1e-6);
        assert!((out[(3 + 1) * 3 + 1] - 1.0).abs() < 1e-6);
        let mut half = vec![0.0; 2 * 2 * 3];
        crop_and_resize_tf(&img, [0.0, 0.0, 0.125, 0.125], 2, 1.0, 0.0, &mut half);
        assert!((half[3] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn bilinear_crop_layouts_agree() {
        let mut img = RgbImage::new(8, 6);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([(x * 30) as u8, (y * 40) as u8, 7]);
        }
        let rect = Rect {
            x: 2,
            y: 1,
            w: 4,
            h: 4,
        };
        let mut hwc = vec![0.0; 4 * 4 * 3];
        let mut chw = vec![0.0; 4 * 4 * 3];
        crop_resize_bilinear(&img, rect, 4, 4, 1.0, Layout::Hwc, &mut hwc);
        crop_resize_bilinear(&img, rect, 4, 4, 1.0, Layout::Chw, &mut chw);
        // Same-size resize is a plain crop.
        assert_eq!(hwc[0], 60.0);
        assert_eq!(hwc[1], 40.0);
        for y in 0..4 {
            for x in 0..4 {
                for c in 0..3 {
                    assert_eq!(hwc[(y * 4 + x) * 3 + c], chw[c * 16 + y * 4 + x]);
                }
            }
        }
    }

    #[test]
    fn affine_inverse_round_trips() {
        let a = Affine {
            m: [0.8, -0.3, 10.0, 0.3, 0.8, -4.0],
        };
        let inv = a.inverse().unwrap();
        let (x, y) = a.apply(3.0, 7.0);
        let (bx, by) = inv.apply(x, y);
        assert!((bx - 3.0).abs() < 1e-9 && (by - 7.0).abs() < 1e-9);
        assert!(Affine { m: [0.0; 6] }.inverse().is_none());
    }

    #[test]
    fn warp_identity_copies_and_outside_is_black() {
        let mut img = RgbImage::new(4, 4);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([(x * 50) as u8, (y * 50) as u8, 200]);
        }
        let id = Affine {
            m: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        };
        assert_eq!(warp_affine_bilinear(&img, &id, 4, 4, 1), img);
        let shifted = Affine {
            m: [1.0, 0.0, 10.0, 0.0, 1.0, 10.0],
        };
        let out = warp_affine_bilinear(&img, &shifted, 2, 2, 1);
        assert!(out.as_raw().iter().all(|&v| v == 0));
    }

    #[test]
    fn supersampling_averages_a_shrinking_warp() {
        // A 1-pixel checkerboard (mean 127.5) shrunk 4x: plain bilinear hits pixel centres of
        // one colour only (aliasing to black); 4x4 supersampling recovers the mean.
        let img = RgbImage::from_fn(16, 16, |x, y| {
            if (x + y) % 2 == 0 {
                image::Rgb([0; 3])
            } else {
                image::Rgb([255; 3])
            }
        });
        let shrink = Affine {
            m: [4.0, 0.0, 1.0, 0.0, 4.0, 1.0],
        };
        let mean = |im: &RgbImage| {
            im.as_raw().iter().map(|&v| f64::from(v)).sum::<f64>() / im.as_raw().len() as f64
        };
        let aliased = warp_affine_bilinear(&img, &shrink, 3, 3, 1);
        let smooth = warp_affine_bilinear(&img, &shrink, 3, 3, 4);
        assert!(mean(&aliased) < 10.0, "{:?}", aliased.as_raw());
        assert!(
            (mean(&smooth) - 127.5).abs() < 15.0,
            "{:?}",
            smooth.as_raw()
        );
    }

    #[test]
    fn luma_of_white_and_black() {
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, image::Rgb([255, 255, 255]));
        let l = luma(&img);
        assert!((l[0] - 255.0).abs() < 1e-3);
        assert_eq!(l[1], 0.0);
    }
}
