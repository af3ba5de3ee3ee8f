//! Holding open connections to a budget, and cutting off the ones that stall.
//!
//! [`Admission`] is a pool of connections that have not proved who they are (a plain
//! HTTP client, a TLS client without a certificate). It never refuses a newcomer: when
//! the pool is full the *oldest* member is evicted. An attacker who parks idle sockets
//! therefore holds at most `cap` file descriptors, and a real client (a spoke
//! registering, Prometheus scraping) still gets in and only has to finish its short
//! exchange before `cap` newer connections arrive.
//!
//! [`Guarded`] wraps a connection's byte stream and turns these conditions into an I/O
//! error, which makes the protocol engine above (hyper, h2) drop the connection:
//! eviction from its pool, the first bytes not arriving in time (an HTTP/2 preface that
//! never comes), and a maximum age. It also carries whatever must live exactly as long as
//! the connection (a semaphore permit, a gauge guard).
//!
//! **Architecture Invariant:** nothing here knows which protocol runs on the stream.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Sleep;

type OnEvict = Arc<dyn Fn() + Send + Sync>;

/// A pool of at most `cap` unauthenticated connections; a newcomer over the cap evicts
/// the oldest member. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Admission {
    inner: Arc<Pool>,
}

struct Pool {
    cap: usize,
    next_id: AtomicU64,
    /// Members by age (ids only grow). Dropping a member's sender evicts it.
    members: Mutex<BTreeMap<u64, oneshot::Sender<()>>>,
    on_evict: Option<OnEvict>,
}

impl Pool {
    fn members(&self) -> MutexGuard<'_, BTreeMap<u64, oneshot::Sender<()>>> {
        // A panic while holding this lock cannot leave the map inconsistent (every
        // operation is a single insert or remove), so a poisoned lock is still usable.
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("cap", &self.inner.cap)
            .field("members", &self.len())
            .finish()
    }
}

impl Admission {
    /// A pool of at most `cap` connections (at least one).
    pub fn new(cap: usize) -> Admission {
        Admission::with(cap, None)
    }

    /// Calls `f` each time a member is evicted (for a metrics counter).
    pub fn on_evict(cap: usize, f: impl Fn() + Send + Sync + 'static) -> Admission {
        Admission::with(cap, Some(Arc::new(f)))
    }

    fn with(cap: usize, on_evict: Option<OnEvict>) -> Admission {
        Admission {
            inner: Arc::new(Pool {
                cap: cap.max(1),
                next_id: AtomicU64::new(0),
                members: Mutex::new(BTreeMap::new()),
                on_evict,
            }),
        }
    }

    /// Admits a connection, evicting the oldest member when the pool is full.
    pub fn admit(&self) -> Admitted {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let evicted = {
            let mut members = self.inner.members();
            let evicted = if members.len() >= self.inner.cap {
                members.pop_first()
            } else {
                None
            };
            members.insert(id, tx);
            evicted
        };
        if evicted.is_some()
            && let Some(f) = &self.inner.on_evict
        {
            f();
        }
        // The evicted sender is dropped here, outside the lock: its connection sees it.
        drop(evicted);
        Admitted {
            id,
            pool: self.inner.clone(),
            evicted: rx,
        }
    }

    /// Connections currently in the pool.
    pub fn len(&self) -> usize {
        self.inner.members().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn cap(&self) -> usize {
        self.inner.cap
    }
}

/// Membership of one connection in an [`Admission`] pool; leaving is dropping it.
pub struct Admitted {
    id: u64,
    pool: Arc<Pool>,
    evicted: oneshot::Receiver<()>,
}

impl Admitted {
    /// Ready once a newer connection pushed this one out of the pool.
    pub fn poll_evicted(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // The sender is never used to send: it is dropped on eviction, so any completion
        // of the receiver means "evicted".
        Pin::new(&mut self.evicted).poll(cx).map(|_| ())
    }

