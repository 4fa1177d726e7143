//! Fuzz target: `parse_syslog` in lenient and strict mode, and `probe_syslog`, on arbitrary
//! bytes. Lenient mode must always return an event; nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mamori_agent::proto::syslog::{ParseOptions, TagRule, parse_syslog, probe_syslog};
use mamori_models::Timestamp;

fuzz_target!(|data: &[u8]| {
    let _ = probe_syslog(data);
    let received = Timestamp::from_micros(1_700_000_000_000_000);
    let lenient = ParseOptions {
        max_message_bytes: 4096,
        ..ParseOptions::default()
    };
    assert!(parse_syslog(data, received, &lenient).is_ok());
    let strict = ParseOptions {
        strict: true,
        ..lenient.clone()
    };
    let _ = parse_syslog(data, received, &strict);
    let colon = ParseOptions {
        tag: TagRule::Colon,
        ..lenient
    };
    assert!(parse_syslog(data, received, &colon).is_ok());
});
