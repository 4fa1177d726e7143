//! File descriptors: what the configured caps can hold open at once, checked at start
//! against the process's soft `RLIMIT_NOFILE`.
//!
//! Every intake handshake, authenticated connection, API and metrics connection holds a
//! descriptor, and each cap is bounded, so their sum (plus the store, the notifiers, the
//! runtime and a margin) is what `serve` may need. If the limit is lower, the caps are a
//! promise the process cannot keep: under load `accept` fails with EMFILE and the store may
//! fail to open its WAL. So `serve` refuses to start with a configuration error naming the
//! keys, unless it can raise its soft limit to fit. Systemd's default soft limit is 1024,
//! which the defaults exceed: the units set `LimitNOFILE=`.
//!
//! Raising is tried only when the hard limit allows it, and never in a systemd service under
//! a seccomp filter: the units filter `@resources` (which holds `setrlimit`), and systemd's
//! filter kills the process on a filtered call instead of failing it (container runtimes'
//! default filters allow `setrlimit`, or fail it with EPERM, which is reported). The limits
//! are read from `/proc/self/limits`, which needs no system call beyond reading a file.

use std::path::Path;

use crate::config::{CollectorConfig, ConfigError, Problem};

/// Descriptors for the store: the SQLite database, its WAL and shared memory, a journal and
/// a second connection's worth of the same.
const STORE: u64 = 8;
/// The runtime and the process itself: standard streams, epoll, the runtime's wakers, the
/// signal pipe, reads of `/proc` and of the TLS files at start.
const RUNTIME: u64 = 16;
/// Connections of the `/metrics` endpoint (`mamori_agent::metrics::serve` serves at most 16
/// at once), plus its listener.
const METRICS: u64 = 16 + 1;
/// Room for what is briefly open beyond the caps: a connection accepted and being closed
/// because its table is full, DNS lookups of the notifiers.
const MARGIN: u64 = 64;

/// What the configuration can hold open at once, by part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    /// (what, descriptors), the configurable parts named by their keys.
    pub parts: Vec<(String, u64)>,
}

impl Budget {
    pub fn of(config: &CollectorConfig) -> Budget {
        let i = &config.intake;
        let mut parts = vec![
            (
                "intake.max_connections".to_owned(),
                u64::from(i.max_connections),
            ),
            (
                "intake.max_handshakes".to_owned(),
                u64::from(i.max_handshakes),
            ),
        ];
        if let Some(api) = &config.api {
            parts.push((
                "api.max_connections".to_owned(),
                u64::from(api.max_connections),
            ));
        }
        let listeners = 1 + u64::from(config.api.is_some()) + u64::from(config.metrics.is_some());
        let notify = &config.notify;
        let sinks = notify
            .alertmanager
            .as_ref()
            .map_or(0, |a| a.urls.len() as u64)
            + u64::from(notify.webhook.is_some())
            + u64::from(notify.syslog.is_some());
        let metrics = if config.metrics.is_some() { METRICS } else { 0 };
        parts.push((
            "listeners, metrics, notifiers, store, runtime and margin".to_owned(),
            listeners + metrics + sinks + STORE + RUNTIME + MARGIN,
        ));
        Budget { parts }
    }

    pub fn total(&self) -> u64 {
        self.parts.iter().map(|(_, n)| *n).sum()
    }
}

/// A soft and hard limit; `None` is unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// The `Max open files` line of `/proc/self/limits` (`Max open files  1024  524288  files`).
pub fn parse_proc_limits(text: &str) -> Option<Limits> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line.get("Max open files".len()..)?.split_whitespace();
    let value = |s: &str| -> Option<Option<u64>> {
        if s == "unlimited" {
            Some(None)
        } else {
            s.parse().ok().map(Some)
        }
    };
    let soft = value(fields.next()?)?;
    let hard = value(fields.next()?)?;
    Some(Limits { soft, hard })
}

fn read_limits() -> Result<Limits, String> {
    let text = std::fs::read_to_string("/proc/self/limits")
        .map_err(|e| format!("cannot read /proc/self/limits: {e}"))?;
    parse_proc_limits(&text).ok_or_else(|| "no `Max open files` in /proc/self/limits".to_owned())
}

/// Whether this is a systemd service (systemd sets `INVOCATION_ID` for the processes of a
/// unit) under a seccomp filter: there a filtered `setrlimit` would kill the process.
fn systemd_filtered() -> bool {
    std::env::var_os("INVOCATION_ID").is_some() && seccomp_filtered()
}

