//! The shipping protocol between the agent and the collector (`docs/shipping.md`), defined once:
//! the path and headers of a batch request, the caps both sides hold a batch to, the
//! acknowledgement, and the batch body (gzip of JSON Lines of [`Event`]s) with its one encoder
//! and one decoder. The agent, the collector's intake and its store all use these.
//!
//! Pure: no sockets, no files, no clock. Decoding never fails on a line: a line that is not an
//! event comes back as a [`RejectedLine`] beside the events that are, so that one bad event
//! cannot make a receiver refuse the batch around it.
#![forbid(unsafe_code)]

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use mamori_models::Event;
use serde::{Deserialize, Serialize};

/// Where batches are posted.
pub const BATCHES_PATH: &str = "/v1/batches";
/// The agent id (must be a DNS name of the client certificate).
pub const AGENT_HEADER: &str = "mamori-agent";
/// The spool's identity: random, made when the agent's spool is created. With the sequence it
/// names a batch; a new one means the agent's numbering started again (spool lost or wiped).
pub const SPOOL_ID_HEADER: &str = "mamori-spool-id";
/// The batch's sequence number within its spool.
pub const SEQUENCE_HEADER: &str = "mamori-sequence";
/// Events in the batch.
pub const EVENT_COUNT_HEADER: &str = "mamori-event-count";
/// When the batch's first event was taken, Unix milliseconds.
pub const CREATED_HEADER: &str = "mamori-batch-created-unix-ms";
/// The body's media type (before `Content-Encoding`).
pub const CONTENT_TYPE: &str = "application/x-ndjson";
/// The body's `Content-Encoding`.
pub const CONTENT_ENCODING: &str = "gzip";

/// Cap on a compressed body, spooled or received.
pub const MAX_BODY_BYTES: u32 = 64 * 1024 * 1024;
/// Cap on a decompressed body (a gzip bomb stops here).
pub const MAX_DECOMPRESSED_BYTES: u64 = 256 * 1024 * 1024;
/// The largest batch an agent makes, in bytes of JSON Lines before compression; a collector
/// takes at least this much by default (`max_decompressed_bytes`), so an agent's batch never
/// meets a refusal for its size from a collector with default limits.
pub const MAX_BATCH_JSONL_BYTES: u32 = 32 * 1024 * 1024;
/// Longest spool id accepted.
pub const MAX_SPOOL_ID_BYTES: usize = 64;
/// How much of a rejected line is kept to show an operator what arrived.
pub const MAX_REJECTED_LINE_BYTES: usize = 4096;

/// Why a body cannot be read at all (a line that is not an event is not one of these).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the body decompresses to more than {cap} bytes")]
    TooLarge { cap: u64 },
    #[error("gzip: {0}")]
    Gzip(#[source] std::io::Error),
    #[error("the gzip trailer says {claimed} bytes, the body holds more")]
    SizeMismatch { claimed: u64 },
    #[error("encoding an event: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The collector's answer to a stored batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The sequence stored (now, or before when `duplicate`).
    pub acked: u64,
    pub duplicate: bool,
    /// Lines of the batch that were not events: kept aside by the collector with the reason
    /// (`/api/v1/quarantine`), not stored as events. The batch is acknowledged all the same.
    #[serde(default)]
    pub quarantined: u64,
}

/// Is `id` a spool id a collector accepts: 1 to [`MAX_SPOOL_ID_BYTES`] of `[0-9a-z-]`.
pub fn valid_spool_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SPOOL_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
}

/// Compresses JSON Lines (complete lines, each ending in `\n`) into a batch body.
pub fn compress_jsonl(jsonl: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut gz = GzEncoder::new(Vec::with_capacity(jsonl.len() / 4), Compression::fast());
    gz.write_all(jsonl).map_err(WireError::Gzip)?;
    gz.finish().map_err(WireError::Gzip)
}

/// The body of `events`: gzip of one JSON line each.
pub fn encode_body(events: &[Event]) -> Result<Vec<u8>, WireError> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    for e in events {
        serde_json::to_writer(&mut gz, e)?;
        gz.write_all(b"\n").map_err(WireError::Gzip)?;
    }
    gz.finish().map_err(WireError::Gzip)
}

/// The decompressed size a gzip body claims in its trailer (ISIZE, RFC 1952 §2.3.1: the size
/// modulo 2^32 of its last member). Free to read, so a receiver can reserve memory before
/// decompressing; [`decompress`] holds the body to it.
pub fn claimed_size(body: &[u8]) -> Option<u64> {
    let trailer = body.len().checked_sub(4).and_then(|at| body.get(at..))?;
    let bytes: [u8; 4] = trailer.try_into().ok()?;
    (body.len() >= 18).then(|| u64::from(u32::from_le_bytes(bytes)))
}

/// Decompresses `body`, stopping at `cap` bytes ([`WireError::TooLarge`] beyond it).
pub fn decompress(body: &[u8], cap: u64) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    GzDecoder::new(body)
        .take(cap.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(WireError::Gzip)?;
    if out.len() as u64 > cap {
        return Err(WireError::TooLarge { cap });
    }
    Ok(out)
}

