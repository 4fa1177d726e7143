//! The SQLite store behind the intake: migrations recorded and idempotent (an older database
//! migrated with its rows), a newer schema refused, deduplication by (agent, spool,
//! sequence) and content, a restarted or reused numbering stored and told apart, quarantined
//! lines kept, retention of raw events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use mamori_collector::store::sqlite::{MIGRATIONS, latest_version};
use mamori_collector::{Continuity, IncomingBatch, SqliteStore, Store, StoreError, Stored};
use mamori_models::Event;

fn event(id: u64, ts: &str) -> Event {
    serde_json::from_value(serde_json::json!({
        "type": "flow", "ts": ts,
        "end_ts": ts, "transport": "tcp",
        "src_ip": "10.0.0.1", "src_port": 40000, "dst_ip": "10.0.0.2", "dst_port": 502,
        "service": "modbus", "orig_pkts": id, "orig_bytes": 0, "resp_pkts": 0,
        "resp_bytes": 0, "state": "SF", "reason": "closed"
    }))
    .unwrap()
}

fn batch(sequence: u64, events: Vec<Event>) -> IncomingBatch {
    from_spool("spool-a", sequence, events)
}

fn from_spool(spool: &str, sequence: u64, events: Vec<Event>) -> IncomingBatch {
    // What tells a resend from other content: here, the events themselves.
    let digest = format!("{events:?}");
    let mut body_sha256 = [0u8; 32];
    for (i, b) in digest.bytes().enumerate() {
        body_sha256[i % 32] ^= b.rotate_left((i / 32) as u32);
    }
    IncomingBatch {
        agent: "agent-1.plant.test".into(),
        site: "plant-a".into(),
        spool_id: spool.into(),
        sequence,
        created_unix_ms: Some(1),
        received_unix_ms: 2,
        events,
        // Empty: the store encodes and compresses the events (the intake passes the body).
        body: Vec::new(),
        body_sha256,
        quarantined: Vec::new(),
    }
}

fn stored(out_of_order: bool) -> Stored {
    Stored::New {
        out_of_order,
        continuity: Continuity::Continues,
    }
}

fn versions(path: &std::path::Path) -> Vec<(u32, i64)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT version, applied_unix_ms FROM schema_version ORDER BY version")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_new_database_is_migrated_and_reopening_it_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), latest_version());
    assert_eq!(latest_version() as usize, MIGRATIONS.len());
    for table in [
        "batches",
        "events",
        "baselines",
        "alerts",
        "incidents",
        "assets",
    ] {
        assert_eq!(store.count(table).unwrap(), 0, "{table}");
    }
    store
        .store_batch(&batch(1, vec![event(1, "2024-01-01T00:00:00.000000Z")]))
        .unwrap();
    Box::new(store).close().unwrap();
    let recorded = versions(&path);
    assert_eq!(
        recorded.iter().map(|v| v.0).collect::<Vec<_>>(),
        (1..=latest_version()).collect::<Vec<_>>()
    );

    std::thread::sleep(std::time::Duration::from_millis(5));
    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), latest_version());
    assert_eq!(versions(&path), recorded, "nothing re-applied");
    assert_eq!(store.count("events").unwrap(), 1, "data kept");
    // WAL mode is persistent in the file.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_database_from_a_newer_collector_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO schema_version VALUES (?1, 'from the future', 0)",
        [latest_version() + 1],
    )
    .unwrap();
    drop(conn);
    match SqliteStore::open(&path) {
        Err(StoreError::NewerSchema { found, known }) => {
            assert_eq!((found, known), (latest_version() + 1, latest_version()));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_batch_is_stored_once_and_old_raw_events_expire() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
    let old = "2020-01-01T00:00:00.000000Z";
    let new = "2030-01-01T00:00:00.000000Z";
    let b5 = batch(5, vec![event(1, old), event(2, old)]);
    assert_eq!(store.store_batch(&b5).unwrap(), stored(false));
    assert_eq!(store.store_batch(&b5).unwrap(), Stored::Duplicate);
    assert_eq!(
        store.store_batch(&batch(3, vec![event(3, new)])).unwrap(),
        stored(true)
    );
    // A batch with an event inside the retention keeps its older events too.
    store
        .store_batch(&batch(7, vec![event(4, old), event(5, new)]))
        .unwrap();
    assert_eq!(store.count("batches").unwrap(), 3);
    assert_eq!(store.count("events").unwrap(), 5);

    // 2025-01-01 as the cutoff: events go per batch, once its newest event is older.
    let cutoff = 1_735_689_600_000_000;
    assert_eq!(store.expire_events(cutoff, 1).unwrap(), 2);
    assert_eq!(store.expire_events(cutoff, 10).unwrap(), 0);
    assert_eq!(store.count("events").unwrap(), 3);
    let left: Vec<String> = store
        .events_of("agent-1.plant.test")
        .unwrap()
        .into_iter()
        .map(|e| format!("{}:{}", e.sequence, e.idx))
        .collect();
    assert_eq!(left, ["3:0", "7:0", "7:1"]);
    // The batch records stay: a resend of batch 5 is still a duplicate.
    assert_eq!(store.store_batch(&b5).unwrap(), Stored::Duplicate);
}

/// The silent loss: an agent whose spool was lost starts again at 1. Its new batches
/// are stored (not taken for duplicates of the old spool's 1, 2, ...) and the change of spool
/// is reported once; a resend within the new spool is still a duplicate.
#[test]
fn a_restarted_numbering_is_stored_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
    let t = "2024-01-01T00:00:00.000000Z";
    for seq in 1..=3 {
        assert_eq!(
            store
                .store_batch(&from_spool("old", seq, vec![event(seq, t)]))
                .unwrap(),
            stored(false)
        );
    }
    let again = from_spool("new", 1, vec![event(100, t)]);
    assert_eq!(
        store.store_batch(&again).unwrap(),
        Stored::New {
            out_of_order: false,
            continuity: Continuity::NewSpool {
                previous: "old".into()
            }
        }
    );
    assert_eq!(store.store_batch(&again).unwrap(), Stored::Duplicate);
    assert_eq!(
        store
            .store_batch(&from_spool("new", 2, vec![event(101, t)]))
            .unwrap(),
        stored(false)
    );
    assert_eq!(store.count("events").unwrap(), 5);
}

