//! The operator's side of the HTTP API from the command line (`mamori-collector normal`,
//! `relearn`, `audit`): one request per command with the token read from a file, over plain
//! HTTP or HTTPS (a TLS-terminating proxy in front of the API) trusting only `--ca-file`. It
//! uses the notifiers' HTTP client, so there is one HTTP client stack in the collector.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;

use crate::notify::config::{load_roots, load_secret};
use crate::notify::http::{HttpTarget, sensitive, snippet, tls_connector};

/// Longest answer read (an audit list of the API's maximum 10 000 entries fits).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Why a command failed; the message is what the operator sees.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Setup(String),
    #[error("{method} {url}: {reason}")]
    Transport {
        method: Method,
        url: String,
        reason: String,
    },
    /// The API answered with an error (`{"error": "..."}`).
    #[error("{method} {url}: {status}: {message}")]
    Refused {
        method: Method,
        url: String,
        status: u16,
        message: String,
    },
}

/// Where the API is and how to authenticate to it.
pub struct ApiClient {
    base: String,
    connector: Option<tokio_rustls::TlsConnector>,
    authorization: hyper::header::HeaderValue,
    timeout: Duration,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// `api`: the API's base URL (`http://127.0.0.1:9104`); `token_file`: a file whose first
    /// line is the bearer token; `ca_file`: the CA to trust for an `https` URL.
    pub fn new(
        api: &str,
        token_file: &Path,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<ApiClient, ClientError> {
        crate::notify::config::parse_url(api).map_err(ClientError::Setup)?;
        let token = load_secret(token_file).map_err(ClientError::Setup)?;
        let authorization = sensitive(&format!("Bearer {}", token.expose()))
            .map_err(|e| ClientError::Setup(format!("{}: {e}", token_file.display())))?;
        let connector = match ca_file {
            Some(path) => Some(
                tls_connector(load_roots(path).map_err(ClientError::Setup)?)
                    .map_err(|e| ClientError::Setup(e.to_string()))?,
            ),
            None => None,
        };
        Ok(ApiClient {
            base: api.trim_end_matches('/').to_owned(),
            connector,
            authorization,
            timeout,
        })
    }

    /// One request; the answer's JSON on a 2xx status, the API's error message otherwise.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let transport = |reason: String| ClientError::Transport {
            method: method.clone(),
            url: url.clone(),
            reason,
        };
        let target = HttpTarget::new(
            &self.base,
            path,
            self.connector.as_ref(),
            self.timeout,
            vec![(hyper::header::AUTHORIZATION, self.authorization.clone())],
        )
        .map_err(|e| transport(e.to_string()))?;
        let body = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v).map_err(|e| transport(e.to_string()))?),
            None => Bytes::new(),
        };
        let (status, answer) = target
            .request(method.clone(), body, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let json: Option<serde_json::Value> = serde_json::from_slice(&answer).ok();
        if (200..300).contains(&status) {
            return json.ok_or_else(|| transport("the answer is not JSON".into()));
        }
        let message = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(|e| e.as_str())
            .map_or_else(|| snippet(&answer), str::to_owned);
        Err(ClientError::Refused {
            method,
            url,
            status,
            message,
        })
    }
}
