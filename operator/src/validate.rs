//! Semantic checks of a FaceKeyDeployment spec, run before anything is built or applied.
//!
//! The CRD's CEL rules enforce the same invariants on API servers that evaluate them; the operator
//! repeats them so `render` catches mistakes offline and an object that slipped past admission (an
//! older server, a CRD installed without validation) is reported as `InvalidSpec` instead of being
//! half-applied.

use facekey_crds::FaceKeyDeploymentSpec;

use crate::{Error, Result};

/// Check `spec`; the error message lists every problem found, separated by `; `.
pub fn validate(spec: &FaceKeyDeploymentSpec) -> Result<()> {
    let mut problems = Vec::new();
    if spec.image.trim().is_empty() {
        problems.push("image must not be empty".to_owned());
    }
    if spec.replicas.is_some() && spec.autoscaling.is_some() {
        problems.push("set either replicas or autoscaling, not both".to_owned());
    }
    if let Some(replicas) = spec.replicas
        && replicas < 0
    {
        problems.push(format!("replicas must be >= 0, got {replicas}"));
    }
    if let Some(a) = &spec.autoscaling {
        if a.min_replicas < 1 {
            problems.push("autoscaling.minReplicas must be >= 1".to_owned());
        }
        if a.min_replicas > a.max_replicas {
            problems.push(format!(
                "autoscaling.minReplicas ({}) must not exceed maxReplicas ({})",
                a.min_replicas, a.max_replicas
            ));
        }
        if a.target_cpu_utilization_percentage.is_none() && a.target_requests_per_second.is_none() {
            problems.push(
                "autoscaling needs targetCPUUtilizationPercentage and/or targetRequestsPerSecond"
                    .to_owned(),
            );
        }
    }
    if let Some(models) = &spec.models {
        if let Some(t) = &models.thresholds {
            for (name, value) in [("auth", t.auth), ("spoof", t.spoof), ("match", t.match_)] {
                if let Some(v) = value
                    && !(0.0..=1.0).contains(&v)
                {
                    problems.push(format!("thresholds.{name} must be in [0, 1], got {v}"));
                }
            }
        }
        if let Some(w) = &models.score_weights
            && w.inline.is_some() == w.config_map_key_ref.is_some()
        {
            problems.push("scoreWeights: set exactly one of inline or configMapKeyRef".to_owned());
        }
        if let Some(s) = &models.spoof {
            let set = [s.config_map.is_some(), s.pvc.is_some(), s.uri.is_some()]
                .iter()
                .filter(|b| **b)
                .count();
            if set != 1 {
                problems.push("spoof: set exactly one of configMap, pvc or uri".to_owned());
            }
        }
    }
    if let Some(email) = spec.alerting.as_ref().and_then(|a| a.email.as_ref()) {
        for (name, value) in [("to", &email.to), ("from", &email.from)] {
            if !is_address(value) {
                problems.push(format!("alerting.email.{name} must be an email address"));
            }
        }
        if parse_smarthost(&email.smarthost).is_none() {
            problems.push("alerting.email.smarthost must be host:port".to_owned());
        }
        if email.auth_secret_ref.name.is_empty() || email.auth_secret_ref.key.is_empty() {
            problems.push("alerting.email.authSecretRef needs name and key".to_owned());
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidSpec(problems.join("; ")))
    }
}

fn is_address(s: &str) -> bool {
    let mut parts = s.split('@');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(local), Some(domain), None)
            if !local.is_empty() && !domain.is_empty() && !s.contains(char::is_whitespace)
    )
}

/// Split `host:port`; `None` unless the port is a number and the host is non-empty.
pub fn parse_smarthost(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use facekey_crds::{Autoscaling, Models, Thresholds};

    fn spec() -> FaceKeyDeploymentSpec {
        serde_json::from_value(serde_json::json!({"image": "img:1"})).unwrap()
    }

    #[test]
    fn minimal_spec_is_valid() {
        validate(&spec()).unwrap();
    }

    #[test]
    fn reports_every_problem() {
        let mut s = spec();
        s.image = " ".into();
        s.replicas = Some(2);
        s.autoscaling = Some(Autoscaling {
            min_replicas: 4,
            max_replicas: 2,
            target_cpu_utilization_percentage: None,
            target_requests_per_second: None,
        });
        s.models = Some(Models {
            thresholds: Some(Thresholds {
                auth: Some(1.2),
                ..Default::default()
            }),
            ..Default::default()
        });
        let Err(Error::InvalidSpec(msg)) = validate(&s) else {
            panic!("expected InvalidSpec")
        };
        for needle in [
            "image must not be empty",
            "not both",
            "must not exceed maxReplicas",
            "needs targetCPUUtilizationPercentage",
            "thresholds.auth must be in [0, 1], got 1.2",
        ] {
            assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
        }
    }

    #[test]
    fn smarthost_parsing() {
        assert_eq!(
            parse_smarthost("smtp.example.com:587"),
            Some(("smtp.example.com", 587))
        );
        assert_eq!(parse_smarthost("smtp.example.com"), None);
        assert_eq!(parse_smarthost(":25"), None);
        assert_eq!(parse_smarthost("h:port"), None);
    }
}
