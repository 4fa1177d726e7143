//! The tap: how the simulated traffic becomes observable without root. Every Modbus client of
//! the plant (HMI, engineering workstation, attackers) connects through [`Tap::connect`]: an
//! in-process recording proxy between an in-memory stream (the client's end) and a real TCP
//! connection to the PLC's loopback server. Each read is turned into Ethernet/IPv4/TCP frames
//! with the simulated addresses (handshake, data with consistent sequence and acknowledgement
//! numbers, FIN exchange) and handed to the [`FrameSink`] before it is forwarded, so a response
//! is always captured after its request. Syslog datagrams go through [`Tap::datagram`].
//!
//! Frames are stamped with the wall clock, strictly increasing, under one lock: the sink sees
//! them in capture order whatever task produced them.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use mamori_models::Timestamp;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::error::SimError;
use crate::frames::{Side, TcpFlow, udp_frame};
use crate::rng::Rng;
use crate::sink::FrameSink;

/// First ephemeral port handed to simulated clients (the IANA dynamic range).
const FIRST_CLIENT_PORT: u16 = 49_152;
/// In-memory buffer between a client and its proxy, per direction.
const DUPLEX_BYTES: usize = 64 * 1024;
/// Read buffer of a proxy pump.
const READ_BYTES: usize = 4096;

/// What the tap did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TapStats {
    pub frames_total: u64,
    pub connections_total: u64,
    pub datagrams_total: u64,
    /// Frames the sink could not take (a full channel).
    pub frames_dropped_total: u64,
}

#[derive(Debug)]
struct Inner {
    sink: Box<dyn FrameSink>,
    last_us: i64,
    frames: u64,
    /// The first sink error; later frames are still offered to the sink.
    error: Option<SimError>,
}

/// The recording tap. Shared by every simulated host (`Arc<Tap>`).
#[derive(Debug)]
pub struct Tap {
    inner: Mutex<Inner>,
    isn: Mutex<Rng>,
    next_port: AtomicU16,
    connections: AtomicU64,
    datagrams: AtomicU64,
    proxies: Mutex<Vec<JoinHandle<()>>>,
}

