//! The SQLite store behind the intake: migrations recorded and idempotent, a newer schema
//! refused, deduplication by (agent, sequence), retention of raw events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use mamori_collector::store::sqlite::{MIGRATIONS, latest_version};
use mamori_collector::{IncomingBatch, SqliteStore, Store, StoreError, Stored};
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
    IncomingBatch {
        agent: "agent-1.plant.test".into(),
        site: "plant-a".into(),
        sequence,
        created_unix_ms: Some(1),
        received_unix_ms: 2,
        events,
        // Empty: the store encodes and compresses the events (the intake passes the body).
        body: Vec::new(),
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
    assert_eq!(
        store.store_batch(&b5).unwrap(),
        Stored::New {
            out_of_order: false
        }
    );
    assert_eq!(store.store_batch(&b5).unwrap(), Stored::Duplicate);
    assert_eq!(
        store.store_batch(&batch(3, vec![event(3, new)])).unwrap(),
        Stored::New { out_of_order: true }
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
