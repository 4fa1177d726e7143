//! The scenario library: attacks and faults laid over the plant's normal traffic, each with
//! its MITRE ATT&CK for ICS technique and the detector kinds (`detector/kind`, as the
//! collector's alerts name them) it should raise. A scenario runs for a bounded time, spreading
//! its actions over it, and records its wall-clock start and end.
//!
//! A scenario that changes the process (a breaker opened, a set-point moved, a device put in
//! listen-only mode) is undone at its end by a local action at the device, off the network,
//! so no traffic outside the scenario's window belongs to it. The identity change is the
//! exception: a firmware does not roll itself back.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use mamori_models::Timestamp;
use serde::Serialize;
use tokio::time::Instant;
use tokio_modbus::prelude::Request;

use crate::client::ModbusClient;
use crate::error::SimError;
use crate::hmi::{hmi_call, read_identities};
use crate::hosts;
use crate::plant::Plant;
use crate::plc::{FC_PROGRAM_DOWNLOAD, FC_PROGRAM_UPLOAD, FC_UMAS, MODBUS_PORT};
use crate::process::{feeder, pumps, tank};
use crate::syslog;

/// Attack (someone did it) or fault (something broke).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioClass {
    Attack,
    Fault,
}

/// Which scenario (the runner behind a [`ScenarioSpec`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioKind {
    ReconSweep,
    RogueWrites,
    SetpointOutOfRange,
    ForceListenOnly,
    FunctionCodeScan,
    Flood,
    DeviceSilent,
    ProgramDownload,
    IdentityChange,
    SyslogFailedLogins,
}

/// One entry of the library.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ScenarioSpec {
    pub name: &'static str,
    #[serde(skip)]
    pub kind: ScenarioKind,
    pub class: ScenarioClass,
    pub description: &'static str,
    /// MITRE ATT&CK for ICS technique id.
    pub technique: &'static str,
    pub technique_name: &'static str,
    /// The alerts it should raise, as `detector/kind`. `inventory/device_identity_changed` names a
    /// detector the collector does not have yet.
    pub expected: &'static [&'static str],
    /// Default duration, plant seconds.
    pub default_duration_s: u64,
}

