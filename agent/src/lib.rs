//! `mamori-agent`: passive capture, TCP reassembly and protocol decoding for Mamori.
#![forbid(unsafe_code)]

pub mod capture;
pub mod config;
pub mod daemon;
pub mod intake;
pub mod metrics;
pub mod pipeline;
pub mod proto;
pub mod replay;
pub mod ship;
pub mod tcp;
