//! The disk spool: every event from the moment it is accepted until the collector has
//! acknowledged the batch that carries it.
//!
//! A folder holds:
//! - `<seq>.open`: the journal of the batch being filled, one JSON line appended per event
//!   (written, not fsync'd: it survives the agent being killed, not a power loss);
//! - `<seq>.batch`: sealed batches ([`Batch`] framing: lengths and CRC-32), each written as
//!   `<seq>.batch.tmp`, fsync'd, renamed, and the folder fsync'd (with `fsync = always`), so a
//!   batch the spool has sealed survives a power loss;
//! - `next_sequence`: the next sequence number, persisted (the same way) before the newest
//!   file is removed, so a number is never reused even when the spool runs empty;
//! - `quarantine/`: torn and corrupt files found at start or at read, kept for a look
//!   (the newest [`MAX_QUARANTINED_FILES`]);
//! - `rejected/`: batches the collector refused as bad input (`400`, `413`), set aside so the
//!   next batch can go (the newest [`MAX_REJECTED_FILES`]);
//! - `spool_id`: the spool's random identity, made when the folder is first used. It goes with
//!   every batch (`Mamori-Spool-Id`): sequence numbers are unique within one spool, so a
//!   spool lost and made anew (a disk replaced, a host reinstalled) starts at 1 again under a
//!   new id, and the collector tells its batches from the old ones instead of taking them for
//!   duplicates.
//!
//! `<seq>` is zero-padded to 12 digits so a listing sorts in sequence order.
//!
//! After a crash, [`Spool::open`] moves temp files and files that fail their checks to
//! quarantine (counted), seals the journal of the batch that was open (keeping every complete
//! line; a line cut by the crash is counted and dropped), and carries on numbering after the
//! highest number seen anywhere. A batch is removed only by [`Spool::ack`] or, with
//! `when_full = drop_oldest`, to make room (counted, logged once per episode).
//!
//! Bound: sealed batches take at most `max_bytes` plus one batch (the one being sealed) plus
//! the batch in flight, which is never dropped (so the collector never receives a batch the
//! agent counted as dropped).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mamori_models::Event;

use super::ShipError;
use super::batch::{Batch, BatchLimits, OpenBatch};
use super::config::{FsyncPolicy, WhenFull};
use super::stats::{self, ShipStats};

/// Quarantined files kept; older ones are deleted at start.
pub const MAX_QUARANTINED_FILES: usize = 64;
/// Rejected batches kept; older ones are deleted as new ones arrive.
pub const MAX_REJECTED_FILES: usize = 64;

const STATE_FILE: &str = "next_sequence";
const STATE_TMP: &str = "next_sequence.tmp";
const QUARANTINE_DIR: &str = "quarantine";
const REJECTED_DIR: &str = "rejected";
const SPOOL_ID_FILE: &str = "spool_id";
/// Sequence numbers start at 1, so an ack of 0 never matches a batch.
const FIRST_SEQUENCE: u64 = 1;

/// What the spool needs to know.
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    /// Written into every batch header.
    pub agent_id: String,
    /// Bound on sealed batches, in bytes.
    pub max_bytes: u64,
    pub when_full: WhenFull,
    pub fsync: FsyncPolicy,
    pub limits: BatchLimits,
}

/// The result of [`Spool::push`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Journaled; it will be delivered or counted as dropped.
    Accepted,
    /// `when_full = block` and the spool is full: not taken. The caller waits or counts it.
    Full,
}

#[derive(Clone, Copy, Debug)]
struct Sealed {
    bytes: u64,
    events: u32,
    created_unix_ms: u64,
}

#[derive(Debug)]
struct Open {
    batch: OpenBatch,
    journal: File,
    journal_len: u64,
}

/// File kinds by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Batch,
    Temp,
    Journal,
}

