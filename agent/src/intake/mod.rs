//! Network intake: the syslog receivers (UDP, TCP, TLS).
//!
//! - [`config`] owns the operator's keys ([`SyslogReceiverConfig`]) and their validation.
//! - [`syslog_server`] owns the listeners, the connection tasks and the way from a socket to
//!   the bounded event queue ([`SyslogReceivers`]).
//! - [`tls`] owns the TLS server configuration (RFC 5425, rustls with `ring`).
//! - [`queue`] owns the event queue, bounded in events and in bytes, and what an event costs.
//! - `connections` owns the table of open connections: the global and per-source bounds, and
//!   the eviction of idle connections when it is full.
//! - `udp_drops` reads the kernel's count of datagrams dropped on the UDP socket.
//! - [`stats`] owns the counters, the per-source table and its token buckets.
//!
//! Every message read is either delivered or dropped and counted with its reason; every queue,
//! table and buffer has a bound.

pub mod config;
mod connections;
pub mod queue;
mod shutdown;
pub mod stats;
pub mod syslog_server;
pub mod tls;
mod udp_drops;

pub use config::{ConfigErrors, SyslogReceiverConfig, WhenFull};
pub use queue::{SyslogQueue, event_memory_bytes};
pub use stats::{ReceiverStats, SourceCounts, SourceStats, SourcesSnapshot, Transport};
pub use syslog_server::{IntakeError, LocalAddrs, StatsReader, SyslogReceivers};
pub use tls::{TlsConfigError, load_tls_server_config};
