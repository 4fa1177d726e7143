//! The files in `deploy/`: the Prometheus alert rules pass `promtool check rules` and their unit
//! tests (`promtool test rules`); the rules and the Grafana dashboards reference only metrics the
//! agent and the collector register; the Alertmanager example passes `amtool check-config` and
//! routes each kind of alert to its receiver; the container lab (`deploy/container/`) refers only
//! to files, subcommands, packages and binaries that exist, and its configurations load.
//!
//! Needs promtool (Debian package `prometheus`) and amtool (`prometheus-alertmanager`): each test
//! is skipped with a reason when its tool is absent, mandatory with `MAMORI_REQUIRE_PROMTOOL=1`
//! or `MAMORI_REQUIRE_ALERTMANAGER=1` (set by `.ci/run`). The lab's configurations are
//! loaded with certificates from `deploy/make-certs.sh` when openssl is there
//! (`MAMORI_REQUIRE_OPENSSL=1`). No container engine is needed: nothing is built or started.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_norway::Value as Yaml;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: impl AsRef<Path>) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(path: &str) -> Yaml {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Whether `program` runs; when it does not, the test is skipped with a reason unless `require`
/// is set to 1, where it fails.
fn have(program: &str, require: &str, package: &str) -> bool {
    if Command::new(program).arg("--version").output().is_ok() {
        return true;
    }
    if std::env::var_os(require).is_some_and(|v| v == "1") {
        panic!("{require}=1 but {program} is not installed");
    }
    eprintln!("skipped: {program} is not installed (Debian package {package})");
    false
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

/// The histograms the agent and the collector expose, from their own rendering (`# TYPE name
/// histogram`): a query uses their `_bucket`, `_sum` and `_count` series, which the metrics
/// modules never spell out.
fn histograms() -> BTreeSet<String> {
    let stats = Arc::new(mamori_collector::stats::IntakeStats::with_sites([
        "site".to_owned()
    ]));
    let collector = mamori_collector::metrics::CollectorMetrics::new(stats, None)
        .unwrap()
        .render();
    let agent = mamori_agent::metrics::AgentMetrics::new(mamori_agent::metrics::Sources::default())
        .unwrap()
        .render();
    [collector, agent]
        .iter()
        .flat_map(|text| text.lines())
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" histogram"))
        .map(str::to_owned)
        .collect()
}

/// Every metric name the agent and the collector register (string literals in their
/// metrics modules; a prefix alone such as `mamori_` is not a metric), with the series of
/// their histograms.
fn exported() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for f in ["agent/src/metrics.rs", "collector/src/metrics.rs"] {
        names.extend(metric_names(&read(f)));
    }
    names.retain(|n| n.len() > "mamori_agent_".len());
    for h in histograms() {
        assert!(names.contains(&h), "{h} is rendered but not named");
        for suffix in ["_bucket", "_sum", "_count"] {
            names.insert(format!("{h}{suffix}"));
        }
    }
    names
}

#[test]
fn histogram_series_are_exported_and_nothing_else_is_invented() {
    let known = exported();
    assert!(known.contains("mamori_alert_latency_seconds_bucket"));
    assert!(known.contains("mamori_alert_latency_seconds_count"));
    assert!(!known.contains("mamori_incidents_open_bucket"));
    assert!(!known.contains("mamori_alert_latency_seconds_total"));
}

