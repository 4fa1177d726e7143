//! Golden tests of the agent's Modbus/TCP decoding on captures the project builds itself.
//!
//! Provenance: a `tokio-modbus` client runs the script of `mamori_tests::modbus_script` (every
//! function code the agent decodes, each with a normal and an exception response) against the
//! `tokio-modbus` plant of `mamori_tests::modbus_plant`, on loopback, through the recording
//! proxy of `mamori_tests::recorder`. The recorded application bytes are laid out as pcaps by
//! `mamori_tests::pcapgen` in many TCP shapes (segmentation, retransmission, reordering,
//! loss, mid-stream pickup, endings, link layers, IPv6). The truth is what the client sent
//! and received.
//!
//! What may differ between shapes, and why:
//! - timestamps and latencies: a PDU is stamped with the frame that carried its first byte
//!   (Zeek's convention), and the shapes put that byte in different frames. Every shape is
//!   checked against the exact timestamps the generator knows, and all shapes against one
//!   another with timestamps set aside;
//! - anomalies, only where bytes are missing from the capture: a lost request leaves its
//!   response `unsolicited_response`, a lost response leaves its request
//!   `unanswered_request`, and the next message in the damaged direction carries
//!   `stream_gap` (and `resynchronised` when the loss cut an ADU in two);
//! - the flow's packet and byte counts and state, which follow the frames of each shape.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mamori_agent::pipeline::PipelineConfig;
use mamori_agent::replay::{ReplayReport, replay_to_vec};
use mamori_models::{Anomaly, Event, FlowEvent, ModbusEvent, Timestamp, Values};
use mamori_tests::modbus_plant::UNIT_SERVER_ID_WITH_DATA;
use mamori_tests::modbus_script::{Op, Outcome, Session, full_script, record_session};
use mamori_tests::pcapgen::{
    Capture, Ending, Link, Opening, Segmentation, Shape, Side, TcpConversation, synthesise,
};
use tokio_modbus::Response;

const CLIENT_V4: &str = "10.20.0.10:49152";
const SERVER_V4: &str = "10.20.0.5:502";
const CLIENT_V6: &str = "[fd00:20::10]:49152";
const SERVER_V6: &str = "[fd00:20::5]:502";

/// The plant session, recorded once per test binary.
fn session() -> &'static Session {
    static SESSION: OnceLock<Session> = OnceLock::new();
    SESSION.get_or_init(|| record_session(full_script()).expect("recording the plant session"))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn baseline() -> Shape {
    Shape::baseline(addr(CLIENT_V4), addr(SERVER_V4))
}

fn shaped(segmentation: Segmentation) -> Shape {
    Shape {
        segmentation,
        ..baseline()
    }
}

/// What one replay produced.
struct Replayed {
    modbus: Vec<ModbusEvent>,
    flows: Vec<FlowEvent>,
    report: ReplayReport,
}

fn replay_bytes(pcap: &[u8], config: PipelineConfig) -> Replayed {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.pcap");
    std::fs::write(&path, pcap).unwrap();
    replay_path(&path, config)
}

fn replay_path(path: &Path, config: PipelineConfig) -> Replayed {
    let (events, report) = replay_to_vec(&[path.to_owned()], config);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let mut modbus = Vec::new();
    let mut flows = Vec::new();
    for e in events {
        match e {
            Event::Modbus(m) => modbus.push(m),
            Event::Flow(f) => flows.push(f),
            Event::Syslog(s) => panic!("unexpected syslog event {s:?}"),
        }
    }
    Replayed {
        modbus,
        flows,
        report,
    }
}

fn synthesise_and_replay(shape: &Shape) -> (Capture, Replayed) {
    let capture = synthesise(&session().dialogue, shape);
    let replayed = replay_bytes(&capture.pcap, PipelineConfig::default());
    (capture, replayed)
}

/// Events in transaction order (a lost request's response is reported when it arrives, not
/// where its request would have been).
fn by_tid(mut events: Vec<ModbusEvent>) -> Vec<ModbusEvent> {
    events.sort_by_key(|e| (e.tid, e.request.is_none()));
    events
}

