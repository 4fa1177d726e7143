//! The batch intake: the server side of `docs/shipping.md`. Agents post gzip batches over
//! HTTP/1.1 on mutually authenticated TLS; a batch is acknowledged only once the store has
//! committed it, and a batch stored before is acknowledged as a duplicate without storing it
//! twice.
//!
//! Every resource is bounded and every refusal counted ([`RefusalReason`]): connections in
//! their handshake (`max_handshakes`, per address `max_handshakes_per_address`: a newcomer
//! closes an older handshake, `admission.rs`) and authenticated ones (`max_connections`,
//! beyond it closed at once), the TLS handshake and request headers
//! (`header_timeout_seconds`: slow loris), idle connections, batches in progress
//! (`max_concurrent_requests`, beyond it `503`), body size before and after decompression
//! (`413`), body time (`408`), and the storage queue (`503`). A refused agent retries with
//! backoff; none of this holds up another agent.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use mamori_models::Timestamp;
use mamori_models::detect::{Alert, DetectorName, Severity};
use mamori_wire::{
    AGENT_HEADER, BATCHES_PATH, CREATED_HEADER, EVENT_COUNT_HEADER, SEQUENCE_HEADER,
    SPOOL_ID_HEADER, WireError,
};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::admission::{AcceptBackoff, Admission, Pending};
use crate::budget::{MemoryBudget, Reservation, Shortfall};
use crate::config::{CollectorConfig, TlsFiles, seconds};
use crate::detection::DetectionQueue;
use crate::metrics::CollectorMetrics;
use crate::stats::{self, IntakeStats, IntakeStatsSnapshot, RefusalReason};
use crate::store::sqlite::SqliteStore;
use crate::store::{Continuity, IncomingBatch, Store, StoreError, StoreHandle, Stored};

/// Raw events deleted per retention step (one short transaction each, so batches are stored
/// between steps).
const RETENTION_STEP_EVENTS: u32 = 10_000;
/// How long a batch waits for room in the memory budget before it is answered `503`.
const BUDGET_WAIT: Duration = Duration::from_secs(1);

/// Everything that can stop the intake from starting or ending cleanly.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("alert delivery: {0}")]
    Notify(String),
    #[error("intake task: {0}")]
    Task(String),
}

/// The limits a request is held to.
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_body_bytes: u64,
    max_decompressed_bytes: u64,
    header_timeout: Duration,
    body_timeout: Duration,
    idle_timeout: Duration,
    max_header_bytes: usize,
}

/// What every connection shares.
#[derive(Debug)]
struct Intake {
    /// Agent id (lowercase) → site.
    sites: BTreeMap<String, String>,
    store: Arc<StoreHandle>,
    /// Stored batches go on to online detection through this queue (never waited on).
    detection: DetectionQueue,
    stats: Arc<IntakeStats>,
    limits: Limits,
    requests: Arc<Semaphore>,
    /// Bytes of batches in progress ([`crate::budget`]).
    budget: MemoryBudget,
    shutting_down: AtomicBool,
    /// When each refusal reason was last logged at `warn` (one line a minute per reason).
    warned: Mutex<BTreeMap<RefusalReason, Instant>>,
    /// When quarantined lines were last logged at `warn`.
    warned_quarantine: Mutex<Option<Instant>>,
}

/// A reason is logged at `warn` at most once in this interval; the counters have the rest.
const WARN_INTERVAL: Duration = Duration::from_secs(60);

impl Intake {
    /// Counts a refusal and logs it, at `warn` once a minute per reason, else at `debug`.
    fn refuse(&self, reason: RefusalReason, status: u16, agent: Option<&str>, message: &str) {
        self.stats.refuse(reason);
        let now = Instant::now();
        let loud = {
            let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
            match warned.get(&reason) {
                Some(last) if now.duration_since(*last) < WARN_INTERVAL => false,
                _ => {
                    warned.insert(reason, now);
                    true
                }
            }
        };
        let agent = agent.unwrap_or("-");
        if loud {
            tracing::warn!(
                reason = reason.as_str(),
                status,
                agent,
                message,
                "refused (repeats within a minute are counted, not logged)"
            );
        } else {
            tracing::debug!(reason = reason.as_str(), status, agent, message, "refused");
        }
    }
}

/// A running collector: the intake listener, its connections, the storage thread and the
/// retention task, on the current tokio runtime.
#[derive(Debug)]
pub struct Collector {
    addr: SocketAddr,
    intake: Arc<Intake>,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    retention: Option<JoinHandle<()>>,
    /// Online detection (`detection.rs`).
    detection: Option<JoinHandle<()>>,
    control: crate::detection::DetectionControl,
    /// Alerts to responders, when `[notify]` has a sink.
    notifier: Option<crate::notify::Notifier>,
    /// The HTTP API, when `[api]` is configured: its address and task.
    api_addr: Option<SocketAddr>,
    api: Option<JoinHandle<()>>,
    /// The `/metrics` endpoint, when `[metrics]` is configured: its address and task.
    metrics_addr: Option<SocketAddr>,
    metrics: Option<JoinHandle<()>>,
}

