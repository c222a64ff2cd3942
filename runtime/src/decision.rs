//! Accept/reject decisions against thresholds: one type, one rule, shared by the fusion output,
//! the match and the liveness check so every API field reads `"accept"` or `"reject"`.

use serde::{Deserialize, Serialize};

/// The outcome of comparing a score with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The score reached the threshold.
    Accept,
    /// The score fell short of the threshold.
    Reject,
}

impl Decision {
    /// Accept when `score >= threshold` (higher scores are better).
    pub fn at_least(score: f64, threshold: f64) -> Self {
        if score >= threshold {
            Self::Accept
        } else {
            Self::Reject
        }
    }

    /// Accept when `score <= threshold` (for distances, where lower is better).
    pub fn at_most(score: f64, threshold: f64) -> Self {
        if score <= threshold {
            Self::Accept
        } else {
            Self::Reject
        }
    }

    /// The lowercase label used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Reject => "reject",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn boundaries() {
        assert_eq!(Decision::at_least(0.5, 0.5), Decision::Accept);
        assert_eq!(Decision::at_least(0.499_999, 0.5), Decision::Reject);
        assert_eq!(Decision::at_most(0.6, 0.6), Decision::Accept);
        assert_eq!(Decision::at_most(0.600_001, 0.6), Decision::Reject);
        assert_eq!(Decision::at_least(f64::NAN, 0.5), Decision::Reject);
    }

    #[test]
    fn serialises_lowercase() {
        assert_eq!(
            serde_json::to_string(&Decision::Accept).unwrap(),
            "\"accept\""
        );
        assert_eq!(Decision::Reject.as_str(), "reject");
    }
}
