//! Secrets: `$VAR` references resolved at load time, redacted when printed.
//!
//! A secret field is typed [`Secret`]. In YAML it is a string: `$NAME` refers to
//! an environment variable, anything else is a literal, which only `dev` accepts.
//! Resolution needs the environment and the deployment name, which serde cannot
//! pass down; the loader installs them in a thread-local [`ResolveScope`] for
//! the duration of one deserialisation (it never crosses threads or awaits).

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use super::env::EnvSource;
use super::error::ConfigCode;
use super::Environment;

/// Separates the code from the detail inside serde's custom error string, so
/// the loader can turn it back into a typed problem.
pub(crate) const CODE_SEP: char = '\u{1f}';

/// A resolved secret value. `Debug`, `Display` and `Serialize` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    reference: Option<String>,
    value: String,
    /// False for a `$VAR` the environment does not set: the loader reports
    /// it when the process needs the file, and leaves it unresolved (empty)
    /// when it does not (`Process`).
    resolved: bool,
}

impl Secret {
    /// The resolved value: hand it to the client that needs it, never log it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The environment variable it came from (`None` for a dev literal).
    pub fn reference(&self) -> Option<&str> {
        self.reference.as_deref()
    }

    /// A literal secret, for tests and dev tooling.
    pub fn literal(value: &str) -> Self {
        Self {
            reference: None,
            value: value.to_owned(),
            resolved: true,
        }
    }

    /// Whether it holds a value (a literal, or a variable that is set).
    pub fn is_resolved(&self) -> bool {
        self.resolved
    }

    fn redacted(&self) -> String {
        match &self.reference {
            Some(name) => format!("<redacted ${name}>"),
            None => "<redacted literal>".to_owned(),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// The variables a tree references, looked up once before deserialising it.
struct Resolved {
    env: Environment,
    vars: Vec<(String, Option<String>)>,
    /// Unset variables met so far. Deserialisation carries on past them so
    /// that every unset variable of a file is reported, not just the first.
    unset: Vec<String>,
}

thread_local! {
    static SCOPE: RefCell<Option<Resolved>> = const { RefCell::new(None) };
}

/// Makes secret resolution possible on this thread until dropped.
pub(crate) struct ResolveScope(());

impl ResolveScope {
    /// Looks up every `$NAME` string in `tree` and installs the answers for the
    /// deserialisation that follows on this thread.
    pub(crate) fn enter(env: Environment, vars: &dyn EnvSource, tree: &serde_norway::Value) -> Self {
        let vars = references(tree)
            .into_iter()
            .map(|(_, n)| {
                let v = vars.var(&n);
                (n, v)
            })
            .collect();
        SCOPE.with(|s| {
            *s.borrow_mut() = Some(Resolved {
                env,
                vars,
                unset: Vec::new(),
            })
        });
        Self(())
    }

    /// Ends the scope, returning the unset variables that were referenced.
    pub(crate) fn finish(self) -> Vec<String> {
        SCOPE.with(|s| s.borrow_mut().take().map(|r| r.unset).unwrap_or_default())
    }
}

impl Drop for ResolveScope {
    fn drop(&mut self) {
        SCOPE.with(|s| *s.borrow_mut() = None);
    }
}

/// Every `$NAME` string in `tree` with its dotted key path.
pub(crate) fn references(tree: &serde_norway::Value) -> Vec<(String, String)> {
    fn walk(v: &serde_norway::Value, path: String, out: &mut Vec<(String, String)>) {
        match v {
            serde_norway::Value::String(s) => {
                if let Some(name) = s.strip_prefix('$') {
                    out.push((path, name.to_owned()));
                }
            }
            serde_norway::Value::Sequence(seq) => {
                for (i, x) in seq.iter().enumerate() {
                    walk(x, format!("{path}[{i}]"), out);
                }
            }
            serde_norway::Value::Mapping(m) => {
                for (k, x) in m {
                    let key = k.as_str().map(str::to_owned).unwrap_or_else(|| format!("{k:?}"));
                    let p = if path.is_empty() {
                        key
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(x, p, out);
                }
            }
            serde_norway::Value::Tagged(t) => walk(&t.value, path, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(tree, String::new(), &mut out);
    out
}

/// Whether `s` is a well-formed `$VAR` reference (not a secret itself).
pub fn is_reference(s: &str) -> bool {
    s.strip_prefix('$').is_some_and(is_valid_var_name)
}

fn is_valid_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn fail<E: de::Error>(code: ConfigCode, detail: String) -> E {
    E::custom(format!("{}{CODE_SEP}{detail}", code.as_str()))
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        SCOPE.with(|s| {
            let mut scope = s.borrow_mut();
            let Some(Resolved { env, vars, unset }) = scope.as_mut() else {
                return Err(de::Error::custom(
                    "secrets are only resolved by the config loader",
                ));
            };
            match raw.strip_prefix('$') {
                Some(name) if !is_valid_var_name(name) => Err(fail(
                    ConfigCode::SecretInvalid,
                    format!(
                        "`${name}` is not a valid environment variable reference (use $UPPER_SNAKE_CASE)"
                    ),
                )),
                Some(name) => match vars.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.clone()) {
                    Some(value) => Ok(Secret {
                        reference: Some(name.to_owned()),
                        value,
                        resolved: true,
                    }),
                    None => {
                        unset.push(name.to_owned());
                        Ok(Secret {
                            reference: Some(name.to_owned()),
                            value: String::new(),
                            resolved: false,
                        })
                    }
                },
                None if *env == Environment::Dev => Ok(Secret {
                    reference: None,
                    value: raw,
                    resolved: true,
                }),
                None => Err(fail(
                    ConfigCode::SecretLiteral,
                    format!(
                        "a literal secret is refused in `{env}`: reference an environment variable as $NAME"
                    ),
                )),
            }
        })
    }
}
