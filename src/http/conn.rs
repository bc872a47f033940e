//! The connections of `serve`: accepted by our own loop (on hyper-util's connection
//! builder, as `axum::serve` does inside) so that no client holds a socket it does not use.
//!
//! - **Caps.** At most `--max-connections` in all and `--max-connections-per-address` per
//!   client address (an IPv6 client counts per /64, the block one host usually has). A
//!   connection beyond a cap is answered (`503`, or `429` for the per-address cap, with
//!   `Retry-After`) and closed; while as many refusals are under way as connections are
//!   allowed, further connections are closed at once.
//! - **Timeouts.** A new connection must send its first request's headers within
//!   `--header-read-timeout`; a kept-alive one may wait `--keep-alive-timeout` for its next
//!   request, whose headers then get `--header-read-timeout` from their first byte. (The
//!   body has `--body-read-timeout`, enforced where bodies are read: see `body.rs`.)
//!   hyper's own `header_read_timeout` cannot do this: it runs from the end of one
//!   response to the next request's headers, so it would also be the keep-alive timeout,
//!   and a keep-alive timeout as short as a header timeout makes proxies and client pools
//!   (which keep connections for a minute or more) race the server's close.
//!
//! While a request is in flight (its response body not yet sent, e.g. a streaming tool
//! call) neither timeout applies: those are bounded by the sessions' own limits.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// `--header-read-timeout`, `--keep-alive-timeout` and the connection caps.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub max_connections: usize,
    /// 0: no per-address cap.
    pub max_per_address: usize,
}

/// The client address a request came from, in the request's extensions (for the
/// per-address limits of authentication).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub IpAddr);

impl Peer {
    /// The address limits count by: IPv4 (an IPv4-mapped IPv6 address is IPv4), or the
    /// /64 of an IPv6 address (one host usually has a whole /64 to pick addresses from).
    pub fn key(self) -> IpAddr {
        match self.0 {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    IpAddr::V6(Ipv6Addr::from(prefix))
                }
            },
        }
    }

    /// The peer of a request (unspecified if the connection layer did not say: tests).
    pub fn of(extensions: &axum::http::Extensions) -> Peer {
        extensions
            .get::<Peer>()
            .copied()
            .unwrap_or(Peer(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)))
    }
}

/// Who holds a connection slot. A [`tokio::sync::Semaphore`] caps the total (its permit is
/// the slot, given back when dropped); the per-address counts are a plain map, because
/// a semaphore per address would need the same map to find it and to forget it again.
struct Caps {
    total: Arc<Semaphore>,
    /// Refusals under way (each takes at most `--header-read-timeout`).
    refusing: Arc<Semaphore>,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    max_per_address: usize,
}

/// A connection's place within the caps, given back when the connection ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    address: IpAddr,
    caps: Arc<Caps>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.caps.per_address.lock();
        if let Some(count) = map.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.address);
            }
        }
    }
}

enum Admission {
    Admitted(Slot),
    /// Answer this status and close.
    Refused(StatusCode, &'static str, OwnedSemaphorePermit),
    /// Too many refusals under way already: just close.
    Dropped,
}

impl Caps {
    fn admit(self: &Arc<Self>, peer: Peer) -> Admission {
        let address = peer.key();
        let refusal = |status, why| match self.refusing.clone().try_acquire_owned() {
            Ok(permit) => Admission::Refused(status, why, permit),
            Err(_) => Admission::Dropped,
        };
        let mut map = self.per_address.lock();
        let own = map.get(&address).copied().unwrap_or(0);
        if self.max_per_address > 0 && own >= self.max_per_address {
            return refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "too many open connections from your address (see --max-connections-per-address)",
            );
        }
        let Ok(permit) = self.total.clone().try_acquire_owned() else {
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server has its maximum of open connections (see --max-connections)",
            );
        };
        *map.entry(address).or_default() += 1;
        Admission::Admitted(Slot {
            _permit: permit,
            address,
            caps: self.clone(),
        })
    }
}

/// What a connection is doing, for its timeouts.
struct Activity {
    state: Mutex<ActivityState>,
    /// Woken (`notify_one`, which keeps the wake-up if nobody waits yet) on every change.
    changed: Notify,
}

struct ActivityState {
    /// Requests whose response has not been sent yet.
    in_flight: usize,
    /// Requests begun on this connection.
    served: usize,
    /// When the connection was accepted, or its last response was sent.
    idle_since: Instant,
    /// When bytes of a next request began to arrive while nothing was in flight.
    head_since: Option<Instant>,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                served: 0,
                idle_since: Instant::now(),
                head_since: None,
            }),
            changed: Notify::new(),
        })
    }

    /// A request begins (its headers are read); it ends when the guard is dropped.
    fn begin(self: &Arc<Self>) -> InFlight {
        let mut state = self.state.lock();
        state.in_flight += 1;
        state.served += 1;
        state.head_since = None;
        drop(state);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    fn bytes_arrived(&self) {
        let mut state = self.state.lock();
        if state.in_flight == 0 && state.head_since.is_none() {
            state.head_since = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// When the connection is to be closed if nothing changes (never while a request is
    /// in flight).
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        let state = self.state.lock();
        if state.in_flight > 0 {
            return None;
        }
        Some(match (state.served, state.head_since) {
            (0, _) => state.idle_since + limits.header_read_timeout,
            (_, Some(head)) => head + limits.header_read_timeout,
            (_, None) => state.idle_since + limits.keep_alive_timeout,
        })
    }
}

/// A request in flight, until its response body has been sent (or dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
            state.head_since = None;
        }
        drop(state);
        self.0.changed.notify_one();
    }
}

