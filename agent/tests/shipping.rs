//! Delivery tests of `ship/` against a stand-in collector on loopback: mTLS with a test CA
//! (rcgen), `POST /v1/batches`, deduplication by (agent, sequence), acks after storing. The
//! endpoint is stopped, made to refuse, made to lose an ack; the agent is dropped without a
//! graceful stop and killed with SIGKILL; the spool fills up. Each time every event produced
//! must be received exactly once, in order, or counted as dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mamori_agent::ship::{PushOutcome, ShipStatsSnapshot, Shipper, ShipperConfig, WhenFull};
use mamori_models::Event;
use mamori_wire::{AGENT_HEADER, BATCHES_PATH, SEQUENCE_HEADER};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber, date_time_ymd,
};
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

const SERVER_NAME: &str = "collector.test";
const AGENT: &str = "agent-1.plant.test";
/// Serial number of the agent certificate the CRL revokes.
const REVOKED_SERIAL: u64 = 666;

/// The issue's poison pill, from the agent's side: a batch the collector refuses as bad
/// input (400) is set aside in `rejected/` and counted, and the batches after it are
/// delivered, instead of resending it forever. Every event accepted is acked or counted as
/// dropped with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_as_bad_input_is_set_aside_and_the_next_goes() {
    let pki = Pki::new("main");
    let endpoint = Endpoint::start(&pki, vec![]).await;
    endpoint.modes.bad_input.lock().unwrap().insert(2);
    let spool = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(&agent_config(&pki, endpoint.addr, spool.path())).unwrap();
    push_all(&shipper, 0..100).await;
    let s = drain(shipper).await;

    let expected: Vec<u64> = (0..10).chain(20..100).collect();
    assert_eq!(endpoint.received(AGENT), expected);
    assert_eq!(s.batches_rejected_total, 1, "{s:?}");
    assert_eq!(s.events_rejected_total, 10, "{s:?}");
    assert_eq!(
        s.events_accepted_total + s.events_recovered_total,
        s.events_acked_total + s.events_rejected_total + s.events_dropped_total + s.spool_events,
        "{s:?}"
    );
    let rejected: Vec<String> = std::fs::read_dir(spool.path().join("rejected"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(rejected, ["000000000002.batch"]);
}

/// A collector that refuses everything as bad input is broken, not every batch poisoned:
/// after a few in a row the agent holds the rest and retries, so the spool is not emptied
/// into `rejected/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_refusing_everything_does_not_empty_the_spool() {
    let pki = Pki::new("main");
    let endpoint = Endpoint::start(&pki, vec![]).await;
    endpoint.modes.bad_input.lock().unwrap().insert(0);
    let spool = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(&agent_config(&pki, endpoint.addr, spool.path())).unwrap();
    let stats = shipper.stats();
    push_all(&shipper, 0..200).await;
    shipper.flush().unwrap();
    wait_until("retries of a held batch", Duration::from_secs(10), || {
        stats.snapshot().batches_retried_total >= 3
    })
    .await;
    let s = stats.snapshot();
    assert_eq!(s.batches_rejected_total, 8, "{s:?}");
    assert_eq!(shipper.spooled_batches(), 12);
    // Fixed: the held batches go, and the next refusal as bad input is set aside again.
    endpoint.modes.bad_input.lock().unwrap().clear();
    let s = drain(shipper).await;
    assert_eq!(endpoint.received(AGENT), (80..200).collect::<Vec<_>>());
    assert_eq!(s.events_acked_total, 120);
}

