//! Syslog to a SIEM: an RFC 5424 message whose MSG is ArcSight CEF,
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID incident - CEF:0|Mamori|Mamori Collector|<version>|<kind>|<summary>|<0-10>|<extensions>
//! ```
//!
//! over UDP (one datagram per message, RFC 5426) or TCP (octet counting or LF framing,
//! RFC 6587). What a notice carries was shaped by traffic on a hostile network, so every
//! value is escaped: in the header `\` and `|`, in extension values `\`, `=` and line breaks,
//! and any other control character becomes a space. No field can end the message early,
//! start a new line (a new syslog message under LF framing) or forge an extension.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

use super::config::{Framing, SyslogSection, Transport, is_header_field};
use super::queue::{Policy, Queue, Retry, SinkStats, deliver};
use super::{Delivery, Event, Notice, NotifyError, Sink, SinkHandle, rfc3339};

/// CEF header: vendor and product.
pub const DEVICE_VENDOR: &str = "Mamori";
pub const DEVICE_PRODUCT: &str = "Mamori Collector";
/// RFC 5424 MSGID.
pub const MSG_ID: &str = "incident";
/// Caps (in characters, before escaping) on the free-text fields.
const MAX_NAME_CHARS: usize = 512;
const MAX_FIELD_CHARS: usize = 1024;
const MAX_MSG_CHARS: usize = 4000;

