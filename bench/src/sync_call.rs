//! A simulated spoke's `Spoke.Sync` call, spoken over HTTP/2 (the `h2` crate) by the
//! task that handles its messages: the connection, the request stream and the response
//! stream are all polled by that one task.
//!
//! Why not tonic's client, as the real spoke uses: ten thousand simulated spokes share
//! the two cores with the hub they measure. Through tonic every message crossed three
//! tasks on the spoke's side (the HTTP/2 connection, hyper's request-body pipe fed by a
//! channel, and the session); here it is one poll of one task. The bytes on the wire
//! are the same: TLS, HTTP/2, and gRPC's length-prefixed, uncompressed messages.
//!
//! **Invariant:** nothing the hub sends can make it panic; an oversized, compressed or
//! undecodable message, or a stream the hub ends with an error, is an `Err`.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};

use anyhow::{Result, anyhow, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use flotilla_proto::v1::{HubMsg, SpokeMsg};
use h2::client::{Connection, SendRequest};
use h2::{RecvStream, SendStream};
use http::HeaderMap;
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};

/// gRPC's message prefix: a compression flag and a 4-byte big-endian length.
const PREFIX: usize = 5;
/// HTTP/2 windows as tonic's client (hyper's defaults) opens them.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// The HTTP/2 connection, polled by whoever waits on the call.
struct Driver<T> {
    conn: Connection<T, Bytes>,
    /// Set once the connection future has finished; it is not polled again.
    done: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Driver<T> {
    /// Moves the connection along (writes what is queued, reads what arrived); an error
    /// once it has failed or closed.
    fn poll_conn(&mut self, cx: &mut Context<'_>) -> Result<()> {
        if self.done {
            bail!("the connection to the hub closed");
        }
        if let Poll::Ready(r) = Pin::new(&mut self.conn).poll(cx) {
            self.done = true;
            r.map_err(|e| anyhow!("connection to the hub: {e}"))?;
            bail!("the hub closed the connection");
        }
        Ok(())
    }

    /// Waits for `fut`, moving the connection along meanwhile. `fut` goes first, so one
    /// that is ready at once costs no look at the connection.
    async fn drive<F: Future>(&mut self, fut: F) -> Result<F::Output> {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            if let Err(e) = self.poll_conn(cx) {
                return Poll::Ready(Err(e));
            }
            // The connection may have made `fut` ready (a response arrived).
            match fut.as_mut().poll(cx) {
                Poll::Ready(out) => Poll::Ready(Ok(out)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

/// An open Sync call.
pub struct SyncCall<T> {
    driver: Driver<T>,
    /// Kept: the connection closes once every handle to it is gone.
    _requests: SendRequest<Bytes>,
    send: SendStream<Bytes>,
    recv: RecvStream,
    messages: Deframer,
}

impl<T: AsyncRead + AsyncWrite + Unpin> SyncCall<T> {
    /// Starts the call on a fresh (TLS) connection `io` to `hub`, sends `first`, and
    /// waits for the hub to accept the stream.
    pub async fn open(
        io: T,
        hub: SocketAddr,
        first: &SpokeMsg,
        max_message: usize,
    ) -> Result<Self> {
        let (mut requests, conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| anyhow!("HTTP/2 handshake: {e}"))?;
        let mut driver = Driver { conn, done: false };
        let request = http::Request::post(format!("https://{hub}/flotilla.v1.Spoke/Sync"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| anyhow!("building the Sync request: {e}"))?;
        let (response, mut send) = requests
            .send_request(request, false)
            .map_err(|e| anyhow!("opening the Sync stream: {e}"))?;
        send.send_data(frame(first)?, false)
            .map_err(|e| anyhow!("sending the first message: {e}"))?;
        let head = driver
            .drive(response)
            .await?
            .map_err(|e| anyhow!("Sync: {e}"))?;
        let (parts, recv) = head.into_parts();
        if parts.status != http::StatusCode::OK {
            bail!("hub refused the stream: HTTP {}", parts.status);
        }
        // A refusal comes as headers only ("trailers-only"), before any message.
        check_grpc_status(&parts.headers)?;
        Ok(SyncCall {
            driver,
            _requests: requests,
            send,
            recv,
            messages: Deframer::new(max_message),
        })
    }

    /// Queues `msg`; it goes out the next time the call is waited on.
    pub fn send(&mut self, msg: &SpokeMsg) -> Result<()> {
        self.send
            .send_data(frame(msg)?, false)
            .map_err(|e| anyhow!("sending to the hub: {e}"))
    }

    /// Waits for `fut` (an apply), keeping the connection moving meanwhile.
    pub async fn drive<F: Future>(&mut self, fut: F) -> Result<F::Output> {
        self.driver.drive(fut).await
    }

    /// The hub's next message, or `None` once it ends the stream without an error.
    pub async fn next(&mut self) -> Result<Option<HubMsg>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<HubMsg>>> {
        loop {
            if let Some(msg) = self.messages.next()? {
                return Poll::Ready(Ok(Some(msg)));
            }
            // Reading the socket here is what fills the stream polled next. A closed
            // connection is reported only once the stream has given up what it holds
            // (the hub's final status comes just before the close).
            let conn = self.driver.poll_conn(cx);
            let data = match self.recv.poll_data(cx) {
                Poll::Ready(data) => data,
                Poll::Pending => {
                    return conn.map_or_else(|e| Poll::Ready(Err(e)), |()| Poll::Pending);
                }
            };
            match data {
                Some(Ok(chunk)) => {
                    let _ = self.recv.flow_control().release_capacity(chunk.len());
                    self.messages.push(&chunk);
                }
                Some(Err(e)) => return Poll::Ready(Err(anyhow!("stream: {e}"))),
                None => {
                    if self.messages.holds_part() {
                        return Poll::Ready(Err(anyhow!("the stream ended inside a message")));
                    }
                    let trailers = ready!(self.recv.poll_trailers(cx))
                        .map_err(|e| anyhow!("stream trailers: {e}"))?;
                    check_grpc_status(&trailers.unwrap_or_default())?;
                    return Poll::Ready(Ok(None));
                }
            }
        }
    }
}

/// Cuts the hub's messages out of the bytes of the response stream, which HTTP/2
/// delivers in chunks that need not end where a message does.
struct Deframer {
    /// Received bytes not yet making a whole message.
    pending: BytesMut,
    max_message: usize,
}

impl Deframer {
    fn new(max_message: usize) -> Self {
        Deframer {
            pending: BytesMut::new(),
            max_message,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
    }

    /// Whether part of a message is held (the stream must not end here).
    fn holds_part(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The next whole message, if the bytes received hold one. The length is checked
    /// before the message is waited for, so an oversized one fails at its prefix.
    fn next(&mut self) -> Result<Option<HubMsg>> {
        let Some(prefix) = self.pending.get(..PREFIX) else {
            return Ok(None);
        };
        if prefix[0] != 0 {
            bail!("the hub sent a compressed message, which was not asked for");
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > self.max_message {
            bail!(
                "stream: message of {len} bytes, over the {} accepted",
                self.max_message
            );
        }
        if self.pending.len() < PREFIX + len {
            self.pending.reserve(PREFIX + len - self.pending.len());
            return Ok(None);
        }
        self.pending.advance(PREFIX);
        let body = self.pending.split_to(len);
        HubMsg::decode(body)
            .map(Some)
            .map_err(|e| anyhow!("stream: undecodable message: {e}"))
    }
}

/// `msg` with gRPC's prefix, uncompressed.
fn frame(msg: &SpokeMsg) -> Result<Bytes> {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).map_err(|_| anyhow!("message of {len} bytes"))?);
    msg.encode(&mut buf)
        .map_err(|e| anyhow!("encoding a message: {e}"))?;
    Ok(buf.freeze())
}

/// An error for a `grpc-status` other than OK, with the hub's `grpc-message` (tonic
/// reads both, percent-decoding the message).
fn check_grpc_status(headers: &HeaderMap) -> Result<()> {
    match tonic::Status::from_header_map(headers) {
        Some(s) if s.code() != tonic::Code::Ok => bail!(
            "hub refused the stream: {} (gRPC status {})",
            s.message(),
            s.code() as i32
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use flotilla_proto::v1::{Assign, hub_msg};

    use super::*;

    fn assign(bundle: &str) -> HubMsg {
        HubMsg {
            msg: Some(hub_msg::Msg::Assign(Assign {
                bundle: bundle.into(),
                content: vec![7; 300].into(),
                ..Default::default()
            })),
        }
    }

    /// A message as the hub frames it: flag, length, body.
    fn framed(msg: &HubMsg) -> Vec<u8> {
        let body = msg.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn messages_split_and_joined_across_chunks_come_out_whole_and_in_order() {
        let (a, b) = (assign("a"), assign("b"));
        let mut bytes = framed(&a);
        bytes.extend_from_slice(&framed(&b));
        for chunk in [1, 3, 5, 64, bytes.len()] {
            let mut d = Deframer::new(1 << 20);
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                d.push(piece);
                while let Some(m) = d.next().expect("well-formed") {
                    got.push(m);
                }
            }
            assert_eq!(got, vec![a.clone(), b.clone()], "chunks of {chunk} bytes");
            assert!(!d.holds_part());
        }
    }

    #[test]
    fn a_message_cut_short_is_held_not_decoded() {
        let bytes = framed(&assign("a"));
        let mut d = Deframer::new(1 << 20);
        d.push(&bytes[..bytes.len() - 1]);
        assert!(d.next().expect("no error yet").is_none());
        assert!(
            d.holds_part(),
            "a stream that ends here ends inside a message"
        );
    }

    #[test]
    fn a_message_over_the_limit_fails_at_its_prefix() {
        let mut d = Deframer::new(100);
        d.push(&[0, 0, 0, 1, 0]);
        let err = d.next().expect_err("256 bytes is over 100");
        assert!(err.to_string().contains("256 bytes, over the 100"), "{err}");
    }

    #[test]
    fn a_compressed_or_undecodable_message_is_an_error() {
        let mut d = Deframer::new(100);
        d.push(&[1, 0, 0, 0, 0]);
        assert!(
            d.next()
                .expect_err("compressed")
                .to_string()
                .contains("compressed")
        );

        let mut d = Deframer::new(100);
        d.push(&[0, 0, 0, 0, 2, 0xff, 0xff]);
        let err = d.next().expect_err("garbage");
        assert!(err.to_string().contains("undecodable"), "{err}");
    }

    #[test]
    fn a_refusal_reads_as_the_hub_wrote_it() {
        let mut h = HeaderMap::new();
        assert!(check_grpc_status(&h).is_ok(), "no status is no refusal");
        h.insert("grpc-status", "0".parse().expect("header"));
        assert!(check_grpc_status(&h).is_ok());
        h.insert("grpc-status", "7".parse().expect("header"));
        h.insert(
            "grpc-message",
            "certificate%20revoked%3A%20100%25".parse().expect("header"),
        );
        let err = check_grpc_status(&h).expect_err("status 7");
        assert_eq!(
            err.to_string(),
            "hub refused the stream: certificate revoked: 100% (gRPC status 7)"
        );
    }
}