/// A number used twice within one spool with other content (a power loss under
/// `fsync = never`): both are kept, the second reported.
#[test]
fn a_reused_number_with_other_content_is_stored_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
    let t = "2024-01-01T00:00:00.000000Z";
    store.store_batch(&batch(1, vec![event(1, t)])).unwrap();
    let other = batch(1, vec![event(2, t), event(3, t)]);
    assert_eq!(
        store.store_batch(&other).unwrap(),
        Stored::New {
            out_of_order: false,
            continuity: Continuity::Reused
        }
    );
    assert_eq!(store.store_batch(&other).unwrap(), Stored::Duplicate);
    assert_eq!(store.count("events").unwrap(), 3);
}

#[test]
fn quarantined_lines_are_kept_with_their_batch_and_listed_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
    let t = "2024-01-01T00:00:00.000000Z";
    let mut b = batch(4, vec![event(1, t)]);
    b.quarantined = vec![
        mamori_wire::RejectedLine {
            line: 2,
            reason: "not an RFC 3339 timestamp".into(),
            bytes: 300,
            text: "{\"type\":\"syslog\"}".into(),
        },
        mamori_wire::RejectedLine {
            line: 3,
            reason: "EOF".into(),
            bytes: 1,
            text: "{".into(),
        },
    ];
    store.store_batch(&b).unwrap();
    assert_eq!(store.count("quarantine").unwrap(), 2);
    assert_eq!(store.count("events").unwrap(), 1);
    let q = store.quarantined(Some("plant-a"), 0).unwrap();
    assert_eq!(q.iter().map(|l| l.line.line).collect::<Vec<_>>(), [3, 2]);
    assert_eq!(q[1].sequence, 4);
    assert_eq!(q[1].spool_id, "spool-a");
    assert_eq!(q[1].line.bytes, 300);
    assert!(store.quarantined(Some("elsewhere"), 0).unwrap().is_empty());
    // The events of the batch are readable alone.
    assert_eq!(store.events_of("agent-1.plant.test").unwrap().len(), 1);
}

/// A database written before spool ids (schema 4), with rows of every age, is migrated:
/// its batches and raw events stay, and an agent that still sends no spool id is
/// deduplicated against them as before.
#[test]
fn a_database_before_spool_ids_is_migrated_with_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL,
                                          applied_unix_ms INTEGER NOT NULL);",
        )
        .unwrap();
        for m in MIGRATIONS.iter().filter(|m| m.version <= 4) {
            conn.execute_batch(m.sql).unwrap();
            conn.execute(
                "INSERT INTO schema_version VALUES (?1, ?2, 0)",
                rusqlite::params![m.version, m.description],
            )
            .unwrap();
        }
        // A batch of schema 1 (events as rows) and one of schema 4 (a body).
        conn.execute_batch(
            "INSERT INTO batches (id, agent, sequence, site, received_unix_ms, events)
                 VALUES (1, 'agent-1.plant.test', 1, 'plant-a', 0, 1);
             INSERT INTO events (batch_id, idx, agent, site, type, ts_us, json)
                 VALUES (1, 0, 'agent-1.plant.test', 'plant-a', 'flow', 0, '{}');",
        )
        .unwrap();
        let body = mamori_wire::encode_body(&[event(9, "2024-01-01T00:00:00.000000Z")]).unwrap();
        conn.execute(
            "INSERT INTO batches (id, agent, sequence, site, received_unix_ms, events, body,
                                  min_ts_us, max_ts_us)
             VALUES (2, 'agent-1.plant.test', 2, 'plant-a', 0, 1, ?1, 0, 0)",
            [body],
        )
        .unwrap();
    }
    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), latest_version());
    assert_eq!(store.count("batches").unwrap(), 2);
    assert_eq!(store.count("events").unwrap(), 2);
    // No spool id, numbers already stored: duplicates, whatever their bytes.
    assert_eq!(
        store
            .store_batch(&from_spool(
                "",
                2,
                vec![event(77, "2024-01-01T00:00:00.000000Z")]
            ))
            .unwrap(),
        Stored::Duplicate
    );
    // The upgraded agent's first spool id is not taken for a restart.
    assert_eq!(
        store
            .store_batch(&from_spool(
                "fresh",
                1,
                vec![event(78, "2024-01-01T00:00:00.000000Z")]
            ))
            .unwrap(),
        stored(false)
    );
}
