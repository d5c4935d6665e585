//! cutover's configuration: the TOML file as raw serde types ([`raw`]),
//! validated into the types the program uses ([`model`]), with errors that
//! name the file, line and key ([`error`]), and a diff between two configs
//! ([`diff`]). Everything here is pure data: no sockets, no clocks; the
//! one step that reads beyond the config file, the admin tokens' secrets,
//! is [`secrets::resolve`], called after validation.

pub mod diff;
pub mod edge;
pub mod error;
mod locate;
pub mod model;
pub mod raw;
pub mod secrets;
mod validate;

pub use diff::{describe, diff, ConfigDiff, ReloadPlan};
pub use error::{ConfigError, ConfigErrors, Location};
pub use model::*;
pub use validate::check_backend_addr as validate_backend_addr;

use std::path::Path;

/// Parse and validate a config from its text. `origin` names the source in
/// error messages (usually the file path).
pub fn parse(origin: &str, text: &str) -> Result<Config, ConfigErrors> {
    validate::parse_and_validate(origin, text)
}

/// Read, parse and validate a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            origin: origin.clone(),
            line: None,
            key: String::new(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    parse(&origin, &text)
}

/// Parse a human duration such as `"250ms"`, `"30s"` or `"2m"`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("`{s}` is not a duration ({e}); write a number with a unit, like \"250ms\", \"30s\" or \"2m\"")
    })
}

#[cfg(test)]
mod tests;
