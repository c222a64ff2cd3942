//! The cluster's scan policy floor and scanner settings: what the operator's flags impose on
//! every FaceKeyDeployment's `spec.scanGate`.
//!
//! A resource may only tighten the floor. [`ClusterPolicy::check`] lists every way a spec asks
//! for a looser gate (scanning disabled while required, a `maxSeverity` above the ceiling,
//! `ignoreCVEs` where ignoring is not allowed, its own scanner without `--allow-scanner-overrides`);
//! the reconciler and `render` refuse such a spec like any other invalid one (`InvalidSpec`, the
//! message naming the flag). [`ClusterPolicy::resolve`] fills what the resource leaves unset with
//! the operator's settings, so the scan gate and the scan Job read one complete `ScanGate`.
//! Pure: no client, unit-tested here.

use std::fmt;

use facekey_crds::{FaceKeyDeployment, FaceKeyDeploymentSpec, ScanGate, Severity};

use crate::validate::{self, InvalidSpec, Problem};

/// Scanner image used when neither the resource nor `--scanner-image` names one.
pub const DEFAULT_SCANNER_IMAGE: &str = "ghcr.io/aquasecurity/trivy:0.76.0";

/// The value the CRD used to default `scanGate.scannerImage` to; resources stored with it carry
/// it without having asked for it, so it means "the operator's scanner", not an override.
pub const LEGACY_SCANNER_IMAGE_DEFAULT: &str = "ghcr.io/aquasecurity/trivy:0.76.0";

/// The minimum gate every resource gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyFloor {
    /// `scanGate.enabled: false` is refused (`--require-scan`).
    pub require_scan: bool,
    /// The highest `scanGate.maxSeverity` a resource may tolerate (`--max-allowed-severity`).
    pub max_severity: Severity,
    /// Whether `scanGate.ignoreCVEs` may list anything (`--allow-ignore-cves`).
    pub allow_ignore_cves: bool,
    /// Whether a resource may pick its own scanner image, DB repositories or Trivy server
    /// (`--allow-scanner-overrides`). Off by default: a scanner that finds nothing, or a DB
    /// without entries, would open every gate.
    pub allow_scanner_overrides: bool,
}

impl Default for PolicyFloor {
    /// The operator's default floor: scanning required, CRITICAL findings always block
    /// (`maxSeverity` at most HIGH), ignore lists allowed, the operator's scanner only.
    fn default() -> Self {
        Self {
            require_scan: true,
            max_severity: Severity::High,
            allow_ignore_cves: true,
            allow_scanner_overrides: false,
        }
    }
}

impl PolicyFloor {
    /// No floor at all: every gate a resource asks for is accepted (tests, and
    /// `--require-scan=false --max-allowed-severity=CRITICAL --allow-scanner-overrides`).
    pub fn none() -> Self {
        Self {
            require_scan: false,
            max_severity: Severity::Critical,
            allow_ignore_cves: true,
            allow_scanner_overrides: true,
        }
    }
}

/// How the operator runs Trivy when the resource does not say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannerSettings {
    /// Image of the `trivy` container (`--scanner-image`).
    pub image: String,
    /// Vulnerability DB repository (`--db-repository`); Trivy's own default when `None`.
    pub db_repository: Option<String>,
    /// Java DB repository (`--java-db-repository`); Trivy's own default when `None`.
    pub java_db_repository: Option<String>,
    /// Trivy server URL (`--trivy-server`); standalone scans when `None`.
    pub server: Option<String>,
}

impl Default for ScannerSettings {
    fn default() -> Self {
        Self {
            image: DEFAULT_SCANNER_IMAGE.to_owned(),
            db_repository: None,
            java_db_repository: None,
            server: None,
        }
    }
}

/// Everything the operator's flags say about scanning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterPolicy {
    /// The minimum gate.
    pub floor: PolicyFloor,
    /// Scanner defaults.
    pub scanner: ScannerSettings,
}

