//! The simulator's one error type.

use std::io;

/// What can go wrong while the plant runs.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("writing the capture {path}: {source}")]
    Capture { path: String, source: io::Error },
    #[error("unknown scenario {0:?} (`mamori-sim list` shows the library)")]
    UnknownScenario(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("modbus: {0}")]
    Modbus(#[from] tokio_modbus::Error),
    #[error("modbus request timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("the plant is shut down")]
    ShutDown,
}
