//! The stateful side of Modbus/TCP on one connection: ADU framing over the reassembled byte
//! streams (with resynchronisation after gaps or garbage), and the pairing of requests with
//! responses by transaction id, pipelining included. Events leave in request order, so the
//! events of one flow are in timestamp order.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::IpAddr;

use mamori_models::{Anomaly, ModbusEvent, ModbusPdu, Timestamp, Values};

use super::names;
use super::parser::{
    Adu, DecodedPdu, Framing, MAX_LENIENT_MBAP_LENGTH, MAX_MBAP_LENGTH, MAX_PROBE_MBAP_LENGTH,
    MBAP_HEADER_LEN, parse_modbus_adu, parse_modbus_request, parse_modbus_response,
};

/// Limits for one session.
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    /// Outstanding requests kept per connection; beyond it the oldest is released unanswered.
    pub max_pending: usize,
    /// How long (capture time) a request waits for its response before it is reported alone.
    pub response_timeout_us: i64,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_pending: 64,
            response_timeout_us: 10_000_000,
        }
    }
}

/// Which way bytes travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to server: requests.
    ToServer,
    /// Server to client: responses.
    ToClient,
}

/// Whether the connection carries Modbus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Undecided,
    Modbus,
    NotModbus,
}

/// Counters a session adds to; the pipeline owns them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounters {
    pub adus: u64,
    pub events: u64,
    pub resynchronisations: u64,
    pub skipped_bytes: u64,
    pub pending_overflows: u64,
}

#[derive(Debug, Default)]
struct DirState {
    /// A partial ADU carried over between segments (never more than one ADU's worth).
    partial: Vec<u8>,
    /// Bytes were lost before the next ADU.
    gap: bool,
    /// Bytes were skipped to find the next ADU.
    resynced: bool,
    /// Time of the segment that carried the first byte of `partial`.
    partial_ts: Option<Timestamp>,
}

/// Which timestamp a byte offset of the framing buffer carries: the carried-over partial ADU
/// has its own, the new segment's bytes have the segment's.
#[derive(Clone, Copy, Debug)]
struct Stamps {
    carried: usize,
    carried_ts: Timestamp,
    ts: Timestamp,
}

impl Stamps {
    fn at(&self, offset: usize) -> Timestamp {
        if offset < self.carried {
            self.carried_ts
        } else {
            self.ts
        }
    }
}

/// Keeps the unconsumed tail for the next segment. A well-formed remainder is at most one ADU;
/// anything longer was garbage the framer gave up on, and only its tail can still start a header.
fn keep_tail(rest: &[u8], partial: &mut Vec<u8>) {
    partial.clear();
    let keep = rest
        .len()
        .min(MBAP_HEADER_LEN + usize::from(MAX_LENIENT_MBAP_LENGTH));
    partial.extend_from_slice(rest.get(rest.len() - keep..).unwrap_or_default());
}

#[derive(Debug)]
struct Transaction {
    tid: u16,
    unit: u8,
    func: u8,
    request: Option<(ModbusPdu, u8)>,
    response: Option<(ModbusPdu, Option<u8>)>,
    anomalies: Vec<Anomaly>,
}

impl Transaction {
    fn flag(&mut self, a: Anomaly) {
        if !self.anomalies.contains(&a) {
            self.anomalies.push(a);
        }
    }

    fn request_ts(&self) -> Option<Timestamp> {
        self.request.as_ref().map(|(p, _)| p.ts)
    }
}

/// Modbus state of one TCP connection.
#[derive(Debug)]
pub struct ModbusSession {
    client: (IpAddr, u16),
    server: (IpAddr, u16),
    verdict: Verdict,
    dirs: [DirState; 2],
    pending: VecDeque<Transaction>,
    limits: SessionLimits,
}