/// One way a spec asks for a looser gate than the floor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// `scanGate.enabled: false` while scanning is required.
    ScanDisabled,
    /// `scanGate.maxSeverity` above the ceiling.
    SeverityAbove {
        /// What the resource asked for.
        asked: Severity,
        /// The ceiling.
        ceiling: Severity,
    },
    /// `scanGate.ignoreCVEs` is not empty while ignoring is not allowed.
    IgnoreCves(usize),
    /// A scanner setting of the resource while overrides are not allowed.
    ScannerOverride(&'static str),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::ScanDisabled => write!(
                f,
                "scanGate.enabled: false is below the cluster policy floor: scanning is required \
                 (operator flag --require-scan)"
            ),
            Violation::SeverityAbove { asked, ceiling } => write!(
                f,
                "scanGate.maxSeverity {} is above the cluster policy floor: at most {} \
                 (operator flag --max-allowed-severity)",
                asked.as_str(),
                ceiling.as_str()
            ),
            Violation::IgnoreCves(n) => write!(
                f,
                "scanGate.ignoreCVEs ({n} IDs) is not allowed by the cluster policy floor \
                 (operator flag --allow-ignore-cves=false)"
            ),
            Violation::ScannerOverride(field) => write!(
                f,
                "scanGate.{field} is the operator's to set: resources may not choose the scanner \
                 (operator flag --allow-scanner-overrides)"
            ),
        }
    }
}

impl ClusterPolicy {
    /// A policy without floor and with the default scanner (tests, trusted single-team clusters).
    pub fn permissive() -> Self {
        Self {
            floor: PolicyFloor::none(),
            scanner: ScannerSettings::default(),
        }
    }

    /// Every way `gate` (the resource's `spec.scanGate`) is looser than the floor.
    pub fn check(&self, gate: Option<&ScanGate>) -> Vec<Violation> {
        let Some(gate) = gate else {
            // Unset: resolved to the floor's own values, never looser.
            return Vec::new();
        };
        let floor = &self.floor;
        let mut out = Vec::new();
        if floor.require_scan && !gate.enabled {
            out.push(Violation::ScanDisabled);
        }
        // A disabled gate (where allowed) evaluates nothing: its other fields do not matter.
        if gate.enabled {
            if gate.max_severity > floor.max_severity {
                out.push(Violation::SeverityAbove {
                    asked: gate.max_severity,
                    ceiling: floor.max_severity,
                });
            }
            if !floor.allow_ignore_cves && !gate.ignore_cves.is_empty() {
                out.push(Violation::IgnoreCves(gate.ignore_cves.len()));
            }
        }
        if !floor.allow_scanner_overrides {
            if scanner_image_override(gate).is_some_and(|i| i != self.scanner.image) {
                out.push(Violation::ScannerOverride("scannerImage"));
            }
            for (field, asked, ours) in [
                (
                    "dbRepository",
                    &gate.db_repository,
                    &self.scanner.db_repository,
                ),
                (
                    "javaDbRepository",
                    &gate.java_db_repository,
                    &self.scanner.java_db_repository,
                ),
                ("server", &gate.server, &self.scanner.server),
            ] {
                if asked.is_some() && asked != ours {
                    out.push(Violation::ScannerOverride(field));
                }
            }
        }
        out
    }

    /// [`validate::validate`] plus the floor: every problem of `spec`, the floor's last.
    pub fn validate(&self, spec: &FaceKeyDeploymentSpec) -> Result<(), InvalidSpec> {
        let mut problems = match validate::validate(spec) {
            Ok(()) => Vec::new(),
            Err(invalid) => invalid.problems,
        };
        problems.extend(
            self.check(spec.scan_gate.as_ref())
                .into_iter()
                .map(|v| Problem::PolicyFloor(v.to_string())),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidSpec { problems })
        }
    }

    /// The complete gate for `gate`: unset scanner settings filled from the operator's, and an
    /// unset `scanGate` becoming the default gate capped at the floor's ceiling.
    pub fn resolve_gate(&self, gate: Option<&ScanGate>) -> ScanGate {
        let mut out = match gate {
            Some(g) => g.clone(),
            None => {
                let mut g = ScanGate::default();
                g.max_severity = g.max_severity.min(self.floor.max_severity);
                g
            }
        };
        out.scanner_image = Some(
            scanner_image_override(&out).map_or_else(|| self.scanner.image.clone(), str::to_owned),
        );
        let fill = |field: &mut Option<String>, ours: &Option<String>| {
            if field.is_none() {
                field.clone_from(ours);
            }
        };
        fill(&mut out.db_repository, &self.scanner.db_repository);
        fill(
            &mut out.java_db_repository,
            &self.scanner.java_db_repository,
        );
        fill(&mut out.server, &self.scanner.server);
        out
    }

    /// `fkd` with its `spec.scanGate` resolved ([`Self::resolve_gate`]): what the scan gate
    /// stage and the scan Job read.
    pub fn resolve(&self, fkd: &FaceKeyDeployment) -> FaceKeyDeployment {
        let mut out = fkd.clone();
        out.spec.scan_gate = Some(self.resolve_gate(fkd.spec.scan_gate.as_ref()));
        out
    }
}

