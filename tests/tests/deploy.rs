//! The files in `deploy/`: the Prometheus alert rules pass `promtool check rules` and their unit
//! tests (`promtool test rules`), and reference only metrics the agent registers.
//!
//! Needs promtool (Debian package `prometheus`): skipped with a reason when absent, mandatory
//! with `MAMORI_REQUIRE_PROMTOOL=1` (set by `.ci/run`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `mamori_agent_*` names in a text (metric names end at the first non-name character).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("mamori_agent_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn alert_rules_use_only_metrics_the_agent_exports() {
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/mamori-rules.yml")).unwrap();
    let exported =
        metric_names(&std::fs::read_to_string(root().join("agent/src/metrics.rs")).unwrap());
    let used = metric_names(&rules);
    assert!(!used.is_empty());
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "rules use metrics the agent does not export: {unknown:?}"
    );
}

#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    if Command::new("promtool").arg("--version").output().is_err() {
        if std::env::var_os("MAMORI_REQUIRE_PROMTOOL").is_some_and(|v| v == "1") {
            panic!("MAMORI_REQUIRE_PROMTOOL=1 but promtool is not installed");
        }
        eprintln!("skipped: promtool is not installed (Debian package prometheus)");
        return;
    }
    let dir = root().join("deploy/prometheus");
    for args in [
        ["check", "rules", "mamori-rules.yml"],
        ["test", "rules", "mamori-rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