fn parse_name(name: &str) -> Option<(u64, Kind)> {
    let (digits, ext) = name.split_once('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seq = digits.parse().ok()?;
    let kind = match ext {
        "batch" => Kind::Batch,
        "batch.tmp" => Kind::Temp,
        "open" => Kind::Journal,
        _ => return None,
    };
    Some((seq, kind))
}

fn batch_name(seq: u64) -> String {
    format!("{seq:012}.batch")
}

fn journal_name(seq: u64) -> String {
    format!("{seq:012}.open")
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ShipError + '_ {
    move |source| ShipError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The spool. Not thread-safe by itself: the shipper keeps it behind a mutex.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    id: String,
    cfg: SpoolConfig,
    sealed: BTreeMap<u64, Sealed>,
    bytes: u64,
    /// Events in `sealed`.
    sealed_events: u64,
    next_sequence: u64,
    persisted_next: u64,
    open: Option<Open>,
    in_flight: Option<u64>,
    full_logged: bool,
    stats: Arc<ShipStats>,
}

impl Spool {
    /// Opens (creating) the spool in `dir` and recovers what a crash left behind.
    pub fn open(dir: &Path, cfg: SpoolConfig, stats: Arc<ShipStats>) -> Result<Spool, ShipError> {
        let quarantine = dir.join(QUARANTINE_DIR);
        fs::create_dir_all(&quarantine).map_err(io_err(&quarantine))?;
        let rejected = dir.join(REJECTED_DIR);
        fs::create_dir_all(&rejected).map_err(io_err(&rejected))?;
        let id = spool_id(dir, cfg.fsync)?;
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            id,
            cfg,
            sealed: BTreeMap::new(),
            bytes: 0,
            sealed_events: 0,
            next_sequence: FIRST_SEQUENCE,
            persisted_next: 0,
            open: None,
            in_flight: None,
            full_logged: false,
            stats,
        };
        let persisted = spool.read_state();
        let mut highest: Option<u64> = None;
        let mut journals = Vec::new();
        for (name, seq, kind) in list(dir)? {
            highest = highest.max(Some(seq));
            match kind {
                Kind::Batch => match spool.check_file(&name, seq) {
                    Ok(sealed) => spool.index(seq, sealed),
                    Err(reason) => spool.quarantine(&name, &reason),
                },
                Kind::Temp => {
                    spool.quarantine(&name, "temp file never renamed (crash while sealing)")
                }
                Kind::Journal => journals.push(seq),
            }
        }
        for (_, seq, _) in list(&quarantine)?.iter().chain(&list(&rejected)?) {
            highest = highest.max(Some(*seq));
        }
        spool.next_sequence = [
            FIRST_SEQUENCE,
            persisted.unwrap_or(0),
            highest.map_or(0, |h| h.saturating_add(1)),
        ]
        .into_iter()
        .max()
        .unwrap_or(FIRST_SEQUENCE);
        spool.persisted_next = persisted.unwrap_or(0);
        if spool.persisted_next < spool.next_sequence {
            spool.persist_state()?;
        }
        // Every number on disk is now below the persisted one: old quarantine can go.
        prune(&quarantine, MAX_QUARANTINED_FILES);
        journals.sort_unstable();
        for seq in journals {
            spool.recover_journal(seq)?;
        }
        // Accepted by an earlier run: with `events_accepted_total` this balances against
        // acked + dropped + still spooled.
        stats::add(&spool.stats.events_recovered, spool.sealed_events);
        spool.update_gauges();
        if !spool.sealed.is_empty() {
            tracing::info!(
                dir = %spool.dir.display(),
                spool_id = %spool.id,
                batches = spool.sealed.len(),
                bytes = spool.bytes,
                next_sequence = spool.next_sequence,
                "spool resumed"
            );
        }
        Ok(spool)
    }

    /// Accepts one event: appends it to the open batch's journal, sealing batches as the
    /// limits say. With `when_full = block` and the spool full, returns [`PushOutcome::Full`]
    /// and takes nothing.
    pub fn push(&mut self, event: &Event) -> Result<PushOutcome, ShipError> {
        if self.cfg.when_full == WhenFull::Block && self.bytes >= self.cfg.max_bytes {
            self.note_full();
            return Ok(PushOutcome::Full);
        }
        let mut line = serde_json::to_vec(event).map_err(|e| ShipError::Encode(e.to_string()))?;
        line.push(b'\n');
        if self
            .open
            .as_ref()
            .is_some_and(|o| o.batch.would_overflow(line.len(), &self.cfg.limits))
        {
            self.seal()?;
        }
        if self.open.is_none() {
            self.start_batch()?;
        }
        let Some(open) = self.open.as_mut() else {
            return Err(ShipError::Encode("no open batch".into()));
        };
        let path = self.dir.join(journal_name(open.batch.sequence));
        if let Err(e) = open.journal.write_all(&line) {
            // Cut a partial line off so the next one starts clean.
            let _ = open.journal.set_len(open.journal_len);
            return Err(io_err(&path)(e));
        }
        open.journal_len = open.journal_len.saturating_add(line.len() as u64);
        open.batch.push_line(&line);
        stats::add(&self.stats.events_accepted, 1);
        stats::set(
            &self.stats.spool_events,
            self.sealed_events + u64::from(open.batch.events()),
        );
        if open.batch.is_full(&self.cfg.limits) {
            self.seal()?;
        }
        Ok(PushOutcome::Accepted)
    }

    /// Seals the open batch if its age limit has passed; returns its sequence number.
    pub fn seal_if_due(&mut self, now: Instant) -> Result<Option<u64>, ShipError> {
        match self.deadline() {
            Some(d) if d <= now => self.seal(),
            _ => Ok(None),
        }
    }

    /// When the open batch must be sealed, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.open
            .as_ref()
            .map(|o| o.batch.deadline(&self.cfg.limits))
    }

    /// Seals the open batch now (graceful shutdown, tests); returns its sequence number.
    pub fn seal(&mut self) -> Result<Option<u64>, ShipError> {
        let Some(open) = self.open.as_ref() else {
            return Ok(None);
        };
        let seq = open.batch.sequence;
        let events = open.batch.events();
        if events > 0 {
            let batch = Batch::seal(open.batch.header(&self.cfg.agent_id), open.batch.jsonl())?;
            // On failure the batch stays open (and journaled): a later seal retries.
            self.store(&batch, events)?;
        }
        self.open = None;
        self.update_gauges();
        let journal = self.dir.join(journal_name(seq));
        fs::remove_file(&journal).map_err(io_err(&journal))?;
        Ok(Some(seq))
    }

    /// The spool's identity (see the module doc).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The oldest sealed batch: the next to send.
    pub fn oldest(&self) -> Option<u64> {
        self.sealed.keys().next().copied()
    }

    /// Reads batch `seq` for sending and marks it in flight (never dropped to make room).
    /// `None` when it is gone (dropped) or failed its checks (quarantined, counted).
    pub fn begin_send(&mut self, seq: u64) -> Result<Option<Batch>, ShipError> {
        if !self.sealed.contains_key(&seq) {
            return Ok(None);
        }
        let name = batch_name(seq);
        let path = self.dir.join(&name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(file = %path.display(), "spooled batch vanished");
                self.forget(seq);
                return Ok(None);
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        match Batch::decode(&bytes) {
            Ok(batch) if batch.header.sequence == seq => {
                self.in_flight = Some(seq);
                Ok(Some(batch))
            }
            Ok(_) => {
                self.quarantine(&name, "sequence number differs from the file name");
                self.forget(seq);
                Ok(None)
            }
            Err(reason) => {
                self.quarantine(&name, &reason.to_string());
                self.drop_corrupt(seq);
                Ok(None)
            }
        }
    }

    /// The collector refused batch `seq` as bad input, for good: it is moved to `rejected/`
    /// (the newest [`MAX_REJECTED_FILES`] are kept) and its events counted as dropped, so the
    /// batches after it can go. Returns its event count, or `None` if it was no longer here.
    pub fn reject(&mut self, seq: u64, reason: &str) -> Result<Option<u32>, ShipError> {
        if self.in_flight == Some(seq) {
            self.in_flight = None;
        }
        let Some(entry) = self.sealed.get(&seq).copied() else {
            return Ok(None);
        };
        let newest_on_disk = self.open.is_none() && seq.saturating_add(1) >= self.next_sequence;
        if newest_on_disk && self.persisted_next < self.next_sequence {
            self.persist_state()?;
        }
        let name = batch_name(seq);
        let from = self.dir.join(&name);
        let dir = self.dir.join(REJECTED_DIR);
        if fs::rename(&from, dir.join(&name)).is_err() {
            let _ = fs::remove_file(&from);
        }
        prune(&dir, MAX_REJECTED_FILES);
        self.forget(seq);
        stats::add(&self.stats.batches_rejected, 1);
        let total = stats::add(&self.stats.events_rejected, u64::from(entry.events));
        tracing::warn!(
            sequence = seq,
            events = entry.events,
            reason,
            events_rejected_total = total,
            file = %dir.join(&name).display(),
            "the collector refused a batch as bad input: set aside, the next one goes"
        );
        Ok(Some(entry.events))
    }

    /// The send of the batch in flight failed: it stays, first in line.
    pub fn end_send(&mut self) {
        self.in_flight = None;
    }

    /// The collector stored batch `seq`: delete it. Returns its event count, or `None` if it
    /// was no longer in the spool.
    pub fn ack(&mut self, seq: u64) -> Result<Option<u32>, ShipError> {
        if self.in_flight == Some(seq) {
            self.in_flight = None;
        }
        let Some(entry) = self.sealed.get(&seq).copied() else {
            return Ok(None);
        };
        self.remove_batch_file(seq)?;
        self.forget(seq);
        stats::add(&self.stats.events_acked, u64::from(entry.events));
        if self.full_logged && self.bytes < self.cfg.max_bytes / 2 {
            self.full_logged = false;
            tracing::info!(bytes = self.bytes, "spool has room again");
        }
        Ok(Some(entry.events))
    }

    /// Whether `push` would refuse (`block`) or sealing would drop (`drop_oldest`).
    pub fn is_full(&self) -> bool {
        self.bytes >= self.cfg.max_bytes
    }

    /// Sealed batches waiting.
    pub fn len(&self) -> usize {
        self.sealed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sealed.is_empty()
    }

    /// Bytes of sealed batches.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Events in the open batch (accepted, not yet sealed).
    pub fn open_events(&self) -> u32 {
        self.open.as_ref().map_or(0, |o| o.batch.events())
    }

    /// The number the next batch will get.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn start_batch(&mut self) -> Result<(), ShipError> {
        let seq = self.next_sequence;
        let path = self.dir.join(journal_name(seq));
        let journal = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        self.next_sequence = seq.saturating_add(1);
        self.open = Some(Open {
            batch: OpenBatch::new(seq, unix_ms(SystemTime::now()), Instant::now()),
            journal,
            journal_len: 0,
        });
        Ok(())
    }

    /// Writes a sealed batch durably (per the fsync policy) and indexes it.
    fn store(&mut self, batch: &Batch, events: u32) -> Result<(), ShipError> {
        let seq = batch.header.sequence;
        let bytes = batch.encode()?;
        let len = bytes.len() as u64;
        self.make_room(len)?;
        let tmp = self.dir.join(format!("{seq:012}.batch.tmp"));
        let path = self.dir.join(batch_name(seq));
        {
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&bytes).map_err(io_err(&tmp))?;
            if self.cfg.fsync == FsyncPolicy::Always {
                f.sync_all().map_err(io_err(&tmp))?;
            }
        }
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        self.sync_dir()?;
        self.index(
            seq,
            Sealed {
                bytes: len,
                events,
                created_unix_ms: batch.header.created_unix_ms,
            },
        );
        stats::add(&self.stats.batches_spooled, 1);
        self.update_gauges();
        Ok(())
    }

    /// `drop_oldest`: drops the oldest batches (not the one in flight) until `len` more
    /// bytes fit.
    fn make_room(&mut self, len: u64) -> Result<(), ShipError> {
        if self.cfg.when_full != WhenFull::DropOldest {
            return Ok(());
        }
        while self.bytes.saturating_add(len) > self.cfg.max_bytes {
            let victim = self
                .sealed
                .iter()
                .map(|(&seq, &s)| (seq, s))
                .find(|(seq, _)| Some(*seq) != self.in_flight);
            let Some((seq, entry)) = victim else { break };
            self.note_full();
            self.remove_batch_file(seq)?;
            self.forget(seq);
            stats::add(&self.stats.batches_dropped, 1);
            let total = stats::add(&self.stats.events_dropped, u64::from(entry.events));
            tracing::debug!(
                sequence = seq,
                events = entry.events,
                total,
                "batch dropped"
            );
        }
        Ok(())
    }

    fn note_full(&mut self) {
        if !self.full_logged {
            self.full_logged = true;
            let action = match self.cfg.when_full {
                WhenFull::DropOldest => "dropping the oldest batches",
                WhenFull::Block => "refusing new events",
            };
            tracing::warn!(
                reason = "spool_full",
                bytes = self.bytes,
                max_bytes = self.cfg.max_bytes,
                "spool full: {action} until it drains (counted in events_dropped_total / events_refused_total)"
            );
        }
    }

    /// Removes a batch file. The newest number on disk is persisted first, so that numbers
    /// keep increasing across a restart even when the spool is left empty.
    fn remove_batch_file(&mut self, seq: u64) -> Result<(), ShipError> {
        let newest_on_disk = self.open.is_none() && seq.saturating_add(1) >= self.next_sequence;
        if newest_on_disk && self.persisted_next < self.next_sequence {
            self.persist_state()?;
        }
        let path = self.dir.join(batch_name(seq));
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn index(&mut self, seq: u64, entry: Sealed) {
        self.bytes = self.bytes.saturating_add(entry.bytes);
        self.sealed_events = self.sealed_events.saturating_add(u64::from(entry.events));
        if let Some(old) = self.sealed.insert(seq, entry) {
            self.bytes = self.bytes.saturating_sub(old.bytes);
            self.sealed_events = self.sealed_events.saturating_sub(u64::from(old.events));
        }
    }

    /// A sealed batch failed its checks when read for sending: its events are lost (counted).
    fn drop_corrupt(&mut self, seq: u64) {
        if let Some(entry) = self.sealed.get(&seq) {
            stats::add(&self.stats.events_corrupt, u64::from(entry.events));
        }
        self.forget(seq);
    }

    fn forget(&mut self, seq: u64) {
        if let Some(entry) = self.sealed.remove(&seq) {
            self.bytes = self.bytes.saturating_sub(entry.bytes);
            self.sealed_events = self.sealed_events.saturating_sub(u64::from(entry.events));
        }
        if self.in_flight == Some(seq) {
            self.in_flight = None;
        }
        self.update_gauges();
    }

    fn update_gauges(&self) {
        stats::set(&self.stats.spool_bytes, self.bytes);
        stats::set(&self.stats.spool_batches, self.sealed.len() as u64);
        stats::set(
            &self.stats.spool_events,
            self.sealed_events + u64::from(self.open_events()),
        );
        let oldest = self.sealed.values().next().map_or(0, |s| s.created_unix_ms);
        stats::set(&self.stats.oldest_batch_created_unix_ms, oldest);
    }

    /// Checks a sealed batch file at start.
    fn check_file(&self, name: &str, seq: u64) -> Result<Sealed, String> {
        let path = self.dir.join(name);
        let bytes = fs::read(&path).map_err(|e| format!("unreadable: {e}"))?;
        let batch = Batch::decode(&bytes).map_err(|e| e.to_string())?;
        if batch.header.sequence != seq {
            return Err("sequence number differs from the file name".into());
        }
        if batch.header.agent_id != self.cfg.agent_id {
            return Err(format!(
                "written by agent {:?}, this agent is {:?}",
                batch.header.agent_id, self.cfg.agent_id
            ));
        }
        Ok(Sealed {
            bytes: bytes.len() as u64,
            events: batch.header.event_count,
            created_unix_ms: batch.header.created_unix_ms,
        })
    }

    /// Seals the journal of a batch that was open when the agent stopped.
    fn recover_journal(&mut self, seq: u64) -> Result<(), ShipError> {
        let path = self.dir.join(journal_name(seq));
        if self.sealed.contains_key(&seq) {
            // Crashed between sealing and removing the journal: the batch has it all.
            return fs::remove_file(&path).map_err(io_err(&path));
        }
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let created = fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_or_else(|_| unix_ms(SystemTime::now()), unix_ms);
        let mut batch = OpenBatch::new(seq, created, Instant::now());
        let mut discarded = 0u64;
        let mut lines = bytes.split(|&b| b == b'\n').peekable();
        while let Some(line) = lines.next() {
            let complete = lines.peek().is_some();
            if line.is_empty() && !complete {
                break;
            }
            if complete && serde_json::from_slice::<Event>(line).is_ok() {
                let mut l = line.to_vec();
                l.push(b'\n');
                batch.push_line(&l);
            } else {
                discarded += 1;
            }
        }
        if discarded > 0 {
            stats::add(&self.stats.journal_lines_discarded, discarded);
            tracing::warn!(
                file = %path.display(),
                discarded,
                "journal of the batch open at the crash had incomplete lines"
            );
        }
        if batch.events() > 0 {
            let sealed = Batch::seal(batch.header(&self.cfg.agent_id), batch.jsonl())?;
            self.store(&sealed, batch.events())?;
            tracing::info!(
                sequence = seq,
                events = batch.events(),
                "recovered the open batch"
            );
        }
        fs::remove_file(&path).map_err(io_err(&path))
    }

    /// Moves a file to quarantine (or deletes it if that fails), counted and logged.
    fn quarantine(&self, name: &str, reason: &str) {
        let from = self.dir.join(name);
        let to = self.dir.join(QUARANTINE_DIR).join(name);
        if fs::rename(&from, &to).is_err() {
            let _ = fs::remove_file(&from);
        }
        let total = stats::add(&self.stats.corrupt_files, 1);
        tracing::warn!(file = %from.display(), reason, total, "spool file quarantined");
    }

    fn read_state(&self) -> Option<u64> {
        let path = self.dir.join(STATE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "spool state unreadable");
                return None;
            }
        };
        match text.trim().parse() {
            Ok(n) => Some(n),
            Err(_) => {
                self.quarantine(STATE_FILE, "not a number");
                None
            }
        }
    }

    fn persist_state(&mut self) -> Result<(), ShipError> {
        let tmp = self.dir.join(STATE_TMP);
        let path = self.dir.join(STATE_FILE);
        {
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            writeln!(f, "{}", self.next_sequence).map_err(io_err(&tmp))?;
            if self.cfg.fsync == FsyncPolicy::Always {
                f.sync_all().map_err(io_err(&tmp))?;
            }
        }
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        self.sync_dir()?;
        self.persisted_next = self.next_sequence;
        Ok(())
    }

    fn sync_dir(&self) -> Result<(), ShipError> {
        if self.cfg.fsync == FsyncPolicy::Always {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&self.dir))?;
        }
        Ok(())
    }
}

