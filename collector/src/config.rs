//! The collector's configuration file (TOML) and its validation. Every key carries its unit in
//! its name; unknown keys are errors; validation gathers every problem (file, key, reason)
//! before reporting, so an operator fixes them all in one go. `check-config` reads the
//! certificate files but opens no socket and no database.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, DnsName, PrivateKeyDer};
use serde::Deserialize;

/// The whole configuration of `mamori-collector serve`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// The batch intake: address, TLS, limits.
    pub intake: IntakeSection,
    /// Agents allowed to send, each mapped to its site. An agent not listed is refused (403)
    /// even with a valid certificate.
    #[serde(default)]
    pub agents: Vec<AgentEntry>,
    /// Where and how events are stored.
    pub storage: StorageSection,
    /// The Prometheus endpoint (`GET /metrics`, plain HTTP). Absent: no endpoint.
    #[serde(default)]
    pub metrics: Option<MetricsSection>,
    /// Online detection per site: learning, then detecting against the learned baseline.
    #[serde(default)]
    pub detection: DetectionSection,
    /// The HTTP API (incidents, alerts, assets, baselines, site modes). Absent: no API.
    #[serde(default)]
    pub api: Option<ApiSection>,
    /// Telling responders about incidents: Alertmanager, a signed webhook, syslog/CEF.
    #[serde(default)]
    pub notify: crate::notify::NotifySection,
}

/// `[api]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Address of the plain-HTTP API (keep it on loopback or a management network, or
    /// behind a TLS-terminating proxy). Default `127.0.0.1:9104`.
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// How links to incidents are written in alerts sent to responders (Alertmanager's
    /// `generatorURL`): the API as responders reach it. Default `http://<listen>`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Who may call the API: each token is read from a file (never written in this one).
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
    /// The operating organisation as the sector knows it: the producer of STIX exports.
    #[serde(default = "default_organisation")]
    pub organisation: String,
    /// Its STIX industry sectors (`utilities`, `water`, `energy`...).
    #[serde(default)]
    pub sectors: Vec<String>,
    /// API connections open at once; beyond it a new connection is closed at once (counted).
    /// Each holds a file descriptor: part of what the descriptor check at start adds up.
    #[serde(default = "default_api_max_connections")]
    pub max_connections: u32,
    /// Limit on reading a request's headers, from the moment the connection waits for one
    /// (a half-sent request is disconnected; an idle keep-alive connection is closed too).
    #[serde(default = "default_api_timeout_seconds")]
    pub header_timeout_seconds: f64,
    /// Limit on reading a request's body once its headers are in (a slow body is `408`).
    #[serde(default = "default_api_timeout_seconds")]
    pub body_timeout_seconds: f64,
    /// Failed authentications (no or unknown token) one source address may make in a minute;
    /// beyond, every request from it is `429` with `Retry-After` until the minute is over.
    /// An IPv6 source is its /64.
    #[serde(default = "default_auth_failures_per_minute")]
    pub auth_failures_per_minute: u32,
    /// Source addresses whose failed authentications are tracked at once; when full, a new
    /// one first replaces an address whose minute is over, then the address not locked out
    /// with the oldest minute (counted).
    #[serde(default = "default_max_tracked_addresses")]
    pub max_tracked_addresses: u32,
}

fn default_api_max_connections() -> u32 {
    64
}
fn default_api_timeout_seconds() -> f64 {
    10.0
}
fn default_auth_failures_per_minute() -> u32 {
    100
}
fn default_max_tracked_addresses() -> u32 {
    4096
}

fn default_organisation() -> String {
    "Mamori operator".into()
}

/// One API token: `[[api.tokens]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it (shown in incident timelines as the actor).
    pub name: String,
    /// A file holding the token (one line; at least 16 characters).
    pub token_file: PathBuf,
    /// `read`, or `read` and `write` (acknowledge, resolve, switch modes, annotate assets).
    pub scopes: Vec<String>,
}

/// The default `[api] listen`.
pub const DEFAULT_API_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9104,
));

fn default_api_listen() -> SocketAddr {
    DEFAULT_API_LISTEN
}

