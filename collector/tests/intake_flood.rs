//! An authenticated agent turned hostile cannot push the collector out of memory: 64 gzip
//! bombs at once (each kind: inflating to the cap, claiming more than the cap, lying in its
//! gzip trailer) and 8 maximal batches (32 MiB of events each, the default cap), against the
//! real `mamori-collector serve` with its shipped default limits. Its peak RSS stays under
//! 512 MiB, every maximal batch is stored in the end, and a good agent shipping meanwhile
//! has every event acknowledged. (Before the memory budget, eight such batches took the
//! collector to 3 GB.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{Pki, event, exchange, post, shipper_config, status};

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mamori_agent::ship::Shipper;

const GOOD: &str = "agent-1.plant.test";
const HOSTILE: &str = "agent-2.plant.test";
const LIMIT_BYTES: u64 = 512 * 1024 * 1024;
/// The shipped default `max_decompressed_bytes`.
const MAX_DECOMPRESSED: usize = mamori_wire::MAX_BATCH_JSONL_BYTES as usize;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// A body of flow events filling `MAX_DECOMPRESSED` to within one line.
fn maximal_body() -> (Vec<u8>, u64) {
    let mut jsonl = Vec::with_capacity(MAX_DECOMPRESSED);
    let mut n = 0u64;
    loop {
        let line = format!(
            r#"{{"type":"flow","ts":"2024-01-01T00:00:00.000000Z","end_ts":"2024-01-01T00:00:01.000000Z","transport":"tcp","src_ip":"10.0.{}.{}","src_port":{},"dst_ip":"10.0.0.2","dst_port":502,"service":"modbus","orig_pkts":{n},"orig_bytes":0,"resp_pkts":0,"resp_bytes":0,"state":"SF","reason":"fin"}}"#,
            (n >> 8) & 0xff,
            n & 0xff,
            1024 + n % 60000
        );
        if jsonl.len() + line.len() + 1 > MAX_DECOMPRESSED {
            return (gzip(&jsonl), n);
        }
        jsonl.extend_from_slice(line.as_bytes());
        jsonl.push(b'\n');
        n += 1;
    }
}

/// The three bombs: spaces up to the cap exactly (accepted: one line, quarantined), twice the
/// cap (refused by its trailer before inflating), and 256 MiB whose trailer claims 100 bytes
/// (cut off after 101).
fn bombs() -> [Vec<u8>; 3] {
    let at_cap = gzip(&vec![b' '; MAX_DECOMPRESSED]);
    let over = gzip(&vec![b' '; 2 * MAX_DECOMPRESSED]);
    let mut liar = gzip(&vec![0u8; 256 * 1024 * 1024]);
    let n = liar.len();
    liar[n - 4..].copy_from_slice(&100u32.to_le_bytes());
    [at_cap, over, liar]
}

