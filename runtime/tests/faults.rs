//! Faults around the runtime: an SMTP server that is down or hangs must not slow or fail the
//! requests whose spoof alerts it would carry (alerts are queued, never awaited by a request).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Running, face, free_port, send_json};
use facekey_runtime::alerts::SmtpTls;
use facekey_runtime::config::Config;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};

/// A runtime whose every face is a spoof (liveness threshold 1.0), alerting to `smarthost`.
fn alerting_config(smarthost: String) -> Config {
    let mut config = Config::for_tests();
    config.smtp_smarthost = Some(smarthost);
    config.smtp_tls = SmtpTls::None;
    config.alert_from = Some("facekey@example.test".into());
    config.alert_to = vec!["security@example.test".into()];
    config.alert_min_interval_secs = 0;
    config.liveness_threshold = 1.0;
    config
}

async fn spoofs(s: &Running, n: usize) {
    for i in 0..n {
        let form = Form::new().part(
            "image",
            Part::bytes(face("astronaut_640x480.jpg")).file_name("a.jpg"),
        );
        let (status, v) = send_json(s.client.post(s.url("/v1/liveness")).multipart(form)).await;
        assert_eq!(status, StatusCode::OK, "request {i}: {v}");
        assert_eq!(v["faces"][0]["liveness"]["state"], "spoof", "{v}");
    }
}

#[tokio::test]
async fn a_hanging_smtp_server_does_not_hold_up_requests() {
    // Accepts connections and never sends its greeting.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hole.local_addr().unwrap();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((conn, _)) = hole.accept() {
            let _ = seen_tx.send(());
            held.push(conn);
            if held.len() >= 4 {
                break;
            }
        }
        std::thread::sleep(Duration::from_secs(30));
        drop(held);
    });
    let s = Running::start(alerting_config(addr.to_string())).await;
    spoofs(&s, 1).await;
    // The mail task is now stuck in a connection that never answers ...
    seen_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the runtime never tried to mail the alert");
    // ... and every further spoofed request is still answered, its alert queued.
    spoofs(&s, 5).await;
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("facekey_spoof_detected_total 6"),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"facekey_alert_emails_total{result="sent"}"#));
    // Stopping waits a bounded time (10 s) for the stuck mail, then exits cleanly.
    let Running {
        mut stop,
        task,
        data_dir,
        ..
    } = s;
    stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the runtime did not exit with a mail stuck")
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(data_dir);
    drop(holder);
}

#[tokio::test]
async fn an_smtp_server_that_is_down_fails_emails_not_requests() {
    // Nothing listens on this port.
    let port = free_port();
    let s = Running::start(alerting_config(format!("127.0.0.1:{port}"))).await;
    spoofs(&s, 3).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = s.metrics().await;
        if metrics.contains(r#"facekey_alert_emails_total{result="failed"}"#) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a refused SMTP connection was never counted as a failed email:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Still serving.
    spoofs(&s, 1).await;
    s.stop().await;
}
