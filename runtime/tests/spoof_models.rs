//! Replacement liveness models from another directory (what the operator mounts for
//! `models.spoof`): checked against that directory's SHA256SUMS, refused when it disagrees, and a
//! model URI is refused at start-up rather than downloaded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use facekey_runtime::config::{Config, LivenessModel};
use facekey_runtime::engine::Engine;
use facekey_runtime::vision::models::sha256_hex;

fn bundled(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(file)
}

fn config_with(dir: &Path) -> Config {
    let mut c = Config::for_tests();
    c.liveness = LivenessModel::Minifas;
    c.spoof_model_dir = Some(dir.to_path_buf());
    c
}

#[test]
fn replacement_liveness_model_is_loaded_and_checked_against_its_sums() {
    let dir = tempfile::tempdir().unwrap();
    let model = std::fs::read(bundled("fr_liveness.onnx")).unwrap();
    std::fs::write(dir.path().join("fr_liveness.onnx"), &model).unwrap();

    // Without SHA256SUMS the model loads (with a warning).
    Engine::load(&config_with(dir.path())).unwrap();

    // With a matching SHA256SUMS it loads.
    let sums = format!("{}  fr_liveness.onnx\n", sha256_hex(&model));
    std::fs::write(dir.path().join("SHA256SUMS"), sums).unwrap();
    Engine::load(&config_with(dir.path())).unwrap();

    // A sums file that disagrees stops start-up naming the file.
    let wrong = format!("{}  fr_liveness.onnx\n", "0".repeat(64));
    std::fs::write(dir.path().join("SHA256SUMS"), wrong).unwrap();
    let err = Engine::load(&config_with(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fr_liveness.onnx") && err.contains("sha256"),
        "{err}"
    );

    // A sums file without the model's line is refused too.
    std::fs::write(dir.path().join("SHA256SUMS"), "").unwrap();
    let err = Engine::load(&config_with(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("SHA256SUMS") && err.contains("fr_liveness.onnx"),
        "{err}"
    );
}

#[test]
fn missing_replacement_model_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = Engine::load(&config_with(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("fr_liveness.onnx"), "{err}");
}

#[test]
fn a_model_uri_is_refused_not_downloaded() {
    let mut c = Config::for_tests();
    c.spoof_model_uri = Some("https://example.com/model.onnx".into());
    let err = Engine::load(&c).unwrap_err().to_string();
    assert!(
        err.contains("never downloads") && err.contains("FACEKEY_SPOOF_MODEL_DIR"),
        "{err}"
    );
}
