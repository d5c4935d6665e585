//! Certificate/key pairs from PEM files: read, parsed, checked (the key
//! matches the certificate, the chain parses, not expired) before anything
//! uses them. Errors name the config key and line of the pair.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cutover_config::{CertificateFiles, ConfigError};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// One loaded pair and what it says about itself.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// What status shows of a certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct CertInfo {
    /// DNS names it covers (SAN entries, lower case; `*.example.com` for
    /// wildcards). The subject's CN when it has no SAN DNS entry.
    pub names: Vec<String>,
    pub issuer: String,
    /// Not valid after, seconds since the Unix epoch.
    pub not_after: i64,
    /// The certificate file.
    pub file: String,
}

impl CertInfo {
    pub fn expired_at(&self, now: SystemTime) -> bool {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.not_after < now
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "names": self.names,
            "issuer": self.issuer,
            "not_after": self.not_after,
            "file": self.file,
        })
    }
}

/// Reads and checks one pair. Expiry is not an error here (the caller
/// decides: a warning at start, a refusal on rotation).
pub fn load(files: &CertificateFiles) -> Result<LoadedCert, ConfigError> {
    let chain = read_chain(&files.cert).map_err(|e| files.cert_at.error(e))?;
    let key = read_key(&files.key).map_err(|e| files.key_at.error(e))?;
    let provider = super::provider();
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        files.key_at.error(format!(
            "{}: not a usable private key ({e}); RSA, ECDSA (P-256, P-384) or Ed25519 in PEM",
            files.key.display()
        ))
    })?;
    let certified = CertifiedKey::new(chain, signing);
    if let Err(e) = certified.keys_match() {
        return Err(files.key_at.error(format!(
            "{} does not match the certificate in {} ({e})",
            files.key.display(),
            files.cert.display()
        )));
    }
    let info = info(&certified.cert[0], &files.cert).map_err(|e| files.cert_at.error(e))?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        info,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{shown}: not a PEM certificate chain ({e})"))?;
    if chain.is_empty() {
        return Err(format!(
            "{shown} holds no certificate (a PEM file with BEGIN CERTIFICATE blocks, the server's first)"
        ));
    }
    for (i, der) in chain.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(der) {
            return Err(format!(
                "{shown}: certificate {} does not parse ({e})",
                i + 1
            ));
        }
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        format!("{shown}: no private key in it ({e}); a PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block")
    })
}

fn info(der: &CertificateDer<'_>, file: &Path) -> Result<CertInfo, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("{}: does not parse ({e})", file.display()))?;
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    Ok(CertInfo {
        names,
        issuer: cert.issuer().to_string(),
        not_after: cert.validity().not_after.timestamp(),
        file: file.display().to_string(),
    })
}
