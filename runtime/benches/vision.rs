//! Vision pipeline benchmarks on a single-face 640x480 JPEG (`testdata/faces/astronaut_640x480.jpg`):
//! end-to-end `Vision::verify`, each stage's wall time and each model's pure inference time (the
//! floor the end-to-end latency is compared with), all taken from the pipeline's own timings.
//!
//! Before Criterion runs, a summary table prints medians over `FACEKEY_BENCH_RUNS` (default 30)
//! verifications: stages, models, and end-to-end vs floor. `FACEKEY_BENCH_INTRA_THREADS` and
//! `FACEKEY_BENCH_SESSIONS` override the session settings, `FACEKEY_BENCH_PARALLEL_LIVENESS=0`
//! runs liveness sequentially, `FACEKEY_BENCH_MIN_FACE` sets the detector's minimum face size;
//! `FACEKEY_BENCH_CONCURRENCY=1` also measures throughput with two client threads. Needs
//! `scripts/setup-onnxruntime.sh`.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::Criterion;
use facekey_runtime::vision::{FaceAnalysis, Vision, VisionConfig, imgproc, mtcnn};

/// Extracts one duration from an analysis.
type Pick = fn(&FaceAnalysis) -> Duration;

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn config() -> VisionConfig {
    let mut cfg = VisionConfig::default();
    if let Some(n) = env_usize("FACEKEY_BENCH_INTRA_THREADS") {
        cfg.runtime.intra_threads = n;
    }
    if let Some(n) = env_usize("FACEKEY_BENCH_SESSIONS") {
        cfg.runtime.sessions_per_model = n;
    }
    if let Some(n) = env_usize("FACEKEY_BENCH_PARALLEL_LIVENESS") {
        cfg.runtime.parallel_liveness = n != 0;
    }
    if let Some(n) = env_usize("FACEKEY_BENCH_MIN_FACE") {
        cfg.detector.min_face_size = n as f64;
    }
    cfg
}

fn load(cfg: VisionConfig) -> Vision {
    match Vision::load(cfg) {
        Ok(v) => v,
        Err(e) => panic!("cannot load the vision pipeline ({e}); run scripts/setup-onnxruntime.sh"),
    }
}

fn image_bytes() -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/faces/astronaut_640x480.jpg");
    match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) => panic!("reading {}: {e}", p.display()),
    }
}

fn verify(v: &Vision, bytes: &[u8]) -> FaceAnalysis {
    match v.verify(bytes) {
        Ok(a) => a,
        Err(e) => panic!("verify failed: {e}"),
    }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Prints medians of every stage and model over `runs` verifications.
fn summary(v: &Vision, bytes: &[u8], runs: usize) {
    for _ in 0..3 {
        verify(v, bytes);
    }
    let results: Vec<FaceAnalysis> = (0..runs).map(|_| verify(v, bytes)).collect();
    let col = |f: Pick| median(results.iter().map(f).collect());
    let cfg = v.config();
    println!(
        "\nvision pipeline, 640x480 JPEG, {runs} runs, intra_threads={} sessions_per_model={} \
         liveness={:?} parallel_liveness={} min_face={}",
        cfg.runtime.intra_threads,
        cfg.runtime.sessions_per_model,
        cfg.liveness.mode,
        cfg.runtime.parallel_liveness,
        cfg.detector.min_face_size
    );
    println!("{:<22}{:>10}", "stage (median)", "ms");
    let stages: [(&str, Pick); 7] = [
        ("decode", |a| a.timings.decode),
        ("detect", |a| a.timings.detect),
        ("align", |a| a.timings.align),
        ("embed", |a| a.timings.embed),
        ("liveness", |a| a.timings.liveness),
        ("quality", |a| a.timings.quality),
        ("end-to-end", |a| a.timings.total),
    ];
    for (name, f) in stages {
        println!("{name:<22}{:>10.2}", ms(col(f)));
    }
    println!("{:<22}{:>10}", "model (median)", "ms");
    let models: [(&str, Pick); 7] = [
        ("pnet (all levels)", |a| a.inference.pnet),
        ("rnet", |a| a.inference.rnet),
        ("onet", |a| a.inference.onet),
        ("embed", |a| a.inference.embed.unwrap_or_default()),
        ("dtn", |a| a.inference.dtn.unwrap_or_default()),
        ("minifas", |a| a.inference.minifas.unwrap_or_default()),
        ("floor (sum)", |a| a.inference.total()),
    ];
    for (name, f) in models {
        println!("{name:<22}{:>10.2}", ms(col(f)));
    }
    let ratio: Vec<f64> = results
        .iter()
        .map(|a| a.timings.total.as_secs_f64() / a.inference.total().as_secs_f64())
        .collect();
    let mut sorted = ratio.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "end-to-end / floor: median {:.3} (min {:.3}, max {:.3})\n",
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1]
    );
}

