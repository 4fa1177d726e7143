//! The one pipeline behind replay and (later) live capture: frames in, events out. It owns the
//! flow table, IPv4 defragmentation, TCP reassembly and the protocol sessions, and every one
//! of them is bounded: what a limit drops is counted in [`Counters`] and logged once.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use mamori_models::{Event, FlowEvent, ModbusEvent, SyslogEvent, Timestamp, Transport};

use crate::capture::decode::decode_transport;
use crate::capture::defrag::{DefragDrop, DefragLimits, DefragOutcome, Defragmenter};
use crate::capture::{DecodeError, L4, RawPacket, TcpFlags, decode_frame};
use crate::proto::modbus::{Direction, ModbusSession, SessionCounters, SessionLimits, Verdict};
use crate::proto::syslog::{
    Frame, ParseOptions, StreamFramer, parse_syslog, parse_syslog_frame, probe_syslog,
};
use crate::tcp::{Chunk, StreamCounters, StreamLimits, StreamReassembler};

/// Pipeline settings. Timeouts are in capture time, so a replay behaves like the live agent.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// TCP ports on which Modbus/TCP is recognised.
    pub modbus_ports: Vec<u16>,
    /// Flows tracked at once; beyond it the least recently active are ended early.
    pub max_flows: usize,
    pub tcp_idle_timeout_us: i64,
    /// How long a connection that saw FIN from both sides, or RST, lingers for stray packets.
    pub tcp_close_timeout_us: i64,
    pub udp_idle_timeout_us: i64,
    pub icmp_idle_timeout_us: i64,
    pub stream: StreamLimits,
    /// Out-of-order bytes held across all connections.
    pub max_reassembly_bytes: usize,
    pub modbus: SessionLimits,
    /// UDP ports on which every datagram is a syslog message.
    pub syslog_udp_ports: Vec<u16>,
    /// TCP ports on which syslog is recognised (when the stream starts like syslog, not TLS).
    pub syslog_tcp_ports: Vec<u16>,
    pub syslog: ParseOptions,
    pub defrag: DefragLimits,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            modbus_ports: vec![crate::proto::modbus::MODBUS_TCP_PORT],
            max_flows: 65_536,
            tcp_idle_timeout_us: 300_000_000,
            tcp_close_timeout_us: 5_000_000,
            udp_idle_timeout_us: 60_000_000,
            icmp_idle_timeout_us: 60_000_000,
            stream: StreamLimits::default(),
            max_reassembly_bytes: 16 * 1024 * 1024,
            modbus: SessionLimits::default(),
            syslog_udp_ports: vec![514],
            syslog_tcp_ports: vec![514, 601, 6514],
            syslog: ParseOptions::default(),
            defrag: DefragLimits::default(),
        }
    }
}

/// Everything the pipeline counts. Drops are counted by reason.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub unsupported_link: u64,
    pub not_ip: u64,
    pub malformed: u64,
    pub other_ip_protocol: u64,
    pub ipv4_fragments: u64,
    pub ipv4_reassembled: u64,
    pub fragments_dropped_table_full: u64,
    pub fragments_dropped_oversized: u64,
    pub fragments_expired: u64,
    pub ipv6_fragments: u64,
    pub flows_created: u64,
    pub flows_ended: u64,
    pub flows_evicted: u64,
    pub tcp_retransmissions: u64,
    pub tcp_out_of_order: u64,
    pub tcp_gaps: u64,
    pub tcp_gap_bytes: u64,
    pub reassembly_limit_flushes: u64,
    pub modbus_flows: u64,
    pub not_modbus_flows: u64,
    pub modbus_adus: u64,
    pub modbus_resynchronisations: u64,
    pub modbus_skipped_bytes: u64,
    pub modbus_pending_overflows: u64,
    /// Transactions held on port-502 connections that never framed as Modbus, discarded.
    pub modbus_unconfirmed_discarded: u64,
    pub syslog_flows: u64,
    pub not_syslog_flows: u64,
    /// Syslog messages that strict parsing rejected (never in the default lenient mode).
    pub syslog_rejected: u64,
    pub events_modbus: u64,
    /// Modbus events carrying at least one anomaly flag.
    pub modbus_events_with_anomalies: u64,
    pub events_syslog: u64,
    /// Syslog events carrying at least one anomaly flag.
    pub syslog_events_with_anomalies: u64,
    pub events_flow: u64,
}

