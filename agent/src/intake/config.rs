//! Configuration of the syslog receivers, and its validation.
//!
//! Owns the keys an operator writes (`[syslog_receivers]` in the agent's configuration, or JSON)
//! and the rules they must follow. Validation is pure and gathers every problem before
//! reporting; files (TLS certificate and key) are only read when the receivers start.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// RFC 5426 §3.2: a receiver must accept UDP messages of up to 480 bytes (IPv4).
pub const MIN_MESSAGE_BYTES: usize = 480;
/// Above this a single message is not syslog but a transfer; it also bounds per-connection
/// memory (one framer buffer of this size per connection).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Default: what the parser accepts (RFC 5425 receivers SHOULD take 8 KiB; real senders more).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize =
    crate::proto::syslog::parser::DEFAULT_MAX_MESSAGE_BYTES;
/// Bound on the event queue, so that a typo cannot reserve gigabytes.
pub const MAX_QUEUE_CAPACITY_EVENTS: usize = 1_000_000;
/// Bound on the event queue's bytes (the queue counts them in 32 bits).
pub const MAX_QUEUE_BYTES: usize = 1024 * 1024 * 1024;
/// Default bytes of the event queue: a few hundred maximum-size messages, or tens of thousands
/// of ordinary ones, and a small part of the agent's 128 MiB (`MemoryMax` of the systemd unit).
pub const DEFAULT_QUEUE_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Bound on concurrent TCP + TLS connections (each may hold `max_message_bytes` of buffer).
pub const MAX_CONNECTIONS: usize = 65_536;
/// Bound on the per-source table.
pub const MAX_TRACKED_SOURCES: usize = 1_000_000;
/// Default `udp_receive_buffer_bytes`: a few seconds of a busy substation's syslog, or 64
/// messages of the largest size.
pub const DEFAULT_UDP_RECEIVE_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Bound on `udp_receive_buffer_bytes`.
pub const MAX_UDP_RECEIVE_BUFFER_BYTES: usize = 256 * 1024 * 1024;
/// A day: longer timeouts are a mistake, not a policy.
pub const MAX_TIMEOUT_SECONDS: u64 = 86_400;

/// What a receiver does with a message when the event queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Drop the message that does not fit, and count it (`dropped_queue_full_total`).
    #[default]
    DropNewest,
    /// TCP and TLS: stop reading the connection until there is room, so that TCP flow control
    /// pushes back on the sender. UDP cannot push back (blocking its socket only moves the
    /// loss into the kernel, where we cannot count it), so UDP drops newest under both policies.
    Block,
}

/// The syslog network receivers: which listeners, and the bounds they work within.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogReceiverConfig {
    /// Address of the UDP listener (RFC 5426), e.g. `0.0.0.0:514`. Absent: no UDP listener.
    pub udp_listen: Option<SocketAddr>,
    /// Address of the plain TCP listener (RFC 6587, LF or octet counting detected per
    /// connection), e.g. `0.0.0.0:601`. Absent: no TCP listener.
    pub tcp_listen: Option<SocketAddr>,
    /// Address of the TLS listener (RFC 5425), e.g. `0.0.0.0:6514`. Needs `tls_cert_file` and
    /// `tls_key_file`. Absent: no TLS listener.
    pub tls_listen: Option<SocketAddr>,
    /// PEM file with the server's certificate chain, leaf first.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1). Never logged.
    pub tls_key_file: Option<PathBuf>,
    /// PEM file with the CA certificates that sign client certificates. Present: mutual TLS,
    /// a client without a certificate from one of these CAs is refused (RFC 5425 §5.2).
    pub tls_client_ca_file: Option<PathBuf>,
    /// Longer messages are cut to this many bytes and flagged `truncated`. Also the size of
    /// each connection's framing buffer and of the UDP receive buffer.
    pub max_message_bytes: usize,
    /// Capacity of the event queue between the receivers and the consumer, in events.
    pub queue_capacity_events: usize,
    /// Capacity of the same queue in bytes: the memory its events take (their text, fields
    /// and structured data as held in memory, not their size on the wire). A message that
    /// does not fit is handled like one that finds the queue full in events. At least twice
    /// `max_message_bytes`.
    pub queue_max_bytes: usize,
    /// What to do with a message when the queue is full.
    pub when_full: WhenFull,
    /// Concurrent TCP and TLS connections (together). When they are all open, a new one takes
    /// the place of the connection idle longest, if that one has been idle at least
    /// `evict_idle_after_seconds` (counted as evicted); otherwise the new one is closed at once
    /// (counted as refused).
    pub max_connections: usize,
    /// Concurrent TCP and TLS connections from one source address (no more than
    /// `max_connections` in effect); further ones are closed at once (counted as refused), so
    /// one address cannot take every place.
    pub max_connections_per_source: usize,
    /// How long a connection must have gone without completing a message before a newcomer
    /// may take its place when `max_connections` are open.
    pub evict_idle_after_seconds: u64,
    /// A TCP or TLS connection that completes no message for this long is closed (idle
    /// senders, and slow-loris senders that trickle a message byte by byte).
    pub idle_timeout_seconds: u64,
    /// Time a TLS client has to complete its handshake.
    pub tls_handshake_timeout_seconds: u64,
    /// Messages per second one source IP may send (token bucket). Absent: no limit. Messages
    /// above it are dropped and counted (`dropped_rate_limited_total`).
    pub per_source_rate_limit_per_second: Option<u32>,
    /// Messages a source may send at once above its rate (the bucket's size). Absent: one
    /// second's worth of the rate.
    pub per_source_burst_messages: Option<u32>,
    /// Sources (IP addresses) accounted and rate-limited one by one. When the table is full,
    /// further sources share one `other` entry (and one token bucket).
    pub max_tracked_sources: usize,
    /// Receive buffer of the UDP socket (`SO_RCVBUF`), what absorbs a burst while the
    /// listener catches up; beyond it the kernel drops datagrams (counted in
    /// `mamori_agent_syslog_kernel_drops_total`). The kernel caps it at `net.core.rmem_max`
    /// unless the agent starts with `CAP_NET_ADMIN` or as root; the size in effect is logged.
    /// 0: the system's default.
    pub udp_receive_buffer_bytes: usize,
}

