//! Picks a listener's certificate by SNI: exact names first, then
//! wildcards (`*.example.com` covers one label), else the default.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::LoadedCert;

#[derive(Debug)]
pub struct SniResolver {
    keys: Vec<Arc<CertifiedKey>>,
    exact: HashMap<String, usize>,
    /// `example.com` for a certificate with `*.example.com`.
    wildcard: HashMap<String, usize>,
    default: usize,
}

impl SniResolver {
    /// `certs` in config order (never empty); `default` is the index of the
    /// default certificate. The first certificate that names a name keeps it.
    pub fn new(certs: &[LoadedCert], default: usize) -> SniResolver {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, c) in certs.iter().enumerate() {
            for n in &c.info.names {
                match n.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()).or_insert(i),
                    None => exact.entry(n.clone()).or_insert(i),
                };
            }
        }
        SniResolver {
            keys: certs.iter().map(|c| c.key.clone()).collect(),
            exact,
            wildcard,
            default,
        }
    }

    /// The certificate for `name` (an SNI host name), if one covers it.
    pub fn find(&self, name: &str) -> Option<usize> {
        let name = name.trim_end_matches('.');
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if let Some(i) = self.exact.get(name) {
            return Some(*i);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).copied()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let i = hello
            .server_name()
            .and_then(|n| self.find(n))
            .unwrap_or(self.default);
        self.keys.get(i).cloned()
    }
}
