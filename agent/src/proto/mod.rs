//! One folder per protocol: the pure nom parser apart from the stateful stream layer.

pub mod modbus;
pub mod syslog;
