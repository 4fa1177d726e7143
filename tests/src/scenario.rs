//! A simulated plant for the detector scenario tests, generated directly as events in
//! simulated time (deterministic and fast): an HMI polls three PLCs on fixed cycles and an
//! operator occasionally writes a set-point; attacks are laid over that traffic, each with
//! the time span in which it must be detected.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};

use mamori_models::{Event, FlowEvent, ModbusPdu, Timestamp, Transport, Values};

use crate::events::{SEC, Transaction, flow, ts};

pub const HMI: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 10, 0, 10));
pub const PLCS: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(10, 10, 0, 21)),
    IpAddr::V4(Ipv4Addr::new(10, 10, 0, 22)),
    IpAddr::V4(Ipv4Addr::new(10, 10, 0, 23)),
];
pub const SCANNER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 10, 0, 66));
pub const ROGUE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 10, 0, 77));
/// The set-point register the operator writes on PLC 1.
pub const SETPOINT: u16 = 100;
/// Set-points the operator cycles through, one every 15 minutes.
pub const OPERATOR_SETPOINTS: [u16; 6] = [50, 55, 60, 45, 40, 52];

/// One attack and where its alerts must fall.
#[derive(Clone, Debug)]
pub struct AttackSpan {
    pub name: &'static str,
    pub start: Timestamp,
    pub end: Timestamp,
}

fn pdu(t: i64) -> ModbusPdu {
    ModbusPdu {
        ts: ts(t),
        len: 6,
        ..ModbusPdu::default()
    }
}

/// Builds the event stream.
#[derive(Debug, Default)]
pub struct Plant {
    pub events: Vec<Event>,
    tid: u16,
    /// The set-point currently held by PLC 1.
    setpoint: u16,
    /// PLC index → when it does not answer (µs, from–to).
    pub mute: [(i64, i64); 3],
    /// PLC index → when the HMI does not poll it (µs, from–to).
    pub unpolled: [(i64, i64); 3],
}