impl ApiSection {
    /// The tokens, read from their files: (name, token, may write). Problems name the key.
    pub fn load_tokens(&self) -> Result<Vec<(String, String, bool)>, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut out = Vec::new();
        for (n, t) in self.tokens.iter().enumerate() {
            let key = format!("api.tokens[{n}]");
            if t.name.trim().is_empty() || t.name.len() > 64 {
                problems.push(Problem {
                    key: format!("{key}.name"),
                    reason: "must be 1 to 64 characters".into(),
                });
            }
            let mut write = false;
            for s in &t.scopes {
                match s.as_str() {
                    "read" => {}
                    "write" => write = true,
                    other => problems.push(Problem {
                        key: format!("{key}.scopes"),
                        reason: format!("unknown scope {other:?} (read, write)"),
                    }),
                }
            }
            if !t.scopes.iter().any(|s| s == "read") {
                problems.push(Problem {
                    key: format!("{key}.scopes"),
                    reason: "must include \"read\"".into(),
                });
            }
            match std::fs::read_to_string(&t.token_file) {
                Ok(text) => {
                    let token = text.trim().to_owned();
                    if token.len() < 16 || token.chars().any(char::is_whitespace) {
                        problems.push(Problem {
                            key: format!("{key}.token_file"),
                            reason: format!(
                                "{}: the token must be one word of at least 16 characters",
                                t.token_file.display()
                            ),
                        });
                    } else {
                        out.push((t.name.clone(), token, write));
                    }
                }
                Err(e) => problems.push(Problem {
                    key: format!("{key}.token_file"),
                    reason: format!("{}: {e}", t.token_file.display()),
                }),
            }
        }
        if self.tokens.is_empty() {
            problems.push(Problem {
                key: "api.tokens".into(),
                reason: "at least one token is needed (an API without tokens would be open)".into(),
            });
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems)
        }
    }
}

/// `[detection]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionSection {
    /// How long a site learns its baseline, in event time from the site's first event
    /// (not wall time: a replayed capture learns over its own span). Default one day.
    #[serde(default = "default_learning_period_seconds")]
    pub learning_period_seconds: f64,
    /// Stored batches waiting for the detection task; beyond it a batch waits for room up
    /// to `queue_wait_seconds`.
    #[serde(default = "default_detection_queue_batches")]
    pub queue_batches: u32,
    /// A stored batch waits this long for room in the detection queue (its acknowledgement
    /// waits with it, so agents slow down to what detection keeps up with); past it the
    /// batch is skipped by detection (counted). 0: never wait. Default 10.
    #[serde(default = "default_detection_queue_wait_seconds")]
    pub queue_wait_seconds: f64,
    /// An alert joins an open incident about the same device or actor when it comes within
    /// this much event time of the incident's latest alert. Default 30 minutes.
    #[serde(default = "default_incident_window_seconds")]
    pub incident_window_seconds: f64,
    /// Hosts tracked in the inventory per site; beyond, new hosts are counted, not tracked.
    #[serde(default = "default_max_assets_per_site")]
    pub max_assets_per_site: u32,
    /// The inventory's changes (last seen times, new roles) are stored this often (wall
    /// time). An identity change is an alert and is stored with it at once.
    #[serde(default = "default_inventory_store_interval_seconds")]
    pub inventory_store_interval_seconds: f64,
}

impl Default for DetectionSection {
    fn default() -> Self {
        DetectionSection {
            learning_period_seconds: default_learning_period_seconds(),
            queue_batches: default_detection_queue_batches(),
            queue_wait_seconds: default_detection_queue_wait_seconds(),
            incident_window_seconds: default_incident_window_seconds(),
            max_assets_per_site: default_max_assets_per_site(),
            inventory_store_interval_seconds: default_inventory_store_interval_seconds(),
        }
    }
}

fn default_learning_period_seconds() -> f64 {
    86_400.0
}
fn default_detection_queue_wait_seconds() -> f64 {
    10.0
}
fn default_detection_queue_batches() -> u32 {
    64
}
fn default_incident_window_seconds() -> f64 {
    1800.0
}
fn default_max_assets_per_site() -> u32 {
    10_000
}
fn default_inventory_store_interval_seconds() -> f64 {
    5.0
}

/// Upper bound on the learning period: a year.
const MAX_LEARNING_SECONDS: f64 = 366.0 * 86_400.0;

/// `[metrics]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Address of the plain-HTTP `/metrics` endpoint (no TLS, no authentication: keep it on
    /// loopback or a management network). Default `127.0.0.1:9103`.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