impl ModbusSession {
    pub fn new(client: (IpAddr, u16), server: (IpAddr, u16), limits: SessionLimits) -> Self {
        ModbusSession {
            client,
            server,
            verdict: Verdict::Undecided,
            dirs: [DirState::default(), DirState::default()],
            pending: VecDeque::new(),
            limits,
        }
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Bytes held in partial-ADU buffers.
    pub fn buffered_bytes(&self) -> usize {
        self.dirs.iter().map(|d| d.partial.len()).sum()
    }

    /// Feeds in-order stream bytes of one direction. An ADU gets the time of the segment that
    /// carried its first byte (as Zeek stamps it), whichever segment completed it.
    pub fn on_data(
        &mut self,
        dir: Direction,
        ts: Timestamp,
        data: &[u8],
        counters: &mut SessionCounters,
        out: &mut Vec<ModbusEvent>,
    ) {
        if self.verdict == Verdict::NotModbus || data.is_empty() {
            return;
        }
        let idx = dir as usize;
        let state = self.dirs_mut(idx);
        let mut partial = std::mem::take(&mut state.partial);
        let carried = partial.len();
        let carried_ts = state.partial_ts.unwrap_or(ts);
        let stamps = Stamps {
            carried,
            carried_ts,
            ts,
        };
        let (rest_len, rest_started) = if carried == 0 {
            let rest = self.frame(dir, stamps, data, counters, out);
            let started = stamps.at(data.len() - rest.len());
            keep_tail(rest, &mut partial);
            (partial.len(), started)
        } else {
            partial.extend_from_slice(data);
            let buf = std::mem::take(&mut partial);
            let rest = self.frame(dir, stamps, &buf, counters, out);
            let started = stamps.at(buf.len() - rest.len());
            keep_tail(rest, &mut partial);
            (partial.len(), started)
        };
        let state = self.dirs_mut(idx);
        state.partial = partial;
        state.partial_ts = (rest_len > 0).then_some(rest_started);
        self.release(ts, false, counters, out);
    }

    /// Notes that `len` bytes of one direction were lost (capture loss, or cut by the
    /// snap length). The partial ADU in flight is dropped; the next ADU is flagged.
    pub fn on_gap(&mut self, dir: Direction) {
        if let Some(d) = self.dirs.get_mut(dir as usize) {
            d.partial.clear();
            d.partial_ts = None;
            d.gap = true;
        }
    }

    /// Releases requests that waited longer than the response timeout.
    pub fn finish_timed_out(
        &mut self,
        now: Timestamp,
        counters: &mut SessionCounters,
        out: &mut Vec<ModbusEvent>,
    ) {
        self.release(now, false, counters, out);
    }

    /// Releases everything still waiting (the flow ended): unanswered requests are flagged.
    pub fn finish(
        &mut self,
        ts: Timestamp,
        counters: &mut SessionCounters,
        out: &mut Vec<ModbusEvent>,
    ) {
        self.release(ts, true, counters, out);
    }

    fn dirs_mut(&mut self, idx: usize) -> &mut DirState {
        // idx is 0 or 1 by construction (a Direction discriminant).
        let [a, b] = &mut self.dirs;
        if idx == 0 { a } else { b }
    }

    /// Frames as many ADUs as `input` holds; returns the unconsumed tail.
    fn frame<'a>(
        &mut self,
        dir: Direction,
        stamps: Stamps,
        mut input: &'a [u8],
        counters: &mut SessionCounters,
        out: &mut Vec<ModbusEvent>,
    ) -> &'a [u8] {
        let total = input.len();
        loop {
            let ts = stamps.at(total - input.len());
            let max_length = match self.verdict {
                Verdict::Modbus => MAX_LENIENT_MBAP_LENGTH,
                _ => MAX_PROBE_MBAP_LENGTH,
            };
            match parse_modbus_adu(input, max_length) {
                Framing::NeedMore => return input,
                Framing::Adu(adu, n) => {
                    self.verdict = Verdict::Modbus;
                    counters.adus += 1;
                    self.on_adu(dir, ts, adu, counters, out);
                    input = input.get(n..).unwrap_or_default();
                }
                Framing::NotModbus => {
                    if self.verdict == Verdict::Undecided {
                        self.verdict = Verdict::NotModbus;
                        self.pending.clear();
                        return &[];
                    }
                    // Established Modbus, but these bytes do not frame: find the next header.
                    let skip = resync_offset(input);
                    counters.resynchronisations += 1;
                    counters.skipped_bytes += skip as u64;
                    self.dirs_mut(dir as usize).resynced = true;
                    input = input.get(skip..).unwrap_or_default();
                }
            }
        }
    }

    fn on_adu(
        &mut self,
        dir: Direction,
        ts: Timestamp,
        adu: Adu<'_>,
        counters: &mut SessionCounters,
        out: &mut Vec<ModbusEvent>,
    ) {
        let state = self.dirs_mut(dir as usize);
        let mut stream_flags = Vec::new();
        if adu.header.length > MAX_MBAP_LENGTH {
            stream_flags.push(Anomaly::OversizedAdu);
        }
        if std::mem::take(&mut state.gap) {
            stream_flags.push(Anomaly::StreamGap);
        }
        if std::mem::take(&mut state.resynced) {
            stream_flags.push(Anomaly::Resynchronised);
        }
        let tid = adu.header.transaction_id;
        let unit = adu.header.unit_id;
        match dir {
            Direction::ToServer => {
                let decoded = parse_modbus_request(adu.pdu);
                let func = decoded.function();
                let mut txn = Transaction {
                    tid,
                    unit,
                    func,
                    request: None,
                    response: None,
                    anomalies: stream_flags,
                };
                for &a in &decoded.anomalies {
                    txn.flag(a);
                }
                if unit == 0 && names::is_write_function(func) {
                    txn.flag(Anomaly::Broadcast);
                }
                if self
                    .pending
                    .iter()
                    .any(|t| t.tid == tid && t.response.is_none() && t.request.is_some())
                {
                    txn.flag(Anomaly::DuplicateTransactionId);
                }
                txn.request = Some((pdu_fields(decoded.fields, ts, adu), decoded.raw_function));
                self.pending.push_back(txn);
                if self.pending.len() > self.limits.max_pending {
                    counters.pending_overflows += 1;
                    if let Some(mut oldest) = self.pending.pop_front() {
                        oldest.flag(Anomaly::PendingLimit);
                        if oldest.response.is_none() && oldest.request.is_some() {
                            oldest.flag(Anomaly::UnansweredRequest);
                        }
                        self.emit(oldest, counters, out);
                    }
                }
            }
            Direction::ToClient => {
                let decoded = parse_modbus_response(adu.pdu);
                let slot = self
                    .pending
                    .iter_mut()
                    .find(|t| t.tid == tid && t.response.is_none() && t.request.is_some());
                match slot {
                    Some(txn) => {
                        for a in stream_flags {
                            txn.flag(a);
                        }
                        attach_response(txn, decoded, ts, adu);
                    }
                    None => {
                        let mut txn = Transaction {
                            tid,
                            unit,
                            func: decoded.function(),
                            request: None,
                            response: None,
                            anomalies: stream_flags,
                        };
                        txn.flag(Anomaly::UnsolicitedResponse);
                        attach_response(&mut txn, decoded, ts, adu);
                        self.pending.push_back(txn);
                    }
                }
            }
        }
    }

    /// Emits transactions from the front of the queue while they are complete, or when the
    /// oldest request waited longer than the response timeout, or when the flow ended.
    fn release(
        &mut self,
        now: Timestamp,
        all: bool,
        counters: &mut SessionCounters,
        out: &mut Vec<ModbusEvent>,
    ) {
        while let Some(front) = self.pending.front() {
            let done = front.response.is_some() || front.request.is_none();
            let timed_out = front.request_ts().is_some_and(|t| {
                now.as_micros().saturating_sub(t.as_micros()) > self.limits.response_timeout_us
            });
            if !(done || timed_out || all) {
                break;
            }
            if let Some(mut txn) = self.pending.pop_front() {
                if txn.response.is_none() {
                    txn.flag(Anomaly::UnansweredRequest);
                }
                self.emit(txn, counters, out);
            }
        }
    }

    fn emit(&self, txn: Transaction, counters: &mut SessionCounters, out: &mut Vec<ModbusEvent>) {
        counters.events += 1;
        let (request, _) = txn.request.map_or((None, 0), |(p, raw)| (Some(p), raw));
        let (response, exception_code) = txn.response.map_or((None, None), |(p, e)| (Some(p), e));
        let ts = request
            .as_ref()
            .or(response.as_ref())
            .map(|p| p.ts)
            .unwrap_or_default();
        let latency_us = match (&request, &response) {
            (Some(q), Some(r)) => r.ts.micros_since(q.ts),
            _ => None,
        };
        out.push(ModbusEvent {
            ts,
            src_ip: self.client.0,
            src_port: self.client.1,
            dst_ip: self.server.0,
            dst_port: self.server.1,
            tid: txn.tid,
            unit: txn.unit,
            func: txn.func,
            func_name: function_name(txn.func),
            request,
            response,
            exception: exception_code.map(exception_name),
            exception_code,
            latency_us,
            anomalies: txn.anomalies,
        });
    }
}

