//! The intake server against the real agent shipper and against bad clients, on loopback with
//! a test PKI (rcgen): every event an agent produced is stored exactly once and in order, also
//! across a SIGKILL of the collector (a child process of the real binary); bad input is
//! refused with the right status, counted by reason, and does not hold up a good agent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{Pki, event, exchange, post, shipper_config, status, wait_until};

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mamori_agent::ship::Shipper;
use mamori_collector::{Collector, CollectorConfig, RefusalReason, SqliteStore};
use mamori_models::Event;
use tokio::net::TcpStream;

const AGENT_1: &str = "agent-1.plant.test";
const AGENT_2: &str = "agent-2.plant.test";
const AGENT_3: &str = "agent-3.plant.test";

// ---------------------------------------------------------------------------------------
// Certificates

/// The collector's certificate, signed by the agents' CA for brevity (the agents trust it).
fn collector_toml(pki: &Pki, listen: SocketAddr, db: &Path, extra_intake: &str) -> String {
    let (cert, key) = pki.server();
    format!(
        r#"
[intake]
listen = "{listen}"
cert_file = "{}"
key_file = "{}"
client_ca_file = "{}"
header_timeout_seconds = 0.5
idle_timeout_seconds = 5
shutdown_grace_seconds = 5
{extra_intake}

[[agents]]
id = "{AGENT_1}"
site = "plant-a"

[[agents]]
id = "{AGENT_2}"
site = "plant-b"

[[agents]]
id = "{AGENT_3}"
site = "plant-b"

[storage]
sqlite_path = "{}"
# The test events are from 2024: keep them.
event_retention_days = 0
"#,
        cert.display(),
        key.display(),
        pki.ca_file().display(),
        db.display()
    )
}

fn collector_config(pki: &Pki, listen: SocketAddr, db: &Path, extra: &str) -> CollectorConfig {
    let text = collector_toml(pki, listen, db, extra);
    let c = CollectorConfig::parse(&text).unwrap();
    c.validate(Path::new("test.toml")).unwrap();
    c
}

// ---------------------------------------------------------------------------------------
// Helpers

fn event_id(e: &Event) -> u64 {
    match e {
        Event::Flow(f) => f.orig_pkts,
        other => panic!("unexpected event {other:?}"),
    }
}

