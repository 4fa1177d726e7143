//! The syslog network receivers over real sockets on the loopback interface (port 0 each, so
//! tests run in parallel): delivery with the sender's address over UDP, TCP and TLS, complete
//! accounting of a burst above the queue, rate limits, idle and connection limits, shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mamori_agent::intake::{
    ReceiverStats, SyslogQueue, SyslogReceiverConfig, SyslogReceivers, WhenFull,
};
use mamori_agent::proto::syslog::ParseOptions;
use mamori_models::{Anomaly, SyslogEvent};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const ANY_PORT: SocketAddr = SocketAddr::new(LOCALHOST, 0);
const WAIT: Duration = Duration::from_secs(5);

fn base_config() -> SyslogReceiverConfig {
    SyslogReceiverConfig {
        max_message_bytes: 2048,
        queue_capacity_events: 1024,
        idle_timeout_seconds: 30,
        ..SyslogReceiverConfig::default()
    }
}

fn msg(i: usize) -> String {
    format!("<13>1 2024-01-02T03:04:05Z plc-7 app 42 - - message {i}")
}

async fn start(config: SyslogReceiverConfig) -> (SyslogReceivers, SyslogQueue) {
    SyslogReceivers::start(&config, ParseOptions::default())
        .await
        .expect("receivers start")
}

async fn recv_n(rx: &mut SyslogQueue, n: usize) -> Vec<SyslogEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        let ev = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events arrived", out.len()))
            .expect("channel open");
        out.push(ev);
    }
    out
}

