//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`, so a committed
//! batch survives a crash of the process and a power loss, and readers never block the
//! writer. Schema changes are an ordered list of migrations recorded in `schema_version`.

use std::path::Path;

use mamori_models::detect::Alert;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    AlertQuery, AlertUpsert, AuditQuery, Continuity, IncidentQuery, IncomingBatch, QuarantinedLine,
    Store, StoreError, Stored,
};
use crate::audit::{AuditAction, AuditEntry};
use crate::incident::{Asset, Incident, StoredAlert};

/// One schema change: its version (1, 2, ... with no gaps), what it is for, its SQL.
#[derive(Debug)]
pub struct Migration {
    pub version: u32,
    pub description: &'static str,
    pub sql: &'static str,
    /// The migration rebuilds a table other tables refer to (SQLite's "make a new table,
    /// copy, drop, rename"), so foreign keys are off while it runs and checked before it
    /// commits.
    pub rebuilds: bool,
}

/// Quarantined lines kept (the newest); each holds at most
/// [`mamori_wire::MAX_REJECTED_LINE_BYTES`] of text.
pub const MAX_QUARANTINED_LINES: i64 = 10_000;

/// Every migration, in order. Never edit one that has shipped: append a new one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "batches (the deduplication memory) and raw events",
        sql: "
            CREATE TABLE batches (
                id               INTEGER PRIMARY KEY,
                agent            TEXT    NOT NULL,
                sequence         INTEGER NOT NULL,
                site             TEXT    NOT NULL,
                created_unix_ms  INTEGER,
                received_unix_ms INTEGER NOT NULL,
                events           INTEGER NOT NULL,
                UNIQUE (agent, sequence)
            );
            CREATE TABLE events (
                id       INTEGER PRIMARY KEY,
                batch_id INTEGER NOT NULL REFERENCES batches (id),
                idx      INTEGER NOT NULL,
                agent    TEXT    NOT NULL,
                site     TEXT    NOT NULL,
                type     TEXT    NOT NULL,
                ts_us    INTEGER NOT NULL,
                json     TEXT    NOT NULL
            );
            CREATE INDEX events_ts ON events (ts_us);
            CREATE INDEX events_site_ts ON events (site, ts_us);
            CREATE INDEX events_batch ON events (batch_id, idx);
        ",
        rebuilds: false,
    },
    Migration {
        version: 2,
        description: "slots for baselines, alerts, incidents and the asset inventory",
        sql: "
            CREATE TABLE baselines (
                id              INTEGER PRIMARY KEY,
                site            TEXT    NOT NULL,
                created_unix_ms INTEGER NOT NULL,
                format_version  INTEGER NOT NULL,
                json            TEXT    NOT NULL
            );
            CREATE INDEX baselines_site ON baselines (site, created_unix_ms);
            CREATE TABLE incidents (
                id           INTEGER PRIMARY KEY,
                site         TEXT    NOT NULL,
                opened_ts_us INTEGER NOT NULL,
                closed_ts_us INTEGER,
                state        TEXT    NOT NULL,
                json         TEXT    NOT NULL
            );
            CREATE INDEX incidents_site ON incidents (site, opened_ts_us);
            CREATE TABLE alerts (
                id          INTEGER PRIMARY KEY,
                site        TEXT    NOT NULL,
                ts_us       INTEGER NOT NULL,
                detector    TEXT    NOT NULL,
                severity    TEXT    NOT NULL,
                incident_id INTEGER REFERENCES incidents (id),
                json        TEXT    NOT NULL
            );
            CREATE INDEX alerts_site_ts ON alerts (site, ts_us);
            CREATE TABLE assets (
                id               INTEGER PRIMARY KEY,
                site             TEXT    NOT NULL,
                address          TEXT    NOT NULL,
                first_seen_ts_us INTEGER NOT NULL,
                last_seen_ts_us  INTEGER NOT NULL,
                json             TEXT    NOT NULL,
                UNIQUE (site, address)
            );
        ",
        rebuilds: false,
    },
    Migration {
        version: 3,
        description: "alert identity for online updates; incidents by state",
        sql: "
            ALTER TABLE alerts ADD COLUMN kind TEXT NOT NULL DEFAULT '';
            ALTER TABLE alerts ADD COLUMN subject TEXT NOT NULL DEFAULT '';
            ALTER TABLE alerts ADD COLUMN received_unix_ms INTEGER NOT NULL DEFAULT 0;
            UPDATE alerts SET kind = coalesce(json_extract(json, '$.kind'), ''),
                              subject = coalesce(json_extract(json, '$.subject'), '');
            CREATE INDEX alerts_identity ON alerts (site, detector, kind, subject, ts_us);
            CREATE INDEX alerts_incident ON alerts (incident_id);
            CREATE INDEX incidents_state ON incidents (state, site);
        ",
        rebuilds: false,
    },
    Migration {
        version: 4,
        description: "raw events stored per batch, compressed as received",
        // One row per event (JSON text and three indexes) made the storage thread write about
        // 1 KB per event and bounded intake near 120k events/s (bench/collector-load.sh). A
        // batch's body (gzip JSON Lines, as the agent sent it) is now kept in its batch row;
        // `events` holds only what older versions stored and is read and expired as before.
        sql: "
            ALTER TABLE batches ADD COLUMN body BLOB;
            ALTER TABLE batches ADD COLUMN min_ts_us INTEGER;
            ALTER TABLE batches ADD COLUMN max_ts_us INTEGER;
            CREATE INDEX batches_expiry ON batches (max_ts_us) WHERE body IS NOT NULL;
        ",
        rebuilds: false,
    },
    Migration {
        version: 5,
        description: "batches named by (agent, spool id, sequence, body hash); quarantined lines",
        // An agent whose spool was lost starts numbering at 1 again: (agent, sequence) alone
        // took its new batches for duplicates and dropped them unseen. Rows from before have
        // no spool id ('') and no hash (NULL: taken as the same content as any resend).
        sql: "
            CREATE TABLE batches_v5 (
                id               INTEGER PRIMARY KEY,
                agent            TEXT    NOT NULL,
                spool_id         TEXT    NOT NULL DEFAULT '',
                sequence         INTEGER NOT NULL,
                body_sha256      BLOB,
                site             TEXT    NOT NULL,
                created_unix_ms  INTEGER,
                received_unix_ms INTEGER NOT NULL,
                events           INTEGER NOT NULL,
                quarantined      INTEGER NOT NULL DEFAULT 0,
                body             BLOB,
                min_ts_us        INTEGER,
                max_ts_us        INTEGER,
                UNIQUE (agent, spool_id, sequence, body_sha256)
            );
            INSERT INTO batches_v5 (id, agent, sequence, site, created_unix_ms, received_unix_ms,
                                    events, body, min_ts_us, max_ts_us)
                SELECT id, agent, sequence, site, created_unix_ms, received_unix_ms, events, body,
                       min_ts_us, max_ts_us
                FROM batches;
            DROP TABLE batches;
            ALTER TABLE batches_v5 RENAME TO batches;
            CREATE INDEX batches_expiry ON batches (max_ts_us) WHERE body IS NOT NULL;
            CREATE INDEX batches_agent ON batches (agent, id);
            CREATE TABLE quarantine (
                id               INTEGER PRIMARY KEY,
                batch_id         INTEGER NOT NULL REFERENCES batches (id),
                site             TEXT    NOT NULL,
                line             INTEGER NOT NULL,
                bytes            INTEGER NOT NULL,
                reason           TEXT    NOT NULL,
                text             TEXT    NOT NULL
            );
            CREATE INDEX quarantine_site ON quarantine (site, id);
        ",
        rebuilds: true,
    },
    Migration {
        version: 6,
        description: "the audit trail of operators' changes to the baselines; accepted alerts",
        sql: "
            CREATE TABLE audit (
                id       INTEGER PRIMARY KEY,
                site     TEXT    NOT NULL,
                action   TEXT    NOT NULL,
                alert_id INTEGER REFERENCES alerts (id),
                detector TEXT    NOT NULL DEFAULT '',
                kind     TEXT    NOT NULL DEFAULT '',
                subject  TEXT    NOT NULL DEFAULT '',
                who      TEXT    NOT NULL,
                unix_ms  INTEGER NOT NULL,
                reason   TEXT    NOT NULL,
                changes  TEXT    NOT NULL
            );
            CREATE INDEX audit_site ON audit (site, id);
            ALTER TABLE alerts ADD COLUMN accepted_audit_id INTEGER REFERENCES audit (id);
        ",
        rebuilds: false,
    },
];

