//! The benign traffic of a generated plant: the HMI's polls (each block on its own period, with
//! jitter and the odd stall), its periodic identification reads and the operator's set-point
//! writes, all over one persistent connection per PLC; the historian's polls every 10 s over its
//! own; the engineering workstation's visits; and the hosts' NTP, DNS, NetBIOS and file-share
//! flows. What the incidents change (set-points written, a device gone silent, a new firmware)
//! is applied here through the [`World`], so the polls read it back.

use std::net::IpAddr;

use mamori_models::{Event, FlowEvent, Transport};
use rand::Rng as _;
use rand::seq::SliceRandom;

use super::incidents::{Attack, Plan};
use super::layout::{Identity, Layout};
use super::modbus::{
    Connection, Reply, identity_request, identity_response, read_request, read_response,
    write_register,
};
use super::process::At;
use super::{Frame, PlantSpec, Rng, exponential_us, normal, stream};
use crate::events::{SEC, flow};

/// The historian's poll period.
pub(crate) const HISTORIAN_PERIOD_S: i64 = 10;
/// First ephemeral port handed out.
const EPHEMERAL: u16 = 49_152;

/// A device that stopped answering: requests go unanswered from `unanswered_from`, the
/// connections drop at `down_from`, and it is reachable again at `back`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Silence {
    pub unanswered_from: i64,
    pub down_from: i64,
    pub back: i64,
}

/// What the plant's state is over time, with the incidents' effects applied.
#[derive(Debug)]
pub(crate) struct World {
    pub frame: Frame,
    /// Per set-point: (time, value) in time order.
    setpoints: Vec<Vec<(i64, u16)>>,
    initial: Vec<u16>,
    /// (time, set-point index, value) written by the operator from the HMI.
    pub operator_writes: Vec<(i64, usize, u16)>,
    /// Per PLC.
    pub silence: Vec<Option<Silence>>,
    /// Per PLC: a new identification answered from a time on.
    identity_changes: Vec<Option<(i64, Identity)>>,
    /// When the HMI polls nothing (µs, from–to).
    hmi_stalls: Vec<(i64, i64)>,
}

/// The times (µs) at which the HMI reads the identification of each PLC: every PLC once per
/// period, the PLCs' turns spread evenly over it (in a shuffled order).
pub(crate) fn identity_reads(spec: &PlantSpec, frame: &Frame, plcs: usize) -> Vec<Vec<i64>> {
    let mut rng = stream(spec.seed, "identity");
    let period = i64::from(spec.shape.identity_period_s) * SEC;
    let turn = period / i64::try_from(plcs.max(1)).unwrap_or(1);
    let offset = rng.gen_range(0..turn.max(1));
    let mut turns: Vec<i64> = (0..).take(plcs).collect();
    turns.shuffle(&mut rng);
    turns
        .into_iter()
        .map(|k| {
            let phase = offset + k * turn;
            (0..)
                .map(|k| frame.learn_start + phase + k * period)
                .take_while(|&t| t < frame.end)
                .collect()
        })
        .collect()
}

