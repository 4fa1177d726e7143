//! A whole deployment in one process, for the demo and the local drill: a data folder, a
//! throwaway PKI ([`crate::pki`]), an API token, and a real collector (SQLite in the data
//! folder, intake, API and `/metrics` on loopback), fed by the plant through the agent's
//! pipeline and shipper ([`crate::feed`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mamori_agent::pipeline::PipelineConfig;
use mamori_agent::ship::{FsyncPolicy, ShipperConfig};
use mamori_collector::config::CollectorConfig;
use mamori_collector::detection::{Mode, OnChange, SiteStatus};
use mamori_collector::{Collector, SqliteStore};

use crate::feed::Feed;
use crate::hmi::{OperatorSetpoint, default_operator_setpoints};
use crate::http::BaseUrl;
use crate::pki;
use crate::plant::{Plant, PlantConfig};
use crate::sink::ChannelSink;

/// The collector's name in its certificate.
pub const COLLECTOR_NAME: &str = "collector.sim.mamori";
/// The in-process agent's identity.
pub const AGENT_NAME: &str = "agent.sim.mamori";
/// Frames queued between the tap and the pipeline.
const FRAME_QUEUE: usize = 65_536;
/// How long the shipper may take to deliver what is spooled at the end.
const SHIP_DRAIN: Duration = Duration::from_secs(15);

/// What to start.
#[derive(Clone)]
pub struct LocalOptions {
    pub data_dir: PathBuf,
    pub site: String,
    /// Learning period, event time (the plant's frames carry the wall clock).
    pub learning_period_seconds: f64,
    /// An alert joins an open incident within this much event time.
    pub incident_window_seconds: f64,
    /// Preferred ports for `/metrics` and the API on 127.0.0.1 (a free port if taken; 0: any).
    pub metrics_port: u16,
    pub api_port: u16,
    /// Alertmanager base URLs the collector notifies.
    pub alertmanager: Vec<String>,
    pub on_change: Option<OnChange>,
}

impl std::fmt::Debug for LocalOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalOptions")
            .field("data_dir", &self.data_dir)
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

/// The running deployment.
#[derive(Debug)]
pub struct Local {
    pub collector: Collector,
    pub api: BaseUrl,
    pub metrics: Option<SocketAddr>,
    pub token: String,
    pub site: String,
    pub shipper: ShipperConfig,
    pub data_dir: PathBuf,
}

/// A port on 127.0.0.1: `preferred` when it can be bound now, else 0 (the system picks).
fn port_or_any(preferred: u16) -> u16 {
    if preferred != 0 && std::net::TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
        preferred
    } else {
        0
    }
}

