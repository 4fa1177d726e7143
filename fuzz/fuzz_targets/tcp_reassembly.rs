//! TCP reassembly: arbitrary segments (sequence number, length, cut bytes) and peer ACKs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mamori_agent::tcp::{Chunk, StreamCounters, StreamLimits, StreamReassembler};

fuzz_target!(|data: &[u8]| {
    let mut r = StreamReassembler::default();
    let limits = StreamLimits { max_held_bytes: 2048, max_held_segments: 16 };
    let mut c = StreamCounters::default();
    let mut delivered = 0usize;
    let mut rest = data;
    while rest.len() >= 7 {
        let (head, tail) = rest.split_at(7);
        let seq = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let len = usize::from(head[4]).min(tail.len());
        let missing = u32::from(head[5] & 0x0F);
        let (payload, after) = tail.split_at(len);
        let mut sink = |ch: Chunk<'_>| {
            if let Chunk::Data(d, _) = ch {
                delivered += d.len();
            }
        };
        match head[6] % 4 {
            0 => r.on_syn(seq),
            1 => r.on_peer_ack(seq, &mut c, &mut sink),
            _ => r.on_segment(seq, mamori_models::Timestamp::from_micros(0), payload, missing, &limits, &mut c, &mut sink),
        }
        assert!(r.held_bytes() <= limits.max_held_bytes + 255);
        rest = after;
    }
    r.flush(&mut c, &mut |_| {});
    assert_eq!(r.held_bytes(), 0);
});
