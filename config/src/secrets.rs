//! Reading the admin tokens' secrets: the one step of loading a config
//! that touches files and the environment beyond the config file itself,
//! kept out of validation (which stays pure). `cutover check` and
//! `cutover run` (through `App::start`) call [`resolve`] after
//! [`crate::load`]; its errors name the file, line and key of the
//! `secret_file` or `secret_env` at fault.

use std::fmt;

use crate::error::ConfigErrors;
use crate::model::{AdminConfig, Role, SecretSource};

/// The name the single `admin.token` goes by.
pub use crate::validate::LEGACY_TOKEN_NAME;

/// A token with its secret, ready to compare against.
#[derive(Clone, PartialEq, Eq)]
pub struct ResolvedToken {
    pub name: String,
    pub role: Role,
    pub secret: String,
}

/// Never prints the secret.
impl fmt::Debug for ResolvedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Every token of `admin` with its secret read: the single `token` as an
/// operator named `admin`, then `[[admin.tokens]]` in file order. A
/// secret file must be readable and not empty (one trailing newline is
/// dropped); an environment variable must be set and not empty; no two
/// tokens may share a secret (the actor would be ambiguous).
pub fn resolve(admin: &AdminConfig) -> Result<Vec<ResolvedToken>, ConfigErrors> {
    resolve_with(admin, |name| std::env::var(name).ok())
}

/// [`resolve`] with `env` for the environment (tests).
pub fn resolve_with(
    admin: &AdminConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<ResolvedToken>, ConfigErrors> {
    let mut out = Vec::new();
    if let Some(t) = &admin.token {
        out.push(ResolvedToken {
            name: LEGACY_TOKEN_NAME.to_string(),
            role: Role::Operator,
            secret: t.trim().to_string(),
        });
    }
    let mut errors = Vec::new();
    for t in &admin.tokens {
        match read_secret(&t.secret, &env) {
            Ok(secret) => {
                if let Some(other) = out.iter().find(|o| o.secret == secret) {
                    errors.push(t.at.error(format!(
                        "token `{}` has the same secret as token `{}`; each token needs its own secret (the audit log names who acted)",
                        t.name, other.name
                    )));
                }
                out.push(ResolvedToken {
                    name: t.name.clone(),
                    role: t.role,
                    secret,
                });
            }
            Err(message) => errors.push(t.at.error(message)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn read_secret(
    source: &SecretSource,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    match source {
        SecretSource::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
            let secret = text
                .strip_suffix("\r\n")
                .or_else(|| text.strip_suffix('\n'))
                .unwrap_or(&text);
            if secret.trim().is_empty() {
                return Err(format!("the secret file {} is empty", path.display()));
            }
            check_chars(secret).map_err(|m| format!("the secret in {}: {m}", path.display()))?;
            Ok(secret.to_string())
        }
        SecretSource::Env(name) => match env(name) {
            None => Err(format!("environment variable {name} is not set")),
            Some(v) if v.trim().is_empty() => Err(format!("environment variable {name} is empty")),
            Some(v) => {
                check_chars(&v).map_err(|m| format!("the secret in ${name}: {m}"))?;
                Ok(v)
            }
        },
    }
}

/// A secret travels in an `Authorization` header: visible ASCII only, no
/// spaces at its ends.
fn check_chars(s: &str) -> Result<(), String> {
    if s.trim() != s {
        return Err("has spaces or newlines at its start or end".into());
    }
    if !s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err("may hold only visible ASCII characters (it is sent in an HTTP header)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AdminToken;
    use std::path::PathBuf;

    fn token(name: &str, role: Role, secret: SecretSource) -> AdminToken {
        AdminToken {
            name: name.into(),
            role,
            secret,
            at: crate::error::Location {
                origin: "t.toml".into(),
                line: Some(7),
                key: "admin.tokens[0].secret_file".into(),
            },
        }
    }

    fn admin(token: Option<&str>, tokens: Vec<AdminToken>) -> AdminConfig {
        AdminConfig {
            listen: "127.0.0.1:9901".parse().unwrap(),
            token: token.map(String::from),
            tokens,
            metrics_public: false,
            audit_log: None,
            audit_max_bytes: 1 << 20,
            audit_keep: 5,
        }
    }

    /// A file in a directory of its own under the system temp dir.
    fn secret_file(name: &str, content: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cutover-secrets-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn secrets_come_from_files_and_the_environment_and_the_single_token_is_admin() {
        let f = secret_file("ok", "s3cret-file\n");
        let a = admin(
            Some("legacy"),
            vec![
                token("bot", Role::Operator, SecretSource::File(f)),
                token(
                    "grafana",
                    Role::Viewer,
                    SecretSource::Env("GRAFANA_TOKEN".into()),
                ),
            ],
        );
        let env = |k: &str| (k == "GRAFANA_TOKEN").then(|| "from-env".to_string());
        let got = resolve_with(&a, env).unwrap();
        let seen: Vec<(&str, Role, &str)> = got
            .iter()
            .map(|t| (t.name.as_str(), t.role, t.secret.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("admin", Role::Operator, "legacy"),
                ("bot", Role::Operator, "s3cret-file"),
                ("grafana", Role::Viewer, "from-env"),
            ]
        );
        assert!(
            !format!("{got:?}").contains("s3cret"),
            "Debug never shows a secret"
        );
    }

    #[test]
    fn an_unreadable_empty_or_shared_secret_is_an_error_at_its_line() {
        let missing = SecretSource::File("/nonexistent/cutover/token".into());
        let empty = SecretSource::File(secret_file("empty", "\n"));
        let unset = SecretSource::Env("UNSET_FOR_SURE".into());
        let blank = SecretSource::Env("BLANK".into());
        let env = |k: &str| match k {
            "BLANK" => Some(" ".to_string()),
            "DUP" => Some("same".to_string()),
            _ => None,
        };
        for (source, fragment) in [
            (
                missing,
                "cannot read the secret file /nonexistent/cutover/token",
            ),
            (empty, "is empty"),
            (unset, "environment variable UNSET_FOR_SURE is not set"),
            (blank, "environment variable BLANK is empty"),
        ] {
            let a = admin(None, vec![token("t", Role::Viewer, source)]);
            let errs = resolve_with(&a, env).unwrap_err().to_string();
            assert!(
                errs.starts_with("t.toml:7: `admin.tokens[0].secret_file`: ")
                    && errs.contains(fragment),
                "{errs}"
            );
        }
        let a = admin(
            Some("same"),
            vec![token("dup", Role::Viewer, SecretSource::Env("DUP".into()))],
        );
        let errs = resolve_with(&a, env).unwrap_err().to_string();
        assert!(errs.contains("same secret as token `admin`"), "{errs}");
        assert!(!errs.contains("same\""), "{errs}");
    }
}
