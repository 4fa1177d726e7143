//! Unauthenticated clients cannot shut agents out of the intake. The real binary
//! (`mamori-collector serve`, a child process) runs with the default caps and, where the
//! environment allows, systemd's default soft open-file limit of 1024; 1,100 idle TCP
//! connections that never send a ClientHello (and reconnect a second after being closed) come
//! first from one loopback address, then from 100; meanwhile a real agent `Shipper`, which
//! opens a new connection for every batch, must see every batch acknowledged within 1 s of
//! the latency it had without the attack, and the collector's log must stay short (no line
//! per refused or failed connection). And a limit too low for the configured caps stops
//! `serve` at once with an error naming the keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{Pki, event, shipper_config, value};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mamori_agent::ship::Shipper;
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

const AGENT: &str = "agent-1.plant.test";
/// Idle connections of the attack.
const IDLE_CONNECTIONS: usize = 1_100;
/// Batches shipped per phase.
const BATCHES: u64 = 10;
/// How much slower than without the attack a batch may be acknowledged.
const MARGIN: Duration = Duration::from_secs(1);

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The defaults of every intake cap and timeout: only what a test needs is set.
fn collector_toml(pki: &Pki, listen: SocketAddr, metrics: SocketAddr, db: &Path) -> String {
    let (cert, key) = pki.server();
    format!(
        r#"
[intake]
listen = "{listen}"
cert_file = "{}"
key_file = "{}"
client_ca_file = "{}"

[[agents]]
id = "{AGENT}"
site = "plant-a"

[storage]
sqlite_path = "{}"
event_retention_days = 0

[metrics]
listen = "{metrics}"
"#,
        cert.display(),
        key.display(),
        pki.ca_file().display(),
        db.display()
    )
}

/// `(soft, hard)` of this process's open-file limit; `None` is unlimited.
fn nofile() -> (Option<u64>, Option<u64>) {
    let text = std::fs::read_to_string("/proc/self/limits").unwrap();
    let l = mamori_collector::descriptors::parse_proc_limits(&text).unwrap();
    (l.soft, l.hard)
}

fn seccomp_filtered() -> bool {
    std::fs::read_to_string("/proc/self/status").map_or(true, |s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .is_none_or(|v| v.trim() != "0")
    })
}

/// The attack holds 1,100 sockets in this process: make sure it may.
fn ensure_own_descriptors(need: u64) {
    let (soft, hard) = nofile();
    if soft.is_none_or(|s| s >= need) {
        return;
    }
    assert!(
        hard.is_none_or(|h| h >= need),
        "this test holds {need} sockets but the hard open-file limit is {hard:?}"
    );
    nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_NOFILE,
        need,
        hard.unwrap_or(nix::sys::resource::RLIM_INFINITY),
    )
    .unwrap();
}

/// The collector as a child, its stderr lines collected. With `soft_limit`, under that soft
/// open-file limit (systemd's default is 1024), the hard one inherited.
fn spawn_collector(config: &Path, soft_limit: Option<u64>) -> (Child, Arc<Mutex<Vec<String>>>) {
    let bin = env!("CARGO_BIN_EXE_mamori-collector");
    let mut cmd = match soft_limit {
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -Sn {n} && exec \"$0\" \"$@\""))
                .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let mut child = cmd
        .args(["serve", "--config"])
        .arg(config)
        .env("MAMORI_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    (child, lines)
}

async fn wait_listening(addr: SocketAddr, child: &mut Child) {
    let started = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("collector exited at start: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "collector not up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn scrape(metrics: SocketAddr) -> String {
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(metrics).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut t = String::new();
        s.read_to_string(&mut t).unwrap();
        t
    })
    .await
    .unwrap()
}

/// Idle TCP connections from `sources`, each reconnecting a second after it is closed.
struct Attack {
    tasks: Vec<JoinHandle<()>>,
    connects: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
}

