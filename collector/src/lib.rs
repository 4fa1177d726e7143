//! `mamori-collector` as a library: the batch intake server (`intake`), its configuration,
//! its counters and their Prometheus export (`metrics`), online detection per site
//! (`detection`), and the storage behind it (`store`); who gets a connection on the intake
//! before authenticating (`admission`) and whether the process's open-file limit fits the
//! configured caps (`descriptors`); the audit trail of operators' changes to the baselines
//! (`audit`) and the API client behind the `normal`, `relearn` and `audit` commands
//! (`client`); offline detection as `analyze` runs it (`offline`). The binary's `serve` and
//! `check-config` subcommands are thin calls into [`serve`]. How it fits together:
//! `docs/collector.md`.
#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod audit;
mod budget;
pub mod client;
pub mod config;
pub mod descriptors;
pub mod detection;
pub mod export;
pub mod incident;
pub mod incidents;
pub mod intake;
pub mod inventory;
pub mod lockout;
pub mod metrics;
pub mod notify;
pub mod offline;
pub mod serve;
pub mod stats;
pub mod store;

pub use config::{CollectorConfig, ConfigError};
pub use intake::{Collector, IntakeError};
pub use stats::{IntakeStats, IntakeStatsSnapshot, RefusalReason};
pub use store::sqlite::SqliteStore;
pub use store::{Continuity, IncomingBatch, Store, StoreError, StoreHandle, Stored};
