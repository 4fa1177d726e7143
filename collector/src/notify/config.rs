//! `[notify]`: where incidents are announced (Alertmanager, a signed webhook, syslog/CEF to a
//! SIEM) and how hard delivery tries. Validation gathers every problem, each under its full
//! key (`notify.alertmanager.urls[1]`), and reads the secret and CA files it names, as
//! `check-config` does for the intake's certificates.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::Uri;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;

use crate::config::Problem;

/// `[notify]`: each sink is optional; none configured means nothing is announced.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySection {
    /// Prometheus Alertmanager (API v2), one or several replicas.
    #[serde(default)]
    pub alertmanager: Option<AlertmanagerSection>,
    /// A JSON webhook signed with HMAC-SHA256.
    #[serde(default)]
    pub webhook: Option<WebhookSection>,
    /// Syslog (RFC 5424) carrying CEF, for a SIEM.
    #[serde(default)]
    pub syslog: Option<SyslogSection>,
}

/// `[notify.alertmanager]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerSection {
    /// Base URLs of the Alertmanagers (`http://am-1:9093`, with a route prefix if it has
    /// one); alerts are posted to `{url}/api/v2/alerts` of each (an HA pair gets both).
    pub urls: Vec<String>,
    /// Active incidents are posted again this often: Alertmanager resolves an alert that
    /// was not re-sent within its `resolve_timeout` (default 5 min). Keep it well below.
    #[serde(default = "default_resend_interval_seconds")]
    pub resend_interval_seconds: f64,
    /// Static labels added to every alert (`team = "ot-soc"`); may not replace Mamori's.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Basic authentication: the user name (with `password_file`).
    #[serde(default)]
    pub username: Option<String>,
    /// Basic authentication: a file holding the password (trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A file holding a bearer token (instead of basic authentication).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// PEM file of the CA certificate(s) trusted for `https` URLs (required with https).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Notices waiting for this sink; when full the oldest is dropped (counted, logged).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: u32,
    /// Attempts per message, the first included; then it is given up (counted).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry; doubled per retry (with jitter) up to
    /// `max_backoff_seconds`.
    #[serde(default = "default_initial_backoff_seconds")]
    pub initial_backoff_seconds: f64,
    /// Cap on the wait between retries.
    #[serde(default = "default_max_backoff_seconds")]
    pub max_backoff_seconds: f64,
    /// Limit on one attempt (connect, TLS, request and answer).
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: f64,
}

/// `[notify.webhook]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// Where the JSON is posted (`https://soar.example/hooks/mamori`).
    pub url: String,
    /// A file holding the HMAC-SHA256 key of `X-Mamori-Signature` (trailing newline ignored).
    pub secret_file: PathBuf,
    /// PEM file of the CA certificate(s) trusted for an `https` URL (required with https).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Notices waiting for this sink; when full the oldest is dropped (counted, logged).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: u32,
    /// Attempts per message, the first included; then it is given up (counted).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry; doubled per retry (with jitter) up to
    /// `max_backoff_seconds`.
    #[serde(default = "default_initial_backoff_seconds")]
    pub initial_backoff_seconds: f64,
    /// Cap on the wait between retries.
    #[serde(default = "default_max_backoff_seconds")]
    pub max_backoff_seconds: f64,
    /// Limit on one attempt (connect, TLS, request and answer).
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: f64,
}

/// How syslog messages travel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// One message per datagram (RFC 5426), truncated to `max_message_bytes`.
    #[default]
    Udp,
    /// A stream of framed messages (RFC 6587), reconnected after an error.
    Tcp,
}

/// How messages are delimited on TCP (RFC 6587).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// `<length> <message>`: safe whatever the message holds.
    #[default]
    OctetCounting,
    /// `<message>\n` (CEF escaping keeps line feeds out of the message).
    Lf,
}