#[test]
fn alert_rules_use_only_exported_metrics() {
    let known = exported();
    let rules = read("deploy/prometheus/mamori-rules.yml");
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
        let mut ids = BTreeSet::new();
        let mut cells = BTreeSet::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            let title = panel["title"].as_str().unwrap();
            assert!(
                ids.insert(panel["id"].as_u64().unwrap()),
                "{}: panel id of {title:?} is taken",
                path.display()
            );
            assert_eq!(
                panel["datasource"]["uid"], "mamori-prometheus",
                "{title}: the provisioned datasource"
            );
            // Grafana would reflow overlapping panels; overlap means a layout mistake.
            let g = &panel["gridPos"];
            let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap());
            assert!(x + w <= 24, "{title}: wider than the 24-column grid");
            for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
                assert!(cells.insert(cell), "{title}: overlaps another panel");
            }
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
    if !have("promtool", "MAMORI_REQUIRE_PROMTOOL", "prometheus") {
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

/// `amtool config routes test`: the receivers an alert with `labels` lands on.
fn route(config: &Path, labels: &[(&str, &str)]) -> String {
    let out = Command::new("amtool")
        .args(["config", "routes", "test", "--config.file"])
        .arg(config)
        .args(labels.iter().map(|(k, v)| format!("{k}={v}")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "amtool config routes test {labels:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Every `alert:` of the rule file with its `severity` label.
fn rules() -> Vec<(String, String)> {
    let file = yaml("deploy/prometheus/mamori-rules.yml");
    let mut out = Vec::new();
    for group in file["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap().to_owned();
            let severity = rule["labels"]["severity"].as_str().unwrap().to_owned();
            out.push((name, severity));
        }
    }
    out
}

#[test]
fn amtool_checks_the_alertmanager_example_and_routes_each_alert_to_its_receiver() {
    if !have(
        "amtool",
        "MAMORI_REQUIRE_ALERTMANAGER",
        "prometheus-alertmanager",
    ) {
        return;
    }
    let config = root().join("deploy/alertmanager/alertmanager.yml");
    let out = Command::new("amtool")
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "amtool check-config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The collector's incident alerts (labels as in collector/src/notify/alertmanager.rs).
    let incident = |severity, exercise| {
        let labels = [
            ("alertname", "MamoriIncident"),
            ("site", "substation-7"),
            ("incident", "17"),
            ("severity", severity),
            ("exercise", exercise),
        ];
        route(&config, &labels)
    };
    for severity in ["critical", "high", "medium", "low", "info"] {
        assert_eq!(incident(severity, "true"), "drill", "a drill never pages");
    }
    assert_eq!(incident("critical", "false"), "soc-pager");
    assert_eq!(incident("high", "false"), "soc-queue");
    assert_eq!(incident("medium", "false"), "soc-queue");
    assert_eq!(incident("low", "false"), "soc-chat");

    // Every health rule goes to operations (critical ones page), the safety net to the SOC.
    let rules = rules();
    assert!(rules.len() > 10);
    for (alert, severity) in &rules {
        let expected = match (alert.as_str(), severity.as_str()) {
            ("MamoriCriticalIncidentOpen", _) => "soc-pager",
            (_, "critical") => "ops-pager",
            _ => "ops-team",
        };
        let labels = [
            ("alertname", alert.as_str()),
            ("severity", severity.as_str()),
            ("instance", "c:9103"),
        ];
        assert_eq!(route(&config, &labels), expected, "{alert}");
    }

    // The inhibit rules name alerts that exist (a typo would silently inhibit nothing).
    let mut names: BTreeSet<String> = rules.into_iter().map(|(a, _)| a).collect();
    names.insert("MamoriIncident".to_owned());
    let am = yaml("deploy/alertmanager/alertmanager.yml");
    for rule in am["inhibit_rules"].as_sequence().unwrap() {
        for side in ["source_matchers", "target_matchers"] {
            for m in rule[side].as_sequence().unwrap() {
                let m = m.as_str().unwrap();
                let Some(value) = m
                    .strip_prefix("alertname=\"")
                    .or_else(|| m.strip_prefix("alertname=~\""))
                else {
                    continue;
                };
                for name in value.trim_end_matches('"').split('|') {
                    assert!(names.contains(name), "inhibit rule names {name:?}");
                }
            }
        }
    }
}

/// The subcommands of a binary's clap `enum Command` (variants in kebab case).
fn subcommands(main_rs: &str) -> BTreeSet<String> {
    let text = read(main_rs);
    let body = text.split("enum Command {").nth(1).unwrap();
    let body = &body[..body.find("\n}").unwrap()];
    let mut out = BTreeSet::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("    ") else {
            continue;
        };
        if !rest.starts_with(|c: char| c.is_ascii_uppercase()) {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        let mut kebab = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                kebab.push('-');
            }
            kebab.push(c.to_ascii_lowercase());
        }
        out.insert(kebab);
    }
    out
}

/// The workspace's packages that build a binary of their own name (`src/main.rs`).
fn workspace_binaries() -> BTreeSet<String> {
    let manifest = read("Cargo.toml");
    let members = manifest
        .lines()
        .find_map(|l| l.strip_prefix("members = "))
        .unwrap();
    let mut out = BTreeSet::new();
    for member in members.trim_matches(['[', ']']).split(',') {
        let member = member.trim().trim_matches('"');
        let name = read(format!("{member}/Cargo.toml"))
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .unwrap()
            .trim_matches('"')
            .to_owned();
        if root().join(member).join("src/main.rs").exists() {
            out.insert(name);
        }
    }
    out
}

/// Which binaries the Containerfile builds, copies into the runtime stage and starts, and
/// its stage names.
struct Containerfile {
    stages: Vec<String>,
    built: BTreeSet<String>,
    copied: BTreeSet<String>,
    entrypoint: String,
}

fn containerfile() -> Containerfile {
    let text = read("deploy/container/Containerfile");
    // Continuation lines joined: one instruction per line.
    let joined = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let mut stages = Vec::new();
    let mut built = BTreeSet::new();
    let mut copied = BTreeSet::new();
    let mut entrypoint = String::new();
    for line in joined.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some("FROM") => {
                assert_eq!(words.len(), 4, "FROM image AS name: {line}");
                stages.push(words[3].to_owned());
                entrypoint.clear();
            }
            Some("RUN") if line.contains("cargo build") => {
                assert!(line.contains("--locked"), "{line}");
                assert!(line.contains("--release"), "{line}");
                for w in words.windows(2).filter(|w| w[0] == "-p") {
                    built.insert(w[1].to_owned());
                }
            }
            Some("COPY") if words.get(1) == Some(&"--from=builder") => {
                for src in &words[2..words.len() - 1] {
                    copied.insert(src.rsplit('/').next().unwrap().to_owned());
                }
            }
            Some("ENTRYPOINT") => {
                let list: Vec<String> = serde_json::from_str(line["ENTRYPOINT".len()..].trim())
                    .unwrap_or_else(|e| panic!("ENTRYPOINT is not a JSON list ({e}): {line}"));
                entrypoint = list[0].clone();
            }
            _ => {}
        }
    }
    Containerfile {
        stages,
        built,
        copied,
        entrypoint,
    }
}

