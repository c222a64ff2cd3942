//! The HTTP accept loop: at most `FACEKEY_MAX_CONNECTIONS` open connections (beyond it, new
//! connections wait in the kernel's backlog instead of each costing a task and buffers); a
//! header-read timeout (`FACEKEY_HEADER_READ_TIMEOUT_SECS`) for a request's headers and for a new
//! connection's first byte, and an idle timeout for connections with no traffic (HTTP/1.1) or no
//! request (HTTP/2) for that long, so slow, stalled, silent or merely pinging clients cannot
//! hold connections for ever; HTTP/1.1 and h2c; the peer address
//! for handlers (`ConnectInfo`); graceful shutdown that lets open connections finish their
//! requests. `axum::serve` sets none of these limits, hence this loop.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, Version};
use futures::future::Either;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
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
    /// A connection idle for this long (at most twice this) is closed (keep-alive connections
    /// between requests; longer than any request may take): over HTTP/1.1 one with no bytes
    /// read or written, over HTTP/2 one with no request in flight, started or answered.
    pub idle_timeout: Duration,
    /// A connection this old (90 to 110 % of it, spread by the client's port) is closed
    /// gracefully: over HTTP/2 with GOAWAY once its streams are answered, over HTTP/1.1 after
    /// the response in flight (at once when idle). Behind a Service a connection stays with the
    /// replica it reached, so this spreads long-lived clients over the replicas a scale-out
    /// added. `None`: never.
    pub max_age: Option<Duration>,
}

/// `age` for the connection from `peer`: 90 to 110 % of it, by the client's port, so the
/// connections a client opened at once do not all close at once.
fn spread_age(age: Duration, peer: SocketAddr) -> Duration {
    let share = 0.9 + 0.2 * f64::from(peer.port() % 1000) / 999.0;
    age.mul_f64(share)
}

/// The client preface that opens an HTTP/2 connection (hyper-util's `auto` builder tells the
/// protocols apart by it the same way).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Largest HTTP/1 read buffer of a connection, so the largest request head.
const MAX_HTTP1_BUFFER: usize = 64 * 1024;

/// What the first bytes read say the connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Not known yet: this many bytes of [`H2_PREFACE`] have matched.
    Sniffing(usize),
    Http1,
    Http2,
}

impl Protocol {
    /// The protocol once `data` (the next bytes read) has been seen.
    fn after(self, data: &[u8]) -> Self {
        let Self::Sniffing(matched) = self else {
            return self;
        };
        let rest = H2_PREFACE.get(matched..).unwrap_or_default();
        let n = data.len().min(rest.len());
        if data.get(..n) != rest.get(..n) {
            Self::Http1
        } else if n == rest.len() {
            Self::Http2
        } else {
            Self::Sniffing(matched + n)
        }
    }
}

/// A connection's HTTP/2 requests, for its [`Deadline`]. On HTTP/2 bytes are no sign of use:
/// the server sends keep-alive PINGs (`keep_alive_interval`, idle connections included) and
/// the client acknowledges them, so a connection with no request for ever would never fall
/// silent, and 1024 such connections without a key would hold every place. Requests are: one
/// being handled, or an answer whose body goes out. An answer the client never takes (a flow
/// control window it never opens) is no use: its body makes no progress, so it does not keep
/// the connection open past the idle timeout.
#[derive(Debug, Default)]
struct Requests {
    /// Requests whose handler has not answered yet.
    handling: AtomicUsize,
    /// A request started or was answered, or an answer's body went out in part or ended, since
    /// the deadline last looked.
    seen: AtomicBool,
}

impl Requests {
    /// Whether a request was being handled, or anything happened to one, since the last call.
    fn busy(&self) -> bool {
        self.seen.swap(false, Ordering::Relaxed) || self.handling.load(Ordering::Relaxed) > 0
    }

    fn saw(&self) {
        self.seen.store(true, Ordering::Relaxed);
    }
}

/// One HTTP/2 request from its call until its handler answers.
#[derive(Debug)]
struct InFlight(Arc<Requests>);

