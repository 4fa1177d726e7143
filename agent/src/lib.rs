//! `mamori-agent`: passive capture, TCP reassembly and protocol decoding for Mamori.
#![forbid(unsafe_code)]

pub mod proto;
