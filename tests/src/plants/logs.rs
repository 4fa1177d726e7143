//! Syslog of a generated plant, sent over UDP to the log server: frequent messages (scan-cycle
//! and poll statistics, time synchronisation, switch health), messages tied to what happens
//! (the operator's set-point changes, the engineering workstation's sessions), and rare benign
//! ones that a learning hour sees once or twice or not at all (a checksum check, a mistyped
//! password, a port flapping, an operator logging on). The UDP flows are derived from the
//! messages, cut where a sender was idle for longer than the agent's UDP timeout.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mamori_models::{Event, FlowEvent, Transport};
use rand::Rng as _;

use super::layout::Layout;
use super::traffic::World;
use super::{Frame, PlantSpec, Rng, exponential_us, incidents::Plan, stream};
use crate::events::{LogSource, SEC, flow};

/// The agent's UDP idle timeout: a sender quiet for longer starts a new flow.
const UDP_IDLE_US: i64 = 60 * SEC;

const USER: u8 = 1;
const DAEMON: u8 = 3;
const AUTH: u8 = 4;
const AUTHPRIV: u8 = 10;

/// Times of a periodic message of `period_s` (± `jitter_s`) with a random phase.
fn every(rng: &mut Rng, frame: &Frame, period_s: i64, jitter_s: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut t = frame.learn_start + rng.gen_range(0..period_s * SEC);
    while t < frame.end {
        out.push(t + rng.gen_range(-jitter_s * SEC..=jitter_s * SEC));
        t += period_s * SEC;
    }
    out
}

/// Times of a message that comes at random, `mean_s` apart on average.
fn now_and_then(rng: &mut Rng, frame: &Frame, mean_s: f64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut t = frame.learn_start + exponential_us(rng, mean_s);
    while t < frame.end {
        out.push(t);
        t += exponential_us(rng, mean_s);
    }
    out
}

fn source<'a>(
    hostname: &'a str,
    ip: IpAddr,
    app: &'a str,
    facility: u8,
    severity: u8,
) -> LogSource<'a> {
    LogSource {
        hostname,
        ip,
        app,
        procid: None,
        facility,
        severity,
    }
}

pub(crate) fn benign(
    spec: &PlantSpec,
    layout: &Layout,
    frame: &Frame,
    world: &World,
    plan: &Plan,
) -> Vec<Event> {
    let mut rng = stream(spec.seed, "logs");
    let mut out = Vec::new();
    plcs(layout, frame, plan, &mut rng, &mut out);
    hmi(layout, frame, world, &mut rng, &mut out);
    let hist = layout.hostname(layout.historian);
    for t in every(&mut rng, frame, 600, 5) {
        let (n, ms) = (rng.gen_range(9_000..14_000), rng.gen_range(40..400));
        let s = source(&hist, layout.historian, "histd", USER, 6);
        out.push(s.message(t, format!("archived {n} samples in {ms} ms")));
    }
    for &sw in &layout.switches {
        let name = layout.hostname(sw);
        for t in every(&mut rng, frame, 300, 1) {
            let (cpu, mem, temp) = (
                rng.gen_range(3..25),
                rng.gen_range(30..45),
                rng.gen_range(38..52),
            );
            let s = source(&name, sw, "mgmt", DAEMON, 6);
            out.push(s.message(
                t,
                format!("CPU {cpu}%, memory {mem}%, temperature {temp} C"),
            ));
        }
        // A port flapping: a loose cable, a device rebooting.
        for t in now_and_then(&mut rng, frame, 3000.0) {
            let port = rng.gen_range(1..=24);
            let s = source(&name, sw, "link", DAEMON, 3);
            out.push(s.message(t, format!("Interface port {port}, changed state to down")));
            let up = t + rng.gen_range(3..12) * SEC;
            out.push(s.message(up, format!("Interface port {port}, changed state to up")));
        }
    }
    out
}

