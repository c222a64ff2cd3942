//! The per-sample feature rows the evaluation records (`runtime/eval/features.csv`) and reads
//! back for reports, fitting and tests.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use super::EvalError;

/// What a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A degraded real photo of the claimed person (genuine pair, bona fide presentation).
    Genuine,
    /// A real photo of someone else than the claimed person (zero-effort impostor).
    Impostor,
    /// A simulated printed photo of the claimed person.
    AttackPrint,
    /// A simulated screen replay of the claimed person.
    AttackReplay,
    /// The original, undegraded real photo claimed as its own person (the enrolment image
    /// presented again; a bona fide presentation).
    BonaFide,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 5] = [
        Kind::Genuine,
        Kind::Impostor,
        Kind::AttackPrint,
        Kind::AttackReplay,
        Kind::BonaFide,
    ];

    /// The CSV spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Genuine => "genuine",
            Self::Impostor => "impostor",
            Self::AttackPrint => "attack_print",
            Self::AttackReplay => "attack_replay",
            Self::BonaFide => "bona_fide",
        }
    }

    /// The fusion label: 1 for a genuine pair presented live (genuine, bona fide), 0 for an
    /// impostor or an attack.
    pub fn label(self) -> u8 {
        match self {
            Self::Genuine | Self::BonaFide => 1,
            Self::Impostor | Self::AttackPrint | Self::AttackReplay => 0,
        }
    }

    /// Whether the presentation is a (simulated) attack.
    pub fn is_attack(self) -> bool {
        matches!(self, Self::AttackPrint | Self::AttackReplay)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown kind {s:?}"))
    }
}

/// One evaluated comparison: a probe presentation against a claimed identity's template.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRow {
    /// Unique id, e.g. `genuine/t1-2/jpeg(q37)`.
    pub sample_id: String,
    /// What the row is.
    pub kind: Kind,
    /// Whose face the probe shows.
    pub identity: String,
    /// Whose template it is compared with.
    pub claimed: String,
    /// The source photo.
    pub source: String,
    /// The presentation's id (rows sharing a probe image share it).
    pub presentation: String,
    /// The transform chain or attack parameters.
    pub variant: String,
    /// Match similarity in `[0, 1]` (the runtime's mapping of the distance).
    pub similarity: f64,
    /// Euclidean embedding distance.
    pub distance: f64,
    /// Liveness score of the configured mode (default: both models, mean).
    pub liveness: f64,
    /// DTN live score.
    pub dtn_live: f64,
    /// DTN raw spoof score.
    pub dtn_spoof: f64,
    /// MiniFASNet-like live probability.
    pub minifas_live: f64,
    /// Overall quality score.
    pub quality: f64,
    /// Quality: size sub-score.
    pub quality_size: f64,
    /// Quality: sharpness sub-score.
    pub quality_sharpness: f64,
    /// Quality: pose sub-score.
    pub quality_pose: f64,
    /// Quality: exposure sub-score.
    pub quality_exposure: f64,
    /// Face box short side, pixels.
    pub face_px: f64,
    /// Detector confidence.
    pub det_confidence: f64,
    /// MobileFaceNet cosine of probe and template (NaN when not measured).
    pub mfn_cosine: f64,
    /// faceres-deep cosine of probe and template (NaN when not measured).
    pub faceres_cosine: f64,
    /// human_liveness live probability (NaN when not measured).
    pub human_live: f64,
}

impl FeatureRow {
    /// A row with nothing measured yet: empty names and every score NaN, for studies that fill
    /// in only the scores they compute (struct update syntax).
    pub fn unmeasured(sample_id: String, kind: Kind) -> Self {
        Self {
            sample_id,
            kind,
            identity: String::new(),
            claimed: String::new(),
            source: String::new(),
            presentation: String::new(),
            variant: String::new(),
            similarity: f64::NAN,
            distance: f64::NAN,
            liveness: f64::NAN,
            dtn_live: f64::NAN,
            dtn_spoof: f64::NAN,
            minifas_live: f64::NAN,
            quality: f64::NAN,
            quality_size: f64::NAN,
            quality_sharpness: f64::NAN,
            quality_pose: f64::NAN,
            quality_exposure: f64::NAN,
            face_px: f64::NAN,
            det_confidence: f64::NAN,
            mfn_cosine: f64::NAN,
            faceres_cosine: f64::NAN,
            human_live: f64::NAN,
        }
    }

