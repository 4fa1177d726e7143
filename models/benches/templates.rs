//! Template-miner throughput on real log lines: the ten public Loghub-2k sources
//! (`shared/corpus/loghub`, one miner per source as the syslog detector keeps one per
//! application), or, without the corpus, generated lines of the same flavour.
//!
//! `cargo bench -p mamori-models --bench templates`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mamori_models::templates::{MinerConfig, TemplateMiner};

// The evaluations' loader, so the bench reads the corpus exactly as they do.
#[path = "../tests/common/mod.rs"]
mod common;

/// The `Content` column of each source, or generated lines when the corpus is absent.
fn sources() -> Vec<Vec<String>> {
    let dir = std::path::Path::new(common::CORPUS);
    let mut out = Vec::new();
    if dir.join("MANIFEST.md").exists() {
        for ds in common::SOURCES {
            out.push(
                common::load(dir, ds)
                    .into_iter()
                    .map(|l| l.content)
                    .collect(),
            );
        }
    }
    if out.is_empty() {
        println!(
            "Loghub corpus not found at {}: generated lines instead",
            common::CORPUS
        );
        out.push(
            (0..20_000u32)
                .map(|i| match i % 4 {
                    0 => format!("Invalid user u{} from 10.0.{}.{}", i % 97, i % 7, i % 251),
                    1 => format!(
                        "session opened for user {} by (uid={})",
                        ["root", "ops", "hmi"][i as usize % 3],
                        i % 5
                    ),
                    2 => format!("Modbus unit {} timeout after {} ms", i % 32, 100 + i % 900),
                    _ => format!(
                        "link {} changed state to {}",
                        i % 8,
                        ["up", "down"][i as usize % 2]
                    ),
                })
                .collect(),
        );
    }
    out
}

fn bench(c: &mut Criterion) {
    let sources = sources();
    let lines: usize = sources.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("templates");
    g.throughput(Throughput::Elements(lines as u64));
    g.bench_function("mine_loghub_lines", |b| {
        b.iter(|| {
            for source in &sources {
                let mut m = TemplateMiner::new(MinerConfig::default()).unwrap();
                for l in source {
                    black_box(m.add(black_box(l)));
                }
                black_box(m.len());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
