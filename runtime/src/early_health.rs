//! Probe answers while the runtime starts. Opening the template store can take minutes (a
//! migration waiting for another replica's, a large index to read from PostgreSQL), and until
//! then the server does not serve: a kubelet probing `/healthz` on the operations listener would
//! see no answer and restart the pod, which then starts the wait again. While the store opens,
//! [`EarlyHealth`] answers on that listener: `/healthz` 200 (the process is alive), anything else
//! 503 `not_ready`, one request per connection; then it hands the listener to the server.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::api::error::{ErrorBody, ErrorDetail};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

/// Connections answered at once; more wait in the listener's backlog.
const PLACES: usize = 16;
/// Longest time one connection may take, from its first byte to its answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// The probe answerer of a listener the server has not taken yet. Dropped without
/// [`Self::finish`] (start-up failed), it stops and closes the listener.
pub struct EarlyHealth {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<TcpListener>>,
}

impl EarlyHealth {
    /// Answer probes on `listener` until [`Self::finish`].
    pub fn start(listener: TcpListener) -> Self {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let places = Arc::new(Semaphore::new(PLACES));
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        // Past the places, the connection is closed unanswered (a probe retries).
                        if let Ok(place) = places.clone().try_acquire_owned() {
                            tokio::spawn(async move {
                                answer(stream).await;
                                drop(place);
                            });
                        }
                    }
                }
            }
            listener
        });
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stop answering and hand the listener back (connections not yet accepted stay in its
    /// backlog for the server); `None` if the answering task failed.
    pub async fn finish(mut self) -> Option<TcpListener> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take()?.await.ok()
    }
}

impl Drop for EarlyHealth {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Serve one request on `stream` within [`CONNECTION_TIMEOUT`], then close it.
async fn answer(stream: TcpStream) {
    let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
        Ok::<_, Infallible>(early_response(request.uri().path()))
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
}

/// The answer to a request for `path` while the runtime starts: the server's `/healthz` body,
/// else the API's error shape (`ErrorBody`) with code `not_ready`.
fn early_response(path: &str) -> Response<Full<Bytes>> {
    let (status, body) = if path == "/healthz" {
        (
            StatusCode::OK,
            serde_json::json!({ "status": "ok" }).to_string(),
        )
    } else {
        let body = ErrorBody {
            error: ErrorDetail {
                code: "not_ready",
                message: "the runtime is starting: its template store is opening",
            },
        };
        let text = serde_json::to_string(&body).unwrap_or_default();
        (StatusCode::SERVICE_UNAVAILABLE, text)
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_healthz_is_ok_while_starting() {
        assert_eq!(early_response("/healthz").status(), StatusCode::OK);
        for path in ["/readyz", "/metrics", "/v1/verify", "/"] {
            assert_eq!(
                early_response(path).status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn bodies_are_the_servers_shapes() {
        use http_body_util::BodyExt;
        let json = |r: Response<Full<Bytes>>| async move {
            let bytes = r.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
        };
        assert_eq!(json(early_response("/healthz")).await["status"], "ok");
        let v = json(early_response("/readyz")).await;
        assert_eq!(v["error"]["code"], "not_ready");
        assert!(v["error"]["message"].as_str().unwrap().contains("starting"));
    }
}