impl World {
    pub fn new(spec: &PlantSpec, layout: &Layout, frame: &Frame, plan: &Plan) -> World {
        let mut rng = stream(spec.seed, "operator");
        let initial: Vec<u16> = layout.setpoints.iter().map(|s| s.initial).collect();
        let mut world = World {
            frame: *frame,
            setpoints: vec![Vec::new(); layout.setpoints.len()],
            initial: initial.clone(),
            operator_writes: Vec::new(),
            silence: vec![None; layout.plcs.len()],
            identity_changes: vec![None; layout.plcs.len()],
            hmi_stalls: Vec::new(),
        };
        // Set-points the incidents write are left alone by the operator around them.
        let busy: Vec<(usize, i64, i64)> = plan
            .attacks
            .iter()
            .filter_map(|a| match *a {
                Attack::RogueWrite { t, setpoint, .. } => Some((setpoint, t, t + 60 * SEC)),
                Attack::SetpointOutOfRange {
                    t,
                    setpoint,
                    restore,
                    ..
                } => Some((setpoint, t, restore)),
                _ => None,
            })
            .collect();
        let mut current = initial;
        let mean = f64::from(spec.shape.operator_mean_interval_s);
        let mut t = frame.learn_start + exponential_us(&mut rng, mean);
        while t < frame.end && !layout.setpoints.is_empty() {
            let i = rng.gen_range(0..layout.setpoints.len());
            let clear = !busy
                .iter()
                .any(|&(s, a, b)| s == i && a - 120 * SEC <= t && t <= b + 120 * SEC);
            if let (Some(sp), Some(cur), true) =
                (layout.setpoints.get(i), current.get_mut(i), clear)
            {
                let others: Vec<u16> = sp.usual.iter().copied().filter(|&v| v != *cur).collect();
                let value = if rng.gen_bool(0.2) || others.is_empty() {
                    // A new value, legitimate: inside the engineering range.
                    rng.gen_range(sp.range.0..=sp.range.1)
                } else {
                    others
                        .get(rng.gen_range(0..others.len()))
                        .copied()
                        .unwrap_or(*cur)
                };
                *cur = value;
                world.operator_writes.push((t, i, value));
            }
            t += exponential_us(&mut rng, mean);
        }
        for (t, i, v) in world.operator_writes.clone() {
            world.change(i, t, v);
        }
        world.apply(layout, plan);
        let mut t = frame.learn_start + exponential_us(&mut rng, 1500.0);
        while t < frame.end {
            let d = rng.gen_range(500_000..1_500_000);
            world.hmi_stalls.push((t, t + d));
            t += exponential_us(&mut rng, 1500.0);
        }
        world
    }

    fn change(&mut self, setpoint: usize, t: i64, v: u16) {
        if let Some(line) = self.setpoints.get_mut(setpoint) {
            let at = line.partition_point(|&(x, _)| x <= t);
            line.insert(at, (t, v));
        }
    }

    /// The incidents' effects on what the devices hold and answer.
    fn apply(&mut self, layout: &Layout, plan: &Plan) {
        for a in &plan.attacks {
            match *a {
                Attack::RogueWrite {
                    t, setpoint, value, ..
                } => self.change(setpoint, t, value),
                Attack::SetpointOutOfRange {
                    t,
                    setpoint,
                    value,
                    restore,
                } => {
                    let before = self.setpoint(setpoint, t);
                    self.change(setpoint, t, value);
                    self.change(setpoint, restore, before);
                }
                Attack::Silent { plc, silence } => {
                    if let Some(s) = self.silence.get_mut(plc) {
                        *s = Some(silence);
                    }
                }
                Attack::IdentityChange { plc, from, .. } => {
                    let new = layout.plcs.get(plc).map(|p| Identity {
                        revision: bumped(&p.identity.revision),
                        ..p.identity.clone()
                    });
                    if let (Some(slot), Some(new)) = (self.identity_changes.get_mut(plc), new) {
                        *slot = Some((from, new));
                    }
                }
                _ => {}
            }
        }
    }

    /// The value of set-point `i` at `t`.
    pub fn setpoint(&self, i: usize, t: i64) -> u16 {
        let line = self.setpoints.get(i).map(Vec::as_slice).unwrap_or_default();
        let n = line.partition_point(|&(x, _)| x <= t);
        n.checked_sub(1)
            .and_then(|k| line.get(k))
            .map_or_else(|| self.initial.get(i).copied().unwrap_or(0), |&(_, v)| v)
    }

    pub fn at(&self, t: i64) -> At {
        let secs = t.div_euclid(SEC);
        At {
            offset_us: t - self.frame.learn_start,
            hour: secs.rem_euclid(86_400) as f64 / 3600.0,
        }
    }

    /// What PLC `plc` answers to 43/14 at `t`.
    pub fn identity<'a>(&'a self, layout: &'a Layout, plc: usize, t: i64) -> Option<&'a Identity> {
        match self.identity_changes.get(plc) {
            Some(Some((from, new))) if *from <= t => Some(new),
            _ => layout.plcs.get(plc).map(|p| &p.identity),
        }
    }

