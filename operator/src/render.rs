//! `facekey-operator render`: print the objects the reconciler would apply for FaceKeyDeployments
//! in a YAML file, through the same [`crate::desired::compute`] the reconciler uses (like
//! `helm template`, for reviewing changes in GitOps).

use facekey_crds::FaceKeyDeployment;
use serde::Deserialize;
use serde_json::Value;

use crate::desired::{self, Capabilities, DesiredInputs, scan_job};
use crate::error::DesiredError;
use crate::policy_floor::ClusterPolicy;
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
    /// The scan policy floor specs must meet and the scanner settings of the scan Job, as the
    /// operator's flags would set them.
    pub policy: ClusterPolicy,
}

/// The FaceKeyDeployments of a multi-document YAML stream, and the other documents it skipped.
#[derive(Debug, Default)]
pub struct Parsed {
    /// FaceKeyDeployments, a missing namespace set to `default` (as `kubectl apply` would).
    pub resources: Vec<FaceKeyDeployment>,
    /// `kind name` of documents that are not FaceKeyDeployments (e.g. a Namespace).
    pub skipped: Vec<String>,
}

/// Parse every FaceKeyDeployment in the multi-document YAML `input`, skipping other kinds.
pub fn parse_resources(input: &str) -> Result<Parsed> {
    let mut out = Parsed::default();
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
            let name = value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?");
            out.skipped.push(format!("{kind} {name}"));
            continue;
        }
        let mut fkd: FaceKeyDeployment =
            serde_json::from_value(value).map_err(|source| Error::Serialize {
                what: format!("document {} as FaceKeyDeployment", i + 1),
                source,
            })?;
        if fkd.metadata.namespace.is_none() {
            fkd.metadata.namespace = Some("default".to_owned());
        }
        out.resources.push(fkd);
    }
    Ok(out)
}

/// The objects for `fkd` as JSON values, in apply order (the scan gate assumed open). Secrets
/// the operator generates (the template key, the API keys) are not objects to apply: see [`generated_notes`].
pub fn render_objects(fkd: &FaceKeyDeployment, opts: &RenderOptions) -> Result<Vec<Value>> {
    let desired = compute(fkd, opts)?;
    let mut objects: Vec<Value> = desired.objects.into_iter().map(|o| o.body).collect();
    let gate = opts.policy.resolve_gate(fkd.spec.scan_gate.as_ref());
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

fn compute(fkd: &FaceKeyDeployment, opts: &RenderOptions) -> Result<desired::Desired> {
    // Refused like the reconciler refuses it: the spec's rules and the policy floor.
    opts.policy
        .validate(&fkd.spec)
        .map_err(DesiredError::from)?;
    Ok(desired::compute(&DesiredInputs {
        fkd,
        runtime_image: Some(&fkd.spec.image),
        capabilities: &opts.capabilities,
        // Nothing is read from a cluster: the config hash covers `<name>-config` alone.
        mounted_config: None,
    })?)
}

/// One line per Secret the operator would generate for `fkd`. They are not rendered as
/// objects: applying an empty Secret by hand would stop the operator from ever filling it.
pub fn generated_notes(fkd: &FaceKeyDeployment, opts: &RenderOptions) -> Result<Vec<String>> {
    Ok(compute(fkd, opts)?
        .generated_secrets
        .iter()
        .map(|g| {
            let what = match g.content {
                desired::GeneratedContent::TemplateKey => format!("key {}", g.key),
                desired::GeneratedContent::ApiKeys => {
                    format!("keys {} and {}", g.key, desired::ADMIN_KEY)
                }
            };
            let content = match g.content {
                desired::GeneratedContent::TemplateKey => "template key",
                desired::GeneratedContent::ApiKeys => "admin API key",
            };
            format!(
                "not rendered: Secret {} ({what}), created by the operator with a random \
                 {content} when it does not exist, never overwritten\n",
                g.name
            )
        })
        .collect())
}

/// Render every FaceKeyDeployment in `input` to a multi-document YAML stream; other kinds are
/// ignored, and an input without any FaceKeyDeployment is an error.
pub fn render(input: &str, opts: &RenderOptions) -> Result<String> {
    let parsed = parse_resources(input)?;
    if parsed.resources.is_empty() {
        return Err(Error::NoResource {
            found: if parsed.skipped.is_empty() {
                "nothing".to_owned()
            } else {
                parsed.skipped.join(", ")
            },
        });
    }
    let mut out = String::new();
    for fkd in parsed.resources {
        let source = format!(
            "{}/{}",
            fkd.metadata.namespace.as_deref().unwrap_or_default(),
            fkd.metadata.name.as_deref().unwrap_or_default()
        );
        for note in generated_notes(&fkd, opts)? {
            out.push_str(&format!("# FaceKeyDeployment {source}: {note}"));
        }
        for obj in render_objects(&fkd, opts)? {
            let yaml = to_yaml(&obj)?;
            out.push_str(&format!(
                "---\n# Source: FaceKeyDeployment {source}\n{yaml}"
            ));
        }
    }
    Ok(out)
}

/// The result of [`render_inject`]: the manifests, and the pods admission would refuse.
#[derive(Debug, Default)]
pub struct Injected {
    /// Every input document other than the FaceKeyDeployments, injected where asked (YAML).
    pub yaml: String,
    /// One message per pod (or pod template) admission would refuse.
    pub refused: Vec<String>,
}

/// Where a document keeps its pod: the document itself (a Pod) or its pod template
/// (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job: `spec.template`; CronJob:
/// `spec.jobTemplate.spec.template`).
fn pod_pointer(doc: &Value) -> Option<&'static str> {
    if doc.get("kind").and_then(Value::as_str) == Some("Pod") {
        return Some("");
    }
    ["/spec/template", "/spec/jobTemplate/spec/template"]
        .into_iter()
        .find(|p| doc.pointer(p).is_some_and(Value::is_object))
}