/// The spool's id: read from `spool_id`, or made (random, 128 bits as hex) and written
/// durably when the folder has none. An unreadable or invalid file is replaced: a new id only
/// makes the collector treat the batches that follow as a new numbering, which is safe.
fn spool_id(dir: &Path, fsync: FsyncPolicy) -> Result<String, ShipError> {
    let path = dir.join(SPOOL_ID_FILE);
    if let Ok(text) = fs::read_to_string(&path) {
        let id = text.trim();
        if mamori_wire::valid_spool_id(id) {
            return Ok(id.to_owned());
        }
        tracing::warn!(file = %path.display(), "spool id unreadable: making a new one");
    }
    let id = format!("{:032x}", fastrand::u128(..));
    let tmp = dir.join(format!("{SPOOL_ID_FILE}.tmp"));
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        writeln!(f, "{id}").map_err(io_err(&tmp))?;
        if fsync == FsyncPolicy::Always {
            f.sync_all().map_err(io_err(&tmp))?;
        }
    }
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    if fsync == FsyncPolicy::Always {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    tracing::info!(dir = %dir.display(), spool_id = %id, "new spool");
    Ok(id)
}

/// Deletes the oldest spool files in `dir` (by sequence) beyond `keep`.
fn prune(dir: &Path, keep: usize) {
    let Ok(mut files) = list(dir) else { return };
    files.sort_by_key(|(_, seq, _)| *seq);
    let excess = files.len().saturating_sub(keep);
    for (name, _, _) in files.iter().take(excess) {
        let _ = fs::remove_file(dir.join(name));
    }
}