/// A response body that holds its request's [`InFlight`] until it is sent.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The socket, noting when bytes arrive (the start of a next request's headers).
struct Watched {
    tcp: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_arrived();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// Accepts connections until `stop` is cancelled (then closes the listening socket and
/// cancels `listener_closed`), and serves each with `router` until it ends; returns once
/// every connection has ended. On `stop`, connections finish the response in flight and
/// close.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
    listener_closed: CancellationToken,
) {
    let caps = Arc::new(Caps {
        total: Arc::new(Semaphore::new(limits.max_connections)),
        refusing: Arc::new(Semaphore::new(limits.max_connections)),
        per_address: Mutex::default(),
        max_per_address: limits.max_per_address,
    });
    let connections = TaskTracker::new();
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_error(err).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        // Without TCP_NODELAY every streamed response stalls ~40 ms (Nagle + delayed ACK).
        let _ = tcp.set_nodelay(true);
        let peer = Peer(remote.ip());
        match caps.admit(peer) {
            Admission::Admitted(slot) => {
                connections.spawn(connection(
                    tcp,
                    remote,
                    router.clone(),
                    limits,
                    stop.clone(),
                    slot,
                ));
            }
            Admission::Refused(status, why, permit) => {
                tracing::info!(%remote, %status, why, "connection refused");
                connections.spawn(refuse(tcp, status, why, limits.header_read_timeout, permit));
            }
            Admission::Dropped => {
                tracing::debug!(%remote, "dropping a connection at once: too many refusals under way");
            }
        }
    }
    drop(listener);
    listener_closed.cancel();
    connections.close();
    connections.wait().await;
}

/// Errors of `accept` are about one connection (it was reset before we took it) or
/// about resources (out of file descriptors): the latter would repeat at once, so wait
/// a moment before accepting again (as `axum::serve` does).
async fn accept_error(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %err, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Serves one connection with the timeouts above.
async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
    slot: Slot,
) {
    let activity = Activity::new();
    let io = TokioIo::new(Watched {
        tcp,
        activity: activity.clone(),
    });
    let peer = Peer(remote.ip());
    let service_activity = activity.clone();
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let in_flight = service_activity.begin();
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(peer);
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await?;
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(Tracked {
                        body,
                        _in_flight: in_flight,
                    })
                }))
            }
        });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Our own timeouts, above, not hyper's (see the module's comment).
    builder.http1().header_read_timeout(None);
    let conn = builder.serve_connection_with_upgrades(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        let changed = activity.changed.notified();
        let deadline = activity.deadline(&limits);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%remote, error = %err, "connection error");
                }
                break;
            }
            _ = changed => {}
            _ = sleep_until(deadline), if deadline.is_some() => {
                // Nothing is in flight: closing now cuts no response short.
                if activity.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(%remote, "closing a connection that sent no request in time");
                    break;
                }
            }
            _ = stop.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    // The slot is free before the socket closes (when `conn` is dropped): a client that
    // saw the close finds it free.
    drop(slot);
    tracing::trace!(%remote, "connection ended");
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

/// Answers the first request of a connection beyond a cap with `status`, and closes it.
async fn refuse(
    tcp: TcpStream,
    status: StatusCode,
    why: &'static str,
    header_read_timeout: Duration,
    _permit: OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |_request| async move {
        let mut response: Response = super::body::error_response(status, why);
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        Ok::<_, Infallible>(response)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(TokioIo::new(tcp), service);
    let _ = tokio::time::timeout(header_read_timeout, conn).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_count_by_host() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(Peer(v4).key(), v4);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(Peer(mapped).key(), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(Peer(a).key(), Peer(b).key());
        assert_eq!(Peer(a).key(), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn caps_per_address_and_in_all() {
        let caps = Arc::new(Caps {
            total: Arc::new(Semaphore::new(3)),
            refusing: Arc::new(Semaphore::new(1)),
            per_address: Mutex::default(),
            max_per_address: 2,
        });
        let (a, b) = (
            Peer("192.0.2.1".parse().unwrap()),
            Peer("192.0.2.2".parse().unwrap()),
        );
        let a1 = caps.admit(a);
        let _a2 = caps.admit(a);
        assert!(matches!(
            caps.admit(a),
            Admission::Refused(StatusCode::TOO_MANY_REQUESTS, ..)
        ));
        let _b1 = caps.admit(b);
        let refused = caps.admit(b);
        assert!(matches!(
            refused,
            Admission::Refused(StatusCode::SERVICE_UNAVAILABLE, ..)
        ));
        // One refusal under way is the most: the next connection is just closed.
        assert!(matches!(caps.admit(b), Admission::Dropped));
        drop(refused);
        drop(a1);
        assert!(matches!(caps.admit(b), Admission::Admitted(_)));
    }
}
