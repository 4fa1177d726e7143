//! The agent's configuration file (TOML) and its validation. Every key carries its unit in its
//! name; unknown keys are errors; validation gathers every problem (file, key, reason) before
//! reporting, so an operator fixes them all in one go. Nothing is opened or written here.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod parse;

pub use parse::parse_toml;

use crate::capture::live::{CaptureFilter, LiveConfig};
use crate::intake::SyslogReceiverConfig;
use crate::pipeline::PipelineConfig;
use crate::ship::ShipperConfig;

/// The whole configuration of `mamori-agent run`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Unprivileged user to switch to once the capture sockets are open. Absent: keep the
    /// current user (under systemd, run as a dedicated user with only `CAP_NET_RAW` instead).
    #[serde(default)]
    pub user: Option<String>,
    /// Passive capture on the mirror/SPAN ports.
    #[serde(default)]
    pub capture: CaptureSection,
    /// Protocol recognition and the bounds of flows and reassembly.
    #[serde(default)]
    pub decode: DecodeSection,
    /// Syslog listeners (UDP, TCP, TLS). Absent: none.
    #[serde(default)]
    pub syslog_receivers: Option<SyslogReceiverConfig>,
    /// Shipping to the collector over mutual TLS, with the disk spool. Absent: events go to
    /// `[output]` only.
    #[serde(default)]
    pub shipper: Option<ShipperConfig>,
    /// Events as JSON Lines to a local file (for sites without a collector, and for audits).
    #[serde(default)]
    pub output: Option<OutputSection>,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsSection,
}

/// `[capture]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureSection {
    /// Interfaces to capture on (the mirror/SPAN ports). Empty: no live capture.
    pub interfaces: Vec<String>,
    /// Put the interfaces in promiscuous mode (a SPAN port delivers frames for other hosts).
    pub promiscuous: bool,
    /// Kernel filter: `all_ip` (every IPv4/IPv6 frame, so that flows of every conversation are
    /// seen) or `configured_ports` (only the Modbus and syslog ports).
    pub filter: FilterKind,
    /// Bytes kept of each frame.
    pub snap_len_bytes: u32,
    /// Ring memory per interface.
    pub ring_bytes: usize,
    /// Frames queued between the capture threads and the pipeline (drops counted beyond).
    pub queue_frames: usize,
    /// Capture files (pcap, pcapng) read once at start through the same pipeline and shipped
    /// like live traffic, before live capture begins: a site whose mirror port is recorded by
    /// another tool, or a drill that replays a known capture into a deployment.
    pub replay_files: Vec<std::path::PathBuf>,
    /// Replay `replay_files` at their recorded pace divided by this (2.0: twice as fast).
    /// Absent: as fast as the pipeline and the spool take them.
    pub replay_speed: Option<f64>,
}

impl Default for CaptureSection {
    fn default() -> Self {
        let d = LiveConfig::default();
        CaptureSection {
            interfaces: Vec::new(),
            promiscuous: d.promiscuous,
            filter: FilterKind::AllIp,
            snap_len_bytes: d.snap_len,
            ring_bytes: d.ring_bytes,
            queue_frames: d.queue_frames,
            replay_files: Vec::new(),
            replay_speed: None,
        }
    }
}

/// The kernel-side capture filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterKind {
    #[default]
    AllIp,
    ConfiguredPorts,
}

/// `[decode]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeSection {
    /// TCP ports on which Modbus/TCP is recognised.
    pub modbus_ports: Vec<u16>,
    /// UDP ports whose datagrams are syslog messages.
    pub syslog_udp_ports: Vec<u16>,
    /// TCP ports on which syslog is recognised (TLS skipped).
    pub syslog_tcp_ports: Vec<u16>,
    /// Flows tracked at once; beyond it the least recently active end early (counted).
    pub max_flows: usize,
    /// Idle time after which a TCP connection ends.
    pub tcp_idle_timeout_seconds: u64,
    /// Idle time after which a UDP or ICMP conversation ends.
    pub udp_idle_timeout_seconds: u64,
    /// Out-of-order bytes held per TCP direction.
    pub max_stream_buffer_bytes: usize,
    /// Out-of-order bytes held across all connections.
    pub max_reassembly_bytes: usize,
    /// How long a Modbus request waits for its response.
    pub modbus_response_timeout_seconds: u64,
    /// Outstanding Modbus requests kept per connection.
    pub max_pending_requests: usize,
}