/// The resource's own scanner image, if it names one (the former CRD default does not count).
fn scanner_image_override(gate: &ScanGate) -> Option<&str> {
    gate.scanner_image
        .as_deref()
        .filter(|i| !i.is_empty() && *i != LEGACY_SCANNER_IMAGE_DEFAULT)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn gate(f: impl FnOnce(&mut ScanGate)) -> ScanGate {
        let mut g = ScanGate::default();
        f(&mut g);
        g
    }

    #[test]
    fn default_floor_requires_scanning_and_caps_severity_at_high() {
        let p = ClusterPolicy::default();
        assert_eq!(p.check(None), []);
        assert_eq!(p.check(Some(&ScanGate::default())), []);
        assert_eq!(
            p.check(Some(&gate(|g| g.enabled = false))),
            [Violation::ScanDisabled]
        );
        assert_eq!(
            p.check(Some(&gate(|g| g.max_severity = Severity::High))),
            []
        );
        assert_eq!(
            p.check(Some(&gate(|g| g.max_severity = Severity::Critical))),
            [Violation::SeverityAbove {
                asked: Severity::Critical,
                ceiling: Severity::High
            }]
        );
        assert_eq!(
            p.check(Some(&gate(|g| g.ignore_cves = vec!["CVE-1".into()]))),
            []
        );
    }

    #[test]
    fn tightening_is_always_accepted() {
        let p = ClusterPolicy {
            floor: PolicyFloor {
                require_scan: true,
                max_severity: Severity::Medium,
                allow_ignore_cves: false,
                allow_scanner_overrides: false,
            },
            ..ClusterPolicy::default()
        };
        for sev in [Severity::Unknown, Severity::Low, Severity::Medium] {
            let g = gate(|g| {
                g.max_severity = sev;
                g.max_report_age = std::time::Duration::from_secs(60).into();
            });
            assert_eq!(p.check(Some(&g)), [], "{sev:?}");
        }
    }

    #[test]
    fn every_loosening_is_named_with_its_flag() {
        let p = ClusterPolicy {
            floor: PolicyFloor {
                require_scan: true,
                max_severity: Severity::Low,
                allow_ignore_cves: false,
                allow_scanner_overrides: false,
            },
            ..ClusterPolicy::default()
        };
        let g = gate(|g| {
            g.max_severity = Severity::Medium;
            g.ignore_cves = vec!["CVE-1".into(), "CVE-2".into()];
            g.scanner_image = Some("evil/trivy:1".into());
            g.db_repository = Some("mirror.example/db".into());
            g.server = Some("http://trivy:4954".into());
        });
        let v = p.check(Some(&g));
        assert_eq!(
            v,
            [
                Violation::SeverityAbove {
                    asked: Severity::Medium,
                    ceiling: Severity::Low
                },
                Violation::IgnoreCves(2),
                Violation::ScannerOverride("scannerImage"),
                Violation::ScannerOverride("dbRepository"),
                Violation::ScannerOverride("server"),
            ]
        );
        let texts: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert!(texts[0].contains("at most LOW") && texts[0].contains("--max-allowed-severity"));
        assert!(texts[1].contains("--allow-ignore-cves=false"));
        assert!(texts[2].contains("--allow-scanner-overrides"));
        // Disabled where scanning is required: only that is reported.
        let off = gate(|g| {
            g.enabled = false;
            g.max_severity = Severity::Critical;
        });
        assert_eq!(p.check(Some(&off)), [Violation::ScanDisabled]);
        assert!(
            Violation::ScanDisabled
                .to_string()
                .contains("--require-scan")
        );
    }

    #[test]
    fn scanner_settings_equal_to_the_operators_or_the_old_default_are_not_overrides() {
        let p = ClusterPolicy {
            scanner: ScannerSettings {
                image: "mirror.example/trivy:0.80".into(),
                db_repository: Some("mirror.example/trivy-db".into()),
                java_db_repository: None,
                server: None,
            },
            ..ClusterPolicy::default()
        };
        let g = gate(|g| {
            g.scanner_image = Some(LEGACY_SCANNER_IMAGE_DEFAULT.into());
            g.db_repository = Some("mirror.example/trivy-db".into());
        });
        assert_eq!(p.check(Some(&g)), []);
        // The stored old default resolves to the operator's image.
        assert_eq!(
            p.resolve_gate(Some(&g)).scanner_image.as_deref(),
            Some("mirror.example/trivy:0.80")
        );
    }

    #[test]
    fn no_floor_accepts_anything() {
        let p = ClusterPolicy::permissive();
        let g = gate(|g| {
            g.enabled = false;
            g.max_severity = Severity::Critical;
            g.ignore_cves = vec!["CVE-1".into()];
            g.scanner_image = Some("x".into());
            g.server = Some("http://s".into());
        });
        assert_eq!(p.check(Some(&g)), []);
    }

    #[test]
    fn resolve_fills_unset_fields_from_the_operator_and_caps_the_default() {
        let p = ClusterPolicy {
            floor: PolicyFloor {
                max_severity: Severity::Low,
                ..PolicyFloor::default()
            },
            scanner: ScannerSettings {
                image: "op/trivy:1".into(),
                db_repository: Some("mirror/db".into()),
                java_db_repository: Some("mirror/java-db".into()),
                server: Some("http://trivy.scan:4954".into()),
            },
        };
        let g = p.resolve_gate(None);
        assert!(g.enabled);
        // The CRD's default MEDIUM is above this floor: an unset gate gets the floor's LOW.
        assert_eq!(g.max_severity, Severity::Low);
        assert_eq!(g.scanner_image.as_deref(), Some("op/trivy:1"));
        assert_eq!(g.db_repository.as_deref(), Some("mirror/db"));
        assert_eq!(g.java_db_repository.as_deref(), Some("mirror/java-db"));
        assert_eq!(g.server.as_deref(), Some("http://trivy.scan:4954"));
        // The resource's own values win (where the floor allows them).
        let own = gate(|g| {
            g.max_severity = Severity::Unknown;
            g.server = Some("http://own:4954".into());
        });
        let r = p.resolve_gate(Some(&own));
        assert_eq!(r.max_severity, Severity::Unknown);
        assert_eq!(r.server.as_deref(), Some("http://own:4954"));
        assert_eq!(r.db_repository.as_deref(), Some("mirror/db"));
        // Defaults: the default floor keeps the CRD's MEDIUM, the default image is Trivy's.
        let d = ClusterPolicy::default().resolve_gate(None);
        assert_eq!(d.max_severity, Severity::Medium);
        assert_eq!(d.scanner_image.as_deref(), Some(DEFAULT_SCANNER_IMAGE));
        assert_eq!(d.server, None);
    }

    #[test]
    fn validate_joins_spec_problems_and_floor_violations() {
        let spec: FaceKeyDeploymentSpec = serde_json::from_value(serde_json::json!({
            "image": " ", "scanGate": {"enabled": false}
        }))
        .unwrap();
        let err = ClusterPolicy::default().validate(&spec).unwrap_err();
        assert_eq!(err.problems.len(), 2);
        assert_eq!(err.problems[0], Problem::EmptyImage);
        assert!(
            err.message().contains("--require-scan"),
            "{}",
            err.message()
        );
        assert!(ClusterPolicy::permissive().validate(&spec).is_err());
        let ok: FaceKeyDeploymentSpec =
            serde_json::from_value(serde_json::json!({"image": "i:1"})).unwrap();
        assert_eq!(ClusterPolicy::default().validate(&ok), Ok(()));
    }
}
