//! The ONNX model files the vision pipeline uses: their names, pinned checksums, where the
//! runtime finds them by default, and loading them into session pools with a checksum check.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::onnx::{OrtRuntime, SessionError, SessionOptions, SessionPool};

/// Environment variable naming the models directory (like `--models-dir`).
pub const MODELS_DIR_ENV: &str = "FACEKEY_MODELS_DIR";

/// One model file with its pinned SHA-256 (the same list as `runtime/models/SHA256SUMS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// Short name used in errors, timings and metrics.
    pub name: &'static str,
    /// File name inside the models directory.
    pub file: &'static str,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: &'static str,
}

/// MTCNN proposal network.
pub const PNET: ModelSpec = ModelSpec {
    name: "pnet",
    file: "mtcnn_pnet.onnx",
    sha256: "4e55ab8fc22125f6373336bbf3c6330b8cec7e19c4254b5f5b86898a89193933",
};
/// MTCNN refinement network.
pub const RNET: ModelSpec = ModelSpec {
    name: "rnet",
    file: "mtcnn_rnet.onnx",
    sha256: "1b1c8a0f54e63d1424883dc8e66dd30989db044f9a0ae9463b4c0b1dc4362478",
};
/// MTCNN output network (boxes and 5 landmarks).
pub const ONET: ModelSpec = ModelSpec {
    name: "onet",
    file: "mtcnn_onet.onnx",
    sha256: "4cd376bd401569cdb4de25e997689ff977d14d5df3293feb571e640631fba5f0",
};
/// dlib ResNet 128-d face embedding.
pub const EMBEDDER: ModelSpec = ModelSpec {
    name: "embed",
    file: "dlib_face_recognition_resnet_v1_128d.onnx",
    sha256: "1c6353fd9613ab73a5a5183b58d71f576e0e54150813e6d2a3aad4559699383d",
};
/// Deep Tree Network presentation-attack detector.
pub const DTN: ModelSpec = ModelSpec {
    name: "dtn",
    file: "expo_FaceAntiSpoofing.onnx",
    sha256: "394b3ace7bc5611fe66c43d98e389219bc655910b46a51e04ed50a0e1b10c56e",
};
/// MiniFASNet-like passive liveness classifier.
pub const MINIFAS: ModelSpec = ModelSpec {
    name: "minifas",
    file: "fr_liveness.onnx",
    sha256: "afa783b7e902fdfcf323a7240cac2a1c580c25314ea4161129dc1b0d100dc32d",
};

/// 68-point facial landmarks (challenge sessions: head pose, mouth, eye crops).
pub const LANDMARK: ModelSpec = ModelSpec {
    name: "landmark",
    file: "fr_landmark.onnx",
    sha256: "f10b0ba1d2a8a099adefede1ebf3733e44fe370715e7303dbeb7f59c02142258",
};
/// Eye open/closed classifier (challenge sessions: blinks).
pub const EYE: ModelSpec = ModelSpec {
    name: "eye",
    file: "fr_eye.onnx",
    sha256: "1afcea006abc1ccac3c517022abde0aa092bed74ff3c9fe6878483ef9e6e38de",
};

/// A representative input shape of each model, for warm-up runs.
pub fn warm_up_shape(spec: ModelSpec) -> [usize; 4] {
    match spec.name {
        "pnet" => [1, 48, 64, 3],
        "rnet" => [1, 24, 24, 3],
        "onet" => [1, 48, 48, 3],
        "embed" => [1, 150, 150, 3],
        "dtn" => [1, 256, 256, 3],
        "landmark" => [1, 1, 64, 64],
        "eye" => [1, 1, 24, 24],
        _ => [1, 3, 128, 128],
    }
}

/// Every model the pipeline can use.
pub const ALL_MODELS: [ModelSpec; 8] = [PNET, RNET, ONET, EMBEDDER, DTN, MINIFAS, LANDMARK, EYE];

/// Failure to find or load a model file; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No models directory was found.
    #[error(
        "models directory not found (looked for {} in: {}); set --models-dir or {MODELS_DIR_ENV}",
        PNET.file,
        tried.join(", ")
    )]
    DirNotFound {
        /// Directories that were tried.
        tried: Vec<String>,
    },
    /// The model file could not be read.
    #[error("cannot read model file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The model file's checksum differs from the pinned one (corrupt or replaced).
    #[error("model file {path} has sha256 {actual}, expected {expected} (corrupt or replaced)")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The expected checksum.
        expected: String,
        /// The file's checksum.
        actual: String,
    },
    /// A replacement model directory's `SHA256SUMS` is unreadable or lacks the file.
    #[error("{sums}: {reason}")]
    Sums {
        /// The SHA256SUMS file.
        sums: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// ONNX Runtime could not build a session from the file.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// Resolves the models directory: `explicit` (`--models-dir`), then `FACEKEY_MODELS_DIR`, then the
/// first of [`models_search_dirs`] that holds the MTCNN PNet file.
pub fn resolve_models_dir(explicit: Option<&Path>) -> Result<PathBuf, ModelError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(v) = std::env::var_os(MODELS_DIR_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(v));
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let cwd = std::env::current_dir().ok();
    let dirs = models_search_dirs(exe_dir.as_deref(), cwd.as_deref());
    dirs.iter()
        .find(|d| d.join(PNET.file).is_file())
        .cloned()
        .ok_or_else(|| ModelError::DirNotFound {
            tried: dirs.iter().map(|d| d.display().to_string()).collect(),
        })
}