/// Where events go.
pub trait EventSink {
    fn event(&mut self, event: Event);
}

impl<F: FnMut(Event)> EventSink for F {
    fn event(&mut self, event: Event) {
        self(event)
    }
}

type Endpoint = (IpAddr, u16);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    lo: Endpoint,
    hi: Endpoint,
    proto: u8,
}

impl FlowKey {
    fn new(a: Endpoint, b: Endpoint, proto: u8) -> Self {
        if a <= b {
            FlowKey {
                lo: a,
                hi: b,
                proto,
            }
        } else {
            FlowKey {
                lo: b,
                hi: a,
                proto,
            }
        }
    }
}

#[derive(Debug, Default)]
struct TcpState {
    syn: bool,
    syn_ack: bool,
    fin_orig: bool,
    fin_resp: bool,
    rst_orig: bool,
    rst_resp: bool,
    /// Index 0: originator to responder; 1: back.
    streams: [StreamReassembler; 2],
}

#[derive(Debug)]
enum App {
    None,
    Modbus(Box<ModbusSession>),
    Syslog(Box<SyslogStream>),
}

/// Syslog over TCP: the client's stream, framed.
#[derive(Debug)]
struct SyslogStream {
    sender: Endpoint,
    framer: StreamFramer,
    /// Whether the stream is syslog, once its first bytes were seen.
    verdict: Option<bool>,
    frames: Vec<Frame>,
}

/// What the protocol layers produced while a packet was processed, and their counters.
#[derive(Debug, Default)]
struct AppOutput {
    modbus: Vec<ModbusEvent>,
    syslog: Vec<SyslogEvent>,
    modbus_counters: SessionCounters,
    syslog_rejected: u64,
}

impl App {
    /// Hands reassembled bytes (or a gap) of one direction to the protocol layer.
    fn on_chunk(
        &mut self,
        from_server: bool,
        chunk: Chunk<'_>,
        out: &mut AppOutput,
        opts: &ParseOptions,
    ) {
        match self {
            App::None => {}
            App::Modbus(session) => {
                let dir = if from_server {
                    Direction::ToClient
                } else {
                    Direction::ToServer
                };
                match chunk {
                    Chunk::Data(d, at) => {
                        session.on_data(dir, at, d, &mut out.modbus_counters, &mut out.modbus)
                    }
                    Chunk::Gap(_) => session.on_gap(dir),
                }
            }
            App::Syslog(stream) if !from_server => match chunk {
                Chunk::Data(d, at) => {
                    if stream.verdict.is_none() {
                        // TLS (RFC 5425 on 6514) or another protocol on a syslog port: not ours.
                        let tls = d.first() == Some(&0x16) && d.get(1) == Some(&0x03);
                        // RFC 6587 octet counting puts "LEN SP" before the message.
                        let digits = d.iter().take_while(|b| b.is_ascii_digit()).count();
                        let msg = match d.get(digits) {
                            Some(b' ') if digits > 0 => d.get(digits + 1..).unwrap_or_default(),
                            _ => d,
                        };
                        stream.verdict = Some(!tls && probe_syslog(msg));
                    }
                    if stream.verdict == Some(true) {
                        stream.framer.push(d, &mut stream.frames);
                        stream.emit(at, out, opts);
                    }
                }
                // The message in flight lost bytes: start afresh at the next message boundary.
                Chunk::Gap(_) => {
                    stream.framer =
                        StreamFramer::new(stream.framer.framing(), opts.max_message_bytes);
                }
            },
            App::Syslog(_) => {}
        }
    }

    /// The connection ended: what the framer still holds is a last message.
    fn finish(&mut self, ts: Timestamp, out: &mut AppOutput, opts: &ParseOptions) {
        match self {
            App::Modbus(session) => session.finish(ts, &mut out.modbus_counters, &mut out.modbus),
            App::Syslog(stream) if stream.verdict == Some(true) => {
                stream.framer.finish(&mut stream.frames);
                stream.emit(ts, out, opts);
            }
            _ => {}
        }
    }

    /// `Some(name)` once the flow is known to carry the protocol, `None` while undecided;
    /// `Some("")` when it turned out not to.
    fn service(&self) -> Option<&'static str> {
        match self {
            App::None => None,
            App::Modbus(s) => match s.verdict() {
                Verdict::Modbus => Some("modbus"),
                Verdict::NotModbus => Some(""),
                Verdict::Undecided => None,
            },
            App::Syslog(s) => s.verdict.map(|v| if v { "syslog" } else { "" }),
        }
    }
}

