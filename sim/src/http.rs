//! Just enough HTTP for the demo and the drill to talk to the collector's API and to
//! Alertmanager: one HTTP/1.0 request per connection (so every answer ends at close, never
//! chunked), plain `http://` only, every step under a timeout. Not a general client.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on an answer's size (an incident list or Alertmanager's alerts).
const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

/// A base URL: `http://host:port` with an optional path prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseUrl {
    /// `host:port`, as connected to and sent as `Host`.
    pub authority: String,
    /// The path prefix without a trailing slash (`""` at the root).
    pub prefix: String,
}

impl BaseUrl {
    /// Parses `http://host[:port][/prefix]`; port 80 when absent.
    pub fn parse(url: &str) -> Result<BaseUrl, String> {
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.starts_with("https://") {
            return Err(format!(
                "{url}: only plain http:// is supported here (reach the API on loopback or \
                 through a tunnel)"
            ));
        } else {
            return Err(format!("{url}: not an http:// URL"));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let prefix = path.trim_end_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("/{prefix}")
        };
        Ok(BaseUrl { authority, prefix })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}{}", self.authority, self.prefix, path)
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

/// An answer: status and body.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// One request to `base` + `path`, with a bearer `token` and a JSON `body` when given.
pub async fn request(
    base: &BaseUrl,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    timeout: Duration,
) -> Result<Response, String> {
    let exchange = async {
        let mut s = TcpStream::connect(&base.authority)
            .await
            .map_err(|e| format!("connecting to {}: {e}", base.authority))?;
        let mut head = format!(
            "{method} {}{path} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n",
            base.prefix, base.authority
        );
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() || matches!(method, "PUT" | "POST") {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        head.push_str(body);
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| format!("sending to {}: {e}", base.authority))?;
        let mut raw = Vec::new();
        (&mut s)
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("reading from {}: {e}", base.authority))?;
        let raw = String::from_utf8_lossy(&raw);
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("{}: not an HTTP answer", base.authority))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{}: no status in the answer", base.authority))?;
        Ok(Response {
            status,
            body: body.to_owned(),
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{method} {} timed out", base.url(path)))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn base_urls_parse_with_default_port_and_prefix() {
        let u = BaseUrl::parse("http://127.0.0.1:9104").unwrap();
        assert_eq!(u.authority, "127.0.0.1:9104");
        assert_eq!(u.prefix, "");
        let u = BaseUrl::parse("http://mamori.plant.example/collector/").unwrap();
        assert_eq!(u.authority, "mamori.plant.example:80");
        assert_eq!(u.prefix, "/collector");
        assert_eq!(
            u.url("/api/v1/sites"),
            "http://mamori.plant.example:80/collector/api/v1/sites"
        );
        assert!(BaseUrl::parse("https://x").is_err());
        assert!(BaseUrl::parse("ftp://x").is_err());
    }
}
