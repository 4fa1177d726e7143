//! The files in `deploy/`: the Prometheus alert rules pass `promtool check rules` and their unit
//! tests (`promtool test rules`); the rules and the Grafana dashboards reference only metrics the
//! agent and the collector register.
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

/// `mamori_*` names in a text (metric names end at the first non-name character).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("mamori_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// Every metric name the agent and the collector register (string literals in their
/// metrics modules; a prefix alone such as `mamori_` is not a metric).
fn exported() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for f in ["agent/src/metrics.rs", "collector/src/metrics.rs"] {
        names.extend(metric_names(
            &std::fs::read_to_string(root().join(f)).unwrap(),
        ));
    }
    names.retain(|n| n.len() > "mamori_agent_".len());
    names
}

#[test]
fn alert_rules_use_only_exported_metrics() {
    let known = exported();
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/mamori-rules.yml")).unwrap();
    let used = metric_names(&rules);
    assert!(!used.is_empty());
    let unknown: Vec<_> = used.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "rules use metrics nobody exports: {unknown:?}"
    );
}

#[test]
fn dashboards_use_only_exported_metrics() {
    let known = exported();
    let dir = root().join("deploy/grafana/dashboards");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut exprs = Vec::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                exprs.push(target["expr"].as_str().unwrap().to_owned());
            }
        }
        for v in dashboard["templating"]["list"].as_array().unwrap() {
            exprs.push(v["query"].as_str().unwrap_or_default().to_owned());
        }
        let used = metric_names(&exprs.join("\n"));
        let unknown: Vec<_> = used.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "{} uses metrics nobody exports: {unknown:?}",
            path.display()
        );
        checked += used.len();
    }
    assert!(checked > 10, "the dashboards reference {checked} metrics");
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