fn rss(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bombs_and_maximal_batches_stay_under_512_mib_and_a_good_agent_is_served() {
    let pki = Pki::new("flood");
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (cert, key) = pki.server();
    let config = dir.path().join("collector.toml");
    // The intake limits are the shipped defaults: nothing set here.
    std::fs::write(
        &config,
        format!(
            r#"
[intake]
listen = "{addr}"
cert_file = "{}"
key_file = "{}"
client_ca_file = "{}"

[[agents]]
id = "{GOOD}"
site = "plant"

[[agents]]
id = "{HOSTILE}"
site = "plant"

[storage]
sqlite_path = "{}"
event_retention_days = 0
"#,
            cert.display(),
            key.display(),
            pki.ca_file().display(),
            dir.path().join("c.db").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mamori-collector"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "collector not up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (maximal, events_each) = tokio::task::spawn_blocking(maximal_body).await.unwrap();
    let bombs = Arc::new(tokio::task::spawn_blocking(bombs).await.unwrap());
    eprintln!(
        "maximal batch: {events_each} events, {} bytes compressed; bombs: {:?} bytes",
        maximal.len(),
        bombs.iter().map(Vec::len).collect::<Vec<_>>()
    );

    // The good agent ships all along.
    let spool = tempfile::tempdir().unwrap();
    let good = Arc::new(Shipper::start(&shipper_config(&pki, GOOD, addr, spool.path())).unwrap());
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
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    // Peak RSS, sampled (VmHWM is read at the end as well).
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(rss(pid, "VmRSS:"), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let hostile = pki.client(Some(HOSTILE));
    let sequence = Arc::new(AtomicU64::new(1));
    let flood_until = Instant::now() + Duration::from_secs(20);
    let mut tasks = tokio::task::JoinSet::new();
    // 64 bombers, each sending its kind of bomb again and again for the flood's span.
    for i in 0..64usize {
        let (hostile, bombs, sequence) = (hostile.clone(), bombs.clone(), sequence.clone());
        tasks.spawn(async move {
            let mut answers = Vec::new();
            while Instant::now() < flood_until {
                let seq = sequence.fetch_add(1, Ordering::SeqCst).to_string();
                let r = exchange(
                    hostile.clone(),
                    addr,
                    &post(HOSTILE, &seq, &bombs[i % 3], None),
                )
                .await;
                answers.push((i % 3, status(&r)));
            }
            (false, answers)
        });
    }
    // 8 maximal batches, each resent until stored.
    let maximal = Arc::new(maximal);
    for _ in 0..8 {
        let (hostile, maximal, sequence) = (hostile.clone(), maximal.clone(), sequence.clone());
        tasks.spawn(async move {
            let seq = sequence.fetch_add(1, Ordering::SeqCst).to_string();
            let deadline = Instant::now() + Duration::from_secs(240);
            let mut answers = Vec::new();
            loop {
                let r = exchange(hostile.clone(), addr, &post(HOSTILE, &seq, &maximal, None)).await;
                let s = status(&r);
                answers.push((3, s));
                if s == 200 || Instant::now() > deadline {
                    return (true, answers);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    let mut by_kind = std::collections::BTreeMap::<(usize, u16), u64>::new();
    let mut maximal_stored = 0;
    while let Some(r) = tasks.join_next().await {
        let (is_maximal, answers) = r.unwrap();
        if is_maximal && answers.last().is_some_and(|a| a.1 == 200) {
            maximal_stored += 1;
        }
        for a in answers {
            *by_kind.entry(a).or_default() += 1;
        }
    }
    eprintln!("answers by (kind, status): {by_kind:?}");

    stop.store(true, Ordering::SeqCst);
    producer.await.unwrap();
    sampler.await.unwrap();
    let good = Arc::try_unwrap(good).unwrap();
    let s = good.shutdown(Duration::from_secs(60)).await.unwrap();
    let n = pushed.load(Ordering::SeqCst);
    let hwm = rss(pid, "VmHWM:");
    let peak = peak.load(Ordering::SeqCst).max(hwm);
    eprintln!(
        "collector peak RSS {:.1} MiB; good agent: {n} pushed, {} acked, {} retried",
        peak as f64 / 1048576.0,
        s.events_acked_total,
        s.batches_retried_total
    );
    assert!(child.try_wait().unwrap().is_none(), "the collector died");
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();

    assert!(peak > 0, "RSS not read");
    assert!(
        peak < LIMIT_BYTES,
        "collector peak RSS {peak} bytes over {LIMIT_BYTES}"
    );
    assert_eq!(maximal_stored, 8, "{by_kind:?}");
    assert_eq!(s.events_acked_total, n, "the good agent lost events: {s:?}");
    // Each bomb got its answer: quarantined at the cap, 413 over it, 400 for the liar.
    assert!(
        by_kind.get(&(0, 200)).is_some_and(|&c| c > 0),
        "{by_kind:?}"
    );
    assert!(
        by_kind.get(&(1, 413)).is_some_and(|&c| c > 0),
        "{by_kind:?}"
    );
    assert!(
        by_kind.get(&(2, 400)).is_some_and(|&c| c > 0),
        "{by_kind:?}"
    );
    // 72 connections at once from one address: some handshakes are closed to make room
    // (max_handshakes_per_address) and answer nothing (0); never a server error.
    assert!(
        !by_kind.keys().any(|(_, s)| *s >= 500 && *s != 503),
        "a server error: {by_kind:?}"
    );
}
