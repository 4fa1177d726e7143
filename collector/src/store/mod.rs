//! Where the collector keeps what it receives. [`Store`] is the storage contract the intake
//! relies on (one batch stored atomically, deduplicated by (agent, spool, sequence) and its
//! content, durable when the call returns); [`sqlite::SqliteStore`] is the embedded implementation, and a PostgreSQL one
//! can be added behind the same trait (`docs/collector.md`). [`StoreHandle`] runs a store on
//! a dedicated thread behind a bounded queue, so the async side never blocks on disk.

pub mod sqlite;

use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;

use mamori_models::Event;
use mamori_models::detect::Alert;
use tokio::sync::oneshot;

use crate::audit::AuditEntry;
use crate::incident::{Asset, Incident, IncidentStatus, StoredAlert};

/// Everything that can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("{path}: {reason}")]
    Open { path: String, reason: String },
    #[error("the database is at schema version {found}, newer than this collector's {known}")]
    NewerSchema { found: u32, known: u32 },
    #[error("encoding an event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("a batch body: {0}")]
    Body(String),
    #[error("a value out of the storable range: {0}")]
    OutOfRange(&'static str),
    #[error("the storage queue is full")]
    Busy,
    #[error("the storage thread is gone")]
    Closed,
}

/// A batch as received, ready to store.
#[derive(Clone, Debug)]
pub struct IncomingBatch {
    /// The agent id (from its certificate), lowercase.
    pub agent: String,
    /// The site the allowlist maps the agent to.
    pub site: String,
    /// `Mamori-Spool-Id`; empty from agents that do not send one.
    pub spool_id: String,
    /// `Mamori-Sequence`.
    pub sequence: u64,
    /// `Mamori-Batch-Created-Unix-Ms`, when sent.
    pub created_unix_ms: Option<u64>,
    /// When the collector received the batch, Unix milliseconds.
    pub received_unix_ms: u64,
    /// The events, in the agent's order.
    pub events: Vec<Event>,
    /// The body as received: gzip of the events' JSON Lines (the intake parsed it into
    /// `events`). Stored as is, so raw events cost the store one compressed write per batch;
    /// empty: the store encodes and compresses `events` itself. Passed only when every line
    /// of it is in `events` (nothing quarantined).
    pub body: Vec<u8>,
    /// SHA-256 of the body as received: what tells a resend (the same bytes, from the agent's
    /// spool file) from another batch under the same number.
    pub body_sha256: [u8; 32],
    /// Lines of the body that were not events, kept aside with their reason.
    pub quarantined: Vec<mamori_wire::RejectedLine>,
}

/// What storing a batch did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Stored now. `out_of_order`: the agent had sent a higher sequence from the same spool.
    New {
        out_of_order: bool,
        continuity: Continuity,
    },
    /// This (agent, spool, sequence) was stored before with the same body; nothing was
    /// written.
    Duplicate,
}

/// How a newly stored batch follows the agent's earlier ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Continuity {
    /// The agent's first batch, or one from the same spool as its latest.
    Continues,
    /// From another spool than the agent's latest batch: its numbering started again (spool
    /// lost or wiped, a reinstalled host) or two agents share one identity.
    NewSpool { previous: String },
    /// This (agent, spool, sequence) was stored before with other content: a number reused
    /// (a power loss with `fsync = never`, or a spool restored from a copy). Stored as well.
    Reused,
}

/// A quarantined line, as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct QuarantinedLine {
    pub id: i64,
    pub site: String,
    pub agent: String,
    pub spool_id: String,
    pub sequence: u64,
    /// When the batch arrived, Unix ms.
    pub received_unix_ms: u64,
    #[serde(flatten)]
    pub line: mamori_wire::RejectedLine,
}

