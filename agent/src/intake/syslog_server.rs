//! The syslog listeners: UDP (RFC 5426), TCP (RFC 6587) and TLS (RFC 5425).
//!
//! Owns the sockets, the per-connection tasks and the path of one message from the network to
//! the event queue: count it, rate-limit its source, parse it, and put it on the queue bounded
//! in events and bytes (or drop it and count why). Laid out like mini-redis's server: one task
//! per listener, one per connection, a table of connections for the limits (global, per
//! source, eviction of the idlest), a broadcast-style shutdown, and a "done" channel whose
//! senders every task holds so that [`SyslogReceivers::shutdown`] can wait for all of them.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mamori_models::{Anomaly, SyslogEvent, Timestamp};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::config::{ConfigErrors, SyslogReceiverConfig, WhenFull};
use super::connections::{ConnSlot, ConnTable, Limits, Refusal};
use super::queue::{self, Offer, QueueLevel, QueueSender, SyslogQueue};
use super::shutdown::Shutdown;
use super::stats::{
    Counters, ReceiverStats, SourceTable, SourcesSnapshot, Transport, WarnLimiter, WarnReason, add,
    bump,
};
use super::tls::{TlsConfigError, load_tls_server_config};
use super::udp_drops;
use crate::proto::syslog::{
    Frame, FramerStats, ParseOptions, StreamFramer, parse_syslog, parse_syslog_frame,
};

/// Bytes read from a connection at a time (the framer keeps at most `max_message_bytes`).
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Pause after a failed `accept` (out of file descriptors, ...) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Pause after a failed UDP receive, for the same reason.
const UDP_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Why the receivers could not start.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("invalid syslog receiver configuration: {0}")]
    Config(#[from] ConfigErrors),
    #[error("binding the syslog {transport} listener to {addr}: {source}")]
    Bind {
        transport: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
}

/// The addresses the listeners are bound to (a port 0 in the configuration is resolved here).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalAddrs {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
}

/// State every task shares and the handle reads.
#[derive(Debug)]
struct Shared {
    counters: Counters,
    sources: Mutex<SourceTable>,
    warn: WarnLimiter,
    opts: ParseOptions,
    when_full: WhenFull,
    queue: Arc<QueueLevel>,
    /// Inode of the UDP listener's socket, to find its row in /proc/net/udp{,6}.
    udp_inode: Option<u64>,
}

impl Shared {
    fn sources(&self) -> MutexGuard<'_, SourceTable> {
        // A panic while holding the lock cannot leave the table inconsistent in a way that
        // matters for counting; keep going rather than propagate the poison.
        self.sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Reads the receivers' counters; cheap to clone, usable after the receivers stopped.
#[derive(Clone, Debug)]
pub struct StatsReader {
    shared: Arc<Shared>,
}

impl StatsReader {
    pub fn stats(&self) -> ReceiverStats {
        let mut s = self.shared.counters.snapshot();
        s.queue_events = self.shared.queue.events();
        s.queue_bytes = self.shared.queue.bytes();
        s
    }

    /// Datagrams the kernel dropped on the UDP listener's socket because its receive buffer
    /// was full (they never reached the receiver, so no other counter has them). Reads procfs:
    /// for scrapes, not for loops. `None` without a UDP listener or where procfs is missing.
    pub fn udp_kernel_drops(&self) -> Option<u64> {
        self.shared.udp_inode.and_then(udp_drops::udp_socket_drops)
    }