impl InFlight {
    fn new(requests: Arc<Requests>) -> Self {
        requests.handling.fetch_add(1, Ordering::Relaxed);
        requests.saw();
        Self(requests)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
        self.0.saw();
    }
}

/// An HTTP/2 answer's body, marking its connection used each time part of it goes out and
/// when it ends or is dropped.
struct Tracked {
    inner: Body,
    requests: Arc<Requests>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.requests.saw();
    }
}

impl hyper::body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if frame.is_ready() {
            self.requests.saw();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A request's answer, its body made [`Tracked`] when the request is tracked.
    struct Answer<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F: Future<Output = Result<Response<Body>, Infallible>>> Future for Answer<F> {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.inner.poll(cx));
        // Answered: the request is no longer being handled; its body counts as it goes out.
        Poll::Ready(Ok(match this.in_flight.take() {
            Some(in_flight) => {
                let requests = in_flight.0.clone();
                drop(in_flight);
                response.map(|inner| Body::new(Tracked { inner, requests }))
            }
            None => response,
        }))
    }
}

/// A connection that fails its reads once it has been idle too long: first for `first_byte`
/// (a new connection that sends nothing), then for `idle` with no bytes read or written on
/// HTTP/1.1, or no request in flight, started or answered on HTTP/2 ([`Requests`]: there its
/// PINGs and their acks flow on an idle connection). Hyper then closes it, which frees its
/// place. Use only sets a flag; the timer is re-armed when it fires after use, so a busy
/// connection costs no timer work per read or write, and an idle one is closed between `idle`
/// and twice `idle` after its last use.
struct Deadline<T> {
    inner: T,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    /// Bytes read or written since the timer last fired.
    active: bool,
    /// Still in the first period (`first_byte`), where any byte counts.
    first: bool,
    protocol: Protocol,
    requests: Arc<Requests>,
}

