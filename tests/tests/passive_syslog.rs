//! Syslog seen on the wire: UDP 514 datagrams and TCP 514/601 streams (LF and octet-counted)
//! in a capture become `syslog` events with the sender's address; TLS on 6514 and a non-syslog
//! protocol on 514 (rsh) do not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Write;
use std::net::SocketAddr;

use etherparse::PacketBuilder;
use mamori_agent::pipeline::PipelineConfig;
use mamori_agent::replay::replay_to_vec;
use mamori_models::{Event, SyslogFormat};
use mamori_tests::pcapgen::{Link, PcapWriter, Side, TcpConversation};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn replay(pcap: &[u8]) -> Vec<Event> {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(pcap).unwrap();
    let (events, report) = replay_to_vec(&[f.path().to_owned()], PipelineConfig::default());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    events
}

fn tcp_stream(server_port: u16, bytes: &[&[u8]]) -> Vec<u8> {
    let mut c = TcpConversation::new(
        Link::Ethernet,
        addr("10.1.0.7:40100"),
        SocketAddr::new("10.1.0.1".parse().unwrap(), server_port),
        1_700_000_000_000_000,
        1000,
    );
    c.handshake();
    for b in bytes {
        c.data(Side::Client, b);
    }
    c.fin(Side::Client);
    c.fin(Side::Server);
    c.to_pcap()
}

fn syslog_events(events: &[Event]) -> Vec<&mamori_models::SyslogEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Syslog(s) => Some(s),
            _ => None,
        })
        .collect()
}

#[test]
fn udp_514_datagrams_are_syslog_events_with_the_sender() {
    let mut w = PcapWriter::new(1);
    let msgs: [&[u8]; 2] = [
        b"<34>Oct 11 22:14:15 rtu-3 sshd[811]: Failed password for root from 10.9.9.9 port 2222 ssh2",
        b"<165>1 2003-10-11T22:14:15.003Z relay-7 protection 4242 TRIP [origin ip=\"10.1.0.9\"] breaker 52-1 opened",
    ];
    for (i, m) in msgs.iter().enumerate() {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 1, 0, 9], [10, 1, 0, 1], 64)
            .udp(51000 + i as u16, 514)
            .write(&mut frame, m)
            .unwrap();
        w.packet(1_700_000_000_000_000 + i as i64 * 1000, &frame);
    }
    let events = replay(&w.into_bytes());
    let sys = syslog_events(&events);
    assert_eq!(sys.len(), 2);
    assert_eq!(sys[0].format, SyslogFormat::Rfc3164);
    assert_eq!(sys[0].app_name.as_deref(), Some("sshd"));
    assert_eq!(sys[0].procid.as_deref(), Some("811"));
    assert_eq!(sys[0].severity, Some(2));
    assert_eq!(sys[0].src_ip, Some("10.1.0.9".parse().unwrap()));
    assert_eq!(sys[0].src_port, Some(51000));
    assert_eq!(sys[1].format, SyslogFormat::Rfc5424);
    assert_eq!(sys[1].hostname.as_deref(), Some("relay-7"));
    assert_eq!(sys[1].msgid.as_deref(), Some("TRIP"));
    assert_eq!(
        sys[1].structured_data.as_ref().unwrap()["origin"]["ip"],
        "10.1.0.9"
    );
    assert_eq!(sys[1].ts.to_string(), "2003-10-11T22:14:15.003000Z");
    let flows: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Flow(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(flows.len(), 2);
    assert!(flows.iter().all(|f| f.service.as_deref() == Some("syslog")));
}

#[test]
fn tcp_syslog_split_across_segments_lf_and_octet_counted() {
    // LF-delimited on 514, a message split mid-line and two in one segment.
    let lf = tcp_stream(514, &[b"<13>Jan  5 10:00:00 sw1 kernel: link ", b"eth0 down\n<13>Jan  5 10:00:01 sw1 kernel: link eth0 up\n<14>Jan  5 10:00:02 sw1 ntpd[7]: synced\n"]);
    let events = replay(&lf);
    let sys = syslog_events(&events);
    assert_eq!(
        sys.iter()
            .map(|s| s.msg.as_deref().unwrap())
            .collect::<Vec<_>>(),
        ["link eth0 down", "link eth0 up", "synced"]
    );
    assert!(
        sys.iter()
            .all(|s| s.src_ip == Some("10.1.0.7".parse().unwrap()) && s.src_port == Some(40100))
    );

    // RFC 6587 octet counting on 601.
    let m1 = "<13>1 2024-01-05T10:00:00Z hmi-1 app - - - operator login";
    let m2 = "<13>1 2024-01-05T10:00:01Z hmi-1 app - - - set-point changed";
    let stream = format!("{} {m1}{} {m2}", m1.len(), m2.len());
    let (a, b) = stream.as_bytes().split_at(20);
    let events = replay(&tcp_stream(601, &[a, b]));
    let sys = syslog_events(&events);
    assert_eq!(
        sys.iter()
            .map(|s| s.msg.as_deref().unwrap())
            .collect::<Vec<_>>(),
        ["operator login", "set-point changed"]
    );
}

#[test]
fn tls_on_6514_and_rsh_on_514_are_not_syslog() {
    let tls = tcp_stream(
        6514,
        &[&[
            0x16, 0x03, 0x01, 0x00, 0x2e, 0x01, 0x00, 0x00, 0x2a, 0x03, 0x03,
        ]],
    );
    let events = replay(&tls);
    assert!(syslog_events(&events).is_empty());
    let rsh = tcp_stream(514, &[b"0\0root\0root\0ls -l\0"]);
    let events = replay(&rsh);
    assert!(syslog_events(&events).is_empty());
    let flow = events.iter().find_map(|e| match e {
        Event::Flow(f) => Some(f),
        _ => None,
    });
    assert_eq!(flow.unwrap().service, None);
}
