//! `${VAR}` expansion in the string values of routes.toml, done on the parsed document before
//! it is turned into typed config, so that every value keeps the span of its place in the file.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

/// What expansion did: for each string value that named variables (keyed by the start of its
/// span), the names, so that messages can say "the value of `${X}`" instead of printing it.
#[derive(Debug, Default)]
pub(super) struct Expansions {
    pub(super) vars_at: HashMap<usize, Vec<String>>,
}

/// A string value whose expansion failed.
#[derive(Debug)]
pub(super) struct ExpandError {
    pub(super) span: Range<usize>,
    pub(super) message: String,
}

/// Expands every string value in `table` (recursively) in place, through `env`.
pub(super) fn expand_document(
    table: &mut DeTable<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Expansions, Vec<ExpandError>) {
    let mut walk = Walk {
        env,
        path: Vec::new(),
        expansions: Expansions::default(),
        errors: Vec::new(),
    };
    walk.table(table);
    (walk.expansions, walk.errors)
}

struct Walk<'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
    path: Vec<String>,
    expansions: Expansions,
    errors: Vec<ExpandError>,
}

impl Walk<'_> {
    fn table(&mut self, table: &mut DeTable<'_>) {
        for (key, value) in table.iter_mut() {
            self.path.push(key.get_ref().to_string());
            self.value(value);
            self.path.pop();
        }
    }

    fn value(&mut self, value: &mut Spanned<DeValue<'_>>) {
        let span = value.span();
        match value.get_mut() {
            DeValue::String(s) => match expand(s, self.env) {
                Ok(None) => {}
                Ok(Some((expanded, vars))) => {
                    *s = Cow::Owned(expanded);
                    if !vars.is_empty() {
                        self.expansions.vars_at.insert(span.start, vars);
                    }
                }
                Err(Failure::Missing(var)) => self.errors.push(ExpandError {
                    span,
                    message: format!(
                        "environment variable `{var}` is not set (used in `{}`; write \
                         `${{{var}:-default}}` to give a default)",
                        self.key_path()
                    ),
                }),
                Err(Failure::Syntax(message)) => self.errors.push(ExpandError {
                    span,
                    message: format!("in `{}`: {message}", self.key_path()),
                }),
            },
            DeValue::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.path.push(format!("[{i}]"));
                    self.value(item);
                    self.path.pop();
                }
            }
            DeValue::Table(table) => self.table(table),
            DeValue::Integer(_)
            | DeValue::Float(_)
            | DeValue::Boolean(_)
            | DeValue::Datetime(_) => {}
        }
    }

    /// `channels.errors.webhook_url`, `routes[1].project`.
    fn key_path(&self) -> String {
        let mut out = String::new();
        for part in &self.path {
            if !out.is_empty() && !part.starts_with('[') {
                out.push('.');
            }
            out.push_str(part);
        }
        out
    }
}

#[derive(Debug, PartialEq)]
enum Failure {
    Missing(String),
    Syntax(&'static str),
}

/// Expands `${VAR}`, `${VAR:-default}` (default used when VAR is unset or empty) and the escape
/// `$${` (a literal `${`). A `$` not followed by `{` stays as it is. `Ok(None)`: nothing to do.
/// The expanded value and the default never appear in a `Failure`.
fn expand(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(String, Vec<String>)>, Failure> {
    if !s.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut vars = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                return Err(Failure::Syntax(
                    "unterminated `${` (write `${NAME}`, or `$${` for a literal `${`)",
                ));
            };
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !is_var_name(name) {
                return Err(Failure::Syntax(
                    "`${` must be followed by a variable name (letters, digits, `_`) and `}` \
                     or `:-default}` (write `$${` for a literal `${`)",
                ));
            }
            match (env(name), default) {
                (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => return Err(Failure::Missing(name.to_string())),
            }
            vars.push(name.to_string());
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(Some((out, vars)))
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("t0k3n".into()),
            "EMPTY" => Some(String::new()),
            "_X1" => Some("x".into()),
            _ => None,
        }
    }

    fn run(s: &str) -> Result<Option<String>, Failure> {
        expand(s, &env).map(|o| o.map(|(s, _)| s))
    }

    #[test]
    fn expands_variables_and_defaults() {
        assert_eq!(run("plain"), Ok(None));
        assert_eq!(run("costs $5"), Ok(None));
        assert_eq!(run("${TOKEN}"), Ok(Some("t0k3n".into())));
        assert_eq!(run("a-${TOKEN}-${_X1}"), Ok(Some("a-t0k3n-x".into())));
        assert_eq!(run("${UNSET:-fallback}"), Ok(Some("fallback".into())));
        assert_eq!(run("${EMPTY:-fallback}"), Ok(Some("fallback".into())));
        assert_eq!(run("${UNSET:-}"), Ok(Some(String::new())));
        assert_eq!(run("${EMPTY}"), Ok(Some(String::new())));
        assert_eq!(run("${TOKEN:-unused}"), Ok(Some("t0k3n".into())));
        assert_eq!(
            run("${UNSET:-http://x:1/a}"),
            Ok(Some("http://x:1/a".into()))
        );
        assert_eq!(
            run("$${TOKEN} $ ${TOKEN}"),
            Ok(Some("${TOKEN} $ t0k3n".into()))
        );
    }

    #[test]
    fn reports_missing_variables_and_bad_syntax() {
        assert_eq!(run("x${NOPE}"), Err(Failure::Missing("NOPE".into())));
        assert!(matches!(run("${TOKEN"), Err(Failure::Syntax(_))));
        assert!(matches!(run("${}"), Err(Failure::Syntax(_))));
        assert!(matches!(run("${1A}"), Err(Failure::Syntax(_))));
        assert!(matches!(run("${A B}"), Err(Failure::Syntax(_))));
    }

    #[test]
    fn records_which_variables_a_value_used() {
        let (_, vars) = expand("${TOKEN}/${UNSET:-x}", &env).unwrap().unwrap();
        assert_eq!(vars, ["TOKEN", "UNSET"]);
    }
}