/// Zeek's function name, or `unknown-<n>`.
pub fn function_name(func: u8) -> Cow<'static, str> {
    names::function_name(func).map_or_else(|| Cow::Owned(format!("unknown-{func}")), Cow::Borrowed)
}

/// Zeek's exception name, or `unknown-<n>`.
pub fn exception_name(code: u8) -> Cow<'static, str> {
    names::exception_name(code).map_or_else(|| Cow::Owned(format!("unknown-{code}")), Cow::Borrowed)
}

fn pdu_fields(mut fields: ModbusPdu, ts: Timestamp, adu: Adu<'_>) -> ModbusPdu {
    fields.ts = ts;
    fields.len = adu.header.length;
    fields
}

fn attach_response(txn: &mut Transaction, decoded: DecodedPdu, ts: Timestamp, adu: Adu<'_>) {
    for &a in &decoded.anomalies {
        txn.flag(a);
    }
    if decoded.function() != txn.func {
        txn.flag(Anomaly::FunctionMismatch);
    }
    let exception = decoded
        .is_exception()
        .then_some(decoded.exception_code)
        .flatten();
    let raw = decoded.raw_function;
    let mut fields = pdu_fields(decoded.fields, ts, adu);
    if exception.is_none() && raw == txn.func {
        check_against_request(txn, &mut fields);
    }
    txn.response = Some((
        fields,
        if raw & 0x80 != 0 {
            exception.or(Some(0))
        } else {
            None
        },
    ));
}