impl<T> Deadline<T> {
    fn new(inner: T, first_byte: Duration, idle: Duration, requests: Arc<Requests>) -> Self {
        Self {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(first_byte)),
            active: false,
            first: true,
            protocol: Protocol::Sniffing(0),
            requests,
        }
    }

    /// A write that waits (the client reads nothing: hyper then reads no more of its requests
    /// either) fails once the connection has been idle a whole period, as a read does.
    fn unless_expired<R>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if r.is_pending() && self.expired(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection blocked for too long",
            )));
        }
        r
    }

    /// Whether the connection has been idle for a whole period; if not, the timer is re-armed
    /// (with `cx`'s waker registered) when it has run out.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let bytes = std::mem::take(&mut self.active);
            let requests = self.requests.busy();
            let first = std::mem::take(&mut self.first);
            let used = match self.protocol {
                _ if first => bytes,
                Protocol::Http1 => bytes,
                Protocol::Http2 => requests,
                // Still not told apart after the first period: only a client trickling the
                // HTTP/2 preface byte by byte gets here (a real one sends it at once).
                Protocol::Sniffing(_) => false,
            };
            if !used {
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
                if let Some(data) = buf.filled().get(before..).filter(|d| !d.is_empty()) {
                    self.active = true;
                    self.protocol = self.protocol.after(data);
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
        self.unless_expired(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.unless_expired(cx, r)
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
        self.unless_expired(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// One connection's service: the API stack cloned once per connection and called in place for
/// each request (hyper-util's `TowerToHyperService` clones the whole stack, and with it every
/// reference count it holds, for every request). Each request gets the peer address
/// (`ConnectInfo`) for the handlers; an HTTP/2 request is counted in the connection's
/// [`Requests`] until its answer is sent.
struct ConnectionService<S> {
    service: Mutex<S>,
    peer: SocketAddr,
    requests: Arc<Requests>,
}

impl<S> hyper::service::Service<Request<Incoming>> for ConnectionService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Answer<Either<S::Future, Oneshot<S, Request<Body>>>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight =
            (req.version() == Version::HTTP_2).then(|| InFlight::new(self.requests.clone()));
        let mut req = req.map(Body::new);
        req.extensions_mut()
            .insert(ConnectInfo::<SocketAddr>(self.peer));
        let mut service = self
            .service
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The API stack is always ready; should it ever not be, a clone waits for readiness.
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let inner = match service.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => Either::Left(service.call(req)),
            Poll::Pending => Either::Right(service.clone().oneshot(req)),
        };
        Answer { inner, in_flight }
    }
}

/// Serve `app` on `listener` until `shutdown` resolves, then stop accepting and wait for the
/// open connections to finish their in-flight requests (the caller bounds that wait). Connections
/// older than [`ConnectionLimits::max_age`] are closed the same way.
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
    let places = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(places));
    // Tells every connection to finish gracefully; each holds its place until it has.
    let (drain, drained) = tokio::sync::watch::channel(false);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // A request head may take 64 KiB (hyper's default, ~400 KiB per connection, would let
        // 1024 connections trickling headers hold ~400 MB).
        .max_buf_size(MAX_HTTP1_BUFFER);
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
        let requests = Arc::new(Requests::default());
        let stream = Deadline::new(
            stream,
            limits.header_read_timeout,
            limits.idle_timeout,
            requests.clone(),
        );
        let service = ConnectionService {
            service: Mutex::new(app.clone()),
            peer,
            requests,
        };
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let open = metrics.http_connections.clone();
        open.inc();
        let max_age = limits.max_age.map(|age| spread_age(age, peer));
        let mut drained = drained.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let aged = async {
                match max_age {
                    Some(age) => tokio::time::sleep(age).await,
                    None => std::future::pending().await,
                }
            };
            // The value seen is dropped at once (a read guard held across the drain is not Send).
            let drain = async {
                let _ = drained.wait_for(|d| *d).await.map(drop);
            };
            // Closing gracefully waits for the requests in flight, at most the idle timeout
            // (longer than any request may take): an answer that cannot go out is dropped.
            let ended = tokio::select! {
                ended = connection.as_mut() => Some(ended),
                () = aged => {
                    connection.as_mut().graceful_shutdown();
                    tokio::time::timeout(limits.idle_timeout, connection.as_mut()).await.ok()
                }
                () = drain => {
                    connection.as_mut().graceful_shutdown();
                    tokio::time::timeout(limits.idle_timeout, connection.as_mut()).await.ok()
                }
            };
            match ended {
                Some(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                }
                None => {
                    tracing::debug!(peer = %peer, "connection closed: its requests outlived the idle timeout")
                }
                Some(Ok(())) => {}
            }
            open.dec();
            drop(permit);
        });
    }
    drop(listener);
    let _ = drain.send(true);
    // Every place back: every connection has finished.
    let _ = permits
        .acquire_many(u32::try_from(places).unwrap_or(u32::MAX))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http2_preface_is_told_apart_in_pieces() {
        let sniff = |pieces: &[&[u8]]| {
            pieces
                .iter()
                .fold(Protocol::Sniffing(0), |p, piece| p.after(piece))
        };
        assert_eq!(sniff(&[H2_PREFACE]), Protocol::Http2);
        assert_eq!(
            sniff(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04"]),
            Protocol::Http2
        );
        assert_eq!(
            sniff(&[b"P", b"RI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n"]),
            Protocol::Http2
        );
        assert_eq!(sniff(&[b"PRI * HTTP/2.0\r\n"]), Protocol::Sniffing(16));
        assert_eq!(sniff(&[b"GET / HTTP/1.1\r\n"]), Protocol::Http1);
        assert_eq!(sniff(&[b"PRI", b" / HTTP/1.1\r\n"]), Protocol::Http1);
        assert_eq!(sniff(&[b"POST"]), Protocol::Http1);
        // Decided once: later bytes change nothing.
        assert_eq!(Protocol::Http1.after(H2_PREFACE), Protocol::Http1);
        assert_eq!(Protocol::Http2.after(b"GET"), Protocol::Http2);
    }
}
