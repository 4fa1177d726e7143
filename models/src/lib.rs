//! `mamori-models`: the event schema shared by Mamori's agent and collector, and the
//! baseline-learned anomaly models. Pure and deterministic: no I/O, no async.
#![forbid(unsafe_code)]

pub mod detect;
pub mod event;
pub mod templates;
pub mod time;

pub use event::{
    Anomaly, DeviceIdObject, Event, FileRecord, FlowEvent, ModbusEvent, ModbusPdu, SCHEMA_VERSION,
    SyslogEvent, SyslogFormat, Transport, Values,
};
pub use time::Timestamp;
