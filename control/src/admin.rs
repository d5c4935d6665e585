//! The admin API: JSON over HTTP on its own listener. Reads status, changes
//! splits, exports metrics. Every bad input is a 4xx with `{"error": ...}`
//! and changes nothing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::{Encoder, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::audit::{AuditQuery, AuditRecord, REFUSED};
use crate::auth::{self, Auth, Caller, Refusal};
use crate::controller::{Action, ChangeRequest, Controller};
use crate::status;
use cutover_proxy::{drain, Shared};

const MAX_BODY: usize = 64 * 1024;
/// The longest `?wait=` a drain request may hold the answer.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// Extra status providers (edge sync) plug in here.
pub type StatusExtra = Arc<dyn Fn() -> Value + Send + Sync>;

pub struct Admin {
    pub controller: Arc<Controller>,
    pub shared: Arc<Shared>,
    pub registry: Registry,
    /// Who may call what; swapped whole on a reload ([`Admin::set_auth`]).
    auth: ArcSwap<Auth>,
    /// False once shutdown has begun: `/readyz` answers 503.
    pub ready: Arc<AtomicBool>,
    /// Bound listeners at start: (service, address, preview pool).
    /// `/v1/status` shows the controller's list, which reloads update.
    pub listeners: Vec<(String, SocketAddr, Option<String>)>,
    pub extra: Vec<(&'static str, StatusExtra)>,
    requests: IntCounterVec,
    /// `cutover_admin_auth_failures_total` by reason, resolved once (so
    /// the family shows from the start): missing, wrong, forbidden.
    auth_failures: [IntCounter; 3],
}

type Resp = Response<Full<Bytes>>;

fn json_response(status: StatusCode, body: &Value) -> Resp {
    let mut bytes = serde_json::to_vec_pretty(body).unwrap_or_else(|_| b"{}".to_vec());
    bytes.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Resp {
    json_response(status, &json!({ "error": message.into() }))
}

fn method_not_allowed(allow: &'static str) -> Resp {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed here; allowed: {allow}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitBody {
    split: serde_json::Map<String, Value>,
    reason: Option<String>,
    expect_generation: Option<u64>,
    expect_run_id: Option<String>,
    who: Option<String>,
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchBody {
    to: String,
    reason: Option<String>,
    expect_generation: Option<u64>,
    expect_run_id: Option<String>,
    who: Option<String>,
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    reason: Option<String>,
    expect_generation: Option<u64>,
    expect_run_id: Option<String>,
    who: Option<String>,
}

impl Admin {
    pub fn new(
        controller: Arc<Controller>,
        shared: Arc<Shared>,
        registry: Registry,
        auth: Auth,
        listeners: Vec<(String, SocketAddr, Option<String>)>,
    ) -> Result<Admin, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                cutover_proxy::metrics::names::ADMIN_REQUESTS,
                "Admin API requests, by route and status code",
            ),
            &["route", "code"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                cutover_proxy::metrics::names::ADMIN_AUTH_FAILURES,
                "Admin API requests refused for their token: missing_token, wrong_token (401) or forbidden (403, a viewer asking for a change)",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(auth_failures.clone()))?;
        let auth_failures = [
            Refusal::Missing,
            Refusal::Wrong,
            Refusal::Forbidden {
                actor: String::new(),
            },
        ]
        .map(|r| auth_failures.with_label_values(&[r.label()]));
        controller.set_listeners(listeners.clone());
        Ok(Admin {
            controller,
            shared,
            registry,
            auth: ArcSwap::from_pointee(auth),
            ready: Arc::new(AtomicBool::new(true)),
            listeners,
            extra: Vec::new(),
            requests,
            auth_failures,
        })
    }

    /// Replaces the tokens (a config reload): requests from now on are
    /// checked against `auth`.
    pub fn set_auth(&self, auth: Auth) {
        self.auth.store(Arc::new(auth));
    }

    /// The one auth check of a request: the caller, or the 401/403 answer
    /// (counted, and recorded in the audit log).
    async fn authorize(
        &self,
        req: &Request<Incoming>,
        peer: SocketAddr,
        path: &str,
    ) -> Result<Caller, (&'static str, Resp)> {
        let auth = self.auth.load();
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let need = auth::need(req.method(), &segs, auth.metrics_public());
        let refusal = match auth.check(req.headers(), need) {
            Ok(caller) => return Ok(caller),
            Err(r) => r,
        };
        self.auth_failures[refusal.index()].inc();
        let (status, message) = match &refusal {
            Refusal::Missing | Refusal::Wrong => (
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token: send `Authorization: Bearer <token>`".to_string(),
            ),
            Refusal::Forbidden { actor } => (
                StatusCode::FORBIDDEN,
                format!("token `{actor}` has the viewer role: it may read status, drain, audit and metrics; {} {path} needs an operator's token", req.method()),
            ),
        };
        let mut r = AuditRecord::now(
            self.controller.run_id(),
            REFUSED,
            status.as_u16(),
            "",
            refusal.actor(),
        );
        (r.service, r.action) = match segs.as_slice() {
            // Bounded: the path is the caller's, who is not known here.
            ["v1", "services", service, op] => (truncated(service).into(), truncated(op).into()),
            _ => (
                String::new(),
                format!("{} {}", req.method(), truncated(path)),
            ),
        };
        r.source = Some(peer.to_string());
        r.generation = self.shared.snapshot.load().generation;
        r.detail = Some(match refusal {
            Refusal::Forbidden { .. } => "viewer token on an operator's endpoint".into(),
            _ => "missing or wrong bearer token".into(),
        });
        self.controller.audit_log().append_refused(r).await;
        let route = if status == StatusCode::FORBIDDEN {
            "forbidden"
        } else {
            "unauthorized"
        };
        Err((route, error(status, message)))
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<Resp, Infallible> {
        let path = req.uri().path().to_string();
        let refused = match self.cross_site(&req, &path, local) {
            Some(refused) => {
                self.audit_cross_site(&req, peer, &path).await;
                Err(refused)
            }
            None => self.authorize(&req, peer, &path).await,
        };
        let (route, resp) = match refused {
            Err(refused) => refused,
            Ok(caller) => self.route(req, peer, &path, caller).await,
        };
        self.requests
            .with_label_values(&[route, resp.status().as_str()])
            .inc();
        Ok(resp)
    }

    /// Records a request refused as cross-site (403 without tokens).
    async fn audit_cross_site(&self, req: &Request<Incoming>, peer: SocketAddr, path: &str) {
        let action = format!("{} {}", req.method(), truncated(path));
        let mut r = AuditRecord::now(
            self.controller.run_id(),
            REFUSED,
            StatusCode::FORBIDDEN.as_u16(),
            &action,
            auth::ANONYMOUS,
        );
        r.source = Some(peer.to_string());
        r.generation = self.shared.snapshot.load().generation;
        r.detail = Some("cross-site request: Host or Origin is not the admin listener".into());
        self.controller.audit_log().append_refused(r).await;
    }

    /// Without a token the admin API is open to anything that can reach
    /// its (loopback) listener, a browser on the host included: a page
    /// could POST a switch as a "simple" request (no preflight), or
    /// rebind its own DNS name to 127.0.0.1 and read the answers. So a
    /// request whose `Host` (or `Origin`, when it has one) is not this
    /// listener's own address is refused with 403 (`/healthz` and
    /// `/readyz` aside), and every change must be `application/json`
    /// (415, in [`Admin::change`]), which a page cannot send cross-site
    /// without a preflight that cutover never grants. With a token, the
    /// token is the guard: a browser never adds it by itself.
    fn cross_site(
        &self,
        req: &Request<Incoming>,
        path: &str,
        local: SocketAddr,
    ) -> Option<(&'static str, Resp)> {
        if self.auth.load().required() || matches!(path, "/healthz" | "/readyz") {
            return None;
        }
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        let refuse = |message: String| Some(("forbidden", error(StatusCode::FORBIDDEN, message)));
        if !host.is_some_and(|h| own_authority(h, local)) {
            return refuse(format!(
                "Host `{}` is not this admin listener's address; use {} (requests for other names are refused against DNS rebinding)",
                host.unwrap_or(""),
                own_authorities(local).join(", ")
            ));
        }
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let ok = origin
                .to_str()
                .ok()
                .and_then(|o| o.strip_prefix("http://"))
                .is_some_and(|a| own_authority(a, local));
            if !ok {
                return refuse(format!(
                    "cross-site request refused: Origin `{}` is not this admin listener (http://{})",
                    String::from_utf8_lossy(origin.as_bytes()),
                    own_authorities(local).join(", http://")
                ));
            }
        }
        None
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        path: &str,
        caller: Caller,
    ) -> (&'static str, Resp) {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let method = req.method().clone();
        match segs.as_slice() {
            ["healthz"] => (
                "healthz",
                json_response(StatusCode::OK, &json!({"status": "ok"})),
            ),
            ["readyz"] => ("readyz", self.readyz()),
            ["metrics"] => match method {
                Method::GET => ("metrics", self.metrics()),
                _ => ("metrics", method_not_allowed("GET")),
            },
            ["v1", "status"] => match method {
                Method::GET => ("status", json_response(StatusCode::OK, &self.status())),
                _ => ("status", method_not_allowed("GET")),
            },
            ["v1", "audit"] => match method {
                Method::GET => ("audit", self.audit(req.uri().query()).await),
                _ => ("audit", method_not_allowed("GET")),
            },
            ["v1", "reload"] => match method {
                Method::POST => ("reload", self.reload(&req, peer, &caller.actor).await),
                _ => ("reload", method_not_allowed("POST")),
            },
            ["v1", "services", service, op] => {
                let service = service.to_string();
                self.service_route(req, (peer, caller), service, op, method, path)
                    .await
            }
            _ => ("unknown", not_found(path)),
        }
    }

    /// `/readyz`: 200 until shutdown begins, then 503.
    fn readyz(&self) -> Resp {
        if self.ready.load(Ordering::Relaxed) {
            json_response(StatusCode::OK, &json!({"status": "ready"}))
        } else {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "shutting down"}),
            )
        }
    }

    /// `/v1/services/{service}/{op}`.
    async fn service_route(
        &self,
        req: Request<Incoming>,
        peer: (SocketAddr, Caller),
        service: String,
        op: &str,
        method: Method,
        path: &str,
    ) -> (&'static str, Resp) {
        match (op, method) {
            ("split", Method::PUT) => (
                "split",
                self.change(req, &peer, service, ChangeKind::Split).await,
            ),
            ("split", _) => ("split", method_not_allowed("PUT")),
            ("switch", Method::POST) => (
                "switch",
                self.change(req, &peer, service, ChangeKind::Switch).await,
            ),
            ("switch", _) => ("switch", method_not_allowed("POST")),
            ("rollback", Method::POST) => (
                "rollback",
                self.change(req, &peer, service, ChangeKind::Rollback).await,
            ),
            ("rollback", _) => ("rollback", method_not_allowed("POST")),
            ("drain", Method::GET) => ("drain", self.drain(&service, req.uri().query()).await),
            ("drain", _) => ("drain", method_not_allowed("GET")),
            _ => ("unknown", not_found(path)),
        }
    }

    /// `GET /v1/services/{service}/drain[?pool=blue][&wait=30s]`.
    async fn drain(&self, service: &str, query: Option<&str>) -> Resp {
        let (pool, wait) = match drain_query(query) {
            Ok(q) => q,
            Err((status, message)) => return error(status, message),
        };
        let started = tokio::time::Instant::now();
        loop {
            let Some(pools) = drain::status(&self.shared, service) else {
                let names: Vec<String> = self
                    .shared
                    .snapshot
                    .load()
                    .services
                    .iter()
                    .map(|s| s.name().to_string())
                    .collect();
                return error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "unknown service `{service}`; services: {}",
                        names.join(", ")
                    ),
                );
            };
            let drained = match &pool {
                Some(name) => match pools.iter().find(|p| &p.pool == name) {
                    Some(p) => p.drained,
                    None => {
                        let names: Vec<&str> = pools.iter().map(|p| p.pool.as_str()).collect();
                        return error(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            format!(
                                "service `{service}` has no pool `{name}`; pools: {}",
                                names.join(", ")
                            ),
                        );
                    }
                },
                None => pools.iter().filter(|p| p.weight == 0).all(|p| p.drained),
            };
            if drained || started.elapsed() >= wait {
                return json_response(
                    StatusCode::OK,
                    &json!({
                        "service": service,
                        "generation": self.shared.snapshot.load().generation,
                        "pool": pool,
                        "drained": drained,
                        "waited_ms": started.elapsed().as_millis() as u64,
                        "pools": pools.iter().map(|p| p.to_json()).collect::<Vec<_>>(),
                    }),
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn metrics(&self) -> Resp {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode metrics: {e}"),
            );
        }
        let mut r = Response::new(Full::new(Bytes::from(buf)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    }

    /// `GET /v1/audit[?service=web][&limit=50][&since=2026-11-30T01:00:00Z]`:
    /// newest first.
    async fn audit(&self, query: Option<&str>) -> Resp {
        let q = match audit_query(query) {
            Ok(q) => q,
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        };
        let log = self.controller.audit_log();
        match log.read(q).await {
            Ok(entries) => json_response(
                StatusCode::OK,
                &json!({
                    "run_id": log.run_id(),
                    "file": log.path().map(|p| p.display().to_string()),
                    "entries": entries,
                }),
            ),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }

    pub fn status(&self) -> Value {
        let mut v = status::status_json(&self.controller, &self.controller.listeners());
        v["ready"] = json!(self.ready.load(Ordering::Relaxed));
        for (name, f) in &self.extra {
            v[*name] = f();
        }
        v
    }

    async fn change(
        &self,
        req: Request<Incoming>,
        (peer, caller): &(SocketAddr, Caller),
        service: String,
        kind: ChangeKind,
    ) -> Resp {
        let svc = &service;
        let refuse = |status: StatusCode, message: String| async move {
            let mut r = AuditRecord::now(
                self.controller.run_id(),
                REFUSED,
                status.as_u16(),
                kind.name(),
                &caller.actor,
            );
            r.service = svc.clone();
            r.source = Some(peer.to_string());
            r.generation = self.shared.snapshot.load().generation;
            r.detail = Some(message.clone());
            self.controller.audit_log().append_refused(r).await;
            error(status, message)
        };
        if !is_json(&req) {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a change needs `Content-Type: application/json` (with a JSON body, or none for a rollback)".into(),
            ).await;
        }
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("cannot read the request body (at most {MAX_BODY} bytes): {e}"),
                )
                .await
            }
        };
        let request = match change_request(&body, *peer, &caller.actor, service.clone(), kind) {
            Ok(r) => r,
            Err((status, message)) => return refuse(status, message).await,
        };
        match self.controller.apply(request).await {
            Ok(outcome) => json_response(StatusCode::OK, &json!(outcome)),
            Err(e) => error(e.status(), e.to_string()),
        }
    }
}