#[test]
fn the_containerfile_builds_copies_and_starts_binaries_that_exist() {
    let c = containerfile();
    let binaries = workspace_binaries();
    let wanted: BTreeSet<String> = ["mamori-agent", "mamori-collector"]
        .map(String::from)
        .into();
    assert_eq!(c.built, wanted, "cargo build -p");
    assert!(
        c.built.is_subset(&binaries),
        "{:?} vs {binaries:?}",
        c.built
    );
    assert_eq!(c.copied, wanted, "COPY --from=builder into the runtime");
    assert!(
        c.copied.contains(&c.entrypoint),
        "ENTRYPOINT {}",
        c.entrypoint
    );
    // The runtime is the last stage: what a plain `build` makes.
    assert_eq!(c.stages.last().unwrap(), "runtime");
    let ignore = read("deploy/container/Containerfile.dockerignore");
    assert!(
        ignore.lines().any(|l| l == "target"),
        "the build context skips target/"
    );
}

/// A compose service's bind mounts (host path relative to `deploy/container`, container path)
/// and named volumes.
fn mounts(service: &Yaml) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for v in service["volumes"].as_sequence().into_iter().flatten() {
        let v = v.as_str().expect("short volume syntax");
        let mut parts = v.split(':');
        let source = parts.next().unwrap().to_owned();
        let target = parts.next().unwrap().to_owned();
        assert!(
            matches!(parts.next(), None | Some("ro" | "rw")),
            "volume mode in {v}"
        );
        out.push((source, target));
    }
    out
}

fn is_bind(source: &str) -> bool {
    source.starts_with("./") || source.starts_with("../")
}

/// The host file behind a container path, through the service's bind mounts.
fn host_path(mounts: &[(String, String)], container_path: &str) -> Option<String> {
    mounts.iter().find_map(|(source, target)| {
        let rest = container_path.strip_prefix(target.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then(|| format!("{source}{rest}"))
    })
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// `key = "value"` string values of a TOML text.
fn toml_strings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(" = ")?;
            let v = v.trim().strip_prefix('"')?.strip_suffix('"')?;
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

fn toml_string(text: &str, key: &str) -> String {
    toml_strings(text)
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v))
        .unwrap_or_else(|| panic!("no {key}"))
}

