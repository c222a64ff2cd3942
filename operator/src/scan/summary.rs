//! The compact scan summary carried in a termination message.

use std::collections::BTreeMap;

use facekey_crds::Severity;
use serde::{Deserialize, Serialize};

use super::trivy::Report;

/// Kubernetes caps termination messages at 4096 bytes; stay below with a margin.
pub const MAX_SUMMARY_BYTES: usize = 3800;

/// One distinct vulnerability: ID, highest severity seen, whether any affected package has a fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding(pub String, pub Severity, pub bool);

/// What the gate needs to know about one scan, small enough for a termination message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanSummary {
    /// Format version of this summary.
    pub v: u32,
    /// The scanned image reference.
    pub image: String,
    /// The `repo@sha256:…` digest the scanner resolved the reference to (Trivy's
    /// `Metadata.RepoDigests`, the entry of the scanned repository); what the Deployment runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// When the report was produced (RFC 3339).
    pub created_at: String,
    /// Distinct vulnerabilities per severity (complete, even when `findings` is truncated).
    pub totals: BTreeMap<Severity, i32>,
    /// Distinct vulnerabilities, most severe first; may be cut short, see `omitted`.
    pub findings: Vec<Finding>,
    /// Findings left out of `findings` to respect [`MAX_SUMMARY_BYTES`].
    #[serde(default)]
    pub omitted: u32,
}

fn severity(s: &str) -> Severity {
    match s.to_ascii_uppercase().as_str() {
        "CRITICAL" => Severity::Critical,
        "HIGH" => Severity::High,
        "MEDIUM" => Severity::Medium,
        "LOW" => Severity::Low,
        _ => Severity::Unknown,
    }
}

impl ScanSummary {
    /// Summarise `findings` (id, severity name, fixed), deduplicating by ID.
    pub fn from_findings<'a>(
        image: &str,
        digest: Option<String>,
        created_at: String,
        findings: impl IntoIterator<Item = (&'a str, &'a str, bool)>,
    ) -> Self {
        let mut by_id: BTreeMap<&str, (Severity, bool)> = BTreeMap::new();
        for (id, sev, fixed) in findings {
            let sev = severity(sev);
            by_id
                .entry(id)
                .and_modify(|(s, f)| {
                    *s = (*s).max(sev);
                    *f |= fixed;
                })
                .or_insert((sev, fixed));
        }
        let mut totals: BTreeMap<Severity, i32> = Severity::ALL.iter().map(|s| (*s, 0)).collect();
        let mut findings: Vec<Finding> = by_id
            .into_iter()
            .map(|(id, (sev, fixed))| {
                *totals.entry(sev).or_default() += 1;
                Finding(id.to_owned(), sev, fixed)
            })
            .collect();
        findings.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Self {
            v: 1,
            image: image.to_owned(),
            digest,
            created_at,
            totals,
            findings,
            omitted: 0,
        }
    }

    /// Summarise a Trivy report of `image`; `now` stands in when the report has no `CreatedAt`.
    pub fn from_trivy(report: &Report, image: &str, now: &str) -> Self {
        // The repo digest of the scanned repository (an image can carry several names).
        let digest = report.metadata.as_ref().and_then(|m| {
            let sha = super::image_ref::digest_for(image, &m.repo_digests)?;
            m.repo_digests.iter().find(|rd| rd.ends_with(&sha)).cloned()
        });
        let created = report.created_at.clone().unwrap_or_else(|| now.to_owned());
        let vulns = report.results.iter().flat_map(|r| r.vulnerabilities.iter());
        Self::from_findings(
            image,
            digest,
            created,
            vulns.map(|v| {
                (
                    v.vulnerability_id.as_str(),
                    v.severity.as_str(),
                    v.is_fixed(),
                )
            }),
        )
    }

    /// JSON of at most `max_bytes`, dropping the least severe findings first (counted in
    /// `omitted`; the gate treats omitted findings above the threshold as blocking).
    pub fn encode_bounded(&self, max_bytes: usize) -> Result<String, serde_json::Error> {
        let mut s = self.clone();
        let mut json = serde_json::to_string(&s)?;
        while json.len() > max_bytes && !s.findings.is_empty() {
            // Estimate how many to drop, then re-encode; at least one per round.
            let excess = json.len() - max_bytes;
            let drop = (excess / 24).clamp(1, s.findings.len());
            s.findings.truncate(s.findings.len() - drop);
            s.omitted += u32::try_from(drop).unwrap_or(u32::MAX);
            json = serde_json::to_string(&s)?;
        }
        Ok(json)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn deduplicates_by_id_keeping_worst_severity_and_any_fix() {
        let s = ScanSummary::from_findings(
            "img",
            None,
            "t".into(),
            [
                ("CVE-1", "LOW", false),
                ("CVE-1", "HIGH", true),
                ("CVE-2", "CRITICAL", false),
                ("CVE-3", "bogus", false),
            ],
        );
        assert_eq!(
            s.findings,
            vec![
                Finding("CVE-2".into(), Severity::Critical, false),
                Finding("CVE-1".into(), Severity::High, true),
                Finding("CVE-3".into(), Severity::Unknown, false),
            ]
        );
        assert_eq!(s.totals[&Severity::High], 1);
        assert_eq!(s.totals[&Severity::Low], 0);
    }

    #[test]
    fn bounded_encoding_drops_least_severe_and_counts_them() {
        let ids: Vec<String> = (0..400).map(|i| format!("CVE-2024-{i:05}")).collect();
        let findings = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), if i < 10 { "CRITICAL" } else { "LOW" }, true));
        let s = ScanSummary::from_findings("img", None, "t".into(), findings);
        let json = s.encode_bounded(MAX_SUMMARY_BYTES).unwrap();
        assert!(json.len() <= MAX_SUMMARY_BYTES, "{}", json.len());
        let back: ScanSummary = serde_json::from_str(&json).unwrap();
        assert!(back.omitted > 0);
        assert_eq!(back.findings.len() + back.omitted as usize, 400);
        assert_eq!(back.totals[&Severity::Critical], 10);
        assert!(
            back.findings[..10]
                .iter()
                .all(|f| f.1 == Severity::Critical)
        );
    }
}