/// An event with its timestamps and latency set aside (their presence kept).
fn untimed(e: &ModbusEvent) -> ModbusEvent {
    let mut e = e.clone();
    e.ts = Timestamp::default();
    for p in [&mut e.request, &mut e.response].into_iter().flatten() {
        p.ts = Timestamp::default();
    }
    e.latency_us = e.latency_us.map(|_| 0);
    e
}

/// Compares event lists one transaction at a time, so that a failure names the transaction.
fn assert_same_events(got: &[ModbusEvent], want: &[ModbusEvent], what: &str) {
    let got_tids: Vec<u16> = got.iter().map(|e| e.tid).collect();
    let want_tids: Vec<u16> = want.iter().map(|e| e.tid).collect();
    assert_eq!(got_tids, want_tids, "{what}: transaction ids of the events");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g, w, "{what}: tid {} ({})", w.tid, w.func_name);
    }
}

/// As [`assert_same_events`], with the timestamps of transaction `tid` set aside.
fn assert_same_events_except_time_of(
    got: &[ModbusEvent],
    want: &[ModbusEvent],
    tid: u16,
    what: &str,
) {
    let loosen = |events: &[ModbusEvent]| -> Vec<ModbusEvent> {
        events
            .iter()
            .map(|e| if e.tid == tid { untimed(e) } else { e.clone() })
            .collect()
    };
    assert_same_events(&loosen(got), &loosen(want), what);
}

/// The events the truth predicts for `capture` (timestamps from the generator).
fn expected(shape: &Shape, capture: &Capture) -> Vec<ModbusEvent> {
    session().expected_events(shape.client, shape.server, &capture.first_byte_at_us)
}

/// The one flow event, checked against what the generator wrote.
fn assert_flow(r: &Replayed, shape: &Shape, capture: &Capture, state: &str) {
    assert_eq!(
        r.flows.len(),
        1,
        "one flow event per connection: {:?}",
        r.flows
    );
    let f = &r.flows[0];
    assert_eq!(
        (f.src_ip, f.src_port),
        (shape.client.ip(), shape.client.port()),
        "originator"
    );
    assert_eq!(
        (f.dst_ip, f.dst_port),
        (shape.server.ip(), shape.server.port()),
        "responder"
    );
    assert_eq!(f.service.as_deref(), Some("modbus"));
    assert_eq!(
        (f.orig_pkts, f.orig_bytes),
        (capture.client.packets, capture.client.payload_bytes),
        "client side"
    );
    assert_eq!(
        (f.resp_pkts, f.resp_bytes),
        (capture.server.packets, capture.server.payload_bytes),
        "server side"
    );
    assert_eq!(f.state, state, "conn_state");
    assert!(f.end_ts >= f.ts);
    assert_eq!(r.report.counters.packets, capture.frames as u64);
    assert_eq!(
        r.report.counters.malformed + r.report.counters.unsupported_link + r.report.counters.not_ip,
        0
    );
}

/// A clean shape: exactly the truth, with exact timestamps; no stream anomalies; counters
/// quiet.
fn check_clean(shape: &Shape, state: &str) -> (Capture, Replayed) {
    let (capture, r) = synthesise_and_replay(shape);
    assert_same_events(
        &by_tid(r.modbus.clone()),
        &expected(shape, &capture),
        &format!("{shape:?}"),
    );
    assert_flow(&r, shape, &capture, state);
    let c = &r.report.counters;
    assert_eq!(
        (
            c.tcp_gaps,
            c.modbus_resynchronisations,
            c.modbus_skipped_bytes
        ),
        (0, 0, 0)
    );
    assert_eq!(c.modbus_adus, session().dialogue.len() as u64);
    (capture, r)
}

/// The events of the baseline shape with timestamps set aside: what every clean shape must
/// also produce.
fn baseline_untimed() -> Vec<ModbusEvent> {
    let (_, r) = synthesise_and_replay(&baseline());
    by_tid(r.modbus).iter().map(untimed).collect()
}