/// Checks a normal response against its request: byte counts against quantities, and read
/// coils trimmed to the quantity asked (the padding bits of the last byte mean nothing).
fn check_against_request(txn: &mut Transaction, resp: &mut ModbusPdu) {
    let Some((req, _)) = txn.request.as_ref() else {
        return;
    };
    let expected_bytes = match txn.func {
        1 | 2 => req.quantity.map(|q| usize::from(q).div_ceil(8)),
        3 | 4 => req.quantity.map(|q| usize::from(q) * 2),
        23 => req.read_quantity.map(|q| usize::from(q) * 2),
        _ => None,
    };
    let mismatch =
        matches!((expected_bytes, resp.byte_count), (Some(e), Some(b)) if e != usize::from(b));
    if let (1 | 2, Some(q), Some(Values::Coils(bits))) =
        (txn.func, req.quantity, resp.values.as_mut())
    {
        bits.truncate(usize::from(q));
    }
    if mismatch {
        txn.flag(Anomaly::ByteCountMismatch);
    }
}

/// Where the next plausible ADU starts in `input` (after its first byte): a header that frames
/// a whole ADU followed by the end of the data or by another plausible header, or a plausible
/// header cut by the end of the data. Everything is skipped when nothing qualifies, except a
/// tail too short to judge.
fn resync_offset(input: &[u8]) -> usize {
    for k in 1..input.len() {
        let candidate = input.get(k..).unwrap_or_default();
        if candidate.len() < MBAP_HEADER_LEN {
            return k;
        }
        match parse_modbus_adu(candidate, MAX_PROBE_MBAP_LENGTH) {
            Framing::Adu(_, n) => match parse_modbus_adu(
                candidate.get(n..).unwrap_or_default(),
                MAX_PROBE_MBAP_LENGTH,
            ) {
                Framing::NotModbus => continue,
                Framing::Adu(..) | Framing::NeedMore => return k,
            },
            Framing::NeedMore => return k,
            Framing::NotModbus => continue,
        }
    }
    input.len()
}
