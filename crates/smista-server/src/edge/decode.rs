//! A request that cannot be decoded (not protobuf, a truncated message, a string that is not
//! UTF-8, a field of the wrong wire type) is the client's fault: INVALID_ARGUMENT. tonic answers
//! it INTERNAL ("failed to decode Protobuf message: ..."), which alerting keyed on INTERNAL would
//! read as a server fault; [`DecodeErrorLayer`] rewrites that one status, before any handler ran
//! (the request never reached one), and nothing else.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Rewrites tonic's INTERNAL for an undecodable request into INVALID_ARGUMENT.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeErrorLayer;

impl<S> tower::Layer<S> for DecodeErrorLayer {
    type Service = DecodeErrorService<S>;
    fn layer(&self, inner: S) -> DecodeErrorService<S> {
        DecodeErrorService { inner }
    }
}

/// See [`DecodeErrorLayer`].
#[derive(Clone, Debug)]
pub struct DecodeErrorService<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for DecodeErrorService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            rewrite(resp.headers_mut());
            Ok(resp)
        })
    }
}

/// INTERNAL "failed to decode ..." in a trailers-only reply's headers becomes INVALID_ARGUMENT.
fn rewrite(headers: &mut http::HeaderMap) {
    let internal = headers.get("grpc-status").is_some_and(|v| v.as_bytes() == b"13");
    let undecodable = headers.get("grpc-message").is_some_and(|v| {
        let m = v.as_bytes();
        m.starts_with(b"failed to decode") || m.starts_with(b"failed%20to%20decode")
    });
    if internal && undecodable {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_undecodable_request_s_internal_becomes_invalid_argument() {
        let status = |s: tonic::Status| {
            let mut h = s.into_http::<tonic::body::Body>().headers().clone();
            rewrite(&mut h);
            tonic::Status::from_header_map(&h).expect("a status").code()
        };
        let undecodable = tonic::Status::internal("failed to decode Protobuf message: X.id: invalid string value");
        assert_eq!(status(undecodable), tonic::Code::InvalidArgument);
        assert_eq!(status(tonic::Status::internal("the ledger failed")), tonic::Code::Internal);
        assert_eq!(status(tonic::Status::unavailable("failed to decode")), tonic::Code::Unavailable);
    }
}
