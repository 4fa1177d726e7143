//! `mamori-sim`: a simulated OT plant for demos, drills and end-to-end tests. Real Modbus/TCP
//! servers (`tokio-modbus`) on loopback play the PLCs and RTUs ([`plc`]) over small process
//! models ([`process`]); an HMI polls them on fixed cycles and an operator adjusts set-points
//! ([`hmi`]); network devices log to syslog ([`syslog`]); a library of attack and fault
//! scenarios ([`scenario`]) is laid over that traffic. Everything is observed through an
//! in-process [`tap`] that turns it into Ethernet frames with the simulated addresses and hands
//! them to a [`sink::FrameSink`] (a pcap file, or a channel into the agent's pipeline): no root,
//! no capture device.
//!
//! On top of it, [`demo`] and [`drill`] run a whole deployment in-process ([`local`]: a
//! throwaway [`pki`], the agent's pipeline and shipper in [`feed`], a real collector) or, for a
//! drill, ship to a running collector and read its API and Alertmanager ([`http`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), mamori_sim::SimError> {
//! use mamori_sim::{ChannelSink, Plant, PlantConfig};
//! let (sink, mut frames) = ChannelSink::bounded(65_536);
//! let plant = Plant::start(PlantConfig::default(), Box::new(sink)).await?;
//! tokio::spawn(async move {
//!     while let Some((ts, frame)) = frames.recv().await {
//!         // feed the agent pipeline: RawPacket { ts, link_type: Ethernet, data: &frame, .. }
//!         let _ = (ts, frame);
//!     }
//! });
//! plant.idle(std::time::Duration::from_secs(60)).await;
//! let record = plant.run_scenario("force_listen_only", None).await?;
//! eprintln!("{} from {} to {}", record.name, record.start, record.end);
//! plant.shutdown().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod client;
pub mod demo;
pub mod drill;
pub mod error;
pub mod feed;
pub mod frames;
pub mod hmi;
pub mod http;
pub mod local;
pub mod pki;
pub mod plant;
pub mod plc;
pub mod process;
pub mod rng;
pub mod scenario;
pub mod sink;
pub mod syslog;
pub mod tap;

pub use error::SimError;
pub use plant::{Plant, PlantConfig, RunEvent, RunOptions};
pub use scenario::{LIBRARY, ScenarioRecord, ScenarioSpec};
pub use sink::{ChannelSink, FrameSink, MemorySink, PcapFileSink, TappedFrame, TeeSink};
pub use tap::{Tap, TapStats};

/// The plant's hosts other than the devices (those are in [`plc::default_plcs`]).
pub mod hosts {
    use std::net::Ipv4Addr;

    use crate::syslog::SyslogHost;

    /// The HMI: polls every device, carries the operator's writes.
    pub const HMI: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 10);
    /// The engineering workstation: device identification reads, programming.
    pub const ENG_WS: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 12);
    /// Where syslog goes.
    pub const SYSLOG_SERVER: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 5);
    /// The OT switch (logs).
    pub const SWITCH: SyslogHost = SyslogHost {
        name: "sw-ot-1",
        ip: Ipv4Addr::new(10, 20, 0, 41),
    };
    /// The feeder RTU also logs.
    pub const RTU: SyslogHost = SyslogHost {
        name: "rtu-feeder-1",
        ip: Ipv4Addr::new(10, 20, 0, 22),
    };
    /// A host that appears only in scenarios: scans.
    pub const SCANNER: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 66);
    /// A host that appears only in scenarios: writes and diagnostics.
    pub const ROGUE: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 77);
}
