//! The 3-4-3-1 score-fusion MLP (ReLU, ReLU, sigmoid) that turns the three pipeline features
//! (match similarity, liveness, quality) into one authentication probability.
//!
//! Weights are data: a versioned JSON file (`facekey.fusion-weights`, version 1) validated for
//! shape and finiteness at load, so a bad file fails start-up with the offending field named.
//! This module is pure maths and parsing; no I/O beyond reading the file path it is given.

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, ArrayView1};
use serde::{Deserialize, Serialize};

/// Number of input features: match similarity, liveness, quality.
pub const INPUTS: usize = 3;
/// Width of the first hidden layer.
pub const HIDDEN1: usize = 4;
/// Width of the second hidden layer.
pub const HIDDEN2: usize = 3;

/// The feature order every weights file is fitted for.
pub const FEATURE_NAMES: [&str; INPUTS] = ["match_similarity", "liveness", "quality"];

/// The `format` string every weights file must carry.
pub const WEIGHTS_FORMAT: &str = "facekey.fusion-weights";
/// The only weights file version this build understands.
pub const WEIGHTS_VERSION: u32 = 1;

/// The seed's reference weights, embedded so the runtime runs without any file.
pub const REFERENCE_WEIGHTS_JSON: &str = include_str!("../weights/reference.json");
/// Weights fitted on features the pipeline produced (see docs/evaluation.md), embedded too.
pub const TRAINED_WEIGHTS_JSON: &str = include_str!("../weights/trained.json");

/// Why a weights file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read.
    #[error("cannot read fusion weights file {path}: {source}")]
    Read {
        /// The path that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON or does not match the weights schema.
    #[error("fusion weights {origin}: invalid JSON: {source}")]
    Parse {
        /// Where the weights came from (a path or a built-in name).
        origin: String,
        /// The JSON error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The `format` field is not [`WEIGHTS_FORMAT`].
    #[error("fusion weights {origin}: field `format` is {found:?}, expected {WEIGHTS_FORMAT:?}")]
    Format {
        /// Where the weights came from.
        origin: String,
        /// The format string found.
        found: String,
    },
    /// The `version` field is not supported.
    #[error(
        "fusion weights {origin}: field `version` is {found}, this build reads version {WEIGHTS_VERSION}"
    )]
    Version {
        /// Where the weights came from.
        origin: String,
        /// The version found.
        found: u32,
    },
    /// A matrix or vector has the wrong shape.
    #[error("fusion weights {origin}: field `{field}` has shape {found}, expected {expected}")]
    Shape {
        /// Where the weights came from.
        origin: String,
        /// The field name (`w1`, `b1`, ...).
        field: &'static str,
        /// The expected shape, e.g. `4x3`.
        expected: String,
        /// The shape found.
        found: String,
    },
    /// A value is NaN or infinite.
    #[error("fusion weights {origin}: field `{field}` has a non-finite value at {index}")]
    NonFinite {
        /// Where the weights came from.
        origin: String,
        /// The field name.
        field: &'static str,
        /// The position of the bad value, e.g. `[2][1]`.
        index: String,
    },
    /// The `features` field lists other inputs than the runtime feeds.
    #[error("fusion weights {origin}: field `features` is {found:?}, expected {FEATURE_NAMES:?}")]
    Features {
        /// Where the weights came from.
        origin: String,
        /// The feature names found.
        found: Vec<String>,
    },
    /// No weights are built in under this name.
    #[error("no built-in fusion weights named {0:?} (built in: {BUILT_IN_WEIGHTS:?})")]
    UnknownBuiltIn(String),
    /// The recommended threshold is outside `[0, 1]`.
    #[error("fusion weights {origin}: field `threshold` is {found}, expected a value in [0, 1]")]
    Threshold {
        /// Where the weights came from.
        origin: String,
        /// The value found.
        found: f64,
    },
}