    /// The values of a block of PLC `plc`, unit `unit`, at `t`.
    pub fn read_block(
        &self,
        layout: &Layout,
        plc: usize,
        unit: u8,
        block: usize,
        t: i64,
        noise: &mut Rng,
    ) -> Option<Vec<u16>> {
        let b = layout
            .plcs
            .get(plc)?
            .units
            .iter()
            .find(|u| u.id == unit)?
            .blocks
            .get(block)?;
        let at = self.at(t);
        Some(
            b.points
                .iter()
                .map(|p| p.value(at, |i| self.setpoint(i, t), noise))
                .collect(),
        )
    }

    fn stalled(&self, t: i64) -> bool {
        let n = self.hmi_stalls.partition_point(|&(a, _)| a <= t);
        n.checked_sub(1)
            .and_then(|i| self.hmi_stalls.get(i))
            .is_some_and(|&(_, b)| t < b)
    }
}

fn bumped(revision: &str) -> String {
    // v2.3.0 becomes v2.4.1: a minor release, as a firmware update would show.
    let parts: Vec<u32> = revision
        .trim_start_matches('v')
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect();
    match parts.as_slice() {
        [a, b, c] => format!("v{a}.{}.{}", b + 1, c + 1),
        _ => format!("{revision}-1"),
    }
}

/// A response delay: a few milliseconds, now and then tens.
pub(crate) fn latency_us(rng: &mut Rng) -> i64 {
    if rng.gen_bool(0.03) {
        rng.gen_range(20_000..80_000)
    } else {
        rng.gen_range(2_000..12_000)
    }
}

/// What a client does on its connection to one PLC at one time.
#[derive(Clone, Copy, Debug)]
enum Request {
    Poll { unit: u8, block: usize },
    Identity,
    Write { setpoint: usize, value: u16 },
}

/// One client's requests to one PLC, in time order.
fn schedule(
    world: &World,
    layout: &Layout,
    plc: usize,
    client: IpAddr,
    identity: &[i64],
    rng: &mut Rng,
) -> Vec<(i64, Request)> {
    let mut out = Vec::new();
    let Some(p) = layout.plcs.get(plc) else {
        return out;
    };
    let hmi = client == layout.hmi;
    for u in &p.units {
        for (bi, b) in u.blocks.iter().enumerate() {
            let period_s = if hmi {
                b.hmi_period_s.map(i64::from)
            } else if b.historian {
                Some(HISTORIAN_PERIOD_S)
            } else {
                None
            };
            let Some(period_s) = period_s else { continue };
            let period = period_s * SEC;
            let sd = (period as f64 * 0.01 + 2_000.0) as i64;
            let mut nominal = world.frame.learn_start + rng.gen_range(0..period);
            while nominal < world.frame.end {
                let late = if rng.gen_bool(0.02) {
                    rng.gen_range(0..period / 10)
                } else {
                    0
                };
                let t = nominal + (normal(rng) * sd as f64).abs() as i64 + late;
                // A stalled HMI skips the ticks it missed rather than bursting them out.
                if !(hmi && world.stalled(nominal)) {
                    out.push((
                        t,
                        Request::Poll {
                            unit: u.id,
                            block: bi,
                        },
                    ));
                }
                nominal += period;
            }
        }
    }
    if hmi {
        out.extend(identity.iter().map(|&t| (t, Request::Identity)));
        out.extend(
            world
                .operator_writes
                .iter()
                .filter(|(_, i, _)| layout.setpoints.get(*i).is_some_and(|s| s.plc == plc))
                .map(|&(t, setpoint, value)| (t, Request::Write { setpoint, value })),
        );
    }
    out.sort_by_key(|&(t, _)| t);
    out
}

/// Hands out ephemeral ports, one per new connection of a plant.
#[derive(Debug)]
pub(crate) struct Ports(u16);

impl Ports {
    pub fn new(rng: &mut Rng) -> Self {
        Ports(rng.gen_range(EPHEMERAL..60_000))
    }

    pub fn next(&mut self) -> u16 {
        self.0 = if self.0 >= 65_000 {
            EPHEMERAL
        } else {
            self.0 + 1
        };
        self.0
    }
}

/// A connection's transactions within one segment (capture file).
#[derive(Clone, Copy, Debug)]
struct Seen {
    first: i64,
    last: i64,
    requests: u64,
    orig_bytes: u64,
    resp_bytes: u64,
}

