//! `[admin]`: the listener, its tokens and roles, the audit log.

use std::collections::HashMap;
use std::path::PathBuf;

use super::{idx, key, socket_addr, Errs};
use crate::locate::Seg;
use crate::model::*;
use crate::raw::{RawAdmin, RawAdminToken};

pub(crate) const ALLOWED_ADMIN_KEYS: &str =
    "listen, token, tokens, metrics_public, audit_log, audit_max_bytes, audit_keep";
pub(crate) const ALLOWED_TOKEN_KEYS: &str = "name, role, secret_file, secret_env";

/// The name the single `admin.token` goes by (an operator).
pub const LEGACY_TOKEN_NAME: &str = "admin";

/// The smallest `audit_max_bytes`: a line or two must fit.
const MIN_AUDIT_MAX_BYTES: i64 = 4096;
const MAX_AUDIT_KEEP: i64 = 1000;

/// `[admin]`.
pub(crate) fn validate_admin(
    raw_admin: Option<&RawAdmin>,
    admin_path: &[Seg],
    errs: &mut Errs<'_>,
) -> AdminConfig {
    let listen_raw = raw_admin
        .and_then(|a| a.listen.clone())
        .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.to_string());
    let admin_listen =
        socket_addr(errs, &key(admin_path, "listen"), &listen_raw).unwrap_or_else(|| {
            DEFAULT_ADMIN_LISTEN
                .parse()
                .expect("default admin address parses")
        });
    let token = raw_admin.and_then(|a| a.token.clone());
    if token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        errs.push(&key(admin_path, "token"), "must not be empty");
    }
    let tokens = validate_tokens(
        raw_admin.and_then(|a| a.tokens.as_deref()).unwrap_or(&[]),
        token.is_some(),
        &key(admin_path, "tokens"),
        errs,
    );
    if !admin_listen.ip().is_loopback() && token.is_none() && tokens.is_empty() {
        errs.push(
            &key(admin_path, "listen"),
            format!("{admin_listen} is not a loopback address: set admin.token or [[admin.tokens]] so the admin API requires a bearer token"),
        );
    }
    let audit_log = raw_admin.and_then(|a| a.audit_log.as_ref()).and_then(|s| {
        if s.trim().is_empty() {
            errs.push(
                &key(admin_path, "audit_log"),
                "must be a file path, not empty",
            );
            None
        } else {
            Some(PathBuf::from(s))
        }
    });
    let audit_max_bytes = match raw_admin.and_then(|a| a.audit_max_bytes) {
        None => DEFAULT_AUDIT_MAX_BYTES,
        Some(n) if n >= MIN_AUDIT_MAX_BYTES => n as u64,
        Some(n) => {
            errs.push(
                &key(admin_path, "audit_max_bytes"),
                format!("{n} is too small; allowed: at least {MIN_AUDIT_MAX_BYTES} (bytes; default {DEFAULT_AUDIT_MAX_BYTES}, 10 MiB)"),
            );
            DEFAULT_AUDIT_MAX_BYTES
        }
    };
    let audit_keep = super::positive(
        errs,
        &key(admin_path, "audit_keep"),
        raw_admin.and_then(|a| a.audit_keep),
        DEFAULT_AUDIT_KEEP,
        MAX_AUDIT_KEEP,
    );
    AdminConfig {
        listen: admin_listen,
        token,
        tokens,
        metrics_public: raw_admin.and_then(|a| a.metrics_public).unwrap_or(false),
        audit_log,
        audit_max_bytes,
        audit_keep,
    }
}

/// `[[admin.tokens]]`: unique names (`admin` is the single `token`'s
/// when it is set), a role, and exactly one of `secret_file` and
/// `secret_env`. The secrets themselves are read later
/// ([`crate::secrets::resolve`]).
fn validate_tokens(
    raw: &[RawAdminToken],
    legacy: bool,
    path: &[Seg],
    errs: &mut Errs<'_>,
) -> Vec<AdminToken> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    if legacy {
        seen.insert(LEGACY_TOKEN_NAME.to_string(), usize::MAX);
    }
    let mut out = Vec::new();
    for (i, t) in raw.iter().enumerate() {
        let p = idx(path, i);
        let before = errs.len();
        let name = token_name(t, i, &p, &mut seen, errs);
        let role = token_role(t, &p, errs);
        let secret = token_secret(t, &p, errs);
        if let (Some((secret, at)), true) = (secret, errs.len() == before) {
            out.push(AdminToken {
                name,
                role,
                secret,
                at: errs.location(&at),
            });
        }
    }
    out
}

/// A token's `name`: present, well formed, not used before (`seen`).
fn token_name(
    t: &RawAdminToken,
    i: usize,
    p: &[Seg],
    seen: &mut HashMap<String, usize>,
    errs: &mut Errs<'_>,
) -> String {
    let Some(n) = t.name.as_deref() else {
        errs.push(
            p,
            "a token needs a `name` (it is the actor in the audit log)",
        );
        return String::new();
    };
    let at = key(p, "name");
    if !super::name_ok(n) {
        errs.push(
            &at,
            format!("token name `{n}` may use only letters, digits, `-` and `_` (1 to 64)"),
        );
        return n.to_string();
    }
    match seen.get(n).copied() {
        Some(usize::MAX) => errs.push(
            &at,
            format!("token name `{n}` is taken by admin.token (an operator named `{LEGACY_TOKEN_NAME}`); pick another"),
        ),
        Some(j) => errs.push(
            &at,
            format!("token name `{n}` is already used by admin.tokens[{j}]; names must be unique"),
        ),
        None => {
            seen.insert(n.to_string(), i);
        }
    }
    n.to_string()
}

fn token_role(t: &RawAdminToken, p: &[Seg], errs: &mut Errs<'_>) -> Role {
    match t.role.as_deref() {
        Some("operator") => Role::Operator,
        Some("viewer") => Role::Viewer,
        None => {
            errs.push(
                p,
                "a token needs a `role`; allowed: \"operator\", \"viewer\"",
            );
            Role::Viewer
        }
        Some(other) => {
            errs.push(
                &key(p, "role"),
                format!("`{other}` is not a role; allowed: \"operator\" (every endpoint), \"viewer\" (status, drain, audit, metrics)"),
            );
            Role::Viewer
        }
    }
}

/// Where the secret comes from, and the key that says so (for errors when
/// it is read).
fn token_secret(
    t: &RawAdminToken,
    p: &[Seg],
    errs: &mut Errs<'_>,
) -> Option<(SecretSource, Vec<Seg>)> {
    match (&t.secret_file, &t.secret_env) {
        (Some(f), None) if !f.trim().is_empty() => {
            Some((SecretSource::File(PathBuf::from(f)), key(p, "secret_file")))
        }
        (None, Some(e)) if !e.trim().is_empty() && !e.contains('=') => {
            Some((SecretSource::Env(e.clone()), key(p, "secret_env")))
        }
        (Some(_), None) => {
            errs.push(&key(p, "secret_file"), "must be a file path, not empty");
            None
        }
        (None, Some(_)) => {
            errs.push(
                &key(p, "secret_env"),
                "must be an environment variable's name (not empty, no `=`)",
            );
            None
        }
        (Some(_), Some(_)) => {
            errs.push(
                &key(p, "secret_env"),
                "set one of secret_file and secret_env, not both",
            );
            None
        }
        (None, None) => {
            errs.push(
                p,
                "a token needs its secret from `secret_file` or `secret_env` (never the secret itself in the config)",
            );
            None
        }
    }
}