fn assert_same_as_baseline(r: &Replayed, what: &str) {
    let got: Vec<ModbusEvent> = by_tid(r.modbus.clone()).iter().map(untimed).collect();
    assert_same_events(&got, &baseline_untimed(), what);
}

/// Index in the dialogue of the request (`Side::Client`) or response of transaction `tid`.
fn message_of(tid: u16, side: Side) -> usize {
    let t = &session().transactions[usize::from(tid)];
    match side {
        Side::Client => t.request_msg,
        Side::Server => t.response_msg.expect("the transaction has a response"),
    }
}

// --- The session itself ---------------------------------------------------------------------

#[test]
fn script_covers_every_decoded_function_with_normal_and_exception_responses() {
    let s = session();
    let mut normal = BTreeSet::new();
    let mut exception = BTreeSet::new();
    for (step, outcome) in s.steps.iter().zip(&s.outcomes) {
        match outcome {
            Outcome::Response(_) => normal.insert(step.op.function()),
            Outcome::Exception(_) => exception.insert(step.op.function()),
            Outcome::Silence => false,
        };
    }
    let decoded: BTreeSet<u8> = [
        1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, 20, 21, 22, 23, 24, 43,
    ]
    .into();
    assert!(
        decoded.is_subset(&normal),
        "without a normal response: {:?}",
        decoded.difference(&normal).collect::<Vec<_>>()
    );
    assert!(
        decoded.is_subset(&exception),
        "without an exception: {:?}",
        decoded.difference(&exception).collect::<Vec<_>>()
    );
    assert!(
        normal.contains(&65) && exception.contains(&65),
        "user-defined function 65"
    );
    assert!(
        exception.contains(&90) && exception.contains(&55),
        "vendor 90 and unassigned 55"
    );
    let subs: BTreeSet<u16> = s
        .steps
        .iter()
        .filter_map(|st| match &st.op {
            Op::Diagnostics(sub, _) => Some(*sub),
            _ => None,
        })
        .collect();
    assert!(
        subs.contains(&0) && subs.contains(&4),
        "diagnostics 0 and 4: {subs:?}"
    );
    let codes: BTreeSet<u8> = s
        .outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Exception(c) => Some(*c),
            _ => None,
        })
        .collect();
    assert_eq!(
        codes,
        [1, 2, 3, 4, 6, 10, 11].into(),
        "exception codes the plant returned"
    );
}

#[test]
fn recording_frames_into_one_adu_per_message_in_causal_order() {
    let s = session();
    // Every request but the one Force Listen Only Mode swallows has its response.
    assert_eq!(s.dialogue.len(), 2 * s.steps.len() - 1);
    for t in &s.transactions {
        if let Some(r) = t.response_msg {
            assert!(
                r > t.request_msg,
                "tid {}: response recorded before request",
                t.tid
            );
        }
    }
    let concatenated: Vec<u8> = s
        .dialogue
        .iter()
        .filter(|m| m.from == Side::Client)
        .flat_map(|m| m.bytes.clone())
        .collect();
    assert_eq!(
        concatenated,
        s.recording.stream(Side::Client),
        "framing loses or adds no byte"
    );
}

// --- Clean shapes: exactly the truth ----------------------------------------------------------

#[test]
fn one_adu_per_segment() {
    let (capture, r) = check_clean(&baseline(), "SF");
    // Exact timing: request, the server's ACK, then the response, 250 µs apart.
    for e in &r.modbus {
        if e.response.is_some() && e.request.is_some() {
            assert_eq!(e.latency_us, Some(500), "tid {}", e.tid);
        }
    }
    assert_eq!(r.report.counters.tcp_retransmissions, 0);
    assert!(capture.frames > 3 * session().dialogue.len() / 2);
}

#[test]
fn adu_split_across_two_segments() {
    let (_, r) = check_clean(&shaped(Segmentation::Split { parts: 2 }), "SF");
    assert_same_as_baseline(&r, "split in 2");
}

#[test]
fn adu_split_across_three_segments() {
    let (_, r) = check_clean(&shaped(Segmentation::Split { parts: 3 }), "SF");
    assert_same_as_baseline(&r, "split in 3");
}