#[test]
fn the_compose_lab_mounts_files_that_exist_and_runs_real_subcommands() {
    let dir = root().join("deploy/container");
    let compose = yaml("deploy/container/compose.yaml");
    let services = compose["services"].as_mapping().unwrap();
    let names: BTreeSet<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    for s in [
        "collector",
        "agent",
        "replayer",
        "prometheus",
        "alertmanager",
        "grafana",
    ] {
        assert!(names.contains(s), "service {s}");
    }
    let volumes = compose["volumes"].as_mapping().unwrap();
    // Folders the README's steps make (keys, captures); git ignores them.
    let generated = ["./lab/secrets", "./lab/pcaps"];
    let readme = read("deploy/container/README.md");
    let ignored = read("deploy/container/.gitignore");
    for g in generated {
        let rel = g.trim_start_matches("./");
        assert!(readme.contains(rel), "README.md explains {rel}");
        assert!(ignored.lines().any(|l| l == format!("{rel}/")), "{rel}");
    }
    let stages = containerfile();
    let binaries: BTreeMap<&str, BTreeSet<String>> = [
        ("mamori-agent", subcommands("agent/src/main.rs")),
        ("mamori-collector", subcommands("collector/src/main.rs")),
    ]
    .into();
    assert!(binaries["mamori-agent"].contains("run"));
    assert!(binaries["mamori-collector"].contains("serve"));
    let mut mamori_services = 0;
    for (name, service) in services {
        let name = name.as_str().unwrap();
        let mounts = mounts(service);
        for (source, target) in &mounts {
            if is_bind(source) {
                if !generated.contains(&source.as_str()) {
                    assert!(
                        dir.join(source).exists(),
                        "{name}: mounts {source}, which is not in the repository"
                    );
                }
            } else {
                assert!(
                    volumes.contains_key(source.as_str()),
                    "{name}: volume {source} is not declared"
                );
            }
            assert!(target.starts_with('/'), "{name}: {target}");
        }
        if let Some(build) = service.get("build") {
            let context = dir.join(build["context"].as_str().unwrap());
            assert!(context.join(build["dockerfile"].as_str().unwrap()).exists());
            let target = build["target"].as_str().unwrap();
            assert!(stages.stages.iter().any(|s| s == target), "stage {target}");
        }
        let Some(entrypoint) = service.get("entrypoint") else {
            continue;
        };
        let entrypoint = strings(entrypoint);
        let Some(subcommands) = binaries.get(entrypoint[0].as_str()) else {
            continue;
        };
        mamori_services += 1;
        assert!(
            stages.copied.contains(&entrypoint[0]),
            "{name}: {entrypoint:?}"
        );
        let command = strings(&service["command"]);
        assert!(
            subcommands.contains(&command[0]),
            "{name}: {} has no subcommand {:?} (it has {subcommands:?})",
            entrypoint[0],
            command[0]
        );
        // Every path the command passes is a file of the repository, mounted.
        for arg in command.iter().filter(|a| a.starts_with('/')) {
            let host =
                host_path(&mounts, arg).unwrap_or_else(|| panic!("{name}: {arg} is not mounted"));
            assert!(
                dir.join(&host).is_file(),
                "{name}: {arg} is {host}, missing"
            );
            // And every path in that configuration is mounted too.
            for (key, value) in toml_strings(&read(dir.join(&host))) {
                if value.starts_with('/') {
                    assert!(
                        host_path(&mounts, &value).is_some(),
                        "{name}: {key} = {value} is not mounted"
                    );
                }
            }
        }
    }
    assert_eq!(mamori_services, 2, "the agent and the collector");

    // The lab's pieces agree with each other.
    let agent = read("deploy/container/lab/agent.toml");
    let collector = read("deploy/container/lab/collector.toml");
    let prometheus = read("deploy/container/lab/prometheus.yml");
    let agent_id = toml_string(&agent, "agent_id");
    let server_name = toml_string(&agent, "server_name");
    assert_eq!(toml_string(&collector, "id"), agent_id, "the allowlist");
    let aliases = strings(&services["collector"]["networks"]["lab"]["aliases"]);
    assert!(aliases.contains(&server_name), "{server_name} resolves");
    assert!(
        toml_string(&agent, "collector_address").starts_with(&format!("{server_name}:8443")),
        "the intake port"
    );
    let site = toml_string(&collector, "site");
    assert!(
        prometheus.contains(&format!("site: {site}")),
        "scrape label"
    );
    assert!(prometheus.contains("\"agent:9102\"") && agent.contains("0.0.0.0:9102\""));
    assert!(prometheus.contains("\"collector:9103\"") && collector.contains("0.0.0.0:9103\""));
    assert!(collector.contains("http://alertmanager:9093"));
    let datasource = read("deploy/container/lab/grafana-datasource.yml");
    assert!(datasource.contains("uid: mamori-prometheus"));

    // The lab uses the repository's rules, routing, dashboards and provisioning, not copies.
    let bind = |service: &str, target: &str| {
        host_path(&mounts(&services[service]), target)
            .unwrap_or_else(|| panic!("{service}: {target} is not mounted"))
    };
    assert_eq!(
        bind("prometheus", "/etc/prometheus/mamori-rules.yml"),
        "../prometheus/mamori-rules.yml"
    );
    assert_eq!(
        bind("alertmanager", "/etc/alertmanager/alertmanager.yml"),
        "../alertmanager/alertmanager.yml"
    );
    let provider = yaml("deploy/grafana/provisioning/dashboards.yml");
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert_eq!(bind("grafana", path), "../grafana/dashboards");
}

