//! The stateful side of Modbus/TCP on one connection: ADU framing over the reassembled byte
//! streams (with resynchronisation after gaps or garbage), and the pairing of requests with
//! responses by transaction id, pipelining included. Events leave in request order, so the
//! events of one flow are in timestamp order.
//!
//! Whether a connection carries Modbus is judged on MBAP framing over several ADUs, never on
//! their content: a function-code or unit-id scan is made of invalid codes and units, and it
//! must stay visible. Until the connection is confirmed its transactions are held back, so a
//! protocol whose first message happens to look like MBAP leaves nothing behind. Segments that
//! do not frame are skipped and the next one is probed afresh: a client cannot blind the
//! decoder by opening with garbage.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::IpAddr;

use mamori_models::{Anomaly, ModbusEvent, ModbusPdu, Timestamp, Values};

use super::names;
use super::parser::{
    Adu, DecodedPdu, Framing, MAX_LENIENT_MBAP_LENGTH, MAX_MBAP_LENGTH, MAX_PROBE_MBAP_LENGTH,
    MBAP_HEADER_LEN, header_prefix_plausible, parse_modbus_adu, parse_modbus_request,
    parse_modbus_response,
};

/// ADUs framed back to back, without a segment that failed to frame between them, that
/// confirm a connection as Modbus (a response paired with a request confirms it at once).
pub const CONFIRM_STREAK: u32 = 3;

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
    /// Not confirmed yet: transactions framed so far are held back.
    Undecided,
    Modbus,
    /// Decided when the connection ended without being confirmed.
    NotModbus,
}

/// Framing evidence gathered while the verdict is undecided.
#[derive(Clone, Copy, Debug, Default)]
struct Probe {
    /// ADUs framed.
    framed: u32,
    /// Segments that did not frame (each one's remaining bytes were skipped).
    failures: u32,
    /// ADUs framed since the last failure.
    streak: u32,
}

impl Probe {
    /// Whether what framed outweighs what did not: the held transactions are Modbus.
    fn favourable(&self) -> bool {
        self.framed > self.failures
    }
}