impl Collector {
    /// Validates `config` (every problem at once), opens the store (migrating it), and
    /// starts listening.
    pub async fn start(config: &CollectorConfig) -> Result<Collector, IntakeError> {
        config.validate(Path::new("(configuration)"))?;
        let store = SqliteStore::open(&config.storage.sqlite_path)?;
        Self::start_with_store(config, Box::new(store), None).await
    }

    /// Starts with any [`Store`] (configuration already validated). `on_change` hears of
    /// every incident change once it is stored.
    pub async fn start_with_store(
        config: &CollectorConfig,
        store: Box<dyn Store>,
        on_change: Option<crate::detection::OnChange>,
    ) -> Result<Collector, IntakeError> {
        let files = config.intake.load_tls().map_err(|problems| {
            IntakeError::Config(crate::config::ConfigError {
                file: "(configuration)".into(),
                problems,
            })
        })?;
        let acceptor = TlsAcceptor::from(Arc::new(tls_config(files)?));
        let i = &config.intake;
        let limits = Limits {
            max_body_bytes: i.max_body_bytes,
            max_decompressed_bytes: i.max_decompressed_bytes,
            header_timeout: seconds(i.header_timeout_seconds),
            body_timeout: seconds(i.body_timeout_seconds),
            idle_timeout: seconds(i.idle_timeout_seconds),
            max_header_bytes: usize::try_from(i.max_header_bytes).unwrap_or(8192),
        };
        let listener = bind(i.listen).map_err(|source| IntakeError::Bind {
            addr: i.listen,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| IntakeError::Bind {
            addr: i.listen,
            source,
        })?;
        let capacity = usize::try_from(config.storage.queue_batches).unwrap_or(64);
        let sites = config.sites();
        let stats = Arc::new(IntakeStats::with_sites(sites.values().cloned()));
        // Responders hear of every incident change: the notifiers, then the caller's hook.
        let notifier = if config.notify.is_empty() {
            None
        } else {
            Some(
                crate::notify::Notifier::start(&config.notify)
                    .map_err(|e| IntakeError::Notify(e.to_string()))?,
            )
        };
        // Bound before the store opens, so a taken port fails the start with nothing to undo.
        let metrics_listener = match &config.metrics {
            None => None,
            Some(m) => {
                let listener = tokio::net::TcpListener::bind(m.listen)
                    .await
                    .map_err(|source| IntakeError::Bind {
                        addr: m.listen,
                        source,
                    })?;
                let addr = listener.local_addr().map_err(|source| IntakeError::Bind {
                    addr: m.listen,
                    source,
                })?;
                let metrics = CollectorMetrics::new(
                    Arc::clone(&stats),
                    Some(config.storage.sqlite_path.clone()),
                )
                .map(|m| m.with_notifier(notifier.clone()))
                .map_err(|e| IntakeError::Metrics(e.to_string()))?;
                Some((listener, addr, Arc::new(metrics)))
            }
        };
        let api_listener = match &config.api {
            None => None,
            Some(a) => {
                let tokens = a.load_tokens().map_err(|problems| {
                    IntakeError::Config(crate::config::ConfigError {
                        file: "(configuration)".into(),
                        problems,
                    })
                })?;
                let listener = tokio::net::TcpListener::bind(a.listen)
                    .await
                    .map_err(|source| IntakeError::Bind {
                        addr: a.listen,
                        source,
                    })?;
                let addr = listener.local_addr().map_err(|source| IntakeError::Bind {
                    addr: a.listen,
                    source,
                })?;
                let mut producer = crate::export::stix::Producer::new(a.organisation.clone());
                producer.sectors = a.sectors.clone();
                Some((
                    listener,
                    addr,
                    tokens,
                    producer,
                    crate::api::ApiLimits::new(a),
                ))
            }
        };
        let links = match (&config.api, &api_listener) {
            (Some(a), Some((_, addr, ..))) => a
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{addr}")),
            _ => String::new(),
        };
        let on_change: Option<crate::detection::OnChange> = match (notifier.clone(), on_change) {
            (None, hook) => hook,
            (Some(n), hook) => Some(Arc::new(move |c: &crate::incidents::Change| {
                n.notify(notice(c, &links));
                if let Some(h) = &hook {
                    h(c);
                }
            })),
        };
        let store = Arc::new(StoreHandle::spawn(store, capacity)?);
        let detection = crate::detection::start(
            &config.detection,
            Arc::clone(&store),
            Arc::clone(&stats),
            sites.values().cloned(),
            on_change.clone(),
        )
        .await;
        let (detection, control, detection_task) = match detection {
            Ok(started) => started,
            Err(e) => {
                // Nothing else holds the store yet: close it before failing the start.
                let _ = tokio::task::spawn_blocking(move || store.close()).await;
                return Err(e.into());
            }
        };
        let intake = Arc::new(Intake {
            sites,
            store,
            detection,
            budget: MemoryBudget::new(i.max_inflight_bytes, Arc::clone(&stats)),
            stats,
            limits,
            requests: Arc::new(Semaphore::new(
                usize::try_from(i.max_concurrent_requests).unwrap_or(1),
            )),
            shutting_down: AtomicBool::new(false),
            warned: Mutex::new(BTreeMap::new()),
            warned_quarantine: Mutex::new(None),
        });
        let (shutdown, rx) = watch::channel(false);
        let admission = Arc::new(Admission::new(i, Arc::clone(&intake.stats)));
        let grace = seconds(i.shutdown_grace_seconds);
        let server = tokio::spawn(accept_loop(
            listener,
            acceptor,
            Arc::clone(&intake),
            admission,
            grace,
            rx.clone(),
        ));
        let retention = (config.storage.event_retention_days > 0).then(|| {
            tokio::spawn(retention_loop(
                Arc::clone(&intake),
                u64::from(config.storage.event_retention_days),
                seconds(config.storage.retention_interval_seconds),
                rx,
            ))
        });
        let (metrics_addr, metrics) = match metrics_listener {
            None => (None, None),
            Some((listener, addr, metrics)) => {
                tracing::info!(%addr, "metrics endpoint listening (GET /metrics)");
                let task = tokio::spawn(mamori_agent::metrics::serve(
                    listener,
                    Arc::new(move || metrics.render()),
                    shutdown.subscribe(),
                ));
                (Some(addr), Some(task))
            }
        };
        let (api_addr, api) = match api_listener {
            None => (None, None),
            Some((listener, addr, tokens, producer, limits)) => {
                tracing::info!(%addr, tokens = tokens.len(), "HTTP API listening (/api/v1)");
                let state = Arc::new(crate::api::ApiState {
                    store: Arc::clone(&intake.store),
                    control: control.clone(),
                    tokens,
                    on_change,
                    stats: Arc::clone(&intake.stats),
                    producer,
                });
                let task = tokio::spawn(crate::api::serve(
                    listener,
                    state,
                    limits,
                    shutdown.subscribe(),
                ));
                (Some(addr), Some(task))
            }
        };
        tracing::info!(%addr, agents = intake.sites.len(), "intake listening");
        Ok(Collector {
            addr,
            intake,
            shutdown,
            server: Some(server),
            retention,
            detection: Some(detection_task),
            control,
            notifier,
            api_addr,
            api,
            metrics_addr,
            metrics,
        })
    }

    /// The address the intake listens on (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the `/metrics` endpoint (the real port when configured with port 0);
    /// `None` without `[metrics]`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Delivery counters of the notifiers, when `[notify]` has a sink.
    pub fn notify_stats(&self) -> Option<crate::notify::NotifySnapshot> {
        self.notifier.as_ref().map(crate::notify::Notifier::stats)
    }

    /// The address of the HTTP API (the real port when configured with port 0); `None`
    /// without `[api]`.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// The handle on online detection (site modes, drills, asset annotations).
    pub fn control(&self) -> crate::detection::DetectionControl {
        self.control.clone()
    }

    /// The store (shared with the intake).
    pub fn store(&self) -> Arc<StoreHandle> {
        Arc::clone(&self.intake.store)
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<IntakeStats> {
        Arc::clone(&self.intake.stats)
    }

    /// Graceful stop: stops accepting, lets requests in progress finish (their batches are
    /// stored and acknowledged) for up to `shutdown_grace_seconds`, closes every connection,
    /// then closes the store. A request cut at the end of the grace was not acknowledged, so
    /// its agent resends it.
    pub async fn shutdown(mut self) -> Result<IntakeStatsSnapshot, IntakeError> {
        let _ = self.shutdown.send(true);
        for task in [
            self.server.take(),
            self.retention.take(),
            self.metrics.take(),
            self.api.take(),
        ]
        .into_iter()
        .flatten()
        {
            task.await.map_err(|e| IntakeError::Task(e.to_string()))?;
        }
        // No batch comes any more: detection sees what is queued, stores its last alerts.
        self.intake.detection.close();
        if let Some(task) = self.detection.take() {
            task.await.map_err(|e| IntakeError::Task(e.to_string()))?;
        }
        if let Some(n) = self.notifier.take() {
            n.shutdown(Duration::from_secs(5)).await;
        }
        let snapshot = self.intake.stats.snapshot();
        // Every connection task has ended: what was queued is stored, then the store closes.
        let intake = Arc::clone(&self.intake);
        tokio::task::spawn_blocking(move || intake.store.close())
            .await
            .map_err(|e| IntakeError::Task(e.to_string()))??;
        Ok(snapshot)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        // Dropped without `shutdown`: stop at once (what a crash leaves; the store's
        // committed batches are durable).
        for task in [
            self.server.take(),
            self.retention.take(),
            self.metrics.take(),
            self.api.take(),
            self.detection.take(),
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // A restarted collector rebinds at once, past connections in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// rustls with the `ring` provider: the agents' CA (and CRLs) for client certificates, which
/// are required.
fn tls_config(files: TlsFiles) -> Result<rustls::ServerConfig, IntakeError> {
    let tls = |e: rustls::Error| IntakeError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in files.client_roots {
        roots.add(ca).map_err(tls)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .with_crls(files.crls)
    .build()
    .map_err(|e| IntakeError::Tls(e.to_string()))?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(files.chain, files.key)
        .map_err(tls)
}

/// Resolves when shutdown is signalled or its sender is gone.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    intake: Arc<Intake>,
    admission: Arc<Admission>,
    grace: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    let mut backoff = AcceptBackoff::intake(Arc::clone(&intake.stats));
    let mut paused_until: Option<tokio::time::Instant> = None;
    loop {
        let resume = paused_until.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = tokio::time::sleep_until(resume), if paused_until.is_some() => {
                paused_until = None;
            }
            accepted = listener.accept(), if paused_until.is_none() => match accepted {
                Ok((tcp, peer)) => {
                    backoff.succeeded();
                    // Never refused here: a full handshake table closes an older handshake.
                    let pending = admission.admit(peer.ip());
                    tasks.spawn(connection(
                        tcp,
                        acceptor.clone(),
                        Arc::clone(&intake),
                        pending,
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning, but
                    // keep reaping connections (which frees descriptors) and watching for
                    // shutdown meanwhile.
                    let pause = backoff.failed(&e);
                    paused_until = Some(tokio::time::Instant::now() + pause);
                }
            },
        }
    }
    drop(listener);
    intake.shutting_down.store(true, Ordering::SeqCst);
    // Connections saw the signal too: idle ones close now, busy ones after their request.
    let deadline = tokio::time::Instant::now() + grace;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(
                    connections = tasks.len(),
                    "shutdown grace over: closing connections with requests in progress"
                );
                tasks.shutdown().await;
            }
        }
    }
}

/// Per connection: what the watchdog needs to tell idle from slow.
#[derive(Debug)]
struct ConnState {
    /// Requests being handled (0 or 1 with HTTP/1.1).
    in_flight: AtomicU64,
    /// Requests answered.
    served: AtomicU64,
    /// Plaintext bytes read since the last answer (a request's headers arriving).
    bytes_since_answer: AtomicU64,
    /// When the last answer was given (or the connection was set up).
    last_answer: Mutex<Instant>,
}

impl ConnState {
    fn last_answer(&self) -> Instant {
        *self.last_answer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Marks a request in progress; on drop (answered or abandoned) resets the idle clock.
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn enter(state: &Arc<ConnState>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last_answer.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.bytes_since_answer.store(0, Ordering::SeqCst);
        self.0.served.fetch_add(1, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The TLS stream, counting the bytes hyper reads (so the watchdog sees a request arriving).
struct Tracked<T> {
    inner: T,
    state: Arc<ConnState>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            self.state
                .bytes_since_answer
                .fetch_add(read as u64, Ordering::SeqCst);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Decrements the open-connections gauge however the connection ends.
struct OpenGauge(Arc<IntakeStats>);

impl Drop for OpenGauge {
    fn drop(&mut self) {
        stats::sub(&self.0.connections_open, 1);
    }
}

async fn connection(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    intake: Arc<Intake>,
    mut pending: Pending,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = intake.limits;
    let _ = tcp.set_nodelay(true);
    let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp));
    let tls = tokio::select! {
        // A handshake that is done wins over an eviction that comes at the same moment.
        biased;
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                intake.refuse(RefusalReason::TlsHandshake, 0, None, &e.to_string());
                return;
            }
            Err(_) => {
                intake.refuse(
                    RefusalReason::HandshakeTimeout,
                    0,
                    None,
                    "handshake too slow",
                );
                return;
            }
        },
        why = pending.evicted() => {
            let message = format!(
                "handshake from {} closed to make room for a newer connection",
                pending.source()
            );
            intake.refuse(why.reason(), 0, None, &message);
            return;
        }
        _ = stopped(&mut shutdown) => return,
    };
    let Some(_permit) = pending.authenticated() else {
        intake.refuse(
            RefusalReason::TooManyConnections,
            0,
            None,
            "max_connections authenticated connections open; connection closed",
        );
        return;
    };
    stats::add(&intake.stats.connections_accepted, 1);
    stats::add(&intake.stats.connections_open, 1);
    let _gauge = OpenGauge(Arc::clone(&intake.stats));
    // The verifier requires a certificate, so there is one; without it every request is 403.
    let peer: Option<Arc<CertificateDer<'static>>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| Arc::new(c.clone().into_owned()));
    let state = Arc::new(ConnState {
        in_flight: AtomicU64::new(0),
        served: AtomicU64::new(0),
        bytes_since_answer: AtomicU64::new(0),
        last_answer: Mutex::new(Instant::now()),
    });
    let service = {
        let (intake, state) = (Arc::clone(&intake), Arc::clone(&state));
        service_fn(move |req| {
            let guard = InFlight::enter(&state);
            let (intake, peer) = (Arc::clone(&intake), peer.clone());
            async move {
                let answer = handle(req, &intake, peer.as_deref()).await;
                drop(guard);
                Ok::<_, Infallible>(answer)
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // The watchdog below times headers: hyper's own timer would also close idle
        // keep-alive connections as if they were slow.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let io = TokioIo::new(Tracked {
        inner: tls,
        state: Arc::clone(&state),
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let tick = (limits.header_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut watchdog = tokio::time::interval(tick);
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stopped(&mut shutdown), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(tokio::time::Instant::now() + limits.body_timeout);
            }
            _ = watchdog.tick() => {
                if let Some(deadline) = closing {
                    if tokio::time::Instant::now() >= deadline {
                        return;
                    }
                    continue;
                }
                if state.in_flight.load(Ordering::SeqCst) > 0 {
                    continue;
                }
                let waited = state.last_answer().elapsed();
                let partial = state.bytes_since_answer.load(Ordering::SeqCst) > 0;
                let fresh = state.served.load(Ordering::SeqCst) == 0;
                if (partial || fresh) && waited >= limits.header_timeout {
                    // Headers begun and not finished, or a new connection that sends
                    // nothing: slow loris. Closed at once.
                    intake.refuse(
                        RefusalReason::HeaderTimeout,
                        0,
                        None,
                        "request headers too slow; connection closed",
                    );
                    return;
                }
                if waited >= limits.idle_timeout {
                    conn.as_mut().graceful_shutdown();
                    closing = Some(tokio::time::Instant::now() + limits.header_timeout);
                }
            }
        }
    }
}

/// A refused request: its status, reason (counted) and a one-line explanation.
struct Refusal {
    status: StatusCode,
    reason: RefusalReason,
    message: String,
}

fn refusal(status: StatusCode, reason: RefusalReason, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason,
        message: message.into(),
    }
}

fn json_response(status: StatusCode, body: String, close: bool) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    if close {
        h.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    r
}

async fn handle(
    req: Request<Incoming>,
    intake: &Arc<Intake>,
    peer: Option<&CertificateDer<'static>>,
) -> Response<Full<Bytes>> {
    // For the log only: bounded (a DNS name is at most 253 characters).
    let claimed: Option<String> =
        header_str(&req, AGENT_HEADER).map(|a| a.chars().take(253).collect());
    match receive(req, intake, peer).await {
        Ok(ack) => json_response(
            StatusCode::OK,
            serde_json::to_string(&ack).unwrap_or_default(),
            false,
        ),
        Err(r) => {
            intake.refuse(r.reason, r.status.as_u16(), claimed.as_deref(), &r.message);
            // After a refusal the body may be unread: do not reuse the connection.
            let close = r.status != StatusCode::SERVICE_UNAVAILABLE;
            let body = serde_json::json!({ "error": r.reason.as_str(), "message": r.message });
            json_response(r.status, body.to_string(), close)
        }
    }
}

fn header_str<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Does `cert` name `agent` among its DNS subject alternative names?
fn certificate_names(cert: &CertificateDer<'_>, agent: &str) -> bool {
    let Ok(name) = ServerName::try_from(agent) else {
        return false;
    };
    if !matches!(name, ServerName::DnsName(_)) {
        return false;
    }
    webpki::EndEntityCert::try_from(cert)
        .and_then(|c| c.verify_is_valid_for_subject_name(&name))
        .is_ok()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the headers of a batch request say, checked.
struct BatchHeaders {
    agent: String,
    site: String,
    spool_id: String,
    sequence: u64,
    event_count: Option<u64>,
    created_unix_ms: Option<u64>,
    /// `Content-Length`, when sent.
    declared: Option<u64>,
}

/// Checks the request line and headers: path, method, identity against the certificate,
/// the allowlist, the numbering, the encoding and the declared size.
fn check_headers(
    req: &Request<Incoming>,
    intake: &Intake,
    peer: Option<&CertificateDer<'static>>,
) -> Result<BatchHeaders, Refusal> {
    use RefusalReason as R;
    if req.uri().path() != BATCHES_PATH {
        return Err(refusal(StatusCode::NOT_FOUND, R::NotFound, "no such path"));
    }
    if req.method() != hyper::Method::POST {
        return Err(refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            R::NotFound,
            "only POST",
        ));
    }
    let malformed = |m: &str| refusal(StatusCode::BAD_REQUEST, R::Malformed, m);
    let agent = header_str(req, AGENT_HEADER)
        .ok_or_else(|| malformed("missing Mamori-Agent"))?
        .to_ascii_lowercase();
    if !peer.is_some_and(|c| certificate_names(c, &agent)) {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            R::IdentityMismatch,
            "Mamori-Agent is not a name in the client certificate",
        ));
    }
    let Some(site) = intake.sites.get(&agent) else {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            R::UnknownAgent,
            "agent not in the allowlist",
        ));
    };
    // Agents before spool ids sent none: their batches keep the old numbering ('').
    let spool_id = match header_str(req, SPOOL_ID_HEADER) {
        None => String::new(),
        Some(id) if mamori_wire::valid_spool_id(id) => id.to_owned(),
        Some(_) => return Err(malformed("invalid Mamori-Spool-Id")),
    };
    let sequence = header_str(req, SEQUENCE_HEADER)
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| i64::try_from(s).is_ok())
        .ok_or_else(|| malformed("missing or invalid Mamori-Sequence"))?;
    let number = |name: &str, what: &str| match header_str(req, name) {
        None => Ok(None),
        Some(s) => s.parse::<u64>().map(Some).map_err(|_| malformed(what)),
    };
    let event_count = number(EVENT_COUNT_HEADER, "invalid Mamori-Event-Count")?;
    let created_unix_ms = number(CREATED_HEADER, "invalid Mamori-Batch-Created-Unix-Ms")?;
    if !header_str(req, header::CONTENT_ENCODING.as_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("gzip"))
    {
        return Err(malformed("Content-Encoding must be gzip"));
    }
    let declared =
        header_str(req, header::CONTENT_LENGTH.as_str()).and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(|n| n > intake.limits.max_body_bytes) {
        return Err(too_large(intake));
    }
    Ok(BatchHeaders {
        agent,
        site: site.clone(),
        spool_id,
        sequence,
        event_count,
        created_unix_ms,
        declared,
    })
}