/// Requests per second with `threads` client threads sharing one pipeline.
fn throughput(v: &Vision, bytes: &[u8], threads: usize, per_thread: usize) -> f64 {
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..per_thread {
                    verify(v, bytes);
                }
            });
        }
    });
    (threads * per_thread) as f64 / started.elapsed().as_secs_f64()
}

fn benches(c: &mut Criterion, v: &Vision, bytes: &[u8]) {
    let mut group = c.benchmark_group("vision");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(6));
    group.bench_function("verify_end_to_end", |b| b.iter(|| verify(v, bytes)));
    let picks: [(&str, Pick); 13] = [
        ("stage/decode", |a| a.timings.decode),
        ("stage/detect", |a| a.timings.detect),
        ("stage/align", |a| a.timings.align),
        ("stage/embed", |a| a.timings.embed),
        ("stage/liveness", |a| a.timings.liveness),
        ("stage/quality", |a| a.timings.quality),
        ("model/pnet", |a| a.inference.pnet),
        ("model/rnet", |a| a.inference.rnet),
        ("model/onet", |a| a.inference.onet),
        ("model/embed", |a| a.inference.embed.unwrap_or_default()),
        ("model/dtn", |a| a.inference.dtn.unwrap_or_default()),
        ("model/minifas", |a| a.inference.minifas.unwrap_or_default()),
        ("model/floor", |a| a.inference.total()),
    ];
    for (name, pick) in picks {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| pick(&verify(v, bytes))).sum())
        });
    }
    group.finish();

    // Pre-processing without inference: the detector's pyramid (TensorFlow area resizes) and
    // 64 RNet crops of the decoded image.
    let img = match v.decode(bytes) {
        Ok(i) => i,
        Err(e) => panic!("decode: {e}"),
    };
    let (w, h) = img.dimensions();
    let mut prep = c.benchmark_group("vision/prep");
    prep.sample_size(20);
    prep.bench_function("pyramid_resize", |b| {
        let mut buf = Vec::new();
        b.iter(|| {
            for s in mtcnn::pyramid_scales(w, h, 20.0, 0.709) {
                let (sw, sh) = mtcnn::scaled_size(w, h, s);
                imgproc::resize_area(&img, sw, sh, 1.0 / 128.0, -127.5 / 128.0, &mut buf);
            }
        })
    });
    prep.bench_function("rnet_crops_64", |b| {
        let mut out = vec![0.0f32; 24 * 24 * 3];
        b.iter(|| {
            for i in 0..64u32 {
                let x = (i * 7 % 500) as f32 / w as f32;
                let y = (i * 5 % 400) as f32 / h as f32;
                imgproc::crop_and_resize_tf(
                    &img,
                    [y, x, y + 0.2, x + 0.15],
                    24,
                    1.0 / 128.0,
                    -127.5 / 128.0,
                    &mut out,
                );
            }
        })
    });
    prep.finish();
}

fn main() {
    let bytes = image_bytes();
    let cfg = config();
    let started = Instant::now();
    let v = load(cfg.clone());
    println!(
        "Vision::load (ONNX Runtime, checksums, sessions, warm-up): {:.0} ms",
        ms(started.elapsed())
    );
    summary(&v, &bytes, env_usize("FACEKEY_BENCH_RUNS").unwrap_or(30));
    if std::env::var("FACEKEY_BENCH_CONCURRENCY").is_ok_and(|s| s == "1") {
        for (intra, sessions) in [(0, 1), (1, 1), (1, 2), (2, 1)] {
            let mut c = cfg.clone();
            c.runtime.intra_threads = intra;
            c.runtime.sessions_per_model = sessions;
            let pv = load(c);
            verify(&pv, &bytes);
            let one = throughput(&pv, &bytes, 1, 10);
            let two = throughput(&pv, &bytes, 2, 10);
            println!(
                "intra_threads={intra} sessions={sessions}: 1 client {one:.2} req/s, 2 clients {two:.2} req/s"
            );
        }
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &v, &bytes);
    c.final_summary();
}
