//! Admission latency of the sidecar injection webhook: 1,000 AdmissionReviews of a pod asking for
//! the sidecar (`tests/fixtures/webhook/reviews/inject.json`), timed
//!
//! 1. in process: parse, look up, decide, build the JSON patch, encode the response;
//! 2. over HTTPS on loopback with a new TLS connection per review, handshake included (the server
//!    serves one request per connection, so this is how the API server's reviews arrive).
//!
//! The client verifies the chain against the published bundle.
//!
//! Prints p50 / p90 / p99 / max per mode, and the mean of the webhook's own
//! `facekey_operator_admission_duration_seconds` over the HTTPS reviews. Goal: p99 under 10 ms. Run with
//! `cargo bench -p facekey-operator --bench admission` (N=<count> to change the 1,000).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use facekey_operator::render::parse_resources;
use facekey_operator::webhook::certs;
use facekey_operator::webhook::review::review_with;
use facekey_operator::webhook::server::{
    self, MUTATE_PATH, ReloadingCert, Resources, WebhookState,
};
use facekey_operator::webhook::{Decision, InjectOptions};
use k8s_openapi::jiff::Timestamp;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "facekey-webhook.facekey-system.svc";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/webhook/{name}")),
    )
    .unwrap()
}

fn report(mode: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let q = |p: f64| {
        let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    println!(
        "admission {mode:<28} n={:<5} p50={:.3} ms  p90={:.3} ms  p99={:.3} ms  max={:.3} ms",
        samples.len(),
        q(0.50),
        q(0.90),
        q(0.99),
        q(1.0)
    );
}

async fn post(connector: &tokio_rustls::TlsConnector, addr: SocketAddr, body: &[u8]) -> usize {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut tls = connector
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap();
    let mut request = format!(
        "POST {MUTATE_PATH} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    tls.write_all(&request).await.unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    assert!(raw.starts_with(b"HTTP/1.1 200"));
    raw.len()
}

fn main() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let body = fixture("reviews/inject.json");
    let resources = String::from_utf8(fixture("resources.yaml")).unwrap();
    let fkds = parse_resources(&resources).unwrap().resources;

    // 1. In process.
    let lookup = |ns: &str, name: &str| {
        fkds.iter()
            .find(|f| {
                f.metadata.namespace.as_deref() == Some(ns)
                    && f.metadata.name.as_deref() == Some(name)
            })
            .cloned()
            .map(Arc::new)
    };
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let (wire, decision) = review_with(&body, lookup, InjectOptions::default());
        let bytes = serde_json::to_vec(&wire).unwrap();
        samples.push(start.elapsed());
        assert!(matches!(decision, Some(Decision::Inject { .. })));
        std::hint::black_box(bytes);
    }
    report("in process", samples);

    // 2. Over HTTPS, a new connection per review.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bundle = certs::rotate(
            None,
            &certs::CertSettings::new("facekey-webhook", "facekey-system"),
            Timestamp::now(),
        )
        .unwrap()
        .unwrap();
        let cert = Arc::new(ReloadingCert::default());
        cert.set_pem(&bundle.cert, &bundle.key).unwrap();
        let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = facekey_operator::metrics::Metrics::new().unwrap();
        let state = WebhookState {
            limit_ranges: Default::default(),
            resource_quotas: Default::default(),
            resources: Resources::fixed(fkds.clone()),
            options: InjectOptions::default(),
            events: None,
            metrics: metrics.clone(),
            scope: None,
        };
        tokio::spawn(server::serve_tls(
            listener,
            server::tls_config(cert, None).unwrap(),
            server::router(state),
            std::future::pending::<()>(),
        ));
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(bundle.ca_bundle.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        // Warm up (first connections allocate).
        for _ in 0..20 {
            post(&connector, addr, &body).await;
        }
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            std::hint::black_box(post(&connector, addr, &body).await);
            samples.push(start.elapsed());
        }
        report("HTTPS, new TLS connection", samples);

        // What the webhook itself recorded for the same reviews (handler time only, as
        // facekey_operator_admission_duration_seconds exports it).
        let h = &metrics.admission_duration;
        let injected = metrics
            .admission_reviews
            .with_label_values(&["injected", ""])
            .get();
        println!(
            "admission handler (its own histogram)  n={:<5} mean={:.3} ms  injected counted={injected}",
            h.get_sample_count(),
            h.get_sample_sum() * 1000.0 / h.get_sample_count().max(1) as f64,
        );
    });
}
