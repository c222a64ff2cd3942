//! Request bodies used to hold the body budget hostage, over raw TCP against a real server: a
//! declared length over the body limit is refused before any of it is read; one key trickling
//! large bodies on many connections holds at most its share of the budget while other keys'
//! score, enrol and verify calls are served; a body slower than the rate floor is cut off with
//! 408 and gives its room back, while a body at a moderate pace is served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Running, error_code, face, metric, send_json};
use facekey_runtime::config::Config;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KIB: usize = 1024;

/// Everything the server sends until it closes the connection (the answers here leave the
/// body unread, so the server closes it); fails after `within`.
async fn read_answer(stream: &mut TcpStream, within: Duration) -> String {
    let mut bytes = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut bytes))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no answer and no close within {within:?}; got {:?}",
                String::from_utf8_lossy(&bytes)
            )
        })
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// The status line's code and the JSON body of a raw HTTP/1.1 answer.
fn parse(answer: &str) -> (u16, Value) {
    let status = answer
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Wait until `/metrics` shows `want` bytes of bodies reserved.
async fn wait_for_reserved(s: &Running, want: f64) {
    let mut seen = f64::NAN;
    for _ in 0..500 {
        seen = metric(&s.metrics().await, "facekey_body_memory_bytes");
        if seen == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("body memory reserved stayed at {seen}, not {want}");
}

/// A declared length over the body limit is answered 413 `payload_too_large` without a byte of
/// the body being sent (the request timeout is a minute: the answer cannot be the timeout's),
/// even when the client waits for `100 Continue`; nothing is reserved and the server serves on.
#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_unread() {
    let mut config = Config::for_tests();
    config.max_body_bytes = 256 * KIB;
    config.request_timeout_secs = 60;
    let s = Running::start(config).await;
    let key = s.keys["verify"].clone();
    for expect in ["", "expect: 100-continue\r\n"] {
        let mut stream = s
            .open_request(
                "/v1/verify",
                Some(&key),
                "application/json",
                &format!("content-length: 9000000\r\n{expect}"),
                b"",
            )
            .await;
        let answer = read_answer(&mut stream, Duration::from_secs(20)).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{expect:?}: {answer}");
        let (_, v) = parse(&answer);
        assert_eq!(error_code(&v), "payload_too_large", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("9000000") && message.contains("FACEKEY_MAX_BODY_BYTES"),
            "{message}"
        );
    }
    assert_eq!(
        metric(
            &s.metrics().await,
            r#"facekey_body_refused_total{reason="declared_too_large"}"#
        ),
        2.0
    );
    // Exactly the limit is not refused for its length (it is held, waiting for its body).
    let held = s
        .open_request(
            "/v1/score",
            Some(&key),
            "application/json",
            &format!("content-length: {}\r\n", 256 * KIB),
            b"{",
        )
        .await;
    wait_for_reserved(&s, (256 * KIB) as f64).await;
    drop(held);
    wait_for_reserved(&s, 0.0).await;
    s.assert_scores(&s.client).await;
    s.stop().await;
}

/// The audit's outage: one key opens 16 connections declaring the largest body and trickles
/// them. It holds its share of the budget (here one such body) and its further uploads get 429
/// `too_many_uploads` at once, while another key's score, enrolment and verification are
/// served; its room comes back when its clients go away. The rate floor is off here, so the
/// share alone is what protects the other key.
#[tokio::test]
async fn one_key_trickling_bodies_cannot_starve_another_key() {
    let mut config = Config::for_tests();
    config.max_body_bytes = 1024 * KIB;
    config.max_body_memory_bytes = 4 * 1024 * KIB;
    config.max_body_memory_per_key_share = 0.25;
    config.min_body_bytes_per_sec = 0;
    let s = Running::start(config).await;
    let greedy = s.keys["verify"].clone();
    let framing = "content-length: 1048576\r\n";
    let multipart = "multipart/form-data; boundary=X";
    let mut held = vec![
        s.open_request("/v1/verify", Some(&greedy), multipart, framing, b"--X")
            .await,
    ];
    wait_for_reserved(&s, (1024 * KIB) as f64).await;
    for _ in 1..16 {
        let mut refused = s
            .open_request("/v1/verify", Some(&greedy), multipart, framing, b"--X")
            .await;
        let answer = read_answer(&mut refused, Duration::from_secs(20)).await;
        let (status, v) = parse(&answer);
        assert_eq!(
            (status, error_code(&v)),
            (429, "too_many_uploads"),
            "{answer}"
        );
        assert!(
            answer.to_ascii_lowercase().contains("retry-after: 1\r\n"),
            "{answer}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("FACEKEY_MAX_BODY_MEMORY_PER_KEY_SHARE"),
            "{v}"
        );
        held.push(refused);
    }
    // Only the first holds room: the budget is far from full.
    let text = s.metrics().await;
    assert_eq!(
        metric(&text, "facekey_body_memory_bytes"),
        (1024 * KIB) as f64
    );
    assert_eq!(
        metric(
            &text,
            r#"facekey_admission_rejected_total{reason="body_memory"}"#
        ),
        0.0
    );
    assert_eq!(
        metric(&text, r#"facekey_body_refused_total{reason="key_share"}"#),
        held.len() as f64 - 1.0,
        "every connection but the first was refused for the key's share"
    );
    // Meanwhile another key scores, enrols and verifies.
    s.assert_scores(&s.client).await;
    let subject = s.new_subject("Victim of a neighbour").await;
    let (status, v) = s.enrol_sample(&s.client, &subject, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let form = Form::new()
        .part(
            "image",
            Part::bytes(face("astronaut_640x480.jpg")).file_name("p.jpg"),
        )
        .text("subject", subject);
    let (status, v) = send_json(s.client.post(s.url("/v1/verify")).multipart(form)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["decision"], "accept", "{v}");
    // The greedy key's clients go away: its share comes back, and it can upload again.
    drop(held);
    wait_for_reserved(&s, 0.0).await;
    s.assert_scores(&s.client_for("verify")).await;
    s.stop().await;
}

/// With a floor of 4 KiB/s after 1 s: a body trickled a byte every half second is cut off with
/// 408 `body_too_slow` long before the request timeout and its room comes back at once; a body
/// sent at about twice the floor in small chunks is served.
#[tokio::test]
async fn a_body_slower_than_the_floor_is_cut_off_and_a_moderate_one_is_served() {
    let mut config = Config::for_tests();
    config.max_body_bytes = 256 * KIB;
    config.min_body_bytes_per_sec = 4 * KIB as u64;
    config.body_rate_grace_secs = 1;
    config.request_timeout_secs = 60;
    let s = Running::start(config).await;
    let key = s.keys["verify"].clone();

    let body = br#"{"features":[1,0.5,-1]}"#;
    let mut slow = s
        .open_request(
            "/v1/score",
            Some(&key),
            "application/json",
            &format!("content-length: {}\r\n", body.len()),
            b"",
        )
        .await;
    let (mut reader, mut writer) = slow.split();
    let trickle = async {
        for b in body {
            if writer.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut bytes));
    // The answer comes (and the connection closes) while the trickle is still going: 23 bytes
    // at 2 bytes/s would take 11.5 s.
    let started = std::time::Instant::now();
    tokio::select! {
        read = read => { read.expect("no answer within 20 s").unwrap(); }
        () = trickle => panic!("the whole trickled body was taken"),
    }
    assert!(started.elapsed() < Duration::from_secs(11), "cut off late");
    let answer = String::from_utf8(bytes).unwrap();
    let (status, v) = parse(&answer);
    assert_eq!((status, error_code(&v)), (408, "body_too_slow"), "{answer}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("FACEKEY_MIN_BODY_BYTES_PER_SEC"),
        "{v}"
    );
    drop(slow);
    let text = s.metrics().await;
    assert_eq!(
        metric(&text, "facekey_body_memory_bytes"),
        0.0,
        "the cut-off body's room came back with its answer"
    );
    assert_eq!(
        metric(&text, r#"facekey_body_refused_total{reason="too_slow"}"#),
        1.0
    );

    // About 8 KiB/s for 3 s: 2 KiB every 250 ms, a valid request padded with whitespace.
    let mut padded = body.to_vec();
    padded.resize(24 * KIB, b' ');
    let mut moderate = s
        .open_request(
            "/v1/score",
            Some(&key),
            "application/json",
            &format!("content-length: {}\r\nconnection: close\r\n", padded.len()),
            b"",
        )
        .await;
    for chunk in padded.chunks(2 * KIB) {
        moderate.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let answer = read_answer(&mut moderate, Duration::from_secs(20)).await;
    let (status, v) = parse(&answer);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(v["decision"], "accept", "{v}");
    wait_for_reserved(&s, 0.0).await;
    s.assert_scores(&s.client).await;
    s.stop().await;
}

/// A floor of 1 KiB/s and a request timeout of 5 s: a 64 KiB body sent at 4 KiB/s, four times
/// the floor, would take 16 s, so the timeout would answer it anyway. It must keep the pace that
/// brings 64 KiB in before the timeout (16 KiB/s after the grace) and is cut off with 408
/// `body_too_slow` within about a second of the grace, its room given back, not held to the
/// timeout; the same body sent at once is served.
#[tokio::test]
async fn a_body_that_cannot_arrive_before_the_timeout_is_cut_off_early() {
    let mut config = Config::for_tests();
    config.max_body_bytes = 256 * KIB;
    config.min_body_bytes_per_sec = KIB as u64;
    config.body_rate_grace_secs = 1;
    config.request_timeout_secs = 5;
    let s = Running::start(config).await;
    let key = s.keys["verify"].clone();
    let mut padded = br#"{"features":[1,0.5,-1]}"#.to_vec();
    padded.resize(64 * KIB, b' ');
    let head = format!("content-length: {}\r\nconnection: close\r\n", padded.len());

    let mut slow = s
        .open_request("/v1/score", Some(&key), "application/json", &head, b"")
        .await;
    let started = std::time::Instant::now();
    let (mut reader, mut writer) = slow.split();
    let trickle = async {
        // 1 KiB every 250 ms: 4 KiB/s.
        for chunk in padded.chunks(KIB) {
            if writer.write_all(chunk).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut bytes));
    tokio::select! {
        read = read => { read.expect("no answer within 20 s").unwrap(); }
        () = trickle => panic!("the whole body was taken at 4 KiB/s"),
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(4),
        "cut off at {elapsed:?}, not before the 5 s timeout"
    );
    let answer = String::from_utf8(bytes).unwrap();
    let (status, v) = parse(&answer);
    assert_eq!((status, error_code(&v)), (408, "body_too_slow"), "{answer}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("FACEKEY_REQUEST_TIMEOUT_SECS"),
        "{v}"
    );
    drop(slow);
    wait_for_reserved(&s, 0.0).await;
    assert_eq!(
        metric(
            &s.metrics().await,
            r#"facekey_body_refused_total{reason="too_slow"}"#
        ),
        1.0
    );

    let mut fast = s
        .open_request("/v1/score", Some(&key), "application/json", &head, &padded)
        .await;
    let answer = read_answer(&mut fast, Duration::from_secs(10)).await;
    let (status, v) = parse(&answer);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(v["decision"], "accept", "{v}");

    // A chunked body declares no length: it reserves the body limit, but its pace is not that
    // limit's (256 KiB by the timeout would be 64 KiB/s). 16 KiB at 8 KiB/s arrives in 2 s,
    // well before the timeout, and is served.
    let mut chunked = s
        .open_request(
            "/v1/score",
            Some(&key),
            "application/json",
            "transfer-encoding: chunked\r\nconnection: close\r\n",
            b"",
        )
        .await;
    for chunk in padded[..16 * KIB].chunks(2 * KIB) {
        chunked
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        chunked.write_all(chunk).await.unwrap();
        chunked.write_all(b"\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    chunked.write_all(b"0\r\n\r\n").await.unwrap();
    let answer = read_answer(&mut chunked, Duration::from_secs(10)).await;
    let (status, v) = parse(&answer);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(v["decision"], "accept", "{v}");
    s.stop().await;
}