/// Escapes a CEF header field: `\` → `\\`, `|` → `\|`; line breaks and other control
/// characters become spaces (the header has no escape for them).
pub fn escape_header(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a CEF extension value: `\` → `\\`, `=` → `\=`, CR → `\r`, LF → `\n`; other
/// control characters (and Unicode line separators) become spaces.
pub fn escape_extension(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{2028}' | '\u{2029}' => out.push(' '),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn cut(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => s.get(..i).unwrap_or(s),
        None => s,
    }
}

/// CEF severity (0–10).
pub fn cef_severity(severity: mamori_models::detect::Severity) -> u8 {
    use mamori_models::detect::Severity::*;
    match severity {
        Info => 1,
        Low => 3,
        Medium => 5,
        High => 8,
        Critical => 10,
    }
}

/// Syslog severity (RFC 5424: 2 critical … 6 informational).
pub fn syslog_severity(severity: mamori_models::detect::Severity) -> u8 {
    use mamori_models::detect::Severity::*;
    match severity {
        Critical => 2,
        High => 3,
        Medium => 4,
        Low => 5,
        Info => 6,
    }
}

/// The asset's address (`ip` or `ip/unit`), when it parses.
fn asset_ip(asset: Option<&str>) -> Option<IpAddr> {
    let asset = asset?;
    let ip = asset.split_once('/').map_or(asset, |(ip, _)| ip);
    ip.parse().ok()
}

/// The CEF line of `notice`. `rt_unix_ms`: when it was handed over; `device_id`: this
/// collector (`deviceExternalId`). The free-text `msg` comes last, so cutting a long
/// message loses it first.
pub fn render_cef(notice: &Notice, event: Event, rt_unix_ms: u64, device_id: &str) -> String {
    let mut ext: Vec<(&str, String)> = vec![
        ("rt", rt_unix_ms.to_string()),
        ("act", event.as_str().to_owned()),
        ("cat", notice.kind.clone()),
    ];
    match asset_ip(notice.asset.as_deref()) {
        Some(ip @ IpAddr::V4(_)) => ext.push(("dst", ip.to_string())),
        // CEF's `dst` is IPv4 only; IPv6 goes in a labelled custom address.
        Some(ip @ IpAddr::V6(_)) => {
            ext.push(("c6a3Label", "dst".into()));
            ext.push(("c6a3", ip.to_string()));
        }
        None => {}
    }
    ext.extend([
        ("start", notice.starts_at_unix_ms.to_string()),
        ("cs1Label", "site".into()),
        ("cs1", notice.site.clone()),
        ("cs2Label", "incident".into()),
        ("cs2", notice.incident_id.to_string()),
        ("cs3Label", "detectors".into()),
        ("cs3", notice.detectors.join(",")),
        ("cs4Label", "exercise".into()),
        ("cs4", notice.exercise.to_string()),
    ]);
    if let Some(end) = notice.ends_at_unix_ms {
        ext.push(("end", end.to_string()));
    }
    if let Some(asset) = &notice.asset {
        ext.push(("cs5Label", "asset".into()));
        ext.push(("cs5", asset.clone()));
    }
    ext.push(("externalId", notice.key.clone()));
    ext.push(("deviceExternalId", device_id.to_owned()));
    if !notice.generator_url.is_empty() {
        ext.push(("request", notice.generator_url.clone()));
    }
    if let Some(url) = &notice.runbook_url {
        ext.push(("cs6Label", "runbook".into()));
        ext.push(("cs6", url.clone()));
    }
    ext.push(("msg", notice.description.clone()));
    let extensions: Vec<String> = ext
        .iter()
        .map(|(k, v)| {
            let max = if *k == "msg" {
                MAX_MSG_CHARS
            } else {
                MAX_FIELD_CHARS
            };
            format!("{k}={}", escape_extension(cut(v, max)))
        })
        .collect();
    format!(
        "CEF:0|{}|{}|{}|{}|{}|{}|{}",
        escape_header(DEVICE_VENDOR),
        escape_header(DEVICE_PRODUCT),
        escape_header(env!("CARGO_PKG_VERSION")),
        escape_header(cut(&notice.kind, MAX_FIELD_CHARS)),
        escape_header(cut(&notice.summary, MAX_NAME_CHARS)),
        cef_severity(notice.severity),
        extensions.join(" "),
    )
}

/// The fixed parts of the RFC 5424 header.
#[derive(Clone, Debug)]
pub struct SyslogHeader {
    pub facility: u8,
    pub hostname: String,
    pub app_name: String,
    pub proc_id: u32,
}

/// The whole syslog message (no framing), at most `max_bytes`: cut at a character boundary
/// and never inside a CEF escape.
pub fn render_syslog(
    header: &SyslogHeader,
    notice: &Notice,
    event: Event,
    at_unix_ms: u64,
    max_bytes: usize,
) -> String {
    let pri = u16::from(header.facility) * 8 + u16::from(syslog_severity(notice.severity));
    let message = format!(
        "<{pri}>1 {} {} {} {} {MSG_ID} - {}",
        rfc3339(at_unix_ms),
        header.hostname,
        header.app_name,
        header.proc_id,
        render_cef(notice, event, at_unix_ms, &header.hostname),
    );
    truncate(message, max_bytes)
}

fn truncate(mut s: String, max_bytes: usize) -> String {
    if s.len() <= max_bytes {
        return s;
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    // An odd run of trailing backslashes is half an escape: drop its last one.
    let trailing = s.bytes().rev().take_while(|b| *b == b'\\').count();
    if !trailing.is_multiple_of(2) {
        s.pop();
    }
    s
}

/// `message` framed for `framing` on TCP (RFC 6587).
pub fn frame(message: &str, framing: Framing) -> Vec<u8> {
    match framing {
        Framing::OctetCounting => format!("{} {message}", message.len()).into_bytes(),
        Framing::Lf => format!("{message}\n").into_bytes(),
    }
}

/// This machine's host name as an RFC 5424 HOSTNAME, or `-`.
fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|h| is_header_field(h, 255))
        .unwrap_or_else(|| "-".into())
}

/// The syslog sink, built and not yet running.
#[derive(Debug)]
pub(crate) struct Runner {
    address: String,
    transport: Transport,
    framing: Framing,
    header: SyslogHeader,
    max_bytes: usize,
    timeout: Duration,
    policy: Policy,
    capacity: usize,
}

impl Runner {
    pub(crate) fn build(section: &SyslogSection) -> Result<Runner, NotifyError> {
        let delivery = section.delivery();
        Ok(Runner {
            address: section.address.clone(),
            transport: section.transport,
            framing: section.framing,
            header: SyslogHeader {
                facility: section.facility_code(),
                hostname: section.hostname.clone().unwrap_or_else(local_hostname),
                app_name: section.app_name.clone(),
                proc_id: std::process::id(),
            },
            max_bytes: usize::try_from(section.max_message_bytes).unwrap_or(2048),
            timeout: delivery.timeout(),
            policy: Policy::from_settings(&delivery),
            capacity: delivery.capacity(),
        })
    }

    pub(crate) fn spawn(
        self,
        runtime: &tokio::runtime::Handle,
    ) -> (SinkHandle, tokio::task::JoinHandle<()>) {
        let stats = Arc::new(SinkStats::new(Sink::Syslog));
        let input = Arc::new(Queue::new(self.capacity));
        let handle = SinkHandle {
            stats: stats.clone(),
            input: input.clone(),
            posts: Vec::new(),
        };
        (handle, runtime.spawn(run(self, input, stats)))
    }
}

/// The connection (TCP) or socket (UDP), kept between messages, reopened after an error.
#[derive(Debug, Default)]
struct Link {
    tcp: Option<TcpStream>,
    udp: Option<UdpSocket>,
}

async fn resolve(address: &str) -> std::io::Result<SocketAddr> {
    tokio::net::lookup_host(address)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))
}

impl Link {
    async fn send(&mut self, runner: &Runner, message: &str) -> std::io::Result<()> {
        match runner.transport {
            Transport::Udp => {
                let to = resolve(&runner.address).await?;
                let socket = match self.udp.take() {
                    Some(s) if s.local_addr().is_ok_and(|a| a.is_ipv4() == to.is_ipv4()) => s,
                    _ => {
                        let any: SocketAddr = if to.is_ipv4() {
                            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                        } else {
                            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                        };
                        UdpSocket::bind(any).await?
                    }
                };
                socket.send_to(message.as_bytes(), to).await?;
                self.udp = Some(socket);
                Ok(())
            }
            Transport::Tcp => {
                let mut stream = match self.tcp.take() {
                    Some(s) if still_open(&s) => s,
                    _ => {
                        let to = resolve(&runner.address).await?;
                        let s = TcpStream::connect(to).await?;
                        let _ = s.set_nodelay(true);
                        s
                    }
                };
                stream.write_all(&frame(message, runner.framing)).await?;
                self.tcp = Some(stream);
                Ok(())
            }
        }
    }
}

/// Whether the receiver has not closed the connection (a write to a closed one may still
/// succeed once and lose the message).
fn still_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    match stream.try_read(&mut probe) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

async fn run(runner: Runner, input: Arc<Queue<Arc<Delivery>>>, stats: Arc<SinkStats>) {
    // Lent to one attempt at a time (attempts are sequential; the lock is never contended).
    let link = tokio::sync::Mutex::new(Link::default());
    while let Some(d) = input.next().await {
        if input.len() == 0 {
            stats.drained();
        }
        let message = render_syslog(
            &runner.header,
            &d.notice,
            d.event,
            d.at_unix_ms,
            runner.max_bytes,
        );
        let (runner, message, link) = (&runner, &message, &link);
        deliver(&stats, runner.policy, &runner.address, 1, || async move {
            let mut link = link.lock().await;
            let failure =
                match tokio::time::timeout(runner.timeout, link.send(runner, message)).await {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("timed out after {:?}", runner.timeout),
                };
            // The next attempt starts on a new connection.
            *link = Link::default();
            Err((Retry::Transient, failure))
        })
        .await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::notify::tests::notice;

    fn header() -> SyslogHeader {
        SyslogHeader {
            facility: 20,
            hostname: "collector-1".into(),
            app_name: "mamori-collector".into(),
            proc_id: 42,
        }
    }

    #[test]
    fn header_fields_escape_pipe_and_backslash_and_lose_line_breaks() {
        assert_eq!(escape_header(r"a|b\c"), r"a\|b\\c");
        assert_eq!(escape_header("x\r\ny\u{0}z"), "x  y z");
        assert_eq!(escape_header("a=b"), "a=b");
    }

    #[test]
    fn extension_values_escape_equals_backslash_and_newlines() {
        assert_eq!(escape_extension(r"a=b\c|d"), r"a\=b\\c|d");
        assert_eq!(escape_extension("l1\nl2\r"), r"l1\nl2\r");
        assert_eq!(escape_extension("t\tx\u{85}y\u{2028}z"), "t x y z");
        // A forged extension stays inside its value.
        assert_eq!(escape_extension("x cs1=evil"), r"x cs1\=evil");
    }

    #[test]
    fn a_notice_renders_as_one_cef_line() {
        let line = render_cef(
            &notice("plant-a/17"),
            Event::Opened,
            1_700_000_001_000,
            "c1",
        );
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            line,
            format!(
                "CEF:0|Mamori|Mamori Collector|{version}|new_modbus_path|New Modbus path 10.0.0.9 -> 10.0.0.5 unit 1|8|\
                 rt=1700000001000 act=opened cat=new_modbus_path dst=10.0.0.5 start=1700000000123 \
                 cs1Label=site cs1=plant-a cs2Label=incident cs2=17 cs3Label=detectors cs3=allowlist \
                 cs4Label=exercise cs4=false cs5Label=asset cs5=10.0.0.5/1 externalId=plant-a/17 \
                 deviceExternalId=c1 request=http://collector:8080/v1/incidents/17 \
                 cs6Label=runbook cs6=https://wiki.example/runbooks/new-path \
                 msg=A client never seen in learning wrote holding registers."
            )
        );
    }

    #[test]
    fn hostile_fields_cannot_break_the_line_or_forge_fields() {
        let mut n = notice("k");
        n.kind = "kind|7|evil".into();
        n.summary = "sum|mary\\\nCEF:0|fake".into();
        n.site = "a=b\nc".into();
        n.description = "line1\r\nline2 act=resolved \\".into();
        n.asset = Some("fe80::1/3".into());
        n.severity = mamori_models::detect::Severity::Critical;
        let line = render_cef(&n, Event::Resolved, 1, "c1");
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        assert!(
            line.contains(r"|kind\|7\|evil|sum\|mary\\ CEF:0\|fake|10|"),
            "{line}"
        );
        assert!(line.contains(r"cs1=a\=b\nc "), "{line}");
        assert!(
            line.contains(r"msg=line1\r\nline2 act\=resolved \\"),
            "{line}"
        );
        assert!(line.contains("c6a3Label=dst c6a3=fe80::1 "), "{line}");
        // A CEF reader gets back exactly what was sent, and no more fields.
        let (header, ext) = parse_cef(&line);
        assert_eq!(header.len(), 7, "{header:?}");
        assert_eq!(header[5], "sum|mary\\ CEF:0|fake");
        assert_eq!(header[4], "kind|7|evil");
        assert_eq!(header[6], "10");
        let get = |k: &str| -> Vec<&String> {
            ext.iter()
                .filter(|(key, _)| key == k)
                .map(|(_, v)| v)
                .collect()
        };
        assert_eq!(get("cs1"), [&"a=b\\nc".to_owned()]);
        assert_eq!(get("act"), [&"resolved".to_owned()]);
        assert_eq!(get("cat"), [&"kind|7|evil".to_owned()]);
        assert_eq!(get("msg"), [&"line1\\r\\nline2 act=resolved \\".to_owned()]);
    }

    /// A reader after the CEF specification: seven header fields split on unescaped pipes,
    /// then `key=value` pairs, a key being the word before an unescaped `=`. Values are
    /// unescaped except `\n`/`\r`, kept as the two characters (so a test can see them).
    fn parse_cef(line: &str) -> (Vec<String>, Vec<(String, String)>) {
        let mut header = Vec::new();
        let mut field = String::new();
        let mut chars = line.chars();
        while header.len() < 7 {
            match chars.next() {
                Some('\\') => field.push(chars.next().unwrap()),
                Some('|') => header.push(std::mem::take(&mut field)),
                Some(c) => field.push(c),
                None => panic!("header ended early: {line}"),
            }
        }
        // Extension: find unescaped '=' and split on them.
        let rest: Vec<char> = chars.collect();
        let mut eqs = Vec::new();
        let mut i = 0;
        while i < rest.len() {
            match rest[i] {
                '\\' => i += 2,
                '=' => {
                    eqs.push(i);
                    i += 1;
                }
                _ => i += 1,
            }
        }
        let key_start = |eq: usize| {
            rest[..eq]
                .iter()
                .rposition(|c| *c == ' ')
                .map_or(0, |p| p + 1)
        };
        let mut pairs = Vec::new();
        for (n, &eq) in eqs.iter().enumerate() {
            let key: String = rest[key_start(eq)..eq].iter().collect();
            let end = eqs
                .get(n + 1)
                .map_or(rest.len(), |&next| key_start(next).saturating_sub(1));
            let raw: String = rest[eq + 1..end].iter().collect();
            let mut value = String::new();
            let mut it = raw.chars();
            while let Some(c) = it.next() {
                match (c, it.clone().next()) {
                    ('\\', Some('n' | 'r')) => value.push('\\'),
                    ('\\', Some(_)) => value.push(it.next().unwrap()),
                    _ => value.push(c),
                }
            }
            pairs.push((key, value));
        }
        (header, pairs)
    }

    #[test]
    fn the_syslog_header_carries_pri_from_severity() {
        let msg = render_syslog(
            &header(),
            &notice("k"),
            Event::Opened,
            1_700_000_001_000,
            8192,
        );
        // local4 (20) * 8 + err (3) for High.
        assert!(
            msg.starts_with(
                "<163>1 2023-11-14T22:13:21.000000Z collector-1 mamori-collector 42 incident - CEF:0|"
            ),
            "{msg}"
        );
    }

    #[test]
    fn long_messages_are_cut_without_half_an_escape() {
        let mut n = notice("k");
        n.description = "\\".repeat(5000);
        for max in 480..520 {
            let msg = render_syslog(&header(), &n, Event::Opened, 1, max);
            assert!(msg.len() <= max);
            let trailing = msg.bytes().rev().take_while(|b| *b == b'\\').count();
            assert_eq!(trailing % 2, 0, "max {max}: {msg}");
        }
        n.description = "é".repeat(3000);
        let msg = render_syslog(&header(), &n, Event::Opened, 1, 1001);
        assert!(msg.len() <= 1001);
    }

    #[test]
    fn framing_counts_octets_or_ends_lines() {
        assert_eq!(
            frame("héllo", Framing::OctetCounting),
            b"6 h\xc3\xa9llo".to_vec()
        );
        assert_eq!(frame("x", Framing::Lf), b"x\n".to_vec());
    }
}
