//! The shipper's configuration, its defaults and its validation (every problem at once).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};

use super::batch::BatchLimits;
use super::spool::SpoolConfig;
use mamori_wire::MAX_BATCH_JSONL_BYTES;

/// What the spool does when it holds `spool_max_bytes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Keep taking events; delete the oldest unsent batches to make room (counted in
    /// `events_dropped_total`). Recent traffic matters more than old for detection.
    #[default]
    DropOldest,
    /// Stop taking events until the collector acknowledges enough (producers wait, or count
    /// `events_refused_total` if they cannot wait).
    Block,
}

/// How hard the spool works to survive a power loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// fsync each sealed batch and the spool folder before the batch counts as spooled: a
    /// sealed batch survives a power loss. Events of the batch still open (at most
    /// `max_batch_events`, `flush_interval_seconds` old) survive a crash of the agent but not
    /// a power loss.
    #[default]
    Always,
    /// Leave writing back to the kernel: everything survives a crash of the agent (kill -9),
    /// nothing is promised across a power loss (the last seconds of batches may be lost, and
    /// a sequence number may then be reused, which the collector would take for a duplicate).
    Never,
}

/// How the agent ships events to the collector (`docs/shipping.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipperConfig {
    /// This agent's identity: a DNS name that its certificate carries as a subject
    /// alternative name (checked at start), sent with every batch.
    pub agent_id: String,
    /// The collector's `host:port`.
    pub collector_address: String,
    /// The name the collector's certificate must carry.
    pub server_name: String,
    /// PEM file with the CA certificate(s) that signed the collector's certificate: the only
    /// trust anchors used (the system's store is not).
    pub ca_file: PathBuf,
    /// PEM file with this agent's certificate (then any intermediates).
    pub cert_file: PathBuf,
    /// PEM file with this agent's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Folder of the disk spool (created if missing). One agent per folder.
    pub spool_dir: PathBuf,
    /// Bound on the spool's sealed batches, in bytes (at least twice `max_batch_bytes`).
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// What a full spool does: `drop_oldest` or `block`.
    #[serde(default)]
    pub when_full: WhenFull,
    /// `always` (sealed batches survive a power loss) or `never` (they survive a crash).
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// A batch closes at this many events...
    #[serde(default = "default_max_batch_events")]
    pub max_batch_events: u32,
    /// ...or this many bytes of uncompressed JSON Lines...
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: u64,
    /// ...or this long after its first event, whichever comes first.
    #[serde(default = "default_flush_interval_seconds")]
    pub flush_interval_seconds: f64,
    /// Limit on TCP connect plus TLS handshake.
    #[serde(default = "default_connect_timeout_seconds")]
    pub connect_timeout_seconds: f64,
    /// Limit on sending one batch and reading the collector's acknowledgement.
    #[serde(default = "default_request_timeout_seconds")]
    pub request_timeout_seconds: f64,
    /// First wait before reconnecting after a failure; doubled per failure, with jitter.
    #[serde(default = "default_reconnect_initial_seconds")]
    pub reconnect_initial_seconds: f64,
    /// Longest wait between reconnection attempts.
    #[serde(default = "default_reconnect_max_seconds")]
    pub reconnect_max_seconds: f64,
    /// An idle connection (nothing to send) is closed after this long.
    #[serde(default = "default_idle_timeout_seconds")]
    pub idle_timeout_seconds: f64,
}

fn default_spool_max_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_max_batch_events() -> u32 {
    1000
}
fn default_max_batch_bytes() -> u64 {
    1024 * 1024
}
fn default_flush_interval_seconds() -> f64 {
    5.0
}
fn default_connect_timeout_seconds() -> f64 {
    10.0
}
fn default_request_timeout_seconds() -> f64 {
    30.0
}
fn default_reconnect_initial_seconds() -> f64 {
    0.5
}
fn default_reconnect_max_seconds() -> f64 {
    60.0
}
fn default_idle_timeout_seconds() -> f64 {
    60.0
}

/// One configuration problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The configuration key at fault.
    pub key: &'static str,
    pub reason: String,
}

