//! One sized pool for inference: under a burst of concurrent verifications the process starts no
//! thread per request (the passive-liveness branch runs on the engine's pool, not on a thread of
//! its own), and the inference threads are the pool's fixed `facekey-infer-<n>` threads.
//! One test in this file: it counts the threads of the whole test process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Running, face, send_json};
use facekey_runtime::config::Config;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};

/// The threads of this process now: thread id → (name, CPU time used in clock ticks).
fn threads() -> BTreeMap<u32, (String, u64)> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let cpu = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            Some((tid, (name.trim().to_owned(), cpu)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_verifications_starts_no_thread_and_runs_on_the_sized_pool() {
    let mut config = Config::for_tests();
    config.max_inflight = 2;
    // The burst is 24 x the places: queue it all (this test is about threads, not shedding).
    common::queue_whole_bursts(&mut config);
    let s = Running::start(config).await;
    let (status, v) = send_json(
        s.client
            .post(s.url("/v1/subjects"))
            .json(&serde_json::json!({"name": "Eileen Collins"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let form = Form::new().part(
        "image",
        Part::bytes(face("astronaut.png")).file_name("a.png"),
    );
    let (status, v) = send_json(
        s.client
            .post(s.url(&format!("/v1/subjects/{id}/faces")))
            .multipart(form),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let verify = |s: &Running| {
        let form = Form::new().text("subject", id.clone()).part(
            "image",
            Part::bytes(face("astronaut_640x480.jpg")).file_name("p.jpg"),
        );
        s.client.post(s.url("/v1/verify")).multipart(form).send()
    };
    // Warm up: every lazily started thread (the blocking pool's included) exists from here on.
    for _ in 0..2 {
        assert_eq!(verify(&s).await.unwrap().status(), StatusCode::OK);
    }
    let before = threads();
    let pool: Vec<&(String, u64)> = before
        .values()
        .filter(|(n, _)| n.starts_with("facekey-infer"))
        .collect();
    // max_inflight 2, liveness beside the rest: 4 threads.
    assert_eq!(pool.len(), 4, "{before:?}");

    // Sample the process's threads while 12 verifications run, 6 at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("thread-sampler".into())
            .spawn(move || {
                let mut seen = BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    seen.extend(threads());
                    std::thread::sleep(Duration::from_millis(2));
                }
                seen
            })
            .unwrap()
    };
    for _ in 0..2 {
        let burst: Vec<_> = (0..6).map(|_| verify(&s)).collect();
        for r in futures::future::join_all(burst).await {
            let r = r.unwrap();
            let status = r.status();
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(status, StatusCode::OK, "{v}");
            assert!(v["liveness"].is_object() || v["reasons"].is_array(), "{v}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let seen = sampler.join().unwrap();
    // Threads that appeared during the burst, and the CPU they burnt. Before the pool, each
    // verification ran its liveness branch on a new thread (12 here, ~0.1 s of CPU each); now
    // the branch runs on the pool, and any new thread is tokio's blocking pool polling files.
    let new: BTreeMap<&u32, &(String, u64)> = seen
        .iter()
        .filter(|(tid, (name, _))| !before.contains_key(tid) && name != "thread-sampler")
        .collect();
    let new_cpu: u64 = new.values().map(|(_, cpu)| cpu).sum();
    let pool_cpu = |m: &BTreeMap<u32, (String, u64)>| -> u64 {
        m.values()
            .filter(|(n, _)| n.starts_with("facekey-infer"))
            .map(|(_, cpu)| cpu)
            .sum()
    };
    let inference = pool_cpu(&seen) - pool_cpu(&before);
    eprintln!("pool threads: {inference} ticks of CPU; new threads: {new:?}");
    assert!(
        new_cpu <= 5,
        "threads started during the burst did work ({new_cpu} ticks): {new:?}"
    );
    assert!(new.len() < 12, "a thread per request: {new:?}");
    assert!(
        inference > 20,
        "the pool's threads did the inference: {inference} ticks"
    );
    let pool_after = seen
        .values()
        .filter(|(n, _)| n.starts_with("facekey-infer"))
        .count();
    assert_eq!(pool_after, 4, "the pool never grows");
    s.stop().await;
}