impl Attack {
    fn start(target: SocketAddr, sources: &[Ipv4Addr], n: usize) -> Attack {
        let connects = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicU64::new(0));
        let tasks = (0..n)
            .map(|k| {
                let source = sources[k % sources.len()];
                let (connects, closed) = (Arc::clone(&connects), Arc::clone(&closed));
                tokio::spawn(async move {
                    loop {
                        let socket = tokio::net::TcpSocket::new_v4().unwrap();
                        socket
                            .bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))
                            .unwrap();
                        if let Ok(mut tcp) = socket.connect(target).await {
                            connects.fetch_add(1, Ordering::Relaxed);
                            // Says nothing; waits to be closed.
                            let mut buf = [0u8; 64];
                            while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
                            closed.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                })
            })
            .collect();
        Attack {
            tasks,
            connects,
            closed,
        }
    }

    async fn established(&self) {
        let started = Instant::now();
        while self.connects.load(Ordering::Relaxed) < self.tasks.len() as u64 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "only {} attack connections made",
                self.connects.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the collector take them all in.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    fn stop(self) -> (u64, u64) {
        for t in &self.tasks {
            t.abort();
        }
        (
            self.connects.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed),
        )
    }
}

/// Ships `BATCHES` batches one at a time (each on a new connection: the shipper's idle
/// timeout is shorter than the pause between batches); the time each took to be
/// acknowledged, stopping at the first not acknowledged within `deadline`.
async fn ship(shipper: &Shipper, first_id: u64, deadline: Duration) -> Vec<Option<Duration>> {
    let stats = shipper.stats();
    let mut out = Vec::new();
    for b in 0..BATCHES {
        let before = stats.snapshot().batches_acked_total;
        let started = Instant::now();
        for e in 0..10 {
            shipper.push(&event(first_id + b * 10 + e)).await.unwrap();
        }
        shipper.flush().unwrap();
        let mut acked = None;
        while started.elapsed() < deadline {
            if stats.snapshot().batches_acked_total > before {
                acked = Some(started.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        out.push(acked);
        if acked.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    out
}

fn worst(latencies: &[Option<Duration>]) -> Option<Duration> {
    latencies
        .iter()
        .try_fold(Duration::ZERO, |m, l| l.map(|l| m.max(l)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_or_many_addresses_cannot_shut_an_agent_out() {
    ensure_own_descriptors(IDLE_CONNECTIONS as u64 + 1024);
    let pki = Pki::new("lockout");
    let dir = tempfile::tempdir().unwrap();
    let (addr, metrics) = (free_port(), free_port());
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        collector_toml(&pki, addr, metrics, &dir.path().join("collector.db")),
    )
    .unwrap();
    // systemd's default soft limit, where the collector may raise it (no seccomp filter, a
    // hard limit with room): the descriptors would run out before the connection caps do.
    let (_, hard) = nofile();
    let soft_limit = (!seccomp_filtered() && hard.is_none_or(|h| h >= 4096)).then_some(1024u64);
    if soft_limit.is_none() {
        eprintln!(
            "note: collector runs with this process's open-file limit (seccomp filter or hard \
             limit {hard:?} below 4096), not under a soft limit of 1024"
        );
    }
    let (mut child, log) = spawn_collector(&config, soft_limit);
    wait_listening(addr, &mut child).await;

    let spool = tempfile::tempdir().unwrap();
    let mut sc = shipper_config(&pki, AGENT, addr, spool.path());
    // A new connection (and handshake) for every batch: the batches pause longer than this.
    sc.idle_timeout_seconds = 0.02;
    sc.flush_interval_seconds = 10.0;
    let shipper = Shipper::start(&sc).unwrap();

    let baseline = ship(&shipper, 0, Duration::from_secs(20)).await;
    let normal = worst(&baseline).expect("without an attack every batch is acknowledged");
    let deadline = normal + MARGIN + Duration::from_secs(4);

    let one = [Ipv4Addr::new(127, 0, 0, 2)];
    let attack = Attack::start(addr, &one, IDLE_CONNECTIONS);
    attack.established().await;
    let from_one = ship(&shipper, 1_000, deadline).await;
    let text_one = scrape(metrics).await;
    let (connects_one, closed_one) = attack.stop();

    let many: Vec<Ipv4Addr> = (2..102).map(|n| Ipv4Addr::new(127, 0, 0, n)).collect();
    let attack = Attack::start(addr, &many, IDLE_CONNECTIONS);
    attack.established().await;
    let from_many = ship(&shipper, 2_000, deadline).await;
    let text_many = scrape(metrics).await;
    let (connects_many, closed_many) = attack.stop();

    let s = shipper.shutdown(Duration::from_secs(10)).await.unwrap();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let exit = child.wait().unwrap();
    // The stderr reader ends with the process.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = log.lock().unwrap().clone();
    let ms = |l: &[Option<Duration>]| {
        l.iter()
            .map(|d| d.map_or("none".to_owned(), |d| d.as_millis().to_string()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    eprintln!(
        "ack latency (ms) without attack: {}; one address: {}; 100 addresses: {}\n\
         attack connects/closed by the collector: one address {connects_one}/{closed_one}, \
         100 addresses {connects_many}/{closed_many}\nagent: {s:?}\ncollector log ({} lines):\n{}",
        ms(&baseline),
        ms(&from_one),
        ms(&from_many),
        log.len(),
        log.join("\n")
    );
    assert!(exit.success(), "{exit:?}");
    for (what, l) in [("one address", &from_one), ("100 addresses", &from_many)] {
        assert_eq!(
            l.len() as u64,
            BATCHES,
            "{what}: a batch was not acknowledged"
        );
        let w = worst(l).unwrap_or_else(|| panic!("{what}: a batch was not acknowledged"));
        assert!(
            w <= normal + MARGIN,
            "{what}: a batch took {w:?}, {normal:?} without the attack"
        );
    }
    assert_eq!(s.batches_acked_total, 3 * BATCHES, "{s:?}");
    // The tables stayed bounded, and the evictions were counted by reason.
    for text in [&text_one, &text_many] {
        let pending = value(text, "mamori_intake_handshakes_pending").unwrap();
        assert!(pending <= 256.0, "{pending}");
    }
    assert!(
        value(
            &text_one,
            r#"mamori_intake_errors_total{reason="handshakes_per_address"}"#
        )
        .unwrap()
            > 1000.0
    );
    assert!(
        value(
            &text_many,
            r#"mamori_intake_errors_total{reason="handshakes_full"}"#
        )
        .unwrap()
            > 500.0
    );
    assert_eq!(
        value(&text_many, "mamori_intake_accept_errors_total"),
        Some(0.0)
    );
    // A handful of lines (start, one per refusal reason a minute, stop), not one per
    // connection.
    assert!(log.len() < 40, "{} log lines", log.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_too_low_for_the_caps_stops_serve_with_the_keys_named() {
    let pki = Pki::new("limits");
    let dir = tempfile::tempdir().unwrap();
    let (addr, metrics) = (free_port(), free_port());
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        collector_toml(&pki, addr, metrics, &dir.path().join("collector.db")),
    )
    .unwrap();
    // Soft and hard 1024, as under systemd without LimitNOFILE= and with setrlimit filtered:
    // the default caps (1024 authenticated + 256 handshakes + ...) cannot fit.
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" serve --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_mamori-collector"))
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = out.id();
    let waited = tokio::task::spawn_blocking(move || out.wait_with_output());
    let out = match tokio::time::timeout(Duration::from_secs(20), waited).await {
        Ok(done) => done.unwrap().unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("serve started under a limit of 1024 with caps that need more");
        }
    };
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("collector.toml: intake.max_connections + intake.max_handshakes"),
        "{err}"
    );
    assert!(err.contains("LimitNOFILE="), "{err}");
    assert!(std::net::TcpStream::connect(addr).is_err());
}