impl Plant {
    pub fn new() -> Self {
        Plant {
            setpoint: 50,
            ..Plant::default()
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn modbus(
        &mut self,
        t: i64,
        client: IpAddr,
        server: IpAddr,
        unit: u8,
        func: u8,
        request: ModbusPdu,
        response: Option<ModbusPdu>,
        exception: Option<u8>,
    ) {
        self.tid = self.tid.wrapping_add(1);
        let response = match exception {
            Some(_) => Some(pdu(t + 800)),
            None => response,
        };
        let tx = Transaction {
            client,
            client_port: 49_152,
            server,
            server_port: 502,
            tid: self.tid,
            unit,
            func,
            request,
            response,
            exception,
        };
        self.events.push(tx.into_event());
    }

    /// A read of `qty` registers (func 3/4) or coils (func 1) at `addr`.
    #[allow(clippy::too_many_arguments)]
    pub fn read(
        &mut self,
        t: i64,
        client: IpAddr,
        server: IpAddr,
        func: u8,
        addr: u16,
        qty: u16,
        values: Option<Values>,
        exception: Option<u8>,
    ) {
        let request = ModbusPdu {
            address: Some(addr),
            quantity: Some(qty),
            ..pdu(t)
        };
        let response = values.map(|v| ModbusPdu {
            values: Some(v),
            ..pdu(t + 800)
        });
        self.modbus(t, client, server, 1, func, request, response, exception);
    }

    pub fn write_register(&mut self, t: i64, client: IpAddr, server: IpAddr, addr: u16, v: u16) {
        let request = ModbusPdu {
            address: Some(addr),
            values: Some(Values::Registers(vec![v])),
            ..pdu(t)
        };
        let response = Some(ModbusPdu {
            ts: ts(t + 800),
            ..request.clone()
        });
        if server == PLCS[0] && addr == SETPOINT {
            self.setpoint = v;
        }
        self.modbus(t, client, server, 1, 6, request, response, None);
    }

    /// A request of a function with no address (diagnostics, identification, ...).
    pub fn other(
        &mut self,
        t: i64,
        client: IpAddr,
        server: IpAddr,
        func: u8,
        sub_function: Option<u16>,
        exception: Option<u8>,
    ) {
        let request = ModbusPdu {
            sub_function,
            ..pdu(t)
        };
        let response = Some(ModbusPdu {
            ts: ts(t + 800),
            ..request.clone()
        });
        self.modbus(t, client, server, 1, func, request, response, exception);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn flow(
        &mut self,
        t: i64,
        end: i64,
        client: IpAddr,
        server: IpAddr,
        port: u16,
        state: &'static str,
        service: Option<&'static str>,
    ) {
        self.events.push(Event::Flow(FlowEvent {
            service: service.map(Cow::Borrowed),
            orig_pkts: 10,
            orig_bytes: 120,
            resp_pkts: 10,
            resp_bytes: 200,
            ..flow(
                Transport::Tcp,
                (t, end),
                (client, 50_000),
                (server, port),
                state,
                "closed",
            )
        }));
    }

    /// Normal operation from `start` (µs) for `secs` seconds: polls every 1 s (holding
    /// registers 0–9 and the set-point), 2 s (coils) and 5 s (input registers), hourly
    /// reconnections, and an operator set-point write every 15 minutes.
    pub fn run(&mut self, start: i64, secs: i64) {
        for s in 0..secs {
            let t0 = start + s * SEC;
            let abs = t0 / SEC;
            if abs % 3600 == 0 {
                for p in PLCS {
                    self.flow(t0, t0 + 3600 * SEC - SEC, HMI, p, 502, "SF", Some("modbus"));
                }
            }
            if abs % 900 == 450 {
                let i = usize::try_from((abs / 900) % 6).unwrap_or(0);
                let v = OPERATOR_SETPOINTS.get(i).copied().unwrap_or(50);
                self.write_register(t0 + 500_000, HMI, PLCS[0], SETPOINT, v);
            }
            for (i, p) in PLCS.into_iter().enumerate() {
                let off = i as i64 * 50_000;
                let t = t0 + off;
                let within = |w: Option<&(i64, i64)>| w.is_some_and(|&(a, b)| a <= t && t < b);
                if within(self.unpolled.get(i)) {
                    continue;
                }
                let mute = within(self.mute.get(i));
                // A level that ramps up and down over ten minutes, one unit a second.
                let phase = (abs + i as i64 * 97) % 600;
                let level = 1000 + if phase < 300 { phase } else { 600 - phase } as u16;
                let regs: Vec<u16> = (0..10u16).map(|r| level + r * 3).collect();
                let v = (!mute).then_some(Values::Registers(regs));
                self.read(t, HMI, p, 3, 0, 10, v, None);
                if i == 0 {
                    let sp = (!mute).then(|| Values::Registers(vec![self.setpoint]));
                    self.read(t + 1000, HMI, p, 3, SETPOINT, 1, sp, None);
                }
                if abs % 2 == 0 {
                    let on = (abs / 300 + i as i64) % 2 == 0;
                    let v = (!mute).then(|| Values::Coils(vec![on, !on, true, false]));
                    self.read(t + 2000, HMI, p, 1, 0, 4, v, None);
                }
                if abs % 5 == 0 {
                    let temp = 200 + u16::try_from((abs / 5) % 20).unwrap_or(0);
                    let v = (!mute).then(|| Values::Registers(vec![temp, temp + 1]));
                    self.read(t + 3000, HMI, p, 4, 0, 2, v, None);
                }
            }
        }
    }

    /// Sorts the events by time (stable), as the collector does.
    pub fn finish(mut self) -> Vec<Event> {
        self.events.sort_by_key(|e| e.ts());
        self.events
    }
}

/// Learning traffic: `hours` of normal operation from `start_s`.
pub fn learning(start_s: i64, hours: i64) -> Vec<Event> {
    let mut p = Plant::new();
    p.run(start_s * SEC, hours * 3600);
    p.finish()
}

/// Detection traffic: normal operation from `start_s` for 12 000 s, with the attacks laid
/// over it after the first hour. Returns the events and the attack spans.
pub fn detection_with_attacks(start_s: i64) -> (Vec<Event>, Vec<AttackSpan>) {
    let mut p = Plant::new();
    let base = start_s * SEC;
    let at = |s: i64| base + s * SEC;
    let mut spans = Vec::new();
    let mut span = |name, a: i64, b: i64| {
        spans.push(AttackSpan {
            name,
            start: ts(at(a)),
            end: ts(at(b)),
        })
    };

    // PLC 2 forced into listen-only mode at 7200 s answers nothing for a minute; PLC 3
    // goes silent at 9000 s: 30 s unanswered, then the HMI stops polling it for 5 minutes.
    p.mute = [(0, 0), (at(7200), at(7260)), (at(9000), at(9030))];
    p.unpolled = [(0, 0), (0, 0), (at(9030), at(9330))];
    p.run(base, 12_000);
    // The attacks' writes do not change what the (already generated) polls read back.
    {
        // 1. Reconnaissance at 3600 s: a sweep of the subnet, then of PLC 2's registers.
        let mut q = Plant::new();
        for host in 1..=40u8 {
            let t = at(3600) + i64::from(host) * 100_000;
            let dst = IpAddr::V4(Ipv4Addr::new(10, 10, 0, host));
            let state = if PLCS.contains(&dst) { "SF" } else { "REJ" };
            q.flow(t, t + 1000, SCANNER, dst, 502, state, None);
        }
        for k in 0..100u16 {
            let t = at(3610) + i64::from(k) * 200_000;
            let addr = k * 10;
            let (v, exc) = if addr < 10 {
                (Some(Values::Registers(vec![0; 10])), None)
            } else {
                (None, Some(2))
            };
            q.read(t, SCANNER, PLCS[1], 3, addr, 10, v, exc);
        }
        p.events.append(&mut q.events);
        span("reconnaissance sweep", 3600, 3640);

        // 2. A rogue write from a new host at 4500 s (an in-range value).
        p.flow(
            at(4500),
            at(4501),
            ROGUE,
            PLCS[0],
            502,
            "SF",
            Some("modbus"),
        );
        p.write_register(at(4500) + 200_000, ROGUE, PLCS[0], SETPOINT, 55);
        span("rogue write from a new host", 4500, 4502);

        // 3. The HMI writes an out-of-range set-point at 5400 s; it stays until the
        // operator's next write at 5850 s.
        p.write_register(at(5400) + 100_000, HMI, PLCS[0], SETPOINT, 95);
        span("out-of-range set-point", 5400, 5851);

        // 4. Function-code scan of PLC 3 at 6300 s.
        for (k, f) in [7u8, 11, 12, 17, 20, 24, 43, 90].into_iter().enumerate() {
            p.other(
                at(6300) + k as i64 * 500_000,
                HMI,
                PLCS[2],
                f,
                None,
                Some(1),
            );
        }
        span("function-code scan", 6300, 6305);
    }
    // 5. Diagnostics: force listen-only mode on PLC 2 at 7200 s (it then answers nothing).
    p.other(at(7200) - 400_000, HMI, PLCS[1], 8, Some(4), None);
    span("diagnostics: listen-only", 7199, 7262);
    // 6. Flood of PLC 1 at 8100 s: 200 requests a second for 10 s.
    for k in 0..2000i64 {
        let t = at(8100) + k * 5000;
        p.read(
            t,
            HMI,
            PLCS[0],
            3,
            0,
            10,
            Some(Values::Registers(vec![1000; 10])),
            None,
        );
    }
    span("request flood", 8100, 8112);
    span("PLC 3 silent", 9000, 9330);
    // 8. Slow malicious write at the operator's normal pace (every 15 minutes), creeping
    // past the range the operator ever used.
    for (k, v) in [58u16, 61, 64].into_iter().enumerate() {
        p.write_register(at(9900) + k as i64 * 900 * SEC, HMI, PLCS[0], SETPOINT, v);
    }
    span("slow set-point creep", 9900, 11_701);
    let mut events = p.finish();
    // The set-point read-back during the creep reflects the creeping value: regenerate
    // is not needed, the plant tracked `setpoint` as it went.
    events.sort_by_key(|e| e.ts());
    (events, spans)
}