/// The storage contract. Implementations are used from one thread at a time (the
/// [`StoreHandle`] thread); every method is synchronous and may block on disk or network.
pub trait Store: Send + 'static {
    /// Stores `batch` and its events in one transaction, unless (agent, sequence) is there
    /// already. When this returns `Ok`, the batch survives a crash of the process (and, with
    /// SQLite's `synchronous=FULL`, a power loss): only then may the batch be acknowledged.
    fn store_batch(&mut self, batch: &IncomingBatch) -> Result<Stored, StoreError>;

    /// Deletes raw events whose own time is before `cutoff_unix_us`, about `limit` at a
    /// time; returns how many. Events are stored per batch, so a batch's events go together
    /// once its newest event is past the cutoff. Batch records stay (they are the
    /// deduplication memory).
    fn expire_events(&mut self, cutoff_unix_us: i64, limit: u32) -> Result<u64, StoreError>;

    /// Stores a site's baseline (the JSON of `mamori_models::detect::Baseline`), learned now.
    fn store_baseline(
        &mut self,
        site: &str,
        created_unix_ms: u64,
        format_version: u32,
        json: &str,
    ) -> Result<(), StoreError>;

    /// The latest baseline of every site that has one: (site, JSON).
    fn latest_baselines(&mut self) -> Result<Vec<(String, String)>, StoreError>;

    /// The schema version the store is at.
    fn schema_version(&mut self) -> Result<u32, StoreError>;

    /// Starts a transaction: the calls up to [`Store::commit`] are stored together or not at
    /// all (a crash in between leaves none of them).
    fn begin(&mut self) -> Result<(), StoreError>;

    /// Ends the transaction begun by [`Store::begin`], durably.
    fn commit(&mut self) -> Result<(), StoreError>;

    /// Abandons the transaction begun by [`Store::begin`].
    fn rollback(&mut self) -> Result<(), StoreError>;

    /// Stores an alert from online detection, or updates the stored one with the same
    /// identity (site, detector, kind, subject, first occurrence) as it grows.
    fn upsert_alert(
        &mut self,
        site: &str,
        alert: &Alert,
        received_unix_ms: u64,
    ) -> Result<AlertUpsert, StoreError>;

    /// Files an alert under an incident.
    fn attach_alert(&mut self, alert_id: i64, incident_id: i64) -> Result<(), StoreError>;

    /// Stores an incident: inserted when `id` is 0 (the new id is returned), else replaced.
    fn save_incident(&mut self, incident: &Incident) -> Result<i64, StoreError>;

    /// One incident.
    fn incident(&mut self, id: i64) -> Result<Option<Incident>, StoreError>;

    /// Incidents, newest first.
    fn incidents(&mut self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError>;

    /// Incidents not resolved (open or acknowledged), counted by severity.
    fn open_incident_counts(
        &mut self,
    ) -> Result<std::collections::BTreeMap<mamori_models::detect::Severity, u64>, StoreError>;

    /// Stored alerts, newest first.
    fn alerts(&mut self, query: &AlertQuery) -> Result<Vec<StoredAlert>, StoreError>;

    /// One stored alert.
    fn alert(&mut self, id: i64) -> Result<Option<StoredAlert>, StoreError>;

    /// Adds an entry to the audit trail; returns its id.
    fn record_audit(&mut self, entry: &AuditEntry) -> Result<i64, StoreError>;

    /// Marks an alert as accepted as normal by the audit entry `audit_id`.
    fn mark_alert_accepted(&mut self, alert_id: i64, audit_id: i64) -> Result<(), StoreError>;

    /// The audit trail, newest first.
    fn audit(&mut self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;

    /// Stores an inventory entry, replacing the one of the same (site, ip).
    fn save_asset(&mut self, asset: &Asset) -> Result<(), StoreError>;

    /// The inventory of one site, or of every site; by site then address.
    fn assets(&mut self, site: Option<&str>) -> Result<Vec<Asset>, StoreError>;

    /// Quarantined lines, newest first: of one site or all, at most `limit` (0: 100).
    fn quarantined(
        &mut self,
        site: Option<&str>,
        limit: u32,
    ) -> Result<Vec<QuarantinedLine>, StoreError>;

    /// Flushes and closes (SQLite: checkpoints the WAL).
    fn close(self: Box<Self>) -> Result<(), StoreError>;
}

/// What [`Store::upsert_alert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertUpsert {
    pub id: i64,
    /// The incident it is filed under, when it was stored before and filed.
    pub incident_id: Option<i64>,
    /// First time this alert is stored.
    pub new: bool,
}

/// Which incidents to list.
#[derive(Clone, Debug, Default)]
pub struct IncidentQuery {
    pub site: Option<String>,
    /// Any of these (empty: all).
    pub statuses: Vec<IncidentStatus>,
    /// At most this many (0: a default of 100).
    pub limit: u32,
}

/// Which alerts to list.
#[derive(Clone, Debug, Default)]
pub struct AlertQuery {
    pub site: Option<String>,
    pub incident_id: Option<i64>,
    /// At most this many (0: a default of 100).
    pub limit: u32,
}

/// Which audit entries to list.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub site: Option<String>,
    /// At most this many (0: a default of 100).
    pub limit: u32,
}

/// The reply to a stored batch: what storing did, and the batch back (for detection).
type StoreReply = (Result<Stored, StoreError>, Box<IncomingBatch>);

/// Work sent to the storage thread.
type Work = Box<dyn FnOnce(&mut dyn Store) + Send>;