/// Every problem found by [`ShipperConfig::validate`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_problems(.0))]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

fn display_problems(problems: &[ConfigProblem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.key, p.reason))
        .collect();
    format!("invalid shipping configuration: {}", lines.join("; "))
}

/// Certificates and key as loaded from the configured files.
#[derive(Debug)]
pub(crate) struct TlsMaterial {
    pub roots: Vec<CertificateDer<'static>>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

fn seconds(x: f64) -> Duration {
    Duration::try_from_secs_f64(x).unwrap_or(Duration::ZERO)
}

impl ShipperConfig {
    /// A configuration with the defaults for everything but the required keys.
    pub fn new(
        agent_id: impl Into<String>,
        collector_address: impl Into<String>,
        server_name: impl Into<String>,
        ca_file: impl Into<PathBuf>,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
        spool_dir: impl Into<PathBuf>,
    ) -> ShipperConfig {
        ShipperConfig {
            agent_id: agent_id.into(),
            collector_address: collector_address.into(),
            server_name: server_name.into(),
            ca_file: ca_file.into(),
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            spool_dir: spool_dir.into(),
            spool_max_bytes: default_spool_max_bytes(),
            when_full: WhenFull::default(),
            fsync: FsyncPolicy::default(),
            max_batch_events: default_max_batch_events(),
            max_batch_bytes: default_max_batch_bytes(),
            flush_interval_seconds: default_flush_interval_seconds(),
            connect_timeout_seconds: default_connect_timeout_seconds(),
            request_timeout_seconds: default_request_timeout_seconds(),
            reconnect_initial_seconds: default_reconnect_initial_seconds(),
            reconnect_max_seconds: default_reconnect_max_seconds(),
            idle_timeout_seconds: default_idle_timeout_seconds(),
        }
    }

    /// Checks everything, reading the certificate files, and reports every problem.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut problems = Vec::new();
        let mut bad =
            |key: &'static str, reason: String| problems.push(ConfigProblem { key, reason });

        if DnsName::try_from(self.agent_id.as_str()).is_err() {
            bad("agent_id", format!("{:?} is not a DNS name", self.agent_id));
        }
        if ServerName::try_from(self.server_name.as_str()).is_err() {
            bad(
                "server_name",
                format!("{:?} is not a DNS name or IP address", self.server_name),
            );
        }
        match self.collector_address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => bad(
                "collector_address",
                format!("{:?} is not host:port", self.collector_address),
            ),
        }
        if self.max_batch_events == 0 {
            bad("max_batch_events", "must be at least 1".into());
        }
        if !(1024..=u64::from(MAX_BATCH_JSONL_BYTES)).contains(&self.max_batch_bytes) {
            bad(
                "max_batch_bytes",
                format!(
                    "must be between 1024 and {MAX_BATCH_JSONL_BYTES} (what a collector takes by default)"
                ),
            );
        }
        if self.spool_max_bytes < self.max_batch_bytes.saturating_mul(2) {
            bad(
                "spool_max_bytes",
                "must be at least twice max_batch_bytes".into(),
            );
        }
        for (key, v) in [
            ("flush_interval_seconds", self.flush_interval_seconds),
            ("connect_timeout_seconds", self.connect_timeout_seconds),
            ("request_timeout_seconds", self.request_timeout_seconds),
            ("reconnect_initial_seconds", self.reconnect_initial_seconds),
            ("reconnect_max_seconds", self.reconnect_max_seconds),
            ("idle_timeout_seconds", self.idle_timeout_seconds),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
                bad(key, format!("{v} is not a number of seconds in (0, 86400]"));
            }
        }
        if self.reconnect_initial_seconds > self.reconnect_max_seconds {
            bad(
                "reconnect_initial_seconds",
                "must not exceed reconnect_max_seconds".into(),
            );
        }
        match self.load_tls() {
            Ok(tls) => {
                if let (Ok(name), Some(leaf)) =
                    (DnsName::try_from(self.agent_id.as_str()), tls.chain.first())
                {
                    let named = webpki::EndEntityCert::try_from(leaf).and_then(|c| {
                        c.verify_is_valid_for_subject_name(&ServerName::DnsName(name.to_owned()))
                    });
                    if let Err(e) = named {
                        bad(
                            "agent_id",
                            format!(
                                "the certificate in {} does not name {:?} ({e:?})",
                                self.cert_file.display(),
                                self.agent_id
                            ),
                        );
                    }
                }
            }
            Err(more) => problems.extend(more),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// Reads the CA, certificate and key files.
    pub(crate) fn load_tls(&self) -> Result<TlsMaterial, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let roots = certs(&self.ca_file, "ca_file", &mut problems);
        let chain = certs(&self.cert_file, "cert_file", &mut problems);
        let key = match PrivateKeyDer::from_pem_file(&self.key_file) {
            Ok(k) => Some(k),
            Err(e) => {
                problems.push(ConfigProblem {
                    key: "key_file",
                    reason: format!("{}: {e}", self.key_file.display()),
                });
                None
            }
        };
        match key {
            Some(key) if problems.is_empty() => Ok(TlsMaterial { roots, chain, key }),
            _ => Err(problems),
        }
    }

    pub(crate) fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_events: self.max_batch_events,
            max_bytes: usize::try_from(self.max_batch_bytes).unwrap_or(usize::MAX),
            max_age: seconds(self.flush_interval_seconds),
        }
    }

    pub(crate) fn spool_config(&self) -> SpoolConfig {
        SpoolConfig {
            agent_id: self.agent_id.clone(),
            max_bytes: self.spool_max_bytes,
            when_full: self.when_full,
            fsync: self.fsync,
            limits: self.batch_limits(),
        }
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        seconds(self.connect_timeout_seconds)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        seconds(self.request_timeout_seconds)
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        seconds(self.idle_timeout_seconds)
    }

    pub(crate) fn backoff(&self) -> (Duration, Duration) {
        (
            seconds(self.reconnect_initial_seconds),
            seconds(self.reconnect_max_seconds),
        )
    }
}