impl SyslogStream {
    fn emit(&mut self, at: Timestamp, out: &mut AppOutput, opts: &ParseOptions) {
        for frame in self.frames.drain(..) {
            match parse_syslog_frame(&frame, at, opts) {
                Ok(mut ev) => {
                    ev.src_ip = Some(self.sender.0);
                    ev.src_port = Some(self.sender.1);
                    out.syslog.push(ev);
                }
                Err(_) => out.syslog_rejected += 1,
            }
        }
    }
}

#[derive(Debug)]
struct Flow {
    orig: Endpoint,
    resp: Endpoint,
    transport: Transport,
    first_ts: Timestamp,
    last_ts: Timestamp,
    orig_pkts: u64,
    orig_bytes: u64,
    resp_pkts: u64,
    resp_bytes: u64,
    tcp: Option<Box<TcpState>>,
    closing_since: Option<Timestamp>,
    app: App,
    /// The endpoint on the application's well-known port (Modbus or syslog server).
    server: Option<Endpoint>,
    service: Option<&'static str>,
}

/// Why a flow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndReason {
    Closed,
    Idle,
    Evicted,
    Reused,
    EndOfInput,
}

/// Frames in, events out.
#[derive(Debug)]
pub struct Pipeline {
    config: PipelineConfig,
    flows: HashMap<FlowKey, Flow>,
    defrag: Defragmenter,
    counters: Counters,
    stream_counters: StreamCounters,
    held_total: usize,
    last_sweep_sec: i64,
    last_ts: Timestamp,
    out: AppOutput,
    warned: WarnedOnce,
}

#[derive(Debug, Default)]
struct WarnedOnce {
    flow_table_full: bool,
    reassembly_full: bool,
    defrag_full: bool,
    unsupported_link: bool,
}