    /// The `top_n` busiest sources; the rest are folded into `other`.
    pub fn sources(&self, top_n: usize) -> SourcesSnapshot {
        self.shared.sources().snapshot(top_n)
    }
}

/// The running receivers. Dropping the handle stops them too (without waiting).
#[derive(Debug)]
pub struct SyslogReceivers {
    shutdown_tx: watch::Sender<bool>,
    /// Every task holds a sender of this channel; `recv` returns `None` once all have ended.
    done_rx: mpsc::Receiver<()>,
    local: LocalAddrs,
    stats: StatsReader,
}

impl SyslogReceivers {
    /// Validates `config`, loads the TLS files, binds every listener, and spawns the tasks on
    /// the current tokio runtime. Events arrive on the returned queue (bounded by
    /// `queue_capacity_events` and `queue_max_bytes`), which is closed once the receivers have
    /// stopped.
    ///
    /// `parse_options.max_message_bytes` is replaced by the configuration's, so one key bounds
    /// both the framing and the parsing.
    pub async fn start(
        config: &SyslogReceiverConfig,
        mut parse_options: ParseOptions,
    ) -> Result<(Self, SyslogQueue), IntakeError> {
        config.validate()?;
        parse_options.max_message_bytes = config.max_message_bytes;

        let tls_acceptor =
            match (
                &config.tls_listen,
                &config.tls_cert_file,
                &config.tls_key_file,
            ) {
                (Some(_), Some(cert), Some(key)) => Some(TlsAcceptor::from(
                    load_tls_server_config(cert, key, config.tls_client_ca_file.as_deref())?,
                )),
                _ => None,
            };

        // Bind everything before spawning anything: a failure leaves nothing running.
        let bind_err = |transport, addr| {
            move |source| IntakeError::Bind {
                transport,
                addr,
                source,
            }
        };
        let udp = match config.udp_listen {
            Some(a) => {
                let sock = UdpSocket::bind(a).await.map_err(bind_err("UDP", a))?;
                set_receive_buffer(&sock, config.udp_receive_buffer_bytes);
                Some(sock)
            }
            None => None,
        };
        let tcp = match config.tcp_listen {
            Some(a) => Some(TcpListener::bind(a).await.map_err(bind_err("TCP", a))?),
            None => None,
        };
        let tls = match (config.tls_listen, tls_acceptor) {
            (Some(a), Some(acceptor)) => Some((
                TcpListener::bind(a).await.map_err(bind_err("TLS", a))?,
                acceptor,
            )),
            _ => None,
        };
        let local = LocalAddrs {
            udp: udp.as_ref().and_then(|s| s.local_addr().ok()),
            tcp: tcp.as_ref().and_then(|l| l.local_addr().ok()),
            tls: tls.as_ref().and_then(|(l, _)| l.local_addr().ok()),
        };

        let udp_inode = udp.as_ref().and_then(udp_drops::socket_inode);
        let (tx, rx, queue_level) =
            queue::channel(config.queue_capacity_events, config.queue_max_bytes);
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            sources: Mutex::new(SourceTable::new(
                config.max_tracked_sources,
                config.per_source_rate_limit_per_second,
                config.per_source_burst_messages,
            )),
            warn: WarnLimiter::default(),
            opts: parse_options,
            when_full: config.when_full,
            queue: queue_level,
            udp_inode,
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        let intake = Intake {
            shared: shared.clone(),
            tx,
            _done: done_tx,
        };
        let conn = ConnSettings {
            table: ConnTable::new(Limits {
                max_connections: config.max_connections,
                max_per_source: config.max_connections_per_source,
                evict_idle_after: Duration::from_secs(config.evict_idle_after_seconds),
            }),
            idle: Duration::from_secs(config.idle_timeout_seconds),
            handshake: Duration::from_secs(config.tls_handshake_timeout_seconds),
            max_message_bytes: config.max_message_bytes,
        };

        if let Some(sock) = udp {
            tokio::spawn(run_udp(
                sock,
                intake.clone(),
                Shutdown::new(shutdown_rx.clone()),
                config.max_message_bytes,
            ));
        }
        if let Some(listener) = tcp {
            tokio::spawn(run_listener(
                listener,
                None,
                intake.clone(),
                Shutdown::new(shutdown_rx.clone()),
                conn.clone(),
            ));
        }
        if let Some((listener, acceptor)) = tls {
            tokio::spawn(run_listener(
                listener,
                Some(acceptor),
                intake.clone(),
                Shutdown::new(shutdown_rx.clone()),
                conn,
            ));
        }
        drop(intake);
        tracing::info!(
            udp = ?local.udp,
            tcp = ?local.tcp,
            tls = ?local.tls,
            mutual_tls = config.tls_client_ca_file.is_some(),
            "syslog receivers started"
        );

        Ok((
            SyslogReceivers {
                shutdown_tx,
                done_rx,
                local,
                stats: StatsReader { shared },
            },
            rx,
        ))
    }