/// The default `[metrics] listen`.
pub const DEFAULT_METRICS_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9103,
));

fn default_metrics_listen() -> SocketAddr {
    DEFAULT_METRICS_LISTEN
}

/// `[intake]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeSection {
    /// Address the intake listens on (`0.0.0.0:8443`).
    pub listen: SocketAddr,
    /// PEM file: the collector's certificate (then any intermediates), naming the
    /// `server_name` the agents are configured with.
    pub cert_file: PathBuf,
    /// PEM file: the collector's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM file: the CA certificate(s) that sign the agents' certificates (the only trust
    /// anchors for client certificates).
    pub client_ca_file: PathBuf,
    /// PEM files of certificate revocation lists of the agents' CA (optional).
    #[serde(default)]
    pub crl_files: Vec<PathBuf>,
    /// Authenticated connections (TLS handshake done with a valid agent certificate) open at
    /// once; beyond it a newly authenticated connection is closed at once (counted).
    /// Connections still in their handshake are not counted here but in `max_handshakes`.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Connections still in the TLS handshake (not yet authenticated) at once. When full, a
    /// new connection is still taken: the oldest handshake of the source address holding the
    /// most is closed instead (counted), so idle connections cannot keep an agent out.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: u32,
    /// Handshakes in progress from one source address (an IPv6 source is its /64); a new
    /// connection beyond it closes that address's oldest handshake (counted).
    #[serde(default = "default_max_handshakes_per_address")]
    pub max_handshakes_per_address: u32,
    /// Batches being received, decoded and stored at once; beyond it a batch is answered
    /// `503` (counted) and the agent retries later with backoff.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: u32,
    /// Cap on a batch's compressed body; a larger one is answered `413`.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Cap on a batch's decompressed JSON Lines (a gzip bomb stops here; answered `413`).
    #[serde(default = "default_max_decompressed_bytes")]
    pub max_decompressed_bytes: u64,
    /// Memory for batches in progress, across all requests: each compressed body as it is
    /// read, its decompressed text while it is decoded, and the decoded events (their size in
    /// memory, about 700 bytes each plus their strings) until detection has seen them. A batch
    /// that does not fit within a second is answered `503` (the agent retries with backoff);
    /// one that could never fit, `413`. At least `max_body_bytes + 6 × max_decompressed_bytes`,
    /// so that a maximal batch of ordinary events (about 5.5 × its text) fits.
    #[serde(default = "default_max_inflight_bytes")]
    pub max_inflight_bytes: u64,
    /// Cap on a request's header block (hyper's read buffer, at least 8192).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: u32,
    /// Limit on the TLS handshake, and on reading a request's headers once a connection is
    /// waiting for one (a slow-loris client is closed after it).
    #[serde(default = "default_header_timeout_seconds")]
    pub header_timeout_seconds: f64,
    /// Limit on reading a request's body (a slow body is answered `408`).
    #[serde(default = "default_body_timeout_seconds")]
    pub body_timeout_seconds: f64,
    /// A connection with no request in progress is closed after this long.
    #[serde(default = "default_idle_timeout_seconds")]
    pub idle_timeout_seconds: f64,
    /// At shutdown, how long requests in progress may take to finish (their batches are
    /// stored and acknowledged, or not acknowledged and so resent).
    #[serde(default = "default_shutdown_grace_seconds")]
    pub shutdown_grace_seconds: f64,
}

/// `[[agents]]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    /// The agent's id: a DNS name in its certificate's subject alternative names.
    pub id: String,
    /// The site (plant, substation) its events are filed under.
    pub site: String,
}

/// `[storage]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// The SQLite database file (created with its folder's permissions if missing; WAL mode
    /// adds `-wal` and `-shm` files beside it).
    pub sqlite_path: PathBuf,
    /// Raw events whose own time is older than this many days are deleted. `0`: kept forever.
    #[serde(default = "default_retention_days")]
    pub event_retention_days: u32,
    /// How often the retention pass runs.
    #[serde(default = "default_retention_interval_seconds")]
    pub retention_interval_seconds: f64,
    /// Batches waiting for the storage thread; beyond it a batch is answered `503`.
    #[serde(default = "default_queue_batches")]
    pub queue_batches: u32,
}