/// One connection's life: when it opened (its SYN, possibly before the capture) and when it
/// was reset (if it was), with the transactions' counts.
struct Epoch {
    conn: Connection,
    opened: i64,
    reset: Option<i64>,
    /// Per segment (learning, detection).
    seen: [Option<Seen>; 2],
}

impl Epoch {
    fn note(&mut self, frame: &Frame, t: i64, before: (u64, u64, u64)) {
        let seg = usize::from(t >= frame.detect_start);
        let (r, o, b) = (
            self.conn.requests - before.0,
            self.conn.orig_bytes - before.1,
            self.conn.resp_bytes - before.2,
        );
        if let Some(slot) = self.seen.get_mut(seg) {
            let s = slot.get_or_insert(Seen {
                first: t,
                last: t,
                requests: 0,
                orig_bytes: 0,
                resp_bytes: 0,
            });
            s.last = t;
            s.requests += r;
            s.orig_bytes += o;
            s.resp_bytes += b;
        }
    }

    /// The flow record of each segment in which the connection carried traffic.
    fn flows(&self, frame: &Frame) -> Vec<Event> {
        let mut out = Vec::new();
        for ((seg_start, seg_end), seen) in frame.segments().into_iter().zip(&self.seen) {
            let Some(Seen {
                first,
                last,
                requests,
                orig_bytes,
                resp_bytes,
            }) = *seen
            else {
                continue;
            };
            let syn_seen = self.opened >= seg_start;
            let reset_here = self.reset.filter(|&r| r < seg_end);
            let state = match (syn_seen, reset_here) {
                (true, Some(_)) => "RSTO",
                (true, None) => "S1",
                (false, _) => "OTH",
            };
            let reason = if reset_here.is_some() {
                "rst"
            } else {
                "end_of_input"
            };
            let start = if syn_seen { self.opened } else { first };
            let end = reset_here.unwrap_or(last + 20_000);
            out.push(Event::Flow(FlowEvent {
                service: Some("modbus".into()),
                orig_pkts: requests + u64::from(syn_seen),
                orig_bytes,
                resp_pkts: requests,
                resp_bytes,
                ..flow(
                    Transport::Tcp,
                    (start, end),
                    (self.conn.client, self.conn.port),
                    (self.conn.server, 502),
                    state,
                    reason,
                )
            }));
        }
        out
    }
}

/// A client's traffic to one PLC over its persistent connection(s).
#[allow(clippy::too_many_arguments)]
fn client_to_plc(
    world: &World,
    layout: &Layout,
    plc: usize,
    client: IpAddr,
    identity: &[i64],
    ports: &mut Ports,
    rng: &mut Rng,
    out: &mut Vec<Event>,
) {
    let Some(p) = layout.plcs.get(plc) else {
        return;
    };
    let frame = &world.frame;
    let silence = world.silence.get(plc).copied().flatten();
    let opened = frame.learn_start - rng.gen_range(600..86_400) * SEC;
    let mut epoch = Epoch {
        conn: Connection::new(client, ports.next(), p.ip),
        opened,
        reset: None,
        seen: [None; 2],
    };
    let mut reconnected = false;
    for (t, req) in schedule(world, layout, plc, client, identity, rng) {
        if let Some(s) = silence {
            if s.down_from <= t && t < s.back {
                continue;
            }
            if t >= s.back && !reconnected {
                reconnected = true;
                epoch.reset = Some(s.down_from);
                out.extend(epoch.flows(frame));
                reconnect_attempts(client, p.ip, s, ports, out);
                epoch = Epoch {
                    conn: Connection::new(client, ports.next(), p.ip),
                    opened: s.back,
                    reset: None,
                    seen: [None; 2],
                };
            }
        }
        let mute = silence.is_some_and(|s| s.unanswered_from <= t && t < s.down_from);
        let reply_at = t + latency_us(rng);
        let before = (
            epoch.conn.requests,
            epoch.conn.orig_bytes,
            epoch.conn.resp_bytes,
        );
        let ev = match req {
            Request::Poll { unit, block } => {
                let Some(b) = p
                    .units
                    .iter()
                    .find(|u| u.id == unit)
                    .and_then(|u| u.blocks.get(block))
                else {
                    continue;
                };
                let reply = match world.read_block(layout, plc, unit, block, reply_at, rng) {
                    Some(values) if !mute => Reply::At(reply_at, read_response(b.table, values)),
                    _ => Reply::Unanswered,
                };
                let request = read_request(t, b.address, b.quantity());
                epoch
                    .conn
                    .transact(unit, b.table.read_function(), request, reply)
            }
            Request::Identity => {
                let unit = p.units.first().map_or(1, |u| u.id);
                let reply = match world.identity(layout, plc, t) {
                    Some(id) if !mute => Reply::At(reply_at, identity_response(id)),
                    _ => Reply::Unanswered,
                };
                epoch.conn.transact(unit, 43, identity_request(t), reply)
            }
            Request::Write { setpoint, value } => {
                let Some(sp) = layout.setpoints.get(setpoint) else {
                    continue;
                };
                let request = write_register(t, sp.address, value);
                let reply = if mute {
                    Reply::Unanswered
                } else {
                    Reply::At(reply_at, write_register(reply_at, sp.address, value))
                };
                epoch.conn.transact(sp.unit, 6, request, reply)
            }
        };
        epoch.note(frame, t, before);
        out.push(ev);
    }
    if silence.is_some_and(|s| s.down_from < frame.end) && !reconnected {
        epoch.reset = silence.map(|s| s.down_from);
    }
    out.extend(epoch.flows(frame));
}