/// A line of a body that is not an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedLine {
    /// Its line number, from 1.
    pub line: u64,
    /// Why it is not an event (the JSON parser's message).
    pub reason: String,
    /// Its length in bytes.
    pub bytes: u64,
    /// Its first [`MAX_REJECTED_LINE_BYTES`] bytes, as lossy UTF-8.
    pub text: String,
}

/// What a body holds: its events in order, and the lines that were not events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decoded {
    pub events: Vec<Event>,
    pub rejected: Vec<RejectedLine>,
}

/// Lines that are not empty: what [`decode_lines`] will return, events and rejected lines
/// together (a receiver can reserve memory for them before decoding).
pub fn count_lines(jsonl: &[u8]) -> u64 {
    jsonl
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64
}

/// Splits decompressed JSON Lines into events and rejected lines. Empty lines are skipped.
pub fn decode_lines(jsonl: &[u8]) -> Decoded {
    let lines = usize::try_from(count_lines(jsonl)).unwrap_or(0);
    let mut out = Decoded {
        events: Vec::with_capacity(lines),
        rejected: Vec::new(),
    };
    for (n, line) in jsonl.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match Event::from_json_slice(line) {
            Ok(e) => out.events.push(e),
            Err(e) => {
                let kept = line.get(..MAX_REJECTED_LINE_BYTES).unwrap_or(line);
                out.rejected.push(RejectedLine {
                    line: n as u64 + 1,
                    reason: e.to_string(),
                    bytes: line.len() as u64,
                    text: String::from_utf8_lossy(kept).into_owned(),
                });
            }
        }
    }
    out
}

/// Decompresses `body` (at most `cap` bytes) and splits it into events and rejected lines.
pub fn decode_body(body: &[u8], cap: u64) -> Result<Decoded, WireError> {
    decompress(body, cap).map(|jsonl| decode_lines(&jsonl))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SYSLOG: &str = r#"{"type":"syslog","ts":"2024-01-01T00:00:00.000000Z","received_ts":"2024-01-01T00:00:00.000000Z","format":"rfc3164","msg":"x","anomalies":[]}"#;

    #[test]
    fn a_bad_line_is_set_aside_and_the_rest_decoded() {
        let body = format!(
            "{SYSLOG}\n{}\n\n{SYSLOG}\nnot json\n",
            SYSLOG.replace(
                "2024-01-01T00:00:00.000000Z\",\"received",
                "+10000-01-01T11:59:59Z\",\"received"
            )
        );
        let gz = compress_jsonl(body.as_bytes()).unwrap();
        let d = decode_body(&gz, 1 << 20).unwrap();
        assert_eq!(d.events.len(), 2);
        assert_eq!(
            d.rejected.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![2, 5]
        );
        assert!(
            d.rejected[0].reason.contains("RFC 3339"),
            "{}",
            d.rejected[0].reason
        );
        assert_eq!(d.rejected[1].text, "not json");
    }

    #[test]
    fn encode_then_decode_is_the_identity() {
        let e = Event::from_json_slice(SYSLOG.as_bytes()).unwrap();
        let events = vec![e.clone(), e];
        let body = encode_body(&events).unwrap();
        assert_eq!(claimed_size(&body), Some(2 * (SYSLOG.len() as u64 + 1)));
        let d = decode_body(&body, 1 << 20).unwrap();
        assert_eq!(d.events, events);
        assert!(d.rejected.is_empty());
    }

    #[test]
    fn a_bomb_stops_at_the_cap_and_garbage_is_a_gzip_error() {
        let body = compress_jsonl(&vec![b' '; 1 << 20]).unwrap();
        assert!(matches!(
            decode_body(&body, 1000),
            Err(WireError::TooLarge { cap: 1000 })
        ));
        assert!(matches!(
            decode_body(b"nope", 1000),
            Err(WireError::Gzip(_))
        ));
        assert_eq!(claimed_size(b"short"), None);
    }

    #[test]
    fn spool_ids() {
        assert!(valid_spool_id("3f2a9c-01"));
        for bad in ["", "A", "a b", "a/b", &"a".repeat(65)] {
            assert!(!valid_spool_id(bad), "{bad}");
        }
    }

    #[test]
    fn an_ack_without_quarantined_parses() {
        let a: Ack = serde_json::from_str(r#"{"acked":3,"duplicate":false}"#).unwrap();
        assert_eq!(a.quarantined, 0);
    }

    proptest! {
        #[test]
        fn decoding_any_lines_never_panics(lines in proptest::collection::vec(".{0,80}", 0..20)) {
            let jsonl = lines.join("\n");
            let d = decode_lines(jsonl.as_bytes());
            let nonempty = lines.iter().filter(|l| !l.is_empty()).count();
            prop_assert_eq!(d.events.len() + d.rejected.len(), nonempty);
            prop_assert_eq!(count_lines(jsonl.as_bytes()), nonempty as u64);
        }
    }
}
