//! A short simulation, ten times faster than real time: a couple of seconds of normal traffic,
//! then every scenario of the library for half a second each, captured to a pcap and replayed
//! through the agent's pipeline. The events must show the periodic polls, clean normal
//! traffic, and in each scenario's window the traffic the scenario claims.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use mamori_agent::pipeline::PipelineConfig;
use mamori_agent::replay::replay_to_vec;
use mamori_models::{Event, FlowEvent, ModbusEvent, SyslogEvent, Timestamp, Values};
use mamori_sim::hosts::{ENG_WS, HMI, ROGUE, SCANNER, SWITCH};
use mamori_sim::process::{pumps, tank};
use mamori_sim::{LIBRARY, PcapFileSink, Plant, PlantConfig, RunOptions, ScenarioRecord};

const TANK: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 20, 0, 21));
const FEEDER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 20, 0, 22));
const PUMPS: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 20, 0, 23));
/// Plant seconds per real second.
const SPEED: f64 = 10.0;

fn ip(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

struct Run {
    events: Vec<Event>,
    records: Vec<ScenarioRecord>,
}

impl Run {
    fn record(&self, name: &str) -> &ScenarioRecord {
        self.records.iter().find(|r| r.name == name).unwrap()
    }

    fn modbus_in(&self, name: &str) -> Vec<&ModbusEvent> {
        let r = self.record(name);
        self.modbus()
            .filter(|e| e.ts >= r.start && e.ts <= r.end)
            .collect()
    }

    fn modbus(&self) -> impl Iterator<Item = &ModbusEvent> {
        self.events.iter().filter_map(|e| match e {
            Event::Modbus(m) => Some(m),
            _ => None,
        })
    }

    fn flows(&self) -> impl Iterator<Item = &FlowEvent> {
        self.events.iter().filter_map(|e| match e {
            Event::Flow(f) => Some(f),
            _ => None,
        })
    }

    fn syslog(&self) -> impl Iterator<Item = &SyslogEvent> {
        self.events.iter().filter_map(|e| match e {
            Event::Syslog(s) => Some(s),
            _ => None,
        })
    }

    fn first_start(&self) -> Timestamp {
        self.records.iter().map(|r| r.start).min().unwrap()
    }
}

async fn simulate() -> Run {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("sim.pcap");
    let config = PlantConfig {
        seed: 7,
        speed: SPEED,
        operator_gap: (Duration::from_secs(4), Duration::from_secs(8)),
        identity_period: Duration::from_secs(10),
        syslog_period: Duration::from_secs(2),
        ..PlantConfig::default()
    };
    let sink = PcapFileSink::create(&pcap).unwrap();
    let plant = Plant::start(config, Box::new(sink)).await.unwrap();
    let options = RunOptions {
        learn_s: 25.0,
        gap_s: 3.0,
        scenarios: LIBRARY.iter().map(|s| s.name.to_owned()).collect(),
        duration_s: Some(5.0),
    };
    let records = plant.run(&options, |_| {}).await.unwrap();
    let stats = plant.shutdown().await.unwrap();
    assert!(stats.frames_total > 1000, "{stats:?}");
    assert_eq!(stats.frames_dropped_total, 0);
    let (events, report) = replay_to_vec(&[pcap], PipelineConfig::default());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.counters.malformed, 0, "{:?}", report.counters);
    assert_eq!(report.counters.tcp_gaps, 0, "{:?}", report.counters);
    assert_eq!(report.counters.modbus_resynchronisations, 0);
    Run { events, records }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_shows_normal_polling_and_every_scenario() {
    let run = simulate().await;
    assert_eq!(run.records.len(), LIBRARY.len());
    for r in &run.records {
        assert!(r.start < r.end, "{r:?}");
        assert!(!r.expected.is_empty());
    }
    normal_traffic_is_periodic_and_clean(&run);
    recon_sweep(&run);
    rogue_writes(&run);
    setpoint_out_of_range(&run);
    force_listen_only(&run);
    function_code_scan(&run);
    flood(&run);
    device_silent(&run);
    program_download(&run);
    identity_change(&run);
    syslog_failed_logins(&run);
}

fn normal_traffic_is_periodic_and_clean(run: &Run) {
    let cut = run.first_start();
    let normal: Vec<&ModbusEvent> = run.modbus().filter(|e| e.ts < cut).collect();
    assert!(normal.len() > 100, "{} normal transactions", normal.len());
    for e in &normal {
        assert!(e.anomalies.is_empty(), "{e:?}");
        assert!(e.exception_code.is_none(), "{e:?}");
        assert!(e.response.is_some(), "{e:?}");
    }
    for f in run.flows().filter(|f| f.end_ts < cut) {
        assert!(f.anomalies.is_empty(), "{f:?}");
    }
    // The tank's level poll: every plant second.
    let ts: Vec<i64> = normal
        .iter()
        .filter(|e| e.src_ip == ip(HMI) && e.dst_ip == TANK && e.func == 4)
        .map(|e| e.ts.as_micros())
        .collect();
    let mut gaps: Vec<i64> = ts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 15, "{} level polls", ts.len());
    gaps.sort_unstable();
    let period = (1_000_000.0 / SPEED) as i64;
    let median = gaps[gaps.len() / 2];
    assert!(
        (median - period).abs() < period / 5,
        "median gap {median} µs"
    );
    let steady = gaps
        .iter()
        .filter(|g| (**g - period).abs() < period / 2)
        .count();
    assert!(steady * 10 >= gaps.len() * 9, "{gaps:?}");
    // The slower channels poll every two plant seconds.
    let setpoint_polls = normal
        .iter()
        .filter(|e| e.src_ip == ip(HMI) && e.dst_ip == TANK && e.func == 3)
        .count();
    assert!(setpoint_polls * 3 < ts.len() * 2 && setpoint_polls * 3 > ts.len());
    // The operator's writes stay in range; identity reads happen.
    let writes: Vec<u16> = normal
        .iter()
        .filter(|e| e.func == 6)
        .filter_map(|e| match e.request.as_ref()?.values.as_ref()? {
            Values::Registers(v) => v.first().copied(),
            Values::Coils(_) => None,
        })
        .collect();
    assert!(!writes.is_empty(), "the operator wrote nothing");
    for v in writes {
        assert!(
            (tank::OPERATOR_RANGE.0..=tank::OPERATOR_RANGE.1).contains(&v)
                || (pumps::OPERATOR_RANGE.0..=pumps::OPERATOR_RANGE.1).contains(&v),
            "{v}"
        );
    }
    assert!(
        normal
            .iter()
            .any(|e| e.src_ip == ip(ENG_WS) && e.func == 43)
    );
    assert!(run.syslog().any(|s| s.ts < cut && s.anomalies.is_empty()));
}

