//! Who may call the admin API: named bearer tokens with roles. One call
//! per request ([`Auth::check`]) says whether the request may go on and
//! who it is (the actor the audit log names).
//!
//! - No token configured: the API is open (its listener is loopback; the
//!   config refuses anything else); the actor is `anonymous`.
//! - Tokens configured: every endpoint but `/healthz`, `/readyz` (and
//!   `/metrics` with `metrics_public`) needs `Authorization: Bearer
//!   <secret>`. A missing or wrong one is a 401 that does not say which; a
//!   viewer on anything but a read is a 403.
//!
//! The secret is compared with every token's in constant time, all of them
//! each time, so the answer's timing tells neither whether a prefix
//! matched nor which token it was close to.

use cutover_config::secrets::ResolvedToken;
use cutover_config::Role;
use http::{header, HeaderMap, Method};

/// The actor of a request when the API needs no token.
pub const ANONYMOUS: &str = "anonymous";
/// The actor of a request refused for its token.
pub const UNKNOWN: &str = "unknown";

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health checks (and `/metrics` when public).
    Open,
    /// Any token: status, drain, audit, metrics.
    Read,
    /// An operator's token: every change, and any endpoint not known to
    /// be a read (a new endpoint is an operator's until said otherwise).
    Change,
}

/// Which endpoints are open and which are reads, by method and path
/// segments; everything else needs an operator.
pub fn need(method: &Method, segs: &[&str], metrics_public: bool) -> Need {
    match segs {
        ["healthz"] | ["readyz"] => Need::Open,
        ["metrics"] if metrics_public => Need::Open,
        ["metrics"] | ["v1", "status"] | ["v1", "audit"] => Need::Read,
        ["v1", "services", _, "drain"] if method == Method::GET => Need::Read,
        _ => Need::Change,
    }
}

/// The caller a request was let through as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, or [`ANONYMOUS`] when the API needs none.
    pub actor: String,
    /// `None` without tokens (everything allowed).
    pub role: Option<Role>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no bearer token.
    Missing,
    /// 401: a token that matches none.
    Wrong,
    /// 403: a viewer asked for a change.
    Forbidden { actor: String },
}

impl Refusal {
    /// The `reason` label of `cutover_admin_auth_failures_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing_token",
            Refusal::Wrong => "wrong_token",
            Refusal::Forbidden { .. } => "forbidden",
        }
    }

    /// This refusal's place in [`Refusal::label`]'s order (missing,
    /// wrong, forbidden).
    pub fn index(&self) -> usize {
        match self {
            Refusal::Missing => 0,
            Refusal::Wrong => 1,
            Refusal::Forbidden { .. } => 2,
        }
    }

    /// The actor the audit log names for this refusal.
    pub fn actor(&self) -> &str {
        match self {
            Refusal::Forbidden { actor } => actor,
            _ => UNKNOWN,
        }
    }
}

/// The tokens the admin API accepts.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: Vec<ResolvedToken>,
    metrics_public: bool,
}

impl Auth {
    pub fn new(tokens: Vec<ResolvedToken>, metrics_public: bool) -> Auth {
        Auth {
            tokens,
            metrics_public,
        }
    }

    /// The tokens `admin` names, their secrets read now (files, the
    /// environment): at start, and for a reload before
    /// [`crate::Admin::set_auth`]. Errors name the file, line and key.
    pub fn from_config(
        admin: &cutover_config::AdminConfig,
    ) -> Result<Auth, cutover_config::ConfigErrors> {
        let tokens = cutover_config::secrets::resolve(admin)?;
        Ok(Auth::new(tokens, admin.metrics_public))
    }

    /// No token: the API is open to whoever reaches its listener.
    pub fn open() -> Auth {
        Auth::default()
    }

    /// Whether any token is configured (then the token is the guard
    /// against cross-site requests, not the `Host` check).
    pub fn required(&self) -> bool {
        !self.tokens.is_empty()
    }

    pub fn metrics_public(&self) -> bool {
        self.metrics_public
    }