/// `[notify.syslog]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSection {
    /// The SIEM's syslog receiver, `host:port` (resolved at each connection).
    pub address: String,
    /// `udp` (default) or `tcp`.
    #[serde(default)]
    pub transport: Transport,
    /// On TCP: `octet_counting` (default) or `lf`.
    #[serde(default)]
    pub framing: Framing,
    /// The syslog facility: `kern`, `user`, `daemon`, `auth`, `authpriv`, `local0` … `local7`.
    #[serde(default = "default_facility")]
    pub facility: String,
    /// HOSTNAME of the RFC 5424 header and CEF `deviceExternalId`; default the machine's
    /// host name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// APP-NAME of the RFC 5424 header.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// A longer message is cut (the free-text `msg` extension is last, so it goes first).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u32,
    /// Notices waiting for this sink; when full the oldest is dropped (counted, logged).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: u32,
    /// Attempts per message, the first included; then it is given up (counted).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry; doubled per retry (with jitter) up to
    /// `max_backoff_seconds`.
    #[serde(default = "default_initial_backoff_seconds")]
    pub initial_backoff_seconds: f64,
    /// Cap on the wait between retries.
    #[serde(default = "default_max_backoff_seconds")]
    pub max_backoff_seconds: f64,
    /// Limit on one attempt (connect, TLS, request and answer).
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: f64,
}

/// The delivery keys every sink's table repeats (serde's `flatten` would defeat
/// `deny_unknown_fields`, so they are written out in each section).
#[derive(Clone, Debug, PartialEq)]
pub struct DeliverySettings {
    pub queue_capacity: u32,
    pub max_attempts: u32,
    pub initial_backoff_seconds: f64,
    pub max_backoff_seconds: f64,
    pub timeout_seconds: f64,
}

macro_rules! delivery_of {
    ($section:ty) => {
        impl $section {
            /// Its delivery keys.
            pub fn delivery(&self) -> DeliverySettings {
                DeliverySettings {
                    queue_capacity: self.queue_capacity,
                    max_attempts: self.max_attempts,
                    initial_backoff_seconds: self.initial_backoff_seconds,
                    max_backoff_seconds: self.max_backoff_seconds,
                    timeout_seconds: self.timeout_seconds,
                }
            }
        }
    };
}
delivery_of!(AlertmanagerSection);
delivery_of!(WebhookSection);
delivery_of!(SyslogSection);

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            queue_capacity: default_queue_capacity(),
            max_attempts: default_max_attempts(),
            initial_backoff_seconds: default_initial_backoff_seconds(),
            max_backoff_seconds: default_max_backoff_seconds(),
            timeout_seconds: default_timeout_seconds(),
        }
    }
}

fn default_resend_interval_seconds() -> f64 {
    60.0
}
fn default_facility() -> String {
    "local4".into()
}
fn default_app_name() -> String {
    "mamori-collector".into()
}
fn default_max_message_bytes() -> u32 {
    2048
}
fn default_queue_capacity() -> u32 {
    1024
}
fn default_max_attempts() -> u32 {
    5
}
fn default_initial_backoff_seconds() -> f64 {
    0.5
}
fn default_max_backoff_seconds() -> f64 {
    30.0
}
fn default_timeout_seconds() -> f64 {
    10.0
}

/// Upper bound on every duration: a day.
const MAX_SECONDS: f64 = 86_400.0;
/// Upper bound on a queue.
const MAX_QUEUE: u32 = 1_000_000;
/// Upper bound on attempts per message.
const MAX_ATTEMPTS: u32 = 100;
/// Labels Mamori sets itself; a static label may not replace them.
pub(crate) const RESERVED_LABELS: [&str; 7] = [
    "alertname",
    "site",
    "asset",
    "severity",
    "kind",
    "incident",
    "exercise",
];

/// The syslog facilities accepted, with their codes (RFC 5424, table 1).
const FACILITIES: [(&str, u8); 13] = [
    ("kern", 0),
    ("user", 1),
    ("daemon", 3),
    ("auth", 4),
    ("authpriv", 10),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// The code of facility `name`.
pub(crate) fn facility_code(name: &str) -> Option<u8> {
    FACILITIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, code)| *code)
}

pub(crate) fn seconds(x: f64) -> Duration {
    Duration::try_from_secs_f64(x).unwrap_or(Duration::ZERO)
}

fn seconds_ok(v: f64) -> bool {
    v.is_finite() && v > 0.0 && v <= MAX_SECONDS
}

