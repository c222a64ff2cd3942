//! Every fuzz target's inputs replayed as ordinary tests, without libFuzzer: the committed seeds
//! (`fuzz/seeds/<target>/`) and every input a fuzzing run found to crash or hang
//! (`fuzz/regressions/<target>/`, added when the bug is fixed). The properties are the fuzz
//! targets' own; the request targets go through a real server over HTTP here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::{Running, error_code, send_json};
use facekey_runtime::config::Config;
use facekey_runtime::decision::Decision;
use facekey_runtime::fusion::FusionMlp;
use facekey_runtime::vision::decode::{DecodeLimits, decode_image};

/// The boundary the multipart inputs are written with (fuzz/src/lib.rs).
const BOUNDARY: &str = "facekeyfuzz";

/// Every input of `target`: seeds and regressions, by file name.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let name = format!("{dir}/{target}/{}", e.file_name().to_string_lossy());
            out.push((name, std::fs::read(e.path()).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn decode_image_inputs() {
    let inputs = inputs("decode_image");
    assert!(!inputs.is_empty());
    let limits = DecodeLimits::default();
    for (name, data) in inputs {
        if let Ok(img) = decode_image(&data, &limits) {
            assert!(
                u64::from(img.width()) * u64::from(img.height()) <= limits.max_pixels,
                "{name}"
            );
        }
    }
}

#[test]
fn base64_image_inputs() {
    let inputs = inputs("base64_image");
    assert!(!inputs.is_empty());
    for (name, data) in inputs {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        if let Ok(bytes) = facekey_runtime::api::image_input::decode_base64_image(text, 1 << 20) {
            assert!(bytes.len() <= 1 << 20, "{name}");
            let _ = decode_image(&bytes, &DecodeLimits::default());
        }
    }
}

#[test]
fn weights_file_inputs() {
    let inputs = inputs("weights_file");
    assert!(!inputs.is_empty());
    for (name, data) in inputs {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        let Ok(mlp) = FusionMlp::from_json_str(text, &name) else {
            continue;
        };
        let p = mlp.forward(&[1.0, 0.5, -1.0]).probability;
        assert!(p.is_nan() || (0.0..=1.0).contains(&p), "{name}: {p}");
        if p.is_nan() {
            assert_eq!(Decision::at_least(p, 0.5), Decision::Reject, "{name}");
        }
    }
}

#[test]
fn crd_spec_inputs() {
    let inputs = inputs("crd_spec");
    assert!(!inputs.is_empty());
    let mut valid = 0;
    for (_, data) in inputs {
        if let Ok(name) = std::str::from_utf8(&data) {
            let _ = facekey_operator::validate::validate_name(name);
        }
        if let Ok(spec) = serde_json::from_slice::<facekey_crds::FaceKeyDeploymentSpec>(&data) {
            valid += usize::from(facekey_operator::validate::validate(&spec).is_ok());
        }
    }
    assert!(valid > 0, "the sample specs validate");
}

/// The fuzz targets' property of an answer: never a 500, every error JSON with a code.
fn check_answer(name: &str, status: reqwest::StatusCode, v: &serde_json::Value) {
    assert_ne!(status.as_u16(), 500, "{name}: {v}");
    if status.as_u16() >= 400 {
        assert_ne!(error_code(v), "<none>", "{name}: {status} {v}");
    }
}

#[tokio::test]
async fn request_inputs_through_a_real_server() {
    let s = Running::start(Config::for_tests()).await;
    const MULTIPART: &[&str] = &[
        "/v1/verify",
        "/v1/identify",
        "/v1/liveness",
        "/v1/subjects/x/faces",
        "/v1/liveness/sessions/x/frames",
    ];
    const JSON: &[(&str, &str)] = &[
        ("POST", "/v1/score"),
        ("POST", "/v1/subjects"),
        ("PATCH", "/v1/subjects/x"),
        ("POST", "/v1/verify"),
        ("POST", "/v1/identify"),
        ("POST", "/v1/liveness"),
        ("POST", "/v1/liveness/sessions"),
        ("POST", "/v1/liveness/sessions/x/frames"),
    ];
    let multipart = inputs("multipart_request");
    assert!(!multipart.is_empty());
    for (name, data) in multipart {
        let Some((&pick, body)) = data.split_first() else {
            continue;
        };
        let path = MULTIPART[usize::from(pick) % MULTIPART.len()];
        let (status, v) = send_json(
            s.client
                .post(s.url(path))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .body(body.to_vec()),
        )
        .await;
        check_answer(&name, status, &v);
        seed_reaches_its_handler(&name, path, status, &v);
    }
    let json = inputs("json_request");
    assert!(!json.is_empty());
    for (name, data) in json {
        let Some((&pick, body)) = data.split_first() else {
            continue;
        };
        let (method, path) = JSON[usize::from(pick) % JSON.len()];
        let (status, v) = send_json(
            s.client
                .request(method.parse().unwrap(), s.url(path))
                .header("content-type", "application/json")
                .body(body.to_vec()),
        )
        .await;
        check_answer(&name, status, &v);
        seed_reaches_its_handler(&name, path, status, &v);
    }
    s.stop().await;
}

/// The frames seeds are well-formed: they pass the frames extractor and reach the handler,
/// which does not know the session `x` (so fuzzing starts from inputs the parser accepts).
fn seed_reaches_its_handler(
    name: &str,
    path: &str,
    status: reqwest::StatusCode,
    v: &serde_json::Value,
) {
    if name.starts_with("seeds/") && path.ends_with("/frames") {
        assert_eq!(
            (status.as_u16(), error_code(v)),
            (404, "session_not_found"),
            "{name}: {v}"
        );
    }
}
