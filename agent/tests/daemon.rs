//! `mamori-agent run` as a process: starts from its configuration file, takes syslog on UDP,
//! serves Prometheus metrics, and on SIGTERM flushes every event and exits promptly. A bad
//! configuration stops it before anything is opened or written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let u = UdpSocket::bind(("127.0.0.1", s.local_addr().unwrap().port()));
    let port = s.local_addr().unwrap().port();
    drop(u);
    port
}

fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn daemon_takes_syslog_serves_metrics_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (syslog_port, metrics_port) = (free_port(), free_port());
    let events = dir.path().join("events.jsonl");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[syslog_receivers]\nudp_listen = \"127.0.0.1:{syslog_port}\"\n[output]\nevents_file = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            events.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mamori-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let start = Instant::now();
    while scrape(metrics_port).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "metrics endpoint never came up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..3 {
        let msg = format!(
            "<34>Oct 11 22:14:1{i} rtu-3 sshd[811]: Failed password for root from 10.9.9.{i}"
        );
        sock.send_to(msg.as_bytes(), ("127.0.0.1", syslog_port))
            .unwrap();
    }
    let mut metrics = String::new();
    let start = Instant::now();
    while !metrics.contains("mamori_agent_syslog_messages_total{transport=\"udp\"} 3") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "metrics never counted the messages:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(50));
        metrics = scrape(metrics_port).unwrap_or_default();
    }
    assert!(
        metrics.contains("mamori_agent_build_info{version="),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE mamori_agent_packets_total counter"),
        "{metrics}"
    );

    let stopped = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "no exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status:?}\n{stderr}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "every message written before exit");
    assert!(
        lines.iter().all(|e| e["type"] == "syslog"
            && e["app_name"] == "sshd"
            && e["src_ip"] == "127.0.0.1")
    );
}

#[test]
fn a_bad_configuration_stops_the_daemon_before_it_touches_anything() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("[decode]\nmax_flows = 0\n[output]\nevents_file = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:1\"\n", events.display()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mamori-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("decode.max_flows") && err.contains("capture.interfaces"),
        "{err}"
    );
    assert!(!events.exists(), "nothing is written");
}

/// The value of the series `name` (with its labels, as written) in a scrape; 0 when absent.
fn series(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Sends SIGTERM to `child` and waits for it; its exit status, its stderr and how long it took.
fn terminate(child: &mut std::process::Child) -> (std::process::ExitStatus, String, Duration) {
    let sent = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if sent.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no exit within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = sent.elapsed();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr, took)
}

#[test]
fn sigterm_stops_an_agent_whose_spool_is_full_while_the_collector_is_down() {
    let dir = tempfile::tempdir().unwrap();
    // Certificates are read at start but never used: nothing listens at the collector's port.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["agent-1.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (dir.path().join("agent.crt"), dir.path().join("agent.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let (syslog_port, metrics_port, collector_port) = (free_port(), free_port(), free_port());
    let spool = dir.path().join("spool");
    let shipper = format!(
        "[shipper]\nagent_id = \"agent-1.test\"\ncollector_address = \"127.0.0.1:{collector_port}\"\n\
         server_name = \"collector.test\"\nca_file = \"{cert}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n\
         spool_dir = \"{spool}\"\nspool_max_bytes = 2048\nmax_batch_bytes = 1024\nmax_batch_events = 1\n\
         when_full = \"block\"\nreconnect_initial_seconds = 0.2\nreconnect_max_seconds = 1.0\n\
         [syslog_receivers]\nudp_listen = \"127.0.0.1:{syslog_port}\"\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
        cert = cert_file.display(),
        key = key_file.display(),
        spool = spool.display(),
    );
    // The golden capture holds far more events than the spool: its replay waits for room.
    let golden =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/modbus_plant.pcap");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "{shipper}[capture]\nreplay_files = [\"{}\"]\n",
            golden.display()
        ),
    )
    .unwrap();
    let start = |config: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_mamori-agent"))
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let scrape_until = |what: &str, cond: &dyn Fn(&str) -> bool| {
        let t = Instant::now();
        loop {
            let m = scrape(metrics_port).unwrap_or_default();
            if cond(&m) {
                return m;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "never {what}:\n{m}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut child = start(&config);
    scrape_until("a full spool", &|m| {
        series(m, "mamori_agent_spool_bytes") >= 2048.0
    });
    // The syslog listeners' producer waits too.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(
        b"<34>Oct 11 22:14:15 rtu-3 sshd[811]: Failed password",
        ("127.0.0.1", syslog_port),
    )
    .unwrap();
    let metrics = scrape_until("the syslog message taken", &|m| {
        series(m, "mamori_agent_syslog_messages_total{transport=\"udp\"}") >= 1.0
    });
    std::thread::sleep(Duration::from_millis(300));
    let spooled = series(&metrics, "mamori_agent_spool_events");
    assert!(spooled >= 1.0, "{metrics}");
    assert_eq!(
        series(&metrics, "mamori_agent_spool_events_acked_total"),
        0.0,
        "the collector is down"
    );

    let (status, stderr, took) = terminate(&mut child);
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM took {took:?} to stop the agent\n{stderr}"
    );

    // Nothing spooled was lost: the next start finds every event in the spool.
    std::fs::write(&config, &shipper).unwrap();
    let mut child = start(&config);
    let recovered = scrape_until("the spool recovered", &|m| {
        m.contains("mamori_agent_spool_events_recovered_total")
    });
    assert_eq!(
        series(&recovered, "mamori_agent_spool_events_recovered_total"),
        spooled,
        "{recovered}"
    );
    let (status, stderr, took) = terminate(&mut child);
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(
        took < Duration::from_secs(5),
        "second stop took {took:?}\n{stderr}"
    );
}
