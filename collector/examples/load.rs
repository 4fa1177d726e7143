//! Load generator for the collector (`bench/collector-load.sh`): many agents sending batches
//! concurrently over mutual TLS on loopback, as the agent's shipper does.
//!
//! `prepare` writes a test PKI (one CA, the collector's certificate, one per agent) and a
//! collector configuration into a folder. `run` generates every batch up front (a Modbus
//! site per agent: an HMI polling many PLC channels every 100 ms of event time, with rogue
//! writes from new hosts after the learning period, so that detection raises alerts), then
//! sends them from all agents at once as fast as the collector acknowledges, and prints what
//! it measured as one JSON object. The collector runs as its own process, so its CPU and
//! memory are its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use mamori_wire::{
    AGENT_HEADER, BATCHES_PATH, CONTENT_TYPE, CREATED_HEADER, EVENT_COUNT_HEADER, SEQUENCE_HEADER,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const SERVER_NAME: &str = "collector.load.test";
/// Event time of the first event: 2024-01-01T00:00:00Z.
const T0_US: i64 = 1_704_067_200_000_000;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes the PKI and `collector.toml` into `dir`.
    Prepare {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 50)]
        agents: usize,
        /// Learning period of every site, seconds of event time.
        #[arg(long, default_value_t = 60.0)]
        learn_seconds: f64,
    },
    /// Sends the load and prints the figures.
    Run {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 50)]
        agents: usize,
        /// The collector's intake.
        #[arg(long, default_value = "127.0.0.1:18443")]
        addr: String,
        /// Events per batch.
        #[arg(long, default_value_t = 1000)]
        batch_events: usize,
        /// Batches per agent.
        #[arg(long, default_value_t = 120)]
        batches: usize,
        /// Modbus channels of each site (polled every 100 ms of event time).
        #[arg(long, default_value_t = 400)]
        channels: usize,
        /// A rogue write from a new host every this many batches, after learning.
        #[arg(long, default_value_t = 5)]
        attack_every: usize,
        #[arg(long, default_value_t = 60.0)]
        learn_seconds: f64,
    },
}

fn agent_name(i: usize) -> String {
    format!("agent-{i}.load.test")
}

fn prepare(dir: &Path, agents: usize, learn_seconds: f64) {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Mamori load test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![name.to_owned()]).unwrap();
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    };
    leaf(SERVER_NAME, ExtendedKeyUsagePurpose::ServerAuth);
    let mut agents_toml = String::new();
    for i in 0..agents {
        leaf(&agent_name(i), ExtendedKeyUsagePurpose::ClientAuth);
        agents_toml.push_str(&format!(
            "[[agents]]\nid = \"{}\"\nsite = \"site-{i}\"\n\n",
            agent_name(i)
        ));
    }
    let d = dir.display();
    let config = format!(
        r#"# Written by `cargo run --example load -- prepare`.
[intake]
listen = "127.0.0.1:18443"
cert_file = "{d}/{SERVER_NAME}.crt"
key_file = "{d}/{SERVER_NAME}.key"
client_ca_file = "{d}/ca.crt"
max_concurrent_requests = 64
max_connections = 256

{agents_toml}
[storage]
sqlite_path = "{d}/collector.db"
event_retention_days = 0

[metrics]
listen = "127.0.0.1:19103"

[detection]
learning_period_seconds = {learn_seconds}
inventory_store_interval_seconds = 5
"#
    );
    std::fs::write(dir.join("collector.toml"), config).unwrap();
}