    /// The bound addresses.
    pub fn local_addrs(&self) -> LocalAddrs {
        self.local
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ReceiverStats {
        self.stats.stats()
    }

    /// The `top_n` busiest sources; the rest are folded into `other`.
    pub fn sources(&self, top_n: usize) -> SourcesSnapshot {
        self.stats.sources(top_n)
    }

    /// A reader of the counters that outlives the handle (for a metrics endpoint).
    pub fn stats_reader(&self) -> StatsReader {
        self.stats.clone()
    }

    /// Tells every task to stop, without waiting.
    pub fn signal_shutdown(&self) {
        self.shutdown_tx.send_replace(true);
    }

    /// Stops the listeners and connections and waits until every task has ended; the event
    /// channel is then closed (the consumer still gets what is queued). Messages a connection
    /// was waiting to queue (`when_full = block`) are counted as `dropped_closed_total`.
    pub async fn shutdown(mut self) {
        self.signal_shutdown();
        while self.done_rx.recv().await.is_some() {}
        tracing::info!("syslog receivers stopped");
    }
}

/// What one task needs to deliver messages.
#[derive(Clone, Debug)]
struct Intake {
    shared: Arc<Shared>,
    tx: QueueSender,
    /// Never sent on: dropped when the task ends (see `SyslogReceivers::done_rx`).
    _done: mpsc::Sender<()>,
}

impl Intake {
    fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Counts a message read from `transport`, and applies the source's rate limit.
    fn admit(&self, transport: Transport, ip: IpAddr) -> bool {
        bump(self.counters().messages(transport));
        let (ok, overflowed) = {
            let mut t = self.shared.sources();
            let ok = t.admit(ip, std::time::Instant::now());
            (ok, t.last_overflowed)
        };
        if overflowed && self.shared.warn.allow(WarnReason::SourceTableFull) {
            tracing::warn!(
                "syslog source table full: further sources are accounted and rate-limited \
                 together as 'other'"
            );
        }
        if !ok {
            let n = bump(&self.counters().dropped_rate_limited);
            if self.shared.warn.allow(WarnReason::RateLimited) {
                tracing::warn!(
                    src_ip = %ip,
                    dropped_rate_limited_total = n,
                    "syslog source above its rate limit: messages dropped (counted; next \
                     warning in a minute at most)"
                );
            }
        }
        ok
    }

    /// Parses one message; `None` when strict mode rejected it (counted).
    fn parse(
        &self,
        bytes: &[u8],
        framed: Option<&Frame>,
        peer: SocketAddr,
        received: Timestamp,
    ) -> Option<SyslogEvent> {
        let opts = &self.shared.opts;
        let parsed = match framed {
            Some(frame) => parse_syslog_frame(frame, received, opts),
            None => parse_syslog(bytes, received, opts),
        };
        match parsed {
            Ok(mut ev) => {
                ev.src_ip = Some(peer.ip());
                ev.src_port = Some(peer.port());
                if ev.anomalies.contains(&Anomaly::Truncated) {
                    bump(&self.counters().truncated);
                }
                Some(ev)
            }
            Err(e) => {
                let n = bump(&self.counters().rejected);
                if self.shared.warn.allow(WarnReason::Rejected) {
                    tracing::warn!(
                        src_ip = %peer.ip(),
                        error = %e,
                        rejected_total = n,
                        "syslog message rejected by strict parsing (counted; next warning in a \
                         minute at most)"
                    );
                }
                None
            }
        }
    }

    fn count_queue_full(&self, ip: IpAddr) {
        let n = bump(&self.counters().dropped_queue_full);
        self.shared.sources().count_queue_full(ip);
        if self.shared.warn.allow(WarnReason::QueueFull) {
            tracing::warn!(
                dropped_queue_full_total = n,
                "syslog event queue full: messages dropped (counted; next warning in a minute \
                 at most)"
            );
        }
    }

    /// Under `drop_newest` (and always for UDP): whether a message of `raw_len` bytes may
    /// still fit in the queue; when not, it is dropped and counted as `queue_full` at once,
    /// before any parsing, so that a flood against a full queue costs little.
    fn may_fit(&self, raw_len: usize, ip: IpAddr) -> bool {
        if self.tx.may_fit(raw_len) {
            return true;
        }
        self.count_queue_full(ip);
        false
    }

    /// Queues an event, or drops it (counted) when the queue is full.
    fn offer(&self, ev: SyslogEvent, ip: IpAddr) {
        match self.tx.try_send(ev) {
            Offer::Queued => {
                bump(&self.counters().delivered);
            }
            Offer::Full(_) => self.count_queue_full(ip),
            Offer::Closed => {
                bump(&self.counters().dropped_closed);
            }
        }
    }

