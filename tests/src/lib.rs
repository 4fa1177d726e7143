//! Shared helpers for the end-to-end tests: synthetic captures ([`pcapgen`]), a Modbus/TCP
//! plant served by `tokio-modbus` ([`modbus_plant`]), a recording proxy ([`recorder`]) and the
//! golden Modbus session with its truth ([`modbus_script`]), reconnaissance captures
//! ([`modbus_recon`]), and real Prometheus and
//! Alertmanager servers ([`services`]).
#![forbid(unsafe_code)]

pub mod evaluation;
pub mod events;
pub mod modbus_plant;
pub mod modbus_recon;
pub mod modbus_script;
pub mod pcapgen;
pub mod plants;
pub mod recorder;
pub mod scenario;
pub mod scenario_syslog;
pub mod services;
