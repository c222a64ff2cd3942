//! The HTTP accept loop: at most `FACEKEY_MAX_CONNECTIONS` open connections (beyond it, new
//! connections wait in the kernel's backlog instead of each costing a task and buffers); a
//! header-read timeout (`FACEKEY_HEADER_READ_TIMEOUT_SECS`) for a request's headers and for a new
//! connection's first byte, and an idle timeout for connections with no traffic at all, so slow,
//! stalled or silent clients cannot hold connections for ever; HTTP/1.1 and h2c; the peer address
//! for handlers (`ConnectInfo`); graceful shutdown that lets open connections finish their
//! requests. `axum::serve` sets none of these limits, hence this loop.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use futures::future::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::util::Oneshot;
use tower::{Service, ServiceExt as _};

use crate::metrics::Metrics;

/// Connection limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest wait for a request's headers, and for a new connection's first byte.
    pub header_read_timeout: Duration,
    /// A connection with no bytes read or written for this long (at most twice this) is
    /// closed (keep-alive connections between requests; longer than any request may take).
    pub idle_timeout: Duration,
}

/// A connection that fails its reads once it has been silent too long: first for
/// `first_byte` (a new connection that sends nothing), then for `idle` with no bytes read or
/// written. Hyper then closes it, which frees its place. Traffic only sets a flag; the timer is
/// re-armed when it fires after traffic, so a busy connection costs no timer work per read or
/// write, and a silent one is closed between `idle` and twice `idle` after its last byte.
struct Deadline<T> {
    inner: T,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    active: bool,
}

impl<T> Deadline<T> {
    fn new(inner: T, first_byte: Duration, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(first_byte)),
            active: false,
        }
    }

    /// Whether the connection has been silent for a whole period; if not, the timer is
    /// re-armed (with `cx`'s waker registered) when it has run out.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if !std::mem::take(&mut self.active) {
                return true;
            }
            let next = Instant::now() + self.idle;
            self.timer.as_mut().reset(next);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Deadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.active = true;
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection silent for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Deadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.active = true;
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.active = true;
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// One connection's service: the API stack cloned once per connection and called in place for
/// each request (hyper-util's `TowerToHyperService` clones the whole stack, and with it every
/// reference count it holds, for every request). Each request gets the peer address
/// (`ConnectInfo`) for the handlers.
struct ConnectionService<S> {
    service: Mutex<S>,
    peer: SocketAddr,
}

impl<S> hyper::service::Service<Request<Incoming>> for ConnectionService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, Oneshot<S, Request<Body>>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let mut req = req.map(Body::new);
        req.extensions_mut()
            .insert(ConnectInfo::<SocketAddr>(self.peer));
        let mut service = self
            .service
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The API stack is always ready; should it ever not be, a clone waits for readiness.
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        match service.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => Either::Left(service.call(req)),
            Poll::Pending => Either::Right(service.clone().oneshot(req)),
        }
    }
}

/// Serve `app` on `listener` until `shutdown` resolves, then stop accepting and wait for the
/// open connections to finish their in-flight requests (the caller bounds that wait).
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    limits: ConnectionLimits,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send,
) where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_read_timeout))
        .keep_alive_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A free place first: at the limit, stop accepting (the kernel queues new connections).
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let stream = Deadline::new(stream, limits.header_read_timeout, limits.idle_timeout);
        let service = ConnectionService {
            service: Mutex::new(app.clone()),
            peer,
        };
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let open = metrics.http_connections.clone();
        open.inc();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
            open.dec();
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