/// `facekey-operator render --inject`: the documents of `input` (pods or workloads with a pod
/// template) as the sidecar injection webhook would admit them, for the FaceKeyDeployments in
/// `input` or `resources`. A resource without a status is taken as having admitted its
/// `spec.image` (as `render` assumes the scan gate open); a tag is then not injected, as the
/// webhook injects digests only.
pub fn render_inject(
    input: &str,
    resources: &str,
    options: crate::webhook::InjectOptions,
) -> Result<Injected> {
    use crate::webhook::{Decision, inject};
    let mut fkds = parse_resources(input)?.resources;
    fkds.extend(parse_resources(resources)?.resources);
    for f in &mut fkds {
        let status = f.status.get_or_insert_with(Default::default);
        if status.last_known_good_image.is_none() {
            status.last_known_good_image = Some(f.spec.image.clone());
        }
    }
    let mut out = Injected::default();
    for (i, doc) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let mut value = Value::deserialize(doc).map_err(|source| Error::Yaml {
            what: format!("document {}", i + 1),
            source,
        })?;
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
        if value.is_null() || kind == "FaceKeyDeployment" {
            continue;
        }
        let label = format!(
            "{kind} {}",
            value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?")
        );
        let namespace = value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_owned();
        let mut note = String::new();
        if let Some(ptr) = pod_pointer(&value) {
            let pod_value = value.pointer(ptr).cloned().unwrap_or(Value::Null);
            let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod_value.clone())
                .map_err(|source| Error::Serialize {
                    what: format!("the pod of {label}"),
                    source,
                })?;
            let fkd = inject::requested_resource(&pod).and_then(|name| {
                fkds.iter().find(|f| {
                    f.metadata.name.as_deref() == Some(name)
                        && f.metadata.namespace.as_deref() == Some(namespace.as_str())
                })
            });
            match inject::decide(&pod, &namespace, fkd, options) {
                Decision::Inject {
                    patch,
                    image,
                    resource,
                } => {
                    let mut patched = pod_value;
                    let ops: std::result::Result<json_patch::Patch, _> =
                        serde_json::from_value(Value::Array(patch));
                    match ops.map(|ops| json_patch::patch(&mut patched, &ops)) {
                        Ok(Ok(())) => {
                            if let Some(slot) = value.pointer_mut(ptr) {
                                *slot = patched;
                            }
                            note = format!(
                                "# {label}: injected the sidecar of {namespace}/{resource} ({image})\n"
                            );
                        }
                        Ok(Err(e)) => out.refused.push(format!("{label}: patch failed: {e}")),
                        Err(e) => out.refused.push(format!("{label}: patch failed: {e}")),
                    }
                }
                Decision::NotInjected {
                    message, refuse, ..
                } => {
                    if refuse {
                        out.refused.push(format!("{label}: {message}"));
                        note = format!("# {label}: REFUSED by admission: {message}\n");
                    } else {
                        note = format!("# {label}: admitted without the sidecar: {message}\n");
                    }
                }
                Decision::AlreadyInjected => {
                    note = format!("# {label}: already injected, unchanged\n");
                }
                Decision::NotRequested | Decision::OptedOut => {}
            }
        }
        let yaml = to_yaml(&value)?;
        out.yaml.push_str(&format!("---\n{note}{yaml}"));
    }
    Ok(out)
}

/// `value` as YAML that YAML 1.1 readers (kubectl's, PyYAML) read back as the same strings.
fn to_yaml<T: serde::Serialize>(value: &T) -> Result<String, Error> {
    let yaml = serde_yaml::to_string(value).map_err(|source| Error::Yaml {
        what: "output".into(),
        source,
    })?;
    Ok(quote_yaml11_booleans(&yaml))
}

