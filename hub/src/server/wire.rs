//! The Spoke service's wire, written by hand instead of generated, for one reason:
//! `Assign` messages are **encoded once** per (bundle, deployment, with or without
//! content) and the same encoded bytes go to every spoke that needs them. The generated
//! server would re-encode the `HubMsg` (and copy the content into it) for every stream.
//!
//! `Outbound` is what a session sends: an already-encoded `HubMsg`, or a small one to
//! encode. It implements `prost::Message` only for encoding, so tonic's standard prost
//! codec frames it; it is never decoded.
//!
//! `WireCache` holds the encoded messages. It is the server's, not the fleet's: the fleet
//! only publishes which deployments are still live (`Fleet::live_deployments`, at each
//! content GC), and `evict_gone` drops the messages of the others. A byte budget bounds
//! it whatever happens between two GCs.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes};
use dashmap::DashMap;
use flotilla_model::DeploymentId;
use flotilla_proto::v1::{HubMsg, SpokeMsg};
use prost::Message;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

/// One message to a spoke. Small (a `Bytes` or a box), because every session's channel
/// allocates its slots up front: an idle spoke should cost little.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A `HubMsg` encoded once and shared (Assign).
    Encoded(Bytes),
    /// A `HubMsg` to encode for this stream only (Unassign, Certificate, and a
    /// ContentChunk, whose `data` is a slice of the shared content: encoding it copies
    /// the bytes once, into the frame, as sending `Encoded` does).
    Msg(Box<HubMsg>),
}

impl Outbound {
    pub fn msg(m: HubMsg) -> Self {
        Outbound::Msg(Box::new(m))
    }
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound::msg(HubMsg::default())
    }
}

/// What a session queues for its stream: a message, or the status that ends it. Boxed
/// whole, so a queue slot is one pointer: the queue keeps its capacity while its spoke
/// is idle (8 bytes a slot, against the size of an unboxed `tonic::Status`); the box is
/// one small allocation per message sent.
pub type Queued = Box<Result<Outbound, Status>>;

/// The codec's initial buffer per stream and direction. tonic's default is 8 KiB each
/// way, allocated when a stream opens; spoke messages are small (Status, Heartbeat) and
/// an encoded Assign is copied in whole, so the buffers grow only while a large message
/// passes. This is per idle spoke memory (`docs/benchmarks.md`, issue 18).
const SYNC_CODEC_BUFFER: usize = 256;

/// tonic's prost codec, with small initial buffers (`SYNC_CODEC_BUFFER`).
#[derive(Debug, Clone, Copy, Default)]
struct SyncCodec;

impl tonic::codec::Codec for SyncCodec {
    type Encode = Outbound;
    type Decode = SpokeMsg;
    type Encoder = tonic_prost::ProstEncoder<Outbound>;
    type Decoder = tonic_prost::ProstDecoder<SpokeMsg>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(sync_buffers())
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(sync_buffers())
    }
}

fn sync_buffers() -> tonic::codec::BufferSettings {
    // The yield threshold stays tonic's default (32 KiB).
    tonic::codec::BufferSettings::new(SYNC_CODEC_BUFFER, 32 * 1024)
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
            let mut grpc =
                Grpc::new(SyncCodec).apply_max_message_size_config(Some(max_dec), Some(max_enc));
            Ok(grpc.streaming(SyncMethod(inner), req).await)
        })
    }
}

/// Encodes a `HubMsg` once, for sharing.
pub fn encode(msg: &HubMsg) -> Bytes {
    Bytes::from(msg.encode_to_vec())
}

/// Which encoded Assign: the bundle, its deployment, and whether it carries the content
/// (a spoke that holds the digest gets the one without).
pub type WireKey = (Arc<str>, DeploymentId, bool);

/// An encoded message and the content bytes it carries (for the metrics).
#[derive(Debug, Clone)]
pub struct Encoded {
    pub bytes: Bytes,
    pub content_len: usize,
}

/// Assign messages encoded once and shared by every session that sends them.
///
/// **Invariant:** it holds at most `budget` bytes of encoded messages (over it, it
/// starts again empty: a miss costs one encode), and nothing of a deployment that the
/// last content GC found gone, once `evict_gone` has seen that GC.
pub struct WireCache {
    entries: DashMap<WireKey, Encoded>,
    bytes: AtomicUsize,
    budget: usize,
}

/// Encoded messages the hub keeps at most. A fan-out needs two per changed deployment
/// (with and without content), so this is room for many bundles of the 16 MiB that ride
/// inline.
pub const WIRE_CACHE_BYTES: usize = 256 << 20;

impl WireCache {
    pub fn new(budget: usize) -> Self {
        WireCache {
            entries: DashMap::new(),
            bytes: AtomicUsize::new(0),
            budget,
        }
    }