impl Default for SyslogReceiverConfig {
    fn default() -> Self {
        SyslogReceiverConfig {
            udp_listen: None,
            tcp_listen: None,
            tls_listen: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            queue_capacity_events: 10_000,
            queue_max_bytes: DEFAULT_QUEUE_MAX_BYTES,
            when_full: WhenFull::DropNewest,
            max_connections: 256,
            max_connections_per_source: 32,
            evict_idle_after_seconds: 5,
            idle_timeout_seconds: 300,
            tls_handshake_timeout_seconds: 10,
            per_source_rate_limit_per_second: None,
            per_source_burst_messages: None,
            max_tracked_sources: 1024,
            udp_receive_buffer_bytes: DEFAULT_UDP_RECEIVE_BUFFER_BYTES,
        }
    }
}

/// Every problem found in a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.join("; "))
    }
}

impl std::error::Error for ConfigErrors {}

impl SyslogReceiverConfig {
    /// Checks every rule and reports every violation at once.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let mut err = |s: String| errors.push(s);

        if self.udp_listen.is_none() && self.tcp_listen.is_none() && self.tls_listen.is_none() {
            err("no listener: set udp_listen, tcp_listen or tls_listen".into());
        }
        if let (Some(tcp), Some(tls)) = (self.tcp_listen, self.tls_listen)
            && tcp == tls
            && tcp.port() != 0
        {
            err(format!("tcp_listen and tls_listen are both {tcp}"));
        }
        if self.tls_listen.is_some() {
            if self.tls_cert_file.is_none() {
                err("tls_listen needs tls_cert_file".into());
            }
            if self.tls_key_file.is_none() {
                err("tls_listen needs tls_key_file".into());
            }
        } else {
            for (key, set) in [
                ("tls_cert_file", self.tls_cert_file.is_some()),
                ("tls_key_file", self.tls_key_file.is_some()),
                ("tls_client_ca_file", self.tls_client_ca_file.is_some()),
            ] {
                if set {
                    err(format!("{key} is set but tls_listen is not"));
                }
            }
        }
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            err(format!(
                "max_message_bytes must be {MIN_MESSAGE_BYTES} to {MAX_MESSAGE_BYTES}, not {}",
                self.max_message_bytes
            ));
        }
        if !(1..=MAX_QUEUE_CAPACITY_EVENTS).contains(&self.queue_capacity_events) {
            err(format!(
                "queue_capacity_events must be 1 to {MAX_QUEUE_CAPACITY_EVENTS}, not {}",
                self.queue_capacity_events
            ));
        }
        let min_queue_bytes = self.max_message_bytes.saturating_mul(2);
        if !(min_queue_bytes..=MAX_QUEUE_BYTES).contains(&self.queue_max_bytes) {
            err(format!(
                "queue_max_bytes must be twice max_message_bytes ({min_queue_bytes}) to \
                 {MAX_QUEUE_BYTES}, not {}",
                self.queue_max_bytes
            ));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            err(format!(
                "max_connections must be 1 to {MAX_CONNECTIONS}, not {}",
                self.max_connections
            ));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections_per_source) {
            err(format!(
                "max_connections_per_source must be 1 to {MAX_CONNECTIONS}, not {}",
                self.max_connections_per_source
            ));
        }
        for (key, v) in [
            ("idle_timeout_seconds", self.idle_timeout_seconds),
            ("evict_idle_after_seconds", self.evict_idle_after_seconds),
            (
                "tls_handshake_timeout_seconds",
                self.tls_handshake_timeout_seconds,
            ),
        ] {
            if !(1..=MAX_TIMEOUT_SECONDS).contains(&v) {
                err(format!("{key} must be 1 to {MAX_TIMEOUT_SECONDS}, not {v}"));
            }
        }
        if self.per_source_rate_limit_per_second == Some(0) {
            err(
                "per_source_rate_limit_per_second must be at least 1 (omit it for no limit)".into(),
            );
        }
        match (
            self.per_source_rate_limit_per_second,
            self.per_source_burst_messages,
        ) {
            (None, Some(_)) => err(
                "per_source_burst_messages is set but per_source_rate_limit_per_second is not"
                    .into(),
            ),
            (_, Some(0)) => err("per_source_burst_messages must be at least 1".into()),
            _ => {}
        }
        if !(1..=MAX_TRACKED_SOURCES).contains(&self.max_tracked_sources) {
            err(format!(
                "max_tracked_sources must be 1 to {MAX_TRACKED_SOURCES}, not {}",
                self.max_tracked_sources
            ));
        }
        if self.udp_receive_buffer_bytes > MAX_UDP_RECEIVE_BUFFER_BYTES {
            err(format!(
                "udp_receive_buffer_bytes must be at most {MAX_UDP_RECEIVE_BUFFER_BYTES} (0: the system's default), not {}",
                self.udp_receive_buffer_bytes
            ));
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_units_parse_and_unknown_keys_are_refused() {
        let c: SyslogReceiverConfig = serde_json::from_str(
            r#"{"udp_listen": "127.0.0.1:5514", "queue_capacity_events": 64,
                "when_full": "block", "per_source_rate_limit_per_second": 100}"#,
        )
        .unwrap();
        assert_eq!(c.udp_listen, Some("127.0.0.1:5514".parse().unwrap()));
        assert_eq!(c.queue_capacity_events, 64);
        assert_eq!(c.when_full, WhenFull::Block);
        assert_eq!(c.idle_timeout_seconds, 300, "defaults fill the rest");
        c.validate().unwrap();

        let e = serde_json::from_str::<SyslogReceiverConfig>(r#"{"queue_capacity": 64}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn validation_reports_every_problem_at_once() {
        let c = SyslogReceiverConfig {
            tls_key_file: Some("k.pem".into()),
            max_message_bytes: 10,
            queue_capacity_events: 0,
            queue_max_bytes: 2 * MAX_QUEUE_BYTES,
            max_connections: 0,
            max_connections_per_source: 0,
            idle_timeout_seconds: 0,
            evict_idle_after_seconds: 0,
            per_source_burst_messages: Some(5),
            max_tracked_sources: 0,
            udp_receive_buffer_bytes: usize::MAX,
            ..SyslogReceiverConfig::default()
        };
        let errors = c.validate().unwrap_err().0;
        let expected = [
            "no listener",
            "tls_key_file is set",
            "max_message_bytes",
            "queue_capacity_events",
            "queue_max_bytes",
            "max_connections",
            "max_connections_per_source",
            "idle_timeout_seconds",
            "evict_idle_after_seconds",
            "per_source_burst_messages is set",
            "max_tracked_sources",
            "udp_receive_buffer_bytes",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (e, want) in errors.iter().zip(expected) {
            assert!(e.contains(want), "{e:?} should mention {want:?}");
        }
    }

    #[test]
    fn tls_listener_needs_its_files() {
        let c = SyslogReceiverConfig {
            tls_listen: Some("127.0.0.1:6514".parse().unwrap()),
            ..SyslogReceiverConfig::default()
        };
        let errors = c.validate().unwrap_err().0;
        assert_eq!(errors.len(), 2, "{errors:#?}");
    }
}