/// While a device is down, the client retries its connection every 10 s: SYNs unanswered.
fn reconnect_attempts(
    client: IpAddr,
    server: IpAddr,
    s: Silence,
    ports: &mut Ports,
    out: &mut Vec<Event>,
) {
    let mut t = s.down_from + SEC;
    while t < s.back {
        out.push(Event::Flow(FlowEvent {
            orig_pkts: 3,
            ..flow(
                Transport::Tcp,
                (t, (t + 3 * SEC).min(s.back)),
                (client, ports.next()),
                (server, 502),
                "S0",
                "idle",
            )
        }));
        t += 10 * SEC;
    }
}

/// The engineering workstation's visit at `t0`: it resolves names, announces itself, then
/// connects to each of its PLCs in turn, reads the identification and the set-point and
/// measurement blocks of the first unit, and disconnects.
fn ews_visit(
    world: &World,
    layout: &Layout,
    t0: i64,
    ports: &mut Ports,
    rng: &mut Rng,
    out: &mut Vec<Event>,
) {
    let ews = layout.ews;
    out.push(udp(
        t0 - 5 * SEC,
        (ews, 137),
        (layout.broadcast, 137),
        50,
        0,
    ));
    out.push(udp(
        t0 - 2 * SEC,
        (ews, ports.next()),
        (layout.infra, 53),
        40,
        90,
    ));
    for (k, &plc) in layout.ews_targets.iter().enumerate() {
        let Some(p) = layout.plcs.get(plc) else {
            continue;
        };
        let Some(u) = p.units.first() else { continue };
        let t = t0 + i64::try_from(k).unwrap_or(0) * 8 * SEC;
        let mut conn = Connection::new(ews, ports.next(), p.ip);
        let r = t + 300_000;
        if let Some(id) = world.identity(layout, plc, r) {
            let reply = Reply::At(r + latency_us(rng), identity_response(id));
            out.push(conn.transact(u.id, 43, identity_request(r), reply));
        }
        for (j, b) in u.blocks.iter().enumerate() {
            if b.table.is_bits() {
                continue;
            }
            let r = t + SEC + i64::try_from(j).unwrap_or(0) * 400_000;
            let at = r + latency_us(rng);
            if let Some(values) = world.read_block(layout, plc, u.id, j, at, rng) {
                let reply = Reply::At(at, read_response(b.table, values));
                let request = read_request(r, b.address, b.quantity());
                out.push(conn.transact(u.id, b.table.read_function(), request, reply));
            }
        }
        out.push(Event::Flow(FlowEvent {
            service: Some("modbus".into()),
            orig_pkts: conn.requests + 3,
            orig_bytes: conn.orig_bytes,
            resp_pkts: conn.requests + 2,
            resp_bytes: conn.resp_bytes,
            ..flow(
                Transport::Tcp,
                (t, t + 5 * SEC),
                (ews, conn.port),
                (p.ip, 502),
                "SF",
                "fin",
            )
        }));
    }
}

