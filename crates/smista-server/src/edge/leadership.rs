//! Whether this process may still answer routing calls: the active node's leadership as its own
//! monotonic clock counts it (`[cluster] failover`), checked when a call arrives and again when
//! each frame of its reply is about to be sent.
//!
//! The leadership lease is renewed by `failover::keep`, which moves [`Leadership::valid_until`]
//! on after each renewal (counted from *before* the renewal was sent, less a renewal period of
//! margin, so it is never later than the lease in the database). A process that was stopped
//! (SIGSTOP, a frozen VM) past that instant and then continued must not answer anything from
//! memory, not even before its renewal task has had a chance to run: another node may be the
//! active by now. [`LeaderLayer`] wraps every `smista.v1` call; a call that arrives after the
//! instant, or whose reply frames would leave after it, gets UNAVAILABLE instead (the client
//! retries on the active, which it finds through the standbys' `smista-active`).
//!
//! A single node, and the nodes sharing budgets by leases, have no leadership to lose: they run
//! without the layer.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::Frame;
use tonic::Status;

/// The instant until which this node may answer as the active.
#[derive(Debug)]
pub struct Leadership {
    base: Instant,
    /// Nanoseconds after `base`; 0: never (revoked).
    until_ns: AtomicU64,
}

impl Leadership {
    /// A leadership valid until `until` (monotonic).
    #[must_use]
    pub fn until(until: Instant) -> Arc<Leadership> {
        let base = Instant::now();
        let l = Leadership { base, until_ns: AtomicU64::new(0) };
        l.extend(until);
        Arc::new(l)
    }

    /// Moves the end of the leadership to `until` (after a renewal).
    pub fn extend(&self, until: Instant) {
        let ns = u64::try_from(until.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX).max(1);
        self.until_ns.store(ns, Ordering::Release);
    }

    /// Ends the leadership now, for good (lost, or handed over).
    pub fn revoke(&self) {
        self.until_ns.store(0, Ordering::Release);
    }

    /// Whether this node may still answer as the active, now.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        let until = self.until_ns.load(Ordering::Acquire);
        until != 0 && u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX) < until
    }

    /// The instant the leadership ends (`None`: revoked).
    #[must_use]
    pub fn valid_until(&self) -> Option<Instant> {
        match self.until_ns.load(Ordering::Acquire) {
            0 => None,
            ns => Some(self.base + std::time::Duration::from_nanos(ns)),
        }
    }
}

/// The status of a call this node may no longer answer.
#[must_use]
pub fn not_active() -> Status {
    Status::unavailable("this node is no longer the active node (its leadership lapsed); retry on the group's active")
}

/// Refuses every `smista.v1` call, and every frame of a reply, once the leadership has lapsed
/// (`None`: a node without leadership; calls pass).
#[derive(Clone, Debug)]
pub struct LeaderLayer(pub Option<Arc<Leadership>>);

impl<S> tower::Layer<S> for LeaderLayer {
    type Service = LeaderService<S>;
    fn layer(&self, inner: S) -> LeaderService<S> {
        LeaderService { inner, lead: self.0.clone() }
    }
}

/// See [`LeaderLayer`].
#[derive(Clone, Debug)]
pub struct LeaderService<S> {
    inner: S,
    lead: Option<Arc<Leadership>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for LeaderService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(lead) = self.lead.clone().filter(|_| req.uri().path().starts_with("/smista.v1.")) else {
            return Box::pin(self.inner.call(req));
        };
        if !lead.is_valid() {
            return Box::pin(async move { Ok(crate::edge::auth::refuse(req.into_body(), not_active()).await) });
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            if !lead.is_valid() {
                return Ok(not_active().into_http());
            }
            Ok(resp.map(|body| tonic::body::Body::new(Checked { inner: body, lead, ended: false })))
        })
    }
}

/// A reply body whose every frame is sent only while the leadership holds; once it has
/// lapsed, the reply ends with UNAVAILABLE in its trailers instead of its next frame.
struct Checked {
    inner: tonic::body::Body,
    lead: Arc<Leadership>,
    ended: bool,
}

impl http_body::Body for Checked {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) if !self.lead.is_valid() => {
                drop(frame);
                self.ended = true;
                let mut trailers = http::HeaderMap::new();
                // The status as gRPC trailers (`grpc-status`, `grpc-message`).
                let _ = not_active().add_header(&mut trailers);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lapses_at_its_instant_and_when_revoked() {
        let l = Leadership::until(Instant::now() + Duration::from_secs(60));
        assert!(l.is_valid());
        l.extend(Instant::now() - Duration::from_millis(1));
        assert!(!l.is_valid(), "an instant in the past is a lapsed leadership");
        l.extend(Instant::now() + Duration::from_secs(60));
        assert!(l.is_valid());
        l.revoke();
        assert!(!l.is_valid());
        assert!(l.valid_until().is_none());
    }
}
