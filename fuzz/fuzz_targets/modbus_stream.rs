//! The Modbus session layer: arbitrary bytes cut into chunks of both directions, with gaps.
//! Each chunk starts with a control byte: bit 0 the direction, bit 1 a gap before it, the
//! rest the chunk length.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use mamori_agent::proto::modbus::{Direction, ModbusSession, SessionCounters, SessionLimits};
use mamori_models::Timestamp;

fuzz_target!(|data: &[u8]| {
    let client: IpAddr = [10, 0, 0, 1].into();
    let server: IpAddr = [10, 0, 0, 2].into();
    let limits = SessionLimits { max_pending: 8, response_timeout_us: 1_000 };
    let mut s = ModbusSession::new((client, 40000), (server, 502), limits);
    let mut c = SessionCounters::default();
    let mut out = Vec::new();
    let mut rest = data;
    let mut t = 0i64;
    while let Some((&ctl, tail)) = rest.split_first() {
        let len = usize::from(ctl >> 2).min(tail.len()) * 4 % (tail.len() + 1);
        let (chunk, after) = tail.split_at(len);
        let dir = if ctl & 1 == 0 { Direction::ToServer } else { Direction::ToClient };
        if ctl & 2 != 0 {
            s.on_gap(dir);
        }
        t += 100;
        s.on_data(dir, Timestamp::from_micros(t), chunk, &mut c, &mut out);
        assert!(s.buffered_bytes() <= 2 * (7 + 1024));
        out.clear();
        rest = after;
    }
    s.finish(Timestamp::from_micros(t), &mut c, &mut out);
});