/// Event ids stored for `agent`, in the agent's order, and the sites they were filed under.
fn stored(db: &Path, agent: &str) -> (Vec<u64>, Vec<String>) {
    let store = SqliteStore::open(db).unwrap();
    let rows = store.events_of(agent).unwrap();
    let ids = rows
        .iter()
        .map(|r| event_id(&serde_json::from_str(&r.json).unwrap()))
        .collect();
    let mut sites: Vec<String> = rows.into_iter().map(|r| r.site).collect();
    sites.dedup();
    (ids, sites)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn jsonl(ids: impl IntoIterator<Item = u64>) -> Vec<u8> {
    let mut out = Vec::new();
    for id in ids {
        serde_json::to_writer(&mut out, &event(id)).unwrap();
        out.push(b'\n');
    }
    out
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

// ---------------------------------------------------------------------------------------
// Delivery

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_every_event_stored_once_in_order_under_its_site() {
    let pki = Pki::new("main");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let collector = Collector::start(&collector_config(&pki, localhost(), &db, ""))
        .await
        .unwrap();
    let addr = collector.local_addr();
    let (spool1, spool2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a1 = Shipper::start(&shipper_config(&pki, AGENT_1, addr, spool1.path())).unwrap();
    let a2 = Shipper::start(&shipper_config(&pki, AGENT_2, addr, spool2.path())).unwrap();
    for id in 0..500 {
        a1.push(&event(id)).await.unwrap();
        a2.push(&event(10_000 + id)).await.unwrap();
    }
    let s1 = a1.shutdown(Duration::from_secs(20)).await.unwrap();
    let s2 = a2.shutdown(Duration::from_secs(20)).await.unwrap();
    let stats = collector.shutdown().await.unwrap();
    eprintln!("collector: {stats:?}");

    assert_eq!((s1.events_acked_total, s2.events_acked_total), (500, 500));
    assert_eq!(stats.events_stored_total, 1000);
    assert_eq!(stats.batches_stored_total, 100);
    assert_eq!(stats.batches_duplicate_total, 0);
    assert!(
        stats.refused_total.iter().all(|(_, n)| *n == 0),
        "{stats:?}"
    );
    let (ids, sites) = stored(&db, AGENT_1);
    assert_eq!(ids, (0..500).collect::<Vec<_>>());
    assert_eq!(sites, ["plant-a"]);
    let (ids, sites) = stored(&db, AGENT_2);
    assert_eq!(ids, (10_000..10_500).collect::<Vec<_>>());
    assert_eq!(sites, ["plant-b"]);
}

// ---------------------------------------------------------------------------------------
// Bad input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_counted_while_a_good_agent_is_served() {
    let pki = Pki::new("main");
    let other_ca = Pki::new("other");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let limits = "max_body_bytes = 4096\nmax_decompressed_bytes = 65536";
    let collector = Collector::start(&collector_config(&pki, localhost(), &db, limits))
        .await
        .unwrap();
    let addr = collector.local_addr();
    let stats = collector.stats();

    // A well-behaved agent sends all along.
    let spool = tempfile::tempdir().unwrap();
    let good =
        Arc::new(Shipper::start(&shipper_config(&pki, AGENT_1, addr, spool.path())).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicU64::new(0));
    let producer = {
        let (good, stop, pushed) = (good.clone(), stop.clone(), pushed.clone());
        tokio::spawn(async move {
            let mut id = 0;
            while !stop.load(Ordering::SeqCst) {
                good.push(&event(id)).await.unwrap();
                id += 1;
                pushed.store(id, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let agent3 = pki.client(Some(AGENT_3));
    let batch = gzip(&jsonl(0..5));

    // Not gzip.
    let r = exchange(
        agent3.clone(),
        addr,
        &post(AGENT_3, "1", b"not gzip at all", None),
    )
    .await;
    assert_eq!(status(&r), 400, "{r}");
    // gzip, but a line that is not an event: the batch is stored and acknowledged, the line
    // quarantined (one bad line must not make the agent resend the batch forever).
    let r = exchange(
        agent3.clone(),
        addr,
        &post(AGENT_3, "1", &gzip(b"{\"x\":1}\n"), None),
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(
        r.ends_with(r#"{"acked":1,"duplicate":false,"quarantined":1}"#),
        "{r}"
    );
    // A sequence that is not a number.
    let r = exchange(agent3.clone(), addr, &post(AGENT_3, "-1", &batch, None)).await;
    assert_eq!(status(&r), 400, "{r}");
    assert_eq!(stats.refused(RefusalReason::Malformed), 2);

    // A body over max_body_bytes, announced, and a gzip bomb over max_decompressed_bytes.
    let big = vec![b'x'; 5000];
    let r = exchange(agent3.clone(), addr, &post(AGENT_3, "1", &big, None)).await;
    assert_eq!(status(&r), 413, "{r}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b'\n'; 1 << 20]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 4096);
    let r = exchange(agent3.clone(), addr, &post(AGENT_3, "1", &bomb, None)).await;
    assert_eq!(status(&r), 413, "{r}");
    assert_eq!(stats.refused(RefusalReason::TooLarge), 2);

    // An agent claiming another agent's id, and an agent with a valid certificate that is
    // not in the allowlist.
    let r = exchange(agent3.clone(), addr, &post(AGENT_2, "1", &batch, None)).await;
    assert_eq!(status(&r), 403, "{r}");
    assert_eq!(stats.refused(RefusalReason::IdentityMismatch), 1);
    let rogue = "rogue.plant.test";
    let r = exchange(
        pki.client(Some(rogue)),
        addr,
        &post(rogue, "1", &batch, None),
    )
    .await;
    assert_eq!(status(&r), 403, "{r}");
    assert_eq!(stats.refused(RefusalReason::UnknownAgent), 1);

    // A batch, then the same sequence again (a replay, or a resend after a lost ack).
    let r = exchange(agent3.clone(), addr, &post(AGENT_3, "7", &batch, None)).await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(
        r.ends_with(r#"{"acked":7,"duplicate":false,"quarantined":0}"#),
        "{r}"
    );
    let r = exchange(agent3.clone(), addr, &post(AGENT_3, "7", &batch, None)).await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(
        r.ends_with(r#"{"acked":7,"duplicate":true,"quarantined":0}"#),
        "{r}"
    );
    // The same number with other content: a number used twice, not a resend. Stored too.
    let r = exchange(
        agent3.clone(),
        addr,
        &post(AGENT_3, "7", &gzip(&jsonl(100..105)), None),
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(
        r.ends_with(r#"{"acked":7,"duplicate":false,"quarantined":0}"#),
        "{r}"
    );
    assert_eq!(stats.snapshot().sequence_reuses_total, 1);

    // Not the batch endpoint.
    let r = exchange(
        agent3.clone(),
        addr,
        b"GET /v1/batches HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 405, "{r}");

    // No client certificate; a certificate from another CA.
    let r = exchange(pki.client(None), addr, &post(AGENT_3, "8", &batch, None)).await;
    assert_eq!(status(&r), 0, "{r}");
    let r = exchange(
        other_ca.client(Some(AGENT_3)),
        addr,
        &post(AGENT_3, "8", &batch, None),
    )
    .await;
    assert_eq!(status(&r), 0, "{r}");
    wait_until("handshake refusals", Duration::from_secs(5), || {
        stats.refused(RefusalReason::TlsHandshake) == 2
    })
    .await;

    // Slow loris: headers begun, never finished; and a connection that says nothing.
    for partial in [&b"POST /v1/batches HTTP/1.1\r\nHost: x\r\n"[..], b""] {
        let started = Instant::now();
        let r = exchange(agent3.clone(), addr, partial).await;
        let took = started.elapsed();
        assert!(status(&r) == 0 || status(&r) == 408, "{r}");
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(3),
            "closed after {took:?}"
        );
    }
    assert_eq!(stats.refused(RefusalReason::HeaderTimeout), 2);

    // Meanwhile the good agent kept being served.
    let before = good.stats().snapshot().events_acked_total;
    wait_until("the good agent to go on", Duration::from_secs(10), || {
        good.stats().snapshot().events_acked_total >= before + 50
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    producer.await.unwrap();
    let good = Arc::try_unwrap(good).unwrap();
    let s = good.shutdown(Duration::from_secs(20)).await.unwrap();
    let n = pushed.load(Ordering::SeqCst);
    assert_eq!(s.events_acked_total, n);
    assert_eq!(s.batches_retried_total, 0, "{s:?}");
    let snapshot = collector.shutdown().await.unwrap();
    eprintln!("good agent: {n} events; collector: {snapshot:?}");

    let (ids, _) = stored(&db, AGENT_1);
    assert_eq!(ids, (0..n).collect::<Vec<_>>());
    // The resent batch is there once; the other one under its number too, and the line
    // that was not an event is in quarantine, not among the events.
    let (ids, sites) = stored(&db, AGENT_3);
    assert_eq!(ids, (0..5).chain(100..105).collect::<Vec<_>>());
    assert_eq!(sites, ["plant-b"]);
    assert_eq!(snapshot.batches_duplicate_total, 1);
    assert_eq!(snapshot.events_quarantined_total, 1);
    assert_eq!(snapshot.refused(RefusalReason::NotFound), 1);
}

// ---------------------------------------------------------------------------------------
// Crash

/// The real binary, `serve`, as a child process.
fn spawn_collector(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mamori-collector"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Waits until something accepts TCP connections on `addr`; returns how long it took.
async fn wait_listening(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "collector not up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_killed_with_sigkill_while_agents_send_loses_nothing() {
    let pki = Pki::new("main");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, collector_toml(&pki, addr, &db, "")).unwrap();
    let mut child = spawn_collector(&config);
    let first_start = wait_listening(addr).await;

    let spools = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let agents: Vec<Arc<Shipper>> = [AGENT_1, AGENT_2]
        .iter()
        .zip(&spools)
        .map(|(a, s)| Arc::new(Shipper::start(&shipper_config(&pki, a, addr, s.path())).unwrap()))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicU64::new(0));
    let producer = {
        let (agents, stop, pushed) = (agents.clone(), stop.clone(), pushed.clone());
        tokio::spawn(async move {
            let mut id = 0;
            while !stop.load(Ordering::SeqCst) {
                for a in &agents {
                    a.push(&event(id)).await.unwrap();
                }
                id += 1;
                pushed.store(id, Ordering::SeqCst);
                if id % 5 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    let acked = |agents: &[Arc<Shipper>]| {
        agents
            .iter()
            .map(|a| a.stats().snapshot().events_acked_total)
            .sum::<u64>()
    };

    let mut restarts = Vec::new();
    for round in 0..3u64 {
        wait_until("acks", Duration::from_secs(20), || {
            acked(&agents) >= 400 * (round + 1)
        })
        .await;
        child.kill().unwrap(); // SIGKILL, mid-stream
        child.wait().unwrap();
        // Agents keep producing while the collector is away.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let restarted = Instant::now();
        child = spawn_collector(&config);
        wait_listening(addr).await;
        restarts.push(restarted.elapsed());
    }
    let at_last_restart = acked(&agents);
    wait_until("acks after the restarts", Duration::from_secs(20), || {
        acked(&agents) >= at_last_restart + 400
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    producer.await.unwrap();
    drop(agents_drain(agents).await);

    // Graceful stop of the collector (SIGTERM): exits 0.
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");

    let n = pushed.load(Ordering::SeqCst);
    eprintln!(
        "{n} events per agent; first start {first_start:?}, restarts after SIGKILL {restarts:?}"
    );
    for agent in [AGENT_1, AGENT_2] {
        let (ids, _) = stored(&db, agent);
        assert_eq!(ids.len() as u64, n, "{agent}");
        assert_eq!(ids, (0..n).collect::<Vec<_>>(), "{agent}");
    }
    // The WAL was folded back at the graceful stop.
    let wal = dir.path().join("collector.db-wal");
    assert!(std::fs::metadata(&wal).map_or(true, |m| m.len() == 0));
}

/// Drains every agent; returns their final counters (every push acknowledged).
async fn agents_drain(agents: Vec<Arc<Shipper>>) -> Vec<mamori_agent::ship::ShipStatsSnapshot> {
    let mut out = Vec::new();
    for a in agents {
        let a = Arc::try_unwrap(a).unwrap();
        let s = a.shutdown(Duration::from_secs(20)).await.unwrap();
        assert_eq!(s.events_acked_total, s.events_accepted_total, "{s:?}");
        eprintln!("agent: {s:?}");
        out.push(s);
    }
    out
}

// ---------------------------------------------------------------------------------------
// Configuration

#[test]
fn check_config_reports_every_problem_with_file_and_key() {
    let pki = Pki::new("main");
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        collector_toml(&pki, localhost(), &dir.path().join("c.db"), ""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mamori-collector"))
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let bad = dir.path().join("bad.toml");
    let text = collector_toml(
        &pki,
        localhost(),
        &dir.path().join("c.db"),
        "max_body_bytes = 1",
    )
    .replace(
        "site = \"plant-b\"\n\n[[agents]]\nid = \"agent-3",
        "site = \" \"\n\n[[agents]]\nid = \"agent-3",
    )
    .replace(&pki.ca_file().display().to_string(), "/nonexistent/ca.pem");
    std::fs::write(&bad, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mamori-collector"))
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "intake.max_body_bytes",
        "agents[1].site",
        "intake.client_ca_file",
    ] {
        assert!(err.contains(&format!("bad.toml: {key}")), "{key}: {err}");
    }
}

/// Problems of the TOML itself (a bad address, a word for a number, a misspelt key) are
/// reported in the same run as those of the values, each under its key and on its line.
#[test]
fn check_config_reports_toml_problems_under_their_keys_and_lines_with_the_rest() {
    let pki = Pki::new("main");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let text = collector_toml(
        &pki,
        localhost(),
        &dir.path().join("c.db"),
        "max_body_bytes = 1
max_connections = \"many\"
max_conections = 5",
    ) + "\n[metrics]\nlisten = \"127.0.0.1:port\"\n";
    std::fs::write(&bad, &text).unwrap();
    let line_of = |needle: &str| {
        text.lines()
            .position(|l| l.starts_with(needle))
            .map(|n| n + 1)
            .unwrap()
    };
    let out = Command::new(env!("CARGO_BIN_EXE_mamori-collector"))
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for (key, needle, what) in [
        (
            "metrics.listen",
            "listen = \"127.0.0.1:port",
            "invalid socket address",
        ),
        (
            "intake.max_connections",
            "max_connections =",
            "invalid type",
        ),
        ("intake.max_conections", "max_conections =", "unknown field"),
    ] {
        let line = line_of(needle);
        let found = err
            .lines()
            .find(|l| l.contains(&format!("bad.toml: {key}: ")))
            .unwrap_or_else(|| panic!("no problem at {key}: {err}"));
        assert!(found.contains(&format!(": line {line}: {what}")), "{found}");
    }
    assert!(err.contains("bad.toml: intake.max_body_bytes: "), "{err}");
}

// ---------------------------------------------------------------------------------------
// Retention

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_events_past_the_retention_are_deleted_and_batch_records_kept() {
    let pki = Pki::new("main");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let text = collector_toml(&pki, localhost(), &db, "").replace(
        "event_retention_days = 0",
        "event_retention_days = 1\nretention_interval_seconds = 0.05",
    );
    let config = CollectorConfig::parse(&text).unwrap();
    let collector = Collector::start(&config).await.unwrap();
    let stats = collector.stats();
    let spool = tempfile::tempdir().unwrap();
    let agent = Shipper::start(&shipper_config(
        &pki,
        AGENT_1,
        collector.local_addr(),
        spool.path(),
    ))
    .unwrap();
    for id in 0..50 {
        agent.push(&event(id)).await.unwrap(); // from 2024: past a day's retention
    }
    agent.shutdown(Duration::from_secs(20)).await.unwrap();
    wait_until("retention", Duration::from_secs(10), || {
        stats.snapshot().events_expired_total == 50
    })
    .await;
    collector.shutdown().await.unwrap();
    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(store.count("events").unwrap(), 0);
    assert_eq!(store.count("batches").unwrap(), 5);
}

// ---------------------------------------------------------------------------------------
// Bounds

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_slots_answer_503_a_slow_body_408_and_extra_connections_are_closed() {
    let pki = Pki::new("main");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let limits = "max_concurrent_requests = 1\nmax_connections = 2\nbody_timeout_seconds = 0.5";
    let collector = Collector::start(&collector_config(&pki, localhost(), &db, limits))
        .await
        .unwrap();
    let addr = collector.local_addr();
    let stats = collector.stats();
    let agent3 = pki.client(Some(AGENT_3));
    let batch = gzip(&jsonl(0..5));

    // A takes the only request slot with a body that never completes.
    let slow = {
        let (tls, partial) = (
            agent3.clone(),
            post(AGENT_3, "1", &batch[..10], Some(batch.len())),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            (exchange(tls, addr, &partial).await, started.elapsed())
        })
    };
    wait_until(
        "the slow body to hold the slot",
        Duration::from_secs(5),
        || stats.snapshot().connections_open == 1,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = exchange(agent3.clone(), addr, &post(AGENT_3, "2", &batch, None)).await;
    assert_eq!(status(&r), 503, "{r}");
    assert!(
        r.contains("Retry-After: 1") || r.contains("retry-after: 1"),
        "{r}"
    );
    assert_eq!(stats.refused(RefusalReason::Overloaded), 1);

    // A second connection, silent, fills max_connections: a third is closed at once.
    wait_until(
        "the 503 connection to close",
        Duration::from_secs(5),
        || stats.snapshot().connections_open == 1,
    )
    .await;
    let silent = tokio::spawn(exchange(agent3.clone(), addr, b""));
    wait_until("two connections", Duration::from_secs(5), || {
        stats.snapshot().connections_open == 2
    })
    .await;
    let r = exchange(agent3.clone(), addr, &post(AGENT_3, "3", &batch, None)).await;
    assert_eq!(status(&r), 0, "{r}");
    assert_eq!(stats.refused(RefusalReason::TooManyConnections), 1);

    let (r, took) = slow.await.unwrap();
    assert_eq!(status(&r), 408, "{r}");
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert_eq!(stats.refused(RefusalReason::BodyTimeout), 1);
    silent.await.unwrap();

    // Slots and connections are free again.
    let r = exchange(agent3.clone(), addr, &post(AGENT_3, "4", &batch, None)).await;
    assert_eq!(status(&r), 200, "{r}");
    let snapshot = collector.shutdown().await.unwrap();
    eprintln!("collector: {snapshot:?}");
    assert_eq!(snapshot.batches_stored_total, 1);
}
