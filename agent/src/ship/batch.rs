//! The batch: the unit the agent spools, ships, and the collector acknowledges.
//!
//! A batch is a header (agent id, sequence number, event count, creation time) and a body of
//! JSON Lines of [`mamori_models::Event`], gzip-compressed. On disk and nowhere else it is
//! framed as below; on the wire the body travels as the HTTP body and the header as HTTP
//! headers (`docs/shipping.md`).
//!
//! ```text
//! offset  size  field
//!      0     4  magic "MMRB"
//!      4     2  format version, big endian (BATCH_FORMAT_VERSION)
//!      6     4  header length H, big endian (at most MAX_HEADER_BYTES)
//!     10     4  body length B, big endian (at most MAX_BODY_BYTES)
//!     14     4  CRC-32 (IEEE) of the H + B bytes that follow
//!     18     H  header, JSON (BatchHeader)
//!   18+H     B  body, gzip of JSON Lines
//! ```
//!
//! The lengths make a truncated file detectable, the checksum a torn or corrupted one.

use std::time::{Duration, Instant};

pub use mamori_wire::{CONTENT_ENCODING, MAX_BODY_BYTES, MAX_DECOMPRESSED_BYTES};
use serde::{Deserialize, Serialize};

use super::ShipError;

/// Version of the on-disk framing and of the header's fields.
pub const BATCH_FORMAT_VERSION: u16 = 1;
/// Cap on the JSON header of a spooled batch.
pub const MAX_HEADER_BYTES: u32 = 4 * 1024;

const MAGIC: [u8; 4] = *b"MMRB";
const PREFIX_LEN: usize = 18;

/// What a batch says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchHeader {
    /// The agent that produced it (the DNS name in its certificate).
    pub agent_id: String,
    /// Per agent, strictly increasing, never reused (gaps are possible: a batch dropped at the
    /// full spool, or a number reserved by a batch that was open when the agent crashed and
    /// held no complete event).
    pub sequence: u64,
    /// Events in the body.
    pub event_count: u32,
    /// When the first event entered the batch, Unix time in milliseconds.
    pub created_unix_ms: u64,
}

/// A sealed batch: header and compressed body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub header: BatchHeader,
    /// gzip of JSON Lines, one [`Event`] per line.
    pub body: Vec<u8>,
}

/// Why stored bytes are not a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CorruptBatch {
    #[error("shorter than its framing says (truncated)")]
    Truncated,
    #[error("bytes after the end of the batch")]
    TrailingBytes,
    #[error("not a batch file (bad magic)")]
    BadMagic,
    #[error("unknown format version")]
    UnknownVersion,
    #[error("a length above its cap")]
    LengthOverCap,
    #[error("checksum mismatch")]
    ChecksumMismatch,
    #[error("header is not valid JSON")]
    BadHeader,
}

impl Batch {
    /// Compresses `jsonl` (complete lines, each ending in `\n`) into a batch.
    pub fn seal(header: BatchHeader, jsonl: &[u8]) -> Result<Batch, ShipError> {
        let body = mamori_wire::compress_jsonl(jsonl)?;
        Ok(Batch { header, body })
    }

    /// The framed bytes written to the spool.
    pub fn encode(&self) -> Result<Vec<u8>, ShipError> {
        let header =
            serde_json::to_vec(&self.header).map_err(|e| ShipError::Encode(e.to_string()))?;
        let header_len = u32::try_from(header.len())
            .ok()
            .filter(|&n| n <= MAX_HEADER_BYTES)
            .ok_or_else(|| ShipError::Encode("batch header over its cap".into()))?;
        let body_len = u32::try_from(self.body.len())
            .ok()
            .filter(|&n| n <= MAX_BODY_BYTES)
            .ok_or_else(|| ShipError::Encode("batch body over its cap".into()))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.update(&self.body);
        let mut out = Vec::with_capacity(PREFIX_LEN + header.len() + self.body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&BATCH_FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&header_len.to_be_bytes());
        out.extend_from_slice(&body_len.to_be_bytes());
        out.extend_from_slice(&crc.finalize().to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.body);
        Ok(out)
    }

    /// Checks and splits framed bytes (check lengths and checksum first, then parse).
    pub fn decode(bytes: &[u8]) -> Result<Batch, CorruptBatch> {
        let (prefix, rest) = bytes
            .split_first_chunk::<PREFIX_LEN>()
            .ok_or(CorruptBatch::Truncated)?;
        let (magic, p) = prefix
            .split_first_chunk::<4>()
            .ok_or(CorruptBatch::Truncated)?;
        if *magic != MAGIC {
            return Err(CorruptBatch::BadMagic);
        }
        let (version, p) = p.split_first_chunk::<2>().ok_or(CorruptBatch::Truncated)?;
        if u16::from_be_bytes(*version) != BATCH_FORMAT_VERSION {
            return Err(CorruptBatch::UnknownVersion);
        }
        let (header_len, p) = p.split_first_chunk::<4>().ok_or(CorruptBatch::Truncated)?;
        let (body_len, p) = p.split_first_chunk::<4>().ok_or(CorruptBatch::Truncated)?;
        let (crc, _) = p.split_first_chunk::<4>().ok_or(CorruptBatch::Truncated)?;
        let header_len = u32::from_be_bytes(*header_len);
        let body_len = u32::from_be_bytes(*body_len);
        if header_len > MAX_HEADER_BYTES || body_len > MAX_BODY_BYTES {
            return Err(CorruptBatch::LengthOverCap);
        }
        // Both are capped far below usize::MAX, so the sum cannot overflow.
        let (header_len, body_len) = (header_len as usize, body_len as usize);
        let total = header_len + body_len;
        if rest.len() < total {
            return Err(CorruptBatch::Truncated);
        }
        if rest.len() > total {
            return Err(CorruptBatch::TrailingBytes);
        }
        if crc32fast::hash(rest) != u32::from_be_bytes(*crc) {
            return Err(CorruptBatch::ChecksumMismatch);
        }
        let (header, body) = rest.split_at(header_len);
        let header: BatchHeader =
            serde_json::from_slice(header).map_err(|_| CorruptBatch::BadHeader)?;
        Ok(Batch {
            header,
            body: body.to_vec(),
        })
    }
}