#[test]
fn six_adus_in_one_segment() {
    // Windows of 12 messages: six requests pipelined in one segment, then six responses.
    let (_, r) = check_clean(&shaped(Segmentation::Coalesced { messages: 12 }), "SF");
    assert_same_as_baseline(&r, "pipelined six at a time");
}

#[test]
fn whole_dialogue_pipelined_in_two_segments() {
    let n = session().dialogue.len();
    let (_, r) = check_clean(&shaped(Segmentation::Coalesced { messages: n }), "SF");
    assert_same_as_baseline(&r, "everything pipelined");
}

#[test]
fn retransmitted_segments_are_ignored() {
    let (capture, r) = check_clean(&shaped(Segmentation::Retransmitted { every: 3 }), "SF");
    assert_same_as_baseline(&r, "retransmissions");
    let dups = (session().dialogue.len() / 3) as u64;
    assert_eq!(r.report.counters.tcp_retransmissions, dups);
    assert!(capture.client.payload_bytes > session().recording.stream(Side::Client).len() as u64);
}

#[test]
fn overlapping_retransmission_carrying_extra_bytes() {
    let (_, r) = check_clean(&shaped(Segmentation::OverlappingRetransmission), "SF");
    assert_same_as_baseline(&r, "overlapping retransmissions");
}

#[test]
fn out_of_order_segments_are_reordered() {
    let (_, r) = check_clean(&shaped(Segmentation::OutOfOrder), "SF");
    assert_same_as_baseline(&r, "out of order");
    assert_eq!(
        r.report.counters.tcp_out_of_order,
        session().dialogue.len() as u64
    );
}

#[test]
fn midstream_pickup_without_handshake() {
    let shape = Shape {
        opening: Opening::Midstream { first_message: 0 },
        ..baseline()
    };
    let (_, r) = check_clean(&shape, "OTH");
    assert_same_as_baseline(&r, "mid-stream");
}

#[test]
fn connection_reset_by_the_client() {
    let shape = Shape {
        ending: Ending::ClientRst,
        ..baseline()
    };
    let (_, r) = check_clean(&shape, "RSTO");
    assert_same_as_baseline(&r, "RST ending");
}

#[test]
fn capture_ends_with_the_connection_open() {
    let shape = Shape {
        ending: Ending::Open,
        ..baseline()
    };
    let (_, r) = check_clean(&shape, "S1");
    assert_same_as_baseline(&r, "open at the end");
    assert_eq!(r.flows[0].reason, "end_of_input");
}

#[test]
fn vlan_tagged_frames() {
    let (_, r) = check_clean(
        &Shape {
            link: Link::Vlan(42),
            ..baseline()
        },
        "SF",
    );
    assert_same_as_baseline(&r, "802.1Q");
}

#[test]
fn linux_cooked_capture() {
    let (_, r) = check_clean(
        &Shape {
            link: Link::LinuxSll,
            ..baseline()
        },
        "SF",
    );
    assert_same_as_baseline(&r, "Linux SLL");
}

#[test]
fn ipv6_endpoints() {
    let shape = Shape {
        client: addr(CLIENT_V6),
        server: addr(SERVER_V6),
        ..shaped(Segmentation::Split { parts: 3 })
    };
    let (_, r) = check_clean(&shape, "SF");
    let got: Vec<ModbusEvent> = by_tid(r.modbus.clone())
        .iter()
        .map(|e| ModbusEvent {
            src_ip: addr(CLIENT_V4).ip(),
            dst_ip: addr(SERVER_V4).ip(),
            ..untimed(e)
        })
        .collect();
    assert_same_events(&got, &baseline_untimed(), "IPv6 (addresses aside)");
}

#[test]
fn modbus_on_a_configured_port() {
    let shape = Shape {
        server: addr("10.20.0.5:5020"),
        ..baseline()
    };
    let capture = synthesise(&session().dialogue, &shape);
    let unconfigured = replay_bytes(&capture.pcap, PipelineConfig::default());
    assert!(
        unconfigured.modbus.is_empty(),
        "port 5020 is not Modbus by default"
    );
    let mut config = PipelineConfig::default();
    config.modbus_ports.push(5020);
    let r = replay_bytes(&capture.pcap, config);
    assert_same_events(
        &by_tid(r.modbus.clone()),
        &expected(&shape, &capture),
        "port 5020",
    );
    assert_flow(&r, &shape, &capture, "SF");
}