/// A short UDP exchange (one datagram each way, or none back).
pub(crate) fn udp(
    t: i64,
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    orig_bytes: u64,
    resp_bytes: u64,
) -> Event {
    let answered = resp_bytes > 0;
    let service = match dst.1 {
        53 => Some("dns".into()),
        123 => Some("ntp".into()),
        137 => Some("netbios-ns".into()),
        _ => None,
    };
    Event::Flow(FlowEvent {
        service,
        orig_pkts: 1,
        orig_bytes,
        resp_pkts: u64::from(answered),
        resp_bytes,
        ..flow(
            Transport::Udp,
            (t, t + if answered { 3_000 } else { 0 }),
            src,
            dst,
            if answered { "SF" } else { "S0" },
            "idle",
        )
    })
}

/// Times of a periodic task of `period_s` (± `spread` share) with a random phase.
fn periodic(rng: &mut Rng, frame: &Frame, period_s: f64, spread: f64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut t = frame.learn_start + (rng.r#gen::<f64>() * period_s * SEC as f64) as i64;
    while t < frame.end {
        out.push(t);
        let f = 1.0 + spread * (2.0 * rng.r#gen::<f64>() - 1.0);
        t += (period_s * f * SEC as f64) as i64;
    }
    out
}

/// NTP, DNS, NetBIOS name service and the HMI's report export to the historian's share.
fn infrastructure(layout: &Layout, frame: &Frame, ports: &mut Ports, rng: &mut Rng) -> Vec<Event> {
    let mut out = Vec::new();
    for p in &layout.plcs {
        for t in periodic(rng, frame, 1024.0, 0.02) {
            out.push(udp(t, (p.ip, 123), (layout.infra, 123), 48, 48));
        }
    }
    // Windows hosts: NTP hourly, so one learning hour may or may not see it.
    for host in [layout.hmi, layout.historian] {
        for t in periodic(rng, frame, 3600.0, 0.1) {
            out.push(udp(t, (host, 123), (layout.infra, 123), 48, 48));
        }
        for t in periodic(rng, frame, 720.0, 0.1) {
            out.push(udp(t, (host, 137), (layout.broadcast, 137), 50, 0));
        }
    }
    for (host, period) in [(layout.hmi, 300.0), (layout.historian, 1800.0)] {
        for t in periodic(rng, frame, period, 0.2) {
            out.push(udp(t, (host, ports.next()), (layout.infra, 53), 40, 90));
        }
    }
    for t in periodic(rng, frame, 900.0, 0.05) {
        let kb: u64 = rng.gen_range(20..60);
        out.push(Event::Flow(FlowEvent {
            service: Some("smb".into()),
            orig_pkts: kb + 10,
            orig_bytes: kb * 1024,
            resp_pkts: 12,
            resp_bytes: 2400,
            ..flow(
                Transport::Tcp,
                (t, t + 2 * SEC),
                (layout.hmi, ports.next()),
                (layout.historian, 445),
                "SF",
                "fin",
            )
        }));
    }
    out
}

/// Every benign event of the plant except syslog.
pub(crate) fn benign(
    spec: &PlantSpec,
    layout: &Layout,
    frame: &Frame,
    world: &World,
    plan: &Plan,
) -> Vec<Event> {
    let mut rng = stream(spec.seed, "traffic");
    let mut ports = Ports::new(&mut rng);
    let identity = identity_reads(spec, frame, layout.plcs.len());
    let mut out = Vec::new();
    for plc in 0..layout.plcs.len() {
        let reads = identity.get(plc).map(Vec::as_slice).unwrap_or_default();
        client_to_plc(
            world, layout, plc, layout.hmi, reads, &mut ports, &mut rng, &mut out,
        );
        client_to_plc(
            world,
            layout,
            plc,
            layout.historian,
            &[],
            &mut ports,
            &mut rng,
            &mut out,
        );
    }
    for &t in &plan.ews_visits {
        ews_visit(world, layout, t, &mut ports, &mut rng, &mut out);
    }
    out.extend(infrastructure(layout, frame, &mut ports, &mut rng));
    out
}