/// A random token of 32 hex digits.
fn new_token() -> String {
    let mut bytes = [0u8; 16];
    let urandom = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if urandom.is_err() {
        // Without /dev/urandom: SipHash keys are seeded by the OS at each RandomState.
        use std::hash::{BuildHasher, Hasher};
        for chunk in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::UNIX_EPOCH
                    .elapsed()
                    .unwrap_or_default()
                    .as_nanos(),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A path as a TOML basic string (JSON's escapes are TOML's).
fn toml_str(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).unwrap_or_else(|_| "\"\"".to_owned())
}

impl Local {
    /// Makes the data folder's PKI, token and configuration, and starts the collector.
    pub async fn start(options: LocalOptions) -> Result<Local> {
        let dir = &options.data_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let pki = pki::make(&dir.join("pki"), COLLECTOR_NAME, AGENT_NAME)
            .context("making the throwaway PKI")?;
        let token = new_token();
        let token_file = dir.join("api.token");
        pki::write_private(&token_file, &token).context("writing the API token")?;
        let metrics_port = port_or_any(options.metrics_port);
        let api_port = port_or_any(options.api_port);
        let mut text = format!(
            r#"# Written by mamori-sim for an in-process demo or drill: a throwaway PKI, loopback only.
[intake]
listen = "127.0.0.1:0"
cert_file = {cert}
key_file = {key}
client_ca_file = {ca}

[[agents]]
id = "{AGENT_NAME}"
site = "{site}"

[storage]
sqlite_path = {db}
event_retention_days = 0

[metrics]
listen = "127.0.0.1:{metrics_port}"

[detection]
learning_period_seconds = {learn}
incident_window_seconds = {window}
inventory_store_interval_seconds = 1

[api]
listen = "127.0.0.1:{api_port}"
organisation = "Mamori simulated plant"
sectors = ["water"]

[[api.tokens]]
name = "demo"
token_file = {token}
scopes = ["read", "write"]
"#,
            cert = toml_str(&pki.collector_cert),
            key = toml_str(&pki.collector_key),
            ca = toml_str(&pki.ca_cert),
            site = options.site,
            db = toml_str(&dir.join("collector.db")),
            learn = options.learning_period_seconds,
            window = options.incident_window_seconds,
            token = toml_str(&token_file),
        );
        if !options.alertmanager.is_empty() {
            let urls: Vec<String> = options
                .alertmanager
                .iter()
                .map(|u| serde_json::to_string(u).unwrap_or_default())
                .collect();
            text.push_str(&format!(
                "\n[notify.alertmanager]\nurls = [{}]\nresend_interval_seconds = 5\n",
                urls.join(", ")
            ));
        }
        let config_path = dir.join("collector.toml");
        std::fs::write(&config_path, &text)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let config = CollectorConfig::load(&config_path).context("collector configuration")?;
        let store = SqliteStore::open(&config.storage.sqlite_path).context("opening SQLite")?;
        let collector = Collector::start_with_store(&config, Box::new(store), options.on_change)
            .await
            .context("starting the collector")?;
        let Some(api) = collector.api_addr() else {
            bail!("the collector started without its API");
        };
        let mut shipper = ShipperConfig::new(
            AGENT_NAME,
            collector.local_addr().to_string(),
            COLLECTOR_NAME,
            pki.ca_cert,
            pki.agent_cert,
            pki.agent_key,
            dir.join("spool"),
        );
        // Low latency over batching efficiency, and no fsync: a demo, not a site.
        shipper.flush_interval_seconds = 0.1;
        shipper.fsync = FsyncPolicy::Never;
        Ok(Local {
            metrics: collector.metrics_addr(),
            api: BaseUrl::parse(&format!("http://{api}")).map_err(anyhow::Error::msg)?,
            collector,
            token,
            site: options.site,
            shipper,
            data_dir: options.data_dir,
        })
    }

    /// The site's detection status.
    pub fn status(&self) -> Option<SiteStatus> {
        self.collector
            .control()
            .status()
            .into_iter()
            .find(|s| s.site == self.site)
    }

    /// Waits until the site detects, calling `progress` with its status now and then; an
    /// error after `limit`.
    pub async fn wait_detecting(
        &self,
        limit: Duration,
        mut progress: impl FnMut(&SiteStatus),
    ) -> Result<SiteStatus> {
        let end = tokio::time::Instant::now() + limit;
        loop {
            if let Some(s) = self.status() {
                progress(&s);
                if s.mode == Mode::Detecting {
                    return Ok(s);
                }
            }
            if tokio::time::Instant::now() > end {
                bail!(
                    "site {} still learning after {} s (are events arriving? {:?})",
                    self.site,
                    limit.as_secs(),
                    self.status()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn shutdown(self) -> Result<()> {
        self.collector
            .shutdown()
            .await
            .context("stopping the collector")?;
        Ok(())
    }
}

/// The plant and the agent feeding `shipper`'s collector.
#[derive(Debug)]
pub struct Simulation {
    pub plant: Plant,
    pub feed: Feed,
}

impl Simulation {
    pub async fn start(plant: PlantConfig, shipper: &ShipperConfig) -> Result<Simulation> {
        let (sink, frames) = ChannelSink::bounded(FRAME_QUEUE);
        let feed = Feed::start(frames, shipper, PipelineConfig::default(), SHIP_DRAIN)
            .context("starting the shipper")?;
        let plant = Plant::start(plant, Box::new(sink))
            .await
            .context("starting the plant")?;
        Ok(Simulation { plant, feed })
    }

    /// Stops the plant, then the feed (every event shipped and acknowledged, or spooled).
    pub async fn stop(self) -> Result<crate::feed::FeedReport> {
        let stats = self.plant.shutdown().await.context("stopping the plant")?;
        let report = self.feed.finish().await;
        if stats.frames_dropped_total > 0 {
            tracing::warn!(
                dropped = stats.frames_dropped_total,
                "frames dropped between the tap and the pipeline"
            );
        }
        Ok(report)
    }
}

/// A plant tuned for a short learning period: the operator trims the set-points often and
/// in a narrow band (so a minute of plant time shows the writes and the process values a
/// detecting site will see, instead of every later write looking new), and the inventory and
/// syslog act often enough to be learned. Scenarios still write far outside that band.
pub fn short_learning_plant(seed: u64, speed: f64) -> PlantConfig {
    let narrow = |sp: OperatorSetpoint| {
        let mid = sp.min / 2 + sp.max / 2;
        let half = (sp.max - sp.min) / 20;
        OperatorSetpoint {
            min: mid.saturating_sub(half),
            max: mid.saturating_add(half),
            ..sp
        }
    };
    PlantConfig {
        seed,
        speed,
        operator_setpoints: default_operator_setpoints()
            .into_iter()
            .map(narrow)
            .collect(),
        operator_gap: (Duration::from_secs(3), Duration::from_secs(8)),
        identity_period: Duration::from_secs(15),
        syslog_period: Duration::from_secs(2),
        ..PlantConfig::default()
    }
}