/// Plain scalars YAML 1.1 reads as booleans, which serde_yaml (YAML 1.2) leaves unquoted.
const YAML11_BOOLEANS: [&str; 16] = [
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
    "OFF",
];

/// Single-quote the plain scalar values of `yaml` that a YAML 1.1 reader would take for a
/// boolean: `FACEKEY_REQUIRE_SESSION: on` reaches `kubectl apply` as `true`, and a ConfigMap
/// refuses a boolean. Lines inside block scalars (`|-`, `>`) are text and left alone.
fn quote_yaml11_booleans(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len());
    // Indentation of the line that opened the block scalar being copied, if any.
    let mut block: Option<usize> = None;
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(opened) = block {
            if line.trim().is_empty() || indent > opened {
                out.push_str(line);
                out.push('\n');
                continue;
            }
            block = None;
        }
        // The value after any sequence dashes and a plain `key: `.
        let mut rest = line.trim_start();
        while let Some(item) = rest.strip_prefix("- ") {
            rest = item;
        }
        let value = match rest.split_once(": ") {
            Some((key, value)) if !key.starts_with(['\'', '"']) => value,
            Some(_) => "",
            None => rest,
        };
        let trimmed = value.trim_end();
        if ["|", "|-", "|+", ">", ">-", ">+"].contains(&trimmed) {
            block = Some(indent);
        }
        if YAML11_BOOLEANS.contains(&trimmed) {
            out.push_str(&line[..line.len() - value.len()]);
            out.push_str(&format!("'{trimmed}'"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn yaml11_booleans_are_quoted_outside_block_scalars() {
        let value = serde_json::json!({
            "data": {"A": "on", "B": "off", "C": "yes", "D": "n", "E": "online", "F": "true"},
            "list": ["on", "no", "x"],
            "nested": [{"k": "Off"}],
            "text": "first line\nno\non\n",
        });
        let yaml = to_yaml(&value).unwrap();
        for quoted in [
            "A: 'on'",
            "B: 'off'",
            "C: 'yes'",
            "D: 'n'",
            "- 'on'",
            "- 'no'",
            "- k: 'Off'",
        ] {
            assert!(yaml.contains(quoted), "{quoted} in\n{yaml}");
        }
        assert!(yaml.contains("E: online"), "{yaml}");
        // The block scalar's lines are text, unchanged.
        assert!(yaml.contains("\n  no\n  on\n"), "{yaml}");
        let back: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, value);
    }

    const TWO: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\n\
        apiVersion: facekey.dev/v1alpha1\nkind: FaceKeyDeployment\nmetadata: {name: a}\n\
        spec: {image: 'img:1'}\n---\n\
        apiVersion: facekey.dev/v1alpha1\nkind: FaceKeyDeployment\nmetadata: {name: b, namespace: x}\n\
        spec: {image: 'img:2', scanGate: {enabled: false}}\n";

    fn opts() -> RenderOptions {
        RenderOptions {
            capabilities: Capabilities::none(),
            include_scan_job: true,
            operator_image: "op".into(),
            policy: ClusterPolicy::permissive(),
        }
    }

    #[test]
    fn renders_each_resource_and_skips_other_kinds() {
        let parsed = parse_resources(TWO).unwrap();
        assert_eq!(parsed.skipped, ["Namespace team"]);
        assert_eq!(
            parsed.resources[0].metadata.namespace.as_deref(),
            Some("default")
        );
        let out = render(TWO, &opts()).unwrap();
        // config, NetworkPolicy, Deployment, Service, dashboard, scan Job (one pod: no PDB).
        assert_eq!(
            out.matches("# Source: FaceKeyDeployment default/a").count(),
            6
        );
        // b has the gate disabled: no scan Job.
        assert_eq!(out.matches("# Source: FaceKeyDeployment x/b").count(), 5);
        assert_eq!(out.matches("kind: Job").count(), 1);
        assert_eq!(out.matches("kind: NetworkPolicy").count(), 2);
        // The generated API keys Secret is named, never rendered.
        assert_eq!(out.matches("not rendered: Secret a-api-keys").count(), 1);
        assert!(!out.contains("kind: Secret"), "{out}");
        let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&out)
            .map(|d| serde_json::Value::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 11);
    }

    #[test]
    fn the_policy_floor_refuses_what_the_reconciler_refuses() {
        let strict = RenderOptions {
            policy: ClusterPolicy::default(),
            ..opts()
        };
        let err = render(TWO, &strict).unwrap_err().to_string();
        assert!(
            err.contains("invalid spec") && err.contains("--require-scan"),
            "{err}"
        );
    }

    #[test]
    fn input_without_resources_is_an_error() {
        let err = render(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n",
            &opts(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no FaceKeyDeployment"), "{err}");
    }
}
