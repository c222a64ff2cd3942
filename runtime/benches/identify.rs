//! 1:N identification search: time per probe of the exact scan over the template index at 10k,
//! 100k and 1M templates (synthetic unit vectors of the embedding's 128 dimensions, one template
//! per subject), on one core. Goal (issue 8): at most 5 ms per probe at 100k.
//! `cargo bench -p facekey-runtime --bench identify`; `IDENTIFY_SIZES=10000,100000` to choose.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use facekey_runtime::store::index::TemplateIndex;
use facekey_runtime::store::{SubjectRecord, Template};
use facekey_runtime::vision::{EMBEDDING_DIM, EMBEDDING_MODEL};

/// Deterministic pseudo-random unit vectors (xorshift64* + Box-Muller-free sums of uniforms).
fn unit_vectors(seed: u64, n: usize) -> Vec<Vec<f32>> {
    let mut s = seed | 1;
    let mut next = || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (0..n)
        .map(|_| {
            let v: Vec<f32> = (0..EMBEDDING_DIM)
                .map(|_| next() + next() + next())
                .collect();
            let norm = v
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
                .max(f32::MIN_POSITIVE);
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect()
}

fn index_of(n: usize) -> TemplateIndex {
    let index = TemplateIndex::new(EMBEDDING_MODEL, EMBEDDING_DIM);
    let records = unit_vectors(42, n)
        .into_iter()
        .enumerate()
        .map(|(i, embedding)| SubjectRecord {
            id: format!("s{i}"),
            name: format!("subject {i}"),
            created_at: "2026-12-02T00:00:00Z".into(),
            created_by: None,
            templates: vec![Template {
                id: format!("t{i}"),
                subject_id: format!("s{i}"),
                model: EMBEDDING_MODEL.into(),
                embedding,
                quality: None,
                created_at: "2026-12-02T00:00:00Z".into(),
                enrolled_by: None,
            }],
        })
        .collect();
    index.replace_all(records);
    index
}

fn sizes() -> Vec<usize> {
    std::env::var("IDENTIFY_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000])
}

fn identify(c: &mut Criterion) {
    let probes = unit_vectors(7, 16);
    let mut group = c.benchmark_group("identify/exact_search_top5");
    for n in sizes() {
        let index = index_of(n);
        group.throughput(Throughput::Elements(n as u64));
        if n >= 1_000_000 {
            group.sample_size(10);
        }
        let mut i = 0;
        group.bench_with_input(BenchmarkId::from_parameter(n), &index, |b, index| {
            b.iter(|| {
                i = (i + 1) % probes.len();
                index.nearest(black_box(&probes[i]), 5)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, identify);
criterion_main!(benches);
