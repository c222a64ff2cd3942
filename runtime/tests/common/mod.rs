//! The test harness shared by the HTTP integration tests: a real server on a loopback port,
//! started in-process, with helpers to call it and stop it cleanly.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod postgres;

/// Write a self-signed server certificate for 127.0.0.1 and its key (PEM) with `openssl`. It is
/// a server certificate, not a CA: webpki refuses a CA certificate as the peer, and accepts this
/// one as its own trust anchor.
pub fn self_signed_cert(cert: &std::path::Path, key: &std::path::Path) {
    let ok = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl could not make a certificate");
}

/// Send a request; the status and the JSON body (`null` when the body is not JSON).
pub async fn send_json(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let r = request.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The value of an unlabelled (or fully labelled) series in a metrics text.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{series} missing"))
}

pub fn error_code(v: &serde_json::Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

/// A PNG that declares `w` x `h` pixels but carries almost no data: a decompression bomb's shape.
pub fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    // zlib stream of a few zero bytes: far too little data for the declared size.
    chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

/// The bytes of a sample image in `runtime/testdata/faces`.
pub fn face(name: &str) -> Vec<u8> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/faces")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A TCP port free on loopback right now (for servers a test starts).
/// Queue whole bursts of inferences instead of shedding them, and let them wait as long as a
/// debug build on a busy machine needs: for tests about something other than overload.
pub fn queue_whole_bursts(config: &mut facekey_runtime::config::Config) {
    config.max_queue = Some(64);
    config.queue_max_load = f64::INFINITY;
    config.max_queue_wait_ms = 120_000;
    config.request_timeout_secs = 300;
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

use std::net::SocketAddr;
use std::time::Duration;

use facekey_runtime::config::Config;
use facekey_runtime::server::{Server, ServerError};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;

/// A keys file with one key per scope set, for servers a test starts: `(file text, keys by id)`.
/// Ids: `admin`, `verify`, `enrol`, `metrics`, and `slow` (verify at one request per 2 s).
pub fn test_keys() -> (String, std::collections::BTreeMap<String, String>) {
    use facekey_runtime::auth::Scope;
    use facekey_runtime::auth::keys::{key_line, new_key};
    let mut text = String::new();
    let mut keys = std::collections::BTreeMap::new();
    for (id, scope, rps) in [
        ("admin", Scope::Admin, None),
        ("verify", Scope::Verify, None),
        ("enrol", Scope::Enrol, None),
        ("metrics", Scope::Metrics, None),
        ("slow", Scope::Verify, Some(0.5)),
    ] {
        let key = new_key().unwrap();
        text.push_str(&key_line(id, &[scope].into(), &key, rps).unwrap());
        text.push('\n');
        keys.insert(id.to_owned(), key);
    }
    (text, keys)
}

/// A keys file in `dir` (file name `name`) with one key per `(id, scope)`, no rate: its path and
/// the keys by id.
pub fn keys_file(
    dir: &std::path::Path,
    name: &str,
    keys: &[(&'static str, facekey_runtime::auth::Scope)],
) -> (
    std::path::PathBuf,
    std::collections::BTreeMap<&'static str, String>,
) {
    use facekey_runtime::auth::keys::{key_line, new_key};
    let mut text = String::new();
    let mut by_id = std::collections::BTreeMap::new();
    for &(id, scope) in keys {
        let key = new_key().unwrap();
        text.push_str(&key_line(id, &[scope].into(), &key, None).unwrap());
        text.push('\n');
        by_id.insert(id, key);
    }
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    (path, by_id)
}

/// A keys file in `dir` with two `enrol` keys (`app-a`, `app-b`) and an `admin` key, for the
/// per-key quota tests: its path and the keys by id.
pub fn two_apps_and_admin_keys(
    dir: &std::path::Path,
) -> (
    std::path::PathBuf,
    std::collections::BTreeMap<&'static str, String>,
) {
    use facekey_runtime::auth::Scope;
    keys_file(
        dir,
        "quota-api-keys",
        &[
            ("app-a", Scope::Enrol),
            ("app-b", Scope::Enrol),
            ("admin", Scope::Admin),
        ],
    )
}

/// A client that sends `key` on every request.
pub fn keyed_client(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// A runtime serving on a loopback port until [`Running::stop`].
pub struct Running {
    pub addr: SocketAddr,
    pub data_dir: std::path::PathBuf,
    /// A client sending the `admin` key.
    pub client: reqwest::Client,
    /// The keys of the server's keys file by id (see [`test_keys`]); empty when the test
    /// configured its own keys file.
    pub keys: std::collections::BTreeMap<String, String>,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl Running {
    /// Bind, serve, and wait until `/readyz` answers 200 (models loaded). Unless the config
    /// names a keys file, the server gets one with [`test_keys`] and `client` sends `admin`.
    pub async fn start(mut config: Config) -> Self {
        let data_dir = config.data_dir.clone();
        let mut keys = std::collections::BTreeMap::new();
        if config.api_keys_file.is_none() {
            let (text, k) = test_keys();
            std::fs::create_dir_all(&data_dir).unwrap();
            let file = data_dir.join("test-api-keys");
            std::fs::write(&file, text).unwrap();
            config.api_keys_file = Some(file);
            keys = k;
        }
        let client = keys
            .get("admin")
            .map_or_else(reqwest::Client::new, |k| keyed_client(k));
        let server = Server::bind(config).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        let me = Self {
            addr,
            data_dir,
            client,
            keys,
            stop: Some(tx),
            task,
        };
        me.wait_ready().await;
        me
    }

    /// A client sending the key with id `id` (see [`test_keys`]).
    pub fn client_for(&self, id: &str) -> reqwest::Client {
        keyed_client(&self.keys[id])
    }

    /// Absolute URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    async fn wait_ready(&self) {
        for _ in 0..12_000 {
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            assert!(!self.task.is_finished(), "server stopped during start-up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("server never became ready");
    }

    /// Send a request; the status and the JSON body (`null` when the body is not JSON).
    pub async fn json(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        send_json(request).await
    }

    /// POST a raw body as `application/json`.
    pub async fn post_json(&self, path: &str, body: &str) -> (StatusCode, Value) {
        self.json(
            self.client
                .post(self.url(path))
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    /// The `/metrics` exposition text.
    /// Create a subject named `name` with the admin key: its id (the creation must succeed).
    pub async fn new_subject(&self, name: &str) -> String {
        let (status, v) = send_json(
            self.client
                .post(self.url("/v1/subjects"))
                .json(&serde_json::json!({ "name": name })),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    /// Enrol the sample face `file` (runtime/testdata/faces) into subject `id` with `client`.
    pub async fn enrol_sample(
        &self,
        client: &reqwest::Client,
        id: &str,
        file: &str,
    ) -> (StatusCode, Value) {
        let form = reqwest::multipart::Form::new().part(
            "image",
            reqwest::multipart::Part::bytes(face(file)).file_name(file.to_owned()),
        );
        send_json(
            client
                .post(self.url(&format!("/v1/subjects/{id}/faces")))
                .multipart(form),
        )
        .await
    }

    /// `POST /v1/score` with `client` must be answered 200: the server still serves.
    pub async fn assert_scores(&self, client: &reqwest::Client) {
        let (status, v) = send_json(
            client
                .post(self.url("/v1/score"))
                .json(&serde_json::json!({ "features": [1, 0.5, -1] })),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "/v1/score failed (server stopped serving?): {v}"
        );
    }

    /// Open a raw connection and send a `POST path` request's headers (with `key` as a bearer
    /// token when given, `content-type` and `framing`: the `content-length` or
    /// `transfer-encoding` line and any more), then `body_start`; the caller sends the rest.
    pub async fn open_request(
        &self,
        path: &str,
        key: Option<&str>,
        content_type: &str,
        framing: &str,
        body_start: &[u8],
    ) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let auth = key.map_or(String::new(), |k| format!("authorization: Bearer {k}\r\n"));
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\n{auth}content-type: {content_type}\r\n{framing}\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body_start).await.unwrap();
        stream
    }

    pub async fn metrics(&self) -> String {
        self.metrics_as(&self.client).await
    }

    /// `/metrics` as `client`'s key sees it (an open scrape without a `metrics` or `admin` key
    /// leaves out the per-attempt scores and per-key series).
    pub async fn metrics_as(&self, client: &reqwest::Client) -> String {
        client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Stop the server, wait for it to exit cleanly, and remove its data directory.
    pub async fn stop(self) {
        let data_dir = self.data_dir.clone();
        self.stop_keeping_data().await;
        let _ = std::fs::remove_dir_all(&data_dir);
    }

    /// Stop the server and wait for it to exit, keeping its data directory (to start another
    /// on it).
    pub async fn stop_keeping_data(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server did not stop")
            .unwrap()
            .unwrap();
    }
}

/// Write `config`'s audit trail to a file in the returned directory (read it with
/// [`audit_events`]).
pub fn audited(config: &mut facekey_runtime::config::Config) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    config.audit_log = dir.path().join("audit.log").display().to_string();
    dir
}

/// The audit events of `action` in the trail [`audited`] set up in `dir`, in order.
pub fn audit_events(dir: &tempfile::TempDir, action: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.path().join("audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["action"] == action)
        .collect()
}

/// Wait up to `within` for `done` (checked every 10 ms); whether it came true.
pub async fn eventually(within: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    done()
}
