//! One HTTP/1.1 POST per attempt on a fresh connection (plain TCP, or rustls with the `ring`
//! provider and the configured CA as the only trust anchor). Notifications come a few a
//! minute at most, so a connection pool would buy nothing and would hold sockets that go
//! stale between incidents.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::NotifyError;
use super::queue::Retry;

/// Cap on an answer's body read (only a snippet is ever logged).
const MAX_ANSWER_BYTES: usize = 4096;

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttemptError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("http: {0}")]
    Http(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("answered {status}: {body}")]
    Status { status: u16, body: String },
}

impl AttemptError {
    /// A 4xx other than 408 and 429 is the receiver refusing the message.
    pub(crate) fn retry(&self) -> Retry {
        match self {
            AttemptError::Status { status, .. }
                if (400..500).contains(status) && *status != 408 && *status != 429 =>
            {
                Retry::Permanent
            }
            _ => Retry::Transient,
        }
    }
}

/// A configured POST target.
#[derive(Clone)]
pub(crate) struct HttpTarget {
    /// The URL as configured, for logs (it never holds credentials: validation refuses
    /// user info).
    url: String,
    host: String,
    port: u16,
    /// `Host:` header value.
    authority: String,
    path: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    timeout: Duration,
    /// Sent with every request (authentication); marked sensitive.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Headers may carry credentials: only their names.
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("HttpTarget")
            .field("url", &self.url)
            .field("tls", &self.tls.is_some())
            .field("timeout", &self.timeout)
            .field("headers", &names)
            .finish()
    }
}

/// A rustls client trusting only `roots`.
pub(crate) fn tls_connector(
    roots: Vec<CertificateDer<'static>>,
) -> Result<TlsConnector, NotifyError> {
    let tls = |e: rustls::Error| NotifyError::Tls(e.to_string());
    let mut store = rustls::RootCertStore::empty();
    for ca in roots {
        store.add(ca).map_err(tls)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(tls)?
    .with_root_certificates(store)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

impl HttpTarget {
    /// `base` joined with `suffix` (`/api/v2/alerts`); `connector` is required for https.
    pub(crate) fn new(
        base: &str,
        suffix: &str,
        connector: Option<&TlsConnector>,
        timeout: Duration,
        headers: Vec<(HeaderName, HeaderValue)>,
    ) -> Result<HttpTarget, NotifyError> {
        let invalid = |reason: String| NotifyError::Invalid(format!("{base}: {reason}"));
        let uri: Uri = super::config::parse_url(base).map_err(invalid)?;
        let https = uri.scheme_str() == Some("https");
        let authority = uri
            .authority()
            .ok_or_else(|| invalid("no host".into()))?
            .clone();
        // `[::1]` in a URL, `::1` for connecting and for the certificate check.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let mut path = format!("{}{suffix}", uri.path().trim_end_matches('/'));
        if path.is_empty() {
            path.push('/');
        }
        let tls = if https {
            let connector = connector
                .ok_or_else(|| invalid("https needs ca_file".into()))?
                .clone();
            let name = ServerName::try_from(host.clone())
                .map_err(|e| invalid(format!("server name: {e}")))?;
            Some((connector, name))
        } else {
            None
        };
        Ok(HttpTarget {
            url: base.to_owned(),
            host,
            port,
            authority: authority.as_str().to_owned(),
            path,
            tls,
            timeout,
            headers,
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// One POST of `body` (`application/json`) with the target's and `extra` headers;
    /// `Ok` on a 2xx answer.
    pub(crate) async fn post(
        &self,
        body: Bytes,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<(), AttemptError> {
        tokio::time::timeout(self.timeout, self.post_inner(body, extra))
            .await
            .map_err(|_| AttemptError::Timeout(self.timeout))?
    }

    async fn post_inner(
        &self,
        body: Bytes,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<(), AttemptError> {
        let mut request = self.build(Method::POST, body)?;
        let headers = request.headers_mut();
        for (name, value) in extra {
            headers.insert(name.clone(), value.clone());
        }
        let (status, body) = self.send(request, MAX_ANSWER_BYTES).await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(AttemptError::Status {
                status,
                body: snippet(&body),
            })
        }
    }

    /// One request of `method` (a JSON `body` when not empty) within the target's timeout:
    /// the answer's status and its body, cut at `max_answer` bytes, whatever the status.
    pub(crate) async fn request(
        &self,
        method: Method,
        body: Bytes,
        max_answer: usize,
    ) -> Result<(u16, Bytes), AttemptError> {
        let request = self.build(method, body)?;
        tokio::time::timeout(self.timeout, self.send(request, max_answer))
            .await
            .map_err(|_| AttemptError::Timeout(self.timeout))?
    }

    fn build(&self, method: Method, body: Bytes) -> Result<Request<Full<Bytes>>, AttemptError> {
        let mut request = Request::builder()
            .method(method)
            .uri(self.path.as_str())
            .header(header::HOST, self.authority.as_str())
            .header(
                header::USER_AGENT,
                concat!("mamori-collector/", env!("CARGO_PKG_VERSION")),
            );
        if !body.is_empty() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let mut request = request
            .body(Full::new(body))
            .map_err(|e| AttemptError::Http(e.to_string()))?;
        let headers = request.headers_mut();
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        Ok(request)
    }

    async fn send(
        &self,
        request: Request<Full<Bytes>>,
        max_answer: usize,
    ) -> Result<(u16, Bytes), AttemptError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| AttemptError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| AttemptError::Tls(e.to_string()))?;
                exchange(tls, request, max_answer).await
            }
            None => exchange(tcp, request, max_answer).await,
        }
    }
}

/// The start of an answer's body, printable, for a log line or an error.
pub(crate) fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

async fn exchange<S>(
    stream: S,
    request: Request<Full<Bytes>>,
    max_answer: usize,
) -> Result<(u16, Bytes), AttemptError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: hyper::Error| AttemptError::Http(e.to_string());
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
    // The connection future ends when the exchange does (or the task is aborted at the
    // deadline of a shutdown).
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = async {
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), max_answer)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok((status, body))
    }
    .await;
    drop(sender);
    conn.abort();
    result
}

/// A header value that `Debug` and hyper's logs never print.
pub(crate) fn sensitive(value: &str) -> Result<HeaderValue, NotifyError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        NotifyError::Invalid("a credential holds characters not allowed in an HTTP header".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}
