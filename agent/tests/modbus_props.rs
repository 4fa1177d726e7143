//! Property tests: the Modbus parser, the session layer and TCP reassembly never panic and
//! always make progress on arbitrary bytes, and how a valid stream is cut into segments (or
//! reordered) does not change the events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::IpAddr;

use proptest::prelude::*;

use mamori_agent::proto::modbus::parser::{
    parse_modbus_adu, parse_modbus_request, parse_modbus_response,
};
use mamori_agent::proto::modbus::{Direction, ModbusSession, SessionCounters, SessionLimits};
use mamori_agent::tcp::{Chunk, StreamCounters, StreamLimits, StreamReassembler};
use mamori_models::{ModbusEvent, Timestamp};

fn session() -> ModbusSession {
    let client: IpAddr = [10, 0, 0, 1].into();
    let server: IpAddr = [10, 0, 0, 2].into();
    ModbusSession::new((client, 40000), (server, 502), SessionLimits::default())
}

/// A valid request PDU for a public function, with its matching normal response PDU.
fn pdu_pair() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    prop_oneof![
        (1u8..=4, any::<u16>(), 1u16..=125).prop_map(|(f, a, q)| {
            let mut req = vec![f];
            req.extend(a.to_be_bytes());
            req.extend(q.to_be_bytes());
            let n = if f <= 2 {
                usize::from(q).div_ceil(8)
            } else {
                usize::from(q) * 2
            };
            let mut resp = vec![f, n as u8];
            resp.extend((0..n).map(|i| i as u8));
            (req, resp)
        }),
        (any::<u16>(), any::<u16>()).prop_map(|(a, v)| {
            let mut req = vec![6];
            req.extend(a.to_be_bytes());
            req.extend(v.to_be_bytes());
            (req.clone(), req)
        }),
        (
            any::<u16>(),
            proptest::collection::vec(any::<u16>(), 1..=20)
        )
            .prop_map(|(a, vals)| {
                let mut req = vec![16];
                req.extend(a.to_be_bytes());
                req.extend((vals.len() as u16).to_be_bytes());
                req.push((vals.len() * 2) as u8);
                for v in &vals {
                    req.extend(v.to_be_bytes());
                }
                let mut resp = vec![16];
                resp.extend(a.to_be_bytes());
                resp.extend((vals.len() as u16).to_be_bytes());
                (req, resp)
            }),
        (any::<u16>(), 1u8..=11).prop_map(|(sub, code)| {
            let mut req = vec![8];
            req.extend(sub.to_be_bytes());
            req.extend([0, 0]);
            (req, vec![0x88, code])
        }),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|data| {
            let mut req = vec![90];
            req.extend(&data);
            let mut resp = vec![90];
            resp.extend(data.iter().rev());
            (req, resp)
        }),
    ]
}

fn adu(tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(7 + pdu.len());
    v.extend(tid.to_be_bytes());
    v.extend([0, 0]);
    v.extend(((pdu.len() + 1) as u16).to_be_bytes());
    v.push(unit);
    v.extend(pdu);
    v
}

/// Requests and responses of a pipelined exchange, as two byte streams.
fn streams(pairs: &[(Vec<u8>, Vec<u8>)]) -> (Vec<u8>, Vec<u8>) {
    let mut to_server = Vec::new();
    let mut to_client = Vec::new();
    for (i, (q, r)) in pairs.iter().enumerate() {
        to_server.extend(adu(i as u16, 1, q));
        to_client.extend(adu(i as u16, 1, r));
    }
    (to_server, to_client)
}