fn too_large(intake: &Intake) -> Refusal {
    refusal(
        StatusCode::PAYLOAD_TOO_LARGE,
        RefusalReason::TooLarge,
        format!(
            "body over {} bytes compressed or {} decompressed",
            intake.limits.max_body_bytes, intake.limits.max_decompressed_bytes
        ),
    )
}

/// Reserves `bytes` of the memory budget into `held`, or refuses the batch: `503` when the
/// budget is taken for now (the agent retries), `413` when the batch could never fit.
async fn reserve(intake: &Intake, held: &mut Reservation, bytes: u64) -> Result<(), Refusal> {
    match intake.budget.reserve(held, bytes, BUDGET_WAIT).await {
        Ok(()) => Ok(()),
        Err(Shortfall::NotNow) => Err(refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            RefusalReason::MemoryBudget,
            "too many bytes of batches in progress",
        )),
        Err(Shortfall::Never) => Err(refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            RefusalReason::TooLarge,
            format!(
                "decoding this batch needs more than [intake] max_inflight_bytes ({} bytes of lines)",
                bytes
            ),
        )),
    }
}

/// Checks and reads one batch, then has it decoded and stored; its acknowledgement once
/// stored.
async fn receive(
    req: Request<Incoming>,
    intake: &Arc<Intake>,
    peer: Option<&CertificateDer<'static>>,
) -> Result<mamori_wire::Ack, Refusal> {
    use RefusalReason as R;
    if intake.shutting_down.load(Ordering::SeqCst) {
        return Err(refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            R::ShuttingDown,
            "shutting down",
        ));
    }
    let h = check_headers(&req, intake, peer)?;
    let malformed = |m: &str| refusal(StatusCode::BAD_REQUEST, R::Malformed, m);

    // From here the batch takes memory: one of a bounded number of slots, or 503, and
    // bytes of the budget for the body as declared (or its cap), or 503.
    let slot = Arc::clone(&intake.requests)
        .try_acquire_owned()
        .map_err(|_| {
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                R::Overloaded,
                "too many batches in progress",
            )
        })?;
    let mut reservation = Reservation::empty();
    let body_reserve = h.declared.unwrap_or(intake.limits.max_body_bytes);
    reserve(intake, &mut reservation, body_reserve).await?;
    let limit = usize::try_from(intake.limits.max_body_bytes).unwrap_or(usize::MAX);
    let body = match tokio::time::timeout(
        intake.limits.body_timeout,
        Limited::new(req.into_body(), limit).collect(),
    )
    .await
    {
        Err(_) => {
            return Err(refusal(
                StatusCode::REQUEST_TIMEOUT,
                R::BodyTimeout,
                "body too slow",
            ));
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(too_large(intake));
        }
        Ok(Err(e)) => return Err(malformed(&format!("reading the body: {e}"))),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    stats::add(&intake.stats.received_bytes, body.len() as u64);
    // A task of its own: if the agent goes away meanwhile, the batch is still decoded and
    // stored (its resend is then a duplicate), and the memory it holds stays reserved until
    // that work is done, never given back while a thread still holds it.
    let task = tokio::spawn(process(Arc::clone(intake), h, body, reservation, slot));
    task.await.map_err(|e| {
        refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            R::StorageError,
            e.to_string(),
        )
    })?
}