    /// Queues an event under the `when_full` policy; with `block`, waits for room (or for
    /// shutdown).
    async fn deliver(&self, ev: SyslogEvent, ip: IpAddr, shutdown: &mut Shutdown) {
        if self.shared.when_full == WhenFull::DropNewest {
            return self.offer(ev, ip);
        }
        let ev = match self.tx.try_send(ev) {
            Offer::Queued => {
                bump(&self.counters().delivered);
                return;
            }
            Offer::Closed => {
                bump(&self.counters().dropped_closed);
                return;
            }
            Offer::Full(ev) => ev,
        };
        tokio::select! {
            r = self.tx.send(ev) => match r {
                Ok(()) => bump(&self.counters().delivered),
                Err(_) => bump(&self.counters().dropped_closed),
            },
            () = shutdown.recv() => bump(&self.counters().dropped_closed),
        };
    }
}

/// Asks for a receive buffer of `bytes` on the UDP socket (0: leave the system's default):
/// forced past `net.core.rmem_max` where the agent may (root or `CAP_NET_ADMIN`, while it
/// still has them at start), else as far as the limit allows; the size in effect is logged.
fn set_receive_buffer(sock: &UdpSocket, bytes: usize) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    if bytes == 0 {
        return;
    }
    if setsockopt(sock, sockopt::RcvBufForce, &bytes).is_err() {
        let _ = setsockopt(sock, sockopt::RcvBuf, &bytes);
    }
    // Linux reports twice what was set (its bookkeeping share included).
    let effective = getsockopt(sock, sockopt::RcvBuf).map_or(0, |b| b / 2);
    if effective < bytes {
        tracing::info!(
            asked = bytes,
            effective,
            "syslog UDP receive buffer capped by net.core.rmem_max (raise it, or start the agent \
             with CAP_NET_ADMIN, to absorb larger bursts)"
        );
    } else {
        tracing::debug!(bytes = effective, "syslog UDP receive buffer");
    }
}

/// The receive time of a message.
fn now() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now())
}

/// The sender as seen by humans: an IPv4 client of a dual-stack socket is shown as IPv4.
fn canonical(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

async fn run_udp(
    sock: UdpSocket,
    intake: Intake,
    mut shutdown: Shutdown,
    max_message_bytes: usize,
) {
    // Two bytes more than the maximum: a datagram that fills the buffer was cut by the kernel
    // and is longer than the maximum (the parser flags it `truncated`); one that does not is
    // whole, and may end with a LF we remove before checking its length.
    let capacity = max_message_bytes.saturating_add(2);
    let mut buf = vec![0u8; capacity];
    loop {
        let (n, peer) = tokio::select! {
            biased;
            () = shutdown.recv() => break,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    let n = bump(&intake.counters().udp_receive_errors);
                    if intake.shared.warn.allow(WarnReason::UdpReceive) {
                        tracing::warn!(error = %e, udp_receive_errors_total = n, "syslog UDP receive failed");
                    }
                    tokio::select! {
                        () = shutdown.recv() => break,
                        () = tokio::time::sleep(UDP_ERROR_BACKOFF) => continue,
                    }
                }
            },
        };
        // An empty datagram carries no message.
        if n == 0 {
            continue;
        }
        let peer = canonical(peer);
        if !intake.admit(Transport::Udp, peer.ip()) {
            continue;
        }
        let mut data = buf.get(..n).unwrap_or_default();
        if n < capacity {
            // Many senders end a datagram with LF (rsyslog drops it on reception too).
            data = data.strip_suffix(b"\n").unwrap_or(data);
            data = data.strip_suffix(b"\r").unwrap_or(data);
        }
        if !intake.may_fit(data.len(), peer.ip()) {
            continue;
        }
        if let Some(ev) = intake.parse(data, None, peer, now()) {
            // UDP cannot push back: drop newest under either policy (see `WhenFull::Block`).
            intake.offer(ev, peer.ip());
        }
    }
}

/// What every connection task needs besides the intake.
#[derive(Clone, Debug)]
struct ConnSettings {
    table: Arc<ConnTable>,
    idle: Duration,
    handshake: Duration,
    max_message_bytes: usize,
}