#[test]
fn the_lab_configurations_load() {
    let agent = read("deploy/container/lab/agent.toml");
    let collector = read("deploy/container/lab/collector.toml");
    mamori_collector::config::CollectorConfig::parse(&collector).unwrap();
    // Both validations read the certificates (and the collector its API token): made here as
    // the README says, in a folder standing for the mounted lab/secrets.
    if have("openssl", "MAMORI_REQUIRE_OPENSSL", "openssl") {
        let tmp = tempfile::tempdir().unwrap();
        let secrets = tmp.path().join("secrets");
        let out = Command::new("bash")
            .arg(root().join("deploy/make-certs.sh"))
            .arg(&secrets)
            .arg(toml_string(&agent, "server_name"))
            .arg(toml_string(&agent, "agent_id"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(
            secrets.join("api.token"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        let local = |text: &str, name: &str| {
            let file = tmp.path().join(name);
            let text = text
                .replace("/etc/mamori/secrets", secrets.to_str().unwrap())
                .replace("/var/lib/mamori", tmp.path().to_str().unwrap());
            std::fs::write(&file, text).unwrap();
            file
        };
        if let Err(e) = mamori_agent::config::AgentConfig::load(&local(&agent, "agent.toml")) {
            panic!("lab/agent.toml: {e}");
        }
        let file = local(&collector, "collector.toml");
        if let Err(e) = mamori_collector::config::CollectorConfig::load(&file) {
            panic!("lab/collector.toml: {e}");
        }
    } else {
        // Without certificates the only problems are the missing secrets.
        let path = root().join("deploy/container/lab/agent.toml");
        if let Err(e) = mamori_agent::config::AgentConfig::load(&path) {
            for p in &e.problems {
                assert!(p.reason.starts_with("/etc/mamori/secrets/"), "{p:?}");
            }
        }
    }

    // Prometheus' configuration with the files mounted beside it, as in the container.
    if have("promtool", "MAMORI_REQUIRE_PROMTOOL", "prometheus") {
        let compose = yaml("deploy/container/compose.yaml");
        let tmp = tempfile::tempdir().unwrap();
        for (source, target) in mounts(&compose["services"]["prometheus"]) {
            let rel = target.strip_prefix("/etc/prometheus/").unwrap();
            std::fs::copy(
                root().join("deploy/container").join(source),
                tmp.path().join(rel),
            )
            .unwrap();
        }
        let out = Command::new("promtool")
            .args(["check", "config"])
            .arg(tmp.path().join("prometheus.yml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool check config: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
