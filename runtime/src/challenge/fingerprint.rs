//! A small fingerprint of a whole frame for the near-duplicate check: the frame's luma averaged
//! down to 16x16 cells (256 bytes). Re-sending a frame, or a re-encoded copy of it, gives a
//! fingerprint within a fraction of a grey level; a live camera's sensor noise and motion move
//! it by more. What is stored per frame is this thumbnail, never the image.

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Side of the fingerprint grid.
pub const FINGERPRINT_SIDE: usize = 16;

/// Luma of a frame averaged over a 16x16 grid, one byte per cell (row-major).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct Fingerprint(Vec<u8>);

/// A byte vector of the wrong length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a fingerprint has 256 bytes, got {0}")]
pub struct FingerprintLength(usize);

impl TryFrom<Vec<u8>> for Fingerprint {
    type Error = FingerprintLength;

    fn try_from(v: Vec<u8>) -> Result<Self, Self::Error> {
        if v.len() == FINGERPRINT_SIDE * FINGERPRINT_SIDE {
            Ok(Self(v))
        } else {
            Err(FingerprintLength(v.len()))
        }
    }
}

impl From<Fingerprint> for Vec<u8> {
    fn from(f: Fingerprint) -> Self {
        f.0
    }
}

impl Fingerprint {
    /// The fingerprint of `img` (`None` for an empty image).
    pub fn of(img: &RgbImage) -> Option<Self> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return None;
        }
        let n = FINGERPRINT_SIDE;
        let mut sum = vec![0.0f64; n * n];
        let mut count = vec![0u32; n * n];
        for (x, y, p) in img.enumerate_pixels() {
            let cx = (x as usize * n / w).min(n - 1);
            let cy = (y as usize * n / h).min(n - 1);
            let [r, g, b] = p.0;
            let l = 0.299 * f64::from(r) + 0.587 * f64::from(g) + 0.114 * f64::from(b);
            sum[cy * n + cx] += l;
            count[cy * n + cx] += 1;
        }
        let cells = sum
            .iter()
            .zip(&count)
            .map(|(s, &c)| {
                if c == 0 {
                    0
                } else {
                    (s / f64::from(c)).round().clamp(0.0, 255.0) as u8
                }
            })
            .collect();
        Some(Self(cells))
    }

    /// Mean absolute difference of two fingerprints, in grey levels (0–255).
    pub fn difference(&self, other: &Fingerprint) -> f32 {
        let total: u32 = self
            .0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| u32::from(a.abs_diff(*b)))
            .sum();
        total as f32 / self.0.len().max(1) as f32
    }

    /// The cells.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The frame's shape: its cells with the frame's brightness and contrast taken out, so that
    /// a copy brightened, darkened or with its contrast changed compares as the original;
    /// `None` for a flat frame (cells spread by under [`FLAT_SPREAD`] grey levels: a blank
    /// frame or a covered lens), which has no shape to recognise.
    pub fn shape(&self) -> Option<Shape> {
        let n = self.0.len().max(1) as f32;
        let mean = self.0.iter().map(|&v| f32::from(v)).sum::<f32>() / n;
        let spread = (self
            .0
            .iter()
            .map(|&v| (f32::from(v) - mean).powi(2))
            .sum::<f32>()
            / n)
            .sqrt();
        (spread >= FLAT_SPREAD).then(|| {
            Shape(
                self.0
                    .iter()
                    .map(|&v| (f32::from(v) - mean) / spread)
                    .collect(),
            )
        })
    }
}

/// Cells spread by less than this (standard deviation, grey levels) make a flat frame.
pub const FLAT_SPREAD: f32 = 2.0;

/// A fingerprint's cells in standard units of its own spread around its mean ([`Fingerprint::shape`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Shape(Vec<f32>);

impl Shape {
    /// Mean absolute difference of two shapes, in standard units: 0 for a frame and its
    /// brightened or re-contrasted copy.
    pub fn difference(&self, other: &Shape) -> f32 {
        let total: f32 = self
            .0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| (a - b).abs())
            .sum();
        total / self.0.len().max(1) as f32
    }
}

/// The two most alike of `prints` (a `None` is skipped, its index kept): their difference and
/// indices, `None` with fewer than two: the evaluation lab's check of a clip before it is
/// written. The checker's near-duplicate test measures the same pairs through [`extreme_pair`].
pub fn closest_pair<'a>(
    prints: impl IntoIterator<Item = Option<&'a Fingerprint>>,
) -> Option<(f32, usize, usize)> {
    let prints: Vec<Option<&Fingerprint>> = prints.into_iter().collect();
    extreme_pair(&prints, 0, Fingerprint::difference, |d, best| d < best)
}

/// The pair of present `items` that `measure` rates best (`better(d, best)`: the first such
/// pair in index order wins a tie), among the pairs whose later item is at or after `from`:
/// the value and the two indices. The checker passes the number of frames an earlier verdict
/// already compared, so a batch adds only its own pairs; `None` without such a pair.
pub(super) fn extreme_pair<T>(
    items: &[Option<&T>],
    from: usize,
    measure: impl Fn(&T, &T) -> f32,
    better: impl Fn(f32, f32) -> bool,
) -> Option<(f32, usize, usize)> {
    let mut best: Option<(f32, usize, usize)> = None;
    for (i, a) in items.iter().enumerate() {
        let Some(a) = a else { continue };
        for (j, b) in items.iter().enumerate().skip(from.max(i + 1)) {
            let Some(b) = b else { continue };
            let d = measure(a, b);
            if best.is_none_or(|(m, _, _)| better(d, m)) {
                best = Some((d, i, j));
            }
        }
    }
    best
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn gradient(offset: u8) -> RgbImage {
        RgbImage::from_fn(64, 48, |x, y| {
            let v = ((x * 3 + y) as u8).wrapping_add(offset);
            image::Rgb([v, v, v])
        })
    }

    #[test]
    fn closest_pair_skips_missing_prints_and_keeps_their_indices() {
        let (a, b) = (
            Fingerprint::of(&gradient(0)).unwrap(),
            Fingerprint::of(&gradient(90)).unwrap(),
        );
        let near = Fingerprint::of(&gradient(1)).unwrap();
        let found = closest_pair([Some(&a), None, Some(&b), Some(&near)]).unwrap();
        assert_eq!((found.1, found.2), (0, 3));
        assert_eq!(closest_pair([Some(&a), None]), None);
    }

    #[test]
    fn identical_frames_have_zero_difference() {
        let a = Fingerprint::of(&gradient(0)).unwrap();
        assert_eq!(a.as_bytes().len(), 256);
        assert_eq!(a.difference(&Fingerprint::of(&gradient(0)).unwrap()), 0.0);
    }

    #[test]
    fn brightness_change_shows() {
        let a = Fingerprint::of(&gradient(0)).unwrap();
        let b = Fingerprint::of(&gradient(10)).unwrap();
        assert!(a.difference(&b) > 5.0);
        assert!(Fingerprint::of(&RgbImage::new(0, 0)).is_none());
        assert!(Fingerprint::try_from(vec![0u8; 3]).is_err());
    }
}