/// The on-disk form of a weights file (`facekey.fusion-weights` v1), before validation. The one
/// type that both reads ([`FusionMlp::from_weights`]) and writes ([`WeightsFile::to_json`])
/// weights files, so the fitter and the runtime cannot disagree on the format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsFile {
    /// Always [`WEIGHTS_FORMAT`].
    pub format: String,
    /// Always [`WEIGHTS_VERSION`].
    pub version: u32,
    /// Name reported in answers and metrics (e.g. `reference`).
    pub name: String,
    /// Free text: where the weights come from.
    #[serde(default)]
    pub description: String,
    /// The feature order ([`FEATURE_NAMES`]); empty means that order.
    #[serde(default)]
    pub features: Vec<String>,
    /// Recommended threshold on the probability.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// First layer, 4x3.
    pub w1: Vec<Vec<f64>>,
    /// First layer bias, 4.
    pub b1: Vec<f64>,
    /// Second layer, 3x4.
    pub w2: Vec<Vec<f64>>,
    /// Second layer bias, 3.
    pub b2: Vec<f64>,
    /// Output layer, 1x3.
    pub w3: Vec<Vec<f64>>,
    /// Output bias, 1.
    pub b3: Vec<f64>,
}

impl WeightsFile {
    /// Weights of the current format and version with the given values.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        description: &str,
        threshold: Option<f64>,
        w1: Vec<Vec<f64>>,
        b1: Vec<f64>,
        w2: Vec<Vec<f64>>,
        b2: Vec<f64>,
        w3: Vec<Vec<f64>>,
        b3: Vec<f64>,
    ) -> Self {
        Self {
            format: WEIGHTS_FORMAT.to_owned(),
            version: WEIGHTS_VERSION,
            name: name.to_owned(),
            description: description.to_owned(),
            features: FEATURE_NAMES.iter().map(|f| (*f).to_owned()).collect(),
            threshold,
            w1,
            b1,
            w2,
            b2,
            w3,
            b3,
        }
    }

    /// The file's text: one field per line and one matrix row per line, so a diff of two fits
    /// reads row by row.
    pub fn to_json(&self) -> String {
        fn j<T: Serialize + ?Sized>(v: &T) -> String {
            // Strings, numbers and vectors of them always serialise.
            serde_json::to_string(v).unwrap_or_default()
        }
        fn matrix(rows: &[Vec<f64>]) -> String {
            let rows: Vec<String> = rows.iter().map(j).collect();
            if rows.len() == 1 {
                format!("[{}]", rows[0])
            } else {
                format!("[\n    {}\n  ]", rows.join(",\n    "))
            }
        }
        let mut fields = vec![
            format!("\"format\": {}", j(&self.format)),
            format!("\"version\": {}", self.version),
            format!("\"name\": {}", j(&self.name)),
        ];
        if !self.description.is_empty() {
            fields.push(format!("\"description\": {}", j(&self.description)));
        }
        if !self.features.is_empty() {
            fields.push(format!("\"features\": {}", j(&self.features)));
        }
        if let Some(t) = self.threshold {
            fields.push(format!("\"threshold\": {}", j(&t)));
        }
        fields.extend([
            format!("\"w1\": {}", matrix(&self.w1)),
            format!("\"b1\": {}", j(&self.b1)),
            format!("\"w2\": {}", matrix(&self.w2)),
            format!("\"b2\": {}", j(&self.b2)),
            format!("\"w3\": {}", matrix(&self.w3)),
            format!("\"b3\": {}", j(&self.b3)),
        ]);
        format!("{{\n  {}\n}}\n", fields.join(",\n  "))
    }
}

/// Which fusion weights to serve: a built-in name or a path to a weights file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsSource {
    /// Weights compiled into the binary, by name.
    BuiltIn(String),
    /// A weights file on disk.
    File(PathBuf),
}

/// Names of the weights files compiled into the binary.
pub const BUILT_IN_WEIGHTS: &[&str] = &["reference", "trained"];