impl DeliverySettings {
    fn validate(&self, prefix: &str, problems: &mut Vec<Problem>) {
        let mut bad = |key: &str, reason: String| {
            problems.push(Problem {
                key: format!("{prefix}.{key}"),
                reason,
            })
        };
        if self.queue_capacity == 0 || self.queue_capacity > MAX_QUEUE {
            bad(
                "queue_capacity",
                format!("must be between 1 and {MAX_QUEUE}"),
            );
        }
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS {
            bad(
                "max_attempts",
                format!("must be between 1 and {MAX_ATTEMPTS}"),
            );
        }
        for (key, v) in [
            ("initial_backoff_seconds", self.initial_backoff_seconds),
            ("max_backoff_seconds", self.max_backoff_seconds),
            ("timeout_seconds", self.timeout_seconds),
        ] {
            if !seconds_ok(v) {
                bad(key, format!("{v} is not a number of seconds in (0, 86400]"));
            }
        }
        if self.max_backoff_seconds < self.initial_backoff_seconds {
            bad(
                "max_backoff_seconds",
                "must be at least initial_backoff_seconds".into(),
            );
        }
    }

    pub(crate) fn backoff(&self) -> (Duration, Duration) {
        (
            seconds(self.initial_backoff_seconds),
            seconds(self.max_backoff_seconds),
        )
    }

    pub(crate) fn timeout(&self) -> Duration {
        seconds(self.timeout_seconds)
    }

    pub(crate) fn capacity(&self) -> usize {
        usize::try_from(self.queue_capacity).unwrap_or(usize::MAX)
    }
}

impl NotifySection {
    /// Checks every key of `[notify]`, reading the files it names; every problem at once.
    pub fn validate(&self, problems: &mut Vec<Problem>) {
        if let Some(am) = &self.alertmanager {
            am.validate(problems);
        }
        if let Some(w) = &self.webhook {
            w.validate(problems);
        }
        if let Some(s) = &self.syslog {
            s.validate(problems);
        }
    }

    /// Whether any sink is configured.
    pub fn is_empty(&self) -> bool {
        self.alertmanager.is_none() && self.webhook.is_none() && self.syslog.is_none()
    }
}

impl AlertmanagerSection {
    fn validate(&self, problems: &mut Vec<Problem>) {
        const P: &str = "notify.alertmanager";
        let mut bad = |key: &str, reason: String| {
            problems.push(Problem {
                key: format!("{P}.{key}"),
                reason,
            })
        };
        if self.urls.is_empty() {
            bad("urls", "must name at least one Alertmanager".into());
        }
        let mut any_https = false;
        for (n, url) in self.urls.iter().enumerate() {
            match parse_url(url) {
                Ok(uri) => any_https |= uri.scheme_str() == Some("https"),
                Err(reason) => bad(&format!("urls[{n}]"), reason),
            }
            if self.urls.iter().take(n).any(|u| u == url) {
                bad(&format!("urls[{n}]"), format!("{url:?} is listed twice"));
            }
        }
        if !seconds_ok(self.resend_interval_seconds) {
            bad(
                "resend_interval_seconds",
                format!(
                    "{} is not a number of seconds in (0, 86400]",
                    self.resend_interval_seconds
                ),
            );
        }
        for (name, value) in &self.labels {
            if !is_label_name(name) {
                bad(
                    &format!("labels.{name}"),
                    "is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not __*)".into(),
                );
            } else if RESERVED_LABELS.contains(&name.as_str()) {
                bad(
                    &format!("labels.{name}"),
                    "is set by Mamori and cannot be replaced".into(),
                );
            }
            if value.is_empty() || value.len() > 1024 {
                bad(
                    &format!("labels.{name}"),
                    "the value must be 1 to 1024 bytes (Alertmanager drops empty labels)".into(),
                );
            }
        }
        match (&self.username, &self.password_file) {
            (Some(_), None) => bad("password_file", "username needs password_file".into()),
            (None, Some(_)) => bad("username", "password_file needs username".into()),
            (Some(user), Some(_)) if user.is_empty() || user.contains(':') => {
                bad("username", "must be non-empty and hold no ':'".into())
            }
            _ => {}
        }
        if self.username.is_some() && self.bearer_token_file.is_some() {
            bad(
                "bearer_token_file",
                "use either basic authentication or a bearer token, not both".into(),
            );
        }
        for (key, path) in [
            ("password_file", &self.password_file),
            ("bearer_token_file", &self.bearer_token_file),
        ] {
            if let Some(path) = path
                && let Err(reason) = load_secret(path)
            {
                bad(key, reason);
            }
        }
        check_ca(P, any_https, self.ca_file.as_deref(), problems);
        self.delivery().validate(P, problems);
    }
}

