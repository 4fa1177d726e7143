//! Syslog from the plant's network devices, as RFC 5424 over UDP/514 through the tap: the OT
//! switch and the feeder RTU log time synchronisation, scan-cycle statistics, interface rates,
//! administrators' logins and the odd mistyped password; the attack scenario adds a burst of
//! failed logins.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use mamori_models::Timestamp;
use tokio::sync::watch;

use crate::hosts;
use crate::rng::Rng;
use crate::tap::Tap;

pub const SYSLOG_PORT: u16 = 514;
/// Facilities (RFC 5424).
pub const USER: u8 = 1;
pub const DAEMON: u8 = 3;
pub const AUTHPRIV: u8 = 10;
/// Severities.
pub const WARNING: u8 = 4;
pub const NOTICE: u8 = 5;
pub const INFO: u8 = 6;

/// A device that logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyslogHost {
    pub name: &'static str,
    pub ip: Ipv4Addr,
}

/// One RFC 5424 line: `<PRI>1 TIMESTAMP HOST APP PROCID - - MSG`.
pub fn rfc5424(
    ts: Timestamp,
    facility: u8,
    severity: u8,
    host: &str,
    app: &str,
    procid: u32,
    msg: &str,
) -> String {
    let mut stamp = String::with_capacity(27);
    ts.write_rfc3339(&mut stamp);
    let pri = u16::from(facility) * 8 + u16::from(severity);
    format!("<{pri}>1 {stamp} {host} {app} {procid} - - {msg}")
}

/// Logs `msg` from `host` to the plant's syslog server.
pub fn send(
    tap: &Tap,
    host: SyslogHost,
    facility: u8,
    severity: u8,
    app: &str,
    procid: u32,
    msg: &str,
) {
    let line = rfc5424(tap.now(), facility, severity, host.name, app, procid, msg);
    tap.datagram(
        SocketAddrV4::new(host.ip, SYSLOG_PORT),
        SocketAddrV4::new(hosts::SYSLOG_SERVER, SYSLOG_PORT),
        line.as_bytes(),
    );
}

/// Normal logging: one message every `period` (real time) from the switch or the RTU.
pub(crate) async fn run_background(
    tap: Arc<Tap>,
    period: Duration,
    mut rng: Rng,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(period) => {}
        }
        n += 1;
        let port = 40_000 + rng.range_u16(0, 20_000);
        match n % 4 {
            0 => send(
                &tap,
                hosts::SWITCH,
                DAEMON,
                INFO,
                "ntpd",
                611,
                &format!("synchronized to {}, stratum 2", hosts::SYSLOG_SERVER),
            ),
            1 => send(
                &tap,
                hosts::RTU,
                USER,
                INFO,
                "rtud",
                204,
                &format!(
                    "scan cycle {} ms, 96 points, 0 errors",
                    rng.range_u16(9, 13)
                ),
            ),
            2 => send(
                &tap,
                hosts::SWITCH,
                USER,
                NOTICE,
                "ifmgr",
                388,
                &format!(
                    "Interface GigabitEthernet1/0/{} input rate {} kbps",
                    rng.range_u16(1, 8),
                    rng.range_u16(40, 900)
                ),
            ),
            _ => {
                // Administrators log in now and then, and now and then mistype.
                let msg = if rng.unit() < 0.1 {
                    format!(
                        "Failed password for netops from {} port {port} ssh2",
                        hosts::ENG_WS
                    )
                } else {
                    format!(
                        "Accepted publickey for netops from {} port {port} ssh2",
                        hosts::ENG_WS
                    )
                };
                send(&tap, hosts::SWITCH, AUTHPRIV, INFO, "sshd", 1022, &msg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5424_line_layout() {
        let ts = Timestamp::from_micros(1_709_251_200_000_000);
        let line = rfc5424(
            ts,
            AUTHPRIV,
            WARNING,
            "sw-ot-1",
            "sshd",
            7,
            "Failed password",
        );
        assert_eq!(
            line,
            "<84>1 2024-03-01T00:00:00.000000Z sw-ot-1 sshd 7 - - Failed password"
        );
    }
}
