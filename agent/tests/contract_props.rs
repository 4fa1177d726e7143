//! The contract between the agent and the collector, under hostile input: every event the
//! agent writes, from any bytes a network can send and any time a capture can claim, is one
//! the collector's decoder (`mamori_wire`, the one the intake uses) reads back whole and
//! equal. A value the collector could not read once stopped an agent's shipping for good (a
//! syslog stamp in year 10000); this holds the line for every field of every event type.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use etherparse::PacketBuilder;
use mamori_agent::capture::{LinkType, RawPacket};
use mamori_agent::pipeline::{Pipeline, PipelineConfig};
use mamori_agent::proto::syslog::{ParseOptions, parse_syslog};
use mamori_models::{Event, Timestamp};
use proptest::prelude::*;

/// What the collector makes of what the agent wrote: the events must come back whole.
fn round_trip(events: &[Event]) -> Result<(), TestCaseError> {
    let mut jsonl = Vec::new();
    for e in events {
        serde_json::to_writer(&mut jsonl, e).unwrap();
        jsonl.push(b'\n');
    }
    let body = mamori_wire::compress_jsonl(&jsonl).unwrap();
    let decoded = mamori_wire::decode_body(&body, mamori_wire::MAX_DECOMPRESSED_BYTES).unwrap();
    prop_assert!(
        decoded.rejected.is_empty(),
        "the collector would quarantine: {:?}",
        decoded.rejected
    );
    prop_assert_eq!(&decoded.events, events);
    Ok(())
}

/// Times a message or a capture can claim, the extremes first.
fn any_time() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        Just(Timestamp::MIN),
        Just(Timestamp::MAX),
        Just(Timestamp::from_micros(0)),
        Just(Timestamp::from_micros(-1)),
        any::<i64>().prop_map(Timestamp::from_micros),
        (0i64..4_102_444_800).prop_map(|s| Timestamp::from_secs_nanos(s, 0)),
    ]
}

/// Syslog headers an attacker would try: stamps at and past the ends of the calendar,
/// offsets that carry them over, huge fractions, and the usual parts.
fn hostile_syslog() -> impl Strategy<Value = Vec<u8>> {
    let stamp = prop_oneof![
        Just("9999-12-31T23:59:59-12:00".to_owned()),
        Just("0000-01-01T00:00:00+14:00".to_owned()),
        Just("9999-12-31T23:59:59.999999999Z".to_owned()),
        Just("0000-01-01T00:00:00Z".to_owned()),
        (0u32..=9999, 1u32..=12, 1u32..=28, 0u32..24, -23i32..=23).prop_map(
            |(y, m, d, h, off)| format!(
                "{y:04}-{m:02}-{d:02}T{h:02}:00:00{}{:02}:00",
                if off < 0 { '-' } else { '+' },
                off.abs()
            )
        ),
        "[0-9:.TZ+-]{0,40}",
    ];
    let rest = prop_oneof![
        Just(String::new()),
        "\\PC{0,60}",
        Just(" host app 1 ID [a@1 b=\"\\\"\\\\]\"] msg".to_owned()),
    ];
    (
        0u16..200,
        prop_oneof![Just(" "), Just("1 ")],
        stamp,
        rest,
        proptest::collection::vec(any::<u8>(), 0..20),
    )
        .prop_map(|(pri, version, stamp, rest, tail)| {
            let mut v = format!("<{pri}>{version}{stamp} h a - - -{rest}").into_bytes();
            v.extend(tail);
            v
        })
}

/// A frame as captured: raw IPv4 (link type 101), TCP or UDP to one of the agent's ports.
fn frame(tcp: bool, port: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64);
    let mut out = Vec::new();
    if tcp {
        b.tcp(40000, port, seq, 1024)
            .ack(1)
            .psh()
            .write(&mut out, payload)
            .unwrap();
    } else {
        b.udp(40000, port).write(&mut out, payload).unwrap();
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    /// Any message at any receive time.
    #[test]
    fn every_syslog_event_is_read_back_by_the_collector(
        input in prop_oneof![hostile_syslog(), proptest::collection::vec(any::<u8>(), 0..200)],
        received in any_time(),
    ) {
        let ev = parse_syslog(&input, received, &ParseOptions::default()).unwrap();
        round_trip(&[Event::Syslog(ev)])?;
    }

    /// Any bytes on the Modbus and syslog ports, at any capture time, through the whole
    /// pipeline (reassembly, Modbus, syslog on the wire, flows).
    #[test]
    fn every_pipeline_event_is_read_back_by_the_collector(
        packets in proptest::collection::vec(
            (any::<bool>(), prop_oneof![Just(502u16), Just(514u16)], any_time(),
             proptest::collection::vec(any::<u8>(), 0..300)),
            1..12,
        ),
    ) {
        let mut pipeline = Pipeline::new(PipelineConfig::default());
        let mut events = Vec::new();
        let mut seq = 1u32;
        for (tcp, port, ts, payload) in &packets {
            let data = frame(*tcp, *port, seq, payload);
            seq = seq.wrapping_add(payload.len() as u32);
            let pkt = RawPacket {
                ts: *ts,
                link_type: LinkType::RAW,
                data: &data,
                orig_len: data.len() as u32,
            };
            pipeline.process(&pkt, &mut |e: Event| events.push(e));
        }
        pipeline.finish(&mut |e: Event| events.push(e));
        round_trip(&events)?;
    }
}
