//! Pure MTCNN post-processing, following the reference pipeline (PyPI `mtcnn` 1.0.0): image
//! pyramid, PNet proposal generation, non-maximum suppression, box regression, squaring and
//! landmark placement. No ONNX Runtime here, so every step is unit-tested on plain numbers.
//!
//! Boxes are corner coordinates `x1, y1, x2, y2` in input-image pixels (`f64`, as the reference
//! does its box arithmetic in NumPy float64).

/// PNet's receptive field (the cell) in pixels.
pub const PNET_CELL: f64 = 12.0;
/// PNet's output stride in pixels.
pub const PNET_STRIDE: f64 = 2.0;
/// Smallest pyramid level PNet can run on.
pub const PNET_MIN_INPUT: usize = 12;

/// A candidate face box with its score and, after ONet, five landmarks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Left edge.
    pub x1: f64,
    /// Top edge.
    pub y1: f64,
    /// Right edge.
    pub x2: f64,
    /// Bottom edge.
    pub y2: f64,
    /// Face probability of the last stage that scored it.
    pub score: f64,
    /// Landmarks `[x; 5]` then `[y; 5]` (left eye, right eye, nose, left mouth, right mouth).
    pub landmarks: [f64; 10],
}

impl Candidate {
    /// A candidate without landmarks.
    pub fn new(x1: f64, y1: f64, x2: f64, y2: f64, score: f64) -> Self {
        Self {
            x1,
            y1,
            x2,
            y2,
            score,
            landmarks: [0.0; 10],
        }
    }

    fn area(&self) -> f64 {
        (self.x2 - self.x1) * (self.y2 - self.y1)
    }
}

/// How NMS normalises the intersection of two boxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Intersection over union.
    Union,
    /// Intersection over the smaller box's area.
    Min,
}

/// The pyramid scales of the reference: `m * factor^k` for `k < count`, with `m = 12 / min_face`
/// and `count = round(log(min_dim / 12) / log(1 / factor) - 1)` (half-to-even, as NumPy).
///
/// Levels whose scaled image would be smaller than PNet's 12-pixel input are dropped (the
/// reference raises there and reports no face at all; only non-default minimum face sizes reach
/// that case).
pub fn pyramid_scales(width: u32, height: u32, min_face: f64, factor: f64) -> Vec<f64> {
    let min_dim = f64::from(width.min(height));
    if min_dim <= 0.0 || min_face <= 0.0 || !(0.0..1.0).contains(&factor) || factor == 0.0 {
        return Vec::new();
    }
    let count = (-((min_dim / PNET_CELL).ln() / factor.ln() + 1.0)).round_ties_even();
    let count = if count.is_finite() && count > 0.0 {
        count as usize
    } else {
        0
    };
    let m = PNET_CELL / min_face;
    (0..count)
        .map(|k| m * factor.powi(k as i32))
        .filter(|&s| {
            let (w, h) = scaled_size(width, height, s);
            w >= PNET_MIN_INPUT && h >= PNET_MIN_INPUT
        })
        .collect()
}

/// Size of a pyramid level: `trunc(dim * scale)` (TensorFlow casts the float size to int32).
pub fn scaled_size(width: u32, height: u32, scale: f64) -> (usize, usize) {
    let w = (f64::from(width) * scale).trunc().max(0.0) as usize;
    let h = (f64::from(height) * scale).trunc().max(0.0) as usize;
    (w, h)
}

/// Turns one pyramid level's PNet output into candidates in input-image coordinates, sorted by
/// descending score.
///
/// `reg` is `[h, w, 4]` (x1, y1, x2, y2 offsets), `prob` is `[h, w, 2]` (index 1 = face); as in
/// the reference, the cell at `(row, col)` is `[2 col + 1, 2 col + 12] x [2 row + 1, 2 row + 12]`
/// of the scaled image, offsets are in units of its 11-pixel extent, and the box is divided by
/// `scale`.
pub fn pnet_candidates(
    reg: &[f32],
    prob: &[f32],
    out_h: usize,
    out_w: usize,
    scale: f64,
    threshold: f64,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for row in 0..out_h {
        for col in 0..out_w {
            let i = row * out_w + col;
            let Some(&p) = prob.get(i * 2 + 1) else {
                continue;
            };
            let p = f64::from(p);
            if p <= threshold {
                continue;
            }
            let Some(r) = reg.get(i * 4..i * 4 + 4) else {
                continue;
            };
            // The reference's cell spans [2 i + 1, 2 i + 12], so its regression unit is 11 px.
            let (x1, y1) = (
                col as f64 * PNET_STRIDE + 1.0,
                row as f64 * PNET_STRIDE + 1.0,
            );
            let (x2, y2) = (
                col as f64 * PNET_STRIDE + PNET_CELL,
                row as f64 * PNET_STRIDE + PNET_CELL,
            );
            let unit = PNET_CELL - 1.0;
            let x1 = x1 + f64::from(r[0]) * unit;
            let y1 = y1 + f64::from(r[1]) * unit;
            let x2 = x2 + f64::from(r[2]) * unit;
            let y2 = y2 + f64::from(r[3]) * unit;
            out.push(Candidate::new(
                x1 / scale,
                y1 / scale,
                x2 / scale,
                y2 / scale,
                p,
            ));
        }
    }
    sort_by_score(&mut out);
    out
}

