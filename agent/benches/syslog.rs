//! Parse throughput on a mixed real-world corpus, side by side with `syslog_loose` (the lenient
//! parser Vector uses) on the same messages in the same run.
//!
//! Input: the syslog corpus (`shared/corpus/syslog`: conformance vectors that parse, Cisco IOS
//! lines, syslog-ng pattern-db bodies wrapped in BSD and RFC 5424 headers); a small built-in set
//! when the corpus is absent. Only UTF-8 lines are used, since `syslog_loose` takes `&str`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mamori_agent::proto::syslog::{ParseOptions, parse_syslog, parse_syslog_record};
use mamori_models::{SyslogEvent, SyslogFormat, Timestamp};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/syslog");

const BUILT_IN: &[&str] = &[
    "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed for lonvick on /dev/pts/8",
    "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] An application event log entry...",
    "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
    "<133>Jan 13 16:33:35 haproxy[73411]: Proxy sticky-servers started.",
    "<189>Feb  8 04:00:48 192.168.100.2 585917: Feb  8 04:00:47.272: %SEC-6-IPACCESSLOGRP: list 177 denied igmp 192.168.100.197 -> 224.0.0.22, 1 packet",
    "<38>Jan  5 15:33:03 host01 sshd[4242]: Accepted publickey for root from 10.0.0.1 port 53022 ssh2",
];

fn field(line: &str, key: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(v.get(key)?.as_str()?.to_owned())
}

fn corpus() -> Vec<String> {
    let dir = Path::new(CORPUS);
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap_or_default();
    let mut out = Vec::new();
    for f in [
        "conformance_go-syslog.jsonl",
        "conformance_rsyslog.jsonl",
        "conformance_syslog_loose.jsonl",
        "conformance_rust-syslog-rfc5424.jsonl",
    ] {
        for l in read(f).lines() {
            if l.contains("\"error\": true") {
                continue;
            }
            if let Some(s) = field(l, "input") {
                out.push(s);
            }
        }
    }
    for l in read("devices/cisco_ios_elastic.jsonl").lines() {
        if let Some(s) = field(l, "input") {
            out.push(s.to_owned());
        }
    }
    for (k, l) in read("devices/syslogng_patterndb_examples.jsonl")
        .lines()
        .enumerate()
    {
        if let (Some(p), Some(m)) = (field(l, "program"), field(l, "message")) {
            out.push(if k % 2 == 0 {
                format!("<38>Jan  5 15:33:03 host01 {p}[4242]: {m}")
            } else {
                format!("<38>1 2020-01-05T15:33:03.120+01:00 host01 {p} 4242 - - {m}")
            });
        }
    }
    if out.is_empty() {
        out = BUILT_IN.iter().map(|s| (*s).to_owned()).collect();
    }
    out
}

fn bench(c: &mut Criterion) {
    let msgs = corpus();
    let bytes: usize = msgs.iter().map(String::len).sum();
    eprintln!("syslog bench: {} messages, {} bytes", msgs.len(), bytes);
    let received = Timestamp::from_micros(1_700_000_000_000_000);
    let opts = ParseOptions::default();
    let mut g = c.benchmark_group("syslog_parse");
    g.throughput(Throughput::Elements(msgs.len() as u64));
    // Like for like with syslog_loose, which also returns fields borrowing the input.
    g.bench_function("mamori_lenient_borrowed", |b| {
        b.iter(|| {
            for m in &msgs {
                let _ = black_box(parse_syslog_record(
                    black_box(m.as_bytes()),
                    received,
                    &opts,
                ));
            }
        })
    });
    // Through to the owned event the pipeline emits.
    g.bench_function("mamori_lenient", |b| {
        b.iter(|| {
            for m in &msgs {
                let _ = black_box(parse_syslog(black_box(m.as_bytes()), received, &opts));
            }
        })
    });
    // syslog_loose takes `&str`: from wire bytes it needs a UTF-8 check first.
    g.bench_function("syslog_loose", |b| {
        b.iter(|| {
            for m in &msgs {
                if let Ok(s) = std::str::from_utf8(black_box(m.as_bytes())) {
                    black_box(syslog_loose::parse_message(
                        s,
                        syslog_loose::Variant::Either,
                    ));
                }
            }
        })
    });
    // The same, brought to the owned event this crate produces: like for like.
    g.bench_function("syslog_loose_owned", |b| {
        b.iter(|| {
            for m in &msgs {
                if let Ok(s) = std::str::from_utf8(black_box(m.as_bytes())) {
                    let msg = syslog_loose::parse_message(s, syslog_loose::Variant::Either);
                    black_box(to_event(&msg, received));
                }
            }
        })
    });
    g.finish();
}

/// A `syslog_loose` message as a [`SyslogEvent`] (owned strings, RFC 3339 text).
fn to_event(m: &syslog_loose::Message<&str>, received: Timestamp) -> SyslogEvent {
    let own = |s: Option<&&str>| s.map(|s| (*s).to_owned());
    let mut sd = BTreeMap::<String, BTreeMap<String, String>>::new();
    for e in &m.structured_data {
        let p = sd.entry(e.id.to_owned()).or_default();
        for (k, v) in &e.params {
            p.insert((*k).to_owned(), (*v).to_owned());
        }
    }
    let prival = match (m.facility, m.severity) {
        (Some(f), Some(s)) => Some((f as u8) * 8 + s as u8),
        _ => None,
    };
    SyslogEvent {
        ts: received,
        received_ts: received,
        src_ip: None,
        src_port: None,
        format: SyslogFormat::Unknown,
        priority: prival,
        facility: prival.map(|p| p >> 3),
        severity: prival.map(|p| p & 7),
        version: None,
        timestamp: m.timestamp.map(|t| t.to_rfc3339()),
        hostname: own(m.hostname.as_ref()),
        app_name: own(m.appname.as_ref()),
        procid: m.procid.as_ref().map(|p| p.to_string()),
        msgid: own(m.msgid.as_ref()),
        structured_data: Some(sd).filter(|sd| !sd.is_empty()),
        msg: Some(m.msg.to_owned()).filter(|m| !m.is_empty()),
        anomalies: Vec::new(),
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