fn recon_sweep(run: &Run) {
    let ev = run.modbus_in("recon_sweep");
    let scan: Vec<_> = ev.iter().filter(|e| e.src_ip == ip(SCANNER)).collect();
    let illegal_address = scan.iter().filter(|e| e.exception_code == Some(2)).count();
    assert!(illegal_address >= 3 * 16, "{illegal_address}");
    let units: BTreeSet<u8> = scan.iter().map(|e| e.unit).collect();
    assert!(units.len() >= 4, "{units:?}");
    let servers: BTreeSet<IpAddr> = scan.iter().map(|e| e.dst_ip).collect();
    assert_eq!(servers.len(), 3);
    // Probes of absent hosts: a SYN and nothing else.
    let absent = ip(Ipv4Addr::new(10, 20, 0, 30));
    let probe = run
        .flows()
        .find(|f| f.src_ip == ip(SCANNER) && f.dst_ip == absent)
        .expect("a probe of 10.20.0.30");
    assert_eq!(probe.state, "S0");
}

fn rogue_writes(run: &Run) {
    let ev = run.modbus_in("rogue_writes");
    let writes: Vec<_> = ev
        .iter()
        .filter(|e| e.src_ip == ip(ROGUE) && matches!(e.func, 5 | 6))
        .collect();
    assert!(writes.iter().any(|e| e.dst_ip == FEEDER && e.func == 5));
    assert!(writes.iter().any(|e| e.dst_ip == FEEDER && e.func == 6));
    assert!(writes.iter().any(|e| e.dst_ip == TANK && e.func == 5));
}

fn setpoint_out_of_range(run: &Run) {
    let ev = run.modbus_in("setpoint_out_of_range");
    let w = |server, v| {
        ev.iter().any(|e| {
            e.src_ip == ip(HMI)
                && e.dst_ip == server
                && e.func == 6
                && e.request.as_ref().and_then(|r| r.values.clone())
                    == Some(Values::Registers(vec![v]))
                && e.exception_code.is_none()
        })
    };
    assert!(w(TANK, 950));
    assert!(w(PUMPS, 700));
}