/// Sorts candidates by descending score (stable).
pub fn sort_by_score(boxes: &mut [Candidate]) {
    boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
}

/// Keeps the `n` best-scoring of `boxes` in their original order (the per-level merge keeps
/// raster order): the proposals of one pyramid level, or those RNet refines. An ordinary photo
/// proposes far fewer; a mosaic of small faces, or an image made to look like one, could
/// otherwise make the merge quadratic in every cell and the refining batches huge.
pub fn keep_best_scores(boxes: &mut Vec<Candidate>, n: usize) {
    if boxes.len() <= n {
        return;
    }
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| boxes[b].score.total_cmp(&boxes[a].score).then(a.cmp(&b)));
    let mut keep = vec![false; boxes.len()];
    for &i in &order[..n] {
        keep[i] = true;
    }
    let mut k = keep.into_iter();
    boxes.retain(|_| k.next().unwrap_or(false));
}

/// Keeps the `n` largest of `boxes` (by area, then score): the boxes a refining stage runs on
/// when an image holds more candidates than it takes. The largest are the ones verification
/// chooses from ([`super::detect::largest`]), so a crowd of small faces cannot push the
/// subject's face out.
pub fn keep_largest(boxes: &mut Vec<Candidate>, n: usize) {
    if boxes.len() <= n {
        return;
    }
    let area = |c: &Candidate| (c.x2 - c.x1) * (c.y2 - c.y1);
    boxes.sort_by(|a, b| {
        area(b)
            .total_cmp(&area(a))
            .then(b.score.total_cmp(&a.score))
    });
    boxes.truncate(n);
}

/// Overlap of two boxes under `method` (areas without the +1 pixel convention, as the reference).
pub fn overlap(a: &Candidate, b: &Candidate, method: Overlap) -> f64 {
    let iw = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let ih = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let inter = iw * ih;
    let denom = match method {
        Overlap::Union => a.area() + b.area() - inter,
        Overlap::Min => a.area().min(b.area()),
    };
    if denom > 0.0 { inter / denom } else { 0.0 }
}

/// The reference's non-maximum suppression: with boxes in order (sorted first when `sort`), box
/// `j` is kept when no earlier box `i < j` overlaps it by more than `threshold` — earlier boxes
/// suppress even when they were suppressed themselves (a matrix-style NMS, not the greedy one).
pub fn nms(boxes: &mut Vec<Candidate>, threshold: f64, method: Overlap, sort: bool) {
    if sort {
        sort_by_score(boxes);
    }
    let n = boxes.len();
    let mut keep = vec![true; n];
    for j in 1..n {
        for i in 0..j {
            if overlap(&boxes[i], &boxes[j], method) > threshold {
                keep[j] = false;
                break;
            }
        }
    }
    let mut k = keep.into_iter();
    boxes.retain(|_| k.next().unwrap_or(false));
}

/// Makes each box square around its centre with side `max(w, h)` (`w = x2 - x1`).
pub fn square(boxes: &mut [Candidate]) {
    for b in boxes {
        let w = b.x2 - b.x1;
        let h = b.y2 - b.y1;
        let side = w.max(h);
        b.x1 = b.x1 + w * 0.5 - side * 0.5;
        b.y1 = b.y1 + h * 0.5 - side * 0.5;
        b.x2 = b.x1 + side;
        b.y2 = b.y1 + side;
    }
}

/// Applies RNet/ONet regression offsets `[dx1, dy1, dx2, dy2]`, scaled by the box size with the
/// +1 pixel convention (`w = x2 - x1 + 1`).
pub fn regress(b: &mut Candidate, offsets: &[f32]) {
    if offsets.len() < 4 {
        return;
    }
    let w = b.x2 - b.x1 + 1.0;
    let h = b.y2 - b.y1 + 1.0;
    b.x1 += f64::from(offsets[0]) * w;
    b.y1 += f64::from(offsets[1]) * h;
    b.x2 += f64::from(offsets[2]) * w;
    b.y2 += f64::from(offsets[3]) * h;
}