impl WeightsSource {
    /// A built-in name (`reference`, `trained`) or else a file path.
    pub fn parse(s: &str) -> Result<Self, String> {
        if BUILT_IN_WEIGHTS.contains(&s) {
            Ok(Self::BuiltIn(s.to_string()))
        } else if s.is_empty() {
            Err("weights must be a built-in name or a file path".into())
        } else {
            Ok(Self::File(PathBuf::from(s)))
        }
    }
}

impl std::fmt::Display for WeightsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BuiltIn(name) => f.write_str(name),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A validated 3-4-3-1 fusion MLP.
#[derive(Debug, Clone)]
pub struct FusionMlp {
    name: String,
    description: String,
    threshold: Option<f64>,
    w1: Array2<f64>,
    b1: Array1<f64>,
    w2: Array2<f64>,
    b2: Array1<f64>,
    w3: Array2<f64>,
    b3: Array1<f64>,
}

/// Every intermediate value of one forward pass, so a UI can draw the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Layers {
    /// First layer pre-activation, `W1 x + b1`.
    pub z1: [f64; HIDDEN1],
    /// First layer activation, `relu(z1)`.
    pub a1: [f64; HIDDEN1],
    /// Second layer pre-activation, `W2 a1 + b2`.
    pub z2: [f64; HIDDEN2],
    /// Second layer activation, `relu(z2)`.
    pub a2: [f64; HIDDEN2],
    /// Output pre-activation, `W3 a2 + b3`.
    pub z3: f64,
}

/// Result of one forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    /// `sigmoid(z3)`: the authentication probability.
    pub probability: f64,
    /// The intermediate values.
    pub layers: Layers,
}

/// The logistic function, written to stay finite for large negative inputs.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

fn relu(z: f64) -> f64 {
    z.max(0.0)
}

impl FusionMlp {
    /// The seed's reference weights bundled in the binary.
    pub fn reference() -> Result<Self, WeightsError> {
        Self::from_json_str(REFERENCE_WEIGHTS_JSON, "built-in `reference`")
    }

    /// Weights built into the binary, by name: `reference` or `trained`.
    pub fn built_in(name: &str) -> Option<Result<Self, WeightsError>> {
        let text = match name {
            "reference" => REFERENCE_WEIGHTS_JSON,
            "trained" => TRAINED_WEIGHTS_JSON,
            _ => return None,
        };
        Some(Self::from_json_str(text, &format!("built-in `{name}`")))
    }

    /// Load and validate the weights `source` names.
    pub fn load(source: &WeightsSource) -> Result<Self, WeightsError> {
        match source {
            WeightsSource::BuiltIn(name) => {
                Self::built_in(name).ok_or_else(|| WeightsError::UnknownBuiltIn(name.clone()))?
            }
            WeightsSource::File(path) => Self::from_path(path),
        }
    }

