//! Vulnerability scan results and the gate policy, as pure functions.
//!
//! - [`trivy`]: the subset of Trivy's JSON report (SchemaVersion 2) the gate needs;
//! - [`ScanSummary`]: the compact form a scan Job writes to its termination message (and the form
//!   a trivy-operator VulnerabilityReport is converted to);
//! - [`policy::evaluate`]: the verdict of a summary under a `scanGate` policy;
//! - [`image_ref`]: parsing image references to match VulnerabilityReports;
//! - [`docker_config`]: the pull secrets' registry logins merged into Trivy's Docker config.

pub mod docker_config;
pub mod image_ref;
pub mod policy;
mod summary;
pub mod trivy;
pub mod vulnerability_report;

pub use policy::{Verdict, evaluate, is_stale, policy_hash};
pub use summary::{Finding, MAX_SUMMARY_BYTES, ScanSummary};
