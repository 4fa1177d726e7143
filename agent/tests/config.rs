//! `mamori-agent check-config`: the example configuration parses; every problem of a bad one
//! is reported at once with file, key and reason; the process exits non-zero.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::process::Command;

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mamori-agent"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_example_configuration_parses_and_names_its_missing_certificates() {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent.toml"))
            .unwrap();
    let (ok, out) = check(&example);
    // The example points at certificates that do not exist here: exactly those are reported.
    assert!(!ok);
    assert!(
        out.contains("shipper.") && out.contains("/etc/mamori/"),
        "{out}"
    );
    assert!(
        !out.contains("capture.") && !out.contains("decode.") && !out.contains("syslog_receivers"),
        "{out}"
    );
    // Without the shipper (and with a local output instead) it is valid as written.
    let local = example.split("\n[shipper]\n").next().unwrap().to_owned()
        + "\n[output]\nevents_file = \"/tmp/x.jsonl\"\n";
    let (ok, out) = check(&local);
    assert!(ok, "{out}");
    assert!(out.contains(": ok"));
}

#[test]
fn every_problem_is_reported_with_file_key_and_reason() {
    let (ok, out) = check(
        "[capture]\ninterfaces = [\"this-name-is-far-too-long\"]\nsnap_len_bytes = 10\n[decode]\nmodbus_ports = [0]\ntcp_idle_timeout_seconds = 0\n",
    );
    assert!(!ok);
    for key in [
        "capture.interfaces",
        "capture.snap_len_bytes",
        "decode",
        "decode.tcp_idle_timeout_seconds",
        "shipper",
    ] {
        assert!(
            out.contains(&format!(": {key}: ")),
            "missing {key} in:\n{out}"
        );
    }
    assert!(out.contains("agent.toml"), "{out}");
}

#[test]
fn unknown_keys_and_bad_syntax_are_errors() {
    let (ok, out) = check(
        "[capture]\ninterfaces = [\"eth1\"]\npromiscous = true\n[output]\nevents_file = \"/tmp/x\"\n",
    );
    assert!(!ok);
    assert!(out.contains("promiscous"), "{out}");
    let (ok, out) = check("[capture\n");
    assert!(!ok);
    assert!(out.contains("line 1"), "{out}");
}

/// The problems of issue 13, all in one file: a bad address, a word where a number goes, and
/// a misspelt key. Each is reported in the same run, under its key, on its own line; values
/// that are wrong but well typed are reported beside them.
#[test]
fn toml_problems_are_all_reported_under_their_keys_and_lines() {
    let text = "\
[capture]
interfaces = [\"eth1\"]

[syslog_receivers]
udp_listen = \"0.0.0.0:51 4\"
idle_timeout_seconds = \"ninety\"
max_message_bytes = 65536

max_conections = 256

[decode]
max_flows = 0
";
    let (ok, out) = check(text);
    assert!(!ok, "{out}");
    for (key, line, what) in [
        ("syslog_receivers.udp_listen", 5, "invalid socket address"),
        ("syslog_receivers.idle_timeout_seconds", 6, "ninety"),
        (
            "syslog_receivers.max_conections",
            9,
            "unknown field `max_conections`",
        ),
    ] {
        let found = out
            .lines()
            .find(|l| l.contains(&format!(": {key}: ")))
            .unwrap_or_else(|| panic!("no problem at {key} in:\n{out}"));
        assert!(found.contains("agent.toml"), "{found}");
        assert!(found.contains(&format!(": line {line}: ")), "{found}");
        assert!(found.contains(what), "{found}");
    }
    // The values' own checks run on what could be read, and say nothing of a table whose
    // entry was taken out ("no listener" while the listener's address is what is wrong).
    assert!(out.contains(": decode.max_flows: "), "{out}");
    assert!(!out.contains("syslog_receivers: "), "{out}");
    assert!(out.contains("5 problem(s)"), "{out}");
}