    /// Resolves once a newer connection pushed this one out of the pool.
    pub async fn evicted(&mut self) {
        std::future::poll_fn(|cx| self.poll_evicted(cx)).await
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.pool.members().remove(&self.id);
    }
}

/// A connection's byte stream with the conditions under which it is cut off.
pub struct Guarded<S> {
    io: S,
    admitted: Option<Admitted>,
    first_bytes: Option<FirstBytes>,
    max_age: Option<Pin<Box<Sleep>>>,
    _held: Vec<Box<dyn Send + Sync>>,
}

struct FirstBytes {
    missing: usize,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Guarded<S> {
    pub fn new(io: S) -> Guarded<S> {
        Guarded {
            io,
            admitted: None,
            first_bytes: None,
            max_age: None,
            _held: Vec::new(),
        }
    }

    /// Cut off when evicted from its admission pool.
    pub fn evictable(mut self, admitted: Admitted) -> Self {
        self.admitted = Some(admitted);
        self
    }

    /// Cut off unless the peer has sent `n` bytes within `within` (for HTTP/2, the
    /// 24-byte connection preface).
    pub fn first_bytes(mut self, n: usize, within: Duration) -> Self {
        self.first_bytes = Some(FirstBytes {
            missing: n,
            deadline: Box::pin(tokio::time::sleep(within)),
        });
        self
    }

    /// Cut off `after` from now, whatever the peer is doing.
    pub fn max_age(mut self, after: Duration) -> Self {
        self.max_age = Some(Box::pin(tokio::time::sleep(after)));
        self
    }

    /// Keeps `value` alive until the connection is dropped (a permit, a gauge guard).
    pub fn holding(mut self, value: impl Send + Sync + 'static) -> Self {
        self._held.push(Box::new(value));
        self
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    fn cut_off(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Some(a) = &mut self.admitted
            && a.poll_evicted(cx).is_ready()
        {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "evicted by a newer unauthenticated connection",
            ));
        }
        if let Some(f) = &mut self.first_bytes
            && f.deadline.as_mut().poll(cx).is_ready()
        {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer did not start its protocol in time",
            ));
        }
        if let Some(age) = &mut self.max_age
            && age.as_mut().poll(cx).is_ready()
        {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection reached its maximum age",
            ));
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.cut_off(cx) {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(f)) = (&r, &mut this.first_bytes) {
            f.missing = f.missing.saturating_sub(buf.filled().len() - before);
            if f.missing == 0 {
                this.first_bytes = None;
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.cut_off(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.cut_off(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_evicted(a: &mut Admitted) -> bool {
        let waker = std::task::Waker::noop();
        a.poll_evicted(&mut Context::from_waker(waker)).is_ready()
    }

    #[test]
    fn a_full_pool_evicts_its_oldest_member_and_admits_the_newcomer() {
        let evictions = Arc::new(AtomicU64::new(0));
        let e = evictions.clone();
        let pool = Admission::on_evict(2, move || {
            e.fetch_add(1, Ordering::Relaxed);
        });
        let mut first = pool.admit();
        let mut second = pool.admit();
        assert!(!is_evicted(&mut first));
        let mut third = pool.admit();
        assert!(is_evicted(&mut first), "the oldest goes");
        assert!(!is_evicted(&mut second));
        assert!(!is_evicted(&mut third));
        assert_eq!(pool.len(), 2);
        assert_eq!(evictions.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn leaving_the_pool_frees_a_place_without_evicting_anyone() {
        let pool = Admission::new(2);
        let first = pool.admit();
        let mut second = pool.admit();
        drop(first);
        assert_eq!(pool.len(), 1);
        let mut third = pool.admit();
        assert!(!is_evicted(&mut second));
        assert!(!is_evicted(&mut third));
        assert_eq!(pool.len(), 2);
    }

    #[tokio::test]
    async fn a_stream_that_never_sends_its_first_bytes_fails_with_timed_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(64);
        let mut guarded = Guarded::new(server).first_bytes(4, Duration::from_millis(50));
        let mut client = client;
        // Three of the four bytes arrive; the deadline still applies.
        client.write_all(b"abc").await.expect("write");
        let mut buf = [0u8; 8];
        let n = guarded.read(&mut buf).await.expect("first read");
        assert_eq!(&buf[..n], b"abc");
        let err = guarded.read(&mut buf).await.expect_err("cut off");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