// --- Damaged shapes: the truth, plus what the damage must say -----------------------------------

/// The expected events of `capture` with `edit` applied to the transaction `tid`.
fn with_edit(
    mut want: Vec<ModbusEvent>,
    tid: u16,
    edit: impl FnOnce(&mut ModbusEvent),
) -> Vec<ModbusEvent> {
    let e = want.iter_mut().find(|e| e.tid == tid).unwrap();
    edit(e);
    want
}

/// A request missing from the capture: its response is unsolicited.
fn request_lost(e: &mut ModbusEvent) {
    e.ts = e.response.as_ref().unwrap().ts;
    e.request = None;
    e.latency_us = None;
    e.anomalies = vec![Anomaly::UnsolicitedResponse];
}

#[test]
fn lost_request_segment_flags_a_gap_on_the_next_request() {
    let lost = 4; // READ_HOLDING_REGISTERS
    let shape = shaped(Segmentation::Lost {
        message: message_of(lost, Side::Client),
    });
    let (capture, r) = synthesise_and_replay(&shape);
    let want = with_edit(expected(&shape, &capture), lost, request_lost);
    let want = with_edit(want, lost + 1, |e| {
        e.anomalies.insert(0, Anomaly::StreamGap)
    });
    // Request 5 waited behind the hole until the server's ACK: its time is checked by
    // `adu_held_behind_a_hole_keeps_the_time_of_its_segment`.
    assert_same_events_except_time_of(&by_tid(r.modbus.clone()), &want, lost + 1, "lost request");
    assert_flow(&r, &shape, &capture, "SF");
    assert_eq!(r.report.counters.tcp_gaps, 1);
    assert_eq!(
        r.report.counters.tcp_gap_bytes,
        session().dialogue[message_of(lost, Side::Client)]
            .bytes
            .len() as u64
    );
}

#[test]
fn lost_response_segment_leaves_the_request_unanswered() {
    let lost = 4;
    let shape = shaped(Segmentation::Lost {
        message: message_of(lost, Side::Server),
    });
    let (capture, r) = synthesise_and_replay(&shape);
    let want = with_edit(expected(&shape, &capture), lost, |e| {
        e.response = None;
        e.exception = None;
        e.exception_code = None;
        e.latency_us = None;
        e.anomalies = vec![Anomaly::UnansweredRequest];
    });
    // The gap is in the server's stream: the flag arrives with response 5, after the
    // request's own flags.
    let want = with_edit(want, lost + 1, |e| e.anomalies.push(Anomaly::StreamGap));
    assert_same_events_except_time_of(&by_tid(r.modbus.clone()), &want, lost + 1, "lost response");
    assert_flow(&r, &shape, &capture, "SF");
    assert_eq!(r.report.counters.tcp_gaps, 1);
}

#[test]
fn lost_adu_header_resynchronises_on_the_next_request() {
    // The MBAP header of request 4 is lost, its PDU arrives: garbage in front of request 5.
    let lost = 4;
    let shape = shaped(Segmentation::LostHead {
        message: message_of(lost, Side::Client),
        bytes: 7,
    });
    let (capture, r) = synthesise_and_replay(&shape);
    let want = with_edit(expected(&shape, &capture), lost, request_lost);
    let want = with_edit(want, lost + 1, |e| {
        e.anomalies
            .splice(0..0, [Anomaly::StreamGap, Anomaly::Resynchronised]);
    });
    assert_same_events(&by_tid(r.modbus.clone()), &want, "lost header");
    assert_flow(&r, &shape, &capture, "SF");
    assert_eq!(r.report.counters.modbus_resynchronisations, 1);
}

