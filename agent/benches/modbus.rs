//! Criterion benchmarks on real captures: the Modbus PDU parser alone, and the whole pipeline
//! (decode, flows, reassembly, Modbus sessions) on frames held in memory. Uses Plant1 from the
//! shared corpus when present, else the project's golden capture.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use mamori_agent::capture::{L4, LinkType, RawPacket, decode_frame, read_capture_file};
use mamori_agent::pipeline::{Pipeline, PipelineConfig};
use mamori_agent::proto::modbus::parser::{
    Framing, parse_modbus_adu, parse_modbus_request, parse_modbus_response,
};
use mamori_models::Timestamp;

struct Frame {
    ts: Timestamp,
    link_type: LinkType,
    data: Vec<u8>,
}

fn capture() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let plant1 = root.join("../../shared/corpus/modbus/controlthings-ct-samples/Plant1_ModbusTCP/Plant1_ModbusTCP.pcap");
    if plant1.is_file() {
        plant1
    } else {
        root.join("../tests/golden/modbus_plant.pcap")
    }
}

fn frames(path: &Path) -> Vec<Frame> {
    let mut out = Vec::new();
    read_capture_file(path, |p| {
        out.push(Frame {
            ts: p.ts,
            link_type: p.link_type,
            data: p.data.to_vec(),
        })
    })
    .unwrap();
    out
}

fn bench(c: &mut Criterion) {
    let path = capture();
    let frames = frames(&path);
    // Every ADU of the capture, with whether it came from the server port.
    let mut adus: Vec<(bool, Vec<u8>)> = Vec::new();
    for f in &frames {
        if let Ok(d) = decode_frame(f.link_type, &f.data)
            && let L4::Tcp {
                src_port, payload, ..
            } = d.l4
        {
            let mut rest = payload;
            while let Framing::Adu(adu, n) = parse_modbus_adu(rest, 1024) {
                adus.push((src_port == 502, adu.pdu.to_vec()));
                rest = &rest[n..];
            }
        }
    }
    let name = path.file_name().unwrap().to_string_lossy().into_owned();

    let mut g = c.benchmark_group("modbus_pdu_parser");
    g.throughput(Throughput::Elements(adus.len() as u64));
    g.bench_function(format!("{name}: {} PDUs", adus.len()), |b| {
        b.iter(|| {
            let mut n = 0usize;
            for (from_server, pdu) in &adus {
                let d = if *from_server {
                    parse_modbus_response(pdu)
                } else {
                    parse_modbus_request(pdu)
                };
                n += d.anomalies.len() + usize::from(d.raw_function);
            }
            n
        })
    });
    g.finish();

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function(format!("{name}: {} frames", frames.len()), |b| {
        b.iter(|| {
            let mut p = Pipeline::new(PipelineConfig::default());
            let mut events = 0usize;
            let mut sink = |_e: mamori_models::Event| events += 1;
            for f in &frames {
                p.process(
                    &RawPacket {
                        ts: f.ts,
                        link_type: f.link_type,
                        data: &f.data,
                        orig_len: f.data.len() as u32,
                    },
                    &mut sink,
                );
            }
            p.finish(&mut sink);
            events
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
