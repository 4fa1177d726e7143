//! Shipping events to the collector: batches, the disk spool, and the mTLS client.
//!
//! [`Shipper`] ties them together: producers [`push`](Shipper::push) events into the spool
//! (journaled at once, sealed into compressed batches by count, size or age), a client task
//! sends sealed batches in sequence order and deletes each only when the collector has
//! acknowledged it. Delivery is at least once; the collector deduplicates by (agent,
//! sequence), so what it stores is exactly once. Protocol and durability: `docs/shipping.md`.

pub mod batch;
pub mod client;
pub mod config;
pub mod spool;
pub mod stats;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mamori_models::Event;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use batch::{Batch, BatchHeader, BatchLimits};
pub use client::backoff_delay;
pub use config::{ConfigErrors, ConfigProblem, FsyncPolicy, ShipperConfig, WhenFull};
pub use mamori_wire::Ack;
pub use spool::{PushOutcome, Spool, SpoolConfig};
pub use stats::{ShipStats, ShipStatsSnapshot};

/// Everything that can go wrong while shipping.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding a batch: {0}")]
    Encode(String),
    #[error("batch body: {0}")]
    Wire(#[from] mamori_wire::WireError),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("connecting to {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("sending a batch: {0}")]
    Send(String),
    #[error("the collector refused the batch ({status}): {reason}")]
    Refused { status: u16, reason: String },
    #[error("the collector acknowledged batch {acked}, not {expected}")]
    WrongAck { expected: u64, acked: u64 },
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("shipping task: {0}")]
    Task(String),
}

/// How often a producer waiting for room in a full spool looks again (and at its stop flag)
/// between wake-ups by acknowledgements.
const FULL_RECHECK: Duration = Duration::from_millis(200);
/// The same for a producer on a plain thread, which has no wake-up: short, since each look
/// is one lock of the spool.
const FULL_RECHECK_BLOCKING: Duration = Duration::from_millis(20);

/// State shared by the producers, the flusher task and the client task.
#[derive(Debug)]
pub(crate) struct Shared {
    spool: Mutex<Spool>,
    /// A batch was sealed (one waiter: the client; a permit is kept if it is busy).
    batch_ready: Notify,
    /// A batch was acknowledged (producers waiting under `when_full = block`).
    space_freed: Notify,
    /// When the client, backing off after a failure, tries again (`None`: not backing off).
    /// A shutdown does not wait for an attempt that comes after its deadline.
    retry_at: Mutex<Option<Instant>>,
    /// A producer has waited for room (logged once).
    warned_full: AtomicBool,
    stats: Arc<ShipStats>,
}

impl Shared {
    /// The spool; a panic elsewhere while holding it leaves a spool that is still
    /// consistent on disk, so the poison is ignored.
    fn spool(&self) -> MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn retry_at(&self) -> Option<Instant> {
        *self.retry_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_retry_at(&self, at: Option<Instant>) {
        *self.retry_at.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    /// Runs spool file work (reads, fsyncs) off the async worker threads.
    async fn with_spool<T, F>(self: &Arc<Self>, f: F) -> Result<T, ShipError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Spool) -> Result<T, ShipError> + Send + 'static,
    {
        let shared = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&mut shared.spool()))
            .await
            .map_err(|e| ShipError::Task(e.to_string()))?
    }

    /// Runs a spool change that may seal batches; wakes the client if it did.
    fn sealing<T>(&self, f: impl FnOnce(&mut Spool) -> T) -> T {
        let before = stats_value(&self.stats.batches_spooled);
        let out = f(&mut self.spool());
        if stats_value(&self.stats.batches_spooled) != before {
            self.batch_ready.notify_one();
        }
        out
    }
}

