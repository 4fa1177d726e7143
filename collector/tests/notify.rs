//! The notifier against real receivers: a real Alertmanager (the Debian package's binary,
//! skipped when absent unless `MAMORI_REQUIRE_ALERTMANAGER=1`), an HTTPS webhook receiver that
//! checks signatures and fails on purpose, UDP and TCP syslog listeners, and receivers that
//! are down or hang.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mamori_collector::notify::{Notice, Notifier, NotifySection, Sink, webhook};
use mamori_models::detect::Severity;
use rcgen::ExtendedKeyUsagePurpose;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use common::{Pki, wait_until};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn notice(key: &str, incident_id: i64) -> Notice {
    Notice {
        key: key.into(),
        incident_id,
        alertname: "MamoriIncident".into(),
        site: "plant-a".into(),
        asset: Some("10.0.0.5/1".into()),
        severity: Severity::High,
        detectors: vec!["allowlist".into()],
        kind: "new_modbus_path".into(),
        summary: "New Modbus path 10.0.0.9 -> 10.0.0.5 unit 1".into(),
        description: "A client never seen in learning\nwrote holding registers.".into(),
        runbook_url: Some("https://wiki.example/runbooks/new-path".into()),
        generator_url: format!("http://collector.example:8080/v1/incidents/{incident_id}"),
        starts_at_unix_ms: now_ms() - 60_000,
        ends_at_unix_ms: None,
        exercise: false,
    }
}

