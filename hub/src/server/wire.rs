//! The Spoke service's wire, written by hand instead of generated, for one reason:
//! `Assign` messages are **encoded once** per (bundle, deployment, with or without
//! content) and the same encoded bytes go to every spoke that needs them. The generated
//! server would re-encode the `HubMsg` (and copy the content into it) for every stream.
//!
//! `Outbound` is what a session sends: an already-encoded `HubMsg`, or a small one to
//! encode. It implements `prost::Message` only for encoding, so tonic's standard prost
//! codec frames it; it is never decoded.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes};
use flotilla_proto::v1::{HubMsg, SpokeMsg};
use prost::Message;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

/// One message to a spoke.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A `HubMsg` encoded once and shared (Assign).
    Encoded(Bytes),
    /// A `HubMsg` to encode for this stream only (Unassign, Certificate, and a
    /// ContentChunk, whose `data` is a slice of the shared content: encoding it copies
    /// the bytes once, into the frame, as sending `Encoded` does).
    Msg(HubMsg),
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound::Msg(HubMsg::default())
    }
}

impl Message for Outbound {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match self {
            Outbound::Encoded(b) => buf.put_slice(b),
            Outbound::Msg(m) => m.encode_raw(buf),
        }
    }

    // Never decoded (the hub only sends it); skipping keeps the trait honest anyway.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        match self {
            Outbound::Encoded(b) => b.len(),
            Outbound::Msg(m) => m.encoded_len(),
        }
    }

    fn clear(&mut self) {
        *self = Outbound::default();
    }
}

pub type OutboundStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<Outbound, Status>> + Send + 'static>>;

/// What the service implements (the hand-written twin of the generated `Spoke` trait).
#[tonic::async_trait]
pub trait SyncHandler: Send + Sync + 'static {
    async fn sync(
        &self,
        request: Request<Streaming<SpokeMsg>>,
    ) -> Result<Response<OutboundStream>, Status>;
}

/// `flotilla.v1.Spoke` with the `Sync` method, framed by tonic's prost codec.
pub struct SpokeWireServer<T> {
    inner: Arc<T>,
    max_decoding_message_size: usize,
    max_encoding_message_size: usize,
}

impl<T> SpokeWireServer<T> {
    pub fn new(inner: T, max_decoding: usize, max_encoding: usize) -> Self {
        SpokeWireServer {
            inner: Arc::new(inner),
            max_decoding_message_size: max_decoding,
            max_encoding_message_size: max_encoding,
        }
    }
}

impl<T> Clone for SpokeWireServer<T> {
    fn clone(&self) -> Self {
        SpokeWireServer {
            inner: self.inner.clone(),
            max_decoding_message_size: self.max_decoding_message_size,
            max_encoding_message_size: self.max_encoding_message_size,
        }
    }
}

impl<T> NamedService for SpokeWireServer<T> {
    const NAME: &'static str = "flotilla.v1.Spoke";
}

struct SyncMethod<T>(Arc<T>);

impl<T: SyncHandler> StreamingService<SpokeMsg> for SyncMethod<T> {
    type Response = Outbound;
    type ResponseStream = OutboundStream;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<SpokeMsg>>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.sync(request).await })
    }
}

impl<T, B> Service<http::Request<B>> for SpokeWireServer<T>
where
    T: SyncHandler,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let (max_dec, max_enc) = (
            self.max_decoding_message_size,
            self.max_encoding_message_size,
        );
        if req.uri().path() != "/flotilla.v1.Spoke/Sync" {
            return Box::pin(async move {
                let mut response = http::Response::new(Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            });
        }
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<Outbound, SpokeMsg>::default();
            let mut grpc =
                Grpc::new(codec).apply_max_message_size_config(Some(max_dec), Some(max_enc));
            Ok(grpc.streaming(SyncMethod(inner), req).await)
        })
    }
}

/// Encodes a `HubMsg` once, for sharing.
pub fn encode(msg: &HubMsg) -> Bytes {
    Bytes::from(msg.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::v1::{Assign, hub_msg};

    #[test]
    fn a_pre_encoded_message_is_byte_for_byte_the_message() {
        let msg = HubMsg {
            msg: Some(hub_msg::Msg::Assign(Assign {
                bundle: "b".into(),
                deployment_id: "d-1".into(),
                content: Bytes::from_static(b"kind: ConfigMap\n"),
                ..Default::default()
            })),
        };
        let once = Outbound::Encoded(encode(&msg));
        assert_eq!(once.encoded_len(), msg.encoded_len());
        assert_eq!(once.encode_to_vec(), msg.encode_to_vec());
        let decoded = HubMsg::decode(once.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, msg);
    }
}