/// Memory one decoded event takes besides its strings: the enum itself and the allocator's
/// share of its small allocations.
const EVENT_BYTES: u64 = std::mem::size_of::<mamori_models::Event>() as u64 + 64;

/// Decodes and stores a batch whose body has been read.
async fn process(
    intake: Arc<Intake>,
    h: BatchHeaders,
    body: Bytes,
    mut reservation: Reservation,
    _slot: tokio::sync::OwnedSemaphorePermit,
) -> Result<mamori_wire::Ack, Refusal> {
    use RefusalReason as R;
    let malformed = |m: &str| refusal(StatusCode::BAD_REQUEST, R::Malformed, m);
    let blocking = |e: tokio::task::JoinError| {
        refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            R::StorageError,
            e.to_string(),
        )
    };
    // The gzip trailer says how large the body inflates: reserve for that text before
    // inflating, and hold the body to it (a bomb stops there).
    let claimed = mamori_wire::claimed_size(&body).ok_or_else(|| malformed("gzip: too short"))?;
    if claimed > intake.limits.max_decompressed_bytes {
        return Err(too_large(&intake));
    }
    reserve(&intake, &mut reservation, claimed).await?;
    let (jsonl, body) = tokio::task::spawn_blocking(move || {
        mamori_wire::decompress(&body, claimed).map(|j| (j, body))
    })
    .await
    .map_err(blocking)?
    .map_err(|e| match e {
        WireError::TooLarge { .. } => malformed(&format!(
            "the body inflates past the {claimed} bytes its gzip trailer claims"
        )),
        e => malformed(&e.to_string()),
    })?;
    // The events will take their own memory: each its enum, their strings at most the text.
    let lines = mamori_wire::count_lines(&jsonl);
    let events_bytes = lines
        .saturating_mul(EVENT_BYTES)
        .saturating_add(jsonl.len() as u64);
    reserve(&intake, &mut reservation, events_bytes).await?;
    let (decoded, body, digest) = tokio::task::spawn_blocking(move || {
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::digest(&body).into();
        (mamori_wire::decode_lines(&jsonl), body, digest)
    })
    .await
    .map_err(blocking)?;
    // The text is gone; the events and the body stay reserved.
    reservation.give_back(claimed);
    let lines = (decoded.events.len() + decoded.rejected.len()) as u64;
    if h.event_count.is_some_and(|n| n != lines) {
        return Err(malformed("Mamori-Event-Count does not match the body"));
    }
    let quarantined = decoded.rejected.len() as u64;
    if quarantined > 0 {
        note_quarantined(&intake, &h, &decoded.rejected);
    }
    let n_events = decoded.events.len() as u64;
    let mut by_type = [0u64; 3];
    for e in &decoded.events {
        if let Some(n) = by_type.get_mut(stats::event_type_index(e)) {
            *n += 1;
        }
    }
    let site_stats = intake.stats.site(&h.site);
    let batch = IncomingBatch {
        agent: h.agent.clone(),
        site: h.site.clone(),
        spool_id: h.spool_id.clone(),
        sequence: h.sequence,
        created_unix_ms: h.created_unix_ms,
        received_unix_ms: unix_ms(),
        events: decoded.events,
        // With lines set aside, the store writes a body of the events alone.
        body: if quarantined == 0 {
            Vec::from(body)
        } else {
            Vec::new()
        },
        body_sha256: digest,
        quarantined: decoded.rejected,
    };
    let ack = |duplicate| mamori_wire::Ack {
        acked: h.sequence,
        duplicate,
        quarantined,
    };
    match intake.store.store_batch_returning(batch).await {
        Ok((
            Stored::New {
                out_of_order,
                continuity,
            },
            batch,
        )) => {
            let health = continuity_alert(&intake, &h, &continuity, batch.received_unix_ms);
            stats::add(&intake.stats.batches_stored, 1);
            stats::add(&intake.stats.events_stored, n_events);
            stats::add(&intake.stats.events_quarantined, quarantined);
            if let Some(s) = site_stats {
                s.add_events(&by_type);
                s.seen(unix_ms());
            }
            if out_of_order {
                stats::add(&intake.stats.batches_out_of_order, 1);
                tracing::warn!(agent = %h.agent, sequence = h.sequence, "batch below the agent's highest sequence; stored");
            }
            // Durable: acknowledged now, detected later (the budget goes with the events).
            intake
                .detection
                .submit(
                    &h.site,
                    batch.events,
                    batch.received_unix_ms,
                    health,
                    reservation,
                )
                .await;
            Ok(ack(false))
        }
        Ok((Stored::Duplicate, _)) => {
            stats::add(&intake.stats.batches_duplicate, 1);
            if let Some(s) = site_stats {
                s.seen(unix_ms());
            }
            Ok(ack(true))
        }
        Err(StoreError::Busy) => Err(refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            R::Overloaded,
            "storage queue full",
        )),
        Err(StoreError::Closed) => Err(refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            R::ShuttingDown,
            "storage closed",
        )),
        Err(e) => {
            tracing::error!(error = %e, agent = %h.agent, sequence = h.sequence, "cannot store a batch; not acknowledged");
            Err(refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                R::StorageError,
                "storage error",
            ))
        }
    }
}

