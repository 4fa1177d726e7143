//! The event contract shared by the agent (which produces events) and the collector (which
//! consumes them). Documented for humans in `docs/events.md`; bump [`SCHEMA_VERSION`] on any
//! change that a consumer could notice.

use std::borrow::Cow;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Version of the event schema described in `docs/events.md`.
pub const SCHEMA_VERSION: u32 = 1;

/// One observation, as one line of JSON.
// The Modbus variant is the large one and also by far the most frequent: boxing it would cost
// an allocation per event on the hot path for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Modbus(ModbusEvent),
    Flow(FlowEvent),
    Syslog(SyslogEvent),
}

impl Event {
    /// The event's own timestamp (`ts`).
    pub fn ts(&self) -> Timestamp {
        match self {
            Event::Modbus(e) => e.ts,
            Event::Flow(e) => e.ts,
            Event::Syslog(e) => e.ts,
        }
    }

    /// Parses one JSON line, as `serde_json::from_slice::<Event>` does, faster for lines that
    /// begin with their `type` (as every writer of this schema does): the tag is read from the
    /// prefix and the rest goes straight into the variant, where the generic path buffers the
    /// whole object first to find the tag. Any other line takes the generic path.
    pub fn from_json_slice(line: &[u8]) -> serde_json::Result<Event> {
        let line = line.trim_ascii_start();
        if line.starts_with(br#"{"type":"modbus","#) {
            serde_json::from_slice(line).map(Event::Modbus)
        } else if line.starts_with(br#"{"type":"flow","#) {
            serde_json::from_slice(line).map(Event::Flow)
        } else if line.starts_with(br#"{"type":"syslog","#) {
            serde_json::from_slice(line).map(Event::Syslog)
        } else {
            serde_json::from_slice(line)
        }
    }

    /// The schema name of the event's type, as written in `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Modbus(_) => "modbus",
            Event::Flow(_) => "flow",
            Event::Syslog(_) => "syslog",
        }
    }
}

/// Something odd about a message or a stream. The message carrying it was still decoded as far
/// as it could be: for an IDS a flagged message is worth more than a parse error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anomaly {
    // --- Modbus framing and content ---
    /// The MBAP length field disagrees with the bytes the function needs.
    LengthMismatch,
    /// A byte count field disagrees with the quantity or with the bytes present.
    ByteCountMismatch,
    /// A quantity outside the range the specification allows for the function.
    QuantityOutOfRange,
    /// A field value the specification forbids (e.g. a coil value other than 0x0000/0xFF00).
    InvalidValue,
    /// An MBAP length field beyond the specification's 254 (seen with vendor extensions).
    OversizedAdu,
    /// MBAP protocol identifier other than 0 inside an established Modbus stream.
    InvalidProtocolId,
    /// A function code that the public specification does not define.
    UnknownFunction,
    /// An exception code outside the specification's list.
    UnknownExceptionCode,
    /// An exception response whose function does not match the request.
    FunctionMismatch,
    /// A response with no outstanding request of the same transaction id.
    UnsolicitedResponse,
    /// A request that never got a response before the flow ended or the wait timed out.
    UnansweredRequest,
    /// A request reusing the transaction id of a request still outstanding.
    DuplicateTransactionId,
    /// Bytes that could not be framed as Modbus were skipped to find the next header.
    Resynchronised,
    /// Bytes were missing from the TCP stream before this message (capture loss or a gap).
    StreamGap,
    /// The unit identifier is the broadcast address 0 (writes to every device on a gateway).
    Broadcast,
    /// The per-flow limit of outstanding requests was reached; the oldest was released.
    PendingLimit,
    // --- Syslog ---
    /// The message was longer than the configured maximum and was cut.
    Truncated,
    /// Bytes that are not UTF-8 were replaced in the text fields.
    InvalidUtf8,
    /// The message did not follow the grammar it claimed, and was read leniently.
    Malformed,
    /// No `<PRI>` at the start, or one that cannot be read: priority is 13 (user.notice), as
    /// RFC 3164 §4.3.3 has a relay insert, and this flag says it was not the sender's.
    MissingPriority,
    /// The timestamp could not be read.
    InvalidTimestamp,
    /// The timestamp was read but lies outside what an event can carry (before year 0000 or
    /// after 9999 in UTC) or more than a day after the message was received: `ts` is the
    /// receive time instead, and `timestamp` keeps the text as sent. A device clock that far
    /// ahead is broken or forged, and letting it drive event time would move every timer of
    /// the site's detection into the future.
    TimestampOutOfRange,
    /// An anomaly this version does not know (written by a newer agent): kept as a flag rather
    /// than refusing the event.
    #[serde(other)]
    Unrecognised,
}