impl WebhookSection {
    fn validate(&self, problems: &mut Vec<Problem>) {
        const P: &str = "notify.webhook";
        let mut https = false;
        match parse_url(&self.url) {
            Ok(uri) => https = uri.scheme_str() == Some("https"),
            Err(reason) => problems.push(Problem {
                key: format!("{P}.url"),
                reason,
            }),
        }
        if let Err(reason) = load_secret(&self.secret_file) {
            problems.push(Problem {
                key: format!("{P}.secret_file"),
                reason,
            });
        }
        check_ca(P, https, self.ca_file.as_deref(), problems);
        self.delivery().validate(P, problems);
    }
}

impl SyslogSection {
    fn validate(&self, problems: &mut Vec<Problem>) {
        const P: &str = "notify.syslog";
        let mut bad = |key: &str, reason: String| {
            problems.push(Problem {
                key: format!("{P}.{key}"),
                reason,
            })
        };
        match self.address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => bad("address", format!("{:?} is not host:port", self.address)),
        }
        if facility_code(&self.facility).is_none() {
            let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
            bad(
                "facility",
                format!("{:?} is not one of {}", self.facility, names.join(", ")),
            );
        }
        if let Some(h) = &self.hostname
            && !is_header_field(h, 255)
        {
            bad(
                "hostname",
                "must be 1 to 255 printable ASCII characters without spaces".into(),
            );
        }
        if !is_header_field(&self.app_name, 48) {
            bad(
                "app_name",
                "must be 1 to 48 printable ASCII characters without spaces".into(),
            );
        }
        if !(480..=65_000).contains(&self.max_message_bytes) {
            bad("max_message_bytes", "must be between 480 and 65000".into());
        }
        if self.transport == Transport::Udp && self.framing != Framing::default() {
            bad("framing", "only applies to transport = \"tcp\"".into());
        }
        self.delivery().validate(P, problems);
    }

    /// The facility's code (`local4` when the name is unknown; validation refuses those).
    pub(crate) fn facility_code(&self) -> u8 {
        facility_code(&self.facility).unwrap_or(20)
    }
}

/// `https` needs trust anchors; a CA file with plain `http` would be silently unused.
fn check_ca(prefix: &str, https: bool, ca_file: Option<&Path>, problems: &mut Vec<Problem>) {
    let key = format!("{prefix}.ca_file");
    match ca_file {
        None if https => problems.push(Problem {
            key,
            reason: "an https URL needs the CA certificate(s) to trust".into(),
        }),
        None => {}
        Some(_) if !https => problems.push(Problem {
            key,
            reason: "only used with https URLs, and none is configured".into(),
        }),
        Some(path) => {
            if let Err(reason) = load_roots(path) {
                problems.push(Problem { key, reason });
            }
        }
    }
}

/// An `http` or `https` URL with a host, no user info, no query and no fragment.
pub(crate) fn parse_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{url:?}: the scheme must be http or https")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{url:?} names no host"));
    };
    if authority.host().is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    if authority.as_str().contains('@') {
        return Err(format!(
            "{url:?}: put credentials in username/password_file, not in the URL"
        ));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(format!("{url:?}: no query or fragment allowed"));
    }
    Ok(uri)
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && !s.starts_with("__")
}

/// RFC 5424 header fields: PRINTUSASCII (33–126), bounded.
pub(crate) fn is_header_field(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| (33..=126).contains(&b))
}