fn stats_value(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

/// Resolves when shutdown is signalled or its sender is gone.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The agent's shipping: spool, flusher and client, running on the current tokio runtime.
#[derive(Debug)]
pub struct Shipper {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Shipper {
    /// Validates `config` (every problem at once), loads the certificates, opens the spool
    /// (recovering what a crash left) and starts the tasks on the current tokio runtime.
    pub fn start(config: &ShipperConfig) -> Result<Shipper, ShipError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| ShipError::Task(format!("Shipper::start needs a tokio runtime: {e}")))?;
        config.validate()?;
        let material = config.load_tls().map_err(ConfigErrors)?;
        let client = client::Client::new(config, client::tls_connector(material)?)?;
        let stats = Arc::new(ShipStats::default());
        let spool = Spool::open(&config.spool_dir, config.spool_config(), Arc::clone(&stats))?;
        let shared = Arc::new(Shared {
            spool: Mutex::new(spool),
            batch_ready: Notify::new(),
            space_freed: Notify::new(),
            retry_at: Mutex::new(None),
            warned_full: AtomicBool::new(false),
            stats,
        });
        let (shutdown, rx) = watch::channel(false);
        let tasks = vec![
            runtime.spawn(client::run(client, Arc::clone(&shared), rx.clone())),
            runtime.spawn(flusher(
                Arc::clone(&shared),
                config.batch_limits().max_age,
                rx,
            )),
        ];
        Ok(Shipper {
            shared,
            shutdown,
            tasks,
        })
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<ShipStats> {
        Arc::clone(&self.shared.stats)
    }

    /// Takes one event without waiting. With `when_full = block` and the spool full it is
    /// refused: [`PushOutcome::Full`], counted in `events_refused_total`. Writes to the
    /// journal; when the event completes a batch, seals it (one fsync with `fsync = always`).
    pub fn try_push(&self, event: &Event) -> Result<PushOutcome, ShipError> {
        let outcome = self.shared.sealing(|s| s.push(event))?;
        if outcome == PushOutcome::Full {
            stats::add(&self.shared.stats.events_refused, 1);
        }
        Ok(outcome)
    }

    /// Takes one event from a thread that may block (the capture thread), waiting for room
    /// with `when_full = block` until `stop` is set. A stopping agent must not wait for a
    /// collector that may be down: the event is then refused ([`PushOutcome::Full`], counted
    /// in `events_refused_total`).
    pub fn push_blocking(
        &self,
        event: &Event,
        stop: &AtomicBool,
    ) -> Result<PushOutcome, ShipError> {
        loop {
            match self.shared.sealing(|s| s.push(event))? {
                PushOutcome::Accepted => return Ok(PushOutcome::Accepted),
                PushOutcome::Full if stop.load(Ordering::Relaxed) => {
                    stats::add(&self.shared.stats.events_refused, 1);
                    return Ok(PushOutcome::Full);
                }
                PushOutcome::Full => {
                    self.warn_full();
                    std::thread::sleep(FULL_RECHECK_BLOCKING);
                }
            }
        }
    }

    /// Takes one event, waiting for room with `when_full = block` for as long as it takes.
    pub async fn push(&self, event: &Event) -> Result<(), ShipError> {
        self.push_until(event, &AtomicBool::new(false))
            .await
            .map(|_| ())
    }

    /// Takes one event, waiting for room with `when_full = block` until `stop` is set; then
    /// the event is refused ([`PushOutcome::Full`], counted in `events_refused_total`), so a
    /// stopping agent is never held by a collector that is down.
    pub async fn push_until(
        &self,
        event: &Event,
        stop: &AtomicBool,
    ) -> Result<PushOutcome, ShipError> {
        loop {
            let freed = self.shared.space_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.shared.sealing(|s| s.push(event))? {
                PushOutcome::Accepted => return Ok(PushOutcome::Accepted),
                PushOutcome::Full if stop.load(Ordering::Relaxed) => {
                    stats::add(&self.shared.stats.events_refused, 1);
                    return Ok(PushOutcome::Full);
                }
                // Re-check now and then too: the spool also drains by quarantine, and the
                // stop flag is no waker.
                PushOutcome::Full => {
                    self.warn_full();
                    let _ = tokio::time::timeout(FULL_RECHECK, freed).await;
                }
            }
        }
    }

    fn warn_full(&self) {
        if !self.shared.warned_full.swap(true, Ordering::Relaxed) {
            tracing::warn!("the spool is full: intake waits for the collector (logged once)");
        }
    }

    /// Seals the open batch now; returns its sequence number.
    pub fn flush(&self) -> Result<Option<u64>, ShipError> {
        self.shared.sealing(|s| s.seal())
    }

    /// Sealed batches not yet acknowledged.
    pub fn spooled_batches(&self) -> usize {
        self.shared.spool().len()
    }

    /// Graceful stop: seals the open batch, lets the client deliver for up to `drain`, then
    /// stops the tasks. What is left stays spooled for the next start. The drain ends early
    /// when the collector cannot be reached (a connection attempt failed meanwhile, or the
    /// next one comes after the deadline): waiting would only delay the stop.
    pub async fn shutdown(mut self, drain: Duration) -> Result<ShipStatsSnapshot, ShipError> {
        let sealed = self.flush();
        let deadline = Instant::now() + drain;
        let connect_failures = stats_value(&self.shared.stats.connect_failures);
        while !self.shared.spool().is_empty() && Instant::now() < deadline {
            let unreachable = stats_value(&self.shared.stats.connect_failures) != connect_failures
                || self.shared.retry_at().is_some_and(|at| at >= deadline);
            if unreachable {
                tracing::info!("the collector cannot be reached: not waiting to deliver");
                break;
            }
            let freed = self.shared.space_freed.notified();
            let _ = tokio::time::timeout(Duration::from_millis(50), freed).await;
        }
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "shipping task ended badly");
            }
        }
        sealed?;
        Ok(self.shared.stats.snapshot())
    }

    /// Stops the tasks at once, sealing nothing and flushing nothing: what a crash of the
    /// agent leaves on disk (for tests of recovery).
    pub async fn abandon(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Seals the open batch when its age limit passes.
async fn flusher(shared: Arc<Shared>, max_age: Duration, mut shutdown: watch::Receiver<bool>) {
    // Without an open batch, look again this often (a batch opened meanwhile has at least
    // three quarters of its age left).
    let idle = (max_age / 4).max(Duration::from_millis(10));
    loop {
        let deadline = shared.spool().deadline();
        let wake = deadline.unwrap_or_else(|| Instant::now() + idle);
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = stopped(&mut shutdown) => return,
        }
        let sealed = shared.with_spool(|s| s.seal_if_due(Instant::now())).await;
        match sealed {
            Ok(Some(_)) => shared.batch_ready.notify_one(),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot seal a batch; it stays journaled");
                tokio::select! {
                    _ = tokio::time::sleep(idle) => {}
                    _ = stopped(&mut shutdown) => return,
                }
            }
        }
    }
}
