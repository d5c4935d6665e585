//! Config errors: each names where it was found (file, line, key), what was
//! wrong and what is allowed. Validation collects all of them, not the first.

use std::fmt;

/// One problem in a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file (or other origin) the config came from.
    pub origin: String,
    /// 1-based line, when the key could be located in the text.
    pub line: Option<usize>,
    /// Dotted key path, like `services.web.split.purple`; empty for the file.
    pub key: String,
    /// What was wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Where a key is in a config, kept for errors found after validation
/// (a token's secret file, a certificate that cannot be read).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    pub origin: String,
    pub line: Option<usize>,
    pub key: String,
}

impl Location {
    /// An error at this place.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: self.origin.clone(),
            line: self.line,
            key: self.key.clone(),
            message: message.into(),
        }
    }
}

/// Every problem found in one config, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
