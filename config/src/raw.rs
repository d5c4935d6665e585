//! The config file exactly as written: serde types with every field optional,
//! so that validation (not serde) decides what is missing and says so with
//! the key's line. Unknown keys are collected by `serde_ignored`, not refused
//! one at a time, so all of them are reported together.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    pub workers: Option<i64>,
    pub state_file: Option<String>,
    pub shutdown_timeout: Option<String>,
    pub shutdown_delay: Option<String>,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub services: OrderedMap<RawService>,
    pub edge: Option<crate::edge::RawEdge>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub token: Option<String>,
    pub tokens: Option<Vec<RawAdminToken>>,
    pub metrics_public: Option<bool>,
    pub audit_log: Option<String>,
    pub audit_max_bytes: Option<i64>,
    pub audit_keep: Option<i64>,
}

/// `[[admin.tokens]]`: a named token with a role; its secret comes from a
/// file or an environment variable, never from the config itself.
#[derive(Debug, Default, Deserialize)]
pub struct RawAdminToken {
    pub name: Option<String>,
    pub role: Option<String>,
    pub secret_file: Option<String>,
    pub secret_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawService {
    pub split: Option<OrderedMap<i64>>,
    pub sticky: Option<String>,
    pub cookie: Option<RawCookie>,
    pub drain_timeout: Option<String>,
    pub override_header: Option<String>,
    pub override_token: Option<String>,
    pub access_log: Option<bool>,
    pub timeouts: Option<RawTimeouts>,
    pub limits: Option<RawLimits>,
    pub health_check: Option<RawHealthCheck>,
    pub failover: Option<bool>,
    pub retries: Option<i64>,
    pub outlier: Option<RawOutlier>,
    pub slow_start: Option<String>,
    pub allowed_upgrades: Option<Vec<String>>,
    pub error_detail: Option<String>,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub pools: OrderedMap<RawPool>,
}

/// `[services.NAME.health_check]`, or a pool's override of some of it.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawHealthCheck {
    pub path: Option<String>,
    pub host: Option<String>,
    pub expect: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy_threshold: Option<i64>,
    pub unhealthy_threshold: Option<i64>,
}

/// `[services.NAME.outlier]`: passive ejection.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawOutlier {
    pub enabled: Option<bool>,
    pub consecutive_failures: Option<i64>,
    pub count_5xx: Option<bool>,
    pub base_ejection: Option<String>,
    pub max_ejection: Option<String>,
    pub max_ejected_percent: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCookie {
    pub name: Option<String>,
    pub max_age: Option<String>,
    pub secure: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTimeouts {
    pub connect: Option<String>,
    pub response_header: Option<String>,
    pub header_read: Option<String>,
    pub idle: Option<String>,
    pub h2_ping_interval: Option<String>,
    pub h2_ping_timeout: Option<String>,
    pub client_idle: Option<String>,
    pub backend_idle: Option<String>,
    pub tunnel_idle: Option<String>,
    pub tcp_keepalive: Option<String>,
    pub tcp_keepalive_interval: Option<String>,
    pub tcp_keepalive_probes: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLimits {
    pub max_connections: Option<i64>,
    pub max_header_bytes: Option<i64>,
    pub max_headers: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawListener {
    pub listen: Option<String>,
    pub pool: Option<String>,
    pub mode: Option<String>,
    pub proxy_protocol: Option<bool>,
    pub trust_forwarded: Option<bool>,
    pub tls: Option<RawTls>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawPool {
    pub backends: Option<Vec<RawBackend>>,
    pub protocol: Option<String>,
    pub send_proxy_protocol: Option<bool>,
    pub health_check: Option<RawHealthCheck>,
    pub tls: Option<RawUpstreamTls>,
}

/// A pool's `tls`: `true`, or a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawUpstreamTls {
    On(bool),
    Table(RawUpstreamTlsTable),
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawUpstreamTlsTable {
    pub ca_file: Option<String>,
    pub server_name: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub insecure_skip_verify: Option<bool>,
}

/// A backend: `"10.0.1.10:8080"` or `{ addr = "...", weight = 2, protocol = "h2c" }`.
#[derive(Debug, Default)]
pub struct RawBackend {
    pub addr: Option<String>,
    pub weight: Option<i64>,
    pub protocol: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawBackendTable {
    addr: Option<String>,
    weight: Option<i64>,
    protocol: Option<String>,
}

impl<'de> Deserialize<'de> for RawBackend {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawBackend;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a backend address string like \"10.0.1.10:8080\" or a table like { addr = \"10.0.1.10:8080\", weight = 2 }")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RawBackend, E> {
                Ok(RawBackend {
                    addr: Some(s.to_string()),
                    ..RawBackend::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawBackend, A::Error> {
                let t = RawBackendTable::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(RawBackend {
                    addr: t.addr,
                    weight: t.weight,
                    protocol: t.protocol,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A table whose keys keep the order they have in the file (pool order is
/// ticket order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    let v = map.next_value::<V>()?;
                    out.push((k, v));
                }
                Ok(OrderedMap(out))
            }
        }
        d.deserialize_map(MapVisitor(PhantomData))
    }
}

/// `[services.NAME.listeners.tls]`: TLS termination on a listener.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawTls {
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    pub alpn: Option<Vec<String>>,
    pub default_certificate: Option<String>,
    pub handshake_timeout: Option<String>,
    pub min_version: Option<String>,
}

/// One `[[services.NAME.listeners.tls.certificates]]`: PEM files.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawCertificate {
    pub cert: Option<String>,
    pub key: Option<String>,
}