    /// The message for `key`, encoded by `encode` on a miss; `None` when `encode` has
    /// nothing to encode (the content is missing).
    pub fn get_or_encode(
        &self,
        key: &WireKey,
        encode: impl FnOnce() -> Option<Encoded>,
    ) -> Option<Encoded> {
        if let Some(hit) = self.entries.get(key) {
            return Some(hit.clone());
        }
        let encoded = encode()?;
        let len = encoded.bytes.len();
        if self.bytes.load(Ordering::Relaxed) + len > self.budget {
            self.clear();
        }
        if len <= self.budget {
            // Two sessions that missed at once both encode; the map keeps one, and the
            // count follows what the map holds.
            if let dashmap::Entry::Vacant(v) = self.entries.entry(key.clone()) {
                v.insert(encoded.clone());
                self.bytes.fetch_add(len, Ordering::Relaxed);
            }
        }
        Some(encoded)
    }

    /// Forgets every message of a deployment not in `live`.
    pub fn retain_live(&self, live: &HashSet<DeploymentId>) {
        self.entries.retain(|(_, d, _), e| {
            let keep = live.contains(d);
            if !keep {
                self.bytes.fetch_sub(e.bytes.len(), Ordering::Relaxed);
            }
            keep
        });
    }

    fn clear(&self) {
        self.entries.retain(|_, e| {
            self.bytes.fetch_sub(e.bytes.len(), Ordering::Relaxed);
            false
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of encoded messages held.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Drops the messages of deployments that are gone, each time the fleet publishes the
/// live ones; ends when the fleet does.
pub async fn evict_gone(
    cache: Arc<WireCache>,
    mut live: watch::Receiver<Arc<HashSet<DeploymentId>>>,
) {
    while live.changed().await.is_ok() {
        let now = live.borrow_and_update().clone();
        cache.retain_live(&now);
        tracing::debug!(
            entries = cache.len(),
            bytes = cache.bytes(),
            "wire cache: dropped the messages of deployments that are gone"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_model::ContentDigest;
    use flotilla_proto::v1::{Assign, hub_msg};

    fn key(bundle: &str, content: &[u8], with: bool) -> WireKey {
        let id = DeploymentId::compute(&ContentDigest::of(content), "{}");
        (Arc::from(bundle), id, with)
    }

    fn encoded(n: usize) -> Option<Encoded> {
        Some(Encoded {
            bytes: Bytes::from(vec![1u8; n]),
            content_len: n,
        })
    }

    #[test]
    fn a_message_is_encoded_once_and_then_shared() {
        let cache = WireCache::new(1 << 20);
        let k = key("web", b"v1", true);
        let first = cache.get_or_encode(&k, || encoded(10)).expect("encoded");
        let again = cache
            .get_or_encode(&k, || panic!("a hit must not encode again"))
            .expect("cached");
        assert_eq!(
            first.bytes.as_ptr(),
            again.bytes.as_ptr(),
            "the same buffer"
        );
        assert!(
            cache
                .get_or_encode(&key("db", b"v1", true), || None)
                .is_none()
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn messages_of_deployments_that_are_gone_are_evicted_when_the_fleet_says_so() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let cache = Arc::new(WireCache::new(1 << 20));
            let (v1, v2) = (key("web", b"v1", true), key("web", b"v2", false));
            cache.get_or_encode(&v1, || encoded(10));
            cache.get_or_encode(&v2, || encoded(20));
            let (tx, rx) = watch::channel(Arc::new(HashSet::new()));
            let evictor = tokio::spawn(evict_gone(cache.clone(), rx));
            tx.send_replace(Arc::new(HashSet::from([v2.1.clone()])));
            drop(tx);
            evictor.await.expect("ends with the fleet");
            assert_eq!(cache.len(), 1);
            assert_eq!(cache.bytes(), 20);
            assert!(cache.get_or_encode(&v2, || panic!("kept")).is_some());
        });
    }

    #[test]
    fn the_cache_never_holds_more_than_its_budget() {
        let cache = WireCache::new(100);
        for i in 0..50u8 {
            cache.get_or_encode(&key("b", &[i], true), || encoded(30));
            assert!(cache.bytes() <= 100, "{} bytes held", cache.bytes());
        }
        // A message over the whole budget is sent but never kept.
        assert!(
            cache
                .get_or_encode(&key("big", b"x", true), || encoded(101))
                .is_some()
        );
        assert!(cache.bytes() <= 100);
    }

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
        assert!(
            std::mem::size_of::<Queued>() <= std::mem::size_of::<usize>(),
            "a queue slot is small: {} bytes",
            std::mem::size_of::<Queued>()
        );
        assert_eq!(once.encoded_len(), msg.encoded_len());
        assert_eq!(once.encode_to_vec(), msg.encode_to_vec());
        let decoded = HubMsg::decode(once.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, msg);
    }
}