/// Counters a session adds to; the pipeline owns them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounters {
    pub adus: u64,
    pub events: u64,
    pub resynchronisations: u64,
    pub skipped_bytes: u64,
    pub pending_overflows: u64,
    /// Transactions held on a connection that turned out not to be Modbus, discarded.
    pub unconfirmed_discarded: u64,
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
    probe: Probe,
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
            probe: Probe::default(),
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
        // A request that framed cleanly and waited out the timeout with nothing against it:
        // Modbus to a device that did not answer (or a write that stopped it), reported now
        // rather than when the connection ends.
        if self.verdict == Verdict::Undecided
            && self.probe.favourable()
            && self.pending.front().is_some_and(|t| self.overdue(t, now))
        {
            self.verdict = Verdict::Modbus;
        }
        self.release(now, false, counters, out);
    }

    /// Releases everything still waiting (the flow ended): unanswered requests are flagged.
    pub fn finish(
        &mut self,
        ts: Timestamp,
        counters: &mut SessionCounters,
        out: &mut Vec<ModbusEvent>,
    ) {
        if self.verdict == Verdict::Undecided {
            if self.probe.favourable() {
                self.verdict = Verdict::Modbus;
            } else {
                self.give_up(counters);
            }
        }
        self.release(ts, true, counters, out);
    }

    /// The connection is not Modbus: what was held goes.
    fn give_up(&mut self, counters: &mut SessionCounters) {
        self.verdict = Verdict::NotModbus;
        counters.unconfirmed_discarded += self.pending.len() as u64;
        self.pending.clear();
        for d in &mut self.dirs {
            d.partial.clear();
            d.partial_ts = None;
        }
    }

    fn overdue(&self, t: &Transaction, now: Timestamp) -> bool {
        t.request_ts().is_some_and(|at| {
            now.as_micros().saturating_sub(at.as_micros()) > self.limits.response_timeout_us
        })
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
        let whole = input;
        loop {
            let ts = stamps.at(total - input.len());
            let confirmed = self.verdict == Verdict::Modbus;
            let max_length = if confirmed {
                MAX_LENIENT_MBAP_LENGTH
            } else {
                MAX_PROBE_MBAP_LENGTH
            };
            let framing = match parse_modbus_adu(input, max_length) {
                // A length beyond what any device sends is believed only when its bytes are
                // all there: waiting for them would swallow the ADUs that follow (a lying
                // length field hides the commands behind it).
                Framing::NeedMore if declared_length(input) > MAX_PROBE_MBAP_LENGTH => {
                    Framing::NotModbus
                }
                // Before confirmation, a cut header must still be plausible as far as it goes.
                Framing::NeedMore
                    if !confirmed
                        && input.len() < MBAP_HEADER_LEN
                        && !header_prefix_plausible(input, max_length) =>
                {
                    Framing::NotModbus
                }
                f => f,
            };
            match framing {
                Framing::NeedMore => return input,
                Framing::Adu(adu, n) => {
                    counters.adus += 1;
                    let paired = self.on_adu(dir, ts, adu, counters, out);
                    if !confirmed {
                        self.probe.framed = self.probe.framed.saturating_add(1);
                        self.probe.streak = self.probe.streak.saturating_add(1);
                        if paired || self.probe.streak >= CONFIRM_STREAK {
                            self.verdict = Verdict::Modbus;
                        }
                    }
                    input = input.get(n..).unwrap_or_default();
                }
                Framing::NotModbus if !confirmed => {
                    // Not a segment of Modbus (or not yet): skip it, probe the next afresh. A
                    // failure inside bytes carried over from the last segment condemns them,
                    // not the new segment, which is probed from its own start.
                    self.probe.failures = self.probe.failures.saturating_add(1);
                    self.probe.streak = 0;
                    let at = total - input.len();
                    if at < stamps.carried {
                        input = whole.get(stamps.carried..).unwrap_or_default();
                        continue;
                    }
                    return &[];
                }
                Framing::NotModbus => {
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

    /// Takes one ADU into the transaction queue; true when it is a response that answered
    /// an outstanding request from the same unit (a server echoes the unit it was asked for).
    fn on_adu(
        &mut self,
        dir: Direction,
        ts: Timestamp,
        adu: Adu<'_>,
        counters: &mut SessionCounters,
        out: &mut Vec<ModbusEvent>,
    ) -> bool {
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
                self.bound_pending(counters, out);
                false
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
                        txn.unit == unit
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
                        self.bound_pending(counters, out);
                        false
                    }
                }
            }
        }
    }

    /// Keeps the queue within its limit: the oldest transaction leaves early, reported when
    /// the connection is confirmed, discarded while it is not (it may not be Modbus at all).
    /// Unsolicited responses count too: a flood of them behind one outstanding request must
    /// not grow the queue for a whole response timeout.
    fn bound_pending(&mut self, counters: &mut SessionCounters, out: &mut Vec<ModbusEvent>) {
        while self.pending.len() > self.limits.max_pending {
            counters.pending_overflows += 1;
            let Some(mut oldest) = self.pending.pop_front() else {
                return;
            };
            if self.verdict != Verdict::Modbus {
                continue;
            }
            oldest.flag(Anomaly::PendingLimit);
            if oldest.response.is_none() && oldest.request.is_some() {
                oldest.flag(Anomaly::UnansweredRequest);
            }
            self.emit(oldest, counters, out);
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
        if self.verdict != Verdict::Modbus {
            return;
        }
        while let Some(front) = self.pending.front() {
            let done = front.response.is_some() || front.request.is_none();
            let timed_out = self.overdue(front, now);
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

/// The MBAP length field of a header at the start of `input` (0 when it is not all there).
fn declared_length(input: &[u8]) -> u16 {
    match input.get(4..6) {
        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
        _ => 0,
    }
}

/// Where the next plausible ADU starts in `input` (after its first byte): a header that frames
/// a whole ADU followed by the end of the data or by bytes that can begin another plausible
/// header, or a plausible header cut by the end of the data. An ADU followed by bytes that
/// cannot start a header was misframed (the garbage it came out of continues past it), and a
/// tail too short to judge is kept only if it can still begin a header. Everything is skipped
/// when nothing qualifies.
fn resync_offset(input: &[u8]) -> usize {
    for k in 1..input.len() {
        let candidate = input.get(k..).unwrap_or_default();
        if candidate.len() < MBAP_HEADER_LEN {
            if header_prefix_plausible(candidate, MAX_PROBE_MBAP_LENGTH) {
                return k;
            }
            continue;
        }
        match parse_modbus_adu(candidate, MAX_PROBE_MBAP_LENGTH) {
            Framing::Adu(_, n) => {
                let after = candidate.get(n..).unwrap_or_default();
                let follows = match parse_modbus_adu(after, MAX_PROBE_MBAP_LENGTH) {
                    Framing::NotModbus => false,
                    Framing::Adu(..) => true,
                    Framing::NeedMore => {
                        after.len() >= MBAP_HEADER_LEN
                            || header_prefix_plausible(after, MAX_PROBE_MBAP_LENGTH)
                    }
                };
                if follows {
                    return k;
                }
            }
            Framing::NeedMore => return k,
            Framing::NotModbus => continue,
        }
    }
    input.len()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn session() -> ModbusSession {
        ModbusSession::new(
            ("10.0.0.66".parse().unwrap(), 40000),
            ("10.0.0.21".parse().unwrap(), 502),
            SessionLimits::default(),
        )
    }

    fn adu(tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
        let mut v = tid.to_be_bytes().to_vec();
        v.extend([0, 0]);
        v.extend(((pdu.len() + 1) as u16).to_be_bytes());
        v.push(unit);
        v.extend(pdu);
        v
    }

    /// Feeds segments in order (each its own chunk) one millisecond apart, then ends the flow.
    fn run(
        segments: &[(Direction, Vec<u8>)],
    ) -> (ModbusSession, Vec<ModbusEvent>, SessionCounters) {
        let mut s = session();
        let mut c = SessionCounters::default();
        let mut out = Vec::new();
        let mut ms = 0;
        for (dir, bytes) in segments {
            ms += 1;
            s.on_data(
                *dir,
                Timestamp::from_micros(ms * 1000),
                bytes,
                &mut c,
                &mut out,
            );
        }
        s.finish(Timestamp::from_micros((ms + 1) * 1000), &mut c, &mut out);
        (s, out, c)
    }

    use Direction::{ToClient as Resp, ToServer as Req};

    #[test]
    fn a_scan_opening_with_function_code_zero_is_modbus() {
        // Before: function code 0 made the first header "not Modbus" and the flow was dropped.
        let (s, out, _) = run(&[
            (Req, adu(1, 1, &[0x00, 0, 0, 0, 1])),
            (Resp, adu(1, 1, &[0x80, 0x01])),
            (Req, adu(2, 1, &[0x80, 0, 0, 0, 1])),
            (Resp, adu(2, 1, &[0x80, 0x01])),
            (Req, adu(3, 1, &[0x01, 0, 0, 0, 1])),
            (Resp, adu(3, 1, &[0x81, 0x01])),
        ]);
        assert_eq!(s.verdict(), Verdict::Modbus);
        assert_eq!(out.len(), 3);
        for e in &out {
            assert!(e.request.is_some() && e.response.is_some(), "{e:?}");
            assert_eq!(e.exception_code, Some(1));
        }
        assert_eq!((out[0].func, out[0].func_name.as_ref()), (0, "unknown-0"));
        assert!(out[0].anomalies.contains(&Anomaly::UnknownFunction));
        assert!(out[1].anomalies.contains(&Anomaly::InvalidValue));
    }

    #[test]
    fn a_connection_opening_with_garbage_is_still_decoded() {
        // Before: one segment that did not frame gave the connection up for good, so a
        // client could open with junk and then send commands unseen.
        for opening in [
            b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            vec![
                0x00, 0x01, 0x00, 0x07, 0x00, 0x06, 0x01, 0x03, 0x00, 0x00, 0x00, 0x01,
            ],
            // A header announcing more than any device sends.
            adu(9, 1, &[0x10; 300]),
            // The tail of an ADU whose head preceded the capture.
            vec![0x00, 0x01],
        ] {
            let (s, out, _) = run(&[
                (Req, opening.clone()),
                (Req, adu(1, 1, &[0x06, 0x00, 0x10, 0x03, 0xE7])),
                (Resp, adu(1, 1, &[0x06, 0x00, 0x10, 0x03, 0xE7])),
            ]);
            assert_eq!(s.verdict(), Verdict::Modbus, "{opening:02x?}");
            assert_eq!(out.len(), 1, "{opening:02x?}: {out:?}");
            assert_eq!(out[0].func, 6);
        }
    }

    #[test]
    fn a_look_alike_that_stops_framing_reports_nothing() {
        // One message of another protocol that happens to frame as MBAP, then its traffic
        // goes on in segments that do not: nothing is reported, the connection is not Modbus.
        let (s, out, c) = run(&[
            (Req, adu(0x1603, 3, &[0x01, 0x02, 0x03])),
            (
                Resp,
                b"\x16\x03\x03\x00\x40 server hello, certificate, done ...".to_vec(),
            ),
            (
                Req,
                b"\x16\x03\x03\x00\x25 client key exchange ...".to_vec(),
            ),
        ]);
        assert_eq!(s.verdict(), Verdict::NotModbus);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(c.unconfirmed_discarded, 1);
    }

    #[test]
    fn a_lone_request_is_reported_at_its_timeout_or_at_the_end() {
        // A write that crashed the device: no response, the connection stays open.
        let mut s = session();
        let mut c = SessionCounters::default();
        let mut out = Vec::new();
        let write = adu(1, 255, &[0x05, 0x00, 0x01, 0xFF, 0x00]);
        s.on_data(Req, Timestamp::from_micros(0), &write, &mut c, &mut out);
        s.finish_timed_out(Timestamp::from_micros(5_000_000), &mut c, &mut out);
        assert!(out.is_empty(), "held while undecided and not overdue");
        s.finish_timed_out(Timestamp::from_micros(10_000_001), &mut c, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].anomalies.contains(&Anomaly::UnansweredRequest));
        assert_eq!(s.verdict(), Verdict::Modbus);

        let (_, out, _) = run(&[(Req, write)]);
        assert_eq!(out.len(), 1, "reported when the connection ends");
    }

    #[test]
    fn three_adus_in_a_row_or_a_paired_response_confirm() {
        let mut s = session();
        let mut c = SessionCounters::default();
        let mut out = Vec::new();
        let t = Timestamp::from_micros(1);
        for tid in 0..2 {
            s.on_data(Req, t, &adu(tid, 1, &[3, 0, 0, 0, 1]), &mut c, &mut out);
            assert_eq!(s.verdict(), Verdict::Undecided);
        }
        s.on_data(Req, t, &adu(2, 1, &[3, 0, 0, 0, 1]), &mut c, &mut out);
        assert_eq!(s.verdict(), Verdict::Modbus);

        let pair = |response_tid: u16, response_unit: u8| {
            let mut s = session();
            let (mut c, mut out) = (SessionCounters::default(), Vec::new());
            s.on_data(Req, t, &adu(7, 1, &[3, 0, 0, 0, 1]), &mut c, &mut out);
            let answer = adu(response_tid, response_unit, &[3, 2, 0, 0]);
            s.on_data(Resp, t, &answer, &mut c, &mut out);
            s.verdict()
        };
        assert_eq!(pair(7, 1), Verdict::Modbus);
        assert_eq!(pair(8, 1), Verdict::Undecided, "a response to another id");
        assert_eq!(
            pair(7, 2),
            Verdict::Undecided,
            "a response from another unit"
        );
    }

    #[test]
    fn a_lying_length_field_does_not_swallow_the_commands_behind_it() {
        // Established connection; a header announces 1000 bytes but its segment carries 12.
        // Before: the framer waited for 1006 bytes and took the next writes as that ADU's body.
        let mut segments = vec![
            (Req, adu(1, 1, &[3, 0, 0, 0, 1])),
            (Resp, adu(1, 1, &[3, 2, 0, 0])),
        ];
        let mut liar = adu(2, 1, &[6, 0, 0, 0, 0]);
        liar[4..6].copy_from_slice(&1000u16.to_be_bytes());
        segments.push((Req, liar));
        for tid in 3..8u16 {
            segments.push((Req, adu(tid, 1, &[6, 0, 0x10, 0x03, 0xE7])));
            segments.push((Resp, adu(tid, 1, &[6, 0, 0x10, 0x03, 0xE7])));
        }
        let (_, out, _) = run(&segments);
        let writes: Vec<u16> = out
            .iter()
            .filter(|e| e.func == 6 && e.request.is_some() && e.response.is_some())
            .map(|e| e.tid)
            .collect();
        assert_eq!(writes, vec![3, 4, 5, 6, 7], "{out:#?}");
    }

    #[test]
    fn garbage_after_an_adu_does_not_make_the_next_segment_count_twice() {
        // Seen in the Digital Bond test data (modbus_test_data_part1, frames 111 and 113): a
        // device sends an ADU followed by 3 stray bytes, twice. Zeek and tshark, reading a byte
        // stream, lose the second copy; resynchronising on it through the stray bytes made one
        // response more than both.
        let mut segments: Vec<(Direction, Vec<u8>)> =
            (0..3).map(|_| (Resp, adu(1, 10, &[0x81, 0x06]))).collect();
        let mut odd = adu(1, 10, &[0x2A, 0x0E, 0x04, 0x01]);
        odd.extend([0x01, 0x01, 0x23]);
        segments.push((Resp, odd.clone()));
        segments.push((Resp, odd));
        let (_, out, _) = run(&segments);
        assert_eq!(out.len(), 4, "{out:#?}");
    }

    #[test]
    fn resynchronisation_still_finds_an_adu_after_garbage() {
        let mut after_junk = b"junk".to_vec();
        after_junk.extend(adu(2, 1, &[3, 0, 0, 0, 1]));
        let (_, out, c) = run(&[
            (Req, adu(1, 1, &[3, 0, 0, 0, 1])),
            (Resp, adu(1, 1, &[3, 2, 0, 0])),
            (Req, after_junk),
            (Resp, adu(2, 1, &[3, 2, 0, 0])),
        ]);
        assert_eq!(out.len(), 2);
        assert!(out[1].anomalies.contains(&Anomaly::Resynchronised));
        assert_eq!((c.resynchronisations, c.skipped_bytes), (1, 4));
    }

    #[test]
    fn unsolicited_responses_behind_a_waiting_request_stay_bounded() {
        let mut s = session();
        let mut c = SessionCounters::default();
        let mut out = Vec::new();
        let t = Timestamp::from_micros(1);
        s.on_data(Req, t, &adu(1, 1, &[3, 0, 0, 0, 1]), &mut c, &mut out);
        s.on_data(Resp, t, &adu(1, 1, &[3, 2, 0, 0]), &mut c, &mut out);
        s.on_data(Req, t, &adu(2, 1, &[3, 0, 0, 0, 1]), &mut c, &mut out);
        for tid in 1000..1500u16 {
            s.on_data(Resp, t, &adu(tid, 1, &[3, 2, 0, 0]), &mut c, &mut out);
            assert!(s.pending.len() <= SessionLimits::default().max_pending);
        }
        assert!(c.pending_overflows > 0);
    }

    #[test]
    fn prefix_plausibility() {
        assert!(header_prefix_plausible(&[], 260));
        assert!(header_prefix_plausible(
            &[0x12, 0x34, 0x00, 0x00, 0x01],
            260
        ));
        assert!(!header_prefix_plausible(&[0x01, 0x01, 0x23], 260));
        assert!(!header_prefix_plausible(
            &[0x00, 0x01, 0x00, 0x00, 0x02],
            260
        ));
        assert!(!header_prefix_plausible(&[0, 1, 0, 0, 0, 1], 260));
        // The ADU at offset 3 is followed by bytes that cannot start a header: not a boundary.
        let mut buf = vec![0x01, 0x01, 0x23];
        buf.extend(adu(1, 10, &[0x2A, 0x0E, 0x04, 0x01]));
        buf.extend([0x01, 0x01, 0x23]);
        assert_ne!(resync_offset(&buf), 3);
        buf.truncate(buf.len() - 3);
        assert_eq!(resync_offset(&buf), 3);
    }
}
