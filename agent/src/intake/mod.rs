//! Network intake: the syslog receivers (UDP, TCP, TLS).
//!
//! - [`config`] owns the operator's keys ([`SyslogReceiverConfig`]) and their validation.
//! - [`syslog_server`] owns the listeners, the connection tasks and the way from a socket to
//!   the bounded event queue ([`SyslogReceivers`]).
//! - [`tls`] owns the TLS server configuration (RFC 5425, rustls with `ring`).
//! - [`stats`] owns the counters, the per-source table and its token buckets.
//!
//! Every message read is either delivered or dropped and counted with its reason; every queue,
//! table and buffer has a bound.

pub mod config;
mod shutdown;
pub mod stats;
pub mod syslog_server;
pub mod tls;

pub use config::{ConfigErrors, SyslogReceiverConfig, WhenFull};
pub use stats::{
    MetricName, MetricSample, ReceiverStats, SourceCounts, SourceStats, SourcesSnapshot, Transport,
};
pub use syslog_server::{IntakeError, LocalAddrs, StatsReader, SyslogReceivers};
pub use tls::{TlsConfigError, load_tls_server_config};
