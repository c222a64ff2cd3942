//! Criterion benchmarks of the fusion MLP forward pass: one vector with every layer kept (what
//! `/v1/score` with `include_layers` does), and batches through the matrix form.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use facekey_runtime::fusion::FusionMlp;
use ndarray::Array2;
use std::hint::black_box;

fn forward(c: &mut Criterion) {
    let Ok(mlp) = FusionMlp::reference() else {
        panic!("reference weights must load");
    };
    c.bench_function("fusion/forward_single", |b| {
        b.iter(|| mlp.forward(black_box(&[1.0, 0.5, -1.0])))
    });
    let mut group = c.benchmark_group("fusion/batch");
    for n in [1usize, 64, 1024] {
        let xs = Array2::from_shape_fn((n, 3), |(i, j)| ((i * 3 + j) % 7) as f64 / 7.0 - 0.3);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &xs, |b, xs| {
            b.iter(|| mlp.probabilities(black_box(xs)))
        });
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
