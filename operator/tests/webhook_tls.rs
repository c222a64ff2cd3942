//! The webhook server over real TLS: a real HTTPS client (rustls, verifying the chain against the
//! `caBundle` the operator publishes and the Service's DNS name) posts AdmissionReviews; clients
//! trusting another CA or asking for another name are refused the handshake; the certificate is
//! rotated while the server runs (serving renewal and CA rotation) without a client ever losing
//! trust.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use facekey_operator::metrics::Metrics;
use facekey_operator::render::parse_resources;
use facekey_operator::webhook::InjectOptions;
use facekey_operator::webhook::certs::{self, CertBundle, CertSettings, Plan};
use facekey_operator::webhook::server::{
    self, MUTATE_PATH, ReloadingCert, Resources, WebhookState,
};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "facekey-webhook.facekey-system.svc";

fn settings() -> CertSettings {
    CertSettings::new("facekey-webhook", "facekey-system")
}

fn ago(days: i64) -> Timestamp {
    Timestamp::now()
        .checked_sub(SignedDuration::from_hours(24 * days))
        .unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/webhook/{name}")),
    )
    .unwrap()
}

async fn start(cert: Arc<ReloadingCert>) -> SocketAddr {
    start_with(cert, Metrics::new().unwrap()).await
}

async fn start_with(cert: Arc<ReloadingCert>, metrics: Metrics) -> SocketAddr {
    start_limited(cert, metrics, server::ServeLimits::default()).await
}

async fn start_limited(
    cert: Arc<ReloadingCert>,
    metrics: Metrics,
    limits: server::ServeLimits,
) -> SocketAddr {
    start_full(cert, metrics, limits, None).await
}