/// Logs lines set aside, at `warn` once a minute (the counter and the API have them all).
fn note_quarantined(intake: &Intake, h: &BatchHeaders, rejected: &[mamori_wire::RejectedLine]) {
    let now = Instant::now();
    let loud = {
        let mut warned = intake
            .warned_quarantine
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match *warned {
            Some(last) if now.duration_since(last) < WARN_INTERVAL => false,
            _ => {
                *warned = Some(now);
                true
            }
        }
    };
    let first = rejected.first().map_or("", |r| r.reason.as_str());
    if loud {
        tracing::warn!(
            agent = %h.agent,
            sequence = h.sequence,
            lines = rejected.len(),
            first_reason = first,
            "lines of a batch are not events: quarantined (GET /api/v1/quarantine), the rest stored \
             (repeats within a minute are counted, not logged)"
        );
    } else {
        tracing::debug!(agent = %h.agent, sequence = h.sequence, lines = rejected.len(), "lines quarantined");
    }
}

/// The health alert for a batch that does not continue the agent's numbering, counted and
/// logged; none when it does.
fn continuity_alert(
    intake: &Intake,
    h: &BatchHeaders,
    continuity: &Continuity,
    received_unix_ms: u64,
) -> Vec<Alert> {
    let (kind, summary, previous) = match continuity {
        Continuity::Continues => return Vec::new(),
        Continuity::NewSpool { previous } => {
            stats::add(&intake.stats.spool_changes, 1);
            (
                "agent_spool_restarted",
                format!(
                    "Agent {} now sends from a new spool ({}; was {previous}), numbering from {}: \
                     its spool was lost or wiped, the host reinstalled, or another agent uses its \
                     identity. Events it held and had not delivered are gone; confirm this was \
                     maintenance.",
                    h.agent, h.spool_id, h.sequence
                ),
                Some(previous.as_str()),
            )
        }
        Continuity::Reused => {
            stats::add(&intake.stats.sequence_reuses, 1);
            (
                "agent_sequence_reused",
                format!(
                    "Agent {} sent batch {} of spool {} with other content than before: a number \
                     used twice (a power loss with fsync = never, or a spool restored from a \
                     copy). Both are stored.",
                    h.agent, h.sequence, h.spool_id
                ),
                None,
            )
        }
    };
    tracing::warn!(agent = %h.agent, spool_id = %h.spool_id, previous_spool_id = previous, sequence = h.sequence, kind, "agent numbering");
    let ts = Timestamp::from_micros(
        i64::try_from(received_unix_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000),
    );
    let mut evidence = std::collections::BTreeMap::new();
    evidence.insert("agent".to_owned(), serde_json::json!(h.agent));
    evidence.insert("spool_id".to_owned(), serde_json::json!(h.spool_id));
    evidence.insert("sequence".to_owned(), serde_json::json!(h.sequence));
    if let Some(p) = previous {
        evidence.insert("previous_spool_id".to_owned(), serde_json::json!(p));
    }
    vec![
        Alert {
            ts,
            last_ts: ts,
            count: 1,
            detector: DetectorName::Intake,
            kind: kind.to_owned(),
            severity: Severity::Medium,
            summary,
            src_ip: None,
            dst_ip: None,
            asset: None,
            subject: h.agent.clone(),
            score: 0.5,
            evidence,
            attack: Vec::new(),
        }
        .with_attack(),
    ]
}