/// The decoded values of a read or write: registers as numbers, coils as booleans.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Values {
    Registers(Vec<u16>),
    Coils(Vec<bool>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::Registers(v) => v.len(),
            Values::Coils(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One object of a Read Device Identification response (function 43, MEI type 14).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceIdObject {
    pub id: u8,
    /// The specification's name for the object (`VendorName`, `ProductCode`, ...), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Cow<'static, str>>,
    /// The value as text (lossy UTF-8: the standard objects are ASCII strings).
    pub value: String,
}

/// One sub-request of Read/Write File Record (functions 20 and 21).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub reference_type: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_number: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_number: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_length: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<u16>>,
}

/// The decoded fields of one request or response PDU. Only the fields the function has are set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModbusPdu {
    pub ts: Timestamp,
    /// The MBAP length field (unit id + PDU bytes).
    pub len: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_count: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Values>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub and_mask: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub or_mask: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_address: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_quantity: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_address: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_quantity: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_values: Option<Vec<u16>>,
    /// Diagnostics (8) sub-function code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_function: Option<u16>,
    /// Diagnostics (8) sub-function name, e.g. `FORCE_LISTEN_ONLY_MODE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_function_name: Option<Cow<'static, str>>,
    /// Encapsulated Interface Transport (43) MEI type: 13 CANopen, 14 device identification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mei_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_device_id_code: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conformity_level: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more_follows: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_object_id: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<Vec<DeviceIdObject>>,
    /// Exception status (7) output byte, or comm-event status word (11, 12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_count: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_count: Option<u16>,
    /// Report Server ID (17) run indicator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_indicator: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_records: Option<Vec<FileRecord>>,
    /// Schneider UMAS (function 90) sub-function code, the second data byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umas_function: Option<u8>,
    /// Bytes kept raw: unknown functions, diagnostic data, server id, CANopen, events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_hex: Option<String>,
}

/// One Modbus/TCP transaction: a request and its response, or a lone one of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModbusEvent {
    pub ts: Timestamp,
    /// The client (who sent the request).
    pub src_ip: IpAddr,
    pub src_port: u16,
    /// The server.
    pub dst_ip: IpAddr,
    pub dst_port: u16,
    pub tid: u16,
    pub unit: u8,
    /// The function code without the exception bit.
    pub func: u8,
    /// Zeek's name for the function, `unknown-<n>` when it has none.
    pub func_name: Cow<'static, str>,
    pub request: Option<ModbusPdu>,
    pub response: Option<ModbusPdu>,
    /// Zeek's exception name, when the response is an exception.
    pub exception: Option<Cow<'static, str>>,
    pub exception_code: Option<u8>,
    pub latency_us: Option<u64>,
    pub anomalies: Vec<Anomaly>,
}

/// TCP, UDP or ICMP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Tcp,
    Udp,
    Icmp,
}

/// One conversation, whatever its protocol (Zeek's `conn.log`, trimmed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowEvent {
    /// First packet.
    pub ts: Timestamp,
    /// Last packet.
    pub end_ts: Timestamp,
    pub transport: Transport,
    /// The originator: who sent the SYN, or the first packet seen, or the client side when
    /// the flow was picked up mid-stream on a known server port.
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
    /// The application protocol recognised on the flow (`modbus`, `syslog`), if any.
    pub service: Option<Cow<'static, str>>,
    pub orig_pkts: u64,
    /// Transport payload bytes from the originator.
    pub orig_bytes: u64,
    pub resp_pkts: u64,
    pub resp_bytes: u64,
    /// Zeek's `conn_state` code (`S0`, `S1`, `SF`, `REJ`, `RSTO`, `RSTR`, `OTH`, ...).
    pub state: Cow<'static, str>,
    /// Why the flow event was written: `fin`, `rst`, `idle`, `evicted` or `end_of_input`.
    pub reason: Cow<'static, str>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anomalies: Vec<Anomaly>,
}

/// The wire format a syslog message was read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyslogFormat {
    Rfc5424,
    Rfc3164,
    Unknown,
}

/// One syslog message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyslogEvent {
    /// The message's own timestamp in UTC when its zone is known, else the receive time.
    pub ts: Timestamp,
    pub received_ts: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    pub format: SyslogFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u16>,
    /// The message's timestamp as RFC 3339, with its original offset when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msgid: Option<String>,
    /// `{sd_id: {param: value}}` with values unescaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured_data:
        Option<std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    #[serde(default)]
    pub anomalies: Vec<Anomaly>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The fast path gives what the generic one gives, on every line of the golden capture's
    /// events (Modbus and flows of every function code) and on syslog, and the generic errors
    /// on what is not an event.
    #[test]
    fn from_json_slice_equals_the_generic_parse() {
        let golden = include_str!("../../tests/golden/modbus_plant.events.jsonl");
        let syslog = r#"{"type":"syslog","ts":"2024-01-01T00:00:00.000000Z","received_ts":"2024-01-01T00:00:00.000000Z","src_ip":"10.0.0.9","src_port":514,"format":"rfc5424","priority":34,"facility":4,"severity":2,"version":1,"timestamp":"2024-01-01T00:00:00Z","hostname":"rtu-1","app_name":"sshd","message":"Failed password for root","anomalies":[]}"#;
        let mut kinds = std::collections::BTreeSet::new();
        for line in golden.lines().chain([syslog]) {
            let generic: Result<Event, _> = serde_json::from_slice(line.as_bytes());
            let fast = Event::from_json_slice(line.as_bytes());
            match (generic, fast) {
                (Ok(g), Ok(f)) => {
                    kinds.insert(g.type_name());
                    assert_eq!(g, f, "{line}");
                }
                (g, f) => panic!("{line}: generic {g:?}, fast {f:?}"),
            }
        }
        assert_eq!(kinds.len(), 3, "{kinds:?}");
        for bad in [
            &br#"{"type":"modbus","ts":1}"#[..],
            br#"{"type":"nope"}"#,
            br#"[1]"#,
            b"",
        ] {
            assert!(Event::from_json_slice(bad).is_err());
        }
        // Not first: the generic path.
        let late = r#"{"ts":"2024-01-01T00:00:00.000000Z","type":"syslog","received_ts":"2024-01-01T00:00:00.000000Z","format":"rfc3164","message":"x","anomalies":[]}"#;
        assert_eq!(
            Event::from_json_slice(late.as_bytes()).ok(),
            serde_json::from_str::<Event>(late).ok()
        );
    }
}
