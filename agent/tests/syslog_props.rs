//! Property tests of the syslog parser and framer: never panics, lenient mode always yields an
//! event, and the segmentation of a stream does not change the messages it yields.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use mamori_agent::proto::syslog::{
    Frame, Framing, ParseOptions, StreamFramer, parse_syslog, probe_syslog,
};
use mamori_models::{Anomaly, SyslogFormat, Timestamp};
use proptest::prelude::*;

fn received() -> Timestamp {
    Timestamp::from_micros(1_700_000_000_000_000)
}

/// Inputs that look like syslog more often than uniform bytes would.
fn syslogish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"<34>".to_vec()),
        Just(b"<13>1 ".to_vec()),
        Just(b"2003-10-11T22:14:15.003Z ".to_vec()),
        Just(b"Oct 11 22:14:15 ".to_vec()),
        Just(b"*Mar  1 00:00:01.123 UTC: ".to_vec()),
        Just(b"%SYS-5-CONFIG_I: ".to_vec()),
        Just(b"host ".to_vec()),
        Just(b"app[12]: ".to_vec()),
        Just(b"- ".to_vec()),
        Just(b"[id@1 a=\"b\\\"c\"]".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"#011".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_and_lenient_always_yields(input in prop_oneof![syslogish(), proptest::collection::vec(any::<u8>(), 0..300)]) {
        let strict = ParseOptions { strict: true, ..ParseOptions::default() };
        let _ = parse_syslog(&input, received(), &strict);
        let _ = probe_syslog(&input);
        let ev = parse_syslog(&input, received(), &ParseOptions::default());
        prop_assert!(ev.is_ok());
        let ev = ev.unwrap();
        // Absent fields are None, never empty strings.
        for f in [&ev.hostname, &ev.app_name, &ev.procid, &ev.msgid, &ev.msg] {
            prop_assert!(f.as_deref() != Some(""));
        }
        // Nothing is dropped silently: non-UTF-8 input is flagged.
        if std::str::from_utf8(&input).is_err() {
            prop_assert!(ev.anomalies.contains(&Anomaly::InvalidUtf8) || ev.format != SyslogFormat::Unknown);
        }
    }

    #[test]
    fn long_messages_are_cut_and_flagged(input in proptest::collection::vec(any::<u8>(), 0..200), max in 1usize..64) {
        let opts = ParseOptions { max_message_bytes: max, ..ParseOptions::default() };
        let ev = parse_syslog(&input, received(), &opts).unwrap();
        prop_assert_eq!(ev.anomalies.contains(&Anomaly::Truncated), input.len() > max);
        prop_assert!(ev.msg.map_or(0, |m| m.len()) <= max * 3, "lossy text is at most 3 bytes per input byte");
    }

    #[test]
    fn framer_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
                           framing in prop_oneof![Just(None), Just(Some(Framing::Lf)), Just(Some(Framing::OctetCounting))],
                           max in 1usize..40) {
        let mut f = StreamFramer::new(framing, max);
        let mut out = Vec::new();
        for c in &chunks {
            f.push(c, &mut out);
        }
        f.finish(&mut out);
        for fr in &out {
            prop_assert!(fr.bytes.len() <= max.max(10) + 1);
        }
        // Even on garbage, where the chunks fall does not change the frames.
        let stream = chunks.concat();
        let mut whole = StreamFramer::new(framing, max);
        let mut once = Vec::new();
        whole.push(&stream, &mut once);
        whole.finish(&mut once);
        prop_assert_eq!(once, out);
    }

    #[test]
    fn octet_counting_segmentation_does_not_matter(
        msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 1..10),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut stream = Vec::new();
        for m in &msgs {
            stream.extend_from_slice(format!("{} ", m.len()).as_bytes());
            stream.extend_from_slice(m);
        }
        let whole = run(Some(Framing::OctetCounting), &stream, &[]);
        let split = run(Some(Framing::OctetCounting), &stream, &cuts);
        let expected: Vec<Frame> = msgs.iter().map(|m| Frame { bytes: m.clone(), truncated: false }).collect();
        prop_assert_eq!(&whole, &expected);
        prop_assert_eq!(&split, &expected);
        // Detection from the first byte gives the same.
        prop_assert_eq!(run(None, &stream, &cuts), expected);
    }

    #[test]
    fn lf_segmentation_does_not_matter(
        msgs in proptest::collection::vec("[^\r\n]{1,60}", 1..10),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        crlf in any::<bool>(),
    ) {
        let sep = if crlf { "\r\n" } else { "\n" };
        let stream: String = msgs.iter().map(|m| format!("<13>{m}{sep}")).collect();
        let expected: Vec<Frame> =
            msgs.iter().map(|m| Frame { bytes: format!("<13>{m}").into_bytes(), truncated: false }).collect();
        prop_assert_eq!(run(Some(Framing::Lf), stream.as_bytes(), &[]), expected.clone());
        prop_assert_eq!(run(Some(Framing::Lf), stream.as_bytes(), &cuts), expected.clone());
        prop_assert_eq!(run(None, stream.as_bytes(), &cuts), expected);
    }
}

/// Frames `stream` fed in pieces cut at `cuts`.
fn run(framing: Option<Framing>, stream: &[u8], cuts: &[prop::sample::Index]) -> Vec<Frame> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
    at.push(0);
    at.push(stream.len());
    at.sort_unstable();
    let mut f = StreamFramer::new(framing, 1024);
    let mut out = Vec::new();
    for w in at.windows(2) {
        f.push(&stream[w[0]..w[1]], &mut out);
    }
    f.finish(&mut out);
    out
}
