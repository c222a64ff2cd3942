//! `facekey-operator render`: print the objects the reconciler would apply for FaceKeyDeployments
//! in a YAML file, through the same [`crate::build::build`] the reconciler uses (like
//! `helm template`, for reviewing changes in GitOps).

use facekey_crds::FaceKeyDeployment;
use serde::Deserialize;
use serde_json::Value;

use crate::build::{BuildInputs, Capabilities, build, scan_job};
use crate::{Error, Result};

/// Options of a render.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Optional CRDs to assume installed.
    pub capabilities: Capabilities,
    /// Also print the scan Job the gate would start for `spec.image`.
    pub include_scan_job: bool,
    /// Operator image used in the scan Job's summary container.
    pub operator_image: String,
}

/// Parse every FaceKeyDeployment in the multi-document YAML `input`; other kinds are an error.
/// A missing namespace defaults to `default`, as `kubectl apply` would.
pub fn parse_resources(input: &str) -> Result<Vec<FaceKeyDeployment>> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let value = Value::deserialize(doc).map_err(|source| Error::Yaml {
            what: format!("document {}", i + 1),
            source,
        })?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind != "FaceKeyDeployment" {
            return Err(Error::InvalidSpec(format!(
                "document {} is a {kind:?}, not a FaceKeyDeployment",
                i + 1
            )));
        }
        let mut fkd: FaceKeyDeployment =
            serde_json::from_value(value).map_err(|source| Error::Serialize {
                what: format!("document {} as FaceKeyDeployment", i + 1),
                source,
            })?;
        if fkd.metadata.namespace.is_none() {
            fkd.metadata.namespace = Some("default".to_owned());
        }
        out.push(fkd);
    }
    Ok(out)
}

/// The objects for `fkd` as JSON values, in apply order (the scan gate assumed open).
pub fn render_objects(fkd: &FaceKeyDeployment, opts: &RenderOptions) -> Result<Vec<Value>> {
    let desired = build(&BuildInputs {
        fkd,
        runtime_image: Some(&fkd.spec.image),
        capabilities: &opts.capabilities,
    })?;
    let mut objects: Vec<Value> = desired.objects.into_iter().map(|o| o.body).collect();
    let gate = fkd.spec.scan_gate.clone().unwrap_or_default();
    if opts.include_scan_job && gate.enabled {
        let job = scan_job(fkd, &fkd.spec.image, &gate, &opts.operator_image)?;
        objects.push(
            serde_json::to_value(job).map_err(|source| Error::Serialize {
                what: "scan Job".into(),
                source,
            })?,
        );
    }
    Ok(objects)
}

/// Render every resource in `input` to a multi-document YAML stream.
pub fn render(input: &str, opts: &RenderOptions) -> Result<String> {
    let mut out = String::new();
    for fkd in parse_resources(input)? {
        let source = format!(
            "{}/{}",
            fkd.metadata.namespace.as_deref().unwrap_or_default(),
            fkd.metadata.name.as_deref().unwrap_or_default()
        );
        for obj in render_objects(&fkd, opts)? {
            let yaml = serde_yaml::to_string(&obj).map_err(|source| Error::Yaml {
                what: "output".into(),
                source,
            })?;
            out.push_str(&format!(
                "---\n# Source: FaceKeyDeployment {source}\n{yaml}"
            ));
        }
    }
    Ok(out)
}
