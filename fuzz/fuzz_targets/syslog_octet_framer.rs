//! Fuzz target: `StreamFramer` (octet counting, LF and auto-detected) on arbitrary bytes fed in
//! arbitrary chunks. Must not panic, must bound every frame, and the chunking must not change
//! the frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mamori_agent::proto::syslog::{Framing, StreamFramer};

const MAX: usize = 64;

fn frames(framing: Option<Framing>, data: &[u8], chunk: usize) -> Vec<(Vec<u8>, bool)> {
    let mut f = StreamFramer::new(framing, MAX);
    let mut out = Vec::new();
    for c in data.chunks(chunk.max(1)) {
        f.push(c, &mut out);
    }
    f.finish(&mut out);
    out.into_iter().map(|fr| (fr.bytes, fr.truncated)).collect()
}

fuzz_target!(|input: (u8, &[u8])| {
    let (chunk, data) = input;
    for framing in [Some(Framing::OctetCounting), Some(Framing::Lf), None] {
        let whole = frames(framing, data, data.len());
        let split = frames(framing, data, usize::from(chunk));
        for (bytes, _) in &whole {
            assert!(bytes.len() <= MAX + 10);
        }
        assert_eq!(whole, split);
    }
});
