//! Per-model cost of the second opinions on the verify path, printed (no assertions): the
//! runtime's `Vision::verify` on `astronaut_640x480.jpg` (decode, detect, align, dlib embed,
//! passive liveness, quality) and, on the same face, faceres-deep (align + embed),
//! MobileFaceNet when its file is in `--second-models-dir`-style `FACEKEY_SECOND_MODELS_DIR`
//! (default `runtime/models`), and human_liveness, each with one intra-op thread like the
//! server's default. `cargo bench -p facekey-eval --bench second_opinion`; `ROUNDS` (default 40).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use facekey_runtime::vision::onnx::{SessionOptions, ort_runtime};
use facekey_runtime::vision::second_opinion::{
    FACERES, HumanLiveness, MOBILEFACENET, SecondEmbedder, SecondModel,
};
use facekey_runtime::vision::{Vision, VisionConfig};

fn p50(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

fn time<T>(rounds: usize, mut f: impl FnMut() -> T) -> f64 {
    f();
    p50((0..rounds)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect())
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir: PathBuf = std::env::var_os("FACEKEY_SECOND_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../models"));
    let bytes = std::fs::read(root.join("../testdata/faces/astronaut_640x480.jpg")).unwrap();
    let vision = Vision::load(VisionConfig::default()).unwrap();
    let threads = vision.config().runtime.intra_threads;
    let options = SessionOptions {
        intra_threads: threads,
        sessions: 1,
    };
    let rt = ort_runtime(None).unwrap();
    let a = vision.verify(&bytes).unwrap();
    let img = vision.decode(&bytes).unwrap();
    let verify = time(rounds, || vision.verify(&bytes).unwrap());
    println!("rounds {rounds}, intra-op threads {threads} (0 = ONNX Runtime's choice)");
    println!("verify (decode..quality, dlib + fr_liveness)  p50 {verify:7.2} ms");
    println!(
        "  of which dlib align + embed (last run)       {:7.2} ms",
        (a.timings.align + a.timings.embed).as_secs_f64() * 1000.0
    );
    let mut added = 0.0;
    for (model, spec) in [
        (SecondModel::Faceres, FACERES),
        (SecondModel::Mobilefacenet, MOBILEFACENET),
    ] {
        if !dir.join(spec.file).is_file() {
            println!("{}: not in {}, skipped", spec.file, dir.display());
            continue;
        }
        let e = SecondEmbedder::load(rt, &dir, model, true, options).unwrap();
        let t = time(rounds, || e.embed(&img, &a.face.landmarks).unwrap());
        println!(
            "{:<14} align + embed                p50 {t:7.2} ms",
            spec.name
        );
        if model == SecondModel::Faceres {
            added += t;
        }
    }
    let h = HumanLiveness::load(rt, &dir, true, options).unwrap();
    let t = time(rounds, || h.check(&img, &a.face.bbox).unwrap());
    println!("human_liveness crop + infer                  p50 {t:7.2} ms");
    added += t;
    println!(
        "verify + faceres-deep + human_liveness, run in sequence ≈ {:.2} ms ({:.2}x today's)",
        verify + added,
        (verify + added) / verify
    );
}
