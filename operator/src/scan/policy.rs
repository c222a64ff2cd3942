//! The scan gate policy: does a scan summary allow an image to roll out?

use std::collections::BTreeMap;

use facekey_crds::{ScanGate, Severity};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::ScanSummary;

/// Outcome of evaluating one summary under one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The image may roll out.
    pub passed: bool,
    /// The report is older than `maxReportAge` (or its time is unreadable): rescan, don't decide.
    pub stale: bool,
    /// Distinct findings per severity that count under the policy (after ignores / unfixed).
    pub counted: BTreeMap<Severity, i32>,
    /// Counted findings above `maxSeverity`, plus truncated ones that might be.
    pub blocking: i32,
    /// Findings skipped because their ID is in `ignoreCVEs`.
    pub ignored: i32,
    /// Findings skipped because they have no fix and `allowUnfixed` is set.
    pub unfixed_allowed: i32,
    /// One-line explanation for conditions and Events.
    pub message: String,
}

/// Hash of the parts of `gate` that decide a verdict from a report: `maxSeverity`, `allowUnfixed`
/// and `ignoreCVEs` (case and order ignored). A recorded verdict under another hash is evaluated
/// again; `maxReportAge` is not part of it (it is checked against the report's time).
pub fn policy_hash(gate: &ScanGate) -> String {
    let mut ignored: Vec<String> = gate
        .ignore_cves
        .iter()
        .map(|id| id.trim().to_ascii_uppercase())
        .collect();
    ignored.sort();
    ignored.dedup();
    let canonical = format!(
        "v1;max={};unfixed={};ignore={}",
        gate.max_severity.as_str(),
        gate.allow_unfixed,
        ignored.join(",")
    );
    crate::labels::short_hash(canonical.as_bytes(), 16)
}

/// The youngest age at which a report may be stale whatever `maxReportAge` says: the scan Job's
/// deadline (`activeDeadlineSeconds`). A scan takes minutes (Trivy fetches its database first),
/// so a shorter age made every fresh report stale before the gate read it: its Job was deleted
/// and run again, forever, and the image never admitted.
pub const MIN_REPORT_AGE: std::time::Duration =
    std::time::Duration::from_secs(crate::desired::SCAN_JOB_DEADLINE_SECONDS.unsigned_abs());

/// The age beyond which a report is stale: `maxReportAge`, at least [`MIN_REPORT_AGE`].
pub fn max_report_age(gate: &ScanGate) -> std::time::Duration {
    std::time::Duration::from(gate.max_report_age).max(MIN_REPORT_AGE)
}

/// Whether a report made at `scanned_at` is older than [`max_report_age`] at `now` (an unknown
/// time is stale).
pub fn is_stale(scanned_at: Option<Timestamp>, gate: &ScanGate, now: Timestamp) -> bool {
    let max_age = SignedDuration::try_from(max_report_age(gate)).unwrap_or(SignedDuration::MAX);
    scanned_at.is_none_or(|t| now.duration_since(t) > max_age)
}