fn plcs(layout: &Layout, frame: &Frame, plan: &Plan, rng: &mut Rng, out: &mut Vec<Event>) {
    for p in layout.plcs.iter().filter(|p| p.logs) {
        for t in every(rng, frame, 60, 2) {
            let (avg, max) = (rng.gen_range(8..20), rng.gen_range(20..45));
            let s = source(&p.name, p.ip, "plc", USER, 6);
            out.push(s.message(
                t,
                format!(
                    "scan cycle avg {avg}.{} ms max {max} ms",
                    rng.gen_range(0..10)
                ),
            ));
        }
        for t in every(rng, frame, 1024, 3) {
            let offset = rng.gen_range(-40..40);
            let s = source(&p.name, p.ip, "ntpd", DAEMON, 6);
            out.push(s.message(
                t,
                format!("clock synchronized to {}, offset {offset} ms", layout.infra),
            ));
        }
        for t in now_and_then(rng, frame, 2400.0) {
            let s = source(&p.name, p.ip, "plc", USER, 5);
            out.push(s.message(t, "retentive memory checksum verified".to_owned()));
        }
        for t in now_and_then(rng, frame, 7200.0) {
            let port = rng.gen_range(40_000..60_000);
            let s = source(&p.name, p.ip, "sshd", AUTHPRIV, 5);
            out.push(s.message(
                t,
                format!(
                    "Failed password for operator from {} port {port} ssh2",
                    layout.hmi
                ),
            ));
        }
    }
    for &visit in &plan.ews_visits {
        for (k, &plc) in layout.ews_targets.iter().enumerate() {
            let Some(p) = layout.plcs.get(plc).filter(|p| p.logs) else {
                continue;
            };
            let t = visit + i64::try_from(k).unwrap_or(0) * 8 * SEC + 100_000;
            let s = source(&p.name, p.ip, "webd", AUTHPRIV, 6);
            out.push(s.message(
                t,
                format!("session opened for user engineer from {}", layout.ews),
            ));
            out.push(s.message(t + 5 * SEC, "session closed for user engineer".to_owned()));
        }
    }
}

fn hmi(layout: &Layout, frame: &Frame, world: &World, rng: &mut Rng, out: &mut Vec<Event>) {
    let name = layout.hostname(layout.hmi);
    let hmi = layout.hmi;
    let devices = layout.plcs.len();
    for t in every(rng, frame, 120, 1) {
        let requests = rng.gen_range(200..400) * devices;
        let timeouts = if rng.gen_bool(0.1) { 1 } else { 0 };
        let s = source(&name, hmi, "hmi", USER, 6);
        out.push(s.message(
            t,
            format!("poll cycle: {devices} devices, {requests} requests, {timeouts} timeouts"),
        ));
    }
    for &(t, i, value) in &world.operator_writes {
        let Some(sp) = layout.setpoints.get(i) else {
            continue;
        };
        let before = world.setpoint(i, t - 1);
        let s = source(&name, hmi, "hmi", USER, 5);
        out.push(s.message(
            t + 50_000,
            format!(
                "setpoint {} changed from {before} to {value} by operator",
                sp.tag
            ),
        ));
    }
    let tags: Vec<String> = layout
        .plcs
        .iter()
        .flat_map(|p| {
            [
                format!("HI_TEMP_{}", p.name),
                format!("COMM_WARN_{}", p.name),
            ]
        })
        .collect();
    for t in now_and_then(rng, frame, 600.0) {
        let Some(tag) = tags.get(rng.gen_range(0..tags.len().max(1))) else {
            continue;
        };
        let s = source(&name, hmi, "hmi", USER, 4);
        out.push(s.message(t, format!("alarm {tag} acknowledged by operator")));
    }
    for t in now_and_then(rng, frame, 3600.0) {
        let s = source(&name, hmi, "winlogon", AUTH, 6);
        out.push(s.message(t, format!("user operator logged on from {hmi}")));
    }
}

/// One UDP flow per sender and burst of syslog messages, as the agent would record them for
/// each capture file (learning, detection).
pub(crate) fn udp_flows(events: &[Event], layout: &Layout, frame: &Frame) -> Vec<Event> {
    let mut by_sender: BTreeMap<IpAddr, Vec<(i64, u64)>> = BTreeMap::new();
    for e in events {
        if let Event::Syslog(s) = e
            && let Some(ip) = s.src_ip
        {
            let bytes = 40 + s.msg.as_ref().map_or(0, |m| m.len() as u64);
            by_sender
                .entry(ip)
                .or_default()
                .push((s.ts.as_micros(), bytes));
        }
    }
    let mut out = Vec::new();
    for (ip, mut sent) in by_sender {
        sent.sort_unstable();
        for (seg_start, seg_end) in frame.segments() {
            let mut open: Option<(i64, i64, u64, u64)> = None;
            let close = |f: (i64, i64, u64, u64), out: &mut Vec<Event>| {
                let reason = if f.1 + UDP_IDLE_US >= seg_end {
                    "end_of_input"
                } else {
                    "idle"
                };
                out.push(Event::Flow(FlowEvent {
                    service: Some("syslog".into()),
                    orig_pkts: f.2,
                    orig_bytes: f.3,
                    ..flow(
                        Transport::Udp,
                        (f.0, f.1),
                        (ip, 514),
                        (layout.log_server, 514),
                        "S0",
                        reason,
                    )
                }));
            };
            for &(t, bytes) in sent.iter().filter(|&&(t, _)| seg_start <= t && t < seg_end) {
                open = Some(match open {
                    Some(f) if t - f.1 <= UDP_IDLE_US => (f.0, t, f.2 + 1, f.3 + bytes),
                    Some(f) => {
                        close(f, &mut out);
                        (t, t, 1, bytes)
                    }
                    None => (t, t, 1, bytes),
                });
            }
            if let Some(f) = open {
                close(f, &mut out);
            }
        }
    }
    out
}