#[test]
fn midstream_pickup_starting_with_a_response() {
    let shape = Shape {
        opening: Opening::Midstream { first_message: 1 },
        ..baseline()
    };
    let (capture, r) = synthesise_and_replay(&shape);
    let want = with_edit(expected(&shape, &capture), 0, |e| {
        request_lost(e);
        // Without the request the quantity is unknown: every bit of the bytes is reported,
        // padding included.
        let Outcome::Response(Response::ReadCoils(bits)) = &session().outcomes[0] else {
            panic!("tid 0 reads coils")
        };
        e.response.as_mut().unwrap().values = Some(Values::Coils(bits.clone()));
    });
    assert_same_events(
        &by_tid(r.modbus.clone()),
        &want,
        "mid-stream from a response",
    );
    assert_flow(&r, &shape, &capture, "OTH");
    // Nothing was lost inside the capture: the stream starts where the capture does.
    assert_eq!(r.report.counters.tcp_gaps, 0);
}

// --- Reconnaissance and connections an attacker shapes ------------------------------------------

/// tshark's count of Modbus/TCP PDUs in a capture (every MBAP ADU, several per frame
/// included), or `None` (with the reason printed) when tshark is not installed.
fn tshark_pdus(pcap: &[u8]) -> Option<usize> {
    if std::process::Command::new("tshark")
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var_os("MAMORI_REQUIRE_TSHARK").is_some_and(|v| v == "1") {
            panic!("MAMORI_REQUIRE_TSHARK=1 but tshark is not installed");
        }
        eprintln!("tshark comparison skipped: tshark is not installed");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.pcap");
    std::fs::write(&path, pcap).unwrap();
    let out = std::process::Command::new("tshark")
        .args(["-r", &path.to_string_lossy(), "-Y", "mbtcp", "-T", "fields"])
        .args(["-e", "mbtcp.trans_id"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split(',').count())
            .sum(),
    )
}

fn pdu_count(events: &[ModbusEvent]) -> usize {
    events
        .iter()
        .map(|e| usize::from(e.request.is_some()) + usize::from(e.response.is_some()))
        .sum()
}

const SCANNER: &str = "10.20.0.66:40123";
const SCAN_START_US: i64 = 1_709_251_200_000_000;

#[test]
fn function_code_scan_is_decoded_every_code_and_pdu_counts_equal_tsharks() {
    use mamori_tests::modbus_recon::{IMPLEMENTED, function_code_scan};
    // Every code, 0 and the exception-bit codes included. Before: code 0 made the flow
    // "not Modbus" and nothing of the scan was reported.
    let pcap = function_code_scan(
        addr(SCANNER),
        addr(SERVER_V4),
        SCAN_START_US,
        0..=255,
        5_000,
    );
    let r = replay_bytes(&pcap, PipelineConfig::default());
    assert_eq!(r.modbus.len(), 256);
    for (code, e) in (0..=255u8).zip(&r.modbus) {
        assert_eq!(e.tid, u16::from(code) + 1);
        assert_eq!(e.func, code & 0x7F, "{e:?}");
        assert!(e.request.is_some() && e.response.is_some(), "{e:?}");
        let answered = IMPLEMENTED.contains(&code);
        assert_eq!(e.exception_code, (!answered).then_some(1), "{e:?}");
        if !answered {
            assert_eq!(e.exception.as_deref(), Some("ILLEGAL_FUNCTION"));
        }
    }
    assert_eq!(r.flows.len(), 1);
    assert_eq!(r.flows[0].service.as_deref(), Some("modbus"));
    assert_eq!(r.report.counters.modbus_resynchronisations, 0);
    if let Some(theirs) = tshark_pdus(&pcap) {
        assert_eq!(pdu_count(&r.modbus), theirs);
    }
}

