//! `mamori-agent run` as a process under a UDP syslog flood of large datagrams, with its
//! collector down (nothing listens at the shipper's address, so the spool fills and drops):
//! the 100,000 datagrams of 60 KB took the agent to 803 MB (the unit allows 128 MiB)
//! and 731 MB after the queue drained, and a third of a 2 million datagram flood vanished in
//! the kernel without a trace in `/metrics`.
//!
//! Asserts that the peak resident memory (`VmHWM`) stays well under the unit's `MemoryMax`,
//! that the memory is given back afterwards, and that every datagram sent is accounted for in
//! a real scrape of `/metrics`: read by the listener or dropped by the kernel, and every one
//! read delivered or dropped with a reason. Loopback UDP loses nothing outside the socket's
//! receive buffer, so the sums are exact.
//!
//! The agent runs with the environment of the shipped systemd unit (`Environment=` lines of
//! `deploy/mamori-agent.service`), whose allocator setting is what gives the memory back.
//!
//! `MAMORI_FLOOD_DATAGRAMS` overrides the number of datagrams (default 2,000,000);
//! `MAMORI_FLOOD_SENDERS` the number of sending threads (default 2).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

const AGENT_ID: &str = "agent-1.plant.test";
const DATAGRAM_BYTES: usize = 60_000;
const DEFAULT_DATAGRAMS: u64 = 2_000_000;
/// Two, on this two-core machine: more would starve the agent of the CPU it needs to read, and
/// the flood would only exercise the kernel's drops.
const DEFAULT_SENDERS: u64 = 2;
/// Peak memory allowed, as a share of the unit's `MemoryMax`: the rest is margin for what
/// this test does not exercise (capture rings, TCP connections, the flow table).
const PEAK_SHARE_OF_MEMORY_MAX: f64 = 0.5;
/// How far above its resident memory before the flood the agent may stay after it (the queue
/// alone may hold 16 MiB during the flood).
const AFTER_FLOOD_SLACK_BYTES: u64 = 8 * 1024 * 1024;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unit_file() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mamori-agent.service"),
    )
    .unwrap()
}

