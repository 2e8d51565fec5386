//! `ContactService.StreamEvents` served with events encoded once for every reader.
//!
//! The generated service encodes each message it sends: with 500 wallboards every event would be
//! converted and encoded 500 times. This route takes the method's path before the generated
//! service sees it and streams the bytes each event was encoded into once (see
//! [`crate::app::hub::EventStream`]); tonic still frames them, batches what is ready into one HTTP/2
//! write, and ends the stream with its status. Every other path goes to the generated service.
//! The wire format is the proto's: clients see no difference.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use smista_proto::v1 as pb;
use smista_proto::v1::contact_service_server::ContactServiceServer;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};

use crate::app::hub::EventStream;
use crate::app::Shared;
use crate::service::contact::ContactSvc;

/// The method this route serves itself.
pub const PATH: &str = "/smista.v1.ContactService/StreamEvents";

/// Opens a reader for `request`: the caller's role was checked by the auth layer; here its
/// filter and its place under the stream caps.
pub fn open(s: &Shared, request: Request<pb::StreamEventsRequest>) -> Result<EventStream, Status> {
    crate::wire::bounds::Bounded::check_bounds(request.get_ref())?;
    let principal = s.principal(&request)?;
    let req = request.into_inner();
    s.log.queue_indices(&req.queues)?;
    let guard = s.gate.limits.open_stream(&principal)?;
    s.log.subscribe(req, guard, s.shutdown.clone())
}

/// The contact service with `StreamEvents` served by [`open`].
#[derive(Debug, Clone)]
pub struct ContactRoutes {
    inner: ContactServiceServer<ContactSvc>,
    shared: Arc<Shared>,
}

impl ContactRoutes {
    /// The generated service for `svc`, with the events route in front.
    #[must_use]
    pub fn new(svc: ContactSvc) -> Self {
        ContactRoutes { shared: svc.0.clone(), inner: ContactServiceServer::new(svc) }
    }
}

impl NamedService for ContactRoutes {
    const NAME: &'static str = <ContactServiceServer<ContactSvc> as NamedService>::NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, std::convert::Infallible>> + Send + 'static>>;

impl<B> tower::Service<http::Request<B>> for ContactRoutes
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != PATH {
            return Box::pin(self.inner.call(req));
        }
        let shared = self.shared.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(WireCodec);
            Ok(grpc.server_streaming(Events(shared), req).await)
        })
    }
}

struct Events(Arc<Shared>);

impl ServerStreamingService<pb::StreamEventsRequest> for Events {
    type Response = Bytes;
    type ResponseStream = EventStream;
    type Future = Pin<Box<dyn Future<Output = Result<Response<EventStream>, Status>> + Send + 'static>>;

    fn call(&mut self, request: Request<pb::StreamEventsRequest>) -> Self::Future {
        let r = open(&self.0, request).map(Response::new);
        Box::pin(async move { r })
    }
}

/// Sends already encoded messages; decodes the request with prost.
#[derive(Debug, Default, Clone, Copy)]
struct WireCodec;

impl Codec for WireCodec {
    type Encode = Bytes;
    type Decode = pb::StreamEventsRequest;
    type Encoder = WireCodec;
    type Decoder = WireCodec;

    fn encoder(&mut self) -> Self::Encoder {
        WireCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireCodec
    }
}

impl Encoder for WireCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for WireCodec {
    type Item = pb::StreamEventsRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let len = src.remaining();
        prost::Message::decode(src.copy_to_bytes(len))
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed StreamEventsRequest: {e}")))
    }
}