impl Default for DecodeSection {
    fn default() -> Self {
        let d = PipelineConfig::default();
        DecodeSection {
            modbus_ports: d.modbus_ports,
            syslog_udp_ports: d.syslog_udp_ports,
            syslog_tcp_ports: d.syslog_tcp_ports,
            max_flows: d.max_flows,
            tcp_idle_timeout_seconds: (d.tcp_idle_timeout_us / 1_000_000) as u64,
            udp_idle_timeout_seconds: (d.udp_idle_timeout_us / 1_000_000) as u64,
            max_stream_buffer_bytes: d.stream.max_held_bytes,
            max_reassembly_bytes: d.max_reassembly_bytes,
            modbus_response_timeout_seconds: (d.modbus.response_timeout_us / 1_000_000) as u64,
            max_pending_requests: d.modbus.max_pending,
        }
    }
}

/// `[output]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// JSON Lines file the events are appended to.
    pub events_file: PathBuf,
}

/// `[metrics]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Address of the Prometheus endpoint (`/metrics`). Absent: no endpoint.
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9102))),
        }
    }
}

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

/// Everything wrong with a configuration file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// The outcome of reading a file: `config` as [`parse_toml`] read it (with `problems`),
    /// checked by `validate` when it could be read, whose problems join the others. A key
    /// reported already is not reported twice, nor is a table holding one: it was judged
    /// without the entry taken out ("no listener" for a listener whose address is wrong).
    pub fn gather<T>(
        file: &Path,
        config: Option<T>,
        mut problems: Vec<Problem>,
        validate: impl FnOnce(&T) -> Result<(), ConfigError>,
    ) -> Result<T, ConfigError> {
        if let Some(Err(e)) = config.as_ref().map(validate) {
            let parsed = problems.len();
            for p in e.problems {
                let covered = problems.iter().take(parsed).any(|q| {
                    q.key
                        .strip_prefix(p.key.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
                });
                if !covered {
                    problems.push(p);
                }
            }
        }
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(ConfigError {
                file: file.to_owned(),
                problems,
            }),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} problem(s)",
            self.file.display(),
            self.problems.len()
        )?;
        for p in &self.problems {
            write!(f, "\n  {}: {}: {}", self.file.display(), p.key, p.reason)?;
        }
        Ok(())
    }
}

const MAX_TIMEOUT_SECONDS: u64 = 7 * 86_400;