fn default_max_connections() -> u32 {
    1024
}
fn default_max_handshakes() -> u32 {
    256
}
fn default_max_handshakes_per_address() -> u32 {
    32
}
fn default_max_concurrent_requests() -> u32 {
    64
}
fn default_max_body_bytes() -> u64 {
    16 * 1024 * 1024
}
fn default_max_decompressed_bytes() -> u64 {
    u64::from(mamori_wire::MAX_BATCH_JSONL_BYTES)
}
fn default_max_inflight_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_max_header_bytes() -> u32 {
    16 * 1024
}
fn default_header_timeout_seconds() -> f64 {
    10.0
}
fn default_body_timeout_seconds() -> f64 {
    60.0
}
fn default_idle_timeout_seconds() -> f64 {
    120.0
}
fn default_shutdown_grace_seconds() -> f64 {
    10.0
}
fn default_retention_days() -> u32 {
    90
}
fn default_retention_interval_seconds() -> f64 {
    3600.0
}
fn default_queue_batches() -> u32 {
    64
}

// The same problem report as the agent's configuration: `file: key: reason`, every problem.
pub use mamori_agent::config::{ConfigError, Problem};

/// The TLS material named by `[intake]`, loaded.
#[derive(Debug)]
pub struct TlsFiles {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub client_roots: Vec<CertificateDer<'static>>,
    pub crls: Vec<CertificateRevocationListDer<'static>>,
}

/// Upper bound on every timeout: a week.
const MAX_SECONDS: f64 = 7.0 * 86_400.0;

pub(crate) fn seconds(x: f64) -> Duration {
    Duration::try_from_secs_f64(x).unwrap_or(Duration::ZERO)
}