impl Pipeline {
    pub fn new(config: PipelineConfig) -> Self {
        let defrag = Defragmenter::new(config.defrag);
        Pipeline {
            config,
            flows: HashMap::new(),
            defrag,
            counters: Counters::default(),
            stream_counters: StreamCounters::default(),
            held_total: 0,
            last_sweep_sec: i64::MIN,
            last_ts: Timestamp::default(),
            out: AppOutput::default(),
            warned: WarnedOnce::default(),
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.tcp_retransmissions = self.stream_counters.retransmissions;
        c.tcp_out_of_order = self.stream_counters.out_of_order;
        c.tcp_gaps = self.stream_counters.gaps;
        c.tcp_gap_bytes = self.stream_counters.gap_bytes;
        c.modbus_adus = self.out.modbus_counters.adus;
        c.modbus_resynchronisations = self.out.modbus_counters.resynchronisations;
        c.modbus_skipped_bytes = self.out.modbus_counters.skipped_bytes;
        c.modbus_pending_overflows = self.out.modbus_counters.pending_overflows;
        c.modbus_unconfirmed_discarded = self.out.modbus_counters.unconfirmed_discarded;
        c.syslog_rejected = self.out.syslog_rejected;
        c
    }

    /// Flows currently tracked.
    pub fn active_flows(&self) -> usize {
        self.flows.len()
    }

    /// Processes one captured frame.
    pub fn process(&mut self, pkt: &RawPacket<'_>, sink: &mut dyn EventSink) {
        self.counters.packets += 1;
        self.counters.bytes += u64::from(pkt.orig_len);
        if pkt.ts > self.last_ts {
            self.last_ts = pkt.ts;
        }
        let sec = pkt.ts.as_secs();
        if sec != self.last_sweep_sec {
            self.last_sweep_sec = sec;
            self.sweep(pkt.ts, sink);
        }
        let decoded = match decode_frame(pkt.link_type, pkt.data) {
            Ok(d) => d,
            Err(DecodeError::UnsupportedLink) => {
                self.counters.unsupported_link += 1;
                if !std::mem::replace(&mut self.warned.unsupported_link, true) {
                    tracing::warn!(
                        link_type = pkt.link_type.0,
                        "frames of an unsupported link type are skipped"
                    );
                }
                return;
            }
            Err(DecodeError::NotIp) => {
                self.counters.not_ip += 1;
                return;
            }
            Err(DecodeError::Malformed) => {
                self.counters.malformed += 1;
                return;
            }
        };
        match decoded.l4 {
            L4::Ipv4Fragment {
                id,
                protocol,
                offset,
                more_fragments,
                payload,
            } => {
                self.counters.ipv4_fragments += 1;
                let outcome = self.defrag.push(
                    pkt.ts,
                    decoded.src,
                    decoded.dst,
                    id,
                    protocol,
                    offset,
                    more_fragments,
                    payload,
                );
                match outcome {
                    DefragOutcome::Pending => {}
                    DefragOutcome::Complete { protocol, payload } => {
                        self.counters.ipv4_reassembled += 1;
                        let l4 = decode_transport(protocol, &payload);
                        self.on_transport(pkt.ts, decoded.src, decoded.dst, l4, sink);
                    }
                    DefragOutcome::Dropped(DefragDrop::Oversized) => {
                        self.counters.fragments_dropped_oversized += 1
                    }
                    DefragOutcome::Dropped(_) => {
                        self.counters.fragments_dropped_table_full += 1;
                        if !std::mem::replace(&mut self.warned.defrag_full, true) {
                            tracing::warn!(
                                "IPv4 reassembly table full: fragments are being dropped"
                            );
                        }
                    }
                }
            }
            L4::Ipv6Fragment => self.counters.ipv6_fragments += 1,
            L4::Other { .. } => self.counters.other_ip_protocol += 1,
            l4 => self.on_transport(pkt.ts, decoded.src, decoded.dst, l4, sink),
        }
        self.flush_app_events(sink);
    }

    /// Moves the pipeline's clock to `now` when no packet arrives (live capture on a quiet
    /// link): idle flows end and overdue requests are reported without waiting for traffic.
    pub fn advance_to(&mut self, now: Timestamp, sink: &mut dyn EventSink) {
        if now <= self.last_ts {
            return;
        }
        self.last_ts = now;
        let sec = now.as_secs();
        if sec != self.last_sweep_sec {
            self.last_sweep_sec = sec;
            self.sweep(now, sink);
        }
    }

    /// End of input: every flow ends, every waiting request is reported.
    pub fn finish(&mut self, sink: &mut dyn EventSink) {
        let mut keys: Vec<(Timestamp, FlowKey)> =
            self.flows.iter().map(|(k, f)| (f.first_ts, *k)).collect();
        keys.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| format!("{:?}", a.1).cmp(&format!("{:?}", b.1)))
        });
        for (_, key) in keys {
            self.end_flow(&key, EndReason::EndOfInput, sink);
        }
    }

    fn on_transport(
        &mut self,
        ts: Timestamp,
        src: IpAddr,
        dst: IpAddr,
        l4: L4<'_>,
        sink: &mut dyn EventSink,
    ) {
        let (proto, sport, dport, transport) = match l4 {
            L4::Tcp {
                src_port, dst_port, ..
            } => (6, src_port, dst_port, Transport::Tcp),
            L4::Udp {
                src_port, dst_port, ..
            } => (17, src_port, dst_port, Transport::Udp),
            L4::Icmp { .. } => (1, 0, 0, Transport::Icmp),
            _ => return,
        };
        let sender = (src, sport);
        let receiver = (dst, dport);
        let key = FlowKey::new(sender, receiver, proto);
        let flags = match l4 {
            L4::Tcp { flags, .. } => flags,
            _ => TcpFlags::default(),
        };
        // A fresh SYN on a connection that already closed starts a new connection.
        if flags.syn
            && !flags.ack
            && let Some(f) = self.flows.get(&key)
            && (f.closing_since.is_some()
                || f.tcp
                    .as_ref()
                    .is_some_and(|t| t.syn_ack && (t.fin_orig || t.rst_orig || t.rst_resp)))
        {
            self.end_flow(&key, EndReason::Reused, sink);
        }
        if !self.flows.contains_key(&key) {
            self.make_room(ts, sink);
            let flow = self.new_flow(ts, sender, receiver, transport, flags, l4);
            self.flows.insert(key, flow);
            self.counters.flows_created += 1;
        }
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        flow.last_ts = ts;
        // ICMP flows keep type and code where ports would be: compare addresses only.
        let from_orig = if transport == Transport::Icmp {
            sender.0 == flow.orig.0
        } else {
            sender == flow.orig
        };
        match l4 {
            L4::Tcp {
                seq,
                ack,
                flags,
                payload,
                missing,
                ..
            } => {
                let dir_idx = usize::from(!from_orig);
                if from_orig {
                    flow.orig_pkts += 1;
                    flow.orig_bytes += payload.len() as u64 + u64::from(missing);
                } else {
                    flow.resp_pkts += 1;
                    flow.resp_bytes += payload.len() as u64 + u64::from(missing);
                }
                let Flow {
                    tcp,
                    app,
                    server,
                    closing_since,
                    ..
                } = flow;
                let Some(tcp) = tcp.as_mut() else { return };
                let sender_is_server = Some(sender) == *server;
                if flags.syn {
                    if flags.ack {
                        tcp.syn_ack = true;
                    } else if from_orig {
                        tcp.syn = true;
                    }
                    if let Some(s) = tcp.streams.get_mut(dir_idx) {
                        s.on_syn(seq);
                    }
                }
                let [s0, s1] = &mut tcp.streams;
                let (mine, theirs) = if dir_idx == 0 { (s0, s1) } else { (s1, s0) };
                let out = &mut self.out;
                let opts = &self.config.syslog;
                let sc = &mut self.stream_counters;
                if flags.ack {
                    theirs.on_peer_ack(ack, sc, &mut |c| {
                        app.on_chunk(!sender_is_server, c, out, opts)
                    });
                }
                let held_before = mine.held_bytes();
                mine.on_segment(
                    seq,
                    ts,
                    payload,
                    missing,
                    &self.config.stream,
                    sc,
                    &mut |c| app.on_chunk(sender_is_server, c, out, opts),
                );
                if flags.fin || flags.rst {
                    mine.flush(sc, &mut |c| app.on_chunk(sender_is_server, c, out, opts));
                }
                if flags.rst {
                    theirs.flush(sc, &mut |c| app.on_chunk(!sender_is_server, c, out, opts));
                }
                let held_after = mine.held_bytes();
                self.held_total = (self.held_total + held_after).saturating_sub(held_before);
                if self.held_total > self.config.max_reassembly_bytes {
                    self.counters.reassembly_limit_flushes += 1;
                    if !std::mem::replace(&mut self.warned.reassembly_full, true) {
                        tracing::warn!(
                            limit_bytes = self.config.max_reassembly_bytes,
                            "TCP reassembly memory limit reached: held segments are flushed with gaps"
                        );
                    }
                    let before = mine.held_bytes();
                    mine.flush(sc, &mut |c| app.on_chunk(sender_is_server, c, out, opts));
                    self.held_total = self.held_total.saturating_sub(before);
                }
                if flags.fin {
                    if from_orig {
                        tcp.fin_orig = true
                    } else {
                        tcp.fin_resp = true
                    }
                }
                if flags.rst {
                    if from_orig {
                        tcp.rst_orig = true
                    } else {
                        tcp.rst_resp = true
                    }
                }
                if (tcp.fin_orig && tcp.fin_resp) || flags.rst {
                    closing_since.get_or_insert(ts);
                }
                Self::note_service(flow, &mut self.counters);
            }
            L4::Udp { payload, .. } => {
                if from_orig {
                    flow.orig_pkts += 1;
                    flow.orig_bytes += payload.len() as u64;
                } else {
                    flow.resp_pkts += 1;
                    flow.resp_bytes += payload.len() as u64;
                }
                // Over UDP every datagram to a syslog port is one message (RFC 5426).
                if self.config.syslog_udp_ports.contains(&receiver.1) && !payload.is_empty() {
                    match parse_syslog(payload, ts, &self.config.syslog) {
                        Ok(mut ev) => {
                            ev.src_ip = Some(sender.0);
                            ev.src_port = Some(sender.1);
                            self.out.syslog.push(ev);
                            if flow.service.is_none() {
                                flow.service = Some("syslog");
                                self.counters.syslog_flows += 1;
                            }
                        }
                        Err(_) => self.out.syslog_rejected += 1,
                    }
                }
            }
            _ => {
                if from_orig {
                    flow.orig_pkts += 1
                } else {
                    flow.resp_pkts += 1
                }
            }
        }
    }

    fn new_flow(
        &self,
        ts: Timestamp,
        sender: Endpoint,
        receiver: Endpoint,
        transport: Transport,
        flags: TcpFlags,
        l4: L4<'_>,
    ) -> Flow {
        let is_modbus_port =
            |p: u16| transport == Transport::Tcp && self.config.modbus_ports.contains(&p);
        // Who originated: the SYN's sender; the SYN-ACK's receiver; otherwise (picked up
        // mid-stream) the side talking to a known server port, or else the first sender.
        let sender_is_orig = if flags.syn {
            !flags.ack
        } else {
            !is_modbus_port(sender.1) || is_modbus_port(receiver.1)
        };
        let (orig, resp) = if sender_is_orig {
            (sender, receiver)
        } else {
            (receiver, sender)
        };
        let (orig, resp) = match l4 {
            // ICMP has no ports; keep type and code where ports would be, as Zeek does.
            L4::Icmp { icmp_type, code } => {
                ((orig.0, u16::from(icmp_type)), (resp.0, u16::from(code)))
            }
            _ => (orig, resp),
        };
        let is_syslog_port =
            |p: u16| transport == Transport::Tcp && self.config.syslog_tcp_ports.contains(&p);
        let server = [resp, orig]
            .into_iter()
            .find(|e| is_modbus_port(e.1))
            .or_else(|| [resp, orig].into_iter().find(|e| is_syslog_port(e.1)));
        let app = match server {
            Some(server) if is_modbus_port(server.1) => {
                let client = if server == resp { orig } else { resp };
                App::Modbus(Box::new(ModbusSession::new(
                    client,
                    server,
                    self.config.modbus,
                )))
            }
            Some(server) => App::Syslog(Box::new(SyslogStream {
                sender: if server == resp { orig } else { resp },
                framer: StreamFramer::new(None, self.config.syslog.max_message_bytes),
                verdict: None,
                frames: Vec::new(),
            })),
            None => App::None,
        };
        Flow {
            orig,
            resp,
            transport,
            first_ts: ts,
            last_ts: ts,
            orig_pkts: 0,
            orig_bytes: 0,
            resp_pkts: 0,
            resp_bytes: 0,
            tcp: (transport == Transport::Tcp).then(Box::<TcpState>::default),
            closing_since: None,
            app,
            server,
            service: None,
        }
    }

    /// Ends flows that closed or went idle.
    fn sweep(&mut self, now: Timestamp, sink: &mut dyn EventSink) {
        let cfg = &self.config;
        let mut expired: Vec<(Timestamp, FlowKey, EndReason)> = self
            .flows
            .iter()
            .filter_map(|(k, f)| {
                let idle = now.as_micros().saturating_sub(f.last_ts.as_micros());
                if let Some(c) = f.closing_since
                    && now.as_micros().saturating_sub(c.as_micros()) > cfg.tcp_close_timeout_us
                {
                    return Some((f.first_ts, *k, EndReason::Closed));
                }
                let limit = match f.transport {
                    Transport::Tcp => cfg.tcp_idle_timeout_us,
                    Transport::Udp => cfg.udp_idle_timeout_us,
                    Transport::Icmp => cfg.icmp_idle_timeout_us,
                };
                (idle > limit).then_some((f.first_ts, *k, EndReason::Idle))
            })
            .collect();
        expired.sort_by_key(|e| e.0);
        for (_, key, reason) in expired {
            self.end_flow(&key, reason, sink);
        }
        self.counters.fragments_expired += self.defrag.expire(now) as u64;
        // Requests whose response never came are released by time, not only at flow end.
        for flow in self.flows.values_mut() {
            if let App::Modbus(session) = &mut flow.app {
                session.finish_timed_out(now, &mut self.out.modbus_counters, &mut self.out.modbus);
            }
        }
        self.flush_app_events(sink);
    }

    /// Keeps the table under its limit: the least recently active sixteenth goes.
    fn make_room(&mut self, now: Timestamp, sink: &mut dyn EventSink) {
        if self.flows.len() < self.config.max_flows {
            return;
        }
        self.sweep(now, sink);
        if self.flows.len() < self.config.max_flows {
            return;
        }
        if !std::mem::replace(&mut self.warned.flow_table_full, true) {
            tracing::warn!(
                max_flows = self.config.max_flows,
                "flow table full: the least recently active flows are ended early"
            );
        }
        let mut by_age: Vec<(Timestamp, FlowKey)> =
            self.flows.iter().map(|(k, f)| (f.last_ts, *k)).collect();
        let n = (by_age.len() / 16).max(1);
        by_age.select_nth_unstable_by_key(n - 1, |e| e.0);
        by_age.truncate(n);
        by_age.sort_by_key(|e| e.0);
        for (_, key) in by_age {
            self.counters.flows_evicted += 1;
            self.end_flow(&key, EndReason::Evicted, sink);
        }
    }

    fn end_flow(&mut self, key: &FlowKey, reason: EndReason, sink: &mut dyn EventSink) {
        let Some(mut flow) = self.flows.remove(key) else {
            return;
        };
        self.counters.flows_ended += 1;
        let sc = &mut self.stream_counters;
        let out = &mut self.out;
        let opts = &self.config.syslog;
        if let Some(tcp) = flow.tcp.as_mut() {
            for (idx, stream) in tcp.streams.iter_mut().enumerate() {
                self.held_total = self.held_total.saturating_sub(stream.held_bytes());
                let sender = if idx == 0 { flow.orig } else { flow.resp };
                let from_server = Some(sender) == flow.server;
                let app = &mut flow.app;
                stream.flush(sc, &mut |c| app.on_chunk(from_server, c, out, opts));
            }
        }
        flow.app.finish(flow.last_ts, out, opts);
        Self::note_service(&mut flow, &mut self.counters);
        self.flush_app_events(sink);
        self.counters.events_flow += 1;
        sink.event(Event::Flow(FlowEvent {
            ts: flow.first_ts,
            end_ts: flow.last_ts,
            transport: flow.transport,
            src_ip: flow.orig.0,
            src_port: flow.orig.1,
            dst_ip: flow.resp.0,
            dst_port: flow.resp.1,
            service: flow.service.map(Cow::Borrowed),
            orig_pkts: flow.orig_pkts,
            orig_bytes: flow.orig_bytes,
            resp_pkts: flow.resp_pkts,
            resp_bytes: flow.resp_bytes,
            state: Cow::Borrowed(conn_state(&flow)),
            reason: Cow::Borrowed(match reason {
                EndReason::Closed => "closed",
                EndReason::Idle => "idle",
                EndReason::Evicted => "evicted",
                EndReason::Reused => "reused",
                EndReason::EndOfInput => "end_of_input",
            }),
            anomalies: Vec::new(),
        }));
    }

    fn flush_app_events(&mut self, sink: &mut dyn EventSink) {
        for e in self.out.modbus.drain(..) {
            self.counters.events_modbus += 1;
            self.counters.modbus_events_with_anomalies += u64::from(!e.anomalies.is_empty());
            sink.event(Event::Modbus(e));
        }
        for e in self.out.syslog.drain(..) {
            self.counters.events_syslog += 1;
            self.counters.syslog_events_with_anomalies += u64::from(!e.anomalies.is_empty());
            sink.event(Event::Syslog(e));
        }
    }

    /// Records the service once the protocol layer decided, and drops a layer that found
    /// its protocol absent.
    fn note_service(flow: &mut Flow, counters: &mut Counters) {
        if flow.service.is_some() {
            return;
        }
        match flow.app.service() {
            Some("modbus") => {
                flow.service = Some("modbus");
                counters.modbus_flows += 1;
            }
            Some("syslog") => {
                flow.service = Some("syslog");
                counters.syslog_flows += 1;
            }
            Some(_) => {
                match flow.app {
                    App::Modbus(_) => counters.not_modbus_flows += 1,
                    App::Syslog(_) => counters.not_syslog_flows += 1,
                    App::None => {}
                }
                flow.app = App::None;
            }
            None => {}
        }
    }
}

/// Zeek's `conn_state` for a flow.
fn conn_state(flow: &Flow) -> &'static str {
    let Some(t) = flow.tcp.as_deref() else {
        return if flow.resp_pkts > 0 { "SF" } else { "S0" };
    };
    match (t.syn, t.syn_ack) {
        (true, false) => {
            if t.rst_resp {
                "REJ"
            } else if t.rst_orig {
                "RSTOS0"
            } else if t.fin_orig {
                "SH"
            } else {
                "S0"
            }
        }
        (true, true) => {
            if t.rst_orig {
                "RSTO"
            } else if t.rst_resp {
                "RSTR"
            } else if t.fin_orig && t.fin_resp {
                "SF"
            } else if t.fin_orig {
                "S2"
            } else if t.fin_resp {
                "S3"
            } else {
                "S1"
            }
        }
        (false, true) => {
            if t.rst_resp {
                "RSTRH"
            } else if t.fin_resp {
                "SHR"
            } else {
                "OTH"
            }
        }
        (false, false) => "OTH",
    }
}