#[test]
fn unit_id_scans_are_decoded_and_pdu_counts_equal_tsharks() {
    use mamori_tests::modbus_recon::{DEVICE_UNIT, OtherUnits, unit_id_scan};
    for others in [OtherUnits::GatewayException, OtherUnits::Silent] {
        let pcap = unit_id_scan(
            addr(SCANNER),
            addr(SERVER_V4),
            SCAN_START_US,
            0..=255,
            others,
            5_000,
        );
        let r = replay_bytes(&pcap, PipelineConfig::default());
        assert_eq!(r.modbus.len(), 256, "{others:?}");
        let units: Vec<u8> = r.modbus.iter().map(|e| e.unit).collect();
        assert_eq!(units, (0..=255).collect::<Vec<u8>>());
        for e in &r.modbus {
            let answered = e.unit == DEVICE_UNIT || others == OtherUnits::GatewayException;
            assert_eq!(e.response.is_some(), answered, "{others:?} {e:?}");
            if e.unit != DEVICE_UNIT && answered {
                assert_eq!(e.exception_code, Some(0x0B));
            }
        }
        if let Some(theirs) = tshark_pdus(&pcap) {
            assert_eq!(pdu_count(&r.modbus), theirs, "{others:?}");
        }
    }
}

#[test]
fn capture_starting_inside_an_adu_decodes_what_follows() {
    // The capture starts after the first 5 bytes of the first request: its first segment is
    // the rest of an ADU. Before: that segment made the whole connection "not Modbus".
    let dialogue = &session().dialogue;
    let mut c = TcpConversation::new(
        Link::Ethernet,
        addr(CLIENT_V4),
        addr(SERVER_V4),
        SCAN_START_US,
        250,
    );
    let first = &dialogue[0];
    assert_eq!(first.from, Side::Client);
    c.lose(Side::Client, 5);
    c.data(Side::Client, &first.bytes[5..]);
    for m in &dialogue[1..] {
        c.data(m.from, &m.bytes);
        c.ack(m.from.other());
    }
    let pcap = c.to_pcap();
    let r = replay_bytes(&pcap, PipelineConfig::default());
    let want: Vec<ModbusEvent> = baseline_untimed()
        .into_iter()
        .filter(|e| e.tid != 0)
        .collect();
    let got: Vec<ModbusEvent> = by_tid(r.modbus.clone())
        .iter()
        .filter(|e| e.tid != 0)
        .map(untimed)
        .collect();
    assert_same_events(&got, &want, "picked up inside the first ADU");
    assert_eq!(r.flows[0].service.as_deref(), Some("modbus"));
}

/// The replica of the Digital Bond function-code scan (part 2): committed so that the agent's
/// corpus test can read it, rebuilt here byte for byte; every PDU decoded, as many as tshark.
/// Before: its first request (code 0) made the connection "not Modbus", 0 of 281 PDUs.
#[test]
fn committed_fc_scan_replica_is_reproducible_and_counts_equal_tsharks() {
    use mamori_tests::modbus_recon::digital_bond_part2_replica;
    let path = golden_dir().join("modbus_fc_scan_part2_replica.pcap");
    let fresh = digital_bond_part2_replica(
        addr("192.168.66.235:2582"),
        addr("166.161.16.230:502"),
        1_093_530_292_212_845,
    );
    if std::env::var_os("MAMORI_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &fresh).unwrap();
    }
    let committed = std::fs::read(&path)
        .expect("golden/modbus_fc_scan_part2_replica.pcap (MAMORI_BLESS=1 writes it)");
    assert!(
        committed == fresh,
        "the replica no longer builds byte for byte"
    );
    let r = replay_path(&path, PipelineConfig::default());
    assert_eq!(r.modbus.len(), 141);
    assert_eq!(pdu_count(&r.modbus), 281);
    assert!(r.modbus.iter().all(|e| e.tid == 0 && e.unit == 1));
    let exceptions = r
        .modbus
        .iter()
        .filter(|e| e.exception_code.is_some())
        .count();
    assert_eq!(exceptions, 130);
    let funcs: Vec<u8> = r.modbus.iter().take(128).map(|e| e.func).collect();
    assert_eq!(funcs, (0..=127).collect::<Vec<u8>>());
    // Requests and responses pair in order although every transaction id is 0.
    assert!(
        r.modbus[..140].iter().all(|e| e.response.is_some()
            && !e.anomalies.contains(&Anomaly::UnsolicitedResponse)
            && !e.anomalies.contains(&Anomaly::DuplicateTransactionId)),
        "{:#?}",
        r.modbus
    );
    assert!(
        r.modbus[140]
            .anomalies
            .contains(&Anomaly::UnansweredRequest)
    );
    if let Some(theirs) = tshark_pdus(&fresh) {
        assert_eq!(theirs, 281);
    }
}