/// The schema version this collector writes.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// An event as stored, for readers and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub agent: String,
    pub site: String,
    pub sequence: u64,
    pub idx: u32,
    pub kind: String,
    pub ts_us: i64,
    pub json: String,
}

/// [`Store`] on an SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
}

fn to_i64(v: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::OutOfRange(what))
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path`, sets WAL and `synchronous=FULL`,
    /// and applies the migrations it lacks, each in its own transaction.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Open {
                path: path.display().to_string(),
                reason: format!("cannot use WAL mode (journal_mode is {mode})"),
            });
        }
        // FULL: the WAL is fsynced at each commit, so a commit that returned is on disk
        // before the batch is acknowledged (NORMAL could lose the last commits on power loss).
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // 32 MiB of page cache (the default is 2 MiB): index pages stay in memory between
        // batches instead of being read back for every insert.
        conn.pragma_update(None, "cache_size", -32_768)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = SqliteStore { conn };
        store.migrate()?;
        Ok(store)
    }

    fn current_version(&self) -> Result<u32, StoreError> {
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                version          INTEGER PRIMARY KEY,
                description      TEXT    NOT NULL,
                applied_unix_ms  INTEGER NOT NULL
            )",
            [],
        )?;
        let v: Option<i64> =
            self.conn
                .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))?;
        u32::try_from(v.unwrap_or(0)).map_err(|_| StoreError::OutOfRange("schema version"))
    }

    /// Applies the migrations above the recorded version; a no-op at the latest.
    fn migrate(&mut self) -> Result<(), StoreError> {
        let current = self.current_version()?;
        let known = latest_version();
        if current > known {
            return Err(StoreError::NewerSchema {
                found: current,
                known,
            });
        }
        for m in MIGRATIONS.iter().filter(|m| m.version > current) {
            if m.rebuilds {
                // Only outside a transaction does this take effect.
                self.conn.pragma_update(None, "foreign_keys", "OFF")?;
            }
            let applied = self.apply(m);
            if m.rebuilds {
                self.conn.pragma_update(None, "foreign_keys", "ON")?;
            }
            applied?;
            tracing::info!(
                version = m.version,
                description = m.description,
                "database migrated"
            );
        }
        Ok(())
    }

    /// One migration in one transaction, recorded in `schema_version`.
    fn apply(&mut self, m: &Migration) -> Result<(), StoreError> {
        {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(m.sql)?;
            if m.rebuilds {
                let broken: i64 =
                    tx.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                        r.get(0)
                    })?;
                if broken > 0 {
                    return Err(StoreError::Open {
                        path: "(migration)".into(),
                        reason: format!(
                            "migration {} left {broken} broken references; not applied",
                            m.version
                        ),
                    });
                }
            }
            tx.execute(
                "INSERT INTO schema_version (version, description, applied_unix_ms)
                 VALUES (?1, ?2, ?3)",
                params![m.version, m.description, now_unix_ms()],
            )?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Every event of `agent` still stored, in the order it arrived (by batch, then
    /// position).
    pub fn events_of(&self, agent: &str) -> Result<Vec<StoredEvent>, StoreError> {
        // Rows of older versions.
        let mut stmt = self.conn.prepare(
            "SELECT e.agent, e.site, b.sequence, e.idx, e.type, e.ts_us, e.json, b.id
             FROM events e JOIN batches b ON b.id = e.batch_id
             WHERE e.agent = ?1",
        )?;
        let rows = stmt.query_map([agent], |r| {
            Ok((
                r.get::<_, i64>(7)?,
                StoredEvent {
                    agent: r.get(0)?,
                    site: r.get(1)?,
                    sequence: r.get::<_, i64>(2)?.try_into().unwrap_or(0),
                    idx: r.get(3)?,
                    kind: r.get(4)?,
                    ts_us: r.get(5)?,
                    json: r.get(6)?,
                },
            ))
        })?;
        let mut out = rows.collect::<Result<Vec<_>, _>>()?;
        // Batch bodies.
        let mut stmt = self.conn.prepare(
            "SELECT agent, site, sequence, body, id FROM batches
             WHERE agent = ?1 AND body IS NOT NULL",
        )?;
        let bodies = stmt.query_map([agent], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        for row in bodies {
            let (agent, site, sequence, body, batch_id) = row?;
            let jsonl = mamori_wire::decompress(&body, mamori_wire::MAX_DECOMPRESSED_BYTES)
                .map_err(|e| StoreError::Body(format!("a stored body: {e}")))?;
            let lines = jsonl.split(|&b| b == b'\n').filter(|l| !l.is_empty());
            for (idx, line) in lines.enumerate() {
                // Only events are stored in a body (quarantined lines go elsewhere).
                let event = mamori_models::Event::from_json_slice(line)?;
                let json = String::from_utf8_lossy(line).into_owned();
                out.push((
                    batch_id,
                    StoredEvent {
                        agent: agent.clone(),
                        site: site.clone(),
                        sequence: u64::try_from(sequence).unwrap_or(0),
                        idx: u32::try_from(idx).map_err(|_| StoreError::OutOfRange("idx"))?,
                        kind: event.type_name().to_owned(),
                        ts_us: event.ts().as_micros(),
                        json,
                    },
                ));
            }
        }
        // Arrival order: a restarted spool numbers from 1 again, so sequences alone would
        // put its batches before the old spool's.
        out.sort_by_key(|(batch, e)| (*batch, e.idx));
        Ok(out.into_iter().map(|(_, e)| e).collect())
    }

    /// Rows in `table` (for tests and the operator; `table` must be a known table). For
    /// `events`: the raw events still stored (rows of older versions and batch bodies).
    pub fn count(&self, table: &str) -> Result<u64, StoreError> {
        let sql = match table {
            "events" => {
                "SELECT (SELECT COUNT(*) FROM events)
                      + (SELECT COALESCE(SUM(events), 0) FROM batches WHERE body IS NOT NULL)"
            }
            "batches" => "SELECT COUNT(*) FROM batches",
            "baselines" => "SELECT COUNT(*) FROM baselines",
            "alerts" => "SELECT COUNT(*) FROM alerts",
            "incidents" => "SELECT COUNT(*) FROM incidents",
            "assets" => "SELECT COUNT(*) FROM assets",
            "quarantine" => "SELECT COUNT(*) FROM quarantine",
            "audit" => "SELECT COUNT(*) FROM audit",
            "schema_version" => "SELECT COUNT(*) FROM schema_version",
            _ => return Err(StoreError::OutOfRange("unknown table")),
        };
        let n: i64 = self.conn.query_row(sql, [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// An `alerts` row: id, site, incident, received, JSON, accepting audit entry.
type AlertRow = (i64, String, Option<i64>, i64, String, Option<i64>);

fn alert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlertRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn stored_alert(row: AlertRow) -> Result<StoredAlert, StoreError> {
    let (id, site, incident_id, received, json, accepted_audit_id) = row;
    Ok(StoredAlert {
        id,
        site,
        incident_id,
        received_unix_ms: u64::try_from(received).unwrap_or(0),
        alert: serde_json::from_str(&json)?,
        accepted_audit_id,
    })
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Store for SqliteStore {
    fn store_batch(&mut self, batch: &IncomingBatch) -> Result<Stored, StoreError> {
        let sequence = to_i64(batch.sequence, "sequence")?;
        let created = batch
            .created_unix_ms
            .map(|v| to_i64(v, "created_unix_ms"))
            .transpose()?;
        let received = to_i64(batch.received_unix_ms, "received_unix_ms")?;
        let count =
            i64::try_from(batch.events.len()).map_err(|_| StoreError::OutOfRange("events"))?;
        let quarantined = i64::try_from(batch.quarantined.len())
            .map_err(|_| StoreError::OutOfRange("quarantined"))?;
        // Compress before the transaction (it holds the write lock for as short as possible),
        // unless the intake passed the body as received.
        let body: std::borrow::Cow<'_, [u8]> = if batch.body.is_empty() {
            std::borrow::Cow::Owned(
                mamori_wire::encode_body(&batch.events)
                    .map_err(|e| StoreError::Body(e.to_string()))?,
            )
        } else {
            std::borrow::Cow::Borrowed(&batch.body)
        };
        let min_ts = batch.events.iter().map(|e| e.ts().as_micros()).min();
        let max_ts = batch.events.iter().map(|e| e.ts().as_micros()).max();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The same number from the same spool: a resend when the bytes are the same (or the
        // row predates hashes), else a number used twice.
        let same_number: Vec<Option<Vec<u8>>> = {
            let mut stmt = tx.prepare_cached(
                "SELECT body_sha256 FROM batches
                 WHERE agent = ?1 AND spool_id = ?2 AND sequence = ?3",
            )?;
            stmt.query_map(params![batch.agent, batch.spool_id, sequence], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        if same_number
            .iter()
            .any(|h| h.as_deref().is_none_or(|h| h == batch.body_sha256))
        {
            // Nothing written; the transaction ends without a commit.
            return Ok(Stored::Duplicate);
        }
        let latest: Option<(String, i64)> = tx
            .query_row(
                "SELECT spool_id, sequence FROM batches WHERE agent = ?1 ORDER BY id DESC LIMIT 1",
                [&batch.agent],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let highest: Option<i64> = tx
            .query_row(
                "SELECT MAX(sequence) FROM batches WHERE agent = ?1 AND spool_id = ?2",
                params![batch.agent, batch.spool_id],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        tx.execute(
            "INSERT INTO batches (agent, spool_id, sequence, body_sha256, site, created_unix_ms,
                                  received_unix_ms, events, quarantined, body, min_ts_us,
                                  max_ts_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                batch.agent,
                batch.spool_id,
                sequence,
                &batch.body_sha256[..],
                batch.site,
                created,
                received,
                count,
                quarantined,
                &*body,
                min_ts,
                max_ts
            ],
        )?;
        if !batch.quarantined.is_empty() {
            let batch_id = tx.last_insert_rowid();
            let mut insert = tx.prepare_cached(
                "INSERT INTO quarantine (batch_id, site, line, bytes, reason, text)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for q in &batch.quarantined {
                insert.execute(params![
                    batch_id,
                    batch.site,
                    to_i64(q.line, "line")?,
                    to_i64(q.bytes, "bytes")?,
                    q.reason,
                    q.text
                ])?;
            }
            drop(insert);
            tx.execute(
                "DELETE FROM quarantine WHERE id <= (SELECT MAX(id) FROM quarantine) - ?1",
                [MAX_QUARANTINED_LINES],
            )?;
        }
        tx.commit()?;
        let continuity = if !same_number.is_empty() {
            Continuity::Reused
        } else {
            match latest {
                // A first spool id after rows without one is an upgraded agent, not a restart.
                Some((previous, _)) if previous != batch.spool_id && !previous.is_empty() => {
                    Continuity::NewSpool { previous }
                }
                _ => Continuity::Continues,
            }
        };
        Ok(Stored::New {
            out_of_order: highest.is_some_and(|h| h > sequence),
            continuity,
        })
    }

    fn expire_events(&mut self, cutoff_unix_us: i64, limit: u32) -> Result<u64, StoreError> {
        // Rows of older versions first, one event at a time.
        let legacy = self.conn.execute(
            "DELETE FROM events WHERE id IN
                (SELECT id FROM events WHERE ts_us < ?1 ORDER BY ts_us LIMIT ?2)",
            params![cutoff_unix_us, limit],
        )?;
        let mut expired = u64::try_from(legacy).unwrap_or(0);
        if expired >= u64::from(limit) {
            return Ok(expired);
        }
        // Then whole batches whose newest event is past the cutoff, oldest first, until
        // about `limit` events (at least one batch).
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let due: Vec<(i64, i64)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT id, events FROM batches
                 WHERE body IS NOT NULL AND max_ts_us < ?1 ORDER BY max_ts_us LIMIT ?2",
            )?;
            stmt.query_map(params![cutoff_unix_us, limit], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?
        };
        {
            let mut clear = tx.prepare_cached("UPDATE batches SET body = NULL WHERE id = ?1")?;
            for (id, events) in due {
                if expired >= u64::from(limit) {
                    break;
                }
                clear.execute([id])?;
                expired += u64::try_from(events).unwrap_or(0);
            }
        }
        tx.commit()?;
        Ok(expired)
    }

    fn store_baseline(
        &mut self,
        site: &str,
        created_unix_ms: u64,
        format_version: u32,
        json: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO baselines (site, created_unix_ms, format_version, json)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                site,
                to_i64(created_unix_ms, "created_unix_ms")?,
                format_version,
                json
            ],
        )?;
        Ok(())
    }

    fn latest_baselines(&mut self) -> Result<Vec<(String, String)>, StoreError> {
        // The newest per site; the highest id breaks a tie on the millisecond.
        let mut stmt = self.conn.prepare(
            "SELECT b.site, b.json FROM baselines b
             WHERE b.id = (SELECT id FROM baselines WHERE site = b.site
                           ORDER BY created_unix_ms DESC, id DESC LIMIT 1)
             ORDER BY b.site",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        Ok(self.conn.execute_batch("BEGIN IMMEDIATE")?)
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        Ok(self.conn.execute_batch("COMMIT")?)
    }

    fn rollback(&mut self) -> Result<(), StoreError> {
        Ok(self.conn.execute_batch("ROLLBACK")?)
    }

    fn upsert_alert(
        &mut self,
        site: &str,
        alert: &Alert,
        received_unix_ms: u64,
    ) -> Result<AlertUpsert, StoreError> {
        let json = serde_json::to_string(alert)?;
        let ts = alert.ts.as_micros();
        let detector = alert.detector.as_str();
        let found: Option<(i64, Option<i64>)> = self
            .conn
            .prepare_cached(
                "SELECT id, incident_id FROM alerts
                 WHERE site = ?1 AND detector = ?2 AND kind = ?3 AND subject = ?4 AND ts_us = ?5
                 ORDER BY id LIMIT 1",
            )?
            .query_row(
                params![site, detector, alert.kind, alert.subject, ts],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((id, incident_id)) = found {
            self.conn
                .prepare_cached("UPDATE alerts SET severity = ?2, json = ?3 WHERE id = ?1")?
                .execute(params![id, alert.severity.as_str(), json])?;
            return Ok(AlertUpsert {
                id,
                incident_id,
                new: false,
            });
        }
        self.conn
            .prepare_cached(
                "INSERT INTO alerts (site, ts_us, detector, severity, json, kind, subject,
                                     received_unix_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                site,
                ts,
                detector,
                alert.severity.as_str(),
                json,
                alert.kind,
                alert.subject,
                to_i64(received_unix_ms, "received_unix_ms")?
            ])?;
        Ok(AlertUpsert {
            id: self.conn.last_insert_rowid(),
            incident_id: None,
            new: true,
        })
    }

    fn attach_alert(&mut self, alert_id: i64, incident_id: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE alerts SET incident_id = ?2 WHERE id = ?1")?
            .execute(params![alert_id, incident_id])?;
        Ok(())
    }

    fn save_incident(&mut self, incident: &Incident) -> Result<i64, StoreError> {
        let json = serde_json::to_string(incident)?;
        let closed = incident.resolved_unix_ms.map(|ms| ms as i64 * 1000);
        if incident.id == 0 {
            self.conn
                .prepare_cached(
                    "INSERT INTO incidents (site, opened_ts_us, closed_ts_us, state, json)
                     VALUES (?1, ?2, ?3, ?4, '{}')",
                )?
                .execute(params![
                    incident.site,
                    incident.first_seen.as_micros(),
                    closed,
                    incident.status.as_str()
                ])?;
            let id = self.conn.last_insert_rowid();
            let mut with_id = incident.clone();
            with_id.id = id;
            self.conn
                .prepare_cached("UPDATE incidents SET json = ?2 WHERE id = ?1")?
                .execute(params![id, serde_json::to_string(&with_id)?])?;
            return Ok(id);
        }
        self.conn
            .prepare_cached(
                "UPDATE incidents SET site = ?2, opened_ts_us = ?3, closed_ts_us = ?4,
                                      state = ?5, json = ?6
                 WHERE id = ?1",
            )?
            .execute(params![
                incident.id,
                incident.site,
                incident.first_seen.as_micros(),
                closed,
                incident.status.as_str(),
                json
            ])?;
        Ok(incident.id)
    }

    fn incident(&mut self, id: i64) -> Result<Option<Incident>, StoreError> {
        let json: Option<String> = self
            .conn
            .prepare_cached("SELECT json FROM incidents WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
    }

    fn incidents(&mut self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        let limit = if query.limit == 0 { 100 } else { query.limit };
        // The statuses as a set in one parameter: `open,acknowledged` (empty: all).
        let statuses: Vec<&str> = query.statuses.iter().map(|s| s.as_str()).collect();
        let statuses = statuses.join(",");
        let mut stmt = self.conn.prepare_cached(
            "SELECT json FROM incidents
             WHERE (?1 IS NULL OR site = ?1)
               AND (?2 = '' OR instr(',' || ?2 || ',', ',' || state || ',') > 0)
             ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![query.site, statuses, limit], |r| {
            r.get::<_, String>(0)
        })?;
        let mut out = Vec::new();
        for json in rows {
            out.push(serde_json::from_str(&json?)?);
        }
        Ok(out)
    }

    fn open_incident_counts(
        &mut self,
    ) -> Result<std::collections::BTreeMap<mamori_models::detect::Severity, u64>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT json_extract(json, '$.severity'), COUNT(*) FROM incidents
             WHERE state IN ('open', 'acknowledged') GROUP BY 1",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = std::collections::BTreeMap::new();
        for row in rows {
            let (severity, n) = row?;
            let severity: mamori_models::detect::Severity =
                serde_json::from_value(serde_json::Value::String(severity))?;
            out.insert(severity, u64::try_from(n).unwrap_or(0));
        }
        Ok(out)
    }

    fn alerts(&mut self, query: &AlertQuery) -> Result<Vec<StoredAlert>, StoreError> {
        let limit = if query.limit == 0 { 100 } else { query.limit };
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, site, incident_id, received_unix_ms, json, accepted_audit_id FROM alerts
             WHERE (?1 IS NULL OR site = ?1) AND (?2 IS NULL OR incident_id = ?2)
             ORDER BY ts_us DESC, id DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![query.site, query.incident_id, limit], alert_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(stored_alert(row?)?);
        }
        Ok(out)
    }

    fn alert(&mut self, id: i64) -> Result<Option<StoredAlert>, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT id, site, incident_id, received_unix_ms, json, accepted_audit_id
                 FROM alerts WHERE id = ?1",
            )?
            .query_row([id], alert_row)
            .optional()?;
        row.map(stored_alert).transpose()
    }

    fn record_audit(&mut self, entry: &AuditEntry) -> Result<i64, StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO audit (site, action, alert_id, detector, kind, subject, who,
                                    unix_ms, reason, changes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                entry.site,
                entry.action.as_str(),
                entry.alert_id,
                entry.detector,
                entry.kind,
                entry.subject,
                entry.who,
                to_i64(entry.unix_ms, "unix_ms")?,
                entry.reason,
                serde_json::to_string(&entry.changes)?
            ])?;
        Ok(self.conn.last_insert_rowid())
    }

    fn mark_alert_accepted(&mut self, alert_id: i64, audit_id: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE alerts SET accepted_audit_id = ?2 WHERE id = ?1")?
            .execute(params![alert_id, audit_id])?;
        Ok(())
    }

    fn audit(&mut self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = if query.limit == 0 { 100 } else { query.limit };
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, site, action, alert_id, detector, kind, subject, who, unix_ms, reason,
                    changes
             FROM audit WHERE (?1 IS NULL OR site = ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![query.site, limit], |r| {
            Ok((
                AuditEntry {
                    id: r.get(0)?,
                    site: r.get(1)?,
                    action: AuditAction::Normal,
                    alert_id: r.get(3)?,
                    detector: r.get(4)?,
                    kind: r.get(5)?,
                    subject: r.get(6)?,
                    who: r.get(7)?,
                    unix_ms: u64::try_from(r.get::<_, i64>(8)?).unwrap_or(0),
                    reason: r.get(9)?,
                    changes: serde_json::Value::Null,
                },
                r.get::<_, String>(2)?,
                r.get::<_, String>(10)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut entry, action, changes) = row?;
            entry.action = AuditAction::parse(&action)
                .ok_or(StoreError::OutOfRange("an audit entry's action"))?;
            entry.changes = serde_json::from_str(&changes)?;
            out.push(entry);
        }
        Ok(out)
    }

    fn save_asset(&mut self, asset: &Asset) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO assets (site, address, first_seen_ts_us, last_seen_ts_us, json)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (site, address) DO UPDATE SET
                    first_seen_ts_us = excluded.first_seen_ts_us,
                    last_seen_ts_us = excluded.last_seen_ts_us,
                    json = excluded.json",
            )?
            .execute(params![
                asset.site,
                asset.ip.to_string(),
                asset.first_seen.as_micros(),
                asset.last_seen.as_micros(),
                serde_json::to_string(asset)?
            ])?;
        Ok(())
    }

    fn assets(&mut self, site: Option<&str>) -> Result<Vec<Asset>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT json FROM assets WHERE (?1 IS NULL OR site = ?1) ORDER BY site, address",
        )?;
        let rows = stmt.query_map(params![site], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for json in rows {
            out.push(serde_json::from_str(&json?)?);
        }
        Ok(out)
    }

    fn quarantined(
        &mut self,
        site: Option<&str>,
        limit: u32,
    ) -> Result<Vec<QuarantinedLine>, StoreError> {
        let limit = if limit == 0 { 100 } else { limit };
        let mut stmt = self.conn.prepare_cached(
            "SELECT q.id, q.site, b.agent, b.spool_id, b.sequence, b.received_unix_ms, q.line,
                    q.bytes, q.reason, q.text
             FROM quarantine q JOIN batches b ON b.id = q.batch_id
             WHERE (?1 IS NULL OR q.site = ?1) ORDER BY q.id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![site, limit], |r| {
            Ok(QuarantinedLine {
                id: r.get(0)?,
                site: r.get(1)?,
                agent: r.get(2)?,
                spool_id: r.get(3)?,
                sequence: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                received_unix_ms: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
                line: mamori_wire::RejectedLine {
                    line: u64::try_from(r.get::<_, i64>(6)?).unwrap_or(0),
                    bytes: u64::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
                    reason: r.get(8)?,
                    text: r.get(9)?,
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn schema_version(&mut self) -> Result<u32, StoreError> {
        self.current_version()
    }

    fn close(self: Box<Self>) -> Result<(), StoreError> {
        // Folds the WAL back into the database file, so a stopped collector leaves one file.
        self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        self.conn.close().map_err(|(_, e)| StoreError::Database(e))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_one_by_one() {
        for (n, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, n + 1);
        }
    }
}