/// Evaluate `summary` under `gate` at time `now`.
pub fn evaluate(summary: &ScanSummary, gate: &ScanGate, now: Timestamp) -> Verdict {
    let stale = is_stale(summary.created_at.parse::<Timestamp>().ok(), gate, now);
    let mut counted: BTreeMap<Severity, i32> = Severity::ALL.iter().map(|s| (*s, 0)).collect();
    let mut listed: BTreeMap<Severity, i32> = BTreeMap::new();
    let (mut ignored, mut unfixed_allowed) = (0, 0);
    for finding in &summary.findings {
        *listed.entry(finding.1).or_default() += 1;
        if gate
            .ignore_cves
            .iter()
            .any(|id| id.eq_ignore_ascii_case(&finding.0))
        {
            ignored += 1;
        } else if gate.allow_unfixed && !finding.2 {
            unfixed_allowed += 1;
        } else {
            *counted.entry(finding.1).or_default() += 1;
        }
    }
    // Findings cut from a truncated summary cannot be checked against the ignore list: count them
    // (fail closed). They are the least severe, so this only matters when they exceed the policy.
    for (sev, total) in &summary.totals {
        let missing = total - listed.get(sev).copied().unwrap_or(0);
        if missing > 0 {
            *counted.entry(*sev).or_default() += missing;
        }
    }
    let blocking: i32 = counted
        .iter()
        .filter(|(sev, _)| **sev > gate.max_severity)
        .map(|(_, n)| n)
        .sum();
    let passed = !stale && blocking == 0;
    let c = |s| counted.get(&s).copied().unwrap_or(0);
    let counts = format!(
        "critical={} high={} medium={} low={} unknown={}",
        c(Severity::Critical),
        c(Severity::High),
        c(Severity::Medium),
        c(Severity::Low),
        c(Severity::Unknown)
    );
    let message = if stale {
        format!(
            "scan report of {} from {} is older than maxReportAge {} (at least 15m)",
            summary.image, summary.created_at, gate.max_report_age
        )
    } else if passed {
        format!(
            "{} passed: no findings above {} ({counts}; {ignored} ignored, {unfixed_allowed} unfixed allowed)",
            summary.image,
            gate.max_severity.as_str()
        )
    } else {
        format!(
            "{} blocked: {blocking} findings above {} ({counts}; {ignored} ignored, {unfixed_allowed} unfixed allowed)",
            summary.image,
            gate.max_severity.as_str()
        )
    };
    Verdict {
        passed,
        stale,
        counted,
        blocking,
        ignored,
        unfixed_allowed,
        message,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn summary(findings: &[(&'static str, &'static str, bool)]) -> ScanSummary {
        ScanSummary::from_findings(
            "img:1",
            None,
            "2025-01-01T00:00:00Z".into(),
            findings.iter().copied(),
        )
    }

    fn now() -> Timestamp {
        "2025-01-01T01:00:00Z".parse().unwrap()
    }

    #[test]
    fn severity_threshold_is_exclusive() {
        let s = summary(&[("CVE-1", "MEDIUM", true), ("CVE-2", "HIGH", true)]);
        let gate = ScanGate {
            max_severity: Severity::High,
            ..ScanGate::default()
        };
        assert!(evaluate(&s, &gate, now()).passed);
        let gate = ScanGate {
            max_severity: Severity::Medium,
            ..ScanGate::default()
        };
        let v = evaluate(&s, &gate, now());
        assert!(!v.passed);
        assert_eq!(v.blocking, 1);
        assert!(
            v.message.contains("1 findings above MEDIUM"),
            "{}",
            v.message
        );
    }

    #[test]
    fn ignore_list_and_unfixed_are_honoured() {
        let s = summary(&[("CVE-1", "CRITICAL", true), ("CVE-2", "HIGH", false)]);
        let gate = ScanGate {
            ignore_cves: vec!["cve-1".into()],
            allow_unfixed: true,
            ..ScanGate::default()
        };
        let v = evaluate(&s, &gate, now());
        assert!(v.passed, "{v:?}");
        assert_eq!((v.ignored, v.unfixed_allowed, v.blocking), (1, 1, 0));
        let v = evaluate(
            &s,
            &ScanGate {
                allow_unfixed: false,
                ..gate
            },
            now(),
        );
        assert_eq!(v.blocking, 1);
    }

    /// Regression: `maxReportAge: 0` (or anything shorter than a scan) made every report stale
    /// on arrival, so the gate deleted and re-ran its scan Job forever.
    #[test]
    fn a_report_is_fresh_for_at_least_the_scan_deadline() {
        let at = |minutes_ago: i64| {
            let mut s = summary(&[]);
            s.created_at = now()
                .checked_sub(SignedDuration::from_mins(minutes_ago))
                .unwrap()
                .to_string();
            s
        };
        for age in ["0", "1s", "10m"] {
            let gate = ScanGate {
                max_report_age: age.parse().unwrap(),
                ..ScanGate::default()
            };
            assert!(evaluate(&at(1), &gate, now()).passed, "{age}");
            assert!(!evaluate(&at(14), &gate, now()).stale, "{age}");
            assert!(evaluate(&at(16), &gate, now()).stale, "{age}");
        }
        let day = ScanGate {
            max_report_age: "24h".parse().unwrap(),
            ..ScanGate::default()
        };
        assert!(!evaluate(&at(600), &day, now()).stale);
    }

    #[test]
    fn stale_reports_never_pass() {
        let s = summary(&[]);
        let gate = ScanGate {
            max_report_age: "30m".parse().unwrap(),
            ..ScanGate::default()
        };
        let v = evaluate(&s, &gate, now());
        assert!(v.stale && !v.passed);
        let mut bad_time = s.clone();
        bad_time.created_at = "yesterday".into();
        assert!(evaluate(&bad_time, &ScanGate::default(), now()).stale);
    }

    #[test]
    fn policy_hash_follows_the_verdict_deciding_fields_only() {
        let base = ScanGate::default();
        let h = policy_hash(&base);
        assert_eq!(h.len(), 16);
        let same = ScanGate {
            max_report_age: "1h".parse().unwrap(),
            ..base.clone()
        };
        assert_eq!(policy_hash(&same), h, "maxReportAge is not policy");
        let a = ScanGate {
            ignore_cves: vec!["cve-2".into(), "CVE-1".into()],
            ..base.clone()
        };
        let b = ScanGate {
            ignore_cves: vec!["CVE-1".into(), "CVE-2".into(), "cve-1".into()],
            ..base.clone()
        };
        assert_eq!(policy_hash(&a), policy_hash(&b), "order and case ignored");
        assert_ne!(policy_hash(&a), h);
        for changed in [
            ScanGate {
                max_severity: Severity::High,
                ..base.clone()
            },
            ScanGate {
                allow_unfixed: true,
                ..base.clone()
            },
        ] {
            assert_ne!(policy_hash(&changed), h);
        }
    }

    #[test]
    fn truncated_findings_count_against_the_gate() {
        let mut s = summary(&[("CVE-1", "CRITICAL", true), ("CVE-2", "HIGH", true)]);
        s.findings.truncate(1);
        s.omitted = 1;
        let gate = ScanGate {
            ignore_cves: vec!["CVE-1".into(), "CVE-2".into()],
            ..ScanGate::default()
        };
        let v = evaluate(&s, &gate, now());
        assert_eq!(v.blocking, 1, "{v:?}");
        assert!(!v.passed);
    }
}
