//! Modbus/TCP: the pure nom parser (`parser`), names from the specification and Zeek
//! (`names`), and the per-connection framing and transaction pairing (`session`).

pub mod names;
pub mod parser;
pub mod session;

pub use session::{Direction, ModbusSession, SessionCounters, SessionLimits, Verdict};

/// The registered Modbus/TCP port.
pub const MODBUS_TCP_PORT: u16 = 502;