/// A secret read from a file. Never printed: `Debug` shows `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Reads a secret file: its first line, trailing whitespace removed, non-empty. The error
/// names the file, never its content.
pub(crate) fn load_secret(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value = text.lines().next().unwrap_or("").trim_end();
    if value.is_empty() {
        return Err(format!("{}: empty", path.display()));
    }
    if value.len() > 4096 {
        return Err(format!("{}: longer than 4096 bytes", path.display()));
    }
    if value.bytes().any(|b| b.is_ascii_control()) {
        return Err(format!("{}: holds control characters", path.display()));
    }
    Ok(Secret(value.to_owned()))
}

/// Reads a PEM file of CA certificates (at least one).
pub(crate) fn load_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let loaded =
        CertificateDer::pem_file_iter(path).and_then(|it| it.collect::<Result<Vec<_>, _>>());
    match loaded {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(format!("{}: no certificate", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NotifySection, toml::de::Error> {
        toml::from_str(text)
    }

    fn keys(section: &NotifySection) -> Vec<String> {
        let mut problems = Vec::new();
        section.validate(&mut problems);
        problems.into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn defaults_apply_and_unknown_keys_are_refused() {
        let s = parse("[alertmanager]\nurls = [\"http://127.0.0.1:9093\"]\n").unwrap();
        let am = s.alertmanager.as_ref().unwrap();
        assert_eq!(am.resend_interval_seconds, 60.0);
        assert_eq!(am.delivery().max_attempts, 5);
        assert_eq!(am.delivery().queue_capacity, 1024);
        assert!(keys(&s).is_empty(), "{:?}", keys(&s));
        assert!(parse("[alertmanager]\nurls = []\nretries = 3\n").is_err());
        assert!(parse("[pagerduty]\n").is_err());
        let s = parse("[syslog]\naddress = \"siem:514\"\nmax_attempts = 0\ntransport = \"tcp\"\n")
            .unwrap();
        assert_eq!(s.syslog.as_ref().unwrap().framing, Framing::OctetCounting);
        assert_eq!(keys(&s), ["notify.syslog.max_attempts"]);
    }

    #[test]
    fn every_problem_is_named_by_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let text = format!(
            r#"
            [alertmanager]
            urls = ["ftp://x", "https://am:9093", "http://u:p@am:9093"]
            resend_interval_seconds = 0
            labels = {{ severity = "x", "1bad" = "y", team = "" }}
            username = "ops"
            bearer_token_file = "{empty}"
            timeout_seconds = -1
            [webhook]
            url = "http://hook.example/x?y=1"
            secret_file = "/nonexistent/secret"
            ca_file = "/nonexistent/ca.pem"
            [syslog]
            address = "siem"
            facility = "mail"
            app_name = "has space"
            max_message_bytes = 10
            framing = "lf"
            "#,
            empty = empty.display()
        );
        let s = parse(&text).unwrap();
        let got = keys(&s);
        for key in [
            "notify.alertmanager.urls[0]",
            "notify.alertmanager.urls[2]",
            "notify.alertmanager.resend_interval_seconds",
            "notify.alertmanager.labels.severity",
            "notify.alertmanager.labels.1bad",
            "notify.alertmanager.labels.team",
            "notify.alertmanager.password_file",
            "notify.alertmanager.bearer_token_file",
            "notify.alertmanager.ca_file",
            "notify.alertmanager.timeout_seconds",
            "notify.webhook.url",
            "notify.webhook.secret_file",
            "notify.webhook.ca_file",
            "notify.syslog.address",
            "notify.syslog.facility",
            "notify.syslog.app_name",
            "notify.syslog.max_message_bytes",
            "notify.syslog.framing",
        ] {
            assert!(got.iter().any(|k| k == key), "{key} missing from {got:?}");
        }
    }

    #[test]
    fn secrets_are_read_trimmed_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cr3t-value\n").unwrap();
        let secret = load_secret(&path).unwrap();
        assert_eq!(secret.expose(), "s3cr3t-value");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        std::fs::write(&path, "  \n").unwrap();
        let err = load_secret(&path).unwrap_err();
        assert!(err.contains("empty"), "{err}");
    }
}