async fn start_full(
    cert: Arc<ReloadingCert>,
    metrics: Metrics,
    limits: server::ServeLimits,
    client_cas: Option<&[CertificateDer<'static>]>,
) -> SocketAddr {
    let resources = String::from_utf8(fixture("resources.yaml")).unwrap();
    let state = WebhookState {
        limit_ranges: Default::default(),
        resource_quotas: Default::default(),
        resources: Resources::fixed(parse_resources(&resources).unwrap().resources),
        options: InjectOptions::default(),
        events: None,
        metrics,
        scope: None,
    };
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = server::tls_config(cert, client_cas).unwrap();
    tokio::spawn(server::serve_tls_with(
        listener,
        tls,
        server::router(state),
        limits,
        std::future::pending::<()>(),
    ));
    addr
}

/// A TLS connection to `addr` trusting only the CAs in `ca_pem`, for `host`.
async fn connect(
    addr: SocketAddr,
    ca_pem: &str,
    host: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    connect_as(addr, ca_pem, host, None).await
}

/// A client certificate (PEM chain, PEM key) for TLS client authentication.
type ClientIdentity = (String, String);

/// [`connect`], presenting `identity` when given.
async fn connect_as(
    addr: SocketAddr,
    ca_pem: &str,
    host: &str,
    identity: Option<&ClientIdentity>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match identity {
        None => config.with_no_client_auth(),
        Some((chain, key)) => config
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(host.to_owned()).unwrap();
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}

/// An HTTPS POST trusting only the CAs in `ca_pem`, for `host`: the response body, and the
/// certificate the server presented.
async fn post(
    addr: SocketAddr,
    ca_pem: &str,
    host: &str,
    body: &[u8],
) -> Result<(Value, CertificateDer<'static>), String> {
    let mut tls = connect(addr, ca_pem, host).await?;
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let head = format!(
        "POST {MUTATE_PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    // rustls reports the peer's missing close_notify as an error after the body: keep the bytes.
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8(raw).unwrap();
    let (status, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(
        status
            .to_ascii_lowercase()
            .contains("content-type: application/json")
    );
    Ok((serde_json::from_str(body).unwrap(), presented))
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A newly issued serving certificate, and the reloading certificate that serves it.
fn issued() -> (CertBundle, Arc<ReloadingCert>) {
    let bundle: CertBundle = certs::rotate(None, &settings(), Timestamp::now())
        .unwrap()
        .unwrap();
    let cert = Arc::new(ReloadingCert::default());
    load(&cert, &bundle.cert, &bundle.key);
    (bundle, cert)
}

fn load(cert: &ReloadingCert, cert_pem: &str, key_pem: &str) {
    cert.set_pem(cert_pem, key_pem).unwrap();
}

#[tokio::test]
async fn admission_over_tls_verified_against_the_published_bundle() {
    let (bundle, cert) = issued();
    let metrics = Metrics::new().unwrap();
    let addr = start_with(cert, metrics.clone()).await;

    let (review, presented) = post(
        addr,
        &bundle.ca_bundle,
        HOST,
        &fixture("reviews/inject.json"),
    )
    .await
    .unwrap();
    assert_eq!(presented, der(&bundle.cert));
    let response = &review["response"];
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    assert!(response["patch"].as_str().is_some_and(|p| !p.is_empty()));
    let (review, _) = post(
        addr,
        &bundle.ca_bundle,
        HOST,
        &fixture("reviews/unknown-resource.json"),
    )
    .await
    .unwrap();
    assert_eq!(review["response"]["allowed"], false);

    // Every name the API server may use is in the certificate.
    for host in settings().dns_names() {
        post(
            addr,
            &bundle.ca_bundle,
            &host,
            &fixture("reviews/opt-out.json"),
        )
        .await
        .unwrap();
    }
    // Another CA, or another name: no handshake.
    let other = certs::rotate(None, &settings(), Timestamp::now())
        .unwrap()
        .unwrap();
    let err = post(addr, &other.ca_bundle, HOST, b"{}").await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    let err = post(
        addr,
        &bundle.ca_bundle,
        "facekey-webhook.elsewhere.svc",
        b"{}",
    )
    .await
    .unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");

    // Every answered review is counted and timed; failed handshakes never reach the handler.
    let reviews = settings().dns_names().len() as u64 + 2;
    let text = metrics.encode().unwrap();
    let count = |outcome: &str, reason: &str| {
        metrics
            .admission_reviews
            .with_label_values(&[outcome, reason])
            .get()
    };
    assert_eq!(count("injected", ""), 1);
    assert_eq!(count("refused", "UnknownResource"), 1);
    assert_eq!(count("opted_out", ""), reviews - 2);
    assert!(
        text.contains(&format!(
            "facekey_operator_admission_duration_seconds_count {reviews}"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn rotation_while_serving_never_breaks_trust() {
    let s = settings();
    // A CA issued four years ago (of five): 62 days ago a new CA was staged beside it, signing
    // nothing, so the published bundle trusted it before any replica could serve its certificate.
    let first = certs::rotate(None, &s, ago(4 * 365)).unwrap().unwrap();
    assert_eq!(certs::plan(Some(&first), &s, ago(62)), Plan::StageCa);
    let staged = certs::rotate(Some(&first), &s, ago(62)).unwrap().unwrap();
    let next = staged.next_ca.clone().unwrap();
    assert_eq!(
        (staged.cert.as_str(), staged.ca_cert.as_str()),
        (first.cert.as_str(), first.ca_cert.as_str()),
        "staging changes only the bundle"
    );
    assert!(staged.ca_bundle.starts_with(&first.ca_cert));
    assert!(staged.ca_bundle.contains(&next.cert));
    // Within the grace the staged CA signs nothing (this old serving certificate is renewed by
    // the current CA); after it, the staged CA signs.
    let within = ago(62).checked_add(SignedDuration::from_secs(60)).unwrap();
    assert_eq!(certs::plan(Some(&staged), &s, within), Plan::RenewServing);
    assert_eq!(certs::plan(Some(&staged), &s, ago(61)), Plan::RotateCa);
    let rotated = certs::rotate(Some(&staged), &s, ago(61)).unwrap().unwrap();
    assert_eq!(rotated.ca_cert, next.cert);
    assert_eq!(rotated.next_ca, None);
    assert!(rotated.ca_bundle.starts_with(&next.cert));
    assert!(rotated.ca_bundle.contains(&first.ca_cert));
    assert_eq!(rotated.previous_ca_not_after, Some(first.ca_not_after));

    // Every certificate a replica may serve at any point is trusted by the bundle published
    // before it: the staged bundle already trusts what the rotation issues.
    let (old_cert, old_key, _) =
        certs::issue_serving(&first.ca_key, first.ca_not_after, &s, ago(1)).unwrap();
    let cert = Arc::new(ReloadingCert::default());
    let addr = start(cert.clone()).await;
    let body = fixture("reviews/inject.json");
    for (serving, key) in [(&old_cert, &old_key), (&rotated.cert, &rotated.key)] {
        load(&cert, serving, key);
        let (_, presented) = post(addr, &staged.ca_bundle, HOST, &body).await.unwrap();
        assert_eq!(presented, der(serving));
    }
    // Before the staging, the first bundle did not trust the new CA's certificate: serving it
    // at once, as a one-step rotation did, was refused until the API server saw the bundle.
    assert!(post(addr, &first.ca_bundle, HOST, &body).await.is_err());
    let (_, presented) = post(addr, &rotated.ca_bundle, HOST, &body).await.unwrap();
    assert_eq!(presented, der(&rotated.cert));

    // A replica still serving a certificate of the old CA is trusted through the bundle, and only
    // through it.
    load(&cert, &old_cert, &old_key);
    let (_, presented) = post(addr, &rotated.ca_bundle, HOST, &body).await.unwrap();
    assert_eq!(presented, der(&old_cert));
    assert!(post(addr, &rotated.ca_cert, HOST, &body).await.is_err());

    // Today a third of the serving certificate's 90 days is left: renewed by the same CA, the
    // bundle unchanged, loaded into the running server.
    let now = Timestamp::now();
    assert_eq!(certs::plan(Some(&rotated), &s, now), Plan::RenewServing);
    let renewed = certs::rotate(Some(&rotated), &s, now).unwrap().unwrap();
    assert_eq!(renewed.ca_bundle, rotated.ca_bundle);
    assert_ne!(renewed.cert, rotated.cert);
    load(&cert, &renewed.cert, &renewed.key);
    let (review, presented) = post(addr, &rotated.ca_bundle, HOST, &body).await.unwrap();
    assert_eq!(presented, der(&renewed.cert));
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(certs::plan(Some(&renewed), &s, now), Plan::Keep);

    // Once the old CA expires it leaves the bundle.
    let after_old = first
        .ca_not_after
        .checked_add(SignedDuration::from_secs(1))
        .unwrap();
    let later = certs::rotate(Some(&renewed), &s, after_old)
        .unwrap()
        .unwrap();
    // (By then the serving certificate is due too; either way the old CA is gone.)
    assert!(!later.ca_bundle.contains(&first.ca_cert));
    assert_eq!(
        certs::plan(
            Some(&CertBundle {
                cert_not_after: after_old
                    .checked_add(SignedDuration::from_hours(24 * 80))
                    .unwrap(),
                ..renewed.clone()
            }),
            &s,
            after_old
        ),
        Plan::DropPreviousCa
    );
}

/// A staged CA stays in the bundle through whatever else happens before it signs: a serving
/// renewal, the previous CA leaving; one whose key no longer loads is staged afresh.
#[test]
fn a_staged_ca_survives_renewals_until_it_signs() {
    let s = settings();
    let first = certs::rotate(None, &s, ago(4 * 365)).unwrap().unwrap();
    let staged = certs::rotate(Some(&first), &s, ago(1)).unwrap().unwrap();
    let next = staged.next_ca.clone().unwrap();
    let due = CertBundle {
        cert_not_after: Timestamp::now(),
        previous_ca_not_after: Some(ago(2)),
        ca_bundle: format!("{}{}{}", first.ca_cert, "PREVIOUS\n", next.cert),
        ..staged.clone()
    };
    let within = ago(1).checked_add(SignedDuration::from_secs(30)).unwrap();
    assert_eq!(certs::plan(Some(&due), &s, within), Plan::RenewServing);
    let renewed = certs::rotate(Some(&due), &s, within).unwrap().unwrap();
    assert_eq!(renewed.next_ca.as_ref(), Some(&next));
    assert_eq!(renewed.ca_bundle, format!("{}{}", first.ca_cert, next.cert));
    assert_eq!(renewed.previous_ca_not_after, None);
    // The staged CA signs only after its grace.
    assert_eq!(certs::plan(Some(&renewed), &s, within), Plan::Keep);
    assert_eq!(
        certs::plan(Some(&renewed), &s, Timestamp::now()),
        Plan::RotateCa
    );
    let broken = CertBundle {
        next_ca: Some(certs::StagedCa {
            key: "not a key".into(),
            ..next.clone()
        }),
        ..renewed.clone()
    };
    assert_eq!(
        certs::plan(Some(&broken), &s, Timestamp::now()),
        Plan::StageCa
    );
    let again = certs::rotate(Some(&broken), &s, Timestamp::now())
        .unwrap()
        .unwrap();
    let fresh = again.next_ca.unwrap();
    assert_ne!(fresh.cert, next.cert);
    assert_eq!(again.ca_bundle, format!("{}{}", first.ca_cert, fresh.cert));
    assert_eq!(again.cert, renewed.cert);
}

#[test]
fn a_missing_or_expired_ca_is_replaced_and_names_follow_the_service() {
    let s = settings();
    assert_eq!(certs::plan(None, &s, Timestamp::now()), Plan::Create);
    let b = certs::rotate(None, &s, Timestamp::now()).unwrap().unwrap();
    let after_ca = b
        .ca_not_after
        .checked_add(SignedDuration::from_secs(1))
        .unwrap();
    assert_eq!(certs::plan(Some(&b), &s, after_ca), Plan::Create);
    let moved = CertSettings::new("facekey-webhook", "operators");
    assert_eq!(
        certs::plan(Some(&b), &moved, Timestamp::now()),
        Plan::RenewServing
    );
    // The serving certificate never outlives its CA.
    let short = CertSettings {
        ca_validity: std::time::Duration::from_secs(3600),
        ..s.clone()
    };
    let c = certs::rotate(None, &short, Timestamp::now())
        .unwrap()
        .unwrap();
    assert!(c.cert_not_after <= c.ca_not_after);
}

/// What a connection sends before it reads: everything the server wrote until it closed, and
/// how long that took (`None`: still open after `within`).
async fn closed_after(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    within: std::time::Duration,
) -> Option<(String, std::time::Duration)> {
    let started = std::time::Instant::now();
    let mut raw = Vec::new();
    match tokio::time::timeout(within, tls.read_to_end(&mut raw)).await {
        Ok(_) => Some((
            String::from_utf8_lossy(&raw).into_owned(),
            started.elapsed(),
        )),
        Err(_) => None,
    }
}

/// Any pod can reach the webhook's port: a client trickling its headers or its body is cut off
/// after the limits, and one peer's connections past its share are closed at once, so no client
/// can make the operator hold unbounded buffers or take every connection.
#[tokio::test]
async fn slow_idle_and_surplus_clients_are_bounded() {
    use std::time::Duration;
    let (bundle, cert) = issued();
    let limits = server::ServeLimits {
        handshake_timeout: Duration::from_secs(2),
        header_read_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        max_connections: 3,
        max_connections_per_peer: 2,
        max_requests_in_flight: 1,
        max_body_bytes_in_flight: server::MAX_BODY,
    };
    let addr = start_limited(cert, Metrics::new().unwrap(), limits).await;

    // Half a request head, then nothing: closed at the header timeout.
    let mut slow_head = connect(addr, &bundle.ca_bundle, HOST).await.unwrap();
    slow_head
        .write_all(format!("POST {MUTATE_PATH} HTTP/1.1\r\nHost: x\r\n").as_bytes())
        .await
        .unwrap();
    let (_, took) = closed_after(&mut slow_head, Duration::from_secs(5))
        .await
        .expect("a connection trickling its headers was never closed");
    assert!(took >= Duration::from_millis(900), "{took:?}");

    // A whole head announcing a body that never comes: 408 at the body timeout.
    let mut slow_body = connect(addr, &bundle.ca_bundle, HOST).await.unwrap();
    slow_body
        .write_all(
            format!(
                "POST {MUTATE_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: 100000\r\n\r\n{{\"kind\":"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let (answer, _) = closed_after(&mut slow_body, Duration::from_secs(5))
        .await
        .expect("a request whose body never arrives was never answered");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // One peer holds at most 2 connections: a third from it is closed at once (no handshake),
    // so keeping connections alive from one pod cannot take every place.
    let idle_a = connect(addr, &bundle.ca_bundle, HOST).await.unwrap();
    let idle_b = connect(addr, &bundle.ca_bundle, HOST).await.unwrap();
    let third = tokio::time::timeout(
        Duration::from_secs(2),
        connect(addr, &bundle.ca_bundle, HOST),
    )
    .await
    .expect("a refused connection is closed at once, not left waiting");
    assert!(third.is_err(), "a third connection of one peer was served");
    // Once one of its connections goes, it may connect again and is served.
    drop(idle_a);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let review = loop {
        match post(
            addr,
            &bundle.ca_bundle,
            HOST,
            &fixture("reviews/opt-out.json"),
        )
        .await
        {
            Ok((review, _)) => break review,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "never served again: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(review["response"]["allowed"], true);
    drop(idle_b);
}

/// A request head announcing a body of `length` bytes, and the first bytes of it.
fn stalled_head(length: usize) -> String {
    format!(
        "POST {MUTATE_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n{{\"kind\":"
    )
}

/// Bodies are read, each under its own deadline, before a request takes one of the places that
/// answer reviews: clients announcing bodies they never send (more of them than places, and
/// than the byte budget for large bodies) hold no place, so the API server's review is answered
/// at once instead of waiting past its `timeoutSeconds` (the pod then admitted without its
/// sidecar). A body without a length or over the maximum is refused unread.
#[tokio::test]
async fn stalled_bodies_do_not_delay_a_real_review() {
    use std::time::{Duration, Instant};
    let (bundle, cert) = issued();
    let limits = server::ServeLimits {
        handshake_timeout: Duration::from_secs(5),
        header_read_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_secs(4),
        max_connections: 32,
        max_connections_per_peer: 32,
        max_requests_in_flight: 2,
        max_body_bytes_in_flight: 150_000,
    };
    let addr = start_limited(cert, Metrics::new().unwrap(), limits).await;

    // Six connections announce 100 kB bodies and send a few bytes of them.
    let mut stalled = Vec::new();
    for _ in 0..6 {
        let mut tls = connect(addr, &bundle.ca_bundle, HOST).await.unwrap();
        tls.write_all(stalled_head(100_000).as_bytes())
            .await
            .unwrap();
        stalled.push(tls);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let (review, _) = post(
        addr,
        &bundle.ca_bundle,
        HOST,
        &fixture("reviews/opt-out.json"),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(review["response"]["allowed"], true);
    assert!(
        took < Duration::from_secs(1),
        "a review waited {took:?} behind stalled bodies"
    );

    // Refused at once, unread: a length over the maximum, and no length (chunked).
    for (head, status) in [
        (stalled_head(server::MAX_BODY + 1), "413"),
        (
            format!("POST {MUTATE_PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "411",
        ),
    ] {
        let mut tls = connect(addr, &bundle.ca_bundle, HOST).await.unwrap();
        tls.write_all(head.as_bytes()).await.unwrap();
        let (answer, took) = closed_after(&mut tls, Duration::from_secs(2))
            .await
            .expect("a request refused unread was never answered");
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        assert!(took < Duration::from_secs(1), "{took:?}");
    }

    // The stalled bodies get their 408 at the body deadline.
    for mut tls in stalled {
        let (answer, _) = closed_after(&mut tls, Duration::from_secs(5))
            .await
            .expect("a stalled body was never answered");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
}

/// Each connection serves one request and is closed after its answer (`Connection: close`):
/// the API server, which keeps idle connections 90 s, never sends a review on a connection the
/// server's header timeout is closing (a POST Go does not retry; the pod would be admitted
/// without its sidecar).
#[tokio::test]
async fn each_connection_is_closed_after_its_answer() {
    use std::time::Duration;
    let (bundle, cert) = issued();
    let addr = start(cert).await;
    let body = fixture("reviews/opt-out.json");
    let mut tls = connect(addr, &bundle.ca_bundle, HOST).await.unwrap();
    // No `Connection: close`: a client that would keep the connection.
    let head = format!(
        "POST {MUTATE_PATH} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body).await.unwrap();
    let (answer, _) = closed_after(&mut tls, Duration::from_secs(3))
        .await
        .expect("the connection was kept open after the answer");
    let (head, _) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
}

/// A CA for the API server's admission client certificate (PEM), and a client certificate it
/// issued (with the clientAuth usage, as a kubeconfig's `client-certificate` holds).
fn client_ca_and_identity(name: &str) -> (String, ClientIdentity) {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{name} client CA"));
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kube-apiserver-admission");
    leaf.distinguished_name = dn;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf.use_authority_key_identifier_extension = true;
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_pem, (cert.pem(), key.serialize_pem()))
}

/// A review posted as `identity`: the answer's `allowed`, or why there was none (a refused
/// handshake surfaces on the first read under TLS 1.3).
async fn review_as(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<&ClientIdentity>,
) -> Result<Value, String> {
    let mut tls = connect_as(addr, ca_pem, HOST, identity).await?;
    let body = fixture("reviews/inject.json");
    let head = format!(
        "POST {MUTATE_PATH} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(&body).await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    if let Err(e) = tls.read_to_end(&mut raw).await
        && raw.is_empty()
    {
        return Err(e.to_string());
    }
    let text = String::from_utf8(raw).map_err(|e| e.to_string())?;
    let (status, body) = text.split_once("\r\n\r\n").ok_or("no answer")?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(status.to_owned());
    }
    let review: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    Ok(review["response"]["allowed"].clone())
}

/// With `--webhook-client-ca`, the webhook serves only clients presenting a certificate that CA
/// issued (the API server's, configured in its AdmissionConfiguration): a client with none, or
/// with one of another CA, is refused in the handshake and no review reaches the handler.
/// Without it, any client is served (the default).
#[tokio::test]
async fn a_client_ca_admits_only_the_api_servers_certificate() {
    let (bundle, cert) = issued();
    let (client_ca, apiserver) = client_ca_and_identity("apiserver");
    let (_, stranger) = client_ca_and_identity("stranger");
    let cas = server::client_cas_from_pem(client_ca.as_bytes()).unwrap();
    let metrics = Metrics::new().unwrap();
    let addr = start_full(
        cert.clone(),
        metrics.clone(),
        server::ServeLimits::default(),
        Some(&cas),
    )
    .await;
    assert_eq!(
        review_as(addr, &bundle.ca_bundle, Some(&apiserver)).await,
        Ok(Value::Bool(true))
    );
    let none = review_as(addr, &bundle.ca_bundle, None).await.unwrap_err();
    assert!(none.contains("CertificateRequired"), "{none}");
    let other = review_as(addr, &bundle.ca_bundle, Some(&stranger))
        .await
        .unwrap_err();
    assert!(
        other.contains("UnknownCA") || other.contains("BadCertificate"),
        "{other}"
    );
    let reviewed = metrics
        .admission_reviews
        .with_label_values(&["injected", ""])
        .get();
    assert_eq!(reviewed, 1, "refused handshakes never reach the handler");

    let open = start(cert).await;
    assert_eq!(
        review_as(open, &bundle.ca_bundle, None).await,
        Ok(Value::Bool(true))
    );
    assert!(server::client_cas_from_pem(b"not a certificate").is_err());
}
