//! Setting one key in a YAML file the way a person would: the line changes,
//! its comment and every other line stay. A reviewed configuration is read
//! as text; a change that re-serialised the file would lose its comments
//! and bury the one real change in noise.
//!
//! Handles block mappings (the style of every file under `configs/`): an
//! existing key's value is replaced on its line (a flow value such as
//! `{}` or `[0.5, 0.8]` is replaced whole); a missing key is added at the
//! end of its parent's block, with any missing parents. A path through a
//! flow collection or a list is refused with a message that says to edit
//! the file whole. The result is parsed and the key read back before it is
//! returned.

use serde_norway::Value;

/// Why a key could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The value is not YAML.
    #[error("the value `{value}` is not YAML: {reason}")]
    Value {
        /// The value given.
        value: String,
        /// The parser's message.
        reason: String,
    },
    /// The path is empty or malformed.
    #[error("`{0}` is not a key path (dotted keys, e.g. theta.theta1)")]
    Path(String),
    /// The path runs through something that is not a block mapping.
    #[error("`{path}` runs through `{through}`, which is not a block mapping: edit the file whole")]
    NotBlock {
        /// The path.
        path: String,
        /// The key where it stops being one.
        through: String,
    },
    /// The file is not YAML before or after the edit.
    #[error("the file is not valid YAML {when} the edit: {reason}")]
    Yaml {
        /// `before` or `after`.
        when: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// The key did not read back as set (a YAML construct this editor does
    /// not follow, such as an anchor or a multi-line scalar).
    #[error("`{0}` did not read back as set: edit the file whole")]
    Unverified(String),
}

struct Line<'a> {
    indent: usize,
    key: &'a str,
    rest: &'a str,
}

fn key_line(line: &str) -> Option<Line<'_>> {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') || trimmed.starts_with('-') || trimmed.is_empty() {
        return None;
    }
    let indent = line.len() - trimmed.len();
    let (key, rest) = trimmed.split_once(':')?;
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    {
        return None;
    }
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    Some(Line { indent, key, rest })
}

/// `(value, comment)` of a line's rest, the comment with its leading space.
fn split_comment(rest: &str) -> (&str, &str) {
    let mut quote = None;
    for (i, c) in rest.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if i > 0 && rest[..i].ends_with(' ') => {
                let value = rest[..i].trim_end();
                return (value, &rest[value.len()..]);
            }
            _ => {}
        }
    }
    (rest.trim_end(), "")
}

/// Sets `path` (dotted keys) to `value` (YAML text, one line) in `text`.
pub fn set(text: &str, path: &str, value: &str) -> Result<String, EditError> {
    let parsed: Value = serde_norway::from_str(value).map_err(|e| EditError::Value {
        value: value.to_owned(),
        reason: e.to_string(),
    })?;
    if value.contains('\n') {
        return Err(EditError::Value {
            value: value.to_owned(),
            reason: "one line expected".into(),
        });
    }
    let keys: Vec<&str> = path.split('.').collect();
    if keys
        .iter()
        .any(|k| k.is_empty() || k.contains(['[', ']', ' ', ':']))
    {
        return Err(EditError::Path(path.to_owned()));
    }
    let before: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_norway::from_str(text).map_err(|e| EditError::Yaml {
            when: "before",
            reason: e.to_string(),
        })?
    };
    if !matches!(before, Value::Null | Value::Mapping(_)) {
        return Err(EditError::NotBlock {
            path: path.to_owned(),
            through: "(the document)".into(),
        });
    }
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // Walk down: for each depth, find the key's line within its parent's block.
    let (mut start, mut end) = (0usize, lines.len());
    let mut child_indent: Option<usize> = Some(0);
    let mut parent_indent: Option<usize> = None;
    for (depth, key) in keys.iter().enumerate() {
        let last = depth + 1 == keys.len();
        let found = (start..end).find_map(|i| {
            let l = key_line(&lines[i])?;
            (l.key == *key && child_indent == Some(l.indent)).then_some((i, l.indent))
        });
        let Some((i, indent)) = found else {
            // Missing from here down: insert the rest at the end of the block.
            let indent = child_indent.unwrap_or_else(|| parent_indent.map_or(0, |p| p + 2));
            let mut insert = Vec::new();
            for (k, rest_key) in keys[depth..].iter().enumerate() {
                let pad = " ".repeat(indent + 2 * k);
                if depth + k + 1 == keys.len() {
                    insert.push(format!("{pad}{rest_key}: {value}"));
                } else {
                    insert.push(format!("{pad}{rest_key}:"));
                }
            }
            // After the block's last line of its own (not the blank lines
            // and comments that introduce what follows it).
            let mut at = end;
            while at > start && {
                let t = lines[at - 1].trim_start();
                t.is_empty() || (t.starts_with('#') && lines[at - 1].len() - t.len() < indent)
            } {
                at -= 1;
            }
            lines.splice(at..at, insert);
            return finish(&lines, text, path, &parsed);
        };
        let rest = key_line(&lines[i]).map(|l| l.rest).unwrap_or_default();
        let (current, comment) = split_comment(rest);
        let current = current.trim();
        if last {
            lines[i] = format!("{}{key}: {value}{comment}", " ".repeat(indent));
            return finish(&lines, text, path, &parsed);
        }
        if current == "{}" {
            // An empty flow map becomes a block holding the new keys.
            lines[i] = format!("{}{key}:{comment}", " ".repeat(indent));
        } else if !current.is_empty() {
            return Err(EditError::NotBlock {
                path: path.to_owned(),
                through: keys[..=depth].join("."),
            });
        }
        // The child block: following lines indented deeper (blank and
        // comment lines inside it included).
        let mut j = i + 1;
        let mut first_child = None;
        while j < end {
            let l = &lines[j];
            let t = l.trim_start();
            if t.is_empty() || t.starts_with('#') {
                j += 1;
                continue;
            }
            let ind = l.len() - t.len();
            if ind <= indent {
                break;
            }
            if t.starts_with('-') {
                return Err(EditError::NotBlock {
                    path: path.to_owned(),
                    through: keys[..=depth].join("."),
                });
            }
            first_child.get_or_insert(ind);
            j += 1;
        }
        parent_indent = Some(indent);
        child_indent = first_child;
        (start, end) = (i + 1, j);
    }
    Err(EditError::Path(path.to_owned()))
}