impl CollectorConfig {
    /// Reads, parses and validates `path`; every problem at once: those of the TOML (syntax,
    /// types, unknown keys, each under its key and line) and those of the values.
    pub fn load(path: &Path) -> Result<CollectorConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            problems: vec![Problem {
                key: "(file)".to_owned(),
                reason: format!("cannot read: {e}"),
            }],
        })?;
        let (config, problems) = mamori_agent::config::parse_toml::<CollectorConfig>(&text);
        ConfigError::gather(path, config, problems, |c| c.validate(path))
    }

    /// Parses TOML text (no validation); every problem of the TOML at once.
    pub fn parse(text: &str) -> Result<CollectorConfig, Vec<Problem>> {
        match mamori_agent::config::parse_toml(text) {
            (Some(config), problems) if problems.is_empty() => Ok(config),
            (_, problems) => Err(problems),
        }
    }

    /// Checks everything, reading the certificate files; every problem at once.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, reason: String| {
            problems.push(Problem {
                key: key.to_owned(),
                reason,
            })
        };
        let i = &self.intake;
        if i.max_connections == 0 || i.max_connections > 1_000_000 {
            bad(
                "intake.max_connections",
                "must be between 1 and 1000000".into(),
            );
        }
        if i.max_handshakes == 0 || i.max_handshakes > 100_000 {
            bad(
                "intake.max_handshakes",
                "must be between 1 and 100000".into(),
            );
        }
        if i.max_handshakes_per_address == 0 || i.max_handshakes_per_address > i.max_handshakes {
            bad(
                "intake.max_handshakes_per_address",
                "must be at least 1 and at most intake.max_handshakes".into(),
            );
        }
        if i.max_concurrent_requests == 0 || i.max_concurrent_requests > i.max_connections {
            bad(
                "intake.max_concurrent_requests",
                "must be at least 1 and at most intake.max_connections".into(),
            );
        }
        let body_cap = u64::from(mamori_wire::MAX_BODY_BYTES);
        if !(1024..=body_cap).contains(&i.max_body_bytes) {
            bad(
                "intake.max_body_bytes",
                format!("must be between 1024 and {body_cap}"),
            );
        }
        let inflated_cap = mamori_wire::MAX_DECOMPRESSED_BYTES;
        if i.max_decompressed_bytes < i.max_body_bytes || i.max_decompressed_bytes > inflated_cap {
            bad(
                "intake.max_decompressed_bytes",
                format!("must be at least intake.max_body_bytes and at most {inflated_cap}"),
            );
        }
        let maximal = i
            .max_body_bytes
            .saturating_add(i.max_decompressed_bytes.saturating_mul(6));
        if i.max_inflight_bytes < maximal || i.max_inflight_bytes > 64 * 1024 * 1024 * 1024 {
            bad(
                "intake.max_inflight_bytes",
                format!(
                    "must be at least intake.max_body_bytes + 6 × intake.max_decompressed_bytes \
                     ({maximal}, so that a maximal batch fits) and at most 64 GiB"
                ),
            );
        }
        if !(8192..=1024 * 1024).contains(&i.max_header_bytes) {
            bad(
                "intake.max_header_bytes",
                "must be between 8192 and 1048576".into(),
            );
        }
        for (key, v) in [
            ("intake.header_timeout_seconds", i.header_timeout_seconds),
            ("intake.body_timeout_seconds", i.body_timeout_seconds),
            ("intake.idle_timeout_seconds", i.idle_timeout_seconds),
            ("intake.shutdown_grace_seconds", i.shutdown_grace_seconds),
            (
                "storage.retention_interval_seconds",
                self.storage.retention_interval_seconds,
            ),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= MAX_SECONDS) {
                bad(
                    key,
                    format!("{v} is not a number of seconds in (0, 604800]"),
                );
            }
        }
        if self.storage.event_retention_days > 36_500 {
            bad(
                "storage.event_retention_days",
                "must be at most 36500 (0 keeps events forever)".into(),
            );
        }
        if self.storage.queue_batches == 0 || self.storage.queue_batches > 100_000 {
            bad(
                "storage.queue_batches",
                "must be between 1 and 100000".into(),
            );
        }
        if self.storage.sqlite_path.as_os_str().is_empty() {
            bad("storage.sqlite_path", "must name a file".into());
        }
        if self.agents.is_empty() {
            bad(
                "agents",
                "no [[agents]]: every batch would be refused".into(),
            );
        }
        let mut seen = BTreeMap::new();
        for (n, a) in self.agents.iter().enumerate() {
            if DnsName::try_from(a.id.as_str()).is_err() {
                bad(
                    &format!("agents[{n}].id"),
                    format!("{:?} is not a DNS name", a.id),
                );
            }
            if a.site.trim().is_empty() || a.site.len() > 128 {
                bad(
                    &format!("agents[{n}].site"),
                    "must be 1 to 128 characters".into(),
                );
            }
            if let Some(first) = seen.insert(a.id.to_ascii_lowercase(), n) {
                bad(
                    &format!("agents[{n}].id"),
                    format!("{:?} is listed twice (also agents[{first}])", a.id),
                );
            }
        }
        let d = &self.detection;
        if !(d.learning_period_seconds.is_finite()
            && d.learning_period_seconds > 0.0
            && d.learning_period_seconds <= MAX_LEARNING_SECONDS)
        {
            bad(
                "detection.learning_period_seconds",
                format!(
                    "{} is not a number of seconds in (0, {MAX_LEARNING_SECONDS}]",
                    d.learning_period_seconds
                ),
            );
        }
        for (key, v) in [
            (
                "detection.incident_window_seconds",
                d.incident_window_seconds,
            ),
            (
                "detection.inventory_store_interval_seconds",
                d.inventory_store_interval_seconds,
            ),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= MAX_SECONDS) {
                bad(
                    key,
                    format!("{v} is not a number of seconds in (0, 604800]"),
                );
            }
        }
        if !(d.queue_wait_seconds.is_finite()
            && d.queue_wait_seconds >= 0.0
            && d.queue_wait_seconds <= 600.0)
        {
            bad(
                "detection.queue_wait_seconds",
                format!(
                    "{} is not a number of seconds in [0, 600]",
                    d.queue_wait_seconds
                ),
            );
        }
        if d.max_assets_per_site == 0 || d.max_assets_per_site > 1_000_000 {
            bad(
                "detection.max_assets_per_site",
                "must be between 1 and 1000000".into(),
            );
        }
        if d.queue_batches == 0 || d.queue_batches > 100_000 {
            bad(
                "detection.queue_batches",
                "must be between 1 and 100000".into(),
            );
        }
        let clash = |m: &MetricsSection| m.listen == i.listen && m.listen.port() != 0;
        if self.metrics.as_ref().is_some_and(clash) {
            bad("metrics.listen", "must differ from intake.listen".into());
        }
        if let Some(api) = &self.api {
            let taken = |a: SocketAddr| a == api.listen && a.port() != 0;
            if taken(i.listen) || self.metrics.as_ref().is_some_and(|m| taken(m.listen)) {
                bad(
                    "api.listen",
                    "must differ from intake.listen and metrics.listen".into(),
                );
            }
            if let Some(url) = &api.public_url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                bad("api.public_url", format!("{url:?} is not an http(s) URL"));
            }
            if api.max_connections == 0 || api.max_connections > 100_000 {
                bad("api.max_connections", "must be between 1 and 100000".into());
            }
            for (key, v) in [
                ("api.header_timeout_seconds", api.header_timeout_seconds),
                ("api.body_timeout_seconds", api.body_timeout_seconds),
            ] {
                if !(v.is_finite() && v > 0.0 && v <= 3600.0) {
                    bad(key, format!("{v} is not a number of seconds in (0, 3600]"));
                }
            }
            if api.auth_failures_per_minute == 0 || api.auth_failures_per_minute > 1_000_000 {
                bad(
                    "api.auth_failures_per_minute",
                    "must be between 1 and 1000000".into(),
                );
            }
            if !(16..=1_000_000).contains(&api.max_tracked_addresses) {
                bad(
                    "api.max_tracked_addresses",
                    "must be between 16 and 1000000".into(),
                );
            }
        }
        if let Err(more) = self.intake.load_tls() {
            problems.extend(more);
        }
        if let Some(Err(more)) = self.api.as_ref().map(ApiSection::load_tokens) {
            problems.extend(more);
        }
        self.notify.validate(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                file: path.to_owned(),
                problems,
            })
        }
    }

    /// The allowlist: agent id (lowercase) → site.
    pub fn sites(&self) -> BTreeMap<String, String> {
        self.agents
            .iter()
            .map(|a| (a.id.to_ascii_lowercase(), a.site.clone()))
            .collect()
    }
}