/// The library, in the order `--all` runs it.
pub const LIBRARY: &[ScenarioSpec] = &[
    ScenarioSpec {
        name: "recon_sweep",
        kind: ScenarioKind::ReconSweep,
        class: ScenarioClass::Attack,
        description: "A new host (10.20.0.66) sweeps 10.20.0.20-30 on port 502, then reads unit ids 1-4 and 16 addresses beyond the tables of every device it found.",
        technique: "T0846",
        technique_name: "Remote System Discovery",
        expected: &[
            "allowlist/new_host",
            "allowlist/new_path",
            "protocol/address_sweep",
            "protocol/address_scan",
            "traffic_window/unusual_traffic_window",
        ],
        default_duration_s: 60,
    },
    ScenarioSpec {
        name: "rogue_writes",
        kind: ScenarioKind::RogueWrites,
        class: ScenarioClass::Attack,
        description: "A rogue host (10.20.0.77) opens feeder breaker 2, lowers the overcurrent pickup to 60 A (tripping the other feeders) and forces the tank pump on in manual.",
        technique: "T0855",
        technique_name: "Unauthorized Command Message",
        expected: &[
            "allowlist/new_host",
            "allowlist/new_path",
            "allowlist/new_function",
            "process_value/setpoint_out_of_range",
            "process_value/process_deviation",
        ],
        default_duration_s: 60,
    },
    ScenarioSpec {
        name: "setpoint_out_of_range",
        kind: ScenarioKind::SetpointOutOfRange,
        class: ScenarioClass::Attack,
        description: "The known HMI (10.20.0.10), on its own connections, writes a tank level set-point of 950 cm (operators use 450-650) and a pump pressure set-point of 700 kPa (380-460).",
        technique: "T0836",
        technique_name: "Modify Parameter",
        expected: &["process_value/setpoint_out_of_range"],
        default_duration_s: 60,
    },
    ScenarioSpec {
        name: "force_listen_only",
        kind: ScenarioKind::ForceListenOnly,
        class: ScenarioClass::Attack,
        description: "A rogue host (10.20.0.77) sends diagnostics to the pump station: Return Query Data, then Force Listen Only Mode (function 8, sub-function 4); the device stops answering the HMI.",
        technique: "T0814",
        technique_name: "Denial of Service",
        expected: &[
            "allowlist/new_host",
            "allowlist/new_function",
            "protocol/unanswered_requests",
            "polling_cycle/missing_polls",
        ],
        default_duration_s: 90,
    },
    ScenarioSpec {
        name: "function_code_scan",
        kind: ScenarioKind::FunctionCodeScan,
        class: ScenarioClass::Attack,
        description: "A new host (10.20.0.66) tries 23 function codes the plant never uses on the tank PLC, which answers ILLEGAL FUNCTION.",
        technique: "T0888",
        technique_name: "Remote System Information Discovery",
        expected: &[
            "allowlist/new_host",
            "allowlist/new_function",
            "protocol/function_scan",
        ],
        default_duration_s: 30,
    },
    ScenarioSpec {
        name: "flood",
        kind: ScenarioKind::Flood,
        class: ScenarioClass::Attack,
        description: "The HMI's address (10.20.0.10) opens another connection to the tank PLC and reads its holding registers as fast as it answers (up to 500 requests/s).",
        technique: "T0814",
        technique_name: "Denial of Service",
        expected: &[
            "polling_cycle/request_flood",
            "polling_cycle/extra_requests",
            "traffic_window/unusual_traffic_window",
        ],
        default_duration_s: 30,
    },
    ScenarioSpec {
        name: "device_silent",
        kind: ScenarioKind::DeviceSilent,
        class: ScenarioClass::Fault,
        description: "The pump station's application hangs: its TCP stack still accepts connections but no request is answered; the HMI times out and reconnects.",
        technique: "T0826",
        technique_name: "Loss of Availability",
        expected: &[
            "protocol/unanswered_requests",
            "polling_cycle/missing_polls",
        ],
        default_duration_s: 120,
    },
    ScenarioSpec {
        name: "program_download",
        kind: ScenarioKind::ProgramDownload,
        class: ScenarioClass::Attack,
        description: "The engineering workstation (10.20.0.12) takes a UMAS reservation (function 90) on the tank PLC, downloads a program in blocks, starts it, then uses the Modicon program download/upload functions 125 and 126.",
        technique: "T0843",
        technique_name: "Program Download",
        expected: &["allowlist/new_function", "protocol/function_scan"],
        default_duration_s: 45,
    },
    ScenarioSpec {
        name: "identity_change",
        kind: ScenarioKind::IdentityChange,
        class: ScenarioClass::Attack,
        description: "The tank PLC's firmware is replaced: its device identification (43/14) now reports revision 2.6.0-rc1 instead of 2.4.1; the engineering workstation's inventory reads it. The new revision stays.",
        technique: "T0839",
        technique_name: "Module Firmware",
        expected: &["inventory/device_identity_changed"],
        default_duration_s: 30,
    },
    ScenarioSpec {
        name: "syslog_failed_logins",
        kind: ScenarioKind::SyslogFailedLogins,
        class: ScenarioClass::Attack,
        description: "The OT switch (10.20.0.41) logs 30 failed SSH logins from 10.20.0.66 for admin, root, cisco and operator, then a maximum-attempts error.",
        technique: "T0812",
        technique_name: "Default Credentials",
        expected: &["syslog/syslog_rate_burst", "syslog/new_syslog_template"],
        default_duration_s: 30,
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static ScenarioSpec> {
    LIBRARY.iter().find(|s| s.name == name)
}

/// What ran, and when (one line of the scenario log).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScenarioRecord {
    pub name: String,
    pub class: ScenarioClass,
    pub technique: String,
    pub start: Timestamp,
    pub end: Timestamp,
    pub expected: Vec<String>,
    /// The hosts that acted (attackers, or the failing device).
    pub sources: Vec<IpAddr>,
    /// The devices acted on.
    pub targets: Vec<IpAddr>,
}

/// Sleeps so that `n` actions spread evenly over `duration` from `start`: action `i` (0-based)
/// starts at `start + duration * i / n`.
async fn pace(start: Instant, duration: Duration, i: usize, n: usize) {
    let n = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    tokio::time::sleep_until(start + duration / n * i).await;
}

fn v4(ip: Ipv4Addr) -> IpAddr {
    IpAddr::V4(ip)
}

/// Logs an action that went wrong; the scenario goes on (an attacker's request may fail).
fn note<T>(what: &str, r: Result<T, SimError>) {
    if let Err(e) = r {
        tracing::debug!(action = what, error = %e, "scenario action without answer");
    }
}

/// Runs `spec` for `duration` (real time). Returns the hosts that acted and those acted on.
pub(crate) async fn run(
    plant: &Plant,
    spec: &ScenarioSpec,
    duration: Duration,
) -> Result<(Vec<IpAddr>, Vec<IpAddr>), SimError> {
    let tap = plant.tap();
    let plcs = plant.plcs();
    let [tank_plc, feeder_plc, pump_plc] = [0, 1, 2].map(|i| plcs.get(i).cloned());
    let (Some(tank_plc), Some(feeder_plc), Some(pump_plc)) = (tank_plc, feeder_plc, pump_plc)
    else {
        return Err(SimError::Config(
            "the scenarios need the three default devices".to_owned(),
        ));
    };
    let timeout = plant.request_timeout();
    let client = |ip, plc: &crate::plc::PlcHandle| {
        ModbusClient::new(Arc::clone(tap), ip, plc.clone(), timeout)
    };
    let start = Instant::now();
    let ip = |p: &crate::plc::PlcHandle| v4(p.spec.ip);
    match spec.kind {
        ScenarioKind::ReconSweep => {
            #[derive(Clone, Copy)]
            enum Step {
                Probe(Ipv4Addr),
                Read(usize, u8, u16),
            }
            let mut steps = Vec::new();
            for last in 20u8..=30 {
                let host = Ipv4Addr::new(10, 20, 0, last);
                match plcs.iter().position(|p| p.spec.ip == host) {
                    Some(i) => {
                        steps.extend((1u8..=4).map(|unit| Step::Read(i, unit, 0)));
                        steps.extend((1u16..=16).map(|k| Step::Read(i, 1, k * 32)));
                    }
                    None => steps.push(Step::Probe(host)),
                }
            }
            let mut clients: Vec<ModbusClient> =
                plcs.iter().map(|p| client(hosts::SCANNER, p)).collect();
            let n = steps.len();
            for (k, step) in steps.into_iter().enumerate() {
                pace(start, duration, k, n).await;
                match step {
                    Step::Probe(host) => {
                        tap.probe(hosts::SCANNER, SocketAddrV4::new(host, MODBUS_PORT));
                    }
                    Step::Read(i, unit, address) => {
                        if let Some(c) = clients.get_mut(i) {
                            note(
                                "sweep read",
                                c.call(unit, Request::ReadHoldingRegisters(address, 1))
                                    .await,
                            );
                        }
                    }
                }
            }
            for c in &mut clients {
                c.close().await;
            }
            Ok((vec![v4(hosts::SCANNER)], plcs.iter().map(ip).collect()))
        }
        ScenarioKind::RogueWrites => {
            let mut f = client(hosts::ROGUE, &feeder_plc);
            let mut t = client(hosts::ROGUE, &tank_plc);
            let steps: [(bool, Request<'static>); 6] = [
                (
                    true,
                    Request::ReadCoils(feeder::CO_BREAKER, feeder::FEEDERS),
                ),
                (
                    true,
                    Request::WriteSingleCoil(feeder::CO_BREAKER + 1, false),
                ),
                (true, Request::WriteSingleRegister(feeder::HR_PICKUP, 60)),
                (true, Request::ReadInputRegisters(feeder::IR_CURRENT, 6)),
                (false, Request::WriteSingleCoil(tank::CO_AUTO, false)),
                (false, Request::WriteSingleCoil(tank::CO_PUMP, true)),
            ];
            let n = steps.len() + 1;
            for (k, (on_feeder, request)) in steps.into_iter().enumerate() {
                pace(start, duration, k, n).await;
                let c = if on_feeder { &mut f } else { &mut t };
                let unit = c.plc().spec.unit;
                note("rogue write", c.call(unit, request).await);
            }
            f.close().await;
            t.close().await;
            pace(start, duration, n, n).await;
            feeder_plc.restore();
            tank_plc.restore();
            feeder_plc.with_state(|st| st.data.set_discrete(feeder::DI_TRIP, false));
            Ok((vec![v4(hosts::ROGUE)], vec![ip(&feeder_plc), ip(&tank_plc)]))
        }
        ScenarioKind::SetpointOutOfRange => {
            let hmi = plant.hmi();
            if let Some(tx) = hmi.first() {
                note(
                    "setpoint write",
                    hmi_call(
                        tx,
                        Request::WriteSingleRegister(tank::HR_LEVEL_SETPOINT, 950),
                    )
                    .await,
                );
            }
            pace(start, duration, 1, 3).await;
            if let Some(tx) = hmi.get(2) {
                note(
                    "setpoint write",
                    hmi_call(
                        tx,
                        Request::WriteSingleRegister(pumps::HR_PRESSURE_SETPOINT, 700),
                    )
                    .await,
                );
            }
            pace(start, duration, 3, 3).await;
            tank_plc.restore();
            pump_plc.restore();
            Ok((vec![v4(hosts::HMI)], vec![ip(&tank_plc), ip(&pump_plc)]))
        }
        ScenarioKind::ForceListenOnly => {
            let mut c = client(hosts::ROGUE, &pump_plc);
            let unit = pump_plc.spec.unit;
            note(
                "return query data",
                c.call(
                    unit,
                    Request::Custom(8, vec![0x00, 0x00, 0xA5, 0x37].into()),
                )
                .await,
            );
            pace(start, duration, 1, 10).await;
            // No response is expected: the device goes quiet at once.
            let wait = timeout.min(duration / 4);
            note(
                "force listen only",
                c.call_within(
                    unit,
                    Request::Custom(8, vec![0x00, 0x04, 0x00, 0x00].into()),
                    wait,
                )
                .await,
            );
            c.close().await;
            pace(start, duration, 1, 1).await;
            pump_plc.with_state(|st| st.listen_only = false);
            Ok((vec![v4(hosts::ROGUE)], vec![ip(&pump_plc)]))
        }
        ScenarioKind::FunctionCodeScan => {
            const CODES: [u8; 23] = [
                7, 11, 12, 20, 24, 41, 42, 65, 66, 67, 68, 69, 70, 71, 72, 100, 101, 102, 103, 104,
                105, 110, 120,
            ];
            let mut c = client(hosts::SCANNER, &tank_plc);
            let unit = tank_plc.spec.unit;
            for (k, fc) in CODES.into_iter().enumerate() {
                pace(start, duration, k, CODES.len()).await;
                note(
                    "function probe",
                    c.call(
                        unit,
                        Request::Custom(fc, vec![0x00, 0x00, 0x00, 0x01].into()),
                    )
                    .await,
                );
            }
            c.close().await;
            Ok((vec![v4(hosts::SCANNER)], vec![ip(&tank_plc)]))
        }
        ScenarioKind::Flood => {
            const GAP: Duration = Duration::from_millis(2);
            let mut c = client(hosts::HMI, &tank_plc);
            let unit = tank_plc.spec.unit;
            let end = start + duration;
            let mut next = start;
            while Instant::now() < end {
                tokio::time::sleep_until(next).await;
                next += GAP;
                let read = Request::ReadHoldingRegisters(tank::HR_LEVEL_SETPOINT, 3);
                note("flood read", c.call(unit, read).await);
            }
            c.close().await;
            Ok((vec![v4(hosts::HMI)], vec![ip(&tank_plc)]))
        }
        ScenarioKind::DeviceSilent => {
            pump_plc.with_state(|st| st.silent = true);
            pace(start, duration, 1, 1).await;
            pump_plc.with_state(|st| st.silent = false);
            Ok((vec![ip(&pump_plc)], vec![ip(&pump_plc)]))
        }
        ScenarioKind::ProgramDownload => {
            const SESSION: u8 = 0x2A;
            let block = |n: u8| {
                let mut b = vec![SESSION, 0x31, 0x00, n, 0x40, 0x00];
                b.extend((0u8..64).map(|i| i.wrapping_mul(n).wrapping_add(0x11)));
                b
            };
            let mut steps: Vec<Request<'static>> = vec![
                Request::Custom(FC_UMAS, vec![0x00, 0x02].into()), // read PLC identification
                Request::Custom(FC_UMAS, vec![0x00, 0x10, 0x3B, 0x01, 0x00].into()), // reservation
                Request::Custom(FC_UMAS, vec![SESSION, 0x30, 0x00, 0x01].into()), // init download
            ];
            steps.extend((1u8..=4).map(|n| Request::Custom(FC_UMAS, block(n).into())));
            steps.push(Request::Custom(
                FC_UMAS,
                vec![SESSION, 0x32, 0x00, 0x01].into(),
            )); // end
            steps.push(Request::Custom(
                FC_UMAS,
                vec![SESSION, 0x40, 0xFF, 0x00].into(),
            )); // start
            let mut program = vec![0x00, 0x01, 0x00, 0x40];
            program.extend((0u8..64).map(|i| i ^ 0x5A));
            steps.push(Request::Custom(FC_PROGRAM_DOWNLOAD, program.into()));
            steps.push(Request::Custom(
                FC_PROGRAM_UPLOAD,
                vec![0x00, 0x01, 0x00, 0x00].into(),
            ));
            let mut c = client(hosts::ENG_WS, &tank_plc);
            let unit = tank_plc.spec.unit;
            let n = steps.len();
            for (k, request) in steps.into_iter().enumerate() {
                pace(start, duration, k, n).await;
                note("program download", c.call(unit, request).await);
            }
            c.close().await;
            Ok((vec![v4(hosts::ENG_WS)], vec![ip(&tank_plc)]))
        }
        ScenarioKind::IdentityChange => {
            tank_plc.with_state(|st| st.identity.revision = "2.6.0-rc1".to_owned());
            read_identities(tap, hosts::ENG_WS, std::slice::from_ref(&tank_plc), timeout).await;
            pace(start, duration, 1, 2).await;
            read_identities(tap, hosts::ENG_WS, plcs, timeout).await;
            pace(start, duration, 2, 2).await;
            Ok((vec![ip(&tank_plc)], vec![ip(&tank_plc)]))
        }
        ScenarioKind::SyslogFailedLogins => {
            const ATTEMPTS: usize = 30;
            const USERS: [&str; 4] = ["admin", "root", "cisco", "operator"];
            let mut rng = plant.scenario_rng(spec.name);
            for k in 0..ATTEMPTS {
                pace(start, duration, k, ATTEMPTS + 1).await;
                let user = USERS.get(k % USERS.len()).copied().unwrap_or("admin");
                let port = 40_000 + rng.range_u16(0, 20_000);
                let msg = format!(
                    "Failed password for {user} from {} port {port} ssh2",
                    hosts::SCANNER
                );
                syslog::send(
                    tap,
                    hosts::SWITCH,
                    syslog::AUTHPRIV,
                    syslog::WARNING,
                    "sshd",
                    2077,
                    &msg,
                );
            }
            pace(start, duration, ATTEMPTS, ATTEMPTS + 1).await;
            let msg = format!(
                "error: maximum authentication attempts exceeded for root from {} port {} ssh2 [preauth]",
                hosts::SCANNER,
                40_000 + rng.range_u16(0, 20_000)
            );
            syslog::send(tap, hosts::SWITCH, syslog::AUTHPRIV, 3, "sshd", 2077, &msg);
            Ok((vec![v4(hosts::SCANNER)], vec![v4(hosts::SWITCH.ip)]))
        }
    }
}
