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