impl Admin {
    /// `POST /v1/reload`: reads and applies the config file; 200 with the
    /// report, 422 with why nothing changed. (The audit of reloads is the
    /// controller's reload hook.)
    async fn reload(&self, req: &Request<Incoming>, peer: SocketAddr, actor: &str) -> Resp {
        if !is_json(req) {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a reload needs `Content-Type: application/json` (the body may be empty)",
            );
        }
        let trigger = format!("POST /v1/reload by {actor} from {peer}");
        match self.controller.request_reload(trigger).await {
            Some(Ok(report)) => json_response(StatusCode::OK, &json!(report)),
            Some(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
            None => error(
                StatusCode::NOT_IMPLEMENTED,
                "this cutover was not started from a config file: nothing to reload",
            ),
        }
    }
}

/// Whether the request says its body is JSON (`application/json`,
/// parameters such as `charset` allowed).
fn is_json(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// The names a client on this host may call the admin listener by (the
/// `Host` of a request to it): `127.0.0.1`, `localhost` and `[::1]` with
/// the listener's port, and the address the connection came in on.
fn own_authorities(local: SocketAddr) -> Vec<String> {
    let port = local.port();
    let mut out = vec![
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ];
    let bound = local.to_string();
    if !out.contains(&bound) {
        out.push(bound);
    }
    out
}

/// Whether `authority` (a `Host` value, or an `Origin` without its
/// scheme) is one of [`own_authorities`]; no port means 80.
fn own_authority(authority: &str, local: SocketAddr) -> bool {
    let a = authority.trim().trim_end_matches('/');
    let with_port;
    let a = match a.rsplit_once(':') {
        Some((_, p)) if !p.contains(']') => a,
        _ => {
            with_port = format!("{a}:80");
            with_port.as_str()
        }
    };
    own_authorities(local)
        .iter()
        .any(|o| o.eq_ignore_ascii_case(a))
}

/// A drain request's query: `pool` (none: every pool at weight 0) and
/// `wait` (zero unless given); refused with the status and message of the
/// error answer.
fn drain_query(query: Option<&str>) -> Result<(Option<String>, Duration), (StatusCode, String)> {
    let mut pool: Option<String> = None;
    let mut wait = Duration::ZERO;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "pool" => pool = Some(v.to_string()),
            "wait" => match cutover_config::parse_duration(v) {
                Ok(d) if d <= MAX_WAIT => wait = d,
                Ok(_) => {
                    return Err((
                        StatusCode::BAD_REQUEST,
                        format!(
                            "wait `{v}` is too long; at most {}",
                            humantime::format_duration(MAX_WAIT)
                        ),
                    ))
                }
                Err(e) => return Err((StatusCode::BAD_REQUEST, format!("query `wait`: {e}"))),
            },
            other => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    format!("unknown query parameter `{other}`; allowed: pool, wait"),
                ))
            }
        }
    }
    Ok((pool, wait))
}