/// Polls the receivers' counters until `cond` holds (panics after `WAIT`).
async fn wait_for(rx: &SyslogReceivers, what: &str, cond: impl Fn(&ReceiverStats) -> bool) {
    let start = Instant::now();
    loop {
        let s = rx.stats();
        if cond(&s) {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "timed out waiting for {what}: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the peer closed the connection (EOF or reset) within `WAIT`; what it sends before
/// (a TLS alert) is skipped.
async fn closed_by_peer(stream: &mut (impl AsyncReadExt + Unpin)) -> bool {
    let mut b = [0u8; 1024];
    let until_closed = async {
        while let Ok(n) = stream.read(&mut b).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, until_closed).await.is_ok()
}

fn sender_of(ev: &SyslogEvent) -> SocketAddr {
    SocketAddr::new(ev.src_ip.expect("src_ip"), ev.src_port.expect("src_port"))
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {WAIT:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagram_is_one_message_with_its_sender() {
    let (rcv, mut rx) = start(SyslogReceiverConfig {
        udp_listen: Some(ANY_PORT),
        ..base_config()
    })
    .await;
    let to = rcv.local_addrs().udp.unwrap();
    let sock = UdpSocket::bind(ANY_PORT).await.unwrap();
    sock.send_to(msg(1).as_bytes(), to).await.unwrap();
    // A trailing LF (common) is not part of the message.
    sock.send_to(format!("{}\n", msg(2)).as_bytes(), to)
        .await
        .unwrap();
    // Longer than max_message_bytes: cut and flagged.
    let long = format!("<13>1 - h a - - - {}", "x".repeat(3000));
    sock.send_to(long.as_bytes(), to).await.unwrap();

    let evs = recv_n(&mut rx, 3).await;
    assert_eq!(evs[0].msg.as_deref(), Some("message 1"));
    assert_eq!(evs[1].msg.as_deref(), Some("message 2"));
    assert_eq!(evs[0].hostname.as_deref(), Some("plc-7"));
    for ev in &evs {
        assert_eq!(sender_of(ev), sock.local_addr().unwrap());
        assert!(ev.received_ts.as_micros() > 0);
    }
    assert!(evs[2].anomalies.contains(&Anomaly::Truncated));
    // The counter is bumped just after the event is queued: wait for it.
    wait_for(&rcv, "3 delivered", |s| s.delivered_total == 3).await;
    let s = rcv.stats();
    assert_eq!(s.udp_messages_total, 3);
    assert_eq!(s.truncated_total, 1);
    within("shutdown", rcv.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_lf_and_octet_counting_split_across_writes() {
    let (rcv, mut rx) = start(SyslogReceiverConfig {
        tcp_listen: Some(ANY_PORT),
        ..base_config()
    })
    .await;
    let to = rcv.local_addrs().tcp.unwrap();

    // LF framing, CRLF tolerated, a message split in the middle of a write.
    let mut lf = TcpStream::connect(to).await.unwrap();
    let text = format!("{}\r\n{}\n{}\n", msg(1), msg(2), msg(3));
    let (a, b) = text.split_at(text.len() / 2);
    lf.write_all(a.as_bytes()).await.unwrap();
    lf.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    lf.write_all(b.as_bytes()).await.unwrap();
    let evs = recv_n(&mut rx, 3).await;
    let msgs: Vec<_> = evs.iter().map(|e| e.msg.clone().unwrap()).collect();
    assert_eq!(msgs, ["message 1", "message 2", "message 3"]);
    assert!(evs.iter().all(|e| sender_of(e) == lf.local_addr().unwrap()));

    // Octet counting (RFC 6587 §3.4.1), split inside the length and inside the body.
    let mut oc = TcpStream::connect(to).await.unwrap();
    let mut bytes = Vec::new();
    for i in 4..=5 {
        let m = msg(i);
        bytes.extend_from_slice(format!("{} {m}", m.len()).as_bytes());
    }
    for chunk in [&bytes[..1], &bytes[1..20], &bytes[20..]] {
        oc.write_all(chunk).await.unwrap();
        oc.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let evs = recv_n(&mut rx, 2).await;
    assert_eq!(evs[0].msg.as_deref(), Some("message 4"));
    assert_eq!(evs[1].msg.as_deref(), Some("message 5"));
    assert!(evs.iter().all(|e| sender_of(e) == oc.local_addr().unwrap()));

    // The last line of a connection needs no LF.
    lf.write_all(msg(6).as_bytes()).await.unwrap();
    lf.shutdown().await.unwrap();
    let evs = recv_n(&mut rx, 1).await;
    assert_eq!(evs[0].msg.as_deref(), Some("message 6"));

    let s = rcv.stats();
    assert_eq!(s.tcp_messages_total, 6);
    assert_eq!(s.tcp_connections_accepted_total, 2);
    within("shutdown", rcv.shutdown()).await;
}

/// A CA, certificates it signs, and their PEM files in a temporary folder.
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

    /// A leaf certificate for `localhost` with `usage`; its chain and key.
    fn leaf(
        &self,
        usage: ExtendedKeyUsagePurpose,
    ) -> (rcgen::Certificate, KeyPair, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "localhost");
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert, key, der)
    }

    /// Writes the server's certificate and key; returns a TLS receiver configuration.
    fn server_config(&self, mutual: bool) -> SyslogReceiverConfig {
        let (cert, key, _) = self.leaf(ExtendedKeyUsagePurpose::ServerAuth);
        std::fs::write(self.dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(self.dir.path().join("server.key"), key.serialize_pem()).unwrap();
        SyslogReceiverConfig {
            tls_listen: Some(ANY_PORT),
            tls_cert_file: Some(self.dir.path().join("server.pem")),
            tls_key_file: Some(self.dir.path().join("server.key")),
            tls_client_ca_file: mutual.then(|| self.dir.path().join("ca.pem")),
            ..base_config()
        }
    }

    fn client_auth(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let (cert, _, key) = self.leaf(ExtendedKeyUsagePurpose::ClientAuth);
        (vec![cert.der().clone()], key)
    }
}

async fn tls_connect(
    to: SocketAddr,
    ca: &CertificateDer<'static>,
    client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client_auth {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(to).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_server_authentication_delivers() {
    let pki = Pki::new("server-auth");
    let (rcv, mut rx) = start(pki.server_config(false)).await;
    let to = rcv.local_addrs().tls.unwrap();

    let mut s = tls_connect(to, &pki.ca_der, None).await.unwrap();
    // RFC 5425 §4.3 frames with octet counting.
    let m = msg(1);
    s.write_all(format!("{} {m}", m.len()).as_bytes())
        .await
        .unwrap();
    s.flush().await.unwrap();
    let evs = recv_n(&mut rx, 1).await;
    assert_eq!(evs[0].msg.as_deref(), Some("message 1"));
    assert_eq!(sender_of(&evs[0]), s.get_ref().0.local_addr().unwrap());

    // A plain-text client on the TLS port is a failed handshake, counted.
    let mut plain = TcpStream::connect(to).await.unwrap();
    plain.write_all(msg(3).as_bytes()).await.unwrap();
    assert!(closed_by_peer(&mut plain).await);
    wait_for(&rcv, "the handshake failure", |s| {
        s.tls_handshake_failures_total == 1
    })
    .await;
    let st = rcv.stats();
    assert_eq!(st.tls_connections_accepted_total, 2);
    within("shutdown", rcv.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_trusted_certificate() {
    let pki = Pki::new("mutual");
    let stranger = Pki::new("stranger");
    let (rcv, mut rx) = start(pki.server_config(true)).await;
    let to = rcv.local_addrs().tls.unwrap();

    // Without a certificate. With TLS 1.3 the client may finish its side of the handshake
    // before the server has checked its (absent) certificate, so the refusal shows on read.
    let attempts = [None, Some(stranger.client_auth())];
    for (n, auth) in attempts.into_iter().enumerate() {
        if let Ok(mut s) = tls_connect(to, &pki.ca_der, auth).await {
            let _ = s.write_all(format!("{}\n", msg(0)).as_bytes()).await;
            let _ = s.flush().await;
            assert!(closed_by_peer(&mut s).await);
        }
        wait_for(&rcv, "the refusal to be counted", |s| {
            s.tls_handshake_failures_total == n as u64 + 1
        })
        .await;
    }

    let mut good = tls_connect(to, &pki.ca_der, Some(pki.client_auth()))
        .await
        .unwrap();
    good.write_all(format!("{}\n", msg(1)).as_bytes())
        .await
        .unwrap();
    good.flush().await.unwrap();
    let evs = recv_n(&mut rx, 1).await;
    assert_eq!(evs[0].msg.as_deref(), Some("message 1"));
    assert_eq!(sender_of(&evs[0]), good.get_ref().0.local_addr().unwrap());
    wait_for(&rcv, "1 delivered", |s| s.delivered_total == 1).await;
    let s = rcv.stats();
    assert_eq!(s.tls_messages_total, 1);
    assert_eq!(s.tls_handshake_failures_total, 2);
    within("shutdown", rcv.shutdown()).await;
}

const BURST: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_burst_above_the_queue_is_delivered_or_counted() {
    let (rcv, mut rx) = start(SyslogReceiverConfig {
        tcp_listen: Some(ANY_PORT),
        queue_capacity_events: 64,
        ..base_config()
    })
    .await;
    let mut c = TcpStream::connect(rcv.local_addrs().tcp.unwrap())
        .await
        .unwrap();
    let mut text = String::new();
    for i in 0..BURST {
        text.push_str(&msg(i));
        text.push('\n');
    }
    c.write_all(text.as_bytes()).await.unwrap();
    c.shutdown().await.unwrap();
    // Nobody reads the channel until the whole burst has been read from the socket.
    wait_for(&rcv, "the burst to be read", |s| {
        s.tcp_messages_total == BURST as u64
    })
    .await;
    let s = rcv.stats();
    let mut drained = 0;
    while rx.try_recv().is_ok() {
        drained += 1;
    }
    eprintln!(
        "TCP burst: sent {BURST}, delivered {}, dropped (queue full) {}",
        s.delivered_total, s.dropped_queue_full_total
    );
    assert_eq!(drained, s.delivered_total);
    assert_eq!(s.delivered_total, 64, "the queue's capacity");
    assert_eq!(
        s.delivered_total + s.dropped_queue_full_total,
        BURST as u64,
        "every message is delivered or counted: {s:#?}"
    );
    assert_eq!(s.accounted_total(), s.received_total());
    let src = rcv.sources(5);
    assert_eq!(src.top[0].ip, LOCALHOST);
    assert_eq!(src.top[0].counts.messages_total, BURST as u64);
    assert_eq!(
        src.top[0].counts.dropped_queue_full_total,
        s.dropped_queue_full_total
    );
    within("shutdown", rcv.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_burst_above_the_queue_is_delivered_or_counted() {
    let (rcv, mut rx) = start(SyslogReceiverConfig {
        udp_listen: Some(ANY_PORT),
        queue_capacity_events: 64,
        ..base_config()
    })
    .await;
    let to = rcv.local_addrs().udp.unwrap();
    let sock = UdpSocket::bind(ANY_PORT).await.unwrap();
    // UDP has no flow control: a datagram that arrives while the socket's receive buffer is
    // full is dropped by the kernel before the receiver can see (and count) it. The sender is
    // paced (50 datagrams, then a millisecond) so the receiver mostly keeps up, and what the
    // kernel still drops is what the receivers report from /proc/net/udp
    // (`udp_kernel_drops`, the metric `mamori_agent_syslog_kernel_drops_total`). The
    // receiver's own promise is exact: every datagram it read is delivered or counted.
    for (i, m) in (0..BURST).map(msg).enumerate() {
        sock.send_to(m.as_bytes(), to).await.unwrap();
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // Wait until every datagram is either read or known dropped by the kernel, or until
    // nothing changes for 300 ms (where /proc is not available).
    let stats = rcv.stats_reader();
    let start_wait = Instant::now();
    let (mut last, mut since) = (u64::MAX, Instant::now());
    loop {
        let read = rcv.stats().udp_messages_total;
        let kernel = stats.udp_kernel_drops().unwrap_or(0);
        if read + kernel >= BURST as u64 || since.elapsed() > Duration::from_millis(300) {
            break;
        }
        if read != last {
            (last, since) = (read, Instant::now());
        }
        assert!(start_wait.elapsed() < WAIT, "UDP burst still arriving");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = rcv.stats();
    let kernel = stats.udp_kernel_drops();
    let mut drained = 0;
    while rx.try_recv().is_ok() {
        drained += 1;
    }
    eprintln!(
        "UDP burst: sent {BURST}, read by the receiver {}, delivered {}, dropped (queue full) \
         {}, dropped by the kernel {}",
        s.udp_messages_total,
        s.delivered_total,
        s.dropped_queue_full_total,
        kernel.map_or("unknown".to_string(), |k| k.to_string())
    );
    assert_eq!(drained, s.delivered_total);
    assert_eq!(s.delivered_total, 64, "the queue's capacity");
    assert_eq!(
        s.delivered_total + s.dropped_queue_full_total,
        s.udp_messages_total,
        "every datagram read is delivered or counted: {s:#?}"
    );
    if let Some(k) = kernel {
        assert_eq!(s.udp_messages_total + k, BURST as u64, "none vanishes");
    }
    within("shutdown", rcv.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_policy_pushes_back_instead_of_dropping() {
    let (rcv, mut rx) = start(SyslogReceiverConfig {
        tcp_listen: Some(ANY_PORT),
        queue_capacity_events: 8,
        when_full: WhenFull::Block,
        ..base_config()
    })
    .await;
    let mut c = TcpStream::connect(rcv.local_addrs().tcp.unwrap())
        .await
        .unwrap();
    let n = 1_000;
    let writer = tokio::spawn(async move {
        for i in 0..n {
            c.write_all(format!("{}\n", msg(i)).as_bytes())
                .await
                .unwrap();
        }
        c.shutdown().await.unwrap();
    });
    let evs = recv_n(&mut rx, n).await;
    assert_eq!(evs[n - 1].msg.as_deref(), Some("message 999"), "in order");
    within("the writer", writer).await.unwrap();
    wait_for(&rcv, "all delivered", |s| s.delivered_total == n as u64).await;
    assert_eq!(rcv.stats().dropped_total(), 0);
    within("shutdown", rcv.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_above_its_rate_is_counted_as_rate_limited() {
    let (rcv, mut rx) = start(SyslogReceiverConfig {
        tcp_listen: Some(ANY_PORT),
        per_source_rate_limit_per_second: Some(1),
        per_source_burst_messages: Some(5),
        ..base_config()
    })
    .await;
    let began = Instant::now();
    let mut c = TcpStream::connect(rcv.local_addrs().tcp.unwrap())
        .await
        .unwrap();
    let text: String = (0..100).map(|i| format!("{}\n", msg(i))).collect();
    c.write_all(text.as_bytes()).await.unwrap();
    wait_for(&rcv, "100 messages", |s| s.tcp_messages_total == 100).await;
    let s = rcv.stats();
    // The burst of 5, plus one token per second elapsed.
    let allowed = 5 + began.elapsed().as_secs() + 1;
    assert!(s.delivered_total <= allowed, "{s:#?}");
    assert!(s.delivered_total >= 5, "{s:#?}");
    assert_eq!(s.delivered_total + s.dropped_rate_limited_total, 100);
    recv_n(&mut rx, s.delivered_total as usize).await;
    let src = rcv.sources(5);
    assert_eq!(src.top[0].ip, LOCALHOST);
    assert_eq!(
        src.top[0].counts.dropped_rate_limited_total,
        s.dropped_rate_limited_total
    );
    within("shutdown", rcv.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_trickling_connections_are_closed() {
    let (rcv, _rx) = start(SyslogReceiverConfig {
        tcp_listen: Some(ANY_PORT),
        idle_timeout_seconds: 1,
        ..base_config()
    })
    .await;
    let to = rcv.local_addrs().tcp.unwrap();
    let began = Instant::now();
    let mut silent = TcpStream::connect(to).await.unwrap();
    // A slow loris: bytes keep coming, but never a whole message.
    let mut trickle = TcpStream::connect(to).await.unwrap();
    let trickler = tokio::spawn(async move {
        // 3 s of trickling at most, well past the 1 s idle timeout.
        for &b in b"<13>1 2024-01-02T03:04:05Z plc" {
            if trickle.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        trickle
    });
    assert!(closed_by_peer(&mut silent).await);
    let mut trickle = within("the trickler", trickler).await.unwrap();
    assert!(closed_by_peer(&mut trickle).await);
    assert!(began.elapsed() >= Duration::from_secs(1));
    wait_for(&rcv, "two idle closes", |s| {
        s.connections_idle_closed_total == 2
    })
    .await;
    let s = rcv.stats();
    assert_eq!(
        s.tcp_messages_total, 0,
        "a partial message is not a message"
    );
    assert_eq!(s.connections_active, 0);
    within("shutdown", rcv.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_and_counted() {
    let (rcv, mut rx) = start(SyslogReceiverConfig {
        tcp_listen: Some(ANY_PORT),
        max_connections: 2,
        ..base_config()
    })
    .await;
    let to = rcv.local_addrs().tcp.unwrap();
    let mut open = Vec::new();
    for i in 0..2 {
        let mut c = TcpStream::connect(to).await.unwrap();
        c.write_all(format!("{}\n", msg(i)).as_bytes())
            .await
            .unwrap();
        open.push(c);
    }
    recv_n(&mut rx, 2).await;
    let mut third = TcpStream::connect(to).await.unwrap();
    assert!(closed_by_peer(&mut third).await);
    wait_for(&rcv, "the refusal", |s| s.connections_refused_total == 1).await;

    // A slot freed is a slot available again.
    drop(open.pop());
    wait_for(&rcv, "the slot to be freed", |s| s.connections_active == 1).await;
    let mut fourth = TcpStream::connect(to).await.unwrap();
    fourth
        .write_all(format!("{}\n", msg(4)).as_bytes())
        .await
        .unwrap();
    assert_eq!(
        recv_n(&mut rx, 1).await[0].msg.as_deref(),
        Some("message 4")
    );
    let s = rcv.stats();
    assert_eq!(
        (
            s.tcp_connections_accepted_total,
            s.connections_refused_total
        ),
        (3, 1)
    );
    within("shutdown", rcv.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_prompt_and_closes_the_channel() {
    let pki = Pki::new("shutdown");
    let (rcv, mut rx) = start(SyslogReceiverConfig {
        udp_listen: Some(ANY_PORT),
        tcp_listen: Some(ANY_PORT),
        queue_capacity_events: 4,
        when_full: WhenFull::Block,
        ..pki.server_config(false)
    })
    .await;
    let addrs = rcv.local_addrs();
    // An idle connection, a TLS connection mid-handshake, and one blocked on the full queue.
    let mut idle = TcpStream::connect(addrs.tcp.unwrap()).await.unwrap();
    let _half_tls = TcpStream::connect(addrs.tls.unwrap()).await.unwrap();
    let mut blocked = TcpStream::connect(addrs.tcp.unwrap()).await.unwrap();
    let text: String = (0..10).map(|i| format!("{}\n", msg(i))).collect();
    blocked.write_all(text.as_bytes()).await.unwrap();
    wait_for(&rcv, "the queue to fill", |s| s.delivered_total == 4).await;

    let began = Instant::now();
    let stats = rcv.stats_reader();
    within("shutdown", rcv.shutdown()).await;
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    // What was queued is still there, then the channel is closed.
    assert_eq!(recv_n(&mut rx, 4).await.len(), 4);
    assert!(within("channel close", rx.recv()).await.is_none());
    assert!(closed_by_peer(&mut idle).await);
    let s = stats.stats();
    assert_eq!(s.connections_active, 0);
    assert_eq!(s.accounted_total(), s.received_total(), "{s:#?}");
    assert!(s.dropped_closed_total >= 1, "the blocked message: {s:#?}");
}

#[tokio::test]
async fn invalid_configuration_is_refused_with_every_problem() {
    let err = SyslogReceivers::start(
        &SyslogReceiverConfig {
            queue_capacity_events: 0,
            ..SyslogReceiverConfig::default()
        },
        ParseOptions::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("no listener"), "{err}");
    assert!(err.contains("queue_capacity_events"), "{err}");

    let missing = SyslogReceiverConfig {
        tls_listen: Some(ANY_PORT),
        tls_cert_file: Some("/nonexistent/cert.pem".into()),
        tls_key_file: Some("/nonexistent/secret.key".into()),
        ..SyslogReceiverConfig::default()
    };
    let err = SyslogReceivers::start(&missing, ParseOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");

    // A broken key file: the error names the file, never echoes its contents.
    let pki = Pki::new("bad-key");
    let config = pki.server_config(false);
    let key_file = config.tls_key_file.clone().unwrap();
    std::fs::write(
        &key_file,
        "-----BEGIN PRIVATE KEY-----\nSECRETSECRET!!!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = SyslogReceivers::start(&config, ParseOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&key_file.display().to_string()), "{err}");
    assert!(!err.contains("SECRET"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_rejections_are_counted() {
    let config = SyslogReceiverConfig {
        udp_listen: Some(ANY_PORT),
        ..base_config()
    };
    let opts = ParseOptions {
        strict: true,
        ..ParseOptions::default()
    };
    let (rcv, mut rx) = SyslogReceivers::start(&config, opts).await.unwrap();
    let sock = UdpSocket::bind(ANY_PORT).await.unwrap();
    let to = rcv.local_addrs().udp.unwrap();
    sock.send_to(b"<13>Jan  2 03:04:05 host bsd: not 5424", to)
        .await
        .unwrap();
    sock.send_to(msg(1).as_bytes(), to).await.unwrap();
    assert_eq!(
        recv_n(&mut rx, 1).await[0].msg.as_deref(),
        Some("message 1")
    );
    wait_for(&rcv, "the rejection", |s| s.rejected_total == 1).await;
    within("shutdown", rcv.shutdown()).await;
}

/// A TCP connection to `to` from the loopback address `127.0.0.<host>` (every 127/8 address is
/// the loopback interface on Linux), so that one test can play several sources.
async fn connect_from(host: u8, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)),
        0,
    ))?;
    sock.connect(to).await
}

/// The lock-out: 256 idle connections (the default `max_connections`) with a 300 s
/// idle timeout kept every real sender out for five minutes. Now one address holds at most
/// `max_connections_per_source`, and a full table gives the newcomer the place of the
/// connection idle longest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_gets_in_while_an_attacker_holds_every_connection() {
    let defaults = SyslogReceiverConfig::default();
    let (max, per_source) = (
        defaults.max_connections,
        defaults.max_connections_per_source,
    );
    let (rcv, mut rx) = start(SyslogReceiverConfig {
        tcp_listen: Some(ANY_PORT),
        idle_timeout_seconds: 300,
        evict_idle_after_seconds: 1,
        ..base_config()
    })
    .await;
    let to = rcv.local_addrs().tcp.unwrap();
    // 12 attacking addresses, each trying 8 more connections than it may hold.
    let attackers = (max / per_source + 4) as u8;
    let mut held = Vec::new();
    for host in 2..2 + attackers {
        for _ in 0..per_source + 8 {
            held.push(connect_from(host, to).await.unwrap());
        }
    }
    let attempts = held.len() as u64;
    wait_for(&rcv, "every attempt to be accepted or refused", |s| {
        s.tcp_connections_accepted_total
            + s.connections_refused_total
            + s.connections_refused_per_source_total
            == attempts
    })
    .await;
    let s = rcv.stats();
    eprintln!(
        "attack: {attempts} connections tried, {} open, {} refused at the limit, {} refused per \
         source",
        s.connections_active, s.connections_refused_total, s.connections_refused_per_source_total
    );
    assert_eq!(s.connections_active, max as u64, "{s:#?}");
    assert!(s.connections_refused_per_source_total >= 8 * (max / per_source) as u64);
    assert!(s.connections_refused_total > 0, "{s:#?}");
    assert_eq!(
        s.connections_evicted_total, 0,
        "nobody idle long enough yet"
    );

    // Once the attacker's connections have been idle a second, a real sender gets in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut sender = connect_from(1, to).await.unwrap();
    sender
        .write_all(format!("{}\n", msg(1)).as_bytes())
        .await
        .unwrap();
    let evs = recv_n(&mut rx, 1).await;
    assert_eq!(evs[0].msg.as_deref(), Some("message 1"));
    assert_eq!(sender_of(&evs[0]), sender.local_addr().unwrap());
    wait_for(&rcv, "the eviction", |s| s.connections_evicted_total == 1).await;
    // The evicted connection is the oldest attacker's: closed by the receiver.
    let mut first = held.swap_remove(0);
    assert!(closed_by_peer(&mut first).await);
    within("shutdown", rcv.shutdown()).await;
}

/// The framing regression over a real connection: a MSG-LEN of 9999999999 made the
/// receiver wait for ten billion bytes, swallowing the valid frame after it and every later
/// one on the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implausible_octet_count_does_not_swallow_the_next_frames() {
    let (rcv, mut rx) = start(SyslogReceiverConfig {
        tcp_listen: Some(ANY_PORT),
        ..base_config()
    })
    .await;
    let mut c = TcpStream::connect(rcv.local_addrs().tcp.unwrap())
        .await
        .unwrap();
    let (m1, m2, m3) = (msg(1), msg(2), msg(3));
    let stream = format!("9999999999 {m1}{} {m2}{} {m3}", m2.len(), m3.len());
    c.write_all(stream.as_bytes()).await.unwrap();
    let evs = recv_n(&mut rx, 3).await;
    let msgs: Vec<_> = evs.iter().map(|e| e.msg.clone().unwrap()).collect();
    assert_eq!(msgs, ["message 1", "message 2", "message 3"]);
    wait_for(&rcv, "the bad length to be counted", |s| {
        s.framer_bad_length_total == 1
    })
    .await;
    // "9999999999 " is discarded: it is not part of any message.
    assert_eq!(rcv.stats().framer_discarded_bytes_total, 11);
    within("shutdown", rcv.shutdown()).await;
}

/// The memory blow-up: the queue held up to `queue_capacity_events` events of up to
/// 64 KiB each. Now it holds at most `queue_max_bytes` of them, and what does not fit is
/// dropped and counted as a full queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_is_bounded_in_bytes_and_what_does_not_fit_is_counted() {
    let queue_max_bytes = 256 * 1024;
    let (rcv, mut rx) = start(SyslogReceiverConfig {
        udp_listen: Some(ANY_PORT),
        max_message_bytes: 65_536,
        queue_capacity_events: 10_000,
        queue_max_bytes,
        ..base_config()
    })
    .await;
    let to = rcv.local_addrs().udp.unwrap();
    let sock = UdpSocket::bind(ANY_PORT).await.unwrap();
    let big = format!("<13>1 - h a - - - {}", "x".repeat(60_000));
    let sent = 100;
    for _ in 0..sent {
        sock.send_to(big.as_bytes(), to).await.unwrap();
        // Paced so that the kernel's receive buffer (a few of these) does not overflow.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let stats = rcv.stats_reader();
    let start_wait = Instant::now();
    loop {
        let s = rcv.stats();
        let kernel = stats.udp_kernel_drops().unwrap_or(0);
        if s.udp_messages_total + kernel == sent && s.accounted_total() == s.received_total() {
            break;
        }
        assert!(start_wait.elapsed() < WAIT, "{s:#?}, kernel drops {kernel}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = rcv.stats();
    eprintln!(
        "60 KB datagrams: sent {sent}, read {}, queued {} ({} bytes), dropped (queue full) {}",
        s.udp_messages_total, s.delivered_total, s.queue_bytes, s.dropped_queue_full_total
    );
    assert!(s.queue_bytes <= queue_max_bytes as u64, "{s:#?}");
    assert!(
        (3..=4).contains(&s.delivered_total),
        "about 256 KiB of 60 KB events: {s:#?}"
    );
    assert_eq!(
        s.delivered_total + s.dropped_queue_full_total,
        s.udp_messages_total
    );
    assert_eq!(s.queue_events, s.delivered_total);
    // Taking the events gives their bytes back.
    let mut drained = 0;
    while rx.try_recv().is_ok() {
        drained += 1;
    }
    assert_eq!(drained, s.delivered_total);
    let s = rcv.stats();
    assert_eq!((s.queue_bytes, s.queue_events), (0, 0));
    within("shutdown", rcv.shutdown()).await;
}