fn finish(lines: &[String], original: &str, path: &str, want: &Value) -> Result<String, EditError> {
    let mut out = lines.join("\n");
    if original.ends_with('\n') || original.is_empty() {
        out.push('\n');
    }
    let after: Value = serde_norway::from_str(&out).map_err(|e| EditError::Yaml {
        when: "after",
        reason: e.to_string(),
    })?;
    let mut node = &after;
    for key in path.split('.') {
        node = node
            .get(key)
            .ok_or_else(|| EditError::Unverified(path.to_owned()))?;
    }
    if node == want {
        Ok(out)
    } else {
        Err(EditError::Unverified(path.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "# Decision policy.\ntheta:\n  theta1: 0.55          # long when p(up) > θ1\n  theta2: 0.60\n  per_strategy: {}\nrisk:\n  max_gross: 1.0\n";

    #[test]
    fn a_value_changes_on_its_line_and_the_comments_stay() {
        let out = set(POLICY, "theta.theta1", "0.57").unwrap();
        assert_eq!(out, POLICY.replace("theta1: 0.55 ", "theta1: 0.57 "));
        let out = set(POLICY, "risk.max_gross", "0.8").unwrap();
        assert!(out.ends_with("  max_gross: 0.8\n") && out.starts_with("# Decision policy.\n"));
    }

    #[test]
    fn missing_keys_are_added_under_their_parent_even_an_empty_flow_map() {
        let out = set(POLICY, "theta.per_strategy.fx_g10.theta1", "0.6").unwrap();
        assert!(
            out.contains("  per_strategy:\n    fx_g10:\n      theta1: 0.6\nrisk:"),
            "{out}"
        );
        let out = set(&out, "theta.per_strategy.fx_g10.theta2", "0.5").unwrap();
        assert!(
            out.contains("      theta1: 0.6\n      theta2: 0.5\nrisk:"),
            "{out}"
        );
        let out = set("", "theta.per_strategy.fx_g10.theta1", "0.6").unwrap();
        assert_eq!(out, "theta:\n  per_strategy:\n    fx_g10:\n      theta1: 0.6\n");
        let out = set(POLICY, "signal.ttl_ms", "900").unwrap();
        assert!(
            out.ends_with("  max_gross: 1.0\nsignal:\n  ttl_ms: 900\n"),
            "{out}"
        );
    }

    #[test]
    fn paths_through_lists_or_flow_values_are_refused() {
        let universe = "strategies:\n  - id: fx\n    symbols: []\n";
        assert!(matches!(
            set(universe, "strategies.fx", "1"),
            Err(EditError::NotBlock { .. })
        ));
        let flow = "a: {b: 1}\n";
        assert!(matches!(set(flow, "a.b", "2"), Err(EditError::NotBlock { .. })));
        assert!(matches!(set(POLICY, "theta..x", "1"), Err(EditError::Path(_))));
        assert!(matches!(
            set(POLICY, "theta.theta1", "[unclosed"),
            Err(EditError::Value { .. })
        ));
    }
}