/// Candidate model directories: `models/` next to the executable, then `runtime/models/` and
/// `models/` under every ancestor of the executable's and the current directory, then this
/// crate's own `models/` (compile-time path, for `cargo run`/`test`/`bench`).
pub fn models_search_dirs(exe_dir: Option<&Path>, cwd: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut push = |p: PathBuf| {
        if !dirs.contains(&p) {
            dirs.push(p);
        }
    };
    if let Some(e) = exe_dir {
        push(e.join("models"));
    }
    for start in [exe_dir, cwd].into_iter().flatten() {
        for anc in start.ancestors() {
            push(anc.join("runtime").join("models"));
            push(anc.join("models"));
        }
    }
    push(Path::new(env!("CARGO_MANIFEST_DIR")).join("models"));
    dirs
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads `spec` from `dir`, checks its checksum when `verify`, builds its session pool and, when
/// `warm_up`, runs one inference per session.
pub fn load_model(
    rt: &OrtRuntime,
    dir: &Path,
    spec: ModelSpec,
    expected_sha256: Option<&str>,
    warm_up: bool,
    options: SessionOptions,
) -> Result<SessionPool, ModelError> {
    let path = dir.join(spec.file);
    let bytes = std::fs::read(&path).map_err(|source| ModelError::Read {
        path: path.clone(),
        source,
    })?;
    if let Some(expected) = expected_sha256 {
        let actual = sha256_hex(&bytes);
        if actual != expected {
            return Err(ModelError::Checksum {
                path,
                expected: expected.to_string(),
                actual,
            });
        }
    }
    let pool = SessionPool::from_memory(rt, spec.name, &path, &bytes, options)?;
    if warm_up {
        pool.warm_up(&warm_up_shape(spec))?;
    }
    Ok(pool)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn pinned_checksums_match_sha256sums_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
        for spec in ALL_MODELS {
            let line = sums
                .lines()
                .find(|l| l.ends_with(spec.file))
                .unwrap_or_else(|| panic!("{} missing from SHA256SUMS", spec.file));
            assert!(line.starts_with(spec.sha256), "{line}");
        }
    }

    #[test]
    fn committed_model_files_match_their_checksums() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        for spec in ALL_MODELS {
            let bytes = std::fs::read(dir.join(spec.file)).unwrap();
            assert_eq!(sha256_hex(&bytes), spec.sha256, "{}", spec.file);
        }
    }

    #[test]
    fn search_dirs_include_repo_layouts() {
        let dirs = models_search_dirs(
            Some(Path::new("/srv/app")),
            Some(Path::new("/home/u/facekey/runtime/src")),
        );
        assert_eq!(dirs[0], Path::new("/srv/app/models"));
        assert!(dirs.contains(&PathBuf::from("/home/u/facekey/runtime/models")));
        assert!(dirs.contains(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models")));
    }

    #[test]
    fn default_resolution_finds_committed_models() {
        let dir = resolve_models_dir(None).unwrap();
        assert!(dir.join(PNET.file).is_file());
    }

    #[test]
    fn every_model_has_a_warm_up_shape() {
        for spec in ALL_MODELS {
            let s = warm_up_shape(spec);
            assert!(s.iter().all(|&d| d > 0), "{}", spec.name);
        }
        assert_eq!(warm_up_shape(MINIFAS), [1, 3, 128, 128]);
        assert_eq!(warm_up_shape(DTN), [1, 256, 256, 3]);
    }

    #[test]
    fn explicit_dir_wins() {
        assert_eq!(
            resolve_models_dir(Some(Path::new("/elsewhere"))).unwrap(),
            PathBuf::from("/elsewhere")
        );
    }
}

/// The checksum `SHA256SUMS` in `dir` lists for `file` (`sha256sum` format), `None` when the
/// directory has no `SHA256SUMS`; an error when the file exists but does not list `file`.
pub fn sums_file_checksum(dir: &Path, file: &str) -> Result<Option<String>, ModelError> {
    let sums = dir.join("SHA256SUMS");
    let text = match std::fs::read_to_string(&sums) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ModelError::Sums {
                sums,
                reason: e.to_string(),
            });
        }
    };
    parse_sums(&text, file)
        .map(|h| Some(h.to_ascii_lowercase()))
        .ok_or_else(|| ModelError::Sums {
            sums,
            reason: format!("no sha256 line for {file}"),
        })
}

/// The hex digest `sha256sum`-format text gives for `file` (`<hex>  <file>` or `<hex> *<file>`).
fn parse_sums<'a>(text: &'a str, file: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (hash, name) = line.trim().split_once(char::is_whitespace)?;
        let name = name.trim_start().trim_start_matches('*');
        (name == file && hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()))
            .then_some(hash)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod sums_tests {
    use super::*;

    #[test]
    fn sums_lines_are_parsed_strictly() {
        let h = "a".repeat(64);
        let other = "b".repeat(64);
        let text = format!("{h}  fr_liveness.onnx\n{other} *other.onnx\n");
        assert_eq!(parse_sums(&text, "fr_liveness.onnx"), Some(h.as_str()));
        assert_eq!(parse_sums(&text, "other.onnx"), Some(other.as_str()));
        assert_eq!(parse_sums(&text, "missing.onnx"), None);
        assert_eq!(
            parse_sums("abc  fr_liveness.onnx", "fr_liveness.onnx"),
            None
        );
    }

    #[test]
    fn sums_file_absent_present_and_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(sums_file_checksum(dir.path(), "x.onnx").unwrap(), None);
        let h = "C".repeat(64);
        std::fs::write(dir.path().join("SHA256SUMS"), format!("{h}  x.onnx\n")).unwrap();
        assert_eq!(
            sums_file_checksum(dir.path(), "x.onnx").unwrap(),
            Some("c".repeat(64))
        );
        let err = sums_file_checksum(dir.path(), "y.onnx")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SHA256SUMS") && err.contains("y.onnx"),
            "{err}"
        );
    }
}
