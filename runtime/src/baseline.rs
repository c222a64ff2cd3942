//! The evaluation baseline the runtime serves beside its live score distributions: error rates
//! and score quantiles that the offline evaluation (`facekey-eval report`) measured for the
//! bundled weights at stated thresholds, so a dashboard can show drift (e.g. a camera change
//! pushing genuine similarities down) against what was measured. One type writes the file (the
//! evaluation) and reads it (the runtime, which embeds it).

use serde::{Deserialize, Serialize};

use crate::vision::LivenessMode;

/// The `format` string of a baseline file.
pub const BASELINE_FORMAT: &str = "facekey.evaluation-baseline";
/// The version this build reads and writes.
pub const BASELINE_VERSION: u32 = 1;

/// The baseline recorded in the repository (`runtime/eval/results/baseline.json`).
pub const RECORDED_BASELINE_JSON: &str = include_str!("../eval/results/baseline.json");

/// One measured error rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineRate {
    /// `fnmr`, `fmr`, `bpcer`, `apcer_print`, `apcer_replay` (pipeline checks) or `frr`,
    /// `far_impostor`, `far_print`, `far_replay` (the fused decision of `weights` under
    /// `policy`).
    pub measure: String,
    /// Fusion weights, for fused measures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// Decision policy, for fused measures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Errors.
    pub errors: usize,
    /// Trials.
    pub trials: usize,
}

impl BaselineRate {
    /// `errors / trials`, 0 without trials.
    pub fn value(&self) -> f64 {
        if self.trials == 0 {
            0.0
        } else {
            self.errors as f64 / self.trials as f64
        }
    }
}

/// One quantile of a score's distribution in one population.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineQuantile {
    /// `similarity`, `liveness` or `probability`.
    pub score: String,
    /// `genuine`, `impostor` or `attack`.
    pub population: String,
    /// Fusion weights, for `probability`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// The quantile, in (0, 1).
    pub quantile: f64,
    /// The score at that quantile.
    pub value: f64,
}

/// What the evaluation measured and under which settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Always [`BASELINE_FORMAT`].
    pub format: String,
    /// Always [`BASELINE_VERSION`].
    pub version: u32,
    /// Where the figures come from (data set, seed, caveats).
    pub source: String,
    /// Match threshold the rates were measured at.
    pub match_threshold: f64,
    /// Liveness threshold the rates were measured at.
    pub liveness_threshold: f64,
    /// Liveness mode of the liveness scores.
    pub liveness_mode: LivenessMode,
    /// Error rates.
    pub rates: Vec<BaselineRate>,
    /// Score quantiles.
    pub quantiles: Vec<BaselineQuantile>,
}

/// A baseline file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// Not JSON of the baseline's shape.
    #[error("evaluation baseline: {0}")]
    Parse(#[from] serde_json::Error),
    /// Another format or version.
    #[error(
        "evaluation baseline: format {format:?} version {version}, expected {BASELINE_FORMAT:?} version {BASELINE_VERSION}"
    )]
    Format {
        /// Format found.
        format: String,
        /// Version found.
        version: u32,
    },
}

impl Baseline {
    /// Parse and check a baseline file's text.
    pub fn parse(text: &str) -> Result<Self, BaselineError> {
        let b: Self = serde_json::from_str(text)?;
        if b.format != BASELINE_FORMAT || b.version != BASELINE_VERSION {
            return Err(BaselineError::Format {
                format: b.format,
                version: b.version,
            });
        }
        Ok(b)
    }

    /// The baseline recorded in the repository.
    pub fn recorded() -> Result<Self, BaselineError> {
        Self::parse(RECORDED_BASELINE_JSON)
    }

    /// The file's text (pretty JSON with a final newline).
    pub fn to_json(&self) -> String {
        // A struct of strings and numbers always serialises.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Whether the served settings are those the baseline was measured at.
    pub fn applies_to(
        &self,
        match_threshold: f64,
        liveness_threshold: f64,
        liveness_mode: LivenessMode,
    ) -> bool {
        (self.match_threshold - match_threshold).abs() < 1e-9
            && (self.liveness_threshold - liveness_threshold).abs() < 1e-9
            && self.liveness_mode == liveness_mode
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_baseline_parses_and_round_trips() {
        let b = Baseline::recorded().unwrap();
        assert!(!b.rates.is_empty() && !b.quantiles.is_empty());
        assert!(b.rates.iter().all(|r| r.errors <= r.trials));
        assert!(b.quantiles.iter().all(|q| (0.0..=1.0).contains(&q.value)));
        assert_eq!(Baseline::parse(&b.to_json()).unwrap(), b);
        assert!(b.applies_to(b.match_threshold, b.liveness_threshold, b.liveness_mode));
        assert!(!b.applies_to(
            b.match_threshold + 0.1,
            b.liveness_threshold,
            b.liveness_mode
        ));
        let wrong = b.to_json().replace(BASELINE_FORMAT, "other");
        assert!(matches!(
            Baseline::parse(&wrong),
            Err(BaselineError::Format { .. })
        ));
    }
}