/// The spool's id is made once and kept across restarts; a spool folder made anew (the disk
/// replaced) gets another, which the collector uses to tell its batches 1, 2, ... from the
/// old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_id_is_kept_across_restarts_and_new_with_a_new_spool() {
    let pki = Pki::new("main");
    let endpoint = Endpoint::start(&pki, vec![]).await;
    let spool = tempfile::tempdir().unwrap();
    let config = agent_config(&pki, endpoint.addr, spool.path());
    for round in 0..2 {
        let shipper = Shipper::start(&config).unwrap();
        push_all(&shipper, round * 10..round * 10 + 10).await;
        drain(shipper).await;
    }
    let first = std::fs::read_to_string(spool.path().join("spool_id")).unwrap();
    std::fs::remove_dir_all(spool.path()).unwrap();
    let shipper = Shipper::start(&config).unwrap();
    push_all(&shipper, 20..30).await;
    drain(shipper).await;
    let second = std::fs::read_to_string(spool.path().join("spool_id")).unwrap();
    let ids = endpoint.modes.spool_ids.lock().unwrap().clone();
    assert_eq!(ids, [first.trim(), second.trim()]);
    assert!(ids.iter().all(|i| mamori_wire::valid_spool_id(i)));
}

// ---------------------------------------------------------------------------------------
// Certificates

/// A CA, the certificates it signs, and their PEM files in a temporary folder.
struct Pki {
    dir: tempfile::TempDir,
    ca_der: CertificateDer<'static>,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, format!("Mamori test CA {name}"));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = p.self_signed(&ca_key).unwrap();
        let ca_der = ca_cert.der().clone();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        Pki {
            dir,
            ca_der,
            ca_cert,
            ca_key,
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A leaf certificate for `name`; returns its DER and key.
    fn leaf(
        &self,
        name: &str,
        usage: ExtendedKeyUsagePurpose,
        serial: u64,
        expired: bool,
    ) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![usage];
        p.serial_number = Some(SerialNumber::from(serial));
        if expired {
            p.not_before = date_time_ymd(2020, 1, 1);
            p.not_after = date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        (cert, key)
    }

    /// Writes an agent's certificate and key; returns their paths.
    fn agent_files(
        &self,
        file: &str,
        name: &str,
        serial: u64,
        expired: bool,
    ) -> (PathBuf, PathBuf) {
        let (cert, key) = self.leaf(name, ExtendedKeyUsagePurpose::ClientAuth, serial, expired);
        let cert_path = self.dir.path().join(format!("{file}.pem"));
        let key_path = self.dir.path().join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    /// A CRL revoking `serials`.
    fn crl(&self, serials: &[u64]) -> CertificateRevocationListDer<'static> {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&s| RevokedCertParams {
                    serial_number: SerialNumber::from(s),
                    revocation_time: date_time_ymd(2024, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.ca_cert, &self.ca_key)
            .unwrap()
            .der()
            .clone()
    }
}

// ---------------------------------------------------------------------------------------
// The stand-in collector

#[derive(Debug, Default)]
struct Store {
    /// (agent, sequence) -> event ids, as stored.
    batches: BTreeMap<(String, u64), Vec<u64>>,
    /// Batches stored, in arrival order (duplicates excluded).
    arrivals: Vec<(String, u64)>,
    duplicates: u64,
    /// Batches stored whose ack was held back (`Modes::hold_acks`).
    acks_held: u64,
    handshake_failures: u64,
    identity_mismatches: u64,
}

#[derive(Debug, Default)]
struct Modes {
    /// Answer 503 to every batch.
    refuse: AtomicBool,
    /// Store the next batch, then drop the connection instead of acking.
    lose_next_ack: AtomicBool,
    /// Store each batch, then hold its ack while this is set.
    hold_acks: AtomicBool,
    /// Answer 400 (bad input) to batches with these sequence numbers; all of them when it
    /// holds 0.
    bad_input: Mutex<std::collections::BTreeSet<u64>>,
    /// Spool ids seen, in arrival order of their first batch.
    spool_ids: Mutex<Vec<String>>,
}

struct Endpoint {
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    store: Arc<Mutex<Store>>,
    modes: Arc<Modes>,
    task: Option<JoinHandle<()>>,
}

impl Endpoint {
    async fn start(pki: &Pki, crls: Vec<CertificateRevocationListDer<'static>>) -> Endpoint {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .with_crls(crls)
        .build()
        .unwrap();
        let (cert, key) = pki.leaf(SERVER_NAME, ExtendedKeyUsagePurpose::ServerAuth, 1, false);
        let der = cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![der], key)
            .unwrap();
        let mut e = Endpoint {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: Arc::new(tls),
            store: Arc::default(),
            modes: Arc::default(),
            task: None,
        };
        e.listen().await;
        e
    }