/// Held by a connection task: frees its slot and updates the gauge when the task ends.
#[derive(Debug)]
struct ConnGuard {
    shared: Arc<Shared>,
    slot: ConnSlot,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared
            .counters
            .connections_active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn run_listener(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    intake: Intake,
    mut shutdown: Shutdown,
    conn: ConnSettings,
) {
    let transport = if tls.is_some() {
        Transport::Tls
    } else {
        Transport::Tcp
    };
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.recv() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    let n = bump(&intake.counters().accept_errors);
                    if intake.shared.warn.allow(WarnReason::Accept) {
                        tracing::warn!(error = %e, transport = transport.as_str(), accept_errors_total = n, "syslog listener accept failed");
                    }
                    tokio::select! {
                        () = shutdown.recv() => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                    }
                }
            },
        };
        let peer = canonical(peer);
        let slot = match conn.table.admit(peer.ip()) {
            Ok((slot, evicted)) => {
                if evicted {
                    connection_evicted(&intake, peer);
                }
                slot
            }
            Err(refusal) => {
                // Closing at once (rather than waiting for a slot, as mini-redis does) keeps a
                // flood of connections from queueing in the kernel's backlog unseen.
                drop(stream);
                connection_refused(&intake, peer, refusal);
                continue;
            }
        };
        bump(match transport {
            Transport::Tls => &intake.counters().tls_connections_accepted,
            _ => &intake.counters().tcp_connections_accepted,
        });
        bump(&intake.counters().connections_active);
        let guard = ConnGuard {
            shared: intake.shared.clone(),
            slot,
        };
        tokio::spawn(handle_connection(
            stream,
            peer,
            tls.clone(),
            intake.clone(),
            shutdown.clone(),
            conn.clone(),
            guard,
        ));
    }
}

fn connection_refused(intake: &Intake, peer: SocketAddr, refusal: Refusal) {
    let counters = intake.counters();
    match refusal {
        Refusal::ConnectionLimit => {
            let n = bump(&counters.connections_refused);
            if intake.shared.warn.allow(WarnReason::ConnectionLimit) {
                tracing::warn!(
                    src_ip = %peer.ip(),
                    connections_refused_total = n,
                    "syslog connection limit reached and no connection idle long enough to \
                     evict: connection refused (counted; next warning in a minute at most)"
                );
            }
        }
        Refusal::PerSourceLimit => {
            let n = bump(&counters.connections_refused_per_source);
            if intake.shared.warn.allow(WarnReason::PerSourceLimit) {
                tracing::warn!(
                    src_ip = %peer.ip(),
                    connections_refused_per_source_total = n,
                    "syslog connection limit per source reached: connection refused (counted; \
                     next warning in a minute at most)"
                );
            }
        }
    }
}

fn connection_evicted(intake: &Intake, newcomer: SocketAddr) {
    let n = bump(&intake.counters().connections_evicted);
    if intake.shared.warn.allow(WarnReason::Evicted) {
        tracing::warn!(
            src_ip = %newcomer.ip(),
            connections_evicted_total = n,
            "syslog connection limit reached: the connection idle longest was closed to make \
             room (counted; next warning in a minute at most)"
        );
    }
}

async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    intake: Intake,
    mut shutdown: Shutdown,
    conn: ConnSettings,
    guard: ConnGuard,
) {
    let slot = &guard.slot;
    match tls {
        None => read_messages(stream, peer, Transport::Tcp, &intake, shutdown, &conn, slot).await,
        Some(acceptor) => {
            let handshake = tokio::select! {
                () = shutdown.recv() => return,
                () = slot.evicted() => return,
                r = tokio::time::timeout(conn.handshake, acceptor.accept(stream)) => r,
            };
            match handshake {
                Ok(Ok(tls_stream)) => {
                    let t = Transport::Tls;
                    read_messages(tls_stream, peer, t, &intake, shutdown, &conn, slot).await
                }
                Ok(Err(e)) => tls_handshake_failed(&intake, peer, &e.to_string()),
                Err(_) => tls_handshake_failed(&intake, peer, "timed out"),
            }
        }
    }
}