    /// Load and validate a weights file from disk.
    pub fn from_path(path: &Path) -> Result<Self, WeightsError> {
        let text = std::fs::read_to_string(path).map_err(|source| WeightsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Parse and validate weights from JSON text; `origin` names the source in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self, WeightsError> {
        let file: WeightsFile =
            serde_json::from_str(text).map_err(|source| WeightsError::Parse {
                origin: origin.to_string(),
                source,
            })?;
        Self::from_weights(file, origin)
    }

    /// Validate parsed weights; `origin` names the source in errors.
    pub fn from_weights(file: WeightsFile, origin: &str) -> Result<Self, WeightsError> {
        let origin_s = || origin.to_string();
        if file.format != WEIGHTS_FORMAT {
            return Err(WeightsError::Format {
                origin: origin_s(),
                found: file.format,
            });
        }
        if file.version != WEIGHTS_VERSION {
            return Err(WeightsError::Version {
                origin: origin_s(),
                found: file.version,
            });
        }
        if !file.features.is_empty() && file.features != FEATURE_NAMES {
            return Err(WeightsError::Features {
                origin: origin_s(),
                found: file.features,
            });
        }
        if let Some(t) = file.threshold
            && !(0.0..=1.0).contains(&t)
        {
            return Err(WeightsError::Threshold {
                origin: origin_s(),
                found: t,
            });
        }
        Ok(Self {
            w1: matrix(origin, "w1", &file.w1, HIDDEN1, INPUTS)?,
            b1: vector(origin, "b1", &file.b1, HIDDEN1)?,
            w2: matrix(origin, "w2", &file.w2, HIDDEN2, HIDDEN1)?,
            b2: vector(origin, "b2", &file.b2, HIDDEN2)?,
            w3: matrix(origin, "w3", &file.w3, 1, HIDDEN2)?,
            b3: vector(origin, "b3", &file.b3, 1)?,
            name: file.name,
            description: file.description,
            threshold: file.threshold,
        })
    }

    /// These weights as a file ([`WeightsFile::to_json`] writes it).
    pub fn to_weights(&self) -> WeightsFile {
        let rows = |m: &Array2<f64>| m.rows().into_iter().map(|r| r.to_vec()).collect();
        WeightsFile::new(
            &self.name,
            &self.description,
            self.threshold,
            rows(&self.w1),
            self.b1.to_vec(),
            rows(&self.w2),
            self.b2.to_vec(),
            rows(&self.w3),
            self.b3.to_vec(),
        )
    }

    /// The weights' name (e.g. `reference`), reported in responses and metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Free-text description from the weights file.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The decision threshold the weights file recommends, if any.
    pub fn recommended_threshold(&self) -> Option<f64> {
        self.threshold
    }

    /// Run one forward pass, keeping every intermediate value.
    pub fn forward(&self, x: &[f64; INPUTS]) -> Forward {
        let x = ArrayView1::from(&x[..]);
        let z1 = self.w1.dot(&x) + &self.b1;
        let a1 = z1.mapv(relu);
        let z2 = self.w2.dot(&a1) + &self.b2;
        let a2 = z2.mapv(relu);
        let z3 = self.w3.row(0).dot(&a2) + self.b3[0];
        Forward {
            probability: sigmoid(z3),
            layers: Layers {
                z1: to_array(&z1),
                a1: to_array(&a1),
                z2: to_array(&z2),
                a2: to_array(&a2),
                z3,
            },
        }
    }

    /// Probabilities for a batch of feature rows (`n x 3`), computed as matrix products.
    pub fn probabilities(&self, xs: &Array2<f64>) -> Array1<f64> {
        let z1 = xs.dot(&self.w1.t()) + &self.b1;
        let a1 = z1.mapv(relu);
        let z2 = a1.dot(&self.w2.t()) + &self.b2;
        let a2 = z2.mapv(relu);
        let z3 = a2.dot(&self.w3.row(0)) + self.b3[0];
        z3.mapv(sigmoid)
    }
}

fn to_array<const N: usize>(v: &Array1<f64>) -> [f64; N] {
    let mut out = [0.0; N];
    for (o, x) in out.iter_mut().zip(v.iter()) {
        *o = *x;
    }
    out
}

fn vector(
    origin: &str,
    field: &'static str,
    values: &[f64],
    len: usize,
) -> Result<Array1<f64>, WeightsError> {
    if values.len() != len {
        return Err(WeightsError::Shape {
            origin: origin.to_string(),
            field,
            expected: len.to_string(),
            found: values.len().to_string(),
        });
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(WeightsError::NonFinite {
            origin: origin.to_string(),
            field,
            index: format!("[{i}]"),
        });
    }
    Ok(Array1::from(values.to_vec()))
}

fn matrix(
    origin: &str,
    field: &'static str,
    rows: &[Vec<f64>],
    nrows: usize,
    ncols: usize,
) -> Result<Array2<f64>, WeightsError> {
    let shape_err = |found: String| WeightsError::Shape {
        origin: origin.to_string(),
        field,
        expected: format!("{nrows}x{ncols}"),
        found,
    };
    if rows.len() != nrows {
        return Err(shape_err(format!("{} rows", rows.len())));
    }
    let mut flat = Vec::with_capacity(nrows * ncols);
    for (r, row) in rows.iter().enumerate() {
        if row.len() != ncols {
            return Err(shape_err(format!("row {r} of length {}", row.len())));
        }
        if let Some(c) = row.iter().position(|v| !v.is_finite()) {
            return Err(WeightsError::NonFinite {
                origin: origin.to_string(),
                field,
                index: format!("[{r}][{c}]"),
            });
        }
        flat.extend_from_slice(row);
    }
    Array2::from_shape_vec((nrows, ncols), flat).map_err(|e| shape_err(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-12;

    fn close<const N: usize>(got: [f64; N], want: [f64; N]) {
        for (g, w) in got.iter().zip(want.iter()) {
            assert!((g - w).abs() < EPS, "got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn reference_weights_reproduce_the_worked_example() {
        let mlp = FusionMlp::reference().unwrap();
        let f = mlp.forward(&[1.0, 0.5, -1.0]);
        close(f.layers.z1, [0.8, -1.2, 0.4, 2.0]);
        close(f.layers.a1, [0.8, 0.0, 0.4, 2.0]);
        close(f.layers.z2, [1.1, -0.3, 0.5]);
        close(f.layers.a2, [1.1, 0.0, 0.5]);
        assert!((f.layers.z3 - 1.2).abs() < EPS, "z3 = {}", f.layers.z3);
        assert!((f.probability - 0.768_524_783_499_017_6).abs() < 1e-12);
        assert_eq!(format!("{:.2}", f.probability), "0.77");
        assert_eq!(format!("{:.4}", f.probability), "0.7685");
    }

    #[test]
    fn every_built_in_loads_under_its_name() {
        for name in BUILT_IN_WEIGHTS {
            let mlp = FusionMlp::built_in(name).unwrap().unwrap();
            assert_eq!(mlp.name(), *name);
        }
        assert!(FusionMlp::built_in("nope").is_none());
        let trained = FusionMlp::built_in("trained").unwrap().unwrap();
        let t = trained.recommended_threshold().unwrap();
        assert!(t > 0.0 && t < 1.0);
        // More match, liveness and quality never lower the trained probability here.
        let lo = trained.forward(&[0.2, 0.2, 0.2]).probability;
        let hi = trained.forward(&[0.9, 0.9, 0.9]).probability;
        assert!(hi > lo, "{lo} vs {hi}");
    }

    #[test]
    fn weights_files_round_trip_through_the_one_type() {
        for name in BUILT_IN_WEIGHTS {
            let mlp = FusionMlp::built_in(name).unwrap().unwrap();
            let text = mlp.to_weights().to_json();
            let back = FusionMlp::from_json_str(&text, "round trip").unwrap();
            assert_eq!(back.to_weights(), mlp.to_weights(), "{name}");
            assert_eq!(
                back.forward(&[0.3, 0.6, 0.9]),
                mlp.forward(&[0.3, 0.6, 0.9])
            );
        }
        // The bundled trained file is exactly what the writer produces.
        let trained = FusionMlp::built_in("trained").unwrap().unwrap();
        assert_eq!(trained.to_weights().to_json(), TRAINED_WEIGHTS_JSON);
    }

    #[test]
    fn weights_sources() {
        assert_eq!(
            WeightsSource::parse("trained").unwrap(),
            WeightsSource::BuiltIn("trained".into())
        );
        assert_eq!(
            WeightsSource::parse("/w.json").unwrap(),
            WeightsSource::File("/w.json".into())
        );
        assert!(WeightsSource::parse("").is_err());
        let e = FusionMlp::load(&WeightsSource::BuiltIn("nope".into())).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        assert_eq!(
            FusionMlp::load(&WeightsSource::BuiltIn("reference".into()))
                .unwrap()
                .name(),
            "reference"
        );
    }

    #[test]
    fn batch_matches_single_forward() {
        let mlp = FusionMlp::reference().unwrap();
        let rows = [
            [1.0, 0.5, -1.0],
            [0.0, 0.0, 0.0],
            [0.9, 0.8, 0.7],
            [-3.0, 2.0, 5.0],
        ];
        let xs = Array2::from_shape_vec((4, 3), rows.iter().flatten().copied().collect()).unwrap();
        let batch = mlp.probabilities(&xs);
        for (row, p) in rows.iter().zip(batch.iter()) {
            assert!((mlp.forward(row).probability - p).abs() < EPS);
        }
    }

    #[test]
    fn sigmoid_is_stable_at_extremes() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!(sigmoid(-1000.0) >= 0.0 && sigmoid(-1000.0) < 1e-300);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert!((sigmoid(2.0) + sigmoid(-2.0) - 1.0).abs() < EPS);
    }

    fn reference_value() -> serde_json::Value {
        serde_json::from_str(REFERENCE_WEIGHTS_JSON).unwrap()
    }

    fn load(v: &serde_json::Value) -> Result<FusionMlp, WeightsError> {
        FusionMlp::from_json_str(&v.to_string(), "test.json")
    }

    #[test]
    fn wrong_row_count_names_the_field() {
        let mut v = reference_value();
        v["w2"].as_array_mut().unwrap().pop();
        let err = load(&v).unwrap_err().to_string();
        assert!(
            err.contains("`w2`") && err.contains("3x4") && err.contains("2 rows"),
            "{err}"
        );
    }

    #[test]
    fn wrong_row_length_names_the_field() {
        let mut v = reference_value();
        v["w1"][2] = serde_json::json!([1.0, 2.0]);
        let err = load(&v).unwrap_err().to_string();
        assert!(
            err.contains("`w1`") && err.contains("row 2 of length 2"),
            "{err}"
        );
    }

    #[test]
    fn wrong_bias_length_names_the_field() {
        let mut v = reference_value();
        v["b3"] = serde_json::json!([0.1, 0.2]);
        let err = load(&v).unwrap_err().to_string();
        assert!(err.contains("`b3`") && err.contains("expected 1"), "{err}");
    }

    #[test]
    fn non_finite_values_are_rejected_by_position() {
        let weights: WeightsFile = serde_json::from_str(REFERENCE_WEIGHTS_JSON).unwrap();
        let mut bad = weights;
        bad.w2[1][3] = f64::INFINITY;
        let err = FusionMlp::from_weights(bad, "test.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`w2`") && err.contains("[1][3]"), "{err}");

        let mut bad: WeightsFile = serde_json::from_str(REFERENCE_WEIGHTS_JSON).unwrap();
        bad.b1[2] = f64::NAN;
        let err = FusionMlp::from_weights(bad, "test.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`b1`") && err.contains("[2]"), "{err}");
    }

    #[test]
    fn json_overflow_is_a_parse_error() {
        let text = REFERENCE_WEIGHTS_JSON.replace("-0.8", "-1e999");
        let err = FusionMlp::from_json_str(&text, "big.json").unwrap_err();
        assert!(matches!(err, WeightsError::Parse { .. }), "{err}");
    }

    #[test]
    fn format_version_and_unknown_fields_are_checked() {
        let mut v = reference_value();
        v["format"] = "something-else".into();
        assert!(matches!(load(&v), Err(WeightsError::Format { .. })));

        let mut v = reference_value();
        v["version"] = 2.into();
        assert!(matches!(
            load(&v),
            Err(WeightsError::Version { found: 2, .. })
        ));

        let mut v = reference_value();
        v["w4"] = serde_json::json!([[1.0]]);
        let err = load(&v).unwrap_err().to_string();
        assert!(err.contains("unknown field `w4`"), "{err}");

        let mut v = reference_value();
        v["features"] = serde_json::json!(["liveness", "match_similarity", "quality"]);
        assert!(matches!(load(&v), Err(WeightsError::Features { .. })));

        let mut v = reference_value();
        v["threshold"] = 1.5.into();
        assert!(matches!(load(&v), Err(WeightsError::Threshold { .. })));
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = FusionMlp::from_path(Path::new("/nonexistent/weights.json")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/weights.json"),
            "{err}"
        );
    }
}