/// Feeds both streams, cut at the given points, requests first, then responses.
fn run_session(to_server: &[u8], to_client: &[u8], cuts: &[usize]) -> Vec<ModbusEvent> {
    let mut s = session();
    let mut c = SessionCounters::default();
    let mut out = Vec::new();
    let ts = Timestamp::from_micros(1_000_000);
    for (dir, data) in [
        (Direction::ToServer, to_server),
        (Direction::ToClient, to_client),
    ] {
        let mut points: Vec<usize> = cuts.iter().map(|&k| k % (data.len() + 1)).collect();
        points.push(0);
        points.push(data.len());
        points.sort_unstable();
        points.dedup();
        for w in points.windows(2) {
            s.on_data(dir, ts, &data[w[0]..w[1]], &mut c, &mut out);
        }
    }
    s.finish(ts, &mut c, &mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn pdu_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_modbus_request(&bytes);
        let _ = parse_modbus_response(&bytes);
        let _ = parse_modbus_adu(&bytes, 1024);
    }

    #[test]
    fn session_never_panics_and_consumes_garbage(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..400), 0..20)) {
        let mut s = session();
        let mut c = SessionCounters::default();
        let mut out = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let dir = if i % 2 == 0 { Direction::ToServer } else { Direction::ToClient };
            s.on_data(dir, Timestamp::from_micros(i as i64), chunk, &mut c, &mut out);
            if i % 7 == 3 {
                s.on_gap(dir);
            }
            // Bounded: never more than one maximal ADU carried over per direction.
            prop_assert!(s.buffered_bytes() <= 2 * (7 + 1024));
        }
        s.finish(Timestamp::from_micros(1_000), &mut c, &mut out);
    }

    #[test]
    fn segmentation_does_not_change_events(
        pairs in proptest::collection::vec(pdu_pair(), 1..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
    ) {
        let (q, r) = streams(&pairs);
        let whole = run_session(&q, &r, &[]);
        let cut = run_session(&q, &r, &cuts);
        prop_assert_eq!(whole.len(), pairs.len());
        prop_assert_eq!(&whole, &cut);
        for e in &whole {
            prop_assert!(e.request.is_some() && e.response.is_some(), "unpaired: {:?}", e);
            prop_assert!(!e.anomalies.contains(&mamori_models::Anomaly::UnsolicitedResponse));
        }
    }

    #[test]
    fn reordered_segments_reassemble_to_the_same_bytes(
        data in proptest::collection::vec(any::<u8>(), 1..3000),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
        order in proptest::collection::vec(any::<u32>(), 40),
        duplicate_every in 2usize..6,
        isn in any::<u32>(),
    ) {
        let mut points: Vec<usize> = cuts.iter().map(|&k| k % data.len()).collect();
        points.push(0);
        points.push(data.len());
        points.sort_unstable();
        points.dedup();
        let mut segments: Vec<(usize, usize)> = points.windows(2).map(|w| (w[0], w[1])).collect();
        // Shuffle deterministically from `order`, and retransmit some segments.
        let n = segments.len();
        for i in (1..n).rev() {
            let j = order[i % order.len()] as usize % (i + 1);
            segments.swap(i, j);
        }
        let retransmits: Vec<(usize, usize)> = segments.iter().step_by(duplicate_every).copied().collect();
        segments.extend(retransmits);
        let mut r = StreamReassembler::default();
        r.on_syn(isn.wrapping_sub(1));
        let limits = StreamLimits { max_held_bytes: 1 << 20, max_held_segments: 1 << 10 };
        let mut c = StreamCounters::default();
        let mut got = Vec::new();
        let mut gaps = 0u64;
        for (a, b) in segments {
            r.on_segment(isn.wrapping_add(a as u32), Timestamp::from_micros(0), &data[a..b], 0, &limits, &mut c, &mut |ch| match ch {
                Chunk::Data(d, _) => got.extend_from_slice(d),
                Chunk::Gap(g) => gaps += g,
            });
        }
        r.flush(&mut c, &mut |ch| match ch {
            Chunk::Data(d, _) => got.extend_from_slice(d),
            Chunk::Gap(g) => gaps += g,
        });
        prop_assert_eq!(gaps, 0);
        prop_assert_eq!(got, data);
    }

    #[test]
    fn reassembler_never_panics_and_stays_bounded(
        segs in proptest::collection::vec((any::<u32>(), proptest::collection::vec(any::<u8>(), 0..200), 0u32..50, any::<bool>(), any::<u32>()), 0..60),
    ) {
        let mut r = StreamReassembler::default();
        let limits = StreamLimits { max_held_bytes: 4096, max_held_segments: 8 };
        let mut c = StreamCounters::default();
        for (seq, payload, missing, ack_first, ack) in segs {
            if ack_first {
                r.on_peer_ack(ack, &mut c, &mut |_| {});
            }
            r.on_segment(seq, Timestamp::from_micros(0), &payload, missing, &limits, &mut c, &mut |_| {});
            prop_assert!(r.held_bytes() <= limits.max_held_bytes + 200);
        }
        r.flush(&mut c, &mut |_| {});
        prop_assert_eq!(r.held_bytes(), 0);
    }
}