fn tls_handshake_failed(intake: &Intake, peer: SocketAddr, error: &str) {
    let n = bump(&intake.counters().tls_handshake_failures);
    if intake.shared.warn.allow(WarnReason::TlsHandshake) {
        tracing::warn!(
            src_ip = %peer.ip(),
            error,
            tls_handshake_failures_total = n,
            "syslog TLS handshake failed (counted; next warning in a minute at most)"
        );
    } else {
        tracing::debug!(src_ip = %peer.ip(), error, "syslog TLS handshake failed");
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnEnd {
    Eof,
    Idle,
    Evicted,
    Error,
    Shutdown,
}

/// Reads, frames and delivers the messages of one connection until it ends.
async fn read_messages<S: AsyncRead + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    transport: Transport,
    intake: &Intake,
    mut shutdown: Shutdown,
    conn: &ConnSettings,
    slot: &ConnSlot,
) {
    let mut framer = StreamFramer::new(None, conn.max_message_bytes);
    let mut counted = FramerStats::default();
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut frames = Vec::new();
    // Reset by each complete message, not by each byte: a sender trickling one byte at a time
    // (slow loris) is closed as surely as a silent one.
    let mut deadline = Instant::now() + conn.idle;
    let end = loop {
        let read = tokio::select! {
            biased;
            () = shutdown.recv() => break ConnEnd::Shutdown,
            () = slot.evicted() => break ConnEnd::Evicted,
            () = tokio::time::sleep_until(deadline) => break ConnEnd::Idle,
            r = stream.read(&mut buf) => r,
        };
        let n = match read {
            Ok(0) => break ConnEnd::Eof,
            Ok(n) => n,
            // A TLS peer that closes without close_notify: many syslog senders do, and what
            // they sent is as good as a clean close's.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break ConnEnd::Eof,
            Err(e) => {
                tracing::debug!(src_ip = %peer.ip(), error = %e, "syslog connection read failed");
                break ConnEnd::Error;
            }
        };
        framer.push(buf.get(..n).unwrap_or_default(), &mut frames);
        count_framing(intake, peer, &framer, &mut counted);
        if !frames.is_empty() {
            deadline = Instant::now() + conn.idle;
            slot.touch();
            deliver_frames(&mut frames, peer, transport, intake, &mut shutdown).await;
        }
    };
    if end == ConnEnd::Eof {
        // A last message without its LF is still a message (an octet-counted one cut short is
        // flagged truncated by the framer).
        framer.finish(&mut frames);
        count_framing(intake, peer, &framer, &mut counted);
        deliver_frames(&mut frames, peer, transport, intake, &mut shutdown).await;
    }
    let counters = intake.counters();
    match end {
        ConnEnd::Idle => {
            bump(&counters.connections_idle_closed);
            tracing::debug!(src_ip = %peer.ip(), transport = transport.as_str(), "syslog connection closed: idle");
        }
        ConnEnd::Evicted => {
            // Counted when the slot was taken (`connections_evicted`).
            tracing::debug!(src_ip = %peer.ip(), transport = transport.as_str(), "syslog connection closed: evicted");
        }
        ConnEnd::Error => {
            bump(&counters.connection_errors);
        }
        ConnEnd::Eof | ConnEnd::Shutdown => {}
    }
}

/// Adds what the framer counted since the last call (as it happens, not when the connection
/// ends: a long-lived connection must show up in the metrics while it lives).
fn count_framing(
    intake: &Intake,
    peer: SocketAddr,
    framer: &StreamFramer,
    counted: &mut FramerStats,
) {
    let now = framer.stats();
    let counters = intake.counters();
    add(
        &counters.framer_discarded_bytes,
        now.discarded_bytes_total
            .saturating_sub(counted.discarded_bytes_total),
    );
    let bad = now
        .bad_length_total
        .saturating_sub(counted.bad_length_total);
    if bad > 0 {
        add(&counters.framer_bad_length, bad);
        if intake.shared.warn.allow(WarnReason::BadLength) {
            tracing::warn!(
                src_ip = %peer.ip(),
                framer_bad_length_total = counters.framer_bad_length.load(std::sync::atomic::Ordering::Relaxed),
                "syslog octet-counting length that cannot be right: resynchronised on the next \
                 frame (counted; next warning in a minute at most)"
            );
        }
    }
    *counted = now;
}

async fn deliver_frames(
    frames: &mut Vec<Frame>,
    peer: SocketAddr,
    transport: Transport,
    intake: &Intake,
    shutdown: &mut Shutdown,
) {
    let received = now();
    for frame in frames.drain(..) {
        if !intake.admit(transport, peer.ip()) {
            continue;
        }
        if intake.shared.when_full == WhenFull::DropNewest
            && !intake.may_fit(frame.bytes.len(), peer.ip())
        {
            continue;
        }
        if let Some(ev) = intake.parse(&frame.bytes, Some(&frame), peer, received) {
            intake.deliver(ev, peer.ip(), shutdown).await;
        }
    }
}
