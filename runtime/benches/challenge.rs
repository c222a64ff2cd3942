//! Criterion benchmarks of judging a liveness session after a batch of 8 frames: the whole
//! session judged again (`evaluate`) against only the pairs the batch adds (`evaluate_more`),
//! at a typical session length (40 frames) and at the frame bound (160). Frames are synthetic
//! (a face that performs nothing, so every action is searched over the whole session: the
//! in-progress worst case) with distinct embeddings and fingerprints. Also the replay check of
//! a passed session against its subject's record of accepted sessions, and remembering an
//! accepted session with and without the embedded mode's journal.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use facekey_runtime::challenge::{
    Action, ChallengePolicy, EyeState, FaceObservation, Fingerprint, FrameObservation, Landmarks68,
    PairsJudged, evaluate, evaluate_more,
};
use facekey_runtime::vision::detect::{BoundingBox, Point};
use facekey_runtime::vision::embed::Embedding;
use std::hint::black_box;

/// Frame `i`: landmarks on an ellipse with a little per-frame jitter, an embedding and a
/// fingerprint of its own.
fn frame(i: usize) -> FrameObservation {
    let jitter = |k: usize| ((i * 31 + k * 17) % 13) as f32 * 0.05;
    let points = (0..68)
        .map(|k| {
            let a = k as f32 / 68.0 * std::f32::consts::TAU;
            Point {
                x: 200.0 + 50.0 * a.cos() + jitter(k),
                y: 200.0 + 60.0 * a.sin() + jitter(k + 1),
            }
        })
        .collect();
    let Ok(landmarks) = Landmarks68::new(points) else {
        panic!("68 finite points");
    };
    let values = (0..128)
        .map(|k| ((k as f32 + i as f32 * 0.01) * 0.37).sin() * 0.09)
        .collect();
    let Ok(embedding) = Embedding::new(values) else {
        panic!("128 finite values");
    };
    let Ok(fingerprint) = Fingerprint::try_from(
        (0..256)
            .map(|k| ((k * 7 + i * 13) % 251) as u8)
            .collect::<Vec<_>>(),
    ) else {
        panic!("256 bytes");
    };
    FrameObservation {
        timestamp_ms: 100 * i as u64,
        received_ms: None,
        face: Some(FaceObservation {
            bbox: BoundingBox {
                x: 150.0,
                y: 140.0,
                width: 100.0,
                height: 120.0,
            },
            landmarks,
            eyes: Some(EyeState {
                left_open: 0.9,
                right_open: 0.9,
            }),
            embedding: Some(embedding),
            liveness: Some(0.8),
            quality: Some(0.8),
        }),
        unusable: None,
        fingerprint: Some(fingerprint),
    }
}

fn judge_after_batch(c: &mut Criterion) {
    let challenge = [Action::Blink, Action::TurnLeft, Action::LookUp];
    let policy = ChallengePolicy::default();
    let mut group = c.benchmark_group("challenge/judge_after_batch");
    for n in [40usize, 160] {
        let frames: Vec<FrameObservation> = (0..n).map(frame).collect();
        let before = evaluate(&challenge, &frames[..n - 8], &policy);
        let judged = PairsJudged::by(&before, n - 8);
        group.bench_with_input(BenchmarkId::new("whole_session", n), &frames, |b, f| {
            b.iter(|| evaluate(&challenge, black_box(f), &policy))
        });
        group.bench_with_input(BenchmarkId::new("new_pairs_only", n), &frames, |b, f| {
            b.iter(|| evaluate_more(&challenge, black_box(f), &policy, judged))
        });
    }
    group.finish();
}

