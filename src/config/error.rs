//! Why a config could not be loaded, and where: [`ConfigError`] with `file:line:col`, and the
//! wording of TOML's own errors (no quoted value, which may be a secret; the key's path named).

use std::fmt;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde_spanned::Spanned;

/// A config that could not be loaded: where and why. `Display` is `file:line:col: message`
/// (`file: message` when the file could not be read at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: PathBuf,
    line: usize,
    column: usize,
    message: String,
}

impl ConfigError {
    /// The config file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// 1-based line of the offending value; 0 when the file could not be read.
    pub fn line(&self) -> usize {
        self.line
    }

    /// 1-based column (in characters) of the offending value; 0 when the file could not be read.
    pub fn column(&self) -> usize {
        self.column
    }

    /// What is wrong and what was expected; never contains a secret or an expanded variable.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error `message` about the value at byte `offset` of `source`.
    pub(super) fn at(source: &str, file: &Path, offset: usize, message: String) -> ConfigError {
        let (line, column) = line_col(source, offset);
        ConfigError {
            file: file.to_path_buf(),
            line,
            column,
            message,
        }
    }

    /// The file could not be read at all (no line or column).
    pub(super) fn unreadable(file: &Path, error: &std::io::Error) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the config file: {error}"),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column (in characters) of byte `offset`.
pub(super) fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// toml/serde messages quote offending string values (`invalid type: string "…", expected …`);
/// such a value may be a secret or come from the environment, so drop it. Rust type names
/// become words a user knows.
pub(super) fn sanitize_toml_message(message: &str) -> String {
    let quoted = Regex::new(r#"string "(?:[^"\\]|\\.)*""#).expect("valid regex");
    let mut message = quoted.replace_all(message, "a string").into_owned();
    for (rust, words) in [
        ("expected u32", "expected a whole number of at least 0"),
        ("expected usize", "expected a whole number of at least 0"),
        ("expected a map", "expected a table"),
        ("expected a sequence", "expected a list"),
    ] {
        if let Some(rest) = message.strip_suffix(rust) {
            message = format!("{rest}{words}");
        }
    }
    message.trim_end().to_string()
}

/// The dotted path (`channels.errors.burst`, `routes[1].level`) of the value at `offset`, or of
/// the table holding the key at `offset` (for unknown keys); empty when it is the top level.
/// A full search: a `[table]`'s span covers only its header, not the keys below it.
pub(super) fn key_path_at(table: &toml::de::DeTable<'_>, offset: usize) -> String {
    fn in_value(
        value: &Spanned<toml::de::DeValue<'_>>,
        offset: usize,
        path: &str,
    ) -> Option<String> {
        match value.get_ref() {
            toml::de::DeValue::Table(table) => in_table(table, offset, path),
            toml::de::DeValue::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| in_value(item, offset, &format!("{path}[{i}]"))),
            _ => None,
        }
        .or_else(|| value.span().contains(&offset).then(|| path.to_string()))
    }
    fn in_table(table: &toml::de::DeTable<'_>, offset: usize, path: &str) -> Option<String> {
        table.iter().find_map(|(key, value)| {
            if key.span().contains(&offset) {
                return Some(path.to_string());
            }
            let path = if path.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{path}.{}", key.get_ref())
            };
            in_value(value, offset, &path)
        })
    }
    in_table(table, offset, "").unwrap_or_default()
}