impl IntakeSection {
    /// Reads the certificate, key, client CA and CRL files; every problem at once.
    pub fn load_tls(&self) -> Result<TlsFiles, Vec<Problem>> {
        let mut problems = Vec::new();
        let chain = certs(&self.cert_file, "intake.cert_file", &mut problems);
        let client_roots = certs(&self.client_ca_file, "intake.client_ca_file", &mut problems);
        let key = match PrivateKeyDer::from_pem_file(&self.key_file) {
            Ok(k) => Some(k),
            Err(e) => {
                problems.push(Problem {
                    key: "intake.key_file".into(),
                    reason: format!("{}: {e}", self.key_file.display()),
                });
                None
            }
        };
        let mut crls = Vec::new();
        for (n, path) in self.crl_files.iter().enumerate() {
            let loaded = CertificateRevocationListDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>());
            match loaded {
                Ok(list) if !list.is_empty() => crls.extend(list),
                Ok(_) => problems.push(Problem {
                    key: format!("intake.crl_files[{n}]"),
                    reason: format!("{}: no CRL", path.display()),
                }),
                Err(e) => problems.push(Problem {
                    key: format!("intake.crl_files[{n}]"),
                    reason: format!("{}: {e}", path.display()),
                }),
            }
        }
        match key {
            Some(key) if problems.is_empty() => Ok(TlsFiles {
                chain,
                key,
                client_roots,
                crls,
            }),
            _ => Err(problems),
        }
    }
}