enum Command {
    Store(Box<IncomingBatch>, oneshot::Sender<StoreReply>),
    Expire(i64, u32, oneshot::Sender<Result<u64, StoreError>>),
    Baseline {
        site: String,
        created_unix_ms: u64,
        format_version: u32,
        json: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Baselines(oneshot::Sender<Result<Vec<(String, String)>, StoreError>>),
    /// Any work on the store (it replies through its own channel).
    Call(Work),
}

/// A [`Store`] running on its own thread behind a queue of `capacity` commands: the async
/// intake submits and awaits, and a full queue is answered at once ([`StoreError::Busy`]:
/// backpressure, not memory).
#[derive(Debug)]
pub struct StoreHandle {
    tx: Mutex<Option<SyncSender<Command>>>,
    thread: Mutex<Option<JoinHandle<Result<(), StoreError>>>>,
}

impl StoreHandle {
    /// Starts the storage thread.
    pub fn spawn(store: Box<dyn Store>, capacity: usize) -> Result<StoreHandle, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Command>(capacity);
        let thread = std::thread::Builder::new()
            .name("mamori-store".into())
            .spawn(move || {
                let mut store = store;
                // Ends when every sender is gone: the queue is drained first.
                while let Ok(cmd) = rx.recv() {
                    match cmd {
                        Command::Store(batch, reply) => {
                            let stored = store.store_batch(&batch);
                            let _ = reply.send((stored, batch));
                        }
                        Command::Baseline {
                            site,
                            created_unix_ms,
                            format_version,
                            json,
                            reply,
                        } => {
                            let _ = reply.send(store.store_baseline(
                                &site,
                                created_unix_ms,
                                format_version,
                                &json,
                            ));
                        }
                        Command::Baselines(reply) => {
                            let _ = reply.send(store.latest_baselines());
                        }
                        Command::Expire(cutoff, limit, reply) => {
                            let _ = reply.send(store.expire_events(cutoff, limit));
                        }
                        Command::Call(work) => work(store.as_mut()),
                    }
                }
                store.close()
            })
            .map_err(|e| StoreError::Open {
                path: "(storage thread)".into(),
                reason: e.to_string(),
            })?;
        Ok(StoreHandle {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    fn submit(&self, cmd: Command) -> Result<(), StoreError> {
        let tx = lock(&self.tx).clone().ok_or(StoreError::Closed)?;
        tx.try_send(cmd).map_err(|e| match e {
            TrySendError::Full(_) => StoreError::Busy,
            TrySendError::Disconnected(_) => StoreError::Closed,
        })
    }

    /// Stores a batch (see [`Store::store_batch`]); [`StoreError::Busy`] when the queue is full.
    pub async fn store_batch(&self, batch: IncomingBatch) -> Result<Stored, StoreError> {
        self.store_batch_returning(batch).await.map(|(s, _)| s)
    }

    /// [`StoreHandle::store_batch`], giving the batch back once stored (so its events can go
    /// on to detection without a copy).
    pub async fn store_batch_returning(
        &self,
        batch: IncomingBatch,
    ) -> Result<(Stored, Box<IncomingBatch>), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Command::Store(Box::new(batch), reply))?;
        let (stored, batch) = answer.await.map_err(|_| StoreError::Closed)?;
        Ok((stored?, batch))
    }

    /// Stores a baseline (see [`Store::store_baseline`]).
    pub async fn store_baseline(
        &self,
        site: &str,
        created_unix_ms: u64,
        format_version: u32,
        json: String,
    ) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Command::Baseline {
            site: site.to_owned(),
            created_unix_ms,
            format_version,
            json,
            reply,
        })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// The latest baseline per site (see [`Store::latest_baselines`]).
    pub async fn latest_baselines(&self) -> Result<Vec<(String, String)>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Command::Baselines(reply))?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// One retention step (see [`Store::expire_events`]).
    pub async fn expire_events(&self, cutoff_unix_us: i64, limit: u32) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Command::Expire(cutoff_unix_us, limit, reply))?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `work` on the storage thread, after what is queued before it. Several calls that
    /// must be stored together go in one `work` between [`Store::begin`] and
    /// [`Store::commit`] (see [`transaction`]).
    pub async fn call<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Store) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.submit(Command::Call(Box::new(move |store: &mut dyn Store| {
            let _ = reply.send(work(store));
        })))?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Closes the queue, lets the thread finish what was queued, and closes the store.
    /// Blocks: call it from a blocking context (or `spawn_blocking`).
    /// Idempotent; later submissions get [`StoreError::Closed`].
    pub fn close(&self) -> Result<(), StoreError> {
        lock(&self.tx).take();
        let thread = lock(&self.thread).take();
        match thread {
            Some(t) => t.join().map_err(|_| StoreError::Closed)?,
            None => Ok(()),
        }
    }
}

/// Runs `work` in one transaction of `store`: committed when it returns `Ok`, rolled back
/// otherwise.
pub fn transaction<R>(
    store: &mut dyn Store,
    work: impl FnOnce(&mut dyn Store) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    store.begin()?;
    match work(store) {
        Ok(r) => {
            store.commit()?;
            Ok(r)
        }
        Err(e) => {
            if let Err(again) = store.rollback() {
                tracing::error!(error = %again, "rollback failed");
            }
            Err(e)
        }
    }
}

/// A poisoned lock here only guards an `Option` that is always consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
