//! The whole pipeline on arbitrary frames: link decoding, IPv4 defragmentation, the flow
//! table, TCP reassembly and Modbus. Frames are length-prefixed (2 bytes, little endian); the
//! first byte picks the link type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mamori_agent::capture::{LinkType, RawPacket};
use mamori_agent::pipeline::{Pipeline, PipelineConfig};
use mamori_models::Timestamp;

const LINKS: [LinkType; 5] =
    [LinkType::ETHERNET, LinkType::RAW, LinkType::LINUX_SLL, LinkType::LINUX_SLL2, LinkType::NULL];

fuzz_target!(|data: &[u8]| {
    let Some((&link, mut rest)) = data.split_first() else { return };
    let link_type = LINKS[usize::from(link) % LINKS.len()];
    let config = PipelineConfig { max_flows: 8, ..PipelineConfig::default() };
    let mut p = Pipeline::new(config);
    let mut sink = |_e: mamori_models::Event| {};
    let mut t = 0i64;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let frame = &rest[2..2 + len];
        t += 250_000;
        p.process(
            &RawPacket { ts: Timestamp::from_micros(t), link_type, data: frame, orig_len: len as u32 },
            &mut sink,
        );
        rest = &rest[2 + len..];
    }
    p.finish(&mut sink);
    assert_eq!(p.active_flows(), 0);
});
