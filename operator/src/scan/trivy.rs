//! Trivy JSON report (`trivy image --format json`, SchemaVersion 2), only the fields the gate reads.

use serde::Deserialize;

/// A whole Trivy report.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Report {
    /// Report format version; 2 for all current Trivy releases.
    pub schema_version: u32,
    /// When Trivy produced the report (Trivy ≥ 0.48).
    #[serde(default)]
    pub created_at: Option<String>,
    /// The scanned reference as given on the command line.
    #[serde(default)]
    pub artifact_name: String,
    /// `container_image` for image scans.
    #[serde(default)]
    pub artifact_type: Option<String>,
    /// Image metadata (digests, OS).
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// One entry per scanned target (OS packages, language packages).
    #[serde(default)]
    pub results: Vec<ScanResult>,
}

/// Image metadata.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Metadata {
    /// Image config digest.
    #[serde(default, rename = "ImageID")]
    pub image_id: Option<String>,
    /// `repo@sha256:…` digests of the image.
    #[serde(default)]
    pub repo_digests: Vec<String>,
}

/// Findings for one target.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScanResult {
    /// E.g. `ghcr.io/x (debian 12.5)` or `app/Cargo.lock`.
    pub target: String,
    /// Vulnerabilities found; absent when none.
    #[serde(default)]
    pub vulnerabilities: Vec<Vulnerability>,
}

/// One vulnerable package version.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Vulnerability {
    /// CVE-…, GHSA-…, RUSTSEC-….
    #[serde(rename = "VulnerabilityID")]
    pub vulnerability_id: String,
    /// Affected package.
    #[serde(default)]
    pub pkg_name: String,
    /// Installed version.
    #[serde(default)]
    pub installed_version: String,
    /// First fixed version; empty or absent when no fix exists.
    #[serde(default)]
    pub fixed_version: Option<String>,
    /// `fixed`, `affected`, `will_not_fix`, …
    #[serde(default)]
    pub status: Option<String>,
    /// UNKNOWN, LOW, MEDIUM, HIGH or CRITICAL.
    pub severity: String,
}

impl Vulnerability {
    /// Whether a fixed version exists.
    pub fn is_fixed(&self) -> bool {
        self.fixed_version.as_deref().is_some_and(|v| !v.is_empty())
            || self.status.as_deref() == Some("fixed")
    }
}

/// Parse a report from JSON text.
pub fn parse(json: &str) -> Result<Report, serde_json::Error> {
    serde_json::from_str(json)
}
