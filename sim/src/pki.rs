//! A throwaway PKI for the demo and the local drill: one CA, the collector's server
//! certificate and one agent's client certificate, made in-process (rcgen, `ring`) and written
//! as PEM files, so that a fresh machine needs neither openssl nor `deploy/make-certs.sh`.
//! Never for a real deployment: the CA key is written next to the certificates.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::error::SimError;

/// The PEM files made by [`make`].
#[derive(Clone, Debug)]
pub struct PkiFiles {
    pub ca_cert: PathBuf,
    pub collector_cert: PathBuf,
    pub collector_key: PathBuf,
    pub agent_cert: PathBuf,
    pub agent_key: PathBuf,
}

fn pki_error(what: &str, e: rcgen::Error) -> SimError {
    SimError::Config(format!("making the {what} certificate: {e}"))
}

/// Makes a CA and certificates for `collector` (server auth) and `agent` (client auth), both
/// DNS names carried as subject alternative names, in `dir` (created if missing).
pub fn make(dir: &Path, collector: &str, agent: &str) -> Result<PkiFiles, SimError> {
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate().map_err(|e| pki_error("CA", e))?;
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_error("CA", e))?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "Mamori throwaway demo CA");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = p.self_signed(&ca_key).map_err(|e| pki_error("CA", e))?;
    let ca_cert = dir.join("ca.crt");
    std::fs::write(&ca_cert, ca.pem())?;
    let leaf =
        |name: &str, usage: ExtendedKeyUsagePurpose| -> Result<(PathBuf, PathBuf), SimError> {
            let key = KeyPair::generate().map_err(|e| pki_error(name, e))?;
            let mut p =
                CertificateParams::new(vec![name.to_owned()]).map_err(|e| pki_error(name, e))?;
            p.distinguished_name.push(DnType::CommonName, name);
            p.extended_key_usages = vec![usage];
            let cert = p
                .signed_by(&key, &ca, &ca_key)
                .map_err(|e| pki_error(name, e))?;
            let cert_path = dir.join(format!("{name}.crt"));
            let key_path = dir.join(format!("{name}.key"));
            std::fs::write(&cert_path, cert.pem())?;
            write_private(&key_path, &key.serialize_pem())?;
            Ok((cert_path, key_path))
        };
    let (collector_cert, collector_key) = leaf(collector, ExtendedKeyUsagePurpose::ServerAuth)?;
    let (agent_cert, agent_key) = leaf(agent, ExtendedKeyUsagePurpose::ClientAuth)?;
    Ok(PkiFiles {
        ca_cert,
        collector_cert,
        collector_key,
        agent_cert,
        agent_key,
    })
}

/// Writes a secret (key, token) readable by its owner only where the platform allows it.
pub fn write_private(path: &Path, contents: &str) -> Result<(), SimError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    std::io::Write::write_all(&mut file, contents.as_bytes())?;
    Ok(())
}