/// `GET /v1/audit`'s query: `service`, `limit` (1 to 1000, default 100)
/// and `since` (RFC 3339 in UTC).
fn audit_query(query: Option<&str>) -> Result<AuditQuery, String> {
    let mut q = AuditQuery {
        limit: 100,
        ..AuditQuery::default()
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "service" => q.service = Some(v.to_string()),
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=crate::audit::MAX_LIMIT).contains(&n) => q.limit = n,
                _ => {
                    return Err(format!(
                        "limit `{v}`: allowed: a whole number from 1 to {}",
                        crate::audit::MAX_LIMIT
                    ))
                }
            },
            "since" => match humantime::parse_rfc3339_weak(&v.replace("%3A", ":").replace("%3a", ":")) {
                Ok(t) => q.since = Some(t),
                Err(e) => {
                    return Err(format!(
                        "since `{v}` is not a time ({e}); write RFC 3339 in UTC, like 2026-11-30T01:00:00Z"
                    ))
                }
            },
            other => {
                return Err(format!(
                    "unknown query parameter `{other}`; allowed: service, limit, since"
                ))
            }
        }
    }
    Ok(q)
}

/// At most 100 characters of a path, for the audit log.
fn truncated(path: &str) -> &str {
    match path.char_indices().nth(100) {
        Some((i, _)) => &path[..i],
        None => path,
    }
}