    async fn listen(&mut self) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener = socket.listen(64).unwrap();
        self.addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.clone());
        let (store, modes) = (self.store.clone(), self.modes.clone());
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                conns.spawn(serve(tcp, acceptor.clone(), store.clone(), modes.clone()));
            }
        }));
    }

    /// Closes the listener and every connection.
    async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    async fn restart(&mut self) {
        self.stop().await;
        self.listen().await;
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap()
    }

    /// Event ids received from `agent`, in arrival order, after checking that its batches
    /// arrived in increasing sequence order.
    fn received(&self, agent: &str) -> Vec<u64> {
        let store = self.store();
        let seqs: Vec<u64> = store
            .arrivals
            .iter()
            .filter(|(a, _)| a == agent)
            .map(|(_, s)| *s)
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "batches out of order: {seqs:?}"
        );
        seqs.iter()
            .flat_map(|s| store.batches[&(agent.to_string(), *s)].clone())
            .collect()
    }
}

async fn serve(
    tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    store: Arc<Mutex<Store>>,
    modes: Arc<Modes>,
) {
    let tls = match acceptor.accept(tcp).await {
        Ok(t) => t,
        Err(_) => {
            store.lock().unwrap().handshake_failures += 1;
            return;
        }
    };
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned();
    let service = service_fn(move |req| handle(req, peer.clone(), store.clone(), modes.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

fn answer(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

async fn handle(
    req: Request<Incoming>,
    peer: Option<CertificateDer<'static>>,
    store: Arc<Mutex<Store>>,
    modes: Arc<Modes>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    if req.method() != hyper::Method::POST || req.uri().path() != BATCHES_PATH {
        return Ok(answer(StatusCode::NOT_FOUND, String::new()));
    }
    if modes.refuse.load(Ordering::SeqCst) {
        return Ok(answer(StatusCode::SERVICE_UNAVAILABLE, "busy".into()));
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (Some(agent), Some(seq)) = (header(AGENT_HEADER), header(SEQUENCE_HEADER)) else {
        return Ok(answer(StatusCode::BAD_REQUEST, "missing headers".into()));
    };
    let Ok(seq) = seq.parse::<u64>() else {
        return Ok(answer(StatusCode::BAD_REQUEST, "bad sequence".into()));
    };
    if let Some(id) = header(mamori_wire::SPOOL_ID_HEADER) {
        let mut ids = modes.spool_ids.lock().unwrap();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    {
        let bad = modes.bad_input.lock().unwrap();
        if bad.contains(&seq) || bad.contains(&0) {
            return Ok(answer(StatusCode::BAD_REQUEST, "poison".into()));
        }
    }
    // The agent is who its certificate says: the claimed id must be one of its names.
    let named = peer.as_ref().is_some_and(|der| {
        let name = ServerName::try_from(agent.clone());
        let cert = webpki::EndEntityCert::try_from(der);
        matches!((cert, name), (Ok(c), Ok(n)) if c.verify_is_valid_for_subject_name(&n).is_ok())
    });
    if !named {
        store.lock().unwrap().identity_mismatches += 1;
        return Ok(answer(
            StatusCode::FORBIDDEN,
            "agent id not in certificate".into(),
        ));
    }
    let body = Limited::new(req.into_body(), 64 << 20)
        .collect()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .to_bytes();
    let Ok(events) = mamori_wire::decode_body(&body, 256 << 20).map(|d| d.events) else {
        return Ok(answer(StatusCode::BAD_REQUEST, "bad body".into()));
    };
    let ids: Vec<u64> = events.iter().map(event_id).collect();
    let duplicate = {
        let mut s = store.lock().unwrap();
        let key = (agent.clone(), seq);
        if s.batches.contains_key(&key) {
            s.duplicates += 1;
            true
        } else {
            s.batches.insert(key.clone(), ids);
            s.arrivals.push(key);
            false
        }
    };
    if modes.hold_acks.load(Ordering::SeqCst) {
        store.lock().unwrap().acks_held += 1;
        while modes.hold_acks.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    if modes.lose_next_ack.swap(false, Ordering::SeqCst) {
        return Err(std::io::Error::other("ack lost on purpose"));
    }
    Ok(answer(
        StatusCode::OK,
        format!(r#"{{"acked":{seq},"duplicate":{duplicate}}}"#),
    ))
}

// ---------------------------------------------------------------------------------------
// Helpers

fn event(id: u64) -> Event {
    serde_json::from_value(serde_json::json!({
        "type": "flow", "ts": "2024-01-01T00:00:00.000000Z",
        "end_ts": "2024-01-01T00:00:01.000000Z", "transport": "tcp",
        "src_ip": "10.0.0.1", "src_port": 40000, "dst_ip": "10.0.0.2", "dst_port": 502,
        "service": "modbus", "orig_pkts": id, "orig_bytes": 0, "resp_pkts": 0,
        "resp_bytes": 0, "state": "SF", "reason": "closed"
    }))
    .unwrap()
}

fn event_id(e: &Event) -> u64 {
    match e {
        Event::Flow(f) => f.orig_pkts,
        other => panic!("unexpected event {other:?}"),
    }
}

/// A valid agent's configuration, with fast limits for tests.
fn agent_config(pki: &Pki, addr: SocketAddr, spool: &Path) -> ShipperConfig {
    let (cert, key) = pki.agent_files("agent", AGENT, 100, false);
    config_with(pki, addr, spool, cert, key)
}

fn config_with(
    pki: &Pki,
    addr: SocketAddr,
    spool: &Path,
    cert: PathBuf,
    key: PathBuf,
) -> ShipperConfig {
    let mut c = ShipperConfig::new(
        AGENT,
        addr.to_string(),
        SERVER_NAME,
        pki.ca_file(),
        cert,
        key,
        spool,
    );
    c.max_batch_events = 10;
    c.flush_interval_seconds = 0.05;
    c.reconnect_initial_seconds = 0.02;
    c.reconnect_max_seconds = 0.2;
    c.connect_timeout_seconds = 2.0;
    c.request_timeout_seconds = 2.0;
    c
}

async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn push_all(shipper: &Shipper, ids: impl IntoIterator<Item = u64>) {
    for id in ids {
        shipper.push(&event(id)).await.unwrap();
    }
}

async fn drain(shipper: Shipper) -> ShipStatsSnapshot {
    shipper.shutdown(Duration::from_secs(20)).await.unwrap()
}

// ---------------------------------------------------------------------------------------
// Delivery

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_every_event_once_in_order() {
    let pki = Pki::new("main");
    let endpoint = Endpoint::start(&pki, vec![]).await;
    let spool = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(&agent_config(&pki, endpoint.addr, spool.path())).unwrap();
    push_all(&shipper, 0..1000).await;
    let stats = drain(shipper).await;

    assert_eq!(endpoint.received(AGENT), (0..1000).collect::<Vec<_>>());
    assert_eq!(endpoint.store().duplicates, 0);
    assert_eq!(stats.events_accepted_total, 1000);
    assert_eq!(stats.events_acked_total, 1000);
    assert!(stats.batches_acked_total >= 100, "{stats:?}");
    assert_eq!(stats.batches_acked_total, stats.batches_spooled_total);
    assert_eq!(stats.batches_retried_total, 0);
    assert_eq!(stats.spool_bytes, 0);
    assert_eq!(stats.oldest_batch_created_unix_ms, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_batch_is_sealed_and_sent_by_age() {
    let pki = Pki::new("main");
    let endpoint = Endpoint::start(&pki, vec![]).await;
    let spool = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(&agent_config(&pki, endpoint.addr, spool.path())).unwrap();
    let started = Instant::now();
    push_all(&shipper, 0..3).await;
    // flush_interval_seconds = 0.05, and no flush() here.
    let stats = shipper.stats();
    wait_until("the age limit", Duration::from_secs(5), || {
        stats.snapshot().batches_acked_total == 1
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(endpoint.received(AGENT), vec![0, 1, 2]);
    let s = stats.snapshot();
    assert_eq!(s.connection_state, 2, "still connected");
    drain(shipper).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_down_then_refusing_then_up_loses_nothing() {
    let pki = Pki::new("main");
    let mut endpoint = Endpoint::start(&pki, vec![]).await;
    let spool = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(&agent_config(&pki, endpoint.addr, spool.path())).unwrap();
    let stats = shipper.stats();

    // Delivering, then the collector goes away mid-stream.
    push_all(&shipper, 0..100).await;
    endpoint.stop().await;
    push_all(&shipper, 100..300).await;
    wait_until("connect failures", Duration::from_secs(10), || {
        stats.snapshot().connect_failures_total >= 3
    })
    .await;
    assert!(shipper.spooled_batches() > 0);

    // Back, but answering 503: batches are sent, refused, kept and retried.
    endpoint.modes.refuse.store(true, Ordering::SeqCst);
    endpoint.restart().await;
    wait_until("retries", Duration::from_secs(10), || {
        stats.snapshot().batches_retried_total >= 2
    })
    .await;
    assert!(stats.snapshot().send_failures_total >= 2);

    endpoint.modes.refuse.store(false, Ordering::SeqCst);
    push_all(&shipper, 300..400).await;
    let s = drain(shipper).await;

    assert_eq!(endpoint.received(AGENT), (0..400).collect::<Vec<_>>());
    assert_eq!(s.events_acked_total, 400);
    assert_eq!(s.spool_batches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_stream_and_a_lost_ack_deliver_exactly_once() {
    let pki = Pki::new("main");
    let endpoint = Endpoint::start(&pki, vec![]).await;
    let spool = tempfile::tempdir().unwrap();
    let config = agent_config(&pki, endpoint.addr, spool.path());

    // The collector stores a batch but the ack never arrives: the agent must resend it and
    // the collector recognise the duplicate.
    endpoint.modes.lose_next_ack.store(true, Ordering::SeqCst);
    let shipper = Shipper::start(&config).unwrap();
    push_all(&shipper, 0..255).await;
    wait_until("some deliveries", Duration::from_secs(10), || {
        endpoint.store().arrivals.len() >= 5
    })
    .await;
    // A crash: no seal, no drain; the open batch (5 events) is only in the journal.
    shipper.abandon().await;

    let shipper = Shipper::start(&config).unwrap();
    push_all(&shipper, 255..400).await;
    let s = drain(shipper).await;

    assert_eq!(endpoint.received(AGENT), (0..400).collect::<Vec<_>>());
    assert!(endpoint.store().duplicates >= 1);
    assert_eq!(s.spool_batches, 0);
}

/// The child half of `sigkill_mid_stream_then_restart`: pushes events 0, 1, 2, ... printing
/// `pushed N` once each is accepted, until killed. Does nothing in a normal test run.
#[test]
fn child_process_for_the_sigkill_test() {
    let Ok(config) = std::env::var("MAMORI_SHIP_TEST_CHILD") else {
        return;
    };
    let config: ShipperConfig = serde_json::from_str(&config).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let shipper = Shipper::start(&config).unwrap();
        let started = Instant::now();
        // Bounded, in case the parent dies first.
        for id in 0..200_000u64 {
            shipper.push(&event(id)).await.unwrap();
            println!("pushed {id}");
            if id % 25 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_delivers_exactly_once() {
    let pki = Pki::new("main");
    let endpoint = Endpoint::start(&pki, vec![]).await;
    let spool = tempfile::tempdir().unwrap();
    let config = agent_config(&pki, endpoint.addr, spool.path());

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_for_the_sigkill_test",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            "MAMORI_SHIP_TEST_CHILD",
            serde_json::to_string(&config).unwrap(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let last_pushed = Arc::new(AtomicU64::new(0));
    let reader = {
        let last = last_pushed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("pushed ") {
                    last.store(n.trim().parse().unwrap(), Ordering::SeqCst);
                }
            }
        })
    };
    wait_until("the child to deliver", Duration::from_secs(60), || {
        endpoint.store().arrivals.len() >= 10
    })
    .await;
    // Then the collector stores a batch but holds its ack, while the child goes on and its
    // spool backs up: killed now, the child leaves a batch the collector has but the agent
    // does not know it has, sealed batches waiting, and a journal.
    endpoint.modes.hold_acks.store(true, Ordering::SeqCst);
    let pushed = last_pushed.load(Ordering::SeqCst);
    wait_until("a held ack and a backlog", Duration::from_secs(60), || {
        endpoint.store().acks_held >= 1 && last_pushed.load(Ordering::SeqCst) >= pushed + 300
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    let pushed_before_kill = last_pushed.load(Ordering::SeqCst);
    let left: Vec<String> = std::fs::read_dir(spool.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    eprintln!(
        "killed after {pushed_before_kill} pushes, {} batches stored; spool holds {left:?}",
        endpoint.store().arrivals.len()
    );

    assert!(
        left.iter().filter(|n| n.ends_with(".batch")).count() >= 20,
        "{left:?}"
    );
    endpoint.modes.hold_acks.store(false, Ordering::SeqCst);

    let shipper = Shipper::start(&config).unwrap();
    push_all(&shipper, 1_000_000..1_000_100).await;
    let s = drain(shipper).await;
    eprintln!("after the restart: {s:?}");
    // The batch whose ack was lost with the child came again and was recognised.
    assert!(s.batches_duplicate_total >= 1, "{s:?}");

    let received = endpoint.received(AGENT);
    let from_child: Vec<u64> = received
        .iter()
        .copied()
        .filter(|&i| i < 1_000_000)
        .collect();
    let last = *from_child.last().unwrap();
    // Every event whose push returned before the kill is there (a push in progress at the
    // kill may or may not be), each once, in order, followed by the restarted agent's.
    assert!(last >= pushed_before_kill, "{last} < {pushed_before_kill}");
    let expected: Vec<u64> = (0..=last).chain(1_000_000..1_000_100).collect();
    assert_eq!(received, expected);
    assert_eq!(s.spool_batches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_drop_oldest_counts_every_dropped_event() {
    let pki = Pki::new("main");
    let mut endpoint = Endpoint::start(&pki, vec![]).await;
    endpoint.stop().await;
    let spool = tempfile::tempdir().unwrap();
    let mut config = agent_config(&pki, endpoint.addr, spool.path());
    config.max_batch_bytes = 4096;
    config.spool_max_bytes = 8192;
    config.when_full = WhenFull::DropOldest;
    let shipper = Shipper::start(&config).unwrap();
    let stats = shipper.stats();
    push_all(&shipper, 0..2000).await;
    shipper.flush().unwrap();
    let full = stats.snapshot();
    assert!(full.events_dropped_total > 0, "{full:?}");
    assert!(full.spool_bytes <= 8192 + 4096, "{full:?}");

    endpoint.restart().await;
    let s = drain(shipper).await;
    let received = endpoint.received(AGENT);
    assert_eq!(
        received.len() as u64 + s.events_dropped_total,
        2000,
        "{s:?}"
    );
    assert!(received.windows(2).all(|w| w[0] < w[1]), "order");
    // The newest events are the ones kept.
    assert_eq!(received.last(), Some(&1999));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_block_refuses_then_resumes() {
    let pki = Pki::new("main");
    let mut endpoint = Endpoint::start(&pki, vec![]).await;
    endpoint.stop().await;
    let spool = tempfile::tempdir().unwrap();
    let mut config = agent_config(&pki, endpoint.addr, spool.path());
    config.max_batch_bytes = 4096;
    config.spool_max_bytes = 8192;
    config.when_full = WhenFull::Block;
    let shipper = Shipper::start(&config).unwrap();
    let mut accepted = 0u64;
    while shipper.try_push(&event(accepted)).unwrap() == PushOutcome::Accepted {
        accepted += 1;
        assert!(accepted < 100_000, "never full");
    }
    let s = shipper.stats().snapshot();
    assert_eq!(s.events_refused_total, 1);
    assert_eq!(s.events_dropped_total, 0);
    assert!(s.spool_bytes <= 8192 + 4096, "{s:?}");

    // The producer waits; the collector comes back; intake resumes.
    endpoint.restart().await;
    push_all(&shipper, accepted..accepted + 500).await;
    let s = drain(shipper).await;
    assert_eq!(
        endpoint.received(AGENT),
        (0..accepted + 500).collect::<Vec<_>>()
    );
    assert_eq!(s.events_dropped_total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_and_corrupt_spool_files_are_quarantined_not_fatal() {
    let pki = Pki::new("main");
    let mut endpoint = Endpoint::start(&pki, vec![]).await;
    endpoint.stop().await;
    let spool = tempfile::tempdir().unwrap();
    let config = agent_config(&pki, endpoint.addr, spool.path());
    let shipper = Shipper::start(&config).unwrap();
    push_all(&shipper, 0..40).await;
    shipper.flush().unwrap();
    assert_eq!(shipper.spooled_batches(), 4);
    shipper.abandon().await;

    // What a power loss can leave: a truncated batch, a flipped byte, a temp file that was
    // never renamed.
    let name = |seq: u64| spool.path().join(format!("{seq:012}.batch"));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(name(2))
        .unwrap();
    f.set_len(f.metadata().unwrap().len() / 2).unwrap();
    let mut bytes = std::fs::read(name(3)).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(name(3), bytes).unwrap();
    std::fs::write(spool.path().join("000000000009.batch.tmp"), b"MMRB\0").unwrap();

    endpoint.restart().await;
    let shipper = Shipper::start(&config).unwrap();
    assert_eq!(shipper.stats().snapshot().spool_corrupt_files_total, 3);
    push_all(&shipper, 100..110).await;
    let s = drain(shipper).await;

    let expected: Vec<u64> = (0..10).chain(30..40).chain(100..110).collect();
    assert_eq!(endpoint.received(AGENT), expected);
    assert_eq!(s.spool_corrupt_files_total, 3);
    let quarantined = std::fs::read_dir(spool.path().join("quarantine"))
        .unwrap()
        .count();
    assert_eq!(quarantined, 3);
    // Numbering continues above everything seen, the temp file's number included.
    let seqs: Vec<u64> = endpoint.store().arrivals.iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs, vec![1, 4, 10]);
}

// ---------------------------------------------------------------------------------------
// Certificates

/// Starts an agent with the given certificate, lets it try, and checks it was refused,
/// counted, and kept its batch.
async fn assert_refused(pki: &Pki, endpoint: &Endpoint, cert: PathBuf, key: PathBuf) {
    let spool = tempfile::tempdir().unwrap();
    let config = config_with(pki, endpoint.addr, spool.path(), cert, key);
    let before = endpoint.store().handshake_failures;
    let shipper = Shipper::start(&config).unwrap();
    push_all(&shipper, 0..10).await;
    let stats = shipper.stats();
    wait_until("refusals", Duration::from_secs(10), || {
        let s = stats.snapshot();
        s.connect_failures_total + s.send_failures_total >= 3
    })
    .await;
    assert!(endpoint.store().handshake_failures > before);
    assert_eq!(shipper.spooled_batches(), 1, "the batch stays spooled");
    let s = shipper.shutdown(Duration::from_millis(10)).await.unwrap();
    assert_eq!(s.events_acked_total, 0);
    assert!(endpoint.store().arrivals.is_empty());
    // Kept on disk for the next start.
    assert!(spool.path().join("000000000001.batch").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_certificates_from_another_ca_expired_or_revoked_are_refused() {
    let pki = Pki::new("main");
    let endpoint = Endpoint::start(&pki, vec![pki.crl(&[REVOKED_SERIAL])]).await;

    let other = Pki::new("other");
    let (cert, key) = other.agent_files("other-ca", AGENT, 100, false);
    assert_refused(&pki, &endpoint, cert, key).await;

    let (cert, key) = pki.agent_files("expired", AGENT, 101, true);
    assert_refused(&pki, &endpoint, cert, key).await;

    let (cert, key) = pki.agent_files("revoked", AGENT, REVOKED_SERIAL, false);
    assert_refused(&pki, &endpoint, cert, key).await;

    // The same CA, not revoked: accepted.
    let spool = tempfile::tempdir().unwrap();
    let (cert, key) = pki.agent_files("good", AGENT, 102, false);
    let shipper =
        Shipper::start(&config_with(&pki, endpoint.addr, spool.path(), cert, key)).unwrap();
    push_all(&shipper, 0..10).await;
    drain(shipper).await;
    assert_eq!(endpoint.received(AGENT), (0..10).collect::<Vec<_>>());
}

/// A bare client (not the shipper, which cannot be configured without a certificate).
async fn raw_post(
    pki: &Pki,
    addr: SocketAddr,
    client_auth: Option<(rcgen::Certificate, KeyPair)>,
    agent_header: &str,
) -> Result<StatusCode, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client_auth {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let body = mamori_agent::ship::Batch::seal(
        mamori_agent::ship::BatchHeader {
            agent_id: agent_header.into(),
            sequence: 1,
            event_count: 1,
            created_unix_ms: 0,
        },
        format!("{}\n", serde_json::to_string(&event(7)).unwrap()).as_bytes(),
    )
    .unwrap()
    .body;
    let req = Request::post(BATCHES_PATH)
        .header(hyper::header::HOST, SERVER_NAME)
        .header(hyper::header::CONTENT_ENCODING, "gzip")
        .header(AGENT_HEADER, agent_header)
        .header(SEQUENCE_HEADER, "1")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_certificate_or_someone_elses_id_is_refused() {
    let pki = Pki::new("main");
    let endpoint = Endpoint::start(&pki, vec![]).await;

    let none = raw_post(&pki, endpoint.addr, None, AGENT).await;
    assert!(none.is_err(), "{none:?}");
    wait_until("the handshake failure", Duration::from_secs(5), || {
        endpoint.store().handshake_failures >= 1
    })
    .await;

    // A valid certificate claiming another agent's id.
    let leaf = pki.leaf(AGENT, ExtendedKeyUsagePurpose::ClientAuth, 103, false);
    let status = raw_post(&pki, endpoint.addr, Some(leaf), "agent-2.plant.test").await;
    assert_eq!(status, Ok(StatusCode::FORBIDDEN));
    assert_eq!(endpoint.store().identity_mismatches, 1);

    // And its own: stored.
    let leaf = pki.leaf(AGENT, ExtendedKeyUsagePurpose::ClientAuth, 104, false);
    let status = raw_post(&pki, endpoint.addr, Some(leaf), AGENT).await;
    assert_eq!(status, Ok(StatusCode::OK));
    assert_eq!(endpoint.received(AGENT), vec![7]);
}

#[test]
fn an_agent_id_its_certificate_does_not_name_is_a_configuration_error() {
    let pki = Pki::new("main");
    let spool = tempfile::tempdir().unwrap();
    let mut config = agent_config(&pki, "127.0.0.1:1".parse().unwrap(), spool.path());
    assert_eq!(config.validate(), Ok(()));
    config.agent_id = "agent-2.plant.test".into();
    let err = config.validate().unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(err.0[0].key, "agent_id");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    assert!(matches!(
        Shipper::start(&config),
        Err(mamori_agent::ship::ShipError::Config(_))
    ));
}
