//! Detection throughput: the allowlist, polling-cycle and process-value detectors (with the
//! protocol checks) over a synthetic plant: one HMI polling 20 PLCs on three cycles.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::borrow::Cow;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mamori_models::detect::{DetectConfig, Detector, Learner};
use mamori_models::{Event, ModbusEvent, ModbusPdu, Timestamp, Values};

fn plant(start_s: i64, secs: i64) -> Vec<Event> {
    let hmi = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10));
    let mut out = Vec::new();
    for s in 0..secs {
        for p in 0..20u8 {
            let plc = IpAddr::V4(Ipv4Addr::new(10, 0, 1, p));
            for (k, (func, addr, qty)) in [(3u8, 0u16, 10u16), (3, 100, 4), (4, 0, 8), (1, 0, 16)]
                .into_iter()
                .enumerate()
            {
                let t = (start_s + s) * 1_000_000 + i64::from(p) * 10_000 + k as i64 * 1000;
                let values = if func == 1 {
                    Values::Coils((0..qty).map(|i| (i + s as u16).is_multiple_of(3)).collect())
                } else {
                    Values::Registers((0..qty).map(|i| 500 + i + (s % 50) as u16).collect())
                };
                out.push(Event::Modbus(ModbusEvent {
                    ts: Timestamp::from_micros(t),
                    src_ip: hmi,
                    src_port: 40_000,
                    dst_ip: plc,
                    dst_port: 502,
                    tid: 1,
                    unit: 1,
                    func,
                    func_name: Cow::Borrowed("READ"),
                    request: Some(ModbusPdu {
                        ts: Timestamp::from_micros(t),
                        len: 6,
                        address: Some(addr),
                        quantity: Some(qty),
                        ..ModbusPdu::default()
                    }),
                    response: Some(ModbusPdu {
                        ts: Timestamp::from_micros(t + 500),
                        len: 6,
                        values: Some(values),
                        ..ModbusPdu::default()
                    }),
                    exception: None,
                    exception_code: None,
                    latency_us: Some(500),
                    anomalies: Vec::new(),
                }));
            }
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut learner = Learner::new(DetectConfig::default());
    for e in &plant(0, 600) {
        learner.observe(e);
    }
    let baseline = learner.finish();
    let events = plant(600, 250);
    let mut g = c.benchmark_group("detect");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("modbus_events", |b| {
        b.iter(|| {
            let mut d = Detector::new(baseline.clone(), DetectConfig::default()).unwrap();
            for e in &events {
                d.observe(black_box(e));
            }
            black_box(d.finish())
        })
    });
    g.bench_function("learn_modbus_events", |b| {
        b.iter(|| {
            let mut l = Learner::new(DetectConfig::default());
            for e in &events {
                l.observe(black_box(e));
            }
            black_box(l.finish())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