/// Places ONet's relative landmarks (`[x; 5]` then `[y; 5]`, in box units) into the image using
/// the box ONet saw: `x = w * lx + x1 - 1` with `w = x2 - x1 + 1`.
pub fn place_landmarks(b: &Candidate, rel: &[f32]) -> [f64; 10] {
    let mut out = [0.0; 10];
    if rel.len() < 10 {
        return out;
    }
    let w = b.x2 - b.x1 + 1.0;
    let h = b.y2 - b.y1 + 1.0;
    for k in 0..5 {
        out[k] = w * f64::from(rel[k]) + b.x1 - 1.0;
        out[k + 5] = h * f64::from(rel[k + 5]) + b.y1 - 1.0;
    }
    out
}

/// Normalised `[y1, x1, y2, x2]` crop box (TensorFlow `crop_and_resize` convention).
pub fn normalized_box(b: &Candidate, width: u32, height: u32) -> [f32; 4] {
    let w = f64::from(width);
    let h = f64::from(height);
    [
        (b.y1 / h) as f32,
        (b.x1 / w) as f32,
        (b.y2 / h) as f32,
        (b.x2 / w) as f32,
    ]
}

/// Clamps box corners into `[0, width - 1] x [0, height - 1]` (landmarks untouched), as the
/// reference's `fit_to_image` post-processing.
pub fn clamp_to_image(b: &mut Candidate, width: u32, height: u32) {
    let max_x = f64::from(width.saturating_sub(1));
    let max_y = f64::from(height.saturating_sub(1));
    b.x1 = b.x1.clamp(0.0, max_x);
    b.x2 = b.x2.clamp(0.0, max_x);
    b.y1 = b.y1.clamp(0.0, max_y);
    b.y2 = b.y2.clamp(0.0, max_y);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn pyramid_for_640x480_has_ten_levels() {
        let s = pyramid_scales(640, 480, 20.0, 0.709);
        assert_eq!(s.len(), 10);
        assert!((s[0] - 0.6).abs() < 1e-12);
        assert!((s[9] - 0.6 * 0.709f64.powi(9)).abs() < 1e-12);
        assert_eq!(scaled_size(640, 480, s[0]), (384, 288));
    }

    #[test]
    fn pyramid_drops_levels_below_pnet_input() {
        // A larger minimum face shrinks every level; the reference's count stays the same but
        // levels under 12 px cannot run.
        let s = pyramid_scales(640, 480, 80.0, 0.709);
        assert!(!s.is_empty());
        for &k in &s {
            let (w, h) = scaled_size(640, 480, k);
            assert!(w >= 12 && h >= 12);
        }
        assert!(s.len() < 10);
        assert!(pyramid_scales(10, 10, 20.0, 0.709).is_empty());
        assert!(pyramid_scales(640, 480, 20.0, 1.5).is_empty());
    }

    #[test]
    fn pnet_candidates_place_cells_and_regress() {
        // 1x2 output grid; only the second cell passes the threshold.
        let prob = [0.9, 0.1, 0.2, 0.8];
        let reg = [0.0, 0.0, 0.0, 0.0, 0.1, -0.1, 0.0, 0.5];
        let c = pnet_candidates(&reg, &prob, 1, 2, 0.5, 0.6);
        assert_eq!(c.len(), 1);
        let b = c[0];
        // Cell col 1 spans x 3..14; x1 = 3 + 0.1 * 11 = 4.1, / 0.5 = 8.2.
        assert!((b.x1 - 8.2).abs() < 1e-6);
        assert!((b.y1 - (1.0 - 1.1) / 0.5).abs() < 1e-6);
        assert!((b.x2 - 28.0).abs() < 1e-6);
        assert!((b.y2 - (12.0 + 5.5) / 0.5).abs() < 1e-6);
        assert!((b.score - 0.8f32 as f64).abs() < 1e-12);
    }

    #[test]
    fn pnet_candidates_sorted_descending() {
        let prob = [0.0, 0.7, 0.0, 0.95, 0.0, 0.8];
        let reg = [0.0; 12];
        let c = pnet_candidates(&reg, &prob, 1, 3, 1.0, 0.6);
        let scores: Vec<f64> = c.iter().map(|b| b.score).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn overlap_union_and_min() {
        let a = Candidate::new(0.0, 0.0, 10.0, 10.0, 1.0);
        let b = Candidate::new(5.0, 0.0, 15.0, 10.0, 0.5);
        assert!((overlap(&a, &b, Overlap::Union) - 50.0 / 150.0).abs() < 1e-12);
        assert!((overlap(&a, &b, Overlap::Min) - 0.5).abs() < 1e-12);
        let c = Candidate::new(2.0, 2.0, 4.0, 4.0, 0.1);
        assert!((overlap(&a, &c, Overlap::Min) - 1.0).abs() < 1e-12);
        let far = Candidate::new(20.0, 20.0, 30.0, 30.0, 0.1);
        assert_eq!(overlap(&a, &far, Overlap::Union), 0.0);
    }

    #[test]
    fn nms_suppressed_boxes_still_suppress() {
        // A (best) overlaps B strongly, B overlaps C strongly, A and C do not overlap enough:
        // greedy NMS would keep A and C; the reference's matrix NMS keeps only A because B
        // (though suppressed) still suppresses C.
        let a = Candidate::new(0.0, 0.0, 10.0, 10.0, 0.9);
        let b = Candidate::new(2.0, 0.0, 12.0, 10.0, 0.8);
        let c = Candidate::new(4.0, 0.0, 14.0, 10.0, 0.7);
        assert!(overlap(&a, &b, Overlap::Union) > 0.5);
        assert!(overlap(&b, &c, Overlap::Union) > 0.5);
        assert!(overlap(&a, &c, Overlap::Union) < 0.5);
        let mut v = vec![c, a, b];
        nms(&mut v, 0.5, Overlap::Union, true);
        assert_eq!(v, vec![a]);
    }

    #[test]
    fn caps_keep_the_best_in_order_and_the_largest() {
        let b = |x: f64, side: f64, score: f64| Candidate::new(x, 0.0, x + side, side, score);
        let mut v = vec![
            b(0.0, 10.0, 0.7),
            b(1.0, 10.0, 0.9),
            b(2.0, 10.0, 0.8),
            b(3.0, 10.0, 0.6),
        ];
        keep_best_scores(&mut v, 2);
        assert_eq!(
            v,
            vec![b(1.0, 10.0, 0.9), b(2.0, 10.0, 0.8)],
            "raster order kept"
        );
        let mut v = vec![
            b(0.0, 10.0, 0.99),
            b(1.0, 40.0, 0.8),
            b(2.0, 20.0, 0.9),
            b(3.0, 40.0, 0.85),
        ];
        keep_largest(&mut v, 2);
        assert_eq!(v, vec![b(3.0, 40.0, 0.85), b(1.0, 40.0, 0.8)]);
        let mut few = vec![b(0.0, 10.0, 0.5)];
        keep_largest(&mut few, 2);
        keep_best_scores(&mut few, 2);
        assert_eq!(few.len(), 1);
    }

    #[test]
    fn nms_without_sort_keeps_order() {
        let a = Candidate::new(0.0, 0.0, 10.0, 10.0, 0.1);
        let b = Candidate::new(100.0, 0.0, 110.0, 10.0, 0.9);
        let mut v = vec![a, b];
        nms(&mut v, 0.5, Overlap::Union, false);
        assert_eq!(v, vec![a, b]);
    }

    #[test]
    fn square_keeps_centre() {
        let mut v = [Candidate::new(10.0, 20.0, 30.0, 60.0, 1.0)];
        square(&mut v);
        let b = v[0];
        assert!((b.x2 - b.x1 - 40.0).abs() < 1e-12);
        assert!((b.y2 - b.y1 - 40.0).abs() < 1e-12);
        assert!(((b.x1 + b.x2) / 2.0 - 20.0).abs() < 1e-12);
        assert!(((b.y1 + b.y2) / 2.0 - 40.0).abs() < 1e-12);
    }

    #[test]
    fn regression_uses_plus_one_sizes() {
        let mut b = Candidate::new(0.0, 0.0, 9.0, 19.0, 1.0);
        regress(&mut b, &[0.1, 0.1, -0.1, 0.5]);
        assert!((b.x1 - 1.0).abs() < 1e-6);
        assert!((b.y1 - 2.0).abs() < 1e-6);
        assert!((b.x2 - 8.0).abs() < 1e-6);
        assert!((b.y2 - 29.0).abs() < 1e-6);
    }

    #[test]
    fn landmarks_relative_to_box() {
        let b = Candidate::new(10.0, 20.0, 19.0, 29.0, 1.0);
        let rel = [0.0, 1.0, 0.5, 0.5, 0.5, 0.0, 0.0, 0.5, 1.0, 1.0];
        let l = place_landmarks(&b, &rel);
        assert!((l[0] - 9.0).abs() < 1e-9);
        assert!((l[1] - 19.0).abs() < 1e-9);
        assert!((l[2] - 14.0).abs() < 1e-9);
        assert!((l[5] - 19.0).abs() < 1e-9);
        assert!((l[8] - 29.0).abs() < 1e-9);
    }

    #[test]
    fn clamp_and_normalise() {
        let mut b = Candidate::new(-5.0, -1.0, 700.0, 300.0, 1.0);
        clamp_to_image(&mut b, 640, 480);
        assert_eq!((b.x1, b.y1, b.x2, b.y2), (0.0, 0.0, 639.0, 300.0));
        let n = normalized_box(&b, 640, 480);
        assert_eq!(n[0], 0.0);
        assert!((n[2] - 0.625).abs() < 1e-7);
        assert!((n[3] - 639.0 / 640.0).abs() < 1e-7);
    }
}