/// When a batch closes: at `max_events`, at `max_bytes` of JSON Lines, or `max_age` after
/// its first event, whichever comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_events: u32,
    pub max_bytes: usize,
    pub max_age: Duration,
}

/// The batch being filled: uncompressed JSON Lines in memory (and in the spool's journal).
#[derive(Debug)]
pub struct OpenBatch {
    pub sequence: u64,
    pub created_unix_ms: u64,
    opened: Instant,
    events: u32,
    jsonl: Vec<u8>,
}

impl OpenBatch {
    pub fn new(sequence: u64, created_unix_ms: u64, opened: Instant) -> OpenBatch {
        OpenBatch {
            sequence,
            created_unix_ms,
            opened,
            events: 0,
            jsonl: Vec::new(),
        }
    }

    /// Adds one complete line (ending in `\n`).
    pub fn push_line(&mut self, line: &[u8]) {
        self.jsonl.extend_from_slice(line);
        self.events = self.events.saturating_add(1);
    }

    pub fn events(&self) -> u32 {
        self.events
    }

    pub fn jsonl(&self) -> &[u8] {
        &self.jsonl
    }

    /// Whether a line of `line_len` bytes must go to the next batch instead: this one has
    /// events and the line would take it past the byte limit. (A single event larger than
    /// the limit still gets a batch of its own: events are never split.)
    pub fn would_overflow(&self, line_len: usize, limits: &BatchLimits) -> bool {
        self.events > 0 && self.jsonl.len().saturating_add(line_len) > limits.max_bytes
    }

    /// Full by count or size: seal now.
    pub fn is_full(&self, limits: &BatchLimits) -> bool {
        self.events >= limits.max_events || self.jsonl.len() >= limits.max_bytes
    }

    /// When age will close it.
    pub fn deadline(&self, limits: &BatchLimits) -> Instant {
        self.opened + limits.max_age
    }

    /// The header this batch seals with.
    pub fn header(&self, agent_id: &str) -> BatchHeader {
        BatchHeader {
            agent_id: agent_id.to_string(),
            sequence: self.sequence,
            event_count: self.events,
            created_unix_ms: self.created_unix_ms,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn sample() -> Batch {
        let header = BatchHeader {
            agent_id: "agent-1.plant.example".into(),
            sequence: 42,
            event_count: 1,
            created_unix_ms: 1_700_000_000_000,
        };
        let line = br#"{"type":"flow","ts":"2024-01-01T00:00:00.000000Z","end_ts":"2024-01-01T00:00:01.000000Z","transport":"tcp","src_ip":"10.0.0.1","src_port":1,"dst_ip":"10.0.0.2","dst_port":502,"service":null,"orig_pkts":1,"orig_bytes":0,"resp_pkts":0,"resp_bytes":0,"state":"S0","reason":"idle"}
"#;
        Batch::seal(header, line).unwrap()
    }

    #[test]
    fn round_trip() {
        let b = sample();
        let bytes = b.encode().unwrap();
        let back = Batch::decode(&bytes).unwrap();
        assert_eq!(back, b);
        let events = mamori_wire::decode_body(&back.body, MAX_DECOMPRESSED_BYTES)
            .unwrap()
            .events;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].type_name(), "flow");
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = sample().encode().unwrap();
        for len in 0..bytes.len() {
            assert!(
                Batch::decode(&bytes[..len]).is_err(),
                "prefix of {len} bytes"
            );
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = sample().encode().unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x5a;
            assert!(Batch::decode(&b).is_err(), "byte {i} flipped");
        }
    }

    #[test]
    fn trailing_bytes_are_detected() {
        let mut bytes = sample().encode().unwrap();
        bytes.push(0);
        assert_eq!(Batch::decode(&bytes), Err(CorruptBatch::TrailingBytes));
    }

    #[test]
    fn decompression_is_capped() {
        let big = vec![b' '; 100_000];
        let b = Batch::seal(sample().header, &big).unwrap();
        assert!(mamori_wire::decode_body(&b.body, 10_000).is_err());
    }

    #[test]
    fn limits_close_at_count_size_and_never_split_an_event() {
        let limits = BatchLimits {
            max_events: 3,
            max_bytes: 10,
            max_age: Duration::from_secs(1),
        };
        let now = Instant::now();
        let mut b = OpenBatch::new(1, 0, now);
        assert!(
            !b.would_overflow(50, &limits),
            "an empty batch takes any event"
        );
        b.push_line(b"1234\n");
        assert!(!b.is_full(&limits));
        assert!(b.would_overflow(6, &limits));
        b.push_line(b"123\n");
        b.push_line(b"\n");
        assert!(b.is_full(&limits));
        assert_eq!(b.deadline(&limits), now + Duration::from_secs(1));
    }
}