/// `Environment=KEY=VALUE` lines of the shipped systemd unit: the agent runs with them here as
/// it does in production (the allocator's settings matter to its memory).
fn unit_environment() -> Vec<(String, String)> {
    unit_file()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .map(|kv| {
            assert!(
                !kv.contains(' ') && !kv.contains('"'),
                "one unquoted KEY=VALUE per Environment= line: {kv}"
            );
            let (k, v) = kv.split_once('=').expect("KEY=VALUE");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// `MemoryMax=` of the shipped systemd unit, in bytes.
fn unit_memory_max() -> u64 {
    let unit = unit_file();
    let value = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("MemoryMax="))
        .expect("the unit sets MemoryMax");
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().expect("MemoryMax=<n>M or <n>G");
    match unit {
        "M" => n << 20,
        "G" => n << 30,
        _ => panic!("MemoryMax={value}: expected M or G"),
    }
}

/// A field of /proc/<pid>/status, in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().unwrap();
    kib * 1024
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The value of the sample `series` (name and labels exactly as the text format writes
/// them); `None` when absent.
fn sample(metrics: &str, series: &str) -> Option<u64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// What the agent's `/metrics` says about the syslog listener.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    received: u64,
    kernel_drops: u64,
    delivered: u64,
    dropped: [u64; 4],
    queue_events: u64,
    queue_bytes: u64,
}

impl Counts {
    fn read(metrics: &str) -> Counts {
        let get = |s: &str| sample(metrics, s).unwrap_or_else(|| panic!("{s} in:\n{metrics}"));
        let dropped = |reason: &str| {
            get(&format!(
                "mamori_agent_syslog_dropped_total{{reason=\"{reason}\"}}"
            ))
        };
        Counts {
            received: get("mamori_agent_syslog_messages_total{transport=\"udp\"}"),
            kernel_drops: get("mamori_agent_syslog_kernel_drops_total"),
            delivered: get("mamori_agent_syslog_delivered_total"),
            dropped: [
                dropped("queue_full"),
                dropped("rate_limited"),
                dropped("rejected"),
                dropped("closed"),
            ],
            queue_events: get("mamori_agent_syslog_queue_events"),
            queue_bytes: get("mamori_agent_syslog_queue_bytes"),
        }
    }

    fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }
}

/// A CA and an agent certificate for the shipper (which checks them at start even though it
/// never reaches a collector here).
fn write_pki(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "Mamori test CA flood");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = p.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![AGENT_ID.to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, AGENT_ID);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("agent.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("agent.key"), key.serialize_pem()).unwrap();
}

/// Kills the agent if the test fails half-way.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(dir: &Path, syslog_port: u16, metrics_port: u16) -> Agent {
    write_pki(dir);
    // Nothing listens there: the collector is down for the whole test.
    let collector_port = free_port();
    let config = dir.join("agent.toml");
    let d = dir.display();
    std::fs::write(
        &config,
        format!(
            "[syslog_receivers]
udp_listen = \"127.0.0.1:{syslog_port}\"
max_message_bytes = 65536
queue_capacity_events = 65536

[shipper]
agent_id = \"{AGENT_ID}\"
collector_address = \"127.0.0.1:{collector_port}\"
server_name = \"collector.test\"
ca_file = \"{d}/ca.pem\"
cert_file = \"{d}/agent.pem\"
key_file = \"{d}/agent.key\"
spool_dir = \"{d}/spool\"
spool_max_bytes = 8388608
when_full = \"drop_oldest\"
fsync = \"never\"
max_batch_bytes = 1048576
flush_interval_seconds = 1.0

[metrics]
listen = \"127.0.0.1:{metrics_port}\"
"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mamori-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .envs(unit_environment())
        .env("MAMORI_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Agent(child)
}

/// Sends `count` datagrams of `DATAGRAM_BYTES` to `port` from `senders` threads as fast as
/// they go; returns how many the kernel took (a send that fails is not a datagram sent).
fn flood(port: u16, count: u64, senders: u64) -> u64 {
    let header = "<13>1 2024-01-02T03:04:05Z flood-host flood - - - ";
    let payload: Arc<Vec<u8>> = Arc::new(
        header
            .bytes()
            .chain(std::iter::repeat_n(b'x', DATAGRAM_BYTES - header.len()))
            .collect(),
    );
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..senders)
        .map(|t| {
            let (payload, sent, failed) = (payload.clone(), sent.clone(), failed.clone());
            let n = count / senders + u64::from(t < count % senders);
            std::thread::spawn(move || {
                let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                sock.connect(("127.0.0.1", port)).unwrap();
                for _ in 0..n {
                    match sock.send(&payload) {
                        Ok(_) => sent.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        eprintln!("{failed} sends failed (not counted as sent)");
    }
    sent.load(Ordering::Relaxed)
}

#[test]
fn udp_flood_with_the_collector_down_stays_bounded_and_fully_counted() {
    let count = env_u64("MAMORI_FLOOD_DATAGRAMS", DEFAULT_DATAGRAMS);
    let senders = env_u64("MAMORI_FLOOD_SENDERS", DEFAULT_SENDERS).max(1);
    let memory_max = unit_memory_max();
    let dir = tempfile::tempdir().unwrap();
    let (syslog_port, metrics_port) = (free_port(), free_port());
    let agent = start_agent(dir.path(), syslog_port, metrics_port);
    let pid = agent.0.id();

    let began = Instant::now();
    let before = loop {
        if let Some(m) = scrape(metrics_port)
            && m.contains("mamori_agent_syslog_kernel_drops_total")
        {
            break Counts::read(&m);
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "the agent's metrics never came up"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(before, Counts::default());
    let rss_start = proc_status_bytes(pid, "VmRSS");

    // Resident memory sampled during the flood, for the report (VmHWM has the true peak).
    let flooding = Arc::new(AtomicBool::new(true));
    let sampler = {
        let flooding = flooding.clone();
        std::thread::spawn(move || {
            let mut max = 0;
            while flooding.load(Ordering::Relaxed) {
                max = max.max(proc_status_bytes(pid, "VmRSS"));
                std::thread::sleep(Duration::from_millis(100));
            }
            max
        })
    };
    let flood_began = Instant::now();
    let sent = flood(syslog_port, count, senders);
    let flood_secs = flood_began.elapsed().as_secs_f64();
    flooding.store(false, Ordering::Relaxed);
    let rss_sampled_max = sampler.join().unwrap();

    // Quiet: every datagram read or dropped by the kernel, every one read delivered or
    // dropped, and the queue empty.
    let quiet_began = Instant::now();
    let counts = loop {
        let c = Counts::read(&scrape(metrics_port).expect("scrape"));
        if c.received + c.kernel_drops >= sent
            && c.delivered + c.dropped_total() == c.received
            && c.queue_events == 0
        {
            break c;
        }
        assert!(
            quiet_began.elapsed() < Duration::from_secs(60),
            "not quiet 60 s after the flood: sent {sent}, {c:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Let the allocator settle, then read the memory.
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = proc_status_bytes(pid, "VmRSS");
    let peak = proc_status_bytes(pid, "VmHWM");
    let final_counts = Counts::read(&scrape(metrics_port).expect("scrape"));
    eprintln!(
        "flood: {sent} datagrams of {DATAGRAM_BYTES} bytes from {senders} threads in \
         {flood_secs:.1} s; read by the listener {}, dropped by the kernel {}, delivered {}, \
         dropped queue_full {} (rate_limited {}, rejected {}, closed {}); RSS before {:.1} MiB, \
         peak (VmHWM) {:.1} MiB, sampled max {:.1} MiB, after {:.1} MiB; MemoryMax {:.0} MiB",
        counts.received,
        counts.kernel_drops,
        counts.delivered,
        counts.dropped[0],
        counts.dropped[1],
        counts.dropped[2],
        counts.dropped[3],
        mib(rss_start),
        mib(peak),
        mib(rss_sampled_max),
        mib(rss_after),
        mib(memory_max),
    );
    assert_eq!(final_counts, counts, "nothing moves once quiet");

    // Every datagram is accounted for, exactly.
    assert_eq!(
        counts.received + counts.kernel_drops,
        sent,
        "read + dropped by the kernel = sent: {counts:?}"
    );
    assert_eq!(counts.delivered + counts.dropped_total(), counts.received);
    assert_eq!(counts.queue_bytes, 0);
    assert!(counts.delivered > 0, "some got through: {counts:?}");

    // Memory: the peak well under MemoryMax, and given back after.
    let peak_allowed = (memory_max as f64 * PEAK_SHARE_OF_MEMORY_MAX) as u64;
    assert!(
        peak < peak_allowed,
        "peak RSS {:.1} MiB, allowed {:.1} MiB ({PEAK_SHARE_OF_MEMORY_MAX} of MemoryMax)",
        mib(peak),
        mib(peak_allowed)
    );
    assert!(
        rss_after < rss_start + AFTER_FLOOD_SLACK_BYTES,
        "RSS after the flood {:.1} MiB, before {:.1} MiB",
        mib(rss_after),
        mib(rss_start)
    );

    // And it still stops cleanly.
    let mut agent = agent;
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let stopped = Instant::now();
    let status = loop {
        if let Some(s) = agent.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(20),
            "no exit 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}