fn force_listen_only(run: &Run) {
    let ev = run.modbus_in("force_listen_only");
    let diag: Vec<_> = ev
        .iter()
        .filter(|e| e.src_ip == ip(ROGUE) && e.dst_ip == PUMPS && e.func == 8)
        .collect();
    let sub4 = diag
        .iter()
        .find(|e| e.request.as_ref().and_then(|r| r.sub_function) == Some(4))
        .expect("FC 8 sub 4");
    assert!(sub4.response.is_none());
    assert!(
        diag.iter()
            .any(|e| e.request.as_ref().and_then(|r| r.sub_function) == Some(0))
    );
    // The HMI's polls of the pump station go unanswered meanwhile.
    assert!(
        ev.iter()
            .any(|e| e.src_ip == ip(HMI) && e.dst_ip == PUMPS && e.response.is_none())
    );
}

fn function_code_scan(run: &Run) {
    let ev = run.modbus_in("function_code_scan");
    let funcs: BTreeSet<u8> = ev
        .iter()
        .filter(|e| e.src_ip == ip(SCANNER) && e.exception_code == Some(1))
        .map(|e| e.func)
        .collect();
    assert!(funcs.len() >= 20, "{funcs:?}");
}

fn flood(run: &Run) {
    let ev = run.modbus_in("flood");
    let to_tank = ev
        .iter()
        .filter(|e| e.src_ip == ip(HMI) && e.dst_ip == TANK)
        .count();
    // Normally about 25 in half a second (three channels); the flood adds hundreds.
    assert!(to_tank > 100, "{to_tank}");
}

fn device_silent(run: &Run) {
    let ev = run.modbus_in("device_silent");
    let to_pumps: Vec<_> = ev.iter().filter(|e| e.dst_ip == PUMPS).collect();
    assert!(to_pumps.len() >= 2, "{to_pumps:?}");
    // A poll in flight as the fault starts or ends may still be answered.
    let answered = to_pumps.iter().filter(|e| e.response.is_some()).count();
    assert!(answered <= 2, "{to_pumps:?}");
}

fn program_download(run: &Run) {
    let ev = run.modbus_in("program_download");
    let funcs: BTreeSet<u8> = ev
        .iter()
        .filter(|e| e.src_ip == ip(ENG_WS) && e.dst_ip == TANK && e.response.is_some())
        .map(|e| e.func)
        .collect();
    assert!(funcs.is_superset(&[90, 125, 126].into()), "{funcs:?}");
    let umas: BTreeSet<u8> = ev
        .iter()
        .filter(|e| e.func == 90)
        .filter_map(|e| e.request.as_ref()?.umas_function)
        .collect();
    assert!(
        umas.is_superset(&[0x10, 0x30, 0x31, 0x32].into()),
        "{umas:?}"
    );
}

fn revisions(events: &[&ModbusEvent]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e.func == 43 && e.dst_ip == TANK)
        .filter_map(|e| e.response.as_ref()?.objects.clone())
        .flatten()
        .filter(|o| o.id == 2)
        .map(|o| o.value)
        .collect()
}

fn identity_change(run: &Run) {
    let cut = run.first_start();
    let before: Vec<&ModbusEvent> = run.modbus().filter(|e| e.ts < cut).collect();
    assert_eq!(revisions(&before), ["2.4.1".to_owned()].into());
    let during = run.modbus_in("identity_change");
    assert_eq!(revisions(&during), ["2.6.0-rc1".to_owned()].into());
}

fn syslog_failed_logins(run: &Run) {
    let r = run.record("syslog_failed_logins");
    let failed: Vec<_> = run
        .syslog()
        .filter(|s| s.ts >= r.start && s.ts <= r.end)
        .filter(|s| s.src_ip == Some(ip(SWITCH.ip)))
        .filter(|s| {
            s.msg
                .as_deref()
                .is_some_and(|m| m.starts_with("Failed password") && m.contains("10.20.0.66"))
        })
        .collect();
    assert_eq!(failed.len(), 30);
    assert!(
        failed
            .iter()
            .all(|s| s.anomalies.is_empty() && s.hostname.as_deref() == Some("sw-ot-1"))
    );
}