fn certs(path: &Path, key: &str, problems: &mut Vec<Problem>) -> Vec<CertificateDer<'static>> {
    let loaded =
        CertificateDer::pem_file_iter(path).and_then(|it| it.collect::<Result<Vec<_>, _>>());
    match loaded {
        Ok(certs) if !certs.is_empty() => certs,
        Ok(_) => {
            problems.push(Problem {
                key: key.to_owned(),
                reason: format!("{}: no certificate", path.display()),
            });
            Vec::new()
        }
        Err(e) => {
            problems.push(Problem {
                key: key.to_owned(),
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

    const MINIMAL: &str = r#"
        [intake]
        listen = "127.0.0.1:8443"
        cert_file = "/nonexistent/c.pem"
        key_file = "/nonexistent/c.key"
        client_ca_file = "/nonexistent/ca.pem"
        [[agents]]
        id = "agent-1.plant.example"
        site = "plant"
        [storage]
        sqlite_path = "/var/lib/mamori/collector.db"
    "#;

    #[test]
    fn defaults_apply_and_unknown_keys_are_refused() {
        let c = CollectorConfig::parse(MINIMAL).unwrap();
        assert_eq!(c.intake.max_concurrent_requests, 64);
        assert_eq!(c.storage.event_retention_days, 90);
        let typo = MINIMAL.replace("[storage]", "[storage]\nretention = 3");
        let problems = CollectorConfig::parse(&typo).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "storage.retention");
        assert!(problems[0].reason.contains("unknown field"), "{problems:?}");
    }

    #[test]
    fn metrics_section_is_optional_and_its_address_defaults_to_loopback() {
        assert!(CollectorConfig::parse(MINIMAL).unwrap().metrics.is_none());
        let c = CollectorConfig::parse(&format!("{MINIMAL}\n[metrics]\n")).unwrap();
        assert_eq!(c.metrics.unwrap().listen, DEFAULT_METRICS_LISTEN);
        let c = CollectorConfig::parse(&format!(
            "{MINIMAL}\n[metrics]\nlisten = \"127.0.0.1:9200\"\n"
        ))
        .unwrap();
        assert_eq!(c.metrics.unwrap().listen.port(), 9200);
        let typo = format!("{MINIMAL}\n[metrics]\nport = 1\n");
        assert!(CollectorConfig::parse(&typo).is_err());
    }

    #[test]
    fn detection_defaults_and_bad_values_are_reported() {
        let c = CollectorConfig::parse(MINIMAL).unwrap();
        assert_eq!(c.detection.learning_period_seconds, 86_400.0);
        let text = format!(
            "{MINIMAL}\n[detection]\nlearning_period_seconds = 0\nmax_assets_per_site = 0\n"
        );
        let c = CollectorConfig::parse(&text).unwrap();
        let err = c.validate(Path::new("c.toml")).unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"detection.learning_period_seconds"), "{err}");
        assert!(keys.contains(&"detection.max_assets_per_site"), "{err}");
        let typo = format!("{MINIMAL}\n[detection]\nlearning_days = 1\n");
        assert!(CollectorConfig::parse(&typo).is_err());
    }

    #[test]
    fn admission_and_api_bounds_have_defaults_and_are_checked() {
        let c = CollectorConfig::parse(&format!("{MINIMAL}\n[api]\n")).unwrap();
        assert_eq!(
            (c.intake.max_handshakes, c.intake.max_handshakes_per_address),
            (256, 32)
        );
        let api = c.api.unwrap();
        assert_eq!(
            (api.max_connections, api.auth_failures_per_minute),
            (64, 100)
        );
        assert_eq!(
            (api.header_timeout_seconds, api.body_timeout_seconds),
            (10.0, 10.0)
        );
        let text = MINIMAL.replace(
            "listen = \"127.0.0.1:8443\"",
            "listen = \"127.0.0.1:8443\"\nmax_handshakes = 8\nmax_handshakes_per_address = 9",
        ) + "\n[api]\nheader_timeout_seconds = 0\nauth_failures_per_minute = 0\nmax_tracked_addresses = 1\nmax_connections = 0\n";
        let err = CollectorConfig::parse(&text)
            .unwrap()
            .validate(Path::new("c.toml"))
            .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "intake.max_handshakes_per_address",
            "api.header_timeout_seconds",
            "api.auth_failures_per_minute",
            "api.max_tracked_addresses",
            "api.max_connections",
        ] {
            assert!(keys.contains(&key), "{key} missing from {err}");
        }
        assert!(!keys.contains(&"intake.max_handshakes"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = MINIMAL
            .replace(
                "listen = \"127.0.0.1:8443\"",
                "listen = \"127.0.0.1:8443\"\nmax_body_bytes = 10\nheader_timeout_seconds = -1",
            )
            .replace("site = \"plant\"", "site = \"\"");
        let c = CollectorConfig::parse(&text).unwrap();
        let err = c.validate(Path::new("c.toml")).unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "intake.max_body_bytes",
            "intake.header_timeout_seconds",
            "agents[0].site",
            "intake.cert_file",
            "intake.key_file",
            "intake.client_ca_file",
        ] {
            assert!(keys.contains(&key), "{key} missing from {err}");
        }
        assert!(err.to_string().contains("c.toml: intake.max_body_bytes"));
    }
}