impl Tap {
    /// A tap delivering to `sink`; `seed` drives the initial sequence numbers.
    pub fn new(sink: Box<dyn FrameSink>, seed: u64) -> Arc<Tap> {
        Arc::new(Tap {
            inner: Mutex::new(Inner {
                sink,
                last_us: i64::MIN,
                frames: 0,
                error: None,
            }),
            isn: Mutex::new(Rng::new(seed).fork(0x7A9)),
            next_port: AtomicU16::new(FIRST_CLIENT_PORT),
            connections: AtomicU64::new(0),
            datagrams: AtomicU64::new(0),
            proxies: Mutex::new(Vec::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The capture clock now: the wall clock, never behind the last frame.
    pub fn now(&self) -> Timestamp {
        let inner = self.lock();
        Timestamp::from_micros(wall_us().max(inner.last_us.saturating_add(1)))
    }

    /// Stamps and delivers frames, in order, each at least one microsecond after the last.
    fn emit(&self, frames: Vec<Vec<u8>>) {
        let mut inner = self.lock();
        for frame in frames {
            let us = wall_us().max(inner.last_us.saturating_add(1));
            inner.last_us = us;
            inner.frames += 1;
            if let Err(e) = inner.sink.frame(Timestamp::from_micros(us), frame)
                && inner.error.is_none()
            {
                tracing::error!(error = %e, "frame sink failed");
                inner.error = Some(e);
            }
        }
    }

    /// One UDP datagram from `src` to `dst` (nothing is really sent).
    pub fn datagram(&self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) {
        self.datagrams.fetch_add(1, Ordering::Relaxed);
        self.emit(udp_frame(src, dst, payload).into_iter().collect());
    }

    fn client_port(&self) -> u16 {
        // Wraps within the dynamic range; a wrapped port reuses a long-closed connection's.
        let p = self.next_port.fetch_add(1, Ordering::Relaxed);
        if p < FIRST_CLIENT_PORT {
            self.next_port
                .store(FIRST_CLIENT_PORT + 1, Ordering::Relaxed);
            FIRST_CLIENT_PORT
        } else {
            p
        }
    }

    fn flow(&self, client: Ipv4Addr, server: SocketAddrV4) -> TcpFlow {
        let mut rng = self.isn.lock().unwrap_or_else(PoisonError::into_inner);
        let isn_c = u32::try_from(rng.next_u64() >> 32).unwrap_or(1);
        let isn_s = u32::try_from(rng.next_u64() >> 32).unwrap_or(2);
        TcpFlow::new(
            SocketAddrV4::new(client, self.client_port()),
            server,
            isn_c,
            isn_s,
        )
    }

    /// A SYN from `client` to `server` that nothing answers (a scan of an absent host).
    pub fn probe(&self, client: Ipv4Addr, server: SocketAddrV4) {
        let flow = self.flow(client, server);
        self.emit(flow.syn());
    }

    /// Connects `client` (a simulated address) to the server simulated as `server` and really
    /// listening on `upstream`. Returns the client's end of the connection; the proxy task
    /// records both directions until both have closed. A refused connection is captured as
    /// SYN, RST.
    pub async fn connect(
        self: &Arc<Self>,
        client: Ipv4Addr,
        server: SocketAddrV4,
        upstream: SocketAddr,
    ) -> io::Result<DuplexStream> {
        let flow = self.flow(client, server);
        let stream = match TcpStream::connect(upstream).await {
            Ok(s) => s,
            Err(e) => {
                self.emit(flow.refused());
                return Err(e);
            }
        };
        stream.set_nodelay(true)?;
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.emit(flow.handshake());
        let (near, far) = tokio::io::duplex(DUPLEX_BYTES);
        let flow = Arc::new(Mutex::new(flow));
        let (far_rx, far_tx) = tokio::io::split(far);
        let (up_rx, up_tx) = stream.into_split();
        let tap = Arc::clone(self);
        let task = tokio::spawn(async move {
            let up = pump(
                far_rx,
                up_tx,
                Side::Client,
                Arc::clone(&flow),
                Arc::clone(&tap),
            );
            let down = pump(up_rx, far_tx, Side::Server, flow, tap);
            tokio::join!(up, down);
        });
        let mut proxies = self.proxies.lock().unwrap_or_else(PoisonError::into_inner);
        // Finished proxies are forgotten so the list stays as long as the open connections.
        proxies.retain(|t| !t.is_finished());
        proxies.push(task);
        Ok(near)
    }

    /// Waits (up to `grace`) for every proxied connection to close, aborts the rest, flushes
    /// the sink and reports what the tap did, or the first sink error.
    pub async fn finish(&self, grace: Duration) -> Result<TapStats, SimError> {
        let proxies: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.proxies.lock().unwrap_or_else(PoisonError::into_inner));
        let deadline = tokio::time::Instant::now() + grace;
        for task in proxies {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
            }
        }
        let mut inner = self.lock();
        let flushed = inner.sink.flush();
        if let Some(e) = inner.error.take() {
            return Err(e);
        }
        flushed?;
        Ok(self.stats_of(&inner))
    }

    fn stats_of(&self, inner: &Inner) -> TapStats {
        TapStats {
            frames_total: inner.frames,
            connections_total: self.connections.load(Ordering::Relaxed),
            datagrams_total: self.datagrams.load(Ordering::Relaxed),
            frames_dropped_total: inner.sink.dropped(),
        }
    }

    pub fn stats(&self) -> TapStats {
        let inner = self.lock();
        self.stats_of(&inner)
    }
}

fn wall_us() -> i64 {
    Timestamp::from_system_time(SystemTime::now()).as_micros()
}

/// Forwards one direction, recording each read before forwarding it. When the reader ends
/// (close or reset) the sender's FIN is captured and the close is passed on. If the receiver
/// is gone the bytes are still captured: they were on the wire.
async fn pump<R, W>(mut rx: R, mut tx: W, from: Side, flow: Arc<Mutex<TcpFlow>>, tap: Arc<Tap>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; READ_BYTES];
    let mut receiver_gone = false;
    loop {
        let n = rx.read(&mut buf).await.unwrap_or(0);
        let Some(bytes) = buf.get(..n).filter(|b| !b.is_empty()) else {
            let frames = flow
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .fin(from);
            tap.emit(frames);
            let _ = tx.shutdown().await;
            return;
        };
        {
            // The flow lock is held while the frames are emitted so that the two directions
            // cannot interleave their sequence numbers out of order.
            let mut f = flow.lock().unwrap_or_else(PoisonError::into_inner);
            let frames = f.data(from, bytes);
            tap.emit(frames);
        }
        if !receiver_gone && tx.write_all(bytes).await.is_err() {
            receiver_gone = true;
        }
    }
}