fn section(toml_text: &str) -> NotifySection {
    toml::from_str(toml_text).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.0 GET (Alertmanager's API); the body.
async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// The Alertmanager process, killed when dropped.
struct Alertmanager {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_alertmanager() -> Option<Alertmanager> {
    if !Path::new(ALERTMANAGER).exists() {
        if std::env::var("MAMORI_REQUIRE_ALERTMANAGER").as_deref() == Ok("1") {
            panic!("{ALERTMANAGER} is missing and MAMORI_REQUIRE_ALERTMANAGER=1");
        }
        println!(
            "skipping: {ALERTMANAGER} not installed (apt-get install prometheus-alertmanager)"
        );
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(ALERTMANAGER)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let am = Alertmanager {
        child,
        addr,
        _dir: dir,
    };
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((200, _)) = http_get(addr, "/-/ready").await {
            return Some(am);
        }
        assert!(Instant::now() < end, "Alertmanager not ready after 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Alerts Alertmanager holds whose `incident` label is `incident`.
async fn alerts_of(addr: SocketAddr, path: &str, incident: &str) -> Vec<serde_json::Value> {
    let Some((200, body)) = http_get(addr, path).await else {
        return Vec::new();
    };
    let all: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    all.into_iter()
        .filter(|a| a["labels"]["incident"] == incident)
        .collect()
}

async fn poll<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_a_real_alertmanager_are_resent_and_resolve() {
    let Some(am) = start_alertmanager().await else {
        return;
    };
    let notifier = Notifier::start(&section(&format!(
        "[alertmanager]\nurls = [\"http://{}\"]\nresend_interval_seconds = 1\nlabels = {{ team = \"ot-soc\" }}\n",
        am.addr
    )))
    .unwrap();
    let open = notice("plant-a/17", 17);
    let mut drill = notice("plant-a/18", 18);
    drill.exercise = true;
    drill.asset = None;
    notifier.notify(open.clone());
    notifier.notify(drill);

    let alert = poll(
        "the alert in Alertmanager",
        Duration::from_secs(20),
        async || alerts_of(am.addr, "/api/v2/alerts", "17").await.pop(),
    )
    .await;
    assert_eq!(
        alert["labels"],
        serde_json::json!({
            "alertname": "MamoriIncident", "site": "plant-a", "asset": "10.0.0.5/1",
            "severity": "high", "kind": "new_modbus_path",
            "incident": "17", "exercise": "false", "team": "ot-soc",
        })
    );
    assert_eq!(alert["annotations"]["summary"], open.summary);
    assert_eq!(alert["annotations"]["detectors"], "allowlist");
    assert_eq!(alert["annotations"]["description"], open.description);
    assert_eq!(
        alert["annotations"]["runbook_url"],
        "https://wiki.example/runbooks/new-path"
    );
    assert_eq!(alert["generatorURL"], open.generator_url);
    assert_eq!(alert["status"]["state"], "active");
    let drill = poll("the drill alert", Duration::from_secs(20), async || {
        alerts_of(am.addr, "/api/v2/alerts", "18").await.pop()
    })
    .await;
    assert_eq!(drill["labels"]["exercise"], "true");
    assert!(drill["labels"].get("asset").is_none());

    // Active notices are posted again every second.
    wait_until("a re-send", Duration::from_secs(10), || {
        notifier
            .stats()
            .sink(Sink::Alertmanager)
            .unwrap()
            .sent_total
            >= 4
    })
    .await;

    let mut resolved = open.clone();
    resolved.ends_at_unix_ms = Some(now_ms());
    notifier.notify(resolved);
    poll("the alert resolved", Duration::from_secs(20), async || {
        let active = alerts_of(am.addr, "/api/v2/alerts?active=true", "17").await;
        let gone_or_ended = active.iter().all(|a| {
            a["endsAt"]
                .as_str()
                .and_then(mamori_models::Timestamp::parse_rfc3339)
                .is_some_and(|t| t.as_micros() <= (now_ms() * 1000) as i64)
        });
        gone_or_ended.then_some(())
    })
    .await;
    let s = notifier.stats();
    let am_stats = s.sink(Sink::Alertmanager).unwrap();
    assert_eq!(am_stats.failed_attempts_total, 0, "{am_stats:?}");
    assert!(am_stats.last_success_unix_ms > 0);
    assert_eq!(s.active_notices, 1);
    notifier.shutdown(Duration::from_secs(5)).await;
}

/// Alerts of `incident` that Alertmanager holds as firing now (active, not ended).
async fn firing(addr: SocketAddr, incident: &str) -> Vec<serde_json::Value> {
    let now_us = (now_ms() * 1000) as i64;
    alerts_of(addr, "/api/v2/alerts", incident)
        .await
        .into_iter()
        .filter(|a| {
            a["status"]["state"] == "active"
                && a["endsAt"]
                    .as_str()
                    .and_then(mamori_models::Timestamp::parse_rfc3339)
                    .is_none_or(|t| t.as_micros() > now_us)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_that_escalates_twice_is_one_firing_alert_until_resolved() {
    let Some(am) = start_alertmanager().await else {
        return;
    };
    let notifier = Notifier::start(&section(&format!(
        "[alertmanager]\nurls = [\"http://{}\"]\nresend_interval_seconds = 1\n",
        am.addr
    )))
    .unwrap();
    let mut n = notice("plant-a/21", 21);
    n.severity = Severity::Medium;
    let mut steps = Vec::new();
    for (severity, detector) in [
        (Severity::Medium, None),
        (Severity::Medium, Some("polling_cycle")),
        (Severity::High, Some("process_value")),
        (Severity::Critical, None),
    ] {
        n.severity = severity;
        n.detectors.extend(detector.map(str::to_owned));
        n.summary = format!("{} now", severity.as_str());
        steps.push(n.clone());
    }
    for step in &steps {
        notifier.notify(step.clone());
        // Each state reaches Alertmanager before the next (no folding in one batch), so
        // every escalation is a label set Alertmanager saw.
        let want = step.severity.as_str();
        poll(
            &format!("severity {want} firing"),
            Duration::from_secs(20),
            async || {
                let now = firing(am.addr, "21").await;
                now.iter()
                    .any(|a| {
                        a["labels"]["severity"] == want
                            && a["annotations"]["summary"] == step.summary.as_str()
                    })
                    .then_some(())
            },
        )
        .await;
    }
    let now = firing(am.addr, "21").await;
    assert_eq!(
        now.len(),
        1,
        "one firing alert after two escalations: {now:#?}"
    );
    assert_eq!(now[0]["labels"]["severity"], "critical");
    assert_eq!(
        now[0]["annotations"]["detectors"],
        "allowlist, polling_cycle, process_value"
    );
    // Re-sends of the active set do not bring an ended one back.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(firing(am.addr, "21").await.len(), 1);

    let mut resolved = steps.last().unwrap().clone();
    resolved.ends_at_unix_ms = Some(now_ms());
    notifier.notify(resolved);
    poll(
        "the incident's alert ended",
        Duration::from_secs(20),
        async || firing(am.addr, "21").await.is_empty().then_some(()),
    )
    .await;
    let s = notifier.stats();
    assert_eq!(s.sink(Sink::Alertmanager).unwrap().failed_attempts_total, 0);
    notifier.shutdown(Duration::from_secs(5)).await;
}

/// What a test receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: hyper::HeaderMap,
    body: Bytes,
}

/// An HTTP(S) receiver that records requests, fails the first `fail_first` with 503, and
/// never answers when `hang`.
#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<Received>>,
    requests: AtomicUsize,
    fail_first: usize,
    hang: bool,
}

async fn start_receiver(
    receiver: Arc<Receiver>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let receiver = receiver.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let receiver = receiver.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let n = receiver.requests.fetch_add(1, Ordering::SeqCst);
                        if receiver.hang {
                            std::future::pending::<()>().await;
                        }
                        let status = if n < receiver.fail_first {
                            StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            receiver.got.lock().unwrap().push(Received {
                                path,
                                headers,
                                body,
                            });
                            StatusCode::OK
                        };
                        let mut response = Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = status;
                        Ok::<_, Infallible>(response)
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(stream).await {
                            let _ = http.serve_connection(TokioIo::new(s), service).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            });
        }
    });
    addr
}

fn tls_acceptor(pki: &Pki) -> tokio_rustls::TlsAcceptor {
    // An IP address as the name: rcgen makes it an IP SAN, as the URL uses.
    let (cert, key) = pki.files("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_over_https_is_retried_until_accepted() {
    let pki = Pki::new("webhook");
    let receiver = Arc::new(Receiver {
        fail_first: 2,
        ..Receiver::default()
    });
    let addr = start_receiver(receiver.clone(), Some(tls_acceptor(&pki))).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "hook-secret\n").unwrap();
    let notifier = Notifier::start(&section(&format!(
        "[webhook]\nurl = \"https://{addr}/hooks/mamori\"\nsecret_file = \"{}\"\nca_file = \"{}\"\n\
         initial_backoff_seconds = 0.05\nmax_backoff_seconds = 0.1\n",
        secret_file.display(),
        pki.ca_file().display()
    )))
    .unwrap();
    let open = notice("plant-a/17", 17);
    notifier.notify(open.clone());
    let mut resolved = open.clone();
    resolved.ends_at_unix_ms = Some(now_ms());
    notifier.notify(resolved);

    wait_until("two accepted deliveries", Duration::from_secs(10), || {
        notifier.stats().sink(Sink::Webhook).unwrap().sent_total == 2
    })
    .await;
    let got = receiver.got.lock().unwrap().clone();
    let mut events = Vec::new();
    for r in &got {
        assert_eq!(r.path, "/hooks/mamori");
        let ts = r.headers["x-mamori-timestamp"].to_str().unwrap();
        let sig = r.headers["x-mamori-signature"].to_str().unwrap();
        assert!(
            webhook::verify_signature(b"hook-secret", ts, &r.body, sig),
            "{r:?}"
        );
        assert!(!webhook::verify_signature(b"wrong", ts, &r.body, sig));
        let age = (now_ms() / 1000).abs_diff(ts.parse::<u64>().unwrap());
        assert!(age < 30, "timestamp {ts} is not now");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["version"], webhook::PAYLOAD_VERSION);
        assert_eq!(v["notice"]["key"], "plant-a/17");
        assert_eq!(v["event"], r.headers["x-mamori-event"].to_str().unwrap());
        events.push(v["event"].as_str().unwrap().to_owned());
    }
    assert_eq!(events, ["opened", "resolved"]);
    let s = notifier.stats();
    let hook = s.sink(Sink::Webhook).unwrap();
    assert_eq!(hook.sent_total, 2, "{hook:?}");
    assert_eq!(hook.failed_attempts_total, 2, "{hook:?}");
    assert_eq!(hook.retries_total, 2, "{hook:?}");
    assert_eq!(hook.given_up_total, 0, "{hook:?}");
    assert_eq!(hook.queue_depth, 0);
    assert_eq!(receiver.requests.load(Ordering::SeqCst), 4);
    notifier.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_posts_carry_the_bearer_token_to_each_replica() {
    let (a, b) = (Arc::new(Receiver::default()), Arc::new(Receiver::default()));
    let addr_a = start_receiver(a.clone(), None).await;
    let addr_b = start_receiver(b.clone(), None).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let section = section(&format!(
        "[alertmanager]\nurls = [\"http://{addr_a}/am/\", \"http://{addr_b}\"]\nbearer_token_file = \"{}\"\n",
        token.display()
    ));
    assert!(!format!("{section:?}").contains("t0ken"));
    let notifier = Notifier::start(&section).unwrap();
    assert!(!format!("{notifier:?}").contains("t0ken"), "{notifier:?}");
    notifier.notify(notice("k", 1));
    wait_until("both replicas", Duration::from_secs(10), || {
        a.got.lock().unwrap().len() == 1 && b.got.lock().unwrap().len() == 1
    })
    .await;
    for (r, path) in [(a, "/am/api/v2/alerts"), (b, "/api/v2/alerts")] {
        let got = r.got.lock().unwrap()[0].clone();
        assert_eq!(got.path, path);
        assert_eq!(got.headers["authorization"], "Bearer t0ken");
        let alerts: Vec<serde_json::Value> = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(alerts.len(), 1);
    }
    assert_eq!(
        notifier
            .stats()
            .sink(Sink::Alertmanager)
            .unwrap()
            .sent_total,
        2
    );
    notifier.shutdown(Duration::from_secs(2)).await;
}

fn hostile_notice() -> Notice {
    let mut n = notice("plant-a/99", 99);
    n.kind = "kind|x".into();
    n.summary = "evil|summary\nCEF:0|forged".into();
    n.site = "site=a b".into();
    n.description = "line1\nline2 act=resolved\r\\".into();
    n.severity = Severity::Critical;
    n
}

fn check_cef(message: &str) {
    assert!(
        !message.contains('\n') && !message.contains('\r'),
        "{message}"
    );
    // local4 * 8 + crit.
    assert!(message.starts_with("<162>1 "), "{message}");
    assert!(
        message.contains(r"|kind\|x|evil\|summary CEF:0\|forged|10|"),
        "{message}"
    );
    assert!(message.contains(r"cs1=site\=a b "), "{message}");
    assert!(message.contains("act=opened "), "{message}");
    assert!(message.contains("dst=10.0.0.5 "), "{message}");
    assert!(
        message.ends_with(r"msg=line1\nline2 act\=resolved\r\\"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cef_reaches_udp_and_tcp_listeners_escaped() {
    // UDP: one datagram per message.
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let n = Notifier::start(&section(&format!(
        "[syslog]\naddress = \"{}\"\nhostname = \"collector-1\"\n",
        udp.local_addr().unwrap()
    )))
    .unwrap();
    n.notify(hostile_notice());
    let mut buf = vec![0u8; 65_536];
    let len = tokio::time::timeout(Duration::from_secs(10), udp.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let message = std::str::from_utf8(&buf[..len]).unwrap();
    check_cef(message);
    assert!(
        message.contains(" collector-1 mamori-collector "),
        "{message}"
    );
    n.shutdown(Duration::from_secs(1)).await;

    // TCP, octet counting then LF framing: two notices, two messages, whatever they hold.
    for framing in ["octet_counting", "lf"] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let n = Notifier::start(&section(&format!(
            "[syslog]\naddress = \"{}\"\ntransport = \"tcp\"\nframing = \"{framing}\"\n",
            listener.local_addr().unwrap()
        )))
        .unwrap();
        n.notify(hostile_notice());
        n.notify(hostile_notice());
        let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .unwrap()
            .unwrap();
        let mut data = Vec::new();
        let messages = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let mut chunk = [0u8; 4096];
                let k = stream.read(&mut chunk).await.unwrap();
                assert!(k > 0, "connection closed early");
                data.extend_from_slice(&chunk[..k]);
                let text = std::str::from_utf8(&data).unwrap();
                let messages = if framing == "lf" {
                    text.split_terminator('\n')
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                } else {
                    let mut out = Vec::new();
                    let mut rest = text;
                    while let Some((len, tail)) = rest.split_once(' ') {
                        let len: usize = len.parse().unwrap();
                        if tail.len() < len {
                            break;
                        }
                        out.push(tail[..len].to_owned());
                        rest = &tail[len..];
                    }
                    out
                };
                if messages.len() >= 2 && (framing != "lf" || text.ends_with('\n')) {
                    return messages;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(messages.len(), 2, "{framing}: {messages:?}");
        check_cef(&messages[0]);
        assert!(messages[1].contains("act=updated "), "{}", messages[1]);
        wait_until("both counted", Duration::from_secs(10), || {
            n.stats().sink(Sink::Syslog).unwrap().sent_total == 2
        })
        .await;
        n.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_and_hanging_receivers_never_block_and_shutdown_keeps_its_grace() {
    let hanging = Arc::new(Receiver {
        hang: true,
        ..Receiver::default()
    });
    let hang_addr = start_receiver(hanging.clone(), None).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "s\n").unwrap();
    let closed_port = free_port();
    let notifier = Notifier::start(&section(&format!(
        "[alertmanager]\nurls = [\"http://127.0.0.1:{closed_port}\"]\nmax_attempts = 3\n\
         initial_backoff_seconds = 0.05\nmax_backoff_seconds = 0.1\n\
         [webhook]\nurl = \"http://{hang_addr}/\"\nsecret_file = \"{}\"\nqueue_capacity = 2\n\
         timeout_seconds = 30\n",
        secret_file.display()
    )))
    .unwrap();

    // The first notice occupies the webhook's task (its receiver never answers); two more
    // fit its queue; the rest push the oldest out.
    notifier.notify(notice("k0", 100));
    wait_until("the webhook request", Duration::from_secs(10), || {
        hanging.requests.load(Ordering::SeqCst) == 1
    })
    .await;
    let started = Instant::now();
    for i in 1..=10 {
        notifier.notify(notice(&format!("k{i}"), 100 + i));
    }
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "notify waited"
    );

    wait_until(
        "Alertmanager to be given up",
        Duration::from_secs(10),
        || {
            let s = notifier.stats();
            s.sink(Sink::Alertmanager).unwrap().given_up_total >= 1
        },
    )
    .await;
    let s = notifier.stats();
    let am = s.sink(Sink::Alertmanager).unwrap();
    assert_eq!(am.sent_total, 0);
    assert!(am.failed_attempts_total >= 3, "{am:?}");
    assert!(am.retries_total >= 2, "{am:?}");
    assert_eq!(am.last_success_unix_ms, 0);
    let hook = s.sink(Sink::Webhook).unwrap();
    assert_eq!(hook.dropped_total, 8, "{hook:?}");
    assert_eq!(hook.queue_depth, 2, "{hook:?}");

    let grace = Duration::from_millis(500);
    let started = Instant::now();
    notifier.clone().shutdown(grace).await;
    assert!(
        started.elapsed() < grace + Duration::from_secs(1),
        "shutdown took {:?}",
        started.elapsed()
    );
    let s = notifier.stats();
    let hook = s.sink(Sink::Webhook).unwrap();
    // The one in flight and the two queued.
    assert_eq!(hook.given_up_total, 3, "{hook:?}");
    assert_eq!(hook.queue_depth, 0);
    // After shutdown a notice is counted, not queued.
    notifier.notify(notice("late", 1));
    assert_eq!(
        notifier.stats().sink(Sink::Webhook).unwrap().given_up_total,
        4
    );
}