/// The replay check of a passed session (`challenge::replay::nearest_replay`) at its bound: 64
/// frames against a subject's record full (8 accepted sessions of 64 frames), none repeated (the
/// honest case, which compares every pair), and a typical session (30 frames against 2 of 30).
fn replay_check(c: &mut Criterion) {
    use facekey_runtime::challenge::replay::{AcceptedSession, nearest_replay};
    // Cells from a hash of the frame and the cell: unrelated frames, as two sessions' are.
    let print = |i: usize| {
        let cells: Vec<u8> = (0..256u64)
            .map(|k| {
                let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (k << 17);
                x ^= x >> 29;
                x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
                (x >> 56) as u8
            })
            .collect();
        Fingerprint::try_from(cells).unwrap_or_else(|_| panic!("256 cells"))
    };
    let mut group = c.benchmark_group("challenge/replay_check");
    for (frames, sessions, theirs) in [(64usize, 8usize, 64usize), (30, 2, 30)] {
        let mine: Vec<Fingerprint> = (0..frames).map(|i| print(10_000 + i)).collect();
        let earlier: Vec<AcceptedSession> = (0..sessions)
            .map(|s| AcceptedSession {
                session: format!("s{s}"),
                prints: (0..theirs).map(|i| print(1_000 * (s + 1) + i)).collect(),
            })
            .collect();
        assert!(nearest_replay(&mine, &earlier).is_none(), "no replay here");
        let id = format!("{frames}_vs_{sessions}x{theirs}");
        group.bench_with_input(BenchmarkId::new("no_replay", id), &earlier, |b, e| {
            b.iter(|| nearest_replay(black_box(&mine), e))
        });
    }
    group.finish();
}

/// Remembering an accepted session (`Registry::remember_verified`): in memory alone (the
/// PostgreSQL store's replicas and tests), and in the embedded mode, where each one is also
/// appended and synced to the replay journal under the record's lock, so accepted sessions are
/// written one sync at a time. 64 frames, a new subject each time (nothing to compare with: the
/// write alone); the journal's periodic rewrite is in the average. The journal is written under
/// the target directory, on the disk the build uses (a `/tmp` in memory would hide the sync).
fn replay_remember(c: &mut Criterion) {
    use facekey_runtime::challenge::replay::Compared;
    use facekey_runtime::challenge::replay_file::ReplayJournal;
    use facekey_runtime::challenge::session::{Registry, SessionLimits};
    use facekey_runtime::store::cipher::TemplateKeys;
    use std::time::{Duration, Instant};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    let prints: Vec<Fingerprint> = (0..64)
        .map(|i| {
            frame(i)
                .fingerprint
                .unwrap_or_else(|| panic!("frame {i} has a fingerprint"))
        })
        .collect();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap_or_else(|e| panic!("journal directory: {e}"));
    let keys = TemplateKeys::parse(&format!("bench:{}", "ab".repeat(32)), dir.path())
        .unwrap_or_else(|e| panic!("template key: {e}"));
    let limits = SessionLimits::default();
    let failed = prometheus::IntCounter::new("failed", "bench").unwrap_or_else(|e| panic!("{e}"));
    let (journal, record) =
        ReplayJournal::open(dir.path(), keys, Duration::from_secs(86_400), failed)
            .unwrap_or_else(|e| panic!("replay journal: {e}"));
    let registries = [
        ("memory", Registry::new(limits, ChallengePolicy::default())),
        (
            "journal",
            Registry::with_journal(limits, ChallengePolicy::default(), journal, record),
        ),
    ];
    let mut group = c.benchmark_group("challenge/replay_remember");
    group.measurement_time(Duration::from_secs(10));
    for (name, registry) in &registries {
        let mut n = 0u64;
        group.bench_function(*name, |b| {
            b.iter(|| {
                n += 1;
                let checked = vec![Compared {
                    subject: format!("subject-{n}"),
                    sessions: Vec::new(),
                }];
                let found = runtime.block_on(registry.remember_verified(
                    checked,
                    format!("session-{n}"),
                    prints.clone(),
                    Instant::now(),
                ));
                assert!(matches!(found, Ok(None)), "remembered");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, judge_after_batch, replay_check, replay_remember);
criterion_main!(benches);