impl AgentConfig {
    /// Reads and validates `path`: every problem at once, those of the TOML (syntax, types,
    /// unknown keys) and those of the values.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            problems: vec![Problem {
                key: "(file)".to_owned(),
                reason: format!("cannot read: {e}"),
            }],
        })?;
        let (config, problems) = parse_toml::<AgentConfig>(&text);
        ConfigError::gather(path, config, problems, |c| c.validate(path))
    }

    /// Every semantic problem at once.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, reason: &str| {
            problems.push(Problem {
                key: key.to_owned(),
                reason: reason.to_owned(),
            })
        };
        let c = &self.capture;
        if c.interfaces
            .iter()
            .any(|i| i.is_empty() || i.len() > 15 || i.contains('/'))
        {
            bad(
                "capture.interfaces",
                "an interface name must be 1 to 15 characters without '/'",
            );
        }
        if c.snap_len_bytes < 64 || c.snap_len_bytes > 262_144 {
            bad("capture.snap_len_bytes", "must be between 64 and 262144");
        }
        if c.ring_bytes < 512 * 1024 || c.ring_bytes > 1 << 30 {
            bad(
                "capture.ring_bytes",
                "must be between 524288 (512 KiB) and 1073741824 (1 GiB)",
            );
        }
        if c.queue_frames == 0 || c.queue_frames > 1_000_000 {
            bad("capture.queue_frames", "must be between 1 and 1000000");
        }
        for (n, f) in c.replay_files.iter().enumerate() {
            if let Err(e) = std::fs::File::open(f) {
                bad(
                    &format!("capture.replay_files[{n}]"),
                    &format!("{}: {e}", f.display()),
                );
            }
        }
        if c.replay_speed
            .is_some_and(|s| !(s.is_finite() && s > 0.0 && s <= 1e6))
        {
            bad(
                "capture.replay_speed",
                "must be a number above 0 (1.0 is the recorded pace) and at most 1000000",
            );
        }
        let d = &self.decode;
        if d.modbus_ports.contains(&0)
            || d.syslog_udp_ports.contains(&0)
            || d.syslog_tcp_ports.contains(&0)
        {
            bad("decode", "port 0 is not a port");
        }
        if d.modbus_ports
            .iter()
            .any(|p| d.syslog_tcp_ports.contains(p))
        {
            bad(
                "decode.modbus_ports",
                "a port cannot be both a Modbus and a syslog TCP port",
            );
        }
        if d.max_flows == 0 || d.max_flows > 10_000_000 {
            bad("decode.max_flows", "must be between 1 and 10000000");
        }
        for (key, v) in [
            (
                "decode.tcp_idle_timeout_seconds",
                d.tcp_idle_timeout_seconds,
            ),
            (
                "decode.udp_idle_timeout_seconds",
                d.udp_idle_timeout_seconds,
            ),
            (
                "decode.modbus_response_timeout_seconds",
                d.modbus_response_timeout_seconds,
            ),
        ] {
            if v == 0 || v > MAX_TIMEOUT_SECONDS {
                bad(key, "must be between 1 and 604800 (a week)");
            }
        }
        if d.max_stream_buffer_bytes < 4096 || d.max_stream_buffer_bytes > d.max_reassembly_bytes {
            bad(
                "decode.max_stream_buffer_bytes",
                "must be at least 4096 and at most decode.max_reassembly_bytes",
            );
        }
        if d.max_pending_requests == 0 || d.max_pending_requests > 65_536 {
            bad("decode.max_pending_requests", "must be between 1 and 65536");
        }
        if c.interfaces.is_empty() && c.replay_files.is_empty() && self.syslog_receivers.is_none() {
            bad(
                "capture.interfaces",
                "nothing to do: give an interface, capture.replay_files or a [syslog_receivers] section",
            );
        }
        if self.shipper.is_none() && self.output.is_none() {
            bad(
                "shipper",
                "events would go nowhere: configure [shipper] or [output]",
            );
        }
        if let Some(user) = &self.user
            && (user.is_empty() || user == "root")
        {
            bad("user", "must name an unprivileged user");
        }
        if let Some(r) = &self.syslog_receivers
            && let Err(e) = r.validate()
        {
            for reason in e.0 {
                problems.push(Problem {
                    key: "syslog_receivers".into(),
                    reason,
                });
            }
        }
        if let Some(s) = &self.shipper
            && let Err(e) = s.validate()
        {
            for p in e.0 {
                problems.push(Problem {
                    key: format!("shipper.{}", p.key),
                    reason: p.reason,
                });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                file: path.to_owned(),
                problems,
            })
        }
    }

    /// The pipeline settings of `[decode]`.
    pub fn pipeline(&self) -> PipelineConfig {
        let d = &self.decode;
        let mut p = PipelineConfig::default();
        let secs = |s: u64| i64::try_from(s.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
        p.modbus_ports = d.modbus_ports.clone();
        p.syslog_udp_ports = d.syslog_udp_ports.clone();
        p.syslog_tcp_ports = d.syslog_tcp_ports.clone();
        p.max_flows = d.max_flows;
        p.tcp_idle_timeout_us = secs(d.tcp_idle_timeout_seconds);
        p.udp_idle_timeout_us = secs(d.udp_idle_timeout_seconds);
        p.icmp_idle_timeout_us = secs(d.udp_idle_timeout_seconds);
        p.stream.max_held_bytes = d.max_stream_buffer_bytes;
        p.max_reassembly_bytes = d.max_reassembly_bytes;
        p.modbus.response_timeout_us = secs(d.modbus_response_timeout_seconds);
        p.modbus.max_pending = d.max_pending_requests;
        p
    }

    /// The live-capture settings of `[capture]`.
    pub fn live(&self) -> LiveConfig {
        let c = &self.capture;
        let filter = match c.filter {
            FilterKind::AllIp => CaptureFilter::AllIp,
            FilterKind::ConfiguredPorts => {
                let mut tcp = self.decode.modbus_ports.clone();
                tcp.extend(&self.decode.syslog_tcp_ports);
                CaptureFilter::Ports {
                    tcp,
                    udp: self.decode.syslog_udp_ports.clone(),
                }
            }
        };
        LiveConfig {
            interfaces: c.interfaces.clone(),
            promiscuous: c.promiscuous,
            filter,
            snap_len: c.snap_len_bytes,
            ring_bytes: c.ring_bytes,
            queue_frames: c.queue_frames,
        }
    }
}
