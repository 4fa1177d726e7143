//! What the collector's integration tests share: a test PKI (rcgen), an agent shipper's
//! configuration for it, flow events numbered by an id, polling until a condition holds,
//! reading a series from `/metrics` text, and one request to the HTTP API.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mamori_models::Event;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::ServerName;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const SERVER_NAME: &str = "collector.test";

/// A CA and the certificates it signs, as PEM files in a temporary folder.
pub struct Pki {
    dir: tempfile::TempDir,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, format!("Mamori test CA {name}"));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = p.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        Pki {
            dir,
            ca_cert,
            ca_key,
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Writes a certificate for `name` and its key; returns (cert, key) paths.
    pub fn files(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        let cert_path = self.dir.path().join(format!("{name}.pem"));
        let key_path = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    /// The collector's certificate (signed by this CA, which the agents trust).
    pub fn server(&self) -> (PathBuf, PathBuf) {
        self.files(SERVER_NAME, ExtendedKeyUsagePurpose::ServerAuth)
    }

    pub fn agent(&self, name: &str) -> (PathBuf, PathBuf) {
        self.files(name, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A raw TLS client presenting a certificate for `agent` (or none).
    pub fn client(&self, agent: Option<&str>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca_cert.der().to_vec()))
            .unwrap();
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match agent {
            None => b.with_no_client_auth(),
            Some(name) => {
                let key = KeyPair::generate().unwrap();
                let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                let cert = p.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
                b.with_client_auth_cert(
                    vec![cert.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .unwrap()
            }
        };
        Arc::new(config)
    }
}

/// A flow event that carries `id` in `orig_pkts`.
pub fn event(id: u64) -> Event {
    serde_json::from_value(serde_json::json!({
        "type": "flow", "ts": "2024-01-01T00:00:00.000000Z",
        "end_ts": "2024-01-01T00:00:01.000000Z", "transport": "tcp",
        "src_ip": "10.0.0.1", "src_port": 40000, "dst_ip": "10.0.0.2", "dst_port": 502,
        "service": "modbus", "orig_pkts": id, "orig_bytes": 0, "resp_pkts": 0,
        "resp_bytes": 0, "state": "SF", "reason": "closed"
    }))
    .unwrap()
}

/// Polls `cond` until it holds, failing the test after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The value of `series` (name and labels exactly as exposed) in `/metrics` text, if present.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A shipper for `agent` with certificates from `pki`, sending to `addr`: small batches,
/// flushed every 50 ms, reconnecting fast, short timeouts (tests, not a plant).
pub fn shipper_config(
    pki: &Pki,
    agent: &str,
    addr: SocketAddr,
    spool: &Path,
) -> mamori_agent::ship::ShipperConfig {
    let (cert, key) = pki.agent(agent);
    let mut c = mamori_agent::ship::ShipperConfig::new(
        agent,
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

/// A `POST /v1/batches` request with `Connection: close`.
pub fn post(agent: &str, sequence: &str, body: &[u8], content_length: Option<usize>) -> Vec<u8> {
    let mut r = format!(
        "POST /v1/batches HTTP/1.1\r\nHost: {SERVER_NAME}\r\nContent-Type: application/x-ndjson\r\n\
         Content-Encoding: gzip\r\nMamori-Agent: {agent}\r\nMamori-Sequence: {sequence}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        content_length.unwrap_or(body.len())
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Sends `request` over TLS as the client `tls`; returns what came back before the
/// connection closed (empty if the handshake or the connection was refused).
pub async fn exchange(tls: Arc<rustls::ClientConfig>, addr: SocketAddr, request: &[u8]) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(SERVER_NAME).unwrap();
    let Ok(mut stream) = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
    else {
        return String::new();
    };
    let _ = stream.write_all(request).await;
    let _ = stream.flush().await;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Long enough for a large batch decoded by a debug build.
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        match tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn status(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// One HTTP/1.0 request: (status, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split(' ').nth(1).unwrap().parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (status, body)
}
