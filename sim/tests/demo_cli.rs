//! `mamori-sim demo` as a new user runs it: the binary, its output and its data folder. With
//! `--exit-after-attacks` it tells where to look while that is true and says when it is gone;
//! SIGTERM, like Ctrl-C, ends it in order and removes the temporary data folder.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The demo binary with fast settings, its temporary folders under `tmp`.
fn demo(tmp: &std::path::Path, extra: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mamori-sim"))
        .args([
            "demo",
            "--speed",
            "20",
            "--learn-seconds",
            "120",
            "--metrics-port",
            "0",
            "--api-port",
            "0",
        ])
        .args(extra)
        .env("TMPDIR", tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Lines until one contains `what` (all of them, that one last).
fn until(rx: &mpsc::Receiver<String>, what: &str, timeout: Duration) -> Vec<String> {
    let end = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains(what);
                seen.push(line);
                if done {
                    return seen;
                }
            }
            Err(_) => panic!("no line with {what:?} in time; got:\n{}", seen.join("\n")),
        }
    }
}

fn wait(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the demo did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The temporary data folder the demo announced.
fn data_folder(lines: &[String]) -> PathBuf {
    let line = lines
        .iter()
        .find(|l| l.contains("data folder"))
        .expect("a data folder line");
    let path = line
        .split_whitespace()
        .find(|w| w.starts_with('/'))
        .expect("a path");
    PathBuf::from(path)
}

#[test]
fn sigterm_stops_the_demo_and_removes_its_temporary_data_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, rx) = demo(tmp.path(), &[]);
    let lines = until(&rx, "learning for", Duration::from_secs(120));
    let folder = data_folder(&lines);
    assert!(folder.starts_with(tmp.path()), "{folder:?}");
    assert!(folder.join("api.token").exists(), "{folder:?}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = wait(&mut child, Duration::from_secs(60));
    assert!(status.success(), "{status:?}");
    assert!(!folder.exists(), "{folder:?} left behind after SIGTERM");
}

#[test]
fn with_exit_after_attacks_where_to_look_is_printed_while_true_and_its_end_is_said() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, rx) = demo(
        tmp.path(),
        &[
            "--scenarios",
            "recon_sweep,device_silent",
            "--duration-seconds",
            "10",
            "--gap-seconds",
            "10",
            "--exit-after-attacks",
        ],
    );
    let lines = until(
        &rx,
        "the API and /metrics stopped",
        Duration::from_secs(300),
    );
    let status = wait(&mut child, Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{}", lines.join("\n"));
    let at = |what: &str| {
        lines
            .iter()
            .position(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} in:\n{}", lines.join("\n")))
    };
    // Where to look comes before the scenarios, while the API answers, and only once.
    assert!(at("where to look:") < at("running 2 scenario(s)"));
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("where to look:"))
            .count(),
        1
    );
    assert!(at("▶ device_silent") < at("stopped:"));
    assert!(!data_folder(&lines).exists());
}