/// Spool files in `dir`: (name, sequence, kind), anything else skipped.
fn list(dir: &Path) -> Result<Vec<(String, u64, Kind)>, ShipError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if let Some((seq, kind)) = parse_name(&name) {
            out.push((name, seq, kind));
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event(i: u64) -> Event {
        serde_json::from_value(serde_json::json!({
            "type": "flow", "ts": "2024-01-01T00:00:00.000000Z",
            "end_ts": "2024-01-01T00:00:01.000000Z", "transport": "tcp",
            "src_ip": "10.0.0.1", "src_port": 1, "dst_ip": "10.0.0.2", "dst_port": 502,
            "service": null, "orig_pkts": i, "orig_bytes": 0, "resp_pkts": 0,
            "resp_bytes": 0, "state": "S0", "reason": "idle"
        }))
        .unwrap()
    }

    fn cfg(max_events: u32, max_bytes: u64, when_full: WhenFull) -> SpoolConfig {
        SpoolConfig {
            agent_id: "agent-1".into(),
            max_bytes,
            when_full,
            fsync: FsyncPolicy::Always,
            limits: BatchLimits {
                max_events,
                max_bytes: 1 << 20,
                max_age: Duration::from_secs(3600),
            },
        }
    }

    fn open(dir: &Path, c: SpoolConfig) -> (Spool, Arc<ShipStats>) {
        let stats = Arc::new(ShipStats::default());
        (Spool::open(dir, c, stats.clone()).unwrap(), stats)
    }

    #[test]
    fn names_parse_and_sort() {
        assert_eq!(parse_name("000000000007.batch"), Some((7, Kind::Batch)));
        assert_eq!(parse_name("000000000007.batch.tmp"), Some((7, Kind::Temp)));
        assert_eq!(parse_name("000000000007.open"), Some((7, Kind::Journal)));
        assert_eq!(parse_name("next_sequence"), None);
        assert_eq!(parse_name("-1.batch"), None);
        assert_eq!(parse_name("99999999999999999999999.batch"), None);
        assert!(batch_name(9) < batch_name(10));
    }

    #[test]
    fn sequence_numbers_never_reused_after_the_spool_drained() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = open(dir.path(), cfg(2, 1 << 20, WhenFull::DropOldest));
            for i in 0..4 {
                s.push(&event(i)).unwrap();
            }
            assert_eq!(s.len(), 2);
            for seq in [1, 2] {
                assert!(s.begin_send(seq).unwrap().is_some());
                assert_eq!(s.ack(seq).unwrap(), Some(2));
            }
            assert!(s.is_empty());
        }
        let (s, _) = open(dir.path(), cfg(2, 1 << 20, WhenFull::DropOldest));
        assert_eq!(s.next_sequence(), 3);
    }

    #[test]
    fn journal_of_the_open_batch_is_recovered_and_a_torn_line_counted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = open(dir.path(), cfg(100, 1 << 20, WhenFull::DropOldest));
            for i in 0..5 {
                s.push(&event(i)).unwrap();
            }
            // Dropped without sealing, as a crash would leave it.
        }
        let journal = dir.path().join(journal_name(1));
        let mut f = OpenOptions::new().append(true).open(&journal).unwrap();
        f.write_all(br#"{"type":"flow","ts":"#).unwrap();
        drop(f);
        let (mut s, stats) = open(dir.path(), cfg(100, 1 << 20, WhenFull::DropOldest));
        assert_eq!(s.len(), 1);
        assert_eq!(stats.snapshot().journal_lines_discarded_total, 1);
        assert!(!journal.exists());
        let b = s.begin_send(1).unwrap().unwrap();
        assert_eq!(b.header.event_count, 5);
        assert_eq!(s.next_sequence(), 2);
    }

    #[test]
    fn drop_oldest_counts_events_and_spares_the_batch_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, stats) = open(dir.path(), cfg(10, 1, WhenFull::DropOldest));
        for i in 0..10 {
            s.push(&event(i)).unwrap();
        }
        assert_eq!(s.len(), 1);
        assert!(s.begin_send(1).unwrap().is_some());
        for i in 10..30 {
            s.push(&event(i)).unwrap();
        }
        // Batch 1 is in flight and stays; 2 was dropped for 3.
        assert_eq!(s.sealed.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        let snap = stats.snapshot();
        assert_eq!(snap.events_dropped_total, 10);
        assert_eq!(snap.batches_dropped_total, 1);
    }

    #[test]
    fn block_refuses_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = open(dir.path(), cfg(1, 1, WhenFull::Block));
        assert_eq!(s.push(&event(0)).unwrap(), PushOutcome::Accepted);
        assert_eq!(s.push(&event(1)).unwrap(), PushOutcome::Full);
        assert!(s.begin_send(1).unwrap().is_some());
        s.ack(1).unwrap();
        assert_eq!(s.push(&event(1)).unwrap(), PushOutcome::Accepted);
    }
}