    /// Whether a request with `headers` may do what `need` says, and as whom.
    pub fn check(&self, headers: &HeaderMap, need: Need) -> Result<Caller, Refusal> {
        if self.tokens.is_empty() {
            return Ok(Caller {
                actor: ANONYMOUS.into(),
                role: None,
            });
        }
        let presented = bearer(headers);
        let token = match (need, presented) {
            (Need::Open, None) => {
                return Ok(Caller {
                    actor: ANONYMOUS.into(),
                    role: None,
                })
            }
            (_, None) => return Err(Refusal::Missing),
            (_, Some(p)) => self.find(p.as_bytes()),
        };
        let Some(token) = token else {
            // A wrong token on an open endpoint is still let through.
            return match need {
                Need::Open => Ok(Caller {
                    actor: ANONYMOUS.into(),
                    role: None,
                }),
                _ => Err(Refusal::Wrong),
            };
        };
        if need == Need::Change && token.role != Role::Operator {
            return Err(Refusal::Forbidden {
                actor: token.name.clone(),
            });
        }
        Ok(Caller {
            actor: token.name.clone(),
            role: Some(token.role),
        })
    }

    /// The token whose secret is `presented`: compared with every one in
    /// constant time, without stopping at the first match.
    fn find(&self, presented: &[u8]) -> Option<&ResolvedToken> {
        let mut found = None;
        for t in &self.tokens {
            if cutover_proxy::headers::constant_time_eq(presented, t.secret.as_bytes()) {
                found = found.or(Some(t));
            }
        }
        found
    }
}

/// The bearer token of `Authorization: Bearer <token>` (the scheme in any
/// case), trimmed; `None` when there is none.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn auth() -> Auth {
        let t = |name: &str, role, secret: &str| ResolvedToken {
            name: name.into(),
            role,
            secret: secret.into(),
        };
        Auth::new(
            vec![
                t("deploy-bot", Role::Operator, "op-secret"),
                t("grafana", Role::Viewer, "view-secret"),
            ],
            false,
        )
    }

    fn with(token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(t).unwrap());
        }
        h
    }

    #[test]
    fn roles_decide_reads_and_changes_and_a_bad_token_is_401_without_a_hint() {
        let a = auth();
        let op = a
            .check(&with(Some("Bearer op-secret")), Need::Change)
            .unwrap();
        assert_eq!(
            (op.actor.as_str(), op.role),
            ("deploy-bot", Some(Role::Operator))
        );
        let viewer = a
            .check(&with(Some("bearer  view-secret ")), Need::Read)
            .unwrap();
        assert_eq!(viewer.actor, "grafana");
        assert_eq!(
            a.check(&with(Some("Bearer view-secret")), Need::Change),
            Err(Refusal::Forbidden {
                actor: "grafana".into()
            })
        );
        assert_eq!(a.check(&with(None), Need::Read), Err(Refusal::Missing));
        for wrong in [
            "Bearer op-secreT",
            "Bearer op-secret-and-more",
            "Basic op-secret",
            "Bearer ",
            "op-secret",
        ] {
            let r = a.check(&with(Some(wrong)), Need::Read);
            assert!(
                matches!(r, Err(Refusal::Missing | Refusal::Wrong)),
                "{wrong}: {r:?}"
            );
        }
        assert_eq!(a.check(&with(None), Need::Open).unwrap().actor, ANONYMOUS);
        assert_eq!(
            a.check(&with(Some("Bearer x")), Need::Open).unwrap().actor,
            ANONYMOUS
        );
        // Without tokens everything is open, as `anonymous`.
        let open = Auth::open().check(&with(None), Need::Change).unwrap();
        assert_eq!((open.actor.as_str(), open.role), (ANONYMOUS, None));
    }

    #[test]
    fn only_known_reads_are_open_to_viewers() {
        let get = Method::GET;
        assert_eq!(need(&get, &["v1", "status"], false), Need::Read);
        assert_eq!(need(&get, &["v1", "audit"], false), Need::Read);
        assert_eq!(
            need(&get, &["v1", "services", "web", "drain"], false),
            Need::Read
        );
        assert_eq!(need(&get, &["metrics"], false), Need::Read);
        assert_eq!(need(&get, &["metrics"], true), Need::Open);
        assert_eq!(need(&get, &["healthz"], false), Need::Open);
        assert_eq!(
            need(&Method::POST, &["v1", "services", "web", "switch"], false),
            Need::Change
        );
        assert_eq!(
            need(&get, &["v1", "services", "web", "split"], false),
            Need::Change
        );
        assert_eq!(need(&Method::POST, &["v1", "reload"], false), Need::Change);
        assert_eq!(need(&get, &["v1", "nothing"], false), Need::Change);
    }
}