/// Whether a seccomp filter is installed on this process (`Seccomp: 2` in `/proc/self/status`).
/// Unknown counts as filtered: then nothing is tried that a filter could punish.
fn seccomp_filtered() -> bool {
    std::fs::read_to_string("/proc/self/status").map_or(true, |s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .is_none_or(|v| v.trim() != "0")
    })
}

/// What [`ensure`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The soft limit already fits the budget.
    Fits { soft: Option<u64>, need: u64 },
    /// The soft limit was raised (to the hard limit, or to the need when the hard one is
    /// unlimited).
    Raised { from: u64, to: u64, need: u64 },
}

/// Checks the soft `RLIMIT_NOFILE` against what `config`'s caps need, raising it when it
/// is too low and that is allowed; otherwise a configuration error naming the keys.
pub fn ensure(config: &CollectorConfig, file: &Path) -> Result<Outcome, ConfigError> {
    let budget = Budget::of(config);
    let need = budget.total();
    let fail = |reason: String| ConfigError {
        file: file.to_owned(),
        problems: vec![Problem {
            key: budget
                .parts
                .iter()
                .filter(|(k, _)| k.contains('.'))
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(" + "),
            reason,
        }],
    };
    let limits = read_limits().map_err(|e| fail(e.clone()))?;
    let soft = match limits.soft {
        None => return Ok(Outcome::Fits { soft: None, need }),
        Some(soft) if soft >= need => {
            return Ok(Outcome::Fits {
                soft: Some(soft),
                need,
            });
        }
        Some(soft) => soft,
    };
    let hard_text = limits
        .hard
        .map_or("unlimited".to_owned(), |h| h.to_string());
    let sum = budget
        .parts
        .iter()
        .map(|(k, n)| format!("{n} ({k})"))
        .collect::<Vec<_>>()
        .join(" + ");
    let explain = |why: &str| {
        format!(
            "the open-file limit (soft RLIMIT_NOFILE) is {soft} (hard {hard_text}), but the \
             configured caps can hold {need} descriptors open: {sum}. {why}Raise the limit \
             (`LimitNOFILE={need}` or more in the systemd unit, `ulimit -n {need}`, \
             `--ulimit nofile={need}` for a container) or lower these keys"
        )
    };
    let fits_hard = limits.hard.is_none_or(|h| h >= need);
    if !fits_hard {
        return Err(fail(explain("The hard limit is too low as well. ")));
    }
    if systemd_filtered() {
        return Err(fail(explain(
            "The service's system call filter forbids raising it (setrlimit is in @resources). ",
        )));
    }
    let to = limits.hard.unwrap_or(need);
    raise(to, limits.hard).map_err(|e| fail(explain(&format!("Raising it failed: {e}. "))))?;
    Ok(Outcome::Raised {
        from: soft,
        to,
        need,
    })
}

fn raise(soft: u64, hard: Option<u64>) -> Result<(), String> {
    use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard.unwrap_or(RLIM_INFINITY))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn proc_limits_are_read_with_unlimited() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(
            parse_proc_limits(text),
            Some(Limits {
                soft: Some(1024),
                hard: Some(524_288)
            })
        );
        let text = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(
            parse_proc_limits(text),
            Some(Limits {
                soft: None,
                hard: None
            })
        );
        assert_eq!(parse_proc_limits("Max open files  x y files"), None);
        assert_eq!(parse_proc_limits(""), None);
        // This process's own.
        assert!(read_limits().is_ok());
    }

    #[test]
    fn the_budget_adds_every_cap_and_the_defaults_exceed_1024() {
        let text = r#"
            [intake]
            listen = "127.0.0.1:0"
            cert_file = "c"
            key_file = "k"
            client_ca_file = "ca"
            [storage]
            sqlite_path = "db"
            [metrics]
            [api]
        "#;
        let c = CollectorConfig::parse(text).unwrap();
        let b = Budget::of(&c);
        assert_eq!(b.parts[0], ("intake.max_connections".to_owned(), 1024));
        assert_eq!(b.parts[1], ("intake.max_handshakes".to_owned(), 256));
        assert_eq!(b.parts[2], ("api.max_connections".to_owned(), 64));
        assert_eq!(
            b.total(),
            1024 + 256 + 64 + 3 + METRICS + STORE + RUNTIME + MARGIN
        );
        assert!(b.total() > 1024);
    }
}
