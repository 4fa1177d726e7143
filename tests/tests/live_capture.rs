//! Live capture on a veth pair: a `tokio-modbus` client in the root namespace talks to a
//! `tokio-modbus` server inside a network namespace the test creates; the agent captures on the
//! root side with AF_PACKET; its events must equal those of `replay` over a pcap of the same
//! frames, and describe every transaction the client made.
//!
//! Needs root (namespaces, veth, raw sockets): skipped with a reason otherwise, mandatory when
//! `MAMORI_REQUIRE_ROOT=1` (set by `.ci/run`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mamori_agent::capture::live::{CaptureFilter, LiveCapture, LiveConfig, LiveInput};
use mamori_agent::pipeline::{Pipeline, PipelineConfig};
use mamori_agent::replay::replay_to_vec;
use mamori_models::Event;
use mamori_tests::pcapgen::PcapWriter;
use tokio_modbus::prelude::*;

fn root_or_skip() -> bool {
    if nix::unistd::geteuid().is_root() && Command::new("ip").arg("-V").output().is_ok() {
        return true;
    }
    if std::env::var_os("MAMORI_REQUIRE_ROOT").is_some_and(|v| v == "1") {
        panic!("MAMORI_REQUIRE_ROOT=1 but the test is not running as root with iproute2");
    }
    eprintln!("skipped: live capture needs root and iproute2 (namespaces, veth, AF_PACKET)");
    false
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace and a veth pair, removed on drop.
struct Testbed {
    ns: String,
    host_if: String,
}

impl Testbed {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let ns = format!("mamori-lc-{id}");
        let host_if = format!("mlc{id}a");
        let ns_if = format!("mlc{id}b");
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        ip(&["netns", "add", &ns]);
        let bed = Testbed {
            ns: ns.clone(),
            host_if: host_if.clone(),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &ns]);
        ip(&["addr", "add", "10.213.7.1/24", "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            "10.213.7.2/24",
            "dev",
            &ns_if,
        ]);
        ip(&["netns", "exec", &ns, "ip", "link", "set", &ns_if, "up"]);
        ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        bed
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

#[test]
fn live_capture_equals_replay_of_the_same_traffic() {
    if !root_or_skip() {
        return;
    }
    let bed = Testbed::new();
    let server: SocketAddr = "10.213.7.2:502".parse().unwrap();

    // The Modbus server runs on a thread that entered the namespace.
    let ns_path = format!("/var/run/netns/{}", bed.ns);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server_stop = Arc::new(AtomicBool::new(false));
    let server_thread = {
        let stop = Arc::clone(&server_stop);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&ns_path).unwrap();
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (_addr, task) = mamori_tests::modbus_plant::serve_plant_on(server)
                    .await
                    .unwrap();
                ready_tx.send(()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                task.abort();
            });
        })
    };
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();

    // The agent's capture on the root side, with every frame also written to a pcap.
    let config = LiveConfig {
        interfaces: vec![bed.host_if.clone()],
        filter: CaptureFilter::AllIp,
        ..LiveConfig::default()
    };
    let mut cap = LiveCapture::open(&config).unwrap();
    let cap_stop = Arc::new(AtomicBool::new(false));
    let capture_thread = {
        let stop = Arc::clone(&cap_stop);
        std::thread::spawn(move || {
            let mut pipeline = Pipeline::new(PipelineConfig::default());
            let mut events = Vec::new();
            let mut pcap = PcapWriter::new(1);
            cap.run(&stop, Duration::from_millis(100), |input| {
                if let LiveInput::Frame(pkt) = input {
                    pcap.packet(pkt.ts.as_micros(), pkt.data);
                    pipeline.process(pkt, &mut |e| events.push(e));
                }
            });
            pipeline.finish(&mut |e| events.push(e));
            let stats = cap.stats();
            (
                events,
                pcap.into_bytes(),
                stats.kernel_drops.load(Ordering::Relaxed),
                stats.queue_drops.load(Ordering::Relaxed),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    // The HMI: a few polls and writes, then a clean disconnect.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let requests = rt.block_on(async {
        let mut ctx = tcp::connect_slave(server, Slave(1)).await.unwrap();
        let mut n = 0;
        for i in 0..10u16 {
            ctx.read_holding_registers(10, 3).await.unwrap().unwrap();
            ctx.read_coils(i, 5).await.unwrap().unwrap();
            ctx.write_single_register(20, 1000 + i)
                .await
                .unwrap()
                .unwrap();
            n += 3;
        }
        // An exception: an address the plant does not have.
        let r = ctx.read_input_registers(60_000, 2).await.unwrap();
        assert!(r.is_err());
        n += 1;
        ctx.disconnect().await.unwrap();
        n
    });
    std::thread::sleep(Duration::from_millis(500));
    cap_stop.store(true, Ordering::Relaxed);
    let (live, pcap, kernel_drops, queue_drops) = capture_thread.join().unwrap();
    server_stop.store(true, Ordering::Relaxed);
    server_thread.join().unwrap();
    assert_eq!((kernel_drops, queue_drops), (0, 0));

    let modbus: Vec<_> = live
        .iter()
        .filter_map(|e| match e {
            Event::Modbus(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(modbus.len(), requests, "one event per transaction");
    assert!(
        modbus
            .iter()
            .all(|m| m.request.is_some() && m.response.is_some())
    );
    assert!(
        modbus
            .iter()
            .all(|m| m.src_ip.to_string() == "10.213.7.1" && m.dst_port == 502)
    );
    assert_eq!(
        modbus
            .iter()
            .filter(|m| m.exception.as_deref() == Some("ILLEGAL_DATA_ADDRESS"))
            .count(),
        1
    );
    assert!(
        modbus.iter().all(|m| m.anomalies.is_empty()),
        "{:?}",
        modbus.iter().map(|m| &m.anomalies).collect::<Vec<_>>()
    );
    let flow = live
        .iter()
        .find_map(|e| match e {
            Event::Flow(f) if f.service.as_deref() == Some("modbus") => Some(f),
            _ => None,
        })
        .unwrap();
    assert_eq!(flow.state, "SF");

    // The same frames replayed from the pcap give the same events.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.pcap");
    std::fs::write(&path, &pcap).unwrap();
    let (replayed, report) = replay_to_vec(&[path], PipelineConfig::default());
    assert!(report.errors.is_empty());
    assert_eq!(live, replayed);
}