    /// `kind.label()`.
    pub fn label(&self) -> u8 {
        self.kind.label()
    }

    /// The fusion inputs `[match_similarity, liveness, quality]`.
    pub fn features(&self) -> [f64; 3] {
        [self.similarity, self.liveness, self.quality]
    }
}

/// CSV header, in column order.
pub const HEADER: [&str; 21] = [
    "sample_id",
    "kind",
    "label",
    "identity",
    "claimed",
    "source",
    "presentation",
    "variant",
    "similarity",
    "distance",
    "liveness",
    "dtn_live",
    "dtn_spoof",
    "minifas_live",
    "quality",
    "quality_size",
    "quality_sharpness",
    "quality_pose",
    "quality_exposure",
    "face_px",
    "det_confidence",
];

/// Optional columns (the second-opinion models); older files without them read as NaN.
pub const EXTRA_HEADER: [&str; 3] = ["mfn_cosine", "faceres_cosine", "human_live"];

fn clean(s: &str) -> String {
    s.replace([',', '\n', '\r'], ";")
}

/// Renders rows as CSV text (header first; text cells have commas replaced).
pub fn to_csv(rows: &[FeatureRow]) -> String {
    let mut out = HEADER.join(",");
    out.push(',');
    out.push_str(&EXTRA_HEADER.join(","));
    out.push('\n');
    for r in rows {
        let cells = [
            clean(&r.sample_id),
            r.kind.to_string(),
            r.label().to_string(),
            clean(&r.identity),
            clean(&r.claimed),
            clean(&r.source),
            clean(&r.presentation),
            clean(&r.variant),
            format!("{:.6}", r.similarity),
            format!("{:.6}", r.distance),
            format!("{:.6}", r.liveness),
            format!("{:.6}", r.dtn_live),
            format!("{:.6}", r.dtn_spoof),
            format!("{:.6}", r.minifas_live),
            format!("{:.6}", r.quality),
            format!("{:.6}", r.quality_size),
            format!("{:.6}", r.quality_sharpness),
            format!("{:.6}", r.quality_pose),
            format!("{:.6}", r.quality_exposure),
            format!("{:.1}", r.face_px),
            format!("{:.4}", r.det_confidence),
            format!("{:.6}", r.mfn_cosine),
            format!("{:.6}", r.faceres_cosine),
            format!("{:.6}", r.human_live),
        ];
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// Parses CSV text written by [`to_csv`]; columns are found by header name, so extra columns
/// are ignored. `path` names the source in errors.
pub fn from_csv(text: &str, path: &Path) -> Result<Vec<FeatureRow>, EvalError> {
    let err = |line: usize, message: String| EvalError::Csv {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut lines = text.lines().enumerate();
    let Some((_, header)) = lines.next() else {
        return Err(err(1, "empty file".into()));
    };
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let mut index = [0usize; HEADER.len()];
    for (slot, want) in index.iter_mut().zip(HEADER) {
        *slot = names
            .iter()
            .position(|n| *n == want)
            .ok_or_else(|| err(1, format!("missing column {want:?}")))?;
    }
    let extra: Vec<Option<usize>> = EXTRA_HEADER
        .iter()
        .map(|want| names.iter().position(|n| n == want))
        .collect();
    let mut rows = Vec::new();
    for (i, line) in lines {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != names.len() {
            return Err(err(
                line_no,
                format!("{} cells, header has {}", cells.len(), names.len()),
            ));
        }
        let text = |k: usize| cells[index[k]].trim().to_string();
        let num = |k: usize| -> Result<f64, EvalError> {
            let s = cells[index[k]].trim();
            s.parse::<f64>().map_err(|e| {
                err(
                    line_no,
                    format!("column {}: {s:?} is not a number ({e})", HEADER[k]),
                )
            })
        };
        let opt = |k: usize| -> Result<f64, EvalError> {
            let Some(c) = extra[k] else {
                return Ok(f64::NAN);
            };
            let s = cells[c].trim();
            s.parse::<f64>().map_err(|e| {
                err(
                    line_no,
                    format!("column {}: {s:?} is not a number ({e})", EXTRA_HEADER[k]),
                )
            })
        };
        let kind: Kind = text(1).parse().map_err(|e| err(line_no, e))?;
        rows.push(FeatureRow {
            sample_id: text(0),
            kind,
            identity: text(3),
            claimed: text(4),
            source: text(5),
            presentation: text(6),
            variant: text(7),
            similarity: num(8)?,
            distance: num(9)?,
            liveness: num(10)?,
            dtn_live: num(11)?,
            dtn_spoof: num(12)?,
            minifas_live: num(13)?,
            quality: num(14)?,
            quality_size: num(15)?,
            quality_sharpness: num(16)?,
            quality_pose: num(17)?,
            quality_exposure: num(18)?,
            face_px: num(19)?,
            det_confidence: num(20)?,
            mfn_cosine: opt(0)?,
            faceres_cosine: opt(1)?,
            human_live: opt(2)?,
        });
    }
    Ok(rows)
}

/// Reads a features CSV file.
pub fn read_csv(path: &Path) -> Result<Vec<FeatureRow>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    from_csv(&text, path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    /// A row with the given kind and fusion features (other fields filled in).
    pub(crate) fn row(kind: Kind, identity: &str, claimed: &str, x: [f64; 3]) -> FeatureRow {
        FeatureRow {
            sample_id: format!("{kind}/{identity}/{claimed}/{x:?}"),
            kind,
            identity: identity.into(),
            claimed: claimed.into(),
            source: "s.png".into(),
            presentation: format!("p/{identity}"),
            variant: "v".into(),
            similarity: x[0],
            distance: 0.6 - (x[0] - 0.5) / 5.0,
            liveness: x[1],
            dtn_live: x[1],
            dtn_spoof: 0.1,
            minifas_live: x[1],
            quality: x[2],
            quality_size: 1.0,
            quality_sharpness: 0.5,
            quality_pose: 0.9,
            quality_exposure: 1.0,
            face_px: 100.0,
            det_confidence: 0.99,
            mfn_cosine: f64::NAN,
            faceres_cosine: f64::NAN,
            human_live: f64::NAN,
        }
    }

    #[test]
    fn csv_round_trip() {
        let mut a = row(Kind::AttackReplay, "t1-2", "t1-2", [0.9, 0.25, 0.6]);
        a.variant = "replay(a,b)".into();
        let rows = vec![
            a,
            row(Kind::BonaFide, "astronaut", "astronaut", [0.99, 0.7, 0.8]),
        ];
        let text = to_csv(&rows);
        assert!(text.starts_with("sample_id,kind,label,"));
        let back = from_csv(&text, Path::new("x.csv")).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].kind, Kind::AttackReplay);
        assert_eq!(back[0].variant, "replay(a;b)");
        assert_eq!(back[0].label(), 0);
        assert_eq!(back[1].label(), 1);
        assert!((back[1].liveness - 0.7).abs() < 1e-9);
    }

    #[test]
    fn csv_errors_name_line_and_column() {
        let text = to_csv(&[row(Kind::Genuine, "a", "a", [0.9, 0.5, 0.5])]);
        let bad = text.replace(",genuine,", ",genuine-ish,");
        let e = from_csv(&bad, Path::new("f.csv")).unwrap_err().to_string();
        assert!(
            e.contains("f.csv: line 2") && e.contains("genuine-ish"),
            "{e}"
        );
        let bad = text.replacen("0.900000", "x", 1);
        let e = from_csv(&bad, Path::new("f.csv")).unwrap_err().to_string();
        assert!(e.contains("similarity"), "{e}");
        let e = from_csv("a,b\n", Path::new("f.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing column \"sample_id\""), "{e}");
    }
}