/// One site's events as JSON Lines, in batches.
fn batches(
    agent: usize,
    batch_events: usize,
    batches: usize,
    channels: usize,
    attack_every: usize,
    learn_seconds: f64,
) -> Vec<(Vec<u8>, u32)> {
    let net = agent % 250;
    let hmi = format!("10.{net}.0.10");
    let period_us = 100_000i64;
    let step_us = period_us / channels as i64;
    let learn_us = (learn_seconds * 1e6) as i64;
    let mut out = Vec::with_capacity(batches);
    let mut n: i64 = 0;
    let mut rogue = 0u32;
    for b in 0..batches {
        let mut lines = Vec::with_capacity(batch_events * 420);
        let mut count = 0u32;
        for _ in 0..batch_events {
            let ch = (n % channels as i64) as usize;
            let ts_us = T0_US + n * step_us;
            let plc = format!("10.{net}.1.{}", 1 + ch / 10);
            let address = (ch % 10) * 10;
            let ts = mamori_models::Timestamp::from_micros(ts_us);
            let v = 100 + (n / channels as i64 % 7) as u16;
            let e = serde_json::json!({
                "type": "modbus", "ts": ts, "src_ip": hmi, "src_port": 40000 + (ch / 10) as u16,
                "dst_ip": plc, "dst_port": 502, "tid": (n % 65536) as u16, "unit": 1,
                "func": 3, "func_name": "READ_HOLDING_REGISTERS",
                "request": { "ts": ts, "len": 6, "address": address, "quantity": 2 },
                "response": { "ts": ts, "len": 7, "byte_count": 4, "values": [v, v + 1] },
                "exception": null, "exception_code": null, "latency_us": 800, "anomalies": []
            });
            serde_json::to_writer(&mut lines, &e).unwrap();
            lines.push(b'\n');
            count += 1;
            n += 1;
        }
        let end_us = T0_US + n * step_us;
        if b % attack_every == attack_every - 1 && end_us > T0_US + learn_us {
            rogue += 1;
            let ts = mamori_models::Timestamp::from_micros(end_us);
            let e = serde_json::json!({
                "type": "modbus", "ts": ts, "src_ip": format!("10.{net}.9.{}", rogue % 200 + 1),
                "src_port": 51000, "dst_ip": format!("10.{net}.1.1"), "dst_port": 502, "tid": 1,
                "unit": 1, "func": 6, "func_name": "WRITE_SINGLE_REGISTER",
                "request": { "ts": ts, "len": 6, "address": 0, "values": [9999] },
                "response": { "ts": ts, "len": 6, "address": 0, "values": [9999] },
                "exception": null, "exception_code": null, "latency_us": 800, "anomalies": []
            });
            serde_json::to_writer(&mut lines, &e).unwrap();
            lines.push(b'\n');
            count += 1;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&lines).unwrap();
        out.push((gz.finish().unwrap(), count));
    }
    out
}

fn tls(dir: &Path, agent: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join(format!("{agent}.crt")))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{agent}.key"))).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Sends one agent's batches in order over one connection; (events acked, retries).
async fn send_all(
    addr: String,
    agent: String,
    connector: tokio_rustls::TlsConnector,
    batches: Vec<(Vec<u8>, u32)>,
) -> (u64, u64) {
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from(SERVER_NAME).unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut acked = 0u64;
    let mut retries = 0u64;
    for (seq, (body, count)) in batches.into_iter().enumerate() {
        let body = Bytes::from(body);
        loop {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis();
            let req = Request::post(BATCHES_PATH)
                .header(hyper::header::HOST, SERVER_NAME)
                .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
                .header(hyper::header::CONTENT_ENCODING, "gzip")
                .header(AGENT_HEADER, &agent)
                .header(SEQUENCE_HEADER, (seq + 1).to_string())
                .header(EVENT_COUNT_HEADER, count.to_string())
                .header(CREATED_HEADER, now_ms.to_string())
                .body(Full::new(body.clone()))
                .unwrap();
            sender.ready().await.unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            if status == hyper::StatusCode::OK {
                acked += u64::from(count);
                break;
            }
            // 503: the store's queue is full; the agent backs off the same way.
            assert_eq!(status.as_u16(), 503, "batch refused: {status}");
            retries += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    (acked, retries)
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Prepare {
            dir,
            agents,
            learn_seconds,
        } => prepare(&dir, agents, learn_seconds),
        Command::Run {
            dir,
            agents,
            addr,
            batch_events,
            batches: per_agent,
            channels,
            attack_every,
            learn_seconds,
        } => {
            let prepared = Instant::now();
            let all: Vec<Vec<(Vec<u8>, u32)>> = (0..agents)
                .map(|a| {
                    batches(
                        a,
                        batch_events,
                        per_agent,
                        channels,
                        attack_every,
                        learn_seconds,
                    )
                })
                .collect();
            let events: u64 = all.iter().flatten().map(|(_, c)| u64::from(*c)).sum();
            let bytes: usize = all.iter().flatten().map(|(b, _)| b.len()).sum();
            eprintln!(
                "generated {events} events in {} batches ({:.1} MB gzip) in {:.1} s",
                agents * per_agent,
                bytes as f64 / 1e6,
                prepared.elapsed().as_secs_f64()
            );
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let (acked, retries, wall) = rt.block_on(async move {
                let start = Instant::now();
                let mut tasks = Vec::new();
                for (a, b) in all.into_iter().enumerate() {
                    let name = agent_name(a);
                    let c = tls(&dir, &name);
                    tasks.push(tokio::spawn(send_all(addr.clone(), name, c, b)));
                }
                let mut acked = 0;
                let mut retries = 0;
                for t in tasks {
                    let (a, r) = t.await.unwrap();
                    acked += a;
                    retries += r;
                }
                (acked, retries, start.elapsed().as_secs_f64())
            });
            println!(
                "{}",
                serde_json::json!({
                    "agents": agents,
                    "events_acked": acked,
                    "batches": agents * per_agent,
                    "busy_retries": retries,
                    "wall_seconds": wall,
                    "events_per_second": acked as f64 / wall,
                })
            );
        }
    }
}
