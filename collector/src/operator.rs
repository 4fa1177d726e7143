//! `normal`, `relearn` and `audit`: an operator's calls to a running collector's API from
//! the command line (docs/collector.md, "This is normal"). Each prints the API's JSON answer
//! on stdout and exits non-zero with the API's reason when it refuses.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use hyper::Method;
use mamori_collector::client::ApiClient;
use serde_json::json;

/// Where the API is and who calls it.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// The API's base URL (`[api] listen`, or the TLS proxy in front of it).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9104")]
    api: String,
    /// A file whose first line is the API token (a token with the `write` scope for
    /// changes; its name is recorded in the audit trail).
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
    /// The CA certificate (PEM) to trust for an `https` URL.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Limit on the whole request.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    timeout_seconds: f64,
}

impl ApiArgs {
    fn client(&self) -> anyhow::Result<ApiClient> {
        if !(self.timeout_seconds.is_finite() && self.timeout_seconds > 0.0) {
            anyhow::bail!("--timeout-seconds must be positive");
        }
        Ok(ApiClient::new(
            &self.api,
            &self.token_file,
            self.ca_file.as_deref(),
            Duration::from_secs_f64(self.timeout_seconds.min(3600.0)),
        )?)
    }
}

#[derive(Debug, clap::Args)]
pub struct NormalArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The alert's id (`GET /api/v1/alerts`, or an incident's alerts).
    #[arg(long, value_name = "ID")]
    alert: i64,
    /// Why this is normal (required; kept in the audit trail).
    #[arg(long, value_name = "TEXT")]
    reason: String,
}

#[derive(Debug, clap::Args)]
pub struct RelearnArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[arg(long)]
    site: String,
    /// A device: everything it does as client or server.
    #[arg(
        long,
        value_name = "IP",
        conflicts_with = "channel",
        required_unless_present = "channel"
    )]
    asset: Option<IpAddr>,
    /// One client's use of one function on one unit of one server: `CLIENT>SERVER/UNIT/FUNC`
    /// (`10.0.0.10>10.0.0.2/1/3`).
    #[arg(long, value_name = "CHANNEL")]
    channel: Option<String>,
    /// Event time to learn for (default: the site's learning period).
    #[arg(long)]
    seconds: Option<f64>,
    /// Why (kept in the audit trail).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Only this site's entries.
    #[arg(long)]
    site: Option<String>,
    /// At most this many entries, newest first.
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn print(answer: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(answer)?);
    Ok(())
}

pub fn normal(args: &NormalArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    let path = format!("/api/v1/alerts/{}/normal", args.alert);
    let body = json!({ "reason": args.reason });
    let entry = runtime()?.block_on(client.call(Method::POST, &path, Some(&body)))?;
    let at = |pointer: &str| entry.pointer(pointer).cloned().unwrap_or_default();
    let changes = entry
        .pointer("/changes/changes")
        .and_then(|c| c.as_array())
        .map_or(0, Vec::len);
    eprintln!(
        "alert {} marked as normal by {} (audit entry {}): {changes} change(s) to the baseline of {}",
        args.alert,
        at("/who"),
        at("/id"),
        at("/site")
    );
    print(&entry)
}

/// `CLIENT>SERVER/UNIT/FUNC`.
fn parse_channel(s: &str) -> anyhow::Result<serde_json::Value> {
    let bad = || anyhow::anyhow!("--channel {s:?}: expected CLIENT>SERVER/UNIT/FUNC");
    let (client, rest) = s.split_once('>').ok_or_else(bad)?;
    let mut parts = rest.split('/');
    let (Some(server), Some(unit), Some(func), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    Ok(json!({
        "client": client.parse::<IpAddr>().map_err(|_| bad())?,
        "server": server.parse::<IpAddr>().map_err(|_| bad())?,
        "unit": unit.parse::<u8>().map_err(|_| bad())?,
        "func": func.parse::<u8>().map_err(|_| bad())?,
    }))
}

pub fn relearn(args: &RelearnArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    let mut body = serde_json::Map::new();
    match (&args.asset, &args.channel) {
        (Some(ip), None) => body.insert("asset".into(), json!(ip)),
        (None, Some(c)) => body.insert("channel".into(), parse_channel(c)?),
        _ => anyhow::bail!("give either --asset or --channel"),
    };
    if let Some(s) = args.seconds {
        body.insert("seconds".into(), json!(s));
    }
    if let Some(r) = &args.reason {
        body.insert("reason".into(), json!(r));
    }
    let body = serde_json::Value::Object(body);
    let path = format!("/api/v1/sites/{}/relearn", args.site);
    print(&runtime()?.block_on(client.call(Method::POST, &path, Some(&body)))?)
}

pub fn audit(args: &AuditArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    let mut path = format!("/api/v1/audit?limit={}", args.limit);
    if let Some(site) = &args.site {
        if !site
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            anyhow::bail!("--site {site:?}: letters, digits, '-', '_' and '.' only");
        }
        path.push_str(&format!("&site={site}"));
    }
    print(&runtime()?.block_on(client.call(Method::GET, &path, None))?)
}