// --- Committed goldens ----------------------------------------------------------------------------

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// The committed capture (`golden/modbus_plant.pcap`, the baseline shape) and the committed
/// events (`golden/modbus_plant.events.jsonl`). `MAMORI_BLESS=1` rewrites both from a fresh
/// recording after a deliberate change to the script, the plant or the generator.
#[test]
fn committed_golden_capture_replays_to_committed_events() {
    let pcap_path = golden_dir().join("modbus_plant.pcap");
    let events_path = golden_dir().join("modbus_plant.events.jsonl");
    let fresh = synthesise(&session().dialogue, &baseline());
    if std::env::var_os("MAMORI_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&pcap_path, &fresh.pcap).unwrap();
        let (events, _) =
            replay_to_vec(std::slice::from_ref(&pcap_path), PipelineConfig::default());
        // Only a replay that matches the truth may become the golden.
        let modbus: Vec<ModbusEvent> = events
            .iter()
            .filter_map(|e| match e {
                Event::Modbus(m) => Some(m.clone()),
                _ => None,
            })
            .collect();
        assert_same_events(&by_tid(modbus), &expected(&baseline(), &fresh), "blessing");
        let jsonl: String = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        std::fs::write(&events_path, jsonl).unwrap();
    }
    let committed =
        std::fs::read(&pcap_path).expect("golden/modbus_plant.pcap (MAMORI_BLESS=1 writes it)");
    assert!(
        committed == fresh.pcap,
        "the plant session no longer records the committed capture byte for byte"
    );
    let (events, report) = replay_to_vec(&[pcap_path], PipelineConfig::default());
    assert!(report.errors.is_empty());
    let want: Vec<Event> = std::fs::read_to_string(&events_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), want.len());
    for (g, w) in events.iter().zip(&want) {
        assert_eq!(g, w);
    }
}

// --- Regressions: decoding bugs these tests found in the agent, now fixed -------------------------

#[test]
fn report_server_id_with_additional_data() {
    // libmodbus and tokio-modbus answer: byte count, server id, run indicator, additional
    // data (the layout of the specification, section 6.13).
    let session = record_session(vec![mamori_tests::modbus_script::Step {
        unit: UNIT_SERVER_ID_WITH_DATA,
        op: Op::ReportServerId,
        anomalies: Vec::new(),
    }])
    .unwrap();
    let capture = synthesise(&session.dialogue, &baseline());
    let r = replay_bytes(&capture.pcap, PipelineConfig::default());
    let e = &r.modbus[0];
    let resp = e.response.as_ref().unwrap();
    assert_eq!(
        resp.run_indicator,
        Some(true),
        "response ADU {:02x?}",
        session.dialogue[1].bytes
    );
    assert!(e.anomalies.is_empty(), "{:?}", e.anomalies);
}

#[test]
fn adu_held_behind_a_hole_keeps_the_time_of_its_segment() {
    // Request 4 is lost; request 5 arrives ahead of the hole and is held until the server's
    // ACK 250 µs later declares the hole lost. Request 5's first byte was on the wire at its
    // own frame, so that is its time (and its latency is 500 µs, as everywhere else).
    let lost = 4;
    let shape = shaped(Segmentation::Lost {
        message: message_of(lost, Side::Client),
    });
    let (capture, r) = synthesise_and_replay(&shape);
    let want = expected(&shape, &capture);
    let got = by_tid(r.modbus);
    let (g, w) = (
        got.iter().find(|e| e.tid == lost + 1).unwrap(),
        &want[usize::from(lost + 1)],
    );
    assert_eq!(
        g.request.as_ref().map(|p| p.ts),
        w.request.as_ref().map(|p| p.ts),
        "request time"
    );
    assert_eq!(g.latency_us, w.latency_us, "latency");
}
