//! What the fuzz targets share: the runtime's real HTTP application (every middleware, the
//! extractors, the error mapping), built once per fuzzing process over a fresh data directory
//! with its models not loaded, so a request is parsed and validated exactly as in production
//! and answered without inference; and the property every answer must have.
#![forbid(unsafe_code)]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, header};
use facekey_runtime::auth::Scope;
use facekey_runtime::auth::keys::{key_line, new_key};
use facekey_runtime::config::Config;
use facekey_runtime::server::Server;
use tower::ServiceExt as _;

/// The boundary the multipart target's bodies use (and its seeds are written with).
pub const BOUNDARY: &str = "facekeyfuzz";

/// The runtime's router and what it needs to answer.
pub struct App {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    key: String,
    _dir: tempfile::TempDir,
}

/// The application, built on first use.
pub fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = new_key().expect("key");
        let keys = dir.path().join("api-keys");
        let line = key_line("fuzz", &[Scope::Admin].into(), &key, None).expect("key line");
        std::fs::write(&keys, format!("{line}\n")).expect("keys file");
        let mut config = Config::for_tests();
        config.data_dir = dir.path().join("data");
        config.api_keys_file = Some(keys);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let router = rt.block_on(async {
            let server = Server::bind(config).await.expect("bind");
            facekey_runtime::api::router(server.state())
        });
        App {
            rt,
            router,
            key,
            _dir: dir,
        }
    })
}

impl App {
    /// Send one request through the application; the status and body of the answer.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Vec<u8>) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.key))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .expect("request");
        self.rt.block_on(async {
            let response = self
                .router
                .clone()
                .oneshot(request)
                .await
                .expect("infallible");
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            (status, body)
        })
    }
}

/// The property of every answer to any input: never a 500 (a panic caught by the server, or an
/// error the API did not map), and every error is JSON with a code. 503 is allowed: the models
/// are not loaded here, so requests that pass validation end there.
pub fn check_answer(status: u16, body: &[u8]) {
    assert_ne!(
        status,
        500,
        "internal error for a request: {}",
        String::from_utf8_lossy(body)
    );
    if status >= 400 {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "{status} answer is not JSON ({e}): {}",
                String::from_utf8_lossy(body)
            )
        });
        assert!(
            v["error"]["code"].is_string(),
            "{status} answer without an error code: {v}"
        );
    }
}