/// Deletes raw events older than the retention, a step at a time, every `interval`.
async fn retention_loop(
    intake: Arc<Intake>,
    days: u64,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let keep_us = i64::try_from(days.saturating_mul(86_400_000_000)).unwrap_or(i64::MAX);
    loop {
        let now_us = i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros()),
        )
        .unwrap_or(i64::MAX);
        let cutoff = now_us.saturating_sub(keep_us);
        let mut total = 0u64;
        loop {
            match intake
                .store
                .expire_events(cutoff, RETENTION_STEP_EVENTS)
                .await
            {
                Ok(n) => {
                    total += n;
                    stats::add(&intake.stats.events_expired, n);
                    if n < u64::from(RETENTION_STEP_EVENTS) {
                        break;
                    }
                }
                Err(StoreError::Busy) => break,
                Err(e) => {
                    tracing::error!(error = %e, "retention pass failed");
                    break;
                }
            }
            if *shutdown.borrow() {
                return;
            }
        }
        if total > 0 {
            tracing::info!(events = total, days, "expired raw events");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// What responders are told of an incident change. `links` is the API's base URL (empty
/// without an API).
fn notice(c: &crate::incidents::Change, links: &str) -> crate::notify::Notice {
    let i = &c.incident;
    let detectors: Vec<&str> = i.detectors.iter().map(String::as_str).collect();
    let assets: Vec<&str> = i.assets.iter().map(String::as_str).collect();
    crate::notify::Notice {
        key: format!("{}/{}", i.site, i.id),
        incident_id: i.id,
        alertname: "MamoriIncident".into(),
        site: i.site.clone(),
        asset: i.asset.clone(),
        severity: i.severity,
        detectors: i.detectors.iter().cloned().collect(),
        // The incident's own kind: a label of Alertmanager's alert identity, so it must not
        // change with each update (the change itself is the webhook's `event`).
        kind: i.kind.clone(),
        summary: i.title.clone(),
        description: format!(
            "Incident {} at site {} ({}, {}): {} alert(s) from {} since {} (event time); devices: {}.",
            i.id,
            i.site,
            i.severity.as_str(),
            i.status.as_str(),
            i.alert_count,
            detectors.join(", "),
            i.first_seen,
            assets.join(", ")
        ),
        runbook_url: None,
        generator_url: if links.is_empty() {
            String::new()
        } else {
            format!("{}/api/v1/incidents/{}", links.trim_end_matches('/'), i.id)
        },
        starts_at_unix_ms: i.detected_unix_ms,
        ends_at_unix_ms: i.resolved_unix_ms,
        exercise: i.exercise,
    }
}