/// The [`ChangeRequest`] a change's JSON body asks for, from `actor` (the
/// token's name) at `peer`; refused with the status and message of the
/// error answer: a malformed body is a 400, a weight that is not a whole
/// number a 422. The body's `who` is kept as `requested_by` (unverified).
pub(crate) fn change_request(
    body: &[u8],
    peer: SocketAddr,
    actor: &str,
    service: String,
    kind: ChangeKind,
) -> Result<ChangeRequest, (StatusCode, String)> {
    let parse_err = |e: serde_json::Error, example: &str| {
        (
            StatusCode::BAD_REQUEST,
            format!("malformed JSON body: {e}; expected like {example}"),
        )
    };
    let source = Some(peer.to_string());
    let request = match kind {
        ChangeKind::Split => {
            let example = r#"{"split": {"blue": 90, "green": 10}, "reason": "canary", "expect_generation": 7}"#;
            let b: SplitBody = match serde_json::from_slice(body) {
                Ok(b) => b,
                Err(e) => return Err(parse_err(e, example)),
            };
            let mut pairs = Vec::new();
            for (k, v) in b.split {
                match v.as_i64() {
                    Some(w) => pairs.push((k, w)),
                    None => {
                        return Err((
                            StatusCode::UNPROCESSABLE_ENTITY,
                            format!("weight for pool `{k}` must be a whole number, got {v}"),
                        ))
                    }
                }
            }
            ChangeRequest {
                service,
                action: Action::Split(pairs),
                reason: b.reason,
                expect_generation: b.expect_generation,
                expect_run_id: b.expect_run_id,
                who: actor.to_string(),
                source: source.clone(),
                requested_by: b.who,
                force: b.force,
            }
        }
        ChangeKind::Switch => {
            let b: SwitchBody = match serde_json::from_slice(body) {
                Ok(b) => b,
                Err(e) => return Err(parse_err(e, r#"{"to": "green", "reason": "release 42"}"#)),
            };
            ChangeRequest {
                service,
                action: Action::Switch(b.to),
                reason: b.reason,
                expect_generation: b.expect_generation,
                expect_run_id: b.expect_run_id,
                who: actor.to_string(),
                source: source.clone(),
                requested_by: b.who,
                force: b.force,
            }
        }
        ChangeKind::Rollback => {
            let b: RollbackBody = if body.iter().all(|c| c.is_ascii_whitespace()) {
                RollbackBody::default()
            } else {
                match serde_json::from_slice(body) {
                    Ok(b) => b,
                    Err(e) => {
                        return Err(parse_err(e, r#"{"reason": "errors on green"} or no body"#))
                    }
                }
            };
            ChangeRequest {
                service,
                action: Action::Rollback,
                reason: b.reason,
                expect_generation: b.expect_generation,
                expect_run_id: b.expect_run_id,
                who: actor.to_string(),
                source: source.clone(),
                requested_by: b.who,
                force: false,
            }
        }
    };
    Ok(request)
}

#[derive(Clone, Copy)]
pub(crate) enum ChangeKind {
    Split,
    Switch,
    Rollback,
}

impl ChangeKind {
    fn name(self) -> &'static str {
        match self {
            ChangeKind::Split => "split",
            ChangeKind::Switch => "switch",
            ChangeKind::Rollback => "rollback",
        }
    }
}

fn not_found(path: &str) -> Resp {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint `{path}`; endpoints: GET /v1/status, PUT /v1/services/NAME/split, POST /v1/services/NAME/switch, POST /v1/services/NAME/rollback, GET /v1/services/NAME/drain, GET /v1/audit, POST /v1/reload, GET /metrics, GET /healthz, GET /readyz"
        ),
    )
}

/// Serves the admin API on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut shutdown: watch::Receiver<bool>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Out of descriptors, accept fails every time it is tried: logged at
    // most once a second.
    let mut last_logged: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        if last_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            tracing::warn!("admin accept failed: {e}");
                            last_logged = Some(tokio::time::Instant::now());
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(local) = stream.local_addr() else {
                    continue;
                };
                let admin = admin.clone();
                let svc = service_fn(move |req| admin.clone().handle(req, peer, local));
                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("admin connection error: {e}");
                    }
                });
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_listener_answers_to_loopback_names_and_its_own_address_only() {
        let local: SocketAddr = "127.0.0.1:9901".parse().unwrap();
        for ok in [
            "127.0.0.1:9901",
            "localhost:9901",
            "LOCALHOST:9901",
            "[::1]:9901",
        ] {
            assert!(own_authority(ok, local), "{ok}");
        }
        for bad in [
            "evil.example:9901",
            "127.0.0.1:9902",
            "127.0.0.1",
            "localhost",
            "attacker.localhost:9901",
            "",
        ] {
            assert!(!own_authority(bad, local), "{bad}");
        }
        let on80: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert!(own_authority("localhost", on80));
        let v6: SocketAddr = "[::1]:9901".parse().unwrap();
        assert!(own_authority("[::1]:9901", v6));
        assert!(!own_authority("[::2]:9901", v6));
    }
}