fn certs(
    path: &Path,
    key: &'static str,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<CertificateDer<'static>> {
    let loaded =
        CertificateDer::pem_file_iter(path).and_then(|it| it.collect::<Result<Vec<_>, _>>());
    match loaded {
        Ok(certs) if !certs.is_empty() => certs,
        Ok(_) => {
            problems.push(ConfigProblem {
                key,
                reason: format!("{}: no certificate", path.display()),
            });
            Vec::new()
        }
        Err(e) => {
            problems.push(ConfigProblem {
                key,
                reason: format!("{}: {e}", path.display()),
            });
            Vec::new()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut c = ShipperConfig::new(
            "not a name",
            "collector",
            "collector.example",
            "/nonexistent/ca.pem",
            "/nonexistent/agent.pem",
            "/nonexistent/agent.key",
            "/tmp/spool",
        );
        c.max_batch_events = 0;
        c.flush_interval_seconds = f64::NAN;
        c.spool_max_bytes = 10;
        let errs = c.validate().unwrap_err();
        let keys: Vec<&str> = errs.0.iter().map(|p| p.key).collect();
        for key in [
            "agent_id",
            "collector_address",
            "max_batch_events",
            "spool_max_bytes",
            "flush_interval_seconds",
            "ca_file",
            "cert_file",
            "key_file",
        ] {
            assert!(keys.contains(&key), "{key} missing from {errs}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_and_defaults_apply() {
        let json: serde_json::Value = serde_json::json!({
            "agent_id": "a.example", "collector_address": "c.example:8443",
            "server_name": "c.example", "ca_file": "ca.pem", "cert_file": "a.pem",
            "key_file": "a.key", "spool_dir": "spool", "when_full": "block"
        });
        let c: ShipperConfig = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(c.when_full, WhenFull::Block);
        assert_eq!(c.fsync, FsyncPolicy::Always);
        assert_eq!(c.max_batch_events, 1000);
        let mut typo = json;
        typo["flush_interval"] = serde_json::json!(3);
        assert!(serde_json::from_value::<ShipperConfig>(typo).is_err());
    }
}
