//! Simulated syslog for the detector scenario tests, generated directly as `syslog` events in
//! simulated time: an RTU, a PLC gateway and the HMI log regular messages (logins, time
//! synchronisation, scan-cycle statistics, cron jobs, the odd mistyped password); the attacks
//! are a burst of failed logins and a firmware upload never seen before.

use std::net::{IpAddr, Ipv4Addr};

use mamori_models::Event;

use crate::events::{LogSource, SEC, ts};
use crate::scenario::AttackSpan;

/// Where the password guessing comes from.
pub const ATTACKER: &str = "10.9.9.9";

/// The devices that log, with their address.
pub const HOSTS: [(&str, IpAddr); 3] = [
    ("rtu-1", IpAddr::V4(Ipv4Addr::new(10, 10, 0, 31))),
    ("gw-1", IpAddr::V4(Ipv4Addr::new(10, 10, 0, 32))),
    ("hmi-1", IpAddr::V4(Ipv4Addr::new(10, 10, 0, 10))),
];
/// Syslog facilities (RFC 5424).
const USER: u8 = 1;
const DAEMON: u8 = 3;
const AUTHPRIV: u8 = 10;
const CRON: u8 = 9;

/// One RFC 5424 message.
pub fn message(t: i64, host: usize, app: &str, facility: u8, severity: u8, msg: String) -> Event {
    let (hostname, ip) = HOSTS.get(host).copied().unwrap_or(HOSTS[0]);
    LogSource {
        hostname,
        ip,
        app,
        procid: Some("812"),
        facility,
        severity,
    }
    .message(t, msg)
}

/// Normal logging from `start_s` for `secs` seconds.
pub fn benign(start_s: i64, secs: i64) -> Vec<Event> {
    let mut out = Vec::new();
    for s in 0..secs {
        let abs = start_s + s;
        let t = abs * SEC;
        for h in 0..HOSTS.len() {
            let off = h as i64 * 7;
            if (abs + off) % 60 == 0 {
                let ms = 10 + (abs / 60 + off) % 5;
                let load = 30 + (abs / 60 + off) % 9;
                out.push(message(
                    t,
                    h,
                    "plcd",
                    DAEMON,
                    6,
                    format!("scan cycle {ms} ms, load {load}%"),
                ));
            }
            if (abs + off) % 300 == 10 {
                let offset = (abs / 300) % 7;
                out.push(message(
                    t,
                    h,
                    "ntpd",
                    DAEMON,
                    6,
                    format!("synchronized to 10.10.0.1, stratum 2, offset 0.00{offset}1 s"),
                ));
            }
            if (abs + off) % 600 == 20 {
                out.push(message(
                    t,
                    h,
                    "CRON",
                    CRON,
                    6,
                    "(root) CMD (run-parts /etc/cron.hourly)".to_owned(),
                ));
            }
            if (abs + off) % 1800 == 40 {
                let port = 40_000 + (abs / 1800) % 20_000;
                out.push(message(
                    t,
                    h,
                    "sshd",
                    AUTHPRIV,
                    6,
                    format!("Accepted publickey for operator from 10.10.0.10 port {port} ssh2"),
                ));
            }
            // An operator mistypes a password now and then.
            if (abs + off) % 1200 == 45 {
                let port = 50_000 + (abs / 1200) % 10_000;
                out.push(message(
                    t,
                    h,
                    "sshd",
                    AUTHPRIV,
                    5,
                    format!("Failed password for operator from 10.10.0.10 port {port} ssh2"),
                ));
            }
        }
    }
    out.sort_by_key(|e| e.ts());
    out
}

/// Normal logging from `start_s` for `secs` seconds, with a burst of failed logins on the RTU
/// at 1 h and a firmware upload on the gateway at 1 h 30.
pub fn with_attacks(start_s: i64, secs: i64) -> (Vec<Event>, Vec<AttackSpan>) {
    let mut out = benign(start_s, secs);
    let at = |s: i64| (start_s + s) * SEC;
    for k in 0..40i64 {
        let user = match k % 4 {
            0 => "root",
            1 => "admin",
            2 => "operator",
            _ => "engineer",
        };
        out.push(message(
            at(3600) + k * 1_500_000,
            0,
            "sshd",
            AUTHPRIV,
            5,
            format!(
                "Failed password for {user} from {ATTACKER} port {} ssh2",
                30_000 + k
            ),
        ));
    }
    out.push(message(
        at(5400),
        1,
        "plcd",
        USER,
        5,
        format!("firmware upload from {ATTACKER}: image v2.7.1 written to flash bank 1"),
    ));
    out.sort_by_key(|e| e.ts());
    let spans = vec![
        AttackSpan {
            name: "burst of failed logins",
            start: ts(at(3600)),
            end: ts(at(3660)),
        },
        AttackSpan {
            name: "firmware upload",
            start: ts(at(5400)),
            end: ts(at(5401)),
        },
    ];
    (out, spans)
}
