//! TLS for the syslog receiver (RFC 5425): the server configuration from PEM files.
//!
//! Owns reading the certificate chain, the private key and the client CAs, with rustls and its
//! `ring` provider. Errors name the file and what was wrong with it, never its contents: a
//! private key must not reach a log, even in part.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("reading the certificate file {path}: {reason}")]
    Certificates { path: PathBuf, reason: String },
    #[error("reading the private key file {path}: {reason}")]
    PrivateKey { path: PathBuf, reason: String },
    #[error("reading the client CA file {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("building the TLS configuration: {0}")]
    Rustls(String),
}

/// What went wrong in a PEM file, without echoing any of its bytes.
fn pem_reason(e: &pem::Error) -> String {
    match e {
        pem::Error::Io(io) => format!("I/O error: {}", io.kind()),
        pem::Error::NoItemsFound => "no PEM section of the expected kind".into(),
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a malformed BEGIN line".into(),
        pem::Error::Base64Decode(_) => "invalid base64 in a PEM section".into(),
        pem::Error::SectionTooLarge => "a PEM section is too large".into(),
        _ => "invalid PEM".into(),
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, pem::Error> {
    let certs = CertificateDer::pem_file_iter(path)?.collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(pem::Error::NoItemsFound);
    }
    Ok(certs)
}

/// Builds the server configuration: TLS 1.2 and 1.3, `ring` cryptography, and client
/// certificates required and verified against `client_ca_file` when it is given.
pub fn load_tls_server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certificates(cert_file).map_err(|e| TlsConfigError::Certificates {
        path: cert_file.to_owned(),
        reason: pem_reason(&e),
    })?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsConfigError::PrivateKey {
        path: key_file.to_owned(),
        reason: pem_reason(&e),
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
    let builder = match client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let ca_err = |reason: String| TlsConfigError::ClientCa {
                path: ca_file.to_owned(),
                reason,
            };
            let cas = read_certificates(ca_file).map_err(|e| ca_err(pem_reason(&e)))?;
            let mut roots = RootCertStore::empty();
            let (_added, ignored) = roots.add_parsable_certificates(cas);
            if ignored > 0 || roots.is_empty() {
                return Err(ca_err(format!(
                    "{ignored} certificate(s) are not usable as trust anchors"
                )));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ca_err(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // rustls's error says what is wrong (key does not match, unsupported algorithm) without
    // the key's bytes.
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
    Ok(Arc::new(config))
}
