//! Syslog: parser, framing and the `parse-syslog` command.
//!
//! - [`parser`] owns the pure decoding of one message (RFC 5424, RFC 3164 and the real-world
//!   variants of the BSD format) into a [`mamori_models::SyslogEvent`].
//! - [`framing`] owns the stream layer: splitting a TCP byte stream into messages (LF-delimited
//!   or RFC 6587 octet counting). Over UDP a datagram is one message (RFC 5426): no framer is
//!   needed, the payload goes straight to [`parse_syslog`].
//! - [`cli`] owns the `mamori-agent parse-syslog` command (stdin to JSON lines).

pub mod cli;
pub mod framing;
pub mod parser;

pub use framing::{Frame, FramerStats, Framing, StreamFramer};
pub use parser::{
    MISSING_PRIVAL, ParseOptions, SyslogError, SyslogRecord, TagRule, parse_syslog,
    parse_syslog_frame, parse_syslog_record, probe_syslog,
};
